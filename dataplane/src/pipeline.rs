//! The per-core packet pipeline: `process(burst) -> verdicts`.
//!
//! For each frame: parse L2 (up to two VLAN tags) and L3/L4 with `wire`; frames not addressed to a
//! VIP go to the kernel (ARP, ND, BGP, SSH, ...); malformed frames are dropped under a reason.
//! For a VIP flow the per-core flow table is asked first (flows stay on their backend while it is
//! active or draining), Maglev picks on a miss, and the frame is rewritten in place for the
//! backend. Fragments hash on the 3-tuple and are not tracked, so every fragment of a datagram
//! reaches the same backend. ICMP errors about a VIP flow (fragmentation needed, packet too big,
//! unreachable, time exceeded) go to the backend owning the quoted flow; echo requests to a VIP
//! are answered here. A packet that would exceed the egress MTU after encapsulation and may not
//! be fragmented is answered with ICMP fragmentation-needed / packet-too-big.
//!
//! Per packet there is no allocation, lock, syscall or formatting: the flow table is allocated
//! at start, the tables are read-only, and counters are single-writer relaxed atomics.

use std::net::IpAddr;
use std::sync::Arc;

use conntrack::{FlowTable, FlowTableConfig, FlowView, PacketKind};
use wire::{
    ethertype, icmpv4_type, icmpv6_type, ip_protocol, ipv6_upper_layer, EthernetFrame,
    Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, VlanHeader,
};

use crate::counters::{BurstTally, DropReason, LcoreCounters};
use crate::encap::{self, L2Header, ReplyL2, Tunnel};
use crate::flow::FlowTuple;
use crate::packet::PacketBuf;
use crate::tables::{
    AddressVips, BackendId, BackendState, ForwardingMode, HashPolicy, Tables, Vip, MAX_BACKENDS,
    MAX_VIPS,
};

/// What to do with a frame after [`Pipeline::process`] rewrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out of this port.
    Forward {
        /// Egress port id.
        port: u16,
    },
    /// Not for a VIP: hand the frame, unchanged, to the kernel (exception path).
    ToKernel,
    /// Drop, counted under the reason.
    Drop(DropReason),
}

/// Sizing of one core's pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The core's flow table.
    pub flow_table: FlowTableConfig,
    /// Flow-table slots swept for expired entries after each burst (bounded work per burst).
    pub expire_per_burst: usize,
    /// VIP ids counted (`0..max_vips`); traffic of higher ids is forwarded but not counted.
    pub max_vips: usize,
    /// Backend ids counted (`0..max_backends`), likewise.
    pub max_backends: usize,
    /// ICMP messages this core may generate per second (echo replies, fragmentation needed,
    /// packet too big), like a router's ICMP rate limit; beyond it: `icmp_rate_limited` drops.
    pub icmp_per_second: u32,
    /// Token-bucket depth of that limit (messages that may go out at once).
    pub icmp_burst: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            flow_table: FlowTableConfig {
                capacity: 1 << 20,
                ..FlowTableConfig::default()
            },
            expire_per_burst: 64,
            max_vips: MAX_VIPS,
            max_backends: MAX_BACKENDS,
            icmp_per_second: 1000,
            icmp_burst: 100,
        }
    }
}

/// Flow-table backend value: `generation << 16 | backend id`, so a reused id does not match.
#[inline]
fn pack_backend(id: BackendId, generation: u16) -> u32 {
    u32::from(generation) << 16 | u32::from(id)
}

/// What the packet is, as far as forwarding cares.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// TCP with these flags, or UDP: tracked in the flow table.
    Tracked(PacketKind),
    /// An IP fragment: hashed on the 3-tuple, not tracked.
    Fragment,
    /// An ICMP error quoting a packet of the flow in `Meta::tuple` (already turned client -> VIP).
    IcmpError,
    /// ICMP(v6) echo request to a VIP address.
    EchoRequest,
}

/// Everything the forwarding step needs from the parse, copied out of the frame.
#[derive(Clone, Copy, Debug)]
struct Meta {
    l3_offset: usize,
    l4_offset: usize,
    ip_len: usize,
    ipv6: bool,
    tos: u8,
    dont_frag: bool,
    tuple: FlowTuple,
    kind: Kind,
}

