//! The pure wire codec: Engine.IO v4 packets, Socket.IO v5 packets and
//! pre-built WebSocket frames. No tokio, no I/O: everything here is a function
//! of its input, tested against literal wire strings from the protocol specs.

pub mod engineio;
pub mod frame;
pub mod json;
pub mod socketio;

pub use frame::Frame;

/// Errors of decoding a packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet is empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not a known packet type.
    #[error("unknown packet type {0:?}")]
    UnknownPacketType(char),
    /// The attachment count of a binary packet is missing or malformed.
    #[error("malformed attachment count")]
    BadAttachments,
    /// The namespace is not terminated by a comma.
    #[error("malformed namespace")]
    BadNamespace,
    /// The ack id does not fit in 64 bits.
    #[error("ack id out of range")]
    BadAckId,
    /// The payload does not have the shape this packet type needs.
    #[error("payload of the wrong shape for {0}")]
    BadPayload(&'static str),
    /// A long-polling body is not UTF-8.
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// A binary packet of a long-polling body is not base64.
    #[error("binary packet is not base64")]
    BadBase64,
}
