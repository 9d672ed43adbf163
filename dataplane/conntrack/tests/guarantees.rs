//! The hard guarantees of the flow table: SYN-, ACK- and UDP-flood safety, eviction rules,
//! memory per flow, fill, state machine, expiry.

mod common;

use common::{hash, v4_key, v6_key, ACK, FIN_ACK, RST, SYN};
use conntrack::{
    ConfigError, FlowKey, FlowState, FlowTable, FlowTableConfig, InsertError, PacketKind, Timeouts,
};

fn table(capacity: usize) -> FlowTable {
    FlowTable::new(FlowTableConfig {
        seed: 0x0123_4567_89ab_cdef,
        ..FlowTableConfig::with_capacity(capacity)
    })
    .unwrap()
}

fn insert(t: &mut FlowTable, i: u32, packet: PacketKind, now_ms: u64) -> Result<(), InsertError> {
    let key = v4_key(i);
    t.insert(&key, hash(&key), i, packet, now_ms).map(|_| ())
}

/// Inserts flow `i` from `packet` and confirms it with a second, identical packet (what the
/// pipeline does for the first two packets of a flow).
fn establish(
    t: &mut FlowTable,
    i: u32,
    packet: PacketKind,
    now_ms: u64,
) -> Result<(), InsertError> {
    let key = v4_key(i);
    let slot = t.insert(&key, hash(&key), i, packet, now_ms)?;
    t.touch(slot, packet, now_ms);
    Ok(())
}

fn found(t: &FlowTable, i: u32, now_ms: u64) -> bool {
    let key = v4_key(i);
    t.find(&key, hash(&key), now_ms).is_some()
}

#[test]
fn syn_flood_never_evicts_established_and_respects_budget() {
    const CAPACITY: usize = 16_384;
    let mut t = table(CAPACITY);
    let budget = t.new_flow_budget();
    assert_eq!(budget, CAPACITY / 4);
    // 60 % of the table established (more than the 75 % reserve minus fill losses allows us to
    // guarantee, but every insert that succeeds must stay).
    let mut established = Vec::new();
    for i in 0..(CAPACITY as u32 * 6 / 10) {
        if establish(&mut t, i, ACK, 0).is_ok() {
            established.push(i);
        }
    }
    assert!(established.len() >= CAPACITY * 59 / 100);
    // 10x capacity distinct SYNs, time advancing 1 ms per 1,000 packets (1 Mpps flood), with
    // the pipeline's per-burst sweep running.
    let flood_base = 1 << 24;
    let mut refused = 0usize;
    for n in 0..(CAPACITY as u32 * 10) {
        let now_ms = u64::from(n / 1000);
        let key = v4_key(flood_base + n);
        let h = hash(&key);
        assert!(t.find(&key, h, now_ms).is_none());
        match t.insert(&key, h, 0, SYN, now_ms) {
            Ok(_) => {}
            Err(InsertError::NewFlowBudgetExhausted | InsertError::TableFull) => refused += 1,
        }
        assert!(t.new_flow_len() <= budget);
        if n % 32 == 0 {
            t.expire(now_ms, 64);
        }
    }
    let flood_end_ms = u64::from(CAPACITY as u32 * 10 / 1000);
    assert!(t.new_flow_len() <= budget);
    for &i in &established {
        assert!(found(&t, i, flood_end_ms), "established flow {i} lost");
    }
    let s = t.stats();
    assert!(
        s.evicted_new_flows + s.evicted_expired + refused as u64 > 0,
        "flood never hit the budget"
    );
    // After the flood stops, legitimate clients get in, even before any further sweep.
    let after_ms = flood_end_ms + t.timeouts().syn_ms;
    let mut admitted = 0;
    for i in 0..1000 {
        let key = v4_key((2 << 24) + i);
        if t.insert(&key, hash(&key), 1, SYN, after_ms).is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 1000, "{:?}", t.stats());
    for &i in &established {
        assert!(found(&t, i, after_ms));
    }
}

