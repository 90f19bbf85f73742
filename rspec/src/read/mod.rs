//! The reader: one pass over quick-xml's namespace-aware events straight into the model.
//!
//! There is no intermediate DOM: each element kind has a function that consumes its start
//! event, its attributes and its children up to the matching end event. Only extension content
//! is built as an [`XmlElement`] tree. Semantic problems are collected (never returned early);
//! byte offsets are kept and turned into line/column once, at the end, in a single sweep.

mod attrs;
mod elements;
mod link;
mod node;
mod opstate;
mod values;

pub(crate) use attrs::attr_iter;

pub(crate) use values::is_datetime;

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::error::{Error, Position, Problem, ProblemKind};
use crate::model::{
    DiskImage, HardwareType, Interface, InterfaceRef, Ip, LinkProperty, LinkType, RSpec, RSpecType, SliverType,
    EMULAB_NS, GENI_V3_NS, OPSTATE_NS, PROTOGENI_V2_NS, USER_NS, XSI_NS,
};
use crate::validate::{self, Offsets};
use crate::xml::{QName, XmlAttr, XmlChild, XmlElement};
use crate::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_ELEMENTS, MAX_NAMESPACES_IN_SCOPE};

/// A namespace, classified without allocating for the ones the model knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ns {
    /// No namespace.
    None,
    /// GENI RSpec v3 core.
    Geni,
    /// Emulab extension.
    Emulab,
    /// Login-user extension.
    User,
    /// Opstate extension.
    Opstate,
    /// XML Schema instance.
    Xsi,
    /// Any other namespace.
    Other(String),
}

impl Ns {
    /// Classifies a namespace name as quick-xml's resolver stores it: the raw attribute
    /// value of the declaration, so character references are expanded here.
    pub(crate) fn classify(raw: &[u8]) -> Ns {
        // Fast path for the namespaces every document uses, without UTF-8 checks.
        match raw {
            b"http://www.geni.net/resources/rspec/3" => return Ns::Geni,
            b"http://www.protogeni.net/resources/rspec/ext/emulab/1" => return Ns::Emulab,
            _ => {}
        }
        let text = String::from_utf8_lossy(raw);
        let name = if raw.contains(&b'&') {
            match quick_xml::escape::unescape(&text) {
                Ok(s) => Cow::Owned(s.into_owned()),
                Err(_) => text,
            }
        } else {
            text
        };
        match name.as_ref() {
            GENI_V3_NS => Ns::Geni,
            EMULAB_NS => Ns::Emulab,
            USER_NS => Ns::User,
            OPSTATE_NS => Ns::Opstate,
            XSI_NS => Ns::Xsi,
            other => Ns::Other(other.to_owned()),
        }
    }

    fn uri(&self) -> Option<String> {
        let s = match self {
            Ns::None => return None,
            Ns::Geni => GENI_V3_NS,
            Ns::Emulab => EMULAB_NS,
            Ns::User => USER_NS,
            Ns::Opstate => OPSTATE_NS,
            Ns::Xsi => XSI_NS,
            Ns::Other(s) => return Some(s.clone()),
        };
        Some(s.to_owned())
    }
}

/// A start tag seen by the reader, with its namespace resolved.
pub(crate) struct Tag<'i> {
    pub(crate) ns: Ns,
    pub(crate) start: BytesStart<'i>,
    /// `<x/>`: there are no children and no end event to consume.
    pub(crate) empty: bool,
    /// Byte offset of the event (before any leading whitespace).
    pub(crate) offset: usize,
}

impl Tag<'_> {
    pub(crate) fn local(&self) -> &[u8] {
        self.start.local_name().into_inner()
    }

    pub(crate) fn is(&self, ns: &Ns, local: &str) -> bool {
        &self.ns == ns && self.local() == local.as_bytes()
    }
}

/// An attribute with its namespace resolved and its value unescaped.
pub(crate) struct RawAttr<'t> {
    pub(crate) ns: Ns,
    pub(crate) local: &'t str,
    pub(crate) value: Cow<'t, str>,
}

