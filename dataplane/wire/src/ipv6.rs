//! IPv6 (RFC 8200): the fixed header view and representation, the fragment header, and a
//! bounded walk over extension headers to the upper-layer protocol.
//!
//! `Ipv6Packet::new_checked` guarantees `40 + payload_len <= buffer.len()`; `payload()` stops
//! at `payload_len` so link-layer padding is excluded. [`ipv6_upper_layer`] walks at most
//! [`IPV6_MAX_EXTENSION_HEADERS`] extension headers and checks every length it reads, so a
//! crafted chain cannot make it loop or read out of bounds.

use std::net::Ipv6Addr;

use crate::field::{read_array, read_u16, read_u32, write_u16, write_u32};
use crate::ip_protocol;
use crate::{Error, Result};

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const PAYLOAD: usize = 40;
}

/// A zero-copy view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = field::PAYLOAD;
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if the header or `payload_len` do
    /// not fit the buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after checking version and lengths.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Wraps the leading part of a packet, as quoted inside an ICMPv6 error: like
    /// [`Self::new_checked`], but the buffer may end before `40 + payload_len`. `payload()`
    /// then returns only the bytes present. Every accessor stays panic-free.
    #[inline]
    pub fn new_checked_truncated(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        Ok(packet)
    }

    #[inline]
    fn check_header(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::PAYLOAD {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Checks `len >= 40`, version 6 and `40 + payload_len <= len`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        let len = self.buffer.as_ref().len();
        if field::PAYLOAD + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (`dscp << 2 | ecn`).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// Explicit congestion notification bits.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length in bytes (everything after the fixed header, extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// First next-header value (an extension header or the upper-layer protocol).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// Payload (extension headers included), stopping at `payload_len`, or at the end of the
    /// buffer for a view made by [`Self::new_checked_truncated`].
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        let end = field::PAYLOAD + usize::from(self.payload_len());
        field::PAYLOAD..end.min(self.buffer.as_ref().len())
    }

    /// Walks the extension headers of this packet; see [`ipv6_upper_layer`].
    #[inline]
    pub fn upper_layer(&self) -> Result<Ipv6UpperLayer> {
        ipv6_upper_layer(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[0] = (data[0] & 0x0f) | (value << 4);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[0] = (data[0] & 0xf0) | (value >> 4);
        data[1] = (data[1] & 0x0f) | (value << 4);
    }

    /// Sets the flow label (low 20 bits used).
    #[inline]
    pub fn set_flow_label(&mut self, value: u32) {
        let data = self.buffer.as_mut();
        let raw = (read_u32(data, 0) & 0xfff0_0000) | (value & 0x000f_ffff);
        write_u32(data, 0, raw);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the first next-header value.
    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = value;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::DST].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::PAYLOAD].copy_from_slice(&addr.octets());
    }

    /// Mutable payload, stopping at `payload_len`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = field::PAYLOAD + usize::from(self.payload_len());
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        &mut data[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The payload with the lifetime of the underlying buffer rather than of the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.payload_range();
        let data: &'a [u8] = self.buffer.as_ref();
        &data[range]
    }
}

/// A parsed fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// First next-header value.
    pub next_header: u8,
    /// Payload length in bytes (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses the fixed header.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Length of the emitted header (40).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the fixed header. `payload_len` saturates at 65535 (no jumbograms); the flow
    /// label is masked to 20 bits.
    ///
    /// # Panics
    /// If the buffer is shorter than 40 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        let data = packet.buffer.as_mut();
        write_u32(data, field::VER_TC_FLOW, first);
        write_u16(
            data,
            field::LENGTH,
            self.payload_len.min(usize::from(u16::MAX)) as u16,
        );
        data[field::NXT_HDR] = self.next_header;
        data[field::HOP_LIMIT] = self.hop_limit;
        data[field::SRC..field::DST].copy_from_slice(&self.src_addr.octets());
        data[field::DST..field::PAYLOAD].copy_from_slice(&self.dst_addr.octets());
    }
}

mod frag_field {
    pub const NXT_HDR: usize = 0;
    pub const RESERVED: usize = 1;
    pub const OFF_M: usize = 2;
    pub const IDENT: usize = 4;
    pub const END: usize = 8;
}

