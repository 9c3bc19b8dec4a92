"""netmux http beside nginx: both serve the same directory, each request goes to both, and
the status, the validators (ETag, Last-Modified), Content-Range and the bytes must agree:
the 200/206/304/412/416 decisions, multipart byteranges included. Where netmux follows RFC
9110 and nginx (1.22, defaults) does not, the difference itself is pinned, so a change on
either side is seen. Skipped, naming the package, when nginx is not installed."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urljoin, urlsplit

import h11
import pytest

from conftest import recv_until_eof
from nginxpeer import nginx_argv
from netmux.apps import httpfiles
from test_app_http import Running

pytestmark = pytest.mark.clients

MTIME = (int(time.time()) - 86400) // 60 * 60          # a day ago: If-Range's date is strong
DIGITS = bytes(range(256)) * 1024                         # 256 KiB: sendfile()d by netmux
FILES = {"hello.txt": b"hello, file\n", "digits.bin": DIGITS, "empty.txt": b"",
         "docs/index.html": b"<h1>docs</h1>", "www.example.org/index.html": b"<p>a directory, not a host</p>"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """nginx in the foreground on a free port, serving ``root``."""

    def __init__(self, workdir: str, root: str) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(nginx_argv(self.port, str(workdir), str(root)),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, open(f"{workdir}/error.log").read()
            assert time.monotonic() < deadline, "nginx did not answer in 10 s"
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: Any) -> Iterator[Dict[str, int]]:
    """``{"nginx": port, "netmux": port}``, both serving the same files of the same mtime."""
    workdir = tmp_path_factory.mktemp("nginx")
    root = workdir / "root"
    for name, content in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (MTIME, MTIME))
    nginx = Nginx(str(workdir), str(root))
    netmux = Running(root=str(root))
    try:
        yield {"nginx": nginx.port, "netmux": netmux.port}
    finally:
        netmux.stop()
        nginx.stop()


class Answer:
    """One response: status, headers (lowercase names), body."""

    def __init__(self, status: int, headers: Dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:60]!r}>"


def _requests(port: int, data: bytes, count: int = 1, heads: Tuple[int, ...] = ()) -> List[Answer]:
    """Send ``data`` (``count`` requests; ``heads``: the indexes of HEAD ones), read to
    EOF: the answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        raw = recv_until_eof(sock)
    answers: List[Answer] = []
    for index in range(count):
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="HEAD" if index in heads else "GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(raw)
        response = client.next_event()
        body = b""
        while True:
            event = client.next_event()
            if type(event) is h11.Data:
                body += event.data
            else:
                break
        answers.append(Answer(response.status_code, dict(response.headers), body))
        raw = client.trailing_data[0]
    assert raw == b"", raw[:100]
    return answers


def ask(port: int, target: str, *headers: str, method: str = "GET", version: str = "1.1") -> Answer:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *headers, "Connection: close"]
    return _requests(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), heads=(0,) if method == "HEAD" else ())[0]


def both(peers: Dict[str, int], target: str, *headers: str, method: str = "GET") -> Tuple[Answer, Answer]:
    return ask(peers["netmux"], target, *headers, method=method), ask(peers["nginx"], target, *headers, method=method)


