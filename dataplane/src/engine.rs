//! The per-core polling engine: one thread per lcore, each running bursts to completion.
//!
//! [`Engine::start`] spawns one thread (`vipd-lcore-N`) per configured lcore, optionally pinned
//! to a CPU. Each lcore owns its [`Pipeline`] (flow table and counters, allocated on its own
//! thread so the memory is local to it), its own [`PacketIo`] and queue `N` of every port, and
//! loops in [`Lcore::poll`]: receive a burst of up to [`MAX_BURST`] frames from each port, run
//! [`Pipeline::process`] on it with the tables current at that moment, and act on each verdict:
//! `Forward { port }` goes out on that port's queue `N`, `ToKernel` to the exception path, `Drop`
//! back to the buffer pool. There are no cross-core queues: a frame stays on the core that
//! received it (the NIC's RSS spreads flows over queues).
//!
//! Per burst an lcore reads the clock once (`Instant::now`, a vDSO call, no syscall) and loads
//! the tables once ([`TablesHandle::load`], lock-free); per packet it neither allocates, locks,
//! nor makes a syscall. When a poll round finds nothing, the lcore spins for a while and then
//! yields or sleeps ([`IdlePolicy`]): that is the only syscall in the loop and it is never taken
//! while traffic flows.
//!
//! Each lcore's [`LcoreStats`] are single-writer relaxed atomics (like [`LcoreCounters`]) that
//! the control plane reads at any time; [`Engine::stop`] sets a flag, joins every thread and
//! returns the final figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::counters::{CounterSnapshot, LcoreCounters};
use crate::io::{Burst, PacketIo, MAX_BURST};
use crate::packet::PacketBuf;
use crate::pipeline::{Pipeline, PipelineConfig, Verdict};
use crate::publish::TablesHandle;
use crate::query::{FlowQuery, FoundFlow};

/// What a poll round does when it found no frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Consecutive empty rounds spent busy-polling (with a CPU spin hint) before backing off.
    pub spin_polls: u32,
    /// After that, sleep this long per empty round; 0 = only yield the CPU.
    pub sleep_us: u64,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        // Busy-poll as DPDK applications do, but give the CPU back on a quiet link.
        IdlePolicy {
            spin_polls: 1024,
            sleep_us: 0,
        }
    }
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Polling cores; lcore `N` uses queue `N` of every port.
    pub lcores: u16,
    /// Port ids every lcore polls (and may send on).
    pub ports: Vec<u16>,
    /// Each lcore's pipeline.
    pub pipeline: PipelineConfig,
    /// Frames received per RX call, `1..=MAX_BURST`.
    pub burst_size: usize,
    /// CPU id to pin lcore `N` to (`cpus[N]`); lcores without an entry are not pinned. Pinning is
    /// best effort: a CPU that cannot be used leaves the thread unpinned ([`Engine::pinned`]).
    pub cpus: Vec<usize>,
    /// What idle lcores do.
    pub idle: IdlePolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lcores: 1,
            ports: vec![0],
            pipeline: PipelineConfig::default(),
            burst_size: MAX_BURST,
            cpus: Vec::new(),
            idle: IdlePolicy::default(),
        }
    }
}

/// Why the engine did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No lcore configured.
    #[error("engine: lcores must be at least 1")]
    NoLcores,
    /// No port configured.
    #[error("engine: ports is empty; give every lcore at least one port to poll")]
    NoPorts,
    /// A port listed twice.
    #[error("engine: port {0} is listed twice in ports; list each port once")]
    DuplicatePort(u16),
    /// Burst size out of range.
    #[error("engine: burst_size must be 1..={max}, got {0}", max = MAX_BURST)]
    BurstSize(usize),
    /// An lcore's pipeline could not be built.
    #[error("engine: lcore {0}: {1}")]
    Pipeline(u16, conntrack::ConfigError),
    /// The OS refused a thread.
    #[error("engine: cannot start the thread of lcore {0}: {1}")]
    Spawn(u16, std::io::Error),
    /// An lcore thread panicked (a bug: the packet path must not panic).
    #[error("engine: lcore {0} panicked; its frames were lost, please report a bug")]
    LcorePanicked(u16),
}

