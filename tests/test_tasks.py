"""Tasks (netmux/tasks.py): spawn, sleep, timeout, cancel, and closing with the reactor."""
from __future__ import annotations

import gc
import logging
import math
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

import netmux
from conftest import run_until

ROOT = Path(__file__).resolve().parent.parent

# "coroutine ... was never awaited" is a RuntimeWarning: any of them fails the test.
pytestmark = pytest.mark.filterwarnings("error")


def armed_timers(reactor: netmux.Reactor) -> int:
    """Timers and callbacks still due to run, cancelled ones aside."""
    counts = reactor.statistics()
    return counts["timers"] + counts["ready"]


def run_task(reactor: netmux.Reactor, coroutine: Any, timeout: float = 5.0) -> netmux.Task:
    task = reactor.spawn(coroutine)
    run_until(reactor, task.done, timeout)
    return task


# ----------------------------------------------------------------------
# spawn and results
# ----------------------------------------------------------------------
def test_spawn_starts_on_the_next_turn_and_keeps_the_result(reactor):
    log = []

    async def main():
        log.append("ran")
        return 42

    task = reactor.spawn(main())
    assert log == [] and not task.done()
    run_until(reactor, task.done)
    assert log == ["ran"] and task.result() == 42 and task.exception() is None
    assert not task.cancelled() and reactor.pending_tasks == set()
    assert task.cancel() is False and task.result() == 42      # cancelling a finished task: harmless


def test_result_before_done_is_a_runtime_error(reactor):
    async def main():
        await netmux.sleep(10)

    task = reactor.spawn(main())
    with pytest.raises(RuntimeError):
        task.result()
    with pytest.raises(RuntimeError):
        task.exception()
    assert task.cancel()


def test_spawn_needs_a_coroutine_object(reactor):
    async def main():
        pass

    with pytest.raises(TypeError, match="spawn"):
        reactor.spawn(main)


def test_spawn_on_a_closed_reactor_raises_and_leaves_no_unawaited_coroutine():
    reactor = netmux.Reactor()
    reactor.close()

    async def main():
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="closed"):
            reactor.spawn(main())
        gc.collect()


def test_an_exception_escaping_a_task_is_logged_once_at_error_with_traceback(reactor, caplog):
    async def main():
        await netmux.sleep(0)
        raise KeyError("boom")

    with caplog.at_level(logging.DEBUG, logger="netmux"):
        task = run_task(reactor, main())
    records = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], KeyError)]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert isinstance(task.exception(), KeyError)
    with pytest.raises(KeyError):
        task.result()


def test_awaiting_something_that_is_not_netmux_raises_inside_the_coroutine(reactor):
    @types.coroutine
    def foreign():
        yield 42              # what an asyncio future would hand its loop

    async def main():
        with pytest.raises(RuntimeError, match="cannot await"):
            await foreign()
        return "survived"

    assert run_task(reactor, main()).result() == "survived"


# ----------------------------------------------------------------------
# sleep
# ----------------------------------------------------------------------
def test_sleepers_wake_in_deadline_order_and_sleep_zero_is_fifo(reactor):
    log = []

    async def sleeper(name, seconds):
        await netmux.sleep(seconds)
        log.append(name)

    tasks = [reactor.spawn(sleeper(name, seconds)) for name, seconds in
             [("c", 0.06), ("a", 0.02), ("z1", 0), ("b", 0.04), ("z2", 0)]]
    run_until(reactor, lambda: all(t.done() for t in tasks))
    assert log == ["z1", "z2", "a", "b", "c"]
    assert armed_timers(reactor) == 0


def test_sleep_takes_at_least_its_time(reactor):
    async def main():
        start = reactor.time()
        await netmux.sleep(0.05)
        return reactor.time() - start

    assert run_task(reactor, main()).result() >= 0.05


@pytest.mark.parametrize("seconds", [-1, -math.inf, 0, 0.0])
def test_sleep_of_zero_or_negative_returns_on_the_next_turn(reactor, seconds):
    async def main():
        await netmux.sleep(seconds)
        return "woke"

    task = reactor.spawn(main())
    reactor.run_once(0)        # starts it: it parks
    reactor.run_once(0)        # wakes it
    assert task.result() == "woke"


