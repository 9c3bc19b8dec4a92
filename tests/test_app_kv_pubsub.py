"""kv's publish/subscribe (netmux/apps/kvpubsub.py, kvsession.py, kv.py's push): as redis-server 7.0, bounded."""
from __future__ import annotations

import socket
from typing import Any, List

import pytest
from hypothesis import given, settings, strategies as st

import netmux
from netmux.apps.kv import KVHandler, KVServer
from netmux.apps.kvpubsub import PubSub
from netmux.apps.kvstore import Store
from netmux.testing import drive
import kvdiff
from kvdiff import RecordingKV, servers  # noqa: F401 (a fixture)
from conftest import WAYS, recv_exactly, run_one_way, run_until


def on_both(servers: kvdiff.Servers, steps: List[Any]) -> List[Any]:
    """Run steps on two clients of each server: (n, command) sends and reads its reply,
    (n, "read") reads one more reply (a pushed message). Returns the differing steps."""
    clients = [servers.connect(), servers.connect()]
    try:
        found = []
        for number, line in steps:
            replies = []
            for connection in clients[number]:
                replies.append(connection.read() if line == "read" else connection.call(*kvdiff.words(line)))
            if replies[0] != replies[1]:
                found.append((number, line, *replies))
        return found
    finally:
        servers.disconnect()


@pytest.mark.clients
def test_subscribe_publish_and_subscribed_mode_answer_as_redis_server(servers):
    steps = [
        (1, "pubsub numpat"), (1, "pubsub channels"), (1, "pubsub numsub a"), (1, "publish a nobody"),
        (0, "subscribe"), (0, "unsubscribe"), (0, "punsubscribe"),
        (0, "subscribe a b a"), (0, "read"), (0, "read"),
        (0, "get x"), (0, "ping"), (0, "ping hi"), (0, "ping a b"), (0, "nosuch"), (0, "get"),
        (0, "multi"), (0, "exec"), (0, "exec x"), (0, "discard"), (0, "select 1"),
        (0, "psubscribe h* [ab]"), (0, "read"),
        (1, "publish a m1"), (0, "read"), (1, "publish hello m2"), (0, "read"),
        (1, "publish b m3"), (0, "read"), (0, "read"), (1, "publish zzz nobody"),
        (1, "pubsub numsub a b z"), (1, "pubsub numpat"), (1, "pubsub channels b*"),
        (1, "pubsub channels x y"), (1, "pubsub numpat x"), (1, "pubsub nosuch"), (1, "pubsub"),
        (0, "unsubscribe b nosuch"), (0, "read"), (0, "punsubscribe h*"), (0, "punsubscribe"),
        (0, "unsubscribe"), (0, "get x"), (0, "ping"),
        (0, "subscribe c"), (0, "reset"), (0, "get x"), (1, "publish c gone"),
        (0, "multi"), (0, "subscribe q"), (0, "exec"), (1, "publish q queued"), (0, "read"), (0, "quit"),
    ]
    assert on_both(servers, steps) == []


@pytest.mark.clients
def test_sharded_channels_answer_as_redis_server(servers):
    steps = [
        (0, "sunsubscribe"), (0, "ssubscribe a b"), (0, "read"), (0, "subscribe x"), (0, "ssubscribe c"),
        (0, "get k"), (1, "spublish a m1"), (0, "read"), (1, "publish a m2"), (1, "pubsub shardnumsub a x"),
        (1, "pubsub shardchannels b*"), (1, "pubsub channels"), (1, "pubsub shardchannels a b"),
        (0, "unsubscribe"), (0, "sunsubscribe a"), (0, "sunsubscribe c"), (0, "get k"), (0, "sunsubscribe"),
        (0, "get k"), (0, "ssubscribe a a"), (0, "read"), (0, "ping"), (0, "reset"), (0, "ssubscribe"),
        (1, "spublish a"), (1, "pubsub shardnumsub"),
    ]
    assert on_both(servers, steps) == []


