//! Per-lcore counters: packets and bytes per VIP and per backend, verdict totals, drops by reason.
//!
//! Each polling core owns one [`LcoreCounters`] and is its only writer; the control plane reads all
//! of them and sums ([`CounterSnapshot::sum`]). Counters are relaxed atomics written with a plain
//! load + store (no locked read-modify-write on the hot path): with one writer nothing is lost, and
//! a reader sees each counter as some recent value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was dropped. Every drop has exactly one reason and is counted under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    L2Malformed,
    /// More than two stacked VLAN tags.
    VlanTooDeep,
    /// IPv4 header truncated or inconsistent (version, IHL, total length).
    Ipv4Malformed,
    /// IPv4 header checksum wrong.
    Ipv4BadChecksum,
    /// IPv6 header truncated or inconsistent.
    Ipv6Malformed,
    /// IPv6 extension-header chain truncated, too long, or inconsistent.
    Ipv6ExtMalformed,
    /// TCP header truncated or inconsistent.
    TcpMalformed,
    /// UDP header truncated or inconsistent.
    UdpMalformed,
    /// ICMP message truncated, or an ICMP error whose embedded packet cannot be read.
    IcmpMalformed,
    /// ICMP to a VIP address that we neither answer nor forward (e.g. a redirect).
    IcmpUnsupported,
    /// Addressed to a VIP address, but no VIP serves that protocol and port.
    NoVipForPort,
    /// A fragment for a VIP address that has several port-specific VIPs for its protocol, so the
    /// fragment's VIP cannot be known (configure an all-ports VIP to accept fragments).
    FragmentAmbiguous,
    /// The VIP has no backend that can take new flows.
    NoBackend,
    /// The encapsulated frame would exceed the egress MTU, and the packet may be fragmented
    /// (IPv4 without DF); we do not fragment on the fast path.
    TooBigNoDf,
    /// Too big, DF set, but the packet is itself an ICMP error: no ICMP about ICMP errors.
    TooBigIcmpError,
    /// Not enough headroom in the buffer to prepend the encapsulation.
    NoHeadroom,
    /// An ICMP message we would generate (echo reply, fragmentation needed, packet too big)
    /// exceeded this core's ICMP rate limit.
    IcmpRateLimited,
    /// The VIP's configuration cannot forward this packet (e.g. no encapsulation source of the
    /// backend's address family). The control plane validates this; seeing it is a bug report.
    Misconfigured,
    /// The egress port's gateway MAC is unknown (not resolved yet by ARP/ND, or the gateway
    /// stopped answering): dropped rather than sent to a stale or zero MAC.
    NoNextHop,
}

impl DropReason {
    /// Number of reasons (size of per-reason arrays).
    pub const COUNT: usize = 19;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::L2Malformed,
        DropReason::VlanTooDeep,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv6Malformed,
        DropReason::Ipv6ExtMalformed,
        DropReason::TcpMalformed,
        DropReason::UdpMalformed,
        DropReason::IcmpMalformed,
        DropReason::IcmpUnsupported,
        DropReason::NoVipForPort,
        DropReason::FragmentAmbiguous,
        DropReason::NoBackend,
        DropReason::TooBigNoDf,
        DropReason::TooBigIcmpError,
        DropReason::NoHeadroom,
        DropReason::IcmpRateLimited,
        DropReason::Misconfigured,
        DropReason::NoNextHop,
    ];

    /// Stable snake_case name, used in metrics labels, the admin socket and test fixtures.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::L2Malformed => "l2_malformed",
            DropReason::VlanTooDeep => "vlan_too_deep",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv6Malformed => "ipv6_malformed",
            DropReason::Ipv6ExtMalformed => "ipv6_ext_malformed",
            DropReason::TcpMalformed => "tcp_malformed",
            DropReason::UdpMalformed => "udp_malformed",
            DropReason::IcmpMalformed => "icmp_malformed",
            DropReason::IcmpUnsupported => "icmp_unsupported",
            DropReason::NoVipForPort => "no_vip_for_port",
            DropReason::FragmentAmbiguous => "fragment_ambiguous",
            DropReason::NoBackend => "no_backend",
            DropReason::TooBigNoDf => "too_big_no_df",
            DropReason::TooBigIcmpError => "too_big_icmp_error",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::Misconfigured => "misconfigured",
            DropReason::NoNextHop => "no_next_hop",
        }
    }
}

