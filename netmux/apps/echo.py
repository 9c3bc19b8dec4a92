"""``python -m netmux echo``: the TCP echo server, the smallest netmux server there is.

Every byte a client sends comes back. ``Handler``'s default flow control
(stop reading while the write buffer is above high water) keeps it
memory-bounded against a client that sends without reading.
Pinned by tests/test_cli.py.
"""
from __future__ import annotations

import argparse
from typing import Any

import netmux
from netmux.apps import stream_server

DESCRIPTION = "TCP echo: writes back what it reads"
DEFAULT_PORT = 8007
UNIX_SOCKETS = True


class EchoHandler(netmux.Handler):
    """Writes back every byte it reads."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def drain_started(self) -> None:
        """A drain: an echo has no message boundary but the client's end of its
        stream, so every byte sent is still echoed until the client closes (or
        the grace period ends), as nginx's stream proxy drains."""
        super().drain_started()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The echo server has no options of its own."""


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> Any:
    """A TCPServer echoing on ``(args.host, args.port)``, or a UnixServer on ``args.unix``."""
    return stream_server(args, EchoHandler, reactor)
