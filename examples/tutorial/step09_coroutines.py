"""Step 9: coroutines on the loop. Straight-line code that waits without blocking.

    python examples/tutorial/step09_coroutines.py --demo

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
* ``Task`` drives one coroutine: ``send()`` runs it to its next park, and the
  loop's reader callback ``send()``s again when the socket is ready;
* ``recv``, ``sendall`` and ``LineReader.readline`` are the ordinary blocking
  calls, rewritten to await instead of block.

The conversation is again three straight lines (``greeter``), and the loop
serves everyone while it waits.
"""
from __future__ import annotations

import argparse
import selectors
import socket
import threading
from collections import deque
from typing import Any, Callable, Coroutine, Deque, Generator, Optional

from step07_framing import LineFramer
from step08_timers import Loop


# -- awaitables that park a coroutine on a socket --------------------------
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


class Task:
    """Runs one coroutine on a Loop: each park registers a callback that resumes it."""

    def __init__(self, loop: Loop, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.loop, self.coroutine = loop, coroutine
        self.parked: Optional[socket.socket] = None
        self.done = False
        self.exception: Optional[BaseException] = None
        loop.call_soon(self.step)

    def step(self) -> None:
        self.parked = None
        try:
            park = self.coroutine.send(None)       # run until the next park (or the end)
        except StopIteration:
            self.done = True
            return
        except Exception as exc:                   # the coroutine failed: record, do not crash
            self.done, self.exception = True, exc
            return
        self.parked = park.sock
        self.loop.selector.register(park.sock, park.events, self.resume)

    def resume(self) -> None:
        self.loop.remove(self.parked)
        self.step()

    def cancel(self) -> None:
        """Raise GeneratorExit at the coroutine's await, so its ``finally`` blocks run."""
        if self.parked is not None:
            self.loop.remove(self.parked)
            self.parked = None
        self.coroutine.close()
        self.done = True


# -- the blocking calls, awaiting instead ----------------------------------
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


class LineReader:
    """Whole lines from a socket: step 7's framer, with an awaiting ``readline``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.framer = sock, LineFramer()
        self.lines: Deque[bytes] = deque()

    async def readline(self) -> bytes:
        """The next line without its b"\\n"; b"" at EOF."""
        while not self.lines:
            data = await recv(self.sock, 4096)
            if not data:
                return b""
            self.lines.extend(self.framer.feed(data))
        return self.lines.popleft()


# -- the conversation, twice -----------------------------------------------
async def greeter(sock: socket.socket) -> None:
    with sock:
        reader = LineReader(sock)
        name = await reader.readline()
        message = await reader.readline()
        await sendall(sock, name + b" says " + message + b"\n")


async def accept_forever(loop: Loop, listener: socket.socket,
                         handle: Callable[[socket.socket], Coroutine[Any, Any, None]]) -> None:
    listener.setblocking(False)
    while True:
        await ReadyToRead(listener)
        conn, _ = listener.accept()
        conn.setblocking(False)
        Task(loop, handle(conn))


def blocking_greeter(loop: Loop, listener: socket.socket) -> None:
    """The same conversation as a plain callback: its reads block the whole loop."""
    def on_accept() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.settimeout(10)            # blocking, so that readline() can wait...
            name = lines.readline().rstrip(b"\n")
            message = lines.readline().rstrip(b"\n")   # ...and nobody else is served meanwhile
            conn.sendall(name + b" says " + message + b"\n")
    listener.setblocking(False)
    loop.add_reader(listener, on_accept)


def start_greeter(blocking: bool) -> tuple:
    """A greeter on a Loop in a thread; returns (address, stop)."""
    loop = Loop()
    listener = socket.create_server(("127.0.0.1", 0))
    if blocking:
        blocking_greeter(loop, listener)
    else:
        Task(loop, accept_forever(loop, listener, greeter))
    thread = threading.Thread(target=loop.run)
    thread.start()

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        for key in list(loop.selector.get_map().values()):
            if key.fileobj is not loop.wake_reader:
                key.fileobj.close()        # sockets parked by unfinished conversations
        loop.close()
        listener.close()
    return listener.getsockname(), stop


def converse(address: tuple, name: bytes, message: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as client:
        client.sendall(name + b"\n" + message + b"\n")
        return client.recv(1024)


def demo() -> None:
    import time

    for blocking in (True, False):
        address, stop = start_greeter(blocking)
        try:
            with socket.create_connection(address, timeout=10) as slow:
                slow.sendall(b"slow\n")                    # half a conversation...
                threading.Timer(1.0, slow.sendall, (b"hello\n",)).start()   # ...the rest in 1 s
                start = time.monotonic()
                reply = converse(address, b"quick", b"hi")
                took = time.monotonic() - start
                slow_reply = slow.recv(1024)
        finally:
            stop()
        kind = "blocking callback" if blocking else "coroutines"
        print(f"{kind}: {reply!r} after {took:.2f} s, while {slow_reply!r} took its time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="run both greeters (the default)")
    parser.parse_args()
    demo()


if __name__ == "__main__":
    main()
