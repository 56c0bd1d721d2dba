//! The console with a terminal: netspawn runs under `script(1)` (util-linux),
//! which gives it a pty as standard input and output; the test types into
//! script's standard input and reads the terminal's output from script's
//! standard output. Covered: an interactive shell on /dev/console, exit
//! status, window size, the Ctrl-] Ctrl-] Ctrl-] escape, the outer terminal's
//! mode restored, and `--console=pipe|read-only|passive`. (Without a terminal
//! the streams pass through: 010_launch.)

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netspawn_tests::*;

/// Quotes a word for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell words that run netspawn with `args` the way the harness does
/// (timeout, private mount and network namespaces), for use inside a
/// `script -c` command line; plus the environment the harness sets.
fn netspawn_words(env: &TestEnv, args: &[&str]) -> (String, Vec<(String, String)>) {
    let proto = env.cmd("netspawn", args, 60);
    let mut words = vec![sh_quote(&proto.get_program().to_string_lossy())];
    // timeout(1) puts its command in a process group of its own, which
    // would make netspawn a background job of the terminal (stopped by
    // SIGTTOU when it sets raw mode) wherever sh forks it.
    assert_eq!(proto.get_program(), "timeout");
    words.push("--foreground".into());
    words.extend(proto.get_args().map(|a| sh_quote(&a.to_string_lossy())));
    let vars = proto
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().into_owned(),
                v?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    (words.join(" "), vars)
}

/// A command running on a fresh pty made by script(1).
struct Terminal {
    child: Child,
    input: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Runs the sh command line `shell_cmd` on a pty, with `vars` set.
    fn start(shell_cmd: &str, vars: &[(String, String)]) -> Terminal {
        assert!(
            have("script"),
            "script(1) from util-linux is needed (apt-get install util-linux)"
        );
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "60", "script", "-qefc", shell_cmd, "/dev/null"]);
        for (k, v) in vars {
            c.env(k, v);
        }
        c.env("TERM", "xterm");
        // script(1) runs the command with $SHELL, which differs between a
        // login session and CI; the commands here are written for bash.
        c.env("SHELL", "/bin/bash");
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn script");
        let input = child.stdin.take();
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            input,
            output,
        }
    }

    /// Everything the terminal showed so far, without carriage returns (how
    /// many a line gets depends on how many ptys with ONLCR it went through).
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
    }

    /// Waits until the terminal shows `needle`; panics with the screen after `secs`.
    #[track_caller]
    fn expect(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "terminal never showed {needle:?}; it shows:\n{:?}",
            self.text()
        );
    }

    /// Types bytes.
    fn send(&mut self, bytes: &[u8]) {
        let i = self.input.as_mut().expect("input open");
        i.write_all(bytes).unwrap();
        i.flush().unwrap();
    }

    /// Waits for script to end (its exit status is the command's, with -e);
    /// kills it after `secs`.
    fn finish(mut self, secs: u64) -> (Option<i32>, String) {
        let status = wait_timeout(&mut self.child, Duration::from_secs(secs));
        drop(self.input.take());
        // Let the reader drain what is left.
        std::thread::sleep(Duration::from_millis(50));
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let text = self.text();
        (status, format!("{text}{err}"))
    }
}

/// Starts netspawn with `args` on a terminal.
fn on_terminal(env: &TestEnv, args: &[&str]) -> Terminal {
    let (cmd, vars) = netspawn_words(env, args);
    Terminal::start(&cmd, &vars)
}

fn check_clean(env: &TestEnv) {
    assert!(
        env.registry_names().is_empty(),
        "registry: {:?}",
        env.registry_names()
    );
    assert!(
        env.leftover_cgroups().is_empty(),
        "cgroups: {:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn interactive_shell_on_the_console() {
    let env = TestEnv::new();
    let img = env.busybox("tty");
    let mut t = on_terminal(&env, &["-q", "-D", img.to_str().unwrap(), "/bin/sh"]);
    t.expect("# ", 20);
    // The result lines appear only if the shell ran the command (the echo of
    // the typed line shows the expressions, not their values).
    t.send(b"tty; [ -t 0 ] && [ -t 1 ] && echo IS-A-TTY; echo $((6*7)); echo term=$TERM\n");
    t.expect("term=xterm", 20);
    t.send(b"exit 7\n");
    let (status, out) = t.finish(20);
    assert_eq!(status, Some(7), "{out:?}");
    for want in [
        "\n/dev/console\n",
        "\nIS-A-TTY\n",
        "\n42\n",
        "\nterm=xterm\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out:?}");
    }
    check_clean(&env);
}

