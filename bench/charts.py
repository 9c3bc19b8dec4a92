#!/usr/bin/env python3
"""PNG charts of the benchmark results, written beside them in bench/results/.

    python bench/charts.py                      # every chart its data is there for
    python bench/charts.py --summary bench/results/headline-3.11.json --prefix headline-3.11

Reads the JSON summaries that bench/run.py writes beside its markdown report
(``--output X.md`` -> ``X.json``) and bench/results/fairness.json (bench/fairness.py):

* ``<prefix>-scenarios.png``: one panel per scenario (msgs/s; churn: connections/s),
  a bar per server, the median of the rounds with its spread as an error bar;
* ``<prefix>-storm.png``: the time from the first client's echo to the last one's
  in each storm, with the targets of issue 22 (200 ms for 1,000, 2 s for 10,000);
* ``<prefix>-scaling.png``: msgs/s against the number of connections (1 KiB);
* ``fairness.png``: the well-behaved client's p99 under each hostile client, per
  server, before and after issue 16 (log scale; the 10 ms target).

Needs matplotlib (the ``bench`` extra: pip install -e '.[bench]'). A chart whose data
is missing (no storm in the summary, say) is skipped with a message.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# One colour per server across every chart: netmux's rows in blues, uvloop in
# greens, asyncio in oranges, the C ceiling in grey.
COLOURS = {
    "c-epoll": "#7f7f7f", "netmux": "#1f4e99", "netmux-stream": "#3b7dd8",
    "netmux-line": "#6fa8ef", "netmux-proxy": "#0b2a5c", "netmux-tls": "#5a3d99",
    "uvloop-protocol": "#2a9d48", "uvloop-streams": "#7bc87f", "uvloop-line": "#b6e2a1",
    "uvloop-tls": "#8fbf3f", "asyncio-protocol": "#e6821e", "asyncio-streams": "#f4b168",
    "asyncio-line": "#fbd5a5", "asyncio-tls": "#c0561b", "threading": "#b04a5a",
    "blocking": "#d38c9a", "selectors": "#a5a5a5",
}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")       # files only: no display on a benchmark machine
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})
    return plt


def fmt_rate(x):
    return f"{x / 1000:.0f}k" if x >= 100_000 else (f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}")


def load_summary(path):
    with open(path) as f:
        data = json.load(f)
    cells = {(c["server"], c["scenario"]): c for c in data["cells"]}
    return data, cells


def subtitle(data):
    m = data["meta"]
    return (f"Python {m.get('python', '?')}{m.get('extra', '')}; netmux at {m.get('netmux', '?')};\n"
            f"{m['rounds']} round(s), median (error bar: the spread, min..max); {m['date']}")


def scenarios_chart(plt, data, cells, out):
    scen = [sc for sc, (_, kind) in data["scenarios"].items() if kind != "storm"]
    servers = list(data["servers"])
    if not scen:
        return False
    cols = min(3, len(scen))
    rows = (len(scen) + cols - 1) // cols
    height = 0.32 * len(servers) + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(max(8.0, 5.2 * cols), height * rows + 0.8), squeeze=False)
    for ax, sc in zip(axes.flat, scen):
        names = [sv for sv in servers if (sv, sc) in cells]
        vals = [cells[(sv, sc)]["rate"] for sv in names]
        err = [cells[(sv, sc)]["rate"] * cells[(sv, sc)]["spread"] / 200 for sv in names]
        y = range(len(names))
        ax.barh(list(y), vals, xerr=err, color=[COLOURS.get(sv, "#999") for sv in names],
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333"})
        ax.set_yticks(list(y))
        ax.set_yticklabels([data["servers"][sv] for sv in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(data["scenarios"][sc][0])
        unit = "connections/s" if data["scenarios"][sc][1] == "churn" else "messages/s"
        ax.set_xlabel(unit, fontsize=8)
        top = max((v + e for v, e in zip(vals, err)), default=1)
        ax.set_xlim(0, top * 1.25)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_rate(v)))
        for yy, v, e in zip(y, vals, err):
            ax.text(v + e + top * 0.03, yy, fmt_rate(v), va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(scen):]:
        ax.set_visible(False)
    fig.suptitle("Closed-loop echo, higher is better\n" + subtitle(data), fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def storm_chart(plt, data, cells, out):
    storms = [sc for sc, (_, kind) in data["scenarios"].items() if kind == "storm"]
    servers = [sv for sv in data["servers"] if any((sv, sc) in cells for sc in storms)]
    if not storms or not servers:
        return False
    targets = {"storm1k": 200, "storm10k": 2000}
    fig, axes = plt.subplots(1, len(storms), figsize=(6 * len(storms), 0.4 * len(servers) + 1.8),
                             squeeze=False)
    for ax, sc in zip(axes.flat, storms):
        names = [sv for sv in servers if (sv, sc) in cells]
        vals = [max(cells[(sv, sc)]["rate"], 0.1) for sv in names]
        y = list(range(len(names)))
        ax.barh(y, vals, color=[COLOURS.get(sv, "#999") for sv in names])
        ax.set_yticks(y)
        ax.set_yticklabels([data["servers"][sv] for sv in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms from the first client's echo to the last one's (log)", fontsize=8)
        ax.set_title(data["scenarios"][sc][0] + ", lower is better")
        if sc in targets:
            ax.axvline(targets[sc], color="#c00", linestyle="--", linewidth=1)
            ax.text(targets[sc], len(names) - 0.4, f" target {targets[sc]} ms", color="#c00",
                    fontsize=8, va="bottom")
        for yy, v in zip(y, vals):
            ax.text(v * 1.1, yy, f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms", va="center", fontsize=8)
        ax.set_xlim(min(vals) / 2, max(max(vals), targets.get(sc, 1)) * 8)
        ax.grid(axis="x", alpha=0.3, which="both")
    fig.suptitle(subtitle(data), fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def scaling_chart(plt, data, cells, out):
    scen = [sc for sc in ("1x1k", "10x1k", "100x1k", "1000x1k", "10000x1k") if sc in data["scenarios"]]
    if len(scen) < 3 or not {"1x1k", "10000x1k"} & set(scen):
        return False      # the headline's 1 KiB columns alone are not the curve
    conns = {"1x1k": 1, "10x1k": 10, "100x1k": 100, "1000x1k": 1000, "10000x1k": 10000}
    fig, ax = plt.subplots(figsize=(8, 5))
    for sv, label in data["servers"].items():
        pts = [(conns[sc], cells[(sv, sc)]) for sc in scen if (sv, sc) in cells]
        if len(pts) < 2:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1]["rate"] for p in pts]
        lo = [y * (1 - p[1]["spread"] / 200) for y, p in zip(ys, pts)]
        hi = [y * (1 + p[1]["spread"] / 200) for y, p in zip(ys, pts)]
        style = "-" if sv.startswith("netmux") else "--"
        ax.plot(xs, ys, style, marker="o", label=label, color=COLOURS.get(sv, "#999"), linewidth=2)
        ax.fill_between(xs, lo, hi, color=COLOURS.get(sv, "#999"), alpha=0.12)
    ax.set_xscale("log")
    ax.set_xticks([1, 10, 100, 1000, 10000])
    ax.set_xticklabels(["1", "10", "100", "1,000", "10,000"])
    ax.set_xlabel("connections, each a closed loop of 1 KiB messages")
    ax.set_ylabel("messages/s")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_rate(v)))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Scaling: 1 to 10,000 connections, higher is better\n" + subtitle(data),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def fairness_chart(plt, path, out):
    with open(path) as f:
        data = json.load(f)
    series = []         # (label, {scenario: p99 ms})
    for label in data:
        per = {}
        for row in data[label]["rows"]:
            if not row["measured"]:
                continue
            name = row["server"] if row["server"] != "netmux" else f"netmux ({label})"
            if row["server"] != "netmux" and label != "after" and "after" in data:
                continue     # the peers: their latest rows only
            per.setdefault(name, {})[row["scenario"]] = row["measured"][0]["p99"] * 1000
        series.extend(per.items())
    scen = []
    for _, d in series:
        scen.extend(s for s in d if s not in scen)
    order = sorted(series, key=lambda x: (not x[0].startswith("netmux"), x[0]))
    colours = {"netmux (before)": "#9db8e6", "netmux (after)": "#1f4e99", "redis": "#c0392b",
               "nginx": "#2a9d48", "uvicorn": "#e6821e"}
    # bars packed per scenario (a server without that scenario leaves no gap)
    bars, ticks, y = [], [], 0.0
    for sc in scen:
        first = y
        for name, d in order:
            if sc in d:
                bars.append((y, d[sc], name))
                y += 1
        ticks.append(((first + y - 1) / 2, sc))
        y += 0.8
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(bars) + 0.4 * len(scen) * 0.8 + 1.4))
    for name, _ in order:
        mine = [(yy, v) for yy, v, n in bars if n == name]
        ax.barh([yy for yy, _ in mine], [v for _, v in mine], height=0.85, label=name,
                color=colours.get(name, "#999"))
    ax.set_yticks([t for t, _ in ticks])
    ax.set_yticklabels([sc for _, sc in ticks])
    ax.set_ylim(y - 0.3, -0.9)
    ax.set_xscale("log")
    ax.axvline(10, color="#c00", linestyle="--", linewidth=1)
    ax.text(10, -0.5, " 10 ms target", color="#c00", fontsize=8)
    ax.set_xlabel("well-behaved client's p99, ms (log scale; 5,000-10,000 = no answer within the cap)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Fairness: a well-behaved client beside a hostile one, lower is better\n"
                 "bench/fairness.py, results/fairness.json", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--summary", action="append", default=[],
                    help="a bench/run.py JSON summary (repeatable; default bench/results/latest.json)")
    ap.add_argument("--prefix", action="append", default=[],
                    help="file name prefix for each --summary's charts (default: its name)")
    ap.add_argument("--fairness", default=os.path.join(RESULTS, "fairness.json"))
    args = ap.parse_args()
    plt = pyplot()
    summaries = args.summary or [os.path.join(RESULTS, "latest.json")]
    written = []
    for i, path in enumerate(summaries):
        if not os.path.exists(path):
            print(f"skipped: no {path}", file=sys.stderr)
            continue
        prefix = args.prefix[i] if i < len(args.prefix) else os.path.splitext(os.path.basename(path))[0]
        data, cells = load_summary(path)
        for kind, draw in (("scenarios", scenarios_chart), ("storm", storm_chart),
                           ("scaling", scaling_chart)):
            out = os.path.join(os.path.dirname(os.path.abspath(path)), f"{prefix}-{kind}.png")
            if draw(plt, data, cells, out):
                written.append(out)
    if os.path.exists(args.fairness):
        out = os.path.join(os.path.dirname(os.path.abspath(args.fairness)), "fairness.png")
        if fairness_chart(plt, args.fairness, out):
            written.append(out)
    for w in written:
        print(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
