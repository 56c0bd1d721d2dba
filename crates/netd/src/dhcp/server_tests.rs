//! Table-driven tests of the DHCP state machine with packets built by dhcproto.

use std::time::UNIX_EPOCH;

use dhcproto::v4::Flags;

use super::*;
use crate::dhcp::lease::MemoryStore;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::from_subnet(SERVER, "10.0.0.0/28".parse().unwrap(), 0, 0).unwrap();
    c.domain = Some("example.test".into());
    c.search = vec!["lab.example.test".into(), "example.test".into()];
    c
}

fn server_with(cfg: ServerConfig) -> (Server, MemoryStore) {
    let store = MemoryStore::new();
    let s = Server::new(cfg, Box::new(store.clone()), t(0)).unwrap();
    (s, store)
}

fn server() -> (Server, MemoryStore) {
    server_with(config())
}

fn ctx() -> RequestContext {
    RequestContext {
        hostname_for: Some("web".into()),
        ..Default::default()
    }
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x00, 0x01, n]
}

/// A client message; fields default to a fresh client without an address.
#[derive(Clone)]
struct Pkt {
    kind: MessageType,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    client_id: Option<Vec<u8>>,
    lease: Option<u32>,
    broadcast: bool,
    giaddr: Ipv4Addr,
    rapid_commit: bool,
}

fn pkt(kind: MessageType, n: u8) -> Pkt {
    Pkt {
        kind,
        mac: mac(n),
        ciaddr: Ipv4Addr::UNSPECIFIED,
        requested: None,
        server_id: None,
        client_id: None,
        lease: None,
        broadcast: false,
        giaddr: Ipv4Addr::UNSPECIFIED,
        rapid_commit: false,
    }
}

impl Pkt {
    fn ciaddr(mut self, a: Ipv4Addr) -> Self {
        self.ciaddr = a;
        self
    }
    fn requested(mut self, a: Ipv4Addr) -> Self {
        self.requested = Some(a);
        self
    }
    fn server_id(mut self, a: Ipv4Addr) -> Self {
        self.server_id = Some(a);
        self
    }
    fn client_id(mut self, id: &[u8]) -> Self {
        self.client_id = Some(id.to_vec());
        self
    }
    fn lease(mut self, s: u32) -> Self {
        self.lease = Some(s);
        self
    }
    fn broadcast(mut self) -> Self {
        self.broadcast = true;
        self
    }
    fn rapid_commit(mut self) -> Self {
        self.rapid_commit = true;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::new_with_id(
            0x1234_5678,
            self.ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr,
            &self.mac,
        );
        if self.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(self.kind));
        if let Some(a) = self.requested {
            o.insert(DhcpOption::RequestedIpAddress(a));
        }
        if let Some(a) = self.server_id {
            o.insert(DhcpOption::ServerIdentifier(a));
        }
        if let Some(id) = &self.client_id {
            o.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        if let Some(l) = self.lease {
            o.insert(DhcpOption::AddressLeaseTime(l));
        }
        if self.rapid_commit {
            o.insert(DhcpOption::RapidCommit);
        }
        o.insert(DhcpOption::Hostname("client".into()));
        let mut v = Vec::new();
        m.encode(&mut Encoder::new(&mut v)).unwrap();
        v
    }
}

/// A decoded reply.
struct Rep {
    msg: Message,
    to: Destination,
}

impl Rep {
    fn kind(&self) -> Option<MessageType> {
        match self.msg.opts().get(OptionCode::MessageType) {
            Some(DhcpOption::MessageType(k)) => Some(*k),
            _ => None,
        }
    }
    fn opt(&self, c: OptionCode) -> Option<&DhcpOption> {
        self.msg.opts().get(c)
    }
}

fn send(s: &mut Server, p: &Pkt, now: SystemTime) -> Option<Rep> {
    send_with(s, p, now, &ctx())
}

fn send_with(s: &mut Server, p: &Pkt, now: SystemTime, c: &RequestContext) -> Option<Rep> {
    match s.handle(&p.bytes(), now, c) {
        Outcome::Reply { bytes, to } => {
            assert!(bytes.len() >= MIN_PACKET_SIZE);
            let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
            assert_eq!(msg.opcode(), Opcode::BootReply);
            assert_eq!(msg.xid(), 0x1234_5678);
            assert_eq!(msg.chaddr(), &p.mac);
            Some(Rep { msg, to })
        }
        _ => None,
    }
}

/// DISCOVER then REQUEST (selecting); returns the acked address.
fn lease(s: &mut Server, n: u8, now: SystemTime) -> Ipv4Addr {
    let offer = send(s, &pkt(MessageType::Discover, n), now).expect("offer");
    assert_eq!(offer.kind(), Some(MessageType::Offer));
    let a = offer.msg.yiaddr();
    let ack = send(
        s,
        &pkt(MessageType::Request, n).requested(a).server_id(SERVER),
        now,
    )
    .expect("ack");
    assert_eq!(ack.kind(), Some(MessageType::Ack), "client {n}");
    assert_eq!(ack.msg.yiaddr(), a);
    a
}

