//! `vnsnap-testbed bench snapshot --host xen`: the pause of a Xen domain's snapshot, live
//! method against stop-and-copy (`xl save -c`), in one run on one nested Xen host.
//!
//! One lab with a single nested Xen host (`crate::xenhost`), one domU (256 MiB by
//! default) running the guest's memory dirtier, then alternately, `reps` times each,
//! snapshots through the AM coordinator and the agent's Xen cut:
//!
//! * `live` ([`CutMode::Consistent`]): `xl migrate` pre-copy into the agent, the domain
//!   suspended only for the last round and the cut (`agent/src/domain/xen/persist.rs`);
//! * `stop-copy` ([`CutMode::StopCopy`]): `xl save -c`, the cut taken once the domain is
//!   seen suspended.
//!
//! The pause is the agent's measurement (`DomainCut::pause_us`): for stop-and-copy the
//! whole `xl save -c` (the domain is suspended from its start to its end), for the live
//! method from the end of the stream (the domain is suspended) until xl has resumed it.
//! The live figure misses the suspended part of the last pre-copy round before the end
//! of the stream, which the agent cannot see; the guest-observed stall is not measured.

use crate::checker::slice::{self, Slice};
use crate::checker::VmRef;
use crate::lab::{vm_spec, Lab, LabOptions};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vnsnap_proto::{Action, ActionRequest, CutMode, CutRequest};

/// Options of the Xen snapshot bench.
#[derive(Clone, Debug)]
pub struct XenBenchOptions {
    /// JSON output file.
    pub out: PathBuf,
    /// domU RAM, MiB.
    pub vm_mib: u64,
    /// Memory dirtier, MiB (0 = off).
    pub dirty_mib: u64,
    /// Dirtier rate, MiB/s (0 = as fast as the guest can).
    pub dirty_rate: u64,
    /// Snapshots per method.
    pub reps: usize,
}

/// One method.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    /// `live` or `stop-copy`.
    pub method: String,
    /// Pause of every run, ms.
    pub pauses_ms: Vec<f64>,
    /// Median pause, ms.
    pub pause_p50_ms: f64,
    /// Memory image bytes of the last run.
    pub image_bytes: u64,
    /// Whole snapshot (prepare..commit) of every run, ms.
    pub total_ms: Vec<u64>,
}

/// The bench's result.
#[derive(Clone, Debug, Serialize)]
pub struct XenBenchResult {
    /// domU RAM, MiB.
    pub vm_mib: u64,
    /// Dirtier MiB and MiB/s.
    pub dirty: (u64, u64),
    /// Per method.
    pub methods: Vec<MethodResult>,
    /// stop-copy median pause / live median pause.
    pub ratio: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

/// Runs the bench; prints a table and writes JSON.
pub async fn run(opts: &XenBenchOptions) -> anyhow::Result<XenBenchResult> {
    let t0 = Instant::now();
    let say = |m: &str| eprintln!("[{:6.1}s] {m}", t0.elapsed().as_secs_f64());
    say("booting a nested Xen host (agent in dom0)");
    let mut lab_opts = slice::lab_options();
    lab_opts = LabOptions { hosts: 1, xen_hosts: vec![1], ..lab_opts };
    let lab = tokio::task::block_in_place(|| Lab::up(lab_opts))?;
    let c = lab.client(0)?;
    c.define(&vm_spec(&lab, "xvm", opts.vm_mib, &[("52:54:00:00:07:01", 700, "10.70.0.1/24")])).await?;
    c.action("xvm", Action::Start, &ActionRequest::default()).await?;
    let sl = Slice { clients: vec![c.clone()], vms: vec![VmRef { host: 0, name: "xvm".into(), ips: vec![] }] };
    slice::wait_guests(&sl, Duration::from_secs(300)).await?;
    if opts.dirty_mib > 0 {
        let r = c
            .guest("xvm", &serde_json::json!({"op": "mem_start", "mib": opts.dirty_mib, "rate_mib_s": opts.dirty_rate}))
            .await?;
        anyhow::ensure!(r.get("ok").and_then(|v| v.as_bool()) == Some(true), "mem_start: {r}");
    }
    say(&format!("domU up ({} MiB, dirtying {} MiB at {} MiB/s)", opts.vm_mib, opts.dirty_mib, opts.dirty_rate));
    let methods = [("live", CutMode::Consistent), ("stop-copy", CutMode::StopCopy)];
    let mut results: Vec<MethodResult> = methods
        .iter()
        .map(|(m, _)| MethodResult {
            method: m.to_string(),
            pauses_ms: Vec::new(),
            pause_p50_ms: 0.0,
            image_bytes: 0,
            total_ms: Vec::new(),
        })
        .collect();
    for rep in 0..opts.reps {
        for (i, (m, mode)) in methods.iter().enumerate() {
            let epoch = slice::next_epoch(&sl).await?;
            let id = format!("xb-{m}-{rep}");
            let t = Instant::now();
            let snap = slice::snapshot(&sl, &id, epoch, &CutRequest { mode: *mode, ..Default::default() }).await?;
            let total = t.elapsed().as_millis() as u64;
            let cut = snap.domain_cuts().first().ok_or_else(|| anyhow::anyhow!("no cut"))?;
            let pause = cut.pause_us as f64 / 1000.0;
            say(&format!("{m:>9} #{rep}: pause {pause:8.1} ms, snapshot {total} ms"));
            results[i].pauses_ms.push(pause);
            results[i].total_ms.push(total);
            results[i].image_bytes = snap.memory_bytes();
            slice::delete(&sl, &snap).await?;
        }
    }
    for r in &mut results {
        r.pause_p50_ms = median(&r.pauses_ms);
    }
    let ratio = results[1].pause_p50_ms / results[0].pause_p50_ms.max(0.001);
    let res = XenBenchResult { vm_mib: opts.vm_mib, dirty: (opts.dirty_mib, opts.dirty_rate), methods: results, ratio };
    println!(
        "Xen domU snapshot pause ({} MiB, dirtying {} MiB at {} MiB/s):",
        opts.vm_mib, opts.dirty_mib, opts.dirty_rate
    );
    for r in &res.methods {
        println!(
            "  {:>9}: pause p50 {:9.1} ms  (runs: {:?})  image {} MiB",
            r.method,
            r.pause_p50_ms,
            r.pauses_ms.iter().map(|p| format!("{p:.1}")).collect::<Vec<_>>(),
            r.image_bytes >> 20
        );
    }
    println!("  stop-copy / live pause: {ratio:.1}x");
    if let Some(d) = opts.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&opts.out, serde_json::to_vec_pretty(&res)?)?;
    tokio::task::block_in_place(|| drop(lab));
    Ok(res)
}
