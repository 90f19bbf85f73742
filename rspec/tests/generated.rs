//! Property tests over generated models of all three kinds: what the library writes validates
//! against the real GENI schemas (checked with xmllint), reads back to an equal model, and
//! passes `RSpec::validate`.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use vnsnap_rspec::*;

/// Namespaces for generated foreign extensions. None of them is imported by the driver
/// schemas, so `lax` processing accepts any content in them, as it does in real documents.
const EXT_NS: &[&str] = &[
    "urn:example:ext-a",
    "http://example.org/rspec/ext/b/1",
    "http://www.protogeni.net/resources/rspec/ext/jacks/1",
    "http://hpn.east.isi.edu/rspec/ext/stitch/0.1/",
];

fn ncname() -> impl Strategy<Value = String> {
    "[a-z][a-zA-Z0-9_]{0,7}"
}

/// Attribute values: any printable text including markup characters and whitespace.
fn value() -> impl Strategy<Value = SmolStr> {
    "[ -~\u{e9}\u{263a}\t\n]{0,14}".prop_map(SmolStr::from)
}

/// Text that is not whitespace-only (whitespace-only text is indentation to the reader).
fn text() -> impl Strategy<Value = String> {
    "[!-~\u{e9}][ -~\u{e9}]{0,14}"
}

/// Trimmed text, for elements whose text the reader trims (keys, descriptions).
fn trimmed() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,20}[!-~])?"
}

fn urn(kind: &'static str) -> impl Strategy<Value = SmolStr> {
    "[a-z]{2,8}".prop_map(move |s| format!("urn:publicid:IDN+{s}.example.org+{kind}+{s}").into())
}

fn datetime() -> impl Strategy<Value = SmolStr> {
    (2000u32..2100, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, prop::bool::ANY).prop_map(|(y, mo, d, h, mi, z)| {
        let tz = if z { "Z" } else { "+00:00" };
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:07{tz}").into()
    })
}

fn ext_attrs() -> impl Strategy<Value = Vec<XmlAttr>> {
    prop::collection::vec((0..EXT_NS.len(), ncname(), value()), 0..3).prop_map(|v| {
        let mut out: Vec<XmlAttr> = Vec::new();
        for (ns, local, val) in v {
            let name = QName::new(EXT_NS[ns], &local);
            if !out.iter().any(|a| a.name == name) {
                out.push(XmlAttr::new(name, val));
            }
        }
        out
    })
}

fn ext_element() -> impl Strategy<Value = XmlElement> {
    let leaf =
        (0..EXT_NS.len(), ncname(), ext_attrs(), prop::option::of(text())).prop_map(|(ns, local, attrs, text)| {
            XmlElement {
                name: QName::new(EXT_NS[ns], &local),
                attrs,
                children: text.into_iter().map(XmlChild::Text).collect(),
            }
        });
    leaf.prop_recursive(2, 8, 3, |inner| {
        (0..EXT_NS.len(), ncname(), ext_attrs(), prop::option::of(text()), prop::collection::vec(inner, 1..3)).prop_map(
            |(ns, local, attrs, text, kids)| {
                // Mixed content: optional leading text, then elements.
                let mut children: Vec<XmlChild> = text.into_iter().map(XmlChild::Text).collect();
                children.extend(kids.into_iter().map(XmlChild::Element));
                XmlElement { name: QName::new(EXT_NS[ns], &local), attrs, children }
            },
        )
    })
}

fn exts() -> impl Strategy<Value = Vec<XmlElement>> {
    prop::collection::vec(ext_element(), 0..2)
}

/// A value the schemas leave untyped: as the model's parser expects it (`typed`), or, when
/// `free`, sometimes any string at all (what real tools put there varies).
fn untyped(typed: BoxedStrategy<SmolStr>, free: bool) -> BoxedStrategy<SmolStr> {
    if free {
        prop_oneof![typed, value()].boxed()
    } else {
        typed
    }
}

/// A number's usual text.
fn num<T: std::fmt::Display + std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<SmolStr> {
    s.prop_map(|v| SmolStr::from(v.to_string())).boxed()
}

