#!/usr/bin/env python3
"""Instructions per pipelined command over kv's whole server path, this tree beside a git revision.

    python bench/kv_server.py                       # against main, every test
    python bench/kv_server.py --rev HEAD~3 --tests SET,GET
    python bench/kv_server.py --redis --tests SET,GET   # redis-server's count beside them

What ``redis-benchmark -P 16`` costs the server per command, counted by
callgrind rather than timed (wall clock moves 10-50 % on a shared machine):
the reactor's turn, the read, RESP parsing, dispatch, the command, the reply
and its write, in user space (the kernel's share is the same for any server).
A kv server runs under callgrind in a subprocess serving ``CONNS`` connections
of a closed-loop client that sends ``PIPELINE`` commands at a time and waits
for their replies, as redis-benchmark does; it runs twice (``LOW`` and
``HIGH`` batches per connection) and the difference of the counts divided by
the difference in commands is the cost of one command, start-up and
connection set-up cancelled out (the method of bench/instructions/).

The revision's tree is exported to a temp dir (``git archive``), so both are
measured by the same script and interpreter. Only loopback is used; every
client loop is bounded in time.
"""
import argparse
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "instructions"))
from instructions import PYTHON, callgrind, free_port, total  # noqa: E402
CONNS, PIPELINE, LOW, HIGH = 10, 16, 20, 120
KEY = b"key:__rand_int__"           # redis-benchmark's key without -r, taken literally


def encode(*command):
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)


# name -> (one command, the "\n" bytes in its reply): what redis-benchmark sends
TESTS = {
    "SET": (encode(b"SET", KEY, b"xxx"), 1),
    "GET": (encode(b"GET", KEY), 2),
    "INCR": (encode(b"INCR", b"counter:__rand_int__"), 1),
    "MSET (10 keys)": (encode(b"MSET", *[KEY, b"xxx"] * 10), 1),
    "MGET (10 keys)": (encode(b"MGET", *[KEY] * 10), 21),
}

SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
import netmux
from netmux.apps.kv import KVHandler, KVServer
from netmux.apps.kvstore import Store
from netmux.apps.resp import MAX_BULK
expected, closed = int(sys.argv[3]), [0]
store = Store()

class Counted(KVHandler):
    def connection_lost(self, exc):
        super().connection_lost(exc)
        closed[0] += 1
        if closed[0] == expected:
            server.shutdown()

server = KVServer(netmux.TCPServer(("127.0.0.1", int(sys.argv[2])), lambda: Counted(store, MAX_BULK)), store)
print("READY", flush=True)
server.serve_forever()
server.server_close()
"""


def connect(port, deadline):
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:      # redis-server under valgrind: still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def client(port, command, lines, batches, deadline):
    """CONNS connections, each: a SET (so GET finds the key), then ``batches`` pipelines."""
    socks = [connect(port, deadline) for _ in range(CONNS)]
    setup, batch = encode(b"SET", KEY, b"xxx"), command * PIPELINE
    selector = selectors.DefaultSelector()
    state = {}
    for sock in socks:
        sock.sendall(setup)
        state[sock] = [batches, 1, 0]        # batches left to send, lines awaited, lines seen
        selector.register(sock, selectors.EVENT_READ)
    while state:
        if time.monotonic() > deadline:
            raise TimeoutError("the kv server stopped answering")
        for key, _ in selector.select(1):
            sock = key.fileobj
            left = state[sock]
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the kv server closed a connection")
            left[2] += data.count(b"\n")
            if left[2] < left[1]:
                continue
            if left[0] == 0:
                selector.unregister(sock)
                sock.close()
                del state[sock]
                continue
            left[0] -= 1
            left[1], left[2] = lines * PIPELINE, 0
            sock.sendall(batch)
    selector.close()


def count(tree, test, batches, workdir):
    """Instructions of one run of the server from ``tree`` (or redis-server, for ``tree=None``)."""
    out = os.path.join(workdir, "callgrind.out")
    port = free_port()
    program = ([PYTHON, "-c", SERVER, tree, str(port), str(CONNS)] if tree else
               ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"])
    # A fixed hash seed: dict probes, and with them the count, the same run after run.
    with callgrind(program, out, env=dict(os.environ, PYTHONHASHSEED="0")) as server:
        if tree:
            assert server.stdout.readline().strip() == b"READY", "the kv server did not start"
        command, lines = TESTS[test]
        client(port, command, lines, batches, time.monotonic() + 600)
        if not tree:
            subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True, timeout=60)
    return total(out)


def per_command(tree, test, workdir):
    return (count(tree, test, HIGH, workdir) - count(tree, test, LOW, workdir)) / ((HIGH - LOW) * CONNS * PIPELINE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="main", help="the git revision to compare with (default: main)")
    parser.add_argument("--tests", default=",".join(TESTS), help="comma-separated, of: " + ", ".join(TESTS))
    parser.add_argument("--redis", action="store_true", help="also count redis-server, served the same way")
    args = parser.parse_args()
    tests = args.tests.split(",")
    with tempfile.TemporaryDirectory() as workdir:
        old = os.path.join(workdir, "tree")
        os.mkdir(old)
        archive = subprocess.run(["git", "archive", args.rev, "netmux"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        column, rule = (" redis-server |", "---:|") if args.redis else ("", "")
        print(f"| -P {PIPELINE}, {CONNS} connections | {args.rev} | this tree | change |{column}\n"
              f"|---|---:|---:|---:|{rule}")
        for test in tests:
            before, after = (per_command(tree, test, workdir) for tree in (old, ROOT))
            theirs = f" {per_command(None, test, workdir):,.0f} |" if args.redis else ""
            print(f"| {test} | {before:,.0f} | {after:,.0f} | {after / before - 1:+.1%} |{theirs}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
