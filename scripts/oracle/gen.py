#!/usr/bin/python3
"""Golden-pcap oracle, step 1: Scapy writes the input frames and what the oracle expects of each.

Usage: /usr/bin/python3 gen.py OUT_DIR      (writes OUT_DIR/in.pcap and OUT_DIR/expect.json)

Deterministic (fixed seed, fixed timestamps). The expectations come from reading the pipeline's
documentation (dataplane/src/pipeline.rs, encap.rs, flow.rs, tables.rs) and setup.toml, never
from running the pipeline. expect.json holds one object per input frame:

  verdict   "forward" | "kernel" | "drop"
  reason    drop reason name (DropReason::as_str) when verdict is "drop"
  action    for forwards: "encap" (IPIP/GUE), "dsr", "frag_needed", "ptb", "echo_reply"
  vip       VIP index in setup.toml (encap, dsr)
  tuple     [client, vip, client_port, vip_port, protocol]: the flow hash input (client -> VIP)
  policy    "5-tuple" | "3-tuple" | "dst-port": the policy the hash uses for this packet
  flow      flow id: packets (and ICMP errors) of one flow must share backend and GUE port
  frag      fragment group id: fragments of one datagram must share a backend
  l3        offset of the IP packet in the input frame; ip_len: its length (padding excluded)
  mtu       for frag_needed / ptb: the MTU the ICMP message must announce
  desc      human description for failure messages
"""

import json
import os
import random
import struct
import sys

from scapy.all import (  # noqa: F401  (scapy's star-export style)
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPOption_NOP,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    AH,
    conf,
)

conf.verb = 0

SEED = 20261123
PORT_MAC = "02:00:00:00:00:01"
ROUTER4 = "192.0.2.254"
ROUTER6 = "2001:db8:99::fe"

# VIP index -> (address, port, protocol, policy, overhead of its tunnel)
VIP = {
    0: ("203.0.113.10", 80, 6, "5-tuple", 20),
    1: ("203.0.113.20", 53, 17, "5-tuple", 48),
    2: ("2001:db8:f::10", 443, 6, "5-tuple", 40),
    3: ("203.0.113.30", 0, 6, "5-tuple", 0),
    4: ("203.0.113.40", 80, 6, "3-tuple", 20),
    5: ("203.0.113.50", 0, 6, "dst-port", 20),
    6: ("2001:db8:f::60", 80, 6, "5-tuple", 20),
    7: ("203.0.113.70", 80, 6, "5-tuple", 28),
    8: ("2001:db8:f::80", 53, 17, "5-tuple", 48),
    9: ("2001:db8:f::90", 0, 6, "5-tuple", 0),
    10: ("203.0.113.40", 8080, 6, "5-tuple", 20),
    11: ("203.0.113.110", 80, 6, "5-tuple", 20),
    12: ("2001:db8:f::120", 0, 6, "dst-port", 40),
    13: ("203.0.113.130", 4789, 17, "5-tuple", None),  # mixed backend families: overhead 28 or 48
}
MTU = 1500
TOS_VALUES = [0x00, 0x01, 0x02, 0x03, 0x10, 0x28, 0x2A, 0x48, 0x89, 0xB8, 0xB9, 0xBA, 0xBB, 0xE0, 0xFF]

rng = random.Random(SEED)
# Cases for pipeline bugs reported but not fixed yet (see README.md); on with --pending.
PENDING = "--pending" in sys.argv
PENDING_ENTRIES = []  # cases for reported, not yet fixed bugs (--pending); none open
LATE_ENTRIES = []


def is6(addr):
    return ":" in addr


class Entry:
    """One input frame and its expectation."""

    def __init__(self, frame, exp):
        self.frame = frame
        self.exp = exp


def client_mac():
    return "02:00:00:aa:%02x:%02x" % (rng.randrange(256), rng.randrange(256))


def ether(tags=(), src=None):
    """Ether header plus VLAN tags: tags is a tuple of ('ad'|'q', vlan, prio)."""
    e = Ether(src=src or client_mac(), dst=PORT_MAC)
    for kind, vlan, prio in tags:
        e = e / (Dot1AD(vlan=vlan, prio=prio) if kind == "ad" else Dot1Q(vlan=vlan, prio=prio))
    return e


def finish(pkt, pad=True, pad_byte=None):
    b = bytes(pkt)
    if pad and len(b) < 60:
        # Non-zero padding, so padding that leaks into a tunnel shows up in the byte compare.
        b += bytes([pad_byte if pad_byte is not None else 0xA5]) * (60 - len(b))
    return b


def ip_meta(frame, ntags):
    l3 = 14 + 4 * ntags
    if frame[l3] >> 4 == 4:
        ip_len = int.from_bytes(frame[l3 + 2 : l3 + 4], "big")
    else:
        ip_len = 40 + int.from_bytes(frame[l3 + 4 : l3 + 6], "big")
    return l3, ip_len


def fwd(pkt, action, desc, tags=(), pad=True, **exp):
    frame = finish(ether(tags) / pkt, pad)
    l3, ip_len = ip_meta(frame, len(tags))
    e = {"verdict": "forward", "action": action, "desc": desc, "l3": l3, "ip_len": ip_len}
    e.update(exp)
    return Entry(frame, e)


