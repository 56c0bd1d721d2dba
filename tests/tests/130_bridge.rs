//! `--network-bridge=BR`: the container's `vb-NAME` joins an existing
//! bridge (the LAN case); a missing bridge is a clear error that leaves
//! nothing behind.

use netspawn_tests::*;

#[test]
fn vb_link_joins_an_existing_bridge_and_leaves_it_intact() {
    let env = TestEnv::new();
    let img = env.busybox("lanbox");
    let r = env.sh(
        &format!(
            r#"ip link add br0 type bridge && ip link set br0 up
               $NETSPAWN -q --network-bridge=br0 --network-config=none --bind={ctl}:/ctl -D {img} /bin/sh -c 'ls /sys/class/net | tr "\n" " "; {HOLD}' > {out} &
               for t in $(seq 1500); do
                   master=$(ip -o link show vb-lanbox 2>/dev/null | grep -o 'master [^ ]*')
                   [ -n "$master" ] && break; sleep 0.02
               done
               touch {ctl}/stop
               wait
               cat {out}; echo; echo master=$master
               for t in $(seq 1500); do ip link show vb-lanbox >/dev/null 2>&1 || break; sleep 0.02; done
               echo after=$(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr "\n" " ")"#,
            img = img.display(),
            out = env.dir.join("lanbox.out").display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0].trim(), "host0 lo");
    assert_eq!(lines[1], "master=master br0");
    let after: Vec<&str> = lines[2]
        .strip_prefix("after=")
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        after,
        vec!["lo", "br0"],
        "the bridge stays, the member goes"
    );
}

#[test]
fn a_missing_or_wrong_bridge_is_refused_and_nothing_is_left() {
    let env = TestEnv::new();
    let img = env.busybox("nobr");
    let r = env.sh(
        &format!(
            r#"ip link add up0 type veth peer name up1
               $NETSPAWN -q --network-bridge=br9 -D {img} /bin/true; echo rc=$?
               $NETSPAWN -q --network-bridge=up0 -D {img} /bin/true; echo rc=$?
               echo links=$(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr "\n" " ")"#,
            img = img.display()
        ),
        60,
    );
    let err: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        err,
        vec![
            "netspawn: Bridge 'br9' does not exist",
            "netspawn: Interface 'up0' is not a bridge"
        ],
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("rc=1\nrc=1\n"), "{}", r.stdout);
    let links: Vec<&str> = r
        .stdout
        .lines()
        .last()
        .unwrap()
        .strip_prefix("links=")
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(links, vec!["lo", "up1", "up0"]);
    assert!(env.registry_names().is_empty());
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn conflicting_and_invalid_network_flags_are_one_line_errors() {
    let env = TestEnv::new();
    let img = env.busybox("conf");
    let d = img.to_str().unwrap();
    // --private-network with link options is accepted, as systemd-nspawn
    // documents (the links imply it): these fail only on the missing links.
    env.netspawn(&[
        "--private-network",
        "--network-bridge=nosuchbr0",
        "-D",
        d,
        "/bin/true",
    ])
    .expect_error("Bridge 'nosuchbr0' does not exist");
    env.netspawn(&[
        "--private-network",
        "--network-interface=nosuchif0",
        "-D",
        d,
        "/bin/true",
    ])
    .expect_error("Network interface 'nosuchif0' does not exist");
    env.netspawn(&[
        "--network-bridge=br0",
        "--network-zone=z",
        "-D",
        d,
        "/bin/true",
    ])
    .expect_error("may not be combined");
    env.netspawn(&["--network-bridge=bad name", "-D", d, "/bin/true"])
        .expect_error("not a valid interface name");
    env.netspawn(&["--network-zone=x/y", "-D", d, "/bin/true"])
        .expect_error("--network-zone");
    env.netspawn(&["--network-interface=nosuchif0", "-D", d, "/bin/true"])
        .expect_error("Network interface 'nosuchif0' does not exist");
    env.netspawn(&["--network-macvlan=nosuchif0", "-D", d, "/bin/true"])
        .expect_error("Network interface 'nosuchif0' does not exist");
    env.netspawn(&["--network-veth-extra=a:b:c", "-D", d, "/bin/true"])
        .expect_error("a:b:c");
    assert!(env.registry_names().is_empty());
}
