"""Step 6: backpressure. A client that sends and never reads must not cost unbounded memory.

    python examples/tutorial/step06_backpressure.py            # serve on 127.0.0.1:8006
    python examples/tutorial/step06_backpressure.py --demo     # a non-reading peer, both servers

Step 5 never loses a byte, but it keeps every byte the kernel does not take:
a peer that sends 32 MiB and reads none of its echo leaves 32 MiB in the
server's buffer, and a thousand such peers exhaust the machine. The fix is the
one every event loop uses: when a connection's buffer rises above a high-water
mark, stop *reading* from that peer (unwatch EVENT_READ); when the buffer
drains to the low-water mark, read again. While we do not read, the kernel's
receive buffer fills and TCP tells the peer to stop sending: the slow reader
slows its own writer, and the server holds at most high water plus one read.
"""
from __future__ import annotations

import argparse
import select
import signal
import socket
from step01_blocking import make_server, where
from step05_buffers import Connection, Server, serving

HIGH_WATER = 64 * 1024             # pause reading above this many buffered bytes
LOW_WATER = HIGH_WATER // 4        # resume at or below this


class BoundedConnection(Connection):
    """Step 5's connection, which stops reading while its buffer is above high water."""

    def update(self) -> None:
        if self.reading and len(self.buffer) > HIGH_WATER:
            self.reading = False           # pause: the peer's own TCP window will fill
        elif not self.reading and len(self.buffer) <= LOW_WATER:
            self.reading = True            # resume
        super().update()


class BoundedServer(Server):
    connection_class = BoundedConnection


def flood_without_reading(address: tuple, size: int, stall: float = 1.0) -> int:
    """Send up to ``size`` bytes and read nothing; return how many the server took.

    Stops early once the server has taken nothing for ``stall`` seconds (it has
    stopped reading). Small kernel buffers on our side keep the numbers clear.
    """
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.connect(address)
        client.setblocking(False)
        chunk, sent = memoryview(bytes(1 << 20)), 0
        while sent < size:
            _, writable, _ = select.select([], [client], [], stall)
            if not writable:
                break                      # the server stopped taking bytes: backpressure
            try:
                sent += client.send(chunk[:size - sent])
            except BlockingIOError:
                pass
        return sent


def peak_buffer(server_class: type, size: int) -> tuple:
    """Flood a ``server_class`` server; return (bytes it took, its largest buffer)."""
    with make_server() as listener:
        server = server_class(listener)
        stop = serving(server.serve)
        try:
            sent = flood_without_reading(listener.getsockname(), size)
            peak = server.peak
        finally:
            stop()
    return sent, peak


def demo(size: int = 32 << 20) -> None:
    for name, server_class in (("step 5", Server), ("step 6", BoundedServer)):
        sent, peak = peak_buffer(server_class, size)
        print(f"{name}: the non-reading peer got {sent / 2**20:.1f} MiB in; "
              f"the server's buffer peaked at {peak / 2**20:.2f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument("--demo", action="store_true", help="flood both servers and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    with make_server(port=args.port) as listener:
        print(f"echo on {where(listener)}, memory-bounded; Ctrl-C stops", flush=True)
        # Ctrl-C sets a flag that the loop reads between turns: a KeyboardInterrupt
        # could land in the middle of closing a connection and leave it half closed.
        stopping: list = []
        signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
        BoundedServer(listener).serve(stop=lambda: bool(stopping))


if __name__ == "__main__":
    main()
