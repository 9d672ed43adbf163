//! The read-only forwarding state the polling cores consult: VIPs, their backends and Maglev
//! tables, and the ports frames leave through.
//!
//! A [`Tables`] is built whole by the control plane from plain entries ([`VipEntry`],
//! [`BackendEntry`], [`Port`]), validated once, then published to the cores (RCU-style swap, see
//! the engine). It never changes after it is built, so the packet path reads it without locks.
//!
//! Identity: the control plane gives every VIP a [`VipId`] and every backend a [`BackendId`] plus
//! a generation. Flow-table entries remember `(BackendId, generation)`; when a backend goes down
//! or is removed (and its id is later reused with a new generation), its tracked flows no longer
//! match and are re-hashed, while flows to a draining backend keep going to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use maglev::{BackendSpec, MaglevTable};
use rustc_hash::FxHashMap;
use wire::{ip_protocol, EthernetAddress};

/// Index of a VIP in counters and flow entries, assigned by the control plane.
pub type VipId = u16;
/// Index of a backend in counters and flow entries, assigned by the control plane.
pub type BackendId = u16;
/// Highest VIP count (ids are `0..MAX_VIPS`).
pub const MAX_VIPS: usize = 4096;
/// Highest backend count over all VIPs (ids are `0..MAX_BACKENDS`).
pub const MAX_BACKENDS: usize = 65_535;
/// Default GUE destination port (Katran's and Linux `fou` deployments' usual choice).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// How frames reach a VIP's backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardingMode {
    /// IP-in-IP: IPv4 or IPv6 outer header (the backend's family) around the client's packet.
    Ipip,
    /// GUE variant 1: outer IP + UDP to `port`; the UDP payload is the client's IP packet and the
    /// UDP source port carries the flow hash so the backend's NIC can spread flows (RSS).
    Gue {
        /// UDP destination port.
        port: u16,
    },
    /// L2 direct server return: only the destination MAC changes to the backend's.
    L2Dsr,
}

/// Which packet fields choose a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashPolicy {
    /// Source and destination address and port, and protocol (the default).
    FiveTuple,
    /// Source and destination address and protocol: all of a client's flows to one backend.
    ThreeTuple,
    /// Destination address, port and protocol: every client of one port to one backend.
    DstPort,
}

/// A backend's state as the control plane sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// Takes new flows (in the Maglev table with its weight) and keeps its tracked flows.
    Active,
    /// Takes no new flows, keeps its tracked flows (operator drain, or weight 0).
    Draining,
    /// Failed its health check: no new flows, and its tracked flows are re-hashed elsewhere.
    Down,
}

/// One egress port: the addresses frames leaving through it carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    /// The port's own MAC (source of every frame sent).
    pub mac: EthernetAddress,
    /// The next hop's MAC for encapsulated traffic (the gateway towards the backends).
    pub gateway_mac: EthernetAddress,
    /// IP MTU of the link: the largest L3 packet sent.
    pub mtu: u16,
    /// 802.1Q tag for frames sent to backends, if the link is tagged.
    pub vlan: Option<u16>,
}

/// A VIP as the control plane describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct VipEntry {
    /// Counter and flow identity.
    pub id: VipId,
    /// The virtual address clients connect to.
    pub address: IpAddr,
    /// Destination port, or 0 for all ports.
    pub port: u16,
    /// `ip_protocol::TCP` or `ip_protocol::UDP`.
    pub protocol: u8,
    /// How frames reach the backends.
    pub mode: ForwardingMode,
    /// Which fields choose the backend.
    pub hash: HashPolicy,
    /// Maglev table size (a prime, see `maglev`).
    pub table_size: u32,
    /// Outer source address for IPv4 backends (IPIP, GUE).
    pub encap_source_v4: Option<Ipv4Addr>,
    /// Outer source address for IPv6 backends (IPIP, GUE).
    pub encap_source_v6: Option<Ipv6Addr>,
    /// Port the encapsulated frames leave through.
    pub egress_port: u16,
    /// The backends.
    pub backends: Vec<BackendEntry>,
}

