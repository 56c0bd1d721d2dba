#!/bin/bash
# In-process per-call latency of glibc's getpwuid_r through the NSS module:
# a UID of a machine with a user namespace (vu-NAME-U) with 1, 100 and 1000
# machines registered, against a local user from /etc/passwd (`files`), side
# by side in one process, inside a private mount namespace with its own
# /etc/nsswitch.conf (`passwd: files mymachines`; then, for reference,
# `passwd: mymachines files`) and /etc/passwd bind-mounted over the real
# ones, the module found through LD_LIBRARY_PATH and the registries on a
# private tmpfs over /run. Nothing on the host changes.
# Writes bench/results/nss-users.{md,json}. See bench/nss-README.md.
#
# Usage: bench/nss-users.sh [--rounds N] [--calls N] [--sizes LIST] [--processes N] [--no-build]
#   --rounds N      samples per scenario and process (default 40)
#   --calls N       getpwuid_r calls per sample (default 2000)
#   --sizes LIST    registry sizes, comma-separated (default 1,100,1000)
#   --processes N   measuring processes per nsswitch order, alternated (default 3)
#   --no-build      use target/release as it is
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=40 CALLS=2000 SIZES=1,100,1000 PROCS=3
while (($#)); do
    case $1 in
    --rounds) ROUNDS=${2:?}; shift ;;
    --rounds=*) ROUNDS=${1#*=} ;;
    --calls) CALLS=${2:?}; shift ;;
    --calls=*) CALLS=${1#*=} ;;
    --sizes) SIZES=${2:?}; shift ;;
    --sizes=*) SIZES=${1#*=} ;;
    --processes) PROCS=${2:?}; shift ;;
    --processes=*) PROCS=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $SIZES =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--sizes needs numbers separated by commas"
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $CALLS =~ ^[1-9][0-9]*$ && $PROCS =~ ^[1-9][0-9]*$ ]] ||
    die "--rounds/--calls/--processes need a positive number"

need_root
ensure_packages python3 util-linux
command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
    log "building: cargo build --release -p nss-mymachines --lib --example nss_users_bench"
    (cd "$REPO_DIR" && cargo build --release --quiet -p nss-mymachines --lib --example nss_users_bench) ||
        die "cargo build failed"
fi
[ -f "$TARGET/release/libnss_mymachines.so" ] && [ -x "$TARGET/release/examples/nss_users_bench" ] ||
    die "libnss_mymachines.so or examples/nss_users_bench missing in $TARGET/release"

