//! Packet I/O: what a polling core needs from the ports, and an in-memory backend.
//!
//! [`PacketIo`] is the contract between a polling core (lcore) and its port queues: receive a
//! burst from an RX queue, send a burst on a TX queue, hand frames to the kernel (exception
//! path), free frames. It is shaped after DPDK's `rte_eth_rx_burst` / `rte_eth_tx_burst` so the
//! DPDK backend implements it without change: bursts are [`Burst`]s of fixed capacity (at most
//! [`MAX_BURST`] frames, allocated once, never grown), packets are owned values (an mbuf
//! wrapper whose `Drop` returns the mbuf to its mempool), and a queue is used by one lcore only.
//!
//! [`MemoryPorts`] / [`MemoryIo`] are the pure-Rust backend for tests and tools: every
//! (port, queue) has a bounded, preallocated, lock-free RX ring and TX ring of [`HeapPacket`]s,
//! every queue has a kernel (exception) ring, and freed buffers go back to a pool the injecting
//! side refills, so a warmed-up lcore neither allocates nor frees memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::packet::{HeapPacket, PacketBuf};

/// Frames per burst: DPDK's customary burst size, and the pipeline's group size.
pub const MAX_BURST: usize = crate::pipeline::MAX_GROUP;

/// A fixed-capacity list of owned packets, the unit of RX and TX.
///
/// Its storage is allocated once by [`Burst::new`]; [`Burst::push`] refuses a packet instead of
/// growing, so moving packets through a burst never allocates.
#[derive(Debug)]
pub struct Burst<P> {
    packets: Vec<P>,
    capacity: usize,
}

impl<P> Burst<P> {
    /// An empty burst that holds up to `capacity` packets (allocates once, here).
    pub fn new(capacity: usize) -> Burst<P> {
        Burst {
            packets: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends a packet; hands it back when the burst is full.
    #[inline]
    pub fn push(&mut self, packet: P) -> Result<(), P> {
        if self.packets.len() >= self.capacity {
            return Err(packet);
        }
        // No reallocation: `Vec::with_capacity(capacity)` reserved at least `capacity` slots.
        self.packets.push(packet);
        Ok(())
    }

    /// Packets held.
    #[inline]
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether the burst holds no packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Most packets the burst holds.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Packets that still fit.
    #[inline]
    pub fn room(&self) -> usize {
        self.capacity - self.packets.len()
    }

    /// The packets, in order.
    #[inline]
    pub fn as_slice(&self) -> &[P] {
        &self.packets
    }

    /// The packets, writable (what [`crate::Pipeline::process`] takes).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [P] {
        &mut self.packets
    }

    /// Removes the first `n` packets (all of them if fewer) and yields them in order.
    /// Packets of the range the iterator is not run over are dropped.
    #[inline]
    pub fn drain_front(&mut self, n: usize) -> std::vec::Drain<'_, P> {
        let n = n.min(self.packets.len());
        self.packets.drain(..n)
    }

    /// Removes every packet and yields them in order.
    #[inline]
    pub fn drain(&mut self) -> std::vec::Drain<'_, P> {
        self.packets.drain(..)
    }
}

