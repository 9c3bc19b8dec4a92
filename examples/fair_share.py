"""Fairness: a handler that does a turn's share of its work, then yields.

    python examples/fair_share.py          # serve on port 8007: a line "N" gets N*N
    python examples/fair_share.py --demo   # one client pipelines 20,000 lines, another
                                           # is answered meanwhile

A handler that parses its own buffer (a Redis or HTTP server does) may find
thousands of pipelined requests in one read. Answering them all before
returning would make every other client wait; so it answers a share, calls
``transport.yield_turn`` and returns: reading stops, the reactor serves the
others, and the continuation goes on next turn.
"""
import socket
import sys
import threading
import time

import netmux


class Squares(netmux.Handler):
    """Answers each line holding a number with its square, at most 32 lines a turn."""

    share = 32

    def connection_made(self, transport):
        super().connection_made(transport)
        self.buffer = bytearray()
        self.waiting = False              # a continuation is queued: start no other

    def data_received(self, data):
        self.buffer += data
        if not self.waiting:
            self.answer_some()

    def answer_some(self):
        self.waiting = False
        replies = []
        for _ in range(self.share):
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            number = int(self.buffer[:end] or 0)
            del self.buffer[:end + 1]
            replies.append(b"%d\n" % (number * number))
        self.transport.write(b"".join(replies))
        if self.buffer.find(b"\n") >= 0:  # more than a share: go on next turn
            self.waiting = True
            self.transport.yield_turn(self.answer_some)


def demo() -> None:
    with netmux.TCPServer(("127.0.0.1", 0), Squares) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            address = server.server_address
            with socket.create_connection(address, timeout=10) as busy, \
                    socket.create_connection(address, timeout=10) as polite:
                busy.sendall(b"".join(b"%d\n" % n for n in range(20_000)))
                started = time.perf_counter()
                polite.sendall(b"12\n")
                answer = polite.recv(100)
                waited = time.perf_counter() - started
                received = 0
                while received < 20_000:
                    received += busy.recv(1 << 20).count(b"\n")
            print(f"the polite client got {answer.decode().strip()} after "
                  f"{waited * 1e3:.1f} ms while the busy one pipelined 20,000 lines; "
                  f"all {received} answered")
        finally:
            server.shutdown()
            thread.join()


def main() -> None:
    if "--demo" in sys.argv[1:]:
        demo()
        return
    try:
        netmux.TCPServer(("127.0.0.1", 8007), Squares).serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
