//! Consistent live snapshots of whole slices, and restore (ARCHITECTURE.md §5).
//!
//! - [`coordinator`]: the slice protocol against the agents (prepare → cut → save → commit,
//!   abort on failure; restore prepare → resume). No AM state: benchmarks call it directly.
//! - [`manifest`]: the versioned JSON manifest of a snapshot, written durably.
//! - [`catalog`]: the SQLite catalog of snapshots and per-slice epochs.
//! - [`api`]: the XML-RPC methods `ListSnapshots`, `DescribeSnapshot`, `DeleteSnapshot`.
//! - this file: the glue into the AM — the POA actions `vnsnap_snapshot` and
//!   `vnsnap_restore`, the slice lock (BUSY), the progress shown by Status, and the clean-up
//!   of snapshots interrupted by an AM crash.
//!
//! Lock discipline: a POA takes the slice lock ([`Jobs::begin`] plus `Am::set_busy`) before
//! it changes anything, and the background task releases it (a drop guard, so a panic
//! releases it too) only after the slivers' states and the catalog entry are final.

pub mod api;
pub mod catalog;
pub mod coordinator;
pub mod manifest;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use vnsnap_proto::client::AgentClient;
use vnsnap_proto::{ClockMode, CutRequest};

use crate::aggregate::action::OpAction;
use crate::aggregate::Am;
use crate::api::args::Options;
use crate::auth::Authorized;
use crate::error::AmError;
use crate::state::{rfc3339, Alloc, Op, Sliver, Transition};
use crate::xmlrpc::Value;
use catalog::{CatalogError, Entry, EntryState, HostDomains};
use coordinator::{HostPart, Progress, RestoreError, RestorePart};
use manifest::{Manifest, ManifestContext, VmEntry};

/// POA option naming a new snapshot.
pub const OPT_NAME: &str = "vnsnap_snapshot_name";
/// POA option naming the snapshot to restore.
pub const OPT_URN: &str = "vnsnap_snapshot_urn";
/// POA option of `vnsnap_restore`: what the guests' wall clocks read once restored, `wall`
/// (the default: the host's time) or `frozen` (the time of the cut, as if no time passed).
pub const OPT_CLOCK: &str = "vnsnap_clock";
/// How a restored sliver's `geni_error` starts when its VM runs restored but its guest's
/// clock was not set (no guest agent answering, a driver without the means); the reason
/// follows. The sliver is ready all the same.
pub const CLOCK_NOT_SET: &str = "Restored, but the guest clock was not set: ";
/// Deadline the agents get for cutting every VM of a host (ms). A safety bound, not the
/// pause (milliseconds): a cut is QMP round trips, which take seconds on a loaded TCG host.
const CUT_DEADLINE_MS: u64 = 30_000;
/// Bound on the clean-up of interrupted snapshots at start-up.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// What holds a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `vnsnap_snapshot`.
    Snapshot,
    /// `vnsnap_restore`.
    Restore,
}

/// A running snapshot or restore of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Which.
    pub kind: JobKind,
    /// The snapshot concerned.
    pub snapshot_urn: String,
    /// Progress text for `geni_resource_status`.
    pub progress: String,
}

/// The slices held by a snapshot or restore, with their progress. In memory only: after a
/// crash, [`recover`] rebuilds the truth from the catalog and the sliver states.
#[derive(Debug, Default)]
pub struct Jobs {
    by_slice: Mutex<HashMap<String, Job>>,
}

impl Jobs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.by_slice.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the slice for `job`; false if a job already holds it.
    pub fn begin(&self, slice: &str, job: Job) -> bool {
        let mut m = self.map();
        let key = slice.to_ascii_lowercase();
        if m.contains_key(&key) {
            return false;
        }
        m.insert(key, job);
        true
    }

    /// Updates the progress text of the slice's job.
    pub fn progress(&self, slice: &str, text: String) {
        if let Some(j) = self.map().get_mut(&slice.to_ascii_lowercase()) {
            j.progress = text;
        }
    }

    /// The job holding a slice.
    pub fn get(&self, slice: &str) -> Option<Job> {
        self.map().get(&slice.to_ascii_lowercase()).cloned()
    }

    /// Frees the slice.
    pub fn end(&self, slice: &str) {
        self.map().remove(&slice.to_ascii_lowercase());
    }
}

/// Holds a slice for a job; dropping it frees the slice (job entry and BUSY flag).
struct SliceLock {
    am: Arc<Am>,
    slice: String,
}

