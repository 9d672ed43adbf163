//! Quick timing loop for flow-table lookups (development aid; criterion benches are the
//! reference): `cargo run --release -p conntrack --example lookup_timing`.

use conntrack::{FlowKey, FlowTable, FlowTableConfig, PacketKind};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Nanoseconds this thread has run on a CPU (the machine may be shared: wall time lies).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Clock(Instant, u64);

impl Clock {
    fn start() -> Clock {
        Clock(Instant::now(), cpu_ns())
    }
    /// (wall, cpu) nanoseconds per operation.
    fn per_op(&self, ops: usize) -> String {
        let wall = self.0.elapsed().as_nanos() as f64 / ops as f64;
        let cpu = (cpu_ns() - self.1) as f64 / ops as f64;
        format!("{cpu:.1} ns cpu ({wall:.1} ns wall)")
    }
}

fn main() {
    for flows in [10_000u32, 1_000_000] {
        let mut t = FlowTable::new(FlowTableConfig {
            seed: 0x0123_4567_89ab_cdef,
            ..FlowTableConfig::with_capacity(flows as usize * 5 / 4)
        })
        .expect("valid config");
        let mut keys: Vec<(FlowKey, u64)> = (0..flows)
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
            .collect();
        for (k, h) in &keys {
            let ack = PacketKind::Tcp { flags: 0x10 };
            let slot = t.insert(k, *h, 1, ack, 0).expect("room");
            t.touch(slot, ack, 0); // confirmed, so it does not count against the new-flow budget
        }
        let mut state = 7;
        for i in (1..keys.len()).rev() {
            state = splitmix(state);
            keys.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let lookups = 4_000_000usize;
        for _ in 0..3 {
            let start = Clock::start();
            let mut hits = 0usize;
            for n in 0..lookups {
                let (k, h) = &keys[n % keys.len()];
                hits += usize::from(black_box(t.find(k, *h, 1)).is_some());
            }
            let find_ns = start.per_op(lookups);
            println!("{flows} flows: find {find_ns} ({hits} hits)");
        }
    }
}
