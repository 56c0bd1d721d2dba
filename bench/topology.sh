#!/bin/bash
# Topology files (issue 13): `netspawnctl up` and `down` of a lab of N busybox
# machines (ephemeral, -U) on three zones with a router on all three and two
# point-to-point links, against the same machines started as a shell loop of
# `netspawn` calls (in parallel, until every one has its address) and stopped
# with `netspawnctl terminate`, and against podman 4.3 (netavark, private
# storage: `podman run -d --network` 32 at a time on three networks, until
# all have started; `podman rm -f -a`). docker compose is not run (no
# dockerd here). Then
# throughput (iperf3, TCP, one stream) across a lab's point-to-point link
# and across a lab's zone, against a veth pair and a bridge made by hand
# between two bare network namespaces. Everything runs in a network
# namespace of its own. Writes bench/results/topology.{md,json}.
#
# Usage: bench/topology.sh [--sizes 10,50,300] [--rounds N (3)]
#                          [--iperf-secs S (5)] [--no-podman] [--no-build] [--quick]
#   --quick: sizes 10,50, one round, 2 s of iperf3
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES=10,50,300 ROUNDS=3 IPERF_SECS=5 PODMAN=1
inner=0
while (($#)); do
    case $1 in
    __inner) inner=1 ;;
    --sizes) SIZES=${2:?}; shift ;;
    --sizes=*) SIZES=${1#*=} ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --rounds=*) ROUNDS=${1#*=} ;;
    --iperf-secs) IPERF_SECS=${2:?}; shift ;;
    --iperf-secs=*) IPERF_SECS=${1#*=} ;;
    --no-podman) PODMAN=0 ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --quick) SIZES=10,50 ROUNDS=1 IPERF_SECS=2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A lab of N machines: a router on zones a, b, c; two machines p1, p2 on
# point-to-point links from the router; the rest spread over the zones.
lab_file() { # N FILE
    local n=$1 rest=$(($1 - 3)) per
    per=$((rest / 3))
    {
        echo '[lab]'
        echo 'name = "bl"'
        echo '[defaults]'
        echo 'image = "bb"'
        echo '[zones.a]'
        echo '[zones.b]'
        echo '[zones.c]'
        echo '[machines.r]'
        echo 'zones = ["a", "b:eth2", "c:eth3"]'
        echo 'command = "sleep 3600"'
        echo 'addresses = { eth4 = "10.250.0.1/30", eth5 = "10.250.0.5/30" }'
        echo '[machines.p1]'
        echo 'command = "sleep 3600"'
        echo 'addresses = { eth1 = "10.250.0.2/30" }'
        echo '[machines.p2]'
        echo 'command = "sleep 3600"'
        echo 'addresses = { eth1 = "10.250.0.6/30" }'
        local z i cnt
        for i in 0 1 2; do
            z=$(echo a b c | cut -d' ' -f$((i + 1)))
            cnt=$per
            [ $i = 2 ] && cnt=$((rest - 2 * per))
            ((cnt > 0)) || continue
            echo "[machines.h$z]"
            echo "count = $cnt"
            echo "zones = [\"$z\"]"
            echo 'command = "sleep 3600"'
        done
        echo '[[links]]'
        echo 'endpoints = ["r:eth4", "p1:eth1"]'
        echo '[[links]]'
        echo 'endpoints = ["r:eth5", "p2:eth1"]'
    } >"$2"
}