/// What a polling core needs from its port queues.
///
/// # Contract
///
/// - **One instance per lcore.** The engine creates one `PacketIo` per lcore and moves it to that
///   lcore's thread; an instance uses queue `queue` of each port and nobody else uses that queue
///   (no locks needed on either side; DPDK queues are not thread-safe either).
/// - **Ownership.** [`PacketIo::rx_burst`] moves received packets into the caller's burst; from
///   then on the caller owns them. [`PacketIo::tx_burst`] and [`PacketIo::to_kernel`] take the
///   packets they accept off the *front* of the burst (ownership passes to the device); the
///   packets they leave behind are still the caller's, which counts them as dropped and hands
///   them to [`PacketIo::free`] (or retries). Dropping a packet frees it too (an mbuf wrapper
///   returns the mbuf to its pool in `Drop`); `free` exists so a backend can recycle cheaply.
/// - **No allocation, lock or blocking** in any method: they are called per burst on the lcore.
///   A burst never grows past its capacity ([`Burst::push`] refuses), and at most
///   [`MAX_BURST`] frames are received per call.
/// - Unknown ports or queues are not errors on the packet path: `rx_burst` receives nothing
///   and `tx_burst` sends nothing (the caller then counts the packets as dropped).
pub trait PacketIo: Send + 'static {
    /// The packet buffer (a DPDK mbuf wrapper, [`HeapPacket`] in memory).
    type Packet: PacketBuf + Send;

    /// Receives up to `max` frames (and no more than `out.room()`) from RX queue `queue` of
    /// `port`, appending them to `out`. Returns how many were appended.
    fn rx_burst(
        &mut self,
        port: u16,
        queue: u16,
        out: &mut Burst<Self::Packet>,
        max: usize,
    ) -> usize;

    /// Sends frames from the front of `packets` on TX queue `queue` of `port`, as many as the
    /// queue takes, removing those from `packets`. Returns how many were sent.
    fn tx_burst(&mut self, port: u16, queue: u16, packets: &mut Burst<Self::Packet>) -> usize;

    /// Hands frames from the front of `packets` to the kernel (exception path: ARP, ND, BGP, SSH,
    /// anything not for a VIP) on this lcore's exception queue `queue`, removing those taken.
    /// Returns how many were taken.
    fn to_kernel(&mut self, queue: u16, packets: &mut Burst<Self::Packet>) -> usize;

    /// Called once on the lcore's own thread before it starts polling (e.g. to register the
    /// thread with DPDK).
    fn on_lcore_start(&mut self) {}

    /// Frees a packet that is not sent (dropped by the pipeline, or refused by a full queue).
    #[inline]
    fn free(&mut self, packet: Self::Packet) {
        drop(packet);
    }
}

/// Sizing of a [`MemoryPorts`].
#[derive(Clone, Copy, Debug)]
pub struct MemoryConfig {
    /// Ports (ids `0..ports`).
    pub ports: u16,
    /// Queues per port, one per lcore (ids `0..queues`); also the number of kernel rings.
    pub queues: u16,
    /// Slots of each RX ring.
    pub rx_ring_size: usize,
    /// Slots of each TX ring.
    pub tx_ring_size: usize,
    /// Slots of each kernel (exception) ring.
    pub kernel_ring_size: usize,
    /// Freed buffers kept for reuse by [`MemoryPorts::inject`].
    pub pool_size: usize,
    /// Headroom of injected frames.
    pub headroom: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            ports: 1,
            queues: 1,
            rx_ring_size: 1024,
            tx_ring_size: 1024,
            kernel_ring_size: 1024,
            pool_size: 1024,
            headroom: HeapPacket::DEFAULT_HEADROOM,
        }
    }
}

