//! TCP (RFC 9293) segment view, flags and a 20-byte (option-less) representation.
//!
//! `TcpPacket::new_checked` guarantees `20 <= header_len <= buffer.len()`. The buffer is the
//! whole IP payload: TCP has no length field, so the segment ends where the buffer ends. The
//! checksum covers the pseudo header of the enclosing IP packet; pass its addresses.

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not};
use std::net::IpAddr;

use crate::checksum;
use crate::field::{read_u16, read_u32, write_u16, write_u32};
use crate::ip_protocol;
use crate::{Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// The eight TCP control bits (byte 13 of the header).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// No flags set.
    #[inline]
    pub const fn empty() -> Self {
        TcpFlags(0)
    }

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True when every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when any bit of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// FIN set.
    #[inline]
    pub const fn fin(self) -> bool {
        self.0 & Self::FIN.0 != 0
    }

    /// SYN set.
    #[inline]
    pub const fn syn(self) -> bool {
        self.0 & Self::SYN.0 != 0
    }

    /// RST set.
    #[inline]
    pub const fn rst(self) -> bool {
        self.0 & Self::RST.0 != 0
    }

    /// PSH set.
    #[inline]
    pub const fn psh(self) -> bool {
        self.0 & Self::PSH.0 != 0
    }

    /// ACK set.
    #[inline]
    pub const fn ack(self) -> bool {
        self.0 & Self::ACK.0 != 0
    }

    /// URG set.
    #[inline]
    pub const fn urg(self) -> bool {
        self.0 & Self::URG.0 != 0
    }

    /// ECE set.
    #[inline]
    pub const fn ece(self) -> bool {
        self.0 & Self::ECE.0 != 0
    }

    /// CWR set.
    #[inline]
    pub const fn cwr(self) -> bool {
        self.0 & Self::CWR.0 != 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl BitAndAssign for TcpFlags {
    #[inline]
    fn bitand_assign(&mut self, rhs: TcpFlags) {
        self.0 &= rhs.0;
    }
}

impl Not for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn not(self) -> TcpFlags {
        TcpFlags(!self.0)
    }
}

impl fmt::Debug for TcpFlags {
    /// Prints the set flags, e.g. `TcpFlags(SYN|ACK)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        f.write_str("TcpFlags(")?;
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// A zero-copy view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T> TcpPacket<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;
    /// Alias of [`Self::MIN_HEADER_LEN`].
    pub const HEADER_LEN: usize = field::OPTIONS;
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; accessors panic if the header does not fit.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after checking the header (options included) fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `len >= 20`, data offset >= 5 and `header_len <= len`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::OPTIONS {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < field::OPTIONS {
            return Err(Error::Malformed);
        }
        if header_len > len {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Control flags.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Receive window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (empty when the data offset is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Segment data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        self.header_len()..self.buffer.as_ref().len()
    }

    /// True when the checksum over the pseudo header and the whole segment is correct.
    #[inline]
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::TCP, data.len() as u32);
        checksum::combine(&[pseudo, checksum::sum(data)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes (stored as `bytes / 4`; the reserved and NS bits are
    /// cleared).
    #[inline]
    pub fn set_header_len(&mut self, bytes: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = (((bytes / 4) as u8) & 0x0f) << 4;
    }

    /// Sets the control flags.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the receive window.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE, value);
    }

    /// Stores a checksum value as is.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// Computes and stores the checksum over the pseudo header and the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::TCP, data.len() as u32);
        let value = !checksum::combine(&[pseudo, checksum::sum(data)]);
        self.set_checksum(value);
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable segment data.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed TCP header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Control flags.
    pub flags: TcpFlags,
    /// Receive window.
    pub window_len: u16,
    /// Length of the segment data in bytes.
    pub payload_len: usize,
}

impl TcpRepr {
    /// Parses a segment and verifies its checksum (bad checksum is [`Error::Malformed`]).
    /// Options are accepted and dropped.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(
        packet: &TcpPacket<T>,
        src: &IpAddr,
        dst: &IpAddr,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            payload_len: packet.payload().len(),
        })
    }

    /// Header length of the emitted segment (20; no options).
    #[inline]
    pub const fn header_len(&self) -> usize {
        field::OPTIONS
    }

    /// Header plus payload length.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        field::OPTIONS + self.payload_len
    }

    /// Writes the 20-byte header with urgent pointer 0 and checksum 0. Write the payload, then
    /// call [`TcpPacket::fill_checksum`] with the IP addresses.
    ///
    /// # Panics
    /// If the buffer is shorter than 20 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(field::OPTIONS);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(0);
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
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

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2));

    /// SYN with an MSS option: ports 49152 -> 80, seq 1, window 65535, data offset 6.
    fn syn() -> Vec<u8> {
        vec![
            0xc0, 0x00, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02,
            0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, b'h', b'i',
        ]
    }

    /// Checksum by hand: pseudo header + segment words, RFC 1071 style.
    fn reference_checksum(seg: &[u8]) -> u16 {
        let mut s: u32 = 0xc0a8 + 0x0001 + 0xc0a8 + 0x0002 + 6 + seg.len() as u32;
        for pair in seg.chunks(2) {
            s += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn parse_known_segment() {
        let mut bytes = syn();
        let c = reference_checksum(&bytes);
        bytes[16..18].copy_from_slice(&c.to_be_bytes());
        let p = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (49152, 80));
        assert_eq!((p.seq_number(), p.ack_number()), (1, 0));
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(p.flags().syn() && !p.flags().ack());
        assert_eq!(p.window_len(), 65535);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(p.payload(), b"hi");
        assert!(p.verify_checksum(&SRC, &DST));
        assert!(!p.verify_checksum(&DST, &IpAddr::V4(Ipv4Addr::new(192, 168, 0, 3))));
        let repr = TcpRepr::parse(&p, &SRC, &DST).unwrap();
        assert_eq!(repr.payload_len, 2);
        assert_eq!(TcpRepr::parse(&p, &SRC, &SRC), Err(Error::Malformed));
    }

    #[test]
    fn malformed_and_truncated() {
        let bytes = syn();
        assert_eq!(
            TcpPacket::new_checked(&bytes[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            TcpPacket::new_checked(&bytes[..23]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = bytes.clone();
        bad[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn fill_checksum_v4_and_v6() {
        let mut bytes = syn();
        let mut p = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        p.fill_checksum(&SRC, &DST);
        assert_eq!(p.checksum(), reference_checksum(&syn()));
        let s6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let d6 = IpAddr::V6("2001:db8::80".parse().unwrap());
        p.fill_checksum(&s6, &d6);
        assert!(p.verify_checksum(&s6, &d6));
        assert!(!p.verify_checksum(&SRC, &DST));
    }

    #[test]
    fn flags_ops_and_debug() {
        let f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.syn() && f.ack() && !f.fin() && !f.rst() && !f.psh() && !f.urg());
        assert!(f.contains(TcpFlags::ACK) && !f.contains(TcpFlags::ACK | TcpFlags::FIN));
        assert_eq!(f & !TcpFlags::SYN, TcpFlags::ACK);
        let mut g = TcpFlags::empty();
        g |= TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG | TcpFlags::ECE | TcpFlags::CWR;
        g &= !TcpFlags::PSH;
        assert!(g.fin() && g.urg() && g.ece() && g.cwr() && !g.psh());
        assert_eq!(format!("{f:?}"), "TcpFlags(SYN|ACK)");
        assert_eq!(format!("{:?}", TcpFlags::empty()), "TcpFlags()");
    }

    #[test]
    fn setters() {
        let mut bytes = [0u8; 24];
        let mut p = TcpPacket::new_unchecked(&mut bytes[..]);
        p.set_header_len(24);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_flags(TcpFlags::RST);
        p.set_window_len(5);
        p.set_urgent_at(6);
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.set_checksum(7);
        let p = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (
                p.src_port(),
                p.dst_port(),
                p.seq_number(),
                p.ack_number(),
                p.window_len(),
                p.urgent_at(),
                p.checksum()
            ),
            (1, 2, 3, 4, 5, 6, 7)
        );
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert!(p.payload().is_empty());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = TcpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags(), p.window_len());
                let _ = (p.checksum(), p.urgent_at(), p.verify_checksum(&SRC, &DST));
                prop_assert_eq!(20 + p.options().len() + p.payload().len(), data.len());
            }
        }

        #[test]
        fn repr_roundtrip(
            src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
            flags in any::<u8>(), window in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..40),
            v6 in any::<bool>(),
        ) {
            let (s, d) = if v6 {
                (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)))
            } else {
                (SRC, DST)
            };
            let repr = TcpRepr { src_port, dst_port, seq_number: seq, ack_number: ack, flags: TcpFlags(flags), window_len: window, payload_len: payload.len() };
            let mut buf = vec![0u8; repr.buffer_len()];
            let mut p = TcpPacket::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            p.payload_mut().copy_from_slice(&payload);
            p.fill_checksum(&s, &d);
            let p = TcpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(TcpRepr::parse(&p, &s, &d).unwrap(), repr);
            prop_assert_eq!(p.payload(), &payload[..]);
        }

        #[test]
        fn port_rewrite_incremental_equals_full(new_port in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut buf = vec![0u8; 20 + payload.len()];
            let mut p = TcpPacket::new_unchecked(&mut buf[..]);
            TcpRepr { src_port: 1000, dst_port: 80, seq_number: 1, ack_number: 2, flags: TcpFlags::ACK, window_len: 100, payload_len: payload.len() }.emit(&mut p);
            p.payload_mut().copy_from_slice(&payload);
            p.fill_checksum(&SRC, &DST);
            let updated = checksum::update_u16(p.checksum(), p.dst_port(), new_port);
            p.set_dst_port(new_port);
            p.set_checksum(updated);
            prop_assert!(p.verify_checksum(&SRC, &DST));
            p.fill_checksum(&SRC, &DST);
            prop_assert_eq!(p.checksum(), updated);
        }
    }
}
