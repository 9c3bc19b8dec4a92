"""TCPTransport.sendfile(): file regions queued in order with write(), zero-copy
where the kernel allows, read-and-send where it does not; close flushes them,
abort drops them, flow control counts them without holding them in memory."""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import random
import socket
from typing import Any, Callable, List

import pytest

import netmux
from conftest import Recorder, recv_exactly, recv_until_eof, wait_until

MiB = 1 << 20


def _pattern(size: int) -> bytes:
    """Bytes whose every 4-byte word names its own offset: a reordering shows."""
    words = (size + 3) // 4
    return b"".join(i.to_bytes(4, "big") for i in range(words))[:size]


@pytest.fixture
def data_file(tmp_path: Any) -> Callable[[bytes], Any]:
    """``data_file(content)`` -> an open binary file holding ``content``, closed at teardown."""
    opened: List[Any] = []

    def make(content: bytes) -> Any:
        path = tmp_path / f"data{len(opened)}"
        path.write_bytes(content)
        file = open(path, "rb")
        opened.append(file)
        return file

    yield make
    for file in opened:
        file.close()


class Scripted(Recorder):
    """Runs ``script(transport)`` in connection_made, on the reactor's thread."""

    script: Callable[[Any], None] = staticmethod(lambda transport: None)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        type(self).script(transport)


def _serve_script(serve: Any, script: Callable[[Any], None], **kwargs: Any) -> Any:
    handlers: List[Scripted] = []

    class Handler(Scripted):
        def __init__(self) -> None:
            super().__init__()
            handlers.append(self)

    Handler.script = staticmethod(script)
    serving = serve(Handler, **kwargs)
    serving.handlers = handlers
    return serving


def test_sendfile_between_writes_arrives_in_order_then_close_flushes(serve, data_file):
    content = _pattern(3 * MiB + 7)
    file = data_file(content)

    def script(transport: Any) -> None:
        transport.write(b"head|")
        transport.sendfile(file)
        transport.write(b"|mid|")
        transport.sendfile(file, 10, 5)
        transport.write(bytearray(b"|tail"))
        transport.close()

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        received = recv_until_eof(client)
    assert received == b"head|" + content + b"|mid|" + content[10:15] + b"|tail"
    wait_until(lambda: serving.handlers and serving.handlers[0].lost == [None])
    assert not file.closed and file.tell() == 0       # ours to close; position untouched


def test_sendfile_offset_and_count(serve, data_file):
    content = _pattern(100_000)
    file = data_file(content)

    def script(transport: Any) -> None:
        transport.sendfile(file, 0, 1)
        transport.sendfile(file, 99_999)              # count None: to the end, one byte
        transport.sendfile(file, 100_000)             # nothing left: nothing queued
        transport.sendfile(file, 200_000)             # past the end: nothing queued
        transport.sendfile(file, 4096, 60_000)
        transport.sendfile(file, offset=5)
        transport.close()

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        received = recv_until_eof(client)
    assert received == content[:1] + content[99_999:] + content[4096:64_096] + content[5:]


@pytest.mark.parametrize("offset, count, error", [
    (-1, None, ValueError), (0, 0, ValueError), (0, -5, ValueError), (1.5, None, TypeError),
    (0, 2.0, TypeError), (True, None, TypeError), (0, float("nan"), TypeError),
    (0, float("inf"), TypeError), ("0", None, TypeError),
])
def test_sendfile_rejects_bad_offsets_and_counts(serve, data_file, offset, count, error):
    file = data_file(b"x" * 10)
    raised: List[Any] = []

    def script(transport: Any) -> None:
        try:
            transport.sendfile(file, offset, count)
        except Exception as exc:
            raised.append(exc)
        transport.write(b"still fine")
        transport.close()

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        assert recv_until_eof(client) == b"still fine"
    assert len(raised) == 1 and type(raised[0]) is error


def test_sendfile_refuses_text_files_closed_transports_and_after_write_eof(serve, tmp_path):
    path = tmp_path / "text"
    path.write_text("hello")
    raised: List[Any] = []

    def script(transport: Any) -> None:
        with open(path) as text, open(path, "rb") as binary:
            for call in (lambda: transport.sendfile(text),
                         lambda: (transport.write_eof(), transport.sendfile(binary)),
                         lambda: (transport.close(), transport.sendfile(binary))):
                try:
                    call()
                except Exception as exc:
                    raised.append(type(exc))

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        assert recv_until_eof(client) == b""
    wait_until(lambda: len(raised) == 3)      # write_eof's FIN may reach us before the rest ran
    assert raised == [ValueError, RuntimeError, ConnectionError]