#[test]
fn a_discover_asking_for_rapid_commit_is_acked_and_bound_at_once() {
    let (mut s, store) = server();
    let ack = send(&mut s, &pkt(MessageType::Discover, 1).rapid_commit(), t(0)).unwrap();
    assert_eq!(ack.kind(), Some(MessageType::Ack));
    assert_eq!(
        ack.opt(OptionCode::RapidCommit),
        Some(&DhcpOption::RapidCommit)
    );
    assert_eq!(
        ack.opt(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    let a = ack.msg.yiaddr();
    assert!(config().in_pool(a));
    let l = s.leases().by_addr(a).expect("bound");
    assert_eq!(l.state, LeaseState::Bound);
    assert_eq!(l.hwaddr, mac(1));
    assert_eq!(l.client_hostname.as_deref(), Some("client"));
    assert_eq!(store.saves(), 1, "a rapid commit is persisted like an ACK");
    assert_eq!((s.stats().acks, s.stats().offers), (1, 0));
    // The client's later REQUEST (renewing) keeps the same address.
    let renew = send(&mut s, &pkt(MessageType::Request, 1).ciaddr(a), t(10)).unwrap();
    assert_eq!(renew.kind(), Some(MessageType::Ack));
    assert_eq!(renew.msg.yiaddr(), a);
    assert_eq!(
        renew.opt(OptionCode::RapidCommit),
        None,
        "only a DISCOVER's ACK says so"
    );
    // Another client's rapid DISCOVER gets another address.
    let other = send(&mut s, &pkt(MessageType::Discover, 2).rapid_commit(), t(10)).unwrap();
    assert_eq!(other.kind(), Some(MessageType::Ack));
    assert_ne!(other.msg.yiaddr(), a);
}

#[test]
fn rapid_commit_is_offered_as_usual_when_off_or_not_asked_for() {
    let mut cfg = config();
    cfg.rapid_commit = false;
    let (mut off, store) = server_with(cfg);
    let r = send(
        &mut off,
        &pkt(MessageType::Discover, 1).rapid_commit(),
        t(0),
    )
    .unwrap();
    assert_eq!(r.kind(), Some(MessageType::Offer), "RapidCommit=no");
    assert_eq!(r.opt(OptionCode::RapidCommit), None);
    assert_eq!(store.saves(), 0);
    let (mut on, store) = server();
    let r = send(&mut on, &pkt(MessageType::Discover, 1), t(0)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Offer), "not asked for");
    assert_eq!(r.opt(OptionCode::RapidCommit), None);
    assert_eq!(store.saves(), 0);
}

#[test]
fn pool_carving_follows_networkd() {
    let net = |s: &str| s.parse::<Ipv4Network>().unwrap();
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    // (server, subnet, PoolOffset, PoolSize, expected pool or None for an error)
    type Case<'a> = (&'a str, &'a str, u32, u32, Option<(&'a str, &'a str)>);
    let cases: &[Case] = &[
        (
            "10.0.0.1",
            "10.0.0.0/28",
            0,
            0,
            Some(("10.0.0.1", "10.0.0.14")),
        ),
        (
            "10.0.0.1",
            "10.0.0.0/28",
            8,
            4,
            Some(("10.0.0.8", "10.0.0.11")),
        ),
        (
            "10.0.0.1",
            "10.0.0.0/28",
            8,
            0,
            Some(("10.0.0.8", "10.0.0.14")),
        ),
        ("10.0.0.1", "10.0.0.0/28", 8, 8, None),
        ("10.0.0.1", "10.0.0.0/28", 15, 0, None),
        (
            "192.168.5.7",
            "192.168.5.0/24",
            0,
            0,
            Some(("192.168.5.1", "192.168.5.254")),
        ),
        ("10.0.0.1", "10.0.0.0/31", 0, 0, None),
        ("10.0.1.1", "10.0.0.0/28", 0, 0, None),
        ("10.0.0.0", "10.0.0.0/28", 0, 0, None),
    ];
    for (srv, subnet, off, size, want) in cases {
        let got = ServerConfig::from_subnet(ip(srv), net(subnet), *off, *size).ok();
        let got = got.map(|c| (c.pool_start, c.pool_end));
        let want = want.map(|(a, b)| (ip(a), ip(b)));
        assert_eq!(got, want, "{srv} {subnet} offset {off} size {size}");
    }
    let c = config();
    assert!(!c.in_pool(SERVER));
    assert!(c.in_pool(ip("10.0.0.2")));
    assert!(!c.in_pool(ip("10.0.0.15")));
}

#[test]
fn discover_offer_request_ack_with_all_options() {
    let (mut s, store) = server();
    let offer = send(&mut s, &pkt(MessageType::Discover, 1), t(0)).unwrap();
    assert_eq!(offer.kind(), Some(MessageType::Offer));
    assert_eq!(offer.to, Destination::Broadcast);
    let a = offer.msg.yiaddr();
    assert!(config().in_pool(a));
    assert_eq!(store.saves(), 0, "an offer is not persisted");
    let expect = [
        DhcpOption::ServerIdentifier(SERVER),
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 240)),
        DhcpOption::Router(vec![SERVER]),
        DhcpOption::DomainNameServer(vec![SERVER]),
        DhcpOption::DomainName("example.test".into()),
        DhcpOption::DomainSearch(vec![
            "lab.example.test.".parse().unwrap(),
            "example.test.".parse().unwrap(),
        ]),
        DhcpOption::Hostname("web".into()),
        DhcpOption::AddressLeaseTime(3600),
        DhcpOption::Renewal(1800),
        DhcpOption::Rebinding(3150),
    ];
    for o in &expect {
        assert_eq!(offer.opt(OptionCode::from(o)), Some(o), "offer");
    }
    let ack = send(
        &mut s,
        &pkt(MessageType::Request, 1).requested(a).server_id(SERVER),
        t(1),
    )
    .unwrap();
    assert_eq!(ack.kind(), Some(MessageType::Ack));
    assert_eq!(ack.msg.yiaddr(), a);
    for o in &expect {
        assert_eq!(ack.opt(OptionCode::from(o)), Some(o), "ack");
    }
    assert_eq!(
        store.saves(),
        1,
        "the ACK is persisted before it is returned"
    );
    let saved = store.saved_table();
    let l = saved.by_addr(a).unwrap();
    assert!(l.is_active(t(2)));
    assert_eq!(l.hwaddr, mac(1));
    assert_eq!(l.client_hostname.as_deref(), Some("client"));
    assert_eq!(s.stats().offers, 1);
    assert_eq!(s.stats().acks, 1);
}

