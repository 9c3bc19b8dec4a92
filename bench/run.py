#!/usr/bin/env python3
"""Closed-loop echo benchmark: netmux against its peers.

    python bench/run.py                  # every server × every scenario, 3 rounds, 1 s + 5 s
    python bench/run.py --quick          # 0.5 s warm-up + 1.5 s measured, for fast iteration
    python bench/run.py --servers netmux,asyncio-protocol --scenarios 100x1k,1000x1k
    python bench/run.py --list           # the known servers and scenarios

For each round, for each scenario, every server runs once (the order rotates
from round to round): a fresh server process pinned to core 0, the C epoll load
generator (bench/echo_client.c, compiled here into bench/build/) pinned to core 1,
warm-up, then the measured window. The report gives the median over the rounds
of messages/s, the spread (max - min as a % of the median), ratios to asyncio
Protocol, and round-trip latency; it is printed and written to
bench/results/latest.md (raw per-run JSON lines go to bench/results/<stamp>.raw).
Only loopback (127.0.0.1) is used; every run is bounded in time.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
SERVERS_DIR = os.path.join(HERE, "servers")
RESULTS = os.path.join(HERE, "results")

SERVER_CORE = 0
CLIENT_CORE = 1

# name -> (conns, message size, idle connections, label, kind). Kinds (echo_client.c -m):
# "echo" the closed loop (msgs/s); "churn" a connection per request (connections/s, 64 B,
# conns = connections at a time); "storm" conns clients connecting at once (the time from
# the first one's echo to the last one's, ms: lower is better).
SCENARIOS = {
    "1x64": (1, 64, 0, "1 conn × 64 B", "echo"),
    "1x1k": (1, 1024, 0, "1 × 1 KiB", "echo"),
    "10x1k": (10, 1024, 0, "10 × 1 KiB", "echo"),
    "100x1k": (100, 1024, 0, "100 × 1 KiB", "echo"),
    "1000x1k": (1000, 1024, 0, "1000 × 1 KiB", "echo"),
    "10000x1k": (10000, 1024, 0, "10,000 × 1 KiB", "echo"),
    "10x64k": (10, 65536, 0, "10 × 64 KiB", "echo"),
    "idle10k": (100, 1024, 10000, "10k idle + 100 × 1 KiB", "echo"),
    "churn": (10, 64, 0, "churn: conn/s, 10 at a time × 64 B", "churn"),
    "storm1k": (1000, 64, 0, "storm: 1,000 at once", "storm"),
    "storm10k": (10000, 64, 0, "storm: 10,000 at once", "storm"),
}
# --scenarios also takes these names for groups
GROUPS = {
    "headline": ["1x64", "10x1k", "100x1k", "1000x1k", "10x64k"],   # the table of issue 22
    "scaling": ["1x1k", "10x1k", "100x1k", "1000x1k", "10000x1k"],
    "storm": ["storm1k", "storm10k"],
    "classic": ["1x64", "10x1k", "100x1k", "1000x1k", "10x64k", "idle10k"],
}

# name -> (label, argv after the port is appended, module that must import, max conns or None)
SERVERS = {
    "c-epoll": ("C epoll echo (ceiling)", [os.path.join(BUILD, "echo_server")], None, None),
    "netmux": ("netmux", [sys.executable, os.path.join(SERVERS_DIR, "netmux_echo.py")], "netmux", None),
    "netmux-stream": ("netmux, StreamHandler (async def handle)",
                      [sys.executable, os.path.join(SERVERS_DIR, "netmux_stream_echo.py")], "netmux", None),
    "uvloop-protocol": ("uvloop, Protocol",
                        [sys.executable, os.path.join(SERVERS_DIR, "uvloop_protocol.py")], "uvloop", None),
    "asyncio-protocol": ("asyncio, Protocol",
                         [sys.executable, os.path.join(SERVERS_DIR, "asyncio_protocol.py")], None, None),
    "asyncio-streams": ("asyncio, streams",
                        [sys.executable, os.path.join(SERVERS_DIR, "asyncio_streams.py")], None, None),
    "uvloop-streams": ("uvloop, streams",
                       [sys.executable, os.path.join(SERVERS_DIR, "uvloop_streams.py")], "uvloop", None),
    "threading": ("socketserver ThreadingTCPServer",
                  [sys.executable, os.path.join(SERVERS_DIR, "threading_server.py")], None, None),
    "blocking": ("blocking loop of the socket docs (1 client at a time)",
                 [sys.executable, os.path.join(SERVERS_DIR, "blocking_server.py")], None, 1),
    "selectors": ("untuned 40-line selectors loop",
                  [sys.executable, os.path.join(SERVERS_DIR, "selectors_echo.py")], None, None),
    "netmux-line": ("netmux, LineHandler", [sys.executable,
                    os.path.join(SERVERS_DIR, "netmux_line_echo.py")], "netmux", None),
    "asyncio-line": ("asyncio, streams readline()",
                     [sys.executable, os.path.join(SERVERS_DIR, "asyncio_line_echo.py")], None, None),
    "uvloop-line": ("uvloop, streams readline()",
                    [sys.executable, os.path.join(SERVERS_DIR, "uvloop_line_echo.py")], "uvloop", None),
    "netmux-proxy": ("netmux, PROXY protocol on", [sys.executable,
                     os.path.join(SERVERS_DIR, "netmux_proxy_echo.py")], "netmux", None),
    "netmux-tls": ("netmux, TLS", [sys.executable, os.path.join(SERVERS_DIR, "tls_echo.py"),
                                   "netmux", "{port}", "{cert}", "{key}"], "netmux", None),
    "asyncio-tls": ("asyncio, TLS (Protocol)", [sys.executable, os.path.join(
        SERVERS_DIR, "tls_echo.py"), "asyncio", "{port}", "{cert}", "{key}"], None, None),
    "uvloop-tls": ("uvloop, TLS (Protocol)", [sys.executable, os.path.join(
        SERVERS_DIR, "tls_echo.py"), "uvloop", "{port}", "{cert}", "{key}"], "uvloop", None),
}
# How the load generator talks to a server: echo_client.c flags (-L: lines end in
# "\n"; -x: a PROXY v1 header first), or "tls": bench/tls_echo_client.c (closed-loop
# echo only: no churn, storm or idle connections; no latency figures).
CLIENT_FLAGS = {"netmux-line": ["-L"], "asyncio-line": ["-L"], "uvloop-line": ["-L"],
                "netmux-proxy": ["-x"]}
TLS_SERVERS = {"netmux-tls", "asyncio-tls", "uvloop-tls"}
CERT = {}      # "cert", "key": a throwaway certificate, made when a TLS server runs
BASELINE = "asyncio-protocol"
# Where a server imports netmux from: this checkout, unless --baseline-root
# adds "netmux-base" and "netmux-stream-base" from another one (a before/after
# comparison in one run: git worktree add /tmp/before OLD; --baseline-root /tmp/before).
SERVER_ROOTS = {}
# Ratio lines under the tables: (server, compared to, label), printed when both ran.
RATIO_LINES = [
    ("netmux", "uvloop-protocol", "netmux / uvloop Protocol"),
    ("netmux-stream", "netmux", "netmux StreamHandler / netmux Handler"),
    ("netmux-stream", "asyncio-streams", "netmux StreamHandler / asyncio streams"),
    ("netmux-stream", "uvloop-streams", "netmux StreamHandler / uvloop streams"),
    ("netmux-line", "uvloop-line", "netmux LineHandler / uvloop streams readline()"),
    ("netmux-line", "asyncio-line", "netmux LineHandler / asyncio streams readline()"),
    ("netmux-tls", "uvloop-tls", "netmux TLS / uvloop TLS"),
    ("netmux-tls", "asyncio-tls", "netmux TLS / asyncio TLS"),
    ("netmux-proxy", "netmux", "netmux PROXY / netmux"),
]

_children = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def compile_c(cc, tls=False):
    os.makedirs(BUILD, exist_ok=True)
    progs = [(os.path.join(HERE, "echo_client.c"), os.path.join(BUILD, "echo_client"), []),
             (os.path.join(SERVERS_DIR, "echo_server.c"), os.path.join(BUILD, "echo_server"), [])]
    if tls:
        progs.append((os.path.join(HERE, "tls_echo_client.c"),
                      os.path.join(BUILD, "tls_echo_client"), ["-lssl", "-lcrypto"]))
    for src, out, libs in progs:
        if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
            continue
        cmd = [cc, "-O2", "-Wall", "-o", out, src] + libs
        log("compiling:", " ".join(cmd))
        subprocess.run(cmd, check=True)


def available(name):
    mod = SERVERS[name][2]
    if mod is None:
        return True
    env = dict(os.environ, PYTHONPATH=SERVER_ROOTS.get(name, ROOT))
    code = f"import {mod}" + ("; netmux.TCPServer; netmux.Handler" if mod == "netmux" else "")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return r.returncode == 0


def pin(core):
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def proc_stat(pid):
    """(utime + stime in seconds, minor page faults) of a process and all its threads;
    (None, None) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])
    except (OSError, IndexError, ValueError):
        return None, None


