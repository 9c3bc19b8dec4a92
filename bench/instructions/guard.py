#!/usr/bin/env python3
"""CI guard on the hot path: fail when the callback echo costs more instructions.

    python bench/instructions/guard.py          # exit 1 above budget.json's budget + tolerance

Counts what instructions.py counts (callgrind, user space, the netmux echo
server, 50 connections x 1 KiB messages), less the instructions spent inside
glibc's malloc.c, and compares it with the budget kept beside it. glibc's
allocator is left out because its cost moves with the heap's layout, not with
our code: a comment added to reactor.py once moved the total by 2 %, all of it
in _int_malloc (instructions.py, ``glibc_malloc``); without it, repeated runs
of different trees agree within about 0.5 %. Instruction counts are deterministic for one interpreter build on
one machine kind, so this is not a timed test: a change that trips it costs
the hot path work, and its commit says why if the budget is raised. On an
interpreter other than the one the budget was measured on it only reports.
"""
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from instructions import per_message  # noqa: E402


def main() -> int:
    with open(os.path.join(HERE, "budget.json")) as file:
        budget = json.load(file)
    if not shutil.which("valgrind"):
        print("instruction guard: valgrind is not installed (apt-get install valgrind)")
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        measured = per_message("netmux", 50, workdir, without_malloc=True)
    limit = budget["netmux_per_message"] * (1 + budget["tolerance"])
    python = "%d.%d" % sys.version_info[:2]
    print(f"instruction guard: {measured:,.0f} instructions per message, glibc malloc aside "
          f"(budget {budget['netmux_per_message']:,}, limit {limit:,.0f}, Python {python})")
    if python != budget["python"]:
        print(f"instruction guard: budget was measured on Python {budget['python']}: report only")
        return 0
    if measured > limit:
        print("instruction guard: FAILED: the callback echo's hot path got more expensive")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
