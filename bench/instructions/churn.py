#!/usr/bin/env python3
"""User-space instructions per churned connection, counted by valgrind's callgrind.

    python bench/instructions/churn.py [--servers netmux_echo,netmux_stream_echo] [--root DIR]

A connection per request (connect, 64 B, echo, close, as bench/run.py's churn
scenario) costs the server an accept, a handler and transport, a read, a write,
an EOF and a close: this counts it. Each server (a script in DIR/bench/servers,
DIR defaulting to this checkout, so an older checkout can be measured the same
way) runs twice under callgrind, serving 200 and then 1,200 connections made
one after another by a client in this process; the difference of the two
counts divided by 1,000 is one connection's cost, start-up excluded.
Syscalls per connection are the other half: ``strace -f -c`` of a server
under ``bench/run.py``'s churn client (bench/README.md).
"""
import argparse
import os
import signal
import socket
import subprocess
import time

from instructions import PYTHON, callgrind, total

HERE = os.path.dirname(os.path.abspath(__file__))


def churn(port, count):
    """``count`` connections one after another: 64 B each way, then close."""
    payload = b"x" * 64
    deadline = time.monotonic() + 600
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(payload)
            got = b""
            while len(got) < 64 and time.monotonic() < deadline:
                chunk = client.recv(64 - len(got))
                if not chunk:
                    raise RuntimeError("the server closed before echoing")
                got += chunk


def count(script, connections, out):
    with callgrind([PYTHON, os.path.basename(script), "0"], out, wait=120,
                   cwd=os.path.dirname(script)) as server:
        line = server.stdout.readline().split()
        assert line[:1] == [b"READY"], f"{script} did not start"
        churn(int(line[1]), connections)
        stop(server)
    return total(out)


def stop(server, tries=24):
    """SIGINT until the server ends: under valgrind one can be lost now and then
    (2 runs in 9 hung until the 120 s timeout with a single SIGINT)."""
    for _ in range(tries):
        server.send_signal(signal.SIGINT)
        try:
            server.wait(5)
            return
        except subprocess.TimeoutExpired:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="netmux_echo,netmux_stream_echo")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(HERE)))
    parser.add_argument("--workdir", default="/tmp")
    args = parser.parse_args()
    for name in args.servers.split(","):
        script = os.path.join(os.path.abspath(args.root), "bench", "servers", name + ".py")
        low = count(script, 200, os.path.join(args.workdir, f"churn-{name}-low.out"))
        high = count(script, 1200, os.path.join(args.workdir, f"churn-{name}-high.out"))
        print(f"{name}: {(high - low) / 1000:,.0f} instructions per connection")


if __name__ == "__main__":
    main()
