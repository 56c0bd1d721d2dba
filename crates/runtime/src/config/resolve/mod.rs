//! Turning merged [`Settings`] into the launch [`Config`], group by group:
//! [`exec`] (what runs, as whom, with which environment), [`files`],
//! [`network`], [`security`] (capabilities, system calls, privileges) and
//! [`resources`] (limits, OOM score, CPU affinity). Everything is checked
//! before anything is created, so bad input changes nothing. Settings
//! netspawn does not implement are refused here with one line naming them.

mod exec;
mod files;
mod network;
mod resources;
mod security;
mod users;

use std::path::{Path, PathBuf};

use netspawn_common::names::{check_machine_name, machine_name_from_path};
use netspawn_common::paths::Paths;
use thiserror::Error;

use super::cli::Options;
use super::model::{CpuSet, Rlimit, Settings, Volatile};
use crate::caps::{self, CapSet};
use crate::console::ConsoleMode;
use crate::seccomp::{self, SyscallFilter};
use crate::spec::{self, BindSpec, TmpfsSpec};

pub use exec::{find_command, init_is_busybox, random_uuid, DEFAULT_PATH, INIT_PATHS};
pub use network::Network;
pub use spec::parse_signal;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("Invalid machine name '{0}': {1}")]
    MachineName(String, netspawn_common::names::NameError),
    #[error("Invalid hostname '{0}': {1}")]
    Hostname(String, netspawn_common::names::NameError),
    #[error("Cannot derive a machine name from {0}; use --machine=NAME")]
    NoName(PathBuf),
    #[error("Directory {0} does not exist")]
    NoDirectory(PathBuf),
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("Directory {0} has no /bin/sh (nor /bin/bash); pass a command to run")]
    NoShell(PathBuf),
    #[error("Directory {0} does not look like a bootable OS tree: no init found (tried {1})")]
    NoInit(PathBuf, String),
    #[error("Command '{cmd}' not found in directory {root}")]
    NoCommand { cmd: String, root: PathBuf },
    #[error("Invalid {flag} value '{value}': {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Spec(#[from] spec::SpecError),
    #[error("{0}")]
    Caps(#[from] caps::CapsError),
    #[error("{0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Template(String),
    /// A resource-control property or slice that cannot be used.
    #[error("{0}")]
    Property(String),
}

/// Everything the launcher needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub machine: String,
    pub hostname: String,
    /// 32 lowercase hex digits.
    pub uuid: String,
    pub boot: bool,
    pub as_pid2: bool,
    /// The payload's argv (for `-b`: init and its parameters).
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub chdir: Option<PathBuf>,
    pub read_only: bool,
    /// `-x`: the machine writes to an ephemeral layer over the image (not
    /// with `--read-only` or `--volatile=`, which never write it).
    pub ephemeral: bool,
    /// `--volatile=`.
    pub volatile: Volatile,
    /// `--overlay=`/`--overlay-ro=`, in order.
    pub overlays: Vec<spec::OverlaySpec>,
    pub binds: Vec<BindSpec>,
    pub tmpfs: Vec<TmpfsSpec>,
    /// Paths over-mounted with inaccessible nodes (in the container).
    pub inaccessible: Vec<PathBuf>,
    pub quiet: bool,
    pub register: bool,
    pub network: Network,
    pub caps: CapSet,
    pub syscall_filter: SyscallFilter,
    /// Signal sent to PID 1 when we are asked to stop (None: SIGKILL).
    pub kill_signal: Option<i32>,
    pub console: ConsoleMode,
    /// Configure host0 with our own DHCP client before a plain command runs
    /// (not for `-b`, whose guest runs its own; off with `--network-config=none`).
    pub dhcp_host0: bool,
    /// Wait for the payload's READY=1 before the machine counts as ready.
    pub notify_ready: bool,
    /// The user to run the payload as (looked up in the container).
    pub user: Option<String>,
    pub no_new_privileges: bool,
    /// Resource limits as (kernel resource number, limit).
    pub rlimits: Vec<(u32, Rlimit)>,
    pub oom_score_adjust: Option<i32>,
    pub cpu_affinity: Option<CpuSet>,
    /// Resource-control properties of the machine's cgroup.
    pub limits: crate::config::property::Limits,
    /// Where the machine's cgroup goes below each hierarchy's root
    /// (`--slice=`'s path, else the cgroup parent).
    pub cgroup_parent: String,
    /// `-U`/`--private-users=`: the container's user namespace, if any.
    pub userns: Option<crate::userns::Spec>,
}

