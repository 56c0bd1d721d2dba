//! `--network-zone=`: a bridge `vz-ZONE` made with the first member and
//! removed after the last; members meet at layer 2.

use netspawn_tests::*;

#[test]
fn ten_containers_at_once_join_one_bridge_which_goes_with_the_last() {
    let env = TestEnv::new();
    let img = env.busybox("zoned");
    let r = env.sh(
        &format!(
            r#"for i in $(seq 10); do
                 $NETSPAWN -q --read-only --network-zone=lab -M m$i --bind={ctl}:/ctl -D {img} /bin/sh -c '{HOLD}' &
               done
               members() {{ ip -o link show master vz-lab 2>/dev/null | cut -d: -f2 | cut -d@ -f1; }}
               for t in $(seq 1500); do [ "$(members | wc -l)" = 10 ] && break; sleep 0.02; done
               echo bridges=$(ip -o link show type bridge | wc -l)
               echo members=$(members | tr "\n" " ")
               touch {ctl}/stop
               wait
               for t in $(seq 300); do ip link show vz-lab >/dev/null 2>&1 || break; sleep 0.02; done
               echo after=$(ip -o link | cut -d: -f2 | tr "\n" " ")"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        120,
    );
    r.expect_status(0);
    assert!(r.stdout.contains("bridges=1\n"), "{}", r.stdout);
    let members = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("members="))
        .unwrap();
    let mut m: Vec<&str> = members.split_whitespace().collect();
    m.sort();
    let mut want: Vec<String> = (1..=10).map(|i| format!("vb-m{i}")).collect();
    want.sort();
    assert_eq!(m, want);
    let after = r
        .stdout
        .lines()
        .last()
        .unwrap()
        .strip_prefix("after=")
        .unwrap();
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        vec!["lo"],
        "{}",
        r.stdout
    );
}

#[test]
fn zone_members_reach_each_other_over_ipv6_link_local() {
    let env = TestEnv::new();
    let img = env.busybox("pinger");
    // Member a publishes its link-local address once it is usable; member c pings it.
    let r = env.sh(
        &format!(
            r#"wait_ll='for t in $(seq 200); do a=$(ip -6 addr show dev host0 scope link | grep -v tentative | grep -o "fe80::[0-9a-f:]*"); [ -n "$a" ] && break; sleep 0.05; done'
               $NETSPAWN -q --read-only --network-zone=pz -M a -D {img} /bin/sh -c "$wait_ll; echo \$a > /run/ll; sleep 30" &
               for t in $(seq 300); do A=$($NETSPAWNCTL shell a /bin/cat /run/ll 2>/dev/null); [ -n "$A" ] && break; sleep 0.05; done
               echo peer=$A
               $NETSPAWN -q --read-only --network-zone=pz -M c -D {img} /bin/sh -c "$wait_ll; ping6 -c 2 -w 5 $A%host0 >/dev/null && echo PING-OK"
               $NETSPAWNCTL terminate a; wait"#,
            img = img.display()
        ),
        120,
    );
    assert!(
        r.stdout.contains("peer=fe80::"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("PING-OK"), "{}\n{}", r.stdout, r.stderr);
}
