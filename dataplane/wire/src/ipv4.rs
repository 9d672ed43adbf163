//! IPv4 (RFC 791): the header view (options, fragments, ECN/DSCP) and a 20-byte representation.
//!
//! `Ipv4Packet::new_checked` guarantees `20 <= header_len <= total_len <= buffer.len()`, so
//! `options()` and `payload()` are always in bounds. The buffer may be longer than `total_len`
//! (Ethernet pads short frames to 60 bytes); `payload()` stops at `total_len`.

use std::net::Ipv4Addr;

use crate::checksum;
use crate::field::{read_array, read_u16, write_u16};
use crate::{Error, Result};

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const OPTIONS: usize = 20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if the header or the lengths it
    /// declares do not fit the buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after checking version, header length and total length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Wraps the leading part of a packet, as quoted inside an ICMP error: like
    /// [`Self::new_checked`], but the buffer may end before `total_len`. `payload()` then
    /// returns only the bytes present. Every accessor stays panic-free.
    #[inline]
    pub fn new_checked_truncated(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        Ok(packet)
    }

    /// Checks `len >= 20`, version 4, IHL >= 5 and `header_len <= total_len <= len`.
    ///
    /// Short buffers are [`Error::Truncated`]; impossible field values are [`Error::Malformed`].
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        if usize::from(self.total_len()) > self.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// [`Self::check_len`] without the `total_len <= len` part.
    #[inline]
    fn check_header(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < field::OPTIONS {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < field::OPTIONS {
            return Err(Error::Malformed);
        }
        if header_len > data.len() {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The whole type-of-service byte: `dscp << 2 | ecn`.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Differentiated services code point (upper 6 bits of the TOS byte).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// Explicit congestion notification (lower 2 bits of the TOS byte).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// Total length of the packet in bytes, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    fn flags_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in **bytes** (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// True for any fragment: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`crate::ip_protocol`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::DST))
    }

    /// Header options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Payload: from the end of the header to `total_len` (padding after it is excluded), or
    /// to the end of the buffer for a view made by [`Self::new_checked_truncated`].
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        self.header_len()..end
    }

    /// True when the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble (keeps IHL).
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::VER_IHL] = (data[field::VER_IHL] & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes (stored as `bytes / 4`; keeps the version).
    #[inline]
    pub fn set_header_len(&mut self, bytes: usize) {
        let data = self.buffer.as_mut();
        data[field::VER_IHL] = (data[field::VER_IHL] & 0xf0) | (((bytes / 4) as u8) & 0x0f);
    }

    /// Sets the whole TOS byte.
    #[inline]
    pub fn set_tos(&mut self, value: u8) {
        self.buffer.as_mut()[field::TOS] = value;
    }

    /// Sets the DSCP (keeps ECN).
    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let tos = (self.tos() & 0x03) | (value << 2);
        self.set_tos(tos);
    }

    /// Sets the ECN bits (keeps DSCP).
    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let tos = (self.tos() & 0xfc) | (value & 0x03);
        self.set_tos(tos);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    #[inline]
    fn set_flags_offset(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF, value);
    }

    /// Clears all three flag bits (reserved, DF, MF); keeps the fragment offset.
    #[inline]
    pub fn clear_flags(&mut self) {
        let value = self.flags_offset() & OFFSET_MASK;
        self.set_flags_offset(value);
    }

    /// Sets or clears don't-fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let raw = self.flags_offset();
        self.set_flags_offset(if value { raw | FLAG_DF } else { raw & !FLAG_DF });
    }

    /// Sets or clears more-fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let raw = self.flags_offset();
        self.set_flags_offset(if value { raw | FLAG_MF } else { raw & !FLAG_MF });
    }

    /// Sets the fragment offset in **bytes** (rounded down to a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let raw = (self.flags_offset() & !OFFSET_MASK) | (bytes >> 3);
        self.set_flags_offset(raw);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Stores a checksum value as is.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::DST].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::OPTIONS].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the header checksum over `header_len()` bytes.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(value);
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable payload: from the end of the header to `total_len`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        &mut data[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload with the lifetime of the underlying buffer rather than of the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.payload_range();
        let data: &'a [u8] = self.buffer.as_ref();
        &data[range]
    }
}