def flow_pkt(vip, client, sport, desc, tags=(), flow=None, dport=None, tos=0, df=True, flags="A",
             payload=b"", ext=(), pad=True, ip_options=None):
    """A TCP/UDP packet from client:sport to the VIP, expected to be encapsulated / DSR'd."""
    addr, vport, proto, policy, _ = VIP[vip]
    dport = vport if dport is None else dport
    l4 = TCP(sport=sport, dport=dport, flags=flags, seq=rng.randrange(1 << 32), window=65535) if proto == 6 \
        else UDP(sport=sport, dport=dport)
    if proto == 6 and "S" in flags:
        l4.options = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]
    if is6(addr):
        l3 = IPv6(src=client, dst=addr, tc=tos, fl=rng.randrange(1 << 20), hlim=rng.choice([64, 255, 3]))
        for h in ext:
            l3 = l3 / h
    else:
        l3 = IP(src=client, dst=addr, tos=tos, flags="DF" if df else 0, id=rng.randrange(65536),
                ttl=rng.choice([64, 128, 2]))
        if ip_options:
            l3.options = ip_options
    pkt = l3 / l4 / Raw(payload) if payload else l3 / l4
    action = "dsr" if vip in (3, 9) else "encap"
    fid = flow or f"{client}|{sport}|{addr}|{dport}|{proto}"
    return fwd(pkt, action, desc, tags, pad, vip=vip, tuple=[client, addr, sport, dport, proto], policy=policy,
               flow=fid)


def interleave(streams):
    """Merges streams randomly, keeping each stream's own order."""
    streams = [list(s) for s in streams if s]
    out = []
    while streams:
        i = rng.randrange(len(streams))
        out.append(streams[i].pop(0))
        if not streams[i]:
            streams.pop(i)
    return out


def v4_client(i):
    return f"10.{1 + i // 60000}.{(i // 250) % 240}.{1 + i % 250}"


def v6_client(i):
    return f"2001:db8:c::{i + 1:x}"


def rand_tags():
    r = rng.random()
    if r < 0.15:
        return (("q", rng.randrange(1, 4095), rng.randrange(8)),)
    if r < 0.22:
        return (("ad", rng.randrange(1, 4095), 0), ("q", rng.randrange(1, 4095), rng.randrange(8)))
    if r < 0.25:
        return (("q", 10, 0), ("q", 20, 0))
    return ()


# ---------------------------------------------------------------------------------------------
# Flow traffic
# ---------------------------------------------------------------------------------------------


def tcp_flows(vip, count, client_fn, first_client, npkts=3, ext_fn=None):
    streams = []
    used = set()
    for i in range(count):
        # Some clients open several connections: distinct 5-tuples, shared addresses.
        client = client_fn(first_client + (i if i % 5 else i // 2))
        while True:
            sport = rng.randrange(1024, 65536)
            if (client, sport) not in used:
                used.add((client, sport))
                break
        tos = rng.choice(TOS_VALUES)
        s = []
        kinds = ["S", "A", "PA", "FA"][:npkts]
        for k in kinds:
            payload = b"" if k in ("S", "A", "FA") else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1300)))
            ext = ext_fn() if ext_fn else ()
            s.append(flow_pkt(vip, client, sport, f"vip{vip} flow {client}:{sport} {k}", tags=rand_tags(), tos=tos,
                              flags=k, payload=payload, ext=ext))
        streams.append(s)
    return streams


def udp_flows(vip, count, client_fn, first_client, npkts=2):
    streams = []
    for i in range(count):
        client = client_fn(first_client + i)
        sport = rng.randrange(1024, 65536)
        tos = rng.choice(TOS_VALUES)
        s = []
        for k in range(npkts):
            n = rng.choice([0, 1, 5, 30, 200, 512])
            s.append(flow_pkt(vip, client, sport, f"vip{vip} udp flow {client}:{sport} #{k}", tags=rand_tags(),
                              tos=tos, payload=bytes(rng.randrange(256) for _ in range(n))))
        streams.append(s)
    return streams


def v6_ext():
    r = rng.random()
    if r < 0.6:
        return ()
    choices = [
        (IPv6ExtHdrHopByHop(),),
        (IPv6ExtHdrDestOpt(),),
        (IPv6ExtHdrRouting(addresses=[], segleft=0),),
        (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=[], segleft=0), IPv6ExtHdrDestOpt()),
    ]
    return rng.choice(choices)


def flows():
    streams = []
    streams += tcp_flows(0, 240, v4_client, 0, npkts=3)  # the multi-backend balance set
    streams += udp_flows(1, 200, v4_client, 1000, npkts=2)  # GUE 4-in-6: source-port entropy
    streams += tcp_flows(7, 40, v4_client, 2000, npkts=2)  # GUE 4-in-4
    streams += tcp_flows(2, 40, v6_client, 0, npkts=2, ext_fn=v6_ext)  # 6-in-6
    streams += tcp_flows(6, 20, v6_client, 100, npkts=2, ext_fn=v6_ext)  # 6-in-4
    streams += udp_flows(8, 30, v6_client, 200, npkts=2)  # GUE 6-in-6
    # L2 DSR: all ports.
    for i in range(30):
        client, sport, dport = v4_client(3000 + i), rng.randrange(1024, 65536), rng.choice([22, 80, 443, 8443, 9000])
        streams.append([flow_pkt(3, client, sport, f"dsr4 {client}:{sport}->{dport} {k}", dport=dport, flags=k,
                                 tags=rand_tags(), tos=rng.choice(TOS_VALUES)) for k in ("S", "A")])
    for i in range(20):
        client, sport, dport = v6_client(300 + i), rng.randrange(1024, 65536), rng.choice([80, 443])
        streams.append([flow_pkt(9, client, sport, f"dsr6 {client}:{sport}->{dport} {k}", dport=dport, flags=k,
                                 ext=v6_ext()) for k in ("S", "A")])
    # 3-tuple VIP: each client opens several connections from different ports.
    for i in range(12):
        client = v4_client(4000 + i)
        for _ in range(4):
            sport = rng.randrange(1024, 65536)
            streams.append([flow_pkt(4, client, sport, f"3tuple {client}:{sport} {k}", flags=k) for k in ("S", "A")])
    # IPv6 dst-port VIP and a GUE VIP with backends of both families.
    for dport in (80, 443, 8443):
        for i in range(5):
            client, sport = v6_client(400 + dport % 97 * 5 + i), rng.randrange(1024, 65536)
            streams.append([flow_pkt(12, client, sport, f"dstport6 {client}:{sport}->{dport} {k}", dport=dport,
                                     flags=k, ext=v6_ext()) for k in ("S", "A")])
    streams += udp_flows(13, 60, v4_client, 3500, npkts=2)
    # dst-port VIP: many clients per port.
    for dport in (25, 80, 443, 993, 5432, 8080):
        for i in range(6):
            client, sport = v4_client(5000 + dport * 10 + i), rng.randrange(1024, 65536)
            streams.append([flow_pkt(5, client, sport, f"dstport {client}:{sport}->{dport} {k}", dport=dport, flags=k)
                            for k in ("S", "A")])
    return streams


