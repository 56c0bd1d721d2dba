//! The machine registry: one file per running machine in
//! `<run_dir>/machines/NAME`, in `KEY=VALUE` lines (like systemd's
//! `/run/systemd/machines/NAME`).
//!
//! The launcher owns its machine's entry: it claims the name by holding an
//! exclusive `flock` on `<run_dir>/locks/machine-NAME.lock` for its whole life,
//! writes the entry atomically (temporary file + rename) and removes it on
//! exit. If the launcher dies without removing it, readers see that the
//! launcher's PID (with its start time) is gone and treat the entry as stale;
//! [`list`] deletes stale entries it finds.
//!
//! Every write also refreshes the machine's link in the hosts view
//! (`<run_dir>/hosts/NAME`, see [`crate::hosts`]), which is what resolvers
//! read, and its links in the users view (`<run_dir>/userns/NAME` and
//! `<run_dir>/uids/SHIFT:RANGE`, see [`crate::users`]) for a machine with a
//! user namespace; every removal removes the links first.
//!
//! Entries are untrusted input for readers (the NSS module reads them inside
//! arbitrary processes), so [`Entry::parse`] never panics and caps sizes.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::fsread;
use crate::names::machine_name_is_valid;

/// Largest registry entry a reader accepts.
pub const MAX_ENTRY_SIZE: usize = 64 * 1024;

/// Most link-local addresses an entry holds (one or two per link).
pub const MAX_LINK_LOCAL: usize = 16;

/// One running machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// 32 lowercase hex digits.
    pub uuid: String,
    /// PID (in the host's PID namespace) of the container's PID 1.
    pub leader: u32,
    /// PID of the netspawn process that owns the machine.
    pub launcher: u32,
    /// Start time of the launcher (field 22 of /proc/PID/stat), to detect PID reuse.
    pub launcher_start: u64,
    pub root: PathBuf,
    /// "container".
    pub class: String,
    /// "netspawn".
    pub service: String,
    /// "opening" until the payload runs, "running" after; "degraded" etc. are not used.
    pub state: String,
    pub boot: bool,
    /// The payload reported READY=1 (or readiness is not waited for: without
    /// `--notify-ready=yes` a machine is ready once its payload runs).
    pub ready: bool,
    /// Realtime microseconds when the machine started.
    pub timestamp_usec: u64,
    /// Absolute cgroup paths (one per hierarchy) the machine lives in.
    pub cgroups: Vec<PathBuf>,
    /// Whether the machine has its own network namespace.
    pub private_network: bool,
    /// Host-side interfaces that belong to the machine (ve-NAME, vb-NAME, ...).
    pub interfaces: Vec<String>,
    /// Routable addresses seen inside the machine's network namespace.
    pub addresses: Vec<IpAddr>,
    /// IPv6 link-local addresses seen inside it, each with the index of the
    /// host-side link (in the host's namespace) that reaches it: the veth's
    /// host end, or the bridge it is enslaved to. Only resolvers that can
    /// carry a scope get these (see [`crate::hosts`]).
    pub link_local: Vec<(Ipv6Addr, u32)>,
    /// The payload's system call filter, as a process entering the machine
    /// (`netspawnctl shell`) rebuilds it. None in entries written before
    /// launchers recorded it: enterers then use the default filter.
    pub syscall_filter: Option<RecordedFilter>,
    /// Whether the payload runs with no_new_privs.
    pub no_new_privs: bool,
    /// The machine's user namespace mapping, if it has one: container UID
    /// and GID 0 is host `shift`, for `range` IDs.
    pub userns: Option<UidRange>,
}

/// A user namespace's mapping: container IDs `0..range` are host IDs
/// `shift..shift+range` (the same for groups, as systemd-nspawn maps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub shift: u32,
    pub range: u32,
}

impl UidRange {
    /// The range if `shift + range` stays below 2^32 - 1 (the invalid ID)
    /// and `range` is not zero.
    pub fn new(shift: u32, range: u32) -> Option<UidRange> {
        let end = u64::from(shift) + u64::from(range);
        (range != 0 && end <= u64::from(u32::MAX)).then_some(UidRange { shift, range })
    }

    /// True if host ID `id` is in the range.
    pub fn contains(&self, id: u32) -> bool {
        id >= self.shift && u64::from(id) < u64::from(self.shift) + u64::from(self.range)
    }

    /// True if the two ranges share an ID.
    pub fn overlaps(&self, other: &UidRange) -> bool {
        let (a0, a1) = (
            u64::from(self.shift),
            u64::from(self.shift) + u64::from(self.range),
        );
        let (b0, b1) = (
            u64::from(other.shift),
            u64::from(other.shift) + u64::from(other.range),
        );
        a0 < b1 && b0 < a1
    }
}

