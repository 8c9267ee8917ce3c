//! `raw-fanout`: the raw reference `bench/compare` runs beside the servers.
//!
//! A bare fan-out server with no protocol beyond what loadgen's `broadcast`
//! scenario needs: it completes the WebSocket upgrade, sends an Engine.IO
//! open, accepts any Socket.IO CONNECT (no JWT check), answers `join_room`
//! and `send_message` acks, and fans each `send_message` out to the sender's
//! room as one pre-built WebSocket text frame shaped like the broker's
//! `message` event (the publisher's `content` copied in as it came, so
//! loadgen can stamp and count it), the same bytes for every member. No
//! pings, no `user_joined`, no limits but a per-connection byte budget.
//!
//! What it keeps of a real server is the part the kernel charges for: one
//! task per connection reading, one writing, and each writer sends every
//! frame queued for it in one `writev`. Its capacity is what this machine
//! allows a fan-out of this shape that day; `bench/compare` reports every
//! server's capacity and p99 as a fraction of it.
//!
//! Listens on `RAW_LISTEN` (default `127.0.0.1:0`) and prints
//! `listening on ADDR`. The invariant: nothing a client sends can panic it;
//! a frame it cannot read closes that connection only.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Largest request head accepted before the upgrade.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// Largest client frame payload; loadgen's are well under 1 KiB.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// Bytes queued for one connection before it is dropped as too slow.
const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Frames handed to one `writev` at most (well under `IOV_MAX`).
const MAX_IOVECS: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::var("RAW_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    let hub = Arc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let hub = Arc::clone(&hub);
                tokio::spawn(async move {
                    // A client that breaks the rules is dropped; there is no one to tell.
                    let _ = serve(stream, hub).await;
                });
            }
            Err(e) => eprintln!("raw-fanout: accept: {e}"),
        }
    }
}

/// Rooms and counters shared by every connection.
#[derive(Debug, Default)]
struct Hub {
    rooms: Mutex<HashMap<Box<str>, Arc<Room>>>,
    next_sid: AtomicU64,
    next_message: AtomicU64,
}

impl Hub {
    fn room(&self, name: &str) -> Arc<Room> {
        let mut rooms = self.rooms.lock();
        Arc::clone(rooms.entry(name.into()).or_insert_with(|| Arc::new(Room::new(name))))
    }
}

/// A room: its name and its members' outboxes.
#[derive(Debug)]
struct Room {
    name: Box<str>,
    members: RwLock<Vec<Arc<Outbox>>>,
}

impl Room {
    fn new(name: &str) -> Self {
        Self { name: name.into(), members: RwLock::new(Vec::new()) }
    }

    fn leave(&self, outbox: &Arc<Outbox>) {
        self.members.write().retain(|member| !Arc::ptr_eq(member, outbox));
    }
}

/// Frames waiting for one connection's writer.
#[derive(Debug, Default)]
struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    frames: Vec<Bytes>,
    bytes: usize,
    closed: bool,
}

impl Outbox {
    /// Queues `frame`, waking the writer if it was idle; over the byte
    /// budget the connection is closed instead.
    fn push(&self, frame: Bytes) {
        let mut queue = self.queue.lock();
        if queue.closed {
            return;
        }
        if queue.bytes + frame.len() > MAX_QUEUED_BYTES {
            // Too slow: what is queued is dropped with the connection.
            queue.closed = true;
            queue.frames.clear();
        } else {
            queue.bytes += frame.len();
            queue.frames.push(frame);
            if queue.frames.len() > 1 {
                return; // the writer was woken for the first one
            }
        }
        drop(queue);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.queue.lock().closed = true;
        self.ready.notify_one();
    }
}

/// One connection: upgrade, then read frames until the client goes.
async fn serve(mut stream: TcpStream, hub: Arc<Hub>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        anyhow::ensure!(buf.len() < MAX_HEAD_BYTES, "request head too large");
        anyhow::ensure!(stream.read_buf(&mut buf).await? > 0, "closed before the upgrade");
    };
    let Some(key) = websocket_key(&buf[..head_end]) else {
        stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await?;
        return Ok(());
    };
    let _ = buf.split_to(head_end);
    let sid = hub.next_sid.fetch_add(1, Ordering::Relaxed);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    let open = format!(
        "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
    );
    response.extend_from_slice(&text_frame(open.as_bytes()));
    stream.write_all(&response).await?;

    let (mut reader, writer) = stream.into_split();
    let outbox = Arc::new(Outbox::default());
    tokio::spawn(write_loop(writer, Arc::clone(&outbox)));
    let mut conn = Conn { hub, outbox, sid, room: None };
    let read = read_loop(&mut reader, &mut buf, &mut conn).await;
    if let Some(room) = conn.room.take() {
        room.leave(&conn.outbox);
    }
    conn.outbox.close();
    read
}

