//! The fixed-capacity flow table: layout, probing, the new-flow budget, expiry and the client-side
//! TCP state machine.
//!
//! # Layout
//!
//! Slots are grouped in buckets of 16 lanes. Each bucket has 16 one-byte *tags* packed in a
//! `u128` (0 = empty, `0x80 | 7 hash bits` = occupied, `BLOCKED` = a lane past the capacity)
//! and a 16-bit mask of the lanes holding new flows ([`FlowState::SynSent`] and
//! [`FlowState::Unconfirmed`] entries). Entries (56 bytes: the
//! 37-byte key, state, backend, last-seen and created times) live in a separate array indexed
//! `bucket * 16 + lane`, exactly `capacity` of them. A flow may live in one of two buckets chosen
//! from the caller's hash mixed with the table seed (two-choice hashing); a lookup compares the
//! tags of both buckets with SWAR byte matching and reads only the entry whose tag matches (a
//! false tag match costs one more key comparison, probability 1/128 per occupied lane). A third
//! per-bucket array keeps, per lane, a one-byte coarse "last seen" tick of new flows (ticks of
//! the power of two >= `syn_ms / 128` ms, 64 ms by default), so a SYN arriving with the
//! new-flow budget full finds the oldest new flow of its buckets without reading any entry.
//! Per flow of capacity that is 56 + 1 + 1/8 + 1 bytes (`memory_bytes() / capacity()` is 58).
//!
//! # Cache misses and [`FlowTable::warm`]
//!
//! With a table far larger than the caches (and 4 KiB pages), every array a packet touches
//! costs a cache miss and a TLB miss. A lookup reads its two buckets' tags and one entry; an
//! insert with the new-flow budget full also reads both buckets' masks and ticks and then
//! overwrites the oldest new flow's entry (which an 8-byte-aligned 56-byte entry may spread over
//! two lines). [`FlowTable::warm`] loads all of these for a group of packets, each kind of line
//! in its own tight loop so that the misses of the group overlap; an entry's first and last
//! fields are placed (`repr(C)`) so that reading both loads every line it spans.
//!
//! The metadata arrays are kept apart rather than in one line per bucket on purpose. Measured
//! on a 2-vCPU KVM guest (`cargo bench -p dataplane --bench pipeline`, 1 M flows in a 2 M table),
//! putting tags, mask and ticks in one 64-byte line per bucket, or tags and ticks in 32 bytes,
//! made a SYN flood's insert cheaper (one metadata line instead of three) but made established
//! lookups 10-40 ns slower: the 16-byte-per-bucket tag array (2 MiB at that size) stays mostly
//! in the last-level cache and the TLB, and 4 or 8 times that does not. Established traffic is
//! the common case, so the compact tags win.
//!
//! # Eviction and the new-flow budget
//!
//! Every insert is a *new flow*: a SYN without ACK creates a SynSent entry, any other first
//! packet (a TCP segment without SYN, a UDP datagram, another protocol) an Unconfirmed one. A
//! flow is *confirmed* (Established, Closing, Udp or Other) only by a second packet
//! ([`FlowTable::touch`]), which a spoofed random-tuple flood never sends.
//!
//! At most `new_flow_percent` of the capacity may hold new flows (the budget). An insert takes,
//! in order: an empty lane of the less loaded candidate bucket, an expired entry of either
//! bucket, the oldest new flow of either bucket; otherwise it fails with `TableFull`. An insert
//! with the budget full may only take the oldest new flow of its buckets; if they hold none, it
//! sweeps `RECLAIM_STEP_SLOTS` more slots for expired entries and, if the budget is still full,
//! fails with `NewFlowBudgetExhausted`. So no insert, whatever its packet, ever evicts a live
//! confirmed entry, and a SYN, ACK, UDP or other flood of random tuples churns only the budget:
//! the other `100 - new_flow_percent` % of the table stays free for flows that confirmed.
//!
//! The price is paid by flows whose first packet is not a SYN: a flow that ECMP moved here
//! from another appliance, or a one-datagram UDP exchange, holds an Unconfirmed entry on the
//! SYN timeout until its second packet, and during a flood it competes with the flood for the
//! budget (a refused insert only means the packet is forwarded by Maglev untracked).

//! # Fill
//!
//! An insert picks the less loaded of its two buckets and never moves other entries, so a table
//! of random keys starts refusing some inserts (`TableFull`) before it is completely full:
//! measured at 16 K, 100 K and 1 M flows, the first refusal comes at 86-89 % fill and inserting
//! `capacity` distinct random keys stores 97.9 % of them (test
//! `fill_with_random_keys_reaches_at_least_95_percent`). Size the table about 10 % above the
//! flow count it must hold.
//!
//! # Adversarial hashes
//!
//! The caller's flow hash is fixed and public, so the table mixes it with a per-table secret
//! seed (Murmur3's finalizer over `hash ^ seed`) before choosing buckets: without the seed an
//! attacker cannot aim distinct hashes at one bucket. Keys whose *caller* hashes collide still
//! share their two buckets (32 lanes); that can only hurt those buckets, and the eviction rules
//! below hold there too.
//!
//! # Time
//!
//! The table reads no clock: every call that needs time takes `now_ms` (monotonic milliseconds,
//! from any origin). An entry is live while `now_ms - last_seen_ms < timeout(state)`; an expired
//! entry is treated as absent and its slot is reused on demand (lazy expiry), and
//! [`FlowTable::expire`] sweeps a bounded number of slots per call.

use crate::key::FlowKey;
use core::fmt;

/// Lanes per bucket (one `u128` of tags).
const LANES: usize = 16;
/// `log2(LANES)`.
const LANE_SHIFT: u32 = 4;
/// Tag of a lane past the configured capacity: not empty, never matches an occupied tag.
const BLOCKED: u8 = 0x01;
/// Bit set in every occupied lane's tag.
const OCCUPIED: u8 = 0x80;
const LOW7: u128 = 0x7f7f_7f7f_7f7f_7f7f_7f7f_7f7f_7f7f_7f7f;
const HIGH: u128 = 0x8080_8080_8080_8080_8080_8080_8080_8080;
const SPLAT: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
/// Slots the insert path sweeps when the new-flow budget is full and its window holds no
/// new flow to evict: bounded extra work that lets the budget recover even when the pipeline's
/// own `expire` calls lag behind.
const RECLAIM_STEP_SLOTS: usize = 64;
/// Hashes [`FlowTable::warm`] handles per pass (the pipeline's group size).
const WARM_GROUP: usize = 32;
/// Smallest capacity accepted: one bucket.
pub const MIN_CAPACITY: usize = LANES;
/// Largest capacity accepted (slot handles are `u32`).
pub const MAX_CAPACITY: usize = 1 << 30;

