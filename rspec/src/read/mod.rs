//! The reader: one pass over quick-xml's bare `Reader` events straight into the model, with
//! namespaces resolved by the reader's own prefix stack ([`ns`]).
//!
//! There is no intermediate DOM: each element kind has a function that consumes its start
//! event, its attributes and its children up to the matching end event. Only extension content
//! is built as an [`XmlElement`] tree. Semantic problems are collected (never returned early);
//! byte offsets are kept and turned into line/column once, at the end, in a single sweep.
//!
//! A large document may be read in parts on several threads ([`split`]): each part by the
//! same element readers, with a reader over its own bytes that starts inside the root.

mod attrs;
mod elements;
mod link;
mod node;
mod ns;
mod opstate;
mod split;
mod strings;
pub(crate) mod values;

pub(crate) use attrs::attr_iter;

pub(crate) use split::default_threads;
pub use split::{Split, PARALLEL_MIN_BYTES};
pub(crate) use values::is_datetime;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use smol_str::SmolStr;

pub(crate) use ns::Ns;
use ns::{Scopes, XMLNS_NS};
use strings::Strings;

use crate::error::{Error, Position, Problem, ProblemKind};
use crate::model::{RSpec, RSpecType, PROTOGENI_V2_NS};
use crate::validate::{self, Offsets};
use crate::xml::{QName, XmlAttr, XmlChild, XmlElement};
use crate::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_ELEMENTS};

/// A start tag seen by the reader, with its namespace resolved.
pub(crate) struct Tag<'i> {
    pub(crate) ns: Ns,
    /// The local part of the name.
    pub(crate) local: &'i [u8],
    /// The attribute text of the tag (after the name), a slice of the input.
    pub(crate) attrs: &'i str,
    /// `<x/>`: there are no children and no end event to consume.
    pub(crate) empty: bool,
    /// Byte offset of the event (before any leading whitespace).
    pub(crate) offset: usize,
    /// The [`Scopes::seq`] of this tag, whose attributes [`attr_iter`] reads.
    pub(crate) seq: u64,
}

impl<'i> Tag<'i> {
    #[inline(always)]
    pub(crate) fn local(&self) -> &'i [u8] {
        self.local
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

    #[inline]
    pub(crate) fn into_ext(self, strs: &mut Strings) -> XmlAttr {
        XmlAttr { name: QName { ns: self.ns.uri(), local: SmolStr::new(self.local) }, value: strs.get(&self.value) }
    }
}

/// Appends a child to one of the model's lists. Most lists hold one or two children, so the
/// first four are given exactly the room they need (growing a `Vec` by `push` alone would
/// allocate four slots for one child and more than double the memory a parsed advertisement
/// holds); beyond four, room doubles as usual, so long lists stay linear to build. Children
/// are pushed straight into the list they end up in.
#[inline]
pub(crate) fn push_child<T>(list: &mut Vec<T>, child: T) {
    if list.len() == list.capacity() && list.len() < 4 {
        list.reserve_exact(1);
    }
    list.push(child);
}

/// The lists whose length is learned from the previous element of the same kind.
pub(crate) mod list {
    pub(crate) const NODE_ATTRS: usize = 0;
    pub(crate) const NODE_SLIVER_TYPES: usize = 1;
    pub(crate) const NODE_HARDWARE_TYPES: usize = 2;
    pub(crate) const NODE_INTERFACES: usize = 3;
    pub(crate) const NODE_EXTENSIONS: usize = 4;
    pub(crate) const SLIVER_DISK_IMAGES: usize = 5;
    pub(crate) const INTERFACE_ATTRS: usize = 6;
    pub(crate) const INTERFACE_IPS: usize = 7;
    pub(crate) const LINK_ATTRS: usize = 8;
    pub(crate) const LINK_MANAGERS: usize = 9;
    pub(crate) const LINK_REFS: usize = 10;
    pub(crate) const LINK_TYPES: usize = 11;
    pub(crate) const LINK_PROPERTIES: usize = 12;
    pub(crate) const LINK_EXTENSIONS: usize = 13;
    pub(crate) const XML_ATTRS: usize = 14;
    pub(crate) const XML_CHILDREN: usize = 15;
    pub(crate) const COUNT: usize = 16;
}

