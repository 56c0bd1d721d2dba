//! The module under real glibc: `getent` runs inside `unshare -m` with a
//! private `/etc/nsswitch.conf` (`hosts: mymachines files`) and `/etc/hosts`
//! bind-mounted over the real ones, finds `libnss_mymachines.so.2` through
//! `LD_LIBRARY_PATH` (glibc's dlopen of NSS modules honours it for a program
//! that is not setuid), and reads a registry in a temp dir named by
//! `NETSPAWN_RUN_DIR`. Nothing outside the temp dir and the private mount
//! namespace changes.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{built_module, is_root, Registry, TempDir};

/// Mounts the private files, then runs the given command.
const SCRIPT: &str = r#"set -e
mount --bind "$NSS_TEST_CONF" /etc/nsswitch.conf
mount --bind "$NSS_TEST_HOSTS" /etc/hosts
exec "$@""#;

struct Fixture {
    dir: TempDir,
    reg: Registry,
}

impl Fixture {
    /// None (after saying why) when the test cannot run here.
    fn new(tag: &str) -> Option<Fixture> {
        if !is_root() {
            eprintln!("SKIPPED: nss-mymachines getent tests need root for unshare -m");
            return None;
        }
        let dir = TempDir::new(tag);
        let lib = dir.0.join("lib");
        fs::create_dir_all(&lib).expect("lib dir");
        fs::copy(built_module(), lib.join("libnss_mymachines.so.2")).expect("copy module");
        fs::write(
            dir.0.join("nsswitch.conf"),
            "hosts: mymachines files\npasswd: files mymachines\ngroup: files mymachines\n",
        )
        .expect("conf");
        fs::write(
            dir.0.join("hosts"),
            "127.0.0.1 localhost\n192.0.2.55 onlyinhosts\n",
        )
        .expect("hosts");
        let reg = Registry::new(&dir.0);
        Some(Fixture { dir, reg })
    }

