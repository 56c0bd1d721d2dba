#!/bin/bash
# Topology files (issue 13): `netspawnctl up` and `down` of a lab of N busybox
# machines (ephemeral, -U) on three zones with a router on all three and two
# point-to-point links, against the same machines started as a shell loop of
# `netspawn` calls (in parallel, until every one has its address) and stopped
# with `netspawnctl terminate`, and against podman 4.3 (netavark, private
# storage: `podman run -d --network` 32 at a time on three networks, until
# all have started; `podman rm -f -a`), and against docker compose (Debian's
# docker.io 20.10 and docker-compose 1.29: a dockerd of the benchmark's own,
# in a network namespace of its own, with a private data root, exec root,
# pidfile and socket; `docker-compose up -d` of the same lab as compose services on compose
# networks, until every container runs and has its address;
# `docker-compose down -t 0`). Then
# throughput (iperf3, TCP, one stream) across a lab's point-to-point link
# and across a lab's zone, against a veth pair and a bridge made by hand
# between two bare network namespaces. Everything runs in a network
# namespace of its own. Writes bench/results/topology.{md,json}.
#
# Usage: bench/topology.sh [--sizes 10,50,300] [--rounds N (3)]
#                          [--iperf-secs S (5)] [--no-podman] [--no-compose]
#                          [--no-build] [--quick]
#   --quick: sizes 10,50, one round, 2 s of iperf3
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES=10,50,300 ROUNDS=3 IPERF_SECS=5 PODMAN=1 COMPOSE=1
inner=0
while (($#)); do
    case $1 in
    __inner) inner=1 ;;
    --sizes) SIZES=${2:?}; shift ;;
    --sizes=*) SIZES=${1#*=} ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --rounds=*) ROUNDS=${1#*=} ;;
    --iperf-secs) IPERF_SECS=${2:?}; shift ;;
    --iperf-secs=*) IPERF_SECS=${1#*=} ;;
    --no-podman) PODMAN=0 ;;
    --no-compose) COMPOSE=0 ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --quick) SIZES=10,50 ROUNDS=1 IPERF_SECS=2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A lab of N machines: a router on zones a, b, c; two machines p1, p2 on
# point-to-point links from the router; the rest spread over the zones.
lab_file() { # N FILE
    local n=$1 rest=$(($1 - 3)) per
    per=$((rest / 3))
    {
        echo '[lab]'
        echo 'name = "bl"'
        echo '[defaults]'
        echo 'image = "bb"'
        echo '[zones.a]'
        echo '[zones.b]'
        echo '[zones.c]'
        echo '[machines.r]'
        echo 'zones = ["a", "b:eth2", "c:eth3"]'
        echo 'command = "sleep 3600"'
        echo 'addresses = { eth4 = "10.250.0.1/30", eth5 = "10.250.0.5/30" }'
        echo '[machines.p1]'
        echo 'command = "sleep 3600"'
        echo 'addresses = { eth1 = "10.250.0.2/30" }'
        echo '[machines.p2]'
        echo 'command = "sleep 3600"'
        echo 'addresses = { eth1 = "10.250.0.6/30" }'
        local z i cnt
        for i in 0 1 2; do
            z=$(echo a b c | cut -d' ' -f$((i + 1)))
            cnt=$per
            [ $i = 2 ] && cnt=$((rest - 2 * per))
            ((cnt > 0)) || continue
            echo "[machines.h$z]"
            echo "count = $cnt"
            echo "zones = [\"$z\"]"
            echo 'command = "sleep 3600"'
        done
        echo '[[links]]'
        echo 'endpoints = ["r:eth4", "p1:eth1"]'
        echo '[[links]]'
        echo 'endpoints = ["r:eth5", "p2:eth1"]'
    } >"$2"
}

# Waits (at most 60 s) until the machine is quiet: at least 85% of both CPUs
# idle over a quarter of a second. Each tool's teardown goes on in the
# background after its command returned (the kernel frees hundreds of
# network namespaces one after the other, dockerd and podman clean up), and
# would otherwise be measured as part of the next tool's step: after a round
# of 300 compose containers the next netspawn up ran beside seconds of it.
# Called before every timed step of every tool, so each starts on a quiet
# machine; the seconds waited are kept (quiesce.txt: step, N, round, ms).
quiesce() { # STEP N ROUND
    local t0 a b i=0
    t0=$(now_ms)
    while ((i < 240)); do
        a=$(head -1 /proc/stat)
        sleep 0.25
        b=$(head -1 /proc/stat)
        "$PY" -c 'import sys
a = [int(x) for x in sys.argv[1].split()[1:]]; b = [int(x) for x in sys.argv[2].split()[1:]]
d = [y - x for x, y in zip(a, b)]; tot = sum(d) or 1
sys.exit(0 if (d[3] + d[4]) / tot >= 0.85 else 1)' "$a" "$b" && break
        i=$((i + 1))
    done
    echo "$1 $2 $3 $(($(now_ms) - t0))" >>"$WORK/quiesce.txt"
}

