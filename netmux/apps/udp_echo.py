"""``python -m netmux udp-echo``: the UDP echo server.

One handler serves the one socket: every datagram goes back to its sender.
``--max-connections`` and ``--idle-timeout`` mean nothing without connections,
and ``--unix`` is a stream socket: the command line refuses all three with a
usage error. Pinned by tests/test_cli.py.
"""
from __future__ import annotations

import argparse
from typing import Any

import netmux

DESCRIPTION = "UDP echo: sends every datagram back"
DEFAULT_PORT = 8007
CONNECTIONS = False


class UDPEchoHandler(netmux.DatagramHandler):
    """Sends every datagram back to where it came from."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The UDP echo server has no options of its own."""


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> Any:
    """A UDPServer echoing on ``(args.host, args.port)``."""
    return netmux.UDPServer((args.host, args.port), UDPEchoHandler, reactor=reactor)