/// A ring size of zero (`crossbeam_queue::ArrayQueue` needs at least one slot).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("memory ports: {0} must be at least 1; size every ring and the port/queue counts above 0")]
pub struct MemoryConfigError(&'static str);

struct MemoryShared {
    config: MemoryConfig,
    rx: Box<[ArrayQueue<HeapPacket>]>,
    tx: Box<[ArrayQueue<HeapPacket>]>,
    kernel: Box<[ArrayQueue<HeapPacket>]>,
    pool: ArrayQueue<HeapPacket>,
    /// TX pushes refused although the ring had room: only possible if two producers share a
    /// TX ring, which the contract forbids. Tests assert it stays 0.
    lost: AtomicU64,
}

impl MemoryShared {
    #[inline]
    fn index(&self, port: u16, queue: u16) -> Option<usize> {
        (port < self.config.ports && queue < self.config.queues)
            .then(|| usize::from(port) * usize::from(self.config.queues) + usize::from(queue))
    }
}

/// The in-memory "wire": the rings of every port queue, seen from outside the lcores.
///
/// Clone it freely (it is a handle). Tests and tools inject frames into RX rings with
/// [`MemoryPorts::inject`] and collect what the lcores sent with [`MemoryPorts::take_tx`] and
/// [`MemoryPorts::take_kernel`]; each lcore gets its [`MemoryIo`] from [`MemoryPorts::io`].
/// Each RX ring should have one injecting thread, each TX and kernel ring one collecting thread.
#[derive(Clone)]
pub struct MemoryPorts {
    shared: Arc<MemoryShared>,
}

impl std::fmt::Debug for MemoryPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPorts")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl MemoryPorts {
    /// Allocates every ring (bounded, preallocated).
    pub fn new(config: MemoryConfig) -> Result<MemoryPorts, MemoryConfigError> {
        for (value, name) in [
            (usize::from(config.ports), "ports"),
            (usize::from(config.queues), "queues"),
            (config.rx_ring_size, "rx_ring_size"),
            (config.tx_ring_size, "tx_ring_size"),
            (config.kernel_ring_size, "kernel_ring_size"),
            (config.pool_size, "pool_size"),
        ] {
            if value == 0 {
                return Err(MemoryConfigError(name));
            }
        }
        let rings = usize::from(config.ports) * usize::from(config.queues);
        Ok(MemoryPorts {
            shared: Arc::new(MemoryShared {
                config,
                rx: (0..rings)
                    .map(|_| ArrayQueue::new(config.rx_ring_size))
                    .collect(),
                tx: (0..rings)
                    .map(|_| ArrayQueue::new(config.tx_ring_size))
                    .collect(),
                kernel: (0..config.queues)
                    .map(|_| ArrayQueue::new(config.kernel_ring_size))
                    .collect(),
                pool: ArrayQueue::new(config.pool_size),
                lost: AtomicU64::new(0),
            }),
        })
    }

    /// The sizing this was built with.
    pub fn config(&self) -> &MemoryConfig {
        &self.shared.config
    }

    /// The lcore side of queue `queue` of every port.
    pub fn io(&self, queue: u16) -> MemoryIo {
        MemoryIo {
            shared: Arc::clone(&self.shared),
            queue,
        }
    }

    /// Copies `frame` into a buffer (a recycled one when the pool has one that fits) and puts
    /// it on the RX ring of `port`/`queue`. Returns false when the ring is full or the port or
    /// queue does not exist (retry later, as a NIC would drop).
    pub fn inject(&self, port: u16, queue: u16, frame: &[u8]) -> bool {
        let headroom = self.shared.config.headroom;
        let packet = match self.shared.pool.pop() {
            Some(mut recycled) => {
                if recycled.refill(frame, headroom) {
                    recycled
                } else {
                    HeapPacket::from_frame(frame, headroom)
                }
            }
            None => HeapPacket::from_frame(frame, headroom),
        };
        match self.inject_packet(port, queue, packet) {
            Ok(()) => true,
            Err(packet) => {
                self.recycle(packet);
                false
            }
        }
    }

    /// Puts a packet on the RX ring of `port`/`queue`; hands it back when the ring is full or
    /// the port or queue does not exist.
    pub fn inject_packet(
        &self,
        port: u16,
        queue: u16,
        packet: HeapPacket,
    ) -> Result<(), HeapPacket> {
        match self.shared.index(port, queue) {
            Some(i) => self.shared.rx[i].push(packet),
            None => Err(packet),
        }
    }

    /// Takes the oldest frame the lcore of `queue` sent on `port`.
    pub fn take_tx(&self, port: u16, queue: u16) -> Option<HeapPacket> {
        self.shared.tx[self.shared.index(port, queue)?].pop()
    }

    /// Takes the oldest frame the lcore of `queue` handed to the kernel.
    pub fn take_kernel(&self, queue: u16) -> Option<HeapPacket> {
        self.shared.kernel.get(usize::from(queue))?.pop()
    }

    /// Frames waiting on the RX ring of `port`/`queue` (0 for an unknown ring).
    pub fn rx_pending(&self, port: u16, queue: u16) -> usize {
        self.shared
            .index(port, queue)
            .map_or(0, |i| self.shared.rx[i].len())
    }

    /// Gives a buffer back to the pool for the next [`MemoryPorts::inject`] (dropped if full).
    pub fn recycle(&self, packet: HeapPacket) {
        let _ = self.shared.pool.push(packet);
    }

    /// Buffers waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.shared.pool.len()
    }

    /// Frames lost because two producers shared a TX ring (a contract violation; always 0 when
    /// each queue has one lcore).
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Relaxed)
    }
}

