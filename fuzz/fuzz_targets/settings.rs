//! Fuzzes the `.nspawn` settings parser: any bytes must give settings or a
//! one-line `FILE:LINE: msg` error, never a panic; and whatever parses must
//! survive the untrusted-file filter.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netspawn::settings;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/var/lib/machines/fuzz.nspawn");
    match settings::parse_bytes(data, file) {
        Ok(mut parsed) => {
            for w in parsed.settings.drop_privileged() {
                assert!(!w.contains('\n'));
            }
            // Nothing privileged survives a second pass.
            assert!(parsed.settings.drop_privileged().is_empty());
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("/var/lib/machines/fuzz.nspawn:"));
            assert!(!shown.contains('\n'), "{shown:?}");
        }
    }
});
