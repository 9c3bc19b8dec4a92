"""Ready-made servers for ``python -m netmux SERVER``: the registry and the app interface.

Where it sits: above the library, as its users. Each server is one module in
this package, built on what ``netmux`` exports and nothing private, so it
doubles as a worked example. ``netmux/cli.py`` owns the process (the common
options, logging, signals, the reactor); an app module owns only its server.

The interface every app module follows (kept small so a new server is one file):

``DESCRIPTION: str``
    one line for ``python -m netmux --help``.
``DEFAULT_PORT: int``
    the port used when ``--port`` is not given.
``add_arguments(parser: argparse.ArgumentParser) -> None``
    adds the app's own options (the command line adds ``--host``, ``--port``,
    ``--unix``, ``--max-connections``, ``--idle-timeout``, ``--tls-cert``,
    ``--tls-key``, ``--tls-ca`` and ``--log-level`` itself).
``make_server(args: argparse.Namespace, reactor: netmux.Reactor)``
    returns a server (``serve_forever``/``shutdown``/``server_close``/
    ``server_address``) bound to ``(args.host, args.port)`` on ``reactor``,
    or to the Unix socket ``args.unix`` if the app serves one (a stream app
    gets both, and the limits, from ``stream_server``).
``UNIX_SOCKETS: bool`` (optional, default False)
    True when ``make_server`` honours ``--unix`` (it builds its server with
    ``stream_server``, which honours ``--fd``, ``--workers`` and
    ``--proxy-protocol`` too); for the others the command line refuses these
    options with a usage error rather than bind a port.
``WORKERS: bool`` (optional, default True)
    False for a server whose state lives in one process (chat's rooms, kv's
    keyspace): the command line refuses ``--workers``, which would split it.
``ALPN_PROTOCOLS: List[str]`` (optional)
    what the server announces by ALPN under ``--tls-cert`` (http: ``http/1.1``).
``CONNECTIONS: bool`` (optional, default True)
    False for a server without connections (UDP): the command line refuses
    ``--max-connections`` and ``--idle-timeout`` with a usage error rather
    than ignore them.

Modules are imported only when asked for (``load``), so importing ``netmux``
or its command line never imports an app's optional dependency (h11 for
``http``). The argument types below check option values once, for the command
line and the apps alike: a bad value is argparse's usage error, never a
traceback or a server that spins.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import ssl
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

import netmux
from netmux.activation import server_for_socket
from netmux.tls import server_context

__all__ = ["SERVERS", "AppUnavailable", "load", "stream_server", "tls_context", "port_number",
           "positive_int", "byte_count", "duration", "file_descriptor", "grace_seconds",
           "host_port", "log_level"]

# server name -> module in this package, in the order --help lists them.
SERVERS: Dict[str, str] = {
    "echo": "echo",
    "udp-echo": "udp_echo",
    "chat": "chat",
    "kv": "kv",
    "http": "http",
}

# server name -> the pip extra that brings its optional dependencies.
_EXTRAS: Dict[str, str] = {"http": "http"}


class AppUnavailable(Exception):
    """A server's module, or a dependency it needs, cannot be imported here."""


def load(name: str) -> ModuleType:
    """Import the module of server ``name``; AppUnavailable (one line) if it cannot be."""
    module_name = f"{__name__}.{SERVERS[name]}"
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise AppUnavailable(f"the {name} server is not part of this netmux "
                                 f"(no module {module_name})") from None
        hint = f": pip install 'netmux[{_EXTRAS[name]}]'" if name in _EXTRAS else ""
        raise AppUnavailable(f"the {name} server needs {exc.name or exc}{hint}") from None


def stream_server(args: argparse.Namespace, handler_factory: Callable[[], Any],
                  reactor: netmux.Reactor, **kwargs: Any) -> Any:
    """The stream server the common options ask for, on ``reactor``: one serving
    the socket handed over (``args.socket``: ``--fd``, systemd), else a
    ``UnixServer`` on ``args.unix`` when it is given, else a ``TCPServer`` on
    ``(args.host, args.port)`` (SO_REUSEPORT when ``args.reuse_port``: the
    ``--workers``); each with ``--max-connections``, ``--idle-timeout`` and
    ``--proxy-protocol``; TLS with ``--tls-cert`` (``tls_context``). ``kwargs`` go
    to the server as they are. A Namespace built without the common options (an
    app's own parser, in a test) means the defaults for those missing."""
    limits = dict(reactor=reactor, max_connections=getattr(args, "max_connections", None),
                  idle_timeout=getattr(args, "idle_timeout", None),
                  proxy_protocol=getattr(args, "proxy_protocol", False), **kwargs)
    context = tls_context(args)
    if context is not None:
        # The ready-made servers frame what they read (lines, RESP, HTTP lengths),
        # so a truncated stream shows anyway; and many clients (curl, redis-cli)
        # close without close_notify: a ragged EOF is their EOF, not an error.
        limits.update(ssl=context, ssl_tolerate_ragged_eof=True)
    handed = getattr(args, "socket", None)      # --fd or systemd's LISTEN_FDS (cli.py)
    if handed is not None:
        return server_for_socket(handed, handler_factory, **limits)
    path = getattr(args, "unix", None)
    if path is not None:
        return netmux.UnixServer(path, handler_factory, **limits)
    return netmux.TCPServer((args.host, args.port), handler_factory,
                            reuse_port=getattr(args, "reuse_port", False), **limits)


def tls_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The server-side TLS context ``--tls-cert``/``--tls-key``/``--tls-ca`` ask
    for (with the app's ALPN protocols), None without ``--tls-cert``; OSError
    (ssl.SSLError) for a file that is missing or not a certificate or key."""
    certfile = getattr(args, "tls_cert", None)
    if certfile is None:
        return None
    return server_context(certfile, getattr(args, "tls_key", None),
                          cafile=getattr(args, "tls_ca", None),
                          alpn_protocols=getattr(args, "alpn_protocols", None))


# ---------------------------------------------------------------------------
# Argument types: argparse turns their ArgumentTypeError into a usage error.

def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def port_number(text: str) -> int:
    """A TCP/UDP port, 0 (the kernel picks one) to 65535."""
    port = int(_number(text, int))
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def byte_count(text: str) -> int:
    """A whole number of bytes, 0 or more."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def duration(text: str) -> float:
    """A finite duration above 0 (NaN and inf are refused: a timer must fire)."""
    value = _number(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, not {text}")
    return value


def grace_seconds(text: str) -> float:
    """A drain's grace period: a finite number of seconds, 0 (close at once) or more."""
    value = _number(text, float)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, not {text}")
    return value


def host_port(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for an IPv6 host) as ``(host, port)``."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port_number(port)


def file_descriptor(text: str) -> int:
    """An open file descriptor's number, 0 or more."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"a file descriptor is 0 or more, not {value}")
    return value


def log_level(text: str) -> str:
    """A logging level name (any case): DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    name = text.upper()
    if not isinstance(logging.getLevelName(name), int):
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r} (DEBUG, INFO, WARNING, ERROR or CRITICAL)")
    return name
