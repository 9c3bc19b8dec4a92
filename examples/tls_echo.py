"""A TLS echo server: the handler is the plain echo, the server speaks TLS.

    python examples/tls_echo.py --cert cert.pem --key key.pem  # on 127.0.0.1:8443
    python examples/tls_echo.py --demo   # a throwaway certificate, two clients

Try it with ``openssl s_client -connect 127.0.0.1:8443 -CAfile cert.pem``.
"""
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

import netmux


class Echo(netmux.Handler):
    """The plain echo: TLS is below it, it does not know."""

    def data_received(self, data):
        self.transport.write(data)


def tls_server(address, certfile, keyfile):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return netmux.TCPServer(address, Echo, ssl=context, ssl_handshake_timeout=10.0)


class Hello(netmux.Handler):
    """A netmux TLS client: says hello, prints the echo, closes."""

    def connection_made(self, transport):
        # After the handshake: the peer's certificate is known.
        super().connection_made(transport)
        assert transport.get_extra_info("peercert")["subjectAltName"]
        transport.write(b"hello from a netmux client")

    def data_received(self, data):
        print(data.decode())
        self.transport.close()

    def connection_lost(self, exc):
        self.transport.reactor.stop()


def make_certificate(directory):
    """A self-signed certificate for localhost and 127.0.0.1 (demo only)."""
    certfile = os.path.join(directory, "cert.pem")
    keyfile = os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", keyfile, "-out", certfile,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return certfile, keyfile


def demo():
    with tempfile.TemporaryDirectory() as directory:
        certfile, keyfile = make_certificate(directory)
        client_context = ssl.create_default_context(cafile=certfile)
        with tls_server(("127.0.0.1", 0), certfile, keyfile) as server:
            thread = threading.Thread(target=server.serve_forever)
            thread.start()
            try:
                raw = socket.create_connection(server.server_address, timeout=5)
                host = "localhost"
                with client_context.wrap_socket(raw, server_hostname=host) as client:
                    client.sendall(b"hello from Python's ssl module")
                    print(client.recv(1024).decode(), f"({client.version()})")
            finally:
                server.shutdown()
                thread.join()
            reactor = netmux.Reactor()   # a netmux client, on a reactor of its own
            netmux.connect(server.server_address, Hello, reactor=reactor,
                           ssl=client_context, server_hostname="localhost")
            thread = threading.Thread(target=server.serve_forever)
            thread.start()
            try:
                reactor.run()
            finally:
                reactor.close()
                server.shutdown()
                thread.join()


def main():
    if "--demo" in sys.argv[1:]:
        demo()
        return
    args = sys.argv[1:]
    if len(args) != 4 or args[0] != "--cert" or args[2] != "--key":
        sys.exit("usage: python examples/tls_echo.py --cert CERT.pem --key KEY.pem"
                 "  (or --demo)")
    server = tls_server(("127.0.0.1", 8443), args[1], args[3])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