impl SliceLock {
    /// Takes the slice, or answers BUSY.
    fn take(am: &Arc<Am>, slice: &str, job: Job) -> Result<SliceLock, AmError> {
        if am.is_busy(slice) || !am.snapshot_jobs.begin(slice, job) {
            return Err(AmError::Busy(format!("Slice {slice} is busy (snapshot or restore in progress); try again")));
        }
        am.set_busy(slice, true);
        Ok(SliceLock { am: am.clone(), slice: slice.to_string() })
    }
}

impl Drop for SliceLock {
    fn drop(&mut self) {
        self.am.set_busy(&self.slice, false);
        self.am.snapshot_jobs.end(&self.slice);
    }
}

/// The v3 sliver struct, plus `geni_resource_status` (progress) and `vnsnap_snapshot_urn`
/// while a snapshot or restore of its slice runs.
pub fn sliver_value(am: &Am, s: &Sliver) -> Value {
    let mut v = crate::api::v3::sliver_value(s, None);
    if matches!(s.state.op, Op::Snapshotting | Op::Restoring) {
        if let (Some(job), Value::Struct(m)) = (am.snapshot_jobs.get(&s.slice_urn), &mut v) {
            m.insert("geni_resource_status".into(), Value::str(job.progress));
            m.insert("vnsnap_snapshot_urn".into(), Value::str(job.snapshot_urn));
        }
    }
    v
}

fn slivers_value(am: &Am, slivers: &[Sliver]) -> Value {
    Value::Array(slivers.iter().map(|s| sliver_value(am, s)).collect())
}

/// Moves slivers through `event`, saving state and error; slivers that cannot make the move
/// (deleted meanwhile) are left alone.
fn move_slivers(am: &Am, slivers: &[Sliver], event: impl Fn(&Sliver) -> Transition, error: &str) {
    for s in slivers {
        let Ok(Some(now)) = am.db.sliver(&s.urn) else { continue };
        if let Ok(next) = now.state.apply(event(&now)) {
            if let Err(e) = am.db.set_state(&s.urn, next, error) {
                tracing::error!(sliver = %s.urn, error = %e, "saving sliver state");
            }
        }
    }
}

/// PerformOperationalAction `vnsnap_snapshot` / `vnsnap_restore` on a slice. Returns at
/// once with the slivers in their transition state; the work runs in a task.
///
/// Both act on the whole slice, whatever sliver URNs were given: a consistent cut of part of
/// a slice would not be consistent with the rest of it.
pub async fn perform(
    am: &Arc<Am>,
    slice: &str,
    action: OpAction,
    opts: &Options,
    who: &Authorized,
) -> Result<Value, AmError> {
    match action {
        OpAction::Snapshot => start_snapshot(am, slice, opts, who),
        OpAction::Restore => start_restore(am, slice, opts),
        other => Err(AmError::Internal(format!("{other:?} is not a snapshot action"))),
    }
}

/// Every live sliver of the slice, refusing (UNSUPPORTED, listing them all) those that
/// cannot take `event` now.
fn preflight(am: &Am, slice: &str, event: Transition, what: &str) -> Result<Vec<Sliver>, AmError> {
    let slivers = am.db.slice_slivers(slice)?;
    if slivers.is_empty() {
        return Err(AmError::SearchFailed(format!("Slice {slice} has no resources here")));
    }
    let offenders: Vec<String> = slivers
        .iter()
        .filter(|s| s.state.alloc != Alloc::Provisioned || s.state.apply(event).is_err())
        .map(|s| format!("{} ({} / {})", s.client_id, s.state.alloc.geni(), s.state.op.geni()))
        .collect();
    if !offenders.is_empty() {
        return Err(AmError::Unsupported(format!(
            "{what} needs every VM of the slice {}: {}",
            match event {
                Transition::SnapshotBegin => "geni_ready",
                _ => "provisioned and not in a transition",
            },
            offenders.join(", ")
        )));
    }
    Ok(slivers)
}

fn hosts_of(slivers: &[Sliver]) -> Vec<HostDomains> {
    let mut m: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in slivers {
        m.entry(s.host.as_str()).or_default().push(s.domain.clone());
    }
    m.into_iter().map(|(h, d)| HostDomains { host: h.to_string(), domains: d }).collect()
}

