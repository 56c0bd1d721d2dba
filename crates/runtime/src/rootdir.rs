//! The image's root directory, opened once per launch, through which every
//! path inside the image is resolved as if the root were `/`: an absolute
//! symlink is taken relative to the root, `..` never climbs above it, and
//! no magic link (`/proc/PID/fd/N`) is followed. Missing directories and
//! mount-point files are made level by level relative to their parent's
//! descriptor (systemd's `chase(CHASE_MKDIR_0755)`), and mounts are made
//! onto the resolved descriptor ([`fd_path`]), never onto a textual path
//! that the image could redirect to the host.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::sys::{RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};

/// As the kernel's limit on symlinks in one walk.
const MAX_SYMLINKS: u32 = 40;

/// What [`RootDir::chase`] makes when the path (or a directory on the way)
/// is missing. Missing directories on the way are always made with 0755.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Make {
    /// Nothing: a missing path is `ENOENT`.
    Nothing,
    /// A directory with this mode (set exactly, special bits included).
    Dir(u32),
    /// An empty regular file, mode 0644 (a mount point for a file bind).
    File,
}

/// The root directory of an image, as an `O_PATH` descriptor.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for RootDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The path through `/proc/self/fd` that names what `fd` refers to, for the
/// system calls (mount) that take only paths.
pub fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

impl RootDir {
    /// Opens the root directory `path` (a host path).
    pub fn open(path: &Path) -> nix::Result<RootDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root directory that `fd` (any descriptor of it) refers to, known
    /// on the host as `path`.
    pub fn from_fd(fd: BorrowedFd<'_>, path: &Path) -> nix::Result<RootDir> {
        let fd = nix::fcntl::openat(
            fd,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path the root was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container path of `host`, a host path below the root as
    /// `mount::in_root` makes them; `None` if it is not below the root.
    pub fn inside(&self, host: &Path) -> Option<PathBuf> {
        host.strip_prefix(&self.path)
            .ok()
            .map(|rel| Path::new("/").join(rel))
    }

    /// Opens the existing `path` (`O_PATH`), resolved inside the root.
    pub fn open_path(&self, path: &Path) -> nix::Result<OwnedFd> {
        crate::sys::openat2(
            self.fd.as_fd(),
            path,
            libc::O_PATH,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
    }

    /// Resolves `path` inside the root, making what is missing as `make`
    /// says, and returns a descriptor of it (`O_PATH`, or the new file's).
    /// A dangling symlink on the way is followed inside the root and its
    /// target made. One `openat2` when the path exists.
    pub fn chase(&self, path: &Path, make: Make) -> nix::Result<OwnedFd> {
        match self.open_path(path) {
            Err(Errno::ENOENT) if make != Make::Nothing => {}
            r => return r,
        }
        // Usually only the last component is missing: make it in its parent.
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            if let Ok(dir) = self.open_path(parent) {
                // Else a dangling symlink, or a race: the full walk sorts it out.
                let st = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW);
                if matches!(st, Err(Errno::ENOENT)) {
                    return make_last(dir.as_fd(), name, make);
                }
            }
        }
        self.walk(path, make)
    }

    /// Opens the directory that holds `path`'s last component (made if
    /// missing), and returns it with that component's name.
    pub fn parent_of<'p>(&self, path: &'p Path) -> nix::Result<(OwnedFd, &'p OsStr)> {
        let name = path.file_name().ok_or(Errno::EINVAL)?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok((self.chase(parent, Make::Dir(0o755))?, name))
    }

