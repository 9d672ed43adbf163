//! The DPDK backend of [`PacketIo`]: the engine's lcores polling real ethdev ports.
//!
//! This module owns the glue between the sans-IO engine and the `dpdk` crate's safe wrapper:
//! [`PacketBuf`] for [`dpdk::Mbuf`] (so the pipeline encapsulates in the mbuf's headroom, in
//! place), [`DpdkIo`] (one lcore's queue of every port, moving mbufs between DPDK's burst arrays
//! and the engine's [`Burst`]s without allocating), and the set-up helpers that make the
//! process-lifetime DPDK objects `'static` the way the `dpdk` crate documents: the mempool and
//! the ports are leaked ([`leak_mempool`], [`start_port`]) and each started port is split into
//! one [`PortQueue<'static>`] per lcore, which [`lcore_ios`] deals out.
//!
//! The exception path ([`DpdkIo::with_kernel_path`]): frames the pipeline hands to the kernel
//! (ARP, ND, BGP, SSH, pings to the appliance: anything not for a VIP) go out on this lcore's
//! queue of a TAP port (`net_tap`), whose kernel interface holds the appliance's own addresses,
//! and whatever the kernel sends into that TAP is relayed out of the uplink port by the same
//! lcore, a burst per poll, without touching the pipeline. Without a kernel path,
//! [`PacketIo::to_kernel`] frees and counts ([`DpdkIoStats::kernel_discarded`]).
//!
//! Next hop ([`DpdkIo::with_neighbors`]): lcores post a copy of every ARP/ND frame bound for the
//! kernel to a [`NeighborChannel`] and send the requests the [`crate::nexthop::NeighborService`]
//! queues there, so the gateway's MAC is resolved from the dataplane and published into the
//! tables.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use dpdk::{DpdkError, Eal, Mbuf, Mempool, Port, PortConfig, PortQueue};

use crate::io::{Burst, PacketIo, MAX_BURST};
use crate::nexthop::{is_neighbor_frame, NeighborChannel};
use crate::packet::PacketBuf;
use crate::rss::{RssMode, SYMMETRIC_RSS_KEY};

/// The packet type of [`DpdkIo`]: an mbuf of a leaked (process-lifetime) mempool.
pub type DpdkPacket = Mbuf<'static>;

impl PacketBuf for Mbuf<'_> {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn headroom(&self) -> usize {
        Mbuf::headroom(self)
    }
    #[inline]
    fn prepend(&mut self, len: usize) -> bool {
        Mbuf::prepend(self, len)
    }
    #[inline]
    fn adj(&mut self, len: usize) -> bool {
        Mbuf::adj(self, len)
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        Mbuf::truncate(self, len)
    }
}

/// Why a [`DpdkIo`] could not be assembled from port queues.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DpdkIoError {
    /// No port queue given.
    #[error("dpdk io: no port queue given; pass one queue of every port the lcore polls")]
    NoQueues,
    /// Two queues of the same port.
    #[error("dpdk io: port {0} given twice; pass one queue per port")]
    DuplicatePort(u16),
    /// Queues with different indexes (an lcore uses the same queue index on every port).
    #[error(
        "dpdk io: port {port} queue {queue} given to the lcore of queue {expected}; an lcore uses \
         the same queue index on every port"
    )]
    MixedQueues {
        /// The port whose queue does not match.
        port: u16,
        /// Its queue index.
        queue: u16,
        /// The queue index of the first queue given.
        expected: u16,
    },
    /// The ports were configured with different numbers of queues.
    #[error(
        "dpdk io: port {port} has {queues} queues but the first port has {expected}; configure \
         every port with one queue per lcore"
    )]
    QueueCounts {
        /// The port with a different queue count.
        port: u16,
        /// Its queue count.
        queues: usize,
        /// The first port's queue count.
        expected: usize,
    },
}

/// The wrapper's RSS settings for an [`RssMode`]: the symmetric key where the mode asks for it,
/// and whether a device without RSS is an error.
pub fn rss_config(mode: RssMode) -> Option<dpdk::Rss> {
    let symmetric: &'static [u8] = &SYMMETRIC_RSS_KEY;
    match mode {
        RssMode::Auto => Some(dpdk::Rss {
            key: Some(symmetric),
            required: false,
        }),
        RssMode::Symmetric => Some(dpdk::Rss {
            key: Some(symmetric),
            required: true,
        }),
        RssMode::DeviceKey => Some(dpdk::Rss {
            key: None,
            required: true,
        }),
        RssMode::Off => None,
    }
}