/// Packets and bytes.
#[derive(Debug, Default)]
pub struct TrafficCounter {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl TrafficCounter {
    #[inline]
    fn add(&self, bytes: usize) {
        bump(&self.packets, 1);
        bump(&self.bytes, bytes as u64);
    }
    fn read(&self) -> Traffic {
        Traffic {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

/// A read of a [`TrafficCounter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Bytes (of the frame as received for VIPs, as sent for backends).
    pub bytes: u64,
}

/// Single-writer increment: the owning lcore is the only writer, so load + store loses nothing
/// and avoids a locked instruction per packet.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// The counters of one polling core.
#[derive(Debug)]
pub struct LcoreCounters {
    rx: TrafficCounter,
    forwarded: AtomicU64,
    to_kernel: AtomicU64,
    icmp_generated: AtomicU64,
    flow_insert_failed: AtomicU64,
    flows_rehashed: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    vips: Box<[TrafficCounter]>,
    backends: Box<[TrafficCounter]>,
}

impl LcoreCounters {
    /// Counters for up to `max_vips` VIP ids and `max_backends` backend ids.
    pub fn new(max_vips: usize, max_backends: usize) -> LcoreCounters {
        LcoreCounters {
            rx: TrafficCounter::default(),
            forwarded: AtomicU64::new(0),
            to_kernel: AtomicU64::new(0),
            icmp_generated: AtomicU64::new(0),
            flow_insert_failed: AtomicU64::new(0),
            flows_rehashed: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            vips: (0..max_vips).map(|_| TrafficCounter::default()).collect(),
            backends: (0..max_backends)
                .map(|_| TrafficCounter::default())
                .collect(),
        }
    }

    #[cfg(test)]
    fn rx(&self, bytes: usize) {
        self.rx.add(bytes);
    }
    /// Adds a burst's totals (kept in registers by the pipeline): one write per counter per
    /// burst instead of one per frame.
    #[inline]
    pub(crate) fn burst(&self, tally: &BurstTally) {
        bump(&self.rx.packets, tally.frames);
        bump(&self.rx.bytes, tally.bytes);
        bump(&self.forwarded, tally.forwarded);
        bump(&self.to_kernel, tally.to_kernel);
    }
    #[inline]
    pub(crate) fn icmp_generated(&self) {
        bump(&self.icmp_generated, 1);
    }
    #[inline]
    pub(crate) fn flow_insert_failed(&self) {
        bump(&self.flow_insert_failed, 1);
    }
    #[inline]
    pub(crate) fn flow_rehashed(&self) {
        bump(&self.flows_rehashed, 1);
    }
    #[inline]
    pub(crate) fn dropped(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }
    #[inline]
    pub(crate) fn vip(&self, vip: usize, bytes: usize) {
        if let Some(c) = self.vips.get(vip) {
            c.add(bytes);
        }
    }
    #[inline]
    pub(crate) fn backend(&self, backend: usize, bytes: usize) {
        if let Some(c) = self.backends.get(backend) {
            c.add(bytes);
        }
    }
}

/// What one call of [`crate::Pipeline::process`] did, counted as it went (the per-burst part of
/// [`LcoreCounters`], written once per burst), for the caller to dispatch and account the burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstTally {
    /// Frames processed.
    pub frames: u64,
    /// Their bytes, as received.
    pub bytes: u64,
    /// Verdicts `Forward`.
    pub forwarded: u64,
    /// Verdicts `ToKernel`.
    pub to_kernel: u64,
    /// Verdicts `Drop` (reasons in [`LcoreCounters`]).
    pub dropped: u64,
    /// The port of every `Forward` verdict when they all name the same one (`None` when there
    /// is none, or several ports).
    pub forward_port: Option<u16>,
    /// Whether `Forward` verdicts name more than one port.
    pub mixed_ports: bool,
}

impl BurstTally {
    /// Counts one verdict.
    #[inline]
    pub(crate) fn verdict(&mut self, verdict: crate::pipeline::Verdict) {
        use crate::pipeline::Verdict;
        match verdict {
            Verdict::Forward { port } => {
                self.forwarded += 1;
                match self.forward_port {
                    None if !self.mixed_ports => self.forward_port = Some(port),
                    Some(p) if p != port => {
                        self.forward_port = None;
                        self.mixed_ports = true;
                    }
                    _ => {}
                }
            }
            Verdict::ToKernel => self.to_kernel += 1,
            Verdict::Drop(_) => self.dropped += 1,
        }
    }

