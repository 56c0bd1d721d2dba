//! Booting an init (`-b`) in a busybox image: busybox init runs as PID 1,
//! netspawnctl reaches into the machine, and poweroff, reboot and SIGTERM to
//! the launcher end or restart it cleanly.

use std::time::{Duration, Instant};

use netspawn_tests::*;

fn leader_of(env: &TestEnv, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(env.run_dir().join("machines").join(name)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("LEADER="))?
        .parse()
        .ok()
}

/// Waits until the machine answers a shell command.
fn wait_shell(env: &TestEnv, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if env.ctl(&["shell", name, "/bin/true"]).status == Some(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("machine {name} never answered");
}

#[test]
fn busybox_init_boots_and_powers_off_with_status_0() {
    let env = TestEnv::new();
    let img = env.busybox("bbinit");
    let mut child = env.spawn(&["-q", "-b", "-D", img.to_str().unwrap()]);
    let leader = env
        .wait_registered("bbinit", Duration::from_secs(10))
        .expect("registered");
    let comm = std::fs::read_to_string(format!("/proc/{leader}/comm")).unwrap();
    assert_eq!(comm.trim(), "init");
    wait_shell(&env, "bbinit");
    let r = env.ctl(&[
        "shell",
        "bbinit",
        "/bin/sh",
        "-c",
        "echo $$ $(cat /proc/1/comm) $container; [ -t 0 ] || echo no-tty",
    ]);
    r.expect_status(0);
    assert!(r.stdout.contains(" init netspawn"), "{}", r.stdout);
    // Without a terminal the console is read-only: the guest's /dev/console is a pty.
    let r = env.ctl(&[
        "shell",
        "bbinit",
        "/bin/sh",
        "-c",
        "[ -c /dev/console ] && echo console-ok; cat /run/host/container-manager",
    ]);
    assert_eq!(r.stdout, "console-ok\nnetspawn\n");
    env.ctl(&["poweroff", "bbinit"]).expect_status(0);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(20)), Some(0));
    assert!(env.registry_names().is_empty());
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn reboot_restarts_the_container_in_the_same_launcher() {
    let env = TestEnv::new();
    let img = env.busybox("bbreboot");
    let mut child = env.spawn(&["-b", "-D", img.to_str().unwrap()]);
    let first = env
        .wait_registered("bbreboot", Duration::from_secs(10))
        .expect("registered");
    wait_shell(&env, "bbreboot");
    env.ctl(&["reboot", "bbreboot"]).expect_status(0);
    // A new PID 1 comes up under the same launcher.
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        match leader_of(&env, "bbreboot") {
            Some(l) if l != first => break l,
            _ if Instant::now() > deadline => panic!("no reboot"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_ne!(first, second);
    assert!(
        child.try_wait().unwrap().is_none(),
        "launcher exited on reboot"
    );
    wait_shell(&env, "bbreboot");
    env.ctl(&["poweroff", "bbreboot"]).expect_status(0);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(20)), Some(0));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Container bbreboot is being rebooted."),
        "{err}"
    );
    assert!(
        err.contains("Container bbreboot has been shut down."),
        "{err}"
    );
}

#[test]
fn sigterm_to_the_launcher_shuts_a_booted_guest_down_cleanly() {
    let env = TestEnv::new();
    let img = env.busybox("bbterm");
    let mut child = env.spawn(&["-q", "-b", "-D", img.to_str().unwrap()]);
    env.wait_registered("bbterm", Duration::from_secs(10))
        .expect("registered");
    wait_shell(&env, "bbterm");
    // `timeout` is our child; signal the launcher itself.
    let launcher: i32 = std::fs::read_to_string(env.run_dir().join("machines/bbterm"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("LAUNCHER="))
        .unwrap()
        .parse()
        .unwrap();
    unsafe { libc::kill(launcher, libc::SIGTERM) };
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)),
        Some(0),
        "clean shutdown is status 0"
    );
}

#[test]
fn a_stop_request_waits_until_pid_1_handles_its_signal() {
    // The kernel drops a signal that a PID namespace's init neither handles
    // nor blocks. A stop request that comes before the init installs its
    // handler (an init still starting) waits for it instead of being lost.
    let env = TestEnv::new();
    let img = env.busybox("bbearly");
    let script = "touch /started; while [ ! -e /go ]; do sleep 0.05; done; \
                  trap 'exit 7' USR2; while :; do sleep 0.05; done";
    let mut child = env
        .cmd(
            "netspawn",
            &[
                "-q",
                "--kill-signal=SIGUSR2",
                "-D",
                img.to_str().unwrap(),
                "/bin/sh",
                "-c",
                script,
            ],
            120,
        )
        .env("RUST_LOG", "netspawn=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn netspawn");
    // The registry entry is written once the payload runs, which is when
    // it touches /started too: wait for both.
    env.wait_registered("bbearly", Duration::from_secs(20))
        .expect("registered");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !img.join("started").exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let entry = std::fs::read_to_string(env.run_dir().join("machines/bbearly")).unwrap();
    let launcher: i32 = entry
        .lines()
        .find_map(|l| l.strip_prefix("LAUNCHER="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no LAUNCHER= in\n{entry}"));
    // The launcher's log says when it holds the request back.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waits until PID 1 takes it") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    unsafe { libc::kill(launcher, libc::SIGTERM) };
    let held = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    // Now the command installs its handler; the request reaches it.
    std::fs::write(img.join("go"), "").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    if status.is_none() {
        // wait_timeout ended `timeout`, not the launcher below it, which
        // holds the log's pipe open.
        unsafe { libc::kill(launcher, libc::SIGKILL) };
    }
    let log = reader.join().unwrap();
    assert!(held, "the request was not held back:\n{log}");
    assert_eq!(status, Some(7), "the command's handler ran:\n{log}");
    assert!(env.registry_names().is_empty());
}
