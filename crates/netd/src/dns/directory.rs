//! Where the DNS server learns which machines exist: the [`MachineDirectory`]
//! trait, [`RegistryDirectory`] over netspawn's machine registry (cached in
//! memory, so answering a query never touches the file system in the steady
//! state), and [`StaticDirectory`], a fixed table for tests and fuzzing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use netspawn_common::paths::Paths;
use netspawn_common::registry::{Entry, Registry};

/// The machines the DNS server answers for. Names are compared
/// case-insensitively: callers pass them lowercased, implementations store
/// them lowercased.
pub trait MachineDirectory: Send + Sync + 'static {
    /// Addresses of the running machine `name` (lowercase, no trailing dot);
    /// empty if there is no such machine or it has no address yet.
    fn addresses(&self, name: &str) -> Vec<IpAddr>;

    /// Whether a machine called `name` is running, even with no address (so
    /// that a query for it is NODATA rather than NXDOMAIN).
    fn exists(&self, name: &str) -> bool {
        !self.addresses(name).is_empty()
    }

    /// The name of the machine that has `addr`, for PTR answers.
    fn name_of(&self, addr: IpAddr) -> Option<String>;

    /// A number that changes whenever the table behind this directory may
    /// have changed, so that answers precomputed from a [`snapshot`] can be
    /// reused until then. `None` (the default): no snapshot, so nothing may
    /// be precomputed.
    ///
    /// [`snapshot`]: MachineDirectory::snapshot
    fn generation(&self) -> Option<u64> {
        None
    }

    /// The whole table as it is now, with the [`generation`] it belongs to
    /// (read before the table, so a change in between only causes one more
    /// rebuild). `None` when [`generation`] is `None`.
    ///
    /// [`generation`]: MachineDirectory::generation
    fn snapshot(&self) -> Option<(u64, Arc<StaticDirectory>)> {
        None
    }
}

/// An immutable name/address table; the cache inside [`RegistryDirectory`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaticDirectory {
    by_name: HashMap<String, Vec<IpAddr>>,
    by_addr: HashMap<IpAddr, String>,
}

impl StaticDirectory {
    /// Builds a table from `(name, addresses)` pairs. Names are lowercased,
    /// each address is kept once per name; when two machines claim one
    /// address, the first in the input wins PTR.
    pub fn new<I, S>(machines: I) -> StaticDirectory
    where
        I: IntoIterator<Item = (S, Vec<IpAddr>)>,
        S: AsRef<str>,
    {
        let mut dir = StaticDirectory::default();
        for (name, addrs) in machines {
            let name = name.as_ref().to_ascii_lowercase();
            for a in &addrs {
                dir.by_addr.entry(*a).or_insert_with(|| name.clone());
            }
            // Each address once (a registry entry may list one twice).
            let known = dir.by_name.entry(name).or_default();
            for a in addrs {
                if !known.contains(&a) {
                    known.push(a);
                }
            }
        }
        dir
    }

    fn from_entries(entries: &[Entry]) -> StaticDirectory {
        StaticDirectory::new(entries.iter().map(|e| (&e.name, e.addresses.clone())))
    }

    /// Number of machines in the table.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every machine with its addresses (lowercase names, in no order).
    pub fn machines(&self) -> impl Iterator<Item = (&str, &[IpAddr])> {
        self.by_name.iter().map(|(n, a)| (n.as_str(), a.as_slice()))
    }
}

impl MachineDirectory for StaticDirectory {
    fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.by_name.get(name).cloned().unwrap_or_default()
    }

    fn exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn name_of(&self, addr: IpAddr) -> Option<String> {
        self.by_addr.get(&addr).cloned()
    }

    /// Immutable: always the same generation.
    fn generation(&self) -> Option<u64> {
        Some(0)
    }

    fn snapshot(&self) -> Option<(u64, Arc<StaticDirectory>)> {
        Some((0, Arc::new(self.clone())))
    }
}

