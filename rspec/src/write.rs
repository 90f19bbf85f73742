//! The writer: the model to indented XML through quick-xml's `Writer`.
//!
//! Namespaces are all declared on the root, as geni-lib and ProtoGENI do: the GENI v3
//! namespace is the default, known extensions get their conventional prefixes (`emulab`,
//! `user`, `opstate`, `stitch`, ...) and any other namespace found in kept extensions gets
//! `ns1`, `ns2`, ... The root also carries `xsi:schemaLocation` for the core schema of the
//! document kind and for each known extension in use.

use std::borrow::Cow;
use std::collections::BTreeSet;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use smol_str::SmolStr;

use crate::model::*;
use crate::xml::{QName, XmlAttr, XmlChild, XmlElement};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Conventional prefixes for namespaces real tools use.
const KNOWN_PREFIXES: &[(&str, &str)] = &[
    (EMULAB_NS, "emulab"),
    (USER_NS, "user"),
    (OPSTATE_NS, "opstate"),
    (XSI_NS, "xsi"),
    ("http://hpn.east.isi.edu/rspec/ext/stitch/0.1/", "stitch"),
    ("http://www.geni.net/resources/rspec/ext/stitch/2/", "stitch2"),
    ("http://www.geni.net/resources/rspec/ext/shared-vlan/1", "sharedvlan"),
    ("http://www.protogeni.net/resources/rspec/ext/client/1", "client"),
    ("http://www.protogeni.net/resources/rspec/ext/jacks/1", "jacks"),
    ("http://www.protogeni.net/resources/rspec/ext/delay/1", "delay"),
    ("http://www.protogeni.net/resources/rspec/ext/site-info/1", "site_info"),
    // vnsnap-am's snapshot list in manifests (am-plugin/src/manifest.rs).
    ("urn:vnsnap:rspec:ext:snapshot:1", "vnsnap"),
];

/// Every unprefixed attribute name the writer emits from model fields.
const KNOWN_ATTRIBUTES: &[&str] = &[
    "type",
    "generated",
    "generated_by",
    "expires",
    "client_id",
    "component_id",
    "component_manager_id",
    "component_name",
    "exclusive",
    "sliver_id",
    "name",
    "url",
    "os",
    "version",
    "description",
    "default",
    "cores",
    "ram",
    "disk",
    "mac_address",
    "address",
    "netmask",
    "vlantag",
    "class",
    "source_id",
    "dest_id",
    "capacity",
    "latency",
    "packet_loss",
    "authentication",
    "hostname",
    "port",
    "username",
    "install_path",
    "file_type",
    "shell",
    "command",
    "login",
    "user_urn",
    "country",
    "latitude",
    "longitude",
    "now",
];

/// The prefix used for GENI-namespace *attributes*, which the default namespace cannot reach.
const GENI_ATTR_PREFIX: &str = "rspec";

impl RSpec {
    /// Writes the document as indented XML with an XML declaration.
    ///
    /// Output validates against the GENI v3 schema of the document kind plus the emulab
    /// and opstate extensions whenever [`RSpec::validate`] finds no problem and kept
    /// extensions are themselves valid.
    pub fn to_xml(&self) -> String {
        let mut w = Doc::new(self);
        w.rspec(self);
        let mut out = w.w.into_inner();
        out.push(b'\n');
        // The writer only ever receives `&str` content, so the buffer is UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }
}

struct Doc {
    w: Writer<Vec<u8>>,
    /// (namespace, prefix) for every non-default namespace in use.
    prefixes: Vec<(String, String)>,
    geni_attrs: bool,
    kind: RSpecType,
}

/// Escapes an attribute value, including whitespace characters that attribute-value
/// normalisation would otherwise turn into spaces.
fn escape_attr(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | b'\n' | b'\r' | b'\t')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escapes text content; a carriage return is written as `&#13;`, which line-end
/// normalisation would otherwise turn into a newline.
fn text(t: &str) -> BytesText<'_> {
    if !t.contains('\r') {
        return BytesText::new(t);
    }
    BytesText::from_escaped(quick_xml::escape::escape(t).replace('\r', "&#13;"))
}

