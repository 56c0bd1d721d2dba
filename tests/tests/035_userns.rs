//! User namespaces (`-U`, `--private-users=`, `--private-users-ownership=`):
//! root inside is a range of host IDs, files the container makes belong to
//! that range (chown) or to 0 on disk (idmapped mounts), ranges are picked
//! free and never shared, an overlapping range is refused, links still work
//! from the host side, and a Debian guest boots.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netspawn_tests::*;

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

/// The (inside, outside, count) of a `/proc/self/uid_map` text.
fn uid_map(out: &str) -> (u32, u32, u32) {
    let v: Vec<u32> = out
        .split_whitespace()
        .map(|w| w.parse().expect("uid_map number"))
        .collect();
    assert_eq!(v.len(), 3, "one uid_map line: {out:?}");
    (v[0], v[1], v[2])
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// `KEY=` of a registry entry.
fn entry_field(env: &TestEnv, name: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(env.run_dir().join("machines").join(name))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn each_ownership_mode_gives_root_inside_and_files_their_owner() {
    let env = TestEnv::new();
    // (flags, the new file's owner on the host: None = the range's base).
    let cases: [(&[&str], Option<u32>); 4] = [
        (&["-U"], Some(0)),
        (&["-U", "--private-users-ownership=map"], Some(0)),
        (
            &["--private-users=pick", "--private-users-ownership=chown"],
            None,
        ),
        (&["-U", "--private-users-ownership=off"], Some(65534)),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let img = env.busybox(&format!("own{i}"));
        let mut args: Vec<&str> = vec!["-q", "-D", img.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "/bin/sh",
            "-c",
            "id -u; id -g; cat /proc/self/uid_map; touch /made 2>/dev/null && echo made || echo denied; stat -c %u /etc",
        ]);
        let r = env.netspawn(&args);
        r.expect_status(0);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(&lines[..2], ["0", "0"], "{flags:?}: {}", r.stdout);
        let (inside, shift, count) = uid_map(lines[2]);
        assert_eq!((inside, count), (0, 65536), "{flags:?}");
        assert!(shift >= 524288 && shift % 65536 == 0, "{flags:?}: {shift}");
        let made = img.join("made");
        match want {
            // Off: the image is still 0's, which the container sees as
            // nobody: its root cannot write there.
            Some(65534) => {
                assert!(!made.exists(), "{flags:?}");
                assert_eq!(&lines[3..], ["denied", "65534"], "{flags:?}");
            }
            Some(w) => {
                assert_eq!(owner(&made), (*w, *w), "{flags:?}: stored as 0 on disk");
                assert_eq!(owner(&img), (0, 0), "{flags:?}: the image stays 0's");
                assert_eq!(&lines[3..], ["made", "0"], "{flags:?}");
            }
            None => {
                assert_eq!(owner(&made), (shift, shift), "{flags:?}");
                assert_eq!(
                    owner(&img),
                    (shift, shift),
                    "{flags:?}: the root records the range"
                );
                assert_eq!(owner(&img.join("bin/busybox")), (shift, shift), "{flags:?}");
                assert_eq!(&lines[3..], ["made", "0"], "{flags:?}");
            }
        }
        check_clean(&env);
    }
}

#[test]
fn an_image_below_a_directory_only_the_hosts_root_may_search_works() {
    // /var/tmp/x with mode 0700: the host's root may walk it, the
    // container's root (an unmapped ID there) may not, and it need not.
    let env = TestEnv::new();
    let img = env.busybox("hidden");
    let private = env.dir.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let moved = private.join("hidden");
    std::fs::rename(&img, &moved).unwrap();
    for mode in ["map", "auto", "chown"] {
        let own = format!("--private-users-ownership={mode}");
        let r = env.netspawn(&[
            "-q",
            "--private-users=pick",
            &own,
            "-D",
            moved.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "id -u; touch /made && echo made",
        ]);
        r.expect_status(0);
        assert_eq!(r.stdout, "0\nmade\n", "{mode}: {}", r.stderr);
        check_clean(&env);
    }
}

#[test]
fn a_chowned_image_keeps_its_range_and_fixed_ranges_apply() {
    let env = TestEnv::new();
    let img = env.busybox("fixed");
    let d = img.to_str().unwrap();
    let map = |flags: &[&str]| {
        let mut a = vec!["-q", "-D", d];
        a.extend_from_slice(flags);
        a.extend_from_slice(&["/bin/cat", "/proc/self/uid_map"]);
        let r = env.netspawn(&a);
        r.expect_status(0);
        uid_map(&r.stdout)
    };
    assert_eq!(map(&["--private-users=identity"]), (0, 0, 65536));
    assert_eq!(
        map(&["--private-users=1354956800:1000"]),
        (0, 1354956800, 1000)
    );
    assert_eq!(map(&["--private-users=1354956800"]), (0, 1354956800, 65536));
    // BASE:N with chown (the seed's example), then -U picks the root's range.
    assert_eq!(
        map(&[
            "--private-users=1354956800:65536",
            "--private-users-ownership=chown"
        ]),
        (0, 1354956800, 65536)
    );
    assert_eq!(owner(&img), (1354956800, 1354956800));
    assert_eq!(map(&["-U"]), (0, 1354956800, 65536));
    // yes: the root's owner range.
    assert_eq!(map(&["--private-users=yes"]), (0, 1354956800, 65536));
    // A base chown cannot use: one line, nothing left.
    env.netspawn(&[
        "-q",
        "-D",
        d,
        "--private-users=100000:65536",
        "--private-users-ownership=chown",
        "/bin/true",
    ])
    .expect_error("multiple of 65536");
    check_clean(&env);
}

#[test]
fn concurrent_launches_get_different_ranges_and_an_overlap_is_refused() {
    let env = TestEnv::new();
    let a = env.busybox("ua");
    let b = env.busybox("ub");
    let c = env.busybox("uc");
    let ctl = env.hold_dir();
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -U --bind={ctl}:/ctl -D {a} /bin/sh -c '{HOLD}' &
               $NETSPAWN -q -U --bind={ctl}:/ctl -D {b} /bin/sh -c '{HOLD}' &
               for t in $(seq 600); do grep -qs ^UID_SHIFT= $NETSPAWN_RUN_DIR/machines/ua && grep -qs ^UID_SHIFT= $NETSPAWN_RUN_DIR/machines/ub && break; sleep 0.05; done
               echo A:$(grep ^UID_SHIFT= $NETSPAWN_RUN_DIR/machines/ua)
               echo B:$(grep ^UID_SHIFT= $NETSPAWN_RUN_DIR/machines/ub)
               shift=$(grep ^UID_SHIFT= $NETSPAWN_RUN_DIR/machines/ua | cut -d= -f2)
               $NETSPAWN -q --private-users=$((shift + 100)):10 -D {c} /bin/true; echo overlap-rc=$?
               ls $NETSPAWN_RUN_DIR/machines
               $NETSPAWNCTL status ua | grep -i 'uid'
               touch {ctl}/stop
               wait"#,
            ctl = ctl.display(),
            a = a.display(),
            b = b.display(),
            c = c.display(),
        ),
        120,
    );
    let out = &r.stdout;
    let get = |p: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(p))
            .and_then(|l| l.strip_prefix("UID_SHIFT="))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{p} no shift: {out}\n{}", r.stderr))
    };
    let (sa, sb) = (get("A:"), get("B:"));
    assert_ne!(sa, sb, "two machines share a range");
    assert!(sa.abs_diff(sb) >= 65536, "{sa} {sb}");
    assert!(
        out.contains(&format!("UID Shift: {sa} (65536)")),
        "status shows the range: {out}"
    );
    assert!(out.contains("overlap-rc=1"), "{out}");
    assert!(
        r.stderr.contains("overlaps the range of running machine"),
        "{}",
        r.stderr
    );
    // Nothing of the refused one: no entry, and its image was never chowned.
    assert!(!out.lines().any(|l| l == "uc"), "{out}");
    assert_eq!(owner(&c), (0, 0));
    check_clean(&env);
}

