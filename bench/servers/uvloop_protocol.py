"""uvloop echo server: the asyncio Protocol server on uvloop's libuv loop.

Optional: needs `pip install uvloop` (or the `bench` extra: pip install -e .[bench]).
"""
import asyncio

import uvloop

from _util import port_arg, raise_nofile, ready
from asyncio_protocol import main

if __name__ == "__main__":
    raise_nofile()
    uvloop.install()
    asyncio.run(main())
