//! Fuzzes netd's DNS request path: parse, decide (machine names, PTR,
//! forwarding, refusals) and encode the reply, as the UDP loop does; and the
//! UDP fast path, which must never panic and, whenever it answers, must give
//! exactly the bytes the general path gives.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netd::dns::answer::{
    decide, encode_reply, forwarded_reply, udp_limit, Decision, LocalNames, UpstreamAnswer,
};
use netd::dns::fast::{self, FastTable};
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

fn table() -> &'static FastTable {
    static T: OnceLock<FastTable> = OnceLock::new();
    T.get_or_init(|| {
        let (dir, names) = fixture();
        FastTable::build(dir, names)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, names) = fixture();
    let mut out = [0u8; 1232];
    let fast_reply = fast::answer(data, table(), &mut out).map(|n| out[..n].to_vec());
    match decide(data, dir, names) {
        Decision::Reply(r) => {
            let general = encode_reply(&r.message, udp_limit(r.max_payload));
            if let Some(f) = &fast_reply {
                assert_eq!(Some(f), general.as_ref(), "fast path disagrees");
            }
            let _ = encode_reply(&r.message, u16::MAX);
        }
        Decision::Forward(f) => {
            assert!(fast_reply.is_none(), "fast path answered a forwarded name");
            for up in [UpstreamAnswer::Failed, UpstreamAnswer::NxDomain(None)] {
                let _ = encode_reply(&forwarded_reply(&f, up), udp_limit(f.max_payload));
            }
        }
        Decision::Drop(_) => assert!(fast_reply.is_none(), "fast path answered a dropped packet"),
    }
});
