//! Reading `<node>` and everything inside it.

use super::elements::{lexical, value};
use super::{attr_iter, in_place, list, push_child, values, Ctx, Next, Ns, Res, Tag};
use crate::error::ProblemKind;
use crate::model::*;
use smol_str::SmolStr;

impl<'i> Ctx<'i> {
    /// Reads a node into `n` (a fresh `Node::default()` already in its final place: a node is
    /// large, and building it in place saves copying it twice).
    pub(super) fn node(&mut self, tag: Tag<'i>, n: &mut Node) -> Res<()> {
        let off = tag.offset;
        self.offsets.nodes.push(off);
        let first = self.offsets.interfaces.len();
        self.offsets.node_first_interface.push(first);
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => n.client_id = Some(self.strs.get(&a.value)),
                Some("component_id") => n.component_id = Some(SmolStr::new(&a.value)),
                Some("component_manager_id") => n.component_manager_id = Some(self.strs.get(&a.value)),
                Some("component_name") => n.component_name = Some(self.strs.get(&a.value)),
                Some("sliver_id") => n.sliver_id = Some(SmolStr::new(&a.value)),
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
                _ => self.hints.push(&mut n.ext_attrs, a.into_ext(&mut self.strs), list::NODE_ATTRS),
            }
        }
        self.hints.fit(&mut n.ext_attrs, list::NODE_ATTRS);
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"sliver_type") => {
                        let s = in_place(&self.hints, &mut n.sliver_types, list::NODE_SLIVER_TYPES);
                        self.sliver_type(c, s)?;
                    }
                    (Ns::Geni, b"hardware_type") => {
                        let h = in_place(&self.hints, &mut n.hardware_types, list::NODE_HARDWARE_TYPES);
                        self.hardware_type(c, h)?;
                    }
                    (Ns::Geni, b"interface") => {
                        let i = in_place(&self.hints, &mut n.interfaces, list::NODE_INTERFACES);
                        self.interface(c, i)?;
                    }
                    (Ns::Geni, b"services") if n.services.is_none() => {
                        n.services = Some(self.services(c)?);
                    }
                    (Ns::Geni, b"host") if n.host.is_none() => n.host = Some(self.host(c)?),
                    (Ns::Geni, b"location") if n.location.is_none() => {
                        let l = n.location.insert(Location::default());
                        self.location(c, l)?;
                    }
                    (Ns::Geni, b"available") if n.available.is_none() => {
                        let v = n.available.insert(Available::default());
                        self.available(c, v)?;
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        self.hints.push(&mut n.extensions, e, list::NODE_EXTENSIONS);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    self.hints.fit(&mut n.sliver_types, list::NODE_SLIVER_TYPES);
                    self.hints.fit(&mut n.hardware_types, list::NODE_HARDWARE_TYPES);
                    self.hints.fit(&mut n.interfaces, list::NODE_INTERFACES);
                    self.hints.fit(&mut n.extensions, list::NODE_EXTENSIONS);
                    return Ok(());
                }
            }
        }
    }

    fn sliver_type(&mut self, tag: Tag<'i>, s: &mut SliverType) -> Res<()> {
        let off = tag.offset;
        let mut name = None;
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(self.strs.get(&a.value)),
                _ => push_child(&mut s.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        s.name = self.required(off, "sliver_type", "name", name);
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"disk_image") => {
                        let d = in_place(&self.hints, &mut s.disk_images, list::SLIVER_DISK_IMAGES);
                        self.disk_image(c, d)?;
                    }
                    (Ns::Emulab, b"xen") if s.xen.is_none() => s.xen = Some(self.xen(c)?),
                    _ => {
                        let e = self.ext_element(c)?;
                        push_child(&mut s.extensions, e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    self.hints.fit(&mut s.disk_images, list::SLIVER_DISK_IMAGES);
                    return Ok(());
                }
            }
        }
    }

    fn disk_image(&mut self, tag: Tag<'i>, d: &mut DiskImage) -> Res<()> {
        let off = tag.offset;
        let mut name = None;
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(self.strs.get(&a.value)),
                Some("url") => d.url = Some(self.strs.get(&a.value)),
                Some("os") => d.os = Some(self.strs.get(&a.value)),
                Some("version") => d.version = Some(self.strs.get(&a.value)),
                Some("description") => d.description = Some(self.strs.get(&a.value)),
                Some("default") => d.default = Some(self.strs.get(&a.value)),
                _ => push_child(&mut d.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        d.name = self.required(off, "disk_image", "name", name);
        self.ext_children(&tag, &mut d.extensions)?;
        Ok(())
    }

    fn xen(&mut self, tag: Tag<'i>) -> Res<EmulabXen> {
        let off = tag.offset;
        let mut x = EmulabXen::default();
        let strict = self.strict();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            let bad = ProblemKind::BadNumber;
            match a.plain() {
                Some("cores") if strict => {
                    x.cores = value(&mut self.problems, off, "emulab:xen cores", &a.value, bad, values::unsigned)
                }
                Some("ram") if strict => {
                    x.ram = value(&mut self.problems, off, "emulab:xen ram", &a.value, bad, values::unsigned)
                }
                Some("disk") if strict => {
                    x.disk = value(&mut self.problems, off, "emulab:xen disk", &a.value, bad, values::unsigned)
                }
                // Read leniently, the sizes stay numbers only where writing the number gives
                // back the text (`512`, not `0512` or `1GB`); any other value is kept as
                // written among `ext_attrs`, whose writer puts it back under its own name.
                Some("cores") if values::canonical::<u32>(&a.value).is_some() => x.cores = values::canonical(&a.value),
                Some("ram") if values::canonical::<u64>(&a.value).is_some() => x.ram = values::canonical(&a.value),
                Some("disk") if values::canonical::<u64>(&a.value).is_some() => x.disk = values::canonical(&a.value),
                _ => push_child(&mut x.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        self.no_children(&tag, "emulab:xen")?;
        Ok(x)
    }

    fn hardware_type(&mut self, tag: Tag<'i>, h: &mut HardwareType) -> Res<()> {
        let off = tag.offset;
        let mut name = None;
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(self.strs.get(&a.value)),
                _ => push_child(&mut h.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        h.name = self.required(off, "hardware_type", "name", name);
        self.ext_children(&tag, &mut h.extensions)?;
        Ok(())
    }

    fn interface(&mut self, tag: Tag<'i>, i: &mut Interface) -> Res<()> {
        let off = tag.offset;
        self.offsets.interfaces.push(off);
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("client_id") => i.client_id = Some(self.strs.get(&a.value)),
                Some("component_id") => i.component_id = Some(SmolStr::new(&a.value)),
                Some("sliver_id") => i.sliver_id = Some(SmolStr::new(&a.value)),
                Some("mac_address") => i.mac_address = Some(self.strs.get(&a.value)),
                _ => self.hints.push(&mut i.ext_attrs, a.into_ext(&mut self.strs), list::INTERFACE_ATTRS),
            }
        }
        self.hints.fit(&mut i.ext_attrs, list::INTERFACE_ATTRS);
        if tag.empty {
            return Ok(());
        }
        loop {
            match self.next_child()? {
                Next::Child(c) => match (&c.ns, c.local()) {
                    (Ns::Geni, b"ip") => {
                        if let Some(ip) = self.ip(c)? {
                            self.hints.push(&mut i.ips, ip, list::INTERFACE_IPS);
                        }
                    }
                    _ => {
                        let e = self.ext_element(c)?;
                        push_child(&mut i.extensions, e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    self.hints.fit(&mut i.ips, list::INTERFACE_IPS);
                    return Ok(());
                }
            }
        }
    }

    /// An `<ip>`; `None` when, under the strict rules, the address is bad (a problem is
    /// recorded).
    fn ip(&mut self, tag: Tag<'i>) -> Res<Option<Ip>> {
        let off = tag.offset;
        let mut ip = Ip::default();
        let (mut seen_address, mut good) = (false, true);
        // Under the strict rules, the parsed values (for the IPv4 prefix length check).
        let (mut addr, mut mask) = (None, None);
        let strict = self.strict();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            let bad = ProblemKind::BadAddress;
            match a.plain() {
                Some("address") => {
                    seen_address = true;
                    if strict {
                        addr = value(&mut self.problems, off, "ip address", &a.value, bad, values::ip);
                        good = addr.is_some();
                    }
                    ip.address = SmolStr::new(&a.value);
                }
                Some("netmask") => {
                    if strict {
                        mask = value(&mut self.problems, off, "ip netmask", &a.value, bad, values::netmask);
                        if mask.is_none() {
                            continue;
                        }
                    }
                    ip.netmask = Some(SmolStr::new(&a.value));
                }
                Some("type") => ip.ip_type = Some(self.strs.get(&a.value)),
                _ => push_child(&mut ip.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        if !seen_address {
            good = false;
            self.required(off, "ip", "address", None);
        }
        if let (Some(std::net::IpAddr::V4(_)), Some(Netmask::PrefixLen(len))) = (addr, mask) {
            if len > 32 {
                self.problem(
                    off,
                    ProblemKind::BadAddress,
                    format!("ip netmask: prefix length {len} is too long for an IPv4 address"),
                );
            }
        }
        // The schema allows foreign children in <ip>; they are kept like any extension.
        self.ext_children(&tag, &mut ip.extensions)?;
        Ok(good.then_some(ip))
    }

    fn services(&mut self, tag: Tag<'i>) -> Res<Services> {
        let mut s = Services::default();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            push_child(&mut s.ext_attrs, a.into_ext(&mut self.strs));
        }
        if tag.empty {
            return Ok(s);
        }
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
                        push_child(&mut s.extensions, e);
                    }
                },
                Next::Text(_) => {}
                Next::End => {
                    return Ok(s);
                }
            }
        }
    }

    fn login(&mut self, tag: Tag<'i>) -> Res<Login> {
        let off = tag.offset;
        let mut l = Login::default();
        let mut auth = None;
        let strict = self.strict();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("authentication") => auth = Some(self.strs.get(&a.value)),
                Some("hostname") => l.hostname = Some(self.strs.get(&a.value)),
                Some("username") => l.username = Some(self.strs.get(&a.value)),
                Some("port") => {
                    l.port = lexical(
                        &mut self.problems,
                        strict,
                        off,
                        "login port",
                        &a.value,
                        ProblemKind::BadNumber,
                        values::unsigned::<u16>,
                    )
                }
                _ => push_child(&mut l.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        l.authentication = self.required(off, "login", "authentication", auth);
        self.ext_children(&tag, &mut l.extensions)?;
        Ok(l)
    }

    fn install(&mut self, tag: Tag<'i>) -> Res<Install> {
        let off = tag.offset;
        let mut i = Install::default();
        let (mut url, mut path) = (None, None);
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("url") => url = Some(self.strs.get(&a.value)),
                Some("install_path") => path = Some(self.strs.get(&a.value)),
                Some("file_type") => i.file_type = Some(self.strs.get(&a.value)),
                _ => push_child(&mut i.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
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
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("shell") => shell = Some(self.strs.get(&a.value)),
                Some("command") => command = Some(self.strs.get(&a.value)),
                _ => push_child(&mut e.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
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
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("login") => login = Some(self.strs.get(&a.value)),
                Some("user_urn") => u.user_urn = Some(self.strs.get(&a.value)),
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
                            format!("<user:services_user> may not contain <{}>", String::from_utf8_lossy(c.local())),
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
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            match a.plain() {
                Some("name") => name = Some(self.strs.get(&a.value)),
                _ => push_child(&mut h.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        h.name = self.required(off, "host", "name", name);
        self.no_children(&tag, "host")?;
        Ok(h)
    }

    fn location(&mut self, tag: Tag<'i>, l: &mut Location) -> Res<()> {
        let off = tag.offset;
        let mut country = None;
        let strict = self.strict();
        for a in attr_iter(&self.scopes, &tag) {
            let a = a?;
            let (bad, probs) = (ProblemKind::BadNumber, &mut self.problems);
            match a.plain() {
                Some("country") => country = Some(self.strs.get(&a.value)),
                Some("latitude") => {
                    l.latitude = lexical(probs, strict, off, "location latitude", &a.value, bad, |s| {
                        values::decimal_in(s, -90.0, 90.0)
                    })
                }
                Some("longitude") => {
                    l.longitude = lexical(probs, strict, off, "location longitude", &a.value, bad, |s| {
                        values::decimal_in(s, -180.0, 180.0)
                    })
                }
                _ => push_child(&mut l.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        l.country = self.required(off, "location", "country", country);
        self.ext_children(&tag, &mut l.extensions)?;
        Ok(())
    }

    fn available(&mut self, tag: Tag<'i>, v: &mut Available) -> Res<()> {
        let off = tag.offset;
        let mut now = None;
        for a in attr_iter(&self.scopes, &tag) {
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
                _ => push_child(&mut v.ext_attrs, a.into_ext(&mut self.strs)),
            }
        }
        match now {
            Some(n) => v.now = n.unwrap_or(false),
            None => {
                self.required(off, "available", "now", None);
            }
        }
        self.ext_children(&tag, &mut v.extensions)?;
        Ok(())
    }
}
