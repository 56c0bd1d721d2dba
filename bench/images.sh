#!/bin/bash
# Image transfer of a Debian-sized tree: netspawnctl import-tar / export-tar /
# pull-tar (HTTP on loopback) against plain `tar -x`, `tar -c` and
# `curl | tar -x`, interleaved in one run by bench/driver.py.
# Writes bench/results/images.{md,json}. See bench/README.md.
#
# The tree is the test suite's cached Debian image
# (/var/cache/netspawn-test/debian-bookworm, only read: tarred once into the
# scratch directory; build it with scripts/test or
# `netspawnctl bootstrap debian`). The archive is an uncompressed tar, so the
# comparison is of the extraction and archiving, not of a compressor.
#
# Usage: bench/images.sh [--runs N] [--warmup N] [--no-build] [--source DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=7 WARMUP=1 SOURCE=/var/cache/netspawn-test/debian-bookworm
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --warmup=*) WARMUP=${1#*=} ;;
    --source) SOURCE=${2:?}; shift ;;
    --source=*) SOURCE=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "--runs/--warmup need a number"
[ -d "$SOURCE" ] || die "no tree at $SOURCE (run scripts/test once, or pass --source DIR)"

need_root
ensure_packages python3 curl tar coreutils
build_netspawn
setup_sandbox
# A private copy: others may rebuild target/release during the run.
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/srv" "$RESULTS_DIR"
cp -p "$NETSPAWNCTL" "$WORK/bin/"
CTL=$WORK/bin/netspawnctl

log "tarring $SOURCE into the scratch directory"
tar -C "$SOURCE" --numeric-owner -cf "$WORK/srv/deb.tar" .
SIZE=$(stat -c %s "$WORK/srv/deb.tar")
FILES=$(tar -tf "$WORK/srv/deb.tar" | wc -l)
"$CTL" import-tar "$WORK/srv/deb.tar" deb

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Bounded in time: it ends by itself even if this script is killed.
(cd "$WORK/srv" && exec timeout 3600 "$PY" -m http.server "$PORT" --bind 127.0.0.1 >"$WORK/http.log" 2>&1) &
HTTP_PID=$!
stop_server() { kill "$HTTP_PID" 2>/dev/null || true; wait "$HTTP_PID" 2>/dev/null || true; }
trap 'stop_server; cleanup_sandbox' EXIT
URL=http://127.0.0.1:$PORT/deb.tar
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "$URL" && break; sleep 0.1; done
curl -sf -o /dev/null -r 0-0 "$URL" || die "the HTTP server did not start"

log "versions"
VERSIONS=$(versions_json "tar=tar --version" "curl=curl --version" "python=$PY --version" "kernel=uname -r")

SPEC=$WORK/spec.json
L_CTL=$CTL L_WORK=$WORK L_IMAGES=$NETSPAWN_IMAGE_DIR L_URL=$URL L_RUNS=$RUNS L_WARMUP=$WARMUP \
    L_VERSIONS=$VERSIONS L_TAR=$(command -v tar) L_SH=$(command -v sh) \
    L_SIZE=$SIZE L_FILES=$FILES "$PY" - "$SPEC" <<'EOF'
