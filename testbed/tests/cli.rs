//! The `vnsnap` CLI: argument, omni_config and credential parsing and error lines (no
//! network), and one system test driving the built binary against a running AM with a 1-VM
//! slice (snapshot, list, describe, restore, delete; bad arguments; an unknown snapshot).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::time::Duration;

use vnsnap_am::cli::{self, error_line, parse_args, parse_credential, CliError, OmniConfig, Settings};
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, rspec_opts, wait_for, AmLabOptions, AmTestbed};

const SLICE: &str = "urn:publicid:IDN+ch.test+slice+s1";
const SNAP: &str = "urn:publicid:IDN+am.test+snapshot+s1-ck1-0f8c2a4e";

fn usage(args: &[&str]) -> String {
    let mut a = vec!["vnsnap"];
    a.extend(args);
    match parse_args(a) {
        Err(CliError::Usage(m)) => m,
        other => panic!("{args:?}: expected a usage error, got {other:?}"),
    }
}

#[test]
fn arguments() {
    let c = parse_args(["vnsnap", "--am", "https://h/am/3.0", "snapshot", SLICE, "--name", "ck1", "--json"]).unwrap();
    assert!(c.json);
    assert_eq!(c.am.as_deref(), Some("https://h/am/3.0"));
    assert_eq!(c.command, cli::Command::Snapshot { slice_urn: SLICE.into(), name: "ck1".into() });
    let c = parse_args(["vnsnap", "restore", SLICE, SNAP, "--slicecredfile", "x.cred", "--cred", "u.cred"]).unwrap();
    assert_eq!(c.cred, vec![PathBuf::from("x.cred"), PathBuf::from("u.cred")]);
    for (args, want) in [
        (vec![], "no command"),
        (vec!["snapshot", SLICE], "--name"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["--bogus", "status", SLICE], "--bogus"),
        (vec!["status", "myslice"], "not a slice URN"),
        (vec!["restore", SLICE, SLICE], "not a snapshot URN"),
        (vec!["snapshot-info", SLICE], "not a snapshot URN"),
        (vec!["snapshot", SLICE, "--name", "a b"], "bad snapshot name"),
        (vec!["snapshot", SLICE, "--name", &"x".repeat(65)], "bad snapshot name"),
        (vec!["--timeout", "soon", "status", SLICE], "soon"),
    ] {
        let m = usage(&args);
        assert!(m.contains(want), "{args:?}: {m:?} lacks {want:?}");
        assert!(!m.contains('\n'), "{args:?}: {m:?}");
        let line = error_line(&CliError::Usage(m));
        assert!(line.starts_with("vnsnap: ") && !line.contains('\n'), "{line}");
    }
    assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    assert!(matches!(parse_args(["vnsnap", "--help"]), Err(CliError::Help(_))));
}

#[test]
fn error_lines() {
    let e = CliError::Am { method: "DescribeSnapshot".into(), code: 12, output: "No such snapshot:\n  x\n".into() };
    assert_eq!(error_line(&e), "vnsnap: DescribeSnapshot: No such snapshot:; x (geni_code 12 SEARCHFAILED)");
    assert_eq!(e.exit_code(), 1);
    let e = CliError::Am { method: "PerformOperationalAction".into(), code: 14, output: String::new() };
    assert_eq!(error_line(&e), "vnsnap: PerformOperationalAction: failed (geni_code 14 BUSY)");
    let e = CliError::Am { method: "X".into(), code: 17, output: "exists".into() };
    assert!(error_line(&e).ends_with("(geni_code 17 ALREADYEXISTS)"));
    let long = CliError::Failed("y".repeat(5000));
    assert!(error_line(&long).len() < 700);
    assert_eq!(cli::geni_code_name(99), "UNKNOWN");
    assert_eq!(cli::output::progress_percent("saving 63% (482 of 768 MiB)"), Some(63));
    assert_eq!(cli::output::progress_percent("cutting"), None);
    let v =
        Value::structure([("code", Value::structure([("geni_code", Value::Int(13))])), ("output", Value::str("no"))]);
    assert_eq!(
        cli::output::geni_value("Status", v),
        Err(CliError::Am { method: "Status".into(), code: 13, output: "no".into() })
    );
}

