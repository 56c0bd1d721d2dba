//! The container's file system: the root bind, the API file systems
//! (/proc, /sys, /dev, /tmp, /run), the user's binds and tmpfs mounts.
//!
//! [`plan`] is pure: it turns the launch settings into a list of
//! [`MountOp`]s (unit-tested without root); [`apply`] runs them in the
//! container's mount namespace before `pivot_root`, resolving every path
//! inside the image through its root directory ([`crate::rootdir`]), so a
//! symlink in the image never leads a mount or a new directory out of it.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use thiserror::Error;

use crate::rootdir::{fd_path, Make, RootDir};
use crate::spec::{BindSpec, TmpfsSpec};

#[derive(Debug, Error)]
pub enum MountError {
    #[error("{op}: {err}")]
    Op { op: String, err: nix::Error },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("bind source {0} does not exist")]
    MissingSource(PathBuf),
    #[error("{0}")]
    Overlay(String),
    #[error("{0} is not below the container's root")]
    Outside(PathBuf),
}

/// What the mount plan depends on.
#[derive(Debug, Clone, Default)]
pub struct MountConfig {
    pub read_only: bool,
    /// The container has its own network namespace (then /proc/sys/net stays writable).
    pub private_network: bool,
    pub binds: Vec<BindSpec>,
    pub tmpfs: Vec<TmpfsSpec>,
    /// Host path of the pty slave to appear as /dev/console.
    pub console: Option<PathBuf>,
    /// Contents for /run/host/os-release.
    pub host_os_release: Option<String>,
    pub container_uuid: String,
    /// A resolv.conf (written by the launcher from the DHCP lease) to show
    /// as the container's /etc/resolv.conf, if it exists by mount time.
    pub resolv_conf: Option<PathBuf>,
    /// The container has its own user namespace: sysfs can only be mounted
    /// with its own network namespace, else the host's /sys is bound.
    pub userns: bool,
    /// `--volatile=state`: a fresh tmpfs on /var (the root is read-only).
    pub volatile_state: bool,
    /// `--overlay=`/`--overlay-ro=`, their directories opened by the launcher.
    pub overlays: Vec<crate::overlay::OverlayMount>,
}

/// Detached idmapped trees (`--private-users-ownership=map`), made by the
/// launcher before the clone and moved into place by the container.
#[derive(Debug, Default)]
pub struct Idmapped {
    /// The image's root, moved onto the root directory instead of its bind.
    pub root: Option<std::os::fd::OwnedFd>,
    /// Host bind sources, each taken by the first bind of that source.
    pub binds: Vec<(PathBuf, std::os::fd::OwnedFd)>,
}

/// One step of setting up the container's file system. Paths are absolute
/// host paths (already joined with the root); [`apply`] resolves those
/// below the root inside it (see [`crate::rootdir`]), never textually.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    MakeDir {
        path: PathBuf,
        mode: u32,
    },
    /// Make `path` a file or directory, whichever `like` is, to bind onto.
    MakeBindTarget {
        path: PathBuf,
        like: PathBuf,
        /// `like` is below the root (resolved inside it), not a host path.
        like_in_root: bool,
    },
    Mount {
        source: Option<String>,
        /// `source` is a path below the root (resolved inside it), not a
        /// host path or a file system's name.
        source_in_root: bool,
        target: PathBuf,
        fstype: Option<&'static str>,
        flags: MsFlags,
        data: Option<String>,
    },
    Symlink {
        target: String,
        link: PathBuf,
    },
    WriteFile {
        path: PathBuf,
        contents: String,
    },
    /// Bind `path` onto itself read-only, if the kernel provides it.
    ReadOnlyIfExists {
        path: PathBuf,
    },
    /// Bind `src` over the image's /etc/resolv.conf (following a symlink
    /// there inside the root), if `src` exists.
    ResolvConf {
        src: PathBuf,
    },
    /// Make every mount below `path` read-only too (the mount at `path`
    /// itself is remounted by the step before), as systemd remounts
    /// recursively: a read-only bind of a tree with mounts in it leaves none
    /// of them writable. Skipped on kernels without `mount_setattr(2)`.
    ReadOnlyTree {
        path: PathBuf,
    },
    /// Make every mount that is already below `root` (those the image
    /// brought with it through the recursive root bind) read-only, with
    /// what is mounted below them. Runs first, before our own mounts, which
    /// keep their own flags (/tmp, /run, writable binds).
    ReadOnlySubmounts {
        root: PathBuf,
    },
    /// An overlay file system at `target` (made first, inside the root),
    /// from directories the launcher opened; without an upper directory
    /// of its own, a writable one gets a fresh tmpfs.
    Overlay {
        target: PathBuf,
        mount: crate::overlay::OverlayMount,
    },
    /// Bind the host's device node `host` to `target` (made first), if the
    /// host has it.
    BindDeviceIfExists {
        host: PathBuf,
        target: PathBuf,
    },
}

/// Host device nodes that every container gets, bind-mounted into its /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Host device nodes a container gets when the host has them (systemd-nspawn
/// copies /dev/net/tun the same way: skipped when the host lacks it).
pub const OPTIONAL_DEVICES: &[&str] = &["net/tun"];

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Joins an absolute container path onto the root, refusing `..`. Textual
/// only (symlinks in the image are not looked at): for naming paths in the
/// plan and in messages; [`apply`] resolves them inside the root.
pub fn in_root(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(c) = c {
            out.push(c);
        }
    }
    out
}

