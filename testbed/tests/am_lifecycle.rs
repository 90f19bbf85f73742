//! Sliver lifetimes and state rules through the real daemon (no VM is booted): allocation
//! timeout, Renew limits (past, beyond the credential, alap), actions in the wrong state,
//! Provision option checks, per-sliver operations and Shutdown.

use std::time::Duration;

use chrono::Utc;
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, rspec_opts, wait_for, AmClient, AmLabOptions, AmTestbed};

const TWO_VMS: &str = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="a" exclusive="false"><sliver_type name="vnsnap-vm"/></node>
  <node client_id="b" exclusive="false"><sliver_type name="emulab-xen"/></node></rspec>"#;

fn empty() -> Value {
    Value::structure::<&str>([])
}

fn code(v: &Value) -> i64 {
    geni_code(v).unwrap_or(-1)
}

fn urns(u: &[&str]) -> Value {
    Value::Array(u.iter().map(|s| Value::str(*s)).collect())
}

fn sliver_urns(v: &Value) -> Vec<String> {
    v.get("value")
        .and_then(|x| x.get("geni_slivers"))
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|s| s.get("geni_sliver_urn").and_then(Value::as_str).unwrap().to_string())
        .collect()
}

#[test]
fn lifetimes_and_state_rules() {
    let tb = AmTestbed::up(1, AmLabOptions { vm_memory_mib: 128, allocation_timeout_secs: 6, ..Default::default() })
        .expect("testbed up");
    let c: AmClient = tb.v3().unwrap();
    let log = || tb.am.log_tail();

    // Allocation timeout: allocated slivers vanish by themselves.
    let s1 = tb.slice("timeout1").unwrap();
    let cr1 = Value::Array(vec![cred(&s1.cred_xml)]);
    let r = c.call("Allocate", &[Value::str(&s1.urn), cr1.clone(), Value::str(TWO_VMS), empty()]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}\n{}", log());
    let gone = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        (code(&c.call("Status", &[urns(&[&s1.urn]), cr1.clone(), empty()]).unwrap()) == 12).then_some(())
    });
    assert!(gone.is_some(), "allocated slivers outlived the allocation timeout");

    // A slice to play with: allocate, then provision one sliver only.
    let s2 = tb.slice("rules1").unwrap();
    let cr2 = Value::Array(vec![cred(&s2.cred_xml)]);
    let r = c.call("Allocate", &[Value::str(&s2.urn), cr2.clone(), Value::str(TWO_VMS), empty()]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
    let ids = sliver_urns(&r);
    assert_eq!(ids.len(), 2);
    // The manifest and the advertisement validate against the GENI v3 schemas.
    let manifest = r.get("value").unwrap().get("geni_rspec").and_then(Value::as_str).unwrap().to_string();
    let ucred = std::fs::read_to_string(&tb.user_cred).unwrap();
    let ad = c.call("ListResources", &[Value::Array(vec![cred(&ucred)]), rspec_opts(vec![])]).unwrap();
    let ad = ad.get("value").and_then(Value::as_str).unwrap().to_string();
    for (kind, doc) in [("manifest", &manifest), ("advertisement", &ad)] {
        let f = tb.dir.join(format!("{kind}.xml"));
        std::fs::write(&f, doc).unwrap();
        let schema = vnsnap_testbed::image::repo_root().join(format!("rspec/tests/schemas/{kind}-all.xsd"));
        let out = std::process::Command::new("xmllint")
            .arg("--noout")
            .arg("--nonet")
            .arg("--schema")
            .arg(&schema)
            .arg(&f)
            .output()
            .expect("xmllint runs");
        assert!(out.status.success(), "{kind} does not validate: {}\n{doc}", String::from_utf8_lossy(&out.stderr));
    }
    // Same client_ids again in the slice: ALREADYEXISTS.
    let r = c.call("Allocate", &[Value::str(&s2.urn), cr2.clone(), Value::str(TWO_VMS), empty()]).unwrap();
    assert_eq!(code(&r), 17, "{r:?}");
    // POA on allocated (not provisioned) slivers: UNSUPPORTED, nothing acts.
    let r = c
        .call("PerformOperationalAction", &[urns(&[&s2.urn]), cr2.clone(), Value::str("geni_start"), empty()])
        .unwrap();
    assert_eq!(code(&r), 13, "{r:?}");
    // Provision needs geni_rspec_version.
    let r = c.call("Provision", &[urns(&[&ids[0]]), cr2.clone(), empty()]).unwrap();
    assert_eq!(code(&r), 1, "{r:?}");
    let r = c.call("Provision", &[urns(&[&ids[0]]), cr2.clone(), rspec_opts(vec![])]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}\n{}", log());
    let st = c.call("Status", &[urns(&[&s2.urn]), cr2.clone(), empty()]).unwrap();
    let states: Vec<String> = st
        .get("value")
        .unwrap()
        .get("geni_slivers")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.get("geni_allocation_status").and_then(Value::as_str).unwrap().to_string())
        .collect();
    assert_eq!(states, ["geni_provisioned", "geni_allocated"]);
    // Mixed states: geni_start on the slice fails as a whole unless best effort.
    let r = c
        .call("PerformOperationalAction", &[urns(&[&s2.urn]), cr2.clone(), Value::str("geni_start"), empty()])
        .unwrap();
    assert_eq!(code(&r), 13, "{r:?}");
    let be = Value::structure([("geni_best_effort", Value::Bool(true))]);
    let r = c.call("PerformOperationalAction", &[urns(&[&s2.urn]), cr2.clone(), Value::str("geni_stop"), be]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
    let per: Vec<&str> = r
        .get("value")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.get("geni_error").and_then(Value::as_str).unwrap())
        .collect();
    assert!(per.iter().all(|e| !e.is_empty()), "both refused individually: {per:?}");

    // Renew: past → OUTOFRANGE; beyond the credential (30 days) → OUTOFRANGE; alap → capped.
    let t = |d: i64| (Utc::now() + chrono::Duration::days(d)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let r = c.call("Renew", &[urns(&[&ids[0]]), cr2.clone(), Value::str(t(-1)), empty()]).unwrap();
    assert_eq!(code(&r), 19, "{r:?}");
    let r = c.call("Renew", &[urns(&[&ids[0]]), cr2.clone(), Value::str(t(40)), empty()]).unwrap();
    assert_eq!(code(&r), 19, "{r:?}");
    let alap = Value::structure([("geni_extend_alap", Value::Bool(true))]);
    let r = c.call("Renew", &[urns(&[&ids[0]]), cr2.clone(), Value::str(t(40)), alap]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
    let got =
        r.get("value").unwrap().as_array().unwrap()[0].get("geni_expires").and_then(Value::as_str).unwrap().to_string();
    assert!(got < t(31) && got > t(29), "alap grants the credential's expiry: {got}");
    let r = c.call("Renew", &[urns(&[&ids[0]]), cr2.clone(), Value::str("2026-13-45"), empty()]).unwrap();
    assert_eq!(code(&r), 1, "{r:?}");

    // Delete one sliver: it is gone, the other remains.
    let r = c.call("Delete", &[urns(&[&ids[0]]), cr2.clone(), empty()]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
    assert_eq!(code(&c.call("Status", &[urns(&[&ids[0]]), cr2.clone(), empty()]).unwrap()), 12);
    assert_eq!(code(&c.call("Status", &[urns(&[&ids[1]]), cr2.clone(), empty()]).unwrap()), 0);
    // Slivers of another slice with this slice's credential: refused.
    let s3 = tb.slice("other1").unwrap();
    let cr3 = Value::Array(vec![cred(&s3.cred_xml)]);
    let r = c.call("Status", &[urns(&[&ids[1]]), cr3.clone(), empty()]).unwrap();
    assert_ne!(code(&r), 0);

    // Shutdown: the slice refuses changes afterwards.
    let r = c.call("Shutdown", &[Value::str(&s2.urn), cr2.clone(), empty()]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
    let one = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="z" exclusive="false"/></rspec>"#;
    let r = c.call("Allocate", &[Value::str(&s2.urn), cr2.clone(), Value::str(one), empty()]).unwrap();
    assert_eq!(code(&r), 7, "{r:?}");
    let r = c.call("Delete", &[urns(&[&s2.urn]), cr2, empty()]).unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
}
