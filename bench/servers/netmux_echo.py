"""netmux echo server: the Handler from the README, on a TCPServer."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from _util import port_arg, raise_nofile, ready  # noqa: E402

import netmux  # noqa: E402


class Echo(netmux.Handler):
    def data_received(self, data):
        self.transport.write(data)


raise_nofile()
server = netmux.TCPServer(("127.0.0.1", port_arg()), Echo, backlog=4096)
ready(server.server_address[1])
server.serve_forever()
