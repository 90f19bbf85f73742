//! Reading the opstate extension (`rspec_opstate`): fixed content, no extension points.

use super::{attr_iter, Ctx, Next, Ns, Res, Tag};
use crate::error::ProblemKind;
use crate::model::*;
use smol_str::SmolStr;

impl<'i> Ctx<'i> {
    pub(super) fn opstate(&mut self, tag: Tag<'i>) -> Res<Opstate> {
        let off = tag.offset;
        let mut o = Opstate::default();
        let (mut am, mut start) = (None, None);
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("aggregate_manager_id") => am = Some(self.strs.get(&a.value)),
                Some("start") => start = Some(self.strs.get(&a.value)),
                _ => {}
            }
        }
        o.aggregate_manager_id = self.required(off, "rspec_opstate", "aggregate_manager_id", am);
        o.start = self.required(off, "rspec_opstate", "start", start);
        if tag.empty {
            return Ok(o);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Opstate, b"sliver_type") => {
                        let name = self.named(&c, "opstate:sliver_type")?;
                        o.sliver_types.push(name);
                        self.no_children(&c, "opstate:sliver_type")?;
                    }
                    (Ns::Opstate, b"state") => {
                        let s = self.op_state(c)?;
                        o.states.push(s);
                    }
                    _ => self.unexpected(c, "rspec_opstate")?,
                },
                Next::Text(_) => {}
                Next::End => return Ok(o),
            }
        }
    }

    /// The required `name` attribute of an opstate element.
    fn named(&mut self, tag: &Tag<'i>, element: &str) -> Res<SmolStr> {
        let mut name = None;
        for a in attr_iter(&self.scopes, tag) {
            let a = a?;
            if a.plain() == Some("name") {
                name = Some(self.strs.get(&a.value));
            }
        }
        Ok(self.required(tag.offset, element, "name", name))
    }

    fn unexpected(&mut self, c: Tag<'i>, parent: &str) -> Res<()> {
        self.problem(
            c.offset,
            ProblemKind::UnexpectedElement,
            format!("<{parent}> may not contain <{}>", String::from_utf8_lossy(c.local())),
        );
        self.skip(&c)
    }

    fn op_state(&mut self, tag: Tag<'i>) -> Res<OpstateState> {
        let mut s = OpstateState { name: self.named(&tag, "opstate:state")?, ..OpstateState::default() };
        if tag.empty {
            return Ok(s);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Opstate, b"action") => {
                        let off = c.offset;
                        let (mut name, mut next) = (None, None);
                        for a in attr_iter(&self.scopes, &c) {
                            let a = a?;
                            match a.plain() {
                                Some("name") => name = Some(self.strs.get(&a.value)),
                                Some("next") => next = Some(self.strs.get(&a.value)),
                                _ => {}
                            }
                        }
                        let action = OpstateAction {
                            name: self.required(off, "opstate:action", "name", name),
                            next: self.required(off, "opstate:action", "next", next),
                            description: self.op_description(&c)?,
                        };
                        s.actions.push(action);
                    }
                    (Ns::Opstate, b"wait") => {
                        let off = c.offset;
                        let (mut wait_type, mut next) = (None, None);
                        for a in attr_iter(&self.scopes, &c) {
                            let a = a?;
                            match a.plain() {
                                Some("type") => wait_type = Some(self.strs.get(&a.value)),
                                Some("next") => next = Some(self.strs.get(&a.value)),
                                _ => {}
                            }
                        }
                        let wait = OpstateWait {
                            wait_type,
                            next: self.required(off, "opstate:wait", "next", next),
                            description: self.op_description(&c)?,
                        };
                        s.waits.push(wait);
                    }
                    (Ns::Opstate, b"description") => {
                        let text = self.text_content(&c)?;
                        match &mut s.description {
                            // The schema allows several; they are joined so no text is lost.
                            Some(d) => {
                                d.push('\n');
                                d.push_str(&text);
                            }
                            None => s.description = Some(text),
                        }
                    }
                    _ => self.unexpected(c, "opstate:state")?,
                },
                Next::Text(_) => {}
                Next::End => return Ok(s),
            }
        }
    }

    /// The optional `<description>` child of an action or wait.
    fn op_description(&mut self, tag: &Tag<'i>) -> Res<Option<String>> {
        let mut out = None;
        if tag.empty {
            return Ok(out);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    if c.is(&Ns::Opstate, "description") && out.is_none() {
                        out = Some(self.text_content(&c)?);
                    } else {
                        self.unexpected(c, "opstate:action")?;
                    }
                }
                Next::Text(_) => {}
                Next::End => return Ok(out),
            }
        }
    }
}
