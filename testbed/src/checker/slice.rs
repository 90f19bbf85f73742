//! A test slice on a lab (3 VMs, 2 hosts, 2 segments) and slice snapshot/restore driven
//! straight through the agents (prepare -> cut in parallel -> save -> commit, abort on any
//! failure; restore prepare on all hosts -> resume on all hosts, abort on any failure).

use super::VmRef;
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;

use crate::lab::Lab;

/// Segment L0 of the test slice (all three VMs).
pub const L0: SegmentId = 100;
/// Segment L1 of the test slice (vm2, vm3).
pub const L1: SegmentId = 101;

/// A domain spec booting the lab's guest image with the given NICs `(mac, segment, ip/prefix)`.
pub fn vm_spec(lab: &Lab, name: &str, mem: u64, nics: &[(&str, SegmentId, &str)]) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        vcpus: 1,
        memory_mib: mem,
        boot: Boot::Kernel {
            kernel: lab.kernel.display().to_string(),
            initrd: Some(lab.initrd.display().to_string()),
            cmdline: String::new(),
        },
        disks: vec![DiskSpec { base: lab.data_disk.display().to_string(), size_mib: None }],
        nics: nics.iter().map(|(mac, seg, ip)| NicSpec { mac: mac.to_string(), segment: *seg, ips: vec![ip.to_string()] }).collect(),
        hostname: None,
        autostart: false,
    }
}

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
    a.define(&vm_spec(lab, "vm2", mem_mib, &[("52:54:00:00:00:21", L0, "10.10.0.2/24"), ("52:54:00:00:01:21", L1, "10.20.0.2/24")])).await?;
    b.define(&vm_spec(lab, "vm3", mem_mib, &[("52:54:00:00:00:31", L0, "10.10.0.3/24"), ("52:54:00:00:01:31", L1, "10.20.0.3/24")])).await?;
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

/// A committed slice snapshot.
#[derive(Clone, Debug)]
pub struct Taken {
    /// Snapshot id.
    pub id: String,
    /// Its epoch.
    pub epoch: u64,
    /// Cut replies per host index.
    pub cuts: BTreeMap<usize, CutReply>,
    /// Commit replies per host index.
    pub commits: BTreeMap<usize, CommitReply>,
    /// Time of the cut phase (all hosts), ms.
    pub cut_ms: u64,
    /// Time from the end of the cut until every host saved, ms.
    pub save_ms: u64,
    /// prepare..commit, ms.
    pub total_ms: u64,
}

impl Taken {
    /// Every domain cut.
    pub fn domain_cuts(&self) -> Vec<&DomainCut> {
        self.cuts.values().flat_map(|c| c.cuts.iter()).collect()
    }
    /// Last cut instant minus first, ms.
    pub fn skew_ms(&self) -> f64 {
        let c = self.domain_cuts();
        let lo = c.iter().map(|d| d.cut_at_ns).min().unwrap_or(0);
        let hi = c.iter().map(|d| d.cut_at_ns).max().unwrap_or(0);
        (hi - lo) as f64 / 1e6
    }
    /// Bytes of all image files (memory, disks, channel logs).
    pub fn image_bytes(&self) -> u64 {
        self.commits
            .values()
            .flat_map(|c| c.domains.iter())
            .map(|d| d.memory.bytes + d.disks.iter().map(|f| f.bytes).sum::<u64>() + d.channel_logs.iter().map(|f| f.bytes).sum::<u64>())
            .sum()
    }
    /// Bytes of the memory images only.
    pub fn memory_bytes(&self) -> u64 {
        self.commits.values().flat_map(|c| c.domains.iter()).map(|d| d.memory.bytes).sum()
    }
    /// (held, recorded, dropped) frames summed over hosts.
    pub fn frames(&self) -> (u64, u64, u64) {
        self.commits.values().fold((0, 0, 0), |a, c| (a.0 + c.held_frames, a.1 + c.recorded_frames, a.2 + c.dropped_frames))
    }
}

async fn abort_all(slice: &Slice, id: &str, hosts: &[usize]) {
    for &h in hosts {
        let _ = slice.clients[h].snapshot_abort(id).await;
    }
}

