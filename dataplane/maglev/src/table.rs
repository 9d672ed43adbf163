//! The Maglev lookup table: building it from a backend set and looking flows up in it.
//!
//! [`MaglevTable::build`] is the paper's population loop (section 3.4, pseudocode 1) with two
//! fixed additions: backends take turns in the byte order of their keys (so the table depends only
//! on the *set* of backends, not on the order of the caller's slice), and each backend stops taking
//! turns once it holds its weighted quota of slots. With all weights equal the quotas are exactly
//! what the paper's round-robin produces, so the table is the paper's table. The exact rules are in
//! `docs/maglev.md`; they are frozen, since changing them breaks cross-version consistency.

use core::fmt;
use core::hash::Hasher;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use siphasher::sip::SipHasher13;

use crate::{is_prime, siphash13, K_FINGERPRINT, K_OFFSET, K_SKIP};

/// Slot value meaning "no backend": every slot holds it when no backend has a weight above 0.
pub const EMPTY_SLOT: u16 = u16::MAX;

/// Largest table size accepted: 2^24 slots (32 MiB of `u16`), 25x [`crate::LARGE_TABLE_SIZE`].
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// Most backends one table can hold: indices `0..=65_533` fit a `u16` slot next to [`EMPTY_SLOT`].
pub const MAX_BACKENDS: usize = EMPTY_SLOT as usize - 1;

/// One backend as the table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec<'a> {
    /// Stable identity of the backend, e.g. `b"10.0.0.7:80"`. Only these bytes place the backend
    /// in the table, so they must be the same on every appliance and survive restarts.
    pub key: &'a [u8],
    /// Relative share of slots. `0` means draining: the backend gets no slots.
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The table size must be prime for every backend's permutation to cover all slots.
    #[error(
        "maglev table size {table_size} is not prime; use a prime such as 65537 (default) or 655373 (large)"
    )]
    TableSizeNotPrime {
        /// The size that was asked for.
        table_size: u32,
    },
    /// Larger than [`MAX_TABLE_SIZE`]; almost certainly a typo.
    #[error(
        "maglev table size {table_size} is above the limit of {max}; use 65537 (default) or 655373 (large)"
    )]
    TableTooLarge {
        /// The size that was asked for.
        table_size: u32,
        /// [`MAX_TABLE_SIZE`].
        max: u32,
    },
    /// Fewer slots than backends with a weight above 0: some backend could get no slot.
    #[error(
        "maglev table size {table_size} is smaller than the {live_backends} backends with weight > 0; \
         use a prime table size above 100x the backend count (e.g. 65537 or 655373)"
    )]
    TableTooSmall {
        /// The size that was asked for.
        table_size: u32,
        /// Backends with a weight above 0.
        live_backends: usize,
    },
    /// More backends than a `u16` slot can index.
    #[error(
        "{count} backends given but a maglev table holds at most {max}; split them across pools"
    )]
    TooManyBackends {
        /// Backends given.
        count: usize,
        /// [`MAX_BACKENDS`].
        max: usize,
    },
    /// Two backends share a key, so the table could not tell them apart.
    #[error(
        "backends {first_index} and {second_index} have the same key {key:?}; every backend needs a unique key"
    )]
    DuplicateKey {
        /// The key, lossily decoded as UTF-8 for display.
        key: String,
        /// Caller index of the first backend with this key.
        first_index: usize,
        /// Caller index of the second backend with this key.
        second_index: usize,
    },
}

/// A built Maglev table: `M` slots, each holding an index into the caller's backend slice.
///
/// Immutable once built; `clone` shares the slots (an `Arc`), so a control plane that keeps an
/// unchanged VIP's table in its next tables version copies nothing. Rebuild on any backend change.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Invariant: `slots.len() == size as usize`, and `size` is prime. `Arc<[u16]>` points at
    /// the slots like a `Box` does (no extra indirection on lookup).
    slots: Arc<[u16]>,
    size: u32,
    /// `floor(2^64 / size)`, so `lookup` reduces modulo `size` with a multiply, not a divide.
    reciprocal: u64,
    backend_count: usize,
    fingerprint: u64,
}

/// Per live backend state during population, kept to 12 bytes so 1000 backends fit in L1.
#[derive(Clone, Copy)]
struct Cursor {
    /// Next slot in this backend's permutation: `(offset + next * skip) % M`.
    position: u32,
    skip: u32,
    /// Slots still owed to this backend (its quota minus what it holds).
    remaining: u32,
}

