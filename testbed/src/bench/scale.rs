//! `vnsnap-testbed bench scale`: how the consistent snapshot grows with the slice.
//!
//! For each size (8 and 16 VMs by default) a fresh lab of `hosts` hosts (4 by default), a
//! slice of that many VMs round-robin over the hosts ([`slice::n_vm_plan`]: every VM on
//! segment L0 and, with two segments, on L1; every segment tunnelled between all hosts),
//! 128 MiB per VM, running the checker's light workloads (the TCP token ring through all
//! VMs over L0, a UDP sequence stream from each VM to the next, the disk counters;
//! optionally the stall meters). Then `reps` snapshots through the AM coordinator in
//! our consistent mode ([`CutMode::Consistent`]), each followed by the checker's
//! invariants, then deleted.
//!
//! Reported per size: cut skew (first cut to last cut), per-VM pause p50/max over every VM
//! and snapshot, total time (prepare..commit), image bytes, frames held/recorded/dropped
//! and how many snapshots the invariants held after. JSON goes to `target/bench/scale.json`.
//! Targets, at the largest size of at least 16 VMs: cut skew < 50 ms (worst snapshot) and
//! per-VM pause p50 < 30 ms.
//!
//! A snapshot that fails is recorded with its error and the bench goes on.

use super::percentile;
use crate::checker::slice::{self, Slice};
use crate::checker::{WorkloadOptions, Workloads};
use crate::lab::Lab;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vnsnap_proto::{CutMode, CutRequest};

/// Options of `bench scale`.
#[derive(Clone, Debug)]
pub struct ScaleBenchOptions {
    /// JSON output file.
    pub out: PathBuf,
    /// Slice sizes (VMs), one lab each.
    pub sizes: Vec<usize>,
    /// Lab hosts.
    pub hosts: usize,
    /// Segments per VM (1 or 2).
    pub segments: usize,
    /// Guest RAM per VM, MiB.
    pub vm_mib: u64,
    /// Snapshots per size.
    pub reps: usize,
    /// Also run the stall meters (at `checker::STALL_HZ`).
    pub stall: bool,
}

impl Default for ScaleBenchOptions {
    fn default() -> Self {
        ScaleBenchOptions {
            out: PathBuf::from("target/bench/scale.json"),
            sizes: vec![8, 16],
            hosts: 4,
            segments: 2,
            vm_mib: 128,
            reps: 3,
            stall: false,
        }
    }
}

/// One snapshot of one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleRun {
    /// Pause per VM, ms (VM name -> pause).
    pub pause_ms: BTreeMap<String, f64>,
    /// Last cut minus first, ms.
    pub skew_ms: f64,
    /// Cut phase, ms.
    pub cut_ms: u64,
    /// Save phase, ms.
    pub save_ms: u64,
    /// prepare..commit, ms.
    pub total_ms: u64,
    /// Image bytes (memory, disks, channel logs).
    pub image_bytes: u64,
    /// Frames held (coordinator's commit counters, summed over hosts).
    pub held: u64,
    /// Frames recorded.
    pub recorded: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Guest TCP retransmission timeouts over the snapshot, summed over the VMs (netstat
    /// `TCPTimeouts` delta; reported, not an invariant).
    #[serde(default)]
    pub tcp_timeouts: u64,
    /// The checker's invariants held right after the snapshot.
    pub invariants_ok: bool,
    /// The checker's report.
    pub check: String,
    /// The snapshot failed (then only this is meaningful).
    pub error: Option<String>,
}

/// One slice size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleSize {
    /// VMs in the slice.
    pub vms: usize,
    /// Lab hosts.
    pub hosts: usize,
    /// Seconds from lab up until the workloads flowed.
    pub setup_s: f64,
    /// Every snapshot.
    pub runs: Vec<ScaleRun>,
    /// Skew p50 over the successful snapshots, ms.
    pub skew_p50_ms: f64,
    /// Skew max, ms.
    pub skew_max_ms: f64,
    /// Pause p50 over every VM of every successful snapshot, ms.
    pub pause_p50_ms: f64,
    /// Pause max, ms.
    pub pause_max_ms: f64,
    /// Total time p50, ms.
    pub total_p50_ms: f64,
    /// Image bytes p50.
    pub image_bytes: u64,
    /// Frames held, summed over snapshots.
    pub held: u64,
    /// Frames recorded, summed.
    pub recorded: u64,
    /// Frames dropped, summed.
    pub dropped: u64,
    /// TCP retransmission timeouts, summed over snapshots and VMs.
    #[serde(default)]
    pub tcp_timeouts: u64,
    /// Snapshots that succeeded.
    pub ok: usize,
    /// Snapshots after which every invariant held.
    pub invariants_ok: usize,
}

