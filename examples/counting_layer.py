"""A layer between the transport and the handler: count the bytes of every connection.

    python examples/counting_layer.py          # echo on port 8007; Ctrl-C: totals
    python examples/counting_layer.py --demo   # echo two clients, print totals
"""
import socket
import sys
import threading

import netmux


class Echo(netmux.Handler):
    def data_received(self, data):
        self.transport.write(data)


def counted_echo(counter):
    """The handler factory puts the layer in place: the server knows nothing of it."""
    return lambda: netmux.CountingLayer(Echo(), counter)


def demo() -> None:
    counter = netmux.ByteCounter()        # shared by every connection: the totals
    with netmux.TCPServer(("127.0.0.1", 0), counted_echo(counter)) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            address = server.server_address
            for message in (b"hello", b"layers"):
                with socket.create_connection(address, timeout=5) as client:
                    client.sendall(message)
                    print(client.recv(1024).decode())
        finally:
            server.shutdown()
            thread.join()
    print(f"bytes in: {counter.bytes_in}, bytes out: {counter.bytes_out}")


def main() -> None:
    if "--demo" in sys.argv[1:]:
        demo()
        return
    counter = netmux.ByteCounter()
    try:
        netmux.TCPServer(("127.0.0.1", 8007), counted_echo(counter)).serve_forever()
    except KeyboardInterrupt:
        print(f"bytes in: {counter.bytes_in}, bytes out: {counter.bytes_out}")


if __name__ == "__main__":
    main()
