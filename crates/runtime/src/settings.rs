//! `.nspawn` settings files (systemd.nspawn(5)): finding them, parsing them,
//! and dropping the privileged settings of an untrusted file.
//!
//! The file format is systemd's unit-file syntax: `[Section]` headers,
//! `Key=Value` assignments with whitespace around `=` trimmed, `#`/`;`
//! comment lines, and lines continued with a trailing backslash. Values use
//! the same parsers as the command line ([`crate::spec`]), so `Bind=` and
//! `--bind=` accept the same strings.
//!
//! Differences from systemd, on purpose: a malformed line or an invalid value
//! is an error (`FILE:LINE: message`) instead of a logged-and-ignored line, so
//! a typo never silently changes what a container may do. Unknown sections
//! and keys are warnings, as in systemd. Keys that systemd knows but netspawn
//! does not implement (e.g. `User=`, `Overlay=`) are warnings that say so.
//!
//! Merging with the command line is the integrator's (`config.rs`) job; the
//! rules are on [`SettingsMode`] and [`Settings`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use netspawn_common::names::{check_machine_name, ifname_is_valid, machine_name_is_valid};
use thiserror::Error;

use crate::caps::{self, CapSet};
use crate::spec::{self, BindSpec, PortSpec, TmpfsSpec};

/// Longest logical line (after joining continuations), as systemd's
/// `LONG_LINE_MAX`; bounds the work a hostile file can cause.
pub use netspawn_common::unitfile::LONG_LINE_MAX;
use netspawn_common::unitfile::{self, Item, WHITESPACE};

/// Settings read from one `.nspawn` file. Every field is an `Option` or a
/// `Vec`: `None`/empty means "the file does not set this", so the command line
/// or the default applies.
///
/// For the merge, systemd-nspawn treats settings in groups; a command-line
/// flag of a group masks the whole group of the file (unless
/// `--settings=override`). The groups (systemd's `SETTING_*` mask bits):
/// - start mode: `boot`, `process_two`, `parameters` (`-b`, `-a`, and
///   positional arguments on the command line);
/// - `environment` (`-E`); `working_directory` (`--chdir`); `hostname`;
///   `kill_signal`; `notify_ready`; `read_only`; `volatile`;
/// - capabilities: `capability` and `drop_capability`
///   (`--capability`, `--drop-capability`);
/// - custom mounts: `binds` and `tmpfs` (`--bind`, `--bind-ro`, `--tmpfs`);
/// - network: `private_network`, `virtual_ethernet`, `virtual_ethernet_extra`,
///   `bridge`, `zone`, `interfaces`, `macvlan`, `ipvlan` (any `--network-*`
///   or `--private-network` flag);
/// - `ports` (`-p`); user namespace: `private_users`,
///   `private_users_ownership` (`-U`, `--private-users*`);
/// - `system_call_filter` (`--system-call-filter`).
///
/// Note systemd applies `parameters` only when the file also sets a start
/// mode (`Boot=` or `ProcessTwo=`); see [`Settings::start_mode`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    // [Exec]
    /// `Boot=`: run the image's init.
    pub boot: Option<bool>,
    /// `ProcessTwo=`: run the payload as PID 2 under a stub init (`-a`).
    pub process_two: Option<bool>,
    /// `Parameters=`: the command line, or init's arguments with `Boot=yes`.
    /// Accumulates over lines; an empty assignment clears it.
    pub parameters: Vec<String>,
    /// `Environment=`: assignments in order; a later one for the same name
    /// replaces the earlier one in place. An empty assignment clears it.
    pub environment: Vec<(String, String)>,
    /// `WorkingDirectory=`: absolute, normalised.
    pub working_directory: Option<PathBuf>,
    /// `Hostname=`: a valid hostname.
    pub hostname: Option<String>,
    /// `Capability=`: capabilities to add, ORed over all lines.
    pub capability: Option<CapSet>,
    /// `DropCapability=`: capabilities to drop, ORed over all lines.
    pub drop_capability: Option<CapSet>,
    /// `SystemCallFilter=`: words as [`spec::parse_syscall_filter`] returns
    /// them (`~name` for denied ones), accumulated over lines; an empty
    /// assignment clears the list.
    pub system_call_filter: Vec<String>,
    /// `PrivateUsers=` as written (a boolean, `pick`, `identity`, `UID` or
    /// `UID:RANGE`), syntax checked.
    pub private_users: Option<String>,
    /// `KillSignal=` as written (`SIGTERM`, `TERM`, `RTMIN+3`, `15`, ...),
    /// checked to name a signal.
    pub kill_signal: Option<String>,
    /// `NotifyReady=`.
    pub notify_ready: Option<bool>,

    // [Files]
    /// `Bind=` and `BindReadOnly=` in file order (`read_only` tells which).
    pub binds: Vec<BindSpec>,
    /// `TemporaryFileSystem=` in file order.
    pub tmpfs: Vec<TmpfsSpec>,
    /// `ReadOnly=`.
    pub read_only: Option<bool>,
    /// `Volatile=`, canonical: `yes`, `no`, `state` or `overlay`.
    pub volatile: Option<String>,
    /// `PrivateUsersOwnership=` (or the older `PrivateUsersChown=`),
    /// canonical: `off`, `chown`, `map`, `foreign` or `auto`.
    pub private_users_ownership: Option<String>,

    // [Network]
    /// `Private=`.
    pub private_network: Option<bool>,
    /// `VirtualEthernet=`.
    pub virtual_ethernet: Option<bool>,
    /// `VirtualEthernetExtra=`: (host name, container name) pairs.
    pub virtual_ethernet_extra: Vec<(String, String)>,
    /// `Bridge=`: an existing bridge to plug `vb-NAME` into.
    pub bridge: Option<String>,
    /// `Zone=`: the zone name without the `vz-` prefix (`vz-ZONE` is checked
    /// to be a valid interface name).
    pub zone: Option<String>,
    /// `Port=`: forwards, in file order, without duplicates.
    pub ports: Vec<PortSpec>,
    /// `Interface=`: host interfaces to move into the container.
    pub interfaces: Vec<String>,
    /// `MACVLAN=`: host interfaces to put a macvlan on.
    pub macvlan: Vec<String>,
    /// `IPVLAN=`: host interfaces to put an ipvlan on.
    pub ipvlan: Vec<String>,
}

