//! [`Batch`]: links deleted together by one kernel request. Each deletion
//! of a link waits for RCU grace periods (a bridge's once under the rtnl
//! lock, every link's again after it); the kernel deletes the links of one
//! interface group (`RTM_DELLINK` with `IFLA_GROUP`) as one batch, which
//! waits once for all of them: here ten veth pairs and a bridge go in 35-50
//! ms that way, against 70-110 ms deleted in parallel, fifty pairs in 65-85
//! ms against about 210 ms.

use netlink::{Link, Rtnl, RtnlError};

/// The interface groups a [`Batch`] puts its links in: this and a random
/// 24 bits, outside netd's groups (`GROUP_BASE`, 0x4e53_0000).
const BATCH_GROUP_BASE: u32 = 0x6e00_0000;

/// A batch's group: [`BATCH_GROUP_BASE`] and 24 random bits (the PID's if
/// the kernel has no randomness to give: PIDs repeat across PID
/// namespaces that share a network namespace).
fn batch_group() -> u32 {
    let mut r = [0u8; 4];
    // SAFETY: getrandom writes at most r.len() bytes into r.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), libc::GRND_NONBLOCK) };
    let bits = if n == 4 {
        u32::from_ne_bytes(r)
    } else {
        std::process::id()
    };
    BATCH_GROUP_BASE | (bits & 0x00ff_ffff)
}

/// Links put into a group of the batch's own, to be deleted with one
/// request. A link stays in its batch's group until [`Batch::delete`] or
/// [`Batch::restore`]; so add only links that are going anyway (a link
/// that outlives the batch by a crash is in a group nothing matches).
#[derive(Debug)]
pub struct Batch {
    /// None when some link already had the group drawn: then the links are
    /// deleted one by one.
    group: Option<u32>,
    /// The links added, each with the group it had before.
    members: Vec<Link>,
}

impl Batch {
    /// An empty batch; `now` is every link there is (a link already in the
    /// group drawn, not put there by us, makes the batch one by one).
    pub fn new(now: &[Link]) -> Batch {
        Batch::with_group(now, batch_group())
    }

    fn with_group(now: &[Link], group: u32) -> Batch {
        Batch {
            group: (!now.iter().any(|l| l.group == group)).then_some(group),
            members: Vec::new(),
        }
    }

