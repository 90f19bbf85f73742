//! Starting the workloads and checking the invariants.

use super::invariants::{self, RingNode};
use super::{Report, VmRef, WorkloadOptions};
use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vnsnap_proto::client::AgentClient;

/// One request to a VM's guest program; `Err` unless it answered `ok`.
pub(crate) async fn guest(client: &AgentClient, vm: &str, req: Value) -> anyhow::Result<Value> {
    let op = req.get("op").and_then(Value::as_str).unwrap_or("?").to_string();
    let r = client.guest(vm, &req).await.map_err(|e| anyhow!("{vm}: guest {op}: {e:#}"))?;
    if r.get("ok").and_then(Value::as_bool) != Some(true) {
        bail!("{vm}: guest {op} failed: {}", r.get("error").and_then(Value::as_str).unwrap_or("?"));
    }
    Ok(r)
}

/// A stall meter's longest arrival gap since its last reset.
#[derive(Clone, Copy, Debug)]
pub struct StallGap {
    /// Its length, ms.
    pub ms: f64,
    /// When it began, host Unix ns (`None` before the meter saw two arrivals).
    pub began_ns: Option<u128>,
}

/// Workloads running on a slice.
#[derive(Debug)]
pub struct Workloads {
    clients: Vec<AgentClient>,
    vms: Vec<VmRef>,
    opts: WorkloadOptions,
    /// Source IP -> VM name.
    ip_of: BTreeMap<String, String>,
    /// TCPTimeouts per VM at the baseline.
    tcp_base: Mutex<BTreeMap<String, u64>>,
}

/// The address of `to` that `from` reaches it by: on the first (or, with `last`, the last)
/// segment both are attached to.
fn shared_ip(from: &VmRef, to: &VmRef, last: bool) -> anyhow::Result<String> {
    let shared: Vec<&String> =
        to.ips.iter().filter(|(s, _)| from.ips.iter().any(|(t, _)| t == s)).map(|(_, ip)| ip).collect();
    let ip = if last { shared.last() } else { shared.first() };
    ip.map(|s| s.to_string()).ok_or_else(|| anyhow!("{} and {} share no segment", from.name, to.name))
}

fn tcp_timeouts(netstat: &Value) -> u64 {
    netstat.get("TCPTimeouts").and_then(Value::as_u64).unwrap_or(0)
}

