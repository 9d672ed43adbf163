//! Model-based property test: the flow table against a `HashMap` model, with simulated time,
//! per-state timeouts, IPv4 and IPv6 keys, colliding hashes, remove, sweep and iter. The table is
//! large enough that no insert ever meets pressure, so the model needs no eviction rules.

mod common;

use common::{hash, v4_key, v6_key};
use conntrack::{FlowKey, FlowState, FlowTable, FlowTableConfig, PacketKind, Timeouts};
use proptest::prelude::*;
use std::collections::HashMap;

const TIMEOUTS: Timeouts = Timeouts {
    syn_ms: 50,
    established_ms: 1_000,
    closing_ms: 100,
    udp_ms: 300,
    other_ms: 200,
};
const KEYS: u32 = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelEntry {
    backend: u32,
    state: FlowState,
    created_ms: u64,
    last_seen_ms: u64,
}

impl ModelEntry {
    fn live(&self, now_ms: u64) -> bool {
        now_ms - self.last_seen_ms < TIMEOUTS.for_state(self.state)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u32, PacketKind, u32),
    /// find, then touch on a hit (what the pipeline does per packet).
    Packet(u32, PacketKind),
    SetBackend(u32, u32),
    Remove(u32),
    Advance(u64),
    Sweep,
}

/// Keys 0..8 IPv4 TCP, 8..16 IPv6 TCP/UDP/other, 16..24 IPv4 TCP with one shared hash (forced
/// bucket collisions).
fn key(i: u32) -> FlowKey {
    match i {
        0..8 => v4_key(i),
        8..16 => v6_key(i, [6, 17, 47][(i % 3) as usize]),
        _ => v4_key(1000 + i),
    }
}

fn key_hash(i: u32) -> u64 {
    if i >= 16 {
        0xdead_beef
    } else {
        hash(&key(i))
    }
}

/// The packet kind a key's protocol allows, from a random TCP flags byte.
fn packet_for(i: u32, flags: u8) -> PacketKind {
    match key(i).protocol {
        6 => PacketKind::Tcp { flags },
        17 => PacketKind::Udp,
        _ => PacketKind::Other,
    }
}

fn flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0x02u8),
        Just(0x10),
        Just(0x11),
        Just(0x04),
        Just(0x12),
        any::<u8>()
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS, flags(), 0..100u32).prop_map(|(k, f, b)| Op::Insert(k, packet_for(k, f), b)),
        4 => (0..KEYS, flags()).prop_map(|(k, f)| Op::Packet(k, packet_for(k, f))),
        1 => (0..KEYS, 0..100u32).prop_map(|(k, b)| Op::SetBackend(k, b)),
        1 => (0..KEYS).prop_map(Op::Remove),
        2 => prop_oneof![0..20u64, 0..400u64, 900..1200u64].prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// A SYN without ACK starts SynSent; any other first packet leaves the flow Unconfirmed.
fn initial_state(packet: PacketKind) -> FlowState {
    match packet {
        PacketKind::Tcp { flags } if flags & 0x12 == 0x02 => FlowState::SynSent,
        _ => FlowState::Unconfirmed,
    }
}

