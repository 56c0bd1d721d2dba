//! Choosing a container's UID/GID range as systemd-nspawn does: `yes` takes
//! the root directory's owner range, `pick` the root's range if it is a
//! free multiple of 65536, else the first free 65536-aligned range between
//! [`PICK_MIN`] and [`PICK_MAX`]. Free means no running machine's range
//! overlaps it, no other launcher holds its lock file
//! (`<run>/locks/uid-BASE.lock`, held for the machine's life, as systemd's
//! `/run/systemd/nspawn-uid/BASE`: it covers machines that are not
//! registered) and no host user or group has an ID at its ends (see
//! [`HostIds`]: /etc/passwd and /etc/group are read directly where NSS
//! could say no more). Launches pick under one lock file
//! (`<run>/locks/userns.lock`), held only for the pick: a range lock file
//! says which range it holds and for which machine (`SHIFT RANGE NAME`),
//! and the picker counts every held one as taken ([`held_ranges`]), so a
//! machine that has picked but is not registered yet is seen, and launches
//! do not wait for each other's registration (a lab of 300 `-U` machines
//! would start one at a time).

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use thiserror::Error;

use super::{Mode, UidRange, RANGE_16};

/// The first base `pick` tries (systemd's UID_SHIFT_PICK_MIN).
pub const PICK_MIN: u32 = 0x0008_0000;
/// The last base `pick` tries (systemd's UID_SHIFT_PICK_MAX).
pub const PICK_MAX: u32 = 0x6FFF_0000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PickError {
    #[error("UID range {shift}:{range} overlaps the range of running machine '{name}' ({oshift}:{orange})", shift = .range.shift, range = .range.range, oshift = .other.shift, orange = .other.range)]
    Overlap {
        range: UidRange,
        name: String,
        other: UidRange,
    },
    #[error("UID and GID base of {path} do not match ({uid} and {gid})")]
    Mismatch { path: String, uid: u32, gid: u32 },
    #[error("UID range {shift}:{range} is in use by another container", shift = .0.shift, range = .0.range)]
    InUse(UidRange),
    #[error("No free UID range of 65536 between {PICK_MIN} and {PICK_MAX}")]
    Exhausted,
    #[error("{what}: {err}")]
    Io { what: String, err: String },
}

/// Takes the pick lock (blocking: another launch holds it only from its
/// pick until its registry entry is written).
pub fn lock(locks_dir: &Path) -> Result<File, PickError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| PickError::Io {
            what,
            err: err.to_string(),
        }
    };
    fs::create_dir_all(locks_dir).map_err(io(&locks_dir.display().to_string()))?;
    let path = locks_dir.join("userns.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path.display().to_string()))?;
    file.lock()
        .map_err(io(&format!("lock {}", path.display())))?;
    Ok(file)
}

/// Locks `range` for machine `name`'s life (the file of its first ID,
/// which then says `SHIFT RANGE NAME`); None if another launcher holds it.
/// Called under the pick lock.
pub fn try_range_lock(
    locks_dir: &Path,
    range: UidRange,
    name: &str,
) -> Result<Option<File>, PickError> {
    use std::io::Write;
    let path = locks_dir.join(format!("uid-{}.lock", range.shift));
    let io = |err: std::io::Error| PickError::Io {
        what: path.display().to_string(),
        err: err.to_string(),
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(None),
        Err(fs::TryLockError::Error(err)) => return Err(io(err)),
    }
    file.set_len(0).map_err(io)?;
    file.write_all(format!("{} {} {name}\n", range.shift, range.range).as_bytes())
        .map_err(io)?;
    Ok(Some(file))
}

