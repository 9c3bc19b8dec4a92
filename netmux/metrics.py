"""Metrics: a server's ``stats()`` as a log line and as Prometheus's text format.

Where it sits: beside the front doors, as their first user. It reads a
``stats()`` dict (``TCPServer.stats``: connections, bytes, the loop's health)
and writes it two ways: ``stats_line`` for ``--stats N`` (one log line every N
seconds), and ``exposition`` for ``--metrics HOST:PORT``, Prometheus's text
exposition format (version 0.0.4), served by ``MetricsServer``: a small HTTP
endpoint built on netmux itself (a ``Handler`` on a ``TCPServer`` on the same
reactor), so scraping needs no dependency and no thread.

The endpoint speaks just enough HTTP/1.1 for a scraper (Prometheus, curl):
one request per connection (``Connection: close``), ``GET`` or ``HEAD`` of
``/metrics`` (404 elsewhere, 405 for another method), a request head of at
most ``MAX_HEAD`` bytes (431 above it) complete within ``HEAD_TIMEOUT``
seconds (then closed). A scraper that misbehaves costs its own connection.

What it never does: count anything itself (the server and the reactor do),
or hold a reference past the answer (each scrape reads ``stats()`` afresh).
Pinned by tests/test_stats.py (``promtool check metrics`` reads the output).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .handler import Handler
from .reactor import Reactor
from .server import TCPServer

__all__ = ["exposition", "stats_line", "MetricsHandler", "MetricsServer", "CONTENT_TYPE"]

StatsValue = Union[int, float, str]

#: The Content-Type of the text exposition format, version 0.0.4.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0

# stats() key -> (metric name, type, help). Counters end in _total and
# units are base units (bytes, seconds), as Prometheus's naming rules ask
# (promtool checks them).
_METRICS: Dict[str, Tuple[str, str, str]] = {
    "open": ("netmux_connections_open", "gauge", "Connections open now."),
    "total": ("netmux_connections_total", "counter", "Connections accepted."),
    "bytes_in": ("netmux_received_bytes_total", "counter", "Bytes read from the connections' sockets."),
    "bytes_out": ("netmux_sent_bytes_total", "counter", "Bytes handed to the connections' sockets."),
    "paused": ("netmux_connections_paused", "gauge", "Open connections whose reading is paused."),
    "paused_writing": ("netmux_connections_paused_writing", "gauge",
                       "Open connections whose write buffer is above its high-water mark."),
    "accept_backoffs": ("netmux_accept_backoffs_total", "counter",
                        "Times accept() ran out of file descriptors and backed off."),
    "handler_errors": ("netmux_handler_errors_total", "counter", "Connections a handler's exception cost."),
    "tls_handshake_failures": ("netmux_tls_handshake_failures_total", "counter", "TLS handshakes that failed."),
    "draining": ("netmux_draining", "gauge", "1 while the server drains its connections."),
    "loop_turns": ("netmux_loop_turns_total", "counter", "Turns of the reactor's loop."),
    "loop_select_seconds": ("netmux_loop_select_seconds_total", "counter",
                            "Seconds the loop waited in select."),
    "loop_callback_seconds": ("netmux_loop_callback_seconds_total", "counter",
                              "Seconds the loop spent running callbacks."),
}
_SLOWEST = ("netmux_loop_slowest_callback_seconds", "gauge",
            "The slowest single callback since the last stats line (by name; 0 unless timed).")


def _number(value: Union[int, float]) -> str:
    """A sample value as the format writes it: integers plainly, floats with repr
    (which round-trips), and +Inf, -Inf, NaN by those names."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_value(text: str) -> str:
    """A label value escaped as the format asks: backslash, double quote, newline."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(stats: Mapping[str, StatsValue]) -> bytes:
    """``stats`` (a ``stats()`` dict) in Prometheus's text exposition format: a
    HELP and a TYPE line, then the sample, per metric. Keys it does not know
    are left out (a new count gets its name and help here first)."""
    lines: List[str] = []
    for key, (name, kind, help_text) in _METRICS.items():
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    seconds = stats.get("loop_slowest_callback_seconds")
    if isinstance(seconds, (int, float)):
        name, kind, help_text = _SLOWEST
        callback = _label_value(str(stats.get("loop_slowest_callback", "")))
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                  f'{name}{{callback="{callback}"}} {_number(seconds)}']
    return ("\n".join(lines) + "\n").encode()


def stats_line(stats: Mapping[str, StatsValue], previous: Optional[Mapping[str, StatsValue]] = None) -> str:
    """One log line for ``--stats``: every count as ``name=value``, and the loop's
    load since ``previous`` (the last line's stats) as ``loop_busy`` in percent."""
    parts = []
    for key, value in stats.items():
        if key == "loop_slowest_callback":
            parts.append(f"{key}={value or '-'}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.3f}" if "seconds" in key else f"{key}={value:g}")
        else:
            parts.append(f"{key}={value}")
    if previous is not None:
        busy = _delta(stats, previous, "loop_callback_seconds")
        idle = _delta(stats, previous, "loop_select_seconds")
        if busy + idle > 0:
            parts.append(f"loop_busy={100 * busy / (busy + idle):.1f}%")
    return " ".join(parts)


def _delta(stats: Mapping[str, StatsValue], previous: Mapping[str, StatsValue], key: str) -> float:
    now, before = stats.get(key, 0), previous.get(key, 0)
    if isinstance(now, (int, float)) and isinstance(before, (int, float)):
        return float(now - before)
    return 0.0


# ----------------------------------------------------------------------
# The scrape endpoint
# ----------------------------------------------------------------------
class MetricsHandler(Handler):
    """One scrape: read a request head, answer it, close."""

    def __init__(self, source: Callable[[], Mapping[str, StatsValue]]) -> None:
        self._source = source
        self._head = bytearray()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.call_later(HEAD_TIMEOUT, transport.close)   # cancelled when it closes first

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        start = max(0, len(self._head) - 3)      # the blank line may straddle two reads
        self._head += data
        end = self._head.find(b"\r\n\r\n", start)
        if end < 0:
            end = self._head.find(b"\n\n", start)
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._answer(431, b"request head too large\n")
            return
        self._request(bytes(self._head[:end]).split(b"\n", 1)[0].rstrip(b"\r"))

    def _request(self, line: bytes) -> None:
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return self._answer(400, b"bad request\n")
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            return self._answer(405, b"only GET and HEAD\n", [b"Allow: GET, HEAD"])
        if target.split(b"?", 1)[0] != b"/metrics":
            return self._answer(404, b"the metrics are at /metrics\n")
        self._answer(200, exposition(self._source()), [b"Content-Type: " + CONTENT_TYPE],
                     head_only=method == b"HEAD")

    def _answer(self, status: int, body: bytes, fields: Optional[List[bytes]] = None,
                head_only: bool = False) -> None:
        reason = _REASONS.get(status, b"")
        if fields is None:
            fields = [b"Content-Type: text/plain; charset=utf-8"]
        head = [b"HTTP/1.1 %d %s" % (status, reason), *fields,
                b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
        self.transport.write(b"\r\n".join(head) + (b"" if head_only else body))
        self.transport.close()


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large"}


class MetricsServer(TCPServer):
    """A ``TCPServer`` answering Prometheus's scrapes with ``exposition(source())``.

    ``source``: a zero-argument callable returning a ``stats()`` dict (a
    server's ``stats`` method). Runs on ``reactor`` beside the server it
    watches; ``server_close()`` it with that server.
    """

    def __init__(self, address: Any, source: Callable[[], Mapping[str, StatsValue]], *,
                 reactor: Optional[Reactor] = None) -> None:
        if not callable(source):
            raise TypeError(f"source must be a callable returning stats, not {source!r}")
        super().__init__(address, lambda: MetricsHandler(source), reactor=reactor, max_connections=64,
                         idle_timeout=HEAD_TIMEOUT)
