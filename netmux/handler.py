"""Handlers: the user's code, one instance per connection (or per UDP socket).

Where it sits: at the top of a connection. A transport calls these methods as
events happen; a handler answers through ``self.transport``. The names are
asyncio's ``Protocol`` and ``DatagramProtocol`` names on purpose, so an
``asyncio.Protocol`` subclass runs on netmux unchanged and what a reader knows
of asyncio carries over.

What this layer never does: touch a socket or the reactor. Exceptions raised
here are caught one layer down, by the transport, which logs them once and
aborts that connection only.
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["Handler", "DatagramHandler"]


class Handler:
    """Base class for stream (TCP) handlers: override what you need.

    Backpressure is on by default: when the transport's write buffer rises above
    its high-water mark, ``pause_writing`` stops reading from this peer until
    the buffer drains. A handler that writes what it reads (an echo, a proxy)
    is therefore memory-bounded against a peer that sends and never reads.
    """

    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        """The connection is up: keep the transport to write to it."""
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Some bytes arrived: any piece of the stream, not a message (see framing)."""

    def eof_received(self) -> Optional[bool]:
        """The peer sent FIN. Return True to keep our write side open; falsy closes
        the transport once its buffer is flushed."""
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """Called exactly once at the end; ``exc`` is None on a clean close."""

    def pause_writing(self) -> None:
        """The write buffer went above high water: stop reading meanwhile."""
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The write buffer drained to low water: read again."""
        self.transport.resume_reading()


class DatagramHandler:
    """Base class for datagram (UDP) handlers: one instance per socket."""

    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        """The socket is bound: keep the transport to ``sendto`` from it."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """One whole datagram arrived from ``addr``."""

    def error_received(self, exc: OSError) -> None:
        """The kernel reported an error for this socket (an ICMP error, say)."""

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """Called exactly once when the socket closes."""

    def pause_writing(self) -> None:
        """The datagram queue went above high water."""

    def resume_writing(self) -> None:
        """The datagram queue drained to low water."""
