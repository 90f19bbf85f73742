//! A fast attribute scanner over the raw text of a start tag.
//!
//! quick-xml's `Attributes` iterator re-validates UTF-8 and allocates for duplicate checks;
//! profiling showed it as the largest cost of reading after the event loop itself. The
//! [`Lexer`] slices names and values straight out of the input `&str` (so no UTF-8 check is
//! needed) and checks the syntax. It runs once per start tag, inside [`AttrIter`], which the
//! element reader drives: each attribute is lexed, checked ([`Checked`]: count, duplicates),
//! resolved and unescaped (borrowed from the input unless it holds a reference) and handed
//! straight to the reader's match on its name, with no list of attributes in between. Tags
//! that declare namespaces are also lexed when read ([`Scopes::open`]); tags whose reader
//! does not take their attributes are checked before the next event.

use std::borrow::Cow;
use std::collections::HashSet;

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
    /// Where `key` starts in the tag's attribute text.
    pub(crate) start: usize,
    /// Index of the prefix colon in `key`.
    pub(crate) colon: Option<usize>,
    /// The value between the quotes, not unescaped.
    pub(crate) value: &'i str,
    /// Whether `value` holds a reference that needs unescaping.
    pub(crate) has_amp: bool,
    /// Whether `value` holds a literal tab, newline or carriage return, which XML's
    /// attribute-value normalisation turns into a space.
    pub(crate) has_ws: bool,
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
        // One pass over the value: find the closing quote, noting references, white space
        // other than a space, and '<'.
        let value_start = self.pos + 1;
        let Some(ValueEnd { end, has_amp, has_lt, has_ws }) = value_end(bytes, value_start, quote) else {
            return Some(Err(format!("Attribute {key:?} value is not closed")));
        };
        let value = &self.text[value_start..end];
        self.pos = end + 1;
        if has_lt {
            return Some(Err(format!("Attribute {key:?} value contains '<'")));
        }
        Some(Ok(Lexed { key, start: name_start, colon, value, has_amp, has_ws }))
    }
}

/// Eight copies of a byte.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The high bit of each byte of `x` that equals `b` (exact for the lowest such byte, which is
/// all the callers look at: a borrow can only mark bytes above a matching one).
#[inline(always)]
fn eq_bytes(x: u64, b: u8) -> u64 {
    let y = x ^ splat(b);
    y.wrapping_sub(splat(1)) & !y & splat(0x80)
}

/// The high bit of each byte of `x` below `n` (at most 0x80; exact for the lowest such
/// byte, as in [`eq_bytes`]).
#[inline(always)]
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(splat(n)) & !x & splat(0x80)
}

/// The bytes a value's scan stops at: below 0x28 are the control characters (tab, newline,
/// carriage return; others are refused anyway), the space, `!"#$%&'`. One range test finds
/// both quotes, `&` and the white space that attribute-value normalisation turns into spaces,
/// for less work than testing each; a space or `!#$%` stops the scan for nothing.
const STOP_BELOW: u8 = 0x28;

/// Where a value ends and what it holds.
#[derive(Debug, PartialEq)]
struct ValueEnd {
    /// The index of the closing quote.
    end: usize,
    has_amp: bool,
    has_lt: bool,
    /// A byte below 0x20: tab, newline or carriage return (the others are refused anyway).
    has_ws: bool,
}

/// Finds the closing `quote` of a value starting at `from`, noting whether a `&`, a `<` or a
/// byte below 0x20 came before it. Eight bytes are tested at a time (values are mostly
/// short, where a SIMD search costs more to set up than it saves), for bytes below
/// [`STOP_BELOW`] and `<`.
#[inline(always)]
fn value_end(bytes: &[u8], from: usize, quote: u8) -> Option<ValueEnd> {
    let (mut has_amp, mut has_lt, mut has_ws) = (false, false, false);
    let mut at = from;
    loop {
        // Whole words while they fit, then byte by byte.
        if let Some(word) = bytes.get(at..at + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let x = u64::from_le_bytes(w);
            let hits = below(x, STOP_BELOW) | eq_bytes(x, b'<');
            if hits == 0 {
                at += 8;
                continue;
            }
            at += (hits.trailing_zeros() / 8) as usize;
        } else {
            let rest = bytes.get(at..)?;
            let found = rest.iter().position(|&b| b < STOP_BELOW || b == b'<')?;
            at += found;
        }
        match bytes[at] {
            b if b == quote => return Some(ValueEnd { end: at, has_amp, has_lt, has_ws }),
            b'&' => has_amp = true,
            b'<' => has_lt = true,
            b if b < 0x20 => has_ws = true,
            // A space, the other quote or one of `!#$%`.
            _ => {}
        }
        at += 1;
    }
}

