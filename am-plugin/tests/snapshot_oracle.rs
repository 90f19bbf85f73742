//! Issue 17 item 6: the snapshot methods are no existence oracle. `DescribeSnapshot` and
//! `DeleteSnapshot` authorise before they look the snapshot up; a snapshot of a slice the
//! credentials are not for is answered exactly as one that does not exist, and without a
//! valid credential the answer is the same whether the snapshot exists or not.
//! In-process (`api::handle`, real authorizer and test clearinghouse, no agents).

use vnsnap_am::aggregate::Caller;
use vnsnap_am::api::{handle, ApiVersion};
use vnsnap_am::config::Config;
use vnsnap_am::snapshot::catalog::{self, Entry, EntryState};
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::ch::{CertSpec, Clearinghouse, CredSpec};

fn code(v: &Value) -> i64 {
    match v.get("code").and_then(|c| c.get("geni_code")) {
        Some(Value::Int(i)) => *i,
        _ => panic!("not a GENI struct: {v:?}"),
    }
}

fn output(v: &Value) -> String {
    v.get("output").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn entry(id: &str, slice_urn: &str, name: &str) -> Entry {
    Entry {
        id: id.into(),
        urn: catalog::snapshot_urn("vnsnap-am.test", slice_urn, name, id),
        slice_urn: slice_urn.into(),
        name: name.into(),
        owner: "urn:publicid:IDN+geni:gpo:gcf+user+bob".into(),
        state: EntryState::Pending,
        created: "2026-12-06T21:00:00Z".into(),
        manifest: String::new(),
        bytes: 0,
        error: String::new(),
        hosts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_snapshots_get_the_same_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let ch = Clearinghouse::create(&tmp.path().join("ch"), "geni:gpo:gcf").unwrap();
    let alice = ch.user("alice", &CertSpec::default()).unwrap();
    let bob = ch.user("bob", &CertSpec::default()).unwrap();
    let mine = ch.slice(None, "mine", &CertSpec::default()).unwrap();
    let theirs = ch.slice(None, "theirs", &CertSpec::default()).unwrap();
    let alice_mine = ch.slice_credential(&alice, &mine, &CredSpec::default()).unwrap();
    let alice_user = ch.user_credential(&alice, &CredSpec::user_default()).unwrap();
    let bob_theirs = ch.slice_credential(&bob, &theirs, &CredSpec::default()).unwrap();
    let cfg = format!(
        r#"listen = "127.0.0.1:0"
state_dir = {state:?}
authority = "vnsnap-am.test"
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
    // A snapshot of Alice's slice, and one of Bob's (which Alice may not see).
    let own = entry("11111111-aaaa", &mine.urn, "own");
    let foreign = entry("22222222-bbbb", &theirs.urn, "secret");
    {
        let c = am.db.conn();
        catalog::insert_pending(&c, &own).unwrap();
        catalog::insert_pending(&c, &foreign).unwrap();
        catalog::mark_failed(&c, &foreign.id, "test").unwrap();
    }
    let unknown = catalog::snapshot_urn("vnsnap-am.test", &theirs.urn, "nothing", "33333333-cccc");
    let alice_caller = Caller { chain: alice.chain_der().unwrap() };
    let bob_caller = Caller { chain: bob.chain_der().unwrap() };
    let creds = |xml: &str| {
        Value::Array(vec![Value::structure([
            ("geni_type", Value::str("geni_sfa")),
            ("geni_version", Value::str("3")),
            ("geni_value", Value::str(xml)),
        ])])
    };
    let empty = || Value::structure::<&str>([]);
    let call = |caller: &Caller, method: &'static str, urn: &str, creds: Value| {
        let (am, caller, urn) = (am.clone(), caller.clone(), urn.to_string());
        async move { handle(&am, ApiVersion::V3, &caller, method, vec![Value::str(urn), creds, empty()]).await.unwrap() }
    };
    // The answer with the URN taken out: what it says beyond echoing the question.
    let shape = |v: &Value, urn: &str| (code(v), output(v).replace(urn, "<URN>"));

    // The owner's own snapshot is described: the check lets the right caller through.
    let v = call(&alice_caller, "DescribeSnapshot", &own.urn, creds(&alice_mine)).await;
    assert_eq!(code(&v), 0, "{v:?}");

    for method in ["DescribeSnapshot", "DeleteSnapshot"] {
        // A valid credential for another slice: unknown and foreign are the same answer.
        let a = call(&alice_caller, method, &unknown, creds(&alice_mine)).await;
        let b = call(&alice_caller, method, &foreign.urn, creds(&alice_mine)).await;
        assert_eq!(code(&a), 12, "{method} unknown: {a:?}");
        assert_eq!(shape(&a, &unknown), shape(&b, &foreign.urn), "{method}: {a:?} vs {b:?}");
        // (The snapshot URN the caller sent holds the slice's name; beyond echoing it, the
        // answer must not name the slice.)
        assert!(!shape(&b, &foreign.urn).1.contains("theirs"), "{method} names the slice: {b:?}");
        // A user credential (valid, but for no slice): the same again.
        let a = call(&alice_caller, method, &unknown, creds(&alice_user)).await;
        let b = call(&alice_caller, method, &foreign.urn, creds(&alice_user)).await;
        assert_eq!(shape(&a, &unknown), shape(&b, &foreign.urn), "{method} (user cred): {a:?} vs {b:?}");

        // No valid credential: refused before any lookup, whatever exists.
        for (what, cr) in [
            ("no credential", Value::Array(vec![])),
            ("Bob's credential presented by Alice", creds(&bob_theirs)),
            ("a broken credential", creds("<signed-credential/>")),
        ] {
            let a = call(&alice_caller, method, &unknown, cr.clone()).await;
            let b = call(&alice_caller, method, &foreign.urn, cr.clone()).await;
            let o = call(&alice_caller, method, &own.urn, cr).await;
            assert_ne!(code(&a), 0, "{method}, {what}: {a:?}");
            assert_ne!(code(&a), 12, "{method}, {what}: the lookup ran before authorisation: {a:?}");
            assert_eq!(shape(&a, &unknown), shape(&b, &foreign.urn), "{method}, {what}: {a:?} vs {b:?}");
            assert_eq!(shape(&a, &unknown), shape(&o, &own.urn), "{method}, {what}: {a:?} vs {o:?}");
        }
    }
    // Nothing was deleted by the refused calls; Bob, whose snapshot it is, still sees it.
    assert!(catalog::by_urn(&am.db.conn(), &foreign.urn).unwrap().is_some());
    assert!(catalog::by_urn(&am.db.conn(), &own.urn).unwrap().is_some());
    let v = call(&bob_caller, "DescribeSnapshot", &foreign.urn, creds(&bob_theirs)).await;
    assert_eq!(code(&v), 0, "{v:?}");
}