/// The ranges whose lock files other launchers hold, with their machines'
/// names (a file that does not say: 65536 IDs from its name's base, "another
/// container"). A lock file nobody holds is removed. Called under the pick
/// lock: range locks are taken only under it, so nobody is between opening
/// one and locking it.
pub fn held_ranges(locks_dir: &Path) -> Result<Vec<(String, UidRange)>, PickError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |err: std::io::Error| PickError::Io {
            what,
            err: err.to_string(),
        }
    };
    let mut held = Vec::new();
    let dir = match fs::read_dir(locks_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(held),
        Err(e) => return Err(io(locks_dir)(e)),
    };
    for entry in dir {
        let entry = entry.map_err(io(locks_dir))?;
        let file_name = entry.file_name();
        let Some(shift) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix("uid-")?.strip_suffix(".lock"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        match file.try_lock() {
            Ok(()) => {
                // Nobody's: gone, so the directory holds only live ranges.
                let _ = fs::remove_file(&path);
                continue;
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(err)) => return Err(io(&path)(err)),
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut words = text.split_whitespace();
        let said = match (words.next(), words.next(), words.next()) {
            (Some(s), Some(r), Some(n)) if s.parse() == Ok(shift) => r
                .parse()
                .ok()
                .and_then(|r| UidRange::new(shift, r))
                .map(|r| (n.to_string(), r)),
            _ => None,
        };
        held.extend(said.or_else(|| {
            UidRange::new(shift, RANGE_16).map(|r| ("another container".to_string(), r))
        }));
    }
    Ok(held)
}

/// The root directory's owner (UID, GID).
pub fn root_owner(root: &Path) -> Result<(u32, u32), PickError> {
    let md = fs::metadata(root).map_err(|err| PickError::Io {
        what: root.display().to_string(),
        err: err.to_string(),
    })?;
    Ok((md.uid(), md.gid()))
}

/// True if the host has a user or group with this ID, as getpwuid(3) and
/// getgrgid(3) see it (through NSS).
pub fn host_has_id(id: u32) -> bool {
    use nix::unistd::{Gid, Group, Uid, User};
    matches!(User::from_uid(Uid::from_raw(id)), Ok(Some(_)))
        || matches!(Group::from_gid(Gid::from_raw(id)), Ok(Some(_)))
}

/// The drop-in directories and the varlink socket directory through which
/// nss-systemd can know users beyond its synthesized root and nobody
/// (systemd's userdb: `.user`/`.group` records, homed, machined, dynamic
/// users).
const USERDB_SOURCES: [&str; 7] = [
    "/run/systemd/userdb",
    "/etc/userdb",
    "/run/userdb",
    "/run/host/userdb",
    "/usr/local/lib/userdb",
    "/usr/lib/userdb",
    "/lib/userdb",
];

/// The host's users and groups for [`choose`]'s check. Asking NSS costs a
/// fresh launcher about 0.7 ms (nss-systemd is loaded and walks the userdb
/// directories for each of the four lookups), so where NSS can only say
/// what `/etc/passwd` and `/etc/group` say, those are read directly: when
/// nsswitch.conf's `passwd` and `group` lines name `files` and at most
/// `systemd` besides (no `[action]`s), and none of nss-systemd's userdb
/// sources exists, nss-systemd can only add root and nobody, which no
/// picked range holds. Any other setup (LDAP, sss, compat, mymachines,
/// userdb records, a missing nsswitch.conf) asks NSS as before.
pub struct HostIds {
    /// UIDs of /etc/passwd and GIDs of /etc/group; None: ask NSS.
    files: std::cell::OnceCell<Option<(Vec<u32>, Vec<u32>)>>,
}

impl Default for HostIds {
    fn default() -> Self {
        Self::new()
    }
}

impl HostIds {
    pub fn new() -> Self {
        HostIds {
            files: std::cell::OnceCell::new(),
        }
    }

    /// True if the host has a user or group with this ID.
    pub fn has(&self, id: u32) -> bool {
        match self.files.get_or_init(Self::load) {
            Some((uids, gids)) => uids.contains(&id) || gids.contains(&id),
            None => host_has_id(id),
        }
    }

    fn load() -> Option<(Vec<u32>, Vec<u32>)> {
        let conf = fs::read_to_string("/etc/nsswitch.conf").ok()?;
        let files_only = |db| nss_files_suffice(&conf, db);
        if !(files_only("passwd") && files_only("group"))
            || USERDB_SOURCES
                .iter()
                .any(|d| fs::symlink_metadata(d).is_ok())
        {
            return None;
        }
        let uids = ids_in(&fs::read_to_string("/etc/passwd").ok()?);
        let gids = ids_in(&fs::read_to_string("/etc/group").ok()?);
        Some((uids, gids))
    }
}

/// True if nsswitch.conf (`conf`) has a line for `db` that names `files`
/// and no other service but `systemd`, without `[action]`s.
fn nss_files_suffice(conf: &str, db: &str) -> bool {
    let Some(services) = conf.lines().find_map(|l| {
        let l = l.split('#').next().unwrap_or("");
        let (name, rest) = l.split_once(':')?;
        (name.trim() == db).then_some(rest)
    }) else {
        return false;
    };
    let mut words = services.split_whitespace().peekable();
    words.peek().is_some()
        && services.split_whitespace().any(|w| w == "files")
        && words.all(|w| w == "files" || w == "systemd")
}

/// The third field (the UID of passwd(5), the GID of group(5)) of each
/// line of a colon-separated database, as nss-files reads it.
fn ids_in(db: &str) -> Vec<u32> {
    db.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split(':').nth(2)?.trim().parse().ok())
        .collect()
}

