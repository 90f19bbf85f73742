//! Test slices on a lab (the 3-VM, 2-host, 2-segment one and N VMs round-robin over the
//! hosts) and slice snapshot/restore through the AM's coordinator called directly against
//! the lab's agents.

use super::VmRef;
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vnsnap_am::snapshot::coordinator::{self, HostPart, RestorePart, RestoreResult, SliceSnapshot, VmCut};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;

use crate::lab::Lab;

/// Segment L0 of the test slice (all three VMs).
pub const L0: SegmentId = 100;
/// Segment L1 of the test slice (vm2, vm3).
pub const L1: SegmentId = 101;

/// Options for a 2-host lab in a directory of its own (`/tmp/vsl-<pid>-<n>`): the default
/// `target/labs/<id>` can be removed by another process's lab teardown racing with our
/// claim of the same id. Short, because agents bind unix sockets below it (108 bytes).
pub fn lab_options() -> crate::lab::LabOptions {
    lab_options_hosts(2)
}

/// [`lab_options`] with `hosts` hosts.
pub fn lab_options_hosts(hosts: usize) -> crate::lab::LabOptions {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let dir = std::path::PathBuf::from(format!("/tmp/vsl-{}-{}", std::process::id(), nanos % 1_000_000));
    crate::lab::LabOptions { hosts, dir: Some(dir), ..Default::default() }
}

pub use crate::lab::vm_spec;

/// A slice's VMs and the clients of their hosts.
#[derive(Clone, Debug)]
pub struct Slice {
    /// One client per host (index = `VmRef::host`).
    pub clients: Vec<AgentClient>,
    /// The VMs.
    pub vms: Vec<VmRef>,
}

impl Slice {
    /// VM names on host `h`.
    pub fn names_on(&self, h: usize) -> Vec<String> {
        self.vms.iter().filter(|v| v.host == h).map(|v| v.name.clone()).collect()
    }
    /// Hosts that have VMs.
    pub fn hosts(&self) -> Vec<usize> {
        let mut h: Vec<usize> = self.vms.iter().map(|v| v.host).collect();
        h.sort_unstable();
        h.dedup();
        h
    }
}

/// One VM of a slice to build: its host (lab index), name and NICs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPlan {
    /// Lab host index.
    pub host: usize,
    /// Domain name.
    pub name: String,
    /// NICs in order: (MAC, segment, `ip/prefix`).
    pub nics: Vec<(String, SegmentId, String)>,
}

impl VmPlan {
    fn vm_ref(&self) -> VmRef {
        let ips = self.nics.iter().map(|(_, seg, ip)| (*seg, ip.split('/').next().unwrap_or(ip).to_string())).collect();
        VmRef { host: self.host, name: self.name.clone(), ips }
    }
}

/// The layout of the 3-VM test slice: vm1 (L0) and vm2 (L0, L1) on host 0, vm3 (L0, L1)
/// on host 1.
pub fn three_vm_plan() -> Vec<VmPlan> {
    let nic = |mac: &str, seg, ip: &str| (mac.to_string(), seg, ip.to_string());
    vec![
        VmPlan { host: 0, name: "vm1".into(), nics: vec![nic("52:54:00:00:00:11", L0, "10.10.0.1/24")] },
        VmPlan {
            host: 0,
            name: "vm2".into(),
            nics: vec![nic("52:54:00:00:00:21", L0, "10.10.0.2/24"), nic("52:54:00:00:01:21", L1, "10.20.0.2/24")],
        },
        VmPlan {
            host: 1,
            name: "vm3".into(),
            nics: vec![nic("52:54:00:00:00:31", L0, "10.10.0.3/24"), nic("52:54:00:00:01:31", L1, "10.20.0.3/24")],
        },
    ]
}

/// An N-VM layout: `vm1..vmN` round-robin over `hosts` hosts, every VM on L0
/// (`10.10.0.<i>`) and, with `segments == 2`, also on L1 (`10.20.0.<i>`). The checker's
/// ring then runs over L0 and its UDP streams over the last shared segment (L1 with two).
pub fn n_vm_plan(n: usize, hosts: usize, segments: usize) -> anyhow::Result<Vec<VmPlan>> {
    if !(1..=250).contains(&n) || hosts == 0 || !(1..=2).contains(&segments) {
        bail!("a slice of 1..=250 VMs on at least one host and one or two segments (got {n}, {hosts}, {segments})");
    }
    Ok((1..=n)
        .map(|i| VmPlan {
            host: (i - 1) % hosts,
            name: format!("vm{i}"),
            nics: [(L0, "10.10.0"), (L1, "10.20.0")][..segments]
                .iter()
                .enumerate()
                .map(|(s, (seg, net))| (format!("52:54:00:00:{s:02x}:{i:02x}"), *seg, format!("{net}.{i}/24")))
                .collect(),
        })
        .collect())
}

