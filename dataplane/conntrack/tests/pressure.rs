//! Property test under pressure: a small table, many keys, random packets and time. Whatever
//! happens, a live confirmed (Established, Closing, UDP or Other) entry is never evicted (only
//! removing or re-inserting its own key, or its timeout, ends it), and new (SynSent or
//! Unconfirmed) flows never exceed their budget.

mod common;

use common::{hash, v4_key, v6_key};
use conntrack::{FlowTable, FlowTableConfig, PacketKind, Timeouts};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// The pipeline's per-packet path: find, touch on a hit, insert on a miss.
    Packet(u32, u8),
    Remove(u32),
    Advance(u64),
    Sweep(usize),
}

fn key(i: u32) -> conntrack::FlowKey {
    match i % 3 {
        0 => v4_key(i),
        1 => v6_key(i, 6),
        _ => v6_key(i, 17),
    }
}

fn packet(i: u32, flags: u8) -> PacketKind {
    match key(i).protocol {
        6 => PacketKind::Tcp { flags },
        _ => PacketKind::Udp,
    }
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![4 => Just(0x02u8), 2 => Just(0x10), 1 => Just(0x11), 1 => Just(0x04)];
    prop_oneof![
        12 => (0..400u32, flags).prop_map(|(k, f)| Op::Packet(k, f)),
        1 => (0..400u32).prop_map(Op::Remove),
        2 => (0..300u64).prop_map(Op::Advance),
        1 => (0..64usize).prop_map(Op::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn live_trusted_flows_survive_any_pressure(
        ops in proptest::collection::vec(op(), 1..600),
        seed in any::<u64>(),
        percent in 1u8..=60,
    ) {
        let timeouts = Timeouts {
            syn_ms: 200,
            established_ms: 3_000,
            closing_ms: 400,
            udp_ms: 1_000,
            other_ms: 1_000,
        };
        let mut t = FlowTable::new(FlowTableConfig {
            capacity: 48,
            new_flow_percent: percent,
            timeouts,
            seed,
        })
        .unwrap();
        let mut now_ms = 0u64;
        for op in ops {
            let before: Vec<_> = t
                .iter(now_ms)
                .filter(|(_, v)| !v.state.is_new_flow())
                .collect();
            let mut own_key = None;
            match op {
                Op::Packet(k, flags) => {
                    let (fk, h) = (key(k), hash(&key(k)));
                    match t.find(&fk, h, now_ms) {
                        Some(slot) => t.touch(slot, packet(k, flags), now_ms),
                        None => {
                            own_key = Some(fk);
                            // Whatever the packet, a miss creates only a new flow.
                            if let Ok(slot) = t.insert(&fk, h, k, packet(k, flags), now_ms) {
                                prop_assert!(t.view(slot).state.is_new_flow());
                            }
                        }
                    }
                }
                Op::Remove(k) => {
                    own_key = Some(key(k));
                    t.remove(&key(k), hash(&key(k)));
                }
                Op::Advance(ms) => now_ms += ms,
                Op::Sweep(n) => {
                    t.expire(now_ms, n);
                }
            }
            prop_assert!(t.new_flow_len() <= t.new_flow_budget());
            prop_assert!(t.len() <= t.capacity());
            for (k, v) in before {
                if Some(k) == own_key || now_ms - v.last_seen_ms >= timeouts.for_state(v.state) {
                    continue;
                }
                let slot = t.find(&k, hash(&k), now_ms);
                prop_assert!(slot.is_some(), "{k} ({}) was evicted", v.state);
                if let Some(slot) = slot {
                    prop_assert_eq!(t.view(slot).backend, v.backend);
                }
            }
        }
    }
}
