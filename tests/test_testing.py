"""netmux.testing: drive(), pair(), virtual time and the chunking strategies."""
from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any, List

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import netmux
from netmux.testing import (
    NotQuietError, Stream, VirtualClock, chunkings, drive, pair, run_until_quiet, streams,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import testing_example  # noqa: E402  (examples/testing_example.py, the docs' example)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Echo(netmux.Handler):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Upper(netmux.LineHandler):
    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())


class Reverse(netmux.FramedHandler):
    framer_factory = lambda: netmux.NetstringFramer(100)  # noqa: E731

    def frame_received(self, frame: bytes) -> None:
        self.send_frame(frame[::-1])


# ---------------------------------------------------------------------------
# Handlers under every cut give what the unfragmented run gives
# ---------------------------------------------------------------------------
LINES = b"one\ntwo\n\nthree and more\n"
NETSTRINGS = b"3:abc,0:,5:hello,"


@pytest.mark.parametrize("factory, data", [(Echo, LINES), (Upper, LINES), (Reverse, NETSTRINGS)],
                         ids=["echo", "line", "framed"])
def test_a_handler_cut_any_way_writes_what_the_whole_stream_gives(factory, data):
    whole = drive(factory, [data])
    assert whole.written and whole.closed and whole.lost and whole.lost_exc is None

    @PROPERTY
    @given(chunkings(data))
    def same_as_whole(chunks: List[bytes]) -> None:
        assert b"".join(chunks) == data
        conversation = drive(factory, chunks)
        assert conversation.written == whole.written
        assert (conversation.closed, conversation.lost, conversation.lost_exc) == (True, True, None)

    same_as_whole()
    assert drive(Upper, [LINES]).written == b"ONE\nTWO\n\nTHREE AND MORE\n"
    assert drive(Reverse, [NETSTRINGS]).written == b"3:cba,0:,5:olleh,"


def test_hypothesis_finds_the_handler_that_takes_one_chunk_for_one_line():
    # Whole, the buggy handler passes: only a cut shows the bug.
    testing_example.test_two_pings_in_one_piece_get_two_pongs()
    minimal = find(chunkings(b"PING\nPING\n"),
                   lambda chunks: drive(testing_example.PingHandler, chunks).written != b"PONG\nPONG\n",
                   settings=settings(database=None, max_examples=500))
    assert minimal == [b"P", b"ING\nPING\n"]          # the fewest, leftmost cuts: shrunk
    assert drive(testing_example.PingHandler, minimal).written == (
        b"ERR unknown command\nERR unknown command\nPONG\n")


def test_the_docs_example_passes_for_every_cut():
    testing_example.test_two_pings_get_two_pongs_however_they_are_cut()


def test_the_docs_timer_example_needs_eof_false_to_see_its_timer_fire():
    testing_example.test_a_silent_peer_is_reminded_after_30_virtual_seconds()
    testing_example.test_with_the_default_eof_the_peer_hangs_up_and_the_timer_never_fires()


def test_a_given_test_over_the_buggy_handler_fails():
    @settings(database=None, max_examples=500)
    @given(chunkings(b"PING\nPING\n"))
    def buggy(chunks: List[bytes]) -> None:
        assert drive(testing_example.PingHandler, chunks).written == b"PONG\nPONG\n"

    with pytest.raises(AssertionError):
        buggy()


# ---------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------
@PROPERTY
@given(st.data())
def test_chunkings_are_non_empty_pieces_that_join_back(data):
    payload = data.draw(st.binary(max_size=40))
    most = data.draw(st.none() | st.integers(1, 5))
    chunks = data.draw(chunkings(payload, max_pieces=most))
    assert b"".join(chunks) == payload
    assert all(chunks)
    assert most is None or len(chunks) <= most


