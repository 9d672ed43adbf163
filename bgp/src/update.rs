//! UPDATE contents: judging what a peer sent (RFC 7606) and building what vipd announces.
//!
//! [`parse_update`] turns the three raw sections of an [`Update`] into prefixes and
//! [`PathAttribute`]s. It is total: every input yields either a [`ParsedUpdate`] (possibly with
//! attributes discarded or its routes to be treated as withdrawn, each recorded in
//! [`ParsedUpdate::errors`]) or an [`UpdateError`] whose [`UpdateError::notification`] must be
//! sent before the session is reset. [`UpdateBuilder`] goes the other way: it packs a set of
//! host routes into as few UPDATEs of at most 4096 octets as it can, IPv4 in the classic NLRI
//! field and IPv6 in MP_REACH_NLRI, which it places first as RFC 7606 section 5.1 asks.

use std::net::Ipv4Addr;

use crate::attributes::{
    as4_path, expected_flags, needs_as4_path, parse_prefixes, parse_value, type_code, AsPath,
    Community, LargeCommunity, MpNextHop, MpReach, MpUnreach, Origin, PathAttribute, Prefix,
    ValueError, FLAG_EXTENDED_LENGTH, FLAG_OPTIONAL, FLAG_TRANSITIVE,
};
use crate::codes;
use crate::decode::Reader;
use crate::message::{Afi, Notification, Safi, Update, HEADER_LEN, MAX_MESSAGE_LEN};

/// Octets of an UPDATE before its sections: header plus the two 2-octet section lengths.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 4;

/// What RFC 7606 says to do about one attribute problem that does not reset the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Drop the attribute and use the rest of the UPDATE (RFC 7606 section 2).
    AttributeDiscard,
    /// Handle every prefix the UPDATE announces as if it had been withdrawn.
    TreatAsWithdraw,
}

/// One attribute problem found in a received UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeError {
    /// Type code of the attribute at fault (0 when the attribute list itself is broken).
    pub type_code: u8,
    /// The action taken.
    pub action: ErrorAction,
    /// Which rule was broken.
    pub reason: &'static str,
}

/// An UPDATE error that RFC 7606 still answers with a NOTIFICATION and a session reset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The Withdrawn Routes field cannot be split into IPv4 prefixes (3/1).
    #[error(
        "withdrawn routes field is not a sequence of IPv4 prefixes; the peer's encoder is broken"
    )]
    MalformedWithdrawnRoutes,
    /// The NLRI field cannot be split into IPv4 prefixes (3/10).
    #[error("NLRI field is not a sequence of IPv4 prefixes; the peer's encoder is broken")]
    InvalidNetworkField,
    /// The attribute list is broken and no NLRI could be located to treat as withdrawn (3/1).
    #[error("malformed path attribute list: {reason}")]
    MalformedAttributeList {
        /// What was inconsistent.
        reason: &'static str,
    },
    /// MP_REACH_NLRI or MP_UNREACH_NLRI appeared more than once (3/1, RFC 7606 section 3 g).
    #[error("attribute {type_code} (MP_REACH/MP_UNREACH_NLRI) appears more than once")]
    DuplicateMpAttribute {
        /// Type code of the repeated attribute.
        type_code: u8,
    },
    /// A well-known attribute type this speaker does not know (3/2).
    #[error("unrecognized well-known attribute type {type_code}; the peer must mark unknown attributes optional")]
    UnrecognizedWellKnown {
        /// Type code as received.
        type_code: u8,
        /// The whole attribute, for the NOTIFICATION data.
        attribute: Vec<u8>,
    },
    /// MP_REACH_NLRI or MP_UNREACH_NLRI is malformed, so its prefixes are unknown (3/9).
    #[error("malformed multiprotocol attribute {type_code}: {reason}")]
    MalformedMpAttribute {
        /// Type code (14 or 15).
        type_code: u8,
        /// What was wrong with it.
        reason: &'static str,
    },
}

impl UpdateError {
    /// The NOTIFICATION to send before resetting the session.
    pub fn notification(&self) -> Notification {
        use codes::{error, update};
        match self {
            UpdateError::MalformedWithdrawnRoutes
            | UpdateError::MalformedAttributeList { .. }
            | UpdateError::DuplicateMpAttribute { .. } => {
                Notification::new(error::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST)
            }
            UpdateError::InvalidNetworkField => {
                Notification::new(error::UPDATE_MESSAGE, update::INVALID_NETWORK_FIELD)
            }
            UpdateError::UnrecognizedWellKnown { attribute, .. } => Notification::with_data(
                error::UPDATE_MESSAGE,
                update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                attribute.clone(),
            ),
            UpdateError::MalformedMpAttribute { .. } => {
                Notification::new(error::UPDATE_MESSAGE, update::OPTIONAL_ATTRIBUTE_ERROR)
            }
        }
    }
}