/// Adds `name="value"` to a start tag.
fn attr(start: &mut BytesStart<'_>, name: &str, value: &str) {
    let v = escape_attr(value);
    start.push_attribute((name.as_bytes(), v.as_bytes()));
}

fn opt<S: AsRef<str>>(start: &mut BytesStart<'_>, name: &str, value: &Option<S>) {
    if let Some(v) = value {
        attr(start, name, v.as_ref());
    }
}

fn opt_num<T: ToString>(start: &mut BytesStart<'_>, name: &str, value: Option<T>) {
    if let Some(v) = value {
        attr(start, name, &v.to_string());
    }
}

/// Collects the namespaces used by extension content, so they can be declared on the root.
fn collect_ns(rspec: &RSpec) -> BTreeSet<SmolStr> {
    let mut set = BTreeSet::new();
    fn attrs(set: &mut BTreeSet<SmolStr>, a: &[XmlAttr]) {
        for x in a {
            if let Some(ns) = &x.name.ns {
                set.insert(ns.clone());
            }
        }
    }
    fn elems(set: &mut BTreeSet<SmolStr>, e: &[XmlElement]) {
        for x in e {
            if let Some(ns) = &x.name.ns {
                if !set.contains(ns) {
                    set.insert(ns.clone());
                }
            }
            attrs(set, &x.attrs);
            for c in &x.children {
                if let XmlChild::Element(c) = c {
                    elems(set, std::slice::from_ref(c));
                }
            }
        }
    }
    let s = &mut set;
    attrs(s, &rspec.ext_attrs);
    elems(s, &rspec.extensions);
    for n in &rspec.nodes {
        attrs(s, &n.ext_attrs);
        elems(s, &n.extensions);
        for t in &n.sliver_types {
            attrs(s, &t.ext_attrs);
            elems(s, &t.extensions);
            if let Some(x) = &t.xen {
                s.insert(SmolStr::new_static(EMULAB_NS));
                attrs(s, &x.ext_attrs);
            }
            for d in &t.disk_images {
                attrs(s, &d.ext_attrs);
                elems(s, &d.extensions);
            }
        }
        for h in &n.hardware_types {
            attrs(s, &h.ext_attrs);
            elems(s, &h.extensions);
        }
        for i in &n.interfaces {
            attrs(s, &i.ext_attrs);
            elems(s, &i.extensions);
            for ip in &i.ips {
                attrs(s, &ip.ext_attrs);
                elems(s, &ip.extensions);
            }
        }
        if let Some(sv) = &n.services {
            attrs(s, &sv.ext_attrs);
            elems(s, &sv.extensions);
            if !sv.users.is_empty() {
                s.insert(SmolStr::new_static(USER_NS));
            }
            for l in &sv.logins {
                attrs(s, &l.ext_attrs);
                elems(s, &l.extensions);
            }
            for x in &sv.installs {
                attrs(s, &x.ext_attrs);
                elems(s, &x.extensions);
            }
            for x in &sv.executes {
                attrs(s, &x.ext_attrs);
                elems(s, &x.extensions);
            }
        }
        if let Some(h) = &n.host {
            attrs(s, &h.ext_attrs);
        }
        if let Some(l) = &n.location {
            attrs(s, &l.ext_attrs);
            elems(s, &l.extensions);
        }
        if let Some(a) = &n.available {
            attrs(s, &a.ext_attrs);
            elems(s, &a.extensions);
        }
    }
    for l in &rspec.links {
        attrs(s, &l.ext_attrs);
        elems(s, &l.extensions);
        for r in &l.interface_refs {
            attrs(s, &r.ext_attrs);
            elems(s, &r.extensions);
        }
        for t in &l.link_types {
            attrs(s, &t.ext_attrs);
            elems(s, &t.extensions);
        }
        for p in &l.properties {
            attrs(s, &p.ext_attrs);
            elems(s, &p.extensions);
        }
    }
    if !rspec.opstates.is_empty() {
        set.insert(SmolStr::new_static(OPSTATE_NS));
    }
    set
}

