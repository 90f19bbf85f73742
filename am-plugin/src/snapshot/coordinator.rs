//! The slice snapshot protocol (ARCHITECTURE.md §5.3) and the slice restore (§5.5), as a
//! reusable async API with no AM state: the AM's POA handler calls it, and so do the
//! testbed's benchmarks, directly against agents.
//!
//! Snapshot: `prepare` (every host) → `cut` (every host in parallel, with a deadline) → poll
//! `status` until every host is `Saved` → `commit` (every host). Any failure before every host
//! committed aborts the snapshot on every host (best effort, in parallel) and deletes it where
//! a commit already succeeded: VMs keep running, nothing partial stays behind.
//!
//! Restore: `restore_prepare` on every host (all-or-nothing: one failure undoes the others
//! with `restore_abort`), then `restore_resume` on every host in parallel, so that the VMs of
//! the slice resume within the same few milliseconds.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use vnsnap_proto::client::{AgentClient, ClientError};
use vnsnap_proto::{
    ClockMode, ClockNotSet, CommitReply, CutMode, CutReply, CutRequest, DomainImage, PrepareReply, PrepareRequest,
    RestoreReply, RestoreRequest, SavePhase, SaveStatus,
};

/// How often the save status of every host is polled.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// A save that writes no byte on any host for this long has stalled.
const SAVE_STALL: Duration = Duration::from_secs(120);
/// Bound on a whole save phase, whatever the progress.
const SAVE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The agent calls the coordinator makes. Implemented by [`AgentClient`]; tests use a fake.
pub trait SnapshotAgent: Clone + Send + Sync + 'static {
    /// The error of a call.
    type Error: std::error::Error + Send + Sync + 'static;
    /// `POST /snapshots/prepare`.
    fn snapshot_prepare(&self, req: &PrepareRequest) -> impl Future<Output = Result<PrepareReply, Self::Error>> + Send;
    /// `POST /snapshots/{id}/cut`.
    fn snapshot_cut(&self, id: &str, req: &CutRequest) -> impl Future<Output = Result<CutReply, Self::Error>> + Send;
    /// `GET /snapshots/{id}`.
    fn snapshot_status(&self, id: &str) -> impl Future<Output = Result<SaveStatus, Self::Error>> + Send;
    /// `POST /snapshots/{id}/commit`.
    fn snapshot_commit(&self, id: &str) -> impl Future<Output = Result<CommitReply, Self::Error>> + Send;
    /// `POST /snapshots/{id}/abort`.
    fn snapshot_abort(&self, id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// `DELETE /snapshots/{id}`.
    fn snapshot_delete(&self, id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// `POST /restores/check`.
    fn restore_check(&self, req: &RestoreRequest) -> impl Future<Output = Result<RestoreReply, Self::Error>> + Send;
    /// `POST /restores/prepare`.
    fn restore_prepare(&self, req: &RestoreRequest) -> impl Future<Output = Result<RestoreReply, Self::Error>> + Send;
    /// `POST /restores/{id}/resume`.
    fn restore_resume(&self, id: &str) -> impl Future<Output = Result<RestoreReply, Self::Error>> + Send;
    /// `POST /restores/{id}/abort`.
    fn restore_abort(&self, id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Whether an error says the agent does not know the snapshot (it is already gone).
    fn is_not_found(_err: &Self::Error) -> bool {
        false
    }
}

impl SnapshotAgent for AgentClient {
    type Error = ClientError;
    async fn snapshot_prepare(&self, req: &PrepareRequest) -> Result<PrepareReply, ClientError> {
        AgentClient::snapshot_prepare(self, req).await
    }
    async fn snapshot_cut(&self, id: &str, req: &CutRequest) -> Result<CutReply, ClientError> {
        AgentClient::snapshot_cut(self, id, req).await
    }
    async fn snapshot_status(&self, id: &str) -> Result<SaveStatus, ClientError> {
        AgentClient::snapshot_status(self, id).await
    }
    async fn snapshot_commit(&self, id: &str) -> Result<CommitReply, ClientError> {
        AgentClient::snapshot_commit(self, id).await
    }
    async fn snapshot_abort(&self, id: &str) -> Result<(), ClientError> {
        AgentClient::snapshot_abort(self, id).await
    }
    async fn snapshot_delete(&self, id: &str) -> Result<(), ClientError> {
        AgentClient::snapshot_delete(self, id).await
    }
    async fn restore_check(&self, req: &RestoreRequest) -> Result<RestoreReply, ClientError> {
        AgentClient::restore_check(self, req).await
    }
    async fn restore_prepare(&self, req: &RestoreRequest) -> Result<RestoreReply, ClientError> {
        AgentClient::restore_prepare(self, req).await
    }
    async fn restore_resume(&self, id: &str) -> Result<RestoreReply, ClientError> {
        AgentClient::restore_resume(self, id).await
    }
    async fn restore_abort(&self, id: &str) -> Result<(), ClientError> {
        AgentClient::restore_abort(self, id).await
    }
    fn is_not_found(err: &ClientError) -> bool {
        err.kind() == Some(vnsnap_proto::ErrorKind::NotFound)
    }
}

/// The part of a slice on one host: its agent and the domains of the slice there.
#[derive(Debug, Clone)]
pub struct HostPart<C = AgentClient> {
    /// The host's agent.
    pub client: C,
    /// Host name (as the AM configuration names the agent).
    pub host: String,
    /// Domains of the slice on this host.
    pub domains: Vec<String>,
}

/// Phase of a slice snapshot. Moves only through [`Phase::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing asked of the agents yet.
    Start,
    /// Every host checked its domains and armed QEMU; nothing changed.
    Prepared,
    /// Every domain was cut and runs again; images are being written.
    Cut,
    /// Every host wrote and checksummed its images.
    Saved,
    /// Every host committed: the snapshot exists. Final.
    Committed,
    /// Undone on every host. Final.
    Aborted,
}

/// What moves a snapshot from one [`Phase`] to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseEvent {
    /// Every host answered prepare.
    AllPrepared,
    /// Every host answered cut.
    AllCut,
    /// Every host reports `Saved`.
    AllSaved,
    /// Every host answered commit.
    AllCommitted,
    /// A call failed or a deadline passed.
    Failed,
}