/// One lcore's I/O figures, written by that lcore only (relaxed load + store, like
/// [`LcoreCounters`]) and read by the control plane.
#[derive(Debug, Default)]
pub struct LcoreStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    kernel_packets: AtomicU64,
    kernel_dropped: AtomicU64,
    dropped: AtomicU64,
    unroutable: AtomicU64,
    busy_polls: AtomicU64,
    idle_polls: AtomicU64,
    flows: AtomicU64,
}

/// Single-writer add: the owning lcore is the only writer.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl LcoreStats {
    /// A read of every figure (each is some recent value; they are not read atomically together).
    pub fn snapshot(&self) -> LcoreStatsSnapshot {
        LcoreStatsSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_dropped: self.tx_dropped.load(Relaxed),
            kernel_packets: self.kernel_packets.load(Relaxed),
            kernel_dropped: self.kernel_dropped.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            unroutable: self.unroutable.load(Relaxed),
            busy_polls: self.busy_polls.load(Relaxed),
            idle_polls: self.idle_polls.load(Relaxed),
            flows: self.flows.load(Relaxed),
        }
    }
}

/// A read of [`LcoreStats`], or a sum of several.
///
/// Every received frame ends in exactly one of `tx_packets`, `tx_dropped`, `kernel_packets`,
/// `kernel_dropped`, `dropped` and `unroutable` ([`LcoreStatsSnapshot::unaccounted`] is 0 when
/// the lcore is between bursts, e.g. after [`Engine::stop`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LcoreStatsSnapshot {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent on a port (to backends, or ICMP replies).
    pub tx_packets: u64,
    /// Bytes sent on a port (as sent, i.e. after encapsulation).
    pub tx_bytes: u64,
    /// Frames to send that a full TX queue refused.
    pub tx_dropped: u64,
    /// Frames handed to the kernel.
    pub kernel_packets: u64,
    /// Frames for the kernel that a full exception queue refused.
    pub kernel_dropped: u64,
    /// Frames the pipeline dropped (reasons in the pipeline's [`LcoreCounters`]).
    pub dropped: u64,
    /// Frames forwarded to a port this engine does not poll (a configuration error).
    pub unroutable: u64,
    /// Poll rounds that received at least one frame.
    pub busy_polls: u64,
    /// Poll rounds that received nothing.
    pub idle_polls: u64,
    /// Flow-table slots in use after the last poll round (for occupancy metrics; a sum over
    /// lcores is the appliance's total).
    pub flows: u64,
}

impl LcoreStatsSnapshot {
    /// Sums several lcores' figures.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a LcoreStatsSnapshot>) -> LcoreStatsSnapshot {
        all.into_iter()
            .fold(LcoreStatsSnapshot::default(), |a, b| LcoreStatsSnapshot {
                rx_packets: a.rx_packets + b.rx_packets,
                rx_bytes: a.rx_bytes + b.rx_bytes,
                tx_packets: a.tx_packets + b.tx_packets,
                tx_bytes: a.tx_bytes + b.tx_bytes,
                tx_dropped: a.tx_dropped + b.tx_dropped,
                kernel_packets: a.kernel_packets + b.kernel_packets,
                kernel_dropped: a.kernel_dropped + b.kernel_dropped,
                dropped: a.dropped + b.dropped,
                unroutable: a.unroutable + b.unroutable,
                busy_polls: a.busy_polls + b.busy_polls,
                idle_polls: a.idle_polls + b.idle_polls,
                flows: a.flows + b.flows,
            })
    }

    /// Received frames not (yet) accounted for by an outcome; non-zero only mid-burst.
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.rx_packets)
            - i128::from(self.tx_packets)
            - i128::from(self.tx_dropped)
            - i128::from(self.kernel_packets)
            - i128::from(self.kernel_dropped)
            - i128::from(self.dropped)
            - i128::from(self.unroutable)
    }
}

