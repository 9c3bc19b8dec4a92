"""An echo server that reports its own memory: used by bench/memory.py.

    python memory_server.py KIND MODE [PORT]
    KIND: netmux | asyncio-protocol | asyncio-streams | uvloop-protocol | selectors
    MODE: heap (tracemalloc on: traced Python heap) | rss (tracemalloc off: clean RSS)

Serves on 127.0.0.1 and prints "READY <port>". Each line "measure" on stdin
makes a control thread run gc.collect() and print one JSON line: traced heap
bytes (heap mode), RSS bytes, open descriptors and the process CPU seconds
(before and after the collection).
The control thread only reads counters; the server runs in the main thread.
"""
import gc
import json
import os
import sys
import threading
import tracemalloc

KIND, MODE = sys.argv[1], sys.argv[2]
if MODE == "heap":
    tracemalloc.start()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.argv = [sys.argv[0]] + sys.argv[3:]     # the servers read their port from argv[1]


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def control():
    for line in sys.stdin:
        if line.strip() != "measure":
            continue
        t = os.times()     # before gc.collect(), whose own work is not the server's
        gc.collect()
        out = {
            "heap": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
            "rss": rss_bytes(),
            "fds": len(os.listdir("/proc/self/fd")),
            "cpu": t.user + t.system,
        }
        t = os.times()
        out["cpu_end"] = t.user + t.system
        print(json.dumps(out), flush=True)


threading.Thread(target=control, daemon=True).start()

if KIND == "netmux":
    import runpy
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "netmux_echo.py"),
                   run_name="__main__")
elif KIND in ("asyncio-protocol", "asyncio-streams", "uvloop-protocol", "selectors"):
    import runpy
    script = {"asyncio-protocol": "asyncio_protocol.py", "asyncio-streams": "asyncio_streams.py",
              "uvloop-protocol": "uvloop_protocol.py", "selectors": "selectors_echo.py"}[KIND]
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), script),
                   run_name="__main__")
else:
    sys.exit(f"unknown server kind {KIND!r}")