/// The attributes of one start tag, lexed on demand and checked for syntax, count and
/// duplicates (namespace declarations included).
pub(crate) struct Checked<'i> {
    text: &'i str,
    lexer: Lexer<'i>,
    count: usize,
    /// One bit per name hash seen; only a name whose bit is already set is compared with the
    /// earlier names.
    bloom: u64,
    /// Past [`INLINE_KEYS`] attributes, the names are kept in a set (hostile tags stay linear).
    spilled: Option<HashSet<&'i str>>,
}

/// Attributes compared by re-reading the earlier names before a set takes over.
const INLINE_KEYS: usize = 16;

impl<'i> Checked<'i> {
    #[inline(always)]
    pub(crate) fn new(text: &'i str) -> Self {
        Checked { text, lexer: Lexer::new(text), count: 0, bloom: 0, spilled: None }
    }

    /// The next attribute, checked; an error message when the tag is malformed.
    #[inline(always)]
    pub(crate) fn next_checked(&mut self) -> Option<Result<Lexed<'i>, String>> {
        let raw = match self.lexer.next_raw()? {
            Ok(raw) => raw,
            Err(message) => return Some(Err(message)),
        };
        self.count += 1;
        if self.count > crate::MAX_ATTRIBUTES {
            return Some(Err(format!("More than {} attributes on one element", crate::MAX_ATTRIBUTES)));
        }
        if self.duplicate(&raw) {
            return Some(Err(format!("Duplicate attribute {:?}", raw.key)));
        }
        Some(Ok(raw))
    }

    /// Checks the whole tag.
    pub(crate) fn check_all(mut self) -> Result<(), String> {
        while let Some(raw) = self.next_checked() {
            raw?;
        }
        Ok(())
    }

    /// Whether an earlier attribute of the tag has the same name.
    #[inline(always)]
    fn duplicate(&mut self, raw: &Lexed<'i>) -> bool {
        if self.count > INLINE_KEYS {
            return self.spilled_duplicate(raw);
        }
        let k = raw.key.as_bytes();
        let (first, last) = (k.first().copied().unwrap_or(0), k.last().copied().unwrap_or(0));
        let h = (k.len() as u32).wrapping_mul(0x9E37_79B1)
            ^ u32::from(first).wrapping_mul(0x85EB_CA6B)
            ^ u32::from(last).wrapping_mul(0xC2B2_AE35);
        let bit = 1u64 << (h >> 26);
        if self.bloom & bit == 0 {
            self.bloom |= bit;
            return false;
        }
        self.earlier_keys(raw.start).any(|key| key == raw.key)
    }

    #[cold]
    fn spilled_duplicate(&mut self, raw: &Lexed<'i>) -> bool {
        if self.spilled.is_none() {
            let set: HashSet<&'i str> = self.earlier_keys(raw.start).collect();
            self.spilled = Some(set);
        }
        self.spilled.as_mut().is_some_and(|set| !set.insert(raw.key))
    }

    /// The names of the attributes before byte `upto` of the tag (already checked).
    fn earlier_keys(&self, upto: usize) -> impl Iterator<Item = &'i str> {
        let mut lexer = Lexer::new(&self.text[..upto]);
        std::iter::from_fn(move || lexer.next_raw()?.ok()).map(|l| l.key)
    }
}

/// Iterates the attributes of a start tag (declarations excluded), resolved and unescaped.
/// The tag's text is lexed as it goes, once: syntax, count and duplicates are checked here
/// (see [`Checked`]), and each name goes straight to the element reader.
pub(crate) struct AttrIter<'r, 'i> {
    scopes: &'r Scopes<'i>,
    check: Checked<'i>,
    offset: usize,
    seq: u64,
}

