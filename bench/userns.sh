#!/bin/bash
# User namespaces: what -U costs a launch, netspawn against systemd-nspawn,
# interleaved in one run. Two parts, each through bench/driver.py:
#   launch: launch-to-exit of /bin/true in a busybox image, without a user
#           namespace, with -U and idmapped mounts (ownership map), and with
#           -U on an image already shifted by a first chown launch;
#   chown:  the first launch of a Debian image with ownership chown, which
#           shifts every inode of the tree (a fresh copy before each sample,
#           untimed), and the same launch without a user namespace.
# Writes bench/results/userns-{launch,chown}.{md,json}. See bench/README.md.
#
# Usage: bench/userns.sh [--runs N (100)] [--chown-runs N (5)] [--image DIR] [--no-build] [--quick]
#   --quick: 20 launch rounds and no chown part (it copies the Debian image
#            before every sample), for bench/run --quick.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=100 CHOWN_RUNS=5 IMAGE=/var/cache/netspawn-test/debian-bookworm CHOWN=1
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --chown-runs) CHOWN_RUNS=${2:?}; shift ;;
    --chown-runs=*) CHOWN_RUNS=${1#*=} ;;
    --image) IMAGE=${2:?}; shift ;;
    --image=*) IMAGE=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --quick) RUNS=20 CHOWN=0 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $CHOWN_RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs/--chown-runs need a number"
((!CHOWN)) || [ -x "$IMAGE/bin/true" ] || die "no Debian image at $IMAGE (scripts/test builds one; or --image DIR)"

need_root
ensure_packages python3 systemd-container busybox-static util-linux coreutils
build_netspawn
setup_sandbox

log "making the busybox image (netspawnctl bootstrap busybox)"
"$NETSPAWNCTL" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || {
    tail "$WORK/bootstrap.log" >&2
    die "netspawnctl bootstrap busybox failed"
}
BB=$NETSPAWN_IMAGE_DIR/bb
# Each launcher that shifts an image gets its own copy; the first (warm-up)
# launch shifts it, the measured ones find it shifted already.
cp -a "$BB" "$WORK/bb-ns-chown"
cp -a "$BB" "$WORK/bb-sd-chown"
mkdir -p "$WORK/logs" "$WORK/logs-chown" "$RESULTS_DIR"

VERSIONS=$(versions_json "systemd-nspawn=systemd-nspawn --version" "kernel=uname -r")
NSPAWN=$(command -v systemd-nspawn)
SPEC=$WORK/spec.json
U_NETSPAWN=$NETSPAWN U_NSPAWN=$NSPAWN U_BB=$BB U_WORK=$WORK U_RUNS=$RUNS U_VERSIONS=$VERSIONS \
    "$PY" - "$SPEC" <<'EOF'
