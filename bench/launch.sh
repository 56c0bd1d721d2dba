#!/bin/bash
# Launch-to-exit of /bin/true in a busybox image: netspawn vs systemd-nspawn vs
# bare unshare+chroot (and crun when Debian has it), interleaved in one run.
# Writes bench/results/launch.{md,json}. See bench/README.md.
#
# Usage: bench/launch.sh [--runs N] [--warmup N] [--no-crun] [--no-hyperfine] [--no-build]
#        bench/launch.sh --profile [--launches N] [--no-build]
#   --profile: no comparison; perf record -g over N (200) netspawn launches and
#              the top symbols, plus strace -c -f of one launch (and the longest
#              stretches without a syscall). Also written to results/launch-profile.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=200 WARMUP=10 CRUN=1 HYPERFINE=1 PROFILE=0 LAUNCHES=200
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --warmup=*) WARMUP=${1#*=} ;;
    --launches) LAUNCHES=${2:?}; shift ;;
    --launches=*) LAUNCHES=${1#*=} ;;
    --no-crun) CRUN=0 ;;
    --no-hyperfine) HYPERFINE=0 ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --profile) PROFILE=1 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ && $LAUNCHES =~ ^[1-9][0-9]*$ ]] || die "--runs/--warmup/--launches need a number"

need_root
pkgs=(python3 systemd-container busybox-static util-linux coreutils)
((PROFILE)) && pkgs+=(linux-perf strace)
((HYPERFINE && !PROFILE)) && pkgs+=(hyperfine)
if ((CRUN && !PROFILE)); then
    if package_available crun; then pkgs+=(crun); else
        log "crun is not in this machine's Debian archive; skipping it"
        CRUN=0
    fi
fi
ensure_packages "${pkgs[@]}"
build_netspawn
setup_sandbox

log "making the busybox image (netspawnctl bootstrap busybox)"
"$NETSPAWNCTL" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || {
    tail "$WORK/bootstrap.log" >&2
    die "netspawnctl bootstrap busybox failed"
}
IMG=$NETSPAWN_IMAGE_DIR/bb
[ -x "$IMG/bin/true" ] || die "the busybox image has no /bin/true"
mkdir -p "$WORK/logs" "$RESULTS_DIR"
NS_ARGS=(-q --register=no -D "$IMG" /bin/true)

if ((PROFILE)); then
    out=$RESULTS_DIR/launch-profile.txt
    log "perf record -g over $LAUNCHES netspawn launches"
    run_isolated env BENCH_N="$LAUNCHES" perf record -q -g -o "$WORK/perf.data" -- /bin/sh -c \
        'i=0; while [ $i -lt "$BENCH_N" ]; do "$@" || exit 1; i=$((i+1)); done' sh \
        "$NETSPAWN" "${NS_ARGS[@]}" 2>"$WORK/perf.log" || {
        cat "$WORK/perf.log" >&2
        die "perf record failed"
    }
    {
        echo "# netspawn launch profile, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# $LAUNCHES launches of: netspawn ${NS_ARGS[*]}"
        echo
        echo "## CPU samples by process and object (perf report --sort comm,dso)"
        perf report -i "$WORK/perf.data" --stdio --no-children --sort comm,dso -g none --percent-limit 1 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -30
        echo
        echo "## Top symbols, self time (perf report --no-children --sort dso,sym)"
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,sym -g none --percent-limit 0.5 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -50
        echo
        echo "## Top symbols, with children (call graphs from frame pointers: partial for Rust code)"
        perf report -i "$WORK/perf.data" --stdio --children --sort sym -g none --percent-limit 4 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -40
        echo
        # The strace runs are single launches after a pause, as a user would
        # start one: back-to-back launches hide costs that a recent launch
        # has already paid (see README).
        echo "## strace -c -f of one launch after 1 s idle (system CPU time per syscall)"
        sleep 1
        run_isolated strace -f -c -o "$WORK/strace-c.txt" "$NETSPAWN" "${NS_ARGS[@]}"
        cat "$WORK/strace-c.txt"
        echo
        echo "## strace -c -f -w of one launch after 1 s idle (wall-clock time per syscall)"
        sleep 1
        run_isolated strace -f -c -w -o "$WORK/strace-w.txt" "$NETSPAWN" "${NS_ARGS[@]}"
        cat "$WORK/strace-w.txt"
        echo
        echo "## Longest syscalls and stretches without a syscall (user-space work) in one launch after 1 s idle (strace -f -ttt -T)"
        sleep 1
        run_isolated strace -f -ttt -T -o "$WORK/strace-t.txt" "$NETSPAWN" "${NS_ARGS[@]}"
        "$PY" "$BENCH_DIR/strace_gaps.py" "$WORK/strace-t.txt" 12
    } | tee "$out"
    log "written: $out"
    exit 0
fi

# crun: an OCI bundle around the same busybox rootfs running /bin/true, with
# the same namespaces as netspawn (pid, mount, uts, ipc, cgroup; host network).
CRUN_CMDS=()
if ((CRUN)); then
    mkdir -p "$WORK/bundle" "$WORK/crun-state"
    (cd "$WORK/bundle" && crun spec)
    "$PY" - "$WORK/bundle/config.json" "$IMG" <<'EOF'
