//! Fuzzes netd's `.network` parser: any bytes must give a file or a one-line
//! `FILE:LINE: msg` error, never a panic; warnings stay one line naming the
//! file; and matching whatever parsed against a few links must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netd::template::fuzz_check(data);
});
