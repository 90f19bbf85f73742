//! Issue 5, acceptance 2: twenty snapshot/restore rounds of a running 3-VM, 2-host slice
//! with every workload, randomised timing and injected stagger between the cuts, show zero
//! invariant violations; the naive mode, run the same way, shows violations.
//!
//! Seed: `VNSNAP_SEED=<n>` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vnsnap_proto::*;
use vnsnap_testbed::checker::slice::{self, Slice};
use vnsnap_testbed::checker::{WorkloadOptions, Workloads};
use vnsnap_testbed::lab::Lab;

/// xorshift64*: enough randomness for timings, reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("VNSNAP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("VNSNAP_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn lab_slice(mem: u64) -> (Lab, Slice) {
    let lab = tokio::task::block_in_place(|| Lab::up(slice::lab_options())).expect("lab up");
    let s = slice::three_vm_slice(&lab, mem).await.expect("slice up");
    (lab, s)
}

fn opts() -> WorkloadOptions {
    WorkloadOptions { ring_tokens: 5, ..Default::default() }
}

/// The checker against a live slice, no snapshots: all invariants hold; a VM frozen for
/// 1.5 s makes a peer's TCP retransmission timer fire, and the guests report when (what
/// `bench snapshot` uses to tell the timeouts a snapshot caused); then a ring node
/// restarted (its tokens vanish) and a UDP sender restarted (it resends numbers its
/// receiver has) are both reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checker_detects_broken_invariants() {
    let (mut lab, s) = lab_slice(128).await;
    let w = Workloads::start(&s.clients, &s.vms, opts()).await.expect("workloads");
    w.wait_flowing(Duration::from_secs(60)).await.expect("flowing");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        let t = Instant::now();
        let r = w.check().await;
        eprintln!("live check ({} ms): {r}", t.elapsed().as_millis());
        assert!(r.is_ok(), "{r}");
    }
    // A stall the guests must time-stamp: vm2's QEMU frozen (SIGSTOP, as a host that starves
    // it would) until its ring predecessor's retransmission timer fires. The test waits for
    // that event, asking the other guests; on a loaded machine it can take a while.
    let pid = qemu_pid(&lab, "vm2");
    let unix_ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let others = |m: &BTreeMap<String, u64>| m.iter().filter(|(vm, _)| *vm != "vm2").map(|(_, n)| n).sum::<u64>();
    // A timeout needs data in flight to vm2 while it is frozen. Left alone, the ring may
    // have every token at vm2 at that moment (a starved TCG guest is where they pile up), and
    // then nobody sends to it: so vm1, vm2's ring predecessor, holds tokens first (paused
    // forwarding) and is let go only once vm2 is frozen.
    let c = &s.clients[s.vms.iter().find(|v| v.name == "vm1").expect("vm1").host];
    let ring_op = |op: &'static str| async move {
        let v = c.guest("vm1", &serde_json::json!({ "op": op })).await.unwrap();
        assert_eq!(v["ok"], true, "vm1 {op}: {v}");
        v
    };
    ring_op("ring_pause").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ring_op("state").await["ring"]["held_count"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "vm1 received no ring token in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (before, frozen) = (w.tcp_timeouts().await.unwrap(), unix_ns());
    signal(pid, libc::SIGSTOP);
    ring_op("ring_resume").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (after, at) = loop {
        // The count is read when asked; the instant is the guest's watcher's (it polls the
        // counter every 25 ms, later when starved): wait for both.
        let (after, at) = w.tcp_timeouts_timed_except(&["vm2"]).await.unwrap();
        if others(&after) > others(&before) && at.values().flatten().any(|t| *t >= frozen) {
            break (after, at);
        }
        if Instant::now() > deadline {
            signal(pid, libc::SIGCONT);
            panic!("no TCP timeout at vm2's peers in 60 s while vm2 was frozen: before {before:?}, now {after:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    signal(pid, libc::SIGCONT);
    let thawed = unix_ns();
    eprintln!("tcp timeouts before {before:?}, after {after:?}; instants {at:?}; frozen {frozen}..{thawed}");
    assert!(
        at.values().flatten().any(|t| (frozen..=thawed + 1_000_000_000).contains(t)),
        "no timeout time-stamped while vm2 was frozen: {at:?}"
    );
    // Restart vm2's ring node: the tokens it held are gone, its connections reset.
    let peers = w.state("vm2").await.unwrap()["ring"]["peers"].clone();
    let v = c
        .guest("vm2", &serde_json::json!({"op": "ring_start", "index": 1, "peers": peers, "port": 7101, "tokens": 5}))
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // Restart vm1's UDP sender: numbers start again from 0 at vm2.
    let v = c.guest("vm1", &serde_json::json!({"op": "udp_stop"})).await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let v = c
        .guest(
            "vm1",
            &serde_json::json!({"op": "udp_start", "dst": "10.10.0.2:7102", "rate_hz": 100, "listen_port": 7102}),
        )
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // Both violations show once the restarted sender's first numbers arrive: wait for them.
    let sabotaged = |r: &vnsnap_testbed::checker::Report| {
        r.violations.iter().any(|v| v.contains("ring"))
            && r.violations.iter().any(|v| v.contains("udp vm1 -> vm2") && v.contains("already been received"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = w.check().await;
        if sabotaged(&r) || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("after sabotage: {r}");
    assert!(!r.is_ok());
    assert!(r.violations.iter().any(|v| v.contains("ring")), "{r}");
    assert!(r.violations.iter().any(|v| v.contains("udp vm1 -> vm2") && v.contains("already been received")), "{r}");
    tokio::task::block_in_place(|| lab.down());
}

/// The pid of the QEMU of domain `name`, from its pid file on whichever lab host runs it.
fn qemu_pid(lab: &Lab, name: &str) -> i32 {
    let pids: Vec<i32> = lab
        .hosts
        .iter()
        .filter_map(|h| std::fs::read_to_string(h.state_dir().join("domains").join(name).join("qemu.pid")).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "one QEMU for {name}: {pids:?}");
    pids[0]
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid read from our own lab's pid file.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

struct RoundStats {
    pauses_us: Vec<u64>,
    skews_ms: Vec<f64>,
    violations: Vec<(usize, Vec<String>)>,
}

/// Runs `n` randomised rounds of snapshot -> delay -> restore -> check. With `stop_on_violation`
/// the rounds end at the first violation (the naive mode).
async fn rounds(
    s: &Slice,
    w: &Workloads,
    rng: &mut Rng,
    mode: CutMode,
    n: usize,
    stop_on_violation: bool,
) -> RoundStats {
    let mut st = RoundStats { pauses_us: Vec::new(), skews_ms: Vec::new(), violations: Vec::new() };
    for round in 0..n {
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
        // Stagger: consistent rounds get 0-80 ms per VM; naive rounds get distinct
        // staggers >= 100 ms apart (some UDP sender is always cut before its receiver).
        let mut stagger = BTreeMap::new();
        if mode == CutMode::Naive {
            let mut slots = vec![0u64, 150, 300];
            for vm in &s.vms {
                let k = rng.below(slots.len() as u64) as usize;
                stagger.insert(vm.name.clone(), slots.remove(k));
            }
        } else {
            for vm in &s.vms {
                stagger.insert(vm.name.clone(), rng.below(80));
            }
        }
        let epoch = slice::next_epoch(s).await.expect("epoch");
        let id = uuid::Uuid::new_v4().to_string();
        let req = CutRequest { mode, stagger_ms: stagger.clone(), deadline_ms: Some(30_000), ..Default::default() };
        let snap =
            slice::snapshot(s, &id, epoch, &req).await.unwrap_or_else(|e| panic!("round {round}: snapshot: {e:#}"));
        let (held, rec, drop) = snap.frames();
        for c in snap.domain_cuts() {
            st.pauses_us.push(c.pause_us);
        }
        st.skews_ms.push(snap.skew_ms());
        let wait = rng.below(1000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let restored = slice::restore(s, &snap, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_or_else(|e| panic!("round {round}: restore: {e:#}"));
        let restore_ms = restored.total_ms;
        let logs: Vec<String> = snap
            .snap
            .hosts
            .iter()
            .flat_map(|c| c.domains.iter())
            .map(|d| format!("{}: {:?}", d.domain, d.channel_logs.iter().map(|f| f.bytes).collect::<Vec<_>>()))
            .collect();
        eprintln!("  channel log bytes {}", logs.join(", "));
        slice::wait_guests(s, Duration::from_secs(60)).await.expect("guests after restore");
        let r = w.check().await;
        eprintln!(
            "{mode:?} round {round}: stagger {stagger:?}, skew {:.1} ms, pauses {:?} us, frames held/recorded/dropped {held}/{rec}/{drop}, \
             save {} ms, restored after {wait} ms in {restore_ms} ms, round {} ms: {r}",
            snap.skew_ms(),
            snap.domain_cuts().iter().map(|c| c.pause_us).collect::<Vec<_>>(),
            snap.snap.timings.save_ms,
            t0.elapsed().as_millis()
        );
        if !r.is_ok() {
            st.violations.push((round, r.violations.clone()));
            if stop_on_violation {
                break;
            }
        }
    }
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_rounds_consistent_then_naive_fails() {
    let t0 = Instant::now();
    let (mut lab, s) = lab_slice(128).await;
    let w = Workloads::start(&s.clients, &s.vms, WorkloadOptions { mem_mib: Some(16), mem_rate_mib_s: 20, ..opts() })
        .await
        .expect("workloads");
    w.wait_flowing(Duration::from_secs(60)).await.expect("flowing");
    let r = w.check().await;
    assert!(r.is_ok(), "before any snapshot: {r}");
    eprintln!("slice up and checked in {:?}", t0.elapsed());
    let mut rng = Rng::new();
    let rounds_n = std::env::var("VNSNAP_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let tc = Instant::now();
    let ok = rounds(&s, &w, &mut rng, CutMode::Consistent, rounds_n, false).await;
    let mut p = ok.pauses_us.clone();
    p.sort_unstable();
    eprintln!(
        "consistent: {rounds_n} rounds in {:?}; pause p50 {} us max {} us; skew max {:.1} ms; violations in {} rounds",
        tc.elapsed(),
        p.get(p.len() / 2).copied().unwrap_or(0),
        p.last().copied().unwrap_or(0),
        ok.skews_ms.iter().cloned().fold(0.0, f64::max),
        ok.violations.len()
    );
    assert!(ok.violations.is_empty(), "consistent mode violated invariants: {:#?}", ok.violations);

    let tn = Instant::now();
    let naive = rounds(&s, &w, &mut rng, CutMode::Naive, 8, true).await;
    eprintln!("naive: {:?}, violations: {:#?}", tn.elapsed(), naive.violations);
    assert!(!naive.violations.is_empty(), "the naive mode showed no violation in 8 rounds: the checker cannot fail");
    eprintln!("total {:?}", t0.elapsed());
    tokio::task::block_in_place(|| lab.down());
}
