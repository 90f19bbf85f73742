//! Read and write throughput on a generated 5,000-node advertisement, next to a raw quick-xml
//! event scan of the same bytes (the ceiling any quick-xml based reader can reach).
//!
//! `cargo bench -p vnsnap-rspec` prints a table and writes `target/rspec-bench.json`.
//! Set `VNSNAP_BENCH_STRICT=1` to exit non-zero when reading is below 40 % of the raw scan.

#[path = "../tests/common/gen.rs"]
mod gen;

use std::hint::black_box;
use std::time::{Duration, Instant};

use quick_xml::events::Event;
use quick_xml::Reader;

const NODES: usize = 5_000;
const ROUNDS: usize = 15;

/// Median wall time of `ROUNDS` runs after one warm-up run. The result is dropped after the
/// clock stops: freeing the model is the caller's cost, not the reader's.
fn measure<T>(mut f: impl FnMut() -> T) -> Duration {
    drop(f());
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let out = black_box(f());
            let d = t.elapsed();
            drop(out);
            d
        })
        .collect();
    times.sort();
    times[ROUNDS / 2]
}

/// Like [`measure`], but with the drop inside the timed region.
fn measure_with_drop<T>(mut f: impl FnMut() -> T) -> Duration {
    measure(|| drop(black_box(f())))
}

fn raw_scan(xml: &str) -> usize {
    let mut reader = Reader::from_str(xml);
    let mut events = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => return events,
            Ok(e) => {
                black_box(&e);
                events += 1;
            }
            Err(e) => panic!("raw scan failed: {e}"),
        }
    }
}

fn main() {
    let model = gen::big_advertisement(NODES);
    let xml = model.to_xml();
    let bytes = xml.len() as f64;
    let mb = bytes / 1e6;

    let scan = measure(|| raw_scan(black_box(&xml)));
    let read = measure(|| vnsnap_rspec::parse(black_box(&xml)).unwrap());
    let read_drop = measure_with_drop(|| vnsnap_rspec::parse(black_box(&xml)).unwrap());
    let write = measure(|| black_box(&model).to_xml());
    // Sanity: what was measured is a faithful reader.
    assert_eq!(vnsnap_rspec::parse(&xml).unwrap(), model);

    let rate = |d: Duration| mb / d.as_secs_f64();
    let (scan_mbs, read_mbs, write_mbs) = (rate(scan), rate(read), rate(write));
    let ratio = read_mbs / scan_mbs;

    println!();
    println!("vnsnap-rspec throughput: advertisement of {NODES} nodes, {mb:.2} MB, median of {ROUNDS}");
    println!("{:<28} {:>10} {:>10} {:>12}", "operation", "ms", "MB/s", "vs raw scan");
    for (name, d, r) in [
        ("raw quick-xml event scan", scan, scan_mbs),
        ("parse (read into model)", read, read_mbs),
        ("parse incl. dropping model", read_drop, rate(read_drop)),
        ("to_xml (write)", write, write_mbs),
    ] {
        println!(
            "{name:<28} {:>10.2} {r:>10.1} {:>11.0}%",
            d.as_secs_f64() * 1e3,
            100.0 * r / scan_mbs
        );
    }
    let ok = ratio >= 0.40;
    println!(
        "read/raw = {:.0}% (target >= 40%): {}",
        ratio * 100.0,
        if ok { "met" } else { "NOT met" }
    );

    let json = format!(
        "{{\n  \"document\": {{\"nodes\": {NODES}, \"bytes\": {}}},\n  \"rounds\": {ROUNDS},\n  \
         \"raw_scan\": {{\"ms\": {:.3}, \"mb_per_s\": {scan_mbs:.1}}},\n  \
         \"read\": {{\"ms\": {:.3}, \"mb_per_s\": {read_mbs:.1}}},\n  \
         \"read_incl_drop\": {{\"ms\": {:.3}, \"mb_per_s\": {:.1}}},\n  \
         \"write\": {{\"ms\": {:.3}, \"mb_per_s\": {write_mbs:.1}}},\n  \
         \"read_vs_raw\": {ratio:.3},\n  \"read_target_met\": {ok}\n}}\n",
        xml.len(),
        scan.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3,
        read_drop.as_secs_f64() * 1e3,
        rate(read_drop),
        write.as_secs_f64() * 1e3,
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&target);
    let path = target.join("rspec-bench.json");
    std::fs::write(&path, json).expect("write bench JSON");
    println!("wrote {}", path.display());
    if !ok && std::env::var("VNSNAP_BENCH_STRICT").is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
}
