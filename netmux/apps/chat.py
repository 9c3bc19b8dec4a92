"""``python -m netmux chat``: a line-based chat server for ``nc`` and ``telnet``.

Each connection is a member with a nick (``guest1``, ``guest2``, ... until
``/nick``) in one room (``lobby`` until ``/join``). A line that is not a command
goes to every other member of the room as ``<nick> text``. Commands:
``/nick NAME``, ``/join ROOM``, ``/who``, ``/quit``, ``/help``; a line starting
with ``//`` sends the rest as text. Notices start with ``"* "``, errors with
``"! error: "`` and never end the connection. Nicks and room names are
case-insensitive (``/join Kitchen`` finds ``kitchen``; a room keeps the name it
was opened with). An empty or blank message is not said.

What it checks: every line is UTF-8 without control characters (an escape
sequence from one member must not drive another's terminal; nor may a bidi
control such as U+202E RIGHT-TO-LEFT OVERRIDE reorder the text after it on the
readers' screens, the "Trojan Source" trick: ``BIDI_CONTROLS``), a message is at
most ``MAX_MESSAGE`` characters, a name ``MAX_NAME`` printable characters
without spaces. A line over ``MAX_LINE`` bytes (its ``\r\n`` or ``\n`` not
counted) is a framing error: the framer refuses to buffer it, the member
hears ``! error: line too long`` and the connection ends (see
``netmux.FramedHandler.framing_error``).

Why a slow member is dropped: broadcasting writes to every member's transport,
and a member that does not read keeps those bytes in its write buffer. The
write buffer's high-water mark is set to ``--max-backlog``; when a member goes
over it, ``pause_writing`` (which by default would stop reading that member,
no help here) aborts it: its buffer is dropped, no more is written to it, and
on the next turn ``connection_lost`` takes it out of its room, which hears
``* nick left (too slow)``. The others never wait for it. For the same reason
``/quit`` leaves the room and frees the nick at once, not when its ``* bye``
has been flushed.

Why a fast member is held back, then dropped: every line said costs one write
per member of the room, so one member sending ``a\n`` as fast as it can (tens
of thousands of lines a read) would make the room's fan-out, and everyone's
wait, as large as it likes. Each member has a token bucket of lines
(``--line-burst``, 100 at once, refilled at ``--max-line-rate``, 20 a second;
commands count too). A line that finds the bucket empty waits, in order, and
the member is paused (``pause_reading``: its kernel buffer fills and TCP slows
the sender down) until its waiting lines have been handled at the rate; then
reading resumes. A member held back for more than ``--flood-timeout`` seconds
in a row (30; decided as soon as its waiting lines alone would take longer)
hears ``! error: too many lines ...; closing the connection`` and is closed,
and its room hears ``* nick left (flooding)``. A paste of a few hundred lines
gets through, paced; a flood does not. The lines waiting are at most one
read's worth (64 KiB): no more is read meanwhile.

Fairness within a turn: ``frames_per_turn`` shrinks with the room, so one
member's share of a turn is about ``WRITES_PER_TURN`` writes, however large
the room (``netmux.FramedHandler`` keeps the rest of a read for later turns).
Past the rate limit, readers that keep reading are not dropped as too slow
because of one flooder: what reaches them is at most a burst, then the rate.

Built on the public API only: ``netmux.LineHandler`` on a ``TCPServer``, or a
``UnixServer`` with ``--unix``.
Pinned by tests/test_app_chat.py.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import unicodedata
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set

import netmux
from netmux.apps import positive_int, duration, stream_server

DESCRIPTION = "line-based chat rooms for nc/telnet: /nick, /join, /who, /quit"
DEFAULT_PORT = 8008
UNIX_SOCKETS = True
WORKERS = False          # the rooms live in one process: --workers would split them
DEFAULT_ROOM = "lobby"
MAX_LINE = 4096          # bytes before the line end: longer lines end the connection
MAX_MESSAGE = 1000       # characters in one message
MAX_NAME = 24            # characters in a nick or a room name
MAX_WHO = 100            # names /who lists; "and N more" for the rest of a larger room
LINE_RATE = 20           # lines a member may send per second, on average (--max-line-rate)
LINE_BURST = 100         # lines it may send at once before the rate applies (--line-burst)
FLOOD_TIMEOUT = 30.0     # seconds held back in a row before it is dropped (--flood-timeout)
WRITES_PER_TURN = 1000   # fan-out writes one member's lines may cost in one turn of the loop

logger = logging.getLogger("netmux")

#: Unicode's Bidi_Control characters: the embeddings and overrides U+202A-U+202E, the
#: isolates U+2066-U+2069, and the marks U+200E, U+200F and U+061C. They are format
#: characters (category Cf), not Cc, but they change how the rest of a line is shown:
#: "<bob> \u202egnp.exe" reads as "<bob> exe.png", and an override left open reverses
#: whatever a terminal prints after it. Refused like control characters; right-to-left
#: letters themselves (Arabic, Hebrew) are text, and welcome.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# The commands: each is one method marked with @_command, its name and usage
# beside it; /help's line is made from them, so a new command cannot be missing.
_COMMANDS: Dict[str, Callable[..., None]] = {}
_USAGES: List[str] = []


def _command(name: str, usage: str = "") -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(method: Callable[..., None]) -> Callable[..., None]:
        _COMMANDS[name] = method
        _USAGES.append(f"{name} {usage}".rstrip())
        return method
    return register


class ChatError(ValueError):
    """A member's mistake: reported back as ``! error: ...``, never fatal."""


