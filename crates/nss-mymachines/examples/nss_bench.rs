//! The measuring program of `bench/nss.sh`: per-call latency of glibc's
//! `getaddrinfo` for a name from /etc/hosts (`files`) and for a machine name
//! (`mymachines`) with registries of several sizes, all in one process.
//!
//! It must run where the benchmark's private `/etc/nsswitch.conf`
//! (`hosts: files mymachines`) and `/etc/hosts` are mounted and the module is
//! on `LD_LIBRARY_PATH`; bench/nss.sh arranges that inside `unshare -m`. It
//! writes one registry per size under ROOT (`ROOT/netspawn-N/machines`; the
//! script passes a private tmpfs on /run, so paths are as deep as the real
//! `/run/netspawn/machines/NAME`), with
//! entries formatted by `netspawn_common::registry::Entry` as the launcher
//! writes them and owned by this process (so they are alive), and switches
//! between them by setting `NETSPAWN_RUN_DIR`, which the module reads on
//! every call. Scenarios are interleaved round by round (rotating order) so
//! that a busy machine slows them alike; each round's mean per call is one
//! sample, in this thread's CPU time (`samples_us`: immune to preemption by
//! other work on a shared machine) and in wall time (`wall_samples_us`).
//! After the lookups come the floors: the bare system calls the module makes
//! now or made before the hosts view (read an entry, open a missing one,
//! read /proc/PID/stat, set the signal mask; `readlink` of a hosts link and
//! of a missing one, `kill(PID, 0)`), timed the same way. Prints JSON on stdout.
//!
//! Usage: `nss_bench ROOT HOSTS_NAME ROUNDS CALLS SIZE...`

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One sample: µs per call in CPU time of this thread (user + system: what
/// the lookup itself costs, unaffected by other work preempting it on a
/// shared machine) and in wall time.
#[derive(Clone, Copy)]
struct Sample {
    cpu: f64,
    wall: f64,
}

/// Starts a sample's clocks.
struct Clocks {
    wall: Instant,
    cpu: f64,
}

fn thread_cpu_us() -> f64 {
    // SAFETY: zeroed timespec is valid; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

impl Clocks {
    fn start() -> Clocks {
        Clocks {
            wall: Instant::now(),
            cpu: thread_cpu_us(),
        }
    }

    fn per_call(&self, calls: u32) -> Sample {
        let n = f64::from(calls.max(1));
        Sample {
            cpu: (thread_cpu_us() - self.cpu) / n,
            wall: self.wall.elapsed().as_secs_f64() * 1e6 / n,
        }
    }
}

use netspawn_common::registry::{process_start_time, Entry};

/// One thing to time: a name looked up with a given registry in place.
struct Scenario {
    label: String,
    name: CString,
    run_dir: PathBuf,
    expect_found: bool,
    /// What is timed: getaddrinfo, or one of the system-call floors.
    kind: Kind,
    samples: Vec<Sample>,
}

/// The floors: what the module's steps cost as bare system calls on this
/// machine (the same calls the module makes, without glibc's NSS around them).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Getaddrinfo,
    /// `open` + `read` + `close` of the registry entry `name`.
    ReadEntry,
    /// `open` of a registry entry that does not exist.
    OpenMissing,
    /// `open` + `read` + `close` of this process's `/proc/PID/stat`.
    ProcStat,
    /// The signal mask set and restored.
    SigMask,
    /// `readlink` of the hosts link `name`.
    ReadLink,
    /// `readlink` of a hosts link that does not exist.
    ReadLinkMissing,
    /// `kill(self, 0)`.
    Kill0,
}

/// Times `calls` repetitions of a floor; returns µs per repetition.
fn time_floor(kind: Kind, path: &CString, calls: u32) -> Result<Sample, String> {
    let mut buf = [0u8; 4096];
    let start = Clocks::start();
    for _ in 0..calls {
        // SAFETY: valid NUL-terminated path and buffer; descriptors are closed.
        unsafe {
            match kind {
                Kind::ReadEntry | Kind::ProcStat | Kind::OpenMissing => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    );
                    if (fd >= 0) == (kind == Kind::OpenMissing) {
                        return Err(format!("{path:?}: unexpected open result {fd}"));
                    }
                    if fd >= 0 {
                        libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                        libc::close(fd);
                    }
                }
                Kind::SigMask => {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    let mut old: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGHUP);
                    libc::sigaddset(&mut set, libc::SIGCHLD);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
                    libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                }
                Kind::ReadLink | Kind::ReadLinkMissing => {
                    let n = libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                    if (n >= 0) == (kind == Kind::ReadLinkMissing) {
                        return Err(format!("{path:?}: unexpected readlink result {n}"));
                    }
                }
                Kind::Kill0 => {
                    if libc::kill(libc::getpid(), 0) != 0 {
                        return Err("kill(self, 0) failed".into());
                    }
                }
                Kind::Getaddrinfo => return Err("not a floor".into()),
            }
        }
    }
    Ok(start.per_call(calls))
}

