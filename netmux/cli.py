"""The command line: ``python -m netmux [SERVER] [--host H] [--port P]``.

Where it sits: outside the library, as its first user. It builds one of the
ready-made servers, installs the signal handlers a library must never install
itself (SIGINT, SIGTERM -> a graceful ``shutdown()``), and serves until then.
With no arguments it runs the echo server on 127.0.0.1:8007.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from .handler import DatagramHandler, Handler
from .server import TCPServer
from .udp import UDPServer

logger = logging.getLogger("netmux")


class EchoHandler(Handler):
    """Writes back every byte it reads; Handler's default backpressure bounds its memory."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _echo(args: argparse.Namespace) -> Any:
    return TCPServer((args.host, args.port), EchoHandler,
                     max_connections=args.max_connections, idle_timeout=args.idle_timeout)


class UDPEchoHandler(DatagramHandler):
    """Sends every datagram back to where it came from."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


def _udp_echo(args: argparse.Namespace) -> Any:
    return UDPServer((args.host, args.port), UDPEchoHandler)


# name -> (builder, default port, one-line description); later servers add themselves here.
SERVERS: Dict[str, Tuple[Callable[[argparse.Namespace], Any], int, str]] = {
    "echo": (_echo, 8007, "TCP echo: writes back what it reads"),
}


def register_server(name: str, builder: Callable[[argparse.Namespace], Any], port: int,
                    description: str) -> None:
    """Add a ready-made server to the command line."""
    SERVERS[name] = (builder, port, description)


register_server("udp-echo", _udp_echo, 8007, "UDP echo: sends every datagram back")


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<10} {desc} (default port {port})"
                        for name, (_, port, desc) in SERVERS.items())
    parser = argparse.ArgumentParser(
        prog="python -m netmux",
        description="Run a ready-made netmux server until SIGINT or SIGTERM (exit code 0).",
        epilog="servers:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", nargs="?", default="echo", choices=sorted(SERVERS),
                        metavar="SERVER", help="which server to run (default: echo)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (default: the server's own)")
    parser.add_argument("--max-connections", type=int, default=None, help="stop accepting at this many")
    parser.add_argument("--idle-timeout", type=float, default=None, help="close after this many idle seconds")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv``, serve until a signal, return the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    builder, default_port, _ = SERVERS[args.server]
    if args.port is None:
        args.port = default_port
    try:
        server = builder(args)
    except OSError as exc:
        print(f"netmux: cannot start {args.server} on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: Any) -> None:
        # Runs in the serving thread between two bytecodes: shutdown() only asks
        # the reactor to stop after its current turn, it does not wait.
        logger.info("%s: shutting down", signal.Signals(signum).name)
        server.shutdown()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    host, port = server.server_address[:2]
    logger.info("netmux %s server on %s:%d (Ctrl-C stops it)", args.server, host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
