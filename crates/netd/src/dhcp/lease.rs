//! The DHCP lease table and its crash-safe persistence.
//!
//! The table remembers, per client, the last address it was given and until when, including
//! leases that expired or were released: a client that comes back gets its old address again as
//! long as nobody else took it. It also remembers addresses that a client declined (found in use
//! on the link), which stay out of the pool for a while.
//!
//! Persistence is a log: a file of whole tables, each one line of JSON, the last whole line the
//! table ([`FileStore`]). A save appends the table as one line with one `write`, so a crash of
//! netd at any point leaves either the old or the new table, never a mix (a line cut short by a
//! crash of the host has no newline and is skipped when read). Once the log has grown past
//! [`COMPACT_AT`] (or many times its table), or when the file is not a log (one pretty-printed
//! table, as netd wrote it before), the next save replaces it atomically with one line
//! (temporary file, rename). The server saves before it sends an ACK (see [`LeaseStore`]), so
//! whatever a client was told survives a `kill -9`. There is no fsync on that path: a lease
//! matters while its machine runs, and no machine survives a crash of the host, while an fsync
//! on a busy disk costs every launch milliseconds (1 to 30 ms measured) between its DISCOVER and
//! its ACK. Appending instead of replacing matters too: a new file renamed over the old one cost
//! 0.4-0.5 ms on ext4 (a new inode, and ext4 starts writing the new file out before a rename
//! over another commits), an append about a tenth of that, and a launch with host0 configured
//! waits for that save.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the lease file format; bumped on incompatible changes.
const FORMAT_VERSION: u32 = 1;

/// Errors of loading or saving the lease table.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Reading, writing, syncing or renaming the lease file failed.
    #[error("{action} lease file {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The lease file is not valid JSON of the expected shape.
    #[error("parse lease file {path}: {source}")]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The lease file is well-formed but its content is not acceptable.
    #[error("lease file {path}: {reason}")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How a client is identified: by its client identifier (option 61) when it sends one, else by
/// hardware type and address, as RFC 2131 4.2 says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(Vec<u8>);

impl ClientKey {
    /// A key from a client identifier option's bytes.
    pub fn from_client_id(id: &[u8]) -> Self {
        let mut v = Vec::with_capacity(id.len() + 1);
        // A leading tag keeps a client id from colliding with a hardware address key.
        v.push(b'i');
        v.extend_from_slice(id);
        ClientKey(v)
    }

    /// A key from the hardware type and client hardware address.
    pub fn from_hwaddr(htype: u8, chaddr: &[u8]) -> Self {
        let mut v = Vec::with_capacity(chaddr.len() + 2);
        v.push(b'h');
        v.push(htype);
        v.extend_from_slice(chaddr);
        ClientKey(v)
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(s: &str) -> Option<Self> {
        if !s.len().is_multiple_of(2) || s.is_empty() || !s.is_ascii() {
            return None;
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(ClientKey(bytes))
    }
}

/// Where a binding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Acknowledged to the client; valid until `expires`.
    Bound,
    /// The client released it; kept so the client gets the same address next time.
    Released,
}

/// One client's binding: the address it has (or last had) and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The client.
    pub client: ClientKey,
    /// The client's hardware address (for display and for the DNS/registry side).
    pub hwaddr: Vec<u8>,
    /// The address.
    pub addr: Ipv4Addr,
    /// End of validity of a bound lease.
    pub expires: SystemTime,
    /// Bound or released.
    pub state: LeaseState,
    /// The host name the client sent (option 12), if any and valid.
    pub client_hostname: Option<String>,
    /// Bound for a running machine (its MAC was a live machine's): held for the machine's life
    /// rather than the lease's, and no longer held once the machine is gone.
    pub machine: bool,
}

impl Lease {
    /// Whether the address is in use by this client at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.state == LeaseState::Bound && self.expires > now
    }
}

