"""Tiny helpers shared by the benchmark echo servers (not part of netmux)."""
import resource
import sys


def raise_nofile():
    """Raise the soft RLIMIT_NOFILE to the hard limit (10,000 idle connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def port_arg():
    """The port from argv[1]; 0 (the default) lets the kernel pick one."""
    return int(sys.argv[1]) if len(sys.argv) > 1 else 0


def ready(port):
    """Tell bench/run.py that the server listens: one line, 'READY <port>'."""
    print(f"READY {port}", flush=True)