/// A value that must not read back as a number (kept among `ext_attrs` when read leniently).
fn not_canonical_number() -> impl Strategy<Value = SmolStr> {
    value().prop_filter("a canonical number", |s| s.parse::<u64>().map_or(true, |v| v.to_string() != s.as_str()))
}

fn ip(free: bool) -> impl Strategy<Value = Ip> {
    let typed = prop_oneof![
        (any::<u32>(), 0u8..=32, prop::bool::ANY).prop_map(|(a, len, dotted)| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let netmask = if dotted { Netmask::Dotted(Ipv4Addr::from(mask)) } else { Netmask::PrefixLen(len) };
            Ip { ip_type: Some("ipv4".into()), ..Ip::new(IpAddr::V4(Ipv4Addr::from(a)), Some(netmask)) }
        }),
        (any::<u128>(), prop::option::of(0u8..=128), ext_attrs(), exts()).prop_map(
            |(a, len, ext_attrs, extensions)| {
                Ip {
                    ip_type: Some("ipv6".into()),
                    ext_attrs,
                    extensions,
                    ..Ip::new(IpAddr::V6(Ipv6Addr::from(a)), len.map(Netmask::PrefixLen))
                }
            }
        ),
    ];
    let any_text = (value(), prop::option::of(value()), prop::option::of(value()), ext_attrs(), exts()).prop_map(
        |(address, netmask, ip_type, ext_attrs, extensions)| Ip { address, netmask, ip_type, extensions, ext_attrs },
    );
    if free {
        prop_oneof![typed, any_text].boxed()
    } else {
        typed.boxed()
    }
}

fn disk_image(ad: bool) -> impl Strategy<Value = DiskImage> {
    (
        urn("image"),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(prop::bool::ANY),
        ext_attrs(),
        exts(),
    )
        .prop_map(move |(name, url, os, version, description, default, ext_attrs, extensions)| {
            DiskImage {
                name,
                url,
                os,
                version,
                description,
                // `default` exists only in the advertisement schema.
                default: if ad { default.map(|d| d.to_string().into()) } else { None },
                extensions,
                ext_attrs,
            }
        })
}

fn sliver_type(kind: RSpecType, free: bool) -> impl Strategy<Value = SliverType> {
    let ad = kind == RSpecType::Advertisement;
    (
        prop_oneof![Just("emulab-xen"), Just("raw-pc"), Just("default-vm"), Just("XOSmall")],
        prop::collection::vec(disk_image(ad), 0..2),
        prop::option::of((
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
        )),
        ext_attrs(),
        exts(),
        prop::collection::vec((0..3usize, not_canonical_number()), 0..3),
    )
        .prop_map(move |(name, disk_images, xen, ext_attrs, extensions, odd)| SliverType {
            name: name.into(),
            disk_images,
            // The emulab advertisement schema declares no `xen`; VM sizes are request and
            // manifest settings.
            xen: if ad {
                None
            } else {
                xen.map(|(cores, ram, disk)| {
                    let mut x = EmulabXen { cores, ram, disk, ext_attrs: vec![] };
                    // Sizes that are not numbers live in ext_attrs, as the lenient reader
                    // keeps them.
                    for (which, text) in odd.into_iter().filter(|_| free) {
                        let name = ["cores", "ram", "disk"][which];
                        if !x.ext_attrs.iter().any(|a| a.name.local == name) {
                            match which {
                                0 => x.cores = None,
                                1 => x.ram = None,
                                _ => x.disk = None,
                            }
                            x.ext_attrs.push(XmlAttr::new(QName::local(name), text));
                        }
                    }
                    x
                })
            },
            extensions,
            ext_attrs,
        })
}