/// Computes the mount steps for a container whose root directory is `root`
/// (already bind-mounted onto itself by the caller).
pub fn plan(cfg: &MountConfig, root: &Path) -> Vec<MountOp> {
    let r = |p: &str| in_root(root, Path::new(p));
    let mut ops = Vec::with_capacity(64);
    let mnt = |source: Option<&str>,
               target: PathBuf,
               fstype: Option<&'static str>,
               flags: MsFlags,
               data: Option<&str>| {
        MountOp::Mount {
            source: source.map(str::to_string),
            source_in_root: false,
            target,
            fstype,
            flags,
            data: data.map(str::to_string),
        }
    };
    let bind = |src: &str, target: PathBuf, extra: MsFlags| {
        mnt(Some(src), target, None, MsFlags::MS_BIND | extra, None)
    };
    let bind_in_root = |src: PathBuf, target: PathBuf, extra: MsFlags| MountOp::Mount {
        source: Some(src.to_string_lossy().into_owned()),
        source_in_root: true,
        target,
        fstype: None,
        flags: MsFlags::MS_BIND | extra,
        data: None,
    };
    let remount = |target: PathBuf, flags: MsFlags| {
        mnt(
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None,
        )
    };

    if cfg.read_only {
        ops.push(MountOp::ReadOnlySubmounts {
            root: root.to_path_buf(),
        });
    }
    for d in ["proc", "sys", "dev", "tmp", "run"] {
        ops.push(MountOp::MakeDir {
            path: r(d),
            mode: 0o755,
        });
    }

    // /proc, with /proc/sys read-only (but /proc/sys/net writable in a private netns).
    ops.push(mnt(
        Some("proc"),
        r("proc"),
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    ));
    let proc_sys = r("proc/sys");
    ops.push(bind_in_root(
        proc_sys.clone(),
        proc_sys.clone(),
        MsFlags::empty(),
    ));
    if cfg.private_network {
        let net = r("proc/sys/net");
        ops.push(bind_in_root(net.clone(), net.clone(), MsFlags::empty()));
    }
    ops.push(remount(proc_sys, MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC));
    ops.push(MountOp::ReadOnlyIfExists {
        path: r("proc/sysrq-trigger"),
    });

    // /sys read-only, with the container's own cgroup2 tree (cgroup namespace) on top.
    if cfg.userns && !cfg.private_network {
        // In a user namespace sysfs needs a network namespace of its own:
        // the host's /sys, bound read-only with everything below it.
        ops.push(bind("/sys", r("sys"), MsFlags::MS_REC));
        ops.push(remount(r("sys"), MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC));
        ops.push(MountOp::ReadOnlyTree { path: r("sys") });
    } else {
        ops.push(mnt(
            Some("sysfs"),
            r("sys"),
            Some("sysfs"),
            MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
            None,
        ));
    }
    ops.push(mnt(
        Some("cgroup2"),
        r("sys/fs/cgroup"),
        Some("cgroup2"),
        NOSUID_NODEV_NOEXEC,
        None,
    ));

    // /dev: a private tmpfs. It is nodev: device nodes work only as bind
    // mounts of the host's nodes listed here, so a node made with mknod
    // cannot be opened.
    ops.push(mnt(
        Some("tmpfs"),
        r("dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=0755,size=4m,nr_inodes=64k"),
    ));
    for dev in DEVICES {
        let host = format!("/dev/{dev}");
        ops.push(MountOp::MakeBindTarget {
            path: r(&host),
            like: PathBuf::from(&host),
            like_in_root: false,
        });
        ops.push(bind(&host, r(&host), MsFlags::empty()));
    }
    for dev in OPTIONAL_DEVICES {
        let host = format!("/dev/{dev}");
        ops.push(MountOp::BindDeviceIfExists {
            target: r(&host),
            host: PathBuf::from(host),
        });
    }
    ops.push(MountOp::MakeDir {
        path: r("dev/pts"),
        mode: 0o755,
    });
    ops.push(mnt(
        Some("devpts"),
        r("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    ));
    ops.push(MountOp::Symlink {
        target: "pts/ptmx".into(),
        link: r("dev/ptmx"),
    });
    ops.push(MountOp::MakeDir {
        path: r("dev/shm"),
        mode: 0o1777,
    });
    ops.push(mnt(
        Some("tmpfs"),
        r("dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ));
    ops.push(MountOp::MakeDir {
        path: r("dev/mqueue"),
        mode: 0o755,
    });
    ops.push(mnt(
        Some("mqueue"),
        r("dev/mqueue"),
        Some("mqueue"),
        NOSUID_NODEV_NOEXEC,
        None,
    ));
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            target: target.into(),
            link: r(link),
        });
    }
    if let Some(console) = &cfg.console {
        ops.push(MountOp::MakeBindTarget {
            path: r("dev/console"),
            like: PathBuf::from("/dev/null"),
            like_in_root: false,
        });
        ops.push(bind(
            &console.to_string_lossy(),
            r("dev/console"),
            MsFlags::empty(),
        ));
    }

    // Fresh /tmp and /run, and the Container Interface's /run/host.
    ops.push(mnt(
        Some("tmpfs"),
        r("tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=1777"),
    ));
    ops.push(mnt(
        Some("tmpfs"),
        r("run"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=0755"),
    ));
    ops.push(MountOp::MakeDir {
        path: r("run/host"),
        mode: 0o755,
    });
    if let Some(os) = &cfg.host_os_release {
        ops.push(MountOp::WriteFile {
            path: r("run/host/os-release"),
            contents: os.clone(),
        });
    }
    ops.push(MountOp::WriteFile {
        path: r("run/host/container-manager"),
        contents: "netspawn\n".into(),
    });
    ops.push(MountOp::WriteFile {
        path: r("run/host/container-uuid"),
        contents: format!("{}\n", cfg.container_uuid),
    });

    if cfg.volatile_state {
        ops.push(MountOp::MakeDir {
            path: r("var"),
            mode: 0o755,
        });
        ops.push(mnt(
            Some("tmpfs"),
            r("var"),
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
            Some("mode=0755"),
        ));
    }

    // The user's binds and tmpfs mounts, in the order given.
    for b in &cfg.binds {
        let src = if b.source_in_container {
            in_root(root, &b.source)
        } else {
            b.source.clone()
        };
        let dst = in_root(root, &b.dest);
        ops.push(MountOp::MakeBindTarget {
            path: dst.clone(),
            like: src.clone(),
            like_in_root: b.source_in_container,
        });
        let rec = if b.recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        ops.push(if b.source_in_container {
            bind_in_root(src, dst.clone(), rec)
        } else {
            bind(&src.to_string_lossy(), dst.clone(), rec)
        });
        if b.read_only {
            ops.push(remount(dst.clone(), MsFlags::MS_RDONLY));
            if b.recursive {
                ops.push(MountOp::ReadOnlyTree { path: dst });
            }
        }
    }
    for t in &cfg.tmpfs {
        let dst = in_root(root, &t.path);
        ops.push(MountOp::MakeDir {
            path: dst.clone(),
            mode: 0o755,
        });
        ops.push(mnt(
            Some("tmpfs"),
            dst,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&t.options),
        ));
    }

    for o in &cfg.overlays {
        ops.push(MountOp::Overlay {
            target: in_root(root, &o.dest),
            mount: o.clone(),
        });
    }

    if let Some(src) = &cfg.resolv_conf {
        ops.push(MountOp::ResolvConf { src: src.clone() });
    }

    // Last, the root itself: nodev always (see /dev above), read-only on request.
    let mut root_flags = MsFlags::MS_NODEV;
    if cfg.read_only {
        root_flags |= MsFlags::MS_RDONLY;
    }
    ops.push(remount(root.to_path_buf(), root_flags));
    ops
}

/// Splits the plan for a container with a user namespace: what the
/// launcher's side makes with the host's privileges before the user
/// namespace exists (the root, /dev, /tmp, /run, binds, tmpfs, read-only
/// remounts: their flags are then locked, so root inside cannot remount
/// them writable), and what only the container can make, in its own
/// namespaces (/proc, a fresh sysfs, cgroup2, mqueue, devpts). The
/// resolv.conf is bound by the host's side too: the launcher makes the file
/// before the clone and fills it in once the container's network is up.
pub fn split_for_userns(ops: Vec<MountOp>, root: &Path) -> (Vec<MountOp>, Vec<MountOp>) {
    let proc = in_root(root, Path::new("/proc"));
    ops.into_iter().partition(|op| match op {
        MountOp::Mount {
            fstype: Some("proc" | "sysfs" | "cgroup2" | "mqueue" | "devpts"),
            ..
        } => false,
        MountOp::Mount { target: p, .. }
        | MountOp::ReadOnlyIfExists { path: p }
        | MountOp::ReadOnlyTree { path: p } => !p.starts_with(&proc),
        _ => true,
    })
}

/// Runs `f` with the file system IDs of the container's root, when the
/// launcher's side makes the file system for a container with a user
/// namespace: what it creates (on our tmpfs mounts, or through an idmapped
/// root, which refuses IDs outside its mapping) then belongs to the
/// container. The host's IDs (and capabilities) come back afterwards. A
/// directory of the image that the container's root may not write (ownership
/// `off`) is tried again as the host's root.
fn as_owner<T>(owner: Option<u32>, f: impl Fn() -> nix::Result<T>) -> nix::Result<T> {
    use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
    let Some(id) = owner else {
        return f();
    };
    let (old_u, old_g) = (setfsuid(Uid::from_raw(id)), setfsgid(Gid::from_raw(id)));
    let r = f();
    setfsgid(old_g);
    setfsuid(old_u);
    match r {
        Err(nix::Error::EACCES | nix::Error::EPERM) => f(),
        r => r,
    }
}

/// The file system IDs [`apply`] makes things with: like [`as_owner`],
/// but the container's root's IDs stay in place after a step that only
/// makes things in the image (a directory, a symlink, a file), for the next
/// such step, and come back to the host's at the start of any other step
/// ([`FsIds::host`]) or when this goes: a run of such steps switches twice,
/// not twice per step. Each step still runs with the same IDs as through
/// [`as_owner`].
struct FsIds {
    owner: Option<u32>,
    /// The host's IDs, while the container's root's are in place.
    saved: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

impl FsIds {
    fn new(owner: Option<u32>) -> Self {
        FsIds { owner, saved: None }
    }

    /// Runs `f` with the container's root's IDs (left in place), or as the
    /// host's root if those may not (`EACCES`, `EPERM`), as [`as_owner`].
    fn owner<T>(&mut self, f: impl Fn() -> nix::Result<T>) -> nix::Result<T> {
        use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
        let Some(id) = self.owner else {
            return f();
        };
        if self.saved.is_none() {
            self.saved = Some((setfsuid(Uid::from_raw(id)), setfsgid(Gid::from_raw(id))));
        }
        match f() {
            Err(nix::Error::EACCES | nix::Error::EPERM) => {
                self.host();
                f()
            }
            r => r,
        }
    }

    /// The host's IDs back, if the container's root's are in place.
    fn host(&mut self) {
        if let Some((u, g)) = self.saved.take() {
            nix::unistd::setfsgid(g);
            nix::unistd::setfsuid(u);
        }
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        self.host();
    }
}

fn op_name(op: &MountOp) -> String {
    match op {
        MountOp::MakeDir { path, .. } => format!("create directory {}", path.display()),
        MountOp::MakeBindTarget { path, .. } => format!("create mount point {}", path.display()),
        MountOp::Mount {
            source,
            target,
            fstype,
            flags,
            ..
        } => {
            if flags.contains(MsFlags::MS_REMOUNT) {
                format!("remount {}", target.display())
            } else if flags.contains(MsFlags::MS_BIND) {
                format!(
                    "bind {} to {}",
                    source.as_deref().unwrap_or("?"),
                    target.display()
                )
            } else {
                format!("mount {} on {}", fstype.unwrap_or("?"), target.display())
            }
        }
        MountOp::Symlink { link, .. } => format!("symlink {}", link.display()),
        MountOp::WriteFile { path, .. } => format!("write {}", path.display()),
        MountOp::ReadOnlyIfExists { path } => format!("make {} read-only", path.display()),
        MountOp::ResolvConf { src, .. } => format!("bind {} to /etc/resolv.conf", src.display()),
        MountOp::ReadOnlyTree { path } => {
            format!("make the mounts below {} read-only", path.display())
        }
        MountOp::ReadOnlySubmounts { root } => {
            format!("make the image's mounts below {} read-only", root.display())
        }
        MountOp::BindDeviceIfExists { host, target } => {
            format!("bind {} to {}", host.display(), target.display())
        }
        MountOp::Overlay { target, .. } => format!("mount overlay on {}", target.display()),
    }
}

/// The container path of `path`, a host path below the root.
fn inside(root: &RootDir, path: &Path) -> Result<PathBuf, MountError> {
    root.inside(path)
        .ok_or_else(|| MountError::Outside(path.to_path_buf()))
}

/// `mount(2)` with paths as strings (a `/proc/self/fd/N` or a host path).
fn mount_str(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, target, fstype, flags, data)
}

/// What covers the root directory before the container's own mounts: put
/// in place by [`layer_root`] after the root is bound onto itself (or its
/// idmapped tree moved there), before it is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RootLayer {
    /// The image itself.
    #[default]
    Image,
    /// `-x`: an overlayfs whose lower layer is the image and whose upper
    /// and work directories are the machine's ephemeral layer on disk.
    Ephemeral { upper: PathBuf, work: PathBuf },
    /// `--volatile=yes`: a tmpfs with the image's /usr bound read-only.
    VolatileYes,
    /// `--volatile=overlay`: an overlayfs over the image with a tmpfs upper.
    VolatileOverlay,
}

/// Escapes a path for an overlayfs option (`,` `:` and `\` are special).
pub fn overlay_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Mounts an overlay on `at` (paths escaped for overlayfs's option parser).
fn overlay_on(at: &str, lower: &str, upper: &str, work: &str) -> nix::Result<()> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        overlay_escape(lower),
        overlay_escape(upper),
        overlay_escape(work)
    );
    mount_str(
        Some("overlay"),
        at,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
    )
}

/// Covers the root directory `root` (a host path, bound onto itself) as
/// `layer` says. `owner`: the container's root on the host with a user
/// namespace (the tmpfs mounts are given to it).
pub fn layer_root(root: &Path, layer: &RootLayer, owner: Option<u32>) -> Result<(), MountError> {
    let op = |what: &str| {
        let what = format!("{what} {}", root.display());
        move |err: nix::Error| MountError::Op { op: what, err }
    };
    let root_str = root.to_string_lossy().into_owned();
    // The tmpfs that covers the image for the volatile modes, owned by the
    // container's root.
    let tmpfs_on_root = || {
        let data = match owner {
            Some(id) => format!("mode=0755,uid={id},gid={id}"),
            None => "mode=0755".to_string(),
        };
        mount_str(
            Some("tmpfs"),
            &root_str,
            Some("tmpfs"),
            MsFlags::MS_STRICTATIME,
            Some(&data),
        )
    };
    match layer {
        RootLayer::Image => Ok(()),
        RootLayer::Ephemeral { upper, work } => overlay_on(
            &root_str,
            &root_str,
            &upper.to_string_lossy(),
            &work.to_string_lossy(),
        )
        .map_err(op("mount the ephemeral overlay on")),
        RootLayer::VolatileOverlay => {
            // The image, held by a descriptor below the tmpfs that covers it.
            let image = RootDir::open(root).map_err(op("open"))?;
            let st = nix::sys::stat::fstat(&image).map_err(op("stat"))?;
            tmpfs_on_root().map_err(op("mount the volatile tmpfs on"))?;
            let top = RootDir::open(root).map_err(op("open"))?;
            for d in ["upper", "work"] {
                nix::sys::stat::mkdirat(&top, d, nix::sys::stat::Mode::from_bits_truncate(0o755))
                    .map_err(op("make the volatile overlay's directories in"))?;
            }
            // The overlay's root takes the upper directory's mode and owner.
            let upper = format!("{}/upper", fd_path(top.as_fd()));
            nix::unistd::fchownat(
                &top,
                "upper",
                Some(nix::unistd::Uid::from_raw(st.st_uid)),
                Some(nix::unistd::Gid::from_raw(st.st_gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(op("own the volatile overlay of"))?;
            nix::sys::stat::fchmodat(
                &top,
                "upper",
                nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(op("set the mode of the volatile overlay of"))?;
            let work = format!("{}/work", fd_path(top.as_fd()));
            overlay_on(&root_str, &fd_path(image.as_fd()), &upper, &work)
                .map_err(op("mount the volatile overlay on"))
        }
        RootLayer::VolatileYes => {
            let image = RootDir::open(root).map_err(op("open"))?;
            let usr = image
                .open_path(Path::new("/usr"))
                .map_err(op("open /usr of"))?;
            tmpfs_on_root().map_err(op("mount the volatile tmpfs on"))?;
            let top = RootDir::open(root).map_err(op("open"))?;
            let at = top
                .chase(Path::new("/usr"), Make::Dir(0o755))
                .map_err(op("make /usr in"))?;
            let at = fd_path(at.as_fd());
            mount_str(
                Some(&fd_path(usr.as_fd())),
                &at,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(op("bind the image's /usr into"))?;
            let usr = top
                .open_path(Path::new("/usr"))
                .map_err(op("open /usr of"))?;
            crate::sys::mount_setattr_rdonly_fd(usr.as_fd(), true)
                .or_else(|e| {
                    if e != nix::Error::ENOSYS {
                        return Err(e);
                    }
                    mount_str(
                        None,
                        &fd_path(usr.as_fd()),
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None,
                    )
                })
                .map_err(op("make /usr read-only in"))
        }
    }
}

/// Runs the steps in order, stopping at the first failure. Every path
/// below the root is resolved inside `root` (opened once, after the root
/// was bound onto itself), missing directories and mount-point files are
/// made there, and each mount is made onto the resolved descriptor: a
/// symlink in the image never leads out of it.
///
/// `owner`: the container's root on the host, when the launcher's side
/// makes the file system for a container with a user namespace (its
/// tmpfs mounts and what is made on them are given to it).
pub fn apply(
    ops: &[MountOp],
    root: &RootDir,
    trees: &mut Idmapped,
    owner: Option<u32>,
) -> Result<(), MountError> {
    // The mount point the step before made, kept for the mount onto it
    // (one walk less); any other step may cover it, and drops it.
    let mut made: Option<(&Path, std::os::fd::OwnedFd)> = None;
    let mut ids = FsIds::new(owner);
    for op in ops {
        let fail = |err: nix::Error| MountError::Op {
            op: op_name(op),
            err,
        };
        let last_made = made.take();
        if !matches!(
            op,
            MountOp::MakeDir { .. } | MountOp::Symlink { .. } | MountOp::WriteFile { .. }
        ) {
            ids.host();
        }
        match op {
            MountOp::MakeDir { path, mode } => {
                let at = inside(root, path)?;
                let fd = ids
                    .owner(|| root.chase(&at, Make::Dir(*mode)))
                    .map_err(fail)?;
                made = Some((path, fd));
            }
            MountOp::MakeBindTarget {
                path,
                like,
                like_in_root,
            } => {
                let is_dir = if *like_in_root {
                    root.open_path(&inside(root, like)?)
                        .and_then(|fd| nix::sys::stat::fstat(&fd))
                        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                        .ok()
                } else {
                    fs::metadata(like).map(|md| md.is_dir()).ok()
                };
                let is_dir = is_dir.ok_or_else(|| MountError::MissingSource(like.clone()))?;
                let make = if is_dir { Make::Dir(0o755) } else { Make::File };
                let at = inside(root, path)?;
                let fd = as_owner(owner, || root.chase(&at, make)).map_err(fail)?;
                made = Some((path, fd));
            }
            MountOp::Mount {
                source,
                source_in_root,
                target,
                fstype,
                flags,
                data,
            } => {
                let src_fd = match source {
                    Some(src) if *source_in_root => Some(
                        root.open_path(&inside(root, Path::new(src))?)
                            .map_err(fail)?,
                    ),
                    _ => None,
                };
                let src = match &src_fd {
                    Some(fd) => Some(fd_path(fd.as_fd())),
                    None => source.clone(),
                };
                // A mount point hidden by an earlier mount (a directory made
                // in the image below what is now a tmpfs) is made again.
                let make = if flags.contains(MsFlags::MS_REMOUNT) {
                    Make::Nothing
                } else {
                    Make::Dir(0o755)
                };
                let dst = match last_made {
                    Some((p, fd)) if p == target.as_path() && make != Make::Nothing => fd,
                    _ => {
                        let at = inside(root, target)?;
                        as_owner(owner, || root.chase(&at, make)).map_err(fail)?
                    }
                };
                // A host directory with an idmapped tree is moved in instead.
                let tree = match source {
                    Some(s)
                        if !*source_in_root
                            && flags.contains(MsFlags::MS_BIND)
                            && !flags.contains(MsFlags::MS_REMOUNT) =>
                    {
                        trees
                            .binds
                            .iter()
                            .position(|(p, _)| p.as_os_str() == s.as_str())
                            .map(|i| trees.binds.remove(i).1)
                    }
                    _ => None,
                };
                // A tmpfs of ours belongs to the container's root.
                let data = match (owner, *fstype, data) {
                    (Some(id), Some("tmpfs"), Some(d)) => Some(format!("{d},uid={id},gid={id}")),
                    (Some(id), Some("tmpfs"), None) => Some(format!("uid={id},gid={id}")),
                    (_, _, d) => d.clone(),
                };
                match tree {
                    Some(t) => crate::userns::idmap::move_onto(t.as_fd(), dst.as_fd()),
                    None => mount_str(
                        src.as_deref(),
                        &fd_path(dst.as_fd()),
                        *fstype,
                        *flags,
                        data.as_deref(),
                    ),
                }
                .map_err(fail)?;
            }
            MountOp::Symlink { target, link } => {
                let at = inside(root, link)?;
                ids.owner(|| root.symlink(target, &at)).map_err(fail)?;
            }
            MountOp::WriteFile { path, contents } => {
                let at = inside(root, path)?;
                ids.owner(|| root.write_file(&at, contents.as_bytes()))
                    .map_err(fail)?;
            }
            MountOp::ResolvConf { src } => {
                if src.exists() {
                    // A symlink there (Debian with systemd-resolved points it
                    // into /run) is followed inside the root.
                    let dst = as_owner(owner, || {
                        root.chase(Path::new("/etc/resolv.conf"), Make::File)
                    })
                    .map_err(fail)?;
                    mount::<Path, str, str, str>(
                        Some(src),
                        fd_path(dst.as_fd()).as_str(),
                        None,
                        MsFlags::MS_BIND,
                        None,
                    )
                    .map_err(fail)?;
                }
            }
            MountOp::ReadOnlyTree { path } => {
                let fd = root.open_path(&inside(root, path)?).map_err(fail)?;
                match crate::sys::mount_setattr_rdonly_fd(fd.as_fd(), true) {
                    // The mount itself is read-only already (the remount before).
                    Ok(()) | Err(nix::Error::ENOSYS) => {}
                    Err(err) => return Err(fail(err)),
                }
            }
            MountOp::ReadOnlySubmounts { root: path } => {
                let io = |err| MountError::Io {
                    path: PathBuf::from("/proc/self/mountinfo"),
                    err,
                };
                let info = fs::read_to_string("/proc/self/mountinfo").map_err(io)?;
                for mp in submounts(&info, path) {
                    let r = root.open_path(&inside(root, &mp)?).and_then(|fd| {
                        crate::sys::mount_setattr_rdonly_fd(fd.as_fd(), true).or_else(|e| {
                            if e != nix::Error::ENOSYS {
                                return Err(e);
                            }
                            mount_str(
                                None,
                                &fd_path(fd.as_fd()),
                                None,
                                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                                None,
                            )
                        })
                    });
                    r.map_err(|err| MountError::Op {
                        op: format!("make {} read-only", mp.display()),
                        err,
                    })?;
                }
            }
            MountOp::Overlay { target, mount: m } => {
                let at = inside(root, target)?;
                let dst = as_owner(owner, || root.chase(&at, Make::Dir(0o755))).map_err(fail)?;
                let mut dst_path = fd_path(dst.as_fd());
                let mut tmpfs = None;
                if m.upper.is_none() && (!m.read_only || m.lower.len() < 2) {
                    // A fresh tmpfs for the upper and work directories (or
                    // an empty top layer), on the mount point (the overlay
                    // then covers it).
                    let data = match owner {
                        Some(id) => format!("mode=0755,uid={id},gid={id}"),
                        None => "mode=0755".to_string(),
                    };
                    mount_str(
                        Some("tmpfs"),
                        &dst_path,
                        Some("tmpfs"),
                        MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
                        Some(&data),
                    )
                    .map_err(fail)?;
                    let top = root.open_path(&at).map_err(fail)?;
                    for d in ["upper", "work"] {
                        as_owner(owner, || {
                            nix::sys::stat::mkdirat(
                                &top,
                                d,
                                nix::sys::stat::Mode::from_bits_truncate(0o755),
                            )
                        })
                        .map_err(fail)?;
                    }
                    dst_path = fd_path(top.as_fd());
                    tmpfs = Some(top);
                }
                let layers = crate::overlay::open(m, root)
                    .map_err(|e| MountError::Overlay(e.to_string()))?;
                let data = crate::overlay::options(
                    &layers,
                    m.read_only,
                    tmpfs.as_ref().map(|t| fd_path(t.as_fd())).as_deref(),
                );
                let flags = if m.read_only {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                };
                mount_str(
                    Some("overlay"),
                    &dst_path,
                    Some("overlay"),
                    flags | MsFlags::MS_NODEV,
                    Some(&data),
                )
                .map_err(fail)?;
            }
            MountOp::BindDeviceIfExists { host, target } => {
                if fs::symlink_metadata(host).is_ok() {
                    let at = inside(root, target)?;
                    let dst = as_owner(owner, || root.chase(&at, Make::File)).map_err(fail)?;
                    mount::<Path, str, str, str>(
                        Some(host),
                        fd_path(dst.as_fd()).as_str(),
                        None,
                        MsFlags::MS_BIND,
                        None,
                    )
                    .map_err(fail)?;
                }
            }
            MountOp::ReadOnlyIfExists { path } => {
                let path = inside(root, path)?;
                match root.open_path(&path) {
                    Err(nix::Error::ENOENT) => {}
                    Err(err) => return Err(fail(err)),
                    Ok(fd) => {
                        let at = fd_path(fd.as_fd());
                        mount_str(Some(&at), &at, None, MsFlags::MS_BIND, None).map_err(fail)?;
                        // The descriptor is of what lies below the new bind:
                        // resolve again to remount the bind itself.
                        let top = root.open_path(&path).map_err(fail)?;
                        mount_str(
                            None,
                            &fd_path(top.as_fd()),
                            None,
                            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                            None,
                        )
                        .map_err(fail)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The mount points strictly below `root` in a `/proc/self/mountinfo` text
/// (field 5, with the kernel's octal escapes undone), in the order listed.
fn submounts(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let unescape = |s: &str| -> PathBuf {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let octal = b
                .get(i + 1..i + 4)
                .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
            match octal {
                Some(d) => {
                    let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                    out.push(u8::try_from(v).unwrap_or(b'?'));
                    i += 4;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        PathBuf::from(std::ffi::OsString::from_vec(out))
    };
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|mp| mp != root && mp.starts_with(root))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(ops: &[MountOp]) -> Vec<String> {
        ops.iter()
            .filter_map(|op| match op {
                MountOp::Mount {
                    target,
                    flags,
                    fstype,
                    ..
                } => Some(format!(
                    "{}{}{}",
                    fstype.unwrap_or(if flags.contains(MsFlags::MS_REMOUNT) {
                        "remount"
                    } else {
                        "bind"
                    }),
                    if flags.contains(MsFlags::MS_RDONLY) {
                        ":ro "
                    } else {
                        " "
                    },
                    target.display()
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn default_plan() {
        let ops = plan(&MountConfig::default(), Path::new("/img"));
        let t = targets(&ops);
        assert_eq!(t[0], "proc /img/proc");
        assert!(t.contains(&"remount:ro /img/proc/sys".to_string()));
        assert!(t.contains(&"sysfs:ro /img/sys".to_string()));
        assert!(t.contains(&"cgroup2 /img/sys/fs/cgroup".to_string()));
        assert!(t.contains(&"tmpfs /img/dev".to_string()));
        for d in DEVICES {
            assert!(t.contains(&format!("bind /img/dev/{d}")), "{d}");
        }
        assert!(t.contains(&"devpts /img/dev/pts".to_string()));
        assert!(t.contains(&"tmpfs /img/tmp".to_string()));
        assert!(t.contains(&"tmpfs /img/run".to_string()));
        assert!(!t.iter().any(|x| x.contains("proc/sys/net")));
        assert!(!t.iter().any(|x| x.contains("console")));
        // The root is remounted last: nodev, writable.
        assert_eq!(t.last().unwrap(), "remount /img");
        let Some(MountOp::Mount { flags, .. }) = ops.last() else {
            panic!()
        };
        assert!(flags.contains(MsFlags::MS_NODEV));
        // /dev is nodev: mknod'ed nodes cannot be opened there.
        let dev = ops.iter().find(|op| matches!(op, MountOp::Mount { target, fstype: Some("tmpfs"), .. } if target == Path::new("/img/dev"))).unwrap();
        let MountOp::Mount { flags, .. } = dev else {
            panic!()
        };
        assert!(flags.contains(MsFlags::MS_NODEV));
    }

    #[test]
    fn options_change_the_plan() {
        let cfg = MountConfig {
            read_only: true,
            private_network: true,
            console: Some("/dev/pts/7".into()),
            binds: vec![
                BindSpec {
                    source: "/srv".into(),
                    dest: "/mnt/srv".into(),
                    read_only: true,
                    recursive: true,
                    source_in_container: false,
                },
                BindSpec {
                    source: "/etc".into(),
                    dest: "/host-etc".into(),
                    read_only: false,
                    recursive: false,
                    source_in_container: true,
                },
            ],
            tmpfs: vec![TmpfsSpec {
                path: "/var/cache".into(),
                options: "mode=0700".into(),
            }],
            ..Default::default()
        };
        let ops = plan(&cfg, Path::new("/img"));
        let t = targets(&ops);
        let pos = |s: &str| {
            t.iter()
                .position(|x| x == s)
                .unwrap_or_else(|| panic!("{s} not in {t:?}"))
        };
        // /proc/sys/net is bound before /proc/sys goes read-only, so it stays writable.
        assert!(pos("bind /img/proc/sys/net") < pos("remount:ro /img/proc/sys"));
        assert!(pos("bind /img/dev/console") > pos("tmpfs /img/dev"));
        assert!(pos("remount:ro /img/mnt/srv") > pos("bind /img/mnt/srv"));
        assert!(t.contains(&"tmpfs /img/var/cache".to_string()));
        assert_eq!(t.last().unwrap(), "remount:ro /img");
        // A "+" source is taken inside the image (and resolved inside it).
        assert!(ops.iter().any(|op| matches!(op, MountOp::Mount { source: Some(s), target, source_in_root: true, .. } if s == "/img/etc" && target == Path::new("/img/host-etc"))));
        assert!(ops.iter().any(|op| matches!(op, MountOp::MakeBindTarget { path, like, like_in_root: true } if like == Path::new("/img/etc") && path == Path::new("/img/host-etc"))));
        // A host source is the host's.
        assert!(ops.iter().any(|op| matches!(op, MountOp::Mount { source: Some(s), target, source_in_root: false, .. } if s == "/srv" && target == Path::new("/img/mnt/srv"))));
        assert!(ops.iter().any(|op| matches!(op, MountOp::MakeBindTarget { like, like_in_root: false, .. } if like == Path::new("/srv"))));
        // /proc/sys and /proc/sys/net are bound onto themselves inside the root.
        assert!(ops.iter().any(|op| matches!(op, MountOp::Mount { source: Some(s), source_in_root: true, .. } if s == "/img/proc/sys/net")));
        let srv = ops.iter().find(|op| matches!(op, MountOp::Mount { target, flags, .. } if target == Path::new("/img/mnt/srv") && !flags.contains(MsFlags::MS_REMOUNT))).unwrap();
        let MountOp::Mount { flags, .. } = srv else {
            panic!()
        };
        assert!(flags.contains(MsFlags::MS_REC));
    }

    #[test]
    fn read_only_reaches_every_submount() {
        let cfg = MountConfig {
            read_only: true,
            binds: vec![
                BindSpec {
                    source: "/srv".into(),
                    dest: "/mnt/srv".into(),
                    read_only: true,
                    recursive: true,
                    source_in_container: false,
                },
                BindSpec {
                    source: "/opt".into(),
                    dest: "/mnt/opt".into(),
                    read_only: true,
                    recursive: false,
                    source_in_container: false,
                },
            ],
            ..Default::default()
        };
        let ops = plan(&cfg, Path::new("/img"));
        // The image's own submounts first, before anything of ours is mounted.
        assert_eq!(
            ops[0],
            MountOp::ReadOnlySubmounts {
                root: "/img".into()
            }
        );
        let at = |want: &MountOp| ops.iter().position(|op| op == want);
        let srv_tree = at(&MountOp::ReadOnlyTree {
            path: "/img/mnt/srv".into(),
        })
        .expect("recursive read-only for the rbind");
        let srv_remount = ops
            .iter()
            .position(|op| matches!(op, MountOp::Mount { target, flags, .. } if target == Path::new("/img/mnt/srv") && flags.contains(MsFlags::MS_REMOUNT)))
            .unwrap();
        assert_eq!(srv_tree, srv_remount + 1);
        // A non-recursive bind has no submounts to make read-only.
        assert_eq!(
            at(&MountOp::ReadOnlyTree {
                path: "/img/mnt/opt".into()
            }),
            None
        );
        let plain = plan(&MountConfig::default(), Path::new("/img"));
        assert!(!plain.iter().any(|op| matches!(
            op,
            MountOp::ReadOnlySubmounts { .. } | MountOp::ReadOnlyTree { .. }
        )));
    }

    #[test]
    fn dev_net_tun_is_bound_when_the_host_has_it() {
        let ops = plan(&MountConfig::default(), Path::new("/img"));
        let tun = ops
            .iter()
            .position(|op| {
                *op == MountOp::BindDeviceIfExists {
                    host: "/dev/net/tun".into(),
                    target: "/img/dev/net/tun".into(),
                }
            })
            .expect("tun in the plan");
        let dev = ops.iter().position(|op| matches!(op, MountOp::Mount { target, fstype: Some("tmpfs"), .. } if target == Path::new("/img/dev"))).unwrap();
        assert!(tun > dev);
    }

    #[test]
    fn submounts_are_read_from_mountinfo() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /img rw - ext4 /dev/sda1 rw
91 90 0:51 / /img/srv/data rw - tmpfs tmpfs rw
92 90 0:52 / /img/with\\040space rw - tmpfs tmpfs rw
93 22 0:53 / /imgother rw - tmpfs tmpfs rw
94 91 0:54 / /img/srv/data/deeper rw - tmpfs tmpfs rw
short line
";
        assert_eq!(
            submounts(info, Path::new("/img")),
            vec![
                PathBuf::from("/img/srv/data"),
                PathBuf::from("/img/with space"),
                PathBuf::from("/img/srv/data/deeper"),
            ]
        );
        assert!(submounts("", Path::new("/img")).is_empty());
    }

    #[test]
    fn with_a_user_namespace_the_container_mounts_only_what_needs_its_namespaces() {
        let cfg = MountConfig {
            private_network: true,
            userns: true,
            resolv_conf: Some("/run/x.conf".into()),
            binds: vec![BindSpec {
                source: "/srv".into(),
                dest: "/srv".into(),
                read_only: true,
                recursive: true,
                source_in_container: false,
            }],
            ..Default::default()
        };
        let (host, container) = split_for_userns(plan(&cfg, Path::new("/img")), Path::new("/img"));
        let t = targets(&container);
        assert_eq!(
            t,
            [
                "proc /img/proc",
                "bind /img/proc/sys",
                "bind /img/proc/sys/net",
                "remount:ro /img/proc/sys",
                "sysfs:ro /img/sys",
                "cgroup2 /img/sys/fs/cgroup",
                "devpts /img/dev/pts",
                "mqueue /img/dev/mqueue",
            ]
        );
        assert!(host.contains(&MountOp::ResolvConf {
            src: "/run/x.conf".into()
        }));
        let h = targets(&host);
        assert!(h.contains(&"tmpfs /img/dev".to_string()));
        assert!(h.contains(&"remount:ro /img/srv".to_string()));
        assert_eq!(h.last().unwrap(), "remount /img");
        // Without a network of its own, the host's /sys is bound by the host's side.
        let cfg = MountConfig {
            userns: true,
            ..Default::default()
        };
        let (host, container) = split_for_userns(plan(&cfg, Path::new("/img")), Path::new("/img"));
        assert!(targets(&host).contains(&"bind /img/sys".to_string()));
        assert!(targets(&host).contains(&"remount:ro /img/sys".to_string()));
        assert!(!targets(&container).iter().any(|t| t.starts_with("sysfs")));
    }

    #[test]
    fn in_root_never_escapes() {
        assert_eq!(
            in_root(Path::new("/img"), Path::new("/../../etc")),
            PathBuf::from("/img/etc")
        );
        assert_eq!(
            in_root(Path::new("/img"), Path::new("/")),
            PathBuf::from("/img")
        );
    }
}
