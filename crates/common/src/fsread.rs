//! Reading a file someone else may have put there (registry entries,
//! `.network` templates, `.nspawn` settings, an image's `/etc/os-release`):
//! regular files only, size-capped, never blocking.
//!
//! A plain `open` + `read_to_end` hangs on a FIFO (the open waits for a
//! writer), reads `/dev/zero` until memory runs out, and opening some
//! devices has effects of its own. So the file is first opened `O_PATH`,
//! which opens nothing but a name, and checked with `fstat`; only a regular
//! file is then reopened for reading through `/proc/self/fd` (the same inode,
//! no second lookup of the path), non-blocking and without becoming a
//! controlling terminal, and read up to one byte past the cap.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// How a path is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// A symlink is followed (to a regular file, or refused).
    Symlinks,
    /// The path itself must be the regular file; a symlink is refused.
    No,
}

/// Reads the regular file at `path`, at most `max` bytes: anything else (a
/// FIFO, a device, a directory, a socket, and with [`Follow::No`] a symlink)
/// is refused with [`io::ErrorKind::InvalidInput`], a larger file with
/// [`io::ErrorKind::FileTooLarge`]. Never blocks on the file's type.
pub fn read_regular(path: &Path, max: u64, follow: Follow) -> io::Result<Vec<u8>> {
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if follow == Follow::No {
        flags |= libc::O_NOFOLLOW;
    }
    let named = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = named.metadata()?;
    regular(&meta)?;
    let file = match reopen(&named) {
        Ok(f) => f,
        // No /proc: open the path itself, non-blocking; the check below
        // refuses whatever replaced the file in between.
        Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
            .read(true)
            .custom_flags(flags & !libc::O_PATH | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?,
        Err(e) => return Err(e),
    };
    read_checked(file, Some(&meta), max)
}

/// Like [`read_regular`] for a file already opened by the caller (e.g. with
/// `openat2` inside a machine's root): `O_PATH`, or for reading with
/// `O_NONBLOCK`.
pub fn read_regular_fd(fd: OwnedFd, max: u64) -> io::Result<Vec<u8>> {
    let named = File::from(fd);
    let meta = named.metadata()?;
    regular(&meta)?;
    // SAFETY: F_GETFL on a descriptor we own.
    let fl = unsafe { libc::fcntl(named.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    let file = if fl & libc::O_PATH != 0 {
        reopen(&named)?
    } else {
        named
    };
    read_checked(file, Some(&meta), max)
}

/// Opens the file behind `named` (an `O_PATH` descriptor) for reading.
fn reopen(named: &File) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", named.as_raw_fd()))
}

fn regular(meta: &Metadata) -> io::Result<()> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "of an unknown type"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegular(what),
    ))
}

/// The refusal of something that is not a regular file; says what it is.
#[derive(Debug)]
struct NotRegular(&'static str);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a regular file: it is {}", self.0)
    }
}

impl std::error::Error for NotRegular {}

/// Reads `file` (checked to be regular, and the inode `expect` names), at
/// most `max` bytes.
fn read_checked(file: File, expect: Option<&Metadata>, max: u64) -> io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    regular(&meta)?;
    if let Some(e) = expect {
        if (e.dev(), e.ino()) != (meta.dev(), meta.ino()) {
            return Err(io::Error::other("the file was replaced while being opened"));
        }
    }
    let mut data = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("file is larger than {max} bytes"),
        ));
    }
    Ok(data)
}

/// Whether `err` is [`read_regular`]'s refusal of something that is not a
/// regular file (callers that skip such entries instead of failing).
pub fn is_not_regular(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<NotRegular>())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;

    struct Tmp(PathBuf);

    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p =
                std::env::temp_dir().join(format!("netspawn-fsread-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn regular_files_up_to_the_cap() {
        let t = Tmp::new("cap");
        let f = t.0.join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        for follow in [Follow::Symlinks, Follow::No] {
            assert_eq!(read_regular(&f, 10, follow).unwrap(), b"0123456789");
            assert_eq!(read_regular(&f, 100, follow).unwrap(), b"0123456789");
            let e = read_regular(&f, 9, follow).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{e}");
        }
        let empty = t.0.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(read_regular(&empty, 0, Follow::No).unwrap(), b"");
        let e = read_regular(&t.0.join("missing"), 10, Follow::No).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let t = Tmp::new("types");
        let fifo = t.0.join("fifo");
        mkfifo(&fifo);
        let zero = t.0.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let to_fifo = t.0.join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        let sock = t.0.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let started = Instant::now();
        for (p, what) in [
            (&fifo, "a FIFO"),
            (&zero, "a character device"),
            (&to_fifo, "a FIFO"),
            (&sock, "a socket"),
            (&t.0, "a directory"),
        ] {
            let e = read_regular(p, 1 << 20, Follow::Symlinks).unwrap_err();
            assert!(is_not_regular(&e), "{}: {e}", p.display());
            assert!(e.to_string().contains(what), "{}: {e}", p.display());
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn nofollow_refuses_symlinks_even_to_regular_files() {
        let t = Tmp::new("nofollow");
        let f = t.0.join("f");
        std::fs::write(&f, b"x").unwrap();
        let link = t.0.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read_regular(&link, 10, Follow::Symlinks).unwrap(), b"x");
        let e = read_regular(&link, 10, Follow::No).unwrap_err();
        assert!(is_not_regular(&e), "{e}");
        assert!(e.to_string().contains("a symlink"), "{e}");
    }

    #[test]
    fn caller_opened_descriptors() {
        let t = Tmp::new("fd");
        let f = t.0.join("f");
        std::fs::write(&f, b"hello").unwrap();
        let fifo = t.0.join("fifo");
        mkfifo(&fifo);
        let open = |p: &Path, flags: i32| -> OwnedFd {
            OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(p)
                .unwrap()
                .into()
        };
        for flags in [libc::O_PATH, libc::O_NONBLOCK] {
            assert_eq!(read_regular_fd(open(&f, flags), 5).unwrap(), b"hello");
            let e = read_regular_fd(open(&f, flags), 4).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
            let e = read_regular_fd(open(&fifo, flags), 5).unwrap_err();
            assert!(is_not_regular(&e), "{e}");
        }
    }
}
