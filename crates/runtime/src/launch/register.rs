//! The machine's registry entry (systemd-nspawn's `nspawn-register.c`):
//! the name is claimed before anything is made, the entry written once the
//! payload runs, and its addresses kept current while the machine lives.

use std::os::fd::AsFd;
use std::time::{SystemTime, UNIX_EPOCH};

use netspawn_common::paths::Paths;
use netspawn_common::registry::{Entry, NameClaim, RecordedFilter, Registry};
use nix::unistd::Pid;

use super::{Held, LaunchError};
use crate::cgroup::Cgroups;
use crate::config::Config;
use crate::network;

/// Claims the machine's name, when it is to be registered.
pub(super) fn claim(
    cfg: &Config,
    paths: &Paths,
) -> Result<Option<(Registry, NameClaim)>, LaunchError> {
    if !cfg.register {
        return Ok(None);
    }
    let reg = Registry::new(paths);
    let claim = reg.claim(&cfg.machine).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => LaunchError::Busy(cfg.machine.clone()),
        _ => LaunchError::Registry(e),
    })?;
    Ok(Some((reg, claim)))
}

/// The addresses inside a private network namespace, kept current in the registry.
pub(super) fn address_watch(
    cfg: &Config,
    held: &Held,
    child: Pid,
    veths: Vec<(String, String)>,
) -> Option<network::addrs::AddressWatch> {
    match (cfg.network.private, &held.registry) {
        (true, Some(_)) => std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw()))
            .ok()
            .and_then(|ns| {
                network::addrs::AddressWatch::open_in(ns.as_fd(), veths)
                    .map_err(|e| tracing::warn!("cannot watch addresses: {e}"))
                    .ok()
            }),
        _ => None,
    }
}

/// The written entry, rewritten when the machine's addresses change.
pub(super) struct Registration<'a> {
    held: &'a Held,
    entry: Option<Entry>,
    /// READY=1 has been passed on to our own service manager.
    told: bool,
}

impl<'a> Registration<'a> {
    /// Registers the machine; called once the payload runs, so readers
    /// never see the launcher's image as the leader.
    pub(super) fn write(
        cfg: &Config,
        held: &'a Held,
        child: Pid,
        cgroups: &Cgroups,
        net_interfaces: Vec<String>,
        addresses: network::addrs::Seen,
        userns: Option<crate::userns::UidRange>,
    ) -> Result<Registration<'a>, std::io::Error> {
        let mut entry = None;
        if let Some((reg, claim)) = &held.registry {
            let e = Entry {
                name: cfg.machine.clone(),
                uuid: cfg.uuid.clone(),
                leader: child.as_raw() as u32,
                launcher: std::process::id(),
                launcher_start: crate::sys::self_start_time(),
                root: cfg.root.clone(),
                class: "container".into(),
                service: "netspawn".into(),
                state: "running".into(),
                boot: cfg.boot,
                ready: !cfg.notify_ready,
                timestamp_usec: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0),
                cgroups: cgroups.paths.clone(),
                private_network: cfg.network.private,
                interfaces: net_interfaces,
                addresses: addresses.routable,
                link_local: addresses.link_local,
                // What `netspawnctl shell` needs to give an entering process
                // the payload's filter (see child::lock_down).
                syscall_filter: Some(RecordedFilter {
                    allow: cfg.syscall_filter.allow.clone(),
                    deny: cfg.syscall_filter.deny.clone(),
                    caps: Some(cfg.caps),
                }),
                // `--no-new-privileges=`: whoever enters gets it too.
                no_new_privs: cfg.no_new_privileges,
                // The user namespace's range: for NSS names and for picking.
                userns,
            };
            reg.write(claim, &e)?;
            entry = Some(e);
        }
        if !cfg.notify_ready {
            crate::ready::tell_manager();
        }
        Ok(Registration {
            held,
            entry,
            told: !cfg.notify_ready,
        })
    }

    /// Records a change of the machine: its current addresses, or its
    /// READY=1 (passed on to our own manager once).
    pub(super) fn on_change(&mut self, change: crate::ready::Change) {
        if !self.told && change == crate::ready::Change::Ready {
            self.told = true;
            crate::ready::tell_manager();
        }
        if let (Some(e), Some((reg, claim))) = (self.entry.as_mut(), &self.held.registry) {
            let changed = match change {
                crate::ready::Change::Addresses(seen)
                    if e.addresses != seen.routable || e.link_local != seen.link_local =>
                {
                    tracing::debug!(?seen, "addresses changed");
                    e.addresses = seen.routable;
                    e.link_local = seen.link_local;
                    true
                }
                crate::ready::Change::Ready if !e.ready => {
                    e.ready = true;
                    true
                }
                _ => false,
            };
            if changed {
                if let Err(err) = reg.write(claim, e) {
                    tracing::warn!("registry: {err}");
                }
            }
        }
    }
}