def stat_jiffies():
    """(busy, steal, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal, user + nice + system + idle + iowait + irq + softirq + steal


def machine_busy(interval=0.5):
    """Cores kept busy (user+system+irq, any process) over the next `interval` seconds."""
    b0, _, t0 = stat_jiffies()
    time.sleep(interval)
    b1, _, t1 = stat_jiffies()
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def wait_quiet(max_wait, threshold):
    """Wait (at most max_wait s) until other processes keep less than `threshold` cores busy."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = machine_busy()
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        time.sleep(0.5)


def stderr_tail(proc, n=300):
    try:
        proc.errf.seek(0)
        return proc.errf.read()[-n:].strip()
    except (OSError, ValueError, AttributeError):
        return ""


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)
    if proc in _children:
        _children.remove(proc)
    if proc.stdout:
        proc.stdout.close()


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (the storms and 10,000 connections need
    it; the C client and the servers raise their own too). Returns (old, new)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def supports(server, scenario):
    """None when the server runs the scenario, else why not (an "n/a" cell)."""
    conns, _, idle, _, kind = SCENARIOS[scenario]
    limit = SERVERS[server][3]
    if limit is not None and conns + idle > limit:
        return f"serves {limit} connection(s) at a time"
    if server in TLS_SERVERS and (kind != "echo" or idle or conns > 1000):
        return "the TLS client runs the closed-loop echo only, up to 1,000 connections"
    return None


