//! Tar archives of images: reading one into a fresh directory and writing
//! an image as one, with the compression chosen by magic (reading) or by the
//! file name's suffix (writing): gzip, xz, zstd or none.
//!
//! An archive is hostile input. Extraction resolves every path inside the
//! new root (`openat2(RESOLVE_IN_ROOT)` through [`RootDir`]), so a symlink
//! the archive made earlier leads to the image's own directories, never out;
//! the last component is made with `*at` calls that never follow it; a
//! `..` component anywhere (names and hard-link targets) refuses the whole
//! archive; a leading `/` is dropped, as GNU tar does. Owners, modes, times,
//! device nodes, FIFOs, hard links and xattrs (`SCHILY.xattr.*`, so ACLs)
//! are kept: netspawnctl runs as root.

use std::ffi::{CStr, CString};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use super::tree::{self, cname, lstat_at, open_at};
use crate::rootdir::{Make, RootDir};

/// Why an archive could not be read or written.
#[derive(Debug, Error)]
pub enum TarError {
    #[error("not a tar archive ({0})")]
    NotTar(String),
    #[error("{0} archives are not supported (gzip, xz, zstd or none)")]
    Unsupported(&'static str),
    #[error("tar entry '{0}' leads out of the image: refused")]
    Escape(String),
    #[error("tar entry '{path}': {err}")]
    Entry { path: String, err: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("interrupted")]
    Interrupted,
}

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The format a file name asks for: `.gz`/`.tgz`, `.xz`/`.txz`, `.zst`, else none.
    pub fn from_name(name: &Path) -> Compression {
        let n = name.to_string_lossy();
        if n.ends_with(".gz") || n.ends_with(".tgz") {
            Compression::Gzip
        } else if n.ends_with(".xz") || n.ends_with(".txz") {
            Compression::Xz
        } else if n.ends_with(".zst") || n.ends_with(".tzst") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The format of a stream that starts with `magic`.
    pub fn detect(magic: &[u8]) -> Result<Compression, TarError> {
        Ok(if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if magic.starts_with(b"BZh") {
            return Err(TarError::Unsupported("bzip2"));
        } else {
            Compression::None
        })
    }
}

/// The decompressed stream of `input`, its format detected by magic.
pub fn decompress<'a, R: BufRead + 'a>(mut input: R) -> Result<Box<dyn Read + 'a>, TarError> {
    let magic = input.fill_buf()?;
    Ok(match Compression::detect(magic)? {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

/// The components of an entry's path below the root: `..` refuses it,
/// `/` and `.` are dropped.
fn clean(path: &Path) -> Result<PathBuf, TarError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(TarError::Escape(path.to_string_lossy().into_owned()))
            }
        }
    }
    Ok(out)
}