/// What rebuilding a machine's system call filter takes: the resolved
/// `--system-call-filter=` additions and removals (system call and `@group`
/// names) and the capabilities the filter was built for. Readers must
/// validate the names (they are whatever the file holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// The kept capabilities the allow-list depends on; None if the entry
    /// did not say (or said something unreadable).
    pub caps: Option<u64>,
}

/// Longest system call or group name a reader accepts in an entry.
const MAX_FILTER_WORD: usize = 64;
/// Most names a reader accepts in one filter list.
const MAX_FILTER_WORDS: usize = 1024;

/// Splits a recorded filter list. A word that cannot be a system call or
/// group name is kept as it is, so that whoever builds the filter refuses
/// it (failing closed) rather than silently dropping a removal.
fn filter_words(v: &str) -> Vec<String> {
    let mut words = v.split_whitespace();
    let mut out: Vec<String> = words
        .by_ref()
        .take(MAX_FILTER_WORDS)
        .map(|w| {
            if w.len() > MAX_FILTER_WORD {
                // Still invalid, but bounded.
                let mut short: String = w.chars().take(MAX_FILTER_WORD / 4).collect();
                short.push('…');
                short
            } else {
                w.to_string()
            }
        })
        .collect();
    if words.next().is_some() {
        // Too many to keep: a word no filter builder accepts stands for the rest.
        out.push("…too-many-names".into());
    }
    out
}

/// Escapes a value so it fits on one line.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Entry {
    /// Serialises the entry.
    pub fn format(&self) -> String {
        let join = |v: &[String]| v.join(" ");
        let mut s = String::new();
        let mut kv = |k: &str, v: &str| {
            s.push_str(k);
            s.push('=');
            s.push_str(&escape(v));
            s.push('\n');
        };
        kv("NAME", &self.name);
        kv("UUID", &self.uuid);
        kv("LEADER", &self.leader.to_string());
        kv("LAUNCHER", &self.launcher.to_string());
        kv("LAUNCHER_START", &self.launcher_start.to_string());
        kv("ROOT", &self.root.to_string_lossy());
        kv("CLASS", &self.class);
        kv("SERVICE", &self.service);
        kv("STATE", &self.state);
        kv("BOOT", if self.boot { "1" } else { "0" });
        kv("READY", if self.ready { "1" } else { "0" });
        kv("TIMESTAMP", &self.timestamp_usec.to_string());
        kv(
            "PRIVATE_NETWORK",
            if self.private_network { "1" } else { "0" },
        );
        let cg: Vec<String> = self
            .cgroups
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        kv("CGROUPS", &cg.join(":"));
        kv("INTERFACES", &join(&self.interfaces));
        let addrs: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        kv("ADDRESSES", &join(&addrs));
        if !self.link_local.is_empty() {
            let ll: Vec<String> = self
                .link_local
                .iter()
                .map(|&(a, i)| crate::hosts::format_scoped(a, i))
                .collect();
            kv("LINK_LOCAL", &join(&ll));
        }
        if let Some(f) = &self.syscall_filter {
            kv("SYSCALL_FILTER_ALLOW", &join(&f.allow));
            kv("SYSCALL_FILTER_DENY", &join(&f.deny));
            if let Some(c) = f.caps {
                kv("SYSCALL_FILTER_CAPS", &format!("{c:x}"));
            }
        }
        kv("NO_NEW_PRIVS", if self.no_new_privs { "1" } else { "0" });
        if let Some(u) = &self.userns {
            kv("UID_SHIFT", &u.shift.to_string());
            kv("UID_RANGE", &u.range.to_string());
        }
        s
    }

    /// Parses an entry. Unknown keys are ignored (newer writers may add some);
    /// a missing or invalid NAME, or an oversized input, is an error.
    pub fn parse(text: &str) -> Result<Entry, String> {
        if text.len() > MAX_ENTRY_SIZE {
            return Err("registry entry too large".into());
        }
        let mut e = Entry::default();
        let (mut shift, mut range) = (None, None);
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = unescape(v);
            let num = |v: &str| v.parse::<u64>().unwrap_or(0);
            match k {
                "NAME" => e.name = v,
                "UUID" => e.uuid = v,
                "LEADER" => e.leader = num(&v) as u32,
                "LAUNCHER" => e.launcher = num(&v) as u32,
                "LAUNCHER_START" => e.launcher_start = num(&v),
                "ROOT" => e.root = PathBuf::from(v),
                "CLASS" => e.class = v,
                "SERVICE" => e.service = v,
                "STATE" => e.state = v,
                "BOOT" => e.boot = v == "1",
                "READY" => e.ready = v == "1",
                "TIMESTAMP" => e.timestamp_usec = num(&v),
                "PRIVATE_NETWORK" => e.private_network = v == "1",
                "CGROUPS" => {
                    e.cgroups = v
                        .split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                }
                "INTERFACES" => e.interfaces = v.split_whitespace().map(str::to_string).collect(),
                "ADDRESSES" => {
                    e.addresses = v
                        .split_whitespace()
                        .filter_map(|a| a.parse().ok())
                        .collect()
                }
                // All or nothing: one malformed pair voids the list.
                "LINK_LOCAL" => {
                    e.link_local = v
                        .split_whitespace()
                        .take(MAX_LINK_LOCAL + 1)
                        .map(crate::hosts::parse_scoped)
                        .collect::<Option<Vec<_>>>()
                        .filter(|l| l.len() <= MAX_LINK_LOCAL)
                        .unwrap_or_default()
                }
                "SYSCALL_FILTER_ALLOW" => {
                    e.syscall_filter.get_or_insert_with(Default::default).allow = filter_words(&v)
                }
                "SYSCALL_FILTER_DENY" => {
                    e.syscall_filter.get_or_insert_with(Default::default).deny = filter_words(&v)
                }
                "SYSCALL_FILTER_CAPS" => {
                    e.syscall_filter.get_or_insert_with(Default::default).caps =
                        u64::from_str_radix(v.trim(), 16).ok()
                }
                // Anything but "0" is the safe reading.
                "NO_NEW_PRIVS" => e.no_new_privs = v != "0",
                "UID_SHIFT" => shift = v.trim().parse::<u32>().ok(),
                "UID_RANGE" => range = v.trim().parse::<u32>().ok(),
                _ => {}
            }
        }
        // Both keys or none; a range past 2^32 - 1 is no range.
        e.userns = match (shift, range) {
            (Some(s), Some(r)) => {
                Some(UidRange::new(s, r).ok_or("invalid UID range in registry entry")?)
            }
            (None, None) => None,
            _ => return Err("UID_SHIFT and UID_RANGE go together in a registry entry".into()),
        };
        if !machine_name_is_valid(&e.name) {
            return Err(format!(
                "invalid machine name {:?} in registry entry",
                e.name
            ));
        }
        Ok(e)
    }

    /// True if the launcher that owns this entry is still running (a zombie
    /// launcher is dead: on hosts whose PID 1 does not reap, it may linger).
    pub fn is_alive(&self) -> bool {
        self.launcher != 0 && process_start_time(self.launcher) == Some(self.launcher_start)
    }
}

