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

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// A machine's ephemeral layer: removed on drop, and by its keeper if the
/// launcher dies first.
#[derive(Debug)]
pub struct Layer {
    pub dir: PathBuf,
    keeper: Option<(nix::unistd::Pid, OwnedFd)>,
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

    /// Makes the layer for `image`: the hidden directory (0700), its work
    /// directory, and its upper directory with the image root's mode and
    /// owner (the overlay's root takes them from the upper directory);
    /// `owner_shift` is added to that owner when the container sees the
    /// image through an idmapped mount. Then forks the keeper; `close` are
    /// descriptors the keeper lets go of at once (the image lock).
    pub fn create(
        image: &Path,
        owner_shift: u32,
        close: &[RawFd],
    ) -> Result<Layer, EphemeralError> {
        let md = std::fs::metadata(image).map_err(|err| EphemeralError::Create {
            path: image.to_path_buf(),
            err,
        })?;
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        let dir = loop {
            let p = layer_path(image, random_u64());
            match builder.create(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(EphemeralError::Create { path: p, err }),
            }
        };
        let mut layer = Layer { dir, keeper: None };
        let made = (|| {
            builder.create(layer.work())?;
            let upper = layer.upper();
            builder.create(&upper)?;
            let shift = |id: u32| id.checked_add(owner_shift).unwrap_or(id);
            std::os::unix::fs::lchown(&upper, Some(shift(md.uid())), Some(shift(md.gid())))?;
            std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        })();
        if let Err(err) = made {
            return Err(EphemeralError::Create {
                path: layer.dir.clone(),
                err,
            });
        }
        layer.keeper = Some(spawn_keeper(&layer.dir, close).map_err(EphemeralError::Keeper)?);
        Ok(layer)
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        remove(&self.dir);
        if let Some((pid, pipe)) = self.keeper.take() {
            // The keeper finds the directory gone and exits.
            drop(pipe);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// Removes a layer directory and what is in it (gone is success); true if
/// nothing is left.
pub fn remove(dir: &Path) -> bool {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Forks the keeper: in its own session (a terminal's signals to the
/// launcher's group must not stop it), it waits for the launcher's end of
/// its pipe to close, then removes `dir`, retrying for [`KEEPER_BUDGET`]
/// while the container's last processes exit.
fn spawn_keeper(dir: &Path, close: &[RawFd]) -> std::io::Result<(nix::unistd::Pid, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let dir = dir.to_path_buf();
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
            for fd in close {
                // SAFETY: descriptors the launcher named for us to let go
                // of; their owners here are never dropped (we _exit).
                unsafe { libc::close(*fd) };
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
            while !remove(&dir) && Instant::now() < deadline {
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
        let base = std::env::temp_dir().join(format!("netspawn-eph-{}", std::process::id()));
        let img = base.join("img");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o750)).unwrap();
        let layer = Layer::create(&img, 0, &[]).unwrap();
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
        std::fs::write(layer.upper().join("f"), "x").unwrap();
        drop(layer);
        assert!(!dir.exists());
        // The keeper alone: the launcher's end closes without a removal.
        let mut layer = Layer::create(&img, 0, &[]).unwrap();
        let dir = layer.dir.clone();
        let (pid, pipe) = layer.keeper.take().unwrap();
        std::mem::forget(layer);
        drop(pipe);
        nix::sys::wait::waitpid(pid, None).unwrap();
        assert!(!dir.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
