"""What the two peer scripts share: free ports, and the two servers started fresh."""
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def servers(*redis_options):
    """name -> port -> command line: redis-server (nothing saved, plus ``redis_options``), kv of this tree."""
    return {
        "redis-server": lambda port: ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", *redis_options],
        "netmux kv": lambda port: [sys.executable, "-m", "netmux", "kv", "--port", str(port), "--log-level", "ERROR"],
    }


def start_server(command, port, directory, timeout=20.0):
    """Start ``command`` in ``directory`` (where redis-server writes its dump.rdb and
    appendonlydir when a test asks it to) and wait, bounded, until it accepts on ``port``."""
    process = subprocess.Popen(command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"{command[0]} did not listen on {port}")
