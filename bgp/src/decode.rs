//! Decoding: bytes from the peer's TCP stream into [`Message`]s.
//!
//! [`decode`] owns framing (it finds message boundaries in a growing receive buffer) and every
//! structural check of RFC 4271 section 6 that can be made without session state. Checks that
//! need configuration (is this the AS we expect? is this our own BGP Identifier?) belong to the
//! FSM. Input comes from the network, so no path here panics: all reads go through [`Reader`],
//! which returns `None` instead of indexing out of bounds.

use std::net::Ipv4Addr;

use crate::codes;
use crate::message::{
    Afi, Capability, GracefulRestartFamily, Message, MessageType, Notification, Open, RouteRefresh,
    Safi, Update, BGP_VERSION, HEADER_LEN, MARKER, MAX_MESSAGE_LEN,
};

/// Optional parameter type for capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;

/// Why a received message was rejected.
///
/// Each variant maps to the NOTIFICATION that RFC 4271 section 6 requires the speaker to send
/// before it closes the connection; see [`DecodeError::notification`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The 16-octet marker is not all ones (1/1).
    #[error(
        "message marker is not all ones: the byte stream is out of sync; the session must be reset"
    )]
    ConnectionNotSynchronized,
    /// The Length field is outside 19..=4096 or wrong for the message type (1/2).
    #[error("bad message length {length}: must be 19..=4096 and fit the message type")]
    BadMessageLength {
        /// The Length field as received.
        length: u16,
    },
    /// The Type field names no known message (1/3).
    #[error("bad message type {message_type}: only 1 (OPEN) to 5 (ROUTE-REFRESH) are known")]
    BadMessageType {
        /// The Type field as received.
        message_type: u8,
    },
    /// OPEN with a version other than 4 (2/1).
    #[error("peer speaks BGP version {version}; only version 4 is supported")]
    UnsupportedVersion {
        /// Version as received.
        version: u8,
    },
    /// OPEN with an AS that can never be valid, i.e. AS 0 (RFC 7607) (2/2).
    #[error("peer announced AS {peer_as}, which is reserved; check the peer's local AS")]
    BadPeerAs {
        /// The AS as received (2- or 4-octet).
        peer_as: u32,
    },
    /// OPEN with BGP Identifier 0.0.0.0 (RFC 6286) (2/3).
    #[error("peer announced BGP identifier {bgp_id}; it must be a non-zero 32-bit value")]
    BadBgpIdentifier {
        /// The identifier as received.
        bgp_id: Ipv4Addr,
    },
    /// OPEN with an optional parameter other than Capabilities (2/4).
    #[error("unsupported optional parameter type {param_type} in OPEN; only capabilities (2) are supported")]
    UnsupportedOptionalParameter {
        /// Parameter type as received.
        param_type: u8,
    },
    /// OPEN with hold time 1 or 2 seconds (2/6).
    #[error("unacceptable hold time {hold_time_s}s: must be 0 or at least 3")]
    UnacceptableHoldTime {
        /// Hold time as received.
        hold_time_s: u16,
    },
    /// OPEN whose optional parameter lengths do not add up (2/0).
    #[error("malformed OPEN: {reason}")]
    MalformedOpen {
        /// What was inconsistent.
        reason: &'static str,
    },
    /// A known capability with a malformed value (2/0).
    #[error("malformed capability {code} in OPEN: {reason}")]
    MalformedCapability {
        /// Capability code.
        code: u8,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// UPDATE whose section lengths exceed the message (3/1).
    #[error("malformed UPDATE attribute list: {reason}")]
    MalformedAttributeList {
        /// What was inconsistent.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The NOTIFICATION to send to the peer for this error (RFC 4271 section 6).
    pub fn notification(&self) -> Notification {
        use codes::{error, header, open, update};
        match self {
            DecodeError::ConnectionNotSynchronized => {
                Notification::new(error::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED)
            }
            DecodeError::BadMessageLength { length } => Notification::with_data(
                error::MESSAGE_HEADER,
                header::BAD_MESSAGE_LENGTH,
                length.to_be_bytes().to_vec(),
            ),
            DecodeError::BadMessageType { message_type } => Notification::with_data(
                error::MESSAGE_HEADER,
                header::BAD_MESSAGE_TYPE,
                vec![*message_type],
            ),
            // Data: the largest locally supported version number (RFC 4271 section 6.2).
            DecodeError::UnsupportedVersion { .. } => Notification::with_data(
                error::OPEN_MESSAGE,
                open::UNSUPPORTED_VERSION_NUMBER,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ),
            DecodeError::BadPeerAs { .. } => {
                Notification::new(error::OPEN_MESSAGE, open::BAD_PEER_AS)
            }
            DecodeError::BadBgpIdentifier { .. } => {
                Notification::new(error::OPEN_MESSAGE, open::BAD_BGP_IDENTIFIER)
            }
            DecodeError::UnsupportedOptionalParameter { .. } => {
                Notification::new(error::OPEN_MESSAGE, open::UNSUPPORTED_OPTIONAL_PARAMETER)
            }
            DecodeError::UnacceptableHoldTime { .. } => {
                Notification::new(error::OPEN_MESSAGE, open::UNACCEPTABLE_HOLD_TIME)
            }
            DecodeError::MalformedOpen { .. } | DecodeError::MalformedCapability { .. } => {
                Notification::new(error::OPEN_MESSAGE, open::UNSPECIFIC)
            }
            DecodeError::MalformedAttributeList { .. } => {
                Notification::new(error::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST)
            }
        }
    }
}

/// Decodes the first message in `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a message (read more and call again),
/// `Ok(Some((message, consumed)))` when a whole message was decoded (drop `consumed` bytes from
/// the front of the buffer), and `Err` when the peer sent something RFC 4271 forbids; send
/// [`DecodeError::notification`] and close the session.
///
/// Header errors are reported as soon as the header is complete, before the body arrives, and a
/// broken marker as soon as its first wrong byte arrives.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let marker_seen = buf.get(..MARKER.len()).unwrap_or(buf);
    if marker_seen.iter().any(|&b| b != 0xff) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let mut header = Reader::new(buf);
    let (Some(_marker), Some(length), Some(type_code)) =
        (header.take(MARKER.len()), header.u16(), header.u8())
    else {
        return Ok(None);
    };
    let total_len = usize::from(length);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&total_len) {
        return Err(DecodeError::BadMessageLength { length });
    }
    let message_type = MessageType::from_code(type_code).ok_or(DecodeError::BadMessageType {
        message_type: type_code,
    })?;
    if !(message_type.min_len()..=message_type.max_len()).contains(&total_len) {
        return Err(DecodeError::BadMessageLength { length });
    }
    let Some(body) = buf.get(HEADER_LEN..total_len) else {
        return Ok(None);
    };
    let message = match message_type {
        MessageType::Open => Message::Open(decode_open(body)?),
        MessageType::Update => Message::Update(decode_update(body)?),
        MessageType::Notification => Message::Notification(decode_notification(body, length)?),
        MessageType::Keepalive => Message::Keepalive,
        MessageType::RouteRefresh => Message::RouteRefresh(decode_route_refresh(body, length)?),
    };
    Ok(Some((message, total_len)))
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    const TRUNCATED: DecodeError = DecodeError::MalformedOpen {
        reason: "fixed fields truncated",
    };
    let mut r = Reader::new(body);
    let version = r.u8().ok_or(TRUNCATED)?;
    let my_as = r.u16().ok_or(TRUNCATED)?;
    let hold_time_s = r.u16().ok_or(TRUNCATED)?;
    let bgp_id = Ipv4Addr::from(r.u32().ok_or(TRUNCATED)?);
    let params_len = r.u8().ok_or(TRUNCATED)?;

    if version != BGP_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    if my_as == 0 {
        return Err(DecodeError::BadPeerAs { peer_as: 0 });
    }
    if hold_time_s == 1 || hold_time_s == 2 {
        return Err(DecodeError::UnacceptableHoldTime { hold_time_s });
    }
    if bgp_id.is_unspecified() {
        return Err(DecodeError::BadBgpIdentifier { bgp_id });
    }
    let params = r
        .take(usize::from(params_len))
        .ok_or(DecodeError::MalformedOpen {
            reason: "optional parameters length exceeds the message",
        })?;
    if !r.is_empty() {
        return Err(DecodeError::MalformedOpen {
            reason: "bytes left after the optional parameters",
        });
    }

    let mut capabilities = Vec::new();
    let mut params = Reader::new(params);
    while !params.is_empty() {
        let (Some(param_type), Some(param_len)) = (params.u8(), params.u8()) else {
            return Err(DecodeError::MalformedOpen {
                reason: "optional parameter header truncated",
            });
        };
        let value = params
            .take(usize::from(param_len))
            .ok_or(DecodeError::MalformedOpen {
                reason: "optional parameter longer than the optional parameters field",
            })?;
        if param_type != PARAM_CAPABILITIES {
            return Err(DecodeError::UnsupportedOptionalParameter { param_type });
        }
        decode_capabilities(value, &mut capabilities)?;
    }
    if capabilities.contains(&Capability::FourOctetAs(0)) {
        return Err(DecodeError::BadPeerAs { peer_as: 0 });
    }
    Ok(Open {
        version,
        my_as,
        hold_time_s,
        bgp_id,
        capabilities,
    })
}

