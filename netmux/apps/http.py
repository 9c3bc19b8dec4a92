"""http: a small HTTP/1.1 server (a hello page, or static files) on netmux and h11.

Where it sits: an application on netmux's public API only (``Handler``,
``TCPServer``, ``transport.sendfile``). h11, the sans-IO HTTP/1.1 library,
turns bytes into request events and keeps HTTP's rules (framing, keep-alive,
one response per request, in order); this module decides what to answer and
never parses HTTP by hand: request smuggling is no place for home-made parsers.

    python -m netmux http [--root DIR]         # the command line
    python -m netmux.apps.http [--root DIR]    # the same server, on its own

What it serves: without ``--root``, a hello page at ``/`` (404 elsewhere).
With ``--root DIR``, the files below DIR: GET and HEAD; Content-Type by file
extension; the validators ``Last-Modified`` and ``ETag`` (nginx's), the
conditional requests (``If-Match``, ``If-None-Match``, ``If-Modified-Since``,
``If-Unmodified-Since``: 304, 412) and byte ranges (``Range``, ``If-Range``:
206, multipart for several, 416), as ``netmux.apps.httpfiles`` decides them
(its docstring has the rules, and where nginx differs); a directory answers
with its index.html (a redirect adds its missing ``/``; no listings), and a
path with a trailing ``/`` must be a directory (``/file.txt/`` is a 404).
Keep-alive and pipelining: requests are answered in order, one at a time;
while a response waits in the write buffer above the high-water mark no
further request is read. HTTP/1.0 closes after the answer unless it asks
``Connection: keep-alive``, which is answered in kind (as nginx does; h11
alone never keeps a 1.0 connection, see ``HTTPHandler._keep_alive_sender``).
Any HTTP/1.x is served as 1.1 (RFC 9110 2.5), another major version is 505.
Files over 64 KiB go out with ``transport.sendfile`` (zero-copy); smaller ones
are read and written with their headers in one piece.

A turn's share: one read brings at most 64 KiB, which can hold 2,000 pipelined
GETs; answering them all at once made every other client wait seconds. So a
connection handles ``HTTPHandler.events_per_turn`` (16) h11 events per turn of
the loop (a request is two: its head and its end; a piece of a body one), then
calls ``transport.yield_turn`` and goes on next turn, in order, reading
nothing meanwhile: 8 requests, under a millisecond, and the others are served.

Deadlines (``--header-timeout``, ``--body-min-rate``, ``--keepalive-timeout``;
the same names on ``Site``), each on the connection's own timer, so they hold
over a socket, under a layer and under ``netmux.testing.drive``:

* a request head must be complete within 20 s of its first byte (of the
  accept, for a connection's first request), else ``408 Request Timeout`` with
  ``Connection: close``. Apache's ``RequestReadTimeout header=20-40`` starts at
  20 s, nginx's ``client_header_timeout`` is 60 s; we take 20: a head comes in
  one packet from any real client, and a slow-header client (slowloris) holds a
  connection slot a third as long.
* a request body gets the same 20 s, plus a second for every 500 bytes that
  came (Apache's ``body=20,MinRate=500``): slower, the connection closes. It is
  answered at its head already (this server never uses a body; nginx discards
  one the same way), so there is no 408 left to send.
* keep-alive: a connection waiting 75 s for the first byte of its next request
  closes (nginx's ``keepalive_timeout``; ``--idle-timeout`` is the server's
  wider rule, no byte either way, and off by default). So does one that has
  read nothing of its answers for 75 s (nginx's ``send_timeout`` is 60).

While a big answer waits for the client to read, the client owes no bytes:
a head or body deadline starts again once we read again.

Never outside the root: the target is percent-decoded once, and a ``..``
segment, a NUL byte or a backslash is a 400; a path is joined below the root
from its segments (so ``//etc/passwd`` is ``ROOT/etc/passwd``), then resolved
with ``realpath``: anything that lands outside (a symlink pointing out) is a
404, as is a file that is not there or not readable. Never off this server: the
``Location`` of the redirect that adds a directory's ``/`` is rebuilt from
those segments, so it starts with exactly one ``/`` (``GET //www.example.org``
is sent to ``/www.example.org/``, never to ``//www.example.org/``, which a
browser reads as another host: the shape of CPython http.server's
CVE-2021-28861).

Errors: 400 (malformed, as h11 or the path check finds it), 404, 405 with
``Allow`` (methods other than GET and HEAD), 413 (a declared body over
``--max-body``), 414 (a request line over ``--max-header-size``), 431 (the
headers over it), 505 (HTTP other than 1.x). After a 400, 413, 414,
431 or 505 the connection closes; the server goes on. An access line per
request is logged at DEBUG on the ``netmux.http`` logger.

test-case-name: tests/test_app_http.py
"""
from __future__ import annotations

