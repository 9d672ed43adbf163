//! Flow identity: the client-side 5-tuple, the bytes hashed to pick a backend, and the key the
//! per-core flow table stores.
//!
//! The flow hash must be the same on every appliance and in every release (ECMP may move a flow
//! to another appliance, which must pick the same backend), so both the hash function
//! (`maglev::flow_hash`, SipHash-1-3 with fixed keys) and its input layout are fixed:
//!
//! | family | bytes, in order (ports big-endian)                                           | length |
//! |--------|-------------------------------------------------------------------------------|--------|
//! | IPv4   | src addr (4), dst addr (4), src port (2), dst port (2), protocol (1)           | 13     |
//! | IPv6   | src addr (16), dst addr (16), src port (2), dst port (2), protocol (1)         | 37     |
//!
//! Hash policies zero fields before hashing: `ThreeTuple` zeroes both ports (and every fragment is
//! hashed that way, since only the first fragment carries ports); `DstPort` zeroes the source
//! address and source port.

use std::net::IpAddr;

use conntrack::FlowKey;

use crate::tables::HashPolicy;

/// The client -> VIP 5-tuple of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTuple {
    /// Client address.
    pub src: IpAddr,
    /// VIP address.
    pub dst: IpAddr,
    /// Client port (0 for fragments without ports).
    pub src_port: u16,
    /// VIP port (0 for fragments without ports).
    pub dst_port: u16,
    /// IP protocol.
    pub protocol: u8,
}

/// Longest hash input (IPv6).
pub const HASH_INPUT_MAX: usize = 37;

impl FlowTuple {
    /// Writes the hash input for `policy` (layout in the module docs) and returns its length.
    ///
    /// The bytes are assembled as 64-bit little-endian words and stored a word at a time: SipHash
    /// reads them back as words at once, and a word load from bytes just stored one field at a
    /// time would stall on store-to-load forwarding.
    #[inline]
    pub fn hash_input(&self, policy: HashPolicy, out: &mut [u8; HASH_INPUT_MAX]) -> usize {
        let (sport, dport, zero_src) = match policy {
            HashPolicy::FiveTuple => (self.src_port, self.dst_port, false),
            HashPolicy::ThreeTuple => (0, 0, false),
            HashPolicy::DstPort => (0, self.dst_port, true),
        };
        // Ports big-endian, then the protocol: 5 bytes after the addresses.
        let tail = u64::from(u16::from_le_bytes(sport.to_be_bytes()))
            | u64::from(u16::from_le_bytes(dport.to_be_bytes())) << 16
            | u64::from(self.protocol) << 32;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let src = if zero_src {
                    0
                } else {
                    u32::from_le_bytes(s.octets())
                };
                let addrs = u64::from(src) | u64::from(u32::from_le_bytes(d.octets())) << 32;
                out[..8].copy_from_slice(&addrs.to_le_bytes());
                out[8..16].copy_from_slice(&tail.to_le_bytes());
                13
            }
            (s, d) => {
                let (s, d) = (v6_octets(s), v6_octets(d));
                let word = |a: &[u8; 16], half: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&a[8 * half..8 * half + 8]);
                    u64::from_le_bytes(w)
                };
                let words = [
                    if zero_src { 0 } else { word(&s, 0) },
                    if zero_src { 0 } else { word(&s, 1) },
                    word(&d, 0),
                    word(&d, 1),
                    tail,
                ];
                for (chunk, w) in out.chunks_mut(8).zip(words) {
                    chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
                }
                37
            }
        }
    }

    /// The fixed flow hash under `policy`.
    #[inline]
    pub fn hash(&self, policy: HashPolicy) -> u64 {
        let mut buf = [0u8; HASH_INPUT_MAX];
        let len = self.hash_input(policy, &mut buf);
        maglev::flow_hash(&buf[..len])
    }

    /// The flow-table key (always the full 5-tuple, whatever the hash policy).
    #[inline]
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src_addr: v6_octets(self.src),
            dst_addr: v6_octets(self.dst),
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol,
        }
    }
}

/// IPv6 octets, with IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), as the flow table stores it.
#[inline]
pub fn v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, dst: &str) -> FlowTuple {
        FlowTuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 0x1234,
            dst_port: 80,
            protocol: 6,
        }
    }

    #[test]
    fn ipv4_layout_is_13_bytes_in_documented_order() {
        let t = tuple("10.1.2.3", "203.0.113.9");
        let mut b = [0u8; HASH_INPUT_MAX];
        let n = t.hash_input(HashPolicy::FiveTuple, &mut b);
        assert_eq!(
            &b[..n],
            &[10, 1, 2, 3, 203, 0, 113, 9, 0x12, 0x34, 0, 80, 6]
        );
        let n = t.hash_input(HashPolicy::ThreeTuple, &mut b);
        assert_eq!(&b[..n], &[10, 1, 2, 3, 203, 0, 113, 9, 0, 0, 0, 0, 6]);
        let n = t.hash_input(HashPolicy::DstPort, &mut b);
        assert_eq!(&b[..n], &[0, 0, 0, 0, 203, 0, 113, 9, 0, 0, 0, 80, 6]);
    }

    #[test]
    fn ipv6_layout_is_37_bytes() {
        let t = tuple("2001:db8::1", "2001:db8::80");
        let mut b = [0u8; HASH_INPUT_MAX];
        assert_eq!(t.hash_input(HashPolicy::FiveTuple, &mut b), 37);
        assert_eq!(b[15], 1);
        assert_eq!(b[31], 0x80);
        assert_eq!(&b[32..37], &[0x12, 0x34, 0, 80, 6]);
    }

    #[test]
    fn policies_group_flows_as_documented() {
        let a = tuple("10.1.2.3", "203.0.113.9");
        let b = FlowTuple { src_port: 999, ..a };
        let c = FlowTuple {
            src: "10.9.9.9".parse().unwrap(),
            ..a
        };
        assert_ne!(a.hash(HashPolicy::FiveTuple), b.hash(HashPolicy::FiveTuple));
        assert_eq!(
            a.hash(HashPolicy::ThreeTuple),
            b.hash(HashPolicy::ThreeTuple)
        );
        assert_ne!(
            a.hash(HashPolicy::ThreeTuple),
            c.hash(HashPolicy::ThreeTuple)
        );
        assert_eq!(a.hash(HashPolicy::DstPort), c.hash(HashPolicy::DstPort));
        assert_eq!(a.key().src_addr[10..12], [0xff, 0xff]);
    }
}