/// How the payload is started, as `Boot=`/`ProcessTwo=` decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// The payload is PID 1 (the default).
    Pid1,
    /// A stub init is PID 1, the payload PID 2 (`-a`).
    Pid2,
    /// The image's init is PID 1 (`-b`).
    Boot,
}

impl Settings {
    /// The start mode the file asks for, or `None` if it sets neither
    /// `Boot=` nor `ProcessTwo=` (then systemd also ignores `Parameters=`).
    pub fn start_mode(&self) -> Option<StartMode> {
        match (self.boot, self.process_two) {
            (Some(true), _) => Some(StartMode::Boot),
            (_, Some(true)) => Some(StartMode::Pid2),
            (None, None) => None,
            _ => Some(StartMode::Pid1),
        }
    }

    /// True if the file asks for a private network namespace, explicitly or
    /// through any setting that implies one (systemd's
    /// `settings_private_network()`).
    pub fn private_network(&self) -> bool {
        self.private_network == Some(true)
            || self.network_veth()
            || !self.interfaces.is_empty()
            || !self.macvlan.is_empty()
            || !self.ipvlan.is_empty()
            || !self.virtual_ethernet_extra.is_empty()
    }

    /// True if the file asks for a veth link (`VirtualEthernet=yes`, or
    /// implied by `Bridge=`/`Zone=`).
    pub fn network_veth(&self) -> bool {
        self.virtual_ethernet == Some(true) || self.bridge.is_some() || self.zone.is_some()
    }

    /// True if any network setting is present, including explicit `no`s
    /// (systemd's `settings_network_configured()`): then the file's network
    /// settings replace the defaults as a group.
    pub fn network_configured(&self) -> bool {
        self.private_network.is_some()
            || self.virtual_ethernet.is_some()
            || self.bridge.is_some()
            || self.zone.is_some()
            || !self.interfaces.is_empty()
            || !self.macvlan.is_empty()
            || !self.ipvlan.is_empty()
            || !self.virtual_ethernet_extra.is_empty()
    }

    /// Removes what an untrusted file may not grant, as systemd-nspawn's
    /// `merge_settings()` ignores it when the file is not trusted, and returns
    /// one warning per ignored group:
    /// - `Capability=` (`DropCapability=` still applies);
    /// - `Bind=`, `BindReadOnly=`, `TemporaryFileSystem=`;
    /// - all network settings (`Private=`, `VirtualEthernet=`,
    ///   `VirtualEthernetExtra=`, `Bridge=`, `Zone=`, `Interface=`,
    ///   `MACVLAN=`, `IPVLAN=`), including explicit `no`s;
    /// - `Port=`;
    /// - `PrivateUsers=` and `PrivateUsersOwnership=`/`PrivateUsersChown=`;
    /// - `SystemCallFilter=` when it allows any system call (a deny-only
    ///   filter only restricts, so it is kept).
    pub fn drop_privileged(&mut self) -> Vec<String> {
        const WHY: &str = "the settings file is not trusted";
        let mut warnings = Vec::new();
        if self.capability.take().is_some_and(|c| c != 0) {
            warnings.push(format!("Ignoring Capability= setting, {WHY}."));
        }
        if !self.binds.is_empty() || !self.tmpfs.is_empty() {
            self.binds.clear();
            self.tmpfs.clear();
            warnings.push(format!(
                "Ignoring TemporaryFileSystem=, Bind= and BindReadOnly= settings, {WHY}."
            ));
        }
        if self.network_configured() {
            self.private_network = None;
            self.virtual_ethernet = None;
            self.virtual_ethernet_extra.clear();
            self.bridge = None;
            self.zone = None;
            self.interfaces.clear();
            self.macvlan.clear();
            self.ipvlan.clear();
            warnings.push(format!("Ignoring network settings, {WHY}."));
        }
        if !self.ports.is_empty() {
            self.ports.clear();
            warnings.push(format!("Ignoring Port= setting, {WHY}."));
        }
        if self.private_users.is_some() || self.private_users_ownership.is_some() {
            self.private_users = None;
            self.private_users_ownership = None;
            warnings.push(format!(
                "Ignoring PrivateUsers= and PrivateUsersOwnership= settings, {WHY}."
            ));
        }
        if self.system_call_filter.iter().any(|w| !w.starts_with('~')) {
            self.system_call_filter.clear();
            warnings.push(format!("Ignoring SystemCallFilter= settings, {WHY}."));
        }
        warnings
    }
}

