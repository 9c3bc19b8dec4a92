"""netmux/apps/chat.py over real sockets: commands, validation, a member that never reads, nc."""
from __future__ import annotations

import logging
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
import unicodedata
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netmux
from conftest import ServerProcess, ServingThread, wait_until
from netmux.apps import chat
from netmux.cli import parse_args
from netmux.testing import drive



class Member:
    """One chat client: a blocking socket and a line reader with a deadline."""

    def __init__(self, address: tuple, rcvbuf: Optional[int] = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(address)
        self.pending = b""

    def send(self, line: str, end: bytes = b"\r\n") -> None:
        self.sock.sendall(line.encode() + end)

    def take_lines(self) -> List[str]:
        """The whole lines received so far (the server ends them with \\r\\n)."""
        *lines, self.pending = self.pending.split(b"\r\n")
        return [line.decode() for line in lines]

    def line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.pending:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, f"EOF while waiting for a line (have {self.pending!r})"
            self.pending += data
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line.decode()

    def expect(self, *lines: str) -> None:
        for expected in lines:
            assert self.line() == expected

    def welcome(self) -> str:
        """Read the greeting and the join notice; return the nick given."""
        nick = re.match(r"\* welcome to netmux chat, (\S+);", self.line()).group(1)
        self.expect(f"* {nick} joined lobby")
        return nick

    def assert_closed(self, timeout: float = 10.0) -> None:
        """The server ends the connection (FIN or RST) within the deadline."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(1 << 20):
                    return
        except ConnectionResetError:
            return
        raise AssertionError("the server did not close the connection")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def chat_server() -> Iterator:
    """``chat_server(*options)`` -> (address, members list); all stopped at teardown."""
    started: List[ServingThread] = []
    reactors: List[netmux.Reactor] = []
    members: List[Member] = []

    def start(*options: str, layer: bool = False):
        """Serve a chat with ``options``; ``layer``: each member under a CountingLayer."""
        reactor = netmux.Reactor()
        reactors.append(reactor)
        args = parse_args(["chat", "--port", "0", *options])
        if layer:
            room = chat.Chat.from_arguments(args)
            server = netmux.TCPServer(("127.0.0.1", 0), lambda: netmux.CountingLayer(chat.ChatMember(room)),
                                      reactor=reactor)
        else:
            server = chat.make_server(args, reactor)
        serving = ServingThread(server)
        started.append(serving)

        def join(**kwargs) -> Member:
            members.append(Member(serving.address, **kwargs))
            return members[-1]
        return join

    def stop_all() -> None:
        while started:
            started.pop().stop()
        while reactors:
            reactors.pop().close()

    start.stop_all = stop_all                   # type: ignore[attr-defined]
    yield start
    for member in members:
        member.close()
    stop_all()


def test_a_newcomer_is_a_guest_in_the_lobby_and_the_room_hears_it(chat_server):
    join = chat_server()
    alice = join()
    assert alice.welcome() == "guest1"
    bob = join()
    assert bob.welcome() == "guest2"
    alice.expect("* guest2 joined lobby")


def test_nick_message_who_join_and_quit(chat_server):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.expect("* guest2 joined lobby")
    alice.send("/nick alice")
    alice.expect("* guest1 is now alice")
    bob.expect("* guest1 is now alice")
    alice.send("hello, world")
    bob.expect("<alice> hello, world")            # the sender does not hear itself
    bob.send("/who")
    bob.expect("* in lobby: alice, guest2")
    bob.send("/join kitchen")
    alice.expect("* guest2 went to kitchen")
    bob.expect("* guest2 joined kitchen")
    alice.send("anyone?")                         # bob is in another room now
    bob.send("/who")
    bob.expect("* in kitchen: guest2")
    bob.send("/join lobby")
    bob.expect("* guest2 joined lobby")
    alice.expect("* guest2 joined lobby")
    alice.send("//nick is a command")
    bob.expect("<alice> /nick is a command")
    alice.send("/help")
    assert alice.line().startswith("* commands: /nick NAME, /join ROOM, /who, /quit, /help")
    alice.send("/quit")
    alice.expect("* bye")
    alice.assert_closed()
    bob.expect("* alice left")


def test_lines_end_with_crlf_or_lf_and_arrive_in_any_pieces(chat_server):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.expect("* guest2 joined lobby")
    for piece in [b"/ni", b"ck al", b"ice\r", b"\none\n", b"tw", b"o\r\nthree\r\n"]:
        alice.sock.sendall(piece)
        time.sleep(0.01)                          # give each piece its own recv
    bob.expect("* guest1 is now alice", "<alice> one", "<alice> two", "<alice> three")


@pytest.mark.parametrize("line, error", [
    (b"/nick", "a nick is 1 to 24 printable characters without spaces"),
    (b"/nick two words", "a nick is 1 to 24 printable characters without spaces"),
    (b"/nick " + b"x" * 25, "a nick is 1 to 24 printable characters without spaces"),
    (b"/join", "a room name is 1 to 24 printable characters without spaces"),
    (b"/join lobby", "you are already in lobby"),
    (b"/frobnicate", "unknown command /frobnicate (/help lists them)"),
    (b"hi \x1b[2J there", "control characters are not allowed"),
    (b"/nick bell\x07", "control characters are not allowed"),
    (b"tab\there", "control characters are not allowed"),
    ("look: \u202egnp.exe".encode(), "control characters are not allowed"),     # bidi override
    ("/nick a\u2066b".encode(), "control characters are not allowed"),          # bidi isolate
    (b"x" * (chat.MAX_MESSAGE + 1), f"a message is at most {chat.MAX_MESSAGE} characters"),
    (b"caf\xe9", "a line must be UTF-8 text"),                   # latin-1, not UTF-8
    (b"\xed\xa0\x80 surrogate", "a line must be UTF-8 text"),
    (b"\xff\xfe", "a line must be UTF-8 text"),
])
def test_a_bad_line_gets_an_error_line_and_the_member_stays(chat_server, line, error):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.expect("* guest2 joined lobby")
    alice.sock.sendall(line + b"\r\n")
    alice.expect(f"! error: {error}")
    alice.send("still here")
    bob.expect("<guest1> still here")            # nothing of the bad line reached the room


def test_a_taken_nick_is_refused_whatever_its_case(chat_server):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.send("/nick Alice")
    alice.expect("* guest2 joined lobby", "* guest1 is now Alice")
    bob.send("/nick aLICE")
    bob.expect("* guest1 is now Alice", "! error: the nick aLICE is taken")
    bob.send("/nick guest1")                      # freed by the rename
    bob.expect("* guest2 is now guest1")


def test_unicode_names_and_messages_are_fine(chat_server):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.send("/nick Zoë")
    alice.send("/join café")
    alice.send("/who")
    alice.expect("* guest2 joined lobby", "* guest1 is now Zoë", "* Zoë joined café", "* in café: Zoë")
    bob.expect("* guest1 is now Zoë", "* Zoë went to café")


def test_a_line_over_the_framing_limit_ends_that_connection_and_the_room_hears(chat_server, caplog):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.expect("* guest2 joined lobby")
    with caplog.at_level(logging.WARNING, logger="netmux"):
        try:
            alice.sock.sendall(b"y" * (chat.MAX_LINE * 4))
        except ConnectionError:
            pass                                  # the server may reset us before we finish
        alice.assert_closed()
        bob.expect("* guest1 left")
    (logged,) = [record.getMessage() for record in caplog.records if "framing error" in record.getMessage()]
    assert logged.endswith(f"a line over {chat.MAX_LINE} bytes at stream offset 0"), logged  # as alice read it
    bob.send("/who")
    bob.expect("* in lobby: guest2")


def test_lines_after_quit_in_the_same_chunk_are_not_said(chat_server):
    join = chat_server()
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.expect("* guest2 joined lobby")
    alice.sock.sendall(b"first\r\n/quit\r\nafter quit\r\n")
    alice.expect("* bye")
    alice.assert_closed()
    bob.expect("<guest1> first", "* guest1 left")
    bob.send("/who")
    bob.expect("* in lobby: guest2")


def test_a_guest_nick_taken_by_hand_is_skipped(chat_server):
    join = chat_server()
    alice = join()
    alice.welcome()
    alice.send("/nick guest2")
    alice.expect("* guest1 is now guest2")
    bob = join()
    assert bob.welcome() == "guest3"


def test_stopping_the_server_closes_every_member_quietly(chat_server, caplog):
    join = chat_server()
    members = [join() for _ in range(3)]
    for member in members:
        member.welcome()
    members[0].send("/who")
    members[0].expect("* guest2 joined lobby", "* guest3 joined lobby", "* in lobby: guest1, guest2, guest3")
    with caplog.at_level(logging.DEBUG, logger="netmux"):
        chat_server.stop_all()
        for member in members:
            member.assert_closed()
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


def _message(sender: int, number: int) -> str:
    return f"m{sender:02d}-{number:05d} " + "." * 900


def test_twenty_members_one_never_reads_the_others_get_everything_in_order(chat_server, caplog):
    join = chat_server()
    readers = [join() for _ in range(19)]
    nicks = [reader.welcome() for reader in readers]
    sleepy = join(rcvbuf=4096)                    # never reads again after this
    sleepy.send("/nick sleepy")
    received: Dict[int, List[str]] = {index: [] for index in range(19)}
    notices: Dict[int, List[str]] = {index: [] for index in range(19)}
    sent: List[str] = []

    def drain_until(predicate, timeout: float = 20.0) -> None:
        """Read every reader until ``predicate()`` holds (bounded in time)."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for index, reader in enumerate(readers):
                reader.sock.setblocking(False)
                selector.register(reader.sock, selectors.EVENT_READ, index)
            while not predicate():
                assert time.monotonic() < deadline, "the readers did not get their messages in time"
                for key, _ in selector.select(0.5):
                    reader = readers[key.data]
                    data = reader.sock.recv(1 << 20)
                    assert data, f"{nicks[key.data]} was disconnected"
                    reader.pending += data
                    for line in reader.take_lines():
                        target = received if line.startswith("<") else notices
                        target[key.data].append(line)

    def dropped() -> bool:
        return all("* sleepy left (too slow)" in lines for lines in notices.values())

    with caplog.at_level(logging.WARNING, logger="netmux"):
        batch = 0
        while not dropped():
            assert batch < 400, "the member that never reads was never dropped"
            # One message from each reader per batch: under the 64 KiB backlog of each.
            for index, reader in enumerate(readers):
                sent.append(_message(index, batch))
                reader.sock.setblocking(True)
                reader.send(sent[-1])
            expected = len(sent)
            drain_until(lambda: all(len(lines) == expected - (batch + 1) for lines in received.values()))
            batch += 1
    print(f"\nthe member that never read was dropped after {batch} batches "
          f"({batch * 19 * len(_message(0, 0))} bytes sent its way)")
    # A few more batches after the drop: the room goes on.
    for extra in range(3):
        for index, reader in enumerate(readers):
            sent.append(_message(index, batch))
            reader.sock.setblocking(True)
            reader.send(sent[-1])
        batch += 1
    expected = len(sent)
    drain_until(lambda: all(len(lines) == expected - batch for lines in received.values()))

    for index in range(19):
        others = [f"<{nicks[int(text[1:3])]}> {text}" for text in sent if not text.startswith(f"m{index:02d}-")]
        assert sorted(received[index]) == sorted(others)
        # every reader saw the one order the server broadcast in, each sender's messages in order
        for sender in range(19):
            mine = [line for line in received[index] if line.startswith(f"<{nicks[sender]}> ")]
            assert mine == [line for line in others if line.startswith(f"<{nicks[sender]}> ")]
    for first in range(19):
        for second in (first + 1) % 19, (first + 7) % 19:
            common = [line for line in received[first]
                      if f"<{nicks[second]}> " not in line[:12] and f"<{nicks[first]}> " not in line[:12]]
            theirs = [line for line in received[second]
                      if f"<{nicks[second]}> " not in line[:12] and f"<{nicks[first]}> " not in line[:12]]
            assert common == theirs
    assert any("dropping sleepy" in record.getMessage() for record in caplog.records)
    sleepy.assert_closed()


@pytest.mark.clients
def test_nc_talks_to_python_m_netmux_chat():
    server = ServerProcess(["chat", "--port", "0"], address_pattern=r"server on (127\.0\.0\.1):(\d+)")
    listener = None
    try:
        port = server.address[1]
        listener = Member(("127.0.0.1", port))
        listener.welcome()
        nc = subprocess.run(["nc", "-N", "-q", "1", "127.0.0.1", str(port)],
                            input=b"/nick netcat\r\nhello from nc\r\n/quit\r\n",
                            capture_output=True, timeout=20)
        assert nc.returncode == 0, nc.stderr
        assert b"* guest2 is now netcat\r\n" in nc.stdout and nc.stdout.endswith(b"* bye\r\n")
        listener.expect("* guest2 joined lobby", "* guest2 is now netcat", "<netcat> hello from nc",
                        "* netcat left")
        assert server.stop(signal.SIGINT) == 0
        assert "stopped" in server.log
    finally:
        if listener is not None:
            listener.close()
        server.stop(signal.SIGKILL)


# ---------------------------------------------------------------------------
# Without sockets: the backlog bound, and what one member can make others see.

class _StillReactor:
    """The part of a reactor ChatMember uses, with time standing still: its timers never run
    (the rate limit's own tests run on a real reactor, under drive())."""

    def time(self) -> float:
        return 0.0

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any:
        return SimpleNamespace(cancel=lambda: None)   # a timer that never fires

class _FakeTransport:
    """The part of a transport ChatMember uses, recording what it writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.reading = True
        self.reactor = _StillReactor()

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        self.high = high

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def test_a_member_over_its_backlog_is_dropped_and_its_room_told():
    room = chat.Chat(max_backlog=1000)
    speaker, slow = chat.ChatMember(room), chat.ChatMember(room)
    speaker_transport, slow_transport = _FakeTransport(), _FakeTransport()
    speaker.connection_made(speaker_transport)
    slow.connection_made(slow_transport)
    assert slow_transport.high == 1000            # the backlog is the write buffer's high water
    slow.pause_writing()                          # what the transport calls over high water
    assert slow_transport.closing
    speaker.data_received(b"anyone there?\n")     # not written to the dropped member
    slow.connection_lost(None)
    assert speaker_transport.written.endswith(b"* guest2 left (too slow)\r\n")
    assert room.rooms == {"lobby": {speaker}} and list(room.nicks) == ["guest1"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=60) | st.sampled_from(
           [b"\r\n", b"\n", b"/nick ", b"/join ", b"/who", b"/help", b"\x1b[31m", b"\xc3", b"\xff", b"//",
            "\u202e".encode(), "\u2067".encode(), "\u200f".encode()]),
           max_size=40),
       st.data())
def test_any_bytes_in_any_chunks_reach_the_others_only_as_clean_utf8_lines(pieces, data):
    stream = b"".join(pieces).replace(b"/quit", b"/qu1t")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)])]
    room = chat.Chat(max_backlog=1 << 20)
    speaker, listener = chat.ChatMember(room), chat.ChatMember(room)
    speaker_transport, listener_transport = _FakeTransport(), _FakeTransport()
    speaker.connection_made(speaker_transport)
    listener.connection_made(listener_transport)
    for chunk in chunks:
        speaker.data_received(chunk)
    assert not speaker_transport.closing          # no line under MAX_LINE costs the connection
    heard = bytes(listener_transport.written)
    assert heard.endswith(b"\r\n")
    for line in heard[:-2].split(b"\r\n"):
        text = line.decode("utf-8")               # valid UTF-8
        assert text.startswith(("* ", "<")), text  # notices and messages, never the speaker's errors
        assert not any(unicodedata.category(char) == "Cc" or char in chat.BIDI_CONTROLS for char in text), text
    for line in bytes(speaker_transport.written)[:-2].split(b"\r\n"):
        assert line.startswith((b"* ", b"! error: ", b"<")), line


def test_every_bidi_control_is_refused_and_right_to_left_text_is_said():
    """Trojan Source: U+202E and its kin reorder what a reader's terminal shows after them.
    Each of Unicode's twelve Bidi_Control characters costs the line; Hebrew and Arabic
    letters (right-to-left text, no control) are said."""
    room = chat.Chat(max_backlog=1 << 20)
    speaker, listener = chat.ChatMember(room), chat.ChatMember(room)
    speaker_transport, listener_transport = _FakeTransport(), _FakeTransport()
    speaker.connection_made(speaker_transport)
    listener.connection_made(listener_transport)
    assert len(chat.BIDI_CONTROLS) == 12
    for control in sorted(chat.BIDI_CONTROLS):
        before = bytes(listener_transport.written)
        speaker.data_received(f"tail{control}txt.exe\n".encode())
        assert bytes(speaker_transport.written).endswith(b"! error: control characters are not allowed\r\n")
        assert bytes(listener_transport.written) == before, hex(ord(control))
    speaker.data_received("\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627\n".encode())
    assert bytes(listener_transport.written).endswith("> \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627\r\n".encode())
    assert not speaker_transport.closing


# ---------------------------------------------------------------------------
# A hostile user's attacks (each pinned a defect or a promise).

def _two_in_the_lobby(join) -> tuple:
    alice, bob = join(), join()
    alice.welcome(), bob.welcome()
    alice.expect("* guest2 joined lobby")
    return alice, bob


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_a_line_of_exactly_max_line_bytes_is_answered_whatever_its_line_end(chat_server, end):
    """MAX_LINE counts the text, not the line end: CRLF used to cost the connection at 4096."""
    alice, bob = _two_in_the_lobby(chat_server())
    alice.sock.sendall("é".encode() * (chat.MAX_LINE // 2) + end)     # 4096 bytes, 2048 characters
    alice.expect(f"! error: a message is at most {chat.MAX_MESSAGE} characters")
    alice.sock.sendall("€".encode() * chat.MAX_MESSAGE + end)         # 3000 bytes: said
    bob.expect("<guest1> " + "€" * chat.MAX_MESSAGE)


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_a_line_one_byte_over_max_line_ends_the_connection(chat_server, end):
    alice, bob = _two_in_the_lobby(chat_server())
    alice.sock.sendall(b"z" * (chat.MAX_LINE + 1) + end)
    alice.expect(f"! error: line too long (over {chat.MAX_LINE} bytes); closing the connection")
    alice.assert_closed()
    bob.expect("* guest1 left")


def test_renaming_to_your_own_nick_is_an_error_not_news_but_a_new_case_is_news(chat_server):
    alice, bob = _two_in_the_lobby(chat_server())
    alice.send("/nick guest1")
    alice.expect("! error: you are already guest1")
    alice.send("/nick GUEST1")
    alice.expect("* guest1 is now GUEST1")
    bob.expect("* guest1 is now GUEST1")          # and nothing before it


def test_a_nick_is_free_again_as_soon_as_its_owner_left(chat_server):
    join = chat_server()
    alice, bob = _two_in_the_lobby(join)
    alice.send("/nick alice")
    bob.expect("* guest1 is now alice")
    alice.send("/quit")
    bob.expect("* alice left")
    bob.send("/nick ALICE")
    bob.expect("* guest2 is now ALICE")


def test_room_names_are_case_insensitive_like_nicks(chat_server):
    """'/join Kitchen' used to open a second room beside 'kitchen'."""
    alice, bob = _two_in_the_lobby(chat_server())
    alice.send("/join Kitchen")
    alice.expect("* guest1 joined Kitchen")
    bob.expect("* guest1 went to Kitchen")
    bob.send("/join KITCHEN")
    bob.expect("* guest2 joined Kitchen")         # the room keeps the name it was opened with
    alice.expect("* guest2 joined Kitchen")
    alice.send("/join kitchen")
    alice.expect("! error: you are already in Kitchen")
    bob.send("/JOIN LOBBY")
    bob.expect("* guest2 joined LOBBY")           # lobby had emptied: LOBBY opens it anew
    alice.send("/who")
    alice.expect("* guest2 went to LOBBY", "* in Kitchen: guest1")


@pytest.mark.parametrize("line", ["   ", "/", "/who ", "/WHO", "/Who   "])
def test_blank_messages_are_not_said_and_commands_ignore_case_and_trailing_spaces(chat_server, line):
    alice, bob = _two_in_the_lobby(chat_server())
    alice.send(line)
    alice.send("marker")
    if line.strip().lower() == "/who":
        alice.expect("* in lobby: guest1, guest2")
    elif line == "/":
        alice.expect("! error: unknown command / (/help lists them)")
    bob.expect("<guest1> marker")                 # nothing blank came before it


def test_a_double_slash_alone_says_a_slash(chat_server):
    alice, bob = _two_in_the_lobby(chat_server())
    alice.send("//")
    bob.expect("<guest1> /")


def test_a_room_emptied_and_rejoined_lists_only_who_is_there(chat_server):
    join = chat_server()
    alice, bob = _two_in_the_lobby(join)
    alice.send("/join attic")
    bob.expect("* guest1 went to attic")
    bob.send("/join attic")
    alice.expect("* guest1 joined attic", "* guest2 joined attic")
    alice.send("/quit")
    bob.expect("* guest2 joined attic", "* guest1 left")
    bob.send("/join lobby")
    bob.send("/join attic")
    bob.send("/who")
    bob.expect("* guest2 joined lobby", "* guest2 joined attic", "* in attic: guest2")


def test_members_in_different_rooms_do_not_hear_each_other(chat_server):
    join = chat_server()
    alice, bob = _two_in_the_lobby(join)
    alice.send("/join red")
    bob.expect("* guest1 went to red")
    bob.send("/join blue")
    alice.expect("* guest1 joined red")
    bob.expect("* guest2 joined blue")
    alice.send("in red")
    bob.send("in blue")
    alice.send("/nick Alice")                     # a rename is news to one's own room only
    alice.send("/who")
    alice.expect("* guest1 is now Alice", "* in red: Alice")
    bob.send("/who")
    bob.expect("* in blue: guest2")


def test_bad_utf8_then_good_lines_in_one_chunk(chat_server):
    alice, bob = _two_in_the_lobby(chat_server())
    alice.sock.sendall(b"\xff bad\r\ngood one\r\n\xc3\r\nmixed \xe2\x82\nafter\n")
    alice.expect(*["! error: a line must be UTF-8 text"] * 3)
    bob.expect("<guest1> good one", "<guest1> after")


def test_a_member_leaving_mid_line_is_never_heard_and_the_room_is_told(chat_server, caplog):
    alice, bob = _two_in_the_lobby(chat_server())
    with caplog.at_level(logging.WARNING, logger="netmux"):
        alice.sock.sendall(b"whole\r\nhalf a li")
        alice.close()
        bob.expect("<guest1> whole", "* guest1 left")
    bob.send("/who")
    bob.expect("* in lobby: guest2")
    assert any("middle of a frame: 9 bytes dropped" in r.getMessage() for r in caplog.records)


def test_a_hundred_members_join_and_leave_quickly_and_who_stays_accurate(chat_server, caplog):
    join = chat_server()
    alice = join()
    alice.welcome()
    with caplog.at_level(logging.WARNING, logger="netmux"):
        crowd = [join() for _ in range(100)]
        for index, member in enumerate(crowd):
            if index % 2:
                member.sock.sendall(b"/join side\r\nhi\r\n/quit\r\n")
            else:
                member.close()
        for member in crowd[1::2]:
            member.assert_closed()
        deadline = time.monotonic() + 10
        while True:
            alice.send("/who")
            line = alice.line()
            while not line.startswith("* in lobby:"):
                line = alice.line()
            if line == "* in lobby: guest1" or time.monotonic() > deadline:
                break
        assert line == "* in lobby: guest1"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_one_member_flooding_ten_thousand_lines_reaches_the_readers_in_order(chat_server):
    """With the rate limit raised out of the way: the fan-out itself loses nothing."""
    join = chat_server("--max-line-rate", "1000000", "--line-burst", "10000")
    readers = [join() for _ in range(4)]
    for reader in readers:
        reader.welcome()
    flooder = join()
    flooder.welcome()
    payload = b"".join(b"flood %05d %s\n" % (number, b"." * 200) for number in range(10_000))
    sender = threading.Thread(target=flooder.sock.sendall, args=(payload,), daemon=True)
    sender.start()
    heard: Dict[int, List[str]] = {index: [] for index in range(4)}
    deadline = time.monotonic() + 30
    with selectors.DefaultSelector() as selector:
        for index, reader in enumerate(readers):
            reader.sock.setblocking(False)
            selector.register(reader.sock, selectors.EVENT_READ, index)
        while any(len(lines) < 10_000 for lines in heard.values()):
            assert time.monotonic() < deadline, {index: len(lines) for index, lines in heard.items()}
            for key, _ in selector.select(0.5):
                reader = readers[key.data]
                data = reader.sock.recv(1 << 20)
                assert data, f"reader {key.data} was dropped"
                reader.pending += data
                heard[key.data] += [line for line in reader.take_lines() if line.startswith("<")]
    sender.join(10)
    expected = [f"<guest5> flood {number:05d} {'.' * 200}" for number in range(10_000)]
    assert all(lines == expected for lines in heard.values())


class _SlowTransport(_FakeTransport):
    """A transport whose close() waits for a flush that never comes (a peer that never
    reads), and which calls pause_writing past its high-water mark, as the real one does."""

    def __init__(self) -> None:
        super().__init__()
        self.handler: Optional[chat.ChatMember] = None
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.written) > self.high and self.handler is not None:
            self.handler.pause_writing()

    def abort(self) -> None:
        self.aborted = self.closing = True


def _fake_room(max_backlog: int = 1 << 20):
    room = chat.Chat(max_backlog=max_backlog)
    stayer, leaver = chat.ChatMember(room), chat.ChatMember(room)
    stayer_transport, leaver_transport = _FakeTransport(), _SlowTransport()
    stayer.connection_made(stayer_transport)
    leaver.connection_made(leaver_transport)
    leaver_transport.handler = leaver
    return room, stayer, stayer_transport, leaver, leaver_transport


def test_quit_leaves_the_room_at_once_even_if_the_goodbye_cannot_be_flushed():
    """A member that /quit but does not read used to stay in /who, and keep its nick,
    until its unsent output drained: possibly forever."""
    room, stayer, stayer_transport, leaver, leaver_transport = _fake_room()
    leaver.data_received(b"/nick Leaver\n/quit\n")
    assert leaver_transport.closing and not leaver_transport.aborted
    assert stayer_transport.written.endswith(b"* guest2 is now Leaver\r\n* Leaver left\r\n")
    assert room.rooms == {"lobby": {stayer}} and list(room.nicks) == ["guest1"]
    stayer.data_received(b"/nick leaver\n")       # the nick is free at once
    assert stayer_transport.written.endswith(b"* guest1 is now leaver\r\n")
    leaver.connection_lost(None)                  # the flush ends, much later
    assert room.nicks == {"leaver": stayer}       # the new owner keeps the nick
    assert stayer_transport.written.count(b"left") == 1


def test_a_slow_member_dropped_by_its_own_goodbye_is_announced_once_as_too_slow():
    room, stayer, stayer_transport, leaver, leaver_transport = _fake_room(max_backlog=200)
    leaver_transport.written += b"x" * 195        # unsent output just under the backlog
    leaver.data_received(b"/quit\n")              # "* bye" takes it over: dropped mid-quit
    assert leaver_transport.aborted
    leaver.connection_lost(None)
    assert stayer_transport.written.endswith(b"* guest2 left (too slow)\r\n")
    assert stayer_transport.written.count(b"left") == 1
    assert room.rooms == {"lobby": {stayer}} and list(room.nicks) == ["guest1"]


# ---------------------------------------------------------------------------
# Fairness (issue 16): one member's lines cost the room at most its share.
# Each claim over a plain socket and under a CountingLayer, and the rate limit's
# arithmetic under netmux.testing.drive() on virtual time.

WAYS = [pytest.param(False, id="plain"), pytest.param(True, id="layer")]


class _Readers(threading.Thread):
    """Members that read everything, in a background thread, until stop() (or 60 s):
    the messages each heard, its notices, and which ones the server closed."""

    def __init__(self, join, count: int) -> None:
        super().__init__(daemon=True)
        self.members = [join() for _ in range(count)]
        self.nicks = [member.welcome() for member in self.members]
        self.heard: List[List[str]] = [[] for _ in range(count)]
        self.notices: List[List[str]] = [[] for _ in range(count)]
        self.closed: List[bool] = [False] * count
        self.running = True
        self.start()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as selector:
            for index, member in enumerate(self.members):
                member.sock.setblocking(False)
                selector.register(member.sock, selectors.EVENT_READ, index)
            while self.running and time.monotonic() < deadline:
                for key, _ in selector.select(0.05):
                    member = self.members[key.data]
                    try:
                        data = member.sock.recv(1 << 20)
                    except ConnectionError:
                        data = b""
                    if not data:
                        self.closed[key.data] = True
                        selector.unregister(member.sock)
                        continue
                    member.pending += data
                    for line in member.take_lines():
                        (self.heard if line.startswith("<") else self.notices)[key.data].append(line)

    def stop(self) -> None:
        self.running = False
        self.join(5)
        assert not self.is_alive()


class _Flooder(threading.Thread):
    """A member sending ``a\\n`` as fast as the server takes it, for at most ``seconds``
    or until the server closes it; counts what the kernel took, keeps what it was told."""

    def __init__(self, join, seconds: float) -> None:
        super().__init__(daemon=True)
        self.member = join()
        self.nick = self.member.welcome()
        self.seconds = seconds
        self.sent = 0
        self.told = b""
        self.dropped = False
        self.started_at = self.ended_at = 0.0

    def run(self) -> None:
        sock, chunk = self.member.sock, b"a\n" * 32768
        sock.setblocking(False)
        self.started_at = time.monotonic()
        deadline = self.started_at + self.seconds
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while not self.dropped and time.monotonic() < deadline:
                for _, events in selector.select(0.05):
                    try:
                        if events & selectors.EVENT_READ:
                            data = sock.recv(65536)
                            self.told = (self.told + data)[-4096:]
                            self.dropped = not data
                        if events & selectors.EVENT_WRITE and not self.dropped:
                            self.sent += sock.send(chunk)
                    except BlockingIOError:
                        pass
                    except ConnectionError:
                        self.dropped = True
        self.ended_at = time.monotonic()


def _probe(join, asker: Member) -> tuple:
    """Seconds until a newcomer's welcome, and until ``asker``'s /who is answered."""
    start = time.monotonic()
    newcomer = join()
    assert newcomer.line(timeout=10).startswith("* welcome")
    welcome = time.monotonic() - start
    newcomer.close()
    start = time.monotonic()
    asker.send("/who")
    deadline = start + 10
    while not asker.line(timeout=max(0.01, deadline - time.monotonic())).startswith("* in lobby"):
        pass
    return welcome, time.monotonic() - start


def _probes(join, asker: Member, count: int) -> List[tuple]:
    """``count`` probes, a tenth of a second apart (the pace, not a wait for a result)."""
    results = []
    for _ in range(count):
        time.sleep(0.1)
        results.append(_probe(join, asker))
    return results


@pytest.mark.parametrize("layer", WAYS)
def test_a_flooder_among_ten_readers_is_told_and_dropped_and_the_room_never_waits(chat_server, layer, caplog):
    """Issue 16's row: one member sends a\\n as fast as it can with ten in the room. The
    old server took 6.5-15.9 s to welcome a newcomer and 6.3-9.4 s to answer /who."""
    join = chat_server(layer=layer)
    readers = _Readers(join, 10)
    asker = join()
    asker.welcome()
    flooder = _Flooder(join, seconds=3)
    with caplog.at_level(logging.WARNING, logger="netmux"):
        flooder.start()
        latencies = _probes(join, asker, 5)
        flooder.join(10)
        wait_until(lambda: all(f"* {flooder.nick} left (flooding)" in notices
                               for notices in readers.notices), timeout=10)
        latencies += _probes(join, asker, 2)
        readers.stop()
    print(f"\nslowest welcome {max(w for w, _ in latencies) * 1000:.1f} ms, "
          f"slowest /who {max(w for _, w in latencies) * 1000:.1f} ms, flooder sent {flooder.sent} bytes")
    assert max(welcome for welcome, _ in latencies) < 0.5, latencies
    assert max(who for _, who in latencies) < 0.5, latencies
    assert flooder.dropped and flooder.ended_at - flooder.started_at < 2.9   # dropped, not timed out
    assert (b"! error: too many lines (more than 20 a second for 30 s); closing the connection\r\n"
            in flooder.told)
    # What the room heard: the burst and the rate's worth, of the ~100,000s of lines sent.
    allowed = chat.LINE_BURST + chat.LINE_RATE * (flooder.ended_at - flooder.started_at) + 1
    assert all(len(lines) <= allowed for lines in readers.heard), [len(lines) for lines in readers.heard]
    assert flooder.sent // 2 > 100 * allowed
    assert not any(readers.closed)
    assert not any("too slow" in line for notices in readers.notices for line in notices)
    assert [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()] == [
        f"chat: dropping {flooder.nick} ({flooder.member.sock.getsockname()}): "
        "more than 20 lines a second for 30 s"]


@pytest.mark.parametrize("layer", WAYS)
def test_a_flooder_under_its_flood_timeout_is_paused_to_the_rate_and_the_room_never_waits(
        chat_server, layer):
    """With a flood timeout it cannot reach in the test, the flooder stays, held to the
    rate: paused while its lines wait, its kernel buffer full, the room served meanwhile."""
    join = chat_server("--max-line-rate", "200", "--flood-timeout", "600", layer=layer)
    readers = _Readers(join, 10)
    asker = join()
    asker.welcome()
    flooder = _Flooder(join, seconds=2)
    flooder.start()
    latencies = _probes(join, asker, 8)
    flooder.join(10)
    elapsed = flooder.ended_at - flooder.started_at
    readers.stop()
    print(f"\nslowest welcome {max(w for w, _ in latencies) * 1000:.1f} ms, "
          f"slowest /who {max(w for _, w in latencies) * 1000:.1f} ms, flooder sent {flooder.sent} bytes")
    assert max(welcome for welcome, _ in latencies) < 0.5, latencies
    assert max(who for _, who in latencies) < 0.5, latencies
    assert not flooder.dropped and b"! error" not in flooder.told
    heard = [len(lines) for lines in readers.heard]
    assert all(chat.LINE_BURST < count <= chat.LINE_BURST + 200 * (elapsed + 1) for count in heard), heard
    assert all(lines == ["<%s> a" % flooder.nick] * len(lines) for lines in readers.heard)
    assert flooder.sent // 2 > 50 * max(heard)          # it tried far more than it got said
    assert not any(readers.closed)


@pytest.mark.parametrize("layer", WAYS)
def test_a_paste_of_three_hundred_lines_arrives_whole_in_order_at_the_rate(chat_server, layer):
    join = chat_server("--max-line-rate", "200", layer=layer)
    alice, bob = _two_in_the_lobby(join)
    start = time.monotonic()
    alice.sock.sendall(b"".join(b"paste %03d\n" % number for number in range(300)))
    bob.expect(*[f"<guest1> paste {number:03d}" for number in range(300)])
    took = time.monotonic() - start
    assert (300 - chat.LINE_BURST) / 200 - 0.1 <= took < 5, took      # paced: 100 at once, then 200/s
    alice.send("/who")
    alice.expect("* in lobby: guest1, guest2")          # not dropped, reading again


# -- the rate limit on virtual time --------------------------------------------

class _TimedTransport(_FakeTransport):
    """A listener's transport that notes when (on the speaker's reactor) each line came."""

    def __init__(self, speaker: chat.ChatMember) -> None:
        super().__init__()
        self.speaker = speaker
        self.lines: List[tuple] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        when = self.speaker.transport.reactor.time() if self.speaker.transport else 0.0
        self.lines += [(when, line.decode()) for line in bytes(data).split(b"\r\n")[:-1]]


def _speaker_and_listener(layer: bool, **limits: Any) -> tuple:
    """A factory for drive(): the speaker (under a CountingLayer when ``layer``), with a
    listener in its room on a _TimedTransport; and the listener's transport."""
    room = chat.Chat(max_backlog=1 << 20, **limits)
    speaker, listener = chat.ChatMember(room), chat.ChatMember(room)
    heard = _TimedTransport(speaker)
    listener.connection_made(heard)

    def factory() -> Any:
        return netmux.CountingLayer(speaker) if layer else speaker
    return factory, heard


