//! `vnsnap`: the experimenter's command line for the snapshot extension of the AM API
//! (`docs/am-api-extension.md`, section "The vnsnap CLI").
//!
//! [`parse_args`] → [`Settings::resolve`] (cert, key, credentials, AM URL; from flags or an
//! omni_config) → [`run`] (one command over [`crate::client::XmlRpcClient`]). Every failure is
//! a [`CliError`] printed as one line by [`main`].

pub mod config;
pub mod output;
pub mod smoke;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::client::XmlRpcClient;
use crate::xmlrpc::Value;
pub use config::{parse_credential, OmniConfig};
pub use output::{error_line, geni_code_name, CliError};
use output::{geni_value, human_bytes, table, text, to_json};

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vnsnap",
    version,
    about = "Snapshots of GENI slices at AMs with the vnsnap extension",
    after_help = "Identity and credentials are the files omni uses: --cert/--key (or an omni_config: \
                  [omni] default_cf, [<cf>] cert=, key=) and the slice credential (--cred, alias \
                  --slicecredfile)."
)]
pub struct Cli {
    /// AM URL (https://host:port/am/3.0), or a nickname of the omni_config's [aggregate_nicknames].
    #[arg(long = "am", short = 'a', global = true, value_name = "URL")]
    pub am: Option<String>,
    /// Experimenter certificate (PEM; may hold the key too).
    #[arg(long, global = true, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Experimenter private key (PEM, unencrypted).
    #[arg(long, global = true, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Credential file (XML, or omni's JSON); repeatable. The slice credential is needed.
    #[arg(long = "cred", visible_alias = "slicecredfile", global = true, value_name = "FILE")]
    pub cred: Vec<PathBuf>,
    /// omni_config to take cert and key (and AM nicknames) from (default ~/.gcf/omni_config
    /// when --cert is not given).
    #[arg(long = "omni-config", short = 'c', global = true, value_name = "PATH")]
    pub omni_config: Option<PathBuf>,
    /// Framework section of the omni_config (default: [omni] default_cf).
    #[arg(long, short = 'f', global = true, value_name = "CF")]
    pub framework: Option<String>,
    /// Machine-readable JSON on stdout, no progress bar.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up waiting for a snapshot or restore after this many seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 3600)]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Take a consistent live snapshot of the whole slice; waits, prints its URN.
    Snapshot {
        /// Slice URN.
        slice_urn: String,
        /// Snapshot name (1-64 of [A-Za-z0-9_-], unique in the slice).
        #[arg(long)]
        name: String,
    },
    /// Restore the whole slice to a complete snapshot; waits until the VMs run.
    Restore {
        /// Slice URN.
        slice_urn: String,
        /// Snapshot URN.
        snapshot_urn: String,
        /// What the guests' wall clocks read once restored: `wall` (the host's time) or
        /// `frozen` (the time of the snapshot's cut, as if no time had passed).
        #[arg(long, default_value = "wall", value_parser = ["wall", "frozen"])]
        clock: String,
    },
    /// List the slice's snapshots.
    Snapshots {
        /// Slice URN.
        slice_urn: String,
    },
    /// Describe one snapshot (VMs, pauses, sizes).
    SnapshotInfo {
        /// Snapshot URN.
        snapshot_urn: String,
    },
    /// Delete a snapshot.
    DeleteSnapshot {
        /// Snapshot URN.
        snapshot_urn: String,
    },
    /// Status of the slice's slivers (including snapshot/restore progress).
    Status {
        /// Slice URN.
        slice_urn: String,
    },
    /// Federation smoke test: the whole sliver life cycle of a one-VM slice at each aggregate,
    /// in parallel, each step timed; the snapshot extension where advertised. Cleans up.
    Smoke(smoke::SmokeArgs),
}

/// Parses a command line (`args[0]` is the program name).
pub fn parse_args<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::error::ErrorKind;
    let cli = Cli::try_parse_from(args).map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => CliError::Help(e.to_string()),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => CliError::Usage(
            "no command given (snapshot, restore, snapshots, snapshot-info, delete-snapshot, status, smoke)".into(),
        ),
        _ => {
            // The first paragraph of clap's message (what is wrong), without usage and tips.
            let s = e.to_string();
            let para: Vec<&str> =
                s.lines().map(str::trim).skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).collect();
            let msg = para.join(" ");
            let msg = msg.trim_start_matches("error:").trim();
            CliError::Usage(if msg.is_empty() { "bad arguments".into() } else { msg.to_string() })
        }
    })?;
    check_command(&cli.command)?;
    Ok(cli)
}

