"""Step 11: a conversation in straight lines. Step 7's framer behind an awaiting readline.

    python examples/tutorial/step11_conversations.py            # the greeter on 127.0.0.1:8011
    python examples/tutorial/step11_conversations.py --demo     # step 9's blocking callback, then this

Step 10's echo reads whatever bytes arrive. A conversation reads *lines*, and
step 7 showed that ``recv`` chunks are not lines. ``LineReader`` puts step 7's
``LineFramer`` behind an ``await reader.readline()``: it parks on the socket
until the framer has a whole line. With it, step 9's conversation (a name, a
message, the answer) is three straight lines again, and step 10's tasks serve
every client while one of them is half-way through.
"""
from __future__ import annotations

import argparse
import socket
from collections import deque
from typing import Deque

from step01_blocking import make_server, where
from step07_framing import LineFramer
from step08_timers import Loop, run_in_thread
from step09_coroutines import blocking_greeter, quick_while_slow, recv, sendall
from step10_tasks import Task, accept_forever, start


class LineReader:
    """Whole lines from a socket: step 7's framer, with an awaiting ``readline``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.framer = sock, LineFramer()
        self.lines: Deque[bytes] = deque()

    async def readline(self) -> bytes:
        """The next line without its b"\\n"; b"" at EOF."""
        while not self.lines:
            data = await recv(self.sock, 4096)
            if not data:
                return b""
            self.lines.extend(self.framer.feed(data))
        return self.lines.popleft()


async def greeter(sock: socket.socket) -> None:
    with sock:
        reader = LineReader(sock)
        name = await reader.readline()
        message = await reader.readline()
        await sendall(sock, name + b" says " + message + b"\n")


def demo() -> None:
    loop = Loop()
    with make_server() as listener:
        blocking_greeter(loop, listener)
        stop = run_in_thread(loop)
        try:
            reply, took, slow_reply = quick_while_slow(listener.getsockname())
        finally:
            stop()
    print(f"step 9's blocking callback: {reply!r} after {took:.2f} s, once {slow_reply!r}")
    address, stop = start(greeter)
    try:
        reply, took, slow_reply = quick_while_slow(address)
    finally:
        stop()
    print(f"coroutines on tasks: {reply!r} after {took * 1000:.1f} ms, before {slow_reply!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--demo", action="store_true", help="run both greeters and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    loop = Loop()
    with make_server(port=args.port) as listener:
        Task(loop, accept_forever(loop, listener, greeter))
        print(f"greeter on {where(listener)}: send a name line, then a message line; Ctrl-C stops",
              flush=True)
        try:
            loop.run()
        except KeyboardInterrupt:
            pass
        finally:
            loop.close()


if __name__ == "__main__":
    main()
