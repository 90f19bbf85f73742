//! Issue 21: `vnsnap smoke` against a federation of two vnsnap aggregates, each with its own
//! lab of one host, both trusting the same test clearinghouse (aggregate `a` runs the lab of
//! an [`AmTestbed`], aggregate `b` a second lab and a second `vnsnap-am`).
//!
//! - `federation_passes`: every step passes on both, in parallel; the JUnit report validates
//!   against `junit.xsd` (next to this file) and lists every step; then `b` is switched to
//!   `[extensions] snapshot = false` and its snapshot steps are reported as skipped.
//! - `faults`: `a` next to an aggregate that is down, `b` with its agent killed, one whose
//!   server certificate is not trusted and one answering Allocate with a GENI error: each
//!   fails at its step with its own error text, `a` passes, nothing stays allocated, exit 1.
//! - `ctrl_c_cleans_up`: SIGINT while Status is polled deletes the slivers and says so.
//! - `v2_sequence`: `--v2` (CreateSliver, SliverStatus, RenewSliver, DeleteSliver) passes.
//! - `usage_errors`, `reports_and_targets`: no network; aggregate names, the slice from the
//!   credential, a hostile error text in a schema-valid JUnit report, the request built from
//!   an advertisement.
//!
//! One VM per aggregate (one-core TCG guests): the machine has two cores.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, AgentRef, AmLab, AmLabOptions, AmTestbed, TestSlice};
use vnsnap_testbed::ch::Clearinghouse;
use vnsnap_testbed::lab::{Lab, LabOptions};

/// Two aggregates trusting one clearinghouse. Field order is drop order: the AMs go before
/// the labs they use.
struct Federation {
    am_b: AmLab,
    lab_b: Lab,
    a: AmTestbed,
    slice: TestSlice,
    ssh_key: PathBuf,
}

fn federation(slice: &str) -> Federation {
    let a = AmTestbed::up(1, AmLabOptions::default()).expect("aggregate a");
    let lab_dir = PathBuf::from(format!("/tmp/vsm-{}-{slice}", std::process::id()));
    let lab_b = Lab::up(LabOptions { hosts: 1, dir: Some(lab_dir), ..Default::default() }).expect("lab b");
    let opts = AmLabOptions {
        agents: lab_b.hosts.iter().map(|h| AgentRef { name: h.name.clone(), address: h.api() }).collect(),
        cluster_tls: Some((lab_b.ca.clone(), lab_b.client_cert.clone(), lab_b.client_key.clone())),
        image: (lab_b.kernel.clone(), lab_b.initrd.clone(), Some(lab_b.data_disk.clone())),
        ..Default::default()
    };
    // Same clearinghouse as `a`: one credential is good at both.
    let am_b = AmLab::start(&lab_b.dir.join("am-b"), &a.ch, &opts).expect("aggregate b");
    let slice = a.slice(slice).expect("slice");
    let ssh_key = a.dir.join("smoke.pub");
    std::fs::write(&ssh_key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISmokeTestKey alice@smoke\n").unwrap();
    Federation { am_b, lab_b, a, slice, ssh_key }
}

impl Federation {
    /// `vnsnap <identity> smoke <args>`, waiting for it.
    fn smoke(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run vnsnap")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(vnsnap_testbed::lab::bin("vnsnap"));
        c.arg("--cert")
            .arg(&self.a.alice_chain)
            .arg("--key")
            .arg(&self.a.alice.key)
            .arg("--cred")
            .arg(&self.slice.cred)
            .arg("smoke")
            .arg("--ssh-key")
            .arg(&self.ssh_key)
            .arg("--ca")
            .arg(&self.a.ch.ca().cert)
            .arg("--ready-timeout")
            .arg("600")
            .args(args);
        c
    }

    /// Whether the slice has no sliver left at an aggregate (Status: SEARCHFAILED, or every
    /// sliver unallocated).
    fn nothing_left(&self, url: &str) -> Result<(), String> {
        let c = vnsnap_testbed::amlab::AmClient::new(url, &self.a.alice).map_err(|e| e.to_string())?;
        let r = c
            .call(
                "Status",
                &[
                    Value::Array(vec![Value::str(&self.slice.urn)]),
                    Value::Array(vec![cred(&self.slice.cred_xml)]),
                    Value::Struct(Default::default()),
                ],
            )
            .map_err(|e| e.to_string())?;
        match geni_code(&r) {
            Some(12) => Ok(()),
            Some(0) => {
                let sl =
                    r.get("value").and_then(|v| v.get("geni_slivers")).and_then(Value::as_array).unwrap_or_default();
                let left: Vec<&Value> = sl
                    .iter()
                    .filter(|s| s.get("geni_allocation_status").and_then(Value::as_str) != Some("geni_unallocated"))
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("left at {url}: {left:?}"))
                }
            }
            other => Err(format!("Status at {url}: code {other:?}: {r:?}")),
        }
    }
}

fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn aggregate<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["aggregates"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap_or_else(|| panic!("{name}: {r:#}"))
}

/// `(step, result, error)` of an aggregate's report.
fn steps(a: &serde_json::Value) -> Vec<(String, String, String)> {
    a["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
                s["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn result_of(a: &serde_json::Value, step: &str) -> (String, String) {
    let s = steps(a).into_iter().find(|s| s.0 == step).unwrap_or_else(|| panic!("no step {step}: {a:#}"));
    (s.1, s.2)
}

/// The step that failed, and its error.
fn failed_step(a: &serde_json::Value) -> (String, String) {
    let f: Vec<_> = steps(a).into_iter().filter(|s| s.1 == "failed").collect();
    assert_eq!(f.len(), 1, "exactly one failed step: {a:#}");
    (f[0].0.clone(), f[0].2.clone())
}

/// `(step, result, rest of the row)` of an aggregate's table in the text report.
fn table_rows(text: &str, name: &str) -> Vec<(String, String, String)> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&format!("{name} (")));
    lines.next();
    lines
        .skip(1)
        .take_while(|l| !l.starts_with("cleanup:"))
        .map(|l| {
            let mut w = l.split_whitespace();
            let step = w.next().unwrap_or_default().to_string();
            let mut result = w.next().unwrap_or_default().to_string();
            if result == "not" {
                result = "not run".into();
                w.next();
            }
            (step, result, w.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

const SNAPSHOT_STEPS: [&str; 5] = ["Snapshot", "ListSnapshots", "Restore", "WaitReadyAfterRestore", "DeleteSnapshot"];

fn xsd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/junit.xsd")
}

#[test]
fn federation_passes() {
    let mut f = federation("smoke1");
    let junit = f.a.dir.join("smoke.xml");
    let (ua, ub) = (f.a.am.url_v3(), f.am_b.url_v3());
    let out = f.smoke(&["--json", &format!("a={ua}"), &format!("b={ub}"), "--junit", junit.to_str().unwrap()]);
    let r = report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{r:#}\n{stderr}");
    for name in ["a", "b"] {
        let a = aggregate(&r, name);
        assert_eq!(a["passed"], true, "{a:#}");
        let s = steps(a);
        assert_eq!(s.len(), vnsnap_am::cli::smoke::STEPS_V3.len());
        for (step, result, error) in &s {
            assert_eq!(result, "passed", "{name} {step}: {error}");
        }
        assert_eq!(a["cleanup"], "nothing left allocated");
    }
    // In parallel: each aggregate's Allocate started before the other's Delete ended.
    let at = |name: &str, what: &str| {
        stderr
            .lines()
            .position(|l| l.starts_with(&format!("smoke: [{name}] {what}")))
            .unwrap_or_else(|| panic!("{stderr}"))
    };
    assert!(at("a", "Allocate ...") < at("b", "Delete passed"), "{stderr}");
    assert!(at("b", "Allocate ...") < at("a", "Delete passed"), "{stderr}");

    // The JUnit report: valid against the schema, every step of both a test case.
    let v = Command::new("xmllint").arg("--noout").arg("--schema").arg(xsd()).arg(&junit).output().expect("xmllint");
    assert!(
        v.status.success(),
        "junit invalid: {}\n{}",
        String::from_utf8_lossy(&v.stderr),
        std::fs::read_to_string(&junit).unwrap()
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    for step in vnsnap_am::cli::smoke::STEPS_V3 {
        assert_eq!(xml.matches(&format!("<testcase name=\"{step}\"")).count(), 2, "{step}: {xml}");
    }
    assert!(!xml.contains("<failure") && !xml.contains("<skipped"), "{xml}");

    // Acceptance 2: b without the snapshot extension.
    f.am_b.kill();
    let mut cfg = std::fs::read_to_string(&f.am_b.config).unwrap();
    cfg.push_str("\n[extensions]\nsnapshot = false\n");
    std::fs::write(&f.am_b.config, cfg).unwrap();
    f.am_b.spawn().expect("restart b");
    // This time the text report (printed: the README's recorded run is one of these).
    let out = f.smoke(&[&format!("a={ua}"), &format!("b={ub}"), "--junit", junit.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2 of 2 aggregates passed"), "{text}");
    for (name, snapshots) in [("a", true), ("b", false)] {
        let rows = table_rows(&text, name);
        assert_eq!(rows.len(), vnsnap_am::cli::smoke::STEPS_V3.len(), "{text}");
        for (step, result, rest) in rows {
            if SNAPSHOT_STEPS.contains(&step.as_str()) && !snapshots {
                assert_eq!(result, "skipped", "{name} {step}");
                assert!(rest.contains("does not advertise vnsnap_snapshot"), "{rest}");
            } else {
                assert_eq!(result, "passed", "{name} {step}: {rest}");
            }
        }
    }
    let v = Command::new("xmllint").arg("--noout").arg("--schema").arg(xsd()).arg(&junit).output().expect("xmllint");
    assert!(v.status.success(), "junit invalid: {}", String::from_utf8_lossy(&v.stderr));
    assert_eq!(std::fs::read_to_string(&junit).unwrap().matches("<skipped").count(), 5);
    // And the aggregate refuses the extension's calls.
    let c = vnsnap_testbed::amlab::AmClient::new(&ub, &f.a.alice).unwrap();
    let r = c
        .call(
            "ListSnapshots",
            &[Value::str(&f.slice.urn), Value::Array(vec![cred(&f.slice.cred_xml)]), Value::Struct(Default::default())],
        )
        .unwrap();
    assert_eq!(geni_code(&r), Some(13), "{r:?}");
    let r = c
        .call(
            "PerformOperationalAction",
            &[
                Value::Array(vec![Value::str(&f.slice.urn)]),
                Value::Array(vec![cred(&f.slice.cred_xml)]),
                Value::str("vnsnap_snapshot"),
                Value::structure([("vnsnap_snapshot_name", Value::str("x"))]),
            ],
        )
        .unwrap();
    assert_eq!(geni_code(&r), Some(13), "{r:?}");
    assert!(format!("{r:?}").contains("does not offer the snapshot extension"), "{r:?}");
    f.nothing_left(&ua).unwrap();
    f.nothing_left(&ub).unwrap();
}

#[test]
fn faults() {
    let mut f = federation("smoke2");
    let dir = f.a.dir.join("faults");
    std::fs::create_dir_all(&dir).unwrap();
    // Down: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("https://127.0.0.1:{port}/am/3.0");
    // Untrusted: an aggregate whose server certificate another clearinghouse issued.
    let other_ch = Clearinghouse::create(&dir.join("other-ch"), "geni:other").unwrap();
    let untrusted = AmLab::start(&dir.join("am-untrusted"), &other_ch, &AmLabOptions::default()).unwrap();
    // GENI error: an aggregate without hosts; the request is given (its advertisement has
    // no node), Allocate refuses it.
    let empty = AmLab::start(&dir.join("am-empty"), &f.a.ch, &AmLabOptions::default()).unwrap();
    let req = dir.join("request.xml");
    std::fs::write(
        &req,
        "<rspec type=\"request\" xmlns=\"http://www.geni.net/resources/rspec/3\">\
         <node client_id=\"vm1\" exclusive=\"false\"><sliver_type name=\"emulab-xen\"/></node></rspec>",
    )
    .unwrap();
    let toml = dir.join("aggregates.toml");
    std::fs::write(
        &toml,
        format!("[[aggregate]]\nname = \"empty\"\nurl = \"{}\"\nrspec = \"request.xml\"\n", empty.url_v3()),
    )
    .unwrap();
    let (ua, ub) = (f.a.am.url_v3(), f.am_b.url_v3());
    let mut child = f
        .command(&[
            "--json",
            &format!("a={ua}"),
            &format!("b={ub}"),
            &format!("down={down}"),
            &format!("untrusted={}", untrusted.url_v3()),
            "--aggregates",
            toml.to_str().unwrap(),
            "--pause-after",
            "Allocate",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vnsnap");
    let (tx, rx) = std::sync::mpsc::channel();
    let err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for l in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            if l.contains("paused after Allocate") {
                let _ = tx.send(l.clone());
            }
            all.push(l);
        }
        all.join("\n")
    });
    // a and b pause after Allocate (the others fail before it): b's agent dies there, before
    // Provision.
    for _ in 0..2 {
        rx.recv_timeout(std::time::Duration::from_secs(600)).expect("a and b pause after Allocate");
    }
    f.lab_b.kill_agent(0);
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"\n\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    let r = report(&out);
    eprintln!("{r:#}");
    assert_eq!(out.status.code(), Some(1), "{r:#}\n{stderr}");
    let a = aggregate(&r, "a");
    assert_eq!(a["passed"], true, "a is unaffected: {a:#}\n{stderr}");

    let (step, err) = failed_step(aggregate(&r, "down"));
    assert_eq!(step, "GetVersion");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");

    let (step, err) = failed_step(aggregate(&r, "untrusted"));
    assert_eq!(step, "GetVersion");
    // (The other clearinghouse's CA has the same name as ours: webpki finds it by name and
    // the signature does not check, BadSignature; a CA of another name gives UnknownIssuer.)
    assert!(err.contains("invalid peer certificate"), "{err}");

    let (step, err) = failed_step(aggregate(&r, "empty"));
    assert_eq!(step, "Allocate", "{err}");
    assert!(err.starts_with("Allocate: ") && err.contains("(geni_code 26 INSUFFICIENT_NODES)"), "{err}");

    let b = aggregate(&r, "b");
    let (step, err) = failed_step(b);
    eprintln!("b failed at {step}: {err}");
    assert!(["Provision", "Start", "WaitReady"].contains(&step.as_str()), "{step}: {err}");
    assert_eq!(result_of(b, "Allocate").0, "passed");
    assert!(err.contains("geni_code") || err.contains("geni_failed"), "the AM's own text: {err}");
    assert_eq!(b["cleanup"].as_str().unwrap(), format!("deleted the slivers of {}", f.slice.urn), "{b:#}");
    for name in ["down", "untrusted", "empty", "b"] {
        let x = aggregate(&r, name);
        assert_eq!(x["left_allocated"], false, "{x:#}");
        // The steps after the failed one are listed, not run.
        assert_eq!(steps(x).len(), vnsnap_am::cli::smoke::STEPS_V3.len());
        assert_eq!(steps(x).last().unwrap().1, "not_run");
    }
    f.nothing_left(&ua).unwrap();
    f.nothing_left(&ub).unwrap();
    f.nothing_left(&empty.url_v3()).unwrap();
}

#[test]
fn ctrl_c_cleans_up() {
    let f = federation("smoke3");
    let ua = f.a.am.url_v3();
    let mut child = f
        .command(&["--json", &format!("a={ua}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vnsnap");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    // Wait for the event: Status polling has begun.
    for l in lines.by_ref() {
        seen.push(l.clone());
        if l.starts_with("smoke: [a] WaitReady ...") {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("WaitReady ...")), "{seen:#?}");
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let rest: Vec<String> = lines.collect();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = child.wait().unwrap();
    let all = [seen, rest].concat().join("\n");
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(
        all.contains(&format!("smoke: [a] interrupted: deleted the slivers of {}", f.slice.urn)),
        "says it deleted: {all}"
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let a = aggregate(&r, "a");
    let (step, err) = failed_step(a);
    assert_eq!(step, "WaitReady", "{a:#}");
    assert!(err.contains("interrupted (Ctrl-C)"), "{err}");
    assert_eq!(a["left_allocated"], false);
    f.nothing_left(&ua).unwrap();
}

#[test]
fn usage_errors() {
    // Usage errors before anything is sent: no aggregate, no credential.
    let out = Command::new(vnsnap_testbed::lab::bin("vnsnap"))
        .args(["--cert", "/nonexistent.pem", "smoke"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no aggregate"), "{out:?}");
}

#[test]
fn v2_sequence() {
    let f = federation("smoke4");
    let ua = f.a.am.url_v3();
    let out = f.smoke(&["--json", "--v2", &format!("a={ua}")]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}\n{}", String::from_utf8_lossy(&out.stderr));
    let a = aggregate(&r, "a");
    let names: Vec<String> = steps(a).into_iter().map(|s| s.0).collect();
    assert_eq!(names, vnsnap_am::cli::smoke::STEPS_V2.map(String::from).to_vec());
    for (step, result, error) in steps(a) {
        assert_eq!(result, "passed", "{step}: {error}");
    }
    f.nothing_left(&ua).unwrap();
}

#[test]
fn reports_and_targets() {
    use vnsnap_am::cli::smoke::{
        junit_report, request_from, slice_of, targets, AggregateReport, Outcome, SmokeArgs, StepResult,
    };
    // Names: NAME=URL, host:port of a bare URL, nickname; duplicates refused.
    let args = |v: &[&str]| SmokeArgs {
        aggregates: v.iter().map(|s| s.to_string()).collect(),
        file: None,
        rspec: None,
        v2: false,
        keep: false,
        junit: None,
        ca: None,
        ready_timeout: 1,
        ssh_key: None,
        slice: None,
        pause_after: None,
    };
    let omni = vnsnap_am::cli::OmniConfig::parse(
        "[aggregate_nicknames]\nutah=urn:publicid:IDN+utah+authority+cm,https://utah.example/am/3.0\n",
    )
    .unwrap();
    let t = targets(&args(&["x=https://h:1/am/3.0", "https://g:2/am/3.0", "utah"]), Some(&omni)).unwrap();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["x", "g:2", "utah"]);
    assert_eq!(t[2].url, "https://utah.example/am/3.0");
    assert!(targets(&args(&["https://h:1/a", "https://h:1/b"]), None).is_err());
    assert!(targets(&args(&["nowhere"]), None).is_err());
    assert!(targets(&args(&["ftp://h/x"]), None).is_err());

    let cred = Value::structure([(
        "geni_value",
        Value::str("<signed-credential><credential><target_urn>urn:publicid:IDN+ch+slice+s1</target_urn></credential></signed-credential>"),
    )]);
    assert_eq!(slice_of(&[cred]).as_deref(), Some("urn:publicid:IDN+ch+slice+s1"));

    // A hostile error text stays well-formed XML in the JUnit report.
    let r = AggregateReport {
        name: "a<&\"".into(),
        url: "https://h/am/3.0".into(),
        steps: vec![
            StepResult {
                step: "GetVersion",
                outcome: Outcome::Failed,
                seconds: 0.5,
                error: "bad \u{1} <x> & ]]>".into(),
            },
            StepResult { step: "ListResources", outcome: Outcome::NotRun, seconds: 0.0, error: "not run".into() },
        ],
        cleanup: "nothing left allocated".into(),
        left_allocated: false,
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("j.xml");
    std::fs::write(&p, junit_report(&[r])).unwrap();
    let v = Command::new("xmllint").arg("--noout").arg("--schema").arg(xsd()).arg(&p).output().expect("xmllint");
    assert!(v.status.success(), "{}: {}", String::from_utf8_lossy(&v.stderr), std::fs::read_to_string(&p).unwrap());

    // The request built from an advertisement: one VM of an advertised type and image.
    let ad = r#"<rspec type="advertisement" xmlns="http://www.geni.net/resources/rspec/3">
      <node component_id="urn:publicid:IDN+x+node+h1" component_manager_id="urn:publicid:IDN+x+authority+cm" exclusive="false">
        <sliver_type name="emulab-xen"><disk_image name="urn:publicid:IDN+x+image+a"/><disk_image name="urn:publicid:IDN+x+image+b" default="true"/></sliver_type>
        <available now="true"/>
      </node></rspec>"#;
    let req = request_from(&vnsnap_rspec::parse_lenient(ad).unwrap()).unwrap();
    let req = vnsnap_rspec::parse(&req).unwrap();
    assert_eq!(req.nodes.len(), 1);
    assert_eq!(req.nodes[0].sliver_types[0].name, "emulab-xen");
    assert_eq!(req.nodes[0].sliver_types[0].disk_images[0].name, "urn:publicid:IDN+x+image+b");
    let none = ad.replace("now=\"true\"", "now=\"false\"");
    assert!(request_from(&vnsnap_rspec::parse_lenient(&none).unwrap()).is_err());
}