/// Start time of a process in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or None if there is no such process or it is a zombie.
pub fn process_start_time(pid: u32) -> Option<u64> {
    // Bytes, not a String: the command name may be any bytes (even a
    // truncated multi-byte character).
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_whitespace();
    // Field 3, the state: a zombie or dead process no longer runs.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The registry directory and its operations.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    hosts: PathBuf,
    userns: PathBuf,
    uids: PathBuf,
    locks: PathBuf,
}

/// Proof that this process owns a machine name; dropping it releases the name
/// and removes its lock file, unless [`NameClaim::hand_over`] said a process
/// that shares the lock (the launcher's keeper) lets go of it last.
#[derive(Debug)]
pub struct NameClaim {
    lock: fs::File,
    path: PathBuf,
    handed_over: std::sync::atomic::AtomicBool,
    pub name: String,
}

impl NameClaim {
    fn new(lock: fs::File, path: PathBuf, name: &str) -> NameClaim {
        NameClaim {
            lock,
            path,
            handed_over: std::sync::atomic::AtomicBool::new(false),
            name: name.to_string(),
        }
    }

    /// The lock file (for a process that inherits the lock and removes the
    /// file when it lets go last).
    pub fn lock_path(&self) -> &Path {
        &self.path
    }

    /// Whether another process holding this same lock (a forked keeper)
    /// removes the lock file when it is done; while it does, dropping the
    /// claim only closes the descriptor.
    pub fn hand_over(&self, handed: bool) {
        self.handed_over
            .store(handed, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        if !self.handed_over.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = crate::lockfile::remove_held(&self.path, &self.lock);
        }
    }
}

impl std::os::fd::AsRawFd for NameClaim {
    /// The lock's descriptor: a process that inherits it keeps the name taken.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.lock.as_raw_fd()
    }
}

