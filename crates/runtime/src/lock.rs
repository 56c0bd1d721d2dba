//! Image locks, as systemd-nspawn takes them: a writable container holds its
//! directory tree alone; read-only containers share it. The lock is a BSD
//! `flock` on `<run_dir>/locks/inode-DEV:INO`, so it follows the directory
//! whatever path names it, and the kernel drops it if the launcher dies.
//! The last holder removes the file ([`netspawn_common::lockfile`]).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use netspawn_common::lockfile::{self, Mode};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("Directory tree {0} is currently busy.")]
    Busy(PathBuf),
    #[error("lock {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// A held image lock; released on drop, and its file removed by the last
/// holder (an ephemeral launch locks a new directory every time).
#[derive(Debug)]
pub struct ImageLock {
    file: Option<File>,
    path: PathBuf,
    mode: Mode,
}

impl AsRawFd for ImageLock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_ref().map_or(-1, |f| f.as_raw_fd())
    }
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        // Forked helpers that inherited the descriptor have exited or closed
        // it by now (the keeper closes it at once): this is the last holder.
        if let Some(file) = self.file.take() {
            let r = match self.mode {
                Mode::Exclusive => lockfile::remove_held(&self.path, &file),
                Mode::Shared => lockfile::release_shared(&self.path, file),
            };
            if let Err(e) = r {
                tracing::debug!("remove lock file {}: {e}", self.path.display());
            }
        }
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
        let mode = if read_only {
            Mode::Shared
        } else {
            Mode::Exclusive
        };
        match lockfile::try_lock(&path, mode).map_err(io(&path))? {
            Some(file) => Ok(ImageLock {
                file: Some(file),
                path,
                mode,
            }),
            None => Err(LockError::Busy(image.to_path_buf())),
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
        drop(_r2);
        assert_eq!(
            fs::read_dir(&locks).unwrap().count(),
            0,
            "the last holder removed the lock file"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }
}
