//! IPv6 on a par with IPv4 (issue 12, items 1 to 3): every veth and zone
//! gets a /64 of the host's unique local /48 and router advertisements from
//! netd; a plain command has its SLAAC address before it starts, a booted
//! Debian guest's own networkd takes it from the advertisements; netd's DNS
//! and the NSS module answer with it; masquerade and port forwards work over
//! IPv6 as over IPv4. Each test runs in its own network namespace; the
//! "internet" is another namespace the test makes.

use std::path::PathBuf;
use std::process::Command;

use netspawn_tests::*;

/// A line of `out` that starts with `key`, without it.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key))
}

/// The global IPv6 address of `ip -6 -o addr` output (`ADDR/PREFIX`).
fn inet6(line: &str) -> Option<&str> {
    line.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
}

/// The first four groups of an IPv6 address: its /64.
fn slash64(addr: &str) -> String {
    let a: std::net::Ipv6Addr = addr.split('/').next().unwrap().parse().unwrap();
    let s = a.segments();
    format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
}

#[test]
fn a_plain_command_has_its_ula_address_and_default_route_before_it_starts() {
    let env = TestEnv::new();
    let img = env.busybox("six");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c 'echo guest=$(ip -6 -o addr show dev host0 scope global); echo route=$(ip -6 route show default); ping6 -c1 -W5 $(ip -6 route show default | cut -d" " -f3)%host0 >/dev/null && echo ROUTER-OK; touch /ctl/started; {HOLD}' &
               for t in $(seq 600); do [ -e {ctl}/started ] && break; sleep 0.05; done
               echo host=$(ip -6 -o addr show dev ve-six scope global)
               touch {ctl}/stop; wait
               cat $NETSPAWN_STATE_DIR/pools.json"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        90,
    );
    let out = &r.stdout;
    let guest = field(out, "guest=").and_then(inet6).unwrap_or_else(|| {
        panic!(
            "the payload starts with a global IPv6 address: {out}\n{}",
            r.stderr
        )
    });
    let host = field(out, "host=")
        .and_then(inet6)
        .expect("ve-six has PREFIX::1");
    assert!(host.ends_with("::1/64"), "{host}");
    assert!(host.starts_with("fd"), "a unique local address: {host}");
    assert!(guest.ends_with("/64"), "{guest}");
    assert_eq!(slash64(guest), slash64(host), "SLAAC in the link's /64");
    assert!(
        field(out, "route=").is_some_and(|r| r.starts_with("default via fe80::1 dev host0")),
        "{out}"
    );
    assert!(out.contains("ROUTER-OK"), "{out}");
    // The /48 is random and kept with the pools.
    assert!(out.contains("\"ula_site\": \"fd"), "{out}");
}

