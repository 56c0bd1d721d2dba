//! Shifting an image's ownership into a range once (`chown`), as systemd's
//! `path_patch_uid`: every inode's owner and group keep their low 16 bits
//! and get the range's base (so shifting twice, or a hard link seen twice,
//! changes nothing), symlinks are not followed, other file systems mounted
//! below are not entered, the setuid/setgid bits that chown(2) clears are
//! put back, as are file capabilities (chown removes them; a v3 one gets
//! the new root ID), and the IDs in POSIX ACLs are shifted too. The root
//! directory goes last, so its owner records the range: an image whose
//! root already has it is skipped.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use thiserror::Error;

use super::{UidRange, RANGE_16};

#[derive(Debug, Error)]
pub enum ShiftError {
    #[error("--private-users-ownership=chown needs a range of 65536 starting at a multiple of 65536, not {shift}:{range}", shift = .0.shift, range = .0.range)]
    Range(UidRange),
    #[error("chown {path}: {err}")]
    Io { path: String, err: std::io::Error },
}

const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";
const CAPABILITY: &str = "security.capability";
const ACL_USER: u16 = 2;
const ACL_GROUP: u16 = 8;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// The shifted ID: the range's base with the low 16 bits kept.
pub fn shifted(id: u32, base: u32) -> u32 {
    base | (id & 0xFFFF)
}

/// Shifts the tree at `root` into `range`; false if it had the range already.
pub fn shift_tree(root: &Path, range: UidRange) -> Result<bool, ShiftError> {
    if range.range != RANGE_16 || range.shift & 0xFFFF != 0 {
        return Err(ShiftError::Range(range));
    }
    let md = meta(root)?;
    if md.uid() == range.shift && md.gid() == range.shift {
        return Ok(false);
    }
    walk(root, md.dev(), range.shift)?;
    Ok(true)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ShiftError + '_ {
    move |err| ShiftError::Io {
        path: path.display().to_string(),
        err,
    }
}

fn meta(path: &Path) -> Result<fs::Metadata, ShiftError> {
    fs::symlink_metadata(path).map_err(io(path))
}

/// Children first, then `dir` itself.
fn walk(dir: &Path, dev: u64, base: u32) -> Result<(), ShiftError> {
    for de in fs::read_dir(dir).map_err(io(dir))? {
        let de = de.map_err(io(dir))?;
        let path = de.path();
        let md = meta(&path)?;
        if md.is_dir() {
            // Another file system mounted here is not ours to change.
            if md.dev() == dev {
                walk(&path, dev, base)?;
            }
        } else {
            patch(&path, &md, base)?;
        }
    }
    patch(dir, &meta(dir)?, base)
}

/// Shifts one inode (not following a symlink).
fn patch(path: &Path, md: &fs::Metadata, base: u32) -> Result<(), ShiftError> {
    let (uid, gid) = (shifted(md.uid(), base), shifted(md.gid(), base));
    let is_link = md.file_type().is_symlink();
    let acls: Vec<(&str, Vec<u8>)> = if is_link {
        Vec::new()
    } else {
        [ACL_ACCESS, ACL_DEFAULT]
            .into_iter()
            .filter_map(|n| get_xattr(path, n).map(|v| (n, v)))
            .collect()
    };
    if uid == md.uid() && gid == md.gid() && acls.is_empty() {
        return Ok(());
    }
    let caps = md.is_file().then(|| get_xattr(path, CAPABILITY)).flatten();
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(path))?;
    if !is_link {
        // chown(2) clears setuid and setgid on regular files.
        let mode = md.mode() & 0o7777;
        if mode & 0o6000 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))?;
        }
        for (name, value) in acls {
            set_xattr(path, name, &shift_acl(&value, base)).map_err(io(path))?;
        }
        if let Some(c) = caps {
            set_xattr(path, CAPABILITY, &shift_caps(&c, base)).map_err(io(path))?;
        }
    }
    Ok(())
}

/// A POSIX ACL xattr with its user and group IDs shifted (version 2: a
/// 4-byte header, then 8-byte entries of tag, permissions, ID).
pub fn shift_acl(value: &[u8], base: u32) -> Vec<u8> {
    let mut out = value.to_vec();
    if out.len() < 4 {
        return out;
    }
    for e in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        if tag == ACL_USER || tag == ACL_GROUP {
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            e[4..8].copy_from_slice(&shifted(id, base).to_le_bytes());
        }
    }
    out
}

