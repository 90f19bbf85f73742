//! `vnsnap smoke`: a federation smoke test. Against each aggregate, in parallel, the AM API v3
//! life cycle of a one-VM slice, every step timed and its result kept (see [`STEPS_V3`]), the
//! snapshot extension's steps where the aggregate advertises `vnsnap_snapshot`; `--v2` runs
//! the AM API v2 sequence ([`STEPS_V2`]) instead. Whatever happens, and on Ctrl-C, the
//! slivers allocated are deleted again unless `--keep`.
//!
//! Everything an aggregate answers is treated as hostile: replies are bounded by the client
//! ([`crate::client::MAX_REPLY_BYTES`]), documents are read by the rspec library's limits,
//! and texts shown are folded to one line and cut.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Cli, CliError, OmniConfig};
use crate::xmlrpc::Value;

mod report;
mod run;

pub use report::{json_report, junit_report, text_report};
pub use run::request_from;
use run::{catch_interrupts, interrupted, run_one, Shared};

/// Arguments of `vnsnap smoke`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SmokeArgs {
    /// Aggregates: URLs (https://host:port/am/3.0), omni_config nicknames, or NAME=URL.
    #[arg(value_name = "AGGREGATE")]
    pub aggregates: Vec<String>,
    /// TOML file of aggregates: [[aggregate]] name = "...", url = "URL or nickname",
    /// rspec = "request.xml" (optional, overrides --rspec for that aggregate).
    #[arg(long = "aggregates", value_name = "TOML")]
    pub file: Option<PathBuf>,
    /// Request RSpec to use instead of one built from each advertisement.
    #[arg(long, value_name = "FILE")]
    pub rspec: Option<PathBuf>,
    /// Run the AM API v2 sequence (CreateSliver, SliverStatus, RenewSliver, DeleteSliver).
    #[arg(long)]
    pub v2: bool,
    /// Leave the slivers (and snapshots) in place at the end or on failure.
    #[arg(long)]
    pub keep: bool,
    /// Write a JUnit XML report (one test suite per aggregate, one test case per step).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Accept an aggregate's server certificate only with a chain to a certificate in this
    /// PEM file (default: not checked, like omni).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Seconds to wait for the slivers to become geni_ready.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub ready_timeout: u64,
    /// SSH public key to install for the user (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub
    /// or id_rsa.pub, the first that exists).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Slice URN (default: the target of the slice credential).
    #[arg(long, value_name = "URN")]
    pub slice: Option<String>,
    /// After this step passes, each aggregate's run waits for a line on stdin (to look at
    /// the aggregate, or break something on purpose, in mid-run).
    #[arg(long, value_name = "STEP")]
    pub pause_after: Option<String>,
}

/// The steps of the v3 sequence, in order.
pub const STEPS_V3: [&str; 16] = [
    "GetVersion",
    "ListResources",
    "BuildRequest",
    "Allocate",
    "Provision",
    "Start",
    "WaitReady",
    "Describe",
    "Renew",
    "Snapshot",
    "ListSnapshots",
    "Restore",
    "WaitReadyAfterRestore",
    "DeleteSnapshot",
    "Delete",
    "StatusGone",
];

/// The steps of the v2 sequence, in order.
pub const STEPS_V2: [&str; 8] = [
    "GetVersion",
    "ListResources",
    "BuildRequest",
    "CreateSliver",
    "WaitReady",
    "RenewSliver",
    "DeleteSliver",
    "StatusGone",
];

const SNAPSHOT_STEPS: [&str; 5] = ["Snapshot", "ListSnapshots", "Restore", "WaitReadyAfterRestore", "DeleteSnapshot"];

/// Longest error text kept per step (characters).
const MAX_ERROR_CHARS: usize = 2000;
/// Seconds one XML-RPC call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);
/// Status polling period.
const POLL: Duration = Duration::from_secs(1);

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done and checked.
    Passed,
    /// Failed (the error says why).
    Failed,
    /// Not applicable at this aggregate (the reason is in `error`).
    Skipped,
    /// Not reached: an earlier step failed.
    NotRun,
}

