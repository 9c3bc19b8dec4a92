"""StreamHandler: socketserver's ``handle()``, as an ``async def``, on the reactor itself.

Where it sits: on top of a transport, like any handler; below the user's
``handle()``. It *is* a callback ``Handler`` (the transport calls
``data_received`` and friends as always) that turns those calls into a
receive buffer and wake-ups for one coroutine, run as a ``Task`` (``tasks.py``).
A blocking loop ported to it changes by a few keywords::

    data = self.request.recv(1024)    ->    data = await self.recv(1024)
    self.request.sendall(data)        ->    await self.sendall(data)

What it owns: the receive buffer, and which task waits to read or to drain.
What it never does: touch the socket (the transport does), or read without
bound: bytes are taken from the socket only while ``handle()`` waits for them
or the buffer holds less than ``max_buffer``; past that the transport stops
reading, the kernel's window fills and the peer is stopped (backpressure).

How the end of a connection reaches ``handle()``:

* the peer's FIN: ``recv`` gives ``b""`` (now and at every later call);
* the connection lost (a reset, a broken pipe): ``ConnectionError`` at the
  next ``await`` of ``recv``/``sendall``; the coroutine is never cancelled
  behind its back, so it can log, clean up, or return;
* ``server_close()``: ``self.server`` is the transport's
  ``get_extra_info("server")`` (a name every layer passes down unchanged), and
  it is ``is_closed()`` when it closes the connections; the
  connection's ``connection_lost`` then *closes* the coroutine (GeneratorExit
  at its ``await``: ``finally`` blocks and context managers run before
  ``server_close()`` returns; an ``await`` inside such a ``finally`` raises
  GeneratorExit again at once, see ``tasks.py``).

Pinned by ``tests/test_stream.py``.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Optional

from .errors import PROPAGATE
from .framing import BytesLike, FramingError, check_count
from .handler import Handler
from .interface import Transport
from .tasks import Task, park, sleep

__all__ = ["StreamHandler", "IncompleteReadError"]

logger = logging.getLogger("netmux")


def _nothing() -> None:
    pass


class IncompleteReadError(EOFError):
    """EOF came before ``recv_exactly(n)`` had its ``n`` bytes (asyncio's name).

    ``partial`` holds the bytes read; ``expected`` is ``n``.
    """

    def __init__(self, partial: bytes, expected: int) -> None:
        super().__init__(f"{len(partial)} bytes read on a total of {expected} expected bytes")
        self.partial = partial
        self.expected = expected

    def __reduce__(self) -> Any:
        return type(self), (self.partial, self.expected)


class StreamHandler(Handler):
    """Override ``async def handle(self)``: it runs once per connection, and the
    connection closes (after flushing) when it returns.

    Do not override the callback methods (``data_received`` ...): they feed
    ``recv``. ``self.server`` is the TCPServer (None for ``connect()``),
    ``self.client_address`` the peer's address.
    """

    #: Stop reading from the socket while this many bytes wait unread in the
    #: receive buffer (and no recv waits): a handler that does not read stops its peer.
    max_buffer = 64 * 1024
    #: Fairness: at most this many ``recv``/``recv_exactly``/``readline`` calls in a
    #: row are answered from the buffer without waiting; the next one lets the
    #: other connections have their turn first (as ``await netmux.sleep(0)``).
    #: 64 KiB of pipelined one-byte lines would otherwise all be served in one turn.
    reads_per_turn = 64
    _streak = 0                            # reads answered since the task last waited

    server: Any = None
    client_address: Any = None

    async def handle(self) -> None:
        """Serve the connection: override this."""

    # ------------------------------------------------------------------
    # The user's side: awaitables and close()
    # ------------------------------------------------------------------
    async def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes as soon as any are there; ``b""`` at EOF and at every
        later call (and for ``n == 0``). ConnectionError if the connection was lost."""
        if n.__class__ is not int or n < 0:
            check_count("n", n)
        if self._streak >= self.reads_per_turn:    # fairness: see reads_per_turn
            await self._next_turn()
        self._streak += 1
        while not self._buffer:
            # _at_end() and _wait_for_data() inlined (a call each per message):
            # _at_end can only say yes once one of these flags is set.
            if n == 0 or (self._eof or self._close_requested or self._lost) and self._at_end():
                return b""
            if self._reader is not None:
                raise RuntimeError("another task is already waiting to read")
            data: Optional[bytes] = await park(self._arm_reader)
            if data is not None:           # handed to us directly, unbuffered
                if len(data) <= n:
                    return data
                self._buffer += data
        return self._take(n)

    async def recv_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; IncompleteReadError (an EOFError) if EOF comes first."""
        check_count("n", n)
        if self._streak >= self.reads_per_turn:    # fairness: see reads_per_turn
            await self._next_turn()
        self._streak += 1
        buffer = self._buffer
        while len(buffer) < n:
            if self._at_end():
                raise IncompleteReadError(self._take(len(buffer)), n)
            data = await self._wait_for_data()
            if data is not None:
                buffer += data
        return self._take(n)

    async def readline(self, limit: int = 65536) -> bytes:
        """One line with its ``b"\\n"``; at EOF the rest without one, then ``b""``.

        FramingError (a ValueError) for a line longer than ``limit`` bytes, the
        ``b"\\n"`` not counted (``LineFramer``'s ``max_length``): the stream is bad.
        """
        check_count("limit", limit)
        if self._streak >= self.reads_per_turn:    # fairness: see reads_per_turn
            await self._next_turn()
        self._streak += 1
        buffer = self._buffer
        start = 0                          # bytes already searched: each byte is looked at once
        while True:
            end = buffer.find(b"\n", start)
            if end >= 0:
                if end > limit:
                    raise FramingError(f"line longer than {limit} bytes")
                return self._take(end + 1)
            if len(buffer) > limit:
                raise FramingError(f"line longer than {limit} bytes (no newline yet)")
            start = len(buffer)
            if self._at_end():
                return self._take(start)
            data = await self._wait_for_data()
            if data is not None:
                buffer += data

    async def sendall(self, data: BytesLike) -> None:
        """Write ``data``, then wait until the write buffer is at or below the
        low-water mark. ConnectionError if the connection is lost or closed."""
        if self._lost_exc is not None:
            raise self._connection_error()
        transport = self.transport
        transport.write(data)             # ConnectionError itself once closing
        size = transport.get_write_buffer_size()
        if size and size > transport.get_write_buffer_limits()[0]:
            if self._writer is not None:
                raise RuntimeError("another task is already waiting in sendall()")
            await park(self._arm_writer)
            self._raise_if_lost()
        if transport.is_closing():        # the send failed (a reset): the data is lost
            self._raise_if_lost()

    async def _next_turn(self) -> None:
        """``reads_per_turn`` reads in a row answered at once: let the others go first."""
        await sleep(0)
        self._streak = 0

    def close(self) -> None:
        """Close after flushing what was sent; ``handle()`` may go on, and a later
        ``recv`` gives ``b""``."""
        self._close_requested = True
        del self._buffer[:]
        self.transport.close()
        self._wake_reader()

    # ------------------------------------------------------------------
    # The transport's side: the Handler callbacks
    # ------------------------------------------------------------------
    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.client_address = transport.get_extra_info("peername")
        self.server = transport.get_extra_info("server")
        self._buffer = bytearray()
        self._reading = True               # what we last told the transport
        self._eof = False
        self._close_requested = False
        self._lost = False
        self._lost_exc: Optional[Exception] = None
        self._reader: Optional[Task] = None   # the task waiting for data, if any
        self._writer: Optional[Task] = None   # the task waiting for the buffer to drain
        self._cancel_drain_wait: Callable[[], None] = _nothing
        self._task = transport.reactor.spawn(self._serve())

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is not None and not self._buffer:
            self._reader = None
            reader.wake(data)              # straight to the waiting recv: no copy
            return
        self._buffer += data
        if reader is not None:
            self._wake_reader()
        else:
            self._update_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True                        # our side stays open: handle() decides when to close

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._lost = True
        self._lost_exc = exc
        if self.server is not None and self.server.is_closed():
            self._task.cancel()            # server_close(): close handle() now, finally blocks run
            return
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        """sendall() does the waiting: reading goes on."""

    def resume_writing(self) -> None:
        """sendall() waits with the transport's when_drained instead."""

    # ------------------------------------------------------------------
    # Running handle()
    # ------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            await self.handle()
        except (GeneratorExit, *PROPAGATE):
            self.transport.abort()      # closed (server or reactor closing) or interrupted
            raise
        except BaseException as exc:    # errors.py's rule: it costs this connection
            if isinstance(exc, ConnectionError) and self.transport.is_closing():
                logger.debug("%r: handle() ended: the peer went away (%s)", self.transport, exc)
            else:
                logger.error("%r: handle() raised; aborting this connection", self.transport,
                             exc_info=exc)
            self.transport.abort()
        else:
            self.transport.close()

    # ------------------------------------------------------------------
    # Waiting for data, and reading on and off
    # ------------------------------------------------------------------
    def _wait_for_data(self) -> Awaitable[Optional[bytes]]:
        """An awaitable: bytes handed over directly by data_received, or None when
        only the state changed (more buffered, EOF, lost, closed)."""
        if self._reader is not None:
            raise RuntimeError("another task is already waiting to read")
        return park(self._arm_reader)

    def _arm_reader(self, task: Task) -> Callable[[], None]:
        self._reader = task
        self._streak = 1                   # a new turn when it wakes: this read is its first
        if not self._reading:
            self._update_reading()
        return self._disarm_reader

    def _disarm_reader(self) -> None:
        self._reader = None
        self._update_reading()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.wake()

    def _update_reading(self) -> None:
        """Read from the socket exactly while a recv waits or the buffer has room."""
        want = self._reader is not None or len(self._buffer) < self.max_buffer
        if want != self._reading and not self._lost:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _take(self, n: int) -> bytes:
        buffer = self._buffer
        if n >= len(buffer):
            data = bytes(buffer)
            del buffer[:]
        else:
            data = bytes(buffer[:n])
            del buffer[:n]
        if not self._reading:
            self._update_reading()
        return data

    def _at_end(self) -> bool:
        """True when recv gives b"" (EOF, closed); raises if the connection was lost."""
        if self._eof or self._close_requested:
            return True
        if self._lost_exc is not None:
            raise self._connection_error()
        return self._lost

    # ------------------------------------------------------------------
    # The connection's end, as the waiting coroutine hears it
    # ------------------------------------------------------------------
    def _connection_error(self) -> ConnectionError:
        exc = self._lost_exc
        if isinstance(exc, ConnectionError):
            return exc
        error = ConnectionError(f"connection lost: {exc}" if exc else "connection closed")
        error.__cause__ = exc
        return error

    def _raise_if_lost(self) -> None:
        """Raise unless sending can go on: lost by an error, or closed by anyone but us."""
        if self._lost_exc is not None or (
                (self._lost or self.transport.is_closing()) and not self._close_requested):
            raise self._connection_error()

    # ------------------------------------------------------------------
    # Waiting for the write buffer to drain
    # ------------------------------------------------------------------
    def _arm_writer(self, task: Task) -> Callable[[], None]:
        # resume_writing comes only after a pause above the high mark; sendall
        # waits for the low one from anywhere above it: the transport's
        # when_drained, at the marks the user set (and sets meanwhile).
        self._writer = task
        self._cancel_drain_wait = self.transport.when_drained(self._wake_writer)
        return self._disarm_writer

    def _disarm_writer(self) -> None:
        self._writer = None
        self._cancel_drain_wait()

    def _wake_writer(self) -> None:
        """The buffer drained, or the connection ended: sendall's wait is over."""
        writer = self._writer
        if writer is not None:
            self._disarm_writer()
            writer.wake()
