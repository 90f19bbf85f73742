//! Any input: the reader must not panic, and whatever it accepts must survive a write/read
//! round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(model) = vnsnap_rspec::parse(&text) {
        let written = model.to_xml();
        let again = vnsnap_rspec::parse(&written).expect("own output must read back");
        assert_eq!(again, model);
    }
});