/// The JSON document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleReport {
    /// Guest RAM per VM, MiB.
    pub vm_mib: u64,
    /// Segments per VM.
    pub segments: usize,
    /// Stall meters on.
    pub stall: bool,
    /// Load average (1 min) when the bench started, from `/proc/loadavg`.
    pub loadavg_start: f64,
    /// Per size.
    pub sizes: Vec<ScaleSize>,
    /// Targets: name -> (value, pass).
    pub targets: BTreeMap<String, (String, bool)>,
    /// Sizes that could not be measured, with the error.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

async fn one(s: &Slice, w: &Workloads) -> ScaleRun {
    let mut run = ScaleRun {
        pause_ms: BTreeMap::new(),
        skew_ms: 0.0,
        cut_ms: 0,
        save_ms: 0,
        total_ms: 0,
        image_bytes: 0,
        held: 0,
        recorded: 0,
        dropped: 0,
        tcp_timeouts: 0,
        invariants_ok: false,
        check: String::new(),
        error: None,
    };
    let snap = async {
        w.reset_tcp_baseline().await?;
        let epoch = slice::next_epoch(s).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let req = CutRequest { mode: CutMode::Consistent, deadline_ms: Some(600_000), ..Default::default() };
        slice::snapshot(s, &id, epoch, &req).await
    }
    .await;
    let snap = match snap {
        Ok(x) => x,
        Err(e) => {
            run.error = Some(format!("{e:#}"));
            return run;
        }
    };
    // Held frames are delivered right after the receiver's cut; a second is plenty for
    // everything in flight at the cut to arrive before the checker reads the streams.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let check = w.check().await;
    let t = &snap.snap.timings;
    (run.held, run.recorded, run.dropped) = snap.frames();
    run.pause_ms = snap.domain_cuts().iter().map(|c| (c.domain.clone(), c.pause_us as f64 / 1000.0)).collect();
    run.skew_ms = snap.skew_ms();
    (run.cut_ms, run.save_ms, run.total_ms) = (t.cut_ms, t.save_ms, t.total_ms);
    run.image_bytes = snap.image_bytes();
    run.tcp_timeouts = check.tcp_timeouts_total();
    run.invariants_ok = check.is_ok();
    run.check = check.to_string();
    if let Err(e) = slice::delete(s, &snap).await {
        run.error = Some(format!("delete: {e:#}"));
    }
    run
}

fn summarize(vms: usize, hosts: usize, setup_s: f64, runs: Vec<ScaleRun>) -> ScaleSize {
    let good: Vec<&ScaleRun> = runs.iter().filter(|r| r.error.is_none() || r.total_ms > 0).collect();
    let pauses: Vec<f64> = good.iter().flat_map(|r| r.pause_ms.values().copied()).collect();
    let skews: Vec<f64> = good.iter().map(|r| r.skew_ms).collect();
    let totals: Vec<f64> = good.iter().map(|r| r.total_ms as f64).collect();
    let bytes: Vec<f64> = good.iter().map(|r| r.image_bytes as f64).collect();
    ScaleSize {
        vms,
        hosts,
        setup_s,
        skew_p50_ms: percentile(&skews, 0.5),
        skew_max_ms: percentile(&skews, 1.0),
        pause_p50_ms: percentile(&pauses, 0.5),
        pause_max_ms: percentile(&pauses, 1.0),
        total_p50_ms: percentile(&totals, 0.5),
        image_bytes: percentile(&bytes, 0.5) as u64,
        held: good.iter().map(|r| r.held).sum(),
        recorded: good.iter().map(|r| r.recorded).sum(),
        dropped: good.iter().map(|r| r.dropped).sum(),
        tcp_timeouts: good.iter().map(|r| r.tcp_timeouts).sum(),
        ok: good.len(),
        invariants_ok: good.iter().filter(|r| r.invariants_ok).count(),
        runs,
    }
}

async fn size(opts: &ScaleBenchOptions, n: usize) -> anyhow::Result<ScaleSize> {
    let t0 = Instant::now();
    let lab = tokio::task::block_in_place(|| Lab::up(slice::lab_options_hosts(opts.hosts)))?;
    let plan = slice::n_vm_plan(n, opts.hosts, opts.segments)?;
    // TCG guests boot one after the other on a shared CPU: allow a minute plus 30 s a VM.
    let boot = Duration::from_secs(60 + 30 * n as u64);
    let s = slice::build_slice(&lab, &plan, opts.vm_mib, boot).await?;
    let w = Workloads::start(
        &s.clients,
        &s.vms,
        WorkloadOptions { stall: opts.stall, quiesce_timeout: Duration::from_secs(30), ..Default::default() },
    )
    .await?;
    w.wait_flowing(Duration::from_secs(300)).await?;
    let setup_s = t0.elapsed().as_secs_f64();
    println!("  {n} VMs on {} hosts up and flowing in {setup_s:.0} s", opts.hosts);
    let mut runs = Vec::new();
    for i in 0..opts.reps {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = one(&s, &w).await;
        match &r.error {
            Some(e) if r.total_ms == 0 => println!("  {n} VMs #{i}: snapshot failed: {e}"),
            _ => {
                let p: Vec<f64> = r.pause_ms.values().copied().collect();
                println!(
                    "  {n} VMs #{i}: skew {:.1} ms, pause p50 {:.1} ms max {:.1} ms, total {} ms (cut {}, save {}), {:.0} MiB, held/rec/drop {}/{}/{}; {}{}",
                    r.skew_ms,
                    percentile(&p, 0.5),
                    percentile(&p, 1.0),
                    r.total_ms,
                    r.cut_ms,
                    r.save_ms,
                    r.image_bytes as f64 / 1048576.0,
                    r.held,
                    r.recorded,
                    r.dropped,
                    r.check,
                    r.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                );
            }
        }
        runs.push(r);
    }
    w.stop().await;
    let mut lab = lab;
    tokio::task::block_in_place(|| lab.down());
    Ok(summarize(n, opts.hosts, setup_s, runs))
}

