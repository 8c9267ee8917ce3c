//! Socket.IO v5 packets: `<type>[<attachments>-][<namespace>,][<ack id>][<payload>]`.
//!
//! Decoding borrows from the Engine.IO message and checks only the envelope
//! and the payload's outer shape; the JSON itself is parsed by the layer
//! above, once. Encoding writes the envelope into a frame buffer, after which
//! the caller serializes the payload in place.

#![warn(clippy::arithmetic_side_effects)]

use bytes::{BufMut, BytesMut};
use simd_json::BorrowedValue;
use simd_json::prelude::*;

use super::DecodeError;

/// The root namespace, written implicitly on the wire.
pub const ROOT_NAMESPACE: &str = "/";

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: join a namespace.
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event, optionally with an ack id.
    Event,
    /// `3`: the answer to an event that carried an ack id.
    Ack,
    /// `4`: refusal of a CONNECT.
    ConnectError,
    /// `5`: an event whose arguments hold binary attachments.
    BinaryEvent,
    /// `6`: an ack whose arguments hold binary attachments.
    BinaryAck,
}

impl PacketType {
    /// The type digit on the wire.
    #[must_use]
    pub const fn digit(self) -> u8 {
        match self {
            Self::Connect => b'0',
            Self::Disconnect => b'1',
            Self::Event => b'2',
            Self::Ack => b'3',
            Self::ConnectError => b'4',
            Self::BinaryEvent => b'5',
            Self::BinaryAck => b'6',
        }
    }

    fn from_digit(digit: u8) -> Result<Self, DecodeError> {
        Ok(match digit {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            other => return Err(DecodeError::UnknownPacketType(char::from(other))),
        })
    }

    /// Whether binary attachments follow this packet.
    #[must_use]
    pub const fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A decoded packet; every field borrows from the received text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type.
    pub kind: PacketType,
    /// Number of binary attachments that follow (binary types only).
    pub attachments: usize,
    /// The namespace, `/` when none is written.
    pub namespace: &'a str,
    /// The ack id, if any.
    pub ack_id: Option<u64>,
    /// The JSON payload, possibly empty.
    pub payload: &'a str,
}

/// Largest attachment count accepted; a chat client never needs many.
const MAX_ATTACHMENTS: usize = 64;

/// Decodes one packet (the data of an Engine.IO `message` packet).
///
/// # Errors
/// A [`DecodeError`] naming the first malformed part.
pub fn decode(text: &str) -> Result<Packet<'_>, DecodeError> {
    let bytes = text.as_bytes();
    let kind = PacketType::from_digit(*bytes.first().ok_or(DecodeError::Empty)?)?;
    let mut rest = &text[1..];

    let mut attachments = 0;
    if kind.is_binary() {
        let dash = rest.find('-').ok_or(DecodeError::BadAttachments)?;
        attachments = rest[..dash].parse().map_err(|_| DecodeError::BadAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(DecodeError::BadAttachments);
        }
        rest = rest.get(dash.saturating_add(1)..).unwrap_or("");
    }

    let mut namespace = ROOT_NAMESPACE;
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                namespace = &rest[..comma];
                rest = rest.get(comma.saturating_add(1)..).unwrap_or("");
            }
            // `1/chat` (DISCONNECT) and `0/chat` (CONNECT) may omit the comma.
            None => {
                namespace = rest;
                rest = "";
            }
        }
    }

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = if digits > 0 {
        let id = rest[..digits].parse().map_err(|_| DecodeError::BadAckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };

    check_payload_shape(kind, rest)?;
    Ok(Packet { kind, attachments, namespace, ack_id, payload: rest })
}

fn check_payload_shape(kind: PacketType, payload: &str) -> Result<(), DecodeError> {
    let first = payload.as_bytes().first().copied();
    let ok = match kind {
        PacketType::Connect => first.is_none() || first == Some(b'{'),
        PacketType::Disconnect => first.is_none(),
        PacketType::Event | PacketType::BinaryEvent | PacketType::Ack | PacketType::BinaryAck => {
            first == Some(b'[')
        }
        PacketType::ConnectError => matches!(first, Some(b'{' | b'"')),
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadPayload(match kind {
            PacketType::Connect => "CONNECT (an object or nothing)",
            PacketType::Disconnect => "DISCONNECT (nothing)",
            PacketType::ConnectError => "CONNECT_ERROR (an object)",
            _ => "EVENT/ACK (an array)",
        }))
    }
}