def _reading_events(conversation) -> List[tuple]:
    return [(round(when, 6), event) for when, event, _ in conversation.events
            if event in ("pause_reading", "resume_reading", "close", "abort")]


@pytest.mark.parametrize("layer", WAYS)
def test_a_thousand_lines_in_one_chunk_go_out_at_the_rate_with_one_pause_and_one_resume(layer):
    factory, heard = _speaker_and_listener(layer, line_rate=100, line_burst=100)
    lines = b"".join(b"line %04d\n" % number for number in range(1000))
    conversation = drive(factory, [lines], eof=False)
    said = [(when, line) for when, line in heard.lines if line.startswith("<")]
    assert [line for _, line in said] == [f"<guest2> line {number:04d}" for number in range(1000)]
    # The burst at once, then one line every 1/100 s: line k at (k - 99) / 100.
    for number, (when, _) in enumerate(said):
        assert when == pytest.approx(max(0, number - 99) / 100, abs=1e-6), (number, when)
    assert _reading_events(conversation) == [(0.0, "pause_reading"), (9.0, "resume_reading")]
    assert not conversation.closed and conversation.written.startswith(b"* welcome")


@pytest.mark.parametrize("layer", WAYS)
def test_a_member_held_back_past_the_flood_timeout_is_told_and_dropped_and_its_room_hears(layer):
    """10 at once, then 10 a second, 5 s at most in a row: 40 lines take 3 s (fine), then
    40 more would take 4 s more: dropped as soon as that is certain, at 3 s."""
    factory, heard = _speaker_and_listener(layer, line_rate=10, line_burst=10, flood_timeout=5)
    chunks = [b"".join(b"c%02d l%02d\n" % (chunk, line) for line in range(40)) for chunk in range(50)]
    conversation = drive(factory, chunks, eof=False)
    said = [line for _, line in heard.lines if line.startswith("<")]
    assert said == [f"<guest2> c00 l{line:02d}" for line in range(40)]
    assert heard.lines[-1] == (pytest.approx(3.0), "* guest2 left (flooding)")
    assert conversation.written.endswith(
        b"! error: too many lines (more than 10 a second for 5 s); closing the connection\r\n")
    assert _reading_events(conversation) == [
        (0.0, "pause_reading"), (3.0, "resume_reading"), (3.0, "pause_reading"), (3.0, "close")]
    assert conversation.lost
    assert [event for _, event, _ in conversation.events].count("data_received") == 2  # the rest never read


