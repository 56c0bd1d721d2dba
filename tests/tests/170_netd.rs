//! netd end to end, driven through the real launcher: addresses from the
//! pool, DHCP, DNS for machine names and forwarding, NAT and port forwards,
//! templates and their overrides, lifecycle. Each test runs in its own
//! network namespace; the "upstream" DNS is a stub on loopback, the
//! "internet" another namespace the test makes.

use netspawn_tests::*;

/// A DNS stub answering every A query with 192.0.2.99, on 127.0.0.53:53.
const STUB_DNS: &str = r#"
cat > $NETSPAWN_STATE_DIR/stub.py <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.53", 53))
open(__file__ + ".ready", "w").close()
while True:
    q, peer = s.recvfrom(512)
    # Header: same id, QR+RD+RA, 1 question, 1 answer; then the question, then the answer.
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 99])
    s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer, peer)
PY
mkdir -p $NETSPAWN_STATE_DIR
python3 $NETSPAWN_STATE_DIR/stub.py &
# netd asks each upstream once per query: be listening before the first.
for t in $(seq 200); do [ -e $NETSPAWN_STATE_DIR/stub.py.ready ] && break; sleep 0.05; done
echo "nameserver 127.0.0.53" > $NETSPAWN_STATE_DIR/upstream.conf
export NETSPAWN_UPSTREAM_RESOLV_CONF=$NETSPAWN_STATE_DIR/upstream.conf
"#;

#[test]
fn machines_get_addresses_and_find_each_other_and_the_world_by_name() {
    let env = TestEnv::new();
    let img = env.busybox("one");
    let other = env.busybox("two");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               {STUB_DNS}
               $NETSPAWN -q -n -D {img} /bin/sleep 60 &
               for t in $(seq 200); do grep -q '^ADDRESSES=.' $NETSPAWN_RUN_DIR/machines/one 2>/dev/null && break; sleep 0.05; done
               $NETSPAWN -q -n -D {other} /bin/sh -c 'echo addr=$(ip -4 -o addr show host0 | grep -o "inet [0-9./]*"); grep nameserver /etc/resolv.conf; ip route | grep default; nslookup one | grep '^Address' | tail -1; nslookup example.test | grep '^Address' | tail -1'
               echo host=$(ip -4 -o addr show ve-one | grep -o "inet [0-9./]*")
               kill %2; wait %2"#,
            img = img.display(),
            other = other.display()
        ),
        120,
    );
    let out = &r.stdout;
    assert!(out.contains("addr=inet "), "{out}\n{}", r.stderr);
    let host = out
        .lines()
        .find_map(|l| l.strip_prefix("host=inet "))
        .expect("ve-one has an address");
    assert!(host.ends_with("/28"), "a /28 from the pool: {host}");
    assert!(out.contains("nameserver "), "{out}");
    assert!(out.contains("default via "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Address: ") && !l.contains("192.0.2.99")),
        "'one' resolves to its own address: {out}"
    );
    assert!(
        out.contains("Address: 192.0.2.99"),
        "other names are forwarded upstream: {out}"
    );
    // netd persisted the lease it gave "one".
    let leases =
        std::fs::read_to_string(env.state_dir_file("leases/ve-one.json")).unwrap_or_default();
    assert!(!leases.is_empty(), "no lease file for ve-one");
}