# Machines with an address in the registry.
addressed() { grep -l '^ADDRESSES=.*[0-9]' "$NETSPAWN_RUN_DIR"/machines/* 2>/dev/null | wc -l; }
registered() { ls "$NETSPAWN_RUN_DIR/machines" 2>/dev/null | wc -l; }
# Conditions for wait_for (re-evaluated on every try).
addressed_at_least() { [ "$(addressed)" -ge "$1" ]; }
registry_empty() { [ "$(registered)" = 0 ]; }

wait_for() { # WHAT TIMEOUT_S COMMAND...
    local what=$1 t=$2 end
    shift 2
    end=$(($(now_ms) + t * 1000))
    until "$@"; do
        (($(now_ms) < end)) || die "timed out waiting for $what"
        sleep 0.005
    done
}

# podman with everything of its own under $WORK/podman.
pm() {
    podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" --tmpdir "$WORK/podman/tmp" \
        --network-config-dir "$WORK/podman/net" --events-backend file "$@"
}
pm_run() { # I ZONE
    pm run -d -q --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network "bl$2" \
        --name "pm-$1" localhost/bb /bin/sleep 3600 >/dev/null
}
export -f pm pm_run

# On the way out, whatever the inner run started goes.
inner_cleanup() {
    local rc=$?
    set +e
    if ((rc)); then
        log "loop-1's output: $(tail -3 "$WORK/loop-1.log" 2>/dev/null)"
        log "registry: $(ls "$NETSPAWN_RUN_DIR/machines" 2>/dev/null | tr '\n' ' ')"
        log "loop-1: $(grep -E '^(STATE|ADDRESSES|INTERFACES)=' "$NETSPAWN_RUN_DIR/machines/loop-1" 2>/dev/null | tr '\n' ' ')"
        log "links: $(ip -br link | awk '{print $1}' | tr '\n' ' ')"
    fi
    for f in "$WORK"/lab*.toml "$WORK/tp.toml"; do
        [ -e "$f" ] && "$NETSPAWNCTL" down "$f" >/dev/null 2>&1
    done
    local m
    m=$(ls "$NETSPAWN_RUN_DIR/machines" 2>/dev/null)
    [ -n "$m" ] && "$NETSPAWNCTL" terminate $m >/dev/null 2>&1
    # shellcheck disable=SC2086
    [ -n "${LOOP_PIDS:-}" ] && kill -9 $LOOP_PIDS 2>/dev/null
    jobs -p | xargs -r kill -9 2>/dev/null
    wait 2>/dev/null
    if [ "$PODMAN" = 1 ] && [ -d "$WORK/podman" ]; then
        pm rm -f -a -t 0 >/dev/null 2>&1
        pm network rm -f bla blb blc >/dev/null 2>&1
    fi
    # netd, started by the first launch, goes with the run.
    local f
    for f in "$NETSPAWN_RUN_DIR"/netd-*.pid; do
        [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    exit "$rc"
}

inner_main() {
    trap inner_cleanup EXIT
    local IMG=$NETSPAWN_IMAGE_DIR/bb
    local out=$WORK/samples.txt
    : >"$out"
    export PATH=$(dirname "$NETSPAWNCTL"):$PATH
    ip link set lo up
    local n r t0 t1
    if [ "$PODMAN" = 1 ]; then
        mkdir -p "$WORK/podman"
        tar -C "$IMG" -c . | pm import -q - localhost/bb >/dev/null || die "podman import failed"
        for z in a b c; do pm network create "bl$z" >/dev/null || die "podman network create failed"; done
    fi
    for n in ${SIZES//,/ }; do
        ((n >= 4)) || die "--sizes: at least 4 machines"
        lab_file "$n" "$WORK/lab$n.toml"
        for r in $(seq "$ROUNDS"); do
            # netspawnctl up/down.
            t0=$(now_ms)
            "$NETSPAWNCTL" -q up "$WORK/lab$n.toml" >"$WORK/up.log" 2>&1 || {
                tail "$WORK/up.log" >&2
                die "netspawnctl up of $n machines failed"
            }
            t1=$(now_ms)
            echo "up $n $((t1 - t0))" >>"$out"
            [ "$(registered)" = "$n" ] || die "up: $(registered) machines registered, not $n"
            t0=$(now_ms)
            "$NETSPAWNCTL" down "$WORK/lab$n.toml" || die "netspawnctl down failed"
            t1=$(now_ms)
            echo "down $n $((t1 - t0))" >>"$out"
            [ "$(registered)" = 0 ] || die "down left machines"

            # The shell loop: the same machines on the same zones, no links.
            local i z pids=()
            t0=$(now_ms)
            for i in $(seq "$n"); do
                z=$(echo a b c | cut -d' ' -f$((i % 3 + 1)))
                "$NETSPAWN" -q -U -x --keep-unit --network-zone="bl-$z" -M "loop-$i" -D "$IMG" /bin/sleep 3600 \
                    </dev/null >"$WORK/loop-$i.log" 2>&1 &
                pids+=($!)
            done
            LOOP_PIDS="${pids[*]}"
            wait_for "$n addressed machines" 120 addressed_at_least "$n"
            t1=$(now_ms)
            echo "loop_up $n $((t1 - t0))" >>"$out"
            t0=$(now_ms)
            "$NETSPAWNCTL" terminate $(ls "$NETSPAWN_RUN_DIR/machines")
            wait "${pids[@]}" 2>/dev/null || true
            wait_for "an empty registry" 120 registry_empty
            t1=$(now_ms)
            echo "loop_down $n $((t1 - t0))" >>"$out"
            pids=() LOOP_PIDS=

            if [ "$PODMAN" = 1 ]; then
                t0=$(now_ms)
                for i in $(seq "$n"); do echo "$i $(echo a b c | cut -d' ' -f$((i % 3 + 1)))"; done |
                    xargs -P 32 -L 1 bash -c 'pm_run "$0" "$1"' || die "podman run failed"
                t1=$(now_ms)
                echo "podman_up $n $((t1 - t0))" >>"$out"
                t0=$(now_ms)
                pm rm -f -a -t 0 >/dev/null || die "podman rm failed"
                t1=$(now_ms)
                echo "podman_down $n $((t1 - t0))" >>"$out"
            fi
            log "$n machines, round $r: $(grep " $n " "$out" | tail -$((4 + 2 * PODMAN)) | awk '{printf "%s %s ms; ", $1, $3}')"
        done
    done

    # Throughput.
    cat >"$WORK/tp.toml" <<EOF
[lab]
name = "tp"
[defaults]
image = "bb"
[zones.z]
[machines.a]
command = "sleep 3600"
addresses = { eth1 = "10.251.0.1/24" }
[machines.b]
command = "sleep 3600"
addresses = { eth1 = "10.251.0.2/24" }
[machines.c]
zones = ["z"]
command = "sleep 3600"
addresses = { host0 = "10.252.0.3/24" }
[machines.d]
zones = ["z"]
command = "sleep 3600"
addresses = { host0 = "10.252.0.4/24" }
[[links]]
endpoints = ["a:eth1", "b:eth1"]
EOF
    "$NETSPAWNCTL" -q up "$WORK/tp.toml" || die "up of the throughput lab failed"
    leader() { sed -n 's/^LEADER=//p' "$NETSPAWN_RUN_DIR/machines/$1"; }
    # Two bare namespaces with a veth pair, and two more on a bridge.
    unshare -n sleep 3600 & local ra=$!
    unshare -n sleep 3600 & local rb=$!
    unshare -n sleep 3600 & local rc=$!
    unshare -n sleep 3600 & local rd=$!
    sleep 0.2
    ip link add rawa type veth peer name rawb
    ip link set rawa netns "$ra"; ip link set rawb netns "$rb"
    nsenter --net=/proc/$ra/ns/net sh -c 'ip link set lo up; ip addr add 10.253.0.1/24 dev rawa; ip link set rawa up'
    nsenter --net=/proc/$rb/ns/net sh -c 'ip link set lo up; ip addr add 10.253.0.2/24 dev rawb; ip link set rawb up'
    ip link add rawbr type bridge; ip link set rawbr up
    ip link add rawc type veth peer name rawc-h; ip link set rawc-h master rawbr up; ip link set rawc netns "$rc"
    ip link add rawd type veth peer name rawd-h; ip link set rawd-h master rawbr up; ip link set rawd netns "$rd"
    nsenter --net=/proc/$rc/ns/net sh -c 'ip link set lo up; ip addr add 10.254.0.3/24 dev rawc; ip link set rawc up'
    nsenter --net=/proc/$rd/ns/net sh -c 'ip link set lo up; ip addr add 10.254.0.4/24 dev rawd; ip link set rawd up'
    iperf() { # NAME SERVER_PID CLIENT_PID ADDR
        local k
        for k in $(seq "$ROUNDS"); do
            nsenter --net=/proc/$2/ns/net iperf3 -s -1 -B "$4" >/dev/null 2>&1 &
            local srv=$!
            wait_for "iperf3 server" 30 sh -c "nsenter --net=/proc/$2/ns/net ss -ltn | grep -q ':5201'"
            nsenter --net=/proc/$3/ns/net iperf3 -c "$4" -t "$IPERF_SECS" -J >"$WORK/iperf.json" || die "iperf3 $1 failed"
            wait "$srv"
            "$PY" -c 'import json,sys; print(sys.argv[1], json.load(open(sys.argv[2]))["end"]["sum_received"]["bits_per_second"])' \
                "$1" "$WORK/iperf.json" >>"$WORK/iperf.txt"
        done
    }
    : >"$WORK/iperf.txt"
    iperf lab_link "$(leader tp-b)" "$(leader tp-a)" 10.251.0.2
    iperf raw_veth "$rb" "$ra" 10.253.0.2
    iperf lab_zone "$(leader tp-d)" "$(leader tp-c)" 10.252.0.4
    iperf raw_bridge "$rd" "$rc" 10.254.0.4
    kill "$ra" "$rb" "$rc" "$rd"
    ip link del rawbr
    "$NETSPAWNCTL" down "$WORK/tp.toml" || die "down of the throughput lab failed"
}

if [ "$inner" = 1 ]; then
    inner_main
    exit 0
fi

need_root
ensure_packages python3 busybox-static iperf3 iproute2 util-linux
build_netspawn
setup_sandbox
private_binaries
NETSPAWN=$WORK/bin/netspawn NETSPAWNCTL=$WORK/bin/netspawnctl
export NETSPAWN_RUN_DIR=$WORK/run NETSPAWN_IMAGE_DIR=$WORK/images NETSPAWN_STATE_DIR=$WORK/state
export NETSPAWN_SETTINGS_PATH=$WORK/nspawn
mkdir -p "$NETSPAWN_RUN_DIR" "$NETSPAWN_IMAGE_DIR" "$NETSPAWN_STATE_DIR" "$RESULTS_DIR"
log "making the busybox image"
"$NETSPAWNCTL" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || die "bootstrap busybox failed"

PODMAN_NOTE="not run (--no-podman)"
if [ "$PODMAN" = 1 ]; then
    command -v podman >/dev/null || ensure_packages podman
    PODMAN_NOTE="podman $(podman --version | awk '{print $3}'), netavark, 32 podman run at a time"
    # crun refuses a hybrid host whose cgroup2 lists controllers: hide the list.
    export BENCH_MASK_CG2_CONTROLLERS=1
fi
export NETSPAWN NETSPAWNCTL WORK SIZES ROUNDS IPERF_SECS PODMAN PY

run_isolated unshare -n -- /bin/bash "$0" __inner --sizes "$SIZES" --rounds "$ROUNDS" \
    --iperf-secs "$IPERF_SECS" $([ "$PODMAN" = 1 ] || echo --no-podman)

VERSIONS=$(versions_json "iperf3=iperf3 --version" "kernel=uname -r")
VERSIONS=$(L_V=$VERSIONS L_B=$BIN_ID "$PY" -c 'import json, os; v = json.loads(os.environ["L_V"]); v["binaries"] = os.environ["L_B"]; v["load"] = open("/proc/loadavg").read().split()[0]; print(json.dumps(v))')
L_PODMAN_NOTE=$PODMAN_NOTE L_VERSIONS=$VERSIONS "$PY" - "$WORK/samples.txt" "$WORK/iperf.txt" \
    "$RESULTS_DIR/topology.json" "$RESULTS_DIR/topology.md" <<'EOF'
import json, os, statistics, sys
samples, iperf, out_json, out_md = sys.argv[1:5]
data = {}
for line in open(samples):
    kind, n, ms = line.split()
    data.setdefault(int(n), {}).setdefault(kind, []).append(int(ms))
tp = {}
for line in open(iperf):
    name, bps = line.split()
    tp.setdefault(name, []).append(float(bps))
med = lambda v: statistics.median(v) if v else None
res = {
    "what": "netspawnctl up/down of a lab (3 zones, a router on all three, 2 p2p links, N busybox machines, -U -x) vs a shell loop of netspawn calls (same machines and zones, no links; up = every machine has its address) vs podman run -d on three networks",
    "versions": json.loads(os.environ["L_VERSIONS"]),
    "podman": os.environ["L_PODMAN_NOTE"],
    "sizes": {str(n): {k: {"samples_ms": v, "median_ms": med(v)} for k, v in d.items()} for n, d in sorted(data.items())},
    "throughput_bps": {k: {"samples": v, "median": med(v)} for k, v in tp.items()},
    "targets": "50 up <= 1 s, down <= 0.5 s; 300 up <= 6 s, down <= 3 s; within 1.2x of the shell loop; >= 10x faster than podman/compose; throughput >= 0.95x raw",
}
json.dump(res, open(out_json, "w"), indent=1)
md = ["# Topology files: up/down and throughput", "", res["what"] + ".", "",
      f"Load average at the start: {res['versions'].get('load', '?')} on {os.cpu_count()} CPUs"
      " (other benchmarks and builds may have run at the same time: read the figures as measured on a loaded machine).", "",
      "| machines | up (median ms) | down | shell loop up | loop down | up / loop | up per machine (ms) |",
      "|---:|---:|---:|---:|---:|---:|---:|"]
for n, d in sorted(data.items()):
    up, dn, lu, ld = (med(d.get(k, [])) for k in ("up", "down", "loop_up", "loop_down"))
    ratio = f"{up / lu:.2f}x" if up and lu else "-"
    md.append(f"| {n} | {up:.0f} | {dn:.0f} | {lu:.0f} | {ld:.0f} | {ratio} | {up / n:.1f} |")
pm = [(n, d) for n, d in sorted(data.items()) if "podman_up" in d]
if pm:
    md += ["", "| machines | podman run (median ms) | podman rm -f | netspawnctl up vs podman | down vs rm |", "|---:|---:|---:|---:|---:|"]
    for n, d in pm:
        pu, pd, up, dn = med(d["podman_up"]), med(d["podman_down"]), med(d["up"]), med(d["down"])
        md.append(f"| {n} | {pu:.0f} | {pd:.0f} | {pu / up:.1f}x faster | {pd / dn:.1f}x faster |")
md += ["", "podman: " + res["podman"] + ".",
       "docker compose: not run (no dockerd or compose plugin on this machine).", "",
       "| path | median Gbit/s | vs raw |", "|---|---:|---:|"]
for lab, raw in (("lab_link", "raw_veth"), ("lab_zone", "raw_bridge")):
    for k in (lab, raw):
        if k in tp:
            r = f"{med(tp[lab]) / med(tp[raw]):.2f}x" if k == lab and raw in tp else ""
            md.append(f"| {k} | {med(tp[k]) / 1e9:.2f} | {r} |")
md += ["", "Targets: " + res["targets"] + "."]
open(out_md, "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
