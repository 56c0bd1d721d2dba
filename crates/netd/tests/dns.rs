//! netd's DNS server against real `dig` (and `dnsperf`), each scenario in a
//! private network namespace of its own: the test re-executes itself under
//! `unshare -n`, brings `lo` up, and serves on 127.0.0.2:53. Upstream is a
//! stub DNS server the test runs on 127.0.0.53/.54, named by a temporary
//! resolv.conf; machines are entries in a temporary registry whose launcher
//! is the test process itself. Needs root, `unshare`, `ip` and `dig`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use netd::dns::{DnsConfig, DnsServer, RegistryDirectory, UpstreamConfig};
use netspawn_common::paths::Paths;
use netspawn_common::registry::{process_start_time, Entry, NameClaim, Registry};

const CHILD_ENV: &str = "NETD_DNS_TEST_IN_NETNS";
const SERVER: &str = "127.0.0.2";

/// Runs the calling test again inside a fresh network namespace. Returns
/// true in that child (run the body), false in the parent (done).
fn in_private_netns(test: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        run(&["ip", "link", "set", "lo", "up"]);
        return true;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED {test}: needs root for a private network namespace");
        return false;
    }
    for tool in ["dig", "unshare", "ip"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            panic!(
                "{test}: {tool} is missing (apt-get install -y bind9-dnsutils util-linux iproute2)"
            );
        }
    }
    let exe = std::env::current_exe().expect("own executable");
    let status = Command::new("timeout")
        .args(["180", "unshare", "-n", "--"])
        .arg(exe)
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, "1")
        .status()
        .expect("run unshare");
    assert!(status.success(), "{test} failed in its namespace: {status}");
    false
}

