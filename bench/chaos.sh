#!/bin/bash
# Chaos run (issue 9, "keep it broken-proof"): start/kill -9 cycles of the
# launcher at random moments, then kill -9 of netd while machines lease on
# one zone; prints what is left behind after each part.
#
# All launches are --read-only, so that they may share the one image.
#
# Part 1: N cycles (--cycles, 1000): a launch of `sleep` with -n, a zone
#   (--network-zone=chaos) or --private-network in rotation, each with its
#   own machine name, killed with SIGKILL 0-300 ms (random) after it was
#   started. Then, once the keepers have had their time, the leak counts:
#   links, addresses, mounts, machine cgroups (under the relocated
#   NETSPAWN_CGROUP_PARENT), registry entries, hosts links, lock and resolv
#   files, lease files, rules and set elements of netd's nft table, and
#   processes (besides netd, which stays until idle).
# Part 2: M machines (--machines, 50) start 50 ms apart on one zone while
#   netd is killed with SIGKILL (--netd-kills, 5) times, 100-300 ms after a
#   (restarted) netd is seen; each machine prints the address it got.
#   Then: duplicate addresses, machines without an address (a lost lease),
#   failed launches, and the leak counts after they stop.
#
# Everything happens in a network namespace of its own (unshare -n) inside
# the benchmark sandbox of bench/lib.sh (private mount namespace, cgroups
# of its own, NETSPAWN_RUN_DIR/IMAGE_DIR/STATE_DIR in a scratch directory):
# nothing is left behind (checked at the end against the host's links and
# cgroups). Writes the counts to stdout and, with --report, to
# bench/results/chaos.md.
#
# Usage: bench/chaos.sh [--cycles N] [--machines M] [--netd-kills K] [--seed S]
#                       [--report] [--no-build] [--bin-dir DIR]
#   --bin-dir DIR  take netspawn, netspawnctl and netspawn-netd from DIR
#                  (e.g. target/debug) instead of building them in release
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- inner part
# Runs inside the sandbox's private mount namespace and a fresh network
# namespace: `chaos.sh __inner`. Everything it needs comes in the environment.

# Machine cgroups left under our cgroup parent, in every hierarchy.
count_cgroups() {
    local mnt n=0
    for mnt in $(awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo); do
        [ -d "$mnt/$NETSPAWN_CGROUP_PARENT" ] || continue
        n=$((n + $(find "$mnt/$NETSPAWN_CGROUP_PARENT" -mindepth 1 -type d | wc -l)))
    done
    echo "$n"
}

# PIDs of processes running one of our binaries or the image's (the
# keepers are forks of netspawn; payloads run the image's busybox). One
# find, not a readlink per process: the kills below must be quick.
our_pids() {
    find /proc -mindepth 2 -maxdepth 2 -name exe -lname "$WORK/*" 2>/dev/null | cut -d/ -f3
}

netd_pids() {
    find /proc -mindepth 2 -maxdepth 2 -name exe -lname "$WORK/bin/netspawn-netd" 2>/dev/null | cut -d/ -f3
}

count_files() { find "$1" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Rules (not chains) and set elements in netd's table.
nft_counts() {
    local t
    t=$(nft list table inet netspawn 2>/dev/null) || { echo "0 0"; return; }
    awk '
        /^[ \t]*(table|chain|set|map|type|policy|flags|elements|})/ { in_el = /elements/ }
        /elements = \{/ { s = $0; sub(/.*elements = \{/, "", s); sub(/\}.*/, "", s); n = split(s, a, ","); if (s ~ /[^ \t]/) el += n; next }
        /^[ \t]*(table|chain|set|map|type|policy|flags|})/ { next }
        /[^ \t]/ { rules++ }
        END { printf "%d %d\n", rules, el }' <<<"$t"
}

# One line of leak counts, as key=value pairs.
leaks() {
    local links addrs mounts rules_el others netd
    links=$(ip -o link show 2>/dev/null | awk -F': ' '$2 !~ /^lo(@|$)/' | wc -l)
    addrs=$(ip -o addr show 2>/dev/null | awk '$2 != "lo"' | wc -l)
    mounts=$(($(grep -c -F "$WORK" /proc/self/mountinfo || true) - BASE_MOUNTS))
    rules_el=$(nft_counts)
    netd=$(netd_pids | wc -l)
    others=$(($(our_pids | wc -l) - netd))
    echo "links=$links addresses=$addrs mounts=$mounts cgroups=$(count_cgroups)" \
        "registry=$(count_files "$NETSPAWN_RUN_DIR/machines")" \
        "hosts=$(count_files "$NETSPAWN_RUN_DIR/hosts")" \
        "locks=$(count_files "$NETSPAWN_RUN_DIR/locks")" \
        "resolv=$(count_files "$NETSPAWN_RUN_DIR/resolv")" \
        "lease_files=$(count_files "$NETSPAWN_STATE_DIR/leases")" \
        "lease_lines=$(cat "$NETSPAWN_STATE_DIR"/leases/* 2>/dev/null | wc -l)" \
        "nft_rules=${rules_el% *} nft_elements=${rules_el#* }" \
        "processes=$others netd=$netd"
}