fn start_snapshot(am: &Arc<Am>, slice: &str, opts: &Options, who: &Authorized) -> Result<Value, AmError> {
    // Preflight, in order: arguments, slice open, every VM ready, name free. Nothing has
    // changed when any of them refuses.
    let name = match opts.0.get(OPT_NAME) {
        None => return Err(AmError::BadArgs(format!("Option {OPT_NAME} is required"))),
        Some(v) => v.as_str().ok_or_else(|| AmError::BadArgs(format!("{OPT_NAME} must be a string")))?.to_string(),
    };
    catalog::check_name(&name).map_err(AmError::BadArgs)?;
    am.check_open(slice)?;
    let slivers = preflight(am, slice, Transition::SnapshotBegin, "vnsnap_snapshot")?;
    let id = uuid::Uuid::new_v4().to_string();
    let entry = Entry {
        urn: catalog::snapshot_urn(&am.cfg.authority, slice, &name, &id),
        id,
        slice_urn: slice.to_string(),
        name,
        owner: who.user_urn.clone(),
        state: EntryState::Pending,
        created: rfc3339(Utc::now()),
        manifest: String::new(),
        bytes: 0,
        error: String::new(),
        hosts: hosts_of(&slivers),
    };
    let lock = SliceLock::take(
        am,
        slice,
        Job { kind: JobKind::Snapshot, snapshot_urn: entry.urn.clone(), progress: Progress::Preparing.text() },
    )?;
    let conn = am.db.conn();
    match catalog::insert_pending(&conn, &entry) {
        Ok(()) => {}
        Err(CatalogError::NameTaken { slice, name }) => {
            return Err(AmError::AlreadyExists(format!("Slice {slice} already has a snapshot named {name:?}")))
        }
        Err(CatalogError::Db(e)) => return Err(e.into()),
        Err(e) => return Err(AmError::Internal(e.to_string())),
    }
    drop(conn);
    move_slivers(am, &slivers, |_| Transition::SnapshotBegin, "");
    let slivers = am.db.slice_slivers(slice)?;
    tracing::info!(slice, snapshot = %entry.urn, id = %entry.id, "snapshot started");
    let (am2, job_slivers) = (am.clone(), slivers.clone());
    tokio::spawn(async move { snapshot_task(am2, lock, entry, job_slivers).await });
    Ok(slivers_value(am, &slivers))
}

/// The background part of `vnsnap_snapshot`: run the protocol, write the manifest, finish
/// the catalog entry, put the slivers back to ready (with the error, if any), free the slice.
async fn snapshot_task(am: Arc<Am>, lock: SliceLock, entry: Entry, slivers: Vec<Sliver>) {
    let r = take_snapshot(&am, &entry, &slivers).await;
    let error = match &r {
        Ok(bytes) => {
            tracing::info!(snapshot = %entry.urn, bytes, "snapshot complete");
            String::new()
        }
        Err(e) => {
            tracing::warn!(snapshot = %entry.urn, error = %e, "snapshot failed");
            if let Err(e2) = catalog::mark_failed(&am.db.conn(), &entry.id, &e.to_string()) {
                tracing::error!(snapshot = %entry.urn, error = %e2, "marking snapshot failed");
            }
            format!("Snapshot {} failed: {e}", entry.name)
        }
    };
    // The VMs never stopped (beyond the cut's milliseconds): ready again either way.
    move_slivers(&am, &slivers, |_| Transition::SnapshotDone, &error);
    drop(lock);
}

/// Runs a snapshot to a complete catalog entry; returns the image bytes.
async fn take_snapshot(am: &Arc<Am>, entry: &Entry, slivers: &[Sliver]) -> Result<u64, AmError> {
    let mut parts: Vec<HostPart> = Vec::new();
    let mut max_port_epoch = 0u64;
    for h in &entry.hosts {
        let client = am.agents.client(&h.host)?.clone();
        for d in &h.domains {
            let info = client.domain(d).await?;
            max_port_epoch = max_port_epoch.max(info.ports.iter().map(|p| p.epoch).max().unwrap_or(0));
        }
        parts.push(HostPart { client, host: h.host.clone(), domains: h.domains.clone() });
    }
    let epoch = catalog::next_epoch(&am.db.conn(), &entry.slice_urn, max_port_epoch + 1)?;
    let req = CutRequest { deadline_ms: Some(CUT_DEADLINE_MS), ..Default::default() };
    let (am2, slice) = (am.clone(), entry.slice_urn.clone());
    let progress = move |p: Progress| am2.snapshot_jobs.progress(&slice, p.text());
    let snap = coordinator::snapshot_slice(&parts, &entry.id, epoch, &req, progress)
        .await
        .map_err(|e| AmError::Agent(e.to_string()))?;
    // Every host committed. From here a failure must delete the snapshot on every host, or
    // the files would outlive a catalog entry that says failed.
    let undo = |e: AmError| async {
        let hosts: Vec<(String, AgentClient)> = parts.iter().map(|p| (p.host.clone(), p.client.clone())).collect();
        let _ = coordinator::delete_snapshot(&hosts, &entry.id, true).await;
        e
    };
    let rspec = match am.slice_manifest(&entry.slice_urn, slivers) {
        Ok(r) => r,
        Err(e) => return Err(undo(e).await),
    };
    let bytes = snap.image_bytes;
    let ctx = ManifestContext {
        snapshot_urn: entry.urn.clone(),
        name: entry.name.clone(),
        slice_urn: entry.slice_urn.clone(),
        owner: entry.owner.clone(),
        created: entry.created.clone(),
        manifest_rspec: rspec,
        vms: slivers
            .iter()
            .map(|s| VmEntry {
                client_id: s.client_id.clone(),
                sliver_urn: s.urn.clone(),
                host: s.host.clone(),
                domain: s.domain.clone(),
            })
            .collect(),
    };
    let m = Manifest::new(ctx, snap);
    let dir = am.cfg.state_dir.clone();
    let written = tokio::task::spawn_blocking(move || manifest::write_durable(&dir, &m))
        .await
        .map_err(|e| AmError::Internal(e.to_string()))
        .and_then(|r| r.map_err(|e| AmError::Internal(e.to_string())));
    let path = match written {
        Ok(p) => p,
        Err(e) => return Err(undo(e).await),
    };
    // The manifest is durable: only now may the entry say complete.
    let marked = catalog::mark_complete(&am.db.conn(), &entry.id, &path.to_string_lossy(), bytes);
    if let Err(e) = marked {
        let _ = manifest::remove(&path);
        return Err(undo(AmError::Internal(e.to_string())).await);
    }
    Ok(bytes)
}