/// Frames per two-pass group in [`Pipeline::process`] (a burst is split into groups this size).
pub const MAX_GROUP: usize = 32;

/// A frame between the two passes of a group.
#[derive(Clone, Copy)]
enum Staged<'t> {
    /// Not for a VIP address: to the kernel (decided in the first pass).
    Kernel,
    /// Decided in the first pass otherwise (drops, host messages to a VIP address).
    Done(Verdict),
    /// For a VIP: forwarded in the second pass.
    Vip(VipPacket<'t>),
}

/// A frame for a VIP, parsed, with its flow hash.
#[derive(Clone, Copy)]
struct VipPacket<'t> {
    meta: Meta,
    vip: &'t Vip,
    hash: u64,
}

/// The first look at a frame ([`locate`]).
enum Located<'t> {
    /// Not for a VIP: the kernel's.
    Kernel,
    /// An IP packet (its header checked) to a VIP address, whose VIPs are `vips`.
    Vip {
        l3_offset: usize,
        ipv6: bool,
        vips: &'t AddressVips,
    },
}

/// One polling core's packet pipeline: its flow table, its counters, its IPv4 ident counter.
pub struct Pipeline {
    icmp_limit: TokenBucket,
    flows: FlowTable,
    counters: Arc<LcoreCounters>,
    next_ident: u16,
    expire_per_burst: usize,
}

impl Pipeline {
    /// Allocates the flow table and counters (the only allocation a pipeline ever makes).
    pub fn new(config: PipelineConfig) -> Result<Pipeline, conntrack::ConfigError> {
        Ok(Pipeline {
            icmp_limit: TokenBucket::new(config.icmp_per_second, config.icmp_burst),
            flows: FlowTable::new(config.flow_table)?,
            counters: Arc::new(LcoreCounters::new(config.max_vips, config.max_backends)),
            next_ident: 0,
            expire_per_burst: config.expire_per_burst,
        })
    }

    /// This core's counters, for the control plane to read.
    pub fn counters(&self) -> Arc<LcoreCounters> {
        Arc::clone(&self.counters)
    }

    /// This core's flow table (admin lookups, occupancy).
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The tracked flow of `tuple` (client -> VIP in `tables`), looked up the way packets look
    /// it up (the VIP's hash policy) and without touching it: for the admin socket.
    pub fn flow(&self, tables: &Tables, tuple: &FlowTuple, now_ms: u64) -> Option<FlowView> {
        let vip = tables.vip(tuple.dst, tuple.protocol, tuple.dst_port)?;
        let hash = tuple.hash(vip.hash);
        self.flows
            .find(&tuple.key(), hash, now_ms)
            .map(|slot| self.flows.view(slot))
    }

