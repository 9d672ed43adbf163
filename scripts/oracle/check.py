#!/usr/bin/python3
"""Golden-pcap oracle, step 3: Scapy checks every verdict and every frame vipd-pcap sent.

Usage:
  /usr/bin/python3 check.py DIR [--setup setup.toml]       check DIR/{in.pcap,out.pcap,verdicts.jsonl,expect.json}
  /usr/bin/python3 check.py DIR --self-test                 corrupt copies of the output and require each
                                                            corruption to be detected

Prints one line per failure (`FAIL index N: what: expected X, got Y`) and a final line
`oracle: N passed, M failed`; exits non-zero on any failure. Decoding is Scapy's (plus the Python
model in model.py for the exact-backend check), never vipd's own parser.
"""

import argparse
import ipaddress
import json
import os
import struct
import sys
import tomllib
from collections import defaultdict

from scapy.all import IP, UDP, Ether, IPv6, Raw, conf
from scapy.layers.inet6 import in6_chksum
from scapy.utils import RawPcapReader, checksum

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model  # noqa: E402

conf.verb = 0
HERE = os.path.dirname(os.path.abspath(__file__))
ICMPV4_QUOTE_MAX = 576 - 20 - 8
ICMPV6_QUOTE_MAX = 1280 - 40 - 8


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def read_pcap(path):
    return [bytes(data) for data, _meta in RawPcapReader(path)]


class Backend:
    def __init__(self, index, sec):
        self.index = index
        self.address = ipaddress.ip_address(sec["address"])
        self.state = sec.get("state", "active")
        self.weight = sec.get("weight", 1)
        self.mac = sec.get("mac", "").lower() or None


class Vip:
    def __init__(self, index, sec):
        self.index = index
        self.address = ipaddress.ip_address(sec["address"])
        self.port = sec.get("port", 0)
        self.forwarding = sec.get("forwarding", "ipip")
        self.gue_port = sec.get("gue_port", 6080)
        self.policy = sec.get("hash", "5-tuple")
        self.src4 = sec.get("encap_source_v4")
        self.src6 = sec.get("encap_source_v6")
        self.backends = [Backend(i, b) for i, b in enumerate(sec.get("backend", []))]
        m = sec.get("table_size", model.DEFAULT_TABLE_SIZE)
        self.maglev = model.Maglev(
            [(b.address.packed, b.weight if b.state == "active" else 0) for b in self.backends], m)

    def active(self):
        return [b for b in self.backends if b.state == "active"]


class Setup:
    def __init__(self, path):
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        port = doc["port"][0]
        self.port_mac = port["mac"].lower()
        self.gateway_mac = port["gateway_mac"].lower()
        self.mtu = port.get("mtu", 1500)
        self.vips = [Vip(i, v) for i, v in enumerate(doc["vip"])]


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------


class Checker:
    def __init__(self, setup):
        self.setup = setup
        self.failures = []
        self.passed = 0
        self.current = None
        self.kinds = defaultdict(int)

    def fail(self, what, expected, got):
        self.failures.append(f"FAIL index {self.current}: {what}: expected {expected}, got {got}")
        return False

    def eq(self, what, expected, got):
        if expected != got:
            return self.fail(what, expected, got)
        return True

    def unit(self, label, ok):
        """Counts one check unit (a frame or a group property)."""
        if ok:
            self.passed += 1


def inner_tos(inner):
    if inner[0] >> 4 == 4:
        return inner[1]
    return ((inner[0] & 0x0F) << 4) | (inner[1] >> 4)


def ipv4_header_checksum_ok(header):
    """Scapy recomputes the header checksum (delete and rebuild); compare with the one sent."""
    h = IP(header)
    sent = h.chksum
    del h.chksum
    return IP(bytes(h)).chksum == sent, sent, IP(bytes(h)).chksum


