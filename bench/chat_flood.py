"""Issue 16's chat row: one member floods ``a\\n``, how long do the others wait?

Against a running ``python -m netmux chat`` (any version): ten members join the
lobby and read everything; one more member sends ``a\\n`` as fast as the server
lets it (in its own process, so the measurement does not share its GIL); every
``--interval`` seconds a newcomer connects (time to its welcome line) and a
standing member asks ``/who`` (time to its answer). Prints one line of numbers:
welcome and ``/who`` latency p50 and max, what the flooder managed to send,
whether it was told and dropped, and how many readers were dropped.

    python -m netmux chat --port 9100 &
    python bench/chat_flood.py --port 9100 --seconds 5

Every loop is bounded by ``--seconds`` (plus a few seconds of grace), and it
talks to 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import statistics
import threading
import time
from typing import List, Optional, Tuple

Address = Tuple[str, int]


def _flood(address: Address, seconds: float, sent_total: "multiprocessing.Value[int]",
           told: "multiprocessing.Value[int]") -> None:
    """Send ``a\\n`` for ``seconds``; count what the kernel took, and read the replies."""
    sock = socket.create_connection(address, timeout=10)
    sock.setblocking(False)
    chunk = b"a\n" * 32768
    received = b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while time.monotonic() < deadline:
            for _, events in selector.select(0.1):
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(65536)
                    except ConnectionError:
                        data = b""
                    if not data:
                        told.value = int(b"! error: too many lines" in received) + 1
                        return
                    received = (received + data)[-4096:]
                if events & selectors.EVENT_WRITE:
                    try:
                        sent_total.value += sock.send(chunk)
                    except BlockingIOError:
                        pass
                    except ConnectionError:
                        told.value = int(b"! error: too many lines" in received) + 1
                        return
    sock.close()


class _Member:
    def __init__(self, address: Address) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.setblocking(False)
        self.pending = b""
        self.closed = False

    def lines(self) -> List[bytes]:
        """Read what is there; return the whole lines."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except ConnectionError:
                data = b""
            if not data:
                self.closed = True
                break
            self.pending += data
        *lines, self.pending = self.pending.split(b"\r\n")
        return lines


def _wait_for(member: _Member, prefix: bytes, deadline: float) -> Optional[float]:
    """Seconds until a line starting with ``prefix`` arrives, None at the deadline or EOF."""
    start = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(member.sock, selectors.EVENT_READ)
        while time.monotonic() < deadline and not member.closed:
            if any(line.startswith(prefix) for line in member.lines()):
                return time.monotonic() - start
            selector.select(0.05)
    return None


class _Asker(threading.Thread):
    """A member that reads everything (in a thread) and times its ``/who`` answers."""

    def __init__(self, address: Address) -> None:
        super().__init__(daemon=True)
        self.member = _Member(address)
        self.answered = threading.Event()
        self.running = True
        self.start()

    def run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.member.sock, selectors.EVENT_READ)
            while self.running and not self.member.closed:
                selector.select(0.05)
                if any(line.startswith(b"* in lobby") for line in self.member.lines()):
                    self.answered.set()

    def ask(self, deadline: float) -> Optional[float]:
        """Seconds until ``/who`` is answered; None at the deadline or once dropped."""
        if self.member.closed:
            return None
        self.answered.clear()
        start = time.monotonic()
        self.member.sock.sendall(b"/who\r\n")
        if self.answered.wait(max(0.0, deadline - start)):
            return time.monotonic() - start
        return None

    def stop(self) -> None:
        self.running = False
        self.join(5)


def _read(address: Address, count: int, seconds: float, ready: "multiprocessing.Event",
          results: "multiprocessing.Queue") -> None:
    """``count`` members that read everything for ``seconds``: (lines heard, dropped) each."""
    readers = [_Member(address) for _ in range(count)]
    heard = [0] * count
    ready.set()
    end = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        for index, reader in enumerate(readers):
            selector.register(reader.sock, selectors.EVENT_READ, index)
        while time.monotonic() < end:
            for key, _ in selector.select(0.05):
                reader = readers[key.data]
                heard[key.data] += sum(1 for line in reader.lines() if line.startswith(b"<"))
                if reader.closed:
                    selector.unregister(reader.sock)
    results.put([(lines, reader.closed) for lines, reader in zip(heard, readers)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    address = (args.host, args.port)

    ready, results = multiprocessing.Event(), multiprocessing.Queue()
    reading = multiprocessing.Process(target=_read, daemon=True,
                                      args=(address, args.readers, args.seconds + 1, ready, results))
    reading.start()
    ready.wait(10)
    asker = _Asker(address)
    time.sleep(0.2)                                   # let the welcomes go by
    sent, told = multiprocessing.Value("q", 0), multiprocessing.Value("i", 0)
    flooder = multiprocessing.Process(target=_flood, args=(address, args.seconds, sent, told), daemon=True)
    flooder.start()
    welcome: List[Optional[float]] = []
    who: List[Optional[float]] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(args.interval)                     # the pace of the probes, not a wait for a result
        newcomer = _Member(address)
        welcome.append(_wait_for(newcomer, b"* welcome", time.monotonic() + 30))
        newcomer.sock.close()
        who.append(asker.ask(time.monotonic() + 30))
    asker.stop()
    flooder.join(args.seconds + 10)
    readers = results.get(timeout=args.seconds + 30)
    reading.join(10)
    heard = [lines for lines, _ in readers]
    dropped = sum(1 for _, closed in readers if closed)

    def summary(samples: List[Optional[float]]) -> str:
        done = [sample * 1000 for sample in samples if sample is not None]
        lost = len(samples) - len(done)
        if not done:
            return f"n={len(samples)} none answered"
        return (f"n={len(samples)} p50={statistics.median(done):.1f} ms max={max(done):.1f} ms"
                + (f" unanswered={lost}" if lost else ""))

    verdict = {0: "still connected", 1: "dropped untold", 2: "told and dropped"}[told.value]
    print(f"welcome: {summary(welcome)}; /who: {summary(who)}; "
          f"flooder sent {sent.value / 1e6:.1f} MB in {args.seconds:g} s, {verdict}; "
          f"readers dropped: {dropped}/{len(readers)}; lines heard per reader: "
          f"min {min(heard)} max {max(heard)}")


if __name__ == "__main__":
    main()
