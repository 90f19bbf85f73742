//! The parallel reader gives exactly what the sequential one gives: the same model, or the
//! same error with the same positions. `parse_split(xml, threads, 0)` forces the split onto
//! documents of any size; each test also checks how the document was read, so a split that
//! silently always falls back (or never falls back when it must) fails too.

mod common;

use vnsnap_rspec::*;

/// Reads `xml` whole and in `threads` parts, asserts both results are equal and returns how
/// the split read went.
fn same(xml: &str, threads: usize) -> (Result<RSpec, Error>, Split) {
    let sequential = parse_sequential(xml);
    let (split, how) = parse_split(xml, threads, 0);
    assert_eq!(split, sequential, "{threads} threads ({how:?}) differ from the sequential reader");
    (split, how)
}

/// `same` for several thread counts; returns the outcomes.
fn same_for_all(xml: &str) -> Vec<(Result<RSpec, Error>, Split)> {
    (2..=6).map(|t| same(xml, t)).collect()
}

fn big_ad(nodes: usize) -> (RSpec, String) {
    let model = common::gen::big_advertisement(nodes);
    let xml = model.to_xml();
    (model, xml)
}

/// A request whose nodes `n0..n{nodes}` each have one interface, with links between
/// consecutive nodes after all nodes (so a link in the last part refers to interfaces of the
/// first), and `middle` placed among the root's children halfway.
fn request(nodes: usize, middle: &str) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\"?>\n<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" \
         xmlns:emulab=\"http://www.protogeni.net/resources/rspec/ext/emulab/1\" \
         xmlns:j=\"http://www.protogeni.net/resources/rspec/ext/jacks/1\" type=\"request\">\n",
    );
    for i in 0..nodes {
        if i == nodes / 2 {
            x.push_str(middle);
        }
        x.push_str(&format!(
            "  <node client_id=\"n{i}\" exclusive=\"false\">\n    <sliver_type name=\"emulab-xen\">\n      \
             <emulab:xen cores=\"1\" ram=\"1024\"/>\n    </sliver_type>\n    <interface client_id=\"n{i}:if0\">\n      \
             <ip address=\"10.0.{}.{}\" netmask=\"255.255.0.0\" type=\"ipv4\"/>\n    </interface>\n    \
             <j:site id=\"s{i}\"/>\n  </node>\n",
            i / 250,
            i % 250 + 1
        ));
    }
    for i in 1..nodes {
        x.push_str(&format!(
            "  <link client_id=\"l{i}\">\n    <interface_ref client_id=\"n{}:if0\"/>\n    \
             <interface_ref client_id=\"n{i}:if0\"/>\n  </link>\n",
            i - 1
        ));
    }
    x.push_str("</rspec>\n");
    x
}

#[test]
fn every_corpus_document_reads_the_same_in_parts() {
    let mut split = 0;
    for (name, xml) in common::corpus() {
        for t in 2..=6 {
            let sequential = parse_sequential(&xml);
            let (got, how) = parse_split(&xml, t, 0);
            assert_eq!(got, sequential, "{name}: {t} threads ({how:?})");
            assert!(sequential.is_ok(), "{name}: {sequential:?}");
            if matches!(how, Split::Parallel { parts } if parts > 1) {
                split += 1;
            }
        }
        // What the library writes has one child per line too (an empty root, `<rspec/>`,
        // has nothing to split and is read sequentially).
        let model = parse_sequential(&xml).unwrap();
        let written = model.to_xml();
        let children = model.nodes.len() + model.links.len() + model.opstates.len() + model.extensions.len();
        for t in [2, 3, 5] {
            let (_, how) = same(&written, t);
            if children > 0 {
                assert!(matches!(how, Split::Parallel { .. }), "{name} rewritten: {how:?}");
            } else {
                assert_eq!(how, Split::FellBack, "{name} rewritten");
            }
        }
    }
    // Most corpus documents have several children of the root, one per line.
    eprintln!("{split} of 170 corpus reads were split");
    assert!(split >= 100, "only {split} of 170 corpus reads were split");
}