/// A connection's state on its reading side.
struct Conn {
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    sid: u64,
    /// The room joined last: where `send_message` goes.
    room: Option<Arc<Room>>,
}

async fn read_loop(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    conn: &mut Conn,
) -> anyhow::Result<()> {
    loop {
        while let Some(frame) = ClientFrame::parse(buf)? {
            match frame.opcode {
                OPCODE_TEXT => match std::str::from_utf8(&frame.payload) {
                    Ok(text) => conn.on_text(text),
                    Err(_) => anyhow::bail!("text frame is not UTF-8"),
                },
                OPCODE_CLOSE => {
                    conn.outbox.push(Bytes::from_static(&[0x88, 0x00]));
                    return Ok(());
                }
                OPCODE_PING => conn.outbox.push(control_frame(OPCODE_PONG, &frame.payload)),
                _ => {}
            }
        }
        if reader.read_buf(buf).await? == 0 {
            return Ok(());
        }
    }
}

impl Conn {
    /// Handles one Engine.IO text packet.
    fn on_text(&mut self, text: &str) {
        let Some(packet) = text.strip_prefix('4') else { return };
        let Some(event) = SocketIoPacket::parse(packet) else { return };
        let prefix = event.namespace_prefix();
        match event.kind {
            b'0' => {
                let reply = format!("40{prefix}{{\"sid\":\"{}\"}}", self.sid);
                self.outbox.push(text_frame(reply.as_bytes()));
            }
            b'2' => self.on_event(&event, &prefix),
            _ => {}
        }
    }

    fn on_event(&mut self, event: &SocketIoPacket<'_>, prefix: &str) {
        let answer = match event.name() {
            Some("join_room") => {
                let Some(name) = string_field(event.data, "roomId") else { return };
                let room = self.hub.room(name);
                if !self.room.as_ref().is_some_and(|current| Arc::ptr_eq(current, &room)) {
                    room.members.write().push(Arc::clone(&self.outbox));
                }
                let answer = format!("{{\"roomId\":\"{}\"}}", room.name);
                self.room = Some(room);
                answer
            }
            Some("send_message") => {
                let (Some(room), Some(content)) = (&self.room, json_string_at(event.data, "content")) else {
                    return;
                };
                let id = self.hub.next_message.fetch_add(1, Ordering::Relaxed);
                let now = unix_ms();
                let payload = format!(
                    "42{prefix}[\"message\",{{\"id\":\"{id}\",\"roomId\":\"{}\",\"content\":{content},\
                     \"senderId\":{},\"timestamp\":{now}}}]",
                    room.name, self.sid
                );
                let frame = text_frame(payload.as_bytes());
                for member in room.members.read().iter() {
                    member.push(frame.clone());
                }
                format!("{{\"id\":\"{id}\",\"timestamp\":{now}}}")
            }
            _ => "{}".to_owned(),
        };
        if let Some(ack) = event.ack {
            self.outbox.push(text_frame(format!("43{prefix}{ack}[{answer}]").as_bytes()));
        }
    }
}

/// Writes whatever is queued, all of it in one `writev` when it fits,
/// until the outbox closes or the socket fails.
async fn write_loop(mut writer: OwnedWriteHalf, outbox: Arc<Outbox>) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        {
            let mut queue = outbox.queue.lock();
            if queue.closed && queue.frames.is_empty() {
                return;
            }
            std::mem::swap(&mut queue.frames, &mut batch);
            queue.bytes = 0;
        }
        if batch.is_empty() {
            outbox.ready.notified().await;
            continue;
        }
        if write_all_vectored(&mut writer, &batch).await.is_err() {
            outbox.close();
            return;
        }
        batch.clear();
    }
}

