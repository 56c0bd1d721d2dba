//! The topology file as written: the TOML schema (docs/topology.md), read
//! with serde into these structs. Unknown keys are refused (serde's
//! `deny_unknown_fields`) and every value a later check may complain about
//! keeps its place in the file ([`Spanned`]), so each error names
//! `FILE:LINE`. Meaning (names, references, addresses) is checked in
//! [`super::model`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    #[serde(default)]
    pub lab: LabSection,
    #[serde(default)]
    pub defaults: MachineDefaults,
    #[serde(default)]
    pub zones: BTreeMap<Spanned<String>, ZoneSection>,
    #[serde(default)]
    pub machines: BTreeMap<Spanned<String>, MachineSection>,
    #[serde(default)]
    pub links: Vec<LinkSection>,
}

/// `[lab]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    /// Prefixes machine and zone names (default: the file's name without
    /// its extension).
    pub name: Option<Spanned<String>>,
}

/// `[defaults]`: what every machine has unless it says otherwise.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineDefaults {
    pub image: Option<Spanned<String>>,
    pub ephemeral: Option<bool>,
    pub user_namespace: Option<bool>,
    pub boot: Option<bool>,
}

/// `[zones.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSection {
    /// The zone's IPv4 subnet (`"10.5.0.0/24"`); default: a /24 of netd's
    /// pool.
    pub subnet: Option<Spanned<String>>,
    /// No masquerade, no names forwarded upstream (default false).
    pub internal: Option<Spanned<bool>>,
    /// Router advertisements and a unique local /64 (default true).
    pub ipv6: Option<Spanned<bool>>,
}

/// A machine's command: one string (run by `/bin/sh -c`) or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommandSpec {
    Shell(String),
    Argv(Vec<String>),
}

/// An address list: one address or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[machines.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSection {
    pub image: Option<Spanned<String>>,
    pub ephemeral: Option<bool>,
    pub user_namespace: Option<bool>,
    pub boot: Option<bool>,
    pub command: Option<Spanned<CommandSpec>>,
    /// Replicas `NAME1..NAMEcount`.
    pub count: Option<Spanned<u32>>,
    /// `"zone"` or `"zone:IFNAME"`; the first is `host0`.
    #[serde(default)]
    pub zones: Vec<Spanned<String>>,
    /// Static addresses per interface inside the machine (`ADDR/PREFIX`).
    #[serde(default)]
    pub addresses: BTreeMap<Spanned<String>, Spanned<OneOrMany>>,
    /// `"PREFIX via GATEWAY"` or `"default via GATEWAY"`.
    #[serde(default)]
    pub routes: Vec<Spanned<String>>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    /// `"tcp:PORT"` or `"cmd:COMMAND"`.
    pub wait_for: Option<Spanned<String>>,
    /// IP forwarding inside (default: on for machines with two or more interfaces).
    pub forward: Option<bool>,
    /// Wait for the payload's `READY=1` (`--notify-ready=yes`).
    pub notify_ready: Option<bool>,
    /// Extra `.nspawn` settings, as the file's text.
    pub settings: Option<Spanned<String>>,
    /// Environment (`-E NAME=VALUE`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Commands run inside once the machine's links exist (containerlab's `exec`).
    #[serde(default)]
    pub exec: Vec<String>,
    /// `--bind=` arguments (`SRC[:DST[:OPTS]]`).
    #[serde(default)]
    pub binds: Vec<String>,
}

/// `[[links]]`: a point-to-point veth pair.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    /// `["a:eth1", "b:eth1"]`.
    pub endpoints: Spanned<Vec<String>>,
    /// Impairments: `rate`, `loss`, `delay`, `jitter` for both directions,
    /// or a table per end (`"a:eth1" = { rate = "10mbit" }`: traffic leaving it).
    pub impair: Option<Spanned<toml::Table>>,
}

/// Parses `text` (the file at `path`, for messages); a syntax error or an
/// unknown key is `FILE:LINE: message`.
pub fn parse(text: &str) -> Result<TopologyFile, (Option<usize>, String)> {
    toml::from_str::<TopologyFile>(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        (e.span().map(|s| s.start), msg)
    })
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_reads() {
        let f = parse(
            r#"
[lab]
name = "demo"
[defaults]
image = "busybox"
[zones.lan]
[machines.web]
count = 2
zones = ["lan"]
command = "httpd -f"
[machines.r1]
zones = ["lan", "wan:eth2"]
addresses = { eth1 = "10.0.0.1/30" }
routes = ["10.1.0.0/24 via 10.0.0.2"]
after = ["web"]
wait_for = "tcp:80"
[[links]]
endpoints = ["r1:eth1", "web1:eth1"]
"#,
        )
        .unwrap();
        assert_eq!(f.lab.name.unwrap().into_inner(), "demo");
        assert_eq!(f.machines.len(), 2);
        assert_eq!(f.links.len(), 1);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let text = "[machines.a]\nimage = \"x\"\nimgae = \"y\"\n";
        let (at, msg) = parse(text).unwrap_err();
        assert_eq!(line_of(text, at.unwrap()), 3);
        assert!(msg.contains("imgae"), "{msg}");
    }
}
