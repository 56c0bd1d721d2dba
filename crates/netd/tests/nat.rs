//! NAT and port forwards against the real kernel, fully isolated: three network
//! namespaces made by the test ("host", "ctr" as the container, "inet" as the
//! upstream), joined by veths; netd's NAT runs in "host". Needs root and `nft`,
//! `python3` (servers and clients); skipped loudly otherwise.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netd::nat::{watch_and_restore, Masquerade, Nat, NatError, NatPaths, PortForward, Proto};

mod common;
use common::Ns;

/// A python3 TCP server in `ns` that answers every connection with the peer's
/// address, then closes it.
fn peer_echo_server(ns: &Ns, bind: &str, port: u16) -> KillOnDrop {
    let script = format!(
        "import socket,sys\n\
         fam = socket.AF_INET6 if ':' in '{bind}' else socket.AF_INET\n\
         s = socket.socket(fam)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{bind}', {port}))\n\
         s.listen(16)\n\
         print('ready', flush=True)\n\
         while True:\n\
         \x20   c, a = s.accept()\n\
         \x20   c.sendall(a[0].encode())\n\
         \x20   c.close()\n"
    );
    // nsenter (without -p) execs python3 itself, so killing the child kills
    // the server; no `timeout` wrapper that would leave it orphaned.
    let mut child = Command::new("nsenter")
        .args(["-t", &ns.pid(), "-n", "--", "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3 server");
    let mut ready = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .expect("server ready");
    KillOnDrop(child)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connect from `ns` with python3; the server's answer, or None on failure.
fn connect_from(ns: &Ns, addr: &str, port: u16) -> Option<String> {
    let script = format!(
        "import socket\n\
         s = socket.create_connection(('{addr}', {port}), timeout=2)\n\
         print(s.recv(100).decode(), end='')\n"
    );
    let out = ns.cmd(10, &["python3", "-c", &script]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Connect from the test thread (which lives in "host").
fn connect_here(addr: &str, port: u16) -> Option<String> {
    let sa: SocketAddr = format!("{addr}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// `nft` in the test thread's namespace; stdout if it succeeded.
fn nft(args: &[&str]) -> Option<String> {
    let out = Command::new("nft").args(args).output().expect("run nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl(path: &str) -> String {
    fs::read_to_string(format!("/proc/sys/{path}"))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

fn prerequisites() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root".into());
    }
    for tool in ["nft", "python3", "unshare", "nsenter", "ip"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("needs {tool}"));
        }
    }
    Ok(())
}

#[test]
fn masquerade_port_forwards_localhost_restore_and_cleanup() {
    if let Err(why) = prerequisites() {
        eprintln!("SKIPPED nat test: {why}");
        return;
    }
    let host = Ns::new();
    let ctr = Ns::new();
    let inet = Ns::new();

    // host ve-ctr 10.77.0.1/28, fd77::1/64  <->  ctr host0 10.77.0.2/28, fd77::2/64
    // host up0 203.0.113.2/24, 2001:db8::2/64  <->  inet eth0 .1 (no route back
    // to the container subnets: only masquerade makes replies possible).
    host.run(&[
        "ip",
        "link",
        "add",
        "ve-ctr",
        "type",
        "veth",
        "peer",
        "name",
        "host0",
        "netns",
        &ctr.pid(),
    ]);
    host.run(&[
        "ip",
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &inet.pid(),
    ]);
    for (ns, dev, v4, v6, gw4, gw6) in [
        (&host, "ve-ctr", "10.77.0.1/28", "fd77::1/64", None, None),
        (&host, "up0", "203.0.113.2/24", "2001:db8::2/64", None, None),
        (
            &ctr,
            "host0",
            "10.77.0.2/28",
            "fd77::2/64",
            Some("10.77.0.1"),
            Some("fd77::1"),
        ),
        (
            &inet,
            "eth0",
            "203.0.113.1/24",
            "2001:db8::1/64",
            None,
            None,
        ),
    ] {
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns.run(&["ip", "addr", "add", v4, "dev", dev]);
        ns.run(&["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"]);
        ns.run(&["ip", "link", "set", dev, "up"]);
        if let Some(gw) = gw4 {
            ns.run(&["ip", "route", "add", "default", "via", gw]);
        }
        if let Some(gw) = gw6 {
            ns.run(&["ip", "-6", "route", "add", "default", "via", gw]);
        }
    }

    // From here on, this thread (and what it spawns) lives in "host".
    let host_ns = fs::File::open(format!("/proc/{}/ns/net", host.pid())).unwrap();
    nix::sched::setns(host_ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();

    // Another owner's table, which netd must never touch.
    nft(&["add", "table", "inet", "other"]).unwrap();
    nft(&[
        "add",
        "chain",
        "inet",
        "other",
        "post",
        "{ type nat hook postrouting priority 50; }",
    ])
    .unwrap();
    nft(&[
        "add",
        "rule",
        "inet",
        "other",
        "post",
        "ip",
        "daddr",
        "192.0.2.9",
        "counter",
    ])
    .unwrap();
    let other_before = nft(&["list", "table", "inet", "other"]).unwrap();

    let ipv6_ok = fs::metadata("/proc/sys/net/ipv6/conf/lo/force_forwarding").is_ok();
    if !ipv6_ok {
        eprintln!("NOTE: kernel without force_forwarding: IPv6 masquerade not checked");
    }

    let mut nat = Nat::new();
    nat.set_masquerade("ve-ctr", "10.77.0.0/28".parse().unwrap(), Masquerade::Both)
        .unwrap();
    nat.set_masquerade("ve-ctr", "fd77::/64".parse().unwrap(), Masquerade::Both)
        .unwrap();
    nat.apply().unwrap();
    assert!(
        nat.warnings().is_empty() || !ipv6_ok,
        "{:?}",
        nat.warnings()
    );

    // Forwarding per interface only: the global switches stay off.
    assert_eq!(sysctl("net/ipv4/conf/ve-ctr/forwarding"), "1");
    assert_eq!(sysctl("net/ipv4/conf/up0/forwarding"), "1");
    assert_eq!(sysctl("net/ipv4/ip_forward"), "0");
    assert_eq!(sysctl("net/ipv4/conf/all/forwarding"), "0");
    assert_eq!(sysctl("net/ipv6/conf/all/forwarding"), "0");
    if ipv6_ok {
        assert_eq!(sysctl("net/ipv6/conf/ve-ctr/force_forwarding"), "1");
        assert_eq!(sysctl("net/ipv6/conf/up0/force_forwarding"), "1");
        // The uplink still accepts router advertisements (host mode).
        assert_eq!(sysctl("net/ipv6/conf/up0/forwarding"), "0");
    }

    // Masquerade: the upstream sees the host's address.
    let _up4 = peer_echo_server(&inet, "0.0.0.0", 7000);
    assert_eq!(
        connect_from(&ctr, "203.0.113.1", 7000).as_deref(),
        Some("203.0.113.2")
    );
    if ipv6_ok {
        let _up6 = peer_echo_server(&inet, "::", 7006);
        assert_eq!(
            connect_from(&ctr, "2001:db8::1", 7006).as_deref(),
            Some("2001:db8::2")
        );
    }

    // Port forward tcp:8080 -> container :80.
    let _web = peer_echo_server(&ctr, "0.0.0.0", 80);
    let fwd = PortForward {
        proto: Proto::Tcp,
        host_port: 8080,
        container_addr: "10.77.0.2".parse().unwrap(),
        container_port: 80,
    };
    nat.add_port_forward("ctr", fwd).unwrap();
    nat.apply().unwrap();
    assert_eq!(sysctl("net/ipv4/conf/ve-ctr/route_localnet"), "1");
    // From the upstream: DNAT, the client's own address is kept.
    assert_eq!(
        connect_from(&inet, "203.0.113.2", 8080).as_deref(),
        Some("203.0.113.1")
    );
    // From the host itself, on its own address and on 127.0.0.1.
    // (the host's own address is kept as source; 127.0.0.1 is masqueraded)
    assert_eq!(
        connect_here("203.0.113.2", 8080).as_deref(),
        Some("203.0.113.2")
    );
    assert_eq!(
        connect_here("127.0.0.1", 8080).as_deref(),
        Some("10.77.0.1")
    );

    // The uplink forwards only replies and port forwards: routing straight to
    // the container's address from upstream is dropped.
    inet.run(&["ip", "route", "add", "10.77.0.0/28", "via", "203.0.113.2"]);
    assert_eq!(connect_from(&inet, "10.77.0.2", 80), None);

    // Another machine asking for the same port: a clear error, nothing made.
    let busy = PortForward {
        container_addr: "10.77.0.3".parse().unwrap(),
        ..fwd
    };
    let err = nat.add_port_forward("other", busy).unwrap_err();
    assert!(matches!(err, NatError::PortBusy { .. }), "{err}");
    assert!(nat.port_forwards("other").is_empty());

    // apply is idempotent, and the other table is untouched.
    nat.apply().unwrap();
    assert!(!nat.ensure().unwrap(), "table as wanted");
    assert_eq!(
        nft(&["list", "table", "inet", "other"]).unwrap(),
        other_before
    );

    // Someone flushes the ruleset: the watcher puts our table back.
    let nat = Arc::new(tokio::sync::Mutex::new(nat));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let watcher = tokio::spawn(watch_and_restore(nat.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        nft(&["flush", "ruleset"]).unwrap();
        assert!(nft(&["list", "table", "inet", "netspawn"]).is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while nft(&["list", "table", "inet", "netspawn"]).is_none() {
            assert!(Instant::now() < deadline, "table not restored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        watcher.abort();
    });
    drop(rt);
    let mut nat = Arc::try_unwrap(nat).unwrap().into_inner();
    assert_eq!(
        connect_here("127.0.0.1", 8080).as_deref(),
        Some("10.77.0.1")
    );

    // ensure() by hand after a flush.
    nft(&["flush", "ruleset"]).unwrap();
    assert!(nat.ensure().unwrap(), "restored after flush");
    assert!(!nat.ensure().unwrap(), "nothing to do twice");

    // The machine goes away: no rules, no table, sysctls as they were.
    nat.remove_owner("ctr");
    nat.remove_link("ve-ctr");
    nat.apply().unwrap();
    assert!(nft(&["list", "table", "inet", "netspawn"]).is_none());
    assert!(
        nat.changed_sysctls().is_empty(),
        "{:?}",
        nat.changed_sysctls()
    );
    assert_eq!(sysctl("net/ipv4/conf/ve-ctr/forwarding"), "0");
    assert_eq!(sysctl("net/ipv4/conf/ve-ctr/route_localnet"), "0");
    assert_eq!(sysctl("net/ipv4/conf/up0/forwarding"), "0");
    if ipv6_ok {
        assert_eq!(sysctl("net/ipv6/conf/up0/force_forwarding"), "0");
    }
    assert_eq!(connect_here("127.0.0.1", 8080), None);

    // An uplink the admin already forwards on is neither guarded nor restored:
    // direct routing to the container works there, as it did before netd.
    fs::write("/proc/sys/net/ipv4/conf/up0/forwarding", "1").unwrap();
    nat.set_masquerade("ve-ctr", "10.77.0.0/28".parse().unwrap(), Masquerade::Ipv4)
        .unwrap();
    nat.apply().unwrap();
    assert_eq!(
        connect_from(&inet, "10.77.0.2", 80).as_deref(),
        Some("203.0.113.1")
    );
    nat.remove_link("ve-ctr");
    nat.apply().unwrap();
    assert_eq!(sysctl("net/ipv4/conf/up0/forwarding"), "1");
    fs::write("/proc/sys/net/ipv4/conf/up0/forwarding", "0").unwrap();

    // remove_all on shutdown with rules present.
    nat.set_masquerade("ve-ctr", "10.77.0.0/28".parse().unwrap(), Masquerade::Ipv4)
        .unwrap();
    nat.apply().unwrap();
    assert!(nft(&["list", "table", "inet", "netspawn"]).is_some());
    nat.remove_all().unwrap();
    assert!(nft(&["list", "table", "inet", "netspawn"]).is_none());
    assert_eq!(sysctl("net/ipv4/conf/up0/forwarding"), "0");

    // netd killed with everything set up: the next one undoes it at startup.
    let journal =
        std::env::temp_dir().join(format!("netspawn-nat-test-{}.json", std::process::id()));
    let paths = NatPaths {
        journal: Some(journal.clone()),
        ..NatPaths::default()
    };
    let mut crashed = Nat::with_paths(paths.clone());
    crashed
        .set_masquerade("ve-ctr", "10.77.0.0/28".parse().unwrap(), Masquerade::Ipv4)
        .unwrap();
    crashed.apply().unwrap();
    std::mem::forget(crashed);
    assert_eq!(sysctl("net/ipv4/conf/up0/forwarding"), "1");
    let mut next = Nat::with_paths(paths);
    assert_eq!(next.recover().unwrap(), 2, "ve-ctr and up0 forwarding");
    assert_eq!(sysctl("net/ipv4/conf/up0/forwarding"), "0");
    assert_eq!(sysctl("net/ipv4/conf/ve-ctr/forwarding"), "0");
    assert!(nft(&["list", "table", "inet", "netspawn"]).is_none());
    assert!(!journal.exists());
}
