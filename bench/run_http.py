#!/usr/bin/env python3
"""HTTP benchmark: netmux's http app beside the stdlib's http.server and uvicorn+h11.

    python bench/run_http.py                   # every server, both pages, 10 s each
    python bench/run_http.py --duration 3      # shorter, for iterating
    python bench/run_http.py --servers netmux,uvicorn-uvloop --pages hello

For each round, page and server (the server order rotates from round to
round, so a burst of load elsewhere on the machine does not always hit the same
one): a fresh server process pinned to core 0 (``taskset -c 0``), then
``taskset -c 1 wrk -t1 -c50 -dNs`` against it. The report gives the median
requests/s over the rounds with the spread (max - min, % of the median), the
median run's transfer/s and latency, and wrk's error counts summed over the
rounds; it is printed and written to bench/results/http-latest.md. Pages: ``hello`` is the same
small HTML page from every server (netmux without --root, http.server serving
it as index.html, uvicorn through bench/servers/asgi_hello.py); ``1mib`` is a
1 MiB static file (netmux --root and http.server only: uvicorn is no static
server). Needs wrk (Debian: apt-get install wrk), uvicorn and uvloop; only
127.0.0.1 is used, every run is bounded in time.
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from netmux.apps.http import HELLO_PAGE  # noqa: E402

PORT = 9310

# name -> (label, argv builder(port, root), pages it serves)
SERVERS = {
    "netmux": ("netmux http (h11)",
               lambda port, root, page: [sys.executable, "-m", "netmux.apps.http", "--port", str(port),
                                         "--log-level", "WARNING"] + (["--root", root] if page != "hello" else []),
               ("hello", "1mib")),
    "http.server": ("python -m http.server",
                    lambda port, root, page: [sys.executable, "-m", "http.server", str(port), "--bind",
                                              "127.0.0.1", "--directory", root],
                    ("hello", "1mib")),
    "uvicorn-uvloop": ("uvicorn --http h11 --loop uvloop",
                       lambda port, root, page: _uvicorn(port, "uvloop"), ("hello",)),
    "uvicorn-asyncio": ("uvicorn --http h11 --loop asyncio",
                        lambda port, root, page: _uvicorn(port, "asyncio"), ("hello",)),
}
PAGES = {"hello": ("/", f"hello page ({len(HELLO_PAGE)} B)"), "1mib": ("/1mib.bin", "1 MiB static file")}


def _uvicorn(port, loop):
    return [sys.executable, "-m", "uvicorn", "--app-dir", os.path.join(HERE, "servers"), "asgi_hello:app",
            "--port", str(port), "--loop", loop, "--http", "h11", "--log-level", "warning", "--no-access-log"]


def wait_listening(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def run_wrk(port, path, duration, connections):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         timeout=duration + 30, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "transfer": re.search(r"Transfer/sec:\s+(\S+)", out).group(1),
              "latency": re.search(r"Latency\s+(\S+)", out).group(1),
              "errors": 0, "non2xx": 0}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        result["errors"] = sum(int(n) for n in errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        result["non2xx"] = int(non2xx.group(1))
    return result


def measure(name, page, root, duration, connections):
    argv = SERVERS[name][1](PORT, root, page)
    server = subprocess.Popen(["taskset", "-c", "0"] + argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_listening(PORT, time.monotonic() + 10)
        return run_wrk(PORT, PAGES[page][0], duration, connections)
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/http.py needs wrk (Debian: apt-get install wrk)")
    root = tempfile.mkdtemp(prefix="netmux-http-bench-")
    try:
        with open(os.path.join(root, "index.html"), "wb") as index:
            index.write(HELLO_PAGE)
        with open(os.path.join(root, "1mib.bin"), "wb") as big:
            big.write(os.urandom(1 << 20))
        lines = [f"wrk -t1 -c{args.connections} -d{args.duration}s, server on core 0, wrk on core 1, "
                 f"median of {args.rounds} rounds", "",
                 "| page | server | requests/s | spread | transfer/s | mean latency | socket errors | non-2xx |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        servers = args.servers.split(",")
        for page in args.pages.split(","):
            names = [name for name in servers if page in SERVERS[name][2]]
            runs = {name: [] for name in names}
            for round_number in range(args.rounds):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    result = measure(name, page, root, args.duration, args.connections)
                    runs[name].append(result)
                    print(f"round {round_number + 1}: {page} {name}: {result['rps']:,.0f} req/s", flush=True)
            for name in names:
                rates = sorted(run["rps"] for run in runs[name])
                median = statistics.median(rates)
                middle = min(runs[name], key=lambda run: abs(run["rps"] - median))
                spread = (rates[-1] - rates[0]) / median * 100 if median else 0
                lines.append(f"| {PAGES[page][1]} | {SERVERS[name][0]} | {median:,.0f} | {spread:.0f} % | "
                             f"{middle['transfer']} | {middle['latency']} | "
                             f"{sum(run['errors'] for run in runs[name])} | "
                             f"{sum(run['non2xx'] for run in runs[name])} |")
    finally:
        shutil.rmtree(root)
    report = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "http-latest.md"), "w") as out:
        out.write(report)
    print(report)


if __name__ == "__main__":
    main()