#[test]
fn veth_zone_and_bridge_links_work_with_a_user_namespace() {
    let env = TestEnv::new();
    let one = env.busybox("nv");
    let two = env.busybox("nz");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -U -n -D {one} /bin/sh -c 'echo V:$(ip -4 -o addr show host0 | grep -o "inet [0-9./]*"); cat /proc/self/uid_map'
               $NETSPAWN -q -U --network-zone=uz -D {two} /bin/sh -c 'echo Z:$(ip -4 -o addr show host0 | grep -o "inet [0-9./]*"); ls -n /etc/resolv.conf'
               ip link add br0 type bridge && ip link set br0 up
               $NETSPAWN -q -U --network-bridge=br0 --network-config=none -M nb --bind={ctl}:/ctl -D {one} /bin/sh -c 'echo B:$(ip -o link show host0 | grep -c ",UP"); {HOLD}' &
               for t in $(seq 200); do ip link show vb-nb >/dev/null 2>&1 && break; sleep 0.05; done
               echo BR:$(ip -o link show master br0 | grep -c vb-nb)
               touch {ctl}/stop
               wait"#,
            ctl = env.hold_dir().display(),
            one = one.display(),
            two = two.display()
        ),
        120,
    );
    let out = &r.stdout;
    assert!(out.contains("V:inet "), "{out}\n{}", r.stderr);
    assert!(out.contains("Z:inet "), "{out}\n{}", r.stderr);
    assert!(
        out.contains("B:1"),
        "host0 on a bridge: {out}\n{}",
        r.stderr
    );
    assert!(out.contains("BR:1"), "vb-nb in br0: {out}");
    check_clean(&env);
}

