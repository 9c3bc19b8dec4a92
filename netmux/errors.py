"""The one rule for exceptions raised by user code, written once for every layer.

Where it sits: beside everything, importing nothing of netmux. The reactor
(callbacks), the socket transports (TCP, Unix, UDP), the servers and clients
(handler factories), tasks and StreamHandler (coroutines), the layers and
``netmux.testing``'s in-memory transport all decide by it what an exception
from user code costs:

* ``PROPAGATE`` (SystemExit, KeyboardInterrupt) stops the program: the layer
  that caught it leaves its own state consistent (a connection is aborted,
  nothing is left half-registered), then re-raises it, as asyncio does;
* every other exception, ``BaseException`` subclasses included (a
  CancelledError of asyncio, trio or netmux raised where nothing awaited it),
  costs one unit of work at most: one callback, one connection, one task. It
  is logged once, with its traceback, by the layer that caught it.

What a connection's handler hears in ``connection_lost(exc)`` is an
``Exception`` or None, as asyncio types it: a BaseException that aborted the
connection reaches it as ``ConnectionAbortedError`` with the original as its
``__cause__`` (``lost_reason``).

Pinned by tests/test_errors.py (the same misbehaving handlers over a socket,
under a layer and under ``netmux.testing.drive``).
"""
from __future__ import annotations

from typing import Optional

__all__ = ["PROPAGATE", "lost_reason"]

#: The exceptions from user code that stop the program instead of costing one
#: callback, connection or task. Every layer writes ``except PROPAGATE: raise``
#: (after making its state consistent) before its ``except BaseException``.
PROPAGATE = (SystemExit, KeyboardInterrupt)


def lost_reason(exc: Optional[BaseException]) -> Optional[Exception]:
    """What ``connection_lost`` is told when ``exc`` ended a connection: ``exc``
    itself if it is None or an Exception, otherwise a ConnectionAbortedError
    whose ``__cause__`` is ``exc``."""
    if exc is None or isinstance(exc, Exception):
        return exc
    error = ConnectionAbortedError(f"connection aborted by {type(exc).__name__}: {exc}".rstrip(": "))
    error.__cause__ = exc
    return error
