//! Reproduces the paper's evaluation of Maglev hashing (NSDI'16, figures 11 and 12) on this crate,
//! next to a Karger consistent-hash ring and rendezvous (HRW) hashing measured in the same run.
//!
//! `cargo run --release -p maglev --example evaluate` prints Markdown tables for docs/maglev.md.
//!
//! For Maglev, "slots" are the table's M entries. For the ring and rendezvous hashing, the M
//! lookup keys `0..M` (hashed with `flow_hash` over the key as 8 little-endian bytes) are assigned
//! to backends, so both kinds of numbers are shares of M comparable items.

use std::time::{Duration, Instant};

use maglev::{flow_hash, BackendSpec, MaglevTable, DEFAULT_TABLE_SIZE, LARGE_TABLE_SIZE};

const BACKEND_COUNTS: [usize; 3] = [10, 100, 1000];
const TABLE_SIZES: [u32; 2] = [DEFAULT_TABLE_SIZE, LARGE_TABLE_SIZE];
const RING_VNODES: [usize; 2] = [100, 1000];

/// Backend `i`'s key; the joining backend uses a key outside this range.
fn backend_key(i: usize) -> Vec<u8> {
    format!("10.0.{}.{}:80", i / 256, i % 256).into_bytes()
}

fn joiner_key() -> Vec<u8> {
    b"10.1.0.0:80".to_vec()
}

/// Hashes of the M lookup keys.
fn lookup_hashes(m: u32) -> Vec<u64> {
    (0..u64::from(m))
        .map(|k| flow_hash(&k.to_le_bytes()))
        .collect()
}

/// An assignment of M items to backend ids (ids are stable across leave/join).
type Assignment = Vec<u32>;

/// One placement scheme: assign the M items to the given backends (id, key).
trait Scheme {
    fn name(&self) -> String;
    /// Returns the assignment and the time spent building the structure (if any) and assigning.
    fn assign(
        &self,
        backends: &[(u32, Vec<u8>)],
        m: u32,
        hashes: &[u64],
    ) -> (Assignment, Duration, Duration);
}

struct Maglev;

impl Scheme for Maglev {
    fn name(&self) -> String {
        "Maglev".into()
    }

    fn assign(
        &self,
        backends: &[(u32, Vec<u8>)],
        m: u32,
        _hashes: &[u64],
    ) -> (Assignment, Duration, Duration) {
        let specs: Vec<BackendSpec<'_>> = backends
            .iter()
            .map(|(_, key)| BackendSpec { key, weight: 1 })
            .collect();
        // Median of 5 builds: the machine is shared, single builds are noisy.
        let mut times = Vec::new();
        let mut table = None;
        for _ in 0..5 {
            let start = Instant::now();
            table = Some(MaglevTable::build(&specs, m).expect("prime size, unique keys"));
            times.push(start.elapsed());
        }
        times.sort();
        let table = table.expect("built above");
        let assignment = table
            .slots()
            .iter()
            .map(|&i| backends[usize::from(i)].0)
            .collect();
        (assignment, times[2], Duration::ZERO)
    }
}

/// Karger et al. consistent hashing: `vnodes` points per backend on a 64-bit ring; an item goes
/// to the first point at or after its hash, wrapping around.
struct Ring {
    vnodes: usize,
}

impl Scheme for Ring {
    fn name(&self) -> String {
        format!("Ring, {} vnodes", self.vnodes)
    }

    fn assign(
        &self,
        backends: &[(u32, Vec<u8>)],
        _m: u32,
        hashes: &[u64],
    ) -> (Assignment, Duration, Duration) {
        let start = Instant::now();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(backends.len() * self.vnodes);
        let mut buffer = Vec::new();
        for (id, key) in backends {
            for v in 0..self.vnodes as u32 {
                buffer.clear();
                buffer.extend_from_slice(key);
                buffer.push(b'#');
                buffer.extend_from_slice(&v.to_le_bytes());
                points.push((flow_hash(&buffer), *id));
            }
        }
        points.sort_unstable();
        let build = start.elapsed();
        let start = Instant::now();
        let assignment = hashes
            .iter()
            .map(|&h| {
                let i = points.partition_point(|&(p, _)| p < h);
                points[if i == points.len() { 0 } else { i }].1
            })
            .collect();
        (assignment, build, start.elapsed())
    }
}

