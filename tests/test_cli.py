"""``python -m netmux`` as a real subprocess: serving, signals, memory, descriptor starvation."""
from __future__ import annotations

import hashlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

import pytest

from conftest import ROOT, ServerProcess, child_env, recv_exactly, recv_until_eof


@pytest.fixture
def cli():
    started: List[ServerProcess] = []

    def start(*args: str, code: Optional[str] = None) -> ServerProcess:
        started.append(ServerProcess(list(args), code))
        return started[-1]

    yield start
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_the_server_gracefully_with_exit_code_zero(cli, signum):
    server = cli("--port", "0")
    with socket.create_connection(server.address, timeout=5) as client:
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
        assert server.stop(signum) == 0
        client.settimeout(5)
        assert client.recv(10) == b""       # server_close() closed us


def test_default_is_echo_on_127_0_0_1_port_8007(cli):
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", 8007))
    except OSError:
        pytest.fail("port 8007 is taken on this machine: cannot check the default")
    finally:
        probe.close()
    server = cli()
    assert server.address == ("127.0.0.1", 8007)
    clients = [socket.create_connection(server.address, timeout=5) for _ in range(20)]
    try:
        for i, client in enumerate(clients):
            client.sendall(b"%d;" % i)
        for i, client in enumerate(clients):
            assert recv_exactly(client, len(b"%d;" % i)) == b"%d;" % i
    finally:
        for client in clients:
            client.close()
    assert server.stop() == 0


