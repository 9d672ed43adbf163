#!/usr/bin/python3
"""HTTP/1.x exchanges through vip-l7, decoded by Python's http.client (not by vip-l7's code).

Usage: h1_exchanges.py PROXY_PORT HEADER_READ_TIMEOUT_MS
vip-l7 on PROXY_PORT proxies the test upstream of tests/common (a JSON echo of the request;
/chunked: a body of unknown length; /big: 1 MiB). Covers pipelining, HEAD, chunked
and close-delimited bodies, HTTP/1.0, a small request body sent with its head, a chunked request
body in the middle of a connection (which vip-l7's own server path hands to hyper),
Connection: close, and the wait for the next request.
Prints one "... ok" line per check; exits 1 at the first failure.
"""
import http.client
import json
import socket
import sys
import time

PORT = int(sys.argv[1])
TIMEOUT = int(sys.argv[2]) / 1000.0
CHUNKED_BODY = b"chunk one, two, three"


class Conn:
    """One connection; responses are read one after another from one buffered reader, so
    pipelined responses are never lost between them."""

    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        self.file = self.sock.makefile("rb")

    # http.client.HTTPResponse takes a socket and calls makefile() on it, and closes the file
    # when a body ends: hand it this shared reader, never closed.
    def makefile(self, *_args, **_kwargs):
        return self

    def __getattr__(self, name):
        return getattr(self.file, name)

    def close(self):
        pass

    def send(self, data):
        self.sock.sendall(data)

    def response(self, method="GET"):
        r = http.client.HTTPResponse(self, method=method)
        r.begin()
        return r, r.read()

    def at_eof(self):
        try:
            return self.file.read(1) == b""
        except (ConnectionResetError, socket.timeout):
            return False


def req(method, path, version="1.1", extra=""):
    return f"{method} {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode()


def echo(body):
    return json.loads(body)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


# 1. Pipelined in one write: GET, HEAD, a chunked body, 1 MiB, and a last request with close.
c = Conn()
c.send(req("GET", "/p1") + req("HEAD", "/p2") + req("GET", "/chunked") + req("GET", "/big")
       + req("GET", "/p3", extra="Connection: close\r\n"))
r, body = c.response()
check(r.status == 200 and echo(body)["path"] == "/p1", f"first pipelined response {r.status} {body[:80]}")
h = echo(body)["headers"]
check(h.get("x-forwarded-for") == "127.0.0.1" and h.get("x-forwarded-proto") == "http"
      and len(h.get("x-request-id", "")) == 32, f"forwarding headers {h}")
check(r.getheader("x-upstream-secret") is None and r.getheader("date"), f"response fields {r.getheaders()}")
r, body = c.response("HEAD")
check(r.status == 200 and body == b"" and int(r.getheader("content-length")) > 0, f"HEAD {r.getheaders()}")
r, body = c.response()
check(r.getheader("transfer-encoding") == "chunked" and body == CHUNKED_BODY, f"chunked {r.getheaders()} {body!r}")
r, body = c.response()
check(len(body) == 1 << 20 and set(body) == {ord("x")}, f"1 MiB body: {len(body)} bytes")
r, body = c.response()
check(echo(body)["path"] == "/p3" and r.getheader("connection") == "close", f"last {r.getheaders()}")
check(c.at_eof(), "connection closed after Connection: close")
print("pipelined GET, HEAD, chunked, 1 MiB and close ok")

# 2. A small body that comes with its head stays on vip-l7's path; a chunked one mid-connection
# goes to hyper, which serves the rest of the connection.
c = Conn()
c.send(req("GET", "/h1") + b"POST /h2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
r, body = c.response()
check(echo(body)["path"] == "/h1", "before the hand-over")
r, body = c.response()
e = echo(body)
check(e["method"] == "POST" and e["path"] == "/h2" and e["body_len"] == 3, f"a body with its head: {body[:120]}")
c.send(b"POST /h3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n" + req("GET", "/h4"))
r, body = c.response()
e = echo(body)
check(e["method"] == "POST" and e["path"] == "/h3" and e["body_len"] == 4, f"a chunked body: {body[:120]}")
r, body = c.response()
check(echo(body)["path"] == "/h4", "after the hand-over, pipelined")
c.send(req("GET", "/h5", extra="Connection: close\r\n"))
r, body = c.response()
check(echo(body)["path"] == "/h5" and c.at_eof(), "hyper closes after Connection: close")
print("a body with its head, and a hand-over to hyper in the middle of a connection ok")

# 3. HTTP/1.0: closed after the response unless keep-alive; a body of unknown length ends with
# the connection.
c = Conn()
c.send(req("GET", "/a", version="1.0"))
r, body = c.response()
check(r.status == 200 and echo(body)["version"] == "HTTP/1.1" and c.at_eof(), "HTTP/1.0 closes")
c = Conn()
for path in ("/k1", "/k2"):
    c.send(req("GET", path, version="1.0", extra="Connection: keep-alive\r\n"))
    r, body = c.response()
    check(echo(body)["path"] == path and r.getheader("connection") == "keep-alive", f"HTTP/1.0 keep-alive {path}")
c.send(req("GET", "/chunked", version="1.0", extra="Connection: keep-alive\r\n"))
r, body = c.response()
check(body == CHUNKED_BODY and r.getheader("content-length") is None
      and r.getheader("transfer-encoding") is None and c.at_eof(), f"close-delimited {r.getheaders()}")
print("HTTP/1.0 close, keep-alive and close-delimited ok")

# 4. The wait for the next request: each request restarts it; a silent client is closed.
c = Conn()
for i in range(3):
    if i:
        time.sleep(TIMEOUT * 0.6)
    c.send(req("GET", f"/w{i}"))
    r, body = c.response()
    check(echo(body)["path"] == f"/w{i}", f"request {i} after a pause")
t = time.monotonic()
check(c.at_eof(), "idle connection closed")
waited = time.monotonic() - t
check(TIMEOUT * 0.8 < waited < TIMEOUT + 2, f"closed after {waited:.2f}s, timeout {TIMEOUT}s")
print("header read timeout between requests ok")
