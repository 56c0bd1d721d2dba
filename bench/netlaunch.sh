#!/bin/bash
# Networked launch-to-exit of /bin/true (issue 15): how close a launch with
# links comes to the `--private-network` floor, side by side in one
# interleaved run, with systemd-nspawn beside it. Each round launches, in a
# random order:
#   private    — `netspawn --private-network` (the floor: a network namespace, no links)
#   none       — `-n --network-config=none` (a veth, netd serves the host side, host0 bare)
#   veth       — `-n` (host0 configured by DHCP: address, route, resolv.conf)
#   zone-old   — `--network-zone=ez`, the bridge made by a machine that stays
#   zone-new   — `--network-zone=nz`, the bridge made by this launch (the
#                untimed prepare step waits until the last one's is gone)
#   first      — `-n` with no netd running (the untimed prepare stops it), in
#                a namespace of its own
#   nspawn-private, nspawn-veth — systemd-nspawn `--private-network` and
#                `--network-veth` (which configures nothing), in a namespace of their own
# Then a debug-log run (RUST_LOG=debug, netd in the foreground with its own
# debug log) gives the per-step breakdown: the median time of each step (one
# kind after the other, a new machine name each launch, 50 ms apart).
#
# Everything runs in network namespaces made here (removed at exit), in the
# benchmark sandbox of lib.sh (scratch directory, cgroups, private mounts).
#
# Usage: bench/netlaunch.sh [--runs N (40)] [--warmup N (3)] [--breakdown N (15)] [--no-build]
# Writes bench/results/netlaunch.{md,json}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=40 WARMUP=3 BREAKDOWN=15
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --breakdown) BREAKDOWN=${2:?}; shift ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ && $BREAKDOWN =~ ^[0-9]+$ ]] || die "--runs/--warmup/--breakdown need a number"