    /// Processes a burst received on `rx_port`: rewrites each frame in place and writes its verdict
    /// at the same index of `verdicts` (which must be at least as long as `burst`; extra frames
    /// are left untouched). Then sweeps a bounded number of flow-table slots for expired flows.
    /// Returns what it did (verdicts by kind, bytes received), which is also added to this
    /// core's counters, once per burst.
    ///
    /// Frames go through in groups of [`MAX_GROUP`] and two passes: the first parses every frame,
    /// settles those not for a VIP (kernel, drop) and, for VIP frames, finds the VIP and flow
    /// hash and starts loading the flow-table bucket; the second looks the VIP frames' flows up
    /// and rewrites them. The flow-table cache misses of a group then overlap instead of each
    /// frame waiting for its own (group prefetching, as DPDK applications do).
    pub fn process<P: PacketBuf>(
        &mut self,
        tables: &Tables,
        rx_port: u16,
        burst: &mut [P],
        verdicts: &mut [Verdict],
        now_ms: u64,
    ) -> BurstTally {
        let mut tally = BurstTally::default();
        for (packets, verdicts) in burst
            .chunks_mut(MAX_GROUP)
            .zip(verdicts.chunks_mut(MAX_GROUP))
        {
            // Only VIP frames are staged (with the index of their frame), so a group of frames
            // for the kernel moves nothing but its verdicts.
            let mut staged: [Option<(usize, VipPacket<'_>)>; MAX_GROUP] = [None; MAX_GROUP];
            let mut hashes = [0u64; MAX_GROUP];
            let mut vips = 0;
            let mut tracked = 0;
            for (i, (packet, verdict)) in packets.iter_mut().zip(verdicts.iter_mut()).enumerate() {
                match self.stage(tables, packet, &mut tally) {
                    Staged::Kernel => {
                        // The common non-VIP frame, counted without a second look at the verdict.
                        *verdict = Verdict::ToKernel;
                        tally.to_kernel += 1;
                    }
                    Staged::Done(done) => {
                        *verdict = done;
                        self.count(done, &mut tally);
                    }
                    Staged::Vip(vip_packet) => {
                        if let Kind::Tracked(_) | Kind::IcmpError = vip_packet.meta.kind {
                            // `tracked <= vips < packets.len() <= MAX_GROUP`.
                            if let Some(h) = hashes.get_mut(tracked) {
                                *h = vip_packet.hash;
                                tracked += 1;
                            }
                        }
                        if let Some(slot) = staged.get_mut(vips) {
                            *slot = Some((i, vip_packet));
                            vips += 1;
                        }
                    }
                }
            }
            if vips == 0 {
                continue;
            }
            self.flows.warm(&hashes[..tracked]);
            for (i, vip_packet) in staged[..vips].iter().flatten() {
                let (Some(packet), Some(verdict)) = (packets.get_mut(*i), verdicts.get_mut(*i))
                else {
                    continue; // `i` indexes both (it came from their zip)
                };
                let done = self.forward(tables, rx_port, packet, vip_packet, now_ms);
                *verdict = done;
                self.count(done, &mut tally);
            }
        }
        self.counters.burst(&tally);
        // An empty table has nothing to expire (and sweeping it would change nothing).
        if !self.flows.is_empty() {
            self.flows.expire(now_ms, self.expire_per_burst);
        }
        tally
    }

    /// Processes one frame (no expiry sweep; see [`Pipeline::process`]).
    pub fn process_one<P: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        rx_port: u16,
        packet: &mut P,
        now_ms: u64,
    ) -> Verdict {
        let mut tally = BurstTally::default();
        let verdict = match self.stage(tables, packet, &mut tally) {
            Staged::Kernel => Verdict::ToKernel,
            Staged::Done(verdict) => verdict,
            Staged::Vip(vip_packet) => self.forward(tables, rx_port, packet, &vip_packet, now_ms),
        };
        self.count(verdict, &mut tally);
        self.counters.burst(&tally);
        verdict
    }

    /// First pass: parse, settle frames not for a VIP; for a VIP, find it and the flow hash.
    #[inline]
    fn stage<'t, P: PacketBuf + ?Sized>(
        &self,
        tables: &'t Tables,
        packet: &mut P,
        tally: &mut BurstTally,
    ) -> Staged<'t> {
        let rx_len = packet.data().len();
        tally.frames += 1;
        tally.bytes += rx_len as u64;
        match locate(tables, packet.data()) {
            Err(reason) => Staged::Done(Verdict::Drop(reason)),
            Ok(Located::Kernel) => Staged::Kernel,
            Ok(Located::Vip {
                l3_offset,
                ipv6,
                vips,
            }) => self.stage_vip(tables, packet, l3_offset, ipv6, vips, rx_len),
        }
    }

    /// First pass for a frame to a VIP address (inlined into the group loop, so its `Meta` is
    /// built in the staging slot rather than moved there).
    #[inline(always)]
    fn stage_vip<'t, P: PacketBuf + ?Sized>(
        &self,
        tables: &'t Tables,
        packet: &mut P,
        l3_offset: usize,
        ipv6: bool,
        vips: &AddressVips,
        rx_len: usize,
    ) -> Staged<'t> {
        let mut meta = match classify(packet.data(), l3_offset, ipv6) {
            Ok(Some(meta)) => meta,
            Ok(None) => return Staged::Done(Verdict::ToKernel),
            Err(reason) => return Staged::Done(Verdict::Drop(reason)),
        };
        // Ethernet padding must not travel inside a tunnel.
        packet.truncate(meta.l3_offset + meta.ip_len);
        let vip = match find_vip(tables, vips, &meta) {
            Ok(vip) => vip,
            Err(reason) => return Staged::Done(Verdict::Drop(reason)),
        };
        self.counters.vip(usize::from(vip.id), rx_len);
        let hash = match meta.kind {
            Kind::Fragment => {
                // Every fragment of a datagram hashes the same 3-tuple: a non-first IPv6 fragment
                // may name an extension header instead of UDP/TCP, so use the VIP's protocol.
                meta.tuple.protocol = vip.protocol;
                meta.tuple.hash(HashPolicy::ThreeTuple)
            }
            Kind::EchoRequest => 0,
            Kind::Tracked(_) | Kind::IcmpError => meta.tuple.hash(vip.hash),
        };
        Staged::Vip(VipPacket { meta, vip, hash })
    }

    /// Counts a verdict: in the burst's tally, and drops by reason.
    #[inline]
    fn count(&self, verdict: Verdict, tally: &mut BurstTally) {
        if let Verdict::Drop(reason) = verdict {
            self.counters.dropped(reason);
        }
        tally.verdict(verdict);
    }

    fn forward<P: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        rx_port: u16,
        packet: &mut P,
        vip_packet: &VipPacket<'_>,
        now_ms: u64,
    ) -> Verdict {
        let VipPacket { meta, vip, hash } = vip_packet;
        let (meta, vip, hash) = (meta, *vip, *hash);
        if let Kind::EchoRequest = meta.kind {
            let Some(port) = tables.port(rx_port) else {
                return Verdict::Drop(DropReason::Misconfigured);
            };
            if !self.icmp_limit.take(now_ms) {
                return Verdict::Drop(DropReason::IcmpRateLimited);
            }
            let l2 = ReplyL2::from_request(packet.data(), meta.l3_offset, port.mac);
            encap::echo_reply(packet, meta.l3_offset, meta.ipv6, meta.l4_offset, &l2);
            self.counters.icmp_generated();
            return Verdict::Forward { port: rx_port };
        }
        let backend_id = match meta.kind {
            Kind::Tracked(packet_kind) => {
                self.track(tables, vip, &meta.tuple, hash, packet_kind, now_ms)
            }
            Kind::IcmpError => self.owner(tables, vip, &meta.tuple, hash, now_ms),
            Kind::Fragment | Kind::EchoRequest => vip.pick(hash),
        };
        let Some((backend_id, backend)) = backend_id.and_then(|id| Some((id, tables.backend(id)?)))
        else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let Some(port) = tables.port(vip.egress_port) else {
            return Verdict::Drop(DropReason::Misconfigured);
        };

        let (overhead, tunnel) = match vip.mode {
            ForwardingMode::L2Dsr => (0, None),
            ForwardingMode::Ipip | ForwardingMode::Gue { .. } => {
                let src = match backend.address {
                    IpAddr::V4(_) => vip.encap_source_v4.map(IpAddr::V4),
                    IpAddr::V6(_) => vip.encap_source_v6.map(IpAddr::V6),
                };
                let Some(src) = src else {
                    return Verdict::Drop(DropReason::Misconfigured);
                };
                let gue_ports = match vip.mode {
                    // Ephemeral range 49152..=65535, from the flow hash: the backend's RSS spreads flows.
                    ForwardingMode::Gue { port } => {
                        Some((0xC000 | (hash >> 48) as u16 & 0x3FFF, port))
                    }
                    _ => None,
                };
                self.next_ident = self.next_ident.wrapping_add(1);
                let tunnel = Tunnel {
                    src,
                    dst: backend.address,
                    gue_ports,
                    tos: meta.tos,
                    flow_label: hash as u32,
                    ident: self.next_ident,
                    dont_frag: meta.dont_frag,
                };
                (tunnel.overhead(), Some(tunnel))
            }
        };

        if meta.ip_len + overhead > usize::from(port.mtu) {
            return self.too_big(
                tables,
                rx_port,
                packet,
                meta,
                usize::from(port.mtu).saturating_sub(overhead),
                now_ms,
            );
        }

        // Frames to backends: our MAC to the next hop (the backend itself when its MAC is known,
        // i.e. on a shared L2, else the gateway), tagged as the egress port says.
        let l2 = L2Header {
            src: port.mac,
            dst: backend.mac.unwrap_or(port.gateway_mac),
            vlan_tci: port.vlan,
        };
        // All zeros: the next-hop resolver has no MAC for the gateway (yet, or any more).
        if l2.dst.0 == [0; 6] {
            return Verdict::Drop(DropReason::NoNextHop);
        }
        let result = match (tunnel, meta.ipv6) {
            (None, false) => encap::rewrite_l2(packet, meta.l3_offset, ethertype::IPV4, &l2),
            (None, true) => encap::rewrite_l2(packet, meta.l3_offset, ethertype::IPV6, &l2),
            (Some(tunnel), false) => {
                encap::encapsulate(packet, meta.l3_offset, ip_protocol::IPIP, &tunnel, &l2)
            }
            (Some(tunnel), true) => {
                encap::encapsulate(packet, meta.l3_offset, ip_protocol::IPV6, &tunnel, &l2)
            }
        };
        if result.is_err() {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        self.counters
            .backend(usize::from(backend_id), packet.data().len());
        Verdict::Forward {
            port: vip.egress_port,
        }
    }

    /// The packet does not fit the egress MTU once encapsulated: tell the client (ICMP) when the
    /// packet may not be fragmented, else drop it (we do not fragment on the fast path).
    fn too_big<P: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        rx_port: u16,
        packet: &mut P,
        meta: &Meta,
        usable_mtu: usize,
        now_ms: u64,
    ) -> Verdict {
        if let Kind::IcmpError = meta.kind {
            return Verdict::Drop(DropReason::TooBigIcmpError);
        }
        if !meta.ipv6 && !meta.dont_frag {
            return Verdict::Drop(DropReason::TooBigNoDf);
        }
        if !self.icmp_limit.take(now_ms) {
            return Verdict::Drop(DropReason::IcmpRateLimited);
        }
        let Some(port) = tables.port(rx_port) else {
            return Verdict::Drop(DropReason::Misconfigured);
        };
        let l2 = ReplyL2::from_request(packet.data(), meta.l3_offset, port.mac);
        let result = if meta.ipv6 {
            // IPv6 links carry at least 1280 bytes (RFC 8200 5).
            encap::icmpv6_packet_too_big(packet, meta.l3_offset, usable_mtu.max(1280) as u32, &l2)
        } else {
            self.next_ident = self.next_ident.wrapping_add(1);
            encap::icmpv4_frag_needed(
                packet,
                meta.l3_offset,
                usable_mtu.max(68) as u16,
                self.next_ident,
                &l2,
            )
        };
        if result.is_err() {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        self.counters.icmp_generated();
        Verdict::Forward { port: rx_port }
    }

    /// Backend of a tracked (TCP/UDP) packet: the flow table's, unless that backend is down or
    /// gone; Maglev's otherwise, and then remembered.
    fn track(
        &mut self,
        tables: &Tables,
        vip: &Vip,
        tuple: &FlowTuple,
        hash: u64,
        packet: PacketKind,
        now_ms: u64,
    ) -> Option<BackendId> {
        let key = tuple.key();
        if let Some(slot) = self.flows.find(&key, hash, now_ms) {
            let stored = self.flows.view(slot).backend;
            if let Some(id) = live_backend(tables, vip, stored) {
                self.flows.touch(slot, packet, now_ms);
                return Some(id);
            }
            let id = vip.pick(hash)?;
            let generation = tables.backend(id)?.generation;
            self.flows.set_backend(slot, pack_backend(id, generation));
            self.flows.touch(slot, packet, now_ms);
            self.counters.flow_rehashed();
            return Some(id);
        }
        let id = vip.pick(hash)?;
        let generation = tables.backend(id)?.generation;
        if self
            .flows
            .insert(&key, hash, pack_backend(id, generation), packet, now_ms)
            .is_err()
        {
            // Still forwarded by Maglev, just not remembered (table full or SYN budget spent).
            self.counters.flow_insert_failed();
        }
        Some(id)
    }

    /// Backend owning a flow, without tracking anything (ICMP errors about the flow).
    fn owner(
        &self,
        tables: &Tables,
        vip: &Vip,
        tuple: &FlowTuple,
        hash: u64,
        now_ms: u64,
    ) -> Option<BackendId> {
        self.flows
            .find(&tuple.key(), hash, now_ms)
            .and_then(|slot| live_backend(tables, vip, self.flows.view(slot).backend))
            .or_else(|| vip.pick(hash))
    }
}

