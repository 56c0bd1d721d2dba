//! Merging a machine's `.nspawn` settings file into the command line, as
//! systemd-nspawn does: the file is looked up by machine name, untrusted
//! files lose their privileged settings, and for each group of settings the
//! command line wins unless `--settings=override`.

use std::path::PathBuf;

use netspawn_common::names::machine_name_from_path;
use netspawn_common::paths::Paths;
use thiserror::Error;

use crate::cli::Args;
use crate::settings::{self, SettingsMode, StartMode};

#[derive(Debug, Error)]
pub enum MergeError {
    #[error("{0}")]
    Mode(#[from] settings::SettingsModeError),
    #[error("{0}")]
    Parse(#[from] settings::SettingsError),
    #[error("{path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
}

/// Reads the settings file that applies to this launch (if any) and returns
/// the command line with the file's settings merged in. Warnings (unknown
/// keys, ignored untrusted settings) go to stderr.
pub fn apply(mut a: Args, paths: &Paths) -> Result<Args, MergeError> {
    let mode: SettingsMode = match &a.settings {
        Some(s) => s.parse()?,
        None => SettingsMode::Yes,
    };
    if !mode.reads_file() {
        return Ok(a);
    }
    let image = match (&a.directory, &a.machine) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(m)) => Some(paths.image_dir.join(m)),
        (None, None) => std::env::current_dir().ok(),
    };
    let name = match (&a.machine, &image) {
        (Some(m), _) => m.clone(),
        (None, Some(img)) => match img
            .canonicalize()
            .ok()
            .and_then(|p| machine_name_from_path(&p))
        {
            Some(n) => n,
            None => return Ok(a),
        },
        (None, None) => return Ok(a),
    };
    let Some((path, trusted)) = settings::find(&name, image.as_deref(), &paths.settings_path)
    else {
        return Ok(a);
    };
    let data = std::fs::read(&path).map_err(|err| MergeError::Read {
        path: path.clone(),
        err,
    })?;
    let parsed = settings::parse_bytes(&data, &path)?;
    for w in &parsed.warnings {
        eprintln!("netspawn: {w}");
    }
    let mut s = parsed.settings;
    if !mode.trusts(trusted) {
        for w in s.drop_privileged() {
            eprintln!("netspawn: {}: {w}", path.display());
        }
    }
    let ov = mode.file_overrides_command_line();

    // [Exec]
    if let Some(start) = s.start_mode() {
        if ov || (!a.boot && !a.as_pid2 && a.command.is_empty()) {
            a.boot = start == StartMode::Boot;
            a.as_pid2 = start == StartMode::Pid2;
            if !s.parameters.is_empty() {
                a.command = s.parameters.clone();
            }
        }
    } else if !s.parameters.is_empty() && (ov || a.command.is_empty()) {
        a.command = s.parameters.clone();
    }
    if !s.environment.is_empty() && (ov || a.setenv.is_empty()) {
        a.setenv = s
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
    }
    if let Some(wd) = s.working_directory.take() {
        if ov || a.chdir.is_none() {
            a.chdir = Some(wd);
        }
    }
    if let Some(h) = s.hostname.take() {
        if ov || a.hostname.is_none() {
            a.hostname = Some(h);
        }
    }
    if ov || (a.capability.is_empty() && a.drop_capability.is_empty()) {
        a.file_caps = (s.capability.unwrap_or(0), s.drop_capability.unwrap_or(0));
    }
    if !s.system_call_filter.is_empty() && (ov || a.system_call_filter.is_empty()) {
        // Kept as one list per word so `~` applies per entry, as in the file.
        a.system_call_filter = s.system_call_filter.clone();
    }
    if let Some(pu) = s.private_users.take() {
        if ov || (a.private_users.is_none() && !a.private_users_short) {
            a.private_users = Some(pu);
        }
    }
    if let Some(k) = s.kill_signal.take() {
        if ov || a.kill_signal.is_none() {
            a.kill_signal = Some(k);
        }
    }
    if let Some(n) = s.notify_ready {
        if ov || a.notify_ready.is_none() {
            a.notify_ready = Some(if n { "yes" } else { "no" }.into());
        }
    }

    // [Files]
    if (!s.binds.is_empty() || !s.tmpfs.is_empty())
        && (ov || (a.bind.is_empty() && a.bind_ro.is_empty() && a.tmpfs.is_empty()))
    {
        if ov {
            a.bind.clear();
            a.bind_ro.clear();
            a.tmpfs.clear();
        }
        a.file_binds = s.binds.clone();
        a.file_tmpfs = s.tmpfs.clone();
    }
    if let Some(ro) = s.read_only {
        if ov || !a.read_only {
            a.read_only = ro;
        }
    }
    if let Some(o) = s.private_users_ownership.take() {
        if ov || a.private_users_ownership.is_none() {
            a.private_users_ownership = Some(o);
        }
    }
    if let Some(v) = s.volatile.take() {
        if !matches!(crate::spec::parse_boolean(&v), Some(false)) {
            eprintln!(
                "netspawn: {}: Volatile={v} is not supported by netspawn, ignoring.",
                path.display()
            );
        }
    }

    // [Network]: the file's settings replace the command line's as a group.
    let cli_network = a.private_network
        || a.network_veth
        || !a.network_veth_extra.is_empty()
        || a.network_bridge.is_some()
        || a.network_zone.is_some()
        || !a.network_macvlan.is_empty()
        || !a.network_ipvlan.is_empty()
        || !a.network_interface.is_empty();
    if s.network_configured() && (ov || !cli_network) {
        // Private=yes alone means "only lo"; with links it is implied by them.
        let file_links = s.network_veth()
            || !s.virtual_ethernet_extra.is_empty()
            || !s.interfaces.is_empty()
            || !s.macvlan.is_empty()
            || !s.ipvlan.is_empty();
        a.private_network = s.private_network() && !file_links;
        a.network_veth = s.virtual_ethernet == Some(true) && s.bridge.is_none() && s.zone.is_none();
        a.network_veth_extra = s
            .virtual_ethernet_extra
            .iter()
            .map(|(h, c)| format!("{h}:{c}"))
            .collect();
        a.network_bridge = s.bridge.clone();
        a.network_zone = s.zone.clone();
        a.network_macvlan = s.macvlan.clone();
        a.network_ipvlan = s.ipvlan.clone();
        a.network_interface = s.interfaces.clone();
    }
    if !s.ports.is_empty() && (ov || a.port.is_empty()) {
        a.port.clear();
        a.file_ports = s.ports.clone();
    }
    Ok(a)
}
