//! Entering a running machine (`netspawnctl shell`) gives the process the
//! payload's protections — its system call filter (with the launch's
//! `--system-call-filter=` adjustments), no_new_privs setting and capability
//! bounding set — and never shows the machine a host binary: until it execs
//! the command, the entering process runs from a sealed memfd copy of
//! netspawnctl (the runc CVE-2019-5736 class).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use netspawn_tests::*;

/// Calls each system call with arguments that make it fail harmlessly when
/// it is allowed; prints `name errno` (0 on success).
const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long r) { printf("%s %d\n", name, r < 0 ? errno : 0); }

int main(void) {
    errno = 0; report("getpid", syscall(SYS_getpid));
    errno = 0; report("add_key", syscall(SYS_add_key, NULL, NULL, NULL, 0, 0));
    errno = 0; report("keyctl", syscall(SYS_keyctl, 99999, 0, 0, 0, 0));
    errno = 0; report("request_key", syscall(SYS_request_key, NULL, NULL, NULL, 0));
    errno = 0; report("bpf", syscall(SYS_bpf, -1, NULL, 0));
    errno = 0; report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    errno = 0; report("kexec_load", syscall(SYS_kexec_load, 0, 1000, NULL, 0));
    return 0;
}
"#;

/// The machine's payload (PID 1). Each time /t/go appears it removes it,
/// notes the PID the next process in the machine will get, says so in
/// /t/armed, and stops that process with SIGSTOP the moment it exists, before
/// it can exec anything (the stop takes effect when it first leaves the
/// kernel), so that its /proc/PID/exe can be looked at as a process in the
/// machine sees it. Writes `exe=LINK`, `state=...` and `write=ok|refused` to
/// /t/result (or `missed` when the process came and went while we were not
/// looking, on a busy host) and lets the process go on.
const WATCH: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int last_pid(void) {
    int last = -1;
    FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "r");
    if (f) {
        if (fscanf(f, "%d", &last) != 1) last = -1;
        fclose(f);
    }
    return last;
}

static void result(const char *text) {
    FILE *f = fopen("/t/result.tmp", "w");
    fputs(text, f);
    fclose(f);
    rename("/t/result.tmp", "/t/result");
}

