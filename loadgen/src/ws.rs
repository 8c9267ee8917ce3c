//! WebSocket framing (RFC 6455 §5) as a client sees it, without I/O.
//!
//! The upgrade is tungstenite's; after it, [`FrameReader`] scans the frames
//! the server sends straight out of one reusable per-connection buffer, and
//! [`encode_client_frame`] writes the masked frames a client must send. This
//! is the receive hot path: a message is handed out as a slice of the
//! buffer, nothing is allocated or zeroed per frame,
//! and every complete frame of one read is handed out before the next read.
//! Invariant: the buffer only grows past its base capacity for a frame that
//! does not fit, and shrinks back once that frame is consumed; anything the
//! server may not send (masked or reserved-bit frames, a continuation out of
//! place, an oversized or fragmented control frame) is a [`FrameError`].

/// Largest frame payload accepted (tungstenite's default is 16 MiB too).
const MAX_FRAME_BYTES: u64 = 16 << 20;
/// Largest reassembled fragmented message (tungstenite's default).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Longest frame header a server sends: 2 bytes, then a 64-bit length.
const MAX_HEADER_BYTES: usize = 10;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// The next fragment of a fragmented message.
    Continuation = 0x0,
    /// UTF-8 text.
    Text = 0x1,
    /// Binary data.
    Binary = 0x2,
    /// Close, with an optional status code and reason.
    Close = 0x8,
    /// Ping: the peer must answer with a pong carrying the same payload.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Result<Self, FrameError> {
        Ok(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => return Err(FrameError::UnknownOpcode(other)),
        })
    }

    fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// What the server sent that a client must not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A reserved bit is set (no extension was negotiated).
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A server frame with a masking key.
    #[error("masked frame from the server")]
    Masked,
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("fragmented or oversized control frame")]
    BadControlFrame,
    /// A frame or reassembled message above the size limit.
    #[error("frame or message of {0} bytes is too large")]
    TooLarge(u64),
    /// A continuation frame with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new message began before the fragmented one was finished.
    #[error("new message inside a fragmented message")]
    UnfinishedMessage,
    /// A text message that is not UTF-8.
    #[error("text message is not utf-8")]
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    #[error("malformed close frame")]
    BadClose,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// Bytes of header before the payload (2, 4 or 10).
    pub header_len: usize,
    /// Bytes of payload.
    pub payload_len: usize,
}

impl Header {
    /// Parses the header of a server frame at the start of `bytes`;
    /// `Ok(None)` when more bytes are needed to tell.
    ///
    /// # Errors
    /// A header a server must not send; see [`FrameError`].
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>, FrameError> {
        let [first, second, ..] = *bytes else { return Ok(None) };
        if first & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let fin = first & 0x80 != 0;
        let opcode = Opcode::from_bits(first & 0x0F)?;
        if second & 0x80 != 0 {
            return Err(FrameError::Masked);
        }
        let (payload_len, header_len) = match second & 0x7F {
            126 => match bytes.get(2..4) {
                Some(&[high, low]) => (u64::from(u16::from_be_bytes([high, low])), 4),
                _ => return Ok(None),
            },
            127 => match bytes.get(2..10) {
                Some(length) => {
                    (u64::from_be_bytes(length.try_into().expect("slice of eight bytes")), MAX_HEADER_BYTES)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode.is_control() && (!fin || payload_len > 125) {
            return Err(FrameError::BadControlFrame);
        }
        if payload_len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(payload_len));
        }
        let payload_len = usize::try_from(payload_len).map_err(|_| FrameError::TooLarge(payload_len))?;
        Ok(Some(Self { fin, opcode, header_len, payload_len }))
    }

    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// What a message (or control frame) from the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A complete text message; read it with [`FrameReader::text`].
    Text,
    /// A complete binary message.
    Binary,
    /// A ping; answer with a pong carrying the same payload.
    Ping,
    /// A pong.
    Pong,
    /// A close, with the status code if the server gave one.
    Close(Option<u16>),
}

/// One message from the server: its kind and where its payload sits in the
/// reader. Valid until the next [`FrameReader::next_frame`] or
/// [`FrameReader::read_buffer`]. (A descriptor rather than a borrow, so
/// that callers can keep reading in a loop and still return a borrow.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    start: usize,
    end: usize,
    reassembled: bool,
}