def same_internet_checksum(a, b):
    """0x0000 and 0xFFFF are the two forms of one's-complement zero; both verify (RFC 1624 3)."""
    return a == b or {a, b} == {0, 0xFFFF}


def check_sum(c, what, computed, sent):
    if not same_internet_checksum(computed, sent):
        return c.fail(what, hex(computed), hex(sent))
    return True


def v6_upper_checksum(src, dst, nh, upper_zeroed):
    pkt = IPv6(src=src, dst=dst, nh=nh) / Raw(upper_zeroed)
    return in6_chksum(nh, pkt[Raw], upper_zeroed)


def reply_l2(c, inp, l3, out):
    """Replies keep the request's L2 header (tags included) with the MACs swapped."""
    want = bytearray(inp[:l3])
    want[0:6] = inp[6:12]
    want[6:12] = bytes.fromhex(c.setup.port_mac.replace(":", ""))
    return c.eq("reply L2 header (dst = client MAC, src = port MAC, request's tags)", bytes(want).hex(),
                out[:l3].hex())


def expected_backend(vip, e):
    client, addr, sport, dport, proto = e["tuple"]
    h = model.tuple_hash(client, addr, sport, dport, proto, e["policy"])
    idx = vip.maglev.lookup(h)
    return h, (vip.backends[idx] if idx is not None else None)