/// A backend of one VIP.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendEntry {
    /// Counter and flow identity, unique over all VIPs.
    pub id: BackendId,
    /// Bumped by the control plane whenever `id` is reused for another backend.
    pub generation: u16,
    /// Where encapsulated packets go (the outer destination).
    pub address: IpAddr,
    /// Share of new flows (0 = none, like draining).
    pub weight: u32,
    /// Health / operator state.
    pub state: BackendState,
    /// The backend's MAC, for L2 DSR (and to bypass the gateway on a shared L2).
    pub mac: Option<EthernetAddress>,
}

/// What makes a set of entries unusable. Each message names the entry and what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TablesError {
    /// Two VIPs with one id.
    #[error("vip id {0} is used twice; give every VIP its own id")]
    DuplicateVipId(VipId),
    /// Two VIPs with one address, protocol and port.
    #[error("vip {0}: another VIP already serves this address, protocol and port")]
    DuplicateVip(String),
    /// An id past the counter arrays.
    #[error("vip {0}: id {1} is out of range (0..{MAX_VIPS})")]
    VipIdOutOfRange(String, VipId),
    /// Not TCP or UDP.
    #[error("vip {0}: protocol {1} is not supported; use TCP (6) or UDP (17)")]
    BadProtocol(String, u8),
    /// Egress port not configured.
    #[error("vip {0}: egress port {1} is not configured")]
    UnknownPort(String, u16),
    /// Backend id reused or out of range.
    #[error("vip {0}: backend id {1} is used twice or is out of range (0..{MAX_BACKENDS})")]
    BadBackendId(String, BackendId),
    /// L2 DSR needs the backend's MAC.
    #[error("vip {0}: backend {1} needs a MAC address for l2dsr forwarding")]
    MissingMac(String, IpAddr),
    /// L2 DSR cannot change the address family.
    #[error("vip {0}: backend {1} is not of the VIP's address family; l2dsr cannot translate")]
    FamilyMismatch(String, IpAddr),
    /// IPIP/GUE to a backend family with no outer source configured.
    #[error("vip {0}: backend {1} needs an encapsulation source address of its family (encap_source_v4 / encap_source_v6)")]
    MissingEncapSource(String, IpAddr),
    /// Maglev rejected the backend set or table size.
    #[error("vip {0}: {1}")]
    Maglev(String, maglev::BuildError),
}

/// A VIP as the packet path sees it.
#[derive(Clone, Debug)]
pub struct Vip {
    pub(crate) id: VipId,
    pub(crate) address: IpAddr,
    pub(crate) port: u16,
    pub(crate) protocol: u8,
    pub(crate) mode: ForwardingMode,
    pub(crate) hash: HashPolicy,
    pub(crate) encap_source_v4: Option<Ipv4Addr>,
    pub(crate) encap_source_v6: Option<Ipv6Addr>,
    pub(crate) egress_port: u16,
    /// Maglev slot value -> backend id.
    pub(crate) members: Box<[BackendId]>,
    pub(crate) maglev: MaglevTable,
    /// What `maglev` was built from: (id, address, weight in the table) per backend.
    pub(crate) maglev_input: Box<[(BackendId, IpAddr, u32)]>,
}

impl Vip {
    /// The VIP's id.
    pub fn id(&self) -> VipId {
        self.id
    }
    /// The VIP's address.
    pub fn address(&self) -> IpAddr {
        self.address
    }
    /// The VIP's port (0: all ports).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The VIP's Maglev table.
    pub fn maglev(&self) -> &MaglevTable {
        &self.maglev
    }
    /// The backend Maglev picks for a new flow with this hash.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<BackendId> {
        let slot = self.maglev.lookup(flow_hash)?;
        self.members.get(usize::from(slot)).copied()
    }
}

/// A backend as the packet path sees it.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    pub(crate) vip: VipId,
    pub(crate) generation: u16,
    pub(crate) address: IpAddr,
    pub(crate) state: BackendState,
    pub(crate) mac: Option<EthernetAddress>,
}

impl Backend {
    /// The backend's address.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

/// Which VIP the fragments to one address and protocol belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FragmentVip {
    None,
    One(u32),
    Ambiguous,
}

