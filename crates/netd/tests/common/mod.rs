//! What the netd integration tests share: a private network namespace held
//! open by a `sleep`, and a check for the tools a test needs.

#![allow(dead_code)]

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A network namespace held open by a `sleep` in it; killed on drop (the
/// namespace and its links go with its only process).
pub struct Ns {
    child: Child,
}

impl Ns {
    pub fn new() -> Ns {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .spawn()
            .expect("spawn unshare");
        // Wait until the sleep runs in its own namespace.
        let mine = fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let p = format!("/proc/{}/ns/net", child.id());
            if matches!(fs::read_link(&p), Ok(l) if l != mine) {
                break;
            }
            assert!(Instant::now() < deadline, "namespace did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ns { child }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `args` in this namespace, killed after `secs` seconds.
    pub fn cmd(&self, secs: u32, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args([&secs.to_string(), "nsenter", "-t", &self.pid(), "-n", "--"]);
        c.args(args);
        c
    }

    /// Runs `args` in this namespace (10 s at most); panics on failure.
    pub fn run(&self, args: &[&str]) {
        let out = self.cmd(10, args).output().expect("spawn nsenter");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True if `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