need_root
ensure_packages python3 busybox-static util-linux iproute2 nftables systemd-container
build_netspawn
setup_sandbox
private_binaries
BIN=$WORK/bin
NSS=()
HOLDER=
cleanup_netlaunch() {
    local n
    set +e # every step is attempted: a process gone already is no failure
    [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null && wait "$HOLDER" 2>/dev/null
    for n in "${NSS[@]}"; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null
        sleep 0.3
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$n" 2>/dev/null
    done
    for n in main first nspawn; do
        mountpoint -q "$WORK/$n/run" 2>/dev/null && umount -l "$WORK/$n/run"
    done
    cleanup_sandbox
}
trap cleanup_netlaunch EXIT

"$BIN/netspawnctl" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || die "netspawnctl bootstrap busybox failed"
IMG=$NETSPAWN_IMAGE_DIR/bb
mkdir -p "$WORK/logs" "$RESULTS_DIR"

# Namespaces: "main" (every netspawn kind but the first launch, one netd),
# "first" (netd stopped before each sample), "nspawn" (systemd-nspawn).
for side in main first nspawn; do
    ns=netspawn-nl-$$-$side
    ip netns add "$ns"
    NSS+=("$ns")
    ip -n "$ns" link set lo up
    mkdir -p "$WORK/$side/run" "$WORK/$side/state"
    # The run directory on a tmpfs, as /run is on every host (the scratch
    # directory is on disk; the state directory stays there, as /var/lib).
    mount -t tmpfs -o mode=0755 netspawn-bench-run "$WORK/$side/run"
done
NS_MAIN=/run/netns/netspawn-nl-$$-main

# The zone that exists all along: one machine holds it.
nsenter --net=$NS_MAIN env NETSPAWN_RUN_DIR="$WORK/main/run" NETSPAWN_STATE_DIR="$WORK/main/state" \
    NETSPAWN_NETD="$BIN/netspawn-netd" NETSPAWN_CGROUP_PARENT="$NETSPAWN_CGROUP_PARENT/main" \
    "$BIN/netspawn" -q --network-zone=ez -M nlhold -D "$IMG" --read-only /bin/sleep 100000 \
    >"$WORK/holder.log" 2>&1 &
HOLDER=$!
for _ in $(seq 200); do ip -n "netspawn-nl-$$-main" link show vz-ez >/dev/null 2>&1 && break; sleep 0.05; done
ip -n "netspawn-nl-$$-main" link show vz-ez >/dev/null 2>&1 || die "the zone holder did not start (see $WORK/holder.log)"

SPEC=$WORK/spec.json
N_CGPARENT=$NETSPAWN_CGROUP_PARENT N_NSENTER=$(command -v nsenter) N_ENV=$(command -v env) N_BIN=$BIN \
    N_IMG=$IMG N_WORK=$WORK N_PID=$$ N_RUNS=$RUNS N_WARMUP=$WARMUP N_NSPAWN=$(command -v systemd-nspawn) \
    N_VERSIONS="$(versions_json systemd-nspawn="systemd-nspawn --version" kernel="uname -r")" N_BINID="$BIN_ID" \
    "$PY" - "$SPEC" <<'EOF'
import json, os, sys
e = os.environ
img, work, b, pid = e["N_IMG"], e["N_WORK"], e["N_BIN"], e["N_PID"]
def wrap(side, extra=()):
    d = f"{work}/{side}"
    return [e["N_NSENTER"], f"--net=/run/netns/netspawn-nl-{pid}-{side}", e["N_ENV"],
            f"NETSPAWN_RUN_DIR={d}/run", f"NETSPAWN_STATE_DIR={d}/state", f"NETSPAWN_NETD={b}/netspawn-netd",
            f"NETSPAWN_CGROUP_PARENT={e['N_CGPARENT']}/{side}", *extra]
ns = f"{b}/netspawn"
q = ["-q", "--read-only", "-D", img]
sh = "/bin/sh"
# Untimed steps, inside the namespace: the zone bridge of the last new-zone
# launch gone (the keeper removes it after the launcher exits), netd stopped.
wait_nz = [e["N_NSENTER"], f"--net=/run/netns/netspawn-nl-{pid}-main", sh, "-c",
           "for i in $(seq 500); do ip link show vz-nz >/dev/null 2>&1 || exit 0; sleep 0.01; done; exit 1"]
stop_netd = [e["N_NSENTER"], f"--net=/run/netns/netspawn-nl-{pid}-first", sh, "-c",
             f"for f in {work}/first/run/netd-*.pid; do [ -e \"$f\" ] || continue; p=$(cat \"$f\"); kill $p 2>/dev/null; "
             "for i in $(seq 500); do kill -0 $p 2>/dev/null || break; sleep 0.01; done; done; "
             "for i in $(seq 500); do ip -o link show | grep -q ve-nlfirst || exit 0; sleep 0.01; done; exit 1"]
nspawn = [e["N_NSENTER"], f"--net=/run/netns/netspawn-nl-{pid}-nspawn", e["N_NSPAWN"], "-q", "--register=no", "--keep-unit"]
cmds = [
    {"name": "private", "argv": wrap("main") + [ns, "--register=no", "--private-network"] + q + ["/bin/true"]},
    {"name": "none", "argv": wrap("main") + [ns, "-n", "--network-config=none", "-M", "nlnone"] + q + ["/bin/true"]},
    {"name": "veth", "argv": wrap("main") + [ns, "-n", "-M", "nlveth"] + q + ["/bin/true"]},
    {"name": "zone-old", "argv": wrap("main") + [ns, "--network-zone=ez", "-M", "nlez"] + q + ["/bin/true"]},
    {"name": "zone-new", "argv": wrap("main") + [ns, "--network-zone=nz", "-M", "nlnz"] + q + ["/bin/true"],
     "prepare": wait_nz},
    {"name": "first", "argv": wrap("first") + [ns, "-n", "-M", "nlfirst"] + q + ["/bin/true"], "prepare": stop_netd},
    {"name": "nspawn-private", "argv": nspawn + ["--private-network", "--read-only", "-D", img, "/bin/true"]},
    {"name": "nspawn-veth", "argv": nspawn + ["--network-veth", "--read-only", "-D", img, "/bin/true"]},
]
versions = json.loads(e["N_VERSIONS"])
versions["netspawn binaries"] = e["N_BINID"]
spec = {
    "title": "Networked launch-to-exit of /bin/true: netspawn's network modes against its --private-network floor, and systemd-nspawn",
    "kind": "netlaunch",
    "rounds": int(e["N_RUNS"]), "warmup": int(e["N_WARMUP"]), "timeout_s": 60, "settle_s": 0.05,
    "log_dir": work + "/logs",
    "baseline": "private", "reference": "nspawn-veth",
    "target": "none <= 1.2x, veth <= 1.3x, zone-old <= 1.3x, zone-new <= 1.5x, first <= 2x private",
    "versions": versions,
    "method": ("each round runs every command once in a seeded random order; a sample is posix_spawn() to waitpid() "
               "in bench/driver.py; netspawn kinds share one network namespace and netd (first: a namespace of its "
               "own whose netd the untimed prepare step stops); zone-old joins a zone a holder machine keeps; "
               "zone-new waits (untimed) until the last launch's bridge is gone; systemd-nspawn runs in a namespace "
               "of its own with --register=no --keep-unit; every sample starts 50 ms (untimed) after the last one ended, "
               "so the last launch's teardown (which runs after its launcher exits) does not share the 2 cores with it; "
               "netspawn's run directories are on a tmpfs, as /run is."),
    "commands": cmds,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF

log "measuring: $RUNS rounds (+$WARMUP warm-up), interleaved"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC" "$WORK/netlaunch.json"

# The breakdown: each netspawn kind BREAKDOWN times with debug logs, netd of
# the main namespace in the foreground with its own debug log.
log "breakdown: $BREAKDOWN debug-log launches per kind"
for f in "$WORK"/main/run/netd-*.pid; do
    [ -e "$f" ] && p=$(cat "$f") && kill "$p" 2>/dev/null && for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.01; done
done
nsenter --net=$NS_MAIN env NETSPAWN_RUN_DIR="$WORK/main/run" NETSPAWN_STATE_DIR="$WORK/main/state" RUST_LOG=debug \
    "$BIN/netspawn-netd" --foreground >"$WORK/netd-debug.log" 2>&1 &
for _ in $(seq 200); do grep -q "netd ready" "$WORK/netd-debug.log" && break; sleep 0.05; done
B_SPEC=$SPEC B_N=$BREAKDOWN B_OUT=$WORK/breakdown.json B_NETDLOG=$WORK/netd-debug.log \
    run_isolated "$PY" - <<'EOF'
import json, os, re, subprocess, time, datetime
e = os.environ
spec = json.load(open(e["B_SPEC"]))
ts_re = re.compile(r"^(\S+Z)\s+\w+\s+(.*)$")
def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
steps = [
    ("netd connected", "netd connected"),
    ("cgroup made (device policy)", "device policy"),
    ("links made", "network links set up"),
    ("netd answered LINK", "netd: "),
    # Since git d7aec5b host0's lease comes over netd's control socket
    # before the links' queues are waited for (the exchange on the link,
    # the fallback, still comes after).
    ("host0 configured by DHCP", "host0 configured by DHCP"),
    ("links running", "links running"),
    ("payload exited", "container PID 1 exited"),
    ("launcher cleaned up", "cleaned up, exiting"),
]
out = {}
for c in spec["commands"]:
    if c["name"].startswith("nspawn"):
        continue
    runs = []
    for i in range(int(e["B_N"])):
        if c.get("prepare"):
            subprocess.run(c["prepare"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        argv = list(c["argv"])
        argv.insert(argv.index(next(a for a in argv if a.endswith("/netspawn"))), "RUST_LOG=debug")
        # A name of its own per launch: the same name again waits for the
        # last launch's keeper to let the name go (its links' deletion).
        if "-M" in argv:
            argv[argv.index("-M") + 1] += f"b{i}"
        time.sleep(0.05)
        t0 = time.time()
        p = subprocess.run(argv, capture_output=True, text=True)
        t1 = time.time()
        text = re.sub(r"\x1b\[[0-9;]*m", "", p.stderr)
        marks = {}
        for line in text.splitlines():
            m = ts_re.match(line)
            if not m:
                continue
            for label, key in steps:
                if label not in marks and m.group(2).startswith(key):
                    marks[label] = (ts(m.group(1)) - t0) * 1000
        marks["launcher exited"] = (t1 - t0) * 1000
        runs.append(marks)
    out[c["name"]] = runs
netd = []
for line in open(e["B_NETDLOG"], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.search(r"pipeline addressed_us=(\d+) dhcp_dns_us=(\d+) nat_us=(\d+)", line)
    if m:
        netd.append([int(x) / 1000 for x in m.groups()])
json.dump({"launcher": out, "netd_pipeline_ms": netd, "steps": [s for s, _ in steps] + ["launcher exited"]},
          open(e["B_OUT"], "w"), indent=1)
EOF

"$PY" - "$WORK/netlaunch.json" "$WORK/breakdown.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["breakdown"] = json.load(open(sys.argv[2]))
json.dump(r, open(sys.argv[1], "w"), indent=1)
EOF
cp "$WORK/netlaunch.json" "$RESULTS_DIR/netlaunch.json"
"$PY" "$BENCH_DIR/driver.py" report "$RESULTS_DIR/netlaunch.json" "$RESULTS_DIR/netlaunch.md"
"$PY" - "$RESULTS_DIR/netlaunch.json" <<'EOF' | tee -a "$RESULTS_DIR/netlaunch.md"
import json, statistics, sys
r = json.load(open(sys.argv[1]))
st = r["stats"]
p = st["private"]["median_ms"]
targets = {"none": 1.2, "veth": 1.3, "zone-old": 1.3, "zone-new": 1.5, "first": 2.0}
print("\n## Ratios to `--private-network` (medians of this run)\n")
print("| launch | median ms | mean ms | p90 ms | x private | target | met |")
print("|---|---:|---:|---:|---:|---|---|")
for k in ("private", "none", "veth", "zone-old", "zone-new", "first", "nspawn-private", "nspawn-veth"):
    s = st.get(k)
    if not s:
        continue
    ratio = s["median_ms"] / p
    t = targets.get(k)
    print(f"| {k} | {s['median_ms']:.2f} | {s['mean_ms']:.2f} | {s['p90_ms']:.2f} | {ratio:.2f} | "
          f"{'≤ %.1fx' % t if t else ''} | {('yes' if ratio <= t else 'no') if t else ''} |")
nv = st.get("nspawn-veth")
if nv:
    print(f"\nnetspawn `-n` (address, route, resolv.conf) against systemd-nspawn `--network-veth` (configures nothing): "
          f"{st['veth']['median_ms'] / nv['median_ms']:.2f}x (median).")
b = r["breakdown"]
print("\n## Where the time goes (debug-log timestamps)\n")
print("Median time since spawn at which each step's log line appears (ms), "
      f"{len(next(iter(b['launcher'].values())))} debug-log launches per kind after the measured run; "
      "a step's cost is the difference to the step before it.\n")
kinds = list(b["launcher"])
print("| step | " + " | ".join(kinds) + " |")
print("|---|" + "---:|" * len(kinds))
for step in b["steps"]:
    cells = []
    for k in kinds:
        v = [m[step] for m in b["launcher"][k] if step in m]
        cells.append(f"{statistics.median(v):.2f}" if v else "–")
    print(f"| {step} | " + " | ".join(cells) + " |")
n = b["netd_pipeline_ms"]
if n:
    med = [statistics.median(x[i] for x in n) for i in range(3)]
    print(f"\nnetd's pipeline per configured link (median of {len(n)}): address {med[0]:.2f} ms, "
          f"DHCP server + DNS listener {med[1]:.2f} ms, NAT (interface group, sysctls) {med[2]:.2f} ms.")
EOF
log "written: $RESULTS_DIR/netlaunch.md, $RESULTS_DIR/netlaunch.json"
