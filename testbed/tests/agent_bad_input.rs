//! Issue "Agent and lab", acceptance 4: bad input to a real lab agent gets a clear error
//! with the right HTTP status, and nothing is left behind — no stray QEMU, no domain
//! directory, socket or file in the agent's state dir, no extra switch port, no change
//! to the domain list or the host's free memory.
//!
//! Issue 17 items 3 and 4: ids that would escape the state directory (`.`, `..`, `/`,
//! percent-encoded or not), on every route that takes one, with a committed snapshot
//! present; numbers out of range (a memory size that used to wrap the host's budget),
//! kernels and disk bases that are not images of the host, oversized counts and bodies;
//! and the agent's log never holds a refused input whole.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::*;
use vnsnap_testbed::lab::certs::ClusterCa;
use vnsnap_testbed::lab::{Lab, LabOptions};

/// Everything a failed request must not change.
#[derive(Debug, PartialEq)]
struct Footprint {
    domains: Vec<String>,
    switch_ports: Vec<u32>,
    free_memory_mib: u64,
    files: BTreeSet<PathBuf>,
    qemus: BTreeSet<u32>,
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// Pids of live processes whose command line names `state_dir` (the agent's QEMUs).
fn qemus_of(state_dir: &Path) -> BTreeSet<u32> {
    let needle = state_dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

async fn footprint(c: &AgentClient, state_dir: &Path) -> Footprint {
    Footprint {
        domains: c.domains().await.unwrap().into_iter().map(|d| d.name).collect(),
        switch_ports: c.switch().await.unwrap().ports.iter().map(|p| p.port).collect(),
        free_memory_mib: c.host().await.unwrap().free_memory_mib,
        files: tree(state_dir),
        qemus: qemus_of(state_dir),
    }
}

/// A reqwest client presenting `cert`/`key` (if any) and trusting the lab's cluster CA.
fn raw_client(lab: &Lab, ident: Option<(&Path, &Path)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&lab.ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(std::time::Duration::from_secs(10));
    if let Some((cert, key)) = ident {
        let mut pem = std::fs::read(cert).unwrap();
        pem.push(b'\n');
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// Sends a raw request; returns the status and the decoded error body.
async fn raw(http: &reqwest::Client, method: reqwest::Method, url: &str, body: &str) -> (u16, ApiError) {
    let resp = http
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let err: ApiError = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("error body is not an ApiError ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, err)
}

fn spec_json(lab: &Lab, name: &str) -> serde_json::Value {
    serde_json::to_value(vm_spec(lab, name, 64, &[("52:54:00:00:07:01", 7, "10.77.0.1/24")])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_leaves_nothing_behind() {
    let lab = tokio::task::block_in_place(|| {
        Lab::up(LabOptions { hosts: 1, host_memory_mib: 1024, host_vcpus: 2, ..Default::default() })
    })
    .expect("lab up");
    let state = lab.hosts[0].state_dir();
    let c = lab.client(0).unwrap();
    // A kernel QEMU cannot boot, for later: the agent boots only images of the host, and
    // its own image store is one place they live.
    let garbage = state.join("images/garbage-vmlinuz.qcow2");
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, (0..256 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let base = c.base().to_string();
    // One good domain, so that there is a name to collide with and a port to keep.
    // 128 MiB: enough for the guest to boot, later (a snapshot needs it running).
    c.define(&vm_spec(&lab, "keep", 128, &[("52:54:00:00:07:99", 7, "10.77.0.99/24")])).await.unwrap();
    let before = footprint(&c, &state).await;
    assert_eq!(before.domains, vec!["keep".to_string()]);
    assert_eq!(before.switch_ports.len(), 1);
    let http = raw_client(&lab, Some((&lab.client_cert, &lab.client_key)));
    let post = reqwest::Method::POST;

    // Unknown JSON fields: in a domain spec, nested in its boot section, in an action
    // request and in segment peers.
    let mut v = spec_json(&lab, "unknown-field");
    v["colour"] = "blue".into();
    let (s, e) = raw(&http, post.clone(), &format!("{base}/domains"), &v.to_string()).await;
    assert_eq!((s, e.kind), (400, ErrorKind::BadRequest), "{e:?}");
    assert!(e.message.contains("unknown field") && e.message.contains("colour"), "{e:?}");
    let mut v = spec_json(&lab, "unknown-field");
    v["boot"]["kernal"] = "/x".into();
    let (s, e) = raw(&http, post.clone(), &format!("{base}/domains"), &v.to_string()).await;
    assert_eq!(s, 400, "{e:?}");
    assert!(e.message.contains("kernal"), "{e:?}");
    let (s, e) = raw(&http, post.clone(), &format!("{base}/domains/keep/stop"), r#"{"timeout":1}"#).await;
    assert_eq!(s, 400, "{e:?}");
    let (s, e) = raw(&http, reqwest::Method::PUT, &format!("{base}/segments/7"), r#"{"peers":[],"extra":1}"#).await;
    assert_eq!(s, 400, "{e:?}");
    assert_eq!(footprint(&c, &state).await, before, "after unknown fields");

    // Malformed JSON, a wrong type, a non-numeric query.
    for body in [r#"{"name": "broken", "vcpus": 1,"#, "not json at all", "", r#"{"name":"x","vcpus":"one"}"#] {
        let (s, e) = raw(&http, post.clone(), &format!("{base}/domains"), body).await;
        assert_eq!((s, e.kind), (400, ErrorKind::BadRequest), "{body:?}: {e:?}");
        assert!(e.message.starts_with("Invalid request body"), "{e:?}");
    }
    let (s, _) = raw(&http, reqwest::Method::GET, &format!("{base}/events?after=abc"), "").await;
    assert_eq!(s, 400);
    assert_eq!(footprint(&c, &state).await, before, "after malformed JSON");

    // An unknown domain, for every verb that names one; an unknown action or route.
    let e = c.domain("nope").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e:?}");
    for a in [Action::Start, Action::Stop, Action::Reboot, Action::Pause, Action::Resume] {
        let e = c.action("nope", a, &ActionRequest::default()).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{a:?}: {e:?}");
    }
    assert_eq!(c.destroy("nope").await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    let e = c.guest("nope", &serde_json::json!({"op": "hello"})).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound));
    let (s, _) = raw(&http, post.clone(), &format!("{base}/domains/keep/explode"), "").await;
    assert_eq!(s, 404);
    let (s, _) = raw(&http, reqwest::Method::GET, &format!("{base}/no/such/route"), "").await;
    assert_eq!(s, 404);
    assert_eq!(footprint(&c, &state).await, before, "after unknown domains");

    // A duplicate domain name.
    let e = c.define(&vm_spec(&lab, "keep", 64, &[("52:54:00:00:07:02", 7, "10.77.0.2/24")])).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Conflict), "{e:?}");
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(footprint(&c, &state).await, before, "after a duplicate name");

    // Names that would escape the state dir never become paths.
    for name in ["../escape", "a/b", "UPPER", ""] {
        let mut v = spec_json(&lab, "x");
        v["name"] = name.into();
        let (s, e) = raw(&http, post.clone(), &format!("{base}/domains"), &v.to_string()).await;
        assert_eq!(s, 400, "{name:?}: {e:?}");
    }
    assert_eq!(footprint(&c, &state).await, before, "after bad names");

    // Clients without a valid certificate: none at all, and one from another CA. The
    // agent refuses the TLS handshake and goes on serving good clients.
    let other = tempfile::tempdir().unwrap();
    let other_ca = ClusterCa::create(other.path()).unwrap();
    let rogue = other_ca.issue(other.path(), "rogue", "vnsnap-am", &["vnsnap-am".to_string()]).unwrap();
    for (what, client) in
        [("no certificate", raw_client(&lab, None)), ("other CA", raw_client(&lab, Some((&rogue.cert, &rogue.key))))]
    {
        let r = client.get(format!("{base}/domains")).send().await;
        assert!(r.is_err(), "{what}: expected the TLS handshake to be refused, got {r:?}");
    }
    assert_eq!(footprint(&c, &state).await, before, "after rogue clients");

    // Specs QEMU cannot start. A kernel that does not exist: refused before anything is made.
    let mut spec = vm_spec(&lab, "nokernel", 64, &[("52:54:00:00:07:03", 7, "10.77.0.3/24")]);
    spec.boot = Boot::Kernel { kernel: "/nonexistent/vmlinuz".into(), initrd: None, cmdline: String::new() };
    let e = c.define(&spec).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::BadRequest), "{e:?}");
    assert!(format!("{e:?}").contains("/nonexistent/vmlinuz"), "{e:?}");
    assert_eq!(footprint(&c, &state).await, before, "after a bad kernel path");

    // More RAM than the host has left: 507.
    let e = c.define(&vm_spec(&lab, "huge", 1024, &[("52:54:00:00:07:04", 7, "10.77.0.4/24")])).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Capacity), "{e:?}");
    let (s, _) = raw(&http, post.clone(), &format!("{base}/domains"), &{
        let mut v = spec_json(&lab, "huge");
        v["memory_mib"] = 1_000_000.into();
        v.to_string()
    })
    .await;
    assert_eq!(s, 507);
    assert_eq!(footprint(&c, &state).await, before, "after RAM over capacity");

    // A kernel file that exists but is garbage: the agent defines the domain (overlay,
    // switch port), QEMU itself refuses to start it, and everything is rolled back.
    let mut spec = vm_spec(&lab, "garbage", 64, &[("52:54:00:00:07:05", 7, "10.77.0.5/24")]);
    if let Boot::Kernel { kernel, .. } = &mut spec.boot {
        *kernel = garbage.display().to_string();
    }
    spec.autostart = true;
    let seq = c.events(0, 0).await.unwrap().last().map(|e| e.seq).unwrap_or(0);
    let e = c.define(&spec).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::BadRequest), "{e:?}");
    let msg = match &e {
        vnsnap_proto::client::ClientError::Api(_, a) => a.message.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!msg.trim().is_empty(), "the error must say why QEMU failed: {e:?}");
    eprintln!("garbage kernel refused with: {msg}");
    assert_eq!(c.domain("garbage").await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    // The agent reports what it undid.
    let evs = c.events(seq, 0).await.unwrap();
    assert!(evs.iter().any(|e| e.domain.as_deref() == Some("garbage") && e.kind == EventKind::Destroyed), "{evs:?}");
    assert_eq!(footprint(&c, &state).await, before, "after a kernel QEMU cannot boot");

    // Image captures (POST /images): an unknown domain, a domain that is not running, a
    // disk it does not have, ids that would escape the image store, unknown fields; status
    // and delete of images that do not exist.
    let cap =
        |image: &str, domain: &str, disk: usize| CaptureRequest { image: image.into(), domain: domain.into(), disk };
    assert_eq!(c.image_capture(&cap("img1", "nope", 0)).await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    let e = c.image_capture(&cap("img1", "keep", 0)).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Conflict), "a domain that is not running: {e:?}");
    for bad in ["../x", "UPPER", ""] {
        let e = c.image_capture(&cap(bad, "keep", 0)).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::BadRequest), "{bad:?}: {e:?}");
    }
    let (s, e) = raw(&http, post.clone(), &format!("{base}/images"), r#"{"image":"i","domain":"keep","when":1}"#).await;
    assert_eq!(s, 400, "{e:?}");
    assert_eq!(c.image_status("nope").await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    assert_eq!(c.image_delete("nope").await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    assert_eq!(footprint(&c, &state).await, before, "after bad image captures");

    // Issue 17: the same, with the kept domain running and a committed snapshot on the host.
    c.action("keep", Action::Start, &ActionRequest::default()).await.unwrap();
    wait_ready(&c, &["keep"], std::time::Duration::from_secs(180)).await;
    c.snapshot_prepare(&PrepareRequest { snapshot: "s1".into(), epoch: 1, domains: vec!["keep".into()] })
        .await
        .unwrap();
    c.snapshot_cut("s1", &CutRequest::default()).await.unwrap();
    wait_saved(&c, "s1").await;
    c.snapshot_commit("s1").await.unwrap();
    let before = footprint(&c, &state).await;
    assert!(before.files.contains(Path::new("snapshots/s1/host.json")), "{before:?}");
    agent_ids(&lab, &c, &http, &state, &before).await;
    agent_numbers(&lab, &c, &http, &state, &before).await;
    assert_eq!(c.snapshot_status("s1").await.unwrap().phase, SavePhase::Committed);
    assert!(c.domain("keep").await.unwrap().guest_ready);
    c.snapshot_delete("s1").await.unwrap();

    // The agent still works: the kept domain can be destroyed, and then nothing is left.
    c.destroy("keep").await.unwrap();
    let after = footprint(&c, &state).await;
    assert!(after.domains.is_empty() && after.switch_ports.is_empty(), "{after:?}");
    assert!(!after.files.iter().any(|p| p.starts_with("domains/keep")), "{after:?}");
    drop(lab);
}

/// Sends `method path` exactly as written (no dot-segment removal or decoding, as
/// reqwest's URL parser would do) with `curl --path-as-is`; returns the status and body.
fn raw_path(lab: &Lab, c: &AgentClient, method: &str, path: &str, body: &str) -> (u16, String) {
    let origin = c.base().strip_suffix(API_PREFIX).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--path-as-is", "--max-time", "30", "-X", method, "-H", "content-type: application/json"])
        .arg("--cacert")
        .arg(&lab.ca)
        .arg("--cert")
        .arg(&lab.client_cert)
        .arg("--key")
        .arg(&lab.client_key)
        .args(["--data-binary", body, "-w", "\n%{http_code}"])
        .arg(format!("{origin}{path}"))
        .output()
        .expect("running curl");
    assert!(out.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// Item 3: every route that takes an id refuses ids that are not names with a 400 and an
/// error naming the id, before any handler runs: nothing on disk changes, the committed
/// snapshot survives (`POST /snapshots/./abort` used to delete every committed snapshot,
/// `/snapshots/../abort` the whole state directory).
async fn agent_ids(lab: &Lab, c: &AgentClient, http: &reqwest::Client, state: &Path, before: &Footprint) {
    const ROUTES: [(&str, &str); 16] = [
        ("POST", "/snapshots/{}/abort"),
        ("DELETE", "/snapshots/{}"),
        ("POST", "/snapshots/{}/commit"),
        ("POST", "/snapshots/{}/cut"),
        ("GET", "/snapshots/{}"),
        ("POST", "/restores/{}/abort"),
        ("POST", "/restores/{}/resume"),
        ("DELETE", "/images/{}"),
        ("GET", "/images/{}"),
        ("DELETE", "/domains/{}"),
        ("GET", "/domains/{}"),
        ("GET", "/domains/{}/console"),
        ("POST", "/domains/{}/guest"),
        ("POST", "/domains/{}/stop"),
        ("POST", "/domains/{}/start"),
        ("PUT", "/segments/{}"),
    ];
    let long = "a".repeat(64);
    let bad =
        [".", "..", "%2e", "%2e%2e", "%2E%2E", ".%2e", "%2F", "a%2Fb", "..%2F..", "", "UPPER", "a%00b", "a%0Ab", &long];
    for (method, route) in ROUTES {
        for id in bad {
            let path = format!("{API_PREFIX}{}", route.replace("{}", id));
            let body = if method == "PUT" { r#"{"peers":[]}"# } else { "{}" };
            let (status, reply) = tokio::task::block_in_place(|| raw_path(lab, c, method, &path, body));
            assert_eq!(status, 400, "{method} {path}: {reply}");
            let e: ApiError = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{method} {path}: {e}: {reply}"));
            assert_eq!(e.kind, ErrorKind::BadRequest, "{method} {path}: {e:?}");
        }
        assert_eq!(&footprint(c, state).await, before, "after bad ids on {method} {route}");
    }
    // A slash inside an id splits it into another route: no route, and no handler.
    let (status, reply) = tokio::task::block_in_place(|| raw_path(lab, c, "POST", "/v1/snapshots/s1/../../abort", ""));
    assert_eq!(status, 404, "{reply}");
    let e: ApiError = serde_json::from_str(&reply).unwrap();
    assert!(e.message.starts_with("No route"), "{e:?}");

    // Ids in bodies: the snapshot of a prepare, a restore's ids and domains, an image id,
    // a domain named in a cut's staggers.
    let base = c.base().to_string();
    let post = reqwest::Method::POST;
    let bodies = [
        ("/snapshots/prepare", r#"{"snapshot":"..","epoch":2,"domains":["keep"]}"#, "Snapshot id"),
        ("/snapshots/prepare", r#"{"snapshot":".","epoch":2,"domains":["keep"]}"#, "Snapshot id"),
        ("/snapshots/prepare", r#"{"snapshot":"s2","epoch":2,"domains":["../keep"]}"#, "Domain name"),
        ("/restores/check", r#"{"restore":"..","snapshot":"s1","domains":[]}"#, "Restore id"),
        ("/restores/prepare", r#"{"restore":"r1","snapshot":"..","domains":[]}"#, "Snapshot id"),
        ("/restores/prepare", r#"{"restore":"r1","snapshot":"s1/../..","domains":[]}"#, "Snapshot id"),
        ("/images", r#"{"image":"..","domain":"keep"}"#, "Image id"),
        ("/images", r#"{"image":"i1","domain":".."}"#, "Domain name"),
        ("/snapshots/s1/cut", r#"{"stagger_ms":{"../x":1}}"#, "Domain name"),
    ];
    for (route, body, what) in bodies {
        let (s, e) = raw(http, post.clone(), &format!("{base}{route}"), body).await;
        assert_eq!((s, e.kind), (400, ErrorKind::BadRequest), "{route} {body}: {e:?}");
        assert!(e.message.starts_with(what), "{route} {body}: {e:?}");
    }
    assert_eq!(&footprint(c, state).await, before, "after bad ids in bodies");
}

/// Item 4: numbers out of range, files that are not images of this host, oversized counts
/// and bodies are refused with a 400 (nothing created, the host's free memory as it was);
/// the agent's log lines stay short however large the refused input.
async fn agent_numbers(lab: &Lab, c: &AgentClient, http: &reqwest::Client, state: &Path, before: &Footprint) {
    let base = c.base().to_string();
    let post = reqwest::Method::POST;
    let define = |v: serde_json::Value| {
        let url = format!("{base}/domains");
        async move { raw(http, reqwest::Method::POST, &url, &v.to_string()).await }
    };
    // Memory that would wrap the budget (128 MiB promised already: 2^64-101 + 128 wraps to
    // 27), and the AM's 2^63; vCPUs; a disk size; too many NICs.
    for (field, value) in [
        ("memory_mib", serde_json::json!(u64::MAX)),
        ("memory_mib", serde_json::json!(u64::MAX - 100)),
        ("memory_mib", serde_json::json!(1u64 << 63)),
        ("memory_mib", serde_json::json!(0)),
        ("vcpus", serde_json::json!(u32::MAX)),
        ("vcpus", serde_json::json!(0)),
    ] {
        let mut v = spec_json(lab, "big");
        v[field] = value.clone();
        let (s, e) = define(v).await;
        assert_eq!((s, e.kind), (400, ErrorKind::BadRequest), "{field}={value}: {e:?}");
        assert!(e.message.contains(field), "{e:?}");
    }
    let mut v = spec_json(lab, "big");
    v["disks"][0]["size_mib"] = u64::MAX.into();
    let (s, e) = define(v).await;
    assert_eq!(s, 400, "{e:?}");
    let mut v = spec_json(lab, "big");
    v["nics"] = (0..17).map(|i| serde_json::json!({"mac": format!("52:54:00:00:08:{i:02x}"), "segment": 8})).collect();
    let (s, e) = define(v).await;
    assert_eq!(s, 400, "{e:?}");
    assert_eq!(&footprint(c, state).await, before, "after numbers out of range");

    // Files that are not images of this host: read by the guest, they would hand it the
    // host's secrets. Relative, escaping the image directory with `..`, or plain outside.
    let image_dir = lab.data_disk.parent().unwrap().display().to_string();
    let escape = format!("{image_dir}/../../../../../../../../etc/shadow");
    for (what, path) in [
        ("disk base", "/etc/shadow"),
        ("disk base", escape.as_str()),
        ("disk base", "etc/shadow"),
        ("kernel", "/etc/passwd"),
        ("initrd", "/etc/shadow"),
    ] {
        let mut v = spec_json(lab, "secret");
        match what {
            "disk base" => v["disks"][0]["base"] = path.into(),
            "kernel" => v["boot"]["kernel"] = path.into(),
            _ => v["boot"]["initrd"] = path.into(),
        }
        let (s, e) = define(v).await;
        assert_eq!((s, e.kind), (400, ErrorKind::BadRequest), "{what} {path}: {e:?}");
        assert!(e.message.contains(what) && e.message.contains(path), "{e:?}");
    }
    // Another domain's disk layer is no image either.
    let layer = before.files.iter().find(|p| p.starts_with("layers") && p.extension().is_some_and(|x| x == "qcow2"));
    let mut v = spec_json(lab, "secret");
    v["disks"][0]["base"] = state.join(layer.expect("a layer of keep")).display().to_string().into();
    let (s, e) = define(v).await;
    assert_eq!(s, 400, "{e:?}");
    assert_eq!(&footprint(c, state).await, before, "after files that are not images");

    // Counts: a segment with 500,000 peers (above the body limit), with 257 (above the peer
    // limit); a stop that would wait forever.
    let peers = |n: usize| serde_json::json!({ "peers": vec!["10.0.0.1:4789"; n] }).to_string();
    for n in [500_000, 257] {
        let (s, e) = raw(http, reqwest::Method::PUT, &format!("{base}/segments/8"), &peers(n)).await;
        assert_eq!(s, 400, "{n} peers: {e:?}");
    }
    let (s, e) =
        raw(http, post.clone(), &format!("{base}/domains/keep/stop"), r#"{"timeout_s":18446744073709551615}"#).await;
    assert_eq!(s, 400, "{e:?}");
    // A body above the limit is refused unkept (and read on only to give the client its 400).
    let (s, e) = raw(http, post.clone(), &format!("{base}/domains"), &" ".repeat(20 << 20)).await;
    assert_eq!(s, 400, "{e:?}");
    assert!(e.message.contains("limit"), "{e:?}");
    assert_eq!(&footprint(c, state).await, before, "after oversized counts and bodies");

    // A refused input of 3 MiB is not logged whole, nor echoed back whole.
    let mut v = spec_json(lab, "loud");
    v["disks"][0]["base"] = "/x".repeat(3 << 19).into();
    let (s, e) = define(v).await;
    assert_eq!(s, 400, "{}", e.message.len());
    assert!(e.message.len() < 4096, "the error echoes {} bytes", e.message.len());
    let (s, _) = raw(http, post, &format!("{base}/domains/{}/stop", "x".repeat(60_000)), "").await;
    assert_eq!(s, 400);
    let log = std::fs::read_to_string(lab.hosts[0].dir.join("agent.log")).unwrap();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8192, "the agent logged a line of {longest} bytes");
    assert_eq!(&footprint(c, state).await, before, "after loud inputs");
}