    /// Adds `link` (by index: a link of that name made again meanwhile has
    /// another index and is not touched). A link gone already is skipped.
    pub fn add(&mut self, rt: &mut dyn Rtnl, link: &Link) -> Result<(), RtnlError> {
        if self.members.iter().any(|m| m.index == link.index) {
            return Ok(());
        }
        if let Some(g) = self.group {
            match rt.set_group(link.index, g) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.members.push(link.clone());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Puts the members back into their groups, without deleting them (a
    /// step before [`Batch::delete`] failed).
    pub fn restore(self, rt: &mut dyn Rtnl) {
        if self.group.is_some() {
            for m in &self.members {
                let _ = rt.set_group(m.index, m.group);
            }
        }
    }

    /// Deletes every member: one request for the group, once no link
    /// outside the batch is found in it (links gone meanwhile are no
    /// error). Otherwise, or if that fails, the members go back to their
    /// groups and are deleted one by one; the first failure of those is
    /// returned, after trying them all.
    pub fn delete(self, rt: &mut dyn Rtnl) -> Result<(), RtnlError> {
        if self.members.is_empty() {
            return Ok(());
        }
        if let Some(g) = self.group {
            let only_ours = rt.links().map(|all| {
                all.iter()
                    .filter(|l| l.group == g)
                    .all(|l| self.members.iter().any(|m| m.index == l.index))
            });
            let together = match only_ours {
                Ok(true) => rt.delete_group(g),
                Ok(false) => Err(RtnlError::Other {
                    what: format!("delete group {g}"),
                    msg: "it has a link that is not ours".into(),
                }),
                Err(e) => Err(e),
            };
            match together {
                Ok(()) => return Ok(()),
                // Every member went meanwhile.
                Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(()),
                Err(e) => {
                    tracing::debug!("deleting {} links together: {e}", self.members.len());
                    for m in &self.members {
                        let _ = rt.set_group(m.index, m.group);
                    }
                }
            }
        }
        let mut first = None;
        for m in &self.members {
            if let Err(e) = rt.delete(m.index) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;
    use netlink::NewLink;

    fn fake(names: &[&str]) -> FakeRtnl {
        let mut rt = FakeRtnl::with_links(&[("lo", None)]);
        for n in names {
            rt.add(&NewLink::Bridge {
                name: n.to_string(),
            })
            .unwrap();
        }
        rt
    }

    fn get(rt: &mut FakeRtnl, name: &str) -> Link {
        rt.link(name).unwrap().unwrap()
    }

    #[test]
    fn members_go_with_one_request_and_the_rest_stays() {
        let mut rt = fake(&["a", "b", "c"]);
        let all = rt.links().unwrap();
        let mut batch = Batch::new(&all);
        let (a, b) = (get(&mut rt, "a"), get(&mut rt, "b"));
        batch.add(&mut rt, &a).unwrap();
        batch.add(&mut rt, &b).unwrap();
        batch.add(&mut rt, &a).unwrap(); // twice is once
        rt.log.clear();
        batch.delete(&mut rt).unwrap();
        assert_eq!(rt.log.len(), 1, "{:?}", rt.log);
        assert!(rt.log[0].starts_with("delete group "), "{:?}", rt.log);
        assert!(rt.link("a").unwrap().is_none());
        assert!(rt.link("b").unwrap().is_none());
        assert!(rt.link("c").unwrap().is_some());
    }

    #[test]
    fn a_member_that_went_is_no_error_and_its_name_made_again_is_spared() {
        let mut rt = fake(&["a", "b"]);
        let all = rt.links().unwrap();
        let (a, b) = (get(&mut rt, "a"), get(&mut rt, "b"));
        let mut batch = Batch::new(&all);
        rt.delete(a.index).unwrap();
        batch.add(&mut rt, &a).unwrap(); // gone before it was added
        batch.add(&mut rt, &b).unwrap();
        rt.delete(b.index).unwrap(); // gone after
        rt.add(&NewLink::Bridge { name: "b".into() }).unwrap();
        batch.delete(&mut rt).unwrap();
        assert!(rt.link("b").unwrap().is_some(), "another link named b");
    }

    #[test]
    fn a_link_of_another_in_the_group_before_the_delete_makes_it_one_by_one() {
        let mut rt = fake(&["a", "b", "other"]);
        let all = rt.links().unwrap();
        let mut batch = Batch::with_group(&all, BATCH_GROUP_BASE | 7);
        let (a, b) = (get(&mut rt, "a"), get(&mut rt, "b"));
        rt.set_group(b.index, 0x4e53_0001).unwrap();
        let b = get(&mut rt, "b");
        batch.add(&mut rt, &a).unwrap();
        batch.add(&mut rt, &b).unwrap();
        // Another batch drew the same group meanwhile.
        let other = get(&mut rt, "other");
        rt.set_group(other.index, BATCH_GROUP_BASE | 7).unwrap();
        batch.delete(&mut rt).unwrap();
        assert!(rt.link("a").unwrap().is_none());
        assert!(rt.link("b").unwrap().is_none());
        assert!(rt.link("other").unwrap().is_some(), "{:?}", rt.log);
        assert!(rt.log.iter().all(|r| !r.starts_with("delete group")));
    }

    #[test]
    fn restore_puts_the_members_back_into_their_groups() {
        let mut rt = fake(&["a"]);
        let a = get(&mut rt, "a");
        rt.set_group(a.index, 0x4e53_0002).unwrap();
        let a = get(&mut rt, "a");
        let all = rt.links().unwrap();
        let mut batch = Batch::new(&all);
        batch.add(&mut rt, &a).unwrap();
        assert_ne!(get(&mut rt, "a").group, 0x4e53_0002);
        batch.restore(&mut rt);
        assert_eq!(get(&mut rt, "a").group, 0x4e53_0002);
    }

    #[test]
    fn a_group_in_use_makes_it_one_by_one() {
        let mut rt = fake(&["a", "other"]);
        let other = get(&mut rt, "other");
        rt.set_group(other.index, BATCH_GROUP_BASE | 5).unwrap();
        let all = rt.links().unwrap();
        let mut batch = Batch::with_group(&all, BATCH_GROUP_BASE | 5);
        let a = get(&mut rt, "a");
        batch.add(&mut rt, &a).unwrap();
        batch.delete(&mut rt).unwrap();
        assert!(rt.link("a").unwrap().is_none());
        assert!(rt.link("other").unwrap().is_some(), "{:?}", rt.log);
        assert!(rt.log.iter().all(|r| !r.starts_with("delete group")));
    }
}
