//! What a runtime hands the plugin: the `CNI_*` environment and the network
//! configuration on stdin, parsed into typed values. Everything here is pure;
//! a bad value is a [`CniError`] with the spec's code.

use std::collections::HashMap;
use std::net::IpAddr;

use netspawn_common::names::{ifname_is_valid, machine_name_is_valid};
use netspawn_common::netd::Forward;
use serde_json::Value;

use crate::spec::{self, CniError, Code};

/// The command the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    /// The name as `CNI_COMMAND` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The `CNI_*` variables of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, split into `KEY=VALUE` pairs.
    pub args: HashMap<String, String>,
}

fn bad_env(var: &str, why: &str) -> CniError {
    CniError::new(Code::InvalidEnvironment, format!("{var}: {why}"))
}

/// The spec's rule for container IDs: letters, digits, `_`, `.`, `-`,
/// starting with a letter or digit.
fn container_id_ok(id: &str) -> bool {
    id.len() <= 1024
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Env {
    /// Reads the variables `cmd` needs from `get` (the process environment
    /// in the binary). ADD and CHECK need a netns; DEL works without one.
    pub fn read(cmd: Command, get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let mut env = Env::default();
        if !matches!(cmd, Command::Add | Command::Del | Command::Check) {
            return Ok(env);
        }
        env.container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if env.container_id.is_empty() {
            return Err(bad_env("CNI_CONTAINERID", "missing"));
        }
        if !container_id_ok(&env.container_id) {
            return Err(bad_env("CNI_CONTAINERID", "invalid container ID"));
        }
        env.ifname = get("CNI_IFNAME").unwrap_or_default();
        if !ifname_is_valid(&env.ifname) {
            return Err(bad_env(
                "CNI_IFNAME",
                "missing or not a valid interface name",
            ));
        }
        env.netns = get("CNI_NETNS").unwrap_or_default();
        if env.netns.is_empty() && cmd != Command::Del {
            return Err(bad_env("CNI_NETNS", "missing"));
        }
        for kv in get("CNI_ARGS").unwrap_or_default().split(';') {
            if kv.is_empty() {
                continue;
            }
            let Some((k, v)) = kv.split_once('=') else {
                return Err(bad_env("CNI_ARGS", &format!("{kv:?} is not KEY=VALUE")));
            };
            env.args.insert(k.to_string(), v.to_string());
        }
        Ok(env)
    }
}

/// A port mapping of the `portMappings` capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub forward: Forward,
}

/// One direction of the `bandwidth` capability, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per second.
    pub rate: u64,
    /// The bucket, in bytes.
    pub burst: u32,
}

impl Rate {
    /// The queue the tbf keeps, in bytes: the burst plus 25 ms at the rate
    /// (the reference plugin's latency).
    pub fn limit(&self) -> u32 {
        let at_rate = self.rate.saturating_mul(25) / 1000;
        u32::try_from(at_rate.saturating_add(u64::from(self.burst))).unwrap_or(u32::MAX)
    }
}

/// The `bandwidth` capability: `ingress` limits what reaches the
/// container, `egress` what it sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub ingress: Option<Rate>,
    pub egress: Option<Rate>,
}

/// The capabilities' runtime values (`runtimeConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub ports: Vec<PortMapping>,
    pub mac: Option<[u8; 6]>,
    pub ips: Vec<IpAddr>,
    pub bandwidth: Bandwidth,
}

