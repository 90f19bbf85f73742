//! A fast attribute scanner over the raw text of a start tag.
//!
//! quick-xml's `Attributes` iterator re-validates UTF-8 and allocates for duplicate checks;
//! profiling showed it as the largest cost of reading after the event loop itself. The
//! [`Lexer`] slices names and values straight out of the input `&str` (so no UTF-8 check is
//! needed) and checks the syntax; [`Scopes::open`] runs it once per start tag. [`AttrIter`]
//! then hands the element readers each attribute with its prefix resolved and its value
//! unescaped (borrowed from the input unless it holds a reference).

use std::borrow::Cow;

use super::ns::Scopes;
use super::{Fatal, FatalKind, Ns, RawAttr, Res, Tag};

/// Byte classes for attribute names, as bits: may start a name (none), may only follow, the
/// prefix colon, anything else (refused), ends the name.
const START: u8 = 0;
const INNER: u8 = 1;
const COLON: u8 = 2;
const BAD: u8 = 4;
const END: u8 = 8;
static NAME_CLASS: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | 0x80.. => START,
            b'0'..=b'9' | b'-' | b'.' => INNER,
            b'=' | b' ' | b'\t' | b'\n' | b'\r' => END,
            b':' => COLON,
            _ => BAD,
        };
        b += 1;
    }
    t
};

/// One attribute as written: name, where its prefix colon is, and the raw value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lexed<'i> {
    pub(crate) key: &'i str,
    /// Index of the prefix colon in `key`.
    pub(crate) colon: Option<usize>,
    /// The value between the quotes, not unescaped.
    pub(crate) value: &'i str,
    /// Whether `value` holds a reference that needs unescaping.
    pub(crate) has_amp: bool,
}

/// Splits a start tag's attribute text into [`Lexed`] attributes, checking the syntax.
pub(crate) struct Lexer<'i> {
    text: &'i str,
    pos: usize,
}

impl<'i> Lexer<'i> {
    pub(crate) fn new(text: &'i str) -> Self {
        Lexer { text, pos: 0 }
    }

    /// The next attribute; an error message when the syntax is wrong.
    #[inline(always)]
    pub(crate) fn next_raw(&mut self) -> Option<Result<Lexed<'i>, String>> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        // A self-closing tag's raw attributes end with the '/'.
        if self.pos >= bytes.len() || (bytes[self.pos] == b'/' && self.pos + 1 == bytes.len()) {
            return None;
        }
        // One pass over the name: find its end and the prefix colon, checking that every
        // byte may appear in an XML name (non-ASCII bytes are accepted, see `is_ncname`).
        let name_start = self.pos;
        // Fast pass: run to the end of the name, OR-ing the byte classes together. Most names
        // are letters and '_' only, and need nothing more.
        let mut seen = 0u8;
        let mut end = name_start;
        while let Some(&b) = bytes.get(end) {
            let class = NAME_CLASS[usize::from(b)];
            if class == END {
                break;
            }
            seen |= class;
            end += 1;
        }
        self.pos = end;
        let mut colon = None;
        let mut bad_name = seen & BAD != 0;
        if seen & (INNER | COLON) != 0 && !bad_name {
            // Digits, '-', '.' and ':' have position rules: not first in the name or in its
            // local part, and one colon at most.
            for (i, &b) in bytes[name_start..end].iter().enumerate() {
                match NAME_CLASS[usize::from(b)] {
                    INNER if i == 0 || colon == Some(i - 1) => bad_name = true,
                    COLON if colon.is_some() => bad_name = true,
                    COLON => colon = Some(i),
                    _ => {}
                }
            }
        }
        let colon_at = colon.map(|c| name_start + c);
        let key = &self.text[name_start..self.pos];
        if bad_name || key.is_empty() || colon_at == Some(name_start) || colon_at == Some(self.pos - 1) {
            return Some(Err(format!("Invalid attribute name {key:?}")));
        }
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        if bytes.get(self.pos) != Some(&b'=') {
            return Some(Err(format!("Attribute {key:?} has no value")));
        }
        self.pos += 1;
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let quote = match bytes.get(self.pos) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Some(Err(format!("Attribute {key:?} value is not quoted"))),
        };
        // One pass over the value: find the closing quote, noting references and '<'.
        let value_start = self.pos + 1;
        let mut end = value_start;
        let (mut has_amp, mut has_lt) = (false, false);
        loop {
            let Some(found) = memchr::memchr3(quote, b'&', b'<', &bytes[end..]) else {
                return Some(Err(format!("Attribute {key:?} value is not closed")));
            };
            end += found;
            match bytes[end] {
                b'&' => has_amp = true,
                b'<' => has_lt = true,
                _ => break,
            }
            end += 1;
        }
        let value = &self.text[value_start..end];
        self.pos = end + 1;
        if has_lt {
            return Some(Err(format!("Attribute {key:?} value contains '<'")));
        }
        Some(Ok(Lexed { key, colon, value, has_amp }))
    }
}

