//! Exec settings that used to be accepted and dropped, now applied in the
//! container: the user, no-new-privileges, resource limits, OOM score, CPU
//! affinity, inaccessible paths, readiness, the machine id, a payload that
//! lives in a bind mount and `-E NAME` without a value; and the settings
//! still refused, each with one line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netspawn_tests::*;

fn write_settings(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!("{name}.nspawn"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The value of `key:` in a /proc status-like text.
fn status_field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

fn run(env: &TestEnv, d: &str, flags: &[&str], script: &str) -> Run {
    let mut args = vec!["-q", "-D", d];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["/bin/sh", "-c", script]);
    let r = env.netspawn(&args);
    r.expect_status(0);
    r
}

#[test]
fn user_switches_credentials_environment_and_home() {
    let env = TestEnv::new();
    let img = env.busybox("user");
    let d = img.to_str().unwrap();
    let mut pw = std::fs::read_to_string(img.join("etc/passwd")).unwrap();
    pw.push_str("tester:x:1000:1001:Tester:/home/tester:/bin/sh\n");
    std::fs::write(img.join("etc/passwd"), pw).unwrap();
    let mut gr = std::fs::read_to_string(img.join("etc/group")).unwrap_or_default();
    gr.push_str("extra:x:1002:tester\n");
    std::fs::write(img.join("etc/group"), gr).unwrap();
    std::fs::create_dir_all(img.join("home/tester")).unwrap();
    let script =
        "id -u; id -g; id -G; echo $HOME $USER $LOGNAME $SHELL; pwd; cat /proc/self/status";
    for flags in [&["-u", "tester"][..], &["--user=1000"][..]] {
        let r = run(&env, d, flags, script);
        let mut lines = r.stdout.lines();
        assert_eq!(lines.next(), Some("1000"), "{}", r.stdout);
        assert_eq!(lines.next(), Some("1001"));
        assert_eq!(lines.next(), Some("1001 1002"));
        assert_eq!(lines.next(), Some("/home/tester tester tester /bin/sh"));
        assert_eq!(lines.next(), Some("/home/tester"));
        for cap in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert_eq!(status_field(&r.stdout, cap), "0000000000000000", "{cap}");
        }
    }
    // -E wins over the user's environment; --chdir over the home.
    let r = run(
        &env,
        d,
        &["-u", "tester", "-E", "HOME=/x", "--chdir=/tmp"],
        "echo $HOME; pwd",
    );
    assert_eq!(r.stdout, "/x\n/tmp\n");
    // From a (trusted) file.
    write_settings(&env.settings_dir(), "user", "[Exec]\nUser=tester\n");
    let r = run(&env, d, &[], "id -u");
    assert_eq!(r.stdout, "1000\n");
    // An unknown user is one line, and leaves nothing behind.
    env.netspawn(&["-q", "-D", d, "-u", "nosuchuser", "/bin/true"])
        .expect_error("nosuchuser");
}

#[test]
fn root_keeps_the_retained_set_as_inheritable() {
    let env = TestEnv::new();
    let img = env.busybox("inh");
    let d = img.to_str().unwrap();
    let r = run(&env, d, &[], "cat /proc/self/status");
    let bnd = status_field(&r.stdout, "CapBnd");
    assert_eq!(status_field(&r.stdout, "CapInh"), bnd, "{}", r.stdout);
    assert_eq!(status_field(&r.stdout, "CapEff"), bnd);
}

#[test]
fn no_new_privileges() {
    let env = TestEnv::new();
    let img = env.busybox("nnp");
    let d = img.to_str().unwrap();
    let r = run(&env, d, &[], "cat /proc/self/status");
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), "0");
    let r = run(
        &env,
        d,
        &["--no-new-privileges=yes"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), "1");
    write_settings(&env.settings_dir(), "nnp", "[Exec]\nNoNewPrivileges=yes\n");
    let r = run(&env, d, &[], "cat /proc/self/status");
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), "1");
}

/// The soft and hard columns of a /proc/PID/limits row.
fn limits(text: &str, row: &str) -> (String, String) {
    let l = text
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} in {text}"));
    let cols: Vec<&str> = l[row.len()..].split_whitespace().collect();
    (cols[0].to_string(), cols[1].to_string())
}