#[test]
fn binds_are_idmapped_and_read_only_mounts_stay_read_only() {
    let env = TestEnv::new();
    let img = env.busybox("ubind");
    let rw = env.dir.join("rw");
    let ro = env.dir.join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let script = "stat -c %u /rw /ro; touch /rw/new && echo rw-ok; touch /ro/new 2>/dev/null || echo ro-refused; \
                  touch /new 2>/dev/null || echo root-refused; \
                  for m in /proc/sys /sys /ro /; do mount -o remount,bind,rw $m 2>/dev/null; done; \
                  echo x > /proc/sys/kernel/domainname 2>/dev/null || echo sysctl-refused; \
                  touch /ro/new 2>/dev/null || echo ro-still-refused; touch /new 2>/dev/null || echo root-still-refused; \
                  awk '$2 == \"/sys\" || $2 == \"/proc/sys\" { split($4, o, \",\"); print $2, o[1] }' /proc/self/mounts";
    let r = env.netspawn(&[
        "-q",
        "-U",
        "--private-users-ownership=map",
        "--read-only",
        &format!("--bind={}:/rw", rw.display()),
        &format!("--bind-ro={}:/ro", ro.display()),
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        script,
    ]);
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        &lines[..8],
        [
            "0",
            "0",
            "rw-ok",
            "ro-refused",
            "root-refused",
            "sysctl-refused",
            // Remounting them writable does not help: their flags are locked.
            "ro-still-refused",
            "root-still-refused",
        ],
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // What the container made in an idmapped bind is 0's on the host.
    assert_eq!(owner(&rw.join("new")), (0, 0));
    assert!(!ro.join("new").exists());
    check_clean(&env);
}

fn debian_cache() -> PathBuf {
    std::env::var_os("NETSPAWN_TEST_DEBIAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netspawn-test/debian-bookworm"))
}

