//! Builds machine images from nothing: a tiny busybox root (for tests and quick experiments) and a
//! Debian root made by `debootstrap` (for booted systemd guests).
//!
//! This module owns the image's files at creation time and the way an image comes into being: it
//! is staged in a hidden sibling directory `.#NAME.tmpXXXXXXXX` and renamed into place only when
//! complete, so a reader never sees half an image and a failure leaves nothing behind. An existing
//! non-empty image is never touched.
//!
//! Choices made for both images, on purpose, because they are local test machines:
//! - **root has an empty password.** The only ways in are the container's console (a pty that only
//!   root on the host holds) and `netspawnctl login`/`shell`; neither image runs a network login
//!   service. An empty password lets a test log in on the console without secrets in the tree. On
//!   Debian, PAM's `pam_unix nullok` (Debian's default) accepts it and bookworm no longer uses
//!   `pam_securetty`. The busybox image goes further and logs root in on its console without a
//!   prompt. Give root a password before exposing such an image to anyone.
//! - **no `/etc/hostname`**: the launcher sets the hostname (the machine name); a file in the image
//!   would make the guest's init override it.
//! - **an empty `/etc/machine-id`** on Debian: systemd in the guest makes up an id at each boot, so
//!   clones of the image do not share one.
//!
//! Busybox init and shutdown signals: busybox init halts on SIGUSR1 (and SIGPWR), powers off on
//! SIGUSR2, reboots on SIGTERM and runs the inittab's `ctrlaltdel` action (here: reboot) on SIGINT.
//! It installs no handler for SIGRTMIN+3 or SIGRTMIN+4, which systemd uses for halt and poweroff,
//! and the kernel drops signals without a handler sent to a PID namespace's init, so those are
//! silently ignored: a launcher must send SIGUSR2 (poweroff) or SIGTERM (reboot) to a busybox
//! guest. Busybox then kills every process and calls reboot(2), which in a PID namespace ends its
//! init as if killed by SIGINT (halt, poweroff) or SIGHUP (reboot).

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

