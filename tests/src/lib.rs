//! Shared harness for netspawn's integration tests.
//!
//! Every test gets a [`TestEnv`]: its own temporary directory holding the
//! registry (`NETSPAWN_RUN_DIR`), images (`NETSPAWN_IMAGE_DIR`), state and
//! settings search path, and its own cgroup parent, so tests run in parallel
//! and never touch the machine's real `/run/netspawn`, `/var/lib/machines` or
//! `/etc/systemd/nspawn`. Launches run inside `unshare --mount --net`, so each
//! container's "host network" is a private namespace made for the test. Every
//! command runs under `timeout`; dropping the env kills whatever is left in
//! its cgroups and removes its files.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Path of one of the workspace's binaries, next to the test executable's directory.
/// Shell for a container: wait (up to 60 s) until the host touches
/// `stop` in [`TestEnv::hold_dir`].
pub const HOLD: &str = "for i in $(seq 1200); do [ -e /ctl/stop ] && break; sleep 0.05; done";

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// True if a command is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Output of a finished command, with convenient accessors.
#[derive(Debug)]
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit status is `code`.
    #[track_caller]
    pub fn expect_status(&self, code: i32) -> &Run {
        assert_eq!(
            self.status,
            Some(code),
            "unexpected exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless this was a failure with exit status 1 and one line on stderr containing `needle`.
    #[track_caller]
    pub fn expect_error(&self, needle: &str) -> &Run {
        self.expect_status(1);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line, got:\n{}",
            self.stderr
        );
        assert!(
            lines[0].contains(needle),
            "error line {:?} does not mention {needle:?}",
            lines[0]
        );
        self
    }
}

