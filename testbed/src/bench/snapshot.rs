//! `vnsnap-testbed bench snapshot [--compare]`: what a slice snapshot costs the running
//! slice, and (with `--compare`) the same for the two usual ways of snapshotting a slice.
//!
//! One 2-host lab, one 3-VM slice (256 MiB per VM by default) running the checker's
//! workloads plus a memory dirtier and UDP stall meters (each VM pings the next, 250 Hz
//! by default: see `checker::STALL_HZ`);
//! then, per mode, `reps` snapshots through the AM coordinator:
//!
//! * `vnsnap` (ours, [`CutMode::Consistent`]): epoch colouring + background snapshot;
//! * `stop-copy` ([`CutMode::StopCopy`]): pause, save memory while paused, resume;
//! * `precopy-drop` ([`CutMode::PrecopyDrop`]): VNsnap's live pre-copy, cut at its end,
//!   post-cut frames dropped.
//!
//! Per VM: the pause (agent-measured, QMP stop until running), the guest-observed stall
//! (longest gap of the stall stream arriving at that VM, reset before the snapshot, read
//! 2 s after it), the cut skew, total and save times, image bytes, frames held/recorded/
//! dropped (switch counters over the snapshot), guest TCP retransmission timeouts
//! (netstat `TCPTimeouts` delta over the window, and of those the ones that fired from the
//! first cut until 1 s after the commit, which the guests time-stamp), and the raw
//! sequential write bandwidth of the disk under the agents' state directories (1 GiB `dd`
//! with `oflag=direct`), measured in the same run: the ceiling for saving. Ratios against
//! ours are in the last columns; JSON goes to `target/bench/snapshot.json`.

use crate::checker::slice::{self, Slice, Taken};
use crate::checker::{WorkloadOptions, Workloads};
use crate::lab::Lab;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vnsnap_proto::{CutMode, CutRequest};

/// Options of `bench snapshot`.
#[derive(Clone, Debug)]
pub struct SnapshotBenchOptions {
    /// JSON output file.
    pub out: PathBuf,
    /// Also run the `stop-copy` and `precopy-drop` baselines.
    pub compare: bool,
    /// Guest RAM per VM, MiB.
    pub vm_mib: u64,
    /// Memory dirtier per VM: MiB and MiB/s.
    pub dirty_mib: u64,
    /// Dirtier rate, MiB/s (0 = as fast as the guest can).
    pub dirty_rate: u64,
    /// Snapshots per mode.
    pub reps: usize,
    /// Size of the raw write-bandwidth probe, MiB.
    pub probe_mib: u64,
    /// Stall meter rate, packets per second.
    pub stall_hz: u64,
}

impl Default for SnapshotBenchOptions {
    fn default() -> Self {
        SnapshotBenchOptions {
            out: PathBuf::from("target/bench/snapshot.json"),
            compare: false,
            vm_mib: 256,
            dirty_mib: 64,
            dirty_rate: 32,
            reps: 3,
            probe_mib: 1024,
            stall_hz: crate::checker::STALL_HZ,
        }
    }
}

/// How long after a snapshot's commit a TCP retransmission timeout still counts as the
/// snapshot's doing. A guest's stall during the save makes its peers' timers fire while it
/// lasts; the save ends before the commit, and Linux's timeouts here are 200 ms to about
/// 1 s, so a timeout the snapshot caused fires before commit + 1 s.
pub const CAUSE_WINDOW_AFTER: Duration = Duration::from_secs(1);

/// One VM in one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct VmResult {
    /// VM.
    pub vm: String,
    /// Pause, ms.
    pub pause_ms: f64,
    /// QEMU's own downtime, ms, when reported.
    pub qemu_downtime_ms: Option<u64>,
    /// Longest gap of the stall stream arriving at this VM, ms.
    pub stall_ms: f64,
    /// When that gap began, ms after the snapshot's first cut instant (negative: before it).
    pub stall_from_cut_ms: Option<f64>,
    /// TCP retransmission timeouts in this guest over the whole measurement window (from
    /// 2 s after the previous snapshot until 2 s after this one).
    pub tcp_timeouts: u64,
    /// Of those, the ones that fired during the snapshot: from its first cut instant until
    /// [`CAUSE_WINDOW_AFTER`] after it was committed (every image saved). Only these can be
    /// the snapshot's doing; the others come from the host's own load.
    pub tcp_timeouts_during: u64,
    /// Where the pause went: ms from `stop` to the end of each step (ours only).
    pub steps_ms: BTreeMap<String, f64>,
}

