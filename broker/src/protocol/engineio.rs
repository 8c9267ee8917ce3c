//! Engine.IO v4 packets, as they travel in WebSocket messages and in
//! long-polling payloads.
//!
//! A text message is one packet: a type digit followed by its data
//! (`4hello`). A binary message is a `message` packet whose data is the raw
//! bytes, with no type prefix. A long-polling payload (an HTTP body) joins
//! packets with the record separator `\x1e`; a binary packet there is `b`
//! followed by its data in standard base64.

#![warn(clippy::arithmetic_side_effects)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;

/// The server's ping packet.
pub const PING: &str = "2";
/// The server's pong packet, answering a client ping.
pub const PONG: &str = "3";
/// The type digit of a `message` packet.
pub const MESSAGE: u8 = b'4';
/// The close packet.
pub const CLOSE: &str = "1";
/// The noop packet: ends a held long-polling request with nothing in it.
pub const NOOP: &str = "6";
/// The answer to the upgrade probe `2probe`.
pub const PROBE_ANSWER: &str = "3probe";
/// The data of the upgrade probe ping.
pub const PROBE: &str = "probe";
/// Separates packets in a long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A decoded text packet. The data borrows from the received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0`: only ever sent by the server.
    Open,
    /// `1`: the peer closes the session.
    Close,
    /// `2…`: a ping, possibly with data (`2probe`).
    Ping(&'a str),
    /// `3…`: the answer to the server's ping.
    Pong(&'a str),
    /// `4…`: a message for the layer above.
    Message(&'a str),
    /// `5`: transport upgrade; never valid on a WebSocket-only session.
    Upgrade,
    /// `6`: no operation.
    Noop,
}

/// Decodes one text packet.
///
/// # Errors
/// [`DecodeError::Empty`] or [`DecodeError::UnknownPacketType`].
pub fn decode(text: &str) -> Result<Packet<'_>, DecodeError> {
    let first = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    // `get` rather than indexing: a multi-byte first character must be an
    // error, not a panic.
    let data = text.get(1..).unwrap_or("");
    Ok(match first {
        b'0' => Packet::Open,
        b'1' => Packet::Close,
        b'2' => Packet::Ping(data),
        b'3' => Packet::Pong(data),
        b'4' => Packet::Message(data),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        other => return Err(DecodeError::UnknownPacketType(char::from(other))),
    })
}

/// Session parameters announced in the open packet.
#[derive(Debug, Clone, Copy)]
pub struct OpenParams<'a> {
    /// The session id.
    pub sid: &'a str,
    /// Milliseconds between server pings.
    pub ping_interval_ms: u64,
    /// Milliseconds the client has to answer.
    pub ping_timeout_ms: u64,
    /// Largest message the server accepts, in bytes.
    pub max_payload: usize,
    /// Whether the session may upgrade to WebSocket (a long-polling session).
    pub upgradable: bool,
}

/// Encodes the open packet, the first one the server sends.
#[must_use]
pub fn encode_open(params: &OpenParams<'_>) -> String {
    let upgrades = if params.upgradable { r#"["websocket"]"# } else { "[]" };
    format!(
        r#"0{{"sid":"{}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        params.sid, params.ping_interval_ms, params.ping_timeout_ms, params.max_payload
    )
}

/// One packet of a long-polling payload, as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadPacket<'a> {
    /// A text packet (type digit and data), to [`decode`].
    Text(&'a str),
    /// A binary `message` packet's data, decoded from base64.
    Binary(Bytes),
}

/// Splits a long-polling payload into its packets. Each text packet is
/// checked with [`decode`], so a payload either is well-formed as a whole or
/// is refused as a whole.
///
/// # Errors
/// [`DecodeError::NotUtf8`] for a body that is not UTF-8,
/// [`DecodeError::BadBase64`] for a binary packet that is not base64, and
/// whatever [`decode`] says of a text packet (an empty body is
/// [`DecodeError::Empty`]).
pub fn decode_payload(body: &[u8]) -> Result<Vec<PayloadPacket<'_>>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotUtf8)?;
    text.split(char::from(RECORD_SEPARATOR))
        .map(|packet| match packet.strip_prefix('b') {
            Some(encoded) => STANDARD
                .decode(encoded)
                .map(|data| PayloadPacket::Binary(Bytes::from(data)))
                .map_err(|_| DecodeError::BadBase64),
            None => decode(packet).map(|_| PayloadPacket::Text(packet)),
        })
        .collect()
}