/// TCP flag bits as found in the TCP header's flags byte.
mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Idle timeouts per flow state, in milliseconds.
///
/// The defaults, and why:
/// - `syn_ms` 5 s: a SYN-only or single-packet (Unconfirmed) entry is the cheapest thing an
///   attacker can create, so it must drain fast; a real client either completes the handshake
///   within one RTT or retransmits its SYN (Linux: after 1 s, then 2 s), which refreshes the
///   entry, and a live flow sends its second packet well within 5 s.
/// - `established_ms` 300 s: the entry only matters when the backend set changes (Maglev maps
///   an unchanged set to the same backend anyway); 5 minutes covers common application idle
///   periods and keepalives while bounding how long a dead flow holds memory.
/// - `closing_ms` 10 s: after FIN or RST only the last ACKs and retransmissions follow.
/// - `udp_ms` 30 s: the usual UDP conntrack idle timeout (Linux `nf_conntrack_udp_timeout`),
///   long enough for DNS retries and typical QUIC idle/keepalive intervals.
/// - `other_ms` 30 s: same reasoning as UDP for GRE, ESP and the rest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// Idle timeout of [`FlowState::SynSent`] and [`FlowState::Unconfirmed`] entries.
    pub syn_ms: u64,
    /// Idle timeout of [`FlowState::Established`] entries.
    pub established_ms: u64,
    /// Idle timeout of [`FlowState::Closing`] entries.
    pub closing_ms: u64,
    /// Idle timeout of [`FlowState::Udp`] entries.
    pub udp_ms: u64,
    /// Idle timeout of [`FlowState::Other`] entries.
    pub other_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            syn_ms: 5_000,
            established_ms: 300_000,
            closing_ms: 10_000,
            udp_ms: 30_000,
            other_ms: 30_000,
        }
    }
}

impl Timeouts {
    /// The idle timeout of `state`.
    #[inline]
    pub fn for_state(&self, state: FlowState) -> u64 {
        match state {
            FlowState::SynSent | FlowState::Unconfirmed => self.syn_ms,
            FlowState::Established => self.established_ms,
            FlowState::Closing => self.closing_ms,
            FlowState::Udp => self.udp_ms,
            FlowState::Other => self.other_ms,
        }
    }
}

/// Construction parameters of a [`FlowTable`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowTableConfig {
    /// Number of flows the table can hold, `MIN_CAPACITY..=MAX_CAPACITY`. Memory is about 58
    /// bytes per flow, all allocated by [`FlowTable::new`].
    pub capacity: usize,
    /// Share of `capacity`, in percent (1..=100), that new flows (SynSent or Unconfirmed) may
    /// occupy; the rest is reserved for flows that proved, by a second packet, that they are not
    /// a spoofed flood. Default 25.
    pub new_flow_percent: u8,
    /// Idle timeouts per state.
    pub timeouts: Timeouts,
    /// Secret mixed into the bucket choice so that an attacker who knows the (fixed, public) flow
    /// hash cannot aim keys at one bucket. Give every lcore a random seed at startup; the default
    /// 0 is fine only for tests.
    pub seed: u64,
}

impl FlowTableConfig {
    /// The default configuration with the given capacity.
    pub fn with_capacity(capacity: usize) -> Self {
        FlowTableConfig {
            capacity,
            ..FlowTableConfig::default()
        }
    }
}

impl Default for FlowTableConfig {
    /// 1,048,576 flows (about 60 MB), 25 % new-flow budget, default timeouts, seed 0.
    fn default() -> Self {
        FlowTableConfig {
            capacity: 1 << 20,
            new_flow_percent: 25,
            timeouts: Timeouts::default(),
            seed: 0,
        }
    }
}

/// Why a [`FlowTableConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Capacity outside `MIN_CAPACITY..=MAX_CAPACITY`.
    #[error("flow table capacity must be {min}..={max} flows, got {capacity}")]
    Capacity {
        /// The refused capacity.
        capacity: usize,
        /// [`MIN_CAPACITY`].
        min: usize,
        /// [`MAX_CAPACITY`].
        max: usize,
    },
    /// `new_flow_percent` outside 1..=100.
    #[error("flow table new_flow_percent must be 1..=100 (share of capacity for new, unconfirmed flows), got {0}")]
    NewFlowPercent(u8),
    /// A timeout of zero would expire every entry at once.
    #[error("flow table timeout {0} must be at least 1 ms, got 0")]
    ZeroTimeout(&'static str),
}

/// The inferred state of a flow, from client -> VIP packets only.
///
/// SynSent and Unconfirmed are *new flows*: they count against the new-flow budget, use the
/// SYN timeout and may be evicted by other new flows. The other states are *confirmed* and are
/// never evicted while live.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum FlowState {
    /// Only SYNs (without ACK) seen so far; counts against the new-flow budget.
    SynSent,
    /// A TCP packet without SYN was seen after a SYN, or two packets of a flow whose first
    /// packet was not a SYN: the client completed (or is past) the handshake.
    Established,
    /// FIN or RST seen; short timeout. Stays Closing until a new SYN reuses the ports.
    Closing,
    /// A UDP flow.
    Udp,
    /// Any other IP protocol.
    Other,
    /// One packet seen, and it was not a SYN without ACK (a TCP segment of a flow ECMP may have
    /// moved here, a UDP datagram, another protocol); counts against the new-flow budget until
    /// the flow's second packet confirms it.
    Unconfirmed,
}

