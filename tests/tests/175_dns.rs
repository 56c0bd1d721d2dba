//! netd's names, end to end (issue 12, items 4 and 5): a regression suite
//! with real `dig` against netd's DNS on a zone (NODATA with SOA, exactly
//! the asked type, no duplicates, case, EDNS, TC and the TCP fallback,
//! `host`, the zone's search domain, registry changes under queries), an
//! internal zone (`DNSDefaultRoute=no` + `IPMasquerade=no` in a template),
//! and the LLMNR responder, asked by a raw client and by a booted Debian
//! guest's systemd-resolved. Each test runs in its own network namespace;
//! the "upstream" DNS is a stub on loopback that logs what it is asked.

use std::path::PathBuf;
use std::process::Command;

use netspawn_tests::*;

/// A DNS stub on 127.0.0.53:53 answering every query with one A record
/// 192.0.2.99, logging each question name to $NETSPAWN_STATE_DIR/asked.
const STUB_DNS: &str = r#"
cat > $NETSPAWN_STATE_DIR/stub.py <<'PY'
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.53", 53))
log = open(os.path.join(os.path.dirname(__file__), "asked"), "a")
open(__file__ + ".ready", "w").close()
while True:
    q, peer = s.recvfrom(512)
    end = 12
    labels = []
    while q[end] != 0:
        labels.append(q[end + 1:end + 1 + q[end]].decode("ascii", "replace"))
        end += q[end] + 1
    log.write(".".join(labels) + "\n"); log.flush()
    question = q[12:end + 5]
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 99])
    s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer, peer)
PY
mkdir -p $NETSPAWN_STATE_DIR
python3 $NETSPAWN_STATE_DIR/stub.py &
for t in $(seq 600); do [ -e $NETSPAWN_STATE_DIR/stub.py.ready ] && break; sleep 0.05; done
echo "nameserver 127.0.0.53" > $NETSPAWN_STATE_DIR/upstream.conf
export NETSPAWN_UPSTREAM_RESOLV_CONF=$NETSPAWN_STATE_DIR/upstream.conf
"#;