/// The client-side transition (the budget never fills in this test).
fn next_state(state: FlowState, packet: PacketKind) -> FlowState {
    if state == FlowState::Unconfirmed {
        // The second packet confirms the flow as its protocol's state.
        return match packet {
            PacketKind::Tcp { flags } if flags & 0x05 != 0 => FlowState::Closing,
            PacketKind::Tcp { flags } if flags & 0x12 == 0x02 => FlowState::SynSent,
            PacketKind::Tcp { .. } => FlowState::Established,
            PacketKind::Udp => FlowState::Udp,
            PacketKind::Other => FlowState::Other,
        };
    }
    let PacketKind::Tcp { flags } = packet else {
        return state;
    };
    match state {
        FlowState::Udp | FlowState::Other => state,
        _ if flags & 0x05 != 0 => FlowState::Closing,
        FlowState::SynSent if flags & 0x02 == 0 => FlowState::Established,
        FlowState::Closing if flags & 0x12 == 0x02 => FlowState::SynSent,
        _ => state,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..200), seed in any::<u64>()) {
        let mut table = FlowTable::new(FlowTableConfig {
            capacity: 4096,
            new_flow_percent: 25,
            timeouts: TIMEOUTS,
            seed,
        }).unwrap();
        let mut model: HashMap<FlowKey, ModelEntry> = HashMap::new();
        let mut now_ms = 1u64 << 33; // past 2^32 so the u32 created time must be rebuilt
        for op in ops {
            match op {
                Op::Insert(k, packet, backend) => {
                    let slot = table.insert(&key(k), key_hash(k), backend, packet, now_ms).unwrap();
                    let entry = ModelEntry {
                        backend,
                        state: initial_state(packet),
                        created_ms: now_ms,
                        last_seen_ms: now_ms,
                    };
                    model.insert(key(k), entry);
                    let v = table.view(slot);
                    prop_assert_eq!((v.backend, v.state, v.created_ms, v.last_seen_ms),
                        (entry.backend, entry.state, entry.created_ms, entry.last_seen_ms));
                }
                Op::Packet(k, packet) => {
                    let hit = table.find(&key(k), key_hash(k), now_ms);
                    let expected = model.get_mut(&key(k)).filter(|e| e.live(now_ms));
                    prop_assert_eq!(hit.is_some(), expected.is_some());
                    if let (Some(slot), Some(e)) = (hit, expected) {
                        table.touch(slot, packet, now_ms);
                        let new_state = next_state(e.state, packet);
                        // Only a confirmed flow turning into a new one (port reuse) restarts.
                        if new_state.is_new_flow() && !e.state.is_new_flow() {
                            e.created_ms = now_ms;
                        }
                        e.state = new_state;
                        e.last_seen_ms = now_ms;
                        let v = table.view(slot);
                        prop_assert_eq!((v.backend, v.state, v.created_ms, v.last_seen_ms),
                            (e.backend, e.state, e.created_ms, e.last_seen_ms));
                    }
                }
                Op::SetBackend(k, backend) => {
                    if let Some(slot) = table.find(&key(k), key_hash(k), now_ms) {
                        table.set_backend(slot, backend);
                        let e = model.get_mut(&key(k)).unwrap();
                        prop_assert!(e.live(now_ms));
                        e.backend = backend;
                    }
                }
                Op::Remove(k) => {
                    prop_assert_eq!(table.remove(&key(k), key_hash(k)), model.remove(&key(k)).is_some());
                }
                Op::Advance(ms) => now_ms += ms,
                Op::Sweep => {
                    let before = model.len();
                    model.retain(|_, e| e.live(now_ms));
                    prop_assert_eq!(table.expire(now_ms, usize::MAX), before - model.len());
                }
            }
            prop_assert_eq!(table.len(), model.len());
            let syn = model.values().filter(|e| e.state.is_new_flow()).count();
            prop_assert_eq!(table.new_flow_len(), syn);
            let mut listed: Vec<_> = table
                .iter(now_ms)
                .map(|(k, v)| (k, (v.backend, v.state, v.created_ms, v.last_seen_ms)))
                .collect();
            let mut expected: Vec<_> = model
                .iter()
                .filter(|(_, e)| e.live(now_ms))
                .map(|(k, e)| (*k, (e.backend, e.state, e.created_ms, e.last_seen_ms)))
                .collect();
            listed.sort_by_key(|(k, _)| (k.src_addr, k.dst_addr, k.src_port, k.protocol));
            expected.sort_by_key(|(k, _)| (k.src_addr, k.dst_addr, k.src_port, k.protocol));
            prop_assert_eq!(listed, expected);
            for k in 0..KEYS {
                let found = table.find(&key(k), key_hash(k), now_ms).map(|s| table.view(s));
                let expected = model.get(&key(k)).filter(|e| e.live(now_ms));
                prop_assert_eq!(found.map(|v| (v.backend, v.state)), expected.map(|e| (e.backend, e.state)));
            }
        }
    }
}