fn services(kind: RSpecType, free: bool) -> impl Strategy<Value = Services> {
    let login = (
        prop::option::of(value()),
        prop::option::of(untyped(num(any::<u16>()), free)),
        prop::option::of("[a-z]{1,8}"),
        ext_attrs(),
        exts(),
    )
        .prop_map(move |(hostname, port, username, ext_attrs, extensions)| Login {
            authentication: "ssh-keys".into(),
            hostname,
            port,
            // Only the manifest schema has `username`.
            username: if kind == RSpecType::Manifest { username.map(Into::into) } else { None },
            extensions,
            ext_attrs,
        });
    let install = (value(), value(), prop::option::of(value()), ext_attrs()).prop_map(
        move |(url, install_path, file_type, ext_attrs)| {
            let ad = kind == RSpecType::Advertisement;
            Install {
                // An advertisement install has only file_type.
                url: if ad { SmolStr::default() } else { url },
                install_path: if ad { SmolStr::default() } else { install_path },
                file_type: if ad { Some(file_type.unwrap_or_default()) } else { None },
                extensions: vec![],
                ext_attrs,
            }
        },
    );
    let execute =
        (value(), value(), ext_attrs(), exts()).prop_map(move |(shell, command, ext_attrs, extensions)| Execute {
            shell,
            command: if kind == RSpecType::Advertisement { SmolStr::default() } else { command },
            extensions,
            ext_attrs,
        });
    let user = ("[a-z]{1,8}", prop::option::of(urn("user")), prop::collection::vec(trimmed(), 0..3))
        .prop_map(|(login, user_urn, public_keys)| UserKey { login: login.into(), user_urn, public_keys });
    (
        prop::collection::vec(login, 0..3),
        prop::collection::vec(install, 0..2),
        prop::collection::vec(execute, 0..2),
        prop::collection::vec(user, 0..2),
        ext_attrs(),
        exts(),
    )
        .prop_map(move |(logins, installs, executes, users, ext_attrs, extensions)| Services {
            logins,
            installs,
            executes,
            users: if kind == RSpecType::Manifest { users } else { vec![] },
            extensions,
            ext_attrs,
        })
}

/// The parts of a node that do not depend on its index.
fn node(kind: RSpecType, free: bool) -> impl Strategy<Value = Node> {
    let ad = kind == RSpecType::Advertisement;
    (
        (prop::option::of(urn("node")), urn("authority"), prop::option::of("[a-z0-9]{1,8}")),
        prop::option::of(prop::bool::ANY),
        prop::collection::vec(sliver_type(kind, free), if ad { 0..3 } else { 1..2 }),
        prop::collection::vec(("[a-z0-9]{1,6}", ext_attrs(), exts()), 0..2),
        prop::collection::vec(
            (
                prop::collection::vec(ip(free), 0..3),
                prop::option::of("02:[0-9a-f]{2}:00:00:00:01"),
                ext_attrs(),
                exts(),
            ),
            0..3,
        ),
        prop::option::of(services(kind, free)),
        prop::option::of((
            "[A-Z]{2}",
            prop::option::of(untyped(num(-90.0f64..=90.0), free)),
            prop::option::of(untyped(num(-180.0f64..=180.0), free)),
            ext_attrs(),
        )),
        prop::bool::ANY,
        ext_attrs(),
        exts(),
        prop::option::of("[a-z0-9.]{1,20}"),
    )
        .prop_map(
            move |(
                (cid, cm, cname),
                exclusive,
                sliver_types,
                hws,
                ifaces,
                services,
                loc,
                now,
                ext_attrs,
                extensions,
                host,
            )| {
                let mut n = Node {
                    component_id: cid.clone(),
                    component_manager_id: Some(cm),
                    component_name: cname.map(Into::into),
                    exclusive,
                    sliver_types,
                    services,
                    ext_attrs,
                    extensions,
                    ..Node::default()
                };
                if ad {
                    // Required in an advertisement.
                    n.component_id = Some(cid.unwrap_or_else(|| "urn:publicid:IDN+ad.example.org+node+x".into()));
                    n.exclusive = Some(exclusive.unwrap_or(false));
                    n.available = Some(Available { now, ..Available::default() });
                }
                if kind == RSpecType::Manifest {
                    n.host = host.map(|name| Host { name: name.into(), ext_attrs: vec![] });
                }
                n.hardware_types = hws
                    .into_iter()
                    .map(|(name, ext_attrs, extensions)| HardwareType { name: name.into(), extensions, ext_attrs })
                    .collect();
                n.location = loc.map(|(country, latitude, longitude, ext_attrs)| Location {
                    country: country.into(),
                    latitude,
                    longitude,
                    extensions: vec![],
                    ext_attrs,
                });
                n.interfaces = ifaces
                    .into_iter()
                    .map(|(ips, mac, ext_attrs, extensions)| Interface {
                        ips,
                        mac_address: if kind == RSpecType::Manifest { mac.map(Into::into) } else { None },
                        ext_attrs,
                        extensions,
                        ..Interface::default()
                    })
                    .collect();
                n
            },
        )
}

