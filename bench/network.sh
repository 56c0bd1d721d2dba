#!/bin/bash
# Per-container network setup and teardown for N containers at once:
# netspawn (-n veth, --network-zone member) vs netavark (bridge driver) vs the
# CNI bridge + host-local plugins vs four `ip` commands, side by side in one
# run, all inside a private network namespace this script makes.
# Writes bench/results/network.{md,json}. See bench/network-README.md.
#
# Usage: bench/network.sh [--sizes LIST] [--big N] [--big-all] [--no-nat]
#                         [--launches N] [--rounds N] [--seed S] [--no-build]
#   --sizes LIST  container counts, comma-separated (default 1,10,100)
#   --big N       one more count, for the tools without a firewall (default 1000; 0: none)
#   --big-all     --big for the iptables (NAT) variants too (their rule lists grow with N: slow)
#   --no-nat      skip the netavark and CNI variants that write iptables NAT rules
#   --launches N  launch-to-exit samples of /bin/true per network mode (default 30)
#   --rounds N    at most N repeat rounds per count below 100 (default 20: N=1 20 rounds,
#                 N=10 10 rounds; bench/run --quick uses 3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES=1,10,100 BIG=1000 BIG_ALL=0 NAT=1 LAUNCHES=30 SEED=1 ROUNDS=20
while (($#)); do
    case $1 in
    --sizes) SIZES=${2:?}; shift ;;
    --sizes=*) SIZES=${1#*=} ;;
    --big) BIG=${2:?}; shift ;;
    --big=*) BIG=${1#*=} ;;
    --big-all) BIG_ALL=1 ;;
    --no-nat) NAT=0 ;;
    --launches) LAUNCHES=${2:?}; shift ;;
    --launches=*) LAUNCHES=${1#*=} ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --rounds=*) ROUNDS=${1#*=} ;;
    --seed) SEED=${2:?}; shift ;;
    --seed=*) SEED=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $SIZES =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--sizes needs numbers separated by commas"
