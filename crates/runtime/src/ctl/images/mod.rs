//! The image directory, machinectl's image verbs: `list-images`,
//! `image-status`, `show-image`, `clone`, `rename`, `remove`, `read-only`,
//! `clean`, `import-tar`, `import-fs`, `export-tar`, `pull-tar`, and
//! `bootstrap`.
//!
//! Every verb that makes an image builds it in a hidden `.#NAME.XXXXXXXX`
//! directory of the image directory and renames it into place at the end
//! (never over an existing image); a failure, SIGINT, SIGTERM or SIGHUP
//! removes the partial directory ([`Partial`]), and `clean` removes those a
//! crash left. [`tree`] copies and measures trees, [`tar`] reads and writes
//! archives, [`pull`] downloads.

pub mod pull;
pub mod tar;
pub mod tree;

use std::ffi::CString;
use std::io::{BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use netspawn_common::names::check_machine_name;
use netspawn_common::paths::Paths;
use serde_json::{json, Value};
use thiserror::Error;

use super::list::print_json;
use super::table::Table;
use super::timefmt::{format_relative, format_timestamp, now_usec};
use super::{CtlError, ListOptions, OutputMode};

/// The inode flag chattr +i sets; machined shows such images as read-only.
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

/// One image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub path: PathBuf,
    /// "directory" (the only kind netspawn runs).
    pub kind: &'static str,
    pub read_only: bool,
    /// Birth time, µs since the epoch; 0 if the filesystem does not record it.
    pub created_usec: u64,
    pub modified_usec: u64,
    /// `NAME.nspawn` next to the image, if there is one.
    pub settings: Option<PathBuf>,
    /// Disk space used (allocated blocks), if measured.
    pub usage: Option<u64>,
}

fn usec(t: std::io::Result<std::time::SystemTime>) -> u64 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as u64)
}

fn read_only(path: &Path) -> bool {
    let Ok(dir) = std::fs::File::open(path) else {
        return false;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    let immutable = r == 0 && flags & FS_IMMUTABLE_FL != 0;
    let ro_mount = nix::sys::statvfs::fstatvfs(&dir)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    immutable || ro_mount
}

/// The directory images in `dir` (hidden names and names that are not valid
/// machine names are skipped), sorted by name. A missing directory has none.
pub fn scan(dir: &Path) -> Result<Vec<Image>, CtlError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(CtlError::Images {
                path: dir.to_path_buf(),
                err,
            })
        }
    };
    let mut out = Vec::new();
    for de in rd.flatten() {
        let Some(name) = de.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || check_machine_name(&name).is_err() {
            continue;
        }
        let path = de.path();
        // Follows symlinks, as machined lists a symlink to a directory.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let settings = dir.join(format!("{name}.nspawn"));
        out.push(Image {
            read_only: read_only(&path),
            created_usec: usec(meta.created()),
            modified_usec: usec(meta.modified()),
            settings: settings.is_file().then_some(settings),
            kind: image_kind(&path),
            usage: None,
            path,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The `list-images` table (machinectl's columns).
pub fn render_table(images: &[Image], no_legend: bool) -> String {
    let mut t = Table::new(&["name", "type", "ro", "usage", "created", "modified"]);
    for i in images {
        t.push(vec![
            i.name.clone(),
            i.kind.to_string(),
            if i.read_only { "yes" } else { "no" }.to_string(),
            i.usage.map(pull::human).unwrap_or_default(),
            format_timestamp(i.created_usec),
            format_timestamp(i.modified_usec),
        ]);
    }
    let mut out = String::new();
    if !t.is_empty() {
        out.push_str(&t.render(!no_legend));
    }
    if !no_legend {
        if t.is_empty() {
            out.push_str("No images.\n");
        } else {
            out.push_str(&format!("\n{} images listed.\n", t.len()));
        }
    }
    out
}

/// JSON for `list-images -o json` (machinectl's names plus path and settings).
pub fn to_json(images: &[Image]) -> Value {
    Value::Array(
        images
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "type": i.kind,
                    "ro": i.read_only,
                    "usage": i.usage,
                    "created": (i.created_usec > 0).then_some(i.created_usec),
                    "modified": (i.modified_usec > 0).then_some(i.modified_usec),
                    "path": i.path.to_string_lossy(),
                    "settings": i.settings.as_ref().map(|p| p.to_string_lossy()),
                })
            })
            .collect(),
    )
}

