"""Echo servers that exit after a given number of connections have closed.

    python servers.py KIND PORT CONNECTIONS      KIND: netmux, netmux-stream, netmux-line, selectors,
                                                 asyncio, asyncio-streams, uvloop, uvloop-streams

Used by instructions.py under callgrind: each serves one closed-loop run of
client.py and then exits, so the instruction count covers a known number of
messages.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serve_netmux(port, expected, lines=False):
    """The callback echo; ``lines``: as a LineHandler (the client's messages end in \\n)."""
    sys.path.insert(0, ROOT)
    import netmux
    closed = [0]

    class Echo(netmux.Handler):
        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            closed[0] += 1
            if closed[0] == expected:
                server.shutdown()

    class LineEcho(netmux.LineHandler):
        def line_received(self, line):
            self.send_line(line)

        connection_lost = Echo.connection_lost

    server = netmux.TCPServer(("127.0.0.1", port), LineEcho if lines else Echo, backlog=1024)
    print("READY", flush=True)
    server.serve_forever()
    server.server_close()


def serve_netmux_stream(port, expected):
    """The same echo as a coroutine: StreamHandler.handle()."""
    sys.path.insert(0, ROOT)
    import netmux
    closed = [0]

    class Echo(netmux.StreamHandler):
        async def handle(self):
            while True:
                data = await self.recv(65536)
                if not data:
                    break
                await self.sendall(data)

        def connection_lost(self, exc):
            super().connection_lost(exc)
            closed[0] += 1
            if closed[0] == expected:
                server.shutdown()

    server = netmux.TCPServer(("127.0.0.1", port), Echo, backlog=1024)
    print("READY", flush=True)
    server.serve_forever()
    server.server_close()


def serve_selectors(port, expected):
    """The untuned loop: recv, send, nothing else (no buffering, no flow control)."""
    import selectors
    import socket
    selector = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    closed = [0]

    def accept(sock):
        conn, _ = sock.accept()
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ, echo)

    def echo(conn):
        data = conn.recv(262144)
        if data:
            conn.send(data)
        else:
            selector.unregister(conn)
            conn.close()
            closed[0] += 1

    selector.register(listener, selectors.EVENT_READ, accept)
    print("READY", flush=True)
    while closed[0] < expected:
        for key, _ in selector.select():
            key.data(key.fileobj)


def serve_asyncio(port, expected, use_uvloop=False):
    import asyncio
    closed = [0]

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            closed[0] += 1
            if closed[0] == expected:
                done.set_result(None)

    async def main():
        global done
        done = asyncio.get_running_loop().create_future()
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=1024)
        print("READY", flush=True)
        await done
        server.close()

    if use_uvloop:
        import uvloop
        uvloop.install()
    asyncio.run(main())


def serve_asyncio_streams(port, expected, use_uvloop=False):
    import asyncio
    closed = [0]

    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            closed[0] += 1
            if closed[0] == expected:
                done.set_result(None)

    async def main():
        global done
        done = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        print("READY", flush=True)
        await done
        server.close()

    if use_uvloop:
        import uvloop
        uvloop.install()
    asyncio.run(main())


if __name__ == "__main__":
    kind, port, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kind == "netmux":
        serve_netmux(port, expected)
    elif kind == "selectors":
        serve_selectors(port, expected)
    elif kind == "asyncio":
        serve_asyncio(port, expected)
    elif kind == "uvloop":
        serve_asyncio(port, expected, use_uvloop=True)
    elif kind == "netmux-line":
        serve_netmux(port, expected, lines=True)
    elif kind == "netmux-stream":
        serve_netmux_stream(port, expected)
    elif kind == "asyncio-streams":
        serve_asyncio_streams(port, expected)
    elif kind == "uvloop-streams":
        serve_asyncio_streams(port, expected, use_uvloop=True)
    else:
        sys.exit(f"unknown server kind {kind!r}")
