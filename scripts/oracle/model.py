"""Independent Python model of vipd's fixed flow hash and Maglev table.

Written from the documentation (dataplane/maglev module docs, docs/maglev.md when present, and
dataplane/src/flow.rs), not from the Rust code paths, so the golden-pcap oracle can check that
every new flow goes to exactly the backend the documented algorithm picks.

- SipHash-1-3 (1 compression round, 3 finalization rounds), key (k0, k1), 64-bit output.
- Flow hash: SipHash-1-3 with K_FLOW over the flow key bytes:
  IPv4: src(4) dst(4) sport(2, BE) dport(2, BE) proto(1) = 13 bytes
  IPv6: src(16) dst(16) sport dport proto = 37 bytes
  3-tuple policy zeroes both ports (and fragments always hash that way); dst-port policy zeroes
  the source address and source port.
- Maglev: backends keyed by their address octets; permutation offset = sip(K_OFFSET, key) % M,
  skip = sip(K_SKIP, key) % (M - 1) + 1; live backends (weight > 0) take turns in byte order of
  their keys, each until it holds its largest-remainder quota of slots; lookup = hash % M.
"""

import ipaddress
import struct

MASK = (1 << 64) - 1

K_OFFSET = (0x63A1FAC622275D25, 0x21BFE9067EF7E68D)
K_SKIP = (0x83A53583C64BE6F0, 0x02555C4A83C58F30)
K_FLOW = (0xF8777888C0FEF9BB, 0xA273AA2A7855CF6B)
K_FINGERPRINT = (0xE9BA483561892C2F, 0xC089FC849D78CADC)
DEFAULT_TABLE_SIZE = 65537


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK


def siphash13(key, data):
    k0, k1 = key
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rnd(v0, v1, v2, v3):
        v0 = (v0 + v1) & MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    n = len(data)
    full = n - n % 8
    for i in range(0, full, 8):
        m = struct.unpack_from("<Q", data, i)[0]
        v3 ^= m
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
        v0 ^= m
    tail = bytes(data[full:]) + b"\0" * (7 - n % 8)
    m = struct.unpack("<Q", tail + bytes([n & 0xFF]))[0]
    v3 ^= m
    v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    v0 ^= m
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & MASK


def flow_hash(data):
    return siphash13(K_FLOW, data)


def flow_key_bytes(src, dst, sport, dport, proto, policy):
    """The documented hash input. policy: '5-tuple' | '3-tuple' | 'dst-port'."""
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    if s.version == 4 and d.version == 4:
        sb, db = s.packed, d.packed
    else:
        sb, db = _v6(s), _v6(d)
    if policy == "3-tuple":
        sport = dport = 0
    elif policy == "dst-port":
        sport = 0
        sb = b"\0" * len(sb)
    elif policy != "5-tuple":
        raise ValueError(policy)
    return sb + db + struct.pack(">HHB", sport, dport, proto)


def _v6(a):
    return a.packed if a.version == 6 else ipaddress.IPv6Address("::ffff:" + str(a)).packed


def tuple_hash(src, dst, sport, dport, proto, policy):
    return flow_hash(flow_key_bytes(src, dst, sport, dport, proto, policy))


def quotas(weights, m):
    total = sum(weights)
    q = [m * w // total for w in weights]
    left = m - sum(q)
    if left:
        order = sorted(range(len(weights)), key=lambda r: (-(m * weights[r] % total), r))
        for r in order[:left]:
            q[r] += 1
    for r in range(len(q)):
        if q[r] == 0:
            # donor: largest quota, lowest rank on ties
            donor = min(range(len(q)), key=lambda i: (-q[i], i))
            q[donor] -= 1
            q[r] = 1
    return q


class Maglev:
    """Table of caller indices (EMPTY = None) built from [(key_bytes, weight)]."""

    def __init__(self, backends, m=DEFAULT_TABLE_SIZE):
        self.m = m
        self.backends = backends
        order = sorted(range(len(backends)), key=lambda i: backends[i][0])
        live = [i for i in order if backends[i][1] > 0]
        self.live = live
        slots = [None] * m
        if live:
            q = quotas([backends[i][1] for i in live], m)
            pos = [siphash13(K_OFFSET, backends[i][0]) % m for i in live]
            skip = [siphash13(K_SKIP, backends[i][0]) % (m - 1) + 1 for i in live]
            remaining = list(q)
            active = [r for r in range(len(live)) if remaining[r] > 0]
            while active:
                kept = []
                for r in active:
                    p, s = pos[r], skip[r]
                    while slots[p] is not None:
                        p = (p + s) % m
                    slots[p] = live[r]
                    pos[r] = (p + s) % m
                    remaining[r] -= 1
                    if remaining[r]:
                        kept.append(r)
                active = kept
        self.slots = slots

    def lookup(self, h):
        return self.slots[h % self.m]

    def fingerprint(self):
        out = bytearray(struct.pack("<II", self.m, len(self.live)))
        rank_of = {}
        for rank, i in enumerate(self.live):
            key, w = self.backends[i]
            out += struct.pack("<I", len(key)) + key + struct.pack("<I", w)
            rank_of[i] = rank
        out += b"".join(struct.pack("<H", rank_of.get(s, 0xFFFF) if s is not None else 0xFFFF) for s in self.slots)
        return siphash13(K_FINGERPRINT, bytes(out))


def self_test():
    """Checks this model against the golden values frozen in the Rust crate's tests."""
    assert flow_hash(b"") == 0x53B7148F5128BF1A, hex(flow_hash(b""))
    assert flow_hash(b"10.0.0.7:80") == 0x29ACDF76742411C0
    assert flow_hash(bytes([192, 0, 2, 1, 198, 51, 100, 1, 0x15, 0xB3, 0x01, 0xBB, 6])) == 0x3699623725272A0D
    keys = [f"10.0.{i // 256}.{i % 256}:80".encode() for i in range(1000)]
    t = Maglev([(k, 1) for k in keys])
    assert [t.slots[s] for s in (0, 1, 2, 65535, 65536)] == [981, 123, 640, 416, 596]
    assert t.fingerprint() == 0x5F2676175BE15CF5, hex(t.fingerprint())
    w = Maglev([(k, (i * 7) % 10) for i, k in enumerate(keys)])
    assert w.fingerprint() == 0x17132607606E1ADD, hex(w.fingerprint())


if __name__ == "__main__":
    import time

    t0 = time.time()
    self_test()
    print(f"model: golden values match ({time.time() - t0:.1f} s)")