/// A parsed IPv4 header without options.
///
/// `parse` accepts headers with options and fragments but keeps neither (read them from the
/// view); `emit` always writes a 20-byte header, MF clear and fragment offset zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Whole TOS byte (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parses a header, verifying lengths and the header checksum (bad checksum is
    /// [`Error::Malformed`]).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Length of the emitted header (20).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        field::OPTIONS
    }

    /// Writes a 20-byte header with total length `20 + payload_len` (saturating at 65535) and
    /// a correct checksum.
    ///
    /// # Panics
    /// If the buffer is shorter than 20 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        let total_len = (field::OPTIONS + self.payload_len).min(usize::from(u16::MAX)) as u16;
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        let src = self.src_addr.octets();
        let dst = self.dst_addr.octets();
        // The header is assembled in a local array and its checksum summed from the field
        // values: reading back a header just written with mixed-size stores stalls on
        // store-to-load forwarding, and this runs once per encapsulated packet.
        let words = [
            0x4500 | u16::from(self.tos),
            total_len,
            self.ident,
            flags,
            u16::from(self.ttl) << 8 | u16::from(self.protocol),
            u16::from_be_bytes([src[0], src[1]]),
            u16::from_be_bytes([src[2], src[3]]),
            u16::from_be_bytes([dst[0], dst[1]]),
            u16::from_be_bytes([dst[2], dst[3]]),
        ];
        let sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
        let value = !checksum::fold(u64::from(sum));
        let mut header = [0u8; field::OPTIONS];
        header[field::VER_IHL] = 0x45;
        header[field::TOS] = self.tos;
        header[field::LENGTH..field::LENGTH + 2].copy_from_slice(&total_len.to_be_bytes());
        header[field::IDENT..field::IDENT + 2].copy_from_slice(&self.ident.to_be_bytes());
        header[field::FLG_OFF..field::FLG_OFF + 2].copy_from_slice(&flags.to_be_bytes());
        header[field::TTL] = self.ttl;
        header[field::PROTOCOL] = self.protocol;
        header[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&value.to_be_bytes());
        header[field::SRC..field::DST].copy_from_slice(&src);
        header[field::DST..field::OPTIONS].copy_from_slice(&dst);
        packet.buffer.as_mut()[..field::OPTIONS].copy_from_slice(&header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip_protocol;
    use proptest::prelude::*;

    /// 20-byte header + 4 bytes payload + 2 bytes Ethernet padding, hand-built from RFC 791:
    /// IHL 5, TOS 0xb8 (EF, not-ECT), total 24, ident 0x1234, DF, TTL 64, UDP,
    /// 10.0.0.1 -> 192.168.1.2; the checksum is summed by hand below, independently of `checksum`.
    fn sample() -> [u8; 26] {
        let mut p = [
            0x45, 0xb8, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            192, 168, 1, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x00,
        ];
        // Checksum by hand (RFC 1071): sum of the ten header words.
        let words: [u32; 10] = [
            0x45b8, 0x0018, 0x1234, 0x4000, 0x4011, 0x0000, 0x0a00, 0x0001, 0xc0a8, 0x0102,
        ];
        let mut s: u32 = words.iter().sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn parse_known_packet() {
        let bytes = sample();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0xb8);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), ip_protocol::UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(p.options(), &[] as &[u8]);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]); // padding excluded
        assert!(p.verify_checksum());
        let repr = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(repr.payload_len, 4);
        assert!(repr.dont_frag);
    }

    #[test]
    fn bad_checksum_is_malformed() {
        let mut bytes = sample();
        bytes[8] = 63;
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), Err(Error::Malformed));
    }

    #[test]
    fn malformed_and_truncated() {
        let good = sample();
        assert_eq!(
            Ipv4Packet::new_checked(&good[..19]).unwrap_err(),
            Error::Truncated
        );
        // total_len 24 > buffer 22
        assert_eq!(
            Ipv4Packet::new_checked(&good[..22]).unwrap_err(),
            Error::Truncated
        );
        let mut v6 = good;
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            Error::Malformed
        );
        let mut ihl4 = good;
        ihl4[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&ihl4[..]).unwrap_err(),
            Error::Malformed
        );
        let mut long_ihl = good;
        long_ihl[0] = 0x4f; // 60-byte header, 26-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&long_ihl[..]).unwrap_err(),
            Error::Truncated
        );
        let mut short_total = good;
        short_total[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked(&short_total[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn truncated_view_for_icmp_quotes() {
        let good = sample();
        // Header plus 2 of 4 payload bytes, as an ICMP error might quote it.
        let quoted = &good[..22];
        assert_eq!(
            Ipv4Packet::new_checked(quoted).unwrap_err(),
            Error::Truncated
        );
        let p = Ipv4Packet::new_checked_truncated(quoted).unwrap();
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert!(p.verify_checksum());
        assert_eq!(
            Ipv4Packet::new_checked_truncated(&good[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut short_total = good;
        short_total[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked_truncated(&short_total[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn options_and_fragments() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0x46; // IHL 6: 4 bytes of options
        bytes[3] = 28;
        bytes[6] = 0x20; // MF, offset high bits 0
        bytes[7] = 0xb9; // offset 185 units = 1480 bytes
        bytes[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]); // router alert
        let mut p = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload().len(), 4);
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.set_more_frags(false);
        assert!(p.is_fragment(), "offset alone makes a fragment");
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
        p.set_dont_frag(true);
        p.set_more_frags(true);
        p.clear_flags();
        assert!(!p.dont_frag() && !p.more_frags());
    }

    #[test]
    fn setters_roundtrip() {
        let mut bytes = [0u8; 40];
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_tos(0x03);
        p.set_dscp(10);
        assert_eq!((p.dscp(), p.ecn()), (10, 3));
        p.set_ecn(1);
        assert_eq!(p.tos(), (10 << 2) | 1);
        p.set_total_len(40);
        p.set_ident(7);
        p.set_frag_offset(8 * 100);
        p.set_more_frags(true);
        p.set_ttl(3);
        p.set_protocol(ip_protocol::TCP);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.fill_checksum();
        p.payload_mut()[0] = 0x99;
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.frag_offset(), 800);
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.ident(), 7);
        assert_eq!(p.ttl(), 3);
        assert_eq!(p.protocol(), ip_protocol::TCP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert_eq!(p.payload()[0], 0x99);
        assert!(p.verify_checksum());
    }

    #[test]
    fn incremental_ttl_and_address_update_matches_recompute() {
        let mut bytes = sample();
        let mut p = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        let old_word = u16::from_be_bytes([p.ttl(), p.protocol()]);
        let old_csum = p.checksum();
        p.set_ttl(p.ttl() - 1);
        let new_word = u16::from_be_bytes([p.ttl(), p.protocol()]);
        let new_csum = checksum::update_u16(old_csum, old_word, new_word);
        p.set_checksum(new_csum);
        assert!(p.verify_checksum());

        let old_dst = u32::from(p.dst_addr());
        let new_dst = Ipv4Addr::new(172, 16, 9, 9);
        let csum = checksum::update_u32(p.checksum(), old_dst, u32::from(new_dst));
        p.set_dst_addr(new_dst);
        p.set_checksum(csum);
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0usize..1480,
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(
                |(s, d, protocol, payload_len, ttl, tos, ident, dont_frag)| Ipv4Repr {
                    src_addr: s.into(),
                    dst_addr: d.into(),
                    protocol,
                    payload_len,
                    ttl,
                    tos,
                    ident,
                    dont_frag,
                },
            )
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..80), force in any::<bool>()) {
            if force && !data.is_empty() {
                data[0] = 0x40 | (data[0] & 0x0f); // make version checks pass more often
            }
            if data.len() >= 4 && force {
                let len = data.len() as u16;
                data[2..4].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = Ipv4Packet::new_checked_truncated(&data[..]) {
                let _ = (p.options(), p.payload(), p.verify_checksum(), Ipv4Repr::parse(&p));
                prop_assert!(p.header_len() + p.payload().len() <= data.len());
            }
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.tos(), p.dscp(), p.ecn(), p.ident(), p.dont_frag(), p.more_frags());
                let _ = (p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol(), p.checksum());
                let _ = (p.src_addr(), p.dst_addr(), p.verify_checksum(), Ipv4Repr::parse(&p));
                prop_assert_eq!(p.options().len() + 20 + p.payload().len(), p.total_len() as usize);
            }
        }

        #[test]
        fn repr_roundtrip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        }
    }
}
