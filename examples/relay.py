"""A TCP relay: a server whose handler connects onward and forwards both ways.

    python examples/relay.py --port 9000 --target 127.0.0.1:8007   # until Ctrl-C
    python examples/relay.py --demo     # echo server + relay + client in one thread

Server and client on one reactor, one thread: each accepted connection (the
"inbound" leg) opens an "outbound" leg with ``netmux.connect`` and the two
forward bytes to each other. Backpressure runs across the legs: when one leg's
write buffer rises above its high-water mark, the relay stops reading the other
leg, whose data is what fills it, and reads it again once the buffer drains. A
slow reader at either end thus slows the fast sender at the other, and the
relay's memory stays bounded whatever the volume.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import signal
import time
from typing import Optional

import netmux


class Leg(netmux.Handler):
    """One side of a relayed pair; ``other`` is the opposite side."""

    other: Optional["Leg"] = None
    got_eof = False

    def data_received(self, data: bytes) -> None:
        self.other.transport.write(data)

    def pause_writing(self) -> None:
        self.other.transport.pause_reading()     # our buffer is full of its data

    def resume_writing(self) -> None:
        self.other.transport.resume_reading()

    def eof_received(self) -> Optional[bool]:
        self.got_eof = True
        if not self.other.got_eof:
            self.other.transport.write_eof()     # pass the half-close on...
            return True                          # ...and keep sending the other way
        self.other.transport.close()             # both ways are finished
        return None                              # this leg closes too

    def connection_lost(self, exc) -> None:
        other = self.other
        peer = other.transport if other is not None else None
        if peer is not None and not peer.is_closing():
            peer.close()                         # flush what it holds, then close


class Inbound(Leg):
    """Accepted by the relay server; connects onward to ``target``."""

    target = ("127.0.0.1", 8007)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.pause_reading()                # nowhere to forward yet
        self.other = netmux.connect(self.target, lambda: Outbound(self),
                                    reactor=transport.reactor, timeout=10)


class Outbound(Leg):
    def __init__(self, inbound: Inbound) -> None:
        self.other = inbound

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.other.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        if self.transport is None:               # the onward connect failed
            print(f"relay: cannot reach {Inbound.target}: {exc}")
            self.other.transport.abort()
        else:
            super().connection_lost(exc)


class Echo(netmux.Handler):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Pusher(netmux.Handler):
    """The demo's client: sends a payload with a FIN, hashes what comes back."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.digest = hashlib.sha256()
        self.received = 0
        self.done = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.write(self.payload)
        transport.write_eof()

    def pause_writing(self) -> None:
        pass                                     # written once: let the buffer hold it

    def data_received(self, data: bytes) -> None:
        self.digest.update(data)
        self.received += len(data)

    def connection_lost(self, exc) -> None:
        self.done = True


def demo() -> None:
    reactor = netmux.Reactor()
    payload = os.urandom(10 * 1024 * 1024)
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as upstream, \
            netmux.TCPServer(("127.0.0.1", 0), Inbound, reactor=reactor) as relay:
        Inbound.target = upstream.server_address
        started = time.monotonic()
        client = netmux.connect(relay.server_address, lambda: Pusher(payload),
                                reactor=reactor)
        deadline = started + 30
        while not client.done and time.monotonic() < deadline:
            reactor.run_once(0.1)
        intact = client.digest.digest() == hashlib.sha256(payload).digest()
        print(f"{client.received} bytes back through the relay in "
              f"{time.monotonic() - started:.2f} s, intact: {intact}")
    reactor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--target", default="127.0.0.1:8007",
                        help="HOST:PORT to relay to")
    parser.add_argument("--demo", action="store_true",
                        help="relay 10 MiB through an echo, then exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    host, _, port = args.target.rpartition(":")
    Inbound.target = (host.strip("[]"), int(port))
    with netmux.TCPServer((args.host, args.port), Inbound) as server:
        signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
        print(f"relay on {server.server_address} -> {Inbound.target} (Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