# ---------------------------------------------------------------------------------------------
# Special cases
# ---------------------------------------------------------------------------------------------


def drop(frame, reason, desc):
    return Entry(frame, {"verdict": "drop", "reason": reason, "desc": desc})


def kernel(frame, desc):
    return Entry(frame, {"verdict": "kernel", "desc": desc})


def tcp_to(dst, dport=80, src="10.9.0.1", sport=40000, **ip):
    if is6(dst):
        return IPv6(src="2001:db8:c::999", dst=dst) / TCP(sport=sport, dport=dport, flags="S")
    return IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport, flags="S")


def size_tcp(vip, ip_len, df=True, tags=(), tos=0, desc=""):
    """A TCP packet to `vip` whose IP packet is exactly ip_len bytes."""
    addr, vport, _, policy, _ = VIP[vip]
    client = v6_client(900 + ip_len % 97) if is6(addr) else v4_client(9000 + ip_len % 97)
    sport = 30000 + ip_len
    hdr = 60 if is6(addr) else 40
    pkt = flow_pkt(vip, client, sport, desc, tags=tags, tos=tos, df=df, flags="PA",
                   dport=vport or 80, payload=bytes(rng.randrange(256) for _ in range(ip_len - hdr)))
    assert pkt.exp["ip_len"] == ip_len, (pkt.exp["ip_len"], ip_len)
    return pkt


def size_udp(vip, ip_len, df=True, desc=""):
    addr, vport, _, _, _ = VIP[vip]
    client = v6_client(950) if is6(addr) else v4_client(9500)
    hdr = 48 if is6(addr) else 28
    pkt = flow_pkt(vip, client, 5353, desc, df=df, payload=bytes(rng.randrange(256) for _ in range(ip_len - hdr)))
    assert pkt.exp["ip_len"] == ip_len
    return pkt


def too_big(e, mtu):
    """Turns an expected forward into the ICMP error the oracle expects instead."""
    v6 = e.exp["tuple"][1].count(":") > 0
    e.exp = {"verdict": "forward", "action": "ptb" if v6 else "frag_needed", "mtu": mtu, "desc": e.exp["desc"],
             "l3": e.exp["l3"], "ip_len": e.exp["ip_len"]}
    return e


def as_drop(e, reason):
    e.exp = {"verdict": "drop", "reason": reason, "desc": e.exp["desc"]}
    return e


def mtu_cases():
    out = []
    # IPv4 DF through IPIP (overhead 20): 1480 fits exactly, 1481 does not.
    out.append(size_tcp(0, 1480, desc="ipip v4 DF exactly at MTU"))
    out.append(too_big(size_tcp(0, 1481, desc="ipip v4 DF one byte over"), 1480))
    out.append(too_big(size_tcp(0, 1500, tags=(("q", 77, 3),), desc="ipip v4 DF 1500 in VLAN"), 1480))
    out.append(too_big(size_tcp(0, 9000, desc="ipip v4 DF jumbo (quote capped at 576)"), 1480))
    out.append(as_drop(size_tcp(0, 1481, df=False, desc="ipip v4 no DF over"), "too_big_no_df"))
    out.append(as_drop(size_tcp(0, 1600, df=False, tags=(("ad", 5, 0), ("q", 6, 0)), desc="QinQ no DF over"),
                       "too_big_no_df"))
    # GUE 4-in-6 (overhead 48), GUE 4-in-4 (28), DSR (0), 6-in-6 (40), 6-in-4 (20), GUE 6-in-6 (48).
    out.append(size_udp(1, 1452, desc="gue 4in6 at MTU"))
    out.append(too_big(size_udp(1, 1453, desc="gue 4in6 DF over"), 1452))
    out.append(as_drop(size_udp(1, 1453, df=False, desc="gue 4in6 no DF over"), "too_big_no_df"))
    out.append(size_tcp(7, 1472, desc="gue 4in4 at MTU"))
    out.append(too_big(size_tcp(7, 1473, desc="gue 4in4 DF over"), 1472))
    out.append(size_tcp(3, 1500, desc="dsr v4 at MTU"))
    out.append(too_big(size_tcp(3, 1501, desc="dsr v4 DF over"), 1500))
    out.append(size_tcp(2, 1460, desc="6in6 at MTU"))
    out.append(too_big(size_tcp(2, 1461, desc="6in6 over -> PTB"), 1460))
    out.append(too_big(size_tcp(2, 4000, tags=(("q", 9, 0),), desc="6in6 big in VLAN -> PTB (quote capped)"), 1460))
    out.append(size_tcp(6, 1480, desc="6in4 at MTU"))
    out.append(too_big(size_tcp(6, 1481, desc="6in4 over -> PTB"), 1480))
    out.append(too_big(size_udp(8, 1453, desc="gue 6in6 over -> PTB"), 1452))
    out.append(size_udp(8, 1452, desc="gue 6in6 at MTU"))
    out.append(size_tcp(9, 1500, desc="dsr v6 at MTU"))
    out.append(too_big(size_tcp(9, 1501, desc="dsr v6 over -> PTB"), 1500))
    return out


