//! The local half of a slice snapshot: prepare, cut, save, commit, abort, delete.
//!
//! The coordinator (in the AM) drives every host through the same phases; this module
//! executes them for the domains of one host. A snapshot's files live in
//! `<state>/snapshots/<id>/`; `host.json` is written there last, at commit, and is the
//! only proof that the host's part is complete (a directory without it is garbage).
//! Disk layers frozen by a cut stay in `<state>/layers/` and are shared with the live
//! domain (they are its backing chain) and with later snapshots; they are deleted only
//! when nothing references them any more ([`collect_layers`]).

use crate::domain::qemu::persist;
use crate::domain::qemu::qmp::Session;
// The Xen driver's cut lives with the Xen code but fills in this module's bookkeeping.
#[path = "domain/xen/snapshot.rs"]
mod xen_cut;
use crate::host::{err, Dom, Host, Res};
use crate::switch::forward::AheadPolicy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vnsnap_proto::*;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Snapshots and restores in progress on this host.
#[derive(Debug, Default)]
pub struct Registry {
    snaps: Mutex<HashMap<String, Arc<LocalSnap>>>,
    pub(crate) restores: Mutex<HashMap<String, Arc<crate::restore::LocalRestore>>>,
    /// Restores whose files `restore::check` verified, and when.
    pub(crate) checked: Mutex<HashMap<String, Instant>>,
}

/// What the host keeps of a committed snapshot (`host.json`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct HostRecord {
    /// The reply given at commit.
    pub commit: CommitReply,
    /// Per domain, per disk: the frozen chain (top first) the snapshot's disks need.
    pub chains: BTreeMap<String, Vec<Vec<PathBuf>>>,
}

type Saver = JoinHandle<Result<ImageFile, String>>;

/// The saver processes are this agent's own binary (`vnsnap-agent save-image`); through
/// `/proc` so that it works even if the file was replaced since the agent started.
const SAVER_EXE: &str = "/proc/self/exe";

struct DomainPart {
    spec: DomainSpec,
    ports: Vec<u32>,
    epochs: Vec<u64>,
    frozen: Vec<PathBuf>,
    chains: Vec<Vec<PathBuf>>,
    cut: DomainCut,
    memory: Option<ImageFile>,
    guest_agent: bool,
}

struct SnapState {
    phase: SavePhase,
    cut_started: bool,
    savers: Vec<(String, Saver)>,
    /// Savers started at prepare, already connected to their QEMU (`getfd`), for the
    /// domains not cut yet: the cut takes its domain's, an abort releases the rest.
    ready: HashMap<String, Saver>,
    parts: BTreeMap<String, DomainPart>,
    error: Option<String>,
    counters_before: (u64, u64, u64),
    /// How the cut is taken, once it started.
    mode: Option<CutMode>,
    /// Domains whose disks were switched to the snapshot's new layers.
    inserted: HashSet<String>,
}

/// One snapshot on this host.
pub struct LocalSnap {
    id: String,
    epoch: u64,
    dir: PathBuf,
    domains: Vec<String>,
    bytes_total: u64,
    progress: Arc<AtomicU64>,
    /// Per domain, the overlays made at prepare that the guests write to after the cut.
    layers: HashMap<String, Vec<PathBuf>>,
    /// Per domain, the QEMU nodes (file, qcow2) of those overlays, added at prepare.
    nodes: HashMap<String, Vec<(String, String)>>,
    st: Mutex<SnapState>,
}

impl LocalSnap {
    /// Whether the snapshot's cuts use QEMU's background snapshot (which must never be
    /// cancelled) rather than a plain migration.
    fn background(&self) -> bool {
        matches!(lock(&self.st).mode, Some(CutMode::Consistent | CutMode::Naive))
    }
}

impl std::fmt::Debug for LocalSnap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSnap").field("id", &self.id).field("epoch", &self.epoch).finish()
    }
}

/// Directory of snapshot `id`.
pub fn snap_dir(h: &Host, id: &str) -> PathBuf {
    h.cfg.state_dir.join("snapshots").join(id)
}

fn valid_id(id: &str) -> Res<()> {
    if valid_name(id) {
        Ok(())
    } else {
        Err(err(ErrorKind::BadRequest, format!("Snapshot id {id:?} must be 1-63 characters of [a-z0-9-]")))
    }
}

fn get(h: &Host, id: &str) -> Res<Arc<LocalSnap>> {
    lock(&h.local.snaps)
        .get(id)
        .cloned()
        .ok_or_else(|| err(ErrorKind::NotFound, format!("No snapshot {id:?} in progress")))
}

fn port_counters(h: &Host, ports: &HashSet<u32>) -> (u64, u64, u64) {
    let stats = h.switch.stats().unwrap_or_default();
    stats
        .ports
        .iter()
        .filter(|p| ports.contains(&p.port))
        .fold((0, 0, 0), |a, p| (a.0 + p.held_frames, a.1 + p.recorded_frames, a.2 + p.dropped_frames))
}

