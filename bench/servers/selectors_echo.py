"""A ~40-line untuned selectors echo loop: the reference for what plain Python can do.

Deliberately naive: no TCP_NODELAY, every received chunk is appended to a
per-connection bytearray and sent from there (each byte copied twice), and the
selector registration is rewritten on every event.
"""
import selectors
import socket

from _util import port_arg, raise_nofile, ready

sel = selectors.DefaultSelector()


def accept(listener):
    conn, _ = listener.accept()
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, bytearray())


def service(conn, buf, mask):
    if mask & selectors.EVENT_READ:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":
            sel.unregister(conn)
            conn.close()
            return
        if data:
            buf += data
    if buf:
        try:
            sent = conn.send(buf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = len(buf)
        del buf[:sent]
    sel.modify(conn, selectors.EVENT_READ | (selectors.EVENT_WRITE if buf else 0), buf)


raise_nofile()
listener = socket.create_server(("127.0.0.1", port_arg()), backlog=4096)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ, None)
ready(listener.getsockname()[1])
while True:
    for key, mask in sel.select():
        if key.data is None:
            accept(key.fileobj)
        else:
            service(key.fileobj, key.data, mask)
