"""Sending files: what ``sendfile()`` queues, and how it reaches the socket.

Where it sits: below the transports, beside the kernel. ``TCPTransport.sendfile()``
queues a ``FileRegion`` (a file, an offset, a count) behind the bytes written
before it; from then until the queue drains, the transport's write buffer is a
``SendQueue`` (bytes and regions, in order) flushed by the queue's own writer,
and the plain bytes path is back once it is empty (transport.py's one hook:
``_files_queued``). ``os.sendfile`` moves a region from the page cache to the
socket without copying it through Python; where it is missing or refuses (a
file it cannot map, a socket type it does not serve, ``io.BytesIO``), the
region is read and sent in 256 KiB pieces instead, one piece in memory at
most.

What it never does: move a file's position (reads are at explicit offsets,
so one open file may be queued many times) or close a file (the caller's).
It owns no socket either: the transport hands one to ``SendQueue.send``.
Pinned by tests/test_sendfile.py.
"""
from __future__ import annotations

import errno
import io
import os
import socket
from collections import deque
from typing import Any, Optional

__all__ = ["SendQueue", "FileRegion", "check_file_region", "file_size", "has_descriptor", "region_count"]


def check_file_region(file: Any, offset: int, count: Optional[int]) -> None:
    """The argument check of every ``sendfile()``: TypeError or ValueError for a text
    file, an ``offset`` that is not an int >= 0, a ``count`` neither None nor an int > 0."""
    if isinstance(file, io.TextIOBase):
        raise ValueError("sendfile() needs a file opened in binary mode")
    for name, value in (("offset", offset), ("count", count)):
        if value is not None and (value.__class__ is bool or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if count is not None and count <= 0:
        raise ValueError(f"count must be a positive int or None, got {count}")


def region_count(file: Any, offset: int, count: Optional[int]) -> int:
    """How many bytes ``sendfile(file, offset, count)`` queues: ``count``, or with
    None what the file holds past ``offset`` now (0 at or past its end)."""
    if count is not None:
        return count
    return max(file_size(file) - offset, 0)


#: os.sendfile's ways of saying "not for this pair of descriptors": read and send instead.
_SENDFILE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP,
                                   errno.ESPIPE, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)})
_READ_CHUNK = 256 * 1024


def has_descriptor(file: Any) -> bool:
    """True for a file on a descriptor; False for io.BytesIO and its like. A
    closed file raises ValueError: the caller hears of it at once."""
    try:
        file.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return False
    return True


def file_size(file: Any) -> int:
    """The size of ``file`` now: fstat where it has a descriptor, else seek to its end."""
    if has_descriptor(file):
        return os.fstat(file.fileno()).st_size
    position = file.tell()
    size: int = file.seek(0, io.SEEK_END)
    file.seek(position)
    return size


class SendQueue:
    """Bytes (bytearrays) and ``FileRegion``s, sent in order.

    It stands in for the transport's bytearray, so it answers what ``write()``
    asks of one: truth (anything left?), ``len()`` (bytes left, file bytes
    included) and ``+=`` (bytes join the tail).
    """

    __slots__ = ("_items", "_size")

    def __init__(self, buffer: bytearray) -> None:
        self._items: Any = deque()
        self._size = 0
        if buffer:
            self += buffer

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return self._size

    def __iadd__(self, data: Any) -> "SendQueue":
        items = self._items
        if items and items[-1].__class__ is bytearray:
            items[-1] += data
        else:
            items.append(bytearray(data))
        self._size += len(data)
        return self

    def add_region(self, region: "FileRegion") -> None:
        self._items.append(region)
        self._size += region.remaining

    def send(self, sock: socket.socket) -> int:
        """Hand the kernel what it takes now, in order; the count sent.

        A partial send means the socket buffer is full: stop there rather than
        pay for a call that would only say EAGAIN.
        """
        items = self._items
        total = 0
        while items:
            item = items[0]
            try:
                if item.__class__ is bytearray:
                    sent = sock.send(item)
                    del item[:sent]
                    done = not item
                else:
                    sent = item.send(sock)
                    done = not item.remaining
            except (BlockingIOError, InterruptedError):
                break
            total += sent
            self._size -= sent
            if not done:
                break
            items.popleft()
        return total


class FileRegion:
    """``remaining`` bytes of ``file`` from ``offset``, sent piece by piece.

    Zero-copy with ``os.sendfile`` while the kernel accepts it; at its first
    refusal (or with no descriptor at all) it falls back for good to reading a
    piece (``os.pread``, or seek and read) and sending that, keeping what the
    socket did not take: one piece of memory at most per region.
    """

    __slots__ = ("file", "offset", "remaining", "_native", "_pending")

    def __init__(self, file: Any, offset: int, count: int) -> None:
        self.file = file
        self.offset = offset          # of the next byte to read from the file
        self.remaining = count        # bytes not yet handed to the kernel
        self._native = hasattr(os, "sendfile") and has_descriptor(file)
        self._pending: Any = b""      # read from the file, not yet taken by the socket

    def send(self, sock: socket.socket) -> int:
        """Hand the kernel what it takes now and return that count. BlockingIOError
        when it takes nothing; EOFError when the file ends early; OSError or
        ValueError (a closed file) from either side."""
        if self._native and not self._pending:
            try:
                # The descriptor is asked for each time: a closed file is then a
                # ValueError, not a read from whatever reused its number.
                sent = os.sendfile(sock.fileno(), self.file.fileno(), self.offset, self.remaining)
            except OSError as exc:
                if exc.errno not in _SENDFILE_UNSUPPORTED:
                    raise               # EAGAIN (BlockingIOError), EPIPE, EBADF...
                self._native = False
            else:
                if sent == 0:
                    raise self._ended_early()
                self.offset += sent
                self.remaining -= sent
                return sent
        if not self._pending:
            self._pending = self._read(min(self.remaining, _READ_CHUNK))
        sent = sock.send(self._pending)
        self._pending = self._pending[sent:]
        self.remaining -= sent
        return sent

    def read(self, size: int) -> memoryview:
        """Up to ``size`` next bytes of the region, taken off it: for a layer that
        must transform the file's bytes instead of sending them (TLS encrypts
        them). EOFError when the file ends early."""
        piece = self._read(size)
        self.remaining -= len(piece)
        return piece

    def _read(self, size: int) -> memoryview:
        if has_descriptor(self.file):
            data = os.pread(self.file.fileno(), size, self.offset)
        else:                                        # io.BytesIO and friends
            self.file.seek(self.offset)
            data = self.file.read(size)
        if not data:
            raise self._ended_early()
        self.offset += len(data)
        return memoryview(data)

    def _ended_early(self) -> EOFError:
        return EOFError(f"the file ended {self.remaining} bytes before its sendfile() region did")