/// A port configuration for `lcores` polling cores (one RX and one TX queue each) with `rss`.
pub fn lcore_port_config(lcores: u16, rss: RssMode) -> PortConfig {
    PortConfig {
        rx_queues: lcores,
        tx_queues: lcores,
        rss: rss_config(rss),
        ..PortConfig::default()
    }
}

/// Creates a packet mempool for the rest of the process (see [`Mempool::new`] for the
/// arguments) and leaks it, so ports and mbufs borrowing it are `'static`.
pub fn leak_mempool(
    eal: &'static Eal,
    name: &str,
    mbufs: u32,
    cache: u32,
    data_room: u16,
) -> Result<&'static Mempool<'static>, DpdkError> {
    let pool = Mempool::new(eal, name, mbufs, cache, data_room)?;
    Ok(Box::leak(Box::new(pool)))
}

/// Configures and starts port `port_id` (receive queues refilling from `pool`), leaks it (it is
/// never stopped or closed: it lives as long as the process) and returns its queues, index `i`
/// for lcore `i` (`config.rx_queues.max(config.tx_queues)` of them).
pub fn start_port(
    pool: &'static Mempool<'static>,
    port_id: u16,
    config: &PortConfig,
) -> Result<Vec<PortQueue<'static>>, DpdkError> {
    let mut port = Port::configure(pool, port_id, config)?;
    port.start()?;
    let port: &'static mut Port<'static> = Box::leak(Box::new(port));
    port.queues()
}

/// Deals the queues of started ports out to lcores: `ports[p][i]` (queue `i` of port `p`) goes
/// to lcore `i`. Returns one [`DpdkIo`] per lcore, in queue order, for
/// [`crate::Engine::start`]'s factory.
pub fn lcore_ios(ports: Vec<Vec<PortQueue<'static>>>) -> Result<Vec<DpdkIo>, DpdkIoError> {
    let expected = ports.first().map_or(0, Vec::len);
    let mut per_lcore: Vec<Vec<PortQueue<'static>>> = (0..expected).map(|_| Vec::new()).collect();
    for queues in ports {
        if queues.len() != expected {
            return Err(DpdkIoError::QueueCounts {
                port: queues.first().map_or(0, PortQueue::port_id),
                queues: queues.len(),
                expected,
            });
        }
        for (lcore, queue) in per_lcore.iter_mut().zip(queues) {
            lcore.push(queue);
        }
    }
    if per_lcore.is_empty() {
        return Err(DpdkIoError::NoQueues);
    }
    per_lcore.into_iter().map(DpdkIo::new).collect()
}

/// Figures of one [`DpdkIo`], written by its lcore only (relaxed load + store) and readable
/// from any thread.
#[derive(Debug, Default)]
pub struct DpdkIoStats {
    kernel_discarded: AtomicU64,
    rx_chained_dropped: AtomicU64,
    from_kernel: AtomicU64,
    from_kernel_dropped: AtomicU64,
    neighbor_sent: AtomicU64,
    neighbor_send_failed: AtomicU64,
    lcore_registered: std::sync::atomic::AtomicBool,
}

/// Single-writer add (the owning lcore is the only writer).
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl DpdkIoStats {
    /// Frames for the kernel that were freed because this lcore has no exception path (the
    /// engine counts them as `kernel_packets`).
    pub fn kernel_discarded(&self) -> u64 {
        self.kernel_discarded.load(Relaxed)
    }

    /// Received frames dropped because they arrived in chained mbufs (several segments): the
    /// pipeline works on one contiguous buffer. Real NICs never chain here (`Port::configure`
    /// keeps the MTU within one mbuf); virtual devices such as `net_pcap` can, for frames larger
    /// than the mempool's data room.
    pub fn rx_chained_dropped(&self) -> u64 {
        self.rx_chained_dropped.load(Relaxed)
    }

    /// Frames the kernel sent into the TAP that this lcore relayed out of the uplink port.
    pub fn from_kernel(&self) -> u64 {
        self.from_kernel.load(Relaxed)
    }

    /// Frames from the kernel that a full uplink TX queue refused (freed).
    pub fn from_kernel_dropped(&self) -> u64 {
        self.from_kernel_dropped.load(Relaxed)
    }

    /// Whether the lcore thread got an EAL lcore id (and so mempool caches) at start.
    pub fn lcore_registered(&self) -> bool {
        self.lcore_registered.load(Relaxed)
    }

    /// ARP/ND requests of the neighbour service sent on the port.
    pub fn neighbor_sent(&self) -> u64 {
        self.neighbor_sent.load(Relaxed)
    }

    /// ARP/ND requests that could not be sent (no mbuf, or a full TX queue).
    pub fn neighbor_send_failed(&self) -> u64 {
        self.neighbor_send_failed.load(Relaxed)
    }
}

