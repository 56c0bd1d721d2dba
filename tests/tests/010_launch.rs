//! Running a command in a container: namespaces, file system, environment,
//! flags, exit status, standard streams.

use netspawn_tests::*;

#[test]
fn payload_is_pid1_with_its_own_hostname_and_api_filesystems() {
    let env = TestEnv::new();
    let img = env.busybox("web");
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo pid=$$; hostname; echo container=$container; echo uuid=${#container_uuid}; \
         grep -E ' /(proc|sys|dev|tmp|run|dev/shm|dev/pts|dev/mqueue|proc/sys|sys/fs/cgroup) ' /proc/self/mounts | cut -d' ' -f2,3,4 | cut -d, -f1; \
         ls /dev | tr '\\n' ' '",
    ]);
    r.expect_status(0);
    let out = &r.stdout;
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("\nweb\n"), "{out}");
    assert!(out.contains("container=netspawn\n"), "{out}");
    assert!(out.contains("uuid=32\n"), "{out}");
    for m in [
        "/proc proc rw",
        "/proc/sys proc ro",
        "/sys sysfs ro",
        "/sys/fs/cgroup cgroup2 rw",
        "/dev tmpfs rw",
        "/dev/pts devpts rw",
        "/dev/shm tmpfs rw",
        "/dev/mqueue mqueue rw",
        "/tmp tmpfs rw",
        "/run tmpfs rw",
    ] {
        assert!(out.contains(m), "missing mount {m:?} in\n{out}");
    }
    let devs: Vec<&str> = out.lines().last().unwrap().split_whitespace().collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue",
    ] {
        assert!(devs.contains(&d), "/dev lacks {d}: {devs:?}");
    }
    assert!(
        !devs
            .iter()
            .any(|d| d.starts_with("sd") || d.starts_with("vd") || *d == "mem" || *d == "kmsg"),
        "{devs:?}"
    );
    // Nothing is left behind.
    assert!(env.registry_names().is_empty());
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn sys_and_proc_sys_are_read_only_and_block_devices_cannot_be_opened() {
    let env = TestEnv::new();
    let img = env.busybox("ro");
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo procsys-writable; \
         touch /sys/x 2>/dev/null && echo sys-writable; \
         mkdir -p /mnt/own && mount -t tmpfs own /mnt/own; \
         for d in /tmp /root /dev /mnt/own; do \
           if mknod $d/vda b 253 0 2>/dev/null; then \
             head -c1 $d/vda >/dev/null 2>&1 && echo $d-opened || echo $d-refused; rm -f $d/vda; \
           else echo $d-refused; fi; \
         done; \
         echo done",
    ]);
    r.expect_status(0);
    let out = &r.stdout;
    assert!(!out.contains("writable"), "{out}");
    assert!(!out.contains("opened"), "{out}");
    // Including a tmpfs the guest mounts itself (no nodev there): the
    // cgroup device policy refuses the node.
    for d in ["/tmp", "/root", "/dev", "/mnt/own"] {
        assert!(out.contains(&format!("{d}-refused")), "{out}");
    }
}

#[test]
fn tmp_and_run_are_fresh() {
    let env = TestEnv::new();
    let img = env.busybox("fresh");
    std::fs::write(img.join("tmp/left-behind"), "x").unwrap();
    std::fs::create_dir_all(img.join("run")).unwrap();
    std::fs::write(img.join("run/left-behind"), "x").unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "ls -A /tmp /run; echo hi > /tmp/new",
    ]);
    r.expect_status(0);
    assert!(!r.stdout.contains("left-behind"), "{}", r.stdout);
    assert!(!img.join("tmp/new").exists());
}