def check_encap(c, e, inp, out, obs):
    vip = c.setup.vips[e["vip"]]
    inner = inp[e["l3"]:e["l3"] + e["ip_len"]]
    ok = True
    eth = Ether(out[:14])
    ok &= c.eq("Ethernet src", c.setup.port_mac, eth.src)
    h, want = expected_backend(vip, e)
    if want is None:
        return c.fail("backend", "a backend (model has none)", "a forward")
    ok &= c.eq("Ethernet dst (gateway)", c.setup.gateway_mac, eth.dst)
    gue = vip.forwarding == "gue"
    if eth.type == 0x0800:
        if len(out) < 34:
            return c.fail("frame length", ">= 34", len(out))
        ip = IP(out[14:34])
        hdr_end = 34
        good, sent, recomputed = ipv4_header_checksum_ok(out[14:34])
        if not good:
            ok &= c.fail("outer IPv4 header checksum", hex(recomputed), hex(sent))
        ok &= c.eq("outer IPv4 version/IHL", (4, 5), (ip.version, ip.ihl))
        ok &= c.eq("outer IPv4 total length", len(out) - 14, ip.len)
        ok &= c.eq("outer TTL", 64, ip.ttl)
        ok &= c.eq("outer TOS (DSCP/ECN copied from inner)", inner_tos(inner), ip.tos)
        inner_df = bool(inner[6] & 0x40) if inner[0] >> 4 == 4 else True
        ok &= c.eq("outer DF (iff inner DF; IPv6 inner: set)", inner_df, bool(int(ip.flags) & 2))
        ok &= c.eq("outer MF/fragment offset", (0, 0), (int(ip.flags) & 1, ip.frag))
        ok &= c.eq("outer source (encap_source_v4)", vip.src4, ip.src)
        outer_dst, proto = ipaddress.ip_address(ip.dst), ip.proto
    elif eth.type == 0x86DD:
        if len(out) < 54:
            return c.fail("frame length", ">= 54", len(out))
        ip = IPv6(out[14:54])
        hdr_end = 54
        ok &= c.eq("outer IPv6 version", 6, ip.version)
        ok &= c.eq("outer IPv6 payload length", len(out) - 54, ip.plen)
        ok &= c.eq("outer hop limit", 64, ip.hlim)
        ok &= c.eq("outer traffic class (DSCP/ECN copied from inner)", inner_tos(inner), ip.tc)
        ok &= c.eq("outer flow label (flow hash & 0xfffff)", h & 0xFFFFF, ip.fl)
        ok &= c.eq("outer source (encap_source_v6)", ipaddress.ip_address(vip.src6), ipaddress.ip_address(ip.src))
        outer_dst, proto = ipaddress.ip_address(ip.dst), ip.nh
    else:
        return c.fail("outer ethertype", "0x0800 or 0x86dd", hex(eth.type))
    # Backend: exactly Maglev's pick, and in any case an active backend of this VIP.
    by_addr = {b.address: b for b in vip.backends}
    got_b = by_addr.get(outer_dst)
    if got_b is None:
        ok &= c.fail("outer destination (a backend of the VIP)", [str(b.address) for b in vip.backends], outer_dst)
    elif got_b.state != "active":
        ok &= c.fail("backend state for a new flow", "active", f"{outer_dst} is {got_b.state}")
    ok &= c.eq("backend (exact Maglev pick)", str(want.address), str(outer_dst))
    fam_ok = (eth.type == 0x0800) == (want.address.version == 4)
    ok &= c.eq("outer family = backend family", True, fam_ok)
    sport = None
    if gue:
        ok &= c.eq("outer protocol (GUE = UDP)", 17, proto)
        udp = out[hdr_end:hdr_end + 8]
        if len(udp) < 8:
            return c.fail("GUE UDP header", "8 bytes", len(udp))
        sport, dport, ulen, csum = struct.unpack("!HHHH", udp)
        ok &= c.eq("GUE UDP destination port", vip.gue_port, dport)
        if not 49152 <= sport <= 65535:
            ok &= c.fail("GUE UDP source port range", "49152..65535", sport)
        ok &= c.eq("GUE UDP source port (0xC000 | hash>>48 & 0x3FFF)", 0xC000 | (h >> 48) & 0x3FFF, sport)
        ok &= c.eq("GUE UDP length", len(out) - hdr_end, ulen)
        if eth.type == 0x0800:
            ok &= c.eq("GUE UDP checksum over IPv4 (zero)", 0, csum)
        else:
            zeroed = out[hdr_end:hdr_end + 6] + b"\0\0" + out[hdr_end + 8:]
            want_sum = v6_upper_checksum(ip.src, ip.dst, 17, zeroed) or 0xFFFF
            ok &= c.eq("GUE UDP checksum over IPv6 (valid)", hex(want_sum), hex(csum))
        payload = out[hdr_end + 8:]
    else:
        ok &= c.eq("outer protocol (4 = IPv4 inside, 41 = IPv6 inside)", 4 if inner[0] >> 4 == 4 else 41, proto)
        payload = out[hdr_end:]
    ok &= c.eq("inner packet byte-identical to the input IP packet (no padding)", inner.hex(), payload.hex())
    kind = f"{inner[0] >> 4}in{4 if eth.type == 0x0800 else 6}{'-gue' if gue else ''}"
    c.kinds[kind + ("-icmp-error" if e.get("icmp_error") else "") + ("-fragment" if "frag" in e else "")] += 1
    obs.append((e, str(outer_dst), sport))
    return ok


def check_dsr(c, e, inp, out, obs):
    vip = c.setup.vips[e["vip"]]
    inner = inp[e["l3"]:e["l3"] + e["ip_len"]]
    ok = True
    eth = Ether(out[:14])
    ok &= c.eq("Ethernet src", c.setup.port_mac, eth.src)
    _h, want = expected_backend(vip, e)
    if want is None:
        return c.fail("backend", "a backend (model has none)", "a forward")
    by_mac = {b.mac: b for b in vip.backends}
    got_b = by_mac.get(eth.dst)
    if got_b is None:
        ok &= c.fail("Ethernet dst (a backend MAC)", [b.mac for b in vip.backends], eth.dst)
    elif got_b.state != "active":
        ok &= c.fail("backend state for a new flow", "active", f"{got_b.address} is {got_b.state}")
    ok &= c.eq("backend MAC (exact Maglev pick)", want.mac, eth.dst)
    ok &= c.eq("ethertype", 0x0800 if inner[0] >> 4 == 4 else 0x86DD, eth.type)
    ok &= c.eq("IP packet byte-identical (no padding, no tags)", inner.hex(), out[14:].hex())
    c.kinds[f"dsr-v{inner[0] >> 4}"] += 1
    obs.append((e, str(got_b.address) if got_b else eth.dst, None))
    return ok


