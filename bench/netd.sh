#!/bin/bash
# netspawn-netd side by side with dnsmasq (and aardvark-dns for DNS), in one
# run, all inside network namespaces this script makes:
#   1. DHCP lease time (udhcpc and dhclient, start to bound) against netd and
#      dnsmasq, interleaved, plus netspawn's own in-launcher DHCP client;
#   2. DNS queries per second for a machine name (dnsperf, 1 and 4 clients,
#      10 and 100 queries in flight) against netd, dnsmasq and aardvark-dns,
#      and p50/p99 latency of sequential queries;
#   3. netd's resident memory with 1, 10 and 100 machines registered and
#      10 (and 100) ve- links configured;
#   4. a perf profile of netd while dnsperf loads it.
# Writes bench/results/netd.{md,json} and netd.profile.txt. See bench/netd-README.md.
#
# Usage: bench/netd.sh [--runs N] [--warmup N] [--dns-secs S] [--dns-reps N]
#                      [--lat N] [--links LIST] [--seed S] [--no-perf] [--no-build]
#   --runs N      DHCP samples per client and server (default 20)
#   --warmup N    untimed DHCP rounds first (default 2)
#   --dns-secs S  length of each dnsperf run (default 5)
#   --dns-reps N  dnsperf runs per server and load, interleaved (default 3)
#   --lat N       sequential queries per server for p50/p99 (default 3000)
#   --links LIST  ve- link counts for the memory figures (default 10,100)
#   --no-perf     skip the perf profile
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = __inner ]; then
    # Inside the private mount and network namespaces (run_isolated +
    # unshare -n): a tmpfs on /run holds `ip netns` handles, dnsmasq's and
    # dhclient's defaults; /etc/resolv.conf is covered with a file that points
    # at a loopback address where nothing listens, so nothing netd or
    # aardvark-dns could forward can leave this namespace.
    WORKDIR=$2
    mount -t tmpfs -o mode=0755,size=64m netd-bench /run
    mkdir -p /run/netns
    mount --bind "$WORKDIR/resolv.conf" /etc/resolv.conf
    exec "$PY" "$WORKDIR/netd_bench.py" "$WORKDIR/config.json"
fi

RUNS=20 WARMUP=2 DNS_SECS=5 DNS_REPS=3 LAT=3000 LINKS=10,100 SEED=1 PERF=1
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --dns-secs) DNS_SECS=${2:?}; shift ;;
    --dns-reps) DNS_REPS=${2:?}; shift ;;
    --lat) LAT=${2:?}; shift ;;
    --links) LINKS=${2:?}; shift ;;
    --seed) SEED=${2:?}; shift ;;
    --no-perf) PERF=0 ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
for v in "$RUNS" "$WARMUP" "$DNS_SECS" "$DNS_REPS" "$LAT" "$SEED"; do
    [[ $v =~ ^[0-9]+$ ]] || die "--runs/--warmup/--dns-secs/--dns-reps/--lat/--seed need a number"