/// Appends the capabilities in one Capabilities optional parameter value to `out`.
fn decode_capabilities(value: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let mut r = Reader::new(value);
    while !r.is_empty() {
        let (Some(code), Some(len)) = (r.u8(), r.u8()) else {
            return Err(DecodeError::MalformedOpen {
                reason: "capability header truncated",
            });
        };
        let cap_value = r
            .take(usize::from(len))
            .ok_or(DecodeError::MalformedCapability {
                code,
                reason: "capability length exceeds its optional parameter",
            })?;
        out.push(decode_capability(code, cap_value)?);
    }
    Ok(())
}

fn decode_capability(code: u8, value: &[u8]) -> Result<Capability, DecodeError> {
    let malformed = |reason| DecodeError::MalformedCapability { code, reason };
    let mut r = Reader::new(value);
    let capability = match code {
        Capability::CODE_MULTIPROTOCOL => {
            let (Some(afi), Some(_reserved), Some(safi), true) =
                (r.u16(), r.u8(), r.u8(), value.len() == 4)
            else {
                return Err(malformed("multiprotocol capability must be 4 octets"));
            };
            Capability::Multiprotocol {
                afi: Afi(afi),
                safi: Safi(safi),
            }
        }
        Capability::CODE_ROUTE_REFRESH => {
            if !value.is_empty() {
                return Err(malformed("route refresh capability must be empty"));
            }
            Capability::RouteRefresh
        }
        Capability::CODE_FOUR_OCTET_AS => match (r.u32(), value.len()) {
            (Some(asn), 4) => Capability::FourOctetAs(asn),
            _ => return Err(malformed("4-octet AS capability must be 4 octets")),
        },
        Capability::CODE_GRACEFUL_RESTART => {
            let flags_and_time = r.u16().ok_or(malformed(
                "graceful restart capability shorter than 2 octets",
            ))?;
            if r.remaining() % 4 != 0 {
                return Err(malformed("graceful restart families must be 4 octets each"));
            }
            let mut families = Vec::with_capacity(r.remaining() / 4);
            while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
                families.push(GracefulRestartFamily {
                    afi: Afi(afi),
                    safi: Safi(safi),
                    forwarding_state: flags & 0x80 != 0,
                });
            }
            Capability::GracefulRestart {
                restart_state: flags_and_time & 0x8000 != 0,
                restart_time_s: flags_and_time & 0x0fff,
                families,
            }
        }
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    };
    Ok(capability)
}

