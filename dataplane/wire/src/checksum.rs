//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! [`sum`] returns the folded 16-bit one's-complement sum, *not* complemented, so partial sums
//! of a pseudo header and a payload can be [`combine`]d before the final complement. A header
//! verifies when the sum over it, checksum field included, is `0xFFFF`. The `update_*`
//! functions patch a stored (complemented) checksum after a field changed, without touching
//! the rest of the packet — that is how NAT-like rewrites stay O(1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator of 16-bit words into a 16-bit one's-complement sum.
#[inline(always)]
pub(crate) fn fold(mut acc: u64) -> u16 {
    // Two rounds bring any u64 down to 17 bits; two more finish the end-around carry.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// Folded one's-complement sum of `data` as big-endian 16-bit words, not complemented.
///
/// An odd trailing byte is padded with a zero byte, as RFC 1071 specifies.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    // RFC 1071 section 2: the one's-complement sum is byte-order independent, so sum
    // native-endian 32-bit words into a u64 (no overflow below 2^32 words; the compiler
    // vectorises this loop) and swap the folded result back to network order once.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        acc += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_ne_bytes(tail));
    u16::from_be(fold(acc))
}

/// One's-complement sum of already folded sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo header (RFC 793 / RFC 768): addresses, protocol and upper-layer length.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: u8, length: u32) -> u16 {
    let s = u32::from(*src);
    let d = u32::from(*dst);
    let acc = u64::from(s >> 16)
        + u64::from(s & 0xffff)
        + u64::from(d >> 16)
        + u64::from(d & 0xffff)
        + u64::from(protocol)
        + u64::from(length >> 16)
        + u64::from(length & 0xffff);
    fold(acc)
}

/// Sum of the IPv6 pseudo header (RFC 8200 section 8.1).
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let mut acc = u64::from(next_header) + u64::from(length >> 16) + u64::from(length & 0xffff);
    for word in src.segments().into_iter().chain(dst.segments()) {
        acc += u64::from(word);
    }
    fold(acc)
}

/// Pseudo-header sum for either family.
///
/// Mixed families (one IPv4, one IPv6 address) cannot occur on the wire; they are summed as
/// IPv6 with the IPv4 address in its IPv4-mapped form, so the call is total and never panics.
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: u8, length: u32) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_header_v4(s, d, protocol, length),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_header_v6(s, d, protocol, length),
        (s, d) => pseudo_header_v6(&to_v6(s), &to_v6(d), protocol, length),
    }
}

#[inline]
fn to_v6(addr: &IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => *a,
    }
}

/// The Internet checksum of `data`: the complement of [`sum`].
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Updates a stored checksum after a 16-bit field changed from `old` to `new` (RFC 1624, eqn. 3).
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// Updates a stored checksum after a 32-bit field (e.g. an IPv4 address) changed.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!checksum)
        + u64::from(!(old >> 16) & 0xffff)
        + u64::from(!old & 0xffff)
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(acc)
}

/// Updates a stored checksum after the bytes `old` were replaced by `new`.
///
/// Both slices must have the same length and start at an even offset of the checksummed data
/// (e.g. an IPv6 address, or a port pair).
#[inline]
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    // One's-complement negation distributes over the sum, so ~m summed over the words is ~sum(m).
    !fold(u64::from(!checksum) + u64::from(!sum(old)) + u64::from(sum(new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: RFC 1071 word-by-word with end-around carry.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn empty_and_zero_sum() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0; 64]), 0);
        assert_eq!(sum(&[0xff; 64]), 0xffff);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Classic example header (checksum field zeroed): checksum is 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 1, 200);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 6, 0x05, 0xdc]);
        assert_eq!(pseudo_header_v4(&src, &dst, 6, 1500), naive_sum(&bytes));

        let src6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst6: Ipv6Addr = "fe80::abcd:1234".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src6.octets());
        bytes.extend_from_slice(&dst6.octets());
        bytes.extend_from_slice(&70_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(
            pseudo_header_v6(&src6, &dst6, 17, 70_000),
            naive_sum(&bytes)
        );
    }

    proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sum(&data), naive_sum(&data));
        }

        #[test]
        fn combine_matches_concatenation(
            a in proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| { v.truncate(v.len() & !1); v }),
            b in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut joined = a.clone();
            joined.extend_from_slice(&b);
            prop_assert_eq!(combine(&[sum(&a), sum(&b)]), sum(&joined));
        }

        #[test]
        fn incremental_update_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 8..128),
            at_word in 0usize..60,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            data.truncate(data.len() & !1);
            // Keep one fixed non-zero word so the data never sums to zero (where a stored
            // checksum has two encodings, 0x0000 and 0xFFFF, and RFC 1624 picks one).
            data[0] = 0x45;
            let at = 2 + 2 * (at_word % ((data.len() - 4) / 2).max(1));
            let at = at.min(data.len() - 4);
            let before = checksum(&data);

            let old16 = u16::from_be_bytes([data[at], data[at + 1]]);
            let mut changed = data.clone();
            changed[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            prop_assert_eq!(update_u16(before, old16, new16), checksum(&changed));

            let old32 = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let mut changed = data.clone();
            changed[at..at + 4].copy_from_slice(&new32.to_be_bytes());
            prop_assert_eq!(update_u32(before, old32, new32), checksum(&changed));
            prop_assert_eq!(update(before, &data[at..at + 4], &new32.to_be_bytes()), checksum(&changed));
        }
    }
}
