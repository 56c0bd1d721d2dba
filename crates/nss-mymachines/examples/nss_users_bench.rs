//! The measuring program of `bench/nss-users.sh`: per-call latency of
//! glibc's `getpwuid_r` for a local user (answered by `files`) and for a
//! UID of a machine with a user namespace (`vu-NAME-U`, answered by the
//! module), with registries of several sizes, all in one process.
//!
//! It must run where the benchmark's private `/etc/nsswitch.conf`
//! (`passwd: files mymachines`, or the module first) and `/etc/passwd` are
//! mounted and the module is on `LD_LIBRARY_PATH`; bench/nss-users.sh
//! arranges that inside `unshare -m`. It writes one registry per size under
//! ROOT (`ROOT/netspawn-N`, the script passes a private tmpfs on /run), with
//! entries and users-view links formatted by `netspawn_common` as
//! `Registry::write` makes them, owned by this process (so alive): machine
//! K has the standard range `(K + 16) * 65536`, 65536 IDs; one more machine
//! (`odd`) has a range of another size, found by listing the view. It
//! switches registries by setting `NETSPAWN_RUN_DIR`, which the module
//! reads on every call. Scenarios are interleaved round by round (rotating
//! order); each round's mean per call is one sample, in this thread's CPU
//! time (`samples_us`) and in wall time (`wall_samples_us`). Prints JSON on
//! stdout.
//!
//! Usage: `nss_users_bench ROOT LOCAL_UID ROUNDS CALLS SIZE...`

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use netspawn_common::registry::{process_start_time, Entry, UidRange};
use netspawn_common::users;

#[derive(Clone, Copy)]
struct Sample {
    cpu: f64,
    wall: f64,
}

