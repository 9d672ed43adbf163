//! ICMP for IPv4 (RFC 792, RFC 1191): a view over the 8-byte header and what follows.
//!
//! The view does not interpret the message body: for error messages (destination unreachable,
//! time exceeded, parameter problem, redirect) `payload()` is the embedded IP header plus the
//! first bytes of the offending datagram, which the dataplane parses again with
//! [`crate::Ipv4Packet`] to steer the error to the right backend.

use crate::checksum;
use crate::field::{read_u16, read_u32, write_u16, write_u32};
use crate::{Error, Result};

/// ICMPv4 message types.
pub mod icmpv4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (see [`super::icmpv4_code`]).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
    /// Code of [`DEST_UNREACHABLE`]: fragmentation needed and DF set (re-exported from
    /// [`super::icmpv4_code`]).
    pub use super::icmpv4_code::FRAG_NEEDED;

    /// True for the error messages that embed the offending datagram.
    #[inline]
    pub const fn is_error(msg_type: u8) -> bool {
        matches!(
            msg_type,
            DEST_UNREACHABLE | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }
}

/// ICMPv4 codes of destination-unreachable messages.
pub mod icmpv4_code {
    /// Network unreachable.
    pub const NET_UNREACHABLE: u8 = 0;
    /// Host unreachable.
    pub const HOST_UNREACHABLE: u8 = 1;
    /// Protocol unreachable.
    pub const PROTO_UNREACHABLE: u8 = 2;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Fragmentation needed and DF set; `next_hop_mtu` carries the MTU (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
    /// Time exceeded: TTL reached zero in transit.
    pub const TTL_EXCEEDED: u8 = 0;
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const MTU: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// A zero-copy view of an ICMPv4 message (the buffer is the whole IPv4 payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

impl<T> Icmpv4Packet<T> {
    /// Length of the ICMP header (type, code, checksum, rest of header).
    pub const HEADER_LEN: usize = field::PAYLOAD;
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
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

    /// Message type (see [`icmpv4_type`]).
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

    /// The four type-specific bytes after the checksum.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
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

    /// Next-hop MTU of a destination-unreachable / fragmentation-needed message (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::MTU)
    }

    /// Bytes after the 8-byte header; for error messages, the embedded IP packet.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        field::PAYLOAD..self.buffer.as_ref().len()
    }

    /// True when the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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

    /// Sets the four type-specific bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
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

    /// Sets the next-hop MTU (bytes 6..8; bytes 4..6 are left as they are, normally zero).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::MTU, value);
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(value);
    }

    /// Mutable bytes after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
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
    use crate::{ip_protocol, Ipv4Packet};
    use proptest::prelude::*;

    #[test]
    fn echo_request_known_bytes() {
        // Echo request id 0x1234 seq 1, payload "abcd"; checksum summed by hand.
        let mut bytes = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];
        let mut s: u32 = 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        bytes[2..4].copy_from_slice(&c.to_be_bytes());
        let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.msg_type(), icmpv4_type::ECHO_REQUEST);
        assert_eq!((p.code(), p.checksum()), (0, c));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1234, 1));
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum());
        assert!(!icmpv4_type::is_error(p.msg_type()));
    }

    #[test]
    fn frag_needed_builds_and_embeds_ip() {
        let mut inner = [0u8; 28];
        inner[0] = 0x45;
        inner[3] = 28;
        inner[9] = ip_protocol::TCP;
        let mut bytes = vec![0u8; 8 + inner.len()];
        let mut p = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(icmpv4_type::DEST_UNREACHABLE);
        p.set_code(icmpv4_code::FRAG_NEEDED);
        p.set_rest_of_header(0);
        p.set_next_hop_mtu(1400);
        p.payload_mut().copy_from_slice(&inner);
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.code(), icmpv4_type::FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(&bytes[4..8], &[0, 0, 0x05, 0x78]);
        assert!(icmpv4_type::is_error(icmpv4_type::DEST_UNREACHABLE));
        let embedded = Ipv4Packet::new_checked(p.payload()).unwrap();
        assert_eq!(embedded.protocol(), ip_protocol::TCP);
    }

    #[test]
    fn truncated_and_bad_checksum() {
        assert_eq!(
            Icmpv4Packet::new_checked(&[0u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
        let mut bytes = [0u8, 0, 0, 0, 0, 0, 0, 1];
        let mut p = Icmpv4Packet::new_checked(&mut bytes[..]).unwrap();
        p.fill_checksum();
        p.set_echo_ident(5);
        assert!(!p.verify_checksum());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            match Icmpv4Packet::new_checked(&data[..]) {
                Ok(p) => {
                    let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.echo_ident());
                    let _ = (p.echo_seq_no(), p.next_hop_mtu(), p.verify_checksum());
                    prop_assert_eq!(p.payload().len() + 8, data.len());
                }
                Err(e) => prop_assert_eq!(e, Error::Truncated),
            }
        }

        #[test]
        fn fill_then_verify(data in proptest::collection::vec(any::<u8>(), 8..64)) {
            let mut data = data;
            let mut p = Icmpv4Packet::new_checked(&mut data[..]).unwrap();
            p.fill_checksum();
            prop_assert!(p.verify_checksum());
        }
    }
}
