"""Many cores: N worker processes under a supervisor, each with its own reactor and listening socket.

Where it sits: above the servers, for the process that runs them. One reactor
serves one core; ``serve_workers(make_server, workers=N)`` forks N processes,
each of which calls ``make_server()`` and serves it on its own reactor. Each
worker binds its own listening socket with SO_REUSEPORT (``TCPServer(...,
reuse_port=True)``), and the kernel spreads new connections across them by a
hash of the addresses (nginx's ``reuseport``, HAProxy's ``nbthread`` listeners
work the same way); or every worker serves one socket inherited from the
supervisor (socket activation), all accepting from one queue.

The supervisor (the calling process) does no serving. It owns the workers:

* **Restarts**: a worker that dies is started again, at once after a good run,
  with a back-off doubling from 0.1 s to 10 s while its replacements keep dying
  within ``_STABLE`` seconds. A worker that dies before its server is built
  (its port taken, a configuration error) is a *boot failure*: at start-up the
  first one stops everything (restarting would not help), later
  ``max_boot_failures`` in a row do.
* **Stopping**: SIGTERM or SIGINT reaches every worker as SIGTERM, a drain
  (``shutdown(grace=)`` where the server has it: stop accepting, finish the
  open connections); a second one reaches them as SIGQUIT, which closes
  every connection at once; a worker still alive ``grace + 5`` seconds later
  is killed (SIGKILL). Then ``serve_workers`` returns 0 (1 after giving up on
  boot failures). The signals are the workers' contract, as nginx's are:
  SIGTERM drains (and a repeated SIGTERM changes nothing, since systemd's
  default ``KillMode=control-group`` sends it to every process of the service
  besides our own forwarding), SIGQUIT closes now, and SIGINT is ignored:
  Ctrl-C in a terminal signals the whole process group, and the supervisor
  alone decides what that means.
* **No orphans**: each worker watches a pipe whose only writer is the
  supervisor. When the supervisor dies, even by SIGKILL, the kernel closes
  that end and every worker's read end turns readable (EOF): the worker
  drains and exits, with no polling of ``os.getppid()`` and nothing
  Linux-only (``PR_SET_PDEATHSIG`` is not in the standard library).

Linux's caveat with SO_REUSEPORT: connections queued on a listening socket
(the handshake done, not yet accepted) belong to that socket, and closing it
resets them; the kernel does not move them to a sibling (unless
``net.ipv4.tcp_migrate_req = 1``, Linux 5.14+). A draining worker therefore
first accepts everything its socket has queued, then closes it
(``shutdown(grace=)`` does both, in that order), and serves what it accepted
within the grace; only a connection that arrives in the instant between the
two can be reset. A worker that crashes loses its queue; its siblings and
its replacement serve the new ones.

Signals reach the supervisor through ``signal.set_wakeup_fd`` (the signal
number written to a socket it selects on, as the reactor's own wake-up), so a
signal is never lost between two checks. Signals are blocked around
``fork()``: a child resets its handlers before it can take one.

What it never does: serve a connection in the supervisor, or fork once
threads run (call it from a single-threaded process, before starting any).
Pinned by tests/test_workers.py.
"""
from __future__ import annotations

import errno
import inspect
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any, Callable, Dict, Optional

from .sockets import bound_socket

__all__ = ["serve_workers", "reserve_port", "DEFAULT_GRACE"]

logger = logging.getLogger("netmux")

