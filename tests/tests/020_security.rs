//! Security defaults as systemd-nspawn's: the capability bounding set
//! (`--capability=`, `--drop-capability=`, CAP_NET_ADMIN only with a private
//! network) and the seccomp filter (`--system-call-filter=`), observed from
//! inside the container.

use std::collections::HashMap;

use netspawn_tests::*;

/// Kernel capability numbers (linux/capability.h) of the capabilities these
/// tests name.
fn cap(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_FSETID" => 4,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_SETPCAP" => 8,
        "CAP_LINUX_IMMUTABLE" => 9,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_BROADCAST" => 11,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_IPC_LOCK" => 14,
        "CAP_IPC_OWNER" => 15,
        "CAP_SYS_MODULE" => 16,
        "CAP_SYS_RAWIO" => 17,
        "CAP_SYS_CHROOT" => 18,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_PACCT" => 20,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_BOOT" => 22,
        "CAP_SYS_NICE" => 23,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_SYS_TIME" => 25,
        "CAP_SYS_TTY_CONFIG" => 26,
        "CAP_MKNOD" => 27,
        "CAP_LEASE" => 28,
        "CAP_AUDIT_WRITE" => 29,
        "CAP_AUDIT_CONTROL" => 30,
        "CAP_SETFCAP" => 31,
        "CAP_MAC_OVERRIDE" => 32,
        "CAP_MAC_ADMIN" => 33,
        "CAP_SYSLOG" => 34,
        "CAP_WAKE_ALARM" => 35,
        "CAP_BLOCK_SUSPEND" => 36,
        "CAP_AUDIT_READ" => 37,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        "CAP_CHECKPOINT_RESTORE" => 40,
        other => panic!("test table lacks {other}"),
    }
}

fn mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |m, n| m | 1u64 << cap(n))
}

/// systemd-nspawn(1)'s default capability list, as its man page gives it.
const NSPAWN_DEFAULT: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_NICE",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TTY_CONFIG",
];

/// Value of a hex capability field (`CapBnd:` …) of a /proc/PID/status text.
fn cap_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in\n{status}"));
    u64::from_str_radix(line.trim(), 16).unwrap_or_else(|e| panic!("{field}: {line:?}: {e}"))
}

/// The bounding set of this (the test's) process: a launcher cannot give the
/// container a capability it does not hold itself, so every expectation is
/// intersected with it.
fn host_bounding_set() -> u64 {
    cap_field(
        &std::fs::read_to_string("/proc/self/status").unwrap(),
        "CapBnd",
    )
}

/// Runs `netspawn -q -D IMG FLAGS… /bin/cat /proc/1/status` and returns the
/// container's PID 1 status text.
fn pid1_status(env: &TestEnv, img: &str, flags: &[&str]) -> String {
    let mut args = vec!["-q", "-D", img];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["/bin/cat", "/proc/1/status"]);
    let r = env.netspawn(&args);
    r.expect_status(0);
    r.stdout.clone()
}

fn names_of(set: u64) -> Vec<u32> {
    (0..64).filter(|b| set & (1u64 << b) != 0).collect()
}

#[test]
fn default_bounding_set_is_nspawns() {
    let env = TestEnv::new();
    let img = env.busybox("caps");
    let d = img.to_str().unwrap();
    let host = host_bounding_set();
    assert_eq!(NSPAWN_DEFAULT.len(), 26);
    let default = mask(NSPAWN_DEFAULT);

    let st = pid1_status(&env, d, &[]);
    let bnd = cap_field(&st, "CapBnd");
    assert_eq!(
        bnd,
        default & host,
        "CapBnd {bnd:#x}: extra {:?}, missing {:?}",
        names_of(bnd & !default),
        names_of(default & host & !bnd)
    );
    // Root's effective set after exec is its bounding set: the drop is real,
    // not only a bounding-set entry.
    assert_eq!(cap_field(&st, "CapEff"), bnd, "{st}");
    for absent in [
        "CAP_NET_ADMIN",
        "CAP_SYS_MODULE",
        "CAP_SYS_TIME",
        "CAP_SYS_RAWIO",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYSLOG",
        "CAP_IPC_LOCK",
    ] {
        assert_eq!(
            bnd & mask(&[absent]),
            0,
            "{absent} must not be in the default set: {bnd:#x}"
        );
    }

    // A private network namespace adds CAP_NET_ADMIN, and only that.
    let st = pid1_status(&env, d, &["--private-network"]);
    assert_eq!(
        cap_field(&st, "CapBnd"),
        (default | mask(&["CAP_NET_ADMIN"])) & host
    );

    // Additions and removals, with the comma list systemd accepts.
    let st = pid1_status(
        &env,
        d,
        &[
            "--capability=CAP_NET_ADMIN,CAP_SYS_TIME",
            "--drop-capability=CAP_SYS_ADMIN",
        ],
    );
    assert_eq!(
        cap_field(&st, "CapBnd"),
        (default | mask(&["CAP_NET_ADMIN", "CAP_SYS_TIME"])) & !mask(&["CAP_SYS_ADMIN"]) & host
    );

    // "all": everything the launcher holds; dropping "all" leaves nothing.
    let st = pid1_status(&env, d, &["--capability=all"]);
    assert_eq!(cap_field(&st, "CapBnd"), host);
    let st = pid1_status(&env, d, &["--drop-capability=all"]);
    assert_eq!(cap_field(&st, "CapBnd"), 0);
    assert_eq!(cap_field(&st, "CapEff"), 0);
}

