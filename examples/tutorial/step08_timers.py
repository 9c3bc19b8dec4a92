"""Step 8: time and other threads. A heap of timers and a wake-up socket pair.

    python examples/tutorial/step08_timers.py            # a tick a second to each client, on 127.0.0.1:8008
    python examples/tutorial/step08_timers.py --demo     # timer order, and what the wake-up pair buys

Step 5's loop wakes every 0.1 s to check ``stop()``: it polls. That is both
wasteful and too slow for anything with a deadline (an idle timeout, a retry),
and another thread that wants the loop to do something has to wait for the
next poll. ``Loop`` fixes both, as every event loop does:

* ``call_later(delay, callback)`` pushes (when, sequence, callback) on a heap;
  ``select`` sleeps exactly until the earliest one is due, then it runs;
* ``call_soon_threadsafe(callback)`` appends under a lock and writes one byte
  to a socket pair whose other end the selector watches, so a ``select``
  sleeping forever wakes at once.

``Loop(wakeup=False)`` leaves the byte out, to measure what it buys.
``tick_server`` serves with timers: every client gets a line a second, from
one thread, with no sleep anywhere.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from step01_blocking import make_server, where


class Loop:
    """A selector, a FIFO of callbacks to run soon, a heap of timers, a wake-up pair."""

    def __init__(self, wakeup: bool = True) -> None:
        self.selector = selectors.DefaultSelector()
        self.ready: Deque[Tuple[Callable[..., Any], tuple]] = deque()
        self.timers: List[Tuple[float, int, Callable[..., Any], tuple]] = []
        self.sequence = itertools.count()  # equal deadlines run in the order they were set
        self.lock = threading.Lock()       # guards `ready` against other threads
        self.stopping = False
        self.wakeup = wakeup
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_writer.setblocking(False)  # a full pair means a wake-up is pending already
        self.selector.register(self.wake_reader, selectors.EVENT_READ, self._drain)

    # -- scheduling -------------------------------------------------------
    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            self.ready.append((callback, args))

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        deadline = time.monotonic() + delay
        heapq.heappush(self.timers, (deadline, next(self.sequence), callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        self.call_soon(callback, *args)
        if self.wakeup:
            try:
                self.wake_writer.send(b"\0")   # select() returns: the reader is readable
            except BlockingIOError:
                pass                           # buffer full: a wake-up is pending anyway

    def _drain(self) -> None:
        try:
            while self.wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- sockets ----------------------------------------------------------
    def add_reader(self, sock: socket.socket, callback: Callable[[], Any]) -> None:
        self.selector.register(sock, selectors.EVENT_READ, callback)

    def add_writer(self, sock: socket.socket, callback: Callable[[], Any]) -> None:
        self.selector.register(sock, selectors.EVENT_WRITE, callback)

    def remove(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)

    # -- running ----------------------------------------------------------
    def run_once(self, timeout: Optional[float] = None) -> None:
        """Sleep until I/O, the next timer, or a wake-up; then run what is due."""
        if self.ready:
            timeout = 0
        elif self.timers:
            until_timer = max(0.0, self.timers[0][0] - time.monotonic())
            timeout = until_timer if timeout is None else min(timeout, until_timer)
        for key, events in self.selector.select(timeout):
            key.data()
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, callback, args = heapq.heappop(self.timers)
            self.call_soon(callback, *args)
        with self.lock:
            batch, self.ready = self.ready, deque()
        for callback, args in batch:           # what is queued now; new ones run next turn
            callback(*args)

    def run(self, timeout: Optional[float] = None) -> None:
        """Run until ``stop()``; ``timeout`` caps each sleep (for measurement only)."""
        self.stopping = False
        while not self.stopping:
            self.run_once(timeout)

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        self.selector.close()
        self.wake_reader.close()
        self.wake_writer.close()


def tick_server(loop: Loop, listener: socket.socket, interval: float = 1.0) -> None:
    """Send each client ``b"tick N\\n"`` every ``interval`` s, until it hangs up."""
    def tick(conn: socket.socket, n: int) -> None:
        if conn.fileno() < 0:
            # the client hung up: this timer chain ends here
            return
        try:
            conn.send(b"tick %d\n" % n)
        except (BlockingIOError, ConnectionError):
            # a full buffer skips a tick; a reset ends below
            pass
        loop.call_later(interval, tick, conn, n + 1)

    def readable(conn: socket.socket) -> None:
        try:
            if conn.recv(4096):
                return                     # what the client types is ignored
        except BlockingIOError:
            return
        except ConnectionError:
            pass
        loop.remove(conn)                  # EOF or reset: forget it, close it
        conn.close()

    def accept() -> None:
        conn, _ = listener.accept()
        conn.setblocking(False)
        loop.add_reader(conn, lambda: readable(conn))
        tick(conn, 1)

    listener.setblocking(False)
    loop.add_reader(listener, accept)


def run_in_thread(loop: Loop) -> Callable[[], None]:
    """Run ``loop`` in a thread; return what stops it and closes the loop's sockets."""
    thread = threading.Thread(target=loop.run)
    thread.start()

    def stop() -> None:
        # the wake-up pair: select returns at once
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        for key in list(loop.selector.get_map().values()):
            if key.fileobj is not loop.wake_reader:
                key.fileobj.close()
        loop.close()
    return stop


def timer_order(delays: List[float]) -> List[float]:
    """Set a timer per delay; return the delays in the order their timers ran."""
    loop = Loop()
    fired: List[float] = []
    try:
        for delay in delays:
            loop.call_later(delay, fired.append, delay)
        loop.call_later(max(delays) + 0.01, loop.stop)
        loop.run()
    finally:
        loop.close()
    return fired


def threadsafe_latency(wakeup: bool, sleep_cap: float = 1.0) -> float:
    """Seconds from another thread's ``call_soon_threadsafe`` to the callback running.

    The loop has nothing to do, so without a wake-up it sleeps ``sleep_cap``.
    """
    loop = Loop(wakeup=wakeup)
    latency: List[float] = []

    def called_back(sent_at: float) -> None:
        latency.append(time.monotonic() - sent_at)
        loop.stop()

    def other_thread() -> None:
        time.sleep(0.2)                    # let the loop fall asleep in select()
        loop.call_soon_threadsafe(called_back, time.monotonic())

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        loop.run(timeout=sleep_cap)
    finally:
        thread.join()
        loop.close()
    return latency[0]


def demo() -> None:
    print("timers set for 0.03, 0.01, 0.02 s ran in the order", timer_order([0.03, 0.01, 0.02]))
    print("another thread calls call_soon_threadsafe 0.2 s into the loop's 1 s select:")
    for wakeup in (False, True):
        latency = threadsafe_latency(wakeup)
        print(f"  {'with' if wakeup else 'without'} the wake-up pair, the callback "
              f"ran {latency * 1000:.1f} ms after the call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8008)
    parser.add_argument("--demo", action="store_true", help="run the measurements and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    loop = Loop()
    with make_server(port=args.port) as listener:
        tick_server(loop, listener)
        print(f"a tick a second to each client on {where(listener)}; Ctrl-C stops", flush=True)
        try:
            loop.run()
        except KeyboardInterrupt:
            pass
        finally:
            loop.close()


if __name__ == "__main__":
    main()