/// The largest length a hint remembers (so a hostile element cannot make later ones reserve
/// much).
const MAX_HINT: usize = 16;

/// Learned list lengths. Elements of one kind tend to have the same number of children of
/// each kind (every node of an advertisement has three sliver types and two interfaces), so
/// a list's first child reserves as many slots as the last list of its kind held: the list
/// is allocated once instead of grown one child at a time, and [`Hints::fit`] gives back
/// what a shorter list did not use, so the model holds no spare room.
pub(crate) struct Hints([u8; list::COUNT]);

impl Hints {
    /// Appends `child` to a list of kind `kind`.
    #[inline(always)]
    pub(crate) fn push<T>(&self, list: &mut Vec<T>, child: T, kind: usize) {
        if list.len() == list.capacity() {
            // Beyond the hint: room for four, then doubling (`fit` trims the excess).
            let more = match list.len() {
                0 => usize::from(self.0[kind]).max(1),
                n @ 1..=3 => 4 - n,
                n => n,
            };
            list.reserve_exact(more);
        }
        list.push(child);
    }

    /// Learns the length of a finished list and frees its unused room.
    #[inline(always)]
    pub(crate) fn fit<T>(&mut self, list: &mut Vec<T>, kind: usize) {
        self.0[kind] = list.len().min(MAX_HINT) as u8;
        if list.capacity() > list.len() {
            list.shrink_to_fit();
        }
    }
}

/// Appends a default child to a list and returns it, for the element reader to fill in
/// place (children are large; building one in place saves moving it through the reader's
/// result and into the list).
#[inline(always)]
pub(crate) fn in_place<'l, T: Default>(hints: &Hints, list: &'l mut Vec<T>, kind: usize) -> &'l mut T {
    hints.push(list, T::default(), kind);
    let last = list.len() - 1;
    &mut list[last]
}

/// Finds the occurrences of `xmlns` in the input ahead of the reader, 64 KiB at a time (one
/// vectorised substring search over a large chunk costs far less than one per start tag),
/// so a start tag can tell from a few comparisons whether its attribute text holds one.
struct XmlnsScan {
    finder: memchr::memmem::Finder<'static>,
    /// Start offsets of the occurrences found, in order; `next` is the first one not yet
    /// behind the reader.
    found: Vec<usize>,
    next: usize,
    /// Every occurrence starting before this offset has been found.
    done: usize,
}

impl XmlnsScan {
    /// A scan of the input from offset `from` on.
    fn new(from: usize) -> Self {
        XmlnsScan { finder: memchr::memmem::Finder::new("xmlns"), found: Vec::new(), next: 0, done: from }
    }

    /// Whether an occurrence starts in `from..to` of `input` (one that starts there but runs
    /// past `to` also counts: the answer may be a false yes, never a false no). Calls come
    /// with increasing `from`.
    #[inline(always)]
    fn within(&mut self, input: &[u8], from: usize, to: usize) -> bool {
        if to > self.done {
            if to - from > CONTROL_CHECK_WINDOW {
                // A huge tag is searched on its own, so the list of occurrences stays short.
                let tail = input.get(from..(to + 4).min(input.len())).unwrap_or_default();
                return self.finder.find(tail).is_some();
            }
            self.scan(input, to);
        }
        while let Some(&at) = self.found.get(self.next) {
            if at >= from {
                return at < to;
            }
            self.next += 1;
        }
        false
    }

    /// Finds the occurrences starting before `to` (and up to a chunk further) that are not
    /// yet known.
    #[cold]
    fn scan(&mut self, input: &[u8], to: usize) {
        self.found.drain(..self.next);
        self.next = 0;
        let end = (to + 4).max(self.done + CONTROL_CHECK_WINDOW).min(input.len());
        let chunk = input.get(self.done..end).unwrap_or_default();
        let base = self.done;
        self.found.extend(self.finder.find_iter(chunk).map(|i| base + i));
        // An occurrence starting in the last four bytes of the chunk runs past its end, so it
        // is left for the next chunk.
        self.done = if end == input.len() { end } else { end - 4 };
    }
}

