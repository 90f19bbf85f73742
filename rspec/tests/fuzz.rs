//! A bounded fuzz run inside `cargo test`: byte-level mutations of the corpus must never make
//! the reader panic, whatever it accepts must write and read back to an equal model, and the
//! parallel reader (forced onto these small documents) must give exactly the sequential
//! reader's result, model or error.
//! (The same target, unbounded, is in `rspec/fuzz/` for cargo-fuzz.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use vnsnap_rspec::Split;

/// Fragments that steer mutations towards interesting XML rather than random noise.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "\"",
    "'",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "&lt",
    "<!DOCTYPE x>",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?pi?>",
    "xmlns=\"\"",
    "xmlns:a=\"urn:a\"",
    "a:",
    " client_id=\"n\"",
    " type=\"manifest\"",
    "<node>",
    "</node>",
    "<link/>",
    "<interface_ref/>",
    "<ip address=\"::1\" netmask=\"129\"/>",
    " vlantag=\"65536\"",
    "\u{0}",
    "\u{feff}",
    "é",
    "\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, usize),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Mutation::Insert(i, t) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, TOKENS[*t].bytes());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Duplicate(i, n) => {
                let at = i.index(bytes.len());
                let end = (at + n).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::Truncate(i) => {
                let at = i.index(bytes.len());
                bytes.truncate(at);
            }
        }
    }
    bytes
}

/// Bounded for CI; raise with VNSNAP_FUZZ_CASES for a longer local run.
fn cases() -> u32 {
    std::env::var("VNSNAP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000)
}

#[test]
fn mutated_corpus_never_panics_and_accepted_input_round_trips() {
    let corpus = common::corpus();
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    // How many mutated documents were read without error, and how many of those the forced
    // parallel reader read in parts (the others it read again sequentially).
    let (accepted, split_ok) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let input = (any::<Index>(), prop::collection::vec(mutation(), 1..6), 2usize..6);
    let run = runner.run(&input, |(doc, muts, threads)| {
        let (_, xml) = doc.get(&corpus);
        let mutated = apply(xml.clone().into_bytes(), &muts);
        let text = String::from_utf8_lossy(&mutated);
        let sequential = vnsnap_rspec::parse_sequential(&text);
        let (split, how) = vnsnap_rspec::parse_split(&text, threads, 0);
        prop_assert_eq!(&split, &sequential, "read in parts ({:?})", how);
        if sequential.is_ok() {
            accepted.fetch_add(1, Ordering::Relaxed);
            if matches!(how, Split::Parallel { .. }) {
                split_ok.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Ok(model) = vnsnap_rspec::parse(&text) {
            let written = model.to_xml();
            let again = vnsnap_rspec::parse(&written);
            prop_assert!(again.is_ok(), "own output rejected: {:?}\n{}", again, written);
            prop_assert_eq!(again.unwrap(), model);
        }
        // Errors must render without panicking too.
        else if let Err(e) = vnsnap_rspec::parse(&text) {
            let _ = e.to_string();
        }
        // The mutated bytes, read leniently: same in parts, and what is accepted is written
        // back and read again unchanged.
        let lenient = vnsnap_rspec::parse_bytes_lenient(&mutated);
        if let Ok(exact) = std::str::from_utf8(&mutated) {
            let exact = exact.strip_prefix('\u{feff}').unwrap_or(exact);
            prop_assert_eq!(&vnsnap_rspec::parse_split_lenient(exact, threads, 0).0, &lenient);
        }
        match lenient {
            Ok(model) => {
                let written = model.to_xml();
                let again = vnsnap_rspec::parse_lenient(&written);
                prop_assert!(again.is_ok(), "own output rejected leniently: {:?}\n{}", again, written);
                prop_assert_eq!(again.unwrap(), model);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        Ok(())
    });
    if let Err(e) = run {
        panic!("{e}");
    }
    // The parallel reader was exercised: most accepted documents were read in parts (the
    // mutations leave most of them with children of the root on lines of their own).
    let (accepted, split) = (accepted.into_inner(), split_ok.into_inner());
    eprintln!("{accepted} of {} mutated documents accepted, {split} of those read in parts", cases());
    assert!(split * 2 > accepted, "only {split} of {accepted} accepted documents read in parts");
}

/// The same mutations on a generated advertisement of many nodes, read in up to 8 parts, so
/// mutations land in every part and near the cuts: both readers give the same result.
#[test]
fn mutated_large_documents_read_the_same_in_parts() {
    let doc = common::gen::big_advertisement(60).to_xml();
    let config = Config { cases: (cases() / 20).max(10), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let split_ok = AtomicUsize::new(0);
    let input = (prop::collection::vec(mutation(), 1..4), 2usize..9);
    let run = runner.run(&input, |(muts, threads)| {
        let mutated = apply(doc.clone().into_bytes(), &muts);
        let text = String::from_utf8_lossy(&mutated);
        let sequential = vnsnap_rspec::parse_sequential(&text);
        let (split, how) = vnsnap_rspec::parse_split(&text, threads, 0);
        prop_assert_eq!(&split, &sequential, "read in parts ({:?})", how);
        if matches!(how, Split::Parallel { parts } if parts > 1) {
            split_ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = run {
        panic!("{e}");
    }
    // Some mutated documents stay valid and are read in parts.
    let split = split_ok.into_inner();
    eprintln!("{split} of {} mutated large documents read in parts", (cases() / 20).max(10));
    assert!(split > 0, "no mutated document was read in parts");
}
