"""The server commands of kv (PING, INFO, CONFIG, DEBUG, FUNCTION, TIME, SAVE), sans-IO.

Where it sits: a command family mixed into ``kvstore.Store``. These are what
clients and test harnesses ask before their first real command: redis-cli and
redis-benchmark read CONFIG GET save/appendonly, redis-py's test session reads
INFO's ``arch_bits`` and ``cluster_enabled``, Redis's own harness sends FUNCTION
FLUSH, CONFIG SET and DEBUG. Each answers as redis-server 7.0 does for the
settings kv has; the rest of Redis's settings are not pretended.
Tests: ``tests/test_app_kv_admin.py``.
"""
from __future__ import annotations

import logging
import os
import platform
import struct
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from netmux import __version__
from netmux.apps.kvcommand import OK, CommandError, command, subcommand, to_int
from netmux.apps.kvdb import Database
from netmux.apps.kvglob import glob
from netmux.apps.kvkeyspace import encoding
from netmux.apps.kvstrings import MAX_VALUE
from netmux.apps.resp import array, bulk, integer

__all__ = ["ServerCommands", "REDIS_VERSION", "Settings"]

logger = logging.getLogger("netmux")

REDIS_VERSION = "7.0.15"            # the redis-server kv answers as (INFO, HELLO)
_UNITS = {b"": 1, b"b": 1, b"k": 1000, b"kb": 1024, b"m": 1000 ** 2, b"mb": 1024 ** 2,
          b"g": 1000 ** 3, b"gb": 1024 ** 3}
_POLICIES = ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "allkeys-lru",
             "allkeys-lfu", "allkeys-random", "noeviction")
_BUFFER_CLASSES = ("normal", "slave", "pubsub")
_INFO_TITLES = {"cpu": "CPU"}
_DEBUG_UNKNOWN = "ERR unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP."
_DEBUG_HELP = [
    "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANGE-REPL-ID", "    Nothing to change here: kv has no replication.",
    "OBJECT <key>", "    Show low level info about `key` and associated value.",
    "RELOAD [option ...]", "    Nothing to reload: the keyspace stays as it is.",
    "SET-ACTIVE-EXPIRE <0|1>", "    Setting it to 0 disables expiring keys in background when they are not",
    "    accessed (otherwise the Redis behavior). Setting it to 1 reenables back the", "    default.",
    "SLEEP <seconds>", "    Stop the server for <seconds>. Decimals allowed.",
    "HELP", "    Prints this help.",
]


def _memory(text: bytes) -> int:
    """A memory value as Redis's memtoull reads it: digits and an optional unit."""
    lowered = text.lower()
    digits = lowered.rstrip(b"kmgb")
    unit = _UNITS.get(lowered[len(digits):])
    if unit is None or not digits.isdigit():
        raise ValueError("argument must be a memory value")
    return int(digits) * unit


def _boolean(text: bytes) -> bytes:
    if text.lower() not in (b"yes", b"no"):
        raise ValueError("argument must be 'yes' or 'no'")
    return text.lower()


def _integer(text: bytes) -> int:
    try:
        return to_int(text)
    except CommandError:
        raise ValueError("argument couldn't be parsed into an integer") from None