/// Reader state for one document.
pub(crate) struct Ctx<'i> {
    reader: Reader<&'i [u8]>,
    /// The offset in `input` of the reader's first byte (0, or the start of a part of a split
    /// document, see [`split`]): the reader counts positions from there.
    base: usize,
    /// The offset in `input` where the reader's bytes end.
    end: usize,
    /// The whole input, so names and attribute text can be sliced from it without UTF-8
    /// re-checks.
    input: &'i str,
    /// The namespace bindings in scope.
    pub(crate) scopes: Scopes<'i>,
    depth: usize,
    elements: usize,
    /// Above this many elements, [`Ctx::count_elements`] decides whether there are too many.
    element_limit: usize,
    /// For a part of a split document: the element count of the whole document, to which
    /// each part adds its own every [`ELEMENT_BATCH`] elements (the `usize` is how many it
    /// has added), so the parts together stop soon after [`MAX_ELEMENTS`].
    shared_elements: Option<(Arc<split::Shared>, usize)>,
    /// The input before this offset has no forbidden control character (see
    /// [`Ctx::check_controls`]).
    checked: usize,
    /// Problems as (byte offset, kind, message); positions are computed at the end.
    pub(crate) problems: Vec<(usize, ProblemKind, String)>,
    pub(crate) offsets: Offsets,
    /// The document kind, once the root's `type` is read (some attributes depend on it).
    pub(crate) kind: RSpecType,
    /// Read every kind by the schemas' rules only ([`crate::parse_lenient`]); otherwise a
    /// request is held to the strict rules (see [`Ctx::strict`]).
    pub(crate) lenient: bool,
    /// Attribute values that repeat share one allocation.
    pub(crate) strs: Strings,
    pub(crate) hints: Hints,
    /// Where `xmlns` occurs in the input, found a chunk at a time ([`XmlnsScan`]).
    xmlns: XmlnsScan,
    /// The attribute text and offset of the last start tag, checked before the next event
    /// if its reader did not take them all.
    last_attrs: (&'i str, usize),
}