impl Doc {
    fn new(rspec: &RSpec) -> Doc {
        let mut used = collect_ns(rspec);
        used.insert(SmolStr::new_static(XSI_NS));
        let geni_attrs = used.contains(GENI_V3_NS);
        used.remove(GENI_V3_NS);
        used.remove(XML_NS);
        let mut prefixes: Vec<(String, String)> = Vec::new();
        let mut n = 0;
        for ns in used {
            let prefix = match KNOWN_PREFIXES.iter().find(|(k, _)| *k == ns) {
                Some((_, p)) => (*p).to_owned(),
                None => loop {
                    n += 1;
                    let p = format!("ns{n}");
                    if !KNOWN_PREFIXES.iter().any(|(_, k)| *k == p) {
                        break p;
                    }
                },
            };
            prefixes.push((ns.to_string(), prefix));
        }
        Doc {
            w: Writer::new_with_indent(Vec::with_capacity(4096), b' ', 2),
            prefixes,
            geni_attrs,
            kind: rspec.rspec_type,
        }
    }

    fn prefix(&self, ns: &str) -> &str {
        self.prefixes.iter().find(|(n, _)| n == ns).map(|(_, p)| p.as_str()).unwrap_or("")
    }

    /// The qualified name of an attribute of kept content.
    fn attr_name(&self, name: &QName) -> String {
        match name.ns.as_deref() {
            None => name.local.to_string(),
            Some(XML_NS) => format!("xml:{}", name.local),
            Some(GENI_V3_NS) => format!("{GENI_ATTR_PREFIX}:{}", name.local),
            Some(ns) => format!("{}:{}", self.prefix(ns), name.local),
        }
    }

    /// Writes kept attributes. One whose name is already on the tag (a model built in code
    /// can hold `client_id` both as a field and as an unknown attribute) or earlier in the
    /// list is dropped: a repeated attribute would make the whole document ill-formed.
    fn ext_attrs(&self, start: &mut BytesStart<'_>, list: &[XmlAttr]) {
        // Repeats within the list itself can only come from models built in code; long
        // lists are checked with a set so the writer stays linear.
        let mut seen: std::collections::HashSet<&QName> = std::collections::HashSet::new();
        for (i, a) in list.iter().enumerate() {
            let repeated =
                if list.len() <= 16 { list[..i].iter().any(|b| b.name == a.name) } else { !seen.insert(&a.name) };
            if repeated {
                continue;
            }
            let name = self.attr_name(&a.name);
            // Only a name the writer itself emits can collide (the reader never yields
            // repeated attributes), so the tag is searched for those alone: scanning it for
            // every kept attribute would be quadratic on hostile input.
            let taken = a.name.ns.is_none()
                && KNOWN_ATTRIBUTES.contains(&name.as_str())
                && start.attributes().with_checks(false).flatten().any(|x| x.key.as_ref() == name.as_bytes());
            if !taken {
                attr(start, &name, &a.value);
            }
        }
    }

