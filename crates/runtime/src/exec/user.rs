//! Switching to the payload's user: the lookup in the container's own
//! /etc/passwd and /etc/group, the user's environment, the credential
//! switch and the capability sets.

use crate::caps::{self, CapSet};
use crate::ctl::passwd::{self, User};

use super::ExecError;

/// Largest passwd/group file read.
const MAX_SIZE: u64 = 4 * 1024 * 1024;

fn read(path: &str) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_SIZE).read_to_string(&mut s);
    }
    s
}

/// Looks `spec` (a name or UID) up in the container (our root is its root).
pub(super) fn lookup(spec: &str) -> Option<User> {
    let pw = read("/etc/passwd");
    let by_name = passwd::find_passwd(&pw, spec);
    // A name must exist; a bare UID without an entry is used as UID=GID.
    if by_name.is_none() && spec.parse::<u32>().is_err() && spec != "root" {
        return None;
    }
    passwd::resolve(&pw, &read("/etc/group"), spec)
}

/// Sets HOME, USER, LOGNAME and SHELL from `u`, unless `explicit` (the
/// `-E`/`Environment=` assignments) sets them.
pub(super) fn environment(env: &mut Vec<String>, u: &User, explicit: &[(String, String)]) {
    let mut set = |k: &str, v: &str| {
        if explicit.iter().any(|(ek, _)| ek == k) {
            return;
        }
        let prefix = format!("{k}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!("{k}={v}"));
    };
    set("HOME", &u.home);
    set("USER", &u.name);
    set("LOGNAME", &u.name);
    if !u.shell.is_empty() {
        set("SHELL", &u.shell);
    }
}

/// Supplementary groups, GID, UID (in that order). Leaving UID 0 clears
/// the permitted and effective capability sets.
pub(super) fn switch(u: &User) -> Result<(), ExecError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(super::sys("set supplementary groups"))?;
    let g = Gid::from_raw(u.gid);
    setresgid(g, g, g).map_err(super::sys("set group id"))?;
    let uid = Uid::from_raw(u.uid);
    setresuid(uid, uid, uid).map_err(super::sys("set user id"))?;
    Ok(())
}

/// Sets effective, permitted and inheritable to `set` (limited to what the
/// kernel knows); the ambient set is left empty.
pub(super) fn set_capabilities(set: CapSet) -> Result<(), ExecError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let last = caps::last_cap();
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut now = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget(2) writes two data structs (version 3).
    if unsafe { libc::syscall(libc::SYS_capget, &hdr as *const Header, now.as_mut_ptr()) } != 0 {
        return Err(ExecError::Sys {
            what: "read capabilities",
            err: nix::Error::last(),
        });
    }
    // Never more than we hold: permitted can only shrink.
    let held = u64::from(now[0].permitted) | (u64::from(now[1].permitted) << 32);
    let set = set & known & held;
    let word = |w: u32| Data {
        effective: w,
        permitted: w,
        inheritable: w,
    };
    let data = [word(set as u32), word((set >> 32) as u32)];
    // SAFETY: capset(2) reads one header and two data structs (version 3).
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    if r != 0 {
        return Err(ExecError::Sys {
            what: "set capabilities",
            err: nix::Error::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_environment_yields_to_explicit_assignments() {
        let u = User {
            name: "tester".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/tester".into(),
            shell: "/bin/sh".into(),
        };
        let mut env = vec![
            "PATH=/bin".to_string(),
            "HOME=/root".to_string(),
            "USER=root".to_string(),
            "LOGNAME=root".to_string(),
        ];
        environment(&mut env, &u, &[("HOME".into(), "/x".into())]);
        env.sort();
        assert_eq!(
            env,
            [
                "HOME=/root",
                "LOGNAME=tester",
                "PATH=/bin",
                "SHELL=/bin/sh",
                "USER=tester"
            ]
        );
        // No shell in passwd: SHELL is left alone.
        let mut env = vec![];
        environment(
            &mut env,
            &User {
                shell: String::new(),
                ..u
            },
            &[],
        );
        assert!(!env.iter().any(|e| e.starts_with("SHELL=")), "{env:?}");
    }
}
