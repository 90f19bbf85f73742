//! Reading a large document on several threads.
//!
//! The root's children are independent as far as reading goes: each is read with the root's
//! namespace bindings and document kind, into its own list of the model (nodes, links,
//! opstates, extensions), and only the document-level checks ([`crate::validate`]) look
//! across them. So a large document is read in parts:
//!
//! 1. The prolog and the root's start tag are read on the calling thread, as always.
//! 2. The root's end tag is found at the end of the input (`</` + the root's name, then only
//!    whitespace to the end); the root's content lies between the two tags.
//! 3. The content is cut at about `len * i / k` for `k` parts, each cut moved forward to the
//!    next line that starts, after the same indentation as the root's first child, with the
//!    `<` of a start tag: most likely the start of another child of the root.
//! 4. Each part is read on its own thread by a reader over exactly its bytes, starting at
//!    depth 1 with a copy of the root's bindings, into a model of its own. A part is good
//!    only if it reads to its last byte as a sequence of whole children of the root, text,
//!    comments and processing instructions, ending outside any markup and any element, with
//!    no problem found.
//! 5. If every part is good, their lists are appended in document order and the
//!    document-level checks run on the result.
//!
//! This is speculation, checked: a cut that fell inside a comment, a CDATA section, a tag (an
//! attribute value holding a newline and `<node`) or an element leaves the part before it
//! unfinished at its end, which makes that part fail. When every part reads to its end outside
//! any markup and element, a reader of the whole document would have been between two
//! children of the root at each cut too, so it reads the same events in the same order and
//! builds the same lists. If anything fails (a cut that did not hold, any error or problem,
//! a document shaped otherwise), the whole document is read again on the calling thread and
//! that result is returned, so errors, their order and their positions are exactly the
//! sequential ones. The limits hold in every part: the byte cap is checked first, depth is
//! counted from the root as usual, DOCTYPE and entities are refused or expanded by the same
//! code, control characters are checked in every part, and the element count is shared
//! between the parts (added to every [`ELEMENT_BATCH`] elements).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use memchr::memmem::Finder;

use super::{list, reader, unescape, Ctx, Ev, Hints, Res, Strings, XmlnsScan, ELEMENT_BATCH};
use crate::model::RSpec;
use crate::validate::{self, Offsets};
use crate::MAX_ELEMENTS;

/// Documents of at least this many bytes may be read on several threads by [`crate::parse`]
/// (1 MiB); smaller ones are read on the calling thread.
pub const PARALLEL_MIN_BYTES: usize = 1024 * 1024;

/// The most threads [`crate::parse`] uses for one document.
const MAX_THREADS: usize = 8;

/// The most parts a document is cut into, whatever [`crate::parse_split`] is asked for.
const MAX_PARTS: usize = 64;

/// [`crate::parse`] gives each thread at least this much of the document (so a document just
/// above [`PARALLEL_MIN_BYTES`] is read by two threads, not by every core).
const MIN_PART_BYTES: usize = 512 * 1024;

/// How a document was read, as [`crate::parse_split`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// On the calling thread only: the document is smaller than the threshold, or one
    /// thread was allowed.
    Sequential,
    /// In this many parts, each on its own thread (the calling one reads the first).
    Parallel {
        /// How many parts (and threads).
        parts: usize,
    },
    /// Split, but the split did not hold or the document has an error or problem: the
    /// result is that of reading it again on the calling thread.
    FellBack,
}

/// How many threads [`crate::parse`] uses for a document of `len` bytes: the available
/// parallelism (learned once per process), at most [`MAX_THREADS`] and at most one per
/// [`MIN_PART_BYTES`] of input.
pub(crate) fn default_threads(len: usize) -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cpus.min(MAX_THREADS).min(len / MIN_PART_BYTES).max(1)
}

/// What the parts of one document share.
pub(super) struct Shared {
    /// Elements read so far in the whole document (each part adds its count in batches).
    pub(super) elements: AtomicUsize,
    /// A part failed: the others stop at their next batch, the result will not be used.
    pub(super) failed: AtomicBool,
}

