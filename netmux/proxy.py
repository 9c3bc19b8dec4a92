"""The PROXY protocol (v1 and v2): a load balancer's header, read by a layer below everything.

Where it sits: the lowest layer on a connection a balancer (HAProxy's
``send-proxy``/``send-proxy-v2``, nginx's ``proxy_protocol on``, AWS NLB)
opened for a client. The balancer writes one header before the client's first
byte, naming the client's real address; this layer reads it, then shows the
handler above a transport whose ``get_extra_info('peername')`` is the client's
and whose ``'proxy_peername'`` is the balancer's. It must sit below TLS: the
header comes first on the wire, before any TLS record.

Two parts, one job each:

* ``ProxyHeaderReader``: sans-IO, bytes in, a ``ProxyHeader`` out (imports no
  socket and no reactor). It follows the specification
  (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt): a v1 line is
  at most 107 bytes with its CRLF; v2 starts with its 12-byte signature, then
  version 2, the command (LOCAL: a balancer's own health check, whose
  addresses are ignored; PROXY), the family and a length; type-length-value
  extensions (TLVs) after the addresses are skipped. Bad bytes raise
  ``ProxyProtocolError`` as soon as they are known (``GET /`` fails at its
  first byte), and the error is sticky, as a framer's.
* ``ProxyProtocolLayer``: the connection's side. The handler above is made
  (``connection_made``) only once the whole header is in, so no byte of the
  header, and nothing before it is complete, ever reaches it; the bytes that
  came after the header in the same read follow at once. A header that is
  malformed, incomplete at the peer's FIN, or not complete within
  ``header_timeout`` (a ``call_later`` of the connection's) aborts the
  connection with one log line; the handler above never hears of it.

What it never does: trust a header on a connection that was not asked to
carry one (the server's ``proxy_protocol=True`` says so for all of its
connections: a client reaching such a port directly is refused, and one
reaching a port without it cannot forge an address), or buffer more than one
header (at most 16 + 65535 bytes for v2).

Pinned by tests/test_proxy.py.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Tuple

from .layer import Layer
from .reactor import positive_seconds

if TYPE_CHECKING:
    from .interface import Transport
    from .reactor import Timer

__all__ = ["ProxyHeader", "ProxyHeaderReader", "ProxyProtocolError", "ProxyProtocolLayer",
           "DEFAULT_HEADER_TIMEOUT", "check_header_timeout"]

logger = logging.getLogger("netmux")

#: Seconds a connection may take to send its whole header. A balancer writes it
#: with its first packet; 10 s leaves room for a loaded one while holding a
#: connection slot a third as long as nginx's ``proxy_protocol_timeout`` (30 s).
DEFAULT_HEADER_TIMEOUT = 10.0

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107             # the longest line, "PROXY TCP6 ... 65535 65535\r\n", CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16                  # signature, version/command, family/protocol, length

# v2 families (the high nibble of byte 13): the address block each needs and its layout.
_V2_ADDRESSES = {
    0x1: struct.Struct("!4s4sHH"),       # AF_INET: source, destination, source port, destination port
    0x2: struct.Struct("!16s16sHH"),     # AF_INET6
    0x3: struct.Struct("!108s108s"),     # AF_UNIX: two sun_path fields
}
_V2_STREAM_PROTOCOLS = (0x0, 0x1)        # UNSPEC, STREAM; DGRAM has no business on a stream


def check_header_timeout(value: float) -> float:
    """A header deadline: seconds above 0, inf meaning none; ValueError otherwise
    (None, 0, negative, NaN), since a connection must not wait unbounded by mistake."""
    if value is None:
        raise ValueError("header_timeout must be a number of seconds (inf: no deadline)")
    positive_seconds("header_timeout", value)
    return value


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header: the connection is refused."""


class ProxyHeader(NamedTuple):
    """What a header said.

    ``source`` is the client's address and ``destination`` the one it reached
    on the balancer: ``(host, port)`` for IPv4, ``(host, port, 0, 0)`` for IPv6
    (as the kernel gives a socket's), a path for a Unix socket. Both are None
    when the header gives none: v2's LOCAL command, v1's ``UNKNOWN``, v2's
    UNSPEC family; then the connection's own addresses stand.
    """

    version: int                         # 1 or 2
    command: str                         # "PROXY" or "LOCAL"
    source: Any
    destination: Any


