//! netspawnctl against a simulated machine: `unshare` makes a process tree
//! with its own PID, mount, UTS and IPC namespaces (like a netspawn machine
//! without a root of its own), the test registers it in a private registry
//! directory, and the real `netspawnctl` binary is driven as a user would.
//! Needs root; skipped (loudly) otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use netspawn_common::registry::{process_start_time, Entry};

const CTL: &str = env!("CARGO_BIN_EXE_netspawnctl");
const TIMEOUT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: netspawnctl machine tests need root (namespaces, setns)");
            return;
        }
    };
}

/// A simulated running machine; dropping it kills everything it started.
struct FakeMachine {
    name: String,
    run_dir: PathBuf,
    unshare: Child,
    leader: u32,
}

impl FakeMachine {
    fn start(name: &str) -> FakeMachine {
        let script = format!("hostname {name}; export FOO=from-launch; exec sleep 300");
        FakeMachine::start_with(name, &[], &script, "sleep", false)
    }

    /// Starts `script` under `sh` in new namespaces (plus `extra` unshare
    /// flags) and registers it once PID 1's command name is `comm`.
    fn start_with(name: &str, extra: &[&str], script: &str, comm: &str, boot: bool) -> FakeMachine {
        let run_dir =
            std::env::temp_dir().join(format!("netspawnctl-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(run_dir.join("machines")).unwrap();
        let unshare = Command::new("unshare")
            .args(extra)
            .args([
                "--fork",
                "--pid",
                "--mount-proc",
                "--uts",
                "--ipc",
                "--mount",
                "--kill-child",
                "/bin/sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare");
        let mut m = FakeMachine {
            name: name.to_string(),
            run_dir,
            leader: 0,
            unshare,
        };
        m.leader = m.wait_for_leader(comm);
        m.register(boot);
        m
    }

    /// The unshare process's child is the machine's PID 1; wait until it has
    /// exec'd `want` (so hostname is set and the environment is final).
    fn wait_for_leader(&self, want: &str) -> u32 {
        let u = self.unshare.id();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let children =
                std::fs::read_to_string(format!("/proc/{u}/task/{u}/children")).unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
            {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == want {
                    return pid;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the simulated machine did not start");
    }

    fn register(&self, boot: bool) {
        let me = std::process::id();
        let entry = Entry {
            name: self.name.clone(),
            uuid: "0123456789abcdef0123456789abcdef".into(),
            leader: self.leader,
            launcher: me,
            launcher_start: process_start_time(me).unwrap(),
            root: "/".into(),
            class: "container".into(),
            service: "netspawn".into(),
            state: "running".into(),
            boot,
            ready: true,
            timestamp_usec: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64,
            cgroups: vec![],
            private_network: false,
            interfaces: vec![format!("ve-{}", self.name)],
            addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ..Entry::default()
        };
        std::fs::write(
            self.run_dir.join("machines").join(&self.name),
            entry.format(),
        )
        .unwrap();
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(CTL);
        c.args(args)
            .env("NETSPAWN_RUN_DIR", &self.run_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs netspawnctl with `args` (and `input` on stdin) to completion.
    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut c = self.ctl(args);
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("run netspawnctl");
        if let Some(data) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(data).unwrap();
        }
        wait_with_timeout(child)
    }

    /// The exit code of the unshare process (= PID 1's), waiting at most TIMEOUT.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the machine did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn leader_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.leader)).exists()
            && std::fs::read_to_string(format!("/proc/{}/stat", self.leader))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
    }
}

impl Drop for FakeMachine {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's init takes the whole namespace down.
        if self.leader > 0 {
            // SAFETY: kill(2) with a PID we started.
            unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn wait_with_timeout(mut child: Child) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "netspawnctl timed out; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_shows_the_machine_as_table_and_json() {
    require_root!();
    let m = FakeMachine::start("ctl-list");
    let o = m.run(&["list"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("MACHINE  CLASS     SERVICE  OS"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("ctl-list container netspawn"),
        "{text}"
    );
    assert!(lines[1].ends_with("10.0.0.2…"), "{text}");
    assert_eq!(lines.last(), Some(&"1 machines listed."));

    // No verb means list.
    let o = m.run(&["--no-legend"], None);
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));

    let o = m.run(&["list", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v[0]["machine"], "ctl-list");
    assert_eq!(v[0]["leader"], m.leader);
    assert_eq!(
        v[0]["addresses"],
        serde_json::json!(["10.0.0.2", "fd00::2"])
    );
    assert_eq!(v[0]["interfaces"], serde_json::json!(["ve-ctl-list"]));
}

#[test]
fn status_shows_leader_and_processes() {
    require_root!();
    let m = FakeMachine::start("ctl-status");
    let o = m.run(&["status", "ctl-status"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("ctl-status(0123456789abcdef0123456789abcdef)\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\t  Leader: {} (sleep)\n", m.leader)),
        "{text}"
    );
    assert!(
        text.contains("\t Address: 10.0.0.2\n\t          fd00::2\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("└─{} sleep 300", m.leader)),
        "{text}"
    );

    let o = m.run(&["status", "nope"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "netspawnctl: No machine 'nope' known\n");

    // -o json: the same facts, as JSON (an array, one object per machine).
    for flag in [&["-o", "json"][..], &["--output=json-pretty"][..]] {
        let mut args = vec!["status", "ctl-status", "ctl-status"];
        args.extend_from_slice(flag);
        let o = m.run(&args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(v[0]["machine"], "ctl-status");
        assert_eq!(v[0]["uuid"], "0123456789abcdef0123456789abcdef");
        assert_eq!(v[0]["leader"], m.leader);
        assert_eq!(v[0]["leader_comm"], "sleep");
        assert_eq!(
            v[0]["addresses"],
            serde_json::json!(["10.0.0.2", "fd00::2"])
        );
        let procs = v[0]["processes"].as_array().expect("processes");
        assert!(
            procs
                .iter()
                .any(|p| p["pid"] == m.leader && p["cmdline"] == "sleep 300"),
            "{v}"
        );
    }
}

#[test]
fn output_json_is_refused_where_there_is_no_json() {
    require_root!();
    let m = FakeMachine::start("ctl-nojson");
    for args in [
        &["-o", "json", "terminate", "ctl-nojson"][..],
        &["shell", "--output=json-pretty", "ctl-nojson", "/bin/true"][..],
        &["-o", "json", "install-nss", "--root=/nonexistent"][..],
    ] {
        let o = m.run(args, None);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let verb = args
            .iter()
            .find(|a| !a.starts_with('-') && **a != "json")
            .unwrap();
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("is not supported by {verb}:")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Nothing was done: the machine still runs.
    assert!(m.leader_alive());
}

#[test]
fn shell_runs_inside_with_exit_status_and_stdin() {
    require_root!();
    let m = FakeMachine::start("ctl-shell");
    // Its hostname, its PID namespace, the launch's environment.
    let o = m.run(
        &[
            "shell",
            "ctl-shell",
            "/bin/sh",
            "-c",
            "hostname; readlink /proc/self/ns/pid; echo $FOO $USER $HOME",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let leader_ns = std::fs::read_link(format!("/proc/{}/ns/pid", m.leader)).unwrap();
    assert_eq!(
        stdout(&o),
        format!(
            "ctl-shell\n{}\nfrom-launch root /root\n",
            leader_ns.display()
        )
    );

    let o = m.run(&["shell", "ctl-shell", "sh", "-c", "exit 7"], None);
    assert_eq!(o.status.code(), Some(7));
    let o = m.run(&["shell", "ctl-shell", "sh", "-c", "kill -9 $$"], None);
    assert_eq!(o.status.code(), Some(137));

    let o = m.run(&["shell", "ctl-shell", "cat"], Some(b"hi\n"));
    assert_eq!(stdout(&o), "hi\n");

    let o = m.run(&["shell", "root@ctl-shell", "id", "-u"], None);
    assert_eq!(stdout(&o), "0\n");

    let o = m.run(&["shell", "ctl-shell", "/nonexistent"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "netspawnctl: Failed to execute /nonexistent: No such file or directory\n"
    );
}

#[test]
fn shell_leaks_no_descriptors() {
    require_root!();
    let m = FakeMachine::start("ctl-fds");
    // fd 7 is open (without close-on-exec) in netspawnctl; the command must not see it.
    let c = Command::new("/bin/sh")
        .args([
            "-c",
            "exec 7</dev/null; exec \"$CTL\" shell ctl-fds /bin/sh -c 'ls /proc/$$/fd'",
        ])
        .env("CTL", CTL)
        .env("NETSPAWN_RUN_DIR", &m.run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_with_timeout(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let fds: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{}", stdout(&o));
}

#[test]
fn kill_reaches_processes_and_terminate_ends_the_machine() {
    require_root!();
    let m = FakeMachine::start("ctl-kill");
    let mut long = m
        .ctl(&["shell", "ctl-kill", "sleep", "100"])
        .spawn()
        .unwrap();
    // Wait until the sleep shows up among the machine's processes.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let o = m.run(&["status", "ctl-kill"], None);
        if stdout(&o).contains("sleep 100") {
            break;
        }
        assert!(Instant::now() < deadline, "sleep 100 never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = m.run(&["kill", "ctl-kill"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let status = long.wait().unwrap();
    // SIGTERM reached the sleep (128+15); PID 1 has no handler and stays.
    assert_eq!(status.code(), Some(143));
    assert!(m.leader_alive());

    let o = m.run(&["kill", "--signal=BOGUS", "ctl-kill"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "netspawnctl: Unknown signal 'BOGUS'\n");

    let o = m.run(&["terminate", "ctl-kill"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + TIMEOUT;
    while m.leader_alive() {
        assert!(Instant::now() < deadline, "the leader survived terminate");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `netspawnctl ARGS` on a pty made by script(1), as on a terminal.
fn run_on_terminal(m: &FakeMachine, args: &str, input: &[u8]) -> Output {
    let mut child = Command::new("script")
        .args(["-qec", &format!("{CTL} {args}"), "/dev/null"])
        .env("NETSPAWN_RUN_DIR", &m.run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Keep stdin open while the session runs: script ends the session at EOF.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let _ = stdin.write_all(&input);
        std::thread::sleep(Duration::from_secs(3));
    });
    let out = wait_with_timeout(child);
    let _ = writer.join();
    out
}

#[test]
fn shell_on_a_terminal_gets_a_pty_and_escape_ends_it() {
    require_root!();
    let m = FakeMachine::start("ctl-pty");
    let o = run_on_terminal(&m, "shell ctl-pty /bin/sh -c 'tty; exit 5'", b"");
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(5), "{text}");
    assert!(text.contains("Connected to machine ctl-pty."), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(
        text.contains("Connection to machine ctl-pty terminated."),
        "{text}"
    );

    // Ctrl-] three times ends a session whose command would run for long.
    let started = Instant::now();
    let o = run_on_terminal(&m, "shell ctl-pty sleep 60", b"\x1d\x1d\x1d");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(started.elapsed() < Duration::from_secs(15));
    let o = m.run(&["status", "ctl-pty"], None);
    assert!(!stdout(&o).contains("sleep 60"), "{}", stdout(&o));

    let o = m.run(&["login", "ctl-pty"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("login needs a terminal"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reboot_and_poweroff_signal_the_init() {
    require_root!();
    for (verb, name, code) in [
        ("reboot", "ctl-reboot", 42),
        ("poweroff", "ctl-poweroff", 44),
    ] {
        // An "init" that says which signal it got through its exit status.
        // It installs its handlers only once told to (a file appears), as a
        // starting init does later: reboot and poweroff wait for them (the
        // kernel drops a signal that a PID namespace's init neither handles
        // nor blocks). Its wait is a loop of builtins: bash catches SIGINT
        // while it waits for a child.
        let go =
            std::env::temp_dir().join(format!("netspawnctl-test-{}-{name}.go", std::process::id()));
        let _ = std::fs::remove_file(&go);
        let script = format!(
            "exec bash -c 'while [ ! -e {} ]; do :; done; \
             trap \"exit 42\" INT; trap \"exit 44\" RTMIN+4; while :; do sleep 0.05; done'",
            go.display()
        );
        let mut m = FakeMachine::start_with(name, &[], &script, "bash", true);
        let ctl = m.ctl(&[verb, name]).spawn().expect("run netspawnctl");
        std::thread::sleep(Duration::from_millis(200));
        let mut ctl = ctl;
        assert!(
            ctl.try_wait().unwrap().is_none(),
            "{verb} did not wait for the handler"
        );
        std::fs::write(&go, "").unwrap();
        let o = wait_with_timeout(ctl);
        let _ = std::fs::remove_file(&go);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stderr(&o), "");
        assert_eq!(m.wait_exit(), Some(code));
        let o = m.run(&[verb, "nope"], None);
        assert_eq!(stderr(&o), "netspawnctl: No machine 'nope' known\n");
    }
}

#[test]
fn poweroff_says_so_when_pid_1_never_takes_the_signal() {
    require_root!();
    // sleep(1) has no handler for SIGRTMIN+4: once PID 1 is no longer young
    // (5 s), poweroff sends it anyway and says that it was dropped.
    let m = FakeMachine::start_with("ctl-deaf", &[], "exec sleep 60", "sleep", true);
    let o = m.run(&["poweroff", "ctl-deaf"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "netspawnctl: PID 1 of machine 'ctl-deaf' neither handles nor blocks SIGRTMIN+4, so \
         the kernel drops it and the machine runs on; 'netspawnctl terminate ctl-deaf' stops it\n"
    );
    assert!(m.leader_alive());
}

#[test]
fn shell_enters_a_user_namespace() {
    require_root!();
    let m = FakeMachine::start_with(
        "ctl-userns",
        &["--user", "--map-root-user"],
        "exec sleep 300",
        "sleep",
        false,
    );
    let o = m.run(
        &[
            "shell",
            "ctl-userns",
            "/bin/sh",
            "-c",
            "readlink /proc/self/ns/user; id -u",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ns = std::fs::read_link(format!("/proc/{}/ns/user", m.leader)).unwrap();
    assert_eq!(stdout(&o), format!("{}\n0\n", ns.display()));
    // nobody has no mapping in a namespace that maps only root.
    let o = m.run(&["shell", "nobody@ctl-userns", "id"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not mapped"), "{}", stderr(&o));
}