async fn write_all_vectored(writer: &mut OwnedWriteHalf, frames: &[Bytes]) -> std::io::Result<()> {
    let (mut first, mut offset) = (0, 0);
    while first < frames.len() {
        let end = frames.len().min(first + MAX_IOVECS);
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(end - first);
        slices.push(IoSlice::new(frames[first].get(offset..).unwrap_or_default()));
        slices.extend(frames[first + 1..end].iter().map(|frame| IoSlice::new(frame)));
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < frames.len() && written > 0 {
            let left = frames[first].len() - offset;
            if written >= left {
                written -= left;
                first += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    Ok(())
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// A WebSocket frame from a client, unmasked.
#[derive(Debug, PartialEq, Eq)]
struct ClientFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl ClientFrame {
    /// Takes one whole frame off the front of `buf`; `Ok(None)` when more
    /// bytes are needed.
    ///
    /// # Errors
    /// The frame is unmasked or larger than [`MAX_FRAME_BYTES`].
    fn parse(buf: &mut BytesMut) -> anyhow::Result<Option<Self>> {
        let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else { return Ok(None) };
        anyhow::ensure!(second & 0x80 != 0, "client frame not masked");
        let (length, mut at) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
                Some(bytes) => (u64::from_be_bytes(bytes), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let length = usize::try_from(length).ok().filter(|&n| n <= MAX_FRAME_BYTES);
        let length = length.ok_or_else(|| anyhow::anyhow!("client frame too large"))?;
        let Some(mask) = buf.get(at..at + 4).and_then(|bytes| <[u8; 4]>::try_from(bytes).ok()) else {
            return Ok(None);
        };
        at += 4;
        if buf.len() < at + length {
            return Ok(None);
        }
        let frame = buf.split_to(at + length);
        let payload = frame[at..].iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key).collect();
        Ok(Some(Self { opcode: first & 0x0F, payload }))
    }
}

/// A server text frame (unmasked, final) holding `payload`.
fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | OPCODE_TEXT);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A server control frame; `payload` is a client's ping (≤ 125 bytes by
/// RFC 6455, cut there otherwise).
fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let payload = payload.get(..125).unwrap_or(payload);
    let mut frame = vec![0x80 | opcode, payload.len() as u8];
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A Socket.IO packet: type, namespace, ack id, and the JSON after them.
#[derive(Debug, PartialEq, Eq)]
struct SocketIoPacket<'a> {
    kind: u8,
    /// `/api/v1/chat`, or `/` when absent.
    namespace: &'a str,
    ack: Option<u64>,
    /// `["event",{…}]` for an event, `{…}` for a CONNECT.
    data: &'a str,
}

impl<'a> SocketIoPacket<'a> {
    /// Parses `2/ns,17["join_room",{…}]` (the text after Engine.IO's `4`).
    fn parse(packet: &'a str) -> Option<Self> {
        let kind = *packet.as_bytes().first()?;
        let rest = packet.get(1..)?;
        let (namespace, rest) = if rest.starts_with('/') {
            match rest.find(',') {
                Some(comma) => (rest.get(..comma)?, rest.get(comma + 1..)?),
                None => (rest, ""),
            }
        } else {
            ("/", rest)
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack = rest.get(..digits).and_then(|digits| digits.parse().ok());
        Some(Self { kind, namespace, ack, data: rest.get(digits..)? })
    }

    /// `/ns,` as written before a payload, empty for `/`.
    fn namespace_prefix(&self) -> String {
        if self.namespace == "/" { String::new() } else { format!("{},", self.namespace) }
    }

    /// The event name of `["name",…]`.
    fn name(&self) -> Option<&'a str> {
        let rest = self.data.strip_prefix("[\"")?;
        rest.get(..rest.find('"')?)
    }
}

/// The JSON string literal (quotes and escapes kept) that follows
/// `"key":` in `json`; a value that is not a string gives `None`.
fn json_string_at<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let start = json.find(&pattern)? + pattern.len();
    let value = json.get(start..)?.trim_start();
    let skipped = json.len() - start - value.len();
    let bytes = value.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut index = 1;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'\\' => index += 2,
            b'"' => return json.get(start + skipped..start + skipped + index + 1),
            _ => index += 1,
        }
    }
    None
}

