"""netmux.apps.http: real clients (curl, wrk), raw sockets for what they will not send,
hostile input that costs one connection only, and the root that cannot be left."""
from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import logging
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import h11
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import netmux
from conftest import WAYS, ServingThread, recv_until_eof, run_one_way as run, wait_until
from netmux.apps import http as app
from netmux.testing import drive, pair

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


def _namespace(**options: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    app.add_arguments(parser)
    args = parser.parse_args([])
    args.host, args.port = "127.0.0.1", 0
    for name, value in options.items():
        setattr(args, name, value)
    return args


class Running:
    """An http server in a background thread, on its own reactor."""

    def __init__(self, **options: Any) -> None:
        self.reactor = netmux.Reactor()
        self.serving = ServingThread(app.make_server(_namespace(**options), self.reactor))
        self.port = self.serving.address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.serving.stop()
        self.reactor.close()


@pytest.fixture
def site_root(tmp_path: Any) -> str:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "hello.txt").write_bytes(b"hello, file\n")
    (root / "page.html").write_bytes(b"<p>page</p>")
    (root / "style.css").write_bytes(b"p {}")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "digits.bin").write_bytes(bytes(range(256)) * 1024)        # 256 KiB: sendfile()d
    (tmp_path / "secret.txt").write_bytes(b"outside the root")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")          # points out: refused
    os.symlink(root / "hello.txt", root / "inside.txt")               # points in: served
    return str(root)


@pytest.fixture
def server(site_root: str) -> Iterator[Running]:
    running = Running(root=site_root)
    yield running
    running.stop()


@pytest.fixture
def hello() -> Iterator[Running]:
    running = Running()
    yield running
    running.stop()


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args], capture_output=True,
                          timeout=timeout + 10)


def status_of(*args: str) -> List[str]:
    """The status codes curl saw, one per URL."""
    spread: List[str] = []
    for arg in args:                  # curl's -o covers one URL: give each its own
        spread += ["-o", "/dev/null", arg] if arg.startswith("http://") else [arg]
    out = curl("-w", "%{http_code}\n", *spread).stdout.decode()
    return out.split()


# ----------------------------------------------------------------------
# A raw client: bytes out, h11 to read the answers
# ----------------------------------------------------------------------
def exchange(port: int, data: bytes, *, timeout: float = 10.0,
             heads: Tuple[int, ...] = ()) -> Tuple[List[Tuple[Any, bytes]], bool]:
    """Send ``data``, read until the server closes or goes quiet: the responses
    ``[(h11.Response, body)]`` in order (``heads``: indexes of HEAD requests),
    and whether the server closed."""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass                      # the server may close before it read all of a flood
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        raw = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                chunk = b""
            raw += chunk
            if not chunk:
                closed = True
                break
    return _parse_responses(raw, heads), closed


def _parse_responses(raw: bytes, heads: Tuple[int, ...] = ()) -> List[Tuple[Any, bytes]]:
    responses: List[Tuple[Any, bytes]] = []
    position = 0
    while position < len(raw):
        client = h11.Connection(h11.CLIENT)
        method = "HEAD" if len(responses) in heads else "GET"
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(raw[position:])
        head = client.next_event()
        body = b""
        while True:
            event = client.next_event()
            if type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage or event is h11.NEED_DATA:
                break
        responses.append((head, body))
        used = len(raw) - position - len(client.trailing_data[0])
        position += used
        if type(event) is not h11.EndOfMessage:
            break
    return responses


