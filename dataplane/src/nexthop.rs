//! Next-hop resolution: the gateway's MAC address, learned by ARP (IPv4) or Neighbor Discovery
//! (IPv6) from the dataplane, or set statically.
//!
//! [`NeighborResolver`] is sans-IO, like the rest of the core: time comes in as milliseconds,
//! frames come in as bytes ([`NeighborResolver::handle_frame`], fed with the ARP and ND frames the
//! lcores see) and go out as bytes ([`NeighborResolver::poll`] returns the request to send, if one
//! is due). It follows the usual neighbour state machine, simplified:
//!
//! * *incomplete*: a broadcast ARP request (or a Neighbor Solicitation to the solicited-node
//!   multicast address) every `retry_ms`; after `max_probes` unanswered ones it keeps asking,
//!   every `failed_retry_ms`;
//! * *reachable*: an answer (an ARP reply or request from the gateway's address, or a Neighbor
//!   Advertisement for it) sets the MAC, valid for `reachable_ms`;
//! * *probe*: when that runs out, unicast requests to the known MAC every `retry_ms`; an answer
//!   makes it reachable again, `max_probes` unanswered ones forget the MAC (back to incomplete).
//!
//! A MAC change is reported once ([`NeighborEvent`]); the driver ([`crate::dpdk_io`]'s neighbour
//! service, or a test) then publishes tables whose port carries the new gateway MAC
//! ([`crate::Tables::with_gateway_mac`]), through the same RCU swap as every table change. A
//! statically configured gateway ([`NeighborResolver::fixed`]) never sends or changes.
//!
//! Limits: untagged frames only (ARP and ND over an 802.1Q tag are ignored), and an IPv6 answer
//! must carry the target link-layer address option (RFC 4861 requires it in solicited answers to
//! multicast solicitations, which are what this sends first).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wire::{checksum, EthernetAddress};

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const BROADCAST: [u8; 6] = [0xff; 6];

/// Timers of a [`NeighborResolver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolverTimers {
    /// Between requests while resolving or probing.
    pub retry_ms: u64,
    /// Unanswered requests before giving up (incomplete) or forgetting the MAC (probe).
    pub max_probes: u32,
    /// Between requests after `max_probes` failed to resolve.
    pub failed_retry_ms: u64,
    /// How long an answer is trusted before the gateway is probed again.
    pub reachable_ms: u64,
}

impl Default for ResolverTimers {
    fn default() -> Self {
        // Linux's defaults: 1 s retransmit, 3 probes, ~30 s reachable.
        ResolverTimers {
            retry_ms: 1000,
            max_probes: 3,
            failed_retry_ms: 5000,
            reachable_ms: 30_000,
        }
    }
}

/// What resolving a gateway is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// The gateway's address (IPv4: ARP, IPv6: ND).
    pub gateway: IpAddr,
    /// Our address on that link, of the same family (the requests' sender address).
    pub source_ip: IpAddr,
    /// Our port's MAC.
    pub source_mac: EthernetAddress,
    /// Timers.
    pub timers: ResolverTimers,
}

/// A change of the gateway's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborEvent {
    /// The gateway answered with this MAC (first time, or a different one than before).
    Resolved(EthernetAddress),
    /// The gateway stopped answering: its MAC is forgotten.
    Lost,
}

/// Why a [`ResolverConfig`] is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolverError {
    /// Gateway and source of different families.
    #[error(
        "next hop {gateway}: the source address {source_ip} is of the other address family; give \
         an address of the gateway's family"
    )]
    FamilyMismatch {
        /// The gateway.
        gateway: IpAddr,
        /// The source address.
        source_ip: IpAddr,
    },
    /// A zero retry interval would send requests in a busy loop.
    #[error("next hop: retry_ms and failed_retry_ms must be at least 1")]
    ZeroInterval,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fixed,
    Incomplete { sent: u32, next_ms: Option<u64> },
    Reachable { until_ms: u64 },
    Probe { sent: u32, next_ms: u64 },
}