impl RawAttr<'_> {
    /// The attribute's local name when it is in no namespace (every known RSpec attribute).
    pub(crate) fn plain(&self) -> Option<&str> {
        match self.ns {
            Ns::None => Some(self.local),
            _ => None,
        }
    }

    pub(crate) fn into_ext(self) -> XmlAttr {
        XmlAttr { name: QName { ns: self.ns.uri(), local: self.local.to_owned() }, value: self.value.into_owned() }
    }
}

/// Stacks that child lists are collected on before being moved into the model with exact
/// capacity: growing each small `Vec` in place would allocate four slots for one child and
/// more than double the memory a parsed advertisement holds. Nested elements push above the
/// mark their parent took, so recursion is safe.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) attrs: Vec<XmlAttr>,
    pub(crate) elements: Vec<XmlElement>,
    pub(crate) children: Vec<XmlChild>,
    pub(crate) sliver_types: Vec<SliverType>,
    pub(crate) disk_images: Vec<DiskImage>,
    pub(crate) hardware_types: Vec<HardwareType>,
    pub(crate) interfaces: Vec<Interface>,
    pub(crate) ips: Vec<Ip>,
    pub(crate) interface_refs: Vec<InterfaceRef>,
    pub(crate) link_types: Vec<LinkType>,
    pub(crate) properties: Vec<LinkProperty>,
    pub(crate) strings: Vec<String>,
}

/// Moves the items above `mark` out of a scratch stack into an exactly sized `Vec`.
pub(crate) fn take<T>(stack: &mut Vec<T>, mark: usize) -> Vec<T> {
    if stack.len() <= mark {
        return Vec::new();
    }
    stack.drain(mark..).collect()
}

/// Reader state for one document.
pub(crate) struct Ctx<'i> {
    pub(crate) reader: NsReader<&'i [u8]>,
    /// The whole input, so attribute text can be sliced from it without UTF-8 re-checks.
    pub(crate) input: &'i str,
    depth: usize,
    elements: usize,
    /// Namespace declarations made by each open element, and their sum.
    ns_decls: Vec<usize>,
    ns_in_scope: usize,
    xmlns: memchr::memmem::Finder<'static>,
    /// Problems as (byte offset, kind, message); positions are computed at the end.
    pub(crate) problems: Vec<(usize, ProblemKind, String)>,
    pub(crate) offsets: Offsets,
    /// The document kind, once the root's `type` is read (some attributes depend on it).
    pub(crate) kind: RSpecType,
    pub(crate) sc: Scratch,
}

/// What [`Ctx::next_child`] found.
pub(crate) enum Next<'i> {
    /// A child element.
    Child(Tag<'i>),
    /// Non-whitespace text (trimmed, unescaped).
    Text(String),
    /// The end of the current element.
    End,
}

/// An internal fatal error: a byte offset plus the public error without its position yet.
pub(crate) struct Fatal {
    pub(crate) offset: usize,
    pub(crate) kind: FatalKind,
}

pub(crate) enum FatalKind {
    Malformed(String),
    TooDeep,
    TooManyElements,
    Doctype,
    NotRSpec(String),
}

pub(crate) type Res<T> = Result<T, Fatal>;

impl<'i> Ctx<'i> {
    fn new(input: &'i str) -> Self {
        let mut reader = NsReader::from_str(input);
        let config = reader.config_mut();
        // Text is kept verbatim (mixed content in extensions keeps its spaces); whitespace-only
        // text, which is indentation, is dropped in `next_child`.
        config.trim_text(false);
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Ctx {
            reader,
            input,
            depth: 0,
            elements: 0,
            ns_decls: Vec::new(),
            ns_in_scope: 0,
            xmlns: memchr::memmem::Finder::new(b"xmlns"),
            problems: Vec::new(),
            offsets: Offsets::default(),
            kind: RSpecType::Request,
            sc: Scratch::default(),
        }
    }

    fn malformed(&self, message: impl Into<String>) -> Fatal {
        Fatal { offset: self.reader.buffer_position() as usize, kind: FatalKind::Malformed(message.into()) }
    }

    pub(crate) fn problem(&mut self, offset: usize, kind: ProblemKind, message: String) {
        self.problems.push((offset, kind, message));
    }