/// A token bucket in whole messages, refilled from the burst clock (no clock reads of its own).
#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    per_second: u64,
    burst: u64,
    tokens: u64,
    refilled_ms: u64,
}

impl TokenBucket {
    fn new(per_second: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            per_second: u64::from(per_second),
            burst: u64::from(burst),
            tokens: u64::from(burst),
            refilled_ms: 0,
        }
    }

    /// Takes one token if there is one, after adding those earned since the last refill.
    #[inline]
    fn take(&mut self, now_ms: u64) -> bool {
        let earned = now_ms
            .saturating_sub(self.refilled_ms)
            .saturating_mul(self.per_second)
            / 1000;
        if earned > 0 {
            if self.tokens.saturating_add(earned) >= self.burst {
                self.tokens = self.burst;
                self.refilled_ms = now_ms;
            } else {
                self.tokens += earned;
                // Advance only by the time those whole tokens took; the remainder keeps counting.
                // (`earned > 0` implies `per_second > 0`.)
                self.refilled_ms += earned * 1000 / self.per_second;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The tracked backend if it still serves this VIP with the same identity and is not down.
#[inline]
fn live_backend(tables: &Tables, vip: &Vip, stored: u32) -> Option<BackendId> {
    let id = (stored & 0xFFFF) as BackendId;
    let generation = (stored >> 16) as u16;
    let b = tables.backend(id)?;
    (b.generation == generation && b.vip == vip.id && b.state != BackendState::Down).then_some(id)
}

/// The VIP a classified packet belongs to.
#[inline]
fn find_vip<'t>(
    tables: &'t Tables,
    vips: &AddressVips,
    meta: &Meta,
) -> Result<&'t Vip, DropReason> {
    let t = &meta.tuple;
    match meta.kind {
        Kind::Fragment => match tables.fragment_vip_of(vips, t.protocol) {
            Ok(Some(vip)) => Ok(vip),
            Ok(None) => Err(DropReason::NoVipForPort),
            Err(()) => Err(DropReason::FragmentAmbiguous),
        },
        Kind::EchoRequest => tables.first_vip(vips).ok_or(DropReason::NoVipForPort),
        Kind::Tracked(_) | Kind::IcmpError => tables
            .service_vip(t.dst, vips, t.protocol, t.dst_port)
            .ok_or(DropReason::NoVipForPort),
    }
}

/// Parses a frame far enough to know whether it is for a VIP address: its L2 header (up to two
/// VLAN tags) and, for IP, the checked IP header and one hash probe for its destination. Frames
/// for the kernel cost no more than that.
#[inline]
fn locate<'t>(tables: &'t Tables, frame: &[u8]) -> Result<Located<'t>, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::L2Malformed)?;
    let mut ether = eth.ethertype();
    let mut l3_offset = EthernetFrame::<&[u8]>::HEADER_LEN;
    let mut tags = 0;
    while ether == ethertype::VLAN || ether == ethertype::QINQ {
        tags += 1;
        if tags > 2 {
            return Err(DropReason::VlanTooDeep);
        }
        let tag = VlanHeader::new_checked(frame.get(l3_offset..).unwrap_or_default())
            .map_err(|_| DropReason::L2Malformed)?;
        ether = tag.ethertype();
        l3_offset += VlanHeader::<&[u8]>::HEADER_LEN;
    }
    let (dst, ipv6) = match ether {
        ethertype::IPV4 => {
            let l3 = frame.get(l3_offset..).unwrap_or_default();
            let ip = Ipv4Packet::new_checked(l3).map_err(|_| DropReason::Ipv4Malformed)?;
            (IpAddr::V4(ip.dst_addr()), false)
        }
        ethertype::IPV6 => {
            let l3 = frame.get(l3_offset..).unwrap_or_default();
            let ip = Ipv6Packet::new_checked(l3).map_err(|_| DropReason::Ipv6Malformed)?;
            (IpAddr::V6(ip.dst_addr()), true)
        }
        _ => return Ok(Located::Kernel),
    };
    Ok(match tables.address(dst) {
        None => Located::Kernel,
        Some(vips) => Located::Vip {
            l3_offset,
            ipv6,
            vips,
        },
    })
}

