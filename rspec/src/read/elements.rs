//! One reading function per element kind of the model.
//!
//! Each function receives the element's start tag, takes the attributes it knows (unknown ones
//! go to `ext_attrs`), then reads children until the end tag; a child it does not model is kept
//! whole in `extensions`. Value problems are recorded and reading goes on, so one pass reports
//! every problem of the document.

use super::values;
use super::{attr_iter, take, Ctx, Next, Ns, Res, Tag};
use crate::error::ProblemKind;
use crate::model::*;
use crate::xml::XmlElement;

/// Parses an attribute value, recording a problem (and yielding `None`) if it is bad. A free
/// function over the problem list, so it can run while an attribute iterator borrows the
/// reader.
fn value<T>(
    problems: &mut Vec<(usize, ProblemKind, String)>,
    offset: usize,
    what: &str,
    raw: &str,
    kind: ProblemKind,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match parse(raw) {
        Ok(v) => Some(v),
        Err(msg) => {
            problems.push((offset, kind, format!("{what}: {msg}")));
            None
        }
    }
}

/// Checks an `xs:dateTime` attribute, recording a problem if it is not one.
fn datetime(
    problems: &mut Vec<(usize, ProblemKind, String)>,
    off: usize,
    what: &str,
    raw: &str,
) -> String {
    if !values::is_datetime(raw.trim()) {
        problems.push((
            off,
            ProblemKind::BadValue,
            format!("{what}: {raw:?} is not an xs:dateTime"),
        ));
    }
    raw.trim().to_owned()
}

impl<'i> Ctx<'i> {
    /// Unwraps a required attribute, recording a problem (and yielding "") if it is absent.
    fn required(&mut self, offset: usize, element: &str, attr: &str, v: Option<String>) -> String {
        v.unwrap_or_else(|| {
            self.problem(
                offset,
                ProblemKind::MissingAttribute,
                format!("<{element}> lacks the required attribute {attr}"),
            );
            String::new()
        })
    }

