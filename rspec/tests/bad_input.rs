//! Every class of bad input is refused with the right error, a position, and (for RSpec-level
//! problems) the full list of problems rather than the first one.

use vnsnap_rspec::{parse, Error, Position, ProblemKind, MAX_DEPTH, MAX_DOCUMENT_BYTES};

const HEAD: &str = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:emulab="http://www.protogeni.net/resources/rspec/ext/emulab/1" type="request">"#;

fn doc(body: &str) -> String {
    format!("{HEAD}\n{body}\n</rspec>")
}

fn problems(xml: &str) -> Vec<vnsnap_rspec::Problem> {
    match parse(xml) {
        Err(Error::Invalid(p)) => p,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn kinds(xml: &str) -> Vec<ProblemKind> {
    problems(xml).into_iter().map(|p| p.kind).collect()
}

fn malformed(xml: &str) -> (Position, String) {
    match parse(xml) {
        Err(Error::Malformed { position, message }) => (position, message),
        other => panic!("expected Malformed for {xml:?}, got {other:?}"),
    }
}

#[test]
fn rejects_malformed_xml_with_a_position() {
    for bad in [
        "",
        "   ",
        "not xml at all",
        "<rspec",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\">",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"></node>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\" type=\"manifest\"/>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"><node client_id=\"a></rspec>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"/><rspec/>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"/>trailing",
        "text<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"/>",
        "<x:rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"/>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"><node client_id=\"&bogus;\"/></rspec>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"><foo:bar/></rspec>",
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"><x>&unknown;</x></rspec>",
    ] {
        let (pos, msg) = malformed(bad);
        assert!(pos.line >= 1 && pos.column >= 1, "{bad:?}");
        assert!(!msg.is_empty());
    }
}

#[test]
fn malformed_position_points_at_the_problem_line() {
    let xml = doc("  <node client_id=\"a\">\n    <sliver_type name=\"x\">\n  </node>");
    let (pos, _) = malformed(&xml);
    assert_eq!(pos.line, 4, "{pos:?}");
}

#[test]
fn rejects_doctype_and_so_any_entity_declaration() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node client_id="&lol2;"/></rspec>"#;
    match parse(laughs) {
        Err(Error::Doctype { position }) => assert_eq!(position.line, 2),
        other => panic!("{other:?}"),
    }
    let external = r#"<!DOCTYPE rspec SYSTEM "file:///etc/passwd"><rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"/>"#;
    assert!(matches!(parse(external), Err(Error::Doctype { .. })));
}

#[test]
fn expands_only_predefined_entities_and_character_references() {
    let xml = doc(r#"<node client_id="a&amp;b&lt;&gt;&quot;&apos;&#65;&#x42;"><sliver_type name="x"/></node>"#);
    let r = parse(&xml).unwrap();
    assert_eq!(r.nodes[0].client_id.as_deref(), Some("a&b<>\"'AB"));
    assert!(matches!(
        parse(&doc(r#"<node client_id="&nbsp;"><sliver_type name="x"/></node>"#)),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn rejects_documents_over_the_size_cap() {
    let mut xml = doc("");
    xml.push_str(&" ".repeat(MAX_DOCUMENT_BYTES + 1 - xml.len()));
    match parse(&xml) {
        Err(Error::TooLarge { len, max }) => {
            assert_eq!(len, MAX_DOCUMENT_BYTES + 1);
            assert_eq!(max, MAX_DOCUMENT_BYTES);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_nesting_beyond_the_depth_cap() {
    // The cap counts the root: MAX_DEPTH levels in total are fine, one more is not.
    let ok_depth = MAX_DEPTH - 1;
    let nested = |n: usize| format!("<x:e xmlns:x=\"urn:x\">{}{}", "<x:e>".repeat(n - 1), "</x:e>".repeat(n));
    assert!(parse(&doc(&nested(ok_depth))).is_ok());
    match parse(&doc(&nested(ok_depth + 1))) {
        Err(Error::TooDeep { position, max }) => {
            assert_eq!(max, MAX_DEPTH);
            assert_eq!(position.line, 2);
        }
        other => panic!("{other:?}"),
    }
    // Self-closing elements count too.
    let selfclosed =
        format!("<x:e xmlns:x=\"urn:x\">{}<x:e/>{}", "<x:e>".repeat(ok_depth - 1), "</x:e>".repeat(ok_depth));
    assert!(matches!(parse(&doc(&selfclosed)), Err(Error::TooDeep { .. })));
    // A million-deep attack stops at the cap without recursion trouble.
    assert!(matches!(parse(&doc(&nested(100_000))), Err(Error::TooDeep { .. })));
}

#[test]
fn refuses_protogeni_v2_and_other_roots() {
    let v2 =
        r#"<rspec xmlns="http://www.protogeni.net/resources/rspec/2" type="request"><node virtual_id="a"/></rspec>"#;
    match parse(v2) {
        Err(Error::NotRSpecV3 { found }) => {
            assert!(found.contains("protogeni.net/resources/rspec/2"), "{found}");
            assert!(found.contains("v2 is not supported"), "{found}");
        }
        other => panic!("{other:?}"),
    }
    for other in ["<rspec type=\"request\"/>", "<html/>", "<node xmlns=\"http://www.geni.net/resources/rspec/3\"/>"] {
        assert!(matches!(parse(other), Err(Error::NotRSpecV3 { .. })), "{other}");
    }
}

#[test]
fn reports_duplicate_client_ids_across_nodes_interfaces_and_links() {
    let xml = doc(r#"<node client_id="a"><sliver_type name="x"/><interface client_id="a:if0"/></node>
<node client_id="a"><sliver_type name="x"/><interface client_id="a:if0"/></node>
<link client_id="a:if0"><interface_ref client_id="a:if0"/></link>"#);
    let p = problems(&xml);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p.iter().all(|p| p.kind == ProblemKind::DuplicateClientId));
    let lines: Vec<usize> = p.iter().map(|p| p.position.unwrap().line).collect();
    assert_eq!(lines, vec![3, 3, 4]);
}

#[test]
fn reports_interface_refs_naming_no_interface() {
    let xml = doc(r#"<node client_id="a"><sliver_type name="x"/><interface client_id="a:if0"/></node>
<link client_id="l"><interface_ref client_id="a:if0"/><interface_ref client_id="b:if0"/></link>"#);
    let p = problems(&xml);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProblemKind::DanglingInterfaceRef);
    assert!(p[0].message.contains("b:if0"));
    assert_eq!(p[0].position.unwrap(), Position { line: 3, column: 55 });
}

#[test]
fn reports_links_without_interface_refs() {
    let xml = doc(r#"<link client_id="l"><link_type name="lan"/></link><link client_id="m"/>"#);
    assert_eq!(kinds(&xml), vec![ProblemKind::LinkWithoutInterfaces; 2]);
}

#[test]
fn reports_missing_required_attributes() {
    let xml = doc(
        r#"<node><sliver_type/><interface><ip/></interface><services><execute/><login/></services><location/></node>
<link><interface_ref/></link>"#,
    );
    let p = problems(&xml);
    let missing = p.iter().filter(|p| p.kind == ProblemKind::MissingAttribute).count();
    // node client_id, sliver_type name, interface client_id, ip address, execute shell and
    // command, login authentication, location country, link client_id, interface_ref client_id.
    assert_eq!(missing, 10, "{p:#?}");
}

#[test]
fn reports_attributes_required_by_the_advertisement_kind() {
    let xml = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="advertisement">
<node component_name="x"><interface/></node>
<link><interface_ref/></link>
</rspec>"#;
    let p = problems(xml);
    let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
    for needle in [
        "component_id",
        "component_manager_id",
        "exclusive",
        "<interface> lacks component_id",
        "<link> lacks component_id",
        "<interface_ref> lacks component_id",
    ] {
        assert!(msgs.iter().any(|m| m.contains(needle)), "{needle} not in {msgs:#?}");
    }
}

#[test]
fn reports_unparsable_addresses_and_netmasks() {
    let xml = doc(r#"<node client_id="a"><sliver_type name="x"/><interface client_id="a:if0">
<ip address="10.0.0.300" netmask="255.255.255.0"/>
<ip address="10.0.0.1" netmask="255.0.255.0"/>
<ip address="10.0.0.1" netmask="33"/>
<ip address="fe80::zz"/>
<ip address="10.0.0.1" netmask="banana"/>
</interface></node>"#);
    let p = problems(&xml);
    assert_eq!(p.len(), 5, "{p:#?}");
    assert!(p.iter().all(|p| p.kind == ProblemKind::BadAddress));
    let lines: Vec<usize> = p.iter().map(|p| p.position.unwrap().line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7]);
}

#[test]
fn reports_numbers_that_do_not_parse_or_are_out_of_range() {
    let xml = doc(
        r#"<node client_id="a"><sliver_type name="x"><emulab:xen cores="-1" ram="1e3" disk="99999999999999999999"/></sliver_type>
<services><login authentication="ssh-keys" port="70000"/></services>
<location country="US" latitude="91" longitude="-181"/></node>
<node client_id="b"><sliver_type name="x"/><interface client_id="b:if0"/></node>
<link client_id="l" vlantag="4096"><interface_ref client_id="b:if0"/>
<property source_id="b:if0" dest_id="b:if0" capacity="-5" latency="x" packet_loss="1.5"/></link>"#,
    );
    let p = problems(&xml);
    assert_eq!(p.len(), 10, "{p:#?}");
    assert!(p.iter().all(|p| p.kind == ProblemKind::BadNumber), "{p:#?}");
}

#[test]
fn reports_bad_booleans_dates_and_root_type() {
    let xml = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="offer" generated="yesterday" expires="2025-02-30T00:00:00">
<node client_id="a" exclusive="maybe"><sliver_type name="x"/></node>
</rspec>"#;
    let p = problems(xml);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p.iter().all(|p| p.kind == ProblemKind::BadValue));
    let xml = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3"/>"#;
    assert_eq!(kinds(xml), vec![ProblemKind::MissingAttribute]);
}

#[test]
fn reports_every_problem_of_a_document_in_document_order() {
    let xml =
        doc(r#"<node client_id="a"><sliver_type/><interface client_id="a:if0"><ip address="nope"/></interface></node>
<node client_id="a"><sliver_type name="x"/></node>
<link client_id="l1"><interface_ref client_id="ghost"/></link>
<link client_id="l2"/>"#);
    let p = problems(&xml);
    let got: Vec<(usize, ProblemKind)> = p.iter().map(|p| (p.position.unwrap().line, p.kind)).collect();
    assert_eq!(
        got,
        vec![
            (2, ProblemKind::MissingAttribute),
            (2, ProblemKind::BadAddress),
            (3, ProblemKind::DuplicateClientId),
            (4, ProblemKind::DanglingInterfaceRef),
            (5, ProblemKind::LinkWithoutInterfaces),
        ]
    );
    let msg = Error::Invalid(p).to_string();
    assert!(msg.contains("2:") && msg.contains("ghost"), "{msg}");
}

#[test]
fn reports_unexpected_children_of_modelled_extensions() {
    let xml = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:o="http://www.geni.net/resources/rspec/ext/opstate/1" type="advertisement">
<o:rspec_opstate aggregate_manager_id="urn:x" start="s"><o:bogus/><o:state name="s"><o:other/></o:state></o:rspec_opstate>
</rspec>"#;
    assert_eq!(kinds(xml), vec![ProblemKind::UnexpectedElement; 2]);
}

#[test]
fn lenient_reading_accepts_a_manifest_link_without_vlantag_but_validate_flags_it() {
    let xml = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="manifest">
<node client_id="a"><interface client_id="a:if0"/></node>
<link client_id="l"><interface_ref client_id="a:if0"/></link>
</rspec>"#;
    let r = parse(xml).unwrap();
    let p = r.validate().unwrap_err();
    assert_eq!(p.len(), 1);
    assert!(p[0].position.is_none());
}

#[test]
fn rejects_control_characters_and_invalid_names() {
    let (pos, msg) = malformed(&doc("<node client_id=\"a\u{1}\"><sliver_type name=\"x\"/></node>"));
    assert_eq!(pos.line, 2);
    assert!(msg.contains("U+0001"), "{msg}");
    malformed(&doc("<xmlns:a=\"urn:a\"x/>"));
    malformed(&doc("<n:9bad xmlns:n=\"urn:n\"/>"));
}

#[test]
fn control_characters_are_found_anywhere_and_reported_before_other_errors() {
    // Far into a large document (the reader checks the input as it goes).
    let filler: String =
        (0..3000).map(|i| format!("<node client_id=\"n{i}\"><sliver_type name=\"x\"/></node>\n")).collect();
    let (pos, msg) = malformed(&doc(&format!("{filler}<node client_id=\"late\u{2}\"/>")));
    assert_eq!(pos.line, 3002, "{msg}");
    assert!(msg.contains("U+0002"), "{msg}");
    // Also when the document breaks earlier in another way, or has RSpec-level problems.
    let (_, msg) = malformed(&doc(&format!("<node client_id=\"a\"></link>{filler}\u{7}")));
    assert!(msg.contains("U+0007"), "{msg}");
    let (_, msg) = malformed(&doc(&format!("<node/>{filler}<x xmlns=\"urn:x\">\u{1f}</x>")));
    assert!(msg.contains("U+001F"), "{msg}");
    // And at the very end, after the root.
    let (_, msg) = malformed(&format!("{}\u{1}", doc(&filler)));
    assert!(msg.contains("U+0001"), "{msg}");
}

#[test]
fn character_references_to_control_characters_are_refused() {
    // XML allows no control character other than tab, newline and carriage return, not even
    // as a reference; accepting one would make a model the writer cannot write back.
    for r in ["&#11;", "&#x1;", "&#x1F;", "&#8;"] {
        let (_, msg) = malformed(&doc(&format!("<node client_id=\"a{r}\"><sliver_type name=\"x\"/></node>")));
        assert!(msg.contains("not allowed"), "{r}: {msg}");
        malformed(&doc(&format!("<x xmlns=\"urn:x\">text {r}</x>")));
    }
    for ok in ["&#9;", "&#10;", "&#13;", "&#x20;"] {
        parse(&doc(&format!("<node client_id=\"a{ok}\"><sliver_type name=\"x\"/></node>"))).unwrap();
    }
}

#[test]
fn character_reference_to_nul_is_not_accepted_silently() {
    // Either refused, or never turned into a NUL the writer would emit.
    if let Ok(r) = parse(&doc("<node client_id=\"&#0;\"><sliver_type name=\"x\"/></node>")) {
        let id = r.nodes[0].client_id.clone().unwrap();
        assert!(!id.contains('\u{0}'), "{id:?}");
    }
}

#[test]
fn rejects_elements_with_too_many_attributes() {
    let attrs: String = (0..vnsnap_rspec::MAX_ATTRIBUTES + 1).map(|i| format!(" a{i}=\"\"")).collect();
    let (_, msg) = malformed(&doc(&format!("<node client_id=\"n\"{attrs}/>")));
    assert!(msg.contains("attributes"), "{msg}");
}

#[test]
fn many_attributes_under_the_cap_are_read_in_linear_time() {
    // 300 elements of 1000 attributes each: quadratic duplicate checks would take minutes.
    let attrs: String = (0..1000).map(|i| format!(" x:a{i}=\"{i}\"")).collect();
    let nodes: String = (0..300)
        .map(|n| format!("<node client_id=\"n{n}\" xmlns:x=\"urn:x\"{attrs}><sliver_type name=\"s\"/></node>"))
        .collect();
    let r = parse(&doc(&nodes)).unwrap();
    assert_eq!(r.nodes.len(), 300);
    assert_eq!(r.nodes[299].ext_attrs.len(), 1000);
    // A repeat far past the inline slots is still caught.
    let dup = format!("<node client_id=\"n\" xmlns:x=\"urn:x\"{attrs} x:a999=\"again\"/>");
    let (_, msg) = malformed(&doc(&dup));
    assert!(msg.contains("Duplicate"), "{msg}");
}

#[test]
fn rejects_too_many_namespace_declarations_in_scope() {
    let max = vnsnap_rspec::MAX_NAMESPACES_IN_SCOPE;
    let decls =
        |n: usize, tag: &str| -> String { (0..n).map(|i| format!(" xmlns:{tag}{i}=\"urn:{tag}{i}\"")).collect() };
    // On one element.
    let (_, msg) = malformed(&doc(&format!("<x:e xmlns:x=\"urn:x\"{}/>", decls(max, "p"))));
    assert!(msg.contains("namespace declarations"), "{msg}");
    // Spread over nested elements.
    let nested = format!("<x:a xmlns:x=\"urn:x\"{}><x:b{}/></x:a>", decls(max / 2, "p"), decls(max / 2 + 1, "q"));
    assert!(matches!(parse(&doc(&nested)), Err(Error::Malformed { .. })));
    // Declarations leave scope with their element.
    let siblings =
        format!("<x:a xmlns:x=\"urn:x\"{}/><x:b xmlns:x=\"urn:x\"{}/>", decls(max / 2, "p"), decls(max / 2, "q"));
    assert!(parse(&doc(&siblings)).is_ok());
}

#[test]
fn rejects_documents_with_too_many_elements() {
    let max = vnsnap_rspec::MAX_ELEMENTS;
    // The root counts, so MAX - 1 children fit and one more does not.
    let fits = doc(&"<x:e xmlns:x=\"urn:x\"/>".repeat(max - 1));
    assert!(parse(&fits).is_ok());
    let over = doc(&"<x:e xmlns:x=\"urn:x\"/>".repeat(max));
    match parse(&over) {
        Err(Error::TooManyElements { max: m, .. }) => assert_eq!(m, max),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