/// Prepare: checks every domain can be snapshotted and that there is room; changes nothing
/// but creating the (empty) snapshot directory.
pub fn prepare(h: &Host, r: PrepareRequest) -> Res<PrepareReply> {
    valid_id(&r.snapshot)?;
    let dir = snap_dir(h, &r.snapshot);
    if lock(&h.local.snaps).contains_key(&r.snapshot) || dir.exists() {
        return Err(err(ErrorKind::Conflict, format!("Snapshot {:?} exists", r.snapshot)));
    }
    if r.domains.is_empty() {
        return Err(err(ErrorKind::BadRequest, "No domains to snapshot"));
    }
    let mut problems = Vec::new();
    let mut bytes = 0u64;
    for name in &r.domains {
        let Ok(dom) = h.get(name) else {
            problems.push(format!("no domain {name:?}"));
            continue;
        };
        let rec = lock(&dom.rec);
        if rec.state != DomainState::Running {
            problems.push(format!("domain {name:?} is {:?}, not running", rec.state));
        }
        if let Some(p) = rec.ports.iter().find(|p| p.epoch >= r.epoch) {
            problems.push(format!("domain {name:?} port {} is already at epoch {} >= {}", p.port, p.epoch, r.epoch));
        }
        bytes = bytes.saturating_add(rec.spec.memory_mib.saturating_mul(1 << 20));
    }
    if !problems.is_empty() {
        return Err(err(ErrorKind::Conflict, format!("Cannot snapshot: {}", problems.join("; "))));
    }
    // The file system the images are written to: the snapshot's directory does not exist
    // yet, so the nearest directory above it that does (another file system may be mounted
    // at `snapshots/`, and is then the one that counts, not the state directory's).
    let (free, on) = free_bytes(&dir);
    // Memory images are at most the guest RAM plus device state; leave 10 % slack.
    let need = bytes.saturating_add(bytes / 10);
    if free < need {
        return Err(err(
            ErrorKind::Capacity,
            format!("Not enough space for the memory images in {}: need {need} bytes, {free} free", on.display()),
        ));
    }
    // The overlays the guests will write to after the cut are made and opened in QEMU
    // now, while the guests run, so that the pause does not open files. So are the savers
    // that will receive the memory images, and their connections are handed to QEMU: the
    // cut request then finds nothing to start (see `ready_saver`).
    let mut layers = HashMap::new();
    let mut nodes = HashMap::new();
    let mut ready: HashMap<String, Saver> = HashMap::new();
    let progress = Arc::new(AtomicU64::new(0));
    std::fs::create_dir_all(&dir).map_err(|e| err(ErrorKind::Internal, format!("creating {}: {e}", dir.display())))?;
    let undo = |nodes: &HashMap<String, Vec<(String, String)>>,
                layers: &HashMap<String, Vec<PathBuf>>,
                ready: HashMap<String, Saver>| {
        for name in layers.keys() {
            if let Ok(dom) = h.get(name) {
                if let Ok(mut s) = Session::connect(&dom.dir.qmp()) {
                    persist::remove_layers(&mut s, nodes.get(name).map(Vec::as_slice).unwrap_or_default());
                    if ready.contains_key(name) {
                        persist::release_saver(&mut s);
                    }
                }
            }
        }
        for f in layers.values().flatten() {
            let _ = std::fs::remove_file(f);
        }
        // The savers end once QEMU has dropped their connections (or time out); their
        // directory goes after them, without holding up the refusal.
        let dir = dir.clone();
        std::thread::spawn(move || {
            for (_, t) in ready {
                let _ = t.join();
            }
            let _ = std::fs::remove_dir_all(&dir);
        });
    };
    for name in &r.domains {
        let made = (|| -> Res<()> {
            let dom = h.get(name)?;
            let _op = lock(&dom.op);
            let tops = lock(&dom.rec).disks.clone();
            let made: &mut Vec<PathBuf> = layers.entry(name.clone()).or_default();
            if h.driver.name() == "xen" {
                // Xen disks are raw files copied at the cut: only their names are taken now.
                made.extend((0..tops.len()).map(|i| h.new_layer(name, i)));
                return Ok(());
            }
            for (i, top) in tops.iter().enumerate() {
                let new = h.new_layer(name, i);
                crate::domain::qemu::create_overlay_live(top, &new)
                    .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
                made.push(new);
            }
            let names: Vec<(String, String)> = (0..tops.len()).map(|i| persist::layer_nodes(i, r.epoch)).collect();
            let mut s = Session::connect(&dom.dir.qmp()).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
            persist::add_layers(&mut s, made, &names, h.cfg.qemu.disk_flush)
                .map_err(|e| err(ErrorKind::Internal, format!("domain {name:?}: {e}")))?;
            nodes.insert(name.clone(), names);
            ready.insert(name.clone(), ready_saver(&mut s, &dir.join(name), &progress)?);
            Ok(())
        })();
        if let Err(e) = made {
            undo(&nodes, &layers, ready);
            return Err(e);
        }
    }
    let snap = Arc::new(LocalSnap {
        id: r.snapshot.clone(),
        epoch: r.epoch,
        dir,
        domains: r.domains.clone(),
        bytes_total: bytes,
        progress,
        layers,
        nodes,
        st: Mutex::new(SnapState {
            phase: SavePhase::Prepared,
            cut_started: false,
            savers: Vec::new(),
            ready,
            parts: BTreeMap::new(),
            error: None,
            counters_before: (0, 0, 0),
            mode: None,
            inserted: HashSet::new(),
        }),
    });
    lock(&h.local.snaps).insert(r.snapshot, snap);
    Ok(PrepareReply { bytes_estimate: need })
}

