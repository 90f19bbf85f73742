//! Acceptance 4: the AM is SIGKILLed and restarted with live slices. Nothing is lost (same
//! slivers, states, expiry), the VMs keep running, and expiry still happens on time.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, rspec_opts, wait_for, AmClient, AmLabOptions, AmTestbed};

const ONE_VM: &str = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="solo" exclusive="false"><sliver_type name="vnsnap-vm"/></node></rspec>"#;

fn ok(v: Value) -> Value {
    assert_eq!(geni_code(&v), Some(0), "{v:?}");
    v.get("value").cloned().unwrap()
}

fn slivers(v: &Value) -> Vec<Value> {
    v.get("geni_slivers").and_then(Value::as_array).unwrap().to_vec()
}

fn field<'a>(s: &'a Value, k: &str) -> &'a str {
    s.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Allocate + Provision (with an end time) + geni_start; waits for geni_ready.
fn bring_up(c: &AmClient, urn: &str, cred_xml: &str, end: Option<String>) -> Vec<Value> {
    let creds = Value::Array(vec![cred(cred_xml)]);
    ok(c.call("Allocate", &[Value::str(urn), creds.clone(), Value::str(ONE_VM), Value::structure::<&str>([])])
        .unwrap());
    let mut extra = vec![];
    if let Some(t) = end {
        extra.push(("geni_end_time", Value::str(t)));
    }
    ok(c.call("Provision", &[Value::Array(vec![Value::str(urn)]), creds.clone(), rspec_opts(extra)]).unwrap());
    ok(c.call(
        "PerformOperationalAction",
        &[Value::Array(vec![Value::str(urn)]), creds.clone(), Value::str("geni_start"), Value::structure::<&str>([])],
    )
    .unwrap());
    wait_for(Duration::from_secs(200), Duration::from_secs(1), || {
        let st = ok(c
            .call("Status", &[Value::Array(vec![Value::str(urn)]), creds.clone(), Value::structure::<&str>([])])
            .unwrap());
        let s = slivers(&st);
        s.iter().all(|x| field(x, "geni_operational_status") == "geni_ready").then_some(s)
    })
    .expect("slice ready")
}

fn status(c: &AmClient, urn: &str, cred_xml: &str) -> Value {
    c.call(
        "Status",
        &[Value::Array(vec![Value::str(urn)]), Value::Array(vec![cred(cred_xml)]), Value::structure::<&str>([])],
    )
    .unwrap()
}

#[test]
fn sigkill_restart_keeps_slices_and_expiry() {
    let mut tb = AmTestbed::up(2, AmLabOptions { vm_memory_mib: 128, expiry_check_secs: 1, ..Default::default() })
        .expect("testbed up");
    let keep = tb.slice("keep1").unwrap();
    let short = tb.slice("short1").unwrap();
    let c = tb.v3().unwrap();
    let keep_before = bring_up(&c, &keep.urn, &keep.cred_xml, None);
    // Whole seconds: the AM is given the end time in RFC 3339 without fractions.
    let end = (Utc::now() + chrono::Duration::seconds(150)).trunc_subsecs(0);
    let short_before = bring_up(&c, &short.urn, &short.cred_xml, Some(end.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
    let short_expires = field(&short_before[0], "geni_expires").to_string();
    assert_eq!(short_expires, end.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let domain = |s: &Value| format!("vm-{}", field(s, "geni_sliver_urn").rsplit('+').next().unwrap());
    let find = |d: &str| -> Option<(usize, vnsnap_proto::DomainInfo)> {
        rt.block_on(async {
            for i in 0..tb.lab.hosts.len() {
                if let Ok(info) = tb.lab.client(i).unwrap().domain(d).await {
                    return Some((i, info));
                }
            }
            None
        })
    };
    let keep_dom = domain(&keep_before[0]);
    let short_dom = domain(&short_before[0]);
    let (_, before) = find(&keep_dom).expect("keep1 domain");
    let pid_before = before.pid;

    // SIGKILL: no chance to clean up. Restart on the same state directory.
    tb.am.kill();
    tb.am.spawn().expect("AM restarts");
    let c = tb.v3().unwrap();
    for (s, before) in [(&keep, &keep_before), (&short, &short_before)] {
        let after = slivers(&ok(status(&c, &s.urn, &s.cred_xml)));
        assert_eq!(after.len(), before.len());
        for (a, b) in after.iter().zip(before.iter()) {
            for k in ["geni_sliver_urn", "geni_allocation_status", "geni_operational_status", "geni_expires"] {
                assert_eq!(field(a, k), field(b, k), "{k} changed across the restart");
            }
        }
    }
    let (_, after) = find(&keep_dom).expect("keep1 domain after restart");
    assert_eq!(after.pid, pid_before, "the VM kept running through the AM restart");
    let d = ok(c
        .call(
            "Describe",
            &[Value::Array(vec![Value::str(&keep.urn)]), Value::Array(vec![cred(&keep.cred_xml)]), rspec_opts(vec![])],
        )
        .unwrap());
    assert!(field(&d, "geni_rspec").contains("vlantag") || field(&d, "geni_rspec").contains("sliver_id"));

    // Expiry still happens on time after the restart.
    let deadline = end + chrono::Duration::seconds(15);
    let gone = wait_for(Duration::from_secs(400), Duration::from_secs(1), || {
        (geni_code(&status(&c, &short.urn, &short.cred_xml)) == Some(12)).then(Utc::now)
    })
    .expect("short1 expires");
    assert!(gone >= end, "expired early: {gone} < {end}");
    assert!(gone <= deadline, "expired late: {gone} > {deadline}\n{}", tb.am.log_tail());
    let t0 = Instant::now();
    while find(&short_dom).is_some() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(find(&short_dom).is_none(), "expired VM's domain was destroyed");
    // The other slice is untouched.
    let st = slivers(&ok(status(&c, &keep.urn, &keep.cred_xml)));
    assert_eq!(field(&st[0], "geni_operational_status"), "geni_ready");
    let creds = Value::Array(vec![cred(&keep.cred_xml)]);
    ok(c.call("Delete", &[Value::Array(vec![Value::str(&keep.urn)]), creds, Value::structure::<&str>([])]).unwrap());
}
