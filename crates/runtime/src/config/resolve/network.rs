//! The network group: which links, and the ports exposed on the host.
//! Any link implies a private network, so `--private-network` together
//! with link options is accepted, as systemd-nspawn documents.

use super::ConfigError;
use crate::config::model::Settings;
use crate::spec::PortSpec;

/// How the container is connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// Own network namespace (any of the options below implies it).
    pub private: bool,
    pub veth: bool,
    pub veth_extra: Vec<(String, String)>,
    pub bridge: Option<String>,
    pub zone: Option<String>,
    pub macvlan: Vec<String>,
    pub ipvlan: Vec<String>,
    pub interfaces: Vec<String>,
    pub ports: Vec<PortSpec>,
}

impl Network {
    /// True if links other than lo must be made.
    pub fn has_links(&self) -> bool {
        self.veth
            || !self.veth_extra.is_empty()
            || self.bridge.is_some()
            || self.zone.is_some()
            || !self.macvlan.is_empty()
            || !self.ipvlan.is_empty()
            || !self.interfaces.is_empty()
    }
}

pub(super) fn resolve(s: &Settings) -> Result<Network, ConfigError> {
    let mut net = Network {
        private: s.private_network(),
        // Bridge=/Zone= imply a veth, made by the bridge or zone code.
        veth: s.virtual_ethernet == Some(true) && s.bridge.is_none() && s.zone.is_none(),
        veth_extra: s.virtual_ethernet_extra.clone(),
        bridge: s.bridge.clone(),
        zone: s.zone.clone(),
        macvlan: s.macvlan.clone(),
        ipvlan: s.ipvlan.clone(),
        interfaces: s.interfaces.clone(),
        ports: s.ports.clone(),
    };
    if net.bridge.is_some() && net.zone.is_some() {
        return Err(ConfigError::Conflict(
            "--network-bridge= and --network-zone= may not be combined".into(),
        ));
    }
    if !net.ports.is_empty() && !net.veth && net.bridge.is_none() && net.zone.is_none() {
        return Err(ConfigError::Conflict("--port= requires a private network with a virtual Ethernet link (-n, --network-bridge= or --network-zone=)".into()));
    }
    if net.has_links() {
        net.private = true;
    }
    Ok(net)
}
