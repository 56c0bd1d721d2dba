//! The security group: the capability bounding set, the system call filter
//! and no-new-privileges.

use super::network::Network;
use super::ConfigError;
use crate::caps::{self, CapSet};
use crate::config::model::Settings;
use crate::seccomp::SyscallFilter;

pub(super) struct Security {
    pub caps: CapSet,
    pub syscall_filter: SyscallFilter,
    pub no_new_privileges: bool,
}

pub(super) fn resolve(s: &Settings, net: &Network) -> Result<Security, ConfigError> {
    let mut set = caps::DEFAULT;
    if net.private {
        set |= caps::CAP_NET_ADMIN;
    }
    set |= s.capability.unwrap_or(0);
    set &= !s.drop_capability.unwrap_or(0);
    Ok(Security {
        caps: set,
        syscall_filter: s.syscall_filter.clone(),
        no_new_privileges: s.no_new_privileges.unwrap_or(false),
    })
}