/// Checks a configuration before anything is allocated.
fn validate(config: &EngineConfig) -> Result<(), EngineError> {
    if config.lcores == 0 {
        return Err(EngineError::NoLcores);
    }
    if config.ports.is_empty() {
        return Err(EngineError::NoPorts);
    }
    if !(1..=MAX_BURST).contains(&config.burst_size) {
        return Err(EngineError::BurstSize(config.burst_size));
    }
    for (i, port) in config.ports.iter().enumerate() {
        if config.ports[..i].contains(port) {
            return Err(EngineError::DuplicatePort(*port));
        }
    }
    Ok(())
}

/// The TX burst of port `out` when this lcore polls it (`tx_index` maps port ids to bursts).
#[inline]
fn tx_burst<'a, P>(
    tx_index: &[Option<usize>],
    tx: &'a mut [Burst<P>],
    out: u16,
) -> Option<&'a mut Burst<P>> {
    tx_index
        .get(usize::from(out))
        .copied()
        .flatten()
        .and_then(|i| tx.get_mut(i))
}

/// One polling core's state and loop body. [`Engine`] runs one per thread; tests and tools can
/// drive one directly with [`Lcore::poll`].
pub struct Lcore<Io: PacketIo> {
    queue: u16,
    io: Io,
    pipeline: Pipeline,
    tables: TablesHandle,
    ports: Box<[u16]>,
    /// Port id -> index in `tx` (None: not polled by this engine).
    tx_index: Box<[Option<usize>]>,
    rx: Burst<Io::Packet>,
    /// One pending TX burst per polled port, in `ports` order.
    tx: Box<[Burst<Io::Packet>]>,
    kernel: Burst<Io::Packet>,
    verdicts: [Verdict; MAX_BURST],
    burst_size: usize,
    stats: Arc<LcoreStats>,
    query: Arc<FlowQuery>,
    epoch: Instant,
}

