//! The launcher's DHCP client against real servers: a "server" network
//! namespace running dnsmasq (or busybox udhcpd) on one end of a veth, a
//! "container" namespace holding `host0`, the other end. The test calls
//! `acquire` with the container namespace, then `configure`, and checks
//! the result with `ip`. It also times our client next to busybox udhcpc
//! and ISC dhclient against the same dnsmasq (printed, not asserted; run
//! with `--nocapture` to see it).
//! Needs root; skipped (loudly) otherwise.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netspawn::network::dhcp_client::{acquire, configure, resolv_conf, Lease, Server as Answering};
use netspawn::network::rtnl::Netlink;

const MAC: [u8; 6] = [0x0e, 0x4e, 0x53, 0x00, 0x00, 0x01];
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(cmd).exists())
}

macro_rules! require {
    ($($cmd:expr),*) => {
        if !is_root() {
            eprintln!("SKIPPED: DHCP client tests need root (network namespaces)");
            return;
        }
        $(
            if !have($cmd) {
                eprintln!("SKIPPED: DHCP client test needs `{}` (apt-get install dnsmasq-base busybox)", $cmd);
                return;
            }
        )*
    };
}

/// Runs a command to completion within [`CMD_TIMEOUT`]; panics with its
/// output on failure.
fn run(args: &[&str]) -> String {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > CMD_TIMEOUT {
            let _ = child.kill();
            panic!("{args:?}: timed out");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A network namespace held by a `sleep` process; dropping it kills the
/// process, which frees the namespace and the links in it.
struct Netns {
    holder: Child,
}

impl Netns {
    fn new() -> Netns {
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .unwrap();
        let ns = Netns { holder };
        let start = Instant::now();
        // unshare(1) switches namespace just before it execs sleep.
        while std::fs::read_link(ns.path()).ok().as_ref() == Some(&own)
            || std::fs::read_link(ns.path()).is_err()
        {
            assert!(
                start.elapsed() < CMD_TIMEOUT,
                "namespace holder did not start"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        ns
    }

    fn pid(&self) -> String {
        self.holder.id().to_string()
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    fn file(&self) -> File {
        File::open(self.path()).unwrap()
    }

    /// Runs `args` inside this namespace (network only).
    fn run(&self, args: &[&str]) -> String {
        let pid = self.pid();
        let mut full = vec!["nsenter", "-t", &pid, "-n"];
        full.extend_from_slice(args);
        run(&full)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("nsenter")
            .args(["-t", &self.pid(), "-n"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Kills a server when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test network: server namespace with `srv0` = 10.77.0.1/24, container
/// namespace with `host0` (up, no address), a temporary directory.
struct Net {
    server: Netns,
    container: Netns,
    dir: PathBuf,
}

impl Net {
    fn new(tag: &str) -> Net {
        let server = Netns::new();
        let container = Netns::new();
        let dir = std::env::temp_dir().join(format!("dhcp-client-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mac = MAC
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let cpid = container.pid();
        server.run(&[
            "ip", "link", "add", "srv0", "type", "veth", "peer", "name", "host0", "address", &mac,
            "netns", &cpid,
        ]);
        server.run(&["ip", "addr", "add", "10.77.0.1/24", "dev", "srv0"]);
        server.run(&["ip", "link", "set", "srv0", "up"]);
        server.run(&["ip", "link", "set", "lo", "up"]);
        container.run(&["ip", "link", "set", "host0", "up"]);
        container.run(&["ip", "link", "set", "lo", "up"]);
        Net {
            server,
            container,
            dir,
        }
    }

    fn dnsmasq(&self) -> Server {
        self.dnsmasq_with(&[])
    }

    /// dnsmasq with `extra` arguments.
    fn dnsmasq_with(&self, extra: &[&str]) -> Server {
        let leases = format!("--dhcp-leasefile={}", self.dir.join("leases").display());
        let mut args = vec![
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--interface=srv0",
            "--bind-interfaces",
            "--port=0",
            "--user=root",
            "--dhcp-range=10.77.0.10,10.77.0.50,255.255.255.0,1h",
            "--dhcp-option=option:router,10.77.0.1",
            "--dhcp-option=option:dns-server,10.77.0.1",
            "--domain=zone.test",
            &leases,
            "--pid-file=",
            // dnsmasq otherwise pings a new address and waits 3 s for an
            // answer before offering it, whatever the client.
            "--no-ping",
        ];
        args.extend_from_slice(extra);
        let s = Server(self.server.spawn(&args));
        self.wait_for_server();
        s
    }

    fn udhcpd(&self) -> Server {
        let conf = self.dir.join("udhcpd.conf");
        std::fs::write(
            &conf,
            format!(
                "start 10.77.0.10\nend 10.77.0.50\ninterface srv0\n\
                 option subnet 255.255.255.0\noption router 10.77.0.1\n\
                 option dns 10.77.0.1\noption domain zone.test\noption lease 3600\n\
                 lease_file {}\npidfile {}\n",
                self.dir.join("udhcpd.leases").display(),
                self.dir.join("udhcpd.pid").display()
            ),
        )
        .unwrap();
        std::fs::write(self.dir.join("udhcpd.leases"), b"").unwrap();
        // -a: a short ARP probe, so the test does not wait 2 s per offer.
        let s = Server(self.server.spawn(&[
            "busybox",
            "udhcpd",
            "-f",
            "-a",
            "100",
            conf.to_str().unwrap(),
        ]));
        self.wait_for_server();
        s
    }

    /// Waits until something listens on UDP port 67 in the server namespace.
    fn wait_for_server(&self) {
        let start = Instant::now();
        while !self
            .server
            .run(&["ss", "-Hlun", "sport", "= :67"])
            .contains(":67")
        {
            assert!(start.elapsed() < CMD_TIMEOUT, "DHCP server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn acquire(&self, timeout: Duration) -> (Lease, Duration) {
        self.acquire_from(Answering::Any, timeout)
    }

    fn acquire_from(&self, server: Answering, timeout: Duration) -> (Lease, Duration) {
        let ns = self.container.file();
        let start = Instant::now();
        let lease = acquire(ns.as_fd(), "host0", MAC, "web", server, timeout).expect("lease");
        (lease, start.elapsed())
    }

    fn flush(&self) {
        self.container.run(&["ip", "addr", "flush", "dev", "host0"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check_configured(net: &Net, lease: &Lease) {
    let ns = net.container.file();
    let mut inside = Netlink::open_in(ns.as_fd()).unwrap();
    configure(&mut inside, "host0", lease).expect("configure");
    // A second time is harmless (already present).
    configure(&mut inside, "host0", lease).expect("configure again");
    let addrs = net
        .container
        .run(&["ip", "-4", "-o", "addr", "show", "dev", "host0"]);
    let want = format!("inet {}/24", lease.address);
    assert!(addrs.contains(&want), "host0 lacks {want}: {addrs}");
    let routes = net.container.run(&["ip", "-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.77.0.1 dev host0"),
        "no default route: {routes}"
    );
    // The route works: the server answers a ping through it.
    net.container
        .run(&["busybox", "ping", "-c1", "-W2", "10.77.0.1"]);
}

fn check_lease(lease: &Lease) {
    let a = u32::from(lease.address);
    assert!(
        (u32::from(std::net::Ipv4Addr::new(10, 77, 0, 10))
            ..=u32::from(std::net::Ipv4Addr::new(10, 77, 0, 50)))
            .contains(&a),
        "{lease:?}"
    );
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some("10.77.0.1".parse().unwrap()));
    assert_eq!(
        lease.dns,
        vec!["10.77.0.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(lease.domain.as_deref(), Some("zone.test"));
    assert_eq!(
        lease.server,
        "10.77.0.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let rc = resolv_conf(lease);
    assert!(
        rc.contains("nameserver 10.77.0.1\n") && rc.contains("search zone.test\n"),
        "{rc}"
    );
}

#[test]
fn lease_from_dnsmasq_configures_host0() {
    require!("dnsmasq", "ip", "nsenter", "ss", "busybox");
    let net = Net::new("dnsmasq");
    let _server = net.dnsmasq();
    let (lease, took) = net.acquire(Duration::from_secs(10));
    eprintln!("our client, dnsmasq, first lease: {took:?}");
    check_lease(&lease);
    assert!(lease.lease_time <= Duration::from_secs(3600) && lease.lease_time > Duration::ZERO);
    check_configured(&net, &lease);
}

#[test]
fn lease_from_busybox_udhcpd_configures_host0() {
    require!("busybox", "ip", "nsenter", "ss");
    let net = Net::new("udhcpd");
    let _server = net.udhcpd();
    let (lease, took) = net.acquire(Duration::from_secs(10));
    eprintln!("our client, busybox udhcpd, first lease: {took:?}");
    check_lease(&lease);
    assert_eq!(lease.lease_time, Duration::from_secs(3600));
    check_configured(&net, &lease);
}

/// Rapid commit (RFC 4039) against dnsmasq: with `--dhcp-rapid-commit` it
/// binds the lease on the DISCOVER (its log shows no REQUEST); without it
/// the client that asked still gets its lease by the four messages.
#[test]
fn rapid_commit_works_with_dnsmasq_and_falls_back_without_it() {
    require!("dnsmasq", "ip", "nsenter", "ss", "busybox");
    let net = Net::new("rapid");
    let log = net.dir.join("dnsmasq.log");
    let log_arg = format!("--log-facility={}", log.display());
    let server = net.dnsmasq_with(&["--dhcp-rapid-commit", "--log-dhcp", &log_arg]);
    let (lease, took) = net.acquire_from(Answering::Netd, Duration::from_secs(10));
    eprintln!("our client, dnsmasq with rapid commit: {took:?}");
    check_lease(&lease);
    check_configured(&net, &lease);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("DHCPDISCOVER(srv0)") && text.contains("DHCPACK(srv0)"),
        "{text}"
    );
    assert!(
        !text.contains("DHCPREQUEST"),
        "a REQUEST was needed: {text}"
    );
    assert!(!text.contains("DHCPOFFER"), "an OFFER was made: {text}");

    let net = Net::new("norapid");
    let _server = net.dnsmasq();
    let (lease, _) = net.acquire_from(Answering::Netd, Duration::from_secs(10));
    check_lease(&lease);
}

#[test]
fn no_server_times_out_with_a_clear_error() {
    require!("ip", "nsenter");
    let net = Net::new("none");
    let ns = net.container.file();
    let start = Instant::now();
    let err = acquire(
        ns.as_fd(),
        "host0",
        MAC,
        "web",
        Answering::Any,
        Duration::from_millis(700),
    )
    .unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("host0") && msg.contains("no DHCP server answered"),
        "{msg}"
    );
}

#[test]
fn missing_interface_is_an_error() {
    require!("ip", "nsenter");
    let net = Net::new("noif");
    let ns = net.container.file();
    let err = acquire(
        ns.as_fd(),
        "nosuch0",
        MAC,
        "web",
        Answering::Any,
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nosuch0"), "{err}");
}

/// Wall time of a command run in `ns` (which quits once it has a lease).
fn time_cmd(ns: &Netns, args: &[&str]) -> Duration {
    let start = Instant::now();
    ns.run(args);
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Side by side against one dnsmasq, interleaved: our client, busybox
/// udhcpc, ISC dhclient; once with a MAC the server has never seen (a new
/// lease) and once with a known one. Informational: prints medians, asserts
/// only that each client got a lease.
#[test]
fn lease_time_next_to_udhcpc_and_dhclient() {
    require!("dnsmasq", "ip", "nsenter", "ss", "udhcpc", "dhclient");
    const ROUNDS: u8 = 7;
    let net = Net::new("timing");
    let _server = net.dnsmasq();
    let dir = net.dir.display().to_string();
    let c = &net.container;
    // Process start cost included in the others' wall times.
    let overhead = median((0..ROUNDS).map(|_| time_cmd(c, &["true"])).collect());
    let mut t: [Vec<Duration>; 6] = Default::default();
    let mut next_mac = 0x10u8;
    for round in 0..ROUNDS {
        for known in [false, true] {
            for (k, client) in ["ours", "udhcpc", "dhclient"].iter().enumerate() {
                let mac = if known {
                    MAC
                } else {
                    next_mac += 1;
                    [0x0e, 0x4e, 0x53, 0x00, 0x01, next_mac]
                };
                c.run(&["ip", "link", "set", "host0", "address", &mac_str(mac)]);
                net.flush();
                let took = match *client {
                    "ours" => {
                        let ns = c.file();
                        let start = Instant::now();
                        acquire(
                            ns.as_fd(),
                            "host0",
                            mac,
                            "web",
                            Answering::Any,
                            Duration::from_secs(10),
                        )
                        .expect("lease");
                        start.elapsed()
                    }
                    "udhcpc" => time_cmd(
                        c,
                        &[
                            "udhcpc",
                            "-f",
                            "-q",
                            "-n",
                            "-t",
                            "5",
                            "-i",
                            "host0",
                            "-s",
                            "/bin/true",
                        ],
                    ),
                    _ => {
                        // A fresh lease file, so dhclient does the full
                        // DISCOVER exchange as the others do; without -d it
                        // returns once bound and leaves a daemon, killed
                        // through its pid file.
                        let lf = format!("{dir}/dhclient-{round}-{known}.leases");
                        let pf = format!("{dir}/dhclient-{round}-{known}.pid");
                        let took = time_cmd(
                            c,
                            &[
                                "dhclient",
                                "-1",
                                "-4",
                                "-sf",
                                "/bin/true",
                                "-lf",
                                &lf,
                                "-pf",
                                &pf,
                                "host0",
                            ],
                        );
                        let pid = std::fs::read_to_string(&pf).unwrap_or_default();
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            // SAFETY: kill(2) of the dhclient this test started.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                        took
                    }
                };
                t[usize::from(known) * 3 + k].push(took);
            }
        }
    }
    let [a, b, d, e, f, g] = t.map(median);
    eprintln!(
        "lease time against dnsmasq, median of {ROUNDS} (udhcpc/dhclient: wall time including \
         nsenter+exec, about {overhead:?}):\n  new lease:   netspawn {a:?}, udhcpc {b:?}, dhclient {d:?}\n  \
         known MAC:   netspawn {e:?}, udhcpc {f:?}, dhclient {g:?}"
    );
}
