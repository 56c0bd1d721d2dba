#!/bin/bash
# netd's memory and descriptors under hostile DNS input (issue 9 item 10),
# measured on the real daemon: a private network and mount namespace, netd in
# the foreground serving a ve- link whose other end is in a client namespace,
# an upstream stub on loopback that answers NXDOMAIN with an SOA (so every
# answer is negatively cached: the worst case for the cache). Then
#   1. 50,000 UDP queries for unique names from the client (about 10,000/s);
#   2. the same against an upstream that never answers (forwards pending);
#   3. 2,000 TCP connections opened at once and held idle;
# printing netd's VmRSS and open descriptors before and after each step, and
# whether a UDP query is answered while the connections are held.
# Not a test: figures only.
#
# Usage: bench/dns-flood.sh [--queries N] [--conns N]   (root; builds nothing:
#        uses target/debug or $NETD)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUERIES=50000 CONNS=2000
while (($#)); do
    case $1 in
    --queries) QUERIES=${2:?}; shift ;;
    --conns) CONNS=${2:?}; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
NETD=${NETD:-$REPO/target/debug/netspawn-netd}
[ -x "$NETD" ] || { echo "no $NETD: cargo build -p netspawn-netd" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }

if [ "${1:-}" != __inner ] && [ -z "${DNS_FLOOD_INNER:-}" ]; then
    exec env DNS_FLOOD_INNER=1 unshare -n -m --propagation private "$0" --queries "$QUERIES" --conns "$CONNS"
fi

WORK=$(mktemp -d /tmp/netd-flood.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip link set lo up
mkdir -p "$WORK/run" "$WORK/state"

cat >"$WORK/stub.py" <<'PY'
import socket, struct, sys
mode = sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
open(sys.argv[3], "w").close()
# The authority: test. 3600 IN SOA ns. host. 1 3600 600 86400 300
soa = b"\x04test\x00\x00\x06\x00\x01\x00\x00\x0e\x10" + struct.pack(">H", 10 + 20) + b"\x02ns\x00\x04host\x00" + struct.pack(">IIIII", 1, 3600, 600, 86400, 300)
while True:
    q, peer = s.recvfrom(2048)
    if mode == "silent":
        continue
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    s.sendto(q[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x01\x00\x00" + question + soa, peer)
PY
python3 "$WORK/stub.py" 127.0.0.53 nxdomain "$WORK/nx.ready" & PIDS+=($!)
python3 "$WORK/stub.py" 127.0.0.55 silent "$WORK/si.ready" & PIDS+=($!)
for _ in $(seq 100); do [ -e "$WORK/nx.ready" ] && [ -e "$WORK/si.ready" ] && break; sleep 0.05; done
echo "nameserver 127.0.0.53" >"$WORK/upstream.conf"

NETSPAWN_RUN_DIR=$WORK/run NETSPAWN_STATE_DIR=$WORK/state \
    NETSPAWN_NETWORK_PATH=$REPO/network-templates \
    NETSPAWN_UPSTREAM_RESOLV_CONF=$WORK/upstream.conf \
    RUST_LOG=warn "$NETD" --foreground --idle-exit 0 2>"$WORK/netd.log" & NETD_PID=$!
PIDS+=("$NETD_PID")

unshare -n sleep 1000 & CLIENT=$!
PIDS+=("$CLIENT")
for _ in $(seq 100); do
    [ "$(readlink /proc/$CLIENT/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
    sleep 0.05
done
sleep 0.5
ip link add ve-flood type veth peer name eth0 netns "$CLIENT"
ip link set ve-flood up
HOST=""
for _ in $(seq 100); do
    HOST=$(ip -4 -o addr show ve-flood | grep -o 'inet [0-9./]*' | cut -d' ' -f2 || true)
    [ -n "$HOST" ] && break
    sleep 0.1
done
[ -n "$HOST" ] || { cat "$WORK/netd.log"; echo "netd gave ve-flood no address" >&2; exit 1; }
GW=${HOST%/*}
PEER=$(python3 -c "import ipaddress,sys; print(ipaddress.ip_address('$GW') + 1)")
IN=(nsenter -t "$CLIENT" -n)
"${IN[@]}" ip addr add "$PEER/${HOST#*/}" dev eth0
"${IN[@]}" ip link set eth0 up
"${IN[@]}" ip link set lo up
for _ in $(seq 50); do
    "${IN[@]}" dig +time=1 +tries=1 "@$GW" flood-probe.test A >/dev/null 2>&1 && break
    sleep 0.1
done

mem() {
    printf '%-34s VmRSS %6s KiB  VmHWM %6s KiB  fds %5s\n' "$1" \
        "$(awk '/^VmRSS/ {print $2}' /proc/$NETD_PID/status)" \
        "$(awk '/^VmHWM/ {print $2}' /proc/$NETD_PID/status)" \
        "$(ls /proc/$NETD_PID/fd | wc -l)"
}

cat >"$WORK/flood.py" <<'PY'
import socket, struct, sys, time
server, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
got = 0
for i in range(n):
    name = b"".join(bytes([len(p)]) + p for p in [f"q{i}-{tag}".encode(), b"flood", b"test"]) + b"\x00"
    s.sendto(struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01", (server, 53))
    try:
        while True:
            s.recv(2048); got += 1
    except BlockingIOError:
        pass
    if i % 100 == 99:
        time.sleep(0.01)
time.sleep(6)
try:
    while True:
        s.recv(2048); got += 1
except BlockingIOError:
    pass
print(f"  {n} queries, {got} replies")
PY
cat >"$WORK/conns.py" <<'PY'
import socket, sys, time
server, n = sys.argv[1], int(sys.argv[2])
conns, refused = [], 0
for _ in range(n):
    try:
        c = socket.create_connection((server, 53), timeout=2)
        conns.append(c)
    except OSError:
        refused += 1
time.sleep(1)
open_ = 0
for c in conns:
    c.settimeout(0.01)
    try:
        open_ += c.recv(1) != b""
    except socket.timeout:
        open_ += 1
    except OSError:
        pass
print(f"  {n} connections: {open_} still open after 1 s, {refused} not connected")
sys.stdout.flush()
time.sleep(float(sys.argv[3]))
PY

mem "start (one link, idle)"
echo "flood against an NXDOMAIN+SOA upstream:"
"${IN[@]}" python3 "$WORK/flood.py" "$GW" "$QUERIES" nx
mem "after $QUERIES unique names"
echo "nameserver 127.0.0.55" >"$WORK/upstream.conf"
sleep 0.3
echo "flood against a silent upstream:"
"${IN[@]}" python3 "$WORK/flood.py" "$GW" "$QUERIES" si
mem "after $QUERIES more (silent)"
echo "nameserver 127.0.0.53" >"$WORK/upstream.conf"
sleep 0.3
echo "TCP connection flood:"
"${IN[@]}" python3 "$WORK/conns.py" "$GW" "$CONNS" 3 &
CP=$!
sleep 2.5
mem "while $CONNS connections are held"
{ "${IN[@]}" dig +time=2 +tries=1 "@$GW" flood-udp-check.test A | grep -o "status: [A-Z]*" || echo "no reply"; } | sed "s/^/  UDP meanwhile: /"
wait "$CP"
sleep 11
mem "11 s after the connections closed"
