//! `-n/--network-veth` and `--network-veth-extra`: links made by netlink,
//! named and addressed (MAC) as systemd-nspawn does.

use netspawn::network::naming;
use netspawn_tests::*;

fn machine_id() -> [u8; 16] {
    naming::host_machine_id().unwrap_or([0; 16])
}

/// The lines of `out` that start with `prefix`, without it (the container's
/// and the host's output interleave).
fn tagged<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

#[test]
fn veth_pair_host_side_and_host0_are_up_with_nspawn_macs() {
    let env = TestEnv::new();
    let img = env.busybox("web");
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c 'echo C:$(cat /sys/class/net/host0/address); echo C:$(ip -o link show lo | grep -c UP); echo C:$(ip -o link show host0 | grep -c ",UP"); echo C:$(ls /sys/class/net | tr "\n" " "); {HOLD}' &
            for i in $(seq 1500); do ip link show ve-web >/dev/null 2>&1 && break; sleep 0.02; done
            echo H:$(ip -o link show ve-web | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
            echo H:$(ip -o link show ve-web | grep -c ',UP')
            touch {ctl}/stop
            wait"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    r.expect_status(0);
    let c = tagged(&r.stdout, "C:");
    let h = tagged(&r.stdout, "H:");
    let id = machine_id();
    let mac = |key| naming::format_mac(&naming::generate_mac(&id, "web", key, 0));
    assert_eq!(
        c,
        vec![
            mac(&naming::CONTAINER_HASH_KEY).as_str(),
            "1",
            "1",
            "host0 lo"
        ],
        "{}",
        r.stdout
    );
    assert_eq!(
        h,
        vec![mac(&naming::HOST_HASH_KEY).as_str(), "1"],
        "{}",
        r.stdout
    );
}

#[test]
fn extra_veth_pairs_and_long_names() {
    let env = TestEnv::new();
    let name = "averyverylongmachinename";
    let img = env.busybox(name);
    let host = naming::host_ifname(false, name);
    assert_eq!(host.len(), 15);
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -n --network-veth-extra=xh1:xc1 --network-veth-extra=xh2 --bind={ctl}:/ctl -D {img} /bin/sh -c 'echo C:$(ls /sys/class/net | tr "\n" " "); {HOLD}' &
            for i in $(seq 1500); do ip link show xh2 >/dev/null 2>&1 && break; sleep 0.02; done
            echo H:$(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr "\n" " ")
            echo H:$(ip -o link show ve-{name} | cut -d: -f2 | cut -d@ -f1)
            touch {ctl}/stop
            wait"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    r.expect_status(0);
    let c = tagged(&r.stdout, "C:");
    let h = tagged(&r.stdout, "H:");
    assert_eq!(c, vec!["host0 lo xc1 xh2"], "{}", r.stdout);
    let mut host_links: Vec<&str> = h[0].split_whitespace().collect();
    host_links.sort();
    let mut want = vec!["lo", host.as_str(), "xh1", "xh2"];
    want.sort();
    assert_eq!(host_links, want);
    // As systemd, the full name is an alternative name of the shortened link.
    assert_eq!(h[1].trim(), host, "{}", r.stdout);
}

#[test]
fn the_same_machine_gets_the_same_mac_after_a_restart() {
    let env = TestEnv::new();
    let img = env.busybox("stable");
    let once = || {
        env.netspawn(&[
            "-q",
            "-n",
            "-D",
            img.to_str().unwrap(),
            "/bin/cat",
            "/sys/class/net/host0/address",
        ])
    };
    let a = once();
    a.expect_status(0);
    let b = once();
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stdout.len(), 18);
}

#[test]
fn the_registry_and_status_show_the_interfaces() {
    let env = TestEnv::new();
    let img = env.busybox("listed");
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c '{HOLD}' &
            for i in $(seq 1500); do grep -q '^INTERFACES=ve-listed' $NETSPAWN_RUN_DIR/machines/listed 2>/dev/null && break; sleep 0.02; done
            $NETSPAWNCTL status listed | grep -i iface
            $NETSPAWNCTL list -o json
            touch {ctl}/stop; wait"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    assert!(r.stdout.contains("ve-listed"), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("\"interfaces\":[\"ve-listed\"]"),
        "{}",
        r.stdout
    );
}

#[test]
fn addresses_inside_the_machine_are_tracked_in_the_registry() {
    let env = TestEnv::new();
    let img = env.busybox("addr");
    // A static address set in the guest, added after start, then removed.
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -n --network-config=none --bind={ctl}:/ctl -D {img} /bin/sh -c 'sleep 0.3; ip addr add 10.99.0.2/24 dev host0; ip addr add fd42::2/64 dev host0; for i in $(seq 1200); do [ -e /ctl/go ] && break; sleep 0.05; done; ip addr del 10.99.0.2/24 dev host0; {HOLD}' &
               # netd serves ve-addr (only our DHCP client is off), so the
               # guest's kernel may add a SLAAC address of its own any time.
               has() {{ grep '^ADDRESSES=' $NETSPAWN_RUN_DIR/machines/addr 2>/dev/null | tr ' =' '\n\n' | grep -qx "$1"; }}
               for t in $(seq 1500); do has 10.99.0.2 && has fd42::2 && break; sleep 0.02; done
               grep ^ADDRESSES= $NETSPAWN_RUN_DIR/machines/addr
               $NETSPAWNCTL status addr | grep -i address
               touch {ctl}/go
               for t in $(seq 1500); do ! has 10.99.0.2 && has fd42::2 && break; sleep 0.02; done
               grep ^ADDRESSES= $NETSPAWN_RUN_DIR/machines/addr
               touch {ctl}/stop
               wait"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    // The addresses the test manages, in the order they were added (a SLAAC
    // address from netd's advertisements may come and is left out).
    let managed = |l: &str| -> Vec<String> {
        l.strip_prefix("ADDRESSES=")
            .unwrap_or("")
            .split(' ')
            .filter(|a| *a == "10.99.0.2" || *a == "fd42::2")
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        managed(lines.first().unwrap_or(&"")),
        ["10.99.0.2", "fd42::2"],
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(lines[1].contains("10.99.0.2"), "{}", r.stdout);
    assert_eq!(
        managed(lines.last().unwrap_or(&"")),
        ["fd42::2"],
        "{}",
        r.stdout
    );
}
