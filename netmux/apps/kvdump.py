"""The kv server's dump file, sans-IO apart from the file itself: write it atomically, read it whole.

Where it sits: under ``kvstore.py`` (``Store.save``/``Store.load`` call it) and
``kv.py`` (which clears stale temp files at start). It imports no socket and no
reactor. Tests: ``tests/test_app_kvdump.py``.

The format is a small checked binary one -- the magic line, then per key a
``(key length, value length, deadline)`` header with the key and value, then a
CRC32 of everything before it. The file is input, so it is never unpickled, and
a damaged one is refused whole rather than half loaded.

A crash at any moment leaves either the old file or the new one whole: the new
one is written to a temp file in the same directory (so the rename cannot cross
file systems), fsynced, renamed over the old, and the directory is fsynced so
the rename itself survives a power cut. The temp file is named after the dump
and the writing process, ``.NAME.PID.tmp`` (Redis: ``temp-PID.rdb``): a process
killed while it writes (SIGKILL, a power cut) leaves it behind, and the next
write or start of any kv on that dump removes every one whose process is gone
(``remove_stale_temps``), so a crash costs disk space until then, not forever.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from typing import Any, Iterable, List, Tuple, Union

__all__ = ["write_dump", "read_dump", "temp_path", "remove_stale_temps"]

_MAGIC = b"NETMUX-KV 1\n"
_RECORD = struct.Struct(">IIq")     # key length, value length, deadline in Unix ms (-1: none)
Item = Tuple[bytes, bytes, int]     # key, value, deadline (Unix ms, -1: none)
Written = Tuple[bytes, Union[bytes, bytearray], int]   # what a Store hands write_dump


def temp_path(path: str, pid: int) -> str:
    """Where process ``pid`` writes the next version of the dump ``path``."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{pid}.tmp")


def remove_stale_temps(path: str) -> List[str]:
    """Remove the temp files of ``path`` that no live process is writing; return their paths.

    Ours count as stale too: this process writes one dump at a time, from the
    loop's thread, and calls this before it starts.
    """
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\.tmp")
    removed = []
    for entry in os.listdir(directory):
        match = pattern.fullmatch(entry)
        if match and not _writing(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, entry))
                removed.append(os.path.join(directory, entry))
            except FileNotFoundError:
                pass                        # another kv removed it first
    return removed


def _writing(pid: int) -> bool:
    """Whether process ``pid`` may still be writing its temp file: alive, not us."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                         # alive, another user's
    return True


def write_dump(path: str, items: Iterable[Written]) -> None:
    """Write ``(key, value, deadline)`` items to ``path`` atomically (see the module's note)."""
    remove_stale_temps(path)
    temp = temp_path(path, os.getpid())
    try:
        with open(temp, "wb") as file:
            _write_records(file, items)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def _write_records(file: Any, items: Iterable[Written]) -> None:
    crc = zlib.crc32(_MAGIC)
    file.write(_MAGIC)
    for key, value, deadline in items:
        record = _RECORD.pack(len(key), len(value), deadline) + key + value
        crc = zlib.crc32(record, crc)
        file.write(record)
    file.write(struct.pack(">I", crc))


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_dump(path: str) -> List[Item]:
    """The ``(key, value, deadline)`` items of a dump; ValueError if it is not one, whole."""
    with open(path, "rb") as file:
        content = file.read()
    if not content.startswith(_MAGIC) or len(content) < len(_MAGIC) + 4:
        raise ValueError(f"{path}: not a netmux kv dump")
    body, (crc,) = memoryview(content)[:-4], struct.unpack(">I", content[-4:])
    if zlib.crc32(body) != crc:
        raise ValueError(f"{path}: checksum mismatch (truncated or corrupt)")
    items = []
    position = len(_MAGIC)
    while position < len(body):
        if position + _RECORD.size > len(body):
            raise ValueError(f"{path}: truncated record at byte {position}")
        key_length, value_length, deadline = _RECORD.unpack_from(body, position)
        position += _RECORD.size
        end = position + key_length + value_length
        if end > len(body):
            raise ValueError(f"{path}: record overruns the file at byte {position}")
        items.append((bytes(body[position:position + key_length]),
                      bytes(body[position + key_length:end]), deadline))
        position = end
    return items
