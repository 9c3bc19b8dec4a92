"""netmux line echo: a LineHandler that sends every line back (the delimiter kept)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from _util import port_arg, raise_nofile, ready  # noqa: E402

import netmux  # noqa: E402


class Echo(netmux.LineHandler):
    def line_received(self, line):
        self.send_line(line)


raise_nofile()
server = netmux.TCPServer(("127.0.0.1", port_arg()), Echo, backlog=4096)
ready(server.server_address[1])
server.serve_forever()
