//! A fast attribute scanner over the raw text of a start tag.
//!
//! quick-xml's `Attributes` iterator re-validates UTF-8 and allocates for duplicate checks;
//! profiling showed it as the largest cost of reading after the event loop itself. This
//! scanner slices names and values straight out of the input `&str` (so no UTF-8 check is
//! needed), checks names and duplicates, and resolves prefixed names through the reader's
//! [`Scopes`]. Namespace declarations are skipped: [`Scopes::open`] has already applied them.

use std::borrow::Cow;
use std::collections::HashSet;

use super::ns::Scopes;
use super::{Fatal, FatalKind, Ns, RawAttr, Res, Tag};

/// Attribute names kept inline for the duplicate check before spilling to the heap.
const INLINE_KEYS: usize = 16;

/// One attribute as written: name, where its prefix colon is, and the raw value.
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
        let mut colon = None;
        let mut bad_name = false;
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'=' | b' ' | b'\t' | b'\n' | b'\r' => break,
                b':' if colon.is_none() => colon = Some(self.pos),
                b'a'..=b'z' | b'A'..=b'Z' | b'_' | 0x80.. => {}
                b'0'..=b'9' | b'-' | b'.' => {
                    // Not allowed as the first character of the name or of its local part.
                    if self.pos == name_start || colon == Some(self.pos - 1) {
                        bad_name = true;
                    }
                }
                _ => bad_name = true,
            }
            self.pos += 1;
        }
        let key = &self.text[name_start..self.pos];
        if bad_name || key.is_empty() || colon == Some(name_start) || colon == Some(self.pos - 1) {
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
        Some(Ok(Lexed { key, colon: colon.map(|c| c - name_start), value, has_amp }))
    }
}

/// Iterates the attributes of a start tag; see the module docs.
pub(crate) struct AttrIter<'r, 'i> {
    scopes: &'r Scopes<'i>,
    lexer: Lexer<'i>,
    offset: usize,
    inline: [&'i str; INLINE_KEYS],
    count: usize,
    spilled: HashSet<&'i str>,
}

/// The attributes of `tag`, resolved in the namespace scope of `scopes`.
pub(crate) fn attr_iter<'r, 'i>(scopes: &'r Scopes<'i>, tag: &Tag<'i>) -> AttrIter<'r, 'i> {
    AttrIter {
        scopes,
        lexer: Lexer::new(tag.attrs),
        offset: tag.offset,
        inline: [""; INLINE_KEYS],
        count: 0,
        spilled: HashSet::new(),
    }
}

impl<'i> AttrIter<'_, 'i> {
    fn fail(&self, message: String) -> Option<Res<RawAttr<'i>>> {
        // Scanning stops at the first error: the whole document is refused anyway.
        Some(Err(Fatal { offset: self.offset, kind: FatalKind::Malformed(message) }))
    }

    /// Records a name, reporting whether it was already present.
    fn duplicate(&mut self, key: &'i str) -> bool {
        // Small elements compare against the inline slots; beyond them a set keeps the
        // check linear, so a hostile element with thousands of attributes stays cheap.
        let seen = if self.count < INLINE_KEYS {
            let seen = self.inline[..self.count].contains(&key);
            self.inline[self.count] = key;
            seen
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend(self.inline.iter().copied());
            }
            !self.spilled.insert(key)
        };
        self.count += 1;
        seen
    }
}

impl<'i> Iterator for AttrIter<'_, 'i> {
    type Item = Res<RawAttr<'i>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Lexed { key, colon, value, has_amp } = match self.lexer.next_raw()? {
                Ok(l) => l,
                Err(message) => return self.fail(message),
            };
            if self.count >= crate::MAX_ATTRIBUTES {
                return self.fail(format!("More than {} attributes on one element", crate::MAX_ATTRIBUTES));
            }
            if self.duplicate(key) {
                return self.fail(format!("Duplicate attribute {key:?}"));
            }
            let (prefix, local) = match colon {
                Some(c) => (Some(&key[..c]), &key[c + 1..]),
                None => (None, key),
            };
            if prefix == Some("xmlns") || (prefix.is_none() && local == "xmlns") {
                continue;
            }
            let ns = match prefix {
                None => Ns::None,
                Some(p) => match self.scopes.resolve(Some(p.as_bytes()), false) {
                    Ok(ns) => ns,
                    Err(message) => return self.fail(message),
                },
            };
            let value = if has_amp {
                match quick_xml::escape::unescape(value) {
                    Ok(v) => Cow::Owned(v.into_owned()),
                    Err(e) => return self.fail(e.to_string()),
                }
            } else {
                Cow::Borrowed(value)
            };
            return Some(Ok(RawAttr { ns, local, value }));
        }
    }
}
