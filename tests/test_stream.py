"""StreamHandler (netmux/stream.py): recv/readline/recv_exactly/sendall, limits, the end of
a connection, server_close, connect(), and memory bounds both ways."""
from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netmux
from conftest import WAYS, Echo, readable, recv_exactly, recv_until_eof, run_one_way, run_until, wait_until
from fragmenting import EAGAIN, EINTR, fragmented_pair
from fragmenting import run_until as run_fragmented

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.filterwarnings("error")

CUTS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scripts = st.lists(st.sampled_from([EAGAIN, EINTR]) | st.integers(1, 9) | st.integers(10, 80),
                   max_size=40)


class Scripted(netmux.StreamHandler):
    """Runs ``script(self)`` as its handle(); keeps what it returned or raised."""

    def __init__(self, script: Callable[["Scripted"], Any]) -> None:
        self.script = script
        self.outcome: List[Any] = []
        self.finished = threading.Event()

    async def handle(self) -> None:
        try:
            self.outcome.append(await self.script(self))
        except BaseException as exc:
            self.outcome.append(exc)
            raise
        finally:
            self.finished.set()


class Sender(netmux.Handler):
    """Writes ``data`` then EOF; collects what comes back."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = bytearray()
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(self.data)
        transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Any) -> None:
        self.lost = True


def run_fragmented_script(script, data: bytes, server_recv: List[int], client_send: List[int]) -> Any:
    """``script`` as a StreamHandler over a fragmenting socket pair fed ``data``; its outcome."""
    reactor = netmux.Reactor()
    try:
        server, client = Scripted(script), Sender(data)
        fragmented_pair(reactor, server, client, (server_recv, ()), ((), client_send))
        run_fragmented(reactor, lambda: server.outcome and client.lost)
        return server.outcome[0]
    finally:
        reactor.close()


# ----------------------------------------------------------------------
# Reading under arbitrary fragmentation
# ----------------------------------------------------------------------
lines = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=12)


@CUTS
@given(lines=lines, tail=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
       server_recv=scripts, client_send=scripts)
def test_readline_gives_the_same_lines_whatever_the_cuts(lines, tail, server_recv, client_send):
    data = b"".join(line + b"\n" for line in lines) + tail

    async def read_lines(handler):
        got = []
        while True:
            line = await handler.readline()
            got.append(line)
            if not line:
                got.append(await handler.readline())   # b"" again
                return got

    expected = [line + b"\n" for line in lines] + ([tail] if tail else []) + [b"", b""]
    assert run_fragmented_script(read_lines, data, server_recv, client_send) == expected


@CUTS
@given(data=st.binary(max_size=300), sizes=st.lists(st.integers(0, 70), min_size=1, max_size=12),
       server_recv=scripts, client_send=scripts)
def test_recv_exactly_gives_the_same_blocks_whatever_the_cuts(data, sizes, server_recv, client_send):
    async def read_blocks(handler):
        blocks = []
        for size in sizes:
            try:
                blocks.append(await handler.recv_exactly(size))
            except netmux.IncompleteReadError as exc:
                blocks.append(("partial", exc.partial, exc.expected))
                break
        return blocks

    expected, offset = [], 0
    for size in sizes:
        if offset + size > len(data):
            expected.append(("partial", data[offset:], size))
            break
        expected.append(data[offset:offset + size])
        offset += size
    assert run_fragmented_script(read_blocks, data, server_recv, client_send) == expected


@CUTS
@given(data=st.binary(max_size=400), n=st.integers(1, 100), server_recv=scripts, client_send=scripts)
def test_recv_returns_the_stream_in_pieces_of_at_most_n_then_empty_forever(data, n, server_recv,
                                                                           client_send):
    async def read_all(handler):
        pieces = []
        while True:
            piece = await handler.recv(n)
            if not piece:
                return pieces, await handler.recv(n), await handler.recv(n)
            pieces.append(piece)

    pieces, again, and_again = run_fragmented_script(read_all, data, server_recv, client_send)
    assert b"".join(pieces) == data and all(0 < len(p) <= n for p in pieces)
    assert again == and_again == b""


@CUTS
@given(header=st.integers(0, 40), body=st.binary(max_size=40), server_recv=scripts,
       client_send=scripts)
def test_mixed_reads_share_one_buffer(header, body, server_recv, client_send):
    data = b"%02d\n" % header + bytes(range(header % 256)) * 1 + body

    async def mixed(handler):
        size = int((await handler.readline()).strip())
        block = await handler.recv_exactly(size)
        rest = bytearray()
        while True:
            piece = await handler.recv(7)
            if not piece:
                return size, block, bytes(rest)
            rest += piece

    assert run_fragmented_script(mixed, data, server_recv, client_send) == (
        header, bytes(range(header % 256)), body)


# ----------------------------------------------------------------------
# Limits and arguments
# ----------------------------------------------------------------------
def outcome_of(script, data: bytes) -> Any:
    return run_fragmented_script(script, data, [], [])


@pytest.mark.parametrize("limit", [0, 1, 10, 65536])
def test_a_line_of_exactly_limit_bytes_is_fine(limit):
    async def script(handler):
        return await handler.readline(limit)

    assert outcome_of(script, b"x" * limit + b"\nmore") == b"x" * limit + b"\n"


@pytest.mark.parametrize("data", [b"x" * 11 + b"\n", b"x" * 11, b"x" * 5000])
def test_a_longer_line_raises_framing_error_and_costs_the_connection(data, caplog):
    async def script(handler):
        return await handler.readline(10)

    with caplog.at_level(logging.DEBUG, logger="netmux"):
        outcome = outcome_of(script, data)
    assert isinstance(outcome, netmux.FramingError) and isinstance(outcome, ValueError)
    assert "longer than 10" in str(outcome)
    errors = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], netmux.FramingError)]
    assert len(errors) == 1 and errors[0].levelno >= logging.WARNING


@pytest.mark.parametrize("call", ["recv", "recv_exactly", "readline"])
@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), (math.inf, TypeError),
                                          (math.nan, TypeError), (True, TypeError)])
def test_bad_counts_raise_clearly(call, value, error):
    async def script(handler):
        return await getattr(handler, call)(value)

    assert isinstance(outcome_of(script, b"abc"), error)


def test_zero_counts_return_empty_without_waiting():
    async def script(handler):
        return await handler.recv(0), await handler.recv_exactly(0), await handler.recv(10)

    assert outcome_of(script, b"abc") == (b"", b"", b"abc")


def test_incomplete_read_error_is_an_eof_error_with_partial_and_expected():
    async def script(handler):
        return await handler.recv_exactly(10)

    outcome = outcome_of(script, b"abc")
    assert isinstance(outcome, netmux.IncompleteReadError) and isinstance(outcome, EOFError)
    assert (outcome.partial, outcome.expected) == (b"abc", 10)


def test_a_huge_recv_exactly_waits_for_its_bytes_past_max_buffer():
    data = os.urandom(300_000)

    async def script(handler):
        return await handler.recv_exactly(len(data))

    assert outcome_of(script, data) == data


# ----------------------------------------------------------------------
# On a server, from other threads' clients
# ----------------------------------------------------------------------
class EchoStream(netmux.StreamHandler):
    async def handle(self) -> None:
        while True:
            data = await self.recv(65536)
            if not data:
                break
            await self.sendall(data)


def test_server_handler_knows_its_server_and_client_address(serve):
    seen = []

    class Who(netmux.StreamHandler):
        async def handle(self):
            seen.append((self.server, self.client_address, self.transport))
            await self.sendall(b"bye")

    serving = serve(Who)
    with serving.connect() as client:
        assert recv_until_eof(client) == b"bye"
        assert seen[0][0] is serving.server and seen[0][1] == client.getsockname()
        assert seen[0][2].get_extra_info("peername") == client.getsockname()


def test_handle_returning_closes_after_flushing_everything(serve):
    class Big(netmux.StreamHandler):
        async def handle(self):
            self.transport.write(b"x" * 3_000_000)     # buffered: the close must flush it

    serving = serve(Big)
    with serving.connect() as client:
        assert recv_until_eof(client) == b"x" * 3_000_000


def test_an_exception_in_handle_is_logged_once_and_costs_that_connection_only(serve, caplog):
    class Faulty(EchoStream):
        async def handle(self):
            if await self.recv(10) == b"boom":
                raise KeyError("boom")
            await self.sendall(b"fine")
            await super().handle()

    serving = serve(Faulty)
    with caplog.at_level(logging.DEBUG, logger="netmux"):
        with serving.connect() as good, serving.connect() as bad:
            good.sendall(b"hello")
            assert recv_exactly(good, 4) == b"fine"
            bad.sendall(b"boom")
            assert recv_until_eof(bad) == b""
            good.sendall(b"still here")
            assert recv_exactly(good, 10) == b"still here"
    records = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], KeyError)]
    assert len(records) == 1 and records[0].levelno >= logging.WARNING


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def test_a_reset_raises_connection_error_at_sendall_and_is_logged_at_debug(serve, caplog):
    handlers = []

    def factory():
        async def flood(handler):
            await handler.recv(2)
            while True:
                await handler.sendall(b"y" * 65536)
        handlers.append(Scripted(flood))
        return handlers[-1]

    serving = serve(factory)
    with caplog.at_level(logging.DEBUG, logger="netmux"):
        client = serving.connect()
        client.sendall(b"go")
        recv_exactly(client, 65536)
        _reset(client)
        assert handlers[0].finished.wait(5)
    assert isinstance(handlers[0].outcome[0], ConnectionError)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_reset_raises_connection_error_at_a_waiting_recv(serve):
    handlers = []

    def factory():
        async def wait_then_recv(handler):
            await handler.recv(2)
            return await handler.recv(10)
        handlers.append(Scripted(wait_then_recv))
        return handlers[-1]

    serving = serve(factory)
    client = serving.connect()
    client.sendall(b"go")
    wait_until(lambda: handlers and handlers[0]._reader is not None)
    _reset(client)
    assert handlers[0].finished.wait(5)
    assert isinstance(handlers[0].outcome[0], ConnectionResetError)


def test_close_flushes_and_later_recv_gives_empty(serve):
    handlers = []

    def factory():
        async def close_early(handler):
            await handler.sendall(b"last words")
            handler.close()
            return await handler.recv(10), await handler.recv(10)
        handlers.append(Scripted(close_early))
        return handlers[-1]

    serving = serve(factory)
    with serving.connect() as client:
        client.sendall(b"unread")
        assert recv_until_eof(client) == b"last words"
    assert handlers[0].finished.wait(5)
    assert handlers[0].outcome == [(b"", b"")]


# ----------------------------------------------------------------------
# server_close and the reactor's close
# ----------------------------------------------------------------------
class Guarded(netmux.StreamHandler):
    log: List[str] = []

    async def handle(self) -> None:
        try:
            try:
                await self.recv(10)
            finally:
                self.log.append("inner finally")
                await netmux.sleep(1)                 # cannot wait: raises GeneratorExit again
                self.log.append("not reached")
        finally:
            self.log.append("outer finally")


def test_server_close_closes_running_handlers_and_their_finally_blocks_ran(reactor):
    Guarded.log = []
    server = netmux.TCPServer(("127.0.0.1", 0), Guarded, reactor=reactor)
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(3)]
    try:
        run_until(reactor, lambda: server.connections == 3
                  and all(h._reader for h in _handlers(server)))
        server.server_close()
        assert Guarded.log == ["inner finally", "outer finally"] * 3
        assert reactor.pending_tasks == set()
        for client in clients:
            assert recv_until_eof(client) == b""
    finally:
        for client in clients:
            client.close()


def _handlers(server: netmux.TCPServer) -> List[Any]:
    return [transport.get_protocol() for transport in server._connections]


def test_server_close_after_serve_forever_in_another_thread(serve):
    Guarded.log = []
    serving = serve(Guarded)
    with serving.connect():
        wait_until(lambda: serving.server.connections == 1
                   and serving.call(lambda: all(h._reader for h in _handlers(serving.server))))
        serving.stop()
        assert Guarded.log == ["inner finally", "outer finally"]


def test_server_close_from_inside_handle_closes_it_at_its_next_await(reactor):
    log = []

    class Closer(netmux.StreamHandler):
        async def handle(self):
            try:
                await self.recv(10)
                self.server.server_close()
                log.append("goes on until it waits")
                log.append(await self.recv(10))         # no wait: the connection is gone
                await netmux.sleep(1)                   # a wait: closed here
                log.append("not reached")
            finally:
                log.append("finally")

    server = netmux.TCPServer(("127.0.0.1", 0), Closer, reactor=reactor)
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(b"close")
        run_until(reactor, lambda: "finally" in log)
        assert log == ["goes on until it waits", b"", "finally"]
        assert recv_until_eof(client) == b"" and reactor.pending_tasks == set()


def test_reactor_close_closes_a_connected_handler(reactor):
    Guarded.log = []
    left, right = socket.socketpair()
    with right:
        handler = netmux.connect_socket(left, Guarded, reactor=reactor)
        run_until(reactor, lambda: handler._reader is not None)
        reactor.close()
        assert Guarded.log == ["inner finally", "outer finally"]


class CountsLost(netmux.StreamHandler):
    """Waits in recv or in sleep (``wait``) until closed; counts connection_lost calls."""

    wait = "recv"

    def __init__(self) -> None:
        self.lost: List[Any] = []
        self.log: List[str] = []

    async def handle(self) -> None:
        try:
            if self.wait == "recv":
                await self.recv(10)
            else:
                await netmux.sleep(3600)
            self.log.append("not reached")
        finally:
            self.log.append("finally")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost.append(exc)
        super().connection_lost(exc)


@pytest.mark.parametrize("wait", ["recv", "sleep"])
@pytest.mark.parametrize("door", ["server", "connect"])
def test_closing_the_reactor_while_handle_waits_calls_connection_lost_exactly_once(door, wait):
    """Reactor.close() alone (no server_close): handle() is closed at its await, and the
    connection_lost that its closing queued is delivered by close(), once."""
    reactor = netmux.Reactor()
    factory = type("Waits", (CountsLost,), {"wait": wait})
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        if door == "server":
            server = netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor)
            peer = socket.create_connection(server.server_address, timeout=5)
            run_until(reactor, lambda: server.connections == 1)
            (handler,) = _handlers(server)
        else:
            handler = netmux.connect(listener.getsockname(), factory, reactor=reactor)
            peer = listener.accept()[0]
        with peer:
            run_until(reactor, lambda: reactor.statistics()["tasks"] == 1
                      and (handler._reader is not None or reactor.statistics()["timers"]))
            reactor.close()
            assert handler.log == ["finally"] and handler.lost == [None]
            assert reactor.statistics() == dict.fromkeys(reactor.statistics(), 0)
            peer.settimeout(5)
            assert peer.recv(10) == b""                  # the socket was closed, not leaked
        if door == "server":
            server.server_close()                        # after the reactor: nothing more to tell
    assert handler.lost == [None]


# ----------------------------------------------------------------------
# Timeouts racing data
# ----------------------------------------------------------------------
def _past(reactor: netmux.Reactor, deadline: float) -> None:
    """Wait (without turning the reactor) until ``deadline`` has passed on its clock."""
    wait_until(lambda: reactor.time() > deadline, interval=0.001)


def test_data_arriving_in_the_turn_the_timeout_fires_wins_and_is_not_lost(reactor):
    async def script(handler):
        async with netmux.timeout(0.05) as scope:
            data = await handler.recv(10)
        return data, scope.expired

    left, right = socket.socketpair()
    with right:
        handler = netmux.connect_socket(left, lambda: Scripted(script), reactor=reactor)
        run_until(reactor, lambda: handler._reader is not None)
        right.sendall(b"just now")
        _past(reactor, reactor.time() + 0.06)          # both due: one turn sees them together
        reactor.run_once(0)
        assert handler.outcome == [(b"just now", False)]


def test_a_timeout_due_with_the_data_fires_at_the_next_await_and_keeps_the_data(reactor):
    async def script(handler):
        got = []
        try:
            async with netmux.timeout(0.05):
                got.append(await handler.recv(4))
                got.append(await handler.recv(100))    # the rest is there: no wait
                got.append(await handler.recv(100))    # would wait: the expiry lands here
        except TimeoutError:
            got.append("timeout")
        got.append(await handler.recv(100))           # nothing lost meanwhile
        return got

    left, right = socket.socketpair()
    with right:
        handler = netmux.connect_socket(left, lambda: Scripted(script), reactor=reactor)
        run_until(reactor, lambda: handler._reader is not None)
        right.sendall(b"abcdefgh")
        _past(reactor, reactor.time() + 0.06)
        reactor.run_once(0)
        right.sendall(b"after")
        run_until(reactor, lambda: handler.outcome)
        assert handler.outcome == [[b"abcd", b"efgh", "timeout", b"after"]]


# ----------------------------------------------------------------------
# connect()
# ----------------------------------------------------------------------
def test_a_stream_handler_on_connect_runs_handle_once_connected(serve, reactor):
    serving = serve(Echo)

    async def talk(handler):
        assert handler.server is None
        await handler.sendall(b"ping\npong\n")
        return [await handler.readline(), await handler.readline(), handler.client_address]

    handler = netmux.connect(serving.address, lambda: Scripted(talk), reactor=reactor)
    run_until(reactor, lambda: handler.outcome)
    assert handler.outcome == [[b"ping\n", b"pong\n", serving.address]]
    run_until(reactor, lambda: handler.transport.is_closing())


def test_a_stream_handler_whose_connect_fails_never_runs_handle(reactor):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()
    handler = netmux.connect(address, lambda: Scripted(lambda h: None), reactor=reactor)
    run_until(reactor, lambda: reactor.statistics()["descriptors"] == 0)
    for _ in range(3):
        reactor.run_once(0)
    assert handler.outcome == [] and reactor.pending_tasks == set()


def test_a_handler_may_spawn_tasks_on_its_reactor(serve):
    class Ticker(netmux.StreamHandler):
        async def handle(self):
            async def tick():
                for index in range(3):
                    await self.sendall(b"%d" % index)
                    await netmux.sleep(0.001)
                return "ticked"
            task = self.transport.reactor.spawn(tick())
            await self.recv(10)                      # EOF from the client once it has all
            assert task.result() == "ticked"

    serving = serve(Ticker)
    with serving.connect() as client:
        assert recv_exactly(client, 3) == b"012"
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b""


# ----------------------------------------------------------------------
# Memory bounds, both ways
# ----------------------------------------------------------------------
def test_a_handler_that_never_reads_stops_its_peer(reactor):
    class Deaf(netmux.StreamHandler):
        max_buffer = 4096                             # a class attribute bounds its buffer

        async def handle(self):
            await netmux.sleep(math.inf)

    assert netmux.StreamHandler.max_buffer == 65536

    left, right = socket.socketpair()
    with right:
        right.setblocking(False)
        handler = netmux.connect_socket(left, Deaf, reactor=reactor)
        sent, chunk, stalls = 0, b"z" * 65536, 0
        while stalls < 3 and sent < 256 << 20:
            try:
                sent += right.send(chunk)
                stalls = 0
                continue
            except BlockingIOError:
                before = len(handler._buffer)
                reactor.run_once(0.01)
                stalls = stalls + 1 if len(handler._buffer) == before else 0
        assert sent < 64 << 20, "the peer was never stopped"
        assert len(handler._buffer) <= Deaf.max_buffer + reactor.read_buffer_size
        assert not handler.transport.is_reading()
        with pytest.raises(BlockingIOError):
            right.send(chunk)


def test_a_paused_handler_reads_again_once_it_recvs(reactor):
    total = 1 << 20

    async def late(handler):
        for _ in range(1000):                      # until the buffer fills and reading stops
            if not handler.transport.is_reading():
                break
            await netmux.sleep(0.005)
        paused_with = len(handler._buffer)
        received = bytearray()
        while len(received) < total:
            received += await handler.recv(100_000)
        return paused_with, bytes(received)

    left, right = socket.socketpair()
    with right:
        handler = netmux.connect_socket(left, lambda: Scripted(late), reactor=reactor)
        payload = os.urandom(total)
        sender = threading.Thread(target=right.sendall, args=(payload,))
        sender.start()
        try:
            run_until(reactor, lambda: handler.outcome, timeout=20)
        finally:
            sender.join(20)
        paused_with, received = handler.outcome[0]
        assert netmux.StreamHandler.max_buffer <= paused_with < total and received == payload


_BIG_SENDER = r"""
import netmux, socket, sys
CHUNK = 1 << 20
def chunk(index):
    return index.to_bytes(4, "big") * (CHUNK // 4)
class Flood(netmux.StreamHandler):
    paused = False
    def connection_made(self, transport):
        # A small kernel send buffer: a chunk overflows it into ours at once, instead
        # of the megabytes a loopback socket would otherwise take in.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        super().connection_made(transport)
    async def handle(self):
        for index in range(256):
            await self.sendall(chunk(index))
    def pause_writing(self):
        if not Flood.paused:           # the buffer passed high water: tell the test, once
            Flood.paused = True
            print("paused", flush=True)
server = netmux.TCPServer(("127.0.0.1", 0), Flood)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _high_water_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_sendall_of_256_mib_to_a_slow_reader_stays_memory_bounded_and_intact():
    process = subprocess.Popen([sys.executable, "-W", "error::RuntimeWarning", "-c", _BIG_SENDER],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(process.stdout.readline())
        start_kib = _high_water_kib(process.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            # A slow reader: nothing read until the server's buffer has passed its high
            # water mark, so from here on it must wait, not buffer.
            readable(process.stdout, timeout=20)
            assert process.stdout.readline() == b"paused\n"
            received, index, pending = 0, 0, bytearray()
            chunk_size = 1 << 20
            while index < 256:
                data = client.recv(1 << 18)
                assert data, f"EOF after {received} bytes"
                received += len(data)
                pending += data
                while len(pending) >= chunk_size:
                    assert pending[:chunk_size] == index.to_bytes(4, "big") * (chunk_size // 4), index
                    del pending[:chunk_size]
                    index += 1
            assert recv_until_eof(client) == b"" and received == 256 << 20
        growth_mib = (_high_water_kib(process.pid) - start_kib) / 1024
        assert growth_mib < 24, f"the server grew by {growth_mib:.1f} MiB"
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()
        process.stderr.close()


def test_sendall_waits_until_the_buffer_is_at_or_below_low_water(reactor):
    sizes = []

    async def script(handler):
        handler.transport.set_write_buffer_limits(high=400_000, low=100_000)
        await handler.sendall(b"q" * 300_000)          # above low, below high
        sizes.append(handler.transport.get_write_buffer_size())
        return handler.transport.get_write_buffer_limits()

    left, right = socket.socketpair()
    with right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        handler = netmux.connect_socket(left, lambda: Scripted(script), reactor=reactor)
        right.setblocking(False)
        got = 0
        for _ in range(20_000):
            if handler._lost:                          # it returned and the close flushed
                break
            reactor.run_once(0.001)
            try:
                got += len(right.recv(8192))
            except BlockingIOError:
                pass
        assert handler.outcome == [(100_000, 400_000)]     # the user's marks are back
        assert sizes[0] <= 100_000 and got == 300_000


@pytest.mark.parametrize("depth", [1, 2])
def test_server_close_ends_handle_through_layers(reactor, depth):
    """The seams issue's second defect: the server singled out StreamHandler with
    isinstance, so one under a layer kept running until Reactor.close()."""
    Guarded.log = []
    started: List[bool] = []

    class Started(Guarded):
        async def handle(self) -> None:
            started.append(self.server is not None)
            await super().handle()

    def factory() -> Any:
        handler: Any = Started()
        for _ in range(depth):
            handler = netmux.CountingLayer(handler)
        return handler

    server = netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor)
    client = socket.create_connection(server.server_address, timeout=5)
    try:
        run_until(reactor, lambda: started == [True])
        server.server_close()
        assert Guarded.log == ["inner finally", "outer finally"]
        assert reactor.pending_tasks == set()
    finally:
        client.close()


class MarksDuringSendall(netmux.StreamHandler):
    """sendall() waits on a peer that does not read; a timer looks at the marks
    meanwhile, then raises them past what is buffered."""

    during: Any = None
    after: Any = None
    lost = False
    lost_exc = None

    async def handle(self) -> None:
        self.transport.set_write_buffer_limits(high=1000, low=100)
        self.transport.reactor.call_later(0.5, self.look)
        await self.sendall(b"x" * (8 << 20))
        self.after = self.transport.get_write_buffer_limits()

    def look(self) -> None:
        self.during = self.transport.get_write_buffer_limits()
        self.transport.set_write_buffer_limits(high=1 << 30, low=1 << 29)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.lost, self.lost_exc = True, exc


@pytest.mark.parametrize("way", WAYS)
def test_sendall_waits_at_the_users_marks_without_borrowing_them(way):
    """The seams issue's third defect: sendall set high = low while it waited, so the
    limits read (100, 100), a change made meanwhile was reverted, and one that moved
    the low mark above the buffer left it waiting forever."""
    if way == "drive":
        conversation = netmux.testing.drive(MarksDuringSendall, [], eof=False, peer_reads=False,
                                            until=5)
        handler = conversation.handler
    else:
        handler = run_one_way(way, MarksDuringSendall, b"", eof=False,
                              done=lambda handler: handler.after is not None).handler
    assert handler.during == (100, 1000)
    assert handler.after == (1 << 29, 1 << 30)