impl<Io: PacketIo> std::fmt::Debug for Lcore<Io> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lcore")
            .field("queue", &self.queue)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl<Io: PacketIo> Lcore<Io> {
    /// Builds lcore `queue` (its pipeline and bursts: every allocation it will ever make).
    /// `epoch` is time 0 of the pipeline's millisecond clock; give every lcore the same one.
    pub fn new(
        queue: u16,
        config: &EngineConfig,
        io: Io,
        tables: TablesHandle,
        epoch: Instant,
    ) -> Result<Lcore<Io>, EngineError> {
        validate(config)?;
        let pipeline =
            Pipeline::new(config.pipeline.clone()).map_err(|e| EngineError::Pipeline(queue, e))?;
        let highest = config.ports.iter().copied().max().unwrap_or(0);
        let mut tx_index = vec![None; usize::from(highest) + 1].into_boxed_slice();
        for (i, port) in config.ports.iter().enumerate() {
            if let Some(slot) = tx_index.get_mut(usize::from(*port)) {
                *slot = Some(i);
            }
        }
        Ok(Lcore {
            queue,
            io,
            pipeline,
            tables,
            ports: config.ports.clone().into_boxed_slice(),
            tx_index,
            rx: Burst::new(MAX_BURST),
            tx: config.ports.iter().map(|_| Burst::new(MAX_BURST)).collect(),
            kernel: Burst::new(MAX_BURST),
            verdicts: [Verdict::ToKernel; MAX_BURST],
            burst_size: config.burst_size,
            stats: Arc::new(LcoreStats::default()),
            query: Arc::default(),
            epoch,
        })
    }

    /// Answers flow lookups posted in `query` (see [`FlowQuery`]) instead of its own.
    pub fn with_flow_query(mut self, query: Arc<FlowQuery>) -> Self {
        self.query = query;
        self
    }

    /// Where the control plane posts flow lookups for this lcore.
    pub fn flow_query(&self) -> Arc<FlowQuery> {
        Arc::clone(&self.query)
    }

    /// The queue this lcore owns on every port (its index).
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// This lcore's I/O figures.
    pub fn stats(&self) -> Arc<LcoreStats> {
        Arc::clone(&self.stats)
    }

    /// This lcore's pipeline counters.
    pub fn counters(&self) -> Arc<LcoreCounters> {
        self.pipeline.counters()
    }

    /// This lcore's pipeline (flow table lookups).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// One poll round: one burst from each port. Returns the frames received.
    pub fn poll(&mut self) -> usize {
        let mut received = 0;
        for i in 0..self.ports.len() {
            if let Some(&port) = self.ports.get(i) {
                received += self.burst(port);
            }
        }
        if received == 0 {
            bump(&self.stats.idle_polls, 1);
        } else {
            bump(&self.stats.busy_polls, 1);
        }
        // Single writer, O(1) read of the table's counter: a plain store per round.
        self.stats
            .flows
            .store(self.pipeline.flows().len() as u64, Relaxed);
        let (pipeline, tables, epoch) = (&self.pipeline, &self.tables, self.epoch);
        self.query.serve(|tuple| {
            let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            pipeline
                .flow(&tables.load(), tuple, now_ms)
                .map(|view| FoundFlow { view, now_ms })
        });
        received
    }

    /// Receives, processes and sends one burst from `port`.
    #[inline]
    fn burst(&mut self, port: u16) -> usize {
        let received = self
            .io
            .rx_burst(port, self.queue, &mut self.rx, self.burst_size);
        if received == 0 || self.rx.is_empty() {
            return 0;
        }
        let n = self.rx.len();

        // One clock read per burst; the pipeline's expiry works in milliseconds.
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let tally = {
            // One version of the tables for the whole burst; the guard is released before the
            // frames are sent, so a publish is never held up by a full TX queue.
            let tables = self.tables.load();
            // `n <= rx.capacity() == MAX_BURST == verdicts.len()`, so this slice is the full
            // burst; `process` only fills verdicts for the frames it has.
            let verdicts = &mut self.verdicts[..n.min(MAX_BURST)];
            self.pipeline
                .process(&tables, port, self.rx.as_mut_slice(), verdicts, now_ms)
        };
        // The pipeline read every frame's length as received (before any encapsulation).
        bump(&self.stats.rx_packets, n as u64);
        bump(&self.stats.rx_bytes, tally.bytes);

        if tally.frames == n as u64 && self.dispatch_whole(&tally) {
            self.flush();
            return n;
        }
        let mut dropped = 0u64;
        let mut unroutable = 0u64;
        for (packet, verdict) in self.rx.drain().zip(self.verdicts.iter()) {
            match *verdict {
                Verdict::Forward { port: out } => {
                    let tx = tx_burst(&self.tx_index, &mut self.tx, out);
                    // Each TX burst holds MAX_BURST and is flushed after every RX burst of at
                    // most MAX_BURST frames, so `push` only fails for an unpolled port.
                    let refused = match tx {
                        Some(tx) => tx.push(packet).err(),
                        None => Some(packet),
                    };
                    if let Some(packet) = refused {
                        self.io.free(packet);
                        unroutable += 1;
                    }
                }
                Verdict::ToKernel => {
                    if let Err(packet) = self.kernel.push(packet) {
                        self.io.free(packet);
                        bump(&self.stats.kernel_dropped, 1);
                    }
                }
                Verdict::Drop(_) => {
                    self.io.free(packet);
                    dropped += 1;
                }
            }
        }
        bump(&self.stats.dropped, dropped);
        bump(&self.stats.unroutable, unroutable);
        self.flush();
        n
    }

    /// When every frame of the burst has the same destination (all for the kernel, or all
    /// forwarded to one polled port whose TX burst is empty), hands the whole RX burst over by
    /// swapping it with that destination's empty burst: no per-frame moves. Returns false,
    /// changing nothing, otherwise.
    #[inline]
    fn dispatch_whole(&mut self, tally: &crate::counters::BurstTally) -> bool {
        if tally.all_to_kernel() {
            if !self.kernel.is_empty() {
                return false;
            }
            std::mem::swap(&mut self.rx, &mut self.kernel);
            return true;
        }
        let Some(out) = tally.all_forwarded_to() else {
            return false;
        };
        let Some(tx) = tx_burst(&self.tx_index, &mut self.tx, out) else {
            return false; // unpolled port: the per-frame path counts them
        };
        if !tx.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.rx, tx);
        true
    }

    /// Sends the pending TX and kernel bursts; frees (and counts) what full queues refused.
    #[inline]
    fn flush(&mut self) {
        for (tx, &port) in self.tx.iter_mut().zip(self.ports.iter()) {
            if tx.is_empty() {
                continue;
            }
            let bytes: usize = tx.as_slice().iter().map(|p| p.data().len()).sum();
            let sent = self.io.tx_burst(port, self.queue, tx);
            let mut left_bytes = 0usize;
            let mut left = 0u64;
            for packet in tx.drain() {
                left_bytes += packet.data().len();
                left += 1;
                self.io.free(packet);
            }
            bump(&self.stats.tx_packets, sent as u64);
            bump(&self.stats.tx_bytes, (bytes - left_bytes) as u64);
            bump(&self.stats.tx_dropped, left);
        }
        if !self.kernel.is_empty() {
            let taken = self.io.to_kernel(self.queue, &mut self.kernel);
            let mut left = 0u64;
            for packet in self.kernel.drain() {
                left += 1;
                self.io.free(packet);
            }
            bump(&self.stats.kernel_packets, taken as u64);
            bump(&self.stats.kernel_dropped, left);
        }
    }
}

