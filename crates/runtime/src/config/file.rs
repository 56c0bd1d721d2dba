//! `.nspawn` settings files (systemd.nspawn(5)) as a key table on the
//! shared unit-file layer ([`netspawn_common::unitfile::table`]), after
//! systemd's `nspawn-gperf.gperf`: one row per key, each a small parser into
//! a field of [`Settings`]. Values use the command line's parsers
//! ([`crate::spec`]), so `Bind=` and `--bind=` accept the same strings.
//!
//! Differences from systemd, on purpose: an invalid value is an error
//! (`FILE:LINE: message`) instead of a logged-and-ignored line, so a typo
//! never silently changes what a container may do. Unknown sections and
//! keys are warnings, as in systemd; so is an unknown system call name in
//! `SystemCallFilter=` (skipped, as systemd does). Keys that systemd knows
//! and netspawn does not implement (e.g. `BindUser=`) are warnings that say
//! so.

use std::path::{Path, PathBuf};

use netspawn_common::names::{check_machine_name, ifname_is_valid};
use netspawn_common::unitfile::table::{self, Key, Schema};
use netspawn_common::unitfile::values::{self, tristate};
use netspawn_common::unitfile::{self, WHITESPACE};
use thiserror::Error;

use super::model::{Ownership, PrivateUsers, Settings, StartMode, Volatile, RLIMITS};
use crate::caps;
use crate::spec;

/// Longest logical line, as systemd's `LONG_LINE_MAX`.
pub use netspawn_common::unitfile::LONG_LINE_MAX;

/// A settings file that cannot be used. `Display` is exactly `FILE:LINE: msg`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}:{line}: {msg}", file.display())]
pub struct SettingsError {
    pub file: PathBuf,
    /// 1-based; for a line continued with backslashes, the last physical line.
    pub line: usize,
    pub msg: String,
}

/// One file's settings and its warnings (each `FILE:LINE: ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub settings: Settings,
    pub warnings: Vec<String>,
    /// The lines that set a key systemd knows and netspawn does not
    /// implement (`FILE:LINE: Key 'BindUser' in section 'Files' is not
    /// supported by netspawn`): a trusted file with one is refused, an
    /// untrusted one warns (they are among `warnings` too).
    pub unsupported: Vec<String>,
}

type Row = Result<Option<String>, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn boot(s: &mut Settings, v: &str) -> Row {
    // systemd's config_parse_boot(): yes wins unless ProcessTwo=yes came first.
    let b = values::boolean(v)?;
    match (b, s.start_mode) {
        (true, Some(StartMode::Pid2)) => {
            return Ok(Some(
                "Conflicting Boot= and ProcessTwo=yes, ignoring Boot=.".into(),
            ))
        }
        (true, _) => s.start_mode = Some(StartMode::Boot),
        (false, Some(StartMode::Pid2)) => {}
        (false, _) => s.start_mode = Some(StartMode::Pid1),
    }
    Ok(None)
}

fn process_two(s: &mut Settings, v: &str) -> Row {
    let b = values::boolean(v)?;
    match (b, s.start_mode) {
        (true, Some(StartMode::Boot)) => {
            return Ok(Some(
                "Conflicting ProcessTwo= and Boot=yes, ignoring ProcessTwo=.".into(),
            ))
        }
        (true, _) => s.start_mode = Some(StartMode::Pid2),
        (false, Some(StartMode::Boot)) => {}
        (false, _) => s.start_mode = Some(StartMode::Pid1),
    }
    Ok(None)
}

fn parameters(s: &mut Settings, v: &str) -> Row {
    if v.is_empty() {
        s.parameters.clear();
    } else {
        s.parameters.extend(spec::split_words(v).map_err(err)?);
    }
    Ok(None)
}

fn environment(s: &mut Settings, v: &str) -> Row {
    if v.is_empty() {
        s.environment.clear();
    }
    for word in spec::split_words(v).map_err(err)? {
        let (k, val) = spec::parse_env_assignment(&word).map_err(err)?;
        match s.environment.iter_mut().find(|(old, _)| *old == k) {
            Some(slot) => slot.1 = val,
            None => s.environment.push((k, val)),
        }
    }
    Ok(None)
}

fn working_directory(s: &mut Settings, v: &str) -> Row {
    s.working_directory = if v.is_empty() {
        None
    } else {
        Some(spec::parse_absolute_path(v).map_err(err)?)
    };
    Ok(None)
}

fn hostname(s: &mut Settings, v: &str) -> Row {
    s.hostname = if v.is_empty() {
        None
    } else {
        check_machine_name(v).map_err(|e| format!("hostname {v:?}: {e}"))?;
        Some(v.to_string())
    };
    Ok(None)
}

fn capability(s: &mut Settings, key: &str, v: &str) -> Row {
    let set = caps::parse_list(v).map_err(err)?;
    // An empty list adds nothing, as in systemd.
    if !v.trim_matches(WHITESPACE).is_empty() {
        let slot = if key == "Capability" {
            &mut s.capability
        } else {
            &mut s.drop_capability
        };
        *slot = Some(slot.unwrap_or(0) | set);
    }
    Ok(None)
}

