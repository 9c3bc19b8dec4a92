"""The README's coroutine echo: socketserver's handle() loop, as an async def on netmux.

    python examples/coroutine_echo.py            # serve on 127.0.0.1:8007 until Ctrl-C
    python examples/coroutine_echo.py --demo   # serve, echo three clients, exit
"""
import socket
import sys
import threading

import netmux


class Echo(netmux.StreamHandler):            # socketserver's handle(), as a coroutine
    async def handle(self):                   # once per connection; it closes on return
        while True:
            data = await self.recv(1024)      # b"" at EOF
            if not data:
                break
            await self.sendall(data)          # waits while the buffer is over low water


def demo() -> None:
    """Three clients connected at once, each served by its own handle() coroutine."""
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
        netmux.TCPServer(("127.0.0.1", 8007), Echo).serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
