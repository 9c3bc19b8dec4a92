"""netmux.testing with coroutine handlers (StreamHandler, netmux.sleep, netmux.timeout)."""
from __future__ import annotations

import time
from typing import Any, List

import pytest
from hypothesis import HealthCheck, given, settings

import netmux
from netmux.testing import chunkings, drive, pair

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINES = b"one\ntwo\n\nthree and more\n"


def stream_handler(body: Any) -> Any:
    """A StreamHandler class whose handle() is ``body(self)``."""
    return type("Body", (netmux.StreamHandler,), {"handle": body})


async def echo(self: Any) -> None:
    while True:
        data = await self.recv(1024)
        if not data:
            break
        await self.sendall(data)


async def upper_lines(self: Any) -> None:
    while True:
        line = await self.readline()
        if not line:
            break
        await self.sendall(line.upper())


async def sum_of_records(self: Any) -> None:
    total = 0
    try:
        while True:
            total += int(await self.recv_exactly(3))
    except netmux.IncompleteReadError as error:
        await self.sendall(b"%d %d\n" % (total, len(error.partial)))


@pytest.mark.parametrize("body, data", [(echo, LINES), (upper_lines, LINES), (sum_of_records, b"001010100xy")],
                         ids=["recv", "readline", "recv_exactly"])
def test_a_stream_handler_cut_any_way_writes_what_the_whole_stream_gives(body, data):
    factory = stream_handler(body)
    whole = drive(factory, [data])
    assert whole.written and whole.closed and whole.lost and whole.lost_exc is None

    @PROPERTY
    @given(chunkings(data))
    def same_as_whole(chunks: List[bytes]) -> None:
        conversation = drive(factory, chunks)
        assert conversation.written == whole.written and conversation.lost

    same_as_whole()
    assert drive(stream_handler(sum_of_records), [b"001010100xy"]).written == b"111 2\n"


def test_a_stream_handler_with_a_30_second_timeout_runs_on_virtual_time(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: pytest.fail("a real sleep"))

    async def ask(self: Any) -> None:
        await self.sendall(b"name?\n")
        try:
            async with netmux.timeout(30):
                name = await self.readline()
        except TimeoutError:
            await self.sendall(b"too slow\n")
            return
        await self.sendall(b"hello " + name)

    started = time.monotonic()
    silent = drive(stream_handler(ask), [], eof=False)
    assert silent.written == b"name?\ntoo slow\n" and silent.time == 30 and silent.lost
    assert time.monotonic() - started < silent.time / 10
    answered = drive(stream_handler(ask), [b"bo", b"b\n"])
    assert answered.written == b"name?\nhello bob\n" and answered.time == 0


def test_netmux_sleep_advances_virtual_time():
    async def tick(self: Any) -> None:
        for _ in range(3):
            await netmux.sleep(10)
            await self.sendall(b"%g\n" % self.transport.reactor.time())

    conversation = drive(stream_handler(tick), [], eof=False)
    assert conversation.written == b"10\n20\n30\n" and conversation.time == 30


def test_a_stream_handler_against_a_peer_that_never_reads_stops_reading():
    conversation = drive(stream_handler(echo), [b"x" * 20_000] * 8, peer_reads=False)
    # sendall() waits once the buffer is above low water; handle() reads no more,
    # the receive buffer fills to max_buffer, reading stops, the rest is held.
    assert conversation.buffered > 16 * 1024 and conversation.sent == b""
    assert conversation.pending and conversation.reads_paused and not conversation.closed
    later = drive(stream_handler(echo), [b"x" * 20_000] * 8, peer_reads=5)
    assert later.sent == b"x" * 160_000 and later.lost and later.time == 5


def test_a_stream_client_against_a_line_server_in_memory():
    class Upper(netmux.LineHandler):
        def line_received(self, line: bytes) -> None:
            self.send_line(line.upper())

    replies: List[bytes] = []

    async def client(self: Any) -> None:
        for word in (b"hello\n", b"world\n"):
            await self.sendall(word)
            replies.append(await self.readline())

    both = pair(stream_handler(client), Upper, cut=lambda data: [data[:1], data[1:]] if len(data) > 1 else [data])
    assert replies == [b"HELLO\n", b"WORLD\n"] and both.client_conversation.lost
