//! The other network modes: macvlan, ipvlan, a moved host interface, and
//! the same through `.nspawn` files.

use netspawn_tests::*;

#[test]
fn macvlan_on_a_host_interface() {
    let env = TestEnv::new();
    let img = env.busybox("mv");
    let r = env.sh(
        &format!(
            r#"ip link add lan0 type veth peer name lan1 && ip link set lan0 up
               $NETSPAWN -q --network-macvlan=lan0 -D {img} /bin/sh -c 'ls /sys/class/net | tr "\n" " "; cat /sys/class/net/mv-lan0/address'"#,
            img = img.display()
        ),
        60,
    );
    r.expect_status(0);
    use netspawn::network::naming;
    let mac = naming::generate_mac(
        &naming::host_machine_id().unwrap_or([0; 16]),
        "mv",
        &naming::MACVLAN_HASH_KEY,
        0,
    );
    assert_eq!(
        r.stdout,
        format!("lo mv-lan0 {}\n", naming::format_mac(&mac))
    );
}

#[test]
fn ipvlan_where_the_kernel_has_it() {
    let env = TestEnv::new();
    let probe = env.sh("ip link add lan0 type veth peer name lan1 && ip link add iv-probe link lan0 type ipvlan mode l2 && echo yes", 30);
    if !probe.stdout.contains("yes") {
        skip(
            "ipvlan_where_the_kernel_has_it",
            &format!("this kernel has no ipvlan support ({}); the netlink request is covered by the fake-netlink unit test", probe.stderr.trim()),
        );
        // What a user sees here: one clear line, nothing left behind.
        let img = env.busybox("noiv");
        let r = env.sh(
            &format!(
                "ip link add lan0 type veth peer name lan1; $NETSPAWN -q --network-ipvlan=lan0 -D {} /bin/true; echo rc=$?; ip -o link | wc -l",
                img.display()
            ),
            60,
        );
        assert_eq!(r.stdout, "rc=1\n3\n", "{}", r.stderr);
        assert!(
            r.stderr.starts_with("netspawn: create ipvlan iv-lan0: "),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1);
        assert!(env.registry_names().is_empty());
        return;
    }
    let img = env.busybox("iv");
    let r = env.sh(
        &format!(
            "ip link add lan0 type veth peer name lan1 && $NETSPAWN -q --network-ipvlan=lan0 -D {} /bin/ls /sys/class/net",
            img.display()
        ),
        60,
    );
    r.expect_status(0);
    assert!(r.stdout.contains("iv-lan0"), "{}", r.stdout);
}

#[test]
fn a_moved_interface_comes_back_with_its_name() {
    let env = TestEnv::new();
    let img = env.busybox("mover");
    let r = env.sh(
        &format!(
            r#"ip link add lan0 type veth peer name lan1
               ip link set lan0 address 02:00:00:00:00:42
               $NETSPAWN -q --network-interface=lan0 -D {img} /bin/sh -c 'ls /sys/class/net | tr "\n" " "; cat /sys/class/net/lan0/address'
               echo rc=$?
               for t in $(seq 300); do ip link show lan0 >/dev/null 2>&1 && break; sleep 0.02; done
               ip -o link show lan0 | grep -o 'link/ether [0-9a-f:]*'"#,
            img = img.display()
        ),
        60,
    );
    assert_eq!(
        r.stdout, "lan0 lo 02:00:00:00:00:42\nrc=0\nlink/ether 02:00:00:00:00:42\n",
        "{}",
        r.stderr
    );
}

#[test]
fn the_only_uplink_is_not_moved() {
    let env = TestEnv::new();
    let img = env.busybox("thief");
    let r = env.sh(
        &format!(
            r#"ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up
               ip addr add 192.0.2.1/24 dev up0 && ip route add default via 192.0.2.2 dev up0
               $NETSPAWN -q --network-interface=up0 -D {img} /bin/true; echo rc=$?
               ip -o link show up0 >/dev/null && echo still-here"#,
            img = img.display()
        ),
        60,
    );
    assert_eq!(r.stdout, "rc=1\nstill-here\n");
    assert!(
        r.stderr
            .contains("Network interface 'up0' is the host's only uplink"),
        "{}",
        r.stderr
    );
}

#[test]
fn nspawn_files_select_the_network() {
    let env = TestEnv::new();
    let img = env.busybox("filenet");
    std::fs::write(
        env.settings_dir().join("filenet.nspawn"),
        "[Network]\nZone=fz\n",
    )
    .unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/ls",
        "/sys/class/net",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "host0\nlo\n");
    std::fs::write(
        env.settings_dir().join("filenet.nspawn"),
        "[Network]\nVirtualEthernet=yes\n",
    )
    .unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/ls",
        "/sys/class/net",
    ]);
    assert_eq!(r.stdout, "host0\nlo\n");
    // VirtualEthernet=no: the host's network, as without any network option.
    std::fs::write(
        env.settings_dir().join("filenet.nspawn"),
        "[Network]\nVirtualEthernet=no\n",
    )
    .unwrap();
    let script = format!("ip link add marker0 type veth peer name marker1; $NETSPAWN -q -D {} /bin/ls /sys/class/net", img.display());
    let r = env.sh(&script, 60);
    assert!(r.stdout.contains("marker0"), "{}", r.stdout);
    // Private=yes alone: only lo.
    std::fs::write(
        env.settings_dir().join("filenet.nspawn"),
        "[Network]\nPrivate=yes\n",
    )
    .unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/ls",
        "/sys/class/net",
    ]);
    assert_eq!(r.stdout, "lo\n");
}