/// How often the registry directory's mtime is looked at (at most).
const STAT_INTERVAL: Duration = Duration::from_millis(100);
/// How often the registry is re-read even if its directory did not change:
/// a launcher killed before its keeper removed the entry leaves the directory
/// untouched, and entries are only dropped once their launcher is seen dead.
const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Directory timestamps have the kernel's coarse clock resolution: a change in
/// the same tick as our read would keep the same mtime. While the mtime is
/// this recent, keep re-reading.
const MTIME_SETTLE: Duration = Duration::from_millis(50);

/// What the cache last saw of the registry directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    mtime: Option<SystemTime>,
    ino: u64,
}

/// [`MachineDirectory`] over netspawn's machine registry
/// (`<run_dir>/machines/`). The registry is read into memory and re-read as
/// soon as it changes, so queries are answered from memory: a watcher thread
/// (inotify) raises a flag that the query path checks without a system call.
/// Where inotify is not available, the directory's mtime is checked instead
/// (at most every 100 ms, from the query path). Either way it is re-read
/// every 5 s regardless.
pub struct RegistryDirectory {
    /// Set by the watcher thread on every change to the directory.
    watch: Arc<Watch>,
    registry: Registry,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last mtime check.
    last_check_ms: AtomicU64,
    /// Only one caller reloads at a time; the others use the old table.
    reload: Mutex<ReloadState>,
    table: RwLock<Arc<StaticDirectory>>,
    /// Bumped each time the table's content changes (not on a re-read that
    /// found the same machines): see [`MachineDirectory::generation`].
    generation: AtomicU64,
    /// Milliseconds since `epoch` of the last re-read.
    loaded_ms: AtomicU64,
}

/// The registry directory's watcher: a thread blocked in inotify that raises
/// `changed` on every change, while the directory (its `Arc`) is alive.
#[derive(Default)]
struct Watch {
    /// The watch is in place (else the mtime check is used).
    active: AtomicBool,
    changed: AtomicBool,
}

impl Watch {
    /// How long the watcher waits between looks at whether its directory is
    /// still wanted (and, while the registry directory does not exist yet,
    /// between attempts to watch it).
    const TICK: Duration = Duration::from_millis(500);

    fn start(watch: &Arc<Watch>, dir: PathBuf) {
        let weak = Arc::downgrade(watch);
        let spawned = std::thread::Builder::new()
            .name("registry-watch".into())
            .spawn(move || Watch::run(&weak, &dir));
        if let Err(e) = spawned {
            tracing::warn!(%e, "cannot watch the machine registry; checking its mtime instead");
        }
    }

    fn run(weak: &std::sync::Weak<Watch>, dir: &std::path::Path) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        use std::os::fd::AsFd;
        let inotify = match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(err = %e, "inotify; checking the registry's mtime instead");
                return;
            }
        };
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        let gone =
            AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
        let tick = PollTimeout::try_from(Watch::TICK).unwrap_or(PollTimeout::MAX);
        let mut watching = false;
        loop {
            let Some(watch) = weak.upgrade() else {
                return;
            };
            if !watching && inotify.add_watch(dir, mask).is_ok() {
                watching = true;
                // Whatever happened before the watch: read it all once.
                watch.changed.store(true, Ordering::Release);
                watch.active.store(true, Ordering::Release);
            }
            drop(watch);
            let mut pfd = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut pfd, tick), Ok(n) if n > 0) {
                continue;
            }
            let Ok(events) = inotify.read_events() else {
                continue;
            };
            let Some(watch) = weak.upgrade() else {
                return;
            };
            watch.changed.store(true, Ordering::Release);
            // The directory itself went (IN_IGNORED follows): watch it anew
            // once it is back, with the mtime check meanwhile.
            if events.iter().any(|ev| ev.mask.intersects(gone)) {
                watching = false;
                watch.active.store(false, Ordering::Release);
            }
        }
    }
}

