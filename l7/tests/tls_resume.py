"""TLS session resumption against vip-l7, with Python's ssl module (OpenSSL) as the client.

Reads commands on stdin, one per line, and answers each with one line on stdout:

    keep PORT      one new connection per TLS version (1.3 and 1.2) to PORT; keep their
                   sessions                                      -> "kept"
    churn PORT N   N more connections per version to PORT, each with a session of its own
                                                                 -> "churned"
    offer PORT     offer the kept sessions to PORT on new connections
                                                                 -> "TLSv1.3 resumed TLSv1.2 full"

Any other failure (a refused connection, an answer other than 200) ends the script with a
message on stderr and a non-zero status.
"""

import socket
import ssl
import sys

VERSIONS = (("TLSv1.3", ssl.TLSVersion.TLSv1_3), ("TLSv1.2", ssl.TLSVersion.TLSv1_2))


def context(version):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = version
    return c


def get(port, ctx, session=None):
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
        sys.exit(f"port {port}: unexpected answer: {data[:120]!r}")
    # TLS 1.3 tickets arrive after the handshake: the session is complete once data was read.
    reused, sess = s.session_reused, s.session
    s.close()
    return reused, sess


# One context per version for the whole run: OpenSSL only offers a session to a context
# that made it.
contexts = {name: context(version) for name, version in VERSIONS}
kept = {}
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "keep":
        for name, ctx in contexts.items():
            reused, kept[name] = get(int(cmd[1]), ctx)
            if reused:
                sys.exit(f"{name}: a connection without a session cannot be a resumption")
        answer = "kept"
    elif cmd[0] == "churn":
        for name, ctx in contexts.items():
            for _ in range(int(cmd[2])):
                get(int(cmd[1]), ctx)
        answer = "churned"
    elif cmd[0] == "offer":
        words = []
        for name, ctx in contexts.items():
            reused, _ = get(int(cmd[1]), ctx, kept[name])
            words.append(f"{name} {'resumed' if reused else 'full'}")
        answer = " ".join(words)
    else:
        sys.exit(f"unknown command {line!r}")
    print(answer, flush=True)