    /// Writes `contents` to the regular file `path` inside the root (made,
    /// or truncated), never through a symlink in its last component.
    pub fn write_file(&self, path: &Path, contents: &[u8]) -> nix::Result<()> {
        let (dir, name) = self.parent_of(path)?;
        let fd = nix::fcntl::openat(
            &dir,
            name,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        let mut rest = contents;
        while !rest.is_empty() {
            match nix::unistd::write(&fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes `link` (inside the root) a symlink to `target`, replacing what
    /// was there.
    pub fn symlink(&self, target: &str, link: &Path) -> nix::Result<()> {
        let (dir, name) = self.parent_of(link)?;
        let _ = nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, &dir, name)
    }

    /// The component-by-component walk: each step is relative to the
    /// descriptor of the directory before it, never follows a symlink
    /// itself (`O_NOFOLLOW`), and expands a symlink's target into the rest
    /// of the path (an absolute one from the root).
    fn walk(&self, path: &Path, make: Make) -> nix::Result<OwnedFd> {
        // The directories from just below the root to where the walk is;
        // `..` pops one, and at the root stays there.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut todo: VecDeque<OsString> = components(path).collect();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                stack.pop();
                continue;
            }
            let dir = stack.last().map_or(self.fd.as_fd(), |d| d.as_fd());
            let last = todo.is_empty();
            match nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = nix::fcntl::readlinkat(dir, name.as_os_str())?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                        todo.push_front(c);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(Errno::ENOENT) if make != Make::Nothing => {
                    if last {
                        return make_last(dir, &name, make);
                    }
                    match nix::sys::stat::mkdirat(
                        dir,
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
            let mut flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            if !last {
                flags |= OFlag::O_DIRECTORY;
            }
            let fd = nix::fcntl::openat(dir, name.as_os_str(), flags, Mode::empty())?;
            stack.push(fd);
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => self.open_path(Path::new("/")),
        }
    }
}

/// The names of `path`'s components, `..` kept; `/` and `.` dropped.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// Makes the missing `name` in `dir` as `make` says and opens it; never
/// through a symlink (`O_EXCL`/`O_NOFOLLOW`).
fn make_last(dir: BorrowedFd<'_>, name: &OsStr, make: Make) -> nix::Result<OwnedFd> {
    match make {
        Make::Nothing => Err(Errno::ENOENT),
        Make::File => nix::fcntl::openat(
            dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ),
        Make::Dir(mode) => {
            match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode & 0o777)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            if mode & 0o7000 != 0 {
                // The umask and mkdir drop the special bits; set them on the
                // directory itself (fchmod needs a real descriptor).
                let d = nix::fcntl::openat(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                nix::sys::stat::fchmod(&d, Mode::from_bits_truncate(mode))?;
                return Ok(d);
            }
            nix::fcntl::openat(
                dir,
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with links that point out of it, and a host directory they name.
    fn fixture(tag: &str) -> (PathBuf, PathBuf) {
        let base =
            std::env::temp_dir().join(format!("netspawn-rootdir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("img/root");
        let host = base.join("host");
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        symlink(&host, root.join("mnt/x")).unwrap();
        symlink("../../..", root.join("mnt/up")).unwrap();
        symlink("/nowhere/file", root.join("dangling")).unwrap();
        (base, root)
    }

    fn host_is_empty(base: &Path) -> bool {
        std::fs::read_dir(base.join("host"))
            .unwrap()
            .next()
            .is_none()
            && !base.join("deep").exists()
            && !base.join("img/deep").exists()
    }

    #[test]
    fn paths_resolve_inside_the_root_and_are_made_there() {
        let (base, root) = fixture("chase");
        let r = RootDir::open(&root).unwrap();
        let host = base.join("host");
        let inside_host = root.join(host.strip_prefix("/").unwrap());

        r.chase(Path::new("/mnt/x/foo/bar"), Make::Dir(0o755))
            .unwrap();
        assert!(inside_host.join("foo/bar").is_dir());
        r.chase(Path::new("/mnt/up/deep/er"), Make::Dir(0o700))
            .unwrap();
        assert!(root.join("deep/er").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&root.join("deep/er")), 0o700);
        assert_eq!(mode(&root.join("deep")), 0o755);
        r.chase(Path::new("/sticky"), Make::Dir(0o1777)).unwrap();
        assert_eq!(mode(&root.join("sticky")), 0o1777);
        // A dangling symlink is followed inside the root, its target made.
        r.chase(Path::new("/dangling"), Make::File).unwrap();
        assert!(root.join("nowhere/file").is_file());
        r.chase(Path::new("/mnt/x/f"), Make::File).unwrap();
        assert!(inside_host.join("f").is_file());
        // `..` at the root stays at the root.
        r.chase(Path::new("/../../../top"), Make::Dir(0o755))
            .unwrap();
        assert!(root.join("top").is_dir());
        assert_eq!(
            r.chase(Path::new("/missing"), Make::Nothing).unwrap_err(),
            Errno::ENOENT
        );
        // Files are written through the root too.
        r.write_file(Path::new("/mnt/x/w/file"), b"hello").unwrap();
        assert_eq!(std::fs::read(inside_host.join("w/file")).unwrap(), b"hello");
        r.symlink("/mnt/x", Path::new("/mnt/up/l")).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("l")).unwrap(),
            Path::new("/mnt/x")
        );
        assert!(host_is_empty(&base));
        // A symlink loop ends.
        symlink("/loop", root.join("loop")).unwrap();
        assert_eq!(
            r.chase(Path::new("/loop/a"), Make::Dir(0o755)).unwrap_err(),
            Errno::ELOOP
        );
        assert_eq!(r.inside(&root.join("a/b")), Some(PathBuf::from("/a/b")));
        assert_eq!(r.inside(Path::new("/elsewhere")), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