#[test]
fn a_generated_advertisement_is_read_in_as_many_parts_as_threads() {
    let (model, xml) = big_ad(300);
    for t in 2..=8 {
        let (got, how) = same(&xml, t);
        assert_eq!(how, Split::Parallel { parts: t });
        assert_eq!(got.unwrap(), model);
    }
}

#[test]
fn a_large_advertisement_is_read_in_parts_by_parse() {
    let (model, xml) = big_ad(1_500);
    assert!(xml.len() > PARALLEL_MIN_BYTES, "{} bytes", xml.len());
    let (got, how) = parse_split(&xml, 4, PARALLEL_MIN_BYTES);
    assert_eq!(how, Split::Parallel { parts: 4 });
    assert_eq!(got.unwrap(), model);
    assert_eq!(parse(&xml).unwrap(), model);
    assert_eq!(parse_sequential(&xml).unwrap(), model);
}

#[test]
fn small_documents_and_one_thread_stay_sequential() {
    let (_, xml) = big_ad(20);
    assert!(xml.len() < PARALLEL_MIN_BYTES);
    assert_eq!(parse_split(&xml, 8, PARALLEL_MIN_BYTES).1, Split::Sequential);
    assert_eq!(parse_split(&xml, 1, 0).1, Split::Sequential);
    assert_eq!(parse_split(&xml, 0, 0).1, Split::Sequential);
}

#[test]
fn links_in_one_part_see_interfaces_of_another() {
    let xml = request(400, "");
    let outcomes = same_for_all(&xml);
    for (got, how) in outcomes {
        assert!(matches!(how, Split::Parallel { parts } if parts > 1), "{how:?}");
        let r = got.unwrap();
        assert_eq!((r.nodes.len(), r.links.len()), (400, 399));
        assert_eq!(r.nodes[0].extensions.len(), 1);
    }
}

/// A document without indentation, one element per line: cuts go only to lines that start
/// a node or a link, which hold, so it is read in parts.
#[test]
fn unindented_documents_are_cut_at_nodes_and_links() {
    let xml: String = request(300, "").lines().map(|l| format!("{}\n", l.trim_start())).collect();
    assert!(xml.contains("\n<interface_ref") && !xml.contains("\n "));
    for t in 2..=6 {
        let (got, how) = same(&xml, t);
        assert_eq!(how, Split::Parallel { parts: t }, "{t} threads");
        assert_eq!(got.unwrap().nodes.len(), 300);
    }
}

/// Markup halfway whose content looks like children of the root (a newline, the children's
/// indentation and `<node`): a cut moved forward from the middle lands in it, the part
/// before ends inside it, and the whole document is read again sequentially.
#[test]
fn a_cut_inside_markup_is_caught() {
    let lines: String = (0..400).map(|i| format!("\n  <node client_id=\"fake{i}\">")).collect();
    let cases = [
        ("comment", format!("  <!--{lines}\n  -->\n")),
        ("CDATA", format!("  <![CDATA[{lines}\n  ]]>\n")),
        ("processing instruction", format!("  <?pi {lines}\n  ?>\n")),
        ("attribute value", format!("  <j:x a='{}'/>\n", lines.replace('"', "&quot;"))),
        ("attribute value with raw quotes", format!("  <j:x a='{lines}'/>\n")),
        ("extension element", format!("  <j:wrap>{}\n  </j:wrap>\n", lines.replace("\">", "\"/>"))),
        ("unknown GENI element", format!("  <relation>{}\n  </relation>\n", lines.replace("\">", "\"/>"))),
    ];
    for (what, middle) in cases {
        let xml = request(60, &middle);
        for t in [2, 3] {
            let (got, how) = same(&xml, t);
            assert_eq!(how, Split::FellBack, "{what}, {t} threads: {got:?}");
        }
    }
}

/// The same markup near the start, where no cut lands: the split holds and keeps it.
#[test]
fn markup_between_cuts_is_kept() {
    let lines: String = (0..5).map(|i| format!("\n  <node client_id=\"fake{i}\"/>")).collect();
    let mut xml = request(200, "");
    let at = xml.find("  <node").unwrap();
    xml.insert_str(at, &format!("  <!--{lines}\n  -->\n  <j:wrap>{lines}\n  </j:wrap>\n  <![CDATA[{lines}]]>\n"));
    let (got, how) = same(&xml, 2);
    assert_eq!(how, Split::Parallel { parts: 2 });
    let r = got.unwrap();
    assert_eq!(r.extensions.len(), 1);
    assert_eq!(r.extensions[0].children.len(), 5);
}

