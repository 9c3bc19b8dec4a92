"""errors.py's one rule, kept alike everywhere: the same misbehaving handler (each
method, each kind of exception) over a socket, under a CountingLayer and under
netmux.testing.drive() costs its connection the same way, logged once, and
connection_lost hears an Exception (a BaseException arrives wrapped)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import pytest

import netmux
from netmux.errors import PROPAGATE, lost_reason

from conftest import WAYS, run_one_way

METHODS = ["connection_made", "data_received", "eof_received"]
KINDS = [ValueError, ConnectionResetError, asyncio.CancelledError, netmux.CancelledError]


def misbehaving(method: str, kind: type) -> type:
    class Misbehaves(netmux.Handler):
        lost = False
        lost_exc: Optional[BaseException] = None
        lost_calls = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if method == "connection_made":
                raise kind("bad " + method)

        def data_received(self, data: bytes) -> None:
            if method == "data_received":
                raise kind("bad " + method)

        def eof_received(self) -> Optional[bool]:
            if method == "eof_received":
                raise kind("bad " + method)
            return None

        def connection_lost(self, exc: Optional[BaseException]) -> None:
            self.lost, self.lost_exc = True, exc
            self.lost_calls += 1

    return Misbehaves


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__module__ + "." + kind.__name__)
@pytest.mark.parametrize("method", METHODS)
def test_every_exception_costs_one_connection_the_same_way_everywhere(method, kind, caplog):
    outcomes = {}
    for way in WAYS:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="netmux"):
            outcome = run_one_way(way, misbehaving(method, kind), b"hello")
        errors = [record for record in caplog.records if record.exc_info]
        assert len(errors) == 1, f"{way}: logged {len(errors)} times"
        assert f"{method}()" in errors[0].getMessage() and isinstance(errors[0].exc_info[1], kind)
        exc = outcome.lost_exc
        assert outcome.handler.lost_calls == 1
        assert isinstance(exc, Exception), f"{way}: connection_lost got {exc!r}"
        if issubclass(kind, Exception):
            assert type(exc) is kind
        else:
            assert type(exc) is ConnectionAbortedError and type(exc.__cause__) is kind
        outcomes[way] = (type(exc), type(exc.__cause__), str(exc))
    assert outcomes["socket"] == outcomes["layer"] == outcomes["drive"]


@pytest.mark.parametrize("kind", PROPAGATE)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("way", WAYS)
def test_system_exit_and_keyboard_interrupt_propagate_everywhere(way, method, kind):
    with pytest.raises(kind):
        run_one_way(way, misbehaving(method, kind), b"hello")


def test_lost_reason_keeps_exceptions_and_wraps_the_rest():
    error = OSError("x")
    assert lost_reason(None) is None and lost_reason(error) is error
    wrapped = lost_reason(asyncio.CancelledError())
    assert isinstance(wrapped, ConnectionAbortedError) and isinstance(wrapped.__cause__, asyncio.CancelledError)
    assert str(wrapped) == "connection aborted by CancelledError"


def test_a_cancelled_error_in_data_received_under_drive_aborts_as_over_a_socket():
    """The seams issue's first defect: drive() said aborted=False and the reactor
    logged 'exception in callback ... _pump'."""
    conversation = netmux.testing.drive(misbehaving("data_received", asyncio.CancelledError), [b"x"])
    assert conversation.closed and conversation.transport.aborted
    assert isinstance(conversation.lost_exc, ConnectionAbortedError)
