"""Feed throughput of netmux's framers: how fast bytes become frames.

    python bench/bench_framing.py            # the full table (about half a minute)
    python bench/bench_framing.py --quick    # smaller streams, one repeat

For each framer and payload size it builds a stream of encoded frames and feeds
it in fixed-size chunks: 1 byte (the worst case, one ``feed`` call per byte,
what a naive framer would turn quadratic) and 64 KiB (a typical large
``recv``). It prints the best of a few runs as MB/s of stream and frames/s.
Pure computation: no sockets, so the numbers are the framer's own cost.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from netmux.framing import LengthPrefixFramer, LineFramer, NetstringFramer  # noqa: E402

FRAMERS: List[Tuple[str, Callable[[], object]]] = [
    ("line \\n", lambda: LineFramer(b"\n")),
    ("line \\r\\n", lambda: LineFramer(b"\r\n")),
    ("netstring", lambda: NetstringFramer()),
    ("prefix !I", lambda: LengthPrefixFramer("!I")),
]
PAYLOADS = [16, 1000]
CHUNKS = [1, 64 * 1024]


def make_stream(make: Callable[[], object], payload: int, size: int) -> Tuple[bytes, int]:
    """About ``size`` bytes of encoded frames of ``payload`` bytes; the stream and frame count."""
    frame = (b"abcdefghijklmnopqrstuvwxyz" * (payload // 26 + 1))[:payload]
    encoded = make().encode(frame)  # type: ignore[attr-defined]
    count = max(1, size // len(encoded))
    return encoded * count, count


def run(make: Callable[[], object], chunks: List[bytes], frames: int) -> float:
    framer = make()
    feed = framer.feed  # type: ignore[attr-defined]
    received = 0
    start = time.perf_counter()
    for chunk in chunks:
        received += len(feed(chunk))
    elapsed = time.perf_counter() - start
    assert received == frames, (received, frames)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams, one repeat")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    stream_size = {1: (128 if args.quick else 1024) * 1024, 64 * 1024: (8 if args.quick else 64) << 20}

    print(f"Python {sys.version.split()[0]}, best of {repeats}")
    print(f"{'framer':<12}{'payload':>8}{'chunk':>9}{'stream':>10}{'MB/s':>10}{'frames/s':>13}")
    for name, make in FRAMERS:
        for payload in PAYLOADS:
            for chunk_size in CHUNKS:
                stream, frames = make_stream(make, payload, stream_size[chunk_size])
                chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
                best = min(run(make, chunks, frames) for _ in range(repeats))
                label = "1 B" if chunk_size == 1 else f"{chunk_size // 1024} KiB"
                print(f"{name:<12}{payload:>8}{label:>9}{len(stream) / 1e6:>8.1f}MB"
                      f"{len(stream) / best / 1e6:>10.1f}{frames / best:>13,.0f}")


if __name__ == "__main__":
    main()
