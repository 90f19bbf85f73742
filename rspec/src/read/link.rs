//! Reading `<link>` and its children.

use super::elements::lexical;
use super::{attr_iter, in_place, list, push_child, values, Ctx, Next, Ns, Res, Tag};
use crate::error::ProblemKind;
use crate::model::*;
use smol_str::SmolStr;

impl<'i> Ctx<'i> {
    pub(super) fn link(&mut self, tag: Tag<'i>, l: &mut Link) -> Res<()> {
        let off = tag.offset;
        self.offsets.links.push(off);
        let first = self.offsets.refs.len();
        self.offsets.link_first_ref.push(first);
        let strict = self.strict();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => l.client_id = Some(self.strs.get(&a.value)),
                Some("component_id") => l.component_id = Some(SmolStr::new(&a.value)),
                Some("component_name") => l.component_name = Some(self.strs.get(&a.value)),
                Some("sliver_id") => l.sliver_id = Some(SmolStr::new(&a.value)),
                Some("vlantag") => {
                    l.vlantag = lexical(
                        &mut self.problems,
                        strict,
                        off,
                        "link vlantag",
                        &a.value,
                        ProblemKind::BadNumber,
                        values::vlantag,
                    )
                }
                _ => self.hints.push(&mut l.ext_attrs, a.into_ext(&mut self.strs), list::LINK_ATTRS),
            }
        }
        self.hints.fit(&mut l.ext_attrs, list::LINK_ATTRS);
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"component_manager") => {
                        let m = self.component_manager(c)?;
                        self.hints.push(&mut l.component_managers, m, list::LINK_MANAGERS);
                    }
                    (Ns::Geni, b"interface_ref") => {
                        let r = in_place(&self.hints, &mut l.interface_refs, list::LINK_REFS);
                        self.interface_ref(c, r)?;
                    }
                    (Ns::Geni, b"link_type") => {
                        let t = in_place(&self.hints, &mut l.link_types, list::LINK_TYPES);
                        self.link_type(c, t)?;
                    }
                    (Ns::Geni, b"property") => {
                        let p = in_place(&self.hints, &mut l.properties, list::LINK_PROPERTIES);
                        self.property(c, p)?;
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.hints.push(&mut l.extensions, e, list::LINK_EXTENSIONS);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    self.hints.fit(&mut l.component_managers, list::LINK_MANAGERS);
                    self.hints.fit(&mut l.interface_refs, list::LINK_REFS);
                    self.hints.fit(&mut l.link_types, list::LINK_TYPES);
                    self.hints.fit(&mut l.properties, list::LINK_PROPERTIES);
                    self.hints.fit(&mut l.extensions, list::LINK_EXTENSIONS);
                    return Ok(());
                }
            }
        }
    }

    fn component_manager(&mut self, tag: Tag<'i>) -> Res<SmolStr> {
        let off = tag.offset;
        let mut name = None;
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            if a.plain() == Some("name") {
                name = Some(self.strs.get(&a.value));
            }
        }
        let name = self.required(off, "component_manager", "name", name);
        self.no_children(&tag, "component_manager")?;
        Ok(name)
    }

    fn interface_ref(&mut self, tag: Tag<'i>, r: &mut InterfaceRef) -> Res<()> {
        self.offsets.refs.push(tag.offset);
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => r.client_id = Some(self.strs.get(&a.value)),
                Some("component_id") => r.component_id = Some(self.strs.get(&a.value)),
                Some("sliver_id") => r.sliver_id = Some(self.strs.get(&a.value)),
                _ => push_child(&mut r.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        self.ext_children(&tag, &mut r.extensions)?;
        Ok(())
    }

    fn link_type(&mut self, tag: Tag<'i>, t: &mut LinkType) -> Res<()> {
        let off = tag.offset;
        let mut name = None;
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(self.strs.get(&a.value)),
                Some("class") => t.class = Some(self.strs.get(&a.value)),
                _ => push_child(&mut t.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        t.name = self.required(off, "link_type", "name", name);
        self.ext_children(&tag, &mut t.extensions)?;
        Ok(())
    }

    fn property(&mut self, tag: Tag<'i>, p: &mut LinkProperty) -> Res<()> {
        let off = tag.offset;
        let (mut src, mut dst) = (None, None);
        let strict = self.strict();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            let (bad, probs) = (ProblemKind::BadNumber, &mut self.problems);
            match a.plain() {
                Some("source_id") => src = Some(self.strs.get(&a.value)),
                Some("dest_id") => dst = Some(self.strs.get(&a.value)),
                // A request's capacity and latency are bare numbers (kbit/s, ms), as before;
                // otherwise units are kept too (`capacity_bps`, `latency_ms` read them).
                Some("capacity") => {
                    p.capacity =
                        lexical(probs, strict, off, "property capacity", &a.value, bad, values::unsigned::<u64>)
                }
                Some("latency") => {
                    p.latency = lexical(probs, strict, off, "property latency", &a.value, bad, values::unsigned::<u64>)
                }
                Some("packet_loss") => {
                    p.packet_loss = lexical(probs, strict, off, "property packet_loss", &a.value, bad, |s| {
                        values::decimal_in(s, 0.0, 1.0)
                    })
                }
                _ => push_child(&mut p.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        p.source_id = self.required(off, "property", "source_id", src);
        p.dest_id = self.required(off, "property", "dest_id", dst);
        self.ext_children(&tag, &mut p.extensions)?;
        Ok(())
    }
}