def echo_cases():
    out = []
    for vip, tags, size in ((0, (), 4), (0, (("q", 100, 5),), 56), (11, (("ad", 7, 0), ("q", 8, 1)), 0),
                            (2, (), 56), (9, (("q", 3, 0),), 8), (1, (), 1000)):
        addr = VIP[vip][0]
        data = bytes(rng.randrange(256) for _ in range(size))
        if is6(addr):
            pkt = IPv6(src=v6_client(700 + vip), dst=addr, tc=0x28) / ICMPv6EchoRequest(id=vip, seq=7, data=data)
        else:
            pkt = IP(src=v4_client(7000 + vip), dst=addr, tos=0x10) / ICMP(id=vip, seq=7) / Raw(data)
        out.append(fwd(pkt, "echo_reply", f"echo to vip{vip} ({len(tags)} tags, {size} bytes)", tags))
    # Checksum edge cases for the incremental update (RFC 1624): requests whose checksum becomes
    # 0x0000 / 0xFFFF in the reply, and a request that itself carries 0xFFFF (another form of 0).
    from scapy.utils import checksum as inet_sum
    wanted = {0xF7FF: None, 0xF800: None, 0x07FF: None, 0x0000: None}
    for seq in range(65536):
        c = inet_sum(struct.pack("!BBHHH", 8, 0, 0, 77, seq) + b"edge")
        if c in wanted and wanted[c] is None:
            wanted[c] = seq
        if all(v is not None for v in wanted.values()):
            break
    for c, seq in sorted(wanted.items()):
        pkt = IP(src=v4_client(7300), dst=VIP[0][0]) / ICMP(id=77, seq=seq) / Raw(b"edge")
        out.append(fwd(pkt, "echo_reply", f"echo whose request checksum is {c:#06x}"))
        if c == 0x0000:
            b = bytearray(finish(ether() / pkt))
            b[14 + 20 + 2:14 + 20 + 4] = b"\xff\xff"
            e = fwd(pkt, "echo_reply", "echo whose request checksum is 0xffff (negative zero)")
            e.frame = bytes(b)
            out.append(e)
    # Echo with an extension header before ICMPv6.
    pkt = IPv6(src=v6_client(790), dst=VIP[2][0]) / IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(id=1, seq=2, data=b"x" * 9)
    out.append(fwd(pkt, "echo_reply", "echo v6 with dest-options header"))
    return out


def icmp_error_cases(flow_entries):
    """ICMP errors quoting a VIP -> client packet of a known flow: forwarded to that flow's backend."""
    out = []
    picks = {}
    for e in flow_entries:
        x = e.exp
        if x.get("action") in ("encap", "dsr") and "frag" not in x:
            picks.setdefault(x["vip"], []).append(x)
    for vip, mk in ((0, "frag_needed"), (0, "unreach"), (0, "time_exceeded"), (1, "time_exceeded"),
                    (7, "frag_needed"), (3, "frag_needed"), (4, "unreach"), (2, "ptb"), (2, "time_exceeded"),
                    (8, "ptb"), (6, "ptb"), (9, "ptb")):
        for x in rng.sample(picks[vip], 2):
            client, addr, cport, vport, proto = x["tuple"]
            l4 = TCP(sport=vport, dport=cport, flags="SA") if proto == 6 else UDP(sport=vport, dport=cport)
            if is6(addr):
                quoted = bytes(IPv6(src=addr, dst=client) / l4 / Raw(b"q" * 100))
                body = ICMPv6PacketTooBig(mtu=1280) if mk == "ptb" else ICMPv6TimeExceeded()
                pkt = IPv6(src=ROUTER6, dst=addr) / body / Raw(quoted)
            else:
                quoted = bytes(IP(src=addr, dst=client, flags="DF") / l4 / Raw(b"q" * 100))[:28 + rng.choice([0, 8, 40])]
                t, c = {"frag_needed": (3, 4), "unreach": (3, 1), "time_exceeded": (11, 0)}[mk]
                icmp = ICMP(type=t, code=c, nexthopmtu=1400) if mk == "frag_needed" else ICMP(type=t, code=c)
                pkt = IP(src=ROUTER4, dst=addr, tos=0xC0) / icmp / Raw(quoted)
            action = "dsr" if vip in (3, 9) else "encap"
            out.append(fwd(pkt, action, f"icmp {mk} about flow {x['flow']}", tags=rand_tags(), vip=vip,
                           tuple=x["tuple"], policy=VIP[vip][3], flow=x["flow"], icmp_error=True))
    return out