fn link_parts(free: bool) -> impl Strategy<Value = (Link, Vec<Index>)> {
    (
        prop::collection::vec(urn("authority"), 0..3),
        prop::collection::vec(any::<Index>(), 1..4),
        prop::collection::vec(("lan|vlan|gre-tunnel", prop::option::of("[a-z]{1,5}"), ext_attrs()), 0..2),
        prop::collection::vec(
            (
                prop::option::of(untyped(num(any::<u64>()), free)),
                prop::option::of(untyped(num(any::<u64>()), free)),
                prop::option::of(untyped(num(0.0f64..=1.0), free)),
                ext_attrs(),
            ),
            0..3,
        ),
        untyped(num(0u16..=4095), free),
        ext_attrs(),
        exts(),
    )
        .prop_map(|(component_managers, picks, types, props, vlantag, ext_attrs, extensions)| {
            let link = Link {
                component_managers,
                link_types: types
                    .into_iter()
                    .map(|(name, class, ext_attrs)| LinkType {
                        name: name.into(),
                        class: class.map(Into::into),
                        extensions: vec![],
                        ext_attrs,
                    })
                    .collect(),
                properties: props
                    .into_iter()
                    .map(|(capacity, latency, packet_loss, ext_attrs)| LinkProperty {
                        capacity,
                        latency,
                        packet_loss,
                        ext_attrs,
                        ..LinkProperty::default()
                    })
                    .collect(),
                vlantag: Some(vlantag),
                ext_attrs,
                extensions,
                ..Link::default()
            };
            (link, picks)
        })
}

fn opstate() -> impl Strategy<Value = Opstate> {
    let action = ("[a-z_]{1,10}", "[a-z_]{1,10}", prop::option::of(trimmed()))
        .prop_map(|(name, next, description)| OpstateAction { name: name.into(), next: next.into(), description });
    let wait = (prop::option::of("geni_success|geni_failure"), "[a-z_]{1,10}", prop::option::of(trimmed())).prop_map(
        |(wait_type, next, description)| OpstateWait {
            wait_type: wait_type.map(Into::into),
            next: next.into(),
            description,
        },
    );
    let state = (
        "[a-z_]{1,10}",
        prop::option::of(trimmed()),
        prop::collection::vec(action, 0..3),
        prop::collection::vec(wait, 0..3),
    )
        .prop_map(|(name, description, actions, waits)| OpstateState {
            name: name.into(),
            description,
            actions,
            waits,
        });
    (urn("authority"), "[a-z_]{1,10}", prop::collection::vec("[a-z-]{1,10}", 0..3), prop::collection::vec(state, 0..4))
        .prop_map(|(aggregate_manager_id, start, sliver_types, states)| Opstate {
            aggregate_manager_id,
            start: start.into(),
            sliver_types: sliver_types.into_iter().map(Into::into).collect(),
            states,
        })
}

/// A whole document of one kind, with identifiers assigned so the document is valid.
fn rspec(kind: RSpecType) -> impl Strategy<Value = RSpec> {
    rspec_with(kind, false)
}