# Waits (up to $1 s) until no process of ours but netd runs.
settle() {
    local i
    for i in $(seq $(($1 * 10))); do
        [ $(($(our_pids | wc -l) - $(netd_pids | wc -l))) -eq 0 ] && return 0
        sleep 0.1
    done
    return 1
}

inner() {
    ip link set lo up
    BASE_MOUNTS=$(grep -c -F "$WORK" /proc/self/mountinfo || true)
    RANDOM=$SEED
    local ns=$WORK/bin/netspawn img=$NETSPAWN_IMAGE_DIR/bb logs=$WORK/logs
    mkdir -p "$logs"
    echo "before: $(leaks)"

    # Part 1: start, kill -9 at a random moment, next.
    local i mode ms pid rc killed=0 early=0 t0 modes=(-n --network-zone=chaos --private-network)
    t0=$(date +%s.%N)
    for i in $(seq "$CYCLES"); do
        mode=${modes[$((i % 3))]}
        ms=$((RANDOM % 301))
        "$ns" -q --read-only -D "$img" -M "c$i" "$mode" /bin/sleep 30 </dev/null >/dev/null 2>>"$logs/cycles.err" &
        pid=$!
        sleep "$(printf '0.%03d' "$ms")"
        kill -9 "$pid" 2>/dev/null || true
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        if [ "$rc" = 137 ]; then killed=$((killed + 1)); else early=$((early + 1)); fi
    done
    echo "part1: cycles=$CYCLES killed=$killed ended_before_the_kill=$early seconds=$(echo "$(date +%s.%N) - $t0" | bc | cut -d. -f1)"
    if [ -s "$logs/cycles.err" ]; then
        echo "part1: launcher messages (distinct, first 5):"
        sed -E 's/c[0-9]+/cN/g; s/[0-9]{3,}/N/g' "$logs/cycles.err" | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' || true
    fi
    settle 30 || echo "part1: processes still running after 30 s"
    echo "after part1: $(leaks)"

    # Part 2: M machines lease on one zone; netd is killed K times meanwhile
    # (each time once a netd runs again, 100-300 ms apart).
    local pids=() j killer
    (
        for k in $(seq "$NETD_KILLS"); do
            for t in $(seq 100); do [ -n "$(netd_pids)" ] && break; sleep 0.05; done
            sleep "$(printf '0.%03d' $((100 + RANDOM % 201)))"
            for p in $(netd_pids); do kill -9 "$p" 2>/dev/null && echo "$p" >>"$logs/netd-kills"; done
        done
    ) &
    killer=$!
    for j in $(seq "$MACHINES"); do
        "$ns" -q --read-only -D "$img" -M "m$j" --network-zone=lease /bin/sh -c \
            'ip -4 -o addr show host0 | awk "{print \$4}"; exec sleep 600' \
            </dev/null >"$logs/m$j.out" 2>"$logs/m$j.err" &
        pids+=($!)
        sleep 0.05
    done
    wait "$killer" 2>/dev/null || true
    local netd_killed
    netd_killed=$(wc -l <"$logs/netd-kills" 2>/dev/null || echo 0)
    # Every machine has its address (or has failed) once its output is
    # there or its launcher has gone.
    local deadline=$((SECONDS + 60)) left
    while ((SECONDS < deadline)); do
        left=0
        for j in $(seq "$MACHINES"); do
            [ -s "$logs/m$j.out" ] || ! kill -0 "${pids[$((j - 1))]}" 2>/dev/null || left=$((left + 1))
        done
        ((left == 0)) && break
        sleep 0.2
    done
    local with=0 without=0 failed=0 dups
    for j in $(seq "$MACHINES"); do
        if [ -s "$logs/m$j.out" ]; then
            with=$((with + 1))
        elif kill -0 "${pids[$((j - 1))]}" 2>/dev/null; then
            without=$((without + 1))
        else
            failed=$((failed + 1))
        fi
    done
    dups=$(cat "$logs"/m*.out 2>/dev/null | sort | uniq -d | wc -l || true)
    echo "part2: machines=$MACHINES netd_killed=$netd_killed with_address=$with without_address=$without failed=$failed duplicate_addresses=$dups"
    if ((failed > 0)); then
        echo "part2: failed launches (distinct messages):"
        cat "$logs"/m*.err 2>/dev/null | sed -E 's/m[0-9]+/mN/g; s/[0-9]{3,}/N/g' | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' || true
    fi
    echo "during part2: $(leaks)"
    local t1=$SECONDS
    # Stop the machines as a user would (SIGTERM to the launchers).
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    settle 30 || echo "part2: processes still running after 30 s"
    echo "after part2 (stopped in $((SECONDS - t1)) s): $(leaks)"

    # netd goes with the namespace; nothing of ours may outlive this.
    for p in $(netd_pids); do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in $(our_pids); do kill -9 "$p" 2>/dev/null || true; done
}