fn urn_kind(urn: &str) -> Option<&str> {
    let rest = urn.strip_prefix("urn:publicid:IDN+")?;
    let mut parts = rest.split('+');
    let (_auth, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    (!name.is_empty()).then_some(kind)
}

/// Checks URN and name arguments before anything is sent.
pub fn check_command(c: &Command) -> Result<(), CliError> {
    let slice = |u: &str| match urn_kind(u) {
        Some("slice") => Ok(()),
        _ => Err(CliError::Usage(format!("not a slice URN: {u:?} (urn:publicid:IDN+AUTHORITY+slice+NAME)"))),
    };
    let snap = |u: &str| match urn_kind(u) {
        Some("snapshot") => Ok(()),
        _ => Err(CliError::Usage(format!("not a snapshot URN: {u:?} (urn:publicid:IDN+AUTHORITY+snapshot+NAME)"))),
    };
    match c {
        Command::Snapshot { slice_urn, name } => {
            slice(slice_urn)?;
            let ok = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(CliError::Usage(format!("bad snapshot name {name:?}: 1-64 characters of [A-Za-z0-9_-]")));
            }
            Ok(())
        }
        Command::Restore { slice_urn, snapshot_urn, .. } => {
            slice(slice_urn)?;
            snap(snapshot_urn)
        }
        Command::Snapshots { slice_urn } | Command::Status { slice_urn } => slice(slice_urn),
        Command::SnapshotInfo { snapshot_urn } | Command::DeleteSnapshot { snapshot_urn } => snap(snapshot_urn),
        Command::Smoke(a) => match &a.slice {
            Some(s) => slice(s),
            None => Ok(()),
        },
    }
}

/// The certificate and key files (and the omni_config, if one is read): flags first, else the
/// omni_config (`--omni-config`, else `default_omni` when no `--cert` is given).
pub fn identity_files(
    cli: &Cli,
    default_omni: Option<PathBuf>,
) -> Result<(PathBuf, Option<PathBuf>, Option<OmniConfig>), CliError> {
    let omni_path = cli.omni_config.clone().or(if cli.cert.is_none() { default_omni } else { None });
    let omni = match &omni_path {
        Some(p) => Some(OmniConfig::load(p).map_err(CliError::Usage)?),
        None => None,
    };
    let (cert, key) = match (&cli.cert, &omni) {
        (Some(c), _) => (c.clone(), cli.key.clone()),
        (None, Some(o)) => {
            let (c, k) = o.cert_key(cli.framework.as_deref()).map_err(CliError::Usage)?;
            (c, cli.key.clone().or(k))
        }
        (None, None) => {
            return Err(CliError::Usage("no certificate: give --cert and --key, or --omni-config".into()));
        }
    };
    Ok((cert, key, omni))
}

/// The credential structs of credential files (XML or omni's JSON).
pub fn read_credentials(files: &[PathBuf]) -> Result<Vec<Value>, CliError> {
    let mut creds = Vec::new();
    for f in files {
        let t = std::fs::read_to_string(f)
            .map_err(|e| CliError::Usage(format!("cannot read credential {}: {e}", f.display())))?;
        creds.extend(parse_credential(&t).map_err(|e| CliError::Usage(format!("{}: {e}", f.display())))?);
    }
    Ok(creds)
}

/// What a run needs, resolved from the command line and the omni_config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// AM endpoint URL.
    pub am_url: String,
    /// Certificate (chain) PEM file.
    pub cert: PathBuf,
    /// Key PEM file (`None`: in the certificate file).
    pub key: Option<PathBuf>,
    /// Credential structs.
    pub creds: Vec<Value>,
}

impl Settings {
    /// Resolves flags against `omni_config` (`--omni-config`, else `default_omni` when no
    /// `--cert` is given).
    pub fn resolve(cli: &Cli, default_omni: Option<PathBuf>) -> Result<Settings, CliError> {
        let (cert, key, omni) = identity_files(cli, default_omni)?;
        let am = cli.am.clone().ok_or_else(|| CliError::Usage("no AM: give --am URL".into()))?;
        let am_url = if am.contains("://") {
            am
        } else {
            omni.as_ref()
                .and_then(|o| o.aggregate_url(&am))
                .ok_or_else(|| CliError::Usage(format!("--am {am:?} is neither a URL nor an aggregate nickname")))?
        };
        if cli.cred.is_empty() {
            return Err(CliError::Usage(
                "no credential: give --cred FILE (the slice credential, as omni's --slicecredfile)".into(),
            ));
        }
        let creds = read_credentials(&cli.cred)?;
        Ok(Settings { am_url, cert, key, creds })
    }