/// What a started lcore shares with the control plane: its figures, its counters, whether
/// it was pinned.
type Started = (Arc<LcoreStats>, Arc<LcoreCounters>, bool);

/// What a started lcore thread reports back.
type Ready = Result<Started, EngineError>;

/// Runs lcore `queue` until `stop` is set.
#[allow(clippy::too_many_arguments)] // one call site, each argument a separate part of the lcore
fn run_lcore<Io: PacketIo>(
    queue: u16,
    config: EngineConfig,
    mut io: Io,
    tables: TablesHandle,
    query: Arc<FlowQuery>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<(u16, Ready)>,
) {
    // Pin first, so the flow table is allocated (first-touched) on this CPU's memory node.
    let pinned = config
        .cpus
        .get(usize::from(queue))
        .is_some_and(|&id| core_affinity::set_for_current(core_affinity::CoreId { id }));
    io.on_lcore_start();
    let mut lcore = match Lcore::new(queue, &config, io, tables, epoch) {
        Ok(lcore) => lcore.with_flow_query(query),
        Err(e) => {
            let _ = ready.send((queue, Err(e)));
            return;
        }
    };
    let _ = ready.send((queue, Ok((lcore.stats(), lcore.counters(), pinned))));
    drop(ready);

    let idle = config.idle;
    let mut empty_rounds = 0u32;
    while !stop.load(Relaxed) {
        if lcore.poll() > 0 {
            empty_rounds = 0;
            continue;
        }
        empty_rounds = empty_rounds.saturating_add(1);
        if empty_rounds <= idle.spin_polls {
            std::hint::spin_loop();
        } else if idle.sleep_us == 0 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_micros(idle.sleep_us));
        }
    }
}

/// The running lcores. Dropping it stops them too (without reporting).
#[derive(Debug)]
pub struct Engine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<LcoreStats>>,
    counters: Vec<Arc<LcoreCounters>>,
    pinned: Vec<bool>,
    queries: Vec<Arc<FlowQuery>>,
    tables: TablesHandle,
}

