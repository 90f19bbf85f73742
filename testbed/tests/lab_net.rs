//! Issue "Agent and lab", acceptance 2-4: real QEMU VMs on two hosts joined by the
//! agents' switches; re-attach after SIGKILL; bad input leaves nothing behind.

mod common;

use common::*;
use std::time::Duration;
use vnsnap_proto::*;
use vnsnap_testbed::lab::{Lab, LabOptions};

const L0: SegmentId = 100;
const L1: SegmentId = 101;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_vms_two_hosts_two_segments() {
    let mut lab =
        tokio::task::block_in_place(|| Lab::up(LabOptions { hosts: 2, ..Default::default() })).expect("lab up");
    let a = lab.client(0).unwrap();
    let b = lab.client(1).unwrap();
    let (ha, hb) = (a.host().await.unwrap(), b.host().await.unwrap());

    a.define(&vm_spec(&lab, "vm1", 128, &[("52:54:00:00:00:11", L0, "10.10.0.1/24")])).await.unwrap();
    a.define(&vm_spec(
        &lab,
        "vm2",
        128,
        &[("52:54:00:00:00:21", L0, "10.10.0.2/24"), ("52:54:00:00:01:21", L1, "10.20.0.2/24")],
    ))
    .await
    .unwrap();
    b.define(&vm_spec(
        &lab,
        "vm3",
        128,
        &[("52:54:00:00:00:31", L0, "10.10.0.3/24"), ("52:54:00:00:01:31", L1, "10.20.0.3/24")],
    ))
    .await
    .unwrap();
    for seg in [L0, L1] {
        a.set_segment_peers(seg, &SegmentPeers { peers: vec![hb.tunnel.clone()] }).await.unwrap();
        b.set_segment_peers(seg, &SegmentPeers { peers: vec![ha.tunnel.clone()] }).await.unwrap();
    }
    for n in ["vm1", "vm2"] {
        a.action(n, Action::Start, &ActionRequest::default()).await.unwrap();
    }
    b.action("vm3", Action::Start, &ActionRequest::default()).await.unwrap();
    wait_ready(&a, &["vm1", "vm2"], Duration::from_secs(120)).await;
    wait_ready(&b, &["vm3"], Duration::from_secs(120)).await;

    // Every pair on every segment it shares.
    assert_eq!(ping(&a, "vm1", "10.10.0.2").await, 3, "vm1 -> vm2 on L0 (same host)");
    assert_eq!(ping(&a, "vm1", "10.10.0.3").await, 3, "vm1 -> vm3 on L0 (across hosts)");
    assert_eq!(ping(&a, "vm2", "10.10.0.3").await, 3, "vm2 -> vm3 on L0");
    assert_eq!(ping(&a, "vm2", "10.20.0.3").await, 3, "vm2 -> vm3 on L1");
    assert_eq!(ping(&b, "vm3", "10.20.0.2").await, 3, "vm3 -> vm2 on L1");
    assert_eq!(ping(&b, "vm3", "10.10.0.1").await, 3, "vm3 -> vm1 on L0");
    // vm1 is not on L1.
    assert_eq!(ping(&a, "vm1", "10.20.0.3").await, 0, "vm1 must not reach L1");

    // Cross-host frames were counted on the tunnels, both ways.
    let sa = a.switch().await.unwrap();
    let sb = b.switch().await.unwrap();
    assert!(sa.tunnels.iter().any(|t| t.tx_frames > 0 && t.rx_frames > 0), "{sa:?}");
    assert!(sb.tunnels.iter().any(|t| t.tx_frames > 0 && t.rx_frames > 0), "{sb:?}");

    // SIGKILL the agent of host A while its VMs run; restart it.
    let pids: Vec<_> = a.domains().await.unwrap().iter().map(|d| d.pid).collect();
    lab.kill_agent(0);
    tokio::task::block_in_place(|| lab.start_agent(0)).expect("restart agent");
    let a = lab.client(0).unwrap();
    let ev = wait_event(&a, 0, Duration::from_secs(10), |e| matches!(e.kind, EventKind::AgentStarted { .. })).await;
    match ev.kind {
        EventKind::AgentStarted { reattached } => assert_eq!(reattached, vec!["vm1".to_string(), "vm2".to_string()]),
        _ => unreachable!(),
    }
    let doms = a.domains().await.unwrap();
    assert!(doms.iter().all(|d| d.state == DomainState::Running), "{doms:?}");
    assert_eq!(doms.iter().map(|d| d.pid).collect::<Vec<_>>(), pids, "same QEMU processes");
    wait_ready(&a, &["vm1", "vm2"], Duration::from_secs(30)).await;
    // Switching goes on, on one host and across hosts.
    assert_eq!(ping(&a, "vm1", "10.10.0.2").await, 3);
    assert_eq!(ping(&a, "vm1", "10.10.0.3").await, 3);
    assert_eq!(ping(&a, "vm2", "10.20.0.3").await, 3);

    // Graceful stop with forced fallback, then destroy.
    let d = a.action("vm1", Action::Stop, &ActionRequest { timeout_s: Some(2) }).await.unwrap();
    assert_eq!(d.state, DomainState::Stopped);
    a.destroy("vm1").await.unwrap();
    assert_eq!(a.domain("vm1").await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    tokio::task::block_in_place(|| lab.down());
}
