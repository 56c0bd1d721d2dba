//! What netspawnctl reads from /proc about a machine's processes: namespace
//! identities, names, command lines, parents, the bounding set and the
//! environment. Every file here belongs to a process that may be hostile or
//! gone, so readers return Option/Result and never panic.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

/// Largest /proc file we read whole (environ, cmdline).
const MAX_PROC_FILE: u64 = 256 * 1024;

fn read_capped(path: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    fs::File::open(path)?
        .take(MAX_PROC_FILE)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The identity of one of a process's namespaces: the target of
/// `/proc/PID/ns/KIND`, e.g. "pid:[4026532201]".
pub fn namespace_id(pid: &str, kind: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()
}

/// `/proc/PID/comm` without the newline.
pub fn comm(pid: u32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// The command line of a process, arguments joined by spaces; "[comm]" when it
/// has none (a zombie), as ps and systemd show it.
pub fn cmdline(pid: u32) -> String {
    let raw = read_capped(&format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        format!("[{}]", comm(pid).unwrap_or_default())
    } else {
        words.join(" ")
    }
}

/// Parent PID from `/proc/PID/stat` (field 4).
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ppid(&stat)
}

/// Field 4 of a stat line; the command name (field 2) may contain spaces and
/// parentheses, so parsing starts after the last ')'.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// PIDs (host view) of every process in the PID namespace of `leader`,
/// sorted. Compares `/proc/PID/ns/pid` link targets, so processes entered
/// later (e.g. by `netspawnctl shell`) count too. Empty if the leader is gone.
pub fn processes_in_pid_namespace(leader: u32) -> Vec<u32> {
    let Some(target) = namespace_id(&leader.to_string(), "pid") else {
        return Vec::new();
    };
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = rd
        .flatten()
        .filter_map(|de| de.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| namespace_id(&pid.to_string(), "pid").as_ref() == Some(&target))
        .collect();
    pids.sort_unstable();
    pids
}

/// The capability bounding set of a process (`CapBnd:` in /proc/PID/status).
pub fn bounding_set(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_cap_bnd(&status)
}

/// The `CapBnd:` value of a status file.
pub fn parse_cap_bnd(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether a process runs with no_new_privs (`NoNewPrivs:` in /proc/PID/status).
pub fn no_new_privs(pid: u32) -> Option<bool> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_no_new_privs(&status)
}

/// The `NoNewPrivs:` value of a status file.
pub fn parse_no_new_privs(status: &str) -> Option<bool> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .map(|v| v.trim() != "0")
}

/// The environment of a process as (name, value) pairs.
pub fn environ(pid: u32) -> std::io::Result<Vec<(String, String)>> {
    Ok(parse_environ(&read_capped(&format!(
        "/proc/{pid}/environ"
    ))?))
}

/// Splits a NUL-separated environment block; entries without '=' or that are
/// not UTF-8 are skipped.
pub fn parse_environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == 0)
        .filter_map(|e| std::str::from_utf8(e).ok())
        .filter_map(|e| e.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        assert_eq!(parse_stat_ppid("12 (a) b) S 7 12 12 0"), Some(7));
        assert_eq!(parse_stat_ppid("12 (sh) R"), None);
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn cap_bnd() {
        let status = "Name:\tsh\nCapEff:\t0\nCapBnd:\t00000000a80425fb\n";
        assert_eq!(parse_cap_bnd(status), Some(0xa80425fb));
        assert_eq!(parse_cap_bnd("CapBnd:\tzz\n"), None);
        assert_eq!(parse_cap_bnd(""), None);
    }

    #[test]
    fn environ_block() {
        let env = parse_environ(b"container=netspawn\0PATH=/bin:/sbin\0junk\0=x\0A=b=c\0\xff=1\0");
        assert_eq!(
            env,
            vec![
                ("container".into(), "netspawn".into()),
                ("PATH".into(), "/bin:/sbin".into()),
                ("A".into(), "b=c".into())
            ]
        );
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(comm(me).is_some());
        assert!(!cmdline(me).is_empty());
        assert!(ppid(me).is_some());
        assert!(processes_in_pid_namespace(me).contains(&me));
        assert!(bounding_set(me).is_some());
        assert!(processes_in_pid_namespace(u32::MAX).is_empty());
    }
}
