"""A line server: every line a client sends comes back in upper case.

    python examples/line_echo.py            # serve on 127.0.0.1:8008 until Ctrl-C
    python examples/line_echo.py --demo     # serve, send a few lines in pieces, print, exit

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


class UpperEcho(netmux.LineHandler):
    """Answers each line with the same line in upper case."""

    delimiter = b"\n"  # the class defaults, spelled out: override them in a subclass
    max_length = 65536

    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())


def demo() -> None:
    """Serve on a free port in a thread; send lines cut at awkward places; print the replies."""
    server = netmux.TCPServer(("127.0.0.1", 0), UpperEcho)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            for piece in (b"hel", b"lo\nwor", b"ld\nthree lines in ", b"one send\n"):
                client.sendall(piece)
            client.shutdown(socket.SHUT_WR)       # no more lines: the server closes after replying
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


def main() -> None:
    parser = argparse.ArgumentParser(description="Upper-case line echo server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8008)
    parser.add_argument("--demo", action="store_true", help="run a short demo and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.demo:
        demo()
        return
    server = netmux.TCPServer((args.host, args.port), UpperEcho)
    print(f"serving upper-case lines on {server.server_address[0]}:{server.server_address[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