#[test]
fn aaaa_and_ptr_from_netd_and_both_families_from_nss() {
    let env = TestEnv::new();
    let img = env.busybox("web");
    let (lib, conf) = env.nss_module("hosts: files mymachines\n");
    let r = env.sh(
        &format!(
            r#"mount --bind {conf} /etc/nsswitch.conf && export LD_LIBRARY_PATH={lib}
               ip link set lo up
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c '{HOLD}' &
               for t in $(seq 600); do grep -q '^ADDRESSES=.*:' $NETSPAWN_RUN_DIR/machines/web 2>/dev/null && grep -q '^ADDRESSES=.*\.' $NETSPAWN_RUN_DIR/machines/web && break; sleep 0.05; done
               grep ^ADDRESSES= $NETSPAWN_RUN_DIR/machines/web
               own=$(ip -6 -o addr show dev ve-web scope global | grep -o 'fd[0-9a-f:]*::1')
               echo aaaa=$(dig +short +time=2 +tries=3 @$own web AAAA)
               echo a-over-v6=$(dig +short +time=2 +tries=3 @$own web A)
               v6=$(dig +short +time=2 +tries=3 @$own web AAAA | head -1)
               echo ptr=$(dig +short +time=2 +tries=3 @$own -x $v6)
               echo ahosts=$(getent ahosts web | cut -d' ' -f1 | sort -u | tr '\n' ' ')
               echo first=$(getent ahosts web | head -1 | cut -d' ' -f1)
               touch {ctl}/stop; wait"#,
            conf = conf.display(),
            lib = lib.display(),
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        90,
    );
    let out = &r.stdout;
    let addrs = field(out, "ADDRESSES=").unwrap_or_else(|| panic!("{out}\n{}", r.stderr));
    let v6: Vec<&str> = addrs
        .split_whitespace()
        .filter(|a| a.contains(':'))
        .collect();
    let v4: Vec<&str> = addrs
        .split_whitespace()
        .filter(|a| a.contains('.'))
        .collect();
    assert_eq!(v6.len(), 1, "the SLAAC address is registered: {out}");
    assert!(v6[0].starts_with("fd"), "{out}");
    assert!(
        !addrs.contains("fe80"),
        "link-local is not registered: {out}"
    );
    assert_eq!(field(out, "aaaa="), Some(v6[0]), "{out}");
    assert_eq!(field(out, "a-over-v6="), Some(v4[0]), "{out}");
    assert_eq!(field(out, "ptr="), Some("web.netspawn."), "{out}");
    let ahosts = field(out, "ahosts=").unwrap_or("");
    assert!(
        ahosts.contains(v6[0]) && ahosts.contains(v4[0]),
        "getent ahosts gives both families: {out}"
    );
    // Never a link-local address first (glibc sorts one ahead of the others:
    // the module leaves them out beside routable addresses).
    let first = field(out, "first=").unwrap_or("");
    assert!(!first.is_empty() && !first.starts_with("fe80"), "{out}");
}

/// getaddrinfo's view of a name: `ADDR SCOPEID` per answer, in order
/// (glibc's order: it sorts the module's answer by RFC 6724).
const GAI: &str = r#"python3 -c 'import socket,sys
for f,_,_,_,a in socket.getaddrinfo(sys.argv[1], None, 0, socket.SOCK_STREAM):
    print("gai=%s %d" % (a[0].split("%")[0], a[3] if f == socket.AF_INET6 else 0))' "#;

/// The module's own answer to `gethostbyname4_r` (what getaddrinfo gets
/// before sorting): `ADDR SCOPEID` per tuple, in order.
const NSS4: &str = r#"python3 -c 'import ctypes,socket,sys
class T(ctypes.Structure): pass
T._fields_ = [("next", ctypes.POINTER(T)), ("name", ctypes.c_char_p), ("family", ctypes.c_int), ("addr", ctypes.c_ubyte * 16), ("scopeid", ctypes.c_uint32)]
lib = ctypes.CDLL("libnss_mymachines.so.2")
pat = ctypes.POINTER(T)(); buf = ctypes.create_string_buffer(4096); e = ctypes.c_int(); h = ctypes.c_int()
rc = lib._nss_mymachines_gethostbyname4_r(sys.argv[1].encode(), ctypes.byref(pat), buf, 4096, ctypes.byref(e), ctypes.byref(h), None)
print("nss4-rc=%d" % rc)
while rc == 1 and pat:
    t = pat.contents; n = 4 if t.family == socket.AF_INET else 16
    print("nss4=%s %d" % (socket.inet_ntop(t.family, bytes(t.addr[:n])), t.scopeid)); pat = t.next' "#;

#[test]
fn link_local_addresses_come_from_nss_with_their_scope_only_for_machines_without_others() {
    let env = TestEnv::new();
    let img = env.busybox("ll");
    let zimg = env.busybox("zl");
    let oimg = env.busybox("lo6");
    let (lib, conf) = env.nss_module("hosts: files mymachines\n");
    let r = env.sh(
        &format!(
            r#"mount --bind {conf} /etc/nsswitch.conf && export LD_LIBRARY_PATH={lib}
               ip link set lo up
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c 'echo guest=$(ip -6 -o addr show dev host0 scope link); {HOLD}' &
               # On a zone the host reaches the machine through the bridge.
               $NETSPAWN -q --network-zone=lab --bind={ctl}:/ctl -D {zimg} /bin/sh -c '{HOLD}' &
               # A machine that configures nothing and takes no RA: only the
               # kernel's link-local address. host0 is up before the payload
               # runs: on a loaded machine the kernel's own solicitation (a
               # second after) can be answered before the payload refuses
               # RAs, so an address it got by then is dropped.
               $NETSPAWN -q -n --network-config=none --bind={ctl}:/ctl -D {oimg} /bin/sh -c 'echo 0 > /proc/sys/net/ipv6/conf/host0/accept_ra && ip -6 addr flush dev host0 scope global && touch /ctl/lo6-bare && echo lo6-up; {HOLD}' &
               for t in $(seq 600); do grep -q '^LINK_LOCAL=' $NETSPAWN_RUN_DIR/machines/ll 2>/dev/null && grep -q '^ADDRESSES=.*:' $NETSPAWN_RUN_DIR/machines/ll && grep -q '^LINK_LOCAL=' $NETSPAWN_RUN_DIR/machines/zl 2>/dev/null && [ -e {ctl}/lo6-bare ] && grep -q '^LINK_LOCAL=' $NETSPAWN_RUN_DIR/machines/lo6 2>/dev/null && ! grep -q '^ADDRESSES=.*:' $NETSPAWN_RUN_DIR/machines/lo6 && break; sleep 0.05; done
               zll=$(sed -n 's/^LINK_LOCAL=//p' $NETSPAWN_RUN_DIR/machines/zl)
               echo zone-ll=$zll vzidx=$(ip -o link show vz-lab | cut -d: -f1)
               ping -c1 -W2 ${{zll%%%*}}%vz-lab >/dev/null && echo PING-ZONE-LL-OK
               grep -E '^(ADDRESSES|LINK_LOCAL)=' $NETSPAWN_RUN_DIR/machines/ll
               echo veidx=$(ip -o link show ve-ll | cut -d: -f1)
               {GAI} ll
               {NSS4} ll
               ll=$(sed -n 's/^LINK_LOCAL=\([^%]*\)%.*/\1/p' $NETSPAWN_RUN_DIR/machines/ll)
               ping -c1 -W2 $ll%ve-ll >/dev/null && echo PING-LL-OK
               echo lo6-ll=$(sed -n 's/^LINK_LOCAL=//p' $NETSPAWN_RUN_DIR/machines/lo6) lo6idx=$(ip -o link show ve-lo6 | cut -d: -f1)
               echo lo6-addresses=$(sed -n 's/^ADDRESSES=//p' $NETSPAWN_RUN_DIR/machines/lo6)
               {GAI} lo6 | sed 's/^gai=/lo6-gai=/'
               {NSS4} lo6 | sed 's/^nss4/lo6-nss4/'
               getent hosts lo6; echo lo6-hosts-rc=$?
               ping -c1 -W2 lo6 >/dev/null && echo PING-LO6-BY-NAME-OK
               touch {ctl}/stop; wait
               {GAI} ll; echo stopped-rc=$?"#,
            conf = conf.display(),
            lib = lib.display(),
            img = img.display(),
            zimg = zimg.display(),
            oimg = oimg.display(),
            ctl = env.hold_dir().display()
        ),
        90,
    );
    let out = &r.stdout;
    let ll = field(out, "LINK_LOCAL=").unwrap_or_else(|| panic!("{out}\n{}", r.stderr));
    let veidx = field(out, "veidx=").unwrap_or("?");
    let (addr, scope) = ll.split_once('%').expect("ADDR%IFINDEX");
    assert_eq!(
        scope, veidx,
        "the scope is ve-ll's index on the host: {out}"
    );
    assert!(addr.starts_with("fe80:"), "{out}");
    assert!(
        field(out, "guest=").is_some_and(|g| g.contains(&format!("{addr}/64"))),
        "the guest's own link-local address: {out}"
    );
    assert!(
        !field(out, "ADDRESSES=").unwrap_or("fe80").contains("fe80"),
        "routable addresses are kept apart: {out}"
    );
    let pairs = |key: &str| -> Vec<(&str, &str)> {
        out.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|l| l.split_once(' '))
            .collect()
    };
    // Beside routable addresses the link-local one is never answered: glibc
    // would sort it first.
    let (gai, nss4) = (pairs("gai="), pairs("nss4="));
    assert_eq!(nss4.len(), 2, "IPv4 and ULA, no link-local: {out}");
    for list in [&gai, &nss4] {
        assert!(
            !list.is_empty()
                && list
                    .iter()
                    .all(|(a, s)| !a.starts_with("fe80") && *s == "0"),
            "no link-local answer, no scope: {out}"
        );
    }
    assert!(out.contains("PING-LL-OK"), "{out}\n{}", r.stderr);
    let zone = field(out, "zone-ll=").unwrap_or("");
    let (zll, vzidx) = zone.split_once(" vzidx=").unwrap_or(("", "?"));
    assert!(
        zll.starts_with("fe80:") && zll.ends_with(&format!("%{vzidx}")),
        "a zone member's link-local address is scoped to the bridge: {out}"
    );
    assert!(out.contains("PING-ZONE-LL-OK"), "{out}\n{}", r.stderr);
    // A machine with only its link-local address: answered, with the scope,
    // to getaddrinfo; never to a hostent call (it has no scope).
    assert!(out.contains("lo6-up"), "{out}\n{}", r.stderr);
    let lo6 = field(out, "lo6-ll=").unwrap_or("");
    let (lo6_ll, lo6idx) = lo6.split_once(" lo6idx=").unwrap_or(("", "?"));
    let (lo6_addr, lo6_scope) = lo6_ll.split_once('%').unwrap_or(("", ""));
    assert!(
        lo6_addr.starts_with("fe80:") && lo6_scope == lo6idx,
        "{out}"
    );
    assert_eq!(field(out, "lo6-addresses="), Some(""), "{out}");
    for key in ["lo6-gai=", "lo6-nss4="] {
        assert_eq!(pairs(key), vec![(lo6_addr, lo6idx)], "{key} {out}");
    }
    assert!(
        field(out, "lo6-hosts-rc=").is_some_and(|rc| rc != "0"),
        "{out}"
    );
    assert!(out.contains("PING-LO6-BY-NAME-OK"), "{out}\n{}", r.stderr);
    assert!(
        !out.contains("stopped-rc=0"),
        "a stopped machine is gone: {out}"
    );
}

