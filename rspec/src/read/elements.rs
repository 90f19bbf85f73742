//! The root `<rspec>` and the helpers every element reader uses.
//!
//! There is one reading function per element kind of the model (this module, `node`,
//! `link`, `opstate`).
//!
//! Each function receives the element's start tag, takes the attributes it knows (unknown ones
//! go to `ext_attrs`), then reads children until the end tag; a child it does not model is kept
//! whole in `extensions`. Value problems are recorded and reading goes on, so one pass reports
//! every problem of the document.

use super::values;
use super::{attr_iter, push_child, Ctx, Next, Ns, Res, Tag};
use crate::error::ProblemKind;
use crate::model::*;
use crate::xml::XmlElement;
use smol_str::SmolStr;

/// Parses an attribute value, recording a problem (and yielding `None`) if it is bad. A free
/// function over the problem list, so it can run while an attribute iterator borrows the
/// reader.
pub(super) fn value<T>(
    problems: &mut Vec<(usize, ProblemKind, String)>,
    offset: usize,
    what: &str,
    raw: &str,
    kind: ProblemKind,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match parse(raw) {
        Ok(v) => Some(v),
        Err(msg) => {
            problems.push((offset, kind, format!("{what}: {msg}")));
            None
        }
    }
}

/// Keeps a value the schemas leave untyped as it was written. Under the strict rules
/// ([`Ctx::strict`]) it must also parse with `check`: otherwise a problem is recorded and
/// `None` kept, as for [`value`].
#[allow(clippy::too_many_arguments)]
pub(super) fn lexical<T>(
    problems: &mut Vec<(usize, ProblemKind, String)>,
    strict: bool,
    offset: usize,
    what: &str,
    raw: &str,
    kind: ProblemKind,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Option<SmolStr> {
    if strict && value(problems, offset, what, raw, kind, check).is_none() {
        return None;
    }
    Some(SmolStr::new(raw))
}

/// Checks an `xs:dateTime` attribute, recording a problem if it is not one.
pub(super) fn datetime(problems: &mut Vec<(usize, ProblemKind, String)>, off: usize, what: &str, raw: &str) -> SmolStr {
    if !values::is_datetime(raw.trim()) {
        problems.push((off, ProblemKind::BadValue, format!("{what}: {raw:?} is not an xs:dateTime")));
    }
    // As written: the schema collapses white space around a date, so it is valid either way.
    SmolStr::new(raw)
}

impl<'i> Ctx<'i> {
    /// Unwraps a required attribute, recording a problem (and yielding "") if it is absent.
    pub(super) fn required(&mut self, offset: usize, element: &str, attr: &str, v: Option<SmolStr>) -> SmolStr {
        v.unwrap_or_else(|| {
            self.problem(
                offset,
                ProblemKind::MissingAttribute,
                format!("<{element}> lacks the required attribute {attr}"),
            );
            SmolStr::default()
        })
    }

    /// Reads children of an element that only has extension children.
    pub(super) fn ext_children(&mut self, tag: &Tag<'i>, out: &mut Vec<XmlElement>) -> Res<()> {
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    let e = self.ext_element(c)?;
                    push_child(out, e);
                }
                Next::Text(_) => {}
                Next::End => return Ok(()),
            }
        }
    }

    /// Reads (and reports) children of an element whose schema allows none.
    pub(super) fn no_children(&mut self, tag: &Tag<'i>, element: &str) -> Res<()> {
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    self.problem(
                        c.offset,
                        ProblemKind::UnexpectedElement,
                        format!("<{element}> may not contain <{}>", String::from_utf8_lossy(c.local())),
                    );
                    self.skip(&c)?;
                }
                Next::Text(_) => {}
                Next::End => return Ok(()),
            }
        }
    }

    /// Reads the root element.
    pub(super) fn rspec(&mut self, tag: Tag<'i>) -> Res<RSpec> {
        let mut r = self.rspec_attrs(&tag)?;
        if tag.empty {
            return Ok(r);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => self.top_child(c, &mut r)?,
                Next::Text(_) => {}
                Next::End => return Ok(r),
            }
        }
    }

    /// Reads the root's attributes into a new model, and learns the document kind.
    pub(super) fn rspec_attrs(&mut self, tag: &Tag<'i>) -> Res<RSpec> {
        let off = tag.offset;
        let mut r = RSpec::new(RSpecType::Request);
        let mut rtype = None;
        for a in attr_iter(&self.scopes, tag) {
            let a = a?;
            match (&a.ns, a.local) {
                (Ns::None, "type") => {
                    rtype = Some(value(&mut self.problems, off, "rspec type", &a.value, ProblemKind::BadValue, |s| {
                        RSpecType::from_attr(s.trim())
                            .ok_or_else(|| format!("{s:?} is not request, manifest or advertisement"))
                    }));
                }
                (Ns::None, "generated") => r.generated = Some(datetime(&mut self.problems, off, "generated", &a.value)),
                (Ns::None, "generated_by") => r.generated_by = Some(self.strs.get(&a.value)),
                (Ns::None, "expires") => r.expires = Some(datetime(&mut self.problems, off, "expires", &a.value)),
                (Ns::Xsi, "schemaLocation") => {
                    let words: Vec<&str> = a.value.split_whitespace().collect();
                    for pair in words.chunks_exact(2) {
                        let known = [GENI_V3_NS, EMULAB_NS, USER_NS, OPSTATE_NS];
                        if !known.contains(&pair[0]) {
                            r.extra_schema_locations.push((SmolStr::new(pair[0]), SmolStr::new(pair[1])));
                        }
                    }
                }
                _ => push_child(&mut r.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        match rtype {
            Some(Some(t)) => {
                r.rspec_type = t;
                self.kind = t;
            }
            Some(None) => {}
            None => {
                self.required(off, "rspec", "type", None);
            }
        }
        Ok(r)
    }

    /// Reads a child of the root into its list in `r`.
    #[inline(always)]
    pub(super) fn top_child(&mut self, c: Tag<'i>, r: &mut RSpec) -> Res<()> {
        match (&c.ns, c.local()) {
            (Ns::Geni, b"node") => {
                r.nodes.push(Node::default());
                if let Some(n) = r.nodes.last_mut() {
                    self.node(c, n)?;
                }
            }
            (Ns::Geni, b"link") => {
                r.links.push(Link::default());
                if let Some(l) = r.links.last_mut() {
                    self.link(c, l)?;
                }
            }
            (Ns::Opstate, b"rspec_opstate") => {
                let o = self.opstate(c)?;
                r.opstates.push(o);
            }
            _ => {
                let e = self.ext_element(c)?;
                push_child(&mut r.extensions, e);
            }
        }
        Ok(())
    }
}
