//! Frame builders for tests and benchmarks. They write headers byte by byte from the RFC layouts
//! (not through `wire`'s emitters), so a test that builds with them and parses with `wire` checks
//! two independent pieces of code against each other.
#![doc(hidden)]

use std::net::IpAddr;

use wire::{checksum, EthernetAddress};

use crate::tables::{
    BackendEntry, BackendId, BackendState, ForwardingMode, HashPolicy, Port, VipEntry, VipId,
};

/// Client MAC used by builders.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 1];
/// Appliance port MAC used by builders.
pub const PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// Gateway MAC of [`port`].
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// An untagged port with [`PORT_MAC`], [`GATEWAY_MAC`] and this MTU.
pub fn port(mtu: u16) -> Port {
    Port {
        mac: EthernetAddress(PORT_MAC),
        gateway_mac: EthernetAddress(GATEWAY_MAC),
        mtu,
        vlan: None,
    }
}

/// A backend of weight 1, generation 0, no MAC.
pub fn backend(id: BackendId, address: &str, state: BackendState) -> BackendEntry {
    BackendEntry {
        id,
        generation: 0,
        address: parse_ip(address),
        weight: 1,
        state,
        mac: None,
    }
}

/// A 5-tuple-hashed VIP on egress port 0 with encapsulation sources 192.0.2.1 and 2001:db8::1
/// and a 65,537-slot Maglev table.
pub fn vip(
    id: VipId,
    address: &str,
    port: u16,
    protocol: u8,
    mode: ForwardingMode,
    backends: Vec<BackendEntry>,
) -> VipEntry {
    VipEntry {
        id,
        address: parse_ip(address),
        port,
        protocol,
        mode,
        hash: HashPolicy::FiveTuple,
        table_size: maglev::DEFAULT_TABLE_SIZE,
        encap_source_v4: Some("192.0.2.1".parse().unwrap_or_else(|_| unreachable!())),
        encap_source_v6: Some("2001:db8::1".parse().unwrap_or_else(|_| unreachable!())),
        egress_port: 0,
        backends,
    }
}

/// The transport part of a built frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    /// TCP with these ports and flags.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags byte.
        flags: u8,
    },
    /// UDP with these ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP(v6) echo request.
    Echo,
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct FrameSpec {
    /// 802.1Q tag (VLAN id), if any.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Transport header.
    pub l4: L4,
    /// Bytes of payload after the transport header.
    pub payload_len: usize,
    /// DSCP/ECN byte.
    pub tos: u8,
    /// IPv4 DF bit.
    pub dont_frag: bool,
}

impl FrameSpec {
    /// A TCP frame between two addresses (parsed from text).
    pub fn tcp(src: &str, dst: &str, src_port: u16, dst_port: u16, flags: u8) -> FrameSpec {
        FrameSpec {
            vlan: None,
            src: parse_ip(src),
            dst: parse_ip(dst),
            l4: L4::Tcp {
                src_port,
                dst_port,
                flags,
            },
            payload_len: 0,
            tos: 0,
            dont_frag: true,
        }
    }

    /// A UDP frame.
    pub fn udp(src: &str, dst: &str, src_port: u16, dst_port: u16) -> FrameSpec {
        FrameSpec {
            l4: L4::Udp { src_port, dst_port },
            ..FrameSpec::tcp(src, dst, 0, 0, 0)
        }
    }

    /// An echo request.
    pub fn echo(src: &str, dst: &str) -> FrameSpec {
        FrameSpec {
            l4: L4::Echo,
            payload_len: 16,
            ..FrameSpec::tcp(src, dst, 0, 0, 0)
        }
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = match self.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&src_port.to_be_bytes());
                h[2..4].copy_from_slice(&dst_port.to_be_bytes());
                h[4..8].copy_from_slice(&1000u32.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&65535u16.to_be_bytes());
                h
            }
            L4::Udp { src_port, dst_port } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&src_port.to_be_bytes());
                h[2..4].copy_from_slice(&dst_port.to_be_bytes());
                h
            }
            L4::Echo => {
                let mut h = vec![0u8; 8];
                h[0] = if self.src.is_ipv4() { 8 } else { 128 };
                h[4..8].copy_from_slice(&[0x12, 0x34, 0, 1]);
                h
            }
        };
        l4.extend((0..self.payload_len).map(|i| i as u8));
        let (protocol, csum_at) = match (self.l4, self.src.is_ipv4()) {
            (L4::Tcp { .. }, _) => (6u8, 16),
            (L4::Udp { .. }, _) => (17, 6),
            (L4::Echo, true) => (1, 2),
            (L4::Echo, false) => (58, 2),
        };
        if matches!(self.l4, L4::Udp { .. }) {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                checksum::pseudo_header_v4(&s, &d, protocol, l4.len() as u32)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                checksum::pseudo_header_v6(&s, &d, protocol, l4.len() as u32)
            }
            _ => panic!("FrameSpec: mixed address families"),
        };
        let sum = if protocol == 1 {
            !checksum::sum(&l4)
        } else {
            !checksum::combine(&[pseudo, checksum::sum(&l4)])
        };
        l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());

        let mut frame = Vec::new();
        frame.extend_from_slice(&PORT_MAC);
        frame.extend_from_slice(&CLIENT_MAC);
        if let Some(vid) = self.vlan {
            frame.extend_from_slice(&[0x81, 0x00]);
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                frame.extend_from_slice(&[0x08, 0x00]);
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[1] = self.tos;
                ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
                ip[6] = if self.dont_frag { 0x40 } else { 0 };
                ip[8] = 64;
                ip[9] = protocol;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = checksum::checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                frame.extend_from_slice(&[0x86, 0xdd]);
                let mut ip = [0u8; 40];
                ip[0] = 0x60 | (self.tos >> 4);
                ip[1] = self.tos << 4;
                ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                ip[6] = protocol;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                frame.extend_from_slice(&ip);
            }
            _ => unreachable!("checked above"),
        }
        frame.extend_from_slice(&l4);
        frame
    }
}

fn parse_ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("FrameSpec: {text:?} is not an IP address"))
}