class Settings:
    """The CONFIG parameters kv has, with Redis's names, defaults and checks.

    ``values`` holds each one as CONFIG GET answers it; ``set`` checks a new
    value as Redis does and keeps it; the store reads the ones that act
    (``proto-max-bulk-len``, ``hz``, ``client-output-buffer-limit``'s pubsub
    class)."""

    def __init__(self, port: int) -> None:
        self.values: Dict[bytes, bytes] = {
            b"save": b"", b"appendonly": b"no", b"appendfsync": b"everysec", b"databases": b"16",
            b"maxmemory": b"0", b"maxmemory-policy": b"noeviction", b"proto-max-bulk-len": b"%d" % MAX_VALUE,
            b"client-output-buffer-limit": b"normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
            b"hz": b"10", b"timeout": b"0", b"notify-keyspace-events": b"", b"port": b"%d" % port,
            b"lazyfree-lazy-user-flush": b"no", b"maxclients": b"10000", b"enable-debug-command": b"yes",
        }
        self._checks: Dict[bytes, Callable[[bytes], bytes]] = {
            b"save": lambda text: text, b"notify-keyspace-events": lambda text: text,
            b"appendonly": _boolean, b"lazyfree-lazy-user-flush": _boolean,
            b"appendfsync": lambda text: self._one_of(text, ("always", "everysec", "no")),
            b"maxmemory-policy": lambda text: self._one_of(text, _POLICIES),
            b"maxmemory": lambda text: b"%d" % _memory(text),
            b"proto-max-bulk-len": self._bulk_length,
            b"hz": lambda text: b"%d" % min(max(_integer(text), 1), 500),
            b"timeout": lambda text: b"%d" % _integer(text),
            b"client-output-buffer-limit": self._buffer_limits,
        }
        self._acting()

    @staticmethod
    def _one_of(text: bytes, allowed: Tuple[str, ...]) -> bytes:
        if text.lower().decode("utf-8", "replace") not in allowed:
            raise ValueError(f"argument(s) must be one of the following: {', '.join(allowed)}")
        return text.lower()

    @staticmethod
    def _bulk_length(text: bytes) -> bytes:
        value = _memory(text)
        if not 1024 * 1024 <= value <= (1 << 63) - 1:
            raise ValueError("argument must be between 1048576 and 9223372036854775807 inclusive")
        return b"%d" % value

    def _buffer_limits(self, text: bytes) -> bytes:
        limits = dict(self.buffer_limits())
        words = text.lower().split()
        if len(words) % 4:
            raise ValueError("Wrong number of arguments in buffer limit configuration.")
        for index in range(0, len(words), 4):
            name = words[index].decode("utf-8", "replace")
            if name not in _BUFFER_CLASSES and name != "replica":
                raise ValueError("Invalid client class specified in buffer limit configuration.")
            try:
                hard, soft, seconds = _memory(words[index + 1]), _memory(words[index + 2]), int(words[index + 3])
            except ValueError:
                raise ValueError("Error in hard, soft or soft_seconds setting in buffer limit configuration.")
            limits["slave" if name == "replica" else name] = (hard, soft, seconds)
        return b" ".join(b"%s %d %d %d" % (name.encode(), *limits[name]) for name in _BUFFER_CLASSES)

    def buffer_limits(self) -> List[Tuple[str, Tuple[int, int, int]]]:
        """client-output-buffer-limit as (class, (hard, soft, soft seconds))."""
        words = self.values[b"client-output-buffer-limit"].split()
        return [(words[index].decode(), (int(words[index + 1]), int(words[index + 2]), int(words[index + 3])))
                for index in range(0, len(words), 4)]

    def get(self, patterns: List[bytes]) -> List[Tuple[bytes, bytes]]:
        """CONFIG GET: every parameter one of the glob ``patterns`` matches, once each."""
        longest = max(map(len, self.values))
        matchers = [glob(pattern.lower(), longest) for pattern in patterns]
        return [(name, value) for name, value in self.values.items() if any(match(name) for match in matchers)]

    def set(self, pairs: List[Tuple[bytes, bytes]]) -> None:
        """CONFIG SET of several parameters: all checked first, then all kept (as Redis)."""
        checked: Dict[bytes, bytes] = {}
        for name, text in pairs:
            name = name.lower()
            if name not in self.values:
                raise CommandError("ERR Unknown option or number of arguments for CONFIG SET - "
                                   f"'{name.decode('utf-8', 'replace')}'")
            if name in checked:
                raise _config_error(name, "duplicate parameter")
            if name not in self._checks:
                raise _config_error(name, "can't set immutable config")
            try:
                checked[name] = self._checks[name](text)
            except ValueError as exc:
                raise _config_error(name, str(exc)) from None
        self.values.update(checked)
        self._acting()

    def _acting(self) -> None:
        """Read the settings that act into attributes, once per CONFIG SET."""
        #: client-output-buffer-limit's pubsub class: (hard bytes, soft bytes, soft seconds)
        self.pubsub_limits = dict(self.buffer_limits())["pubsub"]
        #: no value grows past it (APPEND, SETRANGE, SETBIT)
        self.proto_max_bulk_len = int(self.values[b"proto-max-bulk-len"])


def _config_error(name: bytes, reason: str) -> CommandError:
    return CommandError(f"ERR CONFIG SET failed (possibly related to argument '{name.decode('utf-8', 'replace')}') "
                        f"- {reason}")