fn syscall_filter(s: &mut Settings, v: &str) -> Row {
    if v.is_empty() {
        s.syscall_filter = Default::default();
        return Ok(None);
    }
    // Unknown names are warned about and skipped, as systemd does.
    let (unknown, filter) = spec::parse_syscall_filter_lenient(v, s.syscall_filter.clone())?;
    s.syscall_filter = filter;
    Ok((!unknown.is_empty()).then(|| {
        format!(
            "Unknown system call {}, ignoring.",
            unknown
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }))
}

fn private_users(s: &mut Settings, v: &str) -> Row {
    // In a file a boolean comes first (systemd's config_parse_private_users).
    s.private_users = Some(match unitfile::parse_boolean(v) {
        Some(true) => PrivateUsers::Yes,
        Some(false) => PrivateUsers::No,
        None => PrivateUsers::parse(v)?,
    });
    Ok(None)
}

fn kill_signal(s: &mut Settings, v: &str) -> Row {
    s.kill_signal = Some(spec::parse_signal(v).ok_or_else(|| format!("{v:?} is not a signal"))?);
    Ok(None)
}

fn notify_ready(s: &mut Settings, v: &str) -> Row {
    s.notify_ready = tristate(v)?;
    Ok(None)
}

fn user(s: &mut Settings, v: &str) -> Row {
    s.user = if v.is_empty() {
        None
    } else {
        Some(spec::parse_user(v).map_err(err)?)
    };
    Ok(None)
}

fn no_new_privileges(s: &mut Settings, v: &str) -> Row {
    s.no_new_privileges = tristate(v)?;
    Ok(None)
}

fn limit(s: &mut Settings, key: &str, v: &str) -> Row {
    let name = key.strip_prefix("Limit").unwrap_or(key);
    let i = RLIMITS
        .iter()
        .position(|(n, _)| *n == name)
        .ok_or_else(|| format!("unknown resource {name}"))?;
    s.rlimits[i] = if v.is_empty() {
        None
    } else {
        Some(spec::parse_rlimit(i, v).map_err(err)?)
    };
    Ok(None)
}

fn oom_score_adjust(s: &mut Settings, v: &str) -> Row {
    s.oom_score_adjust = if v.is_empty() {
        None
    } else {
        Some(spec::parse_oom_score_adjust(v).map_err(err)?)
    };
    Ok(None)
}

fn cpu_affinity(s: &mut Settings, v: &str) -> Row {
    // Empty clears; lines accumulate (systemd's config_parse_cpu_affinity).
    if v.is_empty() {
        s.cpu_affinity = None;
    } else {
        let set = spec::parse_cpu_set(v).map_err(err)?;
        s.cpu_affinity
            .get_or_insert_with(Default::default)
            .extend(set);
    }
    Ok(None)
}

fn machine_id(s: &mut Settings, v: &str) -> Row {
    s.machine_id = if v.is_empty() {
        None
    } else {
        Some(spec::parse_machine_id(v).map_err(err)?)
    };
    Ok(None)
}

fn ephemeral(s: &mut Settings, v: &str) -> Row {
    s.ephemeral = tristate(v)?;
    Ok(None)
}

fn read_only(s: &mut Settings, v: &str) -> Row {
    s.read_only = tristate(v)?;
    Ok(None)
}

fn volatile(s: &mut Settings, v: &str) -> Row {
    s.volatile = if v.is_empty() {
        None
    } else {
        Some(Volatile::parse(v)?)
    };
    Ok(None)
}

fn bind(s: &mut Settings, key: &str, v: &str) -> Row {
    s.binds
        .push(spec::parse_bind(v, key == "BindReadOnly").map_err(err)?);
    Ok(None)
}

fn overlay(s: &mut Settings, key: &str, v: &str) -> Row {
    s.overlays
        .push(spec::parse_overlay(v, key == "OverlayReadOnly").map_err(err)?);
    Ok(None)
}

fn tmpfs(s: &mut Settings, v: &str) -> Row {
    s.tmpfs.push(spec::parse_tmpfs(v).map_err(err)?);
    Ok(None)
}

fn inaccessible(s: &mut Settings, v: &str) -> Row {
    if v.is_empty() {
        s.inaccessible.clear();
    } else {
        let p = spec::parse_absolute_path(v).map_err(err)?;
        if !s.inaccessible.contains(&p) {
            s.inaccessible.push(p);
        }
    }
    Ok(None)
}

fn ownership(s: &mut Settings, v: &str) -> Row {
    s.private_users_ownership = if v.is_empty() {
        None
    } else {
        Some(Ownership::parse(v)?)
    };
    Ok(None)
}

fn users_chown(s: &mut Settings, v: &str) -> Row {
    // The older spelling of PrivateUsersOwnership=chown/off.
    s.private_users_ownership = Some(if values::boolean(v)? {
        Ownership::Chown
    } else {
        Ownership::Off
    });
    Ok(None)
}

fn private(s: &mut Settings, v: &str) -> Row {
    s.private_network = tristate(v)?;
    Ok(None)
}

fn virtual_ethernet(s: &mut Settings, v: &str) -> Row {
    s.virtual_ethernet = tristate(v)?;
    Ok(None)
}

fn veth_extra(s: &mut Settings, v: &str) -> Row {
    if v.is_empty() {
        s.virtual_ethernet_extra.clear();
    } else {
        let pair = spec::parse_veth_extra(v).map_err(err)?;
        if !s.virtual_ethernet_extra.contains(&pair) {
            s.virtual_ethernet_extra.push(pair);
        }
    }
    Ok(None)
}

fn bridge(s: &mut Settings, v: &str) -> Row {
    s.bridge = if v.is_empty() {
        None
    } else {
        Some(spec::parse_ifname(v).map_err(err)?)
    };
    Ok(None)
}

fn zone(s: &mut Settings, v: &str) -> Row {
    s.zone = if v.is_empty() {
        None
    } else {
        if !ifname_is_valid(&format!("vz-{v}")) {
            return Err(format!(
                "zone {v:?}: \"vz-{v}\" is not a valid interface name \
                 (at most 12 characters, no '/', ':' or whitespace)"
            ));
        }
        Some(v.to_string())
    };
    Ok(None)
}

fn port(s: &mut Settings, v: &str) -> Row {
    let p = spec::parse_port(v).map_err(err)?;
    if s.ports
        .iter()
        .any(|q| q.proto == p.proto && q.host_port == p.host_port)
    {
        return Ok(Some(format!("Duplicate port specification, ignoring: {v}")));
    }
    s.ports.push(p);
    Ok(None)
}

fn links(s: &mut Settings, key: &str, v: &str) -> Row {
    let list = match key {
        "Interface" => &mut s.interfaces,
        "MACVLAN" => &mut s.macvlan,
        _ => &mut s.ipvlan,
    };
    if v.is_empty() {
        list.clear();
    }
    for word in spec::split_words(v).map_err(err)? {
        let name = spec::parse_ifname(&word).map_err(err)?;
        if !list.contains(&name) {
            list.push(name);
        }
    }
    Ok(None)
}

/// The `.nspawn` format: systemd's `nspawn-gperf.gperf`, row for row.
static SCHEMA: Schema<Settings> = Schema {
    sections: &["Exec", "Files", "Network"],
    ignored_sections: &[],
    ignored_section: |s| format!("Unknown section '{s}'. Ignoring."),
    keys: &[
        Key::parse("Exec", "Boot", boot),
        Key::parse("Exec", "ProcessTwo", process_two),
        Key::parse("Exec", "Parameters", parameters),
        Key::parse("Exec", "Environment", environment),
        Key::parse("Exec", "User", user),
        Key::parse_key("Exec", "Capability", capability),
        Key::parse_key("Exec", "DropCapability", capability),
        Key::ignored("Exec", "AmbientCapability"),
        Key::parse("Exec", "KillSignal", kill_signal),
        Key::ignored("Exec", "Personality"),
        Key::parse("Exec", "MachineID", machine_id),
        Key::parse("Exec", "WorkingDirectory", working_directory),
        Key::ignored("Exec", "PivotRoot"),
        Key::parse("Exec", "PrivateUsers", private_users),
        Key::parse("Exec", "NotifyReady", notify_ready),
        Key::parse("Exec", "SystemCallFilter", syscall_filter),
        Key::parse_key("Exec", "LimitCPU", limit),
        Key::parse_key("Exec", "LimitFSIZE", limit),
        Key::parse_key("Exec", "LimitDATA", limit),
        Key::parse_key("Exec", "LimitSTACK", limit),
        Key::parse_key("Exec", "LimitCORE", limit),
        Key::parse_key("Exec", "LimitRSS", limit),
        Key::parse_key("Exec", "LimitNOFILE", limit),
        Key::parse_key("Exec", "LimitAS", limit),
        Key::parse_key("Exec", "LimitNPROC", limit),
        Key::parse_key("Exec", "LimitMEMLOCK", limit),
        Key::parse_key("Exec", "LimitLOCKS", limit),
        Key::parse_key("Exec", "LimitSIGPENDING", limit),
        Key::parse_key("Exec", "LimitMSGQUEUE", limit),
        Key::parse_key("Exec", "LimitNICE", limit),
        Key::parse_key("Exec", "LimitRTPRIO", limit),
        Key::parse_key("Exec", "LimitRTTIME", limit),
        Key::parse("Exec", "Hostname", hostname),
        Key::parse("Exec", "NoNewPrivileges", no_new_privileges),
        Key::parse("Exec", "OOMScoreAdjust", oom_score_adjust),
        Key::parse("Exec", "CPUAffinity", cpu_affinity),
        Key::ignored("Exec", "ResolvConf"),
        Key::ignored("Exec", "LinkJournal"),
        Key::ignored("Exec", "Timezone"),
        Key::ignored("Exec", "SuppressSync"),
        Key::parse("Exec", "Ephemeral", ephemeral),
        Key::parse("Files", "ReadOnly", read_only),
        Key::parse("Files", "Volatile", volatile),
        Key::parse_key("Files", "Bind", bind),
        Key::parse_key("Files", "BindReadOnly", bind),
        Key::parse("Files", "TemporaryFileSystem", tmpfs),
        Key::parse("Files", "Inaccessible", inaccessible),
        Key::parse_key("Files", "Overlay", overlay),
        Key::parse_key("Files", "OverlayReadOnly", overlay),
        Key::parse("Files", "PrivateUsersOwnership", ownership),
        Key::parse("Files", "PrivateUsersChown", users_chown),
        Key::ignored("Files", "BindUser"),
        Key::parse("Network", "Private", private),
        Key::parse("Network", "VirtualEthernet", virtual_ethernet),
        Key::parse("Network", "VirtualEthernetExtra", veth_extra),
        Key::parse("Network", "Bridge", bridge),
        Key::parse("Network", "Zone", zone),
        Key::parse("Network", "Port", port),
        Key::parse_key("Network", "Interface", links),
        Key::parse_key("Network", "MACVLAN", links),
        Key::parse_key("Network", "IPVLAN", links),
    ],
    ignored_key: |k, s| {
        format!("Key '{k}' in section '{s}' is not supported by netspawn, ignoring.")
    },
};

/// Parses the text of a `.nspawn` file; `file` is used in messages only.
pub fn parse(text: &str, file: &Path) -> Result<Parsed, SettingsError> {
    let mut settings = Settings::default();
    let warnings = table::parse(text, &SCHEMA, &mut settings).map_err(|e| SettingsError {
        file: file.to_path_buf(),
        line: e.line,
        msg: e.msg,
    })?;
    let at = |line: usize, msg: &str| format!("{}:{line}: {msg}", file.display());
    Ok(Parsed {
        settings,
        unsupported: warnings
            .iter()
            .filter(|w| w.ignored_key)
            .map(|w| at(w.line, w.msg.trim_end_matches(", ignoring.")))
            .collect(),
        warnings: warnings.iter().map(|w| at(w.line, &w.msg)).collect(),
    })
}

/// Like [`parse`], for the raw bytes of a file: a line that is not UTF-8 is
/// an error naming that line.
pub fn parse_bytes(data: &[u8], file: &Path) -> Result<Parsed, SettingsError> {
    let text = unitfile::decode(data).map_err(|e| SettingsError {
        file: file.to_path_buf(),
        line: e.line,
        msg: e.msg,
    })?;
    parse(text, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{self, CapSet};
    use crate::config::merge::drop_privileged;
    use crate::config::model::{Ownership, PrivateUsers, Volatile};
    use crate::spec::{PortSpec, Proto};

    fn file() -> &'static Path {
        Path::new("/etc/systemd/nspawn/web.nspawn")
    }

    fn ok(text: &str) -> Parsed {
        parse(text, file()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn settings(text: &str) -> Settings {
        let p = ok(text);
        assert!(p.warnings.is_empty(), "{text:?}: {:?}", p.warnings);
        p.settings
    }

    fn cap(names: &str) -> Option<CapSet> {
        Some(caps::parse_list(names).unwrap())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_key() {
        type Check = fn(&Settings) -> bool;
        let cases: &[(&str, Check)] = &[
            ("[Exec]\nBoot=yes", |s| {
                s.start_mode == Some(StartMode::Boot)
            }),
            ("[Exec]\nBoot=off", |s| {
                s.start_mode == Some(StartMode::Pid1)
            }),
            ("[Exec]\nProcessTwo=1", |s| {
                s.start_mode == Some(StartMode::Pid2)
            }),
            ("[Exec]\nParameters=/bin/sh -c 'echo hi'", |s| {
                s.parameters == strings(&["/bin/sh", "-c", "echo hi"])
            }),
            ("[Exec]\nParameters=a\nParameters=\"b c\"", |s| {
                s.parameters == strings(&["a", "b c"])
            }),
            ("[Exec]\nParameters=a\nParameters=\nParameters=b", |s| {
                s.parameters == strings(&["b"])
            }),
            (
                "[Exec]\nEnvironment=A=1 \"B=two words\"\nEnvironment=C=3",
                |s| {
                    s.environment
                        == vec![
                            ("A".into(), "1".into()),
                            ("B".into(), "two words".into()),
                            ("C".into(), "3".into()),
                        ]
                },
            ),
            ("[Exec]\nEnvironment=A=1 B=2\nEnvironment=A=3", |s| {
                s.environment == vec![("A".into(), "3".into()), ("B".into(), "2".into())]
            }),
            ("[Exec]\nEnvironment=A=1\nEnvironment=", |s| {
                s.environment.is_empty()
            }),
            ("[Exec]\nWorkingDirectory=/srv//app/", |s| {
                s.working_directory.as_deref() == Some(Path::new("/srv/app"))
            }),
            ("[Exec]\nHostname=web-1.example", |s| {
                s.hostname.as_deref() == Some("web-1.example")
            }),
            (
                "[Exec]\nCapability=CAP_NET_ADMIN\nCapability=sys_time",
                |s| s.capability == cap("CAP_NET_ADMIN CAP_SYS_TIME"),
            ),
            ("[Exec]\nDropCapability=CAP_MKNOD CAP_SYS_ADMIN", |s| {
                s.drop_capability == cap("CAP_MKNOD CAP_SYS_ADMIN") && s.capability.is_none()
            }),
            ("[Exec]\nCapability=all", |s| {
                s.capability == Some(caps::ALL)
            }),
            ("[Exec]\nCapability=", |s| s.capability.is_none()),
            (
                "[Exec]\nSystemCallFilter=@system-service\nSystemCallFilter=~@mount kexec_load",
                |s| {
                    s.syscall_filter.allow == strings(&["@system-service"])
                        && s.syscall_filter.deny == strings(&["@mount", "kexec_load"])
                },
            ),
            (
                "[Exec]\nSystemCallFilter=uname\nSystemCallFilter=\nSystemCallFilter=getpid",
                |s| s.syscall_filter.allow == strings(&["getpid"]),
            ),
            ("[Exec]\nPrivateUsers=pick", |s| {
                s.private_users == Some(PrivateUsers::Pick)
            }),
            ("[Exec]\nPrivateUsers=65536:65536", |s| {
                s.private_users
                    == Some(PrivateUsers::Base {
                        shift: 65536,
                        range: 65536,
                    })
            }),
            ("[Exec]\nPrivateUsers=no", |s| {
                s.private_users == Some(PrivateUsers::No)
            }),
            ("[Exec]\nKillSignal=SIGRTMIN+3", |s| {
                s.kill_signal == Some(libc::SIGRTMIN() + 3)
            }),
            ("[Exec]\nKillSignal=TERM", |s| {
                s.kill_signal == Some(libc::SIGTERM)
            }),
            ("[Exec]\nKillSignal=9", |s| s.kill_signal == Some(9)),
            ("[Exec]\nNotifyReady=yes", |s| s.notify_ready == Some(true)),
            ("[Exec]\nNotifyReady=yes\nNotifyReady=", |s| {
                s.notify_ready.is_none()
            }),
            ("[Files]\nReadOnly=true", |s| s.read_only == Some(true)),
            ("[Files]\nVolatile=state", |s| {
                s.volatile == Some(Volatile::State)
            }),
            ("[Files]\nVolatile=on", |s| {
                s.volatile == Some(Volatile::Yes)
            }),
            ("[Files]\nVolatile=overlay", |s| {
                s.volatile == Some(Volatile::Overlay)
            }),
            ("[Files]\nPrivateUsersOwnership=map", |s| {
                s.private_users_ownership == Some(Ownership::Map)
            }),
            ("[Files]\nPrivateUsersOwnership=yes", |s| {
                s.private_users_ownership == Some(Ownership::Auto)
            }),
            ("[Files]\nPrivateUsersChown=yes", |s| {
                s.private_users_ownership == Some(Ownership::Chown)
            }),
            (
                "[Files]\nBind=/srv/data:/data\nBindReadOnly=/etc/ssl:/etc/ssl:norbind",
                |s| {
                    s.binds.len() == 2
                        && s.binds[0].dest == Path::new("/data")
                        && !s.binds[0].read_only
                        && s.binds[1].read_only
                        && !s.binds[1].recursive
                },
            ),
            (
                "[Files]\nTemporaryFileSystem=/tmp\nTemporaryFileSystem=/run/x:mode=0700",
                |s| {
                    s.tmpfs.len() == 2
                        && s.tmpfs[0].options == "mode=0755"
                        && s.tmpfs[1].options == "mode=0700"
                },
            ),
            ("[Network]\nPrivate=yes", |s| {
                s.private_network == Some(true)
            }),
            ("[Network]\nVirtualEthernet=no", |s| {
                s.virtual_ethernet == Some(false) && s.network_configured() && !s.private_network()
            }),
            (
                "[Network]\nVirtualEthernetExtra=vx0:eth1\nVirtualEthernetExtra=vy",
                |s| {
                    s.virtual_ethernet_extra
                        == vec![("vx0".into(), "eth1".into()), ("vy".into(), "vy".into())]
                },
            ),
            ("[Network]\nBridge=br0", |s| {
                s.bridge.as_deref() == Some("br0") && s.network_veth() && s.private_network()
            }),
            ("[Network]\nZone=lab", |s| {
                s.zone.as_deref() == Some("lab") && s.network_veth()
            }),
            ("[Network]\nZone=abcdefghijkl", |s| s.zone.is_some()),
            ("[Network]\nPort=80\nPort=udp:5353:53", |s| {
                s.ports
                    == vec![
                        PortSpec {
                            proto: Proto::Tcp,
                            host_port: 80,
                            container_port: 80,
                        },
                        PortSpec {
                            proto: Proto::Udp,
                            host_port: 5353,
                            container_port: 53,
                        },
                    ]
            }),
            ("[Network]\nInterface=eth1 eth2\nInterface=eth3 eth1", |s| {
                s.interfaces == strings(&["eth1", "eth2", "eth3"]) && s.private_network()
            }),
            ("[Network]\nMACVLAN=eth0", |s| {
                s.macvlan == strings(&["eth0"])
            }),
            ("[Network]\nIPVLAN=eth0 eth1", |s| {
                s.ipvlan == strings(&["eth0", "eth1"])
            }),
            ("[Network]\nIPVLAN=eth0\nIPVLAN=", |s| s.ipvlan.is_empty()),
        ];
        for (text, check) in cases {
            let s = settings(text);
            assert!(check(&s), "{text:?} gave {s:#?}");
        }
    }

    #[test]
    fn exec_settings_keys() {
        type Check = fn(&Settings) -> bool;
        let cases: &[(&str, Check)] = &[
            ("[Exec]\nUser=nobody", |s| {
                s.user.as_deref() == Some("nobody")
            }),
            ("[Exec]\nUser=1000\nUser=", |s| s.user.is_none()),
            ("[Exec]\nNoNewPrivileges=yes", |s| {
                s.no_new_privileges == Some(true)
            }),
            ("[Exec]\nLimitNOFILE=1024:4096", |s| {
                s.rlimits[6]
                    == Some(crate::config::Rlimit {
                        soft: 1024,
                        hard: 4096,
                    })
            }),
            ("[Exec]\nLimitCORE=infinity", |s| {
                s.rlimits[4].is_some_and(|l| l.soft == u64::MAX && l.hard == u64::MAX)
            }),
            ("[Exec]\nLimitFSIZE=1M:2G", |s| {
                s.rlimits[1].is_some_and(|l| l.soft == 1 << 20 && l.hard == 2 << 30)
            }),
            ("[Exec]\nLimitCPU=1min", |s| {
                s.rlimits[0].is_some_and(|l| l.soft == 60)
            }),
            ("[Exec]\nLimitNICE=-5", |s| {
                s.rlimits[13].is_some_and(|l| l.soft == 25)
            }),
            ("[Exec]\nOOMScoreAdjust=-500", |s| {
                s.oom_score_adjust == Some(-500)
            }),
            ("[Exec]\nCPUAffinity=0-2,5\nCPUAffinity=7", |s| {
                s.cpu_affinity == Some([0, 1, 2, 5, 7].into_iter().collect())
            }),
            ("[Exec]\nCPUAffinity=1\nCPUAffinity=", |s| {
                s.cpu_affinity.is_none()
            }),
            ("[Exec]\nMachineID=0123456789ABCDEF0123456789abcdef", |s| {
                s.machine_id.as_deref() == Some("0123456789abcdef0123456789abcdef")
            }),
            ("[Exec]\nEphemeral=yes", |s| s.ephemeral == Some(true)),
            (
                "[Files]\nInaccessible=/srv/secret\nInaccessible=/etc//shadow",
                |s| {
                    s.inaccessible
                        == vec![PathBuf::from("/srv/secret"), PathBuf::from("/etc/shadow")]
                },
            ),
            ("[Exec]\nPrivateUsers=0", |s| {
                s.private_users == Some(PrivateUsers::No)
            }),
            ("[Exec]\nPrivateUsers=1000", |s| {
                s.private_users
                    == Some(PrivateUsers::Base {
                        shift: 1000,
                        range: 65536,
                    })
            }),
        ];
        for (text, check) in cases {
            let s = settings(text);
            assert!(check(&s), "{text:?} gave {s:#?}");
        }
        let bad: &[(&str, &str)] = &[
            ("[Exec]\nUser=a:b\n", "Invalid User= value"),
            ("[Exec]\nNoNewPrivileges=maybe\n", "is not a boolean"),
            ("[Exec]\nLimitNOFILE=lots\n", "Invalid LimitNOFILE= value"),
            ("[Exec]\nLimitNOFILE=10:5\n", "soft limit is above"),
            ("[Exec]\nOOMScoreAdjust=1001\n", "Invalid OOMScoreAdjust="),
            ("[Exec]\nCPUAffinity=3-1\n", "Invalid CPUAffinity="),
            ("[Exec]\nMachineID=xyz\n", "Invalid MachineID="),
            ("[Files]\nInaccessible=rel\n", "not absolute"),
        ];
        for (text, needle) in bad {
            let e = parse(text, file()).expect_err(text);
            assert!(e.msg.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_system_calls_are_warned_about_and_skipped() {
        let p = ok("[Exec]\nSystemCallFilter=uname no_such_call @no-such-group\n");
        assert_eq!(p.settings.syscall_filter.allow, strings(&["uname"]));
        assert_eq!(
            p.warnings,
            vec![format!(
                "{}:2: Unknown system call \"no_such_call\", \"@no-such-group\", ignoring.",
                file().display()
            )]
        );
    }

    #[test]
    fn empty_file_sets_nothing() {
        for text in [
            "",
            "\n\n",
            "# only a comment\n; another\n",
            "[Exec]\n[Files]\n[Network]\n",
        ] {
            assert_eq!(settings(text), Settings::default(), "{text:?}");
        }
    }

    #[test]
    fn syntax() {
        let text = "\u{feff}# comment\n\
                    ; comment\n\
                    \n\
                    [Exec]\n\
                    \x20 Boot  =  yes \x20\n\
                    \tHostname=\tweb\t\r\n\
                    Parameters=a \\\n\
                    \x20 b \\\n\
                    # a comment inside a continuation is dropped\n\
                    \x20 c\n\
                    [Network]\rZone=lab\r\n";
        let s = settings(text);
        assert_eq!(s.start_mode, Some(StartMode::Boot));
        assert_eq!(s.hostname.as_deref(), Some("web"));
        assert_eq!(s.parameters, strings(&["a", "b", "c"]));
        assert_eq!(s.zone.as_deref(), Some("lab"));
    }

    #[test]
    fn escaped_backslash_does_not_continue() {
        let s = settings("[Exec]\nParameters=a\\\\\nBoot=yes\n");
        assert_eq!(s.parameters, strings(&["a\\"]));
        assert_eq!(s.start_mode, Some(StartMode::Boot));
    }

    #[test]
    fn continuation_at_end_of_file() {
        let s = settings("[Exec]\nParameters=a \\\n b \\");
        assert_eq!(s.parameters, strings(&["a", "b"]));
    }

    #[test]
    fn errors_carry_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[Exec]\nBoot=maybe\n",
                2,
                "Invalid Boot= value: \"maybe\" is not a boolean",
            ),
            ("Boot=yes\n", 1, "Assignment outside of any section"),
            ("\n\n[Exec]\nBoot\n", 4, "Missing '='"),
            ("[Exec]\n=yes\n", 2, "Missing key name"),
            ("[Exec\n", 1, "Invalid section header"),
            ("[Ex\"ec]\n", 1, "Bad characters in section header"),
            (
                "[Network]\n# c\n\nPort=0\n",
                4,
                "Invalid Port= value: invalid port forward \"0\"",
            ),
            ("[Network]\nPort=http\n", 2, "not a port number"),
            // Continuations: the error names the last physical line.
            (
                "[Exec]\nParameters=a \\\nb \\\n\"c\n",
                4,
                "unterminated quote",
            ),
            ("[Exec]\nBoot=\\\n# comment\nmaybe\n", 4, "is not a boolean"),
            // \r\n and lone \r count as line ends.
            ("[Exec]\r\nBoot=yes\r\nBoot=x\r\n", 3, "is not a boolean"),
            ("[Exec]\rBoot=x", 2, "is not a boolean"),
            ("[Exec]\nBoot=\n", 2, "\"\" is not a boolean"),
            ("[Exec]\nProcessTwo=2\n", 2, "Invalid ProcessTwo= value"),
            ("[Exec]\nHostname=-bad\n", 2, "Invalid Hostname= value"),
            ("[Exec]\nWorkingDirectory=srv\n", 2, "not absolute"),
            (
                "[Exec]\nCapability=CAP_FLY\n",
                2,
                "unknown capability \"CAP_FLY\"",
            ),
            (
                "[Exec]\nEnvironment=1A=x\n",
                2,
                "invalid environment assignment \"1A=x\"",
            ),
            ("[Exec]\nEnvironment=\"A=x\n", 2, "unterminated quote"),
            (
                "[Exec]\nPrivateUsers=lots\n",
                2,
                "Invalid PrivateUsers= value",
            ),
            (
                "[Exec]\nPrivateUsers=1:0\n",
                2,
                "Invalid PrivateUsers= value",
            ),
            (
                "[Exec]\nPrivateUsers=4294967295:2\n",
                2,
                "Invalid PrivateUsers= value",
            ),
            (
                "[Exec]\nKillSignal=SIGFOO\n",
                2,
                "\"SIGFOO\" is not a signal",
            ),
            ("[Exec]\nKillSignal=RTMIN+99\n", 2, "is not a signal"),
            ("[Exec]\nKillSignal=\n", 2, "is not a signal"),
            ("[Exec]\nKillSignal=0\n", 2, "is not a signal"),
            ("[Exec]\nSystemCallFilter=\"x\n", 2, "unterminated quote"),
            (
                "[Files]\nVolatile=sometimes\n",
                2,
                "Invalid Volatile= value",
            ),
            (
                "[Files]\nBind=relative\n",
                2,
                "invalid bind mount \"relative\"",
            ),
            ("[Files]\nBind=\n", 2, "invalid bind mount"),
            ("[Files]\nBind=/a:/b:idmap\n", 2, "not supported"),
            (
                "[Files]\nTemporaryFileSystem=tmp\n",
                2,
                "invalid tmpfs mount",
            ),
            (
                "[Files]\nPrivateUsersOwnership=steal\n",
                2,
                "Invalid PrivateUsersOwnership=",
            ),
            (
                "[Files]\nPrivateUsersChown=x\n",
                2,
                "Invalid PrivateUsersChown=",
            ),
            ("[Network]\nPrivate=perhaps\n", 2, "Invalid Private= value"),
            (
                "[Network]\nBridge=br/0\n",
                2,
                "invalid interface name \"br/0\"",
            ),
            (
                "[Network]\nZone=abcdefghijklm\n",
                2,
                "\"vz-abcdefghijklm\" is not a valid",
            ),
            (
                "[Network]\nInterface=eth0 a:b\n",
                2,
                "invalid interface name \"a:b\"",
            ),
            (
                "[Network]\nMACVLAN=0123456789abcdef\n",
                2,
                "invalid interface name",
            ),
            (
                "[Network]\nVirtualEthernetExtra=a:b:c\n",
                2,
                "invalid extra veth link",
            ),
            ("[Exec]\nBoot=yes\nHostname=a\0b\n", 3, "NUL byte"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text, file()).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.msg.contains(needle), "{text:?}: {e}");
            let shown = e.to_string();
            assert_eq!(
                shown,
                format!("/etc/systemd/nspawn/web.nspawn:{line}: {}", e.msg)
            );
            assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
        }
    }

    #[test]
    fn warnings_for_unknown_and_unsupported() {
        let text = "[Exec]\n\
                    Boot=yes\n\
                    Frobnicate=1\n\
                    boot=yes\n\
                    Personality=x86\n\
                    LimitNOFILE=1024\n\
                    X-Custom=whatever\n\
                    [Weird]\n\
                    Anything=goes\n\
                    no equals sign here is fine in an ignored section\n\
                    [X-Vendor]\n\
                    Key=1\n\
                    [Files]\n\
                    BindUser=root\n\
                    [Network]\n\
                    Port=80\n\
                    Port=80:8080\n";
        let p = ok(text);
        let f = "/etc/systemd/nspawn/web.nspawn";
        assert_eq!(
            p.warnings,
            vec![
                format!("{f}:3: Unknown key name 'Frobnicate' in section 'Exec', ignoring."),
                format!("{f}:4: Unknown key name 'boot' in section 'Exec', ignoring."),
                format!("{f}:5: Key 'Personality' in section 'Exec' is not supported by netspawn, ignoring."),
                format!("{f}:8: Unknown section 'Weird'. Ignoring."),
                format!("{f}:14: Key 'BindUser' in section 'Files' is not supported by netspawn, ignoring."),
                format!("{f}:17: Duplicate port specification, ignoring: 80:8080"),
            ]
        );
        assert_eq!(p.settings.start_mode, Some(StartMode::Boot));
        assert_eq!(p.settings.ports.len(), 1);
    }

    #[test]
    fn unsupported_keys_are_listed_for_refusal() {
        let p = ok("[Exec]\nBoot=yes\nBogus=1\n[Files]\nBindUser=root\n");
        assert_eq!(
            p.unsupported,
            vec![format!(
                "{}:5: Key 'BindUser' in section 'Files' is not supported by netspawn",
                file().display()
            )]
        );
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    }

    #[test]
    fn warnings_stay_on_one_line() {
        let p = ok("[Exec]\nK\u{b}ey\u{2028}=1\n");
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("'K\\u{b}ey\\u{2028}'"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn boot_and_process_two_conflict() {
        let p = ok("[Exec]\nBoot=yes\nProcessTwo=yes\n");
        assert_eq!(p.settings.start_mode, Some(StartMode::Boot));
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains(":3: Conflicting"),
            "{:?}",
            p.warnings
        );

        let p = ok("[Exec]\nProcessTwo=yes\nBoot=yes\n");
        assert_eq!(p.settings.start_mode, Some(StartMode::Pid2));
        assert_eq!(p.warnings.len(), 1);

        assert_eq!(
            settings("[Exec]\nBoot=no\n").start_mode,
            Some(StartMode::Pid1)
        );
        assert_eq!(settings("[Exec]\nParameters=x\n").start_mode, None);
        assert_eq!(
            settings("[Exec]\nProcessTwo=yes\nBoot=no\n").start_mode,
            Some(StartMode::Pid2)
        );
    }

    #[test]
    fn parse_bytes_reports_bad_utf8_line() {
        let e = parse_bytes(b"[Exec]\r\nBoot=yes\n\xff\n", file()).unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_bytes(b"\xc3", file()).unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(
            parse_bytes(b"[Exec]\nBoot=1\n", file())
                .unwrap()
                .settings
                .start_mode,
            Some(StartMode::Boot)
        );
    }

    #[test]
    fn long_lines_are_refused() {
        let mut text = String::from("[Exec]\nParameters=");
        text.push_str(&"x".repeat(LONG_LINE_MAX));
        let e = parse(&text, file()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("longer than"), "{e}");
    }

    const PRIVILEGED: &str = "[Exec]\n\
        Boot=yes\n\
        Environment=A=1\n\
        Capability=CAP_SYS_TIME\n\
        DropCapability=CAP_MKNOD\n\
        PrivateUsers=pick\n\
        SystemCallFilter=kexec_load\n\
        KillSignal=SIGTERM\n\
        [Files]\n\
        ReadOnly=yes\n\
        Bind=/srv\n\
        TemporaryFileSystem=/tmp\n\
        PrivateUsersOwnership=chown\n\
        [Network]\n\
        VirtualEthernet=yes\n\
        Zone=lab\n\
        Interface=eth1\n\
        Port=80\n";

    #[test]
    fn untrusted_files_lose_privileged_settings() {
        let mut s = settings(PRIVILEGED);
        let warnings = drop_privileged(&mut s);
        assert_eq!(
            warnings,
            vec![
                "Ignoring Capability= setting, the settings file is not trusted.",
                "Ignoring TemporaryFileSystem=, Bind=, BindReadOnly= and Inaccessible= settings, the settings file is not trusted.",
                "Ignoring network settings, the settings file is not trusted.",
                "Ignoring Port= setting, the settings file is not trusted.",
                "Ignoring PrivateUsers= and PrivateUsersOwnership= settings, the settings file is not trusted.",
                "Ignoring SystemCallFilter= settings, the settings file is not trusted.",
            ]
        );
        let kept = Settings {
            start_mode: Some(StartMode::Boot),
            environment: vec![("A".into(), "1".into())],
            drop_capability: cap("CAP_MKNOD"),
            kill_signal: Some(libc::SIGTERM),
            read_only: Some(true),
            ..Settings::default()
        };
        assert_eq!(s, kept);
        // Nothing privileged is left, so a second pass warns about nothing.
        assert!(drop_privileged(&mut s).is_empty());
    }

    #[test]
    fn untrusted_keeps_deny_only_filters_and_drops_explicit_network_no() {
        let mut s =
            settings("[Exec]\nSystemCallFilter=~@mount @clock\n[Network]\nVirtualEthernet=no\n");
        let warnings = drop_privileged(&mut s);
        assert_eq!(s.syscall_filter.deny, strings(&["@mount", "@clock"]));
        assert_eq!(s.virtual_ethernet, None);
        assert_eq!(
            warnings,
            vec!["Ignoring network settings, the settings file is not trusted."]
        );

        let mut s = settings("[Exec]\nSystemCallFilter=~@mount\nSystemCallFilter=@clock\n");
        assert_eq!(drop_privileged(&mut s).len(), 1);
        assert_eq!(s.syscall_filter, Default::default());
    }

    /// A small deterministic generator, so the robustness test needs no crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_or_truncated_input() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Pieces that reach deep into the parser, so random mixes are not all
        // rejected on the first line.
        const PIECES: &[&str] = &[
            "[Exec]",
            "[Files]",
            "[Network]",
            "[",
            "]",
            "\n",
            "\r",
            "\r\n",
            "\\",
            "\\\\",
            "=",
            " ",
            "\t",
            "#",
            ";",
            "\"",
            "'",
            ":",
            ",",
            "~",
            "+",
            "/",
            "..",
            "Boot",
            "Parameters",
            "Environment",
            "Capability",
            "SystemCallFilter",
            "PrivateUsers",
            "KillSignal",
            "Bind",
            "BindReadOnly",
            "TemporaryFileSystem",
            "Zone",
            "Port",
            "Interface",
            "Volatile",
            "yes",
            "no",
            "all",
            "tcp:",
            "udp:",
            "80",
            "65536",
            "/srv",
            "A=1",
            "é",
            "\u{feff}",
            "\u{0}",
            "RTMIN+",
            "SIG",
            "norbind",
            "idmap",
            "X-",
        ];
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..rng.below(40) {
                if rng.below(4) == 0 {
                    // Arbitrary (valid UTF-8) characters, including controls.
                    let c = char::from_u32((rng.next() % 0x800) as u32).unwrap_or('x');
                    text.push(c);
                } else {
                    text.push_str(PIECES[rng.below(PIECES.len())]);
                }
            }
            let _ = parse(&text, file());
            // Untrusted filtering must cope with whatever parsed.
            if let Ok(mut p) = parse(&text, file()) {
                let _ = drop_privileged(&mut p.settings);
            }
        }
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let _ = parse_bytes(&bytes, file());
        }
        // Every prefix of a realistic file, cut at every byte.
        for cut in 0..=PRIVILEGED.len() {
            let _ = parse_bytes(&PRIVILEGED.as_bytes()[..cut], file());
        }
    }
}
