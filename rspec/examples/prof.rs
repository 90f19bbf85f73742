//! Profiling aid for the reader: `prof MODE [NODES] [ROUNDS]` on a generated advertisement.
//! Modes: `none` (setup only, to subtract from counter totals), `raw` (quick-xml Reader scan), `ns` (NsReader scan), `parse` (parse and drop),
//! `fresh` (parse while the previous model is still alive; reports the fastest round),
//! `seq` (`parse_sequential` and drop), `splitN` (`parse_split` on N threads and drop).
#[path = "../tests/common/gen.rs"]
mod gen;
use quick_xml::events::Event;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let nodes: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let rounds: u32 = std::env::args().nth(3).and_then(|n| n.parse().ok()).unwrap_or(20);
    let model = gen::big_advertisement(nodes);
    let xml = model.to_xml();
    let mut best = Duration::MAX;
    let mut previous = None;
    for _ in 0..rounds {
        let t = Instant::now();
        match mode.as_str() {
            "none" => {}
            "raw" => {
                let mut r = quick_xml::Reader::from_str(&xml);
                while !matches!(r.read_event().unwrap(), Event::Eof) {}
            }
            "nsraw" => {
                let mut r = quick_xml::NsReader::from_str(&xml);
                while !matches!(r.read_event().unwrap(), Event::Eof) {}
            }
            "ns" => {
                let mut r = quick_xml::NsReader::from_str(&xml);
                while !matches!(r.read_resolved_event().unwrap().1, Event::Eof) {}
            }
            "clone" => {
                let t = Instant::now();
                let m = black_box(&model).clone();
                best = best.min(t.elapsed());
                drop(black_box(m));
                continue;
            }
            "seq" => {
                let m = vnsnap_rspec::parse_sequential(&xml).unwrap();
                best = best.min(t.elapsed());
                drop(black_box(m));
                continue;
            }
            split if split.starts_with("split") => {
                let threads = split[5..].parse().unwrap_or(2);
                let (m, how) = vnsnap_rspec::parse_split(&xml, threads, 0);
                best = best.min(t.elapsed());
                assert_eq!(how, vnsnap_rspec::Split::Parallel { parts: threads });
                drop(black_box(m.unwrap()));
                continue;
            }
            "fresh" => {
                let m = vnsnap_rspec::parse(&xml).unwrap();
                best = best.min(t.elapsed());
                previous = Some(black_box(m));
                continue;
            }
            _ => {
                let m = vnsnap_rspec::parse(&xml).unwrap();
                best = best.min(t.elapsed());
                drop(black_box(m));
                continue;
            }
        }
        best = best.min(t.elapsed());
    }
    drop(previous);
    eprintln!("{mode}: best {best:?}");
}
