import netmux

class MyTCPHandler(netmux.StreamHandler):

    async def handle(self):
        # self.readline() buffers what the client sends and returns one
        # line: no recv() boundaries to worry about
        self.data = (await self.readline()).strip()
        print("{} wrote:".format(self.client_address[0]))
        print(self.data)
        # Likewise, self.sendall() writes back to the client
        await self.sendall(self.data.upper())

if __name__ == "__main__":
    HOST, PORT = "localhost", 9999

    with netmux.TCPServer((HOST, PORT), MyTCPHandler) as server:
        server.serve_forever()
