"""kv's dump file (netmux/apps/kvdump.py) and its use at the start and stop of ``python -m netmux kv``."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import struct
import subprocess
import sys
import zlib
from typing import Any

import pytest

import netmux
from netmux.apps import kv, kvdump
from netmux.apps.kvdump import read_dump, remove_stale_temps, temp_path, write_dump
from netmux.apps.kvstore import Store
from conftest import ROOT, ServerProcess, child_env


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def temps(directory: Any) -> list:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


# ----------------------------------------------------------------------
# The file format
# ----------------------------------------------------------------------
def test_a_dump_round_trips_binary_keys_values_and_deadlines(tmp_path):
    items = [(b"\x00k", bytes(range(256)), -1), (b"", b"", 5), (b"k" * 70000, b"v", 1 << 62)]
    write_dump(str(tmp_path / "kv.dump"), items)
    assert read_dump(str(tmp_path / "kv.dump")) == items
    assert os.listdir(tmp_path) == ["kv.dump"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "empty", "overrun"])
def test_a_damaged_dump_is_refused_not_half_loaded(tmp_path, damage):
    path = str(tmp_path / "kv.dump")
    write_dump(path, [(b"k", b"value", -1), (b"k2", b"v2", 5)])
    content = open(path, "rb").read()
    if damage == "truncate":
        content = content[:-7]
    elif damage == "flip":
        content = content[:20] + bytes([content[20] ^ 1]) + content[21:]
    elif damage == "magic":
        content = b"X" + content[1:]
    elif damage == "empty":
        content = b""
    else:       # a record announcing more bytes than the file holds, with a correct CRC
        body = kvdump._MAGIC + struct.pack(">IIq", 1 << 30, 1, -1) + b"k"
        content = body + struct.pack(">I", zlib.crc32(body))
    open(path, "wb").write(content)
    with pytest.raises(ValueError):
        read_dump(path)


# ----------------------------------------------------------------------
# Temp files: a writer killed midway leaves one; the next write or start removes it
# ----------------------------------------------------------------------
def test_the_temp_file_is_named_after_the_dump_and_the_writer_in_the_same_directory(tmp_path):
    assert temp_path(str(tmp_path / "kv.dump"), 1234) == str(tmp_path / ".kv.dump.1234.tmp")


def test_stale_temps_of_dead_writers_are_removed_live_and_foreign_ones_kept(tmp_path):
    dump = str(tmp_path / "kv.dump")
    dead, ours = temp_path(dump, dead_pid()), temp_path(dump, os.getpid())
    live = temp_path(dump, os.getppid())                      # our parent: alive, writing perhaps
    other = str(tmp_path / ".other.dump.1.tmp")               # another dump's
    for path in (dead, ours, live, other):
        open(path, "wb").write(b"partial")
    assert sorted(remove_stale_temps(dump)) == sorted([dead, ours])
    assert temps(tmp_path) == sorted(os.path.basename(path) for path in (live, other))


KILLED_WRITER = """
import os, signal, sys
from netmux.apps.kvdump import write_dump
def items():
    yield (b"k", b"v" * 100000, -1)
    os.kill(os.getpid(), signal.SIGKILL)     # as a SIGKILL in the middle of SAVE
    yield (b"never", b"", -1)
write_dump(sys.argv[1], items())
"""


def killed_save(dump: str) -> str:
    """Run write_dump in a child that is SIGKILLed midway; return the temp file it left."""
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, dump], env=child_env(), cwd=ROOT)
    assert child.wait(60) == -signal.SIGKILL
    left = temp_path(dump, child.pid)
    assert os.path.getsize(left) > 100000
    return left


def test_a_sigkill_during_save_leaves_a_temp_that_the_next_save_removes(tmp_path):
    dump = str(tmp_path / "kv.dump")
    killed_save(dump)
    write_dump(dump, [(b"k", b"v", -1)])
    assert os.listdir(tmp_path) == ["kv.dump"]


def test_a_sigkill_during_save_leaves_a_temp_that_the_next_start_removes(tmp_path):
    dump = str(tmp_path / "kv.dump")
    left = killed_save(dump)
    server = ServerProcess(["kv", "--port", "0", "--dump", dump])
    try:
        assert f"removed {left}" in server.log
        assert os.listdir(tmp_path) == []
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert os.listdir(tmp_path) == ["kv.dump"]


# ----------------------------------------------------------------------
# The command line: --dump '', no dump yet, a stop while the dump loads
# ----------------------------------------------------------------------
def test_an_empty_dump_path_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "netmux", "kv", "--port", "0", "--dump", ""], env=child_env(),
                            cwd=ROOT, capture_output=True, timeout=60)
    assert result.returncode == 2
    assert b"argument --dump: must name a file" in result.stderr and b"usage:" in result.stderr


def kv_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    kv.add_arguments(parser)
    args = parser.parse_args(argv)
    args.host, args.port = "127.0.0.1", 0
    return args


def test_no_dump_file_yet_is_logged_as_starting_empty_not_as_loading_zero_keys(tmp_path, caplog):
    reactor = netmux.Reactor()
    with caplog.at_level(logging.INFO, logger="netmux"):
        server = kv.make_server(kv_args("--dump", str(tmp_path / "kv.dump")), reactor)
    server.store.dump_path = None        # nothing to save at the close
    server.server_close()
    reactor.close()
    assert f"no dump file at {tmp_path / 'kv.dump'}, starting empty" in caplog.text
    assert "loaded" not in caplog.text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_the_dump_loads_exits_zero_and_saves_nothing(tmp_path, monkeypatch, caplog, signum):
    dump = str(tmp_path / "kv.dump")
    write_dump(dump, [(b"k", b"v", -1)])
    before = open(dump, "rb").read()

    def load_until_stopped(store: Store) -> int:
        os.kill(os.getpid(), signum)
        for _ in range(10 ** 7):       # the handler runs between two bytecodes: at once
            pass
        raise AssertionError("the signal did not stop the load")

    monkeypatch.setattr(Store, "load", load_until_stopped)
    reactor = netmux.Reactor()
    try:
        with caplog.at_level(logging.INFO, logger="netmux"), pytest.raises(SystemExit) as exited:
            kv.make_server(kv_args("--dump", dump), reactor)
    finally:
        reactor.close()
    assert exited.value.code == 0
    assert f"{signal.Signals(signum).name}: shutting down while {dump} was loading" in caplog.text
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)   # put back
    assert open(dump, "rb").read() == before and os.listdir(tmp_path) == ["kv.dump"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_a_large_dump_loads_exits_zero_without_a_traceback(tmp_path, signum):
    dump = str(tmp_path / "kv.dump")
    write_dump(dump, ((b"key:%d" % index, b"v", -1) for index in range(600000)))
    size = os.path.getsize(dump)
    server = ServerProcess(["kv", "--port", "0", "--dump", dump], address_pattern=None)
    try:
        server.wait_for_log("kv: loading")
    finally:
        code = server.stop(signum)
    assert code == 0, server.log
    assert "Traceback" not in server.log
    assert "shutting down while" in server.log, "the load ended before the signal: make the dump larger"
    assert os.path.getsize(dump) == size and os.listdir(tmp_path) == ["kv.dump"]
