//! Resource control: `--property=` limits enforced on the machine's cgroups
//! (v1 hierarchies on a hybrid host like ours, unified controllers on a pure
//! v2 one), `netspawnctl set-property` live and persisted, `--slice=`,
//! `status` and `top`, and bad input refused with nothing left behind.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use netspawn_tests::*;

/// A machine that stays up until [`Held::stop`].
struct Held<'a> {
    env: &'a TestEnv,
    child: Child,
    name: String,
}

impl Held<'_> {
    fn start<'a>(env: &'a TestEnv, name: &str, flags: &[&str]) -> Held<'a> {
        let img = env.image_dir().join(name);
        if !img.exists() {
            env.busybox(name);
        }
        let _ = std::fs::remove_file(env.hold_dir().join("stop"));
        let bind = format!("--bind={}:/ctl", env.hold_dir().display());
        let mut args = vec!["-q", "-M", name, &bind];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["/bin/sh", "-c", HOLD]);
        let mut child = env.spawn(&args);
        if env.wait_registered(name, Duration::from_secs(20)).is_none() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Held {
            env,
            child,
            name: name.to_string(),
        }
    }

    /// The machine's cgroup directories, as the registry lists them.
    fn cgroups(&self) -> Vec<PathBuf> {
        let text =
            std::fs::read_to_string(self.env.run_dir().join("machines").join(&self.name)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("CGROUPS="))
            .unwrap_or("")
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    fn stop(mut self) {
        std::fs::write(self.env.hold_dir().join("stop"), "").unwrap();
        assert_eq!(
            wait_timeout(&mut self.child, Duration::from_secs(30)),
            Some(0),
            "{} did not stop cleanly",
            self.name
        );
    }
}

