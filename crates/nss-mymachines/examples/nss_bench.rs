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
//! sample. Prints JSON on stdout.
//!
//! Usage: `nss_bench ROOT HOSTS_NAME ROUNDS CALLS SIZE...`

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use netspawn_common::registry::{process_start_time, Entry};

/// One thing to time: a name looked up with a given registry in place.
struct Scenario {
    label: String,
    name: CString,
    run_dir: PathBuf,
    expect_found: bool,
    samples: Vec<f64>,
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
        // Written as Registry::write does: a temporary file renamed into place.
        let tmp = dir.join(format!(".#{name}"));
        std::fs::write(&tmp, entry.format()).unwrap_or_else(|e| die(&format!("write: {e}")));
        std::fs::rename(&tmp, dir.join(&name)).unwrap_or_else(|e| die(&format!("rename: {e}")));
    }
}

/// Times `calls` lookups of `name`; returns µs per call, or an error when a
/// lookup's outcome is not the expected one.
fn time_lookups(name: &CString, calls: u32, expect_found: bool) -> Result<f64, String> {
    // SAFETY: zeroed addrinfo is a valid "no hints" value; fields set below.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let start = Instant::now();
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
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(calls.max(1)))
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
            samples: Vec::new(),
        });
    }
    if let Some(&n) = sizes.last() {
        scenarios.push(Scenario {
            label: format!("unknown/{n}"),
            name: cstr("no-such-machine"),
            run_dir: root.join(format!("netspawn-{n}")),
            expect_found: false,
            samples: Vec::new(),
        });
    }

    // Warm up every path (module loaded, caches filled) before measuring.
    for s in &scenarios {
        std::env::set_var("NETSPAWN_RUN_DIR", &s.run_dir);
        if let Err(e) = time_lookups(&s.name, calls.min(200), s.expect_found) {
            die(&e);
        }
    }
    let count = scenarios.len();
    for round in 0..rounds as usize {
        for k in 0..count {
            let s = &mut scenarios[(round + k) % count];
            std::env::set_var("NETSPAWN_RUN_DIR", &s.run_dir);
            match time_lookups(&s.name, calls, s.expect_found) {
                Ok(us) => s.samples.push(us),
                Err(e) => die(&e),
            }
        }
    }

    let mut out = String::from("{\"calls_per_sample\": ");
    out.push_str(&calls.to_string());
    out.push_str(", \"scenarios\": [");
    for (i, s) in scenarios.iter().enumerate() {
        let mut sorted = s.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let list: Vec<String> = s.samples.iter().map(|v| format!("{v:.4}")).collect();
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!(
            "{{\"label\": \"{}\", \"name\": {:?}, \"median_us\": {:.4}, \"p10_us\": {:.4}, \"p90_us\": {:.4}, \"samples_us\": [{}]}}",
            s.label,
            s.name.to_string_lossy(),
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.1),
            quantile(&sorted, 0.9),
            list.join(", ")
        ));
    }
    out.push_str("]}");
    println!("{out}");
}
