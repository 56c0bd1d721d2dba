//! The `shell` and `login` verbs: a command or a login prompt inside a
//! running machine, over a pty when we are on a terminal.

use netspawn_common::registry::Entry;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::enter::{enter_machine, EnterOptions, MachineCommand, MachineProcess};
use super::passwd::{self, User};
use super::pty::{self, Ended, ForwardOptions};
use super::{lookup_container, procfs, CtlError};

/// Options of `netspawnctl shell`.
#[derive(Debug, Clone, Default)]
pub struct ShellOptions {
    /// `[USER@]NAME`.
    pub spec: String,
    /// `--uid=`; a user in `spec` takes priority.
    pub uid: Option<String>,
    /// `-E/--setenv=VAR[=VALUE]`, in order.
    pub setenv: Vec<String>,
    /// The command and its arguments; empty for the user's login shell.
    pub command: Vec<String>,
    /// `-q`: no "Connected to…" messages.
    pub quiet: bool,
}

/// Splits machinectl's `[USER@]NAME` (the user, if given, wins over `--uid=`).
/// Like machinectl (and ssh), "@NAME" is refused.
pub fn parse_machine_spec(spec: &str, uid: Option<&str>) -> Result<(String, String), CtlError> {
    let (user, machine) = match spec.split_once('@') {
        Some(("", _)) => {
            return Err(CtlError::Usage(format!(
                "Invalid machine specification '{spec}': empty user name"
            )))
        }
        Some((u, m)) => (u.to_string(), m),
        None => (uid.unwrap_or("root").to_string(), spec),
    };
    if machine.is_empty() {
        return Err(CtlError::Usage(format!(
            "Invalid machine specification '{spec}': no machine name"
        )));
    }
    Ok((user, machine.to_string()))
}

/// Parses `-E` values: `VAR=VALUE`, or `VAR` to pass our own value of VAR
/// (skipped if we have none).
pub fn parse_setenv(
    items: &[String],
    ours: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, CtlError> {
    let mut out = Vec::new();
    for item in items {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (item.as_str(), None),
        };
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !v.as_deref().unwrap_or("").contains('\0');
        if !valid {
            return Err(CtlError::Usage(format!(
                "Invalid environment assignment '{item}'"
            )));
        }
        if let Some(v) = v.or_else(|| ours(k)) {
            out.push((k.to_string(), v));
        }
    }
    Ok(out)
}

/// Variables of the leader's environment that describe the leader's own
/// process (service manager plumbing, shell state) rather than the machine.
const PROCESS_SPECIFIC: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "MAINPID",
    "MANAGERPID",
    "SYSTEMD_EXEC_PID",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "MAIL",
];

/// The environment of a process started in a machine: the leader's
/// environment (so `$container`, `PATH`, `LANG` and the launch's `-E`
/// settings carry over) without what is specific to the leader's process;
/// HOME, USER, LOGNAME and SHELL of `user`; TERM from `term`; then `setenv`.
pub fn build_environment(
    leader_env: &[(String, String)],
    user: &User,
    shell: &str,
    term: Option<&str>,
    setenv: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = leader_env
        .iter()
        .filter(|(k, _)| !PROCESS_SPECIFIC.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut set = |k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    };
    if !leader_env.iter().any(|(k, _)| k == "PATH") {
        set("PATH", super::enter::DEFAULT_PATH);
    }
    set("HOME", &user.home);
    set("USER", &user.name);
    set("LOGNAME", &user.name);
    set("SHELL", shell);
    if let Some(t) = term {
        set("TERM", t);
    }
    for (k, v) in setenv {
        set(k, v);
    }
    env
}

/// True if `path` is an executable regular file inside the machine.
fn executable_in_machine(leader: u32, path: &str) -> bool {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use nix::sys::stat::Mode;
    let Ok(root) = nix::fcntl::open(
        format!("/proc/{leader}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let Ok(fd) = nix::fcntl::openat2(&root, path.trim_start_matches('/'), how) else {
        return false;
    };
    nix::sys::stat::fstat(&fd)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0)
}

fn on_terminal() -> bool {
    nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
        && nix::unistd::isatty(std::io::stdout()).unwrap_or(false)
}

