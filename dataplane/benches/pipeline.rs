//! Per-packet cost of the pipeline (../shared/BENCHMARKS.md):
//! - `established`: bursts of 32 frames of flows already in a flow table holding 1,000,000 flows,
//!   picked at random (so the flow-table probes miss the CPU caches as they would in production);
//! - `new_flow`: bursts of 32 SYNs, every one a new 5-tuple.
//!
//! Frames are IPv4/TCP to a VIP with 100 IPIP backends. Restoring each burst's frames (the
//! pipeline rewrites them in place) is done in criterion's batch setup, outside the measurement.
//! Run: `cargo bench -p dataplane --bench pipeline`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::testing::{FrameSpec, PORT_MAC};
use dataplane::{
    BackendEntry, BackendState, ForwardingMode, HashPolicy, HeapPacket, Pipeline, PipelineConfig,
    Port, Tables, Verdict, VipEntry,
};
use wire::{ip_protocol, EthernetAddress};

const BURST: usize = 32;
/// Flows in the table; `VIPD_BENCH_FLOWS` overrides (e.g. 1000 for a cache-resident table).
fn flow_count() -> u32 {
    std::env::var("VIPD_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn tables() -> Tables {
    let backends = (0..100u16)
        .map(|i| BackendEntry {
            id: i,
            generation: 0,
            address: format!("10.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
            weight: 1,
            state: BackendState::Active,
            mac: None,
        })
        .collect();
    let vip = VipEntry {
        id: 0,
        address: "203.0.113.10".parse().unwrap(),
        port: 80,
        protocol: ip_protocol::TCP,
        mode: ForwardingMode::Ipip,
        hash: HashPolicy::FiveTuple,
        table_size: maglev::DEFAULT_TABLE_SIZE,
        encap_source_v4: Some("192.0.2.1".parse().unwrap()),
        encap_source_v6: None,
        egress_port: 0,
        backends,
    };
    let port = Port {
        mac: EthernetAddress(PORT_MAC),
        gateway_mac: EthernetAddress([2, 0, 0, 0, 0, 0xfe]),
        mtu: 1500,
        vlan: None,
    };
    Tables::build(vec![port], &[vip]).unwrap()
}

/// Flow `i`'s client address and port: 2^16 ports per address.
fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0a80_0000 + (i >> 14)),
        1024 + (i & 0x3fff) as u16,
    )
}

fn frame(i: u32, flags: u8) -> Vec<u8> {
    let (addr, port) = client(i);
    let mut spec = FrameSpec::tcp(&addr.to_string(), "203.0.113.10", port, 80, flags);
    spec.payload_len = 6; // a 60-byte frame: the minimum Ethernet size without FCS
    spec.build()
}

fn bench(c: &mut Criterion) {
    let tables = tables();
    let flows = flow_count();
    let mut config = PipelineConfig::default();
    config.flow_table.capacity = (2 * flows as usize).max(1024);
    let mut pipeline = Pipeline::new(config).unwrap();
    let mut verdicts = [Verdict::ToKernel; BURST];

    // Fill the flow table: 1M flows, each SYN then ACK (established).
    for i in 0..flows {
        for flags in [SYN, ACK] {
            let mut p = [HeapPacket::from_frame(&frame(i, flags), 128)];
            pipeline.process(&tables, 0, &mut p, &mut verdicts[..1], 0);
        }
    }
    assert_eq!(
        pipeline.flows().len(),
        flows as usize,
        "the table holds every flow"
    );

    // 2048 bursts of random established flows (xorshift, fixed seed).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bursts: Vec<Vec<HeapPacket>> = (0..2048)
        .map(|_| {
            (0..BURST)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    HeapPacket::from_frame(&frame((x % u64::from(flows)) as u32, ACK), 128)
                })
                .collect()
        })
        .collect();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut next = 0usize;
    group.bench_function(format!("established_{flows}_flows"), |b| {
        b.iter_batched_ref(
            || {
                next = (next + 1) % bursts.len();
                bursts[next].clone()
            },
            |burst| {
                pipeline.process(&tables, 0, burst, &mut verdicts, 1);
                black_box(&verdicts);
            },
            BatchSize::SmallInput,
        )
    });
    debug_assert!(verdicts
        .iter()
        .all(|v| matches!(v, Verdict::Forward { .. })));

    let mut fresh = flows.max(1 << 20);
    group.bench_function("new_flow", |b| {
        b.iter_batched_ref(
            || {
                (0..BURST)
                    .map(|_| {
                        fresh = fresh.wrapping_add(1);
                        HeapPacket::from_frame(&frame(fresh, SYN), 128)
                    })
                    .collect::<Vec<_>>()
            },
            |burst| {
                pipeline.process(&tables, 0, burst, &mut verdicts, 2);
                black_box(&verdicts);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
