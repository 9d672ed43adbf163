//! Helpers shared by the integration tests: deterministic keys and a stand-in flow hash.

#![allow(dead_code)]

use conntrack::FlowKey;
use std::net::{Ipv4Addr, Ipv6Addr};

/// FNV-1a over the key bytes: a fixed, public hash like the pipeline's.
pub fn hash(key: &FlowKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = key
        .src_addr
        .into_iter()
        .chain(key.dst_addr)
        .chain(key.src_port.to_be_bytes())
        .chain(key.dst_port.to_be_bytes())
        .chain([key.protocol]);
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A distinct IPv4 TCP key per `i` (client address and port vary).
pub fn v4_key(i: u32) -> FlowKey {
    FlowKey::v4(
        Ipv4Addr::from(0x0a00_0000 | (i >> 8)),
        Ipv4Addr::new(198, 51, 100, 1),
        1024 + (i & 0xff) as u16,
        443,
        6,
    )
}

/// A distinct IPv6 key per `i` and protocol.
pub fn v6_key(i: u32, protocol: u8) -> FlowKey {
    FlowKey::v6(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x80),
        40_000,
        443,
        protocol,
    )
}

pub const SYN: conntrack::PacketKind = conntrack::PacketKind::Tcp { flags: 0x02 };
pub const ACK: conntrack::PacketKind = conntrack::PacketKind::Tcp { flags: 0x10 };
pub const FIN_ACK: conntrack::PacketKind = conntrack::PacketKind::Tcp { flags: 0x11 };
pub const RST: conntrack::PacketKind = conntrack::PacketKind::Tcp { flags: 0x04 };
