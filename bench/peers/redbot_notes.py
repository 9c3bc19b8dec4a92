#!/usr/bin/env python3
"""REDbot's notes on netmux's http server beside nginx's, both serving the same directory.

    python -m venv /tmp/redbot && /tmp/redbot/bin/pip install redbot     # REDbot 2.x, httplint
    /tmp/redbot/bin/python bench/peers/redbot_notes.py                         # prints, and writes
                                                                         # bench/results/http-redbot.md
    /tmp/redbot/bin/python bench/peers/redbot_notes.py --netmux-tree ../main   # another checkout's netmux

REDbot (redbot.org's lint for HTTP) fetches a URL, then makes its own follow-up
requests (If-None-Match and If-Modified-Since with the validators it got, a
Range, gzip) and notes what it sees, each note with a level: good, info,
warning, bad. It needs no network here: it only talks to 127.0.0.1 (its
``enable_local_access``, as its command line sets it).

For each case (a file, a sendfile()d file, a directory, a directory without
its slash, a range, several ranges, a conditional request, a 404, a HEAD), the
script asks both servers and prints REDbot's notes side by side. netmux is
*worse* on a case when it has a warning or bad note that nginx has not (or at a
lower level), or lacks a good note that nginx has; the exit code is 1 then.

The servers: nginx 1.x in the foreground (one process, its defaults, the same
types netmux gives these files), and ``python3 -m netmux http --root DIR``
from ``--netmux-tree`` (default: this checkout) run by ``--netmux-python``
(default: python3, which must have h11; REDbot's interpreter need not). The
directory is made here: a small text file, a 256 KiB file, a directory with
an index.html; their mtime is a day ago. Everything is bounded in time.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import thor
from redbot.resource import HttpResource

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))
from nginxpeer import nginx_argv  # noqa: E402  (nginx as tests/test_app_http_nginx.py runs it)
RESULTS = os.path.join(REPO, "bench", "results", "http-redbot.md")

#: (name, method, path, request headers)
CASES: List[Tuple[str, str, str, List[Tuple[str, str]]]] = [
    ("a file", "GET", "/hello.txt", []),
    ("a 256 KiB file (sendfile)", "GET", "/digits.bin", []),
    ("a directory", "GET", "/docs/", []),
    ("a directory without its /", "GET", "/docs", []),
    ("a range", "GET", "/digits.bin", [("Range", "bytes=0-99")]),
    ("several ranges", "GET", "/digits.bin", [("Range", "bytes=0-99,1000-1099")]),
    ("If-None-Match: *", "GET", "/hello.txt", [("If-None-Match", "*")]),
    ("a 404", "GET", "/missing", []),
    ("HEAD of a file", "HEAD", "/hello.txt", []),
]
LEVELS = {"good": 0, "info": 1, "warning": 2, "bad": 3}
Note = Tuple[str, str, str]          # (level, class name, summary)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_site(root: str) -> None:
    files = {"hello.txt": b"hello, file\n", "digits.bin": bytes(range(256)) * 1024,
             "docs/index.html": b"<!doctype html>\n<title>docs</title><h1>docs</h1>\n"}
    mtime = int(time.time()) - 86400
    for name, content in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(content)
        os.utime(path, (mtime, mtime))


def start(argv: List[str], port: int, env: Optional[Dict[str, str]] = None,
          cwd: Optional[str] = None) -> "subprocess.Popen[bytes]":
    """Start a server and wait (10 s at most) until it accepts."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                raise SystemExit(f"{argv[0]} did not start: {' '.join(argv)}")
            time.sleep(0.05)


def stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redbot_notes(url: str, method: str, headers: Sequence[Tuple[str, str]]) -> List[Note]:
    """REDbot's notes on one request, from a child process of this script (``--one``):
    thor's loop, run again in one process, left a check after a large file hanging."""
    argv = [sys.executable, os.path.abspath(__file__), "--one", json.dumps([url, method, list(headers)])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    if done.returncode != 0:
        return [("bad", "RedbotFailed", done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?")]
    return [(level, name, summary) for level, name, summary in json.loads(done.stdout)]


def one_check(url: str, method: str, headers: Sequence[Tuple[str, str]]) -> List[Note]:
    """REDbot's notes on one request (its follow-up checks included), subnotes flattened."""
    config = configparser.ConfigParser()
    config.read_dict({"redbot": {"enable_local_access": "True"}})
    resource = HttpResource(config["redbot"])
    resource.set_request(url, method=method, headers=list(headers))

    @thor.events.on(resource)
    def check_done() -> None:
        thor.stop()

    timer = thor.schedule(60, thor.stop)           # bounded: REDbot's own timeouts are longer
    resource.check()
    thor.run()
    timer.delete()
    if resource.fetch_error is not None:
        return [("bad", "FetchError", str(resource.fetch_error))]
    notes: List[Note] = []
    pending: List[Any] = list(resource.response.notes)
    while pending:
        note = pending.pop(0)
        notes.append((note.level.value, type(note).__name__, str(note.summary)))
        pending[:0] = note.subnotes
    return notes


def worse(ours: List[Note], theirs: List[Note]) -> List[str]:
    """What netmux's notes have that is worse than nginx's, by note class."""
    their_levels = {name: LEVELS[level] for level, name, _ in theirs}
    our_levels = {name: LEVELS[level] for level, name, _ in ours}
    found = [f"{level}: {summary}" for level, name, summary in ours
             if LEVELS[level] >= 2 and their_levels.get(name, 0) < LEVELS[level]]
    found += [f"missing good note: {summary}" for level, name, summary in theirs
              if level == "good" and name not in our_levels]
    return found


def report(results: List[Tuple[str, str, str, List[Note], List[Note]]], netmux_tree: str) -> Tuple[str, int]:
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    import redbot
    lines = ["# REDbot on netmux http and nginx, the same directory",
             "", f"`{' '.join(sys.argv)}`: REDbot {getattr(redbot, '__version__', '?')}, {nginx_version}, "
             f"netmux from `{netmux_tree}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    bad = 0
    for case, method, path, ours, theirs in results:
        lines += [f"## {case}: `{method} {path}`", "", "| netmux | nginx |", "|---|---|"]
        by_class = [{name: f"{level}: {summary}" for level, name, summary in notes} for notes in (ours, theirs)]
        names = [name for _, name, _ in ours] + [name for _, name, _ in theirs if name not in by_class[0]]
        for name in dict.fromkeys(names):                    # one row per note, side by side
            lines.append(f"| {by_class[0].get(name, '')} | {by_class[1].get(name, '')} |")
        problems = worse(ours, theirs)
        bad += bool(problems)
        lines += ["", "netmux worse than nginx: " + ("; ".join(problems) if problems else "no"), ""]
    lines.append(f"Cases where netmux is worse: {bad} of {len(results)}.")
    return "\n".join(lines) + "\n", bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netmux-tree", default=REPO, help="the checkout whose netmux runs (default: this one)")
    parser.add_argument("--netmux-python", default="python3", help="the interpreter netmux runs on (needs h11)")
    parser.add_argument("--output", default=RESULTS, help=f"the report's file (default: {RESULTS}; '-': none)")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # [url, method, headers]: one check, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_check(*json.loads(args.one))))
        return 0
    with tempfile.TemporaryDirectory(prefix="redbot-peers-") as workdir:
        root = os.path.join(workdir, "root")
        make_site(root)
        ports = {"netmux": free_port(), "nginx": free_port()}
        tree = os.path.abspath(args.netmux_tree)       # the working directory too: -m looks there first
        servers = [start([args.netmux_python, "-m", "netmux", "http", "--root", root, "--port", str(ports["netmux"]),
                          "--log-level", "WARNING"], ports["netmux"], dict(os.environ, PYTHONPATH=tree), tree)]
        try:
            servers.append(start(nginx_argv(ports["nginx"], workdir, root), ports["nginx"]))
            results = []
            for case, method, path, headers in CASES:
                print(f"REDbot: {case}", file=sys.stderr, flush=True)
                notes = {name: redbot_notes(f"http://127.0.0.1:{port}{path}", method, headers)
                         for name, port in ports.items()}
                results.append((case, method, path, notes["netmux"], notes["nginx"]))
        finally:
            for server in servers:
                stop(server)
    text, bad = report(results, args.netmux_tree)
    print(text)
    if args.output != "-":
        with open(args.output, "w") as file:
            file.write(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
