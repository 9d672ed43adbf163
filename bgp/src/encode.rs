//! Encoding: [`Message`]s into wire bytes.
//!
//! [`encode`] appends one whole message to a caller's buffer, so a session can batch several
//! messages into one write. Representations can hold values the wire cannot carry (a 300-octet
//! capability, an UPDATE over 4096 octets); those are refused with an [`EncodeError`] and leave
//! the buffer as it was, rather than being silently truncated.

use crate::message::{
    Capability, Message, MessageType, Notification, Open, RouteRefresh, Update, HEADER_LEN, MARKER,
    MAX_MESSAGE_LEN,
};

/// Optional parameter type for capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// Largest value of one optional parameter, and of all of them together (1-octet lengths).
const MAX_PARAMS_LEN: usize = 255;
/// Restart Time is a 12-bit field (RFC 4724 section 3).
const MAX_RESTART_TIME_S: u16 = 0x0fff;

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The whole message would exceed 4096 octets.
    #[error(
        "{message_type:?} message would be {length} octets; BGP allows at most 4096, split it"
    )]
    MessageTooLong {
        /// Type of the message.
        message_type: MessageType,
        /// Length it would have had.
        length: usize,
    },
    /// The capabilities do not fit the 255-octet optional parameters field of an OPEN.
    #[error("OPEN capabilities need {length} octets; at most 253 fit, advertise fewer")]
    CapabilitiesTooLong {
        /// Octets the capabilities need.
        length: usize,
    },
    /// A capability value is longer than its 1-octet length field allows.
    #[error("capability {code} value is {length} octets; at most 255 are allowed")]
    CapabilityTooLong {
        /// Capability code.
        code: u8,
        /// Length of the value.
        length: usize,
    },
    /// The graceful restart time does not fit its 12-bit field.
    #[error("graceful restart time {restart_time_s}s does not fit 12 bits; use at most 4095")]
    RestartTimeTooLarge {
        /// The time that was asked for.
        restart_time_s: u16,
    },
}

/// Appends `message` in wire format to `out`.
///
/// On error `out` is left exactly as it was.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_unchecked(message, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_unchecked(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let message_type = message.message_type();
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&[0, 0]); // length, patched below
    out.push(message_type.code());
    match message {
        Message::Open(open) => encode_open(open, out)?,
        Message::Update(update) => encode_update(update, out)?,
        Message::Notification(notification) => encode_notification(notification, out),
        Message::Keepalive => {}
        Message::RouteRefresh(refresh) => encode_route_refresh(refresh, out),
    }
    let length = out.len() - start;
    let length_field = u16::try_from(length)
        .ok()
        .filter(|_| length <= MAX_MESSAGE_LEN)
        .ok_or(EncodeError::MessageTooLong {
            message_type,
            length,
        })?;
    debug_assert!(length >= HEADER_LEN);
    // The header was pushed above, so the length field exists at start + 16.
    if let Some(field) = out.get_mut(start + MARKER.len()..start + MARKER.len() + 2) {
        field.copy_from_slice(&length_field.to_be_bytes());
    }
    Ok(())
}

fn encode_open(open: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(open.version);
    out.extend_from_slice(&open.my_as.to_be_bytes());
    out.extend_from_slice(&open.hold_time_s.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());

    let mut caps = Vec::new();
    for capability in &open.capabilities {
        encode_capability(capability, &mut caps)?;
    }
    if caps.is_empty() {
        out.push(0);
        return Ok(());
    }
    // All capabilities go in one Capabilities parameter, as BIRD and FRR send them.
    let param_len = u8::try_from(caps.len())
        .ok()
        .filter(|_| caps.len() + 2 <= MAX_PARAMS_LEN)
        .ok_or(EncodeError::CapabilitiesTooLong { length: caps.len() })?;
    out.push(param_len + 2);
    out.push(PARAM_CAPABILITIES);
    out.push(param_len);
    out.extend_from_slice(&caps);
    Ok(())
}