/// A fragmented message being put together.
#[derive(Debug)]
struct Fragments {
    kind: Kind,
    payload: Vec<u8>,
    complete: bool,
}

/// Server frames out of one reusable buffer.
///
/// The I/O side appends what it reads to [`FrameReader::read_buffer`] (its
/// spare capacity, never zeroed); [`FrameReader::next_frame`] then hands out each
/// complete message until only a partial frame is left.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// The capacity the buffer keeps between large frames.
    base_capacity: usize,
    /// A fragmented message in progress (rare: allocated only then).
    fragments: Option<Fragments>,
}

impl FrameReader {
    /// A reader with a `base_capacity`-byte buffer that already holds
    /// `initial` (bytes read past the upgrade response).
    pub fn new(base_capacity: usize, initial: &[u8]) -> Self {
        let base_capacity = base_capacity.max(MAX_HEADER_BYTES);
        let mut buf = Vec::with_capacity(base_capacity.max(initial.len()));
        buf.extend_from_slice(initial);
        Self { buf, start: 0, base_capacity, fragments: None }
    }

    /// The buffer to append freshly read bytes to. It has spare capacity
    /// for at least the rest of the frame in progress; consumed bytes are
    /// dropped first, and room grown for an earlier large frame is given back.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            // Typically nothing or part of one small frame is left to move.
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        let frame_len = match Header::parse(&self.buf) {
            Ok(Some(header)) => header.frame_len(),
            // An error is reported by `next_frame`, which sees the same bytes.
            Ok(None) | Err(_) => 0,
        };
        let wanted = frame_len.max(self.base_capacity);
        if self.buf.capacity() > wanted {
            self.buf.shrink_to(wanted);
        }
        if self.buf.capacity() < wanted || self.buf.len() == self.buf.capacity() {
            // Never hand out a full buffer: a zero-byte read means end of stream.
            self.buf.reserve_exact(wanted.saturating_sub(self.buf.len()).max(self.base_capacity));
        }
        &mut self.buf
    }

    /// Bytes received but not handed out yet (at most a partial frame once
    /// [`FrameReader::next_frame`] returned `Ok(None)`).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The buffer's capacity now.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next complete message; `Ok(None)` when the rest is a partial frame.
    ///
    /// # Errors
    /// The server broke the framing rules; the connection is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.fragments.as_ref().is_some_and(|fragments| fragments.complete) {
            self.fragments = None;
        }
        loop {
            let Some(header) = Header::parse(&self.buf[self.start..])? else { return Ok(None) };
            if self.buf.len() - self.start < header.frame_len() {
                return Ok(None);
            }
            let (start, end) = (self.start + header.header_len, self.start + header.frame_len());
            self.start = end;
            let kind = match header.opcode {
                Opcode::Text => Kind::Text,
                Opcode::Binary => Kind::Binary,
                Opcode::Ping => Kind::Ping,
                Opcode::Pong => Kind::Pong,
                Opcode::Close => match self.buf[start..end] {
                    [] => Kind::Close(None),
                    [_] => return Err(FrameError::BadClose),
                    [high, low, ..] => Kind::Close(Some(u16::from_be_bytes([high, low]))),
                },
                Opcode::Continuation => {
                    let Some(fragments) = &mut self.fragments else {
                        return Err(FrameError::UnexpectedContinuation);
                    };
                    let total = fragments.payload.len() + (end - start);
                    if total > MAX_MESSAGE_BYTES {
                        return Err(FrameError::TooLarge(total as u64));
                    }
                    fragments.payload.extend_from_slice(&self.buf[start..end]);
                    if !header.fin {
                        continue;
                    }
                    fragments.complete = true;
                    return Ok(Some(Frame { kind: fragments.kind, start: 0, end: total, reassembled: true }));
                }
            };
            let frame = Frame { kind, start, end, reassembled: false };
            if matches!(kind, Kind::Text | Kind::Binary) {
                if self.fragments.is_some() {
                    return Err(FrameError::UnfinishedMessage);
                }
                if !header.fin {
                    let payload = self.buf[start..end].to_vec();
                    self.fragments = Some(Fragments { kind, payload, complete: false });
                    continue;
                }
            }
            return Ok(Some(frame));
        }
    }

    /// The payload of `frame`, which [`FrameReader::next_frame`] just returned.
    pub fn payload(&self, frame: Frame) -> &[u8] {
        match (&self.fragments, frame.reassembled) {
            (Some(fragments), true) => &fragments.payload[frame.start..frame.end],
            _ => &self.buf[frame.start..frame.end],
        }
    }

    /// The payload of a text `frame` as `&str`. UTF-8 is checked here, not
    /// in [`FrameReader::next_frame`], so that each text is checked once.
    ///
    /// # Errors
    /// [`FrameError::InvalidUtf8`]: the connection must be failed.
    pub fn text(&self, frame: Frame) -> Result<&str, FrameError> {
        std::str::from_utf8(self.payload(frame)).map_err(|_| FrameError::InvalidUtf8)
    }
}