/// Foreign elements, GENI elements outside the model and opstates between the nodes and
/// links, in several namespaces (declared on the root and locally): every list keeps
/// document order across the parts.
#[test]
fn top_level_extensions_keep_their_order() {
    let mut xml = String::from(
        "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" xmlns:a=\"urn:example:a\" \
         xmlns:opstate=\"http://www.geni.net/resources/rspec/ext/opstate/1\" type=\"advertisement\">\n",
    );
    for i in 0..300 {
        xml.push_str(&format!(
            "  <node component_id=\"urn:publicid:IDN+x+node+pc{i}\" component_manager_id=\"urn:publicid:IDN+x+authority+cm\" exclusive=\"true\"/>\n"
        ));
        match i % 4 {
            0 => xml.push_str(&format!("  <a:ext n=\"{i}\">text {i}<a:inner/></a:ext>\n")),
            1 => xml.push_str(&format!("  <b:ext xmlns:b=\"urn:example:b\" b:n=\"{i}\"><b:x/></b:ext>\n")),
            2 => xml.push_str(&format!("  <relation type=\"r{i}\"/>\n  <!-- comment {i} -->\n")),
            _ => xml.push_str(&format!(
                "  <opstate:rspec_opstate aggregate_manager_id=\"urn:publicid:IDN+x+authority+am\" start=\"geni_notready\">\n    \
                 <opstate:sliver_type name=\"s{i}\"/>\n    <opstate:state name=\"geni_notready\"/>\n  </opstate:rspec_opstate>\n"
            )),
        }
        xml.push_str(&format!(
            "  <link component_id=\"urn:publicid:IDN+x+link+l{i}\"><interface_ref component_id=\"urn:publicid:IDN+x+interface+pc{i}:eth0\"/></link>\n"
        ));
    }
    xml.push_str("</rspec>");
    for (got, how) in same_for_all(&xml) {
        assert!(matches!(how, Split::Parallel { parts } if parts > 1), "{how:?}");
        let r = got.unwrap();
        assert_eq!((r.nodes.len(), r.links.len(), r.opstates.len(), r.extensions.len()), (300, 300, 75, 225));
        let names: Vec<&str> = r.extensions.iter().map(|e| e.name.local.as_str()).collect();
        assert_eq!(&names[..6], ["ext", "ext", "relation", "ext", "ext", "relation"]);
        assert_eq!(r.links[299].component_id.as_deref(), Some("urn:publicid:IDN+x+link+l299"));
    }
}

/// The GENI namespace bound to a prefix on the root (also the root's end tag has it), and a
/// child that declares the default namespace itself.
#[test]
fn prefixed_roots_and_local_declarations_read_the_same() {
    let mut xml = String::from(
        "<g:rspec xmlns:g=\"http://www.geni.net/resources/rspec/3\" type=\"request\">\n\t<!-- tab-indented -->\n",
    );
    for i in 0..200 {
        if i % 2 == 0 {
            xml.push_str(&format!("\t<g:node client_id=\"n{i}\"><g:interface client_id=\"n{i}:if\"/></g:node>\n"));
        } else {
            xml.push_str(&format!(
                "\t<node xmlns=\"http://www.geni.net/resources/rspec/3\" client_id=\"n{i}\"><interface client_id=\"n{i}:if\"/></node>\n"
            ));
        }
    }
    xml.push_str("</g:rspec >\r\n\n");
    for (got, how) in same_for_all(&xml) {
        assert!(matches!(how, Split::Parallel { parts } if parts > 1), "{how:?}");
        assert_eq!(got.unwrap().nodes.len(), 200);
    }
    // An unprefixed child of the prefixed root is in no namespace: kept as an extension.
    let odd = xml.replace(
        "\t<g:node client_id=\"n100\"><g:interface client_id=\"n100:if\"/></g:node>",
        "\t<node client_id=\"n100\"><g:interface client_id=\"n100:if\"/></node>",
    );
    assert_ne!(odd, xml);
    for (got, _) in same_for_all(&odd) {
        assert_eq!(got.unwrap().extensions.len(), 1);
    }
}