#[test]
fn resource_limits_oom_score_and_cpu_affinity() {
    let env = TestEnv::new();
    let img = env.busybox("res");
    let d = img.to_str().unwrap();
    let r = run(
        &env,
        d,
        &[
            "--rlimit=NOFILE=100:200",
            "--rlimit=RLIMIT_CORE=infinity",
            "--rlimit=FSIZE=1M",
            "--oom-score-adjust=123",
            "--cpu-affinity=0",
        ],
        "cat /proc/self/limits; echo oom=$(cat /proc/self/oom_score_adj); grep Cpus_allowed_list /proc/self/status",
    );
    let o = &r.stdout;
    assert_eq!(limits(o, "Max open files"), ("100".into(), "200".into()));
    assert_eq!(
        limits(o, "Max core file size"),
        ("unlimited".into(), "unlimited".into())
    );
    assert_eq!(
        limits(o, "Max file size"),
        ("1048576".into(), "1048576".into())
    );
    assert!(o.contains("oom=123\n"), "{o}");
    assert_eq!(status_field(o, "Cpus_allowed_list"), "0");
    // The same from a trusted file (a positive score: lowering it needs
    // CAP_SYS_RESOURCE, which test hosts may lack).
    write_settings(
        &env.settings_dir(),
        "res",
        "[Exec]\nLimitNOFILE=64\nOOMScoreAdjust=77\nCPUAffinity=0\n",
    );
    let r = run(
        &env,
        d,
        &[],
        "cat /proc/self/limits; echo oom=$(cat /proc/self/oom_score_adj)",
    );
    assert_eq!(
        limits(&r.stdout, "Max open files"),
        ("64".into(), "64".into())
    );
    assert!(r.stdout.contains("oom=77\n"), "{}", r.stdout);
    // Next to the image (untrusted): dropped, one warning each.
    std::fs::remove_file(env.settings_dir().join("res.nspawn")).unwrap();
    write_settings(
        img.parent().unwrap(),
        "res",
        "[Exec]\nLimitNOFILE=64\nOOMScoreAdjust=77\nCPUAffinity=0\n",
    );
    let r = run(&env, d, &[], "echo oom=$(cat /proc/self/oom_score_adj)");
    assert!(r.stdout.contains("oom=0\n"), "{}", r.stdout);
    let w: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(w.len(), 3, "{w:?}");
    for key in ["LimitNOFILE=", "OOMScoreAdjust=", "CPUAffinity="] {
        assert!(
            w.iter()
                .any(|l| l.contains(key) && l.contains("not trusted")),
            "{key}: {w:?}"
        );
    }
}

#[test]
fn inaccessible_paths() {
    let env = TestEnv::new();
    let img = env.busybox("inacc");
    let d = img.to_str().unwrap();
    std::fs::create_dir_all(img.join("srv/secret")).unwrap();
    std::fs::write(img.join("srv/secret/file"), "secret").unwrap();
    std::fs::write(img.join("srv/note"), "note").unwrap();
    let r = run(
        &env,
        d,
        &["--inaccessible=/srv/secret", "--inaccessible=/srv/note"],
        "ls -A /srv/secret; echo ls-done; cat /srv/note; echo cat-done; \
         touch /srv/secret/x 2>/dev/null || echo ro; stat -c %a /srv/secret /srv/note",
    );
    assert_eq!(r.stdout, "ls-done\ncat-done\nro\n0\n0\n");
    assert_eq!(
        std::fs::read_to_string(img.join("srv/secret/file")).unwrap(),
        "secret"
    );
    env.netspawn(&["-q", "-D", d, "--inaccessible=/no/such", "/bin/true"])
        .expect_error("/no/such");
}

const NOTIFY_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(void) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p) return 2;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    return sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&a, sizeof a) == 7 ? 0 : 1;
}
"#;

