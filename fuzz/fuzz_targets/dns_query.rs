//! Fuzzes netd's DNS request path: parse, decide (machine names, PTR,
//! forwarding, refusals) and encode the reply, as the UDP loop does.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netd::dns::answer::{
    decide, encode_reply, forwarded_reply, udp_limit, Decision, LocalNames, UpstreamAnswer,
};
use netd::dns::StaticDirectory;

fn fixture() -> &'static (StaticDirectory, LocalNames) {
    static F: OnceLock<(StaticDirectory, LocalNames)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = StaticDirectory::new([
            (
                "web",
                vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ),
            ("db", vec!["10.0.0.9".parse().unwrap()]),
            ("empty", vec![]),
        ]);
        (dir, LocalNames::with_domain("netspawn").unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, names) = fixture();
    match decide(data, dir, names) {
        Decision::Reply(r) => {
            let _ = encode_reply(&r.message, udp_limit(r.max_payload));
            let _ = encode_reply(&r.message, u16::MAX);
        }
        Decision::Forward(f) => {
            for up in [UpstreamAnswer::Failed, UpstreamAnswer::NxDomain(None)] {
                let _ = encode_reply(&forwarded_reply(&f, up), udp_limit(f.max_payload));
            }
        }
        Decision::Drop(_) => {}
    }
});
