//! Hardening (issue 9): an image cannot make netspawn act outside it. Every
//! path inside the image (bind and tmpfs destinations, /run, the resolv.conf
//! it is given) is resolved inside the root, as systemd's chase() does: a
//! symlink that points out of the image resolves inside it, `..` never
//! climbs above it, and nothing is created or mounted on the host. And with
//! a user namespace (`-U`) root inside cannot reach the host: the escape
//! list of item 3 is refused.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use netspawn_tests::*;

/// A directory on the host that the image's symlinks point at.
fn host_dir(env: &TestEnv, name: &str) -> PathBuf {
    let d = env.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
}

#[test]
fn bind_and_tmpfs_destinations_never_follow_symlinks_out_of_the_image() {
    let env = TestEnv::new();
    let img = env.busybox("escape");
    let host = host_dir(&env, "hostdir");
    let hrun = host_dir(&env, "hostrun");
    let src = host_dir(&env, "src");
    std::fs::write(src.join("marker"), "from-src\n").unwrap();
    std::fs::create_dir_all(img.join("mnt")).unwrap();
    symlink(&host, img.join("mnt/x")).unwrap();
    // Textually, <root>/mnt/../../.. is two levels above the image: the test's own directory.
    symlink("../../..", img.join("mnt/up")).unwrap();
    let _ = std::fs::remove_dir(img.join("run"));
    let _ = std::fs::remove_file(img.join("run"));
    symlink(&hrun, img.join("run")).unwrap();
    // Inside the container the absolute link targets are paths of the container.
    std::fs::write(
        img.join("check.sh"),
        format!(
            r#"m() {{ grep -c " $1 " /proc/self/mountinfo; }}
echo foo=$(cat /mnt/x/foo/marker)
echo foo-mount=$(m {host}/foo)
echo tt-mount=$(m {host}/tt)
echo tt=$(stat -f -c %T /mnt/x/tt)
echo deep=$(cat /deep/er/marker)
echo deep-mount=$(m /deep/er)
echo up=$(cat /mnt/up/deep/er/marker)
echo ro-mount=$(m {host}/ro/deeper)
touch /mnt/x/ro/deeper/w 2>/dev/null && echo ro=writable || echo ro=read-only
echo run-mount=$(m {hrun})
echo manager=$(cat /run/host/container-manager)
"#,
            host = host.display(),
            hrun = hrun.display()
        ),
    )
    .unwrap();
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -D {img} --bind={src}:/mnt/x/foo --tmpfs=/mnt/x/tt \
                 --bind={src}:/mnt/up/deep/er --bind-ro={src}:/mnt/x/ro/deeper /bin/sh /check.sh
               echo rc=$?
               echo host-mounts=$(grep -c -e " {host}" -e " {hrun}" -e " {dir}/deep" /proc/self/mountinfo)"#,
            img = img.display(),
            src = src.display(),
            host = host.display(),
            hrun = hrun.display(),
            dir = env.dir.display(),
        ),
        60,
    );
    let out = &r.stdout;
    let ctx = format!("stdout:\n{out}\nstderr:\n{}", r.stderr);
    // Nothing was made or mounted on the host.
    assert_eq!(entries(&host), Vec::<String>::new(), "{ctx}");
    assert_eq!(entries(&hrun), Vec::<String>::new(), "{ctx}");
    assert!(!env.dir.join("deep").exists(), "{ctx}");
    assert_eq!(field(out, "host-mounts"), "0", "{ctx}");
    assert_eq!(entries(&src), vec!["marker".to_string()], "{ctx}");
    assert_eq!(field(out, "rc"), "0", "{ctx}");
    // Inside, each mount is where the in-root resolution puts it.
    assert_eq!(field(out, "foo"), "from-src", "{ctx}");
    assert_eq!(field(out, "foo-mount"), "1", "{ctx}");
    assert_eq!(field(out, "tt-mount"), "1", "{ctx}");
    assert_eq!(field(out, "tt"), "tmpfs", "{ctx}");
    assert_eq!(field(out, "deep"), "from-src", "{ctx}");
    assert_eq!(field(out, "deep-mount"), "1", "{ctx}");
    assert_eq!(field(out, "up"), "from-src", "{ctx}");
    assert_eq!(field(out, "ro-mount"), "1", "{ctx}");
    assert_eq!(field(out, "ro"), "read-only", "{ctx}");
    assert_eq!(field(out, "run-mount"), "1", "{ctx}");
    assert_eq!(field(out, "manager"), "netspawn", "{ctx}");
}

