//! The GENI Portal's path through the AM (issue 8), against a real vnsnap-am, real agents and
//! real QEMU VMs, with credentials signed by the test clearinghouse:
//!
//! * `speaks_for_forgeries_change_nothing`: a tool certificate with a forged speaks-for
//!   credential (signed by another user, naming another tool, expired, or for another user
//!   than `geni_speaking_for`) is refused with the right code on v2 and v3, and nothing
//!   changes (acceptance 2).
//! * `portal_path`: the Portal's calls, as its tool speaking for Alice: v2 CreateSliver of two
//!   VMs, SliverStatus until ready, RenewSliver alap past the credential, POA
//!   `geni_update_users` (v3), CreateImage of one VM while the slice runs (the AM killed and
//!   restarted right after it, so the restarted AM finishes following it), ListImages, a new
//!   slice booting from the image and finding the files written before the cut (and not
//!   those written after), a slice snapshot owned by Alice, DeleteImage, POA `geni_restart`
//!   (v3) of the VM made from the image, DeleteSliver (acceptance 1); and CreateImage refused
//!   with a bad name, on a sliver not ready, or by a user not owning the slice, changing
//!   nothing (acceptance 3).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{geni_code, wait_for, AmClient, AmLabOptions, AmTestbed};
use vnsnap_testbed::ch::{speaks_for, CertSpec, CredSpec, Digest, Identity};

fn empty() -> Value {
    Value::structure::<&str>([])
}

fn code(v: &Value) -> i64 {
    geni_code(v).unwrap_or(-1)
}

fn s(x: &str) -> Value {
    Value::str(x)
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|x| s(x)).collect())
}

/// v3 credential structs: a geni_sfa credential and a geni_abac speaks-for credential.
fn v3_creds(sfa: &str, abac: &str) -> Value {
    Value::Array(vec![
        Value::structure([("geni_type", s("geni_sfa")), ("geni_version", s("3")), ("geni_value", s(sfa))]),
        Value::structure([("geni_type", s("geni_abac")), ("geni_version", s("1")), ("geni_value", s(abac))]),
    ])
}

fn speaking_for(user: &str, extra: Vec<(&str, Value)>) -> Value {
    let mut v = vec![("geni_speaking_for", s(user))];
    v.extend(extra);
    Value::structure(v)
}

fn rspec_version() -> Value {
    Value::structure([("type", s("GENI")), ("version", s("3"))])
}