#[test]
fn port_forwards_reach_the_container_from_the_host_and_its_localhost() {
    let env = TestEnv::new();
    let img = env.busybox("www");
    let img2 = env.busybox("www2");
    std::fs::create_dir_all(img.join("www")).unwrap();
    std::fs::write(img.join("www/index.html"), "hello from www\n").unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               ip link add up0 type veth peer name up1 && ip addr add 198.51.100.1/24 dev up0 && ip link set up0 up && ip link set up1 up
               $NETSPAWN -q -n -p 8080:80 -D {img} httpd -f -p 80 -h /www &
               get() {{ python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())" "$1" 2>/dev/null; }}
               for t in $(seq 100); do out=$(get http://127.0.0.1:8080/index.html) && [ -n "$out" ] && break; sleep 0.1; done
               echo localhost=$out
               echo address=$(get http://198.51.100.1:8080/index.html)
               $NETSPAWN -q -n -p 8080:80 -D {img2} /bin/true; echo busy-rc=$?
               nft list tables
               kill %1; wait %1
               for t in $(seq 100); do nft list tables | grep -q netspawn || break; sleep 0.1; done
               echo after=$(get http://127.0.0.1:8080/index.html)"#,
            img = img.display(),
            img2 = img2.display()
        ),
        120,
    );
    let out = &r.stdout;
    assert!(
        out.contains("localhost=hello from www"),
        "{out}\n{}",
        r.stderr
    );
    assert!(out.contains("address=hello from www"), "{out}");
    assert!(out.contains("busy-rc=1"), "{out}");
    assert!(
        r.stderr
            .contains("port 8080/tcp is already forwarded to machine www"),
        "{}",
        r.stderr
    );
    assert!(out.contains("table inet netspawn"), "{out}");
    assert!(
        out.contains("after=\n") || out.trim_end().ends_with("after="),
        "rules go with the machine: {out}"
    );
}

#[test]
fn masquerade_takes_containers_out_through_the_host() {
    let env = TestEnv::new();
    let img = env.busybox("out");
    // The "internet": a namespace behind up0 that has no route to the container subnet.
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               unshare --net sleep 60 & inet=$!
               sleep 0.2
               ip link add up0 type veth peer name up1 netns /proc/$inet/ns/net
               ip addr add 203.0.113.1/24 dev up0 && ip link set up0 up
               nsenter --net=/proc/$inet/ns/net sh -c 'ip addr add 203.0.113.2/24 dev up1; ip link set up1 up; ip link set lo up'
               ip route add default via 203.0.113.2
               $NETSPAWN -q -n -D {img} /bin/sh -c 'ping -c 1 -W 2 203.0.113.2 >/dev/null && echo PING-OK'
               kill $inet"#,
            img = img.display()
        ),
        60,
    );
    assert!(r.stdout.contains("PING-OK"), "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn a_template_in_etc_overrides_the_builtin_and_a_bad_one_is_refused() {
    let env = TestEnv::new();
    let img = env.busybox("tpl");
    let dir = env.dir.join("etc-network");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n\n[Network]\nAddress=0.0.0.0/29\nDHCPServer=yes\n",
    )
    .unwrap();
    let script = format!(
        r#"ip link set lo up
           export NETSPAWN_NETWORK_PATH={dir}
           $NETSPAWN -q -n -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -o "/[0-9]*"'"#,
        dir = dir.display(),
        img = img.display()
    );
    let r = env.sh(&script, 60);
    assert_eq!(r.stdout, "/29\n", "{}", r.stderr);
    // A malformed line: one clear error naming FILE:LINE, nothing left behind.
    let bad = env.dir.join("bad-network");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n[Network]\nDHCPServer=perhaps\n",
    )
    .unwrap();
    let r = env.sh(
        &format!(
            "ip link set lo up; export NETSPAWN_NETWORK_PATH={}; $NETSPAWN -q -n -D {} /bin/true; echo rc=$?; ip -o link | wc -l",
            bad.display(),
            img.display()
        ),
        60,
    );
    assert_eq!(r.stdout, "rc=1\n1\n", "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("80-container-ve.network:4:"),
        "{}",
        r.stderr
    );
    assert!(env.registry_names().is_empty());
}

