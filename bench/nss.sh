#!/bin/bash
# In-process per-lookup latency of glibc's getaddrinfo through the NSS module:
# a machine name with 1, 100 and 1000 machines registered, against a name from
# /etc/hosts (`files`), in one process, inside a private mount namespace with
# its own /etc/nsswitch.conf (`hosts: files mymachines`; then, for reference,
# `hosts: mymachines files`) and /etc/hosts bind-mounted over the real ones,
# the module found through LD_LIBRARY_PATH and the registries on a private
# tmpfs over /run. Nothing on the host changes.
# Writes bench/results/nss.{md,json}. See bench/nss-README.md.
#
# Usage: bench/nss.sh [--rounds N] [--calls N] [--sizes LIST] [--processes N]
#                     [--baseline REV] [--no-build]
#   --rounds N      samples per scenario and process (default 40)
#   --calls N       getaddrinfo calls per sample (default 2000)
#   --sizes LIST    registry sizes, comma-separated (default 1,100,1000)
#   --processes N   measuring processes per module, alternated (default 3)
#   --baseline REV  also measure the module as built from git revision REV
#                   (git archive into the scratch dir, own target dir)
#   --no-build      use target/release as it is
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=40 CALLS=2000 SIZES=1,100,1000 PROCS=3 BASELINE=
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
    --baseline) BASELINE=${2:?}; shift ;;
    --baseline=*) BASELINE=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
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
    log "building: cargo build --release -p nss-mymachines --lib --example nss_bench"
    (cd "$REPO_DIR" && cargo build --release --quiet -p nss-mymachines --lib --example nss_bench) ||
        die "cargo build failed"
fi
[ -f "$TARGET/release/libnss_mymachines.so" ] && [ -x "$TARGET/release/examples/nss_bench" ] ||
    die "libnss_mymachines.so or examples/nss_bench missing in $TARGET/release"