/// Starts busybox machines `alpha` and `beta` on zone `lab` and waits
/// (30 s at most each) until both have an IPv4 address in the registry;
/// sets `$gw` (vz-lab's address), `$alpha`, `$beta` (their IPv4
/// addresses) and `$leader` (alpha's leader, to run clients in its
/// network namespace).
fn two_machines(a: &std::path::Path, b: &std::path::Path) -> String {
    format!(
        r#"$NETSPAWN -q --network-zone=lab -D {a} /bin/sleep 600 &
           $NETSPAWN -q --network-zone=lab -D {b} /bin/sleep 600 &
           for m in alpha beta; do
             for t in $(seq 600); do grep -q '^ADDRESSES=.*[0-9]\.[0-9]' $NETSPAWN_RUN_DIR/machines/$m 2>/dev/null && break; sleep 0.05; done
           done
           v4() {{ sed -n 's/^ADDRESSES=//p' $NETSPAWN_RUN_DIR/machines/$1 | tr ' ' '\n' | grep -v : | head -1; }}
           gw=$(ip -4 -o addr show vz-lab | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
           alpha=$(v4 alpha); beta=$(v4 beta)
           leader=$(sed -n 's/^LEADER=//p' $NETSPAWN_RUN_DIR/machines/alpha)
           echo "gw=$gw"; echo "alpha=$alpha"; echo "beta=$beta"
"#,
        a = a.display(),
        b = b.display()
    )
}

/// The sections of a script's output: lines after `== NAME` up to the next.
fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = out.lines();
    let marker = format!("== {name}");
    if !lines.any(|l| l == marker) {
        return Vec::new();
    }
    lines.take_while(|l| !l.starts_with("== ")).collect()
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

fn need_dig() -> bool {
    if have("dig") {
        return true;
    }
    skip(
        "175_dns",
        "dig is not installed (bind9-dnsutils, scripts/setup-deps)",
    );
    false
}

#[test]
fn dig_regression_suite_against_a_zone() {
    if !need_dig() {
        return;
    }
    let env = TestEnv::new();
    let a = env.busybox("alpha");
    let b = env.busybox("beta");
    let c = env.busybox("gamma");
    let script = format!(
        r#"ip link set lo up
           {STUB_DNS}
           {machines}
           # A plain machine's resolv.conf, from netspawn's own DHCP client:
           # the zone's search domain, and a bare name found through it.
           echo "== gamma"
           $NETSPAWN -q --network-zone=lab -D {c} /bin/sh -c 'grep ^search /etc/resolv.conf; nslookup -type=a beta.lab.netspawn | grep ^Address | tail -1'
           # A machine with 100 addresses (a registry entry of a live
           # process): its A answer does not fit a UDP reply.
           sleep 600 & keeper=$!
           start=$(sed 's/.*) //' /proc/$keeper/stat | cut -d' ' -f20)
           addrs=$(for i in $(seq 1 100); do printf '10.99.%d.%d ' $((i / 250)) $((i % 250 + 1)); done)
           printf 'NAME=many\nLAUNCHER=%s\nLAUNCHER_START=%s\nADDRESSES=%s\n' $keeper $start "$addrs" > $NETSPAWN_RUN_DIR/machines/.many
           mv $NETSPAWN_RUN_DIR/machines/.many $NETSPAWN_RUN_DIR/machines/many
           D="nsenter -t $leader -n dig @$gw +tries=3 +time=5"
           for t in $(seq 300); do [ -n "$($D +short many | head -1)" ] && break; sleep 0.1; done
           echo "== beta"; $D +short beta A
           echo "== beta-zone"; $D +short beta.lab.netspawn A
           echo "== beta-domain"; $D +short BETA.netspawn A
           echo "== case"; $D +noall +question +answer AlPhA.LaB.NetSpawn A
           echo "== nodata"; $D alpha MX
           echo "== aaaa"; $D alpha AAAA
           echo "== aaaa-answer"; $D +noall +answer alpha AAAA
           echo "== nxdomain-zone"; $D nope.lab.netspawn A
           echo "== nxdomain"; $D nope A
           echo "== wrong-zone"; $D beta.other.netspawn A
           echo "== host"; $D +short host A
           echo "== host-zone"; $D +short host.lab.netspawn A
           echo "== world"; $D +short example.test A
           echo "== edns"; $D +edns=0 alpha A
           echo "== noedns"; $D +noedns alpha A
           echo "== tc-plain"; $D +ignore +noedns many A
           echo "== tc-edns"; $D +ignore many A
           echo "== fallback"; $D many A
           echo "== tcp"; $D +tcp +noall +answer many A | wc -l
           echo "== dupes"; $D +short many A | sort | uniq -d | wc -l
           # Registry changes while queries run: none of them may fail.
           ( for i in $(seq 60); do
               printf 'NAME=churn\nLAUNCHER=%s\nLAUNCHER_START=%s\nADDRESSES=10.98.0.%d\n' $keeper $start $i > $NETSPAWN_RUN_DIR/machines/.churn
               mv $NETSPAWN_RUN_DIR/machines/.churn $NETSPAWN_RUN_DIR/machines/churn
               rm -f $NETSPAWN_RUN_DIR/machines/churn
             done ) & churner=$!
           echo "== churn"
           for i in $(seq 150); do echo "q $($D +short alpha A | tr '\n' ' ')"; done
           wait $churner
           echo "== end"
           kill %1 %2 %3 $keeper 2>/dev/null; wait"#,
        machines = two_machines(&a, &b),
        c = c.display(),
    );
    let r = env.sh(&script, 300);
    let out = &r.stdout;
    let ctx = format!("{out}\n{}", r.stderr);
    let (gw, alpha, beta) = (value(out, "gw"), value(out, "alpha"), value(out, "beta"));
    assert!(
        !gw.is_empty() && !alpha.is_empty() && !beta.is_empty(),
        "{ctx}"
    );

    // The zone's search domain reaches a plain machine's resolv.conf.
    let gamma = section(out, "gamma");
    assert_eq!(gamma.first().copied(), Some("search lab.netspawn"), "{ctx}");
    assert!(gamma.get(1).is_some_and(|l| l.contains(beta)), "{ctx}");
    // A machine by its name, its zone's search domain and the domain; once.
    for s in ["beta", "beta-zone", "beta-domain"] {
        assert_eq!(section(out, s), [beta], "{s}: {ctx}");
    }
    // The question's case is echoed, and the answer's owner is the question.
    let case: Vec<Vec<&str>> = section(out, "case")
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        case.contains(&vec![";AlPhA.LaB.NetSpawn.", "IN", "A"]),
        "{ctx}"
    );
    assert!(
        case.contains(&vec!["AlPhA.LaB.NetSpawn.", "5", "IN", "A", alpha]),
        "{ctx}"
    );
    // NODATA with an SOA (RFC 2308, 8020), not NXDOMAIN.
    let nodata = section(out, "nodata").join("\n");
    assert!(nodata.contains("status: NOERROR"), "{ctx}");
    assert!(nodata.contains("ANSWER: 0, AUTHORITY: 1"), "{ctx}");
    assert!(nodata.contains("\tSOA\t"), "{ctx}");
    // AAAA: only AAAA records, or NODATA with an SOA if there are none.
    let aaaa = section(out, "aaaa").join("\n");
    assert!(aaaa.contains("status: NOERROR"), "{ctx}");
    let answers = section(out, "aaaa-answer");
    assert!(answers.iter().all(|l| l.contains("\tAAAA\t")), "{ctx}");
    if answers.is_empty() {
        assert!(
            aaaa.contains("AUTHORITY: 1") && aaaa.contains("\tSOA\t"),
            "{ctx}"
        );
    }
    // Unknown names: NXDOMAIN, with the domain's SOA under it.
    let nx = section(out, "nxdomain-zone").join("\n");
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("\tSOA\t"),
        "{ctx}"
    );
    // A machine under a zone it is not on does not exist there.
    let wz = section(out, "wrong-zone").join("\n");
    assert!(wz.contains("status: NXDOMAIN"), "{ctx}");
    assert!(
        section(out, "nxdomain")
            .join("\n")
            .contains("status: NXDOMAIN"),
        "{ctx}"
    );
    // `host` is the host's address on the machine's link.
    assert_eq!(section(out, "host"), [gw], "{ctx}");
    assert_eq!(section(out, "host-zone"), [gw], "{ctx}");
    // Everything else is forwarded.
    assert_eq!(section(out, "world"), ["192.0.2.99"], "{ctx}");
    // EDNS echoed with our payload size; none without.
    assert!(
        section(out, "edns").join("\n").contains("udp: 1232"),
        "{ctx}"
    );
    assert!(
        !section(out, "noedns")
            .join("\n")
            .contains("OPT PSEUDOSECTION"),
        "{ctx}"
    );
    // Too large for UDP: TC, then dig's TCP retry gets it all.
    for s in ["tc-plain", "tc-edns"] {
        let t = section(out, s).join("\n");
        assert!(t.contains(" tc") || t.contains("tc "), "{s}: {ctx}");
    }
    let fallback = section(out, "fallback").join("\n");
    assert!(fallback.contains("ANSWER: 100,"), "{ctx}");
    assert_eq!(section(out, "tcp"), ["100"], "{ctx}");
    assert_eq!(section(out, "dupes"), ["0"], "{ctx}");
    // Registry churn never made a query fail.
    let churn = section(out, "churn");
    assert_eq!(churn.len(), 150, "{ctx}");
    for l in churn {
        assert_eq!(l.trim(), format!("q {alpha}"), "{ctx}");
    }
    // Nothing of ours leaked upstream.
    let asked = std::fs::read_to_string(env.state_dir_file("asked")).unwrap_or_default();
    assert!(!asked.contains("netspawn"), "{asked}");
    assert!(
        !asked.lines().any(|l| l == "nope" || l == "host"),
        "{asked}"
    );
}

