//! `-x/--ephemeral`: the machine runs on a throw-away layer over its image.
//!
//! The layer is a hidden directory next to the image, named as
//! systemd-nspawn names its ephemeral snapshots: `.#machine.NAME` plus 16
//! random hex digits (NAME is the image directory's name), in the image's
//! parent directory (for `/`, in the image directory). It holds `upper/`
//! and `work/` of an overlayfs whose lower layer is the image, so the image
//! is never written and any number of machines share it; writes land on the
//! image's own file system (not in memory, unlike `--volatile=overlay`).
//!
//! The directory is removed when the machine ends: by the launcher, and
//! after a `kill -9` of the launcher by a small keeper process forked when
//! the directory is made, which waits for the launcher to go away (its pipe
//! reaches end-of-file) and then removes it, retrying while the container's
//! processes exit. `netspawnctl clean` removes what a crash of the whole
//! host left (hidden `.#` entries, as machinectl's).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EphemeralError {
    #[error("create the ephemeral layer {path}: {err}")]
    Create { path: PathBuf, err: std::io::Error },
    #[error("start the ephemeral layer's keeper: {0}")]
    Keeper(std::io::Error),
}

/// How long the keeper retries the removal after the launcher is gone.
const KEEPER_BUDGET: Duration = Duration::from_secs(30);

/// The name of an ephemeral layer for `image`: `.#machine.NAME` and 16 hex
/// digits of `random`, beside the image (in it for `/`).
pub fn layer_path(image: &Path, random: u64) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let leaf = format!(".#machine.{name}{random:016x}");
    match image.parent() {
        Some(parent) => parent.join(leaf),
        None => image.join(leaf),
    }
}

/// A random 64-bit number (getrandom).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return (t.as_nanos() as u64) ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(b)
}

/// A machine's ephemeral layer (its removal is its [`Scratch`]'s).
#[derive(Debug)]
pub struct Layer {
    pub dir: PathBuf,
}

impl Layer {
    /// The overlay's upper directory.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The overlay's work directory (on the upper's file system).
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Makes the layer for `image` in `scratch`: the hidden directory
    /// (0700), its work directory, and its upper directory with the image
    /// root's mode and owner (the overlay's root takes them from the upper
    /// directory); `owner_shift` is added to that owner when the container
    /// sees the image through an idmapped mount.
    pub fn create(
        image: &Path,
        owner_shift: u32,
        scratch: &mut Scratch,
    ) -> Result<Layer, EphemeralError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err: std::io::Error| EphemeralError::Create { path, err }
        };
        let md = std::fs::metadata(image).map_err(io(image))?;
        let parent_path = image.parent().unwrap_or(image);
        let (fd, dir) = loop {
            let p = layer_path(image, random_u64());
            let name = p.file_name().unwrap_or_default().to_os_string();
            let parent = nix::fcntl::open(
                parent_path,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| io(parent_path)(e.into()))?;
            match scratch.make_dir(parent, &name) {
                Ok(fd) => break (fd, p),
                Err(nix::Error::EEXIST) => continue,
                Err(e) => return Err(io(&p)(e.into())),
            }
        };
        let made = (|| -> nix::Result<()> {
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o700);
            nix::sys::stat::mkdirat(&fd, "work", mode)?;
            nix::sys::stat::mkdirat(&fd, "upper", mode)?;
            let shift = |id: u32| id.checked_add(owner_shift).unwrap_or(id);
            nix::unistd::fchownat(
                &fd,
                "upper",
                Some(nix::unistd::Uid::from_raw(shift(md.uid()))),
                Some(nix::unistd::Gid::from_raw(shift(md.gid()))),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            nix::sys::stat::fchmodat(
                &fd,
                "upper",
                nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
        })();
        made.map_err(|e| io(&dir)(e.into()))?;
        Ok(Layer { dir })
    }
}