WORK=$(mktemp -d -p "${BENCH_TMPDIR:-/var/tmp}" nss-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# Others may rebuild target/release during the run (shared checkout): measure private copies.
mkdir -p "$WORK/current"
cp "$TARGET/release/libnss_mymachines.so" "$WORK/current/libnss_mymachines.so.2"
cp "$TARGET/release/examples/nss_bench" "$WORK/nss_bench"
MODULES=(current)
DESCRIBE=$(cd "$REPO_DIR" && git describe --always --dirty 2>/dev/null || echo unknown)
declare -A MODULE_REV=([current]="$DESCRIBE (working tree)")

if [ -n "$BASELINE" ]; then
    rev=$(cd "$REPO_DIR" && git rev-parse --short "$BASELINE^{commit}") || die "no such revision: $BASELINE"
    log "building the module at $rev (baseline) in $WORK/src-base"
    mkdir -p "$WORK/src-base" "$WORK/baseline"
    (cd "$REPO_DIR" && git archive --format=tar "$rev") | tar -x -C "$WORK/src-base"
    (cd "$WORK/src-base" && CARGO_TARGET_DIR=$WORK/target-base cargo build --release --quiet -p nss-mymachines --lib) ||
        die "cargo build of $rev failed"
    cp "$WORK/target-base/release/libnss_mymachines.so" "$WORK/baseline/libnss_mymachines.so.2"
    rm -rf "$WORK/target-base" "$WORK/src-base"
    MODULES=(baseline current)
    MODULE_REV[baseline]="$rev"
fi

# /etc/hosts as on this host, plus the name the `files` scenario looks up, last
# (glibc's files backend reads the whole file for getaddrinfo either way).
HOSTS_NAME=nss-bench-host
{ cat /etc/hosts; echo "192.0.2.55 $HOSTS_NAME"; } >"$WORK/hosts"
# The order the project documents (the target), and the module first (reference).
ORDERS=(files-first module-first)
echo "hosts: files mymachines" >"$WORK/nsswitch-files-first.conf"
echo "hosts: mymachines files" >"$WORK/nsswitch-module-first.conf"
IFS=, read -r -a SIZE_LIST <<<"$SIZES"

# One measuring process: private mounts (a tmpfs over /run holds the
# registries; nothing the program needs lives in the host's /run), then the
# program, its JSON on stdout.
measure() {
    local module=$1 order=$2 out=$3
    W=$WORK M=$module O=$order unshare -m bash -c '
        set -e
        mount --make-rprivate /
        mount -t tmpfs -o mode=0755 nss-bench /run
        mount --bind "$W/nsswitch-$O.conf" /etc/nsswitch.conf
        mount --bind "$W/hosts" /etc/hosts
        exec env LD_LIBRARY_PATH="$W/$M" "$W/nss_bench" /run "$@"
    ' sh "$HOSTS_NAME" "$ROUNDS" "$CALLS" "${SIZE_LIST[@]}" >"$out" ||
        die "measuring process failed (module $module, $order)"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for p in $(seq "$PROCS"); do
    for o in "${ORDERS[@]}"; do
        for m in "${MODULES[@]}"; do
            log "process $p/$PROCS, module $m, $o: ${#SIZE_LIST[@]} sizes, $ROUNDS rounds x $CALLS calls"
            measure "$m" "$o" "$WORK/$m-$o-$p.json"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

export WORK ROUNDS CALLS PROCS SIZES LOAD_BEFORE LOAD_AFTER RESULTS_DIR
export ORDER_LIST="${ORDERS[*]}" MODULE_LIST="${MODULES[*]}" REV_CURRENT="${MODULE_REV[current]}" REV_BASELINE="${MODULE_REV[baseline]:-}"
export CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
export NCPU=$(nproc) KERNEL=$(uname -r) GLIBC=$(ldd --version | head -1)
mkdir -p "$RESULTS_DIR"
"$PY" - <<'EOF'
import json, os, statistics, datetime

work = os.environ["WORK"]
modules = os.environ["MODULE_LIST"].split()
orders = os.environ["ORDER_LIST"].split()
procs = int(os.environ["PROCS"])
revs = {"current": os.environ["REV_CURRENT"], "baseline": os.environ["REV_BASELINE"]}
lines = {"files-first": "hosts: files mymachines", "module-first": "hosts: mymachines files"}

def quantile(v, q):
    v = sorted(v)
    pos = q * (len(v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)

def load(m, o):
    merged, order = {}, []
    for p in range(1, procs + 1):
        with open(f"{work}/{m}-{o}-{p}.json") as f:
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

def verdict(rows):
    by = {r["label"]: r for r in rows}
    sizes = [int(l.split("/")[1]) for l in by if l.startswith("mymachines/")]
    out = {}
    if 100 in sizes:
        out["ratio_at_100"] = by["mymachines/100"]["ratio_to_files"]
        out["within_1_5x_at_100"] = out["ratio_at_100"] <= 1.5
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        t_lo, t_hi = by[f"mymachines/{lo}"]["median_us"], by[f"mymachines/{hi}"]["median_us"]
        out["growth"] = {"from": lo, "to": hi, "time_ratio": t_hi / t_lo, "size_ratio": hi / lo}
        out["sublinear"] = t_hi / t_lo < hi / lo
    return out

result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "machine": {"cpu": os.environ["CPU"], "cores": int(os.environ["NCPU"]),
                      "kernel": os.environ["KERNEL"], "glibc": os.environ["GLIBC"],
                      "load_before": os.environ["LOAD_BEFORE"], "load_after": os.environ["LOAD_AFTER"]},
          "rounds_per_process": int(os.environ["ROUNDS"]), "calls_per_sample": int(os.environ["CALLS"]),
          "processes_per_module_and_order": procs, "modules": {}}
for m in modules:
    result["modules"][m] = {"revision": revs[m], "orders": {}}
    for o in orders:
        rows = load(m, o)
        result["modules"][m]["orders"][o] = {"nsswitch": lines[o], "scenarios": rows, "target": verdict(rows)}

rd = os.environ["RESULTS_DIR"]
with open(f"{rd}/nss.json", "w") as f:
    json.dump(result, f, indent=1)

L = ["# NSS module: getaddrinfo latency, machine names vs /etc/hosts\n"]
mc = result["machine"]
L.append(f"- date: {result['date']}")
L.append(f"- machine: {mc['cpu']}, {mc['cores']} cores, kernel {mc['kernel']}, {mc['glibc']}")
L.append(f"- load average at start: {mc['load_before']}; at end: {mc['load_after']}")
for m in modules:
    L.append(f"- module `{m}`: git {revs[m]}, cargo release profile")
L.append(f"- {procs} measuring process(es) per module and nsswitch order, alternated; "
         f"{result['rounds_per_process']} rounds each; {result['calls_per_sample']} calls per sample "
         "(a sample is the mean of one batch); medians and p10/p90 over all samples. Times are the "
         "measuring thread's CPU time per call (user + system: the machine is shared, and a lookup never "
         "sleeps, so this is its latency without other work preempting it); the wall-time median is "
         "given beside it\n")
L.append("Method: one process calls glibc `getaddrinfo(name, NULL, {AF_UNSPEC, SOCK_STREAM})` in a loop "
         "inside a private mount namespace with its own nsswitch.conf and a copy of the host's /etc/hosts "
         "(plus the `files` name, last) bind-mounted over the real files; the module comes from "
         "LD_LIBRARY_PATH. Each registry size has its own registry (`/run/netspawn-N/machines` on a private "
         "tmpfs over /run), written in the launcher's format with one IPv4 address per machine (like the "
         "hosts line) and owned by the measuring process (so alive); the program switches between them "
         "with NETSPAWN_RUN_DIR. Scenarios alternate round by round. With `files` first, a machine lookup "
         "pays a `files` miss before the module, as it would on a host. See bench/nss-README.md.\n")
for o in orders:
    L.append(f"## `{lines[o]}`" + (" (the documented order: the target)" if o == "files-first" else " (reference)") + "\n")
    L.append("| lookup | name |" + "".join(f" `{m}` µs/call (p10–p90) | wall | `{m}` / files |" for m in modules))
    L.append("|---|---|" + "---:|---:|---:|" * len(modules))
    rows0 = result["modules"][modules[0]]["orders"][o]["scenarios"]
    for i, r0 in enumerate(rows0):
        if r0["label"].startswith("floor/"):
            continue
        cells = ""
        for m in modules:
            r = result["modules"][m]["orders"][o]["scenarios"][i]
            cells += (f" {r['median_us']:.2f} ({r['p10_us']:.2f}–{r['p90_us']:.2f}) | {r['wall_median_us']:.2f} | "
                      f"{r['ratio_to_files']:.2f}x |")
        L.append(f"| {r0['label']} | `{r0['name']}` |{cells}")
    L.append("")
    for m in modules:
        t = result["modules"][m]["orders"][o]["target"]
        parts = []
        if "ratio_at_100" in t:
            parts.append(f"{t['ratio_at_100']:.2f}x files at 100 machines (target 1.5x: "
                         f"{'met' if t['within_1_5x_at_100'] else 'NOT met'})")
        if "growth" in t:
            g = t["growth"]
            parts.append(f"{g['from']} → {g['to']} machines: {g['time_ratio']:.2f}x the time for "
                         f"{g['size_ratio']:.0f}x the machines (less than linear: {'met' if t['sublinear'] else 'NOT met'})")
        L.append(f"- `{m}`: " + "; ".join(parts))
    L.append("")
floors = [r for r in result["modules"]["current"]["orders"]["files-first"]["scenarios"]
          if r["label"].startswith("floor/")]
if floors:
    L.append("## System-call floors (measured in the same processes)\n")
    L.append("What the module's steps cost as bare system calls here. The current module: "
             "`readlink` of a hosts link (a machine) and of a missing one (an unknown name), "
             "`kill(PID, 0)` (the launcher check). Modules from before the hosts view: reading an "
             "entry (`open`+`read`+`close`), opening a missing one (tmpfs keeps no negative "
             "dentries), reading `/proc/PID/stat` (their launcher check), setting and restoring "
             "the signal mask.\n")
    L.append("| step | µs (p10–p90) |")
    L.append("|---|---:|")
    for r in floors:
        L.append(f"| {r['label'][6:]} | {r['median_us']:.2f} ({r['p10_us']:.2f}–{r['p90_us']:.2f}) |")
    L.append("")
if "baseline" in modules:
    L.append("## Before / after (median µs per call)\n")
    L.append("| nsswitch | lookup | baseline | current | change |")
    L.append("|---|---|---:|---:|---:|")
    for o in orders:
        base = {r["label"]: r for r in result["modules"]["baseline"]["orders"][o]["scenarios"]}
        for r in result["modules"]["current"]["orders"][o]["scenarios"]:
            b = base.get(r["label"])
            if b and not r["label"].startswith("floor/"):
                L.append(f"| {o} | {r['label']} | {b['median_us']:.2f} | {r['median_us']:.2f} | "
                         f"{(r['median_us'] - b['median_us']):+.2f} µs |")
    L.append("")
with open(f"{rd}/nss.md", "w") as f:
    f.write("\n".join(L))
print("\n".join(L))
EOF
log "results in $RESULTS_DIR/nss.md and nss.json"
