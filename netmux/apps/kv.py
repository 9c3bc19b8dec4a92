"""kv: an in-memory key-value store that ``redis-cli`` and ``redis-benchmark`` talk to.

Where it sits: a ready-made server on the public API alone (``import netmux``),
in these modules, bottom to top:

* ``resp.py`` -- the RESP2 parser, sans-IO: bytes in, commands out, read as
  redis-server reads them, with Redis's request limits;
* ``kvdump.py`` -- the dump file: its format, atomic writes, stale temp files;
* ``kvstore.py`` -- the keyspace and its commands, sans-IO: a command in, an
  encoded reply out; expiry; saving and loading through ``kvdump`` (its
  design note lists the modules it is assembled from);
* ``kvsession.py`` -- one client's state (database, transaction, watches,
  subscriptions, name) and its commands, sans-IO; ``kvpubsub.py`` -- the
  publish/subscribe registry, whose subscribers are this module's connections;
* this module -- the network side: ``KVHandler``, one per connection, runs the
  commands the parser hands up (a plain one by one lookup in the session's
  table, its arity checked by the same entry, without the session's dispatch),
  ``commands_per_turn`` (128) a turn, and writes
  the replies of a turn in one ``write`` (pipelining costs one ``send`` per
  share, replies stay in order); the rest goes on next turn
  (``transport.yield_turn``), after the other connections had theirs;
  ``KVServer``, which wraps a ``netmux.TCPServer`` or ``netmux.UnixServer``
  (``--unix``) and also sweeps expired keys on a reactor timer and saves the
  dump when it is closed; and the command-line
  interface the ``python -m netmux`` front end calls (``add_arguments``,
  ``make_server``).

What it never does: let one connection cost more than itself. A malformed
request gets ``-ERR Protocol error: ...`` and closes that connection only; a
peer that pipelines requests without reading their replies is paused (the
commands wait, unread bytes stay in the kernel) instead of growing our buffers.
Tests: ``tests/test_app_kv.py`` (and ``test_app_kv_pubsub.py`` for ``push``).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from typing import Any, Iterator, List, Optional

import netmux
from netmux.apps import byte_count, stream_server
from netmux.apps.kvcommand import CommandError
from netmux.apps.kvdump import remove_stale_temps
from netmux.apps.kvsession import Quit, Session, YieldTurn
from netmux.apps.kvstore import Store
from netmux.apps.resp import MAX_BULK, ProtocolError, RespParser, error

DESCRIPTION = "key-value store speaking the Redis protocol (redis-cli, redis-benchmark)"
DEFAULT_PORT = 6379                 # Redis's: redis-cli and redis-benchmark find it unasked
UNIX_SOCKETS = True                 # redis-cli -s PATH
WORKERS = False                     # one keyspace in one process: --workers would split it

logger = logging.getLogger("netmux")

_SWEEP_INTERVAL = 0.1               # seconds before the first expiry sweep (then 1 / CONFIG's hz, 10)


# ======================================================================
# One connection
# ======================================================================
_BATCH = 64 * 1024      # write at least this often, so a full buffer can stop us
_PARSE_SLICE = 16 * 1024    # bytes parsed at a time, as Redis reads 16 KiB per client per event


class KVHandler(netmux.Handler):
    """Runs the commands of one connection, in order, a turn's share at a time.

    A read (up to 64 KiB) may hold thousands of pipelined commands. They are
    parsed ``_PARSE_SLICE`` bytes at a time and run ``commands_per_turn`` at a
    time; the replies of a turn go out in one write, and the rest waits for the
    next turn through ``transport.yield_turn`` (which keeps reading off), so one
    pipelining client costs the others one share per turn. A peer that does not
    read its replies pauses the work instead (``pause_writing``); it goes on in
    ``resume_writing``. QUIT ends it: nothing after it runs. A command whose
    cost is not one command's (a PUBLISH to many subscribers or patterns) ends
    the turn's share after it (``YieldTurn``).

    The client's own state (database, transaction, subscriptions) is its
    ``Session``; this handler is the session's subscriber: ``push`` writes a
    published message and enforces Redis's client-output-buffer-limit for
    pub/sub (32 MiB at once, or 8 MiB for 60 s, by default): a subscriber that
    does not read is disconnected, the publisher never waits for it.
    """

    #: Commands run per turn of the loop at most (see README, kv: fairness).
    commands_per_turn = 128

    def __init__(self, store: Store, max_request: int) -> None:
        self._store = store
        self._parser = RespParser(max_request)
        self._unparsed = b""                    # the last read: parsed up to _parsed
        self._parsed = 0
        self._commands: List[List[bytes]] = []  # parsed, not run yet: from _next on
        self._next = 0
        self._paused = False                    # the peer does not read: wait for resume_writing
        self._yielded = False                   # a continuation is queued: do not start another
        self._over_soft_limit_since: Optional[float] = None     # pub/sub output above the soft limit
        self.session = Session(store, self, store.next_client_id)
        store.next_client_id += 1

    def connection_made(self, transport: netmux.Transport) -> None:
        self.transport = transport
        self._store.clients += 1
        self._store.stats["total_connections_received"] += 1
        self._store.sessions[self.session.client_id] = self.session
        self.session.address = _address(transport.get_extra_info("peername"))
        self.session.local_address = _address(transport.get_extra_info("sockname"))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._store.clients -= 1
        self._store.sessions.pop(self.session.client_id, None)
        self.session.close()
        self._drop_work()

    def data_received(self, data: bytes) -> None:
        # Reading is off while work is left (yielded or paused): this is a new read.
        self._unparsed, self._parsed = data, 0
        self._work()

    def _drop_work(self) -> None:
        self._unparsed, self._parsed = b"", 0
        self._commands, self._next = [], 0

    def _has_work(self) -> bool:
        return self._next < len(self._commands) or (
            self._parsed < len(self._unparsed) and self._parser.error is None)

    def _continue(self) -> None:
        self._yielded = False
        self._work()

    def _work(self) -> None:
        """Run a turn's share of the commands, write their replies, and go on next
        turn (or once the peer reads) with the rest."""
        session, store, budget = self.session, self._store, max(1, self.commands_per_turn)
        store.db = session.database
        if store.pubsub.has_pending() and session.subscribed():
            store.pubsub.deliver_pending()      # what was published before our replies goes first
        get = session.table.get
        replies: List[bytes] = []
        append, size = replies.append, 0
        while budget > 0 and (self._next < len(self._commands) or self._parse_slice()):
            commands, start = self._commands, self._next
            stop = min(len(commands), start + budget)
            budget -= stop - start
            store.stats["total_commands_processed"] += stop - start
            for index in range(start, stop):
                args = commands[index]
                try:
                    # kvcommand.execute inlined (the hot path): one lookup, the arity, the call;
                    # anything else (another case, a wrong arity, MULTI...) goes through the session.
                    entry = get(args[0])
                    if entry is not None and len(args) in entry[2] and session.plain:
                        reply = entry[0](args)
                    else:
                        reply = session.run(args)
                except CommandError as exc:
                    reply = error(str(exc))
                except Quit as quit:
                    self._drop_work()
                    self.transport.write(b"".join(replies) + quit.reply)
                    self.transport.close()
                    return
                except YieldTurn:               # a costly command spent the share: this one waits
                    stop, budget = index, 0
                    break
                append(reply)
                size += len(reply)
                if size >= _BATCH:
                    self.transport.write(b"".join(replies))
                    replies.clear()
                    size = 0
                    if self._paused:            # resume_writing() goes on from here
                        self._next = index + 1
                        return
            self._next = stop
            if stop > start:
                session.last_command = commands[stop - 1][0]      # CLIENT LIST's cmd: once a slice
        if replies:
            self.transport.write(b"".join(replies))
        if self._has_work():
            if not self._paused:
                self._yielded = True
                self.transport.yield_turn(self._continue)
        elif self._parser.error is not None:
            self._protocol_error()
        elif self.draining and not self._parser.buffered:
            self.transport.close()      # a drain: no command begun or waiting, the next boundary

    def _parse_slice(self) -> bool:
        """Parse the next slice of the read into ``_commands``; False when none is left."""
        data, start = self._unparsed, self._parsed
        if start >= len(data) or self._parser.error is not None:
            return False
        self._parsed = start + _PARSE_SLICE
        piece = data if start == 0 and len(data) <= _PARSE_SLICE else data[start:self._parsed]
        try:
            commands = self._parser.feed(piece)
        except ProtocolError as exc:      # its commands run first, then the error is answered
            commands = exc.commands
        self._commands, self._next = commands, 0
        return True

    def _protocol_error(self) -> None:
        fault = self._parser.error
        assert fault is not None
        logger.info("kv: protocol error from %s: %s", self.transport.get_extra_info("peername"), fault)
        self.transport.write(fault.reply())
        self.transport.close()

    def drain_started(self) -> None:
        """The server is draining: close now if no command is begun or waiting, else
        once the commands in hand have run and been answered (see ``_work``)."""
        super().drain_started()
        if not self._yielded and not self._paused:
            self._work()

    def pause_writing(self) -> None:
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport.is_closing():         # after QUIT or an error: nothing more to run
            return
        if not self._yielded:                   # else the continuation goes on
            self._work()
        if not self._paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def kill(self) -> None:
        """CLIENT KILL from another client: close now, nothing more of ours runs."""
        if self.transport is not None and not self.transport.is_closing():
            self._drop_work()
            self.transport.close()

    def push(self, data: bytes) -> None:
        """Write a published message (``kvpubsub`` calls it), then apply Redis's
        client-output-buffer-limit for pub/sub clients: over the hard limit, or
        over the soft one for its whole period, the connection is dropped."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        size = transport.get_write_buffer_size()
        hard, soft, seconds = self._store.settings.pubsub_limits
        if soft and size > soft:
            now = transport.reactor.time()
            if self._over_soft_limit_since is None:
                self._over_soft_limit_since = now
            over_soft = now - self._over_soft_limit_since >= seconds
        else:
            self._over_soft_limit_since, over_soft = None, False
        if (hard and size > hard) or over_soft:
            logger.warning("kv: client %s closed for overcoming of output buffer limits (%d bytes)",
                           transport.get_extra_info("peername"), size)
            self._drop_work()
            transport.abort()


