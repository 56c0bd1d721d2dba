#!/bin/bash
# Shared helpers for bench/launch.sh and bench/boot.sh (sourced), and the
# isolated runner they re-enter (run as `lib.sh __inner CMD...`).
#
# What this owns: installing packages, building netspawn, the scratch
# directory, and the isolation that lets the benchmarks leave nothing behind:
#   - a private mount namespace for the measurements, with a tmpfs on
#     /run/systemd/nspawn (systemd-nspawn's lock and propagation directories)
#     and on /run/systemd/nspawn-uid (its -U range locks),
#     so no mount and no file there outlives the run;
#   - a cgroup of our own (netspawn-bench-PID, below the caller's cgroup) in
#     the unified and name=systemd hierarchies: systemd-nspawn --keep-unit
#     makes its payload/supervisor cgroups below the cgroup it runs in, and
#     netspawn is pointed there with NETSPAWN_CGROUP_PARENT; all removed at exit;
#   - NETSPAWN_RUN_DIR and NETSPAWN_IMAGE_DIR in the scratch directory, and
#     --register=no for both launchers.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
RESULTS_DIR=$BENCH_DIR/results
PY=/usr/bin/python3

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 1
}

need_root() { [ "$(id -u)" = 0 ] || die "run as root (namespaces, mounts, cgroups)"; }

# Installs the named Debian packages that are not installed yet.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# True when the Debian archive this machine uses has the package.
package_available() {
    apt-cache show "$1" >/dev/null 2>&1 && [ -n "$(apt-cache show "$1" 2>/dev/null | head -1)" ]
}

# Builds netspawn in release mode (or, with BENCH_NO_BUILD=1, takes the
# binaries already built) and sets NETSPAWN and NETSPAWNCTL.
build_netspawn() {
    ensure_packages gcc libc6-dev pkg-config libseccomp-dev
    local target=${CARGO_TARGET_DIR:-$REPO_DIR/target}
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
        command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
        log "building netspawn: cargo build --release -p netspawn --bins"
        (cd "$REPO_DIR" && cargo build --release --quiet -p netspawn --bins) || die "cargo build failed"
    fi
    NETSPAWN=$target/release/netspawn
    NETSPAWNCTL=$target/release/netspawnctl
    [ -x "$NETSPAWN" ] && [ -x "$NETSPAWNCTL" ] || die "netspawn binaries missing in $target/release"
}

# The mount point of the cgroup2 hierarchy and the caller's path in it.
cgroup2_mount() { awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo; }
cgroup1_named_mount() {
    awk -v want="$1" '$9 == "cgroup" { n = split($NF, o, ","); for (i = 1; i <= n; i++) if (o[i] == want) { print $5; exit } }' /proc/self/mountinfo
}
own_cgroup() { awk -F: -v c="$1" '$2 == c { print $3; exit }' /proc/self/cgroup; }

# Creates the scratch directory and the benchmark cgroups; installs the
# cleanup trap. Sets WORK, BENCH_CG_DIRS (where the bench process goes),
# BENCH_CG_CLEAN (everything to remove at exit), NETSPAWN_CGROUP_PARENT.
setup_sandbox() {
    WORK=$(mktemp -d -p "${BENCH_TMPDIR:-/var/tmp}" netspawn-bench.XXXXXX)
    BENCH_CG_DIRS=()
    BENCH_CG_CLEAN=()
    CREATED_RUN_DIRS=()
    trap cleanup_sandbox EXIT
    trap 'exit 130' INT TERM
    local name=netspawn-bench-$$ u s upath spath mnt
    u=$(cgroup2_mount)
    [ -n "$u" ] || die "no cgroup2 hierarchy mounted (netspawn needs one)"
    upath=$(own_cgroup "")
    [ "$upath" = / ] && upath=
    mkdir "$u$upath/$name"
    BENCH_CG_DIRS+=("$u$upath/$name")
    s=$(cgroup1_named_mount name=systemd)
    if [ -n "$s" ]; then
        spath=$(own_cgroup name=systemd)
        [ "$spath" = / ] && spath=
        mkdir "$s$spath/$name"
        BENCH_CG_DIRS+=("$s$spath/$name")
    fi
    # netspawn takes its parent as a path from each hierarchy's root, and
    # uses it in the v1 devices hierarchy too.
    export NETSPAWN_CGROUP_PARENT="${upath#/}${upath:+/}$name/netspawn"
    for mnt in $(awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo); do
        BENCH_CG_CLEAN+=("$mnt/$NETSPAWN_CGROUP_PARENT")
        BENCH_CG_CLEAN+=("$mnt/${NETSPAWN_CGROUP_PARENT%/netspawn}")
    done
    BENCH_CG_CLEAN+=("${BENCH_CG_DIRS[@]}")
    # systemd-nspawn keeps locks and a propagation directory in
    # /run/systemd/nspawn; the measurements see a tmpfs there. If the
    # directory does not exist, make it now and remove it at exit.
    local d
    for d in /run/systemd /run/systemd/nspawn /run/systemd/nspawn-uid; do
        if [ ! -d "$d" ]; then
            mkdir "$d"
            CREATED_RUN_DIRS=("$d" "${CREATED_RUN_DIRS[@]}")
        fi
    done
    # crun makes its default state directory even when given --root.
    if [ ! -e /run/crun ]; then CREATED_RUN_DIRS=(/run/crun "${CREATED_RUN_DIRS[@]}"); fi
    export NETSPAWN_RUN_DIR=$WORK/run NETSPAWN_IMAGE_DIR=$WORK/images
    export NETSPAWN_STATE_DIR=$WORK/state NETSPAWN_SETTINGS_PATH=$WORK/settings
    mkdir -p "$NETSPAWN_RUN_DIR" "$NETSPAWN_IMAGE_DIR" "$NETSPAWN_STATE_DIR" "$NETSPAWN_SETTINGS_PATH"
}

