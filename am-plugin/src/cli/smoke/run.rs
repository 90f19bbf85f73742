//! One aggregate's run of the smoke test, and Ctrl-C.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vnsnap_rspec::{DiskImage, Node, RSpec, RSpecType, SliverType};

use super::super::output::{one_line, text};
use super::super::CliError;
use super::*;
use crate::client::XmlRpcClient;
use crate::xmlrpc::Value;

// ---- Ctrl-C ----

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // A second Ctrl-C ends the program at once (cleanup abandoned).
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

pub(super) fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub(super) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps `d`, returning early (`false`) on Ctrl-C.
fn nap(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())));
    }
    !interrupted()
}

// ---- one aggregate ----

/// What every aggregate's run shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) identity: Vec<u8>,
    pub(super) ca: Option<Vec<u8>>,
    pub(super) creds: Vec<Value>,
    pub(super) slice: String,
    pub(super) users: Value,
    pub(super) v2: bool,
    pub(super) keep: bool,
    pub(super) ready_timeout: Duration,
    pub(super) snapshot_timeout: Duration,
    pub(super) pause_after: Option<String>,
}

fn cut(s: &str) -> String {
    let s = one_line(s);
    if s.chars().count() > MAX_ERROR_CHARS {
        s.chars().take(MAX_ERROR_CHARS - 3).collect::<String>() + "..."
    } else {
        s
    }
}

fn rspec_opts() -> Value {
    Value::structure([(
        "geni_rspec_version",
        Value::structure([("type", Value::str("GENI")), ("version", Value::str("3"))]),
    )])
}

fn opts(extra: Vec<(&str, Value)>) -> Value {
    let mut m = match rspec_opts() {
        Value::Struct(m) => m,
        _ => BTreeMap::new(),
    };
    for (k, v) in extra {
        m.insert(k.to_string(), v);
    }
    Value::Struct(m)
}

fn empty() -> Value {
    Value::Struct(BTreeMap::new())
}

fn slivers(v: &Value) -> Vec<Value> {
    v.get("geni_slivers").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default()
}

