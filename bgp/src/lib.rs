//! Announce-only BGP speaker for vipd.
//!
//! This crate is built sans-IO in the style of `quinn-proto`: the protocol core never touches a
//! socket or reads a clock. It holds
//!
//! - the message codec ([`decode`] / [`encode`]) for RFC 4271 messages plus the RFC 2918
//!   ROUTE-REFRESH message, and the OPEN capabilities vipd speaks (RFC 5492 framing; RFC 4760
//!   multiprotocol, RFC 2918 route refresh, RFC 6793 4-octet AS, RFC 4724 graceful restart);
//! - [`attributes`]: path attributes and prefixes (RFC 4271, 1997, 4760, 6793, 8092);
//! - [`update`]: RFC 7606 judgement of received UPDATEs ([`parse_update`]) and the
//!   [`UpdateBuilder`] for announcements, withdrawals and End-of-RIB markers;
//! - [`fsm`]: the RFC 4271 state machine, [`Session`]: events, bytes and the time in
//!   milliseconds go in, [`Action`]s come out.
//!
//! The tokio session driver builds on top of it: [`Speaker::spawn`] takes the `[bgp]` section
//! of vipd.toml ([`BgpConfig`], [`config`]) and returns a [`SpeakerHandle`] to announce and
//! withdraw VIPs with a per-VIP [`RoutePolicy`]. [`sockopt`] sets TCP-MD5 and GTSM; it holds
//! the crate's only `unsafe`. The `bgp-speak` binary drives a speaker from stdin.
//!
//! Every decode failure carries the NOTIFICATION that RFC 4271 section 6 says the speaker must
//! send before closing the session ([`DecodeError::notification`]).
//!
//! ```
//! use bgp::{decode, encode, Message};
//!
//! let mut wire = Vec::new();
//! encode(&Message::Keepalive, &mut wire).unwrap();
//! assert_eq!(wire.len(), 19);
//! let (msg, consumed) = decode(&wire).unwrap().unwrap();
//! assert_eq!((msg, consumed), (Message::Keepalive, 19));
//! // A partial message asks for more bytes instead of failing.
//! assert_eq!(decode(&wire[..10]).unwrap(), None);
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod attributes;
pub mod codes;
pub mod config;
mod decode;
mod encode;
pub mod fsm;
#[doc(hidden)]
pub mod fuzzing;
mod message;
pub mod sockopt;
pub mod speaker;
pub mod update;

pub use config::{BgpConfig, ConfigProblem, PeerConfig, RoutePolicy};
pub use decode::{decode, DecodeError};
pub use encode::{encode, EncodeError};
pub use fsm::{
    resolve_collision, Action, CollisionWinner, Config, Event, PrefixRoute, Session, State,
};
pub use message::{
    Afi, Capability, GracefulRestartFamily, Message, MessageType, Notification, Open, RouteRefresh,
    Safi, Update, AS_TRANS, BGP_VERSION, HEADER_LEN, MARKER, MAX_MESSAGE_LEN,
};
pub use speaker::{
    PeerSummary, ReconfigureError, Reconfigured, RouteSummary, Speaker, SpeakerError, SpeakerHandle,
};
pub use update::{parse_update, ParsedUpdate, UpdateBuilder, UpdateError};

/// Helpers shared by the unit tests of several modules.
#[cfg(test)]
mod test_util {
    /// Parses whitespace-separated hex, so vectors can be laid out like the RFC diagrams.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }
}