#[test]
fn capabilities_have_their_effect_inside() {
    let env = TestEnv::new();
    let img = env.busybox("capfx");
    let d = img.to_str().unwrap();
    // CAP_SYS_ADMIN (default) lets PID 1 mount; dropping it refuses the mount.
    let mount = "mkdir -p /tmp/m; if mount -t tmpfs x /tmp/m 2>/dev/null; then echo mount-ok; else echo mount-refused; fi";
    let r = env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", mount]);
    r.expect_status(0);
    assert_eq!(r.stdout, "mount-ok\n");
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "--drop-capability=CAP_SYS_ADMIN",
        "/bin/sh",
        "-c",
        mount,
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "mount-refused\n");

    // CAP_NET_ADMIN: changing lo's MTU. Refused on the (test's private) host
    // network by default; allowed with a private network or when granted.
    let mtu = "if ip link set lo mtu 1234 2>/dev/null; then echo netadmin-ok; else echo netadmin-refused; fi";
    let r = env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", mtu]);
    assert_eq!(r.stdout, "netadmin-refused\n", "{}", r.stderr);
    let r = env.netspawn(&["-q", "-D", d, "--private-network", "/bin/sh", "-c", mtu]);
    assert_eq!(r.stdout, "netadmin-ok\n", "{}", r.stderr);
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "--capability=CAP_NET_ADMIN",
        "/bin/sh",
        "-c",
        mtu,
    ]);
    assert_eq!(r.stdout, "netadmin-ok\n", "{}", r.stderr);
}

/// A static probe: calls each system call through syscall(2) with arguments
/// that make it fail harmlessly (or succeed read-only) when it is allowed,
/// and prints `name errno` (0 on success).
const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/utsname.h>
#include <unistd.h>

static void report(const char *name, long r) { printf("%s %d\n", name, r < 0 ? errno : 0); }

int main(void) {
    struct utsname u;
    struct timex tx;
    memset(&tx, 0, sizeof tx); /* modes = 0: reads the clock state, changes nothing */
    errno = 0; report("getpid", syscall(SYS_getpid));
    errno = 0; report("uname", syscall(SYS_uname, &u));
    errno = 0; report("adjtimex", syscall(SYS_adjtimex, &tx));
    errno = 0; report("add_key", syscall(SYS_add_key, NULL, NULL, NULL, 0, 0));
    errno = 0; report("keyctl", syscall(SYS_keyctl, 99999, 0, 0, 0, 0));
    errno = 0; report("request_key", syscall(SYS_request_key, NULL, NULL, NULL, 0));
    errno = 0; report("bpf", syscall(SYS_bpf, -1, NULL, 0));
    errno = 0; report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    /* 1000 segments is over KEXEC_SEGMENT_MAX: EINVAL, never an (un)load. */
    errno = 0; report("kexec_load", syscall(SYS_kexec_load, 0, 1000, NULL, 0));
    errno = 0; report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    errno = 0; report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    errno = 0; report("delete_module", syscall(SYS_delete_module, "netspawn_no_such_module", O_NONBLOCK));
    return 0;
}
"#;

const REFUSED_BY_DEFAULT: &[&str] = &[
    "add_key",
    "keyctl",
    "request_key",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "adjtimex",
];

fn parse_probe(out: &str) -> HashMap<String, i32> {
    let m: HashMap<String, i32> = out
        .lines()
        .filter_map(|l| {
            let (n, e) = l.split_once(' ')?;
            Some((n.to_string(), e.trim().parse().ok()?))
        })
        .collect();
    assert_eq!(m.len(), 12, "probe output incomplete:\n{out}");
    m
}

