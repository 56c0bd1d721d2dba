//! Fuzzes the topology file readers (TOML and containerlab YAML): any bytes
//! must give a lab or a one-line `FILE:LINE: msg` error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netspawn::ctl::topology::fuzz_check(data);
});
