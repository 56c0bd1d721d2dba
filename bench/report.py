#!/usr/bin/python3
"""Writes bench/results/REPORT.md and its SVG plots from the results of the
benchmarks (bench/results/*.json), and regenerates the README's benchmark
table (between <!-- bench-table:begin --> and <!-- bench-table:end -->).

Runs nothing: it only reads the JSON files the benchmark scripts wrote, so it
can be run alone on results already there. bench/run calls it at the end.

Formats read:
  - bench/driver.py's (launch, boot, ab, userns-*, netlaunch, images, and any
    new benchmark built on the driver): stats, ratios_of_medians, samples_ms,
    baseline/reference, target. Handled generically.
  - network.json (bench/network.sh), netd.json (bench/netd.sh), nss.json
    (bench/nss.sh): their own shapes.
A JSON file in another shape is listed as not understood.

Usage: bench/report.py [--results DIR] [--readme FILE] [--no-readme] [--run-info JSON]
"""

import argparse
import datetime
import glob
import json
import textwrap
import os
import platform
import statistics
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"

# Sections come in this order; other results follow by file name.
ORDER = ["launch", "boot", "network", "netlaunch", "netd", "dns-qps", "nss", "userns-launch", "userns-chown", "images",
         "cni", "topology", "ab"]

plt = None  # matplotlib.pyplot, imported on first use


def fail(msg):
    print(f"[bench] error: {msg}", file=sys.stderr)
    sys.exit(1)


def pyplot():
    """matplotlib with a non-interactive backend and small, reproducible SVGs."""
    global plt
    if plt is None:
        try:
            import matplotlib
        except ImportError:
            fail("matplotlib is missing: apt-get install python3-matplotlib (bench/run installs it)")
        matplotlib.use("svg")
        import matplotlib.pyplot as p
        matplotlib.rcParams.update({
            "svg.fonttype": "none",        # text as text: no embedded glyph paths
            "svg.hashsalt": "netspawn",    # stable element ids: plots only change when the data does
            "font.size": 9,
            "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],  # a short font list in every text element
            "axes.titlesize": 10,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 100,
        })
        plt = p
    return plt


def save(fig, plots_dir, name, bottom=0.06):
    """Writes one SVG (no date in its metadata) and returns its path relative to the report.
    The lowest `bottom` of the figure is left to a caption."""
    os.makedirs(plots_dir, exist_ok=True)
    path = os.path.join(plots_dir, name + ".svg")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, format="svg", metadata={"Date": None})
    pyplot().close(fig)
    return "plots/" + name + ".svg"


