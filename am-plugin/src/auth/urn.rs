//! GENI URNs (`urn:publicid:IDN+<authority>+<type>+<name>`) and the namespace rule.

/// A parsed GENI URN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeniUrn {
    /// Authority part, e.g. `ch.geni.net:proj` (`:` separates sub-authorities).
    pub authority: String,
    /// Type, e.g. `user`, `slice`, `authority`, `sliver`, `tool`.
    pub kind: String,
    /// Name part.
    pub name: String,
}

const PREFIX: &str = "urn:publicid:IDN+";

impl GeniUrn {
    /// Parse a GENI URN; `None` if it is not of the `urn:publicid:IDN+a+t+n` form.
    pub fn parse(urn: &str) -> Option<GeniUrn> {
        let head = urn.get(..PREFIX.len())?;
        if !head.eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let rest = &urn[PREFIX.len()..];
        let mut parts = rest.splitn(3, '+');
        let authority = parts.next()?;
        let kind = parts.next()?;
        let name = parts.next()?;
        if authority.is_empty() || kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(GeniUrn { authority: authority.to_string(), kind: kind.to_string(), name: name.to_string() })
    }
}

/// Whether authority `issuer` has namespace authority over `subject`: equal, or `subject` is a
/// sub-authority of it (`a:b` covers `a:b:c`). Authorities compare case-insensitively.
pub fn authority_covers(issuer: &str, subject: &str) -> bool {
    let i = issuer.to_ascii_lowercase();
    let s = subject.to_ascii_lowercase();
    s == i || (s.len() > i.len() && s.starts_with(&i) && s.as_bytes()[i.len()] == b':')
}

/// Compare two URNs the way GENI does: case-insensitively.
pub fn urn_eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slice_urn() {
        let u = GeniUrn::parse("urn:publicid:IDN+ch.geni.net:proj+slice+s1").unwrap();
        assert_eq!(u.authority, "ch.geni.net:proj");
        assert_eq!(u.kind, "slice");
        assert_eq!(u.name, "s1");
    }

    #[test]
    fn namespace_rule() {
        assert!(authority_covers("a.b", "a.b"));
        assert!(authority_covers("A.b", "a.b:proj"));
        assert!(!authority_covers("a.b", "a.bc"));
        assert!(!authority_covers("a.b:proj", "a.b"));
    }
}