const OMNI: &str = "# omni configuration
[omni]
default_cf = portal
users = alice

[portal]
type = pgch
authority=ch.test
cert = ~/.gcf/alice-cert.pem
key: $VNSNAP_TEST_KEYDIR/alice-key.pem

[other]
type = gcf
cert = /o/cert.pem

[aggregate_nicknames]
lab=urn:publicid:IDN+am.test+authority+am,https://127.0.0.1:12369/am/3.0
";

#[test]
fn omni_config() {
    std::env::set_var("VNSNAP_TEST_KEYDIR", "/keys");
    let home = std::env::var("HOME").unwrap();
    let o = OmniConfig::parse(OMNI).unwrap();
    assert_eq!(o.get("omni", "DEFAULT_CF"), Some("portal"));
    let (c, k) = o.cert_key(None).unwrap();
    assert_eq!(c, Path::new(&home).join(".gcf/alice-cert.pem"));
    assert_eq!(k, Some(PathBuf::from("/keys/alice-key.pem")));
    assert_eq!(o.cert_key(Some("other")).unwrap(), (PathBuf::from("/o/cert.pem"), None));
    assert!(o.cert_key(Some("nope")).unwrap_err().contains("[nope]"));
    assert_eq!(o.aggregate_url("lab").as_deref(), Some("https://127.0.0.1:12369/am/3.0"));
    assert!(OmniConfig::parse("cert = x").is_err());
    assert!(OmniConfig::parse("[omni]\njunk line").unwrap_err().contains("line 2"));
    assert!(OmniConfig::parse("[omni]\nusers = a").unwrap().cert_key(None).unwrap_err().contains("default_cf"));

    // Resolution: omni_config for the identity, nickname for the AM, credential files.
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("omni_config");
    std::fs::write(&cfg, OMNI).unwrap();
    let xml = d.path().join("s.cred");
    std::fs::write(&xml, "<?xml version=\"1.0\"?>\n<signed-credential/>\n").unwrap();
    let js = d.path().join("s.json");
    std::fs::write(&js, r#"{"geni_type": "geni_sfa", "geni_version": 3, "geni_value": "<signed-credential/>"}"#)
        .unwrap();
    let p = |s: &Path| s.to_str().unwrap().to_string();
    let args = [
        "vnsnap",
        "-a",
        "lab",
        "--omni-config",
        &p(&cfg),
        "--cred",
        &p(&xml),
        "--slicecredfile",
        &p(&js),
        "status",
        SLICE,
    ];
    let s = Settings::resolve(&parse_args(args).unwrap(), None).unwrap();
    assert_eq!(s.am_url, "https://127.0.0.1:12369/am/3.0");
    assert_eq!(s.key, Some(PathBuf::from("/keys/alice-key.pem")));
    assert_eq!(s.creds.len(), 2);
    assert_eq!(s.creds[1].get("geni_version"), Some(&Value::str("3")));
    // Explicit --cert/--key win; the default omni_config is not read then.
    let args = [
        "vnsnap",
        "--am",
        "https://x/am/3.0",
        "--cert",
        "/c.pem",
        "--key",
        "/k.pem",
        "--cred",
        &p(&xml),
        "status",
        SLICE,
    ];
    let s = Settings::resolve(&parse_args(args).unwrap(), Some(PathBuf::from("/nonexistent"))).unwrap();
    assert_eq!((s.cert, s.key), (PathBuf::from("/c.pem"), Some(PathBuf::from("/k.pem"))));
    // Missing pieces: one usage line each.
    let bad = |args: &[&str], want: &str| {
        let mut a = vec!["vnsnap"];
        a.extend(args);
        match Settings::resolve(&parse_args(a).unwrap(), None) {
            Err(CliError::Usage(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("{args:?}: {other:?}"),
        }
    };
    bad(&["--am", "https://x", "--cred", &p(&xml), "status", SLICE], "no certificate");
    bad(&["--cert", "/c", "--cred", &p(&xml), "status", SLICE], "no AM");
    bad(&["--am", "https://x", "--cert", "/c", "status", SLICE], "no credential");
    bad(&["--am", "nick", "--omni-config", &p(&cfg), "--cred", &p(&xml), "status", SLICE], "nickname");
    bad(
        &["--am", "https://x", "--cert", "/c", "--cred", "/nonexistent.cred", "status", SLICE],
        "cannot read credential",
    );
    bad(
        &["--am", "https://x", "--omni-config", "/nonexistent/omni_config", "--cred", &p(&xml), "status", SLICE],
        "cannot read",
    );
}

#[test]
fn credentials() {
    let v = parse_credential("  <signed-credential>x</signed-credential>\n").unwrap();
    assert_eq!(v, vec![cred("<signed-credential>x</signed-credential>")]);
    let v = parse_credential(r#"[{"geni_type":"geni_abac","geni_version":"1","geni_value":"a"},{"geni_value":"b"}]"#)
        .unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].get("geni_type"), Some(&Value::str("geni_abac")));
    assert_eq!(v[1].get("geni_type"), Some(&Value::str("geni_sfa")));
    assert!(parse_credential("hello").is_err());
    assert!(parse_credential("{\"x\": 1}").is_err());
}

/// The `vnsnap` binary: `$VNSNAP_CLI_BIN`, else next to the test executable (as
/// `vnsnap_testbed::lab::bin` finds binaries), else built once with cargo.
fn vnsnap_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VNSNAP_CLI_BIN") {
        return PathBuf::from(p);
    }
    let p = vnsnap_testbed::lab::bin("vnsnap");
    if p.is_file() {
        return p;
    }
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let _ = Command::new(cargo)
            .args(["build", "-q", "-p", "vnsnap-am", "--bins"])
            .current_dir(vnsnap_testbed::image::repo_root())
            .status();
    });
    let p = vnsnap_testbed::lab::bin("vnsnap");
    assert!(p.is_file(), "{} missing (cargo build -p vnsnap-am --bins)", p.display());
    p
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(vnsnap_bin()).args(args).env("HOME", "/nonexistent").output().unwrap();
    eprintln!(
        "$ vnsnap {}\n-> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts a failure with exit `code` and exactly one stderr line containing `want`.
fn fails(out: &Output, code: i32, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("vnsnap: ") && err.contains(want), "{err:?} lacks {want:?}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn binary_bad_arguments() {
    fails(&run(&[]), 2, "no command");
    fails(&run(&["snapshot", SLICE]), 2, "--name");
    fails(&run(&["status", "notaurn"]), 2, "not a slice URN");
    fails(&run(&["--cert", "/c", "--cred", "/x", "status", SLICE]), 2, "no AM");
    let help = run(&["--help"]);
    assert!(stdout(&help).contains("snapshot-info"));
}

const ONE_VM: &str = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="solo" exclusive="false"><sliver_type name="vnsnap-vm"/></node></rspec>"#;

fn ok(v: Value) -> Value {
    assert_eq!(geni_code(&v), Some(0), "{v:?}");
    v.get("value").cloned().unwrap()
}

#[test]
fn system_snapshot_restore_delete() {
    let tb = AmTestbed::up(1, AmLabOptions::default()).unwrap();
    let s = tb.slice("clislice").unwrap();
    let c = tb.v3().unwrap();
    let creds = Value::Array(vec![cred(&s.cred_xml)]);
    let urns = Value::Array(vec![Value::str(&s.urn)]);
    let no = || Value::structure::<&str>([]);
    ok(c.call("Allocate", &[Value::str(&s.urn), creds.clone(), Value::str(ONE_VM), no()]).unwrap());
    ok(c.call("Provision", &[urns.clone(), creds.clone(), rspec_opts(vec![])]).unwrap());
    ok(c.call("PerformOperationalAction", &[urns.clone(), creds.clone(), Value::str("geni_start"), no()]).unwrap());
    let ready = wait_for(Duration::from_secs(400), Duration::from_secs(1), || {
        let st = ok(c.call("Status", &[urns.clone(), creds.clone(), no()]).unwrap());
        let sl = st.get("geni_slivers").and_then(Value::as_array).unwrap().to_vec();
        sl.iter().all(|x| x.get("geni_operational_status") == Some(&Value::str("geni_ready"))).then_some(())
    });
    assert!(ready.is_some(), "slice not ready; AM log:\n{}", tb.am.log_tail());

    let url = tb.am.url_v3();
    let (chain, key, sc) =
        (tb.alice_chain.display().to_string(), tb.alice.key.display().to_string(), s.cred.display().to_string());
    let base = ["--am", url.as_str(), "--cert", chain.as_str(), "--key", key.as_str(), "--cred", sc.as_str()];
    let vn = |args: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(args);
        run(&a)
    };

    // Snapshot (text: the URN on stdout).
    let out = stdout(&vn(&["snapshot", &s.urn, "--name", "ck1"]));
    let snap = out.trim().to_string();
    assert!(snap.starts_with("urn:publicid:IDN+") && snap.contains("+snapshot+"), "{out:?}");
    // The same name again: an AM error, one line.
    fails(&vn(&["snapshot", &s.urn, "--name", "ck1"]), 1, "(geni_code 17 ALREADYEXISTS)");

    // List (--json).
    let list: serde_json::Value = serde_json::from_str(&stdout(&vn(&["--json", "snapshots", &s.urn]))).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["vnsnap_snapshot_urn"], snap.as_str());
    assert_eq!(list[0]["vnsnap_state"], "complete");
    assert_eq!(list[0]["vnsnap_snapshot_name"], "ck1");
    assert!(stdout(&vn(&["snapshots", &s.urn])).contains("ck1"));

    // Describe.
    let d: serde_json::Value = serde_json::from_str(&stdout(&vn(&["snapshot-info", &snap, "--json"]))).unwrap();
    assert_eq!(d["vnsnap_state"], "complete");
    assert_eq!(d["vnsnap_vms"].as_array().map(Vec::len), Some(1), "{d}");
    let t = stdout(&vn(&["snapshot-info", &snap]));
    assert!(t.contains("complete") && t.contains("solo"), "{t}");

    // Restore, then all slivers ready.
    let r: serde_json::Value = serde_json::from_str(&stdout(&vn(&["--json", "restore", &s.urn, &snap]))).unwrap();
    assert_eq!(r["snapshot_urn"], snap.as_str());
    let st: serde_json::Value = serde_json::from_str(&stdout(&vn(&["status", &s.urn, "--json"]))).unwrap();
    for x in st["geni_slivers"].as_array().unwrap() {
        assert_eq!(x["geni_operational_status"], "geni_ready", "{st}");
    }
    assert!(stdout(&vn(&["status", &s.urn])).contains("geni_ready"));

    // Delete; the list is empty.
    assert!(stdout(&vn(&["delete-snapshot", &snap])).contains(&snap));
    let list: serde_json::Value = serde_json::from_str(&stdout(&vn(&["--json", "snapshots", &s.urn]))).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");

    // Unknown snapshot, bad arguments: one clear line, non-zero exit.
    let unknown = format!("urn:publicid:IDN+{}+snapshot+clislice-nope-00000000", tb.am.authority);
    fails(&vn(&["snapshot-info", &unknown]), 1, "(geni_code 12 SEARCHFAILED)");
    fails(&vn(&["restore", &s.urn, &unknown]), 1, "geni_code");
    fails(&vn(&["delete-snapshot", "nope"]), 2, "not a snapshot URN");
    fails(&vn(&["snapshot", &s.urn]), 2, "--name");

    ok(c.call("Delete", &[urns, creds, no()]).unwrap());
}