/// A whole document of one kind; when `free`, attributes the schemas leave untyped (numbers,
/// addresses, netmasks, VLAN tags) may hold any string.
fn rspec_with(kind: RSpecType, free: bool) -> impl Strategy<Value = RSpec> {
    let ad = kind == RSpecType::Advertisement;
    (
        prop::option::of(datetime()),
        prop::option::of(value()),
        prop::option::of(datetime()),
        prop::collection::vec(node(kind, free), 0..5),
        prop::collection::vec(link_parts(free), 0..3),
        prop::collection::vec(opstate(), 0..2),
        ext_attrs(),
        exts(),
    )
        .prop_map(move |(generated, generated_by, expires, mut nodes, links, opstates, ext_attrs, extensions)| {
            let mut iface_ids = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                if !ad {
                    n.client_id = Some(format!("node-{i}").into());
                }
                if kind == RSpecType::Manifest {
                    n.sliver_id = Some(format!("urn:publicid:IDN+am.example.org+sliver+{i}").into());
                }
                for (j, iface) in n.interfaces.iter_mut().enumerate() {
                    let id = format!("node-{i}:if{j}");
                    if ad {
                        iface.component_id = Some(format!("urn:publicid:IDN+am.example.org+interface+{id}").into());
                    } else {
                        iface.client_id = Some(id.clone().into());
                    }
                    if kind == RSpecType::Manifest {
                        iface.sliver_id = Some(format!("urn:publicid:IDN+am.example.org+sliver+{i}-{j}").into());
                    }
                    iface_ids.push(id);
                }
            }
            let mut r = RSpec::new(kind);
            r.generated = generated;
            r.generated_by = generated_by;
            r.expires = expires;
            r.nodes = nodes;
            r.ext_attrs = ext_attrs;
            r.extensions = extensions;
            if ad {
                r.opstates = opstates;
            }
            if !iface_ids.is_empty() {
                for (k, (mut link, picks)) in links.into_iter().enumerate() {
                    for p in picks {
                        let id = p.get(&iface_ids).clone();
                        let mut iref = InterfaceRef::default();
                        if ad {
                            iref.component_id = Some(format!("urn:publicid:IDN+am.example.org+interface+{id}").into());
                        } else {
                            iref.client_id = Some(id.clone().into());
                        }
                        link.interface_refs.push(iref);
                    }
                    for (pi, p) in link.properties.iter_mut().enumerate() {
                        let a = &link.interface_refs[pi % link.interface_refs.len()];
                        let id = a.client_id.clone().or(a.component_id.clone()).unwrap();
                        p.source_id = id.clone();
                        p.dest_id = id;
                    }
                    match kind {
                        RSpecType::Advertisement => {
                            link.component_id = Some(format!("urn:publicid:IDN+am.example.org+link+l{k}").into());
                            link.vlantag = None;
                        }
                        RSpecType::Request => {
                            link.client_id = Some(format!("link-{k}").into());
                            link.vlantag = None;
                        }
                        RSpecType::Manifest => {
                            link.client_id = Some(format!("link-{k}").into());
                            link.sliver_id = Some(format!("urn:publicid:IDN+am.example.org+sliver+l{k}").into());
                        }
                    }
                    r.links.push(link);
                }
            }
            r
        })
}

/// Generates `cases` documents of a kind, checks each reads back equal and passes
/// `validate`, then validates all of them with xmllint in one run.
fn check_kind(kind: RSpecType, cases: usize) {
    let mut runner = TestRunner::new(Config::default());
    let strategy = rspec(kind);
    let dir = common::scratch(&format!("generated-{}", kind.as_str()));
    let mut files = Vec::new();
    for i in 0..cases {
        let model = strategy.new_tree(&mut runner).unwrap().current();
        if let Err(problems) = model.validate() {
            panic!("generated {kind:?} model is invalid: {problems:#?}");
        }
        let xml = model.to_xml();
        let back = parse(&xml).unwrap_or_else(|e| panic!("cannot read own output: {e}\n{xml}"));
        assert_eq!(model, back, "round trip changed the model:\n{xml}");
        let (split, how) = parse_split(&xml, 2 + i % 4, 0);
        assert_eq!(split.as_ref(), Ok(&model), "read in parts ({how:?}):\n{xml}");
        let path = dir.join(format!("{i}.xml"));
        std::fs::write(&path, &xml).unwrap();
        files.push(path);
    }
    let failures = common::xmllint_validate(&common::schema_for(kind), &files);
    if let Some((file, msg)) = failures.first() {
        let doc = std::fs::read_to_string(file).unwrap();
        panic!("{} of {cases} generated {kind:?} documents fail the schema; first: {msg}\n{doc}", failures.len());
    }
}

