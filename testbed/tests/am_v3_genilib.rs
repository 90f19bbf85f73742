//! Acceptance 1: geni-lib (PyPI) drives the full AM API v3 cycle against a real vnsnap-am
//! with real TLS and signed credentials; the three VMs really boot on two hosts and ping
//! across both links (checked through the agents' guest channels).

use std::collections::BTreeMap;

use vnsnap_proto::client::AgentClient;
use vnsnap_testbed::amlab::{run_py, three_vm_rspec, AmLabOptions, AmTestbed};

/// Domain name and agent of every VM sliver, by node client_id, read from the agents.
async fn vms(tb: &AmTestbed, manifest: &str) -> BTreeMap<String, (String, AgentClient)> {
    let rspec = vnsnap_rspec::parse(manifest).expect("manifest parses");
    let mut out = BTreeMap::new();
    for n in &rspec.nodes {
        let sliver = n.sliver_id.clone().expect("sliver_id in manifest");
        let domain = format!("vm-{}", sliver.rsplit('+').next().unwrap());
        for i in 0..tb.lab.hosts.len() {
            let c = tb.lab.client(i).unwrap();
            if c.domain(&domain).await.is_ok() {
                out.insert(n.client_id.as_deref().unwrap().to_string(), (domain.clone(), c));
            }
        }
    }
    out
}

/// Domain states and console tails of every agent, for failure reports.
async fn diagnose(tb: &AmTestbed) -> String {
    let mut out = String::new();
    for i in 0..tb.lab.hosts.len() {
        let c = tb.lab.client(i).unwrap();
        for d in c.domains().await.unwrap_or_default() {
            out.push_str(&format!(
                "{} {}: {:?} guest_ready={}\n",
                tb.lab.hosts[i].name, d.name, d.state, d.guest_ready
            ));
            let con = c.console(&d.name).await.unwrap_or_default();
            let lines: Vec<&str> = con.lines().collect();
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            out.push('\n');
        }
    }
    out
}

async fn ping(vms: &BTreeMap<String, (String, AgentClient)>, from: &str, dst: &str) -> u64 {
    let (d, c) = &vms[from];
    let r = c
        .guest(d, &serde_json::json!({"op": "ping", "dst": dst, "count": 3, "timeout_ms": 8000}))
        .await
        .expect("guest ping");
    r.get("received").and_then(serde_json::Value::as_u64).unwrap_or(0)
}

async fn all_pings(vms: &BTreeMap<String, (String, AgentClient)>) {
    assert_eq!(ping(vms, "vm1", "10.10.1.2").await, 3, "vm1 -> vm2 on link0");
    assert_eq!(ping(vms, "vm2", "10.10.2.3").await, 3, "vm2 -> vm3 on link1");
    assert_eq!(ping(vms, "vm3", "10.10.2.2").await, 3, "vm3 -> vm2 on link1");
    assert_eq!(ping(vms, "vm1", "10.10.2.3").await, 0, "vm1 is not on link1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn geni_lib_v3_cycle_boots_and_pings() {
    let tb =
        tokio::task::block_in_place(|| AmTestbed::up(2, AmLabOptions { vm_memory_mib: 128, ..Default::default() }))
            .expect("testbed up");
    let slice = tb.slice("genilib1").unwrap();
    let rspec = tb.dir.join("three.rspec");
    std::fs::write(&rspec, three_vm_rspec(128)).unwrap();
    let args = |phase: &str| -> Vec<String> {
        vec![
            phase.into(),
            "--url".into(),
            tb.am.url_v3(),
            "--cert".into(),
            tb.alice_chain.display().to_string(),
            "--key".into(),
            tb.alice.key.display().to_string(),
            "--user-cred".into(),
            tb.user_cred.display().to_string(),
            "--slice-cred".into(),
            slice.cred.display().to_string(),
            "--slice".into(),
            slice.urn.clone(),
            "--rspec".into(),
            rspec.display().to_string(),
            "--user-urn".into(),
            tb.alice.urn.clone(),
        ]
    };
    let log = || tb.am.log_tail();
    let up = match tokio::task::block_in_place(|| run_py("v3_cycle.py", &args("up"))) {
        Ok(v) => v,
        Err(e) => {
            let diag = diagnose(&tb).await;
            panic!("{e}\nAM log:\n{}\nagents:\n{diag}", log());
        }
    };
    assert_eq!(up["allocated"].as_array().unwrap().len(), 3);
    assert_eq!(up["ad_nodes"], 2, "one advertised node per host");
    let manifest = up["manifest"].as_str().unwrap();
    assert!(manifest.contains("vlantag="), "{manifest}");
    assert!(manifest.contains("mac_address=\"02:"), "{manifest}");
    assert!(manifest.contains("services_user"), "geni_users keys in the manifest: {manifest}");
    assert!(manifest.contains("expires="), "{manifest}");

    let vms = vms(&tb, manifest).await;
    assert_eq!(vms.len(), 3, "every VM is defined on an agent");
    let hosts: std::collections::BTreeSet<&str> = vms.values().map(|(_, c)| c.base()).collect();
    assert_eq!(hosts.len(), 2, "the VMs are spread over both hosts");
    all_pings(&vms).await;

    let ops = tokio::task::block_in_place(|| run_py("v3_cycle.py", &args("ops")))
        .unwrap_or_else(|e| panic!("{e}\nAM log:\n{}", log()));
    assert_eq!(ops["describe_slivers"], 3);
    assert!(ops["describe_manifest"].as_str().unwrap().contains("sliver_id"));
    // After geni_restart the guests are up again and still connected.
    all_pings(&vms).await;

    let down = tokio::task::block_in_place(|| run_py("v3_cycle.py", &args("down")))
        .unwrap_or_else(|e| panic!("{e}\nAM log:\n{}", log()));
    assert_eq!(down["status_after_delete_code"], 12);
    for (name, (d, c)) in &vms {
        assert!(c.domain(d).await.is_err(), "{name}'s domain {d} still exists after Delete");
    }
}