    /// Reads children of an element that only has extension children.
    fn ext_children(&mut self, tag: &Tag<'i>, out: &mut Vec<XmlElement>) -> Res<()> {
        if tag.empty {
            return Ok(());
        }
        let mark = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    let e = self.ext_element(c)?;
                    self.sc.elements.push(e);
                }
                Next::Text(_) => {}
                Next::End => {
                    *out = take(&mut self.sc.elements, mark);
                    return Ok(());
                }
            }
        }
    }

    /// Reads (and reports) children of an element whose schema allows none.
    fn no_children(&mut self, tag: &Tag<'i>, element: &str) -> Res<()> {
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    self.problem(
                        c.offset,
                        ProblemKind::UnexpectedElement,
                        format!(
                            "<{element}> may not contain <{}>",
                            String::from_utf8_lossy(c.local())
                        ),
                    );
                    self.skip(&c)?;
                }
                Next::Text(_) => {}
                Next::End => return Ok(()),
            }
        }
    }

    pub(super) fn rspec(&mut self, tag: Tag<'i>) -> Res<RSpec> {
        let off = tag.offset;
        let mut r = RSpec::new(RSpecType::Request);
        // Size the two big lists up front from a cheap count of their start tags (an
        // over-estimate at worst; other prefixes just fall back to growing). Growing them
        // step by step made glibc merge its free lists on every large reallocation.
        let count = |tag: &str| memchr::memmem::find_iter(self.input.as_bytes(), tag).count();
        r.nodes.reserve_exact(count("<node "));
        r.links.reserve_exact(count("<link "));
        self.offsets.nodes.reserve_exact(r.nodes.capacity());
        self.offsets
            .node_first_interface
            .reserve_exact(r.nodes.capacity());
        self.offsets.links.reserve_exact(r.links.capacity());
        self.offsets
            .link_first_ref
            .reserve_exact(r.links.capacity());
        let mut rtype = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match (&a.ns, a.local) {
                (Ns::None, "type") => {
                    rtype = Some(value(
                        &mut self.problems,
                        off,
                        "rspec type",
                        &a.value,
                        ProblemKind::BadValue,
                        |s| {
                            RSpecType::from_attr(s.trim()).ok_or_else(|| {
                                format!("{s:?} is not request, manifest or advertisement")
                            })
                        },
                    ));
                }
                (Ns::None, "generated") => {
                    r.generated = Some(datetime(&mut self.problems, off, "generated", &a.value))
                }
                (Ns::None, "generated_by") => r.generated_by = Some(a.value.into_owned()),
                (Ns::None, "expires") => {
                    r.expires = Some(datetime(&mut self.problems, off, "expires", &a.value))
                }
                (Ns::Xsi, "schemaLocation") => {
                    let words: Vec<&str> = a.value.split_whitespace().collect();
                    for pair in words.chunks_exact(2) {
                        let known = [GENI_V3_NS, EMULAB_NS, USER_NS, OPSTATE_NS];
                        if !known.contains(&pair[0]) {
                            r.extra_schema_locations
                                .push((pair[0].to_owned(), pair[1].to_owned()));
                        }
                    }
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        r.ext_attrs = take(&mut self.sc.attrs, 0);
        match rtype {
            Some(Some(t)) => {
                r.rspec_type = t;
                self.kind = t;
            }
            Some(None) => {}
            None => {
                self.required(off, "rspec", "type", None);
            }
        }
        if tag.empty {
            return Ok(r);
        }
        let m_extensions = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"node") => {
                        let n = self.node(c)?;
                        r.nodes.push(n);
                    }
                    (Ns::Geni, b"link") => {
                        let l = self.link(c)?;
                        r.links.push(l);
                    }
                    (Ns::Opstate, b"rspec_opstate") => {
                        let o = self.opstate(c)?;
                        r.opstates.push(o);
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.sc.elements.push(e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    r.extensions = take(&mut self.sc.elements, m_extensions);
                    return Ok(r);
                }
            }
        }
    }

    fn node(&mut self, tag: Tag<'i>) -> Res<Node> {
        let off = tag.offset;
        self.offsets.nodes.push(off);
        let first = self.offsets.interfaces.len();
        self.offsets.node_first_interface.push(first);
        let mut n = Node::default();
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => n.client_id = Some(a.value.into_owned()),
                Some("component_id") => n.component_id = Some(a.value.into_owned()),
                Some("component_manager_id") => n.component_manager_id = Some(a.value.into_owned()),
                Some("component_name") => n.component_name = Some(a.value.into_owned()),
                Some("sliver_id") => n.sliver_id = Some(a.value.into_owned()),
                Some("exclusive") => {
                    n.exclusive = value(
                        &mut self.problems,
                        off,
                        "node exclusive",
                        &a.value,
                        ProblemKind::BadValue,
                        values::boolean,
                    )
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        n.ext_attrs = take(&mut self.sc.attrs, 0);
        if tag.empty {
            return Ok(n);
        }
        let m_sliver_types = self.sc.sliver_types.len();
        let m_hardware_types = self.sc.hardware_types.len();
        let m_interfaces = self.sc.interfaces.len();
        let m_extensions = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"sliver_type") => {
                        let s = self.sliver_type(c)?;
                        self.sc.sliver_types.push(s);
                    }
                    (Ns::Geni, b"hardware_type") => {
                        let h = self.hardware_type(c)?;
                        self.sc.hardware_types.push(h);
                    }
                    (Ns::Geni, b"interface") => {
                        let i = self.interface(c)?;
                        self.sc.interfaces.push(i);
                    }
                    (Ns::Geni, b"services") if n.services.is_none() => {
                        n.services = Some(self.services(c)?);
                    }
                    (Ns::Geni, b"host") if n.host.is_none() => n.host = Some(self.host(c)?),
                    (Ns::Geni, b"location") if n.location.is_none() => {
                        n.location = Some(self.location(c)?);
                    }
                    (Ns::Geni, b"available") if n.available.is_none() => {
                        n.available = Some(self.available(c)?);
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.sc.elements.push(e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    n.sliver_types = take(&mut self.sc.sliver_types, m_sliver_types);
                    n.hardware_types = take(&mut self.sc.hardware_types, m_hardware_types);
                    n.interfaces = take(&mut self.sc.interfaces, m_interfaces);
                    n.extensions = take(&mut self.sc.elements, m_extensions);
                    return Ok(n);
                }
            }
        }
    }

    fn sliver_type(&mut self, tag: Tag<'i>) -> Res<SliverType> {
        let off = tag.offset;
        let mut s = SliverType::default();
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        s.ext_attrs = take(&mut self.sc.attrs, 0);
        s.name = self.required(off, "sliver_type", "name", name);
        if tag.empty {
            return Ok(s);
        }
        let m_disk_images = self.sc.disk_images.len();
        let m_extensions = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"disk_image") => {
                        let d = self.disk_image(c)?;
                        self.sc.disk_images.push(d);
                    }
                    (Ns::Emulab, b"xen") if s.xen.is_none() => s.xen = Some(self.xen(c)?),
                    _ => {
                        let e = self.ext_element(c)?;
                        self.sc.elements.push(e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    s.disk_images = take(&mut self.sc.disk_images, m_disk_images);
                    s.extensions = take(&mut self.sc.elements, m_extensions);
                    return Ok(s);
                }
            }
        }
    }

    fn disk_image(&mut self, tag: Tag<'i>) -> Res<DiskImage> {
        let off = tag.offset;
        let mut d = DiskImage::default();
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(a.value.into_owned()),
                Some("url") => d.url = Some(a.value.into_owned()),
                Some("os") => d.os = Some(a.value.into_owned()),
                Some("version") => d.version = Some(a.value.into_owned()),
                Some("description") => d.description = Some(a.value.into_owned()),
                Some("default") => d.default = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        d.ext_attrs = take(&mut self.sc.attrs, 0);
        d.name = self.required(off, "disk_image", "name", name);
        self.ext_children(&tag, &mut d.extensions)?;
        Ok(d)
    }

    fn xen(&mut self, tag: Tag<'i>) -> Res<EmulabXen> {
        let off = tag.offset;
        let mut x = EmulabXen::default();
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            let bad = ProblemKind::BadNumber;
            match a.plain() {
                Some("cores") => {
                    x.cores = value(
                        &mut self.problems,
                        off,
                        "emulab:xen cores",
                        &a.value,
                        bad,
                        values::unsigned,
                    )
                }
                Some("ram") => {
                    x.ram = value(
                        &mut self.problems,
                        off,
                        "emulab:xen ram",
                        &a.value,
                        bad,
                        values::unsigned,
                    )
                }
                Some("disk") => {
                    x.disk = value(
                        &mut self.problems,
                        off,
                        "emulab:xen disk",
                        &a.value,
                        bad,
                        values::unsigned,
                    )
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        x.ext_attrs = take(&mut self.sc.attrs, 0);
        self.no_children(&tag, "emulab:xen")?;
        Ok(x)
    }

    fn hardware_type(&mut self, tag: Tag<'i>) -> Res<HardwareType> {
        let off = tag.offset;
        let mut h = HardwareType::default();
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        h.ext_attrs = take(&mut self.sc.attrs, 0);
        h.name = self.required(off, "hardware_type", "name", name);
        self.ext_children(&tag, &mut h.extensions)?;
        Ok(h)
    }

    fn interface(&mut self, tag: Tag<'i>) -> Res<Interface> {
        let off = tag.offset;
        self.offsets.interfaces.push(off);
        let mut i = Interface::default();
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => i.client_id = Some(a.value.into_owned()),
                Some("component_id") => i.component_id = Some(a.value.into_owned()),
                Some("sliver_id") => i.sliver_id = Some(a.value.into_owned()),
                Some("mac_address") => i.mac_address = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        i.ext_attrs = take(&mut self.sc.attrs, 0);
        if tag.empty {
            return Ok(i);
        }
        let m_ips = self.sc.ips.len();
        let m_extensions = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"ip") => {
                        if let Some(ip) = self.ip(c)? {
                            self.sc.ips.push(ip);
                        }
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.sc.elements.push(e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    i.ips = take(&mut self.sc.ips, m_ips);
                    i.extensions = take(&mut self.sc.elements, m_extensions);
                    return Ok(i);
                }
            }
        }
    }

    /// An `<ip>`; `None` when the address is missing or bad (a problem is recorded).
    fn ip(&mut self, tag: Tag<'i>) -> Res<Option<Ip>> {
        let off = tag.offset;
        let (mut address, mut netmask, mut ip_type) = (None, None, None);
        let mut seen_address = false;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            let bad = ProblemKind::BadAddress;
            match a.plain() {
                Some("address") => {
                    seen_address = true;
                    address = value(
                        &mut self.problems,
                        off,
                        "ip address",
                        &a.value,
                        bad,
                        values::ip,
                    );
                }
                Some("netmask") => {
                    netmask = value(
                        &mut self.problems,
                        off,
                        "ip netmask",
                        &a.value,
                        bad,
                        values::netmask,
                    )
                }
                Some("type") => ip_type = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        let ext_attrs = take(&mut self.sc.attrs, 0);
        if !seen_address {
            self.required(off, "ip", "address", None);
        }
        if let (Some(std::net::IpAddr::V4(_)), Some(Netmask::PrefixLen(len))) = (address, netmask) {
            if len > 32 {
                self.problem(
                    off,
                    ProblemKind::BadAddress,
                    format!("ip netmask: prefix length {len} is too long for an IPv4 address"),
                );
            }
        }
        // The schema gives <ip> only extension children; none are modelled, so none are kept.
        self.no_children(&tag, "ip")?;
        Ok(address.map(|address| Ip {
            address,
            netmask,
            ip_type,
            ext_attrs,
        }))
    }

    fn services(&mut self, tag: Tag<'i>) -> Res<Services> {
        let mut s = Services::default();
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            self.sc.attrs.push(a.into_ext());
        }
        s.ext_attrs = take(&mut self.sc.attrs, 0);
        if tag.empty {
            return Ok(s);
        }
        let m_extensions = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"login") => {
                        let l = self.login(c)?;
                        s.logins.push(l);
                    }
                    (Ns::Geni, b"install") => {
                        let i = self.install(c)?;
                        s.installs.push(i);
                    }
                    (Ns::Geni, b"execute") => {
                        let e = self.execute(c)?;
                        s.executes.push(e);
                    }
                    (Ns::User, b"services_user") => {
                        let u = self.services_user(c)?;
                        s.users.push(u);
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.sc.elements.push(e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    s.extensions = take(&mut self.sc.elements, m_extensions);
                    return Ok(s);
                }
            }
        }
    }

    fn login(&mut self, tag: Tag<'i>) -> Res<Login> {
        let off = tag.offset;
        let mut l = Login::default();
        let mut auth = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("authentication") => auth = Some(a.value.into_owned()),
                Some("hostname") => l.hostname = Some(a.value.into_owned()),
                Some("username") => l.username = Some(a.value.into_owned()),
                Some("port") => {
                    l.port = value(
                        &mut self.problems,
                        off,
                        "login port",
                        &a.value,
                        ProblemKind::BadNumber,
                        values::unsigned,
                    )
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        l.ext_attrs = take(&mut self.sc.attrs, 0);
        l.authentication = self.required(off, "login", "authentication", auth);
        self.ext_children(&tag, &mut l.extensions)?;
        Ok(l)
    }

    fn install(&mut self, tag: Tag<'i>) -> Res<Install> {
        let off = tag.offset;
        let mut i = Install::default();
        let (mut url, mut path) = (None, None);
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("url") => url = Some(a.value.into_owned()),
                Some("install_path") => path = Some(a.value.into_owned()),
                Some("file_type") => i.file_type = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        i.ext_attrs = take(&mut self.sc.attrs, 0);
        if self.kind == RSpecType::Advertisement {
            // An advertisement describes what installs are possible: only `file_type`.
            i.url = url.unwrap_or_default();
            i.install_path = path.unwrap_or_default();
            if i.file_type.is_none() {
                self.required(off, "install", "file_type", None);
            }
        } else {
            i.url = self.required(off, "install", "url", url);
            i.install_path = self.required(off, "install", "install_path", path);
        }
        self.ext_children(&tag, &mut i.extensions)?;
        Ok(i)
    }

    fn execute(&mut self, tag: Tag<'i>) -> Res<Execute> {
        let off = tag.offset;
        let mut e = Execute::default();
        let (mut shell, mut command) = (None, None);
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("shell") => shell = Some(a.value.into_owned()),
                Some("command") => command = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        e.ext_attrs = take(&mut self.sc.attrs, 0);
        e.shell = self.required(off, "execute", "shell", shell);
        e.command = if self.kind == RSpecType::Advertisement {
            // An advertisement names the available shells only.
            command.unwrap_or_default()
        } else {
            self.required(off, "execute", "command", command)
        };
        self.ext_children(&tag, &mut e.extensions)?;
        Ok(e)
    }

    fn services_user(&mut self, tag: Tag<'i>) -> Res<UserKey> {
        let off = tag.offset;
        let mut u = UserKey::default();
        let mut login = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("login") => login = Some(a.value.into_owned()),
                Some("user_urn") => u.user_urn = Some(a.value.into_owned()),
                _ => {}
            }
        }
        u.login = self.required(off, "user:services_user", "login", login);
        if tag.empty {
            return Ok(u);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    if c.is(&Ns::User, "public_key") {
                        let key = self.text_content(&c)?;
                        u.public_keys.push(key);
                    } else {
                        self.problem(
                            c.offset,
                            ProblemKind::UnexpectedElement,
                            format!(
                                "<user:services_user> may not contain <{}>",
                                String::from_utf8_lossy(c.local())
                            ),
                        );
                        self.skip(&c)?;
                    }
                }
                Next::Text(_) => {}
                Next::End => return Ok(u),
            }
        }
    }

    fn host(&mut self, tag: Tag<'i>) -> Res<Host> {
        let off = tag.offset;
        let mut h = Host::default();
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        h.ext_attrs = take(&mut self.sc.attrs, 0);
        h.name = self.required(off, "host", "name", name);
        self.no_children(&tag, "host")?;
        Ok(h)
    }

    fn location(&mut self, tag: Tag<'i>) -> Res<Location> {
        let off = tag.offset;
        let mut l = Location::default();
        let mut country = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            let bad = ProblemKind::BadNumber;
            match a.plain() {
                Some("country") => country = Some(a.value.into_owned()),
                Some("latitude") => {
                    l.latitude = value(
                        &mut self.problems,
                        off,
                        "location latitude",
                        &a.value,
                        bad,
                        |s| values::decimal_in(s, -90.0, 90.0),
                    )
                }
                Some("longitude") => {
                    l.longitude = value(
                        &mut self.problems,
                        off,
                        "location longitude",
                        &a.value,
                        bad,
                        |s| values::decimal_in(s, -180.0, 180.0),
                    )
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        l.ext_attrs = take(&mut self.sc.attrs, 0);
        l.country = self.required(off, "location", "country", country);
        self.ext_children(&tag, &mut l.extensions)?;
        Ok(l)
    }

    fn available(&mut self, tag: Tag<'i>) -> Res<Available> {
        let off = tag.offset;
        let mut v = Available::default();
        let mut now = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("now") => {
                    now = Some(value(
                        &mut self.problems,
                        off,
                        "available now",
                        &a.value,
                        ProblemKind::BadValue,
                        values::boolean,
                    ))
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        v.ext_attrs = take(&mut self.sc.attrs, 0);
        match now {
            Some(n) => v.now = n.unwrap_or(false),
            None => {
                self.required(off, "available", "now", None);
            }
        }
        self.ext_children(&tag, &mut v.extensions)?;
        Ok(v)
    }

    fn link(&mut self, tag: Tag<'i>) -> Res<Link> {
        let off = tag.offset;
        self.offsets.links.push(off);
        let first = self.offsets.refs.len();
        self.offsets.link_first_ref.push(first);
        let mut l = Link::default();
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => l.client_id = Some(a.value.into_owned()),
                Some("component_id") => l.component_id = Some(a.value.into_owned()),
                Some("component_name") => l.component_name = Some(a.value.into_owned()),
                Some("sliver_id") => l.sliver_id = Some(a.value.into_owned()),
                Some("vlantag") => {
                    l.vlantag = value(
                        &mut self.problems,
                        off,
                        "link vlantag",
                        &a.value,
                        ProblemKind::BadNumber,
                        values::vlantag,
                    )
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        l.ext_attrs = take(&mut self.sc.attrs, 0);
        if tag.empty {
            return Ok(l);
        }
        let m_component_managers = self.sc.strings.len();
        let m_interface_refs = self.sc.interface_refs.len();
        let m_link_types = self.sc.link_types.len();
        let m_properties = self.sc.properties.len();
        let m_extensions = self.sc.elements.len();
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"component_manager") => {
                        let m = self.component_manager(c)?;
                        self.sc.strings.push(m);
                    }
                    (Ns::Geni, b"interface_ref") => {
                        let r = self.interface_ref(c)?;
                        self.sc.interface_refs.push(r);
                    }
                    (Ns::Geni, b"link_type") => {
                        let t = self.link_type(c)?;
                        self.sc.link_types.push(t);
                    }
                    (Ns::Geni, b"property") => {
                        let p = self.property(c)?;
                        self.sc.properties.push(p);
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.sc.elements.push(e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    l.component_managers = take(&mut self.sc.strings, m_component_managers);
                    l.interface_refs = take(&mut self.sc.interface_refs, m_interface_refs);
                    l.link_types = take(&mut self.sc.link_types, m_link_types);
                    l.properties = take(&mut self.sc.properties, m_properties);
                    l.extensions = take(&mut self.sc.elements, m_extensions);
                    return Ok(l);
                }
            }
        }
    }

    fn component_manager(&mut self, tag: Tag<'i>) -> Res<String> {
        let off = tag.offset;
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            if a.plain() == Some("name") {
                name = Some(a.value.into_owned());
            }
        }
        let name = self.required(off, "component_manager", "name", name);
        self.no_children(&tag, "component_manager")?;
        Ok(name)
    }

    fn interface_ref(&mut self, tag: Tag<'i>) -> Res<InterfaceRef> {
        self.offsets.refs.push(tag.offset);
        let mut r = InterfaceRef::default();
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => r.client_id = Some(a.value.into_owned()),
                Some("component_id") => r.component_id = Some(a.value.into_owned()),
                Some("sliver_id") => r.sliver_id = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        r.ext_attrs = take(&mut self.sc.attrs, 0);
        self.ext_children(&tag, &mut r.extensions)?;
        Ok(r)
    }

    fn link_type(&mut self, tag: Tag<'i>) -> Res<LinkType> {
        let off = tag.offset;
        let mut t = LinkType::default();
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(a.value.into_owned()),
                Some("class") => t.class = Some(a.value.into_owned()),
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        t.ext_attrs = take(&mut self.sc.attrs, 0);
        t.name = self.required(off, "link_type", "name", name);
        self.ext_children(&tag, &mut t.extensions)?;
        Ok(t)
    }

    fn property(&mut self, tag: Tag<'i>) -> Res<LinkProperty> {
        let off = tag.offset;
        let mut p = LinkProperty::default();
        let (mut src, mut dst) = (None, None);
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            let bad = ProblemKind::BadNumber;
            match a.plain() {
                Some("source_id") => src = Some(a.value.into_owned()),
                Some("dest_id") => dst = Some(a.value.into_owned()),
                Some("capacity") => {
                    p.capacity = value(
                        &mut self.problems,
                        off,
                        "property capacity",
                        &a.value,
                        bad,
                        values::unsigned,
                    )
                }
                Some("latency") => {
                    p.latency = value(
                        &mut self.problems,
                        off,
                        "property latency",
                        &a.value,
                        bad,
                        values::unsigned,
                    )
                }
                Some("packet_loss") => {
                    p.packet_loss = value(
                        &mut self.problems,
                        off,
                        "property packet_loss",
                        &a.value,
                        bad,
                        |s| values::decimal_in(s, 0.0, 1.0),
                    )
                }
                _ => self.sc.attrs.push(a.into_ext()),
            }
        }
        p.ext_attrs = take(&mut self.sc.attrs, 0);
        p.source_id = self.required(off, "property", "source_id", src);
        p.dest_id = self.required(off, "property", "dest_id", dst);
        self.ext_children(&tag, &mut p.extensions)?;
        Ok(p)
    }

    fn opstate(&mut self, tag: Tag<'i>) -> Res<Opstate> {
        let off = tag.offset;
        let mut o = Opstate::default();
        let (mut am, mut start) = (None, None);
        for a in attr_iter(&self.reader, self.input, &tag) {
            let a = a?;
            match a.plain() {
                Some("aggregate_manager_id") => am = Some(a.value.into_owned()),
                Some("start") => start = Some(a.value.into_owned()),
                _ => {}
            }
        }
        o.aggregate_manager_id = self.required(off, "rspec_opstate", "aggregate_manager_id", am);
        o.start = self.required(off, "rspec_opstate", "start", start);
        if tag.empty {
            return Ok(o);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Opstate, b"sliver_type") => {
                        let name = self.named(&c, "opstate:sliver_type")?;
                        o.sliver_types.push(name);
                        self.no_children(&c, "opstate:sliver_type")?;
                    }
                    (Ns::Opstate, b"state") => {
                        let s = self.op_state(c)?;
                        o.states.push(s);
                    }
                    _ => self.unexpected(c, "rspec_opstate")?,
                },
                Next::Text(_) => {}
                Next::End => return Ok(o),
            }
        }
    }

    /// The required `name` attribute of an opstate element.
    fn named(&mut self, tag: &Tag<'i>, element: &str) -> Res<String> {
        let mut name = None;
        for a in attr_iter(&self.reader, self.input, tag) {
            let a = a?;
            if a.plain() == Some("name") {
                name = Some(a.value.into_owned());
            }
        }
        Ok(self.required(tag.offset, element, "name", name))
    }

    fn unexpected(&mut self, c: Tag<'i>, parent: &str) -> Res<()> {
        self.problem(
            c.offset,
            ProblemKind::UnexpectedElement,
            format!(
                "<{parent}> may not contain <{}>",
                String::from_utf8_lossy(c.local())
            ),
        );
        self.skip(&c)
    }

    fn op_state(&mut self, tag: Tag<'i>) -> Res<OpstateState> {
        let mut s = OpstateState {
            name: self.named(&tag, "opstate:state")?,
            ..OpstateState::default()
        };
        if tag.empty {
            return Ok(s);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Opstate, b"action") => {
                        let off = c.offset;
                        let (mut name, mut next) = (None, None);
                        for a in attr_iter(&self.reader, self.input, &c) {
                            let a = a?;
                            match a.plain() {
                                Some("name") => name = Some(a.value.into_owned()),
                                Some("next") => next = Some(a.value.into_owned()),
                                _ => {}
                            }
                        }
                        let action = OpstateAction {
                            name: self.required(off, "opstate:action", "name", name),
                            next: self.required(off, "opstate:action", "next", next),
                            description: self.op_description(&c)?,
                        };
                        s.actions.push(action);
                    }
                    (Ns::Opstate, b"wait") => {
                        let off = c.offset;
                        let (mut wait_type, mut next) = (None, None);
                        for a in attr_iter(&self.reader, self.input, &c) {
                            let a = a?;
                            match a.plain() {
                                Some("type") => wait_type = Some(a.value.into_owned()),
                                Some("next") => next = Some(a.value.into_owned()),
                                _ => {}
                            }
                        }
                        let wait = OpstateWait {
                            wait_type,
                            next: self.required(off, "opstate:wait", "next", next),
                            description: self.op_description(&c)?,
                        };
                        s.waits.push(wait);
                    }
                    (Ns::Opstate, b"description") => {
                        let text = self.text_content(&c)?;
                        match &mut s.description {
                            // The schema allows several; they are joined so no text is lost.
                            Some(d) => {
                                d.push('\n');
                                d.push_str(&text);
                            }
                            None => s.description = Some(text),
                        }
                    }
                    _ => self.unexpected(c, "opstate:state")?,
                },
                Next::Text(_) => {}
                Next::End => return Ok(s),
            }
        }
    }

    /// The optional `<description>` child of an action or wait.
    fn op_description(&mut self, tag: &Tag<'i>) -> Res<Option<String>> {
        let mut out = None;
        if tag.empty {
            return Ok(out);
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => {
                    if c.is(&Ns::Opstate, "description") && out.is_none() {
                        out = Some(self.text_content(&c)?);
                    } else {
                        self.unexpected(c, "opstate:action")?;
                    }
                }
                Next::Text(_) => {}
                Next::End => return Ok(out),
            }
        }
    }
}
