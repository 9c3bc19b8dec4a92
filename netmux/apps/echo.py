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

    #: A drain closes the connection once the client has been quiet this long
    #: (seconds): an echo's messages have no end but a pause.
    drain_quiet = 0.5
    _quiet: Any = None

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        if self.draining:
            self._close_when_quiet()

    def drain_started(self) -> None:
        """A drain: every byte the client sends is still echoed; once it has sent
        nothing for ``drain_quiet`` seconds, the connection closes (flushing)."""
        super().drain_started()
        self._close_when_quiet()

    def _close_when_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = self.transport.call_later(self.drain_quiet, self.transport.close)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The echo server has no options of its own."""


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> Any:
    """A TCPServer echoing on ``(args.host, args.port)``, or a UnixServer on ``args.unix``."""
    return stream_server(args, EchoHandler, reactor)
