"""The reactor: one thread, one selector, callbacks.

Where it sits: at the bottom. It owns a ``selectors.DefaultSelector`` (epoll on
Linux), a FIFO queue of callbacks to run soon, a heap of timers, and a wake-up
socket pair that lets other threads interrupt a blocked ``select``. It knows
nothing about TCP, handlers or protocols; transports and servers above it ask it
to call them back when a file descriptor is readable or writable, or when a
moment has come.

One turn of the loop (``run_once``), the same shape as redis' ``ae.c``:

1. sleep in ``select`` until a descriptor is ready, or the nearest timer is due,
   or for no time at all when callbacks are already queued;
2. call the reader, then the writer, of every ready descriptor, directly: the
   hot path (readable -> recv -> handler -> send) never goes through a queue;
3. move every timer that has come due to the ready queue;
4. run the callbacks that were queued by then, in FIFO order. Callbacks queued
   while these run wait for the next turn, so one busy callback cannot starve
   I/O.

What it never does: block anywhere but in ``select``, or let a callback's
exception escape. A raising callback is logged once on the ``netmux`` logger at
ERROR level with its traceback, and the loop goes on.
"""
from __future__ import annotations

import heapq
import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

__all__ = ["Reactor", "Timer"]

logger = logging.getLogger("netmux")

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE

# Rebuild the timer heap once cancelled timers are this many and over half of it,
# so a program that keeps arming and cancelling timeouts holds O(live timers).
_MIN_CANCELLED_TO_PURGE = 100


class Timer:
    """A callback scheduled on a reactor: returned by ``call_soon``/``call_later``/``call_at``.

    ``cancel()`` makes sure it will not run; cancelling twice, or after it ran,
    does nothing.
    """

    __slots__ = ("when", "_callback", "_args", "_reactor", "_cancelled", "_in_heap")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple,
                 reactor: "Reactor") -> None:
        self.when = when
        self._callback = callback
        self._args = args
        self._reactor = reactor
        self._cancelled = False
        self._in_heap = False

    def cancel(self) -> None:
        """Stop the callback from running (it and its arguments are released at once)."""
        if self._cancelled:
            return
        self._cancelled = True
        self._callback = self._args = None
        if self._in_heap:
            self._reactor._timer_cancelled()

    def cancelled(self) -> bool:
        """True once ``cancel()`` has been called."""
        return self._cancelled

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else getattr(self._callback, "__qualname__", self._callback)
        return f"<Timer when={self.when:.3f} {state}>"


class _WakeupSocketPair:
    """Lets any thread interrupt a ``select`` that may be sleeping forever.

    Both ends are non-blocking: ``wakeup()`` from a thread (or a signal handler)
    must never block, and when the kernel buffer is full a wake-up is already
    pending, so the byte can be dropped. The reading end is drained completely
    each time it fires, so it can never make the loop spin.
    """

    def __init__(self) -> None:
        self.read_sock, self.write_sock = socket.socketpair()
        self.read_sock.setblocking(False)
        self.write_sock.setblocking(False)

    def wakeup(self) -> None:
        try:
            self.write_sock.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # buffer full: a wake-up is pending already
        except OSError:
            pass  # closed during shutdown: nobody is waiting any more

    def drain(self) -> None:
        try:
            while self.read_sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        self.read_sock.close()
        self.write_sock.close()


