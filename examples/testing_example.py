"""Test a handler the way netmux tests itself: every cut of the stream, no sockets.

    python -m pytest examples/testing_example.py     # the tests below
    python examples/testing_example.py --demo        # hypothesis finds the bug, the fix passes

docs/testing.md walks through this file. ``PingHandler`` has the first bug of
network code: it takes one ``data_received`` for one command. A test that sends
whole commands passes; the property test below, over every way to cut the
stream (``chunkings``), finds the cut that breaks it. ``FixedPingHandler`` lets
``LineHandler`` reassemble lines and passes for every cut.
"""
from typing import Optional

import netmux
from hypothesis import given
from netmux.testing import chunkings, drive


def reply(command: bytes) -> bytes:
    return b"PONG\n" if command == b"PING" else b"ERR unknown command\n"


class PingHandler(netmux.Handler):
    """Wrong: assumes each recv() holds whole commands."""

    def data_received(self, data: bytes) -> None:
        for command in data.split(b"\n"):
            if command:
                self.transport.write(reply(command))


class FixedPingHandler(netmux.LineHandler):
    """Right: LineHandler calls line_received once per whole line."""

    def line_received(self, line: bytes) -> None:
        self.transport.write(reply(line))


class Reminder(netmux.LineHandler):
    """Answers each line with ``ok``; after 30 s of silence, says so and closes."""

    def connection_made(self, transport: netmux.Transport) -> None:
        super().connection_made(transport)
        self.timer = transport.reactor.call_later(30, self.remind)

    def line_received(self, line: bytes) -> None:
        self.timer.cancel()
        self.transport.write(b"ok\n")
        self.timer = self.transport.reactor.call_later(30, self.remind)

    def remind(self) -> None:
        self.transport.write(b"still there?\n")
        self.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.timer.cancel()


def test_two_pings_in_one_piece_get_two_pongs():
    assert drive(PingHandler, [b"PING\nPING\n"]).written == b"PONG\nPONG\n"


@given(chunkings(b"PING\nPING\n"))
def test_two_pings_get_two_pongs_however_they_are_cut(chunks):
    conversation = drive(FixedPingHandler, chunks)
    assert conversation.written == b"PONG\nPONG\n"
    assert conversation.closed and conversation.lost_exc is None


def test_a_silent_peer_is_reminded_after_30_virtual_seconds():
    conversation = drive(Reminder, [b"hi\n"], eof=False)   # the peer stays, silent
    assert conversation.written == b"ok\nstill there?\n"
    assert conversation.closed and conversation.time == 30


def test_with_the_default_eof_the_peer_hangs_up_and_the_timer_never_fires():
    conversation = drive(Reminder, [b"hi\n"])      # eof=True: the peer's FIN follows
    assert conversation.written == b"ok\n"          # LineHandler closes at EOF...
    assert conversation.closed and conversation.time == 0   # ...at once, at t=0


def demo() -> None:
    """Let hypothesis find the cut that breaks PingHandler, then check the fix."""
    from hypothesis import find, settings

    cut = find(chunkings(b"PING\nPING\n"),
               lambda chunks: drive(PingHandler, chunks).written != b"PONG\nPONG\n",
               settings=settings(database=None))
    print(f"PingHandler, fed {cut!r}, answers {drive(PingHandler, cut).written!r}")
    test_two_pings_get_two_pongs_however_they_are_cut()
    print("FixedPingHandler answers b'PONG\\nPONG\\n' however the stream is cut")
    for eof in (True, False):
        conversation = drive(Reminder, [b"hi\n"], eof=eof)
        print(f"Reminder, eof={eof}: wrote {conversation.written!r} "
              f"and closed at t={conversation.time:g} s (virtual)")


if __name__ == "__main__":
    demo()
