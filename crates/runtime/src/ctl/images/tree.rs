//! Directory trees, always relative to directory descriptors and never
//! following a symlink: the faithful copy behind `clone`, `import-fs`,
//! `copy-to` and `copy-from` (owners, modes, timestamps, xattrs and so ACLs,
//! hard links, device nodes, FIFOs, sparse files; a reflink with `FICLONE`
//! where the filesystem has it, else `copy_file_range`), the walk behind
//! `export-tar`, and disk usage.
//!
//! Every step is an `*at` call on the descriptor of the directory above, so
//! a tree that changes under us (a running machine's) cannot redirect a
//! write out of it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

/// `_IOW(0x94, 9, int)`: share the source's extents (btrfs, XFS, bcachefs).
const FICLONE: libc::c_ulong = 0x4004_9409;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A file name as a C string (names never hold NUL).
pub fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name is `dir` itself.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid descriptor, NUL-terminated name, and a stat to fill.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor and NUL-terminated name; a new descriptor we own.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: openat returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat(fd)`.
fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor we hold and a stat to write into.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// The names in directory `dir` (without `.` and `..`).
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = fd.as_raw_fd();
    // SAFETY: fdopendir takes over `raw` (we forget our owner) and closedir closes it.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(fd);
    let mut out = Vec::new();
    loop {
        // SAFETY: dirp is an open directory stream.
        let de = unsafe { libc::readdir64(dirp) };
        if de.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the entry.
        let name = unsafe { CStr::from_ptr((*de).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: dirp is open; closing it closes the descriptor.
    unsafe { libc::closedir(dirp) };
    out.sort();
    Ok(out)
}

fn kind(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// Owner, mode and times of `fd` as in `st` (the mode after the owner:
/// chown clears set-user-ID bits).
fn set_meta_fd(fd: RawFd, st: &libc::stat) -> io::Result<()> {
    // SAFETY: plain syscalls on a descriptor we hold.
    unsafe {
        cvt(libc::fchown(fd, st.st_uid, st.st_gid))?;
        cvt(libc::fchmod(fd, st.st_mode & 0o7777))?;
    }
    set_times_fd(fd, st)
}

fn set_times_fd(fd: RawFd, st: &libc::stat) -> io::Result<()> {
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
    // SAFETY: two timespecs, as futimens expects.
    cvt(unsafe { libc::futimens(fd, times.as_ptr()) }).map(drop)
}

/// Owner, mode and times of `dir/name` without following it (symlinks
/// keep their mode).
pub fn set_meta_at(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat) -> io::Result<()> {
    let d = dir.as_raw_fd();
    // SAFETY: valid descriptor and NUL-terminated name.
    unsafe {
        cvt(libc::fchownat(
            d,
            name.as_ptr(),
            st.st_uid,
            st.st_gid,
            libc::AT_SYMLINK_NOFOLLOW,
        ))?;
        if kind(st) != libc::S_IFLNK {
            cvt(libc::fchmodat(d, name.as_ptr(), st.st_mode & 0o7777, 0))?;
        }
    }
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
    // SAFETY: as above, with two timespecs.
    cvt(unsafe { libc::utimensat(d, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// The extended attributes of `fd` (ACLs are `system.posix_acl_*`).
pub fn xattrs(fd: RawFd) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let mut list = vec![0u8; 4096];
    let n = loop {
        // SAFETY: the buffer is writable for its length.
        let n = unsafe { libc::flistxattr(fd, list.as_mut_ptr().cast(), list.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => list.resize(list.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for key in list[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut val = vec![0u8; 256];
        loop {
            // SAFETY: as above.
            let m =
                unsafe { libc::fgetxattr(fd, key.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
            if m >= 0 {
                val.truncate(m as usize);
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => val.resize(val.len() * 4, 0),
                Some(libc::ENODATA) => {
                    val.clear();
                    break;
                }
                _ => return Err(e),
            }
        }
        out.push((key, val));
    }
    Ok(out)
}

/// Sets extended attributes on `fd`; a filesystem without them (or without
/// one namespace of them) is skipped.
pub fn set_xattrs(fd: RawFd, attrs: &[(CString, Vec<u8>)]) -> io::Result<()> {
    for (k, v) in attrs {
        // SAFETY: valid name and value buffer.
        let r = unsafe { libc::fsetxattr(fd, k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Copies the data of `src` (size `size`) into the empty `dst`: one reflink
/// if the filesystem shares extents, else `copy_file_range` over the data
/// segments only, so holes stay holes.
pub fn copy_data(src: RawFd, dst: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument.
    if unsafe { libc::ioctl(dst, FICLONE, src) } == 0 {
        return Ok(());
    }
    let mut off: i64 = 0;
    let end = size as i64;
    while off < end {
        // SAFETY: plain lseek on a descriptor we hold.
        let data = unsafe { libc::lseek(src, off, libc::SEEK_DATA) };
        if data < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return copy_range(src, dst, off, end);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        copy_range(src, dst, data, hole)?;
        off = hole;
    }
    // SAFETY: plain ftruncate: a trailing hole gets the file its size.
    cvt(unsafe { libc::ftruncate(dst, end) }).map(drop)
}

fn copy_range(src: RawFd, dst: RawFd, from: i64, to: i64) -> io::Result<()> {
    let mut soff = from;
    let mut doff = from;
    while soff < to {
        let len = (to - soff).min(1 << 30) as usize;
        // SAFETY: the offsets are ours, the descriptors valid.
        let n = unsafe { libc::copy_file_range(src, &mut soff, dst, &mut doff, len, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
            ) {
                return copy_rw(src, dst, soff, to);
            }
            return Err(e);
        }
        if n == 0 {
            break; // the file shrank under us
        }
    }
    Ok(())
}

fn copy_rw(src: RawFd, dst: RawFd, mut off: i64, to: i64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while off < to {
        let want = ((to - off) as usize).min(buf.len());
        // SAFETY: the buffer is writable for `want` bytes.
        let n = unsafe { libc::pread(src, buf.as_mut_ptr().cast(), want, off) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n as usize {
            // SAFETY: the slice is readable for its length.
            let w = unsafe {
                libc::pwrite(
                    dst,
                    buf[done..n as usize].as_ptr().cast(),
                    n as usize - done,
                    off + done as i64,
                )
            };
            if w < 0 {
                return Err(io::Error::last_os_error());
            }
            done += w as usize;
        }
        off += n as i64;
    }
    Ok(())
}

/// A faithful tree copy. Hard links inside the copied tree stay hard links.
#[derive(Default)]
pub struct Copier {
    /// The first copy of each multiply-linked source inode, to link to.
    links: HashMap<(u64, u64), OwnedFd>,
    /// Replace what is in the way (`--force`); a directory in the way of a
    /// directory is merged into.
    pub replace: bool,
    /// Asked before each file: true stops the copy with `Interrupted`.
    abort: Option<fn() -> bool>,
    /// The source is hostile (a running machine's files, copied out to the
    /// host): no set-user-ID/set-group-ID bits, no file capabilities or
    /// other `security.`/`trusted.` attributes, no device nodes.
    untrusted: bool,
}

impl Copier {
    /// A copier that keeps everything.
    pub fn new(replace: bool) -> Copier {
        Copier {
            links: HashMap::new(),
            replace,
            abort: None,
            untrusted: false,
        }
    }

    /// A copier for a hostile source (see the field).
    pub fn untrusted(mut self) -> Copier {
        self.untrusted = true;
        self
    }

    /// `st` as the copy gets it: without privilege bits from a hostile source.
    fn meta(&self, st: &libc::stat) -> libc::stat {
        let mut st = *st;
        if self.untrusted {
            st.st_mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        st
    }

    /// The extended attributes of `fd` that the copy keeps.
    fn attrs(&self, fd: RawFd) -> io::Result<Vec<(CString, Vec<u8>)>> {
        let mut a = xattrs(fd)?;
        if self.untrusted {
            a.retain(|(k, _)| {
                let k = k.to_bytes();
                !k.starts_with(b"security.") && !k.starts_with(b"trusted.")
            });
        }
        Ok(a)
    }

    /// Stops the copy when `abort` says so.
    pub fn with_abort(mut self, abort: fn() -> bool) -> Copier {
        self.abort = Some(abort);
        self
    }

    /// Copies `src_dir/src_name` to `dst_dir/dst_name` (which must not exist
    /// unless `replace`).
    pub fn copy(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> io::Result<()> {
        if self.abort.is_some_and(|a| a()) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let st = lstat_at(src_dir, src_name)?;
        match kind(&st) {
            libc::S_IFDIR => {
                let src = open_at(src_dir, src_name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                let r = unsafe { libc::mkdirat(dst_dir.as_raw_fd(), dst_name.as_ptr(), 0o700) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    let merge = e.raw_os_error() == Some(libc::EEXIST)
                        && self.replace
                        && lstat_at(dst_dir, dst_name).is_ok_and(|d| kind(&d) == libc::S_IFDIR);
                    if !merge {
                        if e.raw_os_error() == Some(libc::EEXIST) && self.replace {
                            unlink_at(dst_dir, dst_name)?;
                            // SAFETY: as above.
                            cvt(unsafe {
                                libc::mkdirat(dst_dir.as_raw_fd(), dst_name.as_ptr(), 0o700)
                            })?;
                        } else {
                            return Err(e);
                        }
                    }
                }
                let dst = open_at(dst_dir, dst_name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                for name in names(src.as_fd())? {
                    self.copy(src.as_fd(), &name, dst.as_fd(), &name)?;
                }
                set_xattrs(dst.as_raw_fd(), &self.attrs(src.as_raw_fd())?)?;
                set_meta_fd(dst.as_raw_fd(), &self.meta(&st))
            }
            libc::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        return self.with_replace(dst_dir, dst_name, |d, n| {
                            // SAFETY: AT_EMPTY_PATH links the file `first`
                            // refers to (we are root: CAP_DAC_READ_SEARCH).
                            cvt(unsafe {
                                libc::linkat(
                                    first.as_raw_fd(),
                                    c"".as_ptr(),
                                    d.as_raw_fd(),
                                    n.as_ptr(),
                                    libc::AT_EMPTY_PATH,
                                )
                            })
                            .map(drop)
                        });
                    }
                }
                // Non-blocking, then checked: the entry may have been
                // swapped for a FIFO (which would block the copy forever)
                // or another file since the lstat.
                let src = open_at(src_dir, src_name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
                let now = fstat(src.as_raw_fd())?;
                if kind(&now) != libc::S_IFREG || (now.st_dev, now.st_ino) != key {
                    return Err(io::Error::other(format!(
                        "{} changed while it was being copied",
                        src_name.to_string_lossy()
                    )));
                }
                let st = now;
                let dst = self.with_replace(dst_dir, dst_name, |d, n| {
                    open_at(d, n, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
                })?;
                copy_data(src.as_raw_fd(), dst.as_raw_fd(), st.st_size as u64)?;
                set_xattrs(dst.as_raw_fd(), &self.attrs(src.as_raw_fd())?)?;
                set_meta_fd(dst.as_raw_fd(), &self.meta(&st))?;
                if st.st_nlink > 1 {
                    self.links.insert(key, dst);
                }
                Ok(())
            }
            libc::S_IFLNK => {
                let target = read_link_at(src_dir, src_name)?;
                self.with_replace(dst_dir, dst_name, |d, n| {
                    // SAFETY: NUL-terminated target and name.
                    cvt(unsafe { libc::symlinkat(target.as_ptr(), d.as_raw_fd(), n.as_ptr()) })
                        .map(drop)
                })?;
                set_meta_at(dst_dir, dst_name, &st)
            }
            libc::S_IFCHR | libc::S_IFBLK if self.untrusted => Err(io::Error::other(format!(
                "{} is a device node: not copied out of a machine",
                src_name.to_string_lossy()
            ))),
            _ => {
                // Device nodes, FIFOs and sockets: made anew with the same numbers.
                let st = self.meta(&st);
                self.with_replace(dst_dir, dst_name, |d, n| {
                    // SAFETY: as above.
                    cvt(unsafe { libc::mknodat(d.as_raw_fd(), n.as_ptr(), st.st_mode, st.st_rdev) })
                        .map(drop)
                })?;
                set_meta_at(dst_dir, dst_name, &st)
            }
        }
    }

    /// Runs `make`, and with `replace` once more after removing what is in the way.
    fn with_replace<T>(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        make: impl Fn(BorrowedFd<'_>, &CStr) -> io::Result<T>,
    ) -> io::Result<T> {
        match make(dir, name) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && self.replace => {
                unlink_at(dir, name)?;
                make(dir, name)
            }
            r => r,
        }
    }
}

/// Removes `dir/name`: a file, or a whole directory tree.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let st = lstat_at(dir, name)?;
    if kind(&st) == libc::S_IFDIR {
        let sub = open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        for n in names(sub.as_fd())? {
            unlink_at(sub.as_fd(), &n)?;
        }
        // SAFETY: valid descriptor and name.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
    } else {
        // SAFETY: as above.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
    }
}

/// The target of the symlink `dir/name`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the buffer is writable for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    CString::new(buf).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Disk space used by the tree at `dir/name` (allocated blocks; each inode
/// counted once), as `du -s` reports it.
pub fn usage(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<u64> {
    fn walk(
        dir: BorrowedFd<'_>,
        name: &CStr,
        seen: &mut HashSet<(u64, u64)>,
        total: &mut u64,
    ) -> io::Result<()> {
        let st = lstat_at(dir, name)?;
        if st.st_nlink > 1 && kind(&st) != libc::S_IFDIR && !seen.insert((st.st_dev, st.st_ino)) {
            return Ok(());
        }
        *total += st.st_blocks as u64 * 512;
        if kind(&st) == libc::S_IFDIR {
            let sub = open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            for n in names(sub.as_fd())? {
                // Entries that vanish while we look are not counted.
                match walk(sub.as_fd(), &n, seen, total) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    r => r?,
                }
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(dir, name, &mut HashSet::new(), &mut total)?;
    Ok(total)
}

/// Opens the directory `path` (a host path) for `*at` calls.
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn an_untrusted_source_loses_privilege_bits_capabilities_and_devices() {
        let tmp = std::env::temp_dir().join(format!("netspawn-tree-u-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let src = tmp.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("suid"), b"x").unwrap();
        std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o6755))
            .unwrap();
        let file = CString::new(src.join("suid").as_os_str().as_encoded_bytes()).unwrap();
        // A v2 capability set (cap_setuid+ep) and a user attribute.
        let mut cap = [0u8; 20];
        cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 7).to_le_bytes());
        for (k, v) in [
            (c"security.capability", &cap[..]),
            (c"user.note", &b"kept"[..]),
        ] {
            // SAFETY: NUL-terminated path and name, a value of v.len() bytes.
            let r =
                unsafe { libc::setxattr(file.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            assert_eq!(r, 0, "setxattr {k:?}: {}", io::Error::last_os_error());
        }
        let top = open_dir(&tmp).unwrap();
        Copier::new(false)
            .untrusted()
            .copy(top.as_fd(), c"src", top.as_fd(), c"dst")
            .unwrap();
        let f = std::fs::symlink_metadata(tmp.join("dst/suid")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o755);
        let fd = open_dir(&tmp.join("dst")).unwrap();
        let copied = open_at(fd.as_fd(), c"suid", libc::O_RDONLY, 0).unwrap();
        let names: Vec<CString> = xattrs(copied.as_raw_fd())
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, vec![c"user.note".to_owned()]);
        // A trusted copy keeps both.
        Copier::new(false)
            .copy(top.as_fd(), c"src", top.as_fd(), c"kept")
            .unwrap();
        let f = std::fs::symlink_metadata(tmp.join("kept/suid")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o6755);
        // A device node is refused.
        // SAFETY: NUL-terminated name in a directory we own.
        let r = unsafe {
            libc::mknodat(
                top.as_raw_fd(),
                c"null".as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3),
            )
        };
        assert_eq!(r, 0);
        let err = Copier::new(false)
            .untrusted()
            .copy(top.as_fd(), c"null", top.as_fd(), c"null2")
            .unwrap_err();
        assert!(err.to_string().contains("device node"), "{err}");
        assert!(std::fs::symlink_metadata(tmp.join("null2")).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn copies_links_modes_and_holes() {
        let tmp = std::env::temp_dir().join(format!("netspawn-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let src = tmp.join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), b"hello").unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o4751)).unwrap();
        std::fs::hard_link(src.join("d/f"), src.join("g")).unwrap();
        symlink("/etc/passwd", src.join("l")).unwrap();
        let sparse = std::fs::File::create(src.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        drop(sparse);
        let top = open_dir(&tmp).unwrap();
        Copier::new(false)
            .copy(top.as_fd(), c"src", top.as_fd(), c"dst")
            .unwrap();
        let dst = tmp.join("dst");
        let f = std::fs::symlink_metadata(dst.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        assert_eq!(f.ino(), std::fs::metadata(dst.join("g")).unwrap().ino());
        assert_eq!(
            std::fs::read_link(dst.join("l")).unwrap(),
            std::path::Path::new("/etc/passwd")
        );
        let s = std::fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(s.len(), 64 << 20);
        assert!(
            s.blocks() < 1024,
            "{} blocks: the hole was written",
            s.blocks()
        );
        // Again without --force: refused; with it: replaced.
        let err = Copier::new(false)
            .copy(top.as_fd(), c"src", top.as_fd(), c"dst")
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        Copier::new(true)
            .copy(top.as_fd(), c"src", top.as_fd(), c"dst")
            .unwrap();
        assert!(usage(top.as_fd(), c"dst").unwrap() > 0);
        unlink_at(top.as_fd(), c"dst").unwrap();
        assert!(!dst.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