@pytest.mark.clients
def test_client_list_and_info_as_redis_py_reads_them(servers):
    import redis
    host, port = servers.kv.address
    first, second = redis.Redis(host=host, port=port, protocol=2), redis.Redis(host=host, port=port, protocol=2)
    try:
        first.client_setname("one")
        second.ping()
        listed = first.client_list()
        assert [client["name"] for client in listed if client["name"]] == ["one"] and len(listed) >= 2
        assert first.client_info()["id"] == str(first.client_id()) or first.client_info()["id"] == first.client_id()
        assert first.client_list(_type="pubsub") == []
        listener = second.pubsub()
        listener.subscribe("news")
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        assert [client["cmd"] for client in first.client_list(_type="pubsub")] == ["subscribe"]
        listener.close()
        assert [int(client["id"]) for client in first.client_list(client_id=[second.client_id()])] == \
            [second.client_id()]
    finally:
        first.close()
        second.close()


@pytest.mark.clients
def test_a_message_published_before_unsubscribe_comes_before_its_confirmation(servers):
    steps = [(0, "subscribe c"), (1, "publish c first"), (0, "unsubscribe c"), (0, "read"), (1, "publish c after")]
    assert on_both(servers, steps) == []


# ----------------------------------------------------------------------
# The registry's fan-out: a share of subscribers per turn, in order
# ----------------------------------------------------------------------
class Listener:
    def __init__(self) -> None:
        self.received: List[bytes] = []

    def push(self, data: bytes) -> None:
        self.received.append(data)


def test_a_publish_to_10000_subscribers_is_delivered_a_share_per_turn_in_order():
    pubsub = PubSub()
    turns: List[Any] = []
    pubsub.schedule = turns.append
    listeners = [Listener() for _ in range(10_000)]
    for listener in listeners:
        pubsub.subscribe(listener, b"news")
    pubsub.psubscribe(listeners[-1], b"n*")
    assert pubsub.publish(b"news", b"one") == 10_001 and pubsub.publish(b"news", b"two") == 10_001
    delivered = []
    while turns:
        before = sum(len(listener.received) for listener in listeners)
        turns.pop(0)()
        delivered.append(sum(len(listener.received) for listener in listeners) - before)
    assert max(delivered) <= pubsub.deliveries_per_turn and sum(delivered) == 20_002
    assert len(delivered) >= 20_002 // pubsub.deliveries_per_turn
    assert listeners[0].received == [b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$3\r\none\r\n",
                                     b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$3\r\ntwo\r\n"]
    assert [data.split(b"\r\n")[2] for data in listeners[-1].received] == [b"message", b"pmessage"] * 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200)), min_size=1, max_size=12),
       st.integers(1, 50))
def test_every_subscriber_gets_every_message_in_publish_order_whatever_the_budget(publishes, budget):
    pubsub = PubSub()
    pubsub.deliveries_per_turn, pubsub.direct_fanout = budget, 3
    turns: List[Any] = []
    pubsub.schedule = turns.append
    listeners = [Listener() for _ in range(60)]
    for index, listener in enumerate(listeners):
        pubsub.subscribe(listener, b"c%d" % (index % 4))
    for number, (channel, _) in enumerate(publishes):
        pubsub.publish(b"c%d" % channel, b"%d" % number)
        if number % 3 == 0 and turns:
            turns.pop(0)()
    pubsub.deliver_pending()
    for index, listener in enumerate(listeners):
        wanted = [number for number, (channel, _) in enumerate(publishes) if channel == index % 4]
        assert [int(data.split(b"\r\n")[-2]) for data in listener.received] == wanted


def test_a_publish_to_10000_subscribers_leaves_another_clients_ping_fast():
    """Both clients' bytes are in the kernel before the first turn; the 20 PUBLISHes
    reach 200,000 deliveries, the PING is answered within a few turns of them."""
    store = Store()
    reactor = netmux.Reactor()
    kv = KVServer(netmux.TCPServer(("127.0.0.1", 0), lambda: KVHandler(store, 1 << 20), reactor=reactor), store)
    listeners = [Listener() for _ in range(10_000)]
    for listener in listeners:
        store.pubsub.subscribe(listener, b"news")
    publisher = socket.create_connection(kv.server_address[:2])
    polite = socket.create_connection(kv.server_address[:2])
    try:
        publisher.sendall(b"PUBLISH news hello\r\n" * 20)
        polite.sendall(b"PING\r\n")
        polite.setblocking(False)
        answered: List[int] = []

        def polite_answered() -> bool:
            try:
                if polite.recv(100) == b"+PONG\r\n":
                    answered.append(sum(len(listener.received) for listener in listeners))
            except BlockingIOError:
                pass
            return bool(answered)

        run_until(reactor, polite_answered, timeout=20)
        run_until(reactor, lambda: len(listeners[-1].received) == 20, timeout=30)
        publisher.settimeout(10)
        assert recv_exactly(publisher, 20 * len(b":10000\r\n")) == b":10000\r\n" * 20   # never waited
    finally:
        publisher.close()
        polite.close()
        kv.server_close()
        reactor.close()
    assert answered[0] <= 4 * PubSub.deliveries_per_turn, f"the PING waited for {answered[0]} deliveries"