#[test]
fn syn_flood_at_one_instant_only_churns_new_flows() {
    const CAPACITY: usize = 4096;
    let mut t = table(CAPACITY);
    let mut kept = Vec::new();
    for i in 0..(CAPACITY as u32 / 2) {
        let packet = match i % 4 {
            0 => ACK,
            1 => FIN_ACK,
            2 => PacketKind::Udp,
            _ => PacketKind::Other,
        };
        if establish(&mut t, i, packet, 0).is_ok() {
            kept.push(i);
        }
    }
    for n in 0..(CAPACITY as u32 * 10) {
        // Refusals are allowed; what matters is what stays.
        let _ = insert(&mut t, (1 << 24) + n, SYN, 5);
        assert!(t.new_flow_len() <= t.new_flow_budget());
    }
    assert_eq!(t.new_flow_len(), t.new_flow_budget());
    assert!(t.stats().evicted_new_flows > CAPACITY as u64 * 5);
    for &i in &kept {
        assert!(found(&t, i, 5), "flow {i} evicted by SYNs");
    }
    // Non-SYN misses still get in during the flood, as new flows replacing the oldest new flow
    // of their buckets.
    let evicted = t.stats().evicted_new_flows;
    for i in 0..200 {
        insert(&mut t, (3 << 24) + i, ACK, 5).unwrap();
        assert_eq!(t.new_flow_len(), t.new_flow_budget());
    }
    assert_eq!(t.stats().evicted_new_flows, evicted + 200);
    for &i in &kept {
        assert!(found(&t, i, 5), "flow {i} evicted by non-SYN misses");
    }
}

#[test]
fn non_syn_inserts_reuse_expired_evict_new_flows_and_never_live_ones() {
    // One bucket: every key competes for the same 16 lanes.
    let mut t = table(16);
    for i in 0..16 {
        establish(&mut t, i, ACK, 0).unwrap();
    }
    assert_eq!(t.len(), 16);
    assert_eq!(insert(&mut t, 100, ACK, 1), Err(InsertError::TableFull));
    assert_eq!(insert(&mut t, 101, SYN, 1), Err(InsertError::TableFull));
    assert_eq!(t.stats().insert_failed_table_full, 2);
    // Keep 0..8 alive, let 8..16 expire.
    let est = t.timeouts().established_ms;
    for i in 0..8 {
        let key = v4_key(i);
        let slot = t.find(&key, hash(&key), est - 1).unwrap();
        t.touch(slot, ACK, est - 1);
    }
    for n in 0..8 {
        establish(&mut t, 200 + n, ACK, est).unwrap();
    }
    assert_eq!(t.stats().evicted_expired, 8);
    assert_eq!(insert(&mut t, 300, ACK, est), Err(InsertError::TableFull));
    for i in 0..8 {
        assert!(found(&t, i, est));
    }
    // Turn two live flows into new flows by removing and re-adding them as SYNs; a non-SYN
    // insert (itself a new flow) then evicts the older one.
    for (i, at) in [(0, est + 1), (1, est + 2)] {
        let key = v4_key(i);
        assert!(t.remove(&key, hash(&key)));
        insert(&mut t, i, SYN, at).unwrap();
    }
    insert(&mut t, 400, ACK, est + 3).unwrap();
    assert_eq!(t.stats().evicted_new_flows, 1);
    assert!(!found(&t, 0, est + 3));
    assert!(found(&t, 1, est + 3));
}

#[test]
fn new_flow_insert_with_full_budget_evicts_oldest_new_flow_in_window() {
    let mut t = FlowTable::new(FlowTableConfig {
        new_flow_percent: 25,
        ..FlowTableConfig::with_capacity(16)
    })
    .unwrap();
    assert_eq!(t.new_flow_budget(), 4);
    // "Oldest" is judged in ticks of 64 ms (the power of two above syn_ms / 128).
    for (i, at) in [(0, 1000), (1, 500), (2, 2000), (3, 700)] {
        insert(&mut t, i, SYN, at).unwrap();
    }
    // A retransmitted SYN makes flow 1 the youngest; flow 3 is now the oldest.
    let k1 = v4_key(1);
    let s1 = t.find(&k1, hash(&k1), 2100).unwrap();
    t.touch(s1, SYN, 2100);
    insert(&mut t, 4, SYN, 2100).unwrap();
    assert_eq!(t.new_flow_len(), 4);
    assert!(!found(&t, 3, 2100), "oldest new flow should be evicted");
    // A non-SYN miss is a new flow too: with the budget full it takes the next oldest (flow 0)
    // rather than one of the 11 free lanes.
    insert(&mut t, 10, ACK, 2100).unwrap();
    assert_eq!(t.new_flow_len(), 4);
    assert!(!found(&t, 0, 2100), "oldest new flow should be evicted");
    for i in [1, 2, 4, 10] {
        assert!(found(&t, i, 2100));
    }
    assert_eq!(t.stats().evicted_new_flows, 2);
    assert_eq!(t.len(), 4);
}

