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
}

/// Subcodes of [`error::CEASE`] (RFC 4486).
pub mod cease {
    /// Administrative Shutdown.
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    /// Peer De-configured.
    pub const PEER_DECONFIGURED: u8 = 3;
    /// Administrative Reset.
    pub const ADMINISTRATIVE_RESET: u8 = 4;
}