WORK=$(mktemp -d -p "${BENCH_TMPDIR:-/var/tmp}" nss-users-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# Others may rebuild target/release during the run (shared checkout): measure private copies.
mkdir -p "$WORK/lib"
cp "$TARGET/release/libnss_mymachines.so" "$WORK/lib/libnss_mymachines.so.2"
cp "$TARGET/release/examples/nss_users_bench" "$WORK/nss_users_bench"
REV=$(cd "$REPO_DIR" && git describe --always --dirty 2>/dev/null || echo unknown)

# /etc/passwd as on this host, plus the local user the `files` scenario looks
# up, last (like a user added after installation; glibc's files backend reads
# the file line by line up to the match, so the last line is a `files` hit's
# worst case and costs what a `files` miss costs).
LOCAL_UID=64123
grep -q "^[^:]*:[^:]*:$LOCAL_UID:" /etc/passwd && die "UID $LOCAL_UID exists on this host; edit LOCAL_UID"
{ cat /etc/passwd; echo "nss-bench-user:x:$LOCAL_UID:$LOCAL_UID:NSS bench:/nonexistent:/usr/sbin/nologin"; } >"$WORK/passwd"
ORDERS=(files-first module-first)
printf 'passwd: files mymachines\ngroup: files mymachines\n' >"$WORK/nsswitch-files-first.conf"
printf 'passwd: mymachines files\ngroup: mymachines files\n' >"$WORK/nsswitch-module-first.conf"
IFS=, read -r -a SIZE_LIST <<<"$SIZES"

measure() {
    local order=$1 out=$2
    W=$WORK O=$order unshare -m bash -c '
        set -e
        mount --make-rprivate /
        mount -t tmpfs -o mode=0755 nss-bench /run
        mount --bind "$W/nsswitch-$O.conf" /etc/nsswitch.conf
        mount --bind "$W/passwd" /etc/passwd
        exec env LD_LIBRARY_PATH="$W/lib" "$W/nss_users_bench" /run "$@"
    ' sh "$LOCAL_UID" "$ROUNDS" "$CALLS" "${SIZE_LIST[@]}" >"$out" ||
        die "measuring process failed ($order)"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for p in $(seq "$PROCS"); do
    for o in "${ORDERS[@]}"; do
        log "process $p/$PROCS, $o: ${#SIZE_LIST[@]} sizes, $ROUNDS rounds x $CALLS calls"
        measure "$o" "$WORK/$o-$p.json"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

export WORK ROUNDS CALLS PROCS LOAD_BEFORE LOAD_AFTER RESULTS_DIR REV
export ORDER_LIST="${ORDERS[*]}" LINES_PASSWD=$(wc -l <"$WORK/passwd")
export CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
export NCPU=$(nproc) KERNEL=$(uname -r) GLIBC=$(ldd --version | head -1)
export COMMAND="bench/nss-users.sh --rounds $ROUNDS --calls $CALLS --sizes $SIZES --processes $PROCS"
mkdir -p "$RESULTS_DIR"
"$PY" - <<'EOF'
import json, os, statistics, datetime

work = os.environ["WORK"]
orders = os.environ["ORDER_LIST"].split()
procs = int(os.environ["PROCS"])
lines = {"files-first": "passwd: files mymachines", "module-first": "passwd: mymachines files"}

def quantile(v, q):
    v = sorted(v)
    pos = q * (len(v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)

def load(o):
    merged, order = {}, []
    for p in range(1, procs + 1):
        with open(f"{work}/{o}-{p}.json") as f:
            data = json.load(f)
        for s in data["scenarios"]:
            if s["label"] not in merged:
                order.append(s["label"])
                merged[s["label"]] = {"label": s["label"], "name": s["name"], "samples_us": [],
                                      "wall_samples_us": []}
            merged[s["label"]]["samples_us"] += s["samples_us"]
            merged[s["label"]]["wall_samples_us"] += s["wall_samples_us"]
    files = statistics.median(merged["files"]["samples_us"])
    rows = []
    for label in order:
        s = merged[label]
        v = s["samples_us"]
        s["median_us"] = statistics.median(v)
        s["p10_us"] = quantile(v, 0.1)
        s["p90_us"] = quantile(v, 0.9)
        s["ratio_to_files"] = s["median_us"] / files
        s["wall_median_us"] = statistics.median(s["wall_samples_us"])
        rows.append(s)
    return rows

result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "command": os.environ["COMMAND"], "revision": os.environ["REV"],
          "machine": {"cpu": os.environ["CPU"], "cores": int(os.environ["NCPU"]),
                      "kernel": os.environ["KERNEL"], "glibc": os.environ["GLIBC"],
                      "load_before": os.environ["LOAD_BEFORE"], "load_after": os.environ["LOAD_AFTER"]},
          "passwd_lines": int(os.environ["LINES_PASSWD"]),
          "rounds_per_process": int(os.environ["ROUNDS"]), "calls_per_sample": int(os.environ["CALLS"]),
          "processes_per_order": procs, "orders": {}}
for o in orders:
    rows = load(o)
    by = {r["label"]: r for r in rows}
    target = {}
    sizes = sorted(int(l.split("/")[1]) for l in by if l.startswith("mymachines/"))
    if sizes:
        worst = max(by[f"mymachines/{n}"]["ratio_to_files"] for n in sizes)
        target = {"worst_ratio": worst, "within_1_5x": worst <= 1.5}
    result["orders"][o] = {"nsswitch": lines[o], "scenarios": rows, "target": target}

rd = os.environ["RESULTS_DIR"]
with open(f"{rd}/nss-users.json", "w") as f:
    json.dump(result, f, indent=1)

L = ["# NSS module: getpwuid for user-namespace UIDs vs a local user in /etc/passwd\n"]
mc = result["machine"]
L.append(f"- date: {result['date']}; git {result['revision']}, cargo release profile")
L.append(f"- machine: {mc['cpu']}, {mc['cores']} cores, kernel {mc['kernel']}, {mc['glibc']}")
L.append(f"- load average at start: {mc['load_before']}; at end: {mc['load_after']}")
L.append(f"- rerun: `{result['command']}` (as root, from the repository)")
L.append(f"- {procs} measuring process(es) per nsswitch order, alternated; {result['rounds_per_process']} "
         f"rounds each; {result['calls_per_sample']} calls per sample (a sample is the mean of one batch); "
         "medians and p10/p90 over all samples. Times are the measuring thread's CPU time per call "
         "(user + system); the wall-time median is beside it\n")
L.append("Method: one process calls glibc `getpwuid_r` (and `getpwnam_r` for one row) in a loop inside a "
         "private mount namespace with its own nsswitch.conf and a copy of the host's /etc/passwd "
         f"({result['passwd_lines']} lines, the local user `nss-bench-user` appended last) bind-mounted "
         "over the real files; the module comes from LD_LIBRARY_PATH. Each registry size has its own "
         "registry on a private tmpfs over /run (entries and users-view links as `Registry::write` makes "
         "them; machine K has the standard range (K+16)·65536, 65536 IDs; one more machine has a "
         "100000-ID range), owned by the measuring process (so alive); the program switches between "
         "them with NETSPAWN_RUN_DIR. Scenarios alternate round by round. With `files` first, a "
         "machine UID pays a `files` miss (the whole file) before the module, as it would on a host.\n")
for o in orders:
    doc = " (the documented order: the target)" if o == "files-first" else " (reference)"
    L.append(f"## `{lines[o]}`{doc}\n")
    L.append("| lookup | what | µs/call (p10–p90) | wall µs | / files |")
    L.append("|---|---|---:|---:|---:|")
    for r in result["orders"][o]["scenarios"]:
        L.append(f"| {r['label']} | {r['name']} | {r['median_us']:.2f} ({r['p10_us']:.2f}–{r['p90_us']:.2f}) | "
                 f"{r['wall_median_us']:.2f} | {r['ratio_to_files']:.2f}x |")
    t = result["orders"][o]["target"]
    if t:
        L.append("")
        L.append(f"- worst machine-UID lookup (standard range, any size): {t['worst_ratio']:.2f}x `files` "
                 f"(target 1.5x: {'met' if t['within_1_5x'] else 'NOT met'})")
    L.append("")
with open(f"{rd}/nss-users.md", "w") as f:
    f.write("\n".join(L))
print("\n".join(L))
EOF
log "results in $RESULTS_DIR/nss-users.md and nss-users.json"