/// Bytes free for an unprivileged writer on the file system that holds `path`, asked of
/// `path` or, while it does not exist, of the nearest directory above it that does; with
/// the directory asked. 0 if none can be asked.
fn free_bytes(path: &Path) -> (u64, PathBuf) {
    for p in path.ancestors() {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { break };
        // SAFETY: statvfs with a valid NUL-terminated path and an out-pointer to zeroed memory.
        let s = unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut s) != 0 {
                continue;
            }
            s
        };
        return ((s.f_bavail as u64).saturating_mul(s.f_frsize as u64), p.to_path_buf());
    }
    (0, path.to_path_buf())
}

/// Cut: every domain of the snapshot, in parallel. Returns when all run again.
pub fn cut(h: &Arc<Host>, id: &str, req: CutRequest) -> Res<CutReply> {
    let snap = get(h, id)?;
    let at = req.at_unix_ns.map(|ns| UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64));
    if at.is_some_and(|t| t > SystemTime::now() + Duration::from_millis(MAX_CUT_LEAD_MS)) {
        return Err(err(
            ErrorKind::BadRequest,
            format!("Cut instant more than {MAX_CUT_LEAD_MS} ms ahead (clocks out of step?)"),
        ));
    }
    if req.stride_us.is_some_and(|us| us > MAX_CUT_STRIDE_US) {
        return Err(err(ErrorKind::BadRequest, format!("Cut stride above {MAX_CUT_STRIDE_US} us")));
    }
    {
        let mut st = lock(&snap.st);
        if st.phase != SavePhase::Prepared || st.cut_started {
            return Err(err(ErrorKind::Conflict, format!("Snapshot {id:?} is {:?}, not prepared", st.phase)));
        }
        st.cut_started = true;
        st.mode = Some(req.mode);
        let ports: HashSet<u32> = snap
            .domains
            .iter()
            .filter_map(|d| h.get(d).ok())
            .flat_map(|d| lock(&d.rec).ports.iter().map(|p| p.port).collect::<Vec<_>>())
            .collect();
        st.counters_before = port_counters(h, &ports);
    }
    let deadline = Duration::from_millis(req.deadline_ms.unwrap_or(60_000));
    let threads: Vec<_> = snap
        .domains
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (h, snap, name) = (h.clone(), snap.clone(), name.clone());
            let stagger = Duration::from_millis(req.stagger_ms.get(&name).copied().unwrap_or(0));
            let mode = req.mode;
            // Pipelined: this host's domains start their cuts one stride apart.
            let step = req.stride_us.map(Duration::from_micros).unwrap_or(CUT_STRIDE);
            let stride = if mode == CutMode::Consistent { step * i as u32 } else { Duration::ZERO };
            std::thread::spawn(move || {
                let at = at.unwrap_or_else(SystemTime::now) + stagger + stride;
                let r = cut_one(&h, &snap, &name, mode, deadline, at);
                (name, r)
            })
        })
        .collect();
    let mut cuts = Vec::new();
    let mut failures = Vec::new();
    for t in threads {
        match t.join() {
            Ok((_, Ok(c))) => cuts.push(c),
            Ok((name, Err(e))) => failures.push(format!("{name}: {}", e.message)),
            Err(_) => failures.push("cut thread panicked".into()),
        }
    }
    if !failures.is_empty() {
        let msg = format!("Cut failed: {}", failures.join("; "));
        lock(&snap.st).error = Some(msg.clone());
        let _ = abort(h, id);
        return Err(err(ErrorKind::Internal, msg));
    }
    lock(&snap.st).phase = SavePhase::Saving;
    Ok(CutReply { cuts })
}

/// The gap between the cut instants of two domains of one host. A cut's pause is mostly
/// CPU work in QEMU (stop, device state, write-protecting RAM: about 4 ms on this
/// project's test machine); when a host cuts more domains at once than it has CPUs the
/// later ones queue behind the others' work, and all of that is pause (16 guests cut at
/// the same instant on 2 CPUs: pause p50 36 ms). One stride apart, each set-up mostly
/// has a CPU to itself, at the price of a wider cut: (domains per host - 1) strides of
/// skew, during which the switch holds or records the frames that cross it. Only the
/// consistent mode strides: the naive mode's and the baselines' cuts keep their timing.
/// This is the default; the AM's coordinator sends its own (`CutRequest::stride_us`) to
/// interleave the hosts.
const CUT_STRIDE: Duration = Duration::from_millis(4);
/// The widest stride a cut request may ask for.
const MAX_CUT_STRIDE_US: u64 = 1_000_000;