def fragment_cases():
    out_streams = []
    group = 0

    def v4_frags(vip, proto, sizes, order, expect=None, tags=()):
        nonlocal group
        group += 1
        addr = VIP[vip][0]
        client = v4_client(8000 + group)
        l4 = UDP(sport=4444, dport=VIP[vip][1] or 80) if proto == 17 else TCP(sport=4444, dport=VIP[vip][1] or 80)
        full = bytes(IP(src=client, dst=addr, proto=proto) / l4 / Raw(bytes(rng.randrange(256) for _ in range(sum(sizes)))))
        body = full[20:]
        ident = rng.randrange(65536)
        pieces, off = [], 0
        for k, n in enumerate(sizes):
            chunk = body[off:] if k == len(sizes) - 1 else body[off:off + n]
            more = k < len(sizes) - 1
            pkt = IP(src=client, dst=addr, id=ident, proto=proto, flags="MF" if more else 0, frag=off // 8,
                     tos=0x2A) / Raw(chunk)
            desc = f"v4 frag group {group} piece {k} (off {off})"
            if expect:
                e = Entry(finish(ether(tags) / pkt), {"verdict": "drop", "reason": expect, "desc": desc})
            else:
                e = fwd(pkt, "dsr" if vip == 3 else "encap", desc, tags, vip=vip, tuple=[client, addr, 0, 0, proto],
                        policy="3-tuple", frag=f"g{group}")
            pieces.append(e)
            off += len(chunk)
        return [pieces[i] for i in order]

    def v6_frags(vip, proto, sizes, order, atomic=False, dest_opts=False):
        nonlocal group
        group += 1
        addr = VIP[vip][0]
        client = v6_client(800 + group)
        l4 = UDP(sport=4444, dport=VIP[vip][1] or 80) if proto == 17 else TCP(sport=4444, dport=VIP[vip][1] or 80)
        l3 = IPv6(src=client, dst=addr) / IPv6ExtHdrDestOpt() if dest_opts else IPv6(src=client, dst=addr)
        full = bytes(l3 / l4 / Raw(bytes(rng.randrange(256) for _ in range(sum(sizes)))))
        body = full[40:]
        first_nh = 60 if dest_opts else proto
        ident = rng.randrange(1 << 32)
        if atomic:
            pkt = IPv6(src=client, dst=addr) / IPv6ExtHdrFragment(nh=proto, offset=0, m=0, id=ident) / Raw(body)
            sport, dport = 4444, VIP[vip][1] or 80
            return [fwd(pkt, "encap", "v6 atomic fragment (whole packet)", vip=vip,
                        tuple=[client, addr, sport, dport, proto], policy=VIP[vip][3],
                        flow=f"{client}|{sport}|{addr}|{dport}|{proto}")]
        pieces, off = [], 0
        for k, n in enumerate(sizes):
            chunk = body[off:] if k == len(sizes) - 1 else body[off:off + n]
            more = k < len(sizes) - 1
            pkt = IPv6(src=client, dst=addr, tc=0xB8) / IPv6ExtHdrFragment(nh=first_nh, offset=off // 8, m=int(more),
                                                                           id=ident) / Raw(chunk)
            pieces.append(fwd(pkt, "dsr" if vip == 9 else "encap", f"v6 frag group {group} piece {k} (off {off})",
                              vip=vip, tuple=[client, addr, 0, 0, proto], policy="3-tuple", frag=f"g{group}"))
            off += len(chunk)
        return [pieces[i] for i in order]

    out_streams.append(v4_frags(1, 17, [1200, 1200, 800, 300], [2, 0, 3, 1]))  # GUE 4in6, out of order
    out_streams.append(v4_frags(0, 6, [800, 800, 16], [0, 1, 2], tags=(("q", 42, 0),)))
    out_streams.append(v4_frags(0, 6, [8, 8, 8, 100], [3, 2, 1, 0]))  # tiny fragments, reversed
    out_streams.append(v4_frags(3, 6, [600, 600], [1, 0]))  # DSR all-ports
    out_streams.append(v4_frags(5, 6, [400, 400], [0, 1]))  # dst-port VIP: fragments use 3-tuple
    out_streams.append(v4_frags(4, 6, [400, 400], [0, 1], expect="fragment_ambiguous"))
    out_streams.append(v4_frags(0, 17, [400, 400], [1, 0], expect="no_vip_for_port"))  # no UDP VIP there
    out_streams.append(v6_frags(8, 17, [1000, 1000, 64], [1, 2, 0]))
    out_streams.append(v6_frags(2, 6, [1200, 200], [0, 1]))
    out_streams.append(v6_frags(9, 6, [512, 512, 512], [2, 1, 0]))
    out_streams.append(v6_frags(2, 6, [0], [0], atomic=True))
    # IPv6 fragments with a Destination Options header after the Fragment header (RFC 8200 4.5):
    # non-first fragments name header 60, not UDP. Appended after everything else with its own
    # random state (it was once a --pending case, and the rest of the capture stays as it was).
    state = rng.getstate()
    LATE_ENTRIES.extend(v6_frags(8, 17, [504, 504, 100], [0, 2, 1], dest_opts=True))
    rng.setstate(state)
    return out_streams


def option_cases():
    """IPv4 options and IPv6 extension headers travel inside the tunnel untouched."""
    out = []
    opts = [
        [IPOption_RR(routers=["192.0.2.9", "0.0.0.0"])],
        [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()],
        [IPOption_RR(routers=["0.0.0.0"] * 9)],  # IHL 15
    ]
    for k, o in enumerate(opts):
        for vip in (0, 1, 3, 4, 7):
            client, sport = v4_client(6000 + 10 * k + vip), 20000 + k
            flags = "S" if VIP[vip][2] == 6 else ""
            out.append(flow_pkt(vip, client, sport, f"vip{vip} IPv4 options set {k}", ip_options=o, flags=flags,
                                tos=rng.choice(TOS_VALUES), tags=rand_tags()))
    return out


