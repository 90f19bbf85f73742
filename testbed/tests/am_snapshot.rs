//! Issue "Live, consistent snapshot and restore", acceptance 1 (and the main job's
//! scenario): through the AM API with real credentials, a running 3-VM, 2-host slice with
//! all three workloads is snapshotted (`vnsnap_snapshot`), keeps running, is listed
//! complete, is damaged, is restored (`vnsnap_restore`); afterwards every invariant holds
//! and no TCP connection between the VMs was reset.

use vnsnap_testbed::amlab::{AmLabOptions, AmTestbed};
use vnsnap_testbed::snapshot_demo::scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_and_restore_through_the_am() {
    let tb = tokio::task::block_in_place(|| AmTestbed::up(2, AmLabOptions::default())).expect("testbed");
    let sum = scenario(&tb, &|m: &str| eprintln!("{m}"), false).await.expect("scenario");
    eprintln!("{sum:?}");
    assert_eq!(sum.pauses.len(), 3, "one cut per VM");
    assert!(sum.after_snapshot.is_ok(), "after snapshot: {:?}", sum.after_snapshot.violations);
    // The checker's invariants include "no ring connection error or reset".
    assert!(sum.after_restore.is_ok(), "after restore: {:?}", sum.after_restore.violations);
}