fn entry_field(env: &TestEnv, name: &str, key: &str) -> String {
    std::fs::read_to_string(env.run_dir().join("machines").join(name))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_default()
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn notify_ready_waits_for_the_payload_and_tells_our_manager() {
    if !have("cc") {
        skip("notify_ready", "no C compiler");
        return;
    }
    let env = TestEnv::new();
    let img = env.busybox("ready");
    let d = img.to_str().unwrap();
    let notify = compile_static_c(&env, "notify", NOTIFY_C);
    std::fs::copy(&notify, img.join("bin/notify")).unwrap();
    // Our own service manager's socket.
    let sock_path = env.dir.join("manager.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let go = img.join("go");
    let mut child = env
        .cmd(
            "netspawn",
            &[
                "-q",
                "-D",
                d,
                "--notify-ready=yes",
                "/bin/sh",
                "-c",
                "while [ ! -e /go ]; do sleep 0.05; done; /bin/notify; sleep 30",
            ],
            120,
        )
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(env
        .wait_registered("ready", Duration::from_secs(20))
        .is_some());
    assert_eq!(entry_field(&env, "ready", "READY"), "0");
    let st = env.ctl(&["status", "ready"]);
    assert!(
        st.stdout.contains("\tReady: no\n") || st.stdout.contains("   Ready: no\n"),
        "{}",
        st.stdout
    );
    std::fs::write(&go, "").unwrap();
    assert!(wait_for(|| entry_field(&env, "ready", "READY") == "1"));
    let st = env.ctl(&["status", "ready"]);
    assert!(st.stdout.contains("   Ready: yes\n"), "{}", st.stdout);
    let mut buf = [0u8; 64];
    let n = manager.recv(&mut buf).expect("READY=1 to our manager");
    assert_eq!(&buf[..n], b"READY=1\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_timeout(&mut child, Duration::from_secs(20));

    // Without --notify-ready the machine is ready as soon as it runs.
    let mut child = env.spawn(&["-q", "-D", d, "/bin/sleep", "30"]);
    assert!(env
        .wait_registered("ready", Duration::from_secs(20))
        .is_some());
    assert_eq!(entry_field(&env, "ready", "READY"), "1");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_timeout(&mut child, Duration::from_secs(20));
}

#[test]
fn the_machine_id_is_the_images_own_or_machine_id_from_the_file() {
    let env = TestEnv::new();
    let img = env.busybox("mid");
    let d = img.to_str().unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    std::fs::write(img.join("etc/machine-id"), format!("{id}\n")).unwrap();
    let r = run(
        &env,
        d,
        &[],
        "echo $container_uuid; cat /run/host/container-uuid",
    );
    assert_eq!(r.stdout, format!("{id}\n{id}\n"));
    // An empty machine-id (Debian images) leaves a random one.
    std::fs::write(img.join("etc/machine-id"), "").unwrap();
    let r = run(&env, d, &[], "echo $container_uuid");
    assert_ne!(r.stdout.trim(), id);
    assert_eq!(r.stdout.trim().len(), 32);
    let other = "fedcba9876543210fedcba9876543210";
    write_settings(
        &env.settings_dir(),
        "mid",
        "[Exec]\nMachineID=FEDCBA98-7654-3210-FEDC-BA9876543210\n",
    );
    let r = run(&env, d, &[], "echo $container_uuid");
    assert_eq!(r.stdout, format!("{other}\n"));
    // --uuid masks the file's.
    let r = run(&env, d, &[&format!("--uuid={id}")], "echo $container_uuid");
    assert_eq!(r.stdout, format!("{id}\n"));
}

#[test]
fn the_payload_may_live_in_a_bind_mount() {
    let env = TestEnv::new();
    let img = env.busybox("pib");
    let d = img.to_str().unwrap();
    let tools = env.dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(tools.join("tool"), "#!/bin/sh\necho tool-ran \"$@\"\n").unwrap();
    std::fs::set_permissions(
        tools.join("tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bind = format!("--bind-ro={}:/t", tools.display());
    let r = env.netspawn(&["-q", "-D", d, &bind, "/t/tool", "a"]);
    r.expect_status(0);
    assert_eq!(r.stdout, "tool-ran a\n");
    // Found along PATH too.
    let r = env.netspawn(&["-q", "-D", d, &bind, "-E", "PATH=/t:/bin", "tool"]);
    r.expect_status(0);
    assert_eq!(r.stdout, "tool-ran\n");
    // Missing in the mount: the child says so, in one line.
    env.netspawn(&["-q", "-D", d, &bind, "/t/nope"])
        .expect_error("/t/nope");
}

#[test]
fn setenv_without_a_value() {
    let env = TestEnv::new();
    let img = env.busybox("envv");
    let d = img.to_str().unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "-E",
        "NETSPAWN_TEST_SURELY_UNSET",
        "/bin/sh",
        "-c",
        "echo \"[${NETSPAWN_TEST_SURELY_UNSET-unset}]\"",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "[]\n");
}

#[test]
fn unimplemented_settings_are_refused_in_one_line() {
    let env = TestEnv::new();
    let img = env.busybox("refuse");
    let d = img.to_str().unwrap();
    for (flag, needle) in [
        ("--property=DeviceAllow=/dev/null", "unknown property"),
        ("--private-users-ownership=foreign", "foreign"),
        // busybox's /bin is a directory: no merged /usr for --volatile=yes.
        ("--volatile=yes", "merged /bin"),
        ("--template=/x", "Template /x is not a directory"),
    ] {
        env.netspawn(&["-q", "-D", d, flag, "/bin/true"])
            .expect_error(needle);
    }
    // Accepted: --volatile=no, --no-pager, --private-users=no, and (issue
    // 10) -x and --volatile=state.
    for flag in [
        "--volatile=no",
        "--no-pager",
        "--private-users=no",
        "-x",
        "--volatile=state",
    ] {
        env.netspawn(&["-q", "-D", d, flag, "/bin/true"])
            .expect_status(0);
    }
    for text in ["[Exec]\nEphemeral=yes\n", "[Files]\nVolatile=overlay\n"] {
        write_settings(&env.settings_dir(), "refuse", text);
        env.netspawn(&["-q", "-D", d, "/bin/true"]).expect_status(0);
    }
    write_settings(&env.settings_dir(), "refuse", "[Files]\nBindUser=root\n");
    env.netspawn(&["-q", "-D", d, "/bin/true"])
        .expect_error("not supported");
    // A key netspawn does not implement: refused in a trusted file (above),
    // a warning in an untrusted one.
    std::fs::remove_file(env.settings_dir().join("refuse.nspawn")).unwrap();
    write_settings(img.parent().unwrap(), "refuse", "[Files]\nBindUser=root\n");
    let r = env.netspawn(&["-q", "-D", d, "/bin/true"]);
    r.expect_status(0);
    assert!(
        r.stderr.lines().count() == 1 && r.stderr.contains("BindUser"),
        "{}",
        r.stderr
    );
}