/// The record of domain `name` (its op lock held by the caller), which must be running,
/// and its directory in the snapshot, made here.
fn cut_target(dom: &Dom, snap: &LocalSnap, name: &str) -> Res<(crate::domain::DomainRecord, PathBuf)> {
    let rec = lock(&dom.rec).clone();
    if rec.state != DomainState::Running {
        return Err(err(ErrorKind::Conflict, format!("domain {name:?} is not running")));
    }
    let ddir = snap.dir.join(name);
    std::fs::create_dir_all(&ddir).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
    Ok((rec, ddir))
}

/// Starts the saver of one domain's memory image (`<ddir>/memory.bin`) and hands QEMU the
/// connection to it (`getfd`, which outlives this QMP session), so that the cut only has
/// to start the migration. Done at prepare: started at the cut request, this set-up ran
/// while other domains' cuts already held the CPUs at real-time priority, and in about 1
/// snapshot in 15 of 16 VMs on 2 CPUs one of them overran the cut instant (by 60-250 ms).
fn ready_saver(s: &mut Session, ddir: &Path, progress: &Arc<AtomicU64>) -> Res<Saver> {
    let internal = |e: crate::domain::DriverError| err(ErrorKind::Internal, e.to_string());
    std::fs::create_dir_all(ddir).map_err(|e| err(ErrorKind::Internal, format!("creating {}: {e}", ddir.display())))?;
    let (listener, sock) = crate::domain::bind_socket(&ddir.join("mig.sock")).map_err(internal)?;
    let saver = persist::spawn_saver(Path::new(SAVER_EXE), listener, &ddir.join("memory.bin"), progress.clone())
        .map_err(internal)?;
    if let Err(e) = persist::connect_saver(s, &sock) {
        // The saver gives up on its own when no stream comes (its accept timeout); the
        // dropped handle leaves a thread to reap it.
        drop(saver);
        return Err(internal(e));
    }
    Ok(saver)
}

/// Now, as Unix time in ns (the cut instants' unit).
fn now_ns() -> u128 {
    crate::domain::unix_ns().into()
}