/// A busybox image serving `/www` on port 80 (and `/cgi-bin/ip`, which
/// answers the client's address) and a second server on port 81 that is
/// never published.
fn web_image(env: &TestEnv, name: &str) -> PathBuf {
    let img = env.busybox(name);
    std::fs::create_dir_all(img.join("www/cgi-bin")).unwrap();
    std::fs::write(img.join("www/index.html"), format!("hello from {name}\n")).unwrap();
    let cgi = img.join("www/cgi-bin/ip");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"client=$REMOTE_ADDR\"\n",
    )
    .unwrap();
    let st = Command::new("chmod").arg("755").arg(&cgi).status().unwrap();
    assert!(st.success());
    img
}

#[test]
fn ipv6_masquerade_forwards_hairpin_and_no_unpublished_port() {
    let env = TestEnv::new();
    let img = web_image(&env, "www6");
    let img2 = env.busybox("other6");
    // The internet: a namespace behind up0 with 2001:db8:1::2 and no route
    // to the containers' unique local addresses.
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               unshare --net sleep 120 & inet=$!
               for t in $(seq 100); do [ "$(readlink /proc/$inet/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.05; done
               ip link add up0 type veth peer name up1 netns /proc/$inet/ns/net
               ip addr add 2001:db8:1::1/64 dev up0 nodad && ip link set up0 up
               nsenter --net=/proc/$inet/ns/net sh -c 'ip link set lo up; ip addr add 2001:db8:1::2/64 dev up1 nodad; ip link set up1 up'
               ip -6 route add default via 2001:db8:1::2
               # The host forwards IPv6 on its uplink already (netd adds no guard of its
               # own there): unpublished ports must stay unreachable all the same.
               sysctl -qw net.ipv6.conf.up0.force_forwarding=1
               get() {{ python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())" "$1" 2>/dev/null; }}
               inet_get() {{ nsenter --net=/proc/$inet/ns/net python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())" "$1" 2>/dev/null; }}
               $NETSPAWN -q -n -p 8080:80 --bind={ctl}:/ctl -D {img} /bin/sh -c 'httpd -p 81 -h /www; httpd -f -p 80 -h /www & {HOLD}; kill %1' &
               for t in $(seq 300); do out=$(inet_get "http://[2001:db8:1::1]:8080/cgi-bin/ip") && [ -n "$out" ] && break; sleep 0.1; done
               echo from-internet=$out
               echo from-host=$(get "http://[2001:db8:1::1]:8080/index.html")
               c6=$(grep ^ADDRESSES= $NETSPAWN_RUN_DIR/machines/www6 | grep -o 'fd[0-9a-f:]*' | head -1)
               own=$(ip -6 -o addr show dev ve-www6 scope global | grep -o 'fd[0-9a-f:]*::1')
               prefix=${{own%::1}}
               leader=$(grep ^LEADER= $NETSPAWN_RUN_DIR/machines/www6 | cut -d= -f2)
               echo c6=$c6
               $NETSPAWNCTL shell www6 /bin/sh -c 'ping6 -c1 -W3 2001:db8:1::2 >/dev/null && echo MASQ-OK; printf "GET /index.html HTTP/1.0\r\n\r\n" | nc -w 3 2001:db8:1::1 8080 | tail -1 | sed s/^/hairpin=/'
               # The internet learns a route to the containers: still only the published port.
               nsenter --net=/proc/$inet/ns/net ip -6 route add $prefix::/64 via 2001:db8:1::1
               echo unpublished=$(inet_get "http://[$c6]:81/index.html")
               echo direct=$(inet_get "http://[$c6]:80/index.html")
               # The same port for another machine: one clear error.
               $NETSPAWN -q -n -p 8080:80 -D {img2} /bin/true; echo busy-rc=$?
               # The machine's address changes: the forward follows it.
               # (No SLAAC address comes back with the next advertisement.)
               new=$prefix::99
               nsenter --net=/proc/$leader/ns/net sh -c "sysctl -qw net.ipv6.conf.host0.autoconf=0 && ip -6 addr add $new/64 dev host0 nodad && ip -6 addr del $c6/64 dev host0"
               for t in $(seq 300); do grep -q "^ADDRESSES=.*$new" $NETSPAWN_RUN_DIR/machines/www6 && ! grep -q "$c6" $NETSPAWN_RUN_DIR/machines/www6 && break; sleep 0.1; done
               for t in $(seq 300); do out=$(inet_get "http://[2001:db8:1::1]:8080/index.html") && [ -n "$out" ] && break; sleep 0.1; done
               echo moved=$out
               touch {ctl}/stop; wait %2
               echo after=$(inet_get "http://[2001:db8:1::1]:8080/index.html")
               kill $inet"#,
            img = img.display(),
            img2 = img2.display(),
            ctl = env.hold_dir().display()
        ),
        180,
    );
    let out = &r.stdout;
    assert!(
        field(out, "from-internet=").is_some_and(|l| l.contains("2001:db8:1::2")),
        "reached over IPv6, the client's address preserved: {out}\n{}",
        r.stderr
    );
    assert_eq!(field(out, "from-host="), Some("hello from www6"), "{out}");
    assert!(out.contains("MASQ-OK"), "IPv6 masquerade: {out}");
    assert_eq!(
        field(out, "hairpin="),
        Some("hello from www6"),
        "hairpin: {out}"
    );
    assert_eq!(field(out, "unpublished="), Some(""), "{out}");
    assert_eq!(field(out, "direct="), Some(""), "{out}");
    assert!(out.contains("busy-rc=1"), "{out}");
    assert!(
        r.stderr
            .contains("port 8080/tcp is already forwarded to machine www6"),
        "{}",
        r.stderr
    );
    assert_eq!(field(out, "moved="), Some("hello from www6"), "{out}");
    assert_eq!(
        field(out, "after="),
        Some(""),
        "rules go with the machine: {out}"
    );
}

/// A UDP echo server for busybox images (which have none): answers each
/// datagram with `echo:` and the datagram, on IPv4 and IPv6.
const UDP_ECHO: &str = r#"
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET6, SOCK_DGRAM, 0), off = 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(atoi(argv[1]));
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (bind(s, (struct sockaddr *)&a, sizeof a)) return 1;
    for (;;) {
        char b[2048];
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, b + 5, sizeof b - 5, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) continue;
        memcpy(b, "echo:", 5);
        sendto(s, b, n + 5, 0, (struct sockaddr *)&from, fl);
    }
}
"#;