/// `-x` of an image that is a btrfs subvolume: a snapshot of it, named and
/// placed as [`layer_path`] says and removed with the machine, as
/// systemd-nspawn makes it; `None` if the image is not a subvolume (or the
/// snapshot cannot be made there: then the overlay is used).
pub fn snapshot(image: &Path, scratch: &mut Scratch) -> Option<PathBuf> {
    let src = nix::fcntl::open(
        image,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    if !crate::btrfs::is_subvolume(src.as_fd()) {
        return None;
    }
    let parent_path = image.parent()?;
    let p = layer_path(image, random_u64());
    let name = p.file_name()?.to_os_string();
    let parent = nix::fcntl::open(
        parent_path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    match crate::btrfs::snapshot(src.as_fd(), parent.as_fd(), &name, false) {
        Ok(()) => {
            scratch.items.push((parent, name));
            Some(p)
        }
        Err(e) => {
            tracing::debug!("no btrfs snapshot of {}: {e}; an overlay", image.display());
            None
        }
    }
}

/// Things made for a machine that go with it: removed on drop, and by a
/// keeper process if the launcher dies first. Each is a directory named
/// relative to its parent's descriptor, so a removal never follows a
/// symlink an image put in the way.
#[derive(Debug, Default)]
pub struct Scratch {
    items: Vec<(OwnedFd, OsString)>,
    keeper: Option<(nix::unistd::Pid, OwnedFd)>,
}

impl Scratch {
    /// Makes the directory `name` (mode 0700) in `parent`, to be removed
    /// with the machine, and returns a descriptor of it.
    pub fn make_dir(&mut self, parent: OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
        nix::sys::stat::mkdirat(
            &parent,
            name,
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        )?;
        let fd = nix::fcntl::openat(
            &parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        self.items.push((parent, name.to_os_string()));
        fd
    }

    /// Removes `name` in `parent` with the machine (made by someone else).
    pub fn track(&mut self, parent: OwnedFd, name: &OsStr) {
        self.items.push((parent, name.to_os_string()));
    }

    /// Forks the keeper (once everything is made); `close` are descriptors
    /// it lets go of at once (the image lock).
    pub fn guard(&mut self, close: &[RawFd]) -> Result<(), EphemeralError> {
        if self.items.is_empty() || self.keeper.is_some() {
            return Ok(());
        }
        self.keeper = Some(spawn_keeper(&self.items, close).map_err(EphemeralError::Keeper)?);
        Ok(())
    }

    fn remove_all(&self) -> bool {
        self.items.iter().fold(true, |ok, (parent, name)| {
            remove_at(parent.as_fd(), name) && ok
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove_all();
        if let Some((pid, pipe)) = self.keeper.take() {
            // The keeper finds everything gone and exits, once every copy
            // of the pipe is closed (a network keeper forked later holds
            // one until its teardown is done: not waited for here).
            drop(pipe);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

/// Removes the directory `name` in `parent` and what is in it, never
/// following a symlink (gone is success); true if nothing is left.
pub fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> bool {
    use nix::unistd::UnlinkatFlags;
    let dir = match nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        // A directory that is a btrfs subvolume (a snapshot) goes at once.
        Ok(d)
            if crate::btrfs::is_subvolume(d.as_fd())
                && crate::btrfs::destroy(parent, name).is_ok() =>
        {
            return true
        }
        Ok(d) => d,
        Err(nix::Error::ENOENT) => return true,
        // Not a directory (or a symlink): unlink the entry itself.
        Err(_) => {
            return matches!(
                nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir),
                Ok(()) | Err(nix::Error::ENOENT)
            )
        }
    };
    let mut names = Vec::new();
    if let Ok(mut d) = dir
        .try_clone()
        .map_err(|_| nix::Error::EIO)
        .and_then(nix::dir::Dir::from_fd)
    {
        for e in d.iter().flatten() {
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push((
                    OsStr::from_bytes(n).to_os_string(),
                    e.file_type() == Some(nix::dir::Type::Directory),
                ));
            }
        }
    }
    let mut ok = true;
    for (n, is_dir) in names {
        ok &= if is_dir {
            remove_at(dir.as_fd(), &n)
        } else {
            matches!(
                nix::unistd::unlinkat(&dir, n.as_os_str(), UnlinkatFlags::NoRemoveDir),
                Ok(()) | Err(nix::Error::ENOENT)
            )
        };
    }
    ok && matches!(
        nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir),
        Ok(()) | Err(nix::Error::ENOENT)
    )
}

/// Forks the keeper: in its own session (a terminal's signals to the
/// launcher's group must not stop it), it waits for the launcher's end of
/// its pipe to close, then removes `items`, retrying for [`KEEPER_BUDGET`]
/// while the container's last processes exit.
fn spawn_keeper(
    items: &[(OwnedFd, OsString)],
    close: &[RawFd],
) -> std::io::Result<(nix::unistd::Pid, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the launcher is single-threaded here; the child only makes
    // system calls and leaves with _exit.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(r);
            Ok((child, w))
        }
        nix::unistd::ForkResult::Child => {
            drop(w);
            let _ = nix::unistd::setsid();
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            );
            // Nothing of the launcher's stays with us (its image lock, the
            // user namespaces' pick lock, …): only our pipe and the
            // directories we remove in. `close` names some explicitly.
            let keep: Vec<RawFd> = items
                .iter()
                .map(|(p, _)| p.as_raw_fd())
                .chain([r.as_raw_fd()])
                .collect();
            let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            for fd in open.into_iter().chain(close.iter().copied()) {
                if fd > 2 && !keep.contains(&fd) {
                    // SAFETY: descriptors of the launcher's that this
                    // process never uses; their owners here are never
                    // dropped (we leave with _exit).
                    unsafe { libc::close(fd) };
                }
            }
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            let mut b = [0u8; 1];
            while let Err(nix::Error::EINTR) | Ok(1) = nix::unistd::read(&r, &mut b) {}
            let deadline = Instant::now() + KEEPER_BUDGET;
            let remove_all = || {
                items.iter().fold(true, |ok, (parent, name)| {
                    remove_at(parent.as_fd(), name) && ok
                })
            };
            while !remove_all() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: leave without running the launcher's destructors.
            unsafe { libc::_exit(0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_hidden_beside_the_image() {
        assert_eq!(
            layer_path(Path::new("/var/lib/machines/web"), 0xab),
            PathBuf::from("/var/lib/machines/.#machine.web00000000000000ab")
        );
        assert_eq!(
            layer_path(Path::new("/"), 1),
            PathBuf::from("/.#machine.0000000000000001")
        );
    }

    #[test]
    fn a_layer_is_removed_on_drop_and_by_its_keeper() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("netspawn-eph-{}", std::process::id()));
        let img = base.join("img");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o750)).unwrap();
        let mut scratch = Scratch::default();
        let layer = Layer::create(&img, 0, &mut scratch).unwrap();
        scratch.guard(&[]).unwrap();
        let md = std::fs::metadata(layer.upper()).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o750);
        assert!(layer.work().is_dir());
        let dir = layer.dir.clone();
        assert!(dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".#machine.img"));
        std::fs::create_dir_all(layer.upper().join("a/b")).unwrap();
        std::fs::write(layer.upper().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&base, layer.upper().join("a/up")).unwrap();
        drop(scratch);
        assert!(!dir.exists());
        assert!(img.exists(), "a symlink is never followed");
        // The keeper alone: the launcher's end closes without a removal.
        let mut scratch = Scratch::default();
        let layer = Layer::create(&img, 0, &mut scratch).unwrap();
        scratch.guard(&[]).unwrap();
        let (pid, pipe) = scratch.keeper.take().unwrap();
        scratch.items.clear();
        drop(pipe);
        nix::sys::wait::waitpid(pid, None).unwrap();
        assert!(!layer.dir.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
