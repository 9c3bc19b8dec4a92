"""asyncio echo server on the Protocol/Transport API (the baseline of the ratios)."""
import asyncio

from _util import port_arg, raise_nofile, ready


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port_arg(), backlog=4096)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    raise_nofile()
    asyncio.run(main())