def test_sleep_rejects_nan_and_non_numbers(reactor):
    async def main(value):
        await netmux.sleep(value)

    assert isinstance(run_task(reactor, main(math.nan)).exception(), ValueError)
    assert isinstance(run_task(reactor, main("1")).exception(), TypeError)


def test_sleep_of_inf_never_wakes_and_arms_no_timer_until_cancelled(reactor):
    log = []

    async def main():
        try:
            await netmux.sleep(math.inf)
            log.append("woke")
        finally:
            log.append("finally")

    task = reactor.spawn(main())
    for _ in range(3):
        reactor.run_once(0.01)
    assert not task.done() and armed_timers(reactor) == 0
    assert task.cancel()
    assert log == ["finally"]


# ----------------------------------------------------------------------
# timeout
# ----------------------------------------------------------------------
def test_timeout_raises_the_builtin_timeout_error_and_disarms_everything(reactor):
    async def main():
        async with netmux.timeout(0.02) as scope:
            await netmux.sleep(10)
        return scope

    started = reactor.time()
    task = run_task(reactor, main())
    assert type(task.exception()) is TimeoutError
    assert 0.02 <= reactor.time() - started < 2          # at its time, not the sleep's
    assert armed_timers(reactor) == 0


def test_a_block_that_finishes_in_time_leaves_no_timer(reactor):
    async def main():
        async with netmux.timeout(10) as scope:
            await netmux.sleep(0.01)
        return scope.expired

    assert run_task(reactor, main()).result() is False
    assert armed_timers(reactor) == 0


def test_outer_timeout_passes_through_the_inner_one(reactor):
    log = []

    async def main():
        async with netmux.timeout(0.02):
            try:
                async with netmux.timeout(5):
                    await netmux.sleep(10)
            except TimeoutError:
                log.append("inner block saw a TimeoutError")   # must not: it was not its own
                raise
        log.append("not reached")

    task = run_task(reactor, main())
    assert type(task.exception()) is TimeoutError and log == []


def test_inner_timeout_is_caught_inside_the_outer_which_goes_on(reactor):
    async def main():
        async with netmux.timeout(5) as outer:
            try:
                async with netmux.timeout(0.01):
                    await netmux.sleep(10)
            except TimeoutError:
                pass
            await netmux.sleep(0.01)
        return outer.expired

    assert run_task(reactor, main()).result() is False
    assert armed_timers(reactor) == 0


@pytest.mark.parametrize("seconds", [0, -1])
def test_timeout_of_zero_or_less_expires_at_the_first_wait(reactor, seconds):
    async def main():
        async with netmux.timeout(seconds):
            await netmux.sleep(1)

    assert type(run_task(reactor, main()).exception()) is TimeoutError


def test_timeout_of_inf_or_none_never_expires(reactor):
    async def main():
        async with netmux.timeout(math.inf):
            async with netmux.timeout(None):
                await netmux.sleep(0.01)
        return "done"

    assert run_task(reactor, main()).result() == "done"


def test_timeout_rejects_nan():
    with pytest.raises(ValueError):
        netmux.timeout(math.nan)


# ----------------------------------------------------------------------
# cancel, and closing with the reactor
# ----------------------------------------------------------------------
def test_cancel_closes_the_coroutine_at_its_await_and_runs_finally_at_once(reactor):
    log = []

    async def main():
        try:
            await netmux.sleep(10)
        finally:
            log.append("finally")

    task = reactor.spawn(main())
    reactor.run_once(0)
    assert task.cancel() is True
    assert log == ["finally"] and task.done() and task.cancelled()
    with pytest.raises(netmux.CancelledError):
        task.result()
    with pytest.raises(netmux.CancelledError):
        task.exception()
    assert task.cancel() is False
    assert armed_timers(reactor) == 0 and reactor.pending_tasks == set()


