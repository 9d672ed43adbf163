//! Generic UDP Encapsulation (draft-ietf-intarea-gue): the variant 0 header, and the dispatch
//! that tells where the inner packet starts in a GUE UDP payload.
//!
//! Variant 0 carries a 4-byte header (2-bit variant, C bit, 5-bit Hlen, proto/ctype, 16 flag
//! bits) followed by `4 * Hlen` bytes of optional fields. Variant 1 has no header at all: the
//! UDP payload *is* an IPv4 or IPv6 packet, recognised by its version nibble (the first two
//! bits of both `0100` and `0110` are `01`). vipd sends variant 1 by default.

use crate::field::{read_u16, write_u16};
use crate::ip_protocol;
use crate::{Error, Result};

mod field {
    pub const VER_C_HLEN: usize = 0;
    pub const PROTO: usize = 1;
    pub const FLAGS: usize = 2;
    pub const OPTIONS: usize = 4;
}

/// A zero-copy view of a GUE variant 0 header and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GueHeader<T> {
    buffer: T,
}

impl<T> GueHeader<T> {
    /// Length of the fixed part of the header (no optional fields).
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;
}

impl<T: AsRef<[u8]>> GueHeader<T> {
    /// Wraps a buffer without checking it; accessors panic if the header does not fit.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        GueHeader { buffer }
    }

    /// Wraps a buffer after checking it is a whole variant 0 header.
    ///
    /// Shorter than 4 bytes or than `header_len()`: [`Error::Truncated`]; a variant other than
    /// 0: [`Error::Unsupported`] (use [`gue_inner`] to dispatch on the variant).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// See [`Self::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::OPTIONS {
            return Err(Error::Truncated);
        }
        if self.variant() != 0 {
            return Err(Error::Unsupported);
        }
        if self.header_len() > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Variant: the first two bits (0 for this header).
    #[inline]
    pub fn variant(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] >> 6
    }

    /// C bit: a control message (`protocol()` is then a control type).
    #[inline]
    pub fn is_control(&self) -> bool {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x20 != 0
    }

    /// Hlen: length of the optional fields in 4-byte words.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x1f
    }

    /// IP protocol of the payload (data message) or control type (control message).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTO]
    }

    /// The 16 flag bits.
    #[inline]
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS)
    }

    /// Whole header length in bytes: `4 + 4 * hlen`.
    #[inline]
    pub fn header_len(&self) -> usize {
        field::OPTIONS + 4 * usize::from(self.hlen())
    }

    /// The optional fields (extension fields and private data).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The encapsulated packet after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        self.header_len()..self.buffer.as_ref().len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GueHeader<T> {
    /// Sets the variant (low 2 bits used).
    #[inline]
    pub fn set_variant(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::VER_C_HLEN] = (data[field::VER_C_HLEN] & 0x3f) | ((value & 0x03) << 6);
    }

    /// Sets or clears the C bit.
    #[inline]
    pub fn set_control(&mut self, value: bool) {
        let data = self.buffer.as_mut();
        data[field::VER_C_HLEN] = (data[field::VER_C_HLEN] & !0x20) | if value { 0x20 } else { 0 };
    }

    /// Sets Hlen in 4-byte words (low 5 bits used).
    #[inline]
    pub fn set_hlen(&mut self, words: u8) {
        let data = self.buffer.as_mut();
        data[field::VER_C_HLEN] = (data[field::VER_C_HLEN] & 0xe0) | (words & 0x1f);
    }

    /// Sets the proto/ctype byte.
    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTO] = value;
    }

    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS, value);
    }

    /// Mutable optional fields.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable payload after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// A parsed GUE variant 0 header without optional fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GueRepr {
    /// Control message (C bit).
    pub control: bool,
    /// IP protocol of the payload, or the control type.
    pub protocol: u8,
}

impl GueRepr {
    /// Parses a variant 0 header. Optional fields and flags are accepted and dropped.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(header: &GueHeader<T>) -> Result<Self> {
        header.check_len()?;
        Ok(GueRepr {
            control: header.is_control(),
            protocol: header.protocol(),
        })
    }

    /// Length of the emitted header (4).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        field::OPTIONS
    }

    /// Writes a 4-byte variant 0 header: Hlen 0, flags 0.
    ///
    /// # Panics
    /// If the buffer is shorter than 4 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut GueHeader<T>) {
        let data = header.buffer.as_mut();
        data[field::VER_C_HLEN] = if self.control { 0x20 } else { 0 };
        data[field::PROTO] = self.protocol;
        write_u16(data, field::FLAGS, 0);
    }
}

/// Where the inner packet of a GUE datagram starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GueInner {
    /// IP protocol of the inner packet ([`ip_protocol::IPIP`] or [`ip_protocol::IPV6`] for
    /// variant 1).
    pub protocol: u8,
    /// Offset of the inner packet into the UDP payload.
    pub offset: usize,
}