def fmt(x, digits=2):
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def ms(x):
    """A millisecond figure with sensible precision."""
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def short(x):
    """A figure for the README table: one decimal (none from 100 up, and none
    after a whole number from 10 up)."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        s = f"{x:.1f}"
        return s[:-2] if s.endswith(".0") else s
    if x >= 0.1:
        return f"{x:.1f}"
    return f"{x:.2g}"


def rng(values, unit="ms"):
    """'a–b unit' over a list of numbers (one figure if they round alike)."""
    lo, hi = short(min(values)), short(max(values))
    return f"{lo} {unit}" if lo == hi else f"{lo}–{hi} {unit}"


def median(v):
    return statistics.median(v) if v else None


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", REPO_DIR, "status", "--porcelain", "--", "crates"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (+ uncommitted changes in crates/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def this_machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        mem = "? GiB"
    osname = "unknown"
    try:
        with open("/etc/os-release") as f:
            osname = next((l.split("=", 1)[1].strip().strip('"') for l in f if l.startswith("PRETTY_NAME=")), osname)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem}, kernel {platform.release()}, {osname}"


def measured_on(kind, d):
    """The machine a result was measured on, as recorded in it."""
    if kind == "driver":
        m = d.get("machine", {})
        if m.get("cpu"):
            return f"{m['cpu']}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, kernel {m.get('kernel')}, {m.get('os')}"
    if kind == "network":
        return d.get("config", {}).get("machine")
    if kind == "nss":
        m = d.get("machine", {})
        if m.get("cpu"):
            return f"{m['cpu']}, {m.get('cores')} cores, kernel {m.get('kernel')}"
    if kind == "netd":
        v = d.get("versions", {})
        if v.get("kernel"):
            return f"{v.get('cpus', '?')} cores, kernel {v['kernel']}"
    return None


def kind_of(d):
    if isinstance(d, dict) and "stats" in d and "samples_ms" in d:
        return "driver"
    if isinstance(d, dict) and "results" in d and "config" in d and "sizes" in d.get("config", {}):
        return "network"
    if isinstance(d, dict) and "dhcp_stats" in d and "dns" in d:
        return "netd"
    if isinstance(d, dict) and "modules" in d and "calls_per_sample" in d:
        return "nss"
    if isinstance(d, dict) and "orders" in d and "passwd_lines" in d:
        return "nss-users"
    if isinstance(d, dict) and d.get("benchmark") == "dns-qps" and "rows" in d:
        return "dns-qps"
    if isinstance(d, dict) and d.get("benchmark") == "cni" and "summary" in d:
        return "cni"
    if isinstance(d, dict) and "sizes" in d and "throughput_bps" in d:
        return "topology"
    return None


def load_results(results_dir):
    out = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        name = os.path.basename(path)[:-5]
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            out[name] = (None, f"unreadable: {e}")
            continue
        kind = kind_of(d)
        # A benchmark with several driver runs in one file (ephemeral.json:
        # busybox, debian, …): one section per run, NAME-PART.
        parts = {k: v for k, v in d.items() if kind_of(v) == "driver"} if kind is None and isinstance(d, dict) else {}
        if parts:
            for part, v in parts.items():
                out[f"{name}-{part}"] = ("driver", dict(v, _file=name))
            continue
        out[name] = (kind, d)
    return out


def section_order(names):
    known = [n for n in ORDER if n in names]
    return known + sorted(n for n in names if n not in ORDER)


# ---------------------------------------------------------------- plots

def upper_whisker(v):
    """Where matplotlib's whisker for whis=(5, 95) ends: the largest sample not
    above the 95th percentile (linear interpolation)."""
    s = sorted(v)
    k = (len(s) - 1) * 0.95
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    p95 = s[lo] + (s[hi] - s[lo]) * (k - lo)
    return max(x for x in s if x <= p95)


def log_axis(axis, set_scale):
    """A log scale labelled 1, 2, 5, 10, 20, ... instead of powers of ten."""
    import matplotlib.ticker as t
    set_scale("log")
    axis.set_major_locator(t.LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(t.FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(t.NullFormatter())


def plot_distributions(series, title, unit, plots_dir, name, note=None):
    """Box plots (whiskers 5–95 %, no outlier points: small SVGs) of samples per tool,
    one row per tool, log axis when the tools span more than 10x."""
    p = pyplot()
    labels = list(series)
    data = [series[k] for k in labels]
    fig, ax = p.subplots(figsize=(7, 0.45 * len(labels) + 1.3))
    ax.boxplot(data, vert=False, whis=(5, 95), showfliers=False, widths=0.6,
               medianprops={"color": "C3", "linewidth": 1.6})
    ax.set_yticks(range(1, len(labels) + 1))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    lo = min(min(v) for v in data if v)
    hi = max(max(v) for v in data if v)
    if lo > 0 and hi / lo > 10:
        log_axis(ax.xaxis, ax.set_xscale)
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel(unit + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_title(textwrap.fill(title, 52), fontsize=10)
    few = max(len(v) for v in data) <= 20
    if few:
        # with few samples, each one as a dot too
        for i, v in enumerate(data):
            ax.plot(v, [i + 1] * len(v), "o", markersize=3, color="C0", alpha=0.6)
        note = (note + "; " if note else "") + "dots: each sample"
    for i, v in enumerate(data):
        if v:
            # the median's figure right of the upper whisker
            top = max(v) if few else upper_whisker(v)
            ax.annotate(ms(median(v)), (top, i + 1), xytext=(5, 0), textcoords="offset points", ha="left",
                        va="center", fontsize=7, color="C3")
    ax.set_xlim(right=ax.get_xlim()[1] * (1.35 if ax.get_xscale() == "log" else 1.08))
    cap = "box: 25–75 %, whiskers: 5–95 %, red line and figure: median"
    if note:
        cap += "; " + note
    fig.text(0.01, 0.005, cap, fontsize=7, color="0.35", ha="left", va="bottom")
    return save(fig, plots_dir, name, bottom=0.2 / fig.get_figheight())


# ---------------------------------------------------------------- sections

def driver_section(name, d, plots_dir, w):
    """A bench/driver.py result: table with ratios, and the distributions."""
    stats, ratios = d["stats"], d.get("ratios_of_medians", {})
    base, ref = d.get("baseline"), d.get("reference")
    cross = d.get("hyperfine_crosscheck", {})
    m = d.get("machine", {})
    w(f"## {name}")
    w("")
    w(f"**{d.get('benchmark', name)}**")
    w("")
    la = m.get("loadavg_start")
    v = d.get("versions", {})
    if "netspawn" in v:
        build = f"netspawn {v['netspawn']}"
    elif "before" in v or "after" in v:  # bench/ab.sh: two builds
        build = "builds: " + ", ".join(f"{k} {v[k]}" for k in ("before", "after") if k in v)
    else:
        build = "netspawn build not recorded"
    w(f"{d.get('date', '?')}; {d.get('rounds', '?')} rounds (+{d.get('warmup_rounds', 0)} warm-up), interleaved; "
      f"{build}"
      + (f"; load average {la[0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end" if la and m.get("loadavg_end") else "")
      + f". Details: [`{d.get('_file', name)}.md`]({d.get('_file', name)}.md).")
    w("")
    head = "| tool | median ms | p90 ms | mean ms | min ms |"
    sep = "|---|---:|---:|---:|---:|"
    cols = []
    for r in (base, ref):
        if r and f"vs_{r}" in ratios:
            cols.append(r)
            head += f" x {r} |"
            sep += "---:|"
    if cross:
        head += " hyperfine median ms |"
        sep += "---:|"
    w(head)
    w(sep)
    for n, s in stats.items():
        row = f"| {n} | {ms(s['median_ms'])} | {ms(s['p90_ms'])} | {ms(s['mean_ms'])} | {ms(s['min_ms'])} |"
        for r in cols:
            row += f" {fmt(ratios[f'vs_{r}'].get(n))} |"
        if cross:
            row += f" {ms(cross[n]['median_ms'])} |" if n in cross else " – |"
        w(row)
    w("")
    if d.get("target"):
        w(f"Target: {d['target']}.")
        w("")
    samples = {n: v for n, v in d.get("samples_ms", {}).items() if v}
    if samples:
        rel = plot_distributions(samples, d.get("benchmark", name), "milliseconds per run", plots_dir, name,
                                 note=f"{len(next(iter(samples.values())))} samples per tool")
        w(f"![{name}: distribution per tool]({rel})")
        w("")


NSV, NSZ = "netspawn -n (veth)", "netspawn --network-zone"
NAV, CNI = "netavark bridge (internal)", "CNI bridge"


def network_section(d, plots_dir, w):
    R = d["results"]
    sizes = sorted({int(n) for t in R.values() for n in t})
    tools = [t for t in R if R[t]]

    def g(t, n, metric, key="median"):
        try:
            return R[t][str(n)][metric][key]
        except KeyError:
            return None

    w("## network")
    w("")
    w("**Per-container link setup and teardown vs N containers: netspawn vs netavark vs CNI vs ip**")
    w("")
    w(f"{d.get('date', '?')}; N = {', '.join(map(str, sizes))}; load average {d['loadavg_start'][0]} at start, "
      f"{d['loadavg_end'][0]} at end. netspawn's setup is its own `network links set up` time (no process start); "
      "the others' is spawn-to-exit of each call. netspawn's teardown is the launcher's exit after its payload's "
      "(the teardown itself runs in the keeper, off the critical path); the others' is spawn-to-exit of the "
      "teardown call. Details: [`network.md`](network.md), [`network-README.md`](../network-README.md).")
    w("")
    w("Median ms per container (setup / teardown):")
    w("")
    w("| tool | " + " | ".join(f"N={n}" for n in sizes) + " |")
    w("|---|" + "---:|" * len(sizes))
    for t in tools:
        w(f"| {t} | " + " | ".join(
            f"{ms(g(t, n, 'setup'))} / {ms(g(t, n, 'teardown'))}" if g(t, n, "setup") is not None else "–"
            for n in sizes) + " |")
    w("")
    if NAV in R:
        w("Setup ratio to netavark (median / median):")
        w("")
        w("| tool | " + " | ".join(f"N={n}" for n in sizes) + " |")
        w("|---|" + "---:|" * len(sizes))
        for t in tools:
            if t == NAV:
                continue
            cells = []
            for n in sizes:
                a, b = g(t, n, "setup"), g(NAV, n, "setup")
                cells.append(f"{a / b:.2f}x" if a is not None and b else "–")
            w(f"| {t} | " + " | ".join(cells) + " |")
        w("")
    p = pyplot()
    fig, axes = p.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, metric, title in ((axes[0], "setup", "setup per container"),
                              (axes[1], "teardown", "teardown per container")):
        for i, t in enumerate(tools):
            xs = [n for n in sizes if g(t, n, metric) is not None]
            if not xs:
                continue
            style = "-" if t.startswith("netspawn") else "--"
            ax.plot(xs, [g(t, n, metric) for n in xs], style, marker="o", markersize=4, label=t,
                    color=f"C{i}", linewidth=2 if t.startswith("netspawn") else 1.2)
        log_axis(ax.xaxis, ax.set_xscale)
        log_axis(ax.yaxis, ax.set_yscale)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 1.6)
        ax.set_xlabel("N containers at once (log scale)")
        ax.set_title(title)
    axes[0].set_ylabel("median ms per container (log scale)")
    fig.suptitle("Network setup and teardown per container vs N containers (netspawn: solid lines)", fontsize=10)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.text(0.01, 0.005, "netspawn teardown: launcher exit after the payload's (the keeper removes the links "
             "afterwards)", fontsize=7, color="0.35")
    rel = save(fig, plots_dir, "network-vs-n")
    w(f"![network: setup and teardown per container vs N]({rel})")
    w("")
    if d.get("leaks"):
        w(f"Leaks recorded: {', '.join(d['leaks'])} (see network.md).")
        w("")
    if d.get("failures"):
        w(f"Failures recorded: {', '.join(d['failures'])} (see network.md).")
        w("")
    if d.get("raw_launch"):
        L = d["launch"]
        w(f"Launch-to-exit of `/bin/true` by network mode ({L[next(iter(L))]['n']} interleaved samples each):")
        w("")
        w("| mode | median ms | p90 ms | x no network |")
        w("|---|---:|---:|---:|")
        base = L.get("no network", {}).get("median")
        for m_, s in L.items():
            w(f"| {m_} | {ms(s['median'])} | {ms(s['p90'])} | {fmt(s['median'] / base) if base else '–'} |")
        w("")
        rel = plot_distributions({f"netspawn, {k}": v for k, v in d["raw_launch"].items()},
                                 "netspawn launch-to-exit of /bin/true by network mode", "milliseconds per launch",
                                 plots_dir, "network-launch")
        w(f"![network: launch by mode]({rel})")
        w("")


LOADS = {"c1q10": "1 client, 10 in flight", "c1q100": "1 client, 100 in flight",
         "c4q10": "4 clients, 10 in flight", "c4q100": "4 clients, 100 in flight"}


def netd_section(d, plots_dir, w):
    w("## netd")
    w("")
    w("**netspawn-netd: DHCP lease time, DNS queries per second, memory; against dnsmasq and aardvark-dns**")
    w("")
    c = d.get("config", {})
    w(f"{d.get('date', '?')}; netspawn {d.get('versions', {}).get('netspawn', '?')}; "
      f"{c.get('runs', '?')} DHCP samples per client and server; {c.get('dns_reps', '?')} dnsperf runs of "
      f"{c.get('dns_secs', '?')} s per load and server. Details: [`netd.md`](netd.md), "
      "[`netd-README.md`](../netd-README.md).")
    w("")
    ds = d["dhcp_stats"]
    w("DHCP, start to bound:")
    w("")
    w("| client / server | n | median ms | p90 ms | min ms |")
    w("|---|---:|---:|---:|---:|")
    for k, s in ds.items():
        w(f"| {k} | {s['n']} | {ms(s['median'])} | {ms(s['p90'])} | {ms(s['min'])} |")
    w("")
    for client in ("udhcpc", "dhclient"):
        a, b = ds.get(f"{client}/netd"), ds.get(f"{client}/dnsmasq")
        if a and b:
            w(f"- {client}: netd / dnsmasq median {a['median'] / b['median']:.2f}x")
    w("")
    samples = d.get("dhcp", {}).get("samples_ms", {})
    if samples:
        rel = plot_distributions(samples, "DHCP lease time (client/server)", "milliseconds, start to bound",
                                 plots_dir, "netd-dhcp",
                                 note="netspawn/netd: netspawn's own client inside the launcher")
        w(f"![netd: DHCP lease time]({rel})")
        w("")
    dp = d["dns"]["dnsperf"]
    loads = [l for l in LOADS if l in dp] + [l for l in dp if l not in LOADS]
    servers = []
    for l in loads:
        for s in dp[l]:
            if s not in servers:
                servers.append(s)
    servers.sort(key=lambda s: (s != "netd", s != "dnsmasq", s))
    w("DNS queries per second for a machine name (dnsperf; median of the runs):")
    w("")
    w("| load | " + " | ".join(servers) + " | " + " | ".join(f"netd / {s}" for s in servers if s != "netd") + " |")
    w("|---|" + "---:|" * (2 * len(servers) - 1))
    for l in loads:
        q = {s: dp[l][s]["qps"] for s in servers if s in dp[l]}
        cells = [f"{q[s]:,.0f}" if s in q else "–" for s in servers]
        rat = [f"{q['netd'] / q[s]:.2f}x" if "netd" in q and s in q and q[s] else "–" for s in servers if s != "netd"]
        w(f"| {LOADS.get(l, l)} | " + " | ".join(cells + rat) + " |")
    w("")
    p = pyplot()
    fig, ax = p.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(servers)
    for i, s in enumerate(servers):
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(loads))]
        ys = [dp[l][s]["qps"] / 1000 if s in dp[l] else 0 for l in loads]
        ax.bar(xs, ys, width * 0.95, label=s, color=f"C{i}")
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.0f}k", (x, 0), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7, color="white", fontweight="bold")
        # every run's figure, as small ticks on the bar
        for j, l in enumerate(loads):
            runs = dp[l].get(s, {}).get("qps_all", [])
            if len(runs) > 1:
                ax.plot([xs[j]] * len(runs), [r / 1000 for r in runs], "_", color="0.2", markersize=6)
    ax.set_xticks(range(len(loads)))
    ax.set_xticklabels([LOADS.get(l, l).replace(", ", "\n") for l in loads])
    ax.set_ylabel("thousand queries per second")
    ax.set_title("DNS queries per second for a machine name, by load (dnsperf)")
    ax.legend(fontsize=8)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
    fig.text(0.01, 0.005, "bar and figure: median of the runs; dashes: each run", fontsize=7, color="0.35")
    rel = save(fig, plots_dir, "netd-dns-qps")
    w(f"![netd: DNS QPS by load]({rel})")
    w("")
    lat = d.get("dns_latency_stats", {})
    if lat:
        w("DNS latency, one query at a time:")
        w("")
        w("| server | n | p50 µs | p99 µs | mean µs |")
        w("|---|---:|---:|---:|---:|")
        for s, v in lat.items():
            w(f"| {s} | {v['n']} | {v['p50']:.0f} | {v['p99']:.0f} | {v['mean']:.0f} |")
        w("")
    mem = d.get("memory", [])
    if mem:
        w("netd's memory:")
        w("")
        w("| state | VmRSS MiB | threads |")
        w("|---|---:|---:|")
        for m_ in mem:
            w(f"| {m_['state']} | {m_['VmRSS'] / 1024:.1f} | {m_.get('Threads', '–')} |")
        w("")


def nss_scenarios(d):
    """{module: {order: {label: scenario}}}"""
    return {m: {o: {s["label"]: s for s in od["scenarios"]} for o, od in md["orders"].items()}
            for m, md in d["modules"].items()}


def nss_section(d, plots_dir, w):
    S = nss_scenarios(d)
    mods = list(S)
    w("## nss")
    w("")
    w("**Per-lookup cost of the NSS module (glibc getaddrinfo) against `files`**")
    w("")
    w(f"{d.get('date', '?')}; {d.get('rounds_per_process')} rounds x {d.get('calls_per_sample')} calls per process, "
      f"{d.get('processes_per_module_and_order')} process(es) per module and order; CPU time per call. Modules: "
      + ", ".join(f"`{m}` = {d['modules'][m].get('revision', '?')}" for m in mods)
      + ". Details: [`nss.md`](nss.md), [`nss-README.md`](../nss-README.md).")
    w("")
    orders = [o for o in ("files-first", "module-first") if o in S[mods[-1]]]
    nsswitch = {o: d["modules"][mods[-1]]["orders"][o]["nsswitch"] for o in orders}
    for o in orders:
        labels = [l for l in S[mods[-1]][o] if not l.startswith("floor/")]
        w(f"`{nsswitch[o]}`:")
        w("")
        w("| lookup | " + " | ".join(f"`{m}` µs (p10–p90) | `{m}` / files" for m in mods) + " |")
        w("|---|" + "---:|---:|" * len(mods))
        for l in labels:
            cells = []
            for m in mods:
                s = S[m][o].get(l)
                cells += [f"{s['median_us']:.2f} ({s['p10_us']:.2f}–{s['p90_us']:.2f})", f"{s['ratio_to_files']:.2f}x"] \
                    if s else ["–", "–"]
            w(f"| {l} | " + " | ".join(cells) + " |")
        w("")
    p = pyplot()
    cur = mods[-1]
    fig, axes = p.subplots(1, len(orders), figsize=(4.2 * len(orders), 3.4), sharex=True, squeeze=False)
    for ax, o in zip(axes[0], orders):
        labels = [l for l in S[cur][o] if not l.startswith("floor/")]
        for j, m in enumerate(mods):
            h = 0.8 / len(mods)
            ys = [i + (j - (len(mods) - 1) / 2) * h for i in range(len(labels))]
            sc = [S[m][o].get(l) for l in labels]
            med = [s["median_us"] if s else 0 for s in sc]
            err = [[s["median_us"] - s["p10_us"] if s else 0 for s in sc],
                   [s["p90_us"] - s["median_us"] if s else 0 for s in sc]]
            ax.barh(ys, med, h * 0.9, xerr=err, label=f"module {m} ({d['modules'][m].get('revision', '?')})",
                    color=f"C{j}",
                    error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        ax.set_title(f"nsswitch.conf {nsswitch[o]}")
        ax.set_xlabel("µs per getaddrinfo call (CPU time)")
    fig.suptitle("NSS module: cost of one getaddrinfo call by lookup", fontsize=10)
    fig.text(0.01, 0.005, "bar: median; line: p10–p90; mymachines/N: a machine name with N machines registered; "
             "unknown/N: a name that is no machine", fontsize=7, color="0.35")
    if len(mods) > 1:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="lower right", ncol=len(mods), bbox_to_anchor=(0.99, 0.04))
    rel = save(fig, plots_dir, "nss-lookup", bottom=0.13 if len(mods) > 1 else 0.06)
    w(f"![nss: per-lookup cost]({rel})")
    w("")


# ---------------------------------------------------------------- README table

def nss_users_rows(d):
    """(order, label, median µs, ratio to files) of bench/nss-users.sh's results."""
    out = []
    for order, o in d.get("orders", {}).items():
        for sc in o.get("scenarios", []):
            out.append((o.get("nsswitch", order), sc["label"], sc["median_us"], sc.get("ratio_to_files")))
    return out