#[test]
fn a_template_address_that_cannot_serve_a_link_is_refused_at_load() {
    let env = TestEnv::new();
    let img = env.busybox("tpladdr");
    let dir = env.dir.join("etc-network");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n\n[Network]\nAddress=127.0.0.1/8\nDHCPServer=yes\n",
    )
    .unwrap();
    // Refused when netd loads its templates, before any link is made, with
    // FILE:LINE; not a DHCP timeout in the container later.
    let r = env.sh(
        &format!(
            "ip link set lo up; export NETSPAWN_NETWORK_PATH={}; $NETSPAWN -q -n -D {} /bin/true; echo rc=$?; ip -o link | wc -l",
            dir.display(),
            img.display()
        ),
        60,
    );
    assert_eq!(r.stdout, "rc=1\n1\n", "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "80-container-ve.network:5: Invalid Address= value: \"127.0.0.1/8\" is a loopback address"
        ),
        "{}",
        r.stderr
    );
    assert!(env.registry_names().is_empty());
}

#[test]
fn netd_restarts_keep_leases_and_restore_flushed_rules() {
    let env = TestEnv::new();
    let img = env.busybox("keep");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               a1=$($NETSPAWN -q -n -D {img} /bin/sh -c 'ip -4 -o addr show host0' | grep -o 'inet [0-9.]*')
               kill -9 $(cat $NETSPAWN_RUN_DIR/netd-*.pid); sleep 0.2
               a2=$($NETSPAWN -q -n -D {img} /bin/sh -c 'ip -4 -o addr show host0' | grep -o 'inet [0-9.]*')
               echo "a1=$a1"; echo "a2=$a2"
               $NETSPAWN -q -n -D {img} /bin/sleep 60 &
               for t in $(seq 100); do nft list tables | grep -q netspawn && break; sleep 0.05; done
               nft flush ruleset
               for t in $(seq 100); do nft list tables | grep -q netspawn && break; sleep 0.1; done
               echo restored=$(nft list tables | grep -c netspawn)
               kill %1; wait"#,
            img = img.display()
        ),
        90,
    );
    let get = |k: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        get("a1=").starts_with("inet "),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        get("a1="),
        get("a2="),
        "same machine, same lease after netd was killed"
    );
    assert_eq!(get("restored="), "1", "{}", r.stdout);
}

