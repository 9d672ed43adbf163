//! Path attributes and NLRI prefixes: the structured contents of an UPDATE.
//!
//! This module owns the representation of every attribute vipd sends or may meet (RFC 4271
//! ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR; RFC 1997
//! COMMUNITIES; RFC 8092 LARGE_COMMUNITIES; RFC 4760 MP_REACH_NLRI / MP_UNREACH_NLRI for IPv4 and
//! IPv6 unicast), their wire encoding, and the per-attribute checks of RFC 7606. Anything else is
//! kept as a [`RawAttribute`] (flags, type, value). How a whole UPDATE is judged and built lives
//! in [`crate::update`]. Nothing here panics on input from the network: reads go through the
//! crate's bounds-checked reader.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decode::Reader;
use crate::message::{Afi, Safi, AS_TRANS};

/// Attribute flag: optional (clear = well-known).
pub const FLAG_OPTIONAL: u8 = 0x80;
/// Attribute flag: transitive.
pub const FLAG_TRANSITIVE: u8 = 0x40;
/// Attribute flag: partial.
pub const FLAG_PARTIAL: u8 = 0x20;
/// Attribute flag: the length field is 2 octets.
pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    /// ORIGIN (RFC 4271).
    pub const ORIGIN: u8 = 1;
    /// AS_PATH (RFC 4271).
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP (RFC 4271).
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC (RFC 4271).
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF (RFC 4271).
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE (RFC 4271).
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR (RFC 4271).
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// An IPv4 or IPv6 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len`, with host bits cleared; `None` when `len` exceeds the address width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(len.min(32)))
                    .unwrap_or(0);
                if len > 32 {
                    return None;
                }
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Some(Prefix { addr, len })
    }

    /// The host route for `addr`: a /32 for IPv4, a /128 for IPv6 (what vipd announces per VIP).
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the default route (length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address family of the prefix.
    pub fn afi(&self) -> Afi {
        if self.addr.is_ipv4() {
            Afi::IPV4
        } else {
            Afi::IPV6
        }
    }

    /// Octets this prefix takes in an NLRI field: the length octet plus the significant octets.
    pub fn wire_len(&self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }

    /// Appends the (length, prefix) encoding of RFC 4271 section 4.3.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.len);
        let significant = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend(a.octets().iter().take(significant)),
            IpAddr::V6(a) => out.extend(a.octets().iter().take(significant)),
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses a sequence of (length, prefix) entries of family `afi` (IPv4 or IPv6).
///
/// Returns `None` when an entry is longer than the address width or runs past the field; such
/// a field cannot be split into prefixes, which RFC 7606 section 5.3 treats as a session reset.
pub fn parse_prefixes(afi: Afi, field: &[u8]) -> Option<Vec<Prefix>> {
    let width: u8 = match afi {
        Afi::IPV4 => 32,
        Afi::IPV6 => 128,
        _ => return None,
    };
    let mut r = Reader::new(field);
    let mut prefixes = Vec::new();
    while !r.is_empty() {
        let len = r.u8()?;
        if len > width {
            return None;
        }
        let bytes = r.take(usize::from(len).div_ceil(8))?;
        let addr = if width == 32 {
            let mut octets = [0u8; 4];
            octets.iter_mut().zip(bytes).for_each(|(o, b)| *o = *b);
            IpAddr::V4(Ipv4Addr::from(octets))
        } else {
            let mut octets = [0u8; 16];
            octets.iter_mut().zip(bytes).for_each(|(o, b)| *o = *b);
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        prefixes.push(Prefix::new(addr, len)?);
    }
    Some(prefixes)
}

/// ORIGIN values (RFC 4271 section 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Learned by an interior protocol (0); what vipd sends for its VIPs.
    Igp,
    /// Learned by EGP (1).
    Egp,
    /// Learned some other way (2).
    Incomplete,
}

impl Origin {
    fn code(self) -> u8 {
        match self {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }
    }
}

/// One AS_PATH segment (RFC 4271 section 4.3, with 4-octet ASNs from RFC 6793).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    /// AS_SET (1): an unordered set, from aggregation.
    Set(Vec<u32>),
    /// AS_SEQUENCE (2): the ASes traversed, nearest first.
    Sequence(Vec<u32>),
}

