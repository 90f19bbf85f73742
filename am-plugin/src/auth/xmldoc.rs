//! A small, defensive XML tree built with quick-xml, just enough to read credentials.
//!
//! The raw text is screened before parsing: no DOCTYPE and no entity declarations are accepted
//! (so no entity expansion and no external fetches, here or in xmlsec1 which later parses the
//! same bytes), nesting depth and element count are capped.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::error::AuthError;

/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 64;
/// Most elements accepted in one document.
const MAX_ELEMENTS: usize = 20_000;

/// One element: local name, attributes by qualified name, children.
#[derive(Debug, Clone, Default)]
pub(crate) struct Element {
    /// Local name (prefix removed).
    pub name: String,
    /// Attributes as (qualified name, unescaped value).
    pub attrs: Vec<(String, String)>,
    /// Child nodes in order.
    pub children: Vec<Node>,
}

/// A node of the tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// Attribute value by qualified name (e.g. `xml:id`, `URI`).
    pub fn attr(&self, qname: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == qname).map(|(_, v)| v.as_str())
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// First child element with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// Child elements with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.name == name)
    }

    /// Concatenated text content of this element (direct text children), trimmed.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s.trim().to_string()
    }

    /// Text of the named child, trimmed; empty if absent.
    pub fn child_text(&self, name: &str) -> String {
        self.child(name).map(Element::text).unwrap_or_default()
    }

    /// Visit this element and all descendants.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Element)) {
        f(self);
        for e in self.elements() {
            e.walk(f);
        }
    }
}

fn malformed(msg: impl std::fmt::Display) -> AuthError {
    AuthError::MalformedCredential(msg.to_string())
}

/// Refuse DOCTYPE and entity declarations anywhere in the text, before any parser sees it.
pub(crate) fn screen(xml: &str) -> Result<(), AuthError> {
    let lower = xml.to_ascii_lowercase();
    if lower.contains("<!doctype") || lower.contains("<!entity") {
        return Err(AuthError::DoctypeForbidden);
    }
    Ok(())
}

/// Pop the innermost open element into its parent (or make it the root).
fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) -> Result<(), AuthError> {
    let el = stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(el)),
        None => *root = Some(el),
    }
    Ok(())
}

/// Parse a document into its root element.
pub(crate) fn parse(xml: &str) -> Result<Element, AuthError> {
    screen(xml)?;
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let ev =
            reader.read_event().map_err(|e| malformed(format!("XML error at {}: {e}", reader.buffer_position())))?;
        let empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(start) | Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(malformed("too many elements"));
                }
                if root.is_some() {
                    return Err(malformed("content after the root element"));
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in start.attributes() {
                    let a = a.map_err(|e| malformed(format!("bad attribute: {e}")))?;
                    let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    let v =
                        a.unescape_value().map_err(|e| malformed(format!("bad attribute value: {e}")))?.into_owned();
                    attrs.push((k, v));
                }
                let el = Element { name, attrs, children: Vec::new() };
                stack.push(el);
                if stack.len() > MAX_DEPTH {
                    return Err(malformed("elements nested too deeply"));
                }
                if empty {
                    close(&mut stack, &mut root)?;
                }
            }
            Event::End(_) => close(&mut stack, &mut root)?,
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| malformed(format!("bad text: {e}")))?.into_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Text(s)),
                    None if s.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c).into_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Text(s)),
                    None => return Err(malformed("CDATA outside the root element")),
                }
            }
            Event::DocType(_) => return Err(AuthError::DoctypeForbidden),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("document ends inside an element (truncated?)"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_text_around_comments() {
        // Canonical XML without comments joins these text nodes, so must we.
        let e = parse("<a><u>urn:x+user+ali<!-- c -->ce</u></a>").unwrap();
        assert_eq!(e.child_text("u"), "urn:x+user+alice");
    }

    #[test]
    fn reads_cdata_and_char_refs() {
        let e = parse("<a><b><![CDATA[x<y]]></b><c>&#65;&amp;</c></a>").unwrap();
        assert_eq!(e.child_text("b"), "x<y");
        assert_eq!(e.child_text("c"), "A&");
    }

    #[test]
    fn rejects_undefined_entity() {
        assert!(matches!(parse("<a>&foo;</a>"), Err(AuthError::MalformedCredential(_))));
    }

    #[test]
    fn rejects_deep_nesting() {
        let xml = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(matches!(parse(&xml), Err(AuthError::MalformedCredential(_))));
    }

    #[test]
    fn rejects_doctype_in_any_case() {
        assert_eq!(parse("<!doctype a><a/>").unwrap_err(), AuthError::DoctypeForbidden);
    }

    #[test]
    fn rejects_two_roots_and_truncation() {
        assert!(parse("<a/><b/>").is_err());
        assert!(parse("<a><b>").is_err());
        assert!(parse("<a></b>").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_xmlish_input(s in "[<>/a-z =\"'&;!\\[\\]-]{0,120}") {
            let _ = parse(&s);
        }
    }
}
