//! The container's file system: the root bind, the API file systems
//! (/proc, /sys, /dev, /tmp, /run), the user's binds and tmpfs mounts.
//!
//! [`plan`] is pure: it turns the launch settings into a list of
//! [`MountOp`]s (unit-tested without root); [`apply`] runs them in the
//! container's mount namespace before `pivot_root`.

use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use thiserror::Error;

use crate::spec::{BindSpec, TmpfsSpec};

#[derive(Debug, Error)]
pub enum MountError {
    #[error("{op}: {err}")]
    Op { op: String, err: nix::Error },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("bind source {0} does not exist")]
    MissingSource(PathBuf),
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
}

/// One step of setting up the container's file system. Paths are absolute
/// host paths (already joined with the root).
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
    },
    Mount {
        source: Option<String>,
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
        root: PathBuf,
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

/// Joins an absolute container path onto the root, refusing `..`.
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
            target,
            fstype,
            flags,
            data: data.map(str::to_string),
        }
    };
    let bind = |src: &str, target: PathBuf, extra: MsFlags| {
        mnt(Some(src), target, None, MsFlags::MS_BIND | extra, None)
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
    ops.push(bind(
        &proc_sys.to_string_lossy(),
        proc_sys.clone(),
        MsFlags::empty(),
    ));
    if cfg.private_network {
        let net = r("proc/sys/net");
        ops.push(bind(&net.to_string_lossy(), net.clone(), MsFlags::empty()));
    }
    ops.push(remount(proc_sys, MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC));
    ops.push(MountOp::ReadOnlyIfExists {
        path: r("proc/sysrq-trigger"),
    });

    // /sys read-only, with the container's own cgroup2 tree (cgroup namespace) on top.
    ops.push(mnt(
        Some("sysfs"),
        r("sys"),
        Some("sysfs"),
        MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        None,
    ));
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
        });
        let rec = if b.recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        ops.push(bind(&src.to_string_lossy(), dst.clone(), rec));
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

    if let Some(src) = &cfg.resolv_conf {
        ops.push(MountOp::ResolvConf {
            src: src.clone(),
            root: root.to_path_buf(),
        });
    }

    // Last, the root itself: nodev always (see /dev above), read-only on request.
    let mut root_flags = MsFlags::MS_NODEV;
    if cfg.read_only {
        root_flags |= MsFlags::MS_RDONLY;
    }
    ops.push(remount(root.to_path_buf(), root_flags));
    ops
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
    }
}

/// Runs the steps in order, stopping at the first failure.
pub fn apply(ops: &[MountOp]) -> Result<(), MountError> {
    for op in ops {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| MountError::Io { path, err }
        };
        match op {
            MountOp::MakeDir { path, mode } => {
                if !path.is_dir() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(*mode)
                        .create(path)
                        .map_err(io(path))?;
                    if *mode & 0o7000 != 0 {
                        fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                            .map_err(io(path))?;
                    }
                }
            }
            MountOp::MakeBindTarget { path, like } => {
                let md = fs::metadata(like).map_err(|_| MountError::MissingSource(like.clone()))?;
                if md.is_dir() {
                    if !path.is_dir() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(path)
                            .map_err(io(path))?;
                    }
                } else if fs::symlink_metadata(path).is_err() {
                    if let Some(parent) = path.parent() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(parent)
                            .map_err(io(parent))?;
                    }
                    fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(path)
                        .map_err(io(path))?;
                }
            }
            MountOp::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => {
                mount(source.as_deref(), target, *fstype, *flags, data.as_deref()).map_err(
                    |err| MountError::Op {
                        op: op_name(op),
                        err,
                    },
                )?;
            }
            MountOp::Symlink { target, link } => {
                let _ = fs::remove_file(link);
                std::os::unix::fs::symlink(target, link).map_err(io(link))?;
            }
            MountOp::WriteFile { path, contents } => fs::write(path, contents).map_err(io(path))?,
            MountOp::ResolvConf { src, root } => {
                if src.exists() {
                    let target = resolv_conf_target(root);
                    if let Some(parent) = target.parent() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(parent)
                            .map_err(io(parent))?;
                    }
                    if fs::symlink_metadata(&target).is_err() {
                        fs::write(&target, "").map_err(io(&target))?;
                    }
                    mount::<Path, Path, str, str>(Some(src), &target, None, MsFlags::MS_BIND, None)
                        .map_err(|err| MountError::Op {
                            op: op_name(op),
                            err,
                        })?;
                }
            }
            MountOp::ReadOnlyTree { path } => {
                match crate::sys::mount_setattr_rdonly(path, true) {
                    // The mount itself is read-only already (the remount before).
                    Ok(()) | Err(nix::Error::ENOSYS) => {}
                    Err(err) => {
                        return Err(MountError::Op {
                            op: op_name(op),
                            err,
                        })
                    }
                }
            }
            MountOp::ReadOnlySubmounts { root } => {
                let info = fs::read_to_string("/proc/self/mountinfo")
                    .map_err(io(Path::new("/proc/self/mountinfo")))?;
                for mp in submounts(&info, root) {
                    let r = crate::sys::mount_setattr_rdonly(&mp, true).or_else(|e| {
                        if e != nix::Error::ENOSYS {
                            return Err(e);
                        }
                        mount::<str, Path, str, str>(
                            None,
                            &mp,
                            None,
                            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                            None,
                        )
                    });
                    r.map_err(|err| MountError::Op {
                        op: format!("make {} read-only", mp.display()),
                        err,
                    })?;
                }
            }
            MountOp::BindDeviceIfExists { host, target } => {
                if fs::symlink_metadata(host).is_ok() {
                    if let Some(parent) = target.parent() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(parent)
                            .map_err(io(parent))?;
                    }
                    if fs::symlink_metadata(target).is_err() {
                        fs::write(target, "").map_err(io(target))?;
                    }
                    mount::<Path, Path, str, str>(Some(host), target, None, MsFlags::MS_BIND, None)
                        .map_err(|err| MountError::Op {
                            op: op_name(op),
                            err,
                        })?;
                }
            }
            MountOp::ReadOnlyIfExists { path } => {
                if fs::symlink_metadata(path).is_ok() {
                    let err = |err| MountError::Op {
                        op: op_name(op),
                        err,
                    };
                    mount::<Path, Path, str, str>(Some(path), path, None, MsFlags::MS_BIND, None)
                        .map_err(err)?;
                    mount::<str, Path, str, str>(
                        None,
                        path,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None,
                    )
                    .map_err(err)?;
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

/// Where the image's /etc/resolv.conf really is: a symlink (Debian with
/// systemd-resolved points it into /run) is followed inside the root.
fn resolv_conf_target(root: &Path) -> PathBuf {
    // The path inside the container, normalised as we follow links.
    let mut inside = PathBuf::from("/etc/resolv.conf");
    for _ in 0..8 {
        let Ok(t) = fs::read_link(in_root(root, &inside)) else {
            break;
        };
        let joined = if t.is_absolute() {
            t
        } else {
            inside.parent().unwrap_or(Path::new("/")).join(t)
        };
        let mut norm = PathBuf::from("/");
        for c in joined.components() {
            match c {
                Component::Normal(n) => norm.push(n),
                Component::ParentDir => {
                    norm.pop();
                }
                _ => {}
            }
        }
        inside = norm;
    }
    in_root(root, &inside)
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
        // A "+" source is taken inside the image.
        assert!(ops.iter().any(|op| matches!(op, MountOp::Mount { source: Some(s), target, .. } if s == "/img/etc" && target == Path::new("/img/host-etc"))));
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