#[test]
fn memory_is_at_most_64_bytes_per_flow() {
    for capacity in [16, 17, 31, 100, 1000, 4097, 65_536, 1_000_000] {
        let t = table(capacity);
        assert_eq!(t.capacity(), capacity);
        let per_flow = t.memory_bytes() as f64 / capacity as f64;
        assert!(
            t.memory_bytes() / t.capacity() <= 64,
            "capacity {capacity}: {per_flow:.2} bytes per flow"
        );
    }
}

#[test]
fn fill_with_random_keys_reaches_at_least_95_percent() {
    for (capacity, seed) in [(16_384, 1), (100_000, 2), (1_000_003, 3)] {
        let mut t = FlowTable::new(FlowTableConfig {
            seed,
            ..FlowTableConfig::with_capacity(capacity)
        })
        .unwrap();
        let mut first_failure = None;
        for i in 0..capacity as u32 {
            if establish(&mut t, i, ACK, 0).is_err() && first_failure.is_none() {
                first_failure = Some(i);
            }
        }
        let fill = t.len() as f64 / capacity as f64;
        let first = first_failure.map_or(1.0, |i| f64::from(i) / capacity as f64);
        eprintln!("capacity {capacity}: fill {fill:.4}, first refusal at {first:.4}");
        assert!(fill >= 0.95, "capacity {capacity}: fill {fill:.4}");
        assert!(
            first >= 0.80,
            "capacity {capacity}: first refusal at {first:.4}"
        );
        // A completely filled bucket refuses only with TableFull, never a wrong error.
        assert_eq!(t.stats().insert_failed_new_flow_budget, 0);
    }
}

#[test]
fn tcp_state_machine_from_client_side() {
    let mut t = table(64);
    let key = v6_key(1, 6);
    let h = hash(&key);
    let slot = t.insert(&key, h, 3, SYN, 100).unwrap();
    assert_eq!(t.view(slot).state, FlowState::SynSent);
    assert_eq!(t.new_flow_len(), 1);
    t.touch(slot, SYN, 150); // retransmitted SYN
    assert_eq!(t.view(slot).state, FlowState::SynSent);
    assert_eq!(t.view(slot).created_ms, 100);
    assert_eq!(t.view(slot).last_seen_ms, 150);
    t.touch(slot, ACK, 200);
    assert_eq!(t.view(slot).state, FlowState::Established);
    assert_eq!(t.new_flow_len(), 0);
    t.touch(slot, SYN, 210); // a stray SYN does not demote an established flow
    assert_eq!(t.view(slot).state, FlowState::Established);
    t.touch(slot, FIN_ACK, 300);
    assert_eq!(t.view(slot).state, FlowState::Closing);
    t.touch(slot, ACK, 310); // last ACKs keep it closing
    assert_eq!(t.view(slot).state, FlowState::Closing);
    // Port reuse: back to SynSent, same backend, counted again.
    t.touch(slot, SYN, 400);
    let v = t.view(slot);
    assert_eq!(
        (v.state, v.backend, v.created_ms),
        (FlowState::SynSent, 3, 400)
    );
    assert_eq!(t.new_flow_len(), 1);
    t.touch(slot, RST, 410);
    assert_eq!(t.view(slot).state, FlowState::Closing);
    assert_eq!(t.new_flow_len(), 0);
    // Any other miss is Unconfirmed (a new flow) until its second packet, which picks the
    // protocol's confirmed state.
    let cases = [
        (2, 6, RST, RST, FlowState::Closing),
        (3, 6, ACK, ACK, FlowState::Established),
        (4, 6, ACK, FIN_ACK, FlowState::Closing),
        (5, 6, FIN_ACK, ACK, FlowState::Established),
        (6, 6, ACK, SYN, FlowState::SynSent),
        (7, 17, PacketKind::Udp, PacketKind::Udp, FlowState::Udp),
        (
            8,
            47,
            PacketKind::Other,
            PacketKind::Other,
            FlowState::Other,
        ),
    ];
    for (i, protocol, first, second, confirmed) in cases {
        let key = v6_key(i, protocol);
        let before = t.new_flow_len();
        let slot = t.insert(&key, hash(&key), i, first, 500).unwrap();
        assert_eq!(t.view(slot).state, FlowState::Unconfirmed, "{first:?}");
        assert_eq!(t.new_flow_len(), before + 1);
        t.touch(slot, second, 510);
        let v = t.view(slot);
        assert_eq!(
            (v.state, v.backend, v.created_ms, v.last_seen_ms),
            (confirmed, i, 500, 510),
            "{first:?} then {second:?}"
        );
        assert_eq!(
            t.new_flow_len(),
            before + usize::from(confirmed.is_new_flow())
        );
    }
    // UDP and other protocols keep their class whatever the packet says.
    let k7 = v6_key(7, 17);
    let s7 = t.find(&k7, hash(&k7), 520).unwrap();
    t.touch(s7, FIN_ACK, 520);
    assert_eq!(t.view(s7).state, FlowState::Udp);
    let k8 = v6_key(8, 47);
    let s8 = t.find(&k8, hash(&k8), 520).unwrap();
    t.touch(s8, SYN, 520);
    assert_eq!(t.view(s8).state, FlowState::Other);
    t.set_backend(s8, 9);
    assert_eq!(t.view(s8).backend, 9);
    assert_eq!(FlowState::SynSent.to_string(), "syn-sent");
    assert_eq!(FlowState::Unconfirmed.to_string(), "unconfirmed");
}

