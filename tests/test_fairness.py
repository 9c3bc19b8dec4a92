"""Fairness in the core: a handler's share of a turn (transport.yield_turn, the
64 KiB read, FramedHandler.frames_per_turn), each claim over a socket, under a
CountingLayer and under netmux.testing.drive(): the same handler, three ways."""
from __future__ import annotations

import logging
import socket
from typing import Any, List, Optional

import pytest

import netmux
from netmux.testing import drive

from conftest import WAYS, recv_exactly, run_until, run_one_way as run

class Journal(netmux.LineHandler):
    """Records every event; answers each line with its upper case."""

    def __init__(self) -> None:
        self.events: List[Any] = []
        self.lost = False
        self.lost_exc: Optional[BaseException] = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.turns = 0
        self._tick()

    def _tick(self) -> None:
        """A callback queued each turn: its count tells which turn a line came in."""
        if not self.lost:
            self.turns += 1
            self.transport.reactor.call_soon(self._tick)

    def line_received(self, line: bytes) -> None:
        self.events.append((self.turns, line))
        self.send_line(line.upper())

    def eof_received(self) -> Optional[bool]:
        self.events.append((self.turns, "eof"))
        return super().eof_received()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost, self.lost_exc = True, exc


@pytest.mark.parametrize("way", WAYS)
def test_a_framed_handler_delivers_a_turns_share_of_lines_then_the_rest_in_order(way):
    lines = [b"line %d" % i for i in range(3000)]       # 29 KB: one read
    outcome = run(way, Journal, b"".join(line + b"\n" for line in lines))
    events = outcome.handler.events
    assert [line for _, line in events[:-1]] == lines and events[-1][1] == "eof"
    per_turn: dict = {}
    for turn, _ in events[:-1]:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= Journal.frames_per_turn
    assert len(per_turn) >= len(lines) // Journal.frames_per_turn
    assert events[-1][0] >= events[-2][0]          # EOF did not overtake the backlog
    assert outcome.written == b"".join(line.upper() + b"\n" for line in lines)
    assert outcome.lost_exc is None


@pytest.mark.parametrize("budget", [0, -5, float("nan"), 1, float("inf")])
def test_any_frames_per_turn_delivers_every_frame_and_ends(budget):
    class Budgeted(Journal):
        frames_per_turn = budget

    conversation = drive(Budgeted, [b"x\n" * 200])
    assert conversation.written == b"X\n" * 200
    assert [line for _, line in conversation.handler.events] == [b"x"] * 200 + ["eof"]


@pytest.mark.parametrize("way", WAYS)
def test_a_framing_error_after_a_backlog_comes_after_every_frame_before_it(way, caplog):
    class Short(Journal):
        max_length = 10

    data = b"ok\n" * 500 + b"x" * 50
    with caplog.at_level(logging.WARNING, logger="netmux"):
        outcome = run(way, Short, data, eof=False)
    assert [line for _, line in outcome.handler.events] == [b"ok"] * 500
    assert outcome.written == b"OK\n" * 500
    assert "framing error" in caplog.text


@pytest.mark.parametrize("way", WAYS)
def test_closing_in_a_frame_drops_the_backlog(way):
    class Quits(Journal):
        def line_received(self, line: bytes) -> None:
            super().line_received(line)
            if line == b"quit":
                self.transport.close()

    outcome = run(way, Quits, b"a\n" * 100 + b"quit\n" + b"b\n" * 100, eof=False)
    assert [line for _, line in outcome.handler.events] == [b"a"] * 100 + [b"quit"]
    assert outcome.written == b"A\n" * 100 + b"QUIT\n"


class Yielder(netmux.Handler):
    """Takes each chunk, then spends ``turns`` more turns on it before reading again."""

    turns = 3

    def __init__(self) -> None:
        self.log: List[Any] = []
        self.lost = False
        self.lost_exc: Optional[BaseException] = None

    def data_received(self, data: bytes) -> None:
        self.log.append(("data", len(data)))
        self.transport.yield_turn(self.go_on, self.turns)

    def go_on(self, left: int) -> None:
        self.log.append(("go_on", left, self.transport.is_reading()))
        if left > 1:
            self.transport.yield_turn(self.go_on, left - 1)
        else:
            self.transport.write(b"done\n")

    def eof_received(self) -> Optional[bool]:
        self.log.append(("eof",))
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost, self.lost_exc = True, exc


@pytest.mark.parametrize("way", WAYS)
def test_yield_turn_runs_the_continuation_next_turn_and_reads_nothing_meanwhile(way):
    outcome = run(way, Yielder, b"hello")
    assert outcome.handler.log == [("data", 5), ("go_on", 3, True), ("go_on", 2, True),
                                   ("go_on", 1, True), ("eof",)]
    assert outcome.written == b"done\n" and outcome.lost_exc is None


@pytest.mark.parametrize("way", WAYS)
def test_continuations_run_fifo_and_reading_waits_for_all(way):
    class Twice(Yielder):
        def data_received(self, data: bytes) -> None:
            self.log.append(("data", len(data)))
            self.transport.yield_turn(self.log.append, ("first",))
            self.transport.yield_turn(self.log.append, ("second",))

    outcome = run(way, Twice, b"abc")
    assert outcome.handler.log == [("data", 3), ("first",), ("second",), ("eof",)]