def test_chunkings_reach_one_byte_pieces_and_shrink_to_the_whole():
    assert find(chunkings(b"abcd"), lambda chunks: len(chunks) == 4) == [b"a", b"b", b"c", b"d"]
    assert find(chunkings(b"abcd"), lambda chunks: True) == [b"abcd"]
    assert find(chunkings(b""), lambda chunks: True) == []
    assert find(chunkings(bytearray(b"x")), lambda chunks: True) == [b"x"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_chunkings_refuse_a_bad_max_pieces(bad):
    with pytest.raises(ValueError):
        chunkings(b"abc", max_pieces=bad)


def test_chunkings_refuse_text():
    with pytest.raises(TypeError):
        chunkings("text")


@PROPERTY
@given(streams(st.binary(max_size=20).filter(lambda line: b"\n" not in line), lambda line: line + b"\n"))
def test_streams_of_lines_come_back_upper_cased_however_cut(stream):
    assert isinstance(stream, Stream) and b"".join(stream.chunks) == stream.data
    assert drive(Upper, stream.chunks).written == b"".join(line.upper() + b"\n" for line in stream.messages)


@PROPERTY
@given(streams([b"abc", b"", b"x" * 30], netmux.NetstringFramer().encode, max_pieces=3))
def test_streams_of_fixed_messages_through_a_framed_handler(stream):
    assert stream.messages == [b"abc", b"", b"x" * 30] and len(stream.chunks) <= 3
    assert drive(Reverse, stream.chunks).written == b"3:cba,0:," + b"30:" + b"x" * 30 + b","


def test_the_module_imports_without_hypothesis():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "import netmux.testing as t\n"
            "assert t.drive(lambda: __import__('netmux').Handler(), [b'x']).closed\n"
            "try:\n    t.chunkings(b'x')\nexcept ImportError:\n    print('strategies need hypothesis')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"strategies need hypothesis\n"


# ---------------------------------------------------------------------------
# Virtual time
# ---------------------------------------------------------------------------
@pytest.fixture
def no_real_sleep(monkeypatch):
    def refuse(seconds: float) -> None:
        raise AssertionError(f"time.sleep({seconds}) in a virtual-time test")
    monkeypatch.setattr(time, "sleep", refuse)


class Timeout30(netmux.Handler):
    """Closes the connection 30 s after the last byte it got."""

    timer = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.rearm()

    def rearm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.transport.reactor.call_later(30, self.timed_out)

    def data_received(self, data: bytes) -> None:
        self.rearm()

    def eof_received(self) -> bool:
        return True                      # keep the connection: only the timeout ends it

    def timed_out(self) -> None:
        self.transport.write(b"bye\n")
        self.transport.close()


def test_a_30_second_timer_runs_on_virtual_time(no_real_sleep):
    started = time.monotonic()
    conversation = drive(Timeout30, [b"a", b"b"])
    real = time.monotonic() - started
    assert conversation.written == b"bye\n" and conversation.lost and conversation.lost_exc is None
    assert conversation.time == 30.0
    assert real < conversation.time / 10      # a wide margin: no timed test
    when = {event: at for at, event, _ in conversation.events}
    assert when["close"] == 30.0 and when["data_received"] == 0.0


def test_until_stops_virtual_time_before_a_later_timer():
    conversation = drive(Timeout30, [b"a"], until=10)
    assert conversation.time == 10 and not conversation.closed and conversation.written == b""
    assert drive(Timeout30, [b"a"], until=30).closed         # a timer due at until runs


def test_without_eof_the_connection_stays_open():
    conversation = drive(Upper, [b"a\n"], eof=False)
    assert conversation.written == b"A\n" and conversation.closed is False


class Ticker(netmux.Handler):
    """Arms a periodic timer forever."""

    ticks = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.tick()

    def tick(self) -> None:
        self.ticks += 1
        self.transport.reactor.call_later(1, self.tick)


def test_an_endless_periodic_timer_is_an_error_not_a_hang():
    with pytest.raises(NotQuietError, match="re-arms itself forever"):
        drive(Ticker, [], max_jumps=50)
    conversation = drive(Ticker, [], until=3600)
    assert conversation.handler.ticks == 3601 and conversation.time == 3600


def test_a_callback_that_requeues_itself_forever_is_an_error():
    clock = VirtualClock()
    reactor = netmux.Reactor(clock=clock)

    def again() -> None:
        reactor.call_soon(again)

    reactor.call_soon(again)
    try:
        with pytest.raises(NotQuietError, match="turns"):
            run_until_quiet(reactor, clock, max_turns=100)
        with pytest.raises(ValueError):
            run_until_quiet(reactor, clock, until=float("nan"))
    finally:
        reactor.close()


def test_an_idle_timeout_server_closes_on_virtual_time(no_real_sleep):
    clock = VirtualClock()
    reactor = netmux.Reactor(clock=clock)
    lost: List[Any] = []

    class Quiet(netmux.Handler):
        def connection_lost(self, exc: Any) -> None:
            lost.append((clock.now, exc))

    started = time.monotonic()
    server = netmux.TCPServer(("127.0.0.1", 0), Quiet, reactor=reactor, idle_timeout=30)
    try:
        # On loopback the handshake is done when connect() returns: the first
        # poll accepts it; after that only timers are left.
        with socket.create_connection(server.server_address, timeout=5) as client:
            run_until_quiet(reactor, clock)
            assert lost == [(30.0, None)]
            client.settimeout(5)
            assert client.recv(10) == b""                 # the server's FIN
        assert clock.now >= 30 and time.monotonic() - started < 15
    finally:
        server.server_close()
        reactor.close()


def test_virtual_clock_moves_forward_only():
    clock = VirtualClock(5)
    clock.advance(2.5)
    assert clock() == 7.5
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError):
            clock.advance(bad)


