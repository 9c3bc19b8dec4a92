"""The command line: ``python -m netmux [SERVER] [options]``.

Where it sits: outside the library, as its first user. It owns the process:
the options every server shares, logging, one reactor, and the signal handlers
a library must never install itself (SIGINT, SIGTERM -> a drain,
``shutdown(grace=--grace)``, exit code 0; the same signal again closes what is
left at once), installed on the reactor (``add_signal_handler``) so they run
on the loop. ``--stats N`` logs ``server.stats()`` every N seconds and
``--metrics HOST:PORT`` serves it to Prometheus (``netmux/metrics.py``);
SIGHUP under ``--tls-cert`` reads the certificate files again (``reload_tls()``).
The servers themselves live in ``netmux/apps/``, one module each, found
through the registry there; each adds its own options to its own
subcommand, so ``python -m netmux chat --help`` shows chat's.
With no arguments it runs the echo server on 127.0.0.1:8007, and options
without a server name (``python -m netmux --port 9000``) go to echo too.
Pinned by tests/test_cli.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

from . import activation, apps, workers
from .metrics import MetricsServer, stats_line
from .reactor import Reactor

logger = logging.getLogger("netmux")

DEFAULT_SERVER = "echo"


def _add_common_options(parser: argparse.ArgumentParser, defaults: bool,
                        app: Optional[ModuleType] = None) -> None:
    """The options every server shares. A subcommand gets them without defaults
    (SUPPRESS), so a value given before the server name is not overwritten; its
    help names ``app``'s own port, and hides what ``app`` refuses (still parsed,
    so that using one is parse_args' clear error, not "unrecognized arguments")."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    def shown(help_text: str, honoured: bool) -> str:
        return help_text if honoured else argparse.SUPPRESS

    port = app.DEFAULT_PORT if app is not None else "the server's, listed below"
    unix = app is None or getattr(app, "UNIX_SOCKETS", False)
    connections = app is None or getattr(app, "CONNECTIONS", True)
    parser.add_argument("--host", default=default("127.0.0.1"), help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=apps.port_number, default=default(None),
                        help=f"port to bind, 0 for any free one (default: {port})")
    parser.add_argument("--unix", default=default(None), metavar="PATH",
                        help=shown("serve on the Unix socket PATH instead of a port (stream servers)", unix))
    parser.add_argument("--max-connections", type=apps.positive_int, default=default(None), metavar="N",
                        help=shown("stop accepting at N open connections (TCP; default: no limit)",
                                   connections))
    parser.add_argument("--idle-timeout", type=apps.duration, default=default(None), metavar="S",
                        help=shown("close a connection after S idle seconds (TCP; default: never)",
                                   connections))
    parser.add_argument("--tls-cert", default=default(None), metavar="FILE",
                        help=shown("speak TLS with this certificate chain (PEM; SIGHUP reloads it)",
                                   connections))
    parser.add_argument("--tls-key", default=default(None), metavar="FILE",
                        help=shown("the private key of --tls-cert (PEM; default: in the --tls-cert file)",
                                   connections))
    parser.add_argument("--tls-ca", default=default(None), metavar="FILE",
                        help=shown("require client certificates signed by a CA in FILE (mutual TLS)",
                                   connections))
    parser.add_argument("--log-level", type=apps.log_level, default=default("INFO"), metavar="LEVEL",
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)")
    parser.add_argument("--grace", type=apps.grace_seconds, default=default(workers.DEFAULT_GRACE), metavar="S",
                        help="on SIGINT/SIGTERM, let connections finish for up to S seconds "
                             "(default: 10); a second signal closes them at once")
    parser.add_argument("--stats", type=apps.duration, default=default(None), metavar="N",
                        help="log one line of statistics every N seconds")
    parser.add_argument("--metrics", type=apps.host_port, default=default(None), metavar="HOST:PORT",
                        help="serve the statistics to Prometheus at http://HOST:PORT/metrics")
    # Deploying (README "Deploying"): stream servers only.
    parser.add_argument("--fd", type=apps.file_descriptor, default=default(None), metavar="N",
                        help="serve the listening socket at descriptor N, handed over by a parent "
                             "(systemd's LISTEN_FDS is read without it)")
    parser.add_argument("--workers", type=apps.positive_int, default=default(None), metavar="N",
                        help="run N worker processes, each on its own SO_REUSEPORT socket, "
                             "restarted when they die (default: serve in this process)")
    parser.add_argument("--proxy-protocol", action="store_true", default=default(False),
                        help="every connection starts with a PROXY v1/v2 header (behind HAProxy)")


