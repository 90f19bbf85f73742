//! Namespace scoping as the reader resolves it: declarations take effect on the element that
//! makes them, end with it (also for `<x/>`), can be undeclared, and the reserved prefixes
//! and namespaces cannot be rebound.

use vnsnap_rspec::{parse, Error, QName, EMULAB_NS};

const GENI: &str = "http://www.geni.net/resources/rspec/3";

fn malformed(xml: &str) -> String {
    match parse(xml) {
        Err(Error::Malformed { message, .. }) => message,
        other => panic!("expected Malformed for {xml:?}, got {other:?}"),
    }
}

fn request(body: &str) -> String {
    format!(r#"<rspec xmlns="{GENI}" type="request">{body}</rspec>"#)
}

#[test]
fn a_prefix_declared_on_a_sibling_is_out_of_scope() {
    // Declared on an empty element: gone by the next element.
    let xml = request(r#"<e:a xmlns:e="urn:e"/><e:b/>"#);
    assert!(malformed(&xml).contains("Unknown namespace prefix \"e\""), "{xml}");
    // Declared on an element with children: gone after its end tag.
    let xml = request(r#"<e:a xmlns:e="urn:e"><e:in/></e:a><e:b/>"#);
    assert!(malformed(&xml).contains("Unknown namespace prefix"), "{xml}");
}

#[test]
fn a_nested_redeclaration_ends_with_its_element() {
    let xml = request(
        r#"<x:a xmlns:x="urn:one"><x:b xmlns:x="urn:two"/><x:c/><x:d xmlns:x="urn:three"><x:e/></x:d><x:f/></x:a>"#,
    );
    let r = parse(&xml).unwrap();
    let a = &r.extensions[0];
    assert_eq!(a.name, QName::new("urn:one", "a"));
    let names: Vec<QName> = a.elements().map(|e| e.name.clone()).collect();
    assert_eq!(
        names,
        [
            QName::new("urn:two", "b"),
            QName::new("urn:one", "c"),
            QName::new("urn:three", "d"),
            QName::new("urn:one", "f")
        ]
    );
    let d = a.elements().nth(2).unwrap();
    assert_eq!(d.elements().next().unwrap().name, QName::new("urn:three", "e"));
}

#[test]
fn the_default_namespace_can_be_undeclared_and_comes_back() {
    let xml = request(r#"<a xmlns=""><b/></a><c xmlns="urn:c"/><node client_id="n"><sliver_type name="s"/></node>"#);
    let r = parse(&xml).unwrap();
    assert_eq!(r.extensions[0].name, QName::local("a"));
    assert_eq!(r.extensions[0].elements().next().unwrap().name, QName::local("b"));
    assert_eq!(r.extensions[1].name, QName::new("urn:c", "c"));
    // After both, the GENI default applies again: this is a node, not an extension.
    assert_eq!(r.nodes.len(), 1);
    assert_eq!(r.extensions.len(), 2);
}

#[test]
fn an_undeclared_prefix_cannot_be_used() {
    let xml = request(r#"<p:a xmlns:p="urn:p"><p:b xmlns:p=""/></p:a>"#);
    assert!(malformed(&xml).contains("Unknown namespace prefix"));
}

#[test]
fn a_prefixed_attribute_uses_a_declaration_on_the_same_element_after_it() {
    let xml = request(r#"<node client_id="n" e:flag="1" xmlns:e="urn:e"><sliver_type name="s"/></node>"#);
    let r = parse(&xml).unwrap();
    let attr = &r.nodes[0].ext_attrs[0];
    assert_eq!(attr.name, QName::new("urn:e", "flag"));
    // Unprefixed attributes are in no namespace even under a default declaration.
    let xml = request(r#"<x xmlns="urn:x" plain="1"/>"#);
    assert_eq!(parse(&xml).unwrap().extensions[0].attrs[0].name, QName::local("plain"));
}

#[test]
fn escaped_namespace_names_are_unescaped_before_matching() {
    let xml = r#"<g:rspec xmlns:g="http://www.geni.net/resources/rspec/&#51;" type="request"><g:node client_id="n"><g:sliver_type name="s"><emulab:xen xmlns:emulab="http://www.protogeni.net/resources/rspec/ext/emulab/&#x31;" cores="2"/></g:sliver_type></g:node></g:rspec>"#;
    let r = parse(xml).unwrap();
    assert_eq!(r.nodes[0].sliver_types[0].xen.as_ref().unwrap().cores, Some(2));
    assert!(EMULAB_NS.ends_with("/1"));
}

#[test]
fn reserved_prefixes_and_namespaces_cannot_be_rebound() {
    for decl in [
        r#"xmlns:xml="urn:not-xml""#,
        r#"xmlns:xmlns="urn:x""#,
        r#"xmlns:p="http://www.w3.org/XML/1998/namespace""#,
        r#"xmlns:p="http://www.w3.org/2000/xmlns/""#,
    ] {
        let xml = request(&format!("<a {decl}/>"));
        malformed(&xml);
    }
    // Binding xml to its own namespace is allowed, and xml:lang resolves without a declaration.
    let xml = request(r#"<a xmlns:xml="http://www.w3.org/XML/1998/namespace" xml:lang="en"/>"#);
    let r = parse(&xml).unwrap();
    assert_eq!(r.extensions[0].attrs[0].name, QName::new("http://www.w3.org/XML/1998/namespace", "lang"));
    // No element may be in the xmlns namespace.
    malformed(&request("<xmlns:a/>"));
}

#[test]
fn the_root_may_use_any_prefix_and_a_wrong_namespace_is_refused() {
    let ok = format!(r#"<geni:rspec xmlns:geni="{GENI}" type="request"/>"#);
    assert!(parse(&ok).is_ok());
    let unbound = format!(r#"<geni:rspec xmlns="{GENI}" type="request"/>"#);
    assert!(malformed(&unbound).contains("Unknown namespace prefix"));
    let other = r#"<rspec xmlns="urn:other" type="request"/>"#;
    assert!(matches!(parse(other), Err(Error::NotRSpecV3 { .. })));
}
