//! BGP message representations: what [`crate::decode`] produces and [`crate::encode`] consumes.
//!
//! These are checked, owned values. Decoding has already enforced the RFC's structural rules,
//! so code holding a [`Message`] does not re-check lengths. UPDATE contents are kept as the three
//! raw sections here; [`crate::parse_update`] judges them (RFC 7606) and
//! [`crate::UpdateBuilder`] produces them, so framing stays independent of attribute policy.

use std::fmt;
use std::net::Ipv4Addr;

use crate::codes;

/// The 16-octet marker that starts every message (RFC 4271 section 4.1).
pub const MARKER: [u8; 16] = [0xff; 16];
/// Length of the fixed header: marker, 2-octet length, 1-octet type.
pub const HEADER_LEN: usize = 19;
/// Largest message RFC 4271 allows (extended messages, RFC 8654, are not negotiated).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The only BGP version spoken.
pub const BGP_VERSION: u8 = 4;
/// AS_TRANS (RFC 6793): put in the 2-octet My AS field when the real AS needs 4 octets.
pub const AS_TRANS: u16 = 23456;

/// Address Family Identifier (IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    /// IPv4.
    pub const IPV4: Afi = Afi(1);
    /// IPv6.
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (IANA "SAFI Values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    /// Unicast forwarding.
    pub const UNICAST: Safi = Safi(1);
    /// Multicast forwarding.
    pub const MULTICAST: Safi = Safi(2);
}

/// Message type octet of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// OPEN (1).
    Open,
    /// UPDATE (2).
    Update,
    /// NOTIFICATION (3).
    Notification,
    /// KEEPALIVE (4).
    Keepalive,
    /// ROUTE-REFRESH (5, RFC 2918).
    RouteRefresh,
}

