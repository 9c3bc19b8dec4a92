"""The command line: ``python -m netmux [SERVER] [options]``.

Where it sits: outside the library, as its first user. It owns the process:
the options every server shares, logging, one reactor, and the signal handlers
a library must never install itself (SIGINT, SIGTERM -> a graceful
``shutdown()``, exit code 0; SIGHUP under ``--tls-cert`` -> the certificate
files read again, ``reload_tls()``). The servers themselves live in ``netmux/apps/``,
one module each, found through the registry there; each adds its own options
to its own subcommand, so ``python -m netmux chat --help`` shows chat's.
With no arguments it runs the echo server on 127.0.0.1:8007, and options
without a server name (``python -m netmux --port 9000``) go to echo too.
Pinned by tests/test_cli.py.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

from . import apps
from .reactor import Reactor

logger = logging.getLogger("netmux")

DEFAULT_SERVER = "echo"


def _add_common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every server shares. A subcommand gets them without defaults
    (SUPPRESS), so a value given before the server name is not overwritten."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--host", default=default("127.0.0.1"), help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=apps.port_number, default=default(None),
                        help="port to bind, 0 for any free one (default: the server's own)")
    parser.add_argument("--unix", default=default(None), metavar="PATH",
                        help="serve on the Unix socket PATH instead of a port (stream servers)")
    parser.add_argument("--max-connections", type=apps.positive_int, default=default(None), metavar="N",
                        help="stop accepting at N open connections (TCP; default: no limit)")
    parser.add_argument("--idle-timeout", type=apps.duration, default=default(None), metavar="S",
                        help="close a connection after S idle seconds (TCP; default: never)")
    parser.add_argument("--tls-cert", default=default(None), metavar="FILE",
                        help="speak TLS with this certificate chain (PEM; stream servers; SIGHUP reloads it)")
    parser.add_argument("--tls-key", default=default(None), metavar="FILE",
                        help="the private key of --tls-cert (PEM; default: in the --tls-cert file)")
    parser.add_argument("--tls-ca", default=default(None), metavar="FILE",
                        help="require client certificates signed by a CA in FILE (mutual TLS)")
    parser.add_argument("--log-level", type=apps.log_level, default=default("INFO"), metavar="LEVEL",
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)")


def _parser() -> Tuple[argparse.ArgumentParser, Dict[str, argparse.ArgumentParser], Dict[str, str]]:
    """The parser, each server's subparser, and why a server cannot run here (if so)."""
    parser = argparse.ArgumentParser(
        prog="python -m netmux", usage="%(prog)s [SERVER] [options]",
        description="Run a ready-made netmux server until SIGINT or SIGTERM (exit code 0). "
                    "'python -m netmux SERVER --help' shows a server's own options.")
    _add_common_options(parser, defaults=True)
    subparsers = parser.add_subparsers(dest="server", metavar="SERVER", prog=parser.prog,
                                       title=f"servers (default: {DEFAULT_SERVER})")
    children: Dict[str, argparse.ArgumentParser] = {}
    unavailable: Dict[str, str] = {}
    for name in apps.SERVERS:
        try:
            app = apps.load(name)
        except apps.AppUnavailable as exc:
            unavailable[name] = str(exc)
            subparsers.add_parser(name, help=f"(unavailable: {exc})", description=str(exc))
            continue
        child = subparsers.add_parser(name, help=f"{app.DESCRIPTION} (port {app.DEFAULT_PORT})",
                                      description=app.DESCRIPTION, usage="%(prog)s [options]")
        _add_common_options(child, defaults=False)
        app.add_arguments(child)
        children[name] = child
    return parser, children, unavailable


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse a command line as ``main`` does (bad values exit 2 with a usage error).
    ``args.server`` names the server, ``args.port`` is resolved to its default."""
    parser, children, unavailable = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.server is None:
        args.server = DEFAULT_SERVER
        children[DEFAULT_SERVER].parse_args([], namespace=args)   # the app's own defaults
    if args.server in unavailable:
        parser.exit(1, f"netmux: {unavailable[args.server]}\n")
    if unknown:
        parser.error("unrecognized arguments: " + " ".join(unknown))
    app = apps.load(args.server)
    if args.unix is not None and not getattr(app, "UNIX_SOCKETS", False):
        children[args.server].error(f"{args.server} cannot serve on a Unix socket (--unix)")
    if not getattr(app, "CONNECTIONS", True):
        for option, value in (("--max-connections", args.max_connections),
                              ("--idle-timeout", args.idle_timeout)):
            if value is not None:       # silently ignoring a limit would be a lie
                children[args.server].error(f"{args.server} has no connections to limit ({option})")
    if args.tls_cert is None:
        for option, value in (("--tls-key", args.tls_key), ("--tls-ca", args.tls_ca)):
            if value is not None:
                children[args.server].error(f"{option} needs --tls-cert")
    elif not getattr(app, "CONNECTIONS", True):
        children[args.server].error(f"{args.server} has no connections to protect (--tls-cert)")
    args.alpn_protocols = getattr(app, "ALPN_PROTOCOLS", None)
    if args.port is None:
        args.port = app.DEFAULT_PORT
    return args


def _where(address: Any) -> str:
    """A server address for the log: ``host:port``, or a Unix socket's path."""
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return address if isinstance(address, str) else repr(address)


def _reload_tls(server: Any, args: argparse.Namespace) -> None:
    """SIGHUP: new connections get the certificate files as they are now (renewed);
    open ones keep theirs. A file that does not load keeps the old context."""
    try:
        context = apps.tls_context(args)
    except (OSError, ValueError) as exc:       # ssl.SSLError is an OSError
        logger.error("SIGHUP: TLS certificate not reloaded (still serving the old one): %s", exc)
        return
    server.reload_tls(context)
    logger.info("SIGHUP: TLS certificate reloaded from %s", args.tls_cert)


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv``, serve until a signal, return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    reactor = Reactor()
    try:
        server = apps.load(args.server).make_server(args, reactor)
    except (OSError, ValueError) as exc:     # an address in use, a damaged kv dump file
        reactor.close()
        where = _where(args.unix if args.unix is not None else (args.host, args.port))
        print(f"netmux: cannot start {args.server} on {where}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: Any) -> None:
        # Runs in the serving thread between two bytecodes: shutdown() only asks
        # the reactor to stop after its current turn, it does not wait.
        logger.info("%s: shutting down", signal.Signals(signum).name)
        server.shutdown()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    if args.tls_cert is not None:
        # The handler only queues the reload: reading files belongs to the loop's turn.
        previous[signal.SIGHUP] = signal.signal(
            signal.SIGHUP, lambda signum, frame: reactor.call_soon_threadsafe(_reload_tls, server, args))
    where = _where(server.server_address)
    logger.info("netmux %s server on %s (Ctrl-C stops it)", args.server, where)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        reactor.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("netmux %s server on %s stopped", args.server, where)
    return 0