def server_argv(name):
    """The server's command line: "{port}" and the certificate's places filled, or the
    port (0: any) appended."""
    argv = SERVERS[name][1]
    if "{port}" not in argv:
        return argv + ["0"]
    fill = {"{port}": "0", "{cert}": CERT.get("cert", ""), "{key}": CERT.get("key", "")}
    return [fill.get(a, a) for a in argv]


def start_server(name, timeout=20.0):
    argv = pin(SERVER_CORE) + server_argv(name)
    env = dict(os.environ, PYTHONPATH=SERVER_ROOTS.get(name, ROOT), PYTHONUNBUFFERED="1")
    errf = tempfile.TemporaryFile(mode="w+")   # a file, not a pipe: a chatty server never blocks
    proc = subprocess.Popen(argv, cwd=SERVERS_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=errf, text=True)
    proc.errf = errf
    _children.append(proc)
    deadline = time.monotonic() + timeout
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("READY "):
                    return proc, int(line.split()[1])
    finally:
        sel.close()
    stop(proc)
    raise RuntimeError(f"server {name} did not become ready: {stderr_tail(proc)}")


def client_argv(server, scenario, port, warm, dur, setup_timeout):
    conns, size, idle, _, kind = SCENARIOS[scenario]
    if server in TLS_SERVERS:
        return pin(CLIENT_CORE) + [os.path.join(BUILD, "tls_echo_client"), "-p", str(port),
                                   "-c", str(conns), "-s", str(size), "-w", str(warm),
                                   "-d", str(dur)]
    return pin(CLIENT_CORE) + [os.path.join(BUILD, "echo_client"), "-h", "127.0.0.1",
                               "-p", str(port), "-c", str(conns), "-s", str(size),
                               "-i", str(idle), "-w", str(warm), "-d", str(dur),
                               "-T", str(setup_timeout), "-m", kind] + CLIENT_FLAGS.get(server, [])