/// Reads `input` in up to `threads` parts. `None` when it could not be split, a split did not
/// hold, or the document has any error or problem: the caller then reads it sequentially.
/// Otherwise the model (equal to what the sequential reader builds) and the number of parts.
pub(super) fn parse(input: &str, threads: usize, lenient: bool) -> Option<(RSpec, usize)> {
    let mut ctx = Ctx::new(input, lenient);
    let root = ctx.root().ok()?;
    if root.empty {
        return None;
    }
    let mut rspec = ctx.rspec_attrs(&root).ok()?;
    let body = ctx.position();
    if !ctx.problems.is_empty() || ctx.check_controls(body).is_err() {
        return None;
    }
    let bytes = input.as_bytes();
    let end = root_end(bytes, body, root_name(input, root.attrs)?)?;
    let starts = split_points(bytes, body, end, threads.min(MAX_PARTS));
    let bounds = |i: usize| (starts[i], starts.get(i + 1).copied().unwrap_or(end));
    let parts = starts.len();
    let shared = Arc::new(Shared { elements: AtomicUsize::new(ctx.elements), failed: AtomicBool::new(false) });

    let ctx = &ctx;
    let ok = std::thread::scope(|s| {
        let spawned: Vec<_> = (1..parts)
            .map(|i| {
                let part = ctx.part(bounds(i), &shared);
                std::thread::Builder::new().spawn_scoped(s, move || read_part(part))
            })
            .collect();
        let mut elements = ctx.elements;
        let mut ok = match read_part_into(ctx.part(bounds(0), &shared), &mut rspec) {
            Some(n) => {
                elements += n;
                true
            }
            None => false,
        };
        for (i, handle) in (1..parts).zip(spawned) {
            let read = match handle {
                Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No thread could be started: this part is read here.
                Err(_) if ok => read_part(ctx.part(bounds(i), &shared)),
                Err(_) => None,
            };
            match read {
                Some((mut part, n)) if ok => {
                    rspec.nodes.append(&mut part.nodes);
                    rspec.links.append(&mut part.links);
                    rspec.opstates.append(&mut part.opstates);
                    rspec.extensions.append(&mut part.extensions);
                    elements += n;
                }
                _ => {
                    ok = false;
                    shared.failed.store(true, Ordering::Relaxed);
                }
            }
        }
        ok && elements <= MAX_ELEMENTS
    });
    if !ok {
        return None;
    }
    let mut problems = false;
    validate::check(&rspec, None, false, ctx.strict(), &mut |_, _, _| problems = true);
    (!problems).then_some((rspec, parts))
}

/// Reads one part into a model of its own; `None` if it fails. Also the part's element count.
fn read_part(ctx: Ctx<'_>) -> Option<(RSpec, usize)> {
    let mut rspec = RSpec::new(ctx.kind);
    let n = read_part_into(ctx, &mut rspec)?;
    Some((rspec, n))
}

/// Reads one part into `rspec`'s lists; `None` if it fails (and then the other parts are told
/// to stop). Otherwise the part's element count.
fn read_part_into(mut ctx: Ctx<'_>, rspec: &mut RSpec) -> Option<usize> {
    let end = ctx.end;
    let good = ctx.part_children(rspec).is_ok() && ctx.check_controls(end).is_ok() && ctx.problems.is_empty();
    if !good {
        if let Some((shared, _)) = &ctx.shared_elements {
            shared.failed.store(true, Ordering::Relaxed);
        }
        return None;
    }
    Some(ctx.elements)
}

impl<'i> Ctx<'i> {
    /// A reader of the input's bytes `from..to`, a part of the root's content, in the state
    /// this reader is in after the root's start tag.
    fn part(&self, (from, to): (usize, usize), shared: &Arc<Shared>) -> Ctx<'i> {
        Ctx {
            reader: reader(&self.input[from..to]),
            base: from,
            end: to,
            input: self.input,
            scopes: self.scopes.fork(),
            depth: self.depth,
            elements: 0,
            element_limit: ELEMENT_BATCH,
            shared_elements: Some((Arc::clone(shared), 0)),
            checked: from,
            problems: Vec::new(),
            offsets: Offsets::default(),
            kind: self.kind,
            lenient: self.lenient,
            strs: Strings::new(),
            hints: Hints([0; list::COUNT]),
            xmlns: XmlnsScan::new(from),
            last_attrs: ("", from),
        }
    }

    /// Reads a part's children of the root to the end of the part, which must come outside
    /// any markup and element. Text between the children is checked as when it is read
    /// whole (it is not kept).
    fn part_children(&mut self, rspec: &mut RSpec) -> Res<()> {
        loop {
            match self.event()? {
                Ev::Tag(child) => self.top_child(child, rspec)?,
                Ev::Text(raw) => {
                    if !raw.bytes().all(|b| b.is_ascii_whitespace()) {
                        unescape(raw).map_err(|e| self.malformed(e))?;
                    }
                }
                Ev::CData(c) => {
                    std::str::from_utf8(&c).map_err(|e| self.malformed(e.to_string()))?;
                }
                Ev::End => return Err(self.malformed("The root ends inside a part")),
                Ev::Eof => return Ok(()),
            }
        }
    }
}

/// The name of the root as written in its start tag (`rspec` or `prefix:rspec`), found
/// before the tag's attribute text.
fn root_name<'i>(input: &'i str, attrs: &str) -> Option<&'i [u8]> {
    let at = (attrs.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    let before = input.as_bytes().get(..at)?;
    let lt = memchr::memrchr(b'<', before)?;
    Some(&before[lt + 1..])
}

/// XML white space (what quick-xml trims from end tag names).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The offset of the root's end tag: the input must end with `</` + `name`, optional
/// white space, `>` and white space only, after `body`.
fn root_end(bytes: &[u8], body: usize, name: &[u8]) -> Option<usize> {
    let mut end = bytes.len();
    while end > body && is_space(bytes[end - 1]) {
        end -= 1;
    }
    if end <= body + 1 || bytes[end - 1] != b'>' {
        return None;
    }
    let lt = body + memchr::memrchr(b'<', &bytes[body..end - 1])?;
    let inner = bytes[lt + 1..end - 1].strip_prefix(b"/")?;
    let len = inner.iter().rposition(|&b| !is_space(b)).map_or(0, |p| p + 1);
    (&inner[..len] == name).then_some(lt)
}