impl MaglevTable {
    /// Builds the table for `backends` with `table_size` slots.
    ///
    /// `lookup` returns indices into `backends`. The result depends only on the set of
    /// `(key, weight)` pairs and `table_size`, never on the order of `backends`. For balance within
    /// 1 % keep `table_size` above 100 times the number of backends.
    pub fn build(backends: &[BackendSpec<'_>], table_size: u32) -> Result<MaglevTable, BuildError> {
        if table_size > MAX_TABLE_SIZE {
            return Err(BuildError::TableTooLarge {
                table_size,
                max: MAX_TABLE_SIZE,
            });
        }
        if !is_prime(table_size) {
            return Err(BuildError::TableSizeNotPrime { table_size });
        }
        if backends.len() > MAX_BACKENDS {
            return Err(BuildError::TooManyBackends {
                count: backends.len(),
                max: MAX_BACKENDS,
            });
        }
        // Caller indices in key order. `u16` is lossless: len <= MAX_BACKENDS was checked above.
        let mut by_key: Vec<u16> = (0..backends.len() as u16).collect();
        by_key.sort_unstable_by(|&a, &b| {
            backends[usize::from(a)]
                .key
                .cmp(backends[usize::from(b)].key)
        });
        for pair in by_key.windows(2) {
            let (a, b) = (usize::from(pair[0]), usize::from(pair[1]));
            if backends[a].key == backends[b].key {
                return Err(BuildError::DuplicateKey {
                    key: String::from_utf8_lossy(backends[a].key).into_owned(),
                    first_index: a.min(b),
                    second_index: a.max(b),
                });
            }
        }
        // Live backends (weight > 0) in key order: rank r -> caller index live[r].
        let live: Vec<u16> = by_key
            .into_iter()
            .filter(|&i| backends[usize::from(i)].weight > 0)
            .collect();
        if live.len() > table_size as usize {
            return Err(BuildError::TableTooSmall {
                table_size,
                live_backends: live.len(),
            });
        }

        let mut slots = vec![EMPTY_SLOT; table_size as usize].into_boxed_slice();
        if !live.is_empty() {
            let weights: Vec<u32> = live
                .iter()
                .map(|&i| backends[usize::from(i)].weight)
                .collect();
            let quotas = quotas(&weights, table_size);
            let cursors: Vec<Cursor> = live
                .iter()
                .zip(&quotas)
                .map(|(&i, &quota)| {
                    let key = backends[usize::from(i)].key;
                    let offset = siphash13(K_OFFSET, key) % u64::from(table_size);
                    let skip = siphash13(K_SKIP, key) % u64::from(table_size - 1) + 1;
                    Cursor {
                        // Both < table_size, so they fit in u32.
                        position: offset as u32,
                        skip: skip as u32,
                        remaining: quota,
                    }
                })
                .collect();
            populate(&mut slots, cursors, &live);
        }
        let fingerprint = fingerprint(&slots, backends, &live);
        Ok(MaglevTable {
            slots: Arc::from(slots),
            size: table_size,
            // table_size >= 2 (prime), so the quotient is <= 2^63 and fits.
            reciprocal: ((1u128 << 64) / u128::from(table_size)) as u64,
            backend_count: backends.len(),
            fingerprint,
        })
    }

    /// The backend for a flow: an index into the `backends` slice given to [`build`](Self::build),
    /// or `None` iff no backend had a weight above 0. Slot = `flow_hash % M`.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> Option<u16> {
        match self.slots.get(self.slot_of(flow_hash)) {
            Some(&index) if index != EMPTY_SLOT => Some(index),
            _ => None,
        }
    }

    /// `flow_hash % M`, by [`barrett_mod`]: about 4x cheaper than a 64-bit divide.
    #[inline]
    fn slot_of(&self, flow_hash: u64) -> usize {
        // The result is < size, which fits in usize; `get` in `lookup` cannot miss since
        // slots.len() == size.
        barrett_mod(flow_hash, self.size, self.reciprocal) as usize
    }

    /// Number of slots `M`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Number of backends in the slice the table was built from (including weight 0 ones).
    pub fn backend_count(&self) -> usize {
        self.backend_count
    }

    /// The raw slots: caller backend indices, [`EMPTY_SLOT`] everywhere when the table is empty.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// Slots held by each backend index `0..backend_count`; slots pointing at or beyond
    /// `backend_count` are not counted.
    pub fn slot_counts(&self, backend_count: usize) -> Vec<u32> {
        let mut counts = vec![0u32; backend_count];
        for &index in self.slots.iter() {
            if let Some(count) = counts.get_mut(usize::from(index)) {
                *count += 1;
            }
        }
        counts
    }

    /// Stable 64-bit digest of the table, for golden tests and for `vipctl` to show that two
    /// appliances hold the same table.
    ///
    /// It covers the table size, the live backends' keys and weights, and every slot expressed as
    /// the owner's rank in key order, so it does not depend on the order of the caller's slice
    /// (unlike [`slots`](Self::slots)). Exact definition in `docs/maglev.md`.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// `value % modulus` given `reciprocal = floor(2^64 / modulus)`, for `modulus >= 2`.
///
/// The estimated quotient `value * reciprocal >> 64` is the true quotient or one less, so the
/// remainder estimate is below `2 * modulus` and one conditional subtraction finishes.
#[inline]
fn barrett_mod(value: u64, modulus: u32, reciprocal: u64) -> u64 {
    let modulus = u64::from(modulus);
    let quotient = ((u128::from(value) * u128::from(reciprocal)) >> 64) as u64;
    let rest = value - quotient * modulus; // quotient <= value / modulus: no underflow
    if rest >= modulus {
        rest - modulus
    } else {
        rest
    }
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The slot array is up to 1.3 MB; print its digest instead.
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("backend_count", &self.backend_count)
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish()
    }
}