def _prog() -> str:
    """The name the program was run by, for its usage lines: ``python -m netmux``,
    or the console script's own name (``netmux``), as ``sys.argv[0]`` says."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("", "-c", "__main__.py"):
        return "python -m netmux"
    return name


def _parser(prog: str = "python -m netmux") -> Tuple[argparse.ArgumentParser,
                                                    Dict[str, argparse.ArgumentParser], Dict[str, str]]:
    """The parser, each server's subparser, and why a server cannot run here (if so)."""
    parser = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s [SERVER] [options]",
        description="Run a ready-made netmux server until SIGINT or SIGTERM (exit code 0). "
                    f"'{prog} SERVER --help' shows a server's own options.")
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
        _add_common_options(child, defaults=False, app=app)
        app.add_arguments(child)
        children[name] = child
    return parser, children, unavailable


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse a command line as ``main`` does (bad values exit 2 with a usage error).
    ``args.server`` names the server, ``args.port`` is resolved to its default."""
    parser, children, unavailable = _parser(_prog())
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
    _check_deploying_options(args, app, children[args.server])
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


def _check_deploying_options(args: argparse.Namespace, app: Any, parser: argparse.ArgumentParser) -> None:
    """--fd, --workers, --proxy-protocol: for the servers ``apps.stream_server``
    builds (those with UNIX_SOCKETS), and --unix goes with neither of the first two."""
    given = [option for option, value in (("--fd", args.fd is not None),
                                          ("--workers", args.workers is not None),
                                          ("--proxy-protocol", args.proxy_protocol)) if value]
    if given and not getattr(app, "UNIX_SOCKETS", False):
        parser.error(f"{args.server} is not a stream server ({given[0]})")
    if args.workers is not None and not getattr(app, "WORKERS", True):
        parser.error(f"{args.server} keeps its state in one process: --workers would split it")
    if args.workers is not None and (args.stats is not None or args.metrics is not None):
        parser.error("--stats and --metrics count one process: they do not go with --workers")
    if args.unix is not None and (args.fd is not None or args.workers is not None):
        parser.error("--unix binds a socket file: it goes with neither --fd (a socket handed over) "
                     "nor --workers (which share a port; a Unix socket can be shared through --fd)")


def _where(address: Any) -> str:
    """A server address for the log: ``host:port``, or a Unix socket's path."""
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return address if isinstance(address, str) else repr(address)


def _on_signals(reactor: Reactor, server: Any, grace: float) -> None:
    """SIGINT and SIGTERM, on the loop: the first drains, the next closes what is left."""
    received: List[int] = []

    def stop(signum: int) -> None:
        name = signal.Signals(signum).name
        received.append(signum)
        if len(received) == 1:
            logger.info("%s: draining (at most %g s; send it again to stop at once)", name, grace)
            server.shutdown(grace=grace)
        else:
            logger.warning("%s again: closing every connection now", name)
            server.shutdown(grace=0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        reactor.add_signal_handler(sig, stop, sig)


def _log_stats_every(reactor: Reactor, server: Any, seconds: float) -> None:
    """``--stats``: one line every ``seconds``; each line starts a new interval for the
    slowest callback and the loop's load."""
    last: List[Any] = [None]

    def log_line() -> None:
        stats = server.stats()
        reactor.health(reset_slowest=True)
        logger.info("stats: %s", stats_line(stats, last[0]))
        last[0] = stats
        reactor.call_later(seconds, log_line)

    reactor.call_later(seconds, log_line)


def _start_metrics(args: argparse.Namespace, reactor: Reactor, server: Any) -> Optional[MetricsServer]:
    if args.metrics is None:
        return None
    metrics = MetricsServer(args.metrics, server.stats, reactor=reactor)
    logger.info("metrics on http://%s/metrics", _where(metrics.server_address))
    return metrics


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
    try:
        args.socket = activation.inherited_socket(args.fd)     # --fd, or systemd's LISTEN_FDS
        if args.socket is not None and not getattr(apps.load(args.server), "UNIX_SOCKETS", False):
            raise ValueError(f"{args.server} is not a stream server")
    except (OSError, ValueError) as exc:
        print(f"netmux: cannot serve {args.server} on the socket handed over: {exc}", file=sys.stderr)
        return 1
    if args.workers is not None:
        return _serve_workers(args)
    reactor = Reactor(time_callbacks=args.stats is not None or args.metrics is not None)
    try:
        server = apps.load(args.server).make_server(args, reactor)
    except (OSError, ValueError) as exc:     # an address in use, a damaged kv dump file
        reactor.close()
        where = _where(args.unix if args.unix is not None else (args.host, args.port))
        print(f"netmux: cannot start {args.server} on {where}: {exc}", file=sys.stderr)
        return 1
    try:
        metrics = _start_metrics(args, reactor, server)
    except OSError as exc:
        server.server_close()
        reactor.close()
        print(f"netmux: cannot serve metrics on {_where(args.metrics)}: {exc}", file=sys.stderr)
        return 1
    _on_signals(reactor, server, args.grace)
    if args.stats is not None:
        _log_stats_every(reactor, server, args.stats)
    if args.tls_cert is not None:
        reactor.add_signal_handler(signal.SIGHUP, _reload_tls, server, args)
    where = _where(server.server_address)
    logger.info("netmux %s server on %s (Ctrl-C stops it)", args.server, where)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if metrics is not None:
            metrics.server_close()
        reactor.close()             # our signal handlers go, the previous ones come back
        logger.info("netmux %s server on %s stopped", args.server, where)
    return 0


def _serve_workers(args: argparse.Namespace) -> int:
    """``--workers N``: a supervisor forks N servers (workers.py). Each binds its
    own SO_REUSEPORT socket on a port reserved here first (so ``--port 0``
    means one port for all), or all share the socket handed over (``--fd``)."""
    app = apps.load(args.server)
    reserved = None
    if args.socket is None:
        try:
            reserved = workers.reserve_port(args.host, args.port)
        except OSError as exc:
            print(f"netmux: cannot start {args.server} on {_where((args.host, args.port))}: {exc}",
                  file=sys.stderr)
            return 1
        args.port, args.reuse_port = reserved.getsockname()[1], True
    where = _where(args.socket.getsockname() if args.socket is not None else (args.host, args.port))

    def ready() -> None:
        logger.info("netmux %s server on %s (%d workers; Ctrl-C stops them)", args.server, where, args.workers)

    try:
        return workers.serve_workers(lambda: app.make_server(args, Reactor()), args.workers,
                                     grace=args.grace,
                                     on_ready=ready)
    finally:
        for sock in (reserved, args.socket):
            if sock is not None:
                sock.close()
        logger.info("netmux %s server on %s stopped", args.server, where)