def tls_result(res, dur):
    """tls_echo_client's line in echo_client's terms (it measures no latency)."""
    rate = res["messages_per_s"]
    return {"msgs_per_s": rate, "msgs": int(rate * dur), "lat_p50_us": -1, "lat_p99_us": -1,
            "errors": 0}


def run_one(server, scenario, warm, dur, setup_timeout):
    kind = SCENARIOS[scenario][4]
    proc, port = start_server(server)
    try:
        time.sleep(0.1)
        client = client_argv(server, scenario, port, warm, dur, setup_timeout)
        hz = os.sysconf("SC_CLK_TCK")
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        j0 = stat_jiffies()
        (cpu0, flt0), t0 = proc_stat(proc.pid), time.monotonic()
        try:
            out = subprocess.run(client, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 timeout=setup_timeout + warm + dur + 30)
        except subprocess.TimeoutExpired:
            return {"error": "client timeout"}
        (cpu1, flt1), t1 = proc_stat(proc.pid), time.monotonic()
        j1 = stat_jiffies()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {"error": f"client exit {out.returncode}: {out.stderr.strip()[-300:]}"}
        res = json.loads(lines[-1])
        if server in TLS_SERVERS and "messages_per_s" in res:
            res = tls_result(res, dur)
        if kind == "storm" and res.get("unserved"):
            res["error"] = (f"{res['unserved']} of {res['conns']} clients not served "
                            f"within {setup_timeout:g} s")
        if proc.poll() is not None:
            res.setdefault("error", f"server died (exit {proc.returncode}): "
                                    f"{stderr_tail(proc)}")
        if cpu0 is not None and cpu1 is not None:
            # over the whole client run (setup + warm-up + measure): a rough utilisation
            res["server_cpu"] = round((cpu1 - cpu0) / (t1 - t0), 3)
            client_total = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            # CPU that neither the server nor the client used: other processes on the machine
            other = (j1[0] - j0[0]) / hz - (cpu1 - cpu0) - client_total
            res["other_cpu"] = round(max(0.0, other) / (t1 - t0), 3)
            res["steal"] = round((j1[1] - j0[1]) / hz / (t1 - t0), 3)
            # Page faults per echoed message: ~0 for a server that reuses its memory;
            # >= 1 when every recv() gets fresh pages from the kernel (see README).
            total = res.get("msgs", 0) + res.get("msgs_warmup", 0)
            if total:
                res["server_faults_per_msg"] = round((flt1 - flt0) / total, 3)
        return res
    finally:
        stop(proc)


# ---------------------------------------------------------------- reporting

def fmt_rate(x):
    if x is None:
        return "n/a"
    if x >= 100_000:
        return f"{x / 1000:.0f}k"
    if x >= 1000:
        return f"{x / 1000:.1f}k"
    return f"{x:.0f}"


def fmt_us(x):
    if x is None or x < 0:
        return "n/a"
    if x >= 10_000:
        return f"{x / 1000:.1f} ms"
    return f"{x:.0f} µs"