#[test]
fn netd_runs_by_hand_in_the_foreground() {
    let env = TestEnv::new();
    let r = env.sh(
        r#"ip link set lo up
           $(dirname $NETSPAWN)/netspawn-netd --foreground --idle-exit 1 2>&1 | head -1
           $(dirname $NETSPAWN)/netspawn-netd --bogus; echo rc=$?"#,
        30,
    );
    assert!(
        r.stdout.contains("netd ready on "),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("rc=1"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("netspawn-netd: unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
}

#[test]
fn link_local_addressing_and_dhcp_server_dns_follow_the_templates() {
    let env = TestEnv::new();
    let img = env.busybox("lla");
    let dir = env.dir.join("ll-network");
    std::fs::create_dir_all(&dir).unwrap();
    // The container link: no link-local addresses at all; DHCP hands out
    // another server first, then netd's own.
    std::fs::write(
        dir.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n\n[Network]\nAddress=0.0.0.0/28\nDHCPServer=yes\n\
         LinkLocalAddressing=no\n\n[DHCPServer]\nDNS=192.0.2.53 _server_address\n",
    )
    .unwrap();
    // A link netd does not serve DHCP on: an IPv4 link-local address, no IPv6 one.
    std::fs::write(
        dir.join("10-ll.network"),
        "[Match]\nName=ll0\n\n[Network]\nLinkLocalAddressing=ipv4\n",
    )
    .unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               export NETSPAWN_NETWORK_PATH={dir}
               ip link add ll0 type veth peer name ll1 && ip link set ll0 up && ip link set ll1 up
               for t in $(seq 100); do ip -6 -o addr show dev ll0 | grep -q fe80 && break; sleep 0.05; done
               echo ll6-before=$(ip -6 -o addr show dev ll0 | grep -c fe80)
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c 'echo resolv=$(grep nameserver /etc/resolv.conf | cut -d" " -f2); {HOLD}' &
               for t in $(seq 1200); do ip -4 -o addr show dev ve-lla 2>/dev/null | grep -q inet && break; sleep 0.05; done
               sleep 0.5
               echo ve4=$(ip -4 -o addr show dev ve-lla | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
               echo ve6=$(ip -6 -o addr show dev ve-lla | grep -c fe80)
               echo vemode=$(cat /proc/sys/net/ipv6/conf/ve-lla/addr_gen_mode)
               echo ll4=$(ip -4 -o addr show dev ll0 | grep -o 'inet [0-9./]*' | cut -d' ' -f2)
               echo ll6=$(ip -6 -o addr show dev ll0 | grep -c fe80)
               echo llmode=$(cat /proc/sys/net/ipv6/conf/ll0/addr_gen_mode)
               touch {ctl}/stop
               wait %1"#,
            dir = dir.display(),
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    let out = &r.stdout;
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in {out}\n{}", r.stderr))
            .to_string()
    };
    assert_eq!(
        get("ll6-before"),
        "1",
        "the kernel gave ll0 an fe80 address"
    );
    let ve4 = get("ve4");
    assert!(ve4.parse::<std::net::Ipv4Addr>().is_ok(), "{out}");
    assert_eq!(
        get("resolv"),
        format!("192.0.2.53 {ve4}"),
        "DHCPServer DNS= in order: {out}"
    );
    assert_eq!(get("ve6"), "0", "LinkLocalAddressing=no: {out}");
    assert_eq!(get("vemode"), "1", "IPv6 address generation none: {out}");
    let ll4 = get("ll4");
    assert!(
        ll4.starts_with("169.254.") && ll4.ends_with("/16"),
        "LinkLocalAddressing=ipv4: {out}"
    );
    assert_eq!(
        get("ll6"),
        "0",
        "the kernel's fe80 address is removed: {out}"
    );
    assert_eq!(get("llmode"), "1", "{out}");
}

#[test]
fn network_dns_is_the_upstream_for_queries_on_that_link() {
    let env = TestEnv::new();
    let img = env.busybox("updns");
    let dir = env.dir.join("dns-network");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n\n[Network]\nAddress=0.0.0.0/28\nDHCPServer=yes\nDNS=127.0.0.54\n",
    )
    .unwrap();
    // The host's upstream answers 192.0.2.99; the link's own, 192.0.2.77.
    let link_stub = STUB_DNS
        .replace("stub.py", "stub-link.py")
        .replace("127.0.0.53", "127.0.0.54")
        .replace("192, 0, 2, 99", "192, 0, 2, 77")
        .replace("upstream.conf", "upstream-link.conf")
        .replace("export NETSPAWN_UPSTREAM_RESOLV_CONF", "true");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               {STUB_DNS}
               {link_stub}
               export NETSPAWN_NETWORK_PATH={dir}
               $NETSPAWN -q -n -D {img} /bin/sh -c 'nslookup example.test | grep "^Address" | tail -1'
               ls $NETSPAWN_RUN_DIR | grep -c upstream"#,
            dir = dir.display(),
            img = img.display()
        ),
        60,
    );
    let out = &r.stdout;
    assert!(
        out.contains("Address: 192.0.2.77"),
        "forwarded to the link's DNS=: {out}\n{}",
        r.stderr
    );
    assert!(!out.contains("192.0.2.99"), "{out}");
    // netd's resolv.conf for that list, in the run directory while it runs.
    assert_eq!(out.lines().last(), Some("1"), "{out}");
}

/// A zone template with a /28 (13 addresses for machines) in a directory of its own.
fn small_zone_templates(env: &TestEnv) -> std::path::PathBuf {
    let dir = env.dir.join("small-zone");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("80-container-vz.network"),
        "[Match]\nName=vz-*\nKind=bridge\n\n[Network]\nAddress=0.0.0.0/28\nDHCPServer=yes\n",
    )
    .unwrap();
    dir
}

