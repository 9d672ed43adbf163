//! ICMP for IPv6 (RFC 4443): a view over the 8-byte header and what follows.
//!
//! The checksum covers the IPv6 pseudo header, so `fill_checksum` and `verify_checksum` take
//! the addresses of the enclosing packet. For error messages `payload()` is the embedded IPv6
//! packet (as much as fits in the minimum MTU).

use std::net::{IpAddr, Ipv6Addr};

use crate::checksum;
use crate::field::{read_u16, read_u32, write_u16, write_u32};
use crate::ip_protocol;
use crate::{Error, Result};

/// ICMPv6 message types.
pub mod icmpv6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big; `mtu()` carries the MTU.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation (NDP).
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement (NDP).
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor solicitation (NDP).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement (NDP).
    pub const NEIGHBOR_ADVERT: u8 = 136;

    /// True for the error messages (types below 128) that embed the offending packet.
    #[inline]
    pub const fn is_error(msg_type: u8) -> bool {
        msg_type < 128
    }
}

/// ICMPv6 codes.
pub mod icmpv6_code {
    /// Destination unreachable: no route.
    pub const NO_ROUTE: u8 = 0;
    /// Destination unreachable: address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Destination unreachable: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Time exceeded: hop limit reached zero in transit.
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// A zero-copy view of an ICMPv6 message (the buffer is the whole upper-layer payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T> Icmpv6Packet<T> {
    /// Length of the ICMPv6 header (type, code, checksum, four message-specific bytes).
    pub const HEADER_LEN: usize = field::PAYLOAD;
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < field::PAYLOAD {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type (see [`icmpv6_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The four message-specific bytes after the checksum.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }

    /// MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// Echo identifier (echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Bytes after the 8-byte header; for error messages, the embedded IPv6 packet.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        field::PAYLOAD..self.buffer.as_ref().len()
    }

    #[inline]
    fn compute_sum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_protocol::ICMPV6, data.len() as u32);
        checksum::combine(&[pseudo, checksum::sum(data)])
    }

    /// True when the checksum over the pseudo header and the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.compute_sum(src, dst) == 0xffff
    }

    /// [`Self::verify_checksum`] for callers holding `IpAddr`s; false unless both are IPv6.
    #[inline]
    pub fn verify_checksum_ip(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        match (src, dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => self.verify_checksum(s, d),
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Stores a checksum value as is.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the four message-specific bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
    }

    /// Sets the MTU of a packet-too-big message.
    #[inline]
    pub fn set_mtu(&mut self, value: u32) {
        self.set_rest_of_header(value);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Computes and stores the checksum over the pseudo header and the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let value = !self.compute_sum(src, dst);
        self.set_checksum(value);
    }

    /// Mutable bytes after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv6Packet<&'a T> {
    /// The payload with the lifetime of the underlying buffer rather than of the view, so
    /// the view can go out of scope (e.g. when walking nested headers in a loop).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.payload_range();
        let data: &'a [u8] = self.buffer.as_ref();
        &data[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap())
    }

    #[test]
    fn echo_request_known_bytes() {
        let (src, dst) = addrs();
        let mut bytes = [128, 0, 0, 0, 0x00, 0x07, 0x00, 0x02, 0xab, 0xcd];
        // Pseudo header (fe80::1, ff02::1, length 10, next header 58) + message, by hand.
        let mut s: u32 = 0xfe80 + 1 + 0xff02 + 1 + 10 + 58;
        s += 0x8000 + 0x0007 + 0x0002 + 0xabcd;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        bytes[2..4].copy_from_slice(&c.to_be_bytes());
        let p = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.checksum()),
            (icmpv6_type::ECHO_REQUEST, 0, c)
        );
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (7, 2));
        assert_eq!(p.payload(), &[0xab, 0xcd]);
        assert!(p.verify_checksum(&src, &dst));
        assert!(p.verify_checksum_ip(&IpAddr::V6(src), &IpAddr::V6(dst)));
        assert!(!p.verify_checksum(&dst, &dst));
        assert!(!icmpv6_type::is_error(p.msg_type()));
    }

    #[test]
    fn packet_too_big() {
        let (src, dst) = addrs();
        let mut bytes = [0u8; 48];
        let mut p = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(icmpv6_type::PACKET_TOO_BIG);
        p.set_code(0);
        p.set_mtu(1280);
        p.payload_mut()[0] = 0x60;
        p.fill_checksum(&src, &dst);
        assert!(p.verify_checksum(&src, &dst));
        assert_eq!(p.mtu(), 1280);
        assert_eq!(&bytes[4..8], &[0, 0, 5, 0]);
        assert!(icmpv6_type::is_error(icmpv6_type::PACKET_TOO_BIG));
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Icmpv6Packet::new_checked(&[0u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (src, dst) = addrs();
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.mtu(), p.echo_ident(), p.echo_seq_no());
                let _ = p.verify_checksum(&src, &dst);
                prop_assert_eq!(p.payload().len() + 8, data.len());
            }
        }

        #[test]
        fn fill_then_verify(mut data in proptest::collection::vec(any::<u8>(), 8..64), s in any::<[u8; 16]>(), d in any::<[u8; 16]>()) {
            let (src, dst) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            let mut p = Icmpv6Packet::new_checked(&mut data[..]).unwrap();
            p.fill_checksum(&src, &dst);
            prop_assert!(p.verify_checksum(&src, &dst));
        }
    }
}