/// The `vnsnap_clock` option (absent: `wall`).
fn clock_option(opts: &Options) -> Result<ClockMode, AmError> {
    let Some(v) = opts.0.get(OPT_CLOCK) else { return Ok(ClockMode::Wall) };
    v.as_str()
        .and_then(ClockMode::parse)
        .ok_or_else(|| AmError::BadArgs(format!("{OPT_CLOCK} must be \"wall\" or \"frozen\"")))
}

fn start_restore(am: &Arc<Am>, slice: &str, opts: &Options) -> Result<Value, AmError> {
    let urn = match opts.0.get(OPT_URN) {
        None => return Err(AmError::BadArgs(format!("Option {OPT_URN} is required"))),
        Some(v) => v.as_str().ok_or_else(|| AmError::BadArgs(format!("{OPT_URN} must be a string")))?.to_string(),
    };
    let clock = clock_option(opts)?;
    let entry = catalog::by_urn(&am.db.conn(), &urn)?
        .filter(|e| e.slice_urn.eq_ignore_ascii_case(slice))
        .ok_or_else(|| AmError::SearchFailed(format!("No snapshot {urn} of slice {slice}")))?;
    if entry.state != EntryState::Complete {
        return Err(AmError::BadArgs(format!("Snapshot {urn} is {}, not complete", entry.state.as_str())));
    }
    am.check_open(slice)?;
    let m = manifest::read(std::path::Path::new(&entry.manifest)).map_err(|e| match e {
        manifest::ManifestError::UnsupportedVersion { .. } => AmError::BadVersion(e.to_string()),
        e => AmError::Internal(format!("Snapshot {urn}: {e}")),
    })?;
    let slivers = preflight(am, slice, Transition::RestoreBegin, "vnsnap_restore")?;
    // The snapshot restores the domains it holds in place: the slice must still be made of
    // exactly those VMs, on the same hosts.
    let mut now: Vec<(&str, &str)> = slivers.iter().map(|s| (s.host.as_str(), s.domain.as_str())).collect();
    let mut then: Vec<(&str, &str)> =
        m.hosts.iter().flat_map(|h| h.domains.iter().map(move |d| (h.host.as_str(), d.domain.as_str()))).collect();
    now.sort_unstable();
    then.sort_unstable();
    if now != then {
        return Err(AmError::Unsupported(format!(
            "Slice {slice} no longer has the VMs of snapshot {urn} (it was changed since); it cannot be restored in place"
        )));
    }
    let lock = SliceLock::take(
        am,
        slice,
        Job { kind: JobKind::Restore, snapshot_urn: entry.urn.clone(), progress: Progress::RestorePreparing.text() },
    )?;
    let before: Vec<(String, Op)> = slivers.iter().map(|s| (s.urn.clone(), s.state.op)).collect();
    move_slivers(am, &slivers, |_| Transition::RestoreBegin, "");
    let slivers = am.db.slice_slivers(slice)?;
    tracing::info!(slice, snapshot = %entry.urn, "restore started");
    let (am2, job_slivers) = (am.clone(), slivers.clone());
    tokio::spawn(async move { restore_task(am2, lock, entry, m, job_slivers, before, clock).await });
    Ok(slivers_value(am, &slivers))
}