/// The flow of an IP packet to a VIP address that [`locate`] found at `l3_offset` of `frame`;
/// `None` for messages to the address that are the host's (IPv6 neighbour discovery).
/// (Inlined, like the two below, so the `Meta` is built where it is used rather than moved.)
#[inline(always)]
fn classify(frame: &[u8], l3_offset: usize, ipv6: bool) -> Result<Option<Meta>, DropReason> {
    let l3 = frame.get(l3_offset..).unwrap_or_default();
    if ipv6 {
        classify_ipv6(Ipv6Packet::new_unchecked(l3), l3_offset)
    } else {
        classify_ipv4(Ipv4Packet::new_unchecked(l3), l3_offset)
    }
}

/// As [`classify`], for IPv4 (`ip`'s header was checked by [`locate`]).
#[inline(always)]
fn classify_ipv4(ip: Ipv4Packet<&[u8]>, l3_offset: usize) -> Result<Option<Meta>, DropReason> {
    let dst = IpAddr::V4(ip.dst_addr());
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    let mut meta = Meta {
        l3_offset,
        l4_offset: l3_offset + ip.header_len(),
        ip_len: usize::from(ip.total_len()),
        ipv6: false,
        tos: ip.tos(),
        dont_frag: ip.dont_frag(),
        tuple: FlowTuple {
            src: IpAddr::V4(ip.src_addr()),
            dst,
            src_port: 0,
            dst_port: 0,
            protocol: ip.protocol(),
        },
        kind: Kind::Fragment,
    };
    if ip.is_fragment() {
        return Ok(Some(meta));
    }
    let payload = ip.payload();
    match ip.protocol() {
        ip_protocol::TCP | ip_protocol::UDP => {
            (meta.tuple.src_port, meta.tuple.dst_port, meta.kind) = ports(ip.protocol(), payload)?;
        }
        ip_protocol::ICMP => {
            let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| DropReason::IcmpMalformed)?;
            match icmp.msg_type() {
                icmpv4_type::ECHO_REQUEST => meta.kind = Kind::EchoRequest,
                icmpv4_type::DEST_UNREACHABLE
                | icmpv4_type::TIME_EXCEEDED
                | icmpv4_type::PARAM_PROBLEM => {
                    meta.tuple = quoted_ipv4_flow(icmp.payload())?;
                    meta.kind = Kind::IcmpError;
                    // The quote is a packet the VIP sent: its source is this error's destination.
                    if meta.tuple.dst != dst {
                        return Err(DropReason::IcmpMalformed);
                    }
                }
                _ => return Err(DropReason::IcmpUnsupported),
            }
        }
        _ => return Err(DropReason::NoVipForPort),
    }
    Ok(Some(meta))
}

