"""Closed-loop echo client for instructions.py: CONNS connections, PER 1 KiB messages each
(with a 4th argument "line", each message ends in a newline: for a LineHandler echo)."""
import socket, selectors, sys, time
conns, per, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
msg = b"x" * 1023 + (b"\n" if sys.argv[4:] == ["line"] else b"x")
deadline = time.time() + 600
while True:
    try:
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]; break
    except ConnectionRefusedError:
        assert time.time() < deadline; time.sleep(0.2)
sel = selectors.DefaultSelector()
left = {}
for s in socks:
    s.setblocking(False); s.sendall(msg); sel.register(s, selectors.EVENT_READ); left[s] = [per, 0]
active = conns
while active:
    assert time.time() < deadline
    for key, _ in sel.select(1):
        s = key.fileobj; st = left[s]
        st[1] += len(s.recv(65536))
        while st[1] >= 1024:
            st[1] -= 1024; st[0] -= 1
            if st[0] > 0: s.send(msg)
        if st[0] == 0:
            sel.unregister(s); s.close(); active -= 1
