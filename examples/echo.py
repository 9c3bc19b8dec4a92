"""The README's first program: an echo server for many clients at once, in one thread.

    python examples/echo.py            # serve on 127.0.0.1:8007 until Ctrl-C
    python examples/echo.py --demo     # serve on a free port, echo three clients, exit
"""
import socket
import sys
import threading

import netmux


class Echo(netmux.Handler):              # asyncio.Protocol's method names
    def data_received(self, data):
        self.transport.write(data)


def demo() -> None:
    """Three clients connected at once; each gets its own bytes back."""
    with netmux.TCPServer(("127.0.0.1", 0), Echo) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            address = server.server_address
            clients = [socket.create_connection(address, timeout=5) for _ in range(3)]
            for number, client in enumerate(clients):
                client.sendall(b"client %d" % number)
            for client in clients:
                print(client.recv(1024).decode())
                client.close()
        finally:
            server.shutdown()
            thread.join()


def main() -> None:
    if "--demo" in sys.argv[1:]:
        demo()
        return
    try:
        # socketserver's shape:
        with netmux.TCPServer(("127.0.0.1", 8007), Echo) as server:
            server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
