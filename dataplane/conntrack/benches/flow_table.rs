//! Flow table benchmarks: lookup hits at 1,000,000 flows (random order), new-flow insert rate,
//! and a SYN flood against a table full of established flows, packet by packet and as the
//! pipeline drives it (`warm` a burst of 32 hashes, then find and insert each).
//!
//! Run: `cargo bench -p conntrack --bench flow_table`

use conntrack::{FlowKey, FlowTable, FlowTableConfig, PacketKind};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SYN: PacketKind = PacketKind::Tcp { flags: 0x02 };
const ACK: PacketKind = PacketKind::Tcp { flags: 0x10 };

/// SplitMix64: a stand-in for the pipeline's flow hash and a shuffle RNG.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Distinct IPv4 TCP keys `base..base + n` with their hashes.
fn keys(base: u32, n: u32) -> Vec<(FlowKey, u64)> {
    (base..base + n)
        .map(|i| {
            let key = FlowKey::v4(
                Ipv4Addr::from(0x0a00_0000 | (i >> 8)),
                Ipv4Addr::new(198, 51, 100, 1),
                1024 + (i & 0xff) as u16,
                443,
                6,
            );
            (key, splitmix(u64::from(i)))
        })
        .collect()
}

fn shuffle<T>(items: &mut [T]) {
    let mut state = 0x5eed;
    for i in (1..items.len()).rev() {
        state = splitmix(state);
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

fn table(capacity: usize) -> FlowTable {
    FlowTable::new(FlowTableConfig {
        seed: 0x0123_4567_89ab_cdef,
        ..FlowTableConfig::with_capacity(capacity)
    })
    .expect("valid config")
}

/// Inserts `key` from an ACK and confirms it with a second ACK (an established flow).
fn establish(t: &mut FlowTable, key: &FlowKey, hash: u64) -> bool {
    match t.insert(key, hash, 1, ACK, 0) {
        Ok(slot) => {
            t.touch(slot, ACK, 0);
            true
        }
        Err(_) => false,
    }
}

fn lookup_hit(c: &mut Criterion) {
    lookup_hit_at(c, 1_000_000, "lookup_hit_1m_flows");
    lookup_hit_at(c, 10_000, "lookup_hit_10k_flows_cache_resident");
}

fn lookup_hit_at(c: &mut Criterion, flows: u32, name: &str) {
    const BATCH: usize = 4096;
    let mut t = table(flows as usize * 5 / 4);
    let mut present: Vec<(FlowKey, u64)> = keys(0, flows)
        .into_iter()
        .filter(|(k, h)| establish(&mut t, k, *h))
        .collect();
    assert_eq!(present.len(), flows as usize, "bench table refused inserts");
    shuffle(&mut present);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut offset = 0;
    group.bench_function("find", |b| {
        b.iter(|| {
            let chunk = &present[offset..offset + BATCH];
            offset = (offset + BATCH) % (present.len() - BATCH);
            for (key, hash) in chunk {
                black_box(t.find(key, *hash, 1));
            }
        })
    });
    group.bench_function("find_view_touch", |b| {
        b.iter(|| {
            let chunk = &present[offset..offset + BATCH];
            offset = (offset + BATCH) % (present.len() - BATCH);
            for (key, hash) in chunk {
                if let Some(slot) = t.find(key, *hash, 1) {
                    black_box(t.view(slot).backend);
                    t.touch(slot, ACK, 1);
                }
            }
        })
    });
    group.finish();
}

fn insert_new_flows(c: &mut Criterion) {
    const BATCH: u32 = 100_000;
    let mut t = table(1 << 20);
    let fresh = keys(0, BATCH);
    let mut group = c.benchmark_group("insert_new_flows");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    for (name, packet) in [
        // A non-SYN miss (inserted Unconfirmed; the name is kept for comparison with history).
        ("established_miss_then_insert", ACK),
        ("syn_miss_then_insert", SYN),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    t.clear();
                    let start = Instant::now();
                    for (key, hash) in &fresh {
                        if t.find(key, *hash, 0).is_none() {
                            black_box(t.insert(key, *hash, 1, packet, 0).ok());
                        }
                    }
                    elapsed += start.elapsed();
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn syn_flood(c: &mut Criterion) {
    const CAPACITY: usize = 1 << 20;
    const ESTABLISHED: u32 = 600_000;
    const BATCH: usize = 65_536;
    let mut t = table(CAPACITY);
    let established: Vec<(FlowKey, u64)> = keys(0, ESTABLISHED)
        .into_iter()
        .filter(|(k, h)| establish(&mut t, k, *h))
        .collect();
    let flood = keys(1 << 24, 4_000_000);
    let mut next = 0usize;
    let mut packets = 0u64;
    let mut group = c.benchmark_group("syn_flood");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("miss_then_insert_1m_table_600k_established", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                // 1 Mpps of SYNs in simulated time, with the per-burst sweep of 64 slots.
                let now_ms = packets / 1000;
                let (key, hash) = &flood[next];
                next = if next + 1 == flood.len() { 0 } else { next + 1 };
                if t.find(key, *hash, now_ms).is_none() {
                    black_box(t.insert(key, *hash, 0, SYN, now_ms).ok());
                }
                if packets % 32 == 0 {
                    t.expire(now_ms, 64);
                }
                packets += 1;
            }
        })
    });
    group.bench_function(
        "warm_burst32_miss_then_insert_1m_table_600k_established",
        |b| {
            // The pipeline's shape: `warm` a burst of 32 hashes, then find/insert each.
            b.iter(|| {
                for _ in 0..BATCH / 32 {
                    let now_ms = packets / 1000;
                    let start = next;
                    let mut hashes = [0u64; 32];
                    for hash in hashes.iter_mut() {
                        *hash = flood[next].1;
                        next = if next + 1 == flood.len() { 0 } else { next + 1 };
                    }
                    t.warm(&hashes);
                    for i in 0..32 {
                        let (key, hash) = &flood[(start + i) % flood.len()];
                        if t.find(key, *hash, now_ms).is_none() {
                            black_box(t.insert(key, *hash, 0, SYN, now_ms).ok());
                        }
                    }
                    t.expire(now_ms, 64);
                    packets += 32;
                }
            })
        },
    );
    group.finish();
    // Established flows are refreshed by the test's clock reading: none may be lost.
    let now_ms = packets / 1000;
    let lost = established
        .iter()
        .filter(|(k, h)| now_ms < 300_000 && t.find(k, *h, now_ms).is_none())
        .count();
    let s = t.stats();
    println!(
        "syn_flood: {packets} SYNs over {now_ms} simulated ms, established kept {} lost {lost}, \
         new_flow_len {} / budget {}, evicted_new_flows {}, evicted_expired {}, \
         refused_budget {}, refused_full {}",
        established.len() - lost,
        t.new_flow_len(),
        t.new_flow_budget(),
        s.evicted_new_flows,
        s.evicted_expired,
        s.insert_failed_new_flow_budget,
        s.insert_failed_table_full,
    );
    assert_eq!(lost, 0, "SYN flood evicted established flows");
    assert!(t.new_flow_len() <= t.new_flow_budget());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = lookup_hit, insert_new_flows, syn_flood
}
criterion_main!(benches);