/// Resolves one gateway's MAC; see the module docs.
#[derive(Clone, Debug)]
pub struct NeighborResolver {
    config: ResolverConfig,
    mac: Option<EthernetAddress>,
    state: State,
    answered_ms: Option<u64>,
}

impl NeighborResolver {
    /// A resolver that starts asking at its first [`NeighborResolver::poll`].
    pub fn new(config: ResolverConfig) -> Result<NeighborResolver, ResolverError> {
        if config.gateway.is_ipv4() != config.source_ip.is_ipv4() {
            return Err(ResolverError::FamilyMismatch {
                gateway: config.gateway,
                source_ip: config.source_ip,
            });
        }
        if config.timers.retry_ms == 0 || config.timers.failed_retry_ms == 0 {
            return Err(ResolverError::ZeroInterval);
        }
        Ok(NeighborResolver {
            config,
            mac: None,
            state: State::Incomplete {
                sent: 0,
                next_ms: None,
            },
            answered_ms: None,
        })
    }

    /// A statically configured gateway MAC: never asks, never changes.
    pub fn fixed(config: ResolverConfig, mac: EthernetAddress) -> NeighborResolver {
        NeighborResolver {
            config,
            mac: Some(mac),
            state: State::Fixed,
            answered_ms: None,
        }
    }

    /// The gateway's MAC, if known.
    pub fn mac(&self) -> Option<EthernetAddress> {
        self.mac
    }

    /// Whether the last answer is still within `reachable_ms` (or the MAC is static).
    pub fn is_reachable(&self) -> bool {
        matches!(self.state, State::Fixed | State::Reachable { .. })
    }

    /// The gateway this resolves.
    pub fn gateway(&self) -> IpAddr {
        self.config.gateway
    }

    /// When (the `now_ms` of [`NeighborResolver::handle_frame`]) the gateway last answered;
    /// `None` if it never did (or the MAC is static).
    pub fn last_answer_ms(&self) -> Option<u64> {
        self.answered_ms
    }

    /// The state's name, for operators: `static`, `incomplete` (no MAC, asking), `reachable`
    /// (answered within `reachable_ms`) or `probe` (MAC kept, asking again).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Fixed => "static",
            State::Incomplete { .. } => "incomplete",
            State::Reachable { .. } => "reachable",
            State::Probe { .. } => "probe",
        }
    }

    /// Advances the timers to `now_ms`. Returns the request frame to send now, if one is due,
    /// and a [`NeighborEvent::Lost`] when the gateway stopped answering.
    pub fn poll(&mut self, now_ms: u64) -> (Option<Vec<u8>>, Option<NeighborEvent>) {
        let t = self.config.timers;
        match self.state {
            State::Fixed => (None, None),
            State::Incomplete { sent, next_ms } => {
                if next_ms.is_some_and(|next| now_ms < next) {
                    return (None, None);
                }
                let wait = if sent + 1 >= t.max_probes {
                    t.failed_retry_ms
                } else {
                    t.retry_ms
                };
                self.state = State::Incomplete {
                    sent: sent.saturating_add(1),
                    next_ms: Some(now_ms + wait),
                };
                (Some(self.request(None)), None)
            }
            State::Reachable { until_ms } => {
                if now_ms < until_ms {
                    return (None, None);
                }
                self.state = State::Probe {
                    sent: 1,
                    next_ms: now_ms + t.retry_ms,
                };
                (Some(self.request(self.mac)), None)
            }
            State::Probe { sent, next_ms } => {
                if now_ms < next_ms {
                    return (None, None);
                }
                if sent >= t.max_probes {
                    self.mac = None;
                    self.state = State::Incomplete {
                        sent: 1,
                        next_ms: Some(now_ms + t.retry_ms),
                    };
                    return (Some(self.request(None)), Some(NeighborEvent::Lost));
                }
                self.state = State::Probe {
                    sent: sent + 1,
                    next_ms: now_ms + t.retry_ms,
                };
                (Some(self.request(self.mac)), None)
            }
        }
    }

    /// Looks at one received frame (any frame; only ARP and ND about the gateway count) and
    /// returns a [`NeighborEvent::Resolved`] when it gives the gateway a new MAC.
    pub fn handle_frame(&mut self, frame: &[u8], now_ms: u64) -> Option<NeighborEvent> {
        if self.state == State::Fixed {
            return None;
        }
        let mac = match self.config.gateway {
            IpAddr::V4(gateway) => arp_sender_mac(frame, gateway)?,
            IpAddr::V6(gateway) => na_target_mac(frame, gateway)?,
        };
        if mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
            return None; // a multicast or zero MAC is never a next hop
        }
        self.state = State::Reachable {
            until_ms: now_ms + self.config.timers.reachable_ms,
        };
        self.answered_ms = Some(now_ms);
        let changed = self.mac != Some(mac);
        self.mac = Some(mac);
        changed.then_some(NeighborEvent::Resolved(mac))
    }

    /// An ARP request or Neighbor Solicitation for the gateway; unicast to `to` when given.
    fn request(&self, to: Option<EthernetAddress>) -> Vec<u8> {
        match (self.config.gateway, self.config.source_ip) {
            (IpAddr::V4(gateway), IpAddr::V4(source)) => {
                arp_request(self.config.source_mac, source, gateway, to)
            }
            (IpAddr::V6(gateway), IpAddr::V6(source)) => {
                neighbor_solicitation(self.config.source_mac, source, gateway, to)
            }
            // `new` refuses mixed families and `fixed` never sends.
            _ => Vec::new(),
        }
    }
}