/// Slots owed to each live backend (`weights` in key order, all > 0), summing to `table_size`.
///
/// Largest remainder: `floor(M * w / W)` each, then one more slot to the `M - sum` backends with the
/// largest remainder `M * w mod W` (lower rank first on ties). A backend left at 0 (weight below
/// `W / M`) then takes one slot from the backend holding the most (lower rank first on ties).
/// With equal weights this gives `floor(M / n) + 1` to the first `M mod n` backends, which is
/// exactly what the paper's round-robin hands out.
fn quotas(weights: &[u32], table_size: u32) -> Vec<u32> {
    let table_size = u64::from(table_size);
    let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    // M * w < 2^64 because both are u32; the quotient is <= M, so it fits in u32.
    let mut quotas: Vec<u32> = weights
        .iter()
        .map(|&w| (table_size * u64::from(w) / total_weight) as u32)
        .collect();
    let assigned: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    let leftover = (table_size - assigned) as usize; // < weights.len(): each floor lost < 1
    if leftover > 0 {
        let mut order: Vec<usize> = (0..weights.len()).collect();
        let remainder = |rank: usize| table_size * u64::from(weights[rank]) % total_weight;
        order.sort_by_key(|&rank| (Reverse(remainder(rank)), rank));
        for &rank in &order[..leftover] {
            quotas[rank] += 1;
        }
    }
    if quotas.contains(&0) {
        // Rare: only for weights below W / M. The heap yields the largest quota, lower rank first.
        let mut heap: BinaryHeap<(u32, Reverse<usize>)> = quotas
            .iter()
            .enumerate()
            .map(|(rank, &q)| (q, Reverse(rank)))
            .collect();
        for rank in 0..quotas.len() {
            if quotas[rank] != 0 {
                continue;
            }
            // Live count <= M guarantees some quota >= 2 while a 0 remains, so the heap is never
            // empty here and the donor keeps at least 1 slot.
            while let Some((q, Reverse(donor))) = heap.pop() {
                if q != quotas[donor] {
                    continue; // stale entry
                }
                quotas[donor] -= 1;
                heap.push((quotas[donor], Reverse(donor)));
                break;
            }
            quotas[rank] = 1;
        }
    }
    quotas
}

/// The paper's population loop over live backends in key order, with quotas.
///
/// Each round, every backend still owed slots claims, in rank order, the next slot of its
/// permutation that is still free. `live[rank]` is the caller index written into the slot.
///
/// Two things keep it fast without changing the result: occupancy lives in a bitmap (M / 8 bytes,
/// 80 KiB for the large table) so the probes, which dominate the cost, stay in L1/L2; and a
/// backend probes four permutation positions per step with one branch, then takes the first free
/// one, which is the same slot the one-at-a-time loop would find.
fn populate(slots: &mut [u16], mut cursors: Vec<Cursor>, live: &[u16]) {
    let table_size = slots.len() as u32; // == size, a u32
    let mut occupied = vec![0u64; slots.len().div_ceil(64)];
    // Positions are < table_size, so word indices are < occupied.len().
    let is_free = |occupied: &[u64], position: u32| {
        occupied[(position >> 6) as usize] & (1u64 << (position & 63)) == 0
    };
    // Ranks still owed slots, in rank order; compacted in place after each round.
    let mut active: Vec<u32> = (0..cursors.len() as u32).collect();
    active.retain(|&rank| cursors[rank as usize].remaining > 0);
    while !active.is_empty() {
        let mut kept = 0;
        for turn in 0..active.len() {
            let rank = active[turn] as usize; // active holds ranks < cursors.len()
            let cursor = &mut cursors[rank];
            let skip = cursor.skip;
            let skip2 = add_mod(skip, skip, table_size);
            let skip3 = add_mod(skip2, skip, table_size);
            let skip4 = add_mod(skip3, skip, table_size);
            let mut p0 = cursor.position;
            // Terminates: the permutation visits every slot (M prime, skip < M) and the quotas
            // sum to M, so a backend owed a slot always finds a free one.
            let claimed = loop {
                let candidates = [
                    p0,
                    add_mod(p0, skip, table_size),
                    add_mod(p0, skip2, table_size),
                    add_mod(p0, skip3, table_size),
                ];
                // Bit k set = candidate k is free; one well-predicted branch per four probes.
                let free_mask = candidates.iter().enumerate().fold(0u32, |mask, (k, &p)| {
                    mask | u32::from(is_free(&occupied, p)) << k
                });
                if free_mask != 0 {
                    // trailing_zeros of a non-zero 4-bit mask is < 4.
                    break candidates[(free_mask.trailing_zeros() & 3) as usize];
                }
                p0 = add_mod(p0, skip4, table_size);
            };
            occupied[(claimed >> 6) as usize] |= 1u64 << (claimed & 63);
            slots[claimed as usize] = live[rank];
            cursor.position = add_mod(claimed, skip, table_size);
            cursor.remaining -= 1;
            if cursor.remaining > 0 {
                active[kept] = rank as u32;
                kept += 1;
            }
        }
        active.truncate(kept);
    }
}

