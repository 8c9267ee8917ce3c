//! Engine.IO v4 packets as they travel in WebSocket messages.
//!
//! A text message is one packet: a type digit followed by its data
//! (`4hello`). A binary message is a `message` packet whose data is the raw
//! bytes, with no type prefix.

#![warn(clippy::arithmetic_side_effects)]

use super::DecodeError;

/// The server's ping packet.
pub const PING: &str = "2";
/// The server's pong packet, answering a client ping.
pub const PONG: &str = "3";
/// The type digit of a `message` packet.
pub const MESSAGE: u8 = b'4';

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
}

/// Encodes the open packet, the first one the server sends.
#[must_use]
pub fn encode_open(params: &OpenParams<'_>) -> String {
    format!(
        r#"0{{"sid":"{}","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        params.sid, params.ping_interval_ms, params.ping_timeout_ms, params.max_payload
    )
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
        });
        assert_eq!(
            open,
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }
}
