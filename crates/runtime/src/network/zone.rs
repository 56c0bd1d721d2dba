//! Network zones: the bridge `vz-ZONE` is created with the first member and
//! removed after the last one leaves. Create-and-join and
//! check-empty-and-remove happen under one lock per zone
//! (`<run_dir>/locks/zone-ZONE.lock`), so concurrent launches never race.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use netlink::{NewLink, Rtnl, RtnlError};
use netspawn_common::lockfile;

use super::NetError;

/// The zone locks' directory.
#[derive(Debug, Clone)]
pub struct Zones {
    locks: PathBuf,
}

impl Zones {
    pub fn new(locks: PathBuf) -> Zones {
        Zones { locks }
    }

    fn lock(&self, zone: &str) -> Result<(File, PathBuf), NetError> {
        let path = self.locks.join(format!("zone-{zone}.lock"));
        let io = |err| NetError::Lock {
            path: path.clone(),
            err,
        };
        std::fs::create_dir_all(&self.locks).map_err(io)?;
        let f = lockfile::lock(&path, lockfile::Mode::Exclusive).map_err(io)?;
        Ok((f, path))
    }

    /// Makes sure `vz-ZONE` exists and runs `join` (which creates the member
    /// link attached to the bridge's index) under the zone's lock.
    pub fn join(
        &self,
        rt: &mut dyn Rtnl,
        zone: &str,
        join: impl FnOnce(&mut dyn Rtnl, u32) -> Result<(), RtnlError>,
    ) -> Result<(), NetError> {
        let _lock = self.lock(zone)?;
        let name = format!("vz-{zone}");
        let index = match rt.link(&name)? {
            Some(l) => l.index,
            None => {
                rt.add(&NewLink::Bridge { name: name.clone() })?;
                rt.link(&name)?
                    .ok_or_else(|| NetError::NoBridge(name.clone()))?
                    .index
            }
        };
        join(rt, index)?;
        Ok(())
    }

    /// Removes `vz-ZONE` if no link is attached to it any more.
    /// Its lock file goes with it (a zone's lock protects only its bridge).
    pub fn leave(&self, rt: &mut dyn Rtnl, zone: &str) -> Result<bool, NetError> {
        self.remove_with(rt, zone, &BTreeSet::new())
    }

    /// Removes `vz-ZONE` if each link still attached to it is one of `ours`
    /// (the caller's machines' links, which are going away): the kernel
    /// then deletes the bridge while it deletes those links, instead of
    /// after them. False when another link is attached (the bridge stays,
    /// and so does its lock file) or the bridge is gone already (its lock
    /// file is removed, as the bridge's remover would have).
    pub fn remove_with(
        &self,
        rt: &mut dyn Rtnl,
        zone: &str,
        ours: &BTreeSet<String>,
    ) -> Result<bool, NetError> {
        let (lock, path) = self.lock(zone)?;
        let Some(bridge) = rt.link(&format!("vz-{zone}"))? else {
            let _ = lockfile::remove_held(&path, &lock);
            return Ok(false);
        };
        let foreign = rt
            .links()?
            .iter()
            .any(|l| l.master == Some(bridge.index) && !ours.contains(&l.name));
        if foreign {
            return Ok(false);
        }
        rt.delete(bridge.index)?;
        let _ = lockfile::remove_held(&path, &lock);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;

    /// Zone "lab" with its bridge and two members, vb-a and vb-b; locks in `tmp`.
    fn two_members(tmp: &std::path::Path) -> (Zones, FakeRtnl) {
        let zones = Zones::new(tmp.to_path_buf());
        let mut rt = FakeRtnl::with_links(&[("lo", None)]);
        for m in ["vb-a", "vb-b"] {
            zones
                .join(&mut rt, "lab", |rt, master| {
                    rt.add(&NewLink::Veth {
                        name: m.into(),
                        mac: [2; 6],
                        peer: "host0".into(),
                        peer_mac: [2; 6],
                        peer_netns_pid: 1,
                        master: Some(master),
                    })
                })
                .unwrap();
        }
        (zones, rt)
    }

    #[test]
    fn first_member_creates_last_member_removes() {
        let tmp = std::env::temp_dir().join(format!("netspawn-zone-{}", std::process::id()));
        let (zones, mut rt) = two_members(&tmp);
        assert_eq!(
            rt.links.iter().filter(|l| l.name == "vz-lab").count(),
            1,
            "one bridge for both members"
        );
        let a = rt.links.iter().find(|l| l.name == "vb-a").unwrap().index;
        rt.delete(a).unwrap();
        assert!(!zones.leave(&mut rt, "lab").unwrap(), "b is still a member");
        let b = rt.links.iter().find(|l| l.name == "vb-b").unwrap().index;
        rt.delete(b).unwrap();
        assert!(zones.leave(&mut rt, "lab").unwrap());
        assert!(rt.links.iter().all(|l| l.name != "vz-lab"));
        assert!(
            !zones.leave(&mut rt, "lab").unwrap(),
            "already gone is fine"
        );
        assert!(
            !tmp.join("zone-lab.lock").exists(),
            "the lock file went with the bridge"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn remove_with_leaves_a_bridge_that_has_a_foreign_member() {
        let tmp = std::env::temp_dir().join(format!("netspawn-zone-rw-{}", std::process::id()));
        let (zones, mut rt) = two_members(&tmp);
        let only_a: BTreeSet<String> = ["vb-a".to_string()].into();
        assert!(!zones.remove_with(&mut rt, "lab", &only_a).unwrap());
        assert!(
            rt.links.iter().any(|l| l.name == "vz-lab"),
            "vb-b is not ours"
        );
        let both: BTreeSet<String> = ["vb-a".to_string(), "vb-b".to_string()].into();
        assert!(zones.remove_with(&mut rt, "lab", &both).unwrap());
        assert!(rt.links.iter().all(|l| l.name != "vz-lab"));
        assert!(!tmp.join("zone-lab.lock").exists());
        assert!(
            !zones.remove_with(&mut rt, "lab", &both).unwrap(),
            "gone is fine"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
