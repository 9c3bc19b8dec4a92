"""Step 12: the same servers on netmux. Steps 1-11, in a library.

    python examples/tutorial/step12_netmux.py            # the greeter on 127.0.0.1:8012
    python examples/tutorial/step12_netmux.py --demo     # every server, with its own clients

It imports netmux: run it after ``pip install .``, or from the repository's
root with ``PYTHONPATH=.``. The echo of steps 1-6 is a ``netmux.Handler``
with one method. Step 11's conversation is written twice: as callbacks on a
``netmux.LineHandler`` (step 7's framer, and the state in an attribute), and
as three straight lines in a ``netmux.StreamHandler`` (steps 9-11's
coroutines and tasks). The loop, the buffers, the backpressure, the framer,
the timers and the tasks are netmux's.

What step 11's hand-rolled loop still lacks shows up as soon as a client
misbehaves. ``demo`` measures one thing: a client that connects and says
nothing holds step 11's greeter (a socket and a parked task) forever, while
``TCPServer(idle_timeout=...)`` closes it; each such client costs a file
descriptor, and a server that keeps them runs out (EMFILE).
"""
from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Any, Callable, Optional, Tuple

import netmux


# -- the servers --------------------------------------------------------------
class Echo(netmux.Handler):
    """Steps 1-6: the reactor, the buffers and the backpressure are the library's."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class LineGreeter(netmux.LineHandler):
    """Step 11's conversation as callbacks: a line at a time, state in an attribute."""

    name: Optional[bytes] = None

    def line_received(self, line: bytes) -> None:
        if self.name is None:
            self.name = line
        else:
            self.send_line(self.name + b" says " + line)
            self.transport.close()


class StreamGreeter(netmux.StreamHandler):
    """Step 11's conversation as a coroutine: three straight lines again."""

    async def handle(self) -> None:
        name = (await self.readline()).rstrip(b"\n")
        message = (await self.readline()).rstrip(b"\n")
        await self.sendall(name + b" says " + message + b"\n")


# -- running one in a thread, as the tests and the demo do ---------------------
def start(factory: Callable[[], Any], **options: Any) -> Tuple[Tuple[str, int], Callable[[], None]]:
    """A TCPServer on a free port, served by a thread; returns (address, stop)."""
    server = netmux.TCPServer(("127.0.0.1", 0), factory, **options)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()

    def stop() -> None:
        server.shutdown()            # thread-safe: wakes the reactor at once
        thread.join()
        server.server_close()        # every connection_lost has run when it returns
    return server.server_address, stop


def converse(address: Tuple[str, int], name: bytes, message: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as client:
        client.sendall(name + b"\n" + message + b"\n")
        return client.recv(1024)


def closed_within(address: Tuple[str, int], wait: float) -> Optional[float]:
    """Connect, say nothing: seconds until the server closed us, None if it had not after ``wait``."""
    with socket.create_connection(address, timeout=10) as client:
        client.settimeout(wait)
        start_time = time.monotonic()
        try:
            if client.recv(1) == b"":
                return time.monotonic() - start_time
        except socket.timeout:
            pass
        return None


def demo() -> None:
    import step10_tasks as step10
    import step11_conversations as step11

    address, stop = start(Echo)
    try:
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"hello")
            print(f"Echo (netmux.Handler): {client.recv(1024)!r}")
    finally:
        stop()
    for greeter in (LineGreeter, StreamGreeter):
        address, stop = start(greeter)
        try:
            with socket.create_connection(address, timeout=10) as slow:
                slow.sendall(b"slow\n")                          # half a conversation
                begun = time.monotonic()
                reply = converse(address, b"quick", b"hi")
                took = time.monotonic() - begun
                slow.sendall(b"hello\n")
                slow_reply = slow.recv(1024)
        finally:
            stop()
        print(f"{greeter.__name__}: {reply!r} after {took:.2f} s, then {slow_reply!r}")

    address, stop = step10.start(step11.greeter)
    try:
        held = closed_within(address, 1.0)
    finally:
        stop()
    print("a silent client on step 11's greeter: " +
          ("still connected after 1.0 s" if held is None else f"closed after {held:.2f} s"))
    address, stop = start(StreamGreeter, idle_timeout=0.5)
    try:
        closed = closed_within(address, 5.0)
    finally:
        stop()
    print("a silent client on netmux, idle_timeout=0.5: " +
          ("still connected after 5.0 s" if closed is None else f"closed after {closed:.2f} s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="run every server against its own clients")
    parser.add_argument("--port", type=int, default=8012)
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with netmux.TCPServer(("127.0.0.1", args.port), StreamGreeter, idle_timeout=60) as server:
        host, port = server.server_address[:2]
        print(f"greeter on {host}:{port}: send a name line, then a message line; Ctrl-C stops",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass                     # leaving the with block closes the server and its connections


if __name__ == "__main__":
    main()
