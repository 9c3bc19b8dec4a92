"""asyncio line echo on the streams API: readline(), write, drain."""
import asyncio

from _util import port_arg, raise_nofile, ready


async def handle(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main():
    # limit: a 64 KiB line (the bench's largest message) must fit, as for LineHandler
    server = await asyncio.start_server(handle, "127.0.0.1", port_arg(), backlog=4096,
                                        limit=1 << 17)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    raise_nofile()
    asyncio.run(main())
