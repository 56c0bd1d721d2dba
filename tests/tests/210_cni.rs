//! The CNI plugin `netspawn-cni` (docs/cni.md), driven exactly as a runtime
//! drives a plugin: `CNI_*` in the environment, the configuration on stdin,
//! the result or the error object on stdout, the exit status.
//!
//! The first part is a conformance harness for the MUSTs of the CNI spec
//! (1.1) that any plugin can be run against: point `CNI_HARNESS_PLUGIN` at
//! the binary and `CNI_HARNESS_CONF` at its configuration (a JSON object:
//! the plugin's entry without `cniVersion` and `name`), e.g.
//!
//! ```sh
//! CNI_HARNESS_PLUGIN=/usr/lib/cni/bridge \
//! CNI_HARNESS_CONF='{"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":"/tmp/h-l"}}' \
//!   cargo test -p netspawn-tests --test t210_cni conformance_
//! ```
//!
//! Every scenario runs in a "host" of its own (fresh network and mount
//! namespaces) with containers that are network namespaces made in it.
//! The second part checks what only netspawn-cni promises (netd, the
//! registry, NSS, bad input, scale).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use netspawn_tests::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// The harness.

/// The plugin under test and its configuration entry.
struct Plugin {
    path: PathBuf,
    base: Value,
}

impl Plugin {
    fn from_env() -> Plugin {
        let path = std::env::var_os("CNI_HARNESS_PLUGIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin("netspawn-cni"));
        let base = std::env::var("CNI_HARNESS_CONF")
            .ok()
            .map(|s| serde_json::from_str(&s).expect("CNI_HARNESS_CONF is a JSON object"))
            .unwrap_or_else(|| json!({"type": "netspawn-cni", "zone": "cz"}));
        Plugin { path, base }
    }

    fn ours(&self) -> bool {
        self.base["type"] == "netspawn-cni"
    }

    /// The configuration for `version`, network `name`, with `extra` keys.
    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = self.base.clone();
        c["cniVersion"] = json!(version);
        c["name"] = json!("harness");
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                c[k] = v.clone();
            }
        }
        c
    }
}

/// What one invocation gave back.
#[derive(Debug)]
struct Outcome {
    status: Option<i32>,
    out: Value,
    #[allow(dead_code)] // shown (Debug) when an assertion fails
    stderr: String,
}

impl Outcome {
    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, Some(0), "plugin failed: {self:?}");
        &self.out
    }

    /// The error object's code, checking the error object's shape (the
    /// spec: exit status non-zero, `code` and `msg` on stdout).
    #[track_caller]
    fn code(&self) -> u64 {
        assert_ne!(self.status, Some(0), "plugin succeeded: {self:?}");
        let code = self.out["code"].as_u64().unwrap_or_else(|| {
            panic!("no error object on stdout: {self:?}");
        });
        assert!(
            self.out["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {self:?}"
        );
        code
    }

    fn msg(&self) -> String {
        self.out["msg"].as_str().unwrap_or("").to_string()
    }
}

/// One invocation's variables.
#[derive(Clone, Default)]
struct Call {
    cmd: &'static str,
    id: String,
    ifname: String,
    netns: Option<String>,
    args: Option<String>,
}

impl Call {
    fn new(cmd: &'static str, id: &str, netns: Option<&str>) -> Call {
        Call {
            cmd,
            id: id.to_string(),
            ifname: "eth0".into(),
            netns: netns.map(str::to_string),
            args: None,
        }
    }

    fn ifname(mut self, i: &str) -> Call {
        self.ifname = i.into();
        self
    }

    fn args(mut self, a: &str) -> Call {
        self.args = Some(a.into());
        self
    }
}

/// A container: a network namespace held by a sleeping process in the host.
struct Container {
    child: Child,
    netns: String,
}

/// A private host: network and mount namespaces, held by a process we
/// enter for every command.
struct Host<'a> {
    env: &'a TestEnv,
    child: Child,
    pid: u32,
    containers: Mutex<Vec<Container>>,
    plugin: Plugin,
    extra_env: Vec<(String, String)>,
}