[[ $BIG =~ ^[0-9]+$ && $LAUNCHES =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] ||
    die "--big/--launches/--seed/--rounds need a number"

need_root
ensure_packages python3 iproute2 util-linux busybox-static netavark containernetworking-plugins iptables
NETAVARK=/usr/lib/podman/netavark
CNI_DIR=/usr/lib/cni
[ -x "$NETAVARK" ] || die "netavark not found at $NETAVARK"
[ -x "$CNI_DIR/bridge" ] && [ -x "$CNI_DIR/host-local" ] || die "CNI bridge/host-local plugins not found in $CNI_DIR"
build_netspawn

# What the real host has before: compared after the run.
host_state() {
    ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' | sort
    echo "netns: $(ip -all netns list 2>/dev/null | tr '\n' ' ')"
    echo "run/netns: $(ls -A /run/netns 2>/dev/null | tr '\n' ' ')"
    echo "xtables.lock: $([ -e /run/xtables.lock ] && echo yes || echo no)"
}
HOST_BEFORE=$(host_state)

setup_sandbox
# Keepers (netspawn's detached teardown processes) and the netd that netspawn
# started run in the benchmark cgroup: stop our netd (by its PID: only a
# process running our private copy of the binary), wait for the keepers,
# then lib.sh removes the cgroup.
network_cleanup() {
    local rc=$? d i pid
    set +e
    for d in "${BENCH_CG_DIRS[@]}"; do
        for pid in $(cat "$d/cgroup.procs" 2>/dev/null); do
            [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$WORK/bin/netspawn-netd" ] && kill "$pid"
        done
        for i in $(seq 300); do
            [ -z "$(cat "$d/cgroup.procs" 2>/dev/null)" ] && break
            sleep 0.1
        done
        [ -z "$(cat "$d/cgroup.procs" 2>/dev/null)" ] || log "warning: processes left in $d: $(tr '\n' ' ' <"$d/cgroup.procs")"
    done
    (exit "$rc")
    cleanup_sandbox
}
trap network_cleanup EXIT

private_binaries
NETSPAWN=$WORK/bin/netspawn NETSPAWNCTL=$WORK/bin/netspawnctl

log "making the busybox image (netspawnctl bootstrap busybox)"
"$NETSPAWNCTL" bootstrap busybox bb >"$WORK/bootstrap.log" 2>&1 || {
    tail "$WORK/bootstrap.log" >&2
    die "netspawnctl bootstrap busybox failed"
}
IMG=$NETSPAWN_IMAGE_DIR/bb
[ -x "$IMG/bin/sh" ] || die "the busybox image has no /bin/sh"
mkdir -p "$RESULTS_DIR"

log "versions"
VERSIONS=$(versions_json "netavark=$NETAVARK --version" \
    "containernetworking-plugins=dpkg-query -W -f=\${Version} containernetworking-plugins" \
    "iproute2=ip -V" "iptables=iptables --version" "busybox=$IMG/bin/busybox" "kernel=uname -r")
VERSIONS=$("$PY" -c 'import json, sys; v = json.loads(sys.argv[1]); v["netspawn binaries (sha256 prefix)"] = sys.argv[2]; print(json.dumps(v))' "$VERSIONS" "$BIN_ID")

cat >"$WORK/network_bench.py" <<'PYEOF'
"""The measuring loop of bench/network.sh (runs inside the private network and
mount namespaces; everything it makes lives there or in the scratch directory)."""
import datetime
import json
import os
import random
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import time

C = json.load(open(sys.argv[1]))
WORK = C["work"]
OUT = sys.argv[2]
DEVNULL = subprocess.DEVNULL


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sh(*argv, check=True):
    """Runs an untimed helper command; its failure is fatal."""
    r = subprocess.run(argv, stdin=DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def timed(argv, stdin_bytes=None, env=None):
    """Runs one measured command; returns milliseconds from spawn to exit."""
    t0 = time.perf_counter_ns()
    r = subprocess.run(argv, input=stdin_bytes, stdin=None if stdin_bytes is not None else DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ms = (time.perf_counter_ns() - t0) / 1e6
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return ms


def link_exists(name):
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def wait_gone(names, timeout=30.0):
    """Polls until none of the links exists; returns time.time() at that point."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(link_exists(n) for n in names):
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"links still present after {timeout}s: {[n for n in names if link_exists(n)]}")
        time.sleep(0.0005)


def links():
    return sorted(n for _, n in socket.if_nameindex())


def netns_add(name):
    sh("ip", "netns", "add", name)


def netns_del(name):
    sh("ip", "netns", "del", name)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(.*)$")


def parse_log(path):
    """(epoch seconds, message) for each line of a netspawn debug log."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = TS.match(ANSI.sub("", line).strip())
            if m:
                t = datetime.datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f")
                out.append((t.replace(tzinfo=datetime.timezone.utc).timestamp(), m.group(2)))
    return out


def log_find(entries, text):
    for t, msg in entries:
        if msg.startswith(text):
            return t, msg
    return None, None


class Netspawn:
    """One netspawn launcher per container, payload `sh -c 'echo ready; read x; exit 0'`
    (stdin held open by us), --read-only so all share one image,
    --network-config=none (the links and netd's host side, no DHCP for host0)."""

    def __init__(self, mode):
        self.mode = mode
        self.name = "netspawn -n (veth)" if mode == "veth" else "netspawn --network-zone"
        self.procs = {}
        self.bridge = "vz-bench"

    def machine(self, i):
        return ("v" if self.mode == "veth" else "z") + str(i)

    def host_link(self, i):
        return ("ve-" if self.mode == "veth" else "vb-") + self.machine(i)

    def net_args(self):
        return ["-n"] if self.mode == "veth" else ["--network-zone=bench"]

    def setup(self, i):
        logp = f"{WORK}/logs/{self.machine(i)}.log"
        # --network-config=none: links only, no DHCP wait before the payload
        # (netd's zone pool is a /24: at most 253 DHCP clients per zone).
        argv = [C["netspawn"], "-q", "--register=no", *self.net_args(), "--network-config=none",
                "-M", self.machine(i), "--read-only",
                "-D", C["image"], "/bin/sh", "-c", "echo ready; read x; exit 0"]
        with open(logp, "w") as err:
            t0 = time.perf_counter_ns()
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=NS_ENV)
        self.procs[i] = (p, logp)
        r, _, _ = select.select([p.stdout], [], [], 30)
        line = p.stdout.readline() if r else b""
        t_ready = (time.perf_counter_ns() - t0) / 1e6
        if line != b"ready\n":
            p.kill()
            p.wait()
            raise RuntimeError(f"{self.name} {i}: no 'ready' from the payload; log: {open(logp).read()[-800:]}")
        p.stdout.close()
        _, msg = log_find(parse_log(logp), "network links set up")
        m = re.search(r"elapsed_us=(\d+)", msg or "")
        if not m:
            raise RuntimeError(f"{self.name} {i}: no 'network links set up elapsed_us=' in {logp} (RUST_LOG=debug)")
        return {"setup": int(m.group(1)) / 1000.0, "launch_to_ready": t_ready}

    def teardown(self, i, last):
        p, logp = self.procs.pop(i)
        p.stdin.close()
        rc = p.wait()
        t_exit = time.time()
        t_gone = wait_gone([self.host_link(i)])
        if last and self.mode == "zone":
            # The last member's keeper removes the zone bridge; a bridge still
            # there after 3 s is recorded as a leak by run_round.
            try:
                t_gone = wait_gone([self.bridge], timeout=3.0)
            except RuntimeError:
                pass
        if rc != 0:
            raise RuntimeError(f"{self.name} {i}: exit status {rc}; log: {open(logp).read()[-800:]}")
        e = parse_log(logp)
        t_pid1, _ = log_find(e, "container PID 1 exited")
        t_clean, _ = log_find(e, "cleaned up, exiting")
        if t_pid1 is None or t_clean is None:
            raise RuntimeError(f"{self.name} {i}: 'container PID 1 exited'/'cleaned up, exiting' missing in {logp}")
        return {
            "teardown": (t_exit - t_pid1) * 1000,          # user-visible: launcher exit after payload exit
            "teardown_complete": (t_gone - t_pid1) * 1000,  # until the host links are really gone
            "exit_after_payload_log": (t_clean - t_pid1) * 1000,
        }

    def abort(self):
        for i in list(self.procs):
            p, _ = self.procs.pop(i)
            try:
                p.stdin.close()
                p.wait(timeout=10)
            except Exception:
                p.kill()
                p.wait()


class Netavark:
    """`netavark setup`/`teardown` of one bridge network (podman-style config:
    IPAM by the caller, i.e. static_ips), one netns per container."""

    def __init__(self, nat):
        self.nat = nat
        self.name = "netavark bridge + iptables NAT" if nat else "netavark bridge (internal)"
        self.tag = "na" if nat else "ni"
        self.cfgdir = f"{WORK}/netavark-{self.tag}"
        os.makedirs(self.cfgdir, exist_ok=True)
        self.made = set()

    def conf(self, i):
        k = i + 2
        ip = f"10.88.{k >> 8}.{k & 255}"
        c = {
            "container_id": f"{i + 1:064x}",
            "container_name": f"c{i}",
            "networks": {"bench": {"interface_name": "eth0", "static_ips": [ip]}},
            "network_info": {"bench": {
                "dns_enabled": False, "driver": "bridge", "id": "ab" * 32, "internal": not self.nat,
                "ipv6_enabled": False, "name": "bench", "network_interface": "nvbench0",
                "subnets": [{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]}},
        }
        path = f"{self.cfgdir}/c{i}.json"
        with open(path, "w") as f:
            json.dump(c, f)
        return path

    def argv(self, i, cmd):
        return [C["netavark"], "--config", self.cfgdir, "-f", f"{self.cfgdir}/c{i}.json", cmd, f"/run/netns/{self.tag}{i}"]

    def setup(self, i):
        netns_add(f"{self.tag}{i}")
        self.made.add(i)
        self.conf(i)
        return {"setup": timed(self.argv(i, "setup"))}

    def teardown(self, i, last):
        ms = timed(self.argv(i, "teardown"))
        netns_del(f"{self.tag}{i}")
        self.made.discard(i)
        if last and link_exists("nvbench0"):
            raise RuntimeError("netavark left its bridge nvbench0 after the last teardown")
        return {"teardown": ms}

    def abort(self):
        for i in list(self.made):
            subprocess.run(self.argv(i, "teardown"), stdout=DEVNULL, stderr=DEVNULL)
            subprocess.run(["ip", "netns", "del", f"{self.tag}{i}"], stderr=DEVNULL)
            self.made.discard(i)


class Cni:
    """The CNI bridge plugin with host-local IPAM, invoked directly."""

    def __init__(self, masq):
        self.masq = masq
        self.name = "CNI bridge + ipMasq" if masq else "CNI bridge"
        self.tag = "cm" if masq else "cb"
        self.bridge = f"{self.tag}bench0"
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": f"bench{self.tag}", "type": "bridge", "bridge": self.bridge,
            "isGateway": True, "ipMasq": masq,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]],
                     "dataDir": f"{WORK}/cni-ipam"}}).encode()
        self.made = set()

    def env(self, i, cmd):
        e = dict(os.environ)
        e.update(CNI_COMMAND=cmd, CNI_CONTAINERID=f"{self.tag}{i:08d}", CNI_NETNS=f"/run/netns/{self.tag}{i}",
                 CNI_IFNAME="eth0", CNI_PATH=C["cni_dir"])
        return e

    def setup(self, i):
        netns_add(f"{self.tag}{i}")
        self.made.add(i)
        return {"setup": timed([f"{C['cni_dir']}/bridge"], self.conf, self.env(i, "ADD"))}

    def teardown(self, i, last):
        ms = timed([f"{C['cni_dir']}/bridge"], self.conf, self.env(i, "DEL"))
        netns_del(f"{self.tag}{i}")
        self.made.discard(i)
        if last:
            # The bridge plugin never removes its bridge: done here, untimed.
            sh("ip", "link", "del", self.bridge)
        return {"teardown": ms}

    def abort(self):
        for i in list(self.made):
            subprocess.run([f"{C['cni_dir']}/bridge"], input=self.conf, env=self.env(i, "DEL"),
                           stdout=DEVNULL, stderr=DEVNULL)
            subprocess.run(["ip", "netns", "del", f"{self.tag}{i}"], stderr=DEVNULL)
            self.made.discard(i)
        subprocess.run(["ip", "link", "del", self.bridge], stderr=DEVNULL)


