//! The container's `host0`: netd asked to serve the host side (address,
//! DHCP, DNS), then our own DHCP client configures the container side from
//! inside its network namespace and writes the resolv.conf it will see.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::unistd::Pid;

use super::links::NetState;
use super::LaunchError;
use crate::config::Config;
use crate::network;

/// Asks netd to serve the machine's link (address, DHCP, DNS) and waits
/// until it does; registers port forwards.
pub(super) fn serve_guest(
    n: &mut NetState,
    cfg: &Config,
    child: Pid,
    run_dir: &Path,
) -> Result<(), LaunchError> {
    let primary = n.plan.links.iter().find_map(|l| match l {
        network::PlannedLink::Veth {
            host,
            container,
            container_mac,
            ..
        } if container == "host0" => Some((host.clone(), *container_mac)),
        _ => None,
    });
    let Some((ifname, mac)) = primary else {
        return Ok(());
    };
    let mut managed = false;
    if let Some(netd) = n.netd.as_mut() {
        let answer = netd.request(&netspawn_common::netd::Request::Link {
            ifname: ifname.clone(),
            timeout_ms: 10_000,
        })?;
        tracing::debug!("netd: {ifname}: {answer}");
        managed = matches!(answer, netspawn_common::netd::Answer::Address(_));
    }
    if cfg.dhcp_host0 {
        // netd serves DHCP on the link: if it died while we waited for a
        // lease, bring it back, let it configure the link again, and ask again.
        let mut tries = 0;
        loop {
            match configure_host0(cfg, child, mac, managed, run_dir) {
                Err(LaunchError::Dhcp(e)) if managed && tries < 2 => {
                    let Some(netd) = n.netd.as_mut() else {
                        return Err(LaunchError::Dhcp(e));
                    };
                    if !netd.revive()? {
                        return Err(LaunchError::Dhcp(e));
                    }
                    tries += 1;
                    netd.request(&netspawn_common::netd::Request::Link {
                        ifname: ifname.clone(),
                        timeout_ms: 10_000,
                    })?;
                }
                r => break r?,
            }
        }
    }
    let Some(netd) = n.netd.as_mut() else {
        return Ok(());
    };
    super::ports::expose_ports(netd, cfg, ifname, mac)
}

/// Where the launcher writes the container's resolv.conf.
pub(super) fn resolv_conf_path(cfg: &Config, run_dir: &Path) -> PathBuf {
    let name = if cfg.register {
        cfg.machine.clone()
    } else {
        format!("{}.{}", cfg.machine, std::process::id())
    };
    run_dir.join("resolv").join(format!("{name}.conf"))
}

/// Our own DHCP client configures host0 (address, default route) from
/// inside the container's namespace, and writes the resolv.conf the
/// container will see. On a link netd serves, failure is an error; on a
/// LAN bridge without a DHCP server, host0 stays bare with a warning.
fn configure_host0(
    cfg: &Config,
    child: Pid,
    mac: network::naming::Mac,
    managed: bool,
    run_dir: &Path,
) -> Result<(), LaunchError> {
    let started = Instant::now();
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw())).map_err(|e| {
        LaunchError::Sys {
            what: "open the container's network namespace",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    })?;
    let timeout = std::time::Duration::from_secs(if managed { 10 } else { 5 });
    let lease =
        match network::dhcp_client::acquire(ns.as_fd(), "host0", mac, &cfg.hostname, timeout) {
            Ok(l) => l,
            Err(e) if !managed => {
                tracing::warn!("{e}; host0 stays unconfigured");
                if !cfg.quiet {
                    eprintln!("netspawn: {e}; host0 stays unconfigured.");
                }
                return Ok(());
            }
            Err(e) => return Err(LaunchError::Dhcp(e.to_string())),
        };
    let mut inside =
        network::rtnl::Netlink::open_in(ns.as_fd()).map_err(network::NetError::from)?;
    network::dhcp_client::configure(&mut inside, "host0", &lease)
        .map_err(|e| LaunchError::Dhcp(e.to_string()))?;
    let path = resolv_conf_path(cfg, run_dir);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, network::dhcp_client::resolv_conf(&lease)).map_err(|e| {
        LaunchError::Sys {
            what: "write the container's resolv.conf",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    })?;
    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, address = %lease.address, "host0 configured by DHCP");
    Ok(())
}
