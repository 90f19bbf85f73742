//! A small owned XML tree, used to keep extension content the typed model does not know.

use smol_str::SmolStr;

use crate::model::{EMULAB_NS, GENI_V3_NS, OPSTATE_NS, USER_NS, XSI_NS};

/// A namespace-qualified name. Prefixes are not kept: only the namespace carries meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QName {
    /// The namespace URI, `None` for names in no namespace (unprefixed attributes).
    pub ns: Option<SmolStr>,
    /// The local part of the name.
    pub local: SmolStr,
}

impl QName {
    /// A name in namespace `ns`.
    pub fn new(ns: &str, local: &str) -> Self {
        QName { ns: Some(namespace(ns)), local: SmolStr::new(local) }
    }

    /// A name in no namespace.
    pub fn local(local: &str) -> Self {
        QName { ns: None, local: SmolStr::new(local) }
    }
}

/// A namespace name as a [`SmolStr`]: the namespaces this crate knows are static strings,
/// so names in them allocate nothing.
pub(crate) fn namespace(ns: &str) -> SmolStr {
    match ns {
        GENI_V3_NS => SmolStr::new_static(GENI_V3_NS),
        EMULAB_NS => SmolStr::new_static(EMULAB_NS),
        USER_NS => SmolStr::new_static(USER_NS),
        OPSTATE_NS => SmolStr::new_static(OPSTATE_NS),
        XSI_NS => SmolStr::new_static(XSI_NS),
        other => SmolStr::new(other),
    }
}

/// One attribute of an [`XmlElement`], or an attribute the model does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlAttr {
    /// The attribute's expanded name.
    pub name: QName,
    /// The unescaped value.
    pub value: SmolStr,
}

impl XmlAttr {
    /// An attribute `name = value`.
    pub fn new(name: QName, value: impl Into<SmolStr>) -> Self {
        XmlAttr { name, value: value.into() }
    }
}

/// An element kept verbatim (modulo prefixes and insignificant whitespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlElement {
    /// The element's expanded name.
    pub name: QName,
    /// Attributes in document order, namespace declarations excluded.
    pub attrs: Vec<XmlAttr>,
    /// Child elements and text, in document order.
    pub children: Vec<XmlChild>,
}

impl XmlElement {
    /// An empty element with no attributes.
    pub fn new(name: QName) -> Self {
        XmlElement { name, attrs: Vec::new(), children: Vec::new() }
    }

    /// The value of the attribute with this name, if present.
    pub fn attr(&self, name: &QName) -> Option<&str> {
        self.attrs.iter().find(|a| &a.name == name).map(|a| a.value.as_str())
    }

    /// The child elements, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &XmlElement> {
        self.children.iter().filter_map(|c| match c {
            XmlChild::Element(e) => Some(e),
            XmlChild::Text(_) => None,
        })
    }

    /// The concatenated text children (not descendants).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.children {
            if let XmlChild::Text(t) = c {
                out.push_str(t);
            }
        }
        out
    }
}

/// A child of an [`XmlElement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlChild {
    /// A nested element.
    Element(XmlElement),
    /// Character data (CDATA is folded into text); surrounding whitespace is trimmed.
    Text(String),
}