/// Splits a parsed EVENT payload into its name and arguments.
///
/// # Errors
/// [`DecodeError::BadPayload`] unless the payload is an array whose first
/// element is a string.
pub fn split_event<'v, 'a>(
    payload: &'v BorrowedValue<'a>,
) -> Result<(&'v str, &'v [BorrowedValue<'a>]), DecodeError> {
    let items = payload.as_array().ok_or(DecodeError::BadPayload("EVENT (an array)"))?;
    let (name, args) = items.split_first().ok_or(DecodeError::BadPayload("EVENT (a name)"))?;
    let name = name.as_str().ok_or(DecodeError::BadPayload("EVENT (a string name)"))?;
    Ok((name, args))
}

/// Checks that every `{"_placeholder":true,"num":N}` in `value` points at one
/// of `attachments` binary attachments.
///
/// # Errors
/// [`DecodeError::BadAttachments`] for a placeholder out of range.
pub fn check_placeholders(value: &BorrowedValue<'_>, attachments: usize) -> Result<(), DecodeError> {
    if let Some(items) = value.as_array() {
        return items.iter().try_for_each(|item| check_placeholders(item, attachments));
    }
    if let Some(object) = value.as_object() {
        if object.get("_placeholder").and_then(ValueAsScalar::as_bool) == Some(true) {
            let num = object.get("num").and_then(ValueAsScalar::as_u64);
            return match num {
                Some(num) if (num as usize) < attachments => Ok(()),
                _ => Err(DecodeError::BadAttachments),
            };
        }
        return object.values().try_for_each(|item| check_placeholders(item, attachments));
    }
    Ok(())
}

/// Writes a packet envelope: type, namespace (omitted for `/`) and ack id.
/// The caller appends the payload.
pub fn write_header(buf: &mut BytesMut, kind: PacketType, namespace: &str, ack_id: Option<u64>) {
    write_binary_header(buf, kind, 0, namespace, ack_id);
}

/// Writes a packet envelope with its attachment count (`52-/chat,7`) when
/// `kind` is binary; otherwise as [`write_header`].
pub fn write_binary_header(
    buf: &mut BytesMut,
    kind: PacketType,
    attachments: usize,
    namespace: &str,
    ack_id: Option<u64>,
) {
    buf.put_u8(kind.digit());
    if kind.is_binary() {
        buf.put_slice(itoa::Buffer::new().format(attachments).as_bytes());
        buf.put_u8(b'-');
    }
    if namespace != ROOT_NAMESPACE {
        buf.put_slice(namespace.as_bytes());
        buf.put_u8(b',');
    }
    if let Some(id) = ack_id {
        buf.put_slice(itoa::Buffer::new().format(id).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet<'a>(kind: PacketType, namespace: &'a str, ack_id: Option<u64>, payload: &'a str) -> Packet<'a> {
        Packet { kind, attachments: 0, namespace, ack_id, payload }
    }

    #[test]
    fn decodes_the_spec_examples() {
        assert_eq!(decode("0"), Ok(packet(PacketType::Connect, "/", None, "")));
        assert_eq!(
            decode(r#"0/admin,{"token":"123"}"#),
            Ok(packet(PacketType::Connect, "/admin", None, r#"{"token":"123"}"#))
        );
        assert_eq!(decode("1/admin,"), Ok(packet(PacketType::Disconnect, "/admin", None, "")));
        assert_eq!(decode(r#"2["foo"]"#), Ok(packet(PacketType::Event, "/", None, r#"["foo"]"#)));
        assert_eq!(
            decode(r#"2/admin,456["project:delete",123]"#),
            Ok(packet(PacketType::Event, "/admin", Some(456), r#"["project:delete",123]"#))
        );
        assert_eq!(decode("3/admin,456[]"), Ok(packet(PacketType::Ack, "/admin", Some(456), "[]")));
        assert_eq!(
            decode(r#"42/api/v1/chat,17["join_room",{"roomId":"a"}]"#.get(1..).expect("ascii")),
            Ok(packet(PacketType::Event, "/api/v1/chat", Some(17), r#"["join_room",{"roomId":"a"}]"#))
        );
    }

    #[test]
    fn decodes_binary_envelopes() {
        let decoded = decode(r#"51-["baz",{"_placeholder":true,"num":0}]"#).expect("valid");
        assert_eq!(decoded.kind, PacketType::BinaryEvent);
        assert_eq!(decoded.attachments, 1);
        assert_eq!(decoded.namespace, "/");
        let decoded = decode(r#"61-/admin,456[{"_placeholder":true,"num":0}]"#).expect("valid");
        assert_eq!((decoded.attachments, decoded.namespace, decoded.ack_id), (1, "/admin", Some(456)));
    }

    #[test]
    fn refuses_malformed_envelopes() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("7"), Err(DecodeError::UnknownPacketType('7')));
        assert_eq!(decode(r#"5["x"]"#), Err(DecodeError::BadAttachments));
        assert_eq!(decode(r#"5x-["x"]"#), Err(DecodeError::BadAttachments));
        assert!(matches!(decode("2/chat,{}"), Err(DecodeError::BadPayload(_))));
        assert!(matches!(decode("2"), Err(DecodeError::BadPayload(_))));
        assert!(matches!(decode("0/chat,[1]"), Err(DecodeError::BadPayload(_))));
        assert_eq!(decode("2/chat,99999999999999999999999[]"), Err(DecodeError::BadAckId));
    }

    #[test]
    fn splits_events_and_checks_placeholders() {
        let mut json = br#"["send_message",{"_placeholder":true,"num":0}]"#.to_vec();
        let value = simd_json::to_borrowed_value(&mut json).expect("json");
        let (name, args) = split_event(&value).expect("event");
        assert_eq!((name, args.len()), ("send_message", 1));
        assert!(check_placeholders(&value, 1).is_ok());
        assert_eq!(check_placeholders(&value, 0), Err(DecodeError::BadAttachments));

        let mut json = br#"[1,2]"#.to_vec();
        let value = simd_json::to_borrowed_value(&mut json).expect("json");
        assert!(split_event(&value).is_err());
    }

    #[test]
    fn writes_headers_like_the_spec() {
        let mut buf = BytesMut::new();
        write_header(&mut buf, PacketType::Event, "/api/v1/chat", Some(17));
        assert_eq!(&buf[..], b"2/api/v1/chat,17");
        buf.clear();
        write_header(&mut buf, PacketType::Ack, "/", Some(0));
        assert_eq!(&buf[..], b"30");
        buf.clear();
        write_header(&mut buf, PacketType::Disconnect, "/chat", None);
        assert_eq!(&buf[..], b"1/chat,");
        buf.clear();
        write_binary_header(&mut buf, PacketType::BinaryAck, 2, "/", Some(789));
        assert_eq!(&buf[..], b"62-789");
        buf.clear();
        write_binary_header(&mut buf, PacketType::BinaryEvent, 1, "/chat", None);
        assert_eq!(&buf[..], b"51-/chat,");
    }
}
