"""The tutorial's steps (examples/tutorial/, docs/tutorial/): each test pins what its page claims."""
from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings, strategies as st

from conftest import recv_exactly, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_DIR = os.path.join(ROOT, "examples", "tutorial")
sys.path.insert(0, STEPS_DIR)     # the steps import each other, as when run as scripts

import step01_blocking as step01          # noqa: E402
import step02_threads as step02           # noqa: E402
import step03_nonblocking as step03       # noqa: E402
import step04_selectors as step04         # noqa: E402
import step05_buffers as step05           # noqa: E402
import step06_backpressure as step06      # noqa: E402
import step07_framing as step07           # noqa: E402
import step08_timers as step08            # noqa: E402
import step09_coroutines as step09        # noqa: E402
import step10_netmux as step10            # noqa: E402

STEPS = sorted(name for name in os.listdir(STEPS_DIR) if name.startswith("step") and name.endswith(".py"))
NOT_SERVED = 0.3       # how long a client waits to show it is *not* being served


def assert_not_served(client: socket.socket) -> None:
    client.settimeout(NOT_SERVED)
    with pytest.raises(socket.timeout):
        client.recv(1024)


# -- step 1 -------------------------------------------------------------------
def test_step01_the_second_client_is_not_served_while_the_first_is_connected():
    with step01.make_server() as listener:
        server = threading.Thread(target=step01.serve, args=(listener, 2))
        server.start()
        address = listener.getsockname()
        try:
            with socket.create_connection(address, timeout=10) as first, \
                    socket.create_connection(address, timeout=10) as second:
                first.sendall(b"first")
                assert recv_exactly(first, 5) == b"first"
                second.sendall(b"second")      # accepted by the kernel's backlog, not by serve()
                assert_not_served(second)
                first.close()
                assert recv_exactly(second, 6) == b"second"
        finally:
            server.join(10)
        assert not server.is_alive()


# -- step 2 -------------------------------------------------------------------
@pytest.fixture
def threading_server():
    server = step02.make_server()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_step02_threads_serve_a_second_client_while_the_first_is_connected(threading_server):
    with socket.create_connection(threading_server.server_address, timeout=10) as first:
        first.sendall(b"first")
        assert recv_exactly(first, 5) == b"first"
        step02.round_trip(threading_server.server_address, b"second", timeout=5)


def test_step02_each_idle_connection_costs_a_thread_and_its_memory(threading_server):
    n = 200
    before = threading.active_count()
    grown = step02.measure(threading_server, n)
    assert grown["Threads"] == n
    assert grown["VmSize"] >= n * 1024          # a stack of at least 1 MiB reserved for each
    assert grown["VmRSS"] >= n * 4              # and at least one page of it touched
    wait_until(lambda: threading.active_count() == before)   # the threads end with their clients


# -- step 3 -------------------------------------------------------------------
def test_step03_recv_with_nothing_to_read_raises_eagain():
    import errno
    assert step03.recv_with_nothing_to_read() == errno.EAGAIN


def test_step03_send_takes_only_part_of_a_large_buffer_then_eagain():
    import errno
    size = 64 << 20
    sent, code = step03.send_more_than_fits(size)
    assert 0 < sent < size
    assert code == errno.EAGAIN


def test_step03_recv_returns_any_piece_of_the_stream():
    together, apart = step03.pieces_of_the_stream()
    assert together == b"hello world"                       # two sends, one piece
    assert apart == [b"one ", b"mess", b"age"]              # one send, three pieces


# -- step 4 -------------------------------------------------------------------
def serving_step04():
    listener = step01.make_server()
    stop = step05.serving(lambda stop: step04.serve(listener, stop))

    def close():
        stop()
        listener.close()
    return listener.getsockname(), close


def test_step04_one_thread_serves_a_second_client_while_the_first_is_connected():
    address, close = serving_step04()
    try:
        with socket.create_connection(address, timeout=10) as first:
            first.sendall(b"first")
            assert recv_exactly(first, 5) == b"first"
            step01.round_trip(address, b"second", timeout=5)
            first.sendall(b"still here")
            assert recv_exactly(first, 10) == b"still here"
    finally:
        close()