#[test]
fn exit_status_is_the_payloads() {
    let env = TestEnv::new();
    let img = env.busybox("st");
    let d = img.to_str().unwrap();
    env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", "exit 3"])
        .expect_status(3);
    env.netspawn(&["-q", "-D", d, "/bin/true"]).expect_status(0);
    env.netspawn(&["-q", "-D", d, "/bin/false"])
        .expect_status(1);
    // Killed by a signal: 128+N. PID 1 can only be killed from outside its
    // namespace or by a signal it handles, so use -a (the payload is PID 2).
    env.netspawn(&["-q", "-a", "-D", d, "/bin/sh", "-c", "kill -9 $$"])
        .expect_status(137);
    env.netspawn(&["-q", "-a", "-D", d, "/bin/sh", "-c", "kill -TERM $$"])
        .expect_status(143);
}

#[test]
fn flags_environment_binds_tmpfs_chdir_hostname() {
    let env = TestEnv::new();
    let img = env.busybox("flags");
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("file"), "from-host").unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "--hostname=other",
        "-E",
        "FOO=bar baz",
        "--setenv=EMPTY=",
        &format!("--bind={}:/mnt/rw", shared.display()),
        &format!("--bind-ro={}:/mnt/ro", shared.display()),
        "--tmpfs=/var/scratch:mode=0700",
        "--chdir=/mnt/rw",
        "/bin/sh",
        "-c",
        "hostname; echo \"FOO=$FOO\"; env | grep -c '^EMPTY=$'; pwd; cat file; echo new > new; \
         echo x > /mnt/ro/x 2>/dev/null || echo ro-refused; \
         grep ' /var/scratch ' /proc/self/mounts | cut -d' ' -f3; stat -c %a /var/scratch",
    ]);
    r.expect_status(0);
    assert_eq!(
        r.stdout,
        "other\nFOO=bar baz\n1\n/mnt/rw\nfrom-hostro-refused\ntmpfs\n700\n"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("new")).unwrap(),
        "new\n"
    );
}

#[test]
fn read_only_root() {
    let env = TestEnv::new();
    let img = env.busybox("rootro");
    let r = env.netspawn(&[
        "-q",
        "--read-only",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "touch /etc/x 2>/dev/null || echo refused; touch /tmp/ok && echo tmp-ok",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "refused\ntmp-ok\n");
    assert!(!img.join("etc/x").exists());
}

/// `--bind-ro=` and `--read-only` leave no submount writable (systemd
/// remounts recursively): a tmpfs inside the bound directory, and one the
/// image has inside its root, are read-only inside; our own /tmp is not.
#[test]
fn read_only_reaches_submounts() {
    let env = TestEnv::new();
    let img = env.busybox("subro");
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    std::fs::create_dir_all(img.join("srv/inner")).unwrap();
    let r = env.sh(
        &format!(
            r#"mount -t tmpfs sub {shared}/sub && mount -t tmpfs inner {img}/srv/inner || exit 9
               $NETSPAWN -q -D {img} --bind-ro={shared}:/data /bin/sh -c '
                 touch /data/x 2>/dev/null && echo data-writable
                 touch /data/sub/x 2>/dev/null && echo data-sub-writable
                 touch /srv/inner/x 2>/dev/null && echo image-sub-writable-without-read-only
                 echo first-done'
               $NETSPAWN -q -D {img} --read-only /bin/sh -c '
                 touch /srv/inner/y 2>/dev/null && echo image-sub-writable
                 touch /etc/y 2>/dev/null && echo root-writable
                 touch /tmp/ok && echo tmp-ok'
               ls -A {shared}/sub; ls -A {img}/srv/inner"#,
            shared = shared.display(),
            img = img.display()
        ),
        60,
    );
    r.expect_status(0);
    assert_eq!(
        r.stdout, "image-sub-writable-without-read-only\nfirst-done\ntmp-ok\nx\n",
        "{}",
        r.stderr
    );
}

#[test]
fn machine_flag_finds_the_image_and_names_the_machine() {
    let env = TestEnv::new();
    env.busybox("named");
    let r = env.netspawn(&["-q", "-M", "named", "/bin/hostname"]);
    r.expect_status(0);
    assert_eq!(r.stdout, "named\n");
    // -D with -M: the directory gives the root, -M the name.
    let img = env.image_dir().join("named");
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "-M",
        "alias",
        "/bin/hostname",
    ]);
    assert_eq!(r.stdout, "alias\n");
}

