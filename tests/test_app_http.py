"""netmux.apps.http: real clients (curl, wrk), raw sockets for what they will not send,
hostile input that costs one connection only, and the root that cannot be left."""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Iterator, List, Optional, Tuple

import h11
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import netmux
from conftest import ServingThread, recv_until_eof, wait_until
from netmux.apps import http as app

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
    # Several ranges: the whole file, 200 (documented); a malformed range is ignored.
    assert status_of("-r", "0-1,5-6", server.url + "/digits.bin") == ["200"]
    responses, _ = exchange(server.port, get("/hello.txt", "Range: bytes=9-2") + get("/hello.txt", "Range: lines=1-2"))
    assert [(r.status_code, body) for r, body in responses] == [(200, b"hello, file\n")] * 2


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
    (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
], ids=["garbage", "no-host", "negative-length", "length-and-chunked", "nul", "huge-length",
        "long-line", "many-headers", "200k-header", "http2", "http1.2"])
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