/// A private world for one test.
pub struct TestEnv {
    pub dir: PathBuf,
    pub cgroup_parent: String,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("netspawn-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["run", "images", "state", "etc-nspawn", "run-nspawn"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        TestEnv {
            dir,
            cgroup_parent: format!("netspawn-test-{tag}"),
        }
    }

    /// A path inside this env's state directory (NETSPAWN_STATE_DIR).
    pub fn state_dir_file(&self, rel: &str) -> PathBuf {
        self.dir.join("state").join(rel)
    }

    /// A directory shared with a container, bound at `/ctl` with
    /// `--bind={hold_dir}:/ctl`: the container runs [`HOLD`] to stay up
    /// until the host has looked, and the host `touch`es `stop` in it. (A
    /// fixed `sleep` in the container races the host on a loaded machine.)
    pub fn hold_dir(&self) -> PathBuf {
        let d = self.dir.join("ctl");
        std::fs::create_dir_all(&d).expect("create the hold directory");
        d
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn image_dir(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// The first directory searched for NAME.nspawn (stands for /etc/systemd/nspawn).
    pub fn settings_dir(&self) -> PathBuf {
        self.dir.join("etc-nspawn")
    }

    fn apply_env(&self, c: &mut Command) {
        c.env("NETSPAWN_RUN_DIR", self.run_dir())
            .env("NETSPAWN_IMAGE_DIR", self.image_dir())
            .env("NETSPAWN_STATE_DIR", self.dir.join("state"))
            .env(
                "NETSPAWN_SETTINGS_PATH",
                format!(
                    "{}:{}",
                    self.settings_dir().display(),
                    self.dir.join("run-nspawn").display()
                ),
            )
            .env("NETSPAWN_CGROUP_PARENT", &self.cgroup_parent)
            // `netspawnctl install` puts the CNI plugin here, not in /opt/cni/bin.
            .env("NETSPAWN_CNI_BIN_DIR", self.dir.join("cni-bin"));
    }

    /// A command for one of our binaries, with this env's relocations, run
    /// under `timeout` in private mount and network namespaces.
    pub fn cmd<S: AsRef<OsStr>>(&self, binary: &str, args: &[S], timeout_secs: u32) -> Command {
        let mut c = Command::new("timeout");
        c.arg("-k")
            .arg("5")
            .arg(timeout_secs.to_string())
            .arg("unshare")
            .arg("--mount")
            .arg("--net")
            .arg("--")
            .arg(bin(binary));
        c.args(args);
        self.apply_env(&mut c);
        c.stdin(Stdio::null());
        c
    }

    /// Like [`TestEnv::cmd`] but in the test's own namespaces (for netspawnctl,
    /// which must see machines started by other commands).
    pub fn ctl_cmd<S: AsRef<OsStr>>(&self, args: &[S], timeout_secs: u32) -> Command {
        let mut c = Command::new("timeout");
        c.arg("-k")
            .arg("5")
            .arg(timeout_secs.to_string())
            .arg(bin("netspawnctl"));
        c.args(args);
        self.apply_env(&mut c);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a bash script in fresh mount and network namespaces (a private
    /// "host" for the test), with this env's relocations and `$NETSPAWN` /
    /// `$NETSPAWNCTL` naming our binaries.
    pub fn sh(&self, script: &str, timeout_secs: u32) -> Run {
        // The script runs in a session of its own; whatever it leaves
        // running (it would hold our pipes open) is killed with it.
        let wrapper = r#"setsid bash -c "$1" & pid=$!; wait $pid; rc=$?; pkill -KILL -s $pid 2>/dev/null; exit $rc"#;
        let mut c = Command::new("timeout");
        c.arg("-k")
            .arg("5")
            .arg(timeout_secs.to_string())
            .args([
                "unshare", "--mount", "--net", "--", "bash", "-c", wrapper, "sh",
            ])
            .arg(script);
        self.apply_env(&mut c);
        c.env("NETSPAWN", bin("netspawn"))
            .env("NETSPAWNCTL", bin("netspawnctl"))
            .stdin(Stdio::null());
        Run::from(c.output().expect("run script"))
    }

    /// Runs netspawn with `args` to completion (60 s limit).
    pub fn netspawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        Run::from(
            self.cmd("netspawn", args, 60)
                .output()
                .expect("run netspawn"),
        )
    }

    /// Runs netspawn with `input` on its standard input.
    pub fn netspawn_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd("netspawn", args, 60)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Starts netspawn in the background.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Child {
        self.cmd("netspawn", args, 300)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netspawn")
    }

    /// Runs netspawnctl to completion.
    pub fn ctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        Run::from(self.ctl_cmd(args, 120).output().expect("run netspawnctl"))
    }

    /// Makes a busybox image named `name` with `netspawnctl bootstrap busybox`.
    /// The NSS module for this test: `libnss_mymachines.so.2` in a
    /// directory of its own (for LD_LIBRARY_PATH) and an nsswitch.conf
    /// with `nsswitch` (to bind-mount over /etc/nsswitch.conf in the test's
    /// mount namespace). Returns (that directory, that file).
    pub fn nss_module(&self, nsswitch: &str) -> (PathBuf, PathBuf) {
        let lib = self.dir.join("nsslib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::copy(
            bin("libnss_mymachines.so"),
            lib.join("libnss_mymachines.so.2"),
        )
        .unwrap();
        let conf = self.dir.join("nsswitch.conf");
        std::fs::write(&conf, nsswitch).unwrap();
        (lib, conf)
    }

    pub fn busybox(&self, name: &str) -> PathBuf {
        self.ctl(&["bootstrap", "busybox", name]).expect_status(0);
        self.image_dir().join(name)
    }

    /// Names of the machines the registry lists.
    pub fn registry_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.run_dir().join("machines"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits until `name` is registered (and returns its leader PID).
    pub fn wait_registered(&self, name: &str, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(self.run_dir().join("machines").join(name)) {
                if let Some(l) = text.lines().find_map(|l| l.strip_prefix("LEADER=")) {
                    return l.parse().ok();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The cgroup directories this env's machines may use (unified, devices,
    /// and the v1 hierarchies resource-control properties use).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mi.lines() {
            let Some((l, r)) = line.split_once(" - ") else {
                continue;
            };
            let mp = l.split(' ').nth(4).unwrap_or("");
            let mut rs = r.split(' ');
            let fstype = rs.next().unwrap_or("");
            let opts = rs.nth(1).unwrap_or("");
            if fstype == "cgroup2"
                || (fstype == "cgroup"
                    && opts.split(',').any(|o| {
                        ["devices", "memory", "cpu", "pids", "blkio", "cpuset"].contains(&o)
                    }))
            {
                out.push(Path::new(mp).join(&self.cgroup_parent));
            }
        }
        out
    }

    /// Machine cgroups left under this env's cgroup parent.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        self.cgroup_dirs()
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
            })
            .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // netd, if a test started one, goes with the test; it is waited
        // for (5 s at most), since on its way out it saves its pools into
        // the state directory and would make it again after we removed it.
        let mut netds = Vec::new();
        for e in std::fs::read_dir(self.run_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("netd-") && n.ends_with(".pid") {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .filter(|pid| *pid > 1)
                {
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    netds.push(pid);
                }
            }
        }
        for pid in netds {
            for _ in 0..500 {
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Kill anything still running in our cgroups, then remove them.
        for d in self.cgroup_dirs() {
            kill_tree(&d);
        }
        // A network keeper finishing a zone teardown (it outlives the
        // launcher by design) may take the zone lock here a moment after we
        // remove the directory: then sweep again for a second.
        let zones = std::fs::read_dir(self.run_dir().join("locks"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("zone-"))
            })
            .unwrap_or(false);
        let _ = std::fs::remove_dir_all(&self.dir);
        if zones {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(50));
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

fn kill_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                kill_tree(&e.path());
            }
        }
    }
    for _ in 0..100 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Says loudly that a test is skipped, and why: straight to the standard
/// error stream, past the test harness's output capture.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED {test}: {why}");
}

/// Waits for a child with a deadline; kills it if it overruns.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Compiles a small static C program (for probing syscalls inside images
/// that have no libc). Returns the binary's path.
pub fn compile_static_c(env: &TestEnv, name: &str, source: &str) -> PathBuf {
    let src = env.dir.join(format!("{name}.c"));
    let out = env.dir.join(name);
    std::fs::write(&src, source).unwrap();
    let st = Command::new("cc")
        .arg("-static")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "compiling {name} failed");
    out
}