/// One lcore's view of a [`MemoryPorts`]: queue `queue` of every port. See [`PacketIo`].
pub struct MemoryIo {
    shared: Arc<MemoryShared>,
    queue: u16,
}

impl std::fmt::Debug for MemoryIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryIo")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl MemoryIo {
    /// The queue this lcore owns on every port.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

/// Pushes packets from the front of `packets` into `ring` while it has room.
///
/// With one producer, the free space seen before pushing can only grow meanwhile (the consumer
/// only pops), so every push of the first `room` packets succeeds.
#[inline]
fn push_front(
    ring: &ArrayQueue<HeapPacket>,
    packets: &mut Burst<HeapPacket>,
    lost: &AtomicU64,
) -> usize {
    let room = ring.capacity() - ring.len();
    let mut sent = 0;
    for packet in packets.drain_front(room) {
        match ring.push(packet) {
            Ok(()) => sent += 1,
            Err(_) => {
                lost.fetch_add(1, Relaxed);
            }
        }
    }
    sent
}

impl PacketIo for MemoryIo {
    type Packet = HeapPacket;

    #[inline]
    fn rx_burst(
        &mut self,
        port: u16,
        queue: u16,
        out: &mut Burst<HeapPacket>,
        max: usize,
    ) -> usize {
        let Some(i) = self.shared.index(port, queue) else {
            return 0;
        };
        let ring = &self.shared.rx[i];
        let want = max.min(out.room()).min(MAX_BURST);
        let mut got = 0;
        while got < want {
            let Some(packet) = ring.pop() else { break };
            // Cannot fail: `want <= out.room()`.
            if let Err(packet) = out.push(packet) {
                self.free(packet);
                break;
            }
            got += 1;
        }
        got
    }

    #[inline]
    fn tx_burst(&mut self, port: u16, queue: u16, packets: &mut Burst<HeapPacket>) -> usize {
        match self.shared.index(port, queue) {
            Some(i) => push_front(&self.shared.tx[i], packets, &self.shared.lost),
            None => 0,
        }
    }

    #[inline]
    fn to_kernel(&mut self, queue: u16, packets: &mut Burst<HeapPacket>) -> usize {
        match self.shared.kernel.get(usize::from(queue)) {
            Some(ring) => push_front(ring, packets, &self.shared.lost),
            None => 0,
        }
    }

