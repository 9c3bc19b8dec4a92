"""The types a user's checker sees: misuses at netmux's seams fail mypy, correct code passes.

Each snippet below is a small user module. One mypy run (``mypy.api``, ``--strict``,
netmux found in this checkout, its cache in a temporary directory) checks them all;
each test then compares the errors mypy gave in one snippet with the ones its
``# E: [code]`` comments expect on their lines: none for the snippets that must pass.
"""
from __future__ import annotations

import os
import re
import textwrap
from typing import Dict, Iterator, Set, Tuple

import pytest
from mypy import api as mypy_api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One error line of mypy's output, in a snippet, with its code.
ERROR = re.compile(r"snippet_(?P<snippet>\w+)\.py:(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")

# ----------------------------------------------------------------------
# Misuses: each line marked ``# E: [code]`` must be exactly that error
# ----------------------------------------------------------------------
MUST_FAIL = {
    "write_text": """
        import netmux

        class Shout(netmux.Handler):
            def data_received(self, data: bytes) -> None:
                self.transport.write("text")  # E: [arg-type]
                self.transport.writelines(["a", "b"])  # E: [list-item]
    """,
    "misspelt_method": """
        import netmux

        class Echo(netmux.Handler):
            def data_received(self, data: bytes) -> None:
                self.transport.wrte(b"x")  # E: [attr-defined]
    """,
    "string_port": """
        import netmux

        r = netmux.Reactor()
        netmux.TCPServer(("127.0.0.1", "8007"), netmux.Handler, reactor=r)  # E: [arg-type]
        netmux.UDPServer(("127.0.0.1", "8007"), netmux.DatagramHandler, reactor=r)  # E: [arg-type]
        netmux.connect(("127.0.0.1", "8007"), netmux.Handler, reactor=r)  # E: [arg-type]
        netmux.UnixServer(8007, netmux.Handler, reactor=r)  # E: [arg-type]
    """,
    "connect_result_misused": """
        import netmux

        class Client(netmux.Handler):
            def greet(self) -> None:
                self.transport.write(b"hello")

        class Other(netmux.Handler):
            pass

        r = netmux.Reactor()
        client = netmux.connect(("127.0.0.1", 8007), Client, reactor=r)
        client.greeet()  # E: [attr-defined]
        other: Other = netmux.connect(("127.0.0.1", 8007), Client, reactor=r)  # E: [assignment]
        count: int = netmux.connect("/run/app.sock", lambda: Client(), reactor=r)  # E: [assignment]
    """,
    "framed_and_stream_text": """
        import netmux

        class Lines(netmux.LineHandler):
            def line_received(self, line: bytes) -> None:
                self.send_line(line.decode())  # E: [arg-type]

        class Stream(netmux.StreamHandler):
            async def handle(self) -> None:
                data = await self.recv(1024)
                await self.sendall(data.decode())  # E: [arg-type]

        class Datagrams(netmux.DatagramHandler):
            def datagram_received(self, data: bytes, addr: object) -> None:
                self.transport.sendto(data.decode(), addr)  # E: [arg-type]
    """,
    "wrong_override": """
        from typing import Optional

        import netmux

        class Lost(netmux.Handler):
            def connection_lost(self, exc: Optional[ConnectionError]) -> None:  # E: [override]
                pass
    """,
}

