//! Machines that start at boot: `enable`, `disable`, `install` and
//! `uninstall`, and the list `start --enabled` works through.
//!
//! Where PID 1 is systemd (`/run/systemd/system` exists, as `sd_booted()`
//! tests), the machine is a unit as with machinectl: `install` puts
//! `netspawn@.service` and `netspawn-machines.target` in
//! `/etc/systemd/system` and wants the target from `multi-user.target`;
//! `enable NAME` links `netspawn@NAME.service` into
//! `netspawn-machines.target.wants/`, as `systemctl enable` does. systemd is
//! told (`systemctl daemon-reload`) only when the unit directory is the real
//! one. Elsewhere `enable NAME` writes the record `/etc/netspawn/enabled/NAME`
//! and the boot hook `netspawnctl start --enabled` starts every recorded
//! machine; `install` puts the sysvinit script that runs it in `/etc/init.d`.
//! Every location moves with an environment variable
//! ([`netspawn_common::paths::BootPaths`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use netspawn_common::names::{check_machine_name, machine_name_is_valid};
use netspawn_common::paths::{BootPaths, Paths};

use super::start::netspawn_binary;
use super::LifecycleError;
use crate::ctl::CtlError;

/// The unit template, as shipped in `dist/`.
const SERVICE_IN: &str = include_str!("../../../../../dist/netspawn@.service.in");
/// The target that groups enabled machines.
const TARGET_TEXT: &str = include_str!("../../../../../dist/netspawn-machines.target");
/// The sysvinit script.
const INIT_IN: &str = include_str!("../../../../../dist/netspawn-machines.init");

/// The template unit's file name.
pub const SERVICE: &str = "netspawn@.service";
/// The target's file name.
pub const TARGET: &str = "netspawn-machines.target";
/// The init script's file name.
pub const INIT_SCRIPT: &str = "netspawn-machines";

fn instance(name: &str) -> String {
    format!("netspawn@{name}.service")
}

fn wants_dir(bp: &BootPaths) -> PathBuf {
    bp.systemd_dir.join(format!("{TARGET}.wants"))
}

fn check_names(names: &[String]) -> Result<(), CtlError> {
    for name in names {
        check_machine_name(name).map_err(|reason| CtlError::InvalidName {
            name: name.clone(),
            reason,
        })?;
    }
    Ok(())
}

fn info(quiet: bool, line: &str) {
    if !quiet {
        eprintln!("{line}");
    }
}

/// Tells a running systemd about changed units, where they are its own.
fn reload(bp: &BootPaths) {
    if !(bp.systemd_booted() && bp.systemd_dir_is_default) {
        return;
    }
    match std::process::Command::new("systemctl")
        .arg("daemon-reload")
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!("systemctl daemon-reload: {s}"),
        Err(e) => tracing::warn!("systemctl daemon-reload: {e}"),
    }
}

/// Writes `path` whole or not at all (a file beside it, renamed over it).
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), LifecycleError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(LifecycleError::io("make", dir))?;
    let tmp = dir.join(format!(
        ".#{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(LifecycleError::io("write", path))
}

/// Makes `link` a symbolic link to `target`, replacing what was there.
fn symlink(target: &Path, link: &Path) -> Result<(), LifecycleError> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let dir = link.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(LifecycleError::io("make", dir))?;
    match fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(LifecycleError::io("remove", link)(e))
        }
        _ => {}
    }
    std::os::unix::fs::symlink(target, link).map_err(LifecycleError::io("link", link))
}

/// Removes `path` if it is there; true if it was.
fn remove(path: &Path) -> Result<bool, LifecycleError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LifecycleError::io("remove", path)(e)),
    }
}

/// `enable NAME…`: the machine starts at boot from now on.
pub fn enable(names: &[String], quiet: bool) -> Result<i32, CtlError> {
    check_names(names)?;
    let paths = Paths::from_env();
    for name in names {
        if !paths.image_dir.join(name).is_dir() {
            return Err(LifecycleError::NoImage {
                name: name.clone(),
                dir: paths.image_dir.clone(),
            }
            .into());
        }
    }
    let bp = BootPaths::from_env();
    if bp.systemd_booted() {
        let unit = bp.systemd_dir.join(SERVICE);
        if !unit.is_file() {
            return Err(LifecycleError::NotInstalled {
                unit: SERVICE,
                dir: bp.systemd_dir.clone(),
            }
            .into());
        }
        for name in names {
            let link = wants_dir(&bp).join(instance(name));
            symlink(&unit, &link)?;
            info(
                quiet,
                &format!("Created symlink {} → {}.", link.display(), unit.display()),
            );
        }
        reload(&bp);
    } else {
        for name in names {
            let record = bp.enabled_dir().join(name);
            write_atomic(
                &record,
                "# Started at boot by `netspawnctl start --enabled` (netspawnctl enable).\n",
                0o644,
            )?;
            info(quiet, &format!("Created {}.", record.display()));
        }
    }
    Ok(0)
}