def _check_text(text: str) -> None:
    if any(unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS for char in text):
        raise ChatError("control characters are not allowed")


def _check_name(name: str, what: str) -> str:
    _check_text(name)
    if not name or len(name) > MAX_NAME or not name.isprintable() or any(c.isspace() for c in name):
        raise ChatError(f"a {what} is 1 to {MAX_NAME} printable characters without spaces")
    return name


class Chat:
    """What the members of one server share: who is in which room, and which nicks are taken."""

    def __init__(self, max_backlog: int, line_rate: float = LINE_RATE, line_burst: int = LINE_BURST,
                 flood_timeout: float = FLOOD_TIMEOUT) -> None:
        self.max_backlog = max_backlog
        self.line_rate, self.line_burst, self.flood_timeout = line_rate, line_burst, flood_timeout
        self.rooms: Dict[str, Set["ChatMember"]] = {}   # casefolded room name -> members
        self.nicks: Dict[str, "ChatMember"] = {}        # casefolded nick -> member
        self._guests: Iterator[int] = itertools.count(1)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> "Chat":
        """A chat with the limits of the command line (``add_arguments``)."""
        return cls(args.max_backlog, args.max_line_rate, args.line_burst, args.flood_timeout)

    def guest_nick(self) -> str:
        """A free ``guestN``."""
        while True:
            nick = f"guest{next(self._guests)}"
            if nick.casefold() not in self.nicks:
                return nick

    def members(self, room: Optional[str]) -> Set["ChatMember"]:
        """Who is in ``room`` (any case) now: an empty set for a room nobody is in."""
        return self.rooms.get((room or "").casefold(), set())

    def share_turns(self, room: Optional[str]) -> None:
        """After ``room`` grew or shrank: each member's lines per turn, so that one member's
        share of a turn costs about WRITES_PER_TURN writes of fan-out (one line at least)."""
        members = self.members(room)
        share = max(1, min(netmux.FramedHandler.frames_per_turn, WRITES_PER_TURN // max(1, len(members))))
        for member in members:
            member.frames_per_turn = share

    def say(self, room: Optional[str], line: str, exclude: Optional["ChatMember"] = None) -> None:
        """Send ``line`` to every member of ``room`` (but ``exclude``)."""
        data = line.encode() + b"\r\n"
        for member in list(self.members(room)):   # a copy: a slow member leaves mid-loop
            if member is not exclude:
                member.send_raw(data)


class LineBudget:
    """A token bucket of lines: ``burst`` at once, then ``rate`` a second on average."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), now

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> bool:
        """Spend one line's token if there is one; False when the line must wait."""
        self._refill(now)
        if self.tokens < 1 - 1e-9:          # a timer due at a whole token is not refused by rounding
            return False
        self.tokens = max(0.0, self.tokens - 1)
        return True

    def wait(self, now: float) -> float:
        """Seconds until the next token."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)


class ChatMember(netmux.LineHandler):
    """One connection: its nick, its room, and the commands it types."""

    max_length = MAX_LINE + 1       # the "\r" of a "\r\n" line end is not the member's text

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.nick = ""
        self.room: Optional[str] = None
        self.farewell = "left"
        self._budget: Optional[LineBudget] = None
        self._waiting: Deque[bytes] = deque()       # lines held back by the rate, in order
        self._release: Optional[netmux.Timer] = None  # when the next waiting line may go
        self._held_since: Optional[float] = None    # start of the current run of held lines

    # -- connection events ---------------------------------------------------

    def connection_made(self, transport: netmux.Transport) -> None:
        """Bound the backlog, pick a guest nick, greet, and enter the lobby."""
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=self.chat.max_backlog)
        self._budget = LineBudget(self.chat.line_rate, self.chat.line_burst, transport.reactor.time())
        self.nick = self.chat.guest_nick()
        self.chat.nicks[self.nick.casefold()] = self
        self.send_notice(f"welcome to netmux chat, {self.nick}; /help lists the commands")
        self._enter(DEFAULT_ROOM)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """The connection is gone: forget what waits, and leave, unless ``/quit`` already did."""
        self._stop_waiting()
        self._depart()

    def pause_writing(self) -> None:
        """Over ``--max-backlog`` unsent bytes: drop this member, never wait for it."""
        logger.warning("chat: dropping %s (%s): more than %d bytes unsent",
                       self.nick, self.transport.get_extra_info("peername"), self.chat.max_backlog)
        self.farewell = "left (too slow)"
        self.transport.abort()          # send_raw skips it from now on; connection_lost tells the room

    def line_received(self, line: bytes) -> None:
        """One line: handled now if the member's budget allows, else held back in order."""
        assert self._budget is not None
        if self._waiting or not self._budget.take(self.transport.reactor.time()):
            self._hold(line)
            return
        self._held_since = None             # said at once: no longer held back
        self._handle(line)
        if self.draining and not self.transport.is_closing():
            self.transport.close()          # a drain waited for this line to end

    def drain_started(self) -> None:
        """The server is draining: say so, and go at once unless a line is half-typed
        (then after it: the next message boundary)."""
        super().drain_started()
        self.send_notice("the server is shutting down")
        if not self.framer.buffered:
            self.transport.close()

    def _handle(self, line: bytes) -> None:
        """One line, ``\r\n`` or ``\n`` ended: a command or a message; a mistake is answered."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_LINE:        # a bare "\n" after MAX_LINE + 1 bytes: as the framer would
            self.framing_error(netmux.FramingError(f"a line over {MAX_LINE} bytes"))
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.send_error("a line must be UTF-8 text")
            return
        try:
            self._dispatch(text)
        except ChatError as error:
            self.send_error(str(error))

    # -- the rate limit --------------------------------------------------------

    def _hold(self, line: bytes) -> None:
        """Keep ``line`` for later, stop reading, and drop a member that cannot catch up in time."""
        now = self.transport.reactor.time()
        if self._held_since is None:
            self._held_since = now
        self._waiting.append(line)
        # Held back from _held_since until its last waiting line goes, at the rate at best:
        # once that is over the limit, waiting longer changes nothing.
        if now - self._held_since + len(self._waiting) / self.chat.line_rate > self.chat.flood_timeout:
            self._drop_flooder()
            return
        if len(self._waiting) == 1:
            self.transport.pause_reading()      # the kernel buffer fills; TCP slows the sender
            self._schedule_release(now)

    def _schedule_release(self, now: float) -> None:
        assert self._budget is not None
        self._release = self.transport.reactor.call_later(self._budget.wait(now), self._release_waiting)

    def _release_waiting(self) -> None:
        """Handle the waiting lines the budget allows (a turn's share at most), then read again
        once none is left."""
        self._release = None
        assert self._budget is not None
        now = self.transport.reactor.time()
        for _ in range(self.frames_per_turn):
            if not self._waiting or self.transport.is_closing() or not self._budget.take(now):
                break
            self._handle(self._waiting.popleft())
        if self.transport.is_closing():
            self._stop_waiting()
        elif self._waiting:
            self._schedule_release(now)
        else:
            self.transport.resume_reading()

    def _drop_flooder(self) -> None:
        """Over the flood limit: tell it, leave the room at once (as /quit does), close."""
        logger.warning("chat: dropping %s (%s): more than %g lines a second for %g s",
                       self.nick, self.transport.get_extra_info("peername"),
                       self.chat.line_rate, self.chat.flood_timeout)
        self._stop_waiting()
        self.send_error(f"too many lines (more than {self.chat.line_rate:g} a second "
                        f"for {self.chat.flood_timeout:g} s); closing the connection")
        self.farewell = "left (flooding)"
        self._depart()
        self.transport.close()

    def _stop_waiting(self) -> None:
        self._waiting.clear()
        if self._release is not None:
            self._release.cancel()
            self._release = None

    def framing_error(self, error: netmux.FramingError) -> None:
        """A line too long to buffer: say why before the connection ends (logged, closed)."""
        self.send_error(f"line too long (over {MAX_LINE} bytes); closing the connection")
        # The framer's limit counts the "\r" of "\r\n" (max_length is MAX_LINE + 1):
        # the log says the limit the member was told, not the framer's.
        where = "" if error.offset is None else f" at stream offset {error.offset}"
        super().framing_error(netmux.FramingError(f"a line over {MAX_LINE} bytes{where}", error.offset))

    # -- output ----------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` unless this member is already on its way out."""
        if not self.transport.is_closing():
            self.transport.write(data)

    def send_notice(self, text: str) -> None:
        """``* text`` to this member only."""
        self.send_raw(f"* {text}\r\n".encode())

    def send_error(self, text: str) -> None:
        """``! error: text`` to this member only."""
        self.send_raw(f"! error: {text}\r\n".encode())

    # -- commands --------------------------------------------------------------

    def _dispatch(self, text: str) -> None:
        _check_text(text)
        if not text:
            return
        if not text.startswith("/") or text.startswith("//"):
            self._message(text[1:] if text.startswith("//") else text)
            return
        command, _, argument = text.partition(" ")
        handler = _COMMANDS.get(command.lower())
        if handler is None:
            raise ChatError(f"unknown command {command} (/help lists them)")
        handler(self, argument.strip())

    def _message(self, text: str) -> None:
        if not text.strip():
            return                      # "//" or spaces: nothing to say
        if len(text) > MAX_MESSAGE:
            raise ChatError(f"a message is at most {MAX_MESSAGE} characters")
        self.chat.say(self.room, f"<{self.nick}> {text}", exclude=self)

    @_command("/nick", "NAME")
    def _nick(self, name: str) -> None:
        _check_name(name, "nick")
        owner = self.chat.nicks.get(name.casefold())
        if owner is not None and owner is not self:
            raise ChatError(f"the nick {name} is taken")
        if name == self.nick:
            raise ChatError(f"you are already {name}")     # a change of case is news, this is not
        old, self.nick = self.nick, name
        del self.chat.nicks[old.casefold()]
        self.chat.nicks[name.casefold()] = self
        self.chat.say(self.room, f"* {old} is now {name}")

    @_command("/join", "ROOM")
    def _join(self, room: str) -> None:
        _check_name(room, "room name")
        if self.room is not None and room.casefold() == self.room.casefold():
            raise ChatError(f"you are already in {self.room}")
        old = self._leave()
        self.chat.say(old, f"* {self.nick} went to {room}")
        self._enter(room)

    @_command("/who")
    def _who(self, argument: str) -> None:
        members = self.chat.members(self.room)
        # The first MAX_WHO names in order: a crowded room's answer stays one short line
        # (a 10,000-name line would put its asker over --max-backlog).
        names = heapq.nsmallest(MAX_WHO, (member.nick for member in members))
        more = f" and {len(members) - len(names)} more" if len(members) > len(names) else ""
        self.send_notice(f"in {self.room}: {', '.join(names)}{more}")

    @_command("/quit")
    def _quit(self, argument: str) -> None:
        self.send_notice("bye")
        # Leave now: close() waits for "bye" to be flushed, which a member that
        # does not read may never allow; its nick and place must not wait too.
        self._depart()
        self.transport.close()

    @_command("/help")
    def _help(self, argument: str) -> None:
        self.send_raw(HELP.encode() + b"\r\n")

    # -- rooms -----------------------------------------------------------------

    def _enter(self, room: str) -> None:
        members = self.chat.rooms.setdefault(room.casefold(), set())
        if members:
            room = next(iter(members)).room or room     # the name the room was opened with
        self.room = room
        members.add(self)
        self.chat.share_turns(room)
        self.chat.say(room, f"* {self.nick} joined {room}")

    def _depart(self) -> None:
        """Leave for good (once): free the nick, and tell the room with ``farewell``."""
        room = self._leave()
        key = self.nick.casefold()
        if self.chat.nicks.get(key) is self:        # not if another member took it since
            del self.chat.nicks[key]
        if room is not None:
            self.chat.say(room, f"* {self.nick} {self.farewell}")

    def _leave(self) -> Optional[str]:
        """Leave the current room (forgetting it when empty); return its name."""
        room, self.room = self.room, None
        members = self.chat.members(room)
        members.discard(self)
        if room is not None and not members:
            self.chat.rooms.pop(room.casefold(), None)
        self.chat.share_turns(room)
        return room


HELP = ("* commands: " + ", ".join(_USAGES) + "; "
        "anything else is said to your room (//text says /text)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-backlog``: how many unsent bytes a member may hold before it is dropped;
    ``--max-line-rate``, ``--line-burst`` and ``--flood-timeout``: the rate limit."""
    parser.add_argument("--max-backlog", type=positive_int, default=64 * 1024, metavar="BYTES",
                        help="drop a member holding more than BYTES of unsent output (default: 65536)")
    parser.add_argument("--max-line-rate", type=positive_int, default=LINE_RATE, metavar="LINES",
                        help=f"lines a member may send per second; more wait (default: {LINE_RATE})")
    parser.add_argument("--line-burst", type=positive_int, default=LINE_BURST, metavar="LINES",
                        help=f"lines a member may send at once before the rate applies (default: {LINE_BURST})")
    parser.add_argument("--flood-timeout", type=duration, default=FLOOD_TIMEOUT, metavar="SECONDS",
                        help="drop a member whose lines are held back this long in a row "
                             f"(default: {FLOOD_TIMEOUT:g})")


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> Any:
    """A TCPServer (or a UnixServer, ``--unix``) for one chat: its rooms live as long as the server."""
    chat = Chat.from_arguments(args)
    return stream_server(args, lambda: ChatMember(chat), reactor)