fn count(out: &str, key: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

/// Issue 9, item 4: a machine's lease ends with the machine. More machines with unique names
/// than the zone's pool holds, one after the other, all get an address (before: the 14th and
/// every later one failed with "no lease within 10s" for an hour); unregistered ones too (netd
/// knows them by their links).
#[test]
fn a_zone_serves_more_unique_machines_in_turn_than_its_pool_holds() {
    let env = TestEnv::new();
    let img = env.busybox("seq");
    let tpl = small_zone_templates(&env);
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               export NETSPAWN_NETWORK_PATH={tpl}
               ok=0; fail=0
               for i in $(seq 20); do
                 if $NETSPAWN -q --read-only --network-zone=seq -M u$i -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -q inet'; then
                   ok=$((ok+1))
                 else
                   fail=$((fail+1))
                 fi
               done
               for i in $(seq 10); do
                 if $NETSPAWN -q --read-only --register=no --network-zone=seq -M r$i -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -q inet'; then
                   ok=$((ok+1))
                 else
                   fail=$((fail+1))
                 fi
               done
               echo ok=$ok; echo fail=$fail"#,
            tpl = tpl.display(),
            img = img.display()
        ),
        240,
    );
    eprintln!("unique-name launches on a /28 zone: {}", r.stdout.trim());
    assert_eq!(count(&r.stdout, "fail="), 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(count(&r.stdout, "ok="), 30, "{}\n{}", r.stdout, r.stderr);
}

/// Shell lines that start 13 machines (`PREFIX1`..`PREFIX13`, holding until
/// `/ctl/stop`) on `zone`, wait until every one has its address, and print
/// `held=N`, how many have one: a small zone's whole pool.
fn hold_on_zone(env: &TestEnv, zone: &str, prefix: &str, img: &std::path::Path) -> String {
    format!(
        r#"for i in $(seq 13); do
                 $NETSPAWN -q --read-only --network-zone={zone} -M {prefix}$i --bind={ctl}:/ctl -D {img} /bin/sh -c '{HOLD}' &
               done
               for t in $(seq 600); do [ $(grep -l '^ADDRESSES=.' $NETSPAWN_RUN_DIR/machines/{prefix}* 2>/dev/null | wc -l) = 13 ] && break; sleep 0.05; done
               echo held=$(grep -l '^ADDRESSES=.' $NETSPAWN_RUN_DIR/machines/{prefix}* 2>/dev/null | wc -l)"#,
        ctl = env.hold_dir().display(),
        img = img.display()
    )
}

