"""Throughput of `python -m netmux` with --workers 2 beside one process, direct and through HAProxy.

    python bench/workers.py                       # 3 alternating rounds, 1 s warm-up + 5 s each
    python bench/workers.py --rounds 1 --duration 2

The load is bench/echo_client.c (closed-loop echo, -c connections of -s bytes; see
bench/README.md), against the echo server in four set-ups:

    one          python -m netmux --port P
    workers2     python -m netmux --port P --workers 2
    haproxy-one  HAProxy (TCP mode, send-proxy-v2) -> one netmux process with --proxy-protocol
    haproxy-w2   HAProxy -> one port served by --workers 2 --proxy-protocol

Nothing is pinned: the point is what N processes get out of the machine's cores, with the
client (and HAProxy) sharing them. Prints a Markdown table: median msgs/s of the rounds,
each round's numbers, the cores the netmux processes used (supervisor and workers), and
how many cores the whole machine kept busy meanwhile (other programs included: on a
shared machine, compare rows of one run only). Linux, a C
compiler, Debian's haproxy for the last two rows (skipped without it). 127.0.0.1 only;
every process is stopped by its pid at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
CLIENT = os.path.join(BUILD, "echo_client")

HAPROXY = """global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{front}
    default_backend back
backend back
    server one 127.0.0.1:{back} send-proxy-v2
"""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def build_client():
    source = os.path.join(HERE, "echo_client.c")
    if not (os.path.exists(CLIENT) and os.path.getmtime(CLIENT) >= os.path.getmtime(source)):
        os.makedirs(BUILD, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", CLIENT, source], check=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port, process, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def netmux(port, *options):
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-m", "netmux", "--port", str(port), "--log-level", "WARNING",
                                *options], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    wait_port(port, process)       # connect and close: a PROXY server logs it at DEBUG only
    return process


def busy_jiffies():
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:8]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    return busy, busy + values[3] + values[4]


def tree_cpu(pid):
    """CPU seconds (user + system) of ``pid`` and its children, the workers."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            kids = [int(child) for child in children.read().split()]
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu(kid) for kid in kids)


def load(port, connections, size, warm, duration, server_pid):
    before = busy_jiffies()
    cpu_before, started = tree_cpu(server_pid), time.monotonic()
    out = subprocess.run([CLIENT, "-h", "127.0.0.1", "-p", str(port), "-c", str(connections), "-s", str(size),
                          "-w", str(warm), "-d", str(duration)], stdout=subprocess.PIPE, text=True,
                         timeout=warm + duration + 60)
    after = busy_jiffies()
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    # Over the whole client run (warm-up included): the cores netmux used, and so its
    # messages per CPU-second, which other load on the machine disturbs less than msgs/s.
    result["server_cores"] = (tree_cpu(server_pid) - cpu_before) / (time.monotonic() - started)
    result["cores_busy"] = (after[0] - before[0]) / max(1, after[1] - before[1]) * (os.cpu_count() or 1)
    return result


def stop(*processes):
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        if process is None:
            continue
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(setup, args, tmp):
    back = free_port()
    server = haproxy = None
    try:
        if setup == "one":
            server, port = netmux(back), back
        elif setup == "workers2":
            server, port = netmux(back, "--workers", "2"), back
        else:
            workers = ["--workers", "2"] if setup == "haproxy-w2" else []
            server = netmux(back, "--proxy-protocol", *workers)
            port = free_port()
            config = os.path.join(tmp, "haproxy.cfg")
            with open(config, "w") as file:
                file.write(HAPROXY.format(front=port, back=back))
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", config], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            wait_port(port, haproxy)
        time.sleep(0.3)
        return load(port, args.connections, args.size, args.warm, args.duration, server.pid)
    finally:
        stop(haproxy, server)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    build_client()
    setups = ["one", "workers2"] + (["haproxy-one", "haproxy-w2"] if shutil.which("haproxy") else [])
    results = {setup: [] for setup in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(args.rounds):
            for setup in setups:                  # alternating: a busy spell hits every row
                result = run(setup, args, tmp)
                results[setup].append(result)
                log(f"round {round_number + 1} {setup}: {result['msgs_per_s']:.0f} msgs/s, "
                    f"{result['cores_busy']:.2f} cores busy")
    print(f"{args.connections} connections x {args.size} B closed-loop echo, {args.rounds} rounds of "
          f"{args.warm:g} s + {args.duration:g} s; {os.cpu_count()} cores\n")
    print("| set-up | msgs/s (median) | each round | netmux cores | msgs per netmux CPU-second | machine cores busy |")
    print("|---|---|---|---|---|---|")
    for setup in setups:
        rates = [result["msgs_per_s"] for result in results[setup]]
        cores = [result["cores_busy"] for result in results[setup]]
        server = [result["server_cores"] for result in results[setup]]
        per_cpu = [(result["msgs"] + result["msgs_warmup"]) / max(1e-9, result["server_cores"])
                   / (args.warm + args.duration) for result in results[setup]]
        print(f"| {setup} | {statistics.median(rates):,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} | "
              f"{statistics.median(server):.2f} | {statistics.median(per_cpu):,.0f} | "
              f"{statistics.median(cores):.2f} |")
    print("\n(medians of the rounds; netmux cores: supervisor and workers together, over the whole "
          "client run)")


if __name__ == "__main__":
    main()
