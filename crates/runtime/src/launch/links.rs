//! The machine's network links (systemd-nspawn's `nspawn-network.c`): the
//! plan and the host's netlink socket before the clone, the links made for
//! the cloned child while it waits for the go-ahead.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use netspawn_common::paths::Paths;
use nix::unistd::Pid;

use super::{Held, LaunchError};
use crate::cgroup::Cgroups;
use crate::config::Config;
use crate::network;

/// The machine's network links: what to make and the host's netlink socket.
pub(super) struct NetState {
    pub(super) plan: network::Plan,
    pub(super) host: network::rtnl::Netlink,
    pub(super) zones: network::zone::Zones,
    /// netd, when a link it serves (ve-, vz-) or a port forward is involved.
    netd: Option<crate::netd_client::NetdClient>,
    /// A netd this launch started, coming up while the links are made.
    netd_starting: Option<crate::netd_client::Starting>,
}

impl NetState {
    /// netd, when a link it serves or a port forward is involved; one this
    /// launch started is waited for here, the first time.
    pub(super) fn netd(
        &mut self,
    ) -> Result<Option<&mut crate::netd_client::NetdClient>, LaunchError> {
        if let Some(s) = self.netd_starting.take() {
            let started = Instant::now();
            self.netd = Some(s.finish()?);
            tracing::debug!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "netd started and connected"
            );
        }
        Ok(self.netd.as_mut())
    }
}

/// Plans the machine's links and checks them against the host (names free,
/// bridges present) before anything is made; None without links.
pub(super) fn prepare(cfg: &Config, paths: &Paths) -> Result<Option<NetState>, LaunchError> {
    if !cfg.network.has_links() {
        return Ok(None);
    }
    let machine_id = network::naming::host_machine_id().unwrap_or_else(|| {
        tracing::warn!(
            "no machine ID in /etc/machine-id: MACs are stable per name but not per host"
        );
        [0; 16]
    });
    let plan = network::plan(&cfg.machine, &machine_id, &cfg.network);
    let mut host = network::rtnl::Netlink::open().map_err(network::NetError::from)?;
    network::check(&plan, &mut host)?;
    let served = cfg.network.veth || cfg.network.zone.is_some() || !cfg.network.ports.is_empty();
    // A netd that is not running is started here and comes up while the
    // links are made (it configures links that exist when it starts).
    let (netd, netd_starting) = if served {
        let started = Instant::now();
        let c = crate::netd_client::NetdClient::connect_or_begin(paths)?;
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "netd connected"
        );
        match c {
            Ok(c) => (Some(c), None),
            Err(s) => (None, Some(s)),
        }
    } else {
        (None, None)
    };
    Ok(Some(NetState {
        plan,
        host,
        zones: network::zone::Zones::new(paths.locks_dir()),
        netd,
        netd_starting,
    }))
}

/// Starts the keeper that will undo the machine's links, then makes them
/// for the cloned child. The keeper is told the whole plan before the first
/// link exists, so a launcher killed half-way (even `kill -9` right after a
/// new zone bridge was made) leaves nothing behind; a failure here undoes
/// what was made and dismisses the keeper.
pub(super) fn setup_network(
    n: &mut NetState,
    child: Pid,
    held: &Held,
    cgroups: &Cgroups,
) -> Result<network::keeper::Keeper, LaunchError> {
    let started = Instant::now();
    let ns: OwnedFd = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw()))
        .map_err(|e| LaunchError::Sys {
            what: "open the container's network namespace",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?
        .into();
    let keeper_ns = ns.try_clone().map_err(|e| LaunchError::Sys {
        what: "open the container's network namespace",
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let keeper = super::keeper::spawn_for_links(
        n.plan.teardown(),
        keeper_ns,
        n.zones.clone(),
        held,
        cgroups,
    )?;
    tracing::trace!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "network: keeper started"
    );
    let mut undo = network::Teardown::default();
    let made = network::setup(
        &n.plan,
        &mut n.host,
        child.as_raw() as u32,
        ns.as_fd(),
        &n.zones,
        &mut undo,
    )
    .and_then(|()| {
        tracing::trace!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "network: links made"
        );
        if n.plan.container_interfaces().iter().any(|i| i == "host0") {
            // Before host0 comes up: its addresses are usable at once.
            network::slaac::prepare(ns.as_fd(), "host0")?;
        }
        let mut inside = network::rtnl::Netlink::open_in(ns.as_fd())?;
        tracing::trace!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "network: inside the container's namespace"
        );
        network::configure_container(&n.plan, &mut inside)
    });
    if let Err(e) = made {
        let host_ns = std::fs::File::open("/proc/thread-self/ns/net").ok();
        let mut inside = network::rtnl::Netlink::open_in(ns.as_fd()).ok();
        if let Some(host_ns) = &host_ns {
            for err in undo.run(
                &mut n.host,
                inside.as_mut().map(|i| i as &mut dyn network::rtnl::Rtnl),
                host_ns.as_fd(),
                &n.zones,
            ) {
                tracing::warn!("undoing network setup: {err}");
            }
        }
        // What was made is undone; the rest of the failed launch is the
        // launcher's to clean up, as before any keeper existed.
        keeper.dismiss();
        super::keeper::hand_over(held, false);
        return Err(e.into());
    }
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "network links set up"
    );
    Ok(keeper)
}
