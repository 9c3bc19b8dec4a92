"""The handler base classes: what their defaults promise."""
from __future__ import annotations

import netmux


class FakeTransport:
    def __init__(self):
        self.calls = []

    def pause_reading(self):
        self.calls.append("pause_reading")

    def resume_reading(self):
        self.calls.append("resume_reading")


def test_connection_made_keeps_the_transport():
    handler, transport = netmux.Handler(), FakeTransport()
    assert handler.transport is None
    handler.connection_made(transport)
    assert handler.transport is transport


def test_backpressure_is_on_by_default():
    """pause_writing stops reading from the peer, resume_writing reads again: what keeps an
    echo memory-bounded against a peer that never reads."""
    handler, transport = netmux.Handler(), FakeTransport()
    handler.connection_made(transport)
    handler.pause_writing()
    handler.resume_writing()
    assert transport.calls == ["pause_reading", "resume_reading"]


def test_eof_received_is_falsy_so_the_transport_closes():
    assert not netmux.Handler().eof_received()


def test_default_methods_accept_their_events_quietly():
    handler = netmux.Handler()
    handler.data_received(b"ignored")
    handler.connection_lost(None)
    handler.connection_lost(ConnectionResetError())
    datagrams = netmux.DatagramHandler()
    transport = FakeTransport()
    datagrams.connection_made(transport)
    assert datagrams.transport is transport
    datagrams.datagram_received(b"x", ("127.0.0.1", 1))
    datagrams.error_received(ConnectionRefusedError())
    datagrams.pause_writing()
    datagrams.resume_writing()
    datagrams.connection_lost(None)
    assert transport.calls == []          # a datagram handler does not stop reading by default
