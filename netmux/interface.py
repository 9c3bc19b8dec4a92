"""The stream Transport interface: what a handler may call, whatever is below it.

Where it sits: between the handlers above and every stream transport below:
``TCPTransport`` on a TCP or Unix socket, and the layers stacked on one
(``netmux.Layer``: a byte counter today; TLS and the PROXY-protocol reader
next). A handler written against this interface runs on any of them; a new
transport is complete when it honours every name here.

The names are asyncio's ``Transport`` names, so code and knowledge carry over.
This module declares; it implements nothing and imports nothing of netmux
at run time (the Reactor, Timer and BytesLike named below are types for a
checker only).
``isinstance(obj, netmux.Transport)`` checks that the methods exist (a
``runtime_checkable`` Protocol), not that they behave: the behaviour is the
contract written in each docstring below and pinned by tests/test_interface.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Tuple, runtime_checkable

if TYPE_CHECKING:   # types only, for a checker: nothing of netmux is imported at run time
    from .framing import BytesLike
    from .reactor import Reactor, Timer

__all__ = ["Transport", "EXTRA_INFO_NAMES"]

#: The ``get_extra_info`` names every stream transport answers (a layer may add
#: its own, such as ``'ssl_object'``, and passes the rest down).
EXTRA_INFO_NAMES = ("peername", "sockname", "socket", "server")


@runtime_checkable
class Transport(Protocol):
    """One bidirectional byte stream as a handler sees it (asyncio's names).

    Every stream transport calls its handler's ``connection_made``,
    ``data_received``, ``eof_received``, ``connection_lost`` (exactly once) and
    ``pause_writing``/``resume_writing`` (above the high-water mark, then at or
    below the low one), and offers the methods below.
    """

    @property
    def reactor(self) -> Reactor:
        """The Reactor the transport runs on."""

    def write(self, data: BytesLike) -> None:
        """Queue ``data`` (bytes-like) after everything written before; TypeError
        for anything else, ConnectionError once closing or lost, RuntimeError
        after ``write_eof()``."""

    def writelines(self, chunks: Iterable[BytesLike]) -> None:
        """Write every bytes-like object of ``chunks``, in order."""

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset`` (to its end when None),
        in order with ``write()``; the file stays open and is not closed here."""

    def write_eof(self) -> None:
        """Half-close: end our side once everything queued is flushed; reading goes on."""

    def can_write_eof(self) -> bool:
        """True when ``write_eof()`` is supported."""

    def close(self) -> None:
        """Stop reading, flush everything queued, then close: no data lost."""

    def abort(self) -> None:
        """Close now, dropping anything queued."""

    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the connection was lost."""

    def pause_reading(self) -> None:
        """Stop delivering ``data_received`` until ``resume_reading()``."""

    def resume_reading(self) -> None:
        """Undo ``pause_reading()``."""

    def is_reading(self) -> bool:
        """True while incoming data is delivered."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """``callback(*args)`` after ``delay`` seconds unless cancelled or the
        connection closes first; returns the Timer (a handler's deadline)."""

    def when_drained(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` once the write buffer is at or below the low-water
        mark (next turn if it already is); returns a zero-argument cancel."""

    def yield_turn(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the next turn and read nothing until it has
        run (fairness: a handler's share of a turn; see TCPTransport's)."""

    def get_write_buffer_size(self) -> int:
        """Bytes queued but not yet handed to the layer or socket below."""

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """``(low, high)``: the flow-control marks."""

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the marks: default high 64 KiB, low ``high // 4``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``'peername'``, ``'sockname'``, ``'socket'`` (and a layer's own names)."""

    def get_protocol(self) -> Any:
        """The handler this transport delivers to."""