    fn run(&self, wrapper: &[&str], args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["30", "unshare", "-m", "sh", "-c", SCRIPT, "sh"])
            .args(wrapper)
            .arg("getent")
            .args(args)
            .env("NSS_TEST_CONF", self.dir.0.join("nsswitch.conf"))
            .env("NSS_TEST_HOSTS", self.dir.0.join("hosts"))
            .env("NETSPAWN_RUN_DIR", &self.reg.run_dir)
            .env("LD_LIBRARY_PATH", self.dir.0.join("lib"))
            .output()
            .expect("run unshare")
    }

    /// Runs `getent ARGS`; returns (exit code, stdout). A crash has no code.
    fn getent(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.run(&[], args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("mount:"),
            "private mounts failed: {stderr}"
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `getent ARGS` must succeed; returns stdout.
    fn found(&self, args: &[&str]) -> String {
        let (code, out) = self.getent(args);
        assert_eq!(code, Some(0), "getent {args:?} failed: {out}");
        out
    }

    /// `getent ARGS` must report "not found" (exit 2) without crashing.
    fn absent(&self, args: &[&str]) {
        let (code, out) = self.getent(args);
        assert_eq!(code, Some(2), "getent {args:?} should find nothing: {out}");
    }
}

/// The addresses in `getent ahosts*` output, in order, without repeats.
fn ahosts_addresses(out: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for line in out.lines() {
        if let Some(a) = line.split_whitespace().next() {
            if !v.iter().any(|x| x == a) {
                v.push(a.to_string());
            }
        }
    }
    v
}

#[test]
fn forward_lookups_give_the_machines_addresses() {
    let Some(f) = Fixture::new("fwd") else { return };
    f.reg
        .add("web", "10.0.0.2 fd00::2 fe80::1 169.254.7.7 127.0.0.1 ::1");
    f.reg.add("v4only", "10.0.0.5");

    // getent hosts asks gethostbyname2(AF_INET6) first, then AF_INET.
    assert_eq!(
        f.found(&["hosts", "web"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["fd00::2", "web"]
    );
    assert_eq!(
        f.found(&["hosts", "v4only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["10.0.0.5", "v4only"]
    );

    let mut all = ahosts_addresses(&f.found(&["ahosts", "web"]));
    all.sort();
    assert_eq!(all, ["10.0.0.2", "fd00::2"]);
    assert!(f.found(&["ahosts", "web"]).contains("STREAM web"));
    assert_eq!(
        ahosts_addresses(&f.found(&["ahostsv4", "web"])),
        ["10.0.0.2"]
    );
    assert_eq!(
        ahosts_addresses(&f.found(&["ahostsv6", "web"])),
        ["fd00::2"]
    );
    // No IPv6 at all: ahostsv6 (AI_V4MAPPED) maps the IPv4 address.
    assert_eq!(
        ahosts_addresses(&f.found(&["ahostsv6", "v4only"])),
        ["::ffff:10.0.0.5"]
    );
}

#[test]
fn reverse_lookup_gives_the_machine_name() {
    let Some(f) = Fixture::new("rev") else { return };
    f.reg.add("web", "10.0.0.2 fd00::2 fe80::1");
    f.reg.add("db", "10.0.0.3");
    let words = |s: String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(words(f.found(&["hosts", "10.0.0.2"])), ["10.0.0.2", "web"]);
    assert_eq!(words(f.found(&["hosts", "fd00::2"])), ["fd00::2", "web"]);
    assert_eq!(words(f.found(&["hosts", "10.0.0.3"])), ["10.0.0.3", "db"]);
    // Link-local addresses are never answered; unknown ones fall through to files.
    f.absent(&["hosts", "fe80::1"]);
    f.absent(&["hosts", "10.9.9.9"]);
    assert_eq!(
        words(f.found(&["hosts", "192.0.2.55"])),
        ["192.0.2.55", "onlyinhosts"]
    );
}

#[test]
fn unknown_names_fall_through_to_the_next_source() {
    let Some(f) = Fixture::new("fall") else {
        return;
    };
    f.reg.add("web", "10.0.0.2");
    assert_eq!(
        f.found(&["hosts", "onlyinhosts"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["192.0.2.55", "onlyinhosts"]
    );
    assert_eq!(
        ahosts_addresses(&f.found(&["ahostsv4", "onlyinhosts"])),
        ["192.0.2.55"]
    );
    f.absent(&["hosts", "nosuchmachine"]);
    f.absent(&["ahosts", "nosuchmachine"]);
    // Names that are not machine names (and must not become paths).
    f.absent(&["hosts", "../machines/web"]);
    f.absent(&["ahosts", ".web"]);
}

#[test]
fn machines_without_addresses_or_launcher_are_absent() {
    let Some(f) = Fixture::new("gone") else {
        return;
    };
    f.reg.add("noaddr", "");
    f.reg.add("linklocal", "fe80::1 169.254.1.1");
    // A link left by a launcher that is gone (killed along with its keeper).
    let mut gone = Command::new("true").spawn().expect("true");
    let dead = gone.id();
    gone.wait().expect("wait");
    f.reg.link_raw("stale", format!("{dead} 10.0.0.4"));
    for name in ["noaddr", "linklocal", "stale"] {
        f.absent(&["hosts", name]);
        f.absent(&["ahosts", name]);
    }
    f.absent(&["hosts", "10.0.0.4"]);

    // A machine whose launcher exits disappears at once.
    let mut launcher = Command::new("sleep").arg("60").spawn().expect("sleep");
    f.reg.add_owned("short", "10.0.0.6", launcher.id());
    assert!(f.found(&["ahostsv4", "short"]).contains("10.0.0.6"));
    launcher.kill().expect("kill");
    launcher.wait().expect("wait");
    f.absent(&["ahostsv4", "short"]);
    f.absent(&["hosts", "10.0.0.6"]);
}

#[test]
fn hostile_hosts_links_read_as_absent() {
    let Some(f) = Fixture::new("hostile") else {
        return;
    };
    f.reg.add("good", "10.0.0.2");
    let pid = std::process::id();
    use std::os::unix::ffi::OsStrExt;
    f.reg.link_raw(
        "garbage",
        std::ffi::OsStr::from_bytes(&[0xff, b' ', b'=', b'\n', 0xfe, b'N', b'=']),
    );
    // The longest target the kernel allows, all digits: no address.
    f.reg.link_raw("huge", "1".repeat(4095));
    // Cut inside the address list, or inside the PID.
    f.reg.link_raw("trunc", format!("{pid} 10.0.0.7 10.0.0."));
    f.reg.link_raw("trunc2", format!("{}", pid / 10));
    f.reg.link_raw("spaces", format!("{pid}  10.0.0.8"));
    f.reg.link_raw("group", "-1 10.0.0.9");
    f.reg.link_raw("bad..name", format!("{pid} 10.0.0.9"));
    // A link to a link is not followed: its target is a path, not an answer.
    f.reg.link_raw("chain", f.reg.hosts.join("good"));
    fs::write(f.reg.hosts.join("file"), format!("{pid} 10.0.0.7")).expect("file");
    fs::create_dir(f.reg.hosts.join("adir")).expect("dir");
    let fifo = std::ffi::CString::new(
        f.reg
            .hosts
            .join("fifo")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("path");
    // SAFETY: fifo is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    for name in [
        "garbage",
        "huge",
        "trunc",
        "trunc2",
        "spaces",
        "group",
        "bad..name",
        "chain",
        "file",
        "adir",
        "fifo",
    ] {
        f.absent(&["hosts", name]);
        f.absent(&["ahosts", name]);
    }
    for addr in ["10.0.0.7", "10.0.0.8", "10.0.0.9"] {
        f.absent(&["hosts", addr]);
    }
    // The good machine is unaffected by its neighbours, forward and reverse.
    assert!(f.found(&["ahostsv4", "good"]).contains("10.0.0.2"));
    assert!(f.found(&["hosts", "10.0.0.2"]).contains("good"));
}

#[test]
fn valgrind_finds_no_errors() {
    let Some(f) = Fixture::new("valgrind") else {
        return;
    };
    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_valgrind {
        eprintln!("SKIPPED: valgrind is not installed (apt-get install -y valgrind)");
        return;
    }
    f.reg.add("web", "10.0.0.2 fd00::2 fe80::1");
    f.reg.add_userns("web", 524288, 65536, std::process::id());
    f.reg.add_userns("odd", 1000000, 100, std::process::id());
    let vg = ["valgrind", "--error-exitcode=99", "-q"];
    for args in [
        &["hosts", "web"][..],
        &["ahosts", "web"],
        &["ahostsv4", "web"],
        &["hosts", "10.0.0.2"],
        &["hosts", "nosuchmachine"],
        &["passwd", "vu-web-0"],
        &["passwd", "524293"],
        &["group", "vg-web-7"],
        &["group", "1000007"],
        &["passwd", "nosuchmachine"],
        &["passwd", "2000000000"],
    ] {
        let out = f.run(&vg, args);
        let code = out.status.code();
        assert!(
            code == Some(0)
                || (code == Some(2) && args[1].starts_with("nosuch"))
                || (code == Some(2) && args[1] == "2000000000"),
            "valgrind getent {args:?}: status {code:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code == Some(0) {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("web") || stdout.contains("odd"), "{stdout}");
        }
    }
}

/// A setuid program must not let its caller move the registry: the module
/// reads `NETSPAWN_RUN_DIR` with `secure_getenv`. glibc also ignores
/// `LD_LIBRARY_PATH` there, so this test puts the module into the multiarch
/// directory with a read-only overlay (private mount namespace only), puts a
/// private tmpfs on `/run` holding the default registry, and runs a setuid
/// copy of getent as `nobody`.
#[test]
fn setuid_programs_ignore_netspawn_run_dir() {
    let Some(f) = Fixture::new("suid") else {
        return;
    };
    let multiarch =
        std::path::PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH));
    if !multiarch.join("libnss_files.so.2").exists() {
        eprintln!(
            "SKIPPED: no glibc multiarch directory at {}",
            multiarch.display()
        );
        return;
    }
    // Only in NETSPAWN_RUN_DIR's registry:
    f.reg.add("relocated", "10.0.0.42");
    // In the default registry (copied to the private /run by the script):
    f.reg.add("default", "10.0.0.43");
    let script = r#"set -e
mount --bind "$NSS_TEST_CONF" /etc/nsswitch.conf
mount --bind "$NSS_TEST_HOSTS" /etc/hosts
mount -t overlay overlay -o "lowerdir=$NSS_TEST_LIB:$NSS_TEST_MULTIARCH" "$NSS_TEST_MULTIARCH"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netspawn/machines /run/netspawn/hosts
cp "$NETSPAWN_RUN_DIR/machines/default" /run/netspawn/machines/default
cp -P "$NETSPAWN_RUN_DIR/hosts/default" /run/netspawn/hosts/default
rm "$NETSPAWN_RUN_DIR/machines/default" "$NETSPAWN_RUN_DIR/hosts/default"
mount -t tmpfs -o suid,mode=755 tmpfs "$NSS_TEST_SUID"
cp "$(command -v getent)" "$NSS_TEST_SUID/getent"
chmod 4755 "$NSS_TEST_SUID/getent"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
for name in relocated default; do
  st=0; as_nobody getent hosts "$name" >/dev/null || st=$?
  echo "plain $name $st"
  st=0; as_nobody "$NSS_TEST_SUID/getent" hosts "$name" >/dev/null || st=$?
  echo "setuid $name $st"
done
"#;
    let suid_dir = f.dir.0.join("suid");
    fs::create_dir_all(&suid_dir).expect("suid dir");
    let out = Command::new("timeout")
        .args(["30", "unshare", "-m", "sh", "-c", script])
        .env("NSS_TEST_CONF", f.dir.0.join("nsswitch.conf"))
        .env("NSS_TEST_HOSTS", f.dir.0.join("hosts"))
        .env("NSS_TEST_LIB", f.dir.0.join("lib"))
        .env("NSS_TEST_MULTIARCH", &multiarch)
        .env("NSS_TEST_SUID", &suid_dir)
        .env("NETSPAWN_RUN_DIR", &f.reg.run_dir)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            // A plain program follows NETSPAWN_RUN_DIR ...
            "plain relocated 0",
            // ... a setuid one does not, but still reads the default registry.
            "setuid relocated 2",
            "plain default 2",
            "setuid default 0",
        ]
    );
}

#[test]
fn users_and_groups_of_a_machine_with_a_user_namespace() {
    let Some(f) = Fixture::new("users") else {
        return;
    };
    f.reg.add("web", "");
    f.reg.add_userns("web", 524288, 65536, std::process::id());
    f.reg.add("big", "");
    f.reg.add_userns("big", 1048576, 131072, std::process::id());
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    f.reg.add_userns("gone", 2097152, 65536, dead);

    assert_eq!(
        f.found(&["passwd", "vu-web-0"]),
        "vu-web-0:*:524288:65534:UID 0 of Container web:/:/usr/sbin/nologin\n"
    );
    assert_eq!(
        f.found(&["passwd", "524293"]),
        "vu-web-5:*:524293:65534:UID 5 of Container web:/:/usr/sbin/nologin\n"
    );
    assert_eq!(f.found(&["group", "vg-web-5"]), "vg-web-5:*:524293:\n");
    assert_eq!(f.found(&["group", "589823"]), "vg-web-65535:*:589823:\n");
    // A range of another size is found by listing the view.
    assert_eq!(
        f.found(&["passwd", "1114119"]).split(':').next(),
        Some("vu-big-65543")
    );
    assert!(f.found(&["passwd", "root"]).starts_with("root:"));
    for absent in [
        "vu-web-65536",
        "589824",
        "524287",
        "vu-web-05",
        "vu-gone-0",
        "2097152",
        "vu-nosuch-0",
        "vu-../web-0",
        "vg-web-0",
        "nobody-here",
    ] {
        f.absent(&["passwd", absent]);
    }
    for absent in ["vu-web-0", "vg-web-65536", "4294967294"] {
        f.absent(&["group", absent]);
    }
    // Enumeration lists the files' users only.
    assert!(!f.found(&["passwd"]).contains("vu-"));
}