impl Registry {
    pub fn new(paths: &crate::paths::Paths) -> Registry {
        Registry {
            dir: paths.machines_dir(),
            hosts: paths.hosts_dir(),
            userns: paths.userns_dir(),
            uids: paths.uids_dir(),
            locks: paths.locks_dir(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The machine's link in the hosts view (present while it has addresses).
    pub fn hosts_path(&self, name: &str) -> PathBuf {
        self.hosts.join(name)
    }

    /// The machine's link in the users view by name (present while it has
    /// a user namespace).
    pub fn userns_path(&self, name: &str) -> PathBuf {
        self.userns.join(name)
    }

    /// The link in the users view by ID of the range `range`.
    pub fn uids_path(&self, range: UidRange) -> PathBuf {
        self.uids.join(crate::users::id_link_rel(range))
    }

    /// Removes a machine's links and then its entry (missing ones are fine),
    /// so lookups stop answering before the entry goes.
    fn remove_files(&self, name: &str) -> io::Result<()> {
        self.unpublish_users(name, None)?;
        for path in [self.hosts_path(name), self.entry_path(name)] {
            remove_if_present(&path)?;
        }
        Ok(())
    }

    /// Removes `name`'s links from the users view, except the `uids` link
    /// of `keep`: first the `uids` link its `userns` link points to (only
    /// if that one names `name`: a range another machine took over stays),
    /// then the `userns` link.
    fn unpublish_users(&self, name: &str, keep: Option<UidRange>) -> io::Result<()> {
        unpublish_users_in(&self.userns, &self.uids, name, keep)
    }

    /// Points the machine's users links at its launcher and range, or
    /// removes them when it has no user namespace. The `uids` link is
    /// written first and removed first, so a UID never names a machine
    /// whose name does not resolve back.
    fn publish_users(&self, entry: &Entry) -> io::Result<()> {
        let Some(range) = entry.userns else {
            return self.unpublish_users(&entry.name, None);
        };
        // A machine whose range changed (never done today) drops the old one.
        self.unpublish_users(&entry.name, Some(range))?;
        let tmp_name = format!(".#{}.{}", entry.name, std::process::id());
        let by_id = self.uids_path(range);
        replace_link(
            &crate::users::format_id_target(entry.launcher, &entry.name),
            &by_id.with_file_name(&tmp_name),
            &by_id,
        )?;
        replace_link(
            &crate::users::format_name_target(entry.launcher, range),
            &self.userns.join(&tmp_name),
            &self.userns_path(&entry.name),
        )
    }

    /// Points the machine's hosts link at its launcher and addresses, or
    /// removes it when the machine has none (routable or link-local).
    fn publish_hosts(&self, entry: &Entry) -> io::Result<()> {
        let link = self.hosts_path(&entry.name);
        if entry.addresses.is_empty() && entry.link_local.is_empty() {
            return match fs::remove_file(&link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let target =
            crate::hosts::format_target_scoped(entry.launcher, &entry.addresses, &entry.link_local);
        let tmp = self
            .hosts
            .join(format!(".#{}.{}", entry.name, std::process::id()));
        replace_link(&target, &tmp, &link)
    }

    /// Claims `name` for this process. Fails with `AlreadyExists` if a live
    /// launcher holds it. A stale entry left by a dead launcher is removed.
    pub fn claim(&self, name: &str) -> io::Result<NameClaim> {
        fs::create_dir_all(&self.locks)?;
        fs::create_dir_all(&self.dir)?;
        fs::create_dir_all(&self.hosts)?;
        fs::create_dir_all(&self.userns)?;
        fs::create_dir_all(self.uids.join(crate::users::OTHER_DIR))?;
        let path = self.locks.join(format!("machine-{name}.lock"));
        // A name whose machine has stopped may still be held for a moment by
        // the cleanup of its network links: wait for that, but not for a
        // live machine.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let lock = loop {
            match crate::lockfile::try_lock(&path, crate::lockfile::Mode::Exclusive)? {
                Some(lock) => break lock,
                None => {
                    let live = self.get(name).ok().flatten().is_some();
                    if live || std::time::Instant::now() > deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("machine '{name}' already exists"),
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        };
        // We hold the name: any entry there now is from a dead launcher.
        let claim = NameClaim::new(lock, path, name);
        self.remove_files(name)?;
        Ok(claim)
    }

    /// Takes `name`'s lock if nobody holds it, without waiting and without
    /// touching its entry: for removing what a dead machine of that name left
    /// behind (its cgroups). None while a launcher, or the keeper that
    /// outlives it, holds the name. A launcher claiming the name meanwhile
    /// waits for the returned claim to be dropped.
    pub fn try_hold_idle(&self, name: &str) -> io::Result<Option<NameClaim>> {
        if !machine_name_is_valid(name) {
            return Ok(None);
        }
        fs::create_dir_all(&self.locks)?;
        let path = self.locks.join(format!("machine-{name}.lock"));
        Ok(
            crate::lockfile::try_lock(&path, crate::lockfile::Mode::Exclusive)?
                .map(|lock| NameClaim::new(lock, path, name)),
        )
    }

    /// Writes (or replaces) an entry atomically. The caller must hold the claim.
    pub fn write(&self, _claim: &NameClaim, entry: &Entry) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".#{}.{}", entry.name, std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(entry.format().as_bytes())?;
        }
        fs::rename(&tmp, self.entry_path(&entry.name)).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        self.publish_hosts(entry)?;
        self.publish_users(entry)
    }

    /// Removes an entry and its hosts link; missing ones are fine.
    pub fn remove(&self, _claim: &NameClaim, name: &str) -> io::Result<()> {
        self.remove_files(name)
    }

    /// Reads one live entry. Stale entries read as absent.
    pub fn get(&self, name: &str) -> io::Result<Option<Entry>> {
        if !machine_name_is_valid(name) {
            return Ok(None);
        }
        let text = match read_entry(&self.entry_path(name)) {
            Ok(t) => t,
            // Not one of ours (a FIFO, a symlink, an oversized file): absent.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::FileTooLarge
                    || fsread::is_not_regular(&e) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match Entry::parse(&text) {
            Ok(e) if e.name == name && e.is_alive() => Ok(Some(e)),
            _ => Ok(None),
        }
    }

    /// The names that have an entry, live or not, without reading any entry
    /// (for finding a machine by something derived from its name, as netd
    /// does with MACs for each DHCP packet).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(rd
            .flatten()
            .filter_map(|de| de.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && machine_name_is_valid(n))
            .collect())
    }

    /// All live entries, sorted by name. Stale entries are deleted on the way
    /// (only when their name lock is free, so a launcher that is just starting
    /// is never disturbed).
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for de in rd.flatten() {
            let fname = de.file_name();
            let Some(name) = fname.to_str() else { continue };
            if name.starts_with('.') || !machine_name_is_valid(name) {
                continue;
            }
            let Ok(text) = read_entry(&de.path()) else {
                continue;
            };
            match Entry::parse(&text) {
                Ok(e) if e.name == name && e.is_alive() => out.push(e),
                _ => self.reap_stale(name),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn reap_stale(&self, name: &str) {
        let Ok(lock) = fs::OpenOptions::new()
            .write(true)
            .open(self.locks.join(format!("machine-{name}.lock")))
        else {
            // No lock file: nobody can own it.
            let _ = self.remove_files(name);
            return;
        };
        if lock.try_lock().is_ok() {
            let _ = self.remove_files(name);
        }
    }
}

/// Removes machine `name`'s links from the users view of the run directory
/// `run_dir` (missing ones are fine): for whoever cleans up after a launcher
/// that died without removing its entry (its keeper), as the hosts link is.
pub fn remove_users_links(run_dir: &Path, name: &str) -> io::Result<()> {
    if !machine_name_is_valid(name) {
        return Ok(());
    }
    unpublish_users_in(
        &run_dir.join(crate::paths::USERNS_SUBDIR),
        &run_dir.join(crate::paths::UIDS_SUBDIR),
        name,
        None,
    )
}

/// [`Registry::unpublish_users`] on the view's two directories.
fn unpublish_users_in(
    userns: &Path,
    uids: &Path,
    name: &str,
    keep: Option<UidRange>,
) -> io::Result<()> {
    let by_name = userns.join(name);
    let old = fs::read_link(&by_name).ok().and_then(|t| {
        crate::users::parse_name_target(t.as_os_str().as_encoded_bytes()).map(|(_, r)| r)
    });
    if let Some(range) = old.filter(|r| Some(*r) != keep) {
        let by_id = uids.join(crate::users::id_link_rel(range));
        let owner = fs::read_link(&by_id).ok().and_then(|t| {
            crate::users::parse_id_target(t.as_os_str().as_encoded_bytes()).map(|(_, n)| n == name)
        });
        if owner == Some(true) {
            remove_if_present(&by_id)?;
        }
    }
    if keep.is_none() {
        remove_if_present(&by_name)?;
    }
    Ok(())
}

/// Removes `path`; a missing one is fine.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes `link` a symbolic link to `target` atomically (through `tmp`), so a
/// reader sees the old target or the new one.
fn replace_link(target: &str, tmp: &Path, link: &Path) -> io::Result<()> {
    let _ = fs::remove_file(tmp);
    std::os::unix::fs::symlink(target, tmp)?;
    fs::rename(tmp, link).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

/// An entry's text. Entries are regular files the launcher writes: a FIFO,
/// a device or a symlink put in their place is refused without blocking,
/// and so is an entry over [`MAX_ENTRY_SIZE`].
fn read_entry(path: &Path) -> io::Result<String> {
    let data = fsread::read_regular(path, MAX_ENTRY_SIZE as u64, fsread::Follow::No)?;
    String::from_utf8(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn sample() -> Entry {
        Entry {
            name: "web".into(),
            uuid: "0123456789abcdef0123456789abcdef".into(),
            leader: 42,
            launcher: std::process::id(),
            launcher_start: process_start_time(std::process::id()).unwrap(),
            root: "/var/lib/machines/we\nb".into(),
            class: "container".into(),
            service: "netspawn".into(),
            state: "running".into(),
            boot: true,
            ready: true,
            timestamp_usec: 17,
            cgroups: vec!["/sys/fs/cgroup/unified/netspawn/web".into()],
            private_network: true,
            interfaces: vec!["ve-web".into()],
            addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            link_local: vec![("fe80::42:1".parse().unwrap(), 7)],
            syscall_filter: Some(RecordedFilter {
                allow: vec!["@keyring".into(), "bpf".into()],
                deny: vec!["@mount".into()],
                caps: Some(0x3fff),
            }),
            no_new_privs: false,
            userns: UidRange::new(0x7ff0000, 65536),
        }
    }

    #[test]
    fn uid_ranges_parse_in_pairs_and_stay_below_the_invalid_id() {
        let e = Entry::parse("NAME=a\nUID_SHIFT=524288\nUID_RANGE=65536\n").unwrap();
        let u = e.userns.unwrap();
        assert!(u.contains(524288) && u.contains(589823) && !u.contains(589824));
        assert!(!u.contains(524287));
        assert!(u.overlaps(&UidRange::new(589823, 1).unwrap()));
        assert!(!u.overlaps(&UidRange::new(589824, 65536).unwrap()));
        assert_eq!(Entry::parse("NAME=a\n").unwrap().userns, None);
        for bad in [
            "NAME=a\nUID_SHIFT=1\n",
            "NAME=a\nUID_RANGE=1\n",
            "NAME=a\nUID_SHIFT=4294901760\nUID_RANGE=65536\n",
            "NAME=a\nUID_SHIFT=0\nUID_RANGE=0\n",
            "NAME=a\nUID_SHIFT=-1\nUID_RANGE=5\n",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert!(e.format().contains("\nLINK_LOCAL=fe80::42:1%7\n"));
        assert_eq!(Entry::parse(&e.format()).unwrap(), e);
        assert!(e.is_alive());
    }

    #[test]
    fn link_local_pairs_are_all_valid_or_none() {
        let ll = |v: &str| {
            Entry::parse(&format!("NAME=a\nLINK_LOCAL={v}\n"))
                .unwrap()
                .link_local
        };
        assert_eq!(
            ll("fe80::1%3 fe80::2%4"),
            vec![
                ("fe80::1".parse().unwrap(), 3),
                ("fe80::2".parse().unwrap(), 4)
            ]
        );
        for bad in [
            "fe80::1%3 fd00::1%3",
            "fe80::1%3 fe80::2",
            "fe80::1%0",
            "fe80::1%ve-web",
            "10.0.0.1%3",
        ] {
            assert_eq!(ll(bad), vec![], "{bad}");
        }
        let many = vec!["fe80::1%3"; MAX_LINK_LOCAL + 1].join(" ");
        assert_eq!(ll(&many), vec![]);
        assert_eq!(
            ll(&vec!["fe80::1%3"; MAX_LINK_LOCAL].join(" ")).len(),
            MAX_LINK_LOCAL
        );
    }

    #[test]
    fn filter_record_old_entries_and_hostile_values() {
        // An entry from before the filter was recorded has none.
        let mut old = sample();
        old.syscall_filter = None;
        let text: String = old
            .format()
            .lines()
            .filter(|l| !l.starts_with("SYSCALL_FILTER") && !l.starts_with("NO_NEW_PRIVS"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = Entry::parse(&text).unwrap();
        assert_eq!(e.syscall_filter, None);
        assert!(!e.no_new_privs);
        // Empty lists are a recorded default filter.
        let mut plain = sample();
        plain.syscall_filter = Some(RecordedFilter {
            caps: Some(1),
            ..Default::default()
        });
        plain.no_new_privs = true;
        assert_eq!(Entry::parse(&plain.format()).unwrap(), plain);
        // Garbage stays visible (so that building the filter fails) but bounded.
        let long = "x".repeat(10_000);
        let e = Entry::parse(&format!(
            "NAME=ok\nSYSCALL_FILTER_DENY=keyctl {long} ~é\nSYSCALL_FILTER_CAPS=zz\nNO_NEW_PRIVS=yes"
        ))
        .unwrap();
        let f = e.syscall_filter.unwrap();
        assert_eq!(f.deny.len(), 3);
        assert_eq!(f.deny[0], "keyctl");
        assert!(f.deny[1].len() <= MAX_FILTER_WORD + 3);
        assert_eq!(f.deny[2], "~é");
        assert_eq!(f.caps, None);
        assert!(f.allow.is_empty());
        assert!(e.no_new_privs);
        let many = "a ".repeat(MAX_FILTER_WORDS + 10);
        let e = Entry::parse(&format!("NAME=ok\nSYSCALL_FILTER_ALLOW={many}")).unwrap();
        let allow = e.syscall_filter.unwrap().allow;
        assert_eq!(allow.len(), MAX_FILTER_WORDS + 1);
        assert!(allow.last().unwrap().starts_with('…'));
    }

    #[test]
    fn hostile_input_never_panics() {
        for text in [
            "",
            "=",
            "NAME",
            "NAME=",
            "NAME=-x",
            "NAME=ok\nLEADER=-1\nADDRESSES=garbage 1.2.3.4\\",
            "\\\\\\",
        ] {
            let _ = Entry::parse(text);
        }
        let e = Entry::parse("NAME=ok\nLEADER=99999999999\nADDRESSES=garbage 1.2.3.4").unwrap();
        assert_eq!(e.addresses, vec!["1.2.3.4".parse::<IpAddr>().unwrap()]);
        assert!(Entry::parse(&"A".repeat(MAX_ENTRY_SIZE + 1)).is_err());
    }

    /// A private run directory (removed by the test) and paths into it.
    fn temp_paths(tag: &str) -> (PathBuf, crate::paths::Paths) {
        let tmp = std::env::temp_dir().join(format!("netspawn-{tag}-{}", std::process::id()));
        let paths = crate::paths::Paths {
            run_dir: tmp.clone(),
            image_dir: tmp.join("img"),
            state_dir: tmp.join("state"),
            settings_path: vec![],
            cgroup_parent: "x".into(),
        };
        (tmp, paths)
    }

    #[test]
    fn claim_is_exclusive_and_stale_entries_go() {
        let (tmp, paths) = temp_paths("reg");
        let reg = Registry::new(&paths);
        let claim = reg.claim("web").unwrap();
        // flock is per open file description: a second open in the same process conflicts too.
        assert_eq!(
            reg.claim("web").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let e = sample();
        reg.write(&claim, &e).unwrap();
        assert_eq!(reg.list().unwrap(), vec![e.clone()]);
        assert_eq!(reg.get("web").unwrap(), Some(e.clone()));
        // A dead launcher's entry is stale.
        let mut dead = e.clone();
        dead.name = "old".into();
        dead.launcher_start += 1;
        fs::write(reg.entry_path("old"), dead.format()).unwrap();
        assert_eq!(reg.get("old").unwrap(), None);
        assert_eq!(reg.list().unwrap().len(), 1);
        assert!(!reg.entry_path("old").exists());
        let mut names = reg.names().unwrap();
        names.sort();
        assert_eq!(names, ["web"]);
        reg.remove(&claim, "web").unwrap();
        assert!(reg.list().unwrap().is_empty());
        assert!(reg.names().unwrap().is_empty());
        // Idle names can be held for a sweep; held ones cannot.
        assert!(reg.try_hold_idle("web").unwrap().is_none(), "web is held");
        let sweep = reg.try_hold_idle("idle").unwrap().expect("idle is idle");
        assert!(reg.try_hold_idle("idle").unwrap().is_none());
        drop(sweep);
        assert!(reg.try_hold_idle("idle").unwrap().is_some());
        assert!(reg.try_hold_idle("../x").unwrap().is_none());
        drop(claim);
        reg.claim("web").unwrap();
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_hosts_view_follows_the_entries() {
        let (tmp, paths) = temp_paths("hosts");
        let reg = Registry::new(&paths);
        let link = |name: &str| fs::read_link(reg.hosts_path(name)).ok();
        let claim = reg.claim("web").unwrap();
        let mut e = sample();
        e.addresses = vec![];
        let link_local = std::mem::take(&mut e.link_local);
        reg.write(&claim, &e).unwrap();
        assert_eq!(link("web"), None, "no addresses, no link");
        // Link-local addresses alone are published (the only answers NSS
        // gives for such a machine).
        e.link_local = link_local;
        reg.write(&claim, &e).unwrap();
        let target = link("web").expect("link-local only: link written");
        let parsed = crate::hosts::Target::parse(target.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(parsed.scoped().collect::<Vec<_>>(), e.link_local);
        assert_eq!(parsed.addresses().count(), 0);
        e.addresses = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        reg.write(&claim, &e).unwrap();
        let target = link("web").expect("link written with the entry");
        let target = target.as_os_str().as_encoded_bytes();
        let parsed = crate::hosts::Target::parse(target).unwrap();
        assert_eq!(parsed.launcher, e.launcher);
        assert_eq!(parsed.addresses().collect::<Vec<_>>(), e.addresses);
        assert_eq!(parsed.scoped().collect::<Vec<_>>(), e.link_local);
        e.addresses.clear();
        e.link_local.clear();
        reg.write(&claim, &e).unwrap();
        assert_eq!(link("web"), None, "addresses gone, link gone");
        e.addresses = vec!["10.0.0.3".parse().unwrap()];
        reg.write(&claim, &e).unwrap();
        reg.remove(&claim, "web").unwrap();
        assert_eq!(link("web"), None);
        // A dead launcher's link goes with its stale entry, whoever notices.
        reg.write(&claim, &e).unwrap();
        drop(claim);
        let mut dead = e.clone();
        dead.launcher_start += 1;
        fs::write(reg.entry_path("web"), dead.format()).unwrap();
        assert!(reg.list().unwrap().is_empty());
        assert_eq!(link("web"), None);
        reg.write(
            &reg.claim("db").unwrap(),
            &Entry {
                name: "db".into(),
                ..e.clone()
            },
        )
        .unwrap();
        assert!(link("db").is_some());
        // Claiming a name whose launcher died clears what it left.
        reg.claim("db").unwrap();
        assert_eq!(link("db"), None);
        assert!(!reg.entry_path("db").exists());
        let leftovers: Vec<_> = fs::read_dir(reg.hosts_path(""))
            .unwrap()
            .flatten()
            .map(|d| d.file_name())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_users_view_follows_the_entries() {
        use crate::users::{parse_id_target, parse_name_target};
        let (tmp, paths) = temp_paths("users");
        let reg = Registry::new(&paths);
        let read = |p: PathBuf| fs::read_link(p).ok().map(|t| t.into_os_string().into_vec());
        let range = UidRange::new(524288, 65536).unwrap();
        let claim = reg.claim("web").unwrap();
        let mut e = sample();
        e.userns = None;
        reg.write(&claim, &e).unwrap();
        assert_eq!(
            read(reg.userns_path("web")),
            None,
            "no user namespace, no link"
        );
        assert_eq!(fs::read_dir(paths.uids_dir()).unwrap().count(), 1, "other/");
        e.userns = Some(range);
        reg.write(&claim, &e).unwrap();
        let by_name = read(reg.userns_path("web")).expect("userns link");
        assert_eq!(parse_name_target(&by_name), Some((e.launcher, range)));
        let by_id = read(reg.uids_path(range)).expect("uids link");
        assert_eq!(parse_id_target(&by_id), Some((e.launcher, "web")));
        // A new range replaces the old one.
        let other = UidRange::new(655360, 131072).unwrap();
        e.userns = Some(other);
        reg.write(&claim, &e).unwrap();
        assert_eq!(read(reg.uids_path(range)), None);
        assert!(read(reg.uids_path(other)).is_some());
        assert!(reg
            .uids_path(other)
            .starts_with(paths.uids_dir().join("other")));
        // A range that another machine's link holds is not removed with ours.
        std::os::unix::fs::symlink("1 db", reg.uids_path(range)).unwrap();
        reg.remove(&claim, "web").unwrap();
        assert_eq!(read(reg.userns_path("web")), None);
        assert_eq!(read(reg.uids_path(other)), None);
        assert!(read(reg.uids_path(range)).is_some(), "db's link stays");
        fs::remove_file(reg.uids_path(range)).unwrap();
        // What a keeper calls after its launcher died.
        reg.write(&claim, &e).unwrap();
        remove_users_links(&paths.run_dir, "web").unwrap();
        assert_eq!(read(reg.userns_path("web")), None);
        assert_eq!(read(reg.uids_path(other)), None);
        remove_users_links(&paths.run_dir, "web").unwrap();
        remove_users_links(&paths.run_dir, "../x").unwrap();
        // A dead launcher's links go with its stale entry.
        reg.write(&claim, &e).unwrap();
        drop(claim);
        let mut dead = e.clone();
        dead.launcher_start += 1;
        fs::write(reg.entry_path("web"), dead.format()).unwrap();
        assert!(reg.list().unwrap().is_empty());
        let other_dir = paths.uids_dir().join(crate::users::OTHER_DIR);
        assert!(other_dir.is_dir());
        assert_eq!(fs::read_dir(paths.uids_dir()).unwrap().count(), 1);
        for dir in [paths.userns_dir(), other_dir] {
            let left: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|d| d.file_name())
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn entries_that_are_not_regular_files_are_skipped_without_blocking() {
        let (tmp, paths) = temp_paths("reg-types");
        let reg = Registry::new(&paths);
        let claim = reg.claim("web").unwrap();
        let e = sample();
        reg.write(&claim, &e).unwrap();
        let fifo =
            std::ffi::CString::new(reg.entry_path("fifo").into_os_string().into_vec()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", reg.entry_path("zero")).unwrap();
        std::os::unix::fs::symlink(reg.entry_path("web"), reg.entry_path("alias")).unwrap();
        fs::write(reg.entry_path("big"), "A".repeat(MAX_ENTRY_SIZE + 1)).unwrap();
        // On another thread, so a reader that blocks fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = Registry::new(&paths);
        std::thread::spawn(move || {
            let got = (
                r2.list(),
                ["fifo", "zero", "alias", "big"].map(|n| r2.get(n).map_err(|e| e.to_string())),
            );
            let _ = tx.send(got);
        });
        let (list, gets) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the registry reader blocked");
        assert_eq!(list.unwrap(), vec![e]);
        for g in gets {
            assert_eq!(g, Ok(None));
        }
        drop(claim);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