    /// The TLS identity PEM: certificate file, then the key file.
    pub fn identity_pem(&self) -> Result<Vec<u8>, CliError> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).map_err(|e| CliError::Usage(format!("cannot read {what} {}: {e}", p.display())))
        };
        let mut pem = read(&self.cert, "certificate")?;
        if let Some(k) = &self.key {
            if *k != self.cert {
                pem.push(b'\n');
                pem.extend(read(k, "key")?);
            }
        }
        if !String::from_utf8_lossy(&pem).contains("PRIVATE KEY-----") {
            return Err(CliError::Usage(format!(
                "no private key: {} holds none and no --key was given",
                self.cert.display()
            )));
        }
        if String::from_utf8_lossy(&pem).contains("ENCRYPTED PRIVATE KEY")
            || String::from_utf8_lossy(&pem).contains("Proc-Type: 4,ENCRYPTED")
        {
            return Err(CliError::Usage("the private key is encrypted: give an unencrypted copy with --key".into()));
        }
        Ok(pem)
    }
}

/// A connection to the AM with the credentials.
#[derive(Debug)]
pub struct Am {
    client: XmlRpcClient,
    creds: Value,
}

fn empty() -> Value {
    Value::Struct(Default::default())
}

impl Am {
    /// Connects (lazily) with the settings' identity.
    pub fn new(s: &Settings) -> Result<Am, CliError> {
        let pem = s.identity_pem()?;
        let client =
            XmlRpcClient::new(&s.am_url, &pem, Duration::from_secs(300)).map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Am { client, creds: Value::Array(s.creds.clone()) })
    }

    /// Calls a GENI method and unpacks the reply.
    pub fn call(&self, method: &str, first: Value, options: Value) -> Result<Value, CliError> {
        let reply = self.client.call(method, &[first, self.creds.clone(), options])?;
        geni_value(method, reply)
    }

    fn poa(&self, slice: &str, action: &str, options: Value) -> Result<Value, CliError> {
        let urns = Value::Array(vec![Value::str(slice)]);
        let reply =
            self.client.call("PerformOperationalAction", &[urns, self.creds.clone(), Value::str(action), options])?;
        geni_value("PerformOperationalAction", reply)
    }

    fn status(&self, slice: &str) -> Result<Value, CliError> {
        self.call("Status", Value::Array(vec![Value::str(slice)]), empty())
    }
}

fn slivers(status: &Value) -> Vec<Value> {
    status.get("geni_slivers").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default()
}