#[test]
fn request_table() {
    // Client 1 holds the first address; each case is run on a fresh copy of that state.
    struct Case {
        name: &'static str,
        pkt: fn(Ipv4Addr, Ipv4Addr) -> Pkt, // (client 1's address, a free address)
        want: Option<MessageType>,
        to: Option<Destination>,
    }
    let cases = [
        Case {
            name: "selecting another server: silent",
            pkt: |_, f| {
                pkt(MessageType::Request, 2)
                    .requested(f)
                    .server_id(Ipv4Addr::new(10, 0, 0, 9))
            },
            want: None,
            to: None,
        },
        Case {
            name: "init-reboot own address",
            pkt: |a, _| pkt(MessageType::Request, 1).requested(a),
            want: Some(MessageType::Ack),
            to: Some(Destination::Broadcast),
        },
        Case {
            name: "init-reboot someone else's address",
            pkt: |a, _| pkt(MessageType::Request, 2).requested(a),
            want: Some(MessageType::Nak),
            to: Some(Destination::Broadcast),
        },
        Case {
            name: "init-reboot off-subnet",
            pkt: |_, _| pkt(MessageType::Request, 2).requested(Ipv4Addr::new(192, 168, 1, 5)),
            want: Some(MessageType::Nak),
            to: Some(Destination::Broadcast),
        },
        Case {
            name: "init-reboot the server's address",
            pkt: |_, _| pkt(MessageType::Request, 2).requested(SERVER),
            want: Some(MessageType::Nak),
            to: Some(Destination::Broadcast),
        },
        Case {
            name: "init-reboot free address with no record",
            pkt: |_, f| pkt(MessageType::Request, 2).requested(f),
            want: Some(MessageType::Ack),
            to: Some(Destination::Broadcast),
        },
        Case {
            name: "renewing own address: unicast",
            pkt: |a, _| pkt(MessageType::Request, 1).ciaddr(a),
            want: Some(MessageType::Ack),
            to: None, // checked below: Unicast(a)
        },
        Case {
            name: "renewing someone else's address",
            pkt: |a, _| pkt(MessageType::Request, 2).ciaddr(a),
            want: Some(MessageType::Nak),
            to: Some(Destination::Broadcast),
        },
        Case {
            name: "selecting us with no address",
            pkt: |_, _| pkt(MessageType::Request, 2).server_id(SERVER),
            want: None,
            to: None,
        },
        Case {
            name: "broadcast flag honoured",
            pkt: |a, _| pkt(MessageType::Request, 1).requested(a).broadcast(),
            want: Some(MessageType::Ack),
            to: Some(Destination::Broadcast),
        },
    ];
    for c in cases {
        let (mut s, store) = server();
        let a = lease(&mut s, 1, t(0));
        let free = (2..=14)
            .map(|i| Ipv4Addr::new(10, 0, 0, i))
            .find(|x| *x != a)
            .unwrap();
        let p = (c.pkt)(a, free);
        let saves = store.saves();
        let r = send(&mut s, &p, t(10));
        assert_eq!(r.as_ref().and_then(Rep::kind), c.want, "{}", c.name);
        if let (Some(r), Some(to)) = (&r, c.to) {
            assert_eq!(r.to, to, "{}", c.name);
        }
        match c.want {
            Some(MessageType::Ack) => assert_eq!(store.saves(), saves + 1, "{}", c.name),
            Some(MessageType::Nak) => {
                let r = r.as_ref().unwrap();
                assert_eq!(r.msg.yiaddr(), Ipv4Addr::UNSPECIFIED, "{}", c.name);
                assert_eq!(r.opt(OptionCode::AddressLeaseTime), None, "{}", c.name);
                assert_eq!(store.saves(), saves, "{}", c.name);
            }
            _ => {}
        }
        if c.name.starts_with("renewing own") {
            assert_eq!(r.as_ref().unwrap().to, Destination::Unicast(a));
            let l = store.saved_table();
            assert_eq!(l.get(&key(1)).map(|l| l.expires), Some(t(10 + 3600)));
        }
        // Whatever happened, client 1 still owns its address.
        assert_eq!(
            s.leases().get(&key(1)).map(|l| l.addr),
            Some(a),
            "{}",
            c.name
        );
    }
}

fn key(n: u8) -> ClientKey {
    ClientKey::from_hwaddr(1, &mac(n))
}

#[test]
fn same_client_gets_the_same_address_back() {
    let (mut s, _) = server();
    let a = lease(&mut s, 1, t(0));
    let b = lease(&mut s, 2, t(0));
    assert_ne!(a, b);
    // Re-discovering while bound.
    assert_eq!(lease(&mut s, 1, t(100)), a);
    // After a release.
    let rel = pkt(MessageType::Release, 1).ciaddr(a).server_id(SERVER);
    assert!(send(&mut s, &rel, t(200)).is_none());
    assert_eq!(
        s.leases().get(&key(1)).map(|l| l.state),
        Some(LeaseState::Released)
    );
    assert_eq!(lease(&mut s, 1, t(300)), a);
    // After expiry, even with other clients coming and going meanwhile.
    for n in 3..8 {
        lease(&mut s, n, t(100_000));
    }
    assert_eq!(lease(&mut s, 1, t(100_000)), a);
    // A new server with an empty table (lease file lost) still gives the MAC the same address:
    // the pick is a hash of the MAC.
    let (mut fresh, _) = server();
    assert_eq!(lease(&mut fresh, 1, t(0)), a);
    assert_eq!(lease(&mut fresh, 2, t(0)), b);
}

