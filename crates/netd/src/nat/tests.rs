//! Unit tests of the NAT state and its rendering (golden JSON, no I/O).

use std::net::IpAddr;
use std::path::PathBuf;

use super::*;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn fwd(proto: Proto, host: u16, addr: &str, port: u16) -> PortForward {
    PortForward {
        proto,
        host_port: host,
        container_addr: addr.parse::<IpAddr>().unwrap(),
        container_port: port,
    }
}

/// Compare with `testdata/NAME.json`; `NETSPAWN_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, nft: &Nftables<'_>) {
    let got = serde_json::to_string_pretty(nft).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/nat/testdata")
        .join(format!("{name}.json"));
    if std::env::var_os("NETSPAWN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{name}: rendering differs from {}:\n{got}",
        path.display()
    );
}

fn sample() -> Nat {
    let mut nat = Nat::new();
    nat.set_masquerade("ve-web", net("10.0.0.5/28"), Masquerade::Both)
        .unwrap();
    nat.set_masquerade("ve-web", net("fd00:1::/64"), Masquerade::Both)
        .unwrap();
    nat.set_masquerade("vz-lab", net("10.1.0.0/24"), Masquerade::Ipv4)
        .unwrap();
    nat.set_masquerade("vz-lab", net("fd00:2::/64"), Masquerade::Ipv4)
        .unwrap();
    nat.add_port_forwards(
        "web",
        &[
            fwd(Proto::Tcp, 8080, "10.0.0.2", 80),
            fwd(Proto::Udp, 5353, "fd00:1::2", 53),
        ],
    )
    .unwrap();
    nat.state.guards.insert(Guard {
        family: IpFamily::V4,
        ifname: "eth0".into(),
    });
    nat
}

#[test]
fn render_full_golden() {
    golden("full", &sample().render());
}

#[test]
fn render_empty_only_deletes_the_table() {
    golden("empty", &Nat::new().render());
}

#[test]
fn render_masquerade_only_golden() {
    let mut nat = Nat::new();
    nat.set_masquerade("ve-a", net("192.168.77.0/28"), Masquerade::Ipv4)
        .unwrap();
    golden("masquerade", &nat.render());
}

#[test]
fn masquerade_modes_pick_families() {
    let mut nat = Nat::new();
    nat.set_masquerade("ve-a", net("10.2.0.0/28"), Masquerade::Ipv6)
        .unwrap();
    nat.set_masquerade("ve-a", net("fd00:3::/64"), Masquerade::Ipv6)
        .unwrap();
    // IPv6 is masqueraded, IPv4 not: the link's group says so.
    assert_eq!(nat.link_groups()["ve-a"], GROUP_BASE + 3);
    let json = serde_json::to_string(&nat.render()).unwrap();
    assert!(json.contains("masquerade ipv6 from container links"));
    nat.set_masquerade("ve-a", net("10.2.0.0/28"), Masquerade::No)
        .unwrap();
    assert_eq!(nat.link_groups()["ve-a"], GROUP_BASE);
    // No masquerade left; what stays is the rule that keeps new IPv6
    // connections from outside off the link (its addresses are routable).
    let json = serde_json::to_string(&nat.render()).unwrap();
    assert!(!json.contains("masquerade"), "{json}");
    assert!(json.contains("inbound ipv6 to container links"), "{json}");
    nat.remove_link("ve-a");
    assert_eq!(nat.render(), Nat::new().render(), "no rules left");
    // Both families asked, an IPv4 subnet only: the IPv4 group; then both.
    let mut nat = Nat::new();
    nat.set_masquerade("ve-b", net("10.3.0.0/28"), Masquerade::Both)
        .unwrap();
    assert_eq!(nat.link_groups()["ve-b"], GROUP_BASE + 1);
    nat.set_masquerade("ve-b", net("fd00:4::/64"), Masquerade::Both)
        .unwrap();
    assert_eq!(nat.link_groups()["ve-b"], GROUP_BASE + 2);
    nat.set_masquerade("ve-c", net("10.4.0.0/28"), Masquerade::Ipv4)
        .unwrap();
    assert_eq!(nat.link_groups()["ve-c"], GROUP_BASE + 1);
}