# ---------------------------------------------------------------------------
# Flow control: a peer that does not read
# ---------------------------------------------------------------------------
BIG = [bytes([65 + index]) * 20_000 for index in range(8)]       # 160 KB in 8 chunks


def test_a_peer_that_never_reads_pauses_the_echo_and_holds_the_rest():
    conversation = drive(Echo, BIG, peer_reads=False)
    assert conversation.sent == b"" and conversation.buffered == len(conversation.written)
    assert conversation.buffered > 64 * 1024
    assert conversation.reads_paused
    assert conversation.pending == BIG[len(conversation.writes):]       # held, in order
    assert conversation.pending and not conversation.closed
    events = [event for _, event, _ in conversation.events]
    assert events.count("pause_writing") == 1 and "resume_writing" not in events
    assert "eof_received" not in events


def test_a_peer_that_reads_later_resumes_the_echo_and_gets_everything():
    conversation = drive(Echo, BIG, peer_reads=5)
    assert conversation.sent == b"".join(BIG) == conversation.written
    assert conversation.closed and conversation.lost and conversation.time == 5
    events = [event for _, event, _ in conversation.events]
    assert events.index("pause_writing") < events.index("peer_reads") < events.index("resume_writing")
    with pytest.raises(ValueError):
        drive(Echo, [], peer_reads=-1)


def test_close_waits_for_a_peer_that_does_not_read():
    class WriteThenClose(netmux.Handler):
        def connection_made(self, transport: Any) -> None:
            transport.write(b"x" * 10)
            transport.close()

    conversation = drive(WriteThenClose, [], peer_reads=False)
    assert conversation.closed and not conversation.lost and conversation.buffered == 10