fn run(argv: &[&str]) {
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .expect(argv[0]);
    assert!(st.success(), "{argv:?}: {st}");
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("netd-dns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Machines in a temporary registry, owned by this process.
struct Machines {
    reg: Registry,
    claims: Vec<NameClaim>,
}

impl Machines {
    fn new(run_dir: &Path) -> Machines {
        let paths = Paths {
            run_dir: run_dir.to_path_buf(),
            image_dir: run_dir.join("img"),
            state_dir: run_dir.join("state"),
            settings_path: vec![],
            cgroup_parent: "x".into(),
        };
        Machines {
            reg: Registry::new(&paths),
            claims: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, addrs: &[&str]) {
        let me = std::process::id();
        let claim = self.reg.claim(name).unwrap();
        let entry = Entry {
            name: name.into(),
            launcher: me,
            launcher_start: process_start_time(me).unwrap(),
            state: "running".into(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ..Entry::default()
        };
        self.reg.write(&claim, &entry).unwrap();
        self.claims.push(claim);
    }
}

/// A stub upstream DNS server on UDP: `A` questions for names in `table` get
/// that address (TTL 300), everything else NXDOMAIN. Counts questions.
struct Stub {
    queries: Arc<AtomicU64>,
}

impl Stub {
    fn start(addr: &str, table: &[(&str, &str)]) -> Stub {
        let sock = UdpSocket::bind((addr, 53)).unwrap();
        let table: Vec<(String, IpAddr)> = table
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
            .collect();
        let queries = Arc::new(AtomicU64::new(0));
        let count = queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    return;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.metadata.message_type = MessageType::Response;
                resp.queries = req.queries.clone();
                let Some(q) = req.queries.first() else {
                    continue;
                };
                let qname = q.name().to_ascii().to_ascii_lowercase();
                let hit = table.iter().find(|(n, _)| *n == qname);
                match (hit, q.query_type()) {
                    (Some((_, IpAddr::V4(a))), RecordType::A) => resp
                        .answers
                        .push(Record::from_rdata(q.name().clone(), 300, RData::A(A(*a)))),
                    (Some(_), _) => {}
                    (None, _) => resp.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = sock.send_to(&resp.to_vec().unwrap(), src);
            }
        });
        Stub { queries }
    }

    fn count(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The server under test, driven by a tokio runtime on its own thread.
struct Running {
    server: Arc<DnsServer>,
    rt: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(run_dir: &Path, resolv_conf: &Path) -> Running {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = rt.block_on(stopped);
        });
        let paths_dir = Machines::new(run_dir).reg;
        let dir = Arc::new(RegistryDirectory::new(paths_dir));
        let config = DnsConfig {
            upstream: UpstreamConfig {
                resolv_conf: resolv_conf.to_path_buf(),
                ..UpstreamConfig::default()
            },
            ..DnsConfig::default()
        };
        let server = {
            let _g = handle.enter();
            Arc::new(DnsServer::new(dir, config))
        };
        let r = Running {
            server,
            rt: handle,
            stop: Some(stop),
            thread: Some(thread),
        };
        r.add(SERVER);
        r
    }

    fn add(&self, addr: &str) -> SocketAddr {
        let s = self.server.clone();
        let addr: IpAddr = addr.parse().unwrap();
        self.rt
            .block_on(async move { s.add_listener(addr).await })
            .unwrap()
    }

    /// Serves `addr` for the clients of link `ifname` (and loopback).
    fn add_link(&self, addr: &str, ifname: &str) -> SocketAddr {
        let s = self.server.clone();
        let addr: IpAddr = addr.parse().unwrap();
        let ifindex = ifindex(ifname);
        self.rt
            .block_on(async move { s.add_link_listener(addr, ifindex).await })
            .unwrap()
    }
}

fn ifindex(ifname: &str) -> u32 {
    // Not from /sys: that is the host's, this namespace has not mounted its own.
    nix::net::if_::if_nametoindex(ifname).unwrap()
}

/// A network namespace of its own (held by a sleeping process) joined to
/// ours by a veth pair: `host_if` here with `host_addr`, `eth0` there with
/// `addr`, and a default route there via `host_addr`.
struct Peer {
    _proc: KillOnDrop,
    pid: String,
}

impl Peer {
    fn new(host_if: &str, host_addr: &str, addr: &str) -> Peer {
        let c = KillOnDrop(
            Command::new("unshare")
                .args(["-n", "sleep", "1000"])
                .spawn()
                .expect("unshare"),
        );
        let pid = c.0.id().to_string();
        eventually("the peer namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
                != std::fs::read_link("/proc/self/ns/net").ok()
        });
        run(&[
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_addr}/24"),
            "dev",
            host_if,
        ]);
        run(&["ip", "link", "set", host_if, "up"]);
        let p = Peer { _proc: c, pid };
        p.run(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        p.run(&["ip", "link", "set", "eth0", "up"]);
        p.run(&["ip", "link", "set", "lo", "up"]);
        p.run(&["ip", "route", "add", "default", "via", host_addr]);
        p
    }

    fn run(&self, argv: &[&str]) {
        let mut a = vec!["nsenter", "-t", &self.pid, "-n"];
        a.extend_from_slice(argv);
        run(&a);
    }

    /// `dig` from inside the namespace.
    fn dig(&self, server: &str, args: &[&str]) -> (String, Vec<String>) {
        let out = Command::new("timeout")
            .args([
                "10", "nsenter", "-t", &self.pid, "-n", "dig", "+nocmd", "+noall",
            ])
            .args(["+comments", "+answer", "+time=2", "+tries=1"])
            .arg(format!("@{server}"))
            .args(args)
            .output()
            .expect("run dig");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("NO REPLY")
            .to_string();
        let answers = text
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        (status, answers)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.shutdown();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `dig` at `server`: (status, answer rdata).
fn dig_at(server: &str, args: &[&str]) -> (String, Vec<String>) {
    let out = Command::new("timeout")
        .args([
            "10",
            "dig",
            "+nocmd",
            "+noall",
            "+comments",
            "+answer",
            "+time=2",
            "+tries=1",
        ])
        .arg(format!("@{server}"))
        .args(args)
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO REPLY")
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    (status, answers)
}

fn dig(args: &[&str]) -> (String, Vec<String>) {
    dig_at(SERVER, args)
}

fn ok(answers: &[&str]) -> (String, Vec<String>) {
    (
        "NOERROR".to_string(),
        answers.iter().map(|s| s.to_string()).collect(),
    )
}

fn write_resolv_conf(path: &Path, text: &str) {
    // Replace atomically, as resolvconf and NetworkManager do.
    let tmp = path.with_extension("tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `f` until it returns true or 3 s pass.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn machines_ptr_and_forwarding_over_udp_and_tcp() {
    if !in_private_netns("machines_ptr_and_forwarding_over_udp_and_tcp") {
        return;
    }
    let tmp = TempDir::new("main");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.0.0.2", "fd00::2"]);
    machines.add("db", &["10.0.0.9"]);
    let stub = Stub::start("127.0.0.53", &[("example.test.", "192.0.2.7")]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);

    for tcp in [&[][..], &["+tcp"][..]] {
        let q = |args: &[&str]| dig(&[args, tcp].concat());
        assert_eq!(q(&["web", "A"]), ok(&["10.0.0.2"]), "{tcp:?}");
        assert_eq!(q(&["web.", "AAAA"]), ok(&["fd00::2"]));
        assert_eq!(q(&["WeB", "A"]), ok(&["10.0.0.2"]));
        // A known machine without IPv6: NODATA, not NXDOMAIN.
        assert_eq!(q(&["db", "AAAA"]), ok(&[]));
        assert_eq!(q(&["nope", "A"]).0, "NXDOMAIN");
        assert_eq!(q(&["-x", "10.0.0.2"]), ok(&["web."]));
        assert_eq!(q(&["-x", "fd00::2"]), ok(&["web."]));
        assert_eq!(q(&["-x", "10.0.0.9"]), ok(&["db."]));
        assert_eq!(q(&["example.test", "A"]), ok(&["192.0.2.7"]));
        assert_eq!(q(&["unknown.test", "A"]).0, "NXDOMAIN");
    }
    // Repeated forwarded questions come from the cache.
    let before = stub.count();
    for _ in 0..5 {
        assert_eq!(dig(&["example.test", "A"]), ok(&["192.0.2.7"]));
    }
    assert_eq!(stub.count(), before, "example.test asked upstream again");

    // A machine that starts later is found without restarting anything.
    machines.add("late", &["10.0.0.77"]);
    eventually("the new machine", || {
        dig(&["late", "A"]) == ok(&["10.0.0.77"])
    });

    let stats = srv.server.stats();
    assert!(
        stats.udp_queries >= 15 && stats.tcp_queries >= 10,
        "{stats:?}"
    );
    assert!(stats.forwarded >= 4, "{stats:?}");
    assert_eq!(stats.dropped_malformed, 0, "{stats:?}");
}

#[test]
fn resolv_conf_changes_are_followed_and_loops_avoided() {
    if !in_private_netns("resolv_conf_changes_are_followed_and_loops_avoided") {
        return;
    }
    let tmp = TempDir::new("resolv");
    let first = Stub::start("127.0.0.53", &[("example.test.", "192.0.2.7")]);
    let second = Stub::start("127.0.0.54", &[("example.test.", "192.0.2.8")]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(
        &resolv,
        "# stub\nnameserver 127.0.0.53\noptions timeout:1\n",
    );
    let srv = Running::start(&tmp.0, &resolv);
    assert_eq!(dig(&["example.test", "A"]), ok(&["192.0.2.7"]));

    write_resolv_conf(&resolv, "nameserver 127.0.0.54\n");
    eventually("the new upstream", || {
        dig(&["example.test", "A"]) == ok(&["192.0.2.8"])
    });
    assert!(second.count() >= 1);

    // resolv.conf naming only ourselves: SERVFAIL at once, no query loop.
    write_resolv_conf(&resolv, &format!("nameserver {SERVER}\n"));
    eventually("the loop to be refused", || {
        dig(&["other.test", "A"]).0 == "SERVFAIL"
    });
    let seen = first.count() + second.count();
    let before = srv.server.stats();
    assert_eq!(dig(&["third.test", "A"]).0, "SERVFAIL");
    assert_eq!(first.count() + second.count(), seen);
    // Exactly one query reached us: we did not ask ourselves.
    assert_eq!(srv.server.stats().udp_queries, before.udp_queries + 1);

    // Ourselves first, a real upstream second: the real one is used.
    write_resolv_conf(
        &resolv,
        &format!("nameserver {SERVER}\nnameserver 127.0.0.53\n"),
    );
    eventually("the remaining upstream", || {
        dig(&["example.test", "A"]) == ok(&["192.0.2.7"])
    });

    // No resolv.conf at all: forwarding fails, machine names still work.
    std::fs::remove_file(&resolv).unwrap();
    eventually("forwarding to stop", || {
        dig(&["example.test", "A"]).0 == "SERVFAIL"
    });
    assert_eq!(dig(&["nope", "A"]).0, "NXDOMAIN");
}

#[test]
fn garbage_is_dropped_and_counted_and_service_goes_on() {
    if !in_private_netns("garbage_is_dropped_and_counted_and_service_goes_on") {
        return;
    }
    let tmp = TempDir::new("garbage");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.0.0.2"]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 11],
        vec![0xff; 12],
        vec![0xab; 1500],
        // A header announcing 65535 questions that are not there.
        vec![0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
        // A name whose compression pointer points at itself.
        vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
    ];
    let mut x: u32 = 12345;
    for len in 0..200usize {
        packets.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
    }
    for p in &packets {
        sock.send_to(p, (SERVER, 53)).unwrap();
    }
    // A response sent to us is not answered either (no reflection).
    let mut resp = Message::response(7, hickory_proto::op::OpCode::Query);
    resp.metadata.message_type = MessageType::Response;
    resp.add_query(hickory_proto::op::Query::query(
        "web.".parse().unwrap(),
        RecordType::A,
    ));
    sock.send_to(&resp.to_vec().unwrap(), (SERVER, 53)).unwrap();
    let mut buf = [0u8; 1500];
    // Nothing malformed gets a reply (random bytes may by chance form a
    // query; those are answered, which is fine: count what was dropped).
    while sock.recv_from(&mut buf).is_ok() {}

    assert_eq!(dig(&["web", "A"]), ok(&["10.0.0.2"]));
    let stats = srv.server.stats();
    assert!(stats.dropped_malformed >= 150, "{stats:?}");
    assert_eq!(stats.dropped_not_query, 1, "{stats:?}");

    // TCP: junk on a connection, then a proper query on another one.
    {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect((SERVER, 53)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = c.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff, 9, 9]);
        let _ = c.read(&mut buf);
    }
    assert_eq!(dig(&["web", "A", "+tcp"]), ok(&["10.0.0.2"]));
}

#[test]
fn listeners_come_and_go() {
    if !in_private_netns("listeners_come_and_go") {
        return;
    }
    let tmp = TempDir::new("listen");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.0.0.2"]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);

    // An address not configured yet can be served (IP_FREEBIND) and works
    // once it exists.
    srv.add("10.123.0.1");
    run(&["ip", "addr", "add", "10.123.0.1/32", "dev", "lo"]);
    assert_eq!(dig_at("10.123.0.1", &["web", "A"]), ok(&["10.0.0.2"]));
    assert_eq!(
        dig_at("10.123.0.1", &["web", "A", "+tcp"]),
        ok(&["10.0.0.2"])
    );
    srv.add("::1");
    assert_eq!(dig_at("::1", &["web", "A"]), ok(&["10.0.0.2"]));
    assert_eq!(dig_at("::1", &["web", "A", "+tcp"]), ok(&["10.0.0.2"]));
    assert_eq!(
        srv.server.listen_addrs(),
        vec![
            "10.123.0.1:53".parse().unwrap(),
            "127.0.0.2:53".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );

    assert!(srv.server.remove_listener("10.123.0.1".parse().unwrap()));
    assert!(!srv.server.remove_listener("10.123.0.1".parse().unwrap()));
    assert_eq!(dig_at("10.123.0.1", &["web", "A"]).0, "NO REPLY");
    assert_eq!(dig_at("10.123.0.1", &["web", "A", "+tcp"]).0, "NO REPLY");
    // Other listeners are unaffected, and the address can come back.
    assert_eq!(dig(&["web", "A"]), ok(&["10.0.0.2"]));
    srv.add("10.123.0.1");
    assert_eq!(
        dig_at("10.123.0.1", &["web", "A", "+tcp"]),
        ok(&["10.0.0.2"])
    );

    // Never a wildcard.
    let s = srv.server.clone();
    let err = srv
        .rt
        .block_on(async move { s.add_listener("0.0.0.0".parse().unwrap()).await })
        .unwrap_err();
    assert!(err.to_string().contains("wildcard"), "{err}");
}

/// Rough QPS for a machine name with dnsperf (informational; bench/ does the
/// comparison on veths). With `NETD_DNSPERF_DNSMASQ=1`, dnsmasq serves the
/// same name on 127.0.0.3 and each load alternates between the two servers
/// (`NETD_DNSPERF_REPS` times, `NETD_DNSPERF_SECS` seconds each). With
/// `NETD_DNSPERF_VETH=1`, dnsperf runs in a namespace of its own across a
/// veth pair (as in bench/) instead of on loopback. Run with
/// `cargo test --release -p netspawn-netd --test dns -- --ignored dnsperf --nocapture`.
#[test]
#[ignore = "measurement, not a test: run explicitly"]
fn dnsperf_machine_name() {
    if !in_private_netns("dnsperf_machine_name") {
        return;
    }
    let env_num = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (reps, secs) = (
        env_num("NETD_DNSPERF_REPS", 1),
        env_num("NETD_DNSPERF_SECS", 5),
    );
    let tmp = TempDir::new("perf");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.0.0.2", "fd00::2"]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);
    let veth = std::env::var_os("NETD_DNSPERF_VETH").is_some();
    let (netd_addr, dnsmasq_addr) = if veth {
        ("10.99.0.1", "10.99.0.3")
    } else {
        (SERVER, "127.0.0.3")
    };
    // The client side: a process holding a namespace of its own, reached by
    // a veth pair; dnsperf joins it with nsenter.
    let client = veth.then(|| {
        let c = KillOnDrop(
            Command::new("unshare")
                .args(["-n", "sleep", "1000"])
                .spawn()
                .expect("unshare"),
        );
        let pid = c.0.id().to_string();
        eventually("the client namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
                != std::fs::read_link("/proc/self/ns/net").ok()
        });
        run(&[
            "ip", "link", "add", "dp0", "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ]);
        run(&["ip", "addr", "add", "10.99.0.1/24", "dev", "dp0"]);
        run(&["ip", "addr", "add", "10.99.0.3/24", "dev", "dp0"]);
        run(&["ip", "link", "set", "dp0", "up"]);
        for cmd in [
            &["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"][..],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "link", "set", "lo", "up"],
        ] {
            let mut argv = vec!["nsenter", "-t", &pid, "-n"];
            argv.extend_from_slice(cmd);
            run(&argv);
        }
        srv.add_link(netd_addr, "dp0");
        (c, pid)
    });
    let in_client = |argv: &[&str]| -> Command {
        let mut c = Command::new("timeout");
        c.arg("60");
        if let Some((_, pid)) = &client {
            c.args(["nsenter", "-t", pid, "-n"]);
        }
        c.args(argv);
        c
    };
    let mut servers = vec![("netd", netd_addr)];
    let _dnsmasq = if std::env::var_os("NETD_DNSPERF_DNSMASQ").is_some() {
        if !veth {
            run(&["ip", "addr", "add", "127.0.0.3/8", "dev", "lo"]);
        }
        let child = Command::new("dnsmasq")
            .args(["--no-daemon", "--conf-file=/dev/null", "--bind-interfaces"])
            .arg(format!("--listen-address={dnsmasq_addr}"))
            .args(["--no-resolv", "--no-hosts"])
            .args(["--host-record=web,10.0.0.2,fd00::2", "--pid-file="])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run dnsmasq (apt-get install -y dnsmasq-base)");
        eventually("dnsmasq to answer", || {
            dig_at(dnsmasq_addr, &["web", "A"]) == ok(&["10.0.0.2"])
        });
        servers.push(("dnsmasq", dnsmasq_addr));
        Some(KillOnDrop(child))
    } else {
        None
    };
    let data = tmp.0.join("queries");
    std::fs::write(&data, "web A\n").unwrap();
    for (clients, inflight) in [(1, 10), (1, 100), (4, 10), (4, 100)] {
        for rep in 0..reps {
            for (name, addr) in &servers {
                let out = in_client(&["dnsperf", "-s", addr, "-l", &secs.to_string()])
                    .args(["-c", &clients.to_string(), "-q", &inflight.to_string()])
                    .arg("-d")
                    .arg(&data)
                    .output()
                    .expect("run dnsperf (apt-get install -y dnsperf)");
                let text = String::from_utf8_lossy(&out.stdout);
                let pick = |key: &str| {
                    text.lines()
                        .find(|l| l.trim_start().starts_with(key))
                        .map(|l| l.trim().to_string())
                        .unwrap_or_default()
                };
                println!(
                    "c{clients} q{inflight} #{rep} {name}: {} | {} | {}",
                    pick("Queries per second"),
                    pick("Queries lost"),
                    pick("Average Latency"),
                );
                assert!(out.status.success(), "dnsperf failed: {text}");
            }
        }
    }
    println!("{:?}", srv.server.stats());
}

/// A child process killed (and reaped) on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A stub upstream on UDP whose replies `respond` makes (none, one or
/// several datagrams per question, sent from its socket). Counts questions.
struct ScriptedStub {
    queries: Arc<AtomicU64>,
}

impl ScriptedStub {
    fn start<F>(addr: &str, respond: F) -> ScriptedStub
    where
        F: Fn(&Message, SocketAddr, &UdpSocket) + Send + 'static,
    {
        let sock = UdpSocket::bind((addr, 53)).unwrap();
        let queries = Arc::new(AtomicU64::new(0));
        let count = queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    return;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                respond(&req, src, &sock);
            }
        });
        ScriptedStub { queries }
    }

    /// A stub that answers every question with `code`.
    fn answering(addr: &str, code: ResponseCode) -> ScriptedStub {
        ScriptedStub::start(addr, move |req, src, sock| {
            let _ = sock.send_to(&stub_reply(req, code).to_vec().unwrap(), src);
        })
    }

    fn count(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The reply skeleton for `req` with `code`.
fn stub_reply(req: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.response_code = code;
    resp.queries = req.queries.clone();
    resp
}

/// An SOA for `zone` with MINIMUM `min` (and TTL 3600).
fn soa(zone: &str, min: u32) -> Record {
    use hickory_proto::rr::rdata::SOA;
    let n: hickory_proto::rr::Name = zone.parse().unwrap();
    Record::from_rdata(
        n.clone(),
        3600,
        RData::SOA(SOA::new(n.clone(), n, 1, 3600, 600, 86400, min)),
    )
}

#[test]
fn upstream_failures_pass_through_once_per_server() {
    if !in_private_netns("upstream_failures_pass_through_once_per_server") {
        return;
    }
    let tmp = TempDir::new("upfail");
    let refused = ScriptedStub::answering("127.0.0.53", ResponseCode::Refused);
    let servfail = ScriptedStub::answering("127.0.0.54", ResponseCode::ServFail);
    let silent = ScriptedStub::start("127.0.0.55", |_, _, _| {});
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);

    // REFUSED is passed through, after one upstream query per client query.
    for (i, t) in ["A", "AAAA", "MX"].iter().enumerate() {
        assert_eq!(dig(&["a.test", t]).0, "REFUSED");
        assert_eq!(refused.count(), i as u64 + 1, "{t}");
    }
    write_resolv_conf(&resolv, "nameserver 127.0.0.54\n");
    // The file is checked every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let before = servfail.count();
    assert_eq!(dig(&["b.test", "A"]).0, "SERVFAIL");
    assert_eq!(servfail.count(), before + 1);

    // Two servers: each asked once, the last one's code wins.
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\nnameserver 127.0.0.54\n");
    std::thread::sleep(Duration::from_millis(300));
    let (r, s) = (refused.count(), servfail.count());
    assert_eq!(dig(&["c.test", "A"]).0, "SERVFAIL");
    assert_eq!((refused.count(), servfail.count()), (r + 1, s + 1));

    // An upstream that never answers: SERVFAIL within the 5 s budget, after
    // exactly one query (no resends).
    write_resolv_conf(&resolv, "nameserver 127.0.0.55\n");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let (status, _) = dig_long("e.test");
    let took = start.elapsed();
    assert_eq!(status, "SERVFAIL");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "{took:?}"
    );
    assert_eq!(silent.count(), 1, "one upstream query per client query");

    // A silent server first: the next one is still asked within the budget.
    write_resolv_conf(&resolv, "nameserver 127.0.0.55\nnameserver 127.0.0.53\n");
    std::thread::sleep(Duration::from_millis(300));
    let r = refused.count();
    let start = Instant::now();
    assert_eq!(dig_long("f.test").0, "REFUSED");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!((silent.count(), refused.count()), (2, r + 1));
    let stats = srv.server.stats();
    assert_eq!(stats.forwarded, 7, "{stats:?}");
}

/// `dig` with a long wait, so that our own timeout shows.
fn dig_long(name: &str) -> (String, Vec<String>) {
    let out = Command::new("timeout")
        .args(["20", "dig", "+noall", "+comments", "+time=15", "+tries=1"])
        .arg(format!("@{SERVER}"))
        .args([name, "A"])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO REPLY")
        .to_string();
    (status, vec![])
}

#[test]
fn negative_answers_are_cached_per_rfc2308() {
    if !in_private_netns("negative_answers_are_cached_per_rfc2308") {
        return;
    }
    let tmp = TempDir::new("negcache");
    let stub = ScriptedStub::start("127.0.0.53", |req, src, sock| {
        let name = req.queries[0].name().to_ascii().to_ascii_lowercase();
        let code = if name.starts_with("nodata") {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        let mut resp = stub_reply(req, code);
        if !name.starts_with("nosoa") {
            // MINIMUM 1 s for "short", else 60 s.
            let min = if name.starts_with("short") { 1 } else { 60 };
            resp.authorities.push(soa("test.", min));
        }
        let _ = sock.send_to(&resp.to_vec().unwrap(), src);
    });
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let _srv = Running::start(&tmp.0, &resolv);

    for _ in 0..3 {
        assert_eq!(dig(&["gone.test", "A"]).0, "NXDOMAIN");
        assert_eq!(dig(&["nodata.test", "A"]), ok(&[]));
    }
    assert_eq!(stub.count(), 2, "NXDOMAIN and NODATA cached");
    // Without an SOA a negative answer is not cached.
    for _ in 0..2 {
        assert_eq!(dig(&["nosoa.test", "A"]).0, "NXDOMAIN");
    }
    assert_eq!(stub.count(), 4);
    // The SOA's MINIMUM bounds the time: after 1 s it is asked again.
    assert_eq!(dig(&["short.test", "A"]).0, "NXDOMAIN");
    assert_eq!(dig(&["short.test", "A"]).0, "NXDOMAIN");
    assert_eq!(stub.count(), 5);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(dig(&["short.test", "A"]).0, "NXDOMAIN");
    assert_eq!(stub.count(), 6);
}

#[test]
fn forged_upstream_replies_are_ignored() {
    if !in_private_netns("forged_upstream_replies_are_ignored") {
        return;
    }
    let tmp = TempDir::new("forged");
    let forger = UdpSocket::bind("127.0.0.53:5353").unwrap();
    let stub = ScriptedStub::start("127.0.0.53", move |req, src, sock| {
        let q = &req.queries[0];
        let answer = |a: &str| {
            let mut m = stub_reply(req, ResponseCode::NoError);
            m.answers.push(Record::from_rdata(
                q.name().clone(),
                300,
                RData::A(A(a.parse().unwrap())),
            ));
            m
        };
        // Wrong ID.
        let mut m = answer("6.6.6.1");
        m.metadata.id = req.metadata.id.wrapping_add(1);
        let _ = sock.send_to(&m.to_vec().unwrap(), src);
        // Wrong question.
        let mut m = answer("6.6.6.2");
        m.queries = vec![hickory_proto::op::Query::query(
            "evil.test.".parse().unwrap(),
            RecordType::A,
        )];
        let _ = sock.send_to(&m.to_vec().unwrap(), src);
        // Right ID and question, wrong source port.
        let _ = forger.send_to(&answer("6.6.6.3").to_vec().unwrap(), src);
        // Not a response.
        let mut m = answer("6.6.6.4");
        m.metadata.message_type = MessageType::Query;
        let _ = sock.send_to(&m.to_vec().unwrap(), src);
        std::thread::sleep(Duration::from_millis(50));
        // The real one.
        let _ = sock.send_to(&answer("192.0.2.7").to_vec().unwrap(), src);
    });
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let _srv = Running::start(&tmp.0, &resolv);
    assert_eq!(dig(&["real.test", "A"]), ok(&["192.0.2.7"]));
    assert_eq!(dig(&["real2.test", "A", "+tcp"]), ok(&["192.0.2.7"]));
    assert_eq!(stub.count(), 2);
}

#[test]
fn only_served_links_and_loopback_are_answered() {
    if !in_private_netns("only_served_links_and_loopback_are_answered") {
        return;
    }
    let tmp = TempDir::new("foreign");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.77.0.2"]);
    let stub = Stub::start("127.0.0.53", &[("example.test.", "192.0.2.7")]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);
    // A container on a served link, and a host in another network whose
    // route to the link's gateway address goes through another veth.
    let container = Peer::new("zc0", "10.77.0.1", "10.77.0.2");
    let outsider = Peer::new("zo0", "10.88.0.1", "10.88.0.2");
    srv.add_link("10.77.0.1", "zc0");

    for tcp in [&[][..], &["+tcp"][..]] {
        let q = |args: &[&'static str]| -> Vec<&'static str> { [args, tcp].concat() };
        assert_eq!(
            container.dig("10.77.0.1", &q(&["web", "A"])),
            ok(&["10.77.0.2"]),
            "{tcp:?}"
        );
        assert_eq!(
            container.dig("10.77.0.1", &q(&["example.test", "A"])),
            ok(&["192.0.2.7"])
        );
        // The host's own clients arrive on loopback.
        assert_eq!(dig_at("10.77.0.1", &q(&["web", "A"])), ok(&["10.77.0.2"]));
        let asked = stub.count();
        assert_eq!(
            outsider.dig("10.77.0.1", &q(&["web", "A"])).0,
            "NO REPLY",
            "{tcp:?}"
        );
        assert_eq!(
            outsider.dig("10.77.0.1", &q(&["other.test", "A"])).0,
            "NO REPLY"
        );
        assert_eq!(stub.count(), asked, "an outsider's query went upstream");
    }
    let stats = srv.server.stats();
    assert_eq!(stats.dropped_foreign, 4, "{stats:?}");

    // The same over IPv6.
    run(&["ip", "addr", "add", "fd77::1/64", "dev", "zc0", "nodad"]);
    run(&["ip", "addr", "add", "fd88::1/64", "dev", "zo0", "nodad"]);
    container.run(&["ip", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad"]);
    outsider.run(&["ip", "addr", "add", "fd88::2/64", "dev", "eth0", "nodad"]);
    outsider.run(&["ip", "-6", "route", "add", "default", "via", "fd88::1"]);
    srv.add_link("fd77::1", "zc0");
    for tcp in [&[][..], &["+tcp"][..]] {
        let q = |args: &[&'static str]| -> Vec<&'static str> { [args, tcp].concat() };
        assert_eq!(
            container.dig("fd77::1", &q(&["web", "A"])),
            ok(&["10.77.0.2"]),
            "{tcp:?}"
        );
        assert_eq!(dig_at("fd77::1", &q(&["web", "A"])), ok(&["10.77.0.2"]));
        assert_eq!(
            outsider.dig("fd77::1", &q(&["web", "A"])).0,
            "NO REPLY",
            "{tcp:?}"
        );
    }
    assert_eq!(srv.server.stats().dropped_foreign, 6);
    assert!(srv.server.remove_listener("fd77::1".parse().unwrap()));
    // Once the link is no longer served, its clients are outsiders too.
    assert!(srv.server.remove_listener("10.77.0.1".parse().unwrap()));
    srv.add("10.77.0.1");
    assert_eq!(container.dig("10.77.0.1", &["web", "A"]).0, "NO REPLY");
    assert_eq!(
        container.dig("10.77.0.1", &["web", "A", "+tcp"]).0,
        "NO REPLY"
    );
    assert_eq!(dig(&["web", "A"]), ok(&["10.77.0.2"]));
}

/// Opens a TCP connection to the server.
fn tcp_connect() -> std::net::TcpStream {
    let c = std::net::TcpStream::connect((SERVER, 53)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c
}

/// A TCP query for `name` A, framed.
fn tcp_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        name.parse().unwrap(),
        RecordType::A,
    ));
    let b = m.to_vec().unwrap();
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

#[test]
fn hostile_tcp_clients_do_not_stop_the_service() {
    if !in_private_netns("hostile_tcp_clients_do_not_stop_the_service") {
        return;
    }
    use std::io::Read;
    let tmp = TempDir::new("tcpflood");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.0.0.2"]);
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);

    // An idle client does not block the others, and is closed after 10 s.
    let mut idle = tcp_connect();
    let started = Instant::now();
    assert_eq!(dig(&["web", "A", "+tcp"]), ok(&["10.0.0.2"]));
    assert_eq!(dig(&["web", "A"]), ok(&["10.0.0.2"]));

    // A truncated message, then a reset: only that connection ends.
    {
        let mut c = tcp_connect();
        let q = tcp_query("web.", 1);
        c.write_all(&q[..q.len() - 3]).unwrap();
        // SO_LINGER 0: close sends RST.
        nix::sys::socket::setsockopt(
            &c,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
    }
    // A length announcing more than is ever sent, then EOF.
    {
        let mut c = tcp_connect();
        c.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(c.read(&mut b).unwrap_or(0), 0);
    }
    assert_eq!(dig(&["web", "A", "+tcp"]), ok(&["10.0.0.2"]));
    // Two queries on one connection are both answered.
    {
        let mut c = tcp_connect();
        let mut both = tcp_query("web.", 7);
        both.extend(tcp_query("web.", 8));
        c.write_all(&both).unwrap();
        for id in [7u16, 8] {
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut m).unwrap();
            assert_eq!(Message::from_vec(&m).unwrap().metadata.id, id);
        }
    }

    // Many connections at once: at most 64 are kept, the rest closed at
    // once; UDP service never stops meanwhile.
    let mut conns: Vec<std::net::TcpStream> = (0..150).map(|_| tcp_connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut closed = 0;
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Ok(0))
            || matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
        {
            closed += 1;
        }
    }
    // The idle client above holds one of the 64.
    assert!(closed >= 150 - 63, "only {closed} of 150 closed");
    let stats = srv.server.stats();
    assert!(stats.tcp_refused >= 150 - 63, "{stats:?}");
    for _ in 0..20 {
        assert_eq!(dig(&["web", "A"]), ok(&["10.0.0.2"]));
    }
    drop(conns);

    // The idle client is closed after the idle timeout.
    let mut b = [0u8; 1];
    let r = idle.read(&mut b);
    let waited = started.elapsed();
    assert!(matches!(r, Ok(0)), "{r:?}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
        "{waited:?}"
    );
    assert!(srv.server.stats().tcp_idle_closed >= 1);
    // TCP works again once the flood is gone.
    eventually("TCP service", || {
        dig(&["web", "A", "+tcp"]) == ok(&["10.0.0.2"])
    });
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Memory under a flood of 50,000 queries for unique names (issue 9 item
/// 10), against an upstream that answers NXDOMAIN with an SOA (every answer
/// negatively cached) and against one that never answers (every query
/// pending). Prints this process's VmRSS (the server's threads and the
/// test's own) before and after: a measurement, not a test. Run with
/// `cargo test --release -p netspawn-netd --test dns -- --ignored flood_memory --nocapture`.
#[test]
#[ignore = "measurement, not a test: run explicitly"]
fn flood_memory() {
    if !in_private_netns("flood_memory") {
        return;
    }
    let tmp = TempDir::new("flood");
    let mut machines = Machines::new(&tmp.0);
    machines.add("web", &["10.0.0.2"]);
    let _nx = ScriptedStub::start("127.0.0.53", |req, src, sock| {
        let mut resp = stub_reply(req, ResponseCode::NXDomain);
        resp.authorities.push(soa("test.", 300));
        let _ = sock.send_to(&resp.to_vec().unwrap(), src);
    });
    let _silent = ScriptedStub::start("127.0.0.55", |_, _, _| {});
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let srv = Running::start(&tmp.0, &resolv);
    assert_eq!(dig(&["web", "A"]), ok(&["10.0.0.2"]));
    let n: usize = std::env::var("NETD_FLOOD_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let before = rss_kib();
    println!("VmRSS before: {before} KiB");
    for (label, upstream, tag) in [
        ("NXDOMAIN upstream", "127.0.0.53", "nx"),
        ("silent upstream", "127.0.0.55", "si"),
    ] {
        write_resolv_conf(&resolv, &format!("nameserver {upstream}\n"));
        std::thread::sleep(Duration::from_millis(300));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1500];
        let mut replies = 0;
        let t0 = Instant::now();
        for i in 0..n {
            let mut m = Message::query();
            m.metadata.id = i as u16;
            m.metadata.recursion_desired = true;
            m.add_query(hickory_proto::op::Query::query(
                format!("q{i}-{tag}.flood.test.").parse().unwrap(),
                RecordType::A,
            ));
            let b = m.to_vec().unwrap();
            while sock.send_to(&b, (SERVER, 53)).is_err() {
                std::thread::sleep(Duration::from_micros(50));
            }
            while sock.recv_from(&mut buf).is_ok() {
                replies += 1;
            }
            // About 10,000 queries a second.
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let sent_in = t0.elapsed();
        std::thread::sleep(Duration::from_secs(6));
        while sock.recv_from(&mut buf).is_ok() {
            replies += 1;
        }
        println!(
            "{label}: {n} queries in {sent_in:?}, {replies} replies; VmRSS after: {} KiB; {:?}",
            rss_kib(),
            srv.server.stats()
        );
        assert_eq!(dig(&["web", "A"]), ok(&["10.0.0.2"]));
    }
}

/// Upstream queries one client query costs against an upstream that
/// answers REFUSED, SERVFAIL or nothing, and how long the client waits
/// (issue 9 item 7). Prints the figures: a measurement, not a test. Run with
/// `cargo test -p netspawn-netd --test dns -- --ignored upstream_query_counts --nocapture`.
#[test]
#[ignore = "measurement, not a test: run explicitly"]
fn upstream_query_counts() {
    if !in_private_netns("upstream_query_counts") {
        return;
    }
    let tmp = TempDir::new("upcount");
    let refused = ScriptedStub::answering("127.0.0.53", ResponseCode::Refused);
    let servfail = ScriptedStub::answering("127.0.0.54", ResponseCode::ServFail);
    let silent = ScriptedStub::start("127.0.0.55", |_, _, _| {});
    let resolv = tmp.0.join("resolv.conf");
    write_resolv_conf(&resolv, "nameserver 127.0.0.53\n");
    let _srv = Running::start(&tmp.0, &resolv);
    for (label, addr, stub) in [
        ("REFUSED", "127.0.0.53", &refused),
        ("SERVFAIL", "127.0.0.54", &servfail),
        ("silent", "127.0.0.55", &silent),
    ] {
        write_resolv_conf(&resolv, &format!("nameserver {addr}\n"));
        std::thread::sleep(Duration::from_millis(300));
        for t in ["A", "AAAA"] {
            let before = stub.count();
            let start = Instant::now();
            let out = Command::new("timeout")
                .args(["30", "dig", "+noall", "+comments", "+time=20", "+tries=1"])
                .arg(format!("@{SERVER}"))
                .args([&format!("{label}-{t}.test").to_lowercase(), t])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let status = text
                .split("status: ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("NO REPLY")
                .to_string();
            let took = start.elapsed();
            // Late resends still arriving.
            std::thread::sleep(Duration::from_secs(1));
            println!(
                "upstream {label}, {t}: client got {status} after {took:?}; {} upstream queries",
                stub.count() - before
            );
        }
    }
}
