"""Many cores: serve_workers and --workers, in real processes (supervisor, workers, SIGKILL, SIGTERM)."""
from __future__ import annotations

import inspect
import os
import re
import signal
import socket
from typing import Iterator, List

import pytest

import netmux
from netmux.workers import reserve_port, serve_workers

from conftest import Echo, ServerProcess, recv_exactly, recv_until_eof, run_until, wait_until

# A supervisor of two workers, each answering a connection with its pid (under a
# CountingLayer), failing to start while the file argv[1] exists.
SUPERVISOR = """
import logging, os, sys, netmux
from netmux.workers import reserve_port
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
reserved = reserve_port("127.0.0.1", 0)
address = reserved.getsockname()
class Says(netmux.Handler):
    def connection_made(self, transport):
        super().connection_made(transport)
        transport.write(b"%d\\n" % os.getpid())
        transport.close()
def make():
    if os.path.exists(sys.argv[1]):
        raise OSError("told to fail by " + sys.argv[1])
    return netmux.TCPServer(address, lambda: netmux.CountingLayer(Says()), reuse_port=True)
code = netmux.serve_workers(make, 2, grace=2.0, max_boot_failures=3,
                            on_ready=lambda: logging.info("server on %s:%d", *address))
sys.exit(code)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie no one reaps has stopped running)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def worker_pids(process: ServerProcess) -> List[int]:
    """Every worker pid the supervisor logged as started, in order."""
    log = process.log if process.process.stderr.closed else process.read_log()
    return [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", log)]


def served_by(address, count: int) -> List[int]:
    pids = []
    for _ in range(count):
        with socket.create_connection(address, timeout=5) as client:
            pids.append(int(recv_until_eof(client)))
    return pids


@pytest.fixture
def supervisor(tmp_path) -> Iterator[ServerProcess]:
    marker = tmp_path / "fail"
    process = ServerProcess([str(marker)], code=SUPERVISOR)
    process.marker = marker
    try:
        yield process
    finally:
        process.stop(signal.SIGKILL)
        for pid in worker_pids(process):      # ours: never leave one behind, whatever failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_connections_reach_both_workers(supervisor):
    first, second = worker_pids(supervisor)
    seen = set(served_by(supervisor.address, 40))
    assert seen == {first, second}            # each 40-connection run: 1 in 2**39 to miss one


def test_a_killed_worker_is_replaced_and_service_goes_on(supervisor):
    first, second = worker_pids(supervisor)
    os.kill(first, signal.SIGKILL)
    supervisor.wait_for_log(r"worker 1 \(pid %d\) was killed by SIGKILL after [\d.]+ s; restarting" % first)
    supervisor.wait_for_log(r"worker 1 started \(pid (?!%d)\d+\)" % first)
    replacement = worker_pids(supervisor)[-1]
    wait_until(lambda: set(served_by(supervisor.address, 20)) == {second, replacement}, timeout=10)
    assert not alive(first)


def test_sigterm_stops_every_worker_with_exit_code_zero(supervisor):
    pids = worker_pids(supervisor)
    assert served_by(supervisor.address, 2)
    assert supervisor.stop(signal.SIGTERM) == 0
    assert not any(alive(pid) for pid in pids)
    assert "SIGTERM: stopping 2 workers" in supervisor.log


def test_workers_of_a_supervisor_killed_with_sigkill_exit_on_their_own(supervisor):
    pids = worker_pids(supervisor)
    supervisor.process.kill()
    supervisor.process.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    supervisor.wait_for_log(r"worker \d: the supervisor is gone; stopping")


def test_repeated_boot_failures_stop_the_supervisor_with_exit_code_one(supervisor):
    supervisor.marker.write_text("fail")
    first, second = worker_pids(supervisor)
    os.kill(first, signal.SIGKILL)
    supervisor.wait_for_log(r"3 boot failures in a row: stopping", timeout=20)
    assert supervisor.process.wait(20) == 1
    supervisor.stop()
    assert not alive(second)
    assert "cannot start: told to fail" in supervisor.log
    restarts = re.findall(r"restarting in ([\d.]+) s", supervisor.log)
    assert [float(delay) for delay in restarts] == [0.1, 0.2, 0.4]     # the back-off doubles


def test_a_worker_that_cannot_start_at_start_up_stops_everything_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()                         # no SO_REUSEPORT: no worker can join it
        port = taken.getsockname()[1]
        process = ServerProcess(["--workers", "2", "--port", str(port)], address_pattern=None)
        try:
            assert process.process.wait(20) == 1
        finally:
            process.stop(signal.SIGKILL)
    assert "Address already in use" in process.log or "cannot start" in process.log


# ----------------------------------------------------------------------
# The command line: python -m netmux --workers N
# ----------------------------------------------------------------------
def test_cli_workers_serve_echo_on_one_port_and_stop_on_sigterm():
    process = ServerProcess(["--workers", "2", "--port", "0"])
    try:
        assert "(2 workers" in process.log
        pids = worker_pids(process)
        for i in range(10):
            with socket.create_connection(process.address, timeout=5) as client:
                client.sendall(b"hello %d" % i)
                assert recv_exactly(client, len(b"hello %d" % i)) == b"hello %d" % i
        assert process.stop(signal.SIGTERM) == 0
        assert not any(alive(pid) for pid in pids)
    finally:
        process.stop(signal.SIGKILL)


@pytest.mark.parametrize("arguments", [["udp-echo", "--workers", "2"], ["--workers", "0"],
                                       ["--workers", "2", "--unix", "/tmp/x"],
                                       ["chat", "--workers", "2"], ["kv", "--workers", "2"]])
def test_cli_refuses_workers_where_they_cannot_apply(arguments):
    process = ServerProcess(arguments, address_pattern=None)
    try:
        assert process.process.wait(20) == 2
    finally:
        process.stop(signal.SIGKILL)


# ----------------------------------------------------------------------
# In-process pieces
# ----------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, -1, True, 1.5, "2"])
def test_serve_workers_refuses_a_bad_count_before_forking(workers):
    with pytest.raises(ValueError):
        serve_workers(lambda: None, workers)


@pytest.mark.parametrize("grace", [-1, float("nan")])
def test_serve_workers_refuses_a_bad_grace(grace):
    with pytest.raises(ValueError):
        serve_workers(lambda: None, 1, grace=grace)


def test_a_reserved_port_lets_reuse_port_servers_bind_it_and_receives_nothing():
    reserved = reserve_port("127.0.0.1", 0)
    reactor = netmux.Reactor()
    servers = [netmux.TCPServer(reserved.getsockname(), Echo, reactor=reactor, reuse_port=True)
               for _ in range(2)]
    try:
        for _ in range(10):                    # only listening sockets get connections
            with socket.create_connection(reserved.getsockname(), timeout=5) as client:
                client.sendall(b"x")
                client.setblocking(False)
                got: List[bytes] = []

                def echoed() -> bool:
                    try:
                        got.append(client.recv(1))
                    except BlockingIOError:
                        pass
                    return bool(got)
                run_until(reactor, echoed)
                assert got == [b"x"]
    finally:
        for server in servers:
            server.server_close()
        reactor.close()
        reserved.close()


HAS_DRAIN = "grace" in inspect.signature(netmux.TCPServer.shutdown).parameters


@pytest.mark.skipif(not HAS_DRAIN, reason="TCPServer.shutdown(grace=) is not in this tree")
def test_sigterm_drains_every_worker_so_clients_mid_conversation_get_their_replies():
    process = ServerProcess(["--workers", "2", "--port", "0", "--log-level", "INFO"])
    clients = [socket.create_connection(process.address, timeout=5) for _ in range(20)]
    try:
        for client in clients:
            client.sendall(b"x" * 1000)
        process.process.send_signal(signal.SIGTERM)
        process.wait_for_log(r"SIGTERM: stopping 2 workers")
        for client in clients:                # each finishes its conversation, then closes
            assert recv_exactly(client, 1000) == b"x" * 1000
            client.sendall(b"last words")
            assert recv_exactly(client, 10) == b"last words"
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b""
        assert process.process.wait(20) == 0
        with pytest.raises(OSError):          # nothing listens any more: refused
            socket.create_connection(process.address, timeout=5).close()
    finally:
        for client in clients:
            client.close()
        process.stop(signal.SIGKILL)


def test_workers_without_reuse_port_fail_at_start_up_with_a_hint():
    code = """
