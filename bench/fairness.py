#!/usr/bin/env python3
"""Fairness: a well-behaved client's latency beside each hostile client (issue 16).

    python bench/fairness.py                                        # every scenario, every server (~2.5 min)
    python bench/fairness.py --netmux-root /work/wt-before --label before
    python bench/fairness.py --scenarios kv-pipeline,kv-append --servers netmux,redis
    python bench/fairness.py --label after --extra-args 'netmux-http=--header-timeout 3'

For each scenario and server: a fresh server process pinned to core 0
(``taskset -c 0``), then the hostile client(s) on core 1 at ``nice 10``; after
a 1 s head start the well-behaved client (this process, on core 1 at normal
priority: it wakes ahead of the hostile on their shared core) times
its requests for a few seconds while the hostile goes on; then everything is
stopped. A measured request that gets no answer within its cap counts as the
cap and as a failure. The report gives, per scenario and server, the
well-behaved client's p50/p99/max latency, its failures, how many requests
took over 50 ms, and what the hostile achieved; it is printed and written to
bench/results/fairness.md, one section per ``--label``: a run replaces the
rows (scenario, server) it measured under its label and keeps the others (all
kept in bench/results/fairness.json), and a table sets the labels side by side.

Servers: netmux's ready-made servers, run as ``python -m netmux APP`` with
``PYTHONPATH=--netmux-root`` from a temporary directory (so the checkout
named is the one imported), beside redis-server (kv), nginx (one worker,
``client_header_timeout 3s``) and uvicorn+h11 (http, the hello page of
bench/servers/asgi_hello.py); nginx and netmux serve the same file. Only
127.0.0.1 is used; every client loop is bounded in count and time, and every
process started is killed on the way out (also on Ctrl-C or an error).

The clients (the measurer, and each hostile client, which runs as a child:
``bench/fairness_clients.py KIND PORT SECONDS``) are in bench/fairness_clients.py.
"""
import argparse
import ctypes
import datetime
import importlib.util
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fairness_clients import (HOST, RespReader, Samples, http_get, measure_chat,  # noqa: E402
                              measure_http, measure_ping, read_until)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")

SERVER_CORE = "0"
CLIENT_CORE = "1"
HOSTILE_NICE = "10"
HEAD_START = 1.0          # seconds the hostile runs before the measurement starts



# ======================================================================
# Child processes: every one we start is killed on the way out
# ======================================================================
_children: List[subprocess.Popen] = []


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when this script dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


