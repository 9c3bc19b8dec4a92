"""kv's publish/subscribe registry and fan-out: who listens to what, and delivery a share per turn.

Where it sits: beside ``kvstore.Store`` (which owns one ``PubSub``), under
``kvsession.py`` (SUBSCRIBE, PUBLISH, PUBSUB) and ``kv.py``, whose connections
are the subscribers: ``subscriber.push(data)`` writes one encoded message and
applies Redis's client-output-buffer-limit. It holds no socket; ``schedule``
(the reactor's ``call_soon``, set by ``kv.py``) is how a large fan-out goes on
in a later turn.

The fan-out a single-threaded multiplexer is made for, and its cost bounded:
PUBLISH counts the receivers at once (its reply), encodes the message once per
channel or pattern, and queues the delivery; ``deliveries_per_turn``
subscribers are written to per turn, so a PUBLISH to 10,000 subscribers is
spread over turns and the other connections are served between them. Small
fan-outs (``direct_fanout`` subscribers or fewer, and nothing queued) are
written at once. Order is kept: deliveries run first in first out, and a
subscriber that is about to be answered (``deliver_pending``) has everything
queued before it delivered first, so a message published before an
UNSUBSCRIBE still comes before its confirmation, as Redis sends it.
Tests: ``tests/test_app_kv_pubsub.py``.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from netmux.apps.kvglob import glob
from netmux.apps.resp import array, bulk

__all__ = ["PubSub"]

_Matcher = Callable[[bytes], bool]


class PubSub:
    """Channels and patterns -> subscribers (any object with ``push(data)``), in
    subscription order; ``publish`` queues the delivery (see the module's note)."""

    deliveries_per_turn = 1000      # subscribers written to per turn of the loop
    direct_fanout = 64              # at most this many receivers: delivered at once

    def __init__(self) -> None:
        self.channels: Dict[bytes, Dict[Any, None]] = {}
        self.patterns: Dict[bytes, Tuple[_Matcher, Dict[Any, None]]] = {}
        self.shard_channels: Dict[bytes, Dict[Any, None]] = {}       # SSUBSCRIBE: no pattern reaches them
        self.schedule: Optional[Callable[[Callable[[], None]], Any]] = None
        # Deliveries queued: [encoded message, its subscribers, how many got it so far].
        self._queue: Deque[List[Any]] = collections.deque()
        self._scheduled = False

    def counts(self) -> Tuple[int, int]:
        """(channels with a subscriber, patterns with a subscriber), for INFO."""
        return len(self.channels), len(self.patterns)

    # ------------------------------------------------------------------
    # Subscriptions
    # ------------------------------------------------------------------
    def subscribe(self, subscriber: Any, channel: bytes) -> None:
        self.channels.setdefault(channel, {})[subscriber] = None

    def unsubscribe(self, subscriber: Any, channel: bytes) -> None:
        _forget(self.channels, subscriber, channel)

    def ssubscribe(self, subscriber: Any, channel: bytes) -> None:
        self.shard_channels.setdefault(channel, {})[subscriber] = None

    def sunsubscribe(self, subscriber: Any, channel: bytes) -> None:
        _forget(self.shard_channels, subscriber, channel)

    def psubscribe(self, subscriber: Any, pattern: bytes) -> None:
        if pattern not in self.patterns:
            self.patterns[pattern] = (glob(pattern), {})
        self.patterns[pattern][1][subscriber] = None

    def punsubscribe(self, subscriber: Any, pattern: bytes) -> None:
        entry = self.patterns.get(pattern)
        if entry is not None:
            entry[1].pop(subscriber, None)
            if not entry[1]:
                del self.patterns[pattern]

    def numsub(self, channel: bytes, shard: bool = False) -> int:
        return len((self.shard_channels if shard else self.channels).get(channel, ()))

    def channel_names(self, pattern: Optional[bytes], shard: bool = False) -> List[bytes]:
        channels = self.shard_channels if shard else self.channels
        if pattern is None:
            return list(channels)
        match = glob(pattern, max(map(len, channels), default=-1))
        return [channel for channel in channels if match(channel)]

    # ------------------------------------------------------------------
    # Publishing
    # ------------------------------------------------------------------
    def publish(self, channel: bytes, message: bytes, shard: bool = False) -> int:
        """Queue ``message`` for every subscriber of ``channel`` and of the patterns
        matching it (of the shard channel, for SPUBLISH); returns how many receive
        it (PUBLISH's reply)."""
        receivers = 0
        listeners = (self.shard_channels if shard else self.channels).get(channel)
        if listeners:
            kind = b"smessage" if shard else b"message"
            self._deliver(array([bulk(kind), bulk(channel), bulk(message)]), list(listeners))
            receivers += len(listeners)
        if shard:
            return receivers
        for pattern, (match, listeners) in self.patterns.items():
            if match(channel):
                data = array([bulk(b"pmessage"), bulk(pattern), bulk(channel), bulk(message)])
                self._deliver(data, list(listeners))
                receivers += len(listeners)
        return receivers

    def _deliver(self, data: bytes, subscribers: List[Any]) -> None:
        if not self._queue and (len(subscribers) <= self.direct_fanout or self.schedule is None):
            for subscriber in subscribers:
                subscriber.push(data)
            return
        self._queue.append([data, subscribers, 0])
        if not self._scheduled and self.schedule is not None:
            self._scheduled = True
            self.schedule(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self.deliver_pending(self.deliveries_per_turn)
        if self._queue and self.schedule is not None:
            self._scheduled = True
            self.schedule(self._run)

    def deliver_pending(self, budget: Optional[int] = None) -> None:
        """Deliver what is queued, in order: ``budget`` subscribers' worth, or all of it."""
        queue = self._queue
        while queue and (budget is None or budget > 0):
            entry = queue[0]
            data, subscribers, start = entry
            stop = len(subscribers) if budget is None else min(len(subscribers), start + budget)
            for index in range(start, stop):
                subscribers[index].push(data)
            if budget is not None:
                budget -= stop - start
            if stop == len(subscribers):
                queue.popleft()
            else:
                entry[2] = stop

    def has_pending(self) -> bool:
        """Whether deliveries are queued (a subscriber's own reply must wait for them)."""
        return bool(self._queue)


def _forget(channels: Dict[bytes, Dict[Any, None]], subscriber: Any, channel: bytes) -> None:
    listeners = channels.get(channel)
    if listeners is not None:
        listeners.pop(subscriber, None)
        if not listeners:
            del channels[channel]