#[test]
fn client_identifier_takes_precedence_over_mac() {
    let (mut s, _) = server();
    let offer = send(
        &mut s,
        &pkt(MessageType::Discover, 1).client_id(b"\xffmachine-a"),
        t(0),
    )
    .unwrap();
    let a = offer.msg.yiaddr();
    assert_eq!(
        offer.opt(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(b"\xffmachine-a".to_vec())),
        "RFC 6842 echo"
    );
    let req = pkt(MessageType::Request, 1)
        .client_id(b"\xffmachine-a")
        .requested(a)
        .server_id(SERVER);
    assert_eq!(
        send(&mut s, &req, t(0)).unwrap().kind(),
        Some(MessageType::Ack)
    );
    // Same client id, new MAC: same address.
    let req2 = pkt(MessageType::Request, 9)
        .client_id(b"\xffmachine-a")
        .requested(a);
    assert_eq!(
        send(&mut s, &req2, t(5)).unwrap().kind(),
        Some(MessageType::Ack)
    );
    // Same MAC, other client id: a different client, which cannot have the bound address.
    let other = pkt(MessageType::Discover, 9).client_id(b"\xffmachine-b");
    assert_ne!(send(&mut s, &other, t(5)).unwrap().msg.yiaddr(), a);
    // Once machine-a released it, another DHCP client on the same MAC (no client id) gets it.
    let rel = pkt(MessageType::Release, 9)
        .client_id(b"\xffmachine-a")
        .ciaddr(a);
    assert!(send(&mut s, &rel, t(6)).is_none());
    let plain = send(&mut s, &pkt(MessageType::Discover, 9), t(7)).unwrap();
    assert_eq!(plain.msg.yiaddr(), a);
}

#[test]
fn offers_reserve_and_are_forgotten_when_another_server_is_chosen() {
    let (mut s, _) = server();
    let a = send(&mut s, &pkt(MessageType::Discover, 1), t(0))
        .unwrap()
        .msg
        .yiaddr();
    // Client 2 asks for client 1's offered address: refused while the offer holds.
    let r = send(&mut s, &pkt(MessageType::Request, 2).requested(a), t(1)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Nak));
    // Client 1 picks another server: the offer is dropped and the address is free again.
    let other = pkt(MessageType::Request, 1)
        .requested(a)
        .server_id(Ipv4Addr::new(10, 0, 0, 9));
    assert!(send(&mut s, &other, t(2)).is_none());
    let r = send(&mut s, &pkt(MessageType::Request, 2).requested(a), t(3)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Ack));
}

#[test]
fn decline_quarantines_the_address() {
    let (mut s, store) = server();
    let a = lease(&mut s, 1, t(0));
    // Someone else cannot decline it.
    let spoof = pkt(MessageType::Decline, 2).requested(a).server_id(SERVER);
    assert!(send(&mut s, &spoof, t(1)).is_none());
    assert!(s.leases().get(&key(1)).is_some());
    let dec = pkt(MessageType::Decline, 1).requested(a).server_id(SERVER);
    assert!(send(&mut s, &dec, t(1)).is_none());
    assert!(store.saved_table().is_declined(a, t(2)));
    assert_eq!(s.stats().declines, 1);
    let b = lease(&mut s, 1, t(2));
    assert_ne!(a, b, "a declined address is not offered again");
    let r = send(&mut s, &pkt(MessageType::Request, 3).requested(a), t(3)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Nak));
    // After the hold time it is usable again.
    let r = send(&mut s, &pkt(MessageType::Request, 3).requested(a), t(1000)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Ack));
}