def summarize(results, servers, scenarios):
    """results[(server, scenario)] -> list of per-round dicts."""
    summ = {}
    for key, runs in results.items():
        ok = [r for r in runs if "error" not in r and r.get("errors", 0) == 0 and r.get("msgs", 0) > 0]
        errs = [r.get("error") or f"{r.get('errors')} connection errors" for r in runs if r not in ok]
        if not ok:
            summ[key] = {"na": runs[0].get("na") if runs else None, "errors": errs}
            continue
        storm = SCENARIOS[key[1]][4] == "storm"
        rates = [r["storm_span_ms"] if storm else r["msgs_per_s"] for r in ok]
        med = statistics.median(rates)
        summ[key] = {
            "rate": med,
            "spread": (max(rates) - min(rates)) / med * 100 if med else 0.0,
            "n": len(ok),
            "p50": statistics.median(r["lat_p50_us"] for r in ok),
            "p99": statistics.median(r["lat_p99_us"] for r in ok),
            "client_cpu": statistics.median(r.get("client_cpu", 0) for r in ok),
            "server_cpu": statistics.median(r.get("server_cpu", 0) for r in ok),
            "other_cpu": statistics.median(r.get("other_cpu", 0) for r in ok),
            "other_max": max(r.get("other_cpu", 0) for r in ok),
            "faults": statistics.median(r.get("server_faults_per_msg", 0) for r in ok),
            "first_ms": statistics.median(r.get("storm_first_ms", -1) for r in ok),
            "last_ms": statistics.median(r.get("storm_last_ms", -1) for r in ok),
            "errors": errs,
        }
    return summ


def cell(s):
    if s is None:
        return "—"
    if "rate" not in s:
        return "n/a" if s.get("na") else "fail"
    return fmt_rate(s["rate"])


def table(L, summ, servers, scenarios, fmt):
    """Append one markdown table: a row per server, a column per scenario; ``fmt(s, sc)``
    formats a measured cell, missing and failed cells read as ``cell()`` says."""
    L.append("| server | " + " | ".join(SCENARIOS[sc][3] for sc in scenarios) + " |")
    L.append("|---|" + "---|" * len(scenarios))
    for sv in servers:
        row = []
        for sc in scenarios:
            s = summ.get((sv, sc))
            row.append(fmt(s, sc) if s and "rate" in s else cell(s))
        L.append(f"| {SERVERS[sv][0]} | " + " | ".join(row) + " |")


def fmt_ms(x):
    return "n/a" if x is None or x < 0 else (f"{x:.0f} ms" if x >= 100 else f"{x:.1f} ms")


def storm_report(L, summ, servers, storms):
    """The storm table: a row per server, for each storm the time from the first
    client's echo to the last one's (median [spread]) and, after it, the first and the
    last echo counted from the first connect() (the client's own connect loop is in
    those)."""
    L.append("\nStorms: every client connects at once and sends 64 B; the time from the first "
             "client's echo to the last one's (median of the rounds [spread]); in brackets "
             "after it the first and the last echo counted from the first connect():\n")
    L.append("| server | " + " | ".join(SCENARIOS[sc][3] for sc in storms) + " |")
    L.append("|---|" + "---|" * len(storms))
    for sv in servers:
        row = []
        for sc in storms:
            s = summ.get((sv, sc))
            if not s or "rate" not in s:
                row.append(cell(s))
                continue
            spread = f" [{s['spread']:.0f}%]" if s["n"] > 1 else ""
            row.append(f"**{fmt_ms(s['rate'])}**{spread} ({fmt_ms(s['first_ms'])} → "
                       f"{fmt_ms(s['last_ms'])})")
        L.append(f"| {SERVERS[sv][0]} | " + " | ".join(row) + " |")