import logging, sys, netmux
logging.basicConfig(level=logging.INFO)
with netmux.TCPServer(("127.0.0.1", 0), netmux.Handler) as probe:
    address = probe.server_address
sys.exit(netmux.serve_workers(lambda: netmux.TCPServer(address, netmux.Handler), 2))
"""
    process = ServerProcess([], code=code, address_pattern=None)
    try:
        assert process.process.wait(20) == 1
    finally:
        process.stop(signal.SIGKILL)
    assert "reuse_port=True)?" in process.log and "at start-up: stopping" in process.log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "systemd-control-group"])
def test_a_signal_to_the_whole_process_group_drains_once_and_never_forces(signum):
    """Ctrl-C signals every process of the terminal's group; systemd's default
    KillMode=control-group sends SIGTERM to every process of the service. Either way
    the workers hear it directly and from the supervisor: that must stay a drain."""
    process = ServerProcess(["--workers", "2", "--port", "0"], start_new_session=True)
    try:
        pids = worker_pids(process)
        with socket.create_connection(process.address, timeout=5) as client:
            client.sendall(b"before")
            assert recv_exactly(client, 6) == b"before"
            os.killpg(process.process.pid, signum)
            process.wait_for_log(r"%s: stopping 2 workers" % signal.Signals(signum).name)
            if HAS_DRAIN:                       # an open conversation goes on during the drain
                client.sendall(b"during")
                assert recv_exactly(client, 6) == b"during"
        assert process.process.wait(20) == 0
        assert not any(alive(pid) for pid in pids)
        assert "closing every connection now" not in process.read_log()
    finally:
        process.stop(signal.SIGKILL)


@pytest.mark.skipif(not HAS_DRAIN, reason="TCPServer.shutdown(grace=) is not in this tree")
def test_a_second_signal_closes_what_the_drain_still_waits_for():
    process = ServerProcess(["--workers", "2", "--port", "0", "--grace", "30"])
    try:
        with socket.create_connection(process.address, timeout=5) as client:
            client.sendall(b"x")
            assert recv_exactly(client, 1) == b"x"
            process.process.send_signal(signal.SIGTERM)
            process.wait_for_log(r"SIGTERM: stopping 2 workers")
            client.sendall(b"y")                # still served: the drain waits for us
            assert recv_exactly(client, 1) == b"y"
            process.process.send_signal(signal.SIGTERM)
            process.wait_for_log(r"closing every connection now")
            assert recv_until_eof(client) == b""
        assert process.process.wait(10) == 0    # well within the 30 s grace
    finally:
        process.stop(signal.SIGKILL)