    /// Reads the next event that matters, resolving the element namespace, tracking depth,
    /// and refusing DOCTYPE. Comments, processing instructions and declarations are skipped.
    fn event(&mut self) -> Res<(Ns, Event<'i>, usize)> {
        loop {
            let offset = self.reader.buffer_position() as usize;
            let ev = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => {
                    return Err(Fatal {
                        offset: self.reader.error_position() as usize,
                        kind: FatalKind::Malformed(e.to_string()),
                    })
                }
            };
            // Only start tags need their namespace: end tags are matched by name by quick-xml,
            // and text has none. Resolving just these keeps the per-event cost down.
            let ns = match &ev {
                Event::Start(e) | Event::Empty(e) => match self.reader.resolve_element(e.name()).0 {
                    ResolveResult::Unbound => Ns::None,
                    ResolveResult::Bound(n) => Ns::classify(n.into_inner()),
                    ResolveResult::Unknown(p) => {
                        return Err(Fatal {
                            offset,
                            kind: FatalKind::Malformed(format!(
                                "Unknown namespace prefix {:?}",
                                String::from_utf8_lossy(&p)
                            )),
                        })
                    }
                },
                _ => Ns::None,
            };
            // Bound the declarations in scope (see MAX_NAMESPACES_IN_SCOPE). Counting the
            // text "xmlns" in the attributes may over-count, never under-count.
            let decls = match &ev {
                Event::Start(e) | Event::Empty(e) => {
                    self.elements += 1;
                    if self.elements > MAX_ELEMENTS {
                        return Err(Fatal { offset, kind: FatalKind::TooManyElements });
                    }
                    let n = self.xmlns.find_iter(e.attributes_raw()).count();
                    if self.ns_in_scope + n > MAX_NAMESPACES_IN_SCOPE {
                        return Err(Fatal {
                            offset,
                            kind: FatalKind::Malformed(format!(
                                "More than {MAX_NAMESPACES_IN_SCOPE} namespace declarations in scope"
                            )),
                        });
                    }
                    n
                }
                _ => 0,
            };
            match ev {
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
                Event::DocType(_) => return Err(Fatal { offset, kind: FatalKind::Doctype }),
                Event::Start(_) => {
                    self.ns_decls.push(decls);
                    self.ns_in_scope += decls;
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(Fatal { offset, kind: FatalKind::TooDeep });
                    }
                }
                Event::Empty(_) if self.depth + 1 > MAX_DEPTH => {
                    return Err(Fatal { offset, kind: FatalKind::TooDeep });
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    self.ns_in_scope -= self.ns_decls.pop().unwrap_or(0);
                }
                _ => {}
            }
            return Ok((ns, ev, offset));
        }
    }

    /// The next child of the element being read, its text, or its end.
    pub(crate) fn next_child(&mut self) -> Res<Next<'i>> {
        loop {
            let (ns, ev, offset) = self.event()?;
            return Ok(match ev {
                Event::Start(start) => Next::Child(Tag { ns, start, empty: false, offset }),
                Event::Empty(start) => Next::Child(Tag { ns, start, empty: true, offset }),
                Event::End(_) => Next::End,
                Event::Text(t) => {
                    if t.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let text = t.unescape().map_err(|e| self.malformed(e.to_string()))?;
                    Next::Text(text.into_owned())
                }
                Event::CData(c) => {
                    let raw = c.into_inner();
                    let text = std::str::from_utf8(&raw).map_err(|e| self.malformed(e.to_string()))?.to_owned();
                    Next::Text(text)
                }
                Event::Eof => return Err(self.malformed("Unexpected end of document")),
                _ => continue,
            });
        }
    }

    /// Consumes the rest of an element the reader has no use for inside a known element.
    pub(crate) fn skip(&mut self, tag: &Tag<'i>) -> Res<()> {
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(child) => self.skip(&child)?,
                Next::Text(_) => {}
                Next::End => return Ok(()),
            }
        }
    }

    /// Reads an element the model does not know into an owned tree.
    pub(crate) fn ext_element(&mut self, tag: Tag<'i>) -> Res<XmlElement> {
        for a in attr_iter(&self.reader, self.input, &tag) {
            self.sc.attrs.push(a?.into_ext());
        }
        let attrs = take(&mut self.sc.attrs, 0);
        let local = std::str::from_utf8(tag.local()).map_err(|e| self.malformed(e.to_string()))?.to_owned();
        // quick-xml does not check names; a kept name must be writable again.
        if !is_ncname(&local) || tag.ns == Ns::Other(XMLNS_NS.to_owned()) {
            return Err(Fatal {
                offset: tag.offset,
                kind: FatalKind::Malformed(format!("Invalid element name {local:?}")),
            });
        }
        let mut el = XmlElement { name: QName { ns: tag.ns.uri(), local }, attrs, children: Vec::new() };
        if tag.empty {
            return Ok(el);
        }
        let mark = self.sc.children.len();
        loop {
            match self.next_child()? {
                Next::Child(child) => {
                    let c = self.ext_element(child)?;
                    self.sc.children.push(XmlChild::Element(c));
                }
                // Text split by CDATA sections or dropped whitespace is one text node, as the
                // writer will emit it as one.
                Next::Text(t) => {
                    let above = self.sc.children.len() > mark;
                    match self.sc.children.last_mut() {
                        Some(XmlChild::Text(prev)) if above => prev.push_str(&t),
                        _ => self.sc.children.push(XmlChild::Text(t)),
                    }
                }
                Next::End => {
                    el.children = take(&mut self.sc.children, mark);
                    return Ok(el);
                }
            }
        }
    }

    /// Reads the text content of a simple element such as `<description>`; child elements
    /// are reported and skipped.
    pub(crate) fn text_content(&mut self, tag: &Tag<'i>) -> Res<String> {
        let mut out = String::new();
        if tag.empty {
            return Ok(out);
        }
        loop {
            match self.next_child()? {
                Next::Child(child) => {
                    self.problem(
                        child.offset,
                        ProblemKind::UnexpectedElement,
                        format!(
                            "Unexpected element <{}> inside a text-only element",
                            String::from_utf8_lossy(child.local())
                        ),
                    );
                    self.skip(&child)?;
                }
                Next::Text(t) => out.push_str(&t),
                Next::End => return Ok(out.trim().to_owned()),
            }
        }
    }

    /// Reads the root element and the document's epilogue.
    fn document(&mut self) -> Res<RSpec> {
        let root = loop {
            let (ns, ev, offset) = self.event()?;
            match ev {
                Event::Start(start) => break Tag { ns, start, empty: false, offset },
                Event::Empty(start) => break Tag { ns, start, empty: true, offset },
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => continue,
                Event::Text(_) | Event::CData(_) => return Err(self.malformed("Text before the root element")),
                Event::Eof => return Err(self.malformed("No root element")),
                _ => return Err(self.malformed("Unexpected markup before the root element")),
            }
        };
        if !root.is(&Ns::Geni, "rspec") {
            let found = format!("{{{}}}{}", root.ns.uri().unwrap_or_default(), String::from_utf8_lossy(root.local()));
            let hint = if root.ns == Ns::Other(PROTOGENI_V2_NS.to_owned()) {
                " (ProtoGENI RSpec v2 is not supported; send GENI v3)"
            } else {
                ""
            };
            return Err(Fatal { offset: root.offset, kind: FatalKind::NotRSpec(format!("{found}{hint}")) });
        }
        let rspec = self.rspec(root)?;
        // Only whitespace, comments and processing instructions may follow the root.
        loop {
            let (_, ev, _) = self.event()?;
            match ev {
                Event::Eof => return Ok(rspec),
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => continue,
                _ => return Err(self.malformed("Content after the root element")),
            }
        }
    }
}

