#!/usr/bin/python3
"""Longest syscalls and stretches without one, from `strace -f -ttt -T` output.

A stretch is, per process, the time from the end of one system call to the
start of the next: time spent in user space (or waiting for the CPU). In a
launcher that mostly means computation, e.g. compiling a seccomp filter or
parsing, which `strace -c` cannot show. Also prints the wall time from the
first to the last traced event and the total of the stretches per process.

Usage: strace_gaps.py TRACE [N]
"""

import re
import sys

LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
DURATION = re.compile(r"<(\d+\.\d+)>\s*$")


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: strace_gaps.py TRACE [N]", file=sys.stderr)
        return 1
    top = int(argv[2]) if len(argv) == 3 else 12
    last_end = {}   # pid -> (end time, text of that call)
    prog = {}       # pid -> program name (from execve), else inherited label
    gaps = []
    calls = []      # (duration, pid, text) of completed calls with <duration>
    first = last = None
    with open(argv[1], errors="replace") as f:
        for raw in f:
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid, ts, text = int(m.group(1)), float(m.group(2)), m.group(3)
            first = ts if first is None else first
            last = ts
            if text.startswith("<..."):
                # "<... foo resumed> ... = 0 <0.000100>": the call ends now.
                last_end[pid] = (ts, text)
                d = DURATION.search(text)
                if d:
                    calls.append((float(d.group(1)), pid, text))
                continue
            if text.startswith("+++") or text.startswith("---"):
                continue
            if pid in last_end:
                end, prev = last_end[pid]
                gaps.append((ts - end, pid, prev, text))
            if text.startswith("execve("):
                name = text.split('"', 2)[1] if '"' in text else "?"
                prog[pid] = name.rsplit("/", 1)[-1]
            if text.endswith("<unfinished ...>"):
                last_end.pop(pid, None)
                continue
            d = DURATION.search(text)
            last_end[pid] = (ts + (float(d.group(1)) if d else 0.0), text)
            if d:
                calls.append((float(d.group(1)), pid, text))
    if first is None:
        print("(empty trace)")
        return 0
    print(f"traced wall time, first to last event: {(last - first) * 1000:.1f} ms")
    per_pid = {}
    for g, pid, _, _ in gaps:
        per_pid[pid] = per_pid.get(pid, 0.0) + g
    for pid, total in sorted(per_pid.items(), key=lambda kv: -kv[1]):
        print(f"  pid {pid} ({prog.get(pid, 'netspawn or fork of it')}): {total * 1000:.1f} ms outside syscalls")
    print()
    print("longest single syscalls (wall time, wait4 of the payload excluded):")
    for d, pid, text in sorted((c for c in calls if not c[2].startswith(("wait4", "<... wait4"))), reverse=True)[:6]:
        print(f"{d * 1000:8.2f}  {pid:<7}  {text[:90]}")
    print()
    print("longest stretches without a syscall:")
    print(f"{'ms':>8}  pid      after -> before")
    for g, pid, prev, nxt in sorted(gaps, reverse=True)[:top]:
        print(f"{g * 1000:8.2f}  {pid:<7}  {prev[:70]}")
        print(f"{'':8}  {'':7}  -> {nxt[:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
