#!/usr/bin/env python3
"""Decodes the handcrafted seed frames with tshark, an independent decoder, and prints the
protocol stack and any expert warnings (malformed, bad checksum) per seed.

Run: python3 seeds/check_with_tshark.py   (from dataplane/wire/fuzz; needs tshark)
"""
import glob
import os
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
seeds = sorted(glob.glob(os.path.join(HERE, "..", "corpus", "walk_frame", "seed_*")))
with tempfile.NamedTemporaryFile(suffix=".pcap", delete=False) as pcap:
    pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for path in seeds:
        data = open(path, "rb").read()
        pcap.write(struct.pack("<IIII", 0, 0, len(data), len(data)) + data)
out = subprocess.run(
    ["tshark", "-r", pcap.name, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
     "-o", "udp.check_checksum:TRUE",
     "-T", "fields", "-e", "frame.protocols", "-e", "_ws.expert.message", "-e", "_ws.malformed"],
    capture_output=True, text=True, check=True,
).stdout.splitlines()
os.unlink(pcap.name)
for path, line in zip(seeds, out):
    print(f"{os.path.basename(path):40} {line}")