    // Writing into a Vec<u8> cannot fail, so the io::Result of each event is dropped.
    fn start(&mut self, start: BytesStart<'_>) {
        let _ = self.w.write_event(Event::Start(start));
    }
    fn empty(&mut self, start: BytesStart<'_>) {
        let _ = self.w.write_event(Event::Empty(start));
    }
    fn end(&mut self, name: &str) {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    /// Writes an element that has children (or not) uniformly: `body` is called between the
    /// start and end tag only if `has_children`; otherwise an empty-element tag is written.
    fn element(&mut self, start: BytesStart<'_>, name: &str, has_children: bool, body: impl FnOnce(&mut Self)) {
        if has_children {
            self.start(start);
            body(self);
            self.end(name);
        } else {
            self.empty(start);
        }
    }

    fn rspec(&mut self, r: &RSpec) {
        let _ = self.w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let mut s = BytesStart::new("rspec");
        attr(&mut s, "xmlns", GENI_V3_NS);
        if self.geni_attrs {
            attr(&mut s, &format!("xmlns:{GENI_ATTR_PREFIX}"), GENI_V3_NS);
        }
        for (ns, p) in &self.prefixes {
            attr(&mut s, &format!("xmlns:{p}"), ns);
        }
        let core = match r.rspec_type {
            RSpecType::Request => "request.xsd",
            RSpecType::Manifest => "manifest.xsd",
            RSpecType::Advertisement => "ad.xsd",
        };
        let mut loc = format!("{GENI_V3_NS} {GENI_V3_NS}/{core}");
        let emulab = match r.rspec_type {
            RSpecType::Advertisement => "ptop_extension.xsd",
            _ => "vtop_extension.xsd",
        };
        let declared = |ns: &str| self.prefixes.iter().any(|(n, _)| n == ns);
        if declared(EMULAB_NS) {
            loc.push_str(&format!(" {EMULAB_NS} {EMULAB_NS}/{emulab}"));
        }
        if declared(USER_NS) {
            loc.push_str(&format!(" {USER_NS} {USER_NS}/manifest.xsd"));
        }
        if declared(OPSTATE_NS) {
            loc.push_str(&format!(" {OPSTATE_NS} {OPSTATE_NS}/ad.xsd"));
        }
        for (ns, url) in &r.extra_schema_locations {
            loc.push(' ');
            loc.push_str(ns);
            loc.push(' ');
            loc.push_str(url);
        }
        attr(&mut s, "xsi:schemaLocation", &loc);
        attr(&mut s, "type", r.rspec_type.as_str());
        opt(&mut s, "generated", &r.generated);
        opt(&mut s, "generated_by", &r.generated_by);
        opt(&mut s, "expires", &r.expires);
        self.ext_attrs(&mut s, &r.ext_attrs);
        let has = !(r.nodes.is_empty() && r.links.is_empty() && r.opstates.is_empty() && r.extensions.is_empty());
        self.element(s, "rspec", has, |d| {
            for n in &r.nodes {
                d.node(n);
            }
            for l in &r.links {
                d.link(l);
            }
            for o in &r.opstates {
                d.opstate(o);
            }
            d.extensions(&r.extensions);
        });
    }

    fn extensions(&mut self, list: &[XmlElement]) {
        for e in list {
            self.ext(e, Some(GENI_V3_NS));
        }
    }

    /// Writes kept content. `default` is the default namespace in scope, which decides
    /// whether an unprefixed name needs an `xmlns` re-declaration.
    fn ext(&mut self, e: &XmlElement, default: Option<&str>) {
        let ns = e.name.ns.as_deref();
        let mut new_default = default;
        let (name, redeclare) = match ns {
            None => {
                new_default = None;
                (e.name.local.to_string(), default.is_some())
            }
            Some(GENI_V3_NS) => {
                new_default = Some(GENI_V3_NS);
                (e.name.local.to_string(), default != Some(GENI_V3_NS))
            }
            Some(XML_NS) => (format!("xml:{}", e.name.local), false),
            Some(other) => (format!("{}:{}", self.prefix(other), e.name.local), false),
        };
        let mut s = BytesStart::new(name.as_str());
        if redeclare {
            attr(&mut s, "xmlns", new_default.unwrap_or(""));
        }
        self.ext_attrs(&mut s, &e.attrs);
        if e.children.is_empty() {
            self.empty(s);
            return;
        }
        self.start(s);
        for c in &e.children {
            match c {
                XmlChild::Element(c) => self.ext(c, new_default),
                XmlChild::Text(t) => {
                    let _ = self.w.write_event(Event::Text(text(t)));
                }
            }
        }
        self.end(&name);
    }

    fn text_element(&mut self, name: &str, text: &str) {
        self.start(BytesStart::new(name));
        let _ = self.w.write_event(Event::Text(self::text(text)));
        self.end(name);
    }

    fn node(&mut self, n: &Node) {
        let mut s = BytesStart::new("node");
        opt(&mut s, "client_id", &n.client_id);
        opt(&mut s, "component_id", &n.component_id);
        opt(&mut s, "component_manager_id", &n.component_manager_id);
        opt(&mut s, "component_name", &n.component_name);
        if let Some(x) = n.exclusive {
            attr(&mut s, "exclusive", if x { "true" } else { "false" });
        }
        opt(&mut s, "sliver_id", &n.sliver_id);
        self.ext_attrs(&mut s, &n.ext_attrs);
        let has = !(n.sliver_types.is_empty()
            && n.hardware_types.is_empty()
            && n.interfaces.is_empty()
            && n.services.is_none()
            && n.host.is_none()
            && n.location.is_none()
            && n.available.is_none()
            && n.extensions.is_empty());
        self.element(s, "node", has, |d| {
            for t in &n.sliver_types {
                d.sliver_type(t);
            }
            for h in &n.hardware_types {
                let mut s = BytesStart::new("hardware_type");
                attr(&mut s, "name", &h.name);
                d.ext_attrs(&mut s, &h.ext_attrs);
                d.element(s, "hardware_type", !h.extensions.is_empty(), |d| d.extensions(&h.extensions));
            }
            for i in &n.interfaces {
                d.interface(i);
            }
            if let Some(sv) = &n.services {
                d.services(sv, d.kind == RSpecType::Advertisement);
            }
            if let Some(h) = &n.host {
                let mut s = BytesStart::new("host");
                attr(&mut s, "name", &h.name);
                d.ext_attrs(&mut s, &h.ext_attrs);
                d.empty(s);
            }
            if let Some(l) = &n.location {
                let mut s = BytesStart::new("location");
                attr(&mut s, "country", &l.country);
                opt(&mut s, "latitude", &l.latitude);
                opt(&mut s, "longitude", &l.longitude);
                d.ext_attrs(&mut s, &l.ext_attrs);
                d.element(s, "location", !l.extensions.is_empty(), |d| d.extensions(&l.extensions));
            }
            if let Some(a) = &n.available {
                let mut s = BytesStart::new("available");
                attr(&mut s, "now", if a.now { "true" } else { "false" });
                d.ext_attrs(&mut s, &a.ext_attrs);
                d.element(s, "available", !a.extensions.is_empty(), |d| d.extensions(&a.extensions));
            }
            d.extensions(&n.extensions);
        });
    }

    fn sliver_type(&mut self, t: &SliverType) {
        let mut s = BytesStart::new("sliver_type");
        attr(&mut s, "name", &t.name);
        self.ext_attrs(&mut s, &t.ext_attrs);
        let has = !(t.disk_images.is_empty() && t.xen.is_none() && t.extensions.is_empty());
        self.element(s, "sliver_type", has, |d| {
            for i in &t.disk_images {
                let mut s = BytesStart::new("disk_image");
                attr(&mut s, "name", &i.name);
                opt(&mut s, "url", &i.url);
                opt(&mut s, "os", &i.os);
                opt(&mut s, "version", &i.version);
                opt(&mut s, "description", &i.description);
                opt(&mut s, "default", &i.default);
                d.ext_attrs(&mut s, &i.ext_attrs);
                d.element(s, "disk_image", !i.extensions.is_empty(), |d| d.extensions(&i.extensions));
            }
            if let Some(x) = &t.xen {
                let name = format!("{}:xen", d.prefix(EMULAB_NS));
                let mut s = BytesStart::new(name.as_str());
                opt_num(&mut s, "cores", x.cores);
                opt_num(&mut s, "ram", x.ram);
                opt_num(&mut s, "disk", x.disk);
                d.ext_attrs(&mut s, &x.ext_attrs);
                d.empty(s);
            }
            d.extensions(&t.extensions);
        });
    }

    fn interface(&mut self, i: &Interface) {
        let mut s = BytesStart::new("interface");
        opt(&mut s, "client_id", &i.client_id);
        opt(&mut s, "component_id", &i.component_id);
        opt(&mut s, "sliver_id", &i.sliver_id);
        opt(&mut s, "mac_address", &i.mac_address);
        self.ext_attrs(&mut s, &i.ext_attrs);
        let has = !(i.ips.is_empty() && i.extensions.is_empty());
        self.element(s, "interface", has, |d| {
            for ip in &i.ips {
                let mut s = BytesStart::new("ip");
                attr(&mut s, "address", &ip.address);
                opt(&mut s, "netmask", &ip.netmask);
                opt(&mut s, "type", &ip.ip_type);
                d.ext_attrs(&mut s, &ip.ext_attrs);
                d.element(s, "ip", !ip.extensions.is_empty(), |d| d.extensions(&ip.extensions));
            }
            d.extensions(&i.extensions);
        });
    }

    fn services(&mut self, sv: &Services, ad: bool) {
        let mut s = BytesStart::new("services");
        self.ext_attrs(&mut s, &sv.ext_attrs);
        let has = !(sv.logins.is_empty()
            && sv.installs.is_empty()
            && sv.executes.is_empty()
            && sv.users.is_empty()
            && sv.extensions.is_empty());
        self.element(s, "services", has, |d| {
            // install runs before execute, so write them in that order too.
            for x in &sv.installs {
                let mut s = BytesStart::new("install");
                // The advertisement schema has neither url nor install_path.
                if !(ad && x.url.is_empty()) {
                    attr(&mut s, "url", &x.url);
                }
                if !(ad && x.install_path.is_empty()) {
                    attr(&mut s, "install_path", &x.install_path);
                }
                opt(&mut s, "file_type", &x.file_type);
                d.ext_attrs(&mut s, &x.ext_attrs);
                d.element(s, "install", !x.extensions.is_empty(), |d| d.extensions(&x.extensions));
            }
            for x in &sv.executes {
                let mut s = BytesStart::new("execute");
                attr(&mut s, "shell", &x.shell);
                if !(ad && x.command.is_empty()) {
                    attr(&mut s, "command", &x.command);
                }
                d.ext_attrs(&mut s, &x.ext_attrs);
                d.element(s, "execute", !x.extensions.is_empty(), |d| d.extensions(&x.extensions));
            }
            for l in &sv.logins {
                let mut s = BytesStart::new("login");
                attr(&mut s, "authentication", &l.authentication);
                opt(&mut s, "hostname", &l.hostname);
                opt(&mut s, "port", &l.port);
                opt(&mut s, "username", &l.username);
                d.ext_attrs(&mut s, &l.ext_attrs);
                d.element(s, "login", !l.extensions.is_empty(), |d| d.extensions(&l.extensions));
            }
            for u in &sv.users {
                let p = d.prefix(USER_NS).to_owned();
                let name = format!("{p}:services_user");
                let mut s = BytesStart::new(name.as_str());
                attr(&mut s, "login", &u.login);
                opt(&mut s, "user_urn", &u.user_urn);
                let key = format!("{p}:public_key");
                d.element(s, &name, !u.public_keys.is_empty(), |d| {
                    for k in &u.public_keys {
                        d.text_element(&key, k);
                    }
                });
            }
            d.extensions(&sv.extensions);
        });
    }

    fn link(&mut self, l: &Link) {
        let mut s = BytesStart::new("link");
        opt(&mut s, "client_id", &l.client_id);
        opt(&mut s, "component_id", &l.component_id);
        opt(&mut s, "component_name", &l.component_name);
        opt(&mut s, "sliver_id", &l.sliver_id);
        opt(&mut s, "vlantag", &l.vlantag);
        self.ext_attrs(&mut s, &l.ext_attrs);
        let has = !(l.component_managers.is_empty()
            && l.interface_refs.is_empty()
            && l.link_types.is_empty()
            && l.properties.is_empty()
            && l.extensions.is_empty());
        self.element(s, "link", has, |d| {
            for m in &l.component_managers {
                let mut s = BytesStart::new("component_manager");
                attr(&mut s, "name", m);
                d.empty(s);
            }
            for r in &l.interface_refs {
                let mut s = BytesStart::new("interface_ref");
                opt(&mut s, "client_id", &r.client_id);
                opt(&mut s, "component_id", &r.component_id);
                opt(&mut s, "sliver_id", &r.sliver_id);
                d.ext_attrs(&mut s, &r.ext_attrs);
                d.element(s, "interface_ref", !r.extensions.is_empty(), |d| d.extensions(&r.extensions));
            }
            for t in &l.link_types {
                let mut s = BytesStart::new("link_type");
                attr(&mut s, "name", &t.name);
                opt(&mut s, "class", &t.class);
                d.ext_attrs(&mut s, &t.ext_attrs);
                d.element(s, "link_type", !t.extensions.is_empty(), |d| d.extensions(&t.extensions));
            }
            for p in &l.properties {
                let mut s = BytesStart::new("property");
                attr(&mut s, "source_id", &p.source_id);
                attr(&mut s, "dest_id", &p.dest_id);
                opt(&mut s, "capacity", &p.capacity);
                opt(&mut s, "latency", &p.latency);
                opt(&mut s, "packet_loss", &p.packet_loss);
                d.ext_attrs(&mut s, &p.ext_attrs);
                d.element(s, "property", !p.extensions.is_empty(), |d| d.extensions(&p.extensions));
            }
            d.extensions(&l.extensions);
        });
    }

    fn opstate(&mut self, o: &Opstate) {
        let p = self.prefix(OPSTATE_NS).to_owned();
        let n = |local: &str| format!("{p}:{local}");
        let root = n("rspec_opstate");
        let mut s = BytesStart::new(root.as_str());
        attr(&mut s, "aggregate_manager_id", &o.aggregate_manager_id);
        attr(&mut s, "start", &o.start);
        let has = !(o.sliver_types.is_empty() && o.states.is_empty());
        self.element(s, &root, has, |d| {
            for t in &o.sliver_types {
                let name = n("sliver_type");
                let mut s = BytesStart::new(name.as_str());
                attr(&mut s, "name", t);
                d.empty(s);
            }
            for st in &o.states {
                let name = n("state");
                let mut s = BytesStart::new(name.as_str());
                attr(&mut s, "name", &st.name);
                let has = !(st.description.is_none() && st.actions.is_empty() && st.waits.is_empty());
                d.element(s, &name, has, |d| {
                    for a in &st.actions {
                        let name = n("action");
                        let mut s = BytesStart::new(name.as_str());
                        attr(&mut s, "name", &a.name);
                        attr(&mut s, "next", &a.next);
                        d.element(s, &name, a.description.is_some(), |d| {
                            if let Some(t) = &a.description {
                                d.text_element(&n("description"), t);
                            }
                        });
                    }
                    for w in &st.waits {
                        let name = n("wait");
                        let mut s = BytesStart::new(name.as_str());
                        opt(&mut s, "type", &w.wait_type);
                        attr(&mut s, "next", &w.next);
                        d.element(s, &name, w.description.is_some(), |d| {
                            if let Some(t) = &w.description {
                                d.text_element(&n("description"), t);
                            }
                        });
                    }
                    if let Some(t) = &st.description {
                        d.text_element(&n("description"), t);
                    }
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    #[test]
    fn unknown_attribute_repeating_a_known_one_is_not_written_twice() {
        let mut r = RSpec::new(RSpecType::Request);
        r.nodes.push(Node {
            client_id: Some("a".into()),
            sliver_types: vec![SliverType { name: "x".into(), ..SliverType::default() }],
            ext_attrs: vec![
                XmlAttr::new(QName::local("client_id"), "b"),
                XmlAttr::new(QName::new("urn:x", "k"), "1"),
                XmlAttr::new(QName::new("urn:x", "k"), "2"),
            ],
            ..Node::default()
        });
        let back = parse(&r.to_xml()).unwrap();
        assert_eq!(back.nodes[0].client_id.as_deref(), Some("a"));
        assert_eq!(back.nodes[0].ext_attrs, vec![XmlAttr::new(QName::new("urn:x", "k"), "1")]);
    }

    #[test]
    fn writes_schema_locations_for_the_extensions_in_use() {
        let mut r = RSpec::new(RSpecType::Manifest);
        r.extra_schema_locations.push(("urn:s".into(), "http://example.org/s.xsd".into()));
        let plain = r.to_xml();
        assert!(plain.contains("http://www.geni.net/resources/rspec/3/manifest.xsd"));
        assert!(!plain.contains("vtop_extension.xsd"));
        assert!(plain.contains("urn:s http://example.org/s.xsd"));
        r.nodes.push(Node {
            client_id: Some("a".into()),
            sliver_types: vec![SliverType {
                name: "emulab-xen".into(),
                xen: Some(EmulabXen { cores: Some(2), ..EmulabXen::default() }),
                ..SliverType::default()
            }],
            ..Node::default()
        });
        let xml = r.to_xml();
        assert!(xml.contains("xmlns:emulab=\"http://www.protogeni.net/resources/rspec/ext/emulab/1\""));
        assert!(xml.contains("emulab/1/vtop_extension.xsd"));
        assert!(xml.contains("<emulab:xen cores=\"2\"/>"));
    }
}
