//! Build time for both table sizes with 1000 backends (goals: <= 1 ms and <= 10 ms), and the
//! per-packet cost of `flow_hash` + `lookup`.
//!
//! `cargo bench -p maglev --bench build`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use maglev::{flow_hash, BackendSpec, MaglevTable, DEFAULT_TABLE_SIZE, LARGE_TABLE_SIZE};

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256).into_bytes())
        .collect()
}

fn build(c: &mut Criterion) {
    let keys = keys(1000);
    let equal: Vec<BackendSpec<'_>> = keys
        .iter()
        .map(|key| BackendSpec { key, weight: 1 })
        .collect();
    let weighted: Vec<BackendSpec<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| BackendSpec {
            key,
            weight: (i % 10) as u32 + 1,
        })
        .collect();
    let mut group = c.benchmark_group("build");
    group.sample_size(30);
    for (size_name, m) in [("65537", DEFAULT_TABLE_SIZE), ("655373", LARGE_TABLE_SIZE)] {
        group.bench_function(format!("M={size_name}/N=1000/equal"), |b| {
            b.iter(|| MaglevTable::build(black_box(&equal), m))
        });
        group.bench_function(format!("M={size_name}/N=1000/weighted"), |b| {
            b.iter(|| MaglevTable::build(black_box(&weighted), m))
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let keys = keys(1000);
    let backends: Vec<BackendSpec<'_>> = keys
        .iter()
        .map(|key| BackendSpec { key, weight: 1 })
        .collect();
    let mut group = c.benchmark_group("lookup");
    // 1024 13-byte 5-tuples per iteration so the per-element figure is per packet.
    let flows: Vec<[u8; 13]> = (0u32..1024)
        .map(|i| {
            let mut t = [0u8; 13];
            t[..4].copy_from_slice(&(0xc000_0200 + i).to_be_bytes());
            t[4..8].copy_from_slice(&[198, 51, 100, 1]);
            t[8..10].copy_from_slice(&((i * 7919) as u16).to_be_bytes());
            t[10..12].copy_from_slice(&443u16.to_be_bytes());
            t[12] = 6;
            t
        })
        .collect();
    let hashes: Vec<u64> = flows.iter().map(|f| flow_hash(f)).collect();
    group.throughput(Throughput::Elements(flows.len() as u64));
    for (size_name, m) in [("65537", DEFAULT_TABLE_SIZE), ("655373", LARGE_TABLE_SIZE)] {
        let table = MaglevTable::build(&backends, m).expect("prime size, 1000 unique keys");
        group.bench_function(format!("M={size_name}/lookup"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &h in black_box(&hashes) {
                    acc = acc.wrapping_add(u32::from(table.lookup(h).unwrap_or(0)));
                }
                acc
            })
        });
        group.bench_function(format!("M={size_name}/flow_hash+lookup"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for f in black_box(&flows) {
                    acc = acc.wrapping_add(u32::from(table.lookup(flow_hash(f)).unwrap_or(0)));
                }
                acc
            })
        });
    }
    group.finish();
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