/// The machine's directory of a v1 hierarchy, or its unified one: where
/// `v1_file` (else `v2_file`) is.
fn control_file(held: &Held, v1_file: &str, v2_file: &str) -> PathBuf {
    let dirs = held.cgroups();
    for d in &dirs {
        if d.join(v1_file).exists() {
            return d.join(v1_file);
        }
    }
    // Found below each v1 root at the unified directory's place, too
    // (set-property may have made it after the start).
    let unified = &dirs[0];
    for root in ["memory", "cpu", "pids", "cpuset", "blkio"] {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mi.lines() {
            if line.contains(" - cgroup ") && line.ends_with(&format!(",{root}")) {
                let mp = line.split(' ').nth(4).unwrap();
                let rel = unified.components().rev().take(2).collect::<Vec<_>>();
                let p = Path::new(mp)
                    .join(rel[1].as_os_str())
                    .join(rel[0].as_os_str())
                    .join(v1_file);
                if p.exists() {
                    return p;
                }
            }
        }
    }
    unified.join(v2_file)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn memory_max_oom_kills_inside_the_machine_only() {
    let env = TestEnv::new();
    env.busybox("oom");
    // dd's 64 MiB buffer does not fit in 32 MiB: the kernel kills dd (in
    // the machine's cgroup); the shell, PID 1, sees it and goes on.
    let r = env.netspawn(&[
        "-q",
        "-M",
        "oom",
        "--property=MemoryMax=32M",
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo dd=$?",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "dd=137\n", "{}", r.stderr);
    // The payload itself killed: the launcher survives and says so.
    let r = env.netspawn(&[
        "-M",
        "oom",
        "--property=MemoryMax=32M",
        "/bin/dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    r.expect_status(137);
    assert!(
        r.stderr
            .contains("Container oom terminated by signal SIGKILL."),
        "{}",
        r.stderr
    );
    // Without the limit the same allocation is fine.
    let r = env.netspawn(&[
        "-q",
        "-M",
        "oom",
        "/bin/dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    r.expect_status(0);
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn cpu_quota_caps_a_busy_loop() {
    let env = TestEnv::new();
    env.busybox("busy");
    let bind = format!("--bind={}:/ctl", env.hold_dir().display());
    let mut child = env.spawn(&[
        "-q",
        "-M",
        "busy",
        &bind,
        "--property=CPUQuota=50%",
        "/bin/sh",
        "-c",
        "while [ ! -e /ctl/stop ]; do :; done",
    ]);
    env.wait_registered("busy", Duration::from_secs(20))
        .expect("busy registered");
    let text = std::fs::read_to_string(env.run_dir().join("machines/busy")).unwrap();
    let unified = PathBuf::from(
        text.lines()
            .find_map(|l| l.strip_prefix("CGROUPS="))
            .unwrap()
            .split(':')
            .next()
            .unwrap(),
    );
    let usage = || -> u64 {
        read(&unified.join("cpu.stat"))
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (c0, t0) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (c1, t1) = (usage(), Instant::now());
    let cpus = (c1 - c0) as f64 / (t1 - t0).as_micros() as f64;
    std::fs::write(env.hold_dir().join("stop"), "").unwrap();
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(30)), Some(0));
    // A cap holds on a loaded host; a floor cannot be asserted.
    assert!(
        cpus < 0.7,
        "the busy loop used {cpus:.2} CPUs under CPUQuota=50%"
    );
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn tasks_max_stops_a_fork_loop() {
    let env = TestEnv::new();
    env.busybox("forks");
    let script = "i=0; while [ $i -lt 20 ]; do sleep 5 & i=$((i+1)); done; echo forked=$i";
    let r = env.netspawn(&["-q", "-M", "forks", "/bin/sh", "-c", script]);
    r.expect_status(0);
    assert_eq!(r.stdout, "forked=20\n");
    let r = env.netspawn(&[
        "-q",
        "-M",
        "forks",
        "--property=TasksMax=5",
        "/bin/sh",
        "-c",
        script,
    ]);
    assert_ne!(r.status, Some(0), "{}", r.stdout);
    assert!(r.stderr.contains("can't fork"), "{}", r.stderr);
    assert!(!r.stdout.contains("forked="), "{}", r.stdout);
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn set_property_live_persisted_and_runtime() {
    let env = TestEnv::new();
    let held = Held::start(&env, "live", &["--property=MemoryMax=64M"]);
    let mem = control_file(&held, "memory.limit_in_bytes", "memory.max");
    assert_eq!(read(&mem), (64u64 << 20).to_string());
    // Live, and persisted beside the settings.
    env.ctl(&["set-property", "live", "MemoryMax=48M", "TasksMax=40"])
        .expect_status(0);
    assert_eq!(read(&mem), (48u64 << 20).to_string());
    let pids = control_file(&held, "pids.max", "pids.max");
    assert_eq!(read(&pids), "40");
    let dropins = env.settings_dir().join("live.nspawn.d");
    assert!(dropins.join("50-MemoryMax.conf").exists());
    assert!(dropins.join("50-TasksMax.conf").exists());
    // --runtime: applied, not persisted.
    env.ctl(&["set-property", "--runtime", "live", "CPUWeight=50"])
        .expect_status(0);
    let shares = control_file(&held, "cpu.shares", "cpu.weight");
    let want = if shares.ends_with("cpu.shares") {
        "512"
    } else {
        "50"
    };
    assert_eq!(read(&shares), want);
    assert!(!dropins.join("50-CPUWeight.conf").exists());
    // A bad value or unknown property changes nothing.
    env.ctl(&["set-property", "live", "MemoryMax=1G", "MemoryMax=lots"])
        .expect_error("MemoryMax");
    env.ctl(&["set-property", "live", "Bogus=1"])
        .expect_error("unknown property");
    assert_eq!(read(&mem), (48u64 << 20).to_string());
    // status shows the figures.
    let st = env.ctl(&["status", "live"]);
    st.expect_status(0);
    assert!(st.stdout.contains("Memory: "), "{}", st.stdout);
    assert!(st.stdout.contains("(limit: 48.0M)"), "{}", st.stdout);
    assert!(st.stdout.contains("Tasks: "), "{}", st.stdout);
    assert!(st.stdout.contains("CPU: "), "{}", st.stdout);
    held.stop();
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );

    // Stopped: refused.
    env.ctl(&["set-property", "live", "MemoryMax=1G"])
        .expect_error("live");
    // The next start applies the persisted ones, not the runtime one...
    let held = Held::start(&env, "live", &[]);
    let mem = control_file(&held, "memory.limit_in_bytes", "memory.max");
    assert_eq!(read(&mem), (48u64 << 20).to_string());
    assert_eq!(read(&control_file(&held, "pids.max", "pids.max")), "40");
    let shares = control_file(&held, "cpu.shares", "cpu.weight");
    if shares.exists() {
        let default = if shares.ends_with("cpu.shares") {
            "1024"
        } else {
            "100"
        };
        assert_eq!(read(&shares), default, "CPUWeight= was not to persist");
    }
    held.stop();
    // ...and the command line wins over them.
    let held = Held::start(&env, "live", &["--property=MemoryMax=40M"]);
    let mem = control_file(&held, "memory.limit_in_bytes", "memory.max");
    assert_eq!(read(&mem), (40u64 << 20).to_string());
    held.stop();
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn set_property_adds_a_controller_to_a_running_machine() {
    let env = TestEnv::new();
    let held = Held::start(&env, "plain", &[]);
    env.ctl(&["set-property", "--runtime", "plain", "MemoryMax=100M"])
        .expect_status(0);
    let mem = control_file(&held, "memory.limit_in_bytes", "memory.max");
    assert_eq!(read(&mem), (100u64 << 20).to_string());
    // The machine's processes are in that cgroup.
    let procs = read(&mem.with_file_name("cgroup.procs"));
    assert!(!procs.is_empty(), "no process in {}", mem.display());
    // A process entering the machine joins it too.
    if mem.ends_with("memory.limit_in_bytes") {
        let r = env.ctl(&["shell", "-q", "plain", "/bin/cat", "/proc/self/cgroup"]);
        r.expect_status(0);
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains(":memory:"))
            .unwrap_or_else(|| panic!("no memory line in {}", r.stdout));
        assert!(line.ends_with("/plain"), "{line}");
    }
    held.stop();
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn bad_properties_are_refused_with_nothing_left() {
    let env = TestEnv::new();
    env.busybox("bad");
    for (flag, needle) in [
        ("--property=MemoryMax=lots", "MemoryMax"),
        ("--property=CPUQuota=50", "CPUQuota"),
        ("--property=CPUWeight=0", "CPUWeight"),
        ("--property=TasksMax=-1", "TasksMax"),
        ("--property=AllowedCPUs=x", "AllowedCPUs"),
        ("--property=DeviceAllow=/dev/null", "unknown property"),
        ("--property=MemoryMax", "NAME=VALUE"),
        ("--slice=a--b.slice", "slice"),
        ("--slice=-.slice", "slice"),
        ("--slice=machine", "slice"),
    ] {
        env.netspawn(&["-q", "-M", "bad", flag, "/bin/true"])
            .expect_error(needle);
    }
    // A CPU the host does not have: the kernel refuses, nothing is left.
    env.netspawn(&[
        "-q",
        "-M",
        "bad",
        "--property=AllowedCPUs=4000",
        "/bin/true",
    ])
    .expect_error("AllowedCPUs");
    // A persisted drop-in that went bad: named with its line.
    let d = env.settings_dir().join("bad.nspawn.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("50-MemoryMax.conf"), "[Property]\nMemoryMax=lots\n").unwrap();
    env.netspawn(&["-q", "-M", "bad", "/bin/true"])
        .expect_error("50-MemoryMax.conf:2");
    std::fs::remove_dir_all(&d).unwrap();
    // IOWeight= needs a weight-based I/O scheduler: enforced where the host
    // has one, else refused naming the controller.
    // Refused before the launcher says anything (no -q here).
    let r = env.netspawn(&["-M", "bad", "--property=IOWeight=200", "/bin/true"]);
    if r.status != Some(0) {
        r.expect_error("IOWeight= cannot be enforced on this host: the");
        assert!(r.stderr.contains("io"), "{}", r.stderr);
    }
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
    assert!(env.registry_names().is_empty());
}

#[test]
fn slice_places_the_machine() {
    let env = TestEnv::new();
    // Unique per test env, and without '-' (which nests slices).
    let tag = format!(
        "nst{}",
        env.cgroup_parent
            .trim_start_matches("netspawn-test-")
            .replace('-', "x")
    );
    let slice = format!("{tag}-in.slice");
    let held = Held::start(
        &env,
        "sliced",
        &[&format!("--slice={slice}"), "--property=TasksMax=50"],
    );
    let dirs = held.cgroups();
    let want = format!("{tag}.slice/{slice}/sliced");
    assert!(
        dirs.iter().all(|d| d.ends_with(&want) && d.is_dir()),
        "{dirs:?} not in {want}"
    );
    assert!(dirs.len() >= 2, "no v1 or unified pids directory: {dirs:?}");
    held.stop();
    // The machine's directories go with it; the slices stay as systemd's
    // do, and this test removes them.
    for d in &dirs {
        assert!(!d.exists(), "{} left", d.display());
        let inner = d.parent().unwrap();
        let _ = std::fs::remove_dir(inner);
        let _ = std::fs::remove_dir(inner.parent().unwrap());
    }
}

#[test]
fn top_in_batch_mode_shows_the_machine() {
    let env = TestEnv::new();
    let held = Held::start(&env, "topped", &[]);
    let r = env.ctl(&["top", "-b", "-n", "1", "-d", "0.2"]);
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["MACHINE", "TASKS", "%CPU", "MEMORY"],
        "{}",
        r.stdout
    );
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("topped "))
        .unwrap_or_else(|| panic!("no row for the machine in\n{}", r.stdout))
        .split_whitespace()
        .collect();
    assert!(row[1].parse::<u64>().unwrap() >= 1, "{row:?}");
    assert!(row[2].parse::<f64>().is_ok(), "{row:?}");
    assert!(row[3] != "-", "{row:?}");
    held.stop();
    env.ctl(&["top", "-b", "-n", "1", "-d", "0"])
        .expect_error("--delay");
}