/// `netspawnctl list-images`.
pub fn list_images(opts: &ListOptions) -> Result<i32, CtlError> {
    let mut images = scan(&Paths::from_env().image_dir)?;
    for i in &mut images {
        i.usage = measure(&i.path);
    }
    match opts.output {
        OutputMode::Short => std::io::stdout()
            .lock()
            .write_all(render_table(&images, opts.no_legend).as_bytes())?,
        mode => print_json(&to_json(&images), mode)?,
    }
    Ok(0)
}

/// Which image `bootstrap` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapKind {
    /// From the host's static busybox.
    Busybox,
    /// With debootstrap.
    Debian {
        suite: String,
        mirror: Option<String>,
    },
}

/// Where `bootstrap NAME [--directory=DIR]` puts the image, after checking
/// NAME against the machine-name rules.
pub fn bootstrap_destination(
    name: &str,
    directory: Option<&Path>,
    image_dir: &Path,
) -> Result<PathBuf, CtlError> {
    check_machine_name(name).map_err(|reason| CtlError::InvalidName {
        name: name.to_string(),
        reason,
    })?;
    Ok(directory.map_or_else(|| image_dir.join(name), Path::to_path_buf))
}

/// `netspawnctl bootstrap busybox|debian NAME`.
pub fn bootstrap(
    kind: &BootstrapKind,
    name: &str,
    directory: Option<&Path>,
) -> Result<i32, CtlError> {
    let dest = bootstrap_destination(name, directory, &Paths::from_env().image_dir)?;
    match kind {
        BootstrapKind::Busybox => crate::bootstrap::busybox(&dest)?,
        BootstrapKind::Debian { suite, mirror } => {
            let opts = crate::bootstrap::DebianOptions {
                suite: suite.clone(),
                mirror: mirror.clone(),
                include: vec![],
            };
            crate::bootstrap::debian(&dest, &opts, &mut |line| eprintln!("{line}"))?
        }
    }
    Ok(0)
}

/// `btrfs`'s magic in `statfs.f_type`.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// "subvolume" for the root of a btrfs subvolume (inode 256), else "directory".
fn image_kind(path: &Path) -> &'static str {
    if is_subvolume(path) {
        "subvolume"
    } else {
        "directory"
    }
}

fn is_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_dir()
        && meta.ino() == 256
        && nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
}

/// The disk usage of the tree at `path`, if it can be measured.
fn measure(path: &Path) -> Option<u64> {
    let parent = tree::open_dir(path.parent()?).ok()?;
    let name = tree::cname(path.file_name()?).ok()?;
    tree::usage(parent.as_fd(), &name).ok()
}