#[test]
fn without_a_tty_the_standard_streams_pass_through() {
    let env = TestEnv::new();
    let img = env.busybox("pipe");
    let r = env.netspawn_stdin(
        &[
            "-q",
            "-D",
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "tr a-z A-Z; echo err >&2",
        ],
        b"hello\n",
    );
    r.expect_status(0);
    assert_eq!(r.stdout, "HELLO\n");
    assert_eq!(r.stderr, "err\n");
}

#[test]
fn as_pid2_runs_a_reaping_init() {
    let env = TestEnv::new();
    let img = env.busybox("pid2");
    // The payload is PID 2; an orphaned grandchild is reaped by PID 1 (no zombie left).
    let r = env.netspawn(&[
        "-q",
        "-a",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        // PID 1 must reap the orphan once it exits; polled, since a loaded
        // machine may take a while to schedule either (a zombie that stays
        // is still counted at the end).
        "echo pid=$$; (sh -c 'exit 0' &); for i in $(seq 400); do [ \"$(ps -o stat,comm | grep -c '^Z')\" = 0 ] && break; sleep 0.05; done; ps -o stat,comm | grep -c '^Z' ; cat /proc/1/cmdline | tr '\\0' ' '; echo",
    ]);
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "pid=2");
    assert_eq!(lines[1], "0", "zombies left: {}", r.stdout);
    // PID 1 is netspawn's stub init (a fork of the launcher, whose argv it
    // keeps), not the payload.
    let argv0 = lines[2].split_whitespace().next().unwrap_or("");
    assert!(argv0.ends_with("/netspawn"), "{}", r.stdout);
}

#[test]
fn private_network_has_only_lo_and_host_network_is_shared() {
    let env = TestEnv::new();
    let img = env.busybox("net");
    let r = env.netspawn(&[
        "-q",
        "--private-network",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "ls /sys/class/net; ip -o link show lo | grep -c UP",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "lo\n1\n");
    // Default: the (test's private) host network namespace, same as ours.
    let r = env.sh(
        &format!(
            "readlink /proc/self/ns/net; $NETSPAWN -q -D {} /bin/readlink /proc/self/ns/net",
            img.display()
        ),
        60,
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{} {}", r.stdout, r.stderr);
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn no_host_file_descriptor_leaks_in() {
    let env = TestEnv::new();
    let img = env.busybox("fds");
    // Open fds 7 and 9 in the launching shell; the container must not see them.
    let r = env.sh(
        &format!(
            "exec 7</etc/hostname 9>/dev/null; $NETSPAWN -q -D {} /bin/sh -c 'ls /proc/self/fd | tr \"\\n\" \" \"'",
            img.display()
        ),
        60,
    );
    let text = r.stdout;
    let fds: Vec<&str> = text.split_whitespace().collect();
    // 0 1 2 and the directory ls itself has open.
    assert!(fds.len() <= 4, "fds: {fds:?}");
    assert!(!fds.contains(&"7") && !fds.contains(&"9"), "fds: {fds:?}");
}

/// Issue 9, item 3: `--help` says plainly, as systemd-nspawn(1) does of
/// itself, that without a user namespace the container is no security
/// boundary, and why.
#[test]
fn help_says_the_container_is_no_security_boundary_without_user_namespaces() {
    let out = std::process::Command::new(bin("netspawn"))
        .arg("--help")
        .output()
        .expect("run netspawn --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Without a user namespace, the container's root is the host's root with fewer \
         capabilities: this is not a security boundary.",
        "core_pattern",
        "release_agent",
        "Only user namespaces (-U",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}