def test_help_lists_the_servers():
    result = subprocess.run([sys.executable, "-m", "netmux", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "echo" in result.stdout and "--host" in result.stdout and "--port" in result.stdout


def test_address_in_use_is_a_clear_error_not_a_traceback(cli):
    server = cli("--port", "0")
    result = subprocess.run([sys.executable, "-m", "netmux", "--port", str(server.address[1])],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "in use" in result.stderr


def _pattern(index: int, base: bytes) -> bytes:
    return index.to_bytes(8, "big") + base


def test_peer_that_sends_256_mib_without_reading_keeps_server_memory_bounded(cli):
    """The echo stops reading while its peer does not read; then every byte arrives."""
    server = cli("--port", "0")
    total = 256 * 1024 * 1024
    base = os.urandom(65536 - 8)
    chunk_count = total // 65536
    baseline = server.rss_bytes()
    sent_hash, received_hash = hashlib.sha256(), hashlib.sha256()
    client = socket.create_connection(server.address, timeout=5)
    client.setblocking(False)
    sent = received = 0
    pending = memoryview(b"")
    next_chunk = 0
    peak = baseline

    def fill() -> bool:
        """Send what the kernel takes; False once it takes nothing."""
        nonlocal pending, next_chunk, sent
        progressed = False
        while True:
            if not pending:
                if next_chunk == chunk_count:
                    return progressed
                data = _pattern(next_chunk, base)
                sent_hash.update(data)
                pending = memoryview(data)
                next_chunk += 1
            try:
                count = client.send(pending)
            except BlockingIOError:
                return progressed
            pending = pending[count:]
            sent += count
            progressed = True

    # Phase 1: write only, until everything between us and the server is full.
    deadline = time.monotonic() + 30
    stalled_since = None
    while time.monotonic() < deadline:
        if fill():
            stalled_since = None
        else:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.5:
                break
        time.sleep(0.002)
        peak = max(peak, server.rss_bytes())
    assert sent < total, "the server never pushed back"
    stalled_rss, stalled_sent = server.rss_bytes(), sent

    # Phase 2: read and write until all 256 MiB have made the round trip.
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ | selectors.EVENT_WRITE)
        deadline = time.monotonic() + 120
        samples = 0
        while received < total:
            assert time.monotonic() < deadline, f"only {received} of {total} bytes came back"
            for _, events in selector.select(1):
                if events & selectors.EVENT_READ:
                    data = client.recv(1 << 20)
                    assert data, "the server closed early"
                    received_hash.update(data)
                    received += len(data)
                if events & selectors.EVENT_WRITE:
                    fill()
                    if sent == total:
                        selector.modify(client, selectors.EVENT_READ)
            samples += 1
            if samples % 64 == 0:
                peak = max(peak, server.rss_bytes())
    client.close()
    assert received == total
    assert sent_hash.digest() == received_hash.digest()
    growth = peak - baseline
    print(f"\nslow peer: sent {stalled_sent >> 20} MiB before the stall; server RSS {baseline >> 20} MiB at "
          f"start, {stalled_rss >> 20} MiB stalled, peak growth {growth / 2**20:.1f} MiB over 256 MiB")
    assert growth < 32 * 1024 * 1024


EMFILE_SERVER = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (32, hard))
from netmux.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_descriptor_starvation_backs_off_without_spinning_and_recovers(cli):
    server = cli("--port", "0", code=EMFILE_SERVER)
    clients = []
    try:
        for _ in range(60):                  # more than 32 descriptors can serve
            clients.append(socket.create_connection(server.address, timeout=5))
        server.wait_for_log(r"accept\(\) failed: .*Too many open files")
        cpu_before = server.cpu_seconds()
        time.sleep(1.5)                      # measuring CPU use over a window while starved
        cpu_used = server.cpu_seconds() - cpu_before
        assert cpu_used < 0.3, f"the server spun while starved: {cpu_used:.2f} s of CPU in 1.5 s"
        with socket.create_connection(server.address, timeout=5) as probe:
            probe.sendall(b"x")              # queued behind the starvation
            for client in clients:
                client.close()
            clients.clear()
            probe.settimeout(5)              # recovers within the back-off (<= 1 s) plus work
            assert recv_exactly(probe, 1, timeout=5) == b"x"
        assert server.process.poll() is None
    finally:
        for client in clients:
            client.close()
    assert server.stop(signal.SIGTERM) == 0


def test_readme_examples_run():
    import doctest

    result = doctest.testfile(os.path.join(ROOT, "README.md"), module_relative=False)
    assert result.attempted >= 3 and result.failed == 0, result


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netmux", *args], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args", [
    ["--log-level", "nonsense"],
    ["--port", "70000"], ["--port", "-1"], ["--port", "http"], ["--port", "1.5"],
    ["--max-connections", "0"], ["--max-connections", "-3"], ["--max-connections", "many"],
    ["--idle-timeout", "-1"], ["--idle-timeout", "0"], ["--idle-timeout", "nan"],
    ["--idle-timeout", "inf"], ["--idle-timeout", "-inf"], ["--idle-timeout", "soon"],
    ["echo", "--port", "70000"], ["udp-echo", "--idle-timeout", "nan"],
    ["chat", "--max-backlog", "0"], ["chat", "--max-backlog", "x"],
    ["chat", "--max-line-rate", "0"], ["chat", "--line-burst", "-1"], ["chat", "--flood-timeout", "0"],
    ["chat", "--flood-timeout", "inf"], ["chat", "--max-line-rate", "1.5"],
    ["kv", "--max-request", "-1"], ["kv", "--max-request", "x"],
    ["http", "--max-header-size", "0"], ["http", "--max-body", "-1"],
    ["http", "--header-timeout", "0"], ["http", "--header-timeout", "nan"], ["http", "--header-timeout", "inf"],
    ["http", "--header-timeout", "soon"], ["http", "--body-min-rate", "0"], ["http", "--body-min-rate", "-5"],
    ["http", "--body-min-rate", "1.5"], ["http", "--keepalive-timeout", "-1"], ["http", "--keepalive-timeout", "nan"],
])
def test_bad_option_value_is_a_usage_error_not_a_traceback_or_a_running_server(args):
    result = _run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: python -m netmux"), result.stderr
    assert "error: argument --" in lines[1] and "Traceback" not in result.stderr
    assert "_" not in lines[1].split(":", 2)[2], lines[1]       # no private function's name
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["--max-connections", "5"], ["--idle-timeout", "3"]])
def test_udp_echo_refuses_the_connection_limits_instead_of_ignoring_them(args):
    for argv in (["udp-echo", *args], [*args, "udp-echo"]):
        result = _run_cli(*argv)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert lines[0].startswith("usage: python -m netmux udp-echo") and len(lines) == 2, result.stderr
        assert lines[1] == f"python -m netmux udp-echo: error: udp-echo has no connections to limit ({args[0]})"


def test_an_unknown_server_is_a_usage_error():
    result = _run_cli("gopher")
    assert result.returncode == 2 and "invalid choice: 'gopher'" in result.stderr


@pytest.mark.parametrize("server, own_option", [("echo", None), ("udp-echo", None),
                                                ("chat", "--max-backlog"), ("chat", "--max-line-rate"),
                                                ("chat", "--line-burst"), ("chat", "--flood-timeout")])
