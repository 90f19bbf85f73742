//! Issue 23: the guests' wall clocks after a restore, on the 3-VM, 2-host test slice with
//! the checker's workloads running.
//!
//! 1. A snapshot restored [`gap`] (60 s) after it was taken: with the default (`wall`)
//!    every guest's clock is within 1 s of the host's right after the restore and the
//!    guests agree within 50 ms; restored again with `frozen`, every guest's clock is
//!    within 1 s of its cut instant.
//! 2. The checker's invariants hold after both restores.
//! 3. A guest whose guest agent was killed (before the snapshot, so the restored memory has
//!    none running): the restore succeeds and names that VM as not set; the others are set.
//!
//!
//! Through the AM and the CLI: the `vnsnap_clock` option and the report of a clock not set
//! (`am_and_cli_report_a_clock_not_set`).
//!
//! `VNSNAP_CLOCK_GAP_S=<s>` shortens the gap for a quick run (the acceptance is 60 s).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vnsnap_am::snapshot::coordinator::{self, RestorePart, RestoreResult};
use vnsnap_am::xmlrpc::Value;
use vnsnap_proto::*;
use vnsnap_testbed::amlab::{cred, geni_code, rspec_opts, wait_for, AmLabOptions, AmTestbed};
use vnsnap_testbed::checker::slice::{self, Slice, Taken};
use vnsnap_testbed::checker::{WorkloadOptions, Workloads};
use vnsnap_testbed::lab::Lab;

/// How long after the snapshot it is restored.
fn gap() -> Duration {
    let s = std::env::var("VNSNAP_CLOCK_GAP_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(s)
}

fn unix_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
}

/// One reading of a guest's wall clock against the host's: the guest's time minus the
/// host's at the middle of the round trip, and the round trip.
#[derive(Clone, Copy, Debug)]
struct Reading {
    offset_ns: i128,
    rtt_ns: i128,
    guest_ns: i128,
}

async fn read_clock(s: &Slice, vm: &str) -> Reading {
    let host = s.vms.iter().find(|v| v.name == vm).expect("vm").host;
    let before = unix_ns();
    let v = s.clients[host].guest(vm, &serde_json::json!({"op": "clock"})).await.expect("guest clock");
    let after = unix_ns();
    assert_eq!(v["ok"], true, "{vm} clock: {v}");
    let guest_ns = v["realtime_ns"].as_u64().expect("realtime_ns") as i128;
    Reading { offset_ns: guest_ns - (before + after) / 2, rtt_ns: after - before, guest_ns }
}