/// Why an image verb failed; each message is one line.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("No image '{0}' known")]
    NotFound(String),
    #[error("Image '{0}' already exists")]
    Exists(String),
    #[error("Image '{name}' is in use by running machine '{machine}'")]
    InUse { name: String, machine: String },
    #[error("Image '{0}' is read-only")]
    ReadOnly(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{0}")]
    Tar(#[from] tar::TarError),
    #[error("{from}: {err}")]
    Import { from: String, err: tar::TarError },
    #[error(transparent)]
    Pull(#[from] pull::PullError),
    #[error("Interrupted; the partial image was removed")]
    Interrupted,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |err| ImageError::Io { what, err }
}

fn valid_name(name: &str) -> Result<(), CtlError> {
    check_machine_name(name).map_err(|reason| CtlError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

fn image_dir() -> PathBuf {
    Paths::from_env().image_dir
}

/// The image `name`, or [`ImageError::NotFound`].
pub fn find(name: &str) -> Result<Image, CtlError> {
    valid_name(name)?;
    let dir = image_dir();
    scan(&dir)?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| ImageError::NotFound(name.to_string()).into())
}

/// Fails unless no image (nor anything else) is called `name`.
fn check_free(name: &str) -> Result<PathBuf, CtlError> {
    valid_name(name)?;
    let path = image_dir().join(name);
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(ImageError::Exists(name.to_string()).into());
    }
    Ok(path)
}

/// The running machine whose root is the image at `path`, if any (the
/// registry's `ROOT=`).
pub fn user_of(path: &Path) -> Option<String> {
    let want = path.canonicalize().ok()?;
    let entries = super::registry().list().ok()?;
    entries
        .into_iter()
        .find(|e| e.root.canonicalize().is_ok_and(|r| r == want))
        .map(|e| e.name)
}

fn check_unused(image: &Image) -> Result<(), CtlError> {
    match user_of(&image.path) {
        Some(machine) => Err(ImageError::InUse {
            name: image.name.clone(),
            machine,
        }
        .into()),
        None => Ok(()),
    }
}

// ---- interruption and partial images ----

static ABORT: AtomicBool = AtomicBool::new(false);
static PARTIALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// True once SIGINT, SIGTERM or SIGHUP arrived.
pub fn aborted() -> bool {
    ABORT.load(Ordering::Relaxed)
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this (the only) thread and lets a
/// watcher thread take them: it sets the abort flag that the work checks,
/// and if the work does not stop within 5 s (a stalled download), removes
/// the partial images itself and exits with 130.
fn catch_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_err() {
                return;
            }
            ABORT.store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_secs(5));
            let paths = PARTIALS.lock().map(|p| p.clone()).unwrap_or_default();
            for p in paths {
                remove_tree(&p);
            }
            std::process::exit(130);
        });
}

fn remove_tree(p: &Path) {
    let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom fills the 4-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        let t = now_usec() ^ u64::from(std::process::id());
        b = (t as u32).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A hidden `.#NAME.XXXXXXXX` path beside `dest`, removed on drop unless
/// renamed into place with [`Partial::commit`].
pub struct Partial {
    pub path: PathBuf,
    dest: PathBuf,
    armed: bool,
}

impl Partial {
    /// Reserves the hidden name for `dest` (nothing is made yet).
    pub fn reserve(dest: &Path) -> Partial {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let path = dir.join(format!(".#{name}.{}", random_suffix()));
        if let Ok(mut p) = PARTIALS.lock() {
            p.push(path.clone());
        }
        Partial {
            path,
            dest: dest.to_path_buf(),
            armed: true,
        }
    }

    /// The hidden name only (for `*at` calls in the image directory).
    pub fn file_name(&self) -> CString {
        CString::new(self.path.file_name().unwrap_or_default().as_bytes()).expect("no NUL")
    }

    /// Renames the finished image into place, never over an existing one.
    pub fn commit(mut self) -> Result<(), CtlError> {
        let from = CString::new(self.path.as_os_str().as_bytes()).expect("no NUL");
        let to = CString::new(self.dest.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: two NUL-terminated paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                let name = self.dest.file_name().unwrap_or_default().to_string_lossy();
                return Err(ImageError::Exists(name.into_owned()).into());
            }
            return Err(io_err(format!("rename into {}", self.dest.display()))(err).into());
        }
        self.armed = false;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            remove_tree(&self.path);
        }
        if let Ok(mut p) = PARTIALS.lock() {
            p.retain(|x| *x != self.path);
        }
    }
}

fn interrupted<E: Into<CtlError>>(e: E) -> CtlError {
    if aborted() {
        ImageError::Interrupted.into()
    } else {
        e.into()
    }
}

// ---- the verbs ----