#[test]
fn links_come_and_go_without_changing_the_table() {
    let mut nat = Nat::new();
    nat.set_standing(true, &[IpFamily::V4]);
    let standing = nat.render();
    assert!(serde_json::to_string(&standing)
        .unwrap()
        .contains("masquerade ipv4 from container links"));
    // Announced, then configured, then gone: the same table throughout.
    nat.expected().expect("ve-a").unwrap();
    assert_eq!(nat.render(), standing);
    assert!(nat.link_groups().is_empty(), "no subnet yet, no group");
    nat.set_masquerade("ve-a", net("10.2.0.0/28"), Masquerade::Both)
        .unwrap();
    nat.set_masquerade("vz-b", net("10.5.0.0/24"), Masquerade::Ipv4)
        .unwrap();
    assert_eq!(nat.render(), standing);
    nat.remove_link("ve-a");
    nat.remove_link("vz-b");
    assert!(!nat.in_use());
    assert_eq!(nat.render(), standing);
    // Standing off: nothing left to render.
    nat.set_standing(false, &[]);
    assert_eq!(nat.render(), Nat::new().render());
    // Without standing, the first masquerading link brings the same rules.
    nat.set_masquerade("ve-a", net("10.2.0.0/28"), Masquerade::Ipv4)
        .unwrap();
    assert_eq!(Summary::of(&nat.render()), Summary::of(&standing));
}

#[test]
fn a_fresh_table_is_made_without_deleting() {
    let mut nat = Nat::new();
    assert!(render::render_fresh(&nat.rendered_state()).is_none());
    nat.set_masquerade("ve-a", net("10.2.0.0/28"), Masquerade::Ipv4)
        .unwrap();
    let fresh = render::render_fresh(&nat.rendered_state()).unwrap();
    let json = serde_json::to_value(&fresh).unwrap();
    let cmds = json["nftables"].as_array().unwrap();
    assert!(cmds[0].get("create").is_some(), "{json}");
    assert!(cmds.iter().all(|c| c.get("delete").is_none()), "{json}");
    // The same content as the replacing transaction.
    assert_eq!(Summary::of(&fresh), Summary::of(&nat.render()));
}

#[test]
fn port_busy_is_all_or_nothing() {
    let mut nat = Nat::new();
    nat.add_port_forward("a", fwd(Proto::Tcp, 8080, "10.0.0.2", 80))
        .unwrap();
    let err = nat
        .add_port_forwards(
            "b",
            &[
                fwd(Proto::Tcp, 9090, "10.0.0.3", 80),
                fwd(Proto::Tcp, 8080, "10.0.0.3", 80),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(&err, NatError::PortBusy { host_port: 8080, owner, .. } if owner == "a"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "port tcp:8080 is already forwarded by machine a"
    );
    assert!(nat.port_forwards("b").is_empty(), "nothing half-made");
    // Another protocol on the same number is free.
    nat.add_port_forward("b", fwd(Proto::Udp, 8080, "10.0.0.3", 80))
        .unwrap();
    // The same forward again is a no-op; the same port elsewhere is busy.
    nat.add_port_forward("a", fwd(Proto::Tcp, 8080, "10.0.0.2", 80))
        .unwrap();
    assert_eq!(nat.port_forwards("a").len(), 1);
    assert!(nat
        .add_port_forward("a", fwd(Proto::Tcp, 8080, "10.0.0.9", 80))
        .is_err());
    // One machine may forward a port over both families.
    nat.add_port_forward("a", fwd(Proto::Tcp, 8080, "fd00::2", 80))
        .unwrap();
    // Duplicates inside one call conflict too.
    assert!(nat
        .add_port_forwards(
            "c",
            &[
                fwd(Proto::Tcp, 7000, "10.0.0.4", 1),
                fwd(Proto::Tcp, 7000, "10.0.0.4", 2)
            ]
        )
        .is_err());
    nat.remove_owner("a");
    nat.add_port_forward("b", fwd(Proto::Tcp, 8080, "10.0.0.3", 80))
        .unwrap();
}

#[test]
fn bad_input_is_refused() {
    let mut nat = Nat::new();
    for bad in ["", "all", "default", "../x", "a b", "sixteen-bytes-xx"] {
        assert!(matches!(
            nat.set_masquerade(bad, net("10.0.0.0/28"), Masquerade::Ipv4),
            Err(NatError::BadLinkName(_))
        ));
    }
    assert!(matches!(
        nat.set_masquerade("ve-a", net("0.0.0.0/0"), Masquerade::Ipv4),
        Err(NatError::BadSubnet(_))
    ));
    assert!(matches!(
        nat.add_port_forward("a", fwd(Proto::Tcp, 0, "10.0.0.2", 80)),
        Err(NatError::BadPort(_))
    ));
    assert!(nat.set_uplinks(Some(vec!["all".into()])).is_err());
    assert_eq!(nat.render(), Nat::new().render());
}

#[test]
fn remove_link_drops_its_rules_and_forwards() {
    let mut nat = sample();
    nat.state.guards.clear();
    nat.remove_link("ve-web");
    nat.remove_link("ve-unknown");
    assert!(nat.port_forwards("web").is_empty());
    let json = serde_json::to_string(&nat.render()).unwrap();
    assert!(!json.contains("ve-web"), "{json}");
    assert!(!nat.link_groups().contains_key("ve-web"));
    // vz-lab still masquerades.
    assert_eq!(nat.link_groups()["vz-lab"], GROUP_BASE + 1);
    assert!(json.contains("masquerade ipv4 from container links"));
    nat.remove_link("vz-lab");
    assert_eq!(nat.render(), Nat::new().render());
}

#[test]
fn summary_matches_listed_form() {
    // What `nft -j list table` prints for the masquerade-only table (handles
    // and normalized expressions differ; chains and comments are what count).
    let listed = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "netspawn", "handle": 3}},
      {"chain": {"family": "inet", "table": "netspawn", "name": "postrouting", "handle": 1,
                 "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "netspawn", "chain": "postrouting", "handle": 2,
                "comment": "masquerade ipv4 from container links",
                "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifgroup"}},
                                    "right": {"range": [1314062337, 1314062338]}}},
                         {"masquerade": null}]}},
      {"rule": {"family": "inet", "table": "netspawn", "chain": "postrouting", "handle": 3,
                "comment": "masquerade ipv6 from container links",
                "expr": [{"masquerade": null}]}}]}"#;
    let listed: Nftables = serde_json::from_str(listed).unwrap();
    let mut nat = Nat::new();
    nat.set_masquerade("ve-a", net("192.168.77.0/28"), Masquerade::Ipv4)
        .unwrap();
    assert_eq!(Summary::of(&listed), Summary::of(&nat.render()));
    assert_ne!(Summary::of(&listed), Summary::of(&sample().render()));
    assert_eq!(
        Summary::of(&Nat::new().render()),
        Summary::default(),
        "empty state wants no table"
    );
}