impl Outcome {
    /// The word in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
            Outcome::NotRun => "not run",
        }
    }
}

/// One step's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// Step name (from [`STEPS_V3`] or [`STEPS_V2`]).
    pub step: &'static str,
    /// Outcome.
    pub outcome: Outcome,
    /// Wall time (seconds).
    pub seconds: f64,
    /// Error text (failed), reason (skipped, not run), else empty.
    pub error: String,
}

/// One aggregate's run.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateReport {
    /// Name shown (nickname, NAME= or host:port).
    pub name: String,
    /// Endpoint URL.
    pub url: String,
    /// Every step of the sequence, in order.
    pub steps: Vec<StepResult>,
    /// What cleanup did.
    pub cleanup: String,
    /// Whether cleanup left something allocated (failed to delete, or `--keep`).
    pub left_allocated: bool,
}

impl AggregateReport {
    /// No step failed and every one ran (skipped ones count as fine).
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| matches!(s.outcome, Outcome::Passed | Outcome::Skipped))
    }
}

/// An aggregate to test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name shown.
    pub name: String,
    /// Endpoint URL.
    pub url: String,
    /// Request RSpec file for this one.
    pub rspec: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    #[serde(default)]
    aggregate: Vec<TargetEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    name: Option<String>,
    url: String,
    rspec: Option<PathBuf>,
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn resolve_url(s: &str, omni: Option<&OmniConfig>) -> Result<(String, Option<String>), CliError> {
    if s.contains("://") {
        if !s.starts_with("https://") && !s.starts_with("http://") {
            return Err(CliError::Usage(format!("aggregate {s:?}: not an http(s) URL")));
        }
        return Ok((s.to_string(), None));
    }
    let url = omni
        .and_then(|o| o.aggregate_url(s))
        .ok_or_else(|| CliError::Usage(format!("aggregate {s:?} is neither a URL nor an omni_config nickname")))?;
    Ok((url, Some(s.to_string())))
}

/// The aggregates of the command line and the `--aggregates` file; names are unique.
pub fn targets(a: &SmokeArgs, omni: Option<&OmniConfig>) -> Result<Vec<Target>, CliError> {
    let mut out = Vec::new();
    for arg in &a.aggregates {
        let (name, spec) = match arg.split_once('=') {
            Some((n, u)) if !n.contains("://") && !n.is_empty() => (Some(n.to_string()), u),
            _ => (None, arg.as_str()),
        };
        let (url, nick) = resolve_url(spec, omni)?;
        let name = name.or(nick).unwrap_or_else(|| host_port(&url));
        out.push(Target { name, url, rspec: a.rspec.clone() });
    }
    if let Some(f) = &a.file {
        let t = std::fs::read_to_string(f).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", f.display())))?;
        let file: TargetsFile = toml::from_str(&t).map_err(|e| CliError::Usage(format!("{}: {e}", f.display())))?;
        let base = f.parent().unwrap_or(Path::new("."));
        for e in file.aggregate {
            let (url, nick) = resolve_url(&e.url, omni)?;
            let name = e.name.or(nick).unwrap_or_else(|| host_port(&url));
            let rspec = e.rspec.map(|r| base.join(r)).or_else(|| a.rspec.clone());
            out.push(Target { name, url, rspec });
        }
    }
    if out.is_empty() {
        return Err(CliError::Usage("no aggregate: give URLs, nicknames or --aggregates FILE".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &out {
        if !seen.insert(t.name.clone()) {
            return Err(CliError::Usage(format!("aggregate name {:?} given twice (use NAME=URL)", t.name)));
        }
    }
    Ok(out)
}

/// The slice a credential is for: the `<target_urn>` of the first slice credential.
pub fn slice_of(creds: &[Value]) -> Option<String> {
    creds.iter().find_map(|c| {
        let xml = c.get("geni_value")?.as_str()?;
        let start = xml.find("<target_urn>")? + "<target_urn>".len();
        let len = xml[start..].find("</target_urn>")?;
        let urn = xml[start..start + len].trim();
        urn.contains("+slice+").then(|| urn.to_string())
    })
}

/// The GENI URN in the first certificate of a PEM file.
pub fn user_urn(cert_pem: &[u8]) -> Option<String> {
    let ders = crate::auth::pem_certificates(cert_pem).ok()?;
    crate::auth::GeniCert::from_der(ders.first()?).ok()?.urn
}

fn ssh_key(a: &SmokeArgs) -> Result<Option<String>, CliError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_string())
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))
    };
    if let Some(p) = &a.ssh_key {
        return read(p).map(Some);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    for f in ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"] {
        let p = home.join(".ssh").join(f);
        if p.is_file() {
            return read(&p).map(Some);
        }
    }
    Ok(None)
}