/// `(a + b) % m` for `a, b < m`, without `%`, without overflow and without a branch (whether
/// the sum wraps is a coin flip, and a mispredicted branch here dominated the build time).
#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    // a + b < 2m < 2^33: in u64, `sum - m` is negative (top bit set) exactly when sum < m.
    let sum = u64::from(a) + u64::from(b);
    let reduced = sum.wrapping_sub(u64::from(m));
    let keep_mask = 0u64.wrapping_sub(reduced >> 63); // all ones when sum < m
    (reduced.wrapping_add(u64::from(m) & keep_mask)) as u32
}

/// SipHash-1-3 with [`K_FINGERPRINT`] over, all integers little-endian:
/// `M: u32`, live count `u32`, then per live backend in key order `key_len: u32, key, weight: u32`,
/// then per slot the owner's rank in key order as `u16` (`0xffff` for empty).
fn fingerprint(slots: &[u16], backends: &[BackendSpec<'_>], live: &[u16]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(K_FINGERPRINT[0], K_FINGERPRINT[1]);
    hasher.write(&(slots.len() as u32).to_le_bytes());
    hasher.write(&(live.len() as u32).to_le_bytes());
    let mut rank_of = vec![EMPTY_SLOT; backends.len()];
    for (rank, &index) in live.iter().enumerate() {
        let backend = &backends[usize::from(index)];
        // Keys longer than 4 GiB do not exist in practice; saturate rather than wrap.
        hasher.write(
            &u32::try_from(backend.key.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        hasher.write(backend.key);
        hasher.write(&backend.weight.to_le_bytes());
        rank_of[usize::from(index)] = rank as u16; // rank < live.len() <= MAX_BACKENDS
    }
    // Hash the ranks in chunks: one `write` per slot would dominate the build time.
    let mut buffer = [0u8; 2048];
    for chunk in slots.chunks(buffer.len() / 2) {
        for (bytes, &index) in buffer.chunks_exact_mut(2).zip(chunk) {
            let rank = rank_of
                .get(usize::from(index))
                .copied()
                .unwrap_or(EMPTY_SLOT);
            bytes.copy_from_slice(&rank.to_le_bytes());
        }
        hasher.write(&buffer[..chunk.len() * 2]);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{flow_hash, DEFAULT_TABLE_SIZE, LARGE_TABLE_SIZE};
    use proptest::prelude::*;

    /// Keys "10.0.{i/256}.{i%256}:80" for i in 0..n, the set used by the golden tests.
    fn golden_keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256).into_bytes())
            .collect()
    }

    fn specs<'a>(keys: &'a [Vec<u8>], weights: &[u32]) -> Vec<BackendSpec<'a>> {
        keys.iter()
            .zip(weights)
            .map(|(key, &weight)| BackendSpec { key, weight })
            .collect()
    }

    /// The table as a key per slot, so tables built from differently ordered slices compare.
    fn slot_keys<'a>(table: &MaglevTable, backends: &[BackendSpec<'a>]) -> Vec<Option<&'a [u8]>> {
        table
            .slots()
            .iter()
            .map(|&i| backends.get(usize::from(i)).map(|b| b.key))
            .collect()
    }

    /// The paper's pseudocode 1, literally (with `%` and a `next` array), over backends in the
    /// order given. Used to check that equal weights give exactly the paper's table.
    fn paper_table(keys: &[&[u8]], table_size: u32) -> Vec<u16> {
        let m = u64::from(table_size);
        let offsets: Vec<u64> = keys.iter().map(|k| siphash13(K_OFFSET, k) % m).collect();
        let skips: Vec<u64> = keys
            .iter()
            .map(|k| siphash13(K_SKIP, k) % (m - 1) + 1)
            .collect();
        let mut next = vec![0u64; keys.len()];
        let mut entry = vec![EMPTY_SLOT; table_size as usize];
        let mut filled = 0;
        loop {
            for i in 0..keys.len() {
                let mut c = (offsets[i] + next[i] * skips[i]) % m;
                while entry[c as usize] != EMPTY_SLOT {
                    next[i] += 1;
                    c = (offsets[i] + next[i] * skips[i]) % m;
                }
                entry[c as usize] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return entry;
                }
            }
        }
    }

    /// docs/maglev.md transcribed as plainly as possible (sorting, largest remainder with an
    /// O(n^2) fix-up, `%` permutation walk), independent of `quotas` and `populate`.
    fn documented_table(backends: &[BackendSpec<'_>], table_size: u32) -> Vec<u16> {
        let m = u64::from(table_size);
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by(|&a, &b| backends[a].key.cmp(backends[b].key));
        let live: Vec<usize> = order
            .into_iter()
            .filter(|&i| backends[i].weight > 0)
            .collect();
        let mut entry = vec![EMPTY_SLOT; table_size as usize];
        if live.is_empty() {
            return entry;
        }
        let w: Vec<u64> = live
            .iter()
            .map(|&i| u64::from(backends[i].weight))
            .collect();
        let total: u64 = w.iter().sum();
        let mut quota: Vec<u64> = w.iter().map(|&wi| m * wi / total).collect();
        let mut by_remainder: Vec<usize> = (0..live.len()).collect();
        by_remainder.sort_by_key(|&r| (std::cmp::Reverse(m * w[r] % total), r));
        let leftover = (m - quota.iter().sum::<u64>()) as usize;
        for &r in &by_remainder[..leftover] {
            quota[r] += 1;
        }
        for r in 0..live.len() {
            if quota[r] == 0 {
                let donor = (0..live.len())
                    .max_by_key(|&j| (quota[j], std::cmp::Reverse(j)))
                    .unwrap();
                quota[donor] -= 1;
                quota[r] = 1;
            }
        }
        let offset: Vec<u64> = live
            .iter()
            .map(|&i| siphash13(K_OFFSET, backends[i].key) % m)
            .collect();
        let skip: Vec<u64> = live
            .iter()
            .map(|&i| siphash13(K_SKIP, backends[i].key) % (m - 1) + 1)
            .collect();
        let mut next = vec![0u64; live.len()];
        let mut filled = vec![0u64; live.len()];
        let mut total_filled = 0;
        while total_filled < m {
            for r in 0..live.len() {
                if filled[r] == quota[r] {
                    continue;
                }
                let mut c = (offset[r] + next[r] * skip[r]) % m;
                while entry[c as usize] != EMPTY_SLOT {
                    next[r] += 1;
                    c = (offset[r] + next[r] * skip[r]) % m;
                }
                entry[c as usize] = live[r] as u16;
                next[r] += 1;
                filled[r] += 1;
                total_filled += 1;
            }
        }
        entry
    }

    // Golden fingerprints. FROZEN: they pin the hash keys, the permutation, the quota rule, the
    // tie-breaking order and the fingerprint encoding. If one of these tests fails, tables built
    // by this version differ from tables built by released versions, and appliances running
    // both would send the same flow to different backends when ECMP moves it. Fix the code,
    // never the constants. (They were computed once by this code and cross-checked against an
    // independent Python implementation of docs/maglev.md.)
    const GOLDEN_EQUAL_DEFAULT: u64 = 0x5f26_7617_5be1_5cf5;
    const GOLDEN_EQUAL_LARGE: u64 = 0x8c2f_517d_a97a_f026;
    const GOLDEN_WEIGHTED_DEFAULT: u64 = 0x1713_2607_606e_1add;
    const GOLDEN_WEIGHTED_LARGE: u64 = 0x9d70_0e10_9bdd_e7fb;

    /// Weights for the weighted golden set: 0 (draining) to 9, a mix of everything.
    fn golden_weights(n: usize) -> Vec<u32> {
        (0..n).map(|i| ((i * 7) % 10) as u32).collect()
    }

    #[test]
    fn golden_fingerprints() {
        let keys = golden_keys(1000);
        let equal = specs(&keys, &[1; 1000]);
        let weighted = specs(&keys, &golden_weights(1000));
        let fp = |b: &[BackendSpec<'_>], m| MaglevTable::build(b, m).unwrap().fingerprint();
        assert_eq!(
            fp(&equal, DEFAULT_TABLE_SIZE),
            GOLDEN_EQUAL_DEFAULT,
            "equal, default size"
        );
        assert_eq!(
            fp(&equal, LARGE_TABLE_SIZE),
            GOLDEN_EQUAL_LARGE,
            "equal, large size"
        );
        assert_eq!(
            fp(&weighted, DEFAULT_TABLE_SIZE),
            GOLDEN_WEIGHTED_DEFAULT,
            "weighted, default"
        );
        assert_eq!(
            fp(&weighted, LARGE_TABLE_SIZE),
            GOLDEN_WEIGHTED_LARGE,
            "weighted, large"
        );
    }

    /// A few slots of the golden table in clear, so a failure shows where the tables diverge.
    #[test]
    fn golden_lookups() {
        let keys = golden_keys(1000);
        let equal = specs(&keys, &[1; 1000]);
        let table = MaglevTable::build(&equal, DEFAULT_TABLE_SIZE).unwrap();
        let got: Vec<u16> = [0usize, 1, 2, 65_535, 65_536]
            .iter()
            .map(|&s| table.slots()[s])
            .collect();
        assert_eq!(got, GOLDEN_EQUAL_DEFAULT_SLOTS);
        let flow = flow_hash(b"10.0.0.7:80");
        assert_eq!(
            table.lookup(flow),
            Some(table.slots()[(flow % 65_537) as usize])
        );
    }

    const GOLDEN_EQUAL_DEFAULT_SLOTS: [u16; 5] = [981, 123, 640, 416, 596];

    #[test]
    fn equal_weights_give_the_papers_table() {
        for (n, m) in [
            (1usize, 7u32),
            (3, 7),
            (7, 7),
            (10, 101),
            (100, 65_537),
            (1000, 65_537),
        ] {
            let keys = golden_keys(n);
            let backends = specs(&keys, &vec![3; n]);
            let table = MaglevTable::build(&backends, m).unwrap();
            let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            // golden_keys are not generated in byte order ("10.0.0.10" < "10.0.0.2"): sort.
            let mut sorted = key_refs.clone();
            sorted.sort();
            let paper: Vec<Option<&[u8]>> = paper_table(&sorted, m)
                .iter()
                .map(|&i| Some(sorted[usize::from(i)]))
                .collect();
            assert_eq!(slot_keys(&table, &backends), paper, "n = {n}, m = {m}");
        }
    }

    #[test]
    fn empty_and_draining_sets_give_an_empty_table() {
        let keys = golden_keys(3);
        for backends in [specs(&keys, &[]), specs(&keys, &[0, 0, 0])] {
            let table = MaglevTable::build(&backends, 13).unwrap();
            assert_eq!(table.size(), 13);
            assert!(table.slots().iter().all(|&s| s == EMPTY_SLOT));
            assert_eq!(table.lookup(0), None);
            assert_eq!(table.lookup(u64::MAX), None);
            assert_eq!(table.slot_counts(backends.len()), vec![0; backends.len()]);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let keys = golden_keys(3);
        let backends = specs(&keys, &[1, 1, 1]);
        for m in [4_294_967_291, MAX_TABLE_SIZE + 43] {
            // Both prime, both too large.
            assert_eq!(
                MaglevTable::build(&backends, m),
                Err(BuildError::TableTooLarge {
                    table_size: m,
                    max: MAX_TABLE_SIZE
                })
            );
        }
        for m in [0, 1, 4, 9, 65_536, MAX_TABLE_SIZE] {
            assert_eq!(
                MaglevTable::build(&backends, m),
                Err(BuildError::TableSizeNotPrime { table_size: m })
            );
        }
        assert_eq!(
            MaglevTable::build(&backends, 2),
            Err(BuildError::TableTooSmall {
                table_size: 2,
                live_backends: 3
            })
        );
        // Draining backends do not count against the size.
        assert!(MaglevTable::build(&specs(&keys, &[1, 0, 1]), 2).is_ok());
        assert!(MaglevTable::build(&backends, 3).is_ok());

        let dup = [
            BackendSpec {
                key: b"a",
                weight: 1,
            },
            BackendSpec {
                key: b"b",
                weight: 1,
            },
            BackendSpec {
                key: b"a",
                weight: 0,
            },
        ];
        let err = MaglevTable::build(&dup, 13).unwrap_err();
        assert_eq!(
            err,
            BuildError::DuplicateKey {
                key: "a".into(),
                first_index: 0,
                second_index: 2
            }
        );
        assert!(err.to_string().contains("same key \"a\""), "{err}");

        let many_keys = golden_keys(MAX_BACKENDS + 1);
        let many = specs(&many_keys, &vec![1; MAX_BACKENDS + 1]);
        assert_eq!(
            MaglevTable::build(&many, LARGE_TABLE_SIZE),
            Err(BuildError::TooManyBackends {
                count: MAX_BACKENDS + 1,
                max: MAX_BACKENDS
            })
        );
        // The maximum itself works, and the largest index is not EMPTY_SLOT.
        let most = &many[..MAX_BACKENDS];
        let table = MaglevTable::build(most, LARGE_TABLE_SIZE).unwrap();
        assert!(table.slots().iter().all(|&s| usize::from(s) < MAX_BACKENDS));
        assert!(table.slot_counts(MAX_BACKENDS).iter().all(|&c| c >= 9));
    }

    #[test]
    fn tiny_weights_still_get_a_slot() {
        let keys = golden_keys(4);
        let backends = specs(&keys, &[u32::MAX, 1, u32::MAX, 1]);
        let table = MaglevTable::build(&backends, 7).unwrap();
        let counts = table.slot_counts(4);
        assert_eq!(counts.iter().sum::<u32>(), 7);
        assert!(counts.iter().all(|&c| c >= 1), "{counts:?}");
        assert_eq!(counts[0] + counts[2], 5);
        assert_eq!(counts, [2, 1, 3, 1]);
        // Every live backend is reachable, down to one slot each.
        let table = MaglevTable::build(&specs(&keys[..3], &[u32::MAX, 1, 1]), 3).unwrap();
        assert_eq!(table.slot_counts(3), [1, 1, 1]);
    }

    #[test]
    fn quotas_follow_largest_remainder() {
        assert_eq!(quotas(&[1, 1, 1], 7), [3, 2, 2]);
        assert_eq!(quotas(&[1, 2, 4], 7), [1, 2, 4]);
        assert_eq!(quotas(&[1, 1, 2], 7), [2, 2, 3]); // 1.75 1.75 3.5: ties go to lower rank
        assert_eq!(quotas(&[5, 5, 5, 5, 5, 1000], 7), [1, 1, 1, 1, 1, 2]);
        assert_eq!(quotas(&[1, 1000, 1000], 3), [1, 1, 1]);
        assert_eq!(quotas(&[1, 3000, 1000], 3), [1, 1, 1]);
        assert_eq!(quotas(&[1, 3000, 1000], 5), [1, 3, 1]);
    }

    #[test]
    fn debug_is_short() {
        let keys = golden_keys(10);
        let table = MaglevTable::build(&specs(&keys, &[1; 10]), LARGE_TABLE_SIZE).unwrap();
        let text = format!("{table:?}");
        assert!(text.len() < 120, "{text}");
        assert!(text.contains("size: 655373"), "{text}");
    }

    /// 1..max_n distinct keys of 1..12 random bytes.
    fn key_set(max_n: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..12), 1..max_n)
            .prop_map(|set| set.into_iter().collect())
    }

    /// Sizes above 100x any backend count the balance properties are tested with.
    const BALANCED_SIZES: [u32; 3] = [10_007, 32_771, DEFAULT_TABLE_SIZE];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn every_slot_is_filled_and_weight_zero_gets_nothing(
            keys in key_set(60),
            seed in any::<u64>(),
            m in prop::sample::select(vec![61u32, 97, 1_009, 10_007]),
        ) {
            // Weights 0..=4 from the seed; make sure at least one is live.
            let mut weights: Vec<u32> =
                (0..keys.len()).map(|i| ((seed >> (i % 32 * 2)) & 3) as u32 + u32::from(i % 5 == 1)).collect();
            weights[0] = weights[0].max(1);
            let backends = specs(&keys, &weights);
            let table = MaglevTable::build(&backends, m).unwrap();
            prop_assert!(table.slots().iter().all(|&s| usize::from(s) < keys.len()));
            let counts = table.slot_counts(keys.len());
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i] == 0, w == 0, "backend {} weight {} count {}", i, w, counts[i]);
            }
            prop_assert_eq!(counts.iter().sum::<u32>(), m);
            // Determinism.
            prop_assert_eq!(&MaglevTable::build(&backends, m).unwrap(), &table);
        }

        #[test]
        fn build_matches_the_documented_algorithm(
            keys in key_set(40),
            weight_seed in any::<u64>(),
            m in prop::sample::select(vec![2u32, 3, 5, 7, 11, 13, 41, 101, 1_009, 10_007]),
        ) {
            // Weights 0..=3, with an occasional huge one to exercise the zero-quota fix-up.
            let weights: Vec<u32> = keys
                .iter()
                .map(|k| match crate::siphash13([weight_seed, 2], k) % 16 {
                    0 => u32::MAX,
                    x => (x % 4) as u32,
                })
                .collect();
            let backends = specs(&keys, &weights);
            let live = weights.iter().filter(|&&w| w > 0).count();
            prop_assume!(live <= m as usize);
            let table = MaglevTable::build(&backends, m).unwrap();
            prop_assert_eq!(table.slots(), &documented_table(&backends, m)[..]);
        }

        #[test]
        fn barrett_mod_is_mod(
            values in proptest::collection::vec(any::<u64>(), 64),
            modulus in 2u32..,
        ) {
            let reciprocal = ((1u128 << 64) / u128::from(modulus)) as u64;
            let m = u64::from(modulus);
            let edges = [0, 1, m - 1, m, m + 1, u64::MAX, u64::MAX - 1, u64::MAX / m * m, u64::MAX / m * m - 1];
            for v in values.into_iter().chain(edges) {
                prop_assert_eq!(barrett_mod(v, modulus, reciprocal), v % m, "value {}", v);
            }
        }

        #[test]
        fn lookup_is_hash_mod_size(
            hashes in proptest::collection::vec(any::<u64>(), 64),
            m in prop::sample::select(vec![2u32, 3, 7, 65_521, DEFAULT_TABLE_SIZE]),
        ) {
            let keys = golden_keys(2);
            let table = MaglevTable::build(&specs(&keys, &[1, 1]), m).unwrap();
            for h in hashes.into_iter().chain([0, u64::MAX, u64::from(m)]) {
                prop_assert_eq!(table.lookup(h), Some(table.slots()[(h % u64::from(m)) as usize]));
            }
        }

        #[test]
        fn order_does_not_matter(
            (keys, shuffled) in key_set(60).prop_flat_map(|k| (Just(k.clone()), Just(k).prop_shuffle())),
            weight_seed in any::<u64>(),
        ) {
            let weight_of = |key: &[u8]| (crate::siphash13([weight_seed, 0], key) % 4) as u32;
            let a: Vec<BackendSpec<'_>> =
                keys.iter().map(|k| BackendSpec { key: k, weight: weight_of(k) }).collect();
            let b: Vec<BackendSpec<'_>> =
                shuffled.iter().map(|k| BackendSpec { key: k, weight: weight_of(k) }).collect();
            let ta = MaglevTable::build(&a, 1_009).unwrap();
            let tb = MaglevTable::build(&b, 1_009).unwrap();
            prop_assert_eq!(slot_keys(&ta, &a), slot_keys(&tb, &b));
            prop_assert_eq!(ta.fingerprint(), tb.fingerprint());
            // A draining backend added to the set changes nothing either.
            let mut c = b.clone();
            c.insert(c.len() / 2, BackendSpec { key: b"draining extra key, longer than any", weight: 0 });
            let tc = MaglevTable::build(&c, 1_009).unwrap();
            prop_assert_eq!(slot_keys(&tc, &c), slot_keys(&ta, &a));
            prop_assert_eq!(tc.fingerprint(), ta.fingerprint());
        }

        #[test]
        fn weighted_shares_are_within_one_slot(
            keys in key_set(100),
            weight_seed in any::<u64>(),
            m in prop::sample::select(BALANCED_SIZES.to_vec()),
        ) {
            let weights: Vec<u32> =
                keys.iter().map(|k| (crate::siphash13([weight_seed, 1], k) % 100) as u32 + 1).collect();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let table = MaglevTable::build(&specs(&keys, &weights), m).unwrap();
            for (i, &count) in table.slot_counts(keys.len()).iter().enumerate() {
                let exact = f64::from(m) * f64::from(weights[i]) / total as f64;
                prop_assert!((f64::from(count) - exact).abs() < 1.0,
                    "backend {} weight {}: {} slots, exact share {}", i, weights[i], count, exact);
            }
        }

        #[test]
        fn equal_weights_balance_within_one_percent(
            keys in key_set(100),
            m in prop::sample::select(BALANCED_SIZES.to_vec()),
        ) {
            prop_assume!(m as usize > 100 * keys.len());
            let table = MaglevTable::build(&specs(&keys, &vec![1; keys.len()]), m).unwrap();
            let counts = table.slot_counts(keys.len());
            let max = *counts.iter().max().unwrap();
            let min = *counts.iter().min().unwrap();
            prop_assert!(f64::from(max) / f64::from(min) <= 1.01, "max {} min {}", max, min);
        }

        /// Whatever the keys, a leaving backend keeps no slot, and the others keep theirs but
        /// for a bounded cascade (the disruption bound itself is checked on address keys below:
        /// rare key sets, where a survivor's permutation is related to the leaving backend's,
        /// have several percent of extra moves; see docs/maglev.md).
        #[test]
        fn one_backend_leaving_loses_all_its_slots(
            keys in key_set(100),
            leaving in any::<prop::sample::Index>(),
        ) {
            let m = DEFAULT_TABLE_SIZE;
            prop_assume!(keys.len() >= 2);
            let n = keys.len();
            let before_specs = specs(&keys, &vec![1; n]);
            let before = MaglevTable::build(&before_specs, m).unwrap();
            let gone = leaving.index(n);
            let mut after_specs = before_specs.clone();
            after_specs[gone].weight = 0; // draining == gone, as far as the table is concerned
            let after = MaglevTable::build(&after_specs, m).unwrap();
            prop_assert_eq!(after.slot_counts(n)[gone], 0);
            let moved = before.slots().iter().zip(after.slots()).filter(|(a, b)| a != b).count();
            let share = moved as f64 / f64::from(m);
            prop_assert!(share >= 1.0 / n as f64 - 0.01, "n {} moved {:.4}", n, share);
            prop_assert!(share <= 1.0 / n as f64 + 0.15, "n {} moved {:.4}", n, share);
        }
    }

    /// Bound from the brief: `1/N + 1 %` when `M > 100 N`, at the default size, for backends
    /// named as vipd names them (`ip:port`): every N from 2 to 100, the first, middle and last
    /// backend leaving. Maglev's extra disruption depends on M: measured worst cases are about
    /// 1.7 % at M = 10,007, 1.02 % at M = 65,537 with N = 400, and 0.35 % at M = 655,373 (see
    /// docs/maglev.md); the large size with N = 1000 is checked below.
    #[test]
    fn one_backend_leaving_moves_little_more_than_its_share() {
        let m = DEFAULT_TABLE_SIZE;
        let all = golden_keys(100);
        for n in 2..=100 {
            let before_specs = specs(&all[..n], &vec![1; n]);
            let before = MaglevTable::build(&before_specs, m).unwrap();
            for gone in [0, n / 2, n - 1] {
                let mut after_specs = before_specs.clone();
                after_specs[gone].weight = 0;
                let after = MaglevTable::build(&after_specs, m).unwrap();
                let moved = before
                    .slots()
                    .iter()
                    .zip(after.slots())
                    .filter(|(a, b)| a != b)
                    .count();
                let share = moved as f64 / f64::from(m);
                assert!(
                    share <= 1.0 / n as f64 + 0.01,
                    "n {n} gone {gone} moved {share:.4}"
                );
                assert_eq!(after.slot_counts(n)[gone], 0);
            }
        }
    }

    /// The disruption bound at the large size with 1000 backends, for both a leave and a join.
    #[test]
    fn disruption_at_large_size() {
        let keys = golden_keys(1001);
        let m = LARGE_TABLE_SIZE;
        let mut backends = specs(&keys, &[1; 1001]);
        backends[1000].weight = 0; // not yet joined
        let base = MaglevTable::build(&backends, m).unwrap();
        let moved = |other: &MaglevTable| {
            base.slots()
                .iter()
                .zip(other.slots())
                .filter(|(a, b)| a != b)
                .count() as f64
                / f64::from(m)
        };
        let mut left = backends.clone();
        left[500].weight = 0;
        let share = moved(&MaglevTable::build(&left, m).unwrap());
        assert!(
            share > 1.0 / 1000.0 && share <= 1.0 / 1000.0 + 0.01,
            "leave moved {share:.4}"
        );
        let mut joined = backends.clone();
        joined[1000].weight = 1;
        let share = moved(&MaglevTable::build(&joined, m).unwrap());
        assert!(
            share > 1.0 / 1001.0 && share <= 1.0 / 1001.0 + 0.01,
            "join moved {share:.4}"
        );
    }
}