impl<'a> Host<'a> {
    fn new(env: &'a TestEnv) -> Host<'a> {
        Host::with_env(env, &[])
    }

    fn with_env(env: &'a TestEnv, extra: &[(&str, &str)]) -> Host<'a> {
        // The NSS module on a private nsswitch.conf, as t160 does.
        let (_, nss) = env.nss_module("hosts: files mymachines\n");
        let mut child = Command::new("unshare")
            .args(["--mount", "--net", "--", "bash", "-c"])
            .arg(format!(
                "mount --bind {} /etc/nsswitch.conf && ip link set lo up && echo ready && exec sleep 1800",
                nss.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = child.id();
        Host {
            env,
            child,
            pid,
            containers: Mutex::new(Vec::new()),
            plugin: Plugin::from_env(),
            extra_env: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn enter(&self, cmd: &mut Command) {
        cmd.env("NETSPAWN_RUN_DIR", self.env.run_dir())
            .env("NETSPAWN_IMAGE_DIR", self.env.image_dir())
            .env("NETSPAWN_STATE_DIR", self.env.dir.join("state"))
            .env("NETSPAWN_CGROUP_PARENT", &self.env.cgroup_parent)
            .env(
                "LD_LIBRARY_PATH",
                self.env.dir.join("nsslib").display().to_string(),
            )
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
    }

    /// Runs a bash script in the host (60 s at most).
    fn sh(&self, script: &str) -> (Option<i32>, String, String) {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "120", "nsenter", "-t"])
            .arg(self.pid.to_string())
            .args(["-n", "-m", "--", "bash", "-c", script])
            .stdin(Stdio::null());
        self.enter(&mut c);
        c.env("NETSPAWNCTL", bin("netspawnctl"));
        let o = c.output().expect("run a host script");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// A new container; returns its netns path.
    fn container(&self) -> String {
        let child = Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            .args(["-n", "-m", "--", "unshare", "--net", "--", "sleep", "1800"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("make a container");
        // nsenter and unshare exec: the sleep is this PID, in its own netns
        // once unshare has run.
        let netns = format!("/proc/{}/ns/net", child.id());
        let host_ns = std::fs::read_link(format!("/proc/{}/ns/net", self.pid)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
            let ns = std::fs::read_link(&netns).ok();
            if comm.trim() == "sleep" && ns.is_some_and(|n| n != host_ns) {
                break;
            }
            assert!(Instant::now() < deadline, "container did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.containers.lock().unwrap().push(Container {
            child,
            netns: netns.clone(),
        });
        netns
    }

    /// Runs a command inside a container's netns (from the host).
    fn inside(&self, netns: &str, script: &str) -> String {
        self.sh(&format!("nsenter --net={netns} -- sh -c '{script}'"))
            .1
    }

    /// Invokes a plugin binary as a runtime does.
    fn invoke_bin(&self, path: &std::path::Path, call: &Call, conf: &Value) -> Outcome {
        use std::io::Write;
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "120", "nsenter", "-t"])
            .arg(self.pid.to_string())
            .args(["-n", "-m", "--"])
            .arg(path)
            .env_remove("CNI_NETNS")
            .env_remove("CNI_ARGS")
            .env("CNI_COMMAND", call.cmd)
            .env("CNI_CONTAINERID", &call.id)
            .env("CNI_IFNAME", &call.ifname)
            .env(
                "CNI_PATH",
                format!(
                    "{}:/usr/lib/cni:/opt/cni/bin",
                    path.parent().unwrap().display()
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.enter(&mut c);
        if let Some(n) = &call.netns {
            c.env("CNI_NETNS", n);
        }
        if let Some(a) = &call.args {
            c.env("CNI_ARGS", a);
        }
        let mut child = c.spawn().expect("run the plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        Outcome {
            status: o.status.code(),
            out: if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {text}"))
            },
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn invoke(&self, call: &Call, conf: &Value) -> Outcome {
        self.invoke_bin(&self.plugin.path, call, conf)
    }

    /// The host's links (names).
    fn links(&self) -> Vec<String> {
        let (_, out, _) = self.sh("ip -o link show | cut -d: -f2 | cut -d@ -f1");
        let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    }
}

impl Drop for Host<'_> {
    fn drop(&mut self) {
        kill_holders(self.env);
        for c in self.containers.lock().unwrap().iter_mut() {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Holders of attachments, killed at the end of a test (they are sessions
/// of their own, outside the test's process tree): those in records and
/// those that are registry entries' launchers.
fn kill_holders(env: &TestEnv) {
    let mut pids = Vec::new();
    for dir in std::fs::read_dir(env.run_dir().join("cni"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read(f.path()).unwrap_or_default();
            if let Ok(v) = serde_json::from_slice::<Value>(&text) {
                if let Some(p) = v["holder_pid"].as_u64() {
                    pids.push(p as i32);
                }
            }
        }
    }
    for e in std::fs::read_dir(env.run_dir().join("machines"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(p) = text.lines().find_map(|l| l.strip_prefix("LAUNCHER=")) {
            pids.extend(p.parse::<i32>().ok());
        }
    }
    for pid in pids {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains("--netspawn-cni-hold") {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The address (without prefix) of the result's IP on the container's
/// interface.
fn result_address(r: &Value) -> String {
    let ifaces = r["interfaces"].as_array().expect("interfaces");
    let ips = r["ips"].as_array().expect("ips");
    let ip = ips
        .iter()
        .rev()
        .find(|ip| {
            ip["interface"]
                .as_u64()
                .and_then(|i| ifaces.get(i as usize))
                .is_some_and(|i| i.get("sandbox").is_some())
        })
        .unwrap_or_else(|| panic!("no IP on a sandbox interface: {r}"));
    ip["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The versions of `wanted` the plugin says it supports.
fn versions(host: &Host, wanted: &[&'static str]) -> Vec<&'static str> {
    let v = host.invoke(
        &Call::new("VERSION", "x", None),
        &json!({"cniVersion": "1.0.0"}),
    );
    let list: Vec<String> = v.ok()["supportedVersions"]
        .as_array()
        .expect("supportedVersions")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|w| list.iter().any(|s| s == w))
        .collect()
}

fn newest(host: &Host) -> &'static str {
    versions(host, &["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        .pop()
        .expect("a version we know")
}

impl Host<'_> {
    /// Waits (30 s at most) until the host's links are `want`: an empty
    /// zone bridge goes in the background after the last DEL.
    #[track_caller]
    fn links_settle(&self, want: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let have = self.links();
            if have == want {
                return;
            }
            assert!(Instant::now() < deadline, "links {have:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (30 s at most) until `f` holds.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Conformance: the spec's MUSTs, for any plugin.

#[test]
fn conformance_version_negotiation_and_result_formats() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    // VERSION answers supportedVersions; an unknown version is error 1.
    let vs = versions(&host, &["0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    assert!(!vs.is_empty());
    for bad in ["0.0.1", "9.9.9"] {
        let ns = host.container();
        let o = host.invoke(
            &Call::new("ADD", "badver", Some(&ns)),
            &host.plugin.conf(bad, json!({})),
        );
        assert_eq!(o.code(), 1, "{o:?}");
        assert_eq!(host.inside(&ns, "ip -o link | wc -l").trim(), "1");
    }
    // Each version's result: its cniVersion, its IP format.
    for v in vs {
        let ns = host.container();
        let id = format!("fmt{}", v.replace('.', ""));
        let conf = host.plugin.conf(v, json!({}));
        let r = host.invoke(&Call::new("ADD", &id, Some(&ns)), &conf);
        let r = r.ok().clone();
        assert_eq!(r["cniVersion"], v, "{r}");
        let ips = r["ips"].as_array().unwrap();
        assert!(!ips.is_empty(), "{r}");
        for ip in ips {
            assert_eq!(ip.get("version").is_some(), v.starts_with("0."), "{v}: {r}");
        }
        let sandbox = r["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "eth0")
            .unwrap_or_else(|| panic!("no eth0 in {r}"));
        assert_eq!(sandbox["sandbox"], ns.as_str(), "{r}");
        let addr = result_address(&r);
        assert!(
            host.inside(&ns, "ip -4 -o addr show dev eth0")
                .contains(&addr),
            "{addr} not on eth0"
        );
        host.invoke(&Call::new("DEL", &id, Some(&ns)), &conf).ok();
    }
}

#[test]
fn conformance_add_check_del_and_idempotent_del() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    let v = newest(&host);
    let links_before = host.links();
    let ns = host.container();
    let conf = host.plugin.conf(v, json!({}));
    let r = host.invoke(&Call::new("ADD", "life", Some(&ns)), &conf);
    let r = r.ok().clone();
    let check_conf = host.plugin.conf(v, json!({"prevResult": r}));
    if v != "0.3.1" {
        host.invoke(&Call::new("CHECK", "life", Some(&ns)), &check_conf)
            .ok();
    }
    // ADD of an interface that exists is an error, and changes nothing.
    let again = host.invoke(&Call::new("ADD", "life2", Some(&ns)), &conf);
    again.code();
    assert!(host
        .inside(&ns, "ip -4 -o addr show dev eth0")
        .contains(&result_address(&r)));
    // DEL, then DEL again, then DEL with neither netns nor prevResult.
    let del_conf = host.plugin.conf(v, json!({"prevResult": r}));
    host.invoke(&Call::new("DEL", "life", Some(&ns)), &del_conf)
        .ok();
    host.invoke(&Call::new("DEL", "life", Some(&ns)), &del_conf)
        .ok();
    host.invoke(&Call::new("DEL", "life", None), &conf).ok();
    host.invoke(&Call::new("DEL", "life2", None), &conf).ok();
    assert_eq!(host.inside(&ns, "ip -o link | wc -l").trim(), "1");
    if host.plugin.ours() {
        // Ours leaves nothing on the host either (the zone bridge went with
        // its last member).
        host.links_settle(&links_before);
    }
    // DEL of a container never added, without a netns.
    host.invoke(&Call::new("DEL", "never", None), &conf).ok();
    // A DEL after the container's netns is gone.
    let ns2 = host.container();
    host.invoke(&Call::new("ADD", "gone", Some(&ns2)), &conf)
        .ok();
    {
        let mut cs = host.containers.lock().unwrap();
        let c = cs.iter_mut().find(|c| c.netns == ns2).unwrap();
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    if host.plugin.ours() {
        // The container's side went with its netns, the host side with it:
        // the attachment's name and registry entry go too, before any DEL
        // (a runtime that crashed never sends one).
        wait_for("the gone container's registry entry to go", || {
            env.registry_names().is_empty()
        });
    }
    host.invoke(&Call::new("DEL", "gone", Some(&ns2)), &conf)
        .ok();
    if host.plugin.ours() {
        host.links_settle(&links_before);
    }
}

#[test]
fn conformance_concurrent_adds_get_unique_addresses() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    let v = newest(&host);
    let conf = host.plugin.conf(v, json!({}));
    let nss: Vec<String> = (0..12).map(|_| host.container()).collect();
    let addrs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (host, conf) = (&host, &conf);
                s.spawn(move || {
                    let r = host.invoke(
                        &Call::new("ADD", &format!("par{i}"), Some(ns))
                            .args(&format!("IgnoreUnknown=1;K8S_POD_NAME=par{i}")),
                        conf,
                    );
                    result_address(r.ok())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut uniq = addrs.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), addrs.len(), "{addrs:?}");
    std::thread::scope(|s| {
        for (i, ns) in nss.iter().enumerate() {
            let (host, conf) = (&host, &conf);
            s.spawn(move || {
                host.invoke(&Call::new("DEL", &format!("par{i}"), Some(ns)), conf)
                    .ok();
            });
        }
    });
    for ns in &nss {
        assert_eq!(host.inside(ns, "ip -o link | wc -l").trim(), "1");
    }
}

#[test]
fn conformance_gc_removes_exactly_what_is_not_valid() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !versions(&host, &["1.1.0"]).contains(&"1.1.0") {
        skip("GC", "the plugin does not speak CNI 1.1.0");
        return;
    }
    let conf = host.plugin.conf("1.1.0", json!({}));
    let ids = ["gca", "gcb", "gcc"];
    let mut nss = Vec::new();
    for id in ids {
        let ns = host.container();
        host.invoke(
            &Call::new("ADD", id, Some(&ns)).args(&format!("IgnoreUnknown=1;K8S_POD_NAME={id}")),
            &conf,
        )
        .ok();
        nss.push(ns);
    }
    let valid = |ids: &[&str]| {
        host.plugin.conf(
            "1.1.0",
            json!({"cni.dev/valid-attachments":
                ids.iter().map(|i| json!({"containerID": i, "ifname": "eth0"})).collect::<Vec<_>>()}),
        )
    };
    host.invoke(&Call::new("GC", "", None), &valid(&["gca", "gcc"]))
        .ok();
    for (i, id) in ids.iter().enumerate() {
        let check = host.invoke(&Call::new("CHECK", id, Some(&nss[i])), &conf);
        if *id == "gcb" {
            check.code();
            assert_eq!(host.inside(&nss[i], "ip -o link | wc -l").trim(), "1");
        } else {
            check.ok();
        }
    }
    host.invoke(&Call::new("GC", "", None), &valid(&[])).ok();
    for ns in &nss {
        assert_eq!(host.inside(ns, "ip -o link | wc -l").trim(), "1");
    }
}

#[test]
fn conformance_status() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !versions(&host, &["1.1.0"]).contains(&"1.1.0") {
        skip("STATUS", "the plugin does not speak CNI 1.1.0");
        return;
    }
    host.invoke(
        &Call::new("STATUS", "", None),
        &host.plugin.conf("1.1.0", json!({})),
    )
    .ok();
}

/// libcni's chain: each plugin gets the previous one's result as
/// `prevResult`; CHECK and DEL get the final result; DEL runs in reverse.
#[test]
fn conformance_chains_with_the_reference_plugins() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    let refs = ["tuning", "portmap", "firewall", "bridge", "host-local"];
    if let Some(m) = refs
        .iter()
        .find(|p| !std::path::Path::new("/usr/lib/cni").join(p).exists())
    {
        skip(
            "chaining",
            &format!("/usr/lib/cni/{m} missing (Debian's containernetworking-plugins)"),
        );
        return;
    }
    // Debian's reference plugins speak up to 1.0.0.
    let v = "1.0.0";
    let ours = host.plugin.conf(v, json!({}));
    let refconf = |entry: Value| {
        let mut c = entry;
        c["cniVersion"] = json!(v);
        c["name"] = json!("harness");
        c
    };
    let chain = [
        refconf(json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}})),
        refconf(
            json!({"type": "portmap", "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]}}),
        ),
        refconf(json!({"type": "firewall", "backend": "iptables"})),
    ];
    let ns = host.container();
    let mut result = host
        .invoke(&Call::new("ADD", "chain", Some(&ns)), &ours)
        .ok()
        .clone();
    let addr = result_address(&result);
    for c in &chain {
        let mut c = c.clone();
        c["prevResult"] = result.clone();
        let p = PathBuf::from("/usr/lib/cni").join(c["type"].as_str().unwrap());
        let o = host.invoke_bin(&p, &Call::new("ADD", "chain", Some(&ns)), &c);
        let r = o.ok().clone();
        assert_eq!(
            result_address(&r),
            addr,
            "{} lost our address: {r}",
            c["type"]
        );
        result = r;
    }
    assert_eq!(
        host.inside(&ns, "cat /proc/sys/net/core/somaxconn").trim(),
        "512"
    );
    // CHECK of every plugin with the final result.
    let mut check = ours.clone();
    check["prevResult"] = result.clone();
    host.invoke(&Call::new("CHECK", "chain", Some(&ns)), &check)
        .ok();
    for c in chain.iter().rev() {
        let mut c = c.clone();
        c["prevResult"] = result.clone();
        let p = PathBuf::from("/usr/lib/cni").join(c["type"].as_str().unwrap());
        host.invoke_bin(&p, &Call::new("DEL", "chain", Some(&ns)), &c)
            .ok();
    }
    host.invoke(&Call::new("DEL", "chain", Some(&ns)), &check)
        .ok();
    assert_eq!(host.inside(&ns, "ip -o link | wc -l").trim(), "1");

    // After a reference plugin: bridge + host-local on eth1, then ours on eth0
    // with the bridge's result as prevResult; ours appends to it.
    let hl = env.dir.join("host-local");
    let bridge = refconf(
        json!({"type": "bridge", "bridge": "cnibr0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.209.0.0/24", "dataDir": hl}}),
    );
    let ns = host.container();
    let first = host
        .invoke_bin(
            &PathBuf::from("/usr/lib/cni/bridge"),
            &Call::new("ADD", "after", Some(&ns)).ifname("eth1"),
            &bridge,
        )
        .ok()
        .clone();
    let mut after = ours.clone();
    after["prevResult"] = first.clone();
    let merged = host
        .invoke(&Call::new("ADD", "after", Some(&ns)), &after)
        .ok()
        .clone();
    let first_ips = first["ips"].as_array().unwrap().len();
    assert_eq!(
        merged["ips"].as_array().unwrap()[..first_ips],
        first["ips"].as_array().unwrap()[..],
        "prevResult's IPs kept first: {merged}"
    );
    assert!(merged["ips"].as_array().unwrap().len() > first_ips);
    let names: Vec<&str> = merged["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(
        names.contains(&"eth1") && names.contains(&"eth0"),
        "{merged}"
    );
    let mut del = ours.clone();
    del["prevResult"] = merged.clone();
    host.invoke(&Call::new("CHECK", "after", Some(&ns)), &del)
        .ok();
    host.invoke(&Call::new("DEL", "after", Some(&ns)), &del)
        .ok();
    let mut bdel = bridge.clone();
    bdel["prevResult"] = merged;
    host.invoke_bin(
        &PathBuf::from("/usr/lib/cni/bridge"),
        &Call::new("DEL", "after", Some(&ns)).ifname("eth1"),
        &bdel,
    )
    .ok();
    assert_eq!(host.inside(&ns, "ip -o link | wc -l").trim(), "1");
}

// ---------------------------------------------------------------------------
// What netspawn-cni promises beyond the spec.

/// Skips (loudly) a netspawn-only test when the harness runs another plugin.
fn ours_only(host: &Host, test: &str) -> bool {
    if !host.plugin.ours() {
        skip(
            test,
            "netspawn-cni only (CNI_HARNESS_PLUGIN names another plugin)",
        );
        return false;
    }
    true
}

/// The zone's gateway (netd's address on vz-ZONE).
fn gateway(host: &Host, zone: &str) -> String {
    let (_, out, _) = host.sh(&format!(
        "ip -4 -o addr show dev vz-{zone} | grep -o 'inet [0-9.]*' | cut -d' ' -f2"
    ));
    out.trim().to_string()
}

fn records(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.run_dir().join("cni"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| f.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn an_attachment_is_a_machine_for_netd_dns_the_registry_and_nss() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !ours_only(&host, "registry") {
        return;
    }
    let before = host.links();
    let conf = host.plugin.conf("1.1.0", json!({"zone": "cz"}));
    let (a, b) = (host.container(), host.container());
    let ra = host
        .invoke(
            &Call::new("ADD", "ctr-web", Some(&a)).args("IgnoreUnknown=1;K8S_POD_NAME=web"),
            &conf,
        )
        .ok()
        .clone();
    // The second with a MAC of the runtime's (the `mac` capability).
    let mut with_mac = conf.clone();
    with_mac["runtimeConfig"] = json!({"mac": "02:aa:bb:cc:dd:ee"});
    host.invoke(
        &Call::new("ADD", "0123456789abcdef0123", Some(&b)),
        &with_mac,
    )
    .ok();
    assert!(
        host.inside(&b, "ip link show eth0")
            .contains("02:aa:bb:cc:dd:ee"),
        "the mac capability"
    );
    let web = result_address(&ra);
    // The result: netd is the DNS server and the default route's gateway.
    let gw = gateway(&host, "cz");
    assert_eq!(ra["dns"]["nameservers"][0], gw.as_str(), "{ra}");
    assert_eq!(ra["routes"][0]["gw"], gw.as_str(), "{ra}");
    assert!(host.inside(&a, "ip route show default").contains(&gw));
    // The registry entry, class pod; the unnamed container gets its ID's name.
    assert_eq!(env.registry_names(), ["cni-0123456789ab", "web"]);
    let entry = std::fs::read_to_string(env.run_dir().join("machines/web")).unwrap();
    assert!(entry.contains("\nCLASS=pod\n"), "{entry}");
    assert!(entry.contains(&format!("\nADDRESSES={web}\n")), "{entry}");
    // netd's DNS answers the name (from the other container, through the
    // zone), and the host's NSS finds it.
    let dig = host.inside(&b, &format!("dig +short +time=2 +tries=3 @{gw} web"));
    assert_eq!(dig.trim(), web, "dig: {dig}");
    let (_, hosts, _) = host.sh("getent hosts web");
    assert!(hosts.starts_with(&format!("{web} ")), "getent: {hosts}");
    let ping = host.inside(&b, &format!("ping -c1 -W5 {web} >/dev/null && echo ok"));
    assert_eq!(ping.trim(), "ok");
    // netspawnctl lists it like a machine.
    let (_, list, _) = host.sh("$NETSPAWNCTL list --no-legend");
    assert!(list.contains("web") && list.contains("pod"), "{list}");
    // Its leader is the holder, in the host's namespaces: the verbs that
    // would enter it, copy into its root or signal "all" its processes would
    // act on the host, so they are refused and change nothing.
    let (_, out, _) = host.sh(
        "for v in 'shell web /bin/true' 'copy-to web /etc/hostname /tmp/x' \
                  'bind web /tmp' 'kill --kill-whom=all web' 'reboot web' \
                  'set-property web MemoryMax=1G'; do \
           $NETSPAWNCTL $v 2>&1 | head -1 | sed \"s|^|$v: |\"; echo \"$v rc=${PIPESTATUS[0]}\"; done",
    );
    assert_eq!(out.matches("(class pod)").count(), 6, "{out}");
    assert_eq!(out.matches(" rc=1\n").count(), 6, "{out}");
    assert_eq!(env.registry_names(), ["cni-0123456789ab", "web"]);
    for (id, ns) in [("ctr-web", &a), ("0123456789abcdef0123", &b)] {
        host.invoke(&Call::new("DEL", id, Some(ns)), &conf).ok();
    }
    let (_, hosts, _) = host.sh("getent hosts web; echo rc=$?");
    assert_eq!(hosts.trim(), "rc=2");
    assert!(env.registry_names().is_empty());
    assert!(records(&env).is_empty());
    // The zone bridge goes with the last member (in the background).
    host.links_settle(&before);
}

#[test]
fn check_finds_a_missing_address_route_reservation_link_or_netd() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !ours_only(&host, "CHECK findings") {
        return;
    }
    let conf = host.plugin.conf("1.1.0", json!({}));
    let cases: [(&str, &str); 5] = [
        ("inside:ip addr flush dev eth0", "address"),
        ("inside:ip route del default", "default route"),
        ("host:kill -9 $HOLDER", "reservation"),
        ("host:ip link del vb-chk", "vb-chk is missing"),
        (
            "host:kill -9 $(cat $NETSPAWN_RUN_DIR/netd-*.pid)",
            "netspawn-netd is not running",
        ),
    ];
    for (break_it, finding) in cases {
        let ns = host.container();
        let call = |cmd| Call::new(cmd, "chk", Some(&ns)).args("IgnoreUnknown=1;K8S_POD_NAME=chk");
        host.invoke(&call("ADD"), &conf).ok();
        host.invoke(&call("CHECK"), &conf).ok();
        let rec: Value = serde_json::from_slice(
            &std::fs::read(env.run_dir().join("cni/harness/chk.eth0.json")).unwrap(),
        )
        .unwrap();
        let holder = rec["holder_pid"].to_string();
        let script = break_it.replace("$HOLDER", &holder);
        if let Some(s) = script.strip_prefix("inside:") {
            host.inside(&ns, s);
        } else {
            let (st, _, err) = host.sh(script.strip_prefix("host:").unwrap());
            assert_eq!(st, Some(0), "{script}: {err}");
        }
        let o = host.invoke(&call("CHECK"), &conf);
        assert_eq!(o.code(), 100, "{break_it}: {o:?}");
        assert!(o.msg().contains(finding), "{break_it}: {}", o.msg());
        host.invoke(&call("DEL"), &conf).ok();
        assert!(records(&env).is_empty());
        assert!(env.registry_names().is_empty(), "{break_it}");
        assert!(
            !host.links().iter().any(|l| l.starts_with("vb-")),
            "{break_it}"
        );
    }
}

/// A port forward netd no longer has (it was restarted: forwards live in
/// the running netd) is a CHECK finding.
#[test]
fn check_finds_a_port_forward_netd_lost() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !ours_only(&host, "CHECK of forwards") {
        return;
    }
    let conf = host.plugin.conf(
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
    );
    let ns = host.container();
    let call = |cmd| Call::new(cmd, "fwd", Some(&ns)).args("IgnoreUnknown=1;K8S_POD_NAME=fwd");
    host.invoke(&call("ADD"), &conf).ok();
    // netd installs the forward once it knows the address: CHECK passes then.
    wait_for("CHECK to pass", || {
        host.invoke(&call("CHECK"), &conf).status == Some(0)
    });
    let (st, _, err) = host.sh("kill -9 $(cat $NETSPAWN_RUN_DIR/netd-*.pid)");
    assert_eq!(st, Some(0), "{err}");
    host.invoke(&Call::new("STATUS", "", None), &conf).ok();
    let o = host.invoke(&call("CHECK"), &conf);
    assert_eq!(o.code(), 100, "{o:?}");
    assert!(o.msg().contains("port forwards"), "{}", o.msg());
    host.invoke(&call("DEL"), &conf).ok();
    host.links_settle(&["lo".to_string()]);
}

#[test]
fn status_is_50_when_netd_cannot_start_and_0_when_ready() {
    let env = TestEnv::new();
    let conf_for = |host: &Host| host.plugin.conf("1.1.0", json!({}));
    {
        let host = Host::with_env(&env, &[("NETSPAWN_NETD", "/nonexistent/netspawn-netd")]);
        if !ours_only(&host, "STATUS 50") {
            return;
        }
        let o = host.invoke(&Call::new("STATUS", "", None), &conf_for(&host));
        assert_eq!(o.code(), 50, "{o:?}");
        // ADD cannot go on: try again later, nothing left.
        let ns = host.container();
        let o = host.invoke(&Call::new("ADD", "nonetd", Some(&ns)), &conf_for(&host));
        assert_eq!(o.code(), 11, "{o:?}");
        assert!(records(&env).is_empty());
        assert!(env.registry_names().is_empty());
        host.links_settle(&["lo".to_string()]);
    }
    let host = Host::new(&env);
    host.invoke(&Call::new("STATUS", "", None), &conf_for(&host))
        .ok();
}

#[test]
fn bad_input_gets_the_spec_codes_and_leaves_nothing() {
    let env = TestEnv::new();
    // A zone pool of a /29: five addresses for containers.
    let tpl = env.dir.join("network");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(
        tpl.join("80-container-vz.network"),
        "[Match]\nName=vz-*\nKind=bridge\n\n[Network]\nAddress=0.0.0.0/29\nDHCPServer=yes\nIPMasquerade=both\n",
    )
    .unwrap();
    let host = Host::with_env(&env, &[("NETSPAWN_NETWORK_PATH", tpl.to_str().unwrap())]);
    if !ours_only(&host, "bad input") {
        return;
    }
    let ns = host.container();
    let cases: Vec<(Value, Call, u64, &str)> = vec![
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni"}),
            Call::new("ADD", "b1", Some(&ns)),
            7,
            "zone",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "a/b"}),
            Call::new("ADD", "b1", Some(&ns)),
            7,
            "zone",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "waytoolongzone"}),
            Call::new("ADD", "b1", Some(&ns)),
            7,
            "zone",
        ),
        (
            json!({"cniVersion": "0.2.0", "name": "n", "type": "netspawn-cni", "zone": "z"}),
            Call::new("ADD", "b1", Some(&ns)),
            1,
            "cniVersion",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "z"}),
            Call::new("ADD", "b1", Some("/proc/self/nonexistent")),
            3,
            "CNI_NETNS",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "z"}),
            Call::new("ADD", "b1", Some(&ns)).ifname("lo"),
            4,
            "CNI_IFNAME",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "z"}),
            Call::new("ADD", "-bad", Some(&ns)),
            4,
            "CNI_CONTAINERID",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "z",
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}}),
            Call::new("ADD", "b1", Some(&ns)),
            2,
            "protocol",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netspawn-cni", "zone": "z",
            "runtimeConfig": {"bandwidth": {"ingressRate": 1000}}}),
            Call::new("ADD", "b1", Some(&ns)),
            7,
            "ingressBurst",
        ),
    ];
    for (conf, call, code, needle) in cases {
        let o = host.invoke(&call, &conf);
        assert_eq!(o.code(), code, "{conf}: {o:?}");
        assert!(o.msg().contains(needle), "{conf}: {}", o.msg());
        assert_eq!(o.msg().lines().count(), 1);
        assert!(records(&env).is_empty(), "{conf}");
        assert!(env.registry_names().is_empty(), "{conf}");
        assert_eq!(host.links(), ["lo"], "{conf}");
        assert_eq!(host.inside(&ns, "ip -o link | wc -l").trim(), "1");
    }
    // A zone at its pool's limit: try again later, nothing of the refused one left.
    let conf = host.plugin.conf("1.0.0", json!({"zone": "small"}));
    let mut added = Vec::new();
    let refused = loop {
        assert!(added.len() < 8, "a /29 gave more than 8 addresses");
        let ns = host.container();
        let id = format!("pool{}", added.len());
        let o = host.invoke(
            &Call::new("ADD", &id, Some(&ns)).args(&format!("IgnoreUnknown=1;K8S_POD_NAME={id}")),
            &conf,
        );
        if o.status == Some(0) {
            added.push((id, ns));
            continue;
        }
        break (o, id, ns);
    };
    assert!(added.len() >= 4, "{}", added.len());
    let (o, id, ns) = refused;
    assert_eq!(o.code(), 11, "{o:?}");
    assert!(o.msg().contains("pool"), "{}", o.msg());
    assert!(!host.links().contains(&format!("vb-{id}")));
    assert!(!env.registry_names().contains(&id));
    assert_eq!(records(&env).len(), added.len());
    assert_eq!(host.inside(&ns, "ip -o link | wc -l").trim(), "1");
    for (id, ns) in &added {
        host.invoke(&Call::new("DEL", id, Some(ns)), &conf).ok();
    }
    host.links_settle(&["lo".to_string()]);
}