/// A machine's MAC is the same on every zone: machines that left a zone for
/// another one do not hold their old leases there as running machines. Zone
/// za's pool (13 addresses) is filled by 13 machines; the same 13 then run on
/// zone zb; a new machine on za still gets an address (before: za counted them
/// as running, so its whole pool was held and the launch timed out). The
/// names are long, so their links' names are shortened with a hash.
#[test]
fn machines_that_moved_to_another_zone_leave_their_old_addresses_free() {
    let env = TestEnv::new();
    let img = env.busybox("mv");
    let tpl = small_zone_templates(&env);
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               export NETSPAWN_NETWORK_PATH={tpl}
               for i in $(seq 13); do
                 $NETSPAWN -q --read-only --network-zone=za -M moved-machine-$i -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -q inet' || echo first-fail=$i
               done
               {hold}
               $NETSPAWN -q --read-only --network-zone=za -M newcomer -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -o "inet [0-9.]*"' && echo newcomer=ok
               touch {ctl}/stop; wait"#,
            tpl = tpl.display(),
            img = img.display(),
            ctl = env.hold_dir().display(),
            hold = hold_on_zone(&env, "zb", "moved-machine-", &img),
        ),
        240,
    );
    assert!(
        !r.stdout.contains("first-fail="),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("held=13"), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("newcomer=ok"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// A zone whose pool is all held by running machines: the next launch fails
/// with one line that says so (before: "no DHCP server answered", as if
/// netd were not there), and leaves nothing behind.
#[test]
fn a_launch_on_a_full_zone_says_the_pool_is_exhausted() {
    let env = TestEnv::new();
    let img = env.busybox("full");
    let tpl = small_zone_templates(&env);
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               export NETSPAWN_NETWORK_PATH={tpl}
               {hold}
               $NETSPAWN -q --read-only --network-zone=fz -M extra -D {img} /bin/true; echo rc=$?
               echo extra-entry=$(ls $NETSPAWN_RUN_DIR/machines | grep -c '^extra$')
               echo extra-link=$(ip -o link | grep -c 'vb-extra')
               touch {ctl}/stop; wait"#,
            tpl = tpl.display(),
            img = img.display(),
            ctl = env.hold_dir().display(),
            hold = hold_on_zone(&env, "fz", "f", &img),
        ),
        240,
    );
    assert!(r.stdout.contains("held=13"), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rc=1"), "{}\n{}", r.stdout, r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("no lease"))
        .unwrap_or_else(|| panic!("no DHCP error line: {}", r.stderr));
    assert!(
        line.contains("netd's DHCP server on vz-fz did not answer because its pool")
            && line.contains("(13 addresses) has no free address"),
        "{line}"
    );
    assert!(r.stdout.contains("extra-entry=0"), "{}", r.stdout);
    assert!(r.stdout.contains("extra-link=0"), "{}", r.stdout);
}

/// Issue 9, item 5: a client on the zone that makes up MACs gets a bounded share of the pool;
/// the next machine still gets its address (before: the made-up clients took every free
/// address and the machine got none).
#[test]
fn made_up_dhcp_clients_cannot_starve_a_zone() {
    let env = TestEnv::new();
    let img = env.busybox("victim");
    let tpl = small_zone_templates(&env);
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               export NETSPAWN_NETWORK_PATH={tpl}
               $NETSPAWN -q --read-only --network-zone=st -M first -D {img} /bin/sleep 120 &
               for t in $(seq 200); do grep -q '^ADDRESSES=.' $NETSPAWN_RUN_DIR/machines/first 2>/dev/null && break; sleep 0.05; done
               # The attacker: a namespace on the zone's bridge whose client changes its MAC.
               unshare --net sleep 300 & att=$!
               sleep 0.2
               ip link add fl0 type veth peer name fl1 netns /proc/$att/ns/net
               ip link set fl0 master vz-st up
               got=0
               for i in $(seq 24); do
                 mac=$(printf '02:66:00:00:%02x:%02x' $((i / 256)) $((i % 256)))
                 nsenter --net=/proc/$att/ns/net sh -c "ip link set fl1 down; ip link set fl1 address $mac; ip link set fl1 up" 
                 if nsenter --net=/proc/$att/ns/net udhcpc -i fl1 -n -q -f -t 1 -T 1 -A 1 -s /bin/true >/dev/null 2>&1; then got=$((got+1)); fi
               done
               echo admitted=$got
               $NETSPAWN -q --read-only --network-zone=st -M second -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -o "inet [0-9.]*"' && echo second=ok
               kill $att; kill %1; wait %1"#,
            tpl = tpl.display(),
            img = img.display()
        ),
        180,
    );
    let out = &r.stdout;
    eprintln!("made-up clients on a /28 zone: {}", out.trim());
    assert!(out.contains("second=ok"), "{out}\n{}", r.stderr);
    let admitted = count(out, "admitted=");
    // At most a quarter of the pool (at least 4) for clients that are no machine's.
    assert!(
        admitted <= 4,
        "{admitted} made-up clients got a lease: {out}"
    );
    assert!(
        admitted >= 1,
        "no made-up client got a lease at all: {out}\n{}",
        r.stderr
    );
}