fn decode_update(body: &[u8]) -> Result<Update, DecodeError> {
    let mut r = Reader::new(body);
    let withdrawn_len = r.u16().ok_or(DecodeError::MalformedAttributeList {
        reason: "withdrawn routes length truncated",
    })?;
    let withdrawn_routes =
        r.take(usize::from(withdrawn_len))
            .ok_or(DecodeError::MalformedAttributeList {
                reason: "withdrawn routes length exceeds the message",
            })?;
    let attributes_len = r.u16().ok_or(DecodeError::MalformedAttributeList {
        reason: "no room for the total path attribute length",
    })?;
    let path_attributes =
        r.take(usize::from(attributes_len))
            .ok_or(DecodeError::MalformedAttributeList {
                reason:
                    "withdrawn routes length plus total path attribute length exceed the message",
            })?;
    Ok(Update {
        withdrawn_routes: withdrawn_routes.to_vec(),
        path_attributes: path_attributes.to_vec(),
        nlri: r.rest().to_vec(),
    })
}

fn decode_notification(body: &[u8], length: u16) -> Result<Notification, DecodeError> {
    let mut r = Reader::new(body);
    let (Some(code), Some(subcode)) = (r.u8(), r.u8()) else {
        // Unreachable after the minimum length check; report it as the length problem it is.
        return Err(DecodeError::BadMessageLength { length });
    };
    Ok(Notification::with_data(code, subcode, r.rest().to_vec()))
}