/// A received UPDATE after RFC 7606 judgement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedUpdate {
    /// IPv4 prefixes from the Withdrawn Routes field.
    pub withdrawn: Vec<Prefix>,
    /// Attributes that passed their checks, in wire order (discarded ones are left out).
    pub attributes: Vec<PathAttribute>,
    /// IPv4 prefixes from the NLRI field.
    pub nlri: Vec<Prefix>,
    /// Problems that did not reset the session.
    pub errors: Vec<AttributeError>,
}

impl ParsedUpdate {
    /// True when RFC 7606 says the announced prefixes must be handled as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.action == ErrorAction::TreatAsWithdraw)
    }

    /// Every prefix announced: classic NLRI plus MP_REACH_NLRI, regardless of errors.
    pub fn reachable(&self) -> Vec<Prefix> {
        let mut out = self.nlri.clone();
        for a in &self.attributes {
            if let PathAttribute::MpReach(m) = a {
                out.extend_from_slice(&m.prefixes);
            }
        }
        out
    }

    /// Prefixes that become usable routes: [`Self::reachable`], unless treat-as-withdraw applies.
    pub fn announced(&self) -> Vec<Prefix> {
        if self.treat_as_withdraw() {
            Vec::new()
        } else {
            self.reachable()
        }
    }

    /// Prefixes to remove: Withdrawn Routes, MP_UNREACH_NLRI, and under treat-as-withdraw the
    /// announced ones as well.
    pub fn withdrawn_all(&self) -> Vec<Prefix> {
        let mut out = self.withdrawn.clone();
        for a in &self.attributes {
            if let PathAttribute::MpUnreach(m) = a {
                out.extend_from_slice(&m.prefixes);
            }
        }
        if self.treat_as_withdraw() {
            out.extend(self.reachable());
        }
        out
    }

    /// The family this UPDATE marks as End-of-RIB (RFC 4724 section 2), if it is such a marker:
    /// an empty UPDATE for IPv4 unicast, or one holding only an empty MP_UNREACH_NLRI.
    pub fn end_of_rib(&self) -> Option<(Afi, Safi)> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || !self.errors.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some((Afi::IPV4, Safi::UNICAST)),
            [PathAttribute::MpUnreach(m)] if m.prefixes.is_empty() => Some((m.afi, m.safi)),
            _ => None,
        }
    }

    /// Encodes the sections back into an [`Update`] (attributes in the order held).
    pub fn to_update(&self, four_octet_as: bool) -> Update {
        let mut update = Update::default();
        self.withdrawn
            .iter()
            .for_each(|p| p.encode(&mut update.withdrawn_routes));
        for a in &self.attributes {
            a.encode(four_octet_as, &mut update.path_attributes);
        }
        self.nlri.iter().for_each(|p| p.encode(&mut update.nlri));
        update
    }
}

