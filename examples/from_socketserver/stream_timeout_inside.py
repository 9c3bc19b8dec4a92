import netmux

class MyTCPHandler(netmux.StreamHandler):

    async def handle(self):
        # wrong: the except inside the block never sees the timeout
        async with netmux.timeout(1):
            try:
                line = await self.readline()
            except TimeoutError:
                await self.sendall(b"too slow\n")    # never runs
                return
        await self.sendall(line.upper())

if __name__ == "__main__":
    HOST, PORT = "localhost", 9999

    with netmux.TCPServer((HOST, PORT), MyTCPHandler) as server:
        server.serve_forever()
