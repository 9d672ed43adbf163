//! Property tests of UPDATE contents: encode -> parse round trips for attributes and for the
//! builder's split announcements, and "parse never panics" on arbitrary and mutated input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp::attributes::{
    AsPath, AsSegment, Community, LargeCommunity, MpNextHop, MpReach, MpUnreach, Origin,
    PathAttribute, Prefix, RawAttribute, FLAG_OPTIONAL, FLAG_PARTIAL, FLAG_TRANSITIVE,
};
use bgp::update::{NextHops, RouteAttributes};
use bgp::{decode, encode, parse_update, Afi, Message, ParsedUpdate, Safi, Update, UpdateBuilder};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0..=32u8)
        .prop_map(|(a, len)| Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap())
}

fn v6_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0..=128u8)
        .prop_map(|(a, len)| Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), len).unwrap())
}

fn as_path(four_octet: bool) -> impl Strategy<Value = AsPath> {
    let asn = if four_octet {
        any::<u32>().boxed()
    } else {
        (0..=u32::from(u16::MAX)).boxed()
    };
    let segment = (any::<bool>(), vec(asn, 1..10)).prop_map(|(set, asns)| {
        if set {
            AsSegment::Set(asns)
        } else {
            AsSegment::Sequence(asns)
        }
    });
    vec(segment, 0..4).prop_map(|segments| AsPath { segments })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (any::<u32>(), vec(v4_prefix(), 0..20)).prop_map(|(nh, prefixes)| MpReach {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
            next_hop: MpNextHop::V4(Ipv4Addr::from(nh)),
            prefixes,
        }),
        (
            any::<u128>(),
            option::of(any::<u128>()),
            vec(v6_prefix(), 0..20)
        )
            .prop_map(|(g, ll, prefixes)| MpReach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                next_hop: MpNextHop::V6 {
                    global: Ipv6Addr::from(g),
                    link_local: ll.map(Ipv6Addr::from),
                },
                prefixes,
            }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(v4_prefix(), 0..20).prop_map(|prefixes| MpUnreach {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
            prefixes
        }),
        vec(v6_prefix(), 0..20).prop_map(|prefixes| MpUnreach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            prefixes
        }),
    ]
}