/// One snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Per VM.
    pub vms: Vec<VmResult>,
    /// Last cut minus first, ms.
    pub skew_ms: f64,
    /// Cut phase, ms.
    pub cut_ms: u64,
    /// Save phase (after the cut), ms.
    pub save_ms: u64,
    /// prepare..commit, ms.
    pub total_ms: u64,
    /// Image bytes (memory, disks, channel logs).
    pub image_bytes: u64,
    /// Frames held, recorded, dropped (coordinator's commit counters).
    pub held: u64,
    /// See `held`.
    pub recorded: u64,
    /// See `held`.
    pub dropped: u64,
    /// Frames dropped on the slice's switch ports over the snapshot (switch counters).
    pub switch_dropped: u64,
    /// From the first cut instant until the last memory image was on disk (fsync done), ms;
    /// for precopy-drop, whose copy starts before its cut, the cut and save phases.
    pub save_window_ms: f64,
    /// Memory image bytes / `save_window_ms`, MB/s.
    pub save_mb_s: f64,
    /// Invariants of the checker right after (no restore).
    pub check: String,
}

/// One mode.
#[derive(Clone, Debug, Serialize)]
pub struct ModeResult {
    /// `vnsnap`, `stop-copy`, `precopy-drop`.
    pub mode: String,
    /// Every snapshot.
    pub runs: Vec<RunResult>,
    /// Pause p50 over every VM and run, ms.
    pub pause_p50_ms: f64,
    /// Pause max, ms.
    pub pause_max_ms: f64,
    /// Stall p50 over every VM and run, ms.
    pub stall_p50_ms: f64,
    /// Stall max, ms.
    pub stall_max_ms: f64,
    /// Skew max, ms.
    pub skew_max_ms: f64,
    /// Total time p50, ms.
    pub total_p50_ms: f64,
    /// Image bytes (first run).
    pub image_bytes: u64,
    /// Sum over runs.
    pub dropped: u64,
    /// Sum over runs of `TCPTimeouts` deltas.
    pub tcp_timeouts: u64,
    /// Sum over runs of the timeouts during the snapshots ([`VmResult::tcp_timeouts_during`]).
    pub tcp_timeouts_during: u64,
    /// Save throughput p50, MB/s.
    pub save_mb_s: f64,
    /// Pause p50 / ours.
    pub pause_vs_ours: f64,
    /// Stall max / ours.
    pub stall_vs_ours: f64,
}

/// Stall meters and TCP timeouts over windows with no snapshot, as long as a snapshot
/// run's window: what the guests see from the host's load alone.
#[derive(Clone, Debug, Serialize, Default)]
pub struct IdleResult {
    /// Length of each window, ms.
    pub window_ms: u64,
    /// Stall p50 over every VM and window, ms.
    pub stall_p50_ms: f64,
    /// Stall max, ms.
    pub stall_max_ms: f64,
    /// Sum over windows of `TCPTimeouts` deltas.
    pub tcp_timeouts: u64,
}

/// Measures `reps` idle windows of `window`.
async fn idle(bed: &Bed, reps: usize, window: Duration) -> anyhow::Result<IdleResult> {
    let w = &bed.work;
    let mut stalls = Vec::new();
    let mut tcp = 0;
    for _ in 0..reps {
        tokio::time::sleep(Duration::from_secs(2)).await;
        w.reset_tcp_baseline().await?;
        w.stall_reset().await?;
        tokio::time::sleep(window).await;
        stalls.extend(w.stall_max_gaps().await?.into_values().map(|g| g.ms));
        tcp += w.tcp_timeouts().await?.values().sum::<u64>();
    }
    Ok(IdleResult {
        window_ms: window.as_millis() as u64,
        stall_p50_ms: pct(&stalls, 0.5),
        stall_max_ms: pct(&stalls, 1.0),
        tcp_timeouts: tcp,
    })
}

