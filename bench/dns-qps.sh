#!/bin/bash
# A and AAAA queries per second for a machine name (issue 12): netd, dnsmasq
# and aardvark-dns side by side in one run, at 1 and 4 clients x 10 and 100
# queries in flight, measured with dnsload (crates/netd/examples/dnsload.rs:
# a fixed window per client, sendmmsg/recvmmsg), and dnsload checked against
# dnsperf at 100 in flight (where dnsperf does not stall).
#
# Everything runs in a private network namespace: netd in the foreground
# serving a veth (its answer for `web` comes from a registry entry of a live
# process: 10.0.0.5 and fd00::5), dnsmasq on 127.0.0.2 (--host-record), and
# aardvark-dns on 127.0.0.3 (a network file listing `web` with the client's
# address, as aardvark-dns answers only its containers). The clients run in
# the same namespace (netd answers queries that arrive over loopback).
#
# Usage: bench/dns-qps.sh [--secs S] [--reps N] [--out FILE]   (root)
#   needs target/release/netspawn-netd and target/release/examples/dnsload
#   (cargo build --release -p netspawn-netd --bins --example dnsload).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=3 REPS=1 OUT=""
while (($#)); do
    case $1 in
    --secs) SECS=${2:?}; shift ;;
    --reps) REPS=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
NETD=${NETD:-$REPO/target/release/netspawn-netd}
LOAD=${DNSLOAD:-$REPO/target/release/examples/dnsload}
AARDVARK=/usr/lib/podman/aardvark-dns
for x in "$NETD" "$LOAD" "$AARDVARK"; do [ -x "$x" ] || { echo "missing $x" >&2; exit 1; }; done
for c in dnsmasq dnsperf dig; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }

if [ -z "${DNS_QPS_INNER:-}" ]; then
    exec env DNS_QPS_INNER=1 unshare -n -m --propagation private "$0" --secs "$SECS" --reps "$REPS" ${OUT:+--out "$OUT"}
fi

WORK=$(mktemp -d /tmp/netd-qps.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$WORK/aardvark/aardvark.pid" ] && kill "$(cat "$WORK/aardvark/aardvark.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip link set lo up
ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true
mkdir -p "$WORK/run/machines" "$WORK/state" "$WORK/aardvark"
echo "nameserver 127.0.0.99" >"$WORK/upstream.conf"

# The machine `web`: a registry entry of a live process.
sleep 100000 & KEEPER=$!; PIDS+=($KEEPER)
START=$(sed 's/.*) //' /proc/$KEEPER/stat | cut -d' ' -f20)
printf 'NAME=web\nLAUNCHER=%s\nLAUNCHER_START=%s\nADDRESSES=10.0.0.5 fd00::5\n' $KEEPER "$START" >"$WORK/run/machines/web"

NETSPAWN_RUN_DIR=$WORK/run NETSPAWN_STATE_DIR=$WORK/state \
    NETSPAWN_NETWORK_PATH=$REPO/network-templates \
    NETSPAWN_UPSTREAM_RESOLV_CONF=$WORK/upstream.conf \
    RUST_LOG=warn "$NETD" --foreground --idle-exit 0 2>"$WORK/netd.log" & PIDS+=($!)
sleep 0.5
ip link add ve-qps type veth peer name qps-peer
ip link set qps-peer up
ip link set ve-qps up
GW=""
for _ in $(seq 100); do
    GW=$(ip -4 -o addr show ve-qps | grep -o 'inet [0-9.]*' | cut -d' ' -f2 || true)
    [ -n "$GW" ] && break
    sleep 0.1
done
[ -n "$GW" ] || { cat "$WORK/netd.log"; echo "netd gave ve-qps no address" >&2; exit 1; }

dnsmasq --no-daemon --conf-file=/dev/null --bind-interfaces --listen-address=127.0.0.2 \
    --port=53 --no-resolv --no-hosts --host-record=web,10.0.0.5,fd00::5 --pid-file= \
    2>"$WORK/dnsmasq.log" & PIDS+=($!)
# aardvark-dns: one network `bench` with gateway 127.0.0.3; `web` is the
# client's own address (aardvark-dns answers containers of the network only).
ip addr add 127.0.0.3/8 dev lo 2>/dev/null || true
printf '127.0.0.3\nc1 127.0.0.1 fd00::5 web\n' >"$WORK/aardvark/bench"
"$AARDVARK" --config "$WORK/aardvark" -p 53 run >"$WORK/aardvark.log" 2>&1 || true

declare -A SRV=([netd]=$GW [dnsmasq]=127.0.0.2 [aardvark]=127.0.0.3)
for s in netd dnsmasq aardvark; do
    for _ in $(seq 100); do
        [ -n "$(dig +short +time=1 +tries=1 @"${SRV[$s]}" web A)" ] && break
        sleep 0.1
    done
    echo "$s: web A = $(dig +short +time=1 +tries=1 @"${SRV[$s]}" web A | tr '\n' ' ') AAAA = $(dig +short +time=1 +tries=1 @"${SRV[$s]}" web AAAA | tr '\n' ' ')"
done

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average at start: $LOADAVG"
RESULTS="$WORK/results.jsonl"
for rep in $(seq "$REPS"); do
    for t in A AAAA; do
        for c in 1 4; do
            for q in 10 100; do
                for s in netd dnsmasq aardvark; do
                    r=$("$LOAD" "${SRV[$s]}:53" web "$t" "$c" "$q" "$SECS")
                    echo "{\"tool\": \"dnsload\", \"server\": \"$s\", \"type\": \"$t\", \"clients\": $c, \"inflight\": $q, \"rep\": $rep, \"r\": $r}" >>"$RESULTS"
                    printf '%-8s %-4s -c%d -q%-3d %s\n' "$s" "$t" "$c" "$q" "$r"
                done
            done
        done
    done
done
# dnsload checked against dnsperf where dnsperf does not stall: 100 in flight.
for t in A AAAA; do
    printf 'web %s\n' "$t" >"$WORK/q-$t"
    for c in 1 4; do
        for s in netd dnsmasq aardvark; do
            qps=$(dnsperf -s "${SRV[$s]}" -d "$WORK/q-$t" -c "$c" -q 100 -l "$SECS" 2>/dev/null |
                awk '/Queries per second/ {print $4}')
            echo "{\"tool\": \"dnsperf\", \"server\": \"$s\", \"type\": \"$t\", \"clients\": $c, \"inflight\": 100, \"qps\": ${qps:-0}}" >>"$RESULTS"
            printf 'dnsperf %-8s %-4s -c%d -q100 %s QPS\n' "$s" "$t" "$c" "${qps:-?}"
        done
    done
done
if [ -n "$OUT" ]; then
    python3 - "$RESULTS" "$OUT" "$LOADAVG" "$SECS" <<'PY'
import json, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump({"date": datetime.datetime.utcnow().isoformat() + "Z", "load_average_at_start": sys.argv[3],
           "secs": float(sys.argv[4]), "rows": rows}, open(sys.argv[2], "w"), indent=1)
PY
fi