#[test]
fn published_ports_are_reachable_from_the_hosts_own_ipv6_loopback() {
    let env = TestEnv::new();
    let img = web_image(&env, "lo6");
    let img2 = env.busybox("lo6b");
    let echo = compile_static_c(&env, "udpecho", UDP_ECHO);
    std::fs::copy(&echo, img.join("udpecho")).unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               get() {{ python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())" "$1" 2>/dev/null; }}
               udp() {{ python3 -c 'import socket,sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(1)
s.sendto(sys.argv[1].encode(), ("::1", 5300))
try: print(s.recv(100).decode())
except OSError: print("")' "$1"; }}
               listening() {{ ss -Htuln "( sport = :8080 or sport = :5300 )" | grep -c '\[::1\]'; }}
               $NETSPAWN -q -n -p 8080:80 -p udp:5300:5300 --bind={ctl}:/ctl -D {img} /bin/sh -c 'httpd -f -p 80 -h /www & /udpecho 5300 & {HOLD}; kill %1 %2' &
               for t in $(seq 300); do out=$(get "http://[::1]:8080/cgi-bin/ip") && [ -n "$out" ] && break; sleep 0.1; done
               echo tcp=$out
               for t in $(seq 30); do u=$(udp one) && [ -n "$u" ] && break; done
               echo udp=$u
               echo udp2=$(udp two)
               echo udp3=$(udp three)
               echo listening=$(listening)
               echo host4=$(ip -4 -o addr show dev ve-lo6 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
               # A port something else holds on [::1]: one clear error, nothing made.
               python3 -c 'import socket,time
s = socket.socket(socket.AF_INET6); s.bind(("::1", 8090)); s.listen()
open("{ctl}/held", "w").close(); time.sleep(60)' & holder=$!
               for t in $(seq 200); do [ -e {ctl}/held ] && break; sleep 0.05; done
               $NETSPAWN -q -n -p 8090:80 -D {img2} /bin/true 2>{ctl}/inuse.err; echo inuse-rc=$?
               echo inuse-err=$(cat {ctl}/inuse.err)
               for t in $(seq 100); do ip link show ve-lo6b >/dev/null 2>&1 || break; sleep 0.05; done
               echo inuse-link=$(ip -o link show ve-lo6b 2>/dev/null | wc -l)
               echo inuse-entry=$(ls $NETSPAWN_RUN_DIR/machines/ | grep -c lo6b)
               echo inuse-rule=$(nft list table inet netspawn | grep -c 8090)
               kill $holder
               touch {ctl}/stop; wait %1
               for t in $(seq 100); do [ "$(listening)" = 0 ] && break; sleep 0.05; done
               echo after-listening=$(listening)
               echo after-tcp=$(get "http://[::1]:8080/index.html")
               echo after-udp=$(udp gone)"#,
            img = img.display(),
            img2 = img2.display(),
            ctl = env.hold_dir().display()
        ),
        120,
    );
    let out = &r.stdout;
    let host4 = field(out, "host4=").unwrap_or("?");
    // busybox httpd writes an IPv4 client as [::ffff:A.B.C.D].
    assert!(
        field(out, "tcp=").is_some_and(|c| c.starts_with("client=") && c.contains(host4)),
        "TCP from [::1] reaches the machine, from the host's address on its link: {out}\n{}",
        r.stderr
    );
    assert_eq!(field(out, "udp="), Some("echo:one"), "{out}\n{}", r.stderr);
    assert_eq!(field(out, "udp2="), Some("echo:two"), "{out}");
    assert_eq!(field(out, "udp3="), Some("echo:three"), "{out}");
    assert_eq!(field(out, "listening="), Some("2"), "{out}");
    assert_eq!(field(out, "inuse-rc="), Some("1"), "{out}");
    let err = field(out, "inuse-err=").unwrap_or("");
    assert!(
        err.contains("port tcp:8090 on [::1] is already in use") && !err.contains('\n'),
        "{out}"
    );
    assert_eq!(field(out, "inuse-link="), Some("0"), "{out}");
    assert_eq!(field(out, "inuse-entry="), Some("0"), "{out}");
    assert_eq!(field(out, "inuse-rule="), Some("0"), "{out}");
    assert_eq!(
        field(out, "after-listening="),
        Some("0"),
        "gone with the machine: {out}"
    );
    assert_eq!(field(out, "after-tcp="), Some(""), "{out}");
    assert_eq!(field(out, "after-udp="), Some(""), "{out}");
}

#[test]
fn bad_ipv6_input_is_one_clear_error_and_leaves_nothing() {
    let env = TestEnv::new();
    let img = env.busybox("badsix");
    // An invalid IPv6 key: refused when netd loads its templates.
    let bad = env.dir.join("bad-network");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/28\nDHCPServer=yes\n\
         IPv6SendRA=yes\n[IPv6Prefix]\nPrefix=fe80::/64\n",
    )
    .unwrap();
    // A prefix that collides with a route the host has.
    let clash = env.dir.join("clash-network");
    std::fs::create_dir_all(&clash).unwrap();
    std::fs::write(
        clash.join("80-container-ve.network"),
        "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/28\nDHCPServer=yes\n\
         IPv6SendRA=yes\n[IPv6Prefix]\nPrefix=fd42:1:2:3::/64\n",
    )
    .unwrap();
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               NETSPAWN_NETWORK_PATH={bad} $NETSPAWN -q -n -D {img} /bin/true; echo bad-rc=$?
               echo bad-links=$(ip -o link | wc -l)
               ip link add up0 type veth peer name up1 && ip link set up0 up
               ip -6 route add fd42::/16 dev up0
               NETSPAWN_NETWORK_PATH={clash} $NETSPAWN -q -n -D {img} /bin/true; echo clash-rc=$?
               echo clash-links=$(ip -o link | grep -c ve-)
               echo registry=$(ls $NETSPAWN_RUN_DIR/machines | wc -l)"#,
            bad = bad.display(),
            clash = clash.display(),
            img = img.display()
        ),
        90,
    );
    let out = &r.stdout;
    let errs: Vec<&str> = r.stderr.lines().collect();
    assert!(out.contains("bad-rc=1"), "{out}\n{}", r.stderr);
    assert!(out.contains("bad-links=1\n"), "{out}");
    assert!(
        errs.iter().any(
            |l| l.contains("80-container-ve.network:8:") && l.contains("Invalid Prefix= value")
        ),
        "{}",
        r.stderr
    );
    assert!(out.contains("clash-rc=1"), "{out}\n{}", r.stderr);
    assert!(out.contains("clash-links=0\n"), "{out}");
    assert!(out.contains("registry=0\n"), "{out}");
    assert!(
        errs.iter()
            .any(|l| l.contains("Prefix=fd42:1:2:3::/64 overlaps fd42::/16")),
        "{}",
        r.stderr
    );
    assert_eq!(errs.len(), 2, "one line each: {}", r.stderr);
}