/// The namespace of `xmlns` declarations, which no element or attribute may use.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Whether `s` is a namespace-local XML name. Non-ASCII characters are accepted wholesale,
/// a superset of the XML name classes that is still safe to write back.
pub(crate) fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = match chars.next() {
        Some(c) => c.is_ascii_alphabetic() || c == '_' || !c.is_ascii(),
        None => false,
    };
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii())
}

/// The offset of the first byte below 0x20 other than tab, newline and carriage return.
/// Eight bytes are tested at a time (a byte-wise loop was a tenth of the reading time); only
/// words holding some byte below 0x20, usually a newline, are looked at byte by byte.
fn first_control_char(bytes: &[u8]) -> Option<usize> {
    const LOW: u64 = 0x2020_2020_2020_2020;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let bad = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Sets the high bit of each byte that is below 0x20 (and possibly of some >= 0x80,
        // which the byte-wise check below then clears).
        if x.wrapping_sub(LOW) & !x & HIGH != 0 {
            if let Some(i) = chunk.iter().position(|&b| bad(b)) {
                return Some(base + i);
            }
        }
        base += 8;
    }
    chunks.remainder().iter().position(|&b| bad(b)).map(|i| base + i)
}

/// Reads a document; see [`crate::parse`].
pub(crate) fn parse(input: &str) -> Result<RSpec, Error> {
    if input.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge { len: input.len(), max: MAX_DOCUMENT_BYTES });
    }
    // XML 1.0 forbids these control characters anywhere; quick-xml does not check.
    if let Some(at) = first_control_char(input.as_bytes()) {
        return Err(Error::Malformed {
            position: positions(input, &[at])[0],
            message: format!("Control character U+{:04X} is not allowed in XML", input.as_bytes()[at]),
        });
    }
    let mut ctx = Ctx::new(input);
    let rspec = match ctx.document() {
        Ok(r) => r,
        Err(f) => {
            let position = positions(input, &[f.offset])[0];
            return Err(match f.kind {
                FatalKind::Malformed(message) => Error::Malformed { position, message },
                FatalKind::TooDeep => Error::TooDeep { position, max: MAX_DEPTH },
                FatalKind::TooManyElements => Error::TooManyElements { position, max: MAX_ELEMENTS },
                FatalKind::Doctype => Error::Doctype { position },
                FatalKind::NotRSpec(found) => Error::NotRSpecV3 { found },
            });
        }
    };
    let mut problems = std::mem::take(&mut ctx.problems);
    validate::check(&rspec, Some(&ctx.offsets), false, &mut |off, kind, msg| {
        problems.push((off.unwrap_or(0), kind, msg));
    });
    if problems.is_empty() {
        return Ok(rspec);
    }
    problems.sort_by_key(|p| p.0);
    let offsets: Vec<usize> = problems.iter().map(|p| p.0).collect();
    let pos = positions(input, &offsets);
    Err(Error::Invalid(
        problems
            .into_iter()
            .zip(pos)
            .map(|((_, kind, message), position)| Problem { position: Some(position), kind, message })
            .collect(),
    ))
}