/// Resolves the merged settings and the command line's options.
pub fn resolve(s: Settings, o: &Options, paths: &Paths) -> Result<Config, ConfigError> {
    let ephemeral = s.ephemeral == Some(true);
    refuse_unsupported(&s, o)?;
    let with_template;
    let o = match &o.template {
        // `-x --template=DIR` without -D runs DIR ephemerally (systemd's rule).
        Some(t) if ephemeral => {
            with_template = Options {
                directory: Some(t.clone()),
                template: None,
                ..o.clone()
            };
            &with_template
        }
        Some(t) => {
            populate_from_template(t, o, paths)?;
            o
        }
        None => o,
    };
    let (root, machine) = root_and_machine(o, paths, ephemeral)?;
    let hostname = s.hostname.clone().unwrap_or_else(|| machine.clone());
    check_machine_name(&hostname).map_err(|e| ConfigError::Hostname(hostname.clone(), e))?;
    let volatile = s.volatile.unwrap_or(Volatile::No);
    check_layers(&s, &root, volatile)?;

    let files = files::resolve(&s, &root)?;
    let net = network::resolve(&s)?;
    let security = security::resolve(&s, &net)?;
    let resources = resources::resolve(&s);
    let cgroup = resources::resolve_cgroup(o, &machine, paths)?;
    // The image is never chowned where the machine does not write it.
    let userns = users::resolve(&s, ephemeral || volatile != Volatile::No)?;
    let exec = exec::resolve(&s, o, &root, &files)?;
    let uuid = match &s.machine_id {
        Some(id) => id.clone(),
        None => exec::image_machine_id(&root).unwrap_or_else(random_uuid),
    };
    let dhcp_host0 = !exec.boot
        && o.network_config != Some(false)
        && (net.veth || net.zone.is_some() || net.bridge.is_some());
    Ok(Config {
        root,
        machine,
        hostname,
        uuid,
        boot: exec.boot,
        as_pid2: exec.as_pid2,
        command: exec.command,
        env: exec.env,
        chdir: s.working_directory.clone(),
        read_only: files.read_only,
        // A layer only where something would write the image.
        ephemeral: ephemeral && !files.read_only && volatile == Volatile::No,
        volatile,
        overlays: s.overlays.clone(),
        binds: files.binds,
        tmpfs: files.tmpfs,
        inaccessible: files.inaccessible,
        quiet: o.quiet,
        register: o.register.unwrap_or(true),
        network: net,
        caps: security.caps,
        syscall_filter: security.syscall_filter,
        kill_signal: exec.kill_signal,
        console: exec.console,
        dhcp_host0,
        notify_ready: s.notify_ready.unwrap_or(false),
        user: exec.user,
        no_new_privileges: security.no_new_privileges,
        rlimits: resources.rlimits,
        oom_score_adjust: resources.oom_score_adjust,
        cpu_affinity: resources.cpu_affinity,
        limits: cgroup.limits,
        cgroup_parent: cgroup.parent,
        userns,
    })
}

/// Machine name and root directory, as systemd-nspawn derives them.
/// With `-x` and no `--machine=`, the name derived from the directory gets
/// 16 random hex digits (`-0123456789abcdef`), as systemd-nspawn's, so that
/// many ephemeral machines of one image run at once.
fn root_and_machine(
    o: &Options,
    paths: &Paths,
    ephemeral: bool,
) -> Result<(PathBuf, String), ConfigError> {
    let root = match (&o.directory, &o.machine) {
        (Some(d), _) => d.clone(),
        (None, Some(m)) => {
            check_machine_name(m).map_err(|e| ConfigError::MachineName(m.clone(), e))?;
            paths.image_dir.join(m)
        }
        (None, None) => {
            std::env::current_dir().map_err(|_| ConfigError::NoDirectory(".".into()))?
        }
    };
    let md = std::fs::metadata(&root).map_err(|_| ConfigError::NoDirectory(root.clone()))?;
    if !md.is_dir() {
        return Err(ConfigError::NotDirectory(root));
    }
    let root = root
        .canonicalize()
        .map_err(|_| ConfigError::NoDirectory(root.clone()))?;
    let machine = match &o.machine {
        Some(m) => m.clone(),
        None => {
            let name =
                machine_name_from_path(&root).ok_or_else(|| ConfigError::NoName(root.clone()))?;
            match ephemeral {
                true => format!("{name}-{:016x}", crate::ephemeral::random_u64()),
                false => name,
            }
        }
    };
    check_machine_name(&machine).map_err(|e| ConfigError::MachineName(machine.clone(), e))?;
    Ok((root, machine))
}

