//! `--template=DIR`: the machine's directory is made from DIR when it is
//! missing or empty, as systemd-nspawn makes it: a btrfs snapshot when DIR
//! is a subvolume on the same file system, else a faithful copy by
//! [`crate::ctl::images::tree::Copier`], the copier `netspawnctl clone`
//! uses (with reflinks where the file system has them).
//! The copy is made under a hidden name beside the directory and renamed
//! into place when complete, so a failed (or killed) copy leaves no
//! directory; a directory that is there and not empty is run as it is.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use thiserror::Error;

use crate::ephemeral::Scratch;

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("Template {0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("Couldn't create {dir} from {template}: {err}")]
    Copy {
        dir: PathBuf,
        template: PathBuf,
        err: String,
    },
}

/// What happened to the machine's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Populated {
    /// Made from the template.
    Made,
    /// It was there, not empty: left as it is.
    Exists,
}

/// True if `dir` is missing or an empty directory.
fn missing_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Makes `dir` from `template` if `dir` is missing or empty.
pub fn populate(template: &Path, dir: &Path) -> Result<Populated, TemplateError> {
    if !template.is_dir() {
        return Err(TemplateError::NotDirectory(template.to_path_buf()));
    }
    if !missing_or_empty(dir) {
        return Ok(Populated::Exists);
    }
    let fail = |err: String| TemplateError::Copy {
        dir: dir.to_path_buf(),
        template: template.to_path_buf(),
        err,
    };
    let (Some(parent_path), Some(leaf)) = (dir.parent(), dir.file_name()) else {
        return Err(fail("no parent directory".into()));
    };
    let parent_path = if parent_path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent_path
    };
    let open = |p: &Path| {
        nix::fcntl::open(
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(format!("{}: {e}", p.display())))
    };
    let parent = open(parent_path)?;
    let src = open(template)?;
    let mut tmp = OsString::from(".#");
    tmp.push(leaf);
    tmp.push(format!("{:016x}", crate::ephemeral::random_u64()));
    // Removed if anything below fails (or we are killed: its keeper).
    let mut scratch = Scratch::default();
    let snapped = crate::btrfs::is_subvolume(src.as_fd())
        && crate::btrfs::snapshot(src.as_fd(), parent.as_fd(), &tmp, false).is_ok();
    scratch.track(open(parent_path)?, &tmp);
    scratch.guard(&[]).map_err(|e| fail(e.to_string()))?;
    if !snapped {
        // The one faithful copier (`netspawnctl clone` uses it too).
        let (tparent, tname) = match (template.parent(), template.file_name()) {
            (Some(p), Some(n)) if !p.as_os_str().is_empty() => (p, n),
            _ => (Path::new("."), template.as_os_str()),
        };
        let tparent = open(tparent)?;
        let tname = crate::ctl::images::tree::cname(tname).map_err(|e| fail(e.to_string()))?;
        let tmp_c = crate::ctl::images::tree::cname(&tmp).map_err(|e| fail(e.to_string()))?;
        crate::ctl::images::tree::Copier::new(false)
            .copy(tparent.as_fd(), &tname, parent.as_fd(), &tmp_c)
            .map_err(|e| fail(format!("copy {}: {e}", template.display())))?;
    }
    // Into place: onto an empty directory (rename replaces it), or where
    // nothing is (never over something that appeared meanwhile).
    let r = if dir.exists() {
        nix::fcntl::renameat(&parent, tmp.as_os_str(), &parent, leaf)
    } else {
        nix::fcntl::renameat2(
            &parent,
            tmp.as_os_str(),
            &parent,
            leaf,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
    };
    match r {
        Ok(()) => Ok(Populated::Made),
        // Someone else made it meanwhile: run theirs, drop ours.
        Err(nix::Error::EEXIST | nix::Error::ENOTEMPTY) => Ok(Populated::Exists),
        Err(e) => Err(fail(format!("rename into place: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_when_missing_or_empty_kept_otherwise() {
        let base = std::env::temp_dir().join(format!("netspawn-tpl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let tpl = base.join("tpl");
        std::fs::create_dir_all(tpl.join("etc")).unwrap();
        std::fs::write(tpl.join("etc/hostname"), "t\n").unwrap();
        let new = base.join("new");
        assert_eq!(populate(&tpl, &new).unwrap(), Populated::Made);
        assert_eq!(std::fs::read(new.join("etc/hostname")).unwrap(), b"t\n");
        std::fs::write(new.join("mine"), "").unwrap();
        assert_eq!(populate(&tpl, &new).unwrap(), Populated::Exists);
        assert!(new.join("mine").exists());
        let empty = base.join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(populate(&tpl, &empty).unwrap(), Populated::Made);
        assert!(empty.join("etc/hostname").exists());
        assert!(populate(&base.join("nope"), &base.join("x")).is_err());
        let hidden = std::fs::read_dir(&base)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".#"))
            .count();
        assert_eq!(hidden, 0);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