def check_frag_needed(c, e, inp, out):
    l3 = e["l3"]
    req = inp[l3:l3 + e["ip_len"]]
    ok = reply_l2(c, inp, l3, out)
    if len(out) < l3 + 28:
        return c.fail("frag-needed length", f">= {l3 + 28}", len(out))
    ip = IP(out[l3:l3 + 20])
    good, sent, recomputed = ipv4_header_checksum_ok(out[l3:l3 + 20])
    if not good:
        ok &= c.fail("ICMP reply IPv4 header checksum", hex(recomputed), hex(sent))
    rq = IP(req[:20])
    ok &= c.eq("reply IPv4 src = VIP", rq.dst, ip.src)
    ok &= c.eq("reply IPv4 dst = client", rq.src, ip.dst)
    ok &= c.eq("reply protocol / TTL / IHL", (1, 64, 5), (ip.proto, ip.ttl, ip.ihl))
    ok &= c.eq("reply total length", len(out) - l3, ip.len)
    icmp = out[l3 + 20:]
    ok &= c.eq("ICMP type/code (3/4 fragmentation needed)", (3, 4), (icmp[0], icmp[1]))
    zeroed = icmp[:2] + b"\0\0" + icmp[4:]
    ok &= check_sum(c, "ICMP checksum", checksum(zeroed), struct.unpack("!H", icmp[2:4])[0])
    ok &= c.eq("ICMP unused field", 0, struct.unpack("!H", icmp[4:6])[0])
    ok &= c.eq("ICMP next-hop MTU (1500 - tunnel overhead)", e["mtu"], struct.unpack("!H", icmp[6:8])[0])
    ok &= c.eq("quoted data = start of the original packet", req[:ICMPV4_QUOTE_MAX].hex(), icmp[8:].hex())
    return ok


def check_ptb(c, e, inp, out):
    l3 = e["l3"]
    req = inp[l3:l3 + e["ip_len"]]
    ok = reply_l2(c, inp, l3, out)
    if len(out) < l3 + 48:
        return c.fail("packet-too-big length", f">= {l3 + 48}", len(out))
    ip, rq = IPv6(out[l3:l3 + 40]), IPv6(req[:40])
    ok &= c.eq("reply IPv6 src = VIP", rq.dst, ip.src)
    ok &= c.eq("reply IPv6 dst = client", rq.src, ip.dst)
    ok &= c.eq("reply next header / hop limit", (58, 64), (ip.nh, ip.hlim))
    ok &= c.eq("reply payload length", len(out) - l3 - 40, ip.plen)
    icmp = out[l3 + 40:]
    ok &= c.eq("ICMPv6 type/code (2/0 packet too big)", (2, 0), (icmp[0], icmp[1]))
    zeroed = icmp[:2] + b"\0\0" + icmp[4:]
    ok &= check_sum(c, "ICMPv6 checksum", v6_upper_checksum(ip.src, ip.dst, 58, zeroed),
                    struct.unpack("!H", icmp[2:4])[0])
    ok &= c.eq("ICMPv6 MTU (1500 - tunnel overhead)", e["mtu"], struct.unpack("!I", icmp[4:8])[0])
    ok &= c.eq("quoted data = start of the original packet", req[:ICMPV6_QUOTE_MAX].hex(), icmp[8:].hex())
    return ok


