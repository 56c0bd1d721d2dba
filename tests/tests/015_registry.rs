//! The machine registry, image locks and the launcher's lifetime: busy
//! names and images are refused, a running machine is listed, and the
//! container never outlives its launcher.

use std::time::Duration;

use netspawn_tests::*;

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_running_machine_is_registered_and_unregistered_on_exit() {
    let env = TestEnv::new();
    let img = env.busybox("reg");
    let mut child = env.spawn(&["-q", "-D", img.to_str().unwrap(), "/bin/sleep", "30"]);
    let leader = env
        .wait_registered("reg", Duration::from_secs(10))
        .expect("registered");
    let text = std::fs::read_to_string(env.run_dir().join("machines/reg")).unwrap();
    assert!(
        text.contains(&format!("ROOT={}\n", img.canonicalize().unwrap().display())),
        "{text}"
    );
    assert!(
        text.contains("CLASS=container\n") && text.contains("SERVICE=netspawn\n"),
        "{text}"
    );
    // The leader is the container's PID 1, running the payload.
    let cmdline = std::fs::read_to_string(format!("/proc/{leader}/cmdline")).unwrap();
    assert!(cmdline.starts_with("/bin/sleep\0"), "{cmdline:?}");
    let list = env.ctl(&["list", "--no-legend"]);
    assert!(list.stdout.starts_with("reg "), "{}", list.stdout);
    // SIGTERM to the launcher shuts the container down (no -b: SIGKILL to PID 1).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let code = wait_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(137), "payload killed by SIGKILL: 128+9");
    assert!(wait_gone(leader, Duration::from_secs(5)));
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
fn a_busy_name_and_a_busy_image_are_refused() {
    let env = TestEnv::new();
    let img = env.busybox("busy");
    let other = env.busybox("other");
    let mut first = env.spawn(&["-q", "-D", img.to_str().unwrap(), "/bin/sleep", "30"]);
    env.wait_registered("busy", Duration::from_secs(10))
        .expect("registered");
    // Same image, writable: the directory is locked.
    env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "-M",
        "second",
        "/bin/true",
    ])
    .expect_error("is currently busy");
    // Same image read-only while a writable one runs: also refused.
    env.netspawn(&[
        "-q",
        "--read-only",
        "-D",
        img.to_str().unwrap(),
        "-M",
        "third",
        "/bin/true",
    ])
    .expect_error("is currently busy");
    // Another image under the busy name.
    env.netspawn(&[
        "-q",
        "-D",
        other.to_str().unwrap(),
        "-M",
        "busy",
        "/bin/true",
    ])
    .expect_error("Machine 'busy' already exists");
    // The first machine was not disturbed.
    assert_eq!(env.registry_names(), vec!["busy"]);
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn read_only_containers_share_an_image() {
    let env = TestEnv::new();
    let img = env.busybox("shared");
    let mut a = env.spawn(&[
        "-q",
        "--read-only",
        "-D",
        img.to_str().unwrap(),
        "-M",
        "ro1",
        "/bin/sleep",
        "30",
    ]);
    env.wait_registered("ro1", Duration::from_secs(10))
        .expect("ro1 registered");
    env.netspawn(&[
        "-q",
        "--read-only",
        "-D",
        img.to_str().unwrap(),
        "-M",
        "ro2",
        "/bin/true",
    ])
    .expect_status(0);
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "-M", "rw", "/bin/true"])
        .expect_error("is currently busy");
    a.kill().unwrap();
    a.wait().unwrap();
}

#[test]
fn the_container_dies_with_its_launcher_even_on_kill_9() {
    let env = TestEnv::new();
    let img = env.busybox("orphan");
    let child = env.spawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "sleep 100 & sleep 100",
    ]);
    let leader = env
        .wait_registered("orphan", Duration::from_secs(10))
        .expect("registered");
    // Our child is `timeout`; the launcher is the netspawn process below it.
    let launcher: u32 = std::fs::read_to_string(env.run_dir().join("machines/orphan"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("LAUNCHER="))
        .unwrap()
        .parse()
        .unwrap();
    unsafe { libc::kill(launcher as i32, libc::SIGKILL) };
    assert!(
        wait_gone(leader, Duration::from_secs(5)),
        "container outlived its launcher"
    );
    let mut child = child;
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    // The entry is stale: readers ignore it and clean it up.
    let list = env.ctl(&["list", "--no-legend"]);
    assert!(!list.stdout.contains("orphan"), "{}", list.stdout);
    assert!(
        env.registry_names().is_empty(),
        "stale entry not cleaned: {:?}",
        env.registry_names()
    );
    // The name is free again, and the next launch of it cleans any leftover cgroup.
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/true"])
        .expect_status(0);
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn register_no_leaves_no_entry_and_allows_the_same_name_twice() {
    let env = TestEnv::new();
    let img = env.busybox("unreg");
    let mut a = env.spawn(&[
        "-q",
        "--register=no",
        "--read-only",
        "-D",
        img.to_str().unwrap(),
        "/bin/sleep",
        "30",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.registry_names().is_empty());
    env.netspawn(&[
        "-q",
        "--register=no",
        "--read-only",
        "-D",
        img.to_str().unwrap(),
        "/bin/true",
    ])
    .expect_status(0);
    a.kill().unwrap();
    a.wait().unwrap();
}

#[test]
fn a_fifo_or_a_device_in_the_registry_is_skipped_not_waited_on() {
    let env = TestEnv::new();
    let img = env.busybox("regfifo");
    let mut child = env.spawn(&["-q", "-D", img.to_str().unwrap(), "/bin/sleep", "30"]);
    env.wait_registered("regfifo", Duration::from_secs(10))
        .expect("registered");
    let machines = env.run_dir().join("machines");
    let fifo = std::ffi::CString::new(machines.join("pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", machines.join("zero")).unwrap();
    // A blocked reader would run into the timeout (exit status 124).
    let run = |args: &[&str]| {
        let o = env.ctl_cmd(args, 10).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["list", "--no-legend"]);
    assert_eq!(code, Some(0), "{err}");
    let names: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(names, ["regfifo"], "{out}");
    let (code, out, err) = run(&["status", "regfifo"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("regfifo"), "{out}");
    for name in ["pipe", "zero"] {
        let (code, _, err) = run(&["status", name]);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("No machine '{name}' known")),
            "{name}: {err}"
        );
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_timeout(&mut child, Duration::from_secs(10));
}
