"""kv: an in-memory key-value store that ``redis-cli`` and ``redis-benchmark`` talk to.

Where it sits: a ready-made server on the public API alone (``import netmux``),
in three modules, bottom to top:

* ``resp.py`` -- the RESP2 parser, sans-IO: bytes in, commands out, with
  Redis's request limits;
* ``kvstore.py`` -- the keyspace and its commands, sans-IO: a command in, an
  encoded reply out; expiry; the dump file;
* this module -- the network side: ``KVHandler``, one per connection, runs each
  command the parser hands up and writes the replies of one read in one
  ``write`` (pipelining costs one ``send`` per batch, replies stay in order);
  ``KVServer``, which wraps a ``netmux.TCPServer`` or ``netmux.UnixServer``
  (``--unix``) and also sweeps expired keys on a reactor timer and saves the
  dump when it is closed; and the command-line
  interface the ``python -m netmux`` front end calls (``add_arguments``,
  ``make_server``).

What it never does: let one connection cost more than itself. A malformed
request gets ``-ERR Protocol error: ...`` and closes that connection only; a
peer that pipelines requests without reading their replies is paused (the
commands wait, unread bytes stay in the kernel) instead of growing our buffers.
Tests: ``tests/test_app_kv.py``.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Any, List, Optional

import netmux
from netmux.apps import byte_count, stream_server
from netmux.apps.kvstore import CommandError, Store, execute, subcommand
from netmux.apps.resp import RespParser, bulk, error

DESCRIPTION = "key-value store speaking the Redis protocol (redis-cli, redis-benchmark)"
DEFAULT_PORT = 6379                 # Redis's: redis-cli and redis-benchmark find it unasked
UNIX_SOCKETS = True                 # redis-cli -s PATH

logger = logging.getLogger("netmux")

_OK = b"+OK\r\n"
_SWEEP_INTERVAL = 0.1               # seconds between expiry sweeps (Redis: hz 10)


# ======================================================================
# One connection
# ======================================================================
class _Quit(Exception):
    """QUIT: reply +OK after the replies before it, then close."""


_BATCH = 64 * 1024      # write at least this often, so a full buffer can stop us


class KVHandler(netmux.Handler):
    """Runs the commands of one connection, in order, replying in batches."""

    def __init__(self, store: Store, max_request: int) -> None:
        self._store = store
        self._parser = RespParser(max_request)
        self._backlog: Optional[List[List[bytes]]] = None  # commands waiting for the peer to read
        self._paused = False
        self.name = b""
        self._commands = dict(store.commands)
        for name, entry in ((b"quit", (self._do_quit, -1)), (b"client", (self._do_client, -2))):
            self._commands[name] = self._commands[name.upper()] = entry

    def connection_made(self, transport: netmux.Transport) -> None:
        self.transport = transport
        self._store.clients += 1

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._store.clients -= 1
        self._backlog = None

    def data_received(self, data: bytes) -> None:
        commands = self._parser.feed(data)
        if self._backlog is not None:
            self._backlog.extend(commands)
        else:
            self._answer(commands)

    def _answer(self, commands: List[List[bytes]]) -> None:
        """Run ``commands``, write their replies; stop early while the peer does not read."""
        table = self._commands
        replies: List[bytes] = []
        size = 0
        for index, args in enumerate(commands):
            try:
                reply = execute(table, args)
            except _Quit:
                replies.append(_OK)
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            replies.append(reply)
            size += len(reply)
            if size >= _BATCH:
                self.transport.write(b"".join(replies))
                replies.clear()
                size = 0
                if self._paused:                # resume_writing() goes on from here
                    self._backlog = commands[index + 1:]
                    return
        if replies:
            self.transport.write(b"".join(replies))
        self._backlog = None
        if self._parser.error is not None:
            self._protocol_error()

    def _protocol_error(self) -> None:
        message = self._parser.error
        logger.info("kv: protocol error from %s: %s", self.transport.get_extra_info("peername"), message)
        self.transport.write(error(f"ERR Protocol error: {message}"))
        self.transport.close()

    def pause_writing(self) -> None:
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._backlog is not None:
            self._answer(self._backlog)
        if not self._paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _do_quit(self, args: List[bytes]) -> bytes:
        raise _Quit()

    def _do_client(self, args: List[bytes]) -> bytes:
        name = subcommand(args, {b"SETNAME": 3, b"GETNAME": 2, b"SETINFO": 4})
        if name == b"SETNAME":
            if any(byte <= 32 or byte > 126 for byte in args[2]):
                raise CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
            self.name = args[2]
            return _OK
        if name == b"GETNAME":
            return bulk(self.name or None)
        return _OK                      # SETINFO (Redis 7.2, sent by redis-py): nothing to keep


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
        more = self.store.sweep()
        self._sweep_timer = self.server.reactor.call_later(0 if more else _SWEEP_INTERVAL, self._sweep)

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
    parser.add_argument("--max-request", type=byte_count, default=1 << 20, metavar="BYTES",
                        help="largest bulk string a client may send (default: 1048576)")
    parser.add_argument("--dump", metavar="FILE", default=None,
                        help="load FILE at start, save it on SAVE and on a graceful stop")


def make_server(args: argparse.Namespace, reactor: netmux.Reactor) -> KVServer:
    """Build the kv server the parsed ``args`` describe, on ``reactor``.

    Raises OSError (the address in use, the dump's directory not writable) or
    ValueError (a damaged dump file, which is left as it is).
    """
    store = Store(dump_path=args.dump, port=args.port)
    if args.dump is not None:
        # Fail now, not at the stop, when the dump could not be written.
        directory = os.path.dirname(os.path.abspath(args.dump))
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, "the dump's directory does not exist", directory)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "cannot write the dump's directory", directory)
        logger.info("kv: loaded %d keys from %s", store.load(), args.dump)
    max_request = args.max_request
    server = KVServer(stream_server(args, lambda: KVHandler(store, max_request), reactor), store)
    if isinstance(server.server_address, tuple):
        store.port = server.server_address[1]
    else:
        store.port = 0          # Redis's INFO says tcp_port:0 when it serves a Unix socket only
    return server


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m netmux.apps.kv``: the same as ``python -m netmux kv`` (one
    command line, one place for options, logging and signals)."""
    from netmux.cli import main as command_line
    return command_line(["kv", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