/// [`TarError::NotTar`] with tar's complaint cut short: it may quote the
/// (hostile, multi-line) bytes it could not read.
fn not_tar(e: io::Error) -> TarError {
    let text = e.to_string();
    let head = text.split(" when ").next().unwrap_or(&text);
    let head: String = head
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(60)
        .collect();
    TarError::NotTar(head)
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Extracts the tar stream `input` into the empty directory `root`; returns
/// the number of entries. `abort` is asked between entries.
pub fn extract(
    input: &mut dyn Read,
    root: &Path,
    abort: &dyn Fn() -> bool,
) -> Result<u64, TarError> {
    let rootdir = RootDir::open(root).map_err(io::Error::from)?;
    let mut archive = tar::Archive::new(input);
    let mut count = 0u64;
    // Directories get their times back last: their contents change them.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    // The parent directory of the last entry: usually the next one's too.
    let mut cached: Option<(PathBuf, OwnedFd)> = None;
    let entries = archive.entries().map_err(not_tar)?;
    for entry in entries {
        if abort() {
            return Err(TarError::Interrupted);
        }
        let mut entry = entry.map_err(|e| {
            if count == 0 {
                not_tar(e)
            } else {
                TarError::Io(e)
            }
        })?;
        count += 1;
        let raw = entry.path().map_err(not_tar)?;
        let shown = raw.to_string_lossy().into_owned();
        let rel = clean(&raw)?;
        let wrap = |err: io::Error| TarError::Entry {
            path: shown.clone(),
            err,
        };
        let ty = entry.header().entry_type();
        if matches!(
            ty,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let meta = Meta::of(entry.header()).map_err(wrap)?;
        let xattrs = pax_xattrs(&mut entry).map_err(wrap)?;
        if rel.as_os_str().is_empty() {
            // "./": the root itself.
            if ty.is_dir() {
                let fd = tree::open_dir(root)?;
                meta.apply_fd(fd.as_raw_fd()).map_err(wrap)?;
                tree::set_xattrs(fd.as_raw_fd(), &xattrs).map_err(wrap)?;
                dir_times.push((rel, meta.mtime));
            }
            continue;
        }
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name = cname(rel.file_name().unwrap_or_default()).map_err(wrap)?;
        if cached.as_ref().is_none_or(|(p, _)| *p != parent) {
            let fd = rootdir
                .chase(&parent, Make::Dir(0o755))
                .map_err(|e| wrap(e.into()))?;
            cached = Some((parent.clone(), fd));
        }
        let dir = cached.as_ref().map(|(_, fd)| fd.as_fd()).expect("cached");
        if ty.is_dir() {
            // SAFETY: valid descriptor and NUL-terminated name.
            let made = cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) });
            if let Err(e) = made {
                let is_dir =
                    lstat_at(dir, &name).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                if !is_dir {
                    replace(dir, &name, e, |d, n| {
                        // SAFETY: as above.
                        cvt(unsafe { libc::mkdirat(d.as_raw_fd(), n.as_ptr(), 0o700) })
                    })
                    .map_err(wrap)?;
                }
            }
            let fd = open_at(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(wrap)?;
            meta.apply_fd(fd.as_raw_fd()).map_err(wrap)?;
            tree::set_xattrs(fd.as_raw_fd(), &xattrs).map_err(wrap)?;
            dir_times.push((rel, meta.mtime));
            // The cached parent may be this directory's old self.
            cached = None;
        } else if ty.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| wrap(io::Error::other("symlink without a target")))?;
            let target = CString::new(target.into_owned())
                .map_err(|_| wrap(io::Error::from_raw_os_error(libc::EINVAL)))?;
            let make = |d: BorrowedFd<'_>, n: &CStr| {
                // SAFETY: NUL-terminated target and name.
                cvt(unsafe { libc::symlinkat(target.as_ptr(), d.as_raw_fd(), n.as_ptr()) })
            };
            make(dir, &name)
                .or_else(|e| replace(dir, &name, e, make))
                .map_err(wrap)?;
            meta.apply_at(dir, &name, true).map_err(wrap)?;
            // It may have replaced a directory on the cached parent's path.
            cached = None;
        } else if ty.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(wrap)?
                .ok_or_else(|| wrap(io::Error::other("hard link without a target")))?;
            let target = clean(&target)?;
            let tparent = target.parent().unwrap_or(Path::new(""));
            let tname = cname(target.file_name().unwrap_or_default()).map_err(wrap)?;
            let tdir = rootdir.open_path(tparent).map_err(|e| wrap(e.into()))?;
            let make = |d: BorrowedFd<'_>, n: &CStr| {
                // SAFETY: both names relative to descriptors inside the
                // root; the link's target is not followed.
                cvt(unsafe {
                    libc::linkat(
                        tdir.as_raw_fd(),
                        tname.as_ptr(),
                        d.as_raw_fd(),
                        n.as_ptr(),
                        0,
                    )
                })
            };
            make(dir, &name)
                .or_else(|e| replace(dir, &name, e, make))
                .map_err(wrap)?;
        } else if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            let h = entry.header();
            let (major, minor) = (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            );
            let kind = if ty.is_character_special() {
                libc::S_IFCHR
            } else if ty.is_block_special() {
                libc::S_IFBLK
            } else {
                libc::S_IFIFO
            };
            let dev = libc::makedev(major, minor);
            let make = |d: BorrowedFd<'_>, n: &CStr| {
                // SAFETY: valid descriptor and name.
                cvt(unsafe { libc::mknodat(d.as_raw_fd(), n.as_ptr(), kind | 0o600, dev) })
            };
            make(dir, &name)
                .or_else(|e| replace(dir, &name, e, make))
                .map_err(wrap)?;
            meta.apply_at(dir, &name, false).map_err(wrap)?;
        } else if ty.is_file() || ty == tar::EntryType::Continuous {
            let make = |d: BorrowedFd<'_>, n: &CStr| {
                open_at(d, n, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
            };
            let fd = match make(dir, &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    tree::unlink_at(dir, &name).map_err(wrap)?;
                    make(dir, &name).map_err(wrap)?
                }
                Err(e) => return Err(wrap(e)),
            };
            let mut file = std::fs::File::from(fd);
            copy_all(&mut entry, &mut file).map_err(wrap)?;
            tree::set_xattrs(file.as_raw_fd(), &xattrs).map_err(wrap)?;
            meta.apply_fd(file.as_raw_fd()).map_err(wrap)?;
        } else {
            tracing::warn!("skipping tar entry '{shown}' of unsupported type {ty:?}");
        }
    }
    if count == 0 {
        return Err(TarError::NotTar("no entries".into()));
    }
    for (rel, mtime) in dir_times.iter().rev() {
        let fd = rootdir.open_path(rel).map_err(io::Error::from)?;
        let path = CString::new(crate::rootdir::fd_path(fd.as_fd())).expect("no NUL");
        let t = libc::timespec {
            tv_sec: *mtime,
            tv_nsec: 0,
        };
        // SAFETY: a NUL-terminated /proc/self/fd path and two timespecs.
        unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), [t, t].as_ptr(), 0) };
    }
    Ok(count)
}