/// A file capability xattr with a v3 root ID shifted (v2 has none).
pub fn shift_caps(value: &[u8], base: u32) -> Vec<u8> {
    let mut out = value.to_vec();
    if out.len() >= 24 {
        let magic = u32::from_le_bytes([out[0], out[1], out[2], out[3]]);
        if magic & 0xFF00_0000 == VFS_CAP_REVISION_3 {
            let id = u32::from_le_bytes([out[20], out[21], out[22], out[23]]);
            out[20..24].copy_from_slice(&shifted(id, base).to_le_bytes());
        }
    }
    out
}

fn cpath(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path)?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated; the buffer's length is passed.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let p = cpath(path).ok_or_else(bad)?;
    let n = CString::new(name).map_err(|_| bad())?;
    // SAFETY: both strings are NUL-terminated; the value's length is passed.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const BASE: u32 = 0x0008_0000;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("netspawn-shift-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn owner(p: &Path) -> (u32, u32) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    #[test]
    fn ids_keep_their_low_bits() {
        assert_eq!(shifted(0, BASE), BASE);
        assert_eq!(shifted(1000, BASE), BASE + 1000);
        assert_eq!(shifted(BASE + 5, BASE), BASE + 5);
        assert_eq!(shifted(0x0013_0007, BASE), BASE + 7);
    }

    #[test]
    fn acl_and_caps_values() {
        // Header, USER_OBJ, USER 1000, GROUP 33, MASK.
        let mut acl = vec![2, 0, 0, 0];
        for (tag, id) in [(1u16, u32::MAX), (2, 1000), (8, 33), (0x10, u32::MAX)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&7u16.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let out = shift_acl(&acl, BASE);
        let id =
            |i: usize| u32::from_le_bytes(out[4 + 8 * i + 4..4 + 8 * i + 8].try_into().unwrap());
        assert_eq!(
            [id(0), id(1), id(2), id(3)],
            [u32::MAX, BASE + 1000, BASE + 33, u32::MAX]
        );
        let mut v3 = vec![0u8; 24];
        v3[0..4].copy_from_slice(&(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        let out = shift_caps(&v3, BASE);
        assert_eq!(&out[20..24], &BASE.to_le_bytes());
        let v2 = vec![0, 0, 0, 2, 1, 2, 3, 4];
        assert_eq!(shift_caps(&v2, BASE), v2);
        assert_eq!(shift_acl(&[1, 2], BASE), vec![1, 2]);
    }

    #[test]
    fn a_tree_is_shifted_once_without_following_links() {
        let d = tmp("tree");
        let root = d.join("root");
        let outside = d.join("outside");
        fs::create_dir_all(root.join("etc/sub")).unwrap();
        fs::write(&outside, "").unwrap();
        fs::write(root.join("etc/passwd"), "").unwrap();
        fs::write(root.join("suid"), "").unwrap();
        fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(root.join("etc/sub"), Some(1000), Some(100)).unwrap();
        symlink(&outside, root.join("link")).unwrap();
        fs::hard_link(root.join("etc/passwd"), root.join("hard")).unwrap();

        let range = UidRange::new(BASE, RANGE_16).unwrap();
        assert!(shift_tree(&root, range).unwrap());
        assert_eq!(owner(&root), (BASE, BASE));
        assert_eq!(owner(&root.join("etc/passwd")), (BASE, BASE));
        assert_eq!(owner(&root.join("etc/sub")), (BASE + 1000, BASE + 100));
        assert_eq!(owner(&root.join("link")), (BASE, BASE));
        assert_eq!(owner(&outside), (0, 0), "the link's target is outside");
        let mode = fs::metadata(root.join("suid")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755, "setuid kept");
        // Once shifted, the root says so and nothing is done again.
        assert!(!shift_tree(&root, range).unwrap());
        // Back to 0 is a shift like any other.
        let _ = shift_tree(&root, UidRange::new(0, RANGE_16).unwrap()).unwrap();
        assert_eq!(owner(&root.join("etc/sub")), (1000, 100));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn odd_ranges_are_refused() {
        let d = tmp("odd");
        for r in [(BASE + 1, RANGE_16), (BASE, 1000)] {
            let e = shift_tree(&d, UidRange::new(r.0, r.1).unwrap()).unwrap_err();
            assert!(e.to_string().contains("multiple of 65536"), "{e}");
        }
        let _ = fs::remove_dir_all(&d);
    }
}