#[test]
fn inform_gets_options_without_a_lease() {
    let (mut s, store) = server();
    let ci = Ipv4Addr::new(10, 0, 0, 12);
    let r = send(&mut s, &pkt(MessageType::Inform, 1).ciaddr(ci), t(0)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Ack));
    assert_eq!(r.to, Destination::Unicast(ci));
    assert_eq!(r.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.msg.ciaddr(), ci);
    assert_eq!(r.opt(OptionCode::AddressLeaseTime), None);
    assert_eq!(
        r.opt(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert!(s.leases().is_empty());
    assert_eq!(store.saves(), 0);
}

#[test]
fn lease_time_is_clamped() {
    let cases = [
        (None, 3600),
        (Some(600), 600),
        (Some(0), 3600),
        (Some(10 * 86400), 12 * 3600),
    ];
    for (asked, granted) in cases {
        let (mut s, _) = server();
        let mut d = pkt(MessageType::Discover, 1);
        d.lease = asked;
        let r = send(&mut s, &d, t(0)).unwrap();
        assert_eq!(
            r.opt(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(granted)),
            "asked {asked:?}"
        );
        let _ = pkt(MessageType::Discover, 1).lease(1);
    }
}

#[test]
fn pool_exhaustion_gives_no_offer_and_never_a_duplicate() {
    let cfg = ServerConfig::from_subnet(SERVER, "10.0.0.0/28".parse().unwrap(), 1, 3).unwrap();
    // Pool .1-.3 contains the server's own .1: two addresses for clients.
    let (mut s, _) = server_with(cfg);
    let a = lease(&mut s, 1, t(0));
    let b = lease(&mut s, 2, t(0));
    assert_ne!(a, b);
    assert!(![a, b].contains(&SERVER));
    assert_eq!(
        s.handle(&pkt(MessageType::Discover, 3).bytes(), t(1), &ctx()),
        Outcome::Drop(DropReason::PoolExhausted)
    );
    assert_eq!(s.stats().pool_exhausted, 1);
    assert_eq!(s.stats().dropped_other, 1);
    // Said when asked about that time, not about a later one.
    let why = s
        .exhausted_since(t(1))
        .expect("the pool was exhausted at t(1)");
    assert!(why.contains("10.0.0.1-10.0.0.3 (2 addresses)"), "{why}");
    assert_eq!(s.exhausted_since(t(2)), None);
    // Client 2 renews; once client 1's lease expires, client 3 can have its address.
    let renew = pkt(MessageType::Request, 2).ciaddr(b);
    assert_eq!(
        send(&mut s, &renew, t(3000)).unwrap().kind(),
        Some(MessageType::Ack)
    );
    assert_eq!(lease(&mut s, 3, t(4000)), a);
    // And client 1 is refused its old address now.
    let r = send(&mut s, &pkt(MessageType::Request, 1).requested(a), t(4001)).unwrap();
    assert_eq!(r.kind(), Some(MessageType::Nak));
}

#[test]
fn nothing_is_acked_unsaved() {
    let (mut s, store) = server();
    let a = send(&mut s, &pkt(MessageType::Discover, 1), t(0))
        .unwrap()
        .msg
        .yiaddr();
    store.set_failing(true);
    let req = pkt(MessageType::Request, 1).requested(a).server_id(SERVER);
    assert!(matches!(
        s.handle(&req.bytes(), t(1), &ctx()),
        Outcome::Drop(DropReason::SaveFailed(_))
    ));
    assert_eq!(s.stats().save_failures, 1);
    assert_eq!(s.stats().acks, 0);
    store.set_failing(false);
    assert_eq!(
        send(&mut s, &req, t(2)).unwrap().kind(),
        Some(MessageType::Ack)
    );
}

#[test]
fn crash_and_restart_keeps_every_binding() {
    let (mut s, store) = server();
    let addrs: Vec<Ipv4Addr> = (1..=6).map(|n| lease(&mut s, n, t(0))).collect();
    let rel = pkt(MessageType::Release, 6)
        .ciaddr(addrs[5])
        .server_id(SERVER);
    send(&mut s, &rel, t(1));
    drop(s); // kill -9: only what the store has survives.
    let mut s = Server::new(config(), Box::new(store.clone()), t(10)).unwrap();
    for (i, a) in addrs.iter().enumerate() {
        let n = i as u8 + 1;
        let r = send(&mut s, &pkt(MessageType::Request, n).requested(*a), t(10)).unwrap();
        assert_eq!(r.kind(), Some(MessageType::Ack), "client {n} keeps {a}");
    }
    // New clients get none of those addresses.
    for n in 20..27 {
        let b = lease(&mut s, n, t(10));
        assert!(!addrs.contains(&b), "{b} handed out twice");
    }
    let active: Vec<Ipv4Addr> = s.leases().active(t(11)).map(|l| l.addr).collect();
    let mut dedup = active.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(active.len(), dedup.len());
    assert_eq!(active.len(), 13, "the whole pool is bound");
}

#[test]
fn restart_with_a_recarved_pool_drops_foreign_bindings() {
    let (mut s, store) = server();
    let addrs: Vec<Ipv4Addr> = (1..=5).map(|n| lease(&mut s, n, t(0))).collect();
    let small = ServerConfig::from_subnet(SERVER, "10.0.0.0/28".parse().unwrap(), 2, 2).unwrap();
    let s = Server::new(small.clone(), Box::new(store), t(1)).unwrap();
    assert!(s.leases().iter().all(|l| small.in_pool(l.addr)));
    assert_eq!(
        s.leases().len(),
        addrs.iter().filter(|a| small.in_pool(**a)).count()
    );
}

#[test]
fn bad_packets_are_dropped_and_counted() {
    let good = pkt(MessageType::Discover, 1).bytes();
    let mut bootreply = good.clone();
    bootreply[0] = 2;
    let mut long_hlen = good.clone();
    long_hlen[2] = 200;
    let mut bad_cookie = good.clone();
    bad_cookie[236] = 0;
    let mut no_type = good[..240].to_vec();
    no_type.push(255);
    let mut bad_type_len = good[..240].to_vec();
    bad_type_len.extend_from_slice(&[53, 0]);
    let mut garbage_opts = good[..240].to_vec();
    garbage_opts.extend_from_slice(&[53, 1, 1, 50, 3, 1, 2]);
    let mut relayed = pkt(MessageType::Discover, 1);
    relayed.giaddr = Ipv4Addr::new(192, 168, 0, 1);
    let offer_from_client = pkt(MessageType::Offer, 1).bytes();
    let mut zero_mac = pkt(MessageType::Discover, 1);
    zero_mac.mac = [0; 6];
    let mut empty_cid = good[..240].to_vec();
    empty_cid.extend_from_slice(&[53, 1, 1, 61, 0, 255]);
    let request_without_addr = pkt(MessageType::Request, 1).bytes();

    let malformed = |w| Some(DropReason::Malformed(w));
    let cases: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("empty", vec![], malformed("shorter than a BOOTP header")),
        (
            "one byte",
            vec![1],
            malformed("shorter than a BOOTP header"),
        ),
        (
            "truncated header",
            good[..239].to_vec(),
            malformed("shorter than a BOOTP header"),
        ),
        ("bootreply", bootreply, Some(DropReason::NotRequest)),
        (
            "hlen 200",
            long_hlen,
            malformed("hardware address longer than 16 bytes"),
        ),
        ("bad cookie", bad_cookie, malformed("no DHCP magic cookie")),
        (
            "no options",
            good[..240].to_vec(),
            malformed("no message type"),
        ),
        ("no message type", no_type, malformed("no message type")),
        (
            "message type without value",
            bad_type_len,
            malformed("bad message type option"),
        ),
        // A truncated last option ends the options, as a missing END would: still served.
        ("truncated option after type", garbage_opts, None),
        ("relayed", relayed.bytes(), Some(DropReason::Relayed)),
        (
            "offer from a client",
            offer_from_client,
            Some(DropReason::UnexpectedType),
        ),
        (
            "zero MAC, no client id",
            zero_mac.bytes(),
            malformed("no client hardware address"),
        ),
        (
            "empty client id",
            empty_cid,
            malformed("empty client identifier"),
        ),
        (
            "request naming no address",
            request_without_addr,
            malformed("REQUEST names no address"),
        ),
    ];
    for (name, bytes, want) in cases {
        let (mut s, _) = server();
        let out = s.handle(&bytes, t(0), &ctx());
        match want {
            Some(reason) => {
                assert_eq!(out, Outcome::Drop(reason.clone()), "{name}");
                let st = s.stats();
                let counted = if matches!(reason, DropReason::Malformed(_)) {
                    st.dropped_malformed
                } else {
                    st.dropped_other
                };
                assert_eq!(counted, 1, "{name}");
            }
            None => assert!(matches!(out, Outcome::Reply { .. }), "{name}: {out:?}"),
        }
        assert_eq!(s.stats().received, 1, "{name}");
    }
}

