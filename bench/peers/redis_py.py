#!/usr/bin/env python3
"""redis-py's own tests against kv and redis-server, side by side.

    python bench/peers/redis_py.py                     # fetch the sdist of the installed redis-py, run, print the table
    python bench/peers/redis_py.py --sdist redis-8.2.0.tar.gz --suites strings-keys,pubsub --failures 15

redis-py's sdist ships its test suite (tests/, with a ``--redis-url`` option).
This script unpacks it in a temp dir, starts redis-server (``--save ""``) and
``python -m netmux kv`` of this tree on free loopback ports, runs each suite
against each server with ``--protocol 2`` (kv speaks RESP2 only; redis-server is
asked the same), reads pytest's JUnit XML and prints one Markdown table: tests
passed / failed / errors / skipped per server. ``--failures N`` adds kv's N most
frequent failure messages (first line), which is the list of what to build next.

redis-py's session start reads INFO's ``arch_bits``, ``cluster_enabled`` and
``enterprise`` and stops the whole run without them (KeyError). As released,
the suite is run as it is; ``--lenient-session`` patches those three reads to
redis-py's own defaults for a server it cannot reach (64, no, no), so a server
without them still gets its tests run (redis-server's counts do not change).

Suites (test files and, for test_commands.py, the part of it between two of its
section comments):

* ``strings-keys``: test_commands.py from "BASIC KEY COMMANDS" to "LIST COMMANDS"
  (strings, keys, expiry, bits, counters);
* ``pipeline``: test_pipeline.py (redis-py pipelines: MULTI/EXEC by default);
* ``pubsub``: test_pubsub.py.

Needs: redis-server on PATH, pip (to fetch the sdist unless ``--sdist``), and the
test dependencies of the sdist (pytest, pytest-timeout, packaging, numpy for a few).
Each pytest run is bounded (``--timeout`` per test, ``--run-timeout`` per run).
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, servers, start_server  # noqa: E402

SUITES = {
    "strings-keys": ("tests/test_commands.py", "# BASIC KEY COMMANDS", "# LIST COMMANDS"),
    "pipeline": ("tests/test_pipeline.py", None, None),
    "pubsub": ("tests/test_pubsub.py", None, None),
}


def fetch_sdist(workdir):
    """The sdist of the installed redis-py (its tests match the client that runs them)."""
    import redis
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
                    f"redis=={redis.__version__}", "-d", workdir], check=True, timeout=600)
    return glob.glob(os.path.join(workdir, "redis-*.tar.gz"))[0]


def unpack(sdist, workdir):
    with tarfile.open(sdist) as archive:
        archive.extractall(workdir)
    return glob.glob(os.path.join(workdir, "redis-*/"))[0]


def lenient_session(tree):
    """Let the session start without INFO's arch_bits, cluster_enabled, enterprise."""
    path = os.path.join(tree, "tests", "conftest.py")
    with open(path) as file:
        text = file.read()
    for field, default in (("arch_bits", "64"), ("cluster_enabled", "False"), ("enterprise", "False")):
        text = text.replace(f'= info["{field}"]\n', f'= info.get("{field}", {default})\n')   # reads only
    with open(path, "w") as file:
        file.write(text)


def node_ids(tree, path, start, stop):
    """The test ids of ``path``, or of its test methods between two section comments."""
    if start is None:
        return [path]
    ids, inside, cls = [], False, None
    with open(os.path.join(tree, path)) as file:
        for line in file:
            cls = re.match(r"class (\w+)", line).group(1) if line.startswith("class ") else cls
            inside = (inside or line.strip() == start) and line.strip() != stop
            test = re.match(r"    (?:async )?def (test_\w+)", line)
            if inside and test:
                ids.append(f"{path}::{cls}::{test.group(1)}")
    return ids




def run_suite(tree, ids, port, args, report):
    """Run pytest on ``ids`` against the server on ``port``; JUnit XML to ``report``."""
    with tempfile.NamedTemporaryFile("w", suffix=".args", delete=False) as listing:
        listing.write("\n".join(ids))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=", "--protocol", "2",
               f"--redis-url=redis://127.0.0.1:{port}/0", f"--junitxml={report}", f"--timeout={args.timeout}",
               f"@{listing.name}"]
    try:
        result = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=args.run_timeout)
        return result.stdout[-2000:] + result.stderr[-2000:]
    except subprocess.TimeoutExpired:
        return f"the run took over {args.run_timeout} s: stopped"
    finally:
        os.unlink(listing.name)


def outcomes(report):
    """passed, failed, errors, skipped and the failure messages, from JUnit XML."""
    counts, messages = collections.Counter(), collections.Counter()
    if not os.path.exists(report):
        return counts, messages
    for case in ElementTree.parse(report).iter("testcase"):
        fault = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(fault.tag if fault is not None else "", "passed")
        counts[kind] += 1
        if kind in ("failed", "errors"):
            messages[(fault.get("message") or "").splitlines()[0][:140] if fault.get("message") else "?"] += 1
    return counts, messages


def cell(counts):
    if not counts:
        return "did not run"
    return f"{counts['passed']} / {counts['failed']} / {counts['errors']} / {counts['skipped']}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", help="redis-py's sdist (default: pip download the installed version's)")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of: {', '.join(SUITES)}")
    parser.add_argument("--lenient-session", action="store_true",
                        help="let redis-py's session start without INFO's arch_bits, cluster_enabled, enterprise")
    parser.add_argument("--failures", type=int, default=10, help="kv's most frequent failure messages to list")
    parser.add_argument("--timeout", type=int, default=30, help="seconds per test (pytest-timeout)")
    parser.add_argument("--run-timeout", type=int, default=900, help="seconds per pytest run")
    args = parser.parse_args()
    rows, kv_messages = [], collections.Counter()
    with tempfile.TemporaryDirectory() as workdir:
        tree = unpack(args.sdist or fetch_sdist(workdir), workdir)
        if args.lenient_session:
            lenient_session(tree)
        for suite in args.suites.split(","):
            ids = node_ids(tree, *SUITES[suite])
            row = [suite]
            for name, command in servers().items():
                port = free_port()
                process = start_server(command(port), port, workdir)
                report = os.path.join(workdir, f"{suite}-{name}.xml")
                try:
                    tail = run_suite(tree, ids, port, args, report)
                finally:
                    process.terminate()
                    process.wait(30)
                counts, messages = outcomes(report)
                if not counts:
                    last = [line for line in tail.splitlines() if "Error" in line][-1:] or tail.splitlines()[-1:]
                    print(f"{suite} on {name}: no report; pytest said: {' '.join(last)}", file=sys.stderr)
                if name == "netmux kv":
                    kv_messages += messages
                row.append(cell(counts))
                if name == "redis-server":
                    row.insert(1, str(sum(counts.values())))
            rows.append(row)
    print("| suite | tests | redis-server: passed / failed / errors / skipped | netmux kv: passed / failed / errors / skipped |")
    print("|---|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.failures and kv_messages:
        print(f"\nkv's {args.failures} most frequent failure messages:")
        for message, count in kv_messages.most_common(args.failures):
            print(f"  {count:4d}  {message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
