"""netmux echo server as a coroutine: the StreamHandler of docs/from-socketserver.md."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from _util import port_arg, raise_nofile, ready  # noqa: E402

import netmux  # noqa: E402


class Echo(netmux.StreamHandler):
    async def handle(self):
        while True:
            data = await self.recv(65536)
            if not data:
                break
            await self.sendall(data)


raise_nofile()
server = netmux.TCPServer(("127.0.0.1", port_arg()), Echo, backlog=4096)
ready(server.server_address[1])
server.serve_forever()