int main(void) {
    /* Spin at a real-time priority if we may: fewer missed rounds. */
    struct sched_param sp = { .sched_priority = 1 };
    sched_setscheduler(0, SCHED_FIFO, &sp);
    for (;;) {
        while (access("/t/go", F_OK) != 0) usleep(10000);
        unlink("/t/go");
        int target = last_pid() + 1;
        close(open("/t/armed", O_CREAT | O_WRONLY, 0644));
        unsigned long n = 0;
        int caught = 1;
        while (kill(target, SIGSTOP) != 0) {
            if ((++n & 0xfff) == 0 && last_pid() >= target && kill(target, SIGSTOP) != 0) {
                caught = 0;
                break;
            }
        }
        if (!caught) {
            result("missed\n");
            continue;
        }
        char p[64], exe[512] = "", status[4096], state[64] = "?", out[1024];
        snprintf(p, sizeof p, "/proc/%d/status", target);
        for (int i = 0; i < 500 && state[0] != 'T'; i++) {
            int fd = open(p, O_RDONLY);
            if (fd < 0) break;
            ssize_t r = read(fd, status, sizeof status - 1);
            status[r < 0 ? 0 : r] = 0;
            close(fd);
            char *s = strstr(status, "State:");
            if (s) sscanf(s, "State: %63s", state);
            if (state[0] != 'T') usleep(10000);
        }
        snprintf(p, sizeof p, "/proc/%d/exe", target);
        ssize_t len = readlink(p, exe, sizeof exe - 1);
        exe[len < 0 ? 0 : len] = 0;
        const char *wrote = "refused";
        int fd = open(p, O_WRONLY);
        if (fd >= 0) {
            if (pwrite(fd, "\x7f", 1, 0) == 1) wrote = "ok";
            close(fd);
        }
        snprintf(out, sizeof out, "exe=%s\nstate=%s\nwrite=%s\n", exe, state, wrote);
        result(out);
        kill(target, SIGCONT);
    }
}
"#;

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn shell_gets_the_payloads_filter_nnp_and_bounding_set_and_no_host_binary() {
    let env = TestEnv::new();
    let img = env.busybox("enter");
    let probe = compile_static_c(&env, "probe", PROBE);
    let watch = compile_static_c(&env, "watch", WATCH);
    std::fs::create_dir_all(img.join("usr/local/bin")).unwrap();
    std::fs::copy(&probe, img.join("usr/local/bin/probe")).unwrap();
    std::fs::copy(&watch, img.join("usr/local/bin/watch")).unwrap();
    std::fs::create_dir_all(img.join("t")).unwrap();
    // On the host none of the probe's calls is refused with EPERM, so an
    // EPERM inside comes from the machine's filter.
    let out = std::process::Command::new(&probe).output().unwrap();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        assert!(!l.ends_with(&format!(" {}", libc::EPERM)), "host: {l}");
    }

    let mut machine = env.spawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "--system-call-filter=add_key keyctl",
        "/usr/local/bin/watch",
    ]);
    let leader = env
        .wait_registered("enter", Duration::from_secs(20))
        .expect("machine registered");
    let leader_status = std::fs::read_to_string(format!("/proc/{leader}/status")).unwrap();
    assert_eq!(status_field(&leader_status, "Seccomp:"), "2");

    // Filter, no_new_privs and bounding set as the payload's.
    let r = env.ctl(&["shell", "enter", "/bin/cat", "/proc/self/status"]);
    r.expect_status(0);
    assert_eq!(status_field(&r.stdout, "Seccomp:"), "2", "{}", r.stdout);
    for field in ["NoNewPrivs:", "CapBnd:"] {
        assert_eq!(
            status_field(&r.stdout, field),
            status_field(&leader_status, field),
            "{field}"
        );
    }

    // The same allow/deny set: the launch allowed add_key and keyctl; the
    // rest of the default refusals hold.
    let r = env.ctl(&["shell", "enter", "/usr/local/bin/probe"]);
    r.expect_status(0);
    let m: HashMap<String, i32> = r
        .stdout
        .lines()
        .filter_map(|l| {
            let (n, e) = l.split_once(' ')?;
            Some((n.to_string(), e.parse().ok()?))
        })
        .collect();
    assert_eq!(m.len(), 7, "{}", r.stdout);
    assert_eq!(m["getpid"], 0);
    for n in ["add_key", "keyctl"] {
        assert_ne!(m[n], libc::EPERM, "{n} was allowed at launch: {m:?}");
    }
    for n in ["request_key", "bpf", "perf_event_open", "kexec_load"] {
        assert_eq!(m[n], libc::EPERM, "{n} must be refused: {m:?}");
    }

    // What the machine sees of the entering process before it execs. A
    // round where the watcher was too late (the process had exec'd, or was
    // gone) says nothing; a round that caught it must see a sealed memfd.
    let t = img.join("t");
    let mut clean = 0;
    for _ in 0..10 {
        let _ = std::fs::remove_file(t.join("result"));
        let _ = std::fs::remove_file(t.join("armed"));
        std::fs::write(t.join("go"), "").unwrap();
        assert!(wait_for(&t.join("armed"), Duration::from_secs(10)));
        let r = env.ctl(&["shell", "enter", "/bin/true"]);
        r.expect_status(0);
        assert!(wait_for(&t.join("result"), Duration::from_secs(10)));
        let result = std::fs::read_to_string(t.join("result")).unwrap();
        let exe = result.lines().find_map(|l| l.strip_prefix("exe="));
        if result == "missed\n" || exe == Some("/bin/busybox") {
            continue;
        }
        assert!(result.contains("\nstate=T"), "not caught stopped: {result}");
        let exe = exe.unwrap();
        assert!(
            exe.starts_with("/memfd:"),
            "the entering process runs from {exe:?}, not a sealed memfd: {result}"
        );
        assert!(result.contains("write=refused"), "{result}");
        clean += 1;
        if clean == 3 {
            break;
        }
    }
    assert!(clean > 0, "the watcher never caught the entering process");

    let _ = machine.kill();
    let _ = machine.wait();
}

#[test]
fn shell_into_a_no_new_privileges_machine_has_no_new_privs_too() {
    let env = TestEnv::new();
    let img = env.busybox("nnp");
    let mut machine = env.spawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "--no-new-privileges=yes",
        "/bin/sleep",
        "60",
    ]);
    let leader = env
        .wait_registered("nnp", Duration::from_secs(20))
        .expect("machine registered");
    let leader_status = std::fs::read_to_string(format!("/proc/{leader}/status")).unwrap();
    assert_eq!(status_field(&leader_status, "NoNewPrivs:"), "1");
    let r = env.ctl(&["shell", "nnp", "/bin/cat", "/proc/self/status"]);
    r.expect_status(0);
    assert_eq!(status_field(&r.stdout, "NoNewPrivs:"), "1", "{}", r.stdout);
    let _ = machine.kill();
    let _ = machine.wait();
}
