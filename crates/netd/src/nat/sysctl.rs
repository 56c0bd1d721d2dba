//! Per-interface forwarding knobs: which `/proc/sys/net/...` values NAT needs,
//! what they were before netd touched them, and putting them back.
//!
//! Only per-interface files are ever written (`ipv4/conf/IF/forwarding`,
//! `ipv4/conf/IF/route_localnet`, `ipv6/conf/IF/force_forwarding`); the global
//! `ip_forward` / `conf/all/forwarding` switches are never touched. Also parses
//! the kernel's route tables to find the interfaces ("uplinks") that replies to
//! masqueraded traffic come back on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NatError;

/// A per-interface sysctl netd may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Knob {
    /// `net/ipv4/conf/IF/forwarding`: IPv4 packets arriving on IF may be forwarded.
    Ipv4Forwarding,
    /// `net/ipv4/conf/IF/route_localnet`: 127.0.0.0/8 may be routed to/from IF
    /// (needed for port forwards reached from the host's 127.0.0.1).
    Ipv4RouteLocalnet,
    /// `net/ipv6/conf/IF/force_forwarding` (Linux 6.17+): IPv6 packets arriving on
    /// IF may be forwarded, without IF's `forwarding` (router mode, which stops
    /// accepting router advertisements) or the global switch.
    Ipv6ForceForwarding,
}

impl Knob {
    /// The path of this knob for `ifname`, relative to the sysctl root.
    pub fn rel_path(self, ifname: &str) -> PathBuf {
        match self {
            Knob::Ipv4Forwarding => format!("net/ipv4/conf/{ifname}/forwarding").into(),
            Knob::Ipv4RouteLocalnet => format!("net/ipv4/conf/{ifname}/route_localnet").into(),
            Knob::Ipv6ForceForwarding => format!("net/ipv6/conf/{ifname}/force_forwarding").into(),
        }
    }
}

/// One knob on one interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysctlKey {
    /// Interface name (validated by the caller: no `/`, not `all`/`default`).
    pub ifname: String,
    /// Which knob.
    pub knob: Knob,
}

/// The knobs netd has switched on, with the values they had before, so that
/// they can be restored when no link needs them any more. With a journal, the
/// same is kept in a file, so that a netd killed with knobs switched on can
/// restore them when it starts again ([`Sysctls::recover`]).
#[derive(Debug)]
pub struct Sysctls {
    root: PathBuf,
    journal: Option<PathBuf>,
    saved: BTreeMap<SysctlKey, String>,
}

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    ifname: String,
    knob: Knob,
    original: String,
}

impl Sysctls {
    /// Knobs under `root` (normally `/proc/sys`), journaled in `journal` if given.
    pub fn new(root: impl Into<PathBuf>, journal: Option<PathBuf>) -> Self {
        Sysctls {
            root: root.into(),
            journal,
            saved: BTreeMap::new(),
        }
    }

