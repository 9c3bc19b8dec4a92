#!/usr/bin/env python3
"""kv beside redis-server: redis-benchmark against both, in the same run.

    python bench/kv.py                 # 3 rounds of -P 1 and -P 16, -n 100000 -c 50
    python bench/kv.py --rounds 1 --requests 20000      # a quick look
    python bench/kv.py --rev main      # also kv as it is at a git revision, in the same rounds

Each round starts a fresh server of each kind pinned to core 0 (``taskset -c 0``)
and runs ``redis-benchmark -t set,get,incr,mget -n N -c 50 -P p --csv`` pinned
to core 1, for p in 1 and 16; the servers alternate within a round so drift in
the machine's load hits both. The report gives the median requests/s over the
rounds and netmux kv's share of redis-server's; it is printed and written to
bench/results/kv-latest.md. Only loopback is used; every run is bounded in time.
"""
import argparse
import csv
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = ["SET", "GET", "INCR", "MSET (10 keys)", "MGET (10 keys)"]
# redis-benchmark has no MGET test (``-t mget`` is silently skipped): we run it as
# a custom command over the key its SET test writes, ten times.
MGET = ["MGET"] + ["key:__rand_int__"] * 10


def netmux_command():
    """``python -m netmux kv`` once the command line knows kv, else kv's own runner."""
    probe = subprocess.run([sys.executable, "-m", "netmux", "kv", "--help"], cwd=ROOT,
                           capture_output=True, timeout=30)
    if probe.returncode == 0:
        return [sys.executable, "-m", "netmux", "kv", "--log-level", "WARNING"]
    return [sys.executable, "-m", "netmux.apps.kv", "--log-level", "WARNING"]


def server_commands(rev_tree=None, rev=None):
    """name -> (command, directory to run it in); with ``rev_tree``, kv from that tree too."""
    commands = {
        "netmux kv": (netmux_command(), ROOT),
        "redis-server": (["redis-server", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"], ROOT),
    }
    if rev_tree is not None:        # python -m finds netmux in its working directory first
        commands[f"netmux kv ({rev})"] = ([sys.executable, "-m", "netmux.apps.kv", "--log-level", "WARNING"],
                                          rev_tree)
    return commands


def export(rev, directory):
    """``netmux/`` as it is at ``rev``, written under ``directory`` (git archive)."""
    archive = subprocess.run(["git", "archive", rev, "netmux"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    return directory


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command, port, timeout=20.0, directory=ROOT):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)     # each kv is the netmux of its own directory
    proc = subprocess.Popen(["taskset", "-c", "0", *command, "--port", str(port)], cwd=directory,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16) == b"+PONG\r\n":
                    return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{command[0]} did not answer on port {port}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def benchmark(port, pipeline, requests):
    """requests/s per redis-benchmark test name."""
    common = ["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-n", str(requests), "-c", "50",
              "-P", str(pipeline), "--csv"]
    rates = {}
    for extra, name in ((["-t", "set,get,incr,mget,mset"], None), (MGET, "MGET (10 keys)")):
        result = subprocess.run(common + extra, capture_output=True, timeout=600, check=True)
        for row in csv.reader(io.StringIO(result.stdout.decode())):
            if row and row[0] != "test":
                rates[name or row[0]] = float(row[1])
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--rev", default=None, help="also run kv as it is at this git revision (e.g. main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        commands = server_commands(export(args.rev, workdir) if args.rev else None, args.rev)
        run(args, commands)


def run(args, commands):
    results = {}            # (server, pipeline, test) -> [requests/s per round]
    for round_number in range(args.rounds):
        order = list(commands) if round_number % 2 == 0 else list(commands)[::-1]
        for pipeline in (1, 16):
            for name in order:
                port = free_port()
                command, directory = commands[name]
                proc = start(command, port, directory=directory)
                try:
                    for test, rate in benchmark(port, pipeline, args.requests).items():
                        results.setdefault((name, pipeline, test), []).append(rate)
                finally:
                    stop(proc)
                print(f"round {round_number + 1} -P {pipeline} {name}: done", file=sys.stderr)
    report = render(results, args, commands)
    print(report)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "kv-latest.md"), "w") as file:
        file.write(report)


def render(results, args, commands):
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True).stdout.decode()
    redis_version = redis_version.split("v=")[1].split()[0]
    netmux = " ".join(["python"] + commands["netmux kv"][0][1:])
    lines = [f"`redis-benchmark -t set,get,incr,mget,mset -n {args.requests} -c 50 -P {{1,16}} --csv` and "
             f"`redis-benchmark -n {args.requests} -c 50 -P {{1,16}} --csv MGET key:__rand_int__ ...` (10 keys) "
             f"against `{netmux}` and `redis-server --save '' --appendonly no`; median of {args.rounds} "
             f"rounds; server on core 0, client on core 1 (taskset); "
             f"{platform.python_implementation()} {platform.python_version()}, redis-server {redis_version}.",
             "",
             "| test | -P | netmux kv req/s | redis-server req/s | netmux / redis |",
             "|---|---:|---:|---:|---:|"]
    others = [name for name in commands if name.startswith("netmux kv (")]
    if others:
        lines[2] = lines[2].replace(" | redis-server req/s", "".join(f" | {name} req/s" for name in others)
                                    + " | redis-server req/s")
        lines[3] = "|---|---:|---:|" + "---:|" * len(others) + "---:|---:|"
    for pipeline in (1, 16):
        for test in TESTS:
            ours = results.get(("netmux kv", pipeline, test))
            theirs = results.get(("redis-server", pipeline, test))
            if not ours or not theirs:
                continue
            a, b = statistics.median(ours), statistics.median(theirs)
            revs = "".join(f" {statistics.median(results.get((name, pipeline, test), [0])):,.0f} |"
                           for name in others)
            lines.append(f"| {test} | {pipeline} | {a:,.0f} |{revs} {b:,.0f} | {a / b:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