/// Judges a received UPDATE per RFC 4271 section 6.3 as revised by RFC 7606.
///
/// `four_octet_as` is whether both sides advertised the 4-octet AS capability, which fixes the
/// width of ASNs in AS_PATH and AGGREGATOR.
pub fn parse_update(update: &Update, four_octet_as: bool) -> Result<ParsedUpdate, UpdateError> {
    let withdrawn = parse_prefixes(Afi::IPV4, &update.withdrawn_routes)
        .ok_or(UpdateError::MalformedWithdrawnRoutes)?;
    let nlri = parse_prefixes(Afi::IPV4, &update.nlri).ok_or(UpdateError::InvalidNetworkField)?;
    let mut parsed = ParsedUpdate {
        withdrawn,
        nlri,
        ..ParsedUpdate::default()
    };
    // Indexed by a u8 type code, so every index is in bounds.
    let mut seen = [false; 256];
    let mut r = Reader::new(&update.path_attributes);
    while !r.is_empty() {
        let Some(attr) = next_attribute(&mut r) else {
            // RFC 7606 section 4: treat-as-withdraw, relying on the Total Path Attribute Length
            // to find the NLRI. If no NLRI was found anywhere yet, the broken tail may hide an
            // MP_REACH_NLRI whose prefixes we cannot withdraw, so the session must go.
            let found_nlri = !parsed.nlri.is_empty()
                || !parsed.withdrawn.is_empty()
                || seen[usize::from(type_code::MP_REACH_NLRI)]
                || seen[usize::from(type_code::MP_UNREACH_NLRI)];
            if !found_nlri {
                return Err(UpdateError::MalformedAttributeList {
                    reason: "an attribute runs past the total path attribute length",
                });
            }
            parsed.errors.push(AttributeError {
                type_code: 0,
                action: ErrorAction::TreatAsWithdraw,
                reason: "an attribute runs past the total path attribute length",
            });
            break;
        };
        judge_attribute(attr, four_octet_as, &mut seen, &mut parsed)?;
    }
    let announces = !parsed.nlri.is_empty() || seen[usize::from(type_code::MP_REACH_NLRI)];
    if announces {
        let mut missing = |code: u8, reason| {
            if !seen[usize::from(code)] {
                parsed.errors.push(AttributeError {
                    type_code: code,
                    action: ErrorAction::TreatAsWithdraw,
                    reason,
                });
            }
        };
        missing(type_code::ORIGIN, "missing well-known attribute ORIGIN");
        missing(type_code::AS_PATH, "missing well-known attribute AS_PATH");
        if !parsed.nlri.is_empty() {
            missing(type_code::NEXT_HOP, "missing NEXT_HOP for IPv4 NLRI");
        }
    }
    Ok(parsed)
}

/// One attribute as framed on the wire.
struct WireAttribute<'a> {
    flags: u8,
    type_code: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

fn next_attribute<'a>(r: &mut Reader<'a>) -> Option<WireAttribute<'a>> {
    let start = r.peek_rest();
    let flags = r.u8()?;
    let type_code = r.u8()?;
    let len = if flags & FLAG_EXTENDED_LENGTH != 0 {
        r.u16()?
    } else {
        u16::from(r.u8()?)
    };
    let value = r.take(usize::from(len))?;
    let header_len = if flags & FLAG_EXTENDED_LENGTH != 0 {
        4
    } else {
        3
    };
    let whole = start.get(..header_len + value.len())?;
    Some(WireAttribute {
        flags,
        type_code,
        value,
        whole,
    })
}

fn judge_attribute(
    attr: WireAttribute<'_>,
    four_octet_as: bool,
    seen: &mut [bool; 256],
    parsed: &mut ParsedUpdate,
) -> Result<(), UpdateError> {
    let code = attr.type_code;
    let is_mp = code == type_code::MP_REACH_NLRI || code == type_code::MP_UNREACH_NLRI;
    let slot = usize::from(code);
    if seen.get(slot).copied().unwrap_or(false) {
        if is_mp {
            return Err(UpdateError::DuplicateMpAttribute { type_code: code });
        }
        parsed.errors.push(AttributeError {
            type_code: code,
            action: ErrorAction::AttributeDiscard,
            reason: "attribute repeated; all but the first are discarded",
        });
        return Ok(());
    }
    if let Some(s) = seen.get_mut(slot) {
        *s = true;
    }
    // Unknown well-known attributes still reset the session (RFC 4271 6.3; 7606 keeps it).
    let known = expected_flags(code);
    if known.is_none() && attr.flags & FLAG_OPTIONAL == 0 {
        return Err(UpdateError::UnrecognizedWellKnown {
            type_code: code,
            attribute: attr.whole.to_vec(),
        });
    }
    // The malformed-attribute action by type (RFC 7606 section 7).
    let action = match code {
        type_code::ATOMIC_AGGREGATE | type_code::AGGREGATOR => ErrorAction::AttributeDiscard,
        _ => ErrorAction::TreatAsWithdraw,
    };
    let flags_ok = known.is_none_or(|want| attr.flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) == want);
    let result = if flags_ok {
        parse_value(attr.flags, code, attr.value, four_octet_as)
    } else {
        Err(ValueError::Malformed(
            "optional/transitive flags conflict with the attribute type",
        ))
    };
    match result {
        Ok(attribute) => parsed.attributes.push(attribute),
        Err(ValueError::Malformed(reason)) if is_mp => {
            return Err(UpdateError::MalformedMpAttribute {
                type_code: code,
                reason,
            });
        }
        Err(ValueError::Malformed(reason)) => parsed.errors.push(AttributeError {
            type_code: code,
            action,
            reason,
        }),
    }
    Ok(())
}