# ---------------------------------------------------------------------------
# The in-memory transport keeps TCPTransport's contract
# ---------------------------------------------------------------------------
class Probe(netmux.Handler):
    """Runs ``script(transport)`` in connection_made and records what happens."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.results: List[Any] = []
        self.lost: List[Any] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.script(self, transport)

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)


def raises(call: Any, *args: Any) -> Any:
    try:
        call(*args)
    except Exception as exc:
        return type(exc)
    return None


def test_it_is_a_netmux_transport_with_made_up_addresses():
    def script(probe: Probe, transport: Any) -> None:
        probe.results += [isinstance(transport, netmux.Transport), transport.get_extra_info("peername"),
                          transport.get_extra_info("sockname"), transport.get_extra_info("socket", "no"),
                          transport.get_protocol() is probe, transport.reactor.time(), transport.can_write_eof(),
                          transport.get_write_buffer_limits(), transport.is_reading()]

    probe = drive(lambda: Probe(script), []).handler
    assert probe.results == [True, ("192.0.2.2", 50000), ("192.0.2.1", 8007), "no", True, 0.0, True,
                             (16 * 1024, 64 * 1024), True]


def test_write_errors_follow_tcp_transport():
    def script(probe: Probe, transport: Any) -> None:
        probe.results += [raises(transport.write, "text"), raises(transport.write, 5)]
        transport.write(bytearray(b"a"))
        transport.write(memoryview(b"bc"))
        transport.write(b"")
        transport.writelines([b"d", bytearray(b"e")])
        transport.write_eof()
        probe.results += [raises(transport.write, b"late"), raises(transport.write, "text")]
        transport.write_eof()                                 # twice: nothing
        transport.close()
        probe.results += [raises(transport.write, b"x"), raises(transport.sendfile, io.BytesIO(b"x"))]

    conversation = drive(lambda: Probe(script), [b"never delivered"])
    assert conversation.handler.results == [TypeError, TypeError, RuntimeError, TypeError,
                                            ConnectionError, ConnectionError]
    assert conversation.writes == [b"a", b"bc", b"de"] and conversation.eof_written
    assert conversation.handler.lost == [None] and conversation.pending == []
    assert ("data_received" not in [event for _, event, _ in conversation.events])


def test_connection_lost_runs_once_on_a_later_turn():
    def script(probe: Probe, transport: Any) -> None:
        transport.close()
        transport.abort()
        transport.close()
        probe.results.append(list(probe.lost))            # not from inside close()

    conversation = drive(lambda: Probe(script), [b"x"])
    assert conversation.handler.results == [[]] and conversation.handler.lost == [None]
    assert conversation.closed and not conversation.aborted


def test_abort_drops_the_buffer():
    def script(probe: Probe, transport: Any) -> None:
        transport.write(b"queued")
        transport.abort()

    conversation = drive(lambda: Probe(script), [], peer_reads=False)
    assert conversation.aborted and conversation.buffered == 0 and conversation.sent == b""
    assert conversation.handler.lost == [None]


@pytest.mark.parametrize("method", ["connection_made", "data_received", "eof_received"])
def test_a_handler_exception_is_logged_once_and_aborts_the_connection(caplog, method):
    class Boom(netmux.Handler):
        lost: List[Any] = []

        def connection_lost(self, exc: Any) -> None:
            self.lost.append(exc)

    def boom(self: Any, *args: Any) -> None:
        if method == "connection_made":
            self.transport = args[0]
        raise RuntimeError(method)

    setattr(Boom, method, boom)
    with caplog.at_level(logging.DEBUG, logger="netmux"):
        conversation = drive(Boom, [b"x"])
    assert conversation.aborted and conversation.lost
    assert isinstance(conversation.lost_exc, RuntimeError) and Boom.lost == [conversation.lost_exc]
    records = [record for record in caplog.records if record.name == "netmux"]
    assert len(records) == 1 and records[0].levelno >= logging.WARNING and records[0].exc_info
    assert method in records[0].getMessage()


def test_eof_received_true_keeps_the_write_side_open():
    class HalfOpen(netmux.Handler):
        def eof_received(self) -> bool:
            self.transport.reactor.call_later(1, self.transport.write, b"late reply")
            return True

    conversation = drive(HalfOpen, [b"q"])
    assert conversation.written == b"late reply" and not conversation.closed and conversation.time == 1


def test_pause_reading_holds_chunks_until_resumed():
    class Slow(netmux.Handler):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.got: List[Any] = []

        def data_received(self, data: bytes) -> None:
            self.got.append((self.transport.reactor.time(), data))
            self.transport.pause_reading()
            self.transport.reactor.call_later(2, self.transport.resume_reading)

    conversation = drive(Slow, [b"a", b"b", b"c"])
    assert conversation.handler.got == [(0, b"a"), (2, b"b"), (4, b"c")]
    assert conversation.lost and conversation.time == 6


def test_write_buffer_limits_are_checked_and_can_pause_at_once():
    def script(probe: Probe, transport: Any) -> None:
        transport.write(b"x" * 100)
        probe.results.append(raises(transport.set_write_buffer_limits, 10, 20))
        transport.set_write_buffer_limits(high=50)
        probe.results.append(transport.get_write_buffer_limits())
        transport.set_write_buffer_limits(high=400)             # low 100: the buffer is at low

    conversation = drive(lambda: Probe(script), [], peer_reads=False)
    assert conversation.handler.results == [ValueError, (12, 50)]
    events = [event for _, event, _ in conversation.events]
    assert events.count("pause_writing") == events.count("resume_writing") == 1
    assert not conversation.reads_paused                  # resumed when the marks rose


def test_sendfile_writes_the_file_region_and_keeps_the_file(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as file, io.BytesIO(b"abcdef") as memory:
        memory.seek(2)

        def script(probe: Probe, transport: Any) -> None:
            transport.write(b"<")
            transport.sendfile(file, 2, 3)
            transport.sendfile(file, 8)
            transport.sendfile(memory, 4)
            probe.results.append(raises(transport.sendfile, file, -1))
            transport.write(b">")

        conversation = drive(lambda: Probe(script), [])
        assert conversation.written == b"<23489ef>" and conversation.handler.results == [ValueError]
        assert not file.closed and file.tell() == 0 and memory.tell() == 2


def test_chunks_must_be_bytes_like_and_empty_ones_are_skipped():
    with pytest.raises(TypeError):
        drive(Echo, ["text"])
    conversation = drive(Echo, [b"", bytearray(b"ab"), b""])
    assert conversation.writes == [b"ab"]


def test_a_factory_exception_propagates():
    def factory() -> Any:
        raise KeyError("no handler")

    with pytest.raises(KeyError):
        drive(factory, [b"x"])


# ---------------------------------------------------------------------------
# pair(): a client against a server, no sockets
# ---------------------------------------------------------------------------
class Client(netmux.LineHandler):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.replies: List[bytes] = []
        for line in (b"hello", b"world"):
            self.send_line(line)
        transport.write_eof()

    def line_received(self, line: bytes) -> None:
        self.replies.append(line)


def one_byte_each(data: bytes) -> List[bytes]:
    return [data[index:index + 1] for index in range(len(data))]


@pytest.mark.parametrize("cut", [None, one_byte_each], ids=["whole", "byte-by-byte"])
def test_a_client_and_a_server_talk_through_memory(cut):
    both = pair(Client, Upper, cut=cut)
    assert both.client.replies == [b"HELLO", b"WORLD"]
    assert both.server_conversation.written == b"HELLO\nWORLD\n"
    assert both.client_conversation.eof_written and both.client_conversation.lost
    assert both.server_conversation.lost and both.server_conversation.lost_exc is None
    assert both.client.transport.get_extra_info("peername") == both.server.transport.get_extra_info("sockname")
    server_reads = [detail for _, event, detail in both.server_conversation.events if event == "data_received"]
    assert server_reads == ([12] if cut is None else [1] * 12)


@PROPERTY
@given(st.randoms(use_true_random=False))
def test_pair_with_random_cuts_gives_the_same_replies(random):
    def cut(data: bytes) -> List[bytes]:
        points = sorted(random.sample(range(1, len(data)), random.randint(0, len(data) - 1))) if len(data) > 1 else []
        edges = [0] + points + [len(data)]
        return [data[start:end] for start, end in zip(edges, edges[1:])]

    assert pair(Client, Upper, cut=cut).client.replies == [b"HELLO", b"WORLD"]


def test_pair_refuses_a_cut_that_loses_bytes():
    with pytest.raises(ValueError, match="join back"):
        pair(Client, Upper, cut=lambda data: [data[:-1]])


def test_the_memory_transport_declares_every_interface_method_with_compatible_signatures():
    import inspect
    from netmux.testing import MemoryTransport
    for name, member in vars(netmux.Transport).items():
        if callable(member) and not name.startswith("_"):
            declared = list(inspect.signature(member).parameters)
            actual = list(inspect.signature(getattr(MemoryTransport, name)).parameters)
            assert actual[:len(declared)] == declared, (name, actual)
