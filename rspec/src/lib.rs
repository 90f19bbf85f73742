//! GENI RSpec v3: a typed model, a reader and a writer. No I/O.
//!
//! ```
//! let xml = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
//!   <node client_id="vm1" exclusive="false"><sliver_type name="emulab-xen"/></node>
//! </rspec>"#;
//! let rspec = vnsnap_rspec::parse(xml).unwrap();
//! assert_eq!(rspec.nodes[0].client_id.as_deref(), Some("vm1"));
//! let again = vnsnap_rspec::parse(&rspec.to_xml()).unwrap();
//! assert_eq!(rspec, again);
//! ```
//!
//! # Model
//! [`RSpec`] holds [`Node`]s, [`Link`]s and advertisement [`Opstate`] blocks. One set of types
//! serves requests, manifests and advertisements; attributes that exist only in some kinds are
//! `Option`s.
//!
//! Attribute values and names are [`SmolStr`]s (re-exported from `smol_str`): immutable
//! strings that hold up to 23 bytes inline and share longer ones behind a reference count, so
//! cloning a model does not copy its strings. Build them with `.into()` from `&str` or
//! `String`; they dereference to `&str`. Text content (descriptions, public keys, text in
//! [`XmlElement`]s) stays `String`. When reading, a long value equal to a recently read one
//! (the component manager URN, image names on every node) shares that one's allocation.
//!
//! # What is kept
//! Elements and attributes this model does not know (foreign namespaces such as stitching or
//! jacks, and GENI elements outside the model such as `relation`) are kept as [`XmlElement`]
//! trees in the `extensions` / `ext_attrs` fields of the element they appeared in, and written
//! back. Namespaces are kept; prefixes are not (the writer chooses them), and whitespace around
//! text is trimmed. Comments and processing instructions are dropped.
//!
//! Attributes the GENI schemas leave untyped are kept as written, even where the model offers
//! a parsed value: [`Ip::addr`], [`Ip::mask`], [`Link::vlan`], [`Login::port_number`],
//! [`Location::latitude_deg`], [`LinkProperty::capacity_bps`] (units such as `10000000kbps`,
//! `1G`), [`LinkProperty::latency_ms`]. So `latitude="34.048810"`, `netmask=""` or
//! `vlantag="unknown"` are written back unchanged. Attribute values are normalised as XML
//! defines (a literal newline or tab is a space).
//!
//! # Reading
//! The reader is namespace-aware: the GENI v3 namespace may be the default or bound to any
//! prefix. **ProtoGENI RSpec v2** (`http://www.protogeni.net/resources/rspec/2`) is refused with
//! [`Error::NotRSpecV3`]: omni and geni-lib send v3, the aggregate only advertises v3, and
//! silently translating v2 would write back a document in another namespace than the client
//! sent.
//!
//! Limits against hostile input: at most [`MAX_DOCUMENT_BYTES`] bytes and [`MAX_ELEMENTS`]
//! elements, at most [`MAX_DEPTH`] nested elements, at most [`MAX_ATTRIBUTES`] attributes per element and
//! [`MAX_NAMESPACES_IN_SCOPE`] namespace declarations in scope, no `<!DOCTYPE>` (so no entity
//! can be declared), and only the five predefined entities plus character references are
//! expanded. Reading time is linear in the input under these limits.
//!
//! Errors carry a line and column. A well-formed document that breaks RSpec rules yields
//! [`Error::Invalid`] listing every problem found, not only the first. [`parse`] holds
//! requests to the strict rules an aggregate applies before allocating and reads manifests
//! and advertisements by their schemas' rules; [`parse_lenient`] reads every kind by the
//! schemas' rules. [`parse_bytes`] reads bytes and reports bad UTF-8 with its offset.
//!
//! A document of at least [`PARALLEL_MIN_BYTES`] (1 MiB, such as a large advertisement) is
//! read in parts on several threads (scoped: all have ended when [`parse`] returns), with the
//! same result as [`parse_sequential`], which reads on the calling thread only.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod model;
mod read;
mod validate;
mod write;
mod xml;

pub use error::{Error, Position, Problem, ProblemKind};
pub use model::*;
#[doc(hidden)]
pub use read::Split;
pub use read::PARALLEL_MIN_BYTES;
pub use smol_str::SmolStr;
pub use xml::{QName, XmlAttr, XmlChild, XmlElement};

/// The largest document [`parse`] accepts, in bytes (16 MiB: a 5,000-node advertisement is
/// about 10 MB; requests are a few kB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The most elements [`parse`] accepts in one document. The model is larger than the text
/// (an empty `<node/>` becomes several hundred bytes), so this, not the byte cap, bounds the
/// memory a hostile document can make the reader allocate (to a few hundred MB at worst).
pub const MAX_ELEMENTS: usize = 256 * 1024;

/// The deepest element nesting [`parse`] accepts (the root is depth 1).
pub const MAX_DEPTH: usize = 64;

/// The most attributes [`parse`] accepts on one element.
pub const MAX_ATTRIBUTES: usize = 1024;