def _v1_port(text: str) -> int:
    """A v1 port: decimal digits, 0 to 65535, no sign, no leading zero."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or (text[0] == "0" and text != "0"):
        raise ProxyProtocolError(f"bad port {text!r} in a v1 header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"port {port} out of range in a v1 header")
    return port


def _v1_host(text: str, family: str) -> str:
    """A v1 address, written as the socket module writes a peer's (``inet_ntop``):
    the kernel's parser, a hundred times cheaper than ``ipaddress`` on the one
    read every connection makes. No leading zeros, no IPv6 scope."""
    kind = socket.AF_INET if family == "TCP4" else socket.AF_INET6
    try:
        return socket.inet_ntop(kind, socket.inet_pton(kind, text))
    except (OSError, ValueError):
        raise ProxyProtocolError(f"bad {family} address {text!r} in a v1 header") from None


def _parse_v1(buffer: bytearray) -> Optional[Tuple[ProxyHeader, int]]:
    """A v1 line (``PROXY TCP4 src dst sport dport\\r\\n``), or None while incomplete."""
    end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(buffer) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"no CRLF within {V1_MAX_LENGTH} bytes of a v1 header")
        return None
    try:
        parts = buffer[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("a v1 header that is not ASCII") from None
    if len(parts) >= 2 and parts[1] == "UNKNOWN":       # the rest of the line is to be ignored
        return ProxyHeader(1, "PROXY", None, None), end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed v1 header {bytes(buffer[:end])!r}")
    family, source, destination = parts[1], _v1_host(parts[2], parts[1]), _v1_host(parts[3], parts[1])
    extra: Tuple[int, ...] = (0, 0) if family == "TCP6" else ()
    source_address = (source, _v1_port(parts[4])) + extra
    destination_address = (destination, _v1_port(parts[5])) + extra
    return ProxyHeader(1, "PROXY", source_address, destination_address), end + 2


def _v2_addresses(family: int, block: bytes) -> Tuple[Any, Any]:
    """``(source, destination)`` from a v2 address block of ``family``."""
    layout = _V2_ADDRESSES[family]
    if len(block) < layout.size:
        raise ProxyProtocolError(f"a v2 address block of {len(block)} bytes, "
                                 f"family {family} needs {layout.size}")
    fields = layout.unpack_from(block)
    if family == 0x3:
        source_path, destination_path = (os.fsdecode(path.split(b"\0", 1)[0]) for path in fields)
        return source_path, destination_path
    source_host, destination_host, source_port, destination_port = fields
    extra: Tuple[int, ...] = (0, 0) if family == 0x2 else ()
    kind = socket.AF_INET6 if family == 0x2 else socket.AF_INET
    return ((socket.inet_ntop(kind, source_host), source_port) + extra,
            (socket.inet_ntop(kind, destination_host), destination_port) + extra)


def _parse_v2(buffer: bytearray) -> Optional[Tuple[ProxyHeader, int]]:
    """A v2 header (signature already matched as far as it goes), or None while incomplete."""
    if len(buffer) > 12 and buffer[12] >> 4 != 2:
        raise ProxyProtocolError(f"v2 header of version {buffer[12] >> 4}, not 2")
    if len(buffer) > 12 and buffer[12] & 0xF not in (0x0, 0x1):
        raise ProxyProtocolError(f"v2 header with an unknown command {buffer[12] & 0xF}")
    if len(buffer) < _V2_FIXED:
        return None
    length = int.from_bytes(buffer[14:16], "big")
    if len(buffer) < _V2_FIXED + length:
        return None
    end = _V2_FIXED + length
    if buffer[12] & 0xF == 0x0:                 # LOCAL: the balancer's own connection
        return ProxyHeader(2, "LOCAL", None, None), end
    family, protocol = buffer[13] >> 4, buffer[13] & 0xF
    if protocol not in _V2_STREAM_PROTOCOLS:
        raise ProxyProtocolError(f"v2 header for a transport protocol {protocol} (not a stream)")
    if family == 0x0:                           # UNSPEC: nothing to tell, the real endpoints stand
        return ProxyHeader(2, "PROXY", None, None), end
    if family not in _V2_ADDRESSES:
        raise ProxyProtocolError(f"v2 header with an unknown address family {family}")
    source, destination = _v2_addresses(family, bytes(buffer[_V2_FIXED:end]))
    return ProxyHeader(2, "PROXY", source, destination), end   # TLVs after the addresses: skipped


class ProxyHeaderReader:
    """Sans-IO: feed bytes, get the ``ProxyHeader`` once it is complete.

    ``feed(data)`` returns None while the header is incomplete, the header once
    it is; ``rest`` then holds the bytes that came after it. ProxyProtocolError
    as soon as the bytes cannot start a valid header, and on every later feed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: Optional[ProxyProtocolError] = None
        self.header: Optional[ProxyHeader] = None
        self.rest = b""

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete header are held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Optional[ProxyHeader]:
        """Take ``data``; return the header once it is whole (after that, don't feed)."""
        if self._error is not None:
            raise self._error
        if self.header is not None:
            raise RuntimeError("the header is complete: the rest goes to the handler")
        self._buffer += data
        try:
            parsed = self._parse()
        except ProxyProtocolError as exc:
            self._error = exc
            self._buffer.clear()
            raise
        if parsed is None:
            return None
        self.header, end = parsed
        self.rest = bytes(self._buffer[end:])
        self._buffer.clear()
        return self.header

    def _parse(self) -> Optional[Tuple[ProxyHeader, int]]:
        start = bytes(self._buffer[:12])
        if V2_SIGNATURE.startswith(start):
            return None if len(start) < 12 else _parse_v2(self._buffer)
        if V1_PREFIX.startswith(start[:6]):
            return None if len(start) < 6 else _parse_v1(self._buffer)
        raise ProxyProtocolError(f"not a PROXY protocol header: {start[:12]!r}...")


