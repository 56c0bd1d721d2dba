//! Fuzzes the `.nspawn` settings parser: any bytes must give settings or a
//! one-line `FILE:LINE: msg` error, never a panic; and whatever parses must
//! survive the untrusted-file filter.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netspawn::config::fuzz_check(data);
});