/// Polls `Status` until no sliver is in `busy` any more; shows progress unless `quiet`.
fn wait_done(am: &Am, slice: &str, busy: &str, what: &str, quiet: bool, timeout: u64) -> Result<Vec<Value>, CliError> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos:>3}% {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_prefix(what.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let start = Instant::now();
    let result = loop {
        let sl = match am.status(slice) {
            Ok(st) => slivers(&st),
            Err(e) => break Err(e),
        };
        let running: Vec<&Value> = sl.iter().filter(|s| text(s, "geni_operational_status") == busy).collect();
        if running.is_empty() {
            break Ok(sl);
        }
        let progress = text(running[0], "geni_resource_status");
        if let Some(p) = output::progress_percent(&progress) {
            bar.set_position(p);
        }
        bar.set_message(progress);
        if start.elapsed() > Duration::from_secs(timeout) {
            break Err(CliError::Failed(format!("{what} still running after {timeout} s (see vnsnap status)")));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    if result.is_ok() {
        bar.set_position(100);
    }
    bar.finish_and_clear();
    result
}

/// The `geni_error`s of slivers, `client: error` joined.
fn sliver_errors(sl: &[Value]) -> Option<String> {
    let errs: Vec<String> = sl
        .iter()
        .filter(|s| !text(s, "geni_error").trim().is_empty())
        // A restored VM whose clock was not set runs all the same: not an error.
        .filter(|s| !text(s, "geni_error").starts_with(crate::snapshot::CLOCK_NOT_SET))
        .map(|s| format!("{}: {}", text(s, "geni_sliver_urn"), text(s, "geni_error")))
        .collect();
    (!errs.is_empty()).then(|| errs.join("; "))
}

/// The slivers a restore left with their guest's clock not set: (sliver URN, client id,
/// reason).
fn clocks_not_set(sl: &[Value]) -> Vec<(String, String, String)> {
    sl.iter()
        .filter_map(|s| {
            let why = text(s, "geni_error").strip_prefix(crate::snapshot::CLOCK_NOT_SET)?.to_string();
            Some((text(s, "geni_sliver_urn"), text(s, "geni_client_id"), why))
        })
        .collect()
}

fn without_rspec(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Struct(m) = &mut v {
        m.remove("geni_rspec");
    }
    v
}

fn print_json(j: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(j).unwrap_or_default());
}

/// Runs one command; prints its result on stdout.
pub fn run(cli: &Cli, s: &Settings) -> Result<(), CliError> {
    let am = Am::new(s)?;
    let json = cli.json;
    match &cli.command {
        Command::Snapshot { slice_urn, name } => {
            let v =
                am.poa(slice_urn, "vnsnap_snapshot", Value::structure([("vnsnap_snapshot_name", Value::str(name))]))?;
            let snap = v
                .as_array()
                .unwrap_or_default()
                .iter()
                .map(|s| text(s, "vnsnap_snapshot_urn"))
                .find(|u| !u.is_empty())
                .ok_or_else(|| CliError::Failed("the AM returned no vnsnap_snapshot_urn".into()))?;
            let sl = wait_done(&am, slice_urn, "vnsnap_snapshotting", "snapshot", json, cli.timeout)?;
            let d = am.call("DescribeSnapshot", Value::str(&snap), empty())?;
            if text(&d, "vnsnap_state") != "complete" {
                let why = [text(&d, "vnsnap_error"), sliver_errors(&sl).unwrap_or_default()]
                    .into_iter()
                    .find(|e| !e.trim().is_empty())
                    .unwrap_or_else(|| text(&d, "vnsnap_state"));
                return Err(CliError::Failed(format!("snapshot {snap} failed: {why}")));
            }
            if json {
                print_json(&serde_json::json!({
                    "snapshot_urn": snap,
                    "snapshot": to_json(&without_rspec(&d)),
                    "slivers": to_json(&Value::Array(sl)),
                }));
            } else {
                println!("{snap}");
            }
        }
        Command::Restore { slice_urn, snapshot_urn, clock } => {
            let opts = Value::structure([
                (crate::snapshot::OPT_URN, Value::str(snapshot_urn)),
                (crate::snapshot::OPT_CLOCK, Value::str(clock)),
            ]);
            am.poa(slice_urn, "vnsnap_restore", opts)?;
            let sl = wait_done(&am, slice_urn, "vnsnap_restoring", "restore", json, cli.timeout)?;
            let clock_not_set = clocks_not_set(&sl);
            let not_ready: Vec<&Value> =
                sl.iter().filter(|s| text(s, "geni_operational_status") != "geni_ready").collect();
            if let Some(e) = sliver_errors(&sl) {
                return Err(CliError::Failed(format!("restore of {slice_urn} to {snapshot_urn} failed: {e}")));
            }
            if !not_ready.is_empty() {
                let l: Vec<String> = not_ready
                    .iter()
                    .map(|s| format!("{} {}", text(s, "geni_sliver_urn"), text(s, "geni_operational_status")))
                    .collect();
                return Err(CliError::Failed(format!("restore of {slice_urn}: slivers not ready: {}", l.join(", "))));
            }
            if json {
                let unset: Vec<_> = clock_not_set
                    .iter()
                    .map(|(urn, id, why)| serde_json::json!({"sliver_urn": urn, "client_id": id, "reason": why}))
                    .collect();
                print_json(&serde_json::json!({
                    "slice_urn": slice_urn, "snapshot_urn": snapshot_urn, "clock": clock,
                    "clock_not_set": unset, "slivers": to_json(&Value::Array(sl)),
                }));
            } else {
                let note = if clock == "wall" { String::new() } else { format!(" (clock {clock})") };
                println!("restored {slice_urn} to {snapshot_urn}{note}");
                for (urn, id, why) in &clock_not_set {
                    println!("clock not set: {} ({urn}): {why}", if id.is_empty() { "?" } else { id });
                }
            }
        }
        Command::Snapshots { slice_urn } => {
            let v = am.call("ListSnapshots", Value::str(slice_urn), empty())?;
            let list = v.as_array().unwrap_or_default();
            if json {
                print_json(&to_json(&v));
            } else if list.is_empty() {
                println!("no snapshots of {slice_urn}");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        let state = match text(s, "vnsnap_error") {
                            e if e.is_empty() => text(s, "vnsnap_state"),
                            e => format!("{} ({})", text(s, "vnsnap_state"), output::one_line(&e)),
                        };
                        vec![
                            text(s, "vnsnap_snapshot_name"),
                            state,
                            text(s, "vnsnap_created"),
                            output::int(s, "vnsnap_bytes").map(human_bytes).unwrap_or_default(),
                            text(s, "vnsnap_snapshot_urn"),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "STATE", "CREATED", "SIZE", "URN"], &rows));
            }
        }
        Command::SnapshotInfo { snapshot_urn } => {
            let d = am.call("DescribeSnapshot", Value::str(snapshot_urn), empty())?;
            if json {
                print_json(&to_json(&d));
            } else {
                print!("{}", describe_text(&d));
            }
        }
        Command::DeleteSnapshot { snapshot_urn } => {
            am.call("DeleteSnapshot", Value::str(snapshot_urn), empty())?;
            if json {
                print_json(&serde_json::json!({ "deleted": snapshot_urn }));
            } else {
                println!("deleted {snapshot_urn}");
            }
        }
        Command::Smoke(_) => {
            return Err(CliError::Usage("smoke runs through cli::main, not run".into()));
        }
        Command::Status { slice_urn } => {
            let st = am.status(slice_urn)?;
            if json {
                print_json(&to_json(&st));
            } else {
                let rows: Vec<Vec<String>> = slivers(&st)
                    .iter()
                    .map(|s| {
                        vec![
                            text(s, "geni_sliver_urn"),
                            text(s, "geni_allocation_status"),
                            text(s, "geni_operational_status"),
                            text(s, "geni_resource_status"),
                            output::one_line(&text(s, "geni_error")),
                        ]
                    })
                    .collect();
                println!("slice {}", text(&st, "geni_urn"));
                print!("{}", table(&["SLIVER", "ALLOCATION", "OPERATIONAL", "PROGRESS", "ERROR"], &rows));
            }
        }
    }
    Ok(())
}

