//! Allocate: read the request RSpec, place its VMs, reserve segments and MACs, record slivers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rusqlite::Connection;
use vnsnap_rspec::{Netmask, Node, RSpec, RSpecType};

use super::Am;
use crate::error::AmError;
use crate::placement::{place, HostRoom, VmRequest};
use crate::state::db::{insert_allocation, insert_link, insert_sliver, next_counter};
use crate::state::{LinkRow, NicPlan, Sliver, SliverState, Transition, VmPlan};

/// Our VM sliver type.
pub const VM_TYPE: &str = "vnsnap-vm";
/// The ProtoGENI alias accepted so existing RSpecs work.
pub const XEN_TYPE: &str = "emulab-xen";

/// What one request may ask for. Every number of a request is checked against these before
/// anything is placed or stored, so a request out of range changes nothing (BADARGS). They
/// are sanity bounds, far above what the hosts can give: whether a VM fits is placement's
/// answer (INSUFFICIENT_NODES).
pub mod limits {
    /// Smallest `emulab:xen ram` (MiB): the test guest and any small Linux boot in this.
    pub const MIN_MEMORY_MIB: u64 = 32;
    /// Largest `emulab:xen ram` (MiB): 1 TiB.
    pub const MAX_MEMORY_MIB: u64 = 1024 * 1024;
    /// Largest `emulab:xen cores` (`0` or absent: the AM's default).
    pub const MAX_VCPUS: u32 = 64;
    /// Largest `emulab:xen disk` (GB). The AM gives every VM its image's disk; the value is
    /// checked, not used.
    pub const MAX_DISK_GB: u64 = 16 * 1024;
    /// Most `<node>`s in one request (this aggregate's and others').
    pub const MAX_NODES: usize = 256;
    /// Most `<link>`s in one request.
    pub const MAX_LINKS: usize = 512;
    /// Most `<interface>`s on one node (QEMU NICs).
    pub const MAX_INTERFACES_PER_NODE: usize = 32;
    /// Most `<interface>`s in one request, and most `<interface_ref>`s of all links together.
    pub const MAX_INTERFACES: usize = 1024;
    /// Most `<ip>`s on one interface.
    pub const MAX_IPS_PER_INTERFACE: usize = 8;
}

/// Lowest segment id handed out (below are reserved for operators).
const FIRST_SEGMENT: i64 = 100;
/// Highest: segments double as manifest `vlantag`s (0..=4095).
const LAST_SEGMENT: i64 = 4094;

/// A node of the request that is ours, with what it asks for.
struct Wanted<'a> {
    node: &'a Node,
    client_id: String,
    plan: VmPlan,
    bound: Option<String>,
}

impl Am {
    /// Whether a request node is for this aggregate (no CM, or ours).
    pub fn is_ours(&self, node: &Node) -> bool {
        node.component_manager_id.as_deref().is_none_or(|cm| cm.eq_ignore_ascii_case(&self.cfg.am_urn()))
    }

    /// The image a `disk_image name` designates (a catalog name or image URN, or the URN of
    /// a user image made by CreateImage), with the host a user image pins the VM to.
    fn image_of(&self, name: Option<&str>) -> Result<(String, Option<String>), AmError> {
        let Some(name) = name else {
            return Ok((self.cfg.default_image.clone(), None));
        };
        if let Some((plan, host)) = crate::image::lookup(self, name)? {
            return Ok((plan, Some(host)));
        }
        if self.cfg.images.contains_key(name) {
            return Ok((name.to_string(), None));
        }
        let tail = name.rsplit(['+', ':']).next().unwrap_or(name);
        if self.cfg.images.contains_key(tail) {
            return Ok((tail.to_string(), None));
        }
        Err(AmError::BadArgs(format!("Unknown disk image {name}")))
    }