def _parts(answer: Answer) -> List[Tuple[bytes, bytes]]:
    """A multipart/byteranges body as ``[(Content-Range, bytes)]``."""
    boundary = answer.headers[b"content-type"].split(b"boundary=")[1]
    parts = answer.body.split(b"\r\n--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n", answer.body[:200]
    out = []
    for part in parts[1:-1]:
        head, _, content = part.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        out.append((fields[b"Content-Range"], content))
    return out


def assert_same(ours: Answer, theirs: Answer, what: str) -> None:
    """The same decision, validators and bytes; error pages' wording and type may differ."""
    assert ours.status == theirs.status, (what, ours, theirs)
    for name in (b"etag", b"last-modified", b"content-range", b"location"):
        assert ours.headers.get(name) == theirs.headers.get(name), (what, name, ours, theirs)
    if ours.status in (200, 206):
        assert ours.headers[b"content-length"] == theirs.headers[b"content-length"], what
        if theirs.headers[b"content-type"].startswith(b"multipart/byteranges"):
            assert ours.headers[b"content-type"].startswith(b"multipart/byteranges; boundary="), what
            if not theirs.body:                              # HEAD
                return
            assert _parts(ours) == _parts(theirs), what
        else:
            assert ours.headers[b"content-type"] == theirs.headers[b"content-type"], what
            assert ours.body == theirs.body, what


TAG = httpfiles.entity_tag(len(FILES["hello.txt"]), MTIME).decode()
LAST_MODIFIED = httpfiles.http_date(MTIME).decode()
EARLIER = httpfiles.http_date(MTIME - 3600).decode()


@pytest.mark.parametrize("target, method", [
    ("/hello.txt", "GET"), ("/hello.txt", "HEAD"), ("/digits.bin", "GET"), ("/empty.txt", "GET"),
    ("/docs/", "GET"), ("/docs/index.html", "GET"), ("/missing", "GET"), ("/hello.txt/", "GET"),
    ("/docs/missing.html", "GET"),
])
def test_plain_requests_get_the_same_status_validators_and_bytes(peers, target, method):
    ours, theirs = both(peers, target, method=method)
    assert_same(ours, theirs, target)
    if ours.status == 200:
        assert ours.headers[b"etag"] == httpfiles.entity_tag(len(ours.body) if method == "GET" else 12, MTIME)


@pytest.mark.parametrize("target, spec", [
    ("/hello.txt", "bytes=0-4"), ("/hello.txt", "bytes=5-"), ("/hello.txt", "bytes=-3"), ("/hello.txt", "bytes=0-0"),
    ("/hello.txt", "bytes=-30"), ("/hello.txt", "Bytes=3-100"), ("/digits.bin", "bytes=100-200000"),
    ("/digits.bin", "bytes=262144-"), ("/hello.txt", "bytes=-0"), ("/hello.txt", "bytes=9-2"),
    ("/hello.txt", "bytes=x"), ("/hello.txt", "bytes=0-1,,5-6"), ("/hello.txt", "lines=0-1"),
    ("/hello.txt", "bytes = 0-1"), ("/empty.txt", "bytes=0-1"), ("/empty.txt", "bytes=-5"),
    # several: multipart in the order asked; dropped when past the end; the whole file
    # when they ask for more bytes than it has.
    ("/hello.txt", "bytes=0-1,5-6"), ("/hello.txt", "bytes=5-6,0-1"), ("/hello.txt", "bytes= 0-5 , 3-8"),
    ("/hello.txt", "bytes=0-1,20-30"), ("/hello.txt", "bytes=20-30,40-50"), ("/hello.txt", "bytes=0-8,3-8"),
    ("/digits.bin", "bytes=0-99999,150000-262143"), ("/digits.bin", "bytes=" + ",".join(["0-9"] * 50)),
    ("/digits.bin", "bytes=0-0,-1,100-199"),
])
def test_ranges_get_the_same_decision_and_bytes(peers, target, spec):
    assert_same(*both(peers, target, f"Range: {spec}"), spec)


@pytest.mark.parametrize("headers", [
    [f"If-None-Match: {TAG}"], ["If-None-Match: *"], [f"If-None-Match: W/{TAG}"], ['If-None-Match: "x"'],
    [f'If-None-Match: "x", {TAG}'], ['If-None-Match: "x"', f"If-Modified-Since: {LAST_MODIFIED}"],
    [f"If-Modified-Since: {LAST_MODIFIED}"], [f"If-Modified-Since: {EARLIER}"], ["If-Modified-Since: garbage"],
    ["If-Modified-Since: Fri, 01 Jan 99999999999 00:00:00 GMT"],
    [f"If-Match: {TAG}"], ['If-Match: "x"'], [f"If-Match: W/{TAG}"], ["If-Match: *"],
    [f"If-Unmodified-Since: {LAST_MODIFIED}"], [f"If-Unmodified-Since: {EARLIER}"],
    ['If-Match: "x"', f"If-None-Match: {TAG}"],
    ["Range: bytes=0-4", f"If-Range: {TAG}"], ["Range: bytes=0-4", 'If-Range: "x"'],
    ["Range: bytes=0-4", f"If-Range: W/{TAG}"], ["Range: bytes=0-4", f"If-Range: {LAST_MODIFIED}"],
    ["Range: bytes=0-4", f"If-Range: {EARLIER}"], ["Range: bytes=0-4", "If-Range: garbage"],
    ["Range: bytes=0-4,6-7", f"If-Range: {TAG}"], [f"If-None-Match: {TAG}", "Range: bytes=0-4"],
    ['If-Match: "x"', "Range: bytes=0-4"], ["If-Range: garbage"],
], ids=lambda headers: " + ".join(headers))
def test_conditional_requests_get_the_same_decision(peers, headers):
    assert_same(*both(peers, "/hello.txt", *headers), " + ".join(headers))
    assert_same(*both(peers, "/hello.txt", *headers, method="HEAD"), " + ".join(headers))


@pytest.mark.parametrize("headers, ours, theirs", [
    # RFC 9110 13.1.2/13.1.4: If-None-Match makes If-Modified-Since ignored, If-Match makes
    # If-Unmodified-Since ignored; nginx evaluates both.
    ([f"If-None-Match: {TAG}", f"If-Modified-Since: {EARLIER}"], 304, 200),
    ([f"If-Match: {TAG}", f"If-Unmodified-Since: {EARLIER}"], 200, 412),
    # RFC 9110 13.1.4: an invalid If-Unmodified-Since is ignored; nginx fails it.
    (["If-Unmodified-Since: garbage"], 200, 412),
    # RFC 9110 13.1.3: modified "after" the date, or not; nginx's default is an exact match.
    ([f"If-Modified-Since: {httpfiles.http_date(MTIME + 60).decode()}"], 304, 200),
    # RFC 9110 14.1.1: a last-pos past the end means the end; nginx: past 2**63, 416.
    ([f"Range: bytes=0-{'9' * 5000}"], 206, 416),
], ids=["inm-and-ims", "if-match-and-ius", "invalid-ius", "ims-after", "huge-last-pos"])
def test_where_netmux_follows_rfc_9110_and_nginx_does_not(peers, headers, ours, theirs):
    assert (ask(peers["netmux"], "/hello.txt", *headers).status, ask(peers["nginx"], "/hello.txt", *headers).status) \
        == (ours, theirs)


def test_http_1_0_keep_alive_and_http_1_2_as_nginx(peers):
    data = (b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"HEAD /hello.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
            b"GET /hello.txt HTTP/1.2\r\nHost: x\r\n\r\n"
            b"GET /hello.txt HTTP/1.0\r\n\r\n"
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")       # never answered: the 1.0 one closed
    seen = {}
    for name, port in peers.items():
        answers = _requests(port, data, count=4, heads=(1,))       # and nothing after them
        assert [(answer.status, answer.body) for answer in answers] == [
            (200, FILES["hello.txt"]), (200, b""), (200, FILES["hello.txt"]), (200, FILES["hello.txt"])], name
        seen[name] = [answer.headers.get(b"connection", b"").lower() for answer in answers]
    assert seen["netmux"][:2] == seen["nginx"][:2] == [b"keep-alive"] * 2
    assert seen["netmux"][3] == seen["nginx"][3] == b"close"


def test_a_directory_redirect_stays_on_the_server_as_nginx_s(peers):
    for target in ("//www.example.org", "/www.example.org", "///www.example.org?x=1", "/docs"):
        locations = {}
        for name, port in peers.items():
            answer = ask(port, target)
            assert answer.status == 301, (name, target)
            base = f"http://127.0.0.1:{port}{target}"
            resolved = urlsplit(urljoin(base, answer.headers[b"location"].decode()))
            assert (resolved.hostname, resolved.port) == ("127.0.0.1", port), (name, target, answer)
            locations[name] = (resolved.path, resolved.query)
        assert locations["netmux"] == locations["nginx"], target