impl FlowState {
    /// True for the states that count against the new-flow budget (SynSent, Unconfirmed).
    #[inline]
    pub fn is_new_flow(self) -> bool {
        matches!(self, FlowState::SynSent | FlowState::Unconfirmed)
    }
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlowState::SynSent => "syn-sent",
            FlowState::Established => "established",
            FlowState::Closing => "closing",
            FlowState::Udp => "udp",
            FlowState::Other => "other",
            FlowState::Unconfirmed => "unconfirmed",
        })
    }
}

/// What the pipeline knows about the packet that hit (or missed) an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketKind {
    /// A TCP segment with its raw flags byte (FIN=0x01 SYN=0x02 RST=0x04 ACK=0x10).
    Tcp {
        /// The TCP header's flags byte.
        flags: u8,
    },
    /// A UDP datagram.
    Udp,
    /// Any other protocol.
    Other,
}

impl PacketKind {
    /// The state of an entry created by this packet: always a new flow.
    fn initial_state(self) -> FlowState {
        match self {
            PacketKind::Tcp { flags } if is_new_syn(flags) => FlowState::SynSent,
            // A non-SYN packet that misses may belong to a flow ECMP moved here from another
            // appliance, or to a spoofed flood: only a second packet tells them apart.
            _ => FlowState::Unconfirmed,
        }
    }

    /// The state an Unconfirmed entry takes on its second packet.
    fn confirmed_state(self) -> FlowState {
        match self {
            PacketKind::Tcp { flags } if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 => {
                FlowState::Closing
            }
            PacketKind::Tcp { flags } if is_new_syn(flags) => FlowState::SynSent,
            PacketKind::Tcp { .. } => FlowState::Established,
            PacketKind::Udp => FlowState::Udp,
            PacketKind::Other => FlowState::Other,
        }
    }
}

/// SYN without ACK: a connection attempt.
#[inline]
fn is_new_syn(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// A copy of one entry's value, for the pipeline and the admin socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowView {
    /// Backend index chosen for the flow.
    pub backend: u32,
    /// Inferred state.
    pub state: FlowState,
    /// `now_ms` when the entry was created (exact for flows younger than 49.7 days, see
    /// [`FlowTable::view`]).
    pub created_ms: u64,
    /// `now_ms` of the last packet.
    pub last_seen_ms: u64,
}

/// A handle to an entry, valid until the next mutating call on the table that issued it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowSlot(u32);

/// Why [`FlowTable::insert`] stored nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum InsertError {
    /// Both candidate buckets hold only live entries that may not be evicted.
    #[error("flow table full: both candidate buckets hold live flows; raise the capacity or lower timeouts")]
    TableFull,
    /// A new flow was refused because new (SynSent or Unconfirmed) flows already fill their
    /// share of the table and none in the candidate buckets could be evicted (likely a SYN, ACK
    /// or UDP flood of spoofed tuples).
    #[error(
        "new-flow budget exhausted (SYN/ACK/UDP flood?); raise new_flow_percent or lower the syn timeout"
    )]
    NewFlowBudgetExhausted,
}

/// Counters kept by the table (mutating calls only; lookups are not counted).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FlowTableStats {
    /// Successful inserts.
    pub inserts: u64,
    /// Inserts refused with [`InsertError::TableFull`].
    pub insert_failed_table_full: u64,
    /// Inserts refused with [`InsertError::NewFlowBudgetExhausted`].
    pub insert_failed_new_flow_budget: u64,
    /// Expired entries whose slot an insert reused.
    pub evicted_expired: u64,
    /// Live new (SynSent or Unconfirmed) entries evicted to make room.
    pub evicted_new_flows: u64,
    /// Expired entries reclaimed by the sweep ([`FlowTable::expire`] and the insert path's
    /// bounded reclaim step).
    pub expirations: u64,
    /// Entries removed by [`FlowTable::remove`].
    pub removals: u64,
}

/// One stored flow, 56 bytes. The order is fixed (`repr(C)`) so that `last_seen_ms` is the
/// first field and `state` the last: reading both touches every cache line of the entry (see
/// [`FlowTable::warm`]).
#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    last_seen_ms: u64,
    backend: u32,
    /// Low 32 bits of the creation time; the full value is rebuilt from `last_seen_ms`.
    created_lo: u32,
    key: FlowKey,
    state: FlowState,
}

const _: () = assert!(core::mem::size_of::<Entry>() <= 56);

impl Entry {
    const VACANT: Entry = Entry {
        key: FlowKey {
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: 0,
            dst_port: 0,
            protocol: 0,
        },
        state: FlowState::Other,
        backend: 0,
        created_lo: 0,
        last_seen_ms: 0,
    };

    /// Reads the first and the last field: a 56-byte entry may straddle two cache lines.
    #[inline]
    fn touch(&self) -> u64 {
        self.last_seen_ms ^ self.state as u64
    }