#[test]
fn the_leased_resolv_conf_is_bound_inside_the_image() {
    let env = TestEnv::new();
    let img = env.busybox("resolv");
    let host = host_dir(&env, "hostdir");
    std::fs::create_dir_all(img.join("mnt")).unwrap();
    symlink(&host, img.join("mnt/x")).unwrap();
    let _ = std::fs::remove_file(img.join("etc/resolv.conf"));
    symlink("/mnt/x/resolv.conf", img.join("etc/resolv.conf")).unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -n -D {img} /bin/sh -c 'echo ns=$(grep -c ^nameserver /etc/resolv.conf); echo mount=$(grep -c " {host}/resolv.conf " /proc/self/mountinfo)'
               echo rc=$?"#,
            img = img.display(),
            host = host.display(),
        ),
        60,
    );
    let out = &r.stdout;
    let ctx = format!("stdout:\n{out}\nstderr:\n{}", r.stderr);
    assert_eq!(entries(&host), Vec::<String>::new(), "{ctx}");
    assert_eq!(field(out, "rc"), "0", "{ctx}");
    assert_ne!(field(out, "ns"), "0", "{ctx}");
    assert_eq!(field(out, "mount"), "1", "{ctx}");
}

#[test]
fn a_fifo_in_the_image_does_not_hang_the_launch() {
    let env = TestEnv::new();
    let img = env.busybox("fifo");
    let id = img.join("etc/machine-id");
    let _ = std::fs::remove_file(&id);
    let c = std::ffi::CString::new(id.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let started = std::time::Instant::now();
    let r = env.sh(
        &format!(
            "timeout 20 $NETSPAWN -q -D {} /bin/true; echo rc=$?",
            img.display()
        ),
        60,
    );
    assert_eq!(field(&r.stdout, "rc"), "0", "{}\n{}", r.stdout, r.stderr);
    assert!(started.elapsed().as_secs() < 15, "{:?}", started.elapsed());
}

#[test]
fn an_in_image_bind_source_is_resolved_inside_the_image() {
    let env = TestEnv::new();
    let img = env.busybox("source");
    let secret = host_dir(&env, "secret");
    std::fs::write(secret.join("marker"), "host\n").unwrap();
    std::fs::create_dir_all(img.join("secret")).unwrap();
    std::fs::write(img.join("secret/marker"), "image\n").unwrap();
    std::fs::create_dir_all(img.join("mnt")).unwrap();
    // Textually <root>/mnt/../../../secret is the host's; inside, the image's /secret.
    symlink("../../../secret", img.join("mnt/s")).unwrap();
    symlink(&secret, img.join("mnt/abs")).unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "--bind=+/mnt/s:/exposed",
        "/bin/cat",
        "/exposed/marker",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "image\n");
    // An absolute link to a host path names a path of the image, which it lacks.
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "--bind=+/mnt/abs:/exposed",
        "/bin/cat",
        "/exposed/marker",
    ]);
    assert_ne!(r.stdout, "host\n", "{r:?}");
    r.expect_error("does not exist");
}

