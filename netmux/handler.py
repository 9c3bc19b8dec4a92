"""Handlers: the user's code, one instance per connection (or per UDP socket).

Where it sits: at the top of a connection. A transport calls these methods as
events happen; a handler answers through ``self.transport``. The names are
asyncio's ``Protocol`` and ``DatagramProtocol`` names on purpose, so an
``asyncio.Protocol`` subclass runs on netmux unchanged and what a reader knows
of asyncio carries over. ``FramedHandler`` and ``LineHandler`` plug a sans-IO
framer (framing.py) into ``data_received`` and hand up whole frames; on a
``FramingError`` their ``framing_error`` logs it once and closes.

What this layer never does: touch a socket or the reactor. Exceptions raised
here are caught one layer down, by the transport, which logs them once and
aborts that connection only.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional

from .framing import BytesLike, FramingError, LineFramer
from .interface import Transport

if TYPE_CHECKING:   # a type only: udp.py's transport is a layer below, not imported here
    from .udp import DatagramTransport

__all__ = ["Handler", "DatagramHandler", "FramedHandler", "LineHandler"]

logger = logging.getLogger("netmux")


class Handler:
    """Base class for stream (TCP) handlers: override what you need.

    Backpressure is on by default: when the transport's write buffer rises above
    its high-water mark, ``pause_writing`` stops reading from this peer until
    the buffer drains. A handler that writes what it reads (an echo, a proxy)
    is therefore memory-bounded against a peer that sends and never reads.
    """

    #: The transport, from ``connection_made`` on (None before it). Typed without
    #: None so that handler code writes ``self.transport.write(...)`` without a
    #: check first: every handler method but ``connection_made`` runs after it.
    transport: Transport = None  # type: ignore[assignment]
    #: True once the server began a drain (``drain_started``).
    draining = False

    def connection_made(self, transport: Transport) -> None:
        """The connection is up: keep the transport to write to it."""
        self.transport = transport

    def drain_started(self) -> None:
        """The server is draining (``shutdown(grace=...)``): end this connection at
        its next message boundary, finishing the message in hand (an answer, then
        ``transport.close()``, which flushes). Called once, not on a closing
        connection; every layer passes it up. Only the handler knows where its
        messages end, so this default only sets ``self.draining``: the connection
        goes on until the peer ends it or the grace period does (a stream without
        messages, an echo, is served to its end, as nginx's stream proxy does)."""
        self.draining = True

    def data_received(self, data: bytes) -> None:
        """Some bytes arrived: any piece of the stream, not a message (see framing)."""

    def eof_received(self) -> Optional[bool]:
        """The peer sent FIN. Return True to keep our write side open; falsy closes
        the transport once its buffer is flushed."""
        return None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Called exactly once at the end; ``exc`` is None on a clean close."""

    def pause_writing(self) -> None:
        """The write buffer went above high water: stop reading meanwhile."""
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The write buffer drained to low water: read again."""
        self.transport.resume_reading()


class DatagramHandler:
    """Base class for datagram (UDP) handlers: one instance per socket."""

    #: The transport, from ``connection_made`` on (None before it; see Handler's).
    transport: DatagramTransport = None  # type: ignore[assignment]

    def connection_made(self, transport: DatagramTransport) -> None:
        """The socket is bound: keep the transport to ``sendto`` from it."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """One whole datagram arrived from ``addr``."""

    def error_received(self, exc: OSError) -> None:
        """The kernel reported an error for this socket (an ICMP error, say)."""

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Called exactly once when the socket closes."""

    def pause_writing(self) -> None:
        """The datagram queue went above high water."""

    def resume_writing(self) -> None:
        """The datagram queue drained to low water."""


class FramedHandler(Handler):
    """A handler that receives whole frames instead of stream chunks.

    Set ``framer_factory`` to a zero-argument callable that returns a framer
    (a framer class, a ``functools.partial``, a lambda: it is looked up on the
    class, so a plain function is not bound to the handler). Each connection
    gets its own framer, made on first use. Override ``frame_received``; send
    with ``send_frame``.

    On a ``FramingError`` the frames that preceded the bad bytes are still
    delivered, then the error is logged once at WARNING on the ``netmux``
    logger and the connection is closed without a reply; anything the peer
    sends after that is ignored. An incomplete frame at end of stream is
    dropped with a WARNING that says how many bytes were lost. If ``frame_received`` closes the transport, the frames still
    pending from the same chunk are not delivered.
    """

    framer_factory: Callable[[], Any] = LineFramer
    #: The most frames delivered per turn of the loop (fairness). One read can
    #: hold thousands of small frames (64 KiB of ``b"a\n"`` is 32,768 lines);
    #: past this many, the rest wait in order and are delivered on later turns
    #: through ``transport.yield_turn``, which keeps reading off meanwhile, so
    #: the backlog never grows past one read. Below 1 (or NaN) counts as 1.
    frames_per_turn: int = 64
    _framer: Any = None
    _framing_failed = False
    _backlog: Optional[Deque[bytes]] = None     # frames waiting for a later turn
    _backlog_error: Optional[FramingError] = None

    @property
    def framer(self) -> Any:
        """This connection's framer, made by ``framer_factory`` on first use."""
        if self._framer is None:
            self._framer = self._make_framer()
        return self._framer

    def _make_framer(self) -> Any:
        return type(self).framer_factory()

    def data_received(self, data: bytes) -> None:
        """Feed ``data`` to the framer and call ``frame_received`` per frame."""
        transport = self.transport
        if self._framing_failed or (transport is not None and transport.is_closing()):
            return
        framer = self._framer
        if framer is None:
            framer = self.framer
        try:
            frames = framer.feed(data)
        except FramingError as error:
            self._framing_failed = True
            self._deliver(error.frames, error)
            return
        if len(frames) == 1 and not self._backlog:
            # One frame per read, the common case (request, reply): _deliver's
            # work with no call and no check, not closing was checked above.
            self.frame_received(frames[0])
        elif frames or self._backlog:
            self._deliver(frames, None)

    def framing_error(self, error: FramingError) -> None:
        """The peer broke the framing (a frame over ``max_length``, a bad header):
        the stream cannot be trusted any more. Logged once at WARNING, then the
        connection is closed without a reply. A subclass that wants to answer
        first (a line protocol's ``error: line too long``) writes its reply,
        then calls ``super().framing_error(error)``; frames that came before the
        bad bytes have already been delivered."""
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        logger.warning("framing error from %s, closing the connection: %s", peer, error)
        if transport is not None and not transport.is_closing():
            transport.close()

    def eof_received(self) -> Optional[bool]:
        """The peer closed its side: say so if it left an incomplete frame behind
        (dropped, but never silently); then close, as ``Handler`` does."""
        framer = self._framer
        if framer is not None and not self._framing_failed and framer.buffered:
            peer = self.transport.get_extra_info("peername") if self.transport is not None else None
            logger.warning("%s closed its side in the middle of a frame: %d bytes dropped",
                           peer, framer.buffered)
        return None

    def _deliver(self, frames: List[bytes], error: Optional[FramingError]) -> None:
        """Hand up ``frames`` (then report ``error``), at most a turn's share now."""
        if len(frames) <= self.frames_per_turn and not self._backlog:
            for frame in frames:           # the common case: no backlog, no queue
                if self._is_closing():
                    return
                self.frame_received(frame)
            if error is not None and not self._is_closing():
                self.framing_error(error)
            return
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.extend(frames)
        self._backlog_error = error
        self._deliver_backlog()

    def _deliver_backlog(self) -> None:
        """One turn's share of the backlog, the rest on the next turn (a transport
        without ``yield_turn``, not netmux's, gets everything now, as before);
        then the framing error that ended the stream, if one did."""
        yield_turn = getattr(self.transport, "yield_turn", None)
        while self._backlog:
            if not self._deliver_share(self._backlog):
                return
            if self._backlog and yield_turn is not None:
                yield_turn(self._deliver_backlog)
                return
        error, self._backlog_error = self._backlog_error, None
        if error is not None and not self._is_closing():
            self.framing_error(error)

    def _deliver_share(self, backlog: Deque[bytes]) -> bool:
        """Up to ``frames_per_turn`` frames (at least one); False once closing."""
        budget = self.frames_per_turn
        for _ in range(min(budget, len(backlog)) if budget >= 1 else 1):
            if self._is_closing():
                backlog.clear()
                return False
            self.frame_received(backlog.popleft())
        return True

    def _is_closing(self) -> bool:
        transport = self.transport
        return transport is not None and bool(transport.is_closing())

    def frame_received(self, frame: bytes) -> None:
        """Called once per whole frame, in stream order. Override it."""

    def send_frame(self, frame: BytesLike) -> None:
        """Encode ``frame`` with this connection's framer and write it."""
        self.transport.write(self.framer.encode(frame))


class LineHandler(FramedHandler):
    """A handler that receives lines: ``line_received`` and ``send_line``.

    Its framer is ``LineFramer(self.delimiter, self.max_length)``; override
    the class attributes (or set them on the instance before the first line)
    to change them.
    """

    delimiter: bytes = b"\n"
    max_length: int = 65536

    def _make_framer(self) -> LineFramer:
        return LineFramer(self.delimiter, self.max_length)

    def frame_received(self, frame: bytes) -> None:
        """Passes each line to ``line_received``."""
        self.line_received(frame)

    def line_received(self, line: bytes) -> None:
        """Called once per line, without its delimiter. Override it."""

    def send_line(self, line: BytesLike) -> None:
        """Write ``line`` followed by the delimiter (``send_frame``'s work, one call less)."""
        framer = self._framer
        if framer is None:
            framer = self.framer
        self.transport.write(framer.encode(line))