/// As [`classify`], for IPv6 (`ip`'s header was checked by [`locate`]).
#[inline(always)]
fn classify_ipv6(ip: Ipv6Packet<&[u8]>, l3_offset: usize) -> Result<Option<Meta>, DropReason> {
    let dst = IpAddr::V6(ip.dst_addr());
    let upper = ipv6_upper_layer(ip.next_header(), ip.payload())
        .map_err(|_| DropReason::Ipv6ExtMalformed)?;
    let tc = ip.traffic_class();
    let mut meta = Meta {
        l3_offset,
        l4_offset: l3_offset + 40 + upper.offset,
        ip_len: 40 + usize::from(ip.payload_len()),
        ipv6: true,
        tos: tc,
        dont_frag: true,
        tuple: FlowTuple {
            src: IpAddr::V6(ip.src_addr()),
            dst,
            src_port: 0,
            dst_port: 0,
            protocol: upper.protocol,
        },
        kind: Kind::Fragment,
    };
    // An atomic fragment (offset 0, no more fragments; RFC 6946) is a whole packet.
    if upper
        .fragment
        .is_some_and(|f| f.offset != 0 || f.more_frags)
    {
        return Ok(Some(meta));
    }
    let payload = ip.payload().get(upper.offset..).unwrap_or_default();
    match upper.protocol {
        ip_protocol::TCP | ip_protocol::UDP => {
            (meta.tuple.src_port, meta.tuple.dst_port, meta.kind) = ports(upper.protocol, payload)?;
        }
        ip_protocol::ICMPV6 => {
            let icmp = Icmpv6Packet::new_checked(payload).map_err(|_| DropReason::IcmpMalformed)?;
            match icmp.msg_type() {
                icmpv6_type::ECHO_REQUEST => meta.kind = Kind::EchoRequest,
                icmpv6_type::DEST_UNREACHABLE
                | icmpv6_type::PACKET_TOO_BIG
                | icmpv6_type::TIME_EXCEEDED
                | icmpv6_type::PARAM_PROBLEM => {
                    meta.tuple = quoted_ipv6_flow(icmp.payload())?;
                    meta.kind = Kind::IcmpError;
                    if meta.tuple.dst != dst {
                        return Err(DropReason::IcmpMalformed);
                    }
                }
                // Neighbor discovery and the rest of ICMPv6 is the host's business.
                _ => return Ok(None),
            }
        }
        _ => return Err(DropReason::NoVipForPort),
    }
    Ok(Some(meta))
}

