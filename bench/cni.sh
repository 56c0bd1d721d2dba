#!/bin/bash
# CNI ADD and DEL per container: netspawn-cni (zone bridge, netd's DHCP as
# IPAM, registry entry) against the reference bridge + host-local plugins
# (and each with port forwards: netspawn-cni's portMappings against the
# reference chain + portmap), invoked the same way (a fresh process per
# plugin, CNI_* in the environment, the configuration on stdin, as libcni
# does), with N = 1, 10, 100 attachments alive at once; optionally the
# end-to-end `podman run --rm … true` on a netspawn-cni network against
# podman's own CNI bridge configuration. Everything runs in a private network
# and mount namespace this script makes. Writes bench/results/cni.{md,json}.
#
# Usage: bench/cni.sh [--sizes LIST] [--rounds N] [--podman N] [--no-build] [--debug]
#   --sizes LIST  attachment counts, comma-separated (default 1,10,100)
#   --rounds N    repeat rounds per count (default 5; N=100 runs once per round)
#   --podman N    podman run --rm … true samples per network (default 3; 0: none)
#   --no-build    use the binaries already built
#   --debug       use target/debug (figures not for the README)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES=1,10,100 ROUNDS=5 PODMAN=3 PROFILE=release
while (($#)); do
    case $1 in
    --sizes) SIZES=${2:?}; shift ;;
    --sizes=*) SIZES=${1#*=} ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --rounds=*) ROUNDS=${1#*=} ;;
    --podman) PODMAN=${2:?}; shift ;;
    --podman=*) PODMAN=${1#*=} ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --debug) PROFILE=debug; export BENCH_NO_BUILD=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
    esac
    shift
done
[[ $SIZES =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--sizes needs numbers separated by commas"
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $PODMAN =~ ^[0-9]+$ ]] || die "--rounds/--podman need a number"

need_root
ensure_packages python3 iproute2 util-linux busybox-static containernetworking-plugins iptables
CNI_DIR=/usr/lib/cni
for p in bridge host-local portmap; do
    [ -x "$CNI_DIR/$p" ] || die "reference plugin $CNI_DIR/$p missing"
done
TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/$PROFILE
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
    log "building: cargo build --release -p netspawn-cni -p netspawn-netd -p netspawn"
    (cd "$REPO_DIR" && cargo build --release --quiet -p netspawn-cni -p netspawn-netd -p netspawn) ||
        die "cargo build failed"
fi
for b in netspawn-cni netspawn-netd netspawnctl; do
    [ -x "$TARGET/$b" ] || die "$TARGET/$b missing"
done
if ((PODMAN)) && ! command -v podman >/dev/null; then
    log "podman not installed: no end-to-end part"
    PODMAN=0
fi
setup_sandbox
mkdir -p "$WORK/bin"
cp "$TARGET/netspawn-cni" "$WORK/bin/"
export NETSPAWN_NETD=$TARGET/netspawn-netd
if ((PODMAN)); then
    "$TARGET/netspawnctl" bootstrap busybox bb >/dev/null
    tar -C "$NETSPAWN_IMAGE_DIR/bb" -cf "$WORK/bb.tar" .
fi

# The measurement runs in fresh network and mount namespaces: private /run
# (netns files, xtables lock), /var/lib (libcni's and podman's caches) and
# /etc/cni/net.d.
cat >"$WORK/inner.sh" <<'EOS'
set -euo pipefail
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/lib
mkdir -p "$WORK/net.d" && [ -d /etc/cni/net.d ] && mount --bind "$WORK/net.d" /etc/cni/net.d
ip link set lo up
exec "$PY" - "$@" <<'EOP'
import json, os, subprocess, sys, time, statistics, platform

work, sizes, rounds, podman = os.environ["WORK"], [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3])
ours = os.path.join(work, "bin", "netspawn-cni")
ref = "/usr/lib/cni"
env0 = dict(os.environ, CNI_PATH=f"{work}/bin:{ref}")