def check_echo(c, e, inp, out):
    l3 = e["l3"]
    req = inp[l3:l3 + e["ip_len"]]
    ok = reply_l2(c, inp, l3, out)
    rep = out[l3:]
    ok &= c.eq("echo reply length (request IP length, padding dropped)", len(req), len(rep))
    if len(rep) != len(req):
        return False
    if req[0] >> 4 == 4:
        ihl = (req[0] & 0xF) * 4
        rq, rp = IP(req[:ihl]), IP(rep[:ihl])
        good, sent, recomputed = ipv4_header_checksum_ok(rep[:ihl])
        if not good:
            ok &= c.fail("echo reply IPv4 header checksum", hex(recomputed), hex(sent))
        ok &= c.eq("echo reply addresses swapped", (rq.dst, rq.src), (rp.src, rp.dst))
        ok &= c.eq("echo reply TTL", 64, rp.ttl)
        ok &= c.eq("echo reply other header fields", (rq.tos, rq.len, rq.id, rq.proto), (rp.tos, rp.len, rp.id, rp.proto))
        icmp_q, icmp_p = req[ihl:], rep[ihl:]
        ok &= c.eq("ICMP type/code (echo reply)", (0, icmp_q[1]), (icmp_p[0], icmp_p[1]))
        zeroed = icmp_p[:2] + b"\0\0" + icmp_p[4:]
        ok &= check_sum(c, "ICMP checksum", checksum(zeroed), struct.unpack("!H", icmp_p[2:4])[0])
    else:
        rq, rp = IPv6(req[:40]), IPv6(rep[:40])
        ok &= c.eq("echo reply addresses swapped", (rq.dst, rq.src), (rp.src, rp.dst))
        ok &= c.eq("echo reply hop limit", 64, rp.hlim)
        ok &= c.eq("echo reply header bytes 0..8 except hop limit", req[:7].hex(), rep[:7].hex())
        # Find ICMPv6 after any extension headers (Scapy walks the chain).
        at = len(req) - len(bytes(IPv6(req).getlayer("ICMPv6 Echo Request")))
        ok &= c.eq("extension headers unchanged", req[40:at].hex(), rep[40:at].hex())
        icmp_q, icmp_p = req[at:], rep[at:]
        ok &= c.eq("ICMPv6 type/code (echo reply)", (129, icmp_q[1]), (icmp_p[0], icmp_p[1]))
        zeroed = icmp_p[:2] + b"\0\0" + icmp_p[4:]
        ok &= check_sum(c, "ICMPv6 checksum", v6_upper_checksum(rp.src, rp.dst, 58, zeroed),
                        struct.unpack("!H", icmp_p[2:4])[0])
    ok &= c.eq("echo identifier, sequence and data unchanged", icmp_q[4:].hex(), icmp_p[4:].hex())
    return ok


def check_all(setup, inputs, outputs, verdicts, expect, tshark=False):
    c = Checker(setup)
    c.current = "-"
    c.unit("counts", c.eq("input frames = verdict lines = expectations", (len(inputs),) * 2,
                          (len(verdicts), len(expect))))
    forwards = [v for v in verdicts if v.get("verdict") == "forward"]
    c.unit("out count", c.eq("output frames = forward verdicts", len(forwards), len(outputs)))
    obs = []
    next_out = 0
    for i, e in enumerate(expect):
        c.current = f"{i} ({e.get('desc', '')})"
        if i >= len(verdicts) or i >= len(inputs):
            c.fail("verdict line", "present", "missing")
            continue
        v = verdicts[i]
        ok = c.eq("verdict index", i, v.get("index"))
        ok &= c.eq("verdict", (e["verdict"], e.get("reason")), (v.get("verdict"), v.get("reason")))
        if v.get("verdict") == "forward":
            ok &= c.eq("output_index (in order)", next_out, v.get("output_index"))
            next_out += 1
        if ok and e["verdict"] == "forward":
            ok &= c.eq("egress port", 0, v.get("port"))
            oi = v.get("output_index")
            if oi is None or oi >= len(outputs):
                ok &= c.fail("output frame", f"frame {oi} in out.pcap", f"{len(outputs)} frames")
            else:
                out, inp = outputs[oi], inputs[i]
                try:
                    action = e["action"]
                    if action not in ("encap", "dsr"):
                        c.kinds[action] += 1
                    if action == "encap":
                        ok &= check_encap(c, e, inp, out, obs)
                    elif action == "dsr":
                        ok &= check_dsr(c, e, inp, out, obs)
                    elif action == "frag_needed":
                        ok &= check_frag_needed(c, e, inp, out)
                    elif action == "ptb":
                        ok &= check_ptb(c, e, inp, out)
                    elif action == "echo_reply":
                        ok &= check_echo(c, e, inp, out)
                    else:
                        ok &= c.fail("expectation", "a known action", action)
                except Exception as err:  # a frame Scapy cannot even decode is a failure, not a crash
                    ok &= c.fail("decoding the output frame", "a decodable frame", repr(err))
        if e["verdict"] != "forward":
            c.kinds[e["verdict"] + (":" + e["reason"] if "reason" in e else "")] += 1
        c.unit(i, ok)
    check_groups(c, obs)
    if tshark:
        tshark_check(c, outputs)
    return c