struct ReloadState {
    stamp: Option<DirStamp>,
    loaded_at: Instant,
    /// The last stamp was too fresh to trust (see [`MTIME_SETTLE`]).
    unsettled: bool,
}

impl RegistryDirectory {
    /// A directory over the registry at the locations from the environment
    /// (`NETSPAWN_RUN_DIR`, default `/run/netspawn`).
    pub fn from_env() -> RegistryDirectory {
        RegistryDirectory::new(Registry::new(&Paths::from_env()))
    }

    /// A directory over `registry`, read once now, with its watcher.
    pub fn new(registry: Registry) -> RegistryDirectory {
        let now = Instant::now();
        let watch = Arc::new(Watch::default());
        Watch::start(&watch, registry.dir().to_path_buf());
        let dir = RegistryDirectory {
            watch,
            registry,
            epoch: now,
            last_check_ms: AtomicU64::new(0),
            reload: Mutex::new(ReloadState {
                stamp: None,
                loaded_at: now,
                unsettled: true,
            }),
            table: RwLock::new(Arc::new(StaticDirectory::default())),
            generation: AtomicU64::new(0),
            loaded_ms: AtomicU64::new(0),
        };
        dir.refresh(true);
        dir
    }

    /// The registry directory this reads.
    pub fn path(&self) -> PathBuf {
        self.registry.dir().to_path_buf()
    }

    /// Re-reads the registry now, whatever the cache thinks.
    pub fn reload_now(&self) {
        self.refresh(true);
    }

