//! Parses a generated advertisement in a loop, for profiling the reader with perf.
#[path = "../tests/common/gen.rs"]
mod gen;
use quick_xml::events::Event;
use std::hint::black_box;

fn ns_scan(xml: &str, attrs: bool) -> usize {
    let mut r = quick_xml::NsReader::from_str(xml);
    let mut n = 0;
    loop {
        let (_, ev) = r.read_resolved_event().unwrap();
        match ev {
            Event::Eof => return n,
            Event::Start(e) | Event::Empty(e) if attrs => {
                for a in e.attributes() {
                    let a = a.unwrap();
                    let (res, _l) = r.resolve_attribute(a.key);
                    black_box(res);
                    black_box(a.unescape_value().unwrap());
                    n += 1;
                }
            }
            _ => n += 1,
        }
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let nodes: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let rounds: u32 = std::env::args()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let xml = gen::big_advertisement(nodes).to_xml();
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        match mode.as_str() {
            "raw" => {
                let mut r = quick_xml::Reader::from_str(&xml);
                loop {
                    if let Event::Eof = r.read_event().unwrap() {
                        break;
                    }
                }
            }
            "ns" => {
                black_box(ns_scan(&xml, false));
            }
            "nsattr" => {
                black_box(ns_scan(&xml, true));
            }
            _ => drop(black_box(vnsnap_rspec::parse(&xml).unwrap())),
        }
    }
    eprintln!("{mode}: {:?} per run", t.elapsed() / rounds.max(1));
}