def check_groups(c, obs):
    """Properties over many frames, from what was observed on the wire (not from the model)."""
    by_flow, by_frag, sports = defaultdict(set), defaultdict(set), defaultdict(set)
    by_client3, by_dport, flows_per_backend = defaultdict(set), defaultdict(set), defaultdict(set)
    gue_sports_per_vip = defaultdict(set)
    for e, backend, sport in obs:
        if "flow" in e:
            by_flow[e["flow"]].add(backend)
            if sport is not None:
                sports[e["flow"]].add(sport)
                gue_sports_per_vip[e["vip"]].add((e["flow"], sport))
            flows_per_backend[e["vip"]].add((e["flow"], backend))
        if "frag" in e:
            by_frag[e["frag"]].add(backend)
        vip = c.setup.vips[e["vip"]]
        if "frag" not in e and vip.policy == "3-tuple":
            by_client3[(e["vip"], e["tuple"][0])].add(backend)
        if "frag" not in e and vip.policy == "dst-port":
            by_dport[(e["vip"], e["tuple"][3])].add(backend)

    def one_each(name, groups):
        ok = True
        for key, backends in groups.items():
            if len(backends) != 1:
                c.current = f"group {key}"
                ok &= c.fail(name, "one backend", sorted(backends))
        c.current = "-"
        c.unit(name, ok)

    one_each("same 5-tuple (and its ICMP errors) -> same backend", by_flow)
    one_each("all fragments of a datagram -> same backend", by_frag)
    one_each("3-tuple VIP: one client -> one backend whatever the ports", by_client3)
    one_each("dst-port VIP: one destination port -> one backend whatever the client", by_dport)
    ok = True
    for flow, s in sports.items():
        if len(s) != 1:
            c.current = f"flow {flow}"
            ok &= c.fail("GUE source port constant within a flow", "one port", sorted(s))
    c.current = "-"
    c.unit("gue sport per flow", ok)
    for vip_index, pairs in gue_sports_per_vip.items():
        nflows = len({f for f, _ in pairs})
        distinct = len({s for _, s in pairs})
        if nflows >= 100:
            c.current = f"vip {vip_index} GUE source ports over {nflows} flows"
            ok = distinct >= 16 or c.fail("distinct GUE source ports", ">= 16", distinct)
            c.current = "-"
            c.unit(f"gue entropy {vip_index}", ok)
    # Balance: over the big flow sets, every active backend takes at least one flow.
    for vip_index, pairs in flows_per_backend.items():
        vip = c.setup.vips[vip_index]
        nflows = len({f for f, _ in pairs})
        if nflows < 100:
            continue
        got = defaultdict(int)
        for _f, b in pairs:
            got[b] += 1
        c.current = f"vip {vip_index} balance over {nflows} flows"
        ok = True
        for b in vip.active():
            if got.get(str(b.address), 0) == 0:
                ok &= c.fail("every active backend gets a flow", f"{b.address} >= 1", dict(got))
        c.current = "-"
        c.unit(f"balance {vip_index}", ok)


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, i, len(fr), len(fr)))
            f.write(fr)


