//! UDP (RFC 768) datagram view and representation.
//!
//! `UdpPacket::new_checked` guarantees `8 <= length <= buffer.len()`; `payload()` stops at the
//! length field. Checksum zero means "no checksum" over IPv4 and is invalid over IPv6
//! (RFC 8200 section 8.1); a computed zero is sent as `0xFFFF`.

use std::net::IpAddr;

use crate::checksum;
use crate::field::{read_u16, write_u16};
use crate::ip_protocol;
use crate::{Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T> UdpPacket<T> {
    /// Length of the UDP header.
    pub const HEADER_LEN: usize = field::PAYLOAD;
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; accessors panic if the header or the length field
    /// do not fit.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after checking the header and the length field.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `len >= 8` and `8 <= length field <= len`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::PAYLOAD {
            return Err(Error::Truncated);
        }
        let declared = usize::from(self.len());
        if declared < field::PAYLOAD {
            return Err(Error::Malformed);
        }
        if declared > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header plus payload, in bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a datagram is never shorter than its header
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Payload, stopping at the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        field::PAYLOAD..usize::from(self.len())
    }

    /// True when the checksum is correct. Over IPv4 a zero checksum ("none") is accepted; over
    /// IPv6 it is rejected.
    #[inline]
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4() && dst.is_ipv4();
        }
        let length = self.len();
        let data = &self.buffer.as_ref()[..usize::from(length)];
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::UDP, u32::from(length));
        checksum::combine(&[pseudo, checksum::sum(data)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Stores a checksum value as is.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the pseudo header and `len()` bytes; a computed
    /// zero is stored as `0xFFFF`.
    #[inline]
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let length = self.len();
        let data = &self.buffer.as_ref()[..usize::from(length)];
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::UDP, u32::from(length));
        let value = !checksum::combine(&[pseudo, checksum::sum(data)]);
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    /// Mutable payload, stopping at the length field.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Parses a datagram and verifies its checksum (bad checksum is [`Error::Malformed`]).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src: &IpAddr,
        dst: &IpAddr,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - field::PAYLOAD,
        })
    }

    /// Header length (8).
    #[inline]
    pub const fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Header plus payload length.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD + self.payload_len
    }

    /// Writes the header with length `8 + payload_len` (saturating at 65535) and checksum 0.
    /// Write the payload, then call [`UdpPacket::fill_checksum`] (or leave 0 over IPv4).
    ///
    /// # Panics
    /// If the buffer is shorter than 8 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(self.buffer_len().min(usize::from(u16::MAX)) as u16);
        packet.set_checksum(0);
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 2, 2, 2));

    #[test]
    fn parse_known_datagram() {
        // 53 -> 5353, length 12, 4 payload bytes, 2 bytes trailing padding.
        let mut bytes = [
            0x00, 0x35, 0x14, 0xe9, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4, 0, 0,
        ];
        // Pseudo header + datagram summed by hand.
        let mut s: u32 = 0x0a01 + 0x0101 + 0x0a02 + 0x0202 + 17 + 12;
        s += 0x0035 + 0x14e9 + 0x000c + 0x0102 + 0x0304;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        bytes[6..8].copy_from_slice(&c.to_be_bytes());
        let p = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (53, 5353, 12, c)
        );
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(p.verify_checksum(&SRC, &DST));
        assert_eq!(
            UdpRepr::parse(&p, &SRC, &DST).unwrap(),
            UdpRepr {
                src_port: 53,
                dst_port: 5353,
                payload_len: 4
            }
        );
    }

    #[test]
    fn zero_checksum_rules() {
        let bytes = [0, 1, 0, 2, 0, 8, 0, 0];
        let p = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!p.verify_checksum(&v6, &v6));
        assert_eq!(UdpRepr::parse(&p, &v6, &v6), Err(Error::Malformed));
    }

    #[test]
    fn computed_zero_becomes_ffff() {
        // Choose the payload so the one's-complement sum is 0xFFFF (checksum would be 0).
        let mut bytes = [0u8; 10];
        let mut p = UdpPacket::new_unchecked(&mut bytes[..]);
        p.set_len(10);
        let pseudo = checksum::pseudo_header(&SRC, &DST, ip_protocol::UDP, 10);
        let partial = checksum::combine(&[pseudo, 10]);
        p.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        p.fill_checksum(&SRC, &DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(&SRC, &DST));
    }

    #[test]
    fn malformed_and_truncated() {
        assert_eq!(
            UdpPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&[0, 0, 0, 0, 0, 7, 0, 0][..]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            UdpPacket::new_checked(&[0, 0, 0, 0, 0, 9, 0, 0][..]).unwrap_err(),
            Error::Truncated
        );
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.checksum(), p.verify_checksum(&SRC, &DST));
                prop_assert_eq!(p.payload().len() + 8, usize::from(p.len()));
            }
        }

        #[test]
        fn repr_roundtrip(sp in any::<u16>(), dp in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..40), v6 in any::<bool>()) {
            let (s, d) = if v6 { (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::UNSPECIFIED)) } else { (SRC, DST) };
            let repr = UdpRepr { src_port: sp, dst_port: dp, payload_len: payload.len() };
            let mut buf = vec![0u8; repr.buffer_len()];
            let mut p = UdpPacket::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            p.payload_mut().copy_from_slice(&payload);
            p.fill_checksum(&s, &d);
            prop_assert_ne!(p.checksum(), 0);
            prop_assert_eq!(UdpRepr::parse(&UdpPacket::new_checked(&buf[..]).unwrap(), &s, &d).unwrap(), repr);
        }
    }
}