# Machines with an address in the registry.
addressed() { grep -l '^ADDRESSES=.*[0-9]' "$NETSPAWN_RUN_DIR"/machines/* 2>/dev/null | wc -l; }
registered() { ls "$NETSPAWN_RUN_DIR/machines" 2>/dev/null | wc -l; }
# Conditions for wait_for (re-evaluated on every try).
addressed_at_least() { [ "$(addressed)" -ge "$1" ]; }
registry_empty() { [ "$(registered)" = 0 ]; }

wait_for() { # WHAT TIMEOUT_S COMMAND...
    local what=$1 t=$2 end
    shift 2
    end=$(($(now_ms) + t * 1000))
    until "$@"; do
        (($(now_ms) < end)) || die "timed out waiting for $what"
        sleep 0.005
    done
}

# podman with everything of its own under $WORK/podman.
pm() {
    podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" --tmpdir "$WORK/podman/tmp" \
        --network-config-dir "$WORK/podman/net" --events-backend file "$@"
}
pm_run() { # I ZONE
    pm run -d -q --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network "bl$2" \
        --name "pm-$1" localhost/bb /bin/sleep 3600 >/dev/null
}
export -f pm pm_run

# docker compose: the same lab as compose services on compose networks. The
# zones are networks a, b, c; the router r is on all three; each
# point-to-point link is a network of its own with r and p1 (p2) on it (a
# /29: docker's bridge takes the first address as gateway, so a /30 has no
# room for both ends). The N-3 other machines are one service per zone with
# `scale:`, as the topology file has them as one machine with `count`.
compose_file() { # N FILE
    local n=$1 rest=$(($1 - 3)) per i z cnt
    per=$((rest / 3))
    {
        echo 'version: "2.4"'
        echo 'services:'
        echo '  r:'
        echo '    image: bb'
        echo '    command: ["/bin/sleep", "3600"]'
        echo '    networks:'
        echo '      a: {}'
        echo '      b: {}'
        echo '      c: {}'
        echo '      l1: { ipv4_address: 10.250.0.2 }'
        echo '      l2: { ipv4_address: 10.250.0.10 }'
        echo '  p1:'
        echo '    image: bb'
        echo '    command: ["/bin/sleep", "3600"]'
        echo '    networks:'
        echo '      l1: { ipv4_address: 10.250.0.3 }'
        echo '  p2:'
        echo '    image: bb'
        echo '    command: ["/bin/sleep", "3600"]'
        echo '    networks:'
        echo '      l2: { ipv4_address: 10.250.0.11 }'
        for i in 0 1 2; do
            z=$(echo a b c | cut -d' ' -f$((i + 1)))
            cnt=$per
            [ $i = 2 ] && cnt=$((rest - 2 * per))
            ((cnt > 0)) || continue
            echo "  h$z:"
            echo '    image: bb'
            echo '    command: ["/bin/sleep", "3600"]'
            echo "    scale: $cnt"
            echo "    networks: [$z]"
        done
        echo 'networks:'
        echo '  a: {}'
        echo '  b: {}'
        echo '  c: {}'
        echo '  l1:'
        echo '    ipam: { config: [{ subnet: 10.250.0.0/29 }] }'
        echo '  l2:'
        echo '    ipam: { config: [{ subnet: 10.250.0.8/29 }] }'
    } >"$2"
}
# The docker clients, pointed at the run's dockerd (only them: podman reads
# DOCKER_CONFIG too).
dk() { DOCKER_HOST=unix://$WORK/docker/docker.sock DOCKER_CONFIG=$WORK/docker/cli docker "$@"; }
dc() {
    DOCKER_HOST=unix://$WORK/docker/docker.sock DOCKER_CONFIG=$WORK/docker/cli \
        COMPOSE_HTTP_TIMEOUT=600 DOCKER_CLIENT_TIMEOUT=600 docker-compose -p bl "$@"
}
# Containers running, and containers with an address on one of the lab's
# networks (docker network inspect lists each network's endpoints).
dk_running() { dk ps -q --filter status=running | wc -l; }
dk_addressed() {
    # shellcheck disable=SC2016 # a Go template, not shell
    dk network inspect -f '{{range $id, $c := .Containers}}{{if $c.IPv4Address}}{{$id}}{{"\n"}}{{end}}{{end}}' \
        bl_a bl_b bl_c bl_l1 bl_l2 2>/dev/null | sort -u | grep -c . || true
}
compose_ready() { [ "$(dk_running)" -ge "$1" ] && [ "$(dk_addressed)" -ge "$1" ]; }
docker_answers() { dk version >/dev/null 2>&1; }

# A dockerd of the run's own: everything under $WORK/docker (data root, exec
# root with containerd's state, pidfile, socket, config, trust key), cgroups
# below the benchmark's (cgroupfs driver: no systemd here), and tmpfs over
# /run/containerd (containerd 1.6 puts its shims' sockets in
# /run/containerd/s whatever its state directory) and /run/docker in this
# private mount namespace. dockerd gets a network namespace of its own, made
# here like the run's: docker sets iptables' FORWARD policy to DROP, and with
# bridged traffic passing through iptables that cut the netspawn zones in the
# run's namespace (iperf3 across a zone hung). Its bridges and iptables rules
# never reach the host's network nor the other tools', and go with dockerd.
start_dockerd() {
    local d=$WORK/docker
    mkdir -p "$d/exec"
    # Its exec root on a tmpfs, as /run is on every host (see inner_main).
    mount -t tmpfs -o mode=0755 netspawn-bench-run "$d/exec"
    mount -t tmpfs -o mode=0711,size=64m netspawn-bench /run/containerd
    mount -t tmpfs -o mode=0711,size=16m netspawn-bench /run/docker
    # The trust key would go to /etc/docker/key.json (no command-line flag for it).
    echo "{\"deprecated-key-path\": \"$d/key.json\"}" >"$d/daemon.json"
    unshare -n -- dockerd --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" \
        --config-file "$d/daemon.json" \
        --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "$DOCKER_CGROUP_PARENT" \
        --log-level warn >"$d/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    wait_for "dockerd" 60 docker_answers
}

# Stops the run's dockerd and checks that nothing of it is left: containers
# removed first (their shims exit with them), dockerd stopped (it stops its
# containerd), then any process still naming $WORK/docker killed by PID, and
# mounts under it unmounted; the data root is removed.
stop_dockerd() {
    local d=$WORK/docker ids p i left
    [ -n "${DOCKERD_PID:-}" ] || return 0
    ids=$(dk ps -aq 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && dk rm -f $ids >/dev/null 2>&1
    kill "$DOCKERD_PID" 2>/dev/null
    for i in $(seq 300); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$DOCKERD_PID" 2>/dev/null && { log "warning: dockerd did not stop in 30 s; killing it"; kill -9 "$DOCKERD_PID"; }
    wait "$DOCKERD_PID" 2>/dev/null
    DOCKERD_PID=
    # The pattern from a file, so that grep does not find itself.
    left=$(grep -l -s -F -f <(echo "$d/") /proc/[0-9]*/cmdline | cut -d/ -f3 | grep -v -x -e $$ || true)
    if [ -n "$left" ]; then
        log "warning: processes of the run's dockerd left, killing them: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80; echo; done)"
        # shellcheck disable=SC2086
        kill -9 $left 2>/dev/null
    fi
    awk -v w="$d/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
    rm -rf --one-file-system "$d"
}

