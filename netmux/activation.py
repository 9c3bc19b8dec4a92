"""Socket activation: serve a listening socket handed over instead of binding one.

Where it sits: beside the front doors, for the process that starts a server.
A service manager (systemd's ``.socket`` units, s6, launchd's kin) or a
parent process binds the port and passes the listening socket down as a
file descriptor; the server only accepts on it. The port is then open before
the server starts (connections queue meanwhile), a restart loses no queued
connection, and the server needs no privilege to bind port 80.

Two ways a descriptor arrives, both as uvicorn and gunicorn take them:

* ``--fd N`` on the command line (``socket_from_fd(N)``): a parent says which.
* systemd's protocol (``listen_fds()``, as ``sd_listen_fds(3)``): the
  sockets are descriptors 3, 4, ... (``LISTEN_FDS`` of them), meant for the
  process whose pid is ``LISTEN_PID`` (a variable inherited by a child it
  forks is not the child's). The variables are removed once read, so a
  process we start does not take them for its own.

``server_for_socket`` then makes a ``TCPServer`` or a ``UnixServer`` by the
socket's family, through their ``sock=`` argument (asyncio's name). What it
never does: bind, or close a descriptor it was not asked to serve.
Pinned by tests/test_activation.py.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Callable, List, Optional, Union

from .server import TCPServer, UnixServer
from .sockets import adopt_listening_socket

__all__ = ["SD_LISTEN_FDS_START", "listen_fds", "socket_from_fd", "inherited_socket",
           "server_for_socket"]

#: The first descriptor systemd passes (after stdin, stdout, stderr).
SD_LISTEN_FDS_START = 3


def socket_from_fd(fd: int) -> socket.socket:
    """The socket at descriptor ``fd`` (family and type read from the kernel),
    close-on-exec as systemd's library makes it; OSError if ``fd`` is not an
    open socket, ValueError if it is negative."""
    if fd < 0:
        raise ValueError(f"a file descriptor is 0 or more, not {fd}")
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    return sock


def listen_fds(unset_environment: bool = True) -> List[socket.socket]:
    """The sockets systemd passed to this process (``LISTEN_FDS``), in order; [] when
    none were passed, or were passed to another process (``LISTEN_PID``).

    ``unset_environment``: remove ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` (as ``sd_listen_fds(1)`` does). ValueError for a
    malformed ``LISTEN_FDS``.
    """
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if pid is None or count is None or not pid.strip().isdigit() or int(pid) != os.getpid():
        return []
    if not count.strip().isdigit():
        raise ValueError(f"LISTEN_FDS is not a number of descriptors: {count!r}")
    return [socket_from_fd(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))]


def inherited_socket(fd: Optional[int] = None) -> Optional[socket.socket]:
    """The one listening socket a command line serves: descriptor ``fd`` when given,
    else the one systemd passed, else None (bind as usual). Checked here, before
    anything is started or forked: ValueError for a socket that is not a
    listening stream socket, or when systemd passed several (a netmux server
    serves one); OSError when ``fd`` is not a socket."""
    sockets = [socket_from_fd(fd)] if fd is not None else listen_fds()
    if len(sockets) > 1:
        for sock in sockets:
            sock.detach()               # not ours to close
        raise ValueError(f"systemd passed {len(sockets)} sockets (LISTEN_FDS); netmux serves one")
    return adopt_listening_socket(sockets[0]) if sockets else None


def server_for_socket(sock: socket.socket, handler_factory: Callable[[], Any],
                      **kwargs: Any) -> Union[TCPServer, UnixServer]:
    """A ``UnixServer`` for a Unix socket, else a ``TCPServer``, serving ``sock``;
    ``kwargs`` go to the server (``reactor=``, limits, ``proxy_protocol=``)."""
    if sock.family == socket.AF_UNIX:
        return UnixServer(None, handler_factory, sock=sock, **kwargs)
    return TCPServer(None, handler_factory, sock=sock, **kwargs)