/// A phase event that is not allowed in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} is not allowed in phase {from:?}")]
pub struct InvalidPhase {
    /// The phase it was attempted from.
    pub from: Phase,
    /// The event.
    pub event: PhaseEvent,
}

impl Phase {
    /// The one transition function of a slice snapshot.
    pub fn next(self, event: PhaseEvent) -> Result<Phase, InvalidPhase> {
        use Phase::*;
        use PhaseEvent::*;
        match (self, event) {
            (Start, AllPrepared) => Ok(Prepared),
            (Prepared, AllCut) => Ok(Cut),
            (Cut, AllSaved) => Ok(Saved),
            (Saved, AllCommitted) => Ok(Committed),
            // Once every host committed there is nothing left to abort: the snapshot exists
            // and only DeleteSnapshot removes it.
            (Start | Prepared | Cut | Saved, Failed) => Ok(Aborted),
            (from, event) => Err(InvalidPhase { from, event }),
        }
    }

    /// Whether the phase is final.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Committed | Phase::Aborted)
    }
}

/// Progress reported while a snapshot or restore runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Asking every host to prepare.
    Preparing,
    /// Cutting every VM.
    Cutting,
    /// Images being written in the background (sums over every host).
    Saving {
        /// Bytes written so far.
        bytes_written: u64,
        /// Bytes expected.
        bytes_total: u64,
    },
    /// Committing on every host.
    Committing,
    /// Undoing a failed snapshot on every host.
    Aborting,
    /// Restore: verifying images and loading VMs paused on every host.
    RestorePreparing,
    /// Restore: resuming every VM.
    Resuming,
}

impl Progress {
    /// The text for `geni_resource_status`, e.g. `saving 63% (482 of 768 MiB)`.
    pub fn text(&self) -> String {
        match self {
            Progress::Preparing => "preparing".into(),
            Progress::Cutting => "cutting".into(),
            Progress::Saving { bytes_written, bytes_total } => {
                let mib = |b: u64| b / (1024 * 1024);
                let pct = if *bytes_total == 0 { 0 } else { (bytes_written.min(bytes_total) * 100) / bytes_total };
                format!("saving {pct}% ({} of {} MiB)", mib(*bytes_written), mib(*bytes_total))
            }
            Progress::Committing => "committing".into(),
            Progress::Aborting => "aborting".into(),
            Progress::RestorePreparing => "loading images".into(),
            Progress::Resuming => "resuming".into(),
        }
    }
}

/// The cut of one VM, as the slice sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCut {
    /// Host.
    pub host: String,
    /// Domain.
    pub domain: String,
    /// Wall-clock instant of the pause, ns since the Unix epoch (the host's clock).
    pub cut_at_ns: u128,
    /// Pause (stop until running again), µs.
    pub pause_us: u64,
    /// QEMU's own downtime, ms, if reported.
    pub qemu_downtime_ms: Option<u64>,
    /// Where the pause went (see [`DomainCut::steps_us`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps_us: BTreeMap<String, u64>,
}

/// Frame counters of the switches over the cut window, summed over the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Frames {
    /// Post-cut frames held for a not-yet-cut port.
    pub held: u64,
    /// Pre-cut frames delivered to an already-cut port and recorded in a channel log.
    pub recorded: u64,
    /// Frames dropped (hold bound or deadline).
    pub dropped: u64,
}

/// Wall-clock durations of the phases, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Prepare on every host.
    pub prepare_ms: u64,
    /// Cut on every host (until every VM runs again).
    pub cut_ms: u64,
    /// Background save, from the last cut reply to the last host `Saved`.
    pub save_ms: u64,
    /// Commit on every host.
    pub commit_ms: u64,
    /// Whole snapshot.
    pub total_ms: u64,
}

/// A committed slice snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceSnapshot {
    /// Snapshot id (the directory name on every host).
    pub snapshot_id: String,
    /// The epoch every port moved to.
    pub epoch: u64,
    /// Every VM's cut, ordered by cut instant.
    pub cuts: Vec<VmCut>,
    /// Last cut instant minus first, ns (across hosts: as good as the hosts' clock sync).
    pub skew_ns: u64,
    /// Phase durations.
    pub timings: Timings,
    /// Bytes of every image file (memory, disks, channel logs) over every host.
    pub image_bytes: u64,
    /// Switch counters.
    pub frames: Frames,
    /// Commit reply of every host, in host order.
    pub hosts: Vec<CommitReply>,
}

/// Why a slice snapshot failed. It has been aborted on every host when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Nothing to snapshot.
    #[error("The slice has no VM to snapshot")]
    Empty,
    /// An agent call failed.
    #[error("{op} on host {host} failed: {detail}")]
    Agent {
        /// The call (`prepare`, `cut`, `status`, `commit`).
        op: &'static str,
        /// Host.
        host: String,
        /// The error and its whole source chain, for the experimenter (`geni_error`): the
        /// client error alone says only "refused", the agent's reason is in its source.
        detail: String,
        /// The agent's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A host reported the save as failed.
    #[error("Saving on host {host} failed: {message}")]
    SaveFailed {
        /// Host.
        host: String,
        /// The agent's message.
        message: String,
    },
    /// The save did not finish in time.
    #[error("Saving timed out ({0})")]
    SaveTimeout(String),
    /// An agent reply does not match the request.
    #[error("Host {host} answered unexpectedly: {what}")]
    Protocol {
        /// Host.
        host: String,
        /// What was wrong.
        what: String,
    },
    /// A coordinator task died.
    #[error("Coordinator task failed: {0}")]
    Task(String),
}

/// Why a slice restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Nothing to restore.
    #[error("The snapshot has no VM to restore")]
    Empty,
    /// Prepare failed on a host; every prepared host was undone and nothing changed.
    #[error("Restore refused by host {host}: {detail}")]
    Prepare {
        /// Host.
        host: String,
        /// The error and its source chain (the agent's reason, e.g. a checksum mismatch).
        detail: String,
        /// The agent's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Resume failed on some hosts; the others run the restored VMs.
    #[error("Resume failed on host(s) {}", .failed.iter().map(|(h, e)| format!("{h}: {e}")).collect::<Vec<_>>().join("; "))]
    Resume {
        /// Hosts whose resume failed, with the error.
        failed: Vec<(String, String)>,
        /// Hosts whose VMs run restored.
        resumed: Vec<String>,
    },
    /// A coordinator task died.
    #[error("Coordinator task failed: {0}")]
    Task(String),
}