#[test]
fn port_reuse_with_full_budget_stays_closing() {
    let mut t = table(16);
    assert_eq!(t.new_flow_budget(), 4);
    let key = v4_key(9);
    let slot = t.insert(&key, hash(&key), 5, FIN_ACK, 0).unwrap();
    t.touch(slot, FIN_ACK, 0);
    assert_eq!(t.view(slot).state, FlowState::Closing);
    for i in 0..4 {
        insert(&mut t, i, SYN, 0).unwrap();
    }
    let slot = t.find(&key, hash(&key), 1).unwrap();
    t.touch(slot, SYN, 1);
    assert_eq!(t.view(slot).state, FlowState::Closing);
    assert_eq!(t.view(slot).last_seen_ms, 1);
    assert_eq!(t.new_flow_len(), 4);
}

#[test]
fn timeouts_per_state_and_lazy_expiry() {
    let timeouts = Timeouts {
        syn_ms: 10,
        established_ms: 1000,
        closing_ms: 20,
        udp_ms: 300,
        other_ms: 400,
    };
    let mut t = FlowTable::new(FlowTableConfig {
        timeouts,
        ..FlowTableConfig::with_capacity(64)
    })
    .unwrap();
    // (first packet, second packet if any, timeout): one packet of anything but a SYN leaves
    // an Unconfirmed entry on the SYN timeout.
    let cases = [
        (SYN, None, 10),
        (ACK, None, 10),
        (PacketKind::Udp, None, 10),
        (ACK, Some(ACK), 1000),
        (RST, Some(RST), 20),
        (PacketKind::Udp, Some(PacketKind::Udp), 300),
        (PacketKind::Other, Some(PacketKind::Other), 400),
    ];
    for (i, (first, second, timeout_ms)) in cases.into_iter().enumerate() {
        let key = v6_key(i as u32, 6);
        let slot = t.insert(&key, hash(&key), 0, first, 5000).unwrap();
        if let Some(second) = second {
            t.touch(slot, second, 5000);
        }
        assert!(t.find(&key, hash(&key), 5000 + timeout_ms - 1).is_some());
        assert!(t.find(&key, hash(&key), 5000 + timeout_ms).is_none());
    }
    assert_eq!(t.new_flow_len(), 3);
    assert_eq!(t.iter(5000 + 350).count(), 2);
    assert_eq!(t.len(), 7);
    // Expired entries stay counted until reclaimed; a full sweep reclaims exactly them.
    assert_eq!(t.expire(5000 + 350, usize::MAX), 5);
    assert_eq!(t.len(), 2);
    assert_eq!(t.new_flow_len(), 0);
    assert_eq!(t.stats().expirations, 5);
}

#[test]
fn expire_does_bounded_work_and_covers_the_table() {
    let mut t = table(1024);
    for i in 0..800 {
        establish(&mut t, i, PacketKind::Udp, 0).unwrap();
    }
    let after = t.timeouts().udp_ms;
    let mut total = 0;
    for _ in 0..(1024 / 100 + 1) {
        let n = t.expire(after, 100);
        assert!(n <= 100);
        total += n;
    }
    assert_eq!(total, 800);
    assert!(t.is_empty());
    assert_eq!(t.expire(after, 0), 0);
}