class Reactor:
    """A single-threaded event loop around ``selectors.DefaultSelector``.

    Everything but ``call_soon_threadsafe`` and ``stop`` must be called from the
    thread that runs the reactor (or before it runs).
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._ready: Deque[Timer] = deque()
        self._timers: List[Tuple[float, int, Timer]] = []
        self._timer_sequence = 0          # breaks ties so equal deadlines run FIFO
        self._cancelled_timers = 0
        self._stopping = False
        self._running_thread: Optional[int] = None
        self._closed = False
        self._wakeup = _WakeupSocketPair()
        self.add_reader(self._wakeup.read_sock, self._wakeup.drain)

    # ------------------------------------------------------------------
    # Time and scheduling
    # ------------------------------------------------------------------
    @staticmethod
    def time() -> float:
        """The reactor's clock: ``time.monotonic()``, the base of ``call_at``."""
        return time.monotonic()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` on the next turn of the loop, after those queued before it."""
        timer = Timer(0.0, callback, args, self)
        self._ready.append(timer)
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> Timer:
        """Like ``call_soon``, from any thread; wakes a sleeping ``select`` at once."""
        timer = Timer(0.0, callback, args, self)
        self._ready.append(timer)          # deque.append is atomic under the GIL
        self._wakeup.wakeup()
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` once ``delay`` seconds have passed."""
        return self.call_at(time.monotonic() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` once ``self.time()`` reaches ``when``; equal times run FIFO."""
        timer = Timer(when, callback, args, self)
        timer._in_heap = True
        self._timer_sequence += 1
        heapq.heappush(self._timers, (when, self._timer_sequence, timer))
        return timer

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        if (self._cancelled_timers > _MIN_CANCELLED_TO_PURGE
                and self._cancelled_timers * 2 > len(self._timers)):
            live = [entry for entry in self._timers if not entry[2]._cancelled]
            for entry in self._timers:
                if entry[2]._cancelled:
                    entry[2]._in_heap = False
            heapq.heapify(live)
            self._timers = live
            self._cancelled_timers = 0

    # ------------------------------------------------------------------
    # File descriptors
    # ------------------------------------------------------------------
    # Each registered descriptor's selector key carries ``[reader, writer]``,
    # each ``None`` or a ``(callback, args)`` pair that the loop calls directly.
    def add_reader(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fileobj`` is readable (replaces any reader)."""
        self._set_callback(fileobj, _EVENT_READ, (callback, args))

    def add_writer(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fileobj`` is writable (replaces any writer)."""
        self._set_callback(fileobj, _EVENT_WRITE, (callback, args))

    def remove_reader(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for reading; True if a reader was registered."""
        return self._set_callback(fileobj, _EVENT_READ, None)

    def remove_writer(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for writing; True if a writer was registered."""
        return self._set_callback(fileobj, _EVENT_WRITE, None)

    def _set_callback(self, fileobj: Any, event: int, callback: Optional[tuple]) -> bool:
        if self._closed:
            raise RuntimeError("the reactor is closed")
        slot = 0 if event == _EVENT_READ else 1
        try:
            key = self._selector.get_key(fileobj)
        except KeyError:
            if callback is None:
                return False
            data = [None, None]
            data[slot] = callback
            self._selector.register(fileobj, event, data)
            return True
        data = key.data
        had = data[slot] is not None
        data[slot] = callback
        events = (_EVENT_READ if data[0] is not None else 0) | (_EVENT_WRITE if data[1] is not None else 0)
        if events == 0:
            self._selector.unregister(fileobj)
        elif events != key.events:
            self._selector.modify(fileobj, events, data)
        return had

    # ------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------
    def run(self) -> None:
        """Run the loop until ``stop()`` is called."""
        self._enter_running()
        try:
            while not self._stopping:
                self._run_once(None)
        finally:
            self._stopping = False
            self._running_thread = None

    def run_once(self, timeout: Optional[float] = None) -> None:
        """One ``select`` (waiting at most ``timeout`` seconds, ``None`` for as long as it
        takes), then every callback ready by then, queued ones included."""
        self._enter_running()
        try:
            self._run_once(timeout)
        finally:
            self._running_thread = None

    def stop(self) -> None:
        """Make ``run()`` return after the current turn; safe from any thread."""
        self._stopping = True
        self._wakeup.wakeup()

    def is_running(self) -> bool:
        """True while ``run()`` or ``run_once()`` is executing."""
        return self._running_thread is not None

    def close(self) -> None:
        """Release the selector and the wake-up sockets; the reactor is unusable after."""
        if self._running_thread is not None:
            raise RuntimeError("cannot close a running reactor")
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        self._timers.clear()
        self._selector.close()
        self._wakeup.close()

    def is_closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._closed

    def _enter_running(self) -> None:
        if self._closed:
            raise RuntimeError("the reactor is closed")
        if self._running_thread is not None:
            raise RuntimeError("the reactor is already running")
        self._running_thread = threading.get_ident()

    def _run_once(self, timeout: Optional[float]) -> None:
        ready = self._ready
        timers = self._timers
        if ready or self._stopping:
            timeout = 0
        elif timers:
            delay = timers[0][0] - time.monotonic()
            delay = delay if delay > 0 else 0
            timeout = delay if timeout is None or delay < timeout else timeout

        for key, mask in self._selector.select(timeout):
            reader, writer = key.data
            # Reader first, then writer, as ae.c does. The reader may unregister
            # the writer (a transport that closes), so look it up again.
            try:
                if mask & _EVENT_READ and reader is not None:
                    reader[0](*reader[1])
                    writer = key.data[1]
                if mask & _EVENT_WRITE and writer is not None:
                    writer[0](*writer[1])
            except Exception:
                logger.exception("exception in I/O callback for %r", key.fileobj)

        if timers:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                timer._in_heap = False
                if timer._cancelled:
                    self._cancelled_timers -= 1
                else:
                    ready.append(timer)

        # Only what is queued now: callbacks queued by these run next turn.
        for _ in range(len(ready)):
            timer = ready.popleft()
            if timer._cancelled:
                continue
            callback, args = timer._callback, timer._args
            timer._callback = timer._args = None   # release them: it runs once
            try:
                callback(*args)
            except Exception:
                logger.exception("exception in callback %r", callback)