def _address(name: Any) -> bytes:
    """An address as CLIENT LIST writes it: ``host:port``, or a Unix socket's path."""
    if isinstance(name, tuple):
        return b"%s:%d" % (str(name[0]).encode(), name[1])
    return (name or "").encode() if isinstance(name, str) else b"?:0"


# ======================================================================
# The server and the command-line interface
# ======================================================================
class KVServer:
    """A stream server serving one ``Store``: sweeps expired keys on a reactor
    timer and saves the dump when closed.

    It wraps the server rather than subclassing one, so the same store runs on
    TCP or on a Unix socket: ``server`` is a ``netmux.TCPServer`` or a
    ``netmux.UnixServer`` (as ``apps.stream_server`` builds from the command
    line) whose handlers are ``KVHandler(store, ...)``. Every attribute not
    defined here (``reactor``, ``connections``, ...) is that server's.
    """

    def __init__(self, server: Any, store: Store) -> None:
        self.server = server
        self.store = store
        self._saved = False
        self._sweep_timer = server.reactor.call_later(_SWEEP_INTERVAL, self._sweep)
        store.pubsub.schedule = server.reactor.call_soon      # a large fan-out goes on in later turns
        if isinstance(server.server_address, tuple):
            store.port = server.server_address[1]

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on KVServer itself: the wrapped server's.
        return getattr(self.server, name)

    @property
    def server_address(self) -> Any:
        """The wrapped server's bound address: ``(host, port)`` or the socket's path."""
        return self.server.server_address

    def serve_forever(self) -> None:
        """Serve until ``shutdown()``, as the wrapped server does."""
        self.server.serve_forever()

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        """The wrapped server's ``shutdown()`` (thread-safe)."""
        self.server.shutdown(*args, **kwargs)

    def _sweep(self) -> None:
        more = self.store.active_expire and self.store.sweep()
        interval = 1 / int(self.store.settings.values[b"hz"])      # CONFIG SET hz: Redis's sweeps a second
        self._sweep_timer = self.server.reactor.call_later(0 if more else interval, self._sweep)

    def server_close(self) -> None:
        """Close the wrapped server, then save the dump (once): a graceful stop loses nothing."""
        self._sweep_timer.cancel()
        self.server.server_close()
        if self._saved or self.store.dump_path is None:
            return
        self._saved = True
        try:
            self.store.save()
            logger.info("kv: saved %d keys to %s", len(self.store.data), self.store.dump_path)
        except OSError as exc:
            logger.error("kv: could not save %s: %s", self.store.dump_path, exc)

    def __enter__(self) -> "KVServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """kv's own options (the command line adds --host, --port and the rest)."""
    parser.add_argument("--max-request", type=byte_count, default=MAX_BULK, metavar="BYTES",
                        help=f"largest bulk string a client may send (default: {MAX_BULK}, "
                             "Redis's proto-max-bulk-len)")
    parser.add_argument("--dump", metavar="FILE", default=None, type=_dump_path,
                        help="load FILE at start, save it on SAVE and on a graceful stop")