/// `image-status NAME...`.
pub fn image_status(names: &[String]) -> Result<i32, CtlError> {
    let mut out = String::new();
    for (n, name) in names.iter().enumerate() {
        let i = find(name)?;
        if n > 0 {
            out.push('\n');
        }
        let now = now_usec();
        let when = |t: u64| {
            if t == 0 {
                "n/a".to_string()
            } else {
                format!("{}; {}", format_timestamp(t), format_relative(t, now))
            }
        };
        out.push_str(&format!("{}\n", i.name));
        out.push_str(&format!("\t    Path: {}\n", i.path.display()));
        out.push_str(&format!("\t    Type: {}\n", i.kind));
        let os = crate::sys::open_in_root(&i.path, Path::new("/etc/os-release"), libc::O_RDONLY)
            .or_else(|_| {
                crate::sys::open_in_root(&i.path, Path::new("/usr/lib/os-release"), libc::O_RDONLY)
            })
            .ok()
            .and_then(|fd| {
                let mut s = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(std::fs::File::from(fd), 64 * 1024),
                    &mut s,
                )
                .ok()?;
                Some(super::osrelease::OsRelease::parse(&s))
            });
        if let Some(os) = os {
            out.push_str(&format!("\t      OS: {}\n", os.pretty_name()));
        }
        out.push_str(&format!(
            "\t      RO: {}\n",
            if i.read_only { "read-only" } else { "writable" }
        ));
        out.push_str(&format!("\t Created: {}\n", when(i.created_usec)));
        out.push_str(&format!("\tModified: {}\n", when(i.modified_usec)));
        if let Some(u) = measure(&i.path) {
            out.push_str(&format!("\t   Usage: {}\n", pull::human(u)));
        }
        if let Some(s) = &i.settings {
            out.push_str(&format!("\tSettings: {}\n", s.display()));
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(0)
}

/// The properties `show-image NAME` prints, in machined's names.
pub fn image_properties(i: &Image) -> Vec<(&'static str, String)> {
    let ts = |t: u64| {
        if t == 0 {
            String::new()
        } else {
            format_timestamp(t)
        }
    };
    let usage = measure(&i.path);
    vec![
        ("Name", i.name.clone()),
        ("Path", i.path.display().to_string()),
        ("Type", i.kind.to_string()),
        (
            "ReadOnly",
            if i.read_only { "yes" } else { "no" }.to_string(),
        ),
        ("CreationTimestamp", ts(i.created_usec)),
        ("ModificationTimestamp", ts(i.modified_usec)),
        ("Usage", usage.map(|u| u.to_string()).unwrap_or_default()),
        ("Limit", String::new()),
        (
            "UsageExclusive",
            usage.map(|u| u.to_string()).unwrap_or_default(),
        ),
        ("LimitExclusive", String::new()),
    ]
}

/// `show-image [NAME...] [-p PROP] [--value]`; without a name, the pool's properties.
pub fn show_image(names: &[String], props: &[String], value: bool) -> Result<i32, CtlError> {
    let mut out = String::new();
    if names.is_empty() {
        out.push_str(&super::show::render(
            &super::show::pool_properties(),
            props,
            value,
        ));
    }
    for (n, name) in names.iter().enumerate() {
        let i = find(name)?;
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&super::show::render(&image_properties(&i), props, value));
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(0)
}

fn settings_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.nspawn"))
}

/// `clone SRC DST [--read-only]`: a btrfs snapshot where SRC is a
/// subvolume, else a faithful copy (reflinks where the filesystem has them).
pub fn clone(src: &str, dst: &str, read_only: bool) -> Result<i32, CtlError> {
    let image = find(src)?;
    let dest = check_free(dst)?;
    catch_signals();
    let dir = image_dir();
    let partial = Partial::reserve(&dest);
    let dirfd = tree::open_dir(&dir).map_err(io_err(format!("open {}", dir.display())))?;
    if image.kind == "subvolume" {
        snapshot(&image.path, dirfd.as_fd(), &partial.file_name())
            .map_err(io_err(format!("snapshot {}", image.path.display())))?;
    } else {
        let srcdir = tree::open_dir(image.path.parent().unwrap_or(&dir))
            .map_err(io_err(format!("open {}", dir.display())))?;
        let name = tree::cname(image.path.file_name().unwrap_or_default())
            .map_err(io_err("image name"))?;
        tree::Copier::new(false)
            .with_abort(aborted)
            .copy(srcdir.as_fd(), &name, dirfd.as_fd(), &partial.file_name())
            .map_err(|e| interrupted(io_err(format!("copy {}", image.path.display()))(e)))?;
    }
    if read_only {
        set_immutable(&partial.path, true).map_err(io_err("make the clone read-only"))?;
    }
    partial.commit()?;
    if let Some(s) = &image.settings {
        let to = settings_of(&dir, dst);
        if !to.exists() {
            std::fs::copy(s, &to).map_err(io_err(format!("copy {}", s.display())))?;
        }
    }
    Ok(0)
}

