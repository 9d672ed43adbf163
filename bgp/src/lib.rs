//! Announce-only BGP speaker for vipd.
//!
//! This crate is built sans-IO in the style of `quinn-proto`: the protocol core never touches a
//! socket or reads a clock. So far it holds the message codec ([`decode`] / [`encode`]) for
//! RFC 4271 messages plus the RFC 2918 ROUTE-REFRESH message, and the OPEN capabilities vipd
//! speaks (RFC 5492 framing; RFC 4760 multiprotocol, RFC 2918 route refresh, RFC 6793 4-octet AS,
//! RFC 4724 graceful restart). The FSM (events in, actions out, time passed in) and the tokio
//! session driver build on top of it.
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

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codes;
mod decode;
mod encode;
mod message;

pub use decode::{decode, DecodeError};
pub use encode::{encode, EncodeError};
pub use message::{
    Afi, Capability, GracefulRestartFamily, Message, MessageType, Notification, Open, RouteRefresh,
    Safi, Update, AS_TRANS, BGP_VERSION, HEADER_LEN, MARKER, MAX_MESSAGE_LEN,
};