/// Whether `b` may start an element name (ASCII letters, `_`, any non-ASCII byte).
fn starts_name(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The bytes that start a line holding a child of the root: a newline, the indentation of
/// the first start tag of `content` that begins a line, and `<`.
fn child_line(content: &[u8]) -> Option<&[u8]> {
    memchr::memchr_iter(b'\n', content).find_map(|nl| {
        let lt = nl + 1 + content[nl + 1..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        (content.get(lt) == Some(&b'<') && content.get(lt + 1).is_some_and(|&b| starts_name(b)))
            .then(|| &content[nl..=lt])
    })
}

/// Whether the start tag at `lt` (a `<` at a line start) may start a child of the root. In an
/// indented document the indentation said so already; in one that starts every element on
/// a line of its own without indentation, only a `node` or a `link` is taken (the children
/// of the root that a large document has many of, and that do not hold each other).
fn plausible_child(bytes: &[u8], lt: usize, indented: bool) -> bool {
    let name = &bytes[(lt + 1).min(bytes.len())..];
    if !name.first().is_some_and(|&b| starts_name(b)) {
        return false;
    }
    if indented {
        return true;
    }
    let len = name.iter().position(|&b| is_space(b) || b == b'>' || b == b'/').unwrap_or(name.len());
    let local = name[..len].rsplit(|&b| b == b':').next().unwrap_or_default();
    local == b"node" || local == b"link"
}

/// Where the parts of the root's content `body..end` start: `body`, then up to `parts - 1`
/// offsets of a `<` that starts a line the way the first child's line does (see
/// [`plausible_child`]), each at or after `len * i / parts` (fewer when the content has no
/// such line there).
fn split_points(bytes: &[u8], body: usize, end: usize, parts: usize) -> Vec<usize> {
    let mut starts = vec![body];
    let Some(line) = child_line(&bytes[body..end]) else { return starts };
    let indented = line.len() > 2;
    let finder = Finder::new(line);
    let mut from = body;
    for i in 1..parts {
        let mut at = (body + (end - body) * i / parts).max(from);
        loop {
            let Some(found) = finder.find(&bytes[at..end]) else { return starts };
            let lt = at + found + line.len() - 1;
            if plausible_child(bytes, lt, indented) {
                starts.push(lt);
                from = lt + 1;
                break;
            }
            at += found + 1;
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_end_tag_is_found_only_at_the_end() {
        let doc = b"<r:rspec a='1'>\n  <x/>\n</r:rspec >\n \r\n";
        let body = 15;
        assert_eq!(root_end(doc, body, b"r:rspec"), Some(23));
        assert_eq!(root_end(doc, body, b"rspec"), None);
        assert_eq!(root_end(b"<rspec>\n<x/></rspec><!-- c -->", 7, b"rspec"), None);
        assert_eq!(root_end(b"<rspec>\n<x/>", 7, b"rspec"), None);
        assert_eq!(root_end(b"<rspec>", 7, b"rspec"), None);
    }

    #[test]
    fn cuts_are_at_lines_indented_like_the_first_child() {
        let doc = "<rspec>\n  <!-- c -->\n  <node>\n    <interface/>\n  </node>\n  <node>\n    <x/>\n  </node>\n  <link/>\n</rspec>\n";
        let bytes = doc.as_bytes();
        let body = 7;
        let end = doc.rfind("</rspec>").unwrap();
        assert_eq!(child_line(&bytes[body..end]), Some(&b"\n  <"[..]));
        let starts = split_points(bytes, body, end, 3);
        let at: Vec<&str> = starts[1..].iter().map(|&s| &doc[s..s + 6]).collect();
        assert!(at.iter().all(|s| s.starts_with("<node") || s.starts_with("<link")), "{at:?}");
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        // With more parts than lines, fewer cuts.
        let many = split_points(bytes, body, end, 50);
        assert!(many.len() <= 4 && many.windows(2).all(|w| w[0] < w[1]), "{many:?}");
        // One line: no cut.
        assert_eq!(split_points(b"<rspec><a/><b/></rspec>", 7, 15, 4), vec![7]);
        // No indentation: only at a node or a link.
        let flat = "<rspec>\n<node>\n<interface/>\n<x:y/>\n</node>\n<g:node a='1'>\n<interface/>\n</g:node>\n<link/>\n</rspec>";
        let end = flat.rfind("</rspec>").unwrap();
        let starts = split_points(flat.as_bytes(), 7, end, 8);
        let at: Vec<&str> = starts[1..].iter().map(|&s| &flat[s..s + 7]).collect();
        assert_eq!(at, ["<g:node", "<link/>"]);
    }
}