# ----------------------------------------------------------------------
# Correct code: no error at all
# ----------------------------------------------------------------------
MUST_PASS = {
    "handler_echo": """
        from typing import Optional

        import netmux

        class Echo(netmux.Handler):
            def data_received(self, data: bytes) -> None:
                self.transport.write(data)
                self.transport.write(bytearray(data))
                self.transport.writelines([data, memoryview(data)])

            def eof_received(self) -> Optional[bool]:
                self.transport.write_eof()
                return True

            def connection_lost(self, exc: Optional[Exception]) -> None:
                if exc is not None:
                    print(exc.args)

        class Deadline(netmux.Handler):
            def connection_made(self, transport: netmux.Transport) -> None:
                super().connection_made(transport)
                self.timer = transport.call_later(5.0, transport.close)
                transport.reactor.call_soon(print, "made")

            def data_received(self, data: bytes) -> None:
                self.timer.cancel()

        with netmux.TCPServer(("127.0.0.1", 0), Echo) as server:
            port: int = server.server_address[1]
        netmux.TCPServer(("::1", 0, 0, 0), Deadline, reactor=netmux.Reactor())
    """,
    "line_handler": """
        import netmux

        class Upper(netmux.LineHandler):
            delimiter = b"\\r\\n"

            def line_received(self, line: bytes) -> None:
                if line == b"quit":
                    self.transport.close()
                else:
                    self.send_line(line.upper())

        class Frames(netmux.FramedHandler):
            framer_factory = netmux.NetstringFramer

            def frame_received(self, frame: bytes) -> None:
                self.send_frame(frame[::-1])

        netmux.TCPServer(("127.0.0.1", 0), Upper, reactor=netmux.Reactor())
    """,
    "stream_handler": """
        import netmux

        class Echo(netmux.StreamHandler):
            async def handle(self) -> None:
                line = await self.readline()
                await self.sendall(line)
                while True:
                    data = await self.recv(1024)
                    if not data:
                        break
                    await self.sendall(data)
                self.transport.write(b"bye")

        netmux.UnixServer("/tmp/netmux-typing.sock", Echo, reactor=netmux.Reactor())
    """,
    "asyncio_protocol": """
        import asyncio
        from typing import Optional

        import netmux

        # Typed as typeshed types asyncio.Protocol: it runs on netmux unchanged.
        class AsyncioEcho(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)

            def eof_received(self) -> Optional[bool]:
                return None

            def connection_lost(self, exc: Optional[Exception]) -> None:
                pass

            def pause_writing(self) -> None:
                pass

            def resume_writing(self) -> None:
                pass

        # The same signatures on a netmux handler override netmux's without complaint.
        class NetmuxEcho(netmux.Handler):
            def connection_lost(self, exc: Optional[Exception]) -> None:
                print("lost:", exc)

            def eof_received(self) -> Optional[bool]:
                return super().eof_received()

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)

        r = netmux.Reactor()
        server = netmux.TCPServer(("127.0.0.1", 0), AsyncioEcho, reactor=r)
        client: AsyncioEcho = netmux.connect(server.server_address, AsyncioEcho, reactor=r)
        netmux.TCPServer(("127.0.0.1", 0), NetmuxEcho, reactor=r)
    """,
    "connect_returns_the_handler": """
        import pathlib
        import socket

        import netmux

        class Client(netmux.Handler):
            def my_method(self) -> int:
                return 1

        class Probe(netmux.DatagramHandler):
            def ping(self) -> None:
                self.transport.sendto(b"ping")

        r = netmux.Reactor()
        h = netmux.connect(("127.0.0.1", 8007), Client, reactor=r, timeout=5.0)
        answer: int = h.my_method()
        netmux.connect("/run/app.sock", lambda: Client(), reactor=r).my_method()
        netmux.connect(pathlib.Path("/run/app.sock"), Client, reactor=r).my_method()
        netmux.connect(("::1", 8007, 0, 2), Client, reactor=r).my_method()
        left, right = socket.socketpair()
        netmux.connect_socket(left, Client, reactor=r).my_method()
        netmux.open_datagram(("127.0.0.1", 8007), Probe, reactor=r).ping()
    """,
    "transports_honour_the_interface": """
        from typing import List

        import netmux
        from netmux.testing import MemoryTransport

        def every_one(tcp: netmux.TCPTransport, layer: netmux.CountingLayer,
                      memory: MemoryTransport) -> List[netmux.Transport]:
            return [tcp, layer, memory]
    """,
}


def _expected(source: str) -> Set[Tuple[int, str]]:
    """``(line, code)`` of every ``# E: [code]`` comment in ``source``."""
    return {(number, code)
            for number, line in enumerate(source.splitlines(), 1)
            for code in re.findall(r"# E: \[([a-z-]+)\]", line)}


def _sources() -> Iterator[Tuple[str, str]]:
    for name, source in {**MUST_FAIL, **MUST_PASS}.items():
        yield name, textwrap.dedent(source).lstrip("\n")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Set[Tuple[int, str]]]:
    """One mypy run over every snippet: ``{snippet: {(line, code), ...}}``."""
    directory = tmp_path_factory.mktemp("typing")
    paths = []
    for name, source in _sources():
        path = directory / f"snippet_{name}.py"
        path.write_text(source)
        paths.append(str(path))
    config = directory / "mypy.ini"
    # mypy_path first: this checkout's netmux, not an installed one. Its own errors are
    # not the users' (CI's mypy step checks netmux itself): silenced, so that an older
    # mypy on the oldest interpreter judges the snippets alone.
    config.write_text(f"[mypy]\nmypy_path = {ROOT}\nstrict = True\n\n"
                      "[mypy-netmux.*]\nignore_errors = True\n")
    stdout, stderr, _ = mypy_api.run(["--config-file", str(config), "--cache-dir",
                                      str(directory / "cache"), "--show-error-codes",
                                      "--no-error-summary", *paths])
    assert not stderr, stderr
    errors: Dict[str, Set[Tuple[int, str]]] = {name: set() for name, _ in _sources()}
    for line in stdout.splitlines():
        if ": error: " in line:
            match = ERROR.search(line)
            assert match, f"an error outside the snippets, or without a code:\n{stdout}"
            errors[match["snippet"]].add((int(match["line"]), match["code"]))
    return errors


@pytest.mark.parametrize("name", sorted(MUST_FAIL))
def test_a_misuse_at_a_seam_fails_mypy_with_the_expected_error(name, mypy_errors):
    expected = _expected(textwrap.dedent(MUST_FAIL[name]).lstrip("\n"))
    assert expected, "a misuse snippet names the errors it expects"
    assert mypy_errors[name] == expected


@pytest.mark.parametrize("name", sorted(MUST_PASS))
def test_correct_code_passes_mypy_strict(name, mypy_errors):
    assert mypy_errors[name] == set()