impl MessageType {
    /// The type octet on the wire.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
        }
    }

    /// The type for a wire octet, or `None` for a type this speaker does not know.
    pub fn from_code(code: u8) -> Option<MessageType> {
        Some(match code {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest total message length (header included) this type may have.
    pub fn min_len(self) -> usize {
        match self {
            // version, my AS, hold time, BGP id, opt param len
            MessageType::Open => HEADER_LEN + 10,
            // withdrawn routes length, total path attribute length
            MessageType::Update => HEADER_LEN + 4,
            // error code, subcode
            MessageType::Notification => HEADER_LEN + 2,
            MessageType::Keepalive => HEADER_LEN,
            // AFI, reserved, SAFI
            MessageType::RouteRefresh => HEADER_LEN + 4,
        }
    }

    /// Largest total message length this type may have.
    pub fn max_len(self) -> usize {
        match self {
            MessageType::Keepalive => HEADER_LEN,
            MessageType::RouteRefresh => HEADER_LEN + 4,
            _ => MAX_MESSAGE_LEN,
        }
    }
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN: the first message of a session.
    Open(Open),
    /// UPDATE: route announcements and withdrawals.
    Update(Update),
    /// NOTIFICATION: an error; the sender closes the session after it.
    Notification(Notification),
    /// KEEPALIVE: liveness, and the acknowledgement of an OPEN.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918): ask the peer to re-send its routes for one family.
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The header type of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// OPEN message (RFC 4271 section 4.2) with its capabilities (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Protocol version; always [`BGP_VERSION`] after a successful decode.
    pub version: u8,
    /// The 2-octet My Autonomous System field ([`AS_TRANS`] when the real AS needs 4 octets).
    pub my_as: u16,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3.
    pub hold_time_s: u16,
    /// BGP Identifier of the sender; never 0.0.0.0 after a successful decode (RFC 6286).
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in wire order, from all Capabilities optional parameters.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds an OPEN for a speaker in `local_as`.
    ///
    /// Sets My AS to `local_as`, or to [`AS_TRANS`] when it does not fit in 2 octets, and makes
    /// sure `capabilities` carries exactly one [`Capability::FourOctetAs`]`(local_as)` (RFC 6793):
    /// any other `FourOctetAs` entry is dropped and the right one appended.
    pub fn new(
        local_as: u32,
        hold_time_s: u16,
        bgp_id: Ipv4Addr,
        capabilities: Vec<Capability>,
    ) -> Open {
        let mut capabilities: Vec<Capability> = capabilities
            .into_iter()
            .filter(|c| !matches!(c, Capability::FourOctetAs(_)))
            .collect();
        capabilities.push(Capability::FourOctetAs(local_as));
        Open {
            version: BGP_VERSION,
            my_as: u16::try_from(local_as).unwrap_or(AS_TRANS),
            hold_time_s,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's real AS: the 4-octet AS capability when present, else My AS.
    pub fn peer_as(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }
}

/// One capability advertised in an OPEN (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (RFC 4760, code 1).
    Multiprotocol {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
    },
    /// Route refresh (RFC 2918, code 2).
    RouteRefresh,
    /// Graceful restart (RFC 4724, code 64).
    GracefulRestart {
        /// Restart State (R) bit: the sender has just restarted.
        restart_state: bool,
        /// Restart Time in seconds; 12 bits on the wire, so at most 4095.
        restart_time_s: u16,
        /// Families for which the sender preserves forwarding state across a restart.
        families: Vec<GracefulRestartFamily>,
    },
    /// Support for 4-octet AS numbers (RFC 6793, code 65), carrying the sender's AS.
    FourOctetAs(u32),
    /// Any other capability, carried unchanged so it can be logged.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value (at most 255 octets).
        value: Vec<u8>,
    },
}

impl Capability {
    /// Capability code for multiprotocol extensions.
    pub const CODE_MULTIPROTOCOL: u8 = 1;
    /// Capability code for route refresh.
    pub const CODE_ROUTE_REFRESH: u8 = 2;
    /// Capability code for graceful restart.
    pub const CODE_GRACEFUL_RESTART: u8 = 64;
    /// Capability code for 4-octet AS numbers.
    pub const CODE_FOUR_OCTET_AS: u8 = 65;

    /// The capability code on the wire.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => Self::CODE_MULTIPROTOCOL,
            Capability::RouteRefresh => Self::CODE_ROUTE_REFRESH,
            Capability::GracefulRestart { .. } => Self::CODE_GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => Self::CODE_FOUR_OCTET_AS,
            Capability::Unknown { code, .. } => *code,
        }
    }
}

/// One address family entry of the graceful restart capability (RFC 4724 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    /// Address family.
    pub afi: Afi,
    /// Subsequent address family.
    pub safi: Safi,
    /// Forwarding State (F) bit: forwarding state was preserved across the restart.
    pub forwarding_state: bool,
}

/// UPDATE message (RFC 4271 section 4.3), split into its three raw sections.
///
/// The section lengths are consistent with the message length; the contents of each section are
/// parsed by [`crate::parse_update`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn Routes: a sequence of (length, prefix) entries.
    pub withdrawn_routes: Vec<u8>,
    /// Path Attributes: a sequence of (flags, type, length, value) entries.
    pub path_attributes: Vec<u8>,
    /// Network Layer Reachability Information: a sequence of (length, prefix) entries.
    pub nlri: Vec<u8>,
}

/// NOTIFICATION message (RFC 4271 section 4.5).
///
/// See [`crate::codes`] for the code and subcode values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode (0 = unspecific).
    pub subcode: u8,
    /// Diagnostic data whose meaning depends on code and subcode.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data.
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// A NOTIFICATION with data.
    pub fn with_data(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }
}

