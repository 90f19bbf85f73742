//! Issue "Live, consistent snapshot and restore", acceptance 1 (and the main job's
//! scenario): through the AM API with real credentials, a running 3-VM, 2-host slice with
//! all three workloads is snapshotted (`vnsnap_snapshot`), keeps running, is listed
//! complete, is damaged, is restored (`vnsnap_restore`); afterwards every invariant holds
//! and no TCP connection between the VMs was reset.
//!
//! Issue 17, acceptance 5: on the same slice, `Describe` called as omni calls it (Python's
//! XML-RPC client with the experimenter's certificate) lists the slice's snapshot in the
//! manifest's `vnsnap:snapshots` element, and the manifest stays valid against the GENI v3
//! manifest schema.

use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, AmLabOptions, AmTestbed};
use vnsnap_testbed::snapshot_demo::scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_and_restore_through_the_am() {
    let tb = tokio::task::block_in_place(|| AmTestbed::up(2, AmLabOptions::default())).expect("testbed");
    // `keep`: the slice stays for the Describe check below, which deletes it.
    let sum = scenario(&tb, &|m: &str| eprintln!("{m}"), true).await.expect("scenario");
    eprintln!("{sum:?}");
    assert_eq!(sum.pauses.len(), 3, "one cut per VM");
    assert!(sum.after_snapshot.is_ok(), "after snapshot: {:?}", sum.after_snapshot.violations);
    // The checker's invariants include "no ring connection error or reset".
    assert!(sum.after_restore.is_ok(), "after restore: {:?}", sum.after_restore.violations);

    tokio::task::block_in_place(|| {
        describe_lists_the_snapshot(&tb, &sum.slice.urn, &sum.slice.cred, &sum.snapshot_urn)
    });
}

/// Describe through Python's xmlrpc.client (as omni) shows the snapshot; then the slice is
/// deleted.
fn describe_lists_the_snapshot(tb: &AmTestbed, slice: &str, cred_file: &std::path::Path, snapshot: &str) {
    let script = vnsnap_testbed::image::repo_root().join("testbed/tests/py/describe_snapshots.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--url", &tb.am.url_v3(), "--slice", slice])
        .arg("--cert")
        .arg(&tb.alice_chain)
        .arg("--key")
        .arg(&tb.alice.key)
        .arg("--slice-cred")
        .arg(cred_file)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!("describe_snapshots.py: bad output ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success() && v["ok"] == true, "describe_snapshots.py: {v}\n{}", tb.am.log_tail());
    let snaps = v["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 1, "{v}");
    assert_eq!(snaps[0]["urn"], snapshot);
    assert_eq!(snaps[0]["name"], "before-damage");
    assert_eq!(snaps[0]["state"], "complete");
    assert!(snaps[0]["created"].as_str().is_some_and(|c| c.ends_with('Z')), "{v}");

    // The manifest with the list validates against the GENI v3 manifest schema.
    let manifest = v["manifest"].as_str().unwrap();
    let f = tb.dir.join("describe-manifest.xml");
    std::fs::write(&f, manifest).unwrap();
    let schema = vnsnap_testbed::image::repo_root().join("rspec/tests/schemas/manifest-all.xsd");
    let lint = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(&schema)
        .arg(&f)
        .output()
        .expect("xmllint runs");
    assert!(lint.status.success(), "manifest does not validate: {}\n{manifest}", String::from_utf8_lossy(&lint.stderr));

    let xml = std::fs::read_to_string(cred_file).unwrap();
    let c = tb.v3().unwrap();
    let r = c
        .call(
            "Delete",
            &[Value::Array(vec![Value::str(slice)]), Value::Array(vec![cred(&xml)]), Value::structure::<&str>([])],
        )
        .unwrap();
    assert_eq!(geni_code(&r), Some(0), "{r:?}");
}
