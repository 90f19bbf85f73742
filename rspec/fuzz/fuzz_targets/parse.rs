//! Any input: the reader must not panic, whatever it accepts must survive a write/read
//! round trip unchanged, and reading it in parts (forced, 2 to 4 threads) gives exactly what
//! reading it sequentially gives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let threads = 2 + data.len() % 3;
    let sequential = vnsnap_rspec::parse_sequential(&text);
    assert_eq!(vnsnap_rspec::parse_split(&text, threads, 0).0, sequential);
    if let Ok(model) = vnsnap_rspec::parse(&text) {
        let written = model.to_xml();
        let again = vnsnap_rspec::parse(&written).expect("own output must read back");
        assert_eq!(again, model);
    }
    // The bytes themselves, read leniently (any kind by its schema's rules).
    if let Ok(model) = vnsnap_rspec::parse_bytes_lenient(data) {
        let again = vnsnap_rspec::parse_lenient(&model.to_xml()).expect("own output must read back leniently");
        assert_eq!(again, model);
    }
});