/// This lcore's queue of the TAP port and the uplink it relays the kernel's frames to.
struct KernelPath {
    tap: PortQueue<'static>,
    uplink: u16,
    relay: [Option<DpdkPacket>; MAX_BURST],
}

/// Where this lcore posts ARP/ND frames and finds requests to send.
struct Neighbors {
    channel: Arc<NeighborChannel>,
    pool: &'static Mempool<'static>,
    port: u16,
}

/// Received mbufs not yet handed to the engine: DPDK receives a fixed `MAX_BURST` per call and
/// the engine may ask for fewer.
struct RxStash {
    mbufs: [Option<DpdkPacket>; MAX_BURST],
    /// First slot not yet handed out.
    next: usize,
    /// Slots filled by the last receive.
    len: usize,
}

/// One port's queue of this lcore.
struct PortSlot {
    queue: PortQueue<'static>,
    stash: RxStash,
}

/// One lcore's queue of every port it polls, as a [`PacketIo`].
///
/// Frames received and sent are moved between the engine's [`Burst`]s and fixed arrays of
/// [`MAX_BURST`] mbufs that DPDK fills and drains: no allocation per burst. Frames a full TX
/// queue refuses are left at the front of the burst, in order, as the trait asks.
/// [`PacketIo::to_kernel`] sends to the TAP of [`DpdkIo::with_kernel_path`], or frees and counts
/// without one.
pub struct DpdkIo {
    queue: u16,
    /// By port id; `None` for ports this lcore does not poll.
    ports: Box<[Option<PortSlot>]>,
    tx: [Option<DpdkPacket>; MAX_BURST],
    kernel: Option<KernelPath>,
    neighbors: Option<Neighbors>,
    stats: Arc<DpdkIoStats>,
}

impl std::fmt::Debug for DpdkIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self
            .ports
            .iter()
            .flatten()
            .map(|slot| slot.queue.port_id())
            .collect();
        f.debug_struct("DpdkIo")
            .field("queue", &self.queue)
            .field("ports", &ports)
            .finish_non_exhaustive()
    }
}

impl DpdkIo {
    /// The I/O of the lcore that owns `queues`: one queue of each port it polls, all with the
    /// same queue index (the lcore's).
    pub fn new(queues: Vec<PortQueue<'static>>) -> Result<DpdkIo, DpdkIoError> {
        let first = queues.first().ok_or(DpdkIoError::NoQueues)?;
        let queue = first.queue();
        let highest = queues.iter().map(PortQueue::port_id).max().unwrap_or(0);
        let mut ports: Box<[Option<PortSlot>]> = (0..=usize::from(highest)).map(|_| None).collect();
        for q in queues {
            let port = q.port_id();
            if q.queue() != queue {
                return Err(DpdkIoError::MixedQueues {
                    port,
                    queue: q.queue(),
                    expected: queue,
                });
            }
            // `port <= highest`, the last index of `ports`.
            let Some(slot) = ports.get_mut(usize::from(port)) else {
                continue;
            };
            if slot.is_some() {
                return Err(DpdkIoError::DuplicatePort(port));
            }
            *slot = Some(PortSlot {
                queue: q,
                stash: RxStash {
                    mbufs: std::array::from_fn(|_| None),
                    next: 0,
                    len: 0,
                },
            });
        }
        Ok(DpdkIo {
            queue,
            ports,
            tx: std::array::from_fn(|_| None),
            kernel: None,
            neighbors: None,
            stats: Arc::new(DpdkIoStats::default()),
        })
    }

