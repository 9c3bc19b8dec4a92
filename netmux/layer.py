"""Stackable layers: a handler to the transport below, a transport to the handler above.

Where it sits: between a stream transport and the user's handler, as many
deep as wanted. TLS over ``ssl.MemoryBIO`` (bytes below are records, bytes
above are plaintext) and a PROXY-protocol reader (the first bytes below are a
header, the rest pass through) are layers; so is ``CountingLayer`` here, the
first one, which counts bytes each way for statistics.

A layer is put in place by the handler factory, so no server or client needs
to know about it::

    netmux.TCPServer(address, lambda: CountingLayer(Echo(), counter))

What the base passes through, and why each passes unchanged:

* **Events up**: ``data_received``, ``eof_received``, ``drain_started`` (the
  server is draining) and flow control
  (``pause_writing``/``resume_writing``: the buffer below is full, so the
  handler above must stop producing). ``connection_lost`` goes up exactly once
  even if the layer below were to call it twice.
* **Calls down**: everything of ``netmux.Transport``. ``close()`` flushes
  below, ``abort()`` drops, ``write_eof()`` half-closes; the lower transport
  already makes each idempotent and ends with one ``connection_lost``.
* **Errors**: a layer never catches its handler's exceptions. They propagate to
  the socket transport at the bottom, the one place that logs them and aborts
  that connection, which then reaches every layer as ``connection_lost(exc)``.

A subclass that changes the bytes overrides ``data_received`` (call
``self.handler.data_received`` with what it decoded) and ``write`` (call
``self.transport.write`` with what it encoded). What it never does: touch a
socket or the reactor's internals; it only has the transport below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Tuple

from .interface import Transport
from .sendfile import region_count

if TYPE_CHECKING:
    from .framing import BytesLike
    from .reactor import Reactor, Timer

__all__ = ["Layer", "CountingLayer", "ByteCounter"]


class Layer:
    """Base for a protocol layer: passes every event up and every call down unchanged.

    ``handler`` is the handler (or layer) above; ``self.transport`` is the
    transport (or layer) below once ``connection_made`` has run.
    """

    #: The transport below, from ``connection_made`` on (None before it; see Handler's).
    transport: Transport = None  # type: ignore[assignment]

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self._lost = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.transport!r}>"

    # ------------------------------------------------------------------
    # The handler side: events from the transport below, passed up
    # ------------------------------------------------------------------
    def connection_made(self, transport: Transport) -> None:
        """Keep the transport below, then show ourselves to the handler above as its transport."""
        self.transport = transport
        self.handler.connection_made(self)

    def data_received(self, data: bytes) -> None:
        """Bytes from below: a decoding layer overrides this."""
        self.handler.data_received(data)

    def eof_received(self) -> Optional[bool]:
        """The peer's FIN: the handler above decides whether our write side stays open."""
        keep_open: Optional[bool] = self.handler.eof_received()
        return keep_open

    def drain_started(self) -> None:
        """The server is draining: passed up, to a handler that has the method
        (an ``asyncio.Protocol`` has none)."""
        drain_started = getattr(self.handler, "drain_started", None)
        if drain_started is not None:
            drain_started()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """The end, passed up exactly once."""
        if self._lost:
            return
        self._lost = True
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        """The buffer below is above its high-water mark: the handler above should stop writing."""
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        """The buffer below drained to its low-water mark."""
        self.handler.resume_writing()

    # ------------------------------------------------------------------
    # The transport side: calls from the handler above, passed down
    # ------------------------------------------------------------------
    @property
    def reactor(self) -> Reactor:
        """The reactor of the transport below."""
        return self.transport.reactor

    def write(self, data: BytesLike) -> None:
        """Bytes from above: an encoding layer overrides this."""
        self.transport.write(data)

    def writelines(self, chunks: Iterable[BytesLike]) -> None:
        """Joined first, then one ``write`` (which an encoding layer may override)."""
        self.write(b"".join(chunks))

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Passed down when this layer does not change the bytes it writes.

        A layer that overrides ``write`` cannot let file bytes bypass it, and must
        override this too (TLS will read the file in pieces under flow control).
        """
        if type(self).write is not Layer.write:
            raise NotImplementedError(f"{type(self).__name__} changes the bytes it writes "
                                      "and must implement sendfile() itself")
        self.transport.sendfile(file, offset, count)

    def write_eof(self) -> None:
        """Half-close below once everything queued is flushed."""
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        """What the transport below says."""
        return bool(self.transport.can_write_eof())

    def close(self) -> None:
        """Flush below, then close."""
        self.transport.close()

    def abort(self) -> None:
        """Close below now, dropping what is queued."""
        self.transport.abort()

    def is_closing(self) -> bool:
        """True once closing or lost below."""
        return bool(self.transport.is_closing())

    def pause_reading(self) -> None:
        """Stop reading below (the kernel's window closes on the peer)."""
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read below again."""
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        """True while the transport below delivers data."""
        return bool(self.transport.is_reading())

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """A timer of the connection's, kept below (cancelled when it closes)."""
        return self.transport.call_later(delay, callback, *args)

    def when_drained(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """``callback()`` once the buffer below is at or below its low mark; a cancel."""
        cancel: Callable[[], None] = self.transport.when_drained(callback)
        return cancel

    def yield_turn(self, callback: Callable[..., Any], *args: Any) -> None:
        """Go on next turn, reading nothing below meanwhile (the transport's fairness)."""
        self.transport.yield_turn(callback, *args)

    def get_write_buffer_size(self) -> int:
        """Bytes queued below (a buffering layer adds its own)."""
        return int(self.transport.get_write_buffer_size())

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """``(low, high)`` of the transport below."""
        low, high = self.transport.get_write_buffer_limits()
        return low, high

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the marks below: flow control reaches us from there."""
        self.transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """A layer answers its own names and passes the rest down."""
        return self.transport.get_extra_info(name, default)

    def get_protocol(self) -> Any:
        """The handler above."""
        return self.handler


class ByteCounter:
    """Bytes in and out, shared by as many ``CountingLayer`` instances as wanted
    (one per connection, or one for a whole server)."""

    __slots__ = ("bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        return f"<ByteCounter in={self.bytes_in} out={self.bytes_out}>"


class CountingLayer(Layer):
    """Counts the bytes received and written, for statistics; changes nothing.

    ``counter``: a ``ByteCounter`` to add to (shared across connections for a
    server's totals); a new one when None, as ``self.counter``. Bytes count as
    out when handed to the transport below (queued, not yet necessarily sent).
    """

    def __init__(self, handler: Any, counter: Optional[ByteCounter] = None) -> None:
        super().__init__(handler)
        self.counter = ByteCounter() if counter is None else counter

    def data_received(self, data: bytes) -> None:
        self.counter.bytes_in += len(data)
        self.handler.data_received(data)

    def write(self, data: BytesLike) -> None:
        self.transport.write(data)                  # refuses what is not bytes-like first
        self.counter.bytes_out += memoryview(data).nbytes

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        self.transport.sendfile(file, offset, count)   # refuses a bad argument first
        self.counter.bytes_out += region_count(file, offset, count)
