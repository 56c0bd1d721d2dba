//! Image locks, as systemd-nspawn takes them: a writable container holds its
//! directory tree alone; read-only containers share it. The lock is a BSD
//! `flock` on `<run_dir>/locks/inode-DEV:INO`, so it follows the directory
//! whatever path names it, and the kernel drops it if the launcher dies.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("Directory tree {0} is currently busy.")]
    Busy(PathBuf),
    #[error("lock {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// A held image lock; released on drop.
#[derive(Debug)]
pub struct ImageLock {
    _file: File,
}

impl std::os::fd::AsRawFd for ImageLock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self._file.as_raw_fd()
    }
}

impl ImageLock {
    /// Locks `image` exclusively, or shared if `read_only`.
    pub fn acquire(
        locks_dir: &Path,
        image: &Path,
        read_only: bool,
    ) -> Result<ImageLock, LockError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| LockError::Io { path, err }
        };
        let md = fs::metadata(image).map_err(io(image))?;
        fs::create_dir_all(locks_dir).map_err(io(locks_dir))?;
        let path = locks_dir.join(format!("inode-{}:{}", md.dev(), md.ino()));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let r = if read_only {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match r {
            Ok(()) => Ok(ImageLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(LockError::Busy(image.to_path_buf())),
            Err(fs::TryLockError::Error(err)) => Err(LockError::Io { path, err }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_excludes_everyone_read_only_shares() {
        let tmp = std::env::temp_dir().join(format!("netspawn-lock-{}", std::process::id()));
        let img = tmp.join("img");
        fs::create_dir_all(&img).unwrap();
        let locks = tmp.join("locks");
        let w = ImageLock::acquire(&locks, &img, false).unwrap();
        assert!(matches!(
            ImageLock::acquire(&locks, &img, false),
            Err(LockError::Busy(_))
        ));
        assert!(matches!(
            ImageLock::acquire(&locks, &img, true),
            Err(LockError::Busy(_))
        ));
        drop(w);
        let r1 = ImageLock::acquire(&locks, &img, true).unwrap();
        let _r2 = ImageLock::acquire(&locks, &img, true).unwrap();
        assert!(matches!(
            ImageLock::acquire(&locks, &img, false),
            Err(LockError::Busy(_))
        ));
        drop(r1);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