#[test]
fn debian_boots_with_a_user_namespace() {
    let cache = debian_cache();
    if !cache.join("usr/lib/systemd/systemd").exists() {
        skip(
            "debian_boots_with_a_user_namespace",
            "no cached Debian image (t060_boot_debian builds it)",
        );
        return;
    }
    let env = TestEnv::new();
    let img = env.image_dir().join("udeb");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    // With the host's network a guest in a user namespace cannot bind port 53
    // (systemd-resolved); a network of its own is what -U is for.
    let mut child = env.spawn(&[
        "-q",
        "-b",
        "-U",
        "--private-network",
        "-D",
        img.to_str().unwrap(),
    ]);
    env.wait_registered("udeb", Duration::from_secs(30))
        .expect("registered");
    let shell = |args: &[&str]| {
        let mut v = vec!["shell", "udeb"];
        v.extend_from_slice(args);
        env.ctl(&v)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let state = loop {
        let r = shell(&["/bin/systemctl", "is-system-running", "--wait"]);
        let s = r.stdout.trim().to_string();
        if s == "running" || s == "degraded" || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let failed = shell(&["/bin/systemctl", "--failed", "--no-legend", "--plain"]);
    assert_eq!(state, "running", "failed units:\n{}", failed.stdout);
    let shift = entry_field(&env, "udeb", "UID_SHIFT").expect("UID_SHIFT in the entry");
    let r = shell(&["/bin/sh", "-c", "cat /proc/1/uid_map; id -u"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(uid_map(lines[0]).1.to_string(), shift, "{}", r.stdout);
    assert_eq!(lines[1], "0");
    let _ = shell(&["/bin/systemctl", "poweroff"]);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(60)), Some(0));
    check_clean(&env);
}

/// Alive and not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// Also as another user: changing IDs clears the parent death signal,
/// which PID 1 sets again.
#[test]
fn the_container_dies_with_its_launcher_even_on_kill_9() {
    let env = TestEnv::new();
    let img = env.busybox("uorphan");
    let d = img.to_str().unwrap();
    for flags in [&["-U"][..], &["-U", "-u", "nobody"], &["-u", "nobody"]] {
        let mut args = vec!["-q", "-D", d];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["/bin/sleep", "100"]);
        let mut child = env.spawn(&args);
        let leader = env
            .wait_registered("uorphan", Duration::from_secs(10))
            .expect("registered");
        let launcher: i32 = entry_field(&env, "uorphan", "LAUNCHER")
            .and_then(|l| l.parse().ok())
            .expect("LAUNCHER=");
        // SAFETY: a signal to the launcher we started.
        unsafe { libc::kill(launcher, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(leader) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !running(leader),
            "{flags:?}: the container outlived its launcher"
        );
        let _ = wait_timeout(&mut child, Duration::from_secs(10));
        // The next launch takes the name (and a range) again and cleans up.
        env.netspawn(&["-q", "-U", "-D", d, "/bin/true"])
            .expect_status(0);
        check_clean(&env);
    }
}

/// A machine that is not registered still holds its range (its lock file).
#[test]
fn an_unregistered_machine_keeps_its_range() {
    let env = TestEnv::new();
    let a = env.busybox("unreg");
    let b = env.busybox("other");
    let ctl = env.hold_dir();
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -U --register=no --bind={ctl}:/ctl -D {a} /bin/sh -c 'echo A:$(cat /proc/self/uid_map); cat /proc/self/uid_map >/ctl/map; touch /ctl/up; {HOLD}' &
               for t in $(seq 600); do [ -e {ctl}/up ] && break; sleep 0.05; done
               $NETSPAWN -q -U -D {b} /bin/sh -c 'echo B:$(cat /proc/self/uid_map)'
               # A range of its own that starts inside A's: only A's lock
               # file says A has it (A is in no registry).
               sa=$(awk '{{print $2}}' {ctl}/map)
               $NETSPAWN -q --private-users=$((sa + 1000)):1000 -D {b} /bin/true; echo C:$?
               touch {ctl}/stop
               wait"#,
            ctl = ctl.display(),
            a = a.display(),
            b = b.display(),
        ),
        60,
    );
    let shift = |p: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .map(uid_map)
            .unwrap_or_else(|| panic!("no {p}: {}\n{}", r.stdout, r.stderr))
            .1
    };
    assert_ne!(shift("A:"), shift("B:"), "{}", r.stdout);
    assert!(r.stdout.contains("C:1"), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("overlaps the range of running machine 'unreg'"),
        "{}",
        r.stderr
    );
    check_clean(&env);
}

#[test]
fn a_booted_busybox_init_gives_its_console_to_getty() {
    // PID 1 must not hold the console as its controlling terminal: in a user
    // namespace getty cannot steal it (TIOCSCTTY needs the host's
    // CAP_SYS_ADMIN) and would respawn forever without a login shell.
    let env = TestEnv::new();
    let img = env.busybox("ubootc");
    let child = env.spawn(&["-q", "-b", "-U", "-D", img.to_str().unwrap()]);
    env.wait_registered("ubootc", Duration::from_secs(20))
        .expect("registered");
    // The console's login shell appears with the console as its terminal.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let r = env.ctl(&["shell", "ubootc", "/bin/sh", "-c", "ps -o tty,comm"]);
        seen = r.stdout.clone();
        if seen
            .lines()
            .any(|l| l.ends_with(" sh") && !l.trim_start().starts_with('?'))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    env.ctl(&["poweroff", "ubootc"]).expect_status(0);
    let out = child.wait_with_output().unwrap();
    let console =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        seen.lines()
            .any(|l| l.ends_with(" sh") && !l.trim_start().starts_with('?')),
        "no login shell on the console: {seen}\n{console}"
    );
    assert!(!console.contains("TIOCSCTTY"), "{console}");
    check_clean(&env);
}
