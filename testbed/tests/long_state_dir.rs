//! Issue 17, item 8: an agent whose state directory is so deep that the unix sockets below
//! it do not fit `sun_path` (108 bytes) still runs its VMs: a VM starts and its guest
//! answers (QMP and guest channel sockets), and a snapshot of it is taken and restored
//! (the saver's and the restore's sockets).

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use vnsnap_proto::*;
use vnsnap_testbed::lab::{Lab, LabOptions};

const SEG: SegmentId = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vms_run_under_a_state_dir_too_deep_for_unix_sockets() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::path::PathBuf::from(format!(
        "/tmp/vsl-long-{}-{}/{}",
        std::process::id(),
        nanos % 1_000_000,
        "a-state-directory-far-deeper-than-a-unix-socket-path-can-be/".repeat(2)
    ));
    let lab = tokio::task::block_in_place(|| Lab::up(LabOptions { hosts: 1, dir: Some(dir), ..Default::default() }))
        .expect("lab up");
    let state = lab.hosts[0].state_dir();
    let qmp = state.join("domains/vm1/qmp.sock");
    assert!(qmp.as_os_str().len() > 150, "not deep enough to test anything: {}", qmp.display());

    let c = lab.client(0).unwrap();
    c.define(&vm_spec(&lab, "vm1", 128, &[("52:54:00:00:03:11", SEG, "10.40.0.1/24")])).await.expect("define");
    c.action("vm1", Action::Start, &ActionRequest::default()).await.expect("start");
    wait_ready(&c, &["vm1"], Duration::from_secs(180)).await;
    let r = c.guest("vm1", &json!({"op": "hello"})).await.expect("guest channel");
    assert_eq!(r["ok"], json!(true), "{r}");
    eprintln!("vm1 runs under a {}-byte state directory", state.as_os_str().len());

    // The saver's socket and the restore's incoming socket are below the state directory
    // too.
    let id = "long-1";
    c.snapshot_prepare(&PrepareRequest { snapshot: id.into(), epoch: 1, domains: vec!["vm1".into()] })
        .await
        .expect("prepare");
    c.snapshot_cut(id, &CutRequest::default()).await.expect("cut");
    wait_saved(&c, id).await;
    let commit = c.snapshot_commit(id).await.expect("commit");
    c.guest("vm1", &json!({"op": "hello"})).await.expect("guest channel after the snapshot");
    let req = RestoreRequest {
        restore: "r1".into(),
        snapshot: id.into(),
        domains: commit.domains,
        epoch: 2,
        clock: Default::default(),
    };
    c.restore_prepare(&req).await.expect("restore prepare");
    c.restore_resume("r1").await.expect("restore resume");
    wait_ready(&c, &["vm1"], Duration::from_secs(120)).await;
    let r = c.guest("vm1", &json!({"op": "hello"})).await.expect("guest channel after the restore");
    assert_eq!(r["ok"], json!(true), "{r}");
    drop(lab);
}
