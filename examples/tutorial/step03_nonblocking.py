"""Step 3: non-blocking sockets, the three surprises they bring, and a server that polls.

    python examples/tutorial/step03_nonblocking.py            # serve on 127.0.0.1:8003 (and spin)
    python examples/tutorial/step03_nonblocking.py --demo     # the surprises, and the spin measured

Threads were needed because ``recv`` and ``send`` wait. A non-blocking socket
never waits: instead of sleeping, the call fails with ``BlockingIOError``
(errno EAGAIN, "try again") or does only part of the work. Each function
below shows one surprise on a real loopback connection:

1. ``recv`` with nothing to read raises ``BlockingIOError`` instead of waiting;
2. ``send`` takes only what fits in the kernel's buffer and says how much;
3. ``recv`` returns any piece of the byte stream: two sends may arrive as one
   piece, and one send arrives in several once it is larger than the
   receiver's kernel buffer. TCP carries bytes, not messages.

``serve`` then serves every client from one thread with no ``select``: it
tries each socket in turn, again and again. It works, and it never sleeps:
``idle_turns`` counts how often it turns, and the CPU it burns, while its one
client says nothing.
"""
from __future__ import annotations

import argparse
import errno
import select
import socket
import threading
import time
from typing import Callable, List, Optional, Tuple

from step01_blocking import make_server, where


def tcp_pair(receive_buffer: Optional[int] = None) -> Tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection, both non-blocking.

    ``receive_buffer`` sets the server end's SO_RCVBUF (on the listener, before
    the handshake, so that the accepted socket is born with it).
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if receive_buffer is not None:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
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
        except BlockingIOError as exc:
            # not an error: "nothing yet, come back later"
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


def two_sends_in_one_piece() -> bytes:
    """Surprise 3, first half: two queued sends, one ``recv``, one piece."""
    client, server = tcp_pair()
    with client, server:
        client.send(b"hello ")
        client.send(b"world")
        wait_readable(server, 11)
        return server.recv(1024)               # both sends, in one piece


def one_send_in_pieces(size: int = 1 << 20,
                       timeout: float = 10.0) -> Tuple[List[int], int]:
    """Surprise 3, second half: one ``sendall`` of ``size``, read with ``recv(size)``.

    Returns (the size of each piece recv returned, the receiver's SO_RCVBUF).
    """
    client, server = tcp_pair(receive_buffer=64 * 1024)
    with client, server:
        client.setblocking(True)               # the sender waits for room; we read
        sender = threading.Thread(target=client.sendall, args=(bytes(size),))
        sender.start()
        pieces: List[int] = []
        deadline = time.monotonic() + timeout
        while sum(pieces) < size and time.monotonic() < deadline:
            select.select([server], [], [], timeout)
            try:
                # asks for all, gets what is there
                pieces.append(len(server.recv(size)))
            except BlockingIOError:
                pass
        sender.join()
        return pieces, server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def serve(listener: socket.socket, stop: Callable[[], bool] = lambda: False) -> int:
    """Echo for every client at once, with no select: try each socket, again and again.

    Returns how many turns it made, once ``stop()`` is true.
    """
    listener.setblocking(False)
    clients: List[socket.socket] = []
    turns = 0
    try:
        while not stop():
            turns += 1
            try:
                conn, _ = listener.accept()
                conn.setblocking(False)
                clients.append(conn)
            except BlockingIOError:
                pass                           # nobody new: go on
            for conn in list(clients):
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue                   # nothing from this one yet: try the next
                if not data:
                    clients.remove(conn)       # the client hung up
                    conn.close()
                    continue
                try:
                    conn.send(data)            # may take part of it: step 5
                except BlockingIOError:
                    pass
    finally:
        for conn in clients:
            conn.close()
    return turns


def idle_turns(seconds: float = 0.5) -> Tuple[int, float]:
    """Serve one connected client that says nothing for ``seconds``.

    Returns (the turns ``serve`` made, the CPU seconds this process used meanwhile).
    """
    done, turns = threading.Event(), []
    with make_server() as listener, socket.create_connection(listener.getsockname()):
        thread = threading.Thread(target=lambda: turns.append(serve(listener, done.is_set)))
        cpu = time.process_time()
        thread.start()
        done.wait(seconds)                     # this thread sleeps; the server does not
        done.set()
        thread.join()
        cpu = time.process_time() - cpu
    return turns[0], cpu


def demo() -> None:
    code = recv_with_nothing_to_read()
    print(f"1. recv with nothing to read: BlockingIOError, errno {errno.errorcode[code]}")
    sent, code = send_more_than_fits()
    print(f"2. send(64 MiB) took {sent} bytes; the next send: errno {errno.errorcode[code]}")
    print(f"3. sends b'hello ' and b'world' were read as {two_sends_in_one_piece()!r}")
    pieces, buffer = one_send_in_pieces()
    print(f"   one sendall of 1 MiB came in {len(pieces)} pieces, the largest "
          f"{max(pieces)} bytes (SO_RCVBUF {buffer})")
    turns, cpu = idle_turns()
    print(f"serve, one idle client, 0.5 s: {turns:,} turns, {cpu:.2f} s of CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--demo", action="store_true", help="show the surprises and the spin, and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"echo on {where(listener)}, polling every socket (watch top); Ctrl-C stops", flush=True)
        try:
            serve(listener)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