@pytest.mark.parametrize("way", WAYS)
def test_a_pause_during_a_yield_is_kept_after_it(way):
    class Pauses(Yielder):
        def data_received(self, data: bytes) -> None:
            self.log.append(("data", len(data)))
            self.transport.yield_turn(self.pause)

        def pause(self) -> None:
            self.transport.pause_reading()
            self.log.append(("paused", self.transport.is_reading()))
            self.transport.reactor.call_later(0.05, self.resume)

        def resume(self) -> None:
            self.log.append(("resume",))
            self.transport.resume_reading()

    outcome = run(way, Pauses, b"abc")
    assert outcome.handler.log == [("data", 3), ("paused", False), ("resume",), ("eof",)]


@pytest.mark.parametrize("way", WAYS)
def test_a_continuation_is_dropped_once_the_transport_closes(way):
    class Closes(Yielder):
        def data_received(self, data: bytes) -> None:
            self.transport.yield_turn(self.log.append, ("never",))
            self.transport.close()
            self.transport.yield_turn(self.log.append, ("never either",))

    outcome = run(way, Closes, b"abc", eof=False)
    assert outcome.handler.log == [] and outcome.lost_exc is None


@pytest.mark.parametrize("way", WAYS)
def test_a_raising_continuation_costs_its_connection_once(way, caplog):
    class Raises(Yielder):
        def go_on(self, left: int) -> None:
            raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="netmux"):
        outcome = run(way, Raises, b"abc", eof=False)
    assert isinstance(outcome.lost_exc, ValueError)
    assert [str(record.exc_info[1]) for record in caplog.records if record.exc_info] == ["boom"]


@pytest.mark.parametrize("way", WAYS)
def test_a_keyboard_interrupt_in_a_continuation_aborts_and_propagates(way):
    class Interrupts(Yielder):
        def go_on(self, left: int) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(way, Interrupts, b"abc", eof=False)


def test_one_pipelining_client_cannot_hold_a_line_server_from_another():
    """The table's chat row, in the core: one client's read of 32,000 lines must not
    keep a second client's line waiting behind all of them (before the budget it
    waited for every one: the whole read went to one data_received)."""
    log: List[bytes] = []

    class Worker(netmux.LineHandler):
        def line_received(self, line: bytes) -> None:
            log.append(line)
            if line == b"b":
                self.send_line(b"B")

    reactor = netmux.Reactor()
    server = netmux.TCPServer(("127.0.0.1", 0), Worker, reactor=reactor)
    hog = socket.create_connection(server.server_address[:2])
    polite = socket.create_connection(server.server_address[:2])
    try:
        hog.sendall(b"a\n" * 32_000)                      # 64 KB: one read
        polite.sendall(b"b\n")                            # both wait in the kernel
        run_until(reactor, lambda: len(log) == 32_001, timeout=20)
        assert recv_exactly(polite, 2) == b"B\n"
    finally:
        hog.close()
        polite.close()
        server.server_close()
        reactor.close()
    position = log.index(b"b")
    assert position <= 4 * Worker.frames_per_turn, f"the second client waited for {position} lines"


def test_one_read_hands_a_stream_handler_at_most_the_reactors_read_size():
    sizes: List[int] = []

    class Sizes(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            sizes.append(len(data))

    reactor = netmux.Reactor()
    server = netmux.TCPServer(("127.0.0.1", 0), Sizes, reactor=reactor)
    client = socket.create_connection(server.server_address[:2])
    try:
        client.sendall(b"x" * 300_000)
        client.shutdown(socket.SHUT_WR)
        run_until(reactor, lambda: sum(sizes) == 300_000, timeout=10)
    finally:
        client.close()
        server.server_close()
        reactor.close()
    assert max(sizes) <= netmux.Reactor.read_buffer_size == 64 * 1024


class StreamJournal(netmux.StreamHandler):
    """Echoes lines in upper case, noting on which turn each was read."""

    lost = False
    lost_exc = None

    async def handle(self) -> None:
        self.events: List[Any] = []
        self.turns = 0
        self._tick()
        while True:
            line = await self.readline()
            if not line:
                break
            self.events.append((self.turns, line))
            self.transport.write(line.upper())

    def _tick(self) -> None:
        if not self.lost:
            self.turns += 1
            self.transport.reactor.call_soon(self._tick)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.lost, self.lost_exc = True, exc


@pytest.mark.parametrize("way", WAYS)
def test_a_stream_handler_reads_a_turns_share_then_lets_the_others_go(way):
    lines = [b"line %d\n" % i for i in range(3000)]
    outcome = run(way, StreamJournal, b"".join(lines))
    events = outcome.handler.events
    assert [line for _, line in events] == lines
    per_turn: dict = {}
    for turn, _ in events:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= StreamJournal.reads_per_turn
    assert outcome.written == b"".join(line.upper() for line in lines)