/// A cheap xorshift generator so the test needs no extra crate and is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hundred_thousand_mutated_packets_never_panic_nor_double_allocate() {
    let (mut s, _) = server();
    let seeds = [
        pkt(MessageType::Discover, 1).bytes(),
        pkt(MessageType::Request, 2)
            .requested(Ipv4Addr::new(10, 0, 0, 5))
            .bytes(),
        pkt(MessageType::Request, 3)
            .ciaddr(Ipv4Addr::new(10, 0, 0, 6))
            .bytes(),
        pkt(MessageType::Release, 4)
            .ciaddr(Ipv4Addr::new(10, 0, 0, 6))
            .bytes(),
        pkt(MessageType::Decline, 5)
            .requested(Ipv4Addr::new(10, 0, 0, 7))
            .bytes(),
        pkt(MessageType::Inform, 6)
            .ciaddr(Ipv4Addr::new(10, 0, 0, 8))
            .bytes(),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..100_000u64 {
        let mut p = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
        match rng.next() % 4 {
            0 => {
                for _ in 0..(1 + rng.next() % 8) {
                    let at = (rng.next() as usize) % p.len();
                    p[at] = rng.next() as u8;
                }
            }
            1 => p.truncate((rng.next() as usize) % (p.len() + 1)),
            2 => {
                // Mutate only the options, keeping the header valid, so decoding gets deep.
                let at = 240 + (rng.next() as usize) % (p.len() - 240);
                p[at] = rng.next() as u8;
                p.extend((0..rng.next() % 40).map(|_| rng.next() as u8));
            }
            _ => p = (0..rng.next() % 600).map(|_| rng.next() as u8).collect(),
        }
        let _ = s.handle(&p, t(i / 10), &ctx());
    }
    let now = t(10_000);
    let mut seen = HashSet::new();
    for l in s.leases().active(now) {
        assert!(seen.insert(l.addr), "{} bound twice", l.addr);
        assert!(config().in_pool(l.addr));
    }
    assert_eq!(s.stats().received, 100_000);
}

// ---- Addresses belong to machines (issue 9, items 4, 5 and 9) ----

/// A context in which the machines with these MAC numbers run.
fn live(ns: &[u8]) -> RequestContext {
    RequestContext::with_machines(None, ns.iter().map(|n| mac(*n)))
}

/// DISCOVER then REQUEST under `c`; the acked address, or why not.
fn lease_in(
    s: &mut Server,
    p: Pkt,
    now: SystemTime,
    c: &RequestContext,
) -> Result<(Ipv4Addr, u32), Outcome> {
    let out = s.handle(&p.bytes(), now, c);
    let Some(offer) = send_with(s, &p, now, c) else {
        return Err(out);
    };
    let a = offer.msg.yiaddr();
    let mut req = p.clone();
    req.kind = MessageType::Request;
    let req = req.requested(a).server_id(SERVER);
    let ack = send_with(s, &req, now, c).ok_or_else(|| s.handle(&req.bytes(), now, c))?;
    assert_eq!(ack.kind(), Some(MessageType::Ack));
    let secs = match ack.opt(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(l)) => *l,
        _ => 0,
    };
    Ok((a, secs))
}

#[test]
fn unknown_share_of_the_pool() {
    for (pool, share) in [(1, 1), (3, 3), (4, 4), (13, 4), (16, 4), (20, 5), (253, 63)] {
        assert_eq!(unknown_share(pool), share, "pool of {pool}");
    }
}

/// Item 4: sequential machines with unique names, each gone before the next, on a pool of 13.
/// Before, the 14th found every address bound for an hour.
#[test]
fn machines_that_are_gone_leave_their_addresses_to_the_next() {
    let (mut s, _) = server();
    let mut got = Vec::new();
    for n in 0..60u8 {
        let now = t(u64::from(n) * 5);
        let (a, secs) = lease_in(&mut s, pkt(MessageType::Discover, n), now, &live(&[n]))
            .unwrap_or_else(|e| panic!("machine {n}: {e:?}"));
        assert_eq!(secs, 3600, "a machine's lease is not shortened");
        got.push(a);
    }
    // The first 13 got distinct fresh addresses; then the oldest gone machine's went first.
    assert_eq!(got[..13].iter().collect::<HashSet<_>>().len(), 13);
    assert_eq!(got[13], got[0]);
    assert_eq!(got[14], got[1]);
    assert!(s.stats().reclaimed > 0);
    assert!(s.leases().len() <= 13);
}

