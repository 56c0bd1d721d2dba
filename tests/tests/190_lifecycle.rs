//! Machines in the background and at boot: `netspawnctl start` runs a
//! booted machine detached (as systemd-nspawn@.service: `-b -n -U`) and
//! returns once it is registered, `logs` shows its console, `stop` powers it
//! off; `enable`/`disable` with records (no systemd) or unit links (systemd,
//! its directories moved into the test), `install` and the shipped init
//! script, `start --enabled`. Bad input is one line, exit 1, nothing left.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netspawn_tests::*;

/// The boot configuration's locations, all inside the test's directory.
fn boot_env(env: &TestEnv) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("NETSPAWN_CONFIG_DIR", env.dir.join("etc-netspawn")),
        ("NETSPAWN_SYSTEMD_DIR", env.dir.join("systemd")),
        ("NETSPAWN_SYSTEMD_RUN_DIR", env.dir.join("run-systemd")),
        ("NETSPAWN_INIT_DIR", env.dir.join("init.d")),
    ]
}

fn output(c: &mut Command) -> Run {
    let o = c.output().expect("run");
    Run {
        status: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// netspawnctl in the test's own namespaces, with the boot locations moved.
fn ctl(env: &TestEnv, args: &[&str]) -> Run {
    output(env.ctl_cmd(args, 120).envs(boot_env(env)))
}

/// A script in a private network namespace (where `start`'s veths go), with
/// the boot locations moved.
fn sh(env: &TestEnv, script: &str) -> Run {
    let mut exports = String::new();
    for (k, v) in boot_env(env) {
        exports.push_str(&format!("export {k}='{}'\n", v.display()));
    }
    env.sh(&format!("{exports}{script}"), 180)
}

/// Processes of this test's installation: every process that has its
/// state directory in its environment (launchers, keepers, log pumps,
/// netd), except zombies and ourselves.
fn processes_of(env: &TestEnv) -> Vec<(i32, String)> {
    let needle = format!("NETSPAWN_STATE_DIR={}\0", env.dir.join("state").display());
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if !String::from_utf8_lossy(&environ).contains(&needle) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
            || stat.is_empty()
        {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, cmd));
    }
    out
}

/// Processes of this installation other than netd (which stays until it
/// has been idle for a while, by design).
fn leftovers(env: &TestEnv) -> Vec<(i32, String)> {
    processes_of(env)
        .into_iter()
        .filter(|(_, c)| !c.contains("netspawn-netd"))
        .collect()
}

/// Kills what a failed test left: launchers, keepers, pumps (the env then
/// removes the cgroups and files).
struct Guard<'a>(&'a TestEnv);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for (pid, _) in processes_of(self.0) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A busybox image whose boot prints 80 numbered lines (about 700 bytes)
/// and a marker to the console.
fn image(env: &TestEnv, name: &str) -> PathBuf {
    let img = env.busybox(name);
    let rcs = img.join("etc/init.d/rcS");
    let text = std::fs::read_to_string(&rcs).unwrap();
    let text = text.replacen(
        "ip link set dev lo up 2>/dev/null\n",
        "ip link set dev lo up 2>/dev/null\n\
         i=1; while [ $i -le 80 ]; do echo \"line-$i\"; i=$((i+1)); done\n\
         echo \"lifecycle-marker $(hostname)\"\n",
        1,
    );
    assert!(text.contains("lifecycle-marker"));
    std::fs::write(&rcs, text).unwrap();
    img
}