/// Defines and starts the VMs of `plan` on `lab` (each segment joined by tunnels between
/// every host that has a VM on it) and waits up to `timeout` until every guest answers.
pub async fn build_slice(lab: &Lab, plan: &[VmPlan], mem_mib: u64, timeout: Duration) -> anyhow::Result<Slice> {
    let clients = (0..lab.hosts.len()).map(|h| lab.client(h)).collect::<anyhow::Result<Vec<_>>>()?;
    for vm in plan {
        let c = clients.get(vm.host).ok_or_else(|| anyhow!("{}: no host {} in the lab", vm.name, vm.host))?;
        let nics: Vec<(&str, SegmentId, &str)> =
            vm.nics.iter().map(|(m, s, ip)| (m.as_str(), *s, ip.as_str())).collect();
        c.define(&vm_spec(lab, &vm.name, mem_mib, &nics)).await?;
    }
    // The segments' tunnels are in place before any guest sends.
    let mut segments: BTreeMap<SegmentId, Vec<usize>> = BTreeMap::new();
    for vm in plan {
        for (_, seg, _) in &vm.nics {
            segments.entry(*seg).or_default().push(vm.host);
        }
    }
    let mut tunnels = Vec::new();
    for c in &clients {
        tunnels.push(c.host().await?.tunnel);
    }
    for (seg, mut hosts) in segments {
        hosts.sort_unstable();
        hosts.dedup();
        for &h in &hosts {
            let peers = hosts.iter().filter(|&&o| o != h).map(|&o| tunnels[o].clone()).collect();
            clients[h].set_segment_peers(seg, &SegmentPeers { peers }).await?;
        }
    }
    // Hosts start their VMs in parallel, each host one after the other.
    let mut set = tokio::task::JoinSet::new();
    for (h, c) in clients.iter().enumerate() {
        let (c, names) = (c.clone(), plan.iter().filter(|v| v.host == h).map(|v| v.name.clone()).collect::<Vec<_>>());
        set.spawn(async move {
            for n in names {
                c.action(&n, Action::Start, &ActionRequest::default()).await.with_context(|| format!("start {n}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let slice = Slice { clients, vms: plan.iter().map(VmPlan::vm_ref).collect() };
    wait_guests(&slice, timeout).await?;
    Ok(slice)
}

/// Defines and starts the test slice on hosts 0 and 1 of `lab` ([`three_vm_plan`]); waits
/// until every guest answers.
pub async fn three_vm_slice(lab: &Lab, mem_mib: u64) -> anyhow::Result<Slice> {
    build_slice(lab, &three_vm_plan(), mem_mib, Duration::from_secs(180)).await
}

/// Waits until every VM of the slice runs and its guest answers.
pub async fn wait_guests(slice: &Slice, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for vm in &slice.vms {
        let c = &slice.clients[vm.host];
        loop {
            if let Ok(d) = c.domain(&vm.name).await {
                if d.guest_ready && d.state == DomainState::Running {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("guest {} not ready within {timeout:?}", vm.name);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// The smallest epoch above every port epoch of the slice's hosts.
pub async fn next_epoch(slice: &Slice) -> anyhow::Result<u64> {
    let mut max = 0;
    for h in slice.hosts() {
        for p in slice.clients[h].switch().await?.ports {
            max = max.max(p.epoch);
        }
    }
    Ok(max + 1)
}

/// A committed slice snapshot (the coordinator's result plus the host indexes, in the
/// coordinator's host order).
#[derive(Clone, Debug)]
pub struct Taken {
    /// Snapshot id.
    pub id: String,
    /// Its epoch.
    pub epoch: u64,
    /// Host index of each entry of `snap.hosts`.
    pub hosts: Vec<usize>,
    /// What the coordinator returned.
    pub snap: SliceSnapshot,
}

impl Taken {
    /// Every VM's cut, ordered by cut instant.
    pub fn domain_cuts(&self) -> &[VmCut] {
        &self.snap.cuts
    }
    /// Last cut instant minus first, ms.
    pub fn skew_ms(&self) -> f64 {
        self.snap.skew_ns as f64 / 1e6
    }
    /// Bytes of all image files (memory, disks, channel logs).
    pub fn image_bytes(&self) -> u64 {
        self.snap.image_bytes
    }
    /// Bytes of the memory images only.
    pub fn memory_bytes(&self) -> u64 {
        self.snap.hosts.iter().flat_map(|c| c.domains.iter()).map(|d| d.memory.bytes).sum()
    }
    /// When the last memory image was on disk, Unix ns (if every image says).
    pub fn saved_at_ns(&self) -> Option<u128> {
        let mut last = 0u128;
        for d in self.snap.hosts.iter().flat_map(|c| c.domains.iter()) {
            last = last.max(d.memory.saved_at_ns? as u128);
        }
        Some(last)
    }
    /// (held, recorded, dropped) frames summed over hosts.
    pub fn frames(&self) -> (u64, u64, u64) {
        let f = self.snap.frames;
        (f.held, f.recorded, f.dropped)
    }
    /// The commit reply of host index `h`.
    pub fn commit_of(&self, h: usize) -> Option<&CommitReply> {
        self.hosts.iter().position(|&x| x == h).map(|i| &self.snap.hosts[i])
    }
}

/// An error with all its sources, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn parts(slice: &Slice) -> (Vec<usize>, Vec<HostPart>) {
    let hosts = slice.hosts();
    let parts = hosts
        .iter()
        .map(|&h| HostPart {
            client: slice.clients[h].clone(),
            host: format!("host{}", h + 1),
            domains: slice.names_on(h),
        })
        .collect();
    (hosts, parts)
}

/// Snapshots the slice with `vnsnap_am::snapshot::coordinator::snapshot_slice` (prepare,
/// parallel cut, save, commit; abort everywhere on failure).
pub async fn snapshot(slice: &Slice, id: &str, epoch: u64, req: &CutRequest) -> anyhow::Result<Taken> {
    let (hosts, parts) = parts(slice);
    let snap = coordinator::snapshot_slice(&parts, id, epoch, req, |_| {})
        .await
        .map_err(|e| anyhow!("snapshot {id}: {}", chain(&e)))?;
    Ok(Taken { id: id.into(), epoch, hosts, snap })
}

/// Restores a committed snapshot on the hosts it was taken on with
/// `coordinator::restore_slice` (prepare everywhere, all-or-nothing, then resume everywhere).
pub async fn restore(slice: &Slice, snap: &Taken, restore_id: &str) -> anyhow::Result<RestoreResult> {
    let epoch = next_epoch(slice).await?;
    let parts: Vec<RestorePart> = snap
        .hosts
        .iter()
        .zip(&snap.snap.hosts)
        .map(|(&h, c)| RestorePart {
            client: slice.clients[h].clone(),
            host: format!("host{}", h + 1),
            snapshot_id: snap.id.clone(),
            domains: c.domains.clone(),
            epoch,
        })
        .collect();
    coordinator::restore_slice(&parts, restore_id, |_| {})
        .await
        .map_err(|e| anyhow!("restore of {}: {}", snap.id, chain(&e)))
}

/// Deletes a snapshot on every host it was taken on.
pub async fn delete(slice: &Slice, snap: &Taken) -> anyhow::Result<()> {
    for &h in &snap.hosts {
        slice.clients[h].snapshot_delete(&snap.id).await.with_context(|| format!("delete {} on host {h}", snap.id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_vm_plan_spreads_vms_round_robin_on_both_segments() {
        let p = n_vm_plan(16, 4, 2).unwrap();
        assert_eq!(p.len(), 16);
        for h in 0..4 {
            assert_eq!(p.iter().filter(|v| v.host == h).count(), 4);
        }
        assert_eq!(p[4].host, 0);
        assert_eq!(p[15].name, "vm16");
        assert_eq!(
            p[15].nics,
            vec![
                ("52:54:00:00:00:10".to_string(), L0, "10.10.0.16/24".to_string()),
                ("52:54:00:00:01:10".to_string(), L1, "10.20.0.16/24".to_string()),
            ]
        );
        assert_eq!(p[15].vm_ref().ips, vec![(L0, "10.10.0.16".to_string()), (L1, "10.20.0.16".to_string())]);
        let macs: std::collections::BTreeSet<_> = p.iter().flat_map(|v| v.nics.iter().map(|n| n.0.clone())).collect();
        assert_eq!(macs.len(), 32);
    }

    #[test]
    fn n_vm_plan_rejects_bad_layouts() {
        assert!(n_vm_plan(0, 4, 1).is_err());
        assert!(n_vm_plan(251, 4, 1).is_err());
        assert!(n_vm_plan(8, 0, 1).is_err());
        assert!(n_vm_plan(8, 4, 3).is_err());
        assert_eq!(n_vm_plan(8, 4, 1).unwrap()[7].nics.len(), 1);
    }
}
