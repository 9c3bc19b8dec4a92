"""Step 4: one thread, many clients: a multiplexing echo on ``selectors``.

    python examples/tutorial/step04_selectors.py            # serve on 127.0.0.1:8004
    python examples/tutorial/step04_selectors.py --demo     # two clients at once, one thread

Non-blocking sockets never wait, so one thread can hold them all; it only needs
to know which one has something to do. ``selectors.DefaultSelector`` (epoll on
Linux) answers that: register each socket with a callback, ``select()`` sleeps
until some are ready, and the loop calls their callbacks. No socket call here
ever blocks, because each one is made only when the selector said it is ready.

This echo is short and right for small messages. Its ``send`` is not: step 5
shows what it loses.
"""
from __future__ import annotations

import argparse
import selectors
import socket
from typing import Callable

from step01_blocking import make_server, round_trip, where


def serve(listener: socket.socket, stop: Callable[[], bool] = lambda: False) -> None:
    """Echo for every client at once until ``stop()`` is true (checked every 0.1 s)."""
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, accept)
    try:
        while not stop():
            for key, events in selector.select(timeout=0.1):
                callback = key.data
                callback(key.fileobj, selector)
    finally:
        for key in list(selector.get_map().values()):
            if key.fileobj is not listener:
                key.fileobj.close()
        selector.close()


def accept(listener: socket.socket, selector: selectors.BaseSelector) -> None:
    conn, address = listener.accept()          # ready: this will not block
    conn.setblocking(False)
    selector.register(conn, selectors.EVENT_READ, echo)


def echo(conn: socket.socket, selector: selectors.BaseSelector) -> None:
    data = conn.recv(4096)                     # ready: returns at once
    if data:
        try:
            conn.send(data)                    # may take only part of data, or none:
        except BlockingIOError:                # the rest is lost (step 5 fixes this)
            pass
    else:
        selector.unregister(conn)              # the client hung up
        conn.close()


def demo() -> None:
    import threading

    done = threading.Event()
    with make_server() as listener:
        server = threading.Thread(target=serve, args=(listener, done.is_set))
        server.start()
        try:
            address = listener.getsockname()
            with socket.create_connection(address, timeout=10) as first:
                first.sendall(b"first")
                assert first.recv(1024) == b"first"
                waited = round_trip(address, b"second")   # while `first` is connected
        finally:
            done.set()
            server.join()
    print(f"one thread, the first client still connected: "
          f"the second's echo took {waited * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8004)
    parser.add_argument("--demo", action="store_true", help="run two clients at once and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"echo on {where(listener)}, every client at once; Ctrl-C stops", flush=True)
        try:
            serve(listener)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