/// The background part of `vnsnap_restore`.
async fn restore_task(
    am: Arc<Am>,
    lock: SliceLock,
    entry: Entry,
    m: Manifest,
    slivers: Vec<Sliver>,
    before: Vec<(String, Op)>,
    clock: ClockMode,
) {
    // The restored ports need an epoch above every one the slice's ports use now.
    let mut max_port_epoch =
        m.hosts.iter().flat_map(|h| h.domains.iter().flat_map(|d| d.epochs.iter().copied())).max().unwrap_or(0);
    for h in &m.hosts {
        if let Ok(c) = am.agents.client(&h.host) {
            for d in &h.domains {
                if let Ok(info) = c.domain(&d.domain).await {
                    max_port_epoch = max_port_epoch.max(info.ports.iter().map(|p| p.epoch).max().unwrap_or(0));
                }
            }
        }
    }
    let epoch = match catalog::next_epoch(&am.db.conn(), &entry.slice_urn, max_port_epoch + 1) {
        Ok(e) => e,
        Err(e) => {
            move_slivers(&am, &slivers, |s| back_to(&before, s), &format!("Restore of {} failed: {e}", entry.name));
            return;
        }
    };
    let mut parts = Vec::new();
    for h in &m.hosts {
        match am.agents.client(&h.host) {
            Ok(c) => parts.push(RestorePart {
                client: c.clone(),
                host: h.host.clone(),
                snapshot_id: entry.id.clone(),
                domains: h.domains.clone(),
                epoch,
            }),
            Err(e) => {
                let error = format!("Restore of {} failed: {e}", entry.name);
                move_slivers(&am, &slivers, |s| back_to(&before, s), &error);
                return;
            }
        }
    }
    let restore_id = uuid::Uuid::new_v4().to_string();
    let (am2, slice) = (am.clone(), entry.slice_urn.clone());
    let progress = move |p: Progress| am2.snapshot_jobs.progress(&slice, p.text());
    match coordinator::restore_slice_clock(&parts, &restore_id, clock, progress).await {
        Ok(r) => {
            tracing::info!(snapshot = %entry.urn, total_ms = r.total_ms, clock = clock.as_str(), "restore done");
            // A VM whose clock was not set runs restored all the same: its sliver says so in
            // its error text, which Status shows.
            for s in &slivers {
                let note = r
                    .clock_not_set
                    .iter()
                    .find(|c| c.domain == s.domain)
                    .map(|c| format!("{CLOCK_NOT_SET}{}", c.reason))
                    .unwrap_or_default();
                move_slivers(&am, std::slice::from_ref(s), |_| Transition::SnapshotDone, &note);
            }
        }
        Err(RestoreError::Resume { failed, resumed }) => {
            // Part of the slice runs restored, the rest does not: no way back to the state
            // before; the failed hosts' VMs are marked failed (geni_restart or another
            // restore recovers them).
            let error = format!("Restore of {} failed: resume failed on {failed:?}", entry.name);
            tracing::error!(snapshot = %entry.urn, ?failed, "restore resume failed");
            let ok: Vec<Sliver> = slivers.iter().filter(|s| resumed.contains(&s.host)).cloned().collect();
            let bad: Vec<Sliver> = slivers.iter().filter(|s| !resumed.contains(&s.host)).cloned().collect();
            move_slivers(&am, &ok, |_| Transition::SnapshotDone, "");
            move_slivers(&am, &bad, |_| Transition::Fail, &error);
        }
        Err(e) => {
            // Nothing changed on any host (a corrupt image, an unreachable agent).
            tracing::warn!(snapshot = %entry.urn, error = %e, "restore refused");
            let error = format!("Restore of {} failed: {e}", entry.name);
            move_slivers(&am, &slivers, |s| back_to(&before, s), &error);
        }
    }
    drop(lock);
}

/// The transition that puts a sliver back in its state before a refused restore.
fn back_to(before: &[(String, Op)], s: &Sliver) -> Transition {
    match before.iter().find(|(u, _)| u == &s.urn).map(|(_, op)| *op) {
        Some(op) if op != Op::Ready => Transition::Observed(op),
        _ => Transition::SnapshotDone,
    }
}