done
[[ $LINKS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--links needs numbers separated by commas"

need_root
ensure_packages python3 iproute2 util-linux busybox-static udhcpc isc-dhcp-client dnsmasq-base \
    aardvark-dns dnsperf bind9-dnsutils nftables
[ "$PERF" = 1 ] && ensure_packages linux-perf
AARDVARK=/usr/lib/podman/aardvark-dns
[ -x "$AARDVARK" ] || die "aardvark-dns not found at $AARDVARK"
build_netspawn

setup_sandbox
# Every process of the run (netd, dnsmasq, aardvark-dns, which daemonizes,
# dhclient's daemon, netspawn's keepers) lives in the benchmark cgroup: at
# exit, end whatever is still there, by PID, before lib.sh removes it.
netd_cleanup() {
    local rc=$? d i p
    set +e
    for d in "${BENCH_CG_DIRS[@]}"; do
        for i in $(seq 100); do
            [ -z "$(cat "$d/cgroup.procs" 2>/dev/null)" ] && break
            ((i == 30)) && for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
            ((i == 60)) && for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
            sleep 0.1
        done
        [ -z "$(cat "$d/cgroup.procs" 2>/dev/null)" ] || log "warning: processes left in $d: $(tr '\n' ' ' <"$d/cgroup.procs")"
    done
    (exit "$rc")
    cleanup_sandbox
}
trap netd_cleanup EXIT

private_binaries

log "making the busybox image (netspawnctl bootstrap busybox)"
"$WORK/bin/netspawnctl" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || {
    tail "$WORK/bootstrap.log" >&2
    die "netspawnctl bootstrap busybox failed"
}
[ -x "$NETSPAWN_IMAGE_DIR/bb/bin/sh" ] || die "the busybox image has no /bin/sh"
mkdir -p "$RESULTS_DIR"
echo "nameserver 127.0.0.53" >"$WORK/resolv.conf"

UPSTREAM_ENV=no
grep -rqs NETSPAWN_UPSTREAM_RESOLV_CONF "$REPO_DIR/crates/netd/src" && UPSTREAM_ENV=yes
REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO_DIR" status --porcelain -- crates 2>/dev/null | awk '{ print $2 }' | tr '\n' ' ')

"$PY" - "$WORK/config.json" <<EOF
import json, os, sys
json.dump({
    "work": "$WORK", "results": "$RESULTS_DIR", "bin": "$WORK/bin",
    "image": "$NETSPAWN_IMAGE_DIR/bb", "templates": "$REPO_DIR/network-templates",
    "aardvark": "$AARDVARK", "runs": $RUNS, "warmup": $WARMUP, "dns_secs": $DNS_SECS, "dns_reps": max(1, $DNS_REPS),
    "lat": $LAT, "links": [int(x) for x in "$LINKS".split(",")], "seed": $SEED,
    "perf": $PERF == 1, "upstream_env": "$UPSTREAM_ENV", "rev": "$REV", "dirty": "$DIRTY".strip(),
    "binaries": "$BIN_ID", "load_start": open("/proc/loadavg").read().split()[:3],
}, open(sys.argv[1], "w"), indent=1)
EOF

cat >"$WORK/netd_bench.py" <<'PYEOF'
"""The measuring loop of bench/netd.sh. Runs inside the private mount and
network namespaces the script made; every netns, process and file it makes
lives there or in the scratch directory, and is removed in `finally`."""
import ctypes
import datetime
import ipaddress
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time

C = json.load(open(sys.argv[1]))
WORK = C["work"]
BIN = C["bin"]
RUN_DIR = os.environ["NETSPAWN_RUN_DIR"]
LOGS = os.path.join(WORK, "logs")
os.makedirs(LOGS, exist_ok=True)
RNG = random.Random(C["seed"])
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
NETNS = ["c-netd", "s-dm", "c-dm", "s-aa", "c-aa"]
WEB = "10.0.0.5"  # the machine `web`'s address: data in answers only, never a target
DM_NET, AA_NET = ipaddress.ip_network("10.77.0.0/28"), ipaddress.ip_network("10.78.0.0/28")
PROCS = {}  # name -> Popen of long-running servers
DAEMON_PIDS = []  # processes that left our children (aardvark-dns, dhclient)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sh(*argv, check=True, ns=None):
    if ns:
        argv = ("ip", "-n", ns) + argv[1:] if argv[0] == "ip" else ("ip", "netns", "exec", ns) + argv
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


def enter(ns):
    """preexec_fn: join the named netns (only this child; the driver stays)."""
    def f():
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)
        os.close(fd)
    return f if ns else None


def logf(name):
    return open(os.path.join(LOGS, name), "ab")


def q(xs, p):
    """Percentile with linear interpolation (p in 0..100)."""
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def start_time(pid):
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def kill_pid(pid, wait=3.0):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.time() + wait
    while alive(pid) and time.time() < end:
        time.sleep(0.01)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def ipv4_of(ifname, ns=None):
    out = sh("ip", "-j", "-4", "addr", "show", "dev", ifname, check=False, ns=ns)
    try:
        for i in json.loads(out or "[]"):
            for a in i.get("addr_info", []):
                return ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
    except ValueError:
        pass
    return None


def wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- registry
LAUNCHER = None  # a `sleep` whose PID and start time make the entries live


def write_machine(name, addrs):
    d = os.path.join(RUN_DIR, "machines")
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(RUN_DIR, f".bench-{name}.tmp")
    with open(tmp, "w") as f:
        f.write(f"NAME={name}\nUUID={os.urandom(16).hex()}\nLEADER={LAUNCHER.pid}\n"
                f"LAUNCHER={LAUNCHER.pid}\nLAUNCHER_START={start_time(LAUNCHER.pid)}\n"
                f"ROOT=/\nCLASS=container\nSERVICE=netspawn\nSTATE=running\nBOOT=0\n"
                f"TIMESTAMP={int(time.time() * 1e6)}\nPRIVATE_NETWORK=1\nCGROUPS=\n"
                f"INTERFACES=\nADDRESSES={' '.join(addrs)}\n")
    os.rename(tmp, os.path.join(d, name))


def set_machines(n):
    """Registry holds `web` plus m001.. so that there are n machines in all."""
    d = os.path.join(RUN_DIR, "machines")
    want = {"web"} | {f"m{i:03d}" for i in range(1, n)}
    for f in os.listdir(d) if os.path.isdir(d) else []:
        if f.startswith("m") and re.fullmatch(r"m\d{3}", f) and f not in want:
            os.unlink(os.path.join(d, f))
    for i in range(1, n):
        if not os.path.exists(os.path.join(d, f"m{i:03d}")):
            write_machine(f"m{i:03d}", [f"10.201.{i // 200}.{i % 200 + 1}"])


# ---------------------------------------------------------------- servers
NETD_ENV = dict(os.environ, RUST_LOG="info", NETSPAWN_NETWORK_PATH=C["templates"],
                NETSPAWN_UPSTREAM_RESOLV_CONF=os.path.join(WORK, "resolv.conf"))


def start_netd(tag):
    sock = os.path.join(RUN_DIR, "netd.sock")
    p = subprocess.Popen([f"{BIN}/netspawn-netd", "--foreground", "--idle-exit", "0"],
                         stdin=subprocess.DEVNULL, stdout=logf(f"netd-{tag}.log"),
                         stderr=subprocess.STDOUT, env=NETD_ENV)
    PROCS["netd"] = p
    wait_for(lambda: "netd ready" in open(os.path.join(LOGS, f"netd-{tag}.log")).read() or p.poll() is not None,
             20, "netd to start")
    if p.poll() is not None:
        raise RuntimeError(f"netd exited: see {LOGS}/netd-{tag}.log")
    return p


def stop(name):
    p = PROCS.pop(name, None)
    if p and p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def status_kib(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads", "VmSize"):
            out[k] = int(v.split()[0])
    return out


def dig(ns, server, name):
    return subprocess.run(["dig", "+short", "+tries=1", "+time=1", f"@{server}", name, "A"],
                          capture_output=True, text=True, preexec_fn=enter(ns)).stdout.strip()


def setup():
    global LAUNCHER
    sh("ip", "link", "set", "lo", "up")
    for ns in NETNS:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    LAUNCHER = subprocess.Popen(["sleep", "100000"])
    write_machine("web", [WEB])
    netd = start_netd("main")
    # netd's link: ve-bench here, its peer eth0 in c-netd.
    sh("ip", "link", "add", "ve-bench", "type", "veth", "peer", "name", "eth0", "netns", "c-netd")
    sh("ip", "link", "set", "ve-bench", "up")
    sh("ip", "link", "set", "eth0", "up", ns="c-netd")
    t0 = time.perf_counter()
    netd_if = wait_for(lambda: ipv4_of("ve-bench"), 20, "netd to configure ve-bench")
    configure_ms = (time.perf_counter() - t0) * 1e3
    # dnsmasq's and aardvark-dns's links: the same kind of veth, in netns of their own.
    for srv, cli, ifname, net in (("s-dm", "c-dm", "dm0", DM_NET), ("s-aa", "c-aa", "aa0", AA_NET)):
        sh("ip", "-n", srv, "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", cli)
        sh("ip", "-n", srv, "addr", "add", f"{net[1]}/{net.prefixlen}", "dev", ifname)
        sh("ip", "-n", srv, "link", "set", ifname, "up")
        sh("ip", "-n", cli, "link", "set", "eth0", "up")
    dm = [
        "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--bind-interfaces", "--interface=dm0",
        f"--dhcp-range={DM_NET[2]},{DM_NET[13]},{DM_NET.netmask},1h", "--no-ping",
        "--no-resolv", "--no-hosts", f"--host-record=web,{WEB}", "--pid-file=",
        f"--dhcp-leasefile={WORK}/dnsmasq.leases",
    ]
    PROCS["dnsmasq"] = subprocess.Popen(dm, stdin=subprocess.DEVNULL, stdout=logf("dnsmasq.log"),
                                        stderr=subprocess.STDOUT, preexec_fn=enter("s-dm"))
    aconf = os.path.join(WORK, "aardvark")
    os.makedirs(aconf, exist_ok=True)
    with open(os.path.join(aconf, "bench"), "w") as f:
        f.write(f"{AA_NET[1]}\n{'1' * 64} {AA_NET[14]}  client\n{'2' * 64} {WEB}  web\n")
    aa = [C["aardvark"], "--config", aconf, "-p", "53", "run"]
    # aardvark-dns forks into the background; its PID is in aardvark.pid.
    subprocess.run(aa, stdin=subprocess.DEVNULL, stdout=logf("aardvark.log"), stderr=subprocess.STDOUT,
                   preexec_fn=enter("s-aa"), timeout=20)
    DAEMON_PIDS.append(int(wait_for(lambda: open(os.path.join(aconf, "aardvark.pid")).read().strip()
                                    if os.path.exists(os.path.join(aconf, "aardvark.pid")) else None,
                                    10, "aardvark.pid")))
    time.sleep(0.3)
    if PROCS["dnsmasq"].poll() is not None:
        raise RuntimeError(f"dnsmasq exited: see {LOGS}/dnsmasq.log")
    return {"netd_if": str(netd_if), "netd_configure_ms": configure_ms, "netd_pid": netd.pid}


# ---------------------------------------------------------------- 1. DHCP
def dhcp_sample(cmd, r):
    """One sample: (ms or None, extra). cmd = (client, server)."""
    client, server = cmd
    ns = {"netd": "c-netd", "dnsmasq": "c-dm"}.get(server)
    out = logf(f"dhcp-{client}-{server}.log")
    if client == "udhcpc":
        argv = ["udhcpc", "-f", "-q", "-n", "-i", "eth0", "-s", "/bin/true", "-t", "3", "-T", "2"]
    elif client == "dhclient":
        lf, pf = os.path.join(WORK, f"dhclient-{server}.leases"), os.path.join(WORK, f"dhclient-{server}.pid")
        open(lf, "w").close()  # no remembered lease: a full DISCOVER/OFFER/REQUEST/ACK each time
        if os.path.exists(pf):
            os.unlink(pf)
        argv = ["dhclient", "-1", "-4", "-sf", "/bin/true", "-lf", lf, "-pf", pf, "eth0"]
    else:  # netspawn's own client, in a launch
        name = f"nd{r}"
        argv = [f"{BIN}/netspawn", "-q", "-n", "-M", name, "-D", C["image"], "/bin/true"]
        errp = os.path.join(LOGS, f"launch-{name}.log")
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(errp, "wb"), env=dict(os.environ, RUST_LOG="debug"))
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "timeout"
        total = (time.perf_counter() - t0) * 1e3
        # Untimed: let the link go before the next sample.
        end = time.time() + 10
        while os.path.exists(f"/sys/class/net/ve-{name}") and time.time() < end:
            time.sleep(0.01)
        m = re.search(r"host0 configured by DHCP.*?elapsed_us=(\d+)|elapsed_us=(\d+).*?host0 configured by DHCP",
                      re.sub(r"\x1b\[[0-9;]*m", "", open(errp).read()))
        if rc != 0 or not m:
            return None, {"rc": rc, "launch_ms": total}
        return int(m.group(1) or m.group(2)) / 1e3, {"launch_ms": total}
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=enter(ns))
    try:
        rc = p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = "timeout"
    ms = (time.perf_counter() - t0) * 1e3
    if client == "dhclient":
        # The parent exits once bound; its daemon stays: end it (untimed).
        try:
            pid = int(open(pf).read().strip())
            kill_pid(pid)
        except (OSError, ValueError):
            pass
    return (ms if rc == 0 else None), ({} if rc == 0 else {"rc": rc})