def tshark_check(c, outputs):
    """Second, independent decoder: tshark validates the outermost IPv4, UDP, ICMP and ICMPv6
    checksums (and TCP where no ICMP error quotes a truncated packet) and flags malformed frames.
    Skipped, with a note, when tshark is not installed."""
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("tshark"):
        print("oracle: tshark not found; skipping the second-decoder check")
        return
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.pcap")
        write_pcap(path, outputs)
        fields = ["frame.number", "ip.checksum.status", "udp.checksum.status", "icmp.checksum.status",
                  "icmpv6.checksum.status", "tcp.checksum.status", "icmp.type", "icmpv6.type", "_ws.malformed"]
        cmd = ["tshark", "-n", "-r", path, "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
               "-o", "tcp.check_checksum:TRUE", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
               "--disable-protocol", "http", "-T", "fields", "-E", "occurrence=f", "-E", "separator=,"]
        for f in fields:
            cmd += ["-e", f]
        res = subprocess.run(cmd, capture_output=True, text=True)
    c.current = "tshark"
    if res.returncode != 0:
        c.fail("tshark run", "exit 0", f"{res.returncode}: {res.stderr.strip()[:200]}")
        return
    ok = True
    for line in res.stdout.splitlines():
        n, ip, udp, icmp, icmp6, tcp, itype, i6type, malformed = (line.split(",") + [""] * 9)[:9]
        bad = [name for name, v in (("ip", ip), ("udp", udp), ("icmp", icmp), ("icmpv6", icmp6)) if v == "0"]
        if tcp == "0" and not itype and not i6type:
            bad.append("tcp")
        if malformed:
            bad.append("malformed")
        if bad:
            c.current = f"tshark output frame {int(n) - 1}"
            ok &= c.fail("tshark: checksums valid, frame well-formed", "good", "bad " + "/".join(bad))
    c.current = "-"
    c.unit("tshark", ok)


def load(d):
    inputs = read_pcap(os.path.join(d, "in.pcap"))
    outputs = read_pcap(os.path.join(d, "out.pcap"))
    with open(os.path.join(d, "verdicts.jsonl")) as f:
        verdicts = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(d, "expect.json")) as f:
        expect = json.load(f)
    return inputs, outputs, verdicts, expect


