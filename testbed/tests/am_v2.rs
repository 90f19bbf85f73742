//! Acceptance 2: Python's xmlrpc.client with a client certificate performs the AM API v2
//! cycle (CreateSliver, SliverStatus, ListResources with geni_slice_urn, RenewSliver,
//! DeleteSliver) against a real vnsnap-am with agents.

use vnsnap_testbed::amlab::{run_py, three_vm_rspec, AmLabOptions, AmTestbed};

#[test]
fn xmlrpc_client_v2_cycle() {
    let tb = AmTestbed::up(2, AmLabOptions { vm_memory_mib: 128, ..Default::default() }).expect("testbed up");
    let slice = tb.slice("v2slice").unwrap();
    let rspec = tb.dir.join("three.rspec");
    std::fs::write(&rspec, three_vm_rspec(128)).unwrap();
    let args: Vec<String> = vec![
        "--url".into(),
        tb.am.url_v2(),
        "--cert".into(),
        tb.alice_chain.display().to_string(),
        "--key".into(),
        tb.alice.key.display().to_string(),
        "--slice-cred".into(),
        slice.cred.display().to_string(),
        "--slice".into(),
        slice.urn.clone(),
        "--rspec".into(),
        rspec.display().to_string(),
        "--user-urn".into(),
        tb.alice.urn.clone(),
    ];
    let out = run_py("v2_cycle.py", &args).unwrap_or_else(|e| panic!("{e}\nAM log:\n{}", tb.am.log_tail()));
    assert_eq!(out["create_manifest_nodes"], 3);
    assert_eq!(out["create_again_code"], 17, "second CreateSliver on the slice: ALREADYEXISTS");
    assert_eq!(out["status"]["geni_resources"].as_array().unwrap().len(), 3);
    assert!(out["manifest"].as_str().unwrap().contains("sliver_id"));
    assert_eq!(out["renew"], true);
    assert_eq!(out["delete"], true);
    assert_eq!(out["status_after_delete_code"], 12);
}