class ProxyProtocolLayer(Layer):
    """Reads the PROXY header, then passes everything through (see the module).

    ``handler``: the handler (or layer, such as TLS) above. ``header_timeout``:
    seconds for the whole header (a positive number; inf: no deadline).
    ``self.header`` is the ``ProxyHeader`` once read, None before.
    """

    def __init__(self, handler: Any, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> None:
        super().__init__(handler)
        self.header_timeout = check_header_timeout(header_timeout)
        self.header: Optional[ProxyHeader] = None
        self._reader = ProxyHeaderReader()
        self._timer: Optional[Timer] = None
        self._held = b""         # bytes after the header, kept while the handler above pauses reading
        self._refused = False

    def connection_made(self, transport: Transport) -> None:
        """Keep the transport below and start the header's deadline; the handler waits."""
        self.transport = transport
        if self.header_timeout != float("inf"):
            self._timer = transport.call_later(self.header_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        """Header bytes until it is whole; then the handler's."""
        if self.header is not None:
            self.handler.data_received(data)
            return
        if self._refused:
            return
        try:
            header = self._reader.feed(data)
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            self._accept(header)

    def _accept(self, header: ProxyHeader) -> None:
        """The header is whole: now the handler above may be made, and hear the rest."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.header = header
        self._held = self._reader.rest
        self.handler.connection_made(self)
        self._deliver_held()

    def _deliver_held(self) -> None:
        if self._held and self.transport.is_reading():
            held, self._held = self._held, b""
            self.handler.data_received(held)

    def resume_reading(self) -> None:
        """Read below again; bytes held since the header go first, next turn."""
        self.transport.resume_reading()
        if self._held:
            self.transport.yield_turn(self._deliver_held)

    def eof_received(self) -> Optional[bool]:
        """The handler's once the header is in; before it, the connection ends here."""
        if self.header is not None:
            return super().eof_received()
        if not self._refused:
            if self._reader.buffered:
                self._refuse("connection closed in the middle of the PROXY header")
            else:               # a plain TCP health check: connect, then close
                logger.debug("PROXY protocol: %r closed before sending a header",
                             self.transport.get_extra_info("peername"))
        return None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Passed up only to a handler that was made."""
        if self.header is not None:
            super().connection_lost(exc)

    def _timed_out(self) -> None:
        self._timer = None
        what = "an incomplete" if self._reader.buffered else "no"
        self._refuse(f"{what} PROXY header after {self.header_timeout:g} s")

    def _refuse(self, reason: str) -> None:
        """One log line, then the connection goes: no byte reached the handler."""
        self._refused = True
        logger.warning("PROXY protocol: %s from %r; closing the connection",
                       reason, self.transport.get_extra_info("peername"))
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``'peername'``: the client's, as the header says (the connection's own when
        it names none); ``'proxy_peername'``: the balancer's; ``'proxy_header'``."""
        if name == "proxy_peername":
            return self.transport.get_extra_info("peername", default)
        if name == "proxy_header":
            return self.header if self.header is not None else default
        if name == "peername" and self.header is not None and self.header.source is not None:
            return self.header.source
        return self.transport.get_extra_info(name, default)
