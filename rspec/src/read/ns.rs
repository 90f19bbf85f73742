//! Namespace resolution on top of quick-xml's bare `Reader`.
//!
//! quick-xml's `NsReader` walks every start tag's attributes through its own iterator to find
//! declarations, which made its event scan cost about 2.5 times the bare one. Here a start
//! tag's attribute text is only searched for `xmlns` when the tag is read; most tags have no
//! declaration and their attributes are lexed once, by the element reader
//! ([`super::attr_iter`]). A tag with a declaration is lexed and checked when it is read, so
//! its declarations apply to its own name and attributes. Bindings are a stack searched from
//! the top, bounded by [`crate::MAX_NAMESPACES_IN_SCOPE`]; the default namespace is cached.

use std::borrow::Cow;
use std::cell::Cell;

use smol_str::SmolStr;

use crate::model::{EMULAB_NS, GENI_V3_NS, OPSTATE_NS, USER_NS, XSI_NS};
use crate::MAX_NAMESPACES_IN_SCOPE;

use super::attrs::{Checked, Lexed};

/// The namespace the `xml` prefix is bound to by definition.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations, which no element or attribute may use.
pub(crate) const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

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
    /// Any other namespace (shared by every name its declaration binds).
    Other(SmolStr),
}

impl Ns {
    /// Classifies a namespace name (already unescaped).
    fn classify(name: &str) -> Ns {
        match name {
            GENI_V3_NS => Ns::Geni,
            EMULAB_NS => Ns::Emulab,
            USER_NS => Ns::User,
            OPSTATE_NS => Ns::Opstate,
            XSI_NS => Ns::Xsi,
            other => Ns::Other(SmolStr::new(other)),
        }
    }

    /// The namespace name, `None` for no namespace.
    pub(crate) fn as_str(&self) -> Option<&str> {
        Some(match self {
            Ns::None => return None,
            Ns::Geni => GENI_V3_NS,
            Ns::Emulab => EMULAB_NS,
            Ns::User => USER_NS,
            Ns::Opstate => OPSTATE_NS,
            Ns::Xsi => XSI_NS,
            Ns::Other(s) => s,
        })
    }

    /// The namespace name as a model string, for the kept-extension tree (no allocation:
    /// the known namespaces are static, another one is shared with its declaration).
    pub(crate) fn uri(&self) -> Option<SmolStr> {
        Some(match self {
            Ns::None => return None,
            Ns::Other(s) => s.clone(),
            known => SmolStr::new_static(match known {
                Ns::Geni => GENI_V3_NS,
                Ns::Emulab => EMULAB_NS,
                Ns::User => USER_NS,
                Ns::Opstate => OPSTATE_NS,
                _ => XSI_NS,
            }),
        })
    }
}

/// One prefix binding; `ns` is `None` where `xmlns:p=""` or `xmlns=""` undeclares it.
#[derive(Clone)]
struct Binding<'i> {
    prefix: &'i [u8],
    ns: Option<Ns>,
}

/// The namespace bindings in scope.
pub(crate) struct Scopes<'i> {
    bindings: Vec<Binding<'i>>,
    /// How many bindings each open element added.
    pushed: Vec<usize>,
    /// Bindings of the last `<x/>` element, dropped before the next event.
    pending: usize,
    /// The default namespace in scope, kept up to date so unprefixed names (most of them)
    /// need no search.
    default: Ns,
    xml: Ns,
    xmlns: Ns,
    /// Counts start tags, so a reader can tell the innermost bindings belong to its tag.
    pub(crate) seq: u64,
    /// The [`Scopes::seq`] of the last tag whose attributes were all lexed and checked (by
    /// the element reader, or when the tag was read); a tag left unchecked is checked before
    /// the next event.
    pub(crate) checked: Cell<u64>,
}

/// Why a name could not be resolved or a declaration was refused (the message of a
/// malformed-document error).
pub(crate) type NsError = String;

impl<'i> Scopes<'i> {
    pub(crate) fn new() -> Self {
        Scopes {
            bindings: Vec::new(),
            pushed: Vec::new(),
            pending: 0,
            default: Ns::None,
            xml: Ns::Other(SmolStr::new_static(XML_NS)),
            xmlns: Ns::Other(SmolStr::new_static(XMLNS_NS)),
            seq: 0,
            checked: Cell::new(0),
        }
    }