#[test]
fn malformed_router_solicitations_are_dropped_counted_and_survived() {
    if !have("rdisc6") {
        skip(
            "malformed_router_solicitations_are_dropped_counted_and_survived",
            "no rdisc6 (Debian package ndisc6)",
        );
        return;
    }
    let env = TestEnv::new();
    let img = env.busybox("rs");
    // netd by hand in the foreground, its log kept; then a machine whose
    // namespace sends netd broken solicitations and a good one.
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               RUST_LOG=info $(dirname $NETSPAWN)/netspawn-netd --foreground --idle-exit 60 2>$NETSPAWN_STATE_DIR/netd.log &
               for t in $(seq 200); do grep -q "netd ready" $NETSPAWN_STATE_DIR/netd.log 2>/dev/null && break; sleep 0.05; done
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c '{HOLD}' &
               for t in $(seq 600); do [ -e $NETSPAWN_RUN_DIR/machines/rs ] && break; sleep 0.05; done
               leader=$(grep ^LEADER= $NETSPAWN_RUN_DIR/machines/rs | cut -d= -f2)
               nsenter --net=/proc/$leader/ns/net python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"host0")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
idx = socket.if_nametoindex("host0")
bad = [
    b"\x85\x01" + bytes(6),                      # RS with a code other than 0
    b"\x85\x00" + bytes(6) + b"\x01\x00" + bytes(6),  # an option of length 0
    b"\x85\x00" + bytes(6) + b"\x01\x02" + bytes(6),  # an option past the end
    b"\x86\x00" + bytes(6),                      # an RA cut short
]
for b in bad:
    s.sendto(b, ("ff02::2", 0, 0, idx))