/// Finds the inner packet of a GUE UDP payload.
///
/// Variant 0 data messages: the header's protocol, after the header. Variant 1: the payload is
/// an IPv4 (`IPIP`) or IPv6 (`IPV6`) packet at offset 0. Errors: empty or short header is
/// [`Error::Truncated`]; variant 1 with a version nibble other than 4 or 6 is
/// [`Error::Malformed`]; control messages and variants 2 and 3 are [`Error::Unsupported`].
#[inline]
pub fn gue_inner(udp_payload: &[u8]) -> Result<GueInner> {
    let first = *udp_payload.first().ok_or(Error::Truncated)?;
    match first >> 6 {
        0 => {
            let header = GueHeader::new_checked(udp_payload)?;
            if header.is_control() {
                return Err(Error::Unsupported);
            }
            Ok(GueInner {
                protocol: header.protocol(),
                offset: header.header_len(),
            })
        }
        1 => match first >> 4 {
            4 => Ok(GueInner {
                protocol: ip_protocol::IPIP,
                offset: 0,
            }),
            6 => Ok(GueInner {
                protocol: ip_protocol::IPV6,
                offset: 0,
            }),
            _ => Err(Error::Malformed),
        },
        _ => Err(Error::Unsupported),
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> GueHeader<&'a T> {
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

    #[test]
    fn variant0_with_options() {
        // variant 0, C=0, Hlen=1; proto TCP; flags 0x8000; 4 bytes of options; payload.
        let bytes = [0x01, 6, 0x80, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22];
        let h = GueHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(h.variant(), 0);
        assert!(!h.is_control());
        assert_eq!(h.hlen(), 1);
        assert_eq!(h.protocol(), ip_protocol::TCP);
        assert_eq!(h.flags(), 0x8000);
        assert_eq!(h.header_len(), 8);
        assert_eq!(h.options(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(h.payload(), &[0x11, 0x22]);
        assert_eq!(
            gue_inner(&bytes),
            Ok(GueInner {
                protocol: ip_protocol::TCP,
                offset: 8
            })
        );
    }

    #[test]
    fn variant1_ipv4_and_ipv6() {
        assert_eq!(
            gue_inner(&[0x45, 0]),
            Ok(GueInner {
                protocol: ip_protocol::IPIP,
                offset: 0
            })
        );
        assert_eq!(
            gue_inner(&[0x60, 0]),
            Ok(GueInner {
                protocol: ip_protocol::IPV6,
                offset: 0
            })
        );
        assert_eq!(gue_inner(&[0x50]), Err(Error::Malformed));
        assert_eq!(gue_inner(&[0x70]), Err(Error::Malformed));
    }

    #[test]
    fn errors() {
        assert_eq!(gue_inner(&[]), Err(Error::Truncated));
        assert_eq!(gue_inner(&[0x00, 4, 0]), Err(Error::Truncated));
        assert_eq!(
            gue_inner(&[0x02, 4, 0, 0, 0, 0, 0, 0]),
            Err(Error::Truncated)
        ); // Hlen 2 = 12 bytes
        assert_eq!(gue_inner(&[0x20, 1, 0, 0]), Err(Error::Unsupported)); // control
        assert_eq!(gue_inner(&[0x80, 1, 0, 0]), Err(Error::Unsupported));
        assert_eq!(gue_inner(&[0xc0, 1, 0, 0]), Err(Error::Unsupported));
        assert_eq!(
            GueHeader::new_checked(&[0x45u8, 0, 0, 0][..]).unwrap_err(),
            Error::Unsupported
        );
    }

    #[test]
    fn setters() {
        let mut bytes = [0u8; 12];
        let mut h = GueHeader::new_unchecked(&mut bytes[..]);
        h.set_variant(0);
        h.set_control(true);
        h.set_hlen(2);
        h.set_protocol(ip_protocol::UDP);
        h.set_flags(0x1234);
        h.options_mut().fill(0xee);
        assert_eq!(h.payload_mut().len(), 0);
        h.set_control(false);
        assert_eq!(&bytes[..4], &[0x02, 17, 0x12, 0x34]);
        assert_eq!(&bytes[4..], &[0xee; 8]);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(h) = GueHeader::new_checked(&data[..]) {
                let _ = (h.variant(), h.is_control(), h.protocol(), h.flags(), h.options());
                prop_assert_eq!(h.header_len() + h.payload().len(), data.len());
            }
            if let Ok(inner) = gue_inner(&data) {
                prop_assert!(inner.offset <= data.len());
            }
        }

        #[test]
        fn repr_roundtrip(control in any::<bool>(), protocol in any::<u8>()) {
            let repr = GueRepr { control, protocol };
            let mut buf = [0xffu8; 4];
            repr.emit(&mut GueHeader::new_unchecked(&mut buf[..]));
            let h = GueHeader::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(GueRepr::parse(&h).unwrap(), repr);
            prop_assert_eq!(h.header_len(), 4);
            if !control {
                prop_assert_eq!(gue_inner(&buf), Ok(GueInner { protocol, offset: 4 }));
            }
        }
    }
}
