//! Fuzzes the launcher's DHCP client: the input is a run of datagrams (each a 2-byte big-endian
//! length, then that many bytes) fed in order to one client, so offer → ACK/NAK sequences are
//! explored. Never a panic; the wire-view sanitizer is idempotent; a bound lease has a usable
//! address and prefix.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netspawn::network::dhcp_client::{sanitize, Client, Event};

fuzz_target!(|data: &[u8]| {
    let mut client = Client::new([0x0e, 0x11, 0x22, 0x33, 0x44, 0x55], 0x1234_5678, None);
    let _ = client.discover();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (packet, after) = tail.split_at(len);
        rest = after;
        if let Some(clean) = sanitize(packet) {
            assert_eq!(sanitize(&clean).as_deref(), Some(&clean[..]));
        }
        match client.handle(packet) {
            Event::Bound(lease) => {
                assert!(!lease.address.is_unspecified() && lease.prefix_len <= 32);
            }
            Event::Nak => {
                let _ = client.discover();
            }
            Event::SendRequest(_) | Event::Ignore => {}
        }
    }
});
