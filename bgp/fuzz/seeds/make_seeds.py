#!/usr/bin/env python3
"""Writes the handcrafted seeds (seed_*) of both fuzz targets, built byte by byte from the RFC
layouts (RFC 4271, 4760, 5492, 6793, 1997, 8092, 2918, 4724, 8203), not with our encoder.

message_decode seeds are whole BGP messages (several per file for some);
update_decode seeds are one flag byte (bit 0: 4-octet ASNs negotiated) plus an UPDATE body.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MSG = os.path.join(HERE, "..", "corpus", "message_decode")
UPD = os.path.join(HERE, "..", "corpus", "update_decode")


def msg(kind, body):
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


def cap(code, value):
    return struct.pack("!BB", code, len(value)) + value


def open_msg(my_as=65002, hold=90, bgp_id=b"\xc0\x00\x02\x02", caps=()):
    params = b"".join(struct.pack("!BB", 2, len(c)) + c for c in caps)
    return msg(1, struct.pack("!BHH", 4, my_as, hold) + bgp_id + struct.pack("!B", len(params)) + params)


def attr(flags, code, value):
    if len(value) > 255:
        flags |= 0x10
        return struct.pack("!BBH", flags, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def update_body(withdrawn=b"", attrs=b"", nlri=b""):
    return struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attrs)) + attrs + nlri


ORIGIN_IGP = attr(0x40, 1, b"\x00")
AS_PATH4 = attr(0x40, 2, b"\x02\x01" + struct.pack("!I", 65001))
AS_PATH2 = attr(0x40, 2, b"\x02\x01" + struct.pack("!H", 65001))
NEXT_HOP = attr(0x40, 3, bytes([192, 0, 2, 1]))
MED = attr(0x80, 4, struct.pack("!I", 10))
LOCAL_PREF = attr(0x40, 5, struct.pack("!I", 100))
COMMUNITIES = attr(0xC0, 8, struct.pack("!II", 0xFDE90064, 0xFFFF0000))
LARGE = attr(0xC0, 32, struct.pack("!III", 65001, 1, 2))
V4_HOST = b"\x20" + bytes([192, 0, 2, 10])
V6_HOST = b"\x80" + bytes.fromhex("20010db8000000000000000000000010")
MP_REACH_V6 = attr(
    0x80, 14,
    struct.pack("!HBB", 2, 1, 16) + bytes.fromhex("20010db8000000000000000000000001") + b"\x00" + V6_HOST,
)
MP_REACH_V6_LL = attr(
    0x80, 14,
    struct.pack("!HBB", 2, 1, 32) + bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("fe800000000000000000000000000001") + b"\x00" + V6_HOST,
)
MP_UNREACH_V6 = attr(0x80, 15, struct.pack("!HB", 2, 1) + V6_HOST)
MP_UNREACH_EOR = attr(0x80, 15, struct.pack("!HB", 2, 1))

CAPS = [
    cap(1, struct.pack("!HBB", 1, 0, 1)),
    cap(1, struct.pack("!HBB", 2, 0, 1)),
    cap(2, b""),
    cap(64, struct.pack("!H", 0x8078) + struct.pack("!HBB", 1, 1, 0x80) + struct.pack("!HBB", 2, 1, 0x80)),
    cap(65, struct.pack("!I", 65002)),
]

UPDATES = {
    "v4_announce_4octet": (1, update_body(attrs=ORIGIN_IGP + AS_PATH4 + NEXT_HOP + MED + COMMUNITIES + LARGE, nlri=V4_HOST)),
    "v4_announce_2octet": (0, update_body(attrs=ORIGIN_IGP + AS_PATH2 + NEXT_HOP + LOCAL_PREF, nlri=V4_HOST)),
    "v4_withdraw": (1, update_body(withdrawn=V4_HOST)),
    "v4_end_of_rib": (1, update_body()),
    "v6_announce": (1, update_body(attrs=MP_REACH_V6 + ORIGIN_IGP + AS_PATH4 + COMMUNITIES)),
    "v6_announce_link_local": (1, update_body(attrs=MP_REACH_V6_LL + ORIGIN_IGP + AS_PATH4)),
    "v6_withdraw": (1, update_body(attrs=MP_UNREACH_V6)),
    "v6_end_of_rib": (1, update_body(attrs=MP_UNREACH_EOR)),
    # RFC 7606 cases: missing mandatory attribute, bad ORIGIN value, wrong flags, duplicate.
    "missing_next_hop": (1, update_body(attrs=ORIGIN_IGP + AS_PATH4, nlri=V4_HOST)),
    "bad_origin": (1, update_body(attrs=attr(0x40, 1, b"\x07") + AS_PATH4 + NEXT_HOP, nlri=V4_HOST)),
    "bad_flags_med": (1, update_body(attrs=ORIGIN_IGP + AS_PATH4 + NEXT_HOP + attr(0x40, 4, b"\x00\x00\x00\x01"), nlri=V4_HOST)),
    "duplicate_origin": (1, update_body(attrs=ORIGIN_IGP + ORIGIN_IGP + AS_PATH4 + NEXT_HOP, nlri=V4_HOST)),
    "unknown_optional_transitive": (1, update_body(attrs=ORIGIN_IGP + AS_PATH4 + NEXT_HOP + attr(0xC0, 99, b"abc"), nlri=V4_HOST)),
    "extended_length_communities": (1, update_body(attrs=ORIGIN_IGP + AS_PATH4 + NEXT_HOP + attr(0xC0, 8, b"\x00\x01\x00\x02" * 80), nlri=V4_HOST)),
    "nlri_overrun": (1, update_body(attrs=ORIGIN_IGP + AS_PATH4 + NEXT_HOP, nlri=b"\x20\xc0\x00")),
    "attr_length_overrun": (1, struct.pack("!H", 0) + struct.pack("!H", 40) + ORIGIN_IGP),
}


def write(d, name, data):
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(MSG, exist_ok=True)
    os.makedirs(UPD, exist_ok=True)
    keepalive = msg(4, b"")
    messages = {
        "open_full_caps": open_msg(caps=CAPS),
        "open_as_trans": open_msg(my_as=23456, caps=[cap(65, struct.pack("!I", 4200000001))]),
        "open_no_caps": open_msg(),
        "open_bad_version": msg(1, struct.pack("!BHH", 3, 65002, 90) + b"\xc0\x00\x02\x02\x00"),
        "open_hold_1": open_msg(hold=1),
        "keepalive": keepalive,
        "notification_shutdown": msg(3, b"\x06\x02" + bytes([11]) + b"maintenance"),
        "notification_hold": msg(3, b"\x04\x00"),
        "route_refresh_v6": msg(5, struct.pack("!HBB", 2, 0, 1)),
        "bad_marker": b"\x00" * 16 + struct.pack("!HB", 19, 4),
        "bad_length": b"\xff" * 16 + struct.pack("!HB", 18, 4),
        "bad_type": msg(9, b""),
        "keepalive_with_body": msg(4, b"\x00"),
        "open_keepalive_update": open_msg(caps=CAPS) + keepalive + msg(2, UPDATES["v4_announce_4octet"][1]),
    }
    for name, (flag, body) in UPDATES.items():
        write(UPD, name, bytes([flag]) + body)
        messages["update_" + name] = msg(2, body)
    for name, data in messages.items():
        write(MSG, name, data)


if __name__ == "__main__":
    main()