fn decode_route_refresh(body: &[u8], length: u16) -> Result<RouteRefresh, DecodeError> {
    let mut r = Reader::new(body);
    // The third octet is Reserved in RFC 2918 (Message Subtype in RFC 7313, not negotiated).
    let (Some(afi), Some(_reserved), Some(safi)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(DecodeError::BadMessageLength { length });
    };
    Ok(RouteRefresh {
        afi: Afi(afi),
        safi: Safi(safi),
    })
}

/// A cursor over untrusted bytes whose reads return `None` past the end instead of panicking.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { rest: buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&first, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(first)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes(bytes.try_into().ok()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let bytes = self.take(4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn peek_rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{error, header, open, update};
    use crate::encode;

    use crate::test_util::hex;

    /// Frames `body` as a message of type `type_code` with a correct length field.
    fn frame(type_code: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MARKER.to_vec();
        out.extend_from_slice(
            &u16::try_from(HEADER_LEN + body.len())
                .unwrap()
                .to_be_bytes(),
        );
        out.push(type_code);
        out.extend_from_slice(body);
        out
    }

    fn decode_err(bytes: &[u8]) -> DecodeError {
        decode(bytes).expect_err("decode should fail")
    }

    fn code_subcode(bytes: &[u8]) -> (u8, u8) {
        let n = decode_err(bytes).notification();
        (n.code, n.subcode)
    }

    /// OPEN body from RFC 4271 4.2 with the given fixed fields and raw optional parameters.
    fn open_body(version: u8, my_as: u16, hold_s: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
        let mut body = vec![version];
        body.extend_from_slice(&my_as.to_be_bytes());
        body.extend_from_slice(&hold_s.to_be_bytes());
        body.extend_from_slice(&id);
        body.push(u8::try_from(params.len()).unwrap());
        body.extend_from_slice(params);
        body
    }

    const FF16: &str = "ffffffff ffffffff ffffffff ffffffff";

    #[test]
    fn keepalive_vector() {
        let wire = hex(&format!("{FF16} 0013 04"));
        assert_eq!(decode(&wire), Ok(Some((Message::Keepalive, 19))));
        let mut out = Vec::new();
        encode(&Message::Keepalive, &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn open_vector_with_all_known_capabilities() {
        let wire = hex(&format!(
            "{FF16} 003b 01
             04 fde9 005a c0000201 1e
             02 1c
                01 04 0001 00 01
                01 04 0002 00 01
                02 00
                41 04 0000fde9
                40 06 8078 0001 01 80"
        ));
        let expected = Message::Open(Open {
            version: 4,
            my_as: 65001,
            hold_time_s: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                },
                Capability::Multiprotocol {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(65001),
                Capability::GracefulRestart {
                    restart_state: true,
                    restart_time_s: 120,
                    families: vec![GracefulRestartFamily {
                        afi: Afi::IPV4,
                        safi: Safi::UNICAST,
                        forwarding_state: true,
                    }],
                },
            ],
        });
        assert_eq!(decode(&wire), Ok(Some((expected.clone(), wire.len()))));
        let mut out = Vec::new();
        encode(&expected, &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn open_with_as_trans_and_four_octet_as() {
        let id = Ipv4Addr::new(10, 0, 0, 1);
        let msg = Message::Open(Open::new(4_200_000_001, 180, id, vec![]));
        let mut out = Vec::new();
        encode(&msg, &mut out).unwrap();
        // My AS = 23456 (0x5ba0), one capability parameter holding 65 / 4 / 0xfa56ea01.
        let wire = hex(&format!(
            "{FF16} 0025 01 04 5ba0 00b4 0a000001 08 02 06 41 04 fa56ea01"
        ));
        assert_eq!(out, wire);
        let Some((Message::Open(open), _)) = decode(&wire).unwrap() else {
            panic!("not an OPEN")
        };
        assert_eq!(open.peer_as(), 4_200_000_001);
    }

    #[test]
    fn open_without_optional_parameters_and_with_split_parameters() {
        let wire = frame(1, &open_body(4, 65000, 0, [1, 1, 1, 1], &[]));
        let Some((Message::Open(open), 29)) = decode(&wire).unwrap() else {
            panic!("not a 29-octet OPEN")
        };
        assert!(open.capabilities.is_empty());
        assert_eq!(open.hold_time_s, 0);

        // Older speakers put each capability in its own parameter; unknown ones are kept.
        let params = hex("02 02 02 00  02 05 80 03 aabbcc");
        let wire = frame(1, &open_body(4, 65000, 3, [1, 1, 1, 1], &params));
        let Some((Message::Open(open), _)) = decode(&wire).unwrap() else {
            panic!("not an OPEN")
        };
        assert_eq!(
            open.capabilities,
            vec![
                Capability::RouteRefresh,
                Capability::Unknown {
                    code: 0x80,
                    value: vec![0xaa, 0xbb, 0xcc]
                }
            ]
        );
    }

    #[test]
    fn graceful_restart_ignores_other_flag_bits() {
        // N bit (RFC 8538) set, R bit clear, time 4095; family flags with reserved bits set.
        let params = hex("02 0c 40 0a 4fff 0002 01 7f 0001 01 ff");
        let wire = frame(1, &open_body(4, 65000, 90, [1, 1, 1, 1], &params));
        let Some((Message::Open(open), _)) = decode(&wire).unwrap() else {
            panic!("not an OPEN")
        };
        assert_eq!(
            open.capabilities,
            vec![Capability::GracefulRestart {
                restart_state: false,
                restart_time_s: 4095,
                families: vec![
                    GracefulRestartFamily {
                        afi: Afi::IPV6,
                        safi: Safi::UNICAST,
                        forwarding_state: false,
                    },
                    GracefulRestartFamily {
                        afi: Afi::IPV4,
                        safi: Safi::UNICAST,
                        forwarding_state: true,
                    },
                ],
            }]
        );
    }

    #[test]
    fn notification_vector() {
        // Cease / Administrative Shutdown with a 3-octet shutdown message (RFC 8203 style data).
        let wire = hex(&format!("{FF16} 0018 03 06 02 02 6869"));
        let expected = Message::Notification(Notification::with_data(6, 2, vec![2, b'h', b'i']));
        assert_eq!(decode(&wire), Ok(Some((expected.clone(), 24))));
        let mut out = Vec::new();
        encode(&expected, &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn route_refresh_vector() {
        let wire = hex(&format!("{FF16} 0017 05 0002 00 01"));
        let expected = Message::RouteRefresh(RouteRefresh {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
        });
        assert_eq!(decode(&wire), Ok(Some((expected.clone(), 23))));
        let mut out = Vec::new();
        encode(&expected, &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn update_vector_splits_sections() {
        // Withdraw 10.1.0.0/16; attributes ORIGIN IGP; NLRI 192.0.2.0/24.
        let wire = hex(&format!(
            "{FF16} 0022 02
             0003 10 0a01
             0004 40 01 01 00
             18 c00002"
        ));
        let expected = Message::Update(Update {
            withdrawn_routes: hex("10 0a01"),
            path_attributes: hex("40 01 01 00"),
            nlri: hex("18 c00002"),
        });
        assert_eq!(decode(&wire), Ok(Some((expected.clone(), wire.len()))));
        let mut out = Vec::new();
        encode(&expected, &mut out).unwrap();
        assert_eq!(out, wire);
        // The smallest UPDATE (End-of-RIB for IPv4 unicast, RFC 4724) is 23 octets.
        let eor = hex(&format!("{FF16} 0017 02 0000 0000"));
        assert_eq!(
            decode(&eor),
            Ok(Some((Message::Update(Update::default()), 23)))
        );
    }

    #[test]
    fn framing_waits_for_whole_message_and_reports_consumed() {
        let mut stream = frame(4, &[]);
        stream.extend_from_slice(&frame(5, &[0, 1, 0, 1]));
        for cut in 0..19 {
            assert_eq!(decode(&stream[..cut]), Ok(None), "cut at {cut}");
        }
        let (first, used) = decode(&stream).unwrap().unwrap();
        assert_eq!((first, used), (Message::Keepalive, 19));
        let rest = &stream[used..];
        for cut in 0..rest.len() {
            assert_eq!(decode(&rest[..cut]), Ok(None), "cut at {cut}");
        }
        let (second, used2) = decode(rest).unwrap().unwrap();
        assert_eq!(used2, 23);
        assert!(matches!(second, Message::RouteRefresh(_)));
    }

    #[test]
    fn header_errors() {
        // Connection Not Synchronized, detected on the first bad marker byte.
        assert_eq!(code_subcode(&[0xff, 0xff, 0x00]), (1, 1));
        let mut bad_marker = frame(4, &[]);
        bad_marker[15] = 0xfe;
        assert_eq!(
            decode_err(&bad_marker),
            DecodeError::ConnectionNotSynchronized
        );
        assert_eq!(
            decode_err(&bad_marker).notification(),
            Notification::new(error::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED)
        );

        // Bad Message Length: outside 19..=4096, data = the Length field.
        for length in [0u16, 18, 4097, 0xffff] {
            let mut wire = MARKER.to_vec();
            wire.extend_from_slice(&length.to_be_bytes());
            wire.push(4);
            let n = decode_err(&wire).notification();
            assert_eq!((n.code, n.subcode), (1, 2), "length {length}");
            assert_eq!(n.data, length.to_be_bytes().to_vec());
        }

        // Bad Message Type, data = the Type field.
        for type_code in [0u8, 6, 255] {
            let n = decode_err(&frame(type_code, &[])).notification();
            assert_eq!(
                n,
                Notification::with_data(
                    error::MESSAGE_HEADER,
                    header::BAD_MESSAGE_TYPE,
                    vec![type_code]
                )
            );
        }
    }

    #[test]
    fn type_specific_lengths_are_bad_message_length() {
        let cases: [(u8, usize); 6] = [
            (1, 9), // OPEN below 29
            (2, 3), // UPDATE below 23
            (3, 1), // NOTIFICATION below 21
            (4, 1), // KEEPALIVE must be exactly 19
            (5, 3), // ROUTE-REFRESH must be exactly 23
            (5, 5), // ... on both sides
        ];
        for (type_code, body_len) in cases {
            let wire = frame(type_code, &vec![0; body_len]);
            let err = decode_err(&wire);
            let length = u16::try_from(HEADER_LEN + body_len).unwrap();
            assert_eq!(err, DecodeError::BadMessageLength { length });
            assert_eq!(err.notification().data, length.to_be_bytes().to_vec());
            // Reported from the header alone, before the body arrives.
            assert_eq!(decode_err(&wire[..HEADER_LEN]), err);
        }
    }

    #[test]
    fn open_errors() {
        let id = [192, 0, 2, 1];
        let cases: Vec<(Vec<u8>, (u8, u8))> = vec![
            (
                open_body(3, 65000, 90, id, &[]),
                (2, open::UNSUPPORTED_VERSION_NUMBER),
            ),
            (
                open_body(0, 65000, 90, id, &[]),
                (2, open::UNSUPPORTED_VERSION_NUMBER),
            ),
            (open_body(4, 0, 90, id, &[]), (2, open::BAD_PEER_AS)),
            (
                open_body(4, 23456, 90, id, &hex("02 06 41 04 00000000")),
                (2, open::BAD_PEER_AS),
            ),
            (
                open_body(4, 65000, 90, [0; 4], &[]),
                (2, open::BAD_BGP_IDENTIFIER),
            ),
            (
                open_body(4, 65000, 90, id, &hex("01 01 00")),
                (2, open::UNSUPPORTED_OPTIONAL_PARAMETER),
            ),
            (
                open_body(4, 65000, 90, id, &hex("ff 00")),
                (2, open::UNSUPPORTED_OPTIONAL_PARAMETER),
            ),
            (
                open_body(4, 65000, 1, id, &[]),
                (2, open::UNACCEPTABLE_HOLD_TIME),
            ),
            (
                open_body(4, 65000, 2, id, &[]),
                (2, open::UNACCEPTABLE_HOLD_TIME),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(code_subcode(&frame(1, &body)), expected, "body {body:02x?}");
        }
        let n = decode_err(&frame(1, &open_body(3, 65000, 90, id, &[]))).notification();
        assert_eq!(n.data, vec![0, 4], "data = largest supported version");
        // Hold times at the boundary are accepted.
        for hold_s in [0u16, 3, 0xffff] {
            assert!(decode(&frame(1, &open_body(4, 65000, hold_s, id, &[]))).is_ok());
        }
    }

    #[test]
    fn malformed_open_parameters_are_open_message_error_unspecific() {
        let id = [192, 0, 2, 1];
        let mut params_len_too_big = open_body(4, 65000, 90, id, &[]);
        *params_len_too_big.last_mut().unwrap() = 4;
        let mut trailing = open_body(4, 65000, 90, id, &[]);
        trailing.push(0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("params length past end", params_len_too_big),
            ("bytes after params", trailing),
            ("param header cut", open_body(4, 65000, 90, id, &hex("02"))),
            (
                "param value past params",
                open_body(4, 65000, 90, id, &hex("02 05 02 00")),
            ),
            (
                "cap header cut",
                open_body(4, 65000, 90, id, &hex("02 01 41")),
            ),
            (
                "cap value past param",
                open_body(4, 65000, 90, id, &hex("02 02 41 04")),
            ),
            (
                "multiprotocol 3 octets",
                open_body(4, 65000, 90, id, &hex("02 05 01 03 000100")),
            ),
            (
                "route refresh not empty",
                open_body(4, 65000, 90, id, &hex("02 03 02 01 00")),
            ),
            (
                "4-octet AS 2 octets",
                open_body(4, 65000, 90, id, &hex("02 04 41 02 fde9")),
            ),
            (
                "graceful restart 1 octet",
                open_body(4, 65000, 90, id, &hex("02 03 40 01 80")),
            ),
            (
                "graceful restart family cut",
                open_body(4, 65000, 90, id, &hex("02 07 40 05 0078 000101")),
            ),
        ];
        for (what, body) in cases {
            assert_eq!(
                decode_err(&frame(1, &body)).notification(),
                Notification::new(error::OPEN_MESSAGE, open::UNSPECIFIC),
                "{what}"
            );
        }
    }

    #[test]
    fn update_errors_are_malformed_attribute_list() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("withdrawn length past end", hex("0005 00 0000")),
            ("no room for attribute length", hex("0002 0000")),
            ("attribute length past end", hex("0000 0001")),
            (
                "attribute length past end with NLRI",
                hex("0001 00 0003 4001"),
            ),
        ];
        for (what, body) in cases {
            assert_eq!(
                decode_err(&frame(2, &body)).notification(),
                Notification::new(error::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST),
                "{what}"
            );
        }
    }

    #[test]
    fn error_messages_say_what_is_allowed() {
        let err = DecodeError::UnacceptableHoldTime { hold_time_s: 2 };
        assert_eq!(
            err.to_string(),
            "unacceptable hold time 2s: must be 0 or at least 3"
        );
        let err = DecodeError::BadMessageLength { length: 5000 };
        assert!(err.to_string().contains("19..=4096"));
    }
}