#[test]
fn masquerade_values() {
    for (s, m) in [
        ("ipv4", Masquerade::Ipv4),
        ("yes", Masquerade::Ipv4),
        ("IPv6", Masquerade::Ipv6),
        ("both", Masquerade::Both),
        ("no", Masquerade::No),
    ] {
        assert_eq!(s.parse::<Masquerade>().unwrap(), m);
    }
    assert!("bogus".parse::<Masquerade>().is_err());
}

#[test]
fn an_expected_link_is_never_an_uplink_and_needs_no_lock_on_the_nat() {
    let dir = std::env::temp_dir().join(format!("netd-nat-expected-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::create_dir_all(dir.join("sys")).unwrap();
    // Both links have routes: eth0 is the host's uplink, ve-a a container
    // link whose address came before its subnet reached the NAT.
    std::fs::write(
        dir.join("net/route"),
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
         ve-a\t0000020A\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n",
    )
    .unwrap();
    let mut nat = Nat::with_paths(NatPaths {
        sysctl: dir.join("sys"),
        proc_net: dir.join("net"),
        journal: None,
    });
    nat.set_standing(true, &[IpFamily::V4]);
    let uplinks = |nat: &mut Nat| -> Vec<String> {
        nat.desired_sysctls()
            .unwrap()
            .into_iter()
            .filter(|(_, uplink)| *uplink)
            .map(|(k, _)| k.ifname)
            .collect()
    };
    assert_eq!(
        uplinks(&mut nat),
        ["eth0", "ve-a"],
        "not announced: taken for an uplink"
    );
    // Announced through the handle, as a link's pipeline does while netd's
    // start-up holds the Nat.
    let handle = nat.expected();
    handle.expect("ve-a").unwrap();
    assert!(handle.expect("not a/valid name").is_err());
    assert_eq!(uplinks(&mut nat), ["eth0"]);
    nat.set_masquerade("ve-a", net("10.2.0.0/28"), Masquerade::Ipv4)
        .unwrap();
    assert_eq!(uplinks(&mut nat), ["eth0"]);
    // Gone: forgotten by both.
    nat.remove_link("ve-a");
    assert_eq!(uplinks(&mut nat), ["eth0", "ve-a"]);
    let _ = std::fs::remove_dir_all(&dir);
}
