#!/bin/bash
# -x/--ephemeral: launch-to-exit of /bin/true with -x against a normal launch
# of the same image (busybox, and a copy of the test suite's Debian bookworm
# image), against systemd-nspawn -x on the same (non-btrfs) Debian copy,
# which copies the whole tree; and twenty -x machines of one image started at
# once: time until all run, memory and disk used. Interleaved in one run.
# Writes bench/results/ephemeral.{md,json}. See bench/README.md.
#
# Usage: bench/ephemeral.sh [--runs N] [--deb-runs N] [--warmup N] [--no-build]
#   --runs: rounds for the busybox and netspawn Debian launches (200)
#   --deb-runs: rounds that include systemd-nspawn -x of Debian (10; each copies the tree)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=200 DEB_RUNS=10 WARMUP=5
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --deb-runs) DEB_RUNS=${2:?}; shift ;;
    --deb-runs=*) DEB_RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --warmup=*) WARMUP=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $DEB_RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "--runs/--deb-runs/--warmup need a number"

need_root
ensure_packages python3 systemd-container busybox-static util-linux coreutils
build_netspawn
setup_sandbox

DEB_SRC=/var/cache/netspawn-test/debian-bookworm
[ -x "$DEB_SRC/bin/true" ] || die "no Debian test image in $DEB_SRC (scripts/test builds it once)"

log "making the busybox image (netspawnctl bootstrap busybox)"
"$NETSPAWNCTL" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || {
    tail "$WORK/bootstrap.log" >&2
    die "netspawnctl bootstrap busybox failed"
}
BB=$NETSPAWN_IMAGE_DIR/bb
DEB=$NETSPAWN_IMAGE_DIR/deb
log "copying the Debian image (never modified) into the scratch directory"
cp -a "$DEB_SRC" "$DEB"
FS=$(stat -f -c %T "$NETSPAWN_IMAGE_DIR")
[ "$FS" != btrfs ] || log "note: the scratch directory is on btrfs: both -x make snapshots there"
mkdir -p "$WORK/logs" "$RESULTS_DIR"

VERSIONS=$(versions_json "systemd-nspawn=systemd-nspawn --version" "busybox=$BB/bin/busybox" "kernel=uname -r")
NSPAWN=$(command -v systemd-nspawn)