/// Generates `cases` documents of a kind whose untyped attributes (addresses, netmasks,
/// ports, VLAN tags, capacities, latencies, losses, coordinates, `emulab:xen` sizes) may hold
/// any string: each validates against the schema, reads back leniently to the same model,
/// writes the same text again, and roxmltree sees the same document in both texts.
fn check_kind_free(kind: RSpecType, cases: usize) {
    let mut runner = TestRunner::new(Config::default());
    let strategy = rspec_with(kind, true);
    let dir = common::scratch(&format!("generated-free-{}", kind.as_str()));
    let mut files = Vec::new();
    for i in 0..cases {
        let model = strategy.new_tree(&mut runner).unwrap().current();
        let xml = model.to_xml();
        let back = parse_lenient(&xml).unwrap_or_else(|e| panic!("cannot read own output: {e}\n{xml}"));
        assert_eq!(model, back, "round trip changed the model:\n{xml}");
        let again = back.to_xml();
        assert_eq!(xml, again, "written differently the second time");
        if let Err(diff) = common::same_document(&xml, &again) {
            panic!("{diff}\n{xml}");
        }
        assert_eq!(untyped_in_text(&xml), untyped_in_model(&model), "{xml}");
        if kind != RSpecType::Request {
            assert_eq!(parse(&xml).as_ref(), Ok(&model), "parse reads a {kind:?} leniently:\n{xml}");
        }
        let (split, how) = parse_split_lenient(&xml, 2 + i % 4, 0);
        assert_eq!(split.as_ref(), Ok(&model), "read in parts ({how:?}):\n{xml}");
        let path = dir.join(format!("{i}.xml"));
        std::fs::write(&path, &xml).unwrap();
        files.push(path);
    }
    let failures = common::xmllint_validate(&common::schema_for(kind), &files);
    if let Some((file, msg)) = failures.first() {
        let doc = std::fs::read_to_string(file).unwrap();
        panic!("{} of {cases} generated {kind:?} documents fail the schema; first: {msg}\n{doc}", failures.len());
    }
}

/// The GENI attributes the schemas leave untyped that the model holds as text.
const UNTYPED: &[&str] =
    &["address", "netmask", "port", "vlantag", "capacity", "latency", "packet_loss", "latitude", "longitude"];

/// Those attributes as roxmltree reads them from a document, as sorted (name, value) pairs.
fn untyped_in_text(xml: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let mut seen: Vec<(String, String)> = doc
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(GENI_V3_NS))
        .flat_map(|n| {
            n.attributes()
                .map(|a| (a.namespace().is_none(), a.name().to_owned(), a.value().to_owned()))
                .collect::<Vec<_>>()
        })
        .filter(|(plain, name, _)| *plain && UNTYPED.contains(&name.as_str()))
        .map(|(_, name, value)| (name, value))
        .collect();
    seen.sort();
    seen
}

/// The same attributes as the model holds them.
fn untyped_in_model(r: &RSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut put = |name: &str, v: &Option<SmolStr>| {
        if let Some(v) = v {
            out.push((name.to_owned(), v.to_string()));
        }
    };
    for n in &r.nodes {
        if let Some(l) = &n.location {
            put("latitude", &l.latitude);
            put("longitude", &l.longitude);
        }
        for l in n.services.iter().flat_map(|s| &s.logins) {
            put("port", &l.port);
        }
        for ip in n.interfaces.iter().flat_map(|i| &i.ips) {
            put("address", &Some(ip.address.clone()));
            put("netmask", &ip.netmask);
        }
    }
    for l in &r.links {
        put("vlantag", &l.vlantag);
        for p in &l.properties {
            put("capacity", &p.capacity);
            put("latency", &p.latency);
            put("packet_loss", &p.packet_loss);
        }
    }
    out.sort();
    out
}

#[test]
fn any_untyped_values_round_trip_in_every_kind() {
    for kind in [RSpecType::Request, RSpecType::Manifest, RSpecType::Advertisement] {
        check_kind_free(kind, 150);
    }
}