/// Issue 9, item 9: lease files of links that no longer exist are pruned to a bounded history,
/// at start-up (275 stale files from before) and as links go.
#[test]
fn the_lease_directory_stays_bounded() {
    let env = TestEnv::new();
    let img = env.busybox("lz");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               mkdir -p $NETSPAWN_STATE_DIR/leases
               for i in $(seq 275); do echo '{{"version":1,"leases":[]}}' > $NETSPAWN_STATE_DIR/leases/ve-stale$i.json; done
               $NETSPAWN -q -n --read-only -M lz0 -D {img} /bin/true
               echo after-start=$(ls $NETSPAWN_STATE_DIR/leases | wc -l)
               kill $(cat $NETSPAWN_RUN_DIR/netd-*.pid); sleep 0.3
               export NETSPAWN_NETD_LEASE_HISTORY=3
               for i in $(seq 8); do $NETSPAWN -q -n --read-only -M lz$i -D {img} /bin/true; done
               sleep 0.5
               echo after-runs=$(ls $NETSPAWN_STATE_DIR/leases | wc -l)
               ls $NETSPAWN_STATE_DIR/leases"#,
            img = img.display()
        ),
        180,
    );
    let out = &r.stdout;
    eprintln!("lease files: {}", out.trim());
    let start = count(out, "after-start=");
    assert!(
        start <= 65,
        "{start} lease files after a start: {out}\n{}",
        r.stderr
    );
    let runs = count(out, "after-runs=");
    assert!(
        runs <= 4,
        "{runs} lease files after 8 machines with a history of 3: {out}"
    );
    assert!(!out.contains("ve-stale"), "stale files survived: {out}");
}

/// Issue 9, item 5, from inside: a machine whose payload sends DHCP requests with made-up
/// client identifiers gets its own one address back each time, nothing more (before: a new
/// address per identifier, until the zone was full).
#[test]
fn made_up_client_ids_from_inside_a_machine_get_its_one_address() {
    let env = TestEnv::new();
    let img = env.busybox("inside");
    let tpl = small_zone_templates(&env);
    std::fs::write(
        img.join("flood.sh"),
        "printf '#!/bin/sh\\n[ \"$1\" = bound ] && echo lease=$ip\\nexit 0\\n' > /run/s; chmod +x /run/s\n\
         echo own=$(ip -4 -o addr show host0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)\n\
         for i in $(seq 10 29); do udhcpc -i host0 -n -q -f -t 2 -T 1 -C -x 0x3d:00aa00$i -s /run/s 2>/dev/null; done\n",
    )
    .unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               export NETSPAWN_NETWORK_PATH={tpl}
               $NETSPAWN -q --network-zone=in -M flooder -D {img} /bin/sh /flood.sh
               $NETSPAWN -q --network-zone=in -M next -D {img} /bin/sh -c 'ip -4 -o addr show host0 | grep -q inet' && echo next=ok"#,
            tpl = tpl.display(),
            img = img.display()
        ),
        120,
    );
    let out = &r.stdout;
    eprintln!("made-up client ids inside a machine: {}", out.trim());
    let own = out
        .lines()
        .find_map(|l| l.strip_prefix("own="))
        .unwrap_or("")
        .to_string();
    assert!(!own.is_empty(), "{out}\n{}", r.stderr);
    let leases: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("lease="))
        .collect();
    assert_eq!(leases.len(), 20, "{out}\n{}", r.stderr);
    assert!(leases.iter().all(|l| *l == own), "{own}: {leases:?}");
    assert!(out.contains("next=ok"), "{out}\n{}", r.stderr);
}