class IpCommands:
    """Reference: ip link add veth; set peer netns; set up on both sides."""

    name = "4x ip (veth)"

    def __init__(self):
        self.made = set()

    def setup(self, i):
        ns = f"ip{i}"
        netns_add(ns)
        self.made.add(i)
        ms = timed(["ip", "link", "add", f"vh{i}", "type", "veth", "peer", "name", f"vc{i}"])
        ms += timed(["ip", "link", "set", f"vc{i}", "netns", ns])
        ms += timed(["ip", "link", "set", f"vh{i}", "up"])
        ms += timed(["ip", "-n", ns, "link", "set", f"vc{i}", "up"])
        return {"setup": ms}

    def teardown(self, i, last):
        ms = timed(["ip", "link", "del", f"vh{i}"])
        netns_del(f"ip{i}")
        self.made.discard(i)
        return {"teardown": ms}

    def abort(self):
        for i in list(self.made):
            subprocess.run(["ip", "link", "del", f"vh{i}"], stderr=DEVNULL)
            subprocess.run(["ip", "netns", "del", f"ip{i}"], stderr=DEVNULL)
            self.made.discard(i)


def run_round(tool, n, samples):
    """Sets up n containers one after the other (all coexist), then tears
    them down in the same order; one sample per container and metric."""
    try:
        for i in range(n):
            for k, v in tool.setup(i).items():
                samples.setdefault(k, []).append((i, v))
        for i in range(n):
            for k, v in tool.teardown(i, i == n - 1).items():
                samples.setdefault(k, []).append((i, v))
    except BaseException:
        tool.abort()
        raise
    # Teardown must leave the namespace as it was: anything left is recorded
    # as a leak (and removed, untimed, so that the next round starts clean).
    deadline = time.monotonic() + 3
    while links() != BASELINE and time.monotonic() < deadline:
        time.sleep(0.01)
    left = sorted(set(links()) - set(BASELINE))
    if left:
        log(f"  LEAK: {tool.name} N={n} left {left}")
        LEAKS.setdefault(tool.name, {}).setdefault(str(n), []).append(left)
        for name in left:
            sh("ip", "link", "del", name, check=False)
        if links() != BASELINE:
            raise RuntimeError(f"{tool.name} N={n}: links left that could not be removed: {links()}")
    if os.path.isdir("/run/netns") and os.listdir("/run/netns"):
        raise RuntimeError(f"{tool.name} N={n}: netns left behind: {os.listdir('/run/netns')}")


