//! Starting the keeper (`network::keeper`), the process that undoes what the
//! launcher made after the launcher is gone, even after `kill -9`: the
//! machine's links, and in any case its registry entry, hosts link and
//! cgroups. The keeper process itself lives in `network::keeper`.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::Pid;

use super::{Held, LaunchError};
use crate::cgroup::Cgroups;
use crate::network;

fn io_error(what: &'static str, e: std::io::Error) -> LaunchError {
    LaunchError::Sys {
        what,
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// The launcher's locks the keeper must not keep: the image lock.
fn inherited_locks(held: &Held) -> Vec<i32> {
    vec![held._image_lock.as_raw_fd()]
}

/// Starts the keeper of a machine's links: `undo` lists what will be made; the
/// registry entry, hosts link and cgroups are added here.
pub(super) fn spawn_for_links(
    mut undo: network::Teardown,
    ns: OwnedFd,
    zones: network::zone::Zones,
    held: &Held,
    cgroups: &Cgroups,
) -> Result<network::keeper::Keeper, LaunchError> {
    let close = inherited_locks(held);
    undo.registry_entry = held
        .registry
        .as_ref()
        .map(|(reg, c)| reg.entry_path(&c.name));
    undo.hosts_link = held
        .registry
        .as_ref()
        .map(|(reg, c)| reg.hosts_path(&c.name));
    undo.cgroups = cgroups.paths.clone();
    undo.files = held.resolv_conf.iter().cloned().collect();
    undo.name_lock = name_lock(held);
    let keeper = network::keeper::spawn(undo, ns, zones, &close)
        .map_err(|e| io_error("start the network keeper", e))?;
    hand_over(held, true);
    Ok(keeper)
}

/// The machine-name lock the keeper inherits, which it lets go of last.
fn name_lock(held: &Held) -> Option<(std::path::PathBuf, i32)> {
    held.registry
        .as_ref()
        .map(|(_, c)| (c.lock_path().to_path_buf(), c.as_raw_fd()))
}

/// Whether the keeper (rather than the launcher's claim) removes the name
/// lock's file: yes once a keeper runs, no again when it is dismissed.
pub(super) fn hand_over(held: &Held, to_keeper: bool) {
    if let Some((_, c)) = &held.registry {
        c.hand_over(to_keeper);
    }
}

/// Starts a keeper that only removes the machine's registry entry, hosts
/// link and cgroups after the launcher is gone (it has no links to undo).
pub(super) fn registry_keeper(
    child: Pid,
    held: &Held,
    cgroups: &Cgroups,
) -> Result<network::keeper::Keeper, LaunchError> {
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw()))
        .map_err(|e| io_error("open the container's network namespace", e))?;
    let teardown = network::keeper::Teardown {
        registry_entry: held.registry.as_ref().map(|(r, c)| r.entry_path(&c.name)),
        hosts_link: held.registry.as_ref().map(|(r, c)| r.hosts_path(&c.name)),
        cgroups: cgroups.paths.clone(),
        name_lock: name_lock(held),
        ..Default::default()
    };
    let zones = network::zone::Zones::new(held.run_dir.join("locks"));
    let keeper = network::keeper::spawn(teardown, ns.into(), zones, &inherited_locks(held))
        .map_err(|e| io_error("start the network keeper", e))?;
    hand_over(held, true);
    Ok(keeper)
}