#[test]
fn gc_takes_rules_entries_and_links_of_orphans_only() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !ours_only(&host, "GC details") {
        return;
    }
    let lab = host
        .plugin
        .conf("1.1.0", json!({"name": "lab", "zone": "gz"}));
    let other = host
        .plugin
        .conf("1.1.0", json!({"name": "other", "zone": "gz"}));
    let mut nss = Vec::new();
    for (id, conf, port) in [
        ("ga", &lab, 0),
        ("gb", &lab, 8080),
        ("gc", &lab, 0),
        ("gd", &other, 0),
    ] {
        let ns = host.container();
        let mut conf = conf.clone();
        if port != 0 {
            conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]});
        }
        host.invoke(
            &Call::new("ADD", id, Some(&ns)).args(&format!("IgnoreUnknown=1;K8S_POD_NAME={id}")),
            &conf,
        )
        .ok();
        nss.push((id, ns));
    }
    let rule = || {
        host.sh("nft list table inet netspawn")
            .1
            .contains("owner gb")
    };
    wait_for("gb's port forward", rule);
    let mut gc = lab.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "ga", "ifname": "eth0"}, {"containerID": "gc", "ifname": "eth0"}]);
    host.invoke(&Call::new("GC", "", None), &gc).ok();
    wait_for("gb's port forward to go", || !rule());
    assert_eq!(env.registry_names(), ["ga", "gc", "gd"]);
    assert!(!host.links().contains(&"vb-gb".to_string()));
    for (id, ns) in &nss {
        let conf = if *id == "gd" { &other } else { &lab };
        let o = host.invoke(&Call::new("CHECK", id, Some(ns)), conf);
        if *id == "gb" {
            o.code();
        } else {
            o.ok();
        }
    }
    gc["cni.dev/valid-attachments"] = json!([]);
    host.invoke(&Call::new("GC", "", None), &gc).ok();
    assert_eq!(env.registry_names(), ["gd"]);
    host.invoke(&Call::new("DEL", "gd", Some(&nss[3].1)), &other)
        .ok();
    host.links_settle(&["lo".to_string()]);
    assert!(records(&env).is_empty());
}