#[test]
fn insert_replaces_existing_key_and_remove_reports_presence() {
    let mut t = table(64);
    let key = v4_key(7);
    let h = hash(&key);
    t.insert(&key, h, 1, SYN, 0).unwrap();
    let slot = t.insert(&key, h, 2, ACK, 5).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t.new_flow_len(), 1);
    assert_eq!(t.view(slot).state, FlowState::Unconfirmed);
    assert_eq!(t.view(slot).backend, 2);
    t.touch(slot, ACK, 6);
    assert_eq!(t.new_flow_len(), 0);
    assert!(t.remove(&key, h));
    assert!(!t.remove(&key, h));
    assert!(t.is_empty());
}

#[test]
fn colliding_hashes_share_buckets_without_confusion() {
    let mut t = table(1024);
    // An attacker who knows the flow hash can make every key hash alike; they then compete for
    // the 32 lanes of two buckets, but lookups stay exact.
    for i in 0..32 {
        let key = v4_key(i);
        let slot = t.insert(&key, 42, i, ACK, 0).unwrap();
        t.touch(slot, ACK, 0);
    }
    for i in 0..32 {
        let key = v4_key(i);
        let slot = t.find(&key, 42, 0).unwrap();
        assert_eq!(t.view(slot).backend, i);
    }
    let key = v4_key(99);
    assert_eq!(t.insert(&key, 42, 0, ACK, 0), Err(InsertError::TableFull));
    assert!(t.find(&key, 42, 0).is_none());
}

#[test]
fn config_is_validated() {
    assert!(matches!(
        FlowTable::new(FlowTableConfig::with_capacity(15)),
        Err(ConfigError::Capacity { capacity: 15, .. })
    ));
    let e = FlowTable::new(FlowTableConfig {
        new_flow_percent: 0,
        ..FlowTableConfig::with_capacity(64)
    })
    .unwrap_err();
    assert_eq!(e, ConfigError::NewFlowPercent(0));
    assert!(e.to_string().contains("1..=100"));
    let e = FlowTable::new(FlowTableConfig {
        timeouts: Timeouts {
            udp_ms: 0,
            ..Timeouts::default()
        },
        ..FlowTableConfig::with_capacity(64)
    })
    .unwrap_err();
    assert_eq!(e, ConfigError::ZeroTimeout("udp_ms"));
    assert_eq!(
        FlowTable::new(FlowTableConfig {
            new_flow_percent: 1,
            ..FlowTableConfig::with_capacity(16)
        })
        .unwrap()
        .new_flow_budget(),
        1
    );
}

