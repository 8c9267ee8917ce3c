//! [`Frame`]: one complete, unmasked server-to-client WebSocket frame.
//!
//! A frame is built once, header included, and never changes; cloning it
//! clones a `Bytes` handle, so a broadcast puts the very same bytes into every
//! member's outbox and the writer hands them to `writev` as they are.

#![allow(
    clippy::indexing_slicing,
    reason = "frames are built from buffers sized here (the header slots are reserved first); no index comes from a client"
)]

use bytes::{BufMut, Bytes, BytesMut};

/// The longest header of a server frame: 2 bytes + 8-byte length.
const MAX_HEADER_LEN: usize = 10;

/// First allocation of a frame being built: room for a typical chat event
/// (a `message` is ~230 bytes), so serialization rarely reallocates.
const INITIAL_CAPACITY: usize = 320;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// A complete WebSocket frame, ready to be written to a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// A text frame holding `payload`.
    #[must_use]
    pub fn text(payload: &str) -> Self {
        Self::build(OPCODE_TEXT, |buf| buf.put_slice(payload.as_bytes()))
    }

    /// A binary frame holding `payload`.
    #[must_use]
    pub fn binary(payload: &[u8]) -> Self {
        Self::build(OPCODE_BINARY, |buf| buf.put_slice(payload))
    }

    /// A text frame whose payload `write` appends to the buffer it is given.
    /// The payload is written in place: no copy after serialization.
    ///
    /// `write` must append valid UTF-8 (JSON and ASCII envelopes are).
    #[must_use]
    pub fn build_text(write: impl FnOnce(&mut BytesMut)) -> Self {
        Self::build(OPCODE_TEXT, write)
    }

    /// A close frame with a status code and a short reason (truncated to the
    /// 123 bytes a control frame allows).
    #[must_use]
    pub fn close(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self::build(OPCODE_CLOSE, |buf| {
            buf.put_u16(code);
            buf.put_slice(&reason.as_bytes()[..end]);
        })
    }

    /// A pong answering a WebSocket ping (payload up to 125 bytes).
    #[must_use]
    pub fn pong(payload: &[u8]) -> Self {
        Self::build(OPCODE_PONG, |buf| buf.put_slice(&payload[..payload.len().min(125)]))
    }

    fn build(opcode: u8, write: impl FnOnce(&mut BytesMut)) -> Self {
        let mut buf = BytesMut::with_capacity(INITIAL_CAPACITY);
        buf.put_bytes(0, MAX_HEADER_LEN);
        write(&mut buf);
        let payload_len = buf.len() - MAX_HEADER_LEN;
        let header_len = header_len(payload_len);
        let start = MAX_HEADER_LEN - header_len;
        let header = &mut buf[start..MAX_HEADER_LEN];
        header[0] = FIN | opcode;
        match header_len {
            2 => header[1] = payload_len as u8,
            4 => {
                header[1] = 126;
                header[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                header[1] = 127;
                header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        Self(buf.freeze().slice(start..))
    }

    /// The frame's bytes, header included.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The frame's length on the wire.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty (never true for a built frame).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The payload, without the header.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.0[header_len_of(&self.0)..]
    }
}

/// What a queued frame carries, for a transport that is not WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A text frame: one Engine.IO packet.
    Text,
    /// A binary frame: a binary `message` packet's data.
    Binary,
    /// A control frame (close, pong): WebSocket only.
    Control,
}

/// Splits the bytes of a complete server frame (as queued in an outbox)
/// into its kind and its payload. The payload is a slice of the same
/// buffer: long-polling reuses the bytes a broadcast encoded once.
/// `None` for bytes that are not one whole frame (such as the `101` head of
/// a WebSocket session, which long-polling never queues).
#[must_use]
pub fn split_frame(frame: &Bytes) -> Option<(FrameKind, Bytes)> {
    let first = *frame.first()?;
    let header_len = header_len_of(frame);
    let payload_len = match frame.get(1).map(|len| len & 0x7F)? {
        126 => usize::from(u16::from_be_bytes(frame.get(2..4)?.try_into().ok()?)),
        127 => usize::try_from(u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?)).ok()?,
        short => usize::from(short),
    };
    if frame.len() != header_len.checked_add(payload_len)? || first & FIN == 0 {
        return None;
    }
    let kind = match first & 0x0F {
        OPCODE_TEXT => FrameKind::Text,
        OPCODE_BINARY => FrameKind::Binary,
        _ => FrameKind::Control,
    };
    Some((kind, frame.slice(header_len..)))
}

fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

fn header_len_of(frame: &[u8]) -> usize {
    match frame.get(1).map(|len| len & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text_frame_has_a_two_byte_header() {
        let frame = Frame::text("42[\"chat\",\"hi\"]");
        assert_eq!(&frame.as_bytes()[..2], &[0x81, 15]);
        assert_eq!(frame.payload(), b"42[\"chat\",\"hi\"]");
    }

    #[test]
    fn medium_and_large_frames_use_extended_lengths() {
        let medium = Frame::text(&"x".repeat(300));
        assert_eq!(&medium.as_bytes()[..4], &[0x81, 126, 0x01, 0x2C]);
        assert_eq!(medium.len(), 304);
        let large = Frame::binary(&vec![7u8; 70_000]);
        assert_eq!(&large.as_bytes()[..2], &[0x82, 127]);
        assert_eq!(&large.as_bytes()[2..10], &70_000u64.to_be_bytes());
        assert_eq!(large.payload().len(), 70_000);
    }

    #[test]
    fn close_frame_carries_code_and_truncated_reason() {
        let frame = Frame::close(1009, &"é".repeat(100));
        assert_eq!(frame.as_bytes()[0], 0x88);
        let payload = frame.payload();
        assert_eq!(&payload[..2], &1009u16.to_be_bytes());
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn split_frame_hands_out_the_payload_without_copying() {
        for frame in [Frame::text("4hello"), Frame::text(&"x".repeat(300)), Frame::binary(&vec![7u8; 70_000])]
        {
            let (kind, payload) = split_frame(frame.as_bytes()).expect("a whole frame");
            assert_eq!(&payload[..], frame.payload());
            assert_eq!(payload.as_ptr(), frame.payload().as_ptr(), "the same bytes, not a copy");
            assert_ne!(kind, FrameKind::Control);
        }
        assert_eq!(
            split_frame(Frame::binary(&[1]).as_bytes()).map(|(kind, _)| kind),
            Some(FrameKind::Binary)
        );
        assert_eq!(split_frame(Frame::pong(b"x").as_bytes()).map(|(kind, _)| kind), Some(FrameKind::Control));
        assert_eq!(split_frame(&Bytes::from_static(b"HTTP/1.1 101 Switching Protocols\r\n")), None);
        assert_eq!(split_frame(&Bytes::new()), None);
    }

    #[test]
    fn clones_share_bytes() {
        let frame = Frame::text("4hello");
        let copy = frame.clone();
        assert_eq!(frame.as_bytes().as_ptr(), copy.as_bytes().as_ptr());
    }
}
