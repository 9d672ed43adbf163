//! IEEE 802.1Q / 802.1ad VLAN tags: the four bytes that follow a `0x8100` or `0x88A8` ethertype.
//!
//! The view starts *after* the tag protocol identifier (which is the enclosing ethertype): two
//! bytes of tag control information (PCP, DEI, VLAN ID) and the inner ethertype.

use crate::field::{read_u16, write_u16};
use crate::{Error, Result};

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// A zero-copy view of a VLAN tag and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanHeader<T> {
    buffer: T,
}

impl<T> VlanHeader<T> {
    /// Length of the tag control information plus the inner ethertype.
    pub const HEADER_LEN: usize = field::PAYLOAD;
}

impl<T: AsRef<[u8]>> VlanHeader<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than 4 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanHeader { buffer }
    }

    /// Wraps a buffer after checking it holds a whole tag.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Returns [`Error::Truncated`] if the buffer is shorter than the tag.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::PAYLOAD {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn tci(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TCI)
    }

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (0..=4095).
    #[inline]
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of what follows the tag (another tag for QinQ).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        field::PAYLOAD..self.buffer.as_ref().len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanHeader<T> {
    #[inline]
    fn set_tci(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::TCI, value);
    }

    /// Sets the priority code point (only the low 3 bits are used).
    #[inline]
    pub fn set_pcp(&mut self, value: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(value & 0x07) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    #[inline]
    pub fn set_dei(&mut self, value: bool) {
        let tci = (self.tci() & !0x1000) | if value { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier (only the low 12 bits are used).
    #[inline]
    pub fn set_vlan_id(&mut self, value: u16) {
        let tci = (self.tci() & 0xf000) | (value & 0x0fff);
        self.set_tci(tci);
    }

    /// Sets the inner ethertype.
    #[inline]
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    /// Mutable payload after the tag.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A parsed VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    /// Priority code point (0..=7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (0..=4095).
    pub vlan_id: u16,
    /// Inner ethertype.
    pub ethertype: u16,
}

impl VlanRepr {
    /// Reads a tag.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(header: &VlanHeader<T>) -> Result<Self> {
        header.check_len()?;
        Ok(VlanRepr {
            pcp: header.pcp(),
            dei: header.dei(),
            vlan_id: header.vlan_id(),
            ethertype: header.ethertype(),
        })
    }

    /// Length of the emitted tag (4).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the tag. `pcp` above 7 and `vlan_id` above 4095 are masked to their field width.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Self::buffer_len`].
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut VlanHeader<T>) {
        let tci = (u16::from(self.pcp & 0x07) << 13)
            | if self.dei { 0x1000 } else { 0 }
            | (self.vlan_id & 0x0fff);
        header.set_tci(tci);
        header.set_ethertype(self.ethertype);
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VlanHeader<&'a T> {
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
    use crate::ethertype;
    use proptest::prelude::*;

    #[test]
    fn parse_known_tag() {
        // PCP 5, DEI 1, VID 0x123, inner IPv4.
        let bytes = [0xb1, 0x23, 0x08, 0x00, 0x45];
        let tag = VlanHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        assert_eq!(tag.vlan_id(), 0x123);
        assert_eq!(tag.ethertype(), ethertype::IPV4);
        assert_eq!(tag.payload(), &[0x45]);
    }

    #[test]
    fn truncated_tag() {
        assert_eq!(
            VlanHeader::new_checked(&[0u8; 3][..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut bytes = [0xffu8; 4];
        let mut tag = VlanHeader::new_unchecked(&mut bytes[..]);
        tag.set_vlan_id(0);
        assert_eq!((tag.pcp(), tag.dei(), tag.vlan_id()), (7, true, 0));
        tag.set_dei(false);
        assert_eq!((tag.pcp(), tag.dei(), tag.vlan_id()), (7, false, 0));
        tag.set_pcp(2);
        tag.set_vlan_id(4095);
        assert_eq!((tag.pcp(), tag.dei(), tag.vlan_id()), (2, false, 4095));
        tag.set_ethertype(ethertype::IPV6);
        assert_eq!(bytes, [0x4f, 0xff, 0x86, 0xdd]);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..8)) {
            match VlanHeader::new_checked(&data[..]) {
                Ok(tag) => {
                    let _ = (tag.pcp(), tag.dei(), tag.vlan_id(), tag.ethertype(), tag.payload());
                    prop_assert!(tag.pcp() <= 7 && tag.vlan_id() <= 4095);
                }
                Err(e) => prop_assert_eq!(e, Error::Truncated),
            }
        }

        #[test]
        fn repr_roundtrip(pcp in 0u8..8, dei in any::<bool>(), vlan_id in 0u16..4096, et in any::<u16>()) {
            let repr = VlanRepr { pcp, dei, vlan_id, ethertype: et };
            let mut buf = [0u8; 4];
            repr.emit(&mut VlanHeader::new_unchecked(&mut buf[..]));
            prop_assert_eq!(VlanRepr::parse(&VlanHeader::new_checked(&buf[..]).unwrap()).unwrap(), repr);
        }
    }
}
