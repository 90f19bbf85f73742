//! A bounded fuzz run inside `cargo test`: byte-level mutations of the corpus must never make
//! the reader panic, and whatever it accepts must write and read back to an equal model.
//! (The same target, unbounded, is in `rspec/fuzz/` for cargo-fuzz.)

mod common;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

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

proptest! {
    // Bounded for CI; raise with VNSNAP_FUZZ_CASES for a longer local run.
    #![proptest_config(Config {
        cases: std::env::var("VNSNAP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn mutated_corpus_never_panics_and_accepted_input_round_trips(
        doc in any::<Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let corpus = common::corpus();
        let (_, xml) = doc.get(&corpus);
        let mutated = apply(xml.clone().into_bytes(), &muts);
        let text = String::from_utf8_lossy(&mutated);
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
    }
}
