//! Zero-copy packet views and checked representations for vipd's L4 dataplane.
//!
//! This crate owns the bytes-on-the-wire layer, in the style of smoltcp's `wire` module. Each
//! protocol has two layers:
//!
//! - a **packet view** (`Ipv4Packet<T>`, `TcpPacket<T>`, ...) over any `T: AsRef<[u8]>`, with
//!   accessors that read fields in place and, when `T: AsMut<[u8]>`, setters that write them.
//!   `new_checked` validates every length a later accessor relies on, so after it succeeds no
//!   accessor can panic. `new_unchecked` skips that check; accessors on a too-short buffer then
//!   panic, so only use it on buffers you sized yourself (typically just before `emit`).
//! - a **representation** (`Ipv4Repr`, `TcpRepr`, ...): a plain struct with `parse` (checked,
//!   verifies checksums where the protocol has them) and `emit` into a caller's buffer.
//!
//! Parsing never panics on any input; malformed input is an [`Error`]. Nothing here allocates,
//! locks or formats on the packet path. Addresses use `std::net` types.
//!
//! Header-length constants are associated with the view, so name a buffer type:
//! `EthernetFrame::<&[u8]>::HEADER_LEN`. Views over `&'a [u8]` also have `into_payload()`,
//! which returns the payload with lifetime `'a` so nested views can outlive their parent.
//!
//! ```
//! use wire::{ethertype, ip_protocol, EthernetFrame, Ipv4Packet, TcpPacket};
//!
//! # fn five_tuple(frame: &[u8]) -> wire::Result<Option<(std::net::Ipv4Addr, u16)>> {
//! let eth = EthernetFrame::new_checked(frame)?;
//! if eth.ethertype() != ethertype::IPV4 {
//!     return Ok(None);
//! }
//! let ip = Ipv4Packet::new_checked(eth.into_payload())?;
//! if ip.protocol() != ip_protocol::TCP || ip.is_fragment() {
//!     return Ok(None);
//! }
//! let tcp = TcpPacket::new_checked(ip.into_payload())?;
//! Ok(Some((ip.dst_addr(), tcp.dst_port())))
//! # }
//! # let mut frame = [0u8; 54];
//! # frame[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
//! # frame[14] = 0x45; frame[17] = 40; frame[23] = ip_protocol::TCP; frame[30..34].copy_from_slice(&[10, 0, 0, 9]);
//! # frame[36..38].copy_from_slice(&443u16.to_be_bytes()); frame[46] = 0x50;
//! # assert_eq!(five_tuple(&frame).unwrap(), Some(([10, 0, 0, 9].into(), 443)));
//! # assert_eq!(five_tuple(&frame[..40]), Err(wire::Error::Truncated));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod arp;
pub mod checksum;
mod ethernet;
mod field;
pub mod fuzzing;
mod gue;
mod icmpv4;
mod icmpv6;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;
mod vlan;

pub use arp::{arp_operation, ArpPacket, ArpRepr};
pub use ethernet::{ethertype, EthernetAddress, EthernetFrame, EthernetRepr};
pub use gue::{gue_inner, GueHeader, GueInner, GueRepr};
pub use icmpv4::{icmpv4_code, icmpv4_type, Icmpv4Packet};
pub use icmpv6::{icmpv6_code, icmpv6_type, Icmpv6Packet};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{
    ipv6_upper_layer, Ipv6FragmentHeader, Ipv6FragmentInfo, Ipv6FragmentRepr, Ipv6Packet, Ipv6Repr,
    Ipv6UpperLayer, IPV6_MAX_EXTENSION_HEADERS,
};
pub use tcp::{TcpFlags, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{VlanHeader, VlanRepr};

/// Why a buffer could not be parsed as the requested packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before a header, or before the length a header field declares.
    #[error("packet truncated: the buffer is shorter than the header or its length field says; drop it or read a longer buffer")]
    Truncated,
    /// A header field has a value the protocol forbids (bad version, length or checksum).
    #[error("malformed packet: a header field has an invalid value (version, length, offset or checksum); drop it")]
    Malformed,
    /// The packet is well formed but uses a feature this crate does not handle.
    #[error("unsupported packet: well formed, but uses a protocol variant or option this parser does not handle; pass it on unparsed or drop it")]
    Unsupported,
}

/// Result of a parse.
pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`), from the IANA registry.
pub mod ip_protocol {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// IPv4 encapsulated in IP (IPIP).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulated in IP.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 destination options.
    pub const IPV6_OPTS: u8 = 60;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_say_what_and_what_to_do() {
        let text = Error::Truncated.to_string();
        assert!(text.contains("truncated") && text.contains("drop"));
        assert!(Error::Malformed.to_string().contains("malformed"));
        assert!(Error::Unsupported.to_string().contains("unsupported"));
    }
}
