import socket
import socketserver

class MyTCPHandler(socketserver.StreamRequestHandler):

    def handle(self):
        # a client that says nothing for 1 second is told so and dropped
        self.request.settimeout(1)
        try:
            for line in self.rfile:
                self.wfile.write(line.upper())
        except socket.timeout:
            self.wfile.write(b"too slow\n")

if __name__ == "__main__":
    HOST, PORT = "localhost", 9999

    with socketserver.TCPServer((HOST, PORT), MyTCPHandler) as server:
        server.serve_forever()