/// `bandwidth`: rates in bits per second and bursts in bits, as CNI's
/// convention says; a direction needs both or neither.
fn parse_bandwidth(v: &Value) -> Result<Bandwidth, CniError> {
    let Some(o) = v.as_object() else {
        return Err(bad_conf("runtimeConfig.bandwidth must be an object"));
    };
    let num = |k: &str| -> Result<u64, CniError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(0),
            Some(n) => n
                .as_u64()
                .ok_or_else(|| bad_conf(format!("bandwidth: {k} must be a number of bits"))),
        }
    };
    let dir = |rate_key: &str, burst_key: &str| -> Result<Option<Rate>, CniError> {
        match (num(rate_key)?, num(burst_key)?) {
            (0, 0) => Ok(None),
            (r, b) if r >= 8 && b >= 8 => Ok(Some(Rate {
                rate: r / 8,
                burst: u32::try_from(b / 8).map_err(|_| {
                    bad_conf(format!("bandwidth: {burst_key} is too large (at most 32 Gbit)"))
                })?,
            })),
            _ => Err(bad_conf(format!(
                "bandwidth: {rate_key} and {burst_key} go together (bits per second, bits; at least 8)"
            ))),
        }
    };
    Ok(Bandwidth {
        ingress: dir("ingressRate", "ingressBurst")?,
        egress: dir("egressRate", "egressBurst")?,
    })
}

/// One `{containerID, ifname}` of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The network's name (`name`), which keys our records.
    pub network: String,
    /// The zone: the bridge is `vz-ZONE`.
    pub zone: String,
    pub prev_result: Option<Value>,
    pub runtime: RuntimeConfig,
    /// GC's list of attachments to keep.
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn bad_conf(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    // A container's address must be unicast and not all zero.
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

fn parse_ports(v: &Value) -> Result<Vec<PortMapping>, CniError> {
    let Some(list) = v.as_array() else {
        return Err(bad_conf("runtimeConfig.portMappings must be a list"));
    };
    let mut out = Vec::new();
    for m in list {
        let port = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| bad_conf(format!("portMappings: {k} must be a port (1-65535)")))
        };
        let udp = match m.get("protocol").and_then(Value::as_str).unwrap_or("tcp") {
            p if p.eq_ignore_ascii_case("tcp") => false,
            p if p.eq_ignore_ascii_case("udp") => true,
            p => {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    format!("portMappings: protocol {p:?} is not supported (tcp or udp)"),
                ))
            }
        };
        if let Some(ip) = m.get("hostIP").and_then(Value::as_str) {
            if !matches!(ip, "" | "0.0.0.0" | "::") {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    format!("portMappings: hostIP {ip} is not supported: netd forwards from every host address"),
                ));
            }
        }
        out.push(PortMapping {
            forward: Forward {
                udp,
                host_port: port("hostPort")?,
                container_port: port("containerPort")?,
            },
        });
    }
    Ok(out)
}

fn parse_runtime(v: Option<&Value>) -> Result<RuntimeConfig, CniError> {
    let mut rc = RuntimeConfig::default();
    let Some(v) = v else { return Ok(rc) };
    let Some(obj) = v.as_object() else {
        return Err(bad_conf("runtimeConfig must be an object"));
    };
    for (k, v) in obj {
        match k.as_str() {
            "portMappings" => rc.ports = parse_ports(v)?,
            "mac" => {
                let s = v.as_str().unwrap_or_default();
                rc.mac = Some(parse_mac(s).ok_or_else(|| {
                    bad_conf(format!("runtimeConfig.mac {v}: not a unicast MAC address"))
                })?);
            }
            "ips" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| bad_conf("runtimeConfig.ips must be a list"))?;
                for ip in list {
                    let s = ip.as_str().unwrap_or_default();
                    let addr = s.split('/').next().unwrap_or_default();
                    let a: IpAddr = addr
                        .parse()
                        .map_err(|_| bad_conf(format!("runtimeConfig.ips: bad address {ip}")))?;
                    rc.ips.push(a);
                }
            }
            "bandwidth" if !v.is_null() => rc.bandwidth = parse_bandwidth(v)?,
            // Capabilities we do not declare are not sent to us; a runtime
            // that sends others anyway (podman sends a few by default) is
            // not asking us for anything.
            _ => {}
        }
    }
    Ok(rc)
}

