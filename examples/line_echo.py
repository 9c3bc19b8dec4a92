"""A line server: every line a client sends comes back in upper case.

    python examples/line_echo.py            # serve on 127.0.0.1:8008 until Ctrl-C
    python examples/line_echo.py --demo   # serve, send lines in pieces, print, exit
    python examples/line_echo.py --ask    # the client: two lines to the running server

Try it from another terminal with ``nc 127.0.0.1 8008`` and type some lines.

TCP delivers bytes, not lines: one ``recv`` may hold half a line or several.
``LineHandler`` puts a ``LineFramer`` between the transport and your code, so
``line_received`` is called once per whole line, however the bytes arrived.
A line longer than ``max_length`` is a protocol error: it is logged and that
connection alone is closed.
"""
from __future__ import annotations

import argparse
import logging
import socket
import threading

import netmux


class UpperEcho(netmux.LineHandler):        # a LineFramer(b"\n", 65536) per connection
    def line_received(self, line):          # one whole line, the b"\n" stripped
        self.send_line(line.upper())        # the b"\n" appended


def demo() -> None:
    """Serve on a free port in a thread; send lines cut at odd places; print replies."""
    server = netmux.TCPServer(("127.0.0.1", 0), UpperEcho)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            for piece in (b"hel", b"lo\nwor", b"ld\nthree lines in ", b"one send\n"):
                client.sendall(piece)
            client.shutdown(socket.SHUT_WR)       # no more lines: replies, then close
            replies = b""
            while True:
                data = client.recv(4096)
                if not data:
                    break
                replies += data
        print(replies.decode(), end="")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def ask() -> None:
    """The client of docs/framing.md: two lines to the running server, lines back."""
    framer = netmux.LineFramer()
    with socket.create_connection(("127.0.0.1", 8008)) as sock:
        sock.sendall(framer.encode(b"hello") + framer.encode(b"world"))
        replies = []
        while len(replies) < 2:
            data = sock.recv(4096)
            if not data:
                break
            replies += framer.feed(data)        # whole lines, however recv cut them
    print(replies)                              # [b'HELLO', b'WORLD']


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Upper-case line echo server on 127.0.0.1:8008.")
    parser.add_argument("--demo", action="store_true", help="run a short demo and exit")
    parser.add_argument("--ask", action="store_true",
                        help="be the client of a running server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.demo:
        demo()
    elif args.ask:
        ask()
    else:
        print("serving upper-case lines on 127.0.0.1:8008 (Ctrl-C stops)")
        try:
            netmux.TCPServer(("127.0.0.1", 8008), UpperEcho).serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