def test_step04_loses_what_send_did_not_take():
    """The failure step 5 starts from: a client that sends a lot before reading."""
    size = 16 << 20
    address, close = serving_step04()
    try:
        assert step05.echo_bulk(address, size) < size
    finally:
        close()


# -- step 5 -------------------------------------------------------------------
def test_step05_buffers_what_send_did_not_take_and_loses_nothing():
    size = 16 << 20
    with step01.make_server() as listener:
        server = step05.Server(listener)
        stop = step05.serving(server.serve)
        try:
            assert step05.echo_bulk(listener.getsockname(), size) == size
            assert server.peak > 0                       # something had to wait in the buffer
        finally:
            stop()


@pytest.mark.parametrize("always_writable", [True, False])
def test_step05_an_idle_connection_wakes_the_loop_only_when_write_is_always_watched(always_writable):
    with step01.make_server() as listener, socket.create_connection(listener.getsockname()) as client:
        server = step05.Server(listener, always_writable)
        try:
            def turn_until(predicate):
                def turned():
                    server.run_once(0.05)
                    return predicate()
                wait_until(turned)

            turn_until(lambda: server.connections)                    # accepted
            client.sendall(b"ping")
            turn_until(lambda: select.select([client], [], [], 0)[0])  # echoed
            assert client.recv(4) == b"ping"
            (connection,) = server.connections
            assert not connection.buffer
            ready = server.run_once(0)               # nothing to read, nothing to send
            if always_writable:
                assert ready == 1                     # writable, again: the loop spins
            else:
                assert ready == 0 and connection.watching == step05.READ
        finally:
            server.close()


# -- step 6 -------------------------------------------------------------------
def test_step06_the_naive_buffer_grows_against_a_peer_that_never_reads():
    size = 32 << 20
    sent, peak = step06.peak_buffer(step05.Server, size)
    assert sent == size                      # step 5 kept reading everything the peer sent
    assert peak > 16 << 20                   # and held most of it


def test_step06_pausing_reading_bounds_the_buffer_and_stops_the_peer():
    size = 32 << 20
    sent, peak = step06.peak_buffer(step06.BoundedServer, size)
    assert peak <= step06.HIGH_WATER + 65536  # high water plus one recv, at most
    assert sent < size                         # the peer was stopped by TCP itself


# -- step 7 -------------------------------------------------------------------
lines_strategy = st.lists(st.binary(max_size=20).filter(lambda line: b"\n" not in line), max_size=20)


@settings(max_examples=300, deadline=None)
@given(lines=lines_strategy, tail=st.binary(max_size=10).filter(lambda b: b"\n" not in b),
       data=st.data())
def test_step07_the_framer_gives_the_same_lines_however_the_stream_is_cut(lines, tail, data):
    stream = b"".join(step07.LineFramer.encode(line) for line in lines) + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[start:end] for start, end in zip([0] + cuts, cuts + [len(stream)])]
    framer = step07.LineFramer()
    assert [line for piece in pieces for line in framer.feed(piece)] == lines
    assert bytes(framer.buffer) == tail            # the incomplete last line waits


def test_step07_recv_chunks_are_not_lines():
    pieces = [b"one\n", b"two\n", b"thr", b"ee\n"]
    chunks, naive, framed = step07.lines_over_tcp(pieces)
    assert b"".join(chunks) == b"".join(pieces)
    assert framed == [b"one", b"two", b"three"]
    assert naive != framed


def test_step07_a_line_over_max_length_is_an_error():
    framer = step07.LineFramer(max_length=4)
    assert framer.feed(b"ok\n1234") == [b"ok"]
    with pytest.raises(ValueError):
        framer.feed(b"5")


# -- step 8 -------------------------------------------------------------------
def test_step08_timers_run_in_deadline_order_not_in_the_order_they_were_set():
    assert step08.timer_order([0.03, 0.01, 0.02, 0.0]) == [0.0, 0.01, 0.02, 0.03]


def test_step08_the_wakeup_pair_interrupts_a_sleeping_select():
    assert step08.threadsafe_latency(wakeup=False, sleep_cap=1.0) >= 0.5   # slept on
    assert step08.threadsafe_latency(wakeup=True, sleep_cap=1.0) < 0.5     # woken at once