    /// A copy of the bindings in scope, for a reader of a part of the document that starts
    /// here (see [`super::split`]). Only taken between events, after the last tag's
    /// attributes were checked.
    pub(crate) fn fork(&self) -> Self {
        debug_assert_eq!(self.pending, 0);
        Scopes {
            bindings: self.bindings.clone(),
            pushed: self.pushed.clone(),
            pending: 0,
            default: self.default.clone(),
            xml: self.xml.clone(),
            xmlns: self.xmlns.clone(),
            seq: 0,
            checked: Cell::new(0),
        }
    }

    /// Drops the bindings of a preceding empty element; call before each event.
    pub(crate) fn settle(&mut self) {
        if self.pending > 0 {
            let keep = self.bindings.len() - self.pending;
            self.truncate(keep);
            self.pending = 0;
        }
    }

    /// Opens the scope of a start tag. `attrs` is the tag's attribute text, a slice of the
    /// input; when it may hold a declaration (`declares`), it is lexed and checked now and its
    /// declarations applied. `empty` tags keep their bindings only until [`Scopes::settle`].
    #[inline(always)]
    pub(crate) fn open(&mut self, attrs: &'i str, empty: bool, declares: bool) -> Result<(), NsError> {
        self.seq += 1;
        let added = if declares { self.declarations(attrs)? } else { 0 };
        if empty {
            self.pending = added;
        } else {
            self.pushed.push(added);
        }
        Ok(())
    }

    /// Lexes and checks all attributes of a tag, applying its declarations; returns how many
    /// bindings it added.
    #[cold]
    fn declarations(&mut self, attrs: &'i str) -> Result<usize, NsError> {
        let before = self.bindings.len();
        let mut check = Checked::new(attrs);
        while let Some(raw) = check.next_checked() {
            let raw = raw?;
            if raw.is_declaration() {
                let prefix = match raw.colon {
                    None => &b""[..],
                    Some(c) => &raw.key.as_bytes()[c + 1..],
                };
                self.declare(prefix, &raw)?;
            }
        }
        self.checked.set(self.seq);
        let added = self.bindings.len() - before;
        if added > 0 {
            self.update_default();
        }
        Ok(added)
    }

    /// Ends the innermost open element's scope.
    pub(crate) fn close(&mut self) {
        let added = self.pushed.pop().unwrap_or(0);
        if added > 0 {
            let keep = self.bindings.len() - added;
            self.truncate(keep);
        }
    }

    fn truncate(&mut self, keep: usize) {
        self.bindings.truncate(keep);
        self.update_default();
    }

    fn update_default(&mut self) {
        self.default = match self.bindings.iter().rev().find(|b| b.prefix.is_empty()) {
            Some(Binding { ns: Some(ns), .. }) => ns.clone(),
            _ => Ns::None,
        };
    }

    fn declare(&mut self, prefix: &'i [u8], raw: &Lexed<'i>) -> Result<(), NsError> {
        let value: Cow<'i, str> = if raw.has_amp || raw.has_ws {
            super::attr_value(raw.value, raw.has_ws)?
        } else {
            Cow::Borrowed(raw.value)
        };
        match prefix {
            b"xml" if value != XML_NS => {
                return Err(format!("The prefix xml cannot be bound to {value:?}"));
            }
            // Binding `xml` to its own namespace is allowed and changes nothing.
            b"xml" => return Ok(()),
            b"xmlns" => return Err("The prefix xmlns cannot be declared".into()),
            _ if value == XML_NS || value == XMLNS_NS => {
                return Err(format!("The reserved namespace {value:?} cannot be bound to a prefix"));
            }
            _ => {}
        }
        if self.bindings.len() >= MAX_NAMESPACES_IN_SCOPE {
            return Err(format!("More than {MAX_NAMESPACES_IN_SCOPE} namespace declarations in scope"));
        }
        let ns = if value.is_empty() { None } else { Some(Ns::classify(&value)) };
        self.bindings.push(Binding { prefix, ns });
        Ok(())
    }

    /// Resolves a prefix (`None`: the name has none). Unprefixed attribute names are in no
    /// namespace, unprefixed element names in the default one.
    #[inline]
    pub(crate) fn resolve(&self, prefix: Option<&[u8]>, element: bool) -> Result<Ns, NsError> {
        let p: &[u8] = match prefix {
            None if !element => return Ok(Ns::None),
            None => return Ok(self.default.clone()),
            Some(b"xml") => return Ok(self.xml.clone()),
            Some(b"xmlns") => return Ok(self.xmlns.clone()),
            Some(p) => p,
        };
        match self.bindings.iter().rev().find(|b| b.prefix.len() == p.len() && b.prefix == p) {
            Some(Binding { ns: Some(ns), .. }) => Ok(ns.clone()),
            _ => Err(format!("Unknown namespace prefix {:?}", String::from_utf8_lossy(p))),
        }
    }
}