/// Iterates the attributes of a start tag (declarations excluded), resolved and unescaped.
pub(crate) struct AttrIter<'r, 'i> {
    scopes: &'r Scopes<'i>,
    /// The next index in `scopes.lexed`.
    next: usize,
    offset: usize,
}

/// The attributes of `tag`, which must be the last start tag read: [`Scopes::open`] has
/// already scanned and checked them.
#[inline]
pub(crate) fn attr_iter<'r, 'i>(scopes: &'r Scopes<'i>, tag: &Tag<'i>) -> AttrIter<'r, 'i> {
    // Every element reader takes its attributes before reading its children. Should one ever
    // not, it sees no attributes, and debug builds (all tests) fail here.
    debug_assert_eq!(tag.seq, scopes.seq, "attributes read after a later start tag");
    let next = if tag.seq == scopes.seq { 0 } else { scopes.lexed.len() };
    AttrIter { scopes, next, offset: tag.offset }
}

impl<'i> Iterator for AttrIter<'_, 'i> {
    type Item = Res<RawAttr<'i>>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let &Lexed { key, colon, value, has_amp } = self.scopes.lexed.get(self.next)?;
        self.next += 1;
        let fail = |message: String| Some(Err(Fatal { offset: self.offset, kind: FatalKind::Malformed(message) }));
        let (ns, local) = match colon {
            None => (Ns::None, key),
            Some(c) => match self.scopes.resolve(Some(&key.as_bytes()[..c]), false) {
                Ok(ns) => (ns, &key[c + 1..]),
                Err(message) => return fail(message),
            },
        };
        let value = if has_amp {
            match super::unescape(value) {
                Ok(v) => Cow::Owned(v.into_owned()),
                Err(e) => return fail(e),
            }
        } else {
            Cow::Borrowed(value)
        };
        Some(Ok(RawAttr { ns, local, value }))
    }
}

#[cfg(test)]
mod tests {
    use super::Lexer;

    fn first(text: &str) -> Result<(String, Option<usize>), String> {
        let l = Lexer::new(text).next_raw().expect("an attribute")?;
        Ok((l.key.to_owned(), l.colon))
    }

    #[test]
    fn attribute_names_follow_the_xml_name_rules() {
        for (text, key, colon) in [
            ("a=\"1\"", "a", None),
            ("client_id='x'", "client_id", None),
            ("a1-b.c=\"\"", "a1-b.c", None),
            ("_x = \"\"", "_x", None),
            ("e:flag=\"1\"", "e:flag", Some(1)),
            ("xmlns:x9=\"urn:x\"", "xmlns:x9", Some(5)),
            ("caf\u{e9}=\"\"", "caf\u{e9}", None),
        ] {
            assert_eq!(first(text), Ok((key.to_owned(), colon)), "{text}");
        }
        for bad in ["1a=\"\"", "-a=\"\"", "a:1b=\"\"", "a:b:c=\"\"", ":a=\"\"", "a:=\"\"", "a$b=\"\"", "=\"\""] {
            let err = first(bad).unwrap_err();
            assert!(err.contains("Invalid attribute name"), "{bad}: {err}");
        }
    }

    #[test]
    fn values_note_references_and_refuse_markup() {
        let l = Lexer::new("a=\"x &amp; y\" b='<'").next_raw().unwrap().unwrap();
        assert_eq!((l.value, l.has_amp), ("x &amp; y", true));
        let mut lexer = Lexer::new("a=\"1\" b='<'");
        assert!(lexer.next_raw().unwrap().is_ok());
        assert!(lexer.next_raw().unwrap().unwrap_err().contains("'<'"));
        assert!(Lexer::new("a=\"open").next_raw().unwrap().unwrap_err().contains("not closed"));
        assert!(Lexer::new("a=1").next_raw().unwrap().unwrap_err().contains("not quoted"));
        assert!(Lexer::new("a").next_raw().unwrap().unwrap_err().contains("no value"));
        assert!(Lexer::new("  /").next_raw().is_none());
    }
}
