//! `vnsnap-testbed demo`: the main job of `scripts/demo.sh`.
//!
//! Brings up a 2-host lab (agents in network namespaces), defines three real QEMU VMs on
//! two L2 segments of the agents' switch (vm1, vm2 on host1; vm3 on host2; segment L0 =
//! {vm1, vm2, vm3}, L1 = {vm2, vm3}), pings every pair on every segment it shares, checks
//! that vm1 cannot reach L1, and prints a summary with the switch and tunnel counters.
//! The lab is removed at the end unless kept.

use crate::lab::{Lab, LabOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;

/// Segment id of link L0 (all three VMs).
pub const L0: SegmentId = 100;
/// Segment id of link L1 (vm2 and vm3).
pub const L1: SegmentId = 101;

/// Options of the demo.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Leave the lab running at the end.
    pub keep: bool,
}

pub use crate::lab::vm_spec;

/// Waits until every named domain's guest answers on its control channel, long-polling
/// the agent's event stream between checks.
pub async fn wait_ready(client: &AgentClient, names: &[&str], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    for n in names {
        loop {
            let d = client.domain(n).await?;
            if d.guest_ready {
                break;
            }
            if Instant::now() >= deadline {
                let console = client.console(n).await.unwrap_or_default();
                let tail: Vec<&str> = console.lines().rev().take(20).collect();
                anyhow::bail!(
                    "guest {n} not ready within {timeout:?} (state {:?}); console tail:\n{}",
                    d.state,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if let Some(last) = client.events(seen, 1000).await?.last() {
                seen = last.seq;
            }
        }
    }
    Ok(())
}

/// Runs one guest `exec` and returns its reply.
pub async fn guest_exec(client: &AgentClient, vm: &str, argv: &[&str], timeout_ms: u64) -> anyhow::Result<Value> {
    let r = client.guest(vm, &json!({"op": "exec", "argv": argv, "timeout_ms": timeout_ms})).await?;
    if r.get("ok").and_then(Value::as_bool) != Some(true) {
        anyhow::bail!("{vm}: exec {argv:?} failed: {r}");
    }
    Ok(r)
}

/// One ping check of the demo.
#[derive(Clone, Debug)]
pub struct PingResult {
    /// Sending VM.
    pub from: String,
    /// Destination VM (or subnet).
    pub to: String,
    /// Destination address.
    pub dst: String,
    /// Segment the path uses.
    pub segment: &'static str,
    /// Same host or across hosts.
    pub path: &'static str,
    /// Replies expected (3, or 0 for the isolation check).
    pub expected: u64,
    /// Replies received.
    pub received: u64,
}

async fn ping(client: &AgentClient, vm: &str, dst: &str) -> anyhow::Result<u64> {
    let r = client.guest(vm, &json!({"op": "ping", "dst": dst, "count": 3, "timeout_ms": 8000})).await?;
    Ok(r.get("received").and_then(Value::as_u64).unwrap_or(0))
}

/// Runs the demo and prints its summary. Fails if any check fails.
pub fn run(opts: &DemoOptions) -> anyhow::Result<()> {
    let t0 = Instant::now();
    println!("demo: building the guest image and starting a 2-host lab");
    let lab = Lab::up(LabOptions { hosts: 2, keep: opts.keep, ..Default::default() })?;
    let t_lab = t0.elapsed();
    for h in &lab.hosts {
        println!("  {}: namespace {}, agent https://{}", h.name, h.ns, h.api());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Ctrl-C ends the scenario early but still removes the lab (dropped below).
    let result = rt.block_on(async {
        tokio::select! {
            r = scenario(&lab) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match &result {
        Ok(()) => println!("\ndemo: ok in {:.1} s (lab up {:.1} s)", t0.elapsed().as_secs_f64(), t_lab.as_secs_f64()),
        Err(e) => println!("\ndemo: FAILED: {e:#}"),
    }
    if opts.keep {
        println!(
            "lab kept in {}; remove it with: vnsnap-testbed lab down --dir {}",
            lab.dir.display(),
            lab.dir.display()
        );
    } else {
        println!("demo: removing the lab");
        drop(lab);
    }
    result
}

async fn scenario(lab: &Lab) -> anyhow::Result<()> {
    let a = lab.client(0)?;
    let b = lab.client(1)?;
    let (ha, hb) = (a.host().await?, b.host().await?);
    let t = Instant::now();
    a.define(&vm_spec(lab, "vm1", 128, &[("52:54:00:00:00:11", L0, "10.10.0.1/24")])).await?;
    a.define(&vm_spec(
        lab,
        "vm2",
        128,
        &[("52:54:00:00:00:21", L0, "10.10.0.2/24"), ("52:54:00:00:01:21", L1, "10.20.0.2/24")],
    ))
    .await?;
    b.define(&vm_spec(
        lab,
        "vm3",
        128,
        &[("52:54:00:00:00:31", L0, "10.10.0.3/24"), ("52:54:00:00:01:31", L1, "10.20.0.3/24")],
    ))
    .await?;
    // Both segments span both hosts: each switch tunnels them to the other.
    for seg in [L0, L1] {
        a.set_segment_peers(seg, &SegmentPeers { peers: vec![hb.tunnel.clone()] }).await?;
        b.set_segment_peers(seg, &SegmentPeers { peers: vec![ha.tunnel.clone()] }).await?;
    }
    for n in ["vm1", "vm2"] {
        a.action(n, Action::Start, &ActionRequest::default()).await?;
    }
    b.action("vm3", Action::Start, &ActionRequest::default()).await?;
    println!("demo: 3 VMs defined and started, waiting for the guests to boot (QEMU TCG)");
    wait_ready(&a, &["vm1", "vm2"], Duration::from_secs(180)).await?;
    wait_ready(&b, &["vm3"], Duration::from_secs(180)).await?;
    let t_boot = t.elapsed();

    let checks: [(&AgentClient, &str, &str, &str, &'static str, &'static str, u64); 7] = [
        (&a, "vm1", "vm2", "10.10.0.2", "L0", "same host", 3),
        (&a, "vm1", "vm3", "10.10.0.3", "L0", "across hosts", 3),
        (&a, "vm2", "vm3", "10.10.0.3", "L0", "across hosts", 3),
        (&a, "vm2", "vm3", "10.20.0.3", "L1", "across hosts", 3),
        (&b, "vm3", "vm2", "10.20.0.2", "L1", "across hosts", 3),
        (&b, "vm3", "vm1", "10.10.0.1", "L0", "across hosts", 3),
        (&a, "vm1", "vm3 (L1)", "10.20.0.3", "-", "not on L1", 0),
    ];
    let mut results = Vec::new();
    for (c, from, to, dst, segment, path, expected) in checks {
        let received = ping(c, from, dst).await?;
        results.push(PingResult {
            from: from.into(),
            to: to.into(),
            dst: dst.into(),
            segment,
            path,
            expected,
            received,
        });
    }

    println!("\nVMs (booted in {:.1} s)", t_boot.as_secs_f64());
    println!("  {:<5} {:<6} {:>8} {:<8} interfaces", "name", "host", "pid", "state");
    for (c, host) in [(&a, &ha.name), (&b, &hb.name)] {
        for d in c.domains().await? {
            let ifs: Vec<String> =
                d.spec.nics.iter().map(|n| format!("{}@seg{} {}", n.mac, n.segment, n.ips.join(","))).collect();
            println!(
                "  {:<5} {:<6} {:>8} {:<8} {}",
                d.name,
                host,
                d.pid.map(|p| p.to_string()).unwrap_or_default(),
                format!("{:?}", d.state).to_lowercase(),
                ifs.join("  ")
            );
        }
    }
    println!("\nPings (3 each)");
    println!("  {:<4} -> {:<9} {:<10} {:<4} {:<13} {:>5}  result", "from", "to", "dst", "seg", "path", "recv");
    let mut failed = 0;
    for r in &results {
        let ok = if r.expected == 0 { r.received == 0 } else { r.received == r.expected };
        failed += usize::from(!ok);
        println!(
            "  {:<4} -> {:<9} {:<10} {:<4} {:<13} {:>3}/3  {}",
            r.from,
            r.to,
            r.dst,
            r.segment,
            r.path,
            r.received,
            if ok { "ok" } else { "FAIL" }
        );
    }
    println!("\nSwitch counters");
    for (c, host) in [(&a, &ha.name), (&b, &hb.name)] {
        let s = c.switch().await?;
        for p in &s.ports {
            println!(
                "  {host} port {:<3} {:<4} seg {:<4} rx {:>5} frames  tx {:>5} frames  dropped {}",
                p.port, p.domain, p.segment, p.rx_frames, p.tx_frames, p.dropped_frames
            );
        }
        for t in &s.tunnels {
            println!("  {host} tunnel -> {:<18} tx {:>5} frames  rx {:>5} frames", t.peer, t.tx_frames, t.rx_frames);
        }
    }
    let sa = a.switch().await?;
    if !sa.tunnels.iter().any(|t| t.tx_frames > 0 && t.rx_frames > 0) {
        anyhow::bail!("no frames crossed the tunnel");
    }
    if failed > 0 {
        anyhow::bail!("{failed} ping check(s) failed");
    }
    Ok(())
}
