#!/usr/bin/python3
"""Interleaved timing driver for the netspawn benchmarks (bench/*.sh).

It owns the measurement loop and the reports; the shell scripts own setup and
cleanup. A spec (JSON) names the commands; each round runs every command once,
in a fresh (seeded) random order every round, so that background noise (other
builds on the machine, page cache, CPU frequency) falls on all tools alike
instead of on whichever ran in a given stretch of time.

A sample is the wall time from just before posix_spawn() of the tool to the
return of waitpid() for it: launch-to-exit, including the tool's own teardown.
An optional "prepare" command runs before each sample and is not timed (the
boot benchmark uses it to make a fresh image copy); an optional "check" command
runs after each sample, not timed, and must succeed (it verifies that a booted
guest really reached its target).

Usage:
    driver.py run SPEC.json OUT.json       measure, write raw samples + stats
    driver.py hyperfine OUT.json HF.json   add hyperfine's figures to OUT.json
    driver.py report OUT.json MD           write the human table
"""

import gc
import json
import os
import platform
import random
import re
import select
import signal
import statistics
import sys
import time


def fail(msg):
    """Prints one clear line and exits with status 1."""
    print(f"[bench] error: {msg}", file=sys.stderr)
    sys.exit(1)


def percentile(sorted_values, p):
    """Linear-interpolated percentile (numpy's default) of sorted values."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples_ms):
    """Median, p90 and friends of a list of milliseconds."""
    s = sorted(samples_ms)
    return {
        "n": len(s),
        "median_ms": round(percentile(s, 50), 3),
        "p90_ms": round(percentile(s, 90), 3),
        "mean_ms": round(statistics.fmean(s), 3),
        "stdev_ms": round(statistics.stdev(s), 3) if len(s) > 1 else 0.0,
        "min_ms": round(s[0], 3),
        "max_ms": round(s[-1], 3),
    }


def tail(path, lines=15):
    """The last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            data = f.read()[-4000:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn_wait(argv, log_path, timeout_s):
    """Runs argv with stdin from /dev/null and stdout+stderr to log_path.

    Returns (elapsed_ns, wait_status). Only the spawn and the wait are timed.
    On timeout the child (and only it: we started it) gets SIGTERM, then SIGKILL.
    """
    null = os.open("/dev/null", os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    actions = [
        (os.POSIX_SPAWN_DUP2, null, 0),
        (os.POSIX_SPAWN_DUP2, log, 1),
        (os.POSIX_SPAWN_DUP2, log, 2),
    ]
    try:
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        deadline = time.monotonic() + timeout_s
        if timeout_s <= 0:
            _, status = os.waitpid(pid, 0)
            t1 = time.perf_counter_ns()
            return t1 - t0, status
        # With a timeout, wait on a pidfd: woken at the child's exit, not at
        # the next tick of a polling loop (which added up to a millisecond).
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while True:
                left_ms = max(0, int((deadline - time.monotonic()) * 1000))
                if poller.poll(left_ms):
                    done, status = os.waitpid(pid, 0)
                    t1 = time.perf_counter_ns()
                    return t1 - t0, status
                if time.monotonic() > deadline:
                    break
        finally:
            os.close(pidfd)
        os.kill(pid, signal.SIGTERM)
        time.sleep(5)
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        fail(f"{argv[0]} did not finish within {timeout_s} s; log tail:\n{tail(log_path)}")
    finally:
        os.close(null)
        os.close(log)


def run_untimed(argv, what):
    """Runs a prepare/check command; it must exit 0."""
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        fail(f"{what} command failed: {' '.join(argv)}")


def one_sample(cmd, log_dir, timeout_s, settle_s=0.0):
    """Prepares, times and checks one run of a command; returns milliseconds.

    settle_s: an untimed pause before the sample, for the last sample's
    asynchronous teardown (every command gets the same)."""
    if cmd.get("prepare"):
        run_untimed(cmd["prepare"], f"prepare ({cmd['name']})")
    if settle_s > 0:
        time.sleep(settle_s)
    log_path = os.path.join(log_dir, f"{cmd['id']}.log")
    elapsed_ns, status = spawn_wait(cmd["argv"], log_path, timeout_s)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        fail(f"{cmd['name']} exited with status {code}: {' '.join(cmd['argv'])}\nlog tail:\n{tail(log_path)}")
    if cmd.get("check"):
        run_untimed(cmd["check"], f"check ({cmd['name']})")
    if cmd.get("log_pattern"):
        cmd.setdefault("log_matches", set()).update(grep_log(log_path, cmd["log_pattern"]))
    return elapsed_ns / 1e6


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def grep_log(path, pattern):
    """Lines of a log (colours removed) that match a regular expression."""
    rx = re.compile(pattern)
    try:
        with open(path, errors="replace") as f:
            return {ANSI.sub("", line).strip() for line in f if rx.search(ANSI.sub("", line))}
    except OSError:
        return set()


def machine_info():
    """CPU, cores, memory, kernel and OS of this machine, plus the load now."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    osname = "unknown"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "os": osname,
        "loadavg_start": os.getloadavg(),
    }


def cmd_run(spec_path, out_path):
    """Measures the spec's commands, interleaved, and writes raw + summary JSON."""
    with open(spec_path) as f:
        spec = json.load(f)
    cmds = spec["commands"]
    for i, c in enumerate(cmds):
        c["id"] = f"{i}-" + "".join(ch if ch.isalnum() else "_" for ch in c["name"])
        if not os.path.isabs(c["argv"][0]):
            fail(f"command for {c['name']} must start with an absolute path")
    rounds, warmup = int(spec["rounds"]), int(spec.get("warmup", 0))
    timeout_s = float(spec.get("timeout_s", 0))
    log_dir = spec["log_dir"]
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    samples = {c["name"]: [] for c in cmds}
    # (predecessor, ms) per tool: what ran just before can matter (a tool's
    # asynchronous kernel teardown can spill into the next launch).
    after = {c["name"]: [] for c in cmds}
    seed = int(spec.get("seed", 1))
    rng = random.Random(seed)
    prev = None
    gc.disable()
    for r in range(warmup + rounds):
        # A fresh random order each round (seeded, so reruns use the same
        # orders): no tool always runs first, or always right after the same
        # neighbour, as a fixed rotation would make it.
        order = list(cmds)
        rng.shuffle(order)
        for c in order:
            ms = one_sample(c, log_dir, timeout_s, float(spec.get("settle_s", 0)))
            if r >= warmup:
                samples[c["name"]].append(ms)
                after[c["name"]].append((prev, ms))
            prev = c["name"]
        if spec.get("progress"):
            done = r + 1 - warmup
            label = f"round {done}/{rounds}" if done > 0 else f"warm-up {r + 1}/{warmup}"
            print(f"[bench] {label}: " + ", ".join(f"{n} {v[-1]:.1f} ms" for n, v in samples.items() if v and done > 0),
                  file=sys.stderr)
    gc.enable()
    info["loadavg_end"] = os.getloadavg()
    stats = {c["name"]: summarize(samples[c["name"]]) for c in cmds}
    ratios = {}
    for ref_key in ("baseline", "reference"):
        ref = spec.get(ref_key)
        if ref:
            ref_med = stats[ref]["median_ms"]
            ratios[f"vs_{ref}"] = {n: round(s["median_ms"] / ref_med, 2) for n, s in stats.items()}
    out = {
        "benchmark": spec["title"],
        "kind": spec["kind"],
        "date": started,
        "machine": info,
        "versions": spec.get("versions", {}),
        "method": spec.get("method", ""),
        "rounds": rounds,
        "warmup_rounds": warmup,
        "commands": {c["name"]: " ".join(c["argv"]) for c in cmds},
        "notes": {c["name"]: c["note"] for c in cmds if c.get("note")},
        "baseline": spec.get("baseline"),
        "reference": spec.get("reference"),
        "target": spec.get("target"),
        "stats": stats,
        "ratios_of_medians": ratios,
        "order_seed": seed,
        "median_ms_by_predecessor": {
            n: {p: round(statistics.median([ms for q, ms in pairs if q == p]), 3)
                for p in sorted({q for q, _ in pairs if q})}
            for n, pairs in after.items()
        },
        "log_matches": {c["name"]: sorted(c.get("log_matches", ())) for c in cmds if c.get("log_pattern")},
        "samples_ms": {n: [round(v, 3) for v in vs] for n, vs in samples.items()},
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    for n, s in stats.items():
        print(f"[bench] {n:<28} median {s['median_ms']:9.2f} ms   p90 {s['p90_ms']:9.2f} ms", file=sys.stderr)


def cmd_hyperfine(out_path, hf_path, names_json):
    """Adds hyperfine's (sequential, per-command blocks) medians to the results."""
    with open(out_path) as f:
        out = json.load(f)
    with open(hf_path) as f:
        hf = json.load(f)
    names = json.loads(names_json)
    cross = {}
    for name, res in zip(names, hf["results"]):
        ms = sorted(t * 1000 for t in res["times"])
        cross[name] = {"median_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3), "n": len(ms)}
    out["hyperfine_crosscheck"] = cross
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def cmd_report(out_path, md_path):
    """Writes the Markdown summary of a results JSON."""
    with open(out_path) as f:
        out = json.load(f)
    m = out["machine"]
    stats, ratios = out["stats"], out["ratios_of_medians"]
    base, ref = out.get("baseline"), out.get("reference")
    cross = out.get("hyperfine_crosscheck", {})
    lines = [f"# {out['benchmark']}", ""]
    lines.append(f"- date: {out['date']}")
    lines.append(f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}, {m['os']}")
    la0 = ", ".join(f"{x:.2f}" for x in m["loadavg_start"])
    la1 = ", ".join(f"{x:.2f}" for x in m["loadavg_end"])
    lines.append(f"- load average at start: {la0}; at end: {la1}")
    for k, v in out["versions"].items():
        lines.append(f"- {k}: {v}")
    lines.append(f"- rounds: {out['rounds']} measured (+{out['warmup_rounds']} warm-up), interleaved in a random order per round (seed {out.get('order_seed')})")
    lines.append("")
    head = "| tool | median ms | p90 ms | mean ms | min ms |"
    sep = "|---|---:|---:|---:|---:|"
    if base:
        head += f" x {base} |"
        sep += "---:|"
    if ref:
        head += f" x {ref} |"
        sep += "---:|"
    if cross:
        head += " hyperfine median ms |"
        sep += "---:|"
    lines += [head, sep]
    for n, s in stats.items():
        row = f"| {n} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {s['mean_ms']:.2f} | {s['min_ms']:.2f} |"
        if base:
            row += f" {ratios['vs_' + base][n]:.2f} |"
        if ref:
            row += f" {ratios['vs_' + ref][n]:.2f} |"
        if cross:
            c = cross.get(n)
            row += f" {c['median_ms']:.2f} |" if c else " - |"
        lines.append(row)
    lines.append("")
    by_prev = out.get("median_ms_by_predecessor", {})
    if len(stats) > 2:
        lines.append("Median ms by the command that ran just before (rows: measured tool):")
        lines.append("")
        names = list(stats)
        lines.append("| tool | " + " | ".join(f"after {p}" for p in names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for n in names:
            cells = [by_prev.get(n, {}).get(p) for p in names]
            lines.append(f"| {n} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
        lines.append("")
    if out.get("target"):
        lines.append(f"Target: {out['target']}")
        lines.append("")
    lines.append("Commands:")
    lines.append("")
    for n, c in out["commands"].items():
        note = out["notes"].get(n)
        lines.append(f"- {n}: `{c}`" + (f" ({note})" if note else ""))
    lines.append("")
    lines.append("Method: " + out["method"])
    for n, matches in out.get("log_matches", {}).items():
        lines.append("")
        lines.append(f"Console lines of note under {n} (all runs): " + ("none" if not matches else ""))
        lines += [f"    {m}" for m in matches[:20]]
    if cross:
        lines.append("")
        lines.append("The hyperfine column is a cross-check of the same commands run by `hyperfine -N` "
                     "(no shell) in one invocation; hyperfine runs each command's samples as one block, "
                     "so it is more exposed to load changes than the interleaved figures.")
    lines.append("")
    with open(md_path, "w") as f:
        f.write("\n".join(lines))


def main(argv):
    if len(argv) == 4 and argv[1] == "run":
        cmd_run(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "hyperfine":
        cmd_hyperfine(argv[2], argv[3], argv[4])
    elif len(argv) == 4 and argv[1] == "report":
        cmd_report(argv[2], argv[3])
    else:
        fail("usage: driver.py run SPEC OUT | hyperfine OUT HF NAMES_JSON | report OUT MD")


if __name__ == "__main__":
    main(sys.argv)