    #[inline]
    fn free(&mut self, packet: HeapPacket) {
        // Back to the pool for the injecting side; a full pool drops (frees) it.
        let _ = self.shared.pool.push(packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_refuses_instead_of_growing() {
        let mut b = Burst::new(2);
        assert_eq!((b.push(1), b.push(2), b.push(3)), (Ok(()), Ok(()), Err(3)));
        assert_eq!((b.len(), b.room(), b.capacity()), (2, 0, 2));
        let front: Vec<_> = b.drain_front(1).collect();
        assert_eq!(front, [1]);
        assert_eq!(b.as_slice(), &[2]);
        assert_eq!(b.drain_front(9).count(), 1);
        assert!(b.is_empty());
    }

    fn ports(tx_ring_size: usize) -> MemoryPorts {
        MemoryPorts::new(MemoryConfig {
            ports: 2,
            queues: 2,
            tx_ring_size,
            kernel_ring_size: 1,
            pool_size: 4,
            ..MemoryConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn rings_are_per_port_and_queue() {
        let p = ports(8);
        assert!(p.inject(1, 0, &[1]));
        assert!(p.inject(0, 1, &[2]));
        assert!(!p.inject(2, 0, &[3]), "no port 2");
        assert!(!p.inject(0, 2, &[3]), "no queue 2");
        let mut io0 = p.io(0);
        let mut burst = Burst::new(MAX_BURST);
        assert_eq!(io0.rx_burst(0, 0, &mut burst, MAX_BURST), 0);
        assert_eq!(io0.rx_burst(1, 0, &mut burst, MAX_BURST), 1);
        assert_eq!(burst.as_slice()[0].data(), &[1]);
        assert_eq!(io0.rx_burst(0, 1, &mut burst, MAX_BURST), 1);
        assert_eq!(burst.as_slice()[1].data(), &[2]);
        assert_eq!(io0.tx_burst(1, 1, &mut burst), 2);
        assert!(burst.is_empty());
        assert_eq!(p.take_tx(1, 1).map(|f| f.data().to_vec()), Some(vec![1]));
        assert_eq!(p.take_tx(1, 1).map(|f| f.data().to_vec()), Some(vec![2]));
        assert!(p.take_tx(1, 1).is_none());
        assert!(p.take_tx(9, 9).is_none());
    }

    #[test]
    fn rx_respects_max_and_room() {
        let p = ports(8);
        for i in 0..5 {
            assert!(p.inject(0, 0, &[i]));
        }
        let mut io = p.io(0);
        let mut burst = Burst::new(3);
        assert_eq!(io.rx_burst(0, 0, &mut burst, 2), 2);
        assert_eq!(io.rx_burst(0, 0, &mut burst, 9), 1, "only one slot left");
        assert_eq!(p.rx_pending(0, 0), 2);
    }

    #[test]
    fn full_rings_leave_the_rest_with_the_caller() {
        let p = ports(2);
        let mut io = p.io(0);
        let mut burst = Burst::new(MAX_BURST);
        for i in 0..5 {
            assert!(burst.push(HeapPacket::from_frame(&[i], 0)).is_ok());
        }
        assert_eq!(io.tx_burst(0, 0, &mut burst), 2);
        assert_eq!(
            burst.as_slice()[0].data(),
            &[2],
            "unsent packets stay in order"
        );
        assert_eq!(io.to_kernel(0, &mut burst), 1);
        assert_eq!(io.to_kernel(0, &mut burst), 0, "kernel ring full");
        assert_eq!(p.take_kernel(0).map(|f| f.data().to_vec()), Some(vec![2]));
        assert_eq!(io.to_kernel(7, &mut burst), 0, "no such queue");
        for packet in burst.drain() {
            io.free(packet);
        }
        assert_eq!(p.pooled(), 2);
        assert_eq!(p.lost(), 0);
    }

    #[test]
    fn inject_reuses_pooled_buffers() {
        let p = ports(2);
        let mut io = p.io(0);
        io.free(HeapPacket::with_capacity(512));
        assert_eq!(p.pooled(), 1);
        assert!(p.inject(0, 0, &[7; 100]));
        assert_eq!(p.pooled(), 0, "the pooled buffer was refilled");
        let mut burst = Burst::new(MAX_BURST);
        assert_eq!(io.rx_burst(0, 0, &mut burst, MAX_BURST), 1);
        let packet = &burst.as_slice()[0];
        assert_eq!(packet.data(), &[7; 100]);
        assert_eq!(packet.headroom(), HeapPacket::DEFAULT_HEADROOM);
    }

    #[test]
    fn zero_sizes_are_refused() {
        let err = MemoryPorts::new(MemoryConfig {
            tx_ring_size: 0,
            ..MemoryConfig::default()
        })
        .unwrap_err();
        assert_eq!(err, MemoryConfigError("tx_ring_size"));
        assert!(err.to_string().contains("tx_ring_size must be at least 1"));
    }
}
