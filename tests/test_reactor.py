"""The reactor: callbacks, timers, descriptors, thread-safe wake-up, errors."""
from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time

import pytest

import netmux
from conftest import run_in_a_thread_until_it_sleeps, run_until
from netmux.testing import VirtualClock


@pytest.fixture(params=["default", "poll"])
def reactor(request):
    """Both dispatch paths: epoll read directly, and the portable selector path."""
    r = netmux.Reactor() if request.param == "default" else netmux.Reactor(selectors.PollSelector())
    yield r
    r.close()


def test_call_soon_runs_in_fifo_order(reactor):
    calls = []
    for i in range(100):
        reactor.call_soon(calls.append, i)
    reactor.run_once(0)
    assert calls == list(range(100))


def test_callbacks_queued_while_running_wait_for_the_next_turn(reactor):
    calls = []

    def first():
        calls.append("first")
        reactor.call_soon(calls.append, "second")

    reactor.call_soon(first)
    reactor.run_once(0)
    assert calls == ["first"]
    reactor.run_once(0)
    assert calls == ["first", "second"]


def test_timers_run_in_deadline_order_and_ties_in_fifo_order(reactor):
    calls = []
    now = reactor.time()
    reactor.call_at(now + 0.03, calls.append, "c")
    reactor.call_at(now + 0.01, calls.append, "a1")
    reactor.call_at(now + 0.01, calls.append, "a2")
    reactor.call_later(0.02, calls.append, "b")
    reactor.call_later(-1, calls.append, "negative delay")      # due at once
    reactor.call_at(now - 5, calls.append, "past deadline")      # due at once, and earlier
    run_until(reactor, lambda: len(calls) == 6)
    assert calls == ["past deadline", "negative delay", "a1", "a2", "b", "c"]


def test_timer_does_not_run_before_its_time(reactor):
    fired = []
    start = reactor.time()
    reactor.call_later(0.1, lambda: fired.append(reactor.time()))
    run_until(reactor, lambda: fired)
    assert fired[0] - start >= 0.1


def test_cancelled_timer_never_runs(reactor):
    calls = []
    timer = reactor.call_later(0.01, calls.append, "cancelled")
    soon = reactor.call_soon(calls.append, "soon-cancelled")
    reactor.call_later(0.02, calls.append, "kept")
    timer.cancel()
    soon.cancel()
    timer.cancel()                      # twice is harmless
    assert timer.cancelled()
    run_until(reactor, lambda: calls)
    assert calls == ["kept"]


def test_cancelled_timers_do_not_pile_up(reactor):
    for _ in range(10_000):
        reactor.call_later(3600, lambda: None).cancel()
    assert len(reactor._timers) <= 200             # the heap itself (statistics() counts live ones)


def test_timer_bounds_the_select_wait(reactor):
    fired = []
    reactor.call_later(0.05, fired.append, True)
    start = time.monotonic()
    reactor.run_once(10)                # must return at the timer, not after 10 s
    run_until(reactor, lambda: fired)
    assert time.monotonic() - start < 2


def test_raising_callback_is_logged_and_the_loop_goes_on(reactor, caplog):
    calls = []

    def boom():
        raise ValueError("boom in a callback")

    reactor.call_soon(boom)
    reactor.call_soon(calls.append, "after")
    with caplog.at_level(logging.DEBUG, logger="netmux"):
        reactor.run_once(0)
        assert calls == ["after"]
        reactor.call_later(0.01, boom)                          # a timer, the same way
        reactor.call_later(0.02, calls.append, "after the timer")
        run_until(reactor, lambda: len(calls) == 2)
    assert calls == ["after", "after the timer"]
    records = [r for r in caplog.records if r.name == "netmux" and r.exc_info]
    assert len(records) == 2
    assert all(r.levelno == logging.ERROR for r in records)
    assert all("boom in a callback" in str(r.exc_info[1]) for r in records)