def test_cancelled_error_is_a_base_exception_of_our_own():
    assert issubclass(netmux.CancelledError, BaseException)
    assert not issubclass(netmux.CancelledError, Exception)
    assert netmux.CancelledError.__module__ == "netmux.tasks"


def test_cancel_before_start_never_runs_it(reactor):
    log = []

    async def main():
        log.append("ran")

    task = reactor.spawn(main())
    task.cancel()
    for _ in range(2):
        reactor.run_once(0)
    assert log == [] and task.cancelled()


def test_a_task_cancelling_itself_is_closed_at_its_next_await(reactor):
    log = []
    tasks = []

    async def main():
        try:
            tasks[0].cancel()
            log.append("goes on until it waits")
            await netmux.sleep(0)
            log.append("not reached")
        finally:
            log.append("finally")

    tasks.append(reactor.spawn(main()))
    run_until(reactor, tasks[0].done)
    assert log == ["goes on until it waits", "finally"] and tasks[0].cancelled()


def test_one_task_cancels_another(reactor):
    log = []

    async def victim():
        try:
            await netmux.sleep(10)
        finally:
            log.append("victim finally")

    async def killer(task):
        await netmux.sleep(0.01)
        task.cancel()
        log.append("killed")

    victim_task = reactor.spawn(victim())
    run_task(reactor, killer(victim_task))
    assert log == ["victim finally", "killed"] and victim_task.cancelled()


def test_an_await_inside_finally_while_closing_raises_at_once_and_outer_finally_runs(reactor):
    log = []

    async def main():
        try:
            try:
                await netmux.sleep(10)
            finally:
                log.append("inner finally")
                await netmux.sleep(1)          # cannot wait: the coroutine is being closed
                log.append("not reached")
        finally:
            log.append("outer finally")

    task = reactor.spawn(main())
    reactor.run_once(0)
    task.cancel()
    assert log == ["inner finally", "outer finally"]
    assert armed_timers(reactor) == 0


def test_a_coroutine_that_swallows_generator_exit_is_ended_with_cancelled_error(reactor, caplog):
    log = []

    async def main():
        try:
            while True:
                try:
                    await netmux.sleep(10)
                except GeneratorExit:
                    pass
        finally:
            log.append("finally")

    task = reactor.spawn(main())
    reactor.run_once(0)
    with caplog.at_level(logging.ERROR, logger="netmux"):
        task.cancel()
    assert task.cancelled() and log == ["finally"] and "swallowed GeneratorExit" in caplog.text
    assert armed_timers(reactor) == 0


def test_reactor_close_closes_every_pending_coroutine(reactor):
    log = []

    async def main(name):
        try:
            await netmux.sleep(10)
        finally:
            log.append(name)

    tasks = [reactor.spawn(main(name)) for name in "ab"]
    reactor.run_once(0)
    late = reactor.spawn(main("never started"))
    reactor.close()
    assert sorted(log) == ["a", "b"]
    assert all(t.cancelled() for t in tasks + [late])


def test_timeout_and_cancel_in_a_subprocess_leave_no_warning():
    """The whole life of tasks under -W error: stderr stays empty."""
    code = (
        "import math, netmux\n"
        "r = netmux.Reactor()\n"
        "async def nap():\n"
        "    try:\n"
        "        async with netmux.timeout(0.01):\n"
        "            await netmux.sleep(math.inf)\n"
        "    except TimeoutError:\n"
        "        return 'timed out'\n"
        "async def idle():\n"
        "    await netmux.sleep(10)\n"
        "t1 = r.spawn(nap()); t2 = r.spawn(idle()); t3 = r.spawn(idle())\n"
        "while not t1.done():\n"
        "    r.run_once(0.1)\n"
        "t2.cancel(); r.close()\n"
        "assert t1.result() == 'timed out' and t2.cancelled() and t3.cancelled()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == "ok\n" and result.stderr == "", result.stderr


def test_import_netmux_imports_no_asyncio():
    code = "import sys, netmux; print(sorted(m for m in sys.modules if m.split('.')[0] == 'asyncio'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
