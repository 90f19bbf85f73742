//! A test slice on a lab (3 VMs, 2 hosts, 2 segments) and slice snapshot/restore through
//! the AM's coordinator called directly against the lab's agents.

use super::VmRef;
use anyhow::{anyhow, bail, Context};
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
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let dir = std::path::PathBuf::from(format!("/tmp/vsl-{}-{}", std::process::id(), nanos % 1_000_000));
    crate::lab::LabOptions { hosts: 2, dir: Some(dir), ..Default::default() }
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

/// Defines and starts the test slice on hosts 0 and 1 of `lab`: vm1 (L0) and vm2 (L0, L1)
/// on host 0, vm3 (L0, L1) on host 1; waits until every guest answers.
pub async fn three_vm_slice(lab: &Lab, mem_mib: u64) -> anyhow::Result<Slice> {
    let a = lab.client(0)?;
    let b = lab.client(1)?;
    let (ha, hb) = (a.host().await?, b.host().await?);
    a.define(&vm_spec(lab, "vm1", mem_mib, &[("52:54:00:00:00:11", L0, "10.10.0.1/24")])).await?;
    a.define(&vm_spec(
        lab,
        "vm2",
        mem_mib,
        &[("52:54:00:00:00:21", L0, "10.10.0.2/24"), ("52:54:00:00:01:21", L1, "10.20.0.2/24")],
    ))
    .await?;
    b.define(&vm_spec(
        lab,
        "vm3",
        mem_mib,
        &[("52:54:00:00:00:31", L0, "10.10.0.3/24"), ("52:54:00:00:01:31", L1, "10.20.0.3/24")],
    ))
    .await?;
    for seg in [L0, L1] {
        a.set_segment_peers(seg, &SegmentPeers { peers: vec![hb.tunnel.clone()] }).await?;
        b.set_segment_peers(seg, &SegmentPeers { peers: vec![ha.tunnel.clone()] }).await?;
    }
    for n in ["vm1", "vm2"] {
        a.action(n, Action::Start, &ActionRequest::default()).await?;
    }
    b.action("vm3", Action::Start, &ActionRequest::default()).await?;
    let slice = Slice {
        clients: vec![a, b],
        vms: vec![
            VmRef { host: 0, name: "vm1".into(), ips: vec![(L0, "10.10.0.1".into())] },
            VmRef { host: 0, name: "vm2".into(), ips: vec![(L0, "10.10.0.2".into()), (L1, "10.20.0.2".into())] },
            VmRef { host: 1, name: "vm3".into(), ips: vec![(L0, "10.10.0.3".into()), (L1, "10.20.0.3".into())] },
        ],
    };
    wait_guests(&slice, Duration::from_secs(180)).await?;
    Ok(slice)
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