/// Compiles the probe, checks that none of its calls fails with EPERM on the
/// host (so an EPERM inside comes from the container's restrictions), and
/// installs it in the image as /usr/local/bin/probe.
fn install_probe(env: &TestEnv, img: &std::path::Path) {
    let probe = compile_static_c(env, "probe", PROBE);
    let out = std::process::Command::new("timeout")
        .arg("30")
        .arg(&probe)
        .output()
        .unwrap();
    let host = parse_probe(&String::from_utf8_lossy(&out.stdout));
    for (name, errno) in &host {
        assert_ne!(*errno, libc::EPERM, "{name} fails with EPERM on the host already; this test cannot tell the filter's EPERM apart");
    }
    std::fs::create_dir_all(img.join("usr/local/bin")).unwrap();
    std::fs::copy(&probe, img.join("usr/local/bin/probe")).unwrap();
}

fn run_probe(env: &TestEnv, img: &str, flags: &[&str]) -> HashMap<String, i32> {
    let mut args = vec!["-q", "-D", img];
    args.extend_from_slice(flags);
    args.push("probe");
    let r = env.netspawn(&args);
    r.expect_status(0);
    parse_probe(&r.stdout)
}

#[track_caller]
fn assert_refused(m: &HashMap<String, i32>, names: &[&str]) {
    for n in names {
        assert_eq!(m[*n], libc::EPERM, "{n} should fail with EPERM: {m:?}");
    }
}

#[track_caller]
fn assert_passed(m: &HashMap<String, i32>, names: &[&str]) {
    for n in names {
        assert_ne!(m[*n], libc::EPERM, "{n} should pass the filter: {m:?}");
    }
}

#[test]
fn default_filter_refuses_keyring_bpf_perf_kexec_modules() {
    let env = TestEnv::new();
    let img = env.busybox("filter");
    install_probe(&env, &img);
    let d = img.to_str().unwrap();

    let m = run_probe(&env, d, &[]);
    assert_refused(&m, REFUSED_BY_DEFAULT);
    assert_eq!(m["getpid"], 0, "{m:?}");
    assert_eq!(m["uname"], 0, "{m:?}");

    // The filter is a real seccomp filter, and no_new_privs stays off so
    // setuid programs in the guest keep working.
    let st = pid1_status(&env, d, &[]);
    assert!(
        st.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]),
        "{st}"
    );
    assert!(
        st.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "0"]),
        "{st}"
    );
}

#[test]
fn filter_follows_the_kept_capabilities() {
    let env = TestEnv::new();
    let img = env.busybox("capfilter");
    install_probe(&env, &img);
    let d = img.to_str().unwrap();
    // CAP_SYS_TIME brings @clock (adjtimex) with it.
    let m = run_probe(&env, d, &["--capability=CAP_SYS_TIME"]);
    assert_passed(&m, &["adjtimex"]);
    assert_refused(&m, &["add_key", "init_module", "kexec_load"]);
    // All capabilities bring @module too; keyring, bpf, perf_event_open and
    // kexec stay refused whatever the capabilities, as in systemd-nspawn.
    let m = run_probe(&env, d, &["--capability=all"]);
    assert_passed(
        &m,
        &[
            "adjtimex",
            "init_module",
            "finit_module",
            "delete_module",
            "getpid",
            "uname",
        ],
    );
    assert_refused(
        &m,
        &[
            "add_key",
            "keyctl",
            "request_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
        ],
    );
}

#[test]
fn system_call_filter_adds_and_removes() {
    let env = TestEnv::new();
    let img = env.busybox("scf");
    install_probe(&env, &img);
    let d = img.to_str().unwrap();

    // The Docker-in-a-container recipe: allow the keyring calls.
    let m = run_probe(&env, d, &["--system-call-filter=add_key keyctl"]);
    assert_passed(&m, &["add_key", "keyctl"]);
    assert_refused(&m, &["request_key", "bpf", "kexec_load", "init_module"]);
    assert_eq!(m["uname"], 0);

    // `~name` refuses a call the default allows; other calls are untouched.
    let m = run_probe(&env, d, &["--system-call-filter=~uname"]);
    assert_refused(&m, &["uname"]);
    assert_eq!(m["getpid"], 0);

    // Groups work both ways, and several flags accumulate.
    let m = run_probe(
        &env,
        d,
        &[
            "--system-call-filter=@keyring",
            "--system-call-filter=~keyctl uname",
        ],
    );
    assert_passed(&m, &["add_key", "request_key"]);
    assert_refused(&m, &["keyctl", "uname", "bpf"]);

    // A deny wins over an allow of the same call.
    let m = run_probe(
        &env,
        d,
        &[
            "--system-call-filter=add_key",
            "--system-call-filter=~add_key",
        ],
    );
    assert_refused(&m, &["add_key"]);
}