/// `BTRFS_IOC_SNAP_CREATE_V2`: a writable snapshot of the subvolume `src`
/// named `name` in `dir`.
fn snapshot(
    src: &Path,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> std::io::Result<()> {
    #[repr(C)]
    struct VolArgsV2 {
        fd: i64,
        transid: u64,
        flags: u64,
        unused: [u64; 4],
        name: [u8; 4040],
    }
    const BTRFS_IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
    let srcfd = tree::open_dir(src)?;
    let mut args = VolArgsV2 {
        fd: i64::from(srcfd.as_raw_fd()),
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; 4040],
    };
    let bytes = name.to_bytes();
    if bytes.len() >= args.name.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    args.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: the argument is the kernel's 4096-byte btrfs_ioctl_vol_args_v2.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_SNAP_CREATE_V2, &mut args) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets or clears the immutable flag (`chattr +i`) of a directory image.
fn set_immutable(path: &Path, on: bool) -> std::io::Result<()> {
    let dir = tree::open_dir(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long.
    unsafe {
        if libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if on {
            flags |= FS_IMMUTABLE_FL;
        } else {
            flags &= !FS_IMMUTABLE_FL;
        }
        if libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `rename OLD NEW` (with its `.nspawn` file).
pub fn rename(old: &str, new: &str) -> Result<i32, CtlError> {
    let image = find(old)?;
    let dest = check_free(new)?;
    check_unused(&image)?;
    if image.read_only {
        return Err(ImageError::ReadOnly(old.to_string()).into());
    }
    let from = CString::new(image.path.as_os_str().as_bytes()).expect("no NUL");
    let to = CString::new(dest.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: two NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EEXIST) {
            return Err(ImageError::Exists(new.to_string()).into());
        }
        return Err(io_err(format!("rename {}", image.path.display()))(err).into());
    }
    if let Some(s) = &image.settings {
        let to = settings_of(&image_dir(), new);
        if !to.exists() {
            std::fs::rename(s, &to).map_err(io_err(format!("rename {}", s.display())))?;
        }
    }
    Ok(0)
}

/// `remove NAME...`: refused for an image a running machine uses, or a
/// read-only one. The image first moves to a hidden name, so it disappears
/// at once, then its tree is removed.
pub fn remove(names: &[String]) -> Result<i32, CtlError> {
    let images = names
        .iter()
        .map(|n| find(n))
        .collect::<Result<Vec<_>, _>>()?;
    for image in &images {
        check_unused(image)?;
        if image.read_only {
            return Err(ImageError::ReadOnly(image.name.clone()).into());
        }
    }
    for image in images {
        let hidden = Partial::reserve(&image.path);
        std::fs::rename(&image.path, &hidden.path)
            .map_err(io_err(format!("remove {}", image.path.display())))?;
        let dir = tree::open_dir(image.path.parent().unwrap_or(Path::new("/")))
            .map_err(io_err("open the image directory"))?;
        tree::unlink_at(dir.as_fd(), &hidden.file_name())
            .map_err(io_err(format!("remove {}", image.path.display())))?;
        if let Some(s) = &image.settings {
            let _ = std::fs::remove_file(s);
        }
    }
    Ok(0)
}

/// `read-only NAME [BOOL]`: the immutable flag on the image's directory, as
/// machined sets it.
pub fn read_only_verb(name: &str, value: Option<&str>) -> Result<i32, CtlError> {
    let image = find(name)?;
    let on = match value.unwrap_or("yes") {
        "yes" | "true" | "on" | "1" => true,
        "no" | "false" | "off" | "0" => false,
        v => {
            return Err(CtlError::Usage(format!(
                "Invalid boolean '{v}': expected yes or no"
            )))
        }
    };
    set_immutable(&image.path, on).map_err(io_err(format!(
        "set the immutable flag of {}",
        image.path.display()
    )))?;
    Ok(0)
}

/// `clean`: removes the hidden `.#…` leftovers of interrupted imports,
/// clones and removals; prints what it removed.
pub fn clean(quiet: bool) -> Result<i32, CtlError> {
    let dir = image_dir();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(CtlError::Images { path: dir, err }),
    };
    let mut names: Vec<_> = rd
        .flatten()
        .map(|d| d.file_name())
        .filter(|n| n.as_bytes().starts_with(b".#"))
        .collect();
    names.sort();
    let dirfd = tree::open_dir(&dir).map_err(io_err(format!("open {}", dir.display())))?;
    for n in names {
        let c = tree::cname(&n).map_err(io_err("name"))?;
        // An immutable leftover (a read-only clone) is made mutable first.
        let path = dir.join(&n);
        let _ = set_immutable(&path, false);
        tree::unlink_at(dirfd.as_fd(), &c).map_err(io_err(format!("remove {}", path.display())))?;
        if !quiet {
            println!("Removed image '{}'.", n.to_string_lossy());
        }
    }
    Ok(0)
}

/// `import-tar FILE|- [NAME]` (NAME defaults to FILE's name without its
/// `.tar…` suffix); the compression is recognized by magic.
pub fn import_tar(file: &str, name: Option<&str>) -> Result<i32, CtlError> {
    let name = match name {
        Some(n) => n.to_string(),
        None if file == "-" => {
            return Err(CtlError::Usage(
                "Need an image name when importing from standard input".into(),
            ))
        }
        None => pull::name_from_url(file),
    };
    let dest = check_free(&name)?;
    let input: Box<dyn std::io::Read> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).map_err(io_err(format!("open {file}")))?)
    };
    catch_signals();
    let partial = Partial::reserve(&dest);
    std::fs::create_dir(&partial.path)
        .map_err(io_err(format!("create {}", partial.path.display())))?;
    let source = |err| ImageError::Import {
        from: file.to_string(),
        err,
    };
    let mut reader = tar::decompress(BufReader::with_capacity(1 << 20, input)).map_err(source)?;
    tar::extract(&mut reader, &partial.path, &aborted).map_err(|e| interrupted(source(e)))?;
    partial.commit()?;
    Ok(0)
}