def _dump_path(text: str) -> str:
    """``--dump``'s type: an empty path named no file, and the data was lost at the stop."""
    if not text:
        raise argparse.ArgumentTypeError("must name a file (an empty path would lose the data at the stop)")
    return text


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> KVServer:
    """Build the kv server the parsed ``args`` describe, on ``reactor``.

    Raises OSError (the address in use, the dump's directory not writable) or
    ValueError (a damaged dump file, which is left as it is). SIGINT or SIGTERM
    while the dump loads is a stop as the command line's others: SystemExit(0),
    nothing saved.
    """
    store = Store(dump_path=args.dump, port=args.port)
    if args.dump is not None:
        _check_dump_directory(args.dump)
        for stale in remove_stale_temps(args.dump):
            logger.warning("kv: removed %s, left by a save that did not finish", stale)
        _load(store, args.dump)
    max_request = args.max_request
    server = KVServer(stream_server(args, lambda: KVHandler(store, max_request), reactor), store)
    if isinstance(server.server_address, tuple):
        store.port = server.server_address[1]
    else:
        store.port = 0          # Redis's INFO says tcp_port:0 when it serves a Unix socket only
    return server


def _check_dump_directory(path: str) -> None:
    """Fail now, not at the stop, when the dump could not be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "the dump's directory does not exist", directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write the dump's directory", directory)


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived while the dump was loading."""


def _load(store: Store, path: str) -> None:
    """Load the dump at ``path`` into ``store``, if there is one; a stop meanwhile exits 0."""
    if not os.path.exists(path):
        logger.info("kv: no dump file at %s, starting empty", path)
        return
    logger.info("kv: loading %s", path)
    try:
        with _stop_signals_raise():
            count = store.load()
    except _Stopped as stop:
        logger.info("%s: shutting down while %s was loading (nothing saved)", stop, path)
        raise SystemExit(0) from None
    logger.info("kv: loaded %d keys from %s", count, path)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise _Stopped in the block (the command line's handlers
    come later, once the server exists); only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m netmux.apps.kv``: the same as ``python -m netmux kv`` (one
    command line, one place for options, logging and signals)."""
    from netmux.cli import main as command_line
    return command_line(["kv", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