def report(summ, servers, all_scenarios, meta):
    scenarios = [sc for sc in all_scenarios if SCENARIOS[sc][4] != "storm"]
    storms = [sc for sc in all_scenarios if SCENARIOS[sc][4] == "storm"]
    L = []
    L.append("# netmux echo benchmark — results\n")
    L.append(f"Command: `{meta['command']}`  ")
    L.append(f"Date: {meta['date']}; {meta['rounds']} round(s), warm-up {meta['warm']} s, "
             f"measured {meta['dur']} s; server on core {SERVER_CORE}, client on core {CLIENT_CORE}.  ")
    L.append(f"Machine: {meta['cpu']} × {os.cpu_count()} cores, Linux {platform.release()}, "
             f"Python {platform.python_version()}{meta['extra']}; netmux at {meta['netmux']}; "
             f"RLIMIT_NOFILE {meta['nofile']}.\n")
    if storms:
        storm_report(L, summ, servers, storms)
    if not scenarios:
        return "\n".join(L) + "\n"
    L.append("\nMessages per second (closed-loop echo; churn: connections per second; "
             "median of the rounds; [spread] = (max − min) / median):\n")
    table(L, summ, servers, scenarios,
          lambda s, sc: cell(s) + (f" [{s['spread']:.0f}%]" if s["n"] > 1 else ""))
    if BASELINE in servers:
        L.append("\nRatio to asyncio Protocol (medians):\n")

        def ratio(s, sc):
            b = summ.get((BASELINE, sc))
            return f"{s['rate'] / b['rate']:.2f}×" if b and "rate" in b and b["rate"] else "—"

        table(L, summ, servers, scenarios, ratio)
    for top, bottom, label in RATIO_LINES:
        if top in servers and bottom in servers:
            L.append(f"\n{label}: " + ", ".join(
                f"{sc} {summ[(top, sc)]['rate'] / summ[(bottom, sc)]['rate']:.2f}×"
                for sc in scenarios
                if "rate" in summ.get((top, sc), {}) and "rate" in summ.get((bottom, sc), {})))
    L.append("\nRound-trip latency, p50 / p99 (median of the rounds):\n")
    table(L, summ, servers, scenarios, lambda s, sc: f"{fmt_us(s['p50'])} / {fmt_us(s['p99'])}")
    L.append("\nCPU use, client / server / other processes (cores; the client's over the measured window, "
             "the server's and the others' over the whole run incl. setup; medians). A client near 1.00 "
             "is the limit; 'other' is background load from processes outside the benchmark:\n")
    table(L, summ, servers, scenarios,
          lambda s, sc: f"{s['client_cpu']:.2f} / {s['server_cpu']:.2f} / {s['other_cpu']:.2f}")
    L.append("\nServer minor page faults per echoed message (median; setup included, so the "
             "idle10k column carries the 10,000 accepts). Above ~0.5 the server gets fresh pages "
             "from the kernel on every recv() (glibc malloc's mmap threshold, see bench/README.md):\n")
    table(L, summ, servers, scenarios, lambda s, sc: f"{s['faults']:.2f}")
    notes = []
    noisy = [(k, s) for k, s in sorted(summ.items()) if s.get("other_max", 0) > meta["noise"]]
    if noisy:
        notes.append(f"- {len(noisy)} cell(s) include a run with background load above {meta['noise']} core "
                     "(other processes on the machine): "
                     + ", ".join(f"{sv}/{sc} ({s['other_max']:.2f})" for (sv, sc), s in noisy))
    for (sv, sc), s in sorted(summ.items()):
        if sc not in all_scenarios:
            continue
        if s.get("na"):
            notes.append(f"- {sv} / {sc}: n/a — {s['na']}")
        elif s.get("errors"):
            notes.append(f"- {sv} / {sc}: {len(s['errors'])} failed run(s): {s['errors'][0]}")
    if notes:
        L.append("\nNotes:\n")
        L.extend(notes)
    return "\n".join(L) + "\n"


