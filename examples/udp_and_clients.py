"""The programs of docs/udp-and-clients.md (and the README's one-thread example).

    python examples/udp_and_clients.py --demo   # the handlers on free ports, then exit
    python examples/udp_and_clients.py udp-server  # the UDP echo on 127.0.0.1:8007
    python examples/udp_and_clients.py udp-client  # ask it once
    python examples/udp_and_clients.py readme   # UDP on 9000, a client of echo.py

The pages show the programs with fixed ports; ``demo`` runs the same handlers
against servers on ports the kernel picks, so it never meets a server you run.
"""
import sys

import netmux


# -- docs/udp-and-clients.md: a UDP server ------------------------------------
class Echo(netmux.DatagramHandler):           # asyncio.DatagramProtocol's names
    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def udp_server():
    with netmux.UDPServer(("127.0.0.1", 8007), Echo) as server:
        server.serve_forever()


# -- docs/udp-and-clients.md: a UDP client ------------------------------------
class Ask(netmux.DatagramHandler):
    def connection_made(self, transport):
        super().connection_made(transport)
        transport.sendto(b"ping")
    def datagram_received(self, data, addr):
        print("reply:", data)
        self.transport.close()
    def error_received(self, exc):
        print("nobody there:", exc)
        self.transport.close()


def udp_client():
    reactor = netmux.Reactor()
    client = netmux.open_datagram(("127.0.0.1", 8007), Ask, reactor=reactor)
    while not client.transport.is_closing():
        reactor.run_once(1.0)
    reactor.run_once(0)          # deliver connection_lost
    reactor.close()


# -- docs/udp-and-clients.md: a server and a client on one reactor ------------
def server_and_client():
    class Echo(netmux.Handler):
        def data_received(self, data):
            self.transport.write(data)

    class Hello(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"hello\n")
        def data_received(self, data):
            print("echoed:", data)
            self.transport.close()
        def connection_lost(self, exc):
            print("closed:", exc)          # None, or why the connect failed
            reactor.stop()

    reactor = netmux.Reactor()
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as server:
        netmux.connect(server.server_address, Hello, reactor=reactor, timeout=5)
        reactor.run()                      # serves and connects, in this one thread
    reactor.close()


# -- README.md: a UDP server and a TCP client in one thread -------------------
class UDPEcho(netmux.DatagramHandler):     # asyncio.DatagramProtocol's names
    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def readme():
    """Needs the TCP echo of examples/echo.py on 127.0.0.1:8007."""
    reactor = netmux.Reactor()
    udp = netmux.UDPServer(("127.0.0.1", 9000), UDPEcho, reactor=reactor)

    class Hello(netmux.Handler):
        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"hello")
        def data_received(self, data):
            print("got", data)
            self.transport.close()
        def connection_lost(self, exc):        # also how a failed connect is reported
            reactor.stop()

    netmux.connect(("127.0.0.1", 8007), Hello, reactor=reactor, timeout=5)
    reactor.run()                          # one thread: a UDP server and a TCP client
    udp.server_close()
    reactor.close()


# -- the demo: the same handlers on free ports --------------------------------
def ask(handler):
    """``udp_client`` against a ``handler`` server on a free port, on one reactor."""
    reactor = netmux.Reactor()
    with netmux.UDPServer(("127.0.0.1", 0), handler, reactor=reactor) as server:
        client = netmux.open_datagram(server.server_address, Ask, reactor=reactor)
        for _ in range(50):                       # at most 5 s
            if client.transport.is_closing():
                break
            reactor.run_once(0.1)
        reactor.run_once(0)
    reactor.close()


def demo():
    ask(Echo)
    ask(UDPEcho)
    server_and_client()


PROGRAMS = {"udp-server": udp_server, "udp-client": udp_client, "readme": readme,
            "--demo": demo}

if __name__ == "__main__":
    if sys.argv[1:] not in ([name] for name in PROGRAMS):
        sys.exit(f"usage: python examples/udp_and_clients.py {{{'|'.join(PROGRAMS)}}}")
    try:
        PROGRAMS[sys.argv[1]]()
    except KeyboardInterrupt:      # Ctrl-C ends udp-server: no traceback
        pass