/// The host's static busybox, from Debian's `busybox-static`.
const HOST_BUSYBOX: &str = "/bin/busybox";
/// The mirror used when the host's apt configuration names none for the suite.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Where apt's configuration lives on the host.
const HOST_APT_DIR: &str = "/etc/apt";
/// Packages added to debootstrap's minbase: an init that boots in a container (systemd with
/// networkd, which bookworm ships inside `systemd`), D-Bus for machinectl-style tools,
/// systemd-resolved so the guest uses the DNS servers its DHCP lease names (networkd alone never
/// writes resolv.conf), and `ip`/`ping` for tests.
const DEBIAN_BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "systemd-resolved",
    "iproute2",
    "iputils-ping",
];
/// A PATH with the sbin directories, which debootstrap and apt-get need.
const TOOL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const INITTAB: &str = include_str!("../data/bootstrap/inittab");
const RCS: &str = include_str!("../data/bootstrap/rcS");
const CONSOLE_LOGIN: &str = include_str!("../data/bootstrap/console-login");
const UDHCPC_SCRIPT: &str = include_str!("../data/bootstrap/udhcpc.script");
const PROFILE: &str = include_str!("../data/bootstrap/profile");

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Why an image could not be made. Each message is one line meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The destination exists and is not an empty directory.
    #[error("image {} already exists", .0.display())]
    AlreadyExists(PathBuf),
    /// The destination has no final name component (e.g. `/` or `..`).
    #[error("invalid image path {}: it must end in the image's name", .0.display())]
    InvalidDestination(PathBuf),
    /// The host has no busybox binary at the expected place.
    #[error("{} not found: install busybox-static (apt-get install busybox-static)", .0.display())]
    BusyboxMissing(PathBuf),
    /// The busybox binary needs a dynamic loader, which the image does not have.
    #[error("{} is dynamically linked and cannot run in the image: install busybox-static", .0.display())]
    BusyboxNotStatic(PathBuf),
    /// The busybox binary is not an ELF file we can read.
    #[error("{} is not a usable ELF executable: {reason}", .path.display())]
    BusyboxNotElf {
        /// The file checked.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Asking busybox for its applets failed or gave a bad answer.
    #[error("{} --list-full: {reason}", .path.display())]
    BusyboxApplets {
        /// The busybox binary asked.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A Debian option (suite, mirror, package name) would not make a valid debootstrap argument.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidOption {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// debootstrap needs root (it chroots and makes device nodes).
    #[error("bootstrapping a Debian image needs root")]
    NotRoot,
    /// debootstrap is missing and could not be installed.
    #[error("debootstrap is not installed and installing it failed: {0}")]
    DebootstrapInstall(String),
    /// debootstrap ran and failed.
    #[error("debootstrap failed ({status}): {detail}")]
    Debootstrap {
        /// How it ended.
        status: String,
        /// Its last error line (the full log is in the progress output).
        detail: String,
    },
    /// The bootstrapped tree lacks a file the image needs.
    #[error("the bootstrapped image lacks {0}")]
    Incomplete(String),
    /// Something is still mounted under a directory we were about to delete.
    #[error("{} still has mounts under it; not removing it", .0.display())]
    LeftoverMounts(PathBuf),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

type Result<T, E = BootstrapError> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BootstrapError {
    let context = context.into();
    move |source| BootstrapError::Io { context, source }
}

// ---------------------------------------------------------------------------------------------
// Staging: build beside the destination, rename into place, clean up on any failure.

/// A hidden directory next to the destination that becomes the image on `commit`, and is removed
/// on drop otherwise (errors and panics alike).
struct Staging {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(dest: &Path) -> Result<Staging> {
        let name = match dest.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => return Err(BootstrapError::InvalidDestination(dest.to_path_buf())),
        };
        check_destination(dest)?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err(format!("create {}", parent.display())))?;

        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        for attempt in 0u32..64 {
            let mut tmp_name = OsString::from(".#");
            tmp_name.push(&name);
            tmp_name.push(format!(
                ".tmp{:08x}",
                seed.wrapping_add(attempt.wrapping_mul(0x9e37_79b9))
            ));
            let tmp = parent.join(tmp_name);
            match DirBuilder::new().mode(0o755).create(&tmp) {
                Ok(()) => {
                    // The mode given to mkdir is filtered by the umask; an image root is 0755.
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                        .map_err(io_err(format!("chmod {}", tmp.display())))?;
                    return Ok(Staging {
                        tmp,
                        dest: dest.to_path_buf(),
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(format!("create {}", tmp.display()))(e)),
            }
        }
        Err(BootstrapError::Io {
            context: format!("create a temporary directory in {}", parent.display()),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the staged tree onto the destination. rename(2) replaces an empty directory and
    /// fails on a non-empty one, so an image made meanwhile by someone else is left alone.
    fn commit(mut self) -> Result<()> {
        match fs::rename(&self.tmp, &self.dest) {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR | libc::EISDIR)
                ) =>
            {
                Err(BootstrapError::AlreadyExists(self.dest.clone()))
            }
            Err(e) => Err(io_err(format!(
                "rename {} to {}",
                self.tmp.display(),
                self.dest.display()
            ))(e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = remove_tree(&self.tmp) {
                warn!("leaving {} behind: {e}", self.tmp.display());
            }
        }
    }
}

/// Fails unless `dest` is absent or an empty directory.
fn check_destination(dest: &Path) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("inspect {}", dest.display()))(e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(dest).map_err(io_err(format!("read {}", dest.display())))?;
            if entries.next().is_none() {
                Ok(())
            } else {
                Err(BootstrapError::AlreadyExists(dest.to_path_buf()))
            }
        }
        Ok(_) => Err(BootstrapError::AlreadyExists(dest.to_path_buf())),
    }
}

/// Deletes a tree, but never one with something mounted inside: deleting through a stray bind
/// mount of the host's /dev or /proc would damage the host.
fn remove_tree(path: &Path) -> Result<()> {
    let canonical = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("resolve {}", path.display()))(e)),
    };
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(io_err("read /proc/self/mountinfo"))?;
    if mount_points(&mountinfo).any(|m| m.starts_with(&canonical)) {
        return Err(BootstrapError::LeftoverMounts(path.to_path_buf()));
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The mount points listed in a mountinfo text (field 5, with the kernel's octal escapes undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
}

/// Undoes mountinfo's `\NNN` escapes (space, tab, newline, backslash).
fn unescape_octal(field: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
            if digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

// ---------------------------------------------------------------------------------------------
// Small file helpers, all relative to an image root.

fn make_dir(root: &Path, rel: &str, mode: u32) -> Result<()> {
    let path = root.join(rel);
    match DirBuilder::new().mode(mode).create(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
    }
    // Set the mode explicitly: mkdir's is filtered by the umask, and sticky bits need chmod.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

fn write_file(root: &Path, rel: &str, contents: &[u8], mode: u32) -> Result<()> {
    let path = root.join(rel);
    fs::write(&path, contents).map_err(io_err(format!("write {}", path.display())))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

fn make_symlink(root: &Path, rel: &str, target: &str) -> Result<()> {
    let path = root.join(rel);
    symlink(target, &path).map_err(io_err(format!("symlink {}", path.display())))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// busybox

/// Builds a small bootable root at `dest` from the host's static busybox (`/bin/busybox`, from
/// Debian's `busybox-static`).
///
/// The image has `/bin/busybox` (a copy: a link would let the guest write to the host's file),
/// a relative symlink to it for every applet, busybox init as `/sbin/init` with an inittab that
/// runs `/etc/init.d/rcS` (loopback up, DHCP on `host0` when present) and keeps root logged in
/// on the console (getty, then `login -f root`, so the shell has job control), a udhcpc event script that applies leases with `ip` and writes resolv.conf,
/// `/etc/os-release` with `ID=busybox`, and users root (empty password, `/bin/sh`) and nobody.
/// See the module documentation for the shutdown signals busybox init understands.
///
/// Refuses a destination that exists and is not an empty directory; leaves nothing on failure.
pub fn busybox(dest: &Path) -> Result<(), BootstrapError> {
    busybox_from(Path::new(HOST_BUSYBOX), dest)
}

/// [`busybox`] with the busybox binary taken from `busybox_bin` (tests use bogus ones).
fn busybox_from(busybox_bin: &Path, dest: &Path) -> Result<()> {
    let staging = Staging::new(dest)?;
    let root = staging.path();

    const DIRS: &[(&str, u32)] = &[
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("usr/lib", 0o755),
        ("usr/share", 0o755),
        ("usr/share/udhcpc", 0o755),
        ("etc", 0o755),
        ("etc/init.d", 0o755),
        ("etc/udhcpc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("mnt", 0o755),
        ("var", 0o755),
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
    ];
    for (rel, mode) in DIRS {
        make_dir(root, rel, *mode)?;
    }
    make_symlink(root, "var/run", "../run")?;

    write_file(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    write_file(
        root,
        "etc/group",
        b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        0o644,
    )?;
    // Empty password field: login without a password (see the module documentation). The empty
    // "last change" field turns password ageing off; 0 there would force a change at login.
    write_file(
        root,
        "etc/shadow",
        b"root::::::::\nnobody:*:::::::\n",
        0o600,
    )?;
    write_file(root, "etc/shells", b"/bin/sh\n/bin/ash\n", 0o644)?;
    write_file(root, "etc/hosts", HOSTS.as_bytes(), 0o644)?;
    // Present and empty so a launcher can bind-mount its own over it and udhcpc can fill it.
    write_file(root, "etc/resolv.conf", b"", 0o644)?;
    write_file(root, "etc/profile", PROFILE.as_bytes(), 0o644)?;
    write_file(root, "etc/inittab", INITTAB.as_bytes(), 0o644)?;
    write_file(root, "etc/init.d/rcS", RCS.as_bytes(), 0o755)?;
    write_file(
        root,
        "etc/init.d/console-login",
        CONSOLE_LOGIN.as_bytes(),
        0o755,
    )?;
    // Upstream busybox runs /usr/share/udhcpc/default.script, Debian's build /etc/udhcpc/...
    write_file(
        root,
        "usr/share/udhcpc/default.script",
        UDHCPC_SCRIPT.as_bytes(),
        0o755,
    )?;
    make_symlink(
        root,
        "etc/udhcpc/default.script",
        "../../usr/share/udhcpc/default.script",
    )?;

    let binary = match fs::read(busybox_bin) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BootstrapError::BusyboxMissing(busybox_bin.to_path_buf()))
        }
        Err(e) => return Err(io_err(format!("read {}", busybox_bin.display()))(e)),
    };
    match elf_needs_interpreter(&binary) {
        Ok(false) => {}
        Ok(true) => return Err(BootstrapError::BusyboxNotStatic(busybox_bin.to_path_buf())),
        Err(reason) => {
            return Err(BootstrapError::BusyboxNotElf {
                path: busybox_bin.to_path_buf(),
                reason,
            })
        }
    }
    write_file(root, "bin/busybox", &binary, 0o755)?;

    let version = busybox_version(busybox_bin);
    write_file(
        root,
        "usr/lib/os-release",
        os_release(version.as_deref()).as_bytes(),
        0o644,
    )?;
    make_symlink(root, "etc/os-release", "../usr/lib/os-release")?;

    let list = run_busybox(busybox_bin, &["--list-full"])?;
    let applets = applet_paths(&list).map_err(|reason| BootstrapError::BusyboxApplets {
        path: busybox_bin.to_path_buf(),
        reason,
    })?;
    // Directories already made; each metadata call counts on a busy disk.
    let mut made: Vec<PathBuf> = DIRS.iter().map(|(rel, _)| root.join(rel)).collect();
    for applet in &applets {
        let path = root.join(applet);
        if let Some(parent) = path.parent().filter(|p| !made.iter().any(|m| m == p)) {
            fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
            made.push(parent.to_path_buf());
        }
        match symlink(applet_link_target(applet), &path) {
            Ok(()) => {}
            // A name listed twice (or one we made, like /bin/busybox) keeps its first entry.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("symlink {}", path.display()))(e)),
        }
    }
    if !root.join("sbin/init").exists() || !root.join("bin/sh").exists() {
        return Err(BootstrapError::BusyboxApplets {
            path: busybox_bin.to_path_buf(),
            reason: "this busybox has no init or sh applet".to_string(),
        });
    }

    staging.commit()
}

fn run_busybox(busybox_bin: &Path, args: &[&str]) -> Result<String> {
    let failed = |reason: String| BootstrapError::BusyboxApplets {
        path: busybox_bin.to_path_buf(),
        reason,
    };
    let output = Command::new(busybox_bin)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!("exited with {}", output.status)));
    }
    String::from_utf8(output.stdout).map_err(|_| failed("output is not UTF-8".to_string()))
}

/// The version busybox prints first ("BusyBox v1.35.0 (Debian ...) multi-call binary."), in
/// os-release's VERSION_ID alphabet, or `None` if it says nothing usable.
fn busybox_version(busybox_bin: &Path) -> Option<String> {
    let output = Command::new(busybox_bin)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_busybox_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_busybox_version(banner: &str) -> Option<String> {
    let rest = banner.lines().next()?.strip_prefix("BusyBox v")?;
    let version = rest.split_whitespace().next()?.to_ascii_lowercase();
    let valid = !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then_some(version)
}

fn os_release(version: Option<&str>) -> String {
    match version {
        Some(v) => {
            format!("NAME=\"BusyBox\"\nID=busybox\nVERSION_ID={v}\nPRETTY_NAME=\"BusyBox {v}\"\n")
        }
        None => "NAME=\"BusyBox\"\nID=busybox\nPRETTY_NAME=\"BusyBox\"\n".to_string(),
    }
}

/// The applet paths of `busybox --list-full` ("bin/sh", "usr/bin/[", "linuxrc"...), relative to the root,
/// without the binary itself. A path that could escape the root is an error.
fn applet_paths(list: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = PathBuf::from(line);
        let components: Vec<Component> = path.components().collect();
        if components.is_empty() || !components.iter().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("unexpected applet path {line:?}"));
        }
        if path != Path::new("bin/busybox") {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err("no applets listed".to_string());
    }
    Ok(paths)
}

