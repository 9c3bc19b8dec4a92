# Echo server program
import netmux

HOST = ''                 # Symbolic name meaning all available interfaces
PORT = 50007              # Arbitrary non-privileged port

class Echo(netmux.StreamHandler):
    async def handle(self):
        print('Connected by', self.client_address)
        while True:
            data = await self.recv(1024)
            if not data: break
            await self.sendall(data)

with netmux.TCPServer((HOST, PORT), Echo) as s:
    s.serve_forever()