def nss_users_section(d, plots_dir, w):
    w("## nss-users")
    w("")
    w(f"{d.get('date', '?')}; `{d.get('command', 'bench/nss-users.sh')}`; git {d.get('revision', '?')}. "
      "Per-call CPU time of glibc `getpwuid_r` (and `getpwnam_r` for by-name) through the module against a "
      "local user in `files`. Details: [`nss-users.md`](nss-users.md), [`nss-README.md`](../nss-README.md).")
    w("")
    w("| nsswitch | lookup | median µs | / files |")
    w("|---|---|---:|---:|")
    for ns, label, med, ratio in nss_users_rows(d):
        w(f"| `{ns}` | {label} | {fmt(med)} | {fmt(ratio) + 'x' if ratio is not None else ''} |")
    w("")


def dns_qps_section(d, w):
    """bench/dns-qps.sh: median QPS per tool, type and load, with the ratios."""
    med = {}
    for r in d.get("rows", []):
        q = r["r"]["qps"] if r.get("tool") == "dnsload" else r.get("qps")
        med.setdefault((r["tool"], r["type"], r["clients"], r["inflight"], r["server"]), []).append(q or 0)
    w("## dns-qps")
    w("")
    w(f"{d.get('date', '?')}; `bench/dns-qps.sh`; {d.get('reps', '?')} x {d.get('secs', '?')} s per cell; "
      f"load average {d.get('load_average_at_start', '?')} at start, {d.get('load_average_at_end', '?')} at end. "
      "A and AAAA for a machine name against dnsmasq and aardvark-dns, measured with dnsload (a fixed window "
      "per client), dnsperf at 100 in flight as a check. Details: [`dns-qps.md`](dns-qps.md).")
    w("")
    w("| tool | type | clients | in flight | netd | dnsmasq | aardvark-dns | / dnsmasq | / aardvark-dns |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (tool, t, c, q, _) in sorted(k for k in med if k[4] == "netd"):
        m = {s: statistics.median(med.get((tool, t, c, q, s), [0])) for s in ("netd", "dnsmasq", "aardvark")}
        ratio = lambda a, b: f"{a / b:.2f}x" if b else ""
        w(f"| {tool} | {t} | {c} | {q} | {m['netd']:.0f} | {m['dnsmasq']:.0f} | {m['aardvark']:.0f} | "
          f"{ratio(m['netd'], m['dnsmasq'])} | {ratio(m['netd'], m['aardvark'])} |")
    w("")


def cni_section(d, plots_dir, w):
    """bench/cni.sh: ADD and DEL per attachment against the reference chain, per N."""
    summ = d.get("summary", {})
    pairs = [("netspawn-cni", "bridge+host-local"), ("netspawn-cni +ports", "bridge+host-local+portmap")]
    w("## cni")
    w("")
    w(f"{d.get('date', '?')}; `bench/cni.sh`; {d.get('rounds', '?')} rounds; load average "
      f"{', '.join(map(str, d.get('loadavg', []))) or '?'} at start. ADD and DEL of one attachment (median ms), "
      "netspawn-cni against the reference plugins invoked the same way, with N attachments on a network that "
      "exists; `new`: the first attachment on a network (each tool makes its bridge). "
      "Details: [`cni.md`](cni.md).")
    w("")
    w("| ours | reference | N | ADD ms | ref ADD ms | ADD ratio | DEL ms | ref DEL ms | DEL ratio |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for ours, ref in pairs:
        for n in sorted(summ.get(ours, {}), key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0)):
            a, b = summ[ours][n], summ.get(ref, {}).get(n)
            if not b:
                continue
            w(f"| {ours} | {ref} | {n} | {fmt(a['add_median_ms'])} | {fmt(b['add_median_ms'])} | "
              f"{a['add_median_ms'] / b['add_median_ms']:.2f}x | {fmt(a['del_median_ms'])} | "
              f"{fmt(b['del_median_ms'])} | {a['del_median_ms'] / b['del_median_ms']:.2f}x |")
    pod = d.get("podman_run_true_ms") or {}
    if pod:
        w("")
        w("`podman run --rm … true` (median ms): "
          + ", ".join(f"{k} {fmt(v.get('median'))}" for k, v in pod.items()))
    w("")
    plt = pyplot()
    if plt and summ:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, op in zip(axes, ("add", "del")):
            for tool, series in summ.items():
                ns = sorted((n for n in series if n.isdigit()), key=int)
                ax.plot([int(n) for n in ns], [series[n][f"{op}_median_ms"] for n in ns], marker="o", label=tool)
            ax.set_xscale("log")
            ax.set_xlabel("attachments on the zone (N)")
            ax.set_ylabel("median ms per call")
            ax.set_title(op.upper())
        axes[0].legend(fontsize=7)
        fig.text(0.01, 0.01, "bench/cni.sh: cost of one ADD/DEL against N (flat is the target)", fontsize=7)
        w(f"![cni ADD/DEL vs N]({save(fig, plots_dir, 'cni-vs-n', bottom=0.08)})")
        w("")


def topology_section(d, plots_dir, w):
    """bench/topology.sh: up/down of N machines against the shell loop, podman and docker compose; iperf3 vs raw."""
    sizes = d.get("sizes", {})
    v = d.get("versions", {})
    w("## topology")
    w("")
    load = v.get("load", "?")
    if v.get("loadavg_start"):
        load = f"{v['loadavg_start']} (1, 5, 15 min) at the start, {v.get('loadavg_end', '?')} at the end"
    w(f"`bench/topology.sh`; {v.get('netspawn', '?')}; load average {load}. {d.get('what', '')}. "
      f"Targets: {d.get('targets', '?')}. Details: [`topology.md`](topology.md).")
    w("")
    w("| N | up ms | loop up | podman up | compose up | up / loop | podman / up | compose / up "
      "| down ms | loop down | podman down | compose down | podman / down | compose / down |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = lambda c, k: (c.get(k) or {}).get("median_ms")
    for n in sorted(sizes, key=int):
        c = sizes[n]
        up, lu, pu, cu = med(c, "up"), med(c, "loop_up"), med(c, "podman_up"), med(c, "compose_up")
        dn, ld, pd, cd = med(c, "down"), med(c, "loop_down"), med(c, "podman_down"), med(c, "compose_down")
        r = lambda a, b: f"{a / b:.2f}x" if a and b else ""
        x = lambda a: a if a is not None else ""
        w(f"| {n} | {x(up)} | {x(lu)} | {x(pu)} | {x(cu)} | {r(up, lu)} | {r(pu, up)} | {r(cu, up)} "
          f"| {x(dn)} | {x(ld)} | {x(pd)} | {x(cd)} | {r(pd, dn)} | {r(cd, dn)} |")
    notes = [f"{k}: {d[k]}" for k in ("podman", "compose") if d.get(k)]
    if notes:
        w("")
        w("; ".join(notes) + ".")
    tp = d.get("throughput_bps", {})
    if tp:
        g = lambda k: (tp.get(k) or {}).get("median")
        w("")
        parts = []
        for ours, raw in (("lab_link", "raw_veth"), ("lab_zone", "raw_bridge")):
            if g(ours) and g(raw):
                parts.append(f"{ours} {g(ours) / 1e9:.2f} Gbit/s vs {raw} {g(raw) / 1e9:.2f} Gbit/s "
                             f"({g(ours) / g(raw):.2f}x)")
        w("iperf3: " + "; ".join(parts))
    w("")
    plt = pyplot()
    if plt and sizes:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        ns = sorted(sizes, key=int)
        for k, label in (("up", "netspawnctl up"), ("loop_up", "shell loop up"), ("podman_up", "podman run -d"),
                         ("compose_up", "docker-compose up -d"), ("down", "netspawnctl down"),
                         ("podman_down", "podman rm -f"), ("compose_down", "docker-compose down")):
            pts = [(int(n), med(sizes[n], k) / int(n)) for n in ns if med(sizes[n], k)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("machines (N)")
        ax.set_ylabel("ms per machine")
        ax.legend(fontsize=7)
        fig.text(0.01, 0.01, "bench/topology.sh: cost per machine against N (flat is the target)", fontsize=7)
        w(f"![topology cost per machine]({save(fig, plots_dir, 'topology-per-machine', bottom=0.08)})")
        w("")


def readme_rows(R):
    """(what, netspawn, peers) rows for the README table, from the results."""
    rows = []
    if R.get("launch", (None,))[0] == "driver":
        d = R["launch"][1]
        st, hf = d["stats"], d.get("hyperfine_crosscheck", {})
        ns = st["netspawn"]["median_ms"]
        peers = []
        if "unshare+chroot" in st:
            peers.append(f"unshare+chroot {short(st['unshare+chroot']['median_ms'])} ms "
                         f"({ns / st['unshare+chroot']['median_ms']:.2f}x)")
        if "crun" in st:
            peers.append(f"crun {short(st['crun']['median_ms'])} ms")
        if "systemd-nspawn" in st:
            sn = st["systemd-nspawn"]["median_ms"]
            extra = ""
            if "netspawn" in hf and "systemd-nspawn" in hf:
                extra = f"; {hf['systemd-nspawn']['median_ms'] / hf['netspawn']['median_ms']:.0f}x with hyperfine"
            peers.append(f"systemd-nspawn {short(sn)} ms ({sn / ns:.1f}x slower{extra})")
        rows.append(("launch-to-exit of `/bin/true`", f"{short(ns)} ms median", ", ".join(peers)))
    if R.get("boot", (None,))[0] == "driver":
        st = R["boot"][1]["stats"]
        if "netspawn" in st and "systemd-nspawn" in st:
            rows.append(("Debian boot to poweroff", f"{short(st['netspawn']['median_ms'])} ms",
                         f"systemd-nspawn {short(st['systemd-nspawn']['median_ms'])} ms"))
    if R.get("network", (None,))[0] == "network":
        res = R["network"][1]["results"]
        sizes = sorted({int(n) for t in res.values() for n in t})

        def meds(t, metric, key="median"):
            return [res[t][str(n)][metric][key] for n in sizes if str(n) in res.get(t, {})
                    and metric in res[t][str(n)]]

        span = f"N={sizes[0]}…{sizes[-1]}" if len(sizes) > 1 else f"N={sizes[0]}"
        ns_cells = [f"{lbl} {rng(meds(t, 'setup'))}" for t, lbl in ((NSV, "veth"), (NSZ, "zone")) if meds(t, "setup")]
        peer_cells = [f"{lbl} {rng(meds(t, 'setup'))}" for t, lbl in ((NAV, "netavark"), (CNI, "CNI bridge"))
                      if meds(t, "setup")]
        rows.append((f"network setup per container ({span})", ", ".join(ns_cells), ", ".join(peer_cells)))
        td = meds(NSV, "teardown") + meds(NSZ, "teardown")
        td90 = meds(NSV, "teardown", "p90") + meds(NSZ, "teardown", "p90")
        peer_td = meds(NAV, "teardown") + meds(CNI, "teardown")
        if td:
            rows.append(("launcher exit after the payload's (teardown in the keeper)",
                         f"{rng(td)} median (p90 {rng(td90)})",
                         f"netavark/CNI teardown {rng(peer_td)}" if peer_td else ""))
    if R.get("netd", (None,))[0] == "netd":
        d = R["netd"][1]
        ds = d["dhcp_stats"]

        def dm(k):
            return short(ds[k]["median"]) if k in ds else "–"

        rows.append(("DHCP lease, udhcpc / dhclient",
                     f"{dm('udhcpc/netd')} / {dm('dhclient/netd')} ms"
                     + (f" (our own client: {dm('netspawn/netd')} ms)" if "netspawn/netd" in ds else ""),
                     f"dnsmasq {dm('udhcpc/dnsmasq')} / {dm('dhclient/dnsmasq')} ms (both set by the clients' timers)"))
        dp = d["dns"]["dnsperf"]
        loads = [l for l in LOADS if l in dp]

        def qps(server):
            return " / ".join(f"{dp[l][server]['qps'] / 1000:.0f}k" if server in dp[l] else "–" for l in loads)

        others = sorted({s for l in loads for s in dp[l] if s != "netd"}, key=lambda s: (s != "dnsmasq", s))
        rows.append(("DNS QPS for a machine name (1 or 4 clients, 10 or 100 in flight)", qps("netd"),
                     "; ".join(f"{s} {qps(s)}" for s in others)
                     + " (10 in flight measures dnsperf's own stall, see bench/netd-README.md)"))
        lat = d.get("dns_latency_stats", {})
        if "netd" in lat:
            rows.append(("DNS latency, one query at a time (p50 / p99)",
                         f"{lat['netd']['p50']:.0f} / {lat['netd']['p99']:.0f} µs",
                         ", ".join(f"{s} {v['p50']:.0f} / {v['p99']:.0f} µs" for s, v in lat.items() if s != "netd")))
        mem = d.get("memory", [])
        m100 = [m for m in mem if m.get("machines") == 100 and m.get("links") == 1]
        mmax = max((m for m in mem if m.get("machines") == 100 and "configure_s" in m),
                   key=lambda m: m["links"], default=None)
        if m100:
            rows.append((f"netd memory with 100 machines" + (f" (and {mmax['links']} links)" if mmax else ""),
                         f"{m100[0]['VmRSS'] / 1024:.1f} MiB" + (f" ({mmax['VmRSS'] / 1024:.1f} MiB)" if mmax else ""),
                         ""))
    if R.get("nss", (None,))[0] == "nss":
        S = nss_scenarios(R["nss"][1])
        cur = S[list(S)[-1]]
        ff, mf = cur.get("files-first", {}), cur.get("module-first", {})
        key = next((k for k in ("mymachines/100", "mymachines/1000", "mymachines/1") if k in ff), None)
        if key and "files" in ff:
            n = key.split("/")[1]
            cell = f"{ff[key]['median_us']:.1f} µs with `files mymachines` ({ff[key]['ratio_to_files']:.2f}x `files`)"
            if key in mf:
                cell += f", {mf[key]['median_us']:.1f} µs with `mymachines files`"
            rows.append((f"NSS lookup of a machine ({n} registered)", cell, f"`files` {ff['files']['median_us']:.1f} µs"))
    if R.get("nss-users", (None,))[0] == "nss-users":
        rs = nss_users_rows(R["nss-users"][1])
        ff = {label: (med, ratio) for ns, label, med, ratio in rs if "files mymachines" in ns}
        mf = {label: (med, ratio) for ns, label, med, ratio in rs if "mymachines files" in ns}
        mine = [k for k in ff if k.startswith("mymachines/")]
        if mine and "files" in ff:
            worst = max(mine, key=lambda k: ff[k][0])
            sizes = "–".join(sorted({k.split("/")[1] for k in mine}, key=int)[::max(1, len(mine) - 1)])
            cell = f"{ff[worst][0]:.1f} µs with `files mymachines` ({ff[worst][1]:.2f}x `files`)"
            if worst in mf:
                cell += f", {mf[worst][0]:.1f} µs with `mymachines files`"
            rows.append((f"NSS `getpwuid` of a machine's UID ({sizes} registered)", cell,
                         f"`files`, a local user, {ff['files'][0]:.1f} µs"))
    # Any other bench/driver.py result (netlaunch, userns, images, ...): one
    # row, netspawn's commands against the others.
    for name in section_order(R):
        kind, d = R[name]
        # ab*: bench/ab.sh's comparisons of two builds (--name), not the peers.
        if kind != "driver" or name in ("launch", "boot") or name.startswith("ab"):
            continue
        st = d["stats"]
        base = d.get("baseline")
        ours = [n for n in st if n.startswith("netspawn")]
        theirs = [n for n in st if not n.startswith("netspawn")]

        def cell(n):
            c = f"{n} {short(st[n]['median_ms'])} ms"
            if base and base in st and n != base and st[base]["median_ms"]:
                c += f" ({st[n]['median_ms'] / st[base]['median_ms']:.2f}x)"
            return c

        what = d.get("benchmark", name) + (f" (ratios to {base})" if base else "")
        rows.append((what, ", ".join(cell(n) for n in ours), ", ".join(cell(n) for n in theirs)))
    if R.get("dns-qps", (None,))[0] == "dns-qps":
        med = {}
        for r in R["dns-qps"][1].get("rows", []):
            if r.get("tool") != "dnsload":
                continue
            med.setdefault((r["server"], r["type"], r["clients"], r["inflight"]), []).append(r["r"]["qps"] or 0)
        m = {k: statistics.median(v) for k, v in med.items()}
        cells = sorted({k[1:] for k in m if k[0] == "netd"})
        if cells:
            lo = min(m[("netd",) + c] for c in cells)
            hi = max(m[("netd",) + c] for c in cells)
            ratio = lambda peer: [m[("netd",) + c] / m[(peer,) + c] for c in cells if m.get((peer,) + c)]
            dm, aa = ratio("dnsmasq"), ratio("aardvark")
            rows.append(("DNS queries per second, A and AAAA, 1–4 clients × 10–100 in flight (dnsload)",
                         f"netd {lo / 1000:.0f}k–{hi / 1000:.0f}k QPS",
                         (f"netd {min(dm):.2f}–{max(dm):.2f}x dnsmasq" if dm else "")
                         + (f", {min(aa):.2f}–{max(aa):.2f}x aardvark-dns" if aa else "")))
    if R.get("cni", (None,))[0] == "cni":
        summ = R["cni"][1].get("summary", {})
        ours, ref = summ.get("netspawn-cni", {}), summ.get("bridge+host-local", {})
        ns = [n for n in sorted(ours, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0)) if n in ref]
        if ns:
            cell = lambda op: ", ".join(
                f"{'N=' + n if n.isdigit() else n} {ours[n][op + '_median_ms']:.1f} ms "
                f"({ours[n][op + '_median_ms'] / ref[n][op + '_median_ms']:.2f}x)" for n in ns)
            rows.append(("CNI ADD per container, netspawn-cni (ratio to bridge + host-local)", cell("add"),
                         ", ".join(f"N={n} {ref[n]['add_median_ms']:.1f} ms" if n.isdigit() else
                                   f"{n} {ref[n]['add_median_ms']:.1f} ms" for n in ns)))
            rows.append(("CNI DEL per container, netspawn-cni (ratio to bridge + host-local)", cell("del"),
                         ", ".join(f"N={n} {ref[n]['del_median_ms']:.1f} ms" if n.isdigit() else
                                   f"{n} {ref[n]['del_median_ms']:.1f} ms" for n in ns)))
    if R.get("topology", (None,))[0] == "topology":
        sizes = R["topology"][1].get("sizes", {})
        g = lambda n, k: (sizes[n].get(k) or {}).get("median_ms")
        ns = sorted(sizes, key=int)
        fmt_s = lambda v: f"{v / 1000:.2f} s" if v else "–"
        rows.append(("`netspawnctl up` / `down` of a lab of N machines (3 zones, a router, p2p links)",
                     ", ".join(f"N={n} {fmt_s(g(n, 'up'))} / {fmt_s(g(n, 'down'))}" for n in ns),
                     ", ".join(f"N={n}: podman {fmt_s(g(n, 'podman_up'))} / {fmt_s(g(n, 'podman_down'))}"
                               + (f", compose {fmt_s(g(n, 'compose_up'))} / {fmt_s(g(n, 'compose_down'))}"
                                  if g(n, 'compose_up') else "") for n in ns)))
    return rows


def readme_table(R):
    lines = ["| what | netspawn | peers |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in readme_rows(R)]
    return "\n".join(lines)


def update_readme(path, table):
    with open(path) as f:
        text = f.read()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        fail(f"{path} has no {BEGIN} … {END} markers")
    new = text[:i + len(BEGIN)] + "\n" + table + "\n" + text[j:]
    if new != text:
        with open(path, "w") as f:
            f.write(new)
        return True
    return False


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=os.path.join(BENCH_DIR, "results"))
    ap.add_argument("--readme", default=os.path.join(REPO_DIR, "README.md"))
    ap.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    ap.add_argument("--run-info", help="JSON from bench/run: what ran, was skipped, failed; quick or not")
    a = ap.parse_args()
    run = json.loads(a.run_info) if a.run_info else None
    R = load_results(a.results)
    plots_dir = os.path.join(a.results, "plots")
    pyplot()  # matplotlib is there (else: fail before any old plot goes)
    # Plots are all regenerated: old ones of results no longer there go.
    for old in glob.glob(os.path.join(plots_dir, "*.svg")):
        os.remove(old)
    body = []
    w = body.append
    done, unknown = [], []
    for name in section_order(R):
        kind, d = R[name]
        if kind == "driver":
            driver_section(name, d, plots_dir, w)
        elif kind == "network":
            network_section(d, plots_dir, w)
        elif kind == "netd":
            netd_section(d, plots_dir, w)
        elif kind == "nss":
            nss_section(d, plots_dir, w)
        elif kind == "nss-users":
            nss_users_section(d, plots_dir, w)
        elif kind == "dns-qps":
            dns_qps_section(d, w)
        elif kind == "cni":
            cni_section(d, plots_dir, w)
        elif kind == "topology":
            topology_section(d, plots_dir, w)
        else:
            unknown.append(name)
            continue
        done.append(name)
    if not done:
        fail(f"no benchmark results in {a.results}")

    head = ["# netspawn benchmark report", ""]
    h = head.append
    h(f"- generated: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by `bench/report.py` "
      "from `bench/results/*.json`")
    measured = {}
    for name in done:
        desc = measured_on(R[name][0], R[name][1]) or "not recorded"
        measured.setdefault(desc, []).append(name)
    for desc, names in measured.items():
        h(f"- measured on: {desc} ({', '.join(names)})")
    h(f"- report generated on: {this_machine()}")
    h(f"- git revision: {git_revision()} (each section names the build it measured)")
    if run:
        mode = "**quick** (`bench/run --quick`: few rounds and sizes; rough figures)" if run.get("quick") \
            else "full (`bench/run`)"
        h(f"- run: {mode}, {run.get('total_s', '?')} s; ran: "
          + (", ".join(f"{n} ({run.get('seconds', {}).get(n, '?')} s)" for n in run.get("ran", [])) or "none"))
        for s in run.get("skipped", []):
            h(f"- skipped: {s}")
        if run.get("failed"):
            h(f"- **FAILED: {run['failed']}**")
        older = [n for n in done if n.split("-")[0] not in run.get("ran", [])]
        if older:
            h(f"- from earlier runs (not run this time): {', '.join(older)}")
    if unknown:
        h(f"- not understood (no section): {', '.join(f'{n}.json' for n in unknown)}")
    h("")
    h("Figures depend on the machine's load: compare tools within one benchmark (they ran interleaved, side by "
      "side), not across benchmarks or runs. Each section links the benchmark's own report with its method.")
    h("")
    h("## Summary (also in the README)")
    h("")
    table = readme_table(R)
    h(table)
    h("")
    h("Sections: " + ", ".join(f"[{n}](#{n})" for n in done))
    h("")
    os.makedirs(a.results, exist_ok=True)
    out = os.path.join(a.results, "REPORT.md")
    with open(out, "w") as f:
        f.write("\n".join(head + body).rstrip("\n") + "\n")
    print(f"[bench] written: {out} and {len(glob.glob(os.path.join(plots_dir, '*.svg')))} plots in {plots_dir}",
          file=sys.stderr)
    if not a.no_readme:
        if run and run.get("quick"):
            print("[bench] quick run: README.md's table left as it is (regenerate from a full run)", file=sys.stderr)
        elif update_readme(a.readme, table):
            print(f"[bench] README table regenerated: {a.readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