/// A settings file that cannot be used. `Display` is exactly `FILE:LINE: msg`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}:{line}: {msg}", file.display())]
pub struct SettingsError {
    pub file: PathBuf,
    /// 1-based; for a line continued with backslashes, the last physical line.
    pub line: usize,
    pub msg: String,
}

/// The result of parsing one file: its settings and the warnings (each
/// already `FILE:LINE: ...`) for what was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

/// Parses the text of a `.nspawn` file; `file` is used in messages only.
pub fn parse(text: &str, file: &Path) -> Result<Parsed, SettingsError> {
    let mut p = Parser {
        file,
        section: SectionState::None,
        settings: Settings::default(),
        warnings: Vec::new(),
    };
    p.run(text)?;
    Ok(Parsed {
        settings: p.settings,
        warnings: p.warnings,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Exec,
    Files,
    Network,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Exec => "Exec",
            Section::Files => "Files",
            Section::Network => "Network",
        }
    }
}

enum SectionState {
    /// Before the first section header.
    None,
    /// Inside an unknown section: its lines are skipped (it was warned about).
    Ignored,
    Known(Section),
}

/// systemd.nspawn(5) keys netspawn does not implement: warned about as
/// unsupported rather than unknown, so the user knows the file is not wrong.
const UNSUPPORTED: &[(Section, &str)] = &[
    (Section::Exec, "Ephemeral"),
    (Section::Exec, "User"),
    (Section::Exec, "AmbientCapability"),
    (Section::Exec, "Personality"),
    (Section::Exec, "MachineID"),
    (Section::Exec, "PivotRoot"),
    (Section::Exec, "NoNewPrivileges"),
    (Section::Exec, "OOMScoreAdjust"),
    (Section::Exec, "CPUAffinity"),
    (Section::Exec, "ResolvConf"),
    (Section::Exec, "LinkJournal"),
    (Section::Exec, "Timezone"),
    (Section::Exec, "SuppressSync"),
    (Section::Files, "Inaccessible"),
    (Section::Files, "Overlay"),
    (Section::Files, "OverlayReadOnly"),
    (Section::Files, "BindUser"),
];

struct Parser<'a> {
    file: &'a Path,
    section: SectionState,
    settings: Settings,
    warnings: Vec<String>,
}

