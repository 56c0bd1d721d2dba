//! The exec group: start mode, the command (checked against the image
//! unless a mount may provide it), environment, user, kill signal and
//! console mode.

use std::path::Path;

use super::files::Files;
use super::ConfigError;
use crate::config::cli::Options;
use crate::config::model::{Settings, StartMode};
use crate::console::ConsoleMode;
use crate::sys::is_executable_in_root;

/// Default PATH inside the container (systemd-nspawn's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where systemd-nspawn looks for init, in order.
pub const INIT_PATHS: &[&str] = &[
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd",
    "/sbin/init",
];

pub(super) struct Exec {
    pub boot: bool,
    pub as_pid2: bool,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub kill_signal: Option<i32>,
    pub console: ConsoleMode,
}

pub(super) fn resolve(
    s: &Settings,
    o: &Options,
    root: &Path,
    files: &Files,
) -> Result<Exec, ConfigError> {
    let mode = s.start_mode.unwrap_or(StartMode::Pid1);
    let boot = mode == StartMode::Boot;
    let as_pid2 = mode == StartMode::Pid2;
    let env = s.environment.clone();
    // A user other than root cannot run an init; systemd-nspawn refuses it too.
    let user = s.user.clone().filter(|u| u != "root" && u != "0");
    if boot && user.is_some() {
        return Err(ConfigError::Conflict(
            "--boot and --user= may not be combined".into(),
        ));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let command = if boot {
        let init = INIT_PATHS
            .iter()
            .find(|p| is_executable_in_root(root, Path::new(p)))
            .ok_or_else(|| ConfigError::NoInit(root.to_path_buf(), INIT_PATHS.join(", ")))?;
        std::iter::once(init.to_string())
            .chain(s.parameters.iter().cloned())
            .collect::<Vec<_>>()
    } else if let Some(cmd) = s.parameters.first() {
        // The child looks the command up again after the mounts; a command
        // a mount may provide (--bind-ro=/opt/tools:/t … /t/tool) is left to it.
        if !files.may_provide(cmd, path_var) && find_command(root, cmd, path_var).is_none() {
            return Err(ConfigError::NoCommand {
                cmd: cmd.clone(),
                root: root.to_path_buf(),
            });
        }
        s.parameters.clone()
    } else {
        let sh = ["/bin/bash", "/bin/sh"]
            .iter()
            .find(|p| is_executable_in_root(root, Path::new(p)))
            .ok_or_else(|| ConfigError::NoShell(root.to_path_buf()))?;
        vec![sh.to_string()]
    };

    // systemd (and most inits) halt on SIGRTMIN+3; busybox init ignores it
    // and powers off on SIGUSR2 instead.
    let kill_signal = match s.kill_signal {
        None if boot && init_is_busybox(root, &command[0]) => Some(libc::SIGUSR2),
        None if boot => Some(libc::SIGRTMIN() + 3),
        other => other,
    };

    let tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
        && nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let console = match (o.console, o.pipe) {
        (Some(c), false) => c,
        (None, true) => ConsoleMode::Pipe,
        (Some(c), true) if c == ConsoleMode::Pipe => c,
        (Some(_), true) => {
            return Err(ConfigError::Conflict(
                "--pipe and --console= may not be combined".into(),
            ))
        }
        (None, false) if tty => ConsoleMode::Interactive,
        (None, false) if boot => ConsoleMode::ReadOnly,
        (None, false) => ConsoleMode::Pipe,
    };
    if console == ConsoleMode::Interactive && !tty {
        return Err(ConfigError::Conflict(
            "--console=interactive needs standard input and output to be a terminal".into(),
        ));
    }
    Ok(Exec {
        boot,
        as_pid2,
        command,
        env,
        user,
        kill_signal,
        console,
    })
}

/// The image's own machine id (/etc/machine-id), if it has a valid one:
/// systemd-nspawn uses it as the machine UUID.
pub(super) fn image_machine_id(root: &Path) -> Option<String> {
    let fd = crate::sys::open_in_root(root, Path::new("/etc/machine-id"), libc::O_RDONLY).ok()?;
    // A regular file only (a FIFO or a device node is not an ID), and small.
    let data = netspawn_common::fsread::read_regular_fd(fd, 64).ok()?;
    let id = std::str::from_utf8(&data).ok()?.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// A random UUID as 32 hex digits (version 4 bits set).
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Fall back to something unique enough; getrandom does not fail on Linux >= 3.17.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Finds `cmd` inside `root`: as a path if it has a '/', else along PATH.
pub fn find_command(root: &Path, cmd: &str, path_var: &str) -> Option<String> {
    if cmd.contains('/') {
        return is_executable_in_root(root, Path::new(cmd)).then(|| cmd.to_string());
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
        .find(|p| is_executable_in_root(root, Path::new(p)))
}

/// True if `init` inside `root` is busybox (e.g. /sbin/init -> ../bin/busybox).
pub fn init_is_busybox(root: &Path, init: &str) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(fd) = crate::sys::open_in_root(root, Path::new(init), libc::O_PATH) else {
        return false;
    };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.file_name().is_some_and(|n| n == "busybox"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_random_v4() {
        let a = random_uuid();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_uuid());
        assert_eq!(&a[12..13], "4");
    }
}
