"""Step 5: a buffer per connection, and watching for writability only while it holds bytes.

    python examples/tutorial/step05_buffers.py            # serve on 127.0.0.1:8005
    python examples/tutorial/step05_buffers.py --demo     # 16 MiB through step 4, then step 5

Step 4's ``send`` ignores what the kernel did not take. A client that sends a
lot before it reads fills the server's socket buffer, and the rest of the echo
is lost. Here every connection keeps what ``send`` did not take in its own
``bytearray`` and asks the selector for EVENT_WRITE, so the loop hears when
the socket can take more. Only while the buffer holds bytes: a socket with
room in its kernel buffer is *always* writable, so watching it all the time
would wake ``select`` at once on every turn and spin the CPU
(``Server(always_writable=True)`` does that, to measure it).
"""
from __future__ import annotations

import argparse
import selectors
import signal
import socket
import threading
import time
from typing import Callable, List

from step01_blocking import make_server, where

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Connection:
    """One client: its socket, its output buffer, and what the selector watches."""

    def __init__(self, server: "Server", sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        self.buffer = bytearray()          # bytes written but not yet taken by the kernel
        self.reading = True                # step 6 turns this off to apply backpressure
        self.closing = False               # the client hung up: close once flushed
        self.watching = 0                  # what the selector watches now (nothing yet)
        self.update()

    def on_ready(self, events: int) -> None:
        try:
            if events & READ:
                self.read()
            if events & WRITE and self.sock.fileno() >= 0:
                self.flush()
        except ConnectionError:            # reset by the peer: this connection is over
            self.closing = True
            self.buffer.clear()
            self.update()

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return                         # a spurious wake-up: the selector will say again
        if data:
            self.data_received(data)
        else:
            self.closing = True
            self.update()

    def data_received(self, data: bytes) -> None:
        """What the server does with what arrived: echo it (step 7 answers lines)."""
        self.write(data)

    def write(self, data: bytes) -> None:
        """Send at once if nothing is queued; keep what the kernel did not take."""
        if not self.buffer:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            data = data[sent:]
        self.buffer += data
        self.server.peak = max(self.server.peak, len(self.buffer))
        self.update()

    def flush(self) -> None:
        """The socket is writable: hand the kernel as much of the buffer as it takes."""
        if self.buffer:
            try:
                sent = self.sock.send(self.buffer)
            except BlockingIOError:
                return
            del self.buffer[:sent]
        self.update()

    def update(self) -> None:
        """Watch for reading unless done, and for writing only while bytes are buffered."""
        if self.closing and not self.buffer:
            self.server.forget(self)
            return
        wanted = READ if self.reading and not self.closing else 0
        if self.buffer or self.server.always_writable:
            wanted |= WRITE
        if wanted != self.watching:
            self.server.watch(self.sock, self.watching, wanted, self)
            self.watching = wanted


class Server:
    """Step 4's loop, with a Connection object per client instead of a bare socket."""

    connection_class = Connection

    def __init__(self, listener: socket.socket, always_writable: bool = False) -> None:
        self.listener = listener
        self.always_writable = always_writable
        self.connections: List[Connection] = []
        self.peak = 0                      # the most any connection's buffer held (step 6)
        self.selector = selectors.DefaultSelector()
        listener.setblocking(False)
        self.selector.register(listener, READ, None)

    def run_once(self, timeout: float) -> int:
        """One ``select`` and its callbacks; returns how many sockets were ready."""
        ready = self.selector.select(timeout)
        for key, events in ready:
            if key.data is None:
                self.accept()
            else:
                key.data.on_ready(events)
        return len(ready)

    def serve(self, stop: Callable[[], bool] = lambda: False) -> None:
        try:
            while not stop():
                self.run_once(0.1)
        finally:
            self.close()

    def accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        self.connections.append(self.connection_class(self, sock))

    def watch(self, sock: socket.socket, old: int, new: int, connection: Connection) -> None:
        if not old:
            self.selector.register(sock, new, connection)
        elif not new:
            self.selector.unregister(sock)
        else:
            self.selector.modify(sock, new, connection)

    def forget(self, connection: Connection) -> None:
        if connection.watching:
            self.selector.unregister(connection.sock)
        connection.sock.close()
        self.connections.remove(connection)

    def close(self) -> None:
        for connection in list(self.connections):
            connection.closing = True
            connection.buffer.clear()
            connection.update()
        self.selector.close()


def echo_bulk(address: tuple, size: int, timeout: float = 20.0) -> int:
    """Send ``size`` bytes before reading any; return how many came back before EOF.

    A small receive buffer on our side makes the server's kernel fill up sooner.
    """
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(timeout)
        client.connect(address)
        client.sendall(bytes(size))
        client.shutdown(socket.SHUT_WR)
        received = 0
        while True:
            data = client.recv(1 << 20)
            if not data:
                return received
            received += len(data)


def serving(run: Callable[[Callable[[], bool]], None]) -> Callable[[], None]:
    """Start ``run(stop)`` in a thread (it returns once ``stop()`` is true); return what stops it."""
    done = threading.Event()
    thread = threading.Thread(target=run, args=(done.is_set,))
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()
    return stop


def turns_per_second(always_writable: bool, seconds: float = 0.2) -> float:
    """How often the loop wakes up with one idle client connected."""
    with make_server() as listener, socket.create_connection(listener.getsockname()):
        server = Server(listener, always_writable)
        try:
            server.run_once(1.0)                       # accept the client
            turns, start = 0, time.monotonic()
            while time.monotonic() - start < seconds:
                server.run_once(0.1)
                turns += 1
        finally:
            server.close()
    return turns / seconds


def demo(size: int = 16 << 20) -> None:
    import step04_selectors

    for name in ("step 4", "step 5"):
        with make_server() as listener:
            if name == "step 4":
                stop = serving(lambda stop: step04_selectors.serve(listener, stop))
            else:
                stop = serving(Server(listener).serve)
            try:
                received = echo_bulk(listener.getsockname(), size)
            finally:
                stop()
        print(f"{name}: sent {size} bytes before reading, got {received} back")
    print(f"one idle client, loop turns per second: write always watched "
          f"{turns_per_second(True):,.0f},\n"
          f"  only while buffered {turns_per_second(False):,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8005)
    parser.add_argument("--demo", action="store_true", help="run the measurements and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"echo on {where(listener)}; Ctrl-C stops", flush=True)
        # Ctrl-C sets a flag that the loop reads between turns: a KeyboardInterrupt
        # could land in the middle of closing a connection and leave it half closed.
        stopping: list = []
        signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
        Server(listener).serve(stop=lambda: bool(stopping))


if __name__ == "__main__":
    main()