def spawn(argv: List[str], **kwargs: Any) -> subprocess.Popen:
    """Start ``argv`` in a session of its own (a terminal's Ctrl-C reaches only us, and
    ``stop`` can end the whole group, nginx's worker too), remembered for ``stop_all``."""
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group of ``proc`` (one we started), SIGKILL it after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.wait()
    try:                                    # a worker left behind by a killed master
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, grace=1.0)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_hostile(kind: str, port: int, seconds: float) -> subprocess.Popen:
    return spawn(["nice", "-n", HOSTILE_NICE, "taskset", "-c", CLIENT_CORE, sys.executable,
                  os.path.join(HERE, "fairness_clients.py"), kind, str(port), str(seconds)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_hostile(proc: subprocess.Popen) -> Dict[str, Any]:
    """Stop a hostile child and return what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        stop(proc)
        out, err = proc.communicate()
    if proc in _children:
        _children.remove(proc)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": "no report: " + err.decode(errors="replace").strip()[-300:]}


# ======================================================================
# The servers
# ======================================================================
class Server:
    """One fresh server process (group) on a port, with its log and temporary files."""

    def __init__(self, name: str, port: int, workdir: str, proc: subprocess.Popen, log: str) -> None:
        self.name, self.port, self.workdir, self.proc, self.log = name, port, workdir, proc, log

    def log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as file:
                return file.read()[-600:]
        except OSError:
            return ""


def server_argv(name: str, kind: str, port: int, workdir: str, site: str, args: argparse.Namespace,
                netmux_options: List[str]) -> List[str]:
    """The command line of server ``name`` for a scenario of ``kind`` (http, kv, chat)."""
    extra = args.extra_args
    if name == "netmux":
        argv = [sys.executable, "-m", "netmux", kind, "--host", HOST, "--port", str(port),
                "--log-level", "WARNING"] + (["--root", site] if kind == "http" else [])
        return argv + netmux_options + extra.get("netmux", []) + extra.get(f"netmux-{kind}", [])
    if name == "redis":
        return ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", workdir] + extra.get("redis", [])
    if name == "nginx":
        config = os.path.join(workdir, "nginx.conf")
        with open(config, "w") as file:
            file.write(nginx_config(port, workdir, site))
        return ["nginx", "-p", workdir, "-c", config, "-e", os.path.join(workdir, "error.log")] + extra.get(
            "nginx", [])
    if name == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--app-dir", os.path.join(HERE, "servers"), "asgi_hello:app",
                "--host", HOST, "--port", str(port), "--http", "h11", "--loop", uvicorn_loop(),
                "--log-level", "warning", "--no-access-log"] + extra.get("uvicorn", [])
    raise ValueError(name)


def nginx_config(port: int, workdir: str, site: str) -> str:
    """One worker (netmux and redis are single-threaded), defaults otherwise, but a 3 s
    client_header_timeout (its default is 60 s) to match netmux's --idle-timeout 3."""
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {os.path.join(workdir, kind)};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process on;
worker_processes 1;
{user}
pid {os.path.join(workdir, "nginx.pid")};
error_log {os.path.join(workdir, "error.log")} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    types {{ text/html html; }}
    default_type application/octet-stream;
    server {{
        listen {HOST}:{port};
        root {site};
        client_header_timeout 3s;
    }}
}}
"""


def uvicorn_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def start_server(name: str, kind: str, site: str, args: argparse.Namespace,
                 netmux_options: List[str]) -> Server:
    """A fresh server pinned to the server core, once it answers a first request."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix=f"fairness-{name}-")
    argv = server_argv(name, kind, port, workdir, site, args, netmux_options)
    env = dict(os.environ)
    if name == "netmux":
        env["PYTHONPATH"] = args.netmux_root    # the checkout asked for, not an installed netmux
    log = os.path.join(workdir, "server.log")
    if not shutil.which(argv[0]):
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"{argv[0]} is not installed")
    with open(log, "wb") as out:
        proc = spawn(["taskset", "-c", SERVER_CORE] + argv, cwd=workdir, env=env,
                     stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, port, workdir, proc, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            READY[kind](port)
            return server
        except (OSError, ConnectionError):
            time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"{name} ({kind}) did not answer on port {port}: {server.log_tail()}")


def stop_server(server: Server) -> None:
    stop(server.proc)
    shutil.rmtree(server.workdir, ignore_errors=True)


