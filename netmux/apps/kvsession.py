"""One kv client's state and the commands that act on it: SELECT, MULTI/EXEC/WATCH, SUBSCRIBE, CLIENT, HELLO. Sans-IO.

Where it sits: between ``kv.py`` (the connection, which owns a ``Session``
and is its ``subscriber``) and ``kvstore.Store`` (the keyspace every session
shares). ``run(args)`` answers one command as redis-server 7.0 would for this
client: in a transaction it queues (``+QUEUED``), refusing at once what
Redis refuses at once (an unknown command, a wrong arity: EXEC then answers
``-EXECABORT``); subscribed, it allows only (P)SUBSCRIBE, (P)UNSUBSCRIBE,
PING, QUIT and RESET. While neither, ``plain`` is True and the connection
runs commands straight from ``table`` (one test per command).

WATCH is Redis's optimistic lock: the session registers itself on the watched
keys of its database (``Database.watched``); any write to one of them -- a
command, an expiry, FLUSHDB, SWAPDB, MOVE -- sets ``dirty``, and EXEC then
answers a null array without running anything. A watched key that expires
before EXEC counts as changed, as in Redis 7.0. Tests:
``tests/test_app_kv_transactions.py``, ``tests/test_app_kv_pubsub.py``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from netmux.apps.kvadmin import REDIS_VERSION
from netmux.apps.kvcommand import (OK, CommandError, CommandTable, check, command, command_table, execute,
                                   subcommand, to_int)
from netmux.apps.kvdb import Database
from netmux.apps.kvkeyspace import database_index
from netmux.apps.resp import array, bulk, error, integer

__all__ = ["Session", "Quit", "YieldTurn"]

_QUEUED = b"+QUEUED\r\n"
_COSTLY = 1000              # a PUBLISH that reached more subscribers and patterns ends the turn's share
_NULL_ARRAY = b"*-1\r\n"
# Commands a transaction runs at once instead of queueing (Redis's processCommand).
_NOT_QUEUED = {b"exec", b"discard", b"multi", b"watch", b"quit", b"reset"}
# What a subscribed RESP2 client may still send.
_SUBSCRIBED_ALLOWED = {b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe", b"sunsubscribe",
                       b"ping", b"quit", b"reset"}


class YieldTurn(Exception):
    """Raised before a command, after one that cost a turn's share (a PUBLISH to many):
    the connection runs it in its next turn, after the other connections had theirs."""


class Quit(Exception):
    """QUIT (or CLIENT KILL of oneself): the connection writes the replies before it,
    then ``reply``, then closes."""

    def __init__(self, reply: bytes = OK) -> None:
        super().__init__()
        self.reply = reply


class Session:
    """A client's database, transaction, watches, subscriptions and name.

    ``subscriber`` is what the pub/sub registry delivers to (the connection:
    ``push(data)``); ``client_id`` is CLIENT ID's and HELLO's id.
    """

    def __init__(self, store: Any, subscriber: Any, client_id: int) -> None:
        self.store = store
        self.subscriber = subscriber
        self.client_id = client_id
        self.address = self.local_address = b"?:0"      # the connection's, for CLIENT LIST and INFO
        self.last_command = b"NULL"                     # the last a turn ran (kv.py sets it)
        self.name = b""
        self.database = store.databases[0]
        self.plain = True                           # no transaction, no subscription, nothing spent
        self.spent = False                          # a costly command ran: the next one waits a turn
        self.queue: Optional[List[List[bytes]]] = None   # MULTI's queued commands
        self.aborted = False                        # a queued command was refused: EXECABORT
        self.dirty = False                          # a watched key changed (see Database.touched)
        self.watching: Set[Tuple[Database, bytes]] = set()
        self.channels: Dict[bytes, None] = {}                    # subscribed channels, in order
        self.patterns: Dict[bytes, None] = {}
        self.shard_channels: Dict[bytes, None] = {}              # SSUBSCRIBE's (one shard: ours)
        self.table: CommandTable = dict(store.commands)
        self.table.update(command_table(self))

    def _update_mode(self) -> None:
        self.plain = self.queue is None and not self.subscribed() and not self.spent

    def _spend(self) -> None:
        """The command that ran cost a turn's share: the next goes through ``run``, which
        raises YieldTurn before it (no cost on the plain path: ``plain`` is all it reads)."""
        self.spent = True
        self.plain = False

    def subscribed(self) -> bool:
        """Whether the client listens to anything (Redis's subscribed mode)."""
        return bool(self.channels or self.patterns or self.shard_channels)

    def run(self, args: List[bytes]) -> bytes:
        """One command's reply, in this client's mode (see the module's note)."""
        if self.plain:
            return execute(self.table, args)
        if self.spent:
            self.spent = False
            self._update_mode()
            raise YieldTurn()
        name = args[0].lower()
        refused = check(self.table, args)
        if not refused and name == b"exec" and len(args) > 1:
            return execute(self.table, args)        # do_exec refuses it, as Redis's arity check
        if not refused and self.subscribed() and name not in _SUBSCRIBED_ALLOWED:
            refused = error(f"ERR Can't execute '{name.decode('utf-8', 'replace')}': only (P|S)SUBSCRIBE / "
                            "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
        if refused:
            return self._reject(name, refused)
        if self.queue is not None and name not in _NOT_QUEUED:
            self.queue.append(args)
            return _QUEUED
        return execute(self.table, args)

    def _reject(self, name: bytes, refused: bytes) -> bytes:
        """A command refused before it runs (Redis's rejectCommand): it spoils the
        transaction; a refused EXEC discards it at once, saying why."""
        self.aborted = self.queue is not None
        if name != b"exec":
            return refused
        if self.queue is not None:
            self._end_transaction()
        reason = refused[1:].split(b" ", 1)[1] if refused.startswith(b"-ERR ") else refused[1:]
        return b"-EXECABORT Transaction discarded because of: " + reason

    def close(self) -> None:
        """The connection is gone: drop its watches and subscriptions."""
        self._unwatch()
        for channel in list(self.channels):
            self.store.pubsub.unsubscribe(self.subscriber, channel)
        for pattern in list(self.patterns):
            self.store.pubsub.punsubscribe(self.subscriber, pattern)
        for channel in list(self.shard_channels):
            self.store.pubsub.sunsubscribe(self.subscriber, channel)
        self.channels, self.patterns, self.shard_channels = {}, {}, {}

    # ------------------------------------------------------------------
    # The connection's own commands
    # ------------------------------------------------------------------
    @command(-1)
    def do_quit(self, args: List[bytes]) -> bytes:
        raise Quit()

    @command(2)
    def do_select(self, args: List[bytes]) -> bytes:
        self.database = self.store.db = self.store.databases[database_index(args[1])]
        return OK

    @command(-1)
    def do_ping(self, args: List[bytes]) -> bytes:
        if len(args) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        if self.subscribed():
            return array([bulk(b"pong"), bulk(args[1] if len(args) > 1 else b"")])
        return b"+PONG\r\n" if len(args) == 1 else bulk(args[1])

    @command(1)
    def do_reset(self, args: List[bytes]) -> bytes:
        self.queue, self.aborted = None, False
        self.close()
        self.name = b""
        self.database = self.store.db = self.store.databases[0]
        self._update_mode()
        return b"+RESET\r\n"

    @command(-2)
    def do_client(self, args: List[bytes]) -> bytes:
        name = subcommand(args, {b"SETNAME": 3, b"GETNAME": 2, b"SETINFO": 4, b"ID": 2, b"INFO": 2,
                                 b"LIST": -2, b"KILL": -3, b"NO-EVICT": 3, b"NO-TOUCH": 3})
        if name == b"SETNAME":
            self._set_name(args[2])
            return OK
        if name == b"GETNAME":
            return bulk(self.name or None)
        if name == b"ID":
            return integer(self.client_id)
        if name == b"INFO":
            return bulk(self.describe(b"client|info") + b"\n")
        if name == b"LIST":
            return bulk(b"".join(session.describe(b"client|list" if session is self else session.last_command.lower())
                                 + b"\n" for session in self._listed(args[2:])))
        if name == b"KILL":
            return self._kill(args[2:])
        return OK                   # SETINFO, NO-EVICT, NO-TOUCH: nothing to keep

    def _set_name(self, name: bytes) -> None:
        if any(byte <= 32 or byte > 126 for byte in name):
            raise CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
        self.name = name

    def _kill(self, options: List[bytes]) -> bytes:
        """CLIENT KILL addr, or its filters (ID, ADDR, LADDR, TYPE, USER, SKIPME): the
        matching connections close (``subscriber.kill()``); oneself, after the reply."""
        old_form = len(options) == 1
        targets = self._kill_targets(options)
        if old_form and not targets:
            raise CommandError("ERR No such client")
        for target in targets:
            if target is not self:
                target.subscriber.kill()
        reply = OK if old_form else integer(len(targets))
        if self in targets:
            raise Quit(reply)
        return reply

    def _kill_targets(self, options: List[bytes]) -> List["Session"]:
        sessions = list(self.store.sessions.values())
        if len(options) == 1:
            return [session for session in sessions if session.address == options[0]]
        if len(options) % 2:
            raise CommandError("ERR syntax error")
        skip_me = True
        for index in range(0, len(options), 2):
            field, value = options[index].upper(), options[index + 1]
            if field == b"ID":
                number = to_int(value, "ERR client-id should be greater than 0")
                if number <= 0:
                    raise CommandError("ERR client-id should be greater than 0")
                sessions = [session for session in sessions if session.client_id == number]
            elif field in (b"ADDR", b"LADDR"):
                sessions = [session for session in sessions
                            if (session.address if field == b"ADDR" else session.local_address) == value]
            elif field == b"TYPE":
                sessions = [session for session in sessions if session in self._listed([b"TYPE", value])]
            elif field == b"USER":
                if value != b"default":
                    raise CommandError(f"ERR No such user '{value.decode('utf-8', 'replace')}'")
            elif field == b"SKIPME" and value.lower() in (b"yes", b"no"):
                skip_me = value.lower() == b"yes"
            else:
                raise CommandError("ERR syntax error")
        return [session for session in sessions if not (skip_me and session is self)]

    def _listed(self, options: List[bytes]) -> List["Session"]:
        """CLIENT LIST's clients: all the connections, or those of a TYPE or of IDs."""
        sessions = list(self.store.sessions.values())
        if not options:
            return sessions
        kind = options[0].upper()
        if kind == b"TYPE" and len(options) == 2:
            wanted = options[1].lower()
            if wanted not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{options[1].decode('utf-8', 'replace')}'")
            return [session for session in sessions
                    if (session.subscribed() and wanted == b"pubsub") or (not session.subscribed() and wanted == b"normal")]
        if kind == b"ID" and len(options) >= 2:
            ids = {to_int(option, "ERR Invalid client ID") for option in options[1:]}
            return [session for session in sessions if session.client_id in ids]
        raise CommandError("ERR syntax error")

    def describe(self, command_name: bytes) -> bytes:
        """CLIENT INFO's and CLIENT LIST's line, the fields kv knows."""
        index = self.store.databases.index(self.database)
        flags = b"x" if self.queue is not None else (b"P" if self.subscribed() else b"N")
        return (b"id=%d addr=%s laddr=%s fd=-1 name=%s age=0 idle=0 flags=%s db=%d sub=%d psub=%d ssub=%d "
                b"multi=%d qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
                b"cmd=%s user=default redir=-1 resp=2"
                % (self.client_id, self.address, self.local_address, self.name, flags, index,
                   len(self.channels), len(self.patterns), len(self.shard_channels),
                   -1 if self.queue is None else len(self.queue), command_name))

    @command(-1)
    def do_command(self, args: List[bytes]) -> bytes:
        # redis-cli asks for COMMAND DOCS to show hints; an empty answer is enough.
        name = subcommand(args, {b"COUNT": 2, b"DOCS": -2, b"INFO": -2, b"LIST": -2}) if len(args) > 1 else b""
        names = sorted(name for name in self.table if name.islower())
        if name == b"COUNT":
            return integer(len(names))
        if name == b"LIST":
            return array([bulk(name) for name in names])
        return b"*0\r\n"

    @command(-1)
    def do_hello(self, args: List[bytes]) -> bytes:
        # RESP2 only: a client that asks for RESP3 (redis-py 8 by default) must fall back.
        if len(args) > 1:
            version = to_int(args[1], "ERR Protocol version is not an integer or out of range")
            if version != 2:
                raise CommandError("NOPROTO unsupported protocol version")
        name = self._hello_options(args[2:])
        if name is not None:
            self._set_name(name)
        fields = [(b"server", bulk(b"redis")), (b"version", bulk(REDIS_VERSION.encode())), (b"proto", integer(2)),
                  (b"id", integer(self.client_id)), (b"mode", bulk(b"standalone")), (b"role", bulk(b"master")),
                  (b"modules", b"*0\r\n")]
        return array([item for field, value in fields for item in (bulk(field), value)])

    @staticmethod
    def _hello_options(options: List[bytes]) -> Optional[bytes]:
        """HELLO's AUTH (only the default user, which needs no password) and SETNAME."""
        name, index = None, 0
        while index < len(options):
            option = options[index].upper()
            if option == b"AUTH" and len(options) - index >= 3:
                if options[index + 1] != b"default":
                    raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
                index += 3
            elif option == b"SETNAME" and index + 1 < len(options):
                name = options[index + 1]
                index += 2
            else:
                raise CommandError(f"ERR Syntax error in HELLO option '{options[index].decode('utf-8', 'replace')}'")
        return name

    # ------------------------------------------------------------------
    # Transactions
    # ------------------------------------------------------------------
    @command(1)
    def do_multi(self, args: List[bytes]) -> bytes:
        if self.queue is not None:
            raise CommandError("ERR MULTI calls can not be nested")
        self.queue, self.aborted = [], False
        self._update_mode()
        return OK

    @command(1)
    def do_discard(self, args: List[bytes]) -> bytes:
        if self.queue is None:
            raise CommandError("ERR DISCARD without MULTI")
        self._end_transaction()
        return OK

    @command(-1)
    def do_exec(self, args: List[bytes]) -> bytes:
        queue = self.queue
        if len(args) > 1:                   # refused before it runs: see _reject
            if queue is not None:
                self._end_transaction()
            raise CommandError("EXECABORT Transaction discarded because of: "
                               "wrong number of arguments for 'exec' command")
        if queue is None:
            raise CommandError("ERR EXEC without MULTI")
        aborted, changed = self.aborted, self.dirty or any(db.expired_since(key) for db, key in self.watching)
        self._end_transaction()
        if aborted:
            raise CommandError("EXECABORT Transaction discarded because of previous errors.")
        if changed:
            return _NULL_ARRAY
        # Queued commands run as Redis's EXEC runs them: no mode check, no turn's end between.
        return array([execute(self.table, command) for command in queue])

    def _end_transaction(self) -> None:
        self.queue, self.aborted = None, False
        self._unwatch()
        self._update_mode()

    @command(-2)
    def do_watch(self, args: List[bytes]) -> bytes:
        if self.queue is not None:
            raise CommandError("ERR WATCH inside MULTI is not allowed")
        db = self.database
        for key in args[1:]:
            db.lookup(key)                  # an expired key goes now: its deletion is no change
            db.watched.setdefault(key, set()).add(self)
            self.watching.add((db, key))
        return OK

    @command(1)
    def do_unwatch(self, args: List[bytes]) -> bytes:
        self._unwatch()
        return OK

    def _unwatch(self) -> None:
        for db, key in self.watching:
            watchers = db.watched.get(key)
            if watchers is not None:
                watchers.discard(self)
                if not watchers:
                    del db.watched[key]
        self.watching = set()
        self.dirty = False

    # ------------------------------------------------------------------
    # Publish/subscribe
    # ------------------------------------------------------------------
    @command(-2)
    def do_subscribe(self, args: List[bytes]) -> bytes:
        return self._subscribe(args[1:], self.channels, self.store.pubsub.subscribe, b"subscribe")

    @command(-2)
    def do_ssubscribe(self, args: List[bytes]) -> bytes:
        return self._subscribe(args[1:], self.shard_channels, self.store.pubsub.ssubscribe, b"ssubscribe")

    @command(-1)
    def do_sunsubscribe(self, args: List[bytes]) -> bytes:
        return self._unsubscribe(args[1:], self.shard_channels, self.store.pubsub.sunsubscribe, b"sunsubscribe")

    @command(3)
    def do_spublish(self, args: List[bytes]) -> bytes:
        return self._published(self.store.pubsub.publish(args[1], args[2], shard=True))

    def _published(self, receivers: int) -> bytes:
        if receivers + len(self.store.pubsub.patterns) > _COSTLY:
            self._spend()
        return integer(receivers)

    @command(-2)
    def do_psubscribe(self, args: List[bytes]) -> bytes:
        return self._subscribe(args[1:], self.patterns, self.store.pubsub.psubscribe, b"psubscribe")

    def _subscribe(self, names: List[bytes], mine: Dict[bytes, None], register: Any, kind: bytes) -> bytes:
        replies = []
        for name in names:
            if name not in mine:
                mine[name] = None
                register(self.subscriber, name)
            replies.append(self._confirmation(kind, name))
        self._update_mode()
        return b"".join(replies)

    @command(-1)
    def do_unsubscribe(self, args: List[bytes]) -> bytes:
        return self._unsubscribe(args[1:], self.channels, self.store.pubsub.unsubscribe, b"unsubscribe")

    @command(-1)
    def do_punsubscribe(self, args: List[bytes]) -> bytes:
        return self._unsubscribe(args[1:], self.patterns, self.store.pubsub.punsubscribe, b"punsubscribe")

    def _unsubscribe(self, names: List[bytes], mine: Dict[bytes, None], unregister: Any, kind: bytes) -> bytes:
        names = names or list(mine)
        if not names:
            return self._confirmation(kind, None)
        replies = []
        for name in names:
            if name in mine:
                del mine[name]
                unregister(self.subscriber, name)
            replies.append(self._confirmation(kind, name))
        self._update_mode()
        return b"".join(replies)

    def _confirmation(self, kind: bytes, name: Optional[bytes]) -> bytes:
        # Redis counts shard channels apart from channels and patterns.
        shard = kind in (b"ssubscribe", b"sunsubscribe")
        count = len(self.shard_channels) if shard else len(self.channels) + len(self.patterns)
        return array([bulk(kind), bulk(name), integer(count)])

    @command(3)
    def do_publish(self, args: List[bytes]) -> bytes:
        return self._published(self.store.pubsub.publish(args[1], args[2]))

    @command(-2)
    def do_pubsub(self, args: List[bytes]) -> bytes:
        name = subcommand(args, {b"CHANNELS": -2, b"NUMSUB": -2, b"NUMPAT": 2, b"HELP": 2, b"SHARDCHANNELS": -2,
                                 b"SHARDNUMSUB": -2})
        pubsub = self.store.pubsub
        shard = name.startswith(b"SHARD")
        if name in (b"CHANNELS", b"SHARDCHANNELS"):
            if len(args) > 3:
                raise CommandError("ERR unknown subcommand or wrong number of arguments for "
                                   f"'{args[1].lower().decode('utf-8', 'replace')}'. Try PUBSUB HELP.")
            names = pubsub.channel_names(args[2] if len(args) == 3 else None, shard)
            return array([bulk(channel) for channel in names])
        if name in (b"NUMSUB", b"SHARDNUMSUB"):
            return array([item for channel in args[2:]
                          for item in (bulk(channel), integer(pubsub.numsub(channel, shard)))])
        if name == b"NUMPAT":
            return integer(len(pubsub.patterns))
        return array([b"+PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n",
                      b"+CHANNELS [<pattern>]\r\n", b"+NUMPAT\r\n", b"+NUMSUB [<channel> ...]\r\n", b"+HELP\r\n"])
