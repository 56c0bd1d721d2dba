#!/bin/bash
# Link-up to a usable IPv6 address in a container, with netd's router
# advertisements against systemd-networkd's (IPv6SendRA=) and radvd's, side
# by side in one run (issue 12). Method and figures: bench/README.md, "IPv6
# link-up"; results in bench/results/ipv6-linkup.{json,md}
# (ipv6-linkup-same-index.{json,md} with --same-index).
#
# Usage: bench/ipv6-linkup.sh [--rounds N (30)] [--warmup N (3)] [--quick] [--no-build]
#                             [--same-index]
#
# Everything runs in a network and mount namespace of the benchmark's own
# (unshare -n -m): three veth pairs, each host side served by one router
# (netspawn-netd on ve-bench as its built-in template says; systemd-networkd,
# started by hand, on nd0; radvd on rv0), each container side (host0) in a
# namespace of its own with the sysctls netspawn gives host0. /run is a
# tmpfs there, /etc/systemd/network and networkd's built-in .network
# directories are replaced by ours, so nothing of the host's is touched.
#
# Interface indices are set explicitly: the two ends of a pair never share
# an index (as on a real host, where a container's host0 is 2 and the host
# side of its veth is not). When they do (--same-index), the kernel takes
# link changes of both ends for those of a device without a lower link and
# handles them as non-urgent: up to a second late (net/core/link_watch.c,
# linkwatch_urgent_event compares ifindex with iflink). Without explicit
# indices, the pair made first in a fresh namespace gets index 2 on both
# sides; that was netd's pair, the "kernel alone: 0.4 s" of older results.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=30 WARMUP=3 NO_BUILD=0 SAME_INDEX=0
if [ "${1:-}" = __inner6 ]; then
    WORK=$2 META=$3 ROUNDS=$4 WARMUP=$5 SAME_INDEX=$6
    set -- __inner6
fi
while [ "${1:-}" != __inner6 ] && (($#)); do
    case $1 in
    --rounds) ROUNDS=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --quick) ROUNDS=5 WARMUP=1 ;;
    --no-build) NO_BUILD=1 ;;
    --same-index) SAME_INDEX=1 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done