/// The VIPs on one address, found with one hash probe per packet ([`Tables::address`]); the
/// packet path then picks among them without hashing again.
#[derive(Clone, Copy, Debug)]
pub struct AddressVips {
    /// Index 0: TCP, 1: UDP.
    fragments: [FragmentVip; 2],
    /// The first VIP on this address (answers pings, counts them).
    first: u32,
    /// This address's services in `Tables::services`.
    start: u32,
    len: u32,
}

/// One VIP of an address: protocol and port (0 = all ports).
#[derive(Clone, Copy, Debug)]
struct Service {
    protocol: u8,
    port: u16,
    vip: u32,
}

/// Above this many services on one address, [`Tables::service_vip`] hashes instead of scanning.
const SCAN_LIMIT: u32 = 8;

/// The immutable forwarding state; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    ports: Vec<Port>,
    vips: Vec<Vip>,
    by_key: FxHashMap<(IpAddr, u8, u16), u32>,
    by_address: FxHashMap<IpAddr, AddressVips>,
    services: Vec<Service>,
    backends: Vec<Option<Backend>>,
}

impl Tables {
    /// Validates the entries and builds every VIP's Maglev table.
    pub fn build(ports: Vec<Port>, entries: &[VipEntry]) -> Result<Tables, TablesError> {
        Tables::build_reusing(ports, entries, None)
    }

    /// As [`Tables::build`], but a VIP whose id, address, protocol, port, table size and
    /// backends (ids, addresses, weights in the table) are the same as in `previous` reuses its
    /// Maglev table instead of building it again: a health change rebuilds only its own VIP.
    pub fn build_reusing(
        ports: Vec<Port>,
        entries: &[VipEntry],
        previous: Option<&Tables>,
    ) -> Result<Tables, TablesError> {
        let mut t = Tables {
            ports,
            ..Tables::default()
        };
        let mut vip_ids = vec![false; MAX_VIPS];
        for e in entries {
            let name = vip_name(e);
            let seen = vip_ids
                .get_mut(usize::from(e.id))
                .ok_or_else(|| TablesError::VipIdOutOfRange(name.clone(), e.id))?;
            if std::mem::replace(seen, true) {
                return Err(TablesError::DuplicateVipId(e.id));
            }
            if e.protocol != ip_protocol::TCP && e.protocol != ip_protocol::UDP {
                return Err(TablesError::BadProtocol(name, e.protocol));
            }
            if usize::from(e.egress_port) >= t.ports.len() {
                return Err(TablesError::UnknownPort(name, e.egress_port));
            }
            let index = t.vips.len() as u32;
            if t.by_key
                .insert((e.address, e.protocol, e.port), index)
                .is_some()
            {
                return Err(TablesError::DuplicateVip(name));
            }
            let vip = t.build_vip(e, &name, previous)?;
            t.vips.push(vip);
            let slot = if e.protocol == ip_protocol::TCP { 0 } else { 1 };
            let addr = t.by_address.entry(e.address).or_insert(AddressVips {
                fragments: [FragmentVip::None; 2],
                first: index,
                start: 0,
                len: 0,
            });
            addr.fragments[slot] = match (addr.fragments[slot], e.port) {
                // An all-ports VIP takes every fragment for its address and protocol.
                (_, 0) => FragmentVip::One(index),
                (FragmentVip::None, _) => FragmentVip::One(index),
                (FragmentVip::One(i), _) if t.vips.get(i as usize).is_some_and(|v| v.port == 0) => {
                    FragmentVip::One(i)
                }
                _ => FragmentVip::Ambiguous,
            };
        }
        t.index_services();
        Ok(t)
    }

    /// Lays every address's services out contiguously, port-specific ones first.
    fn index_services(&mut self) {
        let mut per_address: FxHashMap<IpAddr, Vec<Service>> = FxHashMap::default();
        for (index, vip) in self.vips.iter().enumerate() {
            per_address.entry(vip.address).or_default().push(Service {
                protocol: vip.protocol,
                port: vip.port,
                vip: index as u32,
            });
        }
        for (address, mut services) in per_address {
            services.sort_by_key(|s| s.port == 0);
            if let Some(a) = self.by_address.get_mut(&address) {
                a.start = self.services.len() as u32;
                a.len = services.len() as u32;
            }
            self.services.extend(services);
        }
    }