def _ready_kv(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        if RespReader(sock).reply(time.monotonic() + 1) != b"PONG":
            raise ConnectionError("not PONG")


def _ready_chat(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=1) as sock:
        read_until(sock, bytearray(), b"* welcome", time.monotonic() + 1)


READY: Dict[str, Callable[[int], None]] = {
    "http": lambda port: http_get(port, 1.0), "kv": _ready_kv, "chat": _ready_chat}


# ======================================================================
# The scenarios
# ======================================================================
class Scenario:
    """A hostile client against a server kind, and how the well-behaved client measures."""

    def __init__(self, kind: str, servers: Tuple[str, ...], hostile: Optional[str], measure: Callable[..., List[Samples]],
                 window: float, cap: float, gap: float, describe: str,
                 netmux_options: Tuple[str, ...] = (), after_t: Optional[float] = None) -> None:
        self.kind, self.servers, self.hostile, self.measure = kind, servers, hostile, measure
        self.window, self.cap, self.gap, self.describe = window, cap, gap, describe
        # The hostile announces a moment t (its first line): measure until t + after_t,
        # within ``window`` at most.
        self.after_t = after_t
        self.netmux_options = list(netmux_options)


SCENARIOS: Dict[str, Scenario] = {
    "http-idle": Scenario(
        "http", ("netmux", "nginx", "uvicorn"), None, measure_http, 3.0, 5.0, 0.010,
        "no hostile client: the well-behaved client alone, as `http-pipeline` measures (the floor)"),
    "kv-idle": Scenario(
        "kv", ("netmux", "redis"), None, measure_ping, 3.0, 5.0, 0.001,
        "no hostile client: PING every 1 ms alone (the floor)"),
    "chat-idle": Scenario(
        "chat", ("netmux",), None, measure_chat, 3.0, 5.0, 0.050,
        "no hostile client: new members alone, as `chat-flood` measures (the floor)"),
    "http-pipeline": Scenario(
        "http", ("netmux", "nginx", "uvicorn"), "http-pipeline", measure_http, 4.0, 5.0, 0.010,
        "one client pipelines `GET / HTTP/1.1` 10,000 per send (at most 20,000 unanswered) and reads "
        "the answers; measured: `GET /` with Connection: close, a new connection each, every 10 ms"),
    "http-slowloris": Scenario(
        "http", ("netmux", "nginx", "uvicorn"), "slowloris", measure_http, 5.0, 10.0, 0.100,
        "20 clients each send one byte of a request head per second (netmux: `--max-connections 20 "
        "--idle-timeout 3`; nginx: `client_header_timeout 3s`; uvicorn: defaults); measured: `GET /` "
        "on a new connection every 100 ms, capped at 10 s",
        netmux_options=("--max-connections", "20", "--idle-timeout", "3")),
    "kv-pipeline": Scenario(
        "kv", ("netmux", "redis"), "redis-benchmark", measure_ping, 4.0, 5.0, 0.001,
        "`redis-benchmark -P 10000 -n 100000000 -t ping -q` (its default 50 connections); "
        "measured: PING on its own connection every 1 ms"),
    "kv-keys-pattern": Scenario(
        "kv", ("netmux", "redis"), "kv-keys", measure_ping, 4.0, 5.0, 0.001,
        "one client sends `KEYS <'a*' x 512 Ki: 1 MiB>` and `CONFIG GET` with four such patterns, in turn, "
        "each after the last answer (1,000 keys stored); measured: PING every 1 ms"),
    "kv-append": Scenario(
        "kv", ("netmux", "redis"), "kv-append", measure_ping, 4.0, 5.0, 0.001,
        "one client builds a 64 MiB value with 64 APPENDs of 1 MiB, then sends rounds of 300 pipelined "
        "one-byte APPENDs to it; measured: PING every 1 ms"),
    "kv-expire": Scenario(
        "kv", ("netmux", "redis"), "kv-expire", measure_ping, 40.0, 5.0, 0.001,
        "one client sets 600,000 keys `SET k v PXAT t` (5,000 per send), then DELs them (100 keys a "
        "command); t is set to come after the DELs (1.5 times the time 5,000 keys took, scaled, + 2 s); "
        "measured: PING every 1 ms from 1 s to t + 1.5 s", after_t=1.5),
    "chat-flood": Scenario(
        "chat", ("netmux",), "chat-flood", measure_chat, 4.0, 5.0, 0.050,
        "10 members of the lobby read everything, an 11th sends `a\\n` as fast as it can; measured: a "
        "new member every 50 ms, time to its welcome line, then to the answer of `/who`"),
}
SERVER_NAMES = ("netmux", "redis", "nginx", "uvicorn")


def start_load(scenario: Scenario, port: int,
               seconds: float) -> Tuple[Optional[subprocess.Popen], Optional[str]]:
    """The hostile of ``scenario``: none, redis-benchmark (output to a file), or one of ours."""
    if scenario.hostile is None:
        return None, None
    if scenario.hostile == "redis-benchmark" and shutil.which("redis-benchmark"):
        output = tempfile.NamedTemporaryFile(prefix="fairness-redis-benchmark-", delete=False)
        proc = spawn(["timeout", "-k", "2", str(int(seconds) + 1), "nice", "-n", HOSTILE_NICE, "taskset", "-c",
                      CLIENT_CORE, "redis-benchmark", "-h", HOST, "-p", str(port), "-P", "10000",
                      "-n", "100000000", "-t", "ping", "-q"], stdout=output, stderr=subprocess.STDOUT)
        output.close()
        return proc, output.name
    kind = "kv-ping-pipeline" if scenario.hostile == "redis-benchmark" else scenario.hostile
    return start_hostile(kind, port, seconds), None


def finish_load(proc: Optional[subprocess.Popen], output: Optional[str]) -> Dict[str, Any]:
    if proc is None:
        return {}
    if output is None:
        return finish_hostile(proc)
    stop(proc)
    with open(output, errors="replace") as file:
        text = file.read()
    rates = re.findall(r"(PING_\w+): rps=[\d.]+ \(overall: ([\d.]+)\)", text)
    return {"redis_benchmark": {test: float(rate) for test, rate in rates}}


def run_one(name: str, scenario_name: str, scenario: Scenario, site: str,
            args: argparse.Namespace) -> Dict[str, Any]:
    """Fresh server, hostile, head start, measurement, stop: one row (or two) of the report."""
    server = start_server(name, scenario.kind, site, args, scenario.netmux_options)
    load, output = None, None
    try:
        hostile_seconds = HEAD_START + scenario.window + scenario.cap + 5      # its own bound
        load, output = start_load(scenario, server.port, hostile_seconds)
        time.sleep(HEAD_START)
        window = scenario.window
        if scenario.after_t is not None and load is not None:
            window = min(window, announced_t(load, timeout=window) + scenario.after_t - time.time())
        began = time.time()
        samples = scenario.measure(server.port, window, scenario.cap, scenario.gap)
        ended = time.time()
        hostile = finish_load(load, output)
        load = None
        alive = server.proc.poll() is None
    finally:
        if load is not None:
            stop(load)
        if output is not None and os.path.exists(output):
            os.unlink(output)
        stop_server(server)
    notes = describe_hostile(scenario_name, hostile, samples, began, ended)
    if not alive:
        notes = "the server died. " + notes
    return {"scenario": scenario_name, "server": name, "measured": [sample.summary() for sample in samples],
            "notes": notes}


def announced_t(proc: subprocess.Popen, timeout: float) -> float:
    """The t of the hostile's first line, ``{"t": t}``, read unbuffered (communicate()
    reads the rest later); now, if none comes within ``timeout``."""
    assert proc.stdout is not None
    stdout = proc.stdout.fileno()
    line, deadline = b"", time.monotonic() + timeout
    while not line.endswith(b"\n") and len(line) < 200:
        ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        byte = os.read(stdout, 1) if ready else b""
        if not byte:
            return time.time()
        line += byte
    try:
        return float(json.loads(line)["t"])
    except (ValueError, KeyError, TypeError):
        return time.time()


def describe_hostile(scenario: str, hostile: Dict[str, Any], samples: List[Samples], began: float,
                     ended: float) -> str:
    """One line on what the hostile achieved (and, for kv-expire, the latency around t)."""
    parts = []
    seconds = hostile.get("seconds") or (ended - began + HEAD_START)
    if "redis_benchmark" in hostile:
        rates = hostile["redis_benchmark"]
        parts.append("redis-benchmark: " + (", ".join(f"{test} {rate:,.0f}/s" for test, rate in rates.items())
                                            or "no rate printed"))
    if scenario == "http-pipeline" or "responses" in hostile:
        parts.append(f"hostile: {hostile.get('responses', 0) / seconds:,.0f} answers/s on "
                     f"{hostile.get('connections', 0)} connection(s)")
    if "closed_after" in hostile:
        closed = [when for when in hostile["closed_after"] if when is not None]
        still = len(hostile["closed_after"]) - len(closed)
        answers = sorted({answer for answer in hostile.get("answers", []) if answer})
        ages = hostile.get("open_for") or [0]
        if closed:
            parts.append(f"slow clients cut: {len(closed)}/{hostile['clients']} after "
                         f"{min(closed):.1f}-{max(closed):.1f} s" + (f" ({', '.join(answers)})" if answers else ""))
        parts.append(f"still open after {max(ages):.1f} s: {still}")
    if "times" in hostile:
        for command, times in hostile["times"].items():
            if times:
                ordered = sorted(times)
                parts.append(f"{command} itself: {ordered[len(ordered) // 2] * 1000:,.0f} ms median, "
                             f"{ordered[-1] * 1000:,.0f} ms max, {len(times)} done")
            else:
                parts.append(f"{command} itself: none answered")
    if "build_seconds" in hostile:
        rounds = sorted(hostile.get("rounds", []))
        parts.append(f"64 MiB built in {hostile['build_seconds'] * 1000:,.0f} ms; "
                     + (f"{len(rounds)} rounds of 300 APPENDs, {rounds[len(rounds) // 2] * 1000:,.1f} ms median"
                        if rounds else "no round of 300 APPENDs finished"))
    if "t" in hostile:
        t = hostile["t"]
        for phase, label in (("set_done", "SETs done"), ("del_done", "DELs done")):
            if phase in hostile:
                early = t - hostile[phase]
                parts.append(f"{label} {abs(early):.1f} s {'before' if early >= 0 else 'after'} t")
        near = [latency for sample in samples for stamp, latency in zip(sample.stamps, sample.latencies)
                if t - 0.5 <= stamp <= t + 1.5]
        if near:
            parts.append(f"max from t - 0.5 s to t + 1.5 s: {fmt_ms(max(near))} ms ({len(near)} PINGs)")
    if "lines_sent" in hostile:
        parts.append(f"flooder: {hostile['lines_sent'] / seconds:,.0f} lines/s sent"
                     f"{' (then dropped by the server)' if hostile.get('flooder_dropped') else ''}; "
                     f"readers dropped: {hostile.get('dropped', 0)}")
    if hostile.get("errors"):
        parts.append("hostile errors: " + "; ".join(hostile["errors"][:3]))
    if hostile.get("error"):
        parts.append("hostile: " + hostile["error"])
    return "; ".join(parts)


# ======================================================================
# The report
# ======================================================================
def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def _tool_version(argv: List[str], pattern: str) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    found = re.search(pattern, result.stdout + result.stderr)
    return found.group(1) if found else "?"


def describe_run(args: argparse.Namespace, argv: List[str]) -> Dict[str, Any]:
    commit = subprocess.run(["git", "-C", args.netmux_root, "log", "-1", "--format=%h"],
                            capture_output=True, text=True).stdout.strip() or "?"
    bench = subprocess.run(["git", "-C", HERE, "log", "-1", "--format=%h"],
                           capture_output=True, text=True).stdout.strip() or "?"
    if subprocess.run(["git", "-C", HERE, "status", "--porcelain", "fairness.py", "fairness_clients.py"],
                      capture_output=True, text=True).stdout.strip():
        bench += " + uncommitted changes"
    return {
        "command": "python bench/fairness.py " + " ".join(shlex.quote(word) for word in argv),
        "netmux_root": args.netmux_root, "commit": commit, "bench_commit": bench,
        "date": datetime.date.today().isoformat(),
        "load_before": round(os.getloadavg()[0], 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis": _tool_version(["redis-server", "--version"], r"v=(\S+)"),
        "nginx": _tool_version(["nginx", "-v"], r"nginx/(\S+)"),
        "uvicorn": _tool_version([sys.executable, "-m", "uvicorn", "--version"], r"uvicorn (\S+)")
        + f" ({uvicorn_loop()})",
    }


LABEL_ORDER = ("before", "after")
HEADER = """# Fairness: a well-behaved client beside a hostile one (issue 16)

Written by `bench/fairness.py` (see bench/README.md, "Fairness"). Per scenario and server: the
well-behaved client's latency (ms) while the hostile client runs; `n` requests measured, `fail`
those without an answer within the cap (counted as the cap), `> 50 ms` the stalls. Targets of
issue 16: p99 within 10 ms under each hostile client (2 cores), within 5x redis-server's p99
behind the same redis-benchmark -P 10000, slow-header clients cut at the deadline, every stall
under 50 ms.

Scenarios:
"""


def _row_order(row: Dict[str, Any]) -> Tuple[int, int]:
    order = list(SCENARIOS)
    return (order.index(row["scenario"]) if row["scenario"] in order else len(order),
            SERVER_NAMES.index(row["server"]) if row["server"] in SERVER_NAMES else len(SERVER_NAMES))


def render(data: Dict[str, Any]) -> str:
    labels = sorted(data, key=lambda label: (LABEL_ORDER.index(label) if label in LABEL_ORDER else 9, label))
    lines = [HEADER.rstrip("\n")]
    lines += [f"- `{name}`: {scenario.describe}." for name, scenario in SCENARIOS.items()]
    if len(labels) > 1:
        lines += ["", "## Side by side: " + ", ".join(labels), "",
                  "| scenario | server | measured | " + " | ".join(f"{label} p99 | {label} max" for label in labels)
                  + " |", "|---|---|---|" + "---:|---:|" * len(labels)]
        keys: List[Tuple[str, str, str]] = []
        cells: Dict[Tuple[str, str, str, str], Dict[str, Any]] = {}
        for label in labels:
            for row in data[label]["rows"]:
                for measured in row["measured"]:
                    key = (row["scenario"], row["server"], measured["metric"])
                    if key not in keys:
                        keys.append(key)
                    cells[key + (label,)] = measured
        keys.sort(key=lambda key: _row_order({"scenario": key[0], "server": key[1]}))
        for key in keys:
            values = []
            for label in labels:
                measured = cells.get(key + (label,))
                values += [fmt_ms(measured["p99"]), fmt_ms(measured["max"])] if measured else ["", ""]
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(values) + " |")
    for label in labels:
        runs = data[label]["runs"]
        lines += ["", f"## {label}", ""]
        for number, meta in enumerate(runs, 1):
            lines.append((f"Run {number}: " if len(runs) > 1 else "")
                         + f"`{meta['command']}`: netmux from `{meta['netmux_root']}` at `{meta['commit']}` "
                         f"(the benchmark at `{meta.get('bench_commit', '?')}`), "
                         f"{meta['date']}; {meta['python']}, redis-server {meta['redis']}, nginx {meta['nginx']}, "
                         f"uvicorn {meta['uvicorn']}; load average {meta['load_before']} before the run.")
        run_column = len(runs) > 1
        lines += [f"Server on core 0, clients on core 1 (hostile at nice {HOSTILE_NICE}).", "",
                  "| scenario | server | measured | n | fail | p50 | p99 | max | > 50 ms | hostile, notes |"
                  + (" run |" if run_column else ""),
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if run_column else "")]
        for row in sorted(data[label]["rows"], key=_row_order):
            for index, measured in enumerate(row["measured"]):
                notes = row["notes"] if index == 0 else "(same run)"
                lines.append(f"| {row['scenario']} | {row['server']} | {measured['metric']} | {measured['n']} | "
                             f"{measured['failures']} | {fmt_ms(measured['p50'])} | {fmt_ms(measured['p99'])} | "
                             f"{fmt_ms(measured['max'])} | {measured['stalls']} | {notes} |"
                             + (f" {row['run']} |" if run_column else ""))
    return "\n".join(lines) + "\n"