impl AsSegment {
    fn parts(&self) -> (u8, &[u32]) {
        match self {
            AsSegment::Set(a) => (1, a),
            AsSegment::Sequence(a) => (2, a),
        }
    }
}

/// AS_PATH: the segments in wire order. Empty for routes originated towards an iBGP peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// Segments, each holding 1..=255 ASNs on the wire.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path made of one AS_SEQUENCE (empty `asns` gives the empty path).
    pub fn sequence(asns: Vec<u32>) -> AsPath {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment::Sequence(asns)],
        }
    }

    /// True when some ASN does not fit 2 octets (so a 2-octet peer also needs AS4_PATH).
    fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.parts().1.iter().any(|&a| a > u32::from(u16::MAX)))
    }

    /// Appends the segments with `four_octet` (4-octet) or 2-octet ASNs; 2-octet encoding writes
    /// AS_TRANS for ASNs that do not fit (RFC 6793 section 4.2.2). Segments over 255 ASNs are
    /// split into several segments of the same kind.
    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for segment in &self.segments {
            let (kind, asns) = segment.parts();
            for chunk in asns.chunks(255) {
                out.push(kind);
                // chunks(255) bounds the count.
                out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                for &asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let two = u16::try_from(asn).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }

    /// Parses AS_PATH segments; `None` when malformed (RFC 7606 section 7.2).
    fn parse(value: &[u8], four_octet: bool) -> Option<AsPath> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = r.u8()?;
            let count = r.u8()?;
            if count == 0 {
                return None;
            }
            let mut asns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                asns.push(if four_octet {
                    r.u32()?
                } else {
                    u32::from(r.u16()?)
                });
            }
            // AS_CONFED_SEQUENCE (3) and AS_CONFED_SET (4) are never expected from an external
            // peer of an announce-only speaker; reject them like an unknown segment type.
            segments.push(match kind {
                1 => AsSegment::Set(asns),
                2 => AsSegment::Sequence(asns),
                _ => return None,
            });
        }
        Some(AsPath { segments })
    }
}

/// A standard community (RFC 1997): `asn:value` packed in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// GRACEFUL_SHUTDOWN (RFC 8326): the route is about to be withdrawn for maintenance.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xffff_0000);
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);

    /// The community `asn:value`.
    pub fn new(asn: u16, value: u16) -> Community {
        Community(u32::from(asn) << 16 | u32::from(value))
    }
}

/// A large community (RFC 8092): `global:local1:local2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global Administrator: the ASN that defines the meaning.
    pub global_admin: u32,
    /// Local Data Part 1.
    pub local_data_1: u32,
    /// Local Data Part 2.
    pub local_data_2: u32,
}

/// The next hop carried in MP_REACH_NLRI (RFC 4760 section 3, RFC 2545 section 3 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    /// A 4-octet IPv4 next hop.
    V4(Ipv4Addr),
    /// A 16-octet global IPv6 next hop, optionally followed by a link-local one (32 octets).
    V6 {
        /// Global address.
        global: Ipv6Addr,
        /// Link-local address, for peers on a shared link.
        link_local: Option<Ipv6Addr>,
    },
}

impl MpNextHop {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            MpNextHop::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            MpNextHop::V6 { global, link_local } => {
                out.push(if link_local.is_some() { 32 } else { 16 });
                out.extend_from_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.extend_from_slice(&ll.octets());
                }
            }
        }
    }

    fn parse(bytes: &[u8]) -> Option<MpNextHop> {
        let mut r = Reader::new(bytes);
        let v6 = |r: &mut Reader<'_>| -> Option<Ipv6Addr> {
            let b: [u8; 16] = r.take(16)?.try_into().ok()?;
            Some(Ipv6Addr::from(b))
        };
        match bytes.len() {
            4 => Some(MpNextHop::V4(Ipv4Addr::from(r.u32()?))),
            16 => Some(MpNextHop::V6 {
                global: v6(&mut r)?,
                link_local: None,
            }),
            32 => Some(MpNextHop::V6 {
                global: v6(&mut r)?,
                link_local: Some(v6(&mut r)?),
            }),
            _ => None,
        }
    }
}

