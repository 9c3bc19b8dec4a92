"""A framed server of docs/framing.md: each length-prefixed message comes back reversed.

    python examples/length_prefixed.py --demo   # serve, send frames in pieces, exit

``FramedHandler`` with a ``LengthPrefixFramer("!H")``: two bytes of length
(network order), then the payload; ``send_frame`` adds the prefix for you.
"""
import socket
import sys
import threading

import netmux


class Messages(netmux.FramedHandler):
    framer_factory = lambda: netmux.LengthPrefixFramer("!H", max_length=4096)

    def frame_received(self, frame):
        self.send_frame(frame[::-1])        # the length prefix is added for you


def demo() -> None:
    """Two frames sent cut in odd places; both come back whole and reversed."""
    framer = netmux.LengthPrefixFramer("!H")
    stream = framer.encode(b"hello") + framer.encode(b"framed world")
    with netmux.TCPServer(("127.0.0.1", 0), Messages) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            with socket.create_connection(server.server_address, timeout=5) as client:
                for start in range(0, len(stream), 3):         # three bytes at a time
                    client.sendall(stream[start:start + 3])
                replies = []
                while len(replies) < 2:
                    replies += framer.feed(client.recv(4096))
        finally:
            server.shutdown()
            thread.join()
    print(replies)


if __name__ == "__main__":
    if "--demo" not in sys.argv[1:]:
        sys.exit("usage: python examples/length_prefixed.py --demo")
    demo()
