"""The reactor: one thread, one selector, callbacks.

Where it sits: at the bottom. It owns a ``selectors.DefaultSelector`` (epoll on
Linux), a FIFO queue of callbacks to run soon, a heap of timers, and a wake-up
socket pair that lets other threads interrupt a blocked ``select``. It knows
nothing about TCP, handlers or protocols; transports and servers above it ask it
to call them back when a file descriptor is readable or writable, or when a
moment has come.

What it lends the layers above, by name and with an invariant each (never a
``_private`` attribute): ``read_buffer``, a receive buffer its datagram
transports share (stream transports ``recv`` into fresh bytes); ``turn_time``,
the clock read once per turn for activity stamps; and the registry of sockets
in flight (``track_in_flight``/``forget_in_flight``), which ``close()``
finishes so nothing outlives the reactor (with the coroutines still pending,
``pending_tasks``). ``statistics()`` counts what it holds and
``health()`` how the loop spends its time (turns, seconds in ``select`` and in
callbacks, and with ``Reactor(time_callbacks=True)`` the slowest callback by
name). Its clock is ``time.monotonic`` unless one is handed in
(``Reactor(clock=...)``, a virtual clock for ``netmux.testing``).

Signals (``add_signal_handler``) come in through the same wake-up socket as
``call_soon_threadsafe``: ``signal.set_wakeup_fd`` makes the C-level handler
write the signal's number there, so a signal wakes a sleeping ``select`` at
once and its callback runs on the loop, never between two bytecodes of
whatever the main thread was doing.

One turn of the loop (``run_once``), the same shape as redis' ``ae.c``:

1. sleep in ``select`` until a descriptor is ready, or the nearest timer is due,
   or for no time at all when callbacks are already queued (on Linux it owns
   an epoll object and waits on it: see ``_poll_epoll``);
2. call the reader, then the writer, of every ready descriptor, directly: the
   hot path (readable -> recv -> handler -> send) never goes through a queue;
3. move every timer that has come due to the ready queue;
4. run the callbacks that were queued by then, in FIFO order. Callbacks queued
   while these run wait for the next turn, so one busy callback cannot starve
   I/O.

What it never does: block anywhere but in ``select``, or let a callback's
exception escape. A raising callback is logged once on the ``netmux`` logger at
ERROR level with its traceback, and the loop goes on; only ``PROPAGATE``
(SystemExit, KeyboardInterrupt) leaves the loop, as in asyncio.

Pinned by tests/test_reactor.py (signals: tests/test_signals.py; health:
tests/test_stats.py).
"""
from __future__ import annotations

import functools
import heapq
import logging
import math
import select
import selectors
import signal
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Coroutine, Deque, Dict, List, Optional, Set, Tuple, Union

from .errors import PROPAGATE
from .tasks import Task

__all__ = ["Reactor", "Timer"]

