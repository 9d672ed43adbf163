#!/usr/bin/python3
"""WebSocket echo upstream + Python stdlib clients through vip-l7.

Usage: ws_echo.py UPSTREAM_PORT PROXY_PORT
       ws_echo.py UPSTREAM_PORT --serve     (only the echo server, until killed)
       ws_echo.py --client PROXY_PORT PATH  (only the WebSocket client, to any echo upstream)
Starts a WebSocket echo server (RFC 6455, stdlib only) on UPSTREAM_PORT that also answers
plain HTTP with a JSON echo, then talks to it through vip-l7 on PROXY_PORT: a WebSocket
handshake and two echoed messages, and an http.client POST. Exit 0 and "... ok" lines on success.
"""
import base64
import hashlib
import http.client
import json
import os
import socket
import socketserver
import struct
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_head(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line.decode("latin-1").rstrip("\r\n"))


def recv_frame(f):
    b = f.read(2)
    if len(b) < 2:
        return None, None
    opcode = b[0] & 0x0F
    masked = b[1] & 0x80
    n = b[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    mask = f.read(4) if masked else None
    data = f.read(n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return opcode, data


def frame(opcode, data, mask):
    head = bytes([0x80 | opcode])
    n = len(data)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(data))
    return head + data


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            head = read_head(self.rfile)
            if head is None:
                return
            headers = {}
            for h in head[1:]:
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            if headers.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(
                    hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()
                )
                self.wfile.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                self.wfile.flush()
                while True:
                    op, data = recv_frame(self.rfile)
                    if op is None or op == 8:
                        return
                    self.wfile.write(frame(op, data, mask=False))
                    self.wfile.flush()
            n = int(headers.get("content-length", "0"))
            body = self.rfile.read(n) if n else b""
            out = json.dumps(
                {"request": head[0], "headers": headers, "body": body.decode()}
            ).encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(out)).encode()
                + b"\r\n\r\n"
                + out
            )
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def websocket_client(proxy_port, path):
    """Opens a WebSocket through the proxy, checks Sec-WebSocket-Accept (RFC 6455 4.2.2) and
    has a text and a 70,000-byte binary message echoed."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    s.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    f = s.makefile("rb")
    head = read_head(f)
    assert head and head[0].startswith("HTTP/1.1 101"), head
    want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    assert any(
        h.partition(":")[0].strip().lower() == "sec-websocket-accept"
        and h.partition(":")[2].strip() == want
        for h in head[1:]
    ), (want, head)
    for msg in [b"hello", b"x" * 70000]:
        s.sendall(frame(1 if msg == b"hello" else 2, msg, mask=True))
        op, data = recv_frame(f)
        assert data == msg, (op, len(data or b""))
    s.sendall(frame(8, b"", mask=True))
    s.close()
    print("websocket echo ok")


def main():
    if sys.argv[1] == "--client":
        websocket_client(int(sys.argv[2]), sys.argv[3])
        return
    up_port = int(sys.argv[1])
    srv = Server(("127.0.0.1", up_port), Handler)
    if sys.argv[2] == "--serve":
        print("ready", flush=True)
        srv.serve_forever()
        return
    proxy_port = int(sys.argv[2])
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    # WebSocket through the proxy.
    websocket_client(proxy_port, "/chat")

    # A plain Python HTTP client through the proxy.
    c = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=5)
    for i in range(3):  # keep-alive
        c.request("POST", "/form?i=%d" % i, body=b"a=1&b=2",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        body = json.loads(r.read())
        assert r.status == 200, r.status
        assert body["body"] == "a=1&b=2", body
        assert body["request"] == "POST /form?i=%d HTTP/1.1" % i, body
        assert body["headers"]["x-forwarded-for"] == "127.0.0.1", body
        assert r.getheader("x-request-id"), r.getheaders()
    print("http.client ok")


if __name__ == "__main__":
    main()
