//! Property tests of the codec's public API: round trips, framing, and "never panics" on
//! arbitrary input from the network.

use std::net::Ipv4Addr;

use bgp::{
    decode, encode, Afi, Capability, GracefulRestartFamily, Message, Notification, Open,
    RouteRefresh, Safi, Update, MARKER,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn family() -> impl Strategy<Value = GracefulRestartFamily> {
    (any::<u16>(), any::<u8>(), any::<bool>()).prop_map(|(afi, safi, forwarding_state)| {
        GracefulRestartFamily {
            afi: Afi(afi),
            safi: Safi(safi),
            forwarding_state,
        }
    })
}

fn capability() -> impl Strategy<Value = Capability> {
    let known = [
        Capability::CODE_MULTIPROTOCOL,
        Capability::CODE_ROUTE_REFRESH,
        Capability::CODE_GRACEFUL_RESTART,
        Capability::CODE_FOUR_OCTET_AS,
    ];
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Capability::Multiprotocol {
            afi: Afi(afi),
            safi: Safi(safi)
        }),
        Just(Capability::RouteRefresh),
        // AS 0 is rejected on decode (RFC 7607).
        (1..=u32::MAX).prop_map(Capability::FourOctetAs),
        (any::<bool>(), 0..=4095u16, vec(family(), 0..5)).prop_map(
            |(restart_state, restart_time_s, families)| Capability::GracefulRestart {
                restart_state,
                restart_time_s,
                families,
            }
        ),
        (any::<u8>(), vec(any::<u8>(), 0..20))
            .prop_filter(
                "known codes decode as known capabilities",
                move |(code, _)| { !known.contains(code) }
            )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        1..=u16::MAX,
        prop_oneof![Just(0u16), 3..=u16::MAX],
        1..=u32::MAX,
        vec(capability(), 0..8),
    )
        .prop_map(|(my_as, hold_time_s, id, capabilities)| Open {
            version: 4,
            my_as,
            hold_time_s,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..=4075)).prop_map(|(code, subcode, data)| {
            Message::Notification(Notification {
                code,
                subcode,
                data,
            })
        }),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Message::RouteRefresh(RouteRefresh {
            afi: Afi(afi),
            safi: Safi(safi)
        })),
        (
            vec(any::<u8>(), 0..1000),
            vec(any::<u8>(), 0..1000),
            vec(any::<u8>(), 0..1000)
        )
            .prop_map(|(withdrawn_routes, path_attributes, nlri)| Message::Update(
                Update {
                    withdrawn_routes,
                    path_attributes,
                    nlri
                }
            )),
    ]
}

/// A header with a valid marker, then any length and type, then any bytes: reaches the body
/// parsers far more often than fully random input.
fn marker_then_anything() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![19..=4096u16, any::<u16>()],
        prop_oneof![1..=5u8, any::<u8>()],
        vec(any::<u8>(), 0..600),
        any::<bool>(),
    )
        .prop_map(|(length, type_code, body, exact_length)| {
            let mut out = MARKER.to_vec();
            let length = if exact_length {
                u16::try_from(19 + body.len()).unwrap_or(length)
            } else {
                length
            };
            out.extend_from_slice(&length.to_be_bytes());
            out.push(type_code);
            out.extend_from_slice(&body);
            out
        })
}

/// Checks what every decode result must satisfy, whatever the input.
fn check_decode_contract(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok(None) => prop_assert!(bytes.len() < 4096 + 19),
        Ok(Some((message, consumed))) => {
            prop_assert!((19..=4096).contains(&consumed));
            prop_assert!(consumed <= bytes.len());
            // Whatever we accept, we can re-encode, and it decodes to the same value.
            let mut out = Vec::new();
            encode(&message, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode(&out), Ok(Some((message, out.len()))));
        }
        Err(err) => {
            let notification = err.notification();
            prop_assert!((1..=3).contains(&notification.code), "{notification}");
            prop_assert!(!err.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(message in message()) {
        let mut out = Vec::new();
        encode(&message, &mut out).unwrap();
        prop_assert_eq!(decode(&out), Ok(Some((message, out.len()))));
    }

    #[test]
    fn every_strict_prefix_asks_for_more(message in message(), cut in any::<prop::sample::Index>()) {
        let mut out = Vec::new();
        encode(&message, &mut out).unwrap();
        let cut = cut.index(out.len());
        prop_assert_eq!(decode(&out[..cut]), Ok(None));
    }

    #[test]
    fn back_to_back_messages_decode_in_order(messages in vec(message(), 1..4)) {
        let mut stream = Vec::new();
        for message in &messages {
            encode(message, &mut stream).unwrap();
        }
        let mut rest = &stream[..];
        for message in &messages {
            let (decoded, used) = decode(rest).unwrap().unwrap();
            prop_assert_eq!(&decoded, message);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..300)) {
        check_decode_contract(&bytes)?;
    }

    #[test]
    fn decode_never_panics_after_valid_marker(bytes in marker_then_anything()) {
        check_decode_contract(&bytes)?;
    }

    #[test]
    fn open_new_round_trips_any_local_as(local_as in 1..=u32::MAX, hold in 3..=u16::MAX) {
        let open = Open::new(local_as, hold, Ipv4Addr::new(10, 0, 0, 1), vec![Capability::RouteRefresh]);
        let mut out = Vec::new();
        encode(&Message::Open(open), &mut out).unwrap();
        let Some((Message::Open(decoded), _)) = decode(&out).unwrap() else {
            return Err(TestCaseError::fail("not an OPEN"));
        };
        prop_assert_eq!(decoded.peer_as(), local_as);
        prop_assert_eq!(u32::from(decoded.my_as) == local_as, local_as <= 65535);
    }
}