/// The attributes vipd attaches to every route it announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAttributes {
    /// ORIGIN; IGP for locally originated VIPs.
    pub origin: Origin,
    /// AS_PATH; `[local AS]` towards an eBGP peer, empty towards an iBGP peer.
    pub as_path: AsPath,
    /// MULTI_EXIT_DISC, if any.
    pub med: Option<u32>,
    /// LOCAL_PREF; only meaningful (and only sent) towards iBGP peers.
    pub local_pref: Option<u32>,
    /// Standard communities, e.g. [`Community::GRACEFUL_SHUTDOWN`] while draining.
    pub communities: Vec<Community>,
    /// Large communities.
    pub large_communities: Vec<LargeCommunity>,
}

impl RouteAttributes {
    /// IGP origin with the given AS_PATH and nothing else.
    pub fn new(as_path: AsPath) -> RouteAttributes {
        RouteAttributes {
            origin: Origin::Igp,
            as_path,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// Next hops to announce, one per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextHops {
    /// NEXT_HOP for IPv4 prefixes.
    pub ipv4: Option<Ipv4Addr>,
    /// MP_REACH_NLRI next hop for IPv6 prefixes (global, optionally plus link-local).
    pub ipv6: Option<MpNextHop>,
}

/// Why announcements could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A prefix of a family with no configured next hop.
    #[error("cannot announce {prefix}: no {family} next hop is configured for this peer")]
    NoNextHop {
        /// The prefix.
        prefix: Prefix,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// The IPv6 next hop is not an IPv6 address.
    #[error("the IPv6 next hop must be an IPv6 address (16 or 32 octets)")]
    WrongNextHopFamily,
    /// The attributes alone leave no room for a prefix in a 4096-octet UPDATE.
    #[error("path attributes take {length} octets; fewer communities are needed to fit a prefix in 4096 octets")]
    AttributesTooLong {
        /// Octets of the encoded attributes.
        length: usize,
    },
}

/// Builds the UPDATEs vipd sends: announcements, withdrawals and End-of-RIB markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateBuilder {
    /// Attributes attached to every announced prefix.
    pub attributes: RouteAttributes,
    /// Next hops per family.
    pub next_hops: NextHops,
    /// Whether the session negotiated 4-octet ASNs (RFC 6793); otherwise AS_PATH carries
    /// AS_TRANS and an AS4_PATH is added when needed.
    pub four_octet_as: bool,
}

impl UpdateBuilder {
    /// A builder for a session with 4-octet AS support.
    pub fn new(attributes: RouteAttributes, next_hops: NextHops) -> UpdateBuilder {
        UpdateBuilder {
            attributes,
            next_hops,
            four_octet_as: true,
        }
    }

    /// Attributes common to both families, in type-code order.
    fn common_attributes(&self) -> Vec<PathAttribute> {
        let a = &self.attributes;
        let mut out = vec![
            PathAttribute::Origin(a.origin),
            PathAttribute::AsPath(a.as_path.clone()),
        ];
        if let Some(med) = a.med {
            out.push(PathAttribute::MultiExitDisc(med));
        }
        if let Some(lp) = a.local_pref {
            out.push(PathAttribute::LocalPref(lp));
        }
        if !a.communities.is_empty() {
            out.push(PathAttribute::Communities(a.communities.clone()));
        }
        if !self.four_octet_as && needs_as4_path(&a.as_path) {
            out.push(as4_path(&a.as_path));
        }
        if !a.large_communities.is_empty() {
            out.push(PathAttribute::LargeCommunities(a.large_communities.clone()));
        }
        out
    }

    fn encode_all(&self, attributes: &[PathAttribute]) -> Vec<u8> {
        let mut out = Vec::new();
        for a in attributes {
            a.encode(self.four_octet_as, &mut out);
        }
        out
    }

