"""TLS as a layer: records below, plaintext above, on ``ssl.MemoryBIO`` and ``SSLObject``.

Where it sits: between a stream transport (``TCPTransport``, a PROXY-protocol
reader, ``netmux.testing``'s ``MemoryTransport``) and the user's handler, as a
``netmux.Layer``. The bytes below are TLS records; the handler sees plaintext
through the ``netmux.Transport`` interface, so every handler kind runs over it
unchanged. ``TCPServer(..., ssl=context)``, ``UnixServer(..., ssl=...)`` and
``connect(..., ssl=context, server_hostname=...)`` put it in place
(``server_layer``, ``client_layer``); a test can stack it by hand on
``netmux.testing.pair()``, with no socket at all.

How a connection goes, and the traps each step avoids (asyncio's sslproto.py,
rewritten for 3.11 after uvloop, met the same ones):

* **Handshake first.** The handler is not told ``connection_made`` until the
  handshake is complete, so ``get_extra_info('peercert')`` is there from its
  first line. A handshake not done within ``handshake_timeout`` (a peer that
  stays silent, or trickles a byte a second) is aborted: it costs nothing
  after that. A failed one (plain text to a TLS port, a client that rejects
  our certificate) is logged once at INFO without a traceback (a scanner must
  not flood the log) and closes that connection only, after sending
  OpenSSL's alert; a reset or EOF during it is the peer gone (DEBUG). A
  server's handler never hears of a connection whose handshake failed (it was
  never made, as in asyncio); a client's hears ``connection_lost(exc)``, as for
  a failed connect.
* **Reading.** Each chunk from below goes into the incoming BIO and every
  whole record is decrypted now; the plaintext goes up as one
  ``data_received`` (one chunk below gives at most one call above, so the
  transport's share of a turn holds). A read may need a write (a TLS 1.3 key
  update, an alert): the outgoing BIO is flushed after every read.
* **The peer's close_notify is EOF** (``eof_received``; its falsy return
  closes). Application data after it is discarded. A TCP EOF without
  close_notify ("ragged") is an error (``ssl.SSLEOFError`` in
  ``connection_lost``) unless ``tolerate_ragged_eof``: a truncation attack
  looks exactly like it, but HTTPS peers often skip close_notify.
* **Writing** encrypts at once into the outgoing BIO and hands the records to
  the transport below. A write above 256 KiB, or one behind a queued file,
  waits in a queue (a view of the caller's bytes, not a copy) and is encrypted
  a slice at a time as the transport below drains. When OpenSSL needs to read
  before it can write (TLS 1.2 renegotiation, which we also refuse:
  ``OP_NO_RENEGOTIATION``), the *same* bytes are retried once data has come
  in, as OpenSSL requires.
* **Flow control counts both sides.** ``get_write_buffer_size()`` is the
  plaintext still queued here (a large write, bytes behind a file, file bytes
  not yet read) plus the ciphertext the transport below holds; the handler's
  ``pause_writing``/``resume_writing`` follow that sum against this layer's
  marks. ``sendfile()`` reads the file in pieces, one piece at a time, only
  while the transport below is at or under its low mark: a peer that reads
  nothing stops the reading of the file, memory stays bounded.
* **Closing.** ``close()`` and ``write_eof()`` send close_notify, then FIN
  (after everything queued). ``close()`` then waits for the peer's
  close_notify (or its EOF) for at most ``shutdown_timeout`` seconds and
  aborts if it never comes. Until the socket closes, the transport below
  keeps reading, so a TLS 1.3 session ticket the peer never read cannot turn
  our close into an RST that destroys the tail of the reply.

What it never does: touch a socket or the reactor's internals (only the
transport below), or catch the handler's exceptions (they reach the socket
transport, the one place that logs them and aborts the connection).
Pinned by tests/test_tls.py.
"""
from __future__ import annotations

import logging
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional, Tuple, Union

from .layer import Layer
from .reactor import positive_seconds
from .sendfile import FileRegion, check_file_region, region_count
from .transport import byte_view, water_marks

if TYPE_CHECKING:
    from .framing import BytesLike
    from .interface import Transport
    from .reactor import Timer

__all__ = ["TLSLayer", "TLSSettings", "tls_settings", "check_context", "server_context", "client_context",
           "DEFAULT_HANDSHAKE_TIMEOUT", "DEFAULT_SHUTDOWN_TIMEOUT"]

logger = logging.getLogger("netmux")