    /// Gives this lcore an exception path: frames for the kernel go out on `tap` (this lcore's
    /// queue of a started `net_tap` port) and what the kernel sends into the TAP leaves through
    /// port `uplink`, which this lcore must poll.
    pub fn with_kernel_path(mut self, tap: PortQueue<'static>, uplink: u16) -> DpdkIo {
        self.kernel = Some(KernelPath {
            tap,
            uplink,
            relay: std::array::from_fn(|_| None),
        });
        self
    }

    /// Connects this lcore to the neighbour service of port `port`: it posts the ARP/ND frames
    /// it hands to the kernel to `channel` and sends the service's requests on `port`, in mbufs
    /// from `pool`.
    pub fn with_neighbors(
        mut self,
        channel: Arc<NeighborChannel>,
        pool: &'static Mempool<'static>,
        port: u16,
    ) -> DpdkIo {
        self.neighbors = Some(Neighbors {
            channel,
            pool,
            port,
        });
        self
    }

    /// Sends what is waiting for `port` outside the pipeline: the kernel's frames from the TAP
    /// and the neighbour service's requests.
    #[inline]
    fn send_side_traffic(&mut self, port: u16) {
        let DpdkIo {
            ports,
            kernel,
            neighbors,
            stats,
            ..
        } = self;
        let Some(slot) = ports.get_mut(usize::from(port)).and_then(Option::as_mut) else {
            return;
        };
        if let Some(k) = kernel.as_mut().filter(|k| k.uplink == port) {
            let n = k.tap.rx_burst(&mut k.relay);
            if n > 0 {
                let sent = slot.queue.tx_burst(&mut k.relay);
                let mut refused = 0u64;
                for entry in k.relay.iter_mut() {
                    if entry.take().is_some() {
                        refused += 1; // freed by the drop
                    }
                }
                bump(&stats.from_kernel, sent as u64);
                bump(&stats.from_kernel_dropped, refused);
            }
        }
        if let Some(nb) = neighbors.as_ref().filter(|nb| nb.port == port) {
            // Rare (one request a second at most): one frame per poll is plenty.
            if let Some(request) = nb.channel.take_outgoing() {
                let mut out: [Option<DpdkPacket>; 1] = [nb.pool.alloc_frame(request.data())];
                let sent = if out[0].is_some() {
                    slot.queue.tx_burst(&mut out)
                } else {
                    0
                };
                if sent == 1 {
                    bump(&stats.neighbor_sent, 1);
                } else {
                    bump(&stats.neighbor_send_failed, 1);
                }
            }
        }
    }

    /// The queue index this lcore owns on every port.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// The ports this lcore polls, in id order.
    pub fn port_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().flatten().map(|slot| slot.queue.port_id())
    }

    /// This I/O's figures (keep the handle to read them after the engine took the I/O).
    pub fn stats(&self) -> Arc<DpdkIoStats> {
        Arc::clone(&self.stats)
    }
}

impl PacketIo for DpdkIo {
    type Packet = DpdkPacket;

    fn on_lcore_start(&mut self) {
        // An EAL lcore id gives this thread a per-lcore cache in every mempool; without one
        // (all ids taken) it still works, through the shared ring.
        self.stats
            .lcore_registered
            .store(dpdk::register_thread().is_ok(), Relaxed);
    }