#[test]
fn unknown_system_call_names_and_groups_are_refused_up_front() {
    let env = TestEnv::new();
    let img = env.busybox("scfbad");
    let d = img.to_str().unwrap();
    env.netspawn(&[
        "-D",
        d,
        "--system-call-filter=add_key no_such_call",
        "/bin/true",
    ])
    .expect_error("no_such_call");
    env.netspawn(&["-D", d, "--system-call-filter=~no_such_call", "/bin/true"])
        .expect_error("no_such_call");
    env.netspawn(&["-D", d, "--system-call-filter=@no-such-group", "/bin/true"])
        .expect_error("@no-such-group");
    env.netspawn(&["-D", d, "--capability=CAP_NO_SUCH", "/bin/true"])
        .expect_error("CAP_NO_SUCH");
    env.netspawn(&["-D", d, "--drop-capability=nope", "/bin/true"])
        .expect_error("nope");
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

/// i386 system calls entered with `int $0x80` from a 64-bit program: the
/// filter must cover the compat ABI too, or it could be walked around.
#[cfg(target_arch = "x86_64")]
const INT80_PROBE: &str = r#"
#include <stdio.h>
static long sys32(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}
int main(void) {
    /* i386 numbers: getpid 20, add_key 286, keyctl 288, init_module 128. */
    printf("getpid %ld\n", sys32(20, 0, 0, 0));
    printf("add_key %ld\n", sys32(286, 0, 0, 0));
    printf("keyctl %ld\n", sys32(288, 99999, 0, 0));
    printf("init_module %ld\n", sys32(128, 0, 0, 0));
    return 0;
}
"#;

#[cfg(target_arch = "x86_64")]
#[test]
fn filter_covers_the_32_bit_abi() {
    let env = TestEnv::new();
    let img = env.busybox("compat");
    let probe = compile_static_c(&env, "int80", INT80_PROBE);
    let parse = |out: &str| -> HashMap<String, i64> {
        out.lines()
            .filter_map(|l| {
                let (n, v) = l.split_once(' ')?;
                Some((n.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    };
    let out = std::process::Command::new("timeout")
        .arg("30")
        .arg(&probe)
        .output()
        .unwrap();
    let host = parse(&String::from_utf8_lossy(&out.stdout));
    if host.get("getpid").is_none_or(|v| *v <= 0) {
        eprintln!(
            "SKIPPED: this kernel has no 32-bit syscall entry (ia32 emulation off): {host:?}"
        );
        return;
    }
    for n in ["add_key", "keyctl", "init_module"] {
        assert_ne!(
            host[n],
            -(libc::EPERM as i64),
            "{n} gives EPERM on the host already: {host:?}"
        );
    }
    std::fs::create_dir_all(img.join("usr/local/bin")).unwrap();
    std::fs::copy(&probe, img.join("usr/local/bin/int80")).unwrap();
    let r = env.netspawn(&["-q", "-D", img.to_str().unwrap(), "int80"]);
    r.expect_status(0);
    let inside = parse(&r.stdout);
    assert_eq!(inside.get("getpid"), Some(&1), "{inside:?}");
    for n in ["add_key", "keyctl", "init_module"] {
        assert_eq!(
            inside.get(n),
            Some(&-(libc::EPERM as i64)),
            "{n} through int 0x80: {inside:?}"
        );
    }
}

/// Commands are looked up inside the image with openat2(RESOLVE_IN_ROOT), so
/// that a symlink cannot lead out of it. The kernel answers EAGAIN to such a
/// lookup when any mount or rename happens on the machine during a walk
/// through `..` (busybox images are full of `../bin/busybox` links), and
/// asks the caller to retry; parallel launches mount a lot.
#[test]
fn command_lookup_survives_parallel_launches() {
    let env = TestEnv::new();
    let images: Vec<_> = (0..8).map(|t| env.busybox(&format!("par{t}"))).collect();
    let env = &env;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|img| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for _ in 0..20 {
                        let r = env.netspawn(&[
                            "-q",
                            "-D",
                            img.to_str().unwrap(),
                            "/bin/cat",
                            "/proc/1/comm",
                        ]);
                        if r.status != Some(0) || r.stdout != "cat\n" {
                            bad.push(format!("{:?}: {}", r.status, r.stderr.trim()));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 160 launches failed: {failures:#?}",
        failures.len()
    );
}

/// A guest's own device program, attached in a cgroup below the machine's
/// (what a booted guest's systemd or Docker in the guest does): it loads,
/// attaches with BPF_F_ALLOW_MULTI, allows everything, and moves itself
/// below it; our policy above still refuses a block device it made.
const NESTED_BPF: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static long bpf(int cmd, void *attr, unsigned size) { return syscall(__NR_bpf, cmd, attr, size); }

int main(void) {
    /* r0 = 1 (allow); exit */
    uint64_t insns[2] = { 0x00000001000000b7ULL, 0x0000000000000095ULL };
    const char *license = "GPL";
    unsigned char attr[128];
    mkdir("/sys/fs/cgroup/guest", 0755);
    int cg = open("/sys/fs/cgroup/guest", O_RDONLY | O_DIRECTORY);
    printf("cgroup %d\n", cg < 0 ? errno : 0);
    memset(attr, 0, sizeof attr);
    uint32_t type = 15, cnt = 2; /* BPF_PROG_TYPE_CGROUP_DEVICE */
    uint64_t p = (uintptr_t)insns, l = (uintptr_t)license;
    memcpy(attr, &type, 4); memcpy(attr + 4, &cnt, 4); memcpy(attr + 8, &p, 8); memcpy(attr + 16, &l, 8);
    long prog = bpf(5, attr, sizeof attr); /* BPF_PROG_LOAD */
    printf("load %d\n", prog < 0 ? errno : 0);
    memset(attr, 0, sizeof attr);
    uint32_t tfd = cg, pfd = prog, atype = 6, flags = 2; /* BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI */
    memcpy(attr, &tfd, 4); memcpy(attr + 4, &pfd, 4); memcpy(attr + 8, &atype, 4); memcpy(attr + 12, &flags, 4);
    printf("attach %d\n", bpf(8, attr, sizeof attr) < 0 ? errno : 0); /* BPF_PROG_ATTACH */
    int procs = open("/sys/fs/cgroup/guest/cgroup.procs", O_WRONLY);
    printf("move %d\n", procs < 0 || write(procs, "0", 1) != 1 ? errno : 0);
    mkdir("/tmp/own", 0755);
    printf("mount %d\n", mount("own", "/tmp/own", "tmpfs", 0, NULL) < 0 ? errno : 0);
    printf("mknod %d\n", mknod("/tmp/own/vda", S_IFBLK | 0600, makedev(253, 0)) < 0 ? errno : 0);
    int fd = open("/tmp/own/vda", O_RDONLY);
    printf("open %d\n", fd < 0 ? errno : 0);
    return 0;
}
"#;

#[test]
fn a_guest_attaches_its_own_device_program_below_ours() {
    let env = TestEnv::new();
    let img = env.busybox("nestbpf");
    let helper = compile_static_c(&env, "nestbpf", NESTED_BPF);
    std::fs::copy(&helper, img.join("bin/nestbpf")).unwrap();
    let r = env.netspawn(&[
        "-q",
        "--private-network",
        "--system-call-filter=bpf",
        "-D",
        img.to_str().unwrap(),
        "/bin/nestbpf",
    ]);
    r.expect_status(0);
    let got: HashMap<&str, i32> = r
        .stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let out = format!("{}\n{}", r.stdout, r.stderr);
    for step in ["cgroup", "load", "attach", "move", "mount"] {
        assert_eq!(got.get(step), Some(&0), "{step} failed:\n{out}");
    }
    // The guest's program allows everything; ours, above it, still decides:
    // the kernel asks the device programs at mknod (and, had that passed,
    // at open).
    let refused = match got.get("mknod") {
        Some(&0) => got.get("open") == Some(&libc::EPERM),
        other => other == Some(&libc::EPERM),
    };
    assert!(refused, "the block device was not refused:\n{out}");
    // The guest's cgroup goes with the machine's.
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

/// `/dev/net/tun` is there and may be opened, as systemd-nspawn provides it
/// (node and device policy; creating a tun link with it still needs
/// CAP_NET_ADMIN, i.e. a private network).
#[test]
fn dev_net_tun_is_available() {
    if std::fs::metadata("/dev/net/tun").is_err() {
        skip(
            "dev_net_tun_is_available",
            "the host has no /dev/net/tun (tun module not loaded)",
        );
        return;
    }
    let env = TestEnv::new();
    let img = env.busybox("tun");
    let r = env.netspawn(&[
        "-q",
        "--private-network",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "stat -c '%F %t:%T' /dev/net/tun; exec 3<>/dev/net/tun && echo opened",
    ]);
    r.expect_status(0);
    assert_eq!(
        r.stdout, "character special file a:c8\nopened\n",
        "{}",
        r.stderr
    );
}