/// A machine's address stays reserved for it (same name, same MAC) while the pool has room,
/// and while it runs, even after its lease ran out (the launcher never renews).
#[test]
fn a_running_machine_keeps_its_address_and_a_gone_one_keeps_it_while_there_is_room() {
    let (mut s, _) = server();
    let (a, _) = lease_in(&mut s, pkt(MessageType::Discover, 1), t(0), &live(&[1])).unwrap();
    // Machine 1 is gone; others come and go, with room left: 1's address is not used.
    for n in 2..10u8 {
        let (b, _) = lease_in(&mut s, pkt(MessageType::Discover, n), t(10), &live(&[n])).unwrap();
        assert_ne!(b, a);
    }
    // It comes back (same name, same MAC) and gets its address.
    assert_eq!(
        lease_in(&mut s, pkt(MessageType::Discover, 1), t(20), &live(&[1]))
            .unwrap()
            .0,
        a
    );
    // It keeps running long after its hour; 20 other machines come and go: none gets it.
    for n in 30..50u8 {
        let c = live(&[1, n]);
        let (b, _) = lease_in(&mut s, pkt(MessageType::Discover, n), t(90_000), &c).unwrap();
        assert_ne!(b, a, "machine {n} took the address of running machine 1");
    }
    // An INIT-REBOOT for it by someone else is refused too.
    let r = send_with(
        &mut s,
        &pkt(MessageType::Request, 60).requested(a),
        t(90_001),
        &live(&[1, 60]),
    )
    .unwrap();
    assert_eq!(r.kind(), Some(MessageType::Nak));
}

/// Running machines found only on need (netd reads the name locks then) count as the ones given
/// at once, and are looked for only when a decision asks about a MAC the others lack: at most
/// once per request context.
#[test]
fn running_machines_found_on_need_count_and_are_looked_for_only_when_needed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let on_need = |given: &[u8], more: &[u8]| {
        let more: HashSet<Vec<u8>> = more.iter().map(|n| mac(*n).to_vec()).collect();
        let calls = calls.clone();
        live(given).and_on_need(MoreMachines::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            more.clone()
        }))
    };
    let (mut s, _) = server();
    // A machine that is among those given: nothing more is looked for.
    let c = on_need(&[1], &[]);
    let (a, secs) = lease_in(&mut s, pkt(MessageType::Discover, 1), t(0), &c).unwrap();
    assert_eq!(secs, 3600);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(c.more_machines.as_ref().is_some_and(|m| !m.found()));
    // Machine 1 runs long after its hour, known only on need: nobody gets its address.
    for n in 30..50u8 {
        let before = calls.load(Ordering::SeqCst);
        let c = on_need(&[n], &[1]);
        let (b, _) = lease_in(&mut s, pkt(MessageType::Discover, n), t(90_000), &c).unwrap();
        assert_ne!(b, a, "machine {n} took the address of running machine 1");
        assert!(
            calls.load(Ordering::SeqCst) - before <= 1,
            "looked for once at most"
        );
    }
    assert!(calls.load(Ordering::SeqCst) > 0);
    // Known on need, machine 1 is a machine too: its lease is not shortened.
    let (b, secs) = lease_in(
        &mut s,
        pkt(MessageType::Discover, 1),
        t(90_010),
        &on_need(&[], &[1]),
    )
    .unwrap();
    assert_eq!((b, secs), (a, 3600));
    let r = send_with(
        &mut s,
        &pkt(MessageType::Request, 60).requested(a),
        t(90_011),
        &on_need(&[60], &[1]),
    )
    .unwrap();
    assert_eq!(r.kind(), Some(MessageType::Nak));
}

/// Item 5: made-up client identifiers (one container, many IDs) get a bounded share, short
/// leases, and are rate limited; a machine still gets its address afterwards.
#[test]
fn made_up_clients_get_a_bounded_rate_limited_share_and_machines_still_lease() {
    // (seconds between made-up clients, how many, admitted at most, refused by rate or share)
    let cases: &[(u64, u8, u64, &str)] = &[
        // A burst: the rate limit stops it at 10, the share (4 of 13) at 4.
        (0, 100, 4, "share"),
        // Slow but many: only the share stops them.
        (2, 100, 4, "share"),
    ];
    for (gap, count, admitted, _why) in cases {
        let (mut s, _) = server();
        let c = live(&[1, 2]);
        for i in 0..*count {
            let p = pkt(MessageType::Discover, 200).client_id(&[0xff, i, 0, 0, 0, 0, 1]);
            if let Ok((_, secs)) = lease_in(&mut s, p, t(u64::from(i) * gap), &c) {
                assert!(secs <= 120, "an unknown client's lease is short: {secs}");
            }
        }
        let active = s.leases().active(t(u64::from(*count) * gap)).count() as u64;
        assert!(active <= *admitted, "gap {gap}: {active} held");
        assert!(s.stats().share_exhausted + s.stats().rate_limited > 0);
        // The machines still lease.
        for n in [1, 2] {
            lease_in(&mut s, pkt(MessageType::Discover, n), t(1000), &c)
                .unwrap_or_else(|e| panic!("machine {n} after a flood of {gap}: {e:?}"));
        }
    }
    // The rate limit alone: 10 new unknown clients per 10 s, with a share large enough.
    let cfg = ServerConfig::from_subnet(SERVER, "10.0.0.0/24".parse().unwrap(), 0, 0).unwrap();
    let (mut s, _) = server_with(cfg);
    let c = live(&[]);
    let mut ok = 0;
    for i in 0..50u8 {
        let p = pkt(MessageType::Discover, i);
        if send_with(&mut s, &p, t(0), &c).is_some() {
            ok += 1;
        }
    }
    assert_eq!(ok, NEW_CLIENTS_PER_WINDOW);
    assert_eq!(s.stats().rate_limited, 40);
    // Ten seconds later, ten more.
    let later = (50..70u8)
        .filter(|i| send_with(&mut s, &pkt(MessageType::Discover, *i), t(10), &c).is_some())
        .count();
    assert_eq!(later, NEW_CLIENTS_PER_WINDOW);
    // INIT-REBOOT requests (no DISCOVER) of new unknown clients count against the same limit.
    let (mut s2, _) = server_with(
        ServerConfig::from_subnet(SERVER, "10.0.0.0/24".parse().unwrap(), 0, 0).unwrap(),
    );
    let acks = (0..30u8)
        .filter(|i| {
            let a = Ipv4Addr::new(10, 0, 0, 100 + i);
            let r = send_with(
                &mut s2,
                &pkt(MessageType::Request, *i).requested(a),
                t(0),
                &c,
            );
            r.is_some_and(|r| r.kind() == Some(MessageType::Ack))
        })
        .count();
    assert_eq!(acks, NEW_CLIENTS_PER_WINDOW);
    // Memory stays bounded: offers and bindings never exceed the pool.
    assert!(s.offers.len() <= 254 && s.leases().len() <= 254);
    assert!(s.new_unknown.len() <= NEW_CLIENTS_PER_WINDOW);
}

