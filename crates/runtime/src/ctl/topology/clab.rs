//! containerlab topology files (`*.clab.yml`), so existing labs move over:
//! `kind: linux` nodes with `image` (a netspawn image name in place of a
//! container image), `cmd`, `exec`, `binds`, `env`; `links` with
//! `endpoints: ["a:eth1", "b:eth1"]`; `kinds.linux` and `defaults` with the
//! same keys. Every node is also on a management zone (`LAB-mgmt`, as
//! containerlab's management network: an address by DHCP and DNS names) as
//! its `host0`. A node without `cmd` boots its image's init. Anything else
//! containerlab knows (other kinds, `mgmt`, `labels`, `ports`, …) is refused
//! with its `FILE:LINE`.
//!
//! The file is read with serde_yaml into these structs, checked for what
//! needs its line numbers (kinds, endpoints, nodes named by links), then
//! written out as the equivalent TOML lab and checked by [`super::model`]
//! like any other.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::model::{self, Lab};
use super::TopoError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClabFile {
    name: String,
    topology: Topology,
    /// containerlab's `prefix`: netspawn always prefixes with the lab's name.
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Topology {
    #[serde(default)]
    defaults: Option<Node>,
    #[serde(default)]
    kinds: BTreeMap<String, Node>,
    #[serde(default)]
    nodes: BTreeMap<String, Node>,
    #[serde(default)]
    links: Vec<ClabLink>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Node {
    kind: Option<String>,
    image: Option<String>,
    cmd: Option<String>,
    #[serde(default)]
    exec: Vec<String>,
    #[serde(default)]
    binds: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClabLink {
    endpoints: Vec<String>,
}

/// Whether `path` names a containerlab file.
pub fn is_clab(path: &Path) -> bool {
    let n = path.to_string_lossy();
    n.ends_with(".clab.yml") || n.ends_with(".clab.yaml")
}

fn at(path: &Path, line: usize, msg: impl Into<String>) -> TopoError {
    TopoError::At {
        file: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// The line of the first occurrence of `needle` in `text` (1 if none).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                o.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// Reads the containerlab file at `path` (text `text`) as a lab.
pub fn load(path: &Path, text: &str) -> Result<Lab, TopoError> {
    let f: ClabFile = serde_yaml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        // serde_yaml ends its messages with " at line L column C".
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        match e.location() {
            Some(l) => at(path, l.line(), msg),
            None => TopoError::File {
                file: path.to_path_buf(),
                msg,
            },
        }
    })?;
    if f.prefix.is_some() {
        return Err(at(
            path,
            line_of(text, "prefix:"),
            "'prefix' is not supported: machines are always named LAB-NODE",
        ));
    }
    let t = &f.topology;
    for k in t.kinds.keys() {
        if k != "linux" {
            return Err(at(
                path,
                line_of(text, &format!("{k}:")),
                format!("kind '{k}' is not supported (only linux)"),
            ));
        }
    }
    let defaults = t.defaults.clone().unwrap_or_default();
    let linux = t.kinds.get("linux").cloned().unwrap_or_default();
    let mut toml = String::new();
    toml.push_str(&format!("[lab]\nname = {}\n[zones.mgmt]\n", q(&f.name)));
    for (name, n) in &t.nodes {
        let line = line_of(text, &format!("{name}:"));
        let kind = n
            .kind
            .as_deref()
            .or(defaults.kind.as_deref())
            .unwrap_or("linux");
        if kind != "linux" {
            return Err(at(
                path,
                line,
                format!("node '{name}': kind '{kind}' is not supported (only linux)"),
            ));
        }
        let pick = |a: &Option<String>, b: &Option<String>, c: &Option<String>| {
            a.clone().or_else(|| b.clone()).or_else(|| c.clone())
        };
        let image = pick(&n.image, &linux.image, &defaults.image)
            .ok_or_else(|| at(path, line, format!("node '{name}' has no image")))?;
        toml.push_str(&format!(
            "[machines.{}]\nimage = {}\nzones = [\"mgmt\"]\n",
            q(name),
            q(&image)
        ));
        match pick(&n.cmd, &linux.cmd, &defaults.cmd) {
            Some(c) => toml.push_str(&format!("command = {}\n", q(&c))),
            None => toml.push_str("boot = true\n"),
        }
        let mut exec = defaults.exec.clone();
        exec.extend(linux.exec.iter().cloned());
        exec.extend(n.exec.iter().cloned());
        if !exec.is_empty() {
            toml.push_str(&format!("exec = {}\n", list(&exec)));
        }
        let mut binds = defaults.binds.clone();
        binds.extend(linux.binds.iter().cloned());
        binds.extend(n.binds.iter().cloned());
        if !binds.is_empty() {
            toml.push_str(&format!("binds = {}\n", list(&binds)));
        }
        let mut env = defaults.env.clone();
        env.extend(linux.env.clone());
        env.extend(n.env.clone());
        if !env.is_empty() {
            let kv: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                .collect();
            toml.push_str(&format!("env = {{ {} }}\n", kv.join(", ")));
        }
    }
    for l in &t.links {
        let line = line_of(
            text,
            l.endpoints.first().map_or("endpoints", String::as_str),
        );
        if l.endpoints.len() != 2 {
            return Err(at(path, line, "a link has two endpoints"));
        }
        for e in &l.endpoints {
            let node = e.split(':').next().unwrap_or("");
            if !t.nodes.contains_key(node) {
                return Err(at(
                    path,
                    line,
                    format!("link endpoint '{e}': no node '{node}' in this file"),
                ));
            }
        }
        toml.push_str(&format!("[[links]]\nendpoints = {}\n", list(&l.endpoints)));
    }
    // What is left to check (names, duplicate interfaces) has no YAML line:
    // it names the file.
    model::load(path, &toml).map_err(|e| match e {
        TopoError::At { file, msg, .. } => TopoError::File { file, msg },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"name: srl
topology:
  kinds:
    linux:
      image: busybox
  nodes:
    r1:
      kind: linux
      cmd: sleep 600
      exec:
        - ip addr add 10.0.0.1/30 dev eth1
      env:
        A: b
    r2:
      kind: linux
      image: other
      binds:
        - /srv:/srv
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
"#;

    #[test]
    fn a_containerlab_file_becomes_a_lab() {
        let l = load(Path::new("/x/srl.clab.yml"), LAB).unwrap();
        assert_eq!(l.name, "srl");
        assert_eq!(l.zones[0].name, "srl-mgmt");
        let r1 = &l.machines[0];
        assert_eq!(r1.name, "srl-r1");
        assert_eq!(r1.image, "busybox");
        assert_eq!(r1.command, ["/bin/sh", "-c", "sleep 600"]);
        assert_eq!(r1.exec, ["ip addr add 10.0.0.1/30 dev eth1"]);
        assert_eq!(r1.env, [("A".to_string(), "b".to_string())]);
        let r2 = &l.machines[1];
        assert!(r2.boot);
        assert_eq!(r2.image, "other");
        assert_eq!(r2.binds, ["/srv:/srv"]);
        assert_eq!(l.links[0].label(), "r1:eth1-r2:eth1");
    }

    #[test]
    fn what_containerlab_has_and_we_do_not_is_refused_with_its_line() {
        let e = load(
            Path::new("/x/a.clab.yml"),
            "name: a\ntopology:\n  nodes:\n    r1:\n      kind: nokia_srlinux\n      image: x\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "/x/a.clab.yml:4: node 'r1': kind 'nokia_srlinux' is not supported (only linux)"
        );
        let e = load(
            Path::new("/x/a.clab.yml"),
            "name: a\ntopology:\n  nodes:\n    r1:\n      image: x\n      ports: [80]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/x/a.clab.yml:6: topology.nodes.r1: unknown field `ports`"),
            "{e}"
        );
        let e = load(
            Path::new("/x/a.clab.yml"),
            "name: a\ntopology:\n  nodes:\n    r1:\n      image: x\n  links:\n    - endpoints: [\"r1:eth1\", \"r9:eth1\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":7: link endpoint 'r9:eth1': no node 'r9'"),
            "{e}"
        );
    }
}
