"""TLS echo servers for bench/tls.py: python tls_echo.py KIND PORT CERT KEY.

KIND: netmux (TCPServer(ssl=...)), asyncio (loop.create_server(ssl=...)) or uvloop
(the same on uvloop's loop). Prints 'READY <port>' once listening.
"""
import asyncio
import os
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from _util import raise_nofile, ready  # noqa: E402

import netmux  # noqa: E402


class Echo(netmux.Handler):
    def data_received(self, data):
        self.transport.write(data)


class AsyncioEcho(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve_asyncio(context, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AsyncioEcho, "127.0.0.1", port, backlog=4096, ssl=context)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main():
    kind, port, certfile, keyfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    raise_nofile()
    if kind == "netmux":
        server = netmux.TCPServer(("127.0.0.1", port), Echo, backlog=4096, ssl=context)
        ready(server.server_address[1])
        server.serve_forever()
        return
    if kind == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(serve_asyncio(context, port))


if __name__ == "__main__":
    main()
