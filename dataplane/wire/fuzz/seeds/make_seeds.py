#!/usr/bin/env python3
"""Writes the handcrafted seed frames for the walk_frame fuzz target into ../corpus/walk_frame.

Each frame is built byte by byte from the RFC layouts (no packet library), with correct
IPv4 header checksums and, where the upper layer is complete, TCP/UDP/ICMP checksums.
Run: python3 seeds/make_seeds.py   (from dataplane/wire/fuzz)
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "walk_frame")

DST = bytes.fromhex("020000000002")
SRC = bytes.fromhex("020000000001")


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(ethertype: int, payload: bytes, tags=()) -> bytes:
    out = DST + SRC
    for tpid, tci in tags:
        out += struct.pack("!HH", tpid, tci)
    return out + struct.pack("!H", ethertype) + payload


L4_CSUM_AT = {1: 2, 6: 16, 17: 6, 58: 2}


def fill_l4(proto: int, payload: bytes, pseudo: bytes) -> bytes:
    """Fills the TCP/UDP/ICMP/ICMPv6 checksum of a complete upper-layer payload."""
    at = L4_CSUM_AT.get(proto)
    if at is None or len(payload) < at + 2:
        return payload
    payload = payload[:at] + b"\0\0" + payload[at + 2:]
    value = csum((b"" if proto == 1 else pseudo) + payload)
    if proto == 17 and value == 0:
        value = 0xFFFF
    return payload[:at] + struct.pack("!H", value) + payload[at + 2:]


def ipv4(proto: int, payload: bytes, src="10.0.0.1", dst="10.0.0.2", flags_off=0x4000, opts=b"", fill=True) -> bytes:
    if fill and flags_off & 0x3FFF == 0:
        pseudo = bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + struct.pack("!BBH", 0, proto, len(payload))
        payload = fill_l4(proto, payload, pseudo)
    ihl = 5 + len(opts) // 4
    total = ihl * 4 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0x1234, flags_off, 64, proto, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + opts
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


V6_SRC = bytes.fromhex("20010db8000000000000000000000001")
V6_DST = bytes.fromhex("20010db8000000000000000000000002")


def v6_filled(proto: int, segment: bytes) -> bytes:
    """An upper-layer segment with its checksum over the IPv6 pseudo header of ipv6()."""
    return fill_l4(proto, segment, V6_SRC + V6_DST + struct.pack("!IxxxB", len(segment), proto))


def ipv6(nh: int, payload: bytes) -> bytes:
    src, dst = V6_SRC, V6_DST
    payload = v6_filled(nh, payload)
    return struct.pack("!IHBB", 0x60000000 | (0xB8 << 20) | 0x12345, len(payload), nh, 64) + src + dst + payload


def tcp(sport=40000, dport=80, flags=0x02, opts=b"", data=b"") -> bytes:
    off = 5 + len(opts) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, off << 4, flags, 65535, 0, 0) + opts + data


def udp(sport, dport, data=b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


seeds = {
    "eth_ipv4_tcp_syn": eth(0x0800, ipv4(6, tcp(opts=bytes.fromhex("020405b4")))),
    "eth_ipv4_tcp_padded": eth(0x0800, ipv4(6, tcp(flags=0x10))) + b"\0" * 6,
    "eth_vlan_ipv4_udp": eth(0x0800, ipv4(17, udp(40001, 9, b"hello")), tags=[(0x8100, 0xA064)]),
    "eth_qinq_ipv6_tcp": eth(0x86DD, ipv6(6, tcp(flags=0x18, data=b"GET /")), tags=[(0x88A8, 10), (0x8100, 20)]),
    "eth_arp_request": eth(0x0806, bytes.fromhex("0001080006040001") + SRC + bytes([10, 0, 0, 1]) + b"\0" * 6 + bytes([10, 0, 0, 2])),
    "eth_ipv4_icmp_echo": eth(0x0800, ipv4(1, bytes.fromhex("0800f7fe00010001") + b"ping")),
    "eth_ipv4_icmp_frag_needed": eth(0x0800, ipv4(1, bytes.fromhex("030400000000057c")
                                                   + ipv4(6, tcp(), src="10.0.0.2", dst="198.51.100.7")[:28])),
    "eth_ipv6_icmpv6_ptb": eth(0x86DD, ipv6(58, bytes.fromhex("0200000000000500") + ipv6(17, udp(1, 2, b"x" * 16))[:56])),
    "eth_ipv6_icmpv6_echo": eth(0x86DD, ipv6(58, bytes.fromhex("8000000000070001") + b"abcd")),
    "eth_ipv6_ext_chain_tcp": eth(0x86DD, ipv6(0, bytes([43, 0, 1, 4, 0, 0, 0, 0])      # hop-by-hop
                                             + bytes([60, 0, 0, 0, 0, 0, 0, 0])        # routing
                                             + bytes([51, 0, 0, 0, 0, 0, 0, 0])        # dest opts
                                             + bytes([6, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1])  # AH
                                             + v6_filled(6, tcp()))),
    "eth_ipv6_frag_first_udp": eth(0x86DD, ipv6(44, bytes([17, 0, 0, 1, 0, 0, 0, 9]) + udp(1000, 2000, b"a" * 24))),
    "eth_ipv6_frag_later": eth(0x86DD, ipv6(44, bytes([17, 0, 0x05, 0x00, 0, 0, 0, 9]) + b"b" * 24)),
    "eth_ipv4_frag_later": eth(0x0800, ipv4(17, b"c" * 24, flags_off=0x00B9, fill=False)),
    "eth_ipv4_options_udp": eth(0x0800, ipv4(17, udp(7, 7, b"echo"), opts=bytes.fromhex("94040000"))),
    "eth_ipv4_gue_v1_ipv4_tcp": eth(0x0800, ipv4(17, udp(51000, 6080, ipv4(6, tcp(), src="192.0.2.9", dst="203.0.113.10")))),
    "eth_ipv6_gue_v1_ipv6_tcp": eth(0x86DD, ipv6(17, udp(51000, 6080, ipv6(6, tcp())))),
    "eth_ipv4_gue_v0_tcp": eth(0x0800, ipv4(17, udp(51000, 6080, bytes([0x01, 6, 0x80, 0, 0xAA, 0xBB, 0xCC, 0xDD]) + tcp()))),
    "eth_ipv4_ipip_tcp": eth(0x0800, ipv4(4, ipv4(6, tcp(), src="192.0.2.9", dst="203.0.113.10"))),
    "eth_ipv6_in_ipv6_udp": eth(0x86DD, ipv6(41, ipv6(17, udp(9, 9, b"zz")))),
    "eth_ipv4_icmp_time_exceeded_udp": eth(0x0800, ipv4(1, bytes.fromhex("0b00000000000000") + ipv4(17, udp(3, 4, b"q" * 40))[:36])),
}

os.makedirs(OUT, exist_ok=True)
for name, frame in seeds.items():
    with open(os.path.join(OUT, "seed_" + name), "wb") as f:
        f.write(frame)
print(f"wrote {len(seeds)} seeds to {os.path.normpath(OUT)}")