/// Settings a later issue implements: refused, never silently ignored;
/// and the combinations systemd-nspawn refuses.
fn refuse_unsupported(s: &Settings, o: &Options) -> Result<(), ConfigError> {
    let conflict = |what: &str| Err(ConfigError::Conflict(what.into()));
    if s.ephemeral == Some(true) && o.template.is_some() && o.directory.is_some() {
        return conflict("--ephemeral and --template= may not be combined");
    }
    if o.template.is_some()
        && o.directory.is_none()
        && o.machine.is_none()
        && s.ephemeral != Some(true)
    {
        return conflict("--template= needs --directory= or --machine=");
    }
    let chown = s.private_users_ownership == Some(super::model::Ownership::Chown);
    if chown && s.ephemeral == Some(true) {
        // The layer would get a copy of the whole image.
        return conflict("--ephemeral and --private-users-ownership=chown may not be combined");
    }
    if chown && !matches!(s.volatile, None | Some(Volatile::No)) {
        return conflict("--volatile= and --private-users-ownership=chown may not be combined");
    }
    Ok(())
}

/// `--template=`: makes the machine's directory from the template when it
/// is missing or empty, before the rest is checked against it (a machine
/// name is checked first), and says so as systemd-nspawn does.
fn populate_from_template(t: &Path, o: &Options, paths: &Paths) -> Result<(), ConfigError> {
    let dir = match (&o.directory, &o.machine) {
        (Some(d), _) => d.clone(),
        (None, Some(m)) => {
            check_machine_name(m).map_err(|e| ConfigError::MachineName(m.clone(), e))?;
            paths.image_dir.join(m)
        }
        (None, None) => return Ok(()),
    };
    match crate::template::populate(t, &dir) {
        Ok(crate::template::Populated::Made) if !o.quiet => {
            eprintln!("Populated {} from template {}.", dir.display(), t.display())
        }
        Ok(crate::template::Populated::Exists) if !o.quiet => eprintln!(
            "Directory {} already exists, not populating from template {}.",
            dir.display(),
            t.display()
        ),
        Ok(_) => {}
        Err(e) => return Err(ConfigError::Template(e.to_string())),
    }
    Ok(())
}

/// What the root's layers need of the image: `--volatile=yes` keeps only
/// /usr, so /bin, /sbin and /lib must be in it (merged /usr), as
/// systemd-nspawn requires.
fn check_layers(_s: &Settings, root: &Path, volatile: Volatile) -> Result<(), ConfigError> {
    if volatile != Volatile::Yes {
        return Ok(());
    }
    let st = |p: &str| {
        crate::sys::open_in_root(root, Path::new(p), libc::O_PATH | libc::O_NOFOLLOW)
            .and_then(|fd| nix::sys::stat::fstat(&fd))
            .ok()
            .map(|st| st.st_mode & libc::S_IFMT)
    };
    match st("/usr") {
        Some(libc::S_IFDIR) => {}
        _ => {
            return Err(ConfigError::Unsupported(format!(
                "--volatile=yes needs a /usr directory in {}",
                root.display()
            )))
        }
    }
    match st("/bin") {
        None | Some(libc::S_IFLNK) => Ok(()),
        Some(libc::S_IFDIR) => Err(ConfigError::Unsupported(
            "--volatile=yes is not supported with images that have not merged /bin, /sbin, /lib into /usr".into(),
        )),
        Some(_) => Err(ConfigError::Unsupported(
            "--volatile=yes needs /bin to be a symlink (merged /usr) or absent".into(),
        )),
    }
}