/// `disable NAME…`: the machine no longer starts at boot (its unit link and
/// its record both go, whichever there is).
pub fn disable(names: &[String], quiet: bool) -> Result<i32, CtlError> {
    check_names(names)?;
    let bp = BootPaths::from_env();
    let mut unlinked = false;
    for name in names {
        let link = wants_dir(&bp).join(instance(name));
        if remove(&link)? {
            unlinked = true;
            info(quiet, &format!("Removed \"{}\".", link.display()));
        }
        let record = bp.enabled_dir().join(name);
        if remove(&record)? {
            info(quiet, &format!("Removed \"{}\".", record.display()));
        }
    }
    if unlinked {
        reload(&bp);
    }
    for p in super::cni::uninstall()? {
        info(quiet, &format!("Removed \"{}\".", p.display()));
    }
    Ok(0)
}

/// The enabled machines, by name: the unit links where PID 1 is systemd,
/// else the records. Entries that are no valid machine name are skipped.
pub fn enabled_names() -> Result<Vec<String>, CtlError> {
    let bp = BootPaths::from_env();
    let (dir, from_link) = if bp.systemd_booted() {
        (wants_dir(&bp), true)
    } else {
        (bp.enabled_dir(), false)
    };
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LifecycleError::io("read", &dir)(e).into()),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|f| {
            if from_link {
                f.strip_prefix("netspawn@")
                    .and_then(|r| r.strip_suffix(".service"))
                    .map(str::to_string)
            } else {
                Some(f)
            }
        })
        .filter(|n| machine_name_is_valid(n))
        .collect();
    names.sort();
    Ok(names)
}

/// The unit with the launcher's path in it.
pub fn render_service(netspawn: &Path) -> String {
    SERVICE_IN.replace("@NETSPAWN@", &netspawn.to_string_lossy())
}

/// The init script with netspawnctl's path in it.
pub fn render_init(netspawnctl: &Path) -> String {
    INIT_IN.replace("@NETSPAWNCTL@", &sh_quote(&netspawnctl.to_string_lossy()))
}

/// `s` as one word for sh.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap_or(p)
}

/// `install`: what starts enabled machines at boot on this host.
pub fn install(quiet: bool) -> Result<i32, CtlError> {
    let bp = BootPaths::from_env();
    if bp.systemd_booted() {
        let service = bp.systemd_dir.join(SERVICE);
        write_atomic(
            &service,
            &render_service(&absolute(netspawn_binary())),
            0o644,
        )?;
        let target = bp.systemd_dir.join(TARGET);
        write_atomic(&target, TARGET_TEXT, 0o644)?;
        let link = bp.systemd_dir.join("multi-user.target.wants").join(TARGET);
        symlink(&target, &link)?;
        reload(&bp);
        info(
            quiet,
            &format!(
                "Installed {} and {}; {} is wanted by multi-user.target.",
                service.display(),
                target.display(),
                TARGET
            ),
        );
    } else {
        let exe = std::env::current_exe()
            .map(absolute)
            .unwrap_or_else(|_| PathBuf::from("netspawnctl"));
        let script = bp.init_dir.join(INIT_SCRIPT);
        write_atomic(&script, &render_init(&exe), 0o755)?;
        let enabled = bp.enabled_dir();
        fs::create_dir_all(&enabled).map_err(LifecycleError::io("make", &enabled))?;
        info(
            quiet,
            &format!(
                "Installed {}: link it into the runlevels (update-rc.d {INIT_SCRIPT} defaults), \
                 or run 'netspawnctl start --enabled' from a boot script.",
                script.display()
            ),
        );
    }
    match super::cni::install()? {
        Some(done) => {
            let list: Vec<String> = done.iter().map(|p| p.display().to_string()).collect();
            info(
                quiet,
                &format!("Installed the CNI plugin: {}.", list.join(", ")),
            );
        }
        None => info(
            quiet,
            "No netspawn-cni beside netspawnctl: the CNI plugin was not installed.",
        ),
    }
    Ok(0)
}

/// `uninstall`: removes what `install` put in place (units, target link,
/// init script); the records of enabled machines stay.
pub fn uninstall(quiet: bool) -> Result<i32, CtlError> {
    let bp = BootPaths::from_env();
    let mut unlinked = false;
    for p in [
        bp.systemd_dir.join("multi-user.target.wants").join(TARGET),
        bp.systemd_dir.join(TARGET),
        bp.systemd_dir.join(SERVICE),
        bp.init_dir.join(INIT_SCRIPT),
    ] {
        if remove(&p)? {
            unlinked = true;
            info(quiet, &format!("Removed \"{}\".", p.display()));
        }
    }
    if unlinked {
        reload(&bp);
    }
    for p in super::cni::uninstall()? {
        info(quiet, &format!("Removed \"{}\".", p.display()));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_files_are_filled_in() {
        let unit = render_service(Path::new("/usr/local/bin/netspawn"));
        assert!(unit.contains("ExecStart=/usr/local/bin/netspawn --quiet"));
        assert!(unit.contains("WantedBy=netspawn-machines.target"));
        assert!(!unit.contains("@NETSPAWN@"));
        let init = render_init(Path::new("/opt/my bin/netspawnctl"));
        assert!(init.contains("NETSPAWNCTL='/opt/my bin/netspawnctl'\n"));
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains("start --enabled"));
        assert_eq!(sh_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