/// Appends one text packet to a long-polling payload being built.
pub fn push_text(payload: &mut BytesMut, packet: &[u8]) {
    separate(payload);
    payload.put_slice(packet);
}

/// Appends one binary `message` packet (`b<base64>`) to a long-polling
/// payload being built.
pub fn push_binary(payload: &mut BytesMut, data: &[u8]) {
    separate(payload);
    payload.put_u8(b'b');
    // Encoded in place: no base64 string per packet.
    let start = payload.len();
    let encoded_len = base64::encoded_len(data.len(), true).unwrap_or(0);
    payload.resize(start.saturating_add(encoded_len), 0);
    let written = payload.get_mut(start..).map_or(0, |tail| STANDARD.encode_slice(data, tail).unwrap_or(0));
    payload.truncate(start.saturating_add(written));
}

fn separate(payload: &mut BytesMut) {
    if !payload.is_empty() {
        payload.put_u8(RECORD_SEPARATOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_packet_type() {
        assert_eq!(decode("0"), Ok(Packet::Open));
        assert_eq!(decode("1"), Ok(Packet::Close));
        assert_eq!(decode("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode("3"), Ok(Packet::Pong("")));
        assert_eq!(decode("4hello"), Ok(Packet::Message("hello")));
        assert_eq!(decode("5"), Ok(Packet::Upgrade));
        assert_eq!(decode("6"), Ok(Packet::Noop));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("x"), Err(DecodeError::UnknownPacketType('x')));
        assert_eq!(decode("9"), Err(DecodeError::UnknownPacketType('9')));
        assert!(decode("é").is_err());
    }

    #[test]
    fn open_packet_matches_the_spec_shape() {
        let open = encode_open(&OpenParams {
            sid: "lv_VI97HAXpY6yYWAAAC",
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            max_payload: 1_000_000,
            upgradable: false,
        });
        assert_eq!(
            open,
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let open = encode_open(&OpenParams {
            sid: "lv_VI97HAXpY6yYWAAAC",
            ping_interval_ms: 300,
            ping_timeout_ms: 200,
            max_payload: 1_000_000,
            upgradable: true,
        });
        assert_eq!(
            open,
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn decodes_payloads_of_the_spec() {
        assert_eq!(decode_payload(b"4hello"), Ok(vec![PayloadPacket::Text("4hello")]));
        assert_eq!(
            decode_payload(b"4test1\x1e4test2\x1e4test3"),
            Ok(vec![
                PayloadPacket::Text("4test1"),
                PayloadPacket::Text("4test2"),
                PayloadPacket::Text("4test3")
            ])
        );
        assert_eq!(
            decode_payload(b"4hello\x1ebAQIDBA=="),
            Ok(vec![PayloadPacket::Text("4hello"), PayloadPacket::Binary(Bytes::from_static(&[1, 2, 3, 4]))])
        );
    }

    #[test]
    fn refuses_malformed_payloads() {
        assert_eq!(decode_payload(b"abc"), Err(DecodeError::UnknownPacketType('a')));
        assert_eq!(decode_payload(b""), Err(DecodeError::Empty));
        assert_eq!(decode_payload(b"4a\x1e"), Err(DecodeError::Empty));
        assert_eq!(decode_payload(b"b!!"), Err(DecodeError::BadBase64));
        assert_eq!(decode_payload(&[0x34, 0xff]), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn encodes_payloads_like_the_spec() {
        let mut payload = BytesMut::new();
        push_text(&mut payload, b"4hello");
        push_binary(&mut payload, &[1, 2, 3, 4]);
        push_text(&mut payload, b"2");
        assert_eq!(&payload[..], b"4hello\x1ebAQIDBA==\x1e2");
    }
}