/// The range for `mode`, given the root directory's owner and the ranges
/// taken (running machines' and those other launchers hold, see
/// [`held_ranges`]). Pure but for the predicate.
pub fn choose(
    mode: Mode,
    owner: (u32, u32),
    taken: &[(String, UidRange)],
    host_has_id: impl Fn(u32) -> bool,
) -> Result<UidRange, PickError> {
    let clash = |r: &UidRange| {
        taken
            .iter()
            .find(|(_, o)| o.overlaps(r))
            .map(|(name, o)| PickError::Overlap {
                range: *r,
                name: name.clone(),
                other: *o,
            })
    };
    let fixed = |r: UidRange| match clash(&r) {
        Some(e) => Err(e),
        None => Ok(r),
    };
    let (uid, gid) = owner;
    let base = uid & 0xFFFF_0000;
    match mode {
        Mode::Fixed(r) => fixed(r),
        Mode::FromRoot => {
            if base != gid & 0xFFFF_0000 {
                return Err(PickError::Mismatch {
                    path: "the root directory".into(),
                    uid,
                    gid,
                });
            }
            fixed(UidRange::new(base, RANGE_16).ok_or(PickError::Exhausted)?)
        }
        Mode::Pick => {
            let free = |r: &UidRange| {
                clash(r).is_none() && !host_has_id(r.shift) && !host_has_id(r.shift + (r.range - 1))
            };
            if uid != 0 && uid & 0xFFFF == 0 && gid == uid {
                if let Some(r) = UidRange::new(uid, RANGE_16).filter(|r| clash(r).is_none()) {
                    return Ok(r);
                }
            }
            (PICK_MIN..=PICK_MAX)
                .step_by(RANGE_16 as usize)
                .filter_map(|s| UidRange::new(s, RANGE_16))
                .find(free)
                .ok_or(PickError::Exhausted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(shift: u32, range: u32) -> UidRange {
        UidRange::new(shift, range).unwrap()
    }

    fn none(_: u32) -> bool {
        false
    }

    #[test]
    fn pick_takes_the_roots_range_when_free() {
        let taken = vec![("a".to_string(), r(PICK_MIN, 65536))];
        assert_eq!(
            choose(Mode::Pick, (0x0010_0000, 0x0010_0000), &taken, none),
            Ok(r(0x0010_0000, 65536))
        );
        // The root's range is taken: the first free one.
        assert_eq!(
            choose(Mode::Pick, (PICK_MIN, PICK_MIN), &taken, none),
            Ok(r(PICK_MIN + 65536, 65536))
        );
        // Owned by 0, or not a multiple of 65536: the first free one.
        assert_eq!(
            choose(Mode::Pick, (0, 0), &[], none),
            Ok(r(PICK_MIN, 65536))
        );
        assert_eq!(
            choose(Mode::Pick, (PICK_MIN + 7, PICK_MIN + 7), &[], none),
            Ok(r(PICK_MIN, 65536))
        );
        // A host user at an end of a range skips it.
        assert_eq!(
            choose(Mode::Pick, (0, 0), &[], |id| id == PICK_MIN + 65535),
            Ok(r(PICK_MIN + 65536, 65536))
        );
    }

    #[test]
    fn ranges_locked_by_other_launchers_are_skipped_or_refused() {
        // As held_ranges gives them: one that says its machine, one that does not.
        let held = vec![
            ("web".to_string(), r(PICK_MIN, 65536)),
            ("another container".to_string(), r(0x0010_0000, 65536)),
        ];
        assert_eq!(
            choose(Mode::Pick, (0x0010_0000, 0x0010_0000), &held, none),
            Ok(r(PICK_MIN + 65536, 65536))
        );
        assert_eq!(
            choose(Mode::Fixed(r(PICK_MIN, 65536)), (0, 0), &held, none),
            Err(PickError::Overlap {
                range: r(PICK_MIN, 65536),
                name: "web".into(),
                other: r(PICK_MIN, 65536),
            })
        );
    }

    #[test]
    fn pick_runs_out() {
        assert_eq!(
            choose(Mode::Pick, (0, 0), &[], |_| true),
            Err(PickError::Exhausted)
        );
    }

    #[test]
    fn fixed_and_root_ranges_must_be_free() {
        let taken = vec![("web".to_string(), r(PICK_MIN, 65536))];
        let e = choose(Mode::Fixed(r(PICK_MIN + 100, 10)), (0, 0), &taken, none).unwrap_err();
        assert!(e.to_string().contains("running machine 'web'"), "{e}");
        assert_eq!(
            choose(Mode::Fixed(r(0, 65536)), (0, 0), &taken, none),
            Ok(r(0, 65536))
        );
        assert_eq!(
            choose(
                Mode::FromRoot,
                (PICK_MIN + 65536 + 5, PICK_MIN + 65536),
                &taken,
                none
            ),
            Ok(r(PICK_MIN + 65536, 65536))
        );
        assert!(matches!(
            choose(Mode::FromRoot, (PICK_MIN + 1, PICK_MIN), &taken, none),
            Err(PickError::Overlap { .. })
        ));
        assert!(matches!(
            choose(Mode::FromRoot, (PICK_MIN, 0), &[], none),
            Err(PickError::Mismatch { .. })
        ));
    }

    #[test]
    fn nsswitch_lines_that_files_answer_alone() {
        let conf = "# c\npasswd:         files systemd\ngroup: files # x\nshadow: files\n";
        assert!(nss_files_suffice(conf, "passwd"));
        assert!(nss_files_suffice(conf, "group"));
        assert!(!nss_files_suffice(conf, "hosts"));
        for line in [
            "passwd: files ldap",
            "passwd: compat",
            "passwd: files mymachines systemd",
            "passwd: files [NOTFOUND=return] systemd",
            "passwd: systemd",
            "passwd:",
        ] {
            assert!(!nss_files_suffice(line, "passwd"), "{line}");
        }
    }

    #[test]
    fn ids_of_passwd_and_group_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n# x:x:7:7\nbad\nu:x:589823:1::/:/bin/sh\n";
        assert_eq!(ids_in(passwd), vec![0, 589823]);
        assert_eq!(ids_in("g:x:524288:a,b\n"), vec![524288]);
    }

    #[test]
    fn host_ids_agree_with_nss() {
        let host = HostIds::new();
        for id in [0, 1, 65534, PICK_MIN, PICK_MIN + 65535, 4_000_000] {
            assert_eq!(host.has(id), host_has_id(id), "{id}");
        }
    }

    #[test]
    fn held_range_locks_say_their_range_and_machine_and_free_ones_go() {
        let dir = std::env::temp_dir().join(format!("netspawn-held-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(held_ranges(&dir).unwrap(), vec![]);
        fs::create_dir_all(&dir).unwrap();
        let a = UidRange::new(0x80000, 0x10000).unwrap();
        let odd = UidRange::new(1_000_000, 5000).unwrap();
        let held_a = try_range_lock(&dir, a, "web").unwrap().unwrap();
        let held_odd = try_range_lock(&dir, odd, "db").unwrap().unwrap();
        // Taken already: a second launcher does not get it.
        assert!(try_range_lock(&dir, a, "other").unwrap().is_none());
        // A lock file that does not say what it holds.
        let bare = File::create(dir.join("uid-2000000.lock")).unwrap();
        bare.lock().unwrap();
        // One nobody holds any more, and files that are not range locks.
        drop(try_range_lock(&dir, UidRange::new(0x90000, 0x10000).unwrap(), "gone").unwrap());
        fs::write(dir.join("userns.lock"), "").unwrap();
        fs::write(dir.join("uid-x.lock"), "").unwrap();
        let mut got = held_ranges(&dir).unwrap();
        got.sort_by_key(|(_, r)| r.shift);
        assert_eq!(
            got,
            vec![
                ("web".to_string(), a),
                ("db".to_string(), odd),
                (
                    "another container".to_string(),
                    UidRange::new(2_000_000, 0x10000).unwrap()
                ),
            ]
        );
        assert!(
            !dir.join("uid-589824.lock").exists(),
            "a free lock file is removed"
        );
        assert!(dir.join("uid-x.lock").exists());
        // The range is free again once its launcher lets go.
        drop(held_a);
        let again = try_range_lock(&dir, a, "web2").unwrap().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("uid-524288.lock")).unwrap(),
            "524288 65536 web2\n"
        );
        drop((again, held_odd, bare));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_lock_excludes_a_second_picker() {
        let dir = std::env::temp_dir().join(format!("netspawn-pick-{}", std::process::id()));
        let held = lock(&dir).unwrap();
        let f = File::open(dir.join("userns.lock")).unwrap();
        assert!(matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)));
        drop(held);
        f.try_lock().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
