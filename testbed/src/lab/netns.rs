//! Network namespaces for lab hosts: a bridge in the root namespace and one namespace per
//! host joined to it by a veth pair. Only private 10.77.x.0/24 addresses are used.

use std::process::Command;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Names and addresses of lab `id`.
#[derive(Clone, Debug)]
pub struct LabNet {
    /// Lab number (1..=250): the third octet of its subnet.
    pub id: u8,
}

impl LabNet {
    /// Bridge name.
    pub fn bridge(&self) -> String {
        format!("vnsbr{}", self.id)
    }
    /// Namespace of host `n` (1-based).
    pub fn ns(&self, n: usize) -> String {
        format!("vnsnap-{}-h{n}", self.id)
    }
    /// Root-side veth of host `n`.
    fn veth(&self, n: usize) -> String {
        format!("vnl{}h{n}", self.id)
    }
    /// Address of host `n`.
    pub fn addr(&self, n: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 77, self.id, 1 + n as u8)
    }
    /// Address of the bridge (the root namespace's side).
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 77, self.id, 1)
    }

    /// Claims a free lab number by creating its bridge (creation is atomic, so two labs
    /// started at once never share one).
    pub fn claim() -> anyhow::Result<LabNet> {
        for id in 1..=250u8 {
            let net = LabNet { id };
            if ip(&["link", "add", &net.bridge(), "type", "bridge"]).is_ok() {
                ip(&["addr", "add", &format!("{}/24", net.gateway()), "dev", &net.bridge()])?;
                ip(&["link", "set", &net.bridge(), "up"])?;
                return Ok(net);
            }
        }
        anyhow::bail!("no free lab number (bridges vnsbr1..vnsbr250 all exist)")
    }

    /// Creates host `n`'s namespace and joins it to the bridge.
    pub fn add_host(&self, n: usize) -> anyhow::Result<()> {
        let ns = self.ns(n);
        // Leftovers of a lab that was killed without `down` would make the adds fail.
        let _ = ip(&["netns", "del", &ns]);
        let _ = ip(&["link", "del", &self.veth(n)]);
        ip(&["netns", "add", &ns])?;
        let peer = format!("vnp{}h{n}", self.id);
        ip(&["link", "add", &self.veth(n), "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &ns])?;
        ip(&["link", "set", &self.veth(n), "master", &self.bridge()])?;
        ip(&["link", "set", &self.veth(n), "up"])?;
        ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.addr(n)), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Removes host namespaces `1..=hosts` and the bridge. Errors are ignored: this
    /// also cleans up after a half-built lab.
    pub fn remove(&self, hosts: usize) {
        for n in 1..=hosts {
            let _ = ip(&["link", "del", &self.veth(n)]);
            let _ = ip(&["netns", "del", &self.ns(n)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
