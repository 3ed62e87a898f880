#!/usr/bin/env python3
"""The soak's upstream (bench/soak.sh): HTTP and WebSocket echo, Python stdlib only.

    python3 bench/soak_upstream.py PORT

Any GET, POST, ... answers 200 with a small JSON body naming the path and the X-User-Id the
gateway injected (keep-alive, HTTP/1.1). A GET with `Upgrade: websocket` is answered 101
(RFC 6455 handshake) and then echoes every text or binary frame back, until the client's
Close, which it answers. One thread per connection.
"""

import base64
import hashlib
import json
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(f, n):
    buf = f.read(n)
    if buf is None or len(buf) < n:
        raise EOFError
    return buf


def read_frame(f):
    """One frame: (opcode, payload), unmasked."""
    b0, b1 = read_exact(f, 2)
    opcode = b0 & 0x0F
    masked = b1 & 0x80
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", read_exact(f, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", read_exact(f, 8))
    mask = read_exact(f, 4) if masked else b"\0\0\0\0"
    data = bytearray(read_exact(f, n))
    for i in range(n):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def frame(opcode, payload):
    """A server frame (never masked)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the soak counts answers itself
        pass

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps(
            {"path": self.path, "user": self.headers.get("X-User-Id")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            return self.websocket()
        self.answer()

    do_POST = do_PUT = do_DELETE = answer

    def websocket(self):
        key = (self.headers.get("Sec-WebSocket-Key") or "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            while True:
                opcode, data = read_frame(self.rfile)
                if opcode == 0x8:
                    self.wfile.write(frame(0x8, data[:2]))
                    self.wfile.flush()
                    return
                if opcode == 0x9:
                    self.wfile.write(frame(0xA, data))
                elif opcode in (0x1, 0x2):
                    self.wfile.write(frame(opcode, data))
                self.wfile.flush()
        except (EOFError, OSError):
            return


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
