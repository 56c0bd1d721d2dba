//! The ADD result: what we made (the host and container interfaces, the
//! address, the default route, netd as DNS), merged after a `prevResult`
//! and written in the configuration's version's format (0.3.x and 0.4.0
//! carry `"version": "4"` on each IP; 1.x does not).

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use crate::spec;

/// What one attachment contributes to a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub host_ifname: String,
    pub host_mac: [u8; 6],
    pub ifname: String,
    pub mac: [u8; 6],
    pub sandbox: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
}

fn mac_text(m: &[u8; 6]) -> String {
    netspawn_common::naming::format_mac(m)
}

/// The result of an ADD: `prev` (a chained plugin's result before ours, if
/// any) with our interfaces, address, route and DNS added.
pub fn build(version: &str, prev: Option<&Value>, made: &Made) -> Value {
    let mut out = prev
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    out.insert("cniVersion".into(), json!(version));
    let mut ifaces = out
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    ifaces.push(json!({"name": made.host_ifname, "mac": mac_text(&made.host_mac)}));
    let index = ifaces.len();
    ifaces.push(json!({"name": made.ifname, "mac": mac_text(&made.mac), "sandbox": made.sandbox}));
    out.insert("interfaces".into(), Value::Array(ifaces));

    let mut ips = out
        .get("ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ip = json!({
        "address": format!("{}/{}", made.address, made.prefix),
        "interface": index,
    });
    if let Some(g) = made.gateway {
        ip["gateway"] = json!(g.to_string());
    }
    ips.push(ip);
    // 0.3.x and 0.4.0 name each address's family; 1.0 dropped the field.
    for ip in &mut ips {
        if let Some(o) = ip.as_object_mut() {
            if spec::at_least(version, "1.0.0") {
                o.remove("version");
            } else if !o.contains_key("version") {
                let v6 = o
                    .get("address")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.contains(':'));
                o.insert("version".into(), json!(if v6 { "6" } else { "4" }));
            }
        }
    }
    out.insert("ips".into(), Value::Array(ips));

    if let Some(g) = made.gateway {
        let mut routes = out
            .get("routes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let route = json!({"dst": "0.0.0.0/0", "gw": g.to_string()});
        if !routes.contains(&route) {
            routes.push(route);
        }
        out.insert("routes".into(), Value::Array(routes));
    }

    let prev_dns_empty = out
        .get("dns")
        .and_then(|d| d.get("nameservers"))
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if prev_dns_empty && !made.dns.is_empty() {
        let mut dns = json!({
            "nameservers": made.dns.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        });
        if let Some(d) = &made.domain {
            dns["domain"] = json!(d);
            dns["search"] = json!([d]);
        }
        out.insert("dns".into(), dns);
    }
    Value::Object(out)
}

/// The result a DEL-less chain may hand on unchanged: CHECK and ADD of a
/// plugin that makes nothing give back `prevResult` in our version.
pub fn pass_through(version: &str, prev: Option<&Value>) -> Value {
    let mut v = prev.cloned().unwrap_or_else(|| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("cniVersion".into(), json!(version));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made() -> Made {
        Made {
            host_ifname: "vb-web".into(),
            host_mac: [2, 0, 0, 0, 0, 1],
            ifname: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 2],
            sandbox: "/proc/1/ns/net".into(),
            address: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 0, 0, 1)],
            domain: None,
        }
    }

    #[test]
    fn one_point_x_result() {
        let r = build("1.1.0", None, &made());
        assert_eq!(
            r,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "vb-web", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/proc/1/ns/net"}
                ],
                "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                "dns": {"nameservers": ["10.0.0.1"]}
            })
        );
    }

    #[test]
    fn old_results_name_the_family_and_chains_keep_prev() {
        let prev = json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "x0"}],
            "ips": [{"version": "4", "address": "192.168.1.2/24", "interface": 0}],
            "dns": {"nameservers": ["192.168.1.1"]}
        });
        let r = build("0.3.1", Some(&prev), &made());
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][0]["address"], "192.168.1.2/24");
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["ips"][1]["version"], "4");
        assert_eq!(r["dns"]["nameservers"][0], "192.168.1.1");
        let r = build("1.0.0", Some(&prev), &made());
        assert!(r["ips"][0].get("version").is_none());
    }
}