/// Rendezvous (highest random weight) hashing: an item goes to the backend with the highest
/// `mix(item_hash ^ backend_hash)`.
struct Rendezvous;

/// murmur3's 64-bit finalizer: a cheap, well-mixing bijection.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Scheme for Rendezvous {
    fn name(&self) -> String {
        "Rendezvous (HRW)".into()
    }

    fn assign(
        &self,
        backends: &[(u32, Vec<u8>)],
        _m: u32,
        hashes: &[u64],
    ) -> (Assignment, Duration, Duration) {
        let start = Instant::now();
        let backend_hashes: Vec<(u64, u32)> = backends
            .iter()
            .map(|(id, key)| (flow_hash(key), *id))
            .collect();
        let assignment = hashes
            .iter()
            .map(|&h| {
                let mut best = (0u64, 0u32);
                for &(bh, id) in &backend_hashes {
                    let score = mix(h ^ bh);
                    if score >= best.0 {
                        best = (score, id);
                    }
                }
                best.1
            })
            .collect();
        (assignment, Duration::ZERO, start.elapsed())
    }
}

fn moved_share(a: &Assignment, b: &Assignment) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

struct Balance {
    max: u32,
    min: u32,
    max_deviation_pct: f64,
}

fn balance(assignment: &Assignment, n: usize) -> Balance {
    let mut counts = vec![0u32; n];
    for &id in assignment {
        counts[id as usize] += 1;
    }
    let mean = assignment.len() as f64 / n as f64;
    let max = *counts.iter().max().unwrap_or(&0);
    let min = *counts.iter().min().unwrap_or(&0);
    let max_deviation_pct = counts
        .iter()
        .map(|&c| (f64::from(c) - mean).abs() / mean * 100.0)
        .fold(0.0, f64::max);
    Balance {
        max,
        min,
        max_deviation_pct,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let schemes: Vec<Box<dyn Scheme>> = vec![
        Box::new(Maglev),
        Box::new(Ring {
            vnodes: RING_VNODES[0],
        }),
        Box::new(Ring {
            vnodes: RING_VNODES[1],
        }),
        Box::new(Rendezvous),
    ];
    println!("## Balance and disruption, equal weights\n");
    println!("Leave: backend N/2 is removed. Join: one new backend is added. Moved = share of the");
    println!(
        "M slots (Maglev) or M lookup keys (ring, rendezvous) whose backend changed. The ideal"
    );
    println!(
        "is 1/N on leave and 1/(N+1) on join; a scheme moves less than that on a join when the"
    );
    println!("newcomer gets less than its share.\n");
    for &m in &TABLE_SIZES {
        let hashes = lookup_hashes(m);
        println!("### M = {m}\n");
        println!("| scheme | N | max slots | min slots | max/min | max dev. from mean | moved on leave (ideal) | moved on join (ideal) | build ms | assign M keys ms |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &BACKEND_COUNTS {
            let all: Vec<(u32, Vec<u8>)> = (0..n).map(|i| (i as u32, backend_key(i))).collect();
            let mut without = all.clone();
            without.remove(n / 2);
            let mut with = all.clone();
            with.push((n as u32, joiner_key()));
            for scheme in &schemes {
                let (base, build, assign) = scheme.assign(&all, m, &hashes);
                let (left, _, _) = scheme.assign(&without, m, &hashes);
                let (joined, _, _) = scheme.assign(&with, m, &hashes);
                let b = balance(&base, n);
                println!(
                    "| {} | {n} | {} | {} | {:.3} | {:.2} % | {:.3} % ({:.3} %) | {:.3} % ({:.3} %) | {} | {} |",
                    scheme.name(),
                    b.max,
                    b.min,
                    f64::from(b.max) / f64::from(b.min.max(1)),
                    b.max_deviation_pct,
                    moved_share(&base, &left) * 100.0,
                    100.0 / n as f64,
                    moved_share(&base, &joined) * 100.0,
                    100.0 / (n + 1) as f64,
                    if build.is_zero() { "-".into() } else { ms(build) },
                    if assign.is_zero() { "-".into() } else { ms(assign) },
                );
            }
        }
        println!();
    }

    // Weighted balance: slots per unit of weight should be the same for every backend.
    println!("## Maglev with weights (N = 1000, weight of backend i = 1 + i mod 4)\n");
    println!("| M | max slots/weight | min slots/weight | max/min | max abs. error vs exact share (slots) |");
    println!("|---:|---:|---:|---:|---:|");
    for &m in &TABLE_SIZES {
        let n = 1000;
        let keys: Vec<Vec<u8>> = (0..n).map(backend_key).collect();
        let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 4) as u32).collect();
        let specs: Vec<BackendSpec<'_>> = keys
            .iter()
            .zip(&weights)
            .map(|(key, &weight)| BackendSpec { key, weight })
            .collect();
        let table = MaglevTable::build(&specs, m).expect("prime size, unique keys");
        let total: u32 = weights.iter().sum();
        let counts = table.slot_counts(n);
        let per_weight: Vec<f64> = counts
            .iter()
            .zip(&weights)
            .map(|(&c, &w)| f64::from(c) / f64::from(w))
            .collect();
        let max = per_weight.iter().copied().fold(f64::MIN, f64::max);
        let min = per_weight.iter().copied().fold(f64::MAX, f64::min);
        let error = counts
            .iter()
            .zip(&weights)
            .map(|(&c, &w)| (f64::from(c) - f64::from(m) * f64::from(w) / f64::from(total)).abs())
            .fold(0.0, f64::max);
        println!(
            "| {m} | {max:.2} | {min:.2} | {:.4} | {error:.3} |",
            max / min
        );
    }
    println!();

    // Figure 12 style: share of Maglev entries that change when k % of 1000 backends fail at once.
    println!("## Maglev resilience to concurrent backend failures (N = 1000, paper Fig. 12)\n");
    println!("| failed backends | M = {DEFAULT_TABLE_SIZE} moved | M = {LARGE_TABLE_SIZE} moved | ideal |");
    println!("|---:|---:|---:|---:|");
    let n = 1000;
    let keys: Vec<Vec<u8>> = (0..n).map(backend_key).collect();
    let bases: Vec<MaglevTable> = TABLE_SIZES
        .iter()
        .map(|&m| {
            let specs: Vec<BackendSpec<'_>> = keys
                .iter()
                .map(|key| BackendSpec { key, weight: 1 })
                .collect();
            MaglevTable::build(&specs, m).expect("prime size, unique keys")
        })
        .collect();
    for failed_pct in [1usize, 2, 4, 6, 8, 10] {
        let failed = n * failed_pct / 100;
        let mut cells = Vec::new();
        for (base, &m) in bases.iter().zip(&TABLE_SIZES) {
            // Fail every (n / failed)-th backend: spread over the key space, deterministic.
            let specs: Vec<BackendSpec<'_>> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| BackendSpec {
                    key,
                    weight: u32::from(i % (n / failed) != 0),
                })
                .collect();
            let after = MaglevTable::build(&specs, m).expect("prime size, unique keys");
            let moved = base
                .slots()
                .iter()
                .zip(after.slots())
                .filter(|(a, b)| a != b)
                .count();
            cells.push(format!("{:.2} %", moved as f64 / f64::from(m) * 100.0));
        }
        println!(
            "| {failed} ({failed_pct} %) | {} | {} | {failed_pct}.00 % |",
            cells[0], cells[1]
        );
    }
}
