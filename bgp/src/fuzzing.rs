//! Entry points shared by the cargo-fuzz targets in `bgp/fuzz` and the stable corpus replay
//! test (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes; any panic is a bug.

use std::net::Ipv4Addr;

use crate::attributes::MpNextHop;
use crate::fsm::{shutdown_message, Config, Event, Session, State};
use crate::message::{Afi, Capability, Message, Open, Safi, HEADER_LEN, MARKER};
use crate::update::{parse_update, NextHops};
use crate::{decode, encode};

/// Decodes every message in `data` as a session would read them; what decodes must re-encode
/// to the same message; UPDATEs go through RFC 7606 judgement; then the same bytes are fed to
/// an Established session.
pub fn message_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((message, used))) = decode(rest) {
        check_message(&message);
        rest = rest.get(used..).unwrap_or_default();
    }
    feed_established(data);
}

/// Treats `data[1..]` as the body of an UPDATE (withdrawn routes, path attributes, NLRI) and
/// `data[0]` as whether 4-octet ASNs were negotiated; decodes, judges and re-encodes it, then
/// feeds the whole message to an Established session.
pub fn update_decode(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let four_octet_as = flags & 1 == 1;
    let mut wire = MARKER.to_vec();
    let len = (HEADER_LEN + body.len()).min(usize::from(u16::MAX));
    wire.extend_from_slice(&(len as u16).to_be_bytes());
    wire.push(2);
    wire.extend_from_slice(body);
    if let Ok(Some((Message::Update(update), _))) = decode(&wire) {
        if let Ok(parsed) = parse_update(&update, four_octet_as) {
            let _ = parsed.announced();
            let _ = parsed.withdrawn_all();
            let _ = parsed.end_of_rib();
            // What judged fine re-encodes into an UPDATE that is judged fine again.
            let again = parsed.to_update(four_octet_as);
            if parsed.errors.is_empty() {
                let reparsed = parse_update(&again, four_octet_as);
                assert!(reparsed.is_ok(), "re-encoded UPDATE refused: {reparsed:?}");
            }
        }
        check_message(&Message::Update(update));
    }
    feed_established(&wire);
}

fn check_message(message: &Message) {
    let mut out = Vec::new();
    if encode(message, &mut out).is_ok() {
        match decode(&out) {
            Ok(Some((again, used))) => {
                assert_eq!(&again, message, "re-encoded message decodes differently");
                assert_eq!(used, out.len());
            }
            other => panic!("re-encoded {message:?} does not decode: {other:?}"),
        }
    }
    match message {
        Message::Update(u) => {
            let _ = parse_update(u, true);
            let _ = parse_update(u, false);
        }
        Message::Notification(n) => {
            let _ = shutdown_message(n);
            let _ = n.to_string();
        }
        _ => {}
    }
}

/// A session brought to Established with a scripted peer, then fed `data`.
fn feed_established(data: &[u8]) {
    let next_hops = NextHops {
        ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ipv6: Some(MpNextHop::V6 {
            global: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            link_local: None,
        }),
    };
    let config = Config::new(65001, Ipv4Addr::new(192, 0, 2, 1), 65002, next_hops);
    let Ok(mut session) = Session::new(config) else {
        return;
    };
    session.handle_event(Event::ManualStart, 0);
    session.handle_event(Event::TcpConnected, 0);
    let caps = vec![
        Capability::Multiprotocol {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
        },
        Capability::Multiprotocol {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
        },
    ];
    let open = Open::new(65002, 90, Ipv4Addr::new(192, 0, 2, 2), caps);
    let mut hello = Vec::new();
    for m in [Message::Open(open), Message::Keepalive] {
        if encode(&m, &mut hello).is_err() {
            return;
        }
    }
    session.handle_bytes(&hello, 1);
    assert_eq!(session.state(), State::Established);
    session.announce(&[crate::attributes::Prefix::host(
        Ipv4Addr::new(192, 0, 2, 10).into(),
    )]);
    // In two pieces, to exercise reassembly.
    let cut = data.len() / 2;
    session.handle_bytes(data.get(..cut).unwrap_or_default(), 2);
    session.handle_bytes(data.get(cut..).unwrap_or_default(), 3);
    while session.poll_action().is_some() {}
}