def stats(values):
    v = sorted(values)
    q = statistics.quantiles(v, n=10, method="inclusive") if len(v) > 1 else [v[0]] * 9
    return {"n": len(v), "median": statistics.median(v), "p90": q[8], "mean": statistics.fmean(v),
            "min": v[0], "max": v[-1]}


def launch_context(rng):
    """Launch-to-exit of /bin/true with no network, -n and a zone."""
    modes = {"no network": [], "-n (veth)": ["-n"], "--network-zone": ["--network-zone=launch"]}
    res = {m: [] for m in modes}
    names = list(modes)
    for r in range(C["launches"] + 3):
        rng.shuffle(names)
        for m in names:
            mach = f"l{r}{'nvz'[list(modes).index(m)]}"
            argv = [C["netspawn"], "-q", "--register=no", *modes[m], "-M", mach, "--read-only", "-D", C["image"],
                    "/bin/true"]
            ms = timed(argv, env=LAUNCH_ENV)
            # Untimed: let the keeper finish so runs do not overlap.
            wait_gone([f"ve-{mach}", f"vb-{mach}"])
            if m == "--network-zone":
                try:
                    wait_gone(["vz-launch"], timeout=3.0)
                except RuntimeError:
                    LEAKS.setdefault("launch: netspawn --network-zone", []).append(["vz-launch"])
                    sh("ip", "link", "del", "vz-launch")
            if r >= 3:  # the first three rounds are warm-up
                res[m].append(ms)
    return res


