"""TLS session resumption against vip-l7, with Python's ssl module (OpenSSL) as the client.

    tls_resume.py PORT ADMIN_SOCKET N

For TLS 1.3 and TLS 1.2: one connection whose session is kept, then N connections of other
sessions, then the kept session is offered again (it must resume); then vip-l7 reloads its
configuration over the admin socket and the kept session is offered once more (it must still
resume). Prints one line per check; exits non-zero on the first failure.
"""

import json
import socket
import ssl
import sys

port, admin, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def context(version):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = version
    return c


def get(ctx, session=None):
    """One request on a new connection: (whether the session was resumed, the session)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="a.test", session=session)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except ssl.SSLEOFError:
            break
        if not d:
            break
        data += d
    if not data.startswith(b"HTTP/1.1 200"):
        sys.exit(f"unexpected answer: {data[:120]!r}")
    # TLS 1.3 tickets arrive after the handshake: the session is complete once data was read.
    reused, sess = s.session_reused, s.session
    s.close()
    return reused, sess


def reload():
    with socket.socket(socket.AF_UNIX) as a:
        a.connect(admin)
        a.sendall(json.dumps({"v": 1, "id": "r", "cmd": "reload"}).encode() + b"\n")
        reply = json.loads(a.makefile().readline())
    if not reply.get("ok"):
        sys.exit(f"reload failed: {reply}")


kept, contexts = {}, {}
for name, version in (("TLSv1.3", ssl.TLSVersion.TLSv1_3), ("TLSv1.2", ssl.TLSVersion.TLSv1_2)):
    ctx = contexts[name] = context(version)
    reused, kept[name] = get(ctx)
    if reused:
        sys.exit(f"{name}: the first connection cannot be a resumption")
    for _ in range(n):
        get(ctx)
    reused, _ = get(ctx, kept[name])
    print(f"{name} after {n} other sessions: {'resumed' if reused else 'full handshake'}")
    if not reused:
        sys.exit(1)

reload()
for name in ("TLSv1.3", "TLSv1.2"):
    reused, _ = get(contexts[name], kept[name])
    print(f"{name} after a reload: {'resumed' if reused else 'full handshake'}")
    if not reused:
        sys.exit(1)
print("tls resume ok")