/// Converts sorted byte offsets to positions in one sweep. An offset that points at
/// whitespace before a tag is moved to the tag, which is where a reader expects it.
fn positions(input: &str, sorted: &[usize]) -> Vec<Position> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(sorted.len());
    // `chars` counts characters since the line start, so the sweep stays linear even for a
    // hostile one-line document with many problems.
    let (mut line, mut chars, mut at) = (1usize, 0usize, 0usize);
    for &raw in sorted {
        let mut off = raw.min(bytes.len());
        // Skipping whitespace keeps offsets sorted: it only moves each one forward to the
        // next non-blank byte, which is the same for offsets sharing a whitespace run.
        while off < bytes.len() && bytes[off].is_ascii_whitespace() {
            off += 1;
        }
        while at < off {
            if bytes[at] == b'\n' {
                line += 1;
                chars = 0;
            } else if bytes[at] & 0xC0 != 0x80 {
                chars += 1;
            }
            at += 1;
        }
        out.push(Position { line, column: chars + 1 });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_char_scan_matches_a_bytewise_scan() {
        let naive = |b: &[u8]| b.iter().position(|&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'));
        let mut samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain ascii text with\nnewlines\tand tabs\r\n".to_vec(),
            "caf\u{e9} \u{263a} \u{80}\u{ff}".as_bytes().to_vec(),
        ];
        for at in 0..20 {
            for bad in [0u8, 1, 8, 11, 12, 31] {
                let mut v = b"0123456789abcdef\n\t\r0123".to_vec();
                v.insert(at, bad);
                samples.push(v);
            }
        }
        for s in samples {
            assert_eq!(first_control_char(&s), naive(&s), "{s:?}");
        }
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\n\u{e9}\u{e9}x\n  <y";
        let pos = positions(text, &[0, 3, 7, 10]);
        assert_eq!(pos[0], Position { line: 1, column: 1 });
        assert_eq!(pos[1], Position { line: 2, column: 1 });
        assert_eq!(pos[2], Position { line: 2, column: 3 });
        // Offsets on whitespace move to the next tag.
        assert_eq!(pos[3], Position { line: 3, column: 3 });
    }
}