fn leader_environment(entry: &Entry) -> Result<Vec<(String, String)>, CtlError> {
    procfs::environ(entry.leader).map_err(|e| {
        CtlError::Enter(super::enter::EnterError::LeaderGone {
            machine: entry.name.clone(),
            leader: entry.leader,
            err: format!("read its environment: {e}"),
        })
    })
}

/// `netspawnctl shell`: runs a command (default: the user's login shell) in
/// the machine and returns its exit status (128+N for signal N).
pub fn shell(opts: &ShellOptions) -> Result<i32, CtlError> {
    super::sealed::ensure().map_err(super::enter::EnterError::from)?;
    let (user_spec, machine) = parse_machine_spec(&opts.spec, opts.uid.as_deref())?;
    let entry = lookup_container(&machine, "shell")?;
    let user = passwd::machine_user(entry.leader, &user_spec).ok_or_else(|| CtlError::NoUser {
        user: user_spec.clone(),
        machine: machine.clone(),
    })?;
    let shell = if !user.shell.is_empty() && executable_in_machine(entry.leader, &user.shell) {
        user.shell.clone()
    } else {
        "/bin/sh".to_string()
    };
    let setenv = parse_setenv(&opts.setenv, |k| std::env::var(k).ok())?;
    let term = std::env::var("TERM").ok();
    let env = build_environment(
        &leader_environment(&entry)?,
        &user,
        &shell,
        term.as_deref(),
        &setenv,
    );
    let command = match opts.command.split_first() {
        None => {
            // A login shell: argv[0] starts with '-'.
            let base = shell.rsplit('/').next().unwrap_or("sh");
            MachineCommand::new(&shell, &[format!("-{base}")], &env)?
        }
        Some((program, _)) => MachineCommand::new(program, &opts.command, &env)?,
    };
    let use_pty = on_terminal();
    let sigfd = pty::signal_fd()?;
    let enter = EnterOptions {
        cwd: user.home.clone(),
        user,
        pty: use_pty,
    };
    let proc = enter_machine(&entry, &enter, |_| Err(command.exec()))?;
    if use_pty {
        run_forwarded(
            proc,
            &sigfd,
            &machine,
            opts.quiet,
            ForwardOptions::default(),
        )
    } else {
        pty::wait_passthrough(&proc, &sigfd)?;
        Ok(proc.wait()?.code())
    }
}

/// How long the process may linger after SIGHUP when the user escaped.
const ESCAPE_GRACE_MS: u16 = 2000;

/// Forwards the terminal until the process exits or the user escapes; on
/// escape the process gets SIGHUP (then SIGKILL if it lingers) and we return 0,
/// as machinectl does.
fn run_forwarded(
    mut proc: MachineProcess,
    sigfd: &nix::sys::signalfd::SignalFd,
    machine: &str,
    quiet: bool,
    fopts: ForwardOptions,
) -> Result<i32, CtlError> {
    if !quiet {
        eprintln!(
            "Connected to machine {machine}. Press ^] three times within 1s to exit session."
        );
    }
    let ended = pty::forward(&proc, sigfd, fopts)?;
    let code = match ended {
        Ended::Exited => proc.wait()?.code(),
        Ended::Escaped => {
            println!();
            let _ = proc.signal(libc::SIGHUP);
            proc.close_pty();
            let mut fds = [PollFd::new(proc.exit_fd(), PollFlags::POLLIN)];
            let gone = poll(&mut fds, PollTimeout::from(ESCAPE_GRACE_MS)).is_ok_and(|n| n > 0);
            if !gone {
                let _ = proc.signal(libc::SIGKILL);
            }
            let _ = proc.wait();
            0
        }
    };
    if !quiet {
        eprintln!("Connection to machine {machine} terminated.");
    }
    Ok(code)
}