# ======================================================================
# The command line
# ======================================================================
def parse_extra(values: List[str]) -> Dict[str, List[str]]:
    extra: Dict[str, List[str]] = {}
    for value in values:
        name, sep, words = value.partition("=")
        known = SERVER_NAMES + ("netmux-http", "netmux-kv", "netmux-chat")
        if not sep or name not in known:
            raise argparse.ArgumentTypeError(f"--extra-args wants SERVER=ARGS, SERVER one of {', '.join(known)}")
        extra.setdefault(name, []).extend(shlex.split(words))
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)")
    parser.add_argument("--servers", default=",".join(SERVER_NAMES),
                        help="comma-separated, of " + ", ".join(SERVER_NAMES) + " (default: all)")
    parser.add_argument("--netmux-root", default=ROOT,
                        help="the checkout whose netmux is run (default: the one this script is in)")
    parser.add_argument("--label", default=None,
                        help="the report's section for this run, e.g. before, after (default: the commit)")
    parser.add_argument("--extra-args", action="append", default=[], metavar="SERVER=ARGS",
                        help="more arguments for a server's command line; SERVER is netmux (every app), "
                             "netmux-http, netmux-kv, netmux-chat, redis, nginx or uvicorn; repeatable")
    parser.add_argument("--output", default=os.path.join(RESULTS, "fairness.md"),
                        help="the markdown report (its data: the same name with .json)")
    args = parser.parse_args()
    try:
        args.extra_args = parse_extra(args.extra_args)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    args.netmux_root = os.path.abspath(args.netmux_root)
    scenarios = args.scenarios.split(",")
    servers = args.servers.split(",")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    for name in servers:
        if name not in SERVER_NAMES:
            parser.error(f"unknown server {name!r} (known: {', '.join(SERVER_NAMES)})")
    meta = describe_run(args, sys.argv[1:])
    label = args.label or meta["commit"]

    signal.signal(signal.SIGTERM, _terminated)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(CLIENT_CORE)})          # the measurer: the clients' core
    site = tempfile.mkdtemp(prefix="fairness-site-")
    rows = []
    try:
        sys.path.insert(0, ROOT)
        from netmux.apps.http import HELLO_PAGE          # the page uvicorn's app serves too
        os.chmod(site, 0o755)
        with open(os.path.join(site, "index.html"), "wb") as page:
            page.write(HELLO_PAGE)
        for scenario_name in scenarios:
            scenario = SCENARIOS[scenario_name]
            for name in servers:
                if name not in scenario.servers:
                    continue
                print(f"{scenario_name} / {name} ...", end=" ", file=sys.stderr, flush=True)
                try:
                    row = run_one(name, scenario_name, scenario, site, args)
                except RuntimeError as error:
                    print(f"skipped: {error}", file=sys.stderr)
                    continue
                rows.append(row)
                first = row["measured"][0]
                print(f"p50 {fmt_ms(first['p50'])} p99 {fmt_ms(first['p99'])} max {fmt_ms(first['max'])} ms, "
                      f"{first['failures']} failed", file=sys.stderr, flush=True)
    finally:
        stop_all()
        shutil.rmtree(site, ignore_errors=True)
    save(args.output, label, meta, rows)


def save(output: str, label: str, meta: Dict[str, Any], rows: List[Dict[str, Any]]) -> None:
    """Merge this run into its label in the JSON beside ``output`` (a row it measured
    replaces that scenario and server's row; the others stay), re-render, print."""
    store = os.path.splitext(output)[0] + ".json"
    data: Dict[str, Any] = {}
    if os.path.exists(store):
        with open(store) as file:
            data = json.load(file)
    old = data.get(label, {"runs": [], "rows": []})
    measured = {(row["scenario"], row["server"]) for row in rows}
    kept = [row for row in old["rows"] if (row["scenario"], row["server"]) not in measured]
    runs = []                               # the runs some row still comes from, renumbered
    for row in kept:
        run = old["runs"][row["run"] - 1]
        if run not in runs:
            runs.append(run)
        row["run"] = runs.index(run) + 1
    runs.append(meta)
    for row in rows:
        row["run"] = len(runs)
    data[label] = {"runs": runs, "rows": kept + rows}
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(store, "w") as file:
        json.dump(data, file, indent=1)
        file.write("\n")
    report = render(data)
    with open(output, "w") as file:
        file.write(report)
    print(report)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process started was stopped, nothing written")