def test_one_hundred_mib_to_a_slow_reader_is_exact_and_memory_bounded(serve, data_file):
    block = os.urandom(MiB)
    content_hash = hashlib.sha256()
    size = 100 * MiB
    with open(data_file(b"").name, "wb") as out:      # the fixture's path, filled in blocks
        for i in range(100):
            piece = i.to_bytes(4, "big") + block[4:]  # each MiB differs: a reordering shows
            out.write(piece)
            content_hash.update(piece)
    file = open(out.name, "rb")
    sizes: List[int] = []

    def script(transport: Any) -> None:
        transport.write(b"<")
        transport.sendfile(file)
        sizes.append(transport.get_write_buffer_size())
        transport.write(b">")
        transport.close()

    try:
        serving = _serve_script(serve, script)
        rss_before = _rss()
        peak = rss_before
        received = hashlib.sha256()
        total = 0
        with serving.connect(timeout=30) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)   # a slow, narrow pipe
            assert recv_exactly(client, 1) == b"<"
            while total < size:
                chunk = client.recv(min(64 * 1024, size - total))
                assert chunk, f"EOF after {total} bytes"
                received.update(chunk)
                total += len(chunk)
                if total % (8 * MiB) < len(chunk):
                    peak = max(peak, _rss())
            assert recv_until_eof(client) == b">"
        assert received.hexdigest() == content_hash.hexdigest()
        assert sizes == [size]              # the region counts; the "<" went at once
        # The file never passes through Python: the process grows by far less than it.
        assert peak - rss_before < 20 * MiB, (peak - rss_before) / MiB
        wait_until(lambda: serving.handlers[0].lost == [None])
    finally:
        file.close()


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_queued_file_bytes_drive_pause_and_resume_writing(serve, data_file):
    file = data_file(_pattern(4 * MiB))
    events: List[Any] = []

    class Handler(netmux.Handler):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.sendfile(file)
            events.append(("queued", transport.get_write_buffer_size(), transport.is_reading()))

        def pause_writing(self) -> None:
            events.append("pause")
            super().pause_writing()

        def resume_writing(self) -> None:
            events.append(("resume", self.transport.get_write_buffer_size()))
            super().resume_writing()
            self.transport.write(b"!")      # writing from inside resume_writing keeps the order
            self.transport.close()

    serving = serve(Handler)
    with serving.connect() as client:
        received = recv_until_eof(client)
    assert received == file.read() + b"!"
    assert events[0] == "pause"             # the region alone is over the 64 KiB high water
    assert events[1] == ("queued", 4 * MiB, False)    # Handler's default paused reading
    assert events[2][0] == "resume" and events[2][1] <= 16 * 1024


def test_abort_drops_queued_regions_and_leaves_the_file_open(serve, data_file):
    file = data_file(_pattern(32 * MiB))
    transports: List[Any] = []

    def script(transport: Any) -> None:
        transports.append(transport)
        transport.sendfile(file)
        transport.write(b"never sent")

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        wait_until(lambda: transports)
        assert recv_exactly(client, 1000) == _pattern(1000)
        serving.call(lambda: transports[0].abort())
        wait_until(lambda: serving.handlers[0].lost)
        received = 1000 + len(_drain(client))
    assert received < 32 * MiB
    assert serving.handlers[0].lost == [None] and serving.handlers[0].events == ["made", "lost"]
    assert serving.call(lambda: transports[0].get_write_buffer_size()) == 0
    assert not file.closed


def _drain(client: socket.socket) -> bytes:
    """What is left until EOF or a reset."""
    try:
        return recv_until_eof(client)
    except ConnectionResetError:
        return b""


def test_write_eof_after_sendfile_sends_fin_after_the_file(serve, data_file):
    content = _pattern(2 * MiB)
    file = data_file(content)

    def script(transport: Any) -> None:
        transport.sendfile(file)
        transport.write_eof()

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        assert recv_until_eof(client) == content
        client.sendall(b"after")          # our side is still open: the server reads on
        wait_until(lambda: serving.handlers[0].data == b"after")


def _fallback_cases() -> List[str]:
    return ["einval", "no-sendfile", "bytesio"]


@pytest.mark.parametrize("case", _fallback_cases())
def test_read_and_send_fallback_is_byte_exact(serve, data_file, monkeypatch, case):
    content = _pattern(MiB + 12345)
    file: Any = data_file(content)
    if case == "einval":
        def refuse(*args: Any) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")
        monkeypatch.setattr(os, "sendfile", refuse)
    elif case == "no-sendfile":
        monkeypatch.delattr(os, "sendfile")
    else:
        file = io.BytesIO(content)

    def script(transport: Any) -> None:
        transport.write(b"[")
        transport.sendfile(file, 3)
        transport.sendfile(file, 0, 3)
        transport.write(b"]")
        transport.close()

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        assert recv_until_eof(client) == b"[" + content[3:] + content[:3] + b"]"


