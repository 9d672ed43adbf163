//! NOTIFICATION error codes and subcodes (RFC 4271 section 4.5 and the IANA "BGP Error
//! (Notification) Codes" registry).
//!
//! Plain `u8` constants rather than enums: a peer may send any code, and [`crate::Notification`]
//! must carry it unchanged.

/// Error codes (first byte of a NOTIFICATION body).
pub mod error {
    /// Message Header Error (RFC 4271).
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error (RFC 4271).
    pub const OPEN_MESSAGE: u8 = 2;
    /// UPDATE Message Error (RFC 4271).
    pub const UPDATE_MESSAGE: u8 = 3;
    /// Hold Timer Expired (RFC 4271).
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error (RFC 4271, subcodes RFC 6608).
    pub const FSM: u8 = 5;
    /// Cease (RFC 4271, subcodes RFC 4486).
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;
}

/// Subcodes of [`error::MESSAGE_HEADER`].
pub mod header {
    /// Connection Not Synchronized: the marker was not all ones.
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    /// Bad Message Length; data is the offending 2-octet Length field.
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    /// Bad Message Type; data is the offending Type octet.
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// Subcodes of [`error::OPEN_MESSAGE`].
pub mod open {
    /// Unspecific (also used for a recognised but malformed optional parameter).
    pub const UNSPECIFIC: u8 = 0;
    /// Unsupported Version Number; data is the largest version we support (2 octets).
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    /// Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// Bad BGP Identifier.
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    /// Unsupported Optional Parameter.
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    /// Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// Unsupported Capability (RFC 5492).
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// Subcodes of [`error::UPDATE_MESSAGE`].
pub mod update {
    /// Malformed Attribute List.
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    /// Unrecognized Well-known Attribute; data is the attribute.
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    /// Missing Well-known Attribute (RFC 7606 replaces it with treat-as-withdraw).
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    /// Attribute Flags Error.
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    /// Attribute Length Error.
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    /// Optional Attribute Error (RFC 4760 uses it for a bad MP_REACH/MP_UNREACH_NLRI).
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    /// Invalid Network Field: the NLRI cannot be parsed.
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    /// Malformed AS_PATH.
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Subcodes of [`error::FSM`] (RFC 6608).
pub mod fsm {
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0;
    /// A message other than OPEN or NOTIFICATION arrived in OpenSent.
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    /// A message other than KEEPALIVE or NOTIFICATION arrived in OpenConfirm.
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    /// An OPEN arrived in Established.
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Subcodes of [`error::CEASE`] (RFC 4486).
pub mod cease {
    /// Maximum Number of Prefixes Reached.
    pub const MAXIMUM_PREFIXES: u8 = 1;
    /// Administrative Shutdown; data may be an RFC 8203 shutdown communication.
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    /// Peer De-configured.
    pub const PEER_DECONFIGURED: u8 = 3;
    /// Administrative Reset.
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    /// Connection Rejected.
    pub const CONNECTION_REJECTED: u8 = 5;
    /// Other Configuration Change.
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    /// Connection Collision Resolution (RFC 4271 section 6.8).
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    /// Out of Resources.
    pub const OUT_OF_RESOURCES: u8 = 8;
}
