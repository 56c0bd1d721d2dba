//! Lock files that do not pile up: a `flock` on `<run_dir>/locks/...` whose
//! file is removed by its last holder, so `/run` does not gain a file for
//! every machine name and every ephemeral image ever used.
//!
//! The protocol that makes removal safe: a holder removes the file only while
//! it still holds the lock and the path still names the file it locked; a
//! taker, once it has the lock, checks that the path still names the file it
//! locked and starts again if not (the file was removed under it, so its lock
//! protects nothing). A taker therefore never shares a lock with a holder of
//! the removed file, and a lock is never refused because of a removal.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
    Shared,
}

/// Whether `path` names the file `file` has open (device and inode).
pub fn names_file(path: &Path, file: &File) -> io::Result<bool> {
    let held = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.dev() == held.dev() && m.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes the lock on `path` (created if missing) without waiting: `None`
/// while someone else holds it in a conflicting mode.
pub fn try_lock(path: &Path, mode: Mode) -> io::Result<Option<File>> {
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let r = match mode {
            Mode::Exclusive => file.try_lock(),
            Mode::Shared => file.try_lock_shared(),
        };
        match r {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                // Held, unless its last holder removed it just now: then the
                // path names a new file (or none) and we try that one.
                if names_file(path, &file)? {
                    return Ok(None);
                }
                continue;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if names_file(path, &file)? {
            return Ok(Some(file));
        }
    }
}

/// Takes the lock on `path` (created if missing), waiting for it.
pub fn lock(path: &Path, mode: Mode) -> io::Result<File> {
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match mode {
            Mode::Exclusive => file.lock()?,
            Mode::Shared => file.lock_shared()?,
        }
        if names_file(path, &file)? {
            return Ok(file);
        }
    }
}

/// Removes the lock file while `file` holds its exclusive lock, if `path`
/// still names it. The caller must be the lock's last holder: a process
/// that shares the lock (a forked child with the same descriptor) would go
/// on holding a lock nobody else sees.
pub fn remove_held(path: &Path, file: &File) -> io::Result<()> {
    if names_file(path, file)? {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Releases a shared lock and removes the file if no one else holds it
/// (the lock is converted to exclusive without waiting: if another holder
/// is there, the conversion fails, the lock is gone and the file stays).
pub fn release_shared(path: &Path, file: File) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => remove_held(path, &file),
        Err(fs::TryLockError::WouldBlock) => Ok(()),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("netspawn-lockfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn exclusive_excludes_and_its_file_goes_with_it() {
        let d = tmp("ex");
        let p = d.join("machine-a.lock");
        let a = try_lock(&p, Mode::Exclusive).unwrap().unwrap();
        assert!(try_lock(&p, Mode::Exclusive).unwrap().is_none());
        assert!(try_lock(&p, Mode::Shared).unwrap().is_none());
        remove_held(&p, &a).unwrap();
        assert!(!p.exists());
        // A taker that opened the old file before the removal is not fooled:
        // it gets a lock on the new file.
        let b = try_lock(&p, Mode::Exclusive).unwrap().unwrap();
        assert!(names_file(&p, &b).unwrap());
        drop(a);
        assert!(try_lock(&p, Mode::Exclusive).unwrap().is_none());
        drop(b);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_lock_on_a_removed_file_is_not_a_lock() {
        let d = tmp("stale");
        let p = d.join("inode-1:2");
        let old = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .unwrap();
        fs::remove_file(&p).unwrap();
        old.try_lock().unwrap();
        // The old file is locked but no longer at the path: not a conflict.
        let new = try_lock(&p, Mode::Exclusive).unwrap().unwrap();
        assert!(names_file(&p, &new).unwrap());
        assert!(!names_file(&p, &old).unwrap());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shared_holders_leave_the_file_to_the_last_one() {
        let d = tmp("sh");
        let p = d.join("inode-3:4");
        let r1 = try_lock(&p, Mode::Shared).unwrap().unwrap();
        let r2 = try_lock(&p, Mode::Shared).unwrap().unwrap();
        assert!(try_lock(&p, Mode::Exclusive).unwrap().is_none());
        release_shared(&p, r1).unwrap();
        assert!(p.exists(), "r2 still holds it");
        assert!(try_lock(&p, Mode::Exclusive).unwrap().is_none());
        release_shared(&p, r2).unwrap();
        assert!(!p.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn waiting_lock_follows_a_removal() {
        let d = tmp("wait");
        let p = d.join("zone-x.lock");
        let a = lock(&p, Mode::Exclusive).unwrap();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let b = lock(&p2, Mode::Exclusive).unwrap();
            names_file(&p2, &b).unwrap()
        });
        remove_held(&p, &a).unwrap();
        drop(a);
        assert!(t.join().unwrap(), "the waiter holds the file at the path");
        fs::remove_dir_all(&d).unwrap();
    }
}