/// The JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotReport {
    /// Guest RAM per VM, MiB.
    pub vm_mib: u64,
    /// Dirtier MiB, MiB/s.
    pub dirty_mib: u64,
    /// Dirtier rate.
    pub dirty_rate_mib_s: u64,
    /// Stall meter rate, packets per second.
    pub stall_hz: u64,
    /// Raw sequential write bandwidth of the state directory's disk, MB/s.
    pub raw_write_mb_s: f64,
    /// The same measurements over windows without any snapshot: the machine's own noise.
    pub idle: IdleResult,
    /// Per mode.
    pub modes: Vec<ModeResult>,
    /// Targets: name -> (value, pass).
    pub targets: BTreeMap<String, (String, bool)>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Sequential write bandwidth of the file system holding `dir`: `mib` MiB with O_DIRECT
/// and a final fsync, MB/s (10^6 bytes).
pub fn raw_write_mb_s(dir: &Path, mib: u64) -> anyhow::Result<f64> {
    let f = dir.join("bench-write.tmp");
    let t = Instant::now();
    let st = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", f.display()))
        .args(["bs=4M", &format!("count={}", mib / 4), "oflag=direct", "conv=fsync", "status=none"])
        .status()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(st.success(), "dd write failed");
    Ok((mib << 20) as f64 / secs / 1e6)
}

/// Sequential read bandwidth of the file written by [`raw_write_mb_s`] (page cache dropped,
/// O_DIRECT), MB/s; removes the file.
pub fn raw_read_mb_s(dir: &Path) -> anyhow::Result<f64> {
    let f = dir.join("bench-write.tmp");
    let bytes = std::fs::metadata(&f)?.len();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let t = Instant::now();
    let st = Command::new("dd")
        .arg(format!("if={}", f.display()))
        .args(["of=/dev/null", "bs=4M", "iflag=direct", "status=none"])
        .status()?;
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&f);
    anyhow::ensure!(st.success(), "dd read failed");
    Ok(bytes as f64 / secs / 1e6)
}

fn mode_name(m: CutMode) -> &'static str {
    match m {
        CutMode::Consistent => "vnsnap",
        CutMode::StopCopy => "stop-copy",
        CutMode::PrecopyDrop => "precopy-drop",
        CutMode::Naive => "naive",
    }
}

async fn switch_dropped(s: &Slice) -> anyhow::Result<u64> {
    let names: Vec<&str> = s.vms.iter().map(|v| v.name.as_str()).collect();
    let mut n = 0;
    for h in s.hosts() {
        n += s.clients[h]
            .switch()
            .await?
            .ports
            .iter()
            .filter(|p| names.contains(&p.domain.as_str()))
            .map(|p| p.dropped_frames)
            .sum::<u64>();
    }
    Ok(n)
}

/// The lab, slice and workloads of the snapshot benchmarks.
pub struct Bed {
    /// The lab (dropped last).
    pub lab: Lab,
    /// The slice.
    pub slice: Slice,
    /// Its workloads.
    pub work: Workloads,
}

/// Starts a 2-host lab with the 3-VM slice and the workloads (ring, UDP streams, disk
/// counters, memory dirtier, stall meters) sized by `opts`.
pub async fn bed(opts: &SnapshotBenchOptions) -> anyhow::Result<Bed> {
    let lab = tokio::task::block_in_place(|| Lab::up(slice::lab_options()))?;
    let slice = slice::three_vm_slice(&lab, opts.vm_mib).await?;
    let work = Workloads::start(
        &slice.clients,
        &slice.vms,
        WorkloadOptions {
            mem_mib: (opts.dirty_mib > 0).then_some(opts.dirty_mib),
            mem_rate_mib_s: opts.dirty_rate,
            stall: true,
            stall_hz: opts.stall_hz,
            ..Default::default()
        },
    )
    .await?;
    work.wait_flowing(Duration::from_secs(120)).await?;
    Ok(Bed { lab, slice, work })
}

