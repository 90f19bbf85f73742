//! Errors returned by [`crate::parse`].

use std::fmt;

/// A 1-based line and column (columns count characters) in the input document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One semantic problem of a well-formed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending element starts; `None` for models built in code
    /// ([`crate::RSpec::validate`]).
    pub position: Option<Position>,
    /// What class of problem this is.
    pub kind: ProblemKind,
    /// A human-readable explanation naming the element and value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Classes of [`Problem`], so callers can match without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A `client_id` used twice (nodes, interfaces and links share one id space).
    DuplicateClientId,
    /// An `interface_ref` naming no interface of the document.
    DanglingInterfaceRef,
    /// A link without any `interface_ref`.
    LinkWithoutInterfaces,
    /// A required attribute is absent (or required for this document type).
    MissingAttribute,
    /// An IP address or netmask that does not parse.
    BadAddress,
    /// A number that does not parse or is out of range.
    BadNumber,
    /// Any other attribute value that is not allowed (booleans, dates, root type).
    BadValue,
    /// An element where the schema allows none (for example inside `rspec_opstate`).
    UnexpectedElement,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The input is not well-formed XML (or uses a feature refused for safety).
    #[error("Malformed XML at {position}: {message}")]
    Malformed {
        /// Where the parser stopped.
        position: Position,
        /// What was wrong.
        message: String,
    },
    /// The input bytes are not UTF-8 ([`crate::parse_bytes`]).
    #[error("Invalid UTF-8 at byte offset {offset} ({position})")]
    InvalidUtf8 {
        /// The offset of the first byte that is not part of a UTF-8 character.
        offset: usize,
        /// Where that byte is: the line and column after the last valid character.
        position: Position,
    },
    /// The document is well-formed but breaks RSpec rules; every problem found is listed.
    #[error("Invalid RSpec: {}", join_problems(.0))]
    Invalid(Vec<Problem>),
    /// The input exceeds [`crate::MAX_DOCUMENT_BYTES`].
    #[error("Document too large: {len} bytes, limit {max}")]
    TooLarge {
        /// The input length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Elements nest deeper than [`crate::MAX_DEPTH`].
    #[error("Elements nested too deep at {position}: limit {max}")]
    TooDeep {
        /// Where the limit was crossed.
        position: Position,
        /// The limit.
        max: usize,
    },
    /// The document has more than [`crate::MAX_ELEMENTS`] elements.
    #[error("Too many elements at {position}: limit {max}")]
    TooManyElements {
        /// Where the limit was crossed.
        position: Position,
        /// The limit.
        max: usize,
    },
    /// The input has a `<!DOCTYPE>`; refused so no entity can be declared or expanded.
    #[error("DOCTYPE refused at {position}")]
    Doctype {
        /// Where the DOCTYPE starts.
        position: Position,
    },
    /// The root is not a GENI v3 `<rspec>`; for ProtoGENI v2 see the crate docs.
    #[error("Not a GENI RSpec v3 document: root element {found}")]
    NotRSpecV3 {
        /// The root element as `{namespace}local`.
        found: String,
    },
}

fn join_problems(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&p.to_string());
    }
    out
}