def extra_cases(flow_entries):
    """Trailing bytes, options inside ICMP quotes and echo requests, fragmented pings."""
    out = []
    # Trailing bytes past the IP length (not only 60-byte padding) never enter a tunnel.
    e = flow_pkt(1, v4_client(9600), 7777, "IPv4 UDP with 40 trailing junk bytes", payload=b"hello" * 20, pad=False)
    e.frame += bytes(range(1, 41))
    out.append(e)
    e = flow_pkt(8, v6_client(960), 7777, "IPv6 UDP with 24 trailing junk bytes", payload=b"hello", pad=False)
    e.frame += bytes(range(1, 25))
    out.append(e)
    e = flow_pkt(9, v6_client(961), 7777, "DSR IPv6 with trailing junk", dport=22, flags="S", pad=False)
    e.frame += b"\xee" * 30
    out.append(e)
    # IPv6: the longest accepted extension chain (8 headers) and AH; ESP / no-next-header have no ports.
    chain = [IPv6ExtHdrHopByHop()] + [IPv6ExtHdrDestOpt() for _ in range(6)] + [IPv6ExtHdrRouting(addresses=[], segleft=0)]
    out.append(flow_pkt(2, v6_client(970), 9999, "IPv6 with 8 extension headers (the limit)", flags="S", ext=chain))
    client, addr = v6_client(971), VIP[2][0]
    tcp = bytes(IPv6(src=client, dst=addr) / TCP(sport=9998, dport=443, flags="S"))[40:]  # pseudo-header has no AH
    pkt = IPv6(src=client, dst=addr) / AH(nh=6, payloadlen=4, spi=0x100, seq=1, icv=b"\x5a" * 12) / Raw(tcp)
    out.append(fwd(pkt, "encap", "IPv6 with an AH header", vip=2, tuple=[client, addr, 9998, 443, 6],
                   policy="5-tuple", flow=f"{client}|9998|{addr}|443|6"))
    out.append(drop(finish(ether() / IPv6(src=v6_client(972), dst=VIP[2][0], nh=50) / Raw(b"\0" * 24)),
                    "no_vip_for_port", "IPv6 ESP to a VIP"))
    out.append(drop(finish(ether() / IPv6(src=v6_client(972), dst=VIP[2][0], nh=59)), "no_vip_for_port",
                    "IPv6 no-next-header to a VIP"))
    # Echo request carrying IPv4 options: the reply keeps them.
    pkt = IP(src=v4_client(7100), dst=VIP[0][0], options=[IPOption_RR(routers=["0.0.0.0"] * 3)]) / ICMP(id=9, seq=1) / Raw(b"opt")
    out.append(fwd(pkt, "echo_reply", "echo with IPv4 options"))
    # A fragmented ping to a VIP: no VIP serves ICMP fragments.
    body = bytes(ICMP(id=3, seq=3) / Raw(b"p" * 1600))
    for k, (off, chunk, more) in enumerate(((0, body[:1480], 1), (1480, body[1480:], 0))):
        pkt = IP(src=v4_client(7200), dst=VIP[0][0], id=4242, proto=1, flags="MF" if more else 0, frag=off // 8) / Raw(chunk)
        out.append(drop(finish(ether() / pkt), "no_vip_for_port", f"fragmented ping piece {k}"))
    # ICMP errors whose quote carries IPv4 options / IPv6 extension headers.
    x = next(e.exp for e in flow_entries if e.exp["vip"] == 0 and "frag" not in e.exp)
    client, addr, cport, vport, proto = x["tuple"]
    quoted = bytes(IP(src=addr, dst=client, options=[IPOption_NOP()] * 8) / TCP(sport=vport, dport=cport))[:28 + 8]
    pkt = IP(src=ROUTER4, dst=addr) / ICMP(type=3, code=4, nexthopmtu=1300) / Raw(quoted)
    out.append(fwd(pkt, "encap", f"icmp frag-needed quoting IPv4 options, flow {x['flow']}", vip=0, tuple=x["tuple"],
                   policy="5-tuple", flow=x["flow"], icmp_error=True))
    x = next(e.exp for e in flow_entries if e.exp["vip"] == 2 and "frag" not in e.exp)
    client, addr, cport, vport, proto = x["tuple"]
    quoted = bytes(IPv6(src=addr, dst=client) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(sport=vport, dport=cport))
    pkt = IPv6(src=ROUTER6, dst=addr) / ICMPv6PacketTooBig(mtu=1280) / Raw(quoted)
    out.append(fwd(pkt, "encap", f"ICMPv6 PTB quoting extension headers, flow {x['flow']}", vip=2, tuple=x["tuple"],
                   policy="5-tuple", flow=x["flow"], icmp_error=True))
    return out


def kernel_cases():
    out = []
    out.append(kernel(finish(Ether(src=client_mac(), dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP[0][0], psrc="10.0.0.1")),
                      "ARP who-has VIP"))
    out.append(kernel(finish(ether() / IP(src="10.9.0.1", dst="192.0.2.99") / ICMP()), "ping to a non-VIP address"))
    out.append(kernel(finish(ether() / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(sport=40000, dport=179, flags="S")),
                      "BGP to a non-VIP address"))
    out.append(kernel(finish(ether((("q", 12, 0),)) / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(dport=179)),
                      "BGP in VLAN"))
    out.append(kernel(finish(ether() / IPv6(src="fe80::2", dst="ff02::1:ff00:10") / ICMPv6ND_NS(tgt=VIP[2][0])),
                      "ND neighbor solicitation for a VIP"))
    out.append(kernel(finish(ether() / IPv6(src="fe80::2", dst=VIP[2][0]) / ICMPv6ND_NS(tgt=VIP[2][0])),
                      "ND NS unicast to a VIP address"))
    out.append(kernel(finish(ether() / IPv6(src="2001:db8::2", dst="2001:db8::1") / IPv6ExtHdrHopByHop() / TCP(dport=179)),
                      "IPv6 BGP with hop-by-hop to a non-VIP"))
    out.append(kernel(finish(Ether(src=client_mac(), dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(b"\x02\x07" * 10)),
                      "LLDP"))
    bad = bytearray(finish(ether() / IP(src="10.9.0.1", dst="192.0.2.99") / TCP()))
    bad[14 + 10] ^= 0xFF
    out.append(kernel(bytes(bad), "bad IPv4 checksum to a non-VIP address (kernel's problem)"))
    return out


def malformed_cases():
    out = []
    vip4, vip6 = VIP[0][0], VIP[2][0]
    out.append(drop(b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00", "l2_malformed", "10-byte frame"))
    out.append(drop(bytes(Ether(src=client_mac(), dst=PORT_MAC, type=0x8100)) + b"\x00\x64", "l2_malformed",
                    "truncated VLAN tag"))
    out.append(drop(finish(ether((("ad", 1, 0), ("q", 2, 0), ("q", 3, 0))) / tcp_to(vip4)), "vlan_too_deep",
                    "three VLAN tags"))

    def raw4(pkt, patch, reason, desc, pad=False):
        b = bytearray(bytes(ether() / pkt))
        patch(b)
        if pad and len(b) < 60:
            b += b"\xa5" * (60 - len(b))
        out.append(drop(bytes(b), reason, desc))

    def set_u16(b, off, v):
        b[off:off + 2] = v.to_bytes(2, "big")

    raw4(IP(src="10.9.0.1", dst=vip4, ihl=4) / TCP(dport=80), lambda b: None, "ipv4_malformed", "IPv4 IHL 4")
    raw4(IP(src="10.9.0.1", dst="192.0.2.99", ihl=3) / TCP(dport=80), lambda b: None, "ipv4_malformed",
         "IPv4 IHL 3 to a non-VIP (parsed before the VIP lookup)")
    raw4(IP(src="10.9.0.1", dst=vip4, len=200) / TCP(dport=80), lambda b: None, "ipv4_malformed",
         "IPv4 total length past the frame")
    raw4(IP(src="10.9.0.1", dst=vip4, len=200) / TCP(dport=80), lambda b: None, "ipv4_malformed",
         "IPv4 total length past the padded frame", pad=True)
    raw4(IP(src="10.9.0.1", dst=vip4, len=12) / TCP(dport=80), lambda b: None, "ipv4_malformed",
         "IPv4 total length below header length")
    raw4(IP(src="10.9.0.1", dst=vip4, ihl=15) / TCP(dport=80), lambda b: None, "ipv4_malformed",
         "IPv4 IHL 15 (60-byte header) in a 40-byte packet")
    raw4(IP(src="10.9.0.1", dst=vip4, version=5) / TCP(dport=80), lambda b: None, "ipv4_malformed",
         "IPv4 version 5")
    out.append(drop(bytes(ether() / IP(src="10.9.0.1", dst=vip4))[:14 + 12], "ipv4_malformed",
                    "IPv4 header cut at 12 bytes"))

    def bad_sum(b):
        b[14 + 10] ^= 0x01

    raw4(IP(src="10.9.0.1", dst=vip4) / TCP(dport=80), bad_sum, "ipv4_bad_checksum", "IPv4 bad header checksum",
         pad=True)
    raw4(IP(src="10.9.0.1", dst=vip4, proto=6) / Raw(b"\x12\x34\x00\x50" + b"\0" * 6), lambda b: None,
         "tcp_malformed", "TCP header of 10 bytes")
    raw4(IP(src="10.9.0.1", dst=vip4) / TCP(dport=80, dataofs=4), lambda b: None, "tcp_malformed",
         "TCP data offset 4")
    raw4(IP(src="10.9.0.1", dst=vip4) / TCP(dport=80, dataofs=15), lambda b: None, "tcp_malformed",
         "TCP data offset 15 past the packet")
    raw4(IP(src="10.9.0.1", dst=vip4, len=30) / TCP(dport=80), lambda b: None, "tcp_malformed",
         "IPv4 length cuts the TCP header (rest of the frame is padding, not payload)", pad=True)
    raw4(IP(src="10.9.0.1", dst=VIP[1][0], proto=17) / Raw(b"\x12\x34\x00\x35"), lambda b: None, "udp_malformed",
         "UDP header of 4 bytes", pad=True)
    raw4(IP(src="10.9.0.1", dst=VIP[1][0]) / UDP(dport=53, len=4), lambda b: None, "udp_malformed",
         "UDP length field 4")
    raw4(IP(src="10.9.0.1", dst=VIP[1][0]) / UDP(dport=53, len=100) / Raw(b"x" * 10), lambda b: None,
         "udp_malformed", "UDP length field past the packet", pad=True)
    raw4(IP(src="10.9.0.1", dst=vip4, proto=1) / Raw(b"\x08\x00\x00"), lambda b: None, "icmp_malformed",
         "ICMP of 3 bytes to a VIP", pad=True)
    # (Timestamps fixed: Scapy's defaults read the clock.)
    raw4(IP(src="10.9.0.1", dst=vip4) / ICMP(type=13, ts_ori=1, ts_rx=2, ts_tx=3), lambda b: None,
         "icmp_unsupported", "ICMP timestamp to a VIP")
    raw4(IP(src="10.9.0.1", dst=vip4) / ICMP(type=0), lambda b: None, "icmp_unsupported", "ICMP echo reply to a VIP")
    raw4(IP(src=ROUTER4, dst=vip4) / ICMP(type=3, code=4) / Raw(bytes(IP(src=vip4, dst="10.9.0.1"))[:10]),
         lambda b: None, "icmp_malformed", "ICMP error quoting 10 bytes")
    raw4(IP(src=ROUTER4, dst=vip4) / ICMP(type=3, code=4) / Raw(bytes(IP(src=vip4, dst="10.9.0.1", proto=6))[:20]),
         lambda b: None, "icmp_malformed", "ICMP error quoting no port bytes")
    raw4(IP(src=ROUTER4, dst=vip4) / ICMP(type=11) / Raw(bytes(IP(src=vip4, dst="10.9.0.1") / ICMP())),
         lambda b: None, "icmp_unsupported", "ICMP error quoting an ICMP packet")
    raw4(IP(src=ROUTER4, dst=vip4) / ICMP(type=3, code=4) / Raw(bytes(IP(src=vip4, dst="10.9.0.1") /
                                                                      TCP(sport=81, dport=5555))[:28]),
         lambda b: None, "no_vip_for_port", "ICMP error about an unknown VIP port")
    # ICMP error that would not fit the tunnel: dropped, never answered with another ICMP error.
    big_quote = bytes(IP(src=vip4, dst="10.9.0.1", flags="DF") / TCP(sport=80, dport=5555) / Raw(b"z" * 1452))
    raw4(IP(src=ROUTER4, dst=vip4, flags="DF") / ICMP(type=3, code=4) / Raw(big_quote), lambda b: None,
         "too_big_icmp_error", "ICMP error larger than the tunnel MTU")

    # Not-for-any-VIP-port.
    out.append(drop(finish(ether() / tcp_to(vip4, dport=81)), "no_vip_for_port", "TCP to VIP address, unknown port"))
    out.append(drop(finish(ether() / IP(src="10.9.0.1", dst=vip4) / UDP(dport=80)), "no_vip_for_port",
                    "UDP to a TCP-only VIP address"))
    out.append(drop(finish(ether() / tcp_to(vip6, dport=80)), "no_vip_for_port", "IPv6 TCP to VIP, unknown port"))
    out.append(drop(finish(ether() / IP(src="10.9.0.1", dst=vip4, proto=47) / Raw(b"\0" * 20)), "no_vip_for_port",
                    "GRE to a VIP address"))
    out.append(drop(finish(ether() / IPv6(src="2001:db8:c::1", dst=vip6, nh=132) / Raw(b"\0" * 16)),
                    "no_vip_for_port", "SCTP to an IPv6 VIP"))
    out.append(drop(finish(ether() / tcp_to(VIP[11][0])), "no_backend", "VIP whose only backend is down"))

    # IPv6 header and extension-chain errors.
    v6 = bytes(ether() / IPv6(src="2001:db8:c::1", dst=vip6) / TCP(dport=443))
    out.append(drop(v6[:14 + 30], "ipv6_malformed", "IPv6 header cut at 30 bytes"))
    b = bytearray(v6)
    b[14 + 4:14 + 6] = (100).to_bytes(2, "big")
    out.append(drop(bytes(b), "ipv6_malformed", "IPv6 payload length past the frame"))
    b = bytearray(v6)
    b[14] = (b[14] & 0x0F) | 0x40
    out.append(drop(bytes(b), "ipv6_malformed", "version 4 in an IPv6 ethertype frame"))
    out.append(drop(finish(ether() / IPv6(src="2001:db8:c::1", dst=vip6) / IPv6ExtHdrDestOpt() /
                           IPv6ExtHdrHopByHop() / TCP(dport=443)), "ipv6_ext_malformed", "hop-by-hop after dest-opts"))
    out.append(drop(finish(ether() / IPv6(src="2001:db8:c::1", dst=vip6) / IPv6ExtHdrFragment(m=0, offset=0, id=1) /
                           IPv6ExtHdrFragment(m=0, offset=0, id=2) / TCP(dport=443)), "ipv6_ext_malformed",
                    "two fragment headers"))
    out.append(drop(finish(ether() / IPv6(src="2001:db8:c::1", dst=vip6, nh=60) / Raw(b"\x06\x0a" + b"\0" * 6)),
                    "ipv6_ext_malformed", "dest-opts header length past the payload"))
    chain = IPv6(src="2001:db8:c::1", dst=vip6)
    for _ in range(9):
        chain = chain / IPv6ExtHdrDestOpt()
    out.append(drop(finish(ether() / chain / TCP(dport=443)), "ipv6_ext_malformed", "nine extension headers"))
    out.append(drop(finish(ether() / IPv6(src="2001:db8:c::1", dst=vip6, nh=6) / Raw(b"\x12\x34\x01\xbb" + b"\0" * 8)),
                    "tcp_malformed", "IPv6 TCP header of 12 bytes"))
    out.append(drop(finish(ether() / IPv6(src="2001:db8:c::1", dst=vip6) / IPv6ExtHdrHopByHop(nh=6) /
                           Raw(b"\x12\x34\x01\xbb")), "tcp_malformed", "IPv6 hop-by-hop then 4 bytes of TCP"))
    b = bytes(ether() / IPv6(src="2001:db8:c::1", dst=VIP[8][0], nh=17) / Raw(b"\x12\x34\x00\x35"))
    out.append(drop(b, "udp_malformed", "IPv6 UDP header of 4 bytes"))
    out.append(drop(bytes(ether() / IPv6(src="2001:db8:c::1", dst=vip6, nh=58) / Raw(b"\x80\x00")),
                    "icmp_malformed", "ICMPv6 of 2 bytes to a VIP"))
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_dir = args[0] if args else "."
    os.makedirs(out_dir, exist_ok=True)
    flow_streams = flows()
    flow_entries = [e for s in flow_streams for e in s]
    singles = option_cases() + mtu_cases() + echo_cases() + kernel_cases() + malformed_cases()
    phase1 = interleave(flow_streams + fragment_cases() + [[e] for e in singles])
    # Second phase: more packets of established flows (now tracked) mixed with ICMP errors about them.
    again = [flow_pkt(x.exp["vip"], x.exp["tuple"][0], x.exp["tuple"][2], x.exp["desc"] + " (again, VLAN)",
                      tags=(("q", 200, 0),), dport=x.exp["tuple"][3], flags="A" if x.exp["tuple"][4] == 6 else "",
                      ext=())
             for x in rng.sample([e for e in flow_entries if e.exp["vip"] in (0, 1, 2)], 40)]
    phase2 = interleave([[e] for e in icmp_error_cases(flow_entries) + again + extra_cases(flow_entries)])
    entries = phase1 + phase2 + LATE_ENTRIES + PENDING_ENTRIES

    with open(os.path.join(out_dir, "in.pcap"), "wb") as f:
        # Classic pcap, microsecond timestamps, link type Ethernet.
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, e in enumerate(entries):
            # 20 us apart: the whole capture spans well under a second, so no flow times out.
            usec = i * 20
            f.write(struct.pack("<IIII", 1_700_000_000 + usec // 1_000_000, usec % 1_000_000, len(e.frame),
                                len(e.frame)))
            f.write(e.frame)
            e.exp["index"] = i
    with open(os.path.join(out_dir, "expect.json"), "w") as f:
        json.dump([e.exp for e in entries], f, indent=0)
    print(f"gen: {len(entries)} frames -> {out_dir}/in.pcap")


if __name__ == "__main__":
    main()