PY
               for t in $(seq 200); do grep -q "dropped 4 malformed router discovery" $NETSPAWN_STATE_DIR/netd.log && break; sleep 0.05; done
               nsenter --net=/proc/$leader/ns/net rdisc6 -1 -w 2000 host0 | grep -E "Prefix|Recursive DNS"
               grep -o "dropped [0-9]* malformed router discovery packet(s) so far" $NETSPAWN_STATE_DIR/netd.log | tail -1
               touch {ctl}/stop; wait %2"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        90,
    );
    let out = &r.stdout;
    assert!(
        out.contains("dropped 4 malformed router discovery packet(s) so far"),
        "{out}\n{}",
        r.stderr
    );
    assert!(out.contains(" Prefix "), "netd still answers: {out}");
    assert!(out.contains("Recursive DNS server"), "{out}");
}

#[test]
fn solicitations_within_the_multicast_gap_are_answered_by_unicast() {
    // netd sends all-nodes advertisements at most every 20 ms; a
    // solicitation from a link-local address that comes sooner is answered
    // to that address at once (RFC 4861 6.2.6) instead of when the gap ends.
    // The guest solicits again as soon as each multicast one arrives, so
    // its solicitation falls inside the gap, and looks for an advertisement
    // sent to its own address.
    let env = TestEnv::new();
    let img = env.busybox("uc6");
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c '{HOLD}' &
               for t in $(seq 600); do [ -e $NETSPAWN_RUN_DIR/machines/uc6 ] && break; sleep 0.05; done
               leader=$(grep ^LEADER= $NETSPAWN_RUN_DIR/machines/uc6 | cut -d= -f2)
               nsenter --net=/proc/$leader/ns/net ip -6 -o addr show dev host0 scope link
               nsenter --net=/proc/$leader/ns/net python3 - <<'PY'
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"host0")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
idx = socket.if_nametoindex("host0")
rs = b"\x85\x00" + bytes(6)
seen = []
end = time.time() + 20
s.sendto(rs, ("ff02::2", 0, 0, idx))
while time.time() < end:
    s.settimeout(0.5)
    try:
        data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(20))
    except socket.timeout:
        s.sendto(rs, ("ff02::2", 0, 0, idx))
        continue
    if not data or data[0] != 134:
        continue
    dst = next((socket.inet_ntop(socket.AF_INET6, d[:16]) for l, t, d in anc
                if l == socket.IPPROTO_IPV6 and t == socket.IPV6_PKTINFO), "?")
    seen.append(dst)
    if not dst.startswith("ff"):
        break
    s.sendto(rs, ("ff02::2", 0, 0, idx))