impl Parser<'_> {
    fn error(&self, line: usize, msg: impl Into<String>) -> SettingsError {
        SettingsError {
            file: self.file.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }

    fn warn(&mut self, line: usize, msg: impl fmt::Display) {
        self.warnings
            .push(format!("{}:{line}: {msg}", self.file.display()));
    }

    fn run(&mut self, text: &str) -> Result<(), SettingsError> {
        let file = self.file;
        unitfile::parse(
            text,
            |e| SettingsError {
                file: file.to_path_buf(),
                line: e.line,
                msg: e.msg,
            },
            |n, item| self.item(n, item),
        )
    }

    fn item(&mut self, n: usize, item: Item<'_>) -> Result<(), SettingsError> {
        let l = match item {
            Item::Section(name) => {
                self.section = match name {
                    "Exec" => SectionState::Known(Section::Exec),
                    "Files" => SectionState::Known(Section::Files),
                    "Network" => SectionState::Known(Section::Network),
                    _ => {
                        // X- sections are extensions, ignored silently as in systemd.
                        if !name.starts_with("X-") {
                            self.warn(n, format_args!("Unknown section '{name}'. Ignoring."));
                        }
                        SectionState::Ignored
                    }
                };
                return Ok(());
            }
            Item::Line(l) => l,
        };
        let section = match self.section {
            SectionState::Known(s) => s,
            SectionState::Ignored => return Ok(()),
            SectionState::None => return Err(self.error(n, unitfile::outside_of_any_section(l))),
        };
        let (key, value) = unitfile::split_assignment(l).map_err(|msg| self.error(n, msg))?;
        self.assign(section, key, value, n)
    }

    fn assign(
        &mut self,
        section: Section,
        key: &str,
        value: &str,
        n: usize,
    ) -> Result<(), SettingsError> {
        let file = self.file;
        let invalid = |what: String| SettingsError {
            file: file.to_path_buf(),
            line: n,
            msg: format!("Invalid {key}= value: {what}"),
        };
        // Warnings are collected here and recorded after the match, which
        // holds a mutable borrow of the settings.
        let mut warning: Option<String> = None;
        let s = &mut self.settings;
        match (section, key) {
            (Section::Exec, "Boot") => {
                let b = strict_bool(value).map_err(invalid)?;
                if b && s.process_two == Some(true) {
                    warning = Some(String::from(
                        "Conflicting Boot= and ProcessTwo=yes, ignoring Boot=.",
                    ));
                } else {
                    s.boot = Some(b);
                }
            }
            (Section::Exec, "ProcessTwo") => {
                let b = strict_bool(value).map_err(invalid)?;
                if b && s.boot == Some(true) {
                    warning = Some(String::from(
                        "Conflicting ProcessTwo= and Boot=yes, ignoring ProcessTwo=.",
                    ));
                } else {
                    s.process_two = Some(b);
                }
            }
            (Section::Exec, "Parameters") => {
                if value.is_empty() {
                    s.parameters.clear();
                } else {
                    let words = spec::split_words(value).map_err(|e| invalid(e.to_string()))?;
                    s.parameters.extend(words);
                }
            }
            (Section::Exec, "Environment") => {
                if value.is_empty() {
                    s.environment.clear();
                }
                for word in spec::split_words(value).map_err(|e| invalid(e.to_string()))? {
                    let (k, v) =
                        spec::parse_env_assignment(&word).map_err(|e| invalid(e.to_string()))?;
                    match s.environment.iter_mut().find(|(old, _)| *old == k) {
                        Some(slot) => slot.1 = v,
                        None => s.environment.push((k, v)),
                    }
                }
            }
            (Section::Exec, "WorkingDirectory") => {
                s.working_directory = if value.is_empty() {
                    None
                } else {
                    Some(spec::parse_absolute_path(value).map_err(|e| invalid(e.to_string()))?)
                };
            }
            (Section::Exec, "Hostname") => {
                s.hostname = if value.is_empty() {
                    None
                } else {
                    check_machine_name(value)
                        .map_err(|e| invalid(format!("hostname {value:?}: {e}")))?;
                    Some(value.to_string())
                };
            }
            (Section::Exec, "Capability" | "DropCapability") => {
                let set = caps::parse_list(value).map_err(|e| invalid(e.to_string()))?;
                // An empty list adds nothing, as in systemd.
                if !value.trim_matches(WHITESPACE).is_empty() {
                    let slot = if key == "Capability" {
                        &mut s.capability
                    } else {
                        &mut s.drop_capability
                    };
                    *slot = Some(slot.unwrap_or(0) | set);
                }
            }
            (Section::Exec, "SystemCallFilter") => {
                if value.is_empty() {
                    s.system_call_filter.clear();
                } else {
                    let words =
                        spec::parse_syscall_filter(value).map_err(|e| invalid(e.to_string()))?;
                    // Unknown names are this line's fault: say so here, not at launch.
                    let mut scratch = crate::seccomp::SyscallFilter::default();
                    for w in &words {
                        crate::seccomp::parse_arg(&mut scratch, w)
                            .map_err(|e| invalid(e.to_string()))?;
                    }
                    s.system_call_filter.extend(words);
                }
            }
            (Section::Exec, "PrivateUsers") => {
                if !private_users_is_valid(value) {
                    return Err(invalid(format!(
                        "{value:?} (expected a boolean, \"pick\", \"identity\", UID or UID:RANGE)"
                    )));
                }
                s.private_users = Some(value.to_string());
            }
            (Section::Exec, "KillSignal") => {
                if !signal_is_valid(value) {
                    return Err(invalid(format!("{value:?} is not a signal")));
                }
                s.kill_signal = Some(value.to_string());
            }
            (Section::Exec, "NotifyReady") => {
                s.notify_ready = tristate(value).map_err(invalid)?;
            }
            (Section::Files, "ReadOnly") => {
                s.read_only = tristate(value).map_err(invalid)?;
            }
            (Section::Files, "Volatile") => {
                s.volatile = if value.is_empty() {
                    None
                } else {
                    let canon = match (spec::parse_boolean(value), value) {
                        (Some(true), _) => "yes",
                        (Some(false), _) => "no",
                        (None, "state") => "state",
                        (None, "overlay") => "overlay",
                        _ => {
                            return Err(invalid(format!(
                                "{value:?} (expected a boolean, \"state\" or \"overlay\")"
                            )))
                        }
                    };
                    Some(canon.to_string())
                };
            }
            (Section::Files, "Bind" | "BindReadOnly") => {
                let b = spec::parse_bind(value, key == "BindReadOnly")
                    .map_err(|e| invalid(e.to_string()))?;
                s.binds.push(b);
            }
            (Section::Files, "TemporaryFileSystem") => {
                let t = spec::parse_tmpfs(value).map_err(|e| invalid(e.to_string()))?;
                s.tmpfs.push(t);
            }
            (Section::Files, "PrivateUsersOwnership") => {
                s.private_users_ownership = if value.is_empty() {
                    None
                } else {
                    let canon = match (spec::parse_boolean(value), value) {
                        (Some(true), _) => "auto",
                        (Some(false), _) => "off",
                        (None, v @ ("off" | "chown" | "map" | "foreign" | "auto")) => v,
                        _ => {
                            return Err(invalid(format!(
                                "{value:?} (expected off, chown, map, foreign or auto)"
                            )))
                        }
                    };
                    Some(canon.to_string())
                };
            }
            (Section::Files, "PrivateUsersChown") => {
                // The older spelling of PrivateUsersOwnership=chown/off.
                let b = strict_bool(value).map_err(invalid)?;
                s.private_users_ownership = Some(if b { "chown" } else { "off" }.to_string());
            }
            (Section::Network, "Private") => {
                s.private_network = tristate(value).map_err(invalid)?;
            }
            (Section::Network, "VirtualEthernet") => {
                s.virtual_ethernet = tristate(value).map_err(invalid)?;
            }
            (Section::Network, "VirtualEthernetExtra") => {
                if value.is_empty() {
                    s.virtual_ethernet_extra.clear();
                } else {
                    let pair = spec::parse_veth_extra(value).map_err(|e| invalid(e.to_string()))?;
                    if !s.virtual_ethernet_extra.contains(&pair) {
                        s.virtual_ethernet_extra.push(pair);
                    }
                }
            }
            (Section::Network, "Bridge") => {
                s.bridge = if value.is_empty() {
                    None
                } else {
                    Some(spec::parse_ifname(value).map_err(|e| invalid(e.to_string()))?)
                };
            }
            (Section::Network, "Zone") => {
                s.zone = if value.is_empty() {
                    None
                } else {
                    if !ifname_is_valid(&format!("vz-{value}")) {
                        return Err(invalid(format!(
                            "zone {value:?}: \"vz-{value}\" is not a valid interface name \
                             (at most 12 characters, no '/', ':' or whitespace)"
                        )));
                    }
                    Some(value.to_string())
                };
            }
            (Section::Network, "Port") => {
                let p = spec::parse_port(value).map_err(|e| invalid(e.to_string()))?;
                if s.ports
                    .iter()
                    .any(|q| q.proto == p.proto && q.host_port == p.host_port)
                {
                    warning = Some(format!("Duplicate port specification, ignoring: {value}"));
                } else {
                    s.ports.push(p);
                }
            }
            (Section::Network, "Interface" | "MACVLAN" | "IPVLAN") => {
                let list = match key {
                    "Interface" => &mut s.interfaces,
                    "MACVLAN" => &mut s.macvlan,
                    _ => &mut s.ipvlan,
                };
                if value.is_empty() {
                    list.clear();
                }
                for word in spec::split_words(value).map_err(|e| invalid(e.to_string()))? {
                    let name = spec::parse_ifname(&word).map_err(|e| invalid(e.to_string()))?;
                    if !list.contains(&name) {
                        list.push(name);
                    }
                }
            }
            _ if UNSUPPORTED.contains(&(section, key)) || is_rlimit_key(section, key) => {
                warning = Some(format!(
                    "Key '{key}' in section '{}' is not supported by netspawn, ignoring.",
                    section.name()
                ));
            }
            // X- keys are extensions, ignored silently as in systemd.
            _ if key.starts_with("X-") => {}
            _ => {
                // Escaped, so control characters in a key cannot break the line.
                warning = Some(format!(
                    "Unknown key name '{}' in section '{}', ignoring.",
                    key.escape_debug(),
                    section.name()
                ));
            }
        }
        if let Some(w) = warning {
            self.warn(n, w);
        }
        Ok(())
    }
}

