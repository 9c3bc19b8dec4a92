"""Tasks: coroutines (``async def``) run on the reactor itself, with no asyncio underneath.

Where it sits: beside the reactor, below ``StreamHandler`` (``stream.py``). It
owns the ``Task`` that steps one coroutine, and the awaitables every coroutine
may use: ``sleep`` and ``timeout``. It never touches a socket; it never runs
on the reactor's hot path (a callback ``Handler`` does not know it exists).
Pinned by ``tests/test_tasks.py``.

How ``await`` sits on a select loop, in four facts:

1. **A coroutine is a generator underneath.** ``coro.send(value)`` runs it up
   to its next suspension and returns what it yielded there; ``coro.throw(exc)``
   resumes it by raising ``exc`` at that point instead. ``await x`` passes every
   yield of ``x.__await__()`` straight up to whoever calls ``send``: the Task.
2. **What a netmux awaitable yields is an *arm*:** a callable ``arm(task)`` that
   registers how the task is to be woken (a timer, a handler waiting for data)
   and returns a ``disarm()`` that undoes the registration. The waker calls
   ``task.wake(value)``, which sends ``value`` back in: the ``await``
   evaluates to it. ``park(arm)`` below is the one place that yields.
   ``park``, the arm and ``Task.wake`` are this module's public awaitable
   protocol: ``stream.py`` waits for data and for drains with them, and any
   layer that needs a coroutine to wait for its news does the same.
3. **A wait is cancelled by disarming it, then throwing.** A timeout's timer,
   or ``cancel()``, calls the current ``disarm()`` (so no stale wake-up can come
   later) and throws into the coroutine at its ``await``: ``_TimeoutExpired``
   for a timeout (turned into the builtin ``TimeoutError`` by the ``timeout``
   block it belongs to, so nested timeouts never mistake each other's expiry),
   ``GeneratorExit`` for ``cancel()``. A task is always in exactly one state:
   not started, running, parked on one arm, or done; only a parked (or not
   started) one can be woken.
4. **Closing is GeneratorExit at the await**, so ``finally`` blocks and context
   managers run at once, inside ``cancel()``. A ``finally`` block that awaits
   while its coroutine is being closed cannot wait (nothing will ever resume
   it): that ``await`` raises ``GeneratorExit`` again at once, so the rest of
   that block is skipped and the outer ``finally`` blocks still run. Cleanup
   that must happen goes before any ``await`` in the block.

A task is woken synchronously, from the reactor callback that has its news
(a timer, ``data_received``): no extra turn of the loop per ``await``. Every
task not yet done is in ``reactor.pending_tasks``; ``Reactor.close()`` cancels
them, so no coroutine is left un-awaited and no timer stays armed.
"""
from __future__ import annotations

import logging
import math
import numbers
import types
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Generator, Optional

from .errors import PROPAGATE

if TYPE_CHECKING:   # a type only: the reactor imports this module, not the reverse
    from .reactor import Reactor

__all__ = ["Task", "CancelledError", "sleep", "timeout"]

logger = logging.getLogger("netmux")

Arm = Callable[["Task"], Callable[[], Any]]

# A coroutine that keeps awaiting while it is being closed gets this many
# GeneratorExits before we give up on it (and say so).
_MAX_CLOSE_THROWS = 100


class CancelledError(BaseException):
    """The task was cancelled: raised by ``result()`` and ``exception()``.

    A ``BaseException``, as asyncio's, so ``except Exception`` does not swallow it.
    """


class _TimeoutExpired(BaseException):
    """Thrown at the await of a task whose ``timeout`` block expired; that block
    turns it into ``TimeoutError``. A BaseException so user code does not catch it."""

    def __init__(self, scope: "timeout") -> None:
        super().__init__(scope)
        self.scope = scope


def _nothing_to_disarm() -> None:
    pass


# The one yield of netmux: everything that waits goes through here.
@types.coroutine
def park(arm: Arm) -> Generator[Arm, Any, Any]:
    """Suspend the running task: it calls ``arm(task)``, which registers a waker
    and returns a zero-argument disarm that undoes the registration (called if
    the wait is cancelled or times out); the waker later calls
    ``task.wake(value)``, and ``await park(arm)`` evaluates to ``value``."""
    return (yield arm)