/// Documents whose only error is in the last part: the error, its position and (for
/// problems) the whole list are the sequential ones.
#[test]
fn errors_late_in_the_document_are_the_sequential_ones() {
    let (_, ad) = big_ad(200);
    let last = |xml: &str, what: &str| xml.rfind(what).unwrap();
    let mut cases: Vec<(&str, String)> = Vec::new();

    let mut x = ad.clone();
    let at = last(&x, "exclusive=\"false\"");
    x.replace_range(at..at + 17, "exclusive=\"maybe\"");
    cases.push(("bad boolean", x));

    let mut x = ad.clone();
    let at = last(&x, "</node>");
    x.replace_range(at..at + 7, "");
    cases.push(("unclosed node", x));

    let mut x = ad.clone();
    let at = last(&x, "<node ");
    x.insert_str(at, "<!DOCTYPE x>\n  ");
    cases.push(("DOCTYPE", x));

    let mut x = ad.clone();
    let at = last(&x, "component_name=\"") + 16;
    x.insert(at, '\u{1}');
    cases.push(("control character", x));

    let mut x = ad.clone();
    let at = last(&x, "component_name=\"") + 16;
    x.insert_str(at, "&bogus;");
    cases.push(("unknown entity", x));

    let mut x = ad.clone();
    let at = last(&x, "<node ");
    x.insert_str(at, &format!("<a:x xmlns:a=\"urn:a\">{}{}\n  ", "<a:x>".repeat(69), "</a:x>".repeat(70)));
    cases.push(("too deep", x));

    let mut x = ad.clone();
    let at = last(&x, "<link ");
    x.insert_str(at, "<node component_manager_id=\"urn:x\" exclusive=\"true\"/>\n  ");
    cases.push(("missing attribute", x));

    let mut x = ad.clone();
    x.push_str("<!-- after --><x/>");
    cases.push(("content after the root", x));

    let mut x = ad.clone();
    x.truncate(last(&x, "</rspec>"));
    cases.push(("no root end", x));

    let x = request(300, "").replace("client_id=\"n290\"", "client_id=\"n3\"");
    cases.push(("duplicate client_id across parts", x));

    let x = request(300, "").replace("<interface_ref client_id=\"n298:if0\"/>", "<interface_ref client_id=\"zz\"/>");
    cases.push(("dangling interface_ref", x));

    let x = request(300, "").replace("<node client_id=\"n299\"", "<node client_id=\"n299\" a='1' a='2'");
    cases.push(("duplicate attribute", x));

    for (what, xml) in cases {
        for t in [2, 3, 5] {
            let (got, how) = same(&xml, t);
            assert!(got.is_err(), "{what}: accepted");
            assert_eq!(how, Split::FellBack, "{what}");
        }
    }
}

/// The element cap counts the whole document, not each part: one element too many is refused
/// as the sequential reader refuses it, and exactly the cap is read in parts.
#[test]
fn the_element_cap_counts_all_parts() {
    let doc = |children: usize| {
        let mut x = String::from("<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\">\n");
        for _ in 0..children {
            x.push_str("  <e/>\n");
        }
        x.push_str("</rspec>\n");
        x
    };
    let at_cap = doc(MAX_ELEMENTS - 1);
    let (got, how) = same(&at_cap, 4);
    assert_eq!(how, Split::Parallel { parts: 4 });
    assert_eq!(got.unwrap().extensions.len(), MAX_ELEMENTS - 1);
    let over = doc(MAX_ELEMENTS);
    let (got, how) = same(&over, 4);
    assert!(matches!(got, Err(Error::TooManyElements { .. })), "{got:?}");
    assert_eq!(how, Split::FellBack);
}

#[test]
fn the_size_cap_holds() {
    let xml = format!("<rspec>{}</rspec>", " ".repeat(MAX_DOCUMENT_BYTES));
    let (got, _) = parse_split(&xml, 4, 0);
    assert!(matches!(got, Err(Error::TooLarge { .. })), "{got:?}");
}
