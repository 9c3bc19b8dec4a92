"""Signals through the reactor: Reactor.add_signal_handler / remove_signal_handler
over signal.set_wakeup_fd on the reactor's wake-up socket."""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, List

import pytest

import netmux
from conftest import run_in_a_thread_until_it_sleeps, run_until


def _raise(signum: int) -> None:
    os.kill(os.getpid(), signum)


def test_a_signal_runs_its_callback_on_the_loop_with_its_arguments(reactor):
    calls: List[Any] = []
    reactor.add_signal_handler(signal.SIGUSR1, lambda *args: calls.append((args, threading.get_ident())), 1, "x")
    _raise(signal.SIGUSR1)
    run_until(reactor, lambda: calls)
    assert calls == [((1, "x"), threading.get_ident())]


def test_a_signal_wakes_a_reactor_sleeping_in_select_with_no_timer(reactor):
    """The reactor runs in a thread, asleep in epoll with nothing scheduled; the
    signal's byte on the wake-up socket wakes it and its callback stops it."""
    ran_on: List[int] = []

    def stop() -> None:
        ran_on.append(threading.get_ident())
        reactor.stop()

    reactor.add_signal_handler(signal.SIGUSR1, stop)
    finish = run_in_a_thread_until_it_sleeps(reactor.run)
    finish(lambda: _raise(signal.SIGUSR1))           # joins the thread within 5 s
    assert len(ran_on) == 1 and ran_on[0] != threading.get_ident()   # on the loop's thread


def test_each_arrival_is_one_call_in_order(reactor):
    calls: List[int] = []
    reactor.add_signal_handler(signal.SIGUSR1, calls.append, 1)
    reactor.add_signal_handler(signal.SIGUSR2, calls.append, 2)
    _raise(signal.SIGUSR1)
    _raise(signal.SIGUSR2)
    _raise(signal.SIGUSR1)
    run_until(reactor, lambda: len(calls) == 3)
    reactor.run_once(0)
    assert calls == [1, 2, 1]


def test_a_thread_wake_up_is_not_taken_for_a_signal(reactor):
    calls: List[int] = []
    reactor.add_signal_handler(signal.SIGUSR1, calls.append, 1)
    done: List[bool] = []
    reactor.call_soon_threadsafe(done.append, True)   # a zero byte on the same socket
    run_until(reactor, lambda: done)
    assert calls == []


def test_remove_gives_back_the_previous_handler_and_wakeup_fd(reactor):
    before = signal.getsignal(signal.SIGUSR1)
    reactor.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) is not before
    assert reactor.remove_signal_handler(signal.SIGUSR1) is True
    assert reactor.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) is before
    assert signal.set_wakeup_fd(-1) == -1               # nothing of ours left behind


def test_replacing_a_callback_keeps_the_first_previous_handler(reactor):
    before = signal.getsignal(signal.SIGUSR1)
    calls: List[str] = []
    reactor.add_signal_handler(signal.SIGUSR1, calls.append, "first")
    reactor.add_signal_handler(signal.SIGUSR1, calls.append, "second")
    _raise(signal.SIGUSR1)
    run_until(reactor, lambda: calls)
    assert calls == ["second"]
    reactor.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) is before


def test_close_gives_back_every_handler_and_the_wakeup_fd():
    reactor = netmux.Reactor()
    before = signal.getsignal(signal.SIGINT)
    reactor.add_signal_handler(signal.SIGINT, lambda: None)
    reactor.add_signal_handler(signal.SIGTERM, lambda: None)
    reactor.close()
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


def test_a_wakeup_fd_set_before_is_restored(reactor):
    import socket
    mine, other = socket.socketpair()
    mine.setblocking(False)
    try:
        signal.set_wakeup_fd(mine.fileno())
        reactor.add_signal_handler(signal.SIGUSR1, lambda: None)
        reactor.remove_signal_handler(signal.SIGUSR1)
        assert signal.set_wakeup_fd(-1) == mine.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        mine.close()
        other.close()


def test_only_the_main_thread_may_add_or_remove(reactor):
    errors: List[BaseException] = []

    def other_thread() -> None:
        try:
            reactor.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and "main thread" in str(errors[0])
    assert signal.set_wakeup_fd(-1) == -1                # refused before touching anything


@pytest.mark.parametrize("sig, error", [(0, ValueError), (10_000, ValueError), (-1, ValueError),
                                        (signal.SIGKILL, OSError), (signal.SIGSTOP, OSError)])
def test_a_bad_signal_is_refused_and_leaves_nothing_behind(reactor, sig, error):
    with pytest.raises(error):
        reactor.add_signal_handler(sig, lambda: None)
    assert signal.set_wakeup_fd(-1) == -1


def test_a_callback_that_is_not_callable_or_a_closed_reactor_is_refused():
    reactor = netmux.Reactor()
    with pytest.raises(TypeError):
        reactor.add_signal_handler(signal.SIGUSR1, "not callable")
    reactor.close()
    with pytest.raises(RuntimeError):
        reactor.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert reactor.remove_signal_handler(signal.SIGUSR1) is False


def test_a_raising_callback_is_logged_and_the_loop_goes_on(reactor, caplog):
    calls: List[int] = []

    def boom() -> None:
        raise ValueError("boom")

    reactor.add_signal_handler(signal.SIGUSR1, boom)
    reactor.add_signal_handler(signal.SIGUSR2, calls.append, 2)
    _raise(signal.SIGUSR1)
    _raise(signal.SIGUSR2)
    run_until(reactor, lambda: calls)
    assert "boom" in caplog.text