/// A string field without escapes (`roomId`), unquoted.
fn string_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let literal = json_string_at(json, key)?;
    let inner = literal.get(1..literal.len() - 1)?;
    (!inner.contains('\\')).then_some(inner)
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The `Sec-WebSocket-Key` of a WebSocket upgrade request head.
fn websocket_key(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head).ok()?.is_complete().then_some(())?;
    let header = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))?;
    std::str::from_utf8(header.value).ok().map(|key| key.trim().to_owned())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
        frame
    }

    #[test]
    fn client_frames_are_unmasked_whole_or_waited_for() {
        let text = "42/api/v1/chat,3[\"send_message\",{\"content\":\"x\"}]";
        let mut bytes = masked(OPCODE_TEXT, text.as_bytes());
        let long = "y".repeat(300);
        bytes.extend(masked(OPCODE_TEXT, long.as_bytes()));
        let mut buf = BytesMut::from(&bytes[..5]);
        assert_eq!(ClientFrame::parse(&mut buf).expect("valid so far"), None, "header only");
        let mut buf = BytesMut::from(&bytes[..]);
        let first = ClientFrame::parse(&mut buf).expect("valid").expect("whole");
        assert_eq!(first, ClientFrame { opcode: OPCODE_TEXT, payload: text.as_bytes().to_vec() });
        let second = ClientFrame::parse(&mut buf).expect("valid").expect("whole");
        assert_eq!(second.payload, long.as_bytes());
        assert!(buf.is_empty());
        let mut unmasked = BytesMut::from(&[0x81, 0x01, b'x'][..]);
        assert!(ClientFrame::parse(&mut unmasked).is_err(), "clients must mask");
        let mut huge = BytesMut::from(&[0x81, 0xFF, 0x7F, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(ClientFrame::parse(&mut huge).is_err(), "over the limit");
    }

    #[test]
    fn server_frames_carry_their_length() {
        assert_eq!(&text_frame(b"40")[..], &[0x81, 2, b'4', b'0']);
        let long = text_frame(&[b'a'; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
        assert_eq!(&control_frame(OPCODE_PONG, b"hi")[..], &[0x8A, 2, b'h', b'i']);
    }

    #[test]
    fn socketio_packets_split_into_namespace_ack_and_event() {
        let join =
            SocketIoPacket::parse("2/api/v1/chat,17[\"join_room\",{\"roomId\":\"room-3\"}]").expect("parses");
        assert_eq!((join.kind, join.namespace, join.ack), (b'2', "/api/v1/chat", Some(17)));
        assert_eq!(join.name(), Some("join_room"));
        assert_eq!(join.namespace_prefix(), "/api/v1/chat,");
        assert_eq!(string_field(join.data, "roomId"), Some("room-3"));
        let connect = SocketIoPacket::parse("0/api/v1/chat,{\"token\":\"a.b.c\"}").expect("parses");
        assert_eq!((connect.kind, connect.ack, connect.data), (b'0', None, "{\"token\":\"a.b.c\"}"));
        let root = SocketIoPacket::parse("2[\"x\"]").expect("parses");
        assert_eq!((root.namespace, root.namespace_prefix(), root.name()), ("/", String::new(), Some("x")));
        assert_eq!(SocketIoPacket::parse(""), None);
        assert!(SocketIoPacket::parse("0/ns").is_some_and(|p| p.namespace == "/ns" && p.data.is_empty()));
    }

    #[test]
    fn content_is_copied_as_the_json_literal_it_came_as() {
        let data = r#"["send_message",{"content": "3:17:99|x\"y\\","roomId":"a"}]"#;
        assert_eq!(json_string_at(data, "content"), Some(r#""3:17:99|x\"y\\""#));
        assert_eq!(json_string_at(r#"{"content":5}"#, "content"), None);
        assert_eq!(json_string_at(r#"{"content":"unterminated"#, "content"), None);
        assert_eq!(json_string_at(r#"{"content":"ends in \"#, "content"), None);
        assert_eq!(string_field(r#"{"roomId":"a\"b"}"#, "roomId"), None, "escapes are not for room names");
    }

    #[test]
    fn the_upgrade_key_is_read_from_the_head() {
        let head = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(websocket_key(head).as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(websocket_key(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(find(head, b"\r\n\r\n"), Some(head.len() - 4));
    }

    #[test]
    fn a_full_outbox_closes_instead_of_growing() {
        let outbox = Outbox::default();
        outbox.push(Bytes::from(vec![0; MAX_QUEUED_BYTES - 1]));
        outbox.push(Bytes::from_static(b"ab"));
        let queue = outbox.queue.lock();
        assert!(queue.closed && queue.frames.is_empty(), "the slow client's frames are dropped");
    }
}