fn strict_bool(value: &str) -> Result<bool, String> {
    spec::parse_boolean(value).ok_or_else(|| format!("{value:?} is not a boolean"))
}

/// A boolean where an empty value means "not set", as systemd's tristates.
fn tristate(value: &str) -> Result<Option<bool>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        strict_bool(value).map(Some)
    }
}

fn is_rlimit_key(section: Section, key: &str) -> bool {
    const LIMITS: [&str; 16] = [
        "CPU",
        "FSIZE",
        "DATA",
        "STACK",
        "CORE",
        "RSS",
        "NOFILE",
        "AS",
        "NPROC",
        "MEMLOCK",
        "LOCKS",
        "SIGPENDING",
        "MSGQUEUE",
        "NICE",
        "RTPRIO",
        "RTTIME",
    ];
    section == Section::Exec
        && key
            .strip_prefix("Limit")
            .is_some_and(|l| LIMITS.contains(&l))
}

/// `PrivateUsers=`: a boolean, `pick`, `identity`, `UID` or `UID:RANGE`
/// (decimal, range at least 1, not past 2^32-1 together).
fn private_users_is_valid(v: &str) -> bool {
    if spec::parse_boolean(v).is_some() || v == "pick" || v == "identity" {
        return true;
    }
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 10 {
            return None;
        }
        s.parse().ok()
    };
    let (shift, range) = match v.split_once(':') {
        Some((s, r)) => (num(s), num(r)),
        None => (num(v), Some(0x10000)),
    };
    match (shift, range) {
        (Some(s), Some(r)) => r >= 1 && s + r <= u64::from(u32::MAX),
        _ => false,
    }
}