/// Offers to unknown clients lapse quickly; when nothing else is left, a machine takes the
/// oldest unknown client's running lease; a second identity on a machine's MAC is unknown.
#[test]
fn machines_come_first() {
    // A pool of four: the unknown share is the whole pool.
    let cfg = ServerConfig::from_subnet(SERVER, "10.0.0.0/28".parse().unwrap(), 2, 4).unwrap();
    let (mut s, _) = server_with(cfg);
    let c = live(&[1]);
    let mut unknown = Vec::new();
    for i in 0..4u8 {
        let p = pkt(MessageType::Discover, 100 + i);
        unknown.push(lease_in(&mut s, p, t(u64::from(i)), &c).unwrap().0);
    }
    let r = s.handle(&pkt(MessageType::Discover, 120).bytes(), t(5), &c);
    assert_eq!(r, Outcome::Drop(DropReason::ShareExhausted));
    // Machine 1 arrives: the pool is full of unknown clients' leases; it gets the oldest.
    let (a, secs) = lease_in(&mut s, pkt(MessageType::Discover, 1), t(6), &c).unwrap();
    assert_eq!(a, unknown[0]);
    assert_eq!(secs, 3600);
    // Made-up client identities on the machine's MAC (a flood from inside the machine, or a
    // second DHCP client there) are the machine: all get its one address.
    for i in 0..20u8 {
        let p = pkt(MessageType::Discover, 1).client_id(&[0, b'x', i]);
        assert_eq!(
            lease_in(&mut s, p, t(7), &c).unwrap(),
            (a, 3600),
            "identity {i}"
        );
    }
    assert_eq!(s.leases().iter().filter(|l| l.hwaddr == mac(1)).count(), 1);
    assert_eq!(s.leases().len(), 4);
    // Another machine finds the unknown clients' running leases to take, oldest first.
    let p = pkt(MessageType::Discover, 2);
    let (b, _) = lease_in(&mut s, p, t(8), &live(&[1, 2])).unwrap();
    assert_eq!(b, unknown[1]);
    // An unknown client's offer lapses after UNKNOWN_OFFER_HOLD.
    let (mut s, _) = server();
    let c = live(&[]);
    let o = send_with(&mut s, &pkt(MessageType::Discover, 50), t(0), &c).unwrap();
    let a = o.msg.yiaddr();
    let hold = UNKNOWN_OFFER_HOLD.as_secs();
    assert!(!s.usable_for(a, &key(51), t(hold - 1), Policy::of(&c), false));
    assert!(s.usable_for(a, &key(51), t(hold + 1), Policy::of(&c), false));
}

/// Item 9: bindings that ended more than a week ago and are no running machine's are dropped
/// when the table is saved; running machines' are not.
#[test]
fn bindings_that_ended_long_ago_are_forgotten() {
    let (mut s, store) = server();
    let week = ENDED_HISTORY.as_secs();
    let (a1, _) = lease_in(&mut s, pkt(MessageType::Discover, 1), t(0), &live(&[1, 2])).unwrap();
    lease_in(&mut s, pkt(MessageType::Discover, 2), t(0), &live(&[1, 2])).unwrap();
    lease_in(&mut s, pkt(MessageType::Discover, 3), t(0), &live(&[1, 2])).unwrap();
    // Eight days later machine 1 still runs; 2 is gone, 3 was unknown; 4 leases (a save).
    lease_in(
        &mut s,
        pkt(MessageType::Discover, 4),
        t(week + 86_400),
        &live(&[1, 4]),
    )
    .unwrap();
    let saved = store.saved_table();
    let kept: HashSet<ClientKey> = saved.iter().map(|l| l.client.clone()).collect();
    assert_eq!(kept, [key(1), key(4)].into_iter().collect());
    assert_eq!(saved.get(&key(1)).map(|l| l.addr), Some(a1));
    assert!(saved.get(&key(1)).is_some_and(|l| l.machine));
}

/// Option 119 on the wire as RFC 3397 §2 encodes it: the second name is a
/// pointer into the first (offsets count from the option's data).
#[test]
fn domain_search_golden_bytes() {
    let (mut s, _) = server();
    let Outcome::Reply { bytes, .. } =
        s.handle(&pkt(MessageType::Discover, 1).bytes(), t(0), &ctx())
    else {
        panic!("no reply")
    };
    let want: &[u8] = &[
        119, 20, 3, b'l', b'a', b'b', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 4, b't', b'e',
        b's', b't', 0, 0xc0, 4,
    ];
    assert!(
        bytes.windows(want.len()).any(|w| w == want),
        "option 119 not as RFC 3397 encodes it: {bytes:?}"
    );
}