// ---- the command ----

/// Runs `vnsnap smoke`; returns the exit code (0: every aggregate passed; 1: one failed;
/// 130: interrupted).
pub fn run(cli: &Cli, a: &SmokeArgs, default_omni: Option<PathBuf>) -> Result<i32, CliError> {
    let (cert, key, omni) = super::identity_files(cli, default_omni)?;
    let targets = targets(a, omni.as_ref())?;
    let creds = super::read_credentials(&cli.cred)?;
    if creds.is_empty() {
        return Err(CliError::Usage(
            "no credential: give --cred FILE (the slice credential, as omni's --slicecredfile)".into(),
        ));
    }
    let slice = match &a.slice {
        Some(s) => s.clone(),
        None => slice_of(&creds).ok_or_else(|| {
            CliError::Usage("no slice: none of the --cred files is a slice credential; give --slice URN".into())
        })?,
    };
    super::check_command(&super::Command::Status { slice_urn: slice.clone() })?;
    let settings = super::Settings { am_url: String::new(), cert: cert.clone(), key, creds: creds.clone() };
    let identity = settings.identity_pem()?;
    let ca = match &a.ca {
        Some(p) => Some(std::fs::read(p).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?),
        None => None,
    };
    let user = user_urn(&identity)
        .ok_or_else(|| CliError::Usage(format!("{}: no GENI URN in the certificate", cert.display())))?;
    if let Some(p) = &a.pause_after {
        let all: &[&str] = if a.v2 { &STEPS_V2 } else { &STEPS_V3 };
        if !all.contains(&p.as_str()) {
            return Err(CliError::Usage(format!("--pause-after {p:?}: not a step ({})", all.join(", "))));
        }
    }
    let keys = ssh_key(a)?.map(|k| vec![Value::str(k)]).unwrap_or_default();
    let users = Value::Array(vec![Value::structure([("urn", Value::str(user)), ("keys", Value::Array(keys))])]);
    let sh = Shared {
        identity,
        ca,
        creds,
        slice: slice.clone(),
        users,
        v2: a.v2,
        keep: a.keep,
        ready_timeout: Duration::from_secs(a.ready_timeout),
        snapshot_timeout: Duration::from_secs(cli.timeout),
        pause_after: a.pause_after.clone(),
    };
    catch_interrupts();
    let reports: Vec<AggregateReport> = std::thread::scope(|s| {
        let handles: Vec<_> = targets.iter().map(|t| s.spawn(|| run_one(t, &sh))).collect();
        handles
            .into_iter()
            .zip(&targets)
            .map(|(h, t)| {
                h.join().unwrap_or_else(|_| AggregateReport {
                    name: t.name.clone(),
                    url: t.url.clone(),
                    steps: vec![StepResult {
                        step: "GetVersion",
                        outcome: Outcome::Failed,
                        seconds: 0.0,
                        error: "internal error".into(),
                    }],
                    cleanup: "unknown".into(),
                    left_allocated: true,
                })
            })
            .collect()
    });
    if let Some(f) = &a.junit {
        std::fs::write(f, junit_report(&reports))
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", f.display())))?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&json_report(&slice, &reports)).unwrap_or_default());
    } else {
        print!("{}", text_report(&slice, &reports));
    }
    Ok(if interrupted() {
        130
    } else if reports.iter().all(AggregateReport::passed) {
        0
    } else {
        1
    })
}