/// An event that matters to the element readers (comments, processing instructions and
/// the XML declaration are skipped, a DOCTYPE is refused).
enum Ev<'i> {
    Tag(Tag<'i>),
    End,
    /// Text as written (not unescaped), with the whitespace before it.
    Text(&'i str),
    CData(quick_xml::events::BytesCData<'i>),
    Eof,
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

/// How many elements a part of a split document reads between updates of the shared count.
const ELEMENT_BATCH: usize = 4096;

/// A quick-xml reader over `text` configured as the reader needs it.
fn reader(text: &str) -> Reader<&[u8]> {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    // Whitespace before text is skipped by quick-xml, so indentation between tags makes no
    // event at all (it was half of all events). Text is still kept verbatim: `event` puts
    // the skipped whitespace back from the input (mixed content keeps its spaces).
    config.trim_text_start = true;
    config.trim_text_end = false;
    config.check_end_names = true;
    config.expand_empty_elements = false;
    reader
}

impl<'i> Ctx<'i> {
    fn new(input: &'i str, lenient: bool) -> Self {
        Ctx {
            reader: reader(input),
            base: 0,
            end: input.len(),
            input,
            scopes: Scopes::new(),
            depth: 0,
            elements: 0,
            element_limit: MAX_ELEMENTS,
            shared_elements: None,
            checked: 0,
            problems: Vec::new(),
            offsets: Offsets::default(),
            kind: RSpecType::Request,
            lenient,
            strs: Strings::new(),
            hints: Hints([0; list::COUNT]),
            xmlns: XmlnsScan::new(0),
            last_attrs: ("", 0),
        }
    }

    /// Whether the strict rules apply: the document is a request read by [`crate::parse`]
    /// (what an aggregate checks before it allocates). Then attribute values the model can
    /// parse (numbers, addresses, netmasks) must parse, and identifiers and references must
    /// hold; otherwise only what the schemas require is checked and values are kept as
    /// written.
    #[inline(always)]
    pub(crate) fn strict(&self) -> bool {
        !self.lenient && self.kind == RSpecType::Request
    }

    /// The reader's position in the input.
    #[inline(always)]
    fn position(&self) -> usize {
        self.base + self.reader.buffer_position() as usize
    }

    fn malformed(&self, message: impl Into<String>) -> Fatal {
        Fatal { offset: self.position(), kind: FatalKind::Malformed(message.into()) }
    }

    pub(crate) fn problem(&mut self, offset: usize, kind: ProblemKind, message: String) {
        self.problems.push((offset, kind, message));
    }

    /// Reads the next event that matters, tracking depth and namespace scopes and
    /// resolving the namespace of start tags.
    #[inline(always)]
    fn event(&mut self) -> Res<Ev<'i>> {
        if self.scopes.checked.get() != self.scopes.seq {
            self.check_last_attrs()?;
        }
        self.scopes.settle();
        loop {
            let offset = self.position();
            let ev = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => {
                    return Err(Fatal {
                        offset: self.base + self.reader.error_position() as usize,
                        kind: FatalKind::Malformed(e.to_string()),
                    })
                }
            };
            let pos = self.position();
            if pos - self.checked >= CONTROL_CHECK_WINDOW {
                self.check_controls(pos)?;
            }
            return Ok(match ev {
                Event::Start(e) => Ev::Tag(self.start_tag(&e, false, offset)?),
                Event::Empty(e) => Ev::Tag(self.start_tag(&e, true, offset)?),
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    self.scopes.close();
                    Ev::End
                }
                Event::Text(t) => Ev::Text(self.with_leading_space(&t)?),
                Event::CData(c) => Ev::CData(c),
                Event::Eof => Ev::Eof,
                Event::DocType(_) => return Err(Fatal { offset, kind: FatalKind::Doctype }),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
            });
        }
    }

    /// Checks the attributes of the last start tag, which its reader did not take (an element
    /// that is skipped, or whose attributes do not matter): they must still be well-formed.
    #[cold]
    fn check_last_attrs(&mut self) -> Res<()> {
        let (attrs, offset) = self.last_attrs;
        self.scopes.checked.set(self.scopes.seq);
        attrs::Checked::new(attrs).check_all().map_err(|m| Fatal { offset, kind: FatalKind::Malformed(m) })
    }

    /// Decides, once `elements` passes `element_limit`, whether the document has too many
    /// elements. A whole document has a fixed limit; a part of a split document adds what it
    /// read to the shared count and reads on while the total is within [`MAX_ELEMENTS`] (and
    /// no other part has failed: then this one stops too, its result is not needed).
    #[cold]
    fn count_elements(&mut self) -> Result<(), ()> {
        let Some((shared, flushed)) = &mut self.shared_elements else { return Err(()) };
        let add = self.elements - *flushed;
        *flushed = self.elements;
        if shared.elements.fetch_add(add, Ordering::Relaxed) + add > MAX_ELEMENTS
            || shared.failed.load(Ordering::Relaxed)
        {
            return Err(());
        }
        self.element_limit = self.elements + ELEMENT_BATCH;
        Ok(())
    }

    /// Checks the input up to `upto` for control characters XML forbids (quick-xml does not).
    /// It runs on the bytes quick-xml has just read, while they are still in the cache, rather
    /// than as a separate pass over the whole document; [`sequential`] checks the rest, also when
    /// reading failed, so a control character is always the error reported, as if the whole
    /// input had been checked first.
    fn check_controls(&mut self, upto: usize) -> Res<()> {
        let upto = upto.min(self.input.len());
        if let Some(at) = first_control_char(&self.input.as_bytes()[self.checked..upto]) {
            let at = self.checked + at;
            let message = format!("Control character U+{:04X} is not allowed in XML", self.input.as_bytes()[at]);
            return Err(Fatal { offset: at, kind: FatalKind::Malformed(message) });
        }
        self.checked = self.checked.max(upto);
        Ok(())
    }

    /// The text of a text event, found in the input by address, extended back over the
    /// whitespace quick-xml skipped before it.
    fn with_leading_space(&self, text: &[u8]) -> Res<&'i str> {
        let at = (text.as_ptr() as usize).wrapping_sub(self.input.as_ptr() as usize);
        let end = at.saturating_add(text.len());
        match self.input.get(at..end) {
            Some(t) if t.as_ptr() == text.as_ptr() => {}
            _ => return Err(self.malformed("Text could not be located in the input")),
        }
        let bytes = self.input.as_bytes();
        let mut start = at;
        while start > 0 && matches!(bytes[start - 1], b' ' | b'\t' | b'\n' | b'\r') {
            start -= 1;
        }
        // Whitespace is ASCII, so `start` is a character boundary.
        Ok(self.input.get(start..end).unwrap_or_default())
    }

    /// Checks the limits for a start tag, applies its namespace declarations and resolves
    /// its name.
    #[inline(always)]
    fn start_tag(&mut self, e: &BytesStart<'i>, empty: bool, offset: usize) -> Res<Tag<'i>> {
        let fatal = |kind| Fatal { offset, kind };
        self.elements += 1;
        if self.elements > self.element_limit {
            self.count_elements().map_err(|()| fatal(FatalKind::TooManyElements))?;
        }
        if self.depth + 1 > MAX_DEPTH {
            return Err(fatal(FatalKind::TooDeep));
        }
        // The event borrows the input: find its name and attribute text there by address,
        // so they are `&'i str` without a UTF-8 re-check.
        let full: &[u8] = e;
        let at = (full.as_ptr() as usize).wrapping_sub(self.input.as_ptr() as usize);
        let name_len = e.name().as_ref().len();
        let located = self.input.get(at..at.saturating_add(full.len())).filter(|t| t.as_ptr() == full.as_ptr());
        let (name, attrs) = match located.and_then(|t| Some((t.get(..name_len)?, t.get(name_len..)?))) {
            Some((n, a)) => (n.as_bytes(), a),
            None => return Err(fatal(FatalKind::Malformed("Start tag could not be located in the input".into()))),
        };
        // A tag without `xmlns` declares no namespace: its attributes need not be lexed
        // before its name is resolved.
        let attrs_at = at + name_len;
        let declares = self.xmlns.within(self.input.as_bytes(), attrs_at, attrs_at + attrs.len());
        self.scopes.open(attrs, empty, declares).map_err(|m| fatal(FatalKind::Malformed(m)))?;
        self.last_attrs = (attrs, offset);
        let (prefix, local) = match name.iter().position(|&b| b == b':') {
            Some(i) => (Some(&name[..i]), &name[i + 1..]),
            None => (None, name),
        };
        let ns = match self.scopes.resolve(prefix, true) {
            Ok(ns) => ns,
            Err(m) => {
                // A malformed attribute is reported before the name, as when every tag's
                // attributes were checked first.
                attrs::Checked::new(attrs).check_all().map_err(|m| fatal(FatalKind::Malformed(m)))?;
                return Err(fatal(FatalKind::Malformed(m)));
            }
        };
        if !empty {
            self.depth += 1;
        }
        Ok(Tag { ns, local, attrs, empty, offset, seq: self.scopes.seq })
    }

    /// The next child of the element being read, its text, or its end.
    #[inline(always)]
    pub(crate) fn next_child(&mut self) -> Res<Next<'i>> {
        loop {
            return Ok(match self.event()? {
                Ev::Tag(tag) => Next::Child(tag),
                Ev::End => Next::End,
                Ev::Text(raw) => {
                    if raw.bytes().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    let text = unescape(&line_ends(raw)).map_err(|e| self.malformed(e))?.into_owned();
                    Next::Text(text)
                }
                Ev::CData(c) => {
                    let raw = c.into_inner();
                    let text = std::str::from_utf8(&raw).map_err(|e| self.malformed(e.to_string()))?;
                    Next::Text(line_ends(text).into_owned())
                }
                Ev::Eof => return Err(self.malformed("Unexpected end of document")),
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
        let mut attrs = Vec::new();
        for a in attr_iter(&self.scopes, &tag) {
            self.hints.push(&mut attrs, a?.into_ext(&mut self.strs), list::XML_ATTRS);
        }
        self.hints.fit(&mut attrs, list::XML_ATTRS);
        let local = std::str::from_utf8(tag.local()).map_err(|e| self.malformed(e.to_string()))?;
        // quick-xml does not check names; a kept name must be writable again.
        if !is_ncname(local) || tag.ns.as_str() == Some(XMLNS_NS) {
            return Err(Fatal {
                offset: tag.offset,
                kind: FatalKind::Malformed(format!("Invalid element name {local:?}")),
            });
        }
        let mut el =
            XmlElement { name: QName { ns: tag.ns.uri(), local: SmolStr::new(local) }, attrs, children: Vec::new() };
        if tag.empty {
            return Ok(el);
        }
        loop {
            match self.next_child()? {
                Next::Child(child) => {
                    let c = self.ext_element(child)?;
                    self.hints.push(&mut el.children, XmlChild::Element(c), list::XML_CHILDREN);
                }
                // Text split by CDATA sections or dropped whitespace is one text node, as the
                // writer will emit it as one.
                Next::Text(t) => match el.children.last_mut() {
                    Some(XmlChild::Text(prev)) => prev.push_str(&t),
                    _ => self.hints.push(&mut el.children, XmlChild::Text(t), list::XML_CHILDREN),
                },
                Next::End => {
                    self.hints.fit(&mut el.children, list::XML_CHILDREN);
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

    /// Reads up to the root's start tag, which must be `<rspec>` in the GENI namespace.
    fn root(&mut self) -> Res<Tag<'i>> {
        let root = loop {
            match self.event()? {
                Ev::Tag(tag) => break tag,
                Ev::Text(t) if t.bytes().all(|b| b.is_ascii_whitespace()) => continue,
                Ev::Text(_) | Ev::CData(_) => return Err(self.malformed("Text before the root element")),
                Ev::Eof => return Err(self.malformed("No root element")),
                Ev::End => return Err(self.malformed("Unexpected markup before the root element")),
            }
        };
        if !root.is(&Ns::Geni, "rspec") {
            let found = format!("{{{}}}{}", root.ns.uri().unwrap_or_default(), String::from_utf8_lossy(root.local()));
            let hint = if root.ns.as_str() == Some(PROTOGENI_V2_NS) {
                " (ProtoGENI RSpec v2 is not supported; send GENI v3)"
            } else {
                ""
            };
            return Err(Fatal { offset: root.offset, kind: FatalKind::NotRSpec(format!("{found}{hint}")) });
        }
        Ok(root)
    }

    /// Reads the root element and the document's epilogue.
    fn document(&mut self) -> Res<RSpec> {
        let root = self.root()?;
        let rspec = self.rspec(root)?;
        // Only whitespace, comments and processing instructions may follow the root.
        loop {
            match self.event()? {
                Ev::Eof => return Ok(rspec),
                Ev::Text(t) if t.bytes().all(|b| b.is_ascii_whitespace()) => continue,
                _ => return Err(self.malformed("Content after the root element")),
            }
        }
    }
}

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

/// How much input may be read before it is checked for control characters.
const CONTROL_CHECK_WINDOW: usize = 64 * 1024;

/// Expands the predefined entities and character references of `raw`. A reference to a
/// character XML does not allow (a control character such as `&#11;`) is refused: the value
/// could not be written back as well-formed XML.
pub(crate) fn unescape(raw: &str) -> Result<Cow<'_, str>, String> {
    let text = quick_xml::escape::unescape(raw).map_err(|e| e.to_string())?;
    if let Cow::Owned(expanded) = &text {
        if let Some(at) = first_control_char(expanded.as_bytes()) {
            return Err(format!(
                "Character reference to U+{:04X}, which is not allowed in XML",
                expanded.as_bytes()[at]
            ));
        }
    }
    Ok(text)
}

/// Text with XML's line-end normalisation: a CR LF pair and a lone CR are each a newline
/// (a CR written as `&#13;` is kept, as references are expanded after this).
fn line_ends(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\r') {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(raw.replace("\r\n", "\n").replace('\r', "\n"))
}

/// An attribute value as XML defines it: each literal tab, newline and carriage return (a
/// CR LF pair being one line end) becomes a space (attribute-value normalisation), then
/// references are expanded, so characters written as references (`&#10;`) are kept. Without
/// this, a value written over several lines would be written back with `&#10;` in it.
pub(crate) fn attr_value(raw: &str, has_ws: bool) -> Result<Cow<'_, str>, String> {
    if !has_ws {
        return unescape(raw);
    }
    let mut s = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find(['\t', '\n', '\r']) {
        s.push_str(&rest[..at]);
        s.push(' ');
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    s.push_str(rest);
    if !s.contains('&') {
        return Ok(Cow::Owned(s));
    }
    let expanded = unescape(&s)?.into_owned();
    Ok(Cow::Owned(expanded))
}

/// The offset of the first byte below 0x20 other than tab, newline and carriage return.
/// Blocks of 64 bytes are tested with a branch-free fold the compiler turns into vector
/// compares; only a block holding a bad byte is looked at again, byte by byte.
fn first_control_char(bytes: &[u8]) -> Option<usize> {
    let bad = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
    let mut blocks = bytes.chunks_exact(64);
    let mut base = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | bad(b)) {
            return block.iter().position(|&b| bad(b)).map(|i| base + i);
        }
        base += 64;
    }
    blocks.remainder().iter().position(|&b| bad(b)).map(|i| base + i)
}

/// Reads a document, on up to `threads` threads if it has at least `min_bytes` bytes (see
/// [`split`]); the result is always the one [`sequential`] gives. Also says how it was read.
pub(crate) fn parse(input: &str, threads: usize, min_bytes: usize, lenient: bool) -> (Result<RSpec, Error>, Split) {
    if threads < 2 || input.len() < min_bytes || input.len() > MAX_DOCUMENT_BYTES {
        return (sequential(input, lenient), Split::Sequential);
    }
    match split::parse(input, threads, lenient) {
        Some((rspec, parts)) => (Ok(rspec), Split::Parallel { parts }),
        None => (sequential(input, lenient), Split::FellBack),
    }
}

/// Reads a document on the calling thread; see [`crate::parse`].
pub(crate) fn sequential(input: &str, lenient: bool) -> Result<RSpec, Error> {
    if input.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge { len: input.len(), max: MAX_DOCUMENT_BYTES });
    }
    let mut ctx = Ctx::new(input, lenient);
    let read = ctx.document();
    // XML 1.0 forbids control characters anywhere. What reading did not check is checked now,
    // whatever the outcome: a control character is the error to report before any other.
    let read = match ctx.check_controls(input.len()) {
        Err(f) => Err(f),
        Ok(()) => read,
    };
    let rspec = match read {
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
    validate::check(&rspec, Some(&ctx.offsets), false, ctx.strict(), &mut |off, kind, msg| {
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

/// The position just after the end of `input` (where reading of a longer input stopped).
pub(crate) fn end_position(input: &str) -> Position {
    let line_start = input.rfind('\n').map_or(0, |i| i + 1);
    Position { line: input.matches('\n').count() + 1, column: input[line_start..].chars().count() + 1 }
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
        // Longer inputs reach the word-wise blocks: every byte value at positions inside and
        // across blocks, in filler that mixes the allowed control characters and high bytes.
        let filler: Vec<u8> =
            (0..80u8).map(|i| [b'a', b'\n', b'\t', b'\r', 0xC3, 0xA9, b' ', 0x7F][usize::from(i % 8)]).collect();
        for b in 0..=255u8 {
            for at in [0usize, 7, 8, 31, 32, 33, 63, 64, 79] {
                let mut v = filler.clone();
                v[at] = b;
                samples.push(v);
            }
        }
        samples.push(filler);
        for s in samples {
            assert_eq!(first_control_char(&s), naive(&s), "{s:?}");
        }
    }

    #[test]
    fn xmlns_scan_finds_every_occurrence_in_a_range() {
        let w = CONTROL_CHECK_WINDOW;
        let len = 3 * w + 100;
        let mut input = vec![b'a'; len];
        let mut starts = vec![0, 7, w - 6, w - 5, w - 4, w - 3, w - 1, w, w + 2, 2 * w - 4, 2 * w + 9, len - 5];
        starts.sort_unstable();
        for &p in &starts {
            input[p..p + 5].copy_from_slice(b"xmlns");
        }
        let naive = |from: usize, to: usize| (from..to).any(|p| input[p..].starts_with(b"xmlns"));
        for step in [1, 3, 17, 1000, w + 1] {
            let mut scan = XmlnsScan::new(0);
            let mut from = 0;
            while from < len {
                let to = (from + step).min(len);
                assert_eq!(scan.within(&input, from, to), naive(from, to), "{from}..{to} step {step}");
                from = to;
            }
        }
        // A range longer than a chunk is searched on its own, with the same answers.
        let mut one = vec![b'a'; 2 * w];
        one[w + 3..w + 8].copy_from_slice(b"xmlns");
        assert!(XmlnsScan::new(0).within(&one, 0, w + 5));
        assert!(!XmlnsScan::new(0).within(&one, 0, w + 3));
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