fn whole_seconds(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const TWO_VMS: &str = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="pa" exclusive="false"><sliver_type name="emulab-xen"/></node>
  <node client_id="pb" exclusive="false"><sliver_type name="vnsnap-vm"/></node></rspec>"#;

#[test]
fn speaks_for_forgeries_change_nothing() {
    let tb = AmTestbed::up(1, AmLabOptions { vm_memory_mib: 64, ..Default::default() }).expect("testbed up");
    let log = || tb.am.log_tail();
    let portal = tb.ch.tool("portal", &CertSpec::default()).unwrap();
    let other_tool = tb.ch.tool("othertool", &CertSpec::default()).unwrap();
    let bob = tb.ch.user("bob", &CertSpec::default()).unwrap();
    let slice = tb.slice("sfslice").unwrap();
    let bob_slice_cred = {
        let sl = tb.ch.find("slice", "sfslice").unwrap();
        tb.ch.slice_credential(&bob, &sl, &CredSpec::default()).unwrap()
    };
    let fresh = tb.slice("sffresh").unwrap();
    let day = Utc::now() + chrono::Duration::days(1);
    let good = speaks_for(&tb.alice, &portal, day, Digest::Sha256).unwrap();
    let v3 = AmClient::new(&tb.am.url_v3(), &portal).unwrap();
    let v2 = AmClient::new(&tb.am.url_v2(), &portal).unwrap();

    // State to protect: an allocation of Alice's, made by the Portal speaking for her.
    let r = v3
        .call(
            "Allocate",
            &[s(&slice.urn), v3_creds(&slice.cred_xml, &good), s(TWO_VMS), speaking_for(&tb.alice.urn, vec![])],
        )
        .unwrap();
    assert_eq!(code(&r), 0, "genuine speaks-for Allocate: {r:?}\n{}", log());
    let status = |c: &AmClient| {
        let r = c
            .call(
                "Status",
                &[strings(&[&slice.urn]), v3_creds(&slice.cred_xml, &good), speaking_for(&tb.alice.urn, vec![])],
            )
            .unwrap();
        assert_eq!(code(&r), 0, "{r:?}");
        let slivers = r.get("value").unwrap().get("geni_slivers").unwrap().as_array().unwrap().to_vec();
        slivers
            .iter()
            .map(|x| {
                ["geni_sliver_urn", "geni_allocation_status", "geni_expires"]
                    .iter()
                    .map(|k| x.get(k).and_then(Value::as_str).unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let before = status(&v3);
    assert_eq!(before.len(), 2);
    // CreateImage of a sliver that is not ready (allocated only): FORBIDDEN, no image.
    let r = v2
        .call(
            "CreateImage",
            &[
                s(&slice.urn),
                s("early"),
                s(&before[0][0]),
                strings(&[&slice.cred_xml, &good]),
                speaking_for(&tb.alice.urn, vec![]),
            ],
        )
        .unwrap();
    assert_eq!(code(&r), 3, "CreateImage of a sliver not ready: {r:?}");
    assert!(r.get("output").and_then(Value::as_str).unwrap().contains("not ready"), "{r:?}");
    let user_cred = std::fs::read_to_string(&tb.user_cred).unwrap();
    let r = v3
        .call("ListImages", &[s(&tb.alice.urn), v3_creds(&user_cred, &good), speaking_for(&tb.alice.urn, vec![])])
        .unwrap();
    assert_eq!((code(&r), r.get("value").and_then(Value::as_array).map(<[Value]>::len)), (0, Some(0)), "{r:?}");

    // The forgeries: (name, speaks-for credential, geni_speaking_for, slice credential, code).
    let forgeries = [
        (
            "signed by another user",
            speaks_for(&bob, &portal, day, Digest::Sha256).unwrap(),
            &tb.alice,
            &slice.cred_xml,
            3,
        ),
        (
            "naming another tool",
            speaks_for(&tb.alice, &other_tool, day, Digest::Sha256).unwrap(),
            &tb.alice,
            &slice.cred_xml,
            3,
        ),
        (
            "expired",
            speaks_for(&tb.alice, &portal, Utc::now() - chrono::Duration::minutes(5), Digest::Sha1).unwrap(),
            &tb.alice,
            &slice.cred_xml,
            15,
        ),
        ("for another user than geni_speaking_for", good.clone(), &bob, &bob_slice_cred, 3),
    ];
    let t = whole_seconds(Utc::now() + chrono::Duration::days(2));
    for (what, sf, user, slice_cred, want) in &forgeries {
        let u: &Identity = user;
        let opts = || speaking_for(&u.urn, vec![]);
        let creds3 = v3_creds(slice_cred, sf);
        let creds2 = strings(&[slice_cred, sf]);
        let calls: Vec<(&AmClient, &str, Vec<Value>)> = vec![
            (&v3, "Delete", vec![strings(&[&slice.urn]), creds3.clone(), opts()]),
            (&v3, "Renew", vec![strings(&[&slice.urn]), creds3.clone(), s(&t), opts()]),
            (&v3, "Status", vec![strings(&[&slice.urn]), creds3.clone(), opts()]),
            (&v2, "DeleteSliver", vec![s(&slice.urn), creds2.clone(), opts()]),
            (&v2, "RenewSliver", vec![s(&slice.urn), creds2.clone(), s(&t), opts()]),
            (&v2, "SliverStatus", vec![s(&slice.urn), creds2.clone(), opts()]),
            (
                &v2,
                "CreateSliver",
                vec![s(&fresh.urn), strings(&[&fresh.cred_xml, sf]), s(TWO_VMS), Value::Array(vec![]), opts()],
            ),
            (&v2, "CreateImage", vec![s(&slice.urn), s("forged"), s(&before[0][0]), creds2.clone(), opts()]),
            (&v3, "ListImages", vec![s(&u.urn), creds3.clone(), opts()]),
        ];
        for (c, method, params) in calls {
            let r = c.call(method, &params).unwrap();
            assert_eq!(code(&r), *want, "{method} with a speaks-for credential {what}: {r:?}");
            let out = r.get("output").and_then(Value::as_str).unwrap_or_default();
            assert!(!out.is_empty(), "{method} ({what}) says why");
        }
    }
    // Nothing changed: same slivers, same expiry; the fresh slice has nothing here.
    assert_eq!(status(&v3), before, "\n{}", log());
    let r = v2
        .call("SliverStatus", &[s(&fresh.urn), strings(&[&fresh.cred_xml, &good]), speaking_for(&tb.alice.urn, vec![])])
        .unwrap();
    assert_eq!(code(&r), 12, "no slivers were created for the fresh slice: {r:?}");
    // The tool without speaks-for is not Alice: her credential is refused.
    let r = v2.call("SliverStatus", &[s(&slice.urn), strings(&[&slice.cred_xml]), empty()]).unwrap();
    assert_eq!(code(&r), 3, "{r:?}");
    let r = v3
        .call(
            "Delete",
            &[strings(&[&slice.urn]), v3_creds(&slice.cred_xml, &good), speaking_for(&tb.alice.urn, vec![])],
        )
        .unwrap();
    assert_eq!(code(&r), 0, "{r:?}");
}

/// The guest of the domain whose hostname is `client_id`, through its host's agent.
struct Guest {
    rt: tokio::runtime::Runtime,
    client: vnsnap_proto::client::AgentClient,
    domain: String,
}

impl Guest {
    fn find(tb: &AmTestbed, client_id: &str) -> Guest {
        let rt = tokio::runtime::Runtime::new().unwrap();
        for i in 0..tb.lab.hosts.len() {
            let client = tb.lab.client(i).unwrap();
            let doms = rt.block_on(client.domains()).unwrap();
            if let Some(d) = doms.iter().find(|d| d.spec.hostname.as_deref() == Some(client_id)) {
                let domain = d.name.clone();
                return Guest { rt, client, domain };
            }
        }
        panic!("no domain for {client_id}");
    }

    fn call(&self, req: serde_json::Value) -> serde_json::Value {
        self.rt.block_on(self.client.guest(&self.domain, &req)).expect("guest call")
    }

    /// Runs a shell command in the guest; returns (exit status, stdout).
    fn sh(&self, cmd: &str) -> (i64, String) {
        let r = self.call(json!({"op": "exec", "argv": ["sh", "-c", cmd], "timeout_ms": 20000}));
        assert_eq!(r["ok"], true, "{cmd}: {r}");
        (r["status"].as_i64().unwrap_or(-1), r["stdout"].as_str().unwrap_or_default().to_string())
    }
}

/// Sliver URN and v2 status per client_id from a SliverStatus reply.
fn resources(r: &Value) -> Vec<(String, String, String)> {
    r.get("value")
        .and_then(|v| v.get("geni_resources"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    let f = |k: &str| x.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    (f("geni_client_id"), f("geni_urn"), f("geni_status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn portal_path() {
    let mut tb = AmTestbed::up(2, AmLabOptions { vm_memory_mib: 128, ..Default::default() }).expect("testbed up");
    let portal = tb.ch.tool("portal", &CertSpec::default()).unwrap();
    let bob = tb.ch.user("bob", &CertSpec::default()).unwrap();
    let alice = tb.alice.clone();
    let alice = &alice;
    // The slice credential expires in 3 days (whole seconds): RenewSliver alap stops there.
    let cred_expires = Utc::now() + chrono::Duration::days(3);
    let cred_expires = DateTime::parse_from_rfc3339(&whole_seconds(cred_expires)).unwrap().with_timezone(&Utc);
    let sl = tb.ch.slice(None, "portal1", &CertSpec::default()).unwrap();
    let slice_cred = tb.ch.slice_credential(alice, &sl, &CredSpec::default().expires(cred_expires)).unwrap();
    let slice = sl.urn.clone();
    let sf = speaks_for(alice, &portal, Utc::now() + chrono::Duration::days(30), Digest::Sha256).unwrap();
    let v2 = AmClient::new(&tb.am.url_v2(), &portal).unwrap();
    let v3 = AmClient::new(&tb.am.url_v3(), &portal).unwrap();
    let c2 = || strings(&[&slice_cred, &sf]);
    let c3 = || v3_creds(&slice_cred, &sf);
    let me = |extra: Vec<(&str, Value)>| speaking_for(&alice.urn, extra);
    let user_cred = std::fs::read_to_string(&tb.user_cred).unwrap();
    let list_images = || {
        let r = v2.call("ListImages", &[s(&alice.urn), strings(&[&user_cred, &sf]), me(vec![])]).unwrap();
        assert_eq!(code(&r), 0, "ListImages: {r:?}");
        r.get("value").and_then(Value::as_array).unwrap().to_vec()
    };
    let key1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1portaltest alice@portal";
    let key2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey2portaltest alice@laptop";
    let users = |keys: &[&str]| Value::Array(vec![Value::structure([("urn", s(&alice.urn)), ("keys", strings(keys))])]);

    // v2 CreateSliver, as the Portal's omni sends it (users as the fourth argument).
    let r = v2.call("CreateSliver", &[s(&slice), c2(), s(TWO_VMS), users(&[key1]), me(vec![])]).unwrap();
    assert_eq!(code(&r), 0, "CreateSliver: {r:?}\n{}", tb.am.log_tail());
    assert!(r.get("value").and_then(Value::as_str).unwrap().contains(key1), "keys in the manifest");
    let status = || v2.call("SliverStatus", &[s(&slice), c2(), me(vec![])]).unwrap();
    let res = resources(&status());
    let pa = res.iter().find(|x| x.0 == "pa").expect("pa in SliverStatus").1.clone();

    // SliverStatus until ready.
    let ready = wait_for(Duration::from_secs(240), Duration::from_millis(500), || {
        let r = status();
        (code(&r) == 0 && r.get("value").unwrap().get("geni_status").and_then(Value::as_str) == Some("ready"))
            .then_some(r)
    });
    let ready = ready.unwrap_or_else(|| panic!("slice not ready: {:?}\n{}", status(), tb.am.log_tail()));
    assert_eq!(resources(&ready).len(), 2);

    // RenewSliver with alap beyond the credential: granted up to the credential's expiry.
    let far = whole_seconds(Utc::now() + chrono::Duration::days(20));
    let r =
        v2.call("RenewSliver", &[s(&slice), c2(), s(&far), me(vec![("geni_extend_alap", Value::Bool(true))])]).unwrap();
    assert_eq!(code(&r), 0, "RenewSliver alap: {r:?}");
    assert_eq!(r.get("value"), Some(&Value::Bool(true)));
    let r = v2.call("RenewSliver", &[s(&slice), c2(), s(&far), me(vec![])]).unwrap();
    assert_eq!(code(&r), 19, "without alap, past the credential: OUTOFRANGE: {r:?}");
    let expires = status().get("value").unwrap().get("geni_expires").and_then(Value::as_str).unwrap().to_string();
    assert_eq!(expires, whole_seconds(cred_expires), "alap grants the credential's expiry");

    // POA geni_update_users over v3: a second key shows in the manifest.
    let r = v3
        .call(
            "PerformOperationalAction",
            &[strings(&[&slice]), c3(), s("geni_update_users"), me(vec![("geni_users", users(&[key1, key2]))])],
        )
        .unwrap();
    assert_eq!(code(&r), 0, "geni_update_users: {r:?}\n{}", tb.am.log_tail());
    let r = v2
        .call(
            "ListResources",
            &[c2(), me(vec![("geni_slice_urn", s(&slice)), ("geni_rspec_version", rspec_version())])],
        )
        .unwrap();
    assert_eq!(code(&r), 0, "ListResources geni_slice_urn: {r:?}");
    let manifest = r.get("value").and_then(Value::as_str).unwrap();
    assert!(manifest.contains(key1) && manifest.contains(key2), "both keys in the manifest: {manifest}");

    // Files on pa's data disk: one written (and synced) before the image, one after.
    let g = Guest::find(&tb, "pa");
    let boot_id = g.call(json!({"op": "hello"}))["boot_id"].clone();
    assert_eq!(g.sh("echo before-image-7f3a > /data/portal.txt && sync").0, 0);

    // Acceptance 3 (with the not-ready case in the other test): a bad name, and a user who does not own the slice.
    for bad in ["bad name", "bad-name", ""] {
        let r = v2.call("CreateImage", &[s(&slice), s(bad), s(&pa), c2(), me(vec![])]).unwrap();
        assert_eq!(code(&r), 1, "bad image name {bad:?}: BADARGS: {r:?}");
    }
    let bob_c = AmClient::new(&tb.am.url_v2(), &bob).unwrap();
    let bob_own = {
        let bs = tb.ch.slice(None, "bobslice", &CertSpec::default()).unwrap();
        tb.ch.slice_credential(&bob, &bs, &CredSpec::default()).unwrap()
    };
    for creds in [strings(&[&slice_cred]), strings(&[&bob_own])] {
        let r = bob_c.call("CreateImage", &[s(&slice), s("stolen"), s(&pa), creds, empty()]).unwrap();
        assert_eq!(code(&r), 3, "bob images alice's VM: FORBIDDEN: {r:?}");
    }
    assert!(list_images().is_empty(), "refused CreateImage calls made no image");
    assert!(resources(&status()).iter().all(|x| x.2 == "ready"), "and left the slivers alone");

    // CreateImage: [image_urn, image_url] at once; the VM keeps running.
    let r = v2
        .call("CreateImage", &[s(&slice), s("portalimg"), s(&pa), c2(), me(vec![("global", Value::Bool(true))])])
        .unwrap();
    assert_eq!(code(&r), 0, "CreateImage: {r:?}\n{}", tb.am.log_tail());
    let v = r.get("value").and_then(Value::as_array).unwrap().to_vec();
    let image_urn = v[0].as_str().unwrap().to_string();
    assert_eq!(image_urn, "urn:publicid:IDN+vnsnap-am.test+image+gcf:portalimg");
    assert!(v[1].as_str().unwrap().starts_with("https://"), "{v:?}");
    assert_eq!(g.sh("echo after-image > /data/after.txt && sync").0, 0, "the guest runs during the capture");
    let st = v3.call("Status", &[strings(&[&pa]), c3(), me(vec![])]).unwrap();
    let op = st.get("value").unwrap().get("geni_slivers").unwrap().as_array().unwrap()[0]
        .get("geni_operational_status")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    assert!(op == "vnsnap_imaging" || op == "geni_ready", "{op}");
    // The AM dies right after CreateImage: restarted, it follows the capture to its end and
    // frees the slice.
    tb.am.kill();
    tb.am.spawn().expect("AM restarts");
    // (The clients' pooled connections died with the old process; one call each drops them.)
    let _ = (v2.call("GetVersion", &[]), v3.call("GetVersion", &[]));
    let img = wait_for(Duration::from_secs(120), Duration::from_millis(300), || {
        list_images().into_iter().find(|i| {
            i.get("urn").and_then(Value::as_str) == Some(image_urn.as_str())
                && i.get("vnsnap_state").and_then(Value::as_str) != Some("pending")
        })
    })
    .unwrap_or_else(|| panic!("image not finished\n{}", tb.am.log_tail()));
    assert_eq!(img.get("vnsnap_state").and_then(Value::as_str), Some("ready"), "{img:?}\n{}", tb.am.log_tail());
    let pause_us = match img.get("vnsnap_pause_us") {
        Some(Value::Int(p)) => *p,
        other => panic!("{other:?}"),
    };
    assert!(pause_us < 5_000_000, "the VM paused only for its cut: {pause_us} us");
    assert_eq!(g.call(json!({"op": "hello"}))["boot_id"], boot_id, "the VM was never restarted");
    let r = status();
    assert!(resources(&r).iter().all(|x| x.2 == "ready"), "imaging over, slice ready: {r:?}");
    // The image is advertised.
    let ad = v2
        .call("ListResources", &[strings(&[&user_cred, &sf]), me(vec![("geni_rspec_version", rspec_version())])])
        .unwrap();
    assert!(ad.get("value").and_then(Value::as_str).unwrap().contains(&image_urn), "image in the advertisement");

    // A new slice boots from the image and finds the file written before it was taken.
    let sl2 = tb.ch.slice(None, "portal2", &CertSpec::default()).unwrap();
    let cred2 = tb.ch.slice_credential(alice, &sl2, &CredSpec::default()).unwrap();
    let clone_rspec = format!(
        r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="clone" exclusive="false"><sliver_type name="emulab-xen"><disk_image name="{image_urn}"/></sliver_type></node></rspec>"#
    );
    let c2b = || strings(&[&cred2, &sf]);
    let r = v2.call("CreateSliver", &[s(&sl2.urn), c2b(), s(&clone_rspec), users(&[key1]), me(vec![])]).unwrap();
    assert_eq!(code(&r), 0, "CreateSliver from the image: {r:?}\n{}", tb.am.log_tail());
    let ok = wait_for(Duration::from_secs(240), Duration::from_millis(500), || {
        let r = v2.call("SliverStatus", &[s(&sl2.urn), c2b(), me(vec![])]).unwrap();
        (r.get("value").and_then(|v| v.get("geni_status")).and_then(Value::as_str) == Some("ready")).then_some(())
    });
    assert!(ok.is_some(), "clone not ready\n{}", tb.am.log_tail());
    let clone = Guest::find(&tb, "clone");
    assert_eq!(clone.sh("cat /data/portal.txt"), (0, "before-image-7f3a\n".to_string()));
    assert_ne!(clone.sh("cat /data/after.txt").0, 0, "the image holds the disk as it was at the cut");

    // A slice snapshot taken through the Portal's tool belongs to Alice.
    let c3b = || v3_creds(&cred2, &sf);
    let r = v3
        .call(
            "PerformOperationalAction",
            &[strings(&[&sl2.urn]), c3b(), s("vnsnap_snapshot"), me(vec![("vnsnap_snapshot_name", s("viaportal"))])],
        )
        .unwrap();
    assert_eq!(code(&r), 0, "vnsnap_snapshot: {r:?}\n{}", tb.am.log_tail());
    let snap = wait_for(Duration::from_secs(120), Duration::from_millis(300), || {
        let r = v2.call("ListSnapshots", &[s(&sl2.urn), c2b(), me(vec![])]).unwrap();
        let first = r.get("value").and_then(Value::as_array).and_then(|a| a.first().cloned())?;
        (first.get("vnsnap_state").and_then(Value::as_str) != Some("pending")).then_some(first)
    })
    .unwrap_or_else(|| panic!("snapshot not finished\n{}", tb.am.log_tail()));
    assert_eq!(snap.get("vnsnap_state").and_then(Value::as_str), Some("complete"), "{snap:?}\n{}", tb.am.log_tail());
    assert_eq!(snap.get("vnsnap_owner").and_then(Value::as_str), Some(alice.urn.as_str()), "{snap:?}");

    // DeleteImage: gone from ListImages; again → SEARCHFAILED. Bob may not delete it.
    let bob_user = tb.ch.user_credential(&bob, &CredSpec::user_default()).unwrap();
    let r = bob_c.call("DeleteImage", &[s(&image_urn), strings(&[&bob_user]), empty()]).unwrap();
    assert_eq!(code(&r), 3, "{r:?}");
    let r = v2.call("DeleteImage", &[s(&image_urn), strings(&[&user_cred, &sf]), me(vec![])]).unwrap();
    assert_eq!(code(&r), 0, "DeleteImage: {r:?}");
    assert_eq!(r.get("value"), Some(&Value::Bool(true)));
    assert!(list_images().is_empty());
    let r = v2.call("DeleteImage", &[s(&image_urn), strings(&[&user_cred, &sf]), me(vec![])]).unwrap();
    assert_eq!(code(&r), 12, "{r:?}");
    let sl3 = tb.ch.slice(None, "portal3", &CertSpec::default()).unwrap();
    let c2c = || strings(&[&tb.ch.slice_credential(alice, &sl3, &CredSpec::default()).unwrap(), &sf]);
    let r = v2.call("CreateSliver", &[s(&sl3.urn), c2c(), s(&clone_rspec), users(&[key1]), me(vec![])]).unwrap();
    assert_eq!(code(&r), 1, "a deleted image boots nothing new: {r:?}");
    assert_eq!(code(&v2.call("SliverStatus", &[s(&sl3.urn), c2c(), me(vec![])]).unwrap()), 12);

    // The Portal's Restart (POA geni_restart over v3): the VM made from the deleted image
    // still boots from it (the file stays while a VM uses it).
    let clone_boot = clone.call(json!({"op": "hello"}))["boot_id"].clone();
    let r = v3.call("PerformOperationalAction", &[strings(&[&sl2.urn]), c3b(), s("geni_restart"), me(vec![])]).unwrap();
    assert_eq!(code(&r), 0, "geni_restart: {r:?}\n{}", tb.am.log_tail());
    let ok = wait_for(Duration::from_secs(240), Duration::from_millis(500), || {
        let r = v2.call("SliverStatus", &[s(&sl2.urn), c2b(), me(vec![])]).unwrap();
        (r.get("value").and_then(|v| v.get("geni_status")).and_then(Value::as_str) == Some("ready")).then_some(())
    });
    assert!(ok.is_some(), "clone not ready after restart\n{}", tb.am.log_tail());
    assert_ne!(clone.call(json!({"op": "hello"}))["boot_id"], clone_boot, "it rebooted");
    assert_eq!(clone.sh("cat /data/portal.txt"), (0, "before-image-7f3a\n".to_string()));

    // DeleteSliver of both slices.
    for (sl, c) in [(&slice, c2()), (&sl2.urn, c2b())] {
        let r = v2.call("DeleteSliver", &[s(sl), c.clone(), me(vec![])]).unwrap();
        assert_eq!(code(&r), 0, "DeleteSliver: {r:?}");
        assert_eq!(code(&v2.call("SliverStatus", &[s(sl), c, me(vec![])]).unwrap()), 12);
    }
}