print("seen", " ".join(seen))
PY
               touch {ctl}/stop; wait"#,
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        90,
    );
    let out = &r.stdout;
    let own = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("host0's link-local address: {out}\n{}", r.stderr));
    let seen = field(out, "seen ").unwrap_or_else(|| panic!("{out}\n{}", r.stderr));
    assert!(
        seen.split_whitespace().any(|d| d == own),
        "an advertisement sent to {own}: {out}"
    );
}

fn debian_cache() -> PathBuf {
    std::env::var_os("NETSPAWN_TEST_DEBIAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netspawn-test/debian-bookworm"))
}

#[test]
fn a_booted_debian_guest_takes_its_address_from_our_router_advertisements() {
    let env = TestEnv::new();
    let cache = debian_cache();
    if !cache.join("usr/lib/systemd/systemd").exists() {
        skip(
            "a_booted_debian_guest_takes_its_address_from_our_router_advertisements",
            "no cached Debian image (t060_boot_debian makes it)",
        );
        return;
    }
    let img = env.image_dir().join("deb6");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    // The guest's own systemd-networkd (stock 80-container-host0.network).
    let r = env.sh(
        &format!(
            r#"ip link set lo up
               $NETSPAWN -q -b -n -D {img} >/dev/null 2>&1 &
               for t in $(seq 600); do grep -q '^ADDRESSES=.*fd[0-9a-f]*:' $NETSPAWN_RUN_DIR/machines/deb6 2>/dev/null && break; sleep 0.1; done
               echo host=$(ip -6 -o addr show dev ve-deb6 scope global)
               grep ^ADDRESSES= $NETSPAWN_RUN_DIR/machines/deb6
               $NETSPAWNCTL shell deb6 /bin/sh -c 'for i in $(seq 100); do r=$(ip -6 route show default); [ -n "$r" ] && break; sleep 0.1; done; echo route=$r'
               $NETSPAWNCTL poweroff deb6; wait"#,
            img = img.display()
        ),
        180,
    );
    let out = &r.stdout;
    let host = field(out, "host=")
        .and_then(inet6)
        .unwrap_or_else(|| panic!("{out}\n{}", r.stderr));
    let addrs = field(out, "ADDRESSES=").unwrap_or("");
    let v6 = addrs
        .split_whitespace()
        .find(|a| a.starts_with("fd"))
        .unwrap_or_else(|| panic!("networkd took an address from the RA: {out}"));
    assert_eq!(slash64(v6), slash64(host), "{out}");
    assert!(
        field(out, "route=").is_some_and(|r| r.contains("via fe80::1")),
        "{out}"
    );
}