/// A zero-copy view of the 8-byte IPv6 fragment header (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<T> {
    buffer: T,
}

impl<T> Ipv6FragmentHeader<T> {
    /// Length of the fragment header.
    pub const HEADER_LEN: usize = frag_field::END;
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6FragmentHeader { buffer }
    }

    /// Wraps a buffer after checking it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < frag_field::END {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header of the fragmentable part.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[frag_field::NXT_HDR]
    }

    /// Fragment offset in **bytes** (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), frag_field::OFF_M) & 0xfff8
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), frag_field::OFF_M) & 0x0001 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        read_u32(self.buffer.as_ref(), frag_field::IDENT)
    }

    /// Bytes after the fragment header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[frag_field::END..]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6FragmentHeader<&'a T> {
    /// The bytes after the header with the lifetime of the underlying buffer.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        &data[frag_field::END..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[frag_field::NXT_HDR] = value;
    }

    /// Sets the fragment offset in **bytes** (rounded down to a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let data = self.buffer.as_mut();
        let raw = (read_u16(data, frag_field::OFF_M) & 0x0007) | (bytes & 0xfff8);
        write_u16(data, frag_field::OFF_M, raw);
    }

    /// Sets or clears more-fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let data = self.buffer.as_mut();
        let raw = (read_u16(data, frag_field::OFF_M) & !0x0001) | u16::from(value);
        write_u16(data, frag_field::OFF_M, raw);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), frag_field::IDENT, value);
    }

    /// Mutable bytes after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[frag_field::END..]
    }
}

/// A parsed IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6FragmentRepr {
    /// Next header of the fragmentable part.
    pub next_header: u8,
    /// Offset of this fragment in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

impl Ipv6FragmentRepr {
    /// Parses a fragment header.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(header: &Ipv6FragmentHeader<T>) -> Result<Self> {
        if header.buffer.as_ref().len() < frag_field::END {
            return Err(Error::Truncated);
        }
        Ok(Ipv6FragmentRepr {
            next_header: header.next_header(),
            frag_offset: header.frag_offset(),
            more_frags: header.more_frags(),
            ident: header.ident(),
        })
    }

    /// Length of the emitted header (8).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        frag_field::END
    }

    /// Writes the header; reserved fields are zeroed and `frag_offset` is rounded down to a
    /// multiple of 8.
    ///
    /// # Panics
    /// If the buffer is shorter than 8 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Ipv6FragmentHeader<T>) {
        let data = header.buffer.as_mut();
        data[frag_field::NXT_HDR] = self.next_header;
        data[frag_field::RESERVED] = 0;
        write_u16(
            data,
            frag_field::OFF_M,
            (self.frag_offset & 0xfff8) | u16::from(self.more_frags),
        );
        write_u32(data, frag_field::IDENT, self.ident);
    }
}

/// Most extension headers [`ipv6_upper_layer`] walks before giving up with
/// [`Error::Unsupported`].
pub const IPV6_MAX_EXTENSION_HEADERS: usize = 8;

/// Fragmentation details found while walking IPv6 extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6FragmentInfo {
    /// Offset of this fragment in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the upper-layer header starts in an IPv6 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6UpperLayer {
    /// Upper-layer protocol (e.g. TCP), or [`ip_protocol::IPV6_NONXT`] / [`ip_protocol::ESP`]
    /// where the walk must stop.
    pub protocol: u8,
    /// Offset of the upper-layer header into the IPv6 payload.
    pub offset: usize,
    /// Present when the packet carries a fragment header.
    pub fragment: Option<Ipv6FragmentInfo>,
}

