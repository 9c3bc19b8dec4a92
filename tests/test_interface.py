"""netmux.Transport: the declared interface, and the transports that honour it."""
from __future__ import annotations

import inspect
import socket

import netmux
from netmux.interface import EXTRA_INFO_NAMES

from conftest import Recorder, run_until

INTERFACE_METHODS = sorted(name for name, member in vars(netmux.Transport).items()
                           if callable(member) and not name.startswith("_"))


def test_transport_is_the_interface_not_an_alias_of_the_tcp_transport():
    assert netmux.Transport is not netmux.TCPTransport
    assert {"write", "writelines", "sendfile", "write_eof", "can_write_eof", "close", "abort",
            "is_closing", "pause_reading", "resume_reading", "is_reading", "get_write_buffer_size",
            "get_write_buffer_limits", "set_write_buffer_limits", "get_extra_info",
            "get_protocol", "yield_turn", "when_drained"} == set(INTERFACE_METHODS)


def test_tcp_transport_and_layer_declare_every_method_with_compatible_signatures():
    for implementation in (netmux.TCPTransport, netmux.Layer, netmux.CountingLayer):
        for name in INTERFACE_METHODS:
            method = getattr(implementation, name, None)
            assert callable(method), f"{implementation.__name__} lacks {name}()"
            declared = list(inspect.signature(getattr(netmux.Transport, name)).parameters)
            actual = list(inspect.signature(method).parameters)
            assert actual[:len(declared)] == declared, (implementation, name, actual)


def test_a_live_tcp_transport_and_a_layer_on_it_are_transports(reactor):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        handler = netmux.connect(listener.getsockname(), lambda: netmux.Layer(Recorder()),
                                 reactor=reactor, timeout=5)
        run_until(reactor, lambda: handler.transport is not None)
        peer, _ = listener.accept()
        with peer:
            assert isinstance(handler.transport, netmux.Transport)
            assert isinstance(handler, netmux.Transport)             # the layer, as seen from above
            assert handler.handler.transport is handler
            for name in EXTRA_INFO_NAMES:
                if name != "server":
                    assert handler.get_extra_info(name) is not None, name
            assert handler.get_extra_info("server") is None             # connect()ed: no server
            assert handler.get_extra_info("peername") == peer.getsockname()
            assert handler.reactor is reactor
            handler.abort()
            run_until(reactor, lambda: handler.handler.lost)
