"""A UDP echo server, and a datagram client on the same reactor.

    python examples/udp_echo.py              # serve on 127.0.0.1:8007 until Ctrl-C
    python examples/udp_echo.py --port 9000  # another port ("::1" via --host for IPv6)
    python examples/udp_echo.py --demo    # server and client in one thread, then exit

Try the server from another terminal with ``nc -u 127.0.0.1 8007``, or:

    python -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \\
               s.sendto(b'hi', ('127.0.0.1', 8007)); print(s.recv(100))"
"""
from __future__ import annotations

import argparse
import signal
import time

import netmux


class Echo(netmux.DatagramHandler):
    """One handler serves every peer: ``addr`` says who sent each datagram."""

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


class Client(netmux.DatagramHandler):
    """A connected datagram client: sends a few datagrams, collects the echoes."""

    def __init__(self, messages) -> None:
        self.messages = messages
        self.replies = []

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        for message in self.messages:
            transport.sendto(message)          # connected: no address needed

    def datagram_received(self, data: bytes, addr) -> None:
        self.replies.append(data)
        if len(self.replies) == len(self.messages):
            self.transport.close()

    def error_received(self, exc: OSError) -> None:
        print("error:", exc)                   # ECONNREFUSED if nothing listens there


def demo(host: str) -> None:
    reactor = netmux.Reactor()
    with netmux.UDPServer((host, 0), Echo, reactor=reactor) as server:
        messages = [b"datagram %d" % n for n in range(5)]
        client = netmux.open_datagram(server.server_address, lambda: Client(messages),
                                      reactor=reactor)
        deadline = time.monotonic() + 5
        while not client.transport.is_closing() and time.monotonic() < deadline:
            reactor.run_once(0.1)
        print(f"server on {server.server_address}; echoed back: {client.replies}")
    reactor.run_once(0)                        # deliver the client's connection_lost
    reactor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--demo", action="store_true",
                        help="run server and client once, then exit")
    args = parser.parse_args()
    if args.demo:
        demo(args.host)
        return
    with netmux.UDPServer((args.host, args.port), Echo) as server:
        signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
        print(f"UDP echo on {server.server_address} (Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