/// Every guest's clock read at once (right after a restore, before anything else).
async fn read_all(s: &Slice) -> Vec<(String, Reading)> {
    let mut set = tokio::task::JoinSet::new();
    for v in &s.vms {
        let (s, name) = (s.clone(), v.name.clone());
        set.spawn(async move { (name.clone(), read_clock(&s, &name).await) });
    }
    let mut out = set.join_all().await;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The best of a few readings of each guest (smallest round trip), for comparing the
/// guests' clocks with each other to milliseconds.
async fn best_offsets(s: &Slice) -> Vec<(String, Reading)> {
    let mut out = Vec::new();
    for v in &s.vms {
        let mut best: Option<Reading> = None;
        for _ in 0..8 {
            let r = read_clock(s, &v.name).await;
            if best.is_none_or(|b| r.rtt_ns < b.rtt_ns) {
                best = Some(r);
            }
        }
        out.push((v.name.clone(), best.unwrap()));
    }
    out
}

/// Restores `snap` through the coordinator with the given clock mode.
async fn restore(s: &Slice, snap: &Taken, clock: ClockMode) -> RestoreResult {
    let epoch = slice::next_epoch(s).await.expect("epoch");
    let parts: Vec<RestorePart> = snap
        .hosts
        .iter()
        .zip(&snap.snap.hosts)
        .map(|(&h, c)| RestorePart {
            client: s.clients[h].clone(),
            host: format!("host{}", h + 1),
            snapshot_id: snap.id.clone(),
            domains: c.domains.clone(),
            epoch,
        })
        .collect();
    coordinator::restore_slice_clock(&parts, &uuid::Uuid::new_v4().to_string(), clock, |_| {})
        .await
        .unwrap_or_else(|e| panic!("restore ({clock:?}): {}", slice::chain(&e)))
}

fn cut_of(snap: &Taken, vm: &str) -> i128 {
    snap.domain_cuts().iter().find(|c| c.domain == vm).expect("cut").cut_at_ns as i128
}

fn ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

/// Every guest's clock was set; if not, the guest agent's log of those that were not.
async fn all_set(s: &Slice, r: &RestoreResult) {
    for c in &r.clock_not_set {
        let host = s.vms.iter().find(|v| v.name == c.domain).expect("vm").host;
        let log = s.clients[host]
            .guest(&c.domain, &serde_json::json!({"op": "exec", "argv": ["sh", "-c", "ps; tail -20 /run/qemu-ga.log"]}))
            .await;
        eprintln!("{}: clock not set ({}); in the guest: {log:?}", c.domain, c.reason);
    }
    assert!(r.clock_not_set.is_empty(), "every guest has an agent: {:?}", r.clock_not_set);
}

async fn check_invariants(s: &Slice, w: &Workloads, what: &str) {
    slice::wait_guests(s, Duration::from_secs(60)).await.expect("guests after restore");
    let r = w.check().await;
    eprintln!("checker after {what}: {r}");
    assert!(r.is_ok(), "after {what}: {r}");
}

async fn snapshot(s: &Slice) -> Taken {
    let epoch = slice::next_epoch(s).await.expect("epoch");
    let req = CutRequest { deadline_ms: Some(30_000), ..Default::default() };
    slice::snapshot(s, &uuid::Uuid::new_v4().to_string(), epoch, &req).await.expect("snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guest_clocks_after_restore() {
    let mut lab = tokio::task::block_in_place(|| Lab::up(slice::lab_options())).expect("lab up");
    let s = slice::three_vm_slice(&lab, 128).await.expect("slice up");
    let w = Workloads::start(&s.clients, &s.vms, WorkloadOptions { ring_tokens: 5, ..Default::default() })
        .await
        .expect("workloads");
    w.wait_flowing(Duration::from_secs(60)).await.expect("flowing");
    let r = w.check().await;
    assert!(r.is_ok(), "before any snapshot: {r}");

    // 1, wall (the default, through the same helper the other tests use).
    let snap = snapshot(&s).await;
    let taken = Instant::now();
    eprintln!("snapshot {} taken; restoring in {:?}", snap.id, gap());
    tokio::time::sleep(gap().saturating_sub(taken.elapsed())).await;
    let restored = slice::restore(&s, &snap, &uuid::Uuid::new_v4().to_string()).await.expect("restore (wall)");
    let first = read_all(&s).await;
    eprintln!("wall restore in {} ms, clocks right after: {first:?}", restored.total_ms);
    all_set(&s, &restored).await;
    for (vm, r) in &first {
        assert!(r.offset_ns.abs() < 1_000_000_000 + r.rtt_ns, "{vm}: {:.1} ms off the host's clock", ms(r.offset_ns));
    }
    let best = best_offsets(&s).await;
    let offs: Vec<i128> = best.iter().map(|(_, r)| r.offset_ns).collect();
    let spread = offs.iter().max().unwrap() - offs.iter().min().unwrap();
    let slack = best.iter().map(|(_, r)| r.rtt_ns / 2).max().unwrap();
    eprintln!(
        "offsets to the host (best of 8): {best:?}; spread {:.2} ms, reading slack {:.2} ms",
        ms(spread),
        ms(slack)
    );
    assert!(spread < 50_000_000 + slack, "guests disagree by {:.2} ms (reading slack {:.2} ms)", ms(spread), ms(slack));
    // 2.
    check_invariants(&s, &w, "the wall restore").await;

    // 1, frozen: the same snapshot, now well over the gap after it was taken.
    // `frozen` steps each guest to its cut instant as it resumes, and its clock runs on from
    // there: right after the restore it reads the cut plus the time it has run since, at
    // most the time since the restore's resume phase began.
    let restored = restore(&s, &snap, ClockMode::Frozen).await;
    let resume_began = unix_ns() - restored.resume_ms as i128 * 1_000_000;
    let first = read_all(&s).await;
    eprintln!("frozen restore in {} ms, clocks right after: {first:?}", restored.total_ms);
    all_set(&s, &restored).await;
    assert!(taken.elapsed() >= gap());
    for (vm, r) in &first {
        let since_cut = r.guest_ns - cut_of(&snap, vm);
        let ran = r.guest_ns - r.offset_ns + r.rtt_ns / 2 - resume_began;
        eprintln!(
            "{vm}: {:.1} ms after its cut, having run at most {:.1} ms since; {:.1} s behind the host",
            ms(since_cut),
            ms(ran),
            -ms(r.offset_ns) / 1e3
        );
        assert!(
            since_cut > -1_000_000_000 && since_cut - ran < 1_000_000_000,
            "{vm}: {:.1} ms after its cut instant, having run at most {:.1} ms since",
            ms(since_cut),
            ms(ran)
        );
    }
    // 2.
    check_invariants(&s, &w, "the frozen restore").await;

    // 3. vm2's guest agent killed before a snapshot: its restore cannot set vm2's clock.
    let vm2 = s.vms.iter().find(|v| v.name == "vm2").expect("vm2");
    let v = s.clients[vm2.host]
        .guest("vm2", &serde_json::json!({"op": "exec", "argv": ["killall", "-9", "qemu-ga"], "timeout_ms": 10_000}))
        .await
        .expect("kill qemu-ga");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["status"], 0, "killall qemu-ga: {v}");
    let snap2 = snapshot(&s).await;
    let restored = slice::restore(&s, &snap2, &uuid::Uuid::new_v4().to_string()).await.expect("restore without agent");
    eprintln!("restore without vm2's agent in {} ms: not set {:?}", restored.total_ms, restored.clock_not_set);
    let unset: Vec<&str> = restored.clock_not_set.iter().map(|c| c.domain.as_str()).collect();
    assert_eq!(unset, ["vm2"]);
    assert!(restored.clock_not_set[0].reason.contains("did not answer"), "{:?}", restored.clock_not_set);
    for (vm, r) in read_all(&s).await {
        if vm != "vm2" {
            assert!(r.offset_ns.abs() < 1_000_000_000 + r.rtt_ns, "{vm}: {:.1} ms off", ms(r.offset_ns));
        }
    }
    check_invariants(&s, &w, "the restore without vm2's agent").await;
    tokio::task::block_in_place(|| lab.down());
}

const ONE_VM: &str = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="solo" exclusive="false"><sliver_type name="vnsnap-vm"/></node></rspec>"#;

fn am_ok(v: Value) -> Value {
    assert_eq!(geni_code(&v), Some(0), "{v:?}");
    v.get("value").cloned().unwrap()
}

fn vnsnap(args: &[&str]) -> std::process::Output {
    let out =
        std::process::Command::new(vnsnap_testbed::lab::bin("vnsnap")).args(args).env("HOME", "/nonexistent").output();
    let out = out.expect("run target/debug/vnsnap (cargo build --workspace --bins)");
    eprintln!(
        "$ vnsnap {}\n-> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Through the AM and the CLI: `vnsnap_clock` other than wall/frozen is BADARGS; `vnsnap
/// restore --clock frozen` of a VM whose guest agent was killed succeeds (exit 0, sliver
/// ready) and names it, in the CLI's output and in the sliver's `geni_error` (Status).
#[test]
fn am_and_cli_report_a_clock_not_set() {
    let tb = AmTestbed::up(1, AmLabOptions::default()).unwrap();
    let s = tb.slice("clockslice").unwrap();
    let c = tb.v3().unwrap();
    let creds = Value::Array(vec![cred(&s.cred_xml)]);
    let urns = Value::Array(vec![Value::str(&s.urn)]);
    let no = || Value::structure::<&str>([]);
    am_ok(c.call("Allocate", &[Value::str(&s.urn), creds.clone(), Value::str(ONE_VM), no()]).unwrap());
    am_ok(c.call("Provision", &[urns.clone(), creds.clone(), rspec_opts(vec![])]).unwrap());
    am_ok(c.call("PerformOperationalAction", &[urns.clone(), creds.clone(), Value::str("geni_start"), no()]).unwrap());
    let status = || am_ok(c.call("Status", &[urns.clone(), creds.clone(), no()]).unwrap());
    let slivers = |st: &Value| st.get("geni_slivers").and_then(Value::as_array).unwrap().to_vec();
    let ready = wait_for(Duration::from_secs(400), Duration::from_secs(1), || {
        slivers(&status())
            .iter()
            .all(|x| x.get("geni_operational_status") == Some(&Value::str("geni_ready")))
            .then_some(())
    });
    assert!(ready.is_some(), "slice not ready; AM log:\n{}", tb.am.log_tail());

    // The guest agent of the slice's VM killed, through the lab's agent.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = tb.lab.client(0).unwrap();
    let dom = rt.block_on(agent.domains()).unwrap().into_iter().next().expect("the VM's domain").name;
    let ready = wait_for(Duration::from_secs(120), Duration::from_millis(250), || {
        rt.block_on(agent.domain(&dom)).ok().filter(|d| d.guest_ready).map(|_| ())
    });
    assert!(ready.is_some(), "guest of {dom} never answered");
    let argv = serde_json::json!({"op": "exec", "argv": ["killall", "-9", "qemu-ga"]});
    let v = rt.block_on(agent.guest(&dom, &argv)).unwrap();
    assert_eq!(v["status"], 0, "killall qemu-ga: {v}");

    let url = tb.am.url_v3();
    let (chain, key, sc) =
        (tb.alice_chain.display().to_string(), tb.alice.key.display().to_string(), s.cred.display().to_string());
    let base = ["--am", url.as_str(), "--cert", chain.as_str(), "--key", key.as_str(), "--cred", sc.as_str()];
    let vn = |args: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(args);
        vnsnap(&a)
    };
    let out = vn(&["snapshot", &s.urn, "--name", "noagent"]);
    assert!(out.status.success());
    let snap = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // A bad clock value: BADARGS, nothing starts.
    let bad = Value::structure([("vnsnap_snapshot_urn", Value::str(&snap)), ("vnsnap_clock", Value::str("later"))]);
    let v = c.call("PerformOperationalAction", &[urns.clone(), creds.clone(), Value::str("vnsnap_restore"), bad]);
    assert_eq!(geni_code(&v.unwrap()), Some(1));
    let out = vn(&["restore", &s.urn, &snap, "--clock", "later"]);
    assert_eq!(out.status.code(), Some(2));

    let out = vn(&["--json", "restore", &s.urn, &snap, "--clock", "frozen"]);
    assert!(out.status.success(), "restore failed");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["clock"], "frozen");
    let unset = r["clock_not_set"].as_array().unwrap();
    assert_eq!(unset.len(), 1, "{r}");
    assert_eq!(unset[0]["client_id"], "solo");
    assert!(unset[0]["reason"].as_str().unwrap().contains("did not answer"), "{r}");
    let st = status();
    let sl = slivers(&st);
    assert_eq!(sl[0].get("geni_operational_status"), Some(&Value::str("geni_ready")), "{st:?}");
    let err = sl[0].get("geni_error").and_then(Value::as_str).unwrap_or_default().to_string();
    assert!(err.starts_with(vnsnap_am::snapshot::CLOCK_NOT_SET), "{err}");
    // The text form names it too.
    let out = vn(&["restore", &s.urn, &snap]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("clock not set: solo"), "{text}");
}