/// MP_REACH_NLRI for IPv4 or IPv6 unicast (RFC 4760 section 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// Address family of the prefixes.
    pub afi: Afi,
    /// Subsequent address family (unicast).
    pub safi: Safi,
    /// Next hop for all `prefixes`.
    pub next_hop: MpNextHop,
    /// Announced prefixes.
    pub prefixes: Vec<Prefix>,
}

/// MP_UNREACH_NLRI for IPv4 or IPv6 unicast (RFC 4760 section 4). With no prefixes it is the
/// End-of-RIB marker of that family (RFC 4724 section 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// Address family of the prefixes.
    pub afi: Afi,
    /// Subsequent address family (unicast).
    pub safi: Safi,
    /// Withdrawn prefixes.
    pub prefixes: Vec<Prefix>,
}

/// An attribute kept as received: unknown types, or families this speaker does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Attribute flags; the extended-length bit is chosen again on encode.
    pub flags: u8,
    /// Attribute type code.
    pub type_code: u8,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// One path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    /// ORIGIN (well-known mandatory).
    Origin(Origin),
    /// AS_PATH (well-known mandatory).
    AsPath(AsPath),
    /// NEXT_HOP for IPv4 routes in the classic NLRI field (well-known).
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC (optional non-transitive).
    MultiExitDisc(u32),
    /// LOCAL_PREF (well-known, iBGP only).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE (well-known discretionary).
    AtomicAggregate,
    /// AGGREGATOR (optional transitive): the aggregating AS and router.
    Aggregator {
        /// AS of the aggregating speaker.
        asn: u32,
        /// BGP identifier of the aggregating speaker.
        router: Ipv4Addr,
    },
    /// COMMUNITIES (optional transitive).
    Communities(Vec<Community>),
    /// LARGE_COMMUNITY (optional transitive).
    LargeCommunities(Vec<LargeCommunity>),
    /// MP_REACH_NLRI for IPv4/IPv6 unicast (optional non-transitive).
    MpReach(MpReach),
    /// MP_UNREACH_NLRI for IPv4/IPv6 unicast (optional non-transitive).
    MpUnreach(MpUnreach),
    /// Anything else, unchanged.
    Raw(RawAttribute),
}

impl PathAttribute {
    /// The attribute type code.
    pub fn type_code(&self) -> u8 {
        use type_code::*;
        match self {
            PathAttribute::Origin(_) => ORIGIN,
            PathAttribute::AsPath(_) => AS_PATH,
            PathAttribute::NextHop(_) => NEXT_HOP,
            PathAttribute::MultiExitDisc(_) => MULTI_EXIT_DISC,
            PathAttribute::LocalPref(_) => LOCAL_PREF,
            PathAttribute::AtomicAggregate => ATOMIC_AGGREGATE,
            PathAttribute::Aggregator { .. } => AGGREGATOR,
            PathAttribute::Communities(_) => COMMUNITIES,
            PathAttribute::LargeCommunities(_) => LARGE_COMMUNITIES,
            PathAttribute::MpReach(_) => MP_REACH_NLRI,
            PathAttribute::MpUnreach(_) => MP_UNREACH_NLRI,
            PathAttribute::Raw(raw) => raw.type_code,
        }
    }

    /// The flags this speaker sends (without the extended-length bit).
    fn flags(&self) -> u8 {
        match self {
            PathAttribute::Raw(raw) => raw.flags & !FLAG_EXTENDED_LENGTH,
            other => expected_flags(other.type_code()).unwrap_or(FLAG_OPTIONAL),
        }
    }

