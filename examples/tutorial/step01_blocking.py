"""Step 1: the blocking echo loop of Python's socket documentation.

    python examples/tutorial/step01_blocking.py            # serve on 127.0.0.1:8001
    python examples/tutorial/step01_blocking.py --demo     # two clients; the second waits

``serve`` is the loop of the echo server in the ``socket`` module's
documentation (its "Example" section): accept one connection, then
``recv``/``sendall`` on it until the client hangs up, then accept the next.
It is correct, and it serves exactly one client at a time: ``demo`` times a
second client that connects while the first one is still connected.
"""
from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Optional


def make_server(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0: the kernel picks a free one)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen()
    return listener


def where(listener: socket.socket) -> str:
    """The address a listening socket serves on, as host:port (what nc takes)."""
    host, port = listener.getsockname()[:2]
    return f"{host}:{port}"


def serve(listener: socket.socket, clients: Optional[int] = None) -> None:
    """Echo each client in turn; return after ``clients`` clients (None: forever)."""
    served = 0
    while clients is None or served < clients:
        conn, address = listener.accept()      # blocks until a client connects
        with conn:
            while True:
                data = conn.recv(1024)         # blocks until this client sends
                if not data:
                    break                      # the client hung up
                conn.sendall(data)
        served += 1


def round_trip(address: tuple, message: bytes, timeout: float = 10.0) -> float:
    """Connect, send ``message``, wait for its echo; return the seconds it took."""
    start = time.monotonic()
    with socket.create_connection(address, timeout=timeout) as client:
        client.sendall(message)
        assert client.recv(1024) == message
    return time.monotonic() - start


def demo(hold: float = 1.0) -> None:
    """The first client stays connected ``hold`` seconds; time the second one."""
    with make_server() as listener:
        server = threading.Thread(target=serve, args=(listener, 2))
        server.start()
        address = listener.getsockname()
        first = socket.create_connection(address, timeout=10)
        first.sendall(b"first")
        assert first.recv(1024) == b"first"    # the server is now busy with `first`
        threading.Timer(hold, first.close).start()
        waited = round_trip(address, b"second")
        server.join()
    print(f"the first client stayed connected {hold:.1f} s; "
          f"the second waited {waited:.2f} s for its echo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--demo", action="store_true", help="run the two-client measurement and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"echo on {where(listener)}, one client at a time; Ctrl-C stops", flush=True)
        try:
            serve(listener)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