/// A random-looking key per `n` (xorshift over `n` and `salt`): random source address and port,
/// like a spoofed flood.
fn random_key(n: u64, salt: u64, protocol: u8) -> FlowKey {
    let mut x = (n ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    FlowKey::v4(
        std::net::Ipv4Addr::from(x as u32),
        std::net::Ipv4Addr::new(198, 51, 100, 1),
        (x >> 32) as u16,
        443,
        protocol,
    )
}

/// Fills 60 % of a table with confirmed flows (two packets each), floods it with 10x capacity
/// random-tuple misses of `flood` through the pipeline's find/touch/insert path, and checks that
/// every confirmed flow survives, the new flows never exceed their budget, the flood confirms
/// nothing, and legitimate new flows get in afterwards.
fn flood_of_random_tuples_cannot_evict_confirmed_flows(flood: PacketKind, protocol: u8) {
    const CAPACITY: usize = 16_384;
    let mut t = table(CAPACITY);
    let budget = t.new_flow_budget();
    let (first, second, confirmed) = match flood {
        PacketKind::Tcp { .. } => (SYN, ACK, FlowState::Established),
        PacketKind::Udp => (PacketKind::Udp, PacketKind::Udp, FlowState::Udp),
        PacketKind::Other => (PacketKind::Other, PacketKind::Other, FlowState::Other),
    };
    let legit = |i: u32| random_key(u64::from(i), 0x1e91_7000, protocol);
    let mut kept = Vec::new();
    for i in 0..(CAPACITY as u32 * 6 / 10) {
        let key = legit(i);
        if let Ok(slot) = t.insert(&key, hash(&key), i, first, 0) {
            t.touch(slot, second, 1);
            assert_eq!(t.view(slot).state, confirmed);
            kept.push((key, i));
        }
    }
    assert!(kept.len() >= CAPACITY * 59 / 100, "{}", kept.len());
    assert_eq!(t.new_flow_len(), 0);
    // 1 Mpps of spoofed misses, with the pipeline's per-burst sweep.
    let mut refused = 0u64;
    let flood_packets = CAPACITY as u64 * 10;
    for n in 0..flood_packets {
        let now_ms = 1 + n / 1000;
        let key = random_key(n, 0xf100d, protocol);
        let h = hash(&key);
        match t.find(&key, h, now_ms) {
            Some(slot) => t.touch(slot, flood, now_ms),
            None => {
                if t.insert(&key, h, 0, flood, now_ms).is_err() {
                    refused += 1;
                }
            }
        }
        assert!(t.new_flow_len() <= budget);
        if n % 32 == 0 {
            t.expire(now_ms, 64);
        }
    }
    let flood_end_ms = 1 + flood_packets / 1000;
    let s = t.stats();
    assert!(
        s.evicted_new_flows + refused > 0,
        "the flood never hit the budget: {s:?}"
    );
    for (key, backend) in &kept {
        let slot = t.find(key, hash(key), flood_end_ms);
        assert!(slot.is_some(), "confirmed flow {key} lost to the flood");
        if let Some(slot) = slot {
            assert_eq!(t.view(slot).backend, *backend);
            assert_eq!(t.view(slot).state, confirmed);
        }
    }
    // The flood confirmed nothing: every confirmed entry is one of ours.
    let confirmed_now = t
        .iter(flood_end_ms)
        .filter(|(_, v)| !v.state.is_new_flow())
        .count();
    assert_eq!(confirmed_now, kept.len());
    // After the flood, legitimate new flows get in (and confirm), even before another sweep.
    let after_ms = flood_end_ms + t.timeouts().syn_ms;
    for i in 0..1000u32 {
        let key = random_key(u64::from(i), 0xa11ce, protocol);
        let slot = t
            .insert(&key, hash(&key), i, first, after_ms)
            .unwrap_or_else(|e| panic!("legit flow {i} refused: {e} {:?}", t.stats()));
        t.touch(slot, second, after_ms + 1);
        assert_eq!(t.view(slot).state, confirmed);
    }
    for (key, _) in &kept {
        assert!(t.find(key, hash(key), after_ms + 1).is_some());
    }
}

#[test]
fn ack_flood_of_random_tuples_cannot_evict_established_flows() {
    flood_of_random_tuples_cannot_evict_confirmed_flows(ACK, 6);
}

#[test]
fn udp_flood_of_random_tuples_cannot_evict_udp_flows() {
    flood_of_random_tuples_cannot_evict_confirmed_flows(PacketKind::Udp, 17);
}

#[test]
fn other_protocol_flood_of_random_tuples_cannot_evict_other_flows() {
    flood_of_random_tuples_cannot_evict_confirmed_flows(PacketKind::Other, 47);
}

#[test]
fn non_syn_miss_then_second_packet_is_established() {
    // A flow ECMP moved here from another appliance: its first packet here is a mid-connection
    // ACK. It is kept (same backend) and confirmed by its next packet.
    let mut t = table(1024);
    let est_ms = t.timeouts().established_ms;
    let syn_ms = t.timeouts().syn_ms;
    let key = v4_key(77);
    let h = hash(&key);
    assert!(t.find(&key, h, 1000).is_none());
    let slot = t.insert(&key, h, 5, ACK, 1000).unwrap();
    assert_eq!(t.view(slot).state, FlowState::Unconfirmed);
    assert_eq!(t.new_flow_len(), 1);
    let slot = t
        .find(&key, h, 1000 + syn_ms - 1)
        .expect("unconfirmed entry is live");
    t.touch(slot, ACK, 1000 + syn_ms - 1);
    let v = t.view(slot);
    assert_eq!((v.state, v.backend), (FlowState::Established, 5));
    assert_eq!(t.new_flow_len(), 0);
    // Now on the established timeout, far past the SYN timeout.
    let later_ms = 1000 + syn_ms - 1 + est_ms - 1;
    assert!(t.find(&key, h, later_ms).is_some());
    // Without a second packet, a lone ACK is gone after the SYN timeout.
    let lone = v4_key(78);
    t.insert(&lone, hash(&lone), 6, ACK, 1000).unwrap();
    assert!(t.find(&lone, hash(&lone), 1000 + syn_ms - 1).is_some());
    assert!(t.find(&lone, hash(&lone), 1000 + syn_ms).is_none());
}