impl fmt::Display for Notification {
    /// Names the error like operators see it in BIRD or FRR logs, e.g.
    /// `OPEN Message Error / Bad Peer AS (2/2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use codes::*;
        let code_name = match self.code {
            error::MESSAGE_HEADER => "Message Header Error",
            error::OPEN_MESSAGE => "OPEN Message Error",
            error::UPDATE_MESSAGE => "UPDATE Message Error",
            error::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            error::FSM => "Finite State Machine Error",
            error::CEASE => "Cease",
            error::ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH Message Error",
            _ => "Unknown Error",
        };
        let subcode_name = match (self.code, self.subcode) {
            (error::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED) => {
                Some("Connection Not Synchronized")
            }
            (error::MESSAGE_HEADER, header::BAD_MESSAGE_LENGTH) => Some("Bad Message Length"),
            (error::MESSAGE_HEADER, header::BAD_MESSAGE_TYPE) => Some("Bad Message Type"),
            (error::OPEN_MESSAGE, open::UNSUPPORTED_VERSION_NUMBER) => {
                Some("Unsupported Version Number")
            }
            (error::OPEN_MESSAGE, open::BAD_PEER_AS) => Some("Bad Peer AS"),
            (error::OPEN_MESSAGE, open::BAD_BGP_IDENTIFIER) => Some("Bad BGP Identifier"),
            (error::OPEN_MESSAGE, open::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                Some("Unsupported Optional Parameter")
            }
            (error::OPEN_MESSAGE, open::UNACCEPTABLE_HOLD_TIME) => Some("Unacceptable Hold Time"),
            (error::OPEN_MESSAGE, open::UNSUPPORTED_CAPABILITY) => Some("Unsupported Capability"),
            (error::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST) => {
                Some("Malformed Attribute List")
            }
            (error::CEASE, cease::ADMINISTRATIVE_SHUTDOWN) => Some("Administrative Shutdown"),
            (error::CEASE, cease::PEER_DECONFIGURED) => Some("Peer De-configured"),
            (error::CEASE, cease::ADMINISTRATIVE_RESET) => Some("Administrative Reset"),
            _ => None,
        };
        match subcode_name {
            Some(sub) => write!(f, "{code_name} / {sub} ({}/{})", self.code, self.subcode),
            None => write!(f, "{code_name} ({}/{})", self.code, self.subcode),
        }
    }
}

/// ROUTE-REFRESH message (RFC 2918 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family to refresh.
    pub afi: Afi,
    /// Subsequent address family to refresh.
    pub safi: Safi,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_new_uses_as_trans_for_four_octet_as() {
        let id = Ipv4Addr::new(192, 0, 2, 1);
        let open = Open::new(4_200_000_000, 90, id, vec![Capability::RouteRefresh]);
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.peer_as(), 4_200_000_000);
        assert_eq!(
            open.capabilities,
            vec![
                Capability::RouteRefresh,
                Capability::FourOctetAs(4_200_000_000)
            ]
        );
    }

    #[test]
    fn open_new_keeps_two_octet_as_and_replaces_stale_capability() {
        let id = Ipv4Addr::new(192, 0, 2, 1);
        let open = Open::new(65001, 90, id, vec![Capability::FourOctetAs(7)]);
        assert_eq!(open.my_as, 65001);
        assert_eq!(open.capabilities, vec![Capability::FourOctetAs(65001)]);
        // Boundary: the largest 2-octet AS is still carried as is.
        assert_eq!(Open::new(65535, 90, id, vec![]).my_as, 65535);
        assert_eq!(Open::new(65536, 90, id, vec![]).my_as, AS_TRANS);
    }

    #[test]
    fn message_type_codes_round_trip() {
        for code in 0..=255u8 {
            if let Some(t) = MessageType::from_code(code) {
                assert_eq!(t.code(), code);
            } else {
                assert!(code == 0 || code > 5);
            }
        }
    }

    #[test]
    fn notification_display_names_code_and_subcode() {
        let n = Notification::new(codes::error::OPEN_MESSAGE, codes::open::BAD_PEER_AS);
        assert_eq!(n.to_string(), "OPEN Message Error / Bad Peer AS (2/2)");
        let n = Notification::new(42, 9);
        assert_eq!(n.to_string(), "Unknown Error (42/9)");
    }
}