    /// Appends flags, type, length and value. `four_octet_as` selects the AS_PATH and
    /// AGGREGATOR encoding negotiated with the peer (RFC 6793).
    ///
    /// Returns `false` (appending nothing) if the value exceeds 65535 octets.
    pub fn encode(&self, four_octet_as: bool, out: &mut Vec<u8>) -> bool {
        let mut value = Vec::new();
        match self {
            PathAttribute::Origin(o) => value.push(o.code()),
            PathAttribute::AsPath(p) => p.encode(four_octet_as, &mut value),
            PathAttribute::NextHop(a) => value.extend_from_slice(&a.octets()),
            PathAttribute::MultiExitDisc(v) | PathAttribute::LocalPref(v) => {
                value.extend_from_slice(&v.to_be_bytes())
            }
            PathAttribute::AtomicAggregate => {}
            PathAttribute::Aggregator { asn, router } => {
                if four_octet_as {
                    value.extend_from_slice(&asn.to_be_bytes());
                } else {
                    value.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
                value.extend_from_slice(&router.octets());
            }
            PathAttribute::Communities(cs) => cs
                .iter()
                .for_each(|c| value.extend_from_slice(&c.0.to_be_bytes())),
            PathAttribute::LargeCommunities(cs) => cs.iter().for_each(|c| {
                value.extend_from_slice(&c.global_admin.to_be_bytes());
                value.extend_from_slice(&c.local_data_1.to_be_bytes());
                value.extend_from_slice(&c.local_data_2.to_be_bytes());
            }),
            PathAttribute::MpReach(m) => {
                value.extend_from_slice(&m.afi.0.to_be_bytes());
                value.push(m.safi.0);
                m.next_hop.encode(&mut value);
                value.push(0); // reserved
                m.prefixes.iter().for_each(|p| p.encode(&mut value));
            }
            PathAttribute::MpUnreach(m) => {
                value.extend_from_slice(&m.afi.0.to_be_bytes());
                value.push(m.safi.0);
                m.prefixes.iter().for_each(|p| p.encode(&mut value));
            }
            PathAttribute::Raw(raw) => value.extend_from_slice(&raw.value),
        }
        let Ok(len) = u16::try_from(value.len()) else {
            return false;
        };
        let flags = self.flags();
        if let Ok(short) = u8::try_from(len) {
            out.extend_from_slice(&[flags, self.type_code(), short]);
        } else {
            out.extend_from_slice(&[flags | FLAG_EXTENDED_LENGTH, self.type_code()]);
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(&value);
        true
    }
}

/// Optional and transitive bits RFC 4271/4760/1997/8092 fix for a known type code.
pub(crate) fn expected_flags(type_code: u8) -> Option<u8> {
    use type_code::*;
    Some(match type_code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => FLAG_TRANSITIVE,
        MULTI_EXIT_DISC | MP_REACH_NLRI | MP_UNREACH_NLRI => FLAG_OPTIONAL,
        AGGREGATOR | COMMUNITIES | LARGE_COMMUNITIES | AS4_PATH => FLAG_OPTIONAL | FLAG_TRANSITIVE,
        _ => return None,
    })
}

/// Why one attribute value was judged malformed; [`crate::update`] decides what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// The value is malformed; the reason names the rule.
    Malformed(&'static str),
}

/// Parses the value of a known attribute type. Unknown types and families become
/// [`PathAttribute::Raw`]. `flags` are only used to keep raw attributes unchanged.
pub(crate) fn parse_value(
    flags: u8,
    type_code: u8,
    value: &[u8],
    four_octet_as: bool,
) -> Result<PathAttribute, ValueError> {
    use type_code::*;
    use ValueError::Malformed;
    let mut r = Reader::new(value);
    let exact_u32 = |r: &mut Reader<'_>, what| match (value.len(), r.u32()) {
        (4, Some(v)) => Ok(v),
        _ => Err(Malformed(what)),
    };
    let raw = || {
        PathAttribute::Raw(RawAttribute {
            flags: flags & !FLAG_EXTENDED_LENGTH,
            type_code,
            value: value.to_vec(),
        })
    };
    Ok(match type_code {
        ORIGIN => match value {
            [0] => PathAttribute::Origin(Origin::Igp),
            [1] => PathAttribute::Origin(Origin::Egp),
            [2] => PathAttribute::Origin(Origin::Incomplete),
            _ => return Err(Malformed("ORIGIN must be one octet of value 0, 1 or 2")),
        },
        AS_PATH => PathAttribute::AsPath(
            AsPath::parse(value, four_octet_as).ok_or(Malformed("AS_PATH segments malformed"))?,
        ),
        NEXT_HOP => PathAttribute::NextHop(Ipv4Addr::from(exact_u32(
            &mut r,
            "NEXT_HOP must be 4 octets",
        )?)),
        MULTI_EXIT_DISC => {
            PathAttribute::MultiExitDisc(exact_u32(&mut r, "MULTI_EXIT_DISC must be 4 octets")?)
        }
        LOCAL_PREF => PathAttribute::LocalPref(exact_u32(&mut r, "LOCAL_PREF must be 4 octets")?),
        ATOMIC_AGGREGATE => {
            if !value.is_empty() {
                return Err(Malformed("ATOMIC_AGGREGATE must be empty"));
            }
            PathAttribute::AtomicAggregate
        }
        AGGREGATOR => {
            let want = if four_octet_as { 8 } else { 6 };
            let asn = if four_octet_as {
                r.u32()
            } else {
                r.u16().map(u32::from)
            };
            match (value.len() == want, asn, r.u32()) {
                (true, Some(asn), Some(router)) => PathAttribute::Aggregator {
                    asn,
                    router: Ipv4Addr::from(router),
                },
                _ => return Err(Malformed("AGGREGATOR has the wrong length")),
            }
        }
        COMMUNITIES => {
            if value.is_empty() || value.len() % 4 != 0 {
                return Err(Malformed(
                    "COMMUNITIES length must be a non-zero multiple of 4",
                ));
            }
            let mut cs = Vec::with_capacity(value.len() / 4);
            while let Some(c) = r.u32() {
                cs.push(Community(c));
            }
            PathAttribute::Communities(cs)
        }
        LARGE_COMMUNITIES => {
            if value.is_empty() || value.len() % 12 != 0 {
                return Err(Malformed(
                    "LARGE_COMMUNITY length must be a non-zero multiple of 12",
                ));
            }
            let mut cs = Vec::with_capacity(value.len() / 12);
            while let (Some(g), Some(l1), Some(l2)) = (r.u32(), r.u32(), r.u32()) {
                cs.push(LargeCommunity {
                    global_admin: g,
                    local_data_1: l1,
                    local_data_2: l2,
                });
            }
            PathAttribute::LargeCommunities(cs)
        }
        MP_REACH_NLRI => {
            let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
                return Err(Malformed("MP_REACH_NLRI shorter than its fixed fields"));
            };
            let (afi, safi) = (Afi(afi), Safi(safi));
            if !is_parsed_family(afi, safi) {
                return Ok(raw());
            }
            let nh = r
                .take(usize::from(nh_len))
                .ok_or(Malformed("MP_REACH_NLRI next hop runs past the attribute"))?;
            let next_hop = MpNextHop::parse(nh).ok_or(Malformed(
                "MP_REACH_NLRI next hop must be 4 (IPv4), 16 or 32 (IPv6) octets",
            ))?;
            let (true, Some(_reserved)) = (nh_len_matches(afi, nh.len()), r.u8()) else {
                return Err(Malformed("MP_REACH_NLRI next hop does not fit its family"));
            };
            let prefixes = parse_prefixes(afi, r.rest())
                .ok_or(Malformed("MP_REACH_NLRI prefixes malformed"))?;
            PathAttribute::MpReach(MpReach {
                afi,
                safi,
                next_hop,
                prefixes,
            })
        }
        MP_UNREACH_NLRI => {
            let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
                return Err(Malformed("MP_UNREACH_NLRI shorter than its fixed fields"));
            };
            let (afi, safi) = (Afi(afi), Safi(safi));
            if !is_parsed_family(afi, safi) {
                return Ok(raw());
            }
            let prefixes = parse_prefixes(afi, r.rest())
                .ok_or(Malformed("MP_UNREACH_NLRI prefixes malformed"))?;
            PathAttribute::MpUnreach(MpUnreach {
                afi,
                safi,
                prefixes,
            })
        }
        _ => raw(),
    })
}

