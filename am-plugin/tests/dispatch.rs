//! In-process dispatch tests: `api::handle` with a real authorizer (test clearinghouse roots)
//! and no agents, without TLS. Checks the one-dispatch/one-envelope rules.

use vnsnap_am::aggregate::Caller;
use vnsnap_am::api::{handle, ApiVersion};
use vnsnap_am::config::Config;
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::ch::{CertSpec, Clearinghouse, CredSpec};

fn code(v: &Value) -> i64 {
    match v.get("code").and_then(|c| c.get("geni_code")) {
        Some(Value::Int(i)) => *i,
        _ => panic!("not a GENI struct: {v:?}"),
    }
}

#[tokio::test]
async fn dispatch_and_envelopes() {
    let tmp = tempfile::tempdir().unwrap();
    let ch = Clearinghouse::create(&tmp.path().join("ch"), "geni:gpo:gcf").unwrap();
    let alice = ch.user("alice", &CertSpec::default()).unwrap();
    let slice = ch.slice(None, "disp1", &CertSpec::default()).unwrap();
    let scred = ch.slice_credential(&alice, &slice, &CredSpec::default()).unwrap();
    let cfg = format!(
        r#"listen = "127.0.0.1:0"
state_dir = {state:?}
authority = "am.test"
server_cert = "/nonexistent"
server_key = "/nonexistent"
trust_roots = [{root:?}]
agents = []
default_image = "img"
[cluster_tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
[images.img]
kernel = "/k"
"#,
        state = tmp.path().join("state").display().to_string(),
        root = ch.ca().cert.display().to_string(),
        ca = ch.ca().cert.display().to_string(),
        cert = alice.cert.display().to_string(),
        key = alice.key.display().to_string(),
    );
    let am = vnsnap_am::daemon::build(Config::parse(&cfg, "test").unwrap()).unwrap();
    let caller = Caller { chain: alice.chain_der().unwrap() };
    let nobody = Caller::default();

    let v = handle(&am, ApiVersion::V3, &caller, "GetVersion", vec![]).await.unwrap();
    assert_eq!(code(&v), 0);
    assert_eq!(v.get("geni_api"), Some(&Value::Int(3)), "top-level geni_api");
    let v = handle(&am, ApiVersion::V2, &caller, "GetVersion", vec![]).await.unwrap();
    assert_eq!(v.get("geni_api"), Some(&Value::Int(2)));

    // Unknown methods, and methods of the other endpoint, are XML-RPC faults.
    assert!(handle(&am, ApiVersion::V3, &caller, "Bogus", vec![]).await.is_err());
    assert!(handle(&am, ApiVersion::V3, &caller, "CreateSliver", vec![]).await.is_err());
    assert!(handle(&am, ApiVersion::V2, &caller, "Allocate", vec![]).await.is_err());

    // Everything else is a GENI struct with a non-zero code and an output.
    let slice_urns = Value::Array(vec![Value::str(&slice.urn)]);
    let creds = Value::Array(vec![Value::structure([
        ("geni_type", Value::str("geni_sfa")),
        ("geni_version", Value::str("3")),
        ("geni_value", Value::Base64(scred.clone().into_bytes())),
    ])]);
    let empty = || Value::structure::<&str>([]);
    let cases: Vec<(ApiVersion, &str, Vec<Value>, Option<i64>)> = vec![
        (ApiVersion::V3, "Status", vec![], Some(1)),
        (ApiVersion::V3, "Status", vec![slice_urns.clone(), creds.clone(), empty()], Some(12)),
        (ApiVersion::V3, "Status", vec![Value::Int(7), creds.clone(), empty()], Some(1)),
        (
            ApiVersion::V3,
            "Allocate",
            vec![Value::str(&slice.urn), creds.clone(), Value::str("<rspec"), empty()],
            Some(1),
        ),
        (
            ApiVersion::V3,
            "PerformOperationalAction",
            vec![slice_urns.clone(), creds.clone(), Value::str(""), empty()],
            Some(1),
        ),
        (
            ApiVersion::V3,
            "PerformOperationalAction",
            vec![slice_urns.clone(), creds.clone(), Value::str("geni_frobnicate"), empty()],
            Some(13),
        ),
        (ApiVersion::V3, "DescribeSnapshot", vec![Value::str("urn:nope"), creds.clone(), empty()], None),
        (ApiVersion::V3, "Renew", vec![slice_urns.clone(), creds.clone(), Value::str("not a time"), empty()], Some(1)),
        (
            ApiVersion::V2,
            "SliverStatus",
            vec![Value::str(&slice.urn), Value::Array(vec![Value::str(&scred)]), empty()],
            Some(12),
        ),
        (ApiVersion::V2, "DeleteSliver", vec![Value::str("not-a-urn"), Value::Array(vec![]), empty()], Some(1)),
    ];
    for (api, m, params, want) in cases {
        let v = handle(&am, api, &caller, m, params).await.unwrap();
        let c = code(&v);
        assert_ne!(c, 0, "{m}: {v:?}");
        if let Some(w) = want {
            assert_eq!(c, w, "{m}: {v:?}");
        }
        assert!(v.get("output").and_then(Value::as_str).is_some_and(|o| !o.is_empty()));
    }
    // No client certificate: refused with a GENI struct, not a fault.
    let v = handle(&am, ApiVersion::V3, &nobody, "Status", vec![slice_urns, creds, empty()]).await.unwrap();
    assert_ne!(code(&v), 0);
}