import json, os, sys
e = os.environ
ns, sd, bb, work = e["U_NETSPAWN"], e["U_NSPAWN"], e["U_BB"], e["U_WORK"]
nsq = [ns, "-q", "--register=no"]
sdq = [sd, "-q", "--register=no", "--keep-unit"]
pick = "--private-users=pick"
cmds = [
    {"name": "netspawn", "argv": nsq + ["-D", bb, "/bin/true"]},
    {"name": "netspawn -U map", "argv": nsq + [pick, "--private-users-ownership=map", "-D", bb, "/bin/true"]},
    {"name": "netspawn -U chown (shifted)",
     "argv": nsq + [pick, "--private-users-ownership=chown", "-D", work + "/bb-ns-chown", "/bin/true"]},
    {"name": "systemd-nspawn", "argv": sdq + ["-D", bb, "/bin/true"]},
    {"name": "systemd-nspawn -U map", "argv": sdq + [pick, "--private-users-ownership=map", "-D", bb, "/bin/true"]},
    {"name": "systemd-nspawn -U chown (shifted)",
     "argv": sdq + [pick, "--private-users-ownership=chown", "-D", work + "/bb-sd-chown", "/bin/true"]},
]
spec = {
    "title": "launch-to-exit of /bin/true with and without a user namespace (busybox image)",
    "kind": "launch",
    "rounds": int(e["U_RUNS"]), "warmup": 3, "timeout_s": 0,
    "log_dir": work + "/logs",
    "baseline": "netspawn", "reference": "systemd-nspawn -U map",
    "target": "netspawn -U map at most 1 ms above netspawn",
    "versions": json.loads(e["U_VERSIONS"]),
    "method": ("each round runs every command once, in a seeded random order drawn per round; a sample is the wall time "
               "from posix_spawn() to waitpid() (launch to exit, teardown included); 'shifted' images were chowned by the "
               "warm-up launches, so the measured ones only check the owner; all in one private mount namespace with a "
               "tmpfs on /run/systemd/nspawn and in a benchmark cgroup."),
    "commands": cmds,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF
log "launch: $RUNS rounds, interleaved"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC" "$WORK/userns-launch.json"

if ((CHOWN)); then
# The chown part: a fresh copy of the Debian image before every sample
# (untimed, then the page cache is warm for both alike).
SPEC2=$WORK/spec-chown.json
U_NETSPAWN=$NETSPAWN U_NSPAWN=$NSPAWN U_IMG=$IMAGE U_WORK=$WORK U_RUNS=$CHOWN_RUNS U_VERSIONS=$VERSIONS \
    "$PY" - "$SPEC2" <<'EOF'
import json, os, sys
e = os.environ
ns, sd, img, work = e["U_NETSPAWN"], e["U_NSPAWN"], e["U_IMG"], e["U_WORK"]
def fresh(d):
    return ["/bin/sh", "-c", 'rm -rf --one-file-system "$1" && cp -a "$2" "$1" && sync', "sh", d, img]
guest = {n: work + "/deb-" + n for n in ("ns", "sd", "ns0", "sd0")}
cmds = [
    {"name": "netspawn -U chown (first launch)", "prepare": fresh(guest["ns"]),
     "argv": [ns, "-q", "--register=no", "--private-users=pick", "--private-users-ownership=chown",
              "-D", guest["ns"], "/bin/true"]},
    {"name": "systemd-nspawn -U chown (first launch)", "prepare": fresh(guest["sd"]),
     "argv": [sd, "-q", "--register=no", "--keep-unit", "--private-users=pick", "--private-users-ownership=chown",
              "-D", guest["sd"], "/bin/true"]},
    {"name": "netspawn (fresh copy, no -U)", "prepare": fresh(guest["ns0"]),
     "argv": [ns, "-q", "--register=no", "-D", guest["ns0"], "/bin/true"]},
    {"name": "systemd-nspawn (fresh copy, no -U)", "prepare": fresh(guest["sd0"]),
     "argv": [sd, "-q", "--register=no", "--keep-unit", "-D", guest["sd0"], "/bin/true"]},
]
spec = {
    "title": "first launch of a Debian image with --private-users-ownership=chown (the whole tree is shifted)",
    "kind": "launch",
    "rounds": int(e["U_RUNS"]), "warmup": 1, "timeout_s": 0,
    "log_dir": work + "/logs-chown",
    "baseline": "netspawn (fresh copy, no -U)", "reference": "systemd-nspawn -U chown (first launch)",
    "target": "netspawn's chown launch no slower than systemd-nspawn's",
    "versions": json.loads(e["U_VERSIONS"]),
    "method": ("before every sample the guest directory is replaced by a fresh copy of the image (untimed, cp -a + "
               "sync); the sample is launch-to-exit of /bin/true, which for the chown rows includes shifting every "
               "inode of the tree."),
    "commands": cmds,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF
log "chown: $CHOWN_RUNS rounds of a fresh $(du -sh "$IMAGE" | cut -f1) Debian copy per sample"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC2" "$WORK/userns-chown.json"
fi

parts=(launch)
((CHOWN)) && parts+=(chown)
for part in "${parts[@]}"; do
    cp "$WORK/userns-$part.json" "$RESULTS_DIR/userns-$part.json"
    "$PY" "$BENCH_DIR/driver.py" report "$RESULTS_DIR/userns-$part.json" "$RESULTS_DIR/userns-$part.md"
    cat "$RESULTS_DIR/userns-$part.md"
done
log "written: ${parts[*]/#/$RESULTS_DIR/userns-} (.md and .json)"