    /// Every frame of the burst has the verdict `ToKernel`.
    #[inline]
    pub fn all_to_kernel(&self) -> bool {
        self.to_kernel == self.frames
    }

    /// The port every frame of the burst is forwarded to, if they all are and to one port.
    #[inline]
    pub fn all_forwarded_to(&self) -> Option<u16> {
        if self.forwarded == self.frames {
            self.forward_port
        } else {
            None
        }
    }
}

/// A summed read of one or more cores' counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Frames received.
    pub rx: Traffic,
    /// Frames forwarded (to a backend, or an ICMP reply to a client).
    pub forwarded: u64,
    /// Frames handed to the kernel (not for a VIP).
    pub to_kernel: u64,
    /// ICMP messages generated (echo replies, fragmentation needed, packet too big).
    pub icmp_generated: u64,
    /// Flows forwarded but not tracked because the flow table refused them (full, SYN budget).
    pub flow_insert_failed: u64,
    /// Tracked flows moved to a new backend because theirs went down or was removed.
    pub flows_rehashed: u64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::COUNT],
    /// Per VIP id.
    pub vips: Vec<Traffic>,
    /// Per backend id.
    pub backends: Vec<Traffic>,
}

impl CounterSnapshot {
    /// Sums the counters of all given cores.
    pub fn sum<'a>(cores: impl IntoIterator<Item = &'a LcoreCounters>) -> CounterSnapshot {
        let mut s = CounterSnapshot::default();
        for c in cores {
            let rx = c.rx.read();
            s.rx.packets += rx.packets;
            s.rx.bytes += rx.bytes;
            s.forwarded += c.forwarded.load(Relaxed);
            s.to_kernel += c.to_kernel.load(Relaxed);
            s.icmp_generated += c.icmp_generated.load(Relaxed);
            s.flow_insert_failed += c.flow_insert_failed.load(Relaxed);
            s.flows_rehashed += c.flows_rehashed.load(Relaxed);
            for (total, d) in s.drops.iter_mut().zip(c.drops.iter()) {
                *total += d.load(Relaxed);
            }
            add_all(&mut s.vips, &c.vips);
            add_all(&mut s.backends, &c.backends);
        }
        s
    }

    /// Drops under one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

fn add_all(totals: &mut Vec<Traffic>, counters: &[TrafficCounter]) {
    if totals.len() < counters.len() {
        totals.resize(counters.len(), Traffic::default());
    }
    for (t, c) in totals.iter_mut().zip(counters) {
        let r = c.read();
        t.packets += r.packets;
        t.bytes += r.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_in_order_and_named_uniquely() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn snapshot_sums_cores() {
        let a = LcoreCounters::new(2, 2);
        let b = LcoreCounters::new(2, 2);
        a.rx(100);
        b.rx(50);
        a.dropped(DropReason::NoBackend);
        b.dropped(DropReason::NoBackend);
        b.vip(1, 60);
        a.backend(0, 80);
        a.vip(99, 1); // out of range: ignored, not a panic
        let s = CounterSnapshot::sum([&a, &b]);
        assert_eq!(
            s.rx,
            Traffic {
                packets: 2,
                bytes: 150
            }
        );
        assert_eq!(s.dropped(DropReason::NoBackend), 2);
        assert_eq!(s.dropped_total(), 2);
        assert_eq!(
            s.vips[1],
            Traffic {
                packets: 1,
                bytes: 60
            }
        );
        assert_eq!(
            s.backends[0],
            Traffic {
                packets: 1,
                bytes: 80
            }
        );
    }
}