import argparse
import logging
import math
import mimetypes
import os
import stat
import sys
import time
from http import HTTPStatus
from typing import Any, List, Optional, Sequence, Set, Tuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

import netmux
from netmux.apps import byte_count, positive_int, duration, stream_server
from netmux.apps import httpfiles

# The optional extra (pip install 'netmux[http]'). Without it this import fails,
# and the command line's registry (apps.load) turns that into one line naming the
# extra; `import netmux` never imports this module.
import h11

__all__ = ["DESCRIPTION", "DEFAULT_PORT", "ALPN_PROTOCOLS", "HELLO_PAGE", "add_arguments", "make_server", "HTTPHandler", "Site"]

DESCRIPTION = "HTTP/1.1: a hello page, or static files below --root (needs h11)"
DEFAULT_PORT = 8080
ALPN_PROTOCOLS = ["http/1.1"]       # announced under --tls-cert (HTTP/2 is not spoken)
UNIX_SOCKETS = True

logger = logging.getLogger("netmux.http")

#: Files up to this size are read and written with their headers; larger ones are sendfile()d.
#: It equals the transport's high-water mark, so a sendfile()d response always pauses
#: reading and its resume_writing (at an empty buffer) tells us its file may close.
SMALL_FILE = 64 * 1024

#: Ranges one request may ask for (Site's and --max-ranges' default): more, and the whole
#: file is sent (200), as nginx's max_ranges does. Apache's MaxRanges is 200; real clients
#: (PDF viewers, download managers) ask for a few; each costs a part head and a system call.
MAX_RANGES = 100

#: Deadlines (the defaults of Site and the command line; the module docstring says why these).
HEADER_TIMEOUT = 20.0         # seconds from a request's first byte to the end of its head: 408
BODY_MIN_RATE = 500.0         # bytes a second a request body must average after HEADER_TIMEOUT
KEEPALIVE_TIMEOUT = 75.0      # seconds a connection may wait for the client: the next request, a read

# What a connection's deadline is about (HTTPHandler._waiting).
_ANSWERING = 0                # a request is being answered: no deadline of the client's
_HEAD = 1                     # a request head has begun (or the connection is new): 408 at the deadline
_BODY = 2                     # a request body is coming: at least body_min_rate after a grace
_NEXT = 3                     # keep-alive: no byte of the next request yet

_ALLOWED = b"GET, HEAD"
#: The page served at "/" without --root (bench/servers/asgi_hello.py serves the same bytes).
HELLO_PAGE = (b"<!doctype html>\n<html><head><title>netmux</title></head>\n"
              b"<body><h1>Hello from netmux</h1><p>A single-threaded reactor, h11 for HTTP.</p></body></html>\n")
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
# Python 3.13 renamed these after RFC 9110; nginx (and Python before 3.13) still say
# these, so the reply is the same on every interpreter.
_REASONS.update({413: b"Request Entity Too Large", 416: b"Requested Range Not Satisfiable",
                 422: b"Unprocessable Entity"})
_HELLO_DATA = h11.Data(data=HELLO_PAGE)         # events are immutable: made once, sent many times
_END = h11.EndOfMessage()


