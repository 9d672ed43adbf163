//! Upstream state and the balancing policies that choose among upstreams.
//!
//! An [`UpstreamState`] holds everything the proxy learns about one upstream (health, ejection,
//! drain, weight, active requests, latency) in atomics, so request tasks update it without locks.
//! A [`Picker`] chooses one upstream index for a request among those that are available.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Balancer;

/// What the proxy knows about one upstream. Shared between clusters of successive
/// configurations when the address stays, so a reload keeps health and counters.
#[derive(Debug)]
pub struct UpstreamState {
    /// Address.
    pub address: SocketAddr,
    /// Address as text (label, hash key).
    pub name: String,
    weight: AtomicU32,
    healthy: AtomicBool,
    draining: AtomicBool,
    /// Requests in flight.
    pub active: AtomicUsize,
    /// Milliseconds since `epoch` until which the upstream is ejected (0 = not ejected).
    ejected_until_ms: AtomicU64,
    /// How often it was ejected (grows the next ejection).
    pub ejections: AtomicU32,
    consecutive_errors: AtomicU32,
    /// Peak-EWMA latency, nanoseconds.
    ewma_ns: AtomicU64,
    ewma_stamp_ms: AtomicU64,
    /// Milliseconds since `epoch` when it became available (slow start).
    available_since_ms: AtomicU64,
    epoch: Instant,
}

/// Peak-EWMA decay time constant.
const EWMA_TAU_MS: f64 = 10_000.0;
/// Assumed latency before any sample (keeps new upstreams from looking infinitely fast).
const EWMA_DEFAULT_NS: u64 = 1_000_000;