if [ "${1:-}" = __inner ]; then
    inner
    exit 0
fi

# ---------------------------------------------------------------- outer part
# A function, read whole before it runs: editing this file during a run
# cannot derail it.
main() {
    CYCLES=1000 MACHINES=50 NETD_KILLS=5 SEED=4242 REPORT=0 BIN_DIR=
    while (($#)); do
        case $1 in
        --cycles) CYCLES=${2:?}; shift ;;
        --cycles=*) CYCLES=${1#*=} ;;
        --machines) MACHINES=${2:?}; shift ;;
        --machines=*) MACHINES=${1#*=} ;;
        --netd-kills) NETD_KILLS=${2:?}; shift ;;
        --netd-kills=*) NETD_KILLS=${1#*=} ;;
        --seed) SEED=${2:?}; shift ;;
        --seed=*) SEED=${1#*=} ;;
        --report) REPORT=1 ;;
        --no-build) export BENCH_NO_BUILD=1 ;;
        --bin-dir) BIN_DIR=${2:?}; shift ;;
        --bin-dir=*) BIN_DIR=${1#*=} ;;
        -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
        esac
        shift
    done
    for v in "$CYCLES" "$MACHINES" "$NETD_KILLS" "$SEED"; do
        [[ $v =~ ^[0-9]+$ ]] || die "--cycles/--machines/--netd-kills/--seed need a number"
    done

    need_root
    ensure_packages busybox-static iproute2 nftables util-linux bc
    if [ -n "$BIN_DIR" ]; then
        BIN_DIR=$(cd "$BIN_DIR" && pwd)
        NETSPAWN=$BIN_DIR/netspawn NETSPAWNCTL=$BIN_DIR/netspawnctl
        export BENCH_NO_BUILD=1
    else
        build_netspawn
    fi
    host_links_before=$(ip -o link show | awk -F': ' '{print $2}' | sort)
    setup_sandbox
    private_binaries
    BUILD_NOTE="${BIN_DIR:+$(basename "$BIN_DIR") binaries}"
    BUILD_NOTE="${BUILD_NOTE:-release binaries} of git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"

    log "making the busybox image"
    "$WORK/bin/netspawnctl" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || {
        tail "$WORK/bootstrap.log" >&2
        die "netspawnctl bootstrap busybox failed"
    }
    export WORK CYCLES MACHINES NETD_KILLS SEED
    log "$CYCLES start/kill -9 cycles, then $MACHINES machines on one zone with $NETD_KILLS kill -9 of netd"
    started=$(date -u '+%Y-%m-%d %H:%M UTC')
    out=$(run_isolated unshare -n -- /bin/bash "$BENCH_DIR/chaos.sh" __inner 2>&1) || die "the chaos run failed: $out"
    echo "$out"

    # The host: no link, cgroup or netd of ours left (the sandbox's own
    # cgroups and scratch directory go with its exit trap).
    host_links_after=$(ip -o link show | awk -F': ' '{print $2}' | sort)
    if [ "$host_links_before" != "$host_links_after" ]; then
        log "warning: the host's links changed: $(diff <(echo "$host_links_before") <(echo "$host_links_after") | grep '^[<>]' | tr '\n' ' ')"
    fi
    left=$(for p in /proc/[0-9]*; do readlink "$p/exe" 2>/dev/null; done | grep -c -F "$WORK/" || true)
    ((left == 0)) || log "warning: $left processes of the run still exist"

    if ((REPORT)); then
        mkdir -p "$RESULTS_DIR"
        {
            echo "# Chaos run: kill -9 of the launcher and of netd"
            echo
            echo "$started, $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $BUILD_NOTE."
            echo "\`bench/chaos.sh --cycles $CYCLES --machines $MACHINES --netd-kills $NETD_KILLS --seed $SEED\`"
            echo "(part 1: start/kill -9 cycles with -n, a zone and --private-network in rotation, each"
            echo "killed 0-300 ms after its start; part 2: machines leasing on one zone while netd is"
            echo "killed; counts are what is left in the run's own network namespace, cgroup parent,"
            echo "run and state directories)."
            echo
            echo '```'
            echo "$out"
            echo '```'
        } >"$RESULTS_DIR/chaos.md"
        log "wrote $RESULTS_DIR/chaos.md"
    fi
}

main "$@"