    fn stamp(&self) -> Option<DirStamp> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(self.registry.dir()).ok()?;
        Some(DirStamp {
            mtime: md.modified().ok(),
            ino: md.ino(),
        })
    }

    /// Cheap check from the query path. With the watcher running: an atomic
    /// flag (a re-read when it is up) and the clock for the periodic re-read.
    /// Without: at most one `stat` per [`STAT_INTERVAL`], a re-read only when
    /// something changed.
    fn maybe_refresh(&self) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if self.watch.active.load(Ordering::Acquire) {
            if self.watch.changed.swap(false, Ordering::AcqRel) {
                // A change during the re-read raises the flag again.
                if !self.refresh(true) {
                    self.watch.changed.store(true, Ordering::Release);
                }
                return;
            }
            let loaded = self.loaded_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(loaded) >= FULL_RELOAD_INTERVAL.as_millis() as u64 {
                self.refresh(false);
            }
            return;
        }
        let last = self.last_check_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < STAT_INTERVAL.as_millis() as u64 {
            return;
        }
        if self
            .last_check_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another thread is checking
        }
        self.refresh(false);
    }

    /// Re-reads the registry if `force`, or if the cached stamp says it may
    /// have changed, or it is time for the periodic re-read. False if
    /// another caller was already re-reading (the caller's change may be
    /// after that read).
    fn refresh(&self, force: bool) -> bool {
        let Ok(mut state) = self.reload.try_lock() else {
            return false;
        };
        let stamp = self.stamp();
        let stale = state.loaded_at.elapsed() >= FULL_RELOAD_INTERVAL;
        if !force && !stale && !state.unsettled && stamp == state.stamp {
            return true;
        }
        // A missing directory is an empty registry; an unreadable one keeps
        // the old table rather than making every machine vanish.
        let entries = match self.registry.list() {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(dir = %self.registry.dir().display(), %err, "cannot read the machine registry");
                return true;
            }
        };
        let table = Arc::new(StaticDirectory::from_entries(&entries));
        if let Ok(mut t) = self.table.write() {
            if **t != *table {
                *t = table;
                // Release: a reader that sees the new number also sees the
                // new table (it takes the lock after reading the number).
                self.generation.fetch_add(1, Ordering::Release);
            }
        }
        state.unsettled = stamp
            .and_then(|s| s.mtime)
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < MTIME_SETTLE);
        state.stamp = stamp;
        state.loaded_at = Instant::now();
        self.loaded_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        true
    }

    fn table(&self) -> Arc<StaticDirectory> {
        self.maybe_refresh();
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl MachineDirectory for RegistryDirectory {
    fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.table().addresses(name)
    }

    fn exists(&self, name: &str) -> bool {
        self.table().exists(name)
    }

    fn name_of(&self, addr: IpAddr) -> Option<String> {
        self.table().name_of(addr)
    }

    fn generation(&self) -> Option<u64> {
        self.maybe_refresh();
        Some(self.generation.load(Ordering::Acquire))
    }

    fn snapshot(&self) -> Option<(u64, Arc<StaticDirectory>)> {
        let generation = self.generation.load(Ordering::Acquire);
        let table = match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Some((generation, table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_directory_is_case_insensitive_and_first_wins_ptr() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let d = StaticDirectory::new([("Web", vec![a]), ("db", vec![a]), ("empty", vec![])]);
        assert_eq!(d.addresses("web"), vec![a]);
        assert_eq!(d.name_of(a).as_deref(), Some("web"));
        assert!(d.exists("empty"));
        assert!(d.addresses("empty").is_empty());
        assert!(!d.exists("nope"));
        assert_eq!(d.len(), 3);
    }

    /// A registry in a private run directory (removed by the test).
    fn temp_registry(tag: &str) -> (PathBuf, Registry) {
        let tmp = std::env::temp_dir().join(format!("netd-{tag}-{}", std::process::id()));
        let paths = Paths {
            run_dir: tmp.clone(),
            image_dir: tmp.join("img"),
            state_dir: tmp.join("state"),
            settings_path: vec![],
            cgroup_parent: "x".into(),
        };
        (tmp, Registry::new(&paths))
    }

    /// An entry owned by this (running) test process.
    fn live_entry(name: &str, addr: &str) -> Entry {
        let me = std::process::id();
        Entry {
            name: name.into(),
            launcher: me,
            launcher_start: netspawn_common::registry::process_start_time(me).unwrap(),
            addresses: vec![addr.parse().unwrap()],
            ..Entry::default()
        }
    }

    #[test]
    fn registry_directory_follows_the_registry() {
        let (tmp, reg) = temp_registry("dnsdir");
        let dir = RegistryDirectory::new(reg.clone());
        assert!(dir.addresses("web").is_empty());

        let claim = reg.claim("web").unwrap();
        let entry = live_entry("web", "10.1.2.3");
        reg.write(&claim, &entry).unwrap();
        // Picked up within the stat interval, from the query path alone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while dir.addresses("web").is_empty() {
            assert!(Instant::now() < deadline, "registry change not seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            dir.name_of("10.1.2.3".parse().unwrap()).as_deref(),
            Some("web")
        );
        reg.remove(&claim, "web").unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while dir.exists("web") {
            assert!(Instant::now() < deadline, "registry removal not seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(claim);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_query_after_a_change_sees_it() {
        let (tmp, reg) = temp_registry("dnswatch");
        std::fs::create_dir_all(reg.dir()).unwrap();
        let dir = RegistryDirectory::new(reg.clone());
        let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !cond() {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait_for("the watch is in place", &|| {
            dir.watch.active.load(Ordering::Acquire)
        });
        // A query now, so that the mtime check (had it been used) would not
        // look again for a while.
        assert!(dir.addresses("web").is_empty());
        let claim = reg.claim("web").unwrap();
        let entry = live_entry("web", "10.1.2.4");
        reg.write(&claim, &entry).unwrap();
        wait_for("the watcher saw the change", &|| {
            dir.watch.changed.load(Ordering::Acquire)
        });
        assert_eq!(dir.addresses("web"), entry.addresses);
        drop(dir);
        drop(claim);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