def write_summary(path, summ, servers, scenarios, meta):
    """The medians as JSON, for bench/charts.py: {"meta", "servers": {name: label},
    "scenarios": {name: [label, kind]}, "cells": [{server, scenario, rate, spread, ...}]}."""
    cells = [dict(s, server=sv, scenario=sc, errors=len(s.get("errors") or []))
             for (sv, sc), s in summ.items() if sc in scenarios and "rate" in s]
    data = {"meta": {**meta, "python": platform.python_version()},
            "servers": {sv: SERVERS[sv][0] for sv in servers},
            "scenarios": {sc: [SCENARIOS[sc][3], SCENARIOS[sc][4]] for sc in scenarios},
            "cells": cells}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def netmux_version():
    """The last commit that touched netmux/ (+ a note for uncommitted edits)."""
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h", "--", "netmux"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "netmux"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted netmux/ edits" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (default 1)")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds (default 5)")
    ap.add_argument("--quick", action="store_true", help="0.5 s warm-up + 1.5 s measured")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma-separated subset of: " + ", ".join(SERVERS))
    ap.add_argument("--scenarios", default="classic",
                    help="comma-separated subset of: " + ", ".join(SCENARIOS) + "; or a group: "
                         + "; ".join(f"{k} = {','.join(v)}" for k, v in GROUPS.items())
                         + " (default classic)")
    ap.add_argument("--setup-timeout", type=float, default=60.0,
                    help="cap on connecting every connection, seconds (default 60)")
    ap.add_argument("--noise", type=float, default=0.15,
                    help="background CPU (cores used by other processes) above which a run is noisy "
                         "(default 0.15)")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each run, wait up to this many seconds for the machine to be quiet "
                         "(default 20; 0: don't wait)")
    ap.add_argument("--retry-noisy", type=int, default=1,
                    help="re-run a noisy run up to this many times, keeping the quietest (default 1)")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler (default $CC or cc)")
    ap.add_argument("--output", default=os.path.join(RESULTS, "latest.md"),
                    help="markdown report path (default bench/results/latest.md); its "
                         "summary goes beside it as .json (bench/charts.py draws it)")
    ap.add_argument("--baseline-root", metavar="DIR",
                    help="also run netmux-base and netmux-stream-base, importing netmux from DIR "
                         "(another checkout: before/after in one run)")
    ap.add_argument("--list", action="store_true", help="list servers and scenarios, then exit")
    args = ap.parse_args()

    if args.list:
        for k, v in SERVERS.items():
            print(f"server   {k:18} {v[0]}")
        for k, v in SCENARIOS.items():
            print(f"scenario {k:18} {v[3]}")
        return 0
    if args.baseline_root:
        root = os.path.abspath(args.baseline_root)
        for name in ("netmux", "netmux-stream"):
            label, argv, module, limit = SERVERS[name]
            SERVERS[name + "-base"] = (f"{label} at {root}", argv, module, limit)
            SERVER_ROOTS[name + "-base"] = root
    warm, dur = (0.5, 1.5) if args.quick else (args.warmup, args.duration)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    scenarios = []
    for s in (s.strip() for s in args.scenarios.split(",")):
        for sc in GROUPS.get(s, [s] if s else []):
            if sc not in scenarios:
                scenarios.append(sc)
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 CPUs; client and server will share a core")
        global CLIENT_CORE
        CLIENT_CORE = 0

    tls = any(s in TLS_SERVERS for s in servers)
    compile_c(args.cc, tls)
    old, new = raise_nofile()
    nofile = f"{new}" + (f" (raised from {old}: soft to hard)" if old != new else "")
    log("RLIMIT_NOFILE:", nofile)
    if tls:
        sys.path.insert(0, HERE)
        from tls import make_certificate
        cert_dir = tempfile.mkdtemp(prefix="netmux-bench-")
        CERT["cert"], CERT["key"] = make_certificate(cert_dir)
    usable = []
    for s in servers:
        if available(s):
            usable.append(s)
        else:
            log(f"skipping {s}: {SERVERS[s][2]} is not importable")
    servers = usable

    netmux_at_start = netmux_version()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(RESULTS, exist_ok=True)
    raw_path = os.path.join(RESULTS, f"{stamp}.raw")
    results = {(sv, sc): [] for sv in servers for sc in scenarios}
    total = sum(1 for sv in servers for sc in scenarios if supports(sv, sc) is None)
    done = 0
    t_begin = time.monotonic()
    with open(raw_path, "w") as raw:
        for rnd in range(args.rounds):
            for sc in scenarios:
                k = (rnd + scenarios.index(sc)) % max(1, len(servers))
                order = servers[k:] + servers[:k]   # rotate: no server always runs first
                for sv in order:
                    why = supports(sv, sc)
                    if why:
                        results[(sv, sc)].append({"na": why})
                        continue
                    res = None
                    for attempt in range(1 + args.retry_noisy):
                        busy = wait_quiet(args.quiet_wait, args.noise) if args.quiet_wait > 0 else None
                        try:
                            r = run_one(sv, sc, warm, dur, args.setup_timeout)
                        except Exception as e:  # a broken server must not stop the others
                            r = {"error": f"{type(e).__name__}: {e}"}
                        r["attempt"] = attempt + 1
                        if busy is not None:
                            r["busy_before"] = round(busy, 3)
                        # keep the quietest attempt; an error is not retried
                        if res is None or r.get("other_cpu", 0) < res.get("other_cpu", 0):
                            res = r
                        if "error" in r or r.get("other_cpu", 0) <= args.noise:
                            break
                        log(f"    noisy run (other processes used {r['other_cpu']:.2f} core): retrying")
                    done += 1
                    res.update(server=sv, scenario=sc, round=rnd + 1)
                    raw.write(json.dumps(res) + "\n")
                    raw.flush()
                    results[(sv, sc)].append(res)
                    if "error" in res:
                        msg = "ERROR " + res["error"]
                    elif SCENARIOS[sc][4] == "storm":
                        msg = (f"first echo {res['storm_first_ms']:.1f} ms, last "
                               f"{res['storm_last_ms']:.1f} ms: span {res['storm_span_ms']:.1f} ms"
                               f"  retries {res.get('setup_retries', 0)}")
                    else:
                        msg = (f"{res['msgs_per_s']:>10.0f} msg/s  p50 {res['lat_p50_us']:.0f} µs  "
                               f"cpu client {res.get('client_cpu', 0):.2f} server {res.get('server_cpu', 0):.2f} other {res.get('other_cpu', 0):.2f} "
                               f"faults/msg {res.get('server_faults_per_msg', 0):.2f}"
                               + (f"  errors {res['errors']}" if res.get("errors") else ""))
                    log(f"[{done}/{total * args.rounds} {time.monotonic() - t_begin:5.0f}s] "
                        f"round {rnd + 1} {sc:8} {sv:17} {msg}")
    for key, runs in results.items():
        if runs and all("na" in r for r in runs):
            results[key] = [runs[0]]
    summ = summarize(results, servers, scenarios)
    meta = {
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rounds": args.rounds, "warm": warm, "dur": dur, "cpu": cpu_model(),
        "extra": "", "noise": args.noise, "netmux": netmux_version(), "nofile": nofile,
    }
    if meta["netmux"] != netmux_at_start:
        meta["netmux"] = f"{netmux_at_start} at the start, {meta['netmux']} at the end (it changed during the run)"
    try:
        import uvloop
        meta["extra"] = f", uvloop {uvloop.__version__}"
    except ImportError:
        pass
    text = report(summ, servers, scenarios, meta)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    write_summary(os.path.splitext(args.output)[0] + ".json", summ, servers, scenarios, meta)
    log(f"report: {args.output}   raw runs: {raw_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for p in list(_children):
            try:
                stop(p)
            except Exception:
                pass