# -- step 9 -------------------------------------------------------------------
@pytest.mark.parametrize("blocking", [True, False])
def test_step09_a_half_finished_conversation_blocks_others_only_in_the_blocking_callback(blocking):
    address, stop = step09.start_greeter(blocking)
    try:
        with socket.create_connection(address, timeout=10) as slow, \
                socket.create_connection(address, timeout=10) as quick:
            slow.sendall(b"slow\n")                         # half a conversation
            quick.sendall(b"quick\nhi\n")
            if blocking:
                assert_not_served(quick)                    # back to step 1
            else:
                assert recv_exactly(quick, 14) == b"quick says hi\n"
            slow.sendall(b"hello\n")
            assert recv_exactly(slow, 16) == b"slow says hello\n"
            if blocking:
                assert recv_exactly(quick, 14) == b"quick says hi\n"
    finally:
        stop()


def test_step09_cancel_closes_a_parked_coroutine_and_its_finally_runs():
    loop = step08.Loop()
    left, right = socket.socketpair()
    left.setblocking(False)
    finished = []

    async def parked():
        try:
            await step09.recv(left, 10)
        finally:
            finished.append(True)

    try:
        task = step09.Task(loop, parked())
        loop.run_once(0)                                    # runs to its park
        assert task.parked is left and not task.done
        task.cancel()
        assert finished == [True] and task.done
        assert left not in [key.fileobj for key in loop.selector.get_map().values()]
    finally:
        loop.close()
        left.close()
        right.close()


def test_step09_a_task_records_its_coroutines_exception():
    loop = step08.Loop()

    async def fails():
        raise KeyError("boom")

    try:
        task = step09.Task(loop, fails())
        loop.run_once(0)
        assert task.done and isinstance(task.exception, KeyError)
    finally:
        loop.close()


# -- step 10 ------------------------------------------------------------------
def test_step10_the_echo_handler_echoes():
    address, stop = step10.start(step10.Echo)
    try:
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"hello netmux")
            assert recv_exactly(client, 12) == b"hello netmux"
    finally:
        stop()


@pytest.mark.parametrize("greeter", [step10.LineGreeter, step10.StreamGreeter])
def test_step10_netmux_greeters_serve_others_during_a_half_finished_conversation(greeter):
    address, stop = step10.start(greeter)
    try:
        with socket.create_connection(address, timeout=10) as slow, \
                socket.create_connection(address, timeout=10) as quick:
            slow.sendall(b"slow\n")
            quick.sendall(b"quick\nhi\n")
            assert recv_exactly(quick, 14) == b"quick says hi\n"
            slow.sendall(b"hello\n")
            assert recv_exactly(slow, 16) == b"slow says hello\n"
    finally:
        stop()


def test_step10_a_silent_client_holds_step09_but_netmux_idle_timeout_closes_it():
    """The claim of the step-10 page: step 9's loop has no idle timeout."""
    address, stop = step09.start_greeter(blocking=False)
    try:
        assert step10.closed_within(address, 1.0) is None      # still held after 1 s
    finally:
        stop()
    address, stop = step10.start(step10.StreamGreeter, idle_timeout=0.2)
    try:
        closed = step10.closed_within(address, 5.0)
        assert closed is not None and 0.15 <= closed < 5.0    # closed by the server, on time
    finally:
        stop()


# -- every step's --demo ------------------------------------------------------
@pytest.mark.parametrize("step", STEPS)
def test_every_step_demo_runs_and_exits_by_itself(step):
    extra = ["-n", "100"] if step.startswith("step02") else []
    result = subprocess.run([sys.executable, os.path.join(STEPS_DIR, step), "--demo", *extra],
                            capture_output=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})   # step 10 imports netmux
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() and not result.stderr, result.stderr.decode()


def test_every_step_has_a_page_and_every_page_names_its_file():
    pages = sorted(os.listdir(os.path.join(ROOT, "docs", "tutorial")))
    for step in STEPS:
        number = step[4:6]
        page = [name for name in pages if name.startswith(number + "-")]
        assert len(page) == 1, f"no page docs/tutorial/{number}-*.md for {step}"
        with open(os.path.join(ROOT, "docs", "tutorial", page[0])) as text:
            assert f"examples/tutorial/{step}" in text.read()
