import netmux

class MyTCPHandler(netmux.StreamHandler):

    async def handle(self):
        # a client that says nothing for 1 second is told so and dropped
        try:
            while True:
                async with netmux.timeout(1):
                    line = await self.readline()
                if not line:
                    break
                await self.sendall(line.upper())
        except TimeoutError:
            await self.sendall(b"too slow\n")

if __name__ == "__main__":
    HOST, PORT = "localhost", 9999

    with netmux.TCPServer((HOST, PORT), MyTCPHandler) as server:
        server.serve_forever()