    #[inline]
    fn is_live(&self, timeouts: &Timeouts, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) < timeouts.for_state(self.state)
    }

    fn view(&self) -> FlowView {
        let age_ms = (self.last_seen_ms as u32).wrapping_sub(self.created_lo);
        FlowView {
            backend: self.backend,
            state: self.state,
            created_ms: self.last_seen_ms.saturating_sub(u64::from(age_ms)),
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// Where a hash may live: two buckets and the tag to look for.
#[derive(Clone, Copy, Default)]
struct Probe {
    first: usize,
    second: usize,
    tag: u8,
}

/// Per-lcore connection table; see the module documentation for layout and guarantees.
pub struct FlowTable {
    tags: Vec<u128>,
    syn_masks: Vec<u16>,
    /// Per lane, the coarse time (`now_ms >> tick_shift`, wrapping `u8`) a new flow was last
    /// seen, so the oldest new flow of a bucket is found without reading entries.
    syn_ticks: Vec<[u8; LANES]>,
    tick_shift: u32,
    /// The tick of the latest `now_ms` an insert or sweep was given: [`FlowTable::warm`] takes
    /// no time, and uses it to predict which new flow an insert will evict.
    recent_tick: u8,
    entries: Vec<Entry>,
    capacity: usize,
    bucket_count: u64,
    new_flow_budget: usize,
    len: usize,
    new_flow_len: usize,
    sweep_cursor: usize,
    timeouts: Timeouts,
    seed: u64,
    stats: FlowTableStats,
}

/// Byte lanes of `x` that are zero, as the high bit of each lane (exact, no false positives).
#[inline]
fn zero_lanes(x: u128) -> u128 {
    !((((x & LOW7).wrapping_add(LOW7)) | x) | LOW7)
}

/// Lanes of a bucket's tags equal to `tag`.
#[inline]
fn matching_lanes(tags: u128, tag: u8) -> u128 {
    zero_lanes(tags ^ (SPLAT * u128::from(tag)))
}

/// Index of the lowest lane flagged in a lane mask (high bit per byte).
#[inline]
fn first_lane(mask: u128) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// Murmur3's 64-bit finalizer: a bijection with full avalanche.
#[inline]
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The shift that turns milliseconds into the new-flow age ticks: the smallest one for which
/// a new flow's (SynSent or Unconfirmed entry's) whole lifetime spans fewer than 128 ticks, so
/// that wrapping `u8` ages of live (and recently expired) new flows compare correctly.
fn tick_shift(syn_ms: u64) -> u32 {
    let mut shift = 0;
    while shift < 63 && (syn_ms >> shift) >= 128 {
        shift += 1;
    }
    shift
}

/// The tags of a bucket with lanes at or past `live_lanes` blocked.
fn fresh_tags(live_lanes: usize) -> u128 {
    let mut tags = 0u128;
    for lane in live_lanes.min(LANES)..LANES {
        tags |= u128::from(BLOCKED) << (8 * lane);
    }
    tags
}

impl FlowTable {
    /// Validates `config` and allocates the whole table. Nothing allocates after this.
    pub fn new(config: FlowTableConfig) -> Result<FlowTable, ConfigError> {
        let capacity = config.capacity;
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(ConfigError::Capacity {
                capacity,
                min: MIN_CAPACITY,
                max: MAX_CAPACITY,
            });
        }
        if !(1..=100).contains(&config.new_flow_percent) {
            return Err(ConfigError::NewFlowPercent(config.new_flow_percent));
        }
        let t = config.timeouts;
        for (name, value) in [
            ("syn_ms", t.syn_ms),
            ("established_ms", t.established_ms),
            ("closing_ms", t.closing_ms),
            ("udp_ms", t.udp_ms),
            ("other_ms", t.other_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        let bucket_count = capacity.div_ceil(LANES);
        let mut table = FlowTable {
            tags: vec![0; bucket_count],
            syn_masks: vec![0; bucket_count],
            syn_ticks: vec![[0; LANES]; bucket_count],
            tick_shift: tick_shift(t.syn_ms),
            recent_tick: 0,
            entries: vec![Entry::VACANT; capacity],
            capacity,
            bucket_count: bucket_count as u64,
            new_flow_budget: (capacity * usize::from(config.new_flow_percent) / 100).max(1),
            len: 0,
            new_flow_len: 0,
            sweep_cursor: 0,
            timeouts: config.timeouts,
            seed: config.seed,
            stats: FlowTableStats::default(),
        };
        table.clear();
        Ok(table)
    }

    /// Drops every entry (statistics are kept).
    pub fn clear(&mut self) {
        let capacity = self.capacity;
        for (bucket, tags) in self.tags.iter_mut().enumerate() {
            *tags = fresh_tags(capacity.saturating_sub(bucket * LANES));
        }
        self.syn_masks.fill(0);
        self.len = 0;
        self.new_flow_len = 0;
        self.sweep_cursor = 0;
    }

    /// The two candidate buckets and the tag of `hash`.
    #[inline]
    fn probe(&self, hash: u64) -> Probe {
        let h = mix64(hash ^ self.seed);
        // Multiply-shift maps 32 random bits onto 0..bucket_count without `%`; the tag comes from
        // the low bits, which barely influence the bucket choice.
        let first = ((h & 0xffff_ffff) * self.bucket_count) >> 32;
        let second = ((h >> 32) * self.bucket_count) >> 32;
        Probe {
            first: first as usize,
            second: second as usize,
            tag: OCCUPIED | (h as u8 & 0x7f),
        }
    }

    #[inline]
    fn bucket_tags(&self, bucket: usize) -> u128 {
        // Unoccupied tags (0) match nothing; an out-of-range bucket cannot happen (probe() maps
        // into 0..bucket_count) but would read as empty rather than panic.
        self.tags.get(bucket).copied().unwrap_or(0)
    }

    /// The slot holding `key` in `bucket`, live or not.
    #[inline]
    fn locate_in(&self, bucket: usize, tag: u8, key: &FlowKey) -> Option<usize> {
        let mut lanes = matching_lanes(self.bucket_tags(bucket), tag);
        while lanes != 0 {
            let index = (bucket << LANE_SHIFT) | first_lane(lanes);
            lanes &= lanes - 1;
            if self.entries.get(index).is_some_and(|e| e.key == *key) {
                return Some(index);
            }
        }
        None
    }

    /// The slot holding `key`, live or not.
    ///
    /// The fast path has no branch that depends on which bucket holds the key: it takes the
    /// first tag match of the first bucket, else of the second (a select, not a jump), and
    /// compares that one entry. A data-dependent branch there would be mispredicted half the
    /// time and, worse, would squash the loads of the following lookups that the CPU had
    /// already started, serializing cache misses. Only a false tag match (about 1 in 10 lookups
    /// at 80 % fill) takes the slow path.
    #[inline]
    fn locate(&self, probe: Probe, key: &FlowKey) -> Option<usize> {
        let index = self.candidate(probe)?;
        if self.entries.get(index).is_some_and(|e| e.key == *key) {
            return Some(index);
        }
        self.locate_in(probe.first, probe.tag, key)
            .or_else(|| self.locate_in(probe.second, probe.tag, key))
    }

    /// The first tag match of the first bucket, else of the second, chosen without branching.
    #[inline]
    fn candidate(&self, probe: Probe) -> Option<usize> {
        let first = matching_lanes(self.bucket_tags(probe.first), probe.tag);
        let second = matching_lanes(self.bucket_tags(probe.second), probe.tag);
        let take_first = u128::from(first != 0).wrapping_neg();
        let lanes = (first & take_first) | (second & !take_first);
        let take_first = take_first as usize;
        let bucket = (probe.first & take_first) | (probe.second & !take_first);
        (lanes != 0).then(|| (bucket << LANE_SHIFT) | first_lane(lanes))
    }

    /// Starts the cache misses of a group of lookups together, so the CPU overlaps them (and
    /// their page walks) instead of taking them one lookup at a time. Call it with a burst's
    /// hashes just before their `find`s. It changes nothing and returns nothing; it is a safe
    /// stand-in for prefetch instructions (which need `unsafe`).
    ///
    /// Per group of 32 hashes: pass 1 loads both candidate buckets' tags. Pass 2 picks the
    /// entry each hash will need: its first tag match (what `find` compares) or, for a hash
    /// without one (`find` will miss and the pipeline will insert it), the slot that insert will
    /// take, which is the empty lane it fills or, while the new-flow budget is full (a SYN
    /// flood's steady state), the oldest new flow it overwrites: for those, pass 2 loads the
    /// buckets' new-flow masks and ages and pass 3 picks the oldest. Pass 4 loads the entries.
    #[inline]
    pub fn warm(&self, hashes: &[u64]) {
        let budget_full = self.new_flow_len >= self.new_flow_budget;
        let mut seen = 0u64;
        for hashes in hashes.chunks(WARM_GROUP) {
            let mut probes = [Probe::default(); WARM_GROUP];
            let mut tags = 0u128;
            for (probe, &hash) in probes.iter_mut().zip(hashes) {
                *probe = self.probe(hash);
                tags ^= self.bucket_tags(probe.first) ^ self.bucket_tags(probe.second);
            }
            let probes = probes.get(..hashes.len()).unwrap_or_default();
            seen ^= tags as u64;
            // Entry to load per hash (usize::MAX: none), and the hashes whose insert target
            // depends on new-flow ages still being loaded.
            let mut targets = [usize::MAX; WARM_GROUP];
            let mut pending = 0u64;
            for (n, (probe, target)) in probes.iter().zip(targets.iter_mut()).enumerate() {
                if let Some(index) = self.candidate(*probe) {
                    *target = index;
                } else if budget_full {
                    pending |= 1 << n;
                    for bucket in [probe.first, probe.second] {
                        seen ^= self.syn_ticks.get(bucket).map_or(0, |t| u64::from(t[0]));
                        seen ^= u64::from(self.syn_masks.get(bucket).copied().unwrap_or(0));
                    }
                } else if let Some(index) = self.empty_lane(*probe) {
                    *target = index;
                }
            }
            for (n, (probe, target)) in probes.iter().zip(targets.iter_mut()).enumerate() {
                if pending & (1 << n) != 0 {
                    *target = self
                        .oldest_new_flow(*probe, self.recent_tick)
                        .unwrap_or(usize::MAX);
                }
            }
            // A loop with nothing else in it, so all the entry misses are in flight at once.
            for &index in &targets {
                seen ^= self.entries.get(index).map_or(0, Entry::touch);
            }
        }
        core::hint::black_box(seen);
    }

    /// The live entry for `key`, if any. `hash` is the caller's flow hash of `key` (any fixed
    /// function of the key; it must be the same on every call for the same key).
    #[inline]
    pub fn find(&self, key: &FlowKey, hash: u64, now_ms: u64) -> Option<FlowSlot> {
        let index = self.locate(self.probe(hash), key)?;
        let entry = self.entries.get(index)?;
        // Slot indices are < capacity <= MAX_CAPACITY, so they fit in u32.
        entry
            .is_live(&self.timeouts, now_ms)
            .then_some(FlowSlot(index as u32))
    }

    /// The entry behind `slot`.
    ///
    /// `created_ms` is rebuilt from its low 32 bits and `last_seen_ms`, so it is exact for flows
    /// younger than 2^32 ms (49.7 days) and wraps for older ones. A slot from another table reads
    /// as an unspecified view, never a panic.
    #[inline]
    pub fn view(&self, slot: FlowSlot) -> FlowView {
        self.entries
            .get(slot.0 as usize)
            .unwrap_or(&Entry::VACANT)
            .view()
    }

    /// Records a packet on the flow behind `slot`: refreshes `last_seen_ms` and advances the
    /// client-side TCP state.
    ///
    /// Unconfirmed + any packet confirms the flow (it is the flow's second packet): a TCP
    /// segment with FIN or RST makes it Closing, a SYN without ACK SynSent (still a new flow),
    /// any other TCP segment Established; a UDP datagram makes it Udp and any other packet
    /// Other. SynSent + SYN stays SynSent; any TCP packet without SYN makes SynSent Established;
    /// FIN or RST makes any TCP state Closing. Closing is sticky (the client still ACKs the
    /// server's data and FIN) until a SYN without ACK reuses the ports: then it becomes SynSent
    /// with the same backend, if the new-flow budget has room, and otherwise stays Closing (the
    /// flow keeps working on the short timeout rather than evicting anything). Udp and Other
    /// entries keep their state.
    #[inline]
    pub fn touch(&mut self, slot: FlowSlot, packet: PacketKind, now_ms: u64) {
        let index = slot.0 as usize;
        let room = self.new_flow_len < self.new_flow_budget;
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        entry.last_seen_ms = now_ms;
        let old = entry.state;
        let new = match (old, packet) {
            (FlowState::Unconfirmed, _) => packet.confirmed_state(),
            // The key's protocol fixes the kind; a mismatched kind only refreshes the entry.
            (FlowState::Udp | FlowState::Other, _) => return,
            (_, PacketKind::Udp | PacketKind::Other) => old,
            (_, PacketKind::Tcp { flags }) if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 => {
                FlowState::Closing
            }
            (FlowState::SynSent, PacketKind::Tcp { flags }) if flags & tcp_flags::SYN == 0 => {
                FlowState::Established
            }
            (FlowState::Closing, PacketKind::Tcp { flags }) if is_new_syn(flags) && room => {
                FlowState::SynSent
            }
            _ => old,
        };
        entry.state = new;
        match (old.is_new_flow(), new.is_new_flow()) {
            // A retransmitted SYN, or an Unconfirmed flow's second packet being a SYN: the flow
            // is alive, so it is no longer the oldest new flow.
            (true, true) => self.set_syn_tick(index, now_ms),
            (true, false) => {
                self.new_flow_len -= 1;
                self.set_syn_bit(index, false);
            }
            (false, true) => {
                // Port reuse: the fresh connection is as unproven as any other SYN.
                entry.created_lo = now_ms as u32;
                self.new_flow_len += 1;
                self.set_syn_bit(index, true);
                self.set_syn_tick(index, now_ms);
            }
            (false, false) => {}
        }
    }

    /// Points the flow behind `slot` at another backend (after its backend was removed).
    #[inline]
    pub fn set_backend(&mut self, slot: FlowSlot, backend: u32) {
        if let Some(entry) = self.entries.get_mut(slot.0 as usize) {
            entry.backend = backend;
        }
    }

    /// Creates the entry for `key` from its first packet (an existing entry for `key`, live or
    /// expired, is replaced).
    ///
    /// Every inserted entry is a new flow, counted against the new-flow budget: SYN without ACK
    /// -> SynSent, any other packet -> Unconfirmed (a TCP flow that ECMP may have moved here, a
    /// UDP or other flow, or a spoofed flood), which its second packet confirms (see
    /// [`FlowTable::touch`]). The slot is, in order of preference: an empty lane in the less
    /// loaded candidate bucket, an expired entry, or the oldest new flow in the two buckets.
    /// While the budget is full an insert may only take the slot of the oldest new flow in its
    /// buckets. Live confirmed (Established, Closing, Udp, Other) entries are never evicted.
    pub fn insert(
        &mut self,
        key: &FlowKey,
        hash: u64,
        backend: u32,
        packet: PacketKind,
        now_ms: u64,
    ) -> Result<FlowSlot, InsertError> {
        let probe = self.probe(hash);
        self.recent_tick = self.tick(now_ms);
        if let Some(index) = self.locate(probe, key) {
            self.vacate(index);
        }
        let state = packet.initial_state();
        let index = match self.choose_slot(probe, state.is_new_flow(), now_ms) {
            Ok(index) => index,
            Err(error) => {
                match error {
                    InsertError::TableFull => self.stats.insert_failed_table_full += 1,
                    InsertError::NewFlowBudgetExhausted => {
                        self.stats.insert_failed_new_flow_budget += 1
                    }
                }
                return Err(error);
            }
        };
        let Some(entry) = self.entries.get_mut(index) else {
            // choose_slot only returns unblocked lanes, which are < capacity.
            self.stats.insert_failed_table_full += 1;
            return Err(InsertError::TableFull);
        };
        *entry = Entry {
            key: *key,
            state,
            backend,
            created_lo: now_ms as u32,
            last_seen_ms: now_ms,
        };
        self.set_tag(index, probe.tag);
        if state.is_new_flow() {
            self.set_syn_bit(index, true);
            self.set_syn_tick(index, now_ms);
            self.new_flow_len += 1;
        }
        self.len += 1;
        self.stats.inserts += 1;
        Ok(FlowSlot(index as u32))
    }

    /// Picks (and vacates, if needed) the slot for a new entry.
    fn choose_slot(
        &mut self,
        probe: Probe,
        new_flow: bool,
        now_ms: u64,
    ) -> Result<usize, InsertError> {
        if new_flow && self.new_flow_len >= self.new_flow_budget {
            if let Some(index) = self.oldest_new_flow(probe, self.tick(now_ms)) {
                self.evict(index, now_ms);
                return Ok(index);
            }
            self.sweep(now_ms, RECLAIM_STEP_SLOTS);
            if self.new_flow_len >= self.new_flow_budget {
                return Err(InsertError::NewFlowBudgetExhausted);
            }
        }
        if let Some(index) = self.empty_lane(probe) {
            return Ok(index);
        }
        if let Some(index) = self.first_expired(probe, now_ms) {
            self.evict(index, now_ms);
            return Ok(index);
        }
        if let Some(index) = self.oldest_new_flow(probe, self.tick(now_ms)) {
            self.evict(index, now_ms);
            return Ok(index);
        }
        Err(InsertError::TableFull)
    }

    /// The first empty lane of the less loaded candidate bucket (the first bucket on a tie).
    #[inline]
    fn empty_lane(&self, probe: Probe) -> Option<usize> {
        let empty_first = zero_lanes(self.bucket_tags(probe.first));
        let empty_second = zero_lanes(self.bucket_tags(probe.second));
        if empty_first | empty_second == 0 {
            return None;
        }
        let (bucket, lanes) = if empty_second.count_ones() > empty_first.count_ones() {
            (probe.second, empty_second)
        } else {
            (probe.first, empty_first)
        };
        Some((bucket << LANE_SHIFT) | first_lane(lanes))
    }

    /// The candidate buckets, without repeating a bucket chosen twice.
    fn candidate_buckets(probe: Probe) -> impl Iterator<Item = usize> {
        let second = (probe.second != probe.first).then_some(probe.second);
        core::iter::once(probe.first).chain(second)
    }

    /// The new flow (SynSent or Unconfirmed entry) least recently seen in the candidate
    /// buckets, by the coarse per-lane ticks (no entry is read: under a flood this runs for
    /// every packet).
    /// Ties go to the first bucket, then the lowest lane.
    #[inline]
    fn oldest_new_flow(&self, probe: Probe, now_tick: u8) -> Option<usize> {
        let mut oldest: Option<(u8, usize)> = None;
        for bucket in Self::candidate_buckets(probe) {
            let mut mask = self.syn_mask(bucket);
            let ticks = self.syn_ticks.get(bucket).copied().unwrap_or([0; LANES]);
            while mask != 0 {
                let lane = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let age = now_tick.wrapping_sub(ticks.get(lane).copied().unwrap_or(0));
                if oldest.is_none_or(|(oldest_age, _)| age > oldest_age) {
                    oldest = Some((age, (bucket << LANE_SHIFT) | lane));
                }
            }
        }
        oldest.map(|(_, index)| index)
    }

    #[inline]
    fn syn_mask(&self, bucket: usize) -> u16 {
        self.syn_masks.get(bucket).copied().unwrap_or(0)
    }

    #[inline]
    fn tick(&self, now_ms: u64) -> u8 {
        (now_ms >> self.tick_shift) as u8
    }

    #[inline]
    fn set_syn_tick(&mut self, index: usize, now_ms: u64) {
        let tick = self.tick(now_ms);
        if let Some(slot) = self
            .syn_ticks
            .get_mut(index >> LANE_SHIFT)
            .and_then(|ticks| ticks.get_mut(index % LANES))
        {
            *slot = tick;
        }
    }

    /// The first expired entry in the candidate buckets.
    fn first_expired(&self, probe: Probe, now_ms: u64) -> Option<usize> {
        for bucket in Self::candidate_buckets(probe) {
            let mut lanes = self.bucket_tags(bucket) & HIGH;
            while lanes != 0 {
                let index = (bucket << LANE_SHIFT) | first_lane(lanes);
                lanes &= lanes - 1;
                if self
                    .entries
                    .get(index)
                    .is_some_and(|e| !e.is_live(&self.timeouts, now_ms))
                {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Vacates an occupied slot to reuse it, counting why.
    fn evict(&mut self, index: usize, now_ms: u64) {
        let live = self
            .entries
            .get(index)
            .is_some_and(|e| e.is_live(&self.timeouts, now_ms));
        if live {
            self.stats.evicted_new_flows += 1;
        } else {
            self.stats.evicted_expired += 1;
        }
        self.vacate(index);
    }

    /// Marks an occupied slot empty and fixes the counters.
    fn vacate(&mut self, index: usize) {
        if self.lane_tag(index) & OCCUPIED == 0 {
            return;
        }
        self.set_tag(index, 0);
        if self
            .entries
            .get(index)
            .is_some_and(|e| e.state.is_new_flow())
        {
            self.set_syn_bit(index, false);
            self.new_flow_len -= 1;
        }
        self.len -= 1;
    }

    fn lane_tag(&self, index: usize) -> u8 {
        (self.bucket_tags(index >> LANE_SHIFT) >> (8 * (index % LANES))) as u8
    }

    fn set_tag(&mut self, index: usize, tag: u8) {
        if let Some(tags) = self.tags.get_mut(index >> LANE_SHIFT) {
            let shift = 8 * (index % LANES);
            *tags = (*tags & !(0xff << shift)) | (u128::from(tag) << shift);
        }
    }

    fn set_syn_bit(&mut self, index: usize, on: bool) {
        if let Some(mask) = self.syn_masks.get_mut(index >> LANE_SHIFT) {
            let bit = 1u16 << (index % LANES);
            if on {
                *mask |= bit;
            } else {
                *mask &= !bit;
            }
        }
    }

    /// Removes the entry for `key` (live or expired but not yet reclaimed); true if there was
    /// one.
    pub fn remove(&mut self, key: &FlowKey, hash: u64) -> bool {
        match self.locate(self.probe(hash), key) {
            Some(index) => {
                self.vacate(index);
                self.stats.removals += 1;
                true
            }
            None => false,
        }
    }

    /// Incremental sweep: examines the next `max_slots` slots (wrapping around the table) and
    /// reclaims expired entries; returns how many it reclaimed. A call with `max_slots >=
    /// capacity()` rounded up to a multiple of 16 visits every slot once.
    pub fn expire(&mut self, now_ms: u64, max_slots: usize) -> usize {
        self.sweep(now_ms, max_slots)
    }

    fn sweep(&mut self, now_ms: u64, max_slots: usize) -> usize {
        let slot_count = self.tags.len() * LANES;
        self.recent_tick = self.tick(now_ms);
        let mut reclaimed = 0;
        let mut remaining = max_slots.min(slot_count);
        // A bucket (or the part of one the budget reaches) at a time: only occupied lanes, found
        // from the tags, cost an entry read.
        while remaining > 0 {
            let start = self.sweep_cursor;
            let (bucket, lane) = (start >> LANE_SHIFT, start % LANES);
            let take = (LANES - lane).min(remaining);
            let span = if take == LANES {
                u128::MAX
            } else {
                ((1u128 << (8 * take)) - 1) << (8 * lane)
            };
            let mut lanes = self.bucket_tags(bucket) & HIGH & span;
            while lanes != 0 {
                let index = (bucket << LANE_SHIFT) | first_lane(lanes);
                lanes &= lanes - 1;
                if self
                    .entries
                    .get(index)
                    .is_some_and(|e| !e.is_live(&self.timeouts, now_ms))
                {
                    self.vacate(index);
                    reclaimed += 1;
                }
            }
            remaining -= take;
            self.sweep_cursor = if start + take >= slot_count {
                0
            } else {
                start + take
            };
        }
        self.stats.expirations += reclaimed as u64;
        reclaimed
    }

    /// Occupied slots, including expired entries not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Occupied new-flow (SynSent and Unconfirmed) slots, including expired ones not yet
    /// reclaimed. Never exceeds [`FlowTable::new_flow_budget`].
    pub fn new_flow_len(&self) -> usize {
        self.new_flow_len
    }

    /// How many new-flow (SynSent and Unconfirmed) entries the table admits:
    /// `capacity * new_flow_percent / 100`, at least 1.
    pub fn new_flow_budget(&self) -> usize {
        self.new_flow_budget
    }

    /// The configured capacity (flows).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Bytes allocated for entries and metadata (tags and new-flow masks).
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Entry>()
            + self.tags.capacity() * core::mem::size_of::<u128>()
            + self.syn_masks.capacity() * core::mem::size_of::<u16>()
            + self.syn_ticks.capacity() * LANES
    }

    /// A copy of the counters.
    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    /// Every live entry at `now_ms`, in slot order (for the admin socket; walks the whole table).
    pub fn iter(&self, now_ms: u64) -> impl Iterator<Item = (FlowKey, FlowView)> + '_ {
        self.tags
            .iter()
            .enumerate()
            .flat_map(|(bucket, &tags)| {
                let mut lanes = tags & HIGH;
                core::iter::from_fn(move || {
                    if lanes == 0 {
                        return None;
                    }
                    let index = (bucket << LANE_SHIFT) | first_lane(lanes);
                    lanes &= lanes - 1;
                    Some(index)
                })
            })
            .filter_map(move |index| {
                let entry = self.entries.get(index)?;
                entry
                    .is_live(&self.timeouts, now_ms)
                    .then(|| (entry.key, entry.view()))
            })
    }
}

impl fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .field("new_flow_len", &self.new_flow_len)
            .field("new_flow_budget", &self.new_flow_budget)
            .field("timeouts", &self.timeouts)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_fits_56_bytes_with_its_ends_in_the_first_and_last_8_bytes() {
        assert_eq!(core::mem::size_of::<Entry>(), 56);
        // `Entry::touch` reads these two fields to load every cache line of an entry (entries
        // start 8-byte aligned, so a second line starts at most 48 bytes in).
        assert_eq!(core::mem::offset_of!(Entry, last_seen_ms), 0);
        assert!(core::mem::offset_of!(Entry, state) >= 48);
    }

    #[test]
    fn partial_sweeps_visit_every_slot_once_in_order() {
        // Capacity 40: 3 buckets, 48 lanes of which the last 8 are blocked. Sweeps of 7 slots
        // must cover the table in 7 calls, wrap, and leave the cursor where slot-by-slot
        // stepping would.
        let timeouts = Timeouts {
            udp_ms: 10,
            ..Timeouts::default()
        };
        let mut t = FlowTable::new(FlowTableConfig {
            timeouts,
            ..FlowTableConfig::with_capacity(40)
        })
        .unwrap();
        let mut inserted = 0;
        for i in 0..64u64 {
            let key = FlowKey::v4(
                std::net::Ipv4Addr::from(i as u32),
                std::net::Ipv4Addr::LOCALHOST,
                1,
                2,
                17,
            );
            // Confirmed by a second datagram, so the entries live on the UDP timeout.
            if let Ok(slot) = t.insert(
                &key,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                0,
                PacketKind::Udp,
                0,
            ) {
                t.touch(slot, PacketKind::Udp, 0);
                inserted += 1;
            }
        }
        assert!(inserted >= 30, "{inserted}");
        let mut total = 0;
        let mut cursors = Vec::new();
        for _ in 0..7 {
            total += t.expire(10, 7);
            cursors.push(t.sweep_cursor);
        }
        assert_eq!(cursors, [7, 14, 21, 28, 35, 42, 1]);
        assert_eq!(total, inserted);
        assert!(t.is_empty());
    }

    #[test]
    fn warm_changes_nothing_observable() {
        let mut t = FlowTable::new(FlowTableConfig {
            new_flow_percent: 10,
            ..FlowTableConfig::with_capacity(256)
        })
        .unwrap();
        let key = |i: u64| {
            FlowKey::v4(
                std::net::Ipv4Addr::from(i as u32),
                std::net::Ipv4Addr::LOCALHOST,
                1,
                2,
                6,
            )
        };
        let syn = PacketKind::Tcp { flags: 0x02 };
        for i in 0..200u64 {
            let _ = t.insert(&key(i), i, 0, syn, i);
        }
        assert_eq!(t.new_flow_len(), t.new_flow_budget());
        let before: Vec<_> = t.iter(200).collect();
        let (len, stats) = (t.len(), t.stats());
        // More than one group, hits, misses, a full budget.
        let hashes: Vec<u64> = (150..300).collect();
        t.warm(&hashes);
        t.warm(&[]);
        assert_eq!((t.len(), t.stats()), (len, stats));
        assert_eq!(t.iter(200).collect::<Vec<_>>(), before);
    }

    #[test]
    fn zero_and_matching_lanes_are_exact() {
        // Lanes: 0 -> 0x00, 1 -> 0x80, 2 -> 0x81, 3 -> 0x01, 4 -> 0xff, rest 0x81.
        let mut tags = 0u128;
        for (lane, byte) in [0x00u8, 0x80, 0x81, 0x01, 0xff]
            .into_iter()
            .chain([0x81; 11])
            .enumerate()
        {
            tags |= u128::from(byte) << (8 * lane);
        }
        assert_eq!(zero_lanes(tags), 0x80);
        let m = matching_lanes(tags, 0x81);
        let lanes: Vec<usize> = (0..16).filter(|l| m >> (8 * l) & 0x80 != 0).collect();
        assert_eq!(lanes, [2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(m & !HIGH, 0);
        assert_eq!(first_lane(matching_lanes(tags, 0xff)), 4);
        assert_eq!(matching_lanes(tags, 0x82), 0);
    }

    #[test]
    fn lanes_past_capacity_are_blocked() {
        let table = FlowTable::new(FlowTableConfig::with_capacity(20)).unwrap();
        assert_eq!(table.tags.len(), 2);
        assert_eq!(table.entries.len(), 20);
        assert_eq!(zero_lanes(table.tags[1]).count_ones(), 4);
        assert_eq!(zero_lanes(table.tags[0]).count_ones(), 16);
    }

    #[test]
    fn tick_shift_covers_a_new_flow_lifetime_in_128_ticks() {
        assert_eq!(tick_shift(5_000), 6);
        assert_eq!(tick_shift(127), 0);
        assert_eq!(tick_shift(128), 1);
        assert_eq!(tick_shift(u64::MAX), 57);
        for syn_ms in [1, 100, 5_000, 60_000, 1 << 40] {
            assert!(syn_ms >> tick_shift(syn_ms) < 128);
        }
    }

    #[test]
    fn probe_stays_in_range_and_seed_changes_buckets() {
        let a = FlowTable::new(FlowTableConfig::with_capacity(1000)).unwrap();
        let b = FlowTable::new(FlowTableConfig {
            seed: 0x5eed,
            ..FlowTableConfig::with_capacity(1000)
        })
        .unwrap();
        let mut differ = 0;
        for hash in 0..1000u64 {
            let (pa, pb) = (a.probe(hash), b.probe(hash));
            assert!(pa.first < a.tags.len() && pa.second < a.tags.len());
            assert!(pa.tag & OCCUPIED != 0);
            differ += usize::from(pa.first != pb.first);
        }
        assert!(differ > 900, "seed barely changed bucket choice: {differ}");
    }
}
