"""One kv database (Redis has 16, SELECT picks one): keys, values, deadlines, watchers. Sans-IO.

Where it sits: under the command families (``kvstrings.py``, ``kvkeyspace.py``,
...) and ``kvstore.py``, which holds sixteen of these. It owns the data and the
two ways a key changes without a command naming it -- expiry, and the WATCHes
that must hear of every change -- and nothing else: no command, no reply.

Expiry is Redis's: lazy (a key past its deadline is deleted when touched) plus an
active ``sweep()`` the server calls on a timer, so keys nobody reads again do not
stay in memory. Redis samples random keys for that; we keep a heap of deadlines
instead, which finds exactly the expired keys, and bound the work per call.
Deadlines are wall-clock milliseconds, so they mean the same after a restart.

WATCH costs nothing while nobody watches: every write calls ``touched(key)``,
one test of an empty dict, as Redis's ``signalModifiedKey`` looks up
``db->watched_keys``. Tests: ``tests/test_app_kvstore.py``,
``tests/test_app_kv_transactions.py``.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

__all__ = ["Database", "Value", "Text", "SWEEP_BUDGET"]

Value = Union[bytes, bytearray]     # a stored value: bytes, or a bytearray grown in place


class Text(bytes):
    """A value Redis stores as a string even when it reads as an integer (INCRBYFLOAT's
    result): only OBJECT ENCODING tells it from bytes."""
SWEEP_BUDGET = 1000                 # deadline entries one sweep() looks at, at most
_SCANS_KEPT = 16                    # SCAN snapshots a database keeps at most (see scan())


class Database:
    """Keys (``data``), their deadlines (``expires``, Unix ms) and who WATCHes them.

    ``clock`` gives wall-clock seconds. A value is bytes, or a bytearray once
    APPEND, SETRANGE or SETBIT changed it in place (amortised O(1)); every reply
    copies it, so nothing handed out changes afterwards.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.data: Dict[bytes, Value] = {}
        self.expires: Dict[bytes, int] = {}
        # key -> the watches on it (objects with a ``dirty`` flag, see kvsession).
        # It stays with its index when SWAPDB swaps the data, as Redis's does.
        self.watched: Dict[bytes, Set[Any]] = {}
        # Deadlines: a heap of (deadline, key). An entry is stale once its key has
        # another deadline or none (re-set, DEL, PERSIST, SET without one, expired).
        # Stale entries are dropped when popped, or by a compaction: once they are
        # most of the heap, it becomes _draining, moved into a new heap a sweep's
        # budget of entries at a time, one live entry per key kept (_moved: the
        # keys that have theirs in the new heap; a key set to a deadline it had
        # before has two equal entries).
        self._deadlines: List[Tuple[int, bytes]] = []
        self._draining: List[Tuple[int, bytes]] = []
        self._moved: Set[bytes] = set()
        # SCAN: cursor id -> the keys as the scan found them (see scan()).
        self._scans: Dict[int, List[bytes]] = {}
        self._next_scan = 1
        self.expired = 0                # keys deleted for their deadline (INFO's expired_keys)

    def now_ms(self) -> int:
        """Wall-clock Unix milliseconds, as deadlines are."""
        return int(self.clock() * 1000)

    # ------------------------------------------------------------------
    # Keys
    # ------------------------------------------------------------------
    def lookup(self, key: bytes) -> Optional[Value]:
        """The live value of ``key``, deleting it first if it expired (lazy expiry)."""
        value = self.data.get(key)
        if value is not None and self.expires and key in self.expires:
            if self.expires[key] <= self.now_ms():
                self.delete(key)
                self.expired += 1
                return None
        return value

    def put(self, key: bytes, value: Value, keep_ttl: bool = False) -> None:
        """Set ``key`` to ``value``; its deadline goes unless ``keep_ttl``."""
        self.data[key] = value
        if not keep_ttl and self.expires:
            self.expires.pop(key, None)
        if self.watched:
            self.touched(key)

    def delete(self, key: bytes) -> bool:
        """Remove ``key`` (live or expired); True if it was there."""
        self.expires.pop(key, None)
        if self.data.pop(key, None) is None:
            return False
        if self.watched:
            self.touched(key)
        return True

    def touched(self, key: bytes) -> None:
        """``key`` changed: every WATCH on it fails its EXEC (Redis's signalModifiedKey)."""
        for watch in self.watched.get(key, ()):
            watch.dirty = True

    def expired_since(self, key: bytes) -> bool:
        """Whether ``key`` is there but past its deadline (EXEC's check of a watched key)."""
        deadline = self.expires.get(key)
        return deadline is not None and deadline <= self.now_ms()

    def clear(self) -> None:
        """FLUSHDB: every key goes; the watches on keys that were there fail."""
        for key in self.watched:
            if key in self.data:
                self.touched(key)
        self.data, self.expires = {}, {}
        self._deadlines, self._draining, self._moved, self._scans = [], [], set(), {}

    def swap(self, other: "Database") -> None:
        """SWAPDB: exchange the contents, not the watches; a watch fails when its
        key is in either database (it may read differently now)."""
        for database in (self, other):
            for key in database.watched:
                if key in self.data or key in other.data:
                    database.touched(key)
        for name in ("data", "expires", "_deadlines", "_draining", "_moved", "_scans"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs)
            setattr(other, name, mine)

    def scan(self, cursor: int, count: int) -> Tuple[int, List[bytes]]:
        """SCAN's walk: up to ``count`` keys from ``cursor``, and the next cursor (0: done).

        Redis's guarantee -- every key there for the whole scan is returned -- from
        a snapshot: cursor 0 copies the key list (in C), a later cursor is the
        snapshot's id and a position in it, and a key is returned if it is still
        there when its turn comes. At most ``_SCANS_KEPT`` snapshots are kept (the
        oldest goes first); a cursor naming none ends the scan (cursor 0)."""
        if cursor == 0:
            scan_id, position = self._start_scan(), 0
        else:
            scan_id, position = cursor >> 32, cursor & 0xFFFFFFFF
        keys = self._scans.get(scan_id)
        if keys is None:
            return 0, []
        end = min(len(keys), position + max(1, count))
        found = [key for key in keys[position:end] if key in self.data]
        if end >= len(keys):
            del self._scans[scan_id]
            return 0, found
        return scan_id << 32 | end, found

    def _start_scan(self) -> int:
        if len(self._scans) >= _SCANS_KEPT:
            del self._scans[next(iter(self._scans))]
        scan_id, self._next_scan = self._next_scan, self._next_scan % (1 << 30) + 1
        self._scans[scan_id] = list(self.data)
        return scan_id

    # ------------------------------------------------------------------
    # Deadlines
    # ------------------------------------------------------------------
    def set_deadline(self, key: bytes, deadline: int) -> None:
        """Make ``key`` expire at ``deadline`` (Unix ms); past deadlines delete it now."""
        if deadline <= self.now_ms():
            self.delete(key)
            return
        if self.expires.get(key) != deadline:            # else its entry is there already
            self.expires[key] = deadline
            heapq.heappush(self._deadlines, (deadline, key))
            if self._draining:
                self._moved.add(key)
        if self.watched:
            self.touched(key)

    def persist(self, key: bytes) -> bool:
        """Drop ``key``'s deadline; True if it had one."""
        if self.expires.pop(key, None) is None:
            return False
        if self.watched:
            self.touched(key)
        return True

    def sweep(self, budget: int = SWEEP_BUDGET) -> Tuple[bool, int]:
        """Look at up to ``budget`` deadline entries, stale ones included: drain a
        compaction, delete expired keys. Returns (more work is left now, budget left)."""
        budget = self._drain(budget)
        now = self.now_ms()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            if budget <= 0:
                return True, 0
            deadline, key = heapq.heappop(heap)
            budget -= 1
            if self.expires.get(key) == deadline:
                self.delete(key)
                self.expired += 1
        if not self._draining and len(heap) > 2 * len(self.expires) + SWEEP_BUDGET:
            self._draining, self._deadlines = heap, []   # stale entries are most of it
        return bool(self._draining), budget

    def _drain(self, budget: int) -> int:
        """Move up to ``budget`` entries of a compaction into the heap, the live ones
        (from the end: the old list shrinks, and frees its memory, as it goes).
        Returns the budget left."""
        old, heap, expires, moved = self._draining, self._deadlines, self.expires, self._moved
        count = min(budget, len(old))
        for _ in range(count):
            entry = old.pop()
            deadline, key = entry
            if expires.get(key) == deadline and key not in moved:
                moved.add(key)
                heapq.heappush(heap, entry)
        if not old:
            self._moved = set()
        return budget - count

    def deadline_entries(self) -> int:
        """Entries in the deadline heaps, stale ones included (what a sweep may look at)."""
        return len(self._deadlines) + len(self._draining)

    def items(self) -> Iterable[Tuple[bytes, Value, int]]:
        """``(key, value, deadline or -1)`` of every key, as the dump writes them."""
        return ((key, value, self.expires.get(key, -1)) for key, value in self.data.items())
