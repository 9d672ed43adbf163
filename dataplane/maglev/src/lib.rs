//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI'16, section 3.4) with weights and a fixed, documented hash.
//!
//! This crate owns the mapping from a flow to a backend: [`MaglevTable::build`] turns a set of
//! backends into a lookup table of prime size `M`, and [`MaglevTable::lookup`] maps a
//! [`flow_hash`] to an index into the caller's backend slice. Every input to the table (the hash
//! keys, the permutation, the weighting scheme, the tie-breaking order) is fixed and documented in
//! `docs/maglev.md`, so two processes, two machines or two releases build byte-identical tables
//! from the same set of backends. That is what lets ECMP move a flow from one appliance to another
//! without breaking it. Changing any constant or rule here is a breaking change for every
//! deployment that mixes versions; the golden tests in [`table`] guard against it.
//!
//! ```
//! use maglev::{flow_hash, BackendSpec, MaglevTable, DEFAULT_TABLE_SIZE};
//!
//! let backends = [
//!     BackendSpec { key: b"10.0.0.7:80", weight: 1 },
//!     BackendSpec { key: b"10.0.0.8:80", weight: 2 },
//! ];
//! let table = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE)?;
//! let backend = table.lookup(flow_hash(b"192.0.2.1:5555->198.51.100.1:443/tcp"));
//! assert!(matches!(backend, Some(0) | Some(1)));
//! # Ok::<(), maglev::BuildError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod table;

pub use table::{BackendSpec, BuildError, MaglevTable, EMPTY_SLOT, MAX_BACKENDS, MAX_TABLE_SIZE};

use core::hash::Hasher;
use siphasher::sip::SipHasher13;

/// Default table size `M`: prime, good balance (max deviation under 1 %) up to 655 backends.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Large table size `M`: prime, good balance up to 6,553 backends; builds about 10x slower.
pub const LARGE_TABLE_SIZE: u32 = 655_373;

/// SipHash-1-3 key `(k0, k1)` for a backend's permutation offset. Frozen forever.
///
/// As 16 key bytes (SipHash reads `k0` and `k1` little-endian): `k0.to_le_bytes() ++ k1.to_le_bytes()`.
pub const K_OFFSET: [u64; 2] = [0x63a1_fac6_2227_5d25, 0x21bf_e906_7ef7_e68d];

/// SipHash-1-3 key `(k0, k1)` for a backend's permutation skip. Frozen forever.
pub const K_SKIP: [u64; 2] = [0x83a5_3583_c64b_e6f0, 0x0255_5c4a_83c5_8f30];

/// SipHash-1-3 key `(k0, k1)` for the per-packet [`flow_hash`]. Frozen forever.
pub const K_FLOW: [u64; 2] = [0xf877_7888_c0fe_f9bb, 0xa273_aa2a_7855_cf6b];

/// SipHash-1-3 key `(k0, k1)` for [`MaglevTable::fingerprint`]. Frozen forever.
pub const K_FINGERPRINT: [u64; 2] = [0xe9ba_4835_6189_2c2f, 0xc089_fc84_9d78_cadc];

/// SipHash-1-3 with key `key` over exactly `bytes` (no length prefix, unlike `Hash::hash`).
#[inline]
pub fn siphash13(key: [u64; 2], bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(key[0], key[1]);
    hasher.write(bytes);
    hasher.finish()
}

/// The fixed per-packet flow hash: SipHash-1-3 with [`K_FLOW`] over the raw bytes.
///
/// The caller decides which header fields go into `bytes` (the dataplane documents its flow key
/// layout); this function only fixes the hash so every appliance agrees. [`MaglevTable::lookup`]
/// takes `flow_hash(bytes) % M`.
#[inline]
pub fn flow_hash(bytes: &[u8]) -> u64 {
    siphash13(K_FLOW, bytes)
}

/// Whether `n` is prime (trial division; at most ~32,768 divisions for any `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n % 2 == 0 {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..50).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            small,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
        );
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(LARGE_TABLE_SIZE));
        assert!(is_prime(4_294_967_291)); // largest prime below 2^32
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65_536));
        assert!(!is_prime(65_539 * 3));
        assert!(!is_prime(65_521 * 65_521)); // a prime square: exercises the sqrt bound
    }

    #[test]
    fn is_prime_matches_sieve() {
        let limit = 20_000usize;
        let mut composite = vec![false; limit];
        for i in 2..limit {
            if !composite[i] {
                let mut j = i * i;
                while j < limit {
                    composite[j] = true;
                    j += i;
                }
            }
        }
        for (n, &c) in composite.iter().enumerate() {
            assert_eq!(is_prime(n as u32), n >= 2 && !c, "n = {n}");
        }
    }

    /// Golden values. These are frozen: if this test fails, the flow hash changed, and every
    /// deployment that mixes the old and new version would send the same flow to different
    /// backends. Fix the code, never the constants.
    #[test]
    fn flow_hash_golden() {
        assert_eq!(flow_hash(b""), GOLDEN_FLOW_EMPTY);
        assert_eq!(flow_hash(b"10.0.0.7:80"), GOLDEN_FLOW_BACKEND);
        let five_tuple: [u8; 13] = [
            192, 0, 2, 1, // src 192.0.2.1
            198, 51, 100, 1, // dst 198.51.100.1
            0x15, 0xb3, // sport 5555
            0x01, 0xbb, // dport 443
            6,    // tcp
        ];
        assert_eq!(flow_hash(&five_tuple), GOLDEN_FLOW_FIVE_TUPLE);
        // No length prefix: a streaming write in two parts equals one write.
        let mut h = SipHasher13::new_with_keys(K_FLOW[0], K_FLOW[1]);
        h.write(&five_tuple[..5]);
        h.write(&five_tuple[5..]);
        assert_eq!(h.finish(), GOLDEN_FLOW_FIVE_TUPLE);
    }

    const GOLDEN_FLOW_EMPTY: u64 = 0x53b7_148f_5128_bf1a;
    const GOLDEN_FLOW_BACKEND: u64 = 0x29ac_df76_7424_11c0;
    const GOLDEN_FLOW_FIVE_TUPLE: u64 = 0x3699_6237_2527_2a0d;

    /// The documented key layout: `(k0, k1)` are the 16 key bytes read as two little-endian u64.
    #[test]
    fn siphash13_reference_key_layout() {
        let key_bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        let k0 = u64::from_le_bytes(key_bytes[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key_bytes[8..].try_into().unwrap());
        let msg: Vec<u8> = (0..15).collect();
        let via_keys = siphash13([k0, k1], &msg);
        let via_bytes = {
            let mut h = SipHasher13::new_with_key(&key_bytes);
            h.write(&msg);
            h.finish()
        };
        assert_eq!(via_keys, via_bytes);
    }
}