/// The engine's figures at [`Engine::stop`].
#[derive(Clone, Debug)]
pub struct EngineReport {
    /// Per lcore, by index.
    pub lcores: Vec<LcoreStatsSnapshot>,
    /// Sum over lcores.
    pub total: LcoreStatsSnapshot,
    /// The pipelines' counters, summed.
    pub counters: CounterSnapshot,
}

impl Engine {
    /// Starts an engine with exactly one lcore that polls through `io` (`config.lcores` is set
    /// to 1): what tools and tests driving a single queue need.
    pub fn start_one<Io: PacketIo>(
        mut config: EngineConfig,
        io: Io,
        tables: TablesHandle,
    ) -> Result<Engine, EngineError> {
        config.lcores = 1;
        let mut io = Some(io);
        // With one lcore the factory runs once; a second call would get an I/O-less lcore,
        // which cannot happen.
        Engine::start(
            config,
            |_| {
                io.take()
                    .unwrap_or_else(|| unreachable!("one lcore, one call"))
            },
            tables,
        )
    }

    /// Starts `config.lcores` polling threads. `io_factory(n)` makes lcore `n`'s I/O (queue `n`
    /// of every port); it runs here, on the calling thread. Returns once every lcore has built
    /// its pipeline and is polling; if any lcore fails, the others are stopped and the first
    /// error is returned.
    pub fn start<Io, F>(
        config: EngineConfig,
        mut io_factory: F,
        tables: TablesHandle,
    ) -> Result<Engine, EngineError>
    where
        Io: PacketIo,
        F: FnMut(u16) -> Io,
    {
        validate(&config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut engine = Engine {
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(usize::from(config.lcores)),
            stats: Vec::new(),
            counters: Vec::new(),
            pinned: Vec::new(),
            queries: Vec::new(),
            tables: tables.clone(),
        };
        for queue in 0..config.lcores {
            let io = io_factory(queue);
            let query = Arc::new(FlowQuery::default());
            engine.queries.push(Arc::clone(&query));
            let (config, tables, stop, ready) = (
                config.clone(),
                tables.clone(),
                Arc::clone(&stop),
                ready_tx.clone(),
            );
            let thread = thread::Builder::new()
                .name(format!("vipd-lcore-{queue}"))
                .spawn(move || run_lcore(queue, config, io, tables, query, epoch, stop, ready))
                .map_err(|e| EngineError::Spawn(queue, e))?; // `engine`'s Drop stops the others
            engine.threads.push(thread);
        }
        drop(ready_tx);

        let mut started: Vec<Option<Started>> = vec![None; usize::from(config.lcores)];
        let mut first_error = None;
        // Every thread sends exactly once, or dies (panics) and drops its sender.
        for (queue, result) in ready_rx.iter() {
            match result {
                Ok(parts) => {
                    if let Some(slot) = started.get_mut(usize::from(queue)) {
                        *slot = Some(parts);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (queue, parts) in started.into_iter().enumerate() {
            let Some((stats, counters, pinned)) = parts else {
                return Err(EngineError::LcorePanicked(queue as u16));
            };
            engine.stats.push(stats);
            engine.counters.push(counters);
            engine.pinned.push(pinned);
        }
        Ok(engine)
    }

    /// Number of lcores.
    pub fn lcores(&self) -> usize {
        self.stats.len()
    }

    /// Where to post flow lookups, per lcore (each lcore owns its flow table).
    pub fn flow_queries(&self) -> &[Arc<FlowQuery>] {
        &self.queries
    }

    /// Whether each lcore's thread was pinned to its configured CPU.
    pub fn pinned(&self) -> &[bool] {
        &self.pinned
    }

    /// The tables handle the lcores read (publish through it).
    pub fn tables(&self) -> &TablesHandle {
        &self.tables
    }

    /// Current I/O figures, per lcore.
    pub fn stats(&self) -> Vec<LcoreStatsSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Current I/O figures, summed over lcores.
    pub fn total_stats(&self) -> LcoreStatsSnapshot {
        LcoreStatsSnapshot::sum(&self.stats())
    }

    /// Current pipeline counters, summed over lcores.
    pub fn counters(&self) -> CounterSnapshot {
        CounterSnapshot::sum(self.counters.iter().map(|c| &**c))
    }

    /// Each lcore's pipeline counters, by index.
    pub fn lcore_counters(&self) -> &[Arc<LcoreCounters>] {
        &self.counters
    }

    /// Stops every lcore (each finishes its current burst), joins the threads and returns the
    /// final figures. Takes at most one burst plus one idle sleep per lcore.
    pub fn stop(mut self) -> Result<EngineReport, EngineError> {
        let panicked = self.join();
        let lcores = self.stats();
        let report = EngineReport {
            total: LcoreStatsSnapshot::sum(&lcores),
            lcores,
            counters: self.counters(),
        };
        match panicked {
            Some(queue) => Err(EngineError::LcorePanicked(queue)),
            None => Ok(report),
        }
    }

    /// Sets the stop flag and joins; returns the first lcore that panicked, if any.
    fn join(&mut self) -> Option<u16> {
        self.stop.store(true, Relaxed);
        let mut panicked = None;
        for (queue, thread) in self.threads.drain(..).enumerate() {
            if thread.join().is_err() {
                panicked.get_or_insert(queue as u16);
            }
        }
        panicked
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemoryConfig, MemoryPorts};
    use crate::tables::Tables;

    fn config() -> EngineConfig {
        let mut config = EngineConfig::default();
        config.pipeline.flow_table.capacity = 1024;
        config
    }

    #[test]
    fn bad_configs_are_refused_before_starting() {
        let ports = MemoryPorts::new(MemoryConfig::default()).unwrap();
        let tables = TablesHandle::new(Tables::default());
        let start = |config: EngineConfig| Engine::start(config, |q| ports.io(q), tables.clone());
        let e = start(EngineConfig {
            lcores: 0,
            ..config()
        });
        assert!(matches!(e, Err(EngineError::NoLcores)));
        let e = start(EngineConfig {
            burst_size: 33,
            ..config()
        });
        assert!(matches!(e, Err(EngineError::BurstSize(33))));
        let e = start(EngineConfig {
            ports: vec![0, 1, 0],
            ..config()
        });
        assert!(matches!(e, Err(EngineError::DuplicatePort(0))));
        let e = start(EngineConfig {
            ports: Vec::new(),
            ..config()
        });
        assert!(matches!(e, Err(EngineError::NoPorts)));
    }

    #[test]
    fn a_bad_pipeline_config_stops_every_lcore() {
        let ports = MemoryPorts::new(MemoryConfig::default()).unwrap();
        let mut config = config();
        config.lcores = 2;
        config.pipeline.flow_table.capacity = 0;
        let e = Engine::start(
            config,
            |q| ports.io(q),
            TablesHandle::new(Tables::default()),
        )
        .unwrap_err();
        assert!(matches!(e, EngineError::Pipeline(_, _)), "{e}");
        assert!(e.to_string().contains("flow table capacity"), "{e}");
    }

    #[test]
    fn snapshots_sum_and_account() {
        let a = LcoreStatsSnapshot {
            rx_packets: 10,
            tx_packets: 4,
            tx_dropped: 1,
            kernel_packets: 2,
            dropped: 3,
            ..LcoreStatsSnapshot::default()
        };
        let b = LcoreStatsSnapshot {
            rx_packets: 1,
            unroutable: 1,
            ..LcoreStatsSnapshot::default()
        };
        let s = LcoreStatsSnapshot::sum([&a, &b]);
        assert_eq!((s.rx_packets, s.unaccounted()), (11, 0));
        assert_eq!(a.unaccounted(), 0);
        assert_eq!(b.unaccounted(), 0);
    }
}
