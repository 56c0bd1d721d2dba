//! Teardown leaves nothing behind: after a normal exit, a crashed payload
//! or `kill -9` of the launcher, no `ve-`/`vb-` link remains and an unused
//! zone bridge is gone; many start/kill cycles leave `ip link` as it was; a
//! launch that fails half-way removes what it made.

use netspawn_tests::*;

/// Shell helper: wait (up to 30 s: veth deletion is slow on a loaded machine) until `ip link` lists only what it listed
/// at the start, then print both lists.
const SETTLE: &str = r#"
settle() {
  for t in $(seq 1500); do
    now=$(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr -d ' ' | sort | tr "\n" " ")
    [ "$now" = "$before" ] && break
    sleep 0.02
  done
  echo "before=$before"
  echo "now=$now"
}
before=$(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr -d ' ' | sort | tr "\n" " ")
"#;

fn assert_settled(r: &Run) {
    let get = |k: &str| {
        r.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(k))
            .next_back()
            .map(str::to_string)
    };
    assert_eq!(
        get("before="),
        get("now="),
        "links left behind\n{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(get("before=").is_some(), "{}\n{}", r.stdout, r.stderr);
}

/// The resolv.conf files made for host0 that are still in the run directory.
fn resolv_files(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.run_dir().join("resolv"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The lock files in the run directory whose names start with one of
/// `prefixes` (machine names, images, zones: their last holder removes them).
fn lock_files(env: &TestEnv, prefixes: &[&str]) -> Vec<String> {
    std::fs::read_dir(env.run_dir().join("locks"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls (30 s) until no lock file with one of `prefixes` is left.
fn assert_no_lock_files(env: &TestEnv, prefixes: &[&str]) {
    for _ in 0..1500 {
        if lock_files(env, prefixes).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        lock_files(env, prefixes).is_empty(),
        "{:?}",
        lock_files(env, prefixes)
    );
}

#[test]
fn finished_machines_leave_no_lock_files() {
    let env = TestEnv::new();
    let img = env.busybox("locks");
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -D {img} /bin/true; echo rc=$?
               $NETSPAWN -q -M plain2 --read-only -D {img} /bin/true; echo rc=$?
               $NETSPAWN -q -n -M veth1 -D {img} /bin/true; echo rc=$?
               $NETSPAWN -q --network-zone=lz -M zoned -D {img} /bin/true; echo rc=$?
               $NETSPAWN -q -x -D {img} /bin/true; echo rc=$?"#,
            img = img.display()
        ),
        180,
    );
    assert_eq!(
        r.stdout.matches("rc=0").count(),
        5,
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_no_lock_files(&env, &["machine-", "inode-", "zone-"]);
}

/// The machines are killed once registered, i.e. running (a kill while the
/// launcher is still making its links has a test of its own below).
#[test]
fn normal_exit_crash_and_kill_9_leave_no_links() {
    let env = TestEnv::new();
    let img = env.busybox("tear");
    let r = env.sh(
        &format!(
            r#"{SETTLE}
               $NETSPAWN -q -n -D {img} /bin/true; settle
               $NETSPAWN -q -a --network-zone=tz -D {img} /bin/sh -c 'kill -SEGV $$'; echo crash-rc=$?; settle
               $NETSPAWN -q --network-zone=tz -D {img} /bin/sleep 60 &
               for t in $(seq 1500); do grep -q '^INTERFACES=vb-tear' $NETSPAWN_RUN_DIR/machines/tear 2>/dev/null && break; sleep 0.02; done
               kill -9 $!; wait; settle"#,
            img = img.display()
        ),
        180,
    );
    assert_settled(&r);
    let runs: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("now=")).collect();
    assert_eq!(runs.len(), 3, "{}", r.stdout);
    assert!(runs.iter().all(|l| *l == runs[0]), "{}", r.stdout);
    assert!(r.stdout.contains("crash-rc=139"), "{}", r.stdout);
    // The keeper also cleans up after the killed launcher: entry, cgroups and
    // host0's resolv.conf (it does so right after the links, so give it a
    // moment).
    let resolv_files = || resolv_files(&env);
    for _ in 0..250 {
        if env.registry_names().is_empty()
            && env.leftover_cgroups().is_empty()
            && resolv_files().is_empty()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(resolv_files().is_empty(), "{:?}", resolv_files());
    assert!(
        env.registry_names().is_empty(),
        "{:?}",
        env.registry_names()
    );
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
    // The keeper lets go of the name last and removes its lock file, also
    // after kill -9 (the killed launcher's image lock file stays until the
    // image is next locked).
    assert_no_lock_files(&env, &["machine-", "zone-"]);
}

#[test]
fn two_hundred_start_kill_cycles_leave_ip_link_as_it_was() {
    let env = TestEnv::new();
    let img = env.busybox("cycle");
    let r = env.sh(
        &format!(
            r#"{SETTLE}
               for i in $(seq 200); do
                 if [ $((i % 2)) = 0 ]; then net=-n; else net=--network-zone=cz; fi
                 $NETSPAWN -q --read-only $net -M c$i -D {img} /bin/sleep 60 &
                 pid=$!
                 for t in $(seq 3000); do [ -e $NETSPAWN_RUN_DIR/machines/c$i ] && break; sleep 0.01; done
                 kill -9 $pid
               done
               wait; settle"#,
            img = img.display()
        ),
        600,
    );
    assert_settled(&r);
    // Each killed machine had its host0 configured (its entry is written
    // after that): the keepers removed those resolv.conf files too.
    for _ in 0..250 {
        if resolv_files(&env).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(resolv_files(&env).is_empty(), "{:?}", resolv_files(&env));
}

/// A launcher killed while it is making a new zone's bridge and links
/// leaves no bridge or link behind: its keeper is told the whole plan
/// before the first link is made. The script kills the launcher the moment
/// the bridge appears (a busy loop on sysfs without forks, so the kill
/// lands within microseconds), then waits for the bridge to go.
#[test]
fn kill_9_right_after_a_new_zone_bridge_appears_leaves_no_bridge() {
    let env = TestEnv::new();
    let img = env.busybox("anypoint");
    let r = env.sh(
        &format!(
            r#"{SETTLE}
               sys=$(mktemp -d); mount -t sysfs sysfs $sys
               for i in $(seq 30); do
                 $NETSPAWN -q --network-zone=kz -M k$i -D {img} /bin/sleep 60 &
                 pid=$!
                 n=0; while [ ! -e $sys/class/net/vz-kz ] && [ $n -lt 3000000 ]; do n=$((n+1)); done
                 kill -9 $pid; wait $pid 2>/dev/null
                 for t in $(seq 1500); do [ -e $sys/class/net/vz-kz ] || break; sleep 0.02; done
                 [ -e $sys/class/net/vz-kz ] && {{ echo leaked-at=$i; break; }}
               done
               umount $sys; rmdir $sys
               settle"#,
            img = img.display()
        ),
        600,
    );
    assert!(
        !r.stdout.contains("leaked-at="),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_settled(&r);
    for _ in 0..1500 {
        if env.registry_names().is_empty() && env.leftover_cgroups().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        env.registry_names().is_empty(),
        "{:?}",
        env.registry_names()
    );
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn a_launch_that_fails_half_way_removes_what_it_made() {
    let env = TestEnv::new();
    let img = env.busybox("half");
    // The second extra link's host name is taken, so setup fails after the
    // main veth and the first extra pair were made.
    let r = env.sh(
        &format!(
            r#"ip link add taken0 type veth peer name taken1
               {SETTLE}
               $NETSPAWN -q -n --network-veth-extra=xa --network-veth-extra=taken0:xb -D {img} /bin/true; echo rc=$?
               settle"#,
            img = img.display()
        ),
        60,
    );
    assert!(r.stdout.contains("rc=1\n"), "{}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("taken0"), "{}", r.stderr);
    assert_settled(&r);
    assert!(env.registry_names().is_empty());
    assert!(env.leftover_cgroups().is_empty());
}

/// Takes the registry's lock of a machine name, as a running launcher holds it.
fn hold_name(env: &TestEnv, name: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let locks = env.run_dir().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(locks.join(format!("machine-{name}.lock")))
        .unwrap();
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

#[test]
fn a_launch_sweeps_stale_machine_cgroups_but_no_live_ones() {
    let env = TestEnv::new();
    let img = env.busybox("sweeper");
    let dirs = env.cgroup_dirs();
    let unified = dirs
        .iter()
        .find(|d| d.parent().unwrap().join("cgroup.controllers").exists())
        .expect("a cgroup2 hierarchy")
        .clone();
    // Left by machines whose launchers are gone: an empty one (in every
    // hierarchy we use), one with a process still in it (killed by the
    // sweep: its machine is gone), and an unregistered machine's NAME.PID of
    // a PID that has exited.
    for d in &dirs {
        std::fs::create_dir_all(d.join("stale-empty")).unwrap();
    }
    std::fs::create_dir_all(unified.join("stale-busy")).unwrap();
    let mut orphan = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    std::fs::write(
        unified.join("stale-busy/cgroup.procs"),
        orphan.id().to_string(),
    )
    .unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::create_dir_all(unified.join(format!("gone.{gone_pid}"))).unwrap();
    // Never touched: a name that is held (a running machine), an
    // unregistered machine whose launcher runs (us, here), and something
    // that is no machine's name.
    let _held = hold_name(&env, "keep");
    std::fs::create_dir_all(unified.join("keep")).unwrap();
    let alive = format!("alive.{}", std::process::id());
    std::fs::create_dir_all(unified.join(&alive)).unwrap();
    std::fs::create_dir_all(unified.join("-not-a-machine")).unwrap();

    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/true"])
        .expect_status(0);

    let mut left: Vec<String> = env
        .leftover_cgroups()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = vec!["-not-a-machine".to_string(), alive.clone(), "keep".into()];
    want.sort();
    assert_eq!(left, want);
    // The process in a stale cgroup was killed by the sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(st) = orphan.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = orphan.kill();
            let _ = orphan.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "the orphan in a stale cgroup is killed"
    );
    for d in ["keep", alive.as_str(), "-not-a-machine"] {
        let _ = std::fs::remove_dir(unified.join(d));
    }
}
