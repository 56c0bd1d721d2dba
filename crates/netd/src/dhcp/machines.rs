//! Which machines are running, for the DHCP server's "addresses belong to machines" policy.
//!
//! A launcher holds its machine's name lock (`<run>/locks/machine-NAME.lock`, an flock) from
//! before its links exist until after they are gone, also while it leases host0's address, when
//! the registry entry is not written yet. The lock is therefore the machine's life. netd must not
//! take the lock to test it (a launcher starting that moment would find its name busy), so it
//! reads the kernel's list of held locks, `/proc/locks`, and matches the lock files by device
//! and inode, read from the directory itself (no stat per file).
//!
//! A machine's host-side link (`ve-NAME`, `vb-NAME`) also lives exactly as long as the machine,
//! and covers machines that do not register (`--register=no`): [`machine_of_link`] gives the name
//! back when the link name was not shortened (names of up to 12 bytes).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

/// Where the kernel lists the file locks held on the system.
pub const PROC_LOCKS: &str = "/proc/locks";

/// (major, minor, inode) of each file a lock is held on, from `/proc/locks` text. Waiters
/// (`->` lines) hold nothing and are skipped.
pub fn held_lock_inodes(text: &str) -> HashSet<(u32, u32, u64)> {
    let mut out = HashSet::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let _id = f.next();
        let Some(kind) = f.next() else { continue };
        if kind == "->" {
            continue;
        }
        // kind, ADVISORY|MANDATORY, READ|WRITE, pid, MAJ:MIN:INODE, start, end.
        let Some(dev_ino) = f.nth(3) else { continue };
        let mut parts = dev_ino.split(':');
        let (Some(maj), Some(min), Some(ino), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let (Ok(maj), Ok(min), Ok(ino)) = (
            u32::from_str_radix(maj, 16),
            u32::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) {
            out.insert((maj, min, ino));
        }
    }
    out
}

/// The machine names whose name lock in `locks_dir` is held now, given the held locks
/// (see [`held_lock_inodes`]). A missing directory has none.
pub fn claimed_names_in(
    locks_dir: &Path,
    held: &HashSet<(u32, u32, u64)>,
) -> io::Result<Vec<String>> {
    let meta = match fs::metadata(locks_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let dev = meta.dev();
    let (maj, min) = (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    );
    let mut names = Vec::new();
    for de in fs::read_dir(locks_dir)?.flatten() {
        let Ok(fname) = de.file_name().into_string() else {
            continue;
        };
        let Some(name) = fname
            .strip_prefix("machine-")
            .and_then(|f| f.strip_suffix(".lock"))
        else {
            continue;
        };
        if netspawn_common::names::machine_name_is_valid(name)
            && held.contains(&(maj, min, de.ino()))
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The machine name a host-side link name (`ve-NAME`, `vb-NAME`) was made from, if it can be
/// told: a name longer than 12 bytes is shortened with a hash in the link name, so for a
/// 15-byte link name this is only a candidate (a wrong one matches no machine's MAC).
pub fn machine_of_link(ifname: &str) -> Option<&str> {
    let name = ifname
        .strip_prefix("ve-")
        .or_else(|| ifname.strip_prefix("vb-"))?;
    netspawn_common::names::machine_name_is_valid(name).then_some(name)
}

/// The names of the machines running now: those whose name lock in `locks_dir` is held.
pub fn claimed_names(locks_dir: &Path) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(PROC_LOCKS)?;
    claimed_names_in(locks_dir, &held_lock_inodes(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines() {
        let text = "1: FLOCK  ADVISORY  WRITE 23024 fe:00:5496935 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 23025 fe:00:77 0 EOF\n\
                    2: POSIX  ADVISORY  READ 16091 08:1a:10133507 128 128\n\
                    3: OFDLCK ADVISORY  WRITE -1 00:2b:12 0 EOF\n\
                    garbage\n4: FLOCK ADVISORY WRITE 1 zz:00:1 0 EOF\n";
        let got = held_lock_inodes(text);
        let want: HashSet<(u32, u32, u64)> =
            [(0xfe, 0, 5_496_935), (8, 0x1a, 10_133_507), (0, 0x2b, 12)].into();
        assert_eq!(got, want);
    }

    #[test]
    fn machines_of_links() {
        let cases = [
            ("ve-web", Some("web")),
            ("vb-lab-1", Some("lab-1")),
            ("ve-abcdefghijkl", Some("abcdefghijkl")),
            ("vz-lab", None),
            ("host0", None),
            ("ve-", None),
            ("eth0", None),
        ];
        for (link, want) in cases {
            assert_eq!(machine_of_link(link), want, "{link}");
        }
    }

    #[test]
    fn held_name_locks_are_running_machines() {
        let dir = std::env::temp_dir().join(format!("netd-machines-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let open = |n: &str| {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(n))
                .unwrap()
        };
        let web = open("machine-web.lock");
        let _db = open("machine-db.lock");
        let other = open("image-x.lock");
        web.try_lock().unwrap();
        other.try_lock().unwrap();
        assert_eq!(claimed_names(&dir).unwrap(), ["web"]);
        drop(web);
        assert!(claimed_names(&dir).unwrap().is_empty());
        assert!(claimed_names(&dir.join("missing")).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