impl UpstreamState {
    /// A new upstream, healthy until a health check says otherwise.
    pub fn new(address: SocketAddr, weight: u32, epoch: Instant) -> UpstreamState {
        UpstreamState {
            address,
            name: address.to_string(),
            weight: AtomicU32::new(weight),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_errors: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(EWMA_DEFAULT_NS),
            ewma_stamp_ms: AtomicU64::new(0),
            available_since_ms: AtomicU64::new(0),
            epoch,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Configured (or admin-set) weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight (admin `weight`).
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }

    /// Active health state.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the active health state; becoming healthy starts slow start.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.available_since_ms
                .store(self.now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// Whether it is drained by the operator.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Drains (no new requests) or undrains.
    pub fn set_draining(&self, d: bool) {
        let was = self.draining.swap(d, Ordering::Relaxed);
        if was && !d {
            self.available_since_ms
                .store(self.now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// Whether passive outlier detection has it ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Whether new requests may go to it.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_draining() && !self.is_ejected() && self.weight() > 0
    }

    /// Marks the start of slow start (a new upstream in a running cluster).
    pub fn start_slow_start(&self) {
        self.available_since_ms
            .store(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// Weight scaled down during slow start: from 10 % to 100 % over `slow_start`.
    pub fn effective_weight(&self, slow_start: Duration) -> f64 {
        let w = self.weight() as f64;
        let since = self.available_since_ms.load(Ordering::Relaxed);
        if slow_start.is_zero() || since == 0 {
            return w;
        }
        let elapsed = self.now_ms().saturating_sub(since) as f64;
        let share = (elapsed / slow_start.as_millis() as f64).clamp(0.1, 1.0);
        w * share
    }

    /// Counted errors since the last success or ejection (outlier detection).
    pub fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors.load(Ordering::Relaxed)
    }

    /// Records a response outcome for outlier detection. `error` is a 5xx or a gateway error.
    /// Returns true when this call crossed `threshold` (the caller decides whether to eject).
    pub fn record_outcome(&self, error: bool, threshold: u32) -> bool {
        if error {
            self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1 == threshold
        } else {
            self.consecutive_errors.store(0, Ordering::Relaxed);
            false
        }
    }

    /// Ejects for `base * n`, n = how many times it has been ejected (capped at 10).
    pub fn eject(&self, base: Duration) {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let until = (base.as_millis() as u64)
            .saturating_mul(u64::from(n.min(10)))
            .saturating_add(self.now_ms());
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.consecutive_errors.store(0, Ordering::Relaxed);
        // Slow start again once the ejection is over.
        self.available_since_ms
            .store(until.max(1), Ordering::Relaxed);
    }

    /// Feeds a latency sample into the peak-EWMA estimate.
    pub fn observe_latency(&self, latency: Duration) {
        let now = self.now_ms();
        let sample = latency.as_nanos() as f64;
        let last = self.ewma_stamp_ms.swap(now, Ordering::Relaxed);
        let old = self.ewma_ns.load(Ordering::Relaxed) as f64;
        let new = if sample > old {
            sample // peak: jump up at once
        } else {
            let w = (-((now.saturating_sub(last)) as f64) / EWMA_TAU_MS).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(new as u64, Ordering::Relaxed);
    }

    /// Peak-EWMA cost: latency times (outstanding + 1), per weight.
    fn ewma_cost(&self, slow_start: Duration) -> f64 {
        let active = self.active.load(Ordering::Relaxed) as f64;
        self.ewma_ns.load(Ordering::Relaxed) as f64 * (active + 1.0)
            / self.effective_weight(slow_start).max(0.001)
    }

    fn load_cost(&self, slow_start: Duration) -> f64 {
        (self.active.load(Ordering::Relaxed) as f64 + 1.0)
            / self.effective_weight(slow_start).max(0.001)
    }
}

/// A Maglev table over a cluster's upstreams, rebuilt when the available set changes.
#[derive(Debug)]
struct HashTable {
    /// Bitmap (as a Vec) of the upstreams that were available when the table was built.
    available: Vec<bool>,
    table: maglev::MaglevTable,
}

/// Maglev table size for L7 clusters (prime; small, clusters have few upstreams).
const L7_MAGLEV_SIZE: u32 = 65_537;

/// Chooses upstreams for one cluster.
#[derive(Debug)]
pub struct Picker {
    policy: Balancer,
    slow_start: Duration,
    rr: AtomicUsize,
    /// Smooth weighted round robin: current weights.
    wrr: Mutex<Vec<f64>>,
    hash: Mutex<Option<Arc<HashTable>>>,
}

impl Picker {
    /// A picker for `n` upstreams.
    pub fn new(policy: Balancer, slow_start: Duration, n: usize) -> Picker {
        Picker {
            policy,
            slow_start,
            rr: AtomicUsize::new(fastrand::usize(..n.max(1))),
            wrr: Mutex::new(vec![0.0; n]),
            hash: Mutex::new(None),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Balancer {
        self.policy
    }

    /// Picks an upstream among `ups` whose index is not in `exclude` (already tried).
    /// `key_hash` is the consistent-hash key, when the policy uses one.
    pub fn pick(
        &self,
        ups: &[Arc<UpstreamState>],
        exclude: &[usize],
        key_hash: Option<u64>,
    ) -> Option<usize> {
        let ok = |i: usize| ups[i].is_available() && !exclude.contains(&i);
        let ss = self.slow_start;
        // Fast path for the two-choice policies: sample without building the candidate list;
        // fall back to the full scan when a sample is unavailable.
        if matches!(self.policy, Balancer::P2c | Balancer::PeakEwma) && ups.len() >= 2 {
            let a = fastrand::usize(..ups.len());
            let mut b = fastrand::usize(..ups.len() - 1);
            if b >= a {
                b += 1;
            }
            if ok(a) && ok(b) {
                let cost = |i: usize| {
                    if self.policy == Balancer::PeakEwma {
                        ups[i].ewma_cost(ss)
                    } else {
                        ups[i].load_cost(ss)
                    }
                };
                return Some(if cost(b) < cost(a) { b } else { a });
            }
        }
        let candidates: Vec<usize> = (0..ups.len()).filter(|&i| ok(i)).collect();
        if candidates.is_empty() {
            return None;
        }
        if candidates.len() == 1 {
            return Some(candidates[0]);
        }
        match self.policy {
            Balancer::RoundRobin => {
                let n = self.rr.fetch_add(1, Ordering::Relaxed);
                Some(candidates[n % candidates.len()])
            }
            Balancer::WeightedRoundRobin => {
                // Smooth WRR (as in nginx): add each weight, pick the largest, subtract the total.
                let mut cur = self.wrr.lock().unwrap_or_else(|p| p.into_inner());
                if cur.len() != ups.len() {
                    *cur = vec![0.0; ups.len()];
                }
                let mut total = 0.0;
                let mut best = candidates[0];
                for &i in &candidates {
                    let w = ups[i].effective_weight(ss);
                    cur[i] += w;
                    total += w;
                    if cur[i] > cur[best] {
                        best = i;
                    }
                }
                cur[best] -= total;
                Some(best)
            }
            Balancer::LeastRequest => candidates.iter().copied().min_by(|&a, &b| {
                ups[a]
                    .load_cost(ss)
                    .total_cmp(&ups[b].load_cost(ss))
                    .then_with(|| fastrand::bool().cmp(&true))
            }),
            Balancer::P2c | Balancer::PeakEwma => {
                let a = candidates[fastrand::usize(..candidates.len())];
                let mut b = candidates[fastrand::usize(..candidates.len() - 1)];
                if b == a {
                    b = candidates[candidates.len() - 1];
                }
                let cost = |i: usize| {
                    if self.policy == Balancer::PeakEwma {
                        ups[i].ewma_cost(ss)
                    } else {
                        ups[i].load_cost(ss)
                    }
                };
                Some(if cost(b) < cost(a) { b } else { a })
            }
            Balancer::ConsistentHash => {
                let Some(h) = key_hash else {
                    // No key in this request: spread it like p2c would.
                    return Some(candidates[fastrand::usize(..candidates.len())]);
                };
                let table = self.hash_table(ups, exclude)?;
                table.table.lookup(h).map(usize::from)
            }
        }
    }

    fn hash_table(&self, ups: &[Arc<UpstreamState>], exclude: &[usize]) -> Option<Arc<HashTable>> {
        let available: Vec<bool> = (0..ups.len())
            .map(|i| ups[i].is_available() && !exclude.contains(&i))
            .collect();
        let mut slot = self.hash.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            if t.available == available {
                return Some(t.clone());
            }
        }
        let specs: Vec<maglev::BackendSpec<'_>> = ups
            .iter()
            .zip(&available)
            .map(|(u, &a)| maglev::BackendSpec {
                key: u.name.as_bytes(),
                weight: if a { u.weight().max(1) } else { 0 },
            })
            .collect();
        let table = maglev::MaglevTable::build(&specs, L7_MAGLEV_SIZE).ok()?;
        let t = Arc::new(HashTable { available, table });
        // Retries (non-empty exclude) must not replace the shared table for everyone.
        if exclude.is_empty() {
            *slot = Some(t.clone());
        }
        Some(t)
    }
}

/// Hash of a consistent-hash key.
pub fn key_hash(key: &[u8]) -> u64 {
    maglev::flow_hash(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(weights: &[u32]) -> Vec<Arc<UpstreamState>> {
        let epoch = Instant::now();
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Arc::new(UpstreamState::new(
                    format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                    w,
                    epoch,
                ))
            })
            .collect()
    }

    fn counts(p: &Picker, u: &[Arc<UpstreamState>], n: usize) -> Vec<usize> {
        let mut c = vec![0; u.len()];
        for _ in 0..n {
            c[p.pick(u, &[], None).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_even_and_skips_unavailable() {
        let u = ups(&[1, 1, 1]);
        let p = Picker::new(Balancer::RoundRobin, Duration::ZERO, 3);
        assert_eq!(counts(&p, &u, 300), vec![100, 100, 100]);
        u[1].set_draining(true);
        let c = counts(&p, &u, 300);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 300);
        u[0].set_healthy(false);
        u[2].eject(Duration::from_secs(60));
        assert_eq!(p.pick(&u, &[], None), None);
    }

    #[test]
    fn weighted_round_robin_follows_weights_smoothly() {
        let u = ups(&[5, 1, 1]);
        let p = Picker::new(Balancer::WeightedRoundRobin, Duration::ZERO, 3);
        let seq: Vec<usize> = (0..7).map(|_| p.pick(&u, &[], None).unwrap()).collect();
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 5);
        // Smooth: never more than 3 picks of the heavy one in a row within a cycle of 7.
        assert_ne!(&seq[..5], &[0, 0, 0, 0, 0]);
        assert_eq!(counts(&p, &u, 700), vec![500, 100, 100]);
    }

    #[test]
    fn least_request_and_p2c_prefer_idle_upstreams() {
        let u = ups(&[1, 1, 1]);
        u[0].active.store(50, Ordering::Relaxed);
        u[1].active.store(50, Ordering::Relaxed);
        let lr = Picker::new(Balancer::LeastRequest, Duration::ZERO, 3);
        assert_eq!(counts(&lr, &u, 100), vec![0, 0, 100]);
        let p2c = Picker::new(Balancer::P2c, Duration::ZERO, 3);
        let c = counts(&p2c, &u, 3000);
        // The idle upstream wins every pair it is in: 2/3 of picks.
        assert!(c[2] > 1800 && c[2] < 2200, "{c:?}");
    }

    #[test]
    fn peak_ewma_avoids_the_slow_upstream() {
        let u = ups(&[1, 1]);
        u[0].observe_latency(Duration::from_millis(200));
        u[1].observe_latency(Duration::from_micros(500));
        let p = Picker::new(Balancer::PeakEwma, Duration::ZERO, 2);
        assert_eq!(counts(&p, &u, 100), vec![0, 100]);
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_little() {
        let u = ups(&[1, 1, 1, 1]);
        let p = Picker::new(Balancer::ConsistentHash, Duration::ZERO, 4);
        let keys: Vec<u64> = (0..1000)
            .map(|k| key_hash(format!("user{k}").as_bytes()))
            .collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&k| p.pick(&u, &[], Some(k)).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|&k| p.pick(&u, &[], Some(k)).unwrap())
            .collect();
        assert_eq!(before, again);
        u[3].set_healthy(false);
        let after: Vec<usize> = keys
            .iter()
            .map(|&k| p.pick(&u, &[], Some(k)).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(after.iter().all(|&i| i != 3));
        // Only keys of the removed upstream move (~1/4), plus Maglev's small disruption.
        assert!(moved < 330, "moved {moved}");
    }

    #[test]
    fn slow_start_ramps_weight() {
        let u = ups(&[10]);
        u[0].start_slow_start();
        let w = u[0].effective_weight(Duration::from_secs(100));
        assert!((0.99..1.5).contains(&w), "{w}");
        assert_eq!(u[0].effective_weight(Duration::ZERO), 10.0);
    }

    #[test]
    fn outlier_ejection_grows() {
        let u = ups(&[1]);
        assert!(!u[0].record_outcome(true, 2));
        assert!(u[0].record_outcome(true, 2));
        u[0].eject(Duration::from_millis(50));
        assert!(u[0].is_ejected());
        std::thread::sleep(Duration::from_millis(70));
        assert!(!u[0].is_ejected());
        u[0].eject(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(70));
        assert!(u[0].is_ejected(), "second ejection lasts 2x");
    }
}