/// The most namespace declarations [`parse`] accepts in scope at once. Every prefixed name
/// is resolved by searching the declarations in scope, so this bounds that search.
pub const MAX_NAMESPACES_IN_SCOPE: usize = 64;

/// Reads an RSpec v3 document (request, manifest or advertisement).
///
/// Fails with [`Error::Malformed`] (and the other fatal variants) at the first XML-level
/// problem, or with [`Error::Invalid`] listing every RSpec-level problem of a well-formed
/// document.
///
/// A **request** is held to the strict rules an aggregate applies before it allocates: the
/// attribute values the model can parse (addresses, netmasks, ports, VLAN tags, capacities,
/// latencies, losses, coordinates, `emulab:xen` sizes) must parse and be in range, `client_id`s
/// must be unique, every `interface_ref` must name an interface of the document and every link
/// must have one. A **manifest** or an **advertisement** is read leniently, by what its schema
/// requires (required attributes, `xs:boolean` and `xs:dateTime` values): untyped values are
/// kept as written whatever they hold, links need no `interface_ref`, references may point
/// outside the document. [`parse_lenient`] reads requests that way too. Use
/// [`RSpec::validate`] for the rules schema-valid output needs.
///
/// A document of at least [`PARALLEL_MIN_BYTES`] is read on several threads when the machine
/// has more than one core (one per 512 KiB of input, at most one per core and at most 8):
/// the root's children are cut into parts read side by side, on scoped threads that end
/// before `parse` returns. The result is always the one [`parse_sequential`] gives: if the
/// cut does not hold or the document has any error, it is read again on the calling thread
/// and that result (with its error positions) is returned.
pub fn parse(xml: &str) -> Result<RSpec, Error> {
    read::parse(xml, read::default_threads(xml.len()), PARALLEL_MIN_BYTES, false).0
}

/// Reads any RSpec v3 document by its schema's rules only, requests included: for tools that
/// pass documents on or report on them rather than act on them. Values the schemas leave
/// untyped (a `netmask=""` written by Flack, a capacity with a unit) are kept as written;
/// the identifier and reference rules of [`parse`] are not applied. XML errors, the limits,
/// required attributes, booleans and dates are checked as [`parse`] checks them.
pub fn parse_lenient(xml: &str) -> Result<RSpec, Error> {
    read::parse(xml, read::default_threads(xml.len()), PARALLEL_MIN_BYTES, true).0
}

/// [`parse`] over bytes, as documents arrive from XML-RPC and files: the input must be UTF-8
/// (a leading byte-order mark is allowed and skipped); otherwise [`Error::InvalidUtf8`] gives
/// the offset of the first bad byte. The size cap is checked first.
pub fn parse_bytes(xml: &[u8]) -> Result<RSpec, Error> {
    parse(utf8(xml)?)
}

/// [`parse_lenient`] over bytes; see [`parse_bytes`].
pub fn parse_bytes_lenient(xml: &[u8]) -> Result<RSpec, Error> {
    parse_lenient(utf8(xml)?)
}

/// The input as `&str`, or where it stops being UTF-8.
fn utf8(xml: &[u8]) -> Result<&str, Error> {
    if xml.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge { len: xml.len(), max: MAX_DOCUMENT_BYTES });
    }
    let body = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    let bom = xml.len() - body.len();
    std::str::from_utf8(body).map_err(|e| {
        let good = e.valid_up_to();
        // The prefix before the bad byte is valid, so its position can be counted.
        let prefix = std::str::from_utf8(&body[..good]).unwrap_or_default();
        Error::InvalidUtf8 { offset: bom + good, position: read::end_position(prefix) }
    })
}

/// Reads an RSpec v3 document on the calling thread only; otherwise the same as [`parse`]
/// (same result, same errors). For callers that must not start threads, and to measure the
/// single-threaded reader.
pub fn parse_sequential(xml: &str) -> Result<RSpec, Error> {
    read::sequential(xml, false)
}

/// How many threads [`parse`] uses for a document of `len` bytes (1: read sequentially). For
/// benchmarks; not part of the stable API.
#[doc(hidden)]
pub fn parse_threads(len: usize) -> usize {
    if len < PARALLEL_MIN_BYTES {
        1
    } else {
        read::default_threads(len)
    }
}

/// Reads a document as [`parse`] does, but with the number of threads and the size threshold
/// given (at most 64 parts), and says how it was read. For tests and benchmarks (a small
/// `min_bytes` forces the parallel reader onto small documents); not part of the stable API.
#[doc(hidden)]
pub fn parse_split(xml: &str, threads: usize, min_bytes: usize) -> (Result<RSpec, Error>, Split) {
    read::parse(xml, threads, min_bytes, false)
}

/// [`parse_split`] with the rules of [`parse_lenient`]. For tests; not part of the stable API.
#[doc(hidden)]
pub fn parse_split_lenient(xml: &str, threads: usize, min_bytes: usize) -> (Result<RSpec, Error>, Split) {
    read::parse(xml, threads, min_bytes, true)
}

impl std::str::FromStr for RSpec {
    type Err = Error;

    /// Same as [`parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl std::fmt::Display for RSpecType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