/// Accepts what systemd's `signal_from_string()` does: a signal number, or a
/// name with or without `SIG` (`TERM`, `SIGTERM`), or `RTMIN+N`/`RTMAX-N`.
fn signal_is_valid(v: &str) -> bool {
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    let small = |s: &str| -> Option<i32> {
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if let Some(n) = small(v) {
        return (1..=rtmax).contains(&n);
    }
    let name = v.strip_prefix("SIG").unwrap_or(v);
    if name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    if let Some(off) = name.strip_prefix("RTMIN+").and_then(small) {
        return rtmin + off <= rtmax;
    }
    if let Some(off) = name.strip_prefix("RTMAX-").and_then(small) {
        return rtmax - off >= rtmin;
    }
    !name.is_empty() && nix::sys::signal::Signal::from_str(&format!("SIG{name}")).is_ok()
}

/// `--settings=`: whether and how the `.nspawn` file is used.
///
/// From systemd-nspawn(1) and nspawn.c's `--settings=` handling:
/// - [`Yes`](SettingsMode::Yes) (default; also any true boolean): the file is
///   searched and read. A command-line flag wins over the file's setting of
///   the same group (see [`Settings`]). A file from one of the search
///   directories (`/etc/systemd/nspawn`, `/run/systemd/nspawn`) is trusted;
///   one next to the image is not, and [`Settings::drop_privileged`] applies.
/// - [`No`](SettingsMode::No) (any false boolean): no file is read; only the
///   command line counts.
/// - [`Override`](SettingsMode::Override): the file is searched and read as
///   with `Yes`, with the same trust by location, but the file's settings win
///   over the command line's.
/// - [`Trusted`](SettingsMode::Trusted): as `Yes` (the command line wins), but
///   the file is trusted wherever it was found, so nothing is dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SettingsMode {
    #[default]
    Yes,
    No,
    Override,
    Trusted,
}

/// An unknown `--settings=` value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid --settings= value {0:?}: expected a boolean, \"override\" or \"trusted\"")]
pub struct SettingsModeError(pub String);

impl FromStr for SettingsMode {
    type Err = SettingsModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match (spec::parse_boolean(s), s) {
            (Some(true), _) => Ok(SettingsMode::Yes),
            (Some(false), _) => Ok(SettingsMode::No),
            (None, "override") => Ok(SettingsMode::Override),
            (None, "trusted") => Ok(SettingsMode::Trusted),
            _ => Err(SettingsModeError(s.to_string())),
        }
    }
}

impl SettingsMode {
    /// True if a settings file is to be searched for at all.
    pub fn reads_file(self) -> bool {
        self != SettingsMode::No
    }

    /// True if the file's settings win over the command line's.
    pub fn file_overrides_command_line(self) -> bool {
        self == SettingsMode::Override
    }

    /// Whether a file found where [`find`] says (`found_trusted`) is trusted.
    pub fn trusts(self, found_trusted: bool) -> bool {
        self == SettingsMode::Trusted || found_trusted
    }
}

