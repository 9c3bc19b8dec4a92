"""Step 2: one thread per client, with socketserver's ThreadingTCPServer.

    python examples/tutorial/step02_threads.py                   # serve on 127.0.0.1:8002
    python examples/tutorial/step02_threads.py --demo            # 1,000 idle clients: the cost
    python examples/tutorial/step02_threads.py --demo -n 200

Each connection gets a thread running step 1's loop, so a waiting client no
longer blocks the others. The price is paid per connection, even an idle one:
a thread (an OS task with its own stack) and its memory. ``measure`` opens
``n`` idle connections and reads the process' thread count and memory from
``/proc/self/status`` (Linux).
"""
from __future__ import annotations

import argparse
import socket
import socketserver
import threading
from typing import Dict, List

from step01_blocking import round_trip, where


class EchoHandler(socketserver.BaseRequestHandler):
    """Step 1's inner loop, run in a thread of its own for each connection."""

    def handle(self) -> None:
        while True:
            data = self.request.recv(1024)
            if not data:
                break
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True           # do not keep the process alive for idle clients
    allow_reuse_address = True
    request_queue_size = 1024       # listen backlog: the demo connects 1,000 at once


def make_server(host: str = "127.0.0.1", port: int = 0) -> EchoServer:
    return EchoServer((host, port), EchoHandler)


def process_status() -> Dict[str, int]:
    """Threads, resident memory (VmRSS) and address space (VmSize, KiB) of this process."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("Threads", "VmRSS", "VmSize"):
                fields[name] = int(value.split()[0])
    return fields


def open_idle_clients(address: tuple, n: int) -> List[socket.socket]:
    """``n`` connections, each proven served by one round trip, then left idle."""
    clients = []
    for _ in range(n):
        client = socket.create_connection(address, timeout=10)
        clients.append(client)
        client.sendall(b"x")
        assert client.recv(1) == b"x"          # its thread is running now
    return clients


def measure(server: EchoServer, n: int) -> Dict[str, int]:
    """Open ``n`` idle clients; return how threads and memory grew (then close them)."""
    before = process_status()
    clients = open_idle_clients(server.server_address, n)
    try:
        during = process_status()
    finally:
        for client in clients:
            client.close()
    return {name: during[name] - before[name] for name in before}


def demo(n: int = 1000) -> None:
    server = make_server()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        grown = measure(server, n)
        # Two clients at once now: the second is served while the first is connected.
        with socket.create_connection(server.server_address, timeout=10) as first:
            waited = round_trip(server.server_address, b"second")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    print(f"with a first client connected, the second's echo took {waited * 1000:.1f} ms")
    resident, address_space = grown["VmRSS"], grown["VmSize"]
    print(f"{n} idle connections: +{grown['Threads']} threads, "
          f"+{resident / 1024:.1f} MiB resident ({resident / n:.0f} KiB each),\n"
          f"  +{address_space / 1024:.0f} MiB of address space (stacks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--demo", action="store_true", help="measure n idle connections and exit")
    parser.add_argument("-n", type=int, default=1000, help="connections for --demo (default 1000)")
    args = parser.parse_args()
    if args.demo:
        demo(args.n)
        return
    with make_server(port=args.port) as server:
        print(f"echo on {where(server.socket)}, a thread per client; Ctrl-C stops", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