/// The images of one host for a restore.
#[derive(Debug, Clone)]
pub struct RestorePart<C = AgentClient> {
    /// The host's agent.
    pub client: C,
    /// Host name.
    pub host: String,
    /// Snapshot id on that host.
    pub snapshot_id: String,
    /// The domains to restore, as committed.
    pub domains: Vec<DomainImage>,
    /// Fresh epoch for the restored ports (same on every part; above every epoch in use
    /// on the slice), so frames of the VMs' previous incarnation are told apart.
    pub epoch: u64,
}

/// A finished restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResult {
    /// Restore id.
    pub restore_id: String,
    /// Domains running restored, per host.
    pub domains: BTreeMap<String, Vec<String>>,
    /// Prepare on every host (images verified, VMs loaded paused), ms.
    pub prepare_ms: u64,
    /// Resume on every host, ms.
    pub resume_ms: u64,
    /// Whole restore, ms.
    pub total_ms: u64,
    /// The VMs whose wall clock the restore did not set (no guest agent answering, a
    /// driver without the means), with why. They run restored all the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_not_set: Vec<ClockNotSet>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An error with its source chain, `outer: inner: innermost`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        src = s.source();
    }
    msg
}

fn agent_err<E: std::error::Error + Send + Sync + 'static>(op: &'static str, host: &str, e: E) -> SnapshotError {
    SnapshotError::Agent { op, host: host.to_string(), detail: error_chain(&e), source: Box::new(e) }
}

/// Runs `call` on every host at once (one task each, so that a slow host never delays the
/// others' cut) and returns the replies in host order, or the first failure.
async fn on_every_host<C, T, F, Fut>(hosts: &[HostPart<C>], call: F) -> Result<Vec<T>, SnapshotError>
where
    C: SnapshotAgent,
    T: Send + 'static,
    F: Fn(C, String, Vec<String>) -> Fut,
    Fut: Future<Output = Result<T, SnapshotError>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, h) in hosts.iter().enumerate() {
        let fut = call(h.client.clone(), h.host.clone(), h.domains.clone());
        set.spawn(async move { (i, fut.await) });
    }
    let mut out: Vec<Option<T>> = (0..hosts.len()).map(|_| None).collect();
    let mut first_err = None;
    while let Some(j) = set.join_next().await {
        match j {
            Ok((i, Ok(v))) => out[i] = Some(v),
            Ok((_, Err(e))) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(SnapshotError::Task(e.to_string()));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out.into_iter().flatten().collect()),
    }
}

/// How far ahead the coordinator schedules the common cut instant: a base, plus a step
/// for every domain beyond the first on the busiest host. Each agent sets up every one of
/// its domains' cuts (QMP session, migration settings; the savers are started at prepare)
/// before the instant; a set-up that overruns it starts that cut late and widens the skew.
/// At 4 domains per host on 2 shared cores the set-up, saver start included, took up to
/// 450 ms (`bench scale`, 16 VMs), so the fixed 250 ms this used to be let the skew reach
/// 220 ms; one VM in 10-15 snapshots still overran by 55-90 ms at a lead of 700 ms and at
/// 1 s alike, which moved the savers to prepare (docs/performance.md). The lead costs the
/// snapshot call that much latency and the guests nothing.
const CUT_LEAD_BASE: Duration = Duration::from_millis(250);
const CUT_LEAD_PER_DOMAIN: Duration = Duration::from_millis(150);

fn cut_lead<C>(hosts: &[HostPart<C>]) -> Duration {
    let busiest = hosts.iter().map(|h| h.domains.len() as u32).max().unwrap_or(1);
    CUT_LEAD_BASE + CUT_LEAD_PER_DOMAIN * busiest.saturating_sub(1)
}

/// The step between two consecutive cut instants of a slice in consistent mode. A cut's
/// pause is mostly CPU work in QEMU (stop, device state, write-protecting RAM), about 5 ms
/// on this project's 2-core test machine; when more domains are cut at once than there are
/// CPUs, the later ones queue behind the others and all of that is pause. Each host used
/// to stride its own domains 4 ms apart while the hosts cut at the same instants, so 4
/// hosts started 4 cuts at a time (16 VMs: pause p50 29-36 ms). Interleaved over the
/// whole slice, one cut starts every step: (domains - 1) steps of skew, 37.5 ms at 16.
const SLICE_STRIDE: Duration = Duration::from_micros(2_500);

/// Per-host cut requests that interleave the hosts' domains (consistent mode, with the
/// coordinator's own cut instant): host `h` of `n` hosts with domains cuts its first domain
/// `h` steps after the instant and its next ones `n` steps apart, so that consecutive cut
/// instants of the slice are one [`SLICE_STRIDE`] apart (when the hosts hold equal numbers
/// of domains; a host that has run out leaves its slots empty). Empty for other requests
/// (each host then gets `req` as it is).
fn interleave<C>(hosts: &[HostPart<C>], req: &CutRequest) -> BTreeMap<String, CutRequest> {
    let (CutMode::Consistent, Some(at), None) = (req.mode, req.at_unix_ns, req.stride_us) else {
        return BTreeMap::new();
    };
    let busy: Vec<&HostPart<C>> = hosts.iter().filter(|h| !h.domains.is_empty()).collect();
    let n = busy.len() as u32;
    busy.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut r = req.clone();
            r.at_unix_ns = Some(at + (SLICE_STRIDE * i as u32).as_nanos());
            r.stride_us = Some((SLICE_STRIDE * n).as_micros() as u64);
            (h.host.clone(), r)
        })
        .collect()
}