/// A relative link from an applet's path to bin/busybox, so the image is also self-contained
/// when looked at from the host.
fn applet_link_target(applet: &Path) -> PathBuf {
    let depth = applet.components().count().saturating_sub(1);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join("bin/busybox")
}

/// Whether an ELF file asks for a program interpreter (a PT_INTERP program header), i.e. needs
/// the dynamic loader. Reads 32- and 64-bit files of either byte order; never panics.
fn elf_needs_interpreter(elf: &[u8]) -> std::result::Result<bool, &'static str> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("no ELF magic");
    }
    let big_endian = match elf.get(5) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("unknown byte order"),
    };
    let read = |offset: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(offset..offset.checked_add(len)?)?;
        let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
        Some(if big_endian {
            bytes.iter().fold(0, fold)
        } else {
            bytes.iter().rev().fold(0, fold)
        })
    };
    // (e_phoff offset, its size, e_phentsize offset, e_phnum offset) by class.
    let (phoff_at, phoff_len, phentsize_at, phnum_at) = match elf.get(4) {
        Some(1) => (0x1c, 4, 0x2a, 0x2c),
        Some(2) => (0x20, 8, 0x36, 0x38),
        _ => return Err("unknown ELF class"),
    };
    let header = (|| {
        Some((
            usize::try_from(read(phoff_at, phoff_len)?).ok()?,
            usize::try_from(read(phentsize_at, 2)?).ok()?,
            usize::try_from(read(phnum_at, 2)?).ok()?,
        ))
    })();
    let (phoff, phentsize, phnum) = header.ok_or("truncated ELF header")?;
    if phnum == 0 {
        return Err("no program headers");
    }
    if phentsize < 4 {
        return Err("bad program header size");
    }
    for i in 0..phnum {
        let entry = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or("bad program header offset")?;
        let p_type = read(entry, 4).ok_or("truncated program headers")?;
        if p_type == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------------
// Debian

/// What [`debian`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianOptions {
    /// The Debian suite or codename, e.g. `bookworm`.
    pub suite: String,
    /// The mirror URL; `None` takes the first `deb` source of the host's apt configuration that
    /// serves `suite`, else `http://deb.debian.org/debian`.
    pub mirror: Option<String>,
    /// Packages installed in addition to the base set (systemd, systemd-sysv, dbus,
    /// systemd-resolved, iproute2, iputils-ping).
    pub include: Vec<String>,
}

impl Default for DebianOptions {
    fn default() -> Self {
        DebianOptions {
            suite: "bookworm".to_string(),
            mirror: None,
            include: Vec::new(),
        }
    }
}

