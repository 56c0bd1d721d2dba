//! The crate as a tokio daemon (netd) uses it: the blocking verbs run on
//! `spawn_blocking` threads (a `Netlink` drives its own small runtime, which
//! must not be entered from a task), and a `Watch` is awaited through
//! tokio's `AsyncFd`. Needs root for a private network namespace; skipped
//! (loudly) otherwise.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink::{Event, Group, Netlink, NewLink, Rtnl, Watch};

#[test]
fn verbs_on_blocking_threads_and_a_watch_on_async_fd() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: a private network namespace needs root");
        return;
    }
    // The runtime's threads are made inside the private namespace, so
    // everything the daemon opens lives there.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let watch = Watch::open(&[Group::Link, Group::Ipv4Addr])
                .unwrap()
                .into_async()
                .unwrap();
            let nl: Arc<Mutex<Netlink>> = Arc::new(Mutex::new(
                tokio::task::spawn_blocking(Netlink::open)
                    .await
                    .unwrap()
                    .unwrap(),
            ));
            let nl2 = nl.clone();
            let index = tokio::task::spawn_blocking(move || {
                let mut nl = nl2.lock().unwrap();
                nl.add(&NewLink::Bridge {
                    name: "vz-d".into(),
                })
                .unwrap();
                let index = nl.link("vz-d").unwrap().unwrap().index;
                nl.add_address(index, "10.7.0.1".parse().unwrap(), 24)
                    .unwrap();
                let again = nl.add_address(index, "10.7.0.1".parse().unwrap(), 24);
                assert!(again.unwrap_err().is_exists());
                index
            })
            .await
            .unwrap();

            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !seen
                .iter()
                .any(|e| matches!(e, Event::NewAddress(a) if a.index == index))
            {
                let mut guard = tokio::time::timeout_at(deadline, watch.readable())
                    .await
                    .expect("events within 5 s")
                    .unwrap();
                seen.extend(guard.get_inner().read().unwrap());
                guard.clear_ready();
            }
            assert!(seen
                .iter()
                .any(|e| matches!(e, Event::NewLink(l) if l.name == "vz-d" && l.kind.as_deref() == Some("bridge"))));
        });
    })
    .join()
    .unwrap();
}
