//! A faithful copy of a directory tree (for `--template=`): owners, modes
//! (setuid bits and file capabilities too: they are set after the owner),
//! extended attributes (ACLs, capabilities, SELinux labels), timestamps,
//! hard links, symlinks, device nodes, FIFOs and sockets; file data by
//! reflink (`FICLONE`) where the file system has it, else extent by extent
//! (`SEEK_DATA`/`SEEK_HOLE`, `copy_file_range`), so sparse files stay
//! sparse. Every step is relative to a directory descriptor and never
//! follows a symlink of the source; mounts below the source are not
//! entered (their mount points are copied empty), as systemd's copy does.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("{path}: {err}")]
pub struct CopyError {
    pub path: PathBuf,
    pub err: Errno,
}

const FICLONE: libc::c_ulong = 0x4004_9409;

struct Copier {
    /// The source's file system: mounts below it are not entered.
    dev: u64,
    /// (dev, ino) of a source file with several links → its copy's path
    /// below the destination root.
    links: HashMap<(u64, u64), PathBuf>,
    dst_root: OwnedFd,
}

/// Copies the directory `src` to the new directory `name` in `dst_parent`
/// (which must not exist).
pub fn copy_tree(src: &Path, dst_parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), CopyError> {
    let at = |p: &Path| {
        let path = p.to_path_buf();
        move |err| CopyError { path, err }
    };
    let sfd = nix::fcntl::open(
        src,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(at(src))?;
    let st = nix::sys::stat::fstat(&sfd).map_err(at(src))?;
    nix::sys::stat::mkdirat(dst_parent, name, Mode::from_bits_truncate(0o700))
        .map_err(at(Path::new(name)))?;
    let dfd = open_dir(dst_parent, name).map_err(at(Path::new(name)))?;
    let mut c = Copier {
        dev: st.st_dev,
        links: HashMap::new(),
        dst_root: dfd.try_clone().map_err(|_| CopyError {
            path: name.into(),
            err: Errno::EMFILE,
        })?,
    };
    c.copy_dir(&sfd, &dfd, Path::new(""))?;
    attrs(sfd.as_fd(), dfd.as_fd(), &st).map_err(at(src))
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

impl Copier {
    fn copy_dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> Result<(), CopyError> {
        let at = |p: &Path| {
            let path = p.to_path_buf();
            move |err| CopyError { path, err }
        };
        let mut names = Vec::new();
        let mut d = nix::dir::Dir::from_fd(src.try_clone().map_err(|_| CopyError {
            path: rel.into(),
            err: Errno::EMFILE,
        })?)
        .map_err(at(rel))?;
        for e in d.iter() {
            let e = e.map_err(at(rel))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        for name in names {
            let path = rel.join(&name);
            self.copy_entry(src.as_fd(), dst.as_fd(), &name, &path)
                .map_err(at(&path))?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
    ) -> Result<(), Errno> {
        let st = nix::sys::stat::fstatat(src, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                return nix::unistd::linkat(
                    &self.dst_root,
                    first.as_path(),
                    dst,
                    name,
                    AtFlags::empty(),
                );
            }
            self.links.insert((st.st_dev, st.st_ino), rel.to_path_buf());
        }
        match kind {
            libc::S_IFDIR => {
                nix::sys::stat::mkdirat(dst, name, Mode::from_bits_truncate(0o700))?;
                let s = open_dir(src, name)?;
                let d = open_dir(dst, name)?;
                if st.st_dev == self.dev {
                    self.copy_dir(&s, &d, rel).map_err(|e| e.err)?;
                }
                attrs(s.as_fd(), d.as_fd(), &st)
            }
            libc::S_IFREG => {
                let s = nix::fcntl::openat(
                    src,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                let d = nix::fcntl::openat(
                    dst,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )?;
                copy_data(&s, &d, st.st_size)?;
                attrs(s.as_fd(), d.as_fd(), &st)
            }
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(src, name)?;
                nix::unistd::symlinkat(target.as_os_str(), dst, name)?;
                nix::unistd::fchownat(
                    dst,
                    name,
                    Some(nix::unistd::Uid::from_raw(st.st_uid)),
                    Some(nix::unistd::Gid::from_raw(st.st_gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                times_at(dst, name, &st)
            }
            _ => {
                // Device nodes, FIFOs and sockets.
                let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
                // SAFETY: mknodat with a valid descriptor and C string.
                let r = unsafe {
                    libc::mknodat(
                        dst.as_raw_fd(),
                        c.as_ptr(),
                        st.st_mode & !0o7777 | 0o600,
                        st.st_rdev,
                    )
                };
                Errno::result(r)?;
                nix::unistd::fchownat(
                    dst,
                    name,
                    Some(nix::unistd::Uid::from_raw(st.st_uid)),
                    Some(nix::unistd::Gid::from_raw(st.st_gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                nix::sys::stat::fchmodat(
                    dst,
                    name,
                    Mode::from_bits_truncate(st.st_mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )?;
                times_at(dst, name, &st)
            }
        }
    }
}

/// The file's data: a reflink where the file system has them, else its
/// data extents only (holes stay holes).
fn copy_data(s: &OwnedFd, d: &OwnedFd, size: i64) -> Result<(), Errno> {
    // SAFETY: FICLONE takes the source descriptor as its argument.
    if unsafe { libc::ioctl(d.as_raw_fd(), FICLONE as _, s.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let mut pos: i64 = 0;
    while pos < size {
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(s.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            match Errno::last() {
                Errno::ENXIO => break, // only a hole is left
                e => return Err(e),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(s.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { size } else { hole.min(size) };
        let mut off_in = data;
        let mut off_out = data;
        while off_in < end {
            let want = (end - off_in) as usize;
            // SAFETY: copy_file_range with valid descriptors and offsets.
            let n = unsafe {
                libc::copy_file_range(
                    s.as_raw_fd(),
                    &mut off_in,
                    d.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n < 0 {
                match Errno::last() {
                    Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL => {
                        let copied = plain_copy(s, d, off_in, end)?;
                        off_in += copied;
                        off_out += copied;
                    }
                    e => return Err(e),
                }
            } else if n == 0 {
                break;
            }
        }
        pos = end;
    }
    nix::unistd::ftruncate(d, size)
}

/// read/pwrite of `[from, to)` (where copy_file_range cannot).
fn plain_copy(s: &OwnedFd, d: &OwnedFd, from: i64, to: i64) -> Result<i64, Errno> {
    let mut buf = vec![0u8; 1 << 16];
    let mut off = from;
    while off < to {
        let want = ((to - off) as usize).min(buf.len());
        let n = nix::sys::uio::pread(s, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += nix::sys::uio::pwrite(d, &buf[done..n], off + done as i64)?;
        }
        off += n as i64;
    }
    Ok(off - from)
}

/// Owner, mode (after the owner: chown clears setuid bits), extended
/// attributes (after the owner: it clears file capabilities) and times.
fn attrs(s: BorrowedFd<'_>, d: BorrowedFd<'_>, st: &FileStat) -> Result<(), Errno> {
    nix::unistd::fchown(
        d,
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    )?;
    nix::sys::stat::fchmod(d, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    copy_xattrs(s, d)?;
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    // SAFETY: futimens with a valid descriptor and two timespecs.
    Errno::result(unsafe { libc::futimens(d.as_raw_fd(), times.as_ptr()) }).map(drop)
}

fn times_at(dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> Result<(), Errno> {
    let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    // SAFETY: utimensat with a valid descriptor, C string and two timespecs.
    Errno::result(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

fn copy_xattrs(s: BorrowedFd<'_>, d: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: a size query (null buffer).
    let len = unsafe { libc::flistxattr(s.as_raw_fd(), std::ptr::null_mut(), 0) };
    if len <= 0 {
        return match Errno::last() {
            _ if len == 0 => Ok(()),
            Errno::ENOTSUP => Ok(()),
            e => Err(e),
        };
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: the buffer has the size the kernel asked for.
    let len = unsafe { libc::flistxattr(s.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
    Errno::result(len)?;
    names.truncate(len as usize);
    for n in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut z = n.to_vec();
        z.push(0);
        let cname = CStr::from_bytes_with_nul(&z).map_err(|_| Errno::EINVAL)?;
        // SAFETY: a size query.
        let vlen =
            unsafe { libc::fgetxattr(s.as_raw_fd(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            continue;
        }
        let mut v = vec![0u8; vlen as usize];
        // SAFETY: the buffer has the size the kernel asked for.
        let vlen = unsafe {
            libc::fgetxattr(
                s.as_raw_fd(),
                cname.as_ptr(),
                v.as_mut_ptr().cast(),
                v.len(),
            )
        };
        if vlen < 0 {
            continue;
        }
        // SAFETY: a valid name and value buffer.
        let r = unsafe {
            libc::fsetxattr(
                d.as_raw_fd(),
                cname.as_ptr(),
                v.as_ptr().cast(),
                vlen as usize,
                0,
            )
        };
        Errno::result(r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn owners_modes_xattrs_links_nodes_and_holes_survive() {
        let base = std::env::temp_dir().join(format!("netspawn-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("d/f"), "data").unwrap();
        std::os::unix::fs::chown(src.join("d/f"), Some(1234), Some(4321)).unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::hard_link(src.join("d/f"), src.join("hard")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
        let c = CString::new(src.join("d/f").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path, name and value.
        let xr = unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"user.netspawn".as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            )
        };
        // A sparse file: 64 MiB with 4 KiB of data at the end.
        let sparse = std::fs::File::create(src.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        nix::sys::uio::pwrite(&sparse, b"end", (64 << 20) - 3).unwrap();
        drop(sparse);
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let dev = CString::new(src.join("null").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };

        let parent =
            nix::fcntl::open(&base, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        copy_tree(&src, parent.as_fd(), OsStr::new("dst")).unwrap();
        let dst = base.join("dst");
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        let f = md(&dst.join("d/f"));
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 4321, 0o4755));
        assert_eq!(std::fs::read(dst.join("d/f")).unwrap(), b"data");
        assert_eq!(f.mtime(), md(&src.join("d/f")).mtime());
        assert_eq!(md(&dst.join("hard")).ino(), f.ino(), "hard link kept");
        assert_eq!(
            std::fs::read_link(dst.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(dst.join("d/e").is_dir());
        let s = md(&dst.join("sparse"));
        assert_eq!(s.len(), 64 << 20);
        assert!(s.blocks() * 512 < 1 << 20, "sparse: {} blocks", s.blocks());
        assert!(md(&dst.join("fifo")).file_type().is_fifo_like());
        if md(&src.join("null")).rdev() != 0 {
            assert_eq!(md(&dst.join("null")).rdev(), libc::makedev(1, 3));
        }
        if xr == 0 {
            let c = CString::new(dst.join("d/f").as_os_str().as_bytes()).unwrap();
            let mut v = [0u8; 4];
            // SAFETY: a valid path, name and buffer.
            let n = unsafe {
                libc::getxattr(
                    c.as_ptr(),
                    c"user.netspawn".as_ptr(),
                    v.as_mut_ptr().cast(),
                    4,
                )
            };
            assert_eq!(&v[..n as usize], b"v");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    trait FifoLike {
        fn is_fifo_like(&self) -> bool;
    }
    impl FifoLike for std::fs::FileType {
        fn is_fifo_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_fifo()
        }
    }
}
