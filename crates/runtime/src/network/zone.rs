//! Network zones: the bridge `vz-ZONE` is created with the first member and
//! removed after the last one leaves. Create-and-join and
//! check-empty-and-remove happen under one lock per zone
//! (`<run_dir>/locks/zone-ZONE.lock`), so concurrent launches never race.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use netlink::{Link, NewLink, Rtnl, RtnlError};
use netspawn_common::lockfile;

use super::batch::delete_together_then;
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
    /// False when a link is attached (the bridge stays, and so does its
    /// lock file) or the bridge is gone already (its lock file is removed,
    /// as the bridge's remover would have).
    pub fn leave(&self, rt: &mut dyn Rtnl, zone: &str) -> Result<bool, NetError> {
        let (lock, path) = self.lock(zone)?;
        let Some(bridge) = rt.link(&format!("vz-{zone}"))? else {
            let _ = lockfile::remove_held(&path, &lock);
            return Ok(false);
        };
        if rt.links()?.iter().any(|l| l.master == Some(bridge.index)) {
            return Ok(false);
        }
        rt.delete(bridge.index)?;
        let _ = lockfile::remove_held(&path, &lock);
        Ok(true)
    }

    /// Deletes, with one kernel request ([`delete_together_then`]), the links in
    /// `ours` that still exist (the caller's links, by index: a link deleted
    /// meanwhile and made again under its name by someone else has another
    /// index) and the bridges of `zones` with only links of `ours` attached,
    /// as [`Zones::leave`] would once those links were gone. The zones are
    /// locked in name order, which cannot deadlock with a launcher (it holds
    /// one zone's lock at a time). `deleting` is called right before the
    /// deletion's request. Returns the zones whose bridges were removed.
    pub fn remove_all_with(
        &self,
        rt: &mut dyn Rtnl,
        zones: &[String],
        ours: &[Link],
        deleting: &mut dyn FnMut(),
    ) -> Result<Vec<String>, NetError> {
        let names: BTreeSet<&str> = zones.iter().map(String::as_str).collect();
        let mut held = Vec::new();
        for z in names {
            let (lock, path) = self.lock(z)?;
            held.push((z, lock, path));
        }
        let links = rt.links()?;
        let mine = |l: &Link| ours.iter().any(|o| o.index == l.index && o.name == l.name);
        let mut doomed: Vec<&Link> = links.iter().filter(|l| mine(l)).collect();
        // Per zone: whether its bridge goes; its lock file goes with it
        // (also when the bridge is gone already).
        let mut going: Vec<(usize, bool)> = Vec::new();
        for (i, (z, _, _)) in held.iter().enumerate() {
            let name = format!("vz-{z}");
            let Some(bridge) = links.iter().find(|l| l.name == name) else {
                going.push((i, false));
                continue;
            };
            if !links
                .iter()
                .any(|l| l.master == Some(bridge.index) && !mine(l))
            {
                doomed.push(bridge);
                going.push((i, true));
            }
        }
        delete_together_then(rt, &doomed, deleting)?;
        let mut removed = Vec::new();
        for (i, bridge) in going {
            let (z, lock, path) = &held[i];
            let _ = lockfile::remove_held(path, lock);
            if bridge {
                removed.push(z.to_string());
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;

    /// A member `name` joins `zone` (its bridge made if need be).
    fn join(zones: &Zones, rt: &mut FakeRtnl, zone: &str, name: &str) {
        zones
            .join(rt, zone, |rt, master| {
                rt.add(&NewLink::Veth {
                    name: name.into(),
                    mac: [2; 6],
                    peer: "host0".into(),
                    peer_mac: [2; 6],
                    peer_netns_pid: 1,
                    master: Some(master),
                })
            })
            .unwrap();
    }

    /// Zone "lab" with its bridge and two members, vb-a and vb-b; locks in `tmp`.
    fn two_members(tmp: &std::path::Path) -> (Zones, FakeRtnl) {
        let zones = Zones::new(tmp.to_path_buf());
        let mut rt = FakeRtnl::with_links(&[("lo", None)]);
        for m in ["vb-a", "vb-b"] {
            join(&zones, &mut rt, "lab", m);
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
    fn remove_all_with_deletes_ours_and_the_bridges_left_to_them_in_one_request() {
        let tmp = std::env::temp_dir().join(format!("netspawn-zone-ra-{}", std::process::id()));
        let zones = Zones::new(tmp.clone());
        let mut rt = FakeRtnl::with_links(&[("lo", None)]);
        for (z, m) in [("a", "vb-1"), ("b", "vb-2"), ("c", "vb-3"), ("c", "vb-x")] {
            join(&zones, &mut rt, z, m);
        }
        rt.add(&NewLink::Bridge {
            name: "tz-leg".into(),
        })
        .unwrap();
        let b = rt.link("vz-b").unwrap().unwrap().index;
        rt.set_group(b, 0x4e53_0001).unwrap();
        let ours: Vec<Link> = ["vb-1", "vb-2", "vb-3", "tz-leg"]
            .iter()
            .map(|n| rt.link(n).unwrap().unwrap())
            .collect();
        rt.log.clear();
        let all = ["c", "a", "b", "gone"].map(String::from);
        let removed = zones
            .remove_all_with(&mut rt, &all, &ours, &mut || {})
            .unwrap();
        assert_eq!(removed, ["a", "b"], "c has vb-x, which is not ours");
        for gone in ["vz-a", "vz-b", "vb-1", "vb-2", "vb-3", "tz-leg"] {
            assert!(rt.link(gone).unwrap().is_none(), "{gone}: {:?}", rt.log);
        }
        assert!(rt.link("vz-c").unwrap().is_some());
        assert!(rt.link("vb-x").unwrap().is_some());
        let deletes: Vec<&String> = rt.log.iter().filter(|r| r.starts_with("delete")).collect();
        assert_eq!(deletes.len(), 1, "one request for all: {:?}", rt.log);
        assert!(deletes[0].starts_with("delete group "), "{deletes:?}");
        assert!(!tmp.join("zone-a.lock").exists());
        assert!(
            tmp.join("zone-c.lock").exists(),
            "c's bridge stays, so does its lock"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn remove_all_with_spares_a_link_made_again_under_one_of_our_names() {
        let tmp = std::env::temp_dir().join(format!("netspawn-zone-rn-{}", std::process::id()));
        let (zones, mut rt) = two_members(&tmp);
        let ours: Vec<Link> = ["vb-a", "vb-b"]
            .iter()
            .map(|n| rt.link(n).unwrap().unwrap())
            .collect();
        // vb-b's machine went and another machine of that name joined.
        rt.delete(ours[1].index).unwrap();
        join(&zones, &mut rt, "lab", "vb-b");
        let removed = zones
            .remove_all_with(&mut rt, &["lab".to_string()], &ours, &mut || {})
            .unwrap();
        assert!(removed.is_empty(), "the new vb-b is not ours");
        assert!(rt.link("vb-a").unwrap().is_none());
        assert!(rt.link("vb-b").unwrap().is_some());
        assert!(rt.link("vz-lab").unwrap().is_some());
        assert!(tmp.join("zone-lab.lock").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn leave_keeps_a_bridge_with_members() {
        let tmp = std::env::temp_dir().join(format!("netspawn-zone-lv-{}", std::process::id()));
        let (zones, mut rt) = two_members(&tmp);
        assert!(!zones.leave(&mut rt, "lab").unwrap());
        assert!(rt.link("vz-lab").unwrap().is_some());
        assert!(tmp.join("zone-lab.lock").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