def main():
    global BASELINE, NS_ENV, LAUNCH_ENV, LEAKS, FAILURES
    LEAKS = {}
    FAILURES = {}
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    # Private /run: ip netns, netavark, iptables' lock all stay in this mount namespace.
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,size=64m", "netbench", "/run")
    sh("ip", "link", "set", "lo", "up")
    os.makedirs(f"{WORK}/logs", exist_ok=True)
    BASELINE = links()
    NS_ENV = dict(os.environ, RUST_LOG="debug", NO_COLOR="1")
    LAUNCH_ENV = dict(os.environ)
    LAUNCH_ENV.pop("RUST_LOG", None)
    rng = random.Random(C["seed"])
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "loadavg_start": open("/proc/loadavg").read().split()[:3], "config": C, "baseline_links": BASELINE}

    # Spawn floor of the measuring loop (subprocess spawn + wait of /bin/true).
    floor = [timed(["/bin/true"]) for _ in range(50)]
    out["spawn_floor_ms"] = stats(floor)

    # Launch context first: after the big rounds the kernel is still
    # destroying thousands of network namespaces in the background.
    if C["launches"]:
        log(f"launch-to-exit of /bin/true: {C['launches']} rounds x 3 modes")
        lc = launch_context(rng)
        out["launch"] = {m: stats(v) for m, v in lc.items()}
        out["raw_launch"] = {m: [round(x, 4) for x in v] for m, v in lc.items()}

    tools = [Netspawn("veth"), Netspawn("zone"), Netavark(False), Cni(False), IpCommands()]
    if C["nat"]:
        tools += [Netavark(True), Cni(True)]
    plan = []  # (n, rounds, tools)
    for n in C["sizes"]:
        rounds = max(1, min(C["rounds"], 100 // n)) if n < 100 else 1
        plan.append((n, rounds, tools))
    if C["big"]:
        big_tools = [t for t in tools if C["big_all"] or not getattr(t, "nat", False) and not getattr(t, "masq", False)]
        plan.append((C["big"], 1, big_tools))
    results = {t.name: {} for t in tools}
    raw = {t.name: {} for t in tools}
    for n, rounds, ts in plan:
        log(f"N={n}: {rounds} round(s) x {len(ts)} tools")
        per = {t.name: {} for t in ts}
        for r in range(rounds):
            order = list(ts)
            rng.shuffle(order)
            for t in order:
                if n >= 1000:
                    time.sleep(5)  # let the previous tool's background teardown settle
                t0 = time.monotonic()
                try:
                    run_round(t, n, per[t.name])
                except RuntimeError as e:
                    # A failed launch is a result too: recorded, and the other tools go on.
                    log(f"  FAILED: {t.name} N={n}: {e}")
                    FAILURES.setdefault(t.name, {}).setdefault(str(n), []).append(str(e)[:600])
                    deadline = time.monotonic() + 30
                    while links() != BASELINE and time.monotonic() < deadline:
                        time.sleep(0.1)
                    if links() != BASELINE:
                        raise RuntimeError(f"after the failure of {t.name}: links left: {links()}") from e
                    continue
                if n >= 100:
                    log(f"  {t.name}: {time.monotonic() - t0:.1f} s")
        for t in ts:
            if not per[t.name]:
                continue
            res = {k: stats([v for _, v in s]) for k, s in per[t.name].items()}
            if n >= 20:
                # Growth within a run: the first and the last tenth of the containers.
                tenth = max(1, n // 10)
                for k, s in per[t.name].items():
                    res[k]["first_tenth_median"] = statistics.median([v for i, v in s if i < tenth])
                    res[k]["last_tenth_median"] = statistics.median([v for i, v in s if i >= n - tenth])
            results[t.name][str(n)] = res
            raw[t.name][str(n)] = {k: [round(v, 4) for _, v in s] for k, s in per[t.name].items()}
    out["results"] = results
    out["leaks"] = LEAKS
    out["failures"] = FAILURES
    out["raw"] = raw

    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    if links() != BASELINE:
        raise RuntimeError(f"links left in the benchmark namespace: {links()}")
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)


main()
PYEOF

cat >"$WORK/network_report.py" <<'PYEOF'
"""Writes bench/results/network.md from network.json, with the ratios."""
import json
import sys

d = json.load(open(sys.argv[1]))
R = d["results"]
c = d["config"]
NSV, NSZ, NAV, CNI = "netspawn -n (veth)", "netspawn --network-zone", "netavark bridge (internal)", "CNI bridge"
sizes = sorted({int(n) for t in R.values() for n in t})


def g(tool, n, metric, key="median"):
    try:
        return R[tool][str(n)][metric][key]
    except KeyError:
        return None


def f(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


ratios = {}
for n in sizes:
    for ns in (NSV, NSZ):
        a, b = g(ns, n, "setup"), g(NAV, n, "setup")
        if a is not None and b is not None:
            ratios[f"{ns} setup / netavark setup, N={n}"] = a / b
out = []
w = out.append
w("# Per-container network setup and teardown: netspawn vs netavark vs CNI vs ip")
w("")
w(f"- date: {d['date']}")
w(f"- machine: {c['machine']}")
w(f"- load average at start: {', '.join(d['loadavg_start'])}; at end: {', '.join(d['loadavg_end'])}")
for k, v in c["versions"].items():
    w(f"- {k}: {v}")
w(f"- container counts: {', '.join(map(str, sizes))}; seed {c['seed']}; measuring-loop spawn floor "
  f"(subprocess `/bin/true`): median {f(d['spawn_floor_ms']['median'])} ms")
w("")
w("Method: inside a private network + mount namespace made by bench/network.sh (tmpfs on /run), for each N "
  "each tool sets up N containers one after the other (all N coexist), then tears them down in the same "
  f"order; per-container samples. N < 100 is repeated (min({c.get('rounds', 20)}, 100/N) rounds: N=1 "
  f"{min(c.get('rounds', 20), 100)}, N=10 {min(c.get('rounds', 20), 10)}); tools run in a "
  "seeded random order per round. Setup: netspawn = the launcher's own `network links set up elapsed_us` "
  "(creating the links, configuring the container side from inside its netns, forking the teardown keeper; "
  "no process start), others = spawn-to-exit of each call (their process start is part of their cost). "
  "Teardown: netspawn = launcher exit after its payload exited (`container PID 1 exited` log timestamp "
  "to waitpid; the user-visible cost), and, as 'complete', until `ve-`/`vb-` (and, after the last member, "
  "`vz-`) are really gone (polled with if_nametoindex every 0.5 ms); others = spawn-to-exit of the "
  "teardown call (links are gone when it returns). A fresh netns per container for netavark/CNI/ip is "
  "made with `ip netns add` outside the timing. See bench/network-README.md.")
w("")
w("## Per-container milliseconds (median / p90)")
w("")
w("| tool | N | setup median | setup p90 | teardown median | teardown p90 | teardown complete median | complete p90 | samples |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in R:
    for n in sizes:
        if str(n) not in R[t]:
            continue
        comp = "teardown_complete" if "teardown_complete" in R[t][str(n)] else "teardown"
        w(f"| {t} | {n} | {f(g(t, n, 'setup'))} | {f(g(t, n, 'setup', 'p90'))} | {f(g(t, n, 'teardown'))} | "
          f"{f(g(t, n, 'teardown', 'p90'))} | {f(g(t, n, comp))} | {f(g(t, n, comp, 'p90'))} | "
          f"{R[t][str(n)]['setup']['n']} |")
w("")
w("## Growth with N")
w("")
w("Per-container median at each N divided by the median at N=1, and within the largest runs the median of the "
  "first tenth of the containers vs the last tenth (cost of a container when few vs many already exist).")
w("")
big = [n for n in sizes if n >= 100]
w("| tool | metric | " + " | ".join([f"N={n} / N=1" for n in sizes[1:]] + [f"N={n}: first→last tenth" for n in big]) + " |")
w("|---|---|" + "---:|" * (len(sizes) - 1 + len(big)))
for t in R:
    for m in ("setup", "teardown", "teardown_complete"):
        base = g(t, 1, m)
        if base is None:
            continue
        cells = [f(g(t, n, m) / base) if g(t, n, m) is not None else "–" for n in sizes[1:]]
        for n in big:
            a, b = g(t, n, m, "first_tenth_median"), g(t, n, m, "last_tenth_median")
            cells.append("–" if a is None else f"{f(a)} → {f(b)}")
        w(f"| {t} | {m} | " + " | ".join(cells) + " |")
w("")
w("## Targets")
w("")
w("| ratio | value | target |")
w("|---|---:|---|")
for k, v in ratios.items():
    w(f"| {k} | {v:.2f}x | ≤ 0.30x |")
for ns in (NSV, NSZ):
    for n in sizes:
        e = R.get(ns, {}).get(str(n), {}).get("teardown")
        if e:
            w(f"| {ns}, N={n}: launcher exit after payload exit (median / p90 / max ms) | "
              f"{e['median']:.2f} / {e['p90']:.2f} / {e['max']:.2f} | ≤ 2 ms |")
w("")
if d.get("failures"):
    w("## Failures (a round that failed is left out of the tables above, except the samples taken before the failure)")
    w("")
    for t, per in d["failures"].items():
        for n, lst in per.items():
            for msg in lst:
                w(f"- **{t}**, N={n}: " + msg.replace("\n", " ")[:400])
    w("")
if d.get("leaks"):
    w("## Leaks (links a tool left behind after its last teardown; removed by the benchmark, untimed)")
    w("")
    for t, per in d["leaks"].items():
        if isinstance(per, dict):
            for n, lst in per.items():
                w(f"- **{t}**, N={n}: {len(lst)} round(s) left {sorted({x for l in lst for x in l})}")
        else:
            w(f"- **{t}**: {len(per)} launch(es) left {sorted({x for l in per for x in l})}")
    w("")
if "launch" in d:
    L = d["launch"]
    w(f"## Launch-to-exit of /bin/true ({L['no network']['n']} interleaved samples per mode)")
    w("")
    w("Spawn-to-exit of `netspawn -q --register=no [NET] -M NAME --read-only -D IMG /bin/true`, a new name each "
      "time, waiting (untimed) for the keeper to remove the links between runs.")
    w("")
    w("| mode | median ms | p90 ms | min ms | median - no network |")
    w("|---|---:|---:|---:|---:|")
    for m, s in L.items():
        w(f"| {m} | {f(s['median'])} | {f(s['p90'])} | {f(s['min'])} | {f(s['median'] - L['no network']['median'])} |")
    w("")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PYEOF

MACHINE="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
C_WORK=$WORK C_NETSPAWN=$NETSPAWN C_IMAGE=$IMG C_NETAVARK=$NETAVARK C_CNI=$CNI_DIR C_SIZES=$SIZES C_BIG=$BIG \
    C_BIG_ALL=$BIG_ALL C_NAT=$NAT C_LAUNCHES=$LAUNCHES C_ROUNDS=$ROUNDS C_SEED=$SEED C_MACHINE=$MACHINE C_VERSIONS=$VERSIONS \
    "$PY" - "$WORK/config.json" <<'EOF'
import json, os, sys
e = os.environ
json.dump({
    "work": e["C_WORK"], "netspawn": e["C_NETSPAWN"], "image": e["C_IMAGE"], "netavark": e["C_NETAVARK"],
    "cni_dir": e["C_CNI"], "sizes": [int(x) for x in e["C_SIZES"].split(",")], "big": int(e["C_BIG"]),
    "big_all": e["C_BIG_ALL"] == "1", "nat": e["C_NAT"] == "1", "launches": int(e["C_LAUNCHES"]),
    "rounds": int(e["C_ROUNDS"]), "seed": int(e["C_SEED"]), "machine": e["C_MACHINE"], "versions": json.loads(e["C_VERSIONS"]),
}, open(sys.argv[1], "w"), indent=1)
EOF

log "measuring (sizes $SIZES, big $BIG) in a private network namespace"
run_isolated unshare -n -- "$PY" "$WORK/network_bench.py" "$WORK/config.json" "$WORK/network.json"

[ -z "$(ls -A "$NETSPAWN_RUN_DIR/machines" 2>/dev/null)" ] || die "registry entries left in $NETSPAWN_RUN_DIR/machines"
HOST_AFTER=$(host_state)
HOST_NOTE="host links, \`ip -all netns list\`, /run/netns and /run/xtables.lock: unchanged by the run (checked)"
if [ "$HOST_BEFORE" != "$HOST_AFTER" ]; then
    # Others share this machine: only what this benchmark could have made
    # (its link names, a netns, iptables' lock) is an error.
    added=$(comm -13 <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER"))
    diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER") >&2 || true
    if grep -qE '^(ve-|vb-|vz-bench|vz-launch|nvbench0|cbbench0|cmbench0|vh[0-9]|vc[0-9]|veth)|^netns: .|^run/netns: .|^xtables.lock: yes' <<<"$added"; then
        die "the host's links or namespaces changed during the run (see the diff above)"
    fi
    log "the host's link list changed during the run, but not by anything this benchmark makes (another user)"
    HOST_NOTE="host checked before/after: nothing this benchmark makes appeared (other users changed: $(diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER") | grep '^[<>]' | tr '\n' ' '))"
fi
cp "$WORK/network.json" "$RESULTS_DIR/network.json"
"$PY" "$WORK/network_report.py" "$RESULTS_DIR/network.json" "$RESULTS_DIR/network.md"
echo "- $HOST_NOTE" >>"$RESULTS_DIR/network.md"
cat "$RESULTS_DIR/network.md"
log "written: $RESULTS_DIR/network.md, $RESULTS_DIR/network.json"