def get(target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def header(response: Any, name: bytes) -> Optional[bytes]:
    for key, value in response.headers:
        if key == name:
            return value
    return None


# ----------------------------------------------------------------------
# curl
# ----------------------------------------------------------------------
@pytest.mark.clients
def test_hello_page_and_keep_alive_with_curl(hello):
    out = curl("-v", hello.url + "/", hello.url + "/?again")
    assert out.returncode == 0
    assert out.stdout == app.HELLO_PAGE * 2
    assert b"Re-using existing connection" in out.stderr
    connects = curl("-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
                    hello.url + "/", hello.url + "/").stdout.split()
    assert connects == [b"1", b"0"]                 # two requests, one connection
    assert status_of(hello.url + "/elsewhere") == ["404"]


@pytest.mark.clients
def test_head_gives_the_headers_of_get_without_a_body(server):
    out = curl("-I", server.url + "/digits.bin")
    assert out.returncode == 0
    head = out.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "content-length: 262144\r\n" in head and "accept-ranges: bytes\r\n" in head
    assert head.endswith("\r\n\r\n")
    responses, _ = exchange(server.port, get("/hello.txt", method="HEAD") + get("/hello.txt"), heads=(0,))
    assert [(r.status_code, body) for r, body in responses] == [(200, b""), (200, b"hello, file\n")]
    assert header(responses[0][0], b"content-length") == b"12"


@pytest.mark.clients
def test_static_files_types_and_404(server):
    for path, kind in (("/hello.txt", "text/plain"), ("/page.html", "text/html"), ("/style.css", "text/css"),
                       ("/digits.bin", "application/octet-stream"), ("/inside.txt", "text/plain")):
        out = curl("-D", "-", server.url + path).stdout
        assert f"content-type: {kind}".encode() in out, path
    assert curl(server.url + "/hello.txt").stdout == b"hello, file\n"
    assert curl(server.url + "/digits.bin").stdout == bytes(range(256)) * 1024
    assert status_of(server.url + "/missing", server.url + "/docs/missing.html") == ["404", "404"]


@pytest.mark.clients
def test_directories_serve_index_html_and_redirect_to_the_slash(server):
    assert curl(server.url + "/docs/").stdout == b"<h1>docs</h1>"
    assert curl("-L", server.url + "/docs").stdout == b"<h1>docs</h1>"
    assert status_of(server.url + "/docs", server.url + "/empty/") == ["301", "404"]


@pytest.mark.clients
def test_byte_ranges_with_curl(server):
    content = bytes(range(256)) * 1024
    for spec, expected in (("5-9", content[5:10]), ("262140-", content[262140:]), ("-3", content[-3:]),
                           ("100-200000", content[100:200001]), ("0-999999", content)):
        out = curl("-D", "-", "-r", spec, server.url + "/digits.bin").stdout
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206 Partial Content"), spec
        assert body == expected, spec
    assert b"content-range: bytes 5-9/262144" in curl("-D", "-", "-r", "5-9", server.url + "/digits.bin").stdout
    out = curl("-D", "-", "-r", "262144-", server.url + "/digits.bin").stdout
    assert out.startswith(b"HTTP/1.1 416 ") and b"content-range: bytes */262144" in out
    # Several ranges: one multipart/byteranges 206 (tests/test_app_http_files.py has the rest);
    # a backwards range is unsatisfiable (nginx's 416); another unit is ignored.
    assert status_of("-r", "0-1,5-6", server.url + "/digits.bin") == ["206"]
    responses, _ = exchange(server.port, get("/hello.txt", "Range: bytes=9-2") + get("/hello.txt", "Range: lines=1-2"))
    assert [(r.status_code, body) for r, body in responses] == [
        (416, b"416 Requested Range Not Satisfiable\n"), (200, b"hello, file\n")]


@pytest.mark.clients
def test_if_modified_since_gives_304(server, site_root):
    mtime = os.stat(os.path.join(site_root, "hello.txt")).st_mtime
    later = email.utils.formatdate(mtime, usegmt=True)          # not in the future: that is ignored
    earlier = email.utils.formatdate(mtime - 60, usegmt=True)
    assert status_of("-z", later, server.url + "/hello.txt") == ["304"]
    assert curl("-z", earlier, server.url + "/hello.txt").stdout == b"hello, file\n"
    responses, _ = exchange(server.port, get("/hello.txt", f"If-Modified-Since: {later}")
                            + get("/hello.txt", "If-Modified-Since: not a date"))
    assert [(r.status_code, body) for r, body in responses] == [(304, b""), (200, b"hello, file\n")]
    assert header(responses[0][0], b"last-modified") == email.utils.formatdate(int(mtime), usegmt=True).encode()


@pytest.mark.clients
def test_paths_outside_the_root_are_refused(server):
    assert status_of("--path-as-is", server.url + "/../etc/passwd", server.url + "/%2e%2e/etc/passwd",
                     server.url + "/docs/%2E%2E/%2e%2e/secret.txt", server.url + "/..%2f..%2fetc/passwd",
                     server.url + "/hello.txt%00.html", server.url + "/..%5c..%5csecret.txt",
                     server.url + "/%ff%fe") == ["400"] * 7
    assert status_of("--path-as-is", server.url + "/escape.txt", server.url + "//etc/passwd",
                     server.url + "/docs/../../secret.txt".replace("..", "%2e.")) == ["404", "404", "400"]
    assert curl("--path-as-is", server.url + "/docs/./index.html").stdout == b"<h1>docs</h1>"
    responses, _ = exchange(server.port, b"GET http://127.0.0.1/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
    assert responses[0][0].status_code == 404          # absolute form: ROOT/etc/passwd, not there


@given(st.binary(max_size=40) | st.text(alphabet="./%2e%2E%5c%00%2fab~", max_size=30).map(str.encode))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_resolve_never_leaves_the_root(site_root, target):
    site = app.Site(site_root)
    status, path = site.resolve(b"/" + target)
    assert status in (200, 400, 404)
    if status == 200:
        assert path == site.root or path.startswith(site.root + os.sep)


@pytest.mark.clients
def test_a_100_mib_file_via_sendfile_is_byte_exact(server, site_root, tmp_path):
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    with open(os.path.join(site_root, "big.bin"), "wb") as out:
        for i in range(100):
            piece = i.to_bytes(4, "big") + block[4:]
            out.write(piece)
            digest.update(piece)
    target = tmp_path / "download"
    out = curl("-o", str(target), "-w", "%{http_code} %{size_download}", server.url + "/big.bin", timeout=120)
    assert out.stdout == b"200 104857600"
    assert _sha256(target) == digest.hexdigest()
    # A range of it goes out with sendfile too, keep-alive after it.
    out = curl("-r", f"{50 * MiB}-{50 * MiB + 99}", server.url + "/big.bin", "--next", server.url + "/hello.txt")
    assert out.stdout == (50).to_bytes(4, "big") + block[4:100] + b"hello, file\n"


def _sha256(path: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.clients
@pytest.mark.parametrize("path", ["/", "/digits.bin"])
def test_a_short_wrk_run_has_no_errors(site_root, path):
    running = Running(root=None if path == "/" else site_root)
    try:
        out = subprocess.run(["wrk", "-t1", "-c20", "-d2s", running.url + path], capture_output=True,
                             text=True, timeout=30)
    finally:
        running.stop()
    assert out.returncode == 0, out.stderr
    requests = int(re.search(r"(\d+) requests in", out.stdout).group(1))
    assert requests > 100
    assert "Socket errors" not in out.stdout and "Non-2xx" not in out.stdout, out.stdout


# ----------------------------------------------------------------------
# Raw sockets: pipelining and the errors curl will not provoke
# ----------------------------------------------------------------------
def test_pipelined_requests_are_answered_in_order(server):
    batch = (get("/hello.txt") + get("/missing") + get("/hello.txt", method="HEAD") + get("/digits.bin")
             + get("/docs/") + get("/page.html", "Connection: close") + get("/never-answered"))
    responses, closed = exchange(server.port, batch, heads=(2,))
    assert [(r.status_code, len(body)) for r, body in responses] == [
        (200, 12), (404, len(b"404 Not Found\n")), (200, 0), (200, 262144), (200, 13), (200, 11)]
    assert responses[3][1] == bytes(range(256)) * 1024
    assert closed


def test_pipelining_survives_any_chunking(server):
    batch = get("/hello.txt") * 3 + get("/digits.bin", "Range: bytes=1-3")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for i in range(len(batch)):               # one byte per segment
            sock.sendall(batch[i:i + 1])
        sock.sendall(get("/", "Connection: close"))
        responses = _parse_responses(recv_until_eof(sock))
    assert [(r.status_code, body) for r, body in responses] == \
        [(200, b"hello, file\n")] * 3 + [(206, bytes([1, 2, 3])), (404, b"404 Not Found\n")]


@pytest.mark.parametrize("request_bytes, status", [
    (b"garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                   # no Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 200_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
], ids=["garbage", "no-host", "negative-length", "length-and-chunked", "nul", "huge-length",
        "long-line", "many-headers", "200k-header", "http2", "http0.9"])
def test_bad_requests_get_their_status_then_the_connection_closes(hello, request_bytes, status):
    responses, closed = exchange(hello.port, request_bytes + get("/"))
    assert [r.status_code for r, _ in responses] == [status]
    assert header(responses[0][0], b"connection") == b"close"
    assert closed
    assert exchange(hello.port, get("/", "Connection: close"))[0][0][1] == app.HELLO_PAGE


def test_methods_other_than_get_and_head_get_405_with_allow_and_keep_alive(hello):
    responses, _ = exchange(hello.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                            + get("/", method="DELETE") + get("/"))
    assert [r.status_code for r, _ in responses] == [405, 405, 200]
    assert header(responses[0][0], b"allow") == b"GET, HEAD"


def test_a_chunked_body_over_the_limit_closes_the_connection(tmp_path):
    running = Running(max_body=1000)
    try:
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        responses, closed = exchange(running.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                     b"\r\n\r\n" + chunk * 5 + b"0\r\n\r\n" + get("/"))
        assert [r.status_code for r, _ in responses] == [405] and closed
    finally:
        running.stop()


# ----------------------------------------------------------------------
# Hostile input: one connection pays, the server goes on, memory stays bounded
# ----------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_endless_headers_cost_only_that_connection(hello):
    before = _rss()
    with socket.create_connection(("127.0.0.1", hello.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(40_000):       # 4.5 MiB: the server answers 431 after 16 KiB and
                sock.sendall(b"X-Endless: " + b"e" * 100 + b"\r\n")   # discards the rest
            sock.shutdown(socket.SHUT_WR)
            reply = recv_until_eof(sock)
        except (BrokenPipeError, ConnectionResetError):
            reply = b""
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
    assert _rss() - before < 10 * MiB
    assert exchange(hello.port, get("/", "Connection: close"))[0][0][1] == app.HELLO_PAGE


def test_truncated_requests_then_eof_close_quietly(hello):
    for partial in (b"GE", b"GET / HTTP/1.1\r\nHost:", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"):
        with socket.create_connection(("127.0.0.1", hello.port), timeout=10) as sock:
            sock.sendall(partial)
            sock.shutdown(socket.SHUT_WR)
            reply = recv_until_eof(sock)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 "), reply   # at most an answer, then EOF
    assert exchange(hello.port, get("/", "Connection: close"))[0][0][1] == app.HELLO_PAGE


_HOSTILE_PIECES = [b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n", b"\x00", b"\xff", b":", b" ", b"\r", b"\n",
                   b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Range: bytes=0-1\r\n",
                   b"0\r\n\r\n", b"GET /%2e%2e HTTP/1.0\r\n", b"X" * 5000, b"HEAD / HTTP/1.1\r\n"]


@given(st.lists(st.sampled_from(_HOSTILE_PIECES) | st.binary(max_size=30), max_size=25))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_bytes_get_answers_or_a_close_never_a_hang(hello, pieces):
    with socket.create_connection(("127.0.0.1", hello.port), timeout=10) as sock:
        try:
            sock.sendall(b"".join(pieces))
            sock.shutdown(socket.SHUT_WR)
            reply = recv_until_eof(sock, timeout=10)    # the server closes: EOF, not a timeout
        except ConnectionResetError:
            reply = b""
    for response, _ in _parse_responses(reply):
        assert 200 <= response.status_code < 600


def test_hostile_barrage_leaves_memory_bounded_and_the_server_answering(hello):
    attacks = [b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 200_000 + b"\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 20_000,
               b"\x00" * 100_000, b"GET /" + b"%2e%2e/" * 30_000 + b" HTTP/1.1\r\n\r\n",
               get("/") * 200]
    exchange(hello.port, attacks[0])                   # warm-up: h11 and the allocator settle
    before = _rss()
    for _ in range(5):
        for attack in attacks:
            exchange(hello.port, attack, timeout=5)
    assert _rss() - before < 20 * MiB
    assert hello.serving.call(lambda: hello.serving.server.connections) in (0, 1)
    assert exchange(hello.port, get("/", "Connection: close"))[0][0][1] == app.HELLO_PAGE


# ----------------------------------------------------------------------
# The module on its own, and without h11
# ----------------------------------------------------------------------
@pytest.mark.clients       # curl asks for a page
def test_running_the_module_logs_start_and_stop_and_exits_0_on_sigterm():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "netmux.apps.http", "--port", str(port)], cwd=ROOT_DIR,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: curl(f"http://127.0.0.1:{port}/").stdout == app.HELLO_PAGE, timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _, stderr = process.communicate()
    assert b"netmux http server on 127.0.0.1:" in stderr and b"stopped" in stderr


def test_without_h11_importing_netmux_works_and_the_app_says_what_to_install():
    """No h11: netmux imports, --help marks http unavailable, and running it is one line
    naming the extra, exit 1, no traceback."""
    block = "import sys; sys.modules['h11'] = None\nimport netmux\nfrom netmux import cli\n"
    listing = subprocess.run([sys.executable, "-c", block + "cli.main(['--help'])"], cwd=ROOT_DIR,
                             capture_output=True, text=True, timeout=30)
    assert "unavailable: the http server needs h11: pip install 'netmux[http]'" in " ".join(listing.stdout.split())
    run = subprocess.run([sys.executable, "-c", block + "sys.exit(cli.main(['http', '--port', '0']))"],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == ["netmux: the http server needs h11: pip install 'netmux[http]'"]


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        app.Site(str(tmp_path / "absent"))
    with pytest.raises(ValueError):
        app.Site(max_header_size=0)
    with pytest.raises(ValueError):
        app.Site(max_body=-1)


@pytest.mark.parametrize("partial, status", [(b"GET /" + b"a" * 20000, 414),
                                             (b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"v" * 20000, 431)],
                         ids=["request-line", "header-line"])
def test_an_unfinished_line_over_the_limit_is_414_or_431(hello, partial, status):
    with socket.create_connection(("127.0.0.1", hello.port), timeout=10) as sock:
        for start in range(0, len(partial), 4096):        # arrives in pieces: h11's limit trips
            sock.sendall(partial[start:start + 4096])
        sock.shutdown(socket.SHUT_WR)
        reply = recv_until_eof(sock)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:60]


# ----------------------------------------------------------------------
# Found by attacking http (the hostile-user pass)
# ----------------------------------------------------------------------
@pytest.mark.clients
def test_an_absolute_form_target_is_served_as_its_path(server, hello):
    # It was a 400; RFC 9112 3.2.2: a server MUST accept the absolute form.
    target = f"http://127.0.0.1:{server.port}/hello.txt"
    assert curl("--request-target", target, server.url + "/").stdout == b"hello, file\n"
    responses, _ = exchange(server.port, get("HTTP://example.org/docs?x=1") + get("http://example.org"))
    assert [(r.status_code, header(r, b"location")) for r, _ in responses] == [(301, b"/docs/?x=1"), (404, None)]   # "/": no index.html
    assert curl("--request-target", "http://example.org/", hello.url + "/").stdout.startswith(b"<!doctype")


def test_an_if_modified_since_in_the_future_is_ignored(server):
    # It pinned a 304 (mtime <= a date in 2100): RFC 9110 13.1.3 calls such a date invalid.
    responses, _ = exchange(server.port, get("/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"))
    assert [(r.status_code, body) for r, body in responses] == [(200, b"hello, file\n")]


def test_a_directory_redirect_keeps_the_query(server):
    responses, _ = exchange(server.port, get("/docs?lang=en"))
    assert header(responses[0][0], b"location") == b"/docs/?lang=en"


def test_a_peer_that_resets_after_asking_for_a_big_file_is_no_error(server, caplog):
    # The headers' send met the reset; sendfile() then raised on the lost transport:
    # an ERROR with a traceback per hostile client.
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(get("/digits.bin") * 3)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    responses, _ = exchange(server.port, get("/hello.txt"))
    assert responses[0][1] == b"hello, file\n"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# ----------------------------------------------------------------------
# Fairness (issue 16): a turn's share of pipelined requests, deadlines for slow clients,
# each over a socket, under a CountingLayer and under drive() (virtual time)
# ----------------------------------------------------------------------
class Journal(app.HTTPHandler):
    """An HTTPHandler that notes each request's target and when its connection is lost
    (for run_one_way)."""

    turns = 0

    def __init__(self, site: app.Site) -> None:
        super().__init__(site)
        self.answered: List[Tuple[int, bytes]] = []
        self.lost = False
        self.lost_exc: Optional[BaseException] = None

    def _request(self, request: Any) -> None:
        self.answered.append((self.turns, request.target))
        super()._request(request)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.lost, self.lost_exc = True, exc


class Turns(Journal):
    """A Journal that also counts the turns of the loop (a callback queued every turn, until
    the connection is lost: no timer can come due meanwhile under drive)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._tick()

    def _tick(self) -> None:
        if not self.lost:
            self.turns += 1
            self.transport.reactor.call_soon(self._tick)


def _statuses(written: bytes) -> List[int]:
    return [response.status_code for response, _ in _parse_responses(written)]


@pytest.mark.parametrize("way", WAYS)
def test_pipelined_requests_are_answered_a_turns_share_at_a_time_in_order(way):
    site = app.Site()
    targets = [b"/?%d" % i for i in range(1000)]                  # 45 KB: one read
    outcome = run(way, lambda: Turns(site), b"".join(get(target.decode()) for target in targets))
    assert [target for _, target in outcome.handler.answered] == targets
    assert [(r.status_code, body) for r, body in _parse_responses(outcome.written)] == [(200, app.HELLO_PAGE)] * 1000
    per_turn: Dict[int, int] = {}
    for turn, _ in outcome.handler.answered:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= app.HTTPHandler.events_per_turn // 2     # a request: head and end
    assert outcome.lost_exc is None


@pytest.mark.parametrize("budget", [1, 0, -3, float("nan"), float("inf")])
def test_any_events_per_turn_answers_every_request(budget):
    class Budgeted(Turns):
        events_per_turn = budget

    site = app.Site()
    conversation = drive(lambda: Budgeted(site), [get("/") * 50 + get("/", "Connection: close")])
    assert _statuses(conversation.written) == [200] * 51 and conversation.closed


def test_a_pipelining_client_does_not_hold_up_a_fresh_one(hello):
    """One client sends 20,000 GETs in one go and reads its answers; a fresh client's
    one request is answered meanwhile, fast, and the pipeliner gets all its answers in order."""
    count = 20_000
    payload = b"".join(get(f"/?{i}") for i in range(count))
    selector = selectors.DefaultSelector()
    busy = socket.create_connection(("127.0.0.1", hello.port), timeout=10)
    busy.setblocking(False)
    selector.register(busy, selectors.EVENT_READ | selectors.EVENT_WRITE, "busy")
    received, sent, fresh, fresh_reply = bytearray(), 0, None, bytearray()
    started = waited = None
    deadline = time.monotonic() + 60
    try:
        while received.count(b"HTTP/1.1 200 ") < count or waited is None:
            assert time.monotonic() < deadline, (received.count(b"HTTP/1.1 200 "), waited)
            for key, events in selector.select(0.5):
                if key.data == "busy" and events & selectors.EVENT_WRITE:
                    sent += busy.send(payload[sent:sent + (1 << 20)])
                    if sent == len(payload):
                        selector.modify(busy, selectors.EVENT_READ, "busy")
                elif key.data == "busy":
                    received += busy.recv(1 << 20)
                else:
                    piece = fresh.recv(1 << 16)
                    fresh_reply += piece
                    if not piece:
                        waited = time.perf_counter() - started
                        selector.unregister(fresh)
            if fresh is None and received.count(b"HTTP/1.1 200 ") > 100:   # the server is busy with it
                fresh = socket.create_connection(("127.0.0.1", hello.port), timeout=10)
                started = time.perf_counter()
                fresh.sendall(get("/", "Connection: close"))
                fresh.setblocking(False)
                selector.register(fresh, selectors.EVENT_READ, "fresh")
    finally:
        busy.close()
        if fresh is not None:
            fresh.close()
    assert _parse_responses(bytes(fresh_reply))[0][1] == app.HELLO_PAGE
    print(f"fresh client answered in {waited * 1e3:.1f} ms beside 20,000 pipelined GETs")
    assert waited < 0.2
    responses = _parse_responses(bytes(received))
    assert len(responses) == count and all(body == app.HELLO_PAGE for _, body in responses)


def test_the_share_goes_to_the_others_before_the_pipeliner_is_done():
    """Deterministic: the reactor turns in this thread with both clients' bytes already in
    the kernel; the fresh request is answered while the pipeliner has had a few turns' share."""
    reactor = netmux.Reactor()
    site = app.Site()
    made: List[Journal] = []
    server = netmux.TCPServer(("127.0.0.1", 0), lambda: made.append(Journal(site)) or made[-1], reactor=reactor)
    busy = socket.create_connection(server.server_address[:2], timeout=10)
    fresh = socket.create_connection(server.server_address[:2], timeout=10)
    try:
        busy.sendall(get("/") * 2000)                          # 54 KB: one read
        fresh.sendall(get("/", "Connection: close"))
        busy.setblocking(False)
        fresh.setblocking(False)
        answered = bytearray()
        deadline = time.monotonic() + 20
        while not answered.endswith(app.HELLO_PAGE):
            assert time.monotonic() < deadline
            reactor.run_once(0.05)
            with contextlib.suppress(BlockingIOError):
                answered += fresh.recv(1 << 16)
            with contextlib.suppress(BlockingIOError):
                busy.recv(1 << 20)                               # the pipeliner reads: no pause
        pipelined = max(made, key=lambda handler: len(handler.answered))
        assert len(pipelined.answered) < 200, len(pipelined.answered)   # of 2,000; before: all
    finally:
        busy.close()
        fresh.close()
        server.server_close()
        reactor.close()


@pytest.mark.parametrize("way", WAYS)
def test_a_request_head_not_complete_in_time_is_408_and_closed(way):
    site = app.Site(header_timeout=0.3)
    outcome = run(way, lambda: Journal(site), b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a", eof=False)
    responses = _parse_responses(outcome.written)
    assert [r.status_code for r, _ in responses] == [408]
    assert header(responses[0][0], b"connection") == b"close"
    assert outcome.lost and outcome.lost_exc is None


def test_the_header_deadline_runs_on_virtual_time_under_drive():
    for site, fires_at in ((app.Site(header_timeout=60), 60), (app.Site(), app.HEADER_TIMEOUT)):
        conversation = drive(lambda: app.HTTPHandler(site), [b"GET / HTTP/1.1\r\n"], eof=False)
        assert _statuses(conversation.written) == [408] and conversation.closed
        assert conversation.time == fires_at
    # Nothing at all sent: the first request's clock started at accept.
    conversation = drive(lambda: app.HTTPHandler(app.Site()), [], eof=False)
    assert _statuses(conversation.written) == [408] and conversation.time == app.HEADER_TIMEOUT


class Client(netmux.Handler):
    """A scripted client for netmux.testing.pair(): sends each piece at its virtual time."""

    def __init__(self, script: List[Tuple[float, bytes]]) -> None:
        self.script = script
        self.received = bytearray()
        self.closed_at: Optional[float] = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        for when, piece in self.script:
            transport.call_later(when, self._send, piece)

    def _send(self, piece: bytes) -> None:
        self.transport.write(piece)

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> None:
        self.closed_at = self.transport.reactor.time()


def _converse(site: app.Site, script: List[Tuple[float, bytes]]) -> Tuple[List[int], Optional[float]]:
    """The statuses a scripted client got, and the virtual time the server closed."""
    ran = pair(lambda: Client(script), lambda: app.HTTPHandler(site), until=10_000)
    client = ran.client
    return _statuses(bytes(client.received)), client.closed_at


def test_the_head_clock_starts_at_the_first_byte_of_each_request_not_at_the_last_answer():
    site = app.Site()                                          # 20 s for a head, 75 s keep-alive
    request = get("/")
    # A keep-alive request at 0, the next one's first byte at 50 s, its rest at 65: answered.
    statuses, closed_at = _converse(site, [(0, request), (50, request[:1]), (65, request[1:])])
    assert statuses == [200, 200] and closed_at == 65 + app.KEEPALIVE_TIMEOUT
    # The same, never finished: 408 twenty seconds after its first byte.
    statuses, closed_at = _converse(site, [(0, request), (50, request[:1])])
    assert statuses == [200, 408] and closed_at == 50 + app.HEADER_TIMEOUT


def test_a_slowloris_client_is_cut_at_the_deadline_on_virtual_time():
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    statuses, closed_at = _converse(app.Site(), [(second, head[second:second + 1]) for second in range(len(head))])
    assert statuses == [408] and closed_at == app.HEADER_TIMEOUT


@pytest.mark.parametrize("bytes_a_second, cut_at", [(100, 25.0), (600, None)])
def test_a_request_body_must_keep_the_minimum_rate(bytes_a_second, cut_at):
    """Apache's body=20,MinRate=500: 20 s, plus one for every 500 bytes that came.
    At 100 B/s that is 20 + 100 t / 500 = t: cut at 25 s (24.8: the bytes come once a
    second, the 25th second's not yet); at 600 B/s never."""
    size = 30_000
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    body = [(1 + second, b"x" * bytes_a_second) for second in range(size // bytes_a_second)]
    statuses, closed_at = _converse(app.Site(), [(0, head)] + body + [(size // bytes_a_second + 1, get("/"))])
    if cut_at is None:
        assert statuses == [405, 200]              # answered at the head, then keep-alive
        assert closed_at == size // bytes_a_second + 1 + app.KEEPALIVE_TIMEOUT
    else:
        assert statuses == [405] and cut_at - 1 < closed_at <= cut_at


@pytest.mark.parametrize("way", WAYS)
def test_a_slow_request_body_is_cut(way):
    site = app.Site(header_timeout=0.2, body_min_rate=100)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    outcome = run(way, lambda: Journal(site), head + b"x" * 10, eof=False)    # 0.2 s + 10 / 100
    assert _statuses(outcome.written) == [405] and outcome.lost


@pytest.mark.parametrize("way", WAYS)
def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(way):
    site = app.Site(keepalive_timeout=0.3)
    outcome = run(way, lambda: Journal(site), get("/"), eof=False)
    assert _statuses(outcome.written) == [200] and outcome.lost and outcome.lost_exc is None


def test_with_no_options_an_idle_connection_is_closed_after_75_s():
    args = _namespace()                                   # the command line's defaults
    assert (args.header_timeout, args.body_min_rate, args.keepalive_timeout) == (20, 500, 75)
    conversation = drive(lambda: app.HTTPHandler(app.Site()), [get("/")], eof=False)
    assert _statuses(conversation.written) == [200]
    assert conversation.closed and conversation.time == app.KEEPALIVE_TIMEOUT == 75


def test_a_peer_that_reads_nothing_of_a_big_answer_is_closed_in_the_end(site_root):
    site = app.Site(site_root)
    conversation = drive(lambda: app.HTTPHandler(site), [get("/digits.bin")], eof=False, peer_reads=False)
    assert conversation.closed
    # The head's deadline finds the answer unread (20 s); a keep-alive timeout later, still: abort.
    assert conversation.time == app.HEADER_TIMEOUT + app.KEEPALIVE_TIMEOUT
    # One that reads, late but within the timeout, gets all of it and keeps its connection.
    conversation = drive(lambda: app.HTTPHandler(site), [get("/digits.bin")], eof=False, peer_reads=60)
    response, body = _parse_responses(conversation.written)[0]
    assert body == bytes(range(256)) * 1024
    assert conversation.time == 60 + app.KEEPALIVE_TIMEOUT


def test_slow_header_clients_are_cut_with_408_and_a_fresh_client_is_served_meanwhile():
    """Three clients trickle a head a byte every 0.1 s into a server of --max-connections 3
    and --header-timeout 0.5: each is answered 408 and closed near 0.5 s; a fresh client,
    waiting in the backlog for a free slot, is served once one is cut."""
    running = Running(header_timeout=0.5, max_connections=3)
    slow = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in range(3)]
    opened = time.monotonic()
    try:
        for sock in slow:
            sock.setblocking(False)
        wait_until(lambda: running.serving.call(lambda: running.serving.server.connections) == 3)
        fresh_reply: List[bytes] = []

        def fresh() -> None:
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
                sock.sendall(get("/", "Connection: close"))
                fresh_reply.append(recv_until_eof(sock, timeout=10))

        helper = threading.Thread(target=fresh)
        helper.start()
        replies = [bytearray() for _ in slow]
        closed_after: List[Optional[float]] = [None] * len(slow)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        for byte in range(len(head)):                      # at most 13 s
            if all(after is not None for after in closed_after):
                break
            for index, sock in enumerate(slow):
                if closed_after[index] is None:
                    with contextlib.suppress(OSError):
                        sock.send(head[byte:byte + 1])
                    with contextlib.suppress(BlockingIOError):
                        piece = sock.recv(1 << 16)
                        replies[index] += piece
                        if not piece:
                            closed_after[index] = time.monotonic() - opened
            time.sleep(0.1)
        helper.join(15)
        assert not helper.is_alive()
    finally:
        for sock in slow:
            sock.close()
        running.stop()
    assert all(bytes(reply).startswith(b"HTTP/1.1 408 ") for reply in replies), replies
    assert all(after is not None and 0.45 <= after < 5 for after in closed_after), closed_after
    assert _parse_responses(fresh_reply[0])[0][1] == app.HELLO_PAGE


def test_an_idle_keep_alive_connection_and_a_slow_head_over_a_socket():
    """The keep-alive wait is not the head's: a request whose first byte comes 0.4 s after
    the last answer still has its 0.5 s; the idle connection closes at its own timeout."""
    running = Running(header_timeout=0.5, keepalive_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(get("/"))
            assert _parse_responses(recv_exactly_response(sock))[0][1] == app.HELLO_PAGE
            time.sleep(0.4)                                # idle, under the keep-alive timeout
            request = get("/")
            sock.sendall(request[:5])
            began = time.monotonic()
            time.sleep(0.3)                                # 0.7 s after the answer: within the head's 0.5 s
            sock.sendall(request[5:])
            assert _parse_responses(recv_exactly_response(sock))[0][1] == app.HELLO_PAGE
            sock.sendall(b"GET / HT")
            began = time.monotonic()
            reply = recv_until_eof(sock, timeout=10)
            assert reply.startswith(b"HTTP/1.1 408 ") and 0.45 <= time.monotonic() - began < 5
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(get("/"))
            began = time.monotonic()
            reply = recv_until_eof(sock, timeout=10)       # answered, then closed at 1 s idle
            assert _statuses(reply) == [200] and 0.95 <= time.monotonic() - began < 6
    finally:
        running.stop()


def recv_exactly_response(sock: socket.socket) -> bytes:
    """One whole hello-page response from a blocking socket (bounded in time)."""
    data = bytearray()
    deadline = time.monotonic() + 10
    while not data.endswith(app.HELLO_PAGE):
        assert time.monotonic() < deadline
        piece = sock.recv(1 << 16)
        assert piece, bytes(data)
        data += piece
    return bytes(data)


def test_deadline_options_are_checked(tmp_path):
    for bad in (0, -1, float("nan")):
        for name in ("header_timeout", "body_min_rate", "keepalive_timeout"):
            with pytest.raises(ValueError, match=name):
                app.Site(**{name: bad})
    app.Site(header_timeout=float("inf"), keepalive_timeout=float("inf"))     # never


# ----------------------------------------------------------------------
# What a request may cost beyond its size (issue 16)
# ----------------------------------------------------------------------
def test_range_numbers_of_thousands_of_digits_are_read_without_converting_them(server):
    many = "9" * 5000                                     # int() refuses over 4,300 digits (3.11)
    responses, _ = exchange(server.port, get("/hello.txt", f"Range: bytes={many}-")
                            + get("/hello.txt", f"Range: bytes=0-{many}") + get("/hello.txt", f"Range: bytes=-{many}")
                            + get("/hello.txt", "Range: bytes=" + "0" * 5000 + "7-10"))
    assert [(r.status_code, body) for r, body in responses] == [
        (416, b"416 Requested Range Not Satisfiable\n"), (206, b"hello, file\n"), (206, b"hello, file\n"),
        (206, b"file")]


def test_an_if_modified_since_with_a_huge_year_is_ignored(server, caplog):
    # It raised OverflowError in the handler: an ERROR and a lost connection per request.
    with caplog.at_level(logging.WARNING, logger="netmux"):
        responses, _ = exchange(server.port, get("/hello.txt", "If-Modified-Since: Fri, 01 Jan 99999999999 00:00:00 GMT")
                                + get("/hello.txt", "If-Modified-Since: Fri, 01 Jan 99999 00:00:00 GMT"))
    assert [(r.status_code, body) for r, body in responses] == [(200, b"hello, file\n")] * 2
    assert not caplog.records


def test_a_missing_path_of_thousands_of_segments_costs_one_stat(site_root, monkeypatch):
    # realpath() lstat()ed each of its 4,000 prefixes: about 10 ms a request.
    site = app.Site(site_root)
    walked: List[str] = []
    monkeypatch.setattr(app.os.path, "realpath", lambda path: walked.append(path) or path)
    assert site.resolve(b"/a" * 4000) == (404, "")
    assert site.resolve(b"/docs/" + b"/." * 4000 + b"/missing") == (404, "")
    assert walked == []


# ----------------------------------------------------------------------
# HTTP's semantics (issue 18): validators, preconditions, ranges, versions, redirects,
# each over a socket, under a CountingLayer and under drive() where it applies
# ----------------------------------------------------------------------
def _file_site(site_root: str) -> Tuple[app.Site, int, bytes]:
    """The site, hello.txt's mtime (an hour ago: a strong date) and its ETag."""
    mtime = int(time.time()) - 3600
    os.utime(os.path.join(site_root, "hello.txt"), (mtime, mtime))
    return app.Site(site_root), mtime, b'"%x-%x"' % (mtime, 12)


@pytest.mark.parametrize("way", WAYS)
def test_if_range_serves_the_range_only_of_the_same_file(way, site_root):
    # It was ignored: a resumed download of a changed file got a 206 of the new file,
    # spliced onto the old bytes (RFC 9110 13.1.5: MUST ignore the Range then).
    site, mtime, tag = _file_site(site_root)
    date = email.utils.formatdate(mtime, usegmt=True)
    asks = [tag.decode(), date, '"stale"', "W/" + tag.decode(), email.utils.formatdate(mtime - 1, usegmt=True),
            "garbage", "Fri, 01 Jan 99999999999 00:00:00 GMT"]
    data = b"".join(get("/hello.txt", "Range: bytes=0-4", f"If-Range: {validator}") for validator in asks)
    outcome = run(way, lambda: Journal(site), data + get("/hello.txt", "Connection: close"))
    answers = [(r.status_code, body) for r, body in _parse_responses(outcome.written)]
    assert answers == [(206, b"hello")] * 2 + [(200, b"hello, file\n")] * 6


@pytest.mark.parametrize("way", WAYS)
def test_conditional_requests_decide_as_rfc_9110_says(way, site_root):
    site, mtime, tag = _file_site(site_root)
    same, earlier = (email.utils.formatdate(t, usegmt=True) for t in (mtime, mtime - 60))
    cases = [
        ([], 200), (['If-None-Match: "x"', f"If-Modified-Since: {same}"], 200),      # was 304
        (["If-None-Match: *"], 304),                                                   # was 200
        ([f"If-None-Match: W/{tag.decode()}"], 304), ([f"If-Modified-Since: {same}"], 304),
        ([f"If-Match: {tag.decode()}"], 200), (['If-Match: "x"'], 412), ([f"If-Match: W/{tag.decode()}"], 412),
        ([f"If-Unmodified-Since: {earlier}"], 412), ([f"If-Unmodified-Since: {same}"], 200),
        (["If-Modified-Since: Fri, 01 Jan 2026 00:00:00 +99999999999"], 200),         # a huge offset
        (["If-Unmodified-Since: Fri, 01 Jan 99999999999 00:00:00 GMT"], 200),
    ]
    data = b"".join(get("/hello.txt", *headers) for headers, _ in cases)
    outcome = run(way, lambda: Journal(site), data + get("/hello.txt", "Connection: close"))
    responses = _parse_responses(outcome.written)
    assert [r.status_code for r, _ in responses] == [status for _, status in cases] + [200]
    for response, body in responses:
        if response.status_code in (200, 304):             # the validators, on a 304 too
            assert header(response, b"etag") == tag
            assert header(response, b"last-modified") == same.encode()
        assert body == {200: b"hello, file\n", 304: b"", 412: b"412 Precondition Failed\n"}[response.status_code]


DIGITS = bytes(range(256)) * 1024


def _multipart(response: Any, body: bytes) -> List[Tuple[bytes, bytes]]:
    boundary = header(response, b"content-type").split(b"boundary=")[1]
    assert len(boundary) == 20
    parts = body.split(b"\r\n--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    out = []
    for part in parts[1:-1]:
        head, _, content = part.partition(b"\r\n\r\n")
        empty, content_type, content_range = head.split(b"\r\n")
        assert empty == b"" and content_type in (b"Content-Type: text/plain", b"Content-Type: application/octet-stream")
        out.append((content_range, content))
    return out


@pytest.mark.parametrize("way", WAYS)
def test_several_ranges_are_one_multipart_answer_small_or_sendfiled(way, site_root):
    site = app.Site(site_root)
    data = (get("/hello.txt", "Range: bytes=0-1,5-6") + get("/digits.bin", "Range: bytes=0-99999,150000-")
            + get("/digits.bin", "Range: bytes=0-99999,150000-", method="HEAD")
            + get("/hello.txt", "Range: bytes=0-8,3-8") + get("/hello.txt", "Connection: close"))
    outcome = run(way, lambda: Journal(site), data)
    responses = _parse_responses(outcome.written, heads=(2,))
    assert [r.status_code for r, _ in responses] == [206, 206, 206, 200, 200]
    assert _multipart(*responses[0]) == [(b"Content-Range: bytes 0-1/12", b"he"),
                                         (b"Content-Range: bytes 5-6/12", b", ")]
    assert _multipart(*responses[1]) == [(b"Content-Range: bytes 0-99999/262144", DIGITS[:100000]),
                                         (b"Content-Range: bytes 150000-262143/262144", DIGITS[150000:])]
    assert header(responses[2][0], b"content-length") == header(responses[1][0], b"content-length")
    assert responses[3][1] == b"hello, file\n"                   # 15 bytes asked of 12: the whole file
    assert outcome.lost_exc is None


def test_more_ranges_than_the_cap_get_the_whole_file(site_root):
    site = app.Site(site_root, max_ranges=3)
    conversation = drive(lambda: app.HTTPHandler(site), [
        get("/hello.txt", "Range: bytes=0-0,2-2,4-4") + get("/hello.txt", "Range: bytes=0-0,2-2,4-4,6-6")
        + get("/hello.txt", "Range: bytes=20-30,40-50") + get("/hello.txt", "Range: bytes=" + ",".join(["0-0"] * 2000))],
        eof=True)
    assert [(r.status_code, len(_multipart(r, body)) if r.status_code == 206 else body)
            for r, body in _parse_responses(conversation.written)] == [
        (206, 3), (200, b"hello, file\n"), (416, b"416 Requested Range Not Satisfiable\n"), (200, b"hello, file\n")]
    assert _namespace().max_ranges == app.MAX_RANGES == 100
    with pytest.raises(ValueError, match="max_ranges"):
        app.Site(site_root, max_ranges=0)


def test_a_range_of_an_empty_file_is_the_empty_file(site_root):
    open(os.path.join(site_root, "empty.txt"), "wb").close()
    conversation = drive(lambda: app.HTTPHandler(app.Site(site_root)), [get("/empty.txt", "Range: bytes=0-1")])
    [(response, body)] = _parse_responses(conversation.written)
    assert (response.status_code, header(response, b"content-length"), body) == (200, b"0", b"")


def test_a_file_with_a_trailing_slash_is_not_found(server):
    # It served the file (nginx and http.server: 404).
    responses, _ = exchange(server.port, get("/hello.txt/") + get("/hello.txt/.") + get("/docs/.")
                            + get("/docs/./") + get("/inside.txt/"))
    assert [r.status_code for r, _ in responses] == [404, 404, 301, 200, 404]
    assert header(responses[2][0], b"location") == b"/docs/"


@pytest.mark.parametrize("way", WAYS)
def test_any_http_1_x_is_served_as_1_1(way):
    # HTTP/1.2 got a 505 (RFC 9110 2.5: a 1.x message is handled as the highest 1.x we know).
    site = app.Site()
    data = (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n" + b"GET / HTTP/1.9\r\nHost: x\r\n\r\n"
            + b"GET / HTTP/2.0\r\nHost: x\r\n\r\n" + get("/"))
    outcome = run(way, lambda: Journal(site), data)
    responses = _parse_responses(outcome.written)
    assert [r.status_code for r, _ in responses] == [200, 200, 505]
    assert all(r.http_version == b"1.1" for r, _ in responses)


@pytest.mark.parametrize("way", WAYS)
def test_http_1_0_keep_alive_is_honoured_and_echoed(way, site_root):
    # It closed after every 1.0 request (h11 keeps none alive); nginx and ab -k keep them.
    site = app.Site(site_root)
    data = (b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"HEAD /hello.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
            b"POST /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /missing HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"GET /digits.bin HTTP/1.0\r\nConnection: keep-alive\r\nRange: bytes=0-9,100-70000\r\n\r\n"
            b"GET /hello.txt HTTP/1.0\r\n\r\n"
            + get("/never-answered"))
    outcome = run(way, lambda: Journal(site), data, eof=False)
    responses = _parse_responses(outcome.written, heads=(1,))
    assert [(r.status_code, header(r, b"connection")) for r, _ in responses] == [
        (200, b"keep-alive"), (200, b"keep-alive"), (405, b"keep-alive"), (404, b"keep-alive"),
        (206, b"keep-alive"), (200, b"close")]
    assert [body for _, body in responses][:2] == [b"hello, file\n", b""]
    assert [part for _, part in _multipart(*responses[4])] == [DIGITS[:10], DIGITS[100:70001]]
    assert outcome.lost and [target for _, target in outcome.handler.answered][-1] == b"/hello.txt"


def test_http_1_0_keep_alive_of_the_hello_page_and_a_bad_request_after_it(hello):
    responses, closed = exchange(hello.port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                 b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")
    assert [(r.status_code, header(r, b"connection"), body) for r, body in responses] == [
        (200, b"keep-alive", app.HELLO_PAGE), (200, b"close", app.HELLO_PAGE)] and closed
    responses, closed = exchange(hello.port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\ngarbage\r\n\r\n")
    assert [r.status_code for r, _ in responses] == [200, 400] and closed


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("bad, status", [(b"garbage\r\n\r\n", 400), (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n", 414),
                                         (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 3000, 431)],
                         ids=["400", "414", "431"])
def test_a_bad_request_after_a_head_gets_its_status(way, bad, status, caplog):
    # The error answer took the HEAD's method: its body was left out, h11 refused the short
    # message, the connection was aborted and 4 ERRORs logged.
    site = app.Site()
    with caplog.at_level(logging.DEBUG, logger="netmux"):
        outcome = run(way, lambda: Journal(site), get("/", method="HEAD") + bad)
    responses = _parse_responses(outcome.written, heads=(0,))
    assert [(r.status_code, len(body)) for r, body in responses] == [(200, 0), (status, len(b"%d " % status)
                                                                                + len(app._REASONS[status]) + 1)]
    assert outcome.lost_exc is None
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_directory_redirect_never_leaves_this_server(server, site_root):
    # GET //www.example.org got "Location: //www.example.org/": a browser goes to that host.
    os.mkdir(os.path.join(site_root, "www.example.org"))
    targets = ["//www.example.org", "///www.example.org?a=b", "/.//www.example.org", "/%2F%2Fwww.example.org",
               "/docs/..%2f..%2f", "http://127.0.0.1//www.example.org", "//docs", "/%2e/docs"]
    responses, _ = exchange(server.port, b"".join(get(target) for target in targets))
    locations = [(r.status_code, header(r, b"location")) for r, _ in responses]
    assert locations == [(301, b"/www.example.org/"), (301, b"/www.example.org/?a=b"), (301, b"/www.example.org/"),
                         (301, b"/www.example.org/"), (400, None), (301, b"/www.example.org/"), (301, b"/docs/"),
                         (301, b"/docs/")]


@given(st.binary(max_size=30) | st.text(alphabet="/\\.%2fF5cC?#@:ab", max_size=30).map(str.encode))
@settings(max_examples=500)
def test_a_slash_location_is_a_path_on_this_host(target):
    from urllib.parse import urljoin, urlsplit
    location = app._slash_location(b"/" + target)
    path = location.partition(b"?")[0]
    assert path.startswith(b"/") and not path.startswith(b"//") and b"\\" not in path
    resolved = urlsplit(urljoin("http://here.example:8080/a/b", location.decode("latin-1")))
    assert resolved.netloc == "here.example:8080"


def test_an_empty_root_is_a_usage_error(capsys, tmp_path):
    # --root '' served the working directory.
    from netmux.cli import parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["http", "--root", ""])
    assert exit_info.value.code == 2
    assert "argument --root: an empty name is no directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--root ''"):
        app.Site("")
    assert parse_args(["http", "--root", str(tmp_path)]).root == str(tmp_path)