inner() {
    # In the benchmark's own network and mount namespaces.
    mount -t tmpfs -o mode=0755,size=16m bench-run /run
    mkdir -p /run/netns /run/systemd/netif/links /run/systemd/netif/leases /run/systemd/netif/lldp
    chown -R systemd-network:systemd-network /run/systemd/netif 2>/dev/null || true
    mkdir -p "$WORK/empty" "$WORK/networkd"
    mount --bind "$WORK/networkd" /etc/systemd/network
    for d in /usr/lib/systemd/network /lib/systemd/network; do
        [ -d "$d" ] && mount --bind "$WORK/empty" "$d"
    done
    # A sysfs of this namespace, read-only: networkd then runs as in a
    # container (no udev to wait for) and sees only our links.
    mount -t sysfs -o ro bench-sys /sys
    ip link set lo up
    # radvd wants a router; netd needs none of it (per-link force_forwarding).
    sysctl -qw net.ipv6.conf.all.forwarding=1
    local r ns i=0 peer
    for r in ve-bench:c-netd nd0:c-nd rv0:c-rv; do
        ns=${r#*:} i=$((i + 1))
        ip netns add "$ns"
        # Host sides 11, 12, 13; container sides 21, 22, 23 (or the same).
        peer=$((SAME_INDEX ? 10 + i : 20 + i))
        ip link add "${r%%:*}" index $((10 + i)) type veth peer name host0 netns "$ns" index "$peer"
        [ "$(ip netns exec "$ns" cat /sys/class/net/host0/ifindex 2>/dev/null ||
            ip netns exec "$ns" ip -o link show host0 | cut -d: -f1)" = "$peer" ] ||
            die "host0 in $ns did not get index $peer"
        ip netns exec "$ns" sh -c 'ip link set lo up
            for k in accept_ra=1 autoconf=1 optimistic_dad=1 use_optimistic=1; do
                echo ${k#*=} > /proc/sys/net/ipv6/conf/host0/${k%=*}
            done'
    done
    ip link set nd0 up
    ip addr add fd00:bbbb:0:3::1/64 dev rv0 nodad
    ip link set rv0 up

    cat >"$WORK/networkd/50-nd0.network" <<'EOF'
[Match]
Name=nd0

[Network]
Address=fd00:bbbb:0:2::1/64
IPv6SendRA=yes

[IPv6SendRA]
DNS=fd00:bbbb:0:2::1

[IPv6Prefix]
Prefix=fd00:bbbb:0:2::/64
EOF
    cat >"$WORK/radvd.conf" <<'EOF'
interface rv0 {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 10;
    AdvSourceLLAddress on;
    prefix fd00:bbbb:0:3::/64 {
        AdvOnLink on;
        AdvAutonomous on;
    };
    RDNSS fd00:bbbb:0:3::1 {
    };
};
EOF
    # Carrier on every pair (networkd configures a link only with one); the
    # samples take the container sides down and up again.
    for ns in c-netd c-nd c-rv; do ip netns exec "$ns" ip link set host0 up; done
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
    trap 'exit 130' INT TERM
    RUST_LOG=warn "$WORK/bin/netspawn-netd" --foreground --idle-exit 0 2>"$WORK/netd.log" &
    pids+=($!)
    SYSTEMD_LOG_LEVEL=${NETWORKD_LOG_LEVEL:-info} /lib/systemd/systemd-networkd 2>"$WORK/networkd.log" &
    pids+=($!)
    radvd -n -C "$WORK/radvd.conf" -p "$WORK/radvd.pid" -m stderr 2>"$WORK/radvd.log" &
    pids+=($!)
    # The routers are ready: netd has configured ve-bench (it sets it up),
    # networkd has its address on nd0 (past DAD), radvd runs.
    local t
    for t in $(seq 300); do
        ip -6 addr show dev ve-bench scope global 2>/dev/null | grep -q inet6 &&
            ip -6 addr show dev nd0 scope global 2>/dev/null | grep -v tentative | grep -q inet6 &&
            [ -s "$WORK/radvd.pid" ] && break
        sleep 0.1
    done
    ip -6 addr show dev ve-bench scope global | grep -q inet6 || die "netd did not configure ve-bench: $(cat "$WORK/netd.log")"
    ip -6 addr show dev nd0 scope global | grep -q inet6 || die "systemd-networkd did not configure nd0: $(cat "$WORK/networkd.log"; ip -6 addr; ip link)"
    [ -s "$WORK/radvd.pid" ] || die "radvd did not start: $(cat "$WORK/radvd.log")"
    sleep 1
    "$PY" "$BENCH_DIR/ipv6_linkup.py" \
        --routers "netspawn-netd=c-netd:host0,systemd-networkd=c-nd:host0,radvd=c-rv:host0" \
        --rounds "$ROUNDS" --warmup "$WARMUP" ${BENCH_VERBOSE:+--verbose} --out "$WORK/ipv6-linkup.json" --meta "$META"
}

if [ "${1:-}" = __inner6 ]; then
    inner
    exit 0
fi

need_root
ensure_packages radvd systemd iproute2 python3
if [ "$NO_BUILD" = 1 ]; then export BENCH_NO_BUILD=1; fi
build_netspawn
WORK=$(mktemp -d -p "${BENCH_TMPDIR:-/var/tmp}" netspawn-bench.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
trap 'exit 130' INT TERM
private_binaries
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
META=$(SAME_INDEX=$SAME_INDEX "$PY" - "$(versions_json "systemd-networkd=/lib/systemd/systemd-networkd --version" "radvd=radvd --version" "kernel=uname -r")" "$BIN_ID" <<'EOF'
import json, os, platform, socket, sys, time
versions = json.loads(sys.argv[1])
print(json.dumps({
    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    "machine": {"hostname": socket.gethostname(), "cores": os.cpu_count(),
                "kernel": platform.release()},
    "versions": versions,
    "binaries": sys.argv[2],
    "same_index": os.environ.get("SAME_INDEX") == "1",
    "method": "three veth pairs in the benchmark's own network namespace, each served by one "
              "router (netspawn-netd with its built-in ve template, systemd-networkd started by "
              "hand with IPv6SendRA=yes and an [IPv6Prefix], radvd with MinRtrAdvInterval 3); "
              "the container side in a namespace of its own with optimistic DAD allowed. A "
              "sample: the container side goes down (its SLAAC address goes), 150 ms pass, then "
              "from the moment it is set up again until /proc/net/if_inet6 lists a usable "
              "(not tentative, or optimistic) global address on it. Each round runs every "
              "router once in a seeded random order. The two ends of each pair have "
              + ("the same interface index (the kernel's link watch then handles their "
                 "changes as non-urgent)." if os.environ.get("SAME_INDEX") == "1" else
                 "different interface indices (host sides 11-13, container sides 21-23)."),
}))
EOF
)
log "ipv6-linkup: $ROUNDS rounds (+$WARMUP warm-up) of netspawn-netd, systemd-networkd, radvd"
unshare -n -m --propagation private -- /bin/bash "$0" __inner6 "$WORK" "$META" "$ROUNDS" "$WARMUP" "$SAME_INDEX"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$RESULTS_DIR"
OUT=ipv6-linkup
[ "$SAME_INDEX" = 1 ] && OUT=ipv6-linkup-same-index
"$PY" - "$WORK/ipv6-linkup.json" "$RESULTS_DIR/$OUT.json" "$RESULTS_DIR/$OUT.md" "$load_start" "$load_end" <<'EOF'
import json, sys
src, dst, md, l0, l1 = sys.argv[1:6]
d = json.load(open(src))
for r in d.values():
    r["machine"]["loadavg_start"] = [float(x) for x in l0.split()]
    r["machine"]["loadavg_end"] = [float(x) for x in l1.split()]
json.dump(d, open(dst, "w"), indent=1)
with open(md, "w") as f:
    f.write("# Link-up to a usable IPv6 address\n\n")
    for mode, r in d.items():
        f.write(f"## {r['benchmark']}\n\n{r['date']}, {r['rounds']} rounds, load average "
                f"{l0} at the start, {l1} at the end.\n\n")
        f.write("| router | median | p90 | min | ratio to netspawn-netd | failures |\n|---|---|---|---|---|---|\n")
        for n, s in r["stats"].items():
            ratio = r["ratios_of_medians"][f"vs_{r['baseline']}"][n]
            f.write(f"| {n} | {s.get('median_ms')} ms | {s.get('p90_ms')} ms | {s.get('min_ms')} ms | "
                    f"{ratio}x | {r['failures'][n]} |\n")
        f.write("\n")
    f.write(f"Method: {next(iter(d.values()))['method']}\n")
print(open(md).read())
EOF