/// Looks for `NAME.nspawn`: in each of `search` in order (trusted; the first
/// hit wins), then next to the image, i.e. in the directory that contains
/// `image_dir` (`/var/lib/machines/NAME.nspawn` for
/// `/var/lib/machines/NAME`; untrusted). The file is named after the machine
/// name, not the image's base name, as systemd.nspawn(5) says. An invalid
/// machine name finds nothing (it could otherwise escape the directories).
///
/// A path that exists but cannot be examined (e.g. permission denied) counts
/// as found, so that reading it reports the real error.
pub fn find(name: &str, image_dir: Option<&Path>, search: &[PathBuf]) -> Option<(PathBuf, bool)> {
    if !machine_name_is_valid(name) {
        return None;
    }
    let file = format!("{name}.nspawn");
    let present = |p: &Path| p.try_exists().unwrap_or(true);
    for dir in search {
        let p = dir.join(&file);
        if present(&p) {
            return Some((p, true));
        }
    }
    // "/" has no parent: like systemd, no file is looked for next to it.
    let parent = image_dir?.parent()?;
    let p = parent.join(&file);
    present(&p).then_some((p, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Proto;

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
            ("[Exec]\nBoot=yes", |s| s.boot == Some(true)),
            ("[Exec]\nBoot=off", |s| s.boot == Some(false)),
            ("[Exec]\nProcessTwo=1", |s| s.process_two == Some(true)),
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
                |s| s.system_call_filter == strings(&["@system-service", "~@mount", "~kexec_load"]),
            ),
            (
                "[Exec]\nSystemCallFilter=uname\nSystemCallFilter=\nSystemCallFilter=getpid",
                |s| s.system_call_filter == strings(&["getpid"]),
            ),
            ("[Exec]\nPrivateUsers=pick", |s| {
                s.private_users.as_deref() == Some("pick")
            }),
            ("[Exec]\nPrivateUsers=65536:65536", |s| {
                s.private_users.as_deref() == Some("65536:65536")
            }),
            ("[Exec]\nPrivateUsers=no", |s| {
                s.private_users.as_deref() == Some("no")
            }),
            ("[Exec]\nKillSignal=SIGRTMIN+3", |s| {
                s.kill_signal.as_deref() == Some("SIGRTMIN+3")
            }),
            ("[Exec]\nKillSignal=TERM", |s| {
                s.kill_signal.as_deref() == Some("TERM")
            }),
            ("[Exec]\nKillSignal=9", |s| {
                s.kill_signal.as_deref() == Some("9")
            }),
            ("[Exec]\nNotifyReady=yes", |s| s.notify_ready == Some(true)),
            ("[Exec]\nNotifyReady=yes\nNotifyReady=", |s| {
                s.notify_ready.is_none()
            }),
            ("[Files]\nReadOnly=true", |s| s.read_only == Some(true)),
            ("[Files]\nVolatile=state", |s| {
                s.volatile.as_deref() == Some("state")
            }),
            ("[Files]\nVolatile=on", |s| {
                s.volatile.as_deref() == Some("yes")
            }),
            ("[Files]\nVolatile=overlay", |s| {
                s.volatile.as_deref() == Some("overlay")
            }),
            ("[Files]\nPrivateUsersOwnership=map", |s| {
                s.private_users_ownership.as_deref() == Some("map")
            }),
            ("[Files]\nPrivateUsersOwnership=yes", |s| {
                s.private_users_ownership.as_deref() == Some("auto")
            }),
            ("[Files]\nPrivateUsersChown=yes", |s| {
                s.private_users_ownership.as_deref() == Some("chown")
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
        assert_eq!(s.boot, Some(true));
        assert_eq!(s.hostname.as_deref(), Some("web"));
        assert_eq!(s.parameters, strings(&["a", "b", "c"]));
        assert_eq!(s.zone.as_deref(), Some("lab"));
    }

    #[test]
    fn escaped_backslash_does_not_continue() {
        let s = settings("[Exec]\nParameters=a\\\\\nBoot=yes\n");
        assert_eq!(s.parameters, strings(&["a\\"]));
        assert_eq!(s.boot, Some(true));
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
                    User=nobody\n\
                    LimitNOFILE=1024\n\
                    X-Custom=whatever\n\
                    [Weird]\n\
                    Anything=goes\n\
                    no equals sign here is fine in an ignored section\n\
                    [X-Vendor]\n\
                    Key=1\n\
                    [Files]\n\
                    Overlay=/a:/b\n\
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
                format!("{f}:5: Key 'User' in section 'Exec' is not supported by netspawn, ignoring."),
                format!("{f}:6: Key 'LimitNOFILE' in section 'Exec' is not supported by netspawn, ignoring."),
                format!("{f}:8: Unknown section 'Weird'. Ignoring."),
                format!("{f}:14: Key 'Overlay' in section 'Files' is not supported by netspawn, ignoring."),
                format!("{f}:17: Duplicate port specification, ignoring: 80:8080"),
            ]
        );
        assert_eq!(p.settings.boot, Some(true));
        assert_eq!(p.settings.ports.len(), 1);
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
        assert_eq!(p.settings.start_mode(), Some(StartMode::Boot));
        assert_eq!(p.settings.process_two, None);
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains(":3: Conflicting"),
            "{:?}",
            p.warnings
        );

        let p = ok("[Exec]\nProcessTwo=yes\nBoot=yes\n");
        assert_eq!(p.settings.start_mode(), Some(StartMode::Pid2));
        assert_eq!(p.warnings.len(), 1);

        assert_eq!(
            settings("[Exec]\nBoot=no\n").start_mode(),
            Some(StartMode::Pid1)
        );
        assert_eq!(settings("[Exec]\nParameters=x\n").start_mode(), None);
        assert_eq!(
            settings("[Exec]\nProcessTwo=yes\nBoot=no\n").start_mode(),
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
                .boot,
            Some(true)
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
        let warnings = s.drop_privileged();
        assert_eq!(
            warnings,
            vec![
                "Ignoring Capability= setting, the settings file is not trusted.",
                "Ignoring TemporaryFileSystem=, Bind= and BindReadOnly= settings, the settings file is not trusted.",
                "Ignoring network settings, the settings file is not trusted.",
                "Ignoring Port= setting, the settings file is not trusted.",
                "Ignoring PrivateUsers= and PrivateUsersOwnership= settings, the settings file is not trusted.",
                "Ignoring SystemCallFilter= settings, the settings file is not trusted.",
            ]
        );
        let kept = Settings {
            boot: Some(true),
            environment: vec![("A".into(), "1".into())],
            drop_capability: cap("CAP_MKNOD"),
            kill_signal: Some("SIGTERM".into()),
            read_only: Some(true),
            ..Settings::default()
        };
        assert_eq!(s, kept);
        // Nothing privileged is left, so a second pass warns about nothing.
        assert!(s.drop_privileged().is_empty());
    }

    #[test]
    fn untrusted_keeps_deny_only_filters_and_drops_explicit_network_no() {
        let mut s =
            settings("[Exec]\nSystemCallFilter=~@mount @clock\n[Network]\nVirtualEthernet=no\n");
        let warnings = s.drop_privileged();
        assert_eq!(s.system_call_filter, strings(&["~@mount", "~@clock"]));
        assert_eq!(s.virtual_ethernet, None);
        assert_eq!(
            warnings,
            vec!["Ignoring network settings, the settings file is not trusted."]
        );

        let mut s = settings("[Exec]\nSystemCallFilter=~@mount\nSystemCallFilter=@clock\n");
        assert_eq!(s.drop_privileged().len(), 1);
        assert!(s.system_call_filter.is_empty());
    }

    #[test]
    fn settings_mode() {
        let cases: &[(&str, SettingsMode)] = &[
            ("yes", SettingsMode::Yes),
            ("1", SettingsMode::Yes),
            ("TRUE", SettingsMode::Yes),
            ("on", SettingsMode::Yes),
            ("no", SettingsMode::No),
            ("0", SettingsMode::No),
            ("off", SettingsMode::No),
            ("override", SettingsMode::Override),
            ("trusted", SettingsMode::Trusted),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SettingsMode>(), Ok(*want), "{input}");
        }
        for bad in ["", "maybe", "Trusted", "OVERRIDE"] {
            let e = bad.parse::<SettingsMode>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(SettingsMode::default(), SettingsMode::Yes);
        assert!(!SettingsMode::No.reads_file());
        assert!(SettingsMode::Override.file_overrides_command_line());
        assert!(!SettingsMode::Yes.file_overrides_command_line());
        assert!(SettingsMode::Trusted.trusts(false));
        assert!(!SettingsMode::Yes.trusts(false));
        assert!(!SettingsMode::Override.trusts(false));
        assert!(SettingsMode::Yes.trusts(true));
    }

    /// A scratch directory tree under the system temp dir, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> TempTree {
            let p = std::env::temp_dir()
                .join(format!("netspawn-settings-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempTree(p)
        }
        fn touch(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "[Exec]\n").unwrap();
            p
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn find_searches_in_order_then_next_to_the_image() {
        let t = TempTree::new("find");
        let etc = t.0.join("etc");
        let run = t.0.join("run");
        let machines = t.0.join("machines");
        let image = machines.join("web");
        std::fs::create_dir_all(&image).unwrap();
        let search = vec![etc.clone(), run.clone()];

        assert_eq!(find("web", Some(&image), &search), None);

        let beside = t.touch("machines/web.nspawn");
        assert_eq!(
            find("web", Some(&image), &search),
            Some((beside.clone(), false))
        );
        // A trailing slash on the image path changes nothing.
        let with_slash = PathBuf::from(format!("{}/", image.display()));
        assert_eq!(
            find("web", Some(&with_slash), &search),
            Some((beside, false))
        );
        assert_eq!(find("web", None, &search), None);

        let in_run = t.touch("run/web.nspawn");
        assert_eq!(find("web", Some(&image), &search), Some((in_run, true)));
        let in_etc = t.touch("etc/web.nspawn");
        assert_eq!(find("web", Some(&image), &search), Some((in_etc, true)));

        // Other machines' files are not picked up; bad names find nothing.
        assert_eq!(find("db", Some(&image), &search), None);
        t.touch("etc/..nspawn");
        for bad in ["", "../web", "a/b", "."] {
            assert_eq!(find(bad, Some(&image), &search), None, "{bad:?}");
        }
        // The root directory has no parent to look in.
        assert_eq!(find("db", Some(Path::new("/")), &[]), None);
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
                let _ = p.settings.drop_privileged();
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
