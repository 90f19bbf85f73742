//! System test of the AM API surface against a real vnsnap-am process with real TLS and
//! credentials signed by the test clearinghouse, without agents: GetVersion shape, GENI error
//! structs for every failure clients probe, operational-action argument checks.

use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, rspec_opts, AmClient, AmLab, AmLabOptions};
use vnsnap_testbed::ch::{CertSpec, Clearinghouse, CredSpec, Identity};

struct Env {
    _tmp: tempfile::TempDir,
    am: AmLab,
    ch: Clearinghouse,
    alice: Identity,
    user_cred: String,
    slice_cred: String,
    slice_urn: String,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let ch = Clearinghouse::create(&tmp.path().join("ch"), "geni:gpo:gcf").unwrap();
    let alice = ch.user("alice", &CertSpec::default()).unwrap();
    let slice = ch.slice(None, "snap1", &CertSpec::default()).unwrap();
    let user_cred = ch.user_credential(&alice, &CredSpec::user_default()).unwrap();
    let slice_cred = ch.slice_credential(&alice, &slice, &CredSpec::default()).unwrap();
    let am = AmLab::start(&tmp.path().join("am"), &ch, &AmLabOptions::default()).unwrap();
    Env { slice_urn: slice.urn.clone(), _tmp: tmp, am, ch, alice, user_cred, slice_cred }
}

fn code_of(v: &Value) -> i64 {
    geni_code(v).unwrap_or_else(|| panic!("not a GENI struct: {v:?}"))
}

fn assert_error_struct(v: &Value, want: Option<i64>) {
    let code = code_of(v);
    assert_ne!(code, 0, "expected an error: {v:?}");
    if let Some(w) = want {
        assert_eq!(code, w, "{v:?}");
    }
    assert!(v.get("output").and_then(Value::as_str).is_some_and(|o| !o.is_empty()), "{v:?}");
    assert!(v.get("value").is_some());
}