    /// UPDATEs announcing `prefixes` (any mix of IPv4 and IPv6), each at most 4096 octets.
    pub fn announce(&self, prefixes: &[Prefix]) -> Result<Vec<Update>, BuildError> {
        let (v4, v6): (Vec<Prefix>, Vec<Prefix>) =
            prefixes.iter().partition(|p| p.afi() == Afi::IPV4);
        let mut updates = Vec::new();
        if let Some(first) = v4.first() {
            let next_hop = self.next_hops.ipv4.ok_or(BuildError::NoNextHop {
                prefix: *first,
                family: "IPv4",
            })?;
            let mut attrs = self.common_attributes();
            // NEXT_HOP after AS_PATH keeps type-code order.
            attrs.insert(2, PathAttribute::NextHop(next_hop));
            let path_attributes = self.encode_all(&attrs);
            let budget = room(path_attributes.len())?;
            for chunk in pack(&v4, budget) {
                let mut nlri = Vec::new();
                chunk.iter().for_each(|p| p.encode(&mut nlri));
                updates.push(Update {
                    withdrawn_routes: Vec::new(),
                    path_attributes: path_attributes.clone(),
                    nlri,
                });
            }
        }
        if let Some(first) = v6.first() {
            let next_hop = self.next_hops.ipv6.ok_or(BuildError::NoNextHop {
                prefix: *first,
                family: "IPv6",
            })?;
            let nh_len = match next_hop {
                MpNextHop::V6 { link_local, .. } => 16 + 16 * usize::from(link_local.is_some()),
                MpNextHop::V4(_) => return Err(BuildError::WrongNextHopFamily),
            };
            let common = self.encode_all(&self.common_attributes());
            // MP_REACH_NLRI: 4-octet attribute header, AFI/SAFI, next hop length and value,
            // reserved octet, then the prefixes.
            let budget = room(common.len() + 4 + 3 + 1 + nh_len + 1)?;
            for chunk in pack(&v6, budget) {
                let mp = PathAttribute::MpReach(MpReach {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST,
                    next_hop,
                    prefixes: chunk.to_vec(),
                });
                let mut path_attributes = Vec::new();
                mp.encode(self.four_octet_as, &mut path_attributes);
                path_attributes.extend_from_slice(&common);
                updates.push(Update {
                    withdrawn_routes: Vec::new(),
                    path_attributes,
                    nlri: Vec::new(),
                });
            }
        }
        Ok(updates)
    }

    /// UPDATEs withdrawing `prefixes` (any mix of IPv4 and IPv6), each at most 4096 octets.
    pub fn withdraw(prefixes: &[Prefix]) -> Vec<Update> {
        let (v4, v6): (Vec<Prefix>, Vec<Prefix>) =
            prefixes.iter().partition(|p| p.afi() == Afi::IPV4);
        let mut updates = Vec::new();
        for chunk in pack(&v4, MAX_MESSAGE_LEN - UPDATE_OVERHEAD) {
            let mut withdrawn_routes = Vec::new();
            chunk.iter().for_each(|p| p.encode(&mut withdrawn_routes));
            updates.push(Update {
                withdrawn_routes,
                ..Update::default()
            });
        }
        for chunk in pack(&v6, MAX_MESSAGE_LEN - UPDATE_OVERHEAD - 4 - 3) {
            let mp = PathAttribute::MpUnreach(MpUnreach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                prefixes: chunk.to_vec(),
            });
            let mut path_attributes = Vec::new();
            mp.encode(true, &mut path_attributes);
            updates.push(Update {
                path_attributes,
                ..Update::default()
            });
        }
        updates
    }

    /// The End-of-RIB marker for `afi` unicast (RFC 4724 section 2).
    pub fn end_of_rib(afi: Afi) -> Update {
        if afi == Afi::IPV4 {
            return Update::default();
        }
        let mp = PathAttribute::MpUnreach(MpUnreach {
            afi,
            safi: Safi::UNICAST,
            prefixes: Vec::new(),
        });
        let mut path_attributes = Vec::new();
        mp.encode(true, &mut path_attributes);
        Update {
            path_attributes,
            ..Update::default()
        }
    }
}

/// Octets left for prefixes once `attributes_len` octets of attributes are in an UPDATE.
fn room(attributes_len: usize) -> Result<usize, BuildError> {
    let budget = MAX_MESSAGE_LEN.saturating_sub(UPDATE_OVERHEAD + attributes_len);
    // At least one host route (17 octets for IPv6) must fit.
    if budget < 17 {
        return Err(BuildError::AttributesTooLong {
            length: attributes_len,
        });
    }
    Ok(budget)
}