/// Whether a frame is ARP or ICMPv6 Neighbor Discovery (untagged), i.e. what a resolver wants to
/// see. Cheap enough for the packet path: two or three byte compares.
#[inline]
pub fn is_neighbor_frame(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x06]) => true,
        Some([0x86, 0xdd]) => {
            frame.get(14 + 6) == Some(&ICMPV6)
                && matches!(
                    frame.get(14 + 40),
                    Some(&NEIGHBOR_SOLICITATION | &NEIGHBOR_ADVERTISEMENT)
                )
        }
        _ => false,
    }
}

fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?))
}

/// The sender MAC of an ARP packet (reply, or request) whose sender address is `gateway`.
fn arp_sender_mac(frame: &[u8], gateway: Ipv4Addr) -> Option<EthernetAddress> {
    if ethertype(frame)? != ETHERTYPE_ARP {
        return None;
    }
    let arp = frame.get(14..14 + 28)?;
    // Ethernet (1), IPv4, 6-byte and 4-byte addresses; request (1) or reply (2).
    if arp[0..6] != [0, 1, 0x08, 0x00, 6, 4] || !matches!(arp[6..8], [0, 1] | [0, 2]) {
        return None;
    }
    if arp[14..18] != gateway.octets() {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&arp[8..14]);
    Some(EthernetAddress(mac))
}

/// The target link-layer address of a Neighbor Advertisement for `gateway` (hop limit 255 and a
/// valid checksum, as RFC 4861 section 7.1.2 requires).
fn na_target_mac(frame: &[u8], gateway: Ipv6Addr) -> Option<EthernetAddress> {
    if ethertype(frame)? != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = frame.get(14..14 + 40)?;
    if ip[6] != ICMPV6 || ip[7] != 255 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = frame.get(54..54 + len)?;
    if len < 24 || icmp[0] != NEIGHBOR_ADVERTISEMENT || icmp[1] != 0 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
    let pseudo = checksum::pseudo_header_v6(&src, &dst, ICMPV6, len as u32);
    if checksum::combine(&[pseudo, checksum::sum(icmp)]) != 0xffff {
        return None;
    }
    if icmp[8..24] != gateway.octets() {
        return None;
    }
    // Options: type, length in 8-byte units, value. Type 2 = target link-layer address.
    let mut options = &icmp[24..];
    while options.len() >= 8 {
        let units = usize::from(options[1]);
        if units == 0 || options.len() < units * 8 {
            return None;
        }
        if options[0] == 2 && units == 1 {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&options[2..8]);
            return Some(EthernetAddress(mac));
        }
        options = &options[units * 8..];
    }
    None
}

