"""TLS echo throughput, handshakes per second and idle memory: netmux beside asyncio and uvloop.

    python bench/tls.py                  # 3 rounds of every row, 1 s warm-up + 5 s measured; writes bench/results/tls.md
    python bench/tls.py --rounds 1 --duration 2     # shorter

One run, every row from it: the servers take turns, round after round, and each
figure is the median of its rounds, so a machine busy with other work for a while
weighs on every row alike. The load generator is
``tls_echo_client.c`` (OpenSSL, epoll, one thread; built here into bench/build/)
on a throwaway self-signed P-256 certificate made with ``openssl req``. Rows:

* ``1 KiB`` and ``64 KiB``: 10 connections, closed-loop echo, messages per second;
* ``handshakes/s``: 10 connections at a time, each connecting, completing a full
  TLS 1.3 handshake (no resumption) and closing;
* ``idle RSS``: the server's VmRSS with 1,000 connections open and idle after their
  handshakes and one echoed byte each, less its RSS before the first one (per
  connection: divided by 1,000); measured first, on a fresh server.

Servers: netmux plain TCP (the baseline: the same client with ``-P``), netmux TLS
(``TCPServer(ssl=...)``), asyncio TLS (``loop.create_server(ssl=...)``) and uvloop TLS
(when uvloop is installed). Linux only (epoll, /proc); needs cc and OpenSSL's headers.
"""
import argparse
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLIENT = os.path.join(HERE, "build", "tls_echo_client")
IDLE_CONNECTIONS = 1000


def build_client():
    os.makedirs(os.path.dirname(CLIENT), exist_ok=True)
    subprocess.run(["cc", "-O2", "-o", CLIENT, os.path.join(HERE, "tls_echo_client.c"), "-lssl", "-lcrypto"],
                   check=True)


def make_certificate(directory):
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", keyfile, "-out", certfile],
                   check=True, capture_output=True)
    return certfile, keyfile


def start_server(kind, certfile, keyfile):
    """The server process and its port, once it printed READY."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if kind == "netmux plain":
        command = [sys.executable, os.path.join(HERE, "servers", "netmux_echo.py"), "0"]
    else:
        command = [sys.executable, os.path.join(HERE, "servers", "tls_echo.py"), kind.split()[0], "0",
                   certfile, keyfile]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=os.path.join(HERE, "servers"))
    line = process.stdout.readline().decode()
    if not line.startswith("READY"):
        process.kill()
        raise RuntimeError(f"{kind} did not start: {line!r}")
    return process, int(line.split()[1])


def rss(process):
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def load(port, plain, mode, size, warmup, duration, timeout):
    command = [CLIENT, "-p", str(port), "-c", "10", "-s", str(size), "-m", mode,
               "-w", str(warmup), "-d", str(duration)] + (["-P"] if plain else [])
    result = subprocess.run(command, capture_output=True, timeout=timeout, check=True)
    return json.loads(result.stdout)


def idle_rss(process, port, plain):
    before = rss(process)
    command = [CLIENT, "-p", str(port), "-c", str(IDLE_CONNECTIONS), "-m", "idle", "-s", "1", "-w", "0",
               "-d", "10"]
    client = subprocess.Popen(command + (["-P"] if plain else []), stdout=subprocess.PIPE)
    try:
        line = client.stdout.readline()
        if line.strip() != b"HELD":
            raise RuntimeError(f"idle client: {line!r}")
        return rss(process) - before     # every connection has echoed a byte: all are in
    finally:
        client.kill()
        client.wait()
        client.stdout.close()


def measure(kind, certfile, keyfile, warmup, duration):
    process, port = start_server(kind, certfile, keyfile)
    plain = kind == "netmux plain"
    timeout = warmup + duration + 30
    try:
        row = {"kind": kind}
        row["idle_rss"] = idle_rss(process, port, plain)      # first: on a heap no load has grown
        row["1k"] = load(port, plain, "echo", 1024, warmup, duration, timeout)["messages_per_s"]
        row["64k"] = load(port, plain, "echo", 65536, warmup, duration, timeout)["messages_per_s"]
        shakes = load(port, plain, "handshake", 1, warmup, duration, timeout)
        row["handshakes"] = shakes["handshakes_per_s"]
        return row
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def report(rows, args):
    lines = [
        "# TLS echo: netmux beside asyncio and uvloop",
        "",
        f"`python bench/tls.py --rounds {args.rounds} --warmup {args.warmup:g} --duration {args.duration:g}`: "
        f"one run, the median of {args.rounds} alternating rounds, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}, {os.cpu_count()} cores (shared with other work: compare rows, "
        "not runs). 10 connections, closed-loop echo; handshakes: full TLS 1.3 handshakes "
        "(P-256 certificate, no resumption), 10 at a time; idle RSS: 1,000 connections open "
        "after their handshakes.",
        "",
        "| server | 1 KiB msg/s | 64 KiB msg/s | handshakes/s (plain: connects/s) | idle RSS per connection |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['kind']} | {row['1k']:,.0f} | {row['64k']:,.0f} | {row['handshakes']:,.0f} | "
                     f"{row['idle_rss'] / IDLE_CONNECTIONS / 1024:.1f} KiB |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "tls.md"))
    args = parser.parse_args()
    build_client()
    kinds = ["netmux plain", "netmux TLS", "asyncio TLS"]
    try:
        import uvloop  # noqa: F401
        kinds.append("uvloop TLS")
    except ImportError:
        print("uvloop not installed: its row is left out", file=sys.stderr)
    with tempfile.TemporaryDirectory() as directory:
        certfile, keyfile = make_certificate(directory)
        rounds = [[measure(kind, certfile, keyfile, args.warmup, args.duration) for kind in kinds]
                  for _ in range(args.rounds)]
    rows = [{"kind": kind, **{key: statistics.median(each[index][key] for each in rounds)
                              for key in ("1k", "64k", "handshakes", "idle_rss")}}
            for index, kind in enumerate(kinds)]
    text = report(rows, args)
    print(text)
    with open(args.output, "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