    fn build_vip(
        &mut self,
        e: &VipEntry,
        name: &str,
        previous: Option<&Tables>,
    ) -> Result<Vip, TablesError> {
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(e.backends.len());
        let mut members = Vec::with_capacity(e.backends.len());
        let mut weights = Vec::with_capacity(e.backends.len());
        for b in &e.backends {
            self.check_backend(e, b, name)?;
            if self.backends.len() <= usize::from(b.id) {
                self.backends.resize(usize::from(b.id) + 1, None);
            }
            let slot = &mut self.backends[usize::from(b.id)];
            if slot.is_some() {
                return Err(TablesError::BadBackendId(name.to_string(), b.id));
            }
            *slot = Some(Backend {
                vip: e.id,
                generation: b.generation,
                address: b.address,
                state: b.state,
                mac: b.mac,
            });
            // Maglev identity of a backend: its address octets (4 or 16 bytes), see docs/maglev.md.
            keys.push(match b.address {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            });
            members.push(b.id);
            weights.push(if b.state == BackendState::Active {
                b.weight
            } else {
                0
            });
        }
        let maglev_input: Box<[(BackendId, IpAddr, u32)]> = e
            .backends
            .iter()
            .zip(&weights)
            .map(|(b, &w)| (b.id, b.address, w))
            .collect();
        let reusable = previous
            .and_then(|p| p.vip(e.address, e.protocol, e.port))
            .filter(|v| {
                v.id == e.id
                    && v.port == e.port
                    && v.maglev.size() == e.table_size
                    && v.maglev_input == maglev_input
            });
        let maglev = match reusable {
            Some(v) => v.maglev.clone(),
            None => {
                let specs: Vec<BackendSpec<'_>> = keys
                    .iter()
                    .zip(&weights)
                    .map(|(key, &weight)| BackendSpec { key, weight })
                    .collect();
                MaglevTable::build(&specs, e.table_size)
                    .map_err(|err| TablesError::Maglev(name.to_string(), err))?
            }
        };
        Ok(Vip {
            id: e.id,
            address: e.address,
            port: e.port,
            protocol: e.protocol,
            mode: e.mode,
            hash: e.hash,
            encap_source_v4: e.encap_source_v4,
            encap_source_v6: e.encap_source_v6,
            egress_port: e.egress_port,
            members: members.into_boxed_slice(),
            maglev,
            maglev_input,
        })
    }

    fn check_backend(&self, e: &VipEntry, b: &BackendEntry, name: &str) -> Result<(), TablesError> {
        if usize::from(b.id) >= MAX_BACKENDS {
            return Err(TablesError::BadBackendId(name.to_string(), b.id));
        }
        match e.mode {
            ForwardingMode::L2Dsr => {
                if b.mac.is_none() {
                    return Err(TablesError::MissingMac(name.to_string(), b.address));
                }
                if b.address.is_ipv4() != e.address.is_ipv4() {
                    return Err(TablesError::FamilyMismatch(name.to_string(), b.address));
                }
            }
            ForwardingMode::Ipip | ForwardingMode::Gue { .. } => {
                let has_source = match b.address {
                    IpAddr::V4(_) => e.encap_source_v4.is_some(),
                    IpAddr::V6(_) => e.encap_source_v6.is_some(),
                };
                if !has_source {
                    return Err(TablesError::MissingEncapSource(name.to_string(), b.address));
                }
            }
        }
        Ok(())
    }

    /// The VIPs on this address (`None`: not a VIP address, the kernel's business).
    #[inline]
    pub fn address(&self, address: IpAddr) -> Option<&AddressVips> {
        self.by_address.get(&address)
    }

    /// The VIP serving this destination, protocol and port (a port-specific VIP first, then an
    /// all-ports VIP).
    #[inline]
    pub fn vip(&self, address: IpAddr, protocol: u8, port: u16) -> Option<&Vip> {
        self.service_vip(address, self.address(address)?, protocol, port)
    }