/// An ARP request from `mac`/`source` for `target`, broadcast or unicast to `to`.
pub fn arp_request(
    mac: EthernetAddress,
    source: Ipv4Addr,
    target: Ipv4Addr,
    to: Option<EthernetAddress>,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&to.map_or(BROADCAST, |m| m.0));
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&source.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0); // minimum Ethernet frame without FCS
    f
}

/// A Neighbor Solicitation from `mac`/`source` for `target`, to the solicited-node multicast
/// group or unicast to `to`, with the source link-layer address option.
pub fn neighbor_solicitation(
    mac: EthernetAddress,
    source: Ipv6Addr,
    target: Ipv6Addr,
    to: Option<EthernetAddress>,
) -> Vec<u8> {
    let t = target.octets();
    let (dst_ip, dst_mac) = match to {
        Some(m) => (target, m.0),
        None => (
            Ipv6Addr::new(
                0xff02,
                0,
                0,
                0,
                0,
                1,
                0xff00 | u16::from(t[13]),
                u16::from_be_bytes([t[14], t[15]]),
            ),
            [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        ),
    };
    let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]); // source link-layer address, 1 unit
    icmp.extend_from_slice(&mac.0);
    let pseudo = checksum::pseudo_header_v6(&source, &dst_ip, ICMPV6, icmp.len() as u32);
    let sum = !checksum::combine(&[pseudo, checksum::sum(&icmp)]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&source.octets());
    f.extend_from_slice(&dst_ip.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Longest neighbour frame kept (ARP is 42-60 bytes, an NA with options well under this).
pub const NEIGHBOR_FRAME_MAX: usize = 128;

/// A copy of one ARP/ND frame, passed between lcores and the neighbour service without
/// allocating.
#[derive(Clone, Copy)]
pub struct NeighborFrame {
    len: u8,
    bytes: [u8; NEIGHBOR_FRAME_MAX],
}

impl NeighborFrame {
    /// Copies `frame` (cut to [`NEIGHBOR_FRAME_MAX`] bytes).
    #[inline]
    pub fn new(frame: &[u8]) -> NeighborFrame {
        let len = frame.len().min(NEIGHBOR_FRAME_MAX);
        let mut bytes = [0u8; NEIGHBOR_FRAME_MAX];
        bytes[..len].copy_from_slice(&frame[..len]);
        NeighborFrame {
            len: len as u8, // <= 128
            bytes,
        }
    }

    /// The frame.
    pub fn data(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for NeighborFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NeighborFrame({} bytes)", self.len)
    }
}

/// The lock-free mailbox between the lcores and the neighbour service: lcores post copies of
/// the ARP/ND frames they receive ([`NeighborChannel::post_seen`]) and send the requests the
/// service queues ([`NeighborChannel::take_outgoing`]). Both sides are bounded queues; a full
/// one drops (and counts) rather than waits.
#[derive(Debug)]
pub struct NeighborChannel {
    seen: crossbeam_queue::ArrayQueue<NeighborFrame>,
    outgoing: crossbeam_queue::ArrayQueue<NeighborFrame>,
    seen_dropped: std::sync::atomic::AtomicU64,
}

impl NeighborChannel {
    /// A channel holding up to `capacity` frames each way (at least 1).
    pub fn new(capacity: usize) -> NeighborChannel {
        NeighborChannel {
            seen: crossbeam_queue::ArrayQueue::new(capacity.max(1)),
            outgoing: crossbeam_queue::ArrayQueue::new(capacity.max(1)),
            seen_dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Lcore side: posts a received ARP/ND frame for the resolver (dropped when full).
    #[inline]
    pub fn post_seen(&self, frame: &[u8]) {
        if self.seen.push(NeighborFrame::new(frame)).is_err() {
            self.seen_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Lcore side: the next request to send on the port, if any.
    #[inline]
    pub fn take_outgoing(&self) -> Option<NeighborFrame> {
        self.outgoing.pop()
    }

    /// Frames lcores could not post because the service was behind.
    pub fn seen_dropped(&self) -> u64 {
        self.seen_dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The control-plane side of next-hop resolution: runs [`NeighborResolver`]s (e.g. the IPv4 and
/// the IPv6 gateway of a port) against a [`NeighborChannel`] and publishes each new gateway MAC
/// into the tables of the resolver's port. A port has one gateway MAC for both families: when
/// two resolvers of one port learn different MACs, the latest answer wins. When a gateway stops
/// answering ([`NeighborEvent::Lost`]) its port falls back to the MAC another resolver of the
/// port still has, else to all zeros, which the pipeline drops as `no_next_hop` instead of
/// sending to a stale MAC.
#[derive(Debug)]
pub struct NeighborService {
    resolvers: Vec<(NeighborResolver, u16)>,
    channel: std::sync::Arc<NeighborChannel>,
    tables: crate::publish::TablesHandle,
    published: u64,
}

impl NeighborService {
    /// Resolves for `port` (whose tables entry gets the MAC) through `channel`.
    pub fn new(
        resolver: NeighborResolver,
        channel: std::sync::Arc<NeighborChannel>,
        tables: crate::publish::TablesHandle,
        port: u16,
    ) -> NeighborService {
        NeighborService {
            resolvers: vec![(resolver, port)],
            channel,
            tables,
            published: 0,
        }
    }

    /// Adds another gateway to resolve (e.g. the other address family's), for `port`.
    pub fn with_resolver(mut self, resolver: NeighborResolver, port: u16) -> NeighborService {
        self.resolvers.push((resolver, port));
        self
    }

    /// One round at `now_ms`: feeds every posted frame to every resolver, queues due requests,
    /// and publishes tables with a new MAC when one changed. Returns the round's events.
    pub fn run_once(&mut self, now_ms: u64) -> Vec<NeighborEvent> {
        let mut frames = Vec::new();
        while let Some(frame) = self.channel.seen.pop() {
            frames.push(frame);
        }
        let mut events = Vec::new();
        for (resolver, port) in &mut self.resolvers {
            let mut mine = Vec::new();
            for frame in &frames {
                mine.extend(resolver.handle_frame(frame.data(), now_ms));
            }
            let (request, event) = resolver.poll(now_ms);
            mine.extend(event);
            if let Some(request) = request {
                // A full queue means the lcores are not sending: the next retry tries again.
                let _ = self.channel.outgoing.push(NeighborFrame::new(&request));
            }
            events.extend(mine.iter().map(|e| (*e, *port)));
        }
        for (event, port) in &events {
            let mac = match event {
                NeighborEvent::Resolved(mac) => *mac,
                // Another gateway of the port that still answers, else none (all zeros).
                NeighborEvent::Lost => self
                    .resolvers
                    .iter()
                    .filter(|(_, p)| p == port)
                    .find_map(|(r, _)| r.mac())
                    .unwrap_or(EthernetAddress([0; 6])),
            };
            if let Some(tables) = self.tables.current().with_gateway_mac(*port, mac) {
                self.tables.publish(tables);
                self.published += 1;
            }
        }
        events.into_iter().map(|(e, _)| e).collect()
    }

    /// The first resolver (state, MAC).
    pub fn resolver(&self) -> &NeighborResolver {
        &self.resolvers[0].0 // `new` puts one in and nothing removes it
    }

    /// Every resolver with its port.
    pub fn resolvers(&self) -> &[(NeighborResolver, u16)] {
        &self.resolvers
    }

    /// How many table versions this service published.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Runs [`NeighborService::run_once`] every `interval` on a thread named `vipd-neighbor`
    /// until `stop` is set; returns the service when joined.
    pub fn spawn(
        mut self,
        interval: std::time::Duration,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<NeighborService>> {
        std::thread::Builder::new()
            .name("vipd-neighbor".into())
            .spawn(move || {
                let epoch = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.run_once(now_ms);
                    std::thread::sleep(interval);
                }
                self
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

    fn v4() -> ResolverConfig {
        ResolverConfig {
            gateway: "192.0.2.254".parse().unwrap(),
            source_ip: "192.0.2.1".parse().unwrap(),
            source_mac: OUR_MAC,
            timers: ResolverTimers {
                retry_ms: 100,
                max_probes: 3,
                failed_retry_ms: 1000,
                reachable_ms: 5000,
            },
        }
    }

    fn v6() -> ResolverConfig {
        ResolverConfig {
            gateway: "2001:db8::fe".parse().unwrap(),
            source_ip: "2001:db8::1".parse().unwrap(),
            ..v4()
        }
    }

    /// An ARP reply from the gateway, written from the RFC 826 layout.
    fn arp_reply(sender_ip: [u8; 4], sender_mac: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&OUR_MAC.0);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&sender_ip);
        f.extend_from_slice(&OUR_MAC.0);
        f.extend_from_slice(&[192, 0, 2, 1]);
        f
    }

    /// A Neighbor Advertisement for `target` with a target link-layer address option.
    fn na(target: Ipv6Addr, mac: [u8; 6], hop_limit: u8) -> Vec<u8> {
        let src: Ipv6Addr = "fe80::fe".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&mac);
        let pseudo = checksum::pseudo_header_v6(&src, &dst, 58, icmp.len() as u32);
        let sum = !checksum::combine(&[pseudo, checksum::sum(&icmp)]);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = Vec::new();
        f.extend_from_slice(&OUR_MAC.0);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, hop_limit]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn arp_request_layout() {
        let mut r = NeighborResolver::new(v4()).unwrap();
        let (frame, event) = r.poll(0);
        let f = frame.expect("a request at once");
        assert_eq!(event, None);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &OUR_MAC.0);
        assert_eq!(&f[12..22], &[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &OUR_MAC.0);
        assert_eq!(&f[28..32], &[192, 0, 2, 1]);
        assert_eq!(&f[38..42], &[192, 0, 2, 254]);
        assert!(is_neighbor_frame(&f));
    }

    #[test]
    fn retries_then_backs_off_then_resolves() {
        let mut r = NeighborResolver::new(v4()).unwrap();
        let sent_at = |r: &mut NeighborResolver, t| r.poll(t).0.is_some();
        assert!(sent_at(&mut r, 0));
        assert!(!sent_at(&mut r, 50));
        assert!(sent_at(&mut r, 100));
        assert!(sent_at(&mut r, 200)); // third: after it, the slow retry
        assert!(!sent_at(&mut r, 300));
        assert!(!sent_at(&mut r, 1100));
        assert!(sent_at(&mut r, 1200));
        assert_eq!(r.mac(), None);
        assert!(!r.is_reachable());

        // Someone else's reply, a reply from another address, garbage: ignored.
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 9], GW_MAC), 1250),
            None
        );
        assert_eq!(r.handle_frame(&[0u8; 10], 1250), None);
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 254], [0xff; 6]), 1250),
            None
        );
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 254], GW_MAC), 1300),
            Some(NeighborEvent::Resolved(EthernetAddress(GW_MAC)))
        );
        assert_eq!(r.mac(), Some(EthernetAddress(GW_MAC)));
        assert!(r.is_reachable());
        // The same answer again is not a change.
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 254], GW_MAC), 1400),
            None
        );
        assert_eq!(r.poll(1500), (None, None));
    }

    #[test]
    fn expiry_probes_unicast_and_forgets_a_silent_gateway() {
        let mut r = NeighborResolver::new(v4()).unwrap();
        r.poll(0);
        r.handle_frame(&arp_reply([192, 0, 2, 254], GW_MAC), 10);
        assert_eq!(r.poll(5009), (None, None), "still reachable");
        let probe = r.poll(5010).0.expect("a probe when reachable_ms ran out");
        assert_eq!(&probe[0..6], &GW_MAC, "probes are unicast to the known MAC");
        assert_eq!(r.mac(), Some(EthernetAddress(GW_MAC)), "kept while probing");
        // An answer to the probe: reachable again, no event (same MAC).
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 254], GW_MAC), 5020),
            None
        );
        assert!(r.is_reachable());
        // A new MAC (the gateway was replaced) is an event.
        let new_mac = [2, 0, 0, 0, 0, 0xfd];
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 254], new_mac), 5030),
            Some(NeighborEvent::Resolved(EthernetAddress(new_mac)))
        );
        // Silence: 3 probes 100 ms apart, then forgotten and back to broadcasting.
        assert!(r.poll(10_030).0.is_some());
        assert!(r.poll(10_130).0.is_some());
        assert!(r.poll(10_230).0.is_some());
        let (frame, event) = r.poll(10_330);
        assert_eq!(event, Some(NeighborEvent::Lost));
        assert_eq!(&frame.expect("a broadcast request")[0..6], &BROADCAST);
        assert_eq!(r.mac(), None);
    }

    #[test]
    fn neighbor_discovery_for_ipv6() {
        let mut r = NeighborResolver::new(v6()).unwrap();
        let ns = r.poll(0).0.expect("a solicitation");
        // To the solicited-node group of 2001:db8::fe, hop limit 255, valid ICMPv6 checksum.
        assert_eq!(&ns[0..6], &[0x33, 0x33, 0xff, 0, 0, 0xfe]);
        assert_eq!(&ns[12..14], &[0x86, 0xdd]);
        assert_eq!(ns[14 + 7], 255);
        let dst: Ipv6Addr = "ff02::1:ff00:fe".parse().unwrap();
        assert_eq!(&ns[38..54], &dst.octets());
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let icmp = &ns[54..];
        let pseudo = checksum::pseudo_header_v6(&src, &dst, 58, icmp.len() as u32);
        assert_eq!(checksum::combine(&[pseudo, checksum::sum(icmp)]), 0xffff);
        assert_eq!(icmp[0], 135);
        assert_eq!(&icmp[24..32], &[1, 1, 2, 0, 0, 0, 0, 1]);
        assert!(is_neighbor_frame(&ns));

        let gw: Ipv6Addr = "2001:db8::fe".parse().unwrap();
        // Hop limit other than 255 (forwarded, so forged), a corrupted checksum, another
        // target: ignored.
        assert_eq!(r.handle_frame(&na(gw, GW_MAC, 64), 5), None);
        let mut bad = na(gw, GW_MAC, 255);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(r.handle_frame(&bad, 5), None);
        assert_eq!(
            r.handle_frame(&na("2001:db8::9".parse().unwrap(), GW_MAC, 255), 5),
            None
        );
        assert_eq!(
            r.handle_frame(&na(gw, GW_MAC, 255), 6),
            Some(NeighborEvent::Resolved(EthernetAddress(GW_MAC)))
        );
    }

    #[test]
    fn static_gateway_never_asks() {
        let mut r = NeighborResolver::fixed(v4(), EthernetAddress(GW_MAC));
        assert_eq!(r.poll(0), (None, None));
        assert_eq!(r.poll(1_000_000), (None, None));
        assert_eq!(
            r.handle_frame(&arp_reply([192, 0, 2, 254], [2, 9, 9, 9, 9, 9]), 1),
            None
        );
        assert_eq!(r.mac(), Some(EthernetAddress(GW_MAC)));
        assert!(r.is_reachable());
    }

    #[test]
    fn bad_configs() {
        let mixed = ResolverConfig {
            source_ip: "2001:db8::1".parse().unwrap(),
            ..v4()
        };
        let e = NeighborResolver::new(mixed).unwrap_err();
        assert!(e.to_string().contains("other address family"), "{e}");
        let mut zero = v4();
        zero.timers.retry_ms = 0;
        assert_eq!(
            NeighborResolver::new(zero).unwrap_err(),
            ResolverError::ZeroInterval
        );
    }

    #[test]
    fn the_service_asks_through_the_channel_and_publishes_the_answer() {
        use crate::testing::port;
        let tables = crate::TablesHandle::new(crate::Tables::build(vec![port(1500)], &[]).unwrap());
        let channel = std::sync::Arc::new(NeighborChannel::new(8));
        let resolver = NeighborResolver::new(v4()).unwrap();
        let mut service =
            NeighborService::new(resolver, std::sync::Arc::clone(&channel), tables.clone(), 0);
        assert!(service.run_once(0).is_empty());
        let request = channel
            .take_outgoing()
            .expect("a request for an lcore to send");
        assert_eq!(&request.data()[12..14], &[0x08, 0x06]);
        // An lcore sees unrelated traffic and the answer.
        channel.post_seen(&[0u8; 60]);
        channel.post_seen(&arp_reply([192, 0, 2, 254], GW_MAC));
        assert_eq!(
            service.run_once(5),
            vec![NeighborEvent::Resolved(EthernetAddress(GW_MAC))]
        );
        assert_eq!(service.published(), 1);
        assert_eq!(tables.current().port(0).unwrap().gateway_mac.0, GW_MAC);
        // A full channel drops and counts instead of blocking the lcore.
        for _ in 0..10 {
            channel.post_seen(&[1u8; 200]);
        }
        assert_eq!(channel.seen_dropped(), 2);
    }

    #[test]
    fn a_lost_gateway_is_unpublished_unless_the_other_family_still_answers() {
        use crate::testing::port;
        let tables = crate::TablesHandle::new(crate::Tables::build(vec![port(1500)], &[]).unwrap());
        let channel = std::sync::Arc::new(NeighborChannel::new(64));
        let v4 = NeighborResolver::new(v4()).unwrap();
        let v6 = NeighborResolver::new(v6()).unwrap();
        let mut service =
            NeighborService::new(v4, std::sync::Arc::clone(&channel), tables.clone(), 0)
                .with_resolver(v6, 0);
        service.run_once(0);
        assert_eq!(service.resolver().state_name(), "incomplete");
        assert_eq!(service.resolver().last_answer_ms(), None);
        channel.post_seen(&arp_reply([192, 0, 2, 254], GW_MAC));
        let v6_mac = [2, 0, 0, 0, 0, 0x66];
        channel.post_seen(&na("2001:db8::fe".parse().unwrap(), v6_mac, 255));
        service.run_once(10);
        assert_eq!(service.resolver().state_name(), "reachable");
        assert_eq!(service.resolver().last_answer_ms(), Some(10));
        // Both answered; the IPv6 answer came last and wins.
        assert_eq!(tables.current().port(0).unwrap().gateway_mac.0, v6_mac);
        // Only the IPv4 gateway keeps answering its probes: when the IPv6 one is forgotten, the
        // port falls back to the IPv4 gateway's MAC.
        let mut t = 10;
        let mut lost = false;
        while t < 20_000 && !lost {
            t += 50;
            channel.post_seen(&arp_reply([192, 0, 2, 254], GW_MAC));
            lost = service.run_once(t).contains(&NeighborEvent::Lost);
        }
        assert!(lost, "the silent IPv6 gateway is forgotten");
        assert_eq!(service.resolvers()[1].0.state_name(), "incomplete");
        assert_eq!(tables.current().port(0).unwrap().gateway_mac.0, GW_MAC);
        // Now the IPv4 gateway goes silent too: no MAC at all, all zeros (no_next_hop drops).
        let mut lost = false;
        while t < 40_000 && !lost {
            t += 50;
            lost = service.run_once(t).contains(&NeighborEvent::Lost);
        }
        assert!(lost, "the silent IPv4 gateway is forgotten");
        assert_eq!(tables.current().port(0).unwrap().gateway_mac.0, [0; 6]);
        // It answers again: published again.
        channel.post_seen(&arp_reply([192, 0, 2, 254], GW_MAC));
        service.run_once(t + 1);
        assert_eq!(tables.current().port(0).unwrap().gateway_mac.0, GW_MAC);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(frame: Vec<u8>, ipv6: bool) {
            let mut r = NeighborResolver::new(if ipv6 { v6() } else { v4() }).unwrap();
            let _ = r.handle_frame(&frame, 0);
            let _ = is_neighbor_frame(&frame);
        }
    }
}