#[test]
fn window_size_and_job_control_terminal() {
    let env = TestEnv::new();
    let img = env.busybox("winsz");
    // The outer terminal gets a size; the container's console must copy it
    // before the payload starts (also checked ten times in a row below).
    // PID 1 leads its own session with the console as controlling terminal
    // (fields 6 and 7 of /proc/1/stat: session, tty_nr).
    let (ns, vars) = netspawn_words(
        &env,
        &["-q", "-D", img.to_str().unwrap(), "/bin/sh", "-c", "echo size=$(stty size); echo session=$(cut -d' ' -f6 /proc/1/stat) ctty=$(cut -d' ' -f7 /proc/1/stat); exit 0"],
    );
    let t = Terminal::start(&format!("stty rows 33 cols 111; {ns}"), &vars);
    let (status, out) = t.finish(30);
    assert_eq!(status, Some(0), "{out:?}");
    assert!(out.contains("size=33 111\n"), "{out:?}");
    assert!(out.contains("session=1 ctty="), "{out:?}");
    assert!(
        !out.contains("ctty=0\n"),
        "no controlling terminal: {out:?}"
    );
}

#[test]
fn three_ctrl_close_brackets_end_the_session() {
    let env = TestEnv::new();
    let img = env.busybox("esc");
    let (ns, vars) = netspawn_words(
        &env,
        &[
            "-D",
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo READY; sleep 1000",
        ],
    );
    let modes = env.dir.join("modes");
    std::fs::create_dir_all(&modes).unwrap();
    let m = modes.display();
    // The outer shell records the terminal's mode before and after.
    let script = format!("stty -g > {m}/before; {ns}; echo status=$?; stty -g > {m}/after");
    let mut t = Terminal::start(&script, &vars);
    t.expect("READY", 20);
    assert!(
        t.text().contains("Press Ctrl-] three times within 1s"),
        "{:?}",
        t.text()
    );
    let sent = Instant::now();
    t.send(b"\x1d\x1d\x1d");
    t.expect("status=", 5);
    let took = sent.elapsed();
    let (status, out) = t.finish(10);
    assert_eq!(status, Some(0), "{out:?}");
    assert!(
        took < Duration::from_secs(3),
        "netspawn took {took:?} to end"
    );
    assert!(out.contains("terminated by user"), "{out:?}");
    // The payload was killed: not a success.
    assert!(!out.contains("status=0\n"), "{out:?}");
    let before = std::fs::read_to_string(modes.join("before")).unwrap();
    let after = std::fs::read_to_string(modes.join("after")).unwrap();
    assert!(!before.trim().is_empty());
    assert_eq!(before, after, "terminal mode not restored");
    check_clean(&env);
}

#[test]
fn slow_or_interrupted_escapes_are_ordinary_input() {
    let env = TestEnv::new();
    let img = env.busybox("noesc");
    // The payload reads one line and shows its bytes in hex.
    let mut t = on_terminal(
        &env,
        &[
            "-q",
            "-D",
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo READY; head -n 1 | od -An -tx1 | tr -d ' \\n'; echo; echo END",
        ],
    );
    t.expect("READY", 20);
    t.send(b"\x1d\x1d");
    std::thread::sleep(Duration::from_millis(1300));
    t.send(b"\x1da\x1d\x1d\n");
    t.expect("END", 20);
    let (status, out) = t.finish(20);
    assert_eq!(status, Some(0), "{out:?}");
    assert!(out.contains("\n1d1d1d611d1d0a\n"), "{out:?}");
    assert!(!out.contains("terminated by user"), "{out:?}");
}

#[test]
fn console_pipe_passes_the_terminal_itself() {
    let env = TestEnv::new();
    let img = env.busybox("cpipe");
    // No pty of our own: the payload gets our terminal as its standard
    // streams (so -t is true), but there is no /dev/console and the terminal
    // has no name inside (its devpts is not the container's).
    let mut t = on_terminal(
        &env,
        &["-q", "--console=pipe", "-D", img.to_str().unwrap(), "/bin/sh", "-c", "[ -t 0 ] && echo IS-A-TTY; [ -e /dev/console ] || echo NO-CONSOLE; tty; read x; echo got=$x; exit 5"],
    );
    t.expect("not a tty", 20);
    t.send(b"hello\n");
    let (status, out) = t.finish(20);
    assert_eq!(status, Some(5), "{out:?}");
    for want in ["IS-A-TTY\n", "NO-CONSOLE\n", "got=hello\n"] {
        assert!(out.contains(want), "missing {want:?} in {out:?}");
    }
    assert!(!out.contains("Press Ctrl-]"), "{out:?}");
}