def bench_dhcp():
    cmds = [("udhcpc", "netd"), ("udhcpc", "dnsmasq"), ("dhclient", "netd"), ("dhclient", "dnsmasq"),
            ("netspawn", "netd")]
    samples = {f"{c}/{s}": [] for c, s in cmds}
    extra = {f"{c}/{s}": [] for c, s in cmds}
    failures = {f"{c}/{s}": 0 for c, s in cmds}
    n = 0
    for r in range(C["warmup"] + C["runs"]):
        order = cmds[:]
        RNG.shuffle(order)
        for cmd in order:
            ms, ex = dhcp_sample(cmd, n)
            n += 1
            if r < C["warmup"]:
                continue
            key = f"{cmd[0]}/{cmd[1]}"
            if ms is None:
                failures[key] += 1
                log(f"DHCP sample failed: {key} {ex}")
            else:
                samples[key].append(ms)
            extra[key].append(ex)
        if r >= C["warmup"]:
            log(f"DHCP round {r - C['warmup'] + 1}/{C['runs']}")
    return {"samples_ms": samples, "failures": failures, "extra": extra}


# ---------------------------------------------------------------- 2. DNS
def dnsperf(ns, server, clients, inflight, secs, tag):
    qf = os.path.join(WORK, "queries.txt")
    argv = ["dnsperf", "-s", server, "-d", qf, "-c", str(clients), "-q", str(inflight), "-l", str(secs)]
    r = subprocess.run(argv, capture_output=True, text=True, preexec_fn=enter(ns), timeout=secs + 60)
    with open(os.path.join(LOGS, f"dnsperf-{tag}.log"), "a") as f:
        f.write(" ".join(argv) + "\n" + r.stdout + r.stderr)
    g = lambda pat: (float(m.group(1)) if (m := re.search(pat, r.stdout)) else None)
    codes = re.search(r"Response codes:\s+(.*)", r.stdout)
    return {
        "qps": g(r"Queries per second:\s+([\d.]+)"),
        "avg_latency_ms": (g(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1e3,
        "max_latency_ms": (g(r"max ([\d.]+)\)") or 0) * 1e3,
        "stddev_ms": (g(r"Latency StdDev \(s\):\s+([\d.]+)") or 0) * 1e3,
        "sent": g(r"Queries sent:\s+(\d+)"), "lost": g(r"Queries lost:\s+(\d+)"),
        "codes": codes.group(1).strip() if codes else None, "argv": argv,
    }


LAT_CLIENT = r"""
import json, os, socket, struct, sys, time
server, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.connect((server, 53))
qname = b"\x03web\x00"
out, lost = [], 0
for i in range(n):
    qid = (os.getpid() + i) & 0xFFFF
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    t0 = time.perf_counter_ns()
    s.send(pkt)
    try:
        while True:
            r = s.recv(2048)
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
                break
    except socket.timeout:
        lost += 1
        continue
    out.append((time.perf_counter_ns() - t0) / 1e3)
print(json.dumps({"us": out, "lost": lost}))
"""


def bench_dns(targets):
    with open(os.path.join(WORK, "queries.txt"), "w") as f:
        f.write("web A\n")
    loads = [(1, 10), (1, 100), (4, 10), (4, 100)]
    runs = {}
    for rep in range(C["dns_reps"]):
        for c, qn in loads:
            order = list(targets)
            RNG.shuffle(order)
            for name in order:
                ns, addr = targets[name]
                r = dnsperf(ns, addr, c, qn, C["dns_secs"], name)
                runs.setdefault(f"c{c}q{qn}", {}).setdefault(name, []).append(r)
                log(f"dnsperf -c {c} -q {qn} {name} (run {rep + 1}): {r['qps']} QPS, "
                    f"avg {r['avg_latency_ms']:.3f} ms, {r['codes']}")
    # Per load and server: the run with the median QPS stands for it; all runs are kept.
    res = {}
    for load, byname in runs.items():
        for name, rs in byname.items():
            qs = sorted(rs, key=lambda r: r["qps"] or 0)
            med = dict(qs[len(qs) // 2])
            med["qps_median"] = statistics.median(r["qps"] or 0 for r in rs)
            med["qps_all"] = [r["qps"] for r in rs]
            res.setdefault(load, {})[name] = med
    # Sequential queries, interleaved in chunks, for p50/p99 of one query's round trip.
    lat = {n: [] for n in targets}
    lost = {n: 0 for n in targets}
    chunks = 10
    for _ in range(chunks):
        order = list(targets)
        RNG.shuffle(order)
        for name in order:
            ns, addr = targets[name]
            r = subprocess.run([sys.executable, "-c", LAT_CLIENT, addr, str(max(1, C["lat"] // chunks))],
                               capture_output=True, text=True, preexec_fn=enter(ns), timeout=600)
            d = json.loads(r.stdout)
            lat[name] += d["us"]
            lost[name] += d["lost"]
    return {"dnsperf": res, "dnsperf_runs": runs, "latency_us": lat, "latency_lost": lost}


def profile_netd(netd_pid, target):
    """perf record -g on netd while dnsperf loads it (4 clients, 100 in flight)."""
    ns, addr = target
    data = os.path.join(WORK, "perf.data")
    secs = max(3, min(8, C["dns_secs"]))
    perf = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-p", str(netd_pid), "-o", data,
                             "--", "sleep", str(secs)], stdout=subprocess.DEVNULL, stderr=logf("perf.log"))
    time.sleep(0.3)
    r = dnsperf(ns, addr, 4, 100, secs, "netd-profiled")
    perf.wait(60)
    rep = lambda *a: subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.7", *a],
                                    capture_output=True, text=True).stdout
    text = (f"# perf record -g -F 999 -p NETD for {secs} s during dnsperf -c 4 -q 100 against netd "
            f"({r['qps']} QPS while profiled)\n\n## perf report --sort comm,dso\n"
            + rep("--no-children", "--sort", "comm,dso", "-g", "none")
            + "\n## perf report --no-children --sort dso,sym (self time)\n"
            + rep("--no-children", "--sort", "dso,sym", "-g", "none")
            + "\n## perf report --children --sort sym (inclusive)\n"
            + rep("--children", "--sort", "sym", "-g", "none"))
    with open(os.path.join(C["results"], "netd.profile.txt"), "w") as f:
        f.write(text)
    return {"qps_while_profiled": r["qps"], "file": "bench/results/netd.profile.txt"}


# ---------------------------------------------------------------- 3. memory
def bench_memory():
    """A fresh netd: RSS with 1, 10, 100 machines, then with ve- links."""
    stop("netd")
    netd = start_netd("memory")
    wait_for(lambda: ipv4_of("ve-bench"), 20, "netd to configure ve-bench again")
    addr = str(ipv4_of("ve-bench").ip)
    time.sleep(0.5)
    rows = [{"state": "started, 1 link (ve-bench), registry not yet queried", **status_kib(netd.pid)}]
    for n in (1, 10, 100):
        set_machines(n)
        last = "web" if n == 1 else f"m{n - 1:03d}"
        wait_for(lambda: dig("c-netd", addr, last), 15, f"netd to answer {last}")
        # a few hundred queries so the UDP path is warm in every thread
        subprocess.run([sys.executable, "-c", LAT_CLIENT, addr, "300"], capture_output=True,
                       preexec_fn=enter("c-netd"), timeout=120)
        rows.append({"state": f"{n} machine(s), 1 link", "machines": n, "links": 1, **status_kib(netd.pid)})
    made = 0
    for total in C["links"]:
        t0 = time.perf_counter()
        for k in range(made, total - 1):  # ve-bench is one of them
            sh("ip", "link", "add", f"ve-m{k}", "type", "veth", "peer", "name", f"mp{k}")
            sh("ip", "link", "set", f"ve-m{k}", "up")
        made = max(made, total - 1)
        wait_for(lambda: all(ipv4_of(f"ve-m{k}") for k in range(made)), 120, f"netd to configure {total} links")
        secs = time.perf_counter() - t0
        time.sleep(0.5)
        rows.append({"state": f"100 machines, {total} ve- links configured", "machines": 100, "links": total,
                     "configure_s": secs, **status_kib(netd.pid)})
    targets = {"netd": ("c-netd", addr)}
    d = dnsperf("c-netd", addr, 4, 100, 5, "netd-memory")
    rows.append({"state": f"after 5 s of dnsperf -c 4 -q 100 ({d['qps']:.0f} QPS)", "machines": 100,
                 "links": made + 1, **status_kib(netd.pid)})
    for k in range(made):
        sh("ip", "link", "del", f"ve-m{k}", check=False)
    return rows


# ---------------------------------------------------------------- report
def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def versions():
    v = {"netspawn": f"git {C['rev']}" + (f" (+ uncommitted changes in {C['dirty']})" if C["dirty"] else ""),
         "netspawn binaries (sha256 prefix)": C["binaries"].strip().rstrip(",")}
    for pkg in ("dnsmasq-base", "aardvark-dns", "dnsperf", "udhcpc", "isc-dhcp-client", "linux-perf"):
        v[pkg] = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True).stdout
    v["kernel"] = os.uname().release
    v["cpus"] = os.cpu_count()
    return v


def report(meta, dhcp, dns, mem, prof):
    S = dhcp["samples_ms"]
    st = {k: {"n": len(v), "median": q(v, 50), "p90": q(v, 90), "min": min(v) if v else None} for k, v in S.items()}
    L = dns["latency_us"]
    lat = {k: {"n": len(v), "p50": q(v, 50), "p99": q(v, 99), "mean": statistics.mean(v) if v else None}
           for k, v in L.items()}
    out = {"date": meta["date"], "versions": meta["versions"], "config": C, "setup": meta["setup"], "netd_after_dns_kib": meta["rss_after_load_kib"],
           "load_end": open("/proc/loadavg").read().split()[:3], "dhcp": dhcp, "dhcp_stats": st,
           "dns": dns, "dns_latency_stats": lat, "memory": mem, "profile": prof}
    with open(os.path.join(C["results"], "netd.json"), "w") as f:
        json.dump(out, f, indent=1)
    D = dns["dnsperf"]
    md = [f"# netd benchmark: DHCP lease time, DNS QPS, memory (bench/netd.sh)\n",
          f"Date: {meta['date']}. Load average at start {' '.join(C['load_start'])}, at end "
          f"{' '.join(out['load_end'])} (2 cores; compare tools within this run only). Seed {C['seed']}.\n",
          "Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".\n",
          f"netd configured `ve-bench` with {meta['setup']['netd_if']} "
          f"{meta['setup']['netd_configure_ms']:.0f} ms after the link came up. "
          f"`NETSPAWN_UPSTREAM_RESOLV_CONF` in netd's source at run time: {C['upstream_env']} "
          "(set either way; /etc/resolv.conf is also covered inside the benchmark's mount namespace).\n",
          "## 1. DHCP lease time (start to bound)\n",
          f"{C['runs']} samples each after {C['warmup']} warm-up rounds, interleaved in a random order per round. "
          "dnsmasq with `--no-ping` (netd does no ping check either).\n",
          "| client / server | n | median ms | p90 ms | min ms | failures |", "|---|---:|---:|---:|---:|---:|"]
    for k in S:
        md.append(f"| {k} | {st[k]['n']} | {fmt(st[k]['median'])} | {fmt(st[k]['p90'])} | {fmt(st[k]['min'])} | "
                  f"{dhcp['failures'][k]} |")
    md.append("\n| client | netd median / dnsmasq median | target ≤ 1.00 | netd p90 / dnsmasq p90 |")
    md.append("|---|---:|---|---:|")
    for c in ("udhcpc", "dhclient"):
        a, b = st[f"{c}/netd"], st[f"{c}/dnsmasq"]
        if a["median"] and b["median"]:
            r = a["median"] / b["median"]
            md.append(f"| {c} | {r:.2f} | {'met' if r <= 1.0 else 'MISSED'} | {a['p90'] / b['p90']:.2f} |")
    ln = [e["launch_ms"] for e in dhcp["extra"]["netspawn/netd"] if "launch_ms" in e]
    if ln:
        md.append(f"\nnetspawn/netd is netspawn's in-launcher client (`host0 configured by DHCP elapsed_us`, "
                  f"from `netspawn -q -n -M ndK -D IMG /bin/true`, RUST_LOG=debug); the whole launch took "
                  f"median {q(ln, 50):.1f} ms, p90 {q(ln, 90):.1f} ms.\n")
    md += ["## 2. DNS: queries per second for a machine name (dnsperf, UDP, query `web A`)\n",
           f"{C['dns_reps']} runs of {C['dns_secs']} s per load and server, interleaved (servers in a random "
           "order within each load, loads in turn, then the next repetition). QPS is the median of the runs, "
           "with every run's figure beside it; latency columns are dnsperf's own (average, stddev, max) from "
           "the median run.\n",
           "| load | server | QPS (median) | QPS of each run | avg latency ms | stddev ms | max ms | lost | responses |",
           "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for load, byname in D.items():
        for name, r in byname.items():
            each = ", ".join(f"{x / 1000:.1f}k" for x in r["qps_all"] if x)
            md.append(f"| {load.replace('c', '-c ').replace('q', ' -q ')} | {name} | {fmt(r['qps_median'], 0)} | "
                      f"{each} | {fmt(r['avg_latency_ms'], 3)} | {fmt(r['stddev_ms'], 3)} | "
                      f"{fmt(r['max_latency_ms'], 1)} | {fmt(r['lost'], 0)} | {r['codes']} |")
    md += ["\n| load | netd / dnsmasq QPS (target ≥ 1.00) | netd / aardvark-dns QPS (target ≥ 2.00 at 4 clients) |",
           "|---|---:|---:|"]
    for load, byname in D.items():
        n, d, a = (byname.get(x, {}).get("qps_median") for x in ("netd", "dnsmasq", "aardvark-dns"))
        rd = n / d if n and d else None
        ra = n / a if n and a else None
        ta = ("met" if ra >= 2 else "MISSED") if (ra and load.startswith("c4")) else "(no target)"
        md.append(f"| {load} | {fmt(rd)} {'met' if rd and rd >= 1 else 'MISSED'} | {fmt(ra)} {ta} |")
    md += ["\nLatency of one query at a time (a small Python UDP client in the client netns, "
           f"{C['lat']} sequential queries per server, interleaved in 10 chunks; includes the Python loop's "
           "own overhead, the same for all):\n",
           "| server | n | p50 µs | p99 µs | mean µs | lost |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in lat.items():
        md.append(f"| {k} | {v['n']} | {fmt(v['p50'], 0)} | {fmt(v['p99'], 0)} | {fmt(v['mean'], 0)} | "
                  f"{dns['latency_lost'][k]} |")
    md += ["\n## 3. netd's memory\n",
           "A fresh netd (same state directories). Machines are registry entries whose LAUNCHER is a `sleep` "
           "the benchmark started; links are veth pairs `ve-mK` ⇄ `mpK` in the benchmark's netns.\n",
           "| state | VmRSS KiB | RssAnon KiB | RssFile KiB | VmHWM KiB | threads |", "|---|---:|---:|---:|---:|---:|"]
    for r in mem:
        extra = f" (configured in {r['configure_s']:.2f} s)" if "configure_s" in r else ""
        md.append(f"| {r['state']}{extra} | {r.get('VmRSS')} | {r.get('RssAnon')} | {r.get('RssFile')} | "
                  f"{r.get('VmHWM')} | {r.get('Threads')} |")
    md.append(f"\nThe netd that served the DHCP and DNS parts above (1 machine + the netspawn launches' "
              f"entries, ve-bench plus the launches' links), right after the dnsperf runs: "
              f"VmRSS {meta['rss_after_load_kib'].get('VmRSS')} KiB, VmHWM {meta['rss_after_load_kib'].get('VmHWM')} KiB.")
    m100 = [r for r in mem if r.get("machines") == 100]
    if m100:
        worst = max(r["VmRSS"] for r in m100)
        md.append(f"\nTarget: under 20 MiB (20480 KiB) with 100 machines: highest VmRSS seen with 100 machines "
                  f"{worst} KiB ({worst / 1024:.1f} MiB): {'met' if worst < 20480 else 'MISSED'}.\n")
    if prof:
        md.append(f"## 4. Profile\n\n`perf record -g` of netd during dnsperf -c 4 -q 100: see "
                  f"`{prof['file']}` ({fmt(prof['qps_while_profiled'], 0)} QPS while profiled).\n")
    md += ["## Method and commands\n", "See `bench/netd-README.md`. Raw samples: `bench/results/netd.json`.\n"]
    with open(os.path.join(C["results"], "netd.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def cleanup():
    for name in list(PROCS):
        stop(name)
    for pid in DAEMON_PIDS:
        kill_pid(pid)
    for k in range(200):
        if os.path.exists(f"/sys/class/net/ve-m{k}"):
            sh("ip", "link", "del", f"ve-m{k}", check=False)
    if LAUNCHER:
        LAUNCHER.kill()
        LAUNCHER.wait()
    for ns in NETNS:
        sh("ip", "netns", "del", ns, check=False)


def main():
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": versions()}
    try:
        meta["setup"] = setup()
        log(f"netd on ve-bench: {meta['setup']['netd_if']}; dnsmasq on dm0 {DM_NET[1]}; aardvark-dns on aa0 {AA_NET[1]}")
        dhcp = bench_dhcp()
        # DNS clients get static addresses at the end of each /28 (after the DHCP part).
        netd_if = ipaddress.ip_interface(meta["setup"]["netd_if"])
        cl = netd_if.network[14] if netd_if.network.prefixlen <= 28 else netd_if.network[-2]
        sh("ip", "-n", "c-netd", "addr", "add", f"{cl}/{netd_if.network.prefixlen}", "dev", "eth0")
        sh("ip", "-n", "c-dm", "addr", "add", f"{DM_NET[14]}/28", "dev", "eth0")
        sh("ip", "-n", "c-aa", "addr", "add", f"{AA_NET[14]}/28", "dev", "eth0")
        targets = {"netd": ("c-netd", str(netd_if.ip)), "dnsmasq": ("c-dm", str(DM_NET[1])),
                   "aardvark-dns": ("c-aa", str(AA_NET[1]))}
        for name, (ns, addr) in targets.items():
            ans = wait_for(lambda: dig(ns, addr, "web"), 10, f"{name} to answer web")
            if ans != WEB:
                raise RuntimeError(f"{name} answered {ans!r} for web, not {WEB}")
        dns = bench_dns(targets)
        meta["rss_after_load_kib"] = status_kib(PROCS["netd"].pid)
        prof = profile_netd(PROCS["netd"].pid, targets["netd"]) if C["perf"] else None
        mem = bench_memory()
        report(meta, dhcp, dns, mem, prof)
        log(f"wrote {C['results']}/netd.md and netd.json")
    finally:
        cleanup()


main()
PYEOF

log "running (private mount and network namespaces)"
run_isolated unshare -n -- /bin/bash "$BENCH_DIR/netd.sh" __inner "$WORK"
cat "$RESULTS_DIR/netd.md"
