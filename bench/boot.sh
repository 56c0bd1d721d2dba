#!/bin/bash
# A Debian bookworm guest's boot-to-poweroff cycle: netspawn -b vs
# systemd-nspawn -b, same image, interleaved. Writes bench/results/boot.{md,json}.
# See bench/README.md for the method.
#
# Usage: bench/boot.sh [--runs N] [--warmup N] [--image DIR] [--timeout SECONDS] [--no-build]
#   --image: a Debian image with systemd to copy (default: the development cache
#            /var/cache/netspawn-dev/debian-bookworm or the test suite's
#            /var/cache/netspawn-test/debian-bookworm if present, else one made
#            with `netspawnctl bootstrap debian` in the scratch directory, ~1 min).
#            It is only read: every boot runs on a fresh copy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=5 WARMUP=1 TIMEOUT=120 IMAGE=
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --warmup=*) WARMUP=${1#*=} ;;
    --timeout) TIMEOUT=${2:?}; shift ;;
    --timeout=*) TIMEOUT=${1#*=} ;;
    --image) IMAGE=${2:?}; shift ;;
    --image=*) IMAGE=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ && $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--runs/--warmup/--timeout need a number"

need_root
ensure_packages python3 systemd-container util-linux coreutils
build_netspawn
setup_sandbox

MASTER=$WORK/master
GUEST=$WORK/guest
# The development cache, else the test suite's cache (both only read).
for cache in /var/cache/netspawn-dev/debian-bookworm /var/cache/netspawn-test/debian-bookworm; do
    if [ -z "$IMAGE" ] && [ -x "$cache/lib/systemd/systemd" ]; then IMAGE=$cache; fi
done
if [ -n "$IMAGE" ]; then
    [ -x "$IMAGE/lib/systemd/systemd" ] || die "$IMAGE has no /lib/systemd/systemd"
    log "copying $IMAGE"
    cp -a --reflink=auto "$IMAGE" "$MASTER"
    IMAGE_DESC="copy of $IMAGE"
else
    log "no Debian image given or cached: netspawnctl bootstrap debian (about a minute)"
    "$NETSPAWNCTL" bootstrap debian master >"$WORK/bootstrap.log" 2>&1 || {
        tail -20 "$WORK/bootstrap.log" >&2
        die "netspawnctl bootstrap debian failed"
    }
    mv "$NETSPAWN_IMAGE_DIR/master" "$MASTER"
    IMAGE_DESC="made by netspawnctl bootstrap debian"
fi

# The guest powers itself off as soon as it has reached its default target.
# The unit is wanted by multi-user.target and ordered after it (and after
# graphical.target, Debian's default.target); DefaultDependencies=no keeps the
# targets from being ordered after the unit, which would be a cycle.
# systemd-update-utmp-runlevel.service is hooked in the same way.
UNIT=bench-poweroff.service
cat >"$MASTER/etc/systemd/system/$UNIT" <<'EOF'
[Unit]
Description=Benchmark: power off once the default target is reached
DefaultDependencies=no
After=multi-user.target graphical.target

[Service]
Type=oneshot
ExecStartPre=/bin/touch /bench-reached-default-target
ExecStart=/bin/systemctl poweroff --no-block
EOF
mkdir -p "$MASTER/etc/systemd/system/multi-user.target.wants"
ln -sf "../$UNIT" "$MASTER/etc/systemd/system/multi-user.target.wants/$UNIT"

PREPARE=(/bin/sh -c 'rm -rf --one-file-system "$1" && cp -a --reflink=auto "$2" "$1" && sync' sh "$GUEST" "$MASTER")
CHECK=(/bin/sh -c 'test -e "$1/bench-reached-default-target"' sh "$GUEST")
mkdir -p "$WORK/logs" "$RESULTS_DIR"

VERSIONS=$(versions_json "systemd-nspawn=systemd-nspawn --version" "guest systemd=$MASTER/lib/systemd/systemd --version" "kernel=uname -r")
IMAGE_SIZE=$(du -sh "$MASTER" | cut -f1)

SPEC=$WORK/spec.json
B_PREPARE=$(json_argv "${PREPARE[@]}") B_CHECK=$(json_argv "${CHECK[@]}") B_VERSIONS=$VERSIONS \
    B_GUEST=$GUEST B_NETSPAWN=$NETSPAWN B_NSPAWN=$(command -v systemd-nspawn) B_RUNS=$RUNS B_WARMUP=$WARMUP \
    B_TIMEOUT=$TIMEOUT B_LOGS=$WORK/logs B_IMAGE="$IMAGE_DESC ($IMAGE_SIZE), plus $UNIT" B_UNIT=$UNIT \
    "$PY" - "$SPEC" <<'EOF'
import json, os, sys
e = os.environ
prepare, check, guest = json.loads(e["B_PREPARE"]), json.loads(e["B_CHECK"]), e["B_GUEST"]
pattern = r"FAILED|Failed to start|Dependency failed|ordering cycle|Timed out"
cmds = [
    {"name": "netspawn", "argv": [e["B_NETSPAWN"], "-q", "--register=no", "-b", "-D", guest],
     "prepare": prepare, "check": check, "log_pattern": pattern},
    {"name": "systemd-nspawn", "argv": [e["B_NSPAWN"], "-q", "--register=no", "--keep-unit", "-b", "-D", guest],
     "prepare": prepare, "check": check, "log_pattern": pattern},
]
spec = {
    "title": "Debian bookworm guest: boot to default target and power off",
    "kind": "boot",
    "rounds": int(e["B_RUNS"]), "warmup": int(e["B_WARMUP"]), "timeout_s": int(e["B_TIMEOUT"]), "progress": True,
    "log_dir": e["B_LOGS"],
    "reference": "systemd-nspawn",
    "target": "netspawn no slower than systemd-nspawn (ratio <= 1.00)",
    "versions": dict(json.loads(e["B_VERSIONS"]), image=e["B_IMAGE"]),
    "method": ("each round boots the guest once with each launcher, in a seeded random order drawn per round; before every boot, "
               "untimed, the guest directory is replaced by a fresh copy of the prepared image and the page cache "
               "is synced, so both launchers boot byte-identical first-boot state from the same path (same machine "
               "name and hostname). A sample is the wall time from posix_spawn() of the launcher to its exit "
               "(bench/driver.py): the guest's systemd reaches graphical.target (default.target), " + e["B_UNIT"] +
               " runs 'systemctl poweroff --no-block', the guest shuts down, the launcher tears down and exits 0. "
               "After each boot the unit's marker file is checked. stdin /dev/null, console output to a file; both "
               "in one private mount namespace with a tmpfs on /run/systemd/nspawn and in a benchmark cgroup; host "
               "network for both (the default of each)."),
    "commands": cmds,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF

log "measuring: $RUNS rounds (+$WARMUP warm-up), random order per round, fresh image copy before each boot"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC" "$WORK/boot.json"

[ -z "$(ls -A "$NETSPAWN_RUN_DIR/machines" 2>/dev/null)" ] || die "registry entries left in $NETSPAWN_RUN_DIR/machines"
cp "$WORK/boot.json" "$RESULTS_DIR/boot.json"
"$PY" "$BENCH_DIR/driver.py" report "$RESULTS_DIR/boot.json" "$RESULTS_DIR/boot.md"
cat "$RESULTS_DIR/boot.md"
log "written: $RESULTS_DIR/boot.md, $RESULTS_DIR/boot.json"