/// The cut of one domain. The order is the algorithm (ARCHITECTURE.md 5.1):
/// 1. `stop`: from here the guest can neither send nor receive;
/// 2. switch: drain what the VM sent before the pause with the old epoch, then advance the
///    port's epoch and start its channel log (doing it the other way round would colour
///    pre-cut frames as post-cut);
/// 3. disks: one transaction snapshots them all at this instant;
/// 4. memory: background-snapshot migration, which saves device state, write-protects RAM
///    and resumes the guest; RAM is streamed while it runs.
///
/// The baselines reorder this: `StopCopy` keeps the guest paused until the whole image is
/// written; `PrecopyDrop` lets QEMU pick the cut at the end of a live pre-copy and drops
/// post-cut frames instead of holding them.
fn cut_one(
    h: &Host,
    snap: &LocalSnap,
    name: &str,
    mode: CutMode,
    deadline: Duration,
    at: SystemTime,
) -> Res<DomainCut> {
    if h.driver.name() == "xen" {
        return xen_cut::cut_one(h, snap, name, mode, at);
    }
    let dom = h.get(name)?;
    if matches!(mode, CutMode::Consistent | CutMode::Naive) {
        persist::warm_guest_ram(&dom.dir, name);
    }
    // The set-up's steps, timed for the warning below should they overrun the instant.
    let setup = Instant::now();
    let lead_at_start_us = at.duration_since(SystemTime::now()).map_or(0, |d| d.as_micros() as u64);
    let mut setup_us: Vec<(&str, u64)> = Vec::new();
    let mut mark = |step: &'static str| setup_us.push((step, setup.elapsed().as_micros() as u64));
    let _op = lock(&dom.op);
    mark("locked");
    let (rec, _) = cut_target(&dom, snap, name)?;
    let internal = |e: crate::domain::DriverError| err(ErrorKind::Internal, e.to_string());
    let saver: Saver = lock(&snap.st)
        .ready
        .remove(name)
        .ok_or_else(|| err(ErrorKind::Conflict, format!("domain {name:?} has no saver ready (not prepared?)")))?;
    let mut s = match Session::connect(&dom.dir.qmp()) {
        Ok(s) => s,
        Err(e) => {
            // Back for the abort that follows, which releases it.
            lock(&snap.st).ready.insert(name.to_string(), saver);
            return Err(internal(e));
        }
    };
    mark("qmp");
    let background = matches!(mode, CutMode::Consistent | CutMode::Naive);
    let checked = (|| -> Res<(Vec<PathBuf>, Vec<String>)> {
        persist::arm(&mut s, background).map_err(internal)?;
        mark("arm");
        let new_files: Vec<PathBuf> = snap.layers.get(name).cloned().unwrap_or_default();
        if new_files.len() != rec.disks.len() {
            return Err(err(ErrorKind::Conflict, format!("domain {name:?} disks changed since prepare")));
        }
        let new_nodes: Vec<String> =
            snap.nodes.get(name).map(|n| n.iter().map(|(_, node)| node.clone()).collect()).unwrap_or_default();
        if new_nodes.len() != rec.disks.len() {
            return Err(err(ErrorKind::Conflict, format!("domain {name:?} has no prepared disk layers")));
        }
        Ok((new_files, new_nodes))
    })();
    let (new_files, new_nodes) = match checked {
        Ok(x) => x,
        Err(e) => {
            persist::release_saver(&mut s);
            lock(&snap.st).savers.push((name.to_string(), saver));
            return Err(e);
        }
    };
    let colour = |policy: AheadPolicy, record: bool| -> Res<()> {
        for p in &rec.ports {
            h.switch.cut(p.port, snap.epoch, policy, record).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        }
        Ok(())
    };

    // Whether the disks were switched to the new layers: from then on the guest writes there
    // whatever else fails, so the domain's record must follow.
    let mut inserted = rec.disks.is_empty();
    let mut boost = persist::CutPriority::find(&dom.dir);
    mark("found");
    // Everything above is set-up; the cut itself starts at the agreed instant.
    match at.duration_since(SystemTime::now()) {
        Ok(wait) => std::thread::sleep(wait),
        Err(late) => tracing::warn!(
            domain = name,
            late_us = late.duration().as_micros() as u64,
            lead_at_start_us,
            setup_us = ?setup_us,
            "cut set-up overran the agreed cut instant"
        ),
    }
    let mut steps_us = BTreeMap::new();
    // Pre-copy runs with the guest live: only its final pause is raised.
    if mode != CutMode::PrecopyDrop {
        boost.raise();
    }
    let result: Res<(Instant, u128, Option<u64>)> = (|| match mode {
        CutMode::Consistent | CutMode::Naive => {
            let t0 = Instant::now();
            let at = now_ns();
            s.run(&qapi::qmp::stop {}).map_err(internal)?;
            let t_stop = t0.elapsed();
            if mode == CutMode::Consistent {
                colour(AheadPolicy::Hold, true)?;
            }
            let t_switch = t0.elapsed();
            let (disks, save) = persist::cut_disks_and_save(&mut s, &rec.disk_nodes, &new_nodes);
            inserted |= disks.is_ok();
            disks.map_err(internal)?;
            save.map_err(internal)?;
            let t_mig = t0.elapsed();
            if !persist::wait_resumed(&mut s, deadline).map_err(internal)? {
                return Err(err(ErrorKind::Internal, "guest did not resume after the snapshot setup"));
            }
            boost.lower();
            for (step, t) in
                [("stop", t_stop), ("switch", t_switch), ("disks_and_save", t_mig), ("resumed", t0.elapsed())]
            {
                steps_us.insert(step.to_string(), t.as_micros() as u64);
            }
            tracing::info!(
                domain = name,
                stop_us = t_stop.as_micros() as u64,
                switch_us = t_switch.as_micros() as u64,
                disk_and_migrate_us = t_mig.as_micros() as u64,
                resumed_us = t0.elapsed().as_micros() as u64,
                "cut timings (cumulative)"
            );
            Ok((t0, at, None))
        }
        CutMode::StopCopy => {
            let t0 = Instant::now();
            let at = now_ns();
            s.run(&qapi::qmp::stop {}).map_err(internal)?;
            colour(AheadPolicy::Hold, true)?;
            persist::snapshot_disks(&mut s, &rec.disk_nodes, &new_nodes).map_err(internal)?;
            inserted = true;
            persist::start_migration(&mut s).map_err(internal)?;
            let downtime = persist::wait_migration(&mut s, Duration::from_secs(600)).map_err(internal)?;
            persist::cont_after_migration(&mut s).map_err(internal)?;
            boost.lower();
            Ok((t0, at, Some(downtime)))
        }
        CutMode::PrecopyDrop => {
            persist::start_migration(&mut s).map_err(internal)?;
            if !persist::wait_paused(&mut s, Duration::from_secs(600)).map_err(internal)? {
                return Err(err(ErrorKind::Internal, "pre-copy did not converge"));
            }
            boost.raise();
            let t0 = Instant::now();
            let at = now_ns();
            colour(AheadPolicy::Drop, false)?;
            let downtime = persist::wait_migration(&mut s, Duration::from_secs(60)).map_err(internal)?;
            persist::snapshot_disks(&mut s, &rec.disk_nodes, &new_nodes).map_err(internal)?;
            inserted = true;
            persist::cont_after_migration(&mut s).map_err(internal)?;
            boost.lower();
            Ok((t0, at, Some(downtime)))
        }
    })();
    if inserted && !rec.disks.is_empty() {
        let mut live = lock(&dom.rec);
        live.disks = new_files.clone();
        live.disk_nodes = new_nodes;
        live.chains = rec
            .chains
            .iter()
            .zip(&new_files)
            .map(|(c, f)| std::iter::once(f.clone()).chain(c.iter().cloned()))
            .map(|c| c.collect())
            .collect();
        dom.persist(&live)?;
        drop(live);
        lock(&snap.st).inserted.insert(name.to_string());
    }
    let (t0, cut_at_ns, qemu_downtime_ms) = match result {
        Ok(x) => x,
        Err(e) => {
            // Never leave the guest paused: resume it whatever happened above (on a new
            // session: this one may have stopped mid-answer). A background snapshot is
            // never cancelled (see `persist::spawn_saver`): it runs to its end and the
            // abort that follows deletes the image.
            drop(s);
            if let Ok(mut s) = Session::connect(&dom.dir.qmp()) {
                persist::release_saver(&mut s);
                if !background {
                    let _ = s.run(&qapi::qmp::migrate_cancel {});
                }
                let _ = s.run(&qapi::qmp::cont {});
            }
            lock(&snap.st).savers.push((name.to_string(), saver));
            return Err(e);
        }
    };
    let pause_us = t0.elapsed().as_micros() as u64;

    // The guest runs again; record the port epochs and the snapshot's part.
    let cut = DomainCut { domain: name.to_string(), cut_at_ns, pause_us, qemu_downtime_ms, steps_us };
    let mut epochs: Vec<u64> = rec.ports.iter().map(|p| p.epoch).collect();
    if matches!(mode, CutMode::Consistent | CutMode::StopCopy | CutMode::PrecopyDrop) {
        let mut live = lock(&dom.rec);
        for p in &mut live.ports {
            p.epoch = p.epoch.max(snap.epoch);
        }
        epochs = live.ports.iter().map(|p| p.epoch).collect();
        dom.persist(&live)?;
    }
    let part = DomainPart {
        spec: rec.spec.clone(),
        ports: rec.ports.iter().map(|p| p.port).collect(),
        epochs,
        frozen: rec.disks.clone(),
        chains: rec.chains.clone(),
        cut: cut.clone(),
        memory: None,
        guest_agent: rec.guest_agent,
    };
    let mut st = lock(&snap.st);
    st.parts.insert(name.to_string(), part);
    st.savers.push((name.to_string(), saver));
    drop(st);
    h.events.push(Some(name), EventKind::SnapshotCut { snapshot: snap.id.clone() });
    Ok(cut)
}