async fn one(bed: &Bed, mode: CutMode) -> anyhow::Result<(RunResult, Taken)> {
    let (s, w) = (&bed.slice, &bed.work);
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.reset_tcp_baseline().await?;
    w.stall_reset().await?;
    let drop0 = switch_dropped(s).await?;
    let epoch = slice::next_epoch(s).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let snap =
        slice::snapshot(s, &id, epoch, &CutRequest { mode, deadline_ms: Some(600_000), ..Default::default() }).await?;
    let committed_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    // Let retransmission timers fire (the first RTO is 200 ms; backoff doubles).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalls = w.stall_max_gaps().await?;
    let (tcp, tcp_at) = w.tcp_timeouts_timed().await?;
    let first_cut_ns = snap.domain_cuts().iter().map(|c| c.cut_at_ns).min().unwrap_or(committed_ns);
    let during = first_cut_ns..=committed_ns + CAUSE_WINDOW_AFTER.as_nanos();
    let tcp_during: BTreeMap<String, u64> =
        tcp_at.into_iter().map(|(vm, at)| (vm, at.iter().filter(|t| during.contains(t)).count() as u64)).collect();
    let drop1 = switch_dropped(s).await?;
    let check = w.check().await;
    let t = &snap.snap.timings;
    let (held, recorded, dropped) = snap.frames();
    let vms = s
        .vms
        .iter()
        .map(|v| {
            let c = snap.domain_cuts().iter().find(|c| c.domain == v.name);
            VmResult {
                vm: v.name.clone(),
                pause_ms: c.map(|c| c.pause_us as f64 / 1000.0).unwrap_or(f64::NAN),
                qemu_downtime_ms: c.and_then(|c| c.qemu_downtime_ms),
                stall_ms: stalls.get(&v.name).map_or(f64::NAN, |g| g.ms),
                stall_from_cut_ms: stalls
                    .get(&v.name)
                    .and_then(|g| g.began_ns)
                    .map(|t| (t as f64 - first_cut_ns as f64) / 1e6),
                tcp_timeouts: tcp.get(&v.name).copied().unwrap_or(0),
                tcp_timeouts_during: tcp_during.get(&v.name).copied().unwrap_or(0),
                steps_ms: c
                    .map(|c| c.steps_us.iter().map(|(k, us)| (k.clone(), *us as f64 / 1000.0)).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let save_window_ms = match (snap.saved_at_ns(), snap.domain_cuts().iter().map(|c| c.cut_at_ns).min()) {
        (Some(end), Some(start)) if mode != CutMode::PrecopyDrop => (end as f64 - start as f64) / 1e6,
        _ => (t.cut_ms + t.save_ms) as f64,
    };
    let r = RunResult {
        vms,
        skew_ms: snap.skew_ms(),
        cut_ms: t.cut_ms,
        save_ms: t.save_ms,
        total_ms: t.total_ms,
        image_bytes: snap.image_bytes(),
        held,
        recorded,
        dropped,
        switch_dropped: drop1.saturating_sub(drop0),
        save_window_ms,
        save_mb_s: snap.memory_bytes() as f64 / (save_window_ms.max(1.0) / 1000.0) / 1e6,
        check: check.to_string(),
    };
    Ok((r, snap))
}

fn summarize(mode: CutMode, runs: Vec<RunResult>) -> ModeResult {
    let pauses: Vec<f64> = runs.iter().flat_map(|r| r.vms.iter().map(|v| v.pause_ms)).collect();
    let stalls: Vec<f64> = runs.iter().flat_map(|r| r.vms.iter().map(|v| v.stall_ms)).collect();
    let totals: Vec<f64> = runs.iter().map(|r| r.total_ms as f64).collect();
    let saves: Vec<f64> = runs.iter().map(|r| r.save_mb_s).collect();
    ModeResult {
        mode: mode_name(mode).into(),
        pause_p50_ms: pct(&pauses, 0.5),
        pause_max_ms: pct(&pauses, 1.0),
        stall_p50_ms: pct(&stalls, 0.5),
        stall_max_ms: pct(&stalls, 1.0),
        skew_max_ms: runs.iter().map(|r| r.skew_ms).fold(0.0, f64::max),
        total_p50_ms: pct(&totals, 0.5),
        image_bytes: runs.first().map(|r| r.image_bytes).unwrap_or(0),
        dropped: runs.iter().map(|r| r.dropped.max(r.switch_dropped)).sum(),
        tcp_timeouts: runs.iter().flat_map(|r| r.vms.iter().map(|v| v.tcp_timeouts)).sum(),
        tcp_timeouts_during: runs.iter().flat_map(|r| r.vms.iter().map(|v| v.tcp_timeouts_during)).sum(),
        save_mb_s: pct(&saves, 0.5),
        pause_vs_ours: 1.0,
        stall_vs_ours: 1.0,
        runs,
    }
}

/// Runs the benchmark, prints the table and writes the JSON report.
pub fn run(opts: &SnapshotBenchOptions) -> anyhow::Result<SnapshotReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: &SnapshotBenchOptions) -> anyhow::Result<SnapshotReport> {
    println!(
        "bench snapshot: 2-host lab, 3 VMs of {} MiB, dirtier {} MiB at {} MiB/s, ring, UDP streams, {} Hz stall meters",
        opts.vm_mib, opts.dirty_mib, opts.dirty_rate, opts.stall_hz
    );
    let bed = bed(opts).await?;
    let state = bed.lab.hosts[0].state_dir();
    let raw = tokio::task::block_in_place(|| raw_write_mb_s(&state, opts.probe_mib))?;
    let _ = std::fs::remove_file(state.join("bench-write.tmp"));
    println!("raw sequential write bandwidth of {}: {raw:.0} MB/s", state.display());
    // A snapshot run's window: ~2 s before the cut settles, the snapshot, 2 s after.
    let idle = idle(&bed, opts.reps, Duration::from_secs(6)).await?;
    println!(
        "  no snapshot: stall p50 {:.0} ms, max {:.0} ms over {} windows of {} ms; tcp timeouts {}",
        idle.stall_p50_ms, idle.stall_max_ms, opts.reps, idle.window_ms, idle.tcp_timeouts
    );
    let mut modes = vec![CutMode::Consistent];
    if opts.compare {
        modes.extend([CutMode::StopCopy, CutMode::PrecopyDrop]);
    }
    let mut results = Vec::new();
    for &m in &modes {
        let mut runs = Vec::new();
        for i in 0..opts.reps {
            let (r, snap) = one(&bed, m).await?;
            println!(
                "  {} #{i}: pauses {:?} ms, stalls {:?} ms, skew {:.1} ms, total {} ms, save {} ms, {:.0} MiB, held/rec/drop {}/{}/{}, tcp timeouts {} during the snapshot, {} in the window; {}",
                mode_name(m),
                r.vms.iter().map(|v| (v.pause_ms * 10.0).round() / 10.0).collect::<Vec<_>>(),
                r.vms.iter().map(|v| v.stall_ms).collect::<Vec<_>>(),
                r.skew_ms,
                r.total_ms,
                r.save_ms,
                r.image_bytes as f64 / 1048576.0,
                r.held,
                r.recorded,
                r.dropped.max(r.switch_dropped),
                r.vms.iter().map(|v| v.tcp_timeouts_during).sum::<u64>(),
                r.vms.iter().map(|v| v.tcp_timeouts).sum::<u64>(),
                r.check
            );
            runs.push(r);
            slice::delete(&bed.slice, &snap).await?;
        }
        results.push(summarize(m, runs));
    }
    let (op, os) = (results[0].pause_p50_ms.max(1e-3), results[0].stall_max_ms.max(1e-3));
    for r in &mut results {
        r.pause_vs_ours = r.pause_p50_ms / op;
        r.stall_vs_ours = r.stall_max_ms / os;
    }
    let ours = &results[0];
    let mut targets = BTreeMap::new();
    let mut t = |k: &str, v: String, ok: bool| {
        targets.insert(k.to_string(), (v, ok));
    };
    t("pause p50 <= 20 ms", format!("{:.1} ms", ours.pause_p50_ms), ours.pause_p50_ms <= 20.0);
    t("pause max <= 50 ms", format!("{:.1} ms", ours.pause_max_ms), ours.pause_max_ms <= 50.0);
    t("cut skew <= 20 ms", format!("{:.1} ms", ours.skew_max_ms), ours.skew_max_ms <= 20.0);
    t("zero frames dropped (ours)", ours.dropped.to_string(), ours.dropped == 0);
    t(
        "zero TCP timeouts caused by the snapshot (ours: first cut .. commit + 1 s)",
        format!("{} (all through the windows: {})", ours.tcp_timeouts_during, ours.tcp_timeouts),
        ours.tcp_timeouts_during == 0,
    );
    t(
        "save throughput >= 60% of raw write",
        format!("{:.0} of {raw:.0} MB/s ({:.0}%)", ours.save_mb_s, 100.0 * ours.save_mb_s / raw),
        ours.save_mb_s >= 0.6 * raw,
    );
    if let Some(sc) = results.iter().find(|r| r.mode == "stop-copy") {
        t("stop-copy pause >= 20x ours", format!("{:.1}x", sc.pause_vs_ours), sc.pause_vs_ours >= 20.0);
    }
    if let Some(pd) = results.iter().find(|r| r.mode == "precopy-drop") {
        t("precopy-drop stall >= 5x ours", format!("{:.1}x", pd.stall_vs_ours), pd.stall_vs_ours >= 5.0);
    }
    let report = SnapshotReport {
        vm_mib: opts.vm_mib,
        dirty_mib: opts.dirty_mib,
        dirty_rate_mib_s: opts.dirty_rate,
        stall_hz: opts.stall_hz,
        raw_write_mb_s: raw,
        idle,
        modes: results,
        targets,
    };
    print_table(&report);
    if let Some(d) = opts.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&opts.out, serde_json::to_vec_pretty(&report)?)?;
    println!("JSON: {}", opts.out.display());
    bed.work.stop().await;
    let Bed { mut lab, .. } = bed;
    tokio::task::block_in_place(|| lab.down());
    Ok(report)
}

fn print_table(r: &SnapshotReport) {
    println!();
    println!(
        "{:<13} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>14} {:>12} {:>9} {:>9} {:>9}",
        "mode",
        "pause p50",
        "pause max",
        "stall p50",
        "stall max",
        "skew",
        "total p50",
        "MiB",
        "held/rec/drop",
        "RTOs dur/all",
        "save MB/s",
        "pause/us",
        "stall/us"
    );
    for m in &r.modes {
        let (h, rc): (u64, u64) = m.runs.iter().fold((0, 0), |a, x| (a.0 + x.held, a.1 + x.recorded));
        println!(
            "{:<13} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>6.1}ms {:>7.0}ms {:>8.0} {:>14} {:>12} {:>9.0} {:>8.1}x {:>8.1}x",
            m.mode,
            m.pause_p50_ms,
            m.pause_max_ms,
            m.stall_p50_ms,
            m.stall_max_ms,
            m.skew_max_ms,
            m.total_p50_ms,
            m.image_bytes as f64 / 1048576.0,
            format!("{h}/{rc}/{}", m.dropped),
            format!("{}/{}", m.tcp_timeouts_during, m.tcp_timeouts),
            m.save_mb_s,
            m.pause_vs_ours,
            m.stall_vs_ours
        );
    }
    println!(
        "per VM (pause ms / stall ms @ its start, ms from the first cut, each run; ours: [ms from stop to the end of stop, switch, disks+save, resume]):"
    );
    for m in &r.modes {
        for (i, run) in m.runs.iter().enumerate() {
            let cells: Vec<String> = run
                .vms
                .iter()
                .map(|v| {
                    let steps: Vec<String> = ["stop", "switch", "disks_and_save", "resumed"]
                        .iter()
                        .filter_map(|k| v.steps_ms.get(*k).map(|ms| format!("{ms:.1}")))
                        .collect();
                    let steps = if steps.is_empty() { String::new() } else { format!(" [{}]", steps.join(" ")) };
                    let at = v.stall_from_cut_ms.map(|ms| format!("@{ms:+.0}")).unwrap_or_default();
                    format!("{} {:.1}/{:.0}{at}{steps}", v.vm, v.pause_ms, v.stall_ms)
                })
                .collect();
            println!("  {:<13} #{i}: {}", m.mode, cells.join("  "));
        }
    }
    println!(
        "no snapshot (noise floor): stall p50 {:.0} ms, max {:.0} ms, tcp timeouts {}",
        r.idle.stall_p50_ms, r.idle.stall_max_ms, r.idle.tcp_timeouts
    );
    println!("raw write bandwidth: {:.0} MB/s", r.raw_write_mb_s);
    println!("targets:");
    for (k, (v, ok)) in &r.targets {
        println!("  [{}] {k}: {v}", if *ok { "PASS" } else { "FAIL" });
    }
}