/// After `make` failed with `err`: if something is in the way, remove it
/// and make again (later entries win, as with GNU tar).
fn replace<F>(dir: BorrowedFd<'_>, name: &CStr, err: io::Error, make: F) -> io::Result<()>
where
    F: Fn(BorrowedFd<'_>, &CStr) -> io::Result<()>,
{
    if err.raw_os_error() != Some(libc::EEXIST) {
        return Err(err);
    }
    tree::unlink_at(dir, name)?;
    make(dir, name)
}

fn copy_all(from: &mut dyn Read, to: &mut std::fs::File) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// The `SCHILY.xattr.*` records of an entry.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                if let Ok(key) = CString::new(key) {
                    out.push((key, ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// Owner, mode and time of an entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta {
    fn of(h: &tar::Header) -> io::Result<Meta> {
        Ok(Meta {
            mode: h.mode()? & 0o7777,
            uid: h.uid()? as u32,
            gid: h.gid()? as u32,
            mtime: h.mtime().unwrap_or(0) as i64,
        })
    }

    fn times(&self) -> [libc::timespec; 2] {
        let t = libc::timespec {
            tv_sec: self.mtime,
            tv_nsec: 0,
        };
        [t, t]
    }

    fn apply_fd(&self, fd: i32) -> io::Result<()> {
        // SAFETY: plain syscalls on a descriptor we hold (mode after owner:
        // chown clears the set-ID bits).
        unsafe {
            cvt(libc::fchown(fd, self.uid, self.gid))?;
            cvt(libc::fchmod(fd, self.mode))?;
            cvt(libc::futimens(fd, self.times().as_ptr()))
        }
    }

    fn apply_at(&self, dir: BorrowedFd<'_>, name: &CStr, symlink: bool) -> io::Result<()> {
        let d = dir.as_raw_fd();
        // SAFETY: valid descriptor and name; nothing is followed.
        unsafe {
            cvt(libc::fchownat(
                d,
                name.as_ptr(),
                self.uid,
                self.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
            if !symlink {
                cvt(libc::fchmodat(d, name.as_ptr(), self.mode, 0))?;
            }
            cvt(libc::utimensat(
                d,
                name.as_ptr(),
                self.times().as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ))
        }
    }
}

/// A compressing writer, finished explicitly so that its errors are seen.
pub enum Sink<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(xz2::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, c: Compression) -> io::Result<Sink<W>> {
        Ok(match c {
            Compression::None => Sink::Plain(out),
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Xz => Sink::Xz(xz2::write::XzEncoder::new(out, 6)),
            Compression::Zstd => Sink::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Gzip(e) => e.finish(),
            Sink::Xz(e) => e.finish(),
            Sink::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(e) => e.write(buf),
            Sink::Xz(e) => e.write(buf),
            Sink::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(e) => e.flush(),
            Sink::Xz(e) => e.flush(),
            Sink::Zstd(e) => e.flush(),
        }
    }
}

/// Writes the tree at `root` as a tar stream (GNU format with PAX xattr
/// records) into `out`: owners and modes numeric, hard links as links,
/// device nodes and FIFOs as themselves; sockets are skipped as GNU tar does.
pub fn write_archive<W: Write>(root: &Path, out: W) -> Result<W, TarError> {
    let top = tree::open_dir(root.parent().unwrap_or(Path::new("/")))?;
    let name = cname(root.file_name().unwrap_or_default())?;
    let mut builder = tar::Builder::new(out);
    let mut links = std::collections::HashMap::new();
    add(&mut builder, top.as_fd(), &name, Path::new("."), &mut links)?;
    Ok(builder.into_inner()?)
}

fn add<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    rel: &Path,
    links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> Result<(), TarError> {
    let wrap = |err: io::Error| TarError::Entry {
        path: rel.to_string_lossy().into_owned(),
        err,
    };
    let st = lstat_at(dir, name).map_err(wrap)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    let kind = st.st_mode & libc::S_IFMT;
    match kind {
        libc::S_IFDIR => {
            let fd = open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(wrap)?;
            pax(b, rel, &tree::xattrs(fd.as_raw_fd()).map_err(wrap)?).map_err(wrap)?;
            h.set_entry_type(tar::EntryType::Directory);
            let mut p = rel.as_os_str().to_owned();
            p.push("/");
            b.append_data(&mut h, &p, io::empty()).map_err(wrap)?;
            for n in tree::names(fd.as_fd()).map_err(wrap)? {
                let child = rel.join(std::ffi::OsStr::from_bytes(n.to_bytes()));
                add(b, fd.as_fd(), &n, &child, links)?;
            }
        }
        libc::S_IFREG => {
            let key = (st.st_dev, st.st_ino);
            if st.st_nlink > 1 {
                if let Some(first) = links.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, rel, first).map_err(wrap)?;
                    return Ok(());
                }
                links.insert(key, rel.strip_prefix(".").unwrap_or(rel).to_path_buf());
            }
            let fd = open_at(dir, name, libc::O_RDONLY, 0).map_err(wrap)?;
            pax(b, rel, &tree::xattrs(fd.as_raw_fd()).map_err(wrap)?).map_err(wrap)?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(st.st_size as u64);
            let file = std::fs::File::from(fd);
            // A file that shrinks while we read it would break the archive.
            let mut data = file.take(st.st_size as u64);
            b.append_data(&mut h, rel, &mut data).map_err(wrap)?;
        }
        libc::S_IFLNK => {
            let target = tree::read_link_at(dir, name).map_err(wrap)?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, rel, std::ffi::OsStr::from_bytes(target.to_bytes()))
                .map_err(wrap)?;
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
            h.set_entry_type(match kind {
                libc::S_IFCHR => tar::EntryType::Char,
                libc::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            });
            if kind != libc::S_IFIFO {
                h.set_device_major(libc::major(st.st_rdev)).map_err(wrap)?;
                h.set_device_minor(libc::minor(st.st_rdev)).map_err(wrap)?;
            }
            b.append_data(&mut h, rel, io::empty()).map_err(wrap)?;
        }
        _ => {} // sockets
    }
    Ok(())
}

/// A PAX extended header with the xattrs of the entry that follows.
fn pax<W: Write>(
    b: &mut tar::Builder<W>,
    rel: &Path,
    attrs: &[(CString, Vec<u8>)],
) -> io::Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    let mut data = Vec::new();
    for (k, v) in attrs {
        let mut rec = b"SCHILY.xattr.".to_vec();
        rec.extend_from_slice(k.to_bytes());
        rec.push(b'=');
        rec.extend_from_slice(v);
        rec.push(b'\n');
        // "LEN KEY=VALUE\n", LEN counting itself.
        let mut len = rec.len() + 2;
        while len != rec.len() + 1 + len.to_string().len() {
            len = rec.len() + 1 + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} ").as_bytes());
        data.extend_from_slice(&rec);
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    let name = rel
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_else(|| b"root".to_vec());
    let mut pax_name = b"PaxHeaders/".to_vec();
    pax_name.extend_from_slice(&name[..name.len().min(80)]);
    b.append_data(
        &mut h,
        std::ffi::OsStr::from_bytes(&pax_name),
        data.as_slice(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_and_refuses() {
        assert_eq!(
            Compression::detect(b"\x1f\x8b\x08").unwrap(),
            Compression::Gzip
        );
        assert_eq!(Compression::detect(b"\xfd7zXZ\0").unwrap(), Compression::Xz);
        assert_eq!(
            Compression::detect(b"\x28\xb5\x2f\xfd").unwrap(),
            Compression::Zstd
        );
        assert!(Compression::detect(b"BZh9").is_err());
        assert_eq!(
            Compression::from_name(Path::new("a.tar.zst")),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_name(Path::new("a.tar")),
            Compression::None
        );
        assert!(matches!(
            clean(Path::new("a/../../etc")),
            Err(TarError::Escape(_))
        ));
        assert_eq!(clean(Path::new("/./etc/x")).unwrap(), Path::new("etc/x"));
    }
}