/// Builds a bootable Debian root at `dest` with `debootstrap --variant=minbase`, installing
/// debootstrap with apt-get first if the host lacks it. Needs root and the network to the mirror;
/// a bookworm image takes about 45 s and 250 MB.
///
/// Each line debootstrap (or apt-get) prints is passed to `progress` as it comes, along with a
/// few lines of our own. debootstrap runs in a private mount namespace, so nothing it mounts
/// (proc, sys, devpts) can outlive it on the host.
///
/// Afterwards the image is made ready for `netspawn -b`: systemd-networkd is enabled (the stock
/// `80-container-host0.network` then runs DHCP on `host0`), systemd-resolved (enabled by its
/// package) gives `/etc/resolv.conf`, root's password is emptied, `/etc/machine-id` is emptied,
/// the `/etc/hostname` and `/etc/resolv.conf` that debootstrap copies from the host are dropped,
/// and `/etc/hosts` gets the localhost lines. See the module documentation for why.
///
/// Refuses a destination that exists and is not an empty directory; leaves nothing on failure.
pub fn debian(
    dest: &Path,
    opts: &DebianOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BootstrapError> {
    validate_suite(&opts.suite)?;
    for package in &opts.include {
        validate_package(package)?;
    }
    let mirror = match &opts.mirror {
        Some(m) => m.clone(),
        None => host_mirror(Path::new(HOST_APT_DIR), &opts.suite),
    };
    validate_mirror(&mirror)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(BootstrapError::NotRoot);
    }
    check_destination(dest)?;

    let debootstrap_bin = match find_program("debootstrap") {
        Some(p) => p,
        None => install_debootstrap(progress)?,
    };

    let staging = Staging::new(dest)?;
    let root = staging.path();

    let mut packages: Vec<&str> = DEBIAN_BASE_PACKAGES.to_vec();
    for p in &opts.include {
        if !packages.contains(&p.as_str()) {
            packages.push(p);
        }
    }
    progress(&format!(
        "Bootstrapping Debian {} from {mirror} into {}",
        opts.suite,
        root.display()
    ));
    let mut cmd = Command::new(&debootstrap_bin);
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", packages.join(",")))
        .arg(&opts.suite)
        .arg(root)
        .arg(&mirror);
    in_private_mount_namespace(&mut cmd);
    let (status, last_error) = run_streaming(cmd, progress)
        .map_err(io_err(format!("run {}", debootstrap_bin.display())))?;
    if !status.success() {
        return Err(BootstrapError::Debootstrap {
            status: describe_status(status),
            detail: last_error.unwrap_or_else(|| "no output".to_string()),
        });
    }

    progress("Preparing the image for booting in a container");
    prepare_debian_root(root)?;
    enable_networkd(root, progress)?;
    staging.commit()?;
    progress(&format!("Image ready: {}", dest.display()));
    Ok(())
}

fn validate_suite(suite: &str) -> Result<()> {
    let ok = !suite.is_empty()
        && !suite.starts_with('-')
        && suite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BootstrapError::InvalidOption {
            what: "suite",
            value: suite.to_string(),
            reason: "expected a name like bookworm",
        })
    }
}

/// Debian policy's package name syntax; it also keeps commas and options out of --include.
fn validate_package(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok = bytes.len() >= 2
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(BootstrapError::InvalidOption {
            what: "package name",
            value: name.to_string(),
            reason: "expected lower-case letters, digits, '+', '-' and '.'",
        })
    }
}

fn validate_mirror(mirror: &str) -> Result<()> {
    let ok = ["http://", "https://", "file:/", "ftp://"]
        .iter()
        .any(|scheme| mirror.starts_with(scheme))
        && !mirror.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(BootstrapError::InvalidOption {
            what: "mirror",
            value: mirror.to_string(),
            reason: "expected an http://, https://, ftp:// or file:/ URL",
        })
    }
}

/// Finds an executable in PATH or the usual sbin directories (which a user's PATH may lack).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(TOOL_PATH))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn install_debootstrap(progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    progress("debootstrap not found: installing it with apt-get");
    let apt_get = |args: &[&str], progress: &mut dyn FnMut(&str)| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_streaming(cmd, progress)
    };
    let mut outcome = apt_get(&["install", "-y", "debootstrap"], progress);
    // A fresh machine may have no package lists yet.
    if !matches!(&outcome, Ok((status, _)) if status.success()) {
        progress("apt-get install failed; updating the package lists and trying again");
        let _ = apt_get(&["update"], progress);
        outcome = apt_get(&["install", "-y", "debootstrap"], progress);
    }
    match outcome {
        Ok((status, _)) if status.success() => find_program("debootstrap").ok_or_else(|| {
            BootstrapError::DebootstrapInstall(
                "apt-get succeeded but debootstrap is still not found".to_string(),
            )
        }),
        Ok((status, last)) => Err(BootstrapError::DebootstrapInstall(format!(
            "apt-get install debootstrap {}{}",
            describe_status(status),
            last.map(|l| format!(": {l}")).unwrap_or_default()
        ))),
        Err(e) => Err(BootstrapError::DebootstrapInstall(format!("apt-get: {e}"))),
    }
}

/// Makes the child start in its own mount namespace with private propagation, so its mounts
/// vanish with it and never show on the host, even if it is killed half-way.
fn in_private_mount_namespace(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes two system calls with
    // static arguments; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` with stdout and stderr merged into one pipe, passing each line to `progress` as it
/// comes. Returns the exit status and the last line that looked like an error (debootstrap's
/// "E: ...", apt's "E: ...") or else the last line.
fn run_streaming(
    mut cmd: Command,
    progress: &mut dyn FnMut(&str),
) -> io::Result<(ExitStatus, Option<String>)> {
    let (reader, writer) = nix::unistd::pipe().map_err(io::Error::from)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer))
        .env("PATH", TOOL_PATH)
        .env("LC_ALL", "C");
    let mut child = cmd.spawn()?;
    // The Command holds our copies of the write end; drop it so the read end sees EOF.
    drop(cmd);

    let mut last_line = None;
    let mut last_error = None;
    let mut reader = BufReader::new(File::from(reader));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        progress(line);
        if line.starts_with("E: ") || line.starts_with("W: Failure") {
            last_error = Some(line.to_string());
        }
        last_line = Some(line.to_string());
    }
    let status = child.wait()?;
    Ok((status, last_error.or(last_line)))
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Turns a fresh debootstrap tree into an image for booting in a container (see [`debian`]).
fn prepare_debian_root(root: &Path) -> Result<()> {
    // debootstrap copies these two from the host; the launcher provides both at run time.
    remove_if_present(&root.join("etc/hostname"))?;
    let resolv = root.join("etc/resolv.conf");
    if fs::symlink_metadata(&resolv).is_ok_and(|m| m.file_type().is_file()) {
        // Without systemd-resolved's link, keep an empty file to bind-mount over.
        write_file(root, "etc/resolv.conf", b"", 0o644)?;
    }
    if !root.join("etc/hosts").exists() {
        write_file(root, "etc/hosts", HOSTS.as_bytes(), 0o644)?;
    }

    // Empty means "not set": systemd makes one up at boot. Keep the file's read-only mode.
    let machine_id = root.join("etc/machine-id");
    fs::write(&machine_id, b"").map_err(io_err(format!("truncate {}", machine_id.display())))?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if fs::symlink_metadata(&dbus_id).is_ok_and(|m| m.file_type().is_file()) {
        // D-Bus falls back to /etc/machine-id through this link; a copy would go stale.
        fs::remove_file(&dbus_id).map_err(io_err(format!("remove {}", dbus_id.display())))?;
        symlink("/etc/machine-id", &dbus_id)
            .map_err(io_err(format!("symlink {}", dbus_id.display())))?;
    }

    let shadow_path = root.join("etc/shadow");
    let shadow = fs::read_to_string(&shadow_path)
        .map_err(io_err(format!("read {}", shadow_path.display())))?;
    let updated = with_empty_password(&shadow, "root")
        .ok_or_else(|| BootstrapError::Incomplete("a root entry in /etc/shadow".to_string()))?;
    fs::write(&shadow_path, updated).map_err(io_err(format!("write {}", shadow_path.display())))?;

    let stock = ["usr/lib/systemd/network", "lib/systemd/network"]
        .iter()
        .any(|dir| root.join(dir).join("80-container-host0.network").is_file());
    if !stock {
        return Err(BootstrapError::Incomplete(
            "/usr/lib/systemd/network/80-container-host0.network (is systemd installed?)"
                .to_string(),
        ));
    }
    Ok(())
}

