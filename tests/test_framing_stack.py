"""The framers in the whole stack: reactor, transport, framer and handler together.

Two kinds of test. Through ``FragmentingSocket`` (tests/fragmenting.py), both
ends of a socket pair run on one reactor in this thread, and hypothesis picks
how every ``recv`` and ``send`` is cut, EAGAIN and EINTR included: the run is
deterministic and a failure shrinks to the smallest cut that breaks it. Over
real loopback sockets, fifty clients trickle lines a few bytes at a time to a
LineHandler server running ``serve_forever`` in a thread.
"""
from __future__ import annotations

import logging
import random
import selectors
import socket
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import netmux
from fragmenting import EAGAIN, EINTR, FragmentingSocket, fragmented_pair, run_until
from netmux.framing import FramedHandler, LengthPrefixFramer, LineFramer, LineHandler, NetstringFramer

STACK = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FRAMERS: Dict[str, Callable[[], Any]] = {
    "line \\n": lambda: LineFramer(b"\n", 200),
    "line \\r\\n": lambda: LineFramer(b"\r\n", 200),
    "netstring": lambda: NetstringFramer(200),
    "prefix !H": lambda: LengthPrefixFramer("!H", 200),
    "prefix <Q": lambda: LengthPrefixFramer("<Q", 200),
}


