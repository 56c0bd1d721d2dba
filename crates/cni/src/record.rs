//! Attachment records: one JSON file per `(container ID, ifname)` of a
//! network, `<run_dir>/cni/NETWORK/CONTAINERID.IFNAME.json`, written
//! atomically. DEL, CHECK and GC work from them alone (DEL needs neither the
//! netns nor a prevResult); a record is written before anything is made, so
//! an ADD that dies half-way leaves something DEL and GC find.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What one attachment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    pub zone: String,
    pub container_id: String,
    pub ifname: String,
    /// The registry name (the machine name netd and NSS know it by).
    pub name: String,
    pub netns: String,
    pub host_ifname: String,
    /// The container side's MAC, `aa:bb:..`.
    pub mac: String,
    /// `A/N` once the lease is bound.
    pub address: Option<String>,
    pub gateway: Option<String>,
    /// The process holding the name and the registry entry, and its start time.
    pub holder_pid: u32,
    pub holder_start: u64,
    /// Port forwards.
    pub ports: Vec<PortRecord>,
}

/// One port forward of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub udp: bool,
    pub host_port: u16,
    pub container_port: u16,
}

impl From<netspawn_common::netd::Forward> for PortRecord {
    fn from(f: netspawn_common::netd::Forward) -> PortRecord {
        PortRecord {
            udp: f.udp,
            host_port: f.host_port,
            container_port: f.container_port,
        }
    }
}

impl From<PortRecord> for netspawn_common::netd::Forward {
    fn from(p: PortRecord) -> netspawn_common::netd::Forward {
        netspawn_common::netd::Forward {
            udp: p.udp,
            host_port: p.host_port,
            container_port: p.container_port,
        }
    }
}

/// The records of every network under one run directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(run_dir: &Path) -> Records {
        Records {
            dir: run_dir.join("cni"),
        }
    }

    fn network_dir(&self, network: &str) -> PathBuf {
        self.dir.join(network)
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.network_dir(network)
            .join(format!("{container_id}.{ifname}.json"))
    }

    pub fn get(&self, network: &str, container_id: &str, ifname: &str) -> Option<Record> {
        let text = std::fs::read(self.path(network, container_id, ifname)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn write(&self, r: &Record) -> io::Result<()> {
        let dir = self.network_dir(&r.network);
        std::fs::create_dir_all(&dir)?;
        let path = self.path(&r.network, &r.container_id, &r.ifname);
        let tmp = dir.join(format!(".#{}.{}", r.container_id, std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(r).map_err(io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Removes a record; a missing one is fine.
    pub fn remove(&self, r: &Record) -> io::Result<()> {
        match std::fs::remove_file(self.path(&r.network, &r.container_id, &r.ifname)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable record of `network`.
    pub fn list(&self, network: &str) -> Vec<Record> {
        let mut out: Vec<Record> = std::fs::read_dir(self.network_dir(network))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n.ends_with(".json")
            })
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a: &Record, b| a.container_id.cmp(&b.container_id));
        out
    }

    /// Every record of every network (the names GC must not touch).
    pub fn all(&self) -> Vec<Record> {
        let nets: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        nets.iter().flat_map(|n| self.list(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_get_list_remove() {
        let dir = std::env::temp_dir().join(format!("netspawn-cni-rec-{}", std::process::id()));
        let recs = Records::new(&dir);
        let r = Record {
            network: "lab".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
            name: "web".into(),
            ..Default::default()
        };
        recs.write(&r).unwrap();
        assert_eq!(recs.get("lab", "abc", "eth0"), Some(r.clone()));
        assert_eq!(recs.list("lab"), std::slice::from_ref(&r));
        assert_eq!(recs.all().len(), 1);
        assert!(recs.list("other").is_empty());
        recs.remove(&r).unwrap();
        recs.remove(&r).unwrap();
        assert_eq!(recs.get("lab", "abc", "eth0"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