def test_eagain_and_partial_sends_keep_every_byte_in_order(serve, data_file, monkeypatch):
    content = _pattern(2 * MiB)
    file = data_file(content)
    real_sendfile = os.sendfile
    rng = random.Random(11)
    calls = {"eagain": 0, "partial": 0}

    def flaky(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        if rng.random() < 0.3:
            calls["eagain"] += 1
            raise BlockingIOError(errno.EAGAIN, "injected")
        calls["partial"] += 1
        return real_sendfile(out_fd, in_fd, offset, min(count, rng.randint(1, 70_000)))

    monkeypatch.setattr(os, "sendfile", flaky)

    def script(transport: Any) -> None:
        for start in range(0, len(content), 512 * 1024):
            transport.write(b"<%d>" % start)
            transport.sendfile(file, start, 512 * 1024)
        transport.close()

    serving = _serve_script(serve, script)
    with serving.connect() as client:
        received = recv_until_eof(client)
    expected = b"".join(b"<%d>" % start + content[start:start + 512 * 1024]
                        for start in range(0, len(content), 512 * 1024))
    assert received == expected
    assert calls["eagain"] > 5 and calls["partial"] > 20


@pytest.mark.parametrize("mishap", ["shrunk", "closed"])
def test_a_file_shrunk_or_closed_under_us_aborts_that_connection_only(serve, data_file, caplog, mishap):
    content = _pattern(MiB)
    file = data_file(content)
    victims: List[Any] = []

    def script(transport: Any) -> None:
        if not victims:
            victims.append(transport)
            transport.write(b"start")
            transport.sendfile(file, 0, MiB)
            if mishap == "shrunk":
                os.truncate(file.name, 1000)
            else:
                file.close()
        else:
            transport.write(b"the server goes on")
            transport.close()

    serving = _serve_script(serve, script)
    with caplog.at_level(logging.WARNING, logger="netmux"):
        with serving.connect() as client:
            received = _drain(client)
        wait_until(lambda: serving.handlers[0].lost)
    error = serving.handlers[0].lost[0]
    if mishap == "shrunk":
        assert isinstance(error, EOFError) and received == b"start" + content[:1000]
    else:
        assert isinstance(error, ValueError) and received == b"start"
    assert any("sendfile" in record.getMessage() for record in caplog.records)
    with serving.connect() as other:
        assert recv_until_eof(other) == b"the server goes on"


def test_sendfile_from_resume_writing_after_a_byte_backlog(serve, data_file):
    """The bytes path's flush hands over to the queue without losing its writer."""
    content = _pattern(MiB)
    file = data_file(content)
    big = b"b" * (3 * MiB)

    class Handler(netmux.Handler):
        done = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            transport.write(big)             # mostly buffered: pause_writing
            assert transport.get_write_buffer_size() > 64 * 1024

        def resume_writing(self) -> None:
            super().resume_writing()
            if not self.done:
                self.done = True
                self.transport.sendfile(file)
                self.transport.close()

    serving = serve(Handler)
    with serving.connect() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        assert recv_until_eof(client) == big + content


@pytest.mark.parametrize("way", ["socket", "layer"])
@pytest.mark.parametrize("case", ["at end of file", "no descriptor"])
def test_a_counting_layer_accepts_every_region_the_socket_transport_accepts(way, case):
    """The seams issue's fourth defect: CountingLayer.sendfile raised ValueError at the
    end of a file with count=None, and UnsupportedOperation for a BytesIO."""
    counter = netmux.ByteCounter()
    file: Any = io.BytesIO(b"0123456789")
    offset = 10 if case == "at end of file" else 3

    class Sends(Recorder):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.sendfile(file, offset)
            transport.close()

    factory = (lambda: netmux.CountingLayer(Sends(), counter)) if way == "layer" else Sends
    with netmux.TCPServer(("127.0.0.1", 0), factory) as server:
        client = socket.create_connection(server.server_address[:2])
        try:
            for _ in range(200):
                server.reactor.run_once(0.01)
                if server.connections == 0:
                    break
            assert recv_until_eof(client) == b"0123456789"[offset:]
        finally:
            client.close()
    if way == "layer":
        assert counter.bytes_out == 10 - offset
