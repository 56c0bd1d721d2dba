//! Fuzzes the typed messages between our own processes (launcher ↔ PID 1,
//! netspawnctl ↔ its helper in a machine): any bytes must decode to a
//! message or give an error, never a panic; a decoded message encodes back
//! to the very same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netspawn::ctl::message::HelperMessage;
use netspawn::launch::sync::SyncMessage;
use netspawn::tagged::{self, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, rest)) = tagged::decode(data) {
        assert_eq!(
            frame.payload.len() + tagged::HEADER_LEN + rest.len(),
            data.len()
        );
    }
    if let Ok(m) = SyncMessage::decode(data) {
        assert_eq!(m.encode().unwrap(), data);
    }
    if let Ok(m) = HelperMessage::decode(data) {
        assert_eq!(m.encode().unwrap(), data);
    }
});