#: Seconds a worker has to finish its connections when asked to stop.
DEFAULT_GRACE = 10.0
#: A worker that ran this long had a good run: its next restart is immediate.
_STABLE = 5.0
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 10.0
#: Beyond the grace, for a worker to close its connections and exit before SIGKILL.
_KILL_MARGIN = 5.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DRAIN, _CLOSE_NOW = signal.SIGTERM, signal.SIGQUIT     # what a worker takes from the supervisor
_PID = struct.Struct("!I")      # what a worker writes on the ready pipe: 4 bytes, atomic


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)`` with SO_REUSEPORT, not listening: it holds
    the port (0: the kernel picks one, read it with ``getsockname()``) so that
    every worker binds the same one, and no other program takes it while a
    worker restarts. It receives no connection: only listening sockets do."""
    return bound_socket((host, port), socket.SOCK_STREAM, reuse_address=True, reuse_port=True)


class _Slot:
    """One slot of the pool: the process in it now, and how its predecessors fared."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: Optional[int] = None
        self.started = 0.0
        self.ready = False
        self.quick_deaths = 0                 # in a row, each within _STABLE seconds of its start
        self.restart_at: Optional[float] = None


class _Supervisor:
    """The parent's side of ``serve_workers`` (see the module)."""

    def __init__(self, make_server: Callable[[], Any], workers: int, grace: float,
                 max_boot_failures: int, on_ready: Optional[Callable[[], Any]]) -> None:
        self.make_server = make_server
        self.grace = grace
        self.max_boot_failures = max_boot_failures
        self.on_ready = on_ready
        self.slots = [_Slot(index) for index in range(1, workers + 1)]
        self.by_pid: Dict[int, _Slot] = {}
        self.boot_failures = 0                # in a row, any slot
        self.all_ready_once = False
        self.stopping = False
        self.kill_at: Optional[float] = None
        self.exit_code = 0

    # ------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------
    def run(self) -> int:
        self._open_pipes()
        previous = {sig: signal.signal(sig, _ignore) for sig in _STOP_SIGNALS + (signal.SIGCHLD,)}
        old_wakeup = signal.set_wakeup_fd(self.wake_w.fileno())
        try:
            for slot in self.slots:
                self._start(slot)
            while not (self.stopping and not self.by_pid):
                self._turn()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all(signal.SIGKILL)    # only if an exception left some behind
            self._close_pipes()
        return self.exit_code

    def _turn(self) -> None:
        readable, _, _ = select.select([self.wake_r.fileno(), self.ready_r], [], [], self._timeout())
        if self.wake_r.fileno() in readable:
            try:
                signals = self.wake_r.recv(4096)
            except BlockingIOError:       # a wake-up is a hint
                signals = b""
            for signum in signals:
                if signum in _STOP_SIGNALS:
                    self._stop(signum)
        if self.ready_r in readable:
            self._read_ready()
        self._reap()
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at and self.by_pid:
            logger.error("workers %s still running %.0f s after the stop: killing them",
                         sorted(self.by_pid), self.grace + _KILL_MARGIN)
            self._kill_all(signal.SIGKILL)
            self.kill_at = None
        for slot in self.slots:
            if not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)

    def _timeout(self) -> float:
        """Until the next restart or the kill deadline; at most a second (a
        coalesced SIGCHLD costs a second at worst, never a lost child)."""
        deadlines = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if self.kill_at is not None:
            deadlines.append(self.kill_at)
        return max(0.0, min([time.monotonic() + 1.0] + deadlines) - time.monotonic())

    # ------------------------------------------------------------------
    # Starting, and hearing that a worker is ready
    # ------------------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS + (signal.SIGCHLD,))
        pid = os.fork()
        if pid == 0:                                       # the worker: never returns
            os._exit(self._worker_main(slot.index, blocked))
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        slot.pid, slot.started, slot.ready = pid, time.monotonic(), False
        self.by_pid[pid] = slot
        logger.info("worker %d started (pid %d)", slot.index, pid)

    def _read_ready(self) -> None:
        data = os.read(self.ready_r, 4096)
        for offset in range(0, len(data) - len(data) % _PID.size, _PID.size):
            slot = self.by_pid.get(_PID.unpack_from(data, offset)[0])
            if slot is not None:
                slot.ready = True
                self.boot_failures = 0
        if not self.all_ready_once and all(slot.ready for slot in self.slots):
            self.all_ready_once = True
            logger.info("all %d workers serving", len(self.slots))
            if self.on_ready is not None:
                self.on_ready()

    # ------------------------------------------------------------------
    # A worker exited
    # ------------------------------------------------------------------
    def _reap(self) -> None:
        while self.by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.by_pid.pop(pid, None)
            if slot is not None:
                self._exited(slot, pid, status)

    def _exited(self, slot: _Slot, pid: int, status: int) -> None:
        slot.pid = None
        how = _describe(status)
        if self.stopping:
            logger.info("worker %d (pid %d) %s", slot.index, pid, how)
            return
        uptime = time.monotonic() - slot.started
        if not slot.ready:
            self.boot_failures += 1
            if not self.all_ready_once or self.boot_failures >= self.max_boot_failures:
                logger.error("worker %d (pid %d) %s before serving; %s: stopping", slot.index, pid, how,
                             "at start-up" if not self.all_ready_once
                             else f"{self.boot_failures} boot failures in a row")
                self.exit_code = 1
                self._stop(None)
                return
        slot.quick_deaths = slot.quick_deaths + 1 if uptime < _STABLE or not slot.ready else 0
        delay = 0.0 if slot.quick_deaths == 0 else min(_BACKOFF_FIRST * 2 ** (slot.quick_deaths - 1),
                                                       _BACKOFF_MAX)
        logger.warning("worker %d (pid %d) %s after %.1f s; restarting in %.1f s",
                       slot.index, pid, how, uptime, delay)
        slot.restart_at = time.monotonic() + delay

    # ------------------------------------------------------------------
    # Stopping
    # ------------------------------------------------------------------
    def _stop(self, signum: Optional[int]) -> None:
        """First stop: every worker drains. A second signal: they close everything now."""
        name = "a stop" if signum is None else signal.Signals(signum).name
        if self.stopping:
            if signum is not None:
                logger.info("%s again: the workers close every connection now", name)
                self._kill_all(_CLOSE_NOW)
            return
        self.stopping = True
        logger.info("%s: stopping %d workers (grace %g s)", name, len(self.by_pid), self.grace)
        self._kill_all(_DRAIN)
        self.kill_at = time.monotonic() + self.grace + _KILL_MARGIN

    def _kill_all(self, signum: int) -> None:
        for pid in list(self.by_pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass                     # exited; the next _reap collects it

    # ------------------------------------------------------------------
    # Pipes: the wake-up socket, the ready pipe, the life line
    # ------------------------------------------------------------------
    def _open_pipes(self) -> None:
        self.wake_r, self.wake_w = socket.socketpair()
        for end in (self.wake_r, self.wake_w):
            end.setblocking(False)       # set_wakeup_fd needs it: a signal handler never blocks
        self.ready_r, self.ready_w = os.pipe()
        self.life_r, self.life_w = os.pipe()    # workers read; only we write (never, in fact)

    def _close_pipes(self) -> None:
        self.wake_r.close()
        self.wake_w.close()
        for fd in (self.ready_r, self.ready_w, self.life_r, self.life_w):
            os.close(fd)

    # ------------------------------------------------------------------
    # The worker's side, in the child after fork()
    # ------------------------------------------------------------------
    def _worker_main(self, index: int, mask: Any) -> int:
        """Build the server, say so, serve until told to stop (or orphaned); the exit code."""
        try:
            signal.set_wakeup_fd(-1)
            for sig in _STOP_SIGNALS + (signal.SIGCHLD,):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)     # the terminal's: the supervisor decides
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.wake_r.close()
            self.wake_w.close()
            os.close(self.ready_r)
            os.close(self.life_w)    # else the life line would never close: we would hold it
            return _WorkerProcess(self.make_server, index, self.ready_w, self.life_r, self.grace).run()
        except BaseException:        # noqa: B902 - a child must never return into the caller
            logger.exception("worker %d failed", index)
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