/// Source port, destination port and tracking kind of a TCP or UDP header.
#[inline]
fn ports(protocol: u8, l4: &[u8]) -> Result<(u16, u16, Kind), DropReason> {
    if protocol == ip_protocol::TCP {
        let tcp = TcpPacket::new_checked(l4).map_err(|_| DropReason::TcpMalformed)?;
        Ok((
            tcp.src_port(),
            tcp.dst_port(),
            Kind::Tracked(PacketKind::Tcp {
                flags: tcp.flags().0,
            }),
        ))
    } else {
        let udp = UdpPacket::new_checked(l4).map_err(|_| DropReason::UdpMalformed)?;
        Ok((
            udp.src_port(),
            udp.dst_port(),
            Kind::Tracked(PacketKind::Udp),
        ))
    }
}

/// The client -> VIP flow of the IPv4 packet quoted in an ICMP error (which the backend sent as
/// VIP -> client). Quotes are truncated by design, so only the IP header and the 4 port bytes
/// are required.
fn quoted_ipv4_flow(quote: &[u8]) -> Result<FlowTuple, DropReason> {
    if quote.len() < 20 {
        return Err(DropReason::IcmpMalformed);
    }
    let ip = Ipv4Packet::new_unchecked(quote);
    let header_len = ip.header_len();
    if ip.version() != 4 || header_len < 20 {
        return Err(DropReason::IcmpMalformed);
    }
    let protocol = ip.protocol();
    if protocol != ip_protocol::TCP && protocol != ip_protocol::UDP {
        return Err(DropReason::IcmpUnsupported);
    }
    let l4 = quote
        .get(header_len..header_len + 4)
        .ok_or(DropReason::IcmpMalformed)?;
    Ok(FlowTuple {
        src: IpAddr::V4(ip.dst_addr()),
        dst: IpAddr::V4(ip.src_addr()),
        src_port: u16::from_be_bytes([l4[2], l4[3]]),
        dst_port: u16::from_be_bytes([l4[0], l4[1]]),
        protocol,
    })
}

/// As [`quoted_ipv4_flow`], for IPv6 (extension headers in the quote are walked).
fn quoted_ipv6_flow(quote: &[u8]) -> Result<FlowTuple, DropReason> {
    if quote.len() < 40 {
        return Err(DropReason::IcmpMalformed);
    }
    let ip = Ipv6Packet::new_unchecked(quote);
    if ip.version() != 6 {
        return Err(DropReason::IcmpMalformed);
    }
    let rest = quote.get(40..).unwrap_or_default();
    let upper = ipv6_upper_layer(ip.next_header(), rest).map_err(|_| DropReason::IcmpMalformed)?;
    if upper.protocol != ip_protocol::TCP && upper.protocol != ip_protocol::UDP {
        return Err(DropReason::IcmpUnsupported);
    }
    let l4 = rest
        .get(upper.offset..upper.offset + 4)
        .ok_or(DropReason::IcmpMalformed)?;
    Ok(FlowTuple {
        src: IpAddr::V6(ip.dst_addr()),
        dst: IpAddr::V6(ip.src_addr()),
        src_port: u16::from_be_bytes([l4[2], l4[3]]),
        dst_port: u16::from_be_bytes([l4[0], l4[1]]),
        protocol: upper.protocol,
    })
}
