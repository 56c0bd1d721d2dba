//! Fuzzes the DHCP server core: any datagram must give a reply, an ignore or a counted drop,
//! never a panic; and no address is ever bound to two clients.

#![no_main]

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use netd::dhcp::server::{RequestContext, Server, ServerConfig};
use netd::dhcp::MemoryStore;

static SERVER: Mutex<Option<(Server, u64)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = SERVER.lock().unwrap();
    let (server, tick) = guard.get_or_insert_with(|| {
        let cfg = ServerConfig::from_subnet(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.0/28".parse().unwrap(),
            0,
            0,
        )
        .unwrap();
        let s = Server::new(cfg, Box::new(MemoryStore::new()), UNIX_EPOCH).unwrap();
        (s, 0)
    });
    // State carries over between inputs, so sequences of messages are explored too.
    *tick += 1;
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + *tick);
    // One running machine, so the rules for unknown clients (shares, short
    // leases, the rate limit) are explored too.
    let ctx = RequestContext::with_machines(Some("fuzz".into()), [[0x02u8, 0, 0, 0, 0, 1]]);
    let before = server.stats().received;
    let _ = server.handle(data, now, &ctx);
    assert_eq!(server.stats().received, before + 1);
    let mut seen = HashSet::new();
    for l in server.leases().active(now) {
        assert!(seen.insert(l.addr), "{} bound twice", l.addr);
        assert!(server.config().in_pool(l.addr));
    }
});