def plugin_conf(kind, ports):
    if kind == "netspawn":
        c = {"cniVersion": "1.0.0", "name": "bench", "type": "netspawn-cni", "zone": "bz"}
        chain = [(ours, c)]
    else:
        c = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cnibench0", "isGateway": True,
             "ipMasq": True, "ipam": {"type": "host-local", "subnet": "10.222.0.0/16", "dataDir": f"{work}/host-local"}}
        chain = [(f"{ref}/bridge", c)]
        if ports:
            chain.append((f"{ref}/portmap", {"cniVersion": "1.0.0", "name": "bench", "type": "portmap",
                                              "capabilities": {"portMappings": True}}))
    return chain

def call(path, cmd, cid, netns, conf):
    env = dict(env0, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_IFNAME="eth0", CNI_NETNS=netns or "",
               CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAME={cid}")
    p = subprocess.run([path], input=json.dumps(conf).encode(), env=env, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"{cmd} {cid} with {path} failed: {p.stdout.decode()} {p.stderr.decode()}")
    return json.loads(p.stdout) if p.stdout.strip() else None

def run_chain(chain, cmd, cid, netns, port):
    """One attachment's ADD or DEL through the chain, as libcni runs it."""
    prev = None
    order = chain if cmd == "ADD" else list(reversed(chain))
    t0 = time.perf_counter_ns()
    for path, conf in order:
        c = dict(conf)
        if port:
            c["runtimeConfig"] = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
        if prev is not None:
            c["prevResult"] = prev
        out = call(path, cmd, cid, netns, c)
        if cmd == "ADD":
            prev = out
    return (time.perf_counter_ns() - t0) / 1e6

def containers(n):
    ps = [subprocess.Popen(["unshare", "--net", "--", "sleep", "3600"]) for _ in range(n)]
    for p in ps:
        want = f"/proc/{p.pid}/ns/net"
        for _ in range(20000):
            try:
                if open(f"/proc/{p.pid}/comm").read().strip() == "sleep" and os.readlink(want) != os.readlink("/proc/self/ns/net"):
                    break
            except OSError:
                pass
            time.sleep(0.0005)
    return ps

tools = [("netspawn-cni", "netspawn", False), ("bridge+host-local", "ref", False),
         ("netspawn-cni +ports", "netspawn", True), ("bridge+host-local+portmap", "ref", True)]
results = {t[0]: {} for t in tools}
# Warm-up: netd started, bridges made once, binaries in the page cache.
for name, kind, ports in tools:
    ps = containers(1)
    chain = plugin_conf(kind, ports)
    run_chain(chain, "ADD", "warm", f"/proc/{ps[0].pid}/ns/net", 9000 if ports else 0)
    run_chain(chain, "DEL", "warm", f"/proc/{ps[0].pid}/ns/net", 9000 if ports else 0)
    for p in ps: p.kill(); p.wait()
# The network exists for both, as it does for every container after the
# first: the reference's bridge stays from its warm-up; netspawn's zone
# bridge goes with its last member, so one attachment stays on it (untimed)
# while the sizes are measured.
stay = containers(1)
run_chain(plugin_conf("netspawn", False), "ADD", "stay", f"/proc/{stay[0].pid}/ns/net", 0)
for n in sizes:
    for r in range(rounds):
        # Interleaved: each round runs every tool once for this N.
        for name, kind, ports in tools:
            ps = containers(n)
            chain = plugin_conf(kind, ports)
            adds, dels = [], []
            for i, p in enumerate(ps):
                adds.append(run_chain(chain, "ADD", f"c{r}x{i}", f"/proc/{p.pid}/ns/net", 10000 + i if ports else 0))
            for i, p in enumerate(ps):
                dels.append(run_chain(chain, "DEL", f"c{r}x{i}", f"/proc/{p.pid}/ns/net", 10000 + i if ports else 0))
            for p in ps: p.kill(); p.wait()
            d = results[name].setdefault(str(n), {"add_ms": [], "del_ms": []})
            d["add_ms"] += adds
            d["del_ms"] += dels

run_chain(plugin_conf("netspawn", False), "DEL", "stay", f"/proc/{stay[0].pid}/ns/net", 0)
for p in stay: p.kill(); p.wait()

def link_gone(name):
    for _ in range(20000):
        if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
            return
        time.sleep(0.001)
    sys.exit(f"{name} is still there")

# The first container on a network: each tool makes its bridge (untimed
# before each sample: the reference's is deleted, netspawn's zone bridge
# has gone with the last member's DEL, and the kernel is given 0.3 s to
# finish tearing the last sample down).
for r in range(rounds):
    for name, kind, ports in tools[:2]:
        if kind == "ref":
            subprocess.run(["ip", "link", "del", "cnibench0"], capture_output=True)
        link_gone("cnibench0" if kind == "ref" else "vz-bz")
        # The kernel's teardown of the last sample (its network namespace,
        # the old bridge: RCU grace periods under the rtnl lock) runs on
        # after the links are gone; a first container on a new network does
        # not meet it, so let it finish (untimed, for both tools alike).
        time.sleep(0.3)
        ps = containers(1)
        chain = plugin_conf(kind, False)
        d = results[name].setdefault("new", {"add_ms": [], "del_ms": []})
        d["add_ms"].append(run_chain(chain, "ADD", f"n{r}", f"/proc/{ps[0].pid}/ns/net", 0))
        d["del_ms"].append(run_chain(chain, "DEL", f"n{r}", f"/proc/{ps[0].pid}/ns/net", 0))
        for p in ps: p.kill(); p.wait()

def med(v): return statistics.median(v) if v else None
summary = {}
for name in results:
    for n, d in results[name].items():
        summary.setdefault(name, {})[n] = {"add_median_ms": med(d["add_ms"]), "del_median_ms": med(d["del_ms"]),
                                          "add_p90_ms": sorted(d["add_ms"])[int(0.9 * (len(d["add_ms"]) - 1))],
                                          "del_p90_ms": sorted(d["del_ms"])[int(0.9 * (len(d["del_ms"]) - 1))],
                                          "samples": len(d["add_ms"])}

e2e = {}
if podman:
    conf = f"""[network]
network_backend = "cni"
cni_plugin_dirs = ["{work}/bin", "{ref}"]
network_config_dir = "{work}/net.d"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
tmp_dir = "{work}/pod/tmp"
static_dir = "{work}/pod/static"
volume_path = "{work}/pod/volumes"
"""
    os.makedirs(f"{work}/pod", exist_ok=True)
    open(f"{work}/containers.conf", "w").write(conf)
    open(f"{work}/storage.conf", "w").write(f'[storage]\ndriver = "vfs"\ngraphroot = "{work}/pod/root"\nrunroot = "{work}/pod/runroot"\n')
    # podman's own CNI bridge network, as `podman network create` writes it for the CNI backend.
    json.dump({"cniVersion": "1.0.0", "name": "podbridge", "plugins": [
        {"type": "bridge", "bridge": "cni-podman1", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall", "backend": ""},
        {"type": "tuning"}]}, open(f"{work}/net.d/podbridge.conflist", "w"))
    json.dump({"cniVersion": "1.0.0", "name": "nszone", "plugins": [
        {"type": "netspawn-cni", "zone": "pz", "capabilities": {"portMappings": True}}]}, open(f"{work}/net.d/nszone.conflist", "w"))
    penv = dict(os.environ, CONTAINERS_CONF=f"{work}/containers.conf", CONTAINERS_STORAGE_CONF=f"{work}/storage.conf")
    subprocess.run(["podman", "import", f"{work}/bb.tar", "localhost/bb"], env=penv, check=True, capture_output=True)
    nets = ["nszone", "podbridge"]
    e2e = {n: [] for n in nets}
    def prun(net):
        t0 = time.perf_counter_ns()
        # Under the bench's cgroup parent (lib.sh removes it), conmon's too.
        subprocess.run(["podman", "run", "--rm", "--cgroup-parent", "/" + os.environ["NETSPAWN_CGROUP_PARENT"] + "/podman",
                        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                        "--network", net, "localhost/bb", "true"], env=penv, check=True, capture_output=True)
        return (time.perf_counter_ns() - t0) / 1e6
    for net in nets:
        prun(net)
    for i in range(podman):
        for net in nets:
            e2e[net].append(prun(net))

out = {"benchmark": "cni", "host": platform.node(), "nproc": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3],
       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": sizes, "rounds": rounds,
       "summary": summary, "samples": results,
       "podman_run_true_ms": {k: {"median": med(v), "samples": v} for k, v in e2e.items()}}
json.dump(out, open(os.path.join(work, "cni.json"), "w"), indent=1)
EOP
EOS
export WORK PY
log "measuring (sizes $SIZES, $ROUNDS rounds, podman $PODMAN)"
unshare --net --mount --propagation private -- bash "$WORK/inner.sh" "$SIZES" "$ROUNDS" "$PODMAN"
# netd started by the plugin in that namespace: stopped with it.
for f in "$NETSPAWN_RUN_DIR"/netd-*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
for p in $(pgrep -f -- "--netspawn-cni-hold" || true); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "NETSPAWN_RUN_DIR=$NETSPAWN_RUN_DIR" && kill "$p"
done

mkdir -p "$RESULTS_DIR"
cp "$WORK/cni.json" "$RESULTS_DIR/cni.json"
"$PY" - "$RESULTS_DIR/cni.json" >"$RESULTS_DIR/cni.md" <<'EOP'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
print(f"# CNI ADD/DEL per container ({d['date']}, {d['host']}, {d['nproc']} CPUs, load {' '.join(d['loadavg'])})\n")
print("Median (p90) ms per attachment, N attachments alive at once on a network that exists (for netspawn-cni one "
      "more attachment keeps the zone); `new`: the first attachment on a network, each tool making its bridge; "
      "ratio = netspawn-cni / reference.\n")
print("| N | netspawn-cni ADD | bridge+host-local ADD | ratio | netspawn-cni DEL | bridge+host-local DEL | ratio |")
print("|---|---|---|---|---|---|---|")
for n in list(map(str, d["sizes"])) + (["new"] if "new" in s["netspawn-cni"] else []):
    a, b = s["netspawn-cni"][n], s["bridge+host-local"][n]
    print(f"| {n} | {a['add_median_ms']:.1f} ({a['add_p90_ms']:.1f}) | {b['add_median_ms']:.1f} ({b['add_p90_ms']:.1f}) | {a['add_median_ms']/b['add_median_ms']:.2f}x "
          f"| {a['del_median_ms']:.1f} ({a['del_p90_ms']:.1f}) | {b['del_median_ms']:.1f} ({b['del_p90_ms']:.1f}) | {a['del_median_ms']/b['del_median_ms']:.2f}x |")
print("\nWith port forwards (netspawn-cni portMappings vs bridge+host-local then portmap):\n")
print("| N | netspawn-cni ADD | reference+portmap ADD | ratio | netspawn-cni DEL | reference+portmap DEL | ratio |")
print("|---|---|---|---|---|---|---|")
for n in map(str, d["sizes"]):
    a, b = s["netspawn-cni +ports"][n], s["bridge+host-local+portmap"][n]
    print(f"| {n} | {a['add_median_ms']:.1f} | {b['add_median_ms']:.1f} | {a['add_median_ms']/b['add_median_ms']:.2f}x "
          f"| {a['del_median_ms']:.1f} | {b['del_median_ms']:.1f} | {a['del_median_ms']/b['del_median_ms']:.2f}x |")
p = d.get("podman_run_true_ms") or {}
if p:
    print("\n`podman run --rm … true`, median ms:\n")
    for k, v in p.items():
        print(f"- {k}: {v['median']:.1f} ({len(v['samples'])} samples)")
EOP
log "results: $RESULTS_DIR/cni.md"
cat "$RESULTS_DIR/cni.md"
