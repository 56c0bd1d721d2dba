//! Fuzzes netd's LLMNR responder: any datagram, from a machine's own address
//! or another's, gives a reply, silence or "malformed", never a panic; a
//! reply always parses and echoes the request's ID.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netd::dns::llmnr::{respond, Outcome};
use netd::dns::StaticDirectory;

fn dir() -> &'static StaticDirectory {
    static D: OnceLock<StaticDirectory> = OnceLock::new();
    D.get_or_init(|| {
        StaticDirectory::new([
            (
                "web",
                vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ),
            ("db", vec!["10.0.0.9".parse().unwrap()]),
            ("empty", vec![]),
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let host: [IpAddr; 1] = ["10.0.0.1".parse().unwrap()];
    for from in ["10.0.0.2", "10.0.0.7"] {
        if let Outcome::Reply(r) = respond(data, from.parse().unwrap(), dir(), &host) {
            assert!(r.len() >= 12 && r[..2] == data[..2], "reply without the request's ID");
        }
    }
});