#[test]
fn an_internal_zone_never_forwards_and_has_no_masquerade() {
    // (Its template also says LLMNR=no, checked at the end.)
    if !need_dig() {
        return;
    }
    let env = TestEnv::new();
    let a = env.busybox("alpha");
    let b = env.busybox("beta");
    let dir = env.dir.join("etc-network");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("70-lab-internal.network"),
        "[Match]\nName=vz-lab\nKind=bridge\n\n[Network]\nAddress=0.0.0.0/24\nDHCPServer=yes\n\
         IPMasquerade=no\nDNSDefaultRoute=no\nLLMNR=no\n",
    )
    .unwrap();
    let client = env.dir.join("llmnr.py");
    std::fs::write(&client, LLMNR_CLIENT).unwrap();
    let script = format!(
        r#"ip link set lo up
           export NETSPAWN_NETWORK_PATH={dir}
           {STUB_DNS}
           {machines}
           D="nsenter -t $leader -n dig @$gw +tries=3 +time=5"
           echo "== beta"; $D +short beta A
           echo "== host"; $D +short host A
           echo "== world"; $D example.test A
           echo "== world-tcp"; $D +tcp example.test A
           echo "== llmnr-off"; nsenter -t $leader -n python3 {client} beta
           echo "== nat"; nft list ruleset 2>/dev/null | grep -i masquerade | grep -F "${{gw%.*}}." | wc -l
           echo "== end"
           kill %1 %2 %3 2>/dev/null; wait"#,
        dir = dir.display(),
        machines = two_machines(&a, &b),
        client = client.display(),
    );
    let r = env.sh(&script, 180);
    let out = &r.stdout;
    let ctx = format!("{out}\n{}", r.stderr);
    assert_eq!(section(out, "beta"), [value(out, "beta")], "{ctx}");
    assert_eq!(section(out, "host"), [value(out, "gw")], "{ctx}");
    for s in ["world", "world-tcp"] {
        assert!(
            section(out, s).join("\n").contains("status: REFUSED"),
            "{s}: {ctx}"
        );
    }
    assert_eq!(section(out, "nat"), ["0"], "{ctx}");
    // `LLMNR=no` in the zone's template: no responder on its bridge.
    assert!(section(out, "llmnr-off").is_empty(), "{ctx}");
    let asked = std::fs::read_to_string(env.state_dir_file("asked")).unwrap_or_default();
    assert!(asked.is_empty(), "an internal zone asked upstream: {asked}");
}

