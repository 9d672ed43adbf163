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

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::testing::{backend, port, vip, FrameSpec};
use dataplane::{
    BackendState, ForwardingMode, HeapPacket, PacketBuf, Pipeline, PipelineConfig, Tables, Verdict,
};
use wire::ip_protocol;

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
        .map(|i| {
            backend(
                i,
                &format!("10.0.{}.{}", i / 250, i % 250 + 1),
                BackendState::Active,
            )
        })
        .collect();
    let vip = vip(
        0,
        "203.0.113.10",
        80,
        ip_protocol::TCP,
        ForwardingMode::Ipip,
        backends,
    );
    Tables::build(vec![port(1500)], &[vip]).unwrap()
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

    // 2048 bursts of random established flows (xorshift, fixed seed), as frame templates.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bursts: Vec<Vec<Vec<u8>>> = (0..2048)
        .map(|_| {
            (0..BURST)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    frame((x % u64::from(flows)) as u32, ACK)
                })
                .collect()
        })
        .collect();
    // A fixed set of buffers refilled in place before every burst, as a NIC driver recycles
    // mbufs. The refill (a 60-byte copy per frame) is inside the measurement: the figures are
    // per packet *including* that copy, so they slightly overstate the pipeline's own cost.
    let mut buffers: Vec<HeapPacket> = (0..BURST)
        .map(|_| HeapPacket::with_capacity(2048))
        .collect();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut next = 0usize;
    group.bench_function(format!("established_{flows}_flows"), |b| {
        b.iter(|| {
            next = (next + 1) % bursts.len();
            for (buffer, frame) in buffers.iter_mut().zip(&bursts[next]) {
                buffer.refill(frame, 128);
            }
            pipeline.process(&tables, 0, &mut buffers, &mut verdicts, 1);
            black_box(&verdicts);
        })
    });
    // Every frame forwarded (skipped when a filter left the bench out and nothing ran).
    assert!(
        verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Forward { .. }))
            || verdicts.iter().all(|v| *v == Verdict::ToKernel),
        "{verdicts:?}"
    );

    // New flows: a template SYN whose client address changes per packet (IPv4 checksum updated
    // incrementally, as a traffic generator would); every packet is a new 5-tuple.
    let template = frame(0, SYN);
    let mut fresh = flows.max(1 << 20);
    group.bench_function("new_flow", |b| {
        b.iter(|| {
            for buffer in buffers.iter_mut() {
                fresh = fresh.wrapping_add(1);
                buffer.refill(&template, 128);
                set_client(buffer, fresh);
            }
            pipeline.process(&tables, 0, &mut buffers, &mut verdicts, 2);
            black_box(&verdicts);
        })
    });
    // Every frame forwarded (skipped when a filter left the bench out and nothing ran).
    assert!(
        verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Forward { .. }))
            || verdicts.iter().all(|v| *v == Verdict::ToKernel),
        "{verdicts:?}"
    );
    group.finish();
}

/// Rewrites the frame's client address and port to flow `i`'s, fixing the IPv4 checksum.
fn set_client(packet: &mut HeapPacket, i: u32) {
    let (addr, port) = client(i);
    let data = packet.data_mut();
    let old = u32::from_be_bytes([data[26], data[27], data[28], data[29]]);
    data[26..30].copy_from_slice(&addr.octets());
    let sum = u16::from_be_bytes([data[24], data[25]]);
    let sum = wire::checksum::update_u32(sum, old, u32::from(addr));
    data[24..26].copy_from_slice(&sum.to_be_bytes());
    data[34..36].copy_from_slice(&port.to_be_bytes());
}

criterion_group!(benches, bench);
criterion_main!(benches);
