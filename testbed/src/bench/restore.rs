//! `vnsnap-testbed bench restore`: how long a slice restore takes against what reading its
//! images costs.
//!
//! The bed of `bench snapshot` (2-host lab, 3 VMs of 256 MiB with every workload); one
//! snapshot (ours); then `reps` restores of it, each with the page cache dropped first so
//! the images come from the disk. Reported: time until every VM runs again (the
//! coordinator's restore: prepare, which verifies every checksum and loads memory, plus
//! resume), image bytes, the disk's sequential read bandwidth measured in the same run
//! (1 GiB `dd` with `iflag=direct` after dropping caches) and the target
//! `restore <= 2 x (image bytes / read bandwidth) + 2 s`; the checker's invariants after
//! each restore. JSON goes to `target/bench/restore.json`.

use super::snapshot::{bed, raw_read_mb_s, raw_write_mb_s, SnapshotBenchOptions};
use crate::checker::slice;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vnsnap_proto::CutRequest;

/// Options of `bench restore`.
#[derive(Clone, Debug)]
pub struct RestoreBenchOptions {
    /// JSON output file.
    pub out: PathBuf,
    /// Guest RAM per VM, MiB.
    pub vm_mib: u64,
    /// Restores of the snapshot.
    pub reps: usize,
}

impl Default for RestoreBenchOptions {
    fn default() -> Self {
        RestoreBenchOptions { out: PathBuf::from("target/bench/restore.json"), vm_mib: 256, reps: 3 }
    }
}

/// One restore.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreRun {
    /// Until every VM runs, ms (coordinator prepare + resume).
    pub restore_ms: u64,
    /// Prepare part, ms.
    pub prepare_ms: u64,
    /// Until every guest answers its control channel again, ms.
    pub guests_ms: u64,
    /// The checker's verdict afterwards.
    pub check: String,
}

/// The JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// Guest RAM per VM.
    pub vm_mib: u64,
    /// Image bytes of the snapshot.
    pub image_bytes: u64,
    /// Memory image bytes.
    pub memory_bytes: u64,
    /// Sequential read bandwidth, MB/s.
    pub read_mb_s: f64,
    /// 2 x bytes / read bandwidth + 2 s, ms.
    pub bound_ms: f64,
    /// Every restore.
    pub runs: Vec<RestoreRun>,
    /// Worst restore within the bound.
    pub pass: bool,
}

/// Runs the benchmark, prints a summary and writes the JSON report.
pub fn run(opts: &RestoreBenchOptions) -> anyhow::Result<RestoreReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        println!("bench restore: 2-host lab, 3 VMs of {} MiB with the checker's workloads", opts.vm_mib);
        let b = bed(&SnapshotBenchOptions { vm_mib: opts.vm_mib, ..Default::default() }).await?;
        let state = b.lab.hosts[0].state_dir();
        tokio::task::block_in_place(|| raw_write_mb_s(&state, 1024))?;
        let read = tokio::task::block_in_place(|| raw_read_mb_s(&state))?;
        println!("sequential read bandwidth of {}: {read:.0} MB/s", state.display());
        let epoch = slice::next_epoch(&b.slice).await?;
        let snap = slice::snapshot(&b.slice, &uuid::Uuid::new_v4().to_string(), epoch, &CutRequest { deadline_ms: Some(60_000), ..Default::default() })
            .await?;
        let bytes = snap.image_bytes();
        let bound_ms = 2.0 * bytes as f64 / (read * 1e6) * 1000.0 + 2000.0;
        let mut runs = Vec::new();
        for i in 0..opts.reps {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
            let t = Instant::now();
            let r = slice::restore(&b.slice, &snap, &uuid::Uuid::new_v4().to_string()).await?;
            slice::wait_guests(&b.slice, Duration::from_secs(120)).await?;
            let guests_ms = t.elapsed().as_millis() as u64;
            let check = b.work.check().await;
            println!("  restore #{i}: {} ms to running (prepare {} ms), {guests_ms} ms until guests answer; {check}", r.total_ms, r.prepare_ms);
            runs.push(RestoreRun { restore_ms: r.total_ms, prepare_ms: r.prepare_ms, guests_ms, check: check.to_string() });
        }
        let worst = runs.iter().map(|r| r.restore_ms).max().unwrap_or(0);
        let report = RestoreReport {
            vm_mib: opts.vm_mib,
            image_bytes: bytes,
            memory_bytes: snap.memory_bytes(),
            read_mb_s: read,
            bound_ms,
            pass: (worst as f64) <= bound_ms,
            runs,
        };
        println!(
            "image {:.0} MiB, read {read:.0} MB/s: worst restore {worst} ms, bound 2 x bytes/bw + 2 s = {bound_ms:.0} ms [{}]",
            bytes as f64 / 1048576.0,
            if report.pass { "PASS" } else { "FAIL" }
        );
        if let Some(d) = opts.out.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&opts.out, serde_json::to_vec_pretty(&report)?)?;
        println!("JSON: {}", opts.out.display());
        let _ = slice::delete(&b.slice, &snap).await;
        b.work.stop().await;
        let super::snapshot::Bed { mut lab, .. } = b;
        tokio::task::block_in_place(|| lab.down());
        Ok(report)
    })
}
