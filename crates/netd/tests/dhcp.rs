//! The DHCP server against real clients, fully isolated: two network namespaces made by the test
//! ("srv" runs `dhcp::io` in-process on a thread that entered it, "cli" runs busybox `udhcpc` or
//! ISC `dhclient`), joined by a veth. Needs root, `udhcpc`, `dhclient`, `ip`, `nsenter`,
//! `unshare`; skipped loudly otherwise.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use netd::dhcp::lease::{FileStore, LeaseState};
use netd::dhcp::server::{RequestContext, Server, ServerConfig};

mod common;
use common::{have, Ns};

const SRV_IF: &str = "dhs0";
const CLI_IF: &str = "dhc0";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Kills a background client (and whatever it left behind by pid file) on drop.
struct Cleanup {
    pidfiles: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.pidfiles {
            if let Some(pid) = fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for t in ["udhcpc", "dhclient", "ip", "nsenter", "unshare", "timeout"] {
        if !have(t) {
            return Some(format!("{t} is not installed"));
        }
    }
    None
}

/// The server running in the "srv" namespace on its own thread; stopped on drop.
struct RunningServer {
    server: Arc<Mutex<Server>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    fn start(ns: &Ns, lease_file: &Path) -> RunningServer {
        let mut cfg =
            ServerConfig::from_subnet(SERVER_IP, "10.77.0.0/28".parse().unwrap(), 0, 0).unwrap();
        cfg.domain = Some("zone.test".into());
        cfg.default_lease = Duration::from_secs(600);
        let server = Server::new(cfg, Box::new(FileStore::new(lease_file)), SystemTime::now())
            .expect("server");
        let server = Arc::new(Mutex::new(server));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let nspath = format!("/proc/{}/ns/net", ns.pid());
        let srv = server.clone();
        let thread = std::thread::spawn(move || {
            // This thread alone enters the namespace; the socket is made there.
            let f = fs::File::open(&nspath).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let sock = netd::dhcp::io::bind_socket(SRV_IF).expect("bind DHCP socket");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            ready_tx.send(()).unwrap();
            rt.block_on(netd::dhcp::io::serve_socket(
                sock,
                SRV_IF,
                srv,
                |mac: &[u8]| RequestContext {
                    hostname_for: (mac.len() == 6).then(|| "web".to_string()),
                    ..Default::default()
                },
                async {
                    let _ = stopped.await;
                },
            ))
            .expect("serve");
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server ready");
        RunningServer {
            server,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client script that appends each event and its environment to `out`; with `configure` it
/// also sets the address, since renewal and release are unicast from the bound address.
fn write_script(dir: &Path, name: &str, out: &Path, configure: bool) -> PathBuf {
    let path = dir.join(name);
    let conf = if configure {
        "case \"$1$reason\" in \
         bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\";; \
         BOUND|RENEW|REBIND|REBOOT) ip addr flush dev \"$interface\"; \
         ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\";; \
         deconfig|RELEASE|EXPIRE|STOP) ip addr flush dev \"$interface\";; esac\n"
    } else {
        ""
    };
    let body = format!(
        "#!/bin/sh\n{{ echo \"EVENT=${{1:-$reason}}\"; env | grep -E '{VARS}'; echo END; }} >> {}\n{conf}exit 0\n",
        out.display()
    );
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The variables udhcpc and dhclient pass to their scripts that the tests look at.
const VARS: &str =
    "^(ip|subnet|mask|router|dns|lease|hostname|domain|serverid|interface|reason|new_[a-z_]*)=";

/// The environments the script recorded, one map per event, in order.
fn events(out: &Path) -> Vec<HashMap<String, String>> {
    let text = fs::read_to_string(out).unwrap_or_default();
    let mut all = Vec::new();
    let mut cur = HashMap::new();
    for line in text.lines() {
        if line == "END" {
            all.push(std::mem::take(&mut cur));
        } else if let Some((k, v)) = line.split_once('=') {
            cur.insert(k.to_string(), v.to_string());
        }
    }
    all
}

fn last_event(out: &Path, name: &str) -> Option<HashMap<String, String>> {
    events(out)
        .into_iter()
        .rev()
        .find(|e| e.get("EVENT").map(String::as_str) == Some(name))
}

fn wait_for_event(out: &Path, name: &str, count: usize) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let evs: Vec<_> = events(out)
            .into_iter()
            .filter(|e| e.get("EVENT").map(String::as_str) == Some(name))
            .collect();
        if evs.len() >= count {
            return evs[count - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {name} event #{count}; got {:?}",
            events(out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Setup {
    _dir: TempDir,
    dir: PathBuf,
    cli: Ns,
    srv: Ns,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("netd-dhcp-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let srv = Ns::new();
    let cli = Ns::new();
    srv.run(&[
        "ip",
        "link",
        "add",
        SRV_IF,
        "type",
        "veth",
        "peer",
        "name",
        CLI_IF,
        "netns",
        &cli.pid(),
    ]);
    srv.run(&["ip", "link", "set", "lo", "up"]);
    srv.run(&["ip", "addr", "add", "10.77.0.1/28", "dev", SRV_IF]);
    srv.run(&["ip", "link", "set", SRV_IF, "up"]);
    cli.run(&["ip", "link", "set", "lo", "up"]);
    cli.run(&["ip", "link", "set", CLI_IF, "address", "02:00:00:aa:bb:01"]);
    cli.run(&["ip", "link", "set", CLI_IF, "up"]);
    Setup {
        _dir: TempDir(dir.clone()),
        dir,
        cli,
        srv,
    }
}

fn check_common(ev: &HashMap<String, String>, keys: [&str; 6]) -> Ipv4Addr {
    // keys: ip, router, dns, lease, hostname, domain
    let get = |k: &str| ev.get(k).cloned().unwrap_or_default();
    let ip: Ipv4Addr = get(keys[0]).parse().expect("client got an address");
    assert!(
        u32::from(ip) > u32::from(SERVER_IP)
            && u32::from(ip) < u32::from(Ipv4Addr::new(10, 77, 0, 15))
    );
    assert_eq!(get(keys[1]).trim(), "10.77.0.1", "router");
    assert_eq!(get(keys[2]).trim(), "10.77.0.1", "dns");
    assert_eq!(get(keys[3]), "600", "lease time");
    assert_eq!(get(keys[4]), "web", "host name");
    assert_eq!(get(keys[5]), "zone.test", "domain");
    ip
}

fn wait_released(server: &RunningServer, ip: Ipv4Addr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = server
            .server
            .lock()
            .unwrap()
            .leases()
            .by_addr(ip)
            .map(|l| l.state);
        if st == Some(LeaseState::Released) {
            return;
        }
        assert!(Instant::now() < deadline, "release not seen: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn udhcpc_lease_renew_release_and_same_address_again() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED udhcpc_lease_renew_release_and_same_address_again: {why}");
        return;
    }
    let s = setup("udhcpc");
    let leases = s.dir.join("leases.json");
    let server = RunningServer::start(&s.srv, &leases);
    let out = s.dir.join("events");
    let script = write_script(&s.dir, "udhcpc.sh", &out, true);
    let script = script.to_str().unwrap();

    // 1. Get a lease and quit.
    let t0 = Instant::now();
    let st = s
        .cli
        .cmd(
            20,
            &[
                "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", CLI_IF, "-s", script,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let elapsed = t0.elapsed();
    assert!(st.success(), "udhcpc failed: {st}");
    eprintln!("udhcpc start to bound (and exit): {elapsed:?}");
    let ev = last_event(&out, "bound").expect("bound event");
    let ip = check_common(&ev, ["ip", "router", "dns", "lease", "hostname", "domain"]);
    assert_eq!(ev["subnet"], "255.255.255.240");
    assert_eq!(ev["serverid"], "10.77.0.1");
    // The ACK was on disk before the client saw it.
    let on_disk = netd::dhcp::LeaseTable::load(&leases).unwrap();
    assert_eq!(
        on_disk.by_addr(ip).map(|l| l.state),
        Some(LeaseState::Bound)
    );

    // 2. A long-running client: renew (unicast from the bound address), then release.
    fs::remove_file(&out).unwrap();
    let pidfile = s.dir.join("udhcpc.pid");
    let child = s
        .cli
        .cmd(
            60,
            &[
                "udhcpc",
                "-f",
                "-t",
                "5",
                "-T",
                "1",
                "-i",
                CLI_IF,
                "-s",
                script,
                "-p",
                pidfile.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Cleanup {
        pidfiles: vec![pidfile.clone()],
        children: vec![child],
    };
    let ev = wait_for_event(&out, "bound", 1);
    // Signals go to udhcpc itself (`timeout` would not forward USR1/USR2).
    let pid = nix::unistd::Pid::from_raw(
        fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    assert_eq!(
        ev["ip"].parse::<Ipv4Addr>().unwrap(),
        ip,
        "same address on restart"
    );
    let acks_before = server.server.lock().unwrap().stats().acks;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    let ev = wait_for_event(&out, "renew", 1);
    assert_eq!(
        ev["ip"].parse::<Ipv4Addr>().unwrap(),
        ip,
        "renewal keeps the address"
    );
    assert!(server.server.lock().unwrap().stats().acks > acks_before);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
    wait_released(&server, ip);
    drop(guard);

    // 3. A new client run after the release gets the same address back.
    fs::remove_file(&out).unwrap();
    let st = s
        .cli
        .cmd(
            20,
            &[
                "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", CLI_IF, "-s", script,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let ev = last_event(&out, "bound").expect("bound event");
    assert_eq!(ev["ip"].parse::<Ipv4Addr>().unwrap(), ip);
    let stats = server.server.lock().unwrap().stats().clone();
    assert_eq!(stats.dropped_malformed, 0, "{stats:?}");
    assert_eq!(stats.naks, 0, "{stats:?}");
}

#[test]
fn dhclient_lease_release_and_same_address_again() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED dhclient_lease_release_and_same_address_again: {why}");
        return;
    }
    let s = setup("dhclient");
    let leases = s.dir.join("leases.json");
    let server = RunningServer::start(&s.srv, &leases);
    let out = s.dir.join("events");
    let script = write_script(&s.dir, "dhclient.sh", &out, true);
    let script = script.to_str().unwrap().to_string();
    let lf = s.dir.join("dhclient.leases");
    let pf = s.dir.join("dhclient.pid");
    let _guard = Cleanup {
        pidfiles: vec![pf.clone()],
        children: vec![],
    };
    let dhclient = |extra: &[&str]| {
        let mut args = vec![
            "dhclient",
            "-v",
            "-sf",
            &script,
            "-lf",
            lf.to_str().unwrap(),
            "-pf",
            pf.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(CLI_IF);
        let o = s.cli.cmd(30, &args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };

    // 1. Get a lease (dhclient -1 forks into the background once bound).
    let t0 = Instant::now();
    dhclient(&["-1"]);
    eprintln!("dhclient start to bound: {:?}", t0.elapsed());
    let ev = last_event(&out, "BOUND").expect("BOUND event");
    let ip = check_common(
        &ev,
        [
            "new_ip_address",
            "new_routers",
            "new_domain_name_servers",
            "new_dhcp_lease_time",
            "new_host_name",
            "new_domain_name",
        ],
    );
    assert_eq!(ev["new_subnet_mask"], "255.255.255.240");
    assert_eq!(ev["new_dhcp_server_identifier"], "10.77.0.1");

    // 2. Release (this also stops the background dhclient).
    dhclient(&["-r"]);
    wait_released(&server, ip);

    // 3. Again: the same address.
    dhclient(&["-1"]);
    let ev = last_event(&out, "BOUND")
        .or_else(|| last_event(&out, "REBOOT"))
        .expect("bound again");
    assert_eq!(ev["new_ip_address"].parse::<Ipv4Addr>().unwrap(), ip);
    dhclient(&["-x"]);
    let stats = server.server.lock().unwrap().stats().clone();
    assert_eq!(stats.dropped_malformed, 0, "{stats:?}");
}

#[test]
fn restart_after_kill_keeps_the_lease() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED restart_after_kill_keeps_the_lease: {why}");
        return;
    }
    let s = setup("restart");
    let leases = s.dir.join("leases.json");
    let out = s.dir.join("events");
    let script = write_script(&s.dir, "udhcpc.sh", &out, false);
    let script = script.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", CLI_IF, "-s", script,
        ];
        args.extend_from_slice(extra);
        let st = s
            .cli
            .cmd(20, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        last_event(&out, "bound").expect("bound")["ip"]
            .parse::<Ipv4Addr>()
            .unwrap()
    };
    let first = {
        let _server = RunningServer::start(&s.srv, &leases);
        run(&[])
    };
    // A new server from the same lease file (what netd finds after kill -9; nothing is written
    // at shutdown), with another client's MAC asking for the first client's address: refused.
    let _server = RunningServer::start(&s.srv, &leases);
    s.cli
        .run(&["ip", "link", "set", CLI_IF, "address", "02:00:00:aa:bb:02"]);
    let first_s = first.to_string();
    let other = run(&["-r", &first_s]);
    assert_ne!(
        other, first,
        "an address acked before the restart was handed out again"
    );
    s.cli
        .run(&["ip", "link", "set", CLI_IF, "address", "02:00:00:aa:bb:01"]);
    assert_eq!(run(&[]), first);
}
