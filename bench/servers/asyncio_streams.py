"""asyncio echo server on the streams API (StreamReader/StreamWriter)."""
import asyncio

from _util import port_arg, raise_nofile, ready


async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port_arg(), backlog=4096)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    raise_nofile()
    asyncio.run(main())
