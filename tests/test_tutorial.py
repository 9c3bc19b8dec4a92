"""The tutorial's steps (examples/tutorial/, docs/tutorial/): each test pins what its page claims."""
from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

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
import step10_tasks as step10             # noqa: E402
import step11_conversations as step11     # noqa: E402
import step12_netmux as step12            # noqa: E402

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


def test_step03_two_sends_queued_before_the_read_come_in_one_piece():
    assert step03.two_sends_in_one_piece() == b"hello world"


def test_step03_one_send_larger_than_the_receive_buffer_comes_in_several_pieces():
    size = 1 << 20
    pieces, receive_buffer = step03.one_send_in_pieces(size)
    assert sum(pieces) == size
    assert len(pieces) > 1                                  # the kernel cut it, not recv's size
    assert max(pieces) <= receive_buffer < size             # no piece larger than SO_RCVBUF


def test_step03_a_server_without_select_turns_without_sleeping():
    turns, _ = step03.idle_turns(0.2)
    assert turns > 100          # step 4's select(timeout=0.1) would turn at most 3 times


def test_step03_the_polling_server_echoes_every_client_at_once():
    with step01.make_server() as listener:
        done = threading.Event()
        thread = threading.Thread(target=step03.serve, args=(listener, done.is_set))
        thread.start()
        try:
            address = listener.getsockname()
            with socket.create_connection(address, timeout=10) as first, \
                    socket.create_connection(address, timeout=10) as second:
                for client, message in ((first, b"first"), (second, b"second"), (first, b"again")):
                    client.sendall(message)
                    assert recv_exactly(client, len(message)) == message
        finally:
            done.set()
            thread.join()


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
@given(lines=lines_strategy,
       tail=st.binary(max_size=10).filter(lambda b: b"\n" not in b),
       data=st.data())
def test_step07_the_framer_gives_the_same_lines_however_the_stream_is_cut(
        lines, tail, data):
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


def test_step07_the_line_server_answers_whole_lines_however_they_are_cut():
    with step01.make_server() as listener:
        stop = step05.serving(step07.LineServer(listener).serve)
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as client:
                for piece in (b"hel", b"lo\nwor", b"ld\n"):
                    client.sendall(piece)
                assert recv_exactly(client, 12) == b"HELLO\nWORLD\n"
        finally:
            stop()


# -- step 8 -------------------------------------------------------------------
def test_step08_timers_run_in_deadline_order_not_in_the_order_they_were_set():
    assert step08.timer_order([0.03, 0.01, 0.02, 0.0]) == [0.0, 0.01, 0.02, 0.03]


def test_step08_the_wakeup_pair_interrupts_a_sleeping_select():
    # The other thread calls 0.2 s into a select capped at 1 s: without the byte,
    # the callback waits out the remaining 0.8 s; with it, it runs at once.
    assert step08.threadsafe_latency(wakeup=False, sleep_cap=1.0) >= 0.5   # slept on
    assert step08.threadsafe_latency(wakeup=True, sleep_cap=1.0) < 0.5     # woken at once


def test_step08_the_tick_server_ticks_each_client_and_forgets_one_that_hung_up():
    loop = step08.Loop()
    with step01.make_server() as listener:
        step08.tick_server(loop, listener, interval=0.01)
        stop = step08.run_in_thread(loop)
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as first, \
                    socket.create_connection(listener.getsockname(), timeout=10) as second:
                assert recv_exactly(first, 14) == b"tick 1\ntick 2\n"
                assert recv_exactly(second, 14) == b"tick 1\ntick 2\n"
            watched = loop.selector.get_map
            wait_until(lambda: len(watched()) == 2)   # the wake-up pair and the listener
        finally:
            stop()


# -- step 9 -------------------------------------------------------------------
def start_blocking_greeter():
    loop = step08.Loop()
    listener = step01.make_server()
    step09.blocking_greeter(loop, listener)
    stop_loop = step08.run_in_thread(loop)

    def stop():
        stop_loop()
        listener.close()
    return listener.getsockname(), stop


def test_step09_a_callback_that_waits_blocks_every_other_client():
    address, stop = start_blocking_greeter()
    try:
        with socket.create_connection(address, timeout=10) as slow, \
                socket.create_connection(address, timeout=10) as quick:
            slow.sendall(b"slow\n")                         # half a conversation
            quick.sendall(b"quick\nhi\n")
            assert_not_served(quick)                        # back to step 1
            slow.sendall(b"hello\n")
            assert recv_exactly(slow, 16) == b"slow says hello\n"
            assert recv_exactly(quick, 14) == b"quick says hi\n"
    finally:
        stop()


