"""socketserver.ThreadingTCPServer echo server: one thread per connection."""
import socketserver

from _util import port_arg, raise_nofile, ready


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
        except ConnectionError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024   # the default 5 only slows down connection setup


if __name__ == "__main__":
    raise_nofile()
    with Server(("127.0.0.1", port_arg()), Echo) as server:
        ready(server.server_address[1])
        server.serve_forever()