/// A raw LLMNR client (RFC 4795 has no client in Debian short of
/// systemd-resolved; the booted-guest test below uses that one): sends
/// malformed datagrams first, then a query for argv[1] (over IPv6 on host0
/// if argv[2] is 6), prints the reply.
const LLMNR_CLIENT: &str = r#"
import socket, struct, sys
name = sys.argv[1].encode()
q = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0) + bytes([len(name)]) + name + b"\0" + struct.pack(">HH", 1, 1)
if len(sys.argv) > 2 and sys.argv[2] == "6":
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    group = ("ff02::1:3", 5355, 0, socket.if_nametoindex("host0"))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    group = ("224.0.0.252", 5355)
s.settimeout(3)
for bad in [b"", b"\xff" * 7, q[:-3], q[:2] + b"\x80\x00" + q[4:], q[:4] + b"\x00\x02" + q[6:]]:
    s.sendto(bad, group)
for attempt in range(10):
    s.sendto(q, group)
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    an = struct.unpack(">H", data[6:8])[0]
    print("id=%s flags=%s an=%d" % (data[0:2].hex(), data[2:4].hex(), an))
    if an:
        print("addr=" + socket.inet_ntoa(data[-4:]))
    break
"#;

#[test]
fn llmnr_answers_machine_names_on_the_zone_and_drops_bad_packets() {
    let env = TestEnv::new();
    let a = env.busybox("alpha");
    let b = env.busybox("beta");
    let client = env.dir.join("llmnr.py");
    std::fs::write(&client, LLMNR_CLIENT).unwrap();
    let script = format!(
        r#"ip link set lo up
           {machines}
           echo "== beta"; nsenter -t $leader -n python3 {client} beta
           echo "== BeTa"; nsenter -t $leader -n python3 {client} BeTa
           echo "== host"; nsenter -t $leader -n python3 {client} host
           echo "== nope"; nsenter -t $leader -n python3 {client} nope
           # Over IPv6 (link-local, ff02::1:3), once host0 has its fe80 address.
           for t in $(seq 300); do nsenter -t $leader -n ip -6 addr show dev host0 scope link | grep -q 'inet6 .* scope link' && ! nsenter -t $leader -n ip -6 addr show dev host0 | grep -q tentative && break; sleep 0.1; done
           echo "== beta6"; nsenter -t $leader -n python3 {client} beta 6
           # A LAN (another namespace on a plain veth, no template): netd's
           # LLMNR never answers there.
           unshare -n sleep 600 & lan=$!
           for t in $(seq 100); do [ "$(readlink /proc/$lan/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.05; done
           ip link add lan0 type veth peer name host0 netns $lan
           ip addr add 198.51.100.1/24 dev lan0; ip link set lan0 up
           nsenter -t $lan -n ip addr add 198.51.100.2/24 dev host0
           nsenter -t $lan -n ip link set host0 up
           nsenter -t $lan -n ip route add 224.0.0.0/4 dev host0
           echo "== lan"; nsenter -t $lan -n python3 {client} beta
           echo "== end"
           kill %1 %2 $lan 2>/dev/null; wait"#,
        machines = two_machines(&a, &b),
        client = client.display(),
    );
    let r = env.sh(&script, 180);
    let out = &r.stdout;
    let ctx = format!("{out}\n{}", r.stderr);
    for (s, want) in [
        ("beta", value(out, "beta")),
        ("BeTa", value(out, "beta")),
        ("host", value(out, "gw")),
    ] {
        let sec = section(out, s);
        // QR set; C, TC, T clear; one answer.
        assert_eq!(
            sec.first().copied(),
            Some("id=4242 flags=8000 an=1"),
            "{s}: {ctx}"
        );
        assert_eq!(
            sec.get(1).copied(),
            Some(format!("addr={want}").as_str()),
            "{s}: {ctx}"
        );
    }
    // Not ours: silence (every other responder on the link stays silent too).
    assert!(section(out, "nope").is_empty(), "{ctx}");
    // Only container links are served.
    assert!(section(out, "lan").is_empty(), "{ctx}");
}

fn debian_cache() -> PathBuf {
    std::env::var_os("NETSPAWN_TEST_DEBIAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netspawn-test/debian-bookworm"))
}