class Site:
    """What every connection of one server shares: the root, the limits, the deadlines,
    the Date header. The deadlines are seconds (``math.inf``: never) and the rate bytes a
    second; their defaults are the command line's (see the module's docstring)."""

    def __init__(self, root: Optional[str] = None, max_header_size: int = 16384,
                 max_body: int = 1 << 20, *, header_timeout: float = HEADER_TIMEOUT,
                 body_min_rate: float = BODY_MIN_RATE, keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 max_ranges: int = MAX_RANGES) -> None:
        if max_header_size < 1 or max_body < 0 or max_ranges < 1:
            raise ValueError("max_header_size and max_ranges must be >= 1 and max_body >= 0")
        for name, value in (("header_timeout", header_timeout), ("body_min_rate", body_min_rate),
                            ("keepalive_timeout", keepalive_timeout)):
            if not value > 0:                    # NaN too
                raise ValueError(f"{name} must be above 0, not {value!r}")
        self.header_timeout = float(header_timeout)
        self.body_min_rate = float(body_min_rate)
        self.keepalive_timeout = float(keepalive_timeout)
        if root == "":                           # realpath("") is the working directory
            raise ValueError("--root '' is not a directory (say --root . to serve this one)")
        self.root = None if root is None else os.path.realpath(root)
        if self.root is not None and not os.path.isdir(self.root):
            raise ValueError(f"--root {root!r} is not a directory")
        self.max_header_size = max_header_size
        self.max_body = max_body
        self.max_ranges = max_ranges
        self._date_second = -1
        self._date = b""
        self._hello: Any = None       # the hello page's Response event, remade with the Date

    def date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = httpfiles.http_date(now)
            self._hello = None
        return self._date

    def common_fields(self) -> List[Tuple[bytes, bytes]]:
        """The header fields every response carries, written once: Date and Server."""
        return [(b"date", self.date()), (b"server", b"netmux")]

    def hello(self) -> Any:
        """The hello page's Response event: h11 events are immutable, so one serves every
        request of the same second (h11 validates its headers once, not per request)."""
        common = self.common_fields()       # first: a new second forgets the cached page
        if self._hello is None:
            self._hello = h11.Response(status_code=200, reason=b"OK", headers=[
                (b"content-type", b"text/html; charset=utf-8"), *common,
                (b"content-length", b"%d" % len(HELLO_PAGE))])
        return self._hello

    def resolve(self, target: bytes) -> Tuple[int, str]:
        """``(200, real path)`` for a target below the root, else ``(status, "")``.
        A path ending in ``/`` (or ``/.``) names a directory: a file there is a 404."""
        root = self.root
        if root is None:
            return 404, ""
        path = target.split(b"?", 1)[0].split(b"#", 1)[0]
        if not path.startswith(b"/"):
            return 400, ""                       # absolute-form and "*" are not for files
        raw = unquote_to_bytes(path)
        if b"\0" in raw or b"\\" in raw:
            return 400, ""
        try:
            segments = raw.decode("utf-8").split("/")
        except UnicodeDecodeError:
            return 400, ""
        if ".." in segments:
            return 400, ""
        joined = os.path.join(root, *[s for s in segments if s not in ("", ".")])
        if segments[-1] in ("", "."):
            joined += os.sep                     # stat() of "file.txt/" fails: ENOTDIR
        # realpath() lstat()s every prefix of the path, found or not: thousands of segments
        # would cost milliseconds. One stat() first answers a missing path (the usual 404,
        # a path over PATH_MAX or with a symlink loop) in one system call.
        try:
            os.stat(joined)
        except (OSError, ValueError):
            return 404, ""
        real = os.path.realpath(joined)
        if real != root and not real.startswith(root + os.sep):
            return 404, ""                       # a symlink that points out
        return 200, real