/// Families whose NLRI this speaker parses: IPv4 and IPv6 unicast.
fn is_parsed_family(afi: Afi, safi: Safi) -> bool {
    (afi == Afi::IPV4 || afi == Afi::IPV6) && safi == Safi::UNICAST
}

fn nh_len_matches(afi: Afi, len: usize) -> bool {
    match afi {
        Afi::IPV4 => len == 4,
        _ => len == 16 || len == 32,
    }
}

/// True when `path` needs an AS4_PATH companion towards a 2-octet-only peer.
pub(crate) fn needs_as4_path(path: &AsPath) -> bool {
    path.needs_four_octets()
}

/// The AS4_PATH attribute (RFC 6793 section 4.2.2) for `path`, with 4-octet ASNs.
pub(crate) fn as4_path(path: &AsPath) -> PathAttribute {
    let mut value = Vec::new();
    path.encode(true, &mut value);
    PathAttribute::Raw(RawAttribute {
        flags: FLAG_OPTIONAL | FLAG_TRANSITIVE,
        type_code: type_code::AS4_PATH,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_new_clears_host_bits_and_checks_width() {
        let p = Prefix::new("192.0.2.77".parse().unwrap(), 24).unwrap();
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert!(Prefix::new("192.0.2.1".parse().unwrap(), 33).is_none());
        assert!(Prefix::new("2001:db8::1".parse().unwrap(), 129).is_none());
        let p = Prefix::new("2001:db8::1".parse().unwrap(), 0).unwrap();
        assert_eq!(p.to_string(), "::/0");
        assert_eq!(p.wire_len(), 1);
        assert_eq!(Prefix::host("2001:db8::1".parse().unwrap()).wire_len(), 17);
    }

    #[test]
    fn prefixes_parse_rejects_overlong_and_truncated_entries() {
        assert_eq!(
            parse_prefixes(Afi::IPV4, &[24, 192, 0, 2]).unwrap(),
            vec![Prefix::new("192.0.2.0".parse().unwrap(), 24).unwrap()]
        );
        assert!(parse_prefixes(Afi::IPV4, &[33, 1, 2, 3, 4, 5]).is_none());
        assert!(parse_prefixes(Afi::IPV4, &[32, 1, 2, 3]).is_none());
        assert!(parse_prefixes(Afi::IPV6, &[129]).is_none());
        assert!(parse_prefixes(Afi(3), &[]).is_none());
    }

    #[test]
    fn two_octet_as_path_uses_as_trans() {
        let path = AsPath::sequence(vec![65001, 4_200_000_000]);
        let mut out = Vec::new();
        path.encode(false, &mut out);
        assert_eq!(out, vec![2, 2, 0xfd, 0xe9, 0x5b, 0xa0]);
        assert!(needs_as4_path(&path));
        assert!(!needs_as4_path(&AsPath::sequence(vec![65001])));
    }

    #[test]
    fn long_segments_are_split_at_255() {
        let path = AsPath::sequence((1..=300).collect());
        let mut out = Vec::new();
        path.encode(true, &mut out);
        assert_eq!(out.len(), 2 + 255 * 4 + 2 + 45 * 4);
        let back = AsPath::parse(&out, true).unwrap();
        assert_eq!(back.segments.len(), 2);
    }
}
