//! Fixtures shared by the integration tests: a private registry directory
//! with entries that count as alive (their launcher is this test process),
//! and the location of the freshly built module.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use netspawn_common::registry::process_start_time;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nss-mymachines-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A registry at `<root>/run/machines` with its hosts view at
/// `<root>/run/hosts`, for `NETSPAWN_RUN_DIR=<root>/run`.
pub struct Registry {
    pub run_dir: PathBuf,
    pub machines: PathBuf,
    pub hosts: PathBuf,
}

impl Registry {
    pub fn new(root: &Path) -> Registry {
        let run_dir = root.join("run");
        let machines = run_dir.join("machines");
        let hosts = run_dir.join("hosts");
        fs::create_dir_all(&machines).expect("create registry dir");
        fs::create_dir_all(&hosts).expect("create hosts dir");
        Registry {
            run_dir,
            machines,
            hosts,
        }
    }

    /// Writes an entry owned by process `pid` (alive as long as it runs) and,
    /// as `Registry::write` does, its hosts link when it has addresses.
    pub fn add_owned(&self, name: &str, addresses: &str, pid: u32) {
        let start = process_start_time(pid).expect("start time of launcher");
        let parsed: Vec<std::net::IpAddr> = addresses
            .split_whitespace()
            .map(|a| a.parse().expect("test address"))
            .collect();
        if !parsed.is_empty() {
            self.link_raw(name, netspawn_common::hosts::format_target(pid, &parsed));
        }
        self.write_raw(
            name,
            format!(
                "NAME={name}\nUUID=0123456789abcdef0123456789abcdef\nLEADER={pid}\n\
                 LAUNCHER={pid}\nLAUNCHER_START={start}\nCLASS=container\nSERVICE=netspawn\n\
                 STATE=running\nADDRESSES={addresses}\n"
            ),
        );
    }

    /// Writes an entry owned by this test process.
    pub fn add(&self, name: &str, addresses: &str) {
        self.add_owned(name, addresses, std::process::id());
    }

    /// Writes arbitrary bytes as the entry file `file`.
    pub fn write_raw(&self, file: &str, content: impl AsRef<[u8]>) {
        fs::write(self.machines.join(file), content).expect("write registry entry");
    }

    /// Makes `hosts/NAME` a link with an arbitrary target.
    pub fn link_raw(&self, name: &str, target: impl AsRef<std::ffi::OsStr>) {
        let path = self.hosts.join(name);
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target.as_ref(), &path).expect("write hosts link");
    }
}

impl Registry {
    /// The users view of a machine with a user namespace, as
    /// `Registry::write` makes it: `userns/NAME` and `uids/SHIFT:RANGE`.
    pub fn add_userns(&self, name: &str, shift: u32, range: u32, pid: u32) {
        let range = netspawn_common::registry::UidRange::new(shift, range).expect("test range");
        for (dir, link, target) in [
            (
                "userns",
                name.to_string(),
                netspawn_common::users::format_name_target(pid, range),
            ),
            (
                "uids",
                netspawn_common::users::id_link_rel(range),
                netspawn_common::users::format_id_target(pid, name),
            ),
        ] {
            let path = self.run_dir.join(dir).join(link);
            fs::create_dir_all(path.parent().expect("a parent")).expect("create users view dir");
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink(target, path).expect("write users link");
        }
    }
}

/// The cdylib cargo built for this test run. `cargo test` builds it next to
/// the test binary (target/<profile>/deps) without copying it up a level, so
/// that copy is the fresh one.
pub fn built_module() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        let p = dir.join("libnss_mymachines.so");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "libnss_mymachines.so not found next to {}; run `cargo test -p nss-mymachines`",
        exe.display()
    );
}

/// True if this process runs as root (mount namespaces need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