#[test]
fn am_api_surface() {
    let e = env();
    let v3 = AmClient::new(&e.am.url_v3(), &e.alice).unwrap();
    let v2 = AmClient::new(&e.am.url_v2(), &e.alice).unwrap();

    // GetVersion: zero params (omni) and {} (geni-lib), on both endpoints.
    for (c, api) in [(&v3, 3), (&v2, 2)] {
        for params in [vec![], vec![Value::structure::<&str>([])]] {
            let r = c.call("GetVersion", &params).unwrap();
            assert_eq!(code_of(&r), 0);
            assert_eq!(r.get("geni_api"), Some(&Value::Int(api)));
            let v = r.get("value").unwrap();
            assert_eq!(v.get("geni_api"), Some(&Value::Int(api)));
            assert_eq!(v.get("geni_single_allocation"), Some(&Value::Int(0)));
            assert_eq!(v.get("geni_allocate"), Some(&Value::str("geni_disjoint")));
            let versions = v.get("geni_api_versions").unwrap();
            assert_eq!(versions.get("3"), Some(&Value::str(e.am.url_v3())));
            assert_eq!(versions.get("2"), Some(&Value::str(e.am.url_v2())));
            for k in ["geni_request_rspec_versions", "geni_ad_rspec_versions"] {
                let rv = &v.get(k).unwrap().as_array().unwrap()[0];
                for f in ["type", "version", "schema", "namespace", "extensions"] {
                    assert!(rv.get(f).is_some(), "{k} lacks {f}");
                }
                assert_eq!(rv.get("version"), Some(&Value::str("3")));
            }
            let ct = v.get("geni_credential_types").unwrap().as_array().unwrap();
            assert!(ct.iter().any(|c| c.get("geni_type") == Some(&Value::str("geni_sfa"))
                && c.get("geni_version") == Some(&Value::str("3"))));
        }
    }

    // ListResources: user credential works, plain and compressed; no credential is refused.
    let r = v3.call("ListResources", &[Value::Array(vec![cred(&e.user_cred)]), rspec_opts(vec![])]).unwrap();
    assert_eq!(code_of(&r), 0, "{r:?}\n{}", e.am.log_tail());
    let ad = r.get("value").and_then(Value::as_str).unwrap();
    assert!(ad.contains("rspec_opstate") && ad.contains("advertisement"), "{ad}");
    let r = v3
        .call(
            "ListResources",
            &[Value::Array(vec![cred(&e.user_cred)]), rspec_opts(vec![("geni_compressed", Value::Bool(true))])],
        )
        .unwrap();
    assert_eq!(code_of(&r), 0);
    assert!(!r.get("value").and_then(Value::as_str).unwrap().contains('<'));
    let r = v3.call("ListResources", &[Value::Array(vec![]), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, None);
    // Missing geni_rspec_version → BADARGS; v3 geni_slice_urn → BADARGS.
    let r = v3.call("ListResources", &[Value::Array(vec![cred(&e.user_cred)]), Value::structure::<&str>([])]).unwrap();
    assert_error_struct(&r, Some(1));
    let r = v3
        .call(
            "ListResources",
            &[Value::Array(vec![cred(&e.user_cred)]), rspec_opts(vec![("geni_slice_urn", Value::str(&e.slice_urn))])],
        )
        .unwrap();
    assert_error_struct(&r, Some(1));
    // A credential typed geni_sfaBROKEN is skipped → no usable credential.
    let broken = Value::structure([
        ("geni_type", Value::str("geni_sfaBROKEN")),
        ("geni_version", Value::str("3")),
        ("geni_value", Value::str(&e.user_cred)),
    ]);
    let r = v3.call("ListResources", &[Value::Array(vec![broken]), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, None);
    // A truncated credential.
    let trunc = cred(&e.user_cred[..e.user_cred.len() / 2]);
    let r = v3.call("ListResources", &[Value::Array(vec![trunc]), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, None);

    let slice = Value::Array(vec![Value::str(&e.slice_urn)]);
    let scred = Value::Array(vec![cred(&e.slice_cred)]);
    // Never-created slice: Status, Describe, Delete → SEARCHFAILED.
    for (m, extra) in [("Status", None), ("Describe", Some(rspec_opts(vec![]))), ("Delete", None)] {
        let opts = extra.unwrap_or_else(|| Value::structure::<&str>([]));
        let r = v3.call(m, &[slice.clone(), scred.clone(), opts]).unwrap();
        assert_error_struct(&r, Some(12));
    }
    // Describe with the user credential as slice credential → refused.
    let r = v3.call("Describe", &[slice.clone(), Value::Array(vec![cred(&e.user_cred)]), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, None);
    assert_ne!(code_of(&r), 12, "must fail on authorization, not lookup: {r:?}");
    // Describe with an empty URN list, or a node URN.
    let r = v3.call("Describe", &[Value::Array(vec![]), scred.clone(), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, Some(1));
    let node = Value::Array(vec![Value::str("urn:publicid:IDN+vnsnap-am.test+node+host1")]);
    let r = v3.call("Describe", &[node, scred.clone(), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, Some(1));
    let unknown = Value::Array(vec![Value::str("urn:publicid:IDN+vnsnap-am.test+sliver+nope")]);
    let r = v3.call("Status", &[unknown, scred.clone(), Value::structure::<&str>([])]).unwrap();
    assert_error_struct(&r, Some(12));

    // POA: empty action → BADARGS, unknown → UNSUPPORTED; never a fault.
    let r = v3
        .call("PerformOperationalAction", &[slice.clone(), scred.clone(), Value::str(""), Value::structure::<&str>([])])
        .unwrap();
    assert_error_struct(&r, Some(1));
    let r = v3
        .call(
            "PerformOperationalAction",
            &[slice.clone(), scred.clone(), Value::str("geni_frobnicate"), Value::structure::<&str>([])],
        )
        .unwrap();
    assert_error_struct(&r, Some(13));

    // Allocate with an empty or malformed RSpec → BADARGS; with no hosts → INSUFFICIENT_NODES.
    let slice_s = Value::str(&e.slice_urn);
    for bad in ["", "<rspec type=\"request\"", "not xml at all"] {
        let r = v3
            .call("Allocate", &[slice_s.clone(), scred.clone(), Value::str(bad), Value::structure::<&str>([])])
            .unwrap();
        assert_error_struct(&r, Some(1));
    }
    let req = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
      <node client_id="vm1" exclusive="false"><sliver_type name="emulab-xen"/></node></rspec>"#;
    let r =
        v3.call("Allocate", &[slice_s.clone(), scred.clone(), Value::str(req), Value::structure::<&str>([])]).unwrap();
    assert_error_struct(&r, Some(26));

    // A credential from another CA.
    let tmp2 = tempfile::tempdir().unwrap();
    let other = Clearinghouse::create(tmp2.path(), "geni:gpo:gcf").unwrap();
    let mallory = other.user("alice", &CertSpec::default()).unwrap();
    let foreign = other.user_credential(&mallory, &CredSpec::user_default()).unwrap();
    let r = v3.call("ListResources", &[Value::Array(vec![cred(&foreign)]), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, None);
    // A client certificate from another CA is refused per call (TLS accepts the chain).
    let m = AmClient::new(&e.am.url_v3(), &mallory).unwrap();
    let r = m.call("ListResources", &[Value::Array(vec![cred(&foreign)]), rspec_opts(vec![])]).unwrap();
    assert_error_struct(&r, None);

    // v2 on a never-created slice.
    let r = v2
        .call(
            "SliverStatus",
            &[slice_s.clone(), Value::Array(vec![Value::str(&e.slice_cred)]), Value::structure::<&str>([])],
        )
        .unwrap();
    assert_error_struct(&r, Some(12));

    // Unknown method: an XML-RPC fault (protocol level), not a crash.
    assert!(v3.call("NoSuchMethod", &[]).is_err());
    // The AM is still alive after all that.
    assert_eq!(code_of(&v3.call("GetVersion", &[]).unwrap()), 0);
    let _ = &e.ch;
}

#[test]
fn requires_client_certificate() {
    let e = env();
    let http = reqwest::blocking::Client::builder().use_rustls_tls().danger_accept_invalid_certs(true).build().unwrap();
    let body = vnsnap_am::xmlrpc::write_call("GetVersion", &[]);
    let r = http.post(e.am.url_v3()).body(body).send();
    assert!(r.is_err(), "a call without a client certificate must fail: {r:?}");
}