/// Walks hop-by-hop, routing, destination-options, fragment and AH extension headers
/// starting at `first_next_header`, and returns where the upper layer begins.
///
/// For a non-first fragment (offset != 0) the walk stops right after the fragment header:
/// `protocol` is the fragment header's next header and `offset` points just after it, since
/// the upper-layer header is in the first fragment only.
///
/// Errors: a header running past the payload is [`Error::Truncated`]; hop-by-hop anywhere but
/// first, or two fragment headers, is [`Error::Malformed`]; more than
/// [`IPV6_MAX_EXTENSION_HEADERS`] headers is [`Error::Unsupported`].
pub fn ipv6_upper_layer(first_next_header: u8, ipv6_payload: &[u8]) -> Result<Ipv6UpperLayer> {
    let mut next_header = first_next_header;
    let mut offset = 0usize;
    let mut fragment = None;
    for index in 0..=IPV6_MAX_EXTENSION_HEADERS {
        let header_len = match next_header {
            ip_protocol::HOPOPT | ip_protocol::IPV6_ROUTE | ip_protocol::IPV6_OPTS => {
                if next_header == ip_protocol::HOPOPT && index != 0 {
                    return Err(Error::Malformed);
                }
                let rest = ipv6_payload.get(offset..).ok_or(Error::Truncated)?;
                let [nh, len, ..] = *rest else {
                    return Err(Error::Truncated);
                };
                (nh, (usize::from(len) + 1) * 8)
            }
            ip_protocol::AH => {
                let rest = ipv6_payload.get(offset..).ok_or(Error::Truncated)?;
                let [nh, len, ..] = *rest else {
                    return Err(Error::Truncated);
                };
                (nh, (usize::from(len) + 2) * 4)
            }
            ip_protocol::IPV6_FRAG => {
                if fragment.is_some() {
                    return Err(Error::Malformed);
                }
                let rest = ipv6_payload.get(offset..).ok_or(Error::Truncated)?;
                let header = Ipv6FragmentHeader::new_checked(rest)?;
                let info = Ipv6FragmentInfo {
                    offset: header.frag_offset(),
                    more_frags: header.more_frags(),
                    ident: header.ident(),
                };
                fragment = Some(info);
                if info.offset != 0 {
                    return Ok(Ipv6UpperLayer {
                        protocol: header.next_header(),
                        offset: offset + frag_field::END,
                        fragment,
                    });
                }
                (header.next_header(), frag_field::END)
            }
            protocol => {
                return Ok(Ipv6UpperLayer {
                    protocol,
                    offset,
                    fragment,
                })
            }
        };
        if index == IPV6_MAX_EXTENSION_HEADERS {
            break;
        }
        let (nh, len) = header_len;
        let end = offset + len;
        if end > ipv6_payload.len() {
            return Err(Error::Truncated);
        }
        next_header = nh;
        offset = end;
    }
    Err(Error::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn header(payload_len: u16, next_header: u8) -> Vec<u8> {
        // version 6, traffic class 0xb9, flow label 0x12345
        let mut v = vec![0x6b, 0x91, 0x23, 0x45];
        v.extend_from_slice(&payload_len.to_be_bytes());
        v.push(next_header);
        v.push(64);
        v.extend_from_slice(&SRC);
        v.extend_from_slice(&DST);
        v
    }

    #[test]
    fn parse_known_packet() {
        let mut bytes = header(4, ip_protocol::UDP);
        bytes.extend_from_slice(&[1, 2, 3, 4, 0xee, 0xee]); // two bytes of padding
        let p = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb9);
        assert_eq!((p.dscp(), p.ecn()), (0xb9 >> 2, 1));
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), ip_protocol::UDP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        let repr = Ipv6Repr::parse(&p).unwrap();
        let mut out = [0u8; 44];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
        assert_eq!(&out[..40], &bytes[..40]);
    }

    #[test]
    fn malformed_and_truncated() {
        let mut bytes = header(8, ip_protocol::TCP);
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
        bytes.extend_from_slice(&[0; 8]);
        assert!(Ipv6Packet::new_checked(&bytes[..]).is_ok());
        let quoted = Ipv6Packet::new_checked_truncated(&bytes[..44]).unwrap();
        assert_eq!(quoted.payload(), &[0; 4]);
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..44]).unwrap_err(),
            Error::Truncated
        );
        bytes[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            Ipv6Packet::new_checked_truncated(&bytes[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn setters() {
        let mut bytes = [0u8; 48];
        let mut p = Ipv6Packet::new_unchecked(&mut bytes[..]);
        p.set_version(6);
        p.set_flow_label(0xfffff);
        p.set_traffic_class(0xa5);
        assert_eq!(p.flow_label(), 0xfffff);
        p.set_flow_label(0x1_00001);
        assert_eq!(
            (p.traffic_class(), p.flow_label(), p.version()),
            (0xa5, 1, 6)
        );
        p.set_payload_len(8);
        p.set_next_header(ip_protocol::ICMPV6);
        p.set_hop_limit(255);
        p.set_src_addr(Ipv6Addr::LOCALHOST);
        p.set_dst_addr(Ipv6Addr::UNSPECIFIED);
        p.payload_mut().copy_from_slice(&[9; 8]);
        let p = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.next_header(), ip_protocol::ICMPV6);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(p.payload(), &[9; 8]);
    }

    #[test]
    fn walk_extension_chain() {
        // hop-by-hop (8 bytes) -> routing (16 bytes) -> dest opts (8) -> AH (12) -> TCP
        let mut payload = vec![ip_protocol::IPV6_ROUTE, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[ip_protocol::IPV6_OPTS, 1, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[0; 8]);
        payload.extend_from_slice(&[ip_protocol::AH, 0, 1, 4, 0, 0, 0, 0]);
        payload.extend_from_slice(&[ip_protocol::TCP, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        payload.extend_from_slice(&[0xaa; 20]);
        let ul = ipv6_upper_layer(ip_protocol::HOPOPT, &payload).unwrap();
        assert_eq!(ul.protocol, ip_protocol::TCP);
        assert_eq!(ul.offset, 8 + 16 + 8 + 12);
        assert_eq!(ul.fragment, None);

        // No extension header: offset 0.
        let ul = ipv6_upper_layer(ip_protocol::UDP, &[0; 8]).unwrap();
        assert_eq!((ul.protocol, ul.offset), (ip_protocol::UDP, 0));
        // ESP and no-next-header stop the walk.
        assert_eq!(
            ipv6_upper_layer(ip_protocol::ESP, &[]).unwrap().protocol,
            ip_protocol::ESP
        );
        assert_eq!(
            ipv6_upper_layer(ip_protocol::IPV6_NONXT, &[])
                .unwrap()
                .protocol,
            ip_protocol::IPV6_NONXT
        );
    }

    #[test]
    fn walk_fragments() {
        // First fragment: continue to the upper layer.
        let first = [
            ip_protocol::UDP,
            0,
            0x00,
            0x01,
            0xde,
            0xad,
            0xbe,
            0xef,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let ul = ipv6_upper_layer(ip_protocol::IPV6_FRAG, &first).unwrap();
        assert_eq!((ul.protocol, ul.offset), (ip_protocol::UDP, 8));
        assert_eq!(
            ul.fragment,
            Some(Ipv6FragmentInfo {
                offset: 0,
                more_frags: true,
                ident: 0xdeadbeef
            })
        );
        // Non-first fragment (offset 1232 bytes = 154 units): stop after the header.
        let off = (154u16 << 3).to_be_bytes();
        let later = [ip_protocol::UDP, 0, off[0], off[1], 0, 0, 0, 7, 0xff];
        let ul = ipv6_upper_layer(ip_protocol::IPV6_FRAG, &later).unwrap();
        assert_eq!((ul.protocol, ul.offset), (ip_protocol::UDP, 8));
        assert_eq!(
            ul.fragment,
            Some(Ipv6FragmentInfo {
                offset: 1232,
                more_frags: false,
                ident: 7
            })
        );
    }

    #[test]
    fn walk_errors() {
        assert_eq!(
            ipv6_upper_layer(ip_protocol::HOPOPT, &[6]),
            Err(Error::Truncated)
        );
        // Declared 16 bytes, only 8 present.
        assert_eq!(
            ipv6_upper_layer(ip_protocol::IPV6_OPTS, &[6, 1, 0, 0, 0, 0, 0, 0]),
            Err(Error::Truncated)
        );
        assert_eq!(
            ipv6_upper_layer(ip_protocol::IPV6_FRAG, &[6, 0, 0, 0]),
            Err(Error::Truncated)
        );
        assert_eq!(
            ipv6_upper_layer(ip_protocol::AH, &[6, 1, 0, 0, 0, 0, 0, 0]),
            Err(Error::Truncated)
        );
        // Hop-by-hop after another header.
        assert_eq!(
            ipv6_upper_layer(
                ip_protocol::IPV6_OPTS,
                &[0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]
            ),
            Err(Error::Malformed)
        );
        // Two fragment headers.
        let two = [
            ip_protocol::IPV6_FRAG,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            6,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ];
        assert_eq!(
            ipv6_upper_layer(ip_protocol::IPV6_FRAG, &two),
            Err(Error::Malformed)
        );
        // Eight destination-option headers followed by TCP is fine; nine is too many.
        let mut chain = Vec::new();
        for _ in 0..7 {
            chain.extend_from_slice(&[ip_protocol::IPV6_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        chain.extend_from_slice(&[ip_protocol::TCP, 0, 0, 0, 0, 0, 0, 0]);
        let ul = ipv6_upper_layer(ip_protocol::IPV6_OPTS, &chain).unwrap();
        assert_eq!((ul.protocol, ul.offset), (ip_protocol::TCP, 64));
        let last = chain.len() - 8;
        chain[last] = ip_protocol::IPV6_OPTS;
        chain.extend_from_slice(&[ip_protocol::TCP, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            ipv6_upper_layer(ip_protocol::IPV6_OPTS, &chain),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn fragment_header_view_and_repr() {
        let repr = Ipv6FragmentRepr {
            next_header: ip_protocol::TCP,
            frag_offset: 2960,
            more_frags: true,
            ident: 0x01020304,
        };
        let mut buf = [0xffu8; 10];
        repr.emit(&mut Ipv6FragmentHeader::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..8], &[6, 0, 0x0b, 0x91, 1, 2, 3, 4]);
        let header = Ipv6FragmentHeader::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv6FragmentRepr::parse(&header).unwrap(), repr);
        assert_eq!(header.payload(), &[0xff, 0xff]);
        assert_eq!(
            Ipv6FragmentHeader::new_checked(&buf[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut header = Ipv6FragmentHeader::new_unchecked(&mut buf[..]);
        header.set_more_frags(false);
        header.set_frag_offset(8);
        header.set_ident(9);
        header.set_next_header(ip_protocol::UDP);
        assert_eq!(
            (
                header.frag_offset(),
                header.more_frags(),
                header.ident(),
                header.next_header()
            ),
            (8, false, 9, 17)
        );
    }

    fn arb_repr() -> impl Strategy<Value = Ipv6Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0usize..200,
            any::<u8>(),
            any::<u8>(),
            0u32..0x10_0000,
        )
            .prop_map(
                |(s, d, next_header, payload_len, hop_limit, traffic_class, flow_label)| Ipv6Repr {
                    src_addr: s.into(),
                    dst_addr: d.into(),
                    next_header,
                    payload_len,
                    hop_limit,
                    traffic_class,
                    flow_label,
                },
            )
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..120), force in any::<bool>()) {
            if force && data.len() >= 40 {
                data[0] = 0x60 | (data[0] & 0x0f);
                let len = (data.len() - 40) as u16;
                data[4..6].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.hop_limit(), p.src_addr(), p.dst_addr());
                prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
                prop_assert!(Ipv6Repr::parse(&p).is_ok());
                if let Ok(ul) = p.upper_layer() {
                    prop_assert!(ul.offset <= p.payload().len());
                }
            }
        }

        #[test]
        fn ext_walk_never_panics(nh in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ul) = ipv6_upper_layer(nh, &data) {
                prop_assert!(ul.offset <= data.len());
            }
        }

        #[test]
        fn repr_roundtrip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()).unwrap(), repr);
        }

        #[test]
        fn fragment_header_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            match Ipv6FragmentHeader::new_checked(&data[..]) {
                Ok(h) => {
                    let _ = (h.next_header(), h.more_frags(), h.ident());
                    prop_assert_eq!(h.frag_offset() % 8, 0);
                    prop_assert_eq!(h.payload().len() + 8, data.len());
                    prop_assert!(Ipv6FragmentRepr::parse(&h).is_ok());
                }
                Err(e) => prop_assert_eq!(e, Error::Truncated),
            }
        }

        #[test]
        fn fragment_repr_roundtrip(nh in any::<u8>(), units in 0u16..8192, more in any::<bool>(), ident in any::<u32>()) {
            let repr = Ipv6FragmentRepr { next_header: nh, frag_offset: units * 8, more_frags: more, ident };
            let mut buf = [0u8; 8];
            repr.emit(&mut Ipv6FragmentHeader::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Ipv6FragmentRepr::parse(&Ipv6FragmentHeader::new_checked(&buf[..]).unwrap()).unwrap(), repr);
        }
    }
}