/// Appends one complete (FIN) client frame: header, `mask`, and `payload`
/// masked with it, as RFC 6455 requires of every client frame.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode as u8);
    match payload.len() {
        short @ 0..=125 => out.push(0x80 | short as u8),
        medium @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `bytes` with the repeating `mask`, eight bytes at a time.
fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("chunk of eight bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // Eight is a multiple of four, so the tail starts at mask byte 0.
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned message, for comparing.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn drain(reader: &mut FrameReader, into: &mut Vec<Owned>) -> Result<(), FrameError> {
        while let Some(frame) = reader.next_frame()? {
            into.push(match frame.kind {
                Kind::Text => Owned::Text(reader.text(frame)?.to_owned()),
                Kind::Binary => Owned::Binary(reader.payload(frame).to_vec()),
                Kind::Ping => Owned::Ping(reader.payload(frame).to_vec()),
                Kind::Pong => Owned::Pong,
                Kind::Close(code) => Owned::Close(code),
            });
        }
        Ok(())
    }

    /// Feeds `wire` in reads of at most `chunk` bytes (as a socket would
    /// hand them over), draining after each.
    fn read_in_chunks(wire: &[u8], chunk: usize, capacity: usize) -> Result<Vec<Owned>, FrameError> {
        let mut reader = FrameReader::new(capacity, &[]);
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let buf = reader.read_buffer();
                let room = (buf.capacity() - buf.len()).min(piece.len());
                assert!(room > 0, "read_buffer must leave room to read into");
                buf.extend_from_slice(&piece[..room]);
                piece = &piece[room..];
                drain(&mut reader, &mut out)?;
            }
        }
        assert_eq!(reader.buffered(), 0, "a whole stream leaves nothing behind");
        Ok(out)
    }

    /// Splits `wire` at every byte boundary into two reads.
    fn every_split(wire: &[u8], capacity: usize) -> Result<Vec<Owned>, FrameError> {
        let whole = read_in_chunks(wire, wire.len().max(1), capacity)?;
        for at in 0..=wire.len() {
            let mut reader = FrameReader::new(capacity, &wire[..at]);
            let mut out = Vec::new();
            drain(&mut reader, &mut out)?;
            let mut rest = &wire[at..];
            while !rest.is_empty() {
                let buf = reader.read_buffer();
                let room = (buf.capacity() - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..room]);
                rest = &rest[room..];
                drain(&mut reader, &mut out)?;
            }
            assert_eq!(out, whole, "split at {at}");
        }
        assert_eq!(read_in_chunks(wire, 1, capacity)?, whole, "byte by byte");
        Ok(whole)
    }

    fn text(s: &str) -> Owned {
        Owned::Text(s.to_owned())
    }

    #[test]
    fn scans_literal_frames_split_anywhere() {
        // Engine.IO ping "2", a chat event, a WebSocket ping, a pong, a close 1000.
        let mut wire = vec![0x81, 0x01, b'2'];
        let event = br#"42/api/v1/chat,["message",{"content":"1:2:3|xx"}]"#;
        wire.extend_from_slice(&[0x81, event.len() as u8]);
        wire.extend_from_slice(event);
        wire.extend_from_slice(&[0x89, 0x02, b'h', b'i', 0x8A, 0x00, 0x88, 0x02, 0x03, 0xE8]);
        let expected = vec![
            text("2"),
            text(std::str::from_utf8(event).expect("ascii")),
            Owned::Ping(b"hi".to_vec()),
            Owned::Pong,
            Owned::Close(Some(1000)),
        ];
        for capacity in [16, 64, 4096] {
            assert_eq!(every_split(&wire, capacity), Ok(expected.clone()), "capacity {capacity}");
        }
    }

    #[test]
    fn reads_16_and_64_bit_lengths_and_gives_the_room_back() {
        let medium = "m".repeat(300);
        let long = "l".repeat(70_000);
        let mut wire = vec![0x81, 126, 0x01, 0x2C];
        wire.extend_from_slice(medium.as_bytes());
        wire.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        wire.extend_from_slice(long.as_bytes());
        wire.extend_from_slice(&[0x81, 0x01, b'3']);
        let expected = vec![text(&medium), Owned::Binary(long.into_bytes()), text("3")];
        assert_eq!(read_in_chunks(&wire, 4096, 256), Ok(expected.clone()));
        assert_eq!(every_split(&wire[..4 + 300], 64), Ok(vec![expected[0].clone()]));

        let mut reader = FrameReader::new(256, &wire);
        let mut out = Vec::new();
        drain(&mut reader, &mut out).expect("valid frames");
        assert_eq!(out, expected);
        reader.read_buffer();
        assert_eq!(reader.capacity(), 256, "shrinks back after a large frame");
    }

    #[test]
    fn reassembles_fragments_around_control_frames() {
        // "Hel" + ping + "lo" (continuation, FIN), then a one-frame "!".
        let wire = [0x01, 0x03, b'H', b'e', b'l', 0x89, 0x00, 0x80, 0x02, b'l', b'o', 0x81, 0x01, b'!'];
        assert_eq!(every_split(&wire, 32), Ok(vec![Owned::Ping(Vec::new()), text("Hello"), text("!")]));
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        let cases: [(&[u8], FrameError); 9] = [
            (&[0x81, 0x81, 1, 2, 3, 4, b'x'], FrameError::Masked),
            (&[0xC1, 0x00], FrameError::ReservedBits),
            (&[0x83, 0x00], FrameError::UnknownOpcode(3)),
            (&[0x80, 0x00], FrameError::UnexpectedContinuation),
            (&[0x01, 0x01, b'a', 0x81, 0x01, b'b'], FrameError::UnfinishedMessage),
            (&[0x09, 0x00], FrameError::BadControlFrame),
            (&[0x89, 126, 0x00, 0x7E], FrameError::BadControlFrame),
            (&[0x81, 0x02, 0xC3, 0x28], FrameError::InvalidUtf8),
            (&[0x88, 0x01, 0x03], FrameError::BadClose),
        ];
        for (wire, error) in cases {
            assert_eq!(read_in_chunks(wire, wire.len(), 64), Err(error.clone()), "{wire:?}");
        }
        let huge = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(Header::parse(&huge), Err(FrameError::TooLarge(_))));
        assert_eq!(Header::parse(&[0x81]), Ok(None));
        assert_eq!(Header::parse(&[0x81, 127, 0, 0]), Ok(None));
    }

    #[test]
    fn client_frames_are_masked_with_the_right_length_form() {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        let mut out = Vec::new();
        encode_client_frame(&mut out, Opcode::Text, b"Hello", mask);
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        assert_eq!(out, [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]);
        for (len, header) in [(125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            out.clear();
            encode_client_frame(&mut out, Opcode::Binary, &payload, mask);
            assert_eq!(out.len(), header + 4 + len);
            let key = &out[header..header + 4];
            let unmasked: Vec<u8> =
                out[header + 4..].iter().enumerate().map(|(i, byte)| byte ^ key[i % 4]).collect();
            assert_eq!(unmasked, payload, "length {len}");
        }
        out.clear();
        encode_client_frame(&mut out, Opcode::Pong, b"", mask);
        assert_eq!(out, [0x8A, 0x80, 0x37, 0xFA, 0x21, 0x3D]);
    }
}
