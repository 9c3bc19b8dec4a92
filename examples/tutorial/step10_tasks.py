"""Step 10: tasks. Many coroutines on one loop, each parked on its own socket.

    python examples/tutorial/step10_tasks.py            # echo on 127.0.0.1:8010, every client at once
    python examples/tutorial/step10_tasks.py --demo     # step 9's run() against tasks, two clients

Step 9's ``run`` waits in ``select`` for the one coroutine it drives, so a
second client waits for the first to hang up. A ``Task`` drives a coroutine
on step 8's loop instead: when the coroutine parks on a socket, the task
hands the loop a callback (``add_reader`` or ``add_writer``) that resumes it,
and returns. The loop sleeps in one ``select`` for every parked coroutine at
once, and resumes whichever is ready.

``accept_forever`` is itself a coroutine: it parks on the listening socket,
and starts a Task per client. ``Task.cancel`` closes a parked coroutine
(its ``finally`` blocks run), and an exception that escapes a coroutine is
kept on its task instead of ending the loop.
"""
from __future__ import annotations

import argparse
import selectors
import socket
import time
from typing import Any, Callable, Coroutine, Optional, Tuple

from step01_blocking import make_server, where
from step08_timers import Loop, run_in_thread
from step09_coroutines import ReadyToRead, echo


class Task:
    """Runs one coroutine on a Loop: each park registers a callback that resumes it."""

    def __init__(self, loop: Loop, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.loop, self.coroutine = loop, coroutine
        self.parked: Optional[socket.socket] = None
        self.done = False
        self.exception: Optional[BaseException] = None
        loop.call_soon(self.step)

    def step(self) -> None:
        self.parked = None
        try:
            # run until the next park (or the end)
            park = self.coroutine.send(None)
        except StopIteration:
            self.done = True
            return
        except Exception as exc:
            # the coroutine failed: record, do not crash
            self.done, self.exception = True, exc
            return
        self.parked = park.sock
        if park.events == selectors.EVENT_READ:
            self.loop.add_reader(park.sock, self.resume)
        else:
            self.loop.add_writer(park.sock, self.resume)

    def resume(self) -> None:
        self.loop.remove(self.parked)              # one park, one wake-up
        self.step()

    def cancel(self) -> None:
        """Raise GeneratorExit at the coroutine's await: its ``finally`` blocks run."""
        if self.parked is not None:
            self.loop.remove(self.parked)
            self.parked = None
        self.coroutine.close()
        self.done = True


async def accept_forever(
        loop: Loop, listener: socket.socket,
        handle: Callable[[socket.socket], Coroutine[Any, Any, None]]) -> None:
    """Park on the listener; start a Task running ``handle(conn)`` for each client."""
    listener.setblocking(False)
    while True:
        await ReadyToRead(listener)
        conn, _ = listener.accept()
        conn.setblocking(False)
        Task(loop, handle(conn))


def start(handle: Callable[[socket.socket], Coroutine[Any, Any, None]],
          port: int = 0) -> Tuple[Tuple[str, int], Callable[[], None]]:
    """``accept_forever`` with ``handle`` on a Loop in a thread; returns (address, stop)."""
    loop = Loop()
    listener = make_server(port=port)
    Task(loop, accept_forever(loop, listener, handle))
    stop_loop = run_in_thread(loop)

    def stop() -> None:
        stop_loop()                        # closes the sockets parked coroutines wait on
        listener.close()
    return listener.getsockname(), stop


def second_while_first(address: Tuple[str, int], hold: float = 1.0) -> float:
    """A first client stays connected ``hold`` s; return the seconds a second one's echo took."""
    with socket.create_connection(address, timeout=10) as first:
        first.sendall(b"first")
        assert first.recv(1024) == b"first"            # being served now
        start_time = time.monotonic()
        with socket.create_connection(address, timeout=10) as second:
            second.settimeout(hold)
            second.sendall(b"second")
            try:
                second.recv(1024)
                return time.monotonic() - start_time
            except socket.timeout:
                pass                                   # not served while `first` is connected
            first.close()
            second.settimeout(10)
            second.recv(1024)
            return time.monotonic() - start_time


def demo() -> None:
    import threading

    import step09_coroutines as step09

    with make_server() as listener:
        server = threading.Thread(target=step09.serve, args=(listener, 2))
        server.start()
        waited = second_while_first(listener.getsockname())
        server.join()
    print(f"step 9's run(), a first client connected 1 s: the second's echo took {waited:.2f} s")
    address, stop = start(echo)
    try:
        waited = second_while_first(address)
    finally:
        stop()
    print(f"step 10's tasks, the first client connected: the second's echo took {waited * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--demo", action="store_true", help="serve two clients both ways and exit")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    loop = Loop()
    with make_server(port=args.port) as listener:
        Task(loop, accept_forever(loop, listener, echo))
        print(f"echo on {where(listener)}, a task per client; Ctrl-C stops", flush=True)
        try:
            loop.run()
        except KeyboardInterrupt:
            pass
        finally:
            loop.close()


if __name__ == "__main__":
    main()
