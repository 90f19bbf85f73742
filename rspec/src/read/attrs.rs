//! A fast attribute scanner over the raw text of a start tag.
//!
//! quick-xml's `Attributes` iterator re-validates UTF-8 and allocates for duplicate checks;
//! profiling showed it as the largest cost of reading after the event loop itself. This
//! scanner slices names and values straight out of the input `&str` (so no UTF-8 check is
//! needed), checks names and duplicates, and asks the `NsReader` to resolve prefixed names
//! only. Namespace declarations are skipped: the `NsReader` has already applied them.

use std::borrow::Cow;

use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{is_ncname, Fatal, FatalKind, Ns, RawAttr, Res, Tag};

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
    spilled: Vec<&'i str>,
}

/// The attributes of `tag`, which must come from `input`.
pub(crate) fn attr_iter<'r, 'i>(
    reader: &'r NsReader<&'i [u8]>,
    input: &'i str,
    tag: &Tag<'i>,
) -> AttrIter<'r, 'i> {
    let raw = tag.start.attributes_raw();
    // The tag borrows the input; find the same bytes as a `&str` by address.
    let start = (raw.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    let text = input
        .get(start..start.saturating_add(raw.len()))
        .filter(|t| t.as_ptr() == raw.as_ptr())
        .unwrap_or("\u{0}");
    AttrIter {
        reader,
        text,
        pos: 0,
        offset: tag.offset,
        inline: [""; INLINE_KEYS],
        count: 0,
        spilled: Vec::new(),
    }
}

impl<'i> AttrIter<'_, 'i> {
    fn fail(&self, message: String) -> Option<Res<RawAttr<'i>>> {
        // Scanning stops at the first error: the whole document is refused anyway.
        Some(Err(Fatal {
            offset: self.offset,
            kind: FatalKind::Malformed(message),
        }))
    }

    /// Records a name, reporting whether it was already present.
    fn duplicate(&mut self, key: &'i str) -> bool {
        let seen = self.inline[..self.count.min(INLINE_KEYS)]
            .iter()
            .chain(self.spilled.iter())
            .any(|k| *k == key);
        if self.count < INLINE_KEYS {
            self.inline[self.count] = key;
        } else {
            // Beyond the inline slots the check is linear per attribute; an element with
            // thousands of attributes is bounded by the document size cap.
            self.spilled.push(key);
        }
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
            let name_start = self.pos;
            while self.pos < bytes.len() && !matches!(bytes[self.pos], b'=' | b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            }
            let key = &self.text[name_start..self.pos];
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
            let value_start = self.pos + 1;
            let Some(len) = bytes[value_start..].iter().position(|&b| b == quote) else {
                return self.fail(format!("Attribute {key:?} value is not closed"));
            };
            let raw_value = &self.text[value_start..value_start + len];
            self.pos = value_start + len + 1;
            if raw_value.contains('<') {
                return self.fail(format!("Attribute {key:?} value contains '<'"));
            }
            if self.duplicate(key) {
                return self.fail(format!("Duplicate attribute {key:?}"));
            }
            let (prefix, local) = match key.split_once(':') {
                Some((p, l)) => (Some(p), l),
                None => (None, key),
            };
            if !is_ncname(local) || prefix.is_some_and(|p| !is_ncname(p)) {
                return self.fail(format!("Invalid attribute name {key:?}"));
            }
            if prefix == Some("xmlns") || (prefix.is_none() && local == "xmlns") {
                continue;
            }
            let ns = match prefix {
                None => Ns::None,
                Some(_) => {
                    let (res, _) = self
                        .reader
                        .resolve_attribute(quick_xml::name::QName(key.as_bytes()));
                    match res {
                        ResolveResult::Bound(n) => Ns::classify(n.into_inner()),
                        ResolveResult::Unbound => Ns::None,
                        ResolveResult::Unknown(p) => {
                            return self.fail(format!(
                                "Unknown namespace prefix {:?}",
                                String::from_utf8_lossy(&p)
                            ))
                        }
                    }
                }
            };
            let value = if raw_value.contains('&') {
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