impl Workloads {
    /// Starts every workload on every VM of the slice. `clients[vm.host]` reaches each VM.
    pub async fn start(clients: &[AgentClient], vms: &[VmRef], opts: WorkloadOptions) -> anyhow::Result<Workloads> {
        if vms.len() < 2 {
            bail!("the checker needs at least two VMs");
        }
        let w = Workloads {
            clients: clients.to_vec(),
            vms: vms.to_vec(),
            ip_of: vms.iter().flat_map(|v| v.ips.iter().map(|(_, ip)| (ip.clone(), v.name.clone()))).collect(),
            opts,
            tcp_base: Mutex::new(BTreeMap::new()),
        };
        let n = vms.len();
        let o = &w.opts;
        let mut reqs: Vec<Vec<Value>> = vec![Vec::new(); n];
        for (i, vm) in vms.iter().enumerate() {
            let next = &vms[(i + 1) % n];
            // Each node only uses its successor's entry of `peers`.
            let mut peers = vec![String::new(); n];
            peers[(i + 1) % n] = shared_ip(vm, next, false)?;
            for (j, p) in peers.iter_mut().enumerate() {
                if p.is_empty() {
                    *p = vms[j].ips.first().map(|x| x.1.clone()).unwrap_or_default();
                }
            }
            let r = &mut reqs[i];
            r.push(json!({"op": "disk_start", "interval_ms": o.disk_interval_ms}));
            r.push(json!({"op": "udp_start", "dst": format!("{}:{}", shared_ip(vm, next, true)?, o.udp_port), "rate_hz": o.udp_rate_hz, "listen_port": o.udp_port}));
            if o.stall {
                r.push(json!({"op": "stall_start", "dst": format!("{}:{}", shared_ip(vm, next, false)?, o.stall_port), "hz": o.stall_hz, "listen_port": o.stall_port}));
            }
            if let Some(mib) = o.mem_mib {
                r.push(json!({"op": "mem_start", "mib": mib, "rate_mib_s": o.mem_rate_mib_s}));
            }
            r.push(
                json!({"op": "ring_start", "index": i, "peers": peers, "port": o.ring_port, "tokens": o.ring_tokens}),
            );
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in reqs.into_iter().enumerate() {
            let (c, name) = (w.clients[vms[i].host].clone(), vms[i].name.clone());
            set.spawn(async move {
                for q in r {
                    guest(&c, &name, q).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        w.reset_tcp_baseline().await?;
        Ok(w)
    }

    /// The VMs.
    pub fn vms(&self) -> &[VmRef] {
        &self.vms
    }

    /// The options.
    pub fn options(&self) -> &WorkloadOptions {
        &self.opts
    }

    /// Replaces the agent clients (after an agent restart).
    pub fn set_clients(&mut self, clients: &[AgentClient]) {
        self.clients = clients.to_vec();
    }

    /// Sends `req(i)` to every VM at once; results in VM order.
    pub async fn on_all(&self, req: impl Fn(usize) -> Value) -> Vec<anyhow::Result<Value>> {
        let out = self.on_where(|_| true, req).await;
        out.into_iter().map(|o| o.unwrap_or_else(|| Err(anyhow!("no reply")))).collect()
    }

    /// Sends `req(i)` at once to every VM that `pick` selects; results in VM order, `None`
    /// for a VM not asked.
    async fn on_where(
        &self,
        pick: impl Fn(&VmRef) -> bool,
        req: impl Fn(usize) -> Value,
    ) -> Vec<Option<anyhow::Result<Value>>> {
        let mut set = tokio::task::JoinSet::new();
        let mut out: Vec<Option<anyhow::Result<Value>>> = (0..self.vms.len()).map(|_| None).collect();
        for (i, vm) in self.vms.iter().enumerate().filter(|(_, vm)| pick(vm)) {
            let (c, name, q) = (self.clients[vm.host].clone(), vm.name.clone(), req(i));
            out[i] = Some(Err(anyhow!("{name}: no reply")));
            set.spawn(async move { (i, guest(&c, &name, q).await) });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok((i, v)) => out[i] = Some(v),
                Err(e) => return (0..self.vms.len()).map(|_| Some(Err(anyhow!("task failed: {e}")))).collect(),
            }
        }
        out
    }

    async fn states(&self) -> Vec<anyhow::Result<Value>> {
        self.on_all(|_| json!({"op": "state"})).await
    }

    /// Takes the current TCPTimeouts of every VM as the new zero.
    pub async fn reset_tcp_baseline(&self) -> anyhow::Result<()> {
        let mut base = BTreeMap::new();
        for (vm, r) in self.vms.iter().zip(self.on_all(|_| json!({"op": "netstat"})).await) {
            base.insert(vm.name.clone(), tcp_timeouts(&r?));
        }
        *self.tcp_base.lock().unwrap() = base;
        Ok(())
    }

    /// TCPTimeouts per VM since the baseline.
    pub async fn tcp_timeouts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self.tcp_timeouts_timed().await?.0)
    }

    /// TCPTimeouts per VM since the baseline, and when each VM's timeouts happened (wall
    /// clock, ns since the Unix epoch) as far back as the guest watches them (the guests
    /// poll the counter every 25 ms from their first `netstat`; see the guest's `rto`
    /// module), from one `netstat` per VM.
    pub async fn tcp_timeouts_timed(&self) -> anyhow::Result<(BTreeMap<String, u64>, BTreeMap<String, Vec<u128>>)> {
        self.tcp_timeouts_timed_except(&[]).await
    }

    /// [`Self::tcp_timeouts_timed`] of every VM but those named in `skip` (a VM whose QEMU is
    /// stopped cannot answer its guest channel).
    pub async fn tcp_timeouts_timed_except(
        &self,
        skip: &[&str],
    ) -> anyhow::Result<(BTreeMap<String, u64>, BTreeMap<String, Vec<u128>>)> {
        let base = self.tcp_base.lock().unwrap().clone();
        let (mut counts, mut instants) = (BTreeMap::new(), BTreeMap::new());
        let asked = self.on_where(|vm| !skip.contains(&vm.name.as_str()), |_| json!({"op": "netstat"})).await;
        for (vm, r) in self.vms.iter().zip(asked) {
            let Some(r) = r else { continue };
            let r = r?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            counts.insert(vm.name.clone(), tcp_timeouts(&r).saturating_sub(base.get(&vm.name).copied().unwrap_or(0)));
            let ages = r.get("TCPTimeouts_ms_ago").and_then(Value::as_array).cloned().unwrap_or_default();
            let at = ages.iter().filter_map(Value::as_f64).map(|ms| now.saturating_sub((ms * 1e6) as u128)).collect();
            instants.insert(vm.name.clone(), at);
        }
        Ok((counts, instants))
    }

    /// Resets every stall meter (max gap starts over).
    pub async fn stall_reset(&self) -> anyhow::Result<()> {
        for r in self.on_all(|_| json!({"op": "stall_reset"})).await {
            r?;
        }
        Ok(())
    }

    /// Longest arrival gap of each VM's stall meter since the last reset (keyed by the
    /// receiving VM; the sender is its predecessor in VM order), with when it began.
    pub async fn stall_max_gaps(&self) -> anyhow::Result<BTreeMap<String, StallGap>> {
        let mut out = BTreeMap::new();
        for (vm, r) in self.vms.iter().zip(self.states().await) {
            let st = r?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            let ms = st
                .pointer("/stall/max_gap_ms")
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("{}: stall meter not running", vm.name))?;
            // The guest says how long ago the gap began; no gap yet, no instant.
            let began_ns = st
                .pointer("/stall/max_gap_began_ms_ago")
                .and_then(Value::as_f64)
                .map(|ago| now.saturating_sub((ago * 1e6) as u128));
            out.insert(vm.name.clone(), StallGap { ms, began_ns });
        }
        Ok(out)
    }

    /// Waits until every workload has visibly started: ring tokens circulating, every UDP
    /// receiver has data, every disk counter ticked.
    pub async fn wait_flowing(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for (vm, r) in self.vms.iter().zip(self.states().await) {
                match r {
                    Ok(st) => {
                        if st.pointer("/ring/records_received").and_then(Value::as_u64).unwrap_or(0) == 0 {
                            missing.push(format!("{}: ring", vm.name));
                        }
                        if st.pointer("/udp/received").and_then(Value::as_u64).unwrap_or(0) == 0 {
                            missing.push(format!("{}: udp", vm.name));
                        }
                        if st.pointer("/disk/ticks").and_then(Value::as_u64).unwrap_or(0) == 0 {
                            missing.push(format!("{}: disk", vm.name));
                        }
                        if self.opts.stall && st.pointer("/stall/count").and_then(Value::as_u64).unwrap_or(0) == 0 {
                            missing.push(format!("{}: stall", vm.name));
                        }
                    }
                    Err(e) => missing.push(format!("{e:#}")),
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("workloads not flowing after {timeout:?}: {}", missing.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Pauses the ring on every node and waits until every link is drained; returns the
    /// nodes, or the links still unsettled at the deadline.
    async fn quiesce_ring(&self) -> Result<Vec<RingNode>, (Vec<String>, Vec<RingNode>)> {
        let deadline = Instant::now() + self.opts.quiesce_timeout;
        let mut prev: Option<Vec<RingNode>> = None;
        loop {
            let mut nodes = Vec::new();
            let mut errs = Vec::new();
            for (vm, r) in self.vms.iter().zip(self.on_all(|_| json!({"op": "ring_pause"})).await) {
                match r.and_then(|v| {
                    RingNode::from_state(&vm.name, &v["ring"]).ok_or_else(|| anyhow!("{}: ring not running", vm.name))
                }) {
                    Ok(n) => nodes.push(n),
                    Err(e) => errs.push(format!("{e:#}")),
                }
            }
            if !errs.is_empty() {
                return Err((errs, nodes));
            }
            let unsettled = invariants::ring_unsettled(&nodes);
            // Settled twice in a row with the same counts: no token is between a node's
            // forwarding thread and its socket.
            if unsettled.is_empty() && prev.as_ref() == Some(&nodes) {
                return Ok(nodes);
            }
            if Instant::now() > deadline {
                let mut u = unsettled;
                if u.is_empty() {
                    u.push("ring counters kept changing while paused".into());
                }
                return Err((u, nodes));
            }
            prev = Some(nodes);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Verifies every invariant (see the module docs). The ring is paused while it is
    /// counted and resumed afterwards. Never fails: an unreachable guest is a violation.
    pub async fn check(&self) -> Report {
        let mut rep = Report::default();
        let t0 = Instant::now();
        // 1. Receivers' UDP view first (the orphan rule compares it with later sender state).
        let before: Vec<Option<Value>> = self
            .states()
            .await
            .into_iter()
            .map(|r| r.map_err(|e| rep.violations.push(format!("state unreadable: {e:#}"))).ok())
            .collect();
        // 2. The ring.
        let tq = Instant::now();
        match self.quiesce_ring().await {
            Ok(nodes) => {
                rep.ring_quiesce_ms = tq.elapsed().as_millis() as u64;
                rep.ring_tokens_found = nodes.iter().map(|n| n.held.len()).sum();
                rep.violations.extend(invariants::ring_tokens(&nodes, self.opts.ring_tokens));
            }
            Err((why, nodes)) => {
                rep.ring_quiesce_ms = tq.elapsed().as_millis() as u64;
                rep.ring_tokens_found = nodes.iter().map(|n| n.held.len()).sum();
                rep.violations.push(format!(
                    "ring did not quiesce within {:?}: {}",
                    self.opts.quiesce_timeout,
                    why.join("; ")
                ));
                if !nodes.is_empty() {
                    rep.violations.extend(invariants::ring_tokens(&nodes, self.opts.ring_tokens));
                }
            }
        }
        for (vm, r) in self.vms.iter().zip(self.on_all(|_| json!({"op": "ring_resume"})).await) {
            if let Err(e) = r {
                rep.violations.push(format!("{}: ring_resume: {e:#}", vm.name));
            }
        }
        // 3. Let the streams run a little so progress is visible.
        let min_gap = Duration::from_millis(300);
        if t0.elapsed() < min_gap {
            tokio::time::sleep(min_gap - t0.elapsed()).await;
        }
        let after: Vec<Option<Value>> = self
            .states()
            .await
            .into_iter()
            .map(|r| r.map_err(|e| rep.violations.push(format!("state unreadable: {e:#}"))).ok())
            .collect();
        let name = |i: usize| self.vms[i].name.clone();
        let recv: BTreeMap<String, Value> =
            before.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (name(i), s["udp"].clone()))).collect();
        let send: BTreeMap<String, Value> =
            after.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (name(i), s["udp"].clone()))).collect();
        // Orphans: receivers as read before vs senders as read after.
        let orphans = invariants::udp_streams(&recv, &send, &self.ip_of);
        rep.violations.extend(orphans.violations.into_iter().filter(|v| v.contains("only sent up to")));
        // Duplicates, gaps: the latest receiver state.
        let latest = invariants::udp_streams(&send, &BTreeMap::new(), &self.ip_of);
        rep.udp_gaps = latest.gaps;
        rep.udp_duplicates = latest.duplicates;
        rep.violations.extend(latest.violations);
        let base = self.tcp_base.lock().unwrap().clone();
        for (i, st) in after.iter().enumerate() {
            let Some(st) = st else { continue };
            let vm = name(i);
            // Progress of the stream into this VM.
            let r0 = before[i].as_ref().and_then(|s| s.pointer("/udp/received")).and_then(Value::as_u64).unwrap_or(0);
            let r1 = st.pointer("/udp/received").and_then(Value::as_u64).unwrap_or(0);
            if r1 <= r0 && self.opts.udp_rate_hz > 0 {
                rep.violations.push(format!("udp stream into {vm} made no progress ({r1} datagrams received)"));
            }
            rep.violations.extend(invariants::disk_coherence(&vm, &st["disk"]));
            if let Some(path) = st.pointer("/disk/path").and_then(Value::as_str) {
                let req = json!({"op": "exec", "argv": ["tail", "-n", "2000", path], "timeout_ms": 5000});
                match guest(&self.clients[self.vms[i].host], &vm, req).await {
                    Ok(r) => {
                        rep.violations.extend(invariants::disk_file_contiguous(&vm, r["stdout"].as_str().unwrap_or("")))
                    }
                    Err(e) => rep.violations.push(format!("disk {vm}: reading the counter file: {e:#}")),
                }
            }
            if let Some(c) = st.pointer("/disk/counter").and_then(Value::as_u64) {
                rep.disk_counters.insert(vm.clone(), c);
            }
            let t = tcp_timeouts(&st["netstat"]).saturating_sub(base.get(&vm).copied().unwrap_or(0));
            if let Some(max) = self.opts.max_tcp_timeouts {
                if t > max {
                    rep.violations.push(format!("{vm}: {t} TCP retransmission timeouts (at most {max} allowed)"));
                }
            }
            rep.tcp_timeouts.insert(vm, t);
        }
        // The ring must also move again after the resume.
        let hops0: u64 =
            before.iter().flatten().filter_map(|s| s.pointer("/ring/records_received").and_then(Value::as_u64)).sum();
        let hops1: u64 =
            after.iter().flatten().filter_map(|s| s.pointer("/ring/records_received").and_then(Value::as_u64)).sum();
        if hops1 == hops0 && self.opts.ring_tokens > 0 && after.iter().all(Option::is_some) {
            // Paused part of the time: give it one more look before calling it stuck.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let hops2: u64 = self
                .states()
                .await
                .into_iter()
                .flatten()
                .filter_map(|s| s.pointer("/ring/records_received").and_then(Value::as_u64))
                .sum();
            if hops2 == hops0 {
                rep.violations.push("ring made no progress after resume".into());
            }
        }
        rep
    }

    /// Stops every workload (best effort).
    pub async fn stop(&self) {
        for op in ["ring_stop", "udp_stop", "stall_stop", "mem_stop", "disk_stop"] {
            let _ = self.on_all(|_| json!({"op": op})).await;
        }
    }

    /// Reads one guest's full state.
    pub async fn state(&self, vm: &str) -> anyhow::Result<Value> {
        let v = self.vms.iter().find(|v| v.name == vm).with_context(|| format!("no VM {vm}"))?;
        guest(&self.clients[v.host], vm, json!({"op": "state"})).await
    }
}
