//! Fuzzes what netd's NAT module reads from the kernel: nfnetlink event
//! datagrams (`count_nftables_events`) and the route tables it takes uplinks
//! from. Any bytes must give an answer, never a panic, and every interface
//! name taken from a route table must be one that is safe in a sysctl path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netd::nat::monitor::count_nftables_events;
use netd::nat::sysctl::{parse_route_ifaces_v4, parse_route_ifaces_v6, valid_ifname};

fuzz_target!(|data: &[u8]| {
    // Each message is at least 16 bytes.
    assert!(count_nftables_events(data) <= data.len() / 16);
    let text = String::from_utf8_lossy(data);
    for name in parse_route_ifaces_v4(&text)
        .iter()
        .chain(parse_route_ifaces_v6(&text).iter())
    {
        assert!(valid_ifname(name), "{name:?}");
        assert!(!name.contains('/') && name != "all" && name != "default");
    }
});
