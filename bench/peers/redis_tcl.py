#!/usr/bin/env python3
"""Redis's own test harness (the tcl suite of redis 7.0) against kv and redis-server, side by side.

    python bench/peers/redis_tcl.py --source ~/src/redis-7.0.15
    python bench/peers/redis_tcl.py                        # fetches the source with apt-get (deb-src needed)
    python bench/peers/redis_tcl.py --units unit/type/string,unit/multi --show-failures 20

The harness runs against any server in its external mode (``./runtest --host H
--port P``). Its source is Debian's ``redis`` source package (the same 7.0.15 as
the redis-server it installs): ``apt-get source --download-only redis`` once a
``deb-src`` line for the Debian release is configured (see bench/README.md), or
any unpacked redis-7.0.x source tree with ``--source``. Needs tclsh (Debian:
tcl) and redis-server on PATH.

Each server gets a fresh process on a free loopback port: redis-server with
``--enable-debug-command yes`` (the harness calls DEBUG) and nothing saved; kv
as ``python -m netmux kv`` of this tree. The harness runs with one client,
``--durable`` (an exception in one test block is counted, the run goes on),
``--ignore-encoding --ignore-digest`` (kv has no object encodings or DEBUG
DIGEST); the tests tagged ``external:skip`` are skipped by the harness itself.
The table counts ``[ok]``, ``[err]`` and ``[exception]`` lines per unit.

As released, the harness opens every test block with ``SELECT 9`` (unless
``--singledb``), ``FLUSHALL`` and ``FUNCTION FLUSH``; a server without these
fails each block's first line. ``--lenient`` runs it with ``--singledb`` and
without the ``FUNCTION FLUSH`` line (a copy of the tree is patched; redis-server
gets the same), which is how far kv gets past the harness's own start.
"""
import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, servers, start_server  # noqa: E402

UNITS = ["unit/type/string", "unit/type/incr", "unit/keyspace", "unit/expire", "unit/protocol", "unit/info",
         "unit/scan", "unit/multi", "unit/pubsub", "unit/quit"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESULT = re.compile(r"^\[(ok|err|exception|skip|ignore)\]: (.*?)(?: \(\d+ ms\))?$")



def fetch_source(workdir):
    """Debian's redis source, unpacked: needs a deb-src line (apt-get source refuses without one)."""
    result = subprocess.run(["apt-get", "source", "--download-only", "redis"], cwd=workdir, capture_output=True,
                            text=True, timeout=600)
    tarballs = glob.glob(os.path.join(workdir, "redis_*.orig.tar.gz"))
    if result.returncode or not tarballs:
        raise SystemExit("apt-get source redis failed (is a deb-src line configured? see bench/README.md):\n"
                         + result.stderr[-1000:])
    with tarfile.open(tarballs[0]) as archive:
        archive.extractall(workdir)
    return glob.glob(os.path.join(workdir, "redis-*/"))[0]




def lenient_copy(source, workdir):
    """A copy of ``source`` whose external-server blocks do not send FUNCTION FLUSH."""
    copy = os.path.join(workdir, "lenient")
    shutil.copytree(source, copy, symlinks=True)
    path = os.path.join(copy, "tests", "support", "server.tcl")
    with open(path) as file:
        text = file.read()
    with open(path, "w") as file:
        file.write(text.replace("    r function flush\n", "", 1))
    return copy


def run_unit(source, unit, port, args):
    """The harness's result lines for one unit: [(status, test name)]."""
    timeout = args.timeout
    command = ["./runtest", "--host", "127.0.0.1", "--port", str(port), "--clients", "1", "--durable",
               "--ignore-encoding", "--ignore-digest", "--timeout", str(timeout), "--single", unit]
    command += ["--singledb"] if args.lenient else []
    try:
        output = subprocess.run(command, cwd=source, capture_output=True, text=True, errors="replace",
                                timeout=timeout + 60).stdout
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") + "\n[exception]: the unit timed out"
    results = []
    for line in output.splitlines():
        match = RESULT.match(ANSI.sub("", line).strip())
        if match:
            results.append((match.group(1), match.group(2)))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="an unpacked redis 7.0 source tree (default: apt-get source redis)")
    parser.add_argument("--units", default=",".join(UNITS), help="comma-separated test units")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per unit")
    parser.add_argument("--lenient", action="store_true", help="--singledb and no FUNCTION FLUSH (see above)")
    parser.add_argument("--show-failures", type=int, default=0, help="list kv's first N failing tests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        source = args.source or fetch_source(workdir)
        if args.lenient:
            source = lenient_copy(source, workdir)
        table, failing = [], []
        for unit in args.units.split(","):
            row = [unit]
            for name, command in servers("--enable-debug-command", "yes").items():
                port = free_port()
                process = start_server(command(port), port, workdir)
                try:
                    results = run_unit(source, unit, port, args)
                finally:
                    process.terminate()
                    process.wait(30)
                counts = collections.Counter(status for status, _ in results)
                row.append(f"{counts['ok']} / {counts['err']} / {counts['exception']}")
                if name == "netmux kv":
                    failing += [f"{unit}: [{status}] {test}" for status, test in results if status in ("err", "exception")]
            table.append(row)
    print("| unit | redis-server: ok / err / exception | netmux kv: ok / err / exception |\n|---|---|---|")
    print("\n".join("| " + " | ".join(row) + " |" for row in table))
    for line in failing[:args.show_failures]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