import json, sys
path, rootfs = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": False}
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
ns = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
if not any(n["type"] == "cgroup" for n in ns):
    ns.append({"type": "cgroup"})
c["linux"]["namespaces"] = ns
json.dump(c, open(path, "w"), indent=1)
EOF
    export BENCH_MASK_CG2_CONTROLLERS=1
fi

log "versions"
VERSIONS=$(versions_json "systemd-nspawn=systemd-nspawn --version" "unshare=unshare --version" \
    "busybox=$IMG/bin/busybox" "crun=crun --version" "hyperfine=hyperfine --version" "kernel=uname -r")

SPEC=$WORK/spec.json
L_NETSPAWN=$NETSPAWN L_NSPAWN=$(command -v systemd-nspawn) L_UNSHARE=$(command -v unshare) \
    L_CHROOT=$(command -v chroot) L_CRUN=$( ((CRUN)) && command -v crun || true) L_IMG=$IMG L_WORK=$WORK \
    L_RUNS=$RUNS L_WARMUP=$WARMUP L_VERSIONS=$VERSIONS "$PY" - "$SPEC" <<'EOF'
import json, os, sys
e = os.environ
img, work = e["L_IMG"], e["L_WORK"]
cmds = [
    {"name": "netspawn", "argv": [e["L_NETSPAWN"], "-q", "--register=no", "-D", img, "/bin/true"]},
    {"name": "systemd-nspawn", "argv": [e["L_NSPAWN"], "-q", "--register=no", "--keep-unit", "-D", img, "/bin/true"]},
    {"name": "unshare+chroot", "argv": [e["L_UNSHARE"], "-m", "-p", "-f", "-u", "-i", e["L_CHROOT"], img, "/bin/true"]},
]
crun = e["L_CRUN"]
if crun:
    state, bundle = "--root=" + work + "/crun-state", work + "/bundle"
    cmds.append({"name": "crun", "argv": [crun, state, "run", "--bundle", bundle, "netspawn-bench"],
                 "note": "cgroupfs manager; on a hybrid host the cgroup2 controller list is hidden from it, see README"})
    cmds.append({"name": "crun (no cgroup)",
                 "argv": [crun, "--cgroup-manager=disabled", state, "run", "--bundle", bundle, "netspawn-bench"],
                 "note": "--cgroup-manager=disabled: no cgroup work at all"})
cmds.append({"name": "host /bin/true", "argv": ["/bin/true"], "note": "the driver's own spawn+wait floor, no container"})
spec = {
    "title": "netspawn launch-to-exit of /bin/true (busybox image)",
    "kind": "launch",
    "rounds": int(e["L_RUNS"]), "warmup": int(e["L_WARMUP"]), "timeout_s": 0,
    "log_dir": work + "/logs",
    "baseline": "unshare+chroot", "reference": "systemd-nspawn",
    "target": "netspawn within 1.5x of unshare+chroot (faster than crun, over 10x faster than systemd-nspawn)",
    "versions": json.loads(e["L_VERSIONS"]),
    "method": ("each round runs every command once, in a seeded random order drawn per round; a sample is the wall time "
               "from posix_spawn() to waitpid() in bench/driver.py (launch to exit, teardown included); stdin /dev/null, "
               "output to a file; all in one private mount namespace with a tmpfs on /run/systemd/nspawn and in a "
               "benchmark cgroup; image in a scratch directory under /var/tmp."),
    "commands": cmds,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF

log "measuring: $RUNS rounds (+$WARMUP warm-up), interleaved"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC" "$WORK/launch.json"

if ((HYPERFINE)); then
    log "cross-check: hyperfine -N, $RUNS runs per command"
    mapfile -t HF_CMDS < <("$PY" -c 'import json,shlex,sys; [print(shlex.join(c["argv"])) for c in json.load(open(sys.argv[1]))["commands"]]' "$SPEC")
    NAMES=$("$PY" -c 'import json,sys; print(json.dumps([c["name"] for c in json.load(open(sys.argv[1]))["commands"]]))' "$SPEC")
    run_isolated hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
        "${HF_CMDS[@]}" >"$WORK/hyperfine.log" 2>&1 || {
        tail -20 "$WORK/hyperfine.log" >&2
        die "hyperfine failed"
    }
    "$PY" "$BENCH_DIR/driver.py" hyperfine "$WORK/launch.json" "$WORK/hyperfine.json" "$NAMES"
fi

[ -z "$(ls -A "$NETSPAWN_RUN_DIR/machines" 2>/dev/null)" ] || die "registry entries left in $NETSPAWN_RUN_DIR/machines"
cp "$WORK/launch.json" "$RESULTS_DIR/launch.json"
"$PY" "$BENCH_DIR/driver.py" report "$RESULTS_DIR/launch.json" "$RESULTS_DIR/launch.md"
cat "$RESULTS_DIR/launch.md"
log "written: $RESULTS_DIR/launch.md, $RESULTS_DIR/launch.json"