/// Runs the benchmark, prints the table and writes the JSON report.
pub fn run(opts: &ScaleBenchOptions) -> anyhow::Result<ScaleReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let loadavg_start = loadavg();
        println!(
            "bench scale: {:?} VMs of {} MiB over {} hosts, {} segment(s), ring + UDP streams{}, {} snapshots each (load average {loadavg_start:.1})",
            opts.sizes,
            opts.vm_mib,
            opts.hosts,
            opts.segments,
            if opts.stall { " + stall meters" } else { "" },
            opts.reps
        );
        let (mut sizes, mut failed) = (Vec::new(), Vec::new());
        for &n in &opts.sizes {
            // A size whose slice never came up is reported, and the next size still runs.
            match size(opts, n).await {
                Ok(s) => sizes.push(s),
                Err(e) => {
                    println!("  {n} VMs: failed: {e:#}");
                    failed.push(format!("{n} VMs: {e:#}"));
                }
            }
        }
        let report = ScaleReport {
            vm_mib: opts.vm_mib,
            segments: opts.segments,
            stall: opts.stall,
            loadavg_start,
            targets: targets(&sizes),
            sizes,
            failed,
        };
        print_table(&report);
        if let Some(d) = opts.out.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&opts.out, serde_json::to_vec_pretty(&report)?)?;
        println!("JSON: {}", opts.out.display());
        Ok(report)
    })
}

/// The targets, judged at the largest size of at least 16 VMs (none below that).
fn targets(sizes: &[ScaleSize]) -> BTreeMap<String, (String, bool)> {
    let mut t = BTreeMap::new();
    let Some(big) = sizes.iter().filter(|s| s.vms >= 16).max_by_key(|s| s.vms) else {
        t.insert("a size of at least 16 VMs measured".into(), ("none".into(), false));
        return t;
    };
    let at = format!("{} VMs over {} hosts", big.vms, big.hosts);
    let any = big.ok > 0;
    t.insert(
        format!("{at}: cut skew < 50 ms (worst snapshot)"),
        (format!("{:.1} ms", big.skew_max_ms), any && big.skew_max_ms < 50.0),
    );
    t.insert(
        format!("{at}: per-VM pause p50 < 30 ms"),
        (format!("{:.1} ms", big.pause_p50_ms), any && big.pause_p50_ms < 30.0),
    );
    for s in sizes {
        t.insert(
            format!("{} VMs: every snapshot taken and invariants hold after each", s.vms),
            (format!("{}/{} taken, {} ok", s.ok, s.runs.len(), s.invariants_ok), s.invariants_ok == s.runs.len()),
        );
    }
    t
}

fn print_table(r: &ScaleReport) {
    println!();
    println!(
        "{:>4} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>16} {:>6} {:>11}",
        "VMs",
        "hosts",
        "skew p50",
        "skew max",
        "pause p50",
        "pause max",
        "total p50",
        "MiB",
        "held/rec/drop",
        "RTOs",
        "invariants"
    );
    for s in &r.sizes {
        println!(
            "{:>4} {:>6} {:>7.1}ms {:>7.1}ms {:>8.1}ms {:>8.1}ms {:>8.0}ms {:>9.0} {:>16} {:>6} {:>11}",
            s.vms,
            s.hosts,
            s.skew_p50_ms,
            s.skew_max_ms,
            s.pause_p50_ms,
            s.pause_max_ms,
            s.total_p50_ms,
            s.image_bytes as f64 / 1048576.0,
            format!("{}/{}/{}", s.held, s.recorded, s.dropped),
            s.tcp_timeouts,
            format!("{}/{}", s.invariants_ok, s.runs.len())
        );
    }
    for f in &r.failed {
        println!("not measured: {f}");
    }
    println!("targets:");
    for (k, (v, ok)) in &r.targets {
        println!("  [{}] {k}: {v}", if *ok { "PASS" } else { "FAIL" });
    }
}
