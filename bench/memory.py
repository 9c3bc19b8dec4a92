#!/usr/bin/env python3
"""Memory per idle connection: the Python heap (tracemalloc) and RSS, netmux beside its peers.

    python bench/memory.py                       # 10,000 idle connections, netmux + asyncio (+ uvloop)
    python bench/memory.py --conns 5000 --servers netmux,asyncio-protocol

For each server and each mode, a fresh server process (bench/servers/memory_server.py)
is started. Mode "heap" runs it under tracemalloc and reads the traced Python heap;
mode "rss" runs it without tracemalloc (whose own bookkeeping would inflate RSS)
and reads VmRSS. The C client (bench/build/echo_client, built by bench/run.py or
here) opens --conns connections, each does one 1-byte echo (so the server has
certainly accepted it) and then stays idle. The figures are

    (measure with N idle connections - measure with none) / N

after gc.collect(). The server's CPU time while the N connections sit idle for
--idle seconds is reported too: it should be ~0 (no per-connection work per loop turn).
A last measure after the client has gone shows what is given back.
Only loopback is used; every step is bounded in time.
"""
import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench_run  # noqa: E402  (compile_c, available, pin, SERVERS)

LABELS = {
    "netmux": "netmux",
    "asyncio-protocol": "asyncio, Protocol",
    "asyncio-streams": "asyncio, streams",
    "uvloop-protocol": "uvloop, Protocol (heap: Python objects only; libuv's C memory shows in RSS)",
    "selectors": "untuned selectors loop",
}


def readline(stream, timeout):
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError("no answer within %.0f s" % timeout)
        return stream.readline()
    finally:
        sel.close()


def measure(server):
    server.stdin.write("measure\n")
    server.stdin.flush()
    line = readline(server.stdout, 60)
    return json.loads(line)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def one(kind, mode, conns, idle_s):
    env = dict(os.environ, PYTHONPATH=bench_run.ROOT, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(bench_run.pin(bench_run.SERVER_CORE)
                              + [sys.executable, os.path.join(HERE, "servers", "memory_server.py"),
                                 kind, mode, "0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=os.path.join(HERE, "servers"), env=env)
    client = None
    try:
        line = readline(server.stdout, 30)
        if not line.startswith("READY "):
            raise RuntimeError(f"{kind}: unexpected {line!r}")
        port = int(line.split()[1])
        time.sleep(0.2)
        base = measure(server)
        client = subprocess.Popen(bench_run.pin(bench_run.CLIENT_CORE)
                                  + [os.path.join(bench_run.BUILD, "echo_client"), "-p", str(port),
                                     "-c", "0", "-i", str(conns), "-w", "0", "-d", "600", "-T", "120"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while True:
            line = readline(client.stderr, 150)
            if not line:
                raise RuntimeError(f"{kind}: client ended: {client.stdout.read().strip()}")
            if line.startswith("SETUP_DONE"):
                break
        setup_s = time.monotonic() - t0
        time.sleep(0.5)
        loaded = measure(server)
        time.sleep(idle_s)
        idle = measure(server)
        stop(client)
        client = None
        time.sleep(2.0)
        after = measure(server)
    finally:
        if client is not None:
            stop(client)
        stop(server)
    res = {"server": kind, "mode": mode, "conns": conns, "setup_s": round(setup_s, 2),
           "fds": loaded["fds"] - base["fds"],
           "rss_per_conn": (loaded["rss"] - base["rss"]) / conns,
           "rss_after_close": after["rss"] - base["rss"],
           "idle_cpu_pct": (idle["cpu"] - loaded["cpu_end"]) / idle_s * 100}
    if base["heap"] is not None:
        res["heap_per_conn"] = (loaded["heap"] - base["heap"]) / conns
        res["heap_after_close"] = after["heap"] - base["heap"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=10000, help="idle connections (default 10000)")
    ap.add_argument("--servers", default="netmux,asyncio-protocol,asyncio-streams,uvloop-protocol",
                    help="comma-separated: " + ", ".join(LABELS))
    ap.add_argument("--idle", type=float, default=3.0,
                    help="seconds the connections sit idle while server CPU is measured (default 3)")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--output", default=os.path.join(HERE, "results", "memory.md"))
    args = ap.parse_args()
    bench_run.compile_c(args.cc)
    rows = []
    for kind in [s.strip() for s in args.servers.split(",") if s.strip()]:
        if kind not in LABELS:
            ap.error(f"unknown server {kind!r}")
        if not bench_run.available(kind):
            print(f"skipping {kind}: not importable", file=sys.stderr)
            continue
        r = {}
        for mode in ("heap", "rss"):
            try:
                res = one(kind, mode, args.conns, args.idle)
            except Exception as e:
                print(f"{kind}/{mode}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            print(json.dumps(res), file=sys.stderr, flush=True)
            r[mode] = res
        rows.append((kind, r))
    L = [f"# Memory per idle connection ({args.conns:,} idle connections)\n",
         f"Command: `python bench/memory.py {' '.join(sys.argv[1:])}`  ",
         f"Date: {time.strftime('%Y-%m-%d %H:%M')}; Python {sys.version.split()[0]}. Each connection did one "
         "1-byte echo, then stayed idle. Per connection = (with N open − with none) / N, after gc.collect().\n",
         "| server | Python heap / conn (tracemalloc) | RSS / conn (no tracemalloc) | "
         "server CPU while idle | heap left after close | RSS left after close |",
         "|---|---|---|---|---|---|"]
    for kind, r in rows:
        h, m = r.get("heap", {}), r.get("rss", {})
        heap = f"{h['heap_per_conn'] / 1024:.2f} KiB" if "heap_per_conn" in h else "fail"
        rss = f"{m['rss_per_conn'] / 1024:.2f} KiB" if "rss_per_conn" in m else "fail"
        cpu = f"{m['idle_cpu_pct']:.1f} %" if "idle_cpu_pct" in m else "—"
        hleft = f"{h['heap_after_close'] / 1024:.0f} KiB" if "heap_after_close" in h else "—"
        rleft = f"{m['rss_after_close'] / 1024:.0f} KiB" if "rss_after_close" in m else "—"
        L.append(f"| {LABELS[kind]} | {heap} | {rss} | {cpu} | {hleft} | {rleft} |")
    text = "\n".join(L) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
