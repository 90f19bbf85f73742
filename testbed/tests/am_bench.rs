//! Acceptance 5 (short run): the AM benchmark works end to end. The full run is
//! `vnsnap-testbed bench am` (20 s per cell); set `AM_BENCH_SECS` to lengthen this one.

use std::time::Duration;

use vnsnap_testbed::bench_am::{bench_am, BenchAmOptions};

#[test]
fn bench_am_short() {
    let secs = std::env::var("AM_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let out = tempfile::tempdir().unwrap();
    let opts = BenchAmOptions {
        duration: Duration::from_secs(secs),
        concurrency: vec![1, 16],
        hosts: 1,
        out: out.path().join("am.json"),
    };
    let report = bench_am(&opts).expect("bench runs");
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    for c in cells {
        assert!(c["ok"].as_u64().unwrap() > 0, "no successful call: {c}");
        assert_eq!(c["errors"], 0, "{c}");
    }
}

/// The full benchmark (20 s per cell, concurrency 1/16/64): `cargo test -p vnsnap-testbed
/// --test am_bench -- --ignored --nocapture`. Writes `target/bench/am.json`.
#[test]
#[ignore]
fn bench_am_full() {
    let report = bench_am(&BenchAmOptions::default()).expect("bench runs");
    let status16 = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "Status" && c["concurrency"] == 16)
        .cloned()
        .unwrap();
    println!("Status @16: {status16}");
}
