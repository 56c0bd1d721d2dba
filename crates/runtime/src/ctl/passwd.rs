//! Users of a machine: looking a user up in the machine's own /etc/passwd and
//! /etc/group (never the host's), to switch credentials inside it.

use super::osrelease::read_in_process_root;

/// Largest passwd/group file we read.
const MAX_SIZE: u64 = 4 * 1024 * 1024;

/// A user as the machine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (including the primary one).
    pub groups: Vec<u32>,
    pub home: String,
    /// Login shell; empty if the passwd entry has none.
    pub shell: String,
}

impl User {
    /// root, as assumed when the machine has no passwd entry for it.
    pub fn root() -> User {
        User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
            shell: String::new(),
        }
    }
}

/// Finds `spec` (a user name or a numeric UID) in passwd text.
pub fn find_passwd(passwd: &str, spec: &str) -> Option<User> {
    let by_uid: Option<u32> = spec.parse().ok();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            continue;
        };
        if f[0] == spec || by_uid == Some(uid) {
            return Some(User {
                name: f[0].to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: f[5].to_string(),
                shell: f[6].to_string(),
            });
        }
    }
    None
}

/// GIDs of the groups in group text that list `user` as a member.
pub fn member_groups(group: &str, user: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0].starts_with(['+', '-', '#']) {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m.trim() == user) {
            out.push(gid);
        }
    }
    out
}

/// Resolves `spec` against passwd and group text. A numeric UID with no entry
/// is accepted as UID=GID=N (as `systemd-run --uid=` does); root is assumed
/// when the machine has no passwd entry for it.
pub fn resolve(passwd: &str, group: &str, spec: &str) -> Option<User> {
    let mut user = match find_passwd(passwd, spec) {
        Some(u) => u,
        None if spec == "root" || spec == "0" => User::root(),
        None => {
            let n: u32 = spec.parse().ok()?;
            User {
                name: spec.to_string(),
                uid: n,
                gid: n,
                groups: vec![n],
                home: "/".into(),
                shell: String::new(),
            }
        }
    };
    for g in member_groups(group, &user.name) {
        if !user.groups.contains(&g) {
            user.groups.push(g);
        }
    }
    Some(user)
}

/// Looks `spec` up in the machine whose leader is `leader`.
pub fn machine_user(leader: u32, spec: &str) -> Option<User> {
    let passwd = read_in_process_root(leader, "/etc/passwd", MAX_SIZE).unwrap_or_default();
    let group = read_in_process_root(leader, "/etc/group", MAX_SIZE).unwrap_or_default();
    resolve(&passwd, &group, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          broken line\n\
                          bad:x:a:b:::\n\
                          alice:x:1000:1000:Alice:/home/alice:/bin/zsh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:alice,bob\naudio:x:29:bob\nalice:x:1000:\n";

    #[test]
    fn by_name_and_uid() {
        let a = resolve(PASSWD, GROUP, "alice").unwrap();
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.groups, vec![1000, 10]);
        assert_eq!(a.home, "/home/alice");
        assert_eq!(a.shell, "/bin/zsh");
        assert_eq!(resolve(PASSWD, GROUP, "1000").unwrap().name, "alice");
        assert_eq!(resolve(PASSWD, GROUP, "root").unwrap().shell, "/bin/bash");
    }

    #[test]
    fn fallbacks() {
        assert_eq!(resolve("", "", "root"), Some(User::root()));
        let n = resolve("", "", "4242").unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 4242, "/"));
        assert_eq!(resolve(PASSWD, GROUP, "mallory"), None);
        assert_eq!(resolve(PASSWD, GROUP, "bad"), None);
    }
}