@contextmanager
def netmux_log() -> Iterator[List[logging.LogRecord]]:
    """Collect what the netmux logger says (handler errors are logged, not raised)."""
    records: List[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[assignment]
    logger = logging.getLogger("netmux")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


class RequestingClient(FramedHandler):
    """Sends its frames at once, half-closes, and records every reply byte."""

    def __init__(self, frames: List[bytes]) -> None:
        self.requests = frames
        self.raw = bytearray()
        self.replies: List[bytes] = []
        self.lost: Optional[List[Optional[BaseException]]] = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        for frame in self.requests:
            self.send_frame(frame)
        transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.raw += data
        super().data_received(data)

    def frame_received(self, frame: bytes) -> None:
        self.replies.append(frame)

    # This client must keep reading replies while its requests queue up; the
    # default (pause reading) would deadlock against a server that does the same.
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost = [exc]


class ReplyingServer(FramedHandler):
    """Records each frame and answers it with ``b"re:" + frame``."""

    def __init__(self) -> None:
        self.frames: List[bytes] = []
        self.lost: Optional[List[Optional[BaseException]]] = None
        self.pauses = 0

    def frame_received(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.send_frame(b"re:" + frame)

    def pause_writing(self) -> None:
        self.pauses += 1
        super().pause_writing()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost = [exc]


def with_framer(cls: type, factory: Callable[[], Any]) -> type:
    return type(cls.__name__, (cls,), {"framer_factory": staticmethod(factory)})


def exchange(make_framer: Callable[[], Any], frames: List[bytes], server_scripts: Any,
             client_scripts: Any) -> Tuple[ReplyingServer, List[FragmentingSocket]]:
    """Run one request/reply exchange through fragmenting sockets and check it end to end;
    return the server's handler and the two sockets, server first."""
    reactor = netmux.Reactor()
    try:
        server = with_framer(ReplyingServer, make_framer)()
        client = with_framer(RequestingClient, make_framer)(frames)
        with netmux_log() as log:
            server_sock, client_sock = fragmented_pair(reactor, server, client, server_scripts,
                                                       client_scripts)
            run_until(reactor, lambda: server.lost is not None and client.lost is not None)
        assert server.frames == frames
        encoder = make_framer()
        assert bytes(client.raw) == b"".join(encoder.encode(b"re:" + frame) for frame in frames)
        assert client.replies == [b"re:" + frame for frame in frames]
        assert server.lost == [None] and client.lost == [None]
        assert [r.getMessage() for r in log if r.levelno >= logging.WARNING] == []
        for sock in (server_sock, client_sock):
            assert sock.fileno() == -1  # the transports closed their sockets
        return server, [server_sock, client_sock]
    finally:
        reactor.close()


# ---------------------------------------------------------------------------
# Through fragmenting sockets: deterministic, hypothesis-chosen cuts
# ---------------------------------------------------------------------------

scripts = st.lists(st.sampled_from([EAGAIN, EINTR]) | st.integers(1, 8) | st.integers(9, 64),
                   max_size=150)


@STACK
@given(
    name=st.sampled_from(sorted(FRAMERS)),
    payloads=st.lists(st.binary(max_size=60) | st.lists(st.sampled_from(b"\r\n:,01\0a"), max_size=30).map(bytes),
                      max_size=25),
    server_recv=scripts, server_send=scripts, client_recv=scripts, client_send=scripts,
)
def test_fragmented_both_ways_the_server_sees_every_frame_and_the_replies_arrive_byte_exact(
        name, payloads, server_recv, server_send, client_recv, client_send):
    make_framer = FRAMERS[name]
    frames = []
    for payload in payloads:  # a line may not hold its delimiter
        try:
            make_framer().encode(b"re:" + payload)
        except netmux.FramingError:
            continue
        frames.append(payload)
    _, sockets = exchange(make_framer, frames, (server_recv, server_send), (client_recv, client_send))
    for end, sock in zip(("server", "client"), sockets):
        event(f"{end} partial reads: {'none' if not sock.partial_reads else 'some'}")
        event(f"{end} partial writes: {'none' if not sock.partial_writes else 'some'}")
        event(f"{end} injected EAGAIN/EINTR: {'none' if not sock.injected_errors else 'some'}")


def test_the_fragmenting_socket_really_cuts_reads_and_writes_and_injects_errors():
    reactor = netmux.Reactor()
    try:
        make_framer = FRAMERS["line \\r\\n"]
        server = with_framer(ReplyingServer, make_framer)()
        client = with_framer(RequestingClient, make_framer)([b"alpha", b"", b"gamma" * 10])
        every_kind = [1, EAGAIN, 2, EINTR, 3, EAGAIN, 1, 1, 5] * 20
        server_sock, client_sock = fragmented_pair(reactor, server, client, (every_kind, every_kind),
                                                   (every_kind, every_kind))
        run_until(reactor, lambda: server.lost is not None and client.lost is not None)
        assert server.frames == [b"alpha", b"", b"gamma" * 10]
        assert client.replies == [b"re:alpha", b"re:", b"re:" + b"gamma" * 10]
        for sock in (server_sock, client_sock):
            assert sock.partial_reads > 10 and sock.partial_writes > 10 and sock.injected_errors > 10
    finally:
        reactor.close()


@pytest.mark.parametrize("name", ["line \\n", "prefix !H"])
def test_a_megabyte_of_frames_crosses_coarse_random_cuts_with_server_backpressure(name):
    # Bigger cuts, a longer stream: the server's write buffer passes its high
    # water mark, so it pauses reading (Handler's default) while replies drain.
    rng = random.Random(20240611)

    def script() -> List[int]:
        return [rng.choice([EAGAIN, EINTR, rng.randint(1, 70_000)]) for _ in range(400)]

    frames = [bytes([65 + i % 26]) * rng.randint(0, 190) for i in range(10_000)]
    make_framer = lambda: (LineFramer(b"\n", 200) if name == "line \\n"  # noqa: E731
                           else LengthPrefixFramer("!H", 200))
    server, sockets = exchange(make_framer, frames, (script(), script()), (script(), script()))
    assert server.pauses > 0
    assert all(sock.partial_reads and sock.partial_writes and sock.injected_errors for sock in sockets)


# ---------------------------------------------------------------------------
# Over real loopback sockets
# ---------------------------------------------------------------------------


class UpperEcho(LineHandler):
    """Answers each line with it in upper case."""

    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())


class ShortLines(UpperEcho):
    max_length = 32


def drain(selector: selectors.BaseSelector, received: Dict[socket.socket, bytearray],
          finished: Dict[socket.socket, bool], timeout: float) -> None:
    """Read whatever the clients have waiting; mark the ones at EOF."""
    for key, _ in selector.select(timeout):
        sock = key.fileobj
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        if data:
            received[sock] += data
        else:
            finished[sock] = True
            selector.unregister(sock)


def trickle(serving: Any, streams: List[bytes], seed: int, deadline: float) -> List[bytes]:
    """Connect one client per stream; send the streams 1-7 bytes at a time,
    interleaved at random; half-close; return what each client read up to EOF."""
    rng = random.Random(seed)
    sockets = []
    selector = selectors.DefaultSelector()
    try:
        for _ in streams:
            sock = serving.connect()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small segments stay small
            sock.setblocking(False)
            sockets.append(sock)
            selector.register(sock, selectors.EVENT_READ)
        received = {sock: bytearray() for sock in sockets}
        finished = {sock: False for sock in sockets}
        sent = [0] * len(streams)
        pending = [i for i, stream in enumerate(streams) if stream]
        sends = 0
        while pending:
            assert time.monotonic() < deadline, "trickling took too long"
            index = rng.choice(pending)
            size = rng.randint(1, 7)
            chunk = streams[index][sent[index] : sent[index] + size]
            try:
                sent[index] += sockets[index].send(chunk)
            except BlockingIOError:
                pass
            if sent[index] == len(streams[index]):
                pending.remove(index)
                sockets[index].shutdown(socket.SHUT_WR)
            sends += 1
            if sends % 50 == 0:
                drain(selector, received, finished, 0)
        for index, stream in enumerate(streams):
            if not stream:
                sockets[index].shutdown(socket.SHUT_WR)
        while not all(finished.values()):
            assert time.monotonic() < deadline, "replies did not all arrive in time"
            drain(selector, received, finished, 0.1)
        return [bytes(received[sock]) for sock in sockets]
    finally:
        selector.close()
        for sock in sockets:
            sock.close()


class CountingUpperEcho(UpperEcho):
    """Also counts the reads that ended inside a line (on the server thread only)."""

    split_reads = 0

    def data_received(self, data: bytes) -> None:
        if not data.endswith(b"\n"):
            type(self).split_reads += 1
        super().data_received(data)


@pytest.mark.parametrize("seed", [1, 2])
def test_fifty_clients_trickling_lines_get_every_line_answered_once_and_in_order(serve, seed):
    handler_class = type("CountingUpperEcho", (CountingUpperEcho,), {"split_reads": 0})
    serving = serve(handler_class)
    rng = random.Random(seed)
    lines = [
        [b"client %d line %d %s" % (client, n, bytes(rng.choices(b"abc xyz\r", k=rng.randint(0, 30))))
         for n in range(rng.randint(0, 25))]
        for client in range(50)
    ]
    streams = [b"".join(line + b"\n" for line in client_lines) for client_lines in lines]
    replies = trickle(serving, streams, seed, time.monotonic() + 30)
    for client_lines, reply in zip(lines, replies):
        assert reply == b"".join(line.upper() + b"\n" for line in client_lines)
    # The server really read lines in pieces (typically ~1,500 of ~1,700 reads).
    assert handler_class.split_reads > 0


def test_a_framing_error_closes_that_connection_alone_without_a_reply(serve, caplog):
    serving = serve(ShortLines)
    good = [b"fine %d\n" % n for n in range(40)]
    streams = [
        b"".join(good),
        # One byte over max_length, and nothing after it: a socket closed with
        # unread input sends RST, which could destroy the b"OK\n" in flight.
        b"ok\n" + b"x" * 33,
        b"".join(good),
    ]
    with caplog.at_level(logging.WARNING, logger="netmux"):
        replies = trickle(serving, streams, 7, time.monotonic() + 30)
        serving.call(lambda: None)  # the server thread has logged what it will log
    assert replies[0] == replies[2] == b"".join(line.upper() for line in good)
    assert replies[1] == b"OK\n"
    warnings = [r for r in caplog.records if r.name == "netmux" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    assert "longer than max_length (32 bytes)" in warnings[0].getMessage()


def test_the_line_echo_example_demo_runs():
    import os
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    result = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "line_echo.py"), "--demo"],
        capture_output=True, timeout=30, cwd=root,
        env={**os.environ, "PYTHONPATH": os.path.abspath(root)},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"HELLO\nWORLD\nTHREE LINES IN ONE SEND\n"