#: Seconds a handshake may take (API.md's default; asyncio's is 60).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds ``close()`` waits for the peer's close_notify (asyncio's default).
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

# Plaintext read from the SSLObject per call, a file piece read at once, and the
# most plaintext encrypted at once (a 64 MiB write is not copied whole through
# OpenSSL's buffers: it waits in the queue, as views of the caller's bytes).
_READ_SIZE = 64 * 1024
_FILE_PIECE = 64 * 1024
_ENCRYPT_SLICE = 256 * 1024

# The connection's states, in order.
_HANDSHAKE, _OPEN, _SHUTDOWN, _DONE = "handshake", "open", "shutdown", "done"

SSLContextArgument = Union[ssl.SSLContext, bool, None]


def refuse_renegotiation(context: ssl.SSLContext) -> ssl.SSLContext:
    """Set ``OP_NO_RENEGOTIATION`` on ``context`` (TLS 1.2 renegotiation is a
    denial-of-service lever and a source of the want-read-on-write trap) and
    return it."""
    if not context.options & ssl.OP_NO_RENEGOTIATION:
        context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def server_context(certfile: str, keyfile: Optional[str] = None, *, cafile: Optional[str] = None,
                   alpn_protocols: Optional[List[str]] = None) -> ssl.SSLContext:
    """A server-side context with Python's secure defaults: our certificate chain
    from ``certfile`` (and ``keyfile``), client certificates required and checked
    against ``cafile`` when given (mutual TLS), ``alpn_protocols`` offered.
    OSError or ssl.SSLError for a missing or bad file."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        context.load_verify_locations(cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    if alpn_protocols:
        context.set_alpn_protocols(alpn_protocols)
    return refuse_renegotiation(context)


def client_context(cafile: Optional[str] = None) -> ssl.SSLContext:
    """A client-side context that verifies the server (the system's roots, or
    ``cafile``) and its host name."""
    return refuse_renegotiation(ssl.create_default_context(cafile=cafile))


class TLSSettings:
    """What a server or ``connect()`` was told about TLS, checked once: the
    context (``ssl=True`` on a client: ``ssl.create_default_context()``), the
    timeouts and the ragged-EOF rule. ``wrap(handler)`` makes one connection's
    layer; ``context`` may be swapped (``reload_tls``): open connections keep
    the one they were made with."""

    def __init__(self, context: SSLContextArgument, *, server_side: bool,
                 handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 tolerate_ragged_eof: bool = False) -> None:
        if context is True and not server_side:
            context = ssl.create_default_context()
        self.context = check_context(context)
        self.server_side = server_side
        self.handshake_timeout = positive_seconds("ssl_handshake_timeout", handshake_timeout)
        self.shutdown_timeout = positive_seconds("ssl_shutdown_timeout", shutdown_timeout)
        self.tolerate_ragged_eof = tolerate_ragged_eof

    def wrap(self, handler: Any, server_hostname: Optional[str] = None) -> "TLSLayer":
        """One connection's TLS layer over ``handler``, with the context as it is now."""
        return TLSLayer(handler, self.context, server_side=self.server_side,
                        server_hostname=server_hostname, handshake_timeout=self.handshake_timeout,
                        shutdown_timeout=self.shutdown_timeout,
                        tolerate_ragged_eof=self.tolerate_ragged_eof)


def tls_settings(context: SSLContextArgument, handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 tolerate_ragged_eof: bool = False, *, server_side: bool = True) -> Optional[TLSSettings]:
    """A front door's ``ssl=`` and companions, checked: None without ``ssl``
    (ValueError if a timeout was changed anyway, as asyncio: it would mean nothing)."""
    if context is None or context is False:
        if (handshake_timeout, shutdown_timeout) != (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT):
            raise ValueError("ssl_handshake_timeout and ssl_shutdown_timeout are only meaningful with ssl")
        return None
    return TLSSettings(context, server_side=server_side, handshake_timeout=handshake_timeout,
                       shutdown_timeout=shutdown_timeout, tolerate_ragged_eof=tolerate_ragged_eof)


def check_context(context: Any) -> ssl.SSLContext:
    """``context`` if it is an ``ssl.SSLContext`` (made to refuse renegotiation);
    TypeError otherwise."""
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext, not {type(context).__name__}")
    return refuse_renegotiation(context)