def test_raising_reader_is_logged_and_the_loop_goes_on(reactor, caplog):
    a, b = socket.socketpair()
    try:
        def bad_reader():
            a.recv(10)
            raise RuntimeError("reader failed")

        reactor.add_reader(a, bad_reader)
        b.send(b"x")
        calls = []
        reactor.call_soon(calls.append, 1)
        with caplog.at_level(logging.ERROR, logger="netmux"):
            reactor.run_once(1)
        assert calls == [1]
        assert any("reader failed" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
        reactor.remove_reader(a)
    finally:
        a.close()
        b.close()


def test_add_and_remove_reader_and_writer(reactor):
    a, b = socket.socketpair()
    try:
        got = []
        reactor.add_reader(a, lambda: got.append(a.recv(100)))
        b.send(b"ping")
        run_until(reactor, lambda: got)
        assert got == [b"ping"]
        writable = []
        reactor.add_writer(a, writable.append, "w")
        run_until(reactor, lambda: writable)
        assert reactor.remove_writer(a) is True
        assert reactor.remove_writer(a) is False
        called = len(writable)
        for _ in range(3):
            reactor.run_once(0)                              # a is still writable: not watched
        assert len(writable) == called
        assert reactor.remove_reader(a) is True
        b.send(b"unread")
        got.clear()
        reactor.run_once(0.05)
        assert got == []
    finally:
        a.close()
        b.close()


def test_call_soon_threadsafe_wakes_a_reactor_sleeping_without_timers(reactor):
    woke = threading.Event()
    finish = run_in_a_thread_until_it_sleeps(lambda: reactor.run_once(None))   # no timeout, no timer
    start = time.monotonic()
    finish(lambda: reactor.call_soon_threadsafe(woke.set))
    assert woke.is_set() and time.monotonic() - start < 1


@pytest.mark.parametrize("how", ["stop", "call_soon_threadsafe(stop)"])
def test_stop_from_another_thread_ends_run(reactor, how):
    finish = run_in_a_thread_until_it_sleeps(reactor.run)       # run() sleeps with nothing to do
    start = time.monotonic()
    finish(reactor.stop if how == "stop" else lambda: reactor.call_soon_threadsafe(reactor.stop))
    assert time.monotonic() - start < 1 and not reactor.is_running()


def test_stop_from_a_callback_ends_run_after_that_turn(reactor):
    calls = []
    reactor.call_soon(calls.append, 1)
    reactor.call_later(0.02, reactor.stop)
    reactor.run()
    assert calls == [1] and not reactor.is_running()


def test_run_once_returns_at_its_timeout_when_idle(reactor):
    start = time.monotonic()
    reactor.run_once(0.05)
    assert 0.03 <= time.monotonic() - start < 1.0


@pytest.mark.parametrize("method, args", [
    ("call_soon", ()), ("call_later", (0.1,)), ("call_at", (0.0,)), ("call_soon_threadsafe", ()),
])
def test_a_callback_that_is_not_callable_is_a_type_error_at_once(reactor, method, args):
    with pytest.raises(TypeError):
        getattr(reactor, method)(*args, 42)


def test_wakeup_never_blocks_even_when_its_buffer_is_full(reactor):
    calls = []
    for i in range(200_000):          # far more bytes than a socket buffer holds
        reactor.call_soon_threadsafe(calls.append, i)
    run_until(reactor, lambda: len(calls) == 200_000)
    assert calls[:3] == [0, 1, 2]
    reactor.run_once(0)               # the drained wake-up pair does not spin


def test_run_inside_run_is_refused(reactor):
    errors = []

    def nested():
        try:
            reactor.run_once(0)
        except RuntimeError as exc:
            errors.append(exc)

    reactor.call_soon(nested)
    reactor.run_once(0)
    assert len(errors) == 1


def test_closed_reactor_refuses_to_run():
    r = netmux.Reactor()
    r.close()
    r.close()                          # idempotent
    assert r.is_closed()
    with pytest.raises(RuntimeError):
        r.run_once(0)


def test_reader_and_writer_callbacks_get_their_arguments(reactor):
    a, b = socket.socketpair()
    try:
        got = []
        reactor.add_reader(a, lambda tag, sock: got.append((tag, sock.recv(10))), "r", a)
        reactor.add_writer(b, got.append, "w")
        a.send(b"")  # nothing; b is writable at once
        b.send(b"hey")
        run_until(reactor, lambda: ("r", b"hey") in got and "w" in got)
        reactor.remove_reader(a)
        reactor.remove_writer(b)
    finally:
        a.close()
        b.close()


def test_cancelling_many_timers_from_an_io_callback_runs_due_timers_once(reactor, caplog):
    """The cancelled-timer purge happens in place: the turn that is running holds the heap."""
    calls = []
    doomed = [reactor.call_later(3600, calls.append, "never") for _ in range(500)]
    reactor.call_at(reactor.time(), calls.append, "due")        # due when the reader runs
    a, b = socket.socketpair()
    try:
        def cancel_all():
            a.recv(10)
            for timer in doomed:
                timer.cancel()

        reactor.add_reader(a, cancel_all)
        b.send(b"x")                     # readable at once: a socketpair has no wire
        with caplog.at_level(logging.ERROR, logger="netmux"):
            for _ in range(5):
                reactor.run_once(0)
        reactor.remove_reader(a)
    finally:
        a.close()
        b.close()
    assert calls == ["due"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(reactor._timers) < 100


def test_a_descriptor_closed_by_an_earlier_callback_is_skipped(reactor):
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        seen = []

        def first():
            seen.append("first")
            pairs[0][0].recv(10)
            reactor.remove_reader(pairs[1][0])     # the other one is ready in this batch too

        reactor.add_reader(pairs[0][0], first)
        reactor.add_reader(pairs[1][0], seen.append, "second")
        pairs[0][1].send(b"x")
        pairs[1][1].send(b"y")                        # both readable now: one batch
        reactor.run_once(1)
        assert seen == ["first"]
        reactor.remove_reader(pairs[0][0])
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# ----------------------------------------------------------------------
# Hardening (issue 8): stale events, absurd timeouts, user BaseExceptions, closed reactors
# ----------------------------------------------------------------------
def test_a_stale_event_never_reaches_the_new_owner_of_a_reused_descriptor(reactor):
    """ae.c's case: a callback closes descriptor N and a new socket takes number N in the
    same batch; the batch's leftover event for N belonged to the old socket."""
    pairs = [socket.socketpair() for _ in range(2)]
    replacement = []
    seen = []

    def first(index):
        if replacement:              # the other one ran first and replaced us: cannot happen
            seen.append(("stale", index))
            return
        pairs[index][0].recv(10)
        other = pairs[1 - index][0]
        number = other.fileno()
        reactor.remove_reader(other)
        other.close()                                   # its event is still in this batch
        fresh, peer = socket.socketpair()
        if fresh.fileno() == number:                    # the kernel reused N already
            new = fresh
        else:                                           # make it take number N
            new = socket.socket(fileno=os.dup2(fresh.fileno(), number))
            fresh.close()
        replacement.extend([new, peer])
        def new_reader():
            seen.append("new reader woken")
            seen.append(new.recv(10, socket.MSG_DONTWAIT))   # BlockingIOError if stale

        reactor.add_reader(new, new_reader)

    reactor.add_reader(pairs[0][0], first, 0)
    reactor.add_reader(pairs[1][0], first, 1)
    pairs[0][1].send(b"x")
    pairs[1][1].send(b"y")                   # both readable now: one batch of two events
    try:
        reactor.run_once(1)
        assert replacement, "no callback ran"
        assert seen == []                   # the new socket has nothing to read: no wake-up
        replacement[1].send(b"z")
        run_until(reactor, lambda: seen)
        assert seen == ["new reader woken", b"z"]
    finally:
        for sock in [pair[0] for pair in pairs] + replacement[:1]:
            if sock.fileno() != -1:
                reactor.remove_reader(sock)
        for sock in replacement + [end for pair in pairs for end in pair]:
            sock.close()


def test_a_negative_run_once_timeout_polls_and_returns(reactor):
    started = time.monotonic()
    for timeout in (-1, -0.001, float("-inf"), 0):
        reactor.run_once(timeout)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("schedule", [
    lambda r: r.call_later(float("nan"), print),
    lambda r: r.call_at(float("nan"), print),
    lambda r: r.run_once(float("nan")),
])
def test_a_nan_delay_or_deadline_is_a_value_error(reactor, schedule):
    with pytest.raises(ValueError):
        schedule(reactor)
    assert reactor.statistics()["timers"] == 0     # nothing was queued
    calls = []
    reactor.call_later(0.01, calls.append, "due")
    run_until(reactor, lambda: calls, timeout=2)   # other timers still run


def test_a_timer_at_inf_or_a_month_away_never_fires_nor_overflows_the_poller(reactor):
    calls = []
    reactor.call_at(float("inf"), calls.append, "inf")
    reactor.call_later(float("inf"), calls.append, "later inf")
    reactor.call_later(30 * 24 * 3600, calls.append, "a month")
    reactor.call_later(1e300, calls.append, "never")
    start = time.monotonic()
    reactor.run_once(0)
    reactor.run_once(0.05)         # such timers do not stretch a bounded wait either
    assert time.monotonic() - start < 1
    # run() sleeps in the poller with only those timers (OverflowError before the cap).
    finish = run_in_a_thread_until_it_sleeps(reactor.run)
    finish(lambda: reactor.call_soon_threadsafe(reactor.stop))
    assert calls == []


class _NotAnError(BaseException):
    """Neither Exception nor SystemExit/KeyboardInterrupt, like asyncio.CancelledError."""


def test_a_callbacks_base_exception_is_logged_and_the_loop_goes_on(reactor, caplog):
    calls = []

    def raise_it():
        raise _NotAnError("from a callback")

    a, b = socket.socketpair()
    try:
        reactor.call_soon(raise_it)
        reactor.call_soon(calls.append, "after")
        reactor.add_reader(a, raise_it)
        b.send(b"x")
        with caplog.at_level(logging.ERROR, logger="netmux"):
            reactor.run_once(1)
            reactor.run_once(0)
        reactor.remove_reader(a)
    finally:
        a.close()
        b.close()
    assert calls == ["after"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(errors) >= 2 and all(r.exc_info[0] is _NotAnError for r in errors)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate_from_a_callback(reactor, exc_type):
    calls = []

    def raise_it():
        raise exc_type()

    reactor.call_soon(raise_it)
    reactor.call_soon(calls.append, "kept")
    with pytest.raises(exc_type):
        reactor.run_once(0)
    reactor.run_once(0)
    assert calls == ["kept"]                       # what was queued after it runs next turn
    reactor.call_soon(raise_it)
    with pytest.raises(exc_type):
        reactor.run()                              # out of run() too
    assert not reactor.is_running()


def test_scheduling_on_a_closed_reactor_is_a_runtime_error():
    r = netmux.Reactor()
    r.close()
    for schedule in (lambda: r.call_soon(print), lambda: r.call_later(1, print),
                     lambda: r.call_at(r.time(), print), lambda: r.call_soon_threadsafe(print)):
        with pytest.raises(RuntimeError):
            schedule()
    assert r.statistics() == dict.fromkeys(r.statistics(), 0)   # nothing queued, nothing held
    assert r.remove_reader(0) is False             # removing is harmless, as asyncio


# ----------------------------------------------------------------------
# What the layers above borrow by name: in flight, statistics
# ----------------------------------------------------------------------
def test_statistics_count_descriptors_timers_ready_in_flight_and_tasks(reactor):
    zeros = {"descriptors": 0, "writers": 0, "timers": 0, "ready": 0, "in_flight": 0, "tasks": 0}
    assert reactor.statistics() == zeros                     # the wake-up socket is not counted
    a, b = socket.socketpair()
    try:
        reactor.add_reader(a, lambda: None)
        reactor.add_writer(b, lambda: None)
        reactor.call_later(3600, print).cancel()             # cancelled: not counted
        reactor.call_later(3600, print)
        reactor.call_soon(print).cancel()
        reactor.call_soon(print)
        reactor.track_in_flight("key", lambda: None)

        async def waits():
            await netmux.sleep(3600)

        reactor.spawn(waits())                               # its first step is one more ready
        assert reactor.statistics() == {"descriptors": 2, "writers": 1, "timers": 1, "ready": 2,
                                        "in_flight": 1, "tasks": 1}
        reactor.run_once(0)                                  # both descriptors survive a wait
        assert reactor.statistics() == {"descriptors": 2, "writers": 1, "timers": 2, "ready": 0,
                                        "in_flight": 1, "tasks": 1}
        reactor.remove_writer(b)
        reactor.forget_in_flight("key")
        assert reactor.statistics()["descriptors"] == 1 and reactor.statistics()["in_flight"] == 0
        reactor.close()
        assert reactor.statistics() == zeros
    finally:
        a.close()
        b.close()


def test_close_calls_each_release_in_flight_exactly_once_in_order():
    r = netmux.Reactor()
    calls = []
    r.track_in_flight(1, lambda: calls.append("replaced"))
    r.track_in_flight(1, lambda: calls.append(1))            # the same key: replaces
    r.track_in_flight("forgotten", lambda: calls.append("forgotten"))
    r.forget_in_flight("forgotten")
    r.forget_in_flight("never tracked")                      # harmless

    def forgets_itself():
        calls.append("self")
        r.forget_in_flight("self")                           # as a release does: a no-op now

    r.track_in_flight("self", forgets_itself)
    r.track_in_flight(3, lambda: calls.append(3))
    r.close()
    r.close()                                                # twice: nothing runs again
    assert calls == [1, "self", 3]
    with pytest.raises(RuntimeError):
        r.track_in_flight(4, print)                          # as scheduling on a closed reactor
    assert r.statistics()["in_flight"] == 0


@pytest.mark.parametrize("path", ["default", "poll"])
def test_read_buffer_and_turn_time_are_the_reactors(path):
    clock = VirtualClock(100.0)
    reactor = netmux.Reactor(None if path == "default" else selectors.PollSelector(), clock=clock)
    try:
        assert isinstance(reactor.read_buffer, memoryview) and not reactor.read_buffer.readonly
        assert len(reactor.read_buffer) >= 65536                 # a UDP datagram fits whole
        assert reactor.turn_time == 100.0
        clock.advance(0.5)
        assert reactor.turn_time == 100.0                        # read once per turn, not per access
        reactor.run_once(0)
        assert reactor.turn_time == 100.5 == reactor.time()
    finally:
        reactor.close()