/// `shadow` with `user`'s password field emptied, or `None` if `user` has no entry.
fn with_empty_password(shadow: &str, user: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(shadow.len());
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 2 && fields[0] == user {
            fields[1] = "";
            found = true;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    found.then_some(out)
}

/// Enables systemd-networkd in the image: with the host's `systemctl --root`, which reads the
/// image's own unit files and works offline, else by making the links its [Install] section asks.
fn enable_networkd(root: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
    if let Some(systemctl) = find_program("systemctl") {
        let mut root_arg = OsString::from("--root=");
        root_arg.push(root);
        let mut cmd = Command::new(&systemctl);
        cmd.arg(root_arg)
            .args(["enable", "systemd-networkd.service"]);
        match run_streaming(cmd, progress) {
            Ok((status, _)) if status.success() => {}
            Ok((status, _)) => debug!("systemctl --root enable: {}", describe_status(status)),
            Err(e) => debug!("systemctl --root enable: {e}"),
        }
    }
    if networkd_enabled(root) {
        return Ok(());
    }
    progress("Enabling systemd-networkd with symlinks");
    enable_networkd_by_links(root)?;
    if networkd_enabled(root) {
        Ok(())
    } else {
        Err(BootstrapError::Incomplete(
            "systemd-networkd's unit files (is systemd installed?)".to_string(),
        ))
    }
}

const NETWORKD_LINKS: &[(&str, &str)] = &[
    (
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "systemd-networkd.service",
    ),
    (
        "etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
        "systemd-networkd.socket",
    ),
    (
        "etc/systemd/system/dbus-org.freedesktop.network1.service",
        "systemd-networkd.service",
    ),
];

/// Whether the links that enable networkd exist and point at unit files present in the image.
fn networkd_enabled(root: &Path) -> bool {
    NETWORKD_LINKS.iter().take(2).all(|(link, _)| {
        fs::read_link(root.join(link))
            .ok()
            .and_then(|target| {
                let inside = target.strip_prefix("/").unwrap_or(&target).to_path_buf();
                let resolved = root.join(link).parent()?.join(&target);
                Some(if target.is_absolute() {
                    root.join(inside).is_file()
                } else {
                    resolved.is_file()
                })
            })
            .unwrap_or(false)
    })
}

fn enable_networkd_by_links(root: &Path) -> Result<()> {
    let unit_dir = ["usr/lib/systemd/system", "lib/systemd/system"]
        .into_iter()
        .find(|dir| root.join(dir).join("systemd-networkd.service").is_file())
        .ok_or_else(|| {
            BootstrapError::Incomplete("systemd-networkd.service (is systemd installed?)".into())
        })?;
    for (link, unit) in NETWORKD_LINKS {
        let path = root.join(link);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
        }
        remove_if_present(&path)?;
        let target = format!("/{unit_dir}/{unit}");
        symlink(&target, &path).map_err(io_err(format!("symlink {}", path.display())))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The host's apt sources, to pick a mirror the machine is known to reach.

/// One `deb` source from apt's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AptSource {
    uri: String,
    suites: Vec<String>,
}

/// The first `deb` URI in the apt configuration under `apt_dir` (sources.list, then
/// sources.list.d/*.list and *.sources in name order) that serves `suite`, or Debian's
/// default mirror.
fn host_mirror(apt_dir: &Path, suite: &str) -> String {
    let mut sources = Vec::new();
    if let Ok(text) = fs::read_to_string(apt_dir.join("sources.list")) {
        sources.extend(parse_one_line_sources(&text));
    }
    let mut files: Vec<PathBuf> = fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let parse: fn(&str) -> Vec<AptSource> = match file.extension().and_then(|e| e.to_str()) {
            Some("list") => parse_one_line_sources,
            Some("sources") => parse_deb822_sources,
            _ => continue,
        };
        if let Ok(text) = fs::read_to_string(&file) {
            sources.extend(parse(&text));
        }
    }
    pick_mirror(&sources, suite).unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

fn pick_mirror(sources: &[AptSource], suite: &str) -> Option<String> {
    sources
        .iter()
        .filter(|s| !s.uri.starts_with("cdrom:"))
        .find(|s| s.suites.iter().any(|x| x == suite))
        .map(|s| s.uri.clone())
}

/// Parses the one-line format: `deb [options] URI SUITE COMPONENT...`.
fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut tokens = line.split_whitespace();
        if tokens.next() != Some("deb") {
            continue;
        }
        let mut next = tokens.next();
        if next.is_some_and(|t| t.starts_with('[')) {
            // Options may hold spaces: "[ arch=amd64 signed-by=... ]".
            while let Some(t) = next {
                next = tokens.next();
                if t.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (next, tokens.next()) {
            sources.push(AptSource {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    sources
}

/// Parses the deb822 format of `*.sources` files: stanzas of `Field: value` lines separated by
/// blank lines, with indented continuation lines and `#` comments.
fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let flush = |stanza: &mut Vec<(String, String)>, sources: &mut Vec<AptSource>| {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = field("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if is_deb && enabled {
            let suites: Vec<String> = field("Suites")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for uri in field("URIs").unwrap_or("").split_whitespace() {
                sources.push(AptSource {
                    uri: uri.to_string(),
                    suites: suites.clone(),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza, &mut sources);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            stanza.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    flush(&mut stanza, &mut sources);
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "netspawn-bootstrap-{tag}-{}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .expect("read temp dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    fn require_host_busybox() {
        assert!(
            Path::new(HOST_BUSYBOX).is_file(),
            "these tests need {HOST_BUSYBOX}: apt-get install busybox-static"
        );
    }

    #[test]
    fn busybox_image_has_applets_init_and_config() {
        require_host_busybox();
        let dir = TempDir::new("layout");
        let dest = dir.0.join("bb");
        let started = std::time::Instant::now();
        busybox(&dest).expect("busybox image");
        eprintln!("busybox image built in {:?}", started.elapsed());

        assert_eq!(dir.entries(), vec!["bb".to_string()], "no staging dir left");
        let bin = dest.join("bin/busybox");
        let meta = fs::symlink_metadata(&bin).expect("bin/busybox");
        assert!(meta.file_type().is_file(), "bin/busybox is a real file");
        assert_eq!(mode(&bin), 0o755);

        for applet in ["bin/sh", "sbin/init", "sbin/ip", "sbin/udhcpc", "bin/login"] {
            let path = dest.join(applet);
            let meta = fs::symlink_metadata(&path).unwrap_or_else(|_| panic!("{applet} missing"));
            assert!(meta.file_type().is_symlink(), "{applet} is a symlink");
            let resolved = fs::canonicalize(&path).expect("resolve applet");
            assert_eq!(
                resolved,
                fs::canonicalize(&bin).unwrap(),
                "{applet} → busybox"
            );
        }
        assert_eq!(
            fs::read_link(dest.join("usr/bin/env")).unwrap(),
            PathBuf::from("../../bin/busybox")
        );

        let os_release = fs::read_to_string(dest.join("etc/os-release")).unwrap();
        assert!(os_release.contains("\nID=busybox\n"), "{os_release}");
        assert!(os_release.starts_with("NAME=\"BusyBox\"\n"), "{os_release}");
        let version = os_release
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .expect("VERSION_ID");
        assert!(
            version.starts_with(|c: char| c.is_ascii_digit()),
            "{version}"
        );
        assert!(os_release.contains(&format!("PRETTY_NAME=\"BusyBox {version}\"")));

        assert_eq!(mode(&dest.join("tmp")), 0o1777);
        assert_eq!(mode(&dest.join("var/tmp")), 0o1777);
        assert_eq!(mode(&dest.join("root")), 0o700);
        assert_eq!(mode(&dest.join("proc")), 0o555);
        assert_eq!(mode(&dest), 0o755);
        assert_eq!(mode(&dest.join("etc/shadow")), 0o600);
        assert!(!dest.join("etc/hostname").exists());

        let passwd = fs::read_to_string(dest.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(passwd.contains("\nnobody:x:65534:65534:"));
        let shadow = fs::read_to_string(dest.join("etc/shadow")).unwrap();
        assert!(shadow.starts_with("root::"), "root's password is empty");
        assert!(fs::read_to_string(dest.join("etc/hosts"))
            .unwrap()
            .contains("127.0.0.1\tlocalhost"));
        assert!(fs::read_to_string(dest.join("etc/inittab"))
            .unwrap()
            .contains("::sysinit:/etc/init.d/rcS"));
        assert_eq!(mode(&dest.join("etc/init.d/rcS")), 0o755);
        assert_eq!(mode(&dest.join("etc/init.d/console-login")), 0o755);
        let script = dest.join("usr/share/udhcpc/default.script");
        assert_eq!(mode(&script), 0o755);
        assert_eq!(
            fs::canonicalize(dest.join("etc/udhcpc/default.script")).unwrap(),
            fs::canonicalize(&script).unwrap()
        );
    }

    #[test]
    fn busybox_image_runs_in_a_chroot() {
        require_host_busybox();
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED busybox_image_runs_in_a_chroot: chroot needs root");
            return;
        }
        let dir = TempDir::new("run");
        let dest = dir.0.join("bb");
        busybox(&dest).expect("busybox image");
        // Inside the image only its own files are visible: the applet links, the copied binary
        // and the configuration must work together there.
        let output = Command::new("chroot")
            .arg(&dest)
            .args([
                "/bin/sh",
                "-c",
                ". /etc/os-release && echo \"$ID $(id -un) $(cat /etc/hostname 2>/dev/null)\" \
                 && ipcalc -p 10.1.2.3 255.255.255.240 && ls /sbin/init",
            ])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("run chroot");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "busybox root \nPREFIX=28\n/sbin/init\n"
        );
    }

    #[test]
    fn refuses_to_overwrite_an_image() {
        require_host_busybox();
        let dir = TempDir::new("exists");
        let dest = dir.0.join("bb");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep"), b"mine").unwrap();
        let err = busybox(&dest).expect_err("must refuse");
        assert!(matches!(err, BootstrapError::AlreadyExists(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("image {} already exists", dest.display())
        );
        assert_eq!(fs::read(dest.join("keep")).unwrap(), b"mine");
        assert_eq!(dir.entries(), vec!["bb".to_string()]);

        let file_dest = dir.0.join("file");
        fs::write(&file_dest, b"x").unwrap();
        assert!(matches!(
            busybox(&file_dest),
            Err(BootstrapError::AlreadyExists(_))
        ));
    }

    #[test]
    fn fills_an_empty_directory() {
        require_host_busybox();
        let dir = TempDir::new("empty");
        let dest = dir.0.join("bb");
        fs::create_dir(&dest).unwrap();
        busybox(&dest).expect("an empty directory is not an image");
        assert!(dest.join("bin/sh").exists());
        assert_eq!(dir.entries(), vec!["bb".to_string()]);
    }

    #[test]
    fn missing_busybox_leaves_nothing_behind() {
        let dir = TempDir::new("missing");
        let dest = dir.0.join("bb");
        let bogus = dir.0.join("no-such-busybox");
        let err = busybox_from(&bogus, &dest).expect_err("must fail");
        assert!(matches!(err, BootstrapError::BusyboxMissing(_)), "{err}");
        assert!(err.to_string().contains("install busybox-static"), "{err}");
        assert_eq!(dir.entries(), Vec::<String>::new());
    }

    #[test]
    fn dynamic_or_non_elf_busybox_is_refused_and_cleaned_up() {
        let dir = TempDir::new("dynamic");
        let dest = dir.0.join("bb");
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().unwrap();
        let err = busybox_from(&me, &dest).expect_err("must fail");
        assert!(matches!(err, BootstrapError::BusyboxNotStatic(_)), "{err}");

        let script = dir.0.join("fake-busybox");
        fs::write(&script, b"#!/bin/sh\necho bin/sh\n").unwrap();
        let err = busybox_from(&script, &dest).expect_err("must fail");
        assert!(matches!(err, BootstrapError::BusyboxNotElf { .. }), "{err}");
        assert_eq!(dir.entries(), vec!["fake-busybox".to_string()]);
    }

    #[test]
    fn invalid_destination_is_refused() {
        assert!(matches!(
            busybox_from(Path::new(HOST_BUSYBOX), Path::new("/")),
            Err(BootstrapError::InvalidDestination(_))
        ));
    }

    /// A minimal ELF header with program headers of the given types.
    fn fake_elf(class64: bool, big_endian: bool, types: &[u32]) -> Vec<u8> {
        let (ehsize, phentsize) = if class64 { (64, 56) } else { (52, 32) };
        let mut elf = vec![0u8; ehsize + phentsize * types.len()];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = if class64 { 2 } else { 1 };
        elf[5] = if big_endian { 2 } else { 1 };
        let put = |elf: &mut Vec<u8>, at: usize, value: u64, len: usize| {
            for i in 0..len {
                let shift = if big_endian { 8 * (len - 1 - i) } else { 8 * i };
                elf[at + i] = (value >> shift) as u8;
            }
        };
        if class64 {
            put(&mut elf, 0x20, ehsize as u64, 8);
            put(&mut elf, 0x36, phentsize as u64, 2);
            put(&mut elf, 0x38, types.len() as u64, 2);
        } else {
            put(&mut elf, 0x1c, ehsize as u64, 4);
            put(&mut elf, 0x2a, phentsize as u64, 2);
            put(&mut elf, 0x2c, types.len() as u64, 2);
        }
        for (i, t) in types.iter().enumerate() {
            put(&mut elf, ehsize + i * phentsize, u64::from(*t), 4);
        }
        elf
    }

    #[test]
    fn elf_interpreter_detection() {
        for class64 in [false, true] {
            for be in [false, true] {
                assert_eq!(
                    elf_needs_interpreter(&fake_elf(class64, be, &[1, 1, 4])),
                    Ok(false)
                );
                assert_eq!(
                    elf_needs_interpreter(&fake_elf(class64, be, &[6, 3, 1])),
                    Ok(true)
                );
            }
        }
        assert!(elf_needs_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_needs_interpreter(b"").is_err());
        let mut truncated = fake_elf(true, false, &[1, 1]);
        truncated.truncate(70);
        assert_eq!(
            elf_needs_interpreter(&truncated),
            Err("truncated program headers")
        );
        let mut huge = fake_elf(true, false, &[1]);
        huge[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(elf_needs_interpreter(&huge).is_err());
        // Every prefix of a valid header is handled without panicking.
        let full = fake_elf(false, true, &[1, 3]);
        for len in 0..full.len() {
            let _ = elf_needs_interpreter(&full[..len]);
        }
        if Path::new(HOST_BUSYBOX).is_file() {
            assert_eq!(
                elf_needs_interpreter(&fs::read(HOST_BUSYBOX).unwrap()),
                Ok(false)
            );
        }
    }

    #[test]
    fn applet_list_parsing() {
        let list = "bin/busybox\nbin/sh\nusr/bin/[\n\nsbin/init\n";
        assert_eq!(
            applet_paths(list).unwrap(),
            vec![
                PathBuf::from("bin/sh"),
                PathBuf::from("usr/bin/["),
                PathBuf::from("sbin/init")
            ]
        );
        assert!(applet_paths("bin/../../etc/passwd\n").is_err());
        assert!(applet_paths("/bin/sh\n").is_err());
        assert_eq!(
            applet_paths("linuxrc\n").unwrap(),
            vec![PathBuf::from("linuxrc")]
        );
        assert!(applet_paths("bin/busybox\n").is_err());
        assert_eq!(
            applet_link_target(Path::new("bin/sh")),
            PathBuf::from("../bin/busybox")
        );
        assert_eq!(
            applet_link_target(Path::new("usr/sbin/chroot")),
            PathBuf::from("../../bin/busybox")
        );
    }

    #[test]
    fn busybox_version_parsing() {
        assert_eq!(
            parse_busybox_version(
                "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.\nmore"
            ),
            Some("1.35.0".to_string())
        );
        assert_eq!(
            parse_busybox_version("BusyBox v1.36.1-GIT\n"),
            Some("1.36.1-git".into())
        );
        assert_eq!(parse_busybox_version("busybox 1.2\n"), None);
        assert_eq!(parse_busybox_version("BusyBox v1\"x\n"), None);
        assert_eq!(parse_busybox_version(""), None);
        assert!(os_release(None).contains("ID=busybox"));
    }

    #[test]
    fn mountinfo_parsing() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:5 / /tmp/my\\040dir/proc rw - proc proc rw\n";
        let points: Vec<PathBuf> = mount_points(text).collect();
        assert_eq!(
            points,
            vec![PathBuf::from("/"), PathBuf::from("/tmp/my dir/proc")]
        );
        assert_eq!(unescape_octal("a\\134b\\011"), OsString::from("a\\b\t"));
        assert_eq!(
            unescape_octal("trailing\\04"),
            OsString::from("trailing\\04")
        );
        assert_eq!(unescape_octal("\\999"), OsString::from("\\999"));
    }

    #[test]
    fn one_line_sources() {
        let text = "# comment\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb [ arch=amd64 signed-by=/k.gpg ] http://a.example/debian bookworm main # x\n\
                    deb [arch=amd64] http://b.example/debian bookworm-updates main\n\
                    deb http://c.example/debian-security bookworm-security main\n\
                    deb\n";
        let sources = parse_one_line_sources(text);
        assert_eq!(
            sources,
            vec![
                AptSource {
                    uri: "http://a.example/debian".into(),
                    suites: vec!["bookworm".into()]
                },
                AptSource {
                    uri: "http://b.example/debian".into(),
                    suites: vec!["bookworm-updates".into()]
                },
                AptSource {
                    uri: "http://c.example/debian-security".into(),
                    suites: vec!["bookworm-security".into()]
                },
            ]
        );
        assert_eq!(
            pick_mirror(&sources, "bookworm").as_deref(),
            Some("http://a.example/debian")
        );
        assert_eq!(pick_mirror(&sources, "trixie"), None);
    }

    #[test]
    fn deb822_sources() {
        let text = "Types: deb deb-src\n\
                    # http://snapshot.example/archive\n\
                    URIs: http://deb.example/debian\n\
                    Suites: bookworm bookworm-updates\n\
                    Components: main\n\
                    \n\
                    Types: deb\n\
                    URIs: http://off.example/debian\n\
                    Suites: trixie\n\
                    Enabled: no\n\
                    \n\
                    Types: deb-src\n\
                    URIs: http://src.example/debian\n\
                    Suites: trixie\n\
                    \n\
                    types: deb\n\
                    uris: http://one.example/debian\n  http://two.example/debian\n\
                    suites: trixie\n";
        let sources = parse_deb822_sources(text);
        assert_eq!(
            sources,
            vec![
                AptSource {
                    uri: "http://deb.example/debian".into(),
                    suites: vec!["bookworm".into(), "bookworm-updates".into()]
                },
                AptSource {
                    uri: "http://one.example/debian".into(),
                    suites: vec!["trixie".into()]
                },
                AptSource {
                    uri: "http://two.example/debian".into(),
                    suites: vec!["trixie".into()]
                },
            ]
        );
        assert_eq!(
            pick_mirror(&sources, "trixie").as_deref(),
            Some("http://one.example/debian")
        );
    }

    #[test]
    fn host_mirror_reads_files_in_order_and_falls_back() {
        let dir = TempDir::new("apt");
        assert_eq!(host_mirror(&dir.0, "bookworm"), DEFAULT_MIRROR);
        fs::create_dir(dir.0.join("sources.list.d")).unwrap();
        fs::write(
            dir.0.join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://b.example/debian\nSuites: bookworm\n",
        )
        .unwrap();
        fs::write(
            dir.0.join("sources.list.d/a.list.disabled"),
            "deb http://disabled.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(host_mirror(&dir.0, "bookworm"), "http://b.example/debian");
        fs::write(
            dir.0.join("sources.list.d/a.list"),
            "deb http://a.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(host_mirror(&dir.0, "bookworm"), "http://a.example/debian");
        fs::write(
            dir.0.join("sources.list"),
            "deb http://main.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(&dir.0, "bookworm"),
            "http://main.example/debian"
        );
        assert_eq!(host_mirror(&dir.0, "trixie"), DEFAULT_MIRROR);
    }

    #[test]
    fn debian_options_are_validated() {
        let dir = TempDir::new("opts");
        let dest = dir.0.join("deb");
        let mut progress = |_: &str| {};
        let bad = [
            DebianOptions {
                suite: "--foo".into(),
                ..DebianOptions::default()
            },
            DebianOptions {
                include: vec!["vim,--foo".into()],
                ..DebianOptions::default()
            },
            DebianOptions {
                mirror: Some("--keyring=/x".into()),
                ..DebianOptions::default()
            },
        ];
        for opts in &bad {
            let err = debian(&dest, opts, &mut progress).expect_err("must refuse");
            assert!(matches!(err, BootstrapError::InvalidOption { .. }), "{err}");
        }
        assert!(validate_package("iputils-ping").is_ok());
        assert!(validate_package("libstdc++6").is_ok());
        assert!(validate_package("Vim").is_err());
        assert_eq!(dir.entries(), Vec::<String>::new());
    }

    #[test]
    fn shadow_root_password_is_emptied() {
        let shadow = "root:*:20786:0:99999:7:::\ndaemon:*:20786:0:99999:7:::\n";
        assert_eq!(
            with_empty_password(shadow, "root").unwrap(),
            "root::20786:0:99999:7:::\ndaemon:*:20786:0:99999:7:::\n"
        );
        assert_eq!(with_empty_password("daemon:*:1::::::\n", "root"), None);
    }

    #[test]
    fn debian_tree_is_prepared_for_containers() {
        // A stand-in for a debootstrap tree with just the files the preparation touches.
        let dir = TempDir::new("debtree");
        let root = dir.0.as_path();
        for d in [
            "etc",
            "var/lib/dbus",
            "usr/lib/systemd/network",
            "usr/lib/systemd/system",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/hostname"), "host\n").unwrap();
        fs::write(root.join("etc/resolv.conf"), "nameserver 10.9.9.9\n").unwrap();
        fs::write(
            root.join("etc/machine-id"),
            "63d6d08cea3d405685073bfea2d958dc\n",
        )
        .unwrap();
        fs::write(root.join("var/lib/dbus/machine-id"), "63d6d08c\n").unwrap();
        fs::write(root.join("etc/shadow"), "root:*:20786:0:99999:7:::\n").unwrap();
        fs::write(
            root.join("usr/lib/systemd/network/80-container-host0.network"),
            "",
        )
        .unwrap();
        for unit in ["systemd-networkd.service", "systemd-networkd.socket"] {
            fs::write(root.join("usr/lib/systemd/system").join(unit), "").unwrap();
        }

        prepare_debian_root(root).expect("prepare");
        assert!(!root.join("etc/hostname").exists());
        assert_eq!(fs::read(root.join("etc/resolv.conf")).unwrap(), b"");
        assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert_eq!(
            fs::read_link(root.join("var/lib/dbus/machine-id")).unwrap(),
            PathBuf::from("/etc/machine-id")
        );
        assert!(fs::read_to_string(root.join("etc/shadow"))
            .unwrap()
            .starts_with("root::"));
        assert!(root.join("etc/hosts").is_file());

        assert!(!networkd_enabled(root));
        enable_networkd_by_links(root).expect("links");
        assert!(networkd_enabled(root));
        assert_eq!(
            fs::read_link(
                root.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
            )
            .unwrap(),
            PathBuf::from("/usr/lib/systemd/system/systemd-networkd.service")
        );

        fs::remove_file(root.join("usr/lib/systemd/network/80-container-host0.network")).unwrap();
        assert!(matches!(
            prepare_debian_root(root),
            Err(BootstrapError::Incomplete(_))
        ));
    }
}