/// Raw attributes with type codes this speaker does not parse, marked optional as they must be.
fn raw() -> impl Strategy<Value = RawAttribute> {
    (
        prop_oneof![9..=13u8, 16..=16u8, 18..=31u8, 33..=255u8],
        any::<bool>(),
        any::<bool>(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(type_code, transitive, partial, value)| RawAttribute {
            flags: FLAG_OPTIONAL
                | if transitive { FLAG_TRANSITIVE } else { 0 }
                | if partial { FLAG_PARTIAL } else { 0 },
            type_code,
            value,
        })
}

/// A well-formed UPDATE with each attribute type at most once, in random order. ORIGIN, AS_PATH
/// and NEXT_HOP are always present so that no "missing attribute" rule applies.
fn parsed_update(four_octet: bool) -> impl Strategy<Value = ParsedUpdate> {
    let attrs = (
        (
            prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ],
            as_path(four_octet),
            any::<u32>(),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            any::<bool>(),
        ),
        (
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(vec(any::<u32>().prop_map(Community), 1..10)),
            option::of(vec(
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(g, a, b)| LargeCommunity {
                    global_admin: g,
                    local_data_1: a,
                    local_data_2: b,
                }),
                1..5,
            )),
            option::of(mp_reach()),
            option::of(mp_unreach()),
            option::of(raw()),
        ),
    );
    (attrs, vec(v4_prefix(), 0..20), vec(v4_prefix(), 0..20)).prop_flat_map(
        move |(
            ((origin, path, nh, med, lp, atomic), (agg_as, agg_id, comms, large, mr, mu, raw)),
            withdrawn,
            nlri,
        )| {
            let mut attrs = vec![
                PathAttribute::Origin(origin),
                PathAttribute::AsPath(path),
                PathAttribute::NextHop(Ipv4Addr::from(nh)),
            ];
            attrs.extend(med.map(PathAttribute::MultiExitDisc));
            attrs.extend(lp.map(PathAttribute::LocalPref));
            if atomic {
                attrs.push(PathAttribute::AtomicAggregate);
            }
            if let (Some(asn), Some(id)) = (agg_as, agg_id) {
                let asn = if four_octet { asn } else { asn & 0xffff };
                attrs.push(PathAttribute::Aggregator {
                    asn,
                    router: Ipv4Addr::from(id),
                });
            }
            attrs.extend(comms.map(PathAttribute::Communities));
            attrs.extend(large.map(PathAttribute::LargeCommunities));
            attrs.extend(mr.map(PathAttribute::MpReach));
            attrs.extend(mu.map(PathAttribute::MpUnreach));
            attrs.extend(raw.map(PathAttribute::Raw));
            Just(attrs)
                .prop_shuffle()
                .prop_map(move |attributes| ParsedUpdate {
                    withdrawn: withdrawn.clone(),
                    attributes,
                    nlri: nlri.clone(),
                    errors: Vec::new(),
                })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn attributes_round_trip_four_octet(original in parsed_update(true)) {
        let update = original.to_update(true);
        prop_assert_eq!(&parse_update(&update, true).unwrap(), &original);
        // Through the message codec too, when it fits one message.
        let mut wire = Vec::new();
        if encode(&Message::Update(update), &mut wire).is_ok() {
            let (Message::Update(back), _) = decode(&wire).unwrap().unwrap() else {
                panic!("not an UPDATE");
            };
            prop_assert_eq!(parse_update(&back, true).unwrap(), original);
        }
    }

    #[test]
    fn attributes_round_trip_two_octet(original in parsed_update(false)) {
        let update = original.to_update(false);
        prop_assert_eq!(parse_update(&update, false).unwrap(), original);
    }

    #[test]
    fn builder_splits_and_round_trips(
        v4 in vec(v4_prefix(), 0..1500),
        v6 in vec(v6_prefix(), 0..400),
        communities in vec(any::<u32>().prop_map(Community), 0..200),
        link_local in any::<bool>(),
    ) {
        let mut prefixes = v4;
        prefixes.extend(v6);
        let mut attributes = RouteAttributes::new(AsPath::sequence(vec![65001]));
        attributes.communities = communities;
        let builder = UpdateBuilder::new(attributes, NextHops {
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ipv6: Some(MpNextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: link_local.then(|| "fe80::1".parse().unwrap()),
            }),
        });
        let mut announced = Vec::new();
        for u in builder.announce(&prefixes).unwrap() {
            let mut wire = Vec::new();
            encode(&Message::Update(u.clone()), &mut wire).unwrap();
            prop_assert!(wire.len() <= 4096);
            let parsed = parse_update(&u, true).unwrap();
            prop_assert!(parsed.errors.is_empty());
            prop_assert!(!parsed.announced().is_empty());
            announced.extend(parsed.announced());
        }
        let mut expected = prefixes.clone();
        expected.sort_by_key(|p| p.afi());
        prop_assert_eq!(&announced, &expected);

        let mut withdrawn = Vec::new();
        for u in UpdateBuilder::withdraw(&prefixes) {
            let mut wire = Vec::new();
            encode(&Message::Update(u.clone()), &mut wire).unwrap();
            prop_assert!(wire.len() <= 4096);
            withdrawn.extend(parse_update(&u, true).unwrap().withdrawn_all());
        }
        prop_assert_eq!(withdrawn, expected);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_sections(
        withdrawn_routes in vec(any::<u8>(), 0..64),
        path_attributes in vec(any::<u8>(), 0..512),
        nlri in vec(any::<u8>(), 0..64),
        four_octet in any::<bool>(),
    ) {
        let update = Update { withdrawn_routes, path_attributes, nlri };
        if let Ok(parsed) = parse_update(&update, four_octet) {
            // Whatever was accepted can be written again.
            let _ = parsed.to_update(four_octet);
            let _ = parsed.withdrawn_all();
            let _ = parsed.end_of_rib();
        }
    }

    #[test]
    fn parse_never_panics_on_mutated_valid_updates(
        original in parsed_update(true),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut attrs = original.to_update(true).path_attributes;
        for (at, byte) in flips {
            if !attrs.is_empty() {
                let i = at.index(attrs.len());
                attrs[i] ^= byte;
            }
        }
        if !attrs.is_empty() {
            attrs.truncate(cut.index(attrs.len() + 1));
        }
        let update = Update { withdrawn_routes: original.to_update(true).withdrawn_routes, path_attributes: attrs, nlri: original.to_update(true).nlri };
        match parse_update(&update, true) {
            Ok(_) => {}
            Err(e) => {
                let n = e.notification();
                prop_assert_eq!(n.code, 3, "UPDATE errors reset with code 3");
            }
        }
    }
}
