"""uvloop line echo: the asyncio streams line echo on uvloop's libuv loop.

Optional: needs `pip install uvloop` (or the `bench` extra: pip install -e .[bench]).
"""
import asyncio

import uvloop

from _util import raise_nofile
from asyncio_line_echo import main

if __name__ == "__main__":
    raise_nofile()
    uvloop.install()
    asyncio.run(main())