/// A document from a reply: a string, or base64 text.
fn doc(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Base64(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn read_rspec(xml: &str, kind: RSpecType, what: &str) -> Result<RSpec, String> {
    let r = vnsnap_rspec::parse_lenient(xml).map_err(|e| format!("{what} is not a valid RSpec v3: {e}"))?;
    if r.rspec_type != kind {
        return Err(format!("{what} has type {:?}, not {:?}", r.rspec_type.as_str(), kind.as_str()));
    }
    r.validate().map_err(|ps| {
        let first: Vec<String> = ps.iter().take(5).map(|p| p.to_string()).collect();
        format!("{what} breaks the RSpec v3 schema rules: {}", first.join("; "))
    })?;
    Ok(r)
}

/// The smallest request for an advertisement: one VM on the first available node that offers
/// a sliver type with a disk image (the default image where one is marked).
pub fn request_from(ad: &RSpec) -> Result<String, String> {
    for n in &ad.nodes {
        if n.available.as_ref().is_some_and(|a| !a.now) {
            continue;
        }
        for st in &n.sliver_types {
            let image = st.disk_images.iter().find(|d| d.default.as_deref() == Some("true")).or(st.disk_images.first());
            let Some(image) = image else { continue };
            let mut req = RSpec::new(RSpecType::Request);
            req.nodes.push(Node {
                client_id: Some("smoke-vm1".into()),
                component_manager_id: n.component_manager_id.clone(),
                exclusive: Some(false),
                sliver_types: vec![SliverType {
                    name: st.name.clone(),
                    disk_images: vec![DiskImage { name: image.name.clone(), ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            });
            return Ok(req.to_xml());
        }
    }
    Err("the advertisement offers no available node with a sliver type and a disk image".into())
}

struct Run<'a> {
    t: &'a Target,
    sh: &'a Shared,
    client: Option<XmlRpcClient>,
    creds: Value,
    steps: Vec<StepResult>,
    /// An Allocate/CreateSliver was sent: something may be allocated.
    allocated: bool,
    /// A snapshot taken and not yet deleted.
    snapshot: Option<String>,
    snapshots_offered: bool,
    request: String,
    ad: Option<RSpec>,
}

impl<'a> Run<'a> {
    fn say(&self, msg: &str) {
        eprintln!("smoke: [{}] {msg}", self.t.name);
    }

    fn client(&self) -> Result<&XmlRpcClient, String> {
        self.client.as_ref().ok_or_else(|| "no client".to_string())
    }

    /// A GENI call; errors carry the aggregate's own text.
    fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, String> {
        let reply = self.client()?.call(method, &params).map_err(|e| e.to_string())?;
        super::super::output::geni_value(method, reply).map_err(|e| e.to_string())
    }

    /// Runs one step: times it, records it, reports progress. `false` when it failed.
    fn step(&mut self, name: &'static str, f: impl FnOnce(&mut Self) -> Result<(), String>) -> bool {
        let start = Instant::now();
        let r = if interrupted() {
            Err("interrupted (Ctrl-C)".to_string())
        } else {
            self.say(&format!("{name} ..."));
            f(self)
        };
        let seconds = start.elapsed().as_secs_f64();
        let (outcome, error) = match r {
            Ok(()) => (Outcome::Passed, String::new()),
            Err(e) => (Outcome::Failed, cut(&e)),
        };
        self.say(&format!(
            "{name} {} in {seconds:.2} s{}",
            outcome.as_str(),
            if error.is_empty() { String::new() } else { format!(": {error}") }
        ));
        self.steps.push(StepResult { step: name, outcome, seconds, error });
        if outcome == Outcome::Passed && self.sh.pause_after.as_deref() == Some(name) {
            self.say(&format!("paused after {name}: press Enter to go on"));
            // One line per paused aggregate; end of input goes on too.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        outcome == Outcome::Passed
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.say(&format!("{name} skipped: {why}"));
        self.steps.push(StepResult { step: name, outcome: Outcome::Skipped, seconds: 0.0, error: why.into() });
    }

    fn urns(&self) -> Value {
        Value::Array(vec![Value::str(&self.sh.slice)])
    }

    fn v2_creds(&self) -> Value {
        Value::Array(
            self.sh.creds.iter().filter_map(|c| c.get("geni_value").and_then(Value::as_str)).map(Value::str).collect(),
        )
    }

    fn get_version(&mut self) -> Result<(), String> {
        let client = match &self.sh.ca {
            Some(ca) => XmlRpcClient::verified(&self.t.url, &self.sh.identity, ca, CALL_TIMEOUT),
            None => XmlRpcClient::new(&self.t.url, &self.sh.identity, CALL_TIMEOUT),
        };
        self.client = Some(client.map_err(|e| e.to_string())?);
        let v = self.call("GetVersion", vec![])?;
        let versions = v.get("geni_api_versions").ok_or("GetVersion: no geni_api_versions")?;
        let want = if self.sh.v2 { "2" } else { "3" };
        let url = versions.get(want).and_then(Value::as_str).map(str::trim).unwrap_or_default().to_string();
        if url.is_empty() {
            return Err(format!("GetVersion: AM API v{want} is not offered (geni_api_versions)"));
        }
        let geni3 = v
            .get("geni_request_rspec_versions")
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .any(|r| text(r, "type").eq_ignore_ascii_case("GENI") && text(r, "version").trim() == "3");
        if !geni3 {
            return Err("GetVersion: geni_request_rspec_versions does not include GENI 3".into());
        }
        let ctypes = v.get("geni_credential_types").and_then(Value::as_array).unwrap_or_default();
        if !ctypes.iter().any(|c| text(c, "geni_type").eq_ignore_ascii_case("geni_sfa")) {
            return Err("GetVersion: geni_credential_types does not include geni_sfa".into());
        }
        self.snapshots_offered = v
            .get("vnsnap_extensions")
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .any(|e| e.as_str() == Some("vnsnap_snapshot"));
        if self.sh.v2 {
            // The rest of the run at the v2 endpoint the aggregate names.
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048 {
                return Err(format!("GetVersion: bad v2 URL {:?}", cut(&url)));
            }
            let client = match &self.sh.ca {
                Some(ca) => XmlRpcClient::verified(&url, &self.sh.identity, ca, CALL_TIMEOUT),
                None => XmlRpcClient::new(&url, &self.sh.identity, CALL_TIMEOUT),
            };
            self.client = Some(client.map_err(|e| e.to_string())?);
            self.creds = self.v2_creds();
        }
        Ok(())
    }

    fn list_resources(&mut self) -> Result<(), String> {
        let v =
            self.call("ListResources", vec![self.creds.clone(), opts(vec![("geni_available", Value::Bool(true))])])?;
        let xml = doc(&v).ok_or("ListResources: the value is not a document")?;
        let ad = read_rspec(&xml, RSpecType::Advertisement, "the advertisement")?;
        if ad.opstates.iter().any(|o| o.states.iter().any(|s| s.actions.iter().any(|a| a.name == "vnsnap_snapshot"))) {
            self.snapshots_offered = true;
        }
        self.ad = Some(ad);
        Ok(())
    }

    fn build_request(&mut self) -> Result<(), String> {
        if let Some(f) = &self.t.rspec {
            let xml = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            read_rspec(&xml, RSpecType::Request, &f.display().to_string())?;
            self.request = xml;
            return Ok(());
        }
        let ad = self.ad.as_ref().ok_or("no advertisement")?;
        self.request = request_from(ad)?;
        Ok(())
    }

    /// Polls status until `done` says the slivers are settled. `done` returns `Ok(true)` when
    /// ready, `Ok(false)` to keep waiting, `Err` on failure.
    fn poll(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Value) -> Result<bool, String>,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            let st = if self.sh.v2 {
                self.call("SliverStatus", vec![Value::str(&self.sh.slice), self.creds.clone(), empty()])?
            } else {
                self.call("Status", vec![self.urns(), self.creds.clone(), empty()])?
            };
            if done(&st)? {
                return Ok(());
            }
            last = status_line(&st, self.sh.v2).unwrap_or(last);
            if start.elapsed() > timeout {
                return Err(format!("{what}: not after {} s (last status: {last})", timeout.as_secs()));
            }
            if !nap(POLL) {
                return Err(format!("interrupted (Ctrl-C) while waiting for {what}"));
            }
        }
    }

    fn wait_ready(&self, timeout: Duration, what: &str) -> Result<(), String> {
        let v2 = self.sh.v2;
        self.poll(timeout, what, |st| {
            if v2 {
                return match text(st, "geni_status").as_str() {
                    "ready" => Ok(true),
                    "failed" => Err(format!("SliverStatus: failed: {}", v2_errors(st))),
                    _ => Ok(false),
                };
            }
            let sl = slivers(st);
            if sl.is_empty() {
                return Err("Status: no slivers".into());
            }
            if let Some(f) = sl.iter().find(|s| text(s, "geni_operational_status") == "geni_failed") {
                return Err(format!("{} geni_failed: {}", text(f, "geni_sliver_urn"), text(f, "geni_error")));
            }
            Ok(sl.iter().all(|s| text(s, "geni_operational_status") == "geni_ready"))
        })
    }

    fn v3_sequence(&mut self) {
        let ok = self.step("Allocate", |r| {
            r.allocated = true;
            let v = r.call(
                "Allocate",
                vec![Value::str(&r.sh.slice), r.creds.clone(), Value::str(&r.request), rspec_opts()],
            )?;
            if slivers(&v).is_empty() {
                return Err("Allocate: no slivers in the answer".into());
            }
            Ok(())
        }) && self.step("Provision", |r| {
            let o = opts(vec![("geni_users", r.sh.users.clone())]);
            let v = r.call("Provision", vec![r.urns(), r.creds.clone(), o])?;
            if slivers(&v).is_empty() {
                return Err("Provision: no slivers in the answer".into());
            }
            Ok(())
        }) && self.step("Start", |r| {
            r.call("PerformOperationalAction", vec![r.urns(), r.creds.clone(), Value::str("geni_start"), empty()])
                .map(|_| ())
        }) && self.step("WaitReady", |r| r.wait_ready(r.sh.ready_timeout, "every sliver geni_ready"))
            && self.step("Describe", |r| {
                let v = r.call("Describe", vec![r.urns(), r.creds.clone(), rspec_opts()])?;
                let xml = v.get("geni_rspec").and_then(doc).ok_or("Describe: no geni_rspec")?;
                let m = read_rspec(&xml, RSpecType::Manifest, "the manifest")?;
                let login = m
                    .nodes
                    .iter()
                    .any(|n| n.services.as_ref().is_some_and(|s| !s.logins.is_empty() || !s.users.is_empty()));
                if !login {
                    return Err("the manifest has no login information (no <login> nor <services_user>)".into());
                }
                Ok(())
            })
            && self.step("Renew", |r| {
                let until = renew_until(&r.sh.creds);
                r.call("Renew", vec![r.urns(), r.creds.clone(), Value::str(until), empty()]).map(|_| ())
            });
        let ok = ok && self.snapshot_steps();
        let ok =
            ok && self.step("Delete", |r| {
                r.call("Delete", vec![r.urns(), r.creds.clone(), empty()])?;
                r.allocated = false;
                Ok(())
            }) && self.step("StatusGone", |r| r.gone());
        let _ = ok;
    }

    fn snapshot_steps(&mut self) -> bool {
        if !self.snapshots_offered {
            for s in SNAPSHOT_STEPS {
                self.skip(s, "the aggregate does not advertise vnsnap_snapshot");
            }
            return true;
        }
        self.step("Snapshot", |r| {
            let name = format!("smoke-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
            let o = Value::structure([("vnsnap_snapshot_name", Value::str(&name))]);
            let v =
                r.call("PerformOperationalAction", vec![r.urns(), r.creds.clone(), Value::str("vnsnap_snapshot"), o])?;
            let urn = v
                .as_array()
                .unwrap_or_default()
                .iter()
                .map(|s| text(s, "vnsnap_snapshot_urn"))
                .find(|u| !u.is_empty() && u.len() < 1024)
                .ok_or("PerformOperationalAction vnsnap_snapshot: no vnsnap_snapshot_urn in the answer")?;
            r.snapshot = Some(urn.clone());
            r.poll(r.sh.snapshot_timeout, "the snapshot", |st| {
                Ok(!slivers(st).iter().any(|s| text(s, "geni_operational_status") == "vnsnap_snapshotting"))
            })?;
            let d = r.call("DescribeSnapshot", vec![Value::str(&urn), r.creds.clone(), empty()])?;
            match text(&d, "vnsnap_state").as_str() {
                "complete" => Ok(()),
                s => Err(format!("snapshot {urn} is {s:?}: {}", text(&d, "vnsnap_error"))),
            }
        }) && self.step("ListSnapshots", |r| {
            let urn = r.snapshot.clone().unwrap_or_default();
            let v = r.call("ListSnapshots", vec![Value::str(&r.sh.slice), r.creds.clone(), empty()])?;
            if v.as_array().unwrap_or_default().iter().any(|s| text(s, "vnsnap_snapshot_urn") == urn) {
                Ok(())
            } else {
                Err(format!("ListSnapshots does not list {urn}"))
            }
        }) && self.step("Restore", |r| {
            let urn = r.snapshot.clone().unwrap_or_default();
            let o = Value::structure([("vnsnap_snapshot_urn", Value::str(&urn))]);
            r.call("PerformOperationalAction", vec![r.urns(), r.creds.clone(), Value::str("vnsnap_restore"), o])
                .map(|_| ())
        }) && self.step("WaitReadyAfterRestore", |r| {
            r.poll(r.sh.snapshot_timeout, "the restore", |st| {
                let sl = slivers(st);
                if sl.iter().any(|s| text(s, "geni_operational_status") == "vnsnap_restoring") {
                    return Ok(false);
                }
                if let Some(e) = sl.iter().find(|s| !text(s, "geni_error").trim().is_empty()) {
                    return Err(format!("{}: {}", text(e, "geni_sliver_urn"), text(e, "geni_error")));
                }
                Ok(sl.iter().all(|s| text(s, "geni_operational_status") == "geni_ready"))
            })
        }) && self.step("DeleteSnapshot", |r| {
            let urn = r.snapshot.clone().unwrap_or_default();
            r.call("DeleteSnapshot", vec![Value::str(&urn), r.creds.clone(), empty()])?;
            r.snapshot = None;
            Ok(())
        })
    }

    /// Status after Delete: SEARCHFAILED, no slivers, or all unallocated.
    fn gone(&self) -> Result<(), String> {
        let (method, params) = if self.sh.v2 {
            ("SliverStatus", vec![Value::str(&self.sh.slice), self.creds.clone(), empty()])
        } else {
            ("Status", vec![self.urns(), self.creds.clone(), empty()])
        };
        let reply = self.client()?.call(method, &params).map_err(|e| e.to_string())?;
        match super::super::output::geni_value(method, reply) {
            Ok(v) => {
                let left: Vec<String> = slivers(&v)
                    .iter()
                    .filter(|s| text(s, "geni_allocation_status") != "geni_unallocated")
                    .map(|s| format!("{} {}", text(s, "geni_sliver_urn"), text(s, "geni_allocation_status")))
                    .collect();
                if self.sh.v2 && !v.get("geni_resources").and_then(Value::as_array).unwrap_or_default().is_empty() {
                    return Err(format!("{method}: the slice still has resources after DeleteSliver"));
                }
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{method}: slivers still there after Delete: {}", left.join(", ")))
                }
            }
            // No such slice (any more): gone.
            Err(CliError::Am { code: 12, .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn v2_sequence(&mut self) {
        let ok = self.step("CreateSliver", |r| {
            r.allocated = true;
            let v = r.call(
                "CreateSliver",
                vec![Value::str(&r.sh.slice), r.creds.clone(), Value::str(&r.request), r.sh.users.clone(), empty()],
            )?;
            let xml = doc(&v).ok_or("CreateSliver: the value is not a manifest")?;
            read_rspec(&xml, RSpecType::Manifest, "the manifest").map(|_| ())
        }) && self.step("WaitReady", |r| r.wait_ready(r.sh.ready_timeout, "geni_status ready"))
            && self.step("RenewSliver", |r| {
                let until = renew_until(&r.sh.creds);
                r.call("RenewSliver", vec![Value::str(&r.sh.slice), r.creds.clone(), Value::str(until), empty()])
                    .map(|_| ())
            })
            && self.step("DeleteSliver", |r| {
                r.call("DeleteSliver", vec![Value::str(&r.sh.slice), r.creds.clone(), empty()])?;
                r.allocated = false;
                Ok(())
            })
            && self.step("StatusGone", |r| r.gone());
        let _ = ok;
    }

    /// A call of the cleanup: a slice busy with a snapshot or restore answers BUSY (14) until
    /// that ends, so BUSY is retried for up to [`CLEANUP_BUSY_WAIT`] (a second Ctrl-C ends it).
    fn call_while_busy(&self, method: &str, params: Vec<Value>) -> Result<Value, CleanupError> {
        let start = Instant::now();
        loop {
            let reply = self
                .client()
                .map_err(CleanupError::Other)?
                .call(method, &params)
                .map_err(|e| CleanupError::Other(e.to_string()))?;
            match super::super::output::geni_value(method, reply) {
                Err(CliError::Am { code: 14, .. }) if start.elapsed() < CLEANUP_BUSY_WAIT => {
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => return other.map_err(CleanupError::Am),
            }
        }
    }

    /// Deletes what the run left, unless `--keep`; says what it did.
    fn cleanup(&mut self) -> (String, bool) {
        if !self.allocated && self.snapshot.is_none() {
            return ("nothing left allocated".into(), false);
        }
        if self.sh.keep {
            return (format!("kept the slivers of {} (--keep)", self.sh.slice), true);
        }
        let mut said = Vec::new();
        let mut left = false;
        if let Some(urn) = self.snapshot.take() {
            match self.call_while_busy("DeleteSnapshot", vec![Value::str(&urn), self.creds.clone(), empty()]) {
                Ok(_) => said.push(format!("deleted snapshot {urn}")),
                Err(e) => said.push(format!("could not delete snapshot {urn}: {}", cut(&e.to_string()))),
            }
        }
        if self.allocated {
            let (method, first) =
                if self.sh.v2 { ("DeleteSliver", Value::str(&self.sh.slice)) } else { ("Delete", self.urns()) };
            match self.call_while_busy(method, vec![first, self.creds.clone(), empty()]) {
                Ok(_) => said.push(format!("deleted the slivers of {}", self.sh.slice)),
                Err(CleanupError::Am(CliError::Am { code: 12, .. })) => said.push("nothing left allocated".into()),
                Err(e) => {
                    left = true;
                    said.push(format!("could not delete the slivers of {}: {}", self.sh.slice, cut(&e.to_string())))
                }
            }
        }
        (said.join("; "), left)
    }
}

/// How long cleanup retries a call that answers BUSY.
const CLEANUP_BUSY_WAIT: Duration = Duration::from_secs(300);

/// Why a cleanup call failed.
#[derive(Debug)]
enum CleanupError {
    /// The aggregate answered with a GENI error code.
    Am(CliError),
    /// Transport or client trouble.
    Other(String),
}

impl std::fmt::Display for CleanupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CleanupError::Am(e) => write!(f, "{e}"),
            CleanupError::Other(e) => f.write_str(e),
        }
    }
}

/// The time to renew to: two hours from now, but not past the slice credential's expiry
/// (an aggregate refuses a renewal beyond it).
fn renew_until(creds: &[Value]) -> String {
    let mut until = chrono::Utc::now() + chrono::Duration::hours(2);
    let expiry = creds.iter().find_map(|c| {
        let xml = c.get("geni_value")?.as_str()?;
        let start = xml.find("<expires>")? + "<expires>".len();
        let len = xml[start..].find("</expires>")?;
        chrono::DateTime::parse_from_rfc3339(xml[start..start + len].trim()).ok()
    });
    if let Some(e) = expiry {
        until = until.min(e.with_timezone(&chrono::Utc));
    }
    until.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn status_line(st: &Value, v2: bool) -> Option<String> {
    if v2 {
        return Some(text(st, "geni_status"));
    }
    let sl = slivers(st);
    (!sl.is_empty()).then(|| {
        sl.iter().map(|s| text(s, "geni_operational_status")).collect::<Vec<_>>().join(",").chars().take(200).collect()
    })
}

fn v2_errors(st: &Value) -> String {
    st.get("geni_resources")
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .map(|r| format!("{}: {}", text(r, "geni_urn"), text(r, "geni_error")))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn run_one(t: &Target, sh: &Shared) -> AggregateReport {
    let mut r = Run {
        t,
        sh,
        client: None,
        creds: Value::Array(sh.creds.clone()),
        steps: Vec::new(),
        allocated: false,
        snapshot: None,
        snapshots_offered: false,
        request: String::new(),
        ad: None,
    };
    let ok = r.step("GetVersion", Run::get_version)
        && r.step("ListResources", Run::list_resources)
        && r.step("BuildRequest", Run::build_request);
    if ok {
        if sh.v2 {
            r.v2_sequence();
        } else {
            r.v3_sequence();
        }
    }
    let (cleanup, left_allocated) = r.cleanup();
    if interrupted() {
        // Ctrl-C: say so on stderr whatever the output format.
        eprintln!("smoke: [{}] interrupted: {cleanup}", t.name);
    } else {
        r.say(&format!("cleanup: {cleanup}"));
    }
    // Every step of the sequence appears in the report.
    let all: &[&'static str] = if sh.v2 { &STEPS_V2 } else { &STEPS_V3 };
    let failed = r.steps.iter().find(|s| s.outcome == Outcome::Failed).map(|s| s.step);
    let mut steps = Vec::new();
    for name in all {
        match r.steps.iter().find(|s| s.step == *name) {
            Some(s) => steps.push(s.clone()),
            None => steps.push(StepResult {
                step: name,
                outcome: Outcome::NotRun,
                seconds: 0.0,
                error: match failed {
                    Some(f) => format!("not run: {f} failed"),
                    None => "not run".into(),
                },
            }),
        }
    }
    AggregateReport { name: t.name.clone(), url: t.url.clone(), steps, cleanup, left_allocated }
}