/// The attributes of `tag`, which must be the last start tag read (its namespace
/// declarations are the innermost in scope).
#[inline(always)]
pub(crate) fn attr_iter<'r, 'i>(scopes: &'r Scopes<'i>, tag: &Tag<'i>) -> AttrIter<'r, 'i> {
    // Every element reader takes its attributes before reading its children. Should one ever
    // not, it sees no attributes, and debug builds (all tests) fail here.
    debug_assert_eq!(tag.seq, scopes.seq, "attributes read after a later start tag");
    let text = if tag.seq == scopes.seq { tag.attrs } else { "" };
    AttrIter { scopes, check: Checked::new(text), offset: tag.offset, seq: tag.seq }
}

impl<'i> Iterator for AttrIter<'_, 'i> {
    type Item = Res<RawAttr<'i>>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let fail = |offset, message: String| Some(Err(Fatal { offset, kind: FatalKind::Malformed(message) }));
        let Lexed { key, colon, value, has_amp, has_ws, .. } = loop {
            match self.check.next_checked() {
                None => {
                    self.scopes.checked.set(self.seq);
                    return None;
                }
                Some(Err(message)) => return fail(self.offset, message),
                // Declarations were applied when the tag was read.
                Some(Ok(raw)) if raw.is_declaration() => continue,
                Some(Ok(raw)) => break raw,
            }
        };
        let (ns, local) = match colon {
            None => (Ns::None, key),
            Some(c) => match self.scopes.resolve(Some(&key.as_bytes()[..c]), false) {
                Ok(ns) => (ns, &key[c + 1..]),
                Err(message) => return fail(self.offset, message),
            },
        };
        let value = if has_amp || has_ws {
            match super::attr_value(value, has_ws) {
                Ok(v) => Cow::Owned(v.into_owned()),
                Err(e) => return fail(self.offset, e),
            }
        } else {
            Cow::Borrowed(value)
        };
        Some(Ok(RawAttr { ns, local, value }))
    }
}

impl Lexed<'_> {
    /// Whether this is a namespace declaration (`xmlns` or `xmlns:p`).
    #[inline(always)]
    pub(crate) fn is_declaration(&self) -> bool {
        match self.colon {
            None => self.key.len() == 5 && self.key == "xmlns",
            Some(c) => c == 5 && self.key.starts_with("xmlns"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{value_end, Checked, Lexer, ValueEnd};

    #[test]
    fn value_end_matches_a_bytewise_search() {
        let naive = |b: &[u8], from: usize, q: u8| {
            let end = from + b[from..].iter().position(|&c| c == q)?;
            let before = &b[from..end];
            let (has_amp, has_lt) = (before.contains(&b'&'), before.contains(&b'<'));
            Some(ValueEnd { end, has_amp, has_lt, has_ws: before.iter().any(|&c| c < 0x20) })
        };
        for len in 0..40 {
            for at in 0..=len {
                for stop in [b'"', b'\'', b'&', b'<', b'x', b'\n', b'\t', b'\r', 0x1f, b' ', 0x80] {
                    let mut v = vec![b'a'; len];
                    if at < len {
                        v[at] = stop;
                    }
                    v.push(b'"');
                    v.extend_from_slice(b"tail&<'\"");
                    for from in [0, 1, 7, 8, 9].into_iter().filter(|&f| f <= len) {
                        for q in [b'"', b'\''] {
                            assert_eq!(value_end(&v, from, q), naive(&v, from, q), "{v:?} {from} {q}");
                        }
                    }
                }
            }
        }
        assert_eq!(value_end(b"abc", 0, b'"'), None);
    }

    #[test]
    fn duplicates_are_found_among_few_and_many_attributes() {
        let check = |text: &str| Checked::new(text).check_all();
        // Same length, first and last byte: the names are compared, not just their hashes.
        assert!(check("axb='1' ayb='2' azb='3'").is_ok());
        assert!(check("axb='1' ayb='2' axb='3'").unwrap_err().contains("Duplicate"));
        assert!(check("p:a='1' q:a='2' xmlns='u' xmlns:p='v'").is_ok());
        assert!(check("xmlns:p='1' a='2' xmlns:p='3'").unwrap_err().contains("Duplicate"));
        let many: String = (0..40).map(|i| format!(" a{i}='{i}'")).collect();
        assert!(check(&many).is_ok());
        for dup in [0, 15, 16, 39] {
            let text = format!("{many} a{dup}='again'");
            assert!(check(&text).unwrap_err().contains("Duplicate"), "{dup}");
        }
    }

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