/// Takes a consistent live snapshot of the VMs of `hosts` (see the module docs).
///
/// `epoch` must be above every port epoch of these domains (the agents refuse otherwise);
/// `req` selects the cut mode, test-only stagger and the cut deadline. `progress` is called
/// at each phase and on every save poll. On `Ok` every host has committed and keeps the
/// files until [`delete_snapshot`]; on `Err` the snapshot was aborted on every host and the
/// VMs were never left paused.
pub async fn snapshot_slice<C: SnapshotAgent>(
    hosts: &[HostPart<C>],
    snapshot_id: &str,
    epoch: u64,
    req: &CutRequest,
    progress: impl Fn(Progress) + Send + Sync,
) -> Result<SliceSnapshot, SnapshotError> {
    if hosts.iter().all(|h| h.domains.is_empty()) {
        return Err(SnapshotError::Empty);
    }
    let mut phase = Phase::Start;
    let mut timings = Timings::default();
    let started = Instant::now();
    let mut committed_on: Vec<usize> = Vec::new();
    let result =
        run_snapshot(hosts, snapshot_id, epoch, req, &progress, &mut phase, &mut timings, &mut committed_on).await;
    match result {
        Ok((cuts, replies)) => {
            timings.total_ms = ms(started.elapsed());
            Ok(summarize(snapshot_id, epoch, cuts, replies, timings))
        }
        Err(e) => {
            tracing::warn!(snapshot = snapshot_id, ?phase, error = %e, "slice snapshot failed; aborting");
            progress(Progress::Aborting);
            // Aborted is reachable from every non-final phase; a failure after Committed
            // cannot happen (run_snapshot returns Ok once every host committed).
            phase = phase.next(PhaseEvent::Failed).unwrap_or(Phase::Aborted);
            debug_assert_eq!(phase, Phase::Aborted);
            abort_everywhere(hosts, snapshot_id, &committed_on).await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_snapshot<C: SnapshotAgent>(
    hosts: &[HostPart<C>],
    id: &str,
    epoch: u64,
    req: &CutRequest,
    progress: &(impl Fn(Progress) + Send + Sync),
    phase: &mut Phase,
    timings: &mut Timings,
    committed_on: &mut Vec<usize>,
) -> Result<(Vec<CutReply>, Vec<CommitReply>), SnapshotError> {
    let advance = |p: &mut Phase, ev| -> Result<(), SnapshotError> {
        *p = p.next(ev).map_err(|e| SnapshotError::Task(e.to_string()))?;
        Ok(())
    };

    // 1. Prepare: every host checks its domains run, that the epoch is new for their ports
    //    and that there is room; nothing changes yet, so a refusal costs nothing.
    progress(Progress::Preparing);
    let t = Instant::now();
    let id_s = id.to_string();
    on_every_host(hosts, |c, host, domains| {
        let req = PrepareRequest { snapshot: id_s.clone(), epoch, domains };
        async move { c.snapshot_prepare(&req).await.map_err(|e| agent_err("prepare", &host, e)) }
    })
    .await?;
    timings.prepare_ms = ms(t.elapsed());
    advance(phase, PhaseEvent::AllPrepared)?;

    // 2. Cut: all hosts at once. Each agent cuts its VMs in parallel (stop, drain + epoch
    //    advance, disk snapshot, background save started, resume) and replies once every VM
    //    runs again. The switches hold or record frames that cross the cut meanwhile, so the
    //    window between the first and the last cut must stay short: hence no host waits for
    //    another here.
    progress(Progress::Cutting);
    let t = Instant::now();
    let mut cut_req = req.clone();
    // One cut instant for all hosts, far enough ahead for every request to arrive and every
    // agent to open its QMP connections; the pauses then start together instead of one
    // request latency apart.
    if cut_req.at_unix_ns.is_none() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        cut_req.at_unix_ns = Some((now + cut_lead(hosts)).as_nanos());
    }
    let host_reqs = interleave(hosts, &cut_req);
    let cuts = on_every_host(hosts, |c, host, domains| {
        let id = id_s.clone();
        let req = host_reqs.get(&host).cloned().unwrap_or_else(|| cut_req.clone());
        async move {
            let r = c.snapshot_cut(&id, &req).await.map_err(|e| agent_err("cut", &host, e))?;
            for d in &domains {
                if !r.cuts.iter().any(|x| &x.domain == d) {
                    return Err(SnapshotError::Protocol { host, what: format!("no cut for domain {d}") });
                }
            }
            Ok(r)
        }
    })
    .await?;
    timings.cut_ms = ms(t.elapsed());
    advance(phase, PhaseEvent::AllCut)?;

    // 3. Save: memory images are written in the background while the VMs run; poll until
    //    every host says Saved.
    let t = Instant::now();
    wait_saved(hosts, id, progress).await?;
    timings.save_ms = ms(t.elapsed());
    advance(phase, PhaseEvent::AllSaved)?;

    // 4. Commit, host by host in parallel. A host that committed keeps its files until a
    //    delete, so on a later failure those hosts get a delete instead of an abort.
    progress(Progress::Committing);
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (i, h) in hosts.iter().enumerate() {
        let (c, host, id) = (h.client.clone(), h.host.clone(), id_s.clone());
        set.spawn(async move { (i, c.snapshot_commit(&id).await.map_err(|e| agent_err("commit", &host, e))) });
    }
    let mut replies: Vec<Option<CommitReply>> = (0..hosts.len()).map(|_| None).collect();
    let mut first_err = None;
    while let Some(j) = set.join_next().await {
        match j {
            Ok((i, Ok(r))) => {
                committed_on.push(i);
                replies[i] = Some(r);
            }
            Ok((_, Err(e))) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(SnapshotError::Task(e.to_string()));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let replies: Vec<CommitReply> = replies.into_iter().flatten().collect();
    for (h, r) in hosts.iter().zip(&replies) {
        for d in &h.domains {
            if !r.domains.iter().any(|x| &x.domain == d) {
                return Err(SnapshotError::Protocol { host: h.host.clone(), what: format!("no image of domain {d}") });
            }
        }
    }
    timings.commit_ms = ms(t.elapsed());
    advance(phase, PhaseEvent::AllCommitted)?;
    Ok((cuts, replies))
}

/// Polls every host until all report `Saved`; a `Failed` host, a stall or the overall
/// timeout is an error.
async fn wait_saved<C: SnapshotAgent>(
    hosts: &[HostPart<C>],
    id: &str,
    progress: &(impl Fn(Progress) + Send + Sync),
) -> Result<(), SnapshotError> {
    let start = Instant::now();
    let mut last_written = 0u64;
    let mut last_change = Instant::now();
    loop {
        let id_s = id.to_string();
        let statuses =
            on_every_host(hosts, |c, host, _| {
                let id = id_s.clone();
                async move {
                    c.snapshot_status(&id).await.map(|s| (host.clone(), s)).map_err(|e| agent_err("status", &host, e))
                }
            })
            .await?;
        let mut all_saved = true;
        let (mut written, mut total) = (0u64, 0u64);
        for (host, s) in &statuses {
            match s.phase {
                SavePhase::Saved | SavePhase::Committed => {}
                SavePhase::Saving | SavePhase::Prepared => all_saved = false,
                SavePhase::Failed => {
                    return Err(SnapshotError::SaveFailed {
                        host: host.clone(),
                        message: s.error.clone().unwrap_or_else(|| "no reason given".into()),
                    })
                }
            }
            written = written.saturating_add(s.bytes_written);
            total = total.saturating_add(s.bytes_total.max(s.bytes_written));
        }
        progress(Progress::Saving { bytes_written: written, bytes_total: total });
        if all_saved {
            return Ok(());
        }
        if written != last_written {
            last_written = written;
            last_change = Instant::now();
        } else if last_change.elapsed() > SAVE_STALL {
            return Err(SnapshotError::SaveTimeout(format!("no progress for {} s", SAVE_STALL.as_secs())));
        }
        if start.elapsed() > SAVE_TIMEOUT {
            return Err(SnapshotError::SaveTimeout(format!("not saved after {} s", SAVE_TIMEOUT.as_secs())));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Best-effort undo on every host at once: abort where the snapshot was not committed (holds
/// released, ports moved to the epoch, partial files deleted), delete where it was.
async fn abort_everywhere<C: SnapshotAgent>(hosts: &[HostPart<C>], id: &str, committed_on: &[usize]) {
    let mut set = JoinSet::new();
    for (i, h) in hosts.iter().enumerate() {
        let (c, host, id) = (h.client.clone(), h.host.clone(), id.to_string());
        let committed = committed_on.contains(&i);
        set.spawn(async move {
            let r = if committed { c.snapshot_delete(&id).await } else { c.snapshot_abort(&id).await };
            if let Err(e) = r {
                tracing::warn!(%host, snapshot = %id, committed, error = %e, "undo of a failed snapshot failed");
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Deletes a snapshot on every host (best effort, in parallel); returns the hosts that
/// failed, with the error. A host that no longer knows the snapshot counts as done.
/// `committed` says whether every host committed it; if not (an AM crash mid-way, a failed
/// entry), each host first gets an abort, the only call that undoes an uncommitted snapshot.
pub async fn delete_snapshot<C: SnapshotAgent>(
    hosts: &[(String, C)],
    id: &str,
    committed: bool,
) -> Vec<(String, String)> {
    let mut set = JoinSet::new();
    for (host, c) in hosts {
        let (c, host, id) = (c.clone(), host.clone(), id.to_string());
        set.spawn(async move {
            if !committed {
                if let Err(e) = c.snapshot_abort(&id).await {
                    tracing::debug!(%host, snapshot = %id, error = %e, "abort before delete");
                }
            }
            let r = match c.snapshot_delete(&id).await {
                Err(e) if C::is_not_found(&e) => Ok(()),
                r => r.map_err(|e| error_chain(&e)),
            };
            (host, r)
        });
    }
    let mut failed = Vec::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((_, Ok(()))) => {}
            Ok((host, Err(e))) => failed.push((host, e)),
            Err(e) => failed.push((String::new(), e.to_string())),
        }
    }
    failed.sort();
    failed
}

fn summarize(id: &str, epoch: u64, cuts: Vec<CutReply>, hosts: Vec<CommitReply>, timings: Timings) -> SliceSnapshot {
    // The commit reply carries QEMU's downtime once known; the cut reply is the fallback.
    let mut vm_cuts = Vec::new();
    for r in &hosts {
        for d in &r.domains {
            vm_cuts.push(VmCut {
                host: r.host.clone(),
                domain: d.domain.clone(),
                cut_at_ns: d.cut.cut_at_ns,
                pause_us: d.cut.pause_us,
                steps_us: d.cut.steps_us.clone(),
                qemu_downtime_ms: d.cut.qemu_downtime_ms.or_else(|| {
                    cuts.iter().flat_map(|c| &c.cuts).find(|c| c.domain == d.domain).and_then(|c| c.qemu_downtime_ms)
                }),
            });
        }
    }
    vm_cuts.sort_by_key(|c| c.cut_at_ns);
    let skew_ns = match (vm_cuts.first(), vm_cuts.last()) {
        (Some(a), Some(b)) => u64::try_from(b.cut_at_ns - a.cut_at_ns).unwrap_or(u64::MAX),
        _ => 0,
    };
    let mut frames = Frames::default();
    let mut image_bytes = 0u64;
    for r in &hosts {
        frames.held += r.held_frames;
        frames.recorded += r.recorded_frames;
        frames.dropped += r.dropped_frames;
        for d in &r.domains {
            image_bytes += d.memory.bytes;
            image_bytes += d.disks.iter().chain(&d.channel_logs).map(|f| f.bytes).sum::<u64>();
        }
    }
    SliceSnapshot { snapshot_id: id.to_string(), epoch, cuts: vm_cuts, skew_ns, timings, image_bytes, frames, hosts }
}

/// Restores a slice to a snapshot (see the module docs). On `Err(RestoreError::Prepare)`
/// nothing changed on any host; on `Err(RestoreError::Resume)` the hosts listed as resumed
/// run the restored VMs and the others' state is the agent's to report.
pub async fn restore_slice<C: SnapshotAgent>(
    parts: &[RestorePart<C>],
    restore_id: &str,
    progress: impl Fn(Progress) + Send + Sync,
) -> Result<RestoreResult, RestoreError> {
    restore_slice_clock(parts, restore_id, ClockMode::Wall, progress).await
}

/// [`restore_slice`] with the guests' clocks set as `clock` says: each agent steps the
/// clocks of its VMs right after resuming them, so the whole slice's are set within the
/// same few milliseconds.
pub async fn restore_slice_clock<C: SnapshotAgent>(
    parts: &[RestorePart<C>],
    restore_id: &str,
    clock: ClockMode,
    progress: impl Fn(Progress) + Send + Sync,
) -> Result<RestoreResult, RestoreError> {
    if parts.iter().all(|p| p.domains.is_empty()) {
        return Err(RestoreError::Empty);
    }
    let started = Instant::now();
    progress(Progress::RestorePreparing);
    let request = |p: &RestorePart<C>| RestoreRequest {
        restore: restore_id.to_string(),
        snapshot: p.snapshot_id.clone(),
        domains: p.domains.clone(),
        epoch: p.epoch,
        clock,
    };
    // 0. Check everywhere: every agent verifies every checksum and changes nothing, so a
    //    corrupt image on any host ends the restore with the whole slice as it was.
    let mut set = JoinSet::new();
    for (i, p) in parts.iter().enumerate() {
        let (c, req) = (p.client.clone(), request(p));
        set.spawn(async move { (i, c.restore_check(&req).await) });
    }
    while let Some(j) = set.join_next().await {
        match j {
            Ok((_, Ok(_))) => {}
            Ok((i, Err(e))) => {
                return Err(RestoreError::Prepare {
                    host: parts[i].host.clone(),
                    detail: error_chain(&e),
                    source: Box::new(e),
                })
            }
            Err(e) => return Err(RestoreError::Task(e.to_string())),
        }
    }
    // 1. Prepare everywhere (replaces the domains by paused restored ones). A failure here
    //    undoes the other prepares; the hosts that failed keep nothing of the restore.
    let mut set = JoinSet::new();
    for (i, p) in parts.iter().enumerate() {
        let (c, req) = (p.client.clone(), request(p));
        set.spawn(async move { (i, c.restore_prepare(&req).await) });
    }
    let mut prepared = Vec::new();
    let mut first_err: Option<RestoreError> = None;
    while let Some(j) = set.join_next().await {
        match j {
            Ok((i, Ok(_))) => prepared.push(i),
            Ok((i, Err(e))) => {
                first_err.get_or_insert(RestoreError::Prepare {
                    host: parts[i].host.clone(),
                    detail: error_chain(&e),
                    source: Box::new(e),
                });
            }
            Err(e) => {
                first_err.get_or_insert(RestoreError::Task(e.to_string()));
            }
        }
    }
    if let Some(e) = first_err {
        // All-or-nothing: undo exactly the prepares that succeeded.
        let mut undo = JoinSet::new();
        for i in prepared {
            let (c, host, id) = (parts[i].client.clone(), parts[i].host.clone(), restore_id.to_string());
            undo.spawn(async move {
                if let Err(e) = c.restore_abort(&id).await {
                    tracing::warn!(%host, restore = %id, error = %e, "undo of a restore prepare failed");
                }
            });
        }
        while undo.join_next().await.is_some() {}
        return Err(e);
    }
    let prepare_ms = ms(started.elapsed());

    // 2. Resume everywhere at once: each agent re-injects the channel logs, then resumes its
    //    VMs, so that in-flight frames of the cut reach their receivers before new traffic.
    progress(Progress::Resuming);
    let t = Instant::now();
    let mut set = JoinSet::new();
    for p in parts {
        let (c, host, id) = (p.client.clone(), p.host.clone(), restore_id.to_string());
        set.spawn(async move { (host, c.restore_resume(&id).await) });
    }
    let mut domains = BTreeMap::new();
    let mut failed = Vec::new();
    let mut clock_not_set = Vec::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((host, Ok(r))) => {
                clock_not_set.extend(r.clock_not_set);
                domains.insert(host, r.domains);
            }
            Ok((host, Err(e))) => failed.push((host, error_chain(&e))),
            Err(e) => failed.push((String::new(), e.to_string())),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        return Err(RestoreError::Resume { failed, resumed: domains.into_keys().collect() });
    }
    Ok(RestoreResult {
        restore_id: restore_id.to_string(),
        domains,
        prepare_ms,
        resume_ms: ms(t.elapsed()),
        total_ms: ms(started.elapsed()),
        clock_not_set: {
            clock_not_set.sort_by(|a, b| a.domain.cmp(&b.domain));
            clock_not_set
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vnsnap_proto::{Boot, DomainCut, DomainSpec, ImageFile};

    #[derive(Debug, thiserror::Error)]
    #[error("fake agent: {0}")]
    struct FakeError(String);

    /// A fake agent: records calls; fails the named call.
    #[derive(Clone, Default)]
    struct Fake {
        host: String,
        fail: Option<&'static str>,
        status_phase: Option<SavePhase>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Fake {
        fn new(host: &str, fail: Option<&'static str>) -> Fake {
            Fake { host: host.into(), fail, ..Default::default() }
        }
        fn log(&self, call: &str) -> Result<(), FakeError> {
            self.calls.lock().unwrap().push(call.to_string());
            if self.fail == Some(call) {
                Err(FakeError(format!("{call} refused")))
            } else {
                Ok(())
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn image(domain: &str, at: u128) -> DomainImage {
        let f = |p: &str| ImageFile { path: p.into(), bytes: 10, blake3: "00".into(), saved_at_ns: None };
        DomainImage {
            domain: domain.into(),
            spec: DomainSpec {
                name: domain.into(),
                vcpus: 1,
                memory_mib: 64,
                boot: Boot::Disk,
                disks: vec![],
                nics: vec![],
                hostname: None,
                autostart: false,
            },
            memory: f("mem"),
            disks: vec![f("disk0")],
            channel_logs: vec![],
            epochs: vec![3],
            cut: DomainCut {
                domain: domain.into(),
                cut_at_ns: at,
                pause_us: 1500,
                qemu_downtime_ms: Some(2),
                steps_us: BTreeMap::new(),
            },
            guest_agent: true,
        }
    }

    impl SnapshotAgent for Fake {
        type Error = FakeError;
        async fn snapshot_prepare(&self, _: &PrepareRequest) -> Result<PrepareReply, FakeError> {
            self.log("prepare").map(|()| PrepareReply { bytes_estimate: 1 })
        }
        async fn snapshot_cut(&self, _: &str, _: &CutRequest) -> Result<CutReply, FakeError> {
            self.log("cut")?;
            let at = if self.host == "a" { 1_000_000 } else { 1_004_000 };
            Ok(CutReply {
                cuts: vec![DomainCut {
                    domain: format!("vm-{}", self.host),
                    cut_at_ns: at,
                    pause_us: 1,
                    qemu_downtime_ms: None,
                    steps_us: BTreeMap::new(),
                }],
            })
        }
        async fn snapshot_status(&self, _: &str) -> Result<SaveStatus, FakeError> {
            self.log("status")?;
            Ok(SaveStatus {
                phase: self.status_phase.unwrap_or(SavePhase::Saved),
                bytes_written: 64 << 20,
                bytes_total: 64 << 20,
                error: Some("disk full".into()),
            })
        }
        async fn snapshot_commit(&self, _: &str) -> Result<CommitReply, FakeError> {
            self.log("commit")?;
            let at = if self.host == "a" { 1_000_000 } else { 1_004_000 };
            Ok(CommitReply {
                host: self.host.clone(),
                dir: format!("/store/{}", self.host),
                domains: vec![image(&format!("vm-{}", self.host), at)],
                held_frames: 2,
                recorded_frames: 1,
                dropped_frames: 0,
            })
        }
        async fn snapshot_abort(&self, _: &str) -> Result<(), FakeError> {
            self.log("abort")
        }
        async fn snapshot_delete(&self, _: &str) -> Result<(), FakeError> {
            self.log("delete")
        }
        async fn restore_check(&self, _: &RestoreRequest) -> Result<RestoreReply, FakeError> {
            self.log("restore_check").map(|()| RestoreReply { domains: vec![], elapsed_ms: 1, clock_not_set: vec![] })
        }
        async fn restore_prepare(&self, _: &RestoreRequest) -> Result<RestoreReply, FakeError> {
            self.log("restore_prepare").map(|()| RestoreReply { domains: vec![], elapsed_ms: 1, clock_not_set: vec![] })
        }
        async fn restore_resume(&self, _: &str) -> Result<RestoreReply, FakeError> {
            self.log("restore_resume").map(|()| RestoreReply {
                domains: vec![format!("vm-{}", self.host)],
                elapsed_ms: 1,
                clock_not_set: vec![ClockNotSet { domain: format!("vm-{}", self.host), reason: "no agent".into() }],
            })
        }
        async fn restore_abort(&self, _: &str) -> Result<(), FakeError> {
            self.log("restore_abort")
        }
    }

    fn parts(a: Fake, b: Fake) -> Vec<HostPart<Fake>> {
        vec![
            HostPart { client: a, host: "a".into(), domains: vec!["vm-a".into()] },
            HostPart { client: b, host: "b".into(), domains: vec!["vm-b".into()] },
        ]
    }

    #[test]
    fn phases_move_forward_only() {
        let p = Phase::Start
            .next(PhaseEvent::AllPrepared)
            .and_then(|p| p.next(PhaseEvent::AllCut))
            .and_then(|p| p.next(PhaseEvent::AllSaved))
            .and_then(|p| p.next(PhaseEvent::AllCommitted))
            .unwrap();
        assert_eq!(p, Phase::Committed);
        assert!(p.is_final());
        assert!(Phase::Committed.next(PhaseEvent::Failed).is_err(), "a committed snapshot is not aborted");
        assert!(Phase::Start.next(PhaseEvent::AllCut).is_err(), "no cut before prepare");
        assert!(Phase::Prepared.next(PhaseEvent::AllCommitted).is_err());
        for p in [Phase::Start, Phase::Prepared, Phase::Cut, Phase::Saved] {
            assert_eq!(p.next(PhaseEvent::Failed).unwrap(), Phase::Aborted);
        }
        assert!(Phase::Aborted.next(PhaseEvent::AllPrepared).is_err());
    }

    #[test]
    fn progress_text_reads_like_the_brief() {
        let t = Progress::Saving { bytes_written: 482 << 20, bytes_total: 768 << 20 }.text();
        assert_eq!(t, "saving 62% (482 of 768 MiB)");
        assert_eq!(Progress::Saving { bytes_written: 0, bytes_total: 0 }.text(), "saving 0% (0 of 0 MiB)");
    }

    #[tokio::test]
    async fn snapshot_runs_every_phase_and_summarizes() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", None));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let s = snapshot_slice(&parts(a.clone(), b.clone()), "id", 4, &CutRequest::default(), move |p| {
            s2.lock().unwrap().push(p)
        })
        .await
        .unwrap();
        assert_eq!(a.calls(), ["prepare", "cut", "status", "commit"]);
        assert_eq!(b.calls(), ["prepare", "cut", "status", "commit"]);
        assert_eq!(s.cuts.len(), 2);
        assert_eq!(s.skew_ns, 4_000);
        assert_eq!(s.frames, Frames { held: 4, recorded: 2, dropped: 0 });
        assert_eq!(s.image_bytes, 40);
        assert_eq!(s.hosts.len(), 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.first(), Some(&Progress::Preparing));
        assert_eq!(seen.last(), Some(&Progress::Committing));
    }

    #[tokio::test]
    async fn cut_failure_aborts_every_host() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", Some("cut")));
        let e =
            snapshot_slice(&parts(a.clone(), b.clone()), "id", 4, &CutRequest::default(), |_| {}).await.unwrap_err();
        assert!(matches!(e, SnapshotError::Agent { op: "cut", .. }), "{e}");
        assert_eq!(a.calls(), ["prepare", "cut", "abort"]);
        assert_eq!(b.calls(), ["prepare", "cut", "abort"]);
    }

    #[tokio::test]
    async fn prepare_failure_aborts_and_never_cuts() {
        let (a, b) = (Fake::new("a", Some("prepare")), Fake::new("b", None));
        snapshot_slice(&parts(a.clone(), b.clone()), "id", 4, &CutRequest::default(), |_| {}).await.unwrap_err();
        assert!(!a.calls().contains(&"cut".to_string()) && !b.calls().contains(&"cut".to_string()));
        assert_eq!(b.calls(), ["prepare", "abort"]);
    }

    #[tokio::test]
    async fn failed_save_is_reported_and_aborted() {
        let mut b = Fake::new("b", None);
        b.status_phase = Some(SavePhase::Failed);
        let a = Fake::new("a", None);
        let e =
            snapshot_slice(&parts(a.clone(), b.clone()), "id", 4, &CutRequest::default(), |_| {}).await.unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(a.calls().last().map(String::as_str), Some("abort"));
        assert!(!a.calls().contains(&"commit".to_string()));
    }

    #[tokio::test]
    async fn commit_failure_deletes_where_committed_and_aborts_elsewhere() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", Some("commit")));
        snapshot_slice(&parts(a.clone(), b.clone()), "id", 4, &CutRequest::default(), |_| {}).await.unwrap_err();
        assert_eq!(a.calls(), ["prepare", "cut", "status", "commit", "delete"]);
        assert_eq!(b.calls(), ["prepare", "cut", "status", "commit", "abort"]);
    }

    /// Every cut instant of the slice that `interleave` asks for: domain i of a host is cut
    /// at its host's instant + i strides.
    fn cut_instants(hosts: &[HostPart<()>], per_host: &BTreeMap<String, CutRequest>) -> Vec<u128> {
        let mut instants: Vec<u128> = hosts
            .iter()
            .flat_map(|h| {
                let r = per_host.get(&h.host).expect("a request for every host with domains");
                let (at, stride_ns) = (r.at_unix_ns.unwrap(), 1000 * u128::from(r.stride_us.unwrap()));
                (0..h.domains.len() as u128).map(move |i| at + stride_ns * i)
            })
            .collect();
        instants.sort();
        instants
    }

    #[test]
    fn consistent_cuts_are_interleaved_over_the_slice_one_step_apart() {
        let dom = |n: &[&str]| n.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let mut hosts = vec![
            HostPart { client: (), host: "h1".into(), domains: dom(&["v1", "v4"]) },
            HostPart { client: (), host: "h2".into(), domains: dom(&["v2", "v5"]) },
            HostPart { client: (), host: "h3".into(), domains: dom(&["v3", "v6"]) },
        ];
        let at = 1_000_000_000u128;
        let step = SLICE_STRIDE.as_nanos();
        let req = CutRequest { at_unix_ns: Some(at), ..Default::default() };
        assert_eq!(cut_instants(&hosts, &interleave(&hosts, &req)), (0..6).map(|k| at + k * step).collect::<Vec<_>>());
        // Unequal hosts: a host that has run out leaves its slots empty; no two cuts share
        // an instant, and a host without domains gets no request.
        hosts[1].domains.pop();
        hosts.push(HostPart { client: (), host: "idle".into(), domains: vec![] });
        let per_host = interleave(&hosts, &req);
        assert!(!per_host.contains_key("idle"));
        assert_eq!(cut_instants(&hosts[..3], &per_host), [0, 1, 2, 3, 5].map(|k| at + k * step));
        // Other modes, and requests that set their own stride, go to every host unchanged.
        for other in [
            CutRequest { mode: CutMode::Naive, ..req.clone() },
            CutRequest { stride_us: Some(10), ..req.clone() },
            CutRequest { at_unix_ns: None, ..Default::default() },
        ] {
            assert!(interleave(&hosts, &other).is_empty());
        }
    }

    #[tokio::test]
    async fn empty_slice_is_refused_without_calls() {
        let a = Fake::new("a", None);
        let hosts = vec![HostPart { client: a.clone(), host: "a".into(), domains: vec![] }];
        let e = snapshot_slice(&hosts, "id", 1, &CutRequest::default(), |_| {}).await.unwrap_err();
        assert!(matches!(e, SnapshotError::Empty));
        assert!(a.calls().is_empty());
    }

    fn restore_parts(a: Fake, b: Fake) -> Vec<RestorePart<Fake>> {
        vec![
            RestorePart {
                client: a,
                host: "a".into(),
                snapshot_id: "s".into(),
                domains: vec![image("vm-a", 1)],
                epoch: 2,
            },
            RestorePart {
                client: b,
                host: "b".into(),
                snapshot_id: "s".into(),
                domains: vec![image("vm-b", 1)],
                epoch: 2,
            },
        ]
    }

    #[tokio::test]
    async fn restore_prepares_everywhere_then_resumes() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", None));
        let r = restore_slice(&restore_parts(a.clone(), b.clone()), "r", |_| {}).await.unwrap();
        assert_eq!(a.calls(), ["restore_check", "restore_prepare", "restore_resume"]);
        assert_eq!(r.domains["b"], ["vm-b"]);
        // Every host's VMs whose clock was not set are reported, in domain order.
        let unset: Vec<&str> = r.clock_not_set.iter().map(|c| c.domain.as_str()).collect();
        assert_eq!(unset, ["vm-a", "vm-b"]);
    }

    #[tokio::test]
    async fn restore_check_failure_anywhere_prepares_nothing() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", Some("restore_check")));
        let e = restore_slice(&restore_parts(a.clone(), b.clone()), "r", |_| {}).await.unwrap_err();
        assert!(matches!(e, RestoreError::Prepare { ref host, .. } if host == "b"), "{e}");
        assert_eq!(a.calls(), ["restore_check"]);
        assert_eq!(b.calls(), ["restore_check"]);
    }

    #[tokio::test]
    async fn restore_prepare_failure_undoes_the_others_and_resumes_none() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", Some("restore_prepare")));
        let e = restore_slice(&restore_parts(a.clone(), b.clone()), "r", |_| {}).await.unwrap_err();
        assert!(matches!(e, RestoreError::Prepare { ref host, .. } if host == "b"), "{e}");
        assert_eq!(a.calls(), ["restore_check", "restore_prepare", "restore_abort"]);
        assert_eq!(b.calls(), ["restore_check", "restore_prepare"]);
    }

    #[tokio::test]
    async fn delete_reaches_every_host_and_reports_failures() {
        let (a, b) = (Fake::new("a", None), Fake::new("b", Some("delete")));
        let failed = delete_snapshot(&[("a".to_string(), a.clone()), ("b".to_string(), b.clone())], "id", false).await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "b");
        assert_eq!(a.calls(), ["abort", "delete"]);
    }
}
