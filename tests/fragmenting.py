"""A socket that fragments on purpose, to test the whole stack against TCP's chunking.

A real kernel decides how a byte stream is cut into ``recv`` results and how
much of a ``send`` it accepts; on loopback it nearly always takes everything
at once, so tests over real sockets rarely see a partial read or write. A
``FragmentingSocket`` wraps one end of a real, non-blocking socket pair and
follows a *script* for each direction, one step per call:

* a positive step ``n`` caps that call at ``n`` bytes (a partial read or write);
* ``EAGAIN`` (0) raises ``BlockingIOError`` without touching the socket;
* ``EINTR`` (-1) raises ``InterruptedError`` likewise.

Once a script runs out, calls go straight to the socket. Scripts are finite,
so a test always ends; and the selector still sees the real socket, which stays
readable (or writable) after an injected error, so the reactor simply calls
again on its next turn -- exactly what a spurious wake-up looks like.

Run both transports of a pair on one reactor in one thread and the whole run is
deterministic: hypothesis can choose the scripts and shrink a failure to the
smallest cut that breaks reactor, transport, framer or handler.

Only the calls a transport is allowed to make are forwarded (see ``_FORWARDED``):
if the core starts calling anything else (``sendmsg``, ``recv_into``...), the
test fails loudly instead of silently bypassing the script.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Tuple

import netmux
from netmux.transport import TCPTransport

EAGAIN = 0
EINTR = -1


class FragmentingSocket:
    """Wraps a connected non-blocking socket; ``recv``/``send`` follow scripts."""

    _FORWARDED = frozenset({
        "fileno", "shutdown", "close", "getpeername", "getsockname",
        "setsockopt", "getsockopt", "setblocking", "family", "type", "proto",
    })

    def __init__(self, sock: socket.socket, recv_script: Iterable[int] = (),
                 send_script: Iterable[int] = ()) -> None:
        self.sock = sock
        self._recv_script: Iterator[int] = iter(recv_script)
        self._send_script: Iterator[int] = iter(send_script)
        self.partial_reads = 0
        self.partial_writes = 0
        self.injected_errors = 0

    def __getattr__(self, name: str) -> Any:
        if name in self._FORWARDED:
            return getattr(self.sock, name)
        raise AttributeError(f"FragmentingSocket does not offer {name!r}: the transport "
                             f"should only need {sorted(self._FORWARDED | {'recv', 'recv_into', 'send'})}")

    def _step(self, script: Iterator[int]) -> Optional[int]:
        step = next(script, None)
        if step == EAGAIN:
            self.injected_errors += 1
            raise BlockingIOError(11, "injected EAGAIN")
        if step == EINTR:
            self.injected_errors += 1
            raise InterruptedError(4, "injected EINTR")
        return step

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        step = self._step(self._recv_script)
        limit = nbytes or len(buffer)
        if step is None or step >= limit:
            return self.sock.recv_into(buffer, limit, flags)
        size = self.sock.recv_into(buffer, step, flags)
        if size == step:
            self.partial_reads += 1  # there may have been more: the caller must cope
        return size

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        step = self._step(self._recv_script)
        if step is None or step >= bufsize:
            return self.sock.recv(bufsize, flags)
        data = self.sock.recv(step, flags)
        if len(data) == step:
            self.partial_reads += 1  # there may have been more: the caller must cope
        return data

    def send(self, data: Any, flags: int = 0) -> int:
        step = self._step(self._send_script)
        with memoryview(data) as view:
            if step is None or step >= len(view):
                return self.sock.send(view, flags)
            self.partial_writes += 1
            with view[:step] as head:
                return self.sock.send(head, flags)

    def __repr__(self) -> str:
        return f"<FragmentingSocket {self.sock!r}>"


def start_transport(reactor: netmux.Reactor, sock: Any, handler: Any) -> TCPTransport:
    """Drive ``handler`` over ``sock`` (a connected socket or a wrapper) with the
    public ``netmux.connect_socket``; return its transport."""
    netmux.connect_socket(sock, lambda: handler, reactor=reactor)
    return handler.transport


def fragmented_pair(
    reactor: netmux.Reactor,
    server_handler: Any,
    client_handler: Any,
    server_scripts: Tuple[Sequence[int], Sequence[int]] = ((), ()),
    client_scripts: Tuple[Sequence[int], Sequence[int]] = ((), ()),
) -> Tuple[FragmentingSocket, FragmentingSocket]:
    """Connect two handlers through a socket pair whose ends fragment.

    Each ``*_scripts`` is ``(recv_script, send_script)`` for that end. The
    server's transport starts first, so its ``connection_made`` precedes the
    client's (which may write at once). Returns the two wrappers, server first;
    the transports close the sockets when they end.
    """
    server_end, client_end = socket.socketpair()
    for end in (server_end, client_end):
        end.setblocking(False)
    server_sock = FragmentingSocket(server_end, *server_scripts)
    client_sock = FragmentingSocket(client_end, *client_scripts)
    start_transport(reactor, server_sock, server_handler)
    start_transport(reactor, client_sock, client_handler)
    return server_sock, client_sock


def run_until(reactor: netmux.Reactor, predicate: Callable[[], Any], timeout: float = 10.0,
              max_turns: int = 200_000) -> None:
    """Turn the reactor until ``predicate()`` holds; fail past the deadline or turn budget."""
    deadline = time.monotonic() + timeout
    for _ in range(max_turns):
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout} s: {predicate}")
        reactor.run_once(timeout=0.1)
    raise AssertionError(f"not done within {max_turns} reactor turns: {predicate}")