# On the way out, whatever the inner run started goes.
inner_cleanup() {
    local rc=$?
    set +e
    if ((rc)); then
        log "loop-1's output: $(tail -3 "$WORK/loop-1.log" 2>/dev/null)"
        log "registry: $(ls "$NETSPAWN_RUN_DIR/machines" 2>/dev/null | tr '\n' ' ')"
        log "loop-1: $(grep -E '^(STATE|ADDRESSES|INTERFACES)=' "$NETSPAWN_RUN_DIR/machines/loop-1" 2>/dev/null | tr '\n' ' ')"
        log "links: $(ip -br link | awk '{print $1}' | tr '\n' ' ')"
        [ -s "$WORK/docker/dockerd.log" ] && log "dockerd's log: $(tail -5 "$WORK/docker/dockerd.log")"
    fi
    for f in "$WORK"/lab*.toml "$WORK/tp.toml"; do
        [ -e "$f" ] && "$NETSPAWNCTL" down "$f" >/dev/null 2>&1
    done
    local m
    m=$(ls "$NETSPAWN_RUN_DIR/machines" 2>/dev/null)
    [ -n "$m" ] && "$NETSPAWNCTL" terminate $m >/dev/null 2>&1
    # shellcheck disable=SC2086
    [ -n "${LOOP_PIDS:-}" ] && kill -9 $LOOP_PIDS 2>/dev/null
    # Before the jobs go: dockerd is one of them, and stops cleanly.
    if [ "$COMPOSE" = 1 ] && [ -n "${DOCKERD_PID:-}" ]; then
        [ -e "$WORK/compose.yml" ] && dc -f "$WORK/compose.yml" down -t 0 >/dev/null 2>&1
        stop_dockerd
    fi
    jobs -p | xargs -r kill -9 2>/dev/null
    wait 2>/dev/null
    if [ "$PODMAN" = 1 ] && [ -d "$WORK/podman" ]; then
        pm rm -f -a -t 0 >/dev/null 2>&1
        pm network rm -f bla blb blc >/dev/null 2>&1
    fi
    # netd, started by the first launch, goes with the run.
    local f
    for f in "$NETSPAWN_RUN_DIR"/netd-*.pid; do
        [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    exit "$rc"
}

inner_main() {
    trap inner_cleanup EXIT
    local IMG=$NETSPAWN_IMAGE_DIR/bb
    local out=$WORK/samples.txt
    : >"$out"
    export PATH=$(dirname "$NETSPAWNCTL"):$PATH
    ip link set lo up
    # Every tool's run-time state on a tmpfs, as /run is on every host (the
    # scratch directory is on disk; images, layers and storage stay there,
    # as /var/lib): netspawn's run directory (registry, locks, resolv.conf
    # files), podman's runroot, dockerd's exec root. On this VM's ext4,
    # which has no journal, each file made there scans past the inodes
    # deleted in the last minute (ext4's recently_deleted), so a run
    # directory on disk grew slower round by round.
    mkdir -p "$WORK/podman/run"
    local d
    for d in "$NETSPAWN_RUN_DIR" "$WORK/podman/run"; do
        mount -t tmpfs -o mode=0755 netspawn-bench-run "$d"
    done
    local n r t0 t1
    if [ "$PODMAN" = 1 ]; then
        mkdir -p "$WORK/podman"
        tar -C "$IMG" -c . | pm import -q - localhost/bb >/dev/null || die "podman import failed"
        for z in a b c; do pm network create "bl$z" >/dev/null || die "podman network create failed"; done
    fi
    if [ "$COMPOSE" = 1 ]; then
        start_dockerd
        tar -C "$IMG" -c . | dk import - bb:latest >/dev/null || die "docker import failed"
    fi
    for n in ${SIZES//,/ }; do
        ((n >= 4)) || die "--sizes: at least 4 machines"
        lab_file "$n" "$WORK/lab$n.toml"
        for r in $(seq "$ROUNDS"); do
            # netspawnctl up/down.
            local failed=0 # compose down refused for good this round
            quiesce up "$n" "$r"
            t0=$(now_ms)
            "$NETSPAWNCTL" -q up "$WORK/lab$n.toml" >"$WORK/up.log" 2>&1 || {
                tail "$WORK/up.log" >&2
                die "netspawnctl up of $n machines failed"
            }
            t1=$(now_ms)
            echo "up $n $((t1 - t0))" >>"$out"
            [ "$(registered)" = "$n" ] || die "up: $(registered) machines registered, not $n"
            quiesce down "$n" "$r"
            t0=$(now_ms)
            "$NETSPAWNCTL" down "$WORK/lab$n.toml" || die "netspawnctl down failed"
            t1=$(now_ms)
            echo "down $n $((t1 - t0))" >>"$out"
            [ "$(registered)" = 0 ] || die "down left machines"

            # The shell loop: the same machines on the same zones, no links.
            local i z pids=()
            quiesce loop_up "$n" "$r"
            t0=$(now_ms)
            for i in $(seq "$n"); do
                z=$(echo a b c | cut -d' ' -f$((i % 3 + 1)))
                "$NETSPAWN" -q -U -x --keep-unit --network-zone="bl-$z" -M "loop-$i" -D "$IMG" /bin/sleep 3600 \
                    </dev/null >"$WORK/loop-$i.log" 2>&1 &
                pids+=($!)
            done
            LOOP_PIDS="${pids[*]}"
            wait_for "$n addressed machines" 120 addressed_at_least "$n"
            t1=$(now_ms)
            echo "loop_up $n $((t1 - t0))" >>"$out"
            quiesce loop_down "$n" "$r"
            t0=$(now_ms)
            "$NETSPAWNCTL" terminate $(ls "$NETSPAWN_RUN_DIR/machines")
            wait "${pids[@]}" 2>/dev/null || true
            wait_for "an empty registry" 120 registry_empty
            t1=$(now_ms)
            echo "loop_down $n $((t1 - t0))" >>"$out"
            pids=() LOOP_PIDS=

            if [ "$PODMAN" = 1 ]; then
                quiesce podman_up "$n" "$r"
                t0=$(now_ms)
                for i in $(seq "$n"); do echo "$i $(echo a b c | cut -d' ' -f$((i % 3 + 1)))"; done |
                    xargs -P 32 -L 1 bash -c 'pm_run "$0" "$1"' || die "podman run failed"
                t1=$(now_ms)
                echo "podman_up $n $((t1 - t0))" >>"$out"
                # Under load podman 4.3 sometimes fails a removal ("crun delete
                # --force … failed", "open pidfd"); run it again (timed, counted).
                local ptries=1
                quiesce podman_down "$n" "$r"
                t0=$(now_ms)
                until pm rm -f -a -t 0 >/dev/null 2>"$WORK/podman-rm.log"; do
                    ((ptries < 5)) || { tail -3 "$WORK/podman-rm.log" >&2; die "podman rm failed"; }
                    ptries=$((ptries + 1))
                done
                t1=$(now_ms)
                echo "podman_down $n $((t1 - t0))" >>"$out"
                echo "$n $r $((ptries - 1))" >>"$WORK/podman-retries.txt"
                [ -z "$(pm ps -aq)" ] || die "podman rm left containers"
            fi

            if [ "$COMPOSE" = 1 ]; then
                compose_file "$n" "$WORK/compose.yml"
                quiesce compose_up "$n" "$r"
                t0=$(now_ms)
                dc -f "$WORK/compose.yml" up -d >"$WORK/compose-up.log" 2>&1 || {
                    tail "$WORK/compose-up.log" >&2
                    die "docker-compose up of $n containers failed"
                }
                wait_for "$n running containers with addresses" 300 compose_ready "$n"
                t1=$(now_ms)
                echo "compose_up $n $((t1 - t0))" >>"$out"
                # What the readiness check itself costs (it is inside compose_up).
                t0=$(now_ms)
                compose_ready "$n"
                t1=$(now_ms)
                echo "compose_check $n $((t1 - t0))" >>"$out"
                [ "$(dk_running)" = "$n" ] || die "compose up: $(dk_running) containers running, not $n"
                # docker 20.10 may refuse to remove a network whose endpoints it
                # has not released yet ("has active endpoints"); the user runs
                # down again, and so does this (timed, and counted; a quarter
                # of a second apart: five tries in a row failed once at 50
                # machines under load; twenty in a row once at 300, so up to
                # eighty now).
                local tries=1
                quiesce compose_down "$n" "$r"
                t0=$(now_ms)
                until dc -f "$WORK/compose.yml" down -t 0 >"$WORK/compose-down.log" 2>&1; do
                    if ! grep -q 'has active endpoints' "$WORK/compose-down.log"; then
                        tail "$WORK/compose-down.log" >&2
                        die "docker-compose down failed"
                    fi
                    if ((tries >= 80)); then
                        # dockerd keeps refusing for good (at 300 containers,
                        # with "failed to remove runc container" in its log):
                        # this round has no compose down figure; a new dockerd
                        # (fresh data root) serves the next rounds, so the other
                        # tools' figures at this size are not lost.
                        log "docker-compose down of $n containers still refused after $tries tries; restarting dockerd"
                        failed=1
                        break
                    fi
                    tries=$((tries + 1))
                    sleep 0.25
                    # Still there after a few tries (it stayed for 5 s once, at
                    # 300 machines): the endpoints dockerd kept of containers
                    # that are gone are disconnected by force, as a user would.
                    if ((tries >= 4)); then
                        local net ep
                        for net in bl_a bl_b bl_c bl_l1 bl_l2; do
                            # shellcheck disable=SC2016 # a Go template, not shell
                            for ep in $(dk network inspect -f '{{range $id, $c := .Containers}}{{$c.Name}} {{end}}' "$net" 2>/dev/null); do
                                dk network disconnect -f "$net" "$ep" >/dev/null 2>&1 || true
                            done
                        done
                    fi
                done
                t1=$(now_ms)
                if ((failed)); then
                    echo "$n $r" >>"$WORK/compose-failed.txt"
                    cp "$WORK/docker/dockerd.log" "$WORK/dockerd-failed-$n-$r.log" 2>/dev/null || true
                    stop_dockerd
                    start_dockerd
                    tar -C "$IMG" -c . | dk import - bb:latest >/dev/null || die "docker import failed"
                else
                    echo "compose_down $n $((t1 - t0))" >>"$out"
                fi
                echo "$n $r $((tries - 1))" >>"$WORK/compose-retries.txt"
                [ -z "$(dk ps -aq)" ] || die "compose down left containers"
            fi
            echo "$n $r $(cut -d' ' -f1 /proc/loadavg)" >>"$WORK/load.txt"
            log "$n machines, round $r: $(grep " $n " "$out" | tail -$((4 + 2 * PODMAN + 3 * COMPOSE - failed)) | awk '{printf "%s %s ms; ", $1, $3}')"
        done
    done

    # Throughput.
    cat >"$WORK/tp.toml" <<EOF
[lab]
name = "tp"
[defaults]
image = "bb"
[zones.z]
[machines.a]
command = "sleep 3600"
addresses = { eth1 = "10.251.0.1/24" }
[machines.b]
command = "sleep 3600"
addresses = { eth1 = "10.251.0.2/24" }
[machines.c]
zones = ["z"]
command = "sleep 3600"
addresses = { host0 = "10.252.0.3/24" }
[machines.d]
zones = ["z"]
command = "sleep 3600"
addresses = { host0 = "10.252.0.4/24" }
[[links]]
endpoints = ["a:eth1", "b:eth1"]
EOF
    "$NETSPAWNCTL" -q up "$WORK/tp.toml" || die "up of the throughput lab failed"
    leader() { sed -n 's/^LEADER=//p' "$NETSPAWN_RUN_DIR/machines/$1"; }
    # Two bare namespaces with a veth pair, and two more on a bridge.
    unshare -n sleep 3600 & local ra=$!
    unshare -n sleep 3600 & local rb=$!
    unshare -n sleep 3600 & local rc=$!
    unshare -n sleep 3600 & local rd=$!
    sleep 0.2
    ip link add rawa type veth peer name rawb
    ip link set rawa netns "$ra"; ip link set rawb netns "$rb"
    nsenter --net=/proc/$ra/ns/net sh -c 'ip link set lo up; ip addr add 10.253.0.1/24 dev rawa; ip link set rawa up'
    nsenter --net=/proc/$rb/ns/net sh -c 'ip link set lo up; ip addr add 10.253.0.2/24 dev rawb; ip link set rawb up'
    ip link add rawbr type bridge; ip link set rawbr up
    ip link add rawc type veth peer name rawc-h; ip link set rawc-h master rawbr up; ip link set rawc netns "$rc"
    ip link add rawd type veth peer name rawd-h; ip link set rawd-h master rawbr up; ip link set rawd netns "$rd"
    nsenter --net=/proc/$rc/ns/net sh -c 'ip link set lo up; ip addr add 10.254.0.3/24 dev rawc; ip link set rawc up'
    nsenter --net=/proc/$rd/ns/net sh -c 'ip link set lo up; ip addr add 10.254.0.4/24 dev rawd; ip link set rawd up'
    iperf() { # NAME SERVER_PID CLIENT_PID ADDR
        local k
        for k in $(seq "$ROUNDS"); do
            nsenter --net=/proc/$2/ns/net iperf3 -s -1 -B "$4" >/dev/null 2>&1 &
            local srv=$!
            wait_for "iperf3 server" 30 sh -c "nsenter --net=/proc/$2/ns/net ss -ltn | grep -q ':5201'"
            nsenter --net=/proc/$3/ns/net iperf3 -c "$4" -t "$IPERF_SECS" -J >"$WORK/iperf.json" || die "iperf3 $1 failed"
            wait "$srv"
            "$PY" -c 'import json,sys; print(sys.argv[1], json.load(open(sys.argv[2]))["end"]["sum_received"]["bits_per_second"])' \
                "$1" "$WORK/iperf.json" >>"$WORK/iperf.txt"
        done
    }
    : >"$WORK/iperf.txt"
    iperf lab_link "$(leader tp-b)" "$(leader tp-a)" 10.251.0.2
    iperf raw_veth "$rb" "$ra" 10.253.0.2
    iperf lab_zone "$(leader tp-d)" "$(leader tp-c)" 10.252.0.4
    iperf raw_bridge "$rd" "$rc" 10.254.0.4
    kill "$ra" "$rb" "$rc" "$rd"
    ip link del rawbr
    "$NETSPAWNCTL" down "$WORK/tp.toml" || die "down of the throughput lab failed"
}

if [ "$inner" = 1 ]; then
    inner_main
    exit 0
fi

need_root
ensure_packages python3 busybox-static iperf3 iproute2 util-linux
build_netspawn
setup_sandbox
private_binaries
NETSPAWN=$WORK/bin/netspawn NETSPAWNCTL=$WORK/bin/netspawnctl
export NETSPAWN_RUN_DIR=$WORK/run NETSPAWN_IMAGE_DIR=$WORK/images NETSPAWN_STATE_DIR=$WORK/state
export NETSPAWN_SETTINGS_PATH=$WORK/nspawn
mkdir -p "$NETSPAWN_RUN_DIR" "$NETSPAWN_IMAGE_DIR" "$NETSPAWN_STATE_DIR" "$RESULTS_DIR"
log "making the busybox image"
"$NETSPAWNCTL" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || die "bootstrap busybox failed"

PODMAN_NOTE="not run (--no-podman)"
if [ "$PODMAN" = 1 ]; then
    command -v podman >/dev/null || ensure_packages podman
    PODMAN_NOTE="podman $(podman --version | awk '{print $3}'), netavark, 32 podman run at a time"
    # crun refuses a hybrid host whose cgroup2 lists controllers: hide the list.
    export BENCH_MASK_CG2_CONTROLLERS=1
fi
COMPOSE_NOTE="not run (--no-compose)"
if [ "$COMPOSE" = 1 ]; then
    # docker.io's postinst would start the host's own dockerd where services
    # may be started: keep it from doing so while it is installed.
    policy_made=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_made=1
    fi
    ensure_packages docker.io docker-compose
    [ "$policy_made" = 1 ] && rm -f /usr/sbin/policy-rc.d
    COMPOSE_NOTE="docker $(dockerd --version | awk '{print $3}' | tr -d ,), docker-compose $(docker-compose version --short),"
    COMPOSE_NOTE+=" a dockerd of the run's own (cgroupfs driver, overlay2, private data root, in a network namespace of its own);"
    COMPOSE_NOTE+=" one service per zone with scale: for the N-3 hosts, r on five networks (three zones, two /29 link networks),"
    COMPOSE_NOTE+=" docker-compose up -d until every container runs and has its address, docker-compose down -t 0"
    # Mount points for the run's tmpfs over containerd's and docker's
    # fixed run directories (made here when missing, removed at exit).
    for d in /run/containerd /run/docker; do
        if [ ! -e "$d" ]; then
            mkdir "$d"
            CREATED_RUN_DIRS=("$d" "${CREATED_RUN_DIRS[@]}")
        fi
    done
    # Below the benchmark's cgroup (lib.sh removes it in every hierarchy).
    DOCKER_CGROUP_PARENT=/${NETSPAWN_CGROUP_PARENT%/netspawn}/docker
    export DOCKER_CGROUP_PARENT
fi
export NETSPAWN NETSPAWNCTL WORK SIZES ROUNDS IPERF_SECS PODMAN COMPOSE PY

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2046
run_isolated unshare -n -- /bin/bash "$0" __inner --sizes "$SIZES" --rounds "$ROUNDS" \
    --iperf-secs "$IPERF_SECS" $([ "$PODMAN" = 1 ] || echo --no-podman) $([ "$COMPOSE" = 1 ] || echo --no-compose)

# Nothing of the run's dockerd may outlive it: no process naming the
# scratch directory, no docker link or iptables chain on the host.
if [ "$COMPOSE" = 1 ]; then
    left=$(grep -l -s -F -f <(echo "$WORK/docker/") /proc/[0-9]*/cmdline | cut -d/ -f3 | grep -v -x -e $$ || true)
    [ -z "$left" ] || log "warning: processes of the run's dockerd left: $left"
    ip -br link | grep -E '^(docker0|br-)' && log "warning: docker links on the host"
    iptables -S 2>/dev/null | grep -q DOCKER && log "warning: DOCKER chains in the host's iptables"
    [ -e "$WORK/docker" ] && log "warning: $WORK/docker not removed"
fi

VERSIONS=$(versions_json "iperf3=iperf3 --version" "kernel=uname -r")
VERSIONS=$(L_V=$VERSIONS L_B=$BIN_ID L_L=$LOAD_START "$PY" -c 'import json, os; v = json.loads(os.environ["L_V"]); v["binaries"] = os.environ["L_B"]; v["load"] = os.environ["L_L"].split()[0]; v["loadavg_start"] = os.environ["L_L"]; v["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3]); print(json.dumps(v))')
L_PODMAN_NOTE=$PODMAN_NOTE L_COMPOSE_NOTE=$COMPOSE_NOTE L_VERSIONS=$VERSIONS "$PY" - "$WORK/samples.txt" "$WORK/iperf.txt" \
    "$RESULTS_DIR/topology.json" "$RESULTS_DIR/topology.md" "$WORK/load.txt" "$WORK/compose-retries.txt" "$WORK/podman-retries.txt" \
    "$WORK/quiesce.txt" "$WORK/compose-failed.txt" <<'EOF'
import json, os, statistics, sys
samples, iperf, out_json, out_md, load, retries, pretries, quiet, cfailed = sys.argv[1:10]
quiesce = [line.split() for line in open(quiet)] if os.path.exists(quiet) else []
compose_failed = [line.split() for line in open(cfailed)] if os.path.exists(cfailed) else []
compose_retries = [line.split() for line in open(retries)] if os.path.exists(retries) else []
podman_retries = [line.split() for line in open(pretries)] if os.path.exists(pretries) else []
rounds_load = [line.split() for line in open(load)] if os.path.exists(load) else []
data = {}
for line in open(samples):
    kind, n, ms = line.split()
    data.setdefault(int(n), {}).setdefault(kind, []).append(int(ms))
tp = {}
for line in open(iperf):
    name, bps = line.split()
    tp.setdefault(name, []).append(float(bps))
med = lambda v: statistics.median(v) if v else None
res = {
    "what": "netspawnctl up/down of a lab (3 zones, a router on all three, 2 p2p links, N busybox machines, -U -x) vs a shell loop of netspawn calls (same machines and zones, no links; up = every machine has its address) vs podman run -d on three networks vs docker-compose up -d of the same lab as compose services on compose networks",
    "versions": json.loads(os.environ["L_VERSIONS"]),
    "podman": os.environ["L_PODMAN_NOTE"],
    "compose": os.environ["L_COMPOSE_NOTE"],
    "sizes": {str(n): {k: {"samples_ms": v, "median_ms": med(v)} for k, v in d.items()} for n, d in sorted(data.items())},
    "throughput_bps": {k: {"samples": v, "median": med(v)} for k, v in tp.items()},
    "compose_down_retries": [{"n": int(n), "round": int(r), "retries": int(k)} for n, r, k in compose_retries],
    "podman_down_retries": [{"n": int(n), "round": int(r), "retries": int(k)} for n, r, k in podman_retries],
    "compose_down_failed": [{"n": int(n), "round": int(r)} for n, r in compose_failed],
    "loadavg_1min_after_each_round": [{"n": int(n), "round": int(r), "load": float(l)} for n, r, l in rounds_load],
    "quiesce_ms": [{"step": st, "n": int(n), "round": int(r), "waited_ms": int(ms)} for st, n, r, ms in quiesce],
    "targets": "50 up <= 1 s, down <= 0.5 s; 300 up <= 6 s, down <= 3 s; within 1.2x of the shell loop; >= 10x faster than podman/compose; throughput >= 0.95x raw",
}
json.dump(res, open(out_json, "w"), indent=1)
md = ["# Topology files: up/down and throughput", "", res["what"] + ".", "",
      f"Load average (1, 5, 15 min) at the start: {res['versions'].get('loadavg_start', '?')}, at the end: {res['versions'].get('loadavg_end', '?')}, on {os.cpu_count()} CPUs"
      "; after each round (machines/round: load): " + ", ".join(f"{n}/{r}: {l}" for n, r, l in rounds_load) +
      " (other benchmarks and builds may have run at the same time: read the figures as measured on a loaded machine).", "",
      "Every timed step of every tool starts on a quiet machine (at least 85% of the CPUs idle over a quarter of a second, "
      "at most 60 s of waiting), so no tool's background teardown is timed as part of the next one's step. Waited before "
      "each step, median (max) ms: " + ", ".join(
          f"{st} {statistics.median(w):.0f} ({max(w)})" for st, w in (
              (st, [int(q[3]) for q in quiesce if q[0] == st]) for st in dict.fromkeys(q[0] for q in quiesce))) + ".", "",
      "| machines | up (median ms) | down | shell loop up | loop down | up / loop | up per machine (ms) |",
      "|---:|---:|---:|---:|---:|---:|---:|"]
for n, d in sorted(data.items()):
    up, dn, lu, ld = (med(d.get(k, [])) for k in ("up", "down", "loop_up", "loop_down"))
    ratio = f"{up / lu:.2f}x" if up and lu else "-"
    md.append(f"| {n} | {up:.0f} | {dn:.0f} | {lu:.0f} | {ld:.0f} | {ratio} | {up / n:.1f} |")
pm = [(n, d) for n, d in sorted(data.items()) if "podman_up" in d]
if pm:
    md += ["", "| machines | podman run (median ms) | podman rm -f | netspawnctl up vs podman | down vs rm |", "|---:|---:|---:|---:|---:|"]
    for n, d in pm:
        pu, pd, up, dn = med(d["podman_up"]), med(d["podman_down"]), med(d["up"]), med(d["down"])
        md.append(f"| {n} | {pu:.0f} | {pd:.0f} | {pu / up:.1f}x faster | {pd / dn:.1f}x faster |")
    again = [f"{n} machines round {r}: {k}" for n, r, k in podman_retries if int(k)]
    md += ["", "podman rm -f -a run again after a failed removal (timed, included): " + ("; ".join(again) if again else "never") + "."]
dc = [(n, d) for n, d in sorted(data.items()) if "compose_up" in d]
if dc:
    md += ["", "| machines | docker-compose up -d (median ms) | docker-compose down | netspawnctl up vs compose | down vs compose |", "|---:|---:|---:|---:|---:|"]
    for n, d in dc:
        cu, cd, up, dn = med(d["compose_up"]), med(d.get("compose_down", [])), med(d["up"]), med(d["down"])
        cds, cdr = (f"{cd:.0f}", f"{cd / dn:.1f}x faster") if cd else ("failed", "-")
        md.append(f"| {n} | {cu:.0f} | {cds} | {cu / up:.1f}x faster | {cdr} |")
    chk = [f"{med(d['compose_check']):.0f} ms at {n}" for n, d in dc if d.get("compose_check")]
    again = [f"{n} machines round {r}: {k}" for n, r, k in compose_retries if int(k)]
    md += ["", "compose up includes its readiness check (docker ps and docker network inspect of the five networks; "
           "one check alone: " + ", ".join(chk) + "). compose down run again after docker's \"has active endpoints\" "
           "(timed, included): " + ("; ".join(again) if again else "never") + "."]
    if compose_failed:
        md += ["", "docker-compose down refused for good (\"has active endpoints\" through 80 tries; dockerd restarted "
               "with a fresh data root, no compose down figure for that round): " +
               "; ".join(f"{n} machines round {r}" for n, r in compose_failed) + "."]
md += ["", "podman: " + res["podman"] + ".",
       "docker compose: " + res["compose"] + ".", "",
       "| path | median Gbit/s | vs raw |", "|---|---:|---:|"]
for lab, raw in (("lab_link", "raw_veth"), ("lab_zone", "raw_bridge")):
    for k in (lab, raw):
        if k in tp:
            r = f"{med(tp[lab]) / med(tp[raw]):.2f}x" if k == lab and raw in tp else ""
            md.append(f"| {k} | {med(tp[k]) / 1e9:.2f} | {r} |")
md += ["", "Targets: " + res["targets"] + "."]
open(out_md, "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
