//! A fast attribute scanner over the raw text of a start tag.
//!
//! quick-xml's `Attributes` iterator re-validates UTF-8 and allocates for duplicate checks;
//! profiling showed it as the largest cost of reading after the event loop itself. This
//! scanner slices names and values straight out of the input `&str` (so no UTF-8 check is
//! needed), checks names and duplicates, and asks the `NsReader` to resolve prefixed names
//! only. Namespace declarations are skipped: the `NsReader` has already applied them.

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{Fatal, FatalKind, Ns, RawAttr, Res, Tag};

/// Attribute names kept inline for the duplicate check before spilling to the heap.
const INLINE_KEYS: usize = 16;

/// Iterates the attributes of a start tag; see the module docs.
pub(crate) struct AttrIter<'r, 'i> {
    reader: &'r NsReader<&'i [u8]>,
    text: &'i str,
    pos: usize,
    offset: usize,
    inline: [&'i str; INLINE_KEYS],
    count: usize,
    spilled: HashSet<&'i str>,
}

/// The attributes of `tag`, which must come from `input`.
pub(crate) fn attr_iter<'r, 'i>(reader: &'r NsReader<&'i [u8]>, input: &'i str, tag: &Tag<'i>) -> AttrIter<'r, 'i> {
    let raw = tag.start.attributes_raw();
    // The tag borrows the input; find the same bytes as a `&str` by address.
    let start = (raw.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    let text =
        input.get(start..start.saturating_add(raw.len())).filter(|t| t.as_ptr() == raw.as_ptr()).unwrap_or("\u{0}");
    AttrIter { reader, text, pos: 0, offset: tag.offset, inline: [""; INLINE_KEYS], count: 0, spilled: HashSet::new() }
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
        let bytes = self.text.as_bytes();
        if bytes.first() == Some(&0) {
            return self.fail("Attributes could not be located in the input".into());
        }
        loop {
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
                return self.fail(format!("Invalid attribute name {key:?}"));
            }
            while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if bytes.get(self.pos) != Some(&b'=') {
                return self.fail(format!("Attribute {key:?} has no value"));
            }
            self.pos += 1;
            while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            let quote = match bytes.get(self.pos) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => return self.fail(format!("Attribute {key:?} value is not quoted")),
            };
            // One pass over the value: find the closing quote, noting references and '<'.
            let value_start = self.pos + 1;
            let mut end = value_start;
            let (mut has_amp, mut has_lt) = (false, false);
            loop {
                let Some(found) = memchr::memchr3(quote, b'&', b'<', &bytes[end..]) else {
                    return self.fail(format!("Attribute {key:?} value is not closed"));
                };
                end += found;
                match bytes[end] {
                    b'&' => has_amp = true,
                    b'<' => has_lt = true,
                    _ => break,
                }
                end += 1;
            }
            let raw_value = &self.text[value_start..end];
            self.pos = end + 1;
            if has_lt {
                return self.fail(format!("Attribute {key:?} value contains '<'"));
            }
            if self.count >= crate::MAX_ATTRIBUTES {
                return self.fail(format!("More than {} attributes on one element", crate::MAX_ATTRIBUTES));
            }
            if self.duplicate(key) {
                return self.fail(format!("Duplicate attribute {key:?}"));
            }
            let (prefix, local) = match colon {
                Some(c) => (Some(&self.text[name_start..c]), &self.text[c + 1..name_start + key.len()]),
                None => (None, key),
            };
            if prefix == Some("xmlns") || (prefix.is_none() && local == "xmlns") {
                continue;
            }
            let ns = match prefix {
                None => Ns::None,
                Some(_) => {
                    let (res, _) = self.reader.resolve_attribute(quick_xml::name::QName(key.as_bytes()));
                    match res {
                        ResolveResult::Bound(n) => Ns::classify(n.into_inner()),
                        ResolveResult::Unbound => Ns::None,
                        ResolveResult::Unknown(p) => {
                            return self.fail(format!("Unknown namespace prefix {:?}", String::from_utf8_lossy(&p)))
                        }
                    }
                }
            };
            let value = if has_amp {
                match quick_xml::escape::unescape(raw_value) {
                    Ok(v) => Cow::Owned(v.into_owned()),
                    Err(e) => return self.fail(e.to_string()),
                }
            } else {
                Cow::Borrowed(raw_value)
            };
            return Some(Ok(RawAttr { ns, local, value }));
        }
    }
}