def test_step09_await_passes_the_awaitables_yield_out_of_send():
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        coroutine = step09.recv(left, 10)
        park = coroutine.send(None)                         # nothing to read: it parks
        assert isinstance(park, step09.ReadyToRead) and park.sock is left
        assert park.events == step09.selectors.EVENT_READ
        right.sendall(b"hi")
        with pytest.raises(StopIteration) as end:
            coroutine.send(None)                            # resumed: recv is retried
        assert end.value.value == b"hi"


def test_step09_run_drives_an_echo_that_parks_on_read_and_on_write():
    size = 1 << 20
    echoed, parks = step09.echo_parks(size)
    assert echoed == size
    assert "ReadyToRead" in parks and "ReadyToWrite" in parks
    assert set(parks) == {"ReadyToRead", "ReadyToWrite"}


# -- step 10 ------------------------------------------------------------------
def test_step10_run_serves_one_client_at_a_time_but_tasks_serve_all():
    with step01.make_server() as listener:
        server = threading.Thread(target=step09.serve, args=(listener, 2))
        server.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as first, \
                    socket.create_connection(listener.getsockname(), timeout=10) as second:
                first.sendall(b"first")
                assert recv_exactly(first, 5) == b"first"
                second.sendall(b"second")
                assert_not_served(second)                   # step 9: one coroutine at a time
                first.close()
                assert recv_exactly(second, 6) == b"second"
        finally:
            server.join(10)
        assert not server.is_alive()
    address, stop = step10.start(step09.echo)
    try:
        with socket.create_connection(address, timeout=10) as first, \
                socket.create_connection(address, timeout=10) as second:
            first.sendall(b"first")
            assert recv_exactly(first, 5) == b"first"
            second.sendall(b"second")
            assert recv_exactly(second, 6) == b"second"     # step 10: while first is connected
    finally:
        stop()


def test_step10_cancel_closes_a_parked_coroutine_and_its_finally_runs():
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
        task = step10.Task(loop, parked())
        loop.run_once(0)                                    # runs to its park
        assert task.parked is left and not task.done
        task.cancel()
        assert finished == [True] and task.done
        assert left not in [key.fileobj for key in loop.selector.get_map().values()]
    finally:
        loop.close()
        left.close()
        right.close()


def test_step10_a_task_records_its_coroutines_exception():
    loop = step08.Loop()

    async def fails():
        raise KeyError("boom")

    try:
        task = step10.Task(loop, fails())
        loop.run_once(0)
        assert task.done and isinstance(task.exception, KeyError)
    finally:
        loop.close()


# -- step 11 ------------------------------------------------------------------
def test_step11_coroutine_greeters_serve_others_during_a_half_finished_conversation():
    address, stop = step10.start(step11.greeter)
    try:
        with socket.create_connection(address, timeout=10) as slow, \
                socket.create_connection(address, timeout=10) as quick:
            slow.sendall(b"slow\n")                         # half a conversation
            quick.sendall(b"quick\nhi\n")
            assert recv_exactly(quick, 14) == b"quick says hi\n"
            slow.sendall(b"hello\n")
            assert recv_exactly(slow, 16) == b"slow says hello\n"
    finally:
        stop()


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(1, 15), max_size=6))
def test_step11_readline_gives_whole_lines_however_the_stream_is_cut(cuts):
    stream = b"ada\nhello there\n"
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        reader = step11.LineReader(left)
        lines, start = [], 0
        for end in sorted(set(cuts)) + [len(stream)]:
            right.sendall(stream[start:end])
            start = max(start, end)
        right.shutdown(socket.SHUT_WR)
        while True:
            line = step09.run(reader.readline())
            if not line:
                break
            lines.append(line)
    assert lines == [b"ada", b"hello there"]


# -- step 12 ------------------------------------------------------------------
def test_step12_the_echo_handler_echoes():
    address, stop = step12.start(step12.Echo)
    try:
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"hello netmux")
            assert recv_exactly(client, 12) == b"hello netmux"
    finally:
        stop()


@pytest.mark.parametrize("greeter", [step12.LineGreeter, step12.StreamGreeter])
def test_step12_netmux_greeters_serve_others_during_a_half_finished_conversation(greeter):
    address, stop = step12.start(greeter)
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


def test_step12_a_silent_client_holds_step11_but_netmux_idle_timeout_closes_it():
    """The claim of the step-12 page: step 11's loop has no idle timeout."""
    address, stop = step10.start(step11.greeter)
    try:
        assert step12.closed_within(address, 1.0) is None      # still held after 1 s
    finally:
        stop()
    address, stop = step12.start(step12.StreamGreeter, idle_timeout=0.2)
    try:
        closed = step12.closed_within(address, 5.0)
        assert closed is not None and 0.15 <= closed < 5.0    # closed by the server, on time
    finally:
        stop()