/// The zone rule of `--network-zone=`: `vz-ZONE` must be an interface name.
pub fn zone_ok(zone: &str) -> bool {
    !zone.is_empty()
        && ifname_is_valid(&format!("vz-{zone}"))
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Our records are keyed by the network's name: keep it to file-name-safe characters.
fn network_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl NetConf {
    /// Parses the configuration bytes for `cmd`.
    pub fn parse(cmd: Command, bytes: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("network configuration is not JSON: {e}"),
            )
        })?;
        let Some(obj) = v.as_object() else {
            return Err(CniError::new(
                Code::Decode,
                "network configuration is not a JSON object",
            ));
        };
        let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let cni_version = s("cniVersion");
        if !spec::supported(&cni_version) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion {cni_version:?} is not supported (netspawn-cni speaks {})",
                    spec::SUPPORTED.join(", ")
                ),
            ));
        }
        let need = match cmd {
            Command::Check => Some("0.4.0"),
            Command::Status | Command::Gc => Some("1.1.0"),
            _ => None,
        };
        if let Some(min) = need.filter(|m| !spec::at_least(&cni_version, m)) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "{} needs cniVersion {min} or later, the configuration says {cni_version}",
                    cmd.name()
                ),
            ));
        }
        let network = s("name");
        if !network_name_ok(&network) {
            return Err(bad_conf(format!(
                "network name {network:?} is missing or invalid (letters, digits, '-', '_', '.')"
            )));
        }
        let zone = s("zone");
        if zone.is_empty() {
            return Err(bad_conf(
                "the configuration has no \"zone\" (the bridge is vz-ZONE)",
            ));
        }
        if !zone_ok(&zone) {
            return Err(bad_conf(format!(
                "zone {zone:?} is invalid: \"vz-\" + zone must be a valid interface name (at most 12 characters: letters, digits, '-', '_', '.')"
            )));
        }
        let prev_result = obj.get("prevResult").filter(|p| !p.is_null()).cloned();
        if let Some(p) = &prev_result {
            if !p.is_object() {
                return Err(bad_conf("prevResult must be an object"));
            }
        }
        let runtime = parse_runtime(obj.get("runtimeConfig"))?;
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => {
                let mut out = Vec::new();
                for a in list {
                    let f = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
                    match (f("containerID"), f("ifname")) {
                        (Some(c), Some(i)) => out.push(Attachment {
                            container_id: c,
                            ifname: i,
                        }),
                        _ => return Err(bad_conf(
                            "cni.dev/valid-attachments: each entry needs containerID and ifname",
                        )),
                    }
                }
                Some(out)
            }
            Some(_) => return Err(bad_conf("cni.dev/valid-attachments must be a list")),
        };
        if cmd == Command::Gc && valid_attachments.is_none() {
            return Err(bad_conf("GC needs cni.dev/valid-attachments"));
        }
        Ok(NetConf {
            cni_version,
            network,
            zone,
            prev_result,
            runtime,
            valid_attachments,
        })
    }
}