class _WorkerProcess:
    """One worker's life: its server, its signals, its life line."""

    def __init__(self, make_server: Callable[[], Any], index: int, ready_fd: int, life_fd: int,
                 grace: float) -> None:
        self.make_server, self.index, self.ready_fd, self.life_fd = make_server, index, ready_fd, life_fd
        self.grace = grace
        self.server: Any = None

    def run(self) -> int:
        try:
            self.server = self.make_server()
        except Exception as exc:
            hint = (" (each worker binds its own socket: TCPServer(..., reuse_port=True)?)"
                    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE else "")
            logger.error("worker %d cannot start: %s%s", self.index, exc, hint)
            return 1
        os.write(self.ready_fd, _PID.pack(os.getpid()))
        os.close(self.ready_fd)
        reactor = self.server.reactor
        reactor.add_reader(self.life_fd, self._orphaned)
        self._on_signals(reactor)
        try:
            self.server.serve_forever()
        finally:
            reactor.remove_reader(self.life_fd)
            self.server.server_close()
            reactor.close()
        return 0

    def _on_signals(self, reactor: Any) -> None:
        """SIGTERM drains, SIGQUIT closes now, on the loop: through the reactor's own
        signal handling where it has one, else by ``call_soon_threadsafe`` from a
        Python handler (it takes no lock, so a handler may call it)."""
        add_signal_handler = getattr(reactor, "add_signal_handler", None)
        actions: Dict[int, Callable[[], None]] = {_DRAIN: self._drain, _CLOSE_NOW: self._close_now}

        def on_signal(signum: int, frame: Any) -> None:
            reactor.call_soon_threadsafe(actions[signum])

        for sig, action in actions.items():
            if add_signal_handler is not None:
                add_signal_handler(sig, action)
            else:
                signal.signal(sig, on_signal)

    def _close_now(self) -> None:
        logger.info("worker %d: closing every connection now", self.index)
        self._stop(grace=0.0)

    def _orphaned(self) -> None:
        self.server.reactor.remove_reader(self.life_fd)
        logger.warning("worker %d: the supervisor is gone; stopping", self.index)
        self._drain()

    def _drain(self) -> None:
        """Idempotent: a drain under way goes on (``shutdown(grace=)`` keeps its deadline)."""
        self._stop(self.grace)

    def _stop(self, grace: float) -> None:
        """A drain where the server has one (``shutdown(grace=)``: it accepts what
        its socket has queued before closing it, see the module), else a stop
        now (``shutdown()``, then ``server_close()`` closes every connection)."""
        shutdown = self.server.shutdown
        if "grace" in inspect.signature(shutdown).parameters:
            shutdown(grace=grace)
        elif grace == 0:
            self.server.server_close()
        else:
            shutdown()