class ServerCommands:
    """PING, ECHO, INFO, CONFIG, DEBUG, FUNCTION, TIME, SAVE, LASTSAVE (COMMAND is the session's:
    it lists every command a client has)."""

    databases: List[Database]
    db: Database
    settings: Settings
    clock: Callable[[], float]
    clients: int
    port: int
    active_expire: bool
    stats: Dict[str, int]
    started: float
    last_save: int
    run_id: str
    save: Callable[[], None]
    dump_path: Optional[str]
    pubsub: Any

    @command(-1)
    def do_ping(self, args: List[bytes]) -> bytes:
        if len(args) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        return b"+PONG\r\n" if len(args) == 1 else bulk(args[1])

    @command(2)
    def do_echo(self, args: List[bytes]) -> bytes:
        return bulk(args[1])

    @command(1)
    def do_time(self, args: List[bytes]) -> bytes:
        microseconds = int(self.clock() * 1_000_000)
        return array([bulk(b"%d" % (microseconds // 1_000_000)), bulk(b"%d" % (microseconds % 1_000_000))])

    @command(1)
    def do_save(self, args: List[bytes]) -> bytes:
        try:
            self.save()
        except OSError as exc:
            logger.error("kv: SAVE to %s failed: %s", self.dump_path, exc)
            raise CommandError(f"ERR saving failed: {exc.strerror or exc}")
        self.last_save = int(self.clock())
        return OK

    @command(1)
    def do_lastsave(self, args: List[bytes]) -> bytes:
        return integer(self.last_save)

    @command(-2)
    def do_config(self, args: List[bytes]) -> bytes:
        name = subcommand(args, {b"GET": -3, b"SET": -4, b"RESETSTAT": 2, b"REWRITE": 2, b"HELP": 2})
        if name == b"GET":
            return array([bulk(item) for pair in self.settings.get(args[2:]) for item in pair])
        if name == b"SET":
            if len(args) % 2:
                raise CommandError("ERR wrong number of arguments for 'config|set' command")
            self.settings.set([(args[index], args[index + 1]) for index in range(2, len(args), 2)])
            return OK
        if name == b"RESETSTAT":
            self.stats.update(dict.fromkeys(self.stats, 0))
            return OK
        if name == b"REWRITE":
            raise CommandError("ERR The server is running without a config file")
        return array([b"+CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n",
                      b"+GET <pattern>\r\n", b"+SET <directive> <value>\r\n", b"+RESETSTAT\r\n",
                      b"+REWRITE\r\n", b"+HELP\r\n"])

    @command(-2)
    def do_function(self, args: List[bytes]) -> bytes:
        # No functions (kv runs no scripts): FLUSH has nothing to do, LIST nothing to list.
        name = subcommand(args, {b"FLUSH": -2, b"LIST": -2})
        if name == b"FLUSH":
            if len(args) > 3:
                raise CommandError("ERR unknown subcommand or wrong number of arguments for 'flush'. "
                                   "Try FUNCTION HELP.")
            if (len(args) == 3 and args[2].upper() not in (b"SYNC", b"ASYNC")):
                raise CommandError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
            return OK
        return b"*0\r\n"

    @command(-2)
    def do_debug(self, args: List[bytes]) -> bytes:
        name = args[1].upper()
        if name == b"SLEEP" and len(args) == 3:
            # The whole server stops, as Redis's: DEBUG SLEEP is how tests make a busy server.
            time.sleep(max(0.0, _strtod(args[2])))
            return OK
        if name == b"SET-ACTIVE-EXPIRE" and len(args) == 3:
            self.active_expire = _strtod(args[2]) != 0
            return OK
        if name == b"OBJECT" and len(args) == 3:
            value = self.db.lookup(args[2])
            if value is None:
                raise CommandError("ERR no such key")
            return (b"+Value at:0x%x refcount:1 encoding:%s serializedlength:%d lru:0 lru_seconds_idle:0\r\n"
                    % (id(value), encoding(value), len(value)))
        if name in (b"RELOAD", b"CHANGE-REPL-ID", b"QUICKLIST-PACKED-THRESHOLD") and len(args) <= 3:
            return OK
        if name == b"HELP" and len(args) == 2:
            return array([b"+%s\r\n" % line.encode() for line in _DEBUG_HELP])
        raise CommandError(_DEBUG_UNKNOWN.format(args[1][:128].decode("utf-8", "replace").lower()))

    @command(-1)
    def do_info(self, args: List[bytes]) -> bytes:
        sections = self._info_sections()
        wanted = {name.lower().decode("utf-8", "replace") for name in args[1:]} or {"default"}
        if wanted & {"all", "everything", "default"}:
            wanted |= set(sections)
        text = "\r\n".join(f"# {_INFO_TITLES.get(name, name.capitalize())}\r\n" + "".join(f"{line}\r\n" for line in lines)
                           for name, lines in sections.items() if name in wanted)
        return bulk(text.encode())

    def _info_sections(self) -> Dict[str, List[str]]:
        now = self.clock()
        uptime = int(now - self.started)
        used = _resident_memory()
        times = os.times()
        pubsub_channels, pubsub_patterns = self.pubsub.counts()
        return {
            "server": [f"redis_version:{REDIS_VERSION}", "redis_git_sha1:00000000", "redis_git_dirty:0",
                       "redis_build_id:0", "redis_mode:standalone", f"os:{platform.system()} {platform.release()} "
                       f"{platform.machine()}", f"arch_bits:{struct.calcsize('P') * 8}",
                       "multiplexing_api:epoll", f"process_id:{os.getpid()}", f"run_id:{self.run_id}",
                       f"tcp_port:{self.port}", f"server_time_usec:{int(now * 1_000_000)}",
                       f"uptime_in_seconds:{uptime}", f"uptime_in_days:{uptime // 86400}",
                       f"hz:{int(self.settings.values[b'hz'])}", f"configured_hz:{int(self.settings.values[b'hz'])}",
                       "config_file:", f"netmux_version:{__version__}"],
            "clients": [f"connected_clients:{self.clients}", "cluster_connections:0", "maxclients:10000",
                        "blocked_clients:0", "tracking_clients:0", "clients_in_timeout_table:0"],
            "memory": [f"used_memory:{used}", f"used_memory_human:{used / 1024 / 1024:.2f}M",
                       f"used_memory_rss:{used}", f"used_memory_peak:{used}",
                       f"maxmemory:{int(self.settings.values[b'maxmemory'])}",
                       f"maxmemory_policy:{self.settings.values[b'maxmemory-policy'].decode()}",
                       "mem_fragmentation_ratio:1.00", "mem_allocator:libc", "lazyfree_pending_objects:0"],
            "persistence": ["loading:0", "async_loading:0", "rdb_changes_since_last_save:0",
                            "rdb_bgsave_in_progress:0", f"rdb_last_save_time:{self.last_save}",
                            "rdb_last_bgsave_status:ok", "aof_enabled:0", "aof_rewrite_in_progress:0",
                            "aof_rewrite_scheduled:0", "aof_last_write_status:ok"],
            "stats": [f"{name}:{value}" for name, value in self.stats.items()]
                     + [f"expired_keys:{sum(db.expired for db in self.databases)}",
                        f"pubsub_channels:{pubsub_channels}", f"pubsub_patterns:{pubsub_patterns}",
                        "evicted_keys:0", "instantaneous_ops_per_sec:0"],
            "replication": ["role:master", "connected_slaves:0", "master_failover_state:no-failover",
                            f"master_replid:{self.run_id}", "master_repl_offset:0", "repl_backlog_active:0"],
            "cpu": [f"used_cpu_sys:{times.system:.6f}", f"used_cpu_user:{times.user:.6f}"],
            "modules": [],
            "errorstats": [],
            "cluster": ["cluster_enabled:0"],
            "keyspace": [f"db{index}:keys={len(db.data)},expires={len(db.expires)},avg_ttl=0"
                         for index, db in enumerate(self.databases) if db.data],
        }


def _strtod(text: bytes) -> float:
    """C's strtod as Redis calls it (no error check): the number the text starts with, else 0."""
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if value == value and value not in (float("inf"), float("-inf")) else 0.0


def _resident_memory() -> int:
    """The process's resident set in bytes (Linux's /proc), what INFO's used_memory reports."""
    try:
        with open("/proc/self/statm", "rb") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
