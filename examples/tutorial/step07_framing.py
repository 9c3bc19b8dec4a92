"""Step 7: framing. ``recv()`` chunks are not messages; a sans-IO framer makes them so.

    python examples/tutorial/step07_framing.py            # lines in upper case on 127.0.0.1:8007
    python examples/tutorial/step07_framing.py --demo     # chunks versus lines

Steps 4 to 6 echo bytes, so they never cared where a message ends. A server
that answers *lines* does: step 3 showed that one ``recv`` may return two
sends at once, or part of one. ``handle_chunks_naively`` treats each chunk as
one line and answers the wrong things.

``LineFramer`` is the fix, and it is *sans-IO*: it never touches a socket.
``feed(data)`` takes whatever bytes arrived and returns the whole lines they
completed, keeping the incomplete tail for next time; so it gives the same
lines however the stream is cut, which a test proves with hypothesis over
arbitrary cuts, no socket needed. ``LineServer`` puts it between step 6's
``recv`` and an answer: each whole line comes back in upper case.
"""
from __future__ import annotations

import argparse
import signal
import socket
from typing import List

from step01_blocking import make_server, where
from step05_buffers import Server
from step06_backpressure import BoundedConnection


def handle_chunks_naively(chunks: List[bytes]) -> List[bytes]:
    """The bug: one ``recv`` chunk taken for one line."""
    return [chunk.rstrip(b"\n") for chunk in chunks]


class LineFramer:
    """Bytes in, whole lines out (without their ``b"\\n"``); no sockets inside."""

    def __init__(self, max_length: int = 65536) -> None:
        self.buffer = bytearray()
        self.searched = 0                  # bytes already known to hold no delimiter
        self.max_length = max_length

    def feed(self, data: bytes) -> List[bytes]:
        """Every line that ``data`` completes, in order."""
        self.buffer += data
        lines, start = [], 0
        while True:
            end = self.buffer.find(b"\n", max(start, self.searched))
            if end < 0:
                break
            lines.append(bytes(self.buffer[start:end]))
            start = end + 1
        del self.buffer[:start]
        self.searched = len(self.buffer)   # never search these bytes again: linear time
        if len(self.buffer) > self.max_length:
            raise ValueError(f"a line longer than {self.max_length} bytes")
        return lines

    @staticmethod
    def encode(line: bytes) -> bytes:
        if b"\n" in line:
            raise ValueError("a line cannot contain the delimiter")
        return line + b"\n"


def read_chunks(sock: socket.socket, size: int) -> List[bytes]:
    """What a server sees: the ``recv`` chunks that carry ``size`` bytes."""
    chunks: List[bytes] = []
    while sum(map(len, chunks)) < size:
        chunks.append(sock.recv(4096))
    return chunks


class LineConnection(BoundedConnection):
    """Step 6's connection, answering lines: the framer sits between recv and answer."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.framer = LineFramer()
        super().__init__(server, sock)

    def data_received(self, data: bytes) -> None:
        try:
            lines = self.framer.feed(data)
        except ValueError as error:        # a line over max_length: this peer is done
            self.closing = True
            self.write(f"error: {error}\n".encode())
            return
        for line in lines:
            self.write(line.upper() + b"\n")


class LineServer(Server):
    connection_class = LineConnection


def lines_over_tcp(pieces: List[bytes]) -> tuple:
    """Send ``pieces`` over loopback, then read them as one server would.

    Returns (the chunks recv gave, the naive lines, the framer's lines).
    """
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname(), timeout=10) as client:
        server, _ = listener.accept()
        with server:
            server.settimeout(10)
            for piece in pieces:
                client.sendall(piece)
            chunks = read_chunks(server, sum(map(len, pieces)))
    framer = LineFramer()
    framed = [line for chunk in chunks for line in framer.feed(chunk)]
    return chunks, handle_chunks_naively(chunks), framed


def demo() -> None:
    chunks, naive, framed = lines_over_tcp([b"one\n", b"two\n", b"thr", b"ee\n"])
    print(f"recv gave {chunks!r}")
    print(f"naive, one chunk = one line: {naive!r}")
    print(f"LineFramer: {framed!r}")
    framer = LineFramer()
    stream = b"".join([b"one\n", b"two\n", b"thr", b"ee\n"])
    print("fed byte by byte:", [line for byte in stream for line in framer.feed(bytes([byte]))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--demo", action="store_true", help="show chunks versus lines, and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"lines in upper case on {where(listener)}; Ctrl-C stops", flush=True)
        # Ctrl-C sets a flag that the loop reads between turns: a KeyboardInterrupt
        # could land in the middle of closing a connection and leave it half closed.
        stopping: list = []
        signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
        LineServer(listener).serve(stop=lambda: bool(stopping))


if __name__ == "__main__":
    main()
