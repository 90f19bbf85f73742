//! The agents' half of a slice snapshot, driven directly: prepare, cut, save, commit on
//! two hosts, then restore, with a token ring and UDP streams running across the cut.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;
use vnsnap_testbed::lab::{Lab, LabOptions};

const L0: SegmentId = 200;

async fn guest(c: &AgentClient, vm: &str, req: Value) -> Value {
    let r = c.guest(vm, &req).await.expect("guest call");
    assert_eq!(r["ok"], json!(true), "{vm} {req}: {r}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_and_restore_through_agents() {
    let lab = tokio::task::block_in_place(|| Lab::up(LabOptions { hosts: 2, ..Default::default() })).expect("lab");
    let a = lab.client(0).unwrap();
    let b = lab.client(1).unwrap();
    let (ha, hb) = (a.host().await.unwrap(), b.host().await.unwrap());
    a.define(&vm_spec(&lab, "vm1", 128, &[("52:54:00:00:02:11", L0, "10.30.0.1/24")])).await.unwrap();
    a.define(&vm_spec(&lab, "vm2", 128, &[("52:54:00:00:02:21", L0, "10.30.0.2/24")])).await.unwrap();
    b.define(&vm_spec(&lab, "vm3", 128, &[("52:54:00:00:02:31", L0, "10.30.0.3/24")])).await.unwrap();
    a.set_segment_peers(L0, &SegmentPeers { peers: vec![hb.tunnel.clone()] }).await.unwrap();
    b.set_segment_peers(L0, &SegmentPeers { peers: vec![ha.tunnel.clone()] }).await.unwrap();
    for n in ["vm1", "vm2"] {
        a.action(n, Action::Start, &ActionRequest::default()).await.unwrap();
    }
    b.action("vm3", Action::Start, &ActionRequest::default()).await.unwrap();
    wait_ready(&a, &["vm1", "vm2"], Duration::from_secs(120)).await;
    wait_ready(&b, &["vm3"], Duration::from_secs(120)).await;

    let peers = json!(["10.30.0.1", "10.30.0.2", "10.30.0.3"]);
    let vms = [(&a, "vm1"), (&a, "vm2"), (&b, "vm3")];
    for (i, (c, vm)) in vms.iter().enumerate() {
        guest(c, vm, json!({"op": "ring_start", "index": i, "peers": peers, "port": 7000, "tokens": 4})).await;
    }
    guest(&a, "vm1", json!({"op": "udp_start", "dst": "10.30.0.3:7100", "rate_hz": 200, "listen_port": 7100})).await;
    guest(&b, "vm3", json!({"op": "udp_start", "dst": "10.30.0.1:7100", "rate_hz": 200, "listen_port": 7100})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Snapshot: prepare both hosts, cut both in parallel, save, commit.
    let id = "snap-1";
    let epoch = 1;
    a.snapshot_prepare(&PrepareRequest { snapshot: id.into(), epoch, domains: vec!["vm1".into(), "vm2".into()] })
        .await
        .unwrap();
    b.snapshot_prepare(&PrepareRequest { snapshot: id.into(), epoch, domains: vec!["vm3".into()] }).await.unwrap();
    let req = CutRequest::default();
    let (ca, cb) = tokio::join!(a.snapshot_cut(id, &req), b.snapshot_cut(id, &req));
    let cuts: Vec<DomainCut> = ca.unwrap().cuts.into_iter().chain(cb.unwrap().cuts).collect();
    for c in &cuts {
        eprintln!("cut {} pause {} us", c.domain, c.pause_us);
    }
    let skew = cuts.iter().map(|c| c.cut_at_ns).max().unwrap() - cuts.iter().map(|c| c.cut_at_ns).min().unwrap();
    eprintln!("skew {} us", skew / 1000);
    wait_saved(&a, id).await;
    wait_saved(&b, id).await;
    let (ma, mb) = (a.snapshot_commit(id).await.unwrap(), b.snapshot_commit(id).await.unwrap());
    eprintln!(
        "held {} recorded {} dropped {}",
        ma.held_frames + mb.held_frames,
        ma.recorded_frames + mb.recorded_frames,
        ma.dropped_frames + mb.dropped_frames
    );
    // Running on after the snapshot.
    for (c, vm) in vms {
        guest(c, vm, json!({"op": "hello"})).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Restore: prepare both, resume both.
    let qa = RestoreRequest {
        restore: "r1".into(),
        snapshot: id.into(),
        domains: ma.domains.clone(),
        epoch: 2,
        clock: Default::default(),
    };
    let qb = RestoreRequest {
        restore: "r1".into(),
        snapshot: id.into(),
        domains: mb.domains.clone(),
        epoch: 2,
        clock: Default::default(),
    };
    let (ra, rb) = tokio::join!(a.restore_prepare(&qa), b.restore_prepare(&qb));
    ra.unwrap();
    rb.unwrap();
    let (ra, rb) = tokio::join!(a.restore_resume("r1"), b.restore_resume("r1"));
    ra.unwrap();
    rb.unwrap();
    wait_ready(&a, &["vm1", "vm2"], Duration::from_secs(60)).await;
    wait_ready(&b, &["vm3"], Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (c, vm) in vms {
        guest(c, vm, json!({"op": "ring_pause"})).await;
    }
    // Paused nodes hold the tokens they receive: wait until the ones in flight have landed
    // (all 4 held), or the deadline says some were lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut held = 0;
        let mut states = Vec::new();
        for (c, vm) in vms {
            let s = guest(c, vm, json!({"op": "state"})).await;
            held += s["ring"]["held_count"].as_u64().unwrap_or(0);
            states.push((vm, s));
        }
        if held >= 4 || Instant::now() > deadline {
            for (vm, s) in &states {
                eprintln!("{vm}: ring {} udp {}", s["ring"], s["udp"]);
                assert_eq!(s["udp"]["duplicates"].as_u64().unwrap_or(0), 0, "{vm} saw UDP duplicates");
                assert_eq!(s["ring"]["conn_errors"].as_u64().unwrap_or(0), 0, "{vm} ring connection errors");
            }
            assert_eq!(held, 4, "exactly the 4 tokens survive the restore");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(lab);
}