/// `netspawnctl login NAME`: a login prompt from the machine on a new pty in
/// the machine's devpts: `/sbin/agetty` if the machine has it, else
/// `/bin/login`. Needs a terminal on our side.
pub fn login(name: &str, quiet: bool) -> Result<i32, CtlError> {
    super::sealed::ensure().map_err(super::enter::EnterError::from)?;
    if !on_terminal() {
        return Err(CtlError::Usage(
            "login needs a terminal on stdin and stdout; use 'shell' to run commands".into(),
        ));
    }
    let entry = lookup_container(name, "login")?;
    let root = User::root();
    let term = std::env::var("TERM").ok();
    let env = build_environment(
        &leader_environment(&entry)?,
        &root,
        "/bin/sh",
        term.as_deref(),
        &[],
    );
    let agetty = executable_in_machine(entry.leader, "/sbin/agetty");
    let login = if executable_in_machine(entry.leader, "/bin/login") {
        "/bin/login"
    } else {
        "/usr/bin/login"
    };
    let sigfd = pty::signal_fd()?;
    let enter = EnterOptions {
        cwd: "/".into(),
        user: root,
        pty: true,
    };
    let proc = enter_machine(&entry, &enter, |inside| {
        let command = if agetty {
            let tty = inside.pty_name.clone().unwrap_or_else(|| "console".into());
            let argv: Vec<String> = [
                "agetty",
                "-8",
                "--noclear",
                "--keep-baud",
                &tty,
                "115200,38400,9600",
                "vt220",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            MachineCommand::new("/sbin/agetty", &argv, &env)
        } else {
            MachineCommand::new(login, &["login".to_string()], &env)
        };
        match command {
            Ok(c) => Err(c.exec()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    run_forwarded(
        proc,
        &sigfd,
        name,
        quiet,
        ForwardOptions {
            ignore_vhangup: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_specs() {
        assert_eq!(
            parse_machine_spec("web", None).unwrap(),
            ("root".into(), "web".into())
        );
        assert_eq!(
            parse_machine_spec("web", Some("bob")).unwrap(),
            ("bob".into(), "web".into())
        );
        assert_eq!(
            parse_machine_spec("alice@web", Some("bob")).unwrap(),
            ("alice".into(), "web".into())
        );
        assert!(parse_machine_spec("@web", None).is_err());
        assert!(parse_machine_spec("alice@", None).is_err());
        assert!(parse_machine_spec("", None).is_err());
    }

    #[test]
    fn setenv_values() {
        let ours = |k: &str| (k == "EDITOR").then(|| "vi".to_string());
        let got = parse_setenv(
            &[
                "A=1".into(),
                "EDITOR".into(),
                "UNSET".into(),
                "B=x=y".into(),
            ],
            ours,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into()),
                ("EDITOR".into(), "vi".into()),
                ("B".into(), "x=y".into())
            ]
        );
        for bad in ["=1", "1A=2", "A-B=1", ""] {
            assert!(parse_setenv(&[bad.into()], ours).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn environment_is_leaders_minus_process_state() {
        let leader = vec![
            ("container".to_string(), "netspawn".to_string()),
            ("PATH".into(), "/bin".into()),
            ("NOTIFY_SOCKET".into(), "/run/host/notify".into()),
            ("HOME".into(), "/".into()),
            ("TERM".into(), "vt220".into()),
            ("FOO".into(), "launch".into()),
        ];
        let alice = User {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/alice".into(),
            shell: "/bin/sh".into(),
        };
        let env = build_environment(
            &leader,
            &alice,
            "/bin/sh",
            Some("xterm"),
            &[("FOO".into(), "mine".into())],
        );
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("container"), Some("netspawn"));
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("NOTIFY_SOCKET"), None);
        assert_eq!(get("HOME"), Some("/home/alice"));
        assert_eq!(get("USER"), Some("alice"));
        assert_eq!(get("LOGNAME"), Some("alice"));
        assert_eq!(get("SHELL"), Some("/bin/sh"));
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("FOO"), Some("mine"));
        assert_eq!(env.iter().filter(|(k, _)| k == "FOO").count(), 1);

        let env = build_environment(&[], &User::root(), "/bin/sh", None, &[]);
        assert!(env
            .iter()
            .any(|(k, v)| k == "PATH" && v == super::super::enter::DEFAULT_PATH));
        assert!(!env.iter().any(|(k, _)| k == "TERM"));
    }
}