fn field(env: &TestEnv, name: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(env.run_dir().join("machines").join(name)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

fn log_path(env: &TestEnv, name: &str) -> PathBuf {
    env.state_dir_file(&format!("logs/{name}.log"))
}

#[test]
fn start_runs_a_booted_machine_in_the_background_and_stop_ends_it() {
    let env = TestEnv::new();
    let _g = Guard(&env);
    image(&env, "life");
    let r = sh(&env, "\"$NETSPAWNCTL\" start life");
    r.expect_status(0);
    assert_eq!(r.stderr, "", "start says nothing when it works");
    // Registered by the time start returns.
    assert_eq!(env.registry_names(), ["life"]);
    let launcher: i32 = field(&env, "life", "LAUNCHER").unwrap().parse().unwrap();
    // Detached: it outlived the script's session (which the harness kills),
    // leads its own session, and reads nothing of ours.
    let stat = std::fs::read_to_string(format!("/proc/{launcher}/stat")).unwrap();
    let after: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(after[3], launcher.to_string(), "session id: {stat}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{launcher}/fd/0")).unwrap(),
        Path::new("/dev/null")
    );
    let cmdline = std::fs::read(format!("/proc/{launcher}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.ends_with(
            "netspawn --quiet --keep-unit --boot --network-veth -U --settings=override --machine=life "
        ),
        "{cmdline}"
    );
    // A user namespace and a veth, as systemd-nspawn@.service gives.
    let st = ctl(&env, &["status", "life"]);
    st.expect_status(0);
    assert!(st.stdout.contains("UID Shift: "), "{}", st.stdout);
    assert!(st.stdout.contains("Iface: ve-life"), "{}", st.stdout);
    assert_eq!(field(&env, "life", "BOOT").as_deref(), Some("1"));
    assert!(st.stdout.contains(" (init)"), "{}", st.stdout);
    // A running name is refused, and the machine is untouched.
    sh(&env, "\"$NETSPAWNCTL\" start life").expect_error("Machine 'life' is already running");
    assert_eq!(
        field(&env, "life", "LAUNCHER").unwrap(),
        launcher.to_string()
    );

    // The console is in the log.
    wait_for(
        "the boot's output in the log",
        Duration::from_secs(30),
        || {
            ctl(&env, &["logs", "life"])
                .stdout
                .contains("lifecycle-marker life")
        },
    );
    let all = ctl(&env, &["logs", "life"]);
    all.expect_status(0);
    let numbered: Vec<&str> = all
        .stdout
        .lines()
        .filter(|l| l.starts_with("line-"))
        .collect();
    let expect: Vec<String> = (1..=80).map(|i| format!("line-{i}")).collect();
    assert_eq!(numbered, expect, "{}", all.stdout);
    assert!(!all.stdout.contains('\r'), "CRLF kept as LF");
    let three = ctl(&env, &["logs", "-n", "3", "life"]);
    three.expect_status(0);
    assert_eq!(three.stdout.lines().count(), 3, "{}", three.stdout);
    assert!(
        ctl(&env, &["logs", "life"]).stdout.contains(&three.stdout),
        "the last lines are the log's"
    );

    // `logs -f` follows until the machine has stopped.
    let mut follow = env
        .ctl_cmd(&["logs", "-f", "life"], 120)
        .envs(boot_env(&env))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(follow.try_wait().unwrap().is_none(), "logs -f went on");

    ctl(&env, &["stop", "life"]).expect_status(0);
    wait_for("the machine to go", Duration::from_secs(30), || {
        env.registry_names().is_empty() && !pid_alive(launcher)
    });
    assert_eq!(
        wait_timeout(&mut follow, Duration::from_secs(20)),
        Some(0),
        "logs -f ends with the machine"
    );
    let followed = follow.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert!(followed.contains("lifecycle-marker life"), "{followed}");
    assert!(followed.contains("The system is going down"), "{followed}");
    // Nothing left: no launcher, keeper or pump; the log stays.
    wait_for("the log pump to end", Duration::from_secs(10), || {
        leftovers(&env).is_empty()
    });
    let whole = ctl(&env, &["logs", "life"]).stdout;
    let tail = ctl(&env, &["logs", "--lines=3", "life"]).stdout;
    let last3: Vec<&str> = whole.lines().rev().take(3).collect::<Vec<_>>();
    let last3: Vec<&str> = last3.into_iter().rev().collect();
    assert_eq!(tail, format!("{}\n", last3.join("\n")));
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    let env = TestEnv::new();
    let _g = Guard(&env);
    sh(&env, "\"$NETSPAWNCTL\" start nosuch").expect_error("No image 'nosuch' in ");
    sh(&env, "\"$NETSPAWNCTL\" start bad_name").expect_error("Invalid machine name 'bad_name'");
    sh(&env, "\"$NETSPAWNCTL\" start").expect_error("start needs machine names");
    sh(&env, "\"$NETSPAWNCTL\" start --enabled x").expect_error("give it no names");
    assert!(env.registry_names().is_empty());
    assert!(!env.state_dir_file("logs/nosuch.log").exists());
    assert!(!env.state_dir_file("logs/bad_name.log").exists());
    assert_eq!(leftovers(&env), vec![]);
    ctl(&env, &["logs", "nosuch"]).expect_error("No console log of machine 'nosuch'");
    ctl(&env, &["logs", "--journal", "nosuch"]).expect_error("Machine 'nosuch' has no journal");

    // A launcher that fails (its image is busy): its own message, the log
    // named, and nothing left running.
    let img = image(&env, "busy");
    let hold = env.hold_dir();
    let mut holder = env.spawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "-M",
        "holder",
        &format!("--bind={}:/ctl", hold.display()),
        "/bin/sh",
        "-c",
        HOLD,
    ]);
    env.wait_registered("holder", Duration::from_secs(20))
        .expect("holder registered");
    let r = sh(&env, "\"$NETSPAWNCTL\" start busy");
    r.expect_error("Machine 'busy' failed to start: Directory tree");
    assert!(
        r.stderr.contains(&format!(
            "(console log: {})",
            log_path(&env, "busy").display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(env.registry_names(), ["holder"]);
    // A pump is a forked netspawnctl named log-pump (its command line is
    // its starter's).
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        leftovers(&env)
            .iter()
            .all(|(pid, c)| !c.contains("log-pump") && comm(*pid).trim() != "log-pump"),
        "{:?}",
        leftovers(&env)
    );
    std::fs::write(hold.join("stop"), "").unwrap();
    assert_eq!(wait_timeout(&mut holder, Duration::from_secs(30)), Some(0));

    // A guest with a persistent journal: the host's journalctl reads it.
    let id = "0123456789abcdef0123456789abcdef";
    std::fs::write(img.join("etc/machine-id"), format!("{id}\n")).unwrap();
    std::fs::create_dir_all(img.join("var/log/journal").join(id)).unwrap();
    if have("journalctl") {
        let j = ctl(&env, &["logs", "--journal", "-n", "5", "busy"]);
        j.expect_status(0);
        assert!(j.stdout.contains("No entries"), "{j:?}");
    } else {
        skip("logs --journal", "no journalctl on this host");
    }
    // A journal directory that leads out of the image is resolved inside it.
    let outside = env.dir.join("host-journal");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::remove_dir(img.join("var/log/journal").join(id)).unwrap();
    std::os::unix::fs::symlink(&outside, img.join("var/log/journal").join(id)).unwrap();
    ctl(&env, &["logs", "--journal", "busy"]).expect_error("has no /var/log/journal/");
}

#[test]
fn enable_and_disable_without_systemd_write_records_and_install_the_init_script() {
    let env = TestEnv::new();
    env.busybox("boot1");
    let init = env.dir.join("init.d/netspawn-machines");
    ctl(&env, &["install"]).expect_status(0);
    let script = std::fs::read_to_string(&init).unwrap();
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(
        script.contains(&format!(
            "\nNETSPAWNCTL={}\n",
            bin("netspawnctl").canonicalize().unwrap().display()
        )),
        "{script}"
    );
    assert_eq!(
        std::fs::metadata(&init).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let record = env.dir.join("etc-netspawn/enabled/boot1");
    ctl(&env, &["enable", "boot1"]).expect_status(0);
    assert!(record.is_file());
    ctl(&env, &["enable", "nosuch"]).expect_error("No image 'nosuch'");
    ctl(&env, &["enable", "bad_name"]).expect_error("Invalid machine name");
    ctl(&env, &["disable", "boot1"]).expect_status(0);
    assert!(!record.exists());
    ctl(&env, &["disable", "boot1"]).expect_status(0);
    // Nothing of systemd's was touched.
    assert!(!env.dir.join("systemd").exists());
    ctl(&env, &["uninstall"]).expect_status(0);
    assert!(!init.exists());
}

#[test]
fn enable_and_disable_under_systemd_link_the_unit() {
    let env = TestEnv::new();
    env.busybox("unit1");
    // PID 1 is "systemd": its runtime directory exists.
    std::fs::create_dir_all(env.dir.join("run-systemd")).unwrap();
    let units = env.dir.join("systemd");
    ctl(&env, &["enable", "unit1"]).expect_error("netspawn@.service is not installed in");
    ctl(&env, &["install"]).expect_status(0);
    let service = std::fs::read_to_string(units.join("netspawn@.service")).unwrap();
    let netspawn = bin("netspawn").canonicalize().unwrap();
    assert!(
        service.contains(&format!(
            "\nExecStart={} --quiet --keep-unit --boot --network-veth -U --settings=override --machine=%i\n",
            netspawn.display()
        )),
        "{service}"
    );
    assert!(service.contains("WantedBy=netspawn-machines.target"));
    assert!(units.join("netspawn-machines.target").is_file());
    assert_eq!(
        std::fs::read_link(units.join("multi-user.target.wants/netspawn-machines.target")).unwrap(),
        units.join("netspawn-machines.target")
    );
    let link = units.join("netspawn-machines.target.wants/netspawn@unit1.service");
    ctl(&env, &["enable", "unit1"]).expect_status(0);
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        units.join("netspawn@.service")
    );
    assert!(!env.dir.join("etc-netspawn/enabled/unit1").exists());
    assert!(!env.dir.join("init.d").exists());
    ctl(&env, &["disable", "unit1"]).expect_status(0);
    assert!(std::fs::symlink_metadata(&link).is_err());
    ctl(&env, &["uninstall"]).expect_status(0);
    assert!(!units.join("netspawn@.service").exists());
    assert!(!units.join("netspawn-machines.target").exists());
}

#[test]
fn the_init_script_starts_the_enabled_machines_and_stops_them() {
    let env = TestEnv::new();
    let _g = Guard(&env);
    for n in ["en1", "en2", "en3", "off1"] {
        image(&env, n);
    }
    ctl(&env, &["-q", "install"]).expect_status(0);
    ctl(&env, &["-q", "enable", "en1", "en2", "en3"]).expect_status(0);
    // The machine's settings file wins over start's options (--settings=override).
    std::fs::write(
        env.settings_dir().join("en3.nspawn"),
        "[Exec]\nPrivateUsers=no\n",
    )
    .unwrap();
    let init = env.dir.join("init.d/netspawn-machines");
    // The boot hook, with a small log cap so the log rotates.
    let r = sh(
        &env,
        &format!("NETSPAWN_CONSOLE_LOG_MAX=600 sh {} start", init.display()),
    );
    r.expect_status(0);
    assert_eq!(env.registry_names(), ["en1", "en2", "en3"]);
    // Again: the running ones are skipped.
    sh(&env, "\"$NETSPAWNCTL\" start --enabled").expect_status(0);
    assert_eq!(env.registry_names(), ["en1", "en2", "en3"]);
    // Two -U machines started at once each have their own range.
    let shift = |n: &str| field(&env, n, "UID_SHIFT");
    assert!(shift("en1").is_some() && shift("en2").is_some());
    assert_ne!(shift("en1"), shift("en2"));
    let st = ctl(&env, &["status", "en3"]).stdout;
    assert!(!st.contains("UID Shift:"), "{st}");
    wait_for("en1's boot in its log", Duration::from_secs(30), || {
        ctl(&env, &["logs", "en1"])
            .stdout
            .contains("lifecycle-marker en1")
    });
    // The boot's lines alone pass the cap: the log has rotated. Both files
    // stay under the cap, and what is shown is the end of the output (what
    // came after the marker is far less than a file).
    let cur = log_path(&env, "en1");
    let prev = env.state_dir_file("logs/en1.log.1");
    assert!(prev.exists(), "rotated");
    for p in [&cur, &prev] {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= 600, "{} is {len} bytes", p.display());
    }
    let shown = ctl(&env, &["logs", "en1"]).stdout;
    assert!(shown.contains("line-80\nlifecycle-marker en1\n"), "{shown}");
    let st = sh(&env, &format!("sh {} status", init.display()));
    st.expect_status(0);
    assert!(
        st.stdout.contains("en1") && st.stdout.contains("en2"),
        "{}",
        st.stdout
    );
    // Shutdown: every machine is powered off, and the script waits for them.
    sh(&env, &format!("sh {} stop", init.display())).expect_status(0);
    assert!(env.registry_names().is_empty());
    wait_for(
        "the launchers and pumps to end",
        Duration::from_secs(20),
        || leftovers(&env).is_empty(),
    );
}