# Removes a cgroup directory tree (children first); retries briefly while
# exiting processes still hold it.
remove_cgroup_tree() {
    local dir=$1 i
    for i in $(seq 50); do
        [ -d "$dir" ] || return 0
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null && return 0
        sleep 0.1
    done
    log "warning: could not remove cgroup $dir"
}

cleanup_sandbox() {
    local rc=$? d
    trap - EXIT
    set +e
    for d in "${BENCH_CG_CLEAN[@]}"; do remove_cgroup_tree "$d"; done
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        if awk -v w="$WORK" 'index($5, w) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            log "warning: mounts left under $WORK; not deleting it"
        else
            rm -rf --one-file-system "$WORK"
        fi
    fi
    for d in "${CREATED_RUN_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
    exit "$rc"
}

# Runs a command in the isolated environment (private mount namespace,
# benchmark cgroups). BENCH_MASK_CG2_CONTROLLERS=1 also hides the cgroup2
# controller list on a hybrid host, which crun needs (see README).
run_isolated() {
    unshare -m --propagation private -- /bin/bash "$BENCH_DIR/lib.sh" __inner "${BENCH_CG_DIRS[@]}" -- "$@"
}

# Its arguments as a JSON array (to hand argv lists to the driver's spec).
json_argv() { "$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }

# Versions of the tools, as one JSON object (for the reports).
versions_json() {
    local rev dirty=""
    rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO_DIR" diff --quiet HEAD -- crates 2>/dev/null || dirty=" (+ uncommitted changes in crates/)"
    "$PY" - "$@" <<EOF
import json, subprocess, sys
def first(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
    except Exception:
        return "unavailable"
v = {"netspawn": "git $rev$dirty, cargo release profile"}
for arg in sys.argv[1:]:
    name, cmd = arg.split("=", 1)
    v[name] = first(cmd.split())
print(json.dumps(v))
EOF
}

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = __inner ]; then
    # Inside the private mount namespace: nothing mounted here outlives it.
    shift
    while [ "$1" != -- ]; do
        echo $$ >"$1/cgroup.procs"
        shift
    done
    shift
    mount -t tmpfs -o mode=0755,size=16m netspawn-bench /run/systemd/nspawn
    # systemd-nspawn -U's UID range locks.
    mount -t tmpfs -o mode=0755,size=1m netspawn-bench /run/systemd/nspawn-uid
    if [ "${BENCH_MASK_CG2_CONTROLLERS:-0}" = 1 ]; then
        u=$(cgroup2_mount)
        if [ "$u" != /sys/fs/cgroup ] && [ -n "$(cat "$u/cgroup.controllers")" ]; then
            mount --bind /dev/null "$u/cgroup.controllers"
        fi
    fi
    exec "$@"
fi

# Copies netspawn, netspawnctl and netspawn-netd (built first unless
# BENCH_NO_BUILD=1) into $WORK/bin: others may rebuild target/release during a
# run in a shared checkout, and netspawn starts the netspawn-netd that sits
# next to it. Sets BIN_ID to the copies' names, hashes and build times.
private_binaries() {
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        (cd "$REPO_DIR" && cargo build --release --quiet -p netspawn-netd --bins) ||
            log "warning: could not build netspawn-netd; using the one in target/release if any"
    fi
    mkdir -p "$WORK/bin"
    local b
    for b in "$NETSPAWN" "$NETSPAWNCTL" "$(dirname "$NETSPAWN")/netspawn-netd"; do
        [ -x "$b" ] || die "missing binary $b"
        cp -p "$b" "$WORK/bin/"
    done
    BIN_ID="$(for b in "$WORK"/bin/*; do printf '%s %s (built %s), ' "$(basename "$b")" "$(sha256sum "$b" | cut -c1-12)" "$(date -u -r "$b" '+%Y-%m-%d %H:%M UTC')"; done)"
}
