//! Documents in the shapes real GENI and FIRE tools write (ExoGENI/ORCA, OCF, Flack,
//! InstaGENI), which the schemas accept but an earlier reader refused or changed: each is
//! read, written back and compared with the input by an independent XML reader (roxmltree),
//! and the output validates whenever the input does. Requests keep their strict rules under
//! `parse`, with the same messages as before.

mod common;

use std::path::Path;

use vnsnap_rspec::*;

/// The test documents in `tests/shapes`, as (file name, kind, text).
fn shapes() -> Vec<(String, RSpecType, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shapes");
    let mut out: Vec<(String, RSpecType, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let kind = match &name[..3] {
                "req" => RSpecType::Request,
                "man" => RSpecType::Manifest,
                _ => RSpecType::Advertisement,
            };
            (name, kind, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 5, "{out:?}");
    out
}

fn shape(name: &str) -> String {
    shapes().into_iter().find(|s| s.0 == name).unwrap().2
}

fn validate(kind: RSpecType, name: &str, xml: &str) -> Vec<(std::path::PathBuf, String)> {
    let dir = common::scratch(&format!("shapes-{name}"));
    let path = dir.join(name);
    std::fs::write(&path, xml).unwrap();
    common::xmllint_validate(&common::schema_for(kind), &[path])
}

#[test]
fn every_shape_is_read_written_and_read_back_unchanged() {
    for (name, kind, input) in shapes() {
        assert!(validate(kind, &name, &input).is_empty(), "{name}: the input must be schema-valid");
        let model = parse_lenient(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.rspec_type, kind);
        if kind != RSpecType::Request {
            // Manifests and advertisements are read leniently by `parse` too.
            assert_eq!(parse(&input).as_ref(), Ok(&model), "{name}");
            assert_eq!(parse_bytes(input.as_bytes()).as_ref(), Ok(&model), "{name}");
        }
        let output = model.to_xml();
        if let Err(diff) = common::same_document(&input, &output) {
            panic!("{name}: {diff}\n{output}");
        }
        let failures = validate(kind, &format!("out-{name}"), &output);
        assert!(failures.is_empty(), "{name}: output fails the schema: {failures:?}\n{output}");
        let again = parse_lenient(&output).unwrap();
        assert_eq!(again, model, "{name}");
        assert_eq!(again.to_xml(), output, "{name}");
    }
}

#[test]
fn capacities_with_units_are_kept_and_parsed_on_demand() {
    let r = parse(&shape("ad-orca-units.xml")).unwrap();
    let p = &r.links[0].properties;
    assert_eq!(p[0].capacity.as_deref(), Some("10000000kbps"));
    assert_eq!(p[0].capacity_bps(), Some(10_000_000_000));
    assert_eq!(p[0].latency.as_deref(), Some("0.5ms"));
    assert_eq!(p[0].latency_ms(), Some(0.5));
    assert_eq!(p[1].capacity_bps(), Some(1_000_000_000));
    assert_eq!(p[1].packet_loss.as_deref(), Some("0.0"));
    assert_eq!(p[1].packet_loss_fraction(), Some(0.0));
    let loc = r.nodes[0].location.as_ref().unwrap();
    assert_eq!((loc.latitude.as_deref(), loc.longitude.as_deref()), (Some("52.3667"), Some("4.9000")));
    assert_eq!(loc.longitude_deg(), Some(4.9));

    let r = parse(&shape("ad-ocf-endpoints.xml")).unwrap();
    assert!(r.links.iter().all(|l| l.interface_refs.is_empty()));
    assert_eq!(r.links[0].properties[0].capacity_bps(), Some(1_000_000_000));
    assert_eq!(r.links[1].properties[0].capacity.as_deref(), Some("1024MB/s"));
    assert_eq!(r.links[1].properties[0].capacity_bps(), Some(8_192_000_000));
    assert!(r.validate().is_ok(), "{:?}", r.validate());
}

#[test]
fn manifests_keep_empty_and_unknown_values_as_written() {
    let r = parse(&shape("man-instageni-lenient.xml")).unwrap();
    let ip = &r.nodes[0].interfaces[0].ips[0];
    assert_eq!(ip.netmask.as_deref(), Some(""));
    assert_eq!(ip.mask(), None);
    assert_eq!(ip.addr(), Some("10.10.1.1".parse().unwrap()));
    assert_eq!(ip.extensions.len(), 1);
    assert_eq!(ip.extensions[0].name.local, "alias");
    assert_eq!(r.links[0].vlantag.as_deref(), Some(""));
    assert_eq!(r.links[0].vlan(), None);
    let loc = |i: usize| r.nodes[i].location.clone().unwrap();
    assert_eq!(loc(0).latitude.as_deref(), Some("34.048810"));
    assert_eq!(loc(0).latitude_deg(), Some(34.04881));
    assert_eq!(loc(1).latitude.as_deref(), Some("36.0"));
    assert_eq!(r.nodes[0].services.as_ref().unwrap().logins[0].port_number(), Some(30010));
    // A size that is not written as the model would write it stays text, in ext_attrs.
    let xen = r.nodes[0].sliver_types[0].xen.clone().unwrap();
    assert_eq!((xen.cores, xen.ram, xen.disk), (Some(1), None, Some(8)));
    assert_eq!(xen.ext_attrs[0].value, "0512");
    // The literal newline and tabs of the attribute are spaces, as XML defines them.
    let d = &r.nodes[0].sliver_types[0].disk_images[0];
    assert_eq!(d.description.as_deref(), Some("Debian   7.7 64-bit"));
    assert!(r.to_xml().contains("description=\"Debian   7.7 64-bit\""));

    let r = parse(&shape("man-exogeni-unknown-vlan.xml")).unwrap();
    assert_eq!(r.links[0].vlantag.as_deref(), Some("unknown"));
    assert_eq!(r.links[0].properties[0].capacity_bps(), Some(1_000_000_000));
    // The manifest refers to an interface at another aggregate: not a problem here.
    assert_eq!(r.links[0].interface_refs.len(), 2);
    assert!(r.validate().is_ok(), "{:?}", r.validate());
}

fn messages(xml: &str) -> Vec<(ProblemKind, String)> {
    match parse(xml) {
        Err(Error::Invalid(p)) => p.into_iter().map(|p| (p.kind, p.message)).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn requests_keep_their_strict_rules_and_messages_under_parse() {
    // A Flack request: the AM refuses the empty netmasks as it did, parse_lenient reads them.
    let flack = shape("req-flack.xml");
    let bad_mask = (ProblemKind::BadAddress, "ip netmask: \"\" is not a netmask".to_owned());
    assert_eq!(messages(&flack), vec![bad_mask.clone(), bad_mask]);
    let lenient = parse_lenient(&flack).unwrap();
    assert_eq!(lenient.nodes[0].interfaces[0].ips[0].netmask.as_deref(), Some(""));
    assert_eq!(lenient.nodes[0].interfaces[0].extensions.len(), 1);

    // The advertisement shapes, written as requests.
    let req = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
<node client_id="a"><interface client_id="a:if0"/></node>
<link client_id="l" vlantag="unknown"><interface_ref client_id="a:if0"/><interface_ref client_id="b:if0"/>
<property source_id="a:if0" dest_id="b:if0" capacity="1G" latency="0.5ms" packet_loss="1%"/></link>
<link client_id="m"/>
<node client_id="c"><location country="US" latitude="north" longitude="-118.250000"/>
<services><login authentication="ssh-keys" port="ssh"/></services></node>
</rspec>"#;
    let expected = [
        (ProblemKind::BadNumber, "link vlantag: \"unknown\" is not a non-negative integer"),
        (ProblemKind::DanglingInterfaceRef, "Link \"l\" refers to interface \"b:if0\", which no node declares"),
        (ProblemKind::BadNumber, "property capacity: \"1G\" is not a non-negative integer"),
        (ProblemKind::BadNumber, "property latency: \"0.5ms\" is not a non-negative integer"),
        (ProblemKind::BadNumber, "property packet_loss: \"1%\" is not a decimal number"),
        (ProblemKind::LinkWithoutInterfaces, "Link \"m\" has no interface_ref"),
        (ProblemKind::BadNumber, "location latitude: \"north\" is not a decimal number"),
        (ProblemKind::BadNumber, "login port: \"ssh\" is not a non-negative integer"),
    ];
    let got = messages(req);
    let got: Vec<(ProblemKind, &str)> = got.iter().map(|(k, m)| (*k, m.as_str())).collect();
    assert_eq!(got, expected);
    // Read leniently, every value is kept as written and the document is accepted.
    let r = parse_lenient(req).unwrap();
    assert_eq!(r.links[0].vlantag.as_deref(), Some("unknown"));
    assert_eq!(r.links[0].properties[0].packet_loss_fraction(), Some(0.01));
    assert_eq!(r.nodes[1].services.as_ref().unwrap().logins[0].port.as_deref(), Some("ssh"));
    // The same document as a manifest (with its vlantags) is read by `parse` leniently.
    let man = req
        .replace("type=\"request\"", "type=\"manifest\"")
        .replace("<link client_id=\"m\"/>", "<link client_id=\"m\" vlantag=\"\"/>");
    assert!(parse(&man).is_ok(), "{:?}", parse(&man));
}

#[test]
fn valid_request_values_are_kept_as_written_too() {
    let req = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
<node client_id="a"><interface client_id="a:if0"><ip address="10.0.0.1" netmask=" 024 "><x:e xmlns:x="urn:x"/></ip></interface>
<location country="US" latitude="36.0" longitude="-78.90"/></node>
<link client_id="l"><interface_ref client_id="a:if0"/><property source_id="a:if0" dest_id="a:if0" capacity="0100000"/></link>
</rspec>"#;
    let r = parse(req).unwrap();
    let ip = &r.nodes[0].interfaces[0].ips[0];
    assert_eq!(ip.netmask.as_deref(), Some(" 024 "));
    assert_eq!(ip.mask(), Some(Netmask::PrefixLen(24)));
    assert_eq!(ip.extensions.len(), 1, "an extension inside <ip> is kept");
    assert_eq!(r.links[0].properties[0].capacity_bps(), Some(100_000_000));
    common::same_document(req, &r.to_xml()).unwrap();
}

#[test]
fn attribute_values_are_normalised_as_xml_defines() {
    let xml = "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\">\n\
               <node client_id=\"a\"><sliver_type name=\"x\"><disk_image name=\"i\" description=\"one\r\ntwo\rthree\n\tfour &#10;five&#9;six &amp;\"/></sliver_type></node></rspec>";
    let r = parse(xml).unwrap();
    let d = &r.nodes[0].sliver_types[0].disk_images[0];
    // Literal line ends and tabs are spaces (CR LF is one line end); references are kept.
    assert_eq!(d.description.as_deref(), Some("one two three  four \nfive\tsix &"));
    let out = r.to_xml();
    common::same_document(xml, &out).unwrap();
    assert_eq!(parse(&out).unwrap(), r);
    // The same in extension attributes, namespace declarations and the parallel reader.
    let ext = "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"request\"><x:e xmlns:x=\"urn:x\" x:a=\"1\n2\"/><node client_id=\"b\tc\"/></rspec>";
    let r = parse(ext).unwrap();
    assert_eq!(r.extensions[0].attrs[0].value, "1 2");
    assert_eq!(r.nodes[0].client_id.as_deref(), Some("b c"));
    assert_eq!(parse_split(ext, 2, 0).0, Ok(r));
}

#[test]
fn text_line_ends_are_normalised_and_carriage_returns_written_as_references() {
    let xml = "<rspec xmlns=\"http://www.geni.net/resources/rspec/3\" type=\"manifest\">\r\n\
               <x:e xmlns:x=\"urn:x\">one\r\ntwo\rthree&#13;four<![CDATA[five\r\nsix]]></x:e></rspec>";
    let r = parse(xml).unwrap();
    assert_eq!(r.extensions[0].text(), "one\ntwo\nthree\rfourfive\nsix");
    let out = r.to_xml();
    assert!(out.contains("three&#13;four"), "{out}");
    assert_eq!(parse(&out).unwrap(), r);
    common::same_document(xml, &out).unwrap();
}

#[test]
fn bytes_are_read_as_utf8_and_bad_bytes_are_reported_with_their_offset() {
    let xml = shape("req-flack.xml");
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(xml.as_bytes());
    assert_eq!(parse_bytes_lenient(&bom), parse_lenient(&xml));
    assert_eq!(parse_bytes(xml.as_bytes()), parse(&xml));

    let mut bad = xml.clone().into_bytes();
    let at = xml.find("Flack\"").unwrap();
    bad[at + 1] = 0xFF;
    let line = xml[..at].matches('\n').count() + 1;
    let column = xml[..at + 1].rsplit('\n').next().unwrap().chars().count() + 1;
    match parse_bytes(&bad) {
        Err(Error::InvalidUtf8 { offset, position }) => {
            assert_eq!(offset, at + 1);
            assert_eq!(position, Position { line, column });
        }
        other => panic!("{other:?}"),
    }
    // A character cut short at the end, and an offset counted past a byte-order mark.
    let mut cut = b"\xEF\xBB\xBF<rspec/>".to_vec();
    cut.extend_from_slice("\u{e9}".as_bytes().split_last().unwrap().1);
    assert!(matches!(parse_bytes(&cut), Err(Error::InvalidUtf8 { offset: 11, .. })), "{:?}", parse_bytes(&cut));
    let msg = parse_bytes(&cut).unwrap_err().to_string();
    assert!(msg.contains("Invalid UTF-8 at byte offset 11"), "{msg}");
    // The size cap comes first.
    let huge = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert!(matches!(parse_bytes(&huge), Err(Error::TooLarge { .. })));
}

/// The corpus too: every document, read leniently and written back, is the same document to
/// roxmltree, and its output validates whenever the input does.
#[test]
fn every_corpus_document_is_given_back_as_it_was_read() {
    let mut valid_in = Vec::new();
    for (name, input) in common::corpus() {
        let model = parse_lenient(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let output = model.to_xml();
        if let Err(diff) = common::same_document(&input, &output) {
            panic!("{name}: {diff}\n{output}");
        }
        assert_eq!(parse_lenient(&output).as_ref(), Ok(&model), "{name}");
        valid_in.push((name, model.rspec_type, input, output));
    }
    let mut checked = 0;
    for (name, kind, input, output) in valid_in {
        if validate(kind, &name, &input).is_empty() {
            let failures = validate(kind, &format!("out-{name}"), &output);
            assert!(failures.is_empty(), "{name}: valid input, invalid output: {failures:?}");
            checked += 1;
        }
    }
    // Most of the corpus is schema-valid (29 of 34 documents when this was written).
    assert!(checked >= 25, "only {checked} corpus documents validate");
}
