"""netmux: many TCP/UDP/Unix-socket clients at once on one thread, with the standard library only.

A hand-written reactor (its own epoll object on Linux, ``selectors.DefaultSelector``
elsewhere) drives non-blocking sockets; handlers use asyncio's Protocol names and servers socketserver's shape.
The layers, bottom to top (one module each):

    errors.py     the one rule for exceptions from user code, for every layer
    reactor.py    readiness events, timers, call_soon, thread-safe wake-up
    transport.py  one non-blocking socket: read -> handler, write buffer -> socket
    sendfile.py   file regions queued behind bytes: os.sendfile, or read and send
    interface.py  the Transport interface every stream transport and layer honours
    handler.py    user code: the pluggable interface (asyncio Protocol names)
    framing.py    sans-IO: bytes in -> whole frames out
    sockets.py    socket plumbing the front doors share: addresses, binding, socket files
    server.py     TCPServer, UnixServer: the front doors wiring the above together
    udp.py        DatagramTransport and UDPServer: the same for datagrams
    client.py     connect(), connect_socket(), open_datagram(): the outgoing front doors
    layer.py      Layer: a handler below and a transport above, stacked by a factory
    tls.py        TLSLayer: TLS over ssl.MemoryBIO, put in place by ssl= on servers and connect()
    proxy.py      the PROXY protocol (v1/v2) from a load balancer, as a layer below the rest
    activation.py serving a listening socket handed over (--fd, systemd's LISTEN_FDS)
    workers.py    serve_workers(): N processes on one port (SO_REUSEPORT) under a supervisor
    tasks.py      coroutines on the reactor: Task, sleep, timeout (no asyncio underneath)
    stream.py     StreamHandler: socketserver's handle(), with async/await
    testing.py    drive(), pair(): handlers on in-memory transports and virtual time, for tests
                  (imported on its own: ``from netmux.testing import drive``)
"""
from .handler import DatagramHandler, FramedHandler, Handler, LineHandler
from .reactor import Reactor, Timer
from .server import TCPServer, UnixServer
from .interface import Transport
from .transport import TCPTransport
from .layer import ByteCounter, CountingLayer, Layer
from .tls import TLSLayer
from .udp import DatagramTransport, UDPServer
from .client import connect, connect_socket, open_datagram
from .framing import FramingError, LengthPrefixFramer, LineFramer, NetstringFramer
from .stream import IncompleteReadError, StreamHandler
from .tasks import CancelledError, Task, sleep, timeout
from .workers import serve_workers

__version__ = "0.1.0"

__all__ = [
    "Reactor", "Timer", "Handler", "DatagramHandler", "TCPTransport", "Transport", "TCPServer",
    "UnixServer", "UDPServer", "DatagramTransport", "connect", "connect_socket", "open_datagram",
    "Layer", "CountingLayer", "ByteCounter", "TLSLayer",
    "FramedHandler", "FramingError", "LengthPrefixFramer", "LineFramer", "LineHandler", "NetstringFramer",
    "StreamHandler", "IncompleteReadError", "CancelledError", "Task", "sleep", "timeout",
    "serve_workers",
]