/// Save progress; moves to `Saved` (or `Failed`) once every image is written.
pub fn status(h: &Host, id: &str) -> Res<SaveStatus> {
    let snap = match get(h, id) {
        Ok(s) => s,
        Err(e) => {
            if snap_dir(h, id).join("host.json").is_file() {
                return Ok(SaveStatus { phase: SavePhase::Committed, bytes_written: 0, bytes_total: 0, error: None });
            }
            return Err(e);
        }
    };
    let mut st = lock(&snap.st);
    if st.phase == SavePhase::Saving && st.savers.iter().all(|(_, t)| t.is_finished()) {
        let savers = std::mem::take(&mut st.savers);
        let mut errors = Vec::new();
        for (name, t) in savers {
            match t.join() {
                Ok(Ok(img)) => {
                    if let Some(p) = st.parts.get_mut(&name) {
                        p.memory = Some(img);
                    }
                }
                Ok(Err(e)) => errors.push(format!("{name}: {e}")),
                Err(_) => errors.push(format!("{name}: saver panicked")),
            }
        }
        // QEMU's own view: the migration must have completed, and it knows the downtime.
        for name in &snap.domains {
            if h.driver.name() == "xen" {
                break; // No QEMU: the image was complete at the cut.
            }
            let Ok(dom) = h.get(name) else { continue };
            match Session::connect(&dom.dir.qmp()).and_then(|mut s| persist::migration_result(&mut s)) {
                Ok(Some(d)) => {
                    if let Some(p) = st.parts.get_mut(name) {
                        p.cut.qemu_downtime_ms.get_or_insert(d);
                    }
                }
                Ok(None) => errors.push(format!("{name}: migration not completed")),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        if errors.is_empty() {
            st.phase = SavePhase::Saved;
        } else {
            st.phase = SavePhase::Failed;
            st.error = Some(errors.join("; "));
        }
    }
    Ok(SaveStatus {
        phase: st.phase,
        bytes_written: snap.progress.load(Ordering::Relaxed),
        bytes_total: snap.bytes_total,
        error: st.error.clone(),
    })
}

fn write_log(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<ImageFile> {
    let mut buf = Vec::new();
    for f in frames {
        buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
        buf.extend_from_slice(f);
    }
    std::fs::write(path, &buf)?;
    std::fs::File::open(path)?.sync_all()?;
    Ok(ImageFile {
        path: path.display().to_string(),
        bytes: buf.len() as u64,
        blake3: blake3::hash(&buf).to_hex().to_string(),
        saved_at_ns: None,
    })
}

/// Reads a channel log written at commit.
pub fn read_log(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let buf = std::fs::read(path)?;
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 4 <= buf.len() {
        let n = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
        i += 4;
        if i + n > buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated channel log"));
        }
        frames.push(buf[i..i + n].to_vec());
        i += n;
    }
    Ok(frames)
}

/// Hash of a frozen layer, cached beside it (frozen layers never change).
pub fn layer_hash(path: &Path) -> std::io::Result<ImageFile> {
    let side = path.with_extension("qcow2.blake3");
    let meta = std::fs::metadata(path)?;
    if let Ok(text) = std::fs::read_to_string(&side) {
        if let Some((len, hash)) = text.trim().split_once(' ') {
            if len.parse::<u64>().ok() == Some(meta.len()) {
                return Ok(ImageFile {
                    path: path.display().to_string(),
                    bytes: meta.len(),
                    blake3: hash.to_string(),
                    saved_at_ns: None,
                });
            }
        }
    }
    let (bytes, hash) = persist::hash_file(path)?;
    std::fs::write(&side, format!("{bytes} {hash}\n"))?;
    Ok(ImageFile { path: path.display().to_string(), bytes, blake3: hash, saved_at_ns: None })
}

/// Commit: channel logs written, every file checksummed, `host.json` made durable.
pub fn commit(h: &Host, id: &str) -> Res<CommitReply> {
    let snap = get(h, id)?;
    let mut st = lock(&snap.st);
    if st.phase != SavePhase::Saved {
        return Err(err(ErrorKind::Conflict, format!("Snapshot {id:?} is {:?}, not saved", st.phase)));
    }
    let internal = |what: &str, e: std::io::Error| err(ErrorKind::Internal, format!("{what}: {e}"));
    let mut domains = Vec::new();
    let mut chains = BTreeMap::new();
    let mut ports = HashSet::new();
    for (name, part) in st.parts.iter() {
        let mut logs = Vec::new();
        for (i, port) in part.ports.iter().enumerate() {
            ports.insert(*port);
            let frames = h.switch.take_log(*port).unwrap_or_default();
            logs.push(
                write_log(&snap.dir.join(name).join(format!("nic{i}.log")), &frames)
                    .map_err(|e| internal("channel log", e))?,
            );
        }
        // Frozen layers never change again; make them durable before the host says done.
        let disks = part
            .frozen
            .iter()
            .map(|p| std::fs::File::open(p).and_then(|f| f.sync_all()).and_then(|_| layer_hash(p)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| internal("disk layer", e))?;
        let memory = part.memory.clone().ok_or_else(|| err(ErrorKind::Internal, format!("{name}: no memory image")))?;
        domains.push(DomainImage {
            domain: name.clone(),
            spec: part.spec.clone(),
            memory,
            disks,
            channel_logs: logs,
            epochs: part.epochs.clone(),
            cut: part.cut.clone(),
            guest_agent: part.guest_agent,
        });
        chains.insert(name.clone(), part.chains.clone());
    }
    let after = port_counters(h, &ports);
    let before = st.counters_before;
    let reply = CommitReply {
        host: h.cfg.name.clone(),
        dir: snap.dir.display().to_string(),
        domains,
        held_frames: after.0.saturating_sub(before.0),
        recorded_frames: after.1.saturating_sub(before.1),
        dropped_frames: after.2.saturating_sub(before.2),
    };
    let record = HostRecord { commit: reply.clone(), chains };
    let tmp = snap.dir.join("host.json.tmp");
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| internal("host.json", e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| internal("host.json", e))?;
    std::fs::rename(&tmp, snap.dir.join("host.json")).map_err(|e| internal("host.json", e))?;
    std::fs::File::open(&snap.dir).and_then(|f| f.sync_all()).map_err(|e| internal("snapshot dir", e))?;
    for name in st.parts.keys() {
        let _ = std::fs::remove_file(crate::domain::socket_path(&snap.dir.join(name).join("mig.sock")));
    }
    st.phase = SavePhase::Committed;
    drop(st);
    lock(&h.local.snaps).remove(id);
    Ok(reply)
}

/// Abort: every participating port moves to the snapshot's epoch (holds released, logs
/// dropped), the guests keep running, layers no cut switched to are removed. Plain
/// migrations (the baselines) are cancelled; background snapshots run to their end (they
/// cannot be cancelled safely, see `persist::spawn_saver`), and the snapshot's directory
/// is deleted once its savers are done, in the background. Unknown ids are accepted (the
/// abort may follow an agent restart).
pub fn abort(h: &Host, id: &str) -> Res<()> {
    let Ok(snap) = get(h, id) else {
        if !snap_dir(h, id).join("host.json").is_file() {
            let _ = std::fs::remove_dir_all(snap_dir(h, id));
        }
        return Ok(());
    };
    let background = snap.background();
    for name in &snap.domains {
        let Ok(dom) = h.get(name) else { continue };
        let mut rec = lock(&dom.rec);
        for p in &mut rec.ports {
            let _ = h.switch.set_epoch(p.port, snap.epoch);
            p.epoch = p.epoch.max(snap.epoch);
        }
        let _ = dom.persist(&rec);
        drop(rec);
        let (inserted, ready) = {
            let mut st = lock(&snap.st);
            (st.inserted.contains(name), st.ready.remove(name))
        };
        let mut session = Session::connect(&dom.dir.qmp());
        if let Some(t) = ready {
            // Prepared, never cut: QEMU drops its end of the connection and the saver stops
            // (without a QEMU to ask, its stream has ended anyway or times out).
            if let Ok(s) = session.as_mut() {
                persist::release_saver(s);
            }
            lock(&snap.st).savers.push((name.clone(), t));
        }
        let Ok(mut s) = session else { continue };
        if !background {
            let _ = s.run(&qapi::qmp::migrate_cancel {});
        }
        if let Ok(false) = s.running() {
            let _ = s.run(&qapi::qmp::cont {});
        }
        if !inserted {
            persist::remove_layers(&mut s, snap.nodes.get(name).map(Vec::as_slice).unwrap_or_default());
            for f in snap.layers.get(name).into_iter().flatten() {
                let _ = std::fs::remove_file(f);
            }
        }
    }
    let savers = {
        let mut st = lock(&snap.st);
        st.phase = SavePhase::Failed;
        std::mem::take(&mut st.savers)
    };
    lock(&h.local.snaps).remove(id);
    let dir = snap.dir.clone();
    std::thread::spawn(move || {
        for (_, t) in savers {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
    Ok(())
}

/// Delete: a committed (or failed) snapshot's files, then layers nothing references.
pub fn delete(h: &Host, id: &str) -> Res<()> {
    valid_id(id)?;
    if lock(&h.local.snaps).contains_key(id) {
        abort(h, id)?;
    }
    let dir = snap_dir(h, id);
    if !dir.exists() {
        return Err(err(ErrorKind::NotFound, format!("No snapshot {id:?}")));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| err(ErrorKind::Internal, format!("removing {}: {e}", dir.display())))?;
    collect_layers(h);
    Ok(())
}

/// Committed snapshots' records on this host.
pub fn committed(h: &Host) -> Vec<HostRecord> {
    let Ok(entries) = std::fs::read_dir(h.cfg.state_dir.join("snapshots")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("host.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Deletes layer files that no live domain and no committed snapshot references. Runs
/// with every domain's operation lock held, so no cut can create a layer meanwhile.
pub fn collect_layers(h: &Host) {
    let doms: Vec<Arc<Dom>> = h.all_doms_sorted();
    let _guards: Vec<_> = doms.iter().map(|d| lock(&d.op)).collect();
    if !lock(&h.local.snaps).is_empty() || !lock(&h.local.restores).is_empty() {
        return; // Something is in flight; collect next time.
    }
    let mut keep: HashSet<PathBuf> = HashSet::new();
    for d in &doms {
        for c in &lock(&d.rec).chains {
            keep.extend(c.iter().cloned());
        }
    }
    for r in committed(h) {
        for chains in r.chains.values() {
            for c in chains {
                keep.extend(c.iter().cloned());
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(h.layers_dir()) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let layer = if p.extension().is_some_and(|x| x == "blake3") { p.with_extension("") } else { p.clone() };
        if !keep.contains(&layer) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// At start-up: a snapshot directory without `host.json` belongs to a snapshot that was
/// never committed (the agent died mid-way): delete it.
pub fn clean_uncommitted(h: &Host) {
    let Ok(entries) = std::fs::read_dir(h.cfg.state_dir.join("snapshots")) else { return };
    for e in entries.flatten() {
        if !e.path().join("host.json").is_file() {
            tracing::warn!("removing uncommitted snapshot {}", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_log_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let frames = vec![vec![1u8; 60], vec![], vec![2u8; 1514]];
        let img = write_log(&p, &frames).unwrap();
        assert_eq!(img.bytes, 60 + 1514 + 12);
        assert_eq!(read_log(&p).unwrap(), frames);
    }

    /// The space that counts is the file system the snapshot is written to, found from
    /// the nearest existing directory above a snapshot directory not made yet.
    #[test]
    fn free_space_is_asked_where_the_images_go() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir(&snaps).unwrap();
        let (free, on) = free_bytes(&snaps.join("not-yet").join("vm1"));
        assert_eq!(on, snaps);
        assert!(free > 0);
        let (_, on) = free_bytes(Path::new("/proc/nonexistent/x"));
        assert_eq!(on, Path::new("/proc"));
    }

    #[test]
    fn rejects_truncated_channel_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, [0, 0, 0, 9, 1, 2]).unwrap();
        assert!(read_log(&p).is_err());
    }
}