/// The text form of a `DescribeSnapshot` struct.
pub fn describe_text(d: &Value) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| {
        if !v.is_empty() {
            out.push_str(&format!("{k:<16}{v}\n"));
        }
    };
    kv("urn", text(d, "vnsnap_snapshot_urn"));
    kv("name", text(d, "vnsnap_snapshot_name"));
    kv("slice", text(d, "geni_urn"));
    kv("state", text(d, "vnsnap_state"));
    kv("error", output::one_line(&text(d, "vnsnap_error")));
    kv("created", text(d, "vnsnap_created"));
    kv("owner", text(d, "vnsnap_owner"));
    kv("size", output::int(d, "vnsnap_bytes").map(human_bytes).unwrap_or_default());
    kv("format", text(d, "vnsnap_format_version"));
    kv("epoch", text(d, "vnsnap_epoch"));
    kv("cut skew", output::int(d, "vnsnap_skew_us").map(|u| format!("{u} us")).unwrap_or_default());
    kv("total", output::int(d, "vnsnap_total_ms").map(|u| format!("{u} ms")).unwrap_or_default());
    let frames = ["vnsnap_frames_held", "vnsnap_frames_recorded", "vnsnap_frames_dropped"]
        .iter()
        .map(|k| output::int(d, k))
        .collect::<Option<Vec<i64>>>();
    if let Some(f) = frames {
        kv("frames", format!("{} held, {} recorded, {} dropped", f[0], f[1], f[2]));
    }
    let vms = d.get("vnsnap_vms").and_then(Value::as_array).unwrap_or_default();
    if !vms.is_empty() {
        let rows: Vec<Vec<String>> = vms
            .iter()
            .map(|v| {
                vec![
                    text(v, "geni_client_id"),
                    text(v, "vnsnap_host"),
                    output::int(v, "vnsnap_pause_us").map(|u| format!("{u} us")).unwrap_or_default(),
                    output::int(v, "vnsnap_memory_bytes").map(human_bytes).unwrap_or_default(),
                    output::int(v, "vnsnap_disk_bytes").map(human_bytes).unwrap_or_default(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["VM", "HOST", "PAUSE", "MEMORY", "DISK"], &rows));
    }
    out
}

/// The whole program: parse, resolve, run; one stderr line on failure. Returns the exit code.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let r = parse_args(args).and_then(|cli| {
        if let Command::Smoke(a) = &cli.command {
            return smoke::run(&cli, a, config::default_omni_config());
        }
        let s = Settings::resolve(&cli, config::default_omni_config())?;
        run(&cli, &s).map(|()| 0)
    });
    match r {
        Ok(code) => code,
        Err(CliError::Help(h)) => {
            print!("{h}");
            0
        }
        Err(e) => {
            eprintln!("{}", error_line(&e));
            e.exit_code()
        }
    }
}