    #[inline]
    fn rx_burst(
        &mut self,
        port: u16,
        queue: u16,
        out: &mut Burst<DpdkPacket>,
        max: usize,
    ) -> usize {
        let want = max.min(out.room()).min(MAX_BURST);
        if queue != self.queue {
            return 0;
        }
        if self.kernel.is_some() || self.neighbors.is_some() {
            self.send_side_traffic(port);
        }
        // Split borrows: the port's slot mutably, the stats shared.
        let stats = &self.stats;
        let Some(slot) = self
            .ports
            .get_mut(usize::from(port))
            .and_then(Option::as_mut)
        else {
            return 0;
        };
        if want == 0 {
            return 0;
        }
        let stash = &mut slot.stash;
        if stash.next >= stash.len && want == MAX_BURST {
            // The common case (the engine asks for a full burst and nothing is stashed):
            // straight from DPDK into the burst. `out.room() >= MAX_BURST >= n`, so every push
            // succeeds.
            let before = out.len();
            let mut chained = 0u64;
            slot.queue.rx_burst_with::<MAX_BURST>(|mbuf| {
                if mbuf.is_contiguous() {
                    // Cannot be refused (see above); a refused mbuf would be freed by the drop.
                    let _ = out.push(mbuf);
                } else {
                    chained += 1; // freed by the drop; see `rx_chained_dropped`
                }
            });
            if chained > 0 {
                bump(&stats.rx_chained_dropped, chained);
            }
            return out.len() - before;
        }
        if stash.next >= stash.len {
            // Every slot was handed out (taken), so the receive overwrites only `None`s.
            stash.next = 0;
            stash.len = slot.queue.rx_burst(&mut stash.mbufs);
        }
        let mut got = 0;
        while got < want && stash.next < stash.len {
            let Some(entry) = stash.mbufs.get_mut(stash.next) else {
                break;
            };
            let Some(mbuf) = entry.take() else {
                stash.next += 1;
                continue;
            };
            if !mbuf.is_contiguous() {
                // Freed here (drop) and counted; see `DpdkIoStats::rx_chained_dropped`.
                drop(mbuf);
                let counter = &stats.rx_chained_dropped;
                counter.store(counter.load(Relaxed) + 1, Relaxed);
                stash.next += 1;
                continue;
            }
            // Cannot fail: `got < want <= out.room()` at the start of the call.
            if let Err(mbuf) = out.push(mbuf) {
                *entry = Some(mbuf);
                break;
            }
            stash.next += 1;
            got += 1;
        }
        got
    }

    #[inline]
    fn tx_burst(&mut self, port: u16, queue: u16, packets: &mut Burst<DpdkPacket>) -> usize {
        if queue != self.queue {
            return 0;
        }
        let DpdkIo { ports, tx, .. } = self;
        let Some(slot) = ports.get_mut(usize::from(port)).and_then(Option::as_mut) else {
            return 0;
        };
        let mut sent_total = 0;
        while !packets.is_empty() {
            let n = packets.len().min(MAX_BURST);
            // `self.tx` is all `None` between calls (refused mbufs go back below).
            for (entry, packet) in tx.iter_mut().zip(packets.drain_front(n)) {
                *entry = Some(packet);
            }
            let sent = slot.queue.tx_burst(tx);
            sent_total += sent;
            if sent >= n {
                continue;
            }
            // The device took the first `sent`; the rest go back to the front of the burst, in
            // order: append them (there is room, `n` were just removed) and rotate them forward.
            let mut back = 0;
            for entry in tx.iter_mut() {
                if let Some(packet) = entry.take() {
                    match packets.push(packet) {
                        Ok(()) => back += 1,
                        Err(packet) => drop(packet), // unreachable: see above
                    }
                }
            }
            packets.as_mut_slice().rotate_right(back);
            break;
        }
        sent_total
    }

    #[inline]
    fn to_kernel(&mut self, queue: u16, packets: &mut Burst<DpdkPacket>) -> usize {
        if queue != self.queue {
            return 0;
        }
        if let Some(nb) = &self.neighbors {
            for packet in packets.as_slice() {
                if is_neighbor_frame(packet.data()) {
                    nb.channel.post_seen(packet.data());
                }
            }
        }
        let Some(kernel) = self.kernel.as_mut() else {
            // No exception path: take, free and count.
            let taken = packets.len();
            Mbuf::free_bulk(packets.drain());
            bump(&self.stats.kernel_discarded, taken as u64);
            return taken;
        };
        let mut taken = 0;
        while !packets.is_empty() {
            let n = packets.len().min(MAX_BURST);
            for (entry, packet) in self.tx.iter_mut().zip(packets.drain_front(n)) {
                *entry = Some(packet);
            }
            let sent = kernel.tap.tx_burst(&mut self.tx);
            taken += sent;
            if sent >= n {
                continue;
            }
            // A full TAP queue: the rest go back to the front of the burst for the engine to
            // free and count (kernel_dropped), in order, as in tx_burst.
            let mut back = 0;
            for entry in self.tx.iter_mut() {
                if let Some(packet) = entry.take() {
                    match packets.push(packet) {
                        Ok(()) => back += 1,
                        Err(packet) => drop(packet), // unreachable: n were just removed
                    }
                }
            }
            packets.as_mut_slice().rotate_right(back);
            break;
        }
        taken
    }
}