spec() { # OUT TITLE ROUNDS TARGET BASELINE REFERENCE CMDS_JSON
    L_TITLE=$2 L_ROUNDS=$3 L_TARGET=$4 L_BASE=$5 L_REF=$6 L_CMDS=$7 L_WORK=$WORK L_WARMUP=$WARMUP \
        L_VERSIONS=$VERSIONS L_FS=$FS "$PY" - "$1" <<'EOF'
import json, os, sys
e = os.environ
spec = {
    "title": e["L_TITLE"], "kind": "launch",
    "rounds": int(e["L_ROUNDS"]), "warmup": int(e["L_WARMUP"]), "timeout_s": 0,
    "log_dir": e["L_WORK"] + "/logs",
    "baseline": e["L_BASE"], "reference": e["L_REF"], "target": e["L_TARGET"],
    "versions": json.loads(e["L_VERSIONS"]),
    "method": ("each round runs every command once, in a seeded random order drawn per round; a sample is the wall time "
               "from posix_spawn() to waitpid() in bench/driver.py (launch to exit: for -x, making and removing the "
               "ephemeral layer included); images in a scratch directory under /var/tmp (" + e["L_FS"] + "), "
               "all in one private mount namespace and a benchmark cgroup."),
    "commands": json.loads(e["L_CMDS"]),
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF
}

ns() { json_argv "$NETSPAWN" -q --register=no "$@" /bin/true; }

log "busybox: -x against a normal launch, $RUNS rounds"
spec "$WORK/bb-spec.json" "netspawn -x launch-to-exit of /bin/true (busybox image)" "$RUNS" \
    "-x adds at most 2 ms to a launch" "netspawn" "netspawn -x" \
    "[{\"name\": \"netspawn\", \"argv\": $(ns -D "$BB")},
      {\"name\": \"netspawn -x\", \"argv\": $(ns -x -D "$BB")}]"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$WORK/bb-spec.json" "$WORK/bb.json"

log "Debian ($(du -sh "$DEB" | cut -f1)): netspawn -x, netspawn, systemd-nspawn -x, $DEB_RUNS rounds"
spec "$WORK/deb-spec.json" "-x launch-to-exit of /bin/true (Debian bookworm image, $(du -sh "$DEB" | cut -f1), $FS)" "$DEB_RUNS" \
    "-x adds at most 2 ms; more than 10x faster than systemd-nspawn -x" "netspawn" "systemd-nspawn -x" \
    "[{\"name\": \"netspawn\", \"argv\": $(ns -D "$DEB")},
      {\"name\": \"netspawn -x\", \"argv\": $(ns -x -D "$DEB")},
      {\"name\": \"systemd-nspawn -x\", \"argv\": $(json_argv "$NSPAWN" -q --register=no --keep-unit -x -D "$DEB" /bin/true),
       \"note\": \"copies the whole tree next to the image (no btrfs here), removes it at exit\"}]"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$WORK/deb-spec.json" "$WORK/deb.json"
ls -a "$NETSPAWN_IMAGE_DIR" | grep -q '^\.#' && die "ephemeral layers left in $NETSPAWN_IMAGE_DIR"

log "twenty -x machines of the Debian image at once"
cat >"$WORK/twenty.sh" <<'EOF'
set -euo pipefail
n=20 img=$1 out=$2
mkdir -p "$WORK/ctl"
mem() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }
m0=$(mem)
t0=$(date +%s%N)
for i in $(seq $n); do
    "$NETSPAWN" -q -x -M "eph$i" --bind="$WORK/ctl:/ctl" -D "$img" /bin/sh -c \
        'echo hello > /hello; while [ ! -e /ctl/stop ]; do sleep 0.05; done' >/dev/null 2>&1 &
done
while [ "$(ls "$NETSPAWN_RUN_DIR/machines" | grep -c '^eph')" -lt $n ]; do sleep 0.005; done
t1=$(date +%s%N)
sleep 0.5
m1=$(mem)
disk=$(du -sk "$(dirname "$img")"/.#machine.* | awk '{ s += $1 } END { print s }')
layers=$(ls -a "$(dirname "$img")" | grep -c '^\.#machine\.')
touch "$WORK/ctl/stop"
wait
left=$(ls -a "$(dirname "$img")" | grep -c '^\.#' || true)
printf '{"machines": %d, "all_running_ms": %.1f, "memory_kib": %d, "disk_kib": %d, "layers": %d, "layers_left_after": %d}\n' \
    $n "$(( (t1 - t0) / 1000 ))e-3" $((m0 - m1)) "$disk" "$layers" "$left" >"$out"
EOF
run_isolated env WORK="$WORK" NETSPAWN="$NETSPAWN" NETSPAWN_RUN_DIR="$NETSPAWN_RUN_DIR" bash "$WORK/twenty.sh" "$DEB" "$WORK/twenty.json"

[ -z "$(ls -A "$NETSPAWN_RUN_DIR/machines" 2>/dev/null)" ] || die "registry entries left in $NETSPAWN_RUN_DIR/machines"
"$PY" - "$WORK/bb.json" "$WORK/deb.json" "$WORK/twenty.json" "$RESULTS_DIR/ephemeral.json" <<'EOF'
import json, sys
bb, deb, twenty, out = sys.argv[1:]
json.dump({"busybox": json.load(open(bb)), "debian": json.load(open(deb)), "twenty": json.load(open(twenty))},
          open(out, "w"), indent=1)
EOF
"$PY" "$BENCH_DIR/driver.py" report "$WORK/bb.json" "$WORK/bb.md"
"$PY" "$BENCH_DIR/driver.py" report "$WORK/deb.json" "$WORK/deb.md"
{
    cat "$WORK/bb.md"
    echo
    cat "$WORK/deb.md"
    echo
    echo "## Twenty -x machines of the Debian image started at once"
    echo
    "$PY" - "$WORK/twenty.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
print("| machines | until all run | memory used (MemAvailable drop) | disk used by the layers | layers left after |")
print("|---|---|---|---|---|")
print(f"| {t['machines']} | {t['all_running_ms']:.0f} ms | {t['memory_kib'] / 1024:.1f} MiB | "
      f"{t['disk_kib']} KiB | {t['layers_left_after']} |")
EOF
} >"$RESULTS_DIR/ephemeral.md"
cat "$RESULTS_DIR/ephemeral.md"
log "written: $RESULTS_DIR/ephemeral.md, $RESULTS_DIR/ephemeral.json"
