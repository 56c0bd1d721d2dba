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
# Usage: bench/dns-qps.sh [--secs S] [--reps N] [--quick] [--no-build]   (root)
#   --secs S    length of each measurement (default 5)
#   --reps N    rounds over every cell, interleaved (default 3); medians reported
#   --quick     --secs 1 --reps 1
#   --no-build  use target/release/netspawn-netd and target/release/examples/dnsload as they are
# Writes bench/results/dns-qps.json (every sample) and dns-qps.md (medians, ratios).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SECS=5 REPS=3
while (($#)); do
    case $1 in
    --secs) SECS=${2:?}; shift ;;
    --reps) REPS=${2:?}; shift ;;
    --quick) SECS=1 REPS=1 ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
need_root
if [ -z "${DNS_QPS_INNER:-}" ]; then
    ensure_packages python3 iproute2 util-linux dnsmasq-base aardvark-dns dnsperf bind9-dnsutils
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
        log "building netd and dnsload: cargo build --release -p netspawn-netd --bins --example dnsload"
        (cd "$REPO_DIR" && cargo build --release --quiet -p netspawn-netd --bins --example dnsload) ||
            die "cargo build failed"
    fi
    exec env DNS_QPS_INNER=1 BENCH_NO_BUILD=1 unshare -n -m --propagation private "$0" --secs "$SECS" --reps "$REPS"
fi
TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}
NETD=$TARGET/release/netspawn-netd
LOAD=$TARGET/release/examples/dnsload
AARDVARK=/usr/lib/podman/aardvark-dns
for x in "$NETD" "$LOAD" "$AARDVARK"; do [ -x "$x" ] || die "missing $x"; done
REPO=$REPO_DIR
OUT=$RESULTS_DIR/dns-qps.json

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
    # dnsload checked against dnsperf where dnsperf does not stall: 100 in flight.
    for t in A AAAA; do
        printf 'web %s\n' "$t" >"$WORK/q-$t"
        for c in 1 4; do
            for s in netd dnsmasq aardvark; do
                qps=$(dnsperf -s "${SRV[$s]}" -d "$WORK/q-$t" -c "$c" -q 100 -l "$SECS" 2>/dev/null |
                    awk '/Queries per second/ {print $4}')
                echo "{\"tool\": \"dnsperf\", \"server\": \"$s\", \"type\": \"$t\", \"clients\": $c, \"inflight\": 100, \"rep\": $rep, \"qps\": ${qps:-0}}" >>"$RESULTS"
                printf 'dnsperf %-8s %-4s -c%d -q100 %s QPS\n' "$s" "$t" "$c" "${qps:-?}"
            done
        done
    done
done
LOADEND=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$RESULTS_DIR"
"$PY" - "$RESULTS" "$OUT" "$LOADAVG" "$LOADEND" "$SECS" "$REPS" <<'PY'
import datetime, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = sys.argv[2]
doc = {"benchmark": "dns-qps", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
       "load_average_at_start": sys.argv[3], "load_average_at_end": sys.argv[4],
       "secs": float(sys.argv[5]), "reps": int(sys.argv[6]), "rows": rows}
json.dump(doc, open(out, "w"), indent=1)
med = {}
for r in rows:
    q = r["r"]["qps"] if r["tool"] == "dnsload" else r["qps"]
    med.setdefault((r["tool"], r["type"], r["clients"], r["inflight"], r["server"]), []).append(q)
lines = [f"# DNS QPS: netd, dnsmasq, aardvark-dns ({doc['date'][:16]} UTC)", "",
         f"Median QPS of {doc['reps']} x {doc['secs']:g} s per cell, `web` A and AAAA; load average "
         f"{doc['load_average_at_start']} at start, {doc['load_average_at_end']} at end (2 cores).", "",
         "| tool | type | clients | in flight | netd | dnsmasq | aardvark-dns | netd/dnsmasq | netd/aardvark |",
         "|---|---|---|---|---|---|---|---|---|"]
for (tool, t, c, q, s) in sorted(k for k in med if k[4] == "netd"):
    m = {srv: statistics.median(med.get((tool, t, c, q, srv), [0])) for srv in ("netd", "dnsmasq", "aardvark")}
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
    lines.append(f"| {tool} | {t} | {c} | {q} | {m['netd']:.0f} | {m['dnsmasq']:.0f} | {m['aardvark']:.0f} | "
                 f"{ratio(m['netd'], m['dnsmasq'])} | {ratio(m['netd'], m['aardvark'])} |")
open(out[:-5] + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