/// Issue 15: a plain command's host0 gets its lease from netd's DHCP server
/// over netd's control socket (no packet on the link to wait for the
/// kernel's queues or to be lost), on a `ve-` link and on a zone; it is
/// the server's own lease for the machine: a DHCP client on host0 is given
/// the same address. The lease comes with netd's answer about the link
/// (`LINKDHCP`: netd's server binds it beside the link's last steps).
#[test]
fn host0_gets_its_lease_over_netds_control_socket_and_a_client_on_the_link_the_same() {
    let env = TestEnv::new();
    let img = env.busybox("direct");
    std::fs::write(
        img.join("again.sh"),
        "printf '#!/bin/sh\\n[ \"$1\" = bound ] && echo lease=$ip\\nexit 0\\n' > /run/s; chmod +x /run/s\n\
         echo own=$(ip -4 -o addr show host0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)\n\
         udhcpc -i host0 -n -q -f -t 5 -T 1 -s /run/s 2>/dev/null\n",
    )
    .unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               for net in -n --network-zone=dz; do
                 echo "--- $net"
                 RUST_LOG=debug $NETSPAWN -q $net -M direct -D {img} /bin/sh /again.sh 2>$NETSPAWN_STATE_DIR/launch.log
                 grep -o "host0 configured by DHCP over [a-z' ]*" $NETSPAWN_STATE_DIR/launch.log
                 grep -o "with netd's answer about [a-z0-9-]*" $NETSPAWN_STATE_DIR/launch.log
               done"#,
            img = img.display()
        ),
        120,
    );
    r.expect_status(0);
    for part in r.stdout.split("--- ").skip(1) {
        let field = |k: &str| {
            part.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .to_string()
        };
        assert!(
            part.contains("host0 configured by DHCP over netd's control socket"),
            "{part}\n{}",
            r.stderr
        );
        // One request: netd's answer about the link carried the lease.
        assert!(
            part.contains("with netd's answer about v"),
            "{part}\n{}",
            r.stderr
        );
        let own = field("own=");
        assert!(!own.is_empty(), "{part}\n{}", r.stderr);
        assert_eq!(field("lease="), own, "{part}\n{}", r.stderr);
    }
    assert_eq!(r.stdout.matches("--- ").count(), 2, "{}", r.stdout);
}

/// netd holds about ten descriptors per link it serves: started under a soft
/// open-file limit of 128 (1024 is the usual one, and ran out at about a
/// hundred `-n` machines), it raises its limit and serves every machine: each
/// has its address, and the last one resolves the first by name through
/// netd's DNS on its own link.
#[test]
fn netd_serves_more_links_than_the_open_file_limit_it_was_started_with_allows() {
    let env = TestEnv::new();
    let img = env.busybox("fdl");
    let dir = env.dir.join("fdl-out");
    std::fs::create_dir_all(&dir).unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               cd {dir}
               ulimit -Sn 128
               n=16
               for i in $(seq $n); do
                   $NETSPAWN -q -n --read-only -M fdl$i -D {img} sh -c \
                       'ip -4 -o addr show host0 | grep -q inet && echo up; exec sleep 120' \
                       > out$i 2>&1 &
                   for t in $(seq 200); do [ -s out$i ] && break; sleep 0.05; done
               done
               echo launched=$(grep -l '^up$' out* | wc -l)
               cat out* | grep -v '^up$'
               echo limit=$(awk '/Max open files/ {{ print $4 }}' /proc/$(cat $NETSPAWN_RUN_DIR/netd-*.pid)/limits)
               $NETSPAWNCTL shell fdl$n /bin/sh -c 'nslookup fdl1' 2>&1 | sed 's/^/ns: /'
               $NETSPAWNCTL terminate $(seq -f fdl%g $n) >/dev/null 2>&1
               wait"#,
            img = img.display(),
            dir = dir.display()
        ),
        180,
    );
    let out = &r.stdout;
    assert_eq!(count(out, "launched="), 16, "{out}\n{}", r.stderr);
    assert!(
        count(out, "limit=") > 128,
        "netd kept the limit it was started with: {out}"
    );
    // busybox's nslookup: the server first, then each answer's name and address.
    let answers = out.split_once("ns: Name:").map_or("", |(_, a)| a);
    assert!(
        answers
            .lines()
            .any(|l| l.starts_with("ns: Address") && l.contains('.')),
        "fdl16 did not resolve fdl1 through netd: {out}\n{}",
        r.stderr
    );
}