    /// As [`Tables::vip`], for an address already looked up.
    #[inline]
    pub fn service_vip(
        &self,
        address: IpAddr,
        vips: &AddressVips,
        protocol: u8,
        port: u16,
    ) -> Option<&Vip> {
        if vips.len > SCAN_LIMIT {
            let index = self
                .by_key
                .get(&(address, protocol, port))
                .or_else(|| self.by_key.get(&(address, protocol, 0)))?;
            return self.vips.get(*index as usize);
        }
        let start = vips.start as usize;
        let services = self.services.get(start..start + vips.len as usize)?;
        // Port-specific services come first, so the first match is the right one.
        let service = services
            .iter()
            .find(|s| s.protocol == protocol && (s.port == port || s.port == 0))?;
        self.vips.get(service.vip as usize)
    }

    /// Whether any VIP uses this address.
    #[inline]
    pub fn is_vip_address(&self, address: IpAddr) -> bool {
        self.by_address.contains_key(&address)
    }

    /// The first VIP configured on this address, if any.
    #[inline]
    pub fn vip_on_address(&self, address: IpAddr) -> Option<&Vip> {
        self.first_vip(self.address(address)?)
    }

    /// The first VIP configured on an address already looked up.
    #[inline]
    pub fn first_vip(&self, vips: &AddressVips) -> Option<&Vip> {
        self.vips.get(vips.first as usize)
    }

    /// The VIP that takes fragments to this address: `Ok(None)` when there is none, `Err(())` when
    /// it cannot be known (several port-specific VIPs for the protocol). `protocol` is the
    /// fragment's upper-layer protocol when it is TCP or UDP; an IPv6 extension-header number (a
    /// non-first IPv6 fragment names the header after the Fragment header, which may be another
    /// extension header) means "unknown", and the address must then have fragment VIPs of one
    /// protocol only; any other protocol has no VIP.
    #[inline]
    #[allow(clippy::result_unit_err)]
    pub fn fragment_vip(&self, address: IpAddr, protocol: u8) -> Result<Option<&Vip>, ()> {
        match self.address(address) {
            Some(vips) => self.fragment_vip_of(vips, protocol),
            None => Ok(None),
        }
    }

    /// As [`Tables::fragment_vip`], for an address already looked up.
    #[inline]
    #[allow(clippy::result_unit_err)]
    pub fn fragment_vip_of(&self, vips: &AddressVips, protocol: u8) -> Result<Option<&Vip>, ()> {
        let choice = match protocol {
            ip_protocol::TCP => vips.fragments[0],
            ip_protocol::UDP => vips.fragments[1],
            ip_protocol::HOPOPT
            | ip_protocol::IPV6_ROUTE
            | ip_protocol::IPV6_FRAG
            | ip_protocol::IPV6_OPTS
            | ip_protocol::AH => match vips.fragments {
                [FragmentVip::None, only] | [only, FragmentVip::None] => only,
                _ => FragmentVip::Ambiguous,
            },
            // ICMP and the rest: no VIP serves them.
            _ => FragmentVip::None,
        };
        match choice {
            FragmentVip::None => Ok(None),
            FragmentVip::One(i) => Ok(self.vips.get(i as usize)),
            FragmentVip::Ambiguous => Err(()),
        }
    }

    /// A backend by id.
    #[inline]
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// A port by id.
    #[inline]
    pub fn port(&self, id: u16) -> Option<&Port> {
        self.ports.get(usize::from(id))
    }

    /// A copy of these tables whose port `id` sends to gateway `mac` (the next-hop resolver's
    /// change, published like any other); `None` when there is no such port.
    pub fn with_gateway_mac(&self, id: u16, mac: EthernetAddress) -> Option<Tables> {
        let mut tables = self.clone();
        tables.ports.get_mut(usize::from(id))?.gateway_mac = mac;
        Some(tables)
    }

    /// All VIPs, in the order of the entries.
    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }
}