# -- every step's --demo, and every step's server ---------------------------
def step_env():
    return {**os.environ, "PYTHONPATH": ROOT}     # step 12 imports netmux


@pytest.mark.parametrize("step", STEPS)
def test_every_step_demo_runs_and_exits_by_itself(step):
    extra = ["-n", "100"] if step.startswith("step02") else []
    result = subprocess.run([sys.executable, os.path.join(STEPS_DIR, step), "--demo", *extra],
                            capture_output=True, timeout=60, cwd=ROOT, env=step_env())
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() and not result.stderr, result.stderr.decode()


ECHO = ([b"hello\n"], b"hello\n")
GREETING = ([b"ada\n", b"hi\n"], b"ada says hi\n")
# What nc would send to each step's server, and what it must read back.
EXCHANGES = {
    "step01": ECHO, "step02": ECHO, "step03": ECHO, "step04": ECHO, "step05": ECHO,
    "step06": ECHO, "step07": ([b"hel", b"lo\n"], b"HELLO\n"), "step08": ([], b"tick 1\n"),
    "step09": ECHO, "step10": ECHO, "step11": GREETING, "step12": GREETING,
}


def first_line(process: subprocess.Popen, timeout: float = 10.0) -> str:
    """The first line the process prints, read with a deadline."""
    deadline, text = time.monotonic() + timeout, b""
    while b"\n" not in text and time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.1)[0]:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            text += chunk
    assert b"\n" in text, f"no line printed: {text!r}"
    return text.decode().splitlines()[0]


@pytest.mark.parametrize("step", STEPS)
def test_every_step_serves_nc_on_a_host_port_and_stops_cleanly_on_ctrl_c(step):
    sends, expected = EXCHANGES[step[:6]]
    process = subprocess.Popen([sys.executable, "-u", os.path.join(STEPS_DIR, step), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=step_env())
    try:
        line = first_line(process)
        found = re.search(r" on (127\.0\.0\.1):(\d+)\b", line)
        assert found, f"{step} does not say where it serves as host:port: {line!r}"
        with socket.create_connection((found.group(1), int(found.group(2))), timeout=10) as client:
            for piece in sends:
                client.sendall(piece)
            assert recv_exactly(client, len(expected)) == expected
        process.send_signal(signal.SIGINT)                  # Ctrl-C
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0 and stderr == b"", stderr.decode()   # no traceback
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_every_step_has_a_page_and_every_page_names_its_file():
    pages = sorted(os.listdir(os.path.join(ROOT, "docs", "tutorial")))
    for step in STEPS:
        number = step[4:6]
        page = [name for name in pages if name.startswith(number + "-")]
        assert len(page) == 1, f"no page docs/tutorial/{number}-*.md for {step}"
        with open(os.path.join(ROOT, "docs", "tutorial", page[0])) as text:
            assert f"examples/tutorial/{step}" in text.read()


def netmux_names():
    """Every class and module-level name defined in netmux's modules, by name."""
    import importlib
    import pkgutil

    import netmux
    names = {}
    for info in pkgutil.walk_packages(netmux.__path__, "netmux."):
        if info.name.startswith("netmux.apps."):
            continue                                 # servers, with optional dependencies
        names.update(vars(importlib.import_module(info.name)))
    return names


def test_every_netmux_name_the_pages_cite_where_it_lives_exists():
    """The "In netmux" sections and step 12's tables name functions in the source:
    each ``Class.attribute`` and ``_private`` name they cite must exist (the course's
    own classes share some names, so only those sections are read)."""
    names = netmux_names()
    tutorial = os.path.join(ROOT, "docs", "tutorial")
    for page in sorted(os.listdir(tutorial)):
        with open(os.path.join(tutorial, page)) as file:
            text = file.read()
        marker = "## Where each step lives" if page.startswith("12-") else "## In netmux"
        cited = text.partition(marker)[2]
        for owner, attribute in re.findall(r"`(\w+)\.(\w+)`", cited):
            if owner in names:
                assert hasattr(names[owner], attribute), f"{page}: netmux has no {owner}.{attribute}"
        for private in re.findall(r"`(_\w+)`", cited):     # a module's, or some class's
            assert private in names or any(isinstance(value, type) and hasattr(value, private)
                                           for value in names.values()), f"{page}: netmux has no {private}"