/// Splits `prefixes` into runs whose encodings fit `budget` octets each.
fn pack(prefixes: &[Prefix], budget: usize) -> Vec<&[Prefix]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        if used + p.wire_len() > budget && i > start {
            out.push(prefixes.get(start..i).unwrap_or_default());
            start = i;
            used = 0;
        }
        used += p.wire_len();
    }
    if start < prefixes.len() {
        out.push(prefixes.get(start..).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{AsSegment, RawAttribute, FLAG_PARTIAL};
    use crate::{decode, encode, Message};
    use std::net::{IpAddr, Ipv6Addr};

    use crate::test_util::hex;

    fn wire(update: &Update) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&Message::Update(update.clone()), &mut out).unwrap();
        out
    }

    fn builder() -> UpdateBuilder {
        UpdateBuilder::new(
            RouteAttributes::new(AsPath::sequence(vec![65001])),
            NextHops {
                ipv4: Some(Ipv4Addr::new(192, 0, 2, 254)),
                ipv6: Some(MpNextHop::V6 {
                    global: "2001:db8::fe".parse().unwrap(),
                    link_local: None,
                }),
            },
        )
    }

    const FF16: &str = "ffffffff ffffffff ffffffff ffffffff";

    /// RFC 4271 section 4.3 layout, written by hand.
    #[test]
    fn ipv4_host_route_byte_exact() {
        let updates = builder()
            .announce(&[Prefix::host("192.0.2.1".parse().unwrap())])
            .unwrap();
        assert_eq!(updates.len(), 1);
        let expected = hex(&format!(
            "{FF16} 0030 02
             0000
             0014
             40 01 01 00
             40 02 06 02 01 0000fde9
             40 03 04 c00002fe
             20 c0000201"
        ));
        // attributes: 4 + 9 + 7 = 20; length: 19 + 2 + 2 + 20 + 5 = 48 = 0x30
        assert_eq!(wire(&updates[0]), expected);
    }

    /// RFC 4760 section 3 layout (IPv6 next hop, RFC 2545), written by hand.
    #[test]
    fn ipv6_host_route_byte_exact() {
        let updates = builder()
            .announce(&[Prefix::host("2001:db8::1".parse().unwrap())])
            .unwrap();
        assert_eq!(updates.len(), 1);
        let expected = hex(&format!(
            "{FF16} 004d 02
             0000
             0036
             80 0e 26 0002 01 10 20010db8 00000000 00000000 000000fe 00
                80 20010db8 00000000 00000000 00000001
             40 01 01 00
             40 02 06 02 01 0000fde9"
        ));
        // MP_REACH value: 3 + 1 + 16 + 1 + 17 = 38 = 0x26; attributes: 41 + 4 + 9 = 54 = 0x36;
        // length: 19 + 2 + 2 + 54 = 77 = 0x4d
        assert_eq!(wire(&updates[0]), expected);
    }

    #[test]
    fn withdrawals_and_end_of_rib_byte_exact() {
        let w = UpdateBuilder::withdraw(&[
            Prefix::host("192.0.2.1".parse().unwrap()),
            Prefix::host("2001:db8::1".parse().unwrap()),
        ]);
        assert_eq!(w.len(), 2);
        assert_eq!(
            wire(&w[0]),
            hex(&format!("{FF16} 001c 02 0005 20c0000201 0000"))
        );
        assert_eq!(
            wire(&w[1]),
            hex(&format!(
                "{FF16} 002e 02 0000 0017 80 0f 14 0002 01 80 20010db8 00000000 00000000 00000001"
            ))
        );
        assert_eq!(
            wire(&UpdateBuilder::end_of_rib(Afi::IPV4)),
            hex(&format!("{FF16} 0017 02 0000 0000"))
        );
        let eor6 = UpdateBuilder::end_of_rib(Afi::IPV6);
        assert_eq!(
            wire(&eor6),
            hex(&format!("{FF16} 001d 02 0000 0006 80 0f 03 0002 01"))
        );
        assert_eq!(
            parse_update(&eor6, true).unwrap().end_of_rib(),
            Some((Afi::IPV6, Safi::UNICAST))
        );
        assert_eq!(
            parse_update(&Update::default(), true).unwrap().end_of_rib(),
            Some((Afi::IPV4, Safi::UNICAST))
        );
        assert_eq!(parse_update(&w[1], true).unwrap().end_of_rib(), None);
    }

    #[test]
    fn large_sets_split_under_4096_and_round_trip() {
        let mut b = builder();
        b.attributes.communities = vec![Community::GRACEFUL_SHUTDOWN; 10];
        b.next_hops.ipv6 = Some(MpNextHop::V6 {
            global: "2001:db8::fe".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        });
        let prefixes: Vec<Prefix> = (0..3000u32)
            .map(|i| Prefix::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .chain((0..1000u128).map(|i| {
                Prefix::host(IpAddr::V6(Ipv6Addr::from(
                    0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i,
                )))
            }))
            .collect();
        let updates = b.announce(&prefixes).unwrap();
        let mut seen = Vec::new();
        for u in &updates {
            let bytes = wire(u);
            assert!(bytes.len() <= 4096);
            let (Message::Update(back), _) = decode(&bytes).unwrap().unwrap() else {
                panic!("not an update");
            };
            let parsed = parse_update(&back, true).unwrap();
            assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
            seen.extend(parsed.announced());
        }
        assert_eq!(seen, prefixes);
        // 3000 * 5 octets need 4 UPDATEs; 1000 * 17 need 5 (IPv6 UPDATEs use extended length).
        assert_eq!(updates.len(), 4 + 5);
        // The fullest IPv4 UPDATE is close to the limit: no prefix would have fit.
        assert!(wire(&updates[0]).len() > 4096 - 5);

        let withdrawals = UpdateBuilder::withdraw(&prefixes);
        let mut gone = Vec::new();
        for u in &withdrawals {
            assert!(wire(u).len() <= 4096);
            gone.extend(parse_update(u, true).unwrap().withdrawn_all());
        }
        assert_eq!(gone, prefixes);
    }

    #[test]
    fn missing_next_hop_is_an_error() {
        let mut b = builder();
        b.next_hops.ipv6 = None;
        let err = b
            .announce(&[Prefix::host("2001:db8::1".parse().unwrap())])
            .unwrap_err();
        assert!(err.to_string().contains("no IPv6 next hop"));
        b.next_hops.ipv6 = Some(MpNextHop::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            b.announce(&[Prefix::host("2001:db8::1".parse().unwrap())]),
            Err(BuildError::WrongNextHopFamily)
        );
    }

    #[test]
    fn two_octet_session_gets_as_trans_and_as4_path() {
        let mut b = builder();
        b.four_octet_as = false;
        b.attributes.as_path = AsPath::sequence(vec![4_200_000_000]);
        let u = &b
            .announce(&[Prefix::host("192.0.2.1".parse().unwrap())])
            .unwrap()[0];
        let parsed = parse_update(u, false).unwrap();
        assert!(parsed.errors.is_empty());
        assert!(parsed.attributes.contains(&PathAttribute::AsPath(AsPath {
            segments: vec![AsSegment::Sequence(vec![23456])]
        })));
        assert!(parsed
            .attributes
            .contains(&PathAttribute::Raw(RawAttribute {
                flags: FLAG_OPTIONAL | FLAG_TRANSITIVE,
                type_code: type_code::AS4_PATH,
                value: hex("02 01 fa56ea00"),
            })));
    }

    /// Attributes for an IPv4 route with one of them replaced by `bad`.
    fn with_attribute(bad: &str) -> Update {
        Update {
            withdrawn_routes: vec![],
            path_attributes: hex(&format!("40 01 01 00 40 02 00 40 03 04 c0000201 {bad}")),
            nlri: hex("20 c0000201"),
        }
    }

    #[test]
    fn rfc7606_classification() {
        use ErrorAction::*;
        let cases: &[(&str, u8, ErrorAction)] = &[
            ("80 04 02 0000", 4, TreatAsWithdraw),        // MED 2 octets
            ("40 05 03 000000", 5, TreatAsWithdraw),      // LOCAL_PREF 3 octets
            ("c0 08 03 000000", 8, TreatAsWithdraw),      // COMMUNITIES not /4
            ("c0 08 00", 8, TreatAsWithdraw),             // COMMUNITIES empty
            ("c0 20 04 00000000", 32, TreatAsWithdraw),   // LARGE not /12
            ("40 06 01 00", 6, AttributeDiscard),         // ATOMIC_AGGREGATE not empty
            ("c0 07 05 0000000000", 7, AttributeDiscard), // AGGREGATOR short
            ("40 08 04 00000001", 8, TreatAsWithdraw),    // COMMUNITIES marked well-known
            ("40 01 01 00", 1, AttributeDiscard),         // ORIGIN repeated
        ];
        for (bad, code, action) in cases {
            let parsed = parse_update(&with_attribute(bad), true).unwrap();
            assert_eq!(parsed.errors.len(), 1, "{bad}: {:?}", parsed.errors);
            assert_eq!(parsed.errors[0].type_code, *code, "{bad}");
            assert_eq!(parsed.errors[0].action, *action, "{bad}");
            let withdrawn = parsed.withdrawn_all();
            assert_eq!(
                withdrawn.is_empty(),
                *action == AttributeDiscard,
                "{bad}: treat-as-withdraw withdraws the NLRI"
            );
        }
        // Malformed mandatory attributes.
        let bad_origin = Update {
            path_attributes: hex("40 01 01 03 40 02 00 40 03 04 c0000201"),
            nlri: hex("20 c0000201"),
            ..Update::default()
        };
        assert!(parse_update(&bad_origin, true).unwrap().treat_as_withdraw());
        let bad_path = Update {
            path_attributes: hex("40 01 01 00 40 02 03 02 01 00 40 03 04 c0000201"),
            nlri: hex("20 c0000201"),
            ..Update::default()
        };
        assert!(parse_update(&bad_path, true).unwrap().treat_as_withdraw());
        // Missing NEXT_HOP with IPv4 NLRI.
        let no_nh = Update {
            path_attributes: hex("40 01 01 00 40 02 00"),
            nlri: hex("20 c0000201"),
            ..Update::default()
        };
        let parsed = parse_update(&no_nh, true).unwrap();
        assert_eq!(parsed.errors[0].type_code, 3);
        assert!(parsed.announced().is_empty());
        // Unknown optional attributes are kept raw, with the partial bit as sent.
        let parsed = parse_update(&with_attribute("e0 63 02 abcd"), true).unwrap();
        assert!(parsed.errors.is_empty());
        assert_eq!(
            parsed.attributes.last(),
            Some(&PathAttribute::Raw(RawAttribute {
                flags: FLAG_OPTIONAL | FLAG_TRANSITIVE | FLAG_PARTIAL,
                type_code: 0x63,
                value: vec![0xab, 0xcd]
            }))
        );
        // Overrun with NLRI present: treat-as-withdraw.
        let parsed = parse_update(&with_attribute("c0 08 08 0000"), true).unwrap();
        assert!(parsed.treat_as_withdraw());
    }

    #[test]
    fn rfc7606_session_resets() {
        let code_sub = |u: &Update| {
            let n = parse_update(u, true).unwrap_err().notification();
            (n.code, n.subcode)
        };
        // Unknown well-known attribute: 3/2, data = the attribute.
        let err = parse_update(&with_attribute("40 63 01 00"), true).unwrap_err();
        assert_eq!(err.notification().subcode, 2);
        assert_eq!(err.notification().data, hex("40 63 01 00"));
        // MP_REACH twice: 3/1.
        let mp = "80 0e 15 0002 01 10 20010db8 00000000 00000000 000000fe 00";
        let twice = Update {
            path_attributes: hex(&format!("{mp} {mp}")),
            ..Update::default()
        };
        assert_eq!(code_sub(&twice), (3, 1));
        // MP_REACH with a 5-octet IPv6 next hop: 3/9.
        let bad_nh = Update {
            path_attributes: hex("80 0e 0a 0002 01 05 0000000000 00"),
            ..Update::default()
        };
        assert_eq!(code_sub(&bad_nh), (3, 9));
        // MP_UNREACH with a /129: 3/9.
        let bad_prefix = Update {
            path_attributes: hex("80 0f 04 0002 01 81"),
            ..Update::default()
        };
        assert_eq!(code_sub(&bad_prefix), (3, 9));
        // Broken NLRI / withdrawn fields.
        let bad_nlri = Update {
            nlri: hex("21 00000000 00"),
            ..Update::default()
        };
        assert_eq!(code_sub(&bad_nlri), (3, 10));
        let bad_withdrawn = Update {
            withdrawn_routes: hex("20 0000"),
            ..Update::default()
        };
        assert_eq!(code_sub(&bad_withdrawn), (3, 1));
        // Overrun with no NLRI found: the tail might hide MP_REACH, so reset.
        let overrun = Update {
            path_attributes: hex("40 01 05 00"),
            ..Update::default()
        };
        assert_eq!(code_sub(&overrun), (3, 1));
        // Unknown families are kept raw, not parsed.
        let other = Update {
            path_attributes: hex("80 0e 05 0019 46 00 00"),
            ..Update::default()
        };
        assert!(matches!(
            parse_update(&other, true).unwrap().attributes[0],
            PathAttribute::Raw(_)
        ));
    }
}