/// 200 attachments on one zone: unique addresses, every name resolvable
/// through netd, and GC after a runtime "crash" (it lost half of its
/// containers) removes exactly those.
#[test]
fn scale_200_attachments_on_one_zone() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !ours_only(&host, "scale") {
        return;
    }
    const N: usize = 200;
    let conf = host.plugin.conf("1.1.0", json!({"zone": "big"}));
    let nss: Vec<String> = (0..N).map(|_| host.container()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let addrs = Mutex::new(vec![String::new(); N]);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= N {
                    break;
                }
                let r = host.invoke(
                    &Call::new("ADD", &format!("s{i}"), Some(&nss[i]))
                        .args(&format!("IgnoreUnknown=1;K8S_POD_NAME=s{i}")),
                    &conf,
                );
                addrs.lock().unwrap()[i] = result_address(r.ok());
            });
        }
    });
    let addrs = addrs.into_inner().unwrap();
    let mut uniq = addrs.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), N);
    assert_eq!(env.registry_names().len(), N);
    // Every name through netd's DNS, in one script.
    let gw = gateway(&host, "big");
    let (_, out, _) = host.sh(&format!(
        "for i in $(seq 0 {}); do echo s$i=$(dig +short +time=2 +tries=3 @{gw} s$i); done",
        N - 1
    ));
    for (i, a) in addrs.iter().enumerate() {
        assert!(
            out.contains(&format!("s{i}={a}\n")),
            "s{i} {a} not resolved"
        );
    }
    // The runtime comes back knowing only the even ones.
    let valid: Vec<Value> = (0..N)
        .step_by(2)
        .map(|i| json!({"containerID": format!("s{i}"), "ifname": "eth0"}))
        .collect();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!(valid);
    host.invoke(&Call::new("GC", "", None), &gc).ok();
    let mut want: Vec<String> = (0..N).step_by(2).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(env.registry_names(), want);
    assert_eq!(records(&env).len(), N / 2);
    let vbs = host.links().iter().filter(|l| l.starts_with("vb-")).count();
    assert_eq!(vbs, N / 2);
    for i in (1..N).step_by(2) {
        assert_eq!(
            host.inside(&nss[i], "ip -o link | wc -l").trim(),
            "1",
            "s{i}"
        );
    }
    gc["cni.dev/valid-attachments"] = json!([]);
    host.invoke(&Call::new("GC", "", None), &gc).ok();
    assert!(env.registry_names().is_empty());
    host.links_settle(&["lo".to_string()]);
}