/// `import-fs DIR [NAME]`: a faithful copy of a directory tree.
pub fn import_fs(src: &Path, name: Option<&str>) -> Result<i32, CtlError> {
    let name = match name {
        Some(n) => n.to_string(),
        None => src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let dest = check_free(&name)?;
    let meta = std::fs::metadata(src).map_err(io_err(format!("import {}", src.display())))?;
    if !meta.is_dir() {
        return Err(CtlError::Usage(format!(
            "{} is not a directory",
            src.display()
        )));
    }
    catch_signals();
    let src = src
        .canonicalize()
        .map_err(io_err(format!("import {}", src.display())))?;
    let partial = Partial::reserve(&dest);
    let srcdir = tree::open_dir(src.parent().unwrap_or(Path::new("/")))
        .map_err(io_err(format!("open {}", src.display())))?;
    let dirfd = tree::open_dir(&image_dir()).map_err(io_err("open the image directory"))?;
    let sname = tree::cname(src.file_name().unwrap_or(std::ffi::OsStr::new(".")))
        .map_err(io_err("name"))?;
    tree::Copier::new(false)
        .with_abort(aborted)
        .copy(srcdir.as_fd(), &sname, dirfd.as_fd(), &partial.file_name())
        .map_err(|e| interrupted(io_err(format!("copy {}", src.display()))(e)))?;
    partial.commit()?;
    Ok(0)
}

/// `export-tar NAME FILE|-`: compressed as FILE's suffix says (none for `-`),
/// written to a hidden file beside FILE and renamed at the end.
pub fn export_tar(name: &str, file: &str) -> Result<i32, CtlError> {
    let image = find(name)?;
    if file == "-" {
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let mut w = tar::write_archive(&image.path, out)?;
        w.flush()?;
        return Ok(0);
    }
    let dest = PathBuf::from(file);
    if dest.exists() {
        return Err(CtlError::Usage(format!("{file} already exists")));
    }
    catch_signals();
    let partial = Partial::reserve(&dest);
    let f = std::fs::File::create_new(&partial.path)
        .map_err(io_err(format!("create {}", partial.path.display())))?;
    let sink = tar::Sink::new(
        std::io::BufWriter::with_capacity(1 << 20, f),
        tar::Compression::from_name(&dest),
    )?;
    let sink = tar::write_archive(&image.path, sink)?;
    let mut w = sink.finish()?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    partial.commit()?;
    Ok(0)
}

/// `pull-tar URL [NAME] [--verify=]`.
pub fn pull_tar(
    url: &str,
    name: Option<&str>,
    verify: pull::Verify,
    quiet: bool,
) -> Result<i32, CtlError> {
    pull::check_url(url)?;
    let name = name.map_or_else(|| pull::name_from_url(url), str::to_string);
    let dest = check_free(&name)?;
    catch_signals();
    let file = pull::file_name(url).to_string();
    let expected = if verify == pull::Verify::No {
        None
    } else {
        let sums_url = pull::beside(url, "SHA256SUMS");
        let sums = pull::fetch_small(&sums_url)?;
        if verify == pull::Verify::Signature {
            let tmp = Partial::reserve(&dest);
            pull::verify_signature(&sums_url, &sums, &tmp.path)?;
        }
        let text = String::from_utf8_lossy(&sums);
        Some(
            pull::expected_sum(&text, &file).ok_or(pull::PullError::NotListed {
                file: file.clone(),
                sums: sums_url,
            })?,
        )
    };
    let mut dl = pull::Download::start(url, &aborted, quiet)?;
    let partial = Partial::reserve(&dest);
    std::fs::create_dir(&partial.path)
        .map_err(io_err(format!("create {}", partial.path.display())))?;
    let extracted = (|| {
        let mut reader = tar::decompress(BufReader::with_capacity(1 << 20, &mut dl))?;
        tar::extract(&mut reader, &partial.path, &aborted)
    })();
    if let Err(e) = extracted {
        // A download error explains a broken archive better than tar does.
        return Err(match dl.failure() {
            Some(f) if !aborted() => f.into(),
            _ => interrupted(ImageError::Import {
                from: url.to_string(),
                err: e,
            }),
        });
    }
    let got = dl.finish().map_err(|e| match dl.failure() {
        Some(f) => f.into(),
        None => interrupted(io_err(format!("download {url}"))(e)),
    })?;
    if let Some(want) = expected {
        if got != want {
            return Err(ImageError::Pull(pull::PullError::Mismatch {
                file,
                expected: want,
                got,
            })
            .into());
        }
    }
    partial.commit()?;
    dl.done();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination() {
        let d = bootstrap_destination("web", None, Path::new("/var/lib/machines")).unwrap();
        assert_eq!(d, PathBuf::from("/var/lib/machines/web"));
        let d = bootstrap_destination("web", Some(Path::new("/srv/x")), Path::new("/m")).unwrap();
        assert_eq!(d, PathBuf::from("/srv/x"));
        let err = bootstrap_destination("a_b", None, Path::new("/m")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid machine name 'a_b': character '_' is not allowed (only letters, digits, '-' and '.')"
        );
    }

    #[test]
    fn scans_directories_only() {
        let tmp = std::env::temp_dir().join(format!("netspawn-ctl-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("web/etc")).unwrap();
        std::fs::create_dir_all(tmp.join(".hidden")).unwrap();
        std::fs::create_dir_all(tmp.join("bad_name")).unwrap();
        std::fs::write(tmp.join("web.nspawn"), "[Exec]\n").unwrap();
        std::fs::write(tmp.join("file"), "").unwrap();
        let images = scan(&tmp).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].name, "web");
        assert_eq!(images[0].settings, Some(tmp.join("web.nspawn")));
        assert!(!images[0].read_only);
        let text = render_table(&images, false);
        assert!(
            text.starts_with("NAME TYPE      RO USAGE CREATED"),
            "{text}"
        );
        assert!(text.contains("\nweb  directory no -"), "{text}");
        assert!(text.ends_with("\n1 images listed.\n"), "{text}");
        assert_eq!(to_json(&images)[0]["ro"], false);
        std::fs::remove_dir_all(&tmp).unwrap();
        assert!(scan(&tmp).unwrap().is_empty());
    }
}
