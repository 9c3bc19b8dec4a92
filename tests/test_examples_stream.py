"""docs/from-socketserver.md: every code block is a file of examples/, and every file runs here.

Each blocking original and its StreamHandler port (examples/from_socketserver/)
runs as written, as ``__main__``, in a subprocess; only the port it binds is changed (to a
free one on 127.0.0.1, printed first), so the files stay exactly what the page shows.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from conftest import recv_exactly, recv_until_eof

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "from-socketserver.md"

# Binds every socket of the example to a free loopback port, and says which once it listens.
_LAUNCHER = """
import runpy, socket, sys
class _Socket(socket.socket):
    def bind(self, address):
        super().bind(("127.0.0.1", 0))
    def listen(self, *backlog):
        super().listen(*backlog)
        print("PORT", self.getsockname()[1], flush=True)
socket.socket = _Socket
runpy.run_path(sys.argv[1], run_name="__main__")
"""

PAIRS = [("from_socketserver/socketserver_echo.py", "from_socketserver/stream_echo.py"),
         ("from_socketserver/socketserver_lines.py", "from_socketserver/stream_lines.py"),
         ("from_socketserver/socket_echo.py", "from_socketserver/stream_socket_echo.py"),
         ("from_socketserver/socketserver_timeout.py", "from_socketserver/stream_timeout.py")]
# Shown on the page as what not to do, and run here to prove it.
WRONG = ["from_socketserver/stream_timeout_inside.py"]


@contextlib.contextmanager
def run_example(name: str) -> Iterator[Tuple[int, subprocess.Popen, List[bytes]]]:
    """Run examples/<name> as a program; yield (its port, the process, a list that gets
    what it printed on stdout, then on stderr, once it stopped); stop it (Ctrl-C) after."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-W", "error::RuntimeWarning", "-c", _LAUNCHER,
                                str(ROOT / "examples" / name)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output: List[bytes] = []
    try:
        line = process.stdout.readline().decode()
        assert line.startswith("PORT "), (line, process.stderr.read().decode())
        yield int(line.split()[1]), process, output
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)     # Ctrl-C, as the examples' comments say
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        output.append(process.stdout.read())
        output.append(process.stderr.read())
        process.stdout.close()
        process.stderr.close()


def exchange(port: int, pieces: List[bytes]) -> bytes:
    """Send the pieces, half-close, and return everything until the server's EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        for piece in pieces:
            client.sendall(piece)
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client)


@pytest.mark.parametrize("original, port", PAIRS[:2])
def test_the_socketserver_handler_and_its_port_answer_alike(original, port):
    replies = []
    for name in (original, port):
        with run_example(name) as (tcp_port, process, output):
            replies.append(exchange(tcp_port, [b"hello, world\n"]))
        assert output[0] == b"127.0.0.1 wrote:\nb'hello, world'\n"
    assert replies == [b"HELLO, WORLD"] * 2


def test_the_line_port_reads_one_whole_line_however_it_is_cut():
    with run_example("from_socketserver/stream_lines.py") as (port, process, output):
        reply = exchange(port, [b"o", b"ne lin", b"e\nsecond line\n"])
    assert reply == b"ONE LINE"


def test_the_socket_docs_loop_and_its_port_echo_alike():
    payload = bytes(range(256)) * 40
    replies = []
    for name in PAIRS[2]:
        with run_example(name) as (port, process, output):
            replies.append(exchange(port, [payload[:1000], payload[1000:]]))
    assert replies == [payload, payload]


@pytest.mark.parametrize("name", PAIRS[3])
def test_the_timeout_original_and_its_port_answer_lines_then_drop_a_silent_client(name):
    with run_example(name) as (port, process, output):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"one\ntwo\n")
            assert recv_exactly(client, 8) == b"ONE\nTWO\n"
            start = time.monotonic()
            assert recv_until_eof(client) == b"too slow\n"      # then silence: told, and dropped
            assert time.monotonic() - start >= 0.9                 # after its 1 s, not before
    assert b"timed out" not in output[1], output[1].decode()     # the timeout was caught


def test_an_except_inside_the_timeout_block_catches_nothing():
    with run_example(WRONG[0]) as (port, process, output):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            assert recv_until_eof(client) == b""                  # no "too slow": closed
    assert b"TimeoutError: timed out after 1" in output[1], output[1].decode()   # logged, escaped


def test_the_ported_echo_serves_200_clients_at_once_from_one_thread():
    clients = []
    with run_example("from_socketserver/stream_socket_echo.py") as (port, process, output):
        try:
            for _ in range(200):                           # all connected at the same time
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            payloads = [os.urandom(3000) + b"%d" % index for index, _ in enumerate(clients)]
            for client, payload in zip(clients, payloads):
                client.sendall(payload[:1500])
            for client, payload in zip(clients, payloads):
                client.sendall(payload[1500:])
            for client, payload in zip(clients, payloads):
                assert recv_exactly(client, len(payload)) == payload
            status = Path(f"/proc/{process.pid}/status").read_text()
            assert re.search(r"^Threads:\s+1$", status, re.M), "the server runs one thread"
        finally:
            for client in clients:
                client.close()


# ----------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------
_BLOCK = re.compile(r'^```python title="([^"]+)"\n(.*?)^```$', re.S | re.M)


def test_every_code_block_of_the_page_is_an_example_file_run_here():
    text = PAGE.read_text()
    blocks = _BLOCK.findall(text)
    assert text.count("```python") == len(blocks), "every python block names its file"
    shown = {path for path, _ in blocks}
    assert shown == {f"examples/{name}" for name in [*(name for pair in PAIRS for name in pair), *WRONG]}
    for path, code in blocks:
        assert code == (ROOT / path).read_text(), f"{path} differs from the page"