/// The registry name of an attachment: the pod's or container's name from
/// `CNI_ARGS` (`K8S_POD_NAME`, which podman also sets to the container's
/// name) when it is a valid machine name, else `cni-` and the start of the
/// container ID.
pub fn attachment_name(env: &Env) -> String {
    if let Some(n) = env.args.get("K8S_POD_NAME") {
        if machine_name_is_valid(n) && n.len() <= 64 {
            return n.to_string();
        }
    }
    let id: String = env
        .container_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("cni-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"lab","type":"netspawn-cni","zone":"lab"{extra}}}"#
        )
    }

    #[test]
    fn good_config() {
        let c = NetConf::parse(Command::Add, conf("").as_bytes()).unwrap();
        assert_eq!((c.network.as_str(), c.zone.as_str()), ("lab", "lab"));
        let c = NetConf::parse(
            Command::Add,
            conf(r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"mac":"02:00:00:00:00:01","ips":["10.1.2.3/24"]}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.runtime.ports[0].forward.host_port, 8080);
        assert_eq!(c.runtime.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(c.runtime.ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        let c = NetConf::parse(
            Command::Add,
            conf(r#","runtimeConfig":{"bandwidth":{"ingressRate":8000000,"ingressBurst":80000}}"#)
                .as_bytes(),
        )
        .unwrap();
        let r = c.runtime.bandwidth.ingress.unwrap();
        assert_eq!((r.rate, r.burst, r.limit()), (1_000_000, 10_000, 35_000));
        assert_eq!(c.runtime.bandwidth.egress, None);
    }

    #[test]
    fn bad_configs_have_the_spec_codes() {
        let cases: &[(&str, Code)] = &[
            ("nope", Code::Decode),
            ("[]", Code::Decode),
            (
                r#"{"cniVersion":"0.2.0","name":"n","zone":"z"}"#,
                Code::IncompatibleVersion,
            ),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, Code::InvalidConfig),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"waytoolongzone"}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"a b"}"#,
                Code::InvalidConfig,
            ),
            (r#"{"cniVersion":"1.0.0","zone":"z"}"#, Code::InvalidConfig),
            (
                r#"{"cniVersion":"1.0.0","name":"../x","zone":"z"}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"z","runtimeConfig":{"mac":"01:00:00:00:00:01"}}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"z","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":1}]}}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"z","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":1,"protocol":"sctp"}]}}"#,
                Code::UnsupportedField,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"z","runtimeConfig":{"bandwidth":{"ingressRate":1000}}}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","zone":"z","runtimeConfig":{"bandwidth":{"egressRate":-1,"egressBurst":8}}}"#,
                Code::InvalidConfig,
            ),
        ];
        for (text, code) in cases {
            let e = NetConf::parse(Command::Add, text.as_bytes()).unwrap_err();
            assert_eq!(e.code, *code, "{text}: {e}");
            assert!(!e.msg.is_empty());
        }
        // CHECK from 0.4.0, STATUS and GC from 1.1.0.
        let old = r#"{"cniVersion":"0.3.1","name":"n","zone":"z"}"#;
        assert_eq!(
            NetConf::parse(Command::Check, old.as_bytes())
                .unwrap_err()
                .code,
            Code::IncompatibleVersion
        );
        let v10 = r#"{"cniVersion":"1.0.0","name":"n","zone":"z"}"#;
        assert_eq!(
            NetConf::parse(Command::Status, v10.as_bytes())
                .unwrap_err()
                .code,
            Code::IncompatibleVersion
        );
        let gc = r#"{"cniVersion":"1.1.0","name":"n","zone":"z"}"#;
        assert_eq!(
            NetConf::parse(Command::Gc, gc.as_bytes()).unwrap_err().code,
            Code::InvalidConfig
        );
        let gc = r#"{"cniVersion":"1.1.0","name":"n","zone":"z","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
        assert_eq!(
            NetConf::parse(Command::Gc, gc.as_bytes())
                .unwrap()
                .valid_attachments
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = Env::read(
            Command::Add,
            vars(&[
                ("CNI_CONTAINERID", "abc123"),
                ("CNI_NETNS", "/proc/1/ns/net"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
            ]),
        )
        .unwrap();
        assert_eq!(attachment_name(&e), "web");
        let e = Env::read(
            Command::Del,
            vars(&[
                ("CNI_CONTAINERID", "ABC_def.123456789"),
                ("CNI_IFNAME", "eth0"),
            ]),
        )
        .unwrap();
        assert_eq!(attachment_name(&e), "cni-abcdef123456");
        for bad in [
            &[("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/x")][..],
            &[
                ("CNI_CONTAINERID", "-x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/x"),
            ],
            &[
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "a/b"),
                ("CNI_NETNS", "/x"),
            ],
            &[("CNI_CONTAINERID", "x"), ("CNI_IFNAME", "eth0")],
            &[
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/x"),
                ("CNI_ARGS", "junk"),
            ],
        ] {
            let e = Env::read(Command::Add, vars(bad)).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnvironment, "{bad:?}");
        }
    }
}