/// Start-up clean-up after a crash: every `pending` snapshot is marked failed and undone on
/// its hosts (best effort); slivers left `vnsnap_snapshotting` are ready again (their VMs
/// never stopped); slivers left `vnsnap_restoring` are marked failed, since the restore may
/// have stopped anywhere. Run before the AM serves calls.
pub async fn recover(am: &Arc<Am>) {
    let work = async {
        let pending = match catalog::pending(&am.db.conn()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading pending snapshots");
                Vec::new()
            }
        };
        for e in pending {
            tracing::warn!(snapshot = %e.urn, "snapshot interrupted by an AM restart; marking it failed");
            if let Err(err) = catalog::mark_failed(&am.db.conn(), &e.id, "Interrupted by an AM restart") {
                tracing::error!(snapshot = %e.urn, error = %err, "marking snapshot failed");
            }
            if let Ok(p) = manifest::path_of(&am.cfg.state_dir, &e.id) {
                let _ = manifest::remove(&p);
            }
            let hosts: Vec<(String, AgentClient)> = e
                .hosts
                .iter()
                .filter_map(|h| am.agents.client(&h.host).ok().map(|c| (h.host.clone(), c.clone())))
                .collect();
            for (host, err) in coordinator::delete_snapshot(&hosts, &e.id, false).await {
                tracing::warn!(snapshot = %e.urn, %host, error = %err, "clean-up of interrupted snapshot");
            }
        }
        let live = am.db.live_slivers().unwrap_or_default();
        let snapshotting: Vec<Sliver> = live.iter().filter(|s| s.state.op == Op::Snapshotting).cloned().collect();
        move_slivers(am, &snapshotting, |_| Transition::SnapshotDone, "A snapshot was interrupted by an AM restart");
        let restoring: Vec<Sliver> = live.iter().filter(|s| s.state.op == Op::Restoring).cloned().collect();
        move_slivers(
            am,
            &restoring,
            |_| Transition::Fail,
            "A restore was interrupted by an AM restart; restore again or geni_restart",
        );
    };
    if tokio::time::timeout(RECOVER_TIMEOUT, work).await.is_err() {
        tracing::warn!("snapshot recovery timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job { kind: JobKind::Snapshot, snapshot_urn: "urn:s".into(), progress: "preparing".into() }
    }

    #[test]
    fn a_slice_holds_one_job_at_a_time() {
        let j = Jobs::default();
        assert!(j.begin("urn:publicid:IDN+ch+slice+A", job()));
        assert!(!j.begin("urn:publicid:IDN+ch+slice+a", job()), "slice URNs compare without case");
        assert!(j.begin("urn:publicid:IDN+ch+slice+b", job()));
        j.progress("urn:publicid:IDN+ch+slice+a", "saving 50% (1 of 2 MiB)".into());
        assert_eq!(j.get("urn:publicid:IDN+ch+slice+A").unwrap().progress, "saving 50% (1 of 2 MiB)");
        j.end("urn:publicid:IDN+ch+slice+a");
        assert!(j.get("urn:publicid:IDN+ch+slice+a").is_none());
        assert!(j.begin("urn:publicid:IDN+ch+slice+a", job()));
    }

    /// An AM with no agent at all and one provisioned, ready sliver on "host1", so that every
    /// agent call of a snapshot fails: enough to drive the POA path, the lock and the
    /// failure handling without VMs.
    fn am_without_agents() -> (Arc<Am>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::parse(include_str!("../../examples/am.toml"), "example").unwrap();
        cfg.agents.clear();
        cfg.state_dir = dir.path().to_path_buf();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let roots = crate::auth::TrustRoots::from_pem(ca.cert.pem().as_bytes()).unwrap();
        let auth = Arc::new(crate::auth::Authorizer::new(roots));
        let db = crate::state::Db::open(dir.path()).unwrap();
        let agents = crate::agents::Agents::new(&cfg).unwrap();
        let am = Arc::new(Am::new(cfg, db, agents, auth));
        am.db
            .with_tx(|c| {
                crate::state::db::insert_allocation(c, SLICE, "<rspec/>")?;
                crate::state::db::insert_sliver(c, &sliver("urn:publicid:IDN+vnsnap.example+sliver+a", Op::Ready))
            })
            .unwrap();
        (am, dir)
    }

    const SLICE: &str = "urn:publicid:IDN+ch.test+slice+exp1";

    fn who() -> Authorized {
        Authorized {
            caller_urn: "urn:publicid:IDN+ch.test+user+alice".into(),
            user_urn: "urn:publicid:IDN+ch.test+user+alice".into(),
            speaks_for: false,
            expires: Utc::now() + chrono::Duration::hours(1),
            credential: None,
        }
    }

    fn opts(k: &str, v: &str) -> Options {
        Options([(k.to_string(), Value::str(v))].into_iter().collect())
    }

    #[test]
    fn clock_option_defaults_to_wall_and_refuses_other_values() {
        assert_eq!(clock_option(&opts(OPT_URN, "x")).unwrap(), ClockMode::Wall);
        assert_eq!(clock_option(&opts(OPT_CLOCK, "wall")).unwrap(), ClockMode::Wall);
        assert_eq!(clock_option(&opts(OPT_CLOCK, "frozen")).unwrap(), ClockMode::Frozen);
        for bad in ["Frozen", "", "now"] {
            assert!(matches!(clock_option(&opts(OPT_CLOCK, bad)), Err(AmError::BadArgs(_))), "{bad}");
        }
        let int = Options([(OPT_CLOCK.to_string(), Value::Int(1))].into_iter().collect());
        assert!(matches!(clock_option(&int), Err(AmError::BadArgs(_))));
    }

    fn sliver(urn: &str, op: Op) -> Sliver {
        Sliver {
            urn: urn.into(),
            slice_urn: SLICE.into(),
            allocation: 1,
            client_id: "n".into(),
            host: "host1".into(),
            domain: "vm-d".into(),
            state: crate::state::SliverState { alloc: Alloc::Provisioned, op },
            expires: Utc::now() + chrono::Duration::hours(1),
            error: String::new(),
            plan: crate::state::VmPlan {
                vcpus: 1,
                memory_mib: 64,
                image: "vnsnap-guest".into(),
                sliver_type: "vnsnap-vm".into(),
                nics: vec![],
            },
        }
    }

    #[test]
    fn rejects_bad_or_missing_snapshot_names() {
        let (am, _dir) = am_without_agents();
        for o in [Options::default(), opts(OPT_NAME, ""), opts(OPT_NAME, "no spaces"), opts(OPT_NAME, &"x".repeat(65))]
        {
            assert_eq!(start_snapshot(&am, SLICE, &o, &who()).unwrap_err().code(), 1);
        }
        assert!(catalog::of_slice(&am.db.conn(), SLICE).unwrap().is_empty(), "nothing recorded");
    }

    #[test]
    fn held_slice_answers_busy_to_changes() {
        let (am, _dir) = am_without_agents();
        let lock = SliceLock::take(&am, SLICE, job()).unwrap();
        assert_eq!(am.check_open(SLICE).unwrap_err().code(), 14);
        assert_eq!(SliceLock::take(&am, SLICE, job()).err().map(|e| e.code()), Some(14));
        assert_eq!(start_snapshot(&am, SLICE, &opts(OPT_NAME, "x"), &who()).unwrap_err().code(), 14);
        assert!(am.check_open("urn:publicid:IDN+ch.test+slice+other").is_ok(), "other slices are free");
        drop(lock);
        assert!(am.check_open(SLICE).is_ok());
        assert!(am.snapshot_jobs.get(SLICE).is_none());
    }

    #[test]
    fn restore_needs_a_complete_snapshot_of_this_slice() {
        let (am, _dir) = am_without_agents();
        assert_eq!(start_restore(&am, SLICE, &Options::default()).unwrap_err().code(), 1);
        let unknown = opts(OPT_URN, "urn:publicid:IDN+vnsnap.example+snapshot+exp1-x-00000000");
        assert_eq!(start_restore(&am, SLICE, &unknown).unwrap_err().code(), 12);
        let e = Entry {
            id: "0f8c2a4e-1b2c-4d5e-8f90-123456789abc".into(),
            urn: "urn:publicid:IDN+vnsnap.example+snapshot+exp1-ck-0f8c2a4e".into(),
            slice_urn: SLICE.into(),
            name: "ck".into(),
            owner: "o".into(),
            state: EntryState::Pending,
            created: rfc3339(Utc::now()),
            manifest: String::new(),
            bytes: 0,
            error: String::new(),
            hosts: vec![],
        };
        catalog::insert_pending(&am.db.conn(), &e).unwrap();
        assert_eq!(start_restore(&am, SLICE, &opts(OPT_URN, &e.urn)).unwrap_err().code(), 1, "pending");
        assert_eq!(
            start_restore(&am, "urn:publicid:IDN+ch.test+slice+other", &opts(OPT_URN, &e.urn)).unwrap_err().code(),
            12,
            "another slice's snapshot is not found"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failed_snapshot_ends_ready_with_the_error_and_a_failed_entry() {
        let (am, _dir) = am_without_agents();
        let v = start_snapshot(&am, SLICE, &opts(OPT_NAME, "before-risky-step"), &who()).unwrap();
        // The task has not run yet (single-threaded runtime): the POA reply and Status show
        // the transition state with progress, and the slice is locked.
        let first = &v.as_array().unwrap()[0];
        assert_eq!(first.get("geni_operational_status"), Some(&Value::str("vnsnap_snapshotting")));
        assert_eq!(first.get("geni_resource_status"), Some(&Value::str("preparing")));
        assert_eq!(am.check_open(SLICE).unwrap_err().code(), 14);
        assert_eq!(
            start_snapshot(&am, SLICE, &opts(OPT_NAME, "other"), &who()).unwrap_err().code(),
            14,
            "one snapshot at a time"
        );
        for _ in 0..200 {
            if am.snapshot_jobs.get(SLICE).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(am.check_open(SLICE).is_ok(), "lock released");
        let s = am.db.slice_slivers(SLICE).unwrap().remove(0);
        assert_eq!(s.state.op, Op::Ready);
        assert!(s.error.contains("before-risky-step") && s.error.contains("host1"), "{}", s.error);
        let entries = catalog::of_slice(&am.db.conn(), SLICE).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].state, EntryState::Failed);
        assert_eq!(entries[0].owner, who().user_urn);
        // A failed name can be used again.
        assert!(start_snapshot(&am, SLICE, &opts(OPT_NAME, "before-risky-step"), &who()).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn recovery_fails_pending_entries_and_frees_slivers() {
        let (am, _dir) = am_without_agents();
        let s = am.db.slice_slivers(SLICE).unwrap().remove(0);
        am.db.set_state(&s.urn, s.state.apply(Transition::SnapshotBegin).unwrap(), "").unwrap();
        let e = Entry {
            id: "0f8c2a4e-1b2c-4d5e-8f90-123456789abc".into(),
            urn: "urn:x".into(),
            slice_urn: SLICE.into(),
            name: "ck".into(),
            owner: "o".into(),
            state: EntryState::Pending,
            created: rfc3339(Utc::now()),
            manifest: String::new(),
            bytes: 0,
            error: String::new(),
            hosts: vec![HostDomains { host: "host1".into(), domains: vec!["vm-d".into()] }],
        };
        catalog::insert_pending(&am.db.conn(), &e).unwrap();
        recover(&am).await;
        assert_eq!(catalog::get(&am.db.conn(), &e.id).unwrap().unwrap().state, EntryState::Failed);
        let s = am.db.slice_slivers(SLICE).unwrap().remove(0);
        assert_eq!(s.state.op, Op::Ready);
    }

    #[test]
    fn opstate_advertises_both_actions_and_their_states() {
        let o = crate::advert::opstate("urn:publicid:IDN+am+authority+cm");
        let state = |n: &str| o.states.iter().find(|s| s.name == n);
        let ready = state("geni_ready").unwrap();
        let next_of = |a: &str| ready.actions.iter().find(|x| x.name == a).map(|x| x.next.as_str());
        assert_eq!(next_of("vnsnap_snapshot"), Some("vnsnap_snapshotting"));
        assert_eq!(next_of("vnsnap_restore"), Some("vnsnap_restoring"));
        for t in ["vnsnap_snapshotting", "vnsnap_restoring"] {
            let s = state(t).unwrap();
            assert!(s.actions.is_empty());
            assert!(s.waits.iter().all(|w| w.next == "geni_ready"), "{t} returns to geni_ready");
        }
        // Every state an action or wait leads to is defined, and names follow the GENI rule.
        for s in &o.states {
            assert!(s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            for n in s.actions.iter().map(|a| &a.next).chain(s.waits.iter().map(|w| &w.next)) {
                assert!(state(n).is_some(), "{n} undefined");
            }
        }
        // The action names parse to the snapshot actions.
        assert_eq!(OpAction::parse("vnsnap_snapshot").unwrap(), OpAction::Snapshot);
        assert_eq!(OpAction::parse("vnsnap_restore").unwrap(), OpAction::Restore);
    }

    #[test]
    fn restore_refusal_puts_slivers_back() {
        let s = |urn: &str| Sliver {
            urn: urn.into(),
            slice_urn: "urn:x".into(),
            allocation: 1,
            client_id: "n".into(),
            host: "h".into(),
            domain: "d".into(),
            state: crate::state::SliverState { alloc: Alloc::Provisioned, op: Op::Restoring },
            expires: Utc::now(),
            error: String::new(),
            plan: crate::state::VmPlan {
                vcpus: 1,
                memory_mib: 64,
                image: "i".into(),
                sliver_type: "vnsnap-vm".into(),
                nics: vec![],
            },
        };
        let before = vec![("a".to_string(), Op::NotReady), ("b".to_string(), Op::Ready)];
        assert_eq!(back_to(&before, &s("a")), Transition::Observed(Op::NotReady));
        assert_eq!(back_to(&before, &s("b")), Transition::SnapshotDone);
    }
}
