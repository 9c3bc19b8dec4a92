"""The kv server's keyspace and commands, sans-IO: a command in, an encoded reply out.

Where it sits: under ``kv.py`` (the network side), beside ``resp.py`` (the
parser). It imports no socket and no reactor: ``Store.execute([b"GET", b"k"])``
returns ``b"$-1\\r\\n"``, so its tests need no server
(``tests/test_app_kvstore.py``).

The store is small on purpose; what it holds is assembled from one module per
part, each with its own design note:

* ``kvdb.py`` -- one database: keys, deadlines (lazy expiry plus a bounded
  sweep), WATCHes; the store holds Redis's sixteen (``databases``) and ``db``,
  the one the running command's client SELECTed (``kv.py`` sets it each turn);
* the command families, mixed in: ``kvstrings.py`` (GET, SET, INCR, ranges,
  bits), ``kvkeyspace.py`` (DEL, KEYS, SCAN, RENAME, MOVE, expiry),
  ``kvadmin.py`` (INFO, CONFIG, DEBUG, ...); ``kvsession.py`` adds the
  commands of one client (SELECT, MULTI, SUBSCRIBE, CLIENT), ``kvpubsub.py``
  is the publish/subscribe registry;
* ``kvcommand.py`` -- how a command is declared (``@command(arity)`` on a
  ``do_NAME`` method), looked up and refused; ``kvglob.py`` -- Redis's glob.

Values are byte strings (no lists or hashes, so no ``-WRONGTYPE``); errors use
Redis's wording, which redis-cli users recognise.

The dump file (``--dump``) is ``kvdump.py``'s: a small checked binary format,
written atomically; it is input, so it is never unpickled and a damaged one is
refused whole rather than half loaded. It holds database 0.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from netmux.apps.kvadmin import ServerCommands, Settings
from netmux.apps.kvcommand import CommandError, CommandTable, command_table, execute, subcommand
from netmux.apps.kvdb import SWEEP_BUDGET, Database, Value
from netmux.apps.kvdump import read_dump, write_dump
from netmux.apps.kvkeyspace import DATABASES, KeyspaceCommands
from netmux.apps.kvpubsub import PubSub
from netmux.apps.kvsession import Session, YieldTurn
from netmux.apps.kvstrings import StringCommands

__all__ = ["Store", "CommandError", "CommandTable", "execute", "subcommand", "write_dump", "read_dump"]

logger = logging.getLogger("netmux")

# LCS's table at most: 8,192 x 8,192 bytes take ~50 ms (ours; Redis's is 4 bytes a cell
# within proto-max-bulk-len, 128 M cells, with the same error).
_LCS_MAX_CELLS = 1 << 26


class Store(StringCommands, KeyspaceCommands, ServerCommands):
    """The keyspace: ``execute(args)`` runs one command and returns its reply.

    ``commands`` maps a command name (lower and upper case) to ``(method,
    arity)``, Redis's arity: ``n`` means exactly ``n`` words with the name,
    ``-n`` at least ``n``. ``clock`` gives wall-clock seconds (tests pass
    their own). ``databases`` are Redis's sixteen; ``db`` is the one commands
    act on (``kv.py`` sets it to the running client's choice).
    """

    def __init__(self, *, dump_path: Optional[str] = None, clock: Callable[[], float] = time.time,
                 port: int = 0) -> None:
        self.databases = [Database(clock) for _ in range(DATABASES)]
        self.db = self.databases[0]
        self.dump_path = dump_path
        self.clock = clock
        self.clients = 0                                 # open connections, for INFO
        self.settings = Settings(port)
        self.pubsub = PubSub()
        self.active_expire = True                        # DEBUG SET-ACTIVE-EXPIRE 0 stops the sweep
        self.lcs_max_cells = _LCS_MAX_CELLS
        self.started = clock()
        self.last_save = int(self.started)
        self.run_id = os.urandom(20).hex()
        self.next_client_id = 1
        self.sessions: Dict[int, Session] = {}           # the connections' clients, by id (CLIENT LIST)
        self.stats: Dict[str, int] = {"total_connections_received": 0, "total_commands_processed": 0}
        self.commands: CommandTable = command_table(self)
        self._session: Optional[Session] = None          # execute()'s client, made on first use
        self.pushed: List[bytes] = []

    def execute(self, args: List[bytes]) -> bytes:
        """Run one command (``args[0]`` is its name) and return the encoded reply, as
        one client whose published messages are kept in ``pushed`` (sans-IO use:
        tests, a REPL; ``kv.py`` gives each connection its own session)."""
        if self._session is None:
            self._session = Session(self, self, 0)
        self.db = self._session.database
        try:
            return self._session.run(args)
        except YieldTurn:                   # no other client to give the turn to: go on
            return self._session.run(args)

    def push(self, data: bytes) -> None:
        """A message published to ``execute``'s client: kept in ``pushed``."""
        self.pushed.append(data)

    @property
    def port(self) -> int:
        """The TCP port served (0 for a Unix socket), as INFO and CONFIG GET port say."""
        return int(self.settings.values[b"port"])

    @port.setter
    def port(self, value: int) -> None:
        self.settings.values[b"port"] = b"%d" % value

    def sweep(self, budget: int = SWEEP_BUDGET) -> bool:
        """Delete expired keys, looking at up to ``budget`` deadline entries over every
        database (see ``Database.sweep``). True when more work is left now."""
        more = False
        for db in self.databases:
            if db.expires or db.deadline_entries():
                left_over, budget = db.sweep(budget)
                more = more or left_over or budget <= 0
        return more

    # ------------------------------------------------------------------
    # Database 0 as the dump reads and writes it
    # ------------------------------------------------------------------
    @property
    def data(self) -> Dict[bytes, Value]:
        """Database 0's keys (the dump's)."""
        return self.databases[0].data

    @property
    def expires(self) -> Dict[bytes, int]:
        """Database 0's deadlines, Unix ms."""
        return self.databases[0].expires

    @property
    def _deadlines(self) -> List[Tuple[int, bytes]]:
        return self.databases[0]._deadlines

    @property
    def _draining(self) -> List[Tuple[int, bytes]]:
        return self.databases[0]._draining

    def _now_ms(self) -> int:
        return self.databases[0].now_ms()

    def set_deadline(self, key: bytes, deadline: int) -> None:
        """Make database 0's ``key`` expire at ``deadline`` (Unix ms)."""
        self.databases[0].set_deadline(key, deadline)

    # ------------------------------------------------------------------
    # Dump file: a checked binary format, never pickle (the file is input)
    # ------------------------------------------------------------------
    def save(self) -> None:
        """Write every live key to ``dump_path`` atomically (temp file, fsync, rename)."""
        if self.dump_path is None:
            raise CommandError("ERR no dump file: start kv with --dump FILE")
        self.sweep(budget=len(self._deadlines) + len(self._draining) + 1)
        write_dump(self.dump_path, ((key, value, self.expires.get(key, -1))
                                    for key, value in self.data.items()))

    def load(self) -> int:
        """Read ``dump_path`` if it exists; keys already expired are dropped. Returns the count."""
        if self.dump_path is None or not os.path.exists(self.dump_path):
            return 0
        now = self._now_ms()
        for key, value, deadline in read_dump(self.dump_path):
            if deadline < 0 or deadline > now:
                self.data[key] = value
                if deadline >= 0:
                    self.set_deadline(key, deadline)
        return len(self.data)