    fn wanted<'a>(&self, node: &'a Node) -> Result<Wanted<'a>, AmError> {
        let client_id = node.client_id.clone().ok_or_else(|| AmError::BadArgs("node without client_id".into()))?;
        let st = node.sliver_type();
        let type_name = st.map(|s| s.name.as_str()).unwrap_or(VM_TYPE);
        if type_name != VM_TYPE && type_name != XEN_TYPE {
            return Err(AmError::BadArgs(format!(
                "Node {client_id}: sliver type {type_name} is not offered (use {VM_TYPE} or {XEN_TYPE})"
            )));
        }
        let (image, pinned) = self.image_of(st.and_then(|s| s.disk_images.first()).map(|d| d.name.as_str()))?;
        let xen = st.and_then(|s| s.xen.as_ref());
        check_node(&client_id, node)?;
        // `cores="0"` means "no guaranteed reservation" in the emulab schema: the default.
        let vcpus = xen.and_then(|x| x.cores).filter(|&c| c > 0).unwrap_or(self.cfg.vm.vcpus);
        let memory_mib = xen.and_then(|x| x.ram).unwrap_or(self.cfg.vm.memory_mib);
        let mut bound = match (&node.component_id, &node.component_name) {
            (Some(id), _) => Some(id.rsplit('+').next().unwrap_or(id).to_string()),
            (None, Some(name)) => Some(name.to_string()),
            _ => None,
        };
        // A user image is a file on one host: the VM runs there.
        if let Some(host) = pinned {
            match &bound {
                Some(b) if b != &host => {
                    return Err(AmError::BadArgs(format!(
                        "Node {client_id}: its disk image is on host {host}, not {b}"
                    )))
                }
                _ => bound = Some(host),
            }
        }
        Ok(Wanted {
            node,
            client_id: client_id.to_string(),
            plan: VmPlan { vcpus, memory_mib, image, sliver_type: type_name.to_string(), nics: Vec::new() },
            bound,
        })
    }

    /// Room per reachable host: its capacity minus what live slivers already hold.
    async fn rooms(&self) -> Result<Vec<HostRoom>, AmError> {
        let hosts = self.agents.hosts().await;
        // Saturating: sizes are range-checked at Allocate, but rows written before that check
        // (or by hand) must make a host look full, never wrap into room.
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut used: HashMap<String, (i64, i64)> = HashMap::new();
        for s in self.db.live_slivers()? {
            let e = used.entry(s.host.clone()).or_default();
            e.0 = e.0.saturating_add(i64::from(s.plan.vcpus));
            e.1 = e.1.saturating_add(big(s.plan.memory_mib));
        }
        Ok(hosts
            .into_iter()
            .map(|(name, info)| {
                let (v, m) = used.get(&name).copied().unwrap_or_default();
                let slots = i64::from(info.vcpus).saturating_mul(i64::from(self.cfg.vm.vcpu_overcommit));
                HostRoom {
                    vcpus_free: slots.saturating_sub(v),
                    memory_free: big(info.memory_mib).saturating_sub(m),
                    name,
                }
            })
            .collect())
    }

    /// Allocate: all-or-nothing. Returns the new slivers.
    pub async fn allocate(
        &self,
        slice: &str,
        rspec_text: &str,
        cred_expires: DateTime<Utc>,
    ) -> Result<Vec<Sliver>, AmError> {
        self.check_open(slice)?;
        if rspec_text.trim().is_empty() {
            return Err(AmError::BadArgs("Empty request RSpec".into()));
        }
        let rspec = vnsnap_rspec::parse(rspec_text).map_err(|e| AmError::BadArgs(format!("Bad request RSpec: {e}")))?;
        if rspec.rspec_type != RSpecType::Request {
            return Err(AmError::BadArgs(format!("RSpec type is {}, not request", rspec.rspec_type.as_str())));
        }
        check_counts(&rspec)?;
        let mut wanted = Vec::new();
        for n in rspec.nodes.iter().filter(|n| self.is_ours(n)) {
            wanted.push(self.wanted(n)?);
        }
        if wanted.is_empty() {
            return Err(AmError::BadArgs("The request has no node for this aggregate".into()));
        }
        let existing = self.db.slice_slivers(slice)?;
        for w in &wanted {
            if existing.iter().any(|s| s.client_id == w.client_id) {
                return Err(AmError::AlreadyExists(format!("Slice {slice} already has a node {}", w.client_id)));
            }
        }
        if wanted.iter().filter(|w| !w.client_id.is_empty()).count()
            != wanted.iter().map(|w| w.client_id.as_str()).collect::<std::collections::HashSet<_>>().len()
        {
            return Err(AmError::BadArgs("Duplicate node client_id".into()));
        }
        let expires = (Utc::now() + Duration::seconds(self.cfg.lifetimes.allocation_timeout_secs)).min(cred_expires);

        // Placement and the insert happen under one lock so no two requests share room.
        let _guard = self.alloc_lock.lock().await;
        let rooms = self.rooms().await?;
        let reqs: Vec<VmRequest> = wanted
            .iter()
            .map(|w| VmRequest {
                client_id: w.client_id.clone(),
                bound_host: w.bound.clone(),
                vcpus: w.plan.vcpus,
                memory_mib: w.plan.memory_mib,
            })
            .collect();
        let hosts = place(&rooms, &reqs).map_err(|e| AmError::InsufficientNodes(e.to_string()))?;
        let slivers = self.db.with_tx(|c| self.record(c, slice, rspec_text, &rspec, &mut wanted, &hosts, expires))?;
        self.agents.invalidate();
        Ok(slivers)
    }

    /// Writes the allocation: segments for links, MACs and addresses for interfaces, slivers.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        c: &Connection,
        slice: &str,
        rspec_text: &str,
        rspec: &RSpec,
        wanted: &mut [Wanted<'_>],
        hosts: &[String],
        expires: DateTime<Utc>,
    ) -> Result<Vec<Sliver>, AmError> {
        let allocation = insert_allocation(c, slice, rspec_text)?;
        // Links: one segment each, and which link each interface is on.
        let mut iface_link: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let ours: std::collections::HashSet<&str> =
            wanted.iter().flat_map(|w| w.node.interfaces.iter().filter_map(|x| x.client_id.as_deref())).collect();
        for link in &rspec.links {
            let Some(lid) = link.client_id.clone() else {
                continue;
            };
            let mine: Vec<&str> = link
                .interface_refs
                .iter()
                .filter_map(|r| r.client_id.as_deref())
                .filter(|i| ours.contains(i))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let segment = free_segment(c)?;
            insert_link(
                c,
                &LinkRow {
                    urn: self.sliver_urn(&uuid::Uuid::new_v4()),
                    slice_urn: slice.to_string(),
                    allocation,
                    client_id: lid.to_string(),
                    segment,
                    alive: true,
                },
            )?;
            for i in mine {
                iface_link.insert(i.to_string(), (lid.to_string(), segment));
            }
        }
        let mut out = Vec::new();
        for (w, host) in wanted.iter_mut().zip(hosts) {
            for iface in &w.node.interfaces {
                let cid = iface.client_id.clone().unwrap_or_default();
                let n = next_counter(c, "mac", 1)?;
                let (link, segment) = match iface_link.get(cid.as_str()) {
                    Some((l, s)) => (Some(l.clone()), Some(*s)),
                    None => (None, None),
                };
                w.plan.nics.push(NicPlan {
                    client_id: cid.to_string(),
                    sliver_urn: self.sliver_urn(&uuid::Uuid::new_v4()),
                    mac: mac_for(n),
                    segment,
                    link,
                    ips: iface
                        .ips
                        .iter()
                        .filter_map(|ip| ip.addr().filter(|a| a.is_ipv4()).map(|a| (a, ip)))
                        .map(|(a, ip)| {
                            let len = ip.mask().map(Netmask::prefix_len).unwrap_or(24);
                            format!("{a}/{len}")
                        })
                        .collect(),
                });
            }
            let id = uuid::Uuid::new_v4();
            let s = Sliver {
                urn: self.sliver_urn(&id),
                slice_urn: slice.to_string(),
                allocation,
                client_id: w.client_id.clone(),
                host: host.clone(),
                domain: format!("vm-{}", id.simple()),
                state: SliverState::NEW.apply(Transition::Allocate).map_err(|e| AmError::Internal(e.to_string()))?,
                expires,
                error: String::new(),
                plan: w.plan.clone(),
            };
            insert_sliver(c, &s)?;
            out.push(s);
        }
        Ok(out)
    }
}