@pytest.mark.parametrize("way", WAYS)
def test_a_costly_publish_ends_its_clients_share_of_the_turn(way):
    """Ten pipelined PUBLISHes to 2,000 subscribers each: one a turn, not ten (a turn's
    share counts commands; one such PUBLISH is worth a share), replies whole and in order."""
    store = Store()
    listeners = [Listener() for _ in range(2000)]
    for listener in listeners:
        store.pubsub.subscribe(listener, b"news")
    data = b"PUBLISH news x\r\n" * 10 + b"PING\r\nQUIT\r\n"
    outcome = run_one_way(way, lambda: RecordingKV(store, 1 << 20), data)
    assert outcome.written == b":2000\r\n" * 10 + b"+PONG\r\n+OK\r\n"
    assert all(len(listener.received) == 10 for listener in listeners)
    if way == "drive":
        conversation = drive(lambda: RecordingKV(store, 1 << 20), [data])
        assert len([event for event in conversation.events if event[1] == "yield_turn"]) == 10
    assert store.execute([b"PUBLISH", b"news", b"y"]) == b":2000\r\n"       # the store's own client too


# ----------------------------------------------------------------------
# Redis's client-output-buffer-limit for pub/sub: a subscriber that does not read goes
# ----------------------------------------------------------------------
class Flooded(KVHandler):
    """A subscriber whose channel gets ``messages`` (virtual time, size) on its reactor."""

    messages: List[Any] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        for when, size in self.messages:
            transport.reactor.call_later(when, self._store.pubsub.publish, b"c", b"x" * size)


def aborted_at(conversation: Any) -> float:
    return next(when for when, event, _ in conversation.events if event == "abort")


def flooded(limits: str, messages: List[Any]) -> Any:
    store = Store()
    assert store.execute([b"CONFIG", b"SET", b"client-output-buffer-limit", limits.encode()]) == b"+OK\r\n"
    Flooded.messages = messages
    return drive(lambda: Flooded(store, 1 << 20), [b"SUBSCRIBE c\r\n"], eof=False, peer_reads=False), store


def test_a_subscriber_over_the_hard_limit_is_dropped_at_once():
    conversation, store = flooded("pubsub 1mb 0 0", [(1, 600_000), (2, 600_000), (3, 600_000)])
    assert conversation.aborted and aborted_at(conversation) == 2
    assert store.pubsub.numsub(b"c") == 0


def test_a_subscriber_over_the_soft_limit_for_its_period_is_dropped_then():
    messages = [(1, 300_000)] + [(1 + 10 * step, 10) for step in range(1, 10)]
    conversation, store = flooded("pubsub 0 256kb 60", messages)
    assert conversation.aborted and aborted_at(conversation) == 61
    conversation, store = flooded("pubsub 0 256kb 60", messages[:6])          # not long enough
    assert not conversation.aborted and store.pubsub.numsub(b"c") == 1


@pytest.mark.parametrize("way", WAYS)
def test_subscribe_and_publish_to_oneself_over_any_transport(way):
    store = Store()
    store.execute([b"SUBSCRIBE", b"c"])               # the store's own client listens too
    outcome = run_one_way(way, lambda: RecordingKV(store, 1 << 20), b"PUBLISH c hi\r\nQUIT\r\n")
    assert outcome.written == b":1\r\n+OK\r\n"
    assert store.pushed == [b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"]


def test_a_subscriber_that_disconnects_is_forgotten():
    store = Store()
    conversation = drive(lambda: KVHandler(store, 1 << 20), [b"SUBSCRIBE a b\r\nPSUBSCRIBE *\r\n"])
    assert conversation.closed and store.pubsub.channels == {} and store.pubsub.patterns == {}
    assert store.execute([b"PUBLISH", b"a", b"x"]) == b":0\r\n"
