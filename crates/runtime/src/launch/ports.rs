//! Port forwards (systemd-nspawn's `nspawn-expose-ports.c`): `-p` rules
//! handed to netd, which owns the NAT rules and removes them with the machine.

use super::LaunchError;
use crate::config::Config;
use crate::netd_client::NetdClient;
use crate::network;

/// Registers the machine's port forwards to `ifname` (whose container end
/// has `mac`) with netd; nothing without `-p`.
pub(super) fn expose_ports(
    netd: &mut NetdClient,
    cfg: &Config,
    ifname: String,
    mac: network::naming::Mac,
) -> Result<(), LaunchError> {
    if !cfg.network.ports.is_empty() {
        let forwards = cfg
            .network
            .ports
            .iter()
            .map(|p| netspawn_common::netd::Forward {
                udp: p.proto == crate::spec::Proto::Udp,
                host_port: p.host_port,
                container_port: p.container_port,
            })
            .collect();
        netd.request(&netspawn_common::netd::Request::Ports {
            owner: cfg.machine.clone(),
            ifname,
            mac: network::naming::format_mac(&mac),
            forwards,
        })?;
    }
    Ok(())
}
