//! Booting a real Debian bookworm guest (made by `netspawnctl bootstrap
//! debian`) with systemd as PID 1: it reaches its default target with no
//! failed units, meets the Container Interface, and poweroff/reboot inside
//! behave as with systemd-nspawn.
//!
//! The image is built once into a cache (`NETSPAWN_TEST_DEBIAN_CACHE`,
//! default /var/cache/netspawn-test/debian-bookworm) and copied per test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use netspawn_tests::*;

fn cache() -> PathBuf {
    std::env::var_os("NETSPAWN_TEST_DEBIAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netspawn-test/debian-bookworm"))
}

/// Makes (once, under a lock) and copies the Debian image into the env.
fn debian_image(env: &TestEnv, name: &str) -> PathBuf {
    let cache = cache();
    let parent = cache.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let lock = std::fs::File::create(parent.join(".lock")).unwrap();
    lock.lock().unwrap();
    if !cache.join("usr/lib/systemd/systemd").exists() {
        let _ = std::fs::remove_dir_all(&cache);
        let st = Command::new(bin("netspawnctl"))
            .args([
                "bootstrap",
                "debian",
                "cache",
                &format!("--directory={}", cache.display()),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "bootstrap debian failed");
    }
    let dst = env.image_dir().join(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    drop(lock);
    dst
}

fn shell(env: &TestEnv, name: &str, args: &[&str]) -> Run {
    let mut v = vec!["shell", name];
    v.extend_from_slice(args);
    env.ctl(&v)
}

fn wait_running(env: &TestEnv, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = shell(
            env,
            name,
            &["/bin/systemctl", "is-system-running", "--wait"],
        );
        let state = r.stdout.trim().to_string();
        if state == "running" || state == "degraded" || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn leader_of(env: &TestEnv, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(env.run_dir().join("machines").join(name)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("LEADER="))?
        .parse()
        .ok()
}

#[test]
fn debian_boots_to_its_default_target_and_powers_off_with_status_0() {
    let env = TestEnv::new();
    let img = debian_image(&env, "deb");
    let mut child = env.spawn(&["-b", "-D", img.to_str().unwrap()]);
    env.wait_registered("deb", Duration::from_secs(30))
        .expect("registered");
    let state = wait_running(&env, "deb");
    let failed = shell(
        &env,
        "deb",
        &["/bin/systemctl", "--failed", "--no-legend", "--plain"],
    );
    assert_eq!(state, "running", "failed units:\n{}", failed.stdout);
    assert_eq!(failed.stdout.trim(), "");
    // The Container Interface.
    let r = shell(&env, "deb", &["/bin/sh", "-c", "systemd-detect-virt --container; cat /run/host/container-manager; test -s /run/host/os-release && echo host-os-release; tr '\\0' '\\n' < /proc/1/environ | grep -c '^container_uuid='; hostname; stat -fc %T /sys/fs/cgroup; findmnt -no OPTIONS /proc/sys | cut -d, -f1; findmnt -no OPTIONS /sys | cut -d, -f1"]);
    r.expect_status(0);
    assert_eq!(
        r.stdout,
        "container-other\nnetspawn\nhost-os-release\n1\ndeb\ncgroup2fs\nro\nro\n"
    );
    // poweroff inside ends netspawn with status 0.
    let _ = shell(&env, "deb", &["/bin/systemctl", "poweroff"]);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(60)), Some(0));
    assert!(env.registry_names().is_empty());
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn debian_reboot_restarts_in_the_same_launcher() {
    let env = TestEnv::new();
    let img = debian_image(&env, "debr");
    let mut child = env.spawn(&["-q", "-b", "-D", img.to_str().unwrap()]);
    let first = env
        .wait_registered("debr", Duration::from_secs(30))
        .expect("registered");
    assert_eq!(wait_running(&env, "debr"), "running");
    let _ = shell(&env, "debr", &["/bin/systemctl", "reboot"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match leader_of(&env, "debr") {
            Some(l) if l != first => break,
            _ if Instant::now() > deadline => panic!("no reboot"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert_eq!(wait_running(&env, "debr"), "running");
    // SIGTERM to the launcher: SIGRTMIN+3 to systemd, a clean halt, status 0.
    let launcher: i32 = std::fs::read_to_string(env.run_dir().join("machines/debr"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("LAUNCHER="))
        .unwrap()
        .parse()
        .unwrap();
    unsafe { libc::kill(launcher, libc::SIGTERM) };
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(60)), Some(0));
}

#[test]
fn debian_networkd_gets_a_lease_from_netd_on_a_veth() {
    let env = TestEnv::new();
    let img = debian_image(&env, "debnet");
    // The guest's own systemd-networkd (stock 80-container-host0.network) asks netd for a lease.
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -b -n -D {img} >/dev/null 2>&1 &
               for t in $(seq 600); do grep -q '^ADDRESSES=.*\.' $NETSPAWN_RUN_DIR/machines/debnet 2>/dev/null && break; sleep 0.1; done
               echo host=$(ip -4 -o addr show ve-debnet | grep -o 'inet [0-9./]*')
               grep ^ADDRESSES= $NETSPAWN_RUN_DIR/machines/debnet
               # networkd may still be finishing (or its bus not yet answering) when the address shows.
               $NETSPAWNCTL shell debnet /bin/sh -c 'for i in $(seq 100); do s=$(networkctl status host0 --no-pager 2>&1 | grep -i "state:"); case "$s" in *routable*|*configured*) break;; esac; sleep 0.1; done; echo "networkctl: $s"; ip route | grep default'
               $NETSPAWNCTL poweroff debnet; wait"#,
            img = img.display()
        ),
        180,
    );
    let out = &r.stdout;
    let host = out
        .lines()
        .find_map(|l| l.strip_prefix("host=inet "))
        .unwrap_or("");
    let net: Vec<&str> = host.split('/').collect();
    assert_eq!(net.len(), 2, "{out}\n{}", r.stderr);
    let addrs = out
        .lines()
        .find_map(|l| l.strip_prefix("ADDRESSES="))
        .unwrap_or("");
    let prefix: String = net[0]
        .rsplit_once('.')
        .map(|x| x.0)
        .unwrap_or("")
        .to_string();
    assert!(
        addrs
            .split_whitespace()
            .any(|a| a.starts_with(&format!("{prefix}."))),
        "leased address in ve-debnet's subnet: {out}"
    );
    assert!(
        out.contains("routable") || out.contains("configured"),
        "networkd configured host0: {out}"
    );
    assert!(out.contains("default via "), "{out}");
}