class HTTPHandler(netmux.Handler):
    """One HTTP/1.1 connection: h11 parses, we answer each request in order, a turn's
    share at a time, and hold the client to the site's deadlines."""

    #: h11 events handled per turn of the loop: a request is two (its head, its end), a
    #: piece of a body one. Then the rest waits, in order, for the next turn
    #: (``transport.yield_turn``) while the reactor serves the other connections.
    events_per_turn = 16

    def __init__(self, site: Site) -> None:
        self.site = site
        self._conn: Any = None         # h11's connection: it reads the requests
        self._sender: Any = None       # the one that writes this answer: _conn, or _keep_alive_sender's
        self._paused = False           # a big response waits: read no further request
        self._yielded = False          # a turn's share is done: the continuation goes on
        self._files: List[Any] = []    # open files whose regions may still be queued
        self._method = b"-"            # of the request being answered, for HEAD and the log
        self._target = b"-"
        self._body_seen = 0            # request body bytes read (and dropped)
        # One timer per connection for every deadline, pushed back lazily (as the
        # transport's idle timer): a request only stamps what it waits for and since when.
        self._waiting = _HEAD
        self._since = 0.0
        self._timer: Any = None
        self._timer_due = math.inf
        self._unsent = -1              # the write buffer at the last deadline: is the peer reading?

    def connection_made(self, transport: netmux.Transport) -> None:
        super().connection_made(transport)
        self._conn = self._sender = self._next_connection(b"", False)
        # Resume only once the buffer is empty: then every queued file is sent and may close.
        transport.set_write_buffer_limits(high=SMALL_FILE, low=0)
        self._wait(_HEAD)              # the first request's clock starts at accept

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._process()               # answers what is complete, then closes (ConnectionClosed)
        return True                   # our write side stays open for those answers

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._close_files()

    def pause_writing(self) -> None:
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._close_files()            # low water is 0: everything queued has been sent
        self._waiting = _ANSWERING     # we did not read meanwhile: the client's clock starts again
        self.transport.resume_reading()
        if not self._yielded:          # else the continuation goes on with them
            self._process()            # pipelined requests h11 already holds

    def drain_started(self) -> None:
        """The server is draining: an idle keep-alive connection closes now; a request
        under way is answered with ``Connection: close``, then the connection closes."""
        super().drain_started()
        if self._waiting == _NEXT and not self._conn.trailing_data[0]:
            self.transport.close()

    def _close_files(self) -> None:
        for file in self._files:
            file.close()
        self._files.clear()

    # ------------------------------------------------------------------
    # Events from h11, a turn's share at a time
    # ------------------------------------------------------------------
    def _process(self) -> None:
        self._yielded = False
        conn = self._conn
        transport = self.transport
        left = self.events_per_turn
        while not self._paused and not transport.is_closing():
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            kind = type(event)
            if kind is h11.Request:
                self._waiting = _ANSWERING
                self._request(event)
                if self._sender.our_state is h11.MUST_CLOSE:   # an error, HTTP/1.0, "Connection: close"
                    transport.close()
                    return
            elif kind is h11.EndOfMessage:
                if self._sender.our_state is h11.MUST_CLOSE:
                    transport.close()
                    return
                if self._sender is conn:
                    conn.start_next_cycle()        # we answered at the Request: both are DONE
                else:                              # HTTP/1.0 kept alive: h11 wants to close this one
                    conn = self._conn = self._sender = self._next_connection(*conn.trailing_data)
            elif kind is h11.Data:                  # a body we do not use: dropped, but bounded
                self._body_seen += len(event.data)
                if self._body_seen > self.site.max_body:
                    transport.close()
                    return
            elif event is h11.NEED_DATA:
                self._note_wait()
                return
            else:                                   # ConnectionClosed, or PAUSED: they must close
                transport.close()
                return
            left -= 1
            if not left > 0:                        # a turn's share (a NaN budget: one event)
                if not self._paused:
                    self._yielded = True
                    transport.yield_turn(self._process)
                return

    # ------------------------------------------------------------------
    # Deadlines: what the connection waits for from the client, and since when
    # ------------------------------------------------------------------
    def _note_wait(self) -> None:
        """h11 needs more bytes: of a body, of a begun head, or of the next request."""
        conn = self._conn
        if conn.their_state is h11.SEND_BODY:
            kind = _BODY
        elif conn.trailing_data[0]:                 # part of a head (at most max_header_size)
            kind = _HEAD
        else:
            kind = _NEXT
        if kind != self._waiting:                   # the same wait goes on: its clock too
            self._wait(kind)

    def _wait(self, kind: int) -> None:
        self._waiting = kind
        now = self._since = self.transport.reactor.turn_time     # this turn's clock: no clock call
        site = self.site
        due = now + (site.keepalive_timeout if kind == _NEXT else site.header_timeout)
        if due < self._timer_due:                   # else the timer fires first and re-arms
            self._arm(due, now)

    def _arm(self, due: float, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.transport.call_later(due - now, self._check_deadline)

    def _check_deadline(self) -> None:
        """The connection's timer: close a client past its deadline, else re-arm."""
        self._timer, self._timer_due = None, math.inf
        site, transport = self.site, self.transport
        now = transport.reactor.turn_time
        unsent = transport.get_write_buffer_size()
        if unsent:                                  # the client owes us reading, not bytes
            if unsent == self._unsent:
                logger.debug("%s: read nothing of its answers in %g s: closing", self._peer(),
                             site.keepalive_timeout)
                transport.abort()                   # close() would wait for that flush
                return
            self._unsent = unsent
            self._arm(now + site.keepalive_timeout, now)
            return
        self._unsent = -1
        kind = self._waiting
        if kind == _HEAD:
            deadline = self._since + site.header_timeout
        elif kind == _BODY:                         # Apache's RequestReadTimeout body=T,MinRate=R
            deadline = self._since + site.header_timeout + self._body_seen / site.body_min_rate
        elif kind == _NEXT:
            deadline = self._since + site.keepalive_timeout
        else:
            deadline = now + site.header_timeout    # answering: nothing owed, look again later
        if now < deadline:
            self._arm(deadline, now)
        else:
            self._too_slow(kind)

    def _too_slow(self, kind: int) -> None:
        site = self.site
        if kind == _HEAD:
            logger.debug("%s: request head not complete in %g s: 408", self._peer(), site.header_timeout)
            self._method = self._target = b"-"
            self._error(408, close=True)
        elif kind == _BODY:                         # answered at its head already: only a close is left
            logger.debug("%s: request body slower than %g bytes/s: closing", self._peer(), site.body_min_rate)
        else:
            logger.debug("%s: no request in %g s: closing", self._peer(), site.keepalive_timeout)
        self.transport.close()

    def _protocol_error(self, exc: Any) -> None:
        """Bad HTTP: answer with h11's status hint when we still may, then close."""
        status = exc.error_status_hint
        if status == 431:
            line_end = self._conn.trailing_data[0].find(b"\n")
            if line_end < 0 or line_end > self.site.max_header_size:
                status = 414                        # the request line alone is over the limit
        logger.debug("%s: bad request (%d): %s", self._peer(), status, exc)
        # Not the last request's method: after a HEAD, this answer's body would be left out
        # while its Content-Length promised it, and h11 would refuse to end it.
        self._method = self._target = b"-"
        if self._sender.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._error(status, close=True)
        self.transport.close()

    def _next_connection(self, data: bytes, closed: bool) -> Any:
        """A new h11 connection, fed what the last one read past its request (and its EOF)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.site.max_header_size)
        if data:
            conn.receive_data(data)
        if closed:
            conn.receive_data(b"")
        return conn

    def _keep_alive_sender(self, method: bytes) -> Any:
        """h11 closes every HTTP/1.0 connection, ``Connection: keep-alive`` or not, and says
        ``Connection: close`` in the answer. nginx (and ``ab -k``) keep such a connection: so
        its answer goes through a stand-in h11 connection that heard the same method in
        HTTP/1.1 (h11 still frames the answer and checks it; a 1.0 client reads HTTP/1.1
        answers, RFC 9110 2.5), and the next request is read by a new connection
        (``_next_connection``) once h11 has read this one's end."""
        sender = h11.Connection(h11.SERVER)
        sender.receive_data(method + b" / HTTP/1.1\r\nhost: -\r\n\r\n")
        sender.next_event()                     # the Request,
        sender.next_event()                     # its EndOfMessage: ready to answer
        return sender

    def _request(self, request: Any) -> None:
        method = self._method = request.method
        self._target = target = _origin_form(request.target)
        self._body_seen = 0
        self._sender = self._conn
        version = request.http_version
        if not version.startswith(b"1."):            # 1.2 is served as 1.1 (RFC 9110 2.5)
            return self._error(505, close=True)
        if version == b"1.0" and _asks_keep_alive(request.headers):
            self._sender = self._keep_alive_sender(method)
        # h11 limits only a request still incomplete: one that came whole is measured here.
        limit = self.site.max_header_size
        if len(request.target) > limit:
            return self._error(414, close=True)
        headers = request.headers
        if len(headers) > 1 and sum(len(name) + len(value) + 4 for name, value in headers) > limit:
            return self._error(431, close=True)
        length = httpfiles.header(headers, b"content-length")
        if length is not None:
            if httpfiles.header(headers, b"transfer-encoding") is not None:
                return self._error(400, close=True)   # both framings: a smuggling attempt (RFC 9112 6.3)
            if int(length) > self.site.max_body:
                return self._error(413, close=True)
        if method != b"GET" and method != b"HEAD":
            return self._error(405, extra=[(b"allow", _ALLOWED)])
        if self.site.root is None:
            if target == b"/" or target.startswith(b"/?"):
                return self._send_hello()
            return self._error(404)
        self._serve_file(request, target)

    # ------------------------------------------------------------------
    # Static files
    # ------------------------------------------------------------------
    def _serve_file(self, request: Any, target: bytes) -> None:
        status, path = self.site.resolve(target)
        if status != 200:
            return self._error(status)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is a 404 anyway).
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return self._error(404)
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            os.close(descriptor)
            if stat.S_ISDIR(info.st_mode):
                return self._serve_directory(request, target, path)
            return self._error(404)
        file = os.fdopen(descriptor, "rb", buffering=0)
        try:
            self._send_file(request, path, file, info)
        except BaseException:
            file.close()
            raise

    def _serve_directory(self, request: Any, target: bytes, path: str) -> None:
        if not target.partition(b"?")[0].endswith(b"/"):
            return self._respond(301, [(b"location", _slash_location(target))], b"")
        index = os.path.join(path, "index.html")
        if not os.path.isfile(index):
            return self._error(404)
        self._serve_file(request, target.partition(b"?")[0] + b"index.html")

    def _send_file(self, request: Any, path: str, file: Any, info: os.stat_result) -> None:
        """The file's answer (httpfiles decides): 304 or 412 by its preconditions, 416, 206
        (one range, or several as multipart/byteranges) or 200; then its bytes."""
        headers = request.headers
        size, mtime, now = info.st_size, int(info.st_mtime), int(time.time())
        tag = httpfiles.entity_tag(size, mtime)
        validators = [(b"last-modified", httpfiles.http_date(mtime)), (b"etag", tag)]
        decided = httpfiles.preconditions(headers, self._method, tag, mtime, now)
        if decided != 200:
            file.close()
            return self._respond(304, validators, b"") if decided == 304 else self._error(decided)
        ranges = self._ranges(headers, size, tag, mtime, now)
        if ranges == []:
            file.close()
            return self._error(416, extra=[(b"content-range", b"bytes */%d" % size)])
        content_type = (mimetypes.guess_type(path)[0] or "application/octet-stream").encode()
        fields = [(b"content-type", content_type), (b"accept-ranges", b"bytes")] + validators
        if ranges is None:
            return self._send_pieces(200, fields, file, [(0, size)], size)
        if len(ranges) == 1:
            offset, count = ranges[0]
            fields.append((b"content-range", b"bytes %d-%d/%d" % (offset, offset + count - 1, size)))
            return self._send_pieces(206, fields, file, ranges, count)
        boundary = os.urandom(10).hex().encode()    # 20 characters, as nginx's; none to guess
        pieces, length = httpfiles.multipart(ranges, size, content_type, boundary)
        fields[0] = (b"content-type", b"multipart/byteranges; boundary=" + boundary)
        self._send_pieces(206, fields, file, pieces, length)

    def _ranges(self, headers: Sequence[Tuple[bytes, bytes]], size: int, tag: bytes, mtime: int,
                now: int) -> Optional[List[Tuple[int, int]]]:
        """The ranges to send (httpfiles.byte_ranges), or None for the whole file: no
        Range, or an If-Range that names another version of the file."""
        requested = httpfiles.header(headers, b"range")
        if requested is None:
            return None
        validator = httpfiles.header(headers, b"if-range")
        if validator is not None and not httpfiles.if_range_holds(validator, tag, mtime, now):
            return None
        return httpfiles.byte_ranges(requested, size, self.site.max_ranges)

    def _send_pieces(self, status: int, fields: List[Tuple[bytes, bytes]], file: Any,
                     pieces: Sequence[httpfiles.Piece], length: int) -> None:
        """Send a file's answer of ``length`` bytes made of ``pieces`` (bytes, and file
        regions): read and written with the head in one piece when small (or HEAD), else
        the head, then each region sendfile()d, in order with the bytes between them."""
        if self._method == b"HEAD" or length <= SMALL_FILE:
            body = b"" if self._method == b"HEAD" else _read_pieces(file, pieces)
            file.close()
            if body is None:
                return self._error(500, close=True)          # the file shrank under us
            return self._respond(status, fields, body, length=length)
        self._respond(status, fields, _Region(length))
        transport = self.transport
        if transport.is_closing():            # the peer reset while the headers went out
            file.close()
            return
        self._files.append(file)
        for piece in pieces:
            if isinstance(piece, bytes):
                transport.write(piece)
            else:
                transport.sendfile(file, piece[0], piece[1])

    # ------------------------------------------------------------------
    # Responses: h11 writes the bytes and keeps its state machine right
    # ------------------------------------------------------------------
    def _respond(self, status: int, fields: List[Tuple[bytes, bytes]], body: Any, *,
                 length: Optional[int] = None, close: bool = False) -> None:
        """Send one response; ``body`` is bytes, or a ``_Region`` the caller sendfile()s.
        ``length`` is the Content-Length when the body is not sent (HEAD)."""
        conn = self._sender
        if length is None:
            length = len(body)
        fields = fields + self.site.common_fields()
        if status != 304:
            fields.append((b"content-length", b"%d" % length))
        if close or self.draining:
            fields.append((b"connection", b"close"))
        elif conn is not self._conn:              # an HTTP/1.0 connection kept alive
            fields.append((b"connection", b"keep-alive"))
        out = conn.send(h11.Response(status_code=status, headers=fields, reason=_REASONS.get(status, b"")))
        if body and self._method != b"HEAD":
            if type(body) is _Region:
                # h11 takes only len() of it (its documented sendfile way); we send the bytes.
                conn.send_with_data_passthrough(h11.Data(data=body))  # type: ignore[arg-type]
            else:
                out += conn.send(h11.Data(data=body))
        out += conn.send(_END)
        self.transport.write(out)
        if logger.isEnabledFor(logging.DEBUG):
            self._log(status, length)

    def _send_hello(self) -> None:
        """The hot path of the hello page: the same events every time, h11 still told."""
        if self.draining:               # the cached page says keep-alive: answer it the long way
            return self._respond(200, [(b"content-type", b"text/html; charset=utf-8")], HELLO_PAGE)
        conn = self._conn
        if self._sender is not conn:              # HTTP/1.0 kept alive: it says so
            return self._respond(200, [(b"content-type", b"text/html; charset=utf-8")], HELLO_PAGE)
        out = conn.send(self.site.hello())
        if self._method != b"HEAD":
            out += conn.send(_HELLO_DATA)
        out += conn.send(_END)
        self.transport.write(out)
        if logger.isEnabledFor(logging.DEBUG):
            self._log(200, len(HELLO_PAGE))

    def _log(self, status: int, length: int) -> None:
        logger.debug('%s "%s %s" %d %d', self._peer(), self._method.decode("latin-1"),
                     self._target.decode("latin-1"), status, length)

    def _error(self, status: int, *, extra: Optional[List[Tuple[bytes, bytes]]] = None,
               close: bool = False) -> None:
        body = b"%d %s\n" % (status, _REASONS.get(status, b""))
        self._respond(status, [(b"content-type", b"text/plain; charset=utf-8")] + (extra or []), body,
                      close=close)

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class _Region:
    """Stands for a file region's bytes in h11's Data event: h11 only takes its length."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


def _asks_keep_alive(headers: Sequence[Tuple[bytes, bytes]]) -> bool:
    """Whether the Connection fields ask for keep-alive (and not also to close)."""
    tokens: Set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return b"keep-alive" in tokens and b"close" not in tokens


#: What a path segment keeps unquoted in a Location (RFC 3986's pchar, less "%").
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


def _slash_location(target: bytes) -> bytes:
    """The Location that adds a directory's missing ``/``: the path rebuilt from its
    decoded segments, so it starts with exactly one ``/`` and names no other host."""
    path, mark, query = target.partition(b"?")
    segments = [segment for segment in unquote_to_bytes(path).split(b"/") if segment not in (b"", b".")]
    rebuilt = "".join("/" + quote_from_bytes(segment, safe=_SEGMENT_SAFE) for segment in segments)
    return rebuilt.encode("ascii") + b"/" + mark + query


def _read_pieces(file: Any, pieces: Sequence[httpfiles.Piece]) -> Optional[bytes]:
    """The bytes of ``pieces``, file regions read with pread; None if the file is shorter."""
    out = []
    for piece in pieces:
        if isinstance(piece, bytes):
            out.append(piece)
            continue
        offset, count = piece
        data = os.pread(file.fileno(), count, offset)
        if len(data) != count:
            return None
        out.append(data)
    return b"".join(out)


def _origin_form(target: bytes) -> bytes:
    """The path and query of a request target: an absolute-form target
    (``http://host/path``, which a server must accept, RFC 9112 3.2.2) loses its
    scheme and authority; any other target is returned as it is."""
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return target
    slash = rest.find(b"/")
    if slash < 0:
        question = rest.find(b"?")
        return b"/" if question < 0 else b"/" + rest[question:]
    return rest[slash:]


# ----------------------------------------------------------------------
# The app interface the command line uses
# ----------------------------------------------------------------------
def _directory(text: str) -> str:
    """--root's type: a name (an empty one would serve the working directory). Whether it
    is a directory Site checks, when the server starts."""
    if not text:
        raise argparse.ArgumentTypeError("an empty name is no directory (say --root . for this one)")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add http's own options."""
    parser.add_argument("--root", type=_directory, default=None, metavar="DIR",
                        help="serve the files below DIR (default: a hello page at /)")
    parser.add_argument("--max-header-size", type=positive_int, default=16384, metavar="BYTES",
                        help="longest request line plus headers (default: 16384; over: 414 or 431)")
    parser.add_argument("--max-body", type=byte_count, default=1 << 20, metavar="BYTES",
                        help="largest request body declared (default: 1 MiB; over: 413)")
    parser.add_argument("--max-ranges", type=positive_int, default=MAX_RANGES, metavar="COUNT",
                        help="byte ranges one request may ask for; more get the whole file "
                             f"(default: {MAX_RANGES})")
    parser.add_argument("--header-timeout", type=duration, default=HEADER_TIMEOUT, metavar="SECONDS",
                        help="from a request's first byte to the end of its head, else 408 and close "
                             f"(default: {HEADER_TIMEOUT:g})")
    parser.add_argument("--body-min-rate", type=positive_int, default=int(BODY_MIN_RATE), metavar="BYTES",
                        help="bytes a second a request body must average once --header-timeout has "
                             f"passed, else the connection closes (default: {BODY_MIN_RATE:g})")
    parser.add_argument("--keepalive-timeout", type=duration, default=KEEPALIVE_TIMEOUT,
                        metavar="SECONDS", help="close a connection that waits this long for its next "
                        f"request, or reads nothing of its answers (default: {KEEPALIVE_TIMEOUT:g})")


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> Any:
    """A TCPServer serving HTTP on ``(args.host, args.port)`` (or a UnixServer
    on ``args.unix``) on ``reactor``."""
    site = Site(getattr(args, "root", None), getattr(args, "max_header_size", 16384),
                getattr(args, "max_body", 1 << 20),
                header_timeout=getattr(args, "header_timeout", HEADER_TIMEOUT),
                body_min_rate=getattr(args, "body_min_rate", BODY_MIN_RATE),
                keepalive_timeout=getattr(args, "keepalive_timeout", KEEPALIVE_TIMEOUT),
                max_ranges=getattr(args, "max_ranges", MAX_RANGES))
    return stream_server(args, lambda: HTTPHandler(site), reactor)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m netmux.apps.http``: the same as ``python -m netmux http`` (one
    command line, one place for options, logging and signals)."""
    from netmux.cli import main as command_line
    return command_line(["http", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