/// All bindings of one DHCP server, plus declined addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    by_client: HashMap<ClientKey, Lease>,
    by_addr: HashMap<Ipv4Addr, ClientKey>,
    declined: HashMap<Ipv4Addr, SystemTime>,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The binding (active or not) of a client.
    pub fn get(&self, client: &ClientKey) -> Option<&Lease> {
        self.by_client.get(client)
    }

    /// The binding (active or not) that holds or last held an address.
    pub fn by_addr(&self, addr: Ipv4Addr) -> Option<&Lease> {
        self.by_addr.get(&addr).and_then(|k| self.by_client.get(k))
    }

    /// Every binding, active or not, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_client.values()
    }

    /// The bindings in use at `now`.
    pub fn active(&self, now: SystemTime) -> impl Iterator<Item = &Lease> {
        self.by_client.values().filter(move |l| l.is_active(now))
    }

    /// Number of bindings, active or not.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Whether the table has no binding.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Records a binding, replacing the client's previous one and any stale binding of another
    /// client to the same address. Refuses (returns false) if another client holds the address
    /// actively at `now`: an address is never given to two clients.
    pub fn insert(&mut self, lease: Lease, now: SystemTime) -> bool {
        self.insert_unless(lease, |other| other.is_active(now))
    }

    /// As [`LeaseTable::insert`], with the caller's rule for whether another client's binding
    /// to the same address still holds it (`blocks`); a binding that does not is replaced.
    pub fn insert_unless(&mut self, lease: Lease, blocks: impl Fn(&Lease) -> bool) -> bool {
        if let Some(other) = self.by_addr(lease.addr) {
            if other.client != lease.client && blocks(other) {
                return false;
            }
        }
        if let Some(old_key) = self.by_addr.remove(&lease.addr) {
            if old_key != lease.client {
                self.by_client.remove(&old_key);
            }
        }
        if let Some(old) = self.by_client.remove(&lease.client) {
            self.by_addr.remove(&old.addr);
        }
        self.declined.remove(&lease.addr);
        self.by_addr.insert(lease.addr, lease.client.clone());
        self.by_client.insert(lease.client.clone(), lease);
        true
    }

    /// Makes `key` the owner of the binding of hardware address `hwaddr` (its own if it has one,
    /// else the latest ending one), marked a machine's, and drops any other binding of that
    /// hardware address: a machine has one address per MAC, whatever client identity asks.
    pub fn adopt(&mut self, hwaddr: &[u8], key: &ClientKey) {
        let same: Vec<ClientKey> = self
            .by_client
            .values()
            .filter(|l| l.hwaddr == hwaddr)
            .map(|l| l.client.clone())
            .collect();
        let keep = if self.by_client.contains_key(key) {
            Some(key.clone())
        } else {
            same.iter()
                .max_by_key(|k| self.by_client.get(*k).map(|l| (l.expires, l.machine)))
                .cloned()
        };
        let Some(keep) = keep else { return };
        for k in same.iter().filter(|k| **k != keep) {
            if let Some(l) = self.by_client.remove(k) {
                self.by_addr.remove(&l.addr);
            }
        }
        if let Some(mut l) = self.by_client.remove(&keep) {
            l.client = key.clone();
            l.machine = true;
            self.by_addr.insert(l.addr, key.clone());
            self.by_client.insert(key.clone(), l);
        }
    }

    /// Marks a client's binding released (kept for stickiness). Returns whether it changed.
    pub fn release(&mut self, client: &ClientKey, addr: Ipv4Addr, now: SystemTime) -> bool {
        match self.by_client.get_mut(client) {
            Some(l) if l.addr == addr && l.state == LeaseState::Bound => {
                l.state = LeaseState::Released;
                l.expires = now;
                true
            }
            _ => false,
        }
    }

    /// Removes whatever binding holds `addr` and keeps the address out of use until `until`.
    pub fn decline(&mut self, addr: Ipv4Addr, until: SystemTime) {
        if let Some(key) = self.by_addr.remove(&addr) {
            self.by_client.remove(&key);
        }
        self.declined.insert(addr, until);
    }

    /// Whether `addr` was declined and is still quarantined at `now`.
    pub fn is_declined(&self, addr: Ipv4Addr, now: SystemTime) -> bool {
        self.declined.get(&addr).is_some_and(|until| *until > now)
    }

    /// Drops bindings whose address fails `keep` (e.g. outside a re-carved pool), and expired
    /// quarantines.
    pub fn retain_addrs(&mut self, now: SystemTime, keep: impl Fn(Ipv4Addr) -> bool) {
        let gone: Vec<ClientKey> = self
            .by_client
            .values()
            .filter(|l| !keep(l.addr))
            .map(|l| l.client.clone())
            .collect();
        for k in gone {
            if let Some(l) = self.by_client.remove(&k) {
                self.by_addr.remove(&l.addr);
            }
        }
        self.declined.retain(|a, until| keep(*a) && *until > now);
    }

    /// Drops the bindings `forget` selects (e.g. ended long ago, and not held by a running
    /// machine) and quarantines that ended before `now`; returns how many bindings went.
    pub fn forget(&mut self, now: SystemTime, forget: impl Fn(&Lease) -> bool) -> usize {
        let gone: Vec<ClientKey> = self
            .by_client
            .values()
            .filter(|l| forget(l))
            .map(|l| l.client.clone())
            .collect();
        for k in &gone {
            if let Some(l) = self.by_client.remove(k) {
                self.by_addr.remove(&l.addr);
            }
        }
        self.declined.retain(|_, until| *until > now);
        gone.len()
    }

    /// Loads a table from `path` (a log of tables, see the module's documentation, or one
    /// table); a missing file is an empty table.
    pub fn load(path: &Path) -> Result<Self, LeaseError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(source) => {
                return Err(LeaseError::Io {
                    action: "read",
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::from_log(&text).map_err(|e| match e {
            FromJsonError::Parse(source) => LeaseError::Parse {
                path: path.to_owned(),
                source,
            },
            FromJsonError::Invalid(reason) => LeaseError::Invalid {
                path: path.to_owned(),
                reason,
            },
        })
    }

    /// Replaces the file at `path` with the table (a log of one line) atomically: when this
    /// returns Ok, the new content is in the file and survives a crash of netd; when it fails,
    /// the old file is intact. [`FileStore`] appends to the file instead, and calls this to
    /// compact it.
    pub fn save(&self, path: &Path) -> Result<(), LeaseError> {
        let io_err = |action: &'static str, p: &Path| {
            let p = p.to_owned();
            move |source| LeaseError::Io {
                action,
                path: p,
                source,
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "leases".into());
        let tmp = dir.join(format!(".{name}.tmp"));
        let text = self.to_json();
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(text.as_bytes())
                .map_err(io_err("write", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(io_err("rename", path))?;
        Ok(())
    }

    /// The table as the lease file's JSON text.
    pub fn to_json(&self) -> String {
        let mut leases: Vec<LeaseRecord> = self
            .by_client
            .values()
            .map(|l| LeaseRecord {
                client: l.client.to_hex(),
                hwaddr: l.hwaddr.iter().map(|b| format!("{b:02x}")).collect(),
                addr: l.addr,
                expires: unix_secs(l.expires),
                state: l.state,
                hostname: l.client_hostname.clone(),
                machine: l.machine,
            })
            .collect();
        leases.sort_by_key(|r| u32::from(r.addr));
        let mut declined: Vec<DeclinedRecord> = self
            .declined
            .iter()
            .map(|(a, until)| DeclinedRecord {
                addr: *a,
                until: unix_secs(*until),
            })
            .collect();
        declined.sort_by_key(|r| u32::from(r.addr));
        let file = LeaseFile {
            version: FORMAT_VERSION,
            leases,
            declined,
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&file).unwrap_or_default() + "\n"
    }

    /// The table a lease file holds: its last whole line that starts a table (a log), or the
    /// whole text if no line does (one pretty-printed table, the format before the log). A last
    /// line without its newline was cut short by a crash of the host in its save, which had not
    /// returned, so no client was told of it: it is skipped, and a file of nothing else is empty.
    fn from_log(text: &str) -> Result<Self, FromJsonError> {
        let Some(end) = text.rfind('\n') else {
            return Ok(Self::new());
        };
        let whole = &text[..end];
        match whole.rsplit('\n').find(|l| l.starts_with("{\"")) {
            Some(line) => Self::from_json(line),
            None => Self::from_json(whole),
        }
    }

    fn from_json(text: &str) -> Result<Self, FromJsonError> {
        let file: LeaseFile = serde_json::from_str(text).map_err(FromJsonError::Parse)?;
        if file.version != FORMAT_VERSION {
            return Err(FromJsonError::Invalid(format!(
                "unsupported version {}",
                file.version
            )));
        }
        let mut table = LeaseTable::new();
        let mut records = file.leases;
        // If a damaged file names an address twice, the later-expiring binding wins, so the
        // table never holds one address for two clients.
        records.sort_by_key(|r| std::cmp::Reverse(r.expires));
        for r in records {
            let client = ClientKey::from_hex(&r.client)
                .ok_or_else(|| FromJsonError::Invalid(format!("bad client key {:?}", r.client)))?;
            let hwaddr = ClientKey::from_hex(&r.hwaddr)
                .map(|k| k.0)
                .unwrap_or_default();
            if table.by_addr.contains_key(&r.addr) || table.by_client.contains_key(&client) {
                continue;
            }
            let lease = Lease {
                client: client.clone(),
                hwaddr,
                addr: r.addr,
                expires: from_unix_secs(r.expires),
                state: r.state,
                client_hostname: r.hostname,
                machine: r.machine,
            };
            table.by_addr.insert(r.addr, client.clone());
            table.by_client.insert(client, lease);
        }
        for d in file.declined {
            table.declined.insert(d.addr, from_unix_secs(d.until));
        }
        Ok(table)
    }
}

enum FromJsonError {
    Parse(serde_json::Error),
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    version: u32,
    leases: Vec<LeaseRecord>,
    #[serde(default)]
    declined: Vec<DeclinedRecord>,
}

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    client: String,
    #[serde(default)]
    hwaddr: String,
    addr: Ipv4Addr,
    expires: u64,
    state: LeaseState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    machine: bool,
}

#[derive(Serialize, Deserialize)]
struct DeclinedRecord {
    addr: Ipv4Addr,
    until: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    // Round up so a persisted lease never ends before what the client was told.
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() + u64::from(d.subsec_nanos() > 0),
        Err(_) => 0,
    }
}

fn from_unix_secs(s: u64) -> SystemTime {
    // Clamp absurd values from a damaged file instead of overflowing.
    UNIX_EPOCH
        .checked_add(Duration::from_secs(s.min(1 << 40)))
        .unwrap_or(UNIX_EPOCH)
}

/// How long a binding is remembered after it ended (expired or released) and is not held by a
/// running machine: older ones are dropped when the table is saved.
pub const ENDED_HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many lease files of links that no longer exist [`prune_lease_dir`] keeps by default.
pub const LINK_HISTORY: usize = 64;

/// Sets the number of lease files of links that no longer exist netd keeps (tests, hosts that
/// launch many unique names); [`LINK_HISTORY`] when unset or not a number.
pub const ENV_LINK_HISTORY: &str = "NETSPAWN_NETD_LEASE_HISTORY";

/// The configured history of lease files (see [`ENV_LINK_HISTORY`]), at most 4096.
pub fn link_history() -> usize {
    std::env::var(ENV_LINK_HISTORY)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(LINK_HISTORY, |n| n.min(4096))
}

/// Removes lease files (`NAME.json`, one per link, and their stray temporary files) of links
/// that no longer exist: `keep(NAME)` says which links do. Of the others, the `history` most
/// recently written are kept (a machine that comes back within them finds its address again)
/// unless they are older than [`ENDED_HISTORY`] plus the longest lease; the rest are deleted.
/// Returns the names whose files were deleted. A missing directory is empty.
pub fn prune_lease_dir(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
    history: usize,
    now: SystemTime,
) -> io::Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let horizon = ENDED_HISTORY + Duration::from_secs(12 * 3600);
    let mut old: Vec<(SystemTime, String)> = Vec::new();
    let mut removed = Vec::new();
    for de in rd.flatten() {
        let Ok(fname) = de.file_name().into_string() else {
            continue;
        };
        // A temporary file left by a crash mid-save: `.NAME.json.tmp`.
        if let Some(name) = fname
            .strip_prefix('.')
            .and_then(|f| f.strip_suffix(".json.tmp"))
        {
            if !keep(name) {
                let _ = fs::remove_file(de.path());
            }
            continue;
        }
        let Some(name) = fname.strip_suffix(".json") else {
            continue;
        };
        if name.is_empty() || name.starts_with('.') || keep(name) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(de.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        old.push((mtime, name.to_string()));
    }
    // Newest first; ties by name so the result does not depend on directory order.
    old.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (i, (mtime, name)) in old.into_iter().enumerate() {
        let stale = now.duration_since(mtime).is_ok_and(|age| age > horizon);
        if i < history && !stale {
            continue;
        }
        match fs::remove_file(dir.join(format!("{name}.json"))) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Where the server persists its table. The server calls [`LeaseStore::save`] after every change
/// a client will be told about and before the reply is handed out, so an implementation that
/// returns Ok must have made the table durable.
pub trait LeaseStore: Send {
    /// Reads the persisted table.
    fn load(&mut self) -> Result<LeaseTable, LeaseError>;
    /// Persists the table durably.
    fn save(&mut self, table: &LeaseTable) -> Result<(), LeaseError>;
}

/// The size past which a lease log is compacted into one table at the next save (also once it
/// holds [`COMPACT_TABLES`] tables of the size being saved, for large tables).
pub const COMPACT_AT: u64 = 64 * 1024;

/// See [`COMPACT_AT`].
const COMPACT_TABLES: u64 = 8;

/// A lease file on disk (under netd's state directory, e.g.
/// `/var/lib/netspawn/leases/ve-web.json`): a log of tables, appended to on each save (see the
/// module's documentation). The file is opened for each save, not kept open: netd serves
/// hundreds of links, each with a store.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path`; the directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` (one table) to the file, made if missing, if the file is a log (empty,
    /// or starting with a table on one line and ending with a whole line) that is not due for
    /// compaction; false if it is not.
    fn append(&self, line: &str) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&self.path)?;
        let size = f.metadata()?.len();
        let len = line.len() as u64;
        if size + len > COMPACT_AT.max(len * COMPACT_TABLES) {
            return Ok(false);
        }
        if size > 0 {
            let (mut first, mut last) = ([0u8; 2], [0u8; 1]);
            f.read_exact_at(&mut first, 0)?;
            f.read_exact_at(&mut last, size - 1)?;
            if first != *b"{\"" || last[0] != b'\n' {
                return Ok(false);
            }
        }
        // One write: a table is a whole line or none (a regular file takes a write of this
        // size whole, unless the disk is full or the host crashes in it). A part that went in
        // leaves the file without its last newline: the next save replaces it.
        match f.write(line.as_bytes())? {
            n if n as u64 == len => Ok(true),
            _ => Err(io::Error::other("short write")),
        }
    }
}

