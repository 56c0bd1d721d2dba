#!/usr/bin/env python3
"""Link-up to a usable IPv6 address, router by router (bench/ipv6-linkup.sh).

Runs inside the benchmark's own network namespace, where one veth pair per
router is set up: the host side served by that router (netspawn-netd,
systemd-networkd, radvd), the container side in a network namespace of its
own (/run/netns/c-NAME). A sample: the container side goes down (the kernel
drops its SLAAC address), then, timed from the moment it is set up again,
until /proc/net/if_inet6 in its namespace lists a global address on it that
is usable (not tentative, or optimistic). Client modes:

  rs      what netspawn does for a plain command: the link's sysctls allow
          optimistic DAD, and a router solicitation is sent at link-up;
  kernel  the kernel alone (it solicits after rtr_solicit_delay, 1 s) with
          the same sysctls: what a guest without a network manager gets,
          unless the router advertises first.

Each round runs every (router, mode) once in a seeded random order.
"""

import argparse
import ctypes
import fcntl
import json
import os
import random
import socket
import statistics
import struct
import time

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFA_F_OPTIMISTIC = 0x04
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08

libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def set_up(ifname, up):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", ifname.encode(), 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", ifname.encode(), flags))
    finally:
        s.close()


IFF_RUNNING = 0x40


def running(ifname):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", ifname.encode(), 0)
        return bool(struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1] & IFF_RUNNING)
    finally:
        s.close()


def usable(ifname):
    """A global address on ifname that can be used now."""
    with open("/proc/thread-self/net/if_inet6") as f:
        for line in f:
            addr, _idx, _plen, scope, flags, name = line.split()
            if name != ifname or int(scope, 16) != 0 or addr.startswith("fe80"):
                continue
            fl = int(flags, 16)
            if fl & IFA_F_DADFAILED:
                continue
            if not fl & IFA_F_TENTATIVE or fl & IFA_F_OPTIMISTIC:
                return True
    return False


def any_global(ifname):
    with open("/proc/thread-self/net/if_inet6") as f:
        return any(
            l.split()[5] == ifname and int(l.split()[3], 16) == 0 for l in f
        )


RS = bytes([133, 0, 0, 0, 0, 0, 0, 0])


def solicit(ifname):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.sendto(RS, ("ff02::2", 0, 0, socket.if_nametoindex(ifname)))
    finally:
        s.close()


def sample(nsfd, ownfd, ifname, mode, timeout):
    setns(nsfd)
    try:
        set_up(ifname, False)
        deadline = time.monotonic() + 2
        while any_global(ifname) and time.monotonic() < deadline:
            time.sleep(0.001)
        # Let the router see the carrier go and come back as with a new link.
        time.sleep(0.15)
        t0 = time.perf_counter()
        set_up(ifname, True)
        resend = t0 + 0.25
        if mode == "rs":
            # As netspawn: once the link runs (the kernel drops what is sent
            # before its link watch has activated it), one solicitation.
            while not running(ifname) and time.perf_counter() - t0 < 1:
                time.sleep(0.0002)
            try:
                solicit(ifname)
            except OSError:
                pass
        while True:
            now = time.perf_counter()
            if usable(ifname):
                return (now - t0) * 1000.0
            if now - t0 > timeout:
                return None
            if mode == "rs" and now >= resend:
                try:
                    solicit(ifname)
                except OSError:
                    pass
                resend = now + 0.25
            time.sleep(0.0002)
    finally:
        setns(ownfd)


def stats(v):
    v = sorted(v)
    if not v:
        return {"n": 0}
    p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
    return {
        "n": len(v),
        "median_ms": round(statistics.median(v), 3),
        "p90_ms": round(p90, 3),
        "mean_ms": round(statistics.fmean(v), 3),
        "stdev_ms": round(statistics.pstdev(v), 3),
        "min_ms": round(v[0], 3),
        "max_ms": round(v[-1], 3),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routers", required=True, help="NAME=NETNS:IFNAME,...")
    ap.add_argument("--modes", default="rs,kernel")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--meta", default="{}", help="JSON merged into every result")
    a = ap.parse_args()
    routers = []
    for item in a.routers.split(","):
        name, rest = item.split("=", 1)
        ns, ifname = rest.split(":", 1)
        routers.append((name, os.open(f"/run/netns/{ns}", os.O_RDONLY), ifname))
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    modes = a.modes.split(",")
    rng = random.Random(a.seed)
    samples = {(m, r[0]): [] for m in modes for r in routers}
    failures = {(m, r[0]): 0 for m in modes for r in routers}
    cases = [(m, r) for m in modes for r in routers]
    for rnd in range(a.warmup + a.rounds):
        order = cases[:]
        rng.shuffle(order)
        for mode, (name, fd, ifname) in order:
            t = sample(fd, own, ifname, mode, a.timeout)
            if a.verbose:
                print(f"round {rnd} {mode} {name}: {t}", flush=True)
            if rnd < a.warmup:
                continue
            if t is None:
                failures[(mode, name)] += 1
            else:
                samples[(mode, name)].append(t)
    meta = json.loads(a.meta)
    out = {}
    names = [r[0] for r in routers]
    for mode in modes:
        st = {n: stats(samples[(mode, n)]) for n in names}
        base = names[0]
        ratios = {}
        for ref in names:
            rm = st[ref].get("median_ms")
            ratios[f"vs_{ref}"] = {
                n: (round(st[n]["median_ms"] / rm, 2) if rm and st[n].get("median_ms") else None)
                for n in names
            }
        what = {
            "rs": "a plain command (kernel SLAAC, optimistic DAD, one router solicitation at link-up, as netspawn does)",
            "kernel": "the kernel alone (optimistic DAD, its own router solicitation)",
        }[mode]
        out[mode] = dict(
            meta,
            benchmark=f"link-up to a usable IPv6 address in the container: {what}",
            kind="ipv6-linkup",
            rounds=a.rounds,
            warmup_rounds=a.warmup,
            order_seed=a.seed,
            baseline=base,
            reference=base,
            stats=st,
            ratios_of_medians=ratios,
            failures={n: failures[(mode, n)] for n in names},
            samples_ms={n: [round(x, 3) for x in samples[(mode, n)]] for n in names},
        )
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    for mode in modes:
        print(f"{mode}:")
        for n in names:
            s = out[mode]["stats"][n]
            r = out[mode]["ratios_of_medians"][f"vs_{names[0]}"][n]
            print(
                f"  {n:24} median {s.get('median_ms')} ms  p90 {s.get('p90_ms')} ms  "
                f"min {s.get('min_ms')} ms  ({r}x)  failures {out[mode]['failures'][n]}"
            )


if __name__ == "__main__":
    main()