fn vip_name(e: &VipEntry) -> String {
    let proto = match e.protocol {
        ip_protocol::TCP => "tcp",
        ip_protocol::UDP => "udp",
        _ => "proto?",
    };
    match e.address {
        IpAddr::V4(a) => format!("{a}:{}/{proto}", e.port),
        IpAddr::V6(a) => format!("[{a}]:{}/{proto}", e.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn port() -> Port {
        Port {
            mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            gateway_mac: EthernetAddress([2, 0, 0, 0, 0, 0xfe]),
            mtu: 1500,
            vlan: None,
        }
    }

    fn vip(id: VipId, address: &str, port: u16, backends: &[(&str, BackendId)]) -> VipEntry {
        VipEntry {
            id,
            address: address.parse().unwrap(),
            port,
            protocol: ip_protocol::TCP,
            mode: ForwardingMode::Ipip,
            hash: HashPolicy::FiveTuple,
            table_size: 251,
            encap_source_v4: Some("192.0.2.1".parse().unwrap()),
            encap_source_v6: Some("2001:db8::1".parse().unwrap()),
            egress_port: 0,
            backends: backends
                .iter()
                .map(|(a, id)| BackendEntry {
                    id: *id,
                    generation: 0,
                    address: a.parse().unwrap(),
                    weight: 1,
                    state: BackendState::Active,
                    mac: None,
                })
                .collect(),
        }
    }

    #[test]
    fn lookup_prefers_port_specific_vip() {
        let t = Tables::build(
            vec![port()],
            &[
                vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]),
                vip(1, "203.0.113.1", 0, &[("10.0.0.2", 1)]),
            ],
        )
        .unwrap();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(t.vip(a, ip_protocol::TCP, 80).unwrap().id, 0);
        assert_eq!(t.vip(a, ip_protocol::TCP, 443).unwrap().id, 1);
        assert!(t.vip(a, ip_protocol::UDP, 80).is_none());
        assert_eq!(t.fragment_vip(a, ip_protocol::TCP).unwrap().unwrap().id, 1);
        assert!(t.is_vip_address(a));
    }

    #[test]
    fn fragments_ambiguous_with_two_port_vips() {
        let t = Tables::build(
            vec![port()],
            &[
                vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]),
                vip(1, "203.0.113.1", 443, &[("10.0.0.2", 1)]),
            ],
        )
        .unwrap();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(t.fragment_vip(a, ip_protocol::TCP).is_err());
        assert!(t.fragment_vip(a, ip_protocol::UDP).unwrap().is_none());
        assert!(
            t.fragment_vip(a, ip_protocol::IPV6_OPTS).is_err(),
            "unknown protocol, two TCP VIPs"
        );
        assert!(t.fragment_vip(a, ip_protocol::ICMP).unwrap().is_none());
    }

    #[test]
    fn many_services_on_one_address_use_the_hash_path() {
        let mut entries: Vec<VipEntry> = (0..20u16)
            .map(|i| vip(i, "203.0.113.1", 1000 + i, &[("10.0.0.1", i)]))
            .collect();
        entries.push(vip(20, "203.0.113.1", 0, &[("10.0.0.2", 20)]));
        let t = Tables::build(vec![port()], &entries).unwrap();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(t.address(a).unwrap().len > SCAN_LIMIT);
        assert_eq!(t.vip(a, ip_protocol::TCP, 1007).unwrap().id, 7);
        assert_eq!(
            t.vip(a, ip_protocol::TCP, 80).unwrap().id,
            20,
            "all-ports fallback"
        );
        assert!(t.vip(a, ip_protocol::UDP, 1007).is_none());
        let few = Tables::build(vec![port()], &entries[15..]).unwrap();
        assert!(few.address(a).unwrap().len <= SCAN_LIMIT);
        assert_eq!(few.vip(a, ip_protocol::TCP, 1017).unwrap().id, 17);
        assert_eq!(few.vip(a, ip_protocol::TCP, 1007).unwrap().id, 20);
    }

    #[test]
    fn ipv6_fragment_with_unknown_protocol_takes_the_single_protocol_vip() {
        let t = Tables::build(
            vec![port()],
            &[vip(0, "2001:db8::10", 0, &[("2001:db8::1", 0)])],
        )
        .unwrap();
        let a: IpAddr = "2001:db8::10".parse().unwrap();
        assert_eq!(
            t.fragment_vip(a, ip_protocol::IPV6_OPTS)
                .unwrap()
                .unwrap()
                .id,
            0
        );
        assert!(t.fragment_vip(a, ip_protocol::ICMPV6).unwrap().is_none());
    }

    #[test]
    fn invalid_entries_are_rejected_with_names() {
        let dup = Tables::build(
            vec![port()],
            &[
                vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]),
                vip(1, "203.0.113.1", 80, &[("10.0.0.2", 1)]),
            ],
        );
        assert_eq!(
            dup.unwrap_err().to_string(),
            "vip 203.0.113.1:80/tcp: another VIP already serves this address, protocol and port"
        );
        let same_backend_id = Tables::build(
            vec![port()],
            &[
                vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]),
                vip(1, "203.0.113.2", 80, &[("10.0.0.2", 0)]),
            ],
        );
        assert!(matches!(
            same_backend_id,
            Err(TablesError::BadBackendId(_, 0))
        ));
        let mut no_src = vip(0, "203.0.113.1", 80, &[("2001:db8::7", 0)]);
        no_src.encap_source_v6 = None;
        assert!(matches!(
            Tables::build(vec![port()], &[no_src]),
            Err(TablesError::MissingEncapSource(..))
        ));
        let mut dsr = vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]);
        dsr.mode = ForwardingMode::L2Dsr;
        assert!(matches!(
            Tables::build(vec![port()], &[dsr]),
            Err(TablesError::MissingMac(..))
        ));
        let mut bad_port = vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]);
        bad_port.egress_port = 3;
        assert!(matches!(
            Tables::build(vec![port()], &[bad_port]),
            Err(TablesError::UnknownPort(_, 3))
        ));
        let mut icmp = vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0)]);
        icmp.protocol = 1;
        assert!(matches!(
            Tables::build(vec![port()], &[icmp]),
            Err(TablesError::BadProtocol(_, 1))
        ));
    }

    #[test]
    fn build_reusing_matches_a_fresh_build() {
        let entries = |state: BackendState| {
            let mut a = vip(0, "203.0.113.1", 80, &[("10.0.0.1", 0), ("10.0.0.2", 1)]);
            a.backends[1].state = state;
            vec![
                a,
                vip(1, "203.0.113.2", 80, &[("10.0.0.3", 2), ("10.0.0.4", 3)]),
            ]
        };
        let first = Tables::build(vec![port()], &entries(BackendState::Active)).unwrap();
        for state in [BackendState::Active, BackendState::Down] {
            let fresh = Tables::build(vec![port()], &entries(state)).unwrap();
            let reused =
                Tables::build_reusing(vec![port()], &entries(state), Some(&first)).unwrap();
            for (f, r) in fresh.vips().iter().zip(reused.vips()) {
                assert_eq!(f.maglev().slots(), r.maglev().slots());
                assert_eq!(f.members, r.members);
            }
        }
        let changed =
            Tables::build_reusing(vec![port()], &entries(BackendState::Down), Some(&first))
                .unwrap();
        assert_ne!(
            changed.vips()[0].maglev().slots(),
            first.vips()[0].maglev().slots()
        );
    }

    #[test]
    fn draining_and_down_backends_get_no_new_flows() {
        let mut e = vip(
            0,
            "203.0.113.1",
            80,
            &[("10.0.0.1", 0), ("10.0.0.2", 1), ("10.0.0.3", 2)],
        );
        e.backends[0].state = BackendState::Draining;
        e.backends[1].state = BackendState::Down;
        let t = Tables::build(vec![port()], &[e]).unwrap();
        let v = &t.vips()[0];
        for h in 0..1000u64 {
            assert_eq!(v.pick(h.wrapping_mul(0x9E37_79B9_7F4A_7C15)), Some(2));
        }
        assert_eq!(t.backend(0).unwrap().state, BackendState::Draining);
        assert_eq!(t.backend(1).unwrap().state, BackendState::Down);
        assert!(t.backend(7).is_none());
    }
}