/// Snapshots the slice through the agents: prepare on every host, cut on every host in
/// parallel, wait for every save, commit. Any failure before commit aborts every host.
pub async fn snapshot(slice: &Slice, id: &str, epoch: u64, req: &CutRequest, save_timeout: Duration) -> anyhow::Result<Taken> {
    let hosts = slice.hosts();
    let t0 = Instant::now();
    let r = snapshot_inner(slice, id, epoch, req, save_timeout, &hosts, t0).await;
    if r.is_err() {
        abort_all(slice, id, &hosts).await;
    }
    r
}

async fn snapshot_inner(
    slice: &Slice,
    id: &str,
    epoch: u64,
    req: &CutRequest,
    save_timeout: Duration,
    hosts: &[usize],
    t0: Instant,
) -> anyhow::Result<Taken> {
    for &h in hosts {
        slice.clients[h]
            .snapshot_prepare(&PrepareRequest { snapshot: id.into(), epoch, domains: slice.names_on(h) })
            .await
            .with_context(|| format!("prepare on host {h}"))?;
    }
    let tc = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for &h in hosts {
        let (c, id, req) = (slice.clients[h].clone(), id.to_string(), req.clone());
        set.spawn(async move { (h, c.snapshot_cut(&id, &req).await) });
    }
    let mut cuts = BTreeMap::new();
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let (h, r) = r?;
        match r {
            Ok(c) => {
                cuts.insert(h, c);
            }
            Err(e) => {
                first_err.get_or_insert_with(|| anyhow!("cut on host {h}: {e:#}"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let cut_ms = tc.elapsed().as_millis() as u64;
    let ts = Instant::now();
    let deadline = ts + save_timeout;
    for &h in hosts {
        loop {
            let st = slice.clients[h].snapshot_status(id).await.with_context(|| format!("status on host {h}"))?;
            match st.phase {
                SavePhase::Saved | SavePhase::Committed => break,
                SavePhase::Failed => bail!("save on host {h} failed: {}", st.error.unwrap_or_default()),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!("save on host {h} not done within {save_timeout:?} ({} of {} bytes)", st.bytes_written, st.bytes_total);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let save_ms = ts.elapsed().as_millis() as u64;
    let mut commits = BTreeMap::new();
    for &h in hosts {
        commits.insert(h, slice.clients[h].snapshot_commit(id).await.with_context(|| format!("commit on host {h}"))?);
    }
    Ok(Taken { id: id.into(), epoch, cuts, commits, cut_ms, save_ms, total_ms: t0.elapsed().as_millis() as u64 })
}

/// Restores a committed snapshot on the hosts it was taken on: prepare everywhere, then
/// resume everywhere; a failed prepare aborts every host. Returns (prepare ms, total ms).
pub async fn restore(slice: &Slice, snap: &Taken, restore_id: &str) -> anyhow::Result<(u64, u64)> {
    let t0 = Instant::now();
    let hosts: Vec<usize> = snap.commits.keys().copied().collect();
    let mut set = tokio::task::JoinSet::new();
    for &h in &hosts {
        let c = slice.clients[h].clone();
        let req = RestoreRequest { restore: restore_id.into(), snapshot: snap.id.clone(), domains: snap.commits[&h].domains.clone() };
        set.spawn(async move { (h, c.restore_prepare(&req).await) });
    }
    let mut err = None;
    while let Some(r) = set.join_next().await {
        let (h, r) = r?;
        if let Err(e) = r {
            err.get_or_insert_with(|| anyhow!("restore prepare on host {h}: {e:#}"));
        }
    }
    if let Some(e) = err {
        for &h in &hosts {
            let _ = slice.clients[h].restore_abort(restore_id).await;
        }
        return Err(e);
    }
    let prep = t0.elapsed().as_millis() as u64;
    let mut set = tokio::task::JoinSet::new();
    for &h in &hosts {
        let (c, id) = (slice.clients[h].clone(), restore_id.to_string());
        set.spawn(async move { (h, c.restore_resume(&id).await) });
    }
    while let Some(r) = set.join_next().await {
        let (h, r) = r?;
        r.with_context(|| format!("restore resume on host {h}"))?;
    }
    Ok((prep, t0.elapsed().as_millis() as u64))
}