import json, os, sys
e = os.environ
ctl, work, images, url, tar, sh = (e[k] for k in ("L_CTL", "L_WORK", "L_IMAGES", "L_URL", "L_TAR", "L_SH"))
# Before each sample (not timed): the destination removed and everything
# written back, so no sample pays for the previous one's dirty pages.
fresh = lambda d: [sh, "-c", f"rm -rf '{d}' && mkdir '{d}' && sync"]
gone = lambda p: [sh, "-c", f"rm -rf '{p}' && sync"]
cmds = [
    {"name": "netspawnctl import-tar", "argv": [ctl, "-q", "import-tar", f"{work}/srv/deb.tar", "imp"],
     "prepare": gone(f"{images}/imp")},
    {"name": "tar -x", "argv": [tar, "-C", f"{work}/x", "--numeric-owner", "-xpf", f"{work}/srv/deb.tar"],
     "prepare": fresh(f"{work}/x")},
    {"name": "netspawnctl export-tar", "argv": [ctl, "-q", "export-tar", "deb", f"{work}/out1.tar"],
     "prepare": gone(f"{work}/out1.tar")},
    {"name": "tar -c", "argv": [tar, "-C", f"{images}/deb", "--numeric-owner", "-cf", f"{work}/out2.tar", "."],
     "prepare": gone(f"{work}/out2.tar")},
    {"name": "netspawnctl pull-tar", "argv": [ctl, "-q", "pull-tar", "--verify=no", url, "pulled"],
     "prepare": gone(f"{images}/pulled")},
    {"name": "curl piped to tar -x", "argv": [sh, "-c", f"curl -sf '{url}' | tar -C '{work}/y' --numeric-owner -xpf -"],
     "prepare": fresh(f"{work}/y")},
]
spec = {
    "title": f"image transfer of the Debian test image ({int(e['L_SIZE']) >> 20} MiB tar, {e['L_FILES']} entries)",
    "kind": "images",
    "rounds": int(e["L_RUNS"]), "warmup": int(e["L_WARMUP"]), "timeout_s": 600,
    "log_dir": work + "/logs",
    "baseline": "tar -x",
    "target": "each netspawnctl verb within 1.2x of its plain tool (import-tar vs tar -x, export-tar vs tar -c, pull-tar vs curl | tar -x)",
    "versions": json.loads(e["L_VERSIONS"]),
    "method": ("each round runs every command once, in a seeded random order drawn per round; a sample is the wall time "
               "from posix_spawn() to waitpid() in bench/driver.py; before each sample (not timed) the destination is "
               "removed and `sync` writes everything back, so no sample pays for the previous one's dirty pages (nor "
               "does any tool sync its own writes); the archive is uncompressed and in the page cache; the HTTP server is python3 -m "
               "http.server on 127.0.0.1; everything in a scratch directory under /var/tmp (ext4 here), so import "
               "writes the same files tar -x writes, with owners, modes, times and device nodes kept by both."),
    "commands": cmds,
    "progress": True,
}
json.dump(spec, open(sys.argv[1], "w"), indent=1)
EOF

log "measuring: $RUNS rounds (+$WARMUP warm-up), interleaved"
run_isolated "$PY" "$BENCH_DIR/driver.py" run "$SPEC" "$WORK/images.json"
cp "$WORK/images.json" "$RESULTS_DIR/images.json"
"$PY" "$BENCH_DIR/driver.py" report "$RESULTS_DIR/images.json" "$RESULTS_DIR/images.md"
# The pairs the target is about.
"$PY" - "$RESULTS_DIR/images.json" "$RESULTS_DIR/images.md" <<'EOF'
import json, sys
out = json.load(open(sys.argv[1]))
s = out["stats"]
pairs = [("netspawnctl import-tar", "tar -x"), ("netspawnctl export-tar", "tar -c"),
         ("netspawnctl pull-tar", "curl piped to tar -x")]
lines = ["", "## Each verb against its plain tool (ratio of medians; target: at most 1.2x)", "",
         "| netspawnctl | median | plain tool | median | ratio |", "|---|---|---|---|---|"]
out["pairs"] = {}
for a, b in pairs:
    r = s[a]["median_ms"] / s[b]["median_ms"]
    out["pairs"][a] = {"vs": b, "ratio": round(r, 2)}
    lines.append(f"| {a} | {s[a]['median_ms']:.0f} ms | {b} | {s[b]['median_ms']:.0f} ms | {r:.2f}x |")
open(sys.argv[2], "a").write("\n".join(lines) + "\n")
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF
log "written: $RESULTS_DIR/images.md and images.json"
cat "$RESULTS_DIR/images.md" >&2
