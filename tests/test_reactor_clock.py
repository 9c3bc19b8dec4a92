"""Reactor(clock=...): an injectable clock, and next_deadline() for virtual-time runners."""
from __future__ import annotations

import time
from typing import List

import pytest

import netmux


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked():
    clock = Clock()
    reactor = netmux.Reactor(clock=clock)
    yield reactor, clock
    reactor.close()


def test_the_default_clock_is_monotonic_and_time_is_a_method():
    reactor = netmux.Reactor()
    try:
        before = time.monotonic()
        assert before <= reactor.time() <= time.monotonic()
    finally:
        reactor.close()


def test_timers_time_and_the_wait_read_the_given_clock(clocked):
    reactor, clock = clocked
    fired: List[float] = []
    assert reactor.time() == 100.0
    reactor.call_later(30, lambda: fired.append(reactor.time()))
    reactor.call_at(115, lambda: fired.append(reactor.time()))
    started = time.monotonic()
    reactor.run_once(0.01)                     # nothing due on the given clock: a short real wait
    assert fired == []
    clock.now = 130.0
    reactor.run_once(10)                       # due now: no wait at all
    assert fired == [130.0, 130.0]
    assert time.monotonic() - started < 5


def test_next_deadline_says_when_work_is_due(clocked):
    reactor, clock = clocked
    assert reactor.next_deadline() is None
    late = reactor.call_later(50, lambda: None)
    early = reactor.call_later(5, lambda: None)
    assert reactor.next_deadline() == 105.0
    early.cancel()
    assert reactor.next_deadline() == 150.0          # a cancelled timer is skipped
    reactor.call_soon(lambda: None)
    assert reactor.next_deadline() == 100.0          # queued callbacks: now
    reactor.run_once(0)
    late.cancel()
    assert reactor.next_deadline() is None


@pytest.mark.parametrize("bad", [5, "monotonic"])
def test_a_clock_that_is_not_callable_is_a_type_error(bad):
    with pytest.raises(TypeError):
        netmux.Reactor(clock=bad)


def test_an_idle_timeout_reads_the_reactor_clock(clocked):
    import socket
    reactor, clock = clocked
    lost: List[float] = []

    class Quiet(netmux.Handler):
        def connection_lost(self, exc) -> None:
            lost.append(clock.now)

    server = netmux.TCPServer(("127.0.0.1", 0), Quiet, reactor=reactor, idle_timeout=30)
    try:
        with socket.create_connection(server.server_address, timeout=5):
            deadline = time.monotonic() + 5
            while reactor.next_deadline() is None and time.monotonic() < deadline:
                reactor.run_once(0.01)                # until accepted: the idle timer is armed
            assert reactor.next_deadline() == 130.0
            clock.now = 129.0
            reactor.run_once(0)
            assert lost == []
            clock.now = 130.0
            reactor.run_once(0)
            reactor.run_once(0)
            assert lost == [130.0]
    finally:
        server.server_close()