impl LeaseStore for FileStore {
    fn load(&mut self) -> Result<LeaseTable, LeaseError> {
        LeaseTable::load(&self.path)
    }
    fn save(&mut self, table: &LeaseTable) -> Result<(), LeaseError> {
        let line = table.to_json();
        let appended = self.append(&line).map_err(|source| LeaseError::Io {
            action: "append to",
            path: self.path.clone(),
            source,
        })?;
        if appended {
            return Ok(());
        }
        // Not a log, or a long one: replaced by one line.
        table.save(&self.path)
    }
}

/// A store in memory, for tests and for links whose leases need not survive a restart. Clones
/// share the saved state, so a test can keep a handle and inspect or fail saves.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: std::sync::Arc<std::sync::Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    saved: Option<String>,
    saves: u64,
    fail: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes later saves fail (to test that nothing is acknowledged unsaved).
    pub fn set_failing(&self, fail: bool) {
        if let Ok(mut g) = self.inner.lock() {
            g.fail = fail;
        }
    }

    /// Number of successful saves.
    pub fn saves(&self) -> u64 {
        self.inner.lock().map(|g| g.saves).unwrap_or(0)
    }

    /// The last saved table, as the server would find it after a crash.
    pub fn saved_table(&self) -> LeaseTable {
        let text = self.inner.lock().ok().and_then(|g| g.saved.clone());
        text.and_then(|t| LeaseTable::from_json(&t).ok())
            .unwrap_or_default()
    }
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<LeaseTable, LeaseError> {
        Ok(self.saved_table())
    }
    fn save(&mut self, table: &LeaseTable) -> Result<(), LeaseError> {
        let mut g = self.inner.lock().map_err(|_| LeaseError::Invalid {
            path: PathBuf::from("<memory>"),
            reason: "store lock poisoned".into(),
        })?;
        if g.fail {
            return Err(LeaseError::Io {
                action: "write",
                path: PathBuf::from("<memory>"),
                source: io::Error::other("simulated failure"),
            });
        }
        g.saved = Some(table.to_json());
        g.saves += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn lease(mac: u8, addr: [u8; 4], expires: u64) -> Lease {
        let hw = vec![2, 0, 0, 0, 0, mac];
        Lease {
            client: ClientKey::from_hwaddr(1, &hw),
            hwaddr: hw,
            addr: addr.into(),
            expires: t(expires),
            state: LeaseState::Bound,
            client_hostname: Some(format!("h{mac}")),
            machine: false,
        }
    }

    #[test]
    fn insert_refuses_an_address_held_by_another_client() {
        let mut tbl = LeaseTable::new();
        assert!(tbl.insert(lease(1, [10, 0, 0, 2], 100), t(0)));
        assert!(!tbl.insert(lease(2, [10, 0, 0, 2], 100), t(50)));
        // Once expired, the address may go to someone else, and the stale binding goes away.
        assert!(tbl.insert(lease(2, [10, 0, 0, 2], 300), t(150)));
        assert_eq!(tbl.len(), 1);
        assert_eq!(
            tbl.by_addr([10, 0, 0, 2].into()).map(|l| l.hwaddr[5]),
            Some(2)
        );
    }

    #[test]
    fn file_round_trip_and_crash_safety() {
        let dir = std::env::temp_dir().join(format!("netd-lease-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leases.json");
        let mut tbl = LeaseTable::new();
        tbl.insert(lease(1, [10, 0, 0, 2], 1000), t(0));
        tbl.insert(lease(2, [10, 0, 0, 3], 1000), t(0));
        tbl.release(&lease(2, [0; 4], 0).client, [10, 0, 0, 3].into(), t(10));
        tbl.decline([10, 0, 0, 4].into(), t(2000));
        tbl.save(&path).unwrap();
        // A crash mid-save leaves a stray temporary file; the real file is untouched.
        fs::write(dir.join(".leases.json.tmp"), b"{ garbage").unwrap();
        let back = LeaseTable::load(&path).unwrap();
        assert_eq!(back, tbl);
        assert!(back.is_declined([10, 0, 0, 4].into(), t(100)));
        assert!(!back.is_declined([10, 0, 0, 4].into(), t(3000)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_files_are_refused_or_deduplicated() {
        assert!(matches!(
            LeaseTable::from_json("{"),
            Err(FromJsonError::Parse(_))
        ));
        assert!(matches!(
            LeaseTable::from_json(r#"{"version":9,"leases":[]}"#),
            Err(FromJsonError::Invalid(_))
        ));
        assert!(matches!(
            LeaseTable::from_json(
                r#"{"version":1,"leases":[{"client":"zz","addr":"10.0.0.2","expires":5,"state":"bound"}]}"#
            ),
            Err(FromJsonError::Invalid(_))
        ));
        let dup = r#"{"version":1,"leases":[
            {"client":"6801020000000001","addr":"10.0.0.2","expires":5,"state":"bound"},
            {"client":"6801020000000002","addr":"10.0.0.2","expires":99,"state":"bound"}]}"#;
        let tbl = LeaseTable::from_json(dup).ok().unwrap();
        assert_eq!(tbl.len(), 1);
        assert_eq!(
            tbl.by_addr([10, 0, 0, 2].into())
                .map(|l| unix_secs(l.expires)),
            Some(99)
        );
    }

    /// Item 9: the lease directory keeps the files of existing links and a bounded history.
    #[test]
    fn lease_files_of_gone_links_are_pruned_to_a_bounded_history() {
        let dir = std::env::temp_dir().join(format!("netd-lease-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let now = SystemTime::now();
        // 100 links ever seen, written one second apart (ve-m99 newest); 3 still exist.
        for i in 0..100u64 {
            let p = dir.join(format!("ve-m{i}.json"));
            fs::write(&p, "{}").unwrap();
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(now - Duration::from_secs(1000 - i)).unwrap();
        }
        // One untouched for longer than the history, a crash's leftover, an unrelated file.
        let old = dir.join("ve-old.json");
        fs::write(&old, "{}").unwrap();
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(now - ENDED_HISTORY - Duration::from_secs(86_400))
            .unwrap();
        fs::write(dir.join(".ve-m5.json.tmp"), "x").unwrap();
        fs::write(dir.join(".vz-lab.json.tmp"), "x").unwrap();
        fs::write(dir.join("README"), "x").unwrap();
        let exists = |n: &str| ["ve-m0", "ve-m1", "vz-lab"].contains(&n);
        let gone = prune_lease_dir(&dir, exists, 10, now).unwrap();
        assert_eq!(gone.len(), 100 - 2 - 10 + 1, "{gone:?}");
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want: Vec<String> = (90..100).map(|i| format!("ve-m{i}.json")).collect();
        want.extend(["ve-m0.json", "ve-m1.json", ".vz-lab.json.tmp", "README"].map(String::from));
        want.sort();
        assert_eq!(left, want);
        // Idempotent, and a missing directory is fine.
        assert!(prune_lease_dir(&dir, exists, 10, now).unwrap().is_empty());
        assert!(prune_lease_dir(&dir.join("none"), exists, 10, now)
            .unwrap()
            .is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_machine_flag_round_trips_and_old_files_read_without_it() {
        let mut tbl = LeaseTable::new();
        let mut l = lease(1, [10, 0, 0, 2], 100);
        l.machine = true;
        tbl.insert(l, t(0));
        tbl.insert(lease(2, [10, 0, 0, 3], 100), t(0));
        let json = tbl.to_json();
        assert_eq!(json.matches("\"machine\":true").count(), 1, "{json}");
        assert_eq!(LeaseTable::from_json(&json).ok(), Some(tbl));
        // A file of the format before the flag reads as "no machine".
        let old = r#"{"version":1,"leases":[
            {"client":"6801020000000001","addr":"10.0.0.2","expires":5,"state":"bound"}]}"#;
        let tbl = LeaseTable::from_json(old).ok().unwrap();
        assert!(tbl.iter().all(|l| !l.machine));
    }

    #[test]
    fn adopt_makes_one_machine_binding_per_mac() {
        let hw = vec![2, 0, 0, 0, 0, 1];
        let by_id = |id: u8, addr: [u8; 4], expires: u64| Lease {
            client: ClientKey::from_client_id(&[id]),
            hwaddr: hw.clone(),
            addr: addr.into(),
            expires: t(expires),
            state: LeaseState::Bound,
            client_hostname: None,
            machine: false,
        };
        let machine = ClientKey::from_hwaddr(1, &hw);
        let mut tbl = LeaseTable::new();
        tbl.insert(by_id(1, [10, 0, 0, 2], 100), t(0));
        tbl.insert(by_id(2, [10, 0, 0, 3], 300), t(0));
        tbl.insert(lease(9, [10, 0, 0, 9], 100), t(0));
        tbl.adopt(&hw, &machine);
        // The latest ending binding becomes the machine's; the other of that MAC goes.
        assert_eq!(tbl.len(), 2);
        let l = tbl.get(&machine).unwrap();
        assert_eq!((l.addr, l.machine), (Ipv4Addr::new(10, 0, 0, 3), true));
        assert_eq!(tbl.by_addr([10, 0, 0, 3].into()).unwrap().client, machine);
        assert!(tbl.by_addr([10, 0, 0, 2].into()).is_none());
        // Idempotent; a MAC without bindings changes nothing.
        let before = tbl.clone();
        tbl.adopt(&hw, &machine);
        tbl.adopt(
            &[2, 0, 0, 0, 0, 7],
            &ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, 7]),
        );
        assert_eq!(tbl, before);
    }

    #[test]
    fn forget_drops_selected_bindings_and_ended_quarantines() {
        let mut tbl = LeaseTable::new();
        tbl.insert(lease(1, [10, 0, 0, 2], 100), t(0));
        tbl.insert(lease(2, [10, 0, 0, 3], 900), t(0));
        tbl.decline([10, 0, 0, 4].into(), t(50));
        assert_eq!(tbl.forget(t(200), |l| l.expires < t(150)), 1);
        assert_eq!(tbl.len(), 1);
        assert!(tbl.by_addr([10, 0, 0, 2].into()).is_none());
        assert!(
            tbl.to_json().contains("\"declined\":[]"),
            "{}",
            tbl.to_json()
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netd-lease-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn inode(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn saves_append_to_the_log_until_it_is_compacted() {
        let dir = scratch("log");
        let path = dir.join("ve-a.json");
        let mut store = FileStore::new(&path);
        let mut tbl = LeaseTable::new();
        tbl.insert(lease(1, [10, 0, 0, 2], 1000), t(0));
        store.save(&tbl).unwrap();
        let ino = inode(&path);
        tbl.insert(lease(2, [10, 0, 0, 3], 1000), t(0));
        store.save(&tbl).unwrap();
        // Appended to the same file: two tables, the last one read.
        assert_eq!(inode(&path), ino);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(LeaseTable::load(&path).unwrap(), tbl);
        assert_eq!(FileStore::new(&path).load().unwrap(), tbl);
        // Until the log is long: then it is replaced by one table.
        let line = tbl.to_json().len() as u64;
        let saves = COMPACT_AT / line;
        for i in 0..saves {
            tbl.insert(lease(3, [10, 0, 0, 4], 2000 + i), t(0));
            store.save(&tbl).unwrap();
        }
        assert_ne!(inode(&path), ino, "never compacted");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= COMPACT_AT, "{}", text.len());
        assert!(text.lines().count() < saves as usize);
        assert_eq!(LeaseTable::load(&path).unwrap(), tbl);
        // And appended to again.
        let ino = inode(&path);
        tbl.release(&lease(1, [0; 4], 0).client, [10, 0, 0, 2].into(), t(10));
        store.save(&tbl).unwrap();
        assert_eq!(inode(&path), ino);
        assert_eq!(LeaseTable::load(&path).unwrap(), tbl);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_the_next_save_rewrites_the_file() {
        let dir = scratch("torn");
        let path = dir.join("ve-a.json");
        let mut one = LeaseTable::new();
        one.insert(lease(1, [10, 0, 0, 2], 1000), t(0));
        FileStore::new(&path).save(&one).unwrap();
        // A crash of the host in the middle of the next save.
        let mut two = one.clone();
        two.insert(lease(2, [10, 0, 0, 3], 1000), t(0));
        let cut = &two.to_json()[..30];
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(cut.as_bytes())
            .unwrap();
        assert_eq!(LeaseTable::load(&path).unwrap(), one);
        // A file holding only a cut line: that save never returned, nothing was told.
        let lone = dir.join("ve-b.json");
        fs::write(&lone, cut).unwrap();
        assert!(LeaseTable::load(&lone).unwrap().is_empty());
        // The next save does not append after the cut line.
        let ino = inode(&path);
        FileStore::new(&path).save(&two).unwrap();
        assert_ne!(inode(&path), ino);
        assert_eq!(fs::read_to_string(&path).unwrap(), two.to_json());
        assert_eq!(LeaseTable::load(&path).unwrap(), two);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_of_one_pretty_printed_table_is_read_and_becomes_a_log() {
        let dir = scratch("pretty");
        let path = dir.join("ve-a.json");
        let mut tbl = LeaseTable::new();
        tbl.insert(lease(1, [10, 0, 0, 2], 1000), t(0));
        tbl.decline([10, 0, 0, 4].into(), t(2000));
        let value: serde_json::Value = serde_json::from_str(&tbl.to_json()).unwrap();
        fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
        assert_eq!(LeaseTable::load(&path).unwrap(), tbl);
        let mut store = FileStore::new(&path);
        tbl.insert(lease(2, [10, 0, 0, 3], 1000), t(0));
        store.save(&tbl).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), tbl.to_json());
        let ino = inode(&path);
        store.save(&tbl).unwrap();
        assert_eq!(inode(&path), ino);
        assert_eq!(LeaseTable::load(&path).unwrap(), tbl);
        // Damage is still refused, in either format.
        fs::write(&path, "{ garbage\n").unwrap();
        assert!(LeaseTable::load(&path).is_err());
        fs::write(&path, "{\"version\":1,\"leases\":[}\n").unwrap();
        assert!(LeaseTable::load(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_empty() {
        let tbl = LeaseTable::load(Path::new("/nonexistent/netd/leases.json")).unwrap();
        assert!(tbl.is_empty());
    }
}