def report(c):
    for line in c.failures:
        print(line)
    print("oracle: frames by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(c.kinds.items())))
    print(f"oracle: {c.passed} passed, {len(c.failures)} failed")
    return 0 if not c.failures else 1


# ---------------------------------------------------------------------------------------------
# Self-test: the checker must fail on corrupted output
# ---------------------------------------------------------------------------------------------


def self_test(setup, inputs, outputs, verdicts, expect):
    base = check_all(setup, inputs, outputs, verdicts, expect)
    if base.failures:
        print("self-test: the uncorrupted run already fails; fix that first")
        return 1
    fwd = {v["output_index"]: expect[v["index"]] for v in verdicts if v.get("verdict") == "forward"}

    def first(pred):
        for oi in sorted(fwd):
            if pred(fwd[oi], outputs[oi]):
                return oi
        raise SystemExit("self-test: no frame to corrupt")

    def ipip4(e, o):
        return e.get("action") == "encap" and o[12:14] == b"\x08\x00" and o[23] == 4

    def gue(e, o):
        return e.get("action") == "encap" and c_vip(e).forwarding == "gue"

    def c_vip(e):
        return setup.vips[e["vip"]]

    cases = []

    # 1. Flip a byte of an outer IPv4 header checksum.
    oi = first(ipip4)
    o = bytearray(outputs[oi])
    o[24] ^= 0x40
    cases.append(("flipped outer IPv4 checksum byte", oi, bytes(o), "checksum"))
    cases.append(("flipped outer IPv4 checksum byte (tshark must see it too)", oi, bytes(o), "tshark: checksums"))

    # 2. Send a flow to another ACTIVE backend of its VIP, with a correct checksum: only the
    #    backend checks can notice.
    oi = first(lambda e, o: ipip4(e, o) and e["vip"] == 0 and "icmp_error" not in e)
    o = bytearray(outputs[oi])
    cur = ipaddress.ip_address(bytes(o[30:34]))
    other = next(b.address for b in setup.vips[0].active() if b.address != cur)
    o[30:34] = other.packed
    h = IP(bytes(o[14:34]))
    del h.chksum
    o[14:34] = bytes(h)
    cases.append(("outer destination swapped to another active backend (checksum fixed)", oi, bytes(o), "backend"))

    # 3. Drop an output frame.
    oi = len(outputs) // 2
    cases.append(("output frame dropped", oi, None, "output"))

    # 4. Change a GUE source port (UDP checksum zero over IPv4, so only the port checks see it).
    oi = first(lambda e, o: gue(e, o) and o[12:14] == b"\x08\x00")
    o = bytearray(outputs[oi])
    o[34] ^= 0x01
    cases.append(("GUE source port changed", oi, bytes(o), "source port"))

    # 5. Ethernet padding leaked into the tunnel (lengths fixed up consistently).
    oi = first(lambda e, o: ipip4(e, o) and e["ip_len"] < 46)
    o = bytearray(outputs[oi]) + b"\xa5" * 6
    struct.pack_into("!H", o, 16, len(o) - 14)
    h = IP(bytes(o[14:34]))
    del h.chksum
    o[14:34] = bytes(h)
    cases.append(("padding appended inside the tunnel", oi, bytes(o), "byte-identical"))

    # 6. Wrong MTU in a frag-needed.
    oi = first(lambda e, o: e.get("action") == "frag_needed")
    o = bytearray(outputs[oi])
    l3 = fwd[oi]["l3"]
    struct.pack_into("!H", o, l3 + 20 + 6, fwd[oi]["mtu"] - 1)
    cases.append(("frag-needed MTU off by one", oi, bytes(o), "MTU"))

    # 7. A drop reported under the wrong reason.
    vi = next(i for i, v in enumerate(verdicts) if v.get("reason") == "tcp_malformed")
    bad_verdicts = [dict(v) for v in verdicts]
    bad_verdicts[vi]["reason"] = "udp_malformed"
    cases.append(("drop under the wrong reason", None, bad_verdicts, "verdict"))

    failed = 0
    for name, oi, data, keyword in cases:
        outs, vers = list(outputs), verdicts
        if oi is None:
            vers = data
        elif data is None:
            del outs[oi]
        else:
            outs[oi] = data
        c = check_all(setup, inputs, outs, vers, expect, tshark=keyword.startswith("tshark"))
        hit = [f for f in c.failures if keyword.lower() in f.lower()]
        if hit:
            print(f"self-test: detected: {name} ({len(c.failures)} failures, e.g. {hit[0][:160]})")
        else:
            failed += 1
            print(f"self-test: NOT DETECTED: {name} (failures: {c.failures[:3]})")
    print(f"oracle self-test: {len(cases) - failed} of {len(cases)} corruptions detected")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--setup", default=os.path.join(HERE, "setup.toml"))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    model.self_test()
    setup = Setup(args.setup)
    data = load(args.dir)
    if args.self_test:
        return self_test(setup, *data)
    return report(check_all(setup, *data, tshark=True))


if __name__ == "__main__":
    sys.exit(main())
