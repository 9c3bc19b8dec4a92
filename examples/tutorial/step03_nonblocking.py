"""Step 3: non-blocking sockets, and the three surprises they bring.

    python examples/tutorial/step03_nonblocking.py --demo

Threads were needed because ``recv`` and ``send`` wait. A non-blocking socket
never waits: instead of sleeping, the call fails with ``BlockingIOError``
(errno EAGAIN, "try again") or does only part of the work. Each function
below shows one surprise on a real loopback connection:

1. ``recv`` with nothing to read raises ``BlockingIOError`` instead of waiting;
2. ``send`` takes only what fits in the kernel's buffer and says how much;
3. ``recv`` returns any piece of the byte stream: two sends may arrive as one
   piece, one send as several. TCP carries bytes, not messages.
"""
from __future__ import annotations

import argparse
import errno
import select
import socket
import time
from typing import List, Tuple


def tcp_pair() -> Tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection, both non-blocking."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for end in (client, server):
        end.setblocking(False)
    return client, server


def recv_with_nothing_to_read() -> int:
    """Surprise 1: return the errno of a non-blocking ``recv`` on a quiet connection."""
    client, server = tcp_pair()
    with client, server:
        try:
            server.recv(1024)
        except BlockingIOError as exc:         # not an error: "nothing yet, come back later"
            return exc.errno
    raise AssertionError("recv returned without data")


def send_more_than_fits(size: int = 64 << 20) -> Tuple[int, int]:
    """Surprise 2: one ``send`` of ``size`` bytes to a peer that does not read.

    Returns (bytes the first send took, errno of the next send).
    """
    client, server = tcp_pair()
    with client, server:
        data = bytes(size)
        sent = client.send(data)               # takes what fits, returns how much
        try:
            while True:                        # fill the rest of the kernel's buffers
                client.send(memoryview(data)[sent:])
        except BlockingIOError as exc:
            return sent, exc.errno


def wait_readable(sock: socket.socket, count: int, timeout: float = 5.0) -> None:
    """Wait until ``count`` bytes are queued on ``sock`` (peeked at, not consumed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([sock], [], [], timeout)
        try:
            if len(sock.recv(count, socket.MSG_PEEK)) >= count:
                return
        except BlockingIOError:
            pass
    raise AssertionError(f"{count} bytes did not arrive within {timeout} s")


def pieces_of_the_stream() -> Tuple[bytes, List[bytes]]:
    """Surprise 3: two sends read as one piece, then one send read as several."""
    client, server = tcp_pair()
    with client, server:
        client.send(b"hello ")
        client.send(b"world")
        wait_readable(server, 11)
        together = server.recv(1024)           # both sends, in one piece
        client.send(b"one message")
        wait_readable(server, 11)
        apart = [server.recv(4), server.recv(4), server.recv(4)]   # one send, three pieces
    return together, apart


def demo() -> None:
    code = recv_with_nothing_to_read()
    print(f"1. recv with nothing to read: BlockingIOError, errno {errno.errorcode[code]}")
    sent, code = send_more_than_fits()
    print(f"2. send(64 MiB) took {sent} bytes; the next send: errno {errno.errorcode[code]}")
    together, apart = pieces_of_the_stream()
    print(f"3. sends b'hello ' and b'world' were read as {together!r}; "
          f"send b'one message' as {apart!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="show the three surprises (the default)")
    parser.parse_args()
    demo()


if __name__ == "__main__":
    main()