# Yielded instead of an arm, it makes the task send itself back at once.
_CURRENT_TASK = object()


@types.coroutine
def _current_task() -> Generator[Any, Any, "Task"]:
    task: Task = yield _CURRENT_TASK
    return task


# ----------------------------------------------------------------------
# Task
# ----------------------------------------------------------------------
class Task:
    """One coroutine running on a reactor: made by ``reactor.spawn(coroutine)``.

    It starts on the next turn of the loop. ``cancel()`` closes the coroutine
    at its ``await``; an exception escaping it is logged once at ERROR level.
    """

    def __init__(self, reactor: "Reactor", coroutine: Coroutine[Any, Any, Any]) -> None:
        if not (hasattr(coroutine, "send") and hasattr(coroutine, "throw")):
            raise TypeError(f"spawn() needs a coroutine object, not {coroutine!r} "
                            "(call the async function: spawn(main()), not spawn(main))")
        if reactor.is_closed():
            coroutine.close()           # never started: close it, or Python warns it was never awaited
            raise RuntimeError("spawn() on a closed reactor")
        self.reactor = reactor
        self._coro = coroutine
        self._started = False
        self._running = False
        self._cancel_requested = False   # cancel() from inside itself: close at its next await
        self._done = False
        self._cancelled = False
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._disarm: Optional[Callable[[], Any]] = reactor.call_soon(self.wake).cancel
        reactor.pending_tasks.add(self)

    def __repr__(self) -> str:
        state = ("cancelled" if self._cancelled else "done" if self._done
                 else "running" if self._running else "pending")
        name = getattr(self._coro, "__qualname__", type(self._coro).__name__)
        return f"<Task {name} {state}>"

    # -- stepping ----------------------------------------------------------
    def _throw(self, error: BaseException) -> None:
        """Wake a parked task by raising ``error`` at its ``await``; its wait is disarmed first."""
        self._disarm_wait()
        self.wake(None, error)

    def _disarm_wait(self) -> None:
        disarm, self._disarm = self._disarm, None
        if disarm is not None:
            disarm()

    def wake(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        """Resume a parked task with ``value`` (what its ``await park(arm)``
        evaluates to), or by raising ``error`` at that ``await``, running it to its
        next ``await`` now. Called by the waker that its arm registered, which
        forgets its registration first (the task's disarm is not called).
        RuntimeError if the task is not parked."""
        if self._done or self._running:
            raise RuntimeError(f"{self!r} woken while it was not waiting")
        self._disarm = None
        self._started = self._running = True
        coro = self._coro
        try:
            while True:
                try:
                    yielded = coro.send(value) if error is None else coro.throw(error)
                except StopIteration as stop:
                    self._finish(stop.value, None)
                    return
                except BaseException as exc:
                    self._finish(None, exc)
                    if isinstance(exc, PROPAGATE):
                        raise           # KeyboardInterrupt, SystemExit: the loop's caller decides
                    return
                value, error = None, None
                if yielded is _CURRENT_TASK:
                    value = self
                elif not callable(yielded):
                    error = RuntimeError(f"a netmux task cannot await {yielded!r}: only netmux "
                                         "awaitables (sleep, recv, ...) run on the reactor")
                elif self._cancel_requested:
                    break               # cancelled itself: close it at this await, below
                else:
                    self._disarm = yielded(self)
                    return
        finally:
            self._running = False
        self._close()

    def _finish(self, result: Any, exception: Optional[BaseException]) -> None:
        self._done = True
        self._result, self._exception = result, exception
        self.reactor.pending_tasks.discard(self)
        if exception is not None and not isinstance(exception, PROPAGATE):
            logger.error("task %r raised", self, exc_info=exception)

    # -- cancelling --------------------------------------------------------
    def cancel(self) -> bool:
        """Close the coroutine at its ``await`` (its ``finally`` blocks run now, or at
        its next ``await`` when a task cancels itself). False if it was already done."""
        if self._done:
            return False
        if self._running:
            self._cancel_requested = True
            return True
        self._disarm_wait()
        self._close()
        return True

    def _close(self) -> None:
        self._done = self._cancelled = True
        self.reactor.pending_tasks.discard(self)
        coro = self._coro
        if not self._started:
            coro.close()
            return
        self._running = True
        try:
            # Each await inside a finally block is closed too (see the top); one
            # that swallows GeneratorExit in a loop gets a CancelledError at last.
            for error in [GeneratorExit] * _MAX_CLOSE_THROWS + [CancelledError]:
                try:
                    coro.throw(error)
                except (GeneratorExit, StopIteration, CancelledError):
                    if error is CancelledError:
                        logger.error("task %r swallowed GeneratorExit while being closed", self)
                    return
                except PROPAGATE:
                    raise
                except BaseException:
                    logger.exception("task %r raised while being closed", self)
                    return
            logger.error("task %r kept awaiting while being closed; abandoned", self)
        finally:
            self._running = False

    # -- outcome -----------------------------------------------------------
    def done(self) -> bool:
        """True once the coroutine returned, raised or was cancelled."""
        return self._done

    def cancelled(self) -> bool:
        """True once the task was cancelled."""
        return self._cancelled

    def result(self) -> Any:
        """What the coroutine returned; re-raises its exception; CancelledError if
        cancelled; RuntimeError while it is not done."""
        self._check_outcome()
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> Optional[BaseException]:
        """The exception that escaped the coroutine, or None; CancelledError if cancelled."""
        self._check_outcome()
        return self._exception

    def _check_outcome(self) -> None:
        if not self._done:
            raise RuntimeError(f"{self!r} is not done")
        if self._cancelled:
            raise CancelledError(f"{self!r} was cancelled")


# ----------------------------------------------------------------------
# sleep and timeout
# ----------------------------------------------------------------------
def _delay(seconds: Optional[float]) -> float:
    """A wait's length checked once: NaN is a ValueError, negative means 0, None or inf never."""
    if seconds is None:
        return math.inf
    if not isinstance(seconds, numbers.Real):
        raise TypeError(f"seconds must be a real number, not {type(seconds).__name__}")
    delay = float(seconds)
    if math.isnan(delay):
        raise ValueError("seconds must not be NaN")
    return delay if delay > 0 else 0.0


def _timer_arm(delay: float) -> Arm:
    """An arm that wakes the task after ``delay`` seconds."""
    def arm(task: Task) -> Callable[[], Any]:
        if delay == math.inf:
            return _nothing_to_disarm
        if delay == 0:
            return task.reactor.call_soon(task.wake).cancel
        return task.reactor.call_later(delay, task.wake).cancel
    return arm


async def sleep(seconds: float) -> None:
    """Suspend the running coroutine for ``seconds`` (0: let the others run first;
    negative: as 0; ``inf``: until cancelled). NaN is a ValueError."""
    await park(_timer_arm(_delay(seconds)))


class timeout:
    """``async with netmux.timeout(seconds):`` raises the builtin ``TimeoutError``
    if the block has not finished after ``seconds`` (None or inf: never).

    The expiry is thrown at whatever the block awaits at that moment; data that
    a ``recv`` had not returned yet stays buffered. Blocks nest: each one raises
    only for its own deadline.
    """

    def __init__(self, seconds: Optional[float]) -> None:
        self._delay = _delay(seconds)
        self._cancel_timer: Callable[[], Any] = _nothing_to_disarm
        self._entered = False
        self.expired = False

    async def __aenter__(self) -> "timeout":
        if self._entered:
            raise RuntimeError("a timeout block cannot be entered twice")
        self._entered = True
        task = await _current_task()
        if self._delay != math.inf:
            self._cancel_timer = task.reactor.call_later(self._delay, self._expire, task).cancel
        return self

    def _expire(self, task: Task) -> None:
        if not task.done():
            self.expired = True
            task._throw(_TimeoutExpired(self))

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], traceback: Any) -> None:
        self._cancel_timer()
        self._cancel_timer = _nothing_to_disarm
        if isinstance(exc, _TimeoutExpired) and exc.scope is self:
            raise TimeoutError(f"timed out after {self._delay} s") from None
