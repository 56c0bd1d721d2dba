#!/bin/bash
# Before/after: two builds of netspawn side by side in one interleaved run, so
# that a refactoring can show it costs nothing (issue 8: "the benchmarks stay
# within noise"). Each round launches, in a random order:
#   true  — `netspawn -q --register=no -D IMG /bin/true` (host network)
#   veth  — `netspawn -q -n -D IMG /bin/true` (ve- link, netd, DHCP for host0)
#   zone  — `netspawn -q --network-zone=ab -D IMG /bin/true`
# for the BEFORE and the AFTER build. Each build gets its own network namespace
# (made here, removed at exit) and its own run/state directories, so the two
# netds never meet; the namespace is entered with nsenter for both, so the
# wrapper's cost is the same on both sides. Ratios are after/before medians.
#
#   private — `netspawn -q --register=no --private-network` (netlaunch.sh's floor)
#   none  — `netspawn -q -n --network-config=none` (a veth, host0 left bare)
# (all of them `--read-only`, as in netlaunch.sh), every sample 50 ms after
# the last one ended (a launch's teardown runs after its launcher exits).
#
# Usage: bench/ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [--runs N (100)] [--warmup N (5)] [--name NAME (ab)]
#   *_BIN_DIR: a directory with netspawn, netspawnctl and netspawn-netd (release builds).
# Writes bench/results/NAME.{md,json}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# >= 2)) || die "usage: bench/ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [--runs N] [--warmup N]"
BEFORE=$(realpath "$1") AFTER=$(realpath "$2")
shift 2
RUNS=100 WARMUP=5 NAME=ab
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --name) NAME=${2:?}; shift ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "--runs/--warmup need a number"
[[ $NAME =~ ^[a-z0-9-]+$ ]] || die "--name takes lower-case letters, digits and dashes"
for d in "$BEFORE" "$AFTER"; do
    for b in netspawn netspawnctl netspawn-netd; do [ -x "$d/$b" ] || die "missing $d/$b"; done
done

need_root
ensure_packages python3 busybox-static util-linux iproute2 nftables
setup_sandbox
NSS=()
cleanup_ab() {
    local n
    set +e  # every step is attempted: a process gone already is no failure
    for n in "${NSS[@]}"; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$n" 2>/dev/null
    done
    cleanup_sandbox
}
trap cleanup_ab EXIT

"$BEFORE/netspawnctl" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || die "netspawnctl bootstrap busybox failed"
IMG=$NETSPAWN_IMAGE_DIR/bb
mkdir -p "$WORK/logs" "$RESULTS_DIR"

# One namespace and one set of directories per side.
for side in before after; do
    ns=netspawn-ab-$$-$side
    ip netns add "$ns"
    NSS+=("$ns")
    ip -n "$ns" link set lo up
    mkdir -p "$WORK/$side/run" "$WORK/$side/state" "$WORK/$side/settings"
done

SPEC=$WORK/spec.json
A_CGPARENT=$NETSPAWN_CGROUP_PARENT A_NSENTER=$(command -v nsenter) A_ENV=$(command -v env) A_BEFORE=$BEFORE A_AFTER=$AFTER A_IMG=$IMG A_WORK=$WORK A_PID=$$ A_RUNS=$RUNS A_WARMUP=$WARMUP \
    "$PY" - "$SPEC" <<'EOF'
import json, os, sys
e = os.environ
img, work = e["A_IMG"], e["A_WORK"]
cmds = []
for side, bindir in (("before", e["A_BEFORE"]), ("after", e["A_AFTER"])):
    d = f"{work}/{side}"
    wrap = [e["A_NSENTER"], f"--net=/run/netns/netspawn-ab-{e['A_PID']}-{side}", e["A_ENV"],
            f"NETSPAWN_RUN_DIR={d}/run", f"NETSPAWN_STATE_DIR={d}/state",
            f"NETSPAWN_SETTINGS_PATH={d}/settings", f"NETSPAWN_NETD={bindir}/netspawn-netd",
            # A cgroup parent per side: a launch sweeps the machine cgroups
            # no launcher of its own run directory holds.
            f"NETSPAWN_CGROUP_PARENT={e['A_CGPARENT']}/{side}"]
    ns = f"{bindir}/netspawn"
    q = ["-q", "--read-only", "-D", img, "/bin/true"]
    cmds += [
        {"name": f"true {side}", "argv": wrap + [ns, "--register=no"] + q},
        {"name": f"private {side}", "argv": wrap + [ns, "--register=no", "--private-network"] + q},
        {"name": f"none {side}", "argv": wrap + [ns, "-n", "--network-config=none", "-M", f"ab{side[0]}n"] + q},
        {"name": f"veth {side}", "argv": wrap + [ns, "-n", "-M", f"ab{side[0]}v"] + q},
        {"name": f"zone {side}", "argv": wrap + [ns, "--network-zone=ab", "-M", f"ab{side[0]}z"] + q},
    ]
spec = {
    "title": "netspawn before/after: launch-to-exit of /bin/true (host network, --private-network, -n without and with host0 configured, zone)",
    "kind": "ab",
    "rounds": int(e["A_RUNS"]), "warmup": int(e["A_WARMUP"]), "timeout_s": 30, "settle_s": 0.05,
    "log_dir": work + "/logs",
    "baseline": "true before", "reference": "true after",
    "target": "after within noise of before",
    "versions": {"before": e["A_BEFORE"], "after": e["A_AFTER"]},
    "method": ("each round runs every command once in a seeded random order; a sample is posix_spawn() to waitpid() "
               "in bench/driver.py; each side in its own network namespace (entered with nsenter) with its own "
               "run/state directories and its own netd; -n and zone launches get host0 configured by DHCP."),
    "commands": cmds,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF

log "measuring: $RUNS rounds (+$WARMUP warm-up), interleaved"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC" "$WORK/$NAME.json"
cp "$WORK/$NAME.json" "$RESULTS_DIR/$NAME.json"
"$PY" "$BENCH_DIR/driver.py" report "$RESULTS_DIR/$NAME.json" "$RESULTS_DIR/$NAME.md"
"$PY" - "$RESULTS_DIR/$NAME.json" <<'EOF' | tee -a "$RESULTS_DIR/$NAME.md"
import json, sys
r = json.load(open(sys.argv[1]))
st = r["stats"]
# Networked launches are bimodal here (a launch after one whose link netd
# must unmake waits for two nft runs): the median can fall in the gap
# between the modes, so the mean is shown too.
print("\n| launch | before median / mean (ms) | after median / mean (ms) | after/before (median, mean) |")
print("|---|---|---|---|")
for k in ("true", "private", "none", "veth", "zone"):
    b, a = st.get(f"{k} before"), st.get(f"{k} after")
    if b and a:
        print(f"| {k} | {b['median_ms']:.2f} / {b['mean_ms']:.2f} | {a['median_ms']:.2f} / {a['mean_ms']:.2f} "
              f"| {a['median_ms'] / b['median_ms']:.3f}, {a['mean_ms'] / b['mean_ms']:.3f} |")
EOF
log "written: $RESULTS_DIR/$NAME.md, $RESULTS_DIR/$NAME.json"
