#!/bin/bash
# Fuzzes the .nspawn and .network parsers and the LLMNR responder on stable Rust (no cargo-fuzz,
# which needs nightly): builds tests/examples/fuzz_stable.rs in release mode
# with panic=unwind, debug assertions and overflow checks (as cargo-fuzz
# builds), then runs it for N executions per target, seeded from
# fuzz/corpus/{settings,netfile,llmnr}/. Prints execs/s and crashes per target;
# crashing inputs go to $WORK/crashes (kept, and named, when any are found).
#
# Usage: bench/fuzz.sh [--execs N] [--seed S] [--target settings|netfile|llmnr] [--no-build]
#   --execs N   executions per target (10000000)
#   --seed S    the PRNG's seed (a fixed default, so runs are reproducible)
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

EXECS=10000000 SEED=11400714819323198485 TARGETS=(settings netfile llmnr) BUILD=1
while (($#)); do
    case $1 in
    --execs) EXECS=${2:?}; shift ;;
    --execs=*) EXECS=${1#*=} ;;
    --seed) SEED=${2:?}; shift ;;
    --seed=*) SEED=${1#*=} ;;
    --target) TARGETS=("${2:?}"); shift ;;
    --target=*) TARGETS=("${1#*=}") ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $EXECS =~ ^[1-9][0-9]*$ && $SEED =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --execs/--seed need a number" >&2; exit 2; }

# Its own target directory: the profile differs from the release one.
TARGET_DIR=${FUZZ_TARGET_DIR:-$REPO_DIR/target/fuzz-stable}
if ((BUILD)); then
    command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
    echo "[fuzz] building fuzz_stable (release, panic=unwind, debug assertions, overflow checks)" >&2
    (cd "$REPO_DIR" &&
        CARGO_PROFILE_RELEASE_PANIC=unwind \
        CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
        CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
        cargo build --release --quiet --target-dir "$TARGET_DIR" -p netspawn-tests --example fuzz_stable)
fi
BIN=$TARGET_DIR/release/examples/fuzz_stable
[ -x "$BIN" ] || { echo "fuzz.sh: $BIN missing" >&2; exit 1; }

WORK=$(mktemp -d -p "${TMPDIR:-/tmp}" netspawn-fuzz.XXXXXX)
rc=0
for t in "${TARGETS[@]}"; do
    echo "[fuzz] $t: $EXECS executions from $(find "$REPO_DIR/fuzz/corpus/$t" -type f | wc -l) seeds" >&2
    "$BIN" "$t" "$REPO_DIR/fuzz/corpus/$t" "$EXECS" "$WORK/crashes" "$SEED" || rc=1
done
if [ -d "$WORK/crashes" ]; then
    echo "[fuzz] crashing inputs kept in $WORK/crashes:" >&2
    ls -l "$WORK/crashes" >&2
else
    rm -rf "$WORK"
fi
exit "$rc"