impl Config {
    /// The machine never writes its image (a shared image lock suffices).
    pub fn image_read_only(&self) -> bool {
        self.read_only || self.ephemeral || self.volatile != Volatile::No
    }

    /// The payload's environment: our defaults, then `-E` assignments. A
    /// `--user=` changes HOME, USER, LOGNAME and SHELL in the container
    /// ([`crate::exec`]), below the `-E` ones.
    pub fn environment(&self, term: Option<&str>) -> Vec<String> {
        let mut out: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("container".into(), "netspawn".into()),
            ("container_uuid".into(), self.uuid.clone()),
            ("HOME".into(), "/root".into()),
            ("USER".into(), "root".into()),
            ("LOGNAME".into(), "root".into()),
            ("NOTIFY_SOCKET".into(), "/run/host/notify".into()),
        ];
        if let Some(t) = term {
            out.push(("TERM".into(), t.into()));
        }
        for (k, v) in &self.env {
            out.retain(|(ok, _)| ok != k);
            out.push((k.clone(), v.clone()));
        }
        out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// True if `p` is `dir` or below it.
fn below(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{PrivateUsers, StartMode, Volatile};

    /// A minimal image: /bin/sh and /sbin/init, executable; removed on drop.
    struct Image(PathBuf);

    impl Image {
        fn new(tag: &str) -> Image {
            use std::os::unix::fs::PermissionsExt;
            let root =
                std::env::temp_dir().join(format!("netspawn-resolve-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for exe in ["bin/sh", "sbin/init", "bin/tool"] {
                let p = root.join(exe);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, "").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::fs::create_dir_all(root.join("etc")).unwrap();
            Image(root)
        }
    }

    impl Drop for Image {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn paths() -> Paths {
        Paths {
            run_dir: "/nonexistent/run".into(),
            image_dir: "/nonexistent/images".into(),
            state_dir: "/nonexistent/state".into(),
            settings_path: vec![],
            cgroup_parent: "netspawn".into(),
        }
    }

    fn go(img: &Image, s: Settings) -> Result<Config, ConfigError> {
        let o = Options {
            directory: Some(img.0.clone()),
            machine: Some("web".into()),
            console: Some(ConsoleMode::Pipe),
            ..Options::default()
        };
        resolve(s, &o, &paths())
    }

    #[test]
    fn groups_resolve() {
        let img = Image::new("groups");
        type Check = fn(&Config) -> bool;
        let bind = |dest: &str| BindSpec {
            source: "/".into(),
            dest: dest.into(),
            read_only: true,
            recursive: true,
            source_in_container: false,
        };
        let cases: Vec<(Settings, Check)> = vec![
            (Settings::default(), |c| {
                c.command == ["/bin/sh"] && !c.boot && !c.network.private && c.uuid.len() == 32
            }),
            (
                Settings {
                    start_mode: Some(StartMode::Boot),
                    parameters: vec!["--log-level=debug".into()],
                    ..Settings::default()
                },
                |c| c.boot && c.command == ["/sbin/init", "--log-level=debug"],
            ),
            // --private-network with links is accepted: the links imply it.
            (
                Settings {
                    private_network: Some(true),
                    virtual_ethernet: Some(true),
                    zone: None,
                    ..Settings::default()
                },
                |c| c.network.private && c.network.veth,
            ),
            (
                Settings {
                    private_network: Some(true),
                    zone: Some("lab".into()),
                    ..Settings::default()
                },
                |c| c.network.private && c.network.zone.is_some() && !c.network.veth,
            ),
            // A command in a mount is left to the container to find.
            (
                Settings {
                    parameters: vec!["/t/tool".into()],
                    binds: vec![bind("/t")],
                    ..Settings::default()
                },
                |c| c.command == ["/t/tool"],
            ),
            (
                Settings {
                    parameters: vec!["tool".into()],
                    ..Settings::default()
                },
                |c| c.command == ["tool"],
            ),
            (
                Settings {
                    machine_id: Some("0123456789abcdef0123456789abcdef".into()),
                    user: Some("root".into()),
                    no_new_privileges: Some(true),
                    notify_ready: Some(true),
                    ..Settings::default()
                },
                |c| {
                    c.uuid == "0123456789abcdef0123456789abcdef"
                        && c.user.is_none()
                        && c.no_new_privileges
                        && c.notify_ready
                },
            ),
            (
                Settings {
                    user: Some("nobody".into()),
                    oom_score_adjust: Some(5),
                    rlimits: {
                        let mut r = [None; 16];
                        r[6] = Some(Rlimit { soft: 1, hard: 2 });
                        r
                    },
                    ..Settings::default()
                },
                |c| {
                    c.user.as_deref() == Some("nobody")
                        && c.oom_score_adjust == Some(5)
                        && c.rlimits == [(libc::RLIMIT_NOFILE, Rlimit { soft: 1, hard: 2 })]
                },
            ),
        ];
        for (i, (s, check)) in cases.into_iter().enumerate() {
            let c = go(&img, s).unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert!(check(&c), "case {i}: {c:#?}");
        }
    }

    #[test]
    fn refusals_name_the_setting() {
        let img = Image::new("refuse");
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    private_users: Some(PrivateUsers::Base {
                        shift: 65537,
                        range: 65536,
                    }),
                    private_users_ownership: Some(crate::config::model::Ownership::Chown),
                    ..Settings::default()
                },
                "multiple of 65536",
            ),
            (
                Settings {
                    volatile: Some(Volatile::Yes),
                    ..Settings::default()
                },
                "--volatile=yes needs a /usr directory",
            ),
            (
                Settings {
                    ephemeral: Some(true),
                    private_users: Some(PrivateUsers::Pick),
                    private_users_ownership: Some(crate::config::model::Ownership::Chown),
                    ..Settings::default()
                },
                "--ephemeral and --private-users-ownership=chown",
            ),
            (
                Settings {
                    volatile: Some(Volatile::State),
                    private_users: Some(PrivateUsers::Pick),
                    private_users_ownership: Some(crate::config::model::Ownership::Chown),
                    ..Settings::default()
                },
                "--volatile= and --private-users-ownership=chown",
            ),
            (
                Settings {
                    start_mode: Some(StartMode::Boot),
                    user: Some("nobody".into()),
                    ..Settings::default()
                },
                "--boot and --user=",
            ),
            (
                Settings {
                    bridge: Some("br0".into()),
                    zone: Some("z".into()),
                    ..Settings::default()
                },
                "may not be combined",
            ),
            (
                Settings {
                    parameters: vec!["/usr/bin/nope".into()],
                    ..Settings::default()
                },
                "Command '/usr/bin/nope' not found",
            ),
        ];
        for (s, needle) in cases {
            let e = go(&img, s).expect_err(needle).to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let o = Options {
            directory: Some(img.0.clone()),
            property: vec![crate::config::Property::parse("CPUQuota=10%").unwrap()],
            slice: Some("a-b.slice".into()),
            ..Options::default()
        };
        // (Refused where the host has no cpu controller.)
        match resolve(Settings::default(), &o, &paths()) {
            Ok(c) => {
                assert_eq!(c.limits.0.len(), 1);
                assert_eq!(c.cgroup_parent, "a.slice/a-b.slice");
            }
            Err(e) => assert!(
                e.to_string().starts_with("CPUQuota= cannot be enforced"),
                "{e}"
            ),
        }
    }

    #[test]
    fn the_images_machine_id_is_the_uuid() {
        let img = Image::new("mid");
        std::fs::write(
            img.0.join("etc/machine-id"),
            "0123456789ABCDEF0123456789abcdef\n",
        )
        .unwrap();
        let c = go(&img, Settings::default()).unwrap();
        assert_eq!(c.uuid, "0123456789abcdef0123456789abcdef");
        for bad in ["", "uninitialized\n", "00000000000000000000000000000000\n"] {
            std::fs::write(img.0.join("etc/machine-id"), bad).unwrap();
            let c = go(&img, Settings::default()).unwrap();
            assert_ne!(c.uuid, "0123456789abcdef0123456789abcdef");
            assert_ne!(c.uuid, "00000000000000000000000000000000");
        }
    }
}