fn encode_capability(capability: &Capability, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut value = Vec::new();
    match capability {
        Capability::Multiprotocol { afi, safi } => {
            value.extend_from_slice(&afi.0.to_be_bytes());
            value.push(0); // reserved
            value.push(safi.0);
        }
        Capability::RouteRefresh => {}
        Capability::FourOctetAs(asn) => value.extend_from_slice(&asn.to_be_bytes()),
        Capability::GracefulRestart {
            restart_state,
            restart_time_s,
            families,
        } => {
            if *restart_time_s > MAX_RESTART_TIME_S {
                return Err(EncodeError::RestartTimeTooLarge {
                    restart_time_s: *restart_time_s,
                });
            }
            let flags: u16 = if *restart_state { 0x8000 } else { 0 };
            value.extend_from_slice(&(flags | restart_time_s).to_be_bytes());
            for family in families {
                value.extend_from_slice(&family.afi.0.to_be_bytes());
                value.push(family.safi.0);
                value.push(if family.forwarding_state { 0x80 } else { 0 });
            }
        }
        Capability::Unknown { value: v, .. } => value.extend_from_slice(v),
    }
    let code = capability.code();
    let len = u8::try_from(value.len()).map_err(|_| EncodeError::CapabilityTooLong {
        code,
        length: value.len(),
    })?;
    out.push(code);
    out.push(len);
    out.extend_from_slice(&value);
    Ok(())
}

fn encode_update(update: &Update, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let too_long = || EncodeError::MessageTooLong {
        message_type: MessageType::Update,
        length: HEADER_LEN
            + 4
            + update.withdrawn_routes.len()
            + update.path_attributes.len()
            + update.nlri.len(),
    };
    let withdrawn_len = u16::try_from(update.withdrawn_routes.len()).map_err(|_| too_long())?;
    let attributes_len = u16::try_from(update.path_attributes.len()).map_err(|_| too_long())?;
    out.extend_from_slice(&withdrawn_len.to_be_bytes());
    out.extend_from_slice(&update.withdrawn_routes);
    out.extend_from_slice(&attributes_len.to_be_bytes());
    out.extend_from_slice(&update.path_attributes);
    out.extend_from_slice(&update.nlri);
    Ok(())
}

fn encode_notification(notification: &Notification, out: &mut Vec<u8>) {
    out.push(notification.code);
    out.push(notification.subcode);
    out.extend_from_slice(&notification.data);
}

fn encode_route_refresh(refresh: &RouteRefresh, out: &mut Vec<u8>) {
    out.extend_from_slice(&refresh.afi.0.to_be_bytes());
    out.push(0); // reserved
    out.push(refresh.safi.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Afi, GracefulRestartFamily, Safi};
    use std::net::Ipv4Addr;

    fn open_with(capabilities: Vec<Capability>) -> Message {
        Message::Open(Open {
            version: 4,
            my_as: 65000,
            hold_time_s: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities,
        })
    }

    #[test]
    fn refuses_what_the_wire_cannot_carry_and_leaves_buffer_alone() {
        let mut out = vec![1, 2, 3];
        let cases = [
            open_with(vec![Capability::Unknown {
                code: 200,
                value: vec![0; 256],
            }]),
            open_with(vec![
                Capability::Unknown {
                    code: 200,
                    value: vec![0; 200],
                },
                Capability::Unknown {
                    code: 201,
                    value: vec![0; 60],
                },
            ]),
            open_with(vec![Capability::GracefulRestart {
                restart_state: false,
                restart_time_s: 4096,
                families: vec![],
            }]),
            Message::Update(Update {
                nlri: vec![0; 4096 - 23 + 1],
                ..Update::default()
            }),
            Message::Update(Update {
                path_attributes: vec![0; 70_000],
                ..Update::default()
            }),
            Message::Notification(Notification::with_data(6, 2, vec![0; 4096])),
        ];
        for message in &cases {
            assert!(encode(message, &mut out).is_err(), "{message:?}");
            assert_eq!(out, vec![1, 2, 3]);
        }
    }

    #[test]
    fn largest_messages_fit() {
        let mut out = Vec::new();
        let update = Message::Update(Update {
            nlri: vec![0; 4096 - 23],
            ..Update::default()
        });
        encode(&update, &mut out).unwrap();
        assert_eq!(out.len(), 4096);
        assert_eq!(&out[16..18], &[0x10, 0x00]);

        // 253 octets of capabilities fill the 255-octet optional parameters field exactly.
        let open = open_with(vec![Capability::Unknown {
            code: 200,
            value: vec![7; 251],
        }]);
        out.clear();
        encode(&open, &mut out).unwrap();
        assert_eq!(out.len(), 29 + 255);
        assert_eq!(crate::decode(&out).unwrap().unwrap().0, open);
    }

    #[test]
    fn graceful_restart_bits() {
        let open = open_with(vec![Capability::GracefulRestart {
            restart_state: false,
            restart_time_s: 4095,
            families: vec![GracefulRestartFamily {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                forwarding_state: false,
            }],
        }]);
        let mut out = Vec::new();
        encode(&open, &mut out).unwrap();
        assert_eq!(&out[29..], &[2, 8, 64, 6, 0x0f, 0xff, 0, 2, 1, 0]);
        assert_eq!(crate::decode(&out).unwrap().unwrap().0, open);
    }
}
