#!/usr/bin/env python3
"""User-space instructions per echoed message, counted by valgrind's callgrind.

    python bench/instructions/instructions.py [--conns 50] [--servers netmux,selectors,asyncio,uvloop]
    (also: netmux-stream, asyncio-streams, uvloop-streams: the same echo as a coroutine;
    netmux-line: as a LineHandler, the client's messages ending in a newline)

Wall-clock throughput on a shared 2-core machine moves 10-50 % from run to
run; callgrind's instruction count does not (the same figure to within 0.5 %
run after run). Each server runs twice under callgrind, serving a closed-loop
client (client.py: CONNS connections × 1 KiB messages) for 40 and for 240
messages per connection; the difference of the two counts divided by the
difference in messages is the cost of one message, start-up excluded. It counts
what the server process executes in user space (Python and C), not the
kernel's send/recv work, which is the same for every server. Needs valgrind
(Debian: apt-get install valgrind).
"""
import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    """A port nothing listens on now: runs of this script (a CI guard, a developer's
    bench) may overlap, so no fixed port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PYTHON = os.path.realpath(sys.executable)   # not a pyenv shim: valgrind must run Python itself


@contextlib.contextmanager
def callgrind(argv, out, wait=600, **popen):
    """Run ``argv`` under valgrind's callgrind, counting into ``out``: yields the
    process (its stdout piped). Leaving waits ``wait`` s for it to end (the body
    made it end) and kills it if it did not, so no server outlives a failed run."""
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **popen)
    try:
        yield server
        server.wait(wait)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()


def total(out):
    """The instruction total callgrind wrote to ``out``."""
    with open(out) as result:
        match = re.search(r"^(?:summary|totals): (\d+)", result.read(), re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def count(kind, conns, per_connection, workdir):
    """User-space instructions the ``kind`` server executes for one closed-loop run."""
    out = os.path.join(workdir, f"{kind}-{per_connection}.out")
    port = free_port()
    with callgrind([PYTHON, os.path.join(HERE, "servers.py"), kind, str(port), str(conns)], out) as server:
        assert server.stdout.readline().strip() == b"READY", f"{kind} did not start"
        subprocess.run([sys.executable, os.path.join(HERE, "client.py"), str(conns), str(per_connection),
                        str(port)] + (["line"] if kind.endswith("-line") else []), check=True, timeout=600)
    return total(out), glibc_malloc(out)


def glibc_malloc(out):
    """Instructions spent inside glibc's malloc.c (malloc, free, _int_malloc, ...).

    They move with the heap's layout, not with our code: a comment added to a
    module changes the size of its code objects, and with them how glibc
    splits and merges chunks; that alone moved the total per message by 2 %
    once. The guard leaves them out so it tracks what the code executes.
    """
    annotated = subprocess.run(["callgrind_annotate", "--threshold=100", out], capture_output=True,
                               text=True, check=True).stdout
    total = 0
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+)\s.*malloc/malloc\.c:\S+ \[.*libc\.so", line)
        if match:
            total += int(match.group(1).replace(",", ""))
    return total


def per_message(kind, conns, workdir, without_malloc=False):
    """Instructions per echoed message: two runs of different lengths, start-up cancelled
    out; ``without_malloc`` leaves out glibc's allocator (see ``glibc_malloc``)."""
    low, low_malloc = count(kind, conns, 40, workdir)
    high, high_malloc = count(kind, conns, 240, workdir)
    if without_malloc:
        low, high = low - low_malloc, high - high_malloc
    return (high - low) / (conns * 200)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--servers", default="netmux,selectors,asyncio,uvloop")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    print(f"| server | instructions per 1 KiB echo ({args.conns} connections) |\n|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for kind in args.servers.split(","):
            if kind.startswith("uvloop"):
                try:
                    import uvloop  # noqa: F401
                except ImportError:
                    print(f"| {kind} | not installed |")
                    continue
            print(f"| {kind} | {per_message(kind, args.conns, workdir):,.0f} |", flush=True)
            time.sleep(0.2)


if __name__ == "__main__":
    main()