#[test]
fn generated_requests_validate_against_the_request_schema() {
    check_kind(RSpecType::Request, 150);
}

#[test]
fn generated_manifests_validate_against_the_manifest_schema() {
    check_kind(RSpecType::Manifest, 150);
}

#[test]
fn generated_advertisements_validate_against_the_advertisement_schema() {
    check_kind(RSpecType::Advertisement, 150);
}

#[test]
fn large_generated_advertisement_validates_and_round_trips() {
    let model = common::gen::big_advertisement(500);
    model.validate().unwrap();
    let xml = model.to_xml();
    assert_eq!(parse(&xml).unwrap(), model);
    let dir = common::scratch("large-ad");
    let path = dir.join("big.xml");
    std::fs::write(&path, xml).unwrap();
    let failures = common::xmllint_validate(&common::schema_for(RSpecType::Advertisement), &[path]);
    assert!(failures.is_empty(), "{failures:#?}");
}

proptest! {
    #![proptest_config(Config::with_cases(64))]

    /// Shrinking round-trip property (xmllint-free, so proptest can minimise failures).
    #[test]
    fn any_manifest_round_trips(model in rspec(RSpecType::Manifest)) {
        let xml = model.to_xml();
        prop_assert_eq!(parse(&xml).unwrap(), model);
    }

    #[test]
    fn any_advertisement_round_trips(model in rspec(RSpecType::Advertisement)) {
        let xml = model.to_xml();
        prop_assert_eq!(parse(&xml).unwrap(), model);
    }

    /// Shrinking version of `any_untyped_values_round_trip_in_every_kind` (no xmllint).
    #[test]
    fn any_document_with_free_untyped_values_round_trips(
        model in prop_oneof![
            rspec_with(RSpecType::Request, true),
            rspec_with(RSpecType::Manifest, true),
            rspec_with(RSpecType::Advertisement, true),
        ],
    ) {
        let xml = model.to_xml();
        let back = parse_lenient(&xml).unwrap();
        prop_assert_eq!(&back, &model);
        let again = back.to_xml();
        prop_assert_eq!(&again, &xml);
        prop_assert_eq!(common::same_document(&xml, &again), Ok(()));
    }

    /// Any document of any kind reads the same in parts (forced onto these small documents)
    /// as sequentially; one with children is split.
    #[test]
    fn any_document_reads_the_same_in_parts(
        model in prop_oneof![rspec(RSpecType::Request), rspec(RSpecType::Manifest), rspec(RSpecType::Advertisement)],
        threads in 2usize..6,
    ) {
        let xml = model.to_xml();
        let (split, how) = parse_split(&xml, threads, 0);
        prop_assert_eq!(split, Ok(model.clone()));
        let children = model.nodes.len() + model.links.len() + model.opstates.len() + model.extensions.len();
        prop_assert!(children == 0 || matches!(how, Split::Parallel { .. }), "{:?}", how);
    }
}

/// A control: the harness must notice an invalid document, or the tests above prove nothing.
#[test]
fn schema_check_rejects_a_manifest_link_without_vlantag() {
    let mut r = RSpec::new(RSpecType::Manifest);
    r.nodes.push(Node {
        client_id: Some("a".into()),
        interfaces: vec![Interface { client_id: Some("a:if0".into()), ..Interface::default() }],
        ..Node::default()
    });
    r.links.push(Link {
        client_id: Some("l".into()),
        interface_refs: vec![InterfaceRef { client_id: Some("a:if0".into()), ..InterfaceRef::default() }],
        ..Link::default()
    });
    let problems = r.validate().unwrap_err();
    assert!(problems.iter().any(|p| p.kind == ProblemKind::MissingAttribute && p.message.contains("vlantag")));
    let dir = common::scratch("control");
    let path = dir.join("no-vlantag.xml");
    std::fs::write(&path, r.to_xml()).unwrap();
    let failures = common::xmllint_validate(&common::schema_for(RSpecType::Manifest), &[path]);
    assert_eq!(failures.len(), 1);
    assert!(failures[0].1.contains("vlantag"), "{}", failures[0].1);
}