logger = logging.getLogger("netmux")

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
# selectors' EVENT_READ/EVENT_WRITE bits as epoll's.
_EPOLL_EVENTS = {_EVENT_READ: getattr(select, "EPOLLIN", 0), _EVENT_WRITE: getattr(select, "EPOLLOUT", 0),
                 _EVENT_READ | _EVENT_WRITE: getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLOUT", 0)}
# Which epoll bits wake a reader and a writer: the same split as EpollSelector's.
_EPOLL_READ_MASK = ~getattr(select, "EPOLLOUT", 0)
_EPOLL_WRITE_MASK = ~getattr(select, "EPOLLIN", 0)

# Rebuild the timer heap once cancelled timers are this many and over half of it,
# so a program that keeps arming and cancelling timeouts holds O(live timers).
_MIN_CANCELLED_TO_PURGE = 100

# The longest single wait, as asyncio's MAXIMUM_SELECT_TIMEOUT: a timer due in a
# month (or at inf, "never") must not overflow epoll's int milliseconds.
_MAXIMUM_SELECT_TIMEOUT = 24 * 3600



def _events_of(callbacks: List[Any]) -> int:
    """The selector events a ``[reader, writer]`` pair needs watched."""
    return (_EVENT_READ if callbacks[0] is not None else 0) | (_EVENT_WRITE if callbacks[1] is not None else 0)


def _check_deadline(when: float) -> float:
    """A deadline or delay that is NaN is a ValueError; inf means never."""
    if when != when:
        raise ValueError("a delay or deadline cannot be NaN")
    return when


def positive_seconds(name: str, value: Optional[float]) -> Optional[float]:
    """Check a duration argument (a timeout): None, or a number above 0, inf meaning
    never; ValueError for anything else (0, negative, NaN: ``not nan > 0``)."""
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be positive or None, not {value!r}")
    return value


class Timer:
    """A callback scheduled on a reactor: returned by ``call_soon``/``call_later``/``call_at``.

    ``cancel()`` makes sure it will not run; cancelling twice, or after it ran,
    does nothing.
    """

    __slots__ = ("when", "_callback", "_args", "_reactor", "_cancelled", "_in_heap")

    def __init__(self, when: float, callback: Callable[..., Any], args: Tuple[Any, ...],
                 reactor: "Reactor") -> None:
        if not callable(callback):      # at the call site, as asyncio: not turns later in the loop
            raise TypeError(f"a callable is needed, not {callback!r}")
        if reactor._time_callbacks:
            callback = _TimedCallback(callback, reactor)
        self.when = when
        # Released (None and ()) once the timer has run or was cancelled.
        self._callback: Optional[Callable[..., Any]] = callback
        self._args = args
        self._reactor = reactor
        self._cancelled = False
        self._in_heap = False

    def cancel(self) -> None:
        """Stop the callback from running (it and its arguments are released at once)."""
        if self._cancelled:
            return
        self._cancelled = True
        self._callback, self._args = None, ()
        if self._in_heap:
            self._reactor._timer_cancelled()

    def cancelled(self) -> bool:
        """True once ``cancel()`` has been called."""
        return self._cancelled

    def pending(self) -> bool:
        """True until the callback has run or the timer was cancelled."""
        return self._callback is not None

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

    def drain(self) -> bytes:
        """Empty the reading end; return what was there: a zero byte per thread's
        wake-up, a signal's number per signal (``signal.set_wakeup_fd``)."""
        received = bytearray()
        try:
            while True:
                chunk = self.read_sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except (BlockingIOError, InterruptedError):
            pass
        return bytes(received)

    def close(self) -> None:
        self.read_sock.close()
        self.write_sock.close()


def _ignore_signal(signum: int, frame: Any) -> None:
    """The Python-level handler of a signal the reactor watches: nothing to do
    here, the C-level handler has already written its number to the wake-up
    socket (Python runs this one later, between two bytecodes of the main thread)."""


def callback_name(callback: Any) -> str:
    """A readable name for a callback, for the loop's health: its qualified name,
    and for a transport's method the handler it serves (``TCPTransport._read_ready
    (EchoHandler)``): a blocking handler shows up as itself."""
    while isinstance(callback, (functools.partial, _TimedCallback)):
        callback = callback.func if isinstance(callback, functools.partial) else callback.callback
    owner = getattr(callback, "__self__", None)
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    protocol = getattr(owner, "get_protocol", None)
    if protocol is not None:
        handler = protocol()
        for _ in range(8):              # through the layers, to the user's handler
            inner = getattr(handler, "handler", None)
            if inner is None:
                break
            handler = inner
        name = f"{name} ({type(handler).__qualname__})"
    return str(name)


class _TimedCallback:
    """A callback that notes how long it ran, for ``Reactor(time_callbacks=True)``:
    two clock reads a call, which is why it is not the default."""

    __slots__ = ("callback", "reactor")

    def __init__(self, callback: Callable[..., Any], reactor: "Reactor") -> None:
        self.callback = callback
        self.reactor = reactor

    def __repr__(self) -> str:
        return f"<timed {callback_name(self.callback)}>"

    def __call__(self, *args: Any) -> Any:
        clock = self.reactor._clock
        started = clock()
        try:
            return self.callback(*args)
        finally:
            self.reactor._note_callback_time(clock() - started, self.callback)


class Reactor:
    """A single-threaded event loop: epoll on Linux, ``selectors`` elsewhere.

    Everything but ``call_soon_threadsafe`` and ``stop`` must be called from the
    thread that runs the reactor (or before it runs).
    """

    #: Size of the buffer every transport of this reactor reads into, hence the
    #: most one read event hands a stream handler: its share of a turn, the
    #: first bound of fairness (transport.py's design note). At least 64 KiB, so
    #: any UDP datagram fits whole. 64 KiB, not asyncio's 256 KiB: a pipelining
    #: client's read then holds a quarter of the requests; the echo scenarios
    #: moved within their spread, 10 x 64 KiB 4 % lower (bench/README.md).
    read_buffer_size = 64 * 1024

    def __init__(self, selector: Optional[selectors.BaseSelector] = None, *,
                 clock: Optional[Callable[[], float]] = None, time_callbacks: bool = False) -> None:
        """``selector``: a fresh ``selectors`` instance to wait with, owned by the
        reactor from now on (default: ``selectors.DefaultSelector()``).

        ``clock``: a zero-argument callable giving seconds as a float that never
        goes back (default ``time.monotonic``). Timers, ``time()`` and the
        transports' idle bookkeeping all read it, so a test can hand in a
        virtual clock (``netmux.testing.VirtualClock``) and a 30 s timeout
        takes no real time. The wait in ``select`` is still real: a virtual
        clock is for a reactor whose work is all queued, not for one waiting
        on sockets.

        ``time_callbacks``: time every callback (two clock reads each) so that
        ``health()`` names the slowest; off, the loop reads its clock twice a
        turn and no more (what ``--stats`` and ``--metrics`` switch on).
        """
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, not {type(clock).__name__}")
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        # fd -> [reader, writer]: what the loop dispatches by. A descriptor
        # registered since the last wait waits in _new_callbacks until the next
        # wait begins, so no event of a batch can reach it (see _poll_epoll).
        self._callbacks: Dict[int, List[Any]] = {}
        self._new_callbacks: Dict[int, List[Any]] = {}
        # On Linux, unless a selector is handed in, the reactor owns an epoll
        # object, as trio does: registering is one system call, and the wait
        # reads the kernel's (fd, mask) list with no selectors layer between.
        self._epoll: Any = None
        self._selector: Optional[selectors.BaseSelector] = None
        if selector is None and hasattr(select, "epoll"):
            self._epoll = select.epoll()
            self._poll = self._poll_epoll
        else:
            self._selector = selectors.DefaultSelector() if selector is None else selector
            self._poll = self._poll_selector
        #: The reactor's time when the last wait returned: read once per turn,
        #: so every transport of the turn stamps its activity with it for free.
        #: Good for idle bookkeeping (late by one turn at most), not for
        #: deadlines: those use ``time()``. Read it; only the reactor writes it.
        self.turn_time: float = self._clock()
        # Sockets and callbacks in flight: key -> release (see track_in_flight).
        self._in_flight: Dict[Any, Callable[[], None]] = {}
        #: A receive buffer the transports of this reactor may share (the UDP
        #: transport reads datagrams into it; TCP reads with ``recv``, see
        #: transport.py's "One read, no copy"):
        #: the loop runs one callback at a time, so they can share it. Valid
        #: only inside the reader callback that filled it; the next read
        #: overwrites it, so copy out what you keep (``buffer[:n].tobytes()``)
        #: and never keep the view. Why share one: ``sock.recv(256 KiB)`` would
        #: allocate 256 KiB per call, which glibc serves with mmap and munmap
        #: (above its 128 KiB threshold): that cost 3x the throughput
        #: (bench/README.md). A read into this buffer and an exact-size copy
        #: cost one small allocation instead.
        self.read_buffer = memoryview(bytearray(max(self.read_buffer_size, 65536)))
        self._ready: Deque[Timer] = deque()
        self._timers: List[Tuple[float, int, Timer]] = []
        self._timer_sequence = 0          # breaks ties so equal deadlines run FIFO
        self._cancelled_timers = 0
        self._stopping = False
        self._running_thread: Optional[int] = None
        self._closed = False
        # The loop's health (health()): counted once a turn, never per event.
        self._time_callbacks = bool(time_callbacks)
        self._turns = 0
        self._select_seconds = 0.0
        self._callback_seconds = 0.0
        self._slowest: Tuple[float, str] = (0.0, "")
        # Signals: signum -> (callback, args), the Python-level handlers they
        # replaced, and the wake-up descriptor before ours (None: not taken).
        self._signal_handlers: Dict[int, Tuple[Callable[..., Any], Tuple[Any, ...]]] = {}
        self._previous_signal_handlers: Dict[int, Any] = {}
        self._previous_wakeup_fd: Optional[int] = None
        self._wakeup = _WakeupSocketPair()
        self.add_reader(self._wakeup.read_sock, self._wakeup_ready)
        #: Every Task (tasks.py) not done yet; a Task adds and removes itself.
        #: close() cancels those left, so no coroutine outlives the reactor.
        self.pending_tasks: Set[Task] = set()

    # ------------------------------------------------------------------
    # Time and scheduling
    # ------------------------------------------------------------------
    def time(self) -> float:
        """The reactor's clock (``time.monotonic()`` unless one was given): the base of ``call_at``."""
        return self._clock()

    def next_deadline(self) -> Optional[float]:
        """When this reactor next has work to do without any I/O: ``time()`` when
        callbacks are queued, else the deadline of the earliest pending timer,
        else None (only a file descriptor can wake it).

        A virtual-time runner (``netmux.testing``) moves its clock here when the
        reactor is otherwise quiet. Cancelled timers at the front of the heap are
        dropped on the way, so the answer is always a live timer's.
        """
        if self._ready:
            return self._clock()
        timers = self._timers
        while timers and timers[0][2]._cancelled:
            heapq.heappop(timers)[2]._in_heap = False
            self._cancelled_timers -= 1
        return timers[0][0] if timers else None

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` on the next turn of the loop, after those queued before it.

        RuntimeError on a closed reactor (as asyncio): no turn will ever come."""
        if self._closed:
            raise RuntimeError("the reactor is closed")
        timer = Timer(0.0, callback, args, self)
        self._ready.append(timer)
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> Timer:
        """Like ``call_soon``, from any thread; wakes a sleeping ``select`` at once.

        RuntimeError once the reactor is closed; a call racing ``close()`` from
        another thread may be dropped silently instead (no lock on this path)."""
        if self._closed:
            raise RuntimeError("the reactor is closed")
        timer = Timer(0.0, callback, args, self)
        self._ready.append(timer)          # deque.append is atomic under the GIL
        self._wakeup.wakeup()
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` once ``delay`` seconds have passed (inf: never;
        ValueError for NaN, RuntimeError on a closed reactor)."""
        return self.call_at(self._clock() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` once ``self.time()`` reaches ``when``; equal times run FIFO.

        ``when`` at inf never comes; NaN is a ValueError (a NaN at the head of the
        heap is never due and would freeze every timer behind it); RuntimeError
        on a closed reactor."""
        if self._closed:
            raise RuntimeError("the reactor is closed")
        timer = Timer(_check_deadline(when), callback, args, self)
        timer._in_heap = True
        self._timer_sequence += 1
        heapq.heappush(self._timers, (when, self._timer_sequence, timer))
        return timer

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> Task:
        """Run ``coroutine`` on this reactor from its next turn; returns its Task (tasks.py)."""
        return Task(self, coroutine)

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        if (self._cancelled_timers > _MIN_CANCELLED_TO_PURGE
                and self._cancelled_timers * 2 > len(self._timers)):
            for entry in self._timers:
                if entry[2]._cancelled:
                    entry[2]._in_heap = False
            # In place: the running loop holds a reference to this list.
            self._timers[:] = [entry for entry in self._timers if not entry[2]._cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    # ------------------------------------------------------------------
    # File descriptors
    # ------------------------------------------------------------------
    # A registered descriptor carries ``[reader, writer]``, each None or a
    # zero-argument callable that the loop calls directly. The same list is the
    # selector key's data and the value of ``self._callbacks[fd]`` (or, until
    # the next wait, ``self._new_callbacks[fd]``); unregistering leaves it
    # ``[None, None]``.
    def add_reader(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fileobj`` is readable (replaces any reader)."""
        self._set_callback(fileobj, 0, functools.partial(callback, *args) if args else callback)

    def add_writer(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fileobj`` is writable (replaces any writer)."""
        self._set_callback(fileobj, 1, functools.partial(callback, *args) if args else callback)

    def remove_reader(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for reading; True if a reader was registered."""
        return self._set_callback(fileobj, 0, None)

    def remove_writer(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for writing; True if a writer was registered."""
        return self._set_callback(fileobj, 1, None)

    def _set_callback(self, fileobj: Any, slot: int, callback: Optional[Callable[[], Any]]) -> bool:
        if self._closed:
            # As asyncio: removing from a closed reactor is harmless (a transport
            # closing after it), adding is a mistake.
            if callback is None:
                return False
            raise RuntimeError("the reactor is closed")
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if callback is not None and self._time_callbacks:
            callback = _TimedCallback(callback, self)
        data = self._callbacks.get(fd) or self._new_callbacks.get(fd)
        if data is None:
            if callback is not None:
                self._add_descriptor(fd, fileobj, slot, callback)
            return False
        before = _events_of(data)
        had = data[slot] is not None
        data[slot] = callback
        events = _events_of(data)
        if events == 0:
            self._unwatch(fd, fileobj)
            if self._callbacks.pop(fd, None) is None:
                del self._new_callbacks[fd]
        elif events != before:
            self._rewatch(fd, fileobj, events, data)
        return had

    def _add_descriptor(self, fd: int, fileobj: Any, slot: int, callback: Callable[[], Any]) -> None:
        """Watch a descriptor not watched yet; it joins the table at the next wait."""
        data: List[Any] = [None, None]
        data[slot] = callback
        self._watch(fd, fileobj, _EVENT_READ if slot == 0 else _EVENT_WRITE, data)
        self._new_callbacks[fd] = data

    # What the kernel (or the selector) is told: one call each way.
    def _watch(self, fd: int, fileobj: Any, events: int, data: List[Any]) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, _EPOLL_EVENTS[events])
        else:
            assert self._selector is not None
            self._selector.register(fileobj, events, data)

    def _rewatch(self, fd: int, fileobj: Any, events: int, data: List[Any]) -> None:
        if self._epoll is not None:
            self._epoll.modify(fd, _EPOLL_EVENTS[events])
        else:
            assert self._selector is not None
            self._selector.modify(fileobj, events, data)

    def _unwatch(self, fd: int, fileobj: Any) -> None:
        if self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass        # closed first: the kernel dropped it from the set already
        else:
            assert self._selector is not None
            self._selector.unregister(fileobj)

    # ------------------------------------------------------------------
    # In flight: what close() must finish, and statistics
    # ------------------------------------------------------------------
    # Some things belong to no transport for a while: a connect not finished
    # yet (no transport owns its socket so far), a closed connection waiting
    # for its peer's FIN (its transport is done with it: see transport.py's
    # _close_after_peer), a connection_lost call queued for the next turn.
    # Each is finished by a later turn of the loop; if the reactor is closed
    # first, no turn comes. So whoever starts one registers it here.
    #
    # The invariant: every socket or pending callback that no transport owns
    # and that only a later turn would finish is in flight, under a key of its
    # owner's choosing, with a release that finishes it at once (closes the
    # socket, tells the handler). It leaves by forget_in_flight() when a turn
    # finishes it, or by close(), which calls each release still registered
    # exactly once. So no descriptor and no connection_lost outlives the
    # reactor, and none is released twice.
    def track_in_flight(self, key: Any, release: Callable[[], None]) -> None:
        """Register ``release`` to run once if the reactor closes before ``key`` is
        forgotten (a new ``release`` for the same key replaces the old).

        ``key``: any hashable its owner can name again (a descriptor number,
        unique while its socket is open: forget it before closing the socket;
        or the transport itself). ``release``: a zero-argument callable that finishes the
        work without the loop (the reactor is closed when it runs: it can no
        longer schedule anything). RuntimeError on a closed reactor, as scheduling.
        """
        if self._closed:
            raise RuntimeError("the reactor is closed")
        self._in_flight[key] = release

    def forget_in_flight(self, key: Any) -> None:
        """``key``'s work was finished by a turn of the loop: drop its release
        without calling it. Forgetting a key that is not tracked does nothing."""
        self._in_flight.pop(key, None)

    def statistics(self) -> Dict[str, int]:
        """What the reactor holds now, counted (for tests, logs and monitoring):

        * ``descriptors``: file descriptors watched for reading or writing, the
          reactor's own wake-up socket not counted;
        * ``writers``: those of them watched for writing (output queued, a
          connect pending);
        * ``timers``: timers armed (``call_later``/``call_at``), cancelled ones not counted;
        * ``ready``: callbacks queued for the next turn, cancelled ones not counted;
        * ``in_flight``: sockets and callbacks in flight (``track_in_flight``);
        * ``tasks``: coroutines spawned and not done yet (``pending_tasks``).

        All are 0 once the reactor is closed. Meant for the reactor's thread;
        from another thread the counts are a snapshot of a moving target.
        """
        # list() copies in one step under the GIL: safe while another thread adds.
        watched = list(self._callbacks.values()) + list(self._new_callbacks.values())
        return {
            "descriptors": len(watched) if self._closed else len(watched) - 1,   # the wake-up socket
            "writers": sum(1 for callbacks in watched if callbacks[1] is not None),
            "timers": sum(1 for entry in list(self._timers) if not entry[2]._cancelled),
            "ready": sum(1 for timer in list(self._ready) if timer._callback is not None),
            "in_flight": len(self._in_flight),
            "tasks": len(self.pending_tasks),
        }

    def health(self, reset_slowest: bool = False) -> Dict[str, Union[int, float, str]]:
        """How the loop spends its time, since it was made (for logs and monitoring):

        * ``turns``: turns of the loop (``run_once`` calls, and ``run()``'s);
        * ``select_seconds``: time spent waiting in ``select`` (idle, or blocked
          on nothing to do);
        * ``callback_seconds``: time spent running callbacks between two waits:
          the loop's load (one ``callback_seconds`` per second is a saturated core);
        * ``slowest_callback`` and ``slowest_callback_seconds``: the longest
          single callback since the last ``health(reset_slowest=True)``, by name
          (``callback_name``), with ``Reactor(time_callbacks=True)`` only
          (``""`` and 0.0 otherwise): one callback that blocks the loop shows
          here, whatever else ran in its turn.

        The times are on the reactor's clock; the callbacks of the turn that
        is running now are counted when the next wait begins.
        """
        seconds, name = self._slowest
        if reset_slowest:
            self._slowest = (0.0, "")
        return {"turns": self._turns, "select_seconds": self._select_seconds,
                "callback_seconds": self._callback_seconds,
                "slowest_callback": name, "slowest_callback_seconds": seconds}

    def _note_callback_time(self, seconds: float, callback: Any) -> None:
        if seconds > self._slowest[0]:       # the name is made only for a new record
            self._slowest = (seconds, callback_name(callback))

    # ------------------------------------------------------------------
    # Signals: through the wake-up socket, callbacks on the loop
    # ------------------------------------------------------------------
    def add_signal_handler(self, sig: int, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` on the loop each time signal ``sig`` arrives
        (replacing this reactor's earlier callback for ``sig``).

        The process's wake-up descriptor (``signal.set_wakeup_fd``) becomes this
        reactor's wake-up socket while it has a signal handler, so the signal
        wakes a sleeping ``select`` at once; the Python-level handler it
        replaces comes back with ``remove_signal_handler`` or ``close()``.
        Signal handlers are the main thread's business in Python: RuntimeError
        from any other thread, and on a closed reactor; ValueError for a number
        that is not a signal (OSError from the kernel for SIGKILL and SIGSTOP);
        TypeError for a callback that is not callable. One reactor per process
        should own signals at a time: the wake-up descriptor is one per process.
        """
        if self._closed:
            raise RuntimeError("the reactor is closed")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be added from the main thread "
                               "(Python delivers signals to it alone)")
        if not callable(callback):
            raise TypeError(f"a callable is needed, not {callback!r}")
        signum = int(sig)
        if signum not in signal.valid_signals():
            raise ValueError(f"{sig!r} is not a signal number")
        if self._previous_wakeup_fd is None:
            # Non-blocking already (a full buffer means a wake-up is pending);
            # a warning per dropped byte would only add noise.
            self._previous_wakeup_fd = signal.set_wakeup_fd(self._wakeup.write_sock.fileno(),
                                                            warn_on_full_buffer=False)
        try:
            previous = signal.signal(signum, _ignore_signal)
        except (OSError, ValueError):
            if not self._signal_handlers:
                self._release_wakeup_fd()
            raise
        self._previous_signal_handlers.setdefault(signum, previous)
        self._signal_handlers[signum] = (callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        """Stop handling ``sig``; the Python-level handler it replaced comes back.
        True if a handler was removed. Main thread only, as adding."""
        signum = int(sig)
        if signum not in self._signal_handlers:
            return False
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be removed from the main thread")
        del self._signal_handlers[signum]
        signal.signal(signum, self._previous_signal_handlers.pop(signum))
        if not self._signal_handlers:
            self._release_wakeup_fd()
        return True

    def _release_wakeup_fd(self) -> None:
        """Hand the process's wake-up descriptor back to whoever had it before us."""
        previous, self._previous_wakeup_fd = self._previous_wakeup_fd, None
        if previous is not None:
            signal.set_wakeup_fd(previous)

    def _wakeup_ready(self) -> None:
        """The wake-up socket's reader: a zero byte only woke us (a thread's
        call_soon_threadsafe, a stop); any other byte is a signal, whose callback
        is queued, once per arrival, in order."""
        received = self._wakeup.drain()
        handlers = self._signal_handlers
        if handlers:
            for signum in received:
                entry = handlers.get(signum)
                if entry is not None:
                    self.call_soon(entry[0], *entry[1])

    # ------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------
    def run(self) -> None:
        """Run the loop until ``stop()`` is called."""
        self._enter_running()
        try:
            started = self._clock()
            while not self._stopping:
                started = self._run_once(None, started)
        finally:
            self._stopping = False
            self._running_thread = None

    def run_once(self, timeout: Optional[float] = None) -> None:
        """One ``select`` (waiting at most ``timeout`` seconds, ``None`` for as long as it
        takes, ``<= 0`` not at all), then every callback ready by then, queued ones
        included. ValueError for a NaN timeout."""
        if timeout is not None:
            _check_deadline(timeout)
        self._enter_running()
        try:
            self._run_once(timeout, self._clock())
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
        """Close every pending coroutine, release the selector and the wake-up sockets;
        the reactor is unusable after.

        Pending coroutines are closed first (GeneratorExit at their await), while
        their ``finally`` blocks may still close transports. Then each release in
        flight runs once (``track_in_flight``): sockets in flight are closed and
        the ``connection_lost`` calls already queued are delivered now, since no
        turn will come to run them; every other queued callback and timer is
        dropped. Transports still open are not ours to close: their ``close()``
        then acts as ``abort()``. Signal handlers are removed first (the
        handlers and wake-up descriptor they replaced come back; RuntimeError
        if that must happen off the main thread).
        """
        if self._running_thread is not None:
            raise RuntimeError("cannot close a running reactor")
        if self._closed:
            return
        for signum in list(self._signal_handlers):
            self.remove_signal_handler(signum)      # the previous handlers and wake-up fd come back
        for task in list(self.pending_tasks):
            task.cancel()               # GeneratorExit at its await: its finally blocks run now
        # Closed first: what the releases call back (a handler's connection_lost)
        # can no longer schedule anything, and unregistering is a no-op.
        self._closed = True
        in_flight = self._in_flight
        while in_flight:                # taken out before it runs: exactly once
            release = in_flight.pop(next(iter(in_flight)))
            release()
        self._ready.clear()
        self._timers.clear()
        self._cancelled_timers = 0
        if self._epoll is not None:
            self._epoll.close()
        else:
            assert self._selector is not None
            self._selector.close()
        self._callbacks.clear()         # the selector watches nothing now
        self._new_callbacks.clear()
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

    # The hot path. Each ready descriptor's reader, then its writer, is called
    # directly (as ae.c does); the reader may have removed the writer, so the
    # writer is read from the list after the reader ran. A descriptor closed
    # by an earlier callback of the same batch has its list emptied
    # ([None, None]) and is skipped.
    def _poll_selector(self, timeout: Optional[float]) -> None:
        """Wait with the selector: the portable path (and a selector handed in)."""
        assert self._selector is not None
        events = self._selector.select(timeout)
        self.turn_time = self._clock()
        for key, mask in events:
            callbacks = key.data
            try:
                if mask & _EVENT_READ and callbacks[0] is not None:
                    callbacks[0]()
                if mask & _EVENT_WRITE and callbacks[1] is not None:
                    callbacks[1]()
            except PROPAGATE:
                raise
            except BaseException:
                logger.exception("exception in I/O callback for %r", key.fileobj)

    def _poll_epoll(self, timeout: Optional[float]) -> None:
        """Wait on the reactor's own epoll object: the same loop, a shorter path.

        ``EpollSelector.select()`` turns every kernel event into a ``(key,
        events)`` pair in Python before we see it; reading the kernel's
        ``(fd, mask)`` list directly cuts the reactor's instructions per echoed
        message by about 15 % (bench/README.md). The reactor owns the epoll
        object (as trio does, instead of reaching into EpollSelector's private
        one); the ``[reader, writer]`` table is the one record of what is
        watched. (This function and ``TCPTransport.write`` stay whole although
        long: they are the hot path, and a split costs a call per event.)

        Reading by fd has a trap that the selector's keys do not (they are
        looked up before any callback runs): a callback may close descriptor
        N and a new socket may get number N in the same batch (a proxy closing
        one leg and connecting another). The batch's leftover event for N was
        the old socket's; handed to the new one it would, say, make a pending
        connect look finished. ae.c skips an event its fd no longer wants; we
        do not let a batch see a descriptor registered after its wait began:
        registrations wait in ``_new_callbacks`` and join the table at the
        start of the next wait. That costs nothing per event (one test per
        wait), and nothing is lost: epoll is level-triggered, so the new
        socket's own events are reported by that next wait.
        """
        new = self._new_callbacks
        if new:
            self._callbacks.update(new)
            new.clear()
        if timeout is None:
            timeout = -1
        elif timeout > 0:
            # epoll counts whole milliseconds: round up, or a timer due in
            # 0.4 ms would make the loop spin until it is due (as selectors does).
            timeout = math.ceil(timeout * 1e3) * 1e-3
        events = self._epoll.poll(timeout)
        # The turn's one clock read: every transport stamps its activity with
        # it, instead of one clock call per message (bench/README.md).
        self.turn_time = self._clock()
        table = self._callbacks
        read_mask, write_mask = _EPOLL_READ_MASK, _EPOLL_WRITE_MASK
        for fd, mask in events:
            # table[fd], not .get(): a subscript costs less than a method call
            # (and try is free), and an fd unregistered earlier in the batch is rare.
            try:
                callbacks = table[fd]
            except KeyError:
                continue
            try:
                # Error and hang-up wake both sides, as selectors reports them:
                # the callback's own recv() or send() then tells what happened.
                if mask & read_mask:
                    reader = callbacks[0]
                    if reader is not None:
                        reader()
                if mask & write_mask:
                    writer = callbacks[1]
                    if writer is not None:
                        writer()
            except PROPAGATE:
                raise
            except BaseException:
                logger.exception("exception in I/O callback for fd %d", fd)

    def _run_once(self, timeout: Optional[float], started: float) -> float:
        """One turn begun at ``started``: wait, then the due timers join the ready
        queue, which runs. Returns when the turn ended, the next one's start.

        The health counters cost one clock read a turn, none per event: the
        poller reads ``turn_time`` when the wait ends (as it always has), and
        this reads the clock once the turn's callbacks are done, which ``run()``
        hands to the next turn as the start of its wait."""
        self._poll(self._wait_time(timeout))
        if self._timers:
            self._queue_due_timers()
        if self._ready:
            self._run_ready()
        ended = self._clock()
        self._turns += 1
        waited = self.turn_time
        self._select_seconds += waited - started
        self._callback_seconds += ended - waited
        return ended

    def _wait_time(self, timeout: Optional[float]) -> Optional[float]:
        """How long this turn may sleep in the poller: the one place a wait is
        normalised. None waits for an event; the rest lands in [0, a day]. A
        negative timeout means "poll" (epoll would take it for "forever"), and
        inf or a timer a month away is capped, as asyncio does, so the poller
        never overflows. Queued callbacks (or a stop) mean no sleep at all."""
        if self._ready or self._stopping:
            return 0
        timers = self._timers
        if timers:
            delay = timers[0][0] - self._clock()
            if timeout is None or delay < timeout:
                timeout = delay
        if timeout is None:
            return None
        if timeout <= 0:
            return 0
        return min(timeout, _MAXIMUM_SELECT_TIMEOUT)

    def _queue_due_timers(self) -> None:
        """Move every timer due at ``turn_time`` to the ready queue, in deadline order."""
        timers, ready, now = self._timers, self._ready, self.turn_time
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            timer._in_heap = False
            if timer._cancelled:
                self._cancelled_timers -= 1
            else:
                ready.append(timer)

    def _run_ready(self) -> None:
        """Run what is queued now: callbacks queued by these run next turn, so one
        busy callback cannot starve I/O."""
        ready = self._ready
        for _ in range(len(ready)):
            timer = ready.popleft()
            callback, args = timer._callback, timer._args
            if callback is None:                    # cancelled
                continue
            timer._callback, timer._args = None, ()   # release them: it runs once
            try:
                callback(*args)
            except PROPAGATE:
                raise
            except BaseException:
                logger.exception("exception in callback %r", callback)
