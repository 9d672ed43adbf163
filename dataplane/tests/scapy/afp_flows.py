#!/usr/bin/python3
"""Plays the hosts on the wire side of the net_af_packet test.

Sends, for each of --flows client flows, one TCP SYN client -> VIP and one TCP SYN-ACK in the
other direction (VIP -> client: not for a VIP, so the appliance hands it to the kernel), through
the kernel's veth, and captures what the appliance sends back. Every VIP frame must come back
exactly once, IP-in-IP encapsulated: Ethernet from the appliance port's MAC to the gateway MAC,
outer IPv4 from the encapsulation source to one of the backends with a correct checksum, the
client's IP packet unchanged inside. Prints one JSON line with the findings.
"""
import argparse
import json
import sys
import time

from scapy.all import IP, TCP, AsyncSniffer, Ether, sendp, conf

conf.verb = 0

p = argparse.ArgumentParser()
p.add_argument("--iface", required=True)
p.add_argument("--port-mac", required=True)
p.add_argument("--gateway-mac", required=True)
p.add_argument("--vip", required=True)
p.add_argument("--encap-src", required=True)
p.add_argument("--backends", required=True)
p.add_argument("--flows", type=int, default=64)
a = p.parse_args()
backends = set(a.backends.split(","))

client_mac = "02:c1:00:00:00:01"
sent = {}
frames = []
for i in range(a.flows):
    client = "198.18.%d.%d" % (i // 250, i % 250 + 1)
    sport = 20000 + i
    fwd = Ether(src=client_mac, dst=a.port_mac) / IP(src=client, dst=a.vip, ttl=64) / TCP(
        sport=sport, dport=80, flags="S", seq=1000 + i)
    rev = Ether(src=client_mac, dst=a.port_mac) / IP(src=a.vip, dst=client, ttl=64) / TCP(
        sport=80, dport=sport, flags="SA", seq=5000 + i, ack=1001 + i)
    fwd = Ether(bytes(fwd))
    sent[bytes(fwd[IP])] = i
    frames += [fwd, rev]

captured = []
sniffer = AsyncSniffer(iface=a.iface, store=False, prn=captured.append,
                       lfilter=lambda f: IP in f and f[IP].proto == 4)
sniffer.start()
time.sleep(0.5)
# Paced, so no fanout ring fills and rolls a frame over to the other queue.
sendp(frames, iface=a.iface, inter=0.002)
deadline = time.time() + 10
while time.time() < deadline and len(captured) < a.flows:
    time.sleep(0.05)
time.sleep(0.3)  # anything extra would show up as a duplicate
sniffer.stop()
got = list(captured)

bad = []
seen = set()
used = set()
for f in got:
    raw = bytes(f)
    outer = Ether(raw)
    if outer.src.lower() != a.port_mac.lower():
        bad.append("source MAC %s" % outer.src)
    if outer.dst.lower() != a.gateway_mac.lower():
        bad.append("destination MAC %s" % outer.dst)
    ip = outer[IP]
    if ip.src != a.encap_src:
        bad.append("outer source %s" % ip.src)
    if ip.dst not in backends:
        bad.append("outer destination %s" % ip.dst)
    chk = ip.chksum
    del ip.chksum
    if IP(bytes(ip))[IP].chksum != chk:
        bad.append("outer checksum")
    inner = bytes(outer[IP].payload)
    flow = sent.get(inner)
    if flow is None:
        bad.append("inner packet not one we sent")
    elif flow in seen:
        bad.append("flow %d twice" % flow)
    else:
        seen.add(flow)
        used.add(ip.dst)
print(json.dumps({"sent": len(frames), "encapsulated": len(got), "flows_seen": len(seen),
                  "backends_used": sorted(used), "bad": bad[:20]}))
