"""Step 9: coroutines. A function that pauses where it would block, and whoever resumes it.

    python examples/tutorial/step09_coroutines.py            # echo on 127.0.0.1:8009, one client at a time
    python examples/tutorial/step09_coroutines.py --demo     # a callback that waits; a coroutine's parks

A conversation (read a name, then a message, then answer) is three lines of
blocking code. On step 8's loop a callback cannot wait, so that code must be
cut into a state machine, or it blocks: ``blocking_greeter`` reads the
second line with a blocking call, and every other client waits, as in step 1.

Generators can pause in the middle of a function and be resumed later with
``send(value)`` (or ``throw(exc)``, to raise at the pause). ``async def``
functions are generators of the same kind, and ``await x`` passes whatever
``x.__await__()`` yields all the way out to whoever calls ``send``. So:

* ``ReadyToRead(sock)``/``ReadyToWrite(sock)`` are awaitables that yield
  themselves: "park me until this socket is ready";
* ``recv`` and ``sendall`` are the blocking calls, rewritten to park instead
  of block, and ``echo`` is step 1's inner loop written with them;
* ``run`` drives one coroutine by hand: ``send()`` runs it to its next park,
  ``select`` waits for that socket, ``send()`` resumes it.

``run`` waits in ``select`` for one coroutine's socket, so it serves one
client at a time, as step 1 did: step 10 runs many on step 8's loop.
"""
from __future__ import annotations

import argparse
import select
import selectors
import socket
import threading
import time
from typing import Any, Coroutine, Generator, List, Optional, Tuple

from step01_blocking import make_server, where
from step08_timers import Loop, run_in_thread


# -- what breaks: a callback that waits -------------------------------------
def blocking_greeter(loop: Loop, listener: socket.socket) -> None:
    """A conversation as a plain callback on step 8's loop: its reads block the loop."""
    def on_accept() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            # blocking: readline() waits, and nobody else is served meanwhile
            conn.settimeout(10)
            name = lines.readline().rstrip(b"\n")
            message = lines.readline().rstrip(b"\n")
            conn.sendall(name + b" says " + message + b"\n")
    listener.setblocking(False)
    loop.add_reader(listener, on_accept)


def converse(address: tuple, name: bytes, message: bytes) -> bytes:
    """One whole conversation: a name line, a message line, the answer."""
    with socket.create_connection(address, timeout=10) as client:
        client.sendall(name + b"\n" + message + b"\n")
        return client.recv(1024)


def quick_while_slow(address: tuple, slow_for: float = 1.0) -> Tuple[bytes, float, bytes]:
    """A slow client sends its name, and its message ``slow_for`` s later; meanwhile a
    quick client has a whole conversation. Returns (quick's answer, seconds it took,
    slow's answer)."""
    with socket.create_connection(address, timeout=10) as slow:
        slow.sendall(b"slow\n")                                    # half a conversation...
        rest = threading.Timer(slow_for, slow.sendall, (b"hello\n",))   # ...the rest later
        rest.start()
        try:
            start = time.monotonic()
            reply = converse(address, b"quick", b"hi")
            took = time.monotonic() - start
            return reply, took, slow.recv(1024)
        finally:
            rest.join()


# -- awaitables that park a coroutine on a socket ---------------------------
class ReadyToRead:
    """``await ReadyToRead(sock)`` returns once ``sock`` is readable."""

    events = selectors.EVENT_READ

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def __await__(self) -> Generator["ReadyToRead", None, None]:
        yield self                         # up through every await, out of coro.send()


class ReadyToWrite(ReadyToRead):
    """``await ReadyToWrite(sock)`` returns once ``sock`` is writable."""

    events = selectors.EVENT_WRITE


# -- the blocking calls, parking instead ------------------------------------
async def recv(sock: socket.socket, size: int) -> bytes:
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:            # nothing yet: park until readable
            await ReadyToRead(sock)


async def sendall(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:            # kernel buffer full: park until writable
            await ReadyToWrite(sock)


async def echo(sock: socket.socket) -> None:
    """Step 1's inner loop, parking where it blocked."""
    with sock:
        while True:
            data = await recv(sock, 65536)
            if not data:
                break                      # the client hung up
            await sendall(sock, data)


# -- driving one coroutine by hand ------------------------------------------
def run(coroutine: Coroutine[Any, Any, Any], parks: Optional[List[str]] = None) -> Any:
    """Drive ``coroutine`` to its end; return its result. ``parks`` gets each park."""
    while True:
        try:
            park = coroutine.send(None)    # run until it parks (or returns)
        except StopIteration as end:
            return end.value
        if parks is not None:
            parks.append(type(park).__name__)
        # wait, as a blocking call would, but out here, not in the coroutine
        if park.events == selectors.EVENT_READ:
            select.select([park.sock], [], [])
        else:
            select.select([], [park.sock], [])


def serve(listener: socket.socket, clients: Optional[int] = None) -> None:
    """Accept a client, run its ``echo`` to the end, accept the next: one at a time.
    Returns after ``clients`` clients (None: never)."""
    served = 0
    while clients is None or served < clients:
        conn, _ = listener.accept()
        conn.setblocking(False)
        run(echo(conn))
        served += 1


def wait_for_park(parks: List[str], kind: str, timeout: float) -> None:
    """Poll until ``kind`` is among ``parks`` (or ``timeout`` seconds have passed)."""
    deadline = time.monotonic() + timeout
    while kind not in parks and time.monotonic() < deadline:
        time.sleep(0.001)


def echo_parks(size: int = 1 << 20, timeout: float = 10.0) -> Tuple[int, List[str]]:
    """``run(echo(...))`` for a client that sends ``size`` bytes and reads the echo
    only once the echo has parked on ReadyToWrite. Returns (bytes echoed, the parks).

    Small kernel buffers on both sides make the parks many and the numbers clear.
    """
    with make_server() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(timeout)
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        conn.setblocking(False)
        parks: List[str] = []
        server = threading.Thread(target=run, args=(echo(conn), parks))
        server.start()
        with client:
            wait_for_park(parks, "ReadyToRead", timeout)   # nothing sent yet: recv must park
            sender = threading.Thread(target=client.sendall, args=(bytes(size),))
            sender.start()
            wait_for_park(parks, "ReadyToWrite", timeout)  # we do not read yet: sendall must
            echoed = 0
            while echoed < size:
                data = client.recv(1 << 20)
                if not data:
                    break
                echoed += len(data)
            sender.join()
        server.join()                      # our close: echo's recv gets b"" and returns
    return echoed, parks


def demo() -> None:
    loop = Loop()
    with make_server() as listener:
        blocking_greeter(loop, listener)
        stop = run_in_thread(loop)
        try:
            reply, took, slow_reply = quick_while_slow(listener.getsockname())
        finally:
            stop()
    print(f"a callback that waits: {reply!r} after {took:.2f} s,\n"
          f"  once {slow_reply!r} was sent")
    echoed, parks = echo_parks()
    print(f"run(echo(conn)), {echoed} bytes: parked {parks.count('ReadyToRead')} times "
          f"on ReadyToRead, {parks.count('ReadyToWrite')} on ReadyToWrite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8009)
    parser.add_argument("--demo", action="store_true", help="run the measurements and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"echo on {where(listener)}, one coroutine at a time; Ctrl-C stops", flush=True)
        try:
            serve(listener)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