// ---------------------------------------------------------------------------
// Real engines: Debian's podman 4.3 and containerd 1.6, started by the test
// with private configuration and state, images from a tarball of a busybox
// root, no network.

/// Script prelude for an engine test, run by `TestEnv::sh` (private mount
/// and network namespaces): private /run and /opt (the plugin in
/// /opt/cni/bin), a private /etc/cni/net.d holding the documented
/// `10-netspawn.conflist` for zone `lab`, the NSS module for `getent` (as
/// `$NSS getent ...`), the busybox root as a tarball `$T/bb.tar`, and the
/// netspawn machine `web` on zone `lab`, running until `$CTL/stop` exists.
fn engine_prelude(env: &TestEnv) -> String {
    let img = env.busybox("bb");
    let t = env.dir.join("engine");
    for d in ["net.d", "ctl", "nsslib"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::copy(
        bin("libnss_mymachines.so"),
        t.join("nsslib/libnss_mymachines.so.2"),
    )
    .unwrap();
    std::fs::write(t.join("nsswitch.conf"), "hosts: files mymachines\n").unwrap();
    std::fs::write(
        t.join("net.d/10-netspawn.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "lab", "plugins": [{"type": "netspawn-cni", "zone": "lab", "capabilities": {"portMappings": true}}]}"#,
    )
    .unwrap();
    format!(
        r#"set -u
           T={t}; CTL=$T/ctl; IMG={img}
           export NETSPAWN_NETD={netd}
           # The engines' own state outside their configured roots (libcni's
           # cache in /var/lib/cni, podman's blob cache in /var/lib/containers)
           # stays in this mount namespace too.
           mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin
           mount -t tmpfs tmpfs /var/lib
           cp {plugin} /opt/cni/bin/ && mount --bind $T/net.d /etc/cni/net.d
           mount --bind $T/nsswitch.conf /etc/nsswitch.conf
           NSS="env LD_LIBRARY_PATH=$T/nsslib"
           # The engines' containers go under a cgroup parent of this test's,
           # removed (empty) at the end in every hierarchy.
           CGP={cgp}-engine
           rm_cgroups() {{ for d in /sys/fs/cgroup/*/$CGP /sys/fs/cgroup/$CGP; do [ -d $d ] && find $d -depth -type d -exec rmdir {{}} \; 2>/dev/null; done; true; }}
           ip link set lo up
           tar -C $IMG -cf $T/bb.tar .
           $NETSPAWN -q --network-zone=lab -M web --bind=$CTL:/ctl -D $IMG /bin/sh -c '{HOLD}' &
           WEB=$!
           for i in $(seq 600); do $NSS getent hosts web >/dev/null && break; sleep 0.05; done
           GW=$(ip -4 -o addr show dev vz-lab | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
           echo gw=$GW
           "#,
        t = t.display(),
        img = img.display(),
        netd = bin("netspawn-netd").display(),
        plugin = bin("netspawn-cni").display(),
        cgp = env.cgroup_parent,
    )
}

/// Checks an engine script's `KEY=VALUE` lines.
#[track_caller]
fn expect_lines(r: &Run, want: &[&str]) {
    for w in want {
        assert!(
            r.stdout.lines().any(|l| l == *w),
            "missing {w:?}\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout,
            r.stderr
        );
    }
}

#[test]
fn podman_with_the_cni_backend_puts_containers_on_a_netspawn_zone() {
    if !have("podman") || !have("runc") || !have("conmon") {
        skip(
            "podman",
            "podman, runc or conmon missing (scripts/setup-deps installs them)",
        );
        return;
    }
    let env = TestEnv::new();
    let script = format!(
        r#"{prelude}
           mkdir -p $T/pod
           cat > $T/containers.conf <<EOC
[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
network_config_dir = "/etc/cni/net.d"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$T/pod/events.log"
runtime = "runc"
tmp_dir = "$T/pod/tmp"
static_dir = "$T/pod/static"
volume_path = "$T/pod/volumes"
EOC
           cat > $T/storage.conf <<EOS
[storage]
driver = "vfs"
graphroot = "$T/pod/root"
runroot = "$T/pod/runroot"
EOS
           export CONTAINERS_CONF=$T/containers.conf CONTAINERS_STORAGE_CONF=$T/storage.conf
           trap 'podman rm -af -t0 >/dev/null 2>&1; touch $CTL/stop; rm_cgroups' EXIT
           podman import $T/bb.tar localhost/bb >/dev/null && echo imported
           podman run -d --cgroup-parent=/$CGP --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --name pc --network lab \
               -v $CTL:/ctl localhost/bb /bin/sh -c 'while ! [ -e /ctl/stop ]; do sleep 0.05; done' >/dev/null
           echo run=$?
           podman exec pc ping -c1 -W5 web >/dev/null && echo pc-pings-web=ok
           podman exec pc grep -m1 ^nameserver /etc/resolv.conf
           $NETSPAWNCTL shell web /bin/ping -c1 -W5 pc >/dev/null && echo web-pings-pc=ok
           A=$(podman exec pc ip -4 -o addr show dev eth0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
           [ -n "$A" ] && [ "$($NSS getent hosts pc | cut -d' ' -f1)" = "$A" ] && echo host-resolves-pc=ok
           grep -q '^CLASS=pod$' $NETSPAWN_RUN_DIR/machines/pc && echo registry=pod
           podman rm -f -t0 pc >/dev/null; echo rm=$?
           echo left-registry=$(ls $NETSPAWN_RUN_DIR/machines | tr '\n' ' ')
           echo left-records=$(ls $NETSPAWN_RUN_DIR/cni/lab 2>/dev/null | wc -l)
           echo left-links=$(ip -o link | grep -c vb-pc)
           $NSS getent hosts pc >/dev/null; echo getent-after=$?
           touch $CTL/stop; wait $WEB
           # The keeper removes the zone bridge a moment after the launcher exits.
           for i in $(seq 600); do ip link show vz-lab >/dev/null 2>&1 || break; sleep 0.05; done
           echo left-after-web=$(ip -o link show | cut -d: -f2 | tr -d ' ' | tr '\n' ' ')"#,
        prelude = engine_prelude(&env),
    );
    let r = env.sh(&script, 240);
    kill_holders(&env);
    expect_lines(
        &r,
        &[
            "imported",
            "run=0",
            "pc-pings-web=ok",
            "web-pings-pc=ok",
            "host-resolves-pc=ok",
            "registry=pod",
            "rm=0",
            "left-registry=web",
            "left-records=0",
            "left-links=0",
            "getent-after=2",
            "left-after-web=lo",
        ],
    );
    // podman wrote the plugin's DNS (netd) into the container's resolv.conf.
    let gw = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("gw="))
        .unwrap();
    assert!(
        r.stdout.contains(&format!("nameserver {gw}\n")),
        "{}",
        r.stdout
    );
}

#[test]
fn containerd_ctr_run_cni_puts_containers_on_a_netspawn_zone() {
    if !have("containerd") || !have("ctr") || !have("runc") {
        skip(
            "containerd",
            "containerd, ctr or runc missing (scripts/setup-deps installs them)",
        );
        return;
    }
    let env = TestEnv::new();
    let script = format!(
        r#"{prelude}
           # An OCI image layout of the busybox root, by hand (no registry, no network).
           O=$T/oci; mkdir -p $O/blobs/sha256
           blob() {{ d=$(sha256sum $1 | cut -d' ' -f1); s=$(stat -c %s $1); mv $1 $O/blobs/sha256/$d; echo $d $s; }}
           cp $T/bb.tar $T/layer.tar; read L LS <<< "$(blob $T/layer.tar)"
           printf '{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' $L > $T/cfg.json
           read C CS <<< "$(blob $T/cfg.json)"
           printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' $C $CS $L $LS > $T/m.json
           read M MS <<< "$(blob $T/m.json)"
           printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"org.opencontainers.image.ref.name":"localhost/bb:latest"}}}}]}}' $M $MS > $O/index.json
           echo '{{"imageLayoutVersion":"1.0.0"}}' > $O/oci-layout
           tar -C $O -cf $T/bb-oci.tar .
           cat > $T/containerd.toml <<EOT
version = 2
root = "$T/ctd/root"
state = "$T/ctd/state"
[grpc]
  address = "$T/ctd/sock"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
EOT
           containerd --log-level debug --config $T/containerd.toml > $T/containerd.log 2>&1 &
           CD=$!
           trap 'kill $CD 2>/dev/null; touch $CTL/stop; rm_cgroups' EXIT
           for i in $(seq 600); do [ -S $T/ctd/sock ] && break; sleep 0.05; done
           CTR="ctr --address $T/ctd/sock"
           $CTR images import --base-name localhost/bb $T/bb-oci.tar >/dev/null && echo imported
           # ctr 1.6 calls CNI DEL when a foreground `ctr run` sees its task end.
           $CTR run --cni --cgroup /$CGP/c1 --mount type=bind,src=$CTL,dst=/ctl,options=rbind:rw localhost/bb:latest c1 \
               /bin/sh -c 'while ! [ -e /ctl/stop-c1 ]; do sleep 0.05; done' > /dev/null 2>&1 &
           RUN=$!
           N=cni-defaultc1
           for i in $(seq 600); do [ -e $NETSPAWN_RUN_DIR/machines/$N ] && break; sleep 0.05; done
           $CTR task exec --exec-id q1 c1 nslookup web $GW >/dev/null && echo c1-resolves-web=ok
           # web is dual-stack (IPv6 on the zone by default; `hosts` may give its
           # unique local address first), the attachment IPv4 only (docs/cni.md).
           W=$($NSS getent ahostsv4 web | head -1 | cut -d' ' -f1)
           $CTR task exec --exec-id p1 c1 ping -c1 -W5 $W >/dev/null && echo c1-pings-web=ok
           $NETSPAWNCTL shell web /bin/ping -c1 -W5 $N >/dev/null && echo web-pings-c1=ok
           A=$($CTR task exec --exec-id a1 c1 ip -4 -o addr show dev eth0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
           [ -n "$A" ] && [ "$($NSS getent hosts $N | cut -d' ' -f1)" = "$A" ] && echo host-resolves-c1=ok
           $CTR task kill -s KILL c1; echo kill=$?
           wait $RUN
           $CTR containers rm c1; echo rm=$?
           echo left-registry=$(ls $NETSPAWN_RUN_DIR/machines | tr '\n' ' ')
           echo left-records=$(ls $NETSPAWN_RUN_DIR/cni/lab 2>/dev/null | wc -l)
           $NSS getent hosts $N >/dev/null; echo getent-after=$?
           # The CRI plugin loaded the documented configuration.
           grep -q 'Start cni network conf syncer' $T/containerd.log && echo cri-syncer=started
           grep -c 'failed to load cni' $T/containerd.log | sed 's/^/cri-load-failures=/'
           touch $CTL/stop; wait $WEB
           # The keeper removes the zone bridge a moment after the launcher exits.
           for i in $(seq 600); do ip link show vz-lab >/dev/null 2>&1 || break; sleep 0.05; done
           echo left-after-web=$(ip -o link show | cut -d: -f2 | tr -d ' ' | tr '\n' ' ')"#,
        prelude = engine_prelude(&env),
    );
    let r = env.sh(&script, 240);
    kill_holders(&env);
    expect_lines(
        &r,
        &[
            "imported",
            "c1-resolves-web=ok",
            "c1-pings-web=ok",
            "web-pings-c1=ok",
            "host-resolves-c1=ok",
            "kill=0",
            "rm=0",
            "left-registry=web",
            "left-records=0",
            "getent-after=2",
            "cri-syncer=started",
            "cri-load-failures=0",
            "left-after-web=lo",
        ],
    );
}

#[test]
fn bandwidth_puts_a_tbf_on_each_direction() {
    let env = TestEnv::new();
    let host = Host::new(&env);
    if !ours_only(&host, "bandwidth") {
        return;
    }
    let conf = host.plugin.conf(
        "1.1.0",
        json!({"runtimeConfig": {"bandwidth": {
            "ingressRate": 8_000_000, "ingressBurst": 80_000,
            "egressRate": 16_000_000, "egressBurst": 160_000}}}),
    );
    let ns = host.container();
    let call = |cmd| Call::new(cmd, "bw", Some(&ns)).args("IgnoreUnknown=1;K8S_POD_NAME=bw");
    host.invoke(&call("ADD"), &conf).ok();
    // What reaches the container leaves vb-bw; what it sends leaves its eth0.
    let (_, to_container, _) = host.sh("tc qdisc show dev vb-bw");
    assert!(
        to_container.contains("tbf")
            && to_container.contains("rate 8Mbit")
            && to_container.contains("burst 10000b"),
        "{to_container}"
    );
    let from_container = host.inside(&ns, "tc qdisc show dev eth0");
    assert!(
        from_container.contains("tbf") && from_container.contains("rate 16Mbit"),
        "{from_container}"
    );
    host.invoke(&call("DEL"), &conf).ok();
    host.links_settle(&["lo".to_string()]);
}

/// `netspawnctl install` puts the plugin where runtimes look for it (here
/// the test's NETSPAWN_CNI_BIN_DIR, never /opt/cni/bin or /usr/lib/cni);
/// `uninstall` removes it.
#[test]
fn netspawnctl_install_puts_the_plugin_in_the_cni_directories() {
    let env = TestEnv::new();
    let dirs = [env.dir.join("cni-a"), env.dir.join("cni-b")];
    let run = |args: &[&str]| {
        let o = env
            .ctl_cmd(args, 60)
            .env(
                "NETSPAWN_CNI_BIN_DIR",
                format!("{}:{}", dirs[0].display(), dirs[1].display()),
            )
            .env("NETSPAWN_CONFIG_DIR", env.dir.join("etc-netspawn"))
            .env("NETSPAWN_SYSTEMD_DIR", env.dir.join("systemd"))
            .env("NETSPAWN_SYSTEMD_RUN_DIR", env.dir.join("run-systemd"))
            .env("NETSPAWN_INIT_DIR", env.dir.join("init.d"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let said = run(&["install"]);
    assert!(said.contains("Installed the CNI plugin"), "{said}");
    let want = std::fs::read(bin("netspawn-cni")).unwrap();
    for d in &dirs {
        let p = d.join("netspawn-cni");
        assert_eq!(std::fs::read(&p).unwrap(), want, "{}", p.display());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
    run(&["uninstall"]);
    for d in &dirs {
        assert!(!d.join("netspawn-cni").exists());
    }
}
