#!/usr/bin/env python3
"""kv against redis-server 7, at scale: tests/test_app_kv_differential.py with many more examples.

    python bench/kv_differential.py                  # 2,000 examples per test
    python bench/kv_differential.py --examples 20000 # the long run

The CI run of that file draws a few hundred examples (derandomized: always the
same); this one draws ``--examples`` per test, still derandomized, so a run is
repeatable and a larger count includes more of the space, not a different one.
Needs redis-server on PATH. Prints each test's outcome and how many commands
(requests, for the raw streams) went to both servers and were compared.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples per test (default: 2000)")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("r", suffix=".tally") as tally:
        env = dict(os.environ, KV_DIFFERENTIAL_EXAMPLES=str(args.examples), KV_DIFFERENTIAL_TALLY=tally.name,
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), NETMUX_REQUIRE_CLIENTS="1")
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                                 "-o", "timeout=0", "tests/test_app_kv_differential.py"], cwd=ROOT, env=env,
                                capture_output=True, text=True)
        elapsed = time.monotonic() - started
        compared = sum(int(line) for line in tally.read().split())
    outcomes = [line for line in result.stdout.splitlines() if line.startswith(("PASSED", "FAILED", "ERROR"))]
    print("\n".join(outcomes) or result.stdout[-3000:])
    if result.returncode:
        print(result.stdout[-6000:])
    print(f"{args.examples} examples per test, {compared:,} commands compared in {elapsed:.0f} s: "
          f"{'no difference' if result.returncode == 0 else 'DIFFERENCES (above)'}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