class TLSLayer(Layer):
    """One TLS connection over the transport below, for the handler above.

    ``context``: the ``ssl.SSLContext`` (its certificates, verification, ALPN).
    ``server_side``: which end we are. ``server_hostname``: what a client
    checks the certificate against and sends as SNI. ``handshake_timeout`` and
    ``shutdown_timeout``: seconds, None for never. ``tolerate_ragged_eof``: a
    TCP EOF without close_notify is the peer's EOF, not an error.
    """

    def __init__(self, handler: Any, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: Optional[str] = None,
                 handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 tolerate_ragged_eof: bool = False) -> None:
        super().__init__(handler)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = check_context(context).wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                                    server_hostname=server_hostname)
        self._server_side = server_side
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._tolerate_ragged_eof = tolerate_ragged_eof
        self._state = _HANDSHAKE
        self._timer: Optional[Timer] = None      # the handshake's, then the shutdown's
        self._error: Optional[Exception] = None  # why we ended it, for connection_lost
        self._connected = False                  # the handler heard connection_made
        self._closing = False                    # close() was asked (or the peer closed)
        self._eof_requested = False              # write_eof() was asked
        self._close_notify_sent = False
        self._peer_closed = False                # the peer's close_notify (or tolerated EOF) came
        self._fin_received = False               # ... and its TCP FIN
        self._eof_waiting = False                # ... and waits for the handler to read again
        self._reading = True                     # what the handler asked for
        # Plaintext not yet encrypted, in order: views of bytes, and FileRegions read in pieces.
        self._queue: Deque[Union[memoryview, FileRegion]] = deque()
        self._queued = 0
        self._retry_on_read = False              # a write wanted to read first (renegotiation)
        self._drain_cancel: Optional[Callable[[], None]] = None
        self._drain_waiters: List[List[Any]] = []
        self._high_water, self._low_water = water_marks()
        self._writing_paused = False
        #: Called (no arguments) when the handshake fails or times out: a server
        #: counts them for ``stats()['tls_handshake_failures']``.
        self.on_handshake_failure: Optional[Callable[[], None]] = None

    def __repr__(self) -> str:
        return f"<TLSLayer {self._state} over {self.transport!r}>"

    # ------------------------------------------------------------------
    # The handshake
    # ------------------------------------------------------------------
    def connection_made(self, transport: Transport) -> None:
        """Start the handshake; the handler hears ``connection_made`` once it is done."""
        self.transport = transport
        if self._handshake_timeout is not None:
            self._timer = transport.call_later(self._handshake_timeout, self._handshake_timed_out)
        self._do_handshake()

    def _do_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()                    # OpenSSL's alert tells the peer why
            self._handshake_failed(exc)
            return
        self._flush()                        # our Finished, a server's session tickets
        self._cancel_timer()
        self._state = _OPEN
        self._connected = True
        self.handler.connection_made(self)
        if self._state == _OPEN and self._incoming.pending:
            self._read()                     # application data right behind the Finished
        if self._queue:
            self._pump()

    def _handshake_failed(self, exc: Exception) -> None:
        logger.info("%r: TLS handshake with %r failed: %s", self, self.get_extra_info("peername"), exc)
        self._count_failure()
        self._end(exc, abort=False)

    def _count_failure(self) -> None:
        if self.on_handshake_failure is not None:
            self.on_handshake_failure()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            logger.info("%r: TLS handshake with %r not done after %g s; aborting", self,
                        self.get_extra_info("peername"), self._handshake_timeout)
            self._count_failure()
            self._end(TimeoutError(f"TLS handshake timed out after {self._handshake_timeout} s"),
                      abort=True)

    def _end(self, exc: Optional[Exception], abort: bool) -> None:
        """End the connection below for ``exc`` (what the handler will be told):
        flushing what is queued (an alert) unless ``abort``."""
        if self._error is None:
            self._error = exc
        self._state = _DONE
        self._drop_queue()
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------
    # Reading: records in, plaintext up
    # ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """Records from below: fed to OpenSSL, then whatever this state does with them."""
        if self._state == _DONE or self._peer_closed:
            return                            # after close_notify: discarded, not an error
        self._incoming.write(data)
        if self._state == _HANDSHAKE:
            self._do_handshake()
        elif self._state == _OPEN:
            self._read()
        else:
            self._continue_shutdown()

    def _read(self) -> None:
        """Decrypt every whole record; one ``data_received`` up with the plaintext."""
        chunks, peer_closed = self._decrypt()
        if chunks and self._state == _OPEN and not self._closing:
            self.handler.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if peer_closed and self._state == _OPEN:
            self._peer_closed = True
            self._eof_waiting = True
            self._deliver_eof()
        if self._retry_on_read and self._state == _OPEN:
            self._retry_on_read = False
            self._pump()

    def _decrypt(self) -> Tuple[List[bytes], bool]:
        """The plaintext of every whole record, and whether close_notify came."""
        chunks: List[bytes] = []
        peer_closed = False
        sslobj = self._ssl
        while True:
            try:
                chunk = sslobj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                peer_closed = True
                break
            except ssl.SSLError as exc:
                self._flush()
                logger.info("%r: TLS error from %r: %s", self, self.get_extra_info("peername"), exc)
                self._end(exc, abort=False)
                return chunks, False
            if not chunk:           # CPython's way to say close_notify when ours is not sent yet
                peer_closed = True
                break
            chunks.append(chunk)
            if not (self._incoming.pending or sslobj.pending()):
                # Nothing left to decrypt (OpenSSL takes one record at a time from
                # the BIO): spare the read that would only raise SSLWantReadError.
                break
        self._flush()                         # a read may need a write (key update, alert)
        return chunks, peer_closed

    def _deliver_eof(self) -> None:
        """The peer's EOF up, once the handler reads (it may have paused)."""
        if not (self._eof_waiting and self._reading) or self._state != _OPEN:
            return
        self._eof_waiting = False
        if not self.handler.eof_received():
            self.close()

    def eof_received(self) -> Optional[bool]:
        """TCP's FIN from below: ordinary after close_notify, else an error or,
        when tolerated, EOF."""
        if self._state == _HANDSHAKE:
            logger.debug("%r: the peer closed during the TLS handshake", self)
            self._error = ConnectionResetError("the peer closed the connection during the TLS handshake")
            self._state = _DONE
            return None
        if self._state != _OPEN:
            return None                       # closing: the transport below closes now
        self._fin_received = True
        if self._peer_closed:
            return self._still_writing()
        if not self._tolerate_ragged_eof:
            logger.debug("%r: TCP EOF without close_notify (ragged EOF)", self)
            self._error = ssl.SSLEOFError("the peer closed the TCP connection without "
                                          "a TLS close_notify (ragged EOF)")
            self._state = _DONE
            self._drop_queue()
            return None
        self._peer_closed = self._eof_waiting = True
        self._deliver_eof()
        return self._still_writing()

    def _still_writing(self) -> bool:
        """After the peer's EOF: keep the transport below open while we have
        something to send (a queue to encrypt, or a write side not yet closed)."""
        return bool(self._queue) or not (self._closing or self._eof_requested)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """The end below: timers cancelled; the handler hears it if it ever heard
        ``connection_made`` (or is a client's, whose connect then failed)."""
        self._cancel_timer()
        self._drop_queue()
        self._state = _DONE
        if self._connected or not self._server_side:
            super().connection_lost(exc if exc is not None else self._error)
        else:
            self._lost = True

    # ------------------------------------------------------------------
    # Writing: plaintext in, records down
    # ------------------------------------------------------------------
    def write(self, data: BytesLike) -> None:
        """Encrypt ``data`` and hand the records below (behind a queued file, if
        any). TypeError, ConnectionError and RuntimeError as TCPTransport's."""
        if data.__class__ is not bytes:
            data = bytes(byte_view(data))
        self._check_writable("write")
        if not data:
            return
        if self._queue or self._state != _OPEN or self._retry_on_read or len(data) > _ENCRYPT_SLICE:
            self._enqueue(memoryview(data))    # a large write is encrypted a slice at a time
            return
        # No flow-control check here: with nothing queued, the sum is the buffer
        # below, whose own marks (ours) call pause_writing on us when it rises.
        if not self._encrypt(data) and self._retry_on_read:
            self._queue.append(memoryview(data))   # the same bytes, retried once records come in
            self._queued += len(data)
            self._follow_water_marks()

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset``: read in pieces and
        encrypted while the transport below drains (never all in memory)."""
        check_file_region(file, offset, count)
        self._check_writable("sendfile")
        count = region_count(file, offset, count)
        if count:
            self._enqueue(FileRegion(file, offset, count))

    def _check_writable(self, method: str) -> None:
        if self._closing or self._state == _DONE:
            raise ConnectionError(f"{method}() on a closed or closing transport: {self!r}")
        if self._eof_requested:
            raise RuntimeError(f"{method}() after write_eof()")

    def _enqueue(self, item: Union[memoryview, FileRegion]) -> None:
        self._queue.append(item)
        self._queued += item.remaining if isinstance(item, FileRegion) else len(item)
        self._pump()

    def _encrypt(self, data: Union[bytes, memoryview]) -> bool:
        """Encrypt ``data`` and send the records; False if OpenSSL must read first
        (then the caller keeps ``data`` to retry with the same bytes)."""
        try:
            self._ssl.write(data)
        except ssl.SSLWantReadError:
            self._retry_on_read = True
            return False
        except ssl.SSLError as exc:
            logger.info("%r: TLS error while writing: %s", self, exc)
            self._end(exc, abort=True)
            return False
        self._flush()
        return True

    def _flush(self) -> None:
        """Hand the records OpenSSL produced to the transport below."""
        if self._outgoing.pending and not self.transport.is_closing():
            self.transport.write(self._outgoing.read())

    def _pump(self) -> None:
        """Encrypt what is queued, in order, while the transport below is at or
        under its low mark; wait for it to drain otherwise. Then what waited
        for the queue to empty (close_notify)."""
        while self._queue and self._state == _OPEN and not self._retry_on_read:
            if self.transport.get_write_buffer_size() > self._low_water:
                if self._drain_cancel is None:
                    self._drain_cancel = self.transport.when_drained(self._drained_below)
                break
            if not self._encrypt_next():
                break
        if not self._queue:
            self._queue_empty()
        self._follow_water_marks()

    def _encrypt_next(self) -> bool:
        """Encrypt the queue's next piece; False if nothing more can be done now."""
        item = self._queue[0]
        if not isinstance(item, FileRegion):
            piece = item[:_ENCRYPT_SLICE]
            if not self._encrypt(piece):
                return False               # kept whole: a retry encrypts the same slice
            if len(item) > len(piece):
                self._queue[0] = item[len(piece):]       # a view: no copy of the rest
            else:
                self._queue.popleft()
            self._queued -= len(piece)
            return True
        try:
            piece = item.read(min(item.remaining, _FILE_PIECE))
        except (OSError, ValueError, EOFError) as exc:   # the file's: closed, shorter than promised
            logger.warning("%r: sendfile failed: %s", self, exc)
            self._end(exc, abort=True)
            return False
        if not item.remaining:
            self._queue.popleft()
        self._queue.appendleft(piece)        # encrypted next, as any bytes: a retry reuses them
        return True

    def _drained_below(self) -> None:
        self._drain_cancel = None
        self._pump()

    def _queue_empty(self) -> None:
        """Everything queued is encrypted: close_notify may go, and drain waiters
        hand over to the transport below."""
        waiters, self._drain_waiters = self._drain_waiters, []
        for entry in waiters:
            if entry:
                entry.append(self.transport.when_drained(entry[0]))
        if self._state == _OPEN and (self._closing or self._eof_requested) and not self._close_notify_sent:
            self._send_close_notify()
            if self._closing or self._fin_received:
                self._start_shutdown()

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued = 0
        self._drain_waiters = []
        if self._drain_cancel is not None:
            self._drain_cancel()
            self._drain_cancel = None

    # ------------------------------------------------------------------
    # Flow control: plaintext queued here plus ciphertext below
    # ------------------------------------------------------------------
    def get_write_buffer_size(self) -> int:
        """Plaintext queued here (file bytes included) plus the ciphertext below."""
        return self._queued + int(self.transport.get_write_buffer_size())

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """``(low, high)``: this layer's marks (the transport below has the same)."""
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the marks here and below (default high 64 KiB, low ``high // 4``)."""
        self._high_water, self._low_water = water_marks(high, low)
        self.transport.set_write_buffer_limits(self._high_water, self._low_water)
        self._follow_water_marks()

    def _follow_water_marks(self) -> None:
        if not self._connected or self._state == _DONE:
            return
        size = self.get_write_buffer_size()
        if self._writing_paused:
            if size <= self._low_water:
                self._writing_paused = False
                self.handler.resume_writing()
        elif size > self._high_water:
            self._writing_paused = True
            self.handler.pause_writing()

    def pause_writing(self) -> None:
        """The ciphertext below rose above its mark: the sum surely did too."""
        self._follow_water_marks()

    def resume_writing(self) -> None:
        """The ciphertext below drained: encrypt more of the queue, then follow the sum."""
        self._pump()

    def when_drained(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """``callback()`` once everything queued here is encrypted and the
        transport below is at or under its low mark; a zero-argument cancel."""
        if not self._queue:
            cancel: Callable[[], None] = self.transport.when_drained(callback)
            return cancel
        entry: List[Any] = [callback]
        self._drain_waiters.append(entry)

        def cancel_entry() -> None:
            if len(entry) == 2:
                entry[1]()                   # handed below already
            entry.clear()
        return cancel_entry

    # ------------------------------------------------------------------
    # Reading on and off
    # ------------------------------------------------------------------
    def pause_reading(self) -> None:
        """Stop reading below (records wait in the kernel, EOF too)."""
        self._reading = False
        if self._state != _SHUTDOWN:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read below again; an EOF held back meanwhile comes now."""
        self._reading = True
        self.transport.resume_reading()
        if self._eof_waiting:
            self._deliver_eof()

    def is_reading(self) -> bool:
        """True while plaintext is delivered."""
        return self._reading and not self._closing and self._state == _OPEN

    # ------------------------------------------------------------------
    # Closing: close_notify, then FIN
    # ------------------------------------------------------------------
    def write_eof(self) -> None:
        """Send close_notify then FIN once everything queued is sent; reading goes on."""
        if self._closing or self._eof_requested or self._state == _DONE:
            return
        self._eof_requested = True
        if not self._queue:
            self._queue_empty()

    def can_write_eof(self) -> bool:
        """True: close_notify then FIN is TLS's half-close."""
        return True

    def close(self) -> None:
        """Send what is queued, then close_notify and FIN; close once the peer's
        close_notify (or EOF) comes, or after ``shutdown_timeout``."""
        if self._closing or self._state == _DONE:
            return
        self._closing = True
        if self._state == _HANDSHAKE:
            self._end(None, abort=False)
        elif not self._queue:
            self._queue_empty()

    def abort(self) -> None:
        """Close now: no close_notify, the queue dropped."""
        self._closing = True
        self._end(None, abort=True)

    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was asked or the connection ended."""
        return self._closing or self._state == _DONE or bool(self.transport.is_closing())

    def _send_close_notify(self) -> None:
        """Our close_notify, then FIN below."""
        self._close_notify_sent = True
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass                               # the peer's close_notify has not come yet
        except ssl.SSLError as exc:
            logger.debug("%r: TLS shutdown failed: %s", self, exc)
        self._flush()
        if not self.transport.is_closing():
            self.transport.write_eof()

    def _start_shutdown(self) -> None:
        """Wait for the peer's close_notify, reading whatever the handler paused."""
        self._state = _SHUTDOWN
        if self._shutdown_timeout is not None:
            self._timer = self.transport.call_later(self._shutdown_timeout, self._shutdown_timed_out)
        if self._peer_closed:
            self.transport.close()
            return
        self.transport.resume_reading()
        self._continue_shutdown()

    def _continue_shutdown(self) -> None:
        """Records while shutting down: data discarded; close at the peer's close_notify."""
        try:
            while self._ssl.read(_READ_SIZE):
                pass
        except ssl.SSLWantReadError:
            return
        except ssl.SSLZeroReturnError:
            pass
        except ssl.SSLError as exc:
            logger.debug("%r: TLS error while shutting down: %s", self, exc)
        self._flush()
        self._state = _DONE
        self.transport.close()

    def _shutdown_timed_out(self) -> None:
        self._timer = None
        if self._state == _SHUTDOWN:
            logger.debug("%r: no close_notify from the peer after %g s; aborting", self,
                         self._shutdown_timeout)
            self._state = _DONE
            self.transport.abort()

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's TLS names: ``'ssl_object'``, ``'sslcontext'``, ``'peercert'``,
        ``'cipher'``, ``'compression'``, and ``'alpn_protocol'`` (the protocol
        ALPN selected, or None); the rest from the transport below."""
        sslobj = self._ssl
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return sslobj.context
        if name in ("peercert", "cipher", "compression", "alpn_protocol"):
            if self._state == _HANDSHAKE and name != "compression":
                return default
            value: Any = (sslobj.getpeercert() if name == "peercert" else sslobj.cipher()
                          if name == "cipher" else sslobj.compression() if name == "compression"
                          else sslobj.selected_alpn_protocol())
            return default if value is None else value
        return super().get_extra_info(name, default)