fn time_scenario(s: &Scenario, calls: u32) -> Result<Sample, String> {
    match s.kind {
        Kind::Getaddrinfo => time_lookups(&s.name, calls, s.expect_found),
        kind => time_floor(kind, &s.name, calls),
    }
}

fn die(msg: &str) -> ! {
    eprintln!("nss_bench: {msg}");
    std::process::exit(1);
}

/// The address machine number `i` gets: one IPv4 address, like a hosts line.
fn address(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// Writes a registry of `n` live machines `machine-1..n` under `run_dir`.
fn write_registry(run_dir: &Path, n: usize) {
    let dir = run_dir.join("machines");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    let hosts = run_dir.join("hosts");
    std::fs::create_dir_all(&hosts).unwrap_or_else(|e| die(&format!("{}: {e}", hosts.display())));
    let me = std::process::id();
    let start = process_start_time(me).unwrap_or_else(|| die("no start time for self"));
    for i in 1..=n {
        let name = format!("machine-{i}");
        let entry = Entry {
            name: name.clone(),
            uuid: format!("{i:032x}"),
            leader: me,
            launcher: me,
            launcher_start: start,
            root: PathBuf::from(format!("/var/lib/machines/{name}")),
            class: "container".into(),
            service: "netspawn".into(),
            state: "running".into(),
            timestamp_usec: 1,
            cgroups: vec![PathBuf::from(format!("/sys/fs/cgroup/netspawn/{name}"))],
            private_network: true,
            interfaces: vec![format!("ve-{name}")],
            addresses: vec![address(i).parse().unwrap_or_else(|_| die("bad address"))],
            ..Entry::default()
        };
        // Written as Registry::write does: a temporary file renamed into
        // place, then the hosts link (what the current module reads; a
        // baseline module from before the hosts view reads the entry).
        let tmp = dir.join(format!(".#{name}"));
        std::fs::write(&tmp, entry.format()).unwrap_or_else(|e| die(&format!("write: {e}")));
        std::fs::rename(&tmp, dir.join(&name)).unwrap_or_else(|e| die(&format!("rename: {e}")));
        let target = netspawn_common::hosts::format_target(me, &entry.addresses);
        std::os::unix::fs::symlink(target, hosts.join(&name))
            .unwrap_or_else(|e| die(&format!("symlink: {e}")));
    }
}

/// Times `calls` lookups of `name`; returns µs per call, or an error when a
/// lookup's outcome is not the expected one.
fn time_lookups(name: &CString, calls: u32, expect_found: bool) -> Result<Sample, String> {
    // SAFETY: zeroed addrinfo is a valid "no hints" value; fields set below.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let start = Clocks::start();
    for _ in 0..calls {
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        // SAFETY: valid C string, hints and out-pointer; the result is freed.
        let rc = unsafe { libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut res) };
        if rc == 0 {
            // SAFETY: res came from a successful getaddrinfo.
            unsafe { libc::freeaddrinfo(res) };
        }
        if (rc == 0) != expect_found {
            return Err(format!("{name:?}: getaddrinfo returned {rc}"));
        }
    }
    Ok(start.per_call(calls))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (sorted[lo], sorted[hi]);
    a + (b - a) * (pos - lo as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        die("usage: nss_bench ROOT HOSTS_NAME ROUNDS CALLS SIZE...");
    }
    let root = PathBuf::from(&args[0]);
    let hosts_name = &args[1];
    let rounds: u32 = args[2].parse().unwrap_or_else(|_| die("ROUNDS"));
    let calls: u32 = args[3].parse().unwrap_or_else(|_| die("CALLS"));
    let sizes: Vec<usize> = args[4..]
        .iter()
        .map(|s| s.parse().unwrap_or_else(|_| die("SIZE")))
        .collect();

    let empty = root.join("netspawn-0");
    write_registry(&empty, 0);
    let cstr = |s: &str| CString::new(s).unwrap_or_else(|_| die("NUL in name"));
    let mut scenarios = vec![Scenario {
        label: "files".into(),
        name: cstr(hosts_name),
        run_dir: empty.clone(),
        expect_found: true,
        kind: Kind::Getaddrinfo,
        samples: Vec::new(),
    }];
    for &n in &sizes {
        let run_dir = root.join(format!("netspawn-{n}"));
        write_registry(&run_dir, n);
        scenarios.push(Scenario {
            label: format!("mymachines/{n}"),
            name: cstr(&format!("machine-{}", n / 2 + 1)),
            run_dir,
            expect_found: true,
            kind: Kind::Getaddrinfo,
            samples: Vec::new(),
        });
    }
    if let Some(&n) = sizes.last() {
        scenarios.push(Scenario {
            label: format!("unknown/{n}"),
            name: cstr("no-such-machine"),
            run_dir: root.join(format!("netspawn-{n}")),
            expect_found: false,
            kind: Kind::Getaddrinfo,
            samples: Vec::new(),
        });
        let machines = root.join(format!("netspawn-{n}/machines"));
        let hosts = root.join(format!("netspawn-{n}/hosts"));
        let floors = [
            (
                "floor/read-entry",
                Kind::ReadEntry,
                machines.join(format!("machine-{}", n / 2 + 1)),
            ),
            (
                "floor/open-missing",
                Kind::OpenMissing,
                machines.join("no-such-machine"),
            ),
            (
                "floor/proc-stat",
                Kind::ProcStat,
                PathBuf::from(format!("/proc/{}/stat", std::process::id())),
            ),
            ("floor/sigmask", Kind::SigMask, PathBuf::new()),
            (
                "floor/readlink",
                Kind::ReadLink,
                hosts.join(format!("machine-{}", n / 2 + 1)),
            ),
            (
                "floor/readlink-missing",
                Kind::ReadLinkMissing,
                hosts.join("no-such-machine"),
            ),
            ("floor/kill0", Kind::Kill0, PathBuf::from("self")),
        ];
        for (label, kind, path) in floors {
            scenarios.push(Scenario {
                label: label.into(),
                name: cstr(path.to_str().unwrap_or_else(|| die("path not UTF-8"))),
                run_dir: root.join(format!("netspawn-{n}")),
                expect_found: true,
                kind,
                samples: Vec::new(),
            });
        }
    }

    // Warm up every path (module loaded, caches filled) before measuring.
    for s in &scenarios {
        std::env::set_var("NETSPAWN_RUN_DIR", &s.run_dir);
        if let Err(e) = time_scenario(s, calls.min(200)) {
            die(&e);
        }
    }
    let count = scenarios.len();
    for round in 0..rounds as usize {
        for k in 0..count {
            let s = &mut scenarios[(round + k) % count];
            std::env::set_var("NETSPAWN_RUN_DIR", &s.run_dir);
            match time_scenario(s, calls) {
                Ok(us) => s.samples.push(us),
                Err(e) => die(&e),
            }
        }
    }

    let mut out = String::from("{\"calls_per_sample\": ");
    out.push_str(&calls.to_string());
    out.push_str(", \"scenarios\": [");
    for (i, s) in scenarios.iter().enumerate() {
        let cpu: Vec<f64> = s.samples.iter().map(|x| x.cpu).collect();
        let wall: Vec<f64> = s.samples.iter().map(|x| x.wall).collect();
        let mut sorted = cpu.clone();
        sorted.sort_by(f64::total_cmp);
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!(
            "{{\"label\": \"{}\", \"name\": {:?}, \"median_us\": {:.4}, \"p10_us\": {:.4}, \"p90_us\": {:.4}, \"samples_us\": [{}], \"wall_samples_us\": [{}]}}",
            s.label,
            s.name.to_string_lossy(),
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.1),
            quantile(&sorted, 0.9),
            list(&cpu),
            list(&wall)
        ));
    }
    out.push_str("]}");
    println!("{out}");
}
