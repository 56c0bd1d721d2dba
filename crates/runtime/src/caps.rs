//! Capabilities: names, systemd-nspawn's default bounding set, and dropping
//! the bounding set in the container before the payload runs.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CapsError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("drop capability {name} from the bounding set: {err}")]
    Drop { name: &'static str, err: nix::Error },
}

/// Capability names in kernel order (index = capability number).
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A set of capabilities as a bit mask (bit N = capability N).
pub type CapSet = u64;

pub const ALL: CapSet = (1u64 << NAMES.len()) - 1;

/// Looks a capability up by name; case-insensitive, `CAP_` prefix optional.
pub fn by_name(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

const fn bit(name_index: u32) -> CapSet {
    1u64 << name_index
}

/// systemd-nspawn's default bounding set (CAP_NET_ADMIN is added separately
/// when the container has its own network namespace).
pub const DEFAULT: CapSet = bit(0) // CHOWN
    | bit(1) // DAC_OVERRIDE
    | bit(2) // DAC_READ_SEARCH
    | bit(3) // FOWNER
    | bit(4) // FSETID
    | bit(5) // KILL
    | bit(6) // SETGID
    | bit(7) // SETUID
    | bit(8) // SETPCAP
    | bit(9) // LINUX_IMMUTABLE
    | bit(10) // NET_BIND_SERVICE
    | bit(11) // NET_BROADCAST
    | bit(13) // NET_RAW
    | bit(15) // IPC_OWNER
    | bit(18) // SYS_CHROOT
    | bit(19) // SYS_PTRACE
    | bit(21) // SYS_ADMIN
    | bit(22) // SYS_BOOT
    | bit(23) // SYS_NICE
    | bit(24) // SYS_RESOURCE
    | bit(26) // SYS_TTY_CONFIG
    | bit(27) // MKNOD
    | bit(28) // LEASE
    | bit(29) // AUDIT_WRITE
    | bit(30) // AUDIT_CONTROL
    | bit(31); // SETFCAP

pub const CAP_NET_ADMIN: CapSet = bit(12);

/// Parses a list as `--capability=` takes it: names separated by commas or
/// whitespace, or the word `all`.
pub fn parse_list(s: &str) -> Result<CapSet, CapsError> {
    let mut set = 0;
    for word in s.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
        if word.eq_ignore_ascii_case("all") {
            set |= ALL;
            continue;
        }
        let n = by_name(word).ok_or_else(|| CapsError::Unknown(word.to_string()))?;
        set |= bit(n);
    }
    Ok(set)
}

/// Names of the capabilities in a set, in kernel order.
pub fn names(set: CapSet) -> Vec<&'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| set & bit(*i as u32) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Removes every capability not in `keep` from this process's bounding set.
/// Capabilities the running kernel does not know are skipped.
pub fn drop_bounding_set(keep: CapSet) -> Result<(), CapsError> {
    let last = last_cap();
    for (i, name) in NAMES.iter().enumerate() {
        if i as u32 > last || keep & bit(i as u32) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, i as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let err = nix::Error::last();
            if err != nix::Error::EINVAL {
                return Err(CapsError::Drop { name, err });
            }
        }
    }
    Ok(())
}

/// Highest capability number the kernel supports.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(by_name("cap_net_admin"), Some(12));
        assert_eq!(by_name("NET_ADMIN"), Some(12));
        assert_eq!(by_name("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(by_name("CAP_NOPE"), None);
        assert_eq!(
            parse_list("CAP_NET_ADMIN,cap_sys_time").unwrap(),
            CAP_NET_ADMIN | bit(25)
        );
        assert_eq!(parse_list("all").unwrap(), ALL);
        assert!(parse_list("CAP_CHOWN,bogus").is_err());
    }

    #[test]
    fn default_set_matches_nspawn() {
        assert_eq!(names(DEFAULT).len(), 26);
        assert_eq!(DEFAULT & CAP_NET_ADMIN, 0);
        for absent in [
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_TIME",
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_NET_ADMIN",
        ] {
            assert!(!names(DEFAULT).contains(&absent), "{absent}");
        }
    }
}
