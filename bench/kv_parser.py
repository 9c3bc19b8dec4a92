#!/usr/bin/env python3
"""Instructions per command of kv's RESP parser (netmux/apps/resp.py), this tree beside a git revision.

    python bench/kv_parser.py                 # against main
    python bench/kv_parser.py --rev HEAD~3    # against any revision

The parser is the part of kv that a pipelining client (``redis-benchmark -P 16``)
exercises per command; wall-clock timings of it move 10-50 % on a shared machine,
callgrind's instruction count does not. Each stream is parsed twice under
callgrind (``LOW`` and ``HIGH`` feeds); the difference of the counts divided by the
difference in commands is the cost of one command, start-up excluded (the method of
bench/instructions/). Needs valgrind and git; touches nothing outside a temp dir.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOW, HIGH = 20, 220


def encode(*command):
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)


STREAMS = {     # name -> (bytes of one feed, commands in it), as redis-benchmark and nc send them
    "SET+GET, -P 16": ((encode(b"SET", b"key:000000000042", b"xxx") + encode(b"GET", b"key:000000000042")) * 8, 16),
    "MSET 10 keys, -P 16": (encode(b"MSET", *[b"key:000000000042", b"xxx"] * 10) * 16, 16),
    "inline PING x16": (b"PING\r\n" * 16, 16),
    "inline quoted SET x16": (b'SET "a key" "a\\x41 value"\r\n' * 16, 16),
}

RUNNER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("resp", sys.argv[1])
resp = importlib.util.module_from_spec(spec); spec.loader.exec_module(resp)
data, feeds = bytes.fromhex(sys.argv[2]), int(sys.argv[3])
for _ in range(feeds):
    resp.RespParser().feed(data)
"""


def instructions(path, data, feeds, workdir):
    out = os.path.join(workdir, "callgrind.out")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", RUNNER,
                    path, data.hex(), str(feeds)], check=True, capture_output=True, timeout=600,
                   env=dict(os.environ, PYTHONHASHSEED="0"))       # dict probes the same run after run
    with open(out) as file:
        return int(re.search(r"^summary: (\d+)", file.read(), re.M).group(1))


def per_command(path, data, commands, workdir):
    return (instructions(path, data, HIGH, workdir) - instructions(path, data, LOW, workdir)) / ((HIGH - LOW) * commands)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="main", help="the git revision to compare with (default: main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        old = os.path.join(workdir, "resp_old.py")
        with open(old, "wb") as file:
            file.write(subprocess.run(["git", "show", f"{args.rev}:netmux/apps/resp.py"], cwd=ROOT,
                                      check=True, capture_output=True).stdout)
        new = os.path.join(ROOT, "netmux", "apps", "resp.py")
        print(f"| stream | {args.rev} | this tree | change |\n|---|---:|---:|---:|")
        for name, (data, commands) in STREAMS.items():
            before, after = (per_command(path, data, commands, workdir) for path in (old, new))
            print(f"| {name} | {before:,.0f} | {after:,.0f} | {after / before - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