def test_server_help_shows_its_own_and_the_common_options(server, own_option):
    result = _run_cli(server, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m netmux {server} [options]")
    for option in ("--host", "--port", "--log-level"):
        assert option in result.stdout
    refused = ("--unix", "--max-connections", "--idle-timeout") if server == "udp-echo" else ()
    for option in ("--unix", "--max-connections", "--idle-timeout"):
        assert (option in result.stdout) == (option not in refused), option   # no option it refuses
    if own_option:
        assert own_option in result.stdout
        assert own_option not in _run_cli("echo", "--help").stdout


@pytest.mark.parametrize("server", ["echo", "udp-echo", "chat", "kv", "http"])
def test_server_help_shows_its_real_default_port(server):
    from netmux import apps

    result = _run_cli(server, "--help")
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())            # argparse wraps lines anywhere
    assert f"(default: {apps.load(server).DEFAULT_PORT})" in help_text
    assert "the server's own" not in help_text


def test_udp_echo_refuses_unix_even_though_its_help_does_not_list_it():
    result = _run_cli("udp-echo", "--unix", "/nonexistent/netmux.sock")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("python -m netmux udp-echo: error: "
                                              "udp-echo cannot serve on a Unix socket (--unix)")


# pip's console script for ``netmux = netmux.__main__:main`` (setup.cfg), as pip writes it.
CONSOLE_SCRIPT = """import re
import sys
from netmux.__main__ import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


def test_the_console_script_says_its_own_name_in_usage_and_errors(tmp_path):
    script = tmp_path / "netmux"
    script.write_text(CONSOLE_SCRIPT)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), *args], cwd=str(tmp_path), env=child_env(),
                              capture_output=True, text=True, timeout=30)

    result = run("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: netmux [SERVER] [options]")
    assert "'netmux SERVER --help'" in " ".join(result.stdout.split())
    assert "python -m" not in result.stdout
    result = run("chat", "--port", "http")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: netmux chat [options]\nnetmux chat: error: argument --port")


def test_help_lists_every_registered_server_with_its_description():
    from netmux import apps

    result = _run_cli("--help")
    assert result.returncode == 0
    for name in apps.SERVERS:
        assert f"\n    {name} " in result.stdout
    assert "TCP echo: writes back what it reads" in result.stdout


def test_options_without_a_server_name_run_echo(cli):
    server = cli("--port", "0", "--max-connections", "5")
    assert "netmux echo server on" in server.log
    with socket.create_connection(server.address, timeout=5) as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
    assert server.stop(signal.SIGTERM) == 0


def test_options_before_the_server_name_are_kept(cli):
    server = cli("--log-level", "debug", "chat", "--port", "0")
    assert "netmux chat server on" in server.log
    with socket.create_connection(server.address, timeout=5) as client:
        recv_exactly(client, 1)
    server.wait_for_log(r"DEBUG")            # the level given before 'chat' held
    assert server.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("server_name", ["echo", "udp-echo", "chat"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_every_server_logs_its_start_and_stop_and_exits_zero_on_a_signal(cli, server_name, signum):
    server = cli(server_name, "--port", "0")
    assert f"netmux {server_name} server on" in server.log
    server.process.send_signal(signum)
    assert server.process.wait(10) == 0
    server.wait_for_log(rf"netmux {server_name} server on \S+ stopped")


def test_udp_echo_answers(cli):
    server = cli("udp-echo", "--port", "0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"datagram", server.address)
        assert client.recvfrom(100) == (b"datagram", server.address)
    assert server.stop(signal.SIGTERM) == 0


def test_a_server_whose_module_is_missing_is_a_one_line_error(monkeypatch):
    from netmux import apps

    monkeypatch.setitem(apps.SERVERS, "echo", "no_such_app")
    with pytest.raises(apps.AppUnavailable, match=r"^the echo server is not part of this netmux"):
        apps.load("echo")


def test_a_missing_optional_dependency_names_the_pip_extra(monkeypatch, tmp_path):
    """An app importing a package that is not installed: the error says which extra brings it."""
    from netmux import apps

    package = tmp_path / "fake_apps"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "needy.py").write_text("import netmux_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(apps, "__name__", "fake_apps")
    monkeypatch.setitem(apps.SERVERS, "http", "needy")
    with pytest.raises(apps.AppUnavailable) as caught:
        apps.load("http")
    assert str(caught.value) == ("the http server needs netmux_no_such_dependency: "
                                 "pip install 'netmux[http]'")


def test_importing_netmux_and_its_command_line_does_not_import_h11():
    code = "import sys, netmux, netmux.cli, netmux.apps; print('h11' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("server, own_options", [
    ("kv", ["--max-request", "--dump"]),
    ("http", ["--root", "--max-header-size", "--max-body", "--header-timeout", "--body-min-rate",
              "--keepalive-timeout"]),
])
def test_kv_and_http_help_show_their_own_options_and_only_theirs(server, own_options):
    result = _run_cli(server, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m netmux {server} [options]")
    for option in ("--host", "--port", "--unix", *own_options):
        assert option in result.stdout
    others = _run_cli("chat" if server == "http" else "http", "--help").stdout
    assert all(option not in others for option in own_options)


def test_http_deadline_options_reach_the_server(cli):
    """--header-timeout 0.5: a head left unfinished is answered 408 half a second after it
    began; --keepalive-timeout 0.5: an answered connection left idle is closed as soon."""
    pytest.importorskip("h11")
    server = cli("http", "--port", "0", "--header-timeout", "0.5", "--keepalive-timeout", "0.5")
    for request, status in ((b"GET / HTTP/1.1\r\nHost: x\r\n", b"408"),
                            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"200")):
        with socket.create_connection(server.address, timeout=10) as client:
            client.sendall(request)
            began = time.monotonic()
            reply = recv_until_eof(client, timeout=10)
            assert reply.startswith(b"HTTP/1.1 " + status + b" "), reply[:60]
            assert 0.4 <= time.monotonic() - began < 8
    assert server.stop(signal.SIGTERM) == 0


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode in (1, 2), result
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("netmux: cannot start"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("server", ["echo", "chat", "kv", "http"])
@pytest.mark.parametrize("case", ["too long", "missing directory", "regular file"])
def test_a_bad_unix_path_is_a_one_line_error_and_leaves_the_file_alone(tmp_path, server, case):
    regular = tmp_path / "regular"
    regular.write_bytes(b"precious\n")
    path = {"too long": str(tmp_path / ("x" * 200)),
            "missing directory": str(tmp_path / "no-such-directory" / "socket"),
            "regular file": str(regular)}[case]
    result = _run_cli(server, "--unix", path)
    _assert_one_line_error(result, {"too long": "too long", "missing directory": "No such file",
                                    "regular file": "not a socket"}[case])
    assert regular.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regular"]


@pytest.mark.parametrize("case", ["missing", "regular file"])
def test_http_root_that_is_not_a_directory_is_a_one_line_error(tmp_path, case):
    regular = tmp_path / "regular"
    regular.write_bytes(b"x")
    root = str(tmp_path / "missing") if case == "missing" else str(regular)
    _assert_one_line_error(_run_cli("http", "--port", "0", "--root", root), "is not a directory")


@pytest.mark.parametrize("server_name", ["echo", "chat"])
def test_sigterm_while_clients_are_connected_and_sending_exits_zero(cli, server_name):
    server = cli(server_name, "--port", "0")
    clients = [socket.create_connection(server.address, timeout=5) for _ in range(5)]
    try:
        for client in clients:
            client.setblocking(False)
        line = b"still talking, still talking\n"
        deadline = time.monotonic() + 10
        stopped = False
        while server.process.poll() is None:
            assert time.monotonic() < deadline, "the server did not stop"
            for client in clients:
                try:
                    client.send(line)
                    client.recv(1 << 16)
                except (BlockingIOError, ConnectionError):
                    pass
            if not stopped and time.monotonic() > deadline - 9.5:      # some traffic first
                server.process.send_signal(signal.SIGTERM)
                stopped = True
            time.sleep(0.001)
        assert server.process.wait(10) == 0, server.log
        server.wait_for_log(rf"netmux {server_name} server on \S+ stopped")
        assert "Traceback" not in server.log and " ERROR " not in server.log, server.log
    finally:
        for client in clients:
            client.close()


# ----------------------------------------------------------------------
# End to end, as API.md promises it (from the acceptance pass)
# ----------------------------------------------------------------------
def test_help_lists_the_servers_the_common_options_and_their_defaults():
    result = subprocess.run([sys.executable, "-m", "netmux", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for word in ["echo", "udp-echo", "chat", "kv", "http", "--host", "--port", "--unix", "8007", "127.0.0.1"]:
        assert word in result.stdout, word


@pytest.mark.parametrize("server", ["kv", "http"])
def test_kv_and_http_start_and_stop_cleanly_from_the_command_line(server):
    process = ServerProcess([server, "--host", "127.0.0.1", "--port", "0"])
    try:
        socket.create_connection(process.address, timeout=5).close()
        assert process.stop(signal.SIGINT) == 0
    finally:
        process.stop(signal.SIGKILL)


def test_kv_speaks_resp_from_the_command_line():
    process = ServerProcess(["kv", "--port", "0"])
    try:
        with socket.create_connection(process.address, timeout=5) as client:
            client.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert recv_exactly(client, 7) == b"+PONG\r\n"
        assert process.stop(signal.SIGTERM) == 0
    finally:
        process.stop(signal.SIGKILL)