/// Loads and unloads a module the way an escape would: EPERM is refused,
/// and so is ENOSYS (a kernel built without modules, like the test
/// machine's); anything else (EBADF, ENOENT: the capability check
/// passed) is not.
const MODULE_PROBE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(SYS_finit_module, -1, "", 0);
    printf("finit_module:%s\n", r < 0 && (errno == EPERM || errno == ENOSYS) ? "refused" : "ESCAPED");
    r = syscall(SYS_init_module, (void *)0, 0UL, "");
    printf("init_module:%s\n", r < 0 && (errno == EPERM || errno == ENOSYS) ? "refused" : "ESCAPED");
    r = syscall(SYS_delete_module, "netspawn_no_such_module", 04000);
    printf("delete_module:%s\n", r < 0 && (errno == EPERM || errno == ENOSYS) ? "refused" : "ESCAPED");
    return 0;
}
"#;

/// Issue 9 item 3: in a container with a user namespace, root's
/// capabilities act on the container's own namespaces only. Every escape
/// that works without one (see the README) is refused, even with every
/// capability in the bounding set and the module calls let through the
/// filter; each write puts back what was there, so a failure changes
/// nothing on the host.
#[test]
fn the_escape_list_is_refused_in_a_user_namespace() {
    let env = TestEnv::new();
    let img = env.busybox("uescape");
    let probe = compile_static_c(&env, "modprobe-escape", MODULE_PROBE);
    std::fs::copy(&probe, img.join("bin/modprobe-escape")).unwrap();
    // The host's root file system's device, bound in for the container to try.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let disk = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|l| l.split(' ').nth(1))
        .filter(|d| d.starts_with("/dev/"))
        .map(str::to_string);
    let disk_bind = disk
        .as_ref()
        .map(|d| format!("--bind-ro={d}:/dev/hostdisk"))
        .unwrap_or_else(|| "--setenv=NO_DISK=1".into());
    let script = r#"
        mkdir -p /x /cg
        try() { n=$1; shift; if ( "$@" ) >/dev/null 2>&1; then echo "$n:ESCAPED"; else echo "$n:refused"; fi; }
        cp=$(cat /proc/sys/kernel/core_pattern)
        try proc-core_pattern sh -c 'mount -t proc proc /x && echo "$0" > /x/sys/kernel/core_pattern' "$cp"
        umount /x 2>/dev/null
        try remount-proc-sys sh -c 'mount -o remount,rw /proc/sys && echo "$0" > /proc/sys/kernel/core_pattern' "$cp"
        try cgroup-release_agent sh -c 'mount -t cgroup -o cpu cpu /cg && ra=$(cat /cg/release_agent) && echo "$ra" > /cg/release_agent'
        umount /cg 2>/dev/null
        try host-network ip addr add 198.51.100.77/32 dev lo
        try host-sysfs mount -t sysfs sysfs /x
        umount /x 2>/dev/null
        if [ -e /dev/hostdisk ]; then try host-disk mount -o ro /dev/hostdisk /x; umount /x 2>/dev/null; fi
        try mknod-block mknod /tmp/blk b 7 0
        /bin/modprobe-escape
    "#;
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -U --capability=all --system-call-filter='init_module finit_module delete_module' {disk_bind} -D {img} /bin/sh -c '{script}'
               echo host-lo:$(ip -4 -o addr show dev lo | grep -c 198.51.100.77)"#,
            img = img.display(),
            script = script.replace('\'', r"'\''"),
        ),
        60,
    );
    r.expect_status(0);
    let out = &r.stdout;
    let mut want = vec![
        "proc-core_pattern:refused",
        "remount-proc-sys:refused",
        "cgroup-release_agent:refused",
        "host-network:refused",
        "host-sysfs:refused",
    ];
    if disk.is_some() {
        want.push("host-disk:refused");
    }
    want.extend_from_slice(&[
        "mknod-block:refused",
        "finit_module:refused",
        "init_module:refused",
        "delete_module:refused",
        "host-lo:0",
    ]);
    let got: Vec<&str> = out.lines().filter(|l| l.contains(':')).collect();
    assert_eq!(got, want, "{out}\n{}", r.stderr);
}
