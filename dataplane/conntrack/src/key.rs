//! The flow key: the 5-tuple of a client -> VIP packet, IPv4 and IPv6 in one fixed-size form.
//!
//! IPv4 addresses are stored as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291 section
//! 2.5.5.2) so one key type, one comparison and one table serve both families.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The 5-tuple identifying one flow in the client -> VIP direction.
///
/// IPv4 addresses are IPv4-mapped IPv6 addresses; build keys with [`FlowKey::v4`] or
/// [`FlowKey::v6`] and read addresses back with [`FlowKey::src_ip`] / [`FlowKey::dst_ip`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    /// Client address, 16 bytes in network order (IPv4-mapped for IPv4).
    pub src_addr: [u8; 16],
    /// VIP address, 16 bytes in network order (IPv4-mapped for IPv4).
    pub dst_addr: [u8; 16],
    /// Client port (0 for protocols without ports).
    pub src_port: u16,
    /// VIP port (0 for protocols without ports).
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
}

impl FlowKey {
    /// A key for an IPv4 flow; the addresses are stored IPv4-mapped.
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, protocol: u8) -> Self {
        FlowKey {
            src_addr: src.to_ipv6_mapped().octets(),
            dst_addr: dst.to_ipv6_mapped().octets(),
            src_port,
            dst_port,
            protocol,
        }
    }

    /// A key for an IPv6 flow.
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16, protocol: u8) -> Self {
        FlowKey {
            src_addr: src.octets(),
            dst_addr: dst.octets(),
            src_port,
            dst_port,
            protocol,
        }
    }

    /// The client address; IPv4-mapped addresses come back as [`IpAddr::V4`].
    pub fn src_ip(&self) -> IpAddr {
        unmap(self.src_addr)
    }

    /// The VIP address; IPv4-mapped addresses come back as [`IpAddr::V4`].
    pub fn dst_ip(&self) -> IpAddr {
        unmap(self.dst_addr)
    }
}

fn unmap(octets: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl fmt::Display for FlowKey {
    /// `proto/src:sport->dst:dport`, IPv6 addresses in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (self.src_ip(), self.dst_ip());
        let proto = match self.protocol {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            p => format!("proto{p}"),
        };
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                write!(f, "{proto}/{s}:{}->{d}:{}", self.src_port, self.dst_port)
            }
            _ => write!(
                f,
                "{proto}/[{src}]:{}->[{dst}]:{}",
                self.src_port, self.dst_port
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trips_through_mapped_form() {
        let key = FlowKey::v4(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 7),
            5555,
            443,
            6,
        );
        assert_eq!(
            key.src_addr[..12],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        assert_eq!(key.src_ip(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(key.dst_ip(), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(key.to_string(), "tcp/192.0.2.1:5555->198.51.100.7:443");
    }

    #[test]
    fn v6_round_trips() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::80".parse().unwrap();
        let key = FlowKey::v6(src, dst, 1, 53, 17);
        assert_eq!(key.src_ip(), IpAddr::V6(src));
        assert_eq!(key.dst_ip(), IpAddr::V6(dst));
        assert_eq!(key.to_string(), "udp/[2001:db8::1]:1->[2001:db8::80]:53");
        assert_ne!(
            key,
            FlowKey::v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 53, 17)
        );
    }
}