/// The request-wide counts, before any node is looked at.
fn check_counts(rspec: &RSpec) -> Result<(), AmError> {
    let too_many = |what: &str, n: usize, max: usize| {
        AmError::BadArgs(format!("The request has {n} {what}; at most {max} are accepted"))
    };
    if rspec.nodes.len() > limits::MAX_NODES {
        return Err(too_many("nodes", rspec.nodes.len(), limits::MAX_NODES));
    }
    if rspec.links.len() > limits::MAX_LINKS {
        return Err(too_many("links", rspec.links.len(), limits::MAX_LINKS));
    }
    let ifaces: usize = rspec.nodes.iter().map(|n| n.interfaces.len()).sum();
    if ifaces > limits::MAX_INTERFACES {
        return Err(too_many("interfaces", ifaces, limits::MAX_INTERFACES));
    }
    let refs: usize = rspec.links.iter().map(|l| l.interface_refs.len()).sum();
    if refs > limits::MAX_INTERFACES {
        return Err(too_many("interface_refs in its links", refs, limits::MAX_INTERFACES));
    }
    Ok(())
}

/// One node's numbers: RAM, vCPUs, disk, interfaces and addresses. (The reader has already
/// refused what does not parse: negative or non-numeric sizes, bad addresses and masks.)
fn check_node(client_id: &str, node: &Node) -> Result<(), AmError> {
    let out_of_range = |what: &str, v: u64, lo: u64, hi: u64| {
        AmError::BadArgs(format!("Node {client_id}: {what} {v} is out of range ({lo}..={hi})"))
    };
    if let Some(x) = node.sliver_type().and_then(|s| s.xen.as_ref()) {
        if let Some(ram) = x.ram.filter(|r| !(limits::MIN_MEMORY_MIB..=limits::MAX_MEMORY_MIB).contains(r)) {
            return Err(out_of_range("emulab:xen ram (MiB)", ram, limits::MIN_MEMORY_MIB, limits::MAX_MEMORY_MIB));
        }
        if let Some(cores) = x.cores.filter(|&c| c > limits::MAX_VCPUS) {
            return Err(out_of_range("emulab:xen cores", cores.into(), 0, limits::MAX_VCPUS.into()));
        }
        if let Some(disk) = x.disk.filter(|&d| d > limits::MAX_DISK_GB) {
            return Err(out_of_range("emulab:xen disk (GB)", disk, 0, limits::MAX_DISK_GB));
        }
    }
    if node.interfaces.len() > limits::MAX_INTERFACES_PER_NODE {
        return Err(AmError::BadArgs(format!(
            "Node {client_id} has {} interfaces; at most {} are accepted",
            node.interfaces.len(),
            limits::MAX_INTERFACES_PER_NODE
        )));
    }
    for i in &node.interfaces {
        let iface = i.client_id.as_deref().unwrap_or("?");
        if i.ips.len() > limits::MAX_IPS_PER_INTERFACE {
            return Err(AmError::BadArgs(format!(
                "Interface {iface} has {} addresses; at most {} are accepted",
                i.ips.len(),
                limits::MAX_IPS_PER_INTERFACE
            )));
        }
    }
    Ok(())
}

/// The smallest segment id no live link uses.
fn free_segment(c: &Connection) -> Result<u32, AmError> {
    let mut st = c.prepare_cached("SELECT segment FROM links WHERE alive = 1")?;
    let used: std::collections::HashSet<i64> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    (FIRST_SEGMENT..=LAST_SEGMENT)
        .find(|s| !used.contains(s))
        .map(|s| s as u32)
        .ok_or_else(|| AmError::InsufficientNodes("No free network segment".into()))
}

/// A locally administered unicast MAC from a counter: `02:76:6e:xx:xx:xx` ("vn").
pub fn mac_for(n: i64) -> String {
    let n = (n as u64) & 0xff_ffff;
    format!("02:76:6e:{:02x}:{:02x}:{:02x}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_local_unicast_and_distinct() {
        let a = mac_for(1);
        assert_eq!(a, "02:76:6e:00:00:01");
        assert_ne!(mac_for(2), a);
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "locally administered, unicast");
    }
}