#[test]
fn a_booted_debian_guest_resolves_its_neighbour_by_llmnr() {
    let cache = debian_cache();
    if !cache.join("usr/lib/systemd/systemd").exists() {
        skip("175_dns", "no cached Debian image (see 060_boot_debian)");
        return;
    }
    if !cache.join("lib/systemd/systemd-resolved").exists() {
        skip("175_dns", "the Debian image has no systemd-resolved");
        return;
    }
    let env = TestEnv::new();
    let deb = env.image_dir().join("deb");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(&deb)
        .status()
        .unwrap();
    assert!(st.success());
    let b = env.busybox("beta");
    let script = format!(
        r#"ip link set lo up
           $NETSPAWN -q -b --network-zone=lab -D {deb} >/dev/null 2>&1 &
           $NETSPAWN -q --network-zone=lab -D {b} /bin/sleep 600 &
           for t in $(seq 600); do grep -q '^ADDRESSES=.*[0-9]\.[0-9]' $NETSPAWN_RUN_DIR/machines/beta 2>/dev/null && break; sleep 0.05; done
           echo "beta=$(sed -n 's/^ADDRESSES=//p' $NETSPAWN_RUN_DIR/machines/beta | tr ' ' '\n' | grep -v : | head -1)"
           for t in $(seq 900); do $NETSPAWNCTL shell deb /bin/true >/dev/null 2>&1 && break; sleep 0.1; done
           # resolved, networkd and the lease may take a while on a loaded machine (120 s at most).
           $NETSPAWNCTL shell deb /bin/sh -c 'for i in $(seq 1200); do r=$(getent hosts beta) && break; sleep 0.1; done; echo "getent=$r"; resolvectl query --legend=no beta 2>&1 | head -1 | sed "s/^/resolvectl=/"; echo "conflicts=$(journalctl -b -u systemd-resolved --no-pager 2>/dev/null | grep -ci conflict)"; echo "journal=$(journalctl -b -u systemd-resolved --no-pager 2>/dev/null | wc -l)"'
           $NETSPAWNCTL poweroff deb; wait %1
           kill %2 2>/dev/null; wait"#,
        deb = deb.display(),
        b = b.display(),
    );
    let r = env.sh(&script, 420);
    let out = &r.stdout;
    let ctx = format!("{out}\n{}", r.stderr);
    let beta = value(out, "beta");
    assert!(!beta.is_empty(), "{ctx}");
    let getent = value(out, "getent");
    assert!(
        getent.starts_with(&format!("{beta} ")),
        "getent hosts beta in the guest: {ctx}"
    );
    assert!(value(out, "resolvectl").contains(beta), "{ctx}");
    // netd never made the guest's resolved see a conflict for its own
    // name (it does not answer a machine's probe of itself), when the
    // guest's journal can tell.
    if value(out, "journal") != "0" {
        assert_eq!(value(out, "conflicts"), "0", "{ctx}");
    }
}