#[test]
fn console_read_only_forwards_output_but_not_input() {
    let env = TestEnv::new();
    let img = env.busybox("cro");
    let (ns, vars) = netspawn_words(
        &env,
        &[
            "-q",
            "--console=read-only",
            "-D",
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "tty; echo READY; if read -t 3 x; then echo got=$x; else echo NO-INPUT; fi; exit 3",
        ],
    );
    // What was typed is still unread on the outer terminal when netspawn ends.
    let mut t = Terminal::start(
        &format!("{ns}; echo status=$?; read -t 5 y; echo leftover=$y"),
        &vars,
    );
    t.expect("READY", 20);
    t.send(b"typed\n");
    let (status, out) = t.finish(30);
    assert_eq!(status, Some(0), "{out:?}");
    for want in [
        "/dev/console\n",
        "NO-INPUT\n",
        "status=3\n",
        "leftover=typed\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out:?}");
    }
    assert!(!out.contains("got="), "{out:?}");
}

#[test]
fn console_passive_shows_nothing() {
    let env = TestEnv::new();
    let img = env.busybox("cpas");
    // The payload does write to its console (it records that it could).
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let bind = format!("--bind={}:/mnt/out", shared.display());
    let (ns, vars) = netspawn_words(
        &env,
        &[
            "-q",
            "--console=passive",
            &bind,
            "-D",
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "tty > /mnt/out/tty; echo INVISIBLE && echo wrote > /mnt/out/flag; exit 4",
        ],
    );
    let t = Terminal::start(&format!("{ns}; echo status=$?"), &vars);
    let (status, out) = t.finish(30);
    assert_eq!(status, Some(0), "{out:?}");
    assert!(out.contains("status=4\n"), "{out:?}");
    assert!(!out.contains("INVISIBLE"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(shared.join("tty")).unwrap(),
        "/dev/console\n"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("flag")).unwrap(),
        "wrote\n"
    );
}

#[test]
fn interactive_console_needs_a_terminal() {
    let env = TestEnv::new();
    let img = env.busybox("notty");
    env.netspawn(&[
        "-q",
        "--console=interactive",
        "-D",
        img.to_str().unwrap(),
        "/bin/true",
    ])
    .expect_error("terminal");
    check_clean(&env);
}

#[test]
fn window_size_changes_follow_the_terminal() {
    let env = TestEnv::new();
    let img = env.busybox("winch");
    let (ns, vars) = netspawn_words(
        &env,
        &[
            "-q",
            "-D",
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            // The launcher passes the new size on when its SIGWINCH arrives,
            // which a loaded machine may delay: wait for it (the old size
            // is printed if it never comes).
            "echo READY; read x; for i in $(seq 200); do [ \"$(stty size)\" = '44 55' ] && break; sleep 0.05; done; echo size=$(stty size)",
        ],
    );
    // The outer shell has no job control, so the background resize and
    // netspawn share the terminal's foreground process group: resizing
    // sends netspawn SIGWINCH.
    let mut t = Terminal::start(
        &format!(
            "stty rows 20 cols 70; (sleep 1; stty rows 44 cols 55 </dev/tty; echo RESIZED) & {ns}"
        ),
        &vars,
    );
    t.expect("READY", 20);
    t.expect("RESIZED", 20);
    t.send(b"go\n");
    let (status, out) = t.finish(20);
    assert_eq!(status, Some(0), "{out:?}");
    assert!(out.contains("size=44 55\n"), "{out:?}");
}

#[test]
fn window_size_is_set_before_the_payload_starts() {
    let env = TestEnv::new();
    let img = env.busybox("winsz0");
    let (ns, vars) = netspawn_words(
        &env,
        &["-q", "-D", img.to_str().unwrap(), "/bin/stty", "size"],
    );
    let t = Terminal::start(
        &format!("stty rows 33 cols 111; for i in 1 2 3 4 5 6 7 8 9 10; do {ns}; done"),
        &vars,
    );
    let (status, out) = t.finish(60);
    assert_eq!(status, Some(0), "{out:?}");
    let sizes: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(sizes, vec!["33 111"; 10], "{out:?}");
}

#[test]
fn interactive_shell_as_pid2() {
    let env = TestEnv::new();
    let img = env.busybox("ttya");
    // With -a the stub init is PID 1 and the shell, PID 2, gets the console.
    let mut t = on_terminal(&env, &["-q", "-a", "-D", img.to_str().unwrap(), "/bin/sh"]);
    t.expect("# ", 20);
    t.send(b"tty; echo pid=$$; [ -t 0 ] && echo IS-A-TTY\n");
    t.expect("\nIS-A-TTY\n", 20);
    t.send(b"exit 3\n");
    let (status, out) = t.finish(20);
    assert_eq!(status, Some(3), "{out:?}");
    for want in ["\n/dev/console\n", "\npid=2\n", "\nIS-A-TTY\n"] {
        assert!(out.contains(want), "missing {want:?} in {out:?}");
    }
    check_clean(&env);
}