def _ignore(signum: int, frame: Any) -> None:
    """A handler that does nothing: the signal's number reaches the wake-up socket."""


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def serve_workers(make_server: Callable[[], Any], workers: Optional[int] = None, *,
                  grace: float = DEFAULT_GRACE, max_boot_failures: int = 5,
                  on_ready: Optional[Callable[[], Any]] = None) -> int:
    """Run ``workers`` processes (None: one per core), each serving ``make_server()``,
    until SIGTERM or SIGINT.

    ``make_server()`` runs in each worker (after ``fork()``) and returns a server
    with its own reactor: a ``TCPServer`` bound with ``reuse_port=True`` (each
    worker its own socket, the kernel balancing), or one serving a socket this
    process opened before (``sock=``: shared by all). ``grace``: the seconds a
    worker's drain may take (see the module). ``on_ready()`` is called here once
    every worker has built its server. Returns the exit code: 0 after a stop,
    1 when workers kept failing to start. Call it from the main thread of a
    process that runs no other thread (``fork()`` copies only the caller).
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of at least 1, not {workers!r}")
    if not grace >= 0:                  # NaN too; 0: close at once; inf: wait for every connection
        raise ValueError(f"grace must be 0 or more seconds, not {grace!r}")
    if not isinstance(max_boot_failures, int) or max_boot_failures < 1:
        raise ValueError(f"max_boot_failures must be at least 1, not {max_boot_failures!r}")
    return _Supervisor(make_server, workers, grace, max_boot_failures, on_ready).run()
