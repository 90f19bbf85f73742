//! Issue 17 item 2: every number of a request RSpec is range-checked at Allocate. A request
//! out of range is refused with BADARGS (1) and changes nothing: no slice or sliver rows,
//! no room taken, so a normal request afterwards still gets its VM. Runs a real vnsnap-am
//! with one real agent (no VM is booted: nothing is provisioned).

use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, AmLabOptions, AmTestbed};

fn request(xen_attrs: &str) -> String {
    format!(
        r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3" xmlns:emulab="http://www.protogeni.net/resources/rspec/ext/emulab/1">
  <node client_id="vm1" exclusive="false"><sliver_type name="emulab-xen"><emulab:xen {xen_attrs}/></sliver_type></node>
</rspec>"#
    )
}

/// A request of `n` nodes, each with `ifaces` interfaces.
fn many(n: usize, ifaces: usize) -> String {
    let mut s = String::from(r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">"#);
    for i in 0..n {
        s += &format!(r#"<node client_id="n{i}" exclusive="false"><sliver_type name="emulab-xen"/>"#);
        for j in 0..ifaces {
            s += &format!(r#"<interface client_id="n{i}:if{j}"/>"#);
        }
        s += "</node>";
    }
    s + "</rspec>"
}

fn empty() -> Value {
    Value::structure::<&str>([])
}

#[test]
fn out_of_range_requests_are_refused_and_change_nothing() {
    let tb = AmTestbed::up(1, AmLabOptions::default()).expect("testbed");
    let c = tb.v3().unwrap();
    let hog = tb.slice("hog").unwrap();
    let hog_creds = Value::Array(vec![cred(&hog.cred_xml)]);
    let allocate = |slice: &str, creds: &Value, rspec: &str| {
        c.call("Allocate", &[Value::str(slice), creds.clone(), Value::str(rspec), empty()]).unwrap()
    };

    let bad: Vec<(String, String)> = vec![
        ("ram 2^63".into(), request(r#"cores="1" ram="9223372036854775808""#)),
        ("ram 2^64-1".into(), request(r#"cores="1" ram="18446744073709551615""#)),
        ("ram 2^64".into(), request(r#"cores="1" ram="18446744073709551616""#)),
        ("ram 0".into(), request(r#"cores="1" ram="0""#)),
        ("ram below the minimum".into(), request(r#"ram="1""#)),
        ("ram above 1 TiB".into(), request(r#"ram="1048577""#)),
        ("ram negative".into(), request(r#"ram="-256""#)),
        ("ram not a number".into(), request(r#"ram="lots""#)),
        ("ram with a unit".into(), request(r#"ram="256MB""#)),
        ("cores absurd".into(), request(r#"cores="4294967295" ram="256""#)),
        ("cores 65".into(), request(r#"cores="65" ram="256""#)),
        ("cores negative".into(), request(r#"cores="-1" ram="256""#)),
        ("disk absurd".into(), request(r#"ram="256" disk="18446744073709551615""#)),
        ("257 nodes".into(), many(257, 0)),
        ("33 interfaces on a node".into(), many(1, 33)),
        ("1025 interfaces".into(), many(35, 30)),
    ];
    for (what, rspec) in &bad {
        let r = allocate(&hog.urn, &hog_creds, rspec);
        assert_eq!(geni_code(&r), Some(1), "{what}: {r:?}\n{}", tb.am.log_tail());
        let out = r.get("output").and_then(Value::as_str).unwrap_or_default();
        assert!(!out.is_empty(), "{what}: no message: {r:?}");
        // Nothing was recorded for the slice.
        let st = c.call("Status", &[Value::Array(vec![Value::str(&hog.urn)]), hog_creds.clone(), empty()]).unwrap();
        assert_eq!(geni_code(&st), Some(12), "{what}: the refused request left slivers: {st:?}");
    }
    // No row of any kind: the AM's own database has no slice, allocation or sliver.
    {
        let db = vnsnap_am::state::Db::open(&tb.am.dir().join("state")).unwrap();
        assert!(db.slice(&hog.urn).unwrap().is_none(), "a refused request recorded the slice");
        assert!(db.live_slivers().unwrap().is_empty(), "a refused request recorded slivers");
        let allocations: i64 = db.conn().query_row("SELECT COUNT(*) FROM allocations", [], |r| r.get(0)).unwrap();
        assert_eq!(allocations, 0, "a refused request recorded an allocation");
    }
    // The message names the value and the range.
    let r = allocate(&hog.urn, &hog_creds, &bad[0].1);
    let out = r.get("output").and_then(Value::as_str).unwrap_or_default();
    assert!(out.contains("9223372036854775808") && out.contains("1048576"), "{out}");

    // In range but more than any host has: placement refuses it (INSUFFICIENT_NODES)
    // and takes nothing.
    let r = allocate(&hog.urn, &hog_creds, &request(r#"cores="64" ram="1048576""#));
    assert_eq!(geni_code(&r), Some(26), "{r:?}");

    // Capacity is as before: a normal request of another slice gets its VM.
    let ok = tb.slice("normal").unwrap();
    let ok_creds = Value::Array(vec![cred(&ok.cred_xml)]);
    let r = allocate(&ok.urn, &ok_creds, &request(r#"cores="1" ram="256""#));
    assert_eq!(geni_code(&r), Some(0), "a normal request after the refused ones: {r:?}\n{}", tb.am.log_tail());
    let r = c.call("Delete", &[Value::Array(vec![Value::str(&ok.urn)]), ok_creds, empty()]).unwrap();
    assert_eq!(geni_code(&r), Some(0), "{r:?}");
}