@pytest.mark.parametrize("layer", WAYS)
def test_in_a_crowded_room_one_member_gets_a_few_lines_a_turn(layer):
    """One line costs a write per member: in a room of 250, a turn's share is 4 lines
    (WRITES_PER_TURN // 250), so 64 lines of one read take 16 turns, the room served between."""
    factory, heard = _speaker_and_listener(layer)
    speaker = heard.speaker
    for _ in range(248):
        chat.ChatMember(speaker.chat).connection_made(_FakeTransport())
    conversation = drive(factory, [b"".join(b"hello %02d\n" % number for number in range(64))], eof=False)
    assert speaker.frames_per_turn == chat.WRITES_PER_TURN // 250 == 4
    assert [line for _, line in heard.lines if line.startswith("<")] == [
        f"<{speaker.nick}> hello {number:02d}" for number in range(64)]
    assert [event for _, event, _ in conversation.events].count("yield_turn") == 64 // 4 - 1


def test_who_in_a_crowded_room_names_the_first_hundred_and_counts_the_rest():
    room = chat.Chat(max_backlog=1 << 20)
    members = [chat.ChatMember(room) for _ in range(250)]
    for member in members:
        member.connection_made(_FakeTransport())
    members[0].data_received(b"/who\n")
    answer = bytes(members[0].transport.written).split(b"\r\n")[-2].decode()
    names = sorted(f"guest{number}" for number in range(1, 251))[:chat.MAX_WHO]
    assert answer == f"* in lobby: {', '.join(names)} and 150 more"


def test_help_names_every_command_the_dispatcher_knows():
    """A chat command is one method marked with its name and usage: /help is made
    from the same registry, so no command can be missing from it."""
    from netmux.apps.chat import _COMMANDS, HELP
    assert set(_COMMANDS) == {"/nick", "/join", "/who", "/quit", "/help"}
    for name in _COMMANDS:
        assert name in HELP
