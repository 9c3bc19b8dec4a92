"""The blocking echo server of the socket module docs, looped over accept().

One client at a time: a second connection waits in the listen queue until the
first has closed, so it is only meaningful for the 1-connection scenario.
"""
import socket

from _util import port_arg, ready

HOST = "127.0.0.1"

with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port_arg()))
    s.listen()
    ready(s.getsockname()[1])
    while True:
        conn, addr = s.accept()
        with conn:
            while True:
                try:
                    data = conn.recv(1024)
                except ConnectionError:
                    break
                if not data:
                    break
                conn.sendall(data)