    /// Restore the knobs a previous netd left switched on (read from the
    /// journal, which is then removed). Knobs of interfaces that are gone are
    /// skipped. Returns how many were restored.
    pub fn recover(&mut self) -> Result<usize, NatError> {
        let Some(journal) = self.journal.clone() else {
            return Ok(0);
        };
        let text = match fs::read_to_string(&journal) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(journal_error(&journal, e.to_string())),
        };
        let entries: Vec<JournalEntry> =
            serde_json::from_str(&text).map_err(|e| journal_error(&journal, e.to_string()))?;
        let mut restored = 0;
        for e in entries {
            let key = SysctlKey {
                ifname: e.ifname,
                knob: e.knob,
            };
            // Values are single numbers; anything else is not ours to write.
            let value_ok = !e.original.is_empty() && e.original.bytes().all(|b| b.is_ascii_digit());
            if !valid_ifname(&key.ifname) || !value_ok || self.saved.contains_key(&key) {
                continue;
            }
            let path = self.path(&key);
            if read_knob(&path)?.is_some() {
                write_knob(&path, &e.original)?;
                restored += 1;
            }
        }
        match fs::remove_file(&journal) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(journal_error(&journal, e.to_string()))
            }
            _ => Ok(restored),
        }
    }

    /// Write the journal (atomically), or remove it when nothing is held.
    fn save_journal(&self) -> Result<(), NatError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        if self.saved.is_empty() {
            return match fs::remove_file(journal) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(journal_error(journal, e.to_string()))
                }
                _ => Ok(()),
            };
        }
        let entries: Vec<JournalEntry> = self
            .saved
            .iter()
            .map(|(k, v)| JournalEntry {
                ifname: k.ifname.clone(),
                knob: k.knob,
                original: v.clone(),
            })
            .collect();
        let text = serde_json::to_string_pretty(&entries)
            .map_err(|e| journal_error(journal, e.to_string()))?;
        let mut tmp = journal.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, journal))
            .map_err(|e| journal_error(journal, e.to_string()))
    }

    fn path(&self, key: &SysctlKey) -> PathBuf {
        self.root.join(key.knob.rel_path(&key.ifname))
    }

    /// Whether the running kernel has `force_forwarding` (per-interface IPv6
    /// forwarding), checked on the loopback interface which always exists.
    pub fn has_ipv6_force_forwarding(&self) -> bool {
        self.root
            .join(Knob::Ipv6ForceForwarding.rel_path("lo"))
            .exists()
    }

    /// The value `key` had before netd changed it, or its current value if netd
    /// has not changed it. `None` if the interface (or the knob) does not exist.
    pub fn original(&self, key: &SysctlKey) -> Result<Option<String>, NatError> {
        if let Some(v) = self.saved.get(key) {
            return Ok(Some(v.clone()));
        }
        read_knob(&self.path(key))
    }

    /// Make exactly `desired` switched on (value `1`) among the knobs netd
    /// manages: switch on the new ones (remembering their old values) and
    /// restore the ones no longer wanted. Knobs of interfaces that are gone are
    /// forgotten. Every step is attempted; failures are reported together.
    pub fn sync(&mut self, desired: &BTreeSet<SysctlKey>) -> Result<(), NatError> {
        let mut failures = Vec::new();
        let stale: Vec<SysctlKey> = self
            .saved
            .keys()
            .filter(|k| !desired.contains(k))
            .cloned()
            .collect();
        for key in stale {
            if let Err(e) = self.restore(&key) {
                failures.push(e.to_string());
            }
        }
        for key in desired {
            if let Err(e) = self.switch_on(key) {
                failures.push(e.to_string());
            }
        }
        if let Err(e) = self.save_journal() {
            failures.push(e.to_string());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NatError::Sysctls(failures.join("; ")))
        }
    }

    /// Restore every knob netd changed.
    pub fn restore_all(&mut self) -> Result<(), NatError> {
        self.sync(&BTreeSet::new())
    }

    /// The knobs netd currently holds switched on, with their original values.
    pub fn changed(&self) -> &BTreeMap<SysctlKey, String> {
        &self.saved
    }

    fn switch_on(&mut self, key: &SysctlKey) -> Result<(), NatError> {
        let path = self.path(key);
        let current = match read_knob(&path)? {
            Some(v) => v,
            // The link went away (or the kernel lacks the knob): nothing to do.
            None => return Ok(()),
        };
        if !self.saved.contains_key(key) {
            if current == "1" {
                // Already on by someone else's choice: leave it and do not own it.
                return Ok(());
            }
            self.saved.insert(key.clone(), current.clone());
        }
        if current != "1" {
            write_knob(&path, "1")?;
            tracing::debug!(path = %path.display(), "switched on");
        }
        Ok(())
    }

    fn restore(&mut self, key: &SysctlKey) -> Result<(), NatError> {
        let Some(old) = self.saved.get(key).cloned() else {
            return Ok(());
        };
        let path = self.path(key);
        match write_knob(&path, &old) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), value = %old, "restored");
                self.saved.remove(key);
                Ok(())
            }
            // The interface is gone, and its knobs with it.
            Err(NatError::Sysctl { ref source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                self.saved.remove(key);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn journal_error(path: &Path, detail: String) -> NatError {
    NatError::Journal {
        path: path.to_path_buf(),
        detail,
    }
}

fn read_knob(path: &Path) -> Result<Option<String>, NatError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NatError::Sysctl {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_knob(path: &Path, value: &str) -> Result<(), NatError> {
    fs::write(path, value).map_err(|source| NatError::Sysctl {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Interfaces named in an IPv4 route table in `/proc/net/route` format
/// (header line, then whitespace-separated columns with the interface first).
/// Malformed lines are skipped.
pub fn parse_route_ifaces_v4(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| valid_ifname(n))
        .map(str::to_string)
        .collect()
}

/// Interfaces with an IPv6 route of their own in a table in
/// `/proc/net/ipv6_route` format (no header, ten columns, the interface last;
/// malformed lines are skipped): what `/proc/net/route` gives for IPv4. The
/// routes the kernel makes on every interface with IPv6 on are not counted:
/// local and anycast addresses, rejects, link-local (`fe80::/10`) and
/// multicast (`ff00::/8`) prefixes. Otherwise every bridge port (a zone
/// member's `vb-` link, another program's veth) would be an uplink: netd
/// would switch forwarding on for links that never route, and guard rules
/// naming each port would change the table on every member that comes or
/// goes.
pub fn parse_route_ifaces_v6(text: &str) -> BTreeSet<String> {
    const RTF_LOCAL: u32 = 0x8000_0000;
    const RTF_ANYCAST: u32 = 0x0010_0000;
    const RTF_REJECT: u32 = 0x0200;
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() != 10 {
                return None;
            }
            let (dest, flags) = (cols[0], u32::from_str_radix(cols[8], 16).ok()?);
            let dest = u128::from_str_radix(dest, 16).ok()?;
            let len = u8::from_str_radix(cols[1], 16).ok()?;
            let kernel_made = flags & (RTF_LOCAL | RTF_ANYCAST | RTF_REJECT) != 0
                || (len >= 10 && dest >> 118 == 0xfe80 >> 6)
                || (len >= 8 && dest >> 120 == 0xff);
            (!kernel_made).then(|| cols[9])
        })
        .filter(|n| valid_ifname(n))
        .map(str::to_string)
        .collect()
}

/// Whether `name` is acceptable as a kernel interface name that is safe to put
/// in a sysctl path: 1..=15 bytes, no `/`, whitespace, `:` or NUL, not `.`/`..`,
/// and not `all`/`default` (those directories are the global switches).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name != "all"
        && name != "default"
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ifname: &str, knob: Knob) -> SysctlKey {
        SysctlKey {
            ifname: ifname.to_string(),
            knob,
        }
    }

    fn fake_root(ifaces: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "netspawn-nat-sysctl-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        for i in ifaces {
            for (dir, file) in [
                ("ipv4", "forwarding"),
                ("ipv4", "route_localnet"),
                ("ipv6", "force_forwarding"),
            ] {
                let d = root.join(format!("net/{dir}/conf/{i}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join(file), "0\n").unwrap();
            }
        }
        root
    }

    fn read(root: &Path, key: &SysctlKey) -> String {
        fs::read_to_string(root.join(key.knob.rel_path(&key.ifname)))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn switch_on_then_restore() {
        let root = fake_root(&["ve-a", "eth0", "lo"]);
        let mut s = Sysctls::new(&root, None);
        assert!(s.has_ipv6_force_forwarding());
        let a = key("ve-a", Knob::Ipv4Forwarding);
        let e = key("eth0", Knob::Ipv4Forwarding);
        // eth0 was already forwarding: netd must neither own nor restore it.
        fs::write(root.join(e.knob.rel_path("eth0")), "1\n").unwrap();
        s.sync(&[a.clone(), e.clone()].into()).unwrap();
        assert_eq!(read(&root, &a), "1");
        assert_eq!(read(&root, &e), "1");
        assert_eq!(s.changed().len(), 1);
        assert_eq!(s.original(&a).unwrap().as_deref(), Some("0"));
        s.sync(&BTreeSet::new()).unwrap();
        assert_eq!(read(&root, &a), "0");
        assert_eq!(read(&root, &e), "1", "a knob netd did not change stays");
        assert!(s.changed().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn vanished_interface_is_forgotten() {
        let root = fake_root(&["ve-b"]);
        let mut s = Sysctls::new(&root, None);
        let b = key("ve-b", Knob::Ipv4RouteLocalnet);
        s.sync(&[b.clone()].into()).unwrap();
        assert_eq!(s.changed().len(), 1);
        fs::remove_dir_all(root.join("net/ipv4/conf/ve-b")).unwrap();
        s.restore_all().unwrap();
        assert!(s.changed().is_empty());
        // A knob of an interface that does not exist is not an error either.
        s.sync(&[key("ve-gone", Knob::Ipv4Forwarding)].into())
            .unwrap();
        assert!(s.changed().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn journal_lets_a_new_netd_restore_what_a_killed_one_changed() {
        let root = fake_root(&["ve-c", "up9"]);
        let journal = root.join("nat-sysctls.json");
        let c = key("ve-c", Knob::Ipv4Forwarding);
        let u = key("up9", Knob::Ipv6ForceForwarding);
        {
            let mut s = Sysctls::new(&root, Some(journal.clone()));
            s.sync(&[c.clone(), u.clone()].into()).unwrap();
            assert!(journal.exists());
            // Killed here: no restore.
        }
        assert_eq!(read(&root, &c), "1");
        let mut s = Sysctls::new(&root, Some(journal.clone()));
        assert_eq!(s.recover().unwrap(), 2);
        assert_eq!(read(&root, &c), "0");
        assert_eq!(read(&root, &u), "0");
        assert!(!journal.exists());
        assert_eq!(s.recover().unwrap(), 0, "nothing left");
        // A journal emptied by a clean shutdown is removed.
        s.sync(&[c.clone()].into()).unwrap();
        s.restore_all().unwrap();
        assert!(!journal.exists());
        // A hostile journal is refused with its name, never written through.
        fs::write(
            &journal,
            r#"[{"ifname":"../../x","knob":"Ipv4Forwarding","original":"0"},
                                 {"ifname":"ve-c","knob":"Ipv4Forwarding","original":"1; rm"}]"#,
        )
        .unwrap();
        assert_eq!(s.recover().unwrap(), 0);
        fs::write(&journal, "garbage").unwrap();
        let err = s.recover().unwrap_err().to_string();
        assert!(err.contains("nat-sysctls.json"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn route_tables() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  ve-web\t0000090A\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n\
                  \n\
                  bad/name\t0 0\n";
        assert_eq!(
            parse_route_ifaces_v4(v4),
            ["eth0".to_string(), "ve-web".to_string()].into()
        );
        // A default route through a router's link-local address, a global
        // prefix, and what the kernel makes on every interface: local
        // addresses, fe80::/64, ff00::/8 (a bridge port has only those), the
        // reject route on lo.
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n\
                  truncated line\n\
                  fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n\
                  00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001  vb-web\n\
                  fe8000000000000000fc00fffe000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001  vb-web\n\
                  ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001  vb-web\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(
            parse_route_ifaces_v6(v6),
            ["eth1".to_string(), "wlan0".to_string()].into()
        );
    }

    #[test]
    fn interface_names() {
        for ok in [
            "eth0",
            "ve-web",
            "vz-zone",
            "a",
            "x123456789012345"[..15].as_ref(),
        ] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "all",
            "default",
            "a/b",
            "a b",
            "a:1",
            "x1234567890123456",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }
}
