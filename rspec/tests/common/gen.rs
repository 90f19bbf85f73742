//! Deterministic generator of a large InstaGENI-style advertisement, shared by the tests and
//! the throughput bench.

use vnsnap_rspec::*;

/// An advertisement with `nodes` physical nodes (two interfaces each, three sliver types,
/// location, emulab extension elements) and one link per pair of consecutive nodes, plus the
/// standard opstate block.
pub fn big_advertisement(nodes: usize) -> RSpec {
    let cm = "urn:publicid:IDN+big.example.org+authority+cm";
    let mut r = RSpec::new(RSpecType::Advertisement);
    r.generated = Some("2026-11-25T12:00:00Z".into());
    r.expires = Some("2026-11-25T12:00:00Z".into());
    r.generated_by = Some("vnsnap-rspec bench generator".into());
    for i in 0..nodes {
        let name = format!("pc{i}");
        let node_urn = format!("urn:publicid:IDN+big.example.org+node+{name}");
        let mut n = Node {
            component_id: Some(node_urn.clone().into()),
            component_manager_id: Some(cm.into()),
            component_name: Some(name.clone().into()),
            exclusive: Some(i % 3 == 0),
            ..Node::default()
        };
        n.hardware_types.push(HardwareType {
            name: "d430".into(),
            extensions: vec![emulab_el("node_type", &[("type_slots", "1")])],
            ext_attrs: vec![],
        });
        for (st, img) in
            [("raw-pc", "UBUNTU22-64-STD"), ("emulab-xen", "UBUNTU22-64-STD"), ("emulab-docker", "docker-ubuntu22-std")]
        {
            n.sliver_types.push(SliverType {
                name: st.into(),
                disk_images: vec![DiskImage {
                    name: format!("urn:publicid:IDN+big.example.org+image+emulab-ops:{img}").into(),
                    os: Some("Linux".into()),
                    version: Some("22.04".into()),
                    description: Some(format!("Standard {img} image").into()),
                    default: Some("true".into()),
                    ..DiskImage::default()
                }],
                ..SliverType::default()
            });
        }
        for eth in 0..2 {
            n.interfaces.push(Interface {
                component_id: Some(format!("urn:publicid:IDN+big.example.org+interface+{name}:eth{eth}").into()),
                ext_attrs: vec![
                    XmlAttr::new(QName::local("component_name"), format!("eth{eth}")),
                    XmlAttr::new(QName::local("role"), if eth == 0 { "control" } else { "experimental" }),
                ],
                ..Interface::default()
            });
        }
        n.available = Some(Available { now: i % 7 != 0, ..Available::default() });
        n.location = Some(Location {
            country: "US".into(),
            latitude: Some("40.768652".into()),
            longitude: Some("-111.84581".into()),
            ..Location::default()
        });
        n.extensions.push(emulab_el("trivial_bandwidth", &[("value", "100000")]));
        r.nodes.push(n);
    }
    for i in 1..nodes {
        let a = format!("urn:publicid:IDN+big.example.org+interface+pc{}:eth1", i - 1);
        let b = format!("urn:publicid:IDN+big.example.org+interface+pc{i}:eth1");
        r.links.push(Link {
            component_id: Some(format!("urn:publicid:IDN+big.example.org+link+link{i}").into()),
            component_name: Some(format!("link{i}").into()),
            component_managers: vec![cm.into()],
            interface_refs: vec![
                InterfaceRef { component_id: Some(a.clone().into()), ..InterfaceRef::default() },
                InterfaceRef { component_id: Some(b.clone().into()), ..InterfaceRef::default() },
            ],
            link_types: vec![LinkType { name: "ethernet".into(), ..LinkType::default() }],
            properties: vec![LinkProperty {
                source_id: a.into(),
                dest_id: b.into(),
                capacity: Some("1000000".into()),
                latency: Some("0".into()),
                packet_loss: Some("0".into()),
                ..LinkProperty::default()
            }],
            ..Link::default()
        });
    }
    r.opstates.push(standard_opstate(cm));
    r
}

fn emulab_el(local: &str, attrs: &[(&str, &str)]) -> XmlElement {
    let mut e = XmlElement::new(QName::new(EMULAB_NS, local));
    for (k, v) in attrs {
        e.attrs.push(XmlAttr::new(QName::local(k), *v));
    }
    e
}

/// The InstaGENI opstate machine (GENI-AM-API.md section 5.1).
pub fn standard_opstate(am: &str) -> Opstate {
    let action = |name: &str, next: &str| OpstateAction { name: name.into(), next: next.into(), description: None };
    let wait = |t: &str, next: &str| OpstateWait { wait_type: Some(t.into()), next: next.into(), description: None };
    let state = |name: &str, actions: Vec<OpstateAction>, waits: Vec<OpstateWait>| OpstateState {
        name: name.into(),
        description: None,
        actions,
        waits,
    };
    Opstate {
        aggregate_manager_id: am.into(),
        start: "geni_notready".into(),
        sliver_types: vec!["raw-pc".into(), "emulab-xen".into()],
        states: vec![
            state("geni_notready", vec![action("geni_start", "geni_configuring")], vec![]),
            state(
                "geni_configuring",
                vec![],
                vec![wait("geni_success", "geni_ready"), wait("geni_failure", "geni_failed")],
            ),
            state(
                "geni_ready",
                vec![action("geni_restart", "geni_configuring"), action("geni_stop", "geni_stopping")],
                vec![],
            ),
            state(
                "geni_stopping",
                vec![],
                vec![wait("geni_success", "geni_notready"), wait("geni_failure", "geni_failed")],
            ),
            state("geni_failed", vec![], vec![]),
        ],
    }
}