fn thread_cpu_us() -> f64 {
    // SAFETY: zeroed timespec is valid; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

fn die(msg: &str) -> ! {
    eprintln!("nss_users_bench: {msg}");
    std::process::exit(1);
}

/// What one scenario looks up.
#[derive(Clone)]
enum Query {
    Uid(u32),
    Name(CString),
}

struct Scenario {
    label: String,
    what: String,
    query: Query,
    run_dir: PathBuf,
    /// The user name the lookup must give, or None for "no such user".
    expect: Option<String>,
    samples: Vec<Sample>,
}

/// The range of machine `k`.
fn range_of(k: usize) -> UidRange {
    let shift = u32::try_from(k + 16).unwrap_or_else(|_| die("too many machines")) * 65536;
    UidRange::new(shift, 65536).unwrap_or_else(|| die("range"))
}

/// Writes a registry of `n` live machines `machine-1..n` (and `odd`) under `run_dir`.
fn write_registry(run_dir: &Path, n: usize) {
    let me = std::process::id();
    let start = process_start_time(me).unwrap_or_else(|| die("no start time for self"));
    for d in ["machines", "userns", "uids/other"] {
        std::fs::create_dir_all(run_dir.join(d)).unwrap_or_else(|e| die(&format!("{d}: {e}")));
    }
    let odd = UidRange::new(1_000_000_000, 100_000).unwrap_or_else(|| die("range"));
    let machines = (1..=n)
        .map(|k| (format!("machine-{k}"), range_of(k)))
        .chain([("odd".to_string(), odd)]);
    for (name, range) in machines {
        let entry = Entry {
            name: name.clone(),
            uuid: format!("{:032x}", range.shift),
            leader: me,
            launcher: me,
            launcher_start: start,
            root: PathBuf::from(format!("/var/lib/machines/{name}")),
            class: "container".into(),
            service: "netspawn".into(),
            state: "running".into(),
            timestamp_usec: 1,
            userns: Some(range),
            ..Entry::default()
        };
        std::fs::write(run_dir.join("machines").join(&name), entry.format())
            .unwrap_or_else(|e| die(&format!("write: {e}")));
        let link = |dir: &str, file: &str, target: String| {
            std::os::unix::fs::symlink(target, run_dir.join(dir).join(file))
                .unwrap_or_else(|e| die(&format!("symlink: {e}")));
        };
        link(
            "uids",
            &users::id_link_rel(range),
            users::format_id_target(me, &name),
        );
        link("userns", &name, users::format_name_target(me, range));
    }
}

/// Times `calls` lookups; an error if one gives the wrong answer.
fn time_lookups(s: &Scenario, calls: u32) -> Result<Sample, String> {
    let mut buf = [0 as libc::c_char; 1024];
    let wall = Instant::now();
    let cpu = thread_cpu_us();
    for _ in 0..calls {
        // SAFETY: zeroed passwd is a valid out-value.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers and buffer length.
        let rc = unsafe {
            match &s.query {
                Query::Uid(uid) => {
                    libc::getpwuid_r(*uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result)
                }
                Query::Name(name) => libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                ),
            }
        };
        let got = (rc == 0 && !result.is_null()).then(|| {
            // SAFETY: a successful lookup filled pw_name.
            unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        });
        let ok = match (&s.expect, got) {
            (Some(want), Some(name)) => name.to_bytes() == want.as_bytes(),
            (None, None) => true,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{}: rc {rc}, got {got:?}, want {:?}",
                s.label, s.expect
            ));
        }
    }
    let n = f64::from(calls.max(1));
    Ok(Sample {
        cpu: (thread_cpu_us() - cpu) / n,
        wall: wall.elapsed().as_secs_f64() * 1e6 / n,
    })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        die("usage: nss_users_bench ROOT LOCAL_UID ROUNDS CALLS SIZE...");
    }
    let root = PathBuf::from(&args[0]);
    let local_uid: u32 = args[1].parse().unwrap_or_else(|_| die("LOCAL_UID"));
    let rounds: u32 = args[2].parse().unwrap_or_else(|_| die("ROUNDS"));
    let calls: u32 = args[3].parse().unwrap_or_else(|_| die("CALLS"));
    let sizes: Vec<usize> = args[4..]
        .iter()
        .map(|s| s.parse().unwrap_or_else(|_| die("SIZE")))
        .collect();
    // SAFETY: getpwuid before any other thread exists; the name is copied at once.
    let local_name = unsafe {
        let pw = libc::getpwuid(local_uid);
        if pw.is_null() {
            die("LOCAL_UID has no passwd entry");
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    };

    let empty = root.join("netspawn-0");
    write_registry(&empty, 0);
    let mut scenarios = vec![Scenario {
        label: "files".into(),
        what: format!("{local_uid} ({local_name})"),
        query: Query::Uid(local_uid),
        run_dir: empty.clone(),
        expect: Some(local_name.clone()),
        samples: Vec::new(),
    }];
    for &n in &sizes {
        let run_dir = root.join(format!("netspawn-{n}"));
        write_registry(&run_dir, n);
        let k = n / 2 + 1;
        let uid = range_of(k).shift + 5;
        scenarios.push(Scenario {
            label: format!("mymachines/{n}"),
            what: format!("{uid} (vu-machine-{k}-5)"),
            query: Query::Uid(uid),
            run_dir: run_dir.clone(),
            expect: Some(format!("vu-machine-{k}-5")),
            samples: Vec::new(),
        });
        scenarios.push(Scenario {
            label: format!("unknown/{n}"),
            what: "2000000000 (nobody's: both sources miss)".into(),
            query: Query::Uid(2_000_000_000),
            run_dir,
            expect: None,
            samples: Vec::new(),
        });
    }
    if let Some(&n) = sizes.last() {
        let run_dir = root.join(format!("netspawn-{n}"));
        let k = n / 2 + 1;
        scenarios.push(Scenario {
            label: format!("by-name/{n}"),
            what: format!("vu-machine-{k}-5 (getpwnam)"),
            query: Query::Name(CString::new(format!("vu-machine-{k}-5")).unwrap_or_default()),
            run_dir: run_dir.clone(),
            expect: Some(format!("vu-machine-{k}-5")),
            samples: Vec::new(),
        });
        scenarios.push(Scenario {
            label: format!("odd-range/{n}"),
            what: "1000000005 (vu-odd-5, a 100000-ID range: listing uids/other)".into(),
            query: Query::Uid(1_000_000_005),
            run_dir,
            expect: Some("vu-odd-5".into()),
            samples: Vec::new(),
        });
    }

    // Warm up every path (module loaded, caches filled) before measuring.
    for s in &scenarios {
        std::env::set_var("NETSPAWN_RUN_DIR", &s.run_dir);
        if let Err(e) = time_lookups(s, calls.min(200)) {
            die(&e);
        }
    }
    let count = scenarios.len();
    for round in 0..rounds as usize {
        for k in 0..count {
            let s = &mut scenarios[(round + k) % count];
            std::env::set_var("NETSPAWN_RUN_DIR", &s.run_dir);
            match time_lookups(s, calls) {
                Ok(sample) => s.samples.push(sample),
                Err(e) => die(&e),
            }
        }
    }

    let mut out = format!("{{\"calls_per_sample\": {calls}, \"scenarios\": [");
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
            s.what,
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
