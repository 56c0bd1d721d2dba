//! Fuzzes the `.nspawn` settings parser: any bytes must give settings or a
//! one-line `FILE:LINE: msg` error, never a panic; and whatever parses must
//! survive the untrusted-file filter.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netspawn::config::{file, merge};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/var/lib/machines/fuzz.nspawn");
    match file::parse_bytes(data, path) {
        Ok(mut parsed) => {
            for w in merge::drop_privileged(&mut parsed.settings) {
                assert!(!w.contains('\n'));
            }
            // Nothing privileged survives a second pass.
            assert!(merge::drop_privileged(&mut parsed.settings).is_empty());
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("/var/lib/machines/fuzz.nspawn:"));
            assert!(!shown.contains('\n'), "{shown:?}");
        }
    }
});
