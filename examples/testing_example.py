"""Test a handler the way netmux tests itself: every cut of the stream, no sockets.

    python -m pytest examples/testing_example.py     # the tests below
    python examples/testing_example.py --demo        # hypothesis finds the bug, the fix passes

docs/testing.md walks through this file. ``PingHandler`` has the first bug of
network code: it takes one ``data_received`` for one command. A test that sends
whole commands passes; the property test below, over every way to cut the
stream (``chunkings``), finds the cut that breaks it. ``FixedPingHandler`` lets
``LineHandler`` reassemble lines and passes for every cut.
"""
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


def test_two_pings_in_one_piece_get_two_pongs():
    assert drive(PingHandler, [b"PING\nPING\n"]).written == b"PONG\nPONG\n"


@given(chunkings(b"PING\nPING\n"))
def test_two_pings_get_two_pongs_however_they_are_cut(chunks):
    conversation = drive(FixedPingHandler, chunks)
    assert conversation.written == b"PONG\nPONG\n"
    assert conversation.closed and conversation.lost_exc is None


def demo() -> None:
    """Let hypothesis find the cut that breaks PingHandler, then check the fix."""
    from hypothesis import find, settings

    cut = find(chunkings(b"PING\nPING\n"),
               lambda chunks: drive(PingHandler, chunks).written != b"PONG\nPONG\n",
               settings=settings(database=None))
    print(f"PingHandler, fed {cut!r}, answers {drive(PingHandler, cut).written!r}")
    test_two_pings_get_two_pongs_however_they_are_cut()
    print("FixedPingHandler answers b'PONG\\nPONG\\n' however the stream is cut")


if __name__ == "__main__":
    demo()
