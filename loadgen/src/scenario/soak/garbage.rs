//! Garbage: what a hostile or broken client sends, one kind per client, and
//! how the server reacted.
//!
//! Each kind is sent at the stage where it does the most harm: before the
//! HTTP upgrade, after it but before authentication, or from an
//! authenticated socket. The reaction (an HTTP status, a close and its
//! code, an `error` event, an ack, or nothing within a few seconds) is the
//! outcome; none is judged here, since refusing is the point and protocols
//! allow several answers. What matters to the soak is that the server
//! survives them all and its gauges come back.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::faults::Faults;
use crate::client::{ConnectError, Connection, Incoming, Tuning};
use crate::token::Flaw;
use crate::wire::{self, Namespace, Packet, keys};
use crate::ws::Opcode;

/// Longest wait for the server's reaction to one piece of garbage.
const REACTION_WAIT: Duration = Duration::from_secs(3);
/// Nesting depth of the deeply nested JSON (tens of KB, far under maxPayload).
const NESTING_DEPTH: usize = 10_000;
/// Bytes of the oversized request head's padding header.
const OVERSIZED_HEAD_BYTES: usize = 256 << 10;
/// Binary attachments sent after an absurd announcement, and their size.
const ATTACHMENT_FRAMES: usize = 8;
const ATTACHMENT_BYTES: usize = 64 << 10;
/// Size of each of the ten attachments an unauthenticated client sends.
const LARGE_ATTACHMENT_BYTES: usize = 256 << 10;

/// One kind of garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    /// Random bytes instead of an HTTP request.
    RandomBytes,
    /// A WebSocket upgrade whose head is a few hundred KiB.
    OversizedHead,
    /// Random bytes, unframed, after the upgrade.
    UnframedBytes,
    /// A binary frame of random bytes where Engine.IO expects text.
    BinaryNoise,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// A text frame that is no Engine.IO packet.
    BadEngineIo,
    /// A Socket.IO packet cut short.
    BadSocketIo,
    /// A CONNECT whose auth payload nests arrays ten thousand deep.
    DeepNestingConnect,
    /// An event from an authenticated socket nesting ten thousand deep.
    DeepNestingEvent,
    /// Before authentication, a binary event announcing billions of
    /// attachments, then large binary frames.
    AbsurdAttachments,
    /// Before authentication, a binary event with ten attachments (what
    /// socket.io allows) of 256 KiB each: megabytes to buffer for a client
    /// nobody knows.
    UnauthenticatedAttachments,
    /// A room id with a lone UTF-16 surrogate escape.
    LoneSurrogate,
    /// A room id that is a number beyond any float.
    HugeNumber,
    /// A room id given twice in one object.
    DuplicateKeys,
    /// A WebSocket close with a code no endpoint may send (999).
    BadCloseCode,
    /// A validly signed token whose `exp` is `1e19`.
    AbsurdExpiry,
}

impl Garbage {
    /// Every kind, in the order clients take them.
    pub const ALL: [Garbage; 16] = [
        Garbage::RandomBytes,
        Garbage::DeepNestingConnect,
        Garbage::LoneSurrogate,
        Garbage::AbsurdAttachments,
        Garbage::BadEngineIo,
        Garbage::DeepNestingEvent,
        Garbage::OversizedHead,
        Garbage::InvalidUtf8,
        Garbage::HugeNumber,
        Garbage::BadSocketIo,
        Garbage::BinaryNoise,
        Garbage::DuplicateKeys,
        Garbage::UnframedBytes,
        Garbage::BadCloseCode,
        Garbage::AbsurdExpiry,
        Garbage::UnauthenticatedAttachments,
    ];

    /// The kind named `name` (as in the report).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The name in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Garbage::RandomBytes => "random-bytes",
            Garbage::OversizedHead => "oversized-head",
            Garbage::UnframedBytes => "unframed-bytes",
            Garbage::BinaryNoise => "binary-noise",
            Garbage::InvalidUtf8 => "invalid-utf8",
            Garbage::BadEngineIo => "bad-engineio",
            Garbage::BadSocketIo => "bad-socketio",
            Garbage::DeepNestingConnect => "deep-nesting-connect",
            Garbage::DeepNestingEvent => "deep-nesting-event",
            Garbage::AbsurdAttachments => "absurd-attachments",
            Garbage::UnauthenticatedAttachments => "unauthenticated-attachments",
            Garbage::LoneSurrogate => "lone-surrogate",
            Garbage::HugeNumber => "huge-number",
            Garbage::DuplicateKeys => "duplicate-keys",
            Garbage::BadCloseCode => "close-code-999",
            Garbage::AbsurdExpiry => "exp-1e19",
        }
    }
}

/// Sends garbage of `kind` as client `id` (`n`-th of its kind); the outcome
/// is `"<kind>: <reaction>"`.
pub async fn send(faults: &Faults, kind: Garbage, id: u32, n: u64) -> String {
    let mut noise = Noise::new(u64::from(id) ^ n.rotate_left(32));
    let reaction = match kind {
        Garbage::RandomBytes => {
            let mut bytes = noise.bytes(512);
            bytes.extend_from_slice(b"\r\n\r\n");
            raw_http(faults, &bytes).await
        }
        Garbage::OversizedHead => raw_http(faults, &oversized_head(faults)).await,
        Garbage::AbsurdExpiry => absurd_expiry(faults, id).await,
        Garbage::DeepNestingEvent | Garbage::LoneSurrogate | Garbage::HugeNumber | Garbage::DuplicateKeys => {
            authenticated(faults, id, kind).await
        }
        _ => unauthenticated(faults, id, kind, &mut noise).await,
    };
    format!("{}: {reaction}", kind.name())
}

/// Writes `request` on a fresh TCP connection and reads the status line.
async fn raw_http(faults: &Faults, request: &[u8]) -> String {
    let target = &faults.harness.shared.target;
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(REACTION_WAIT, TcpStream::connect(target.first().addr())).await
    else {
        return "connect failed".to_owned();
    };
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut head = Vec::new();
    let read = tokio::time::timeout(REACTION_WAIT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return "no reaction".to_owned();
    }
    let head = String::from_utf8_lossy(&head);
    match head.split_ascii_whitespace().nth(1) {
        Some(status) if head.starts_with("HTTP/") => format!("HTTP {status}"),
        _ => "closed".to_owned(),
    }
}

fn oversized_head(faults: &Faults) -> Vec<u8> {
    let target = &faults.harness.shared.target;
    let mut head = format!(
        "GET {}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nX-Padding: ",
        target.path(),
        target.first().authority()
    );
    head.extend(std::iter::repeat_n('a', OVERSIZED_HEAD_BYTES));
    head.push_str("\r\n\r\n");
    head.into_bytes()
}

/// Upgrades without authenticating, then sends `kind`.
async fn unauthenticated(faults: &Faults, id: u32, kind: Garbage, noise: &mut Noise) -> String {
    let target = &faults.harness.shared.target;
    let tuning = Tuning::default();
    let upgrade = Connection::upgrade(target, id, None, &tuning);
    let mut conn = match tokio::time::timeout(target.connect_timeout(), upgrade).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return format!("upgrade failed: {}", e.kind()),
        Err(_) => return "upgrade failed: timeout".to_owned(),
    };
    let namespace = &target.namespace;
    let sent = match kind {
        Garbage::UnframedBytes => conn.send_bytes(&noise.bytes(256)).await,
        Garbage::BinaryNoise => conn.send_raw(Opcode::Binary, &noise.bytes(1024)).await,
        Garbage::InvalidUtf8 => {
            let mut bytes = noise.bytes(64);
            bytes.extend_from_slice(&[0xC3, 0x28, 0xFF, 0xFE]);
            conn.send_raw(Opcode::Text, &bytes).await
        }
        Garbage::BadEngineIo => conn.send("9\u{2603}not engine.io").await,
        Garbage::BadSocketIo => {
            conn.send(&format!("42{}[\"send_message\",{{\"content\":", prefix(namespace))).await
        }
        Garbage::DeepNestingConnect => {
            let mut frame = format!("40{}{{\"token\":", prefix(namespace));
            push_nesting(&mut frame);
            frame.push('}');
            conn.send(&frame).await
        }
        Garbage::AbsurdAttachments => {
            let frame = format!(
                "45999999999-{}[\"send_message\",{{\"_placeholder\":true,\"num\":0}}]",
                prefix(namespace)
            );
            let mut sent = conn.send(&frame).await;
            let attachment = noise.bytes(ATTACHMENT_BYTES);
            for _ in 0..ATTACHMENT_FRAMES {
                if sent.is_err() {
                    break;
                }
                sent = conn.send_raw(Opcode::Binary, &attachment).await;
            }
            sent
        }
        Garbage::UnauthenticatedAttachments => {
            let frame =
                format!("4510-{}[\"send_message\",{{\"_placeholder\":true,\"num\":0}}]", prefix(namespace));
            let mut sent = conn.send(&frame).await;
            let attachment = noise.bytes(LARGE_ATTACHMENT_BYTES);
            for _ in 0..10 {
                if sent.is_err() {
                    break;
                }
                sent = conn.send_raw(Opcode::Binary, &attachment).await;
            }
            sent
        }
        Garbage::BadCloseCode => conn.send_raw(Opcode::Close, &999u16.to_be_bytes()).await,
        other => return format!("not an unauthenticated kind: {}", other.name()),
    };
    let reaction = match sent {
        Ok(()) => react(&mut conn, namespace).await,
        Err(_) => "closed while sending".to_owned(),
    };
    conn.abort();
    reaction
}

/// Connects with a valid token, then sends `kind` as an event with an ack id.
async fn authenticated(faults: &Faults, id: u32, kind: Garbage) -> String {
    let target = &faults.harness.shared.target;
    let token = match target.minter.mint(id) {
        Ok(token) => token,
        Err(e) => return format!("minting: {e}"),
    };
    let mut conn = match Connection::open(target, id, &token).await {
        Ok(conn) => conn,
        Err(e) => return format!("connect failed: {}", e.kind()),
    };
    let namespace = &target.namespace;
    let head = format!("42{}1", prefix(namespace));
    let frame = match kind {
        Garbage::DeepNestingEvent => {
            let mut frame = format!("{head}[\"send_message\",");
            push_nesting(&mut frame);
            frame.push(']');
            frame
        }
        Garbage::LoneSurrogate => format!("{head}[\"join_room\",{{\"roomId\":\"\\ud800z\"}}]"),
        Garbage::HugeNumber => format!("{head}[\"join_room\",{{\"roomId\":1e999999}}]"),
        Garbage::DuplicateKeys => {
            format!("{head}[\"join_room\",{{\"roomId\":\"soak-dup-{id}-a\",\"roomId\":\"soak-dup-{id}-b\"}}]")
        }
        other => return format!("not an authenticated kind: {}", other.name()),
    };
    let reaction = match conn.send(&frame).await {
        Ok(()) => react(&mut conn, namespace).await,
        Err(_) => "closed while sending".to_owned(),
    };
    conn.abort();
    reaction
}

async fn absurd_expiry(faults: &Faults, id: u32) -> String {
    let target = &faults.harness.shared.target;
    let token = match target.minter.mint_flawed(id, Flaw::AbsurdExpiry) {
        Ok(token) => token,
        Err(e) => return format!("minting: {e}"),
    };
    match Connection::open(target, id, &token).await {
        Ok(conn) => {
            conn.abort();
            "admitted".to_owned()
        }
        Err(ConnectError::Refused(message)) => format!("refused: {message}"),
        Err(e) => format!("failed: {}", e.kind()),
    }
}

/// The server's first answer to what was just sent, or its silence.
async fn react(conn: &mut Connection, namespace: &Namespace) -> String {
    let deadline = tokio::time::Instant::now() + REACTION_WAIT;
    loop {
        loop {
            match conn.next_buffered() {
                Ok(Some(Incoming::Text(text))) => {
                    if let Some(reaction) = classify(text, namespace) {
                        return reaction;
                    }
                }
                Ok(Some(Incoming::Closed)) => {
                    return match conn.close_code() {
                        Some(code) => format!("closed {code}"),
                        None => "closed".to_owned(),
                    };
                }
                Ok(None) => break,
                Err(e) => return format!("bad frame from server: {e}"),
            }
        }
        match tokio::time::timeout_at(deadline, conn.fill()).await {
            Err(_) => return "no reaction".to_owned(),
            Ok(Err(_)) => return "connection reset".to_owned(),
            Ok(Ok(())) => {}
        }
    }
}

/// A reaction worth reporting in `text`, if any (notices are not).
fn classify(text: &str, namespace: &Namespace) -> Option<String> {
    let code =
        |args: &str| wire::number_field(args, keys::CODE).map_or_else(String::new, |c| format!(" {c}"));
    match wire::scan(text, namespace) {
        Packet::ConnectError(payload) => {
            Some(format!("connect error: {}", wire::string_field(payload, keys::MESSAGE).unwrap_or(payload)))
        }
        Packet::Event { name: "error", args, .. } => Some(format!("error{}", code(args))),
        Packet::Ack { args, .. } if wire::has_field(args, keys::ERROR) => {
            Some(format!("ack error{}", code(args)))
        }
        Packet::Ack { args, .. } => match wire::string_field(args, keys::ROOM_ID) {
            Some(room) => Some(format!("ack ok ({})", room.rsplit('-').next().unwrap_or(room))),
            None => Some("ack ok".to_owned()),
        },
        Packet::Disconnected => Some("disconnected".to_owned()),
        Packet::Close => Some("closed (engine.io)".to_owned()),
        _ => None,
    }
}

/// The namespace as written before a payload, comma included: empty for `/`.
fn prefix(namespace: &Namespace) -> String {
    if namespace.name() == "/" { String::new() } else { format!("{},", namespace.name()) }
}

fn push_nesting(out: &mut String) {
    out.reserve(2 * NESTING_DEPTH);
    out.extend(std::iter::repeat_n('[', NESTING_DEPTH));
    out.extend(std::iter::repeat_n(']', NESTING_DEPTH));
}

/// Cheap reproducible noise (xorshift64).
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&crate::noise::xorshift64(&mut self.0).to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_taken_once_per_round() {
        let mut names: Vec<&str> = Garbage::ALL.iter().map(|kind| kind.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Garbage::ALL.len());
        assert_eq!(Garbage::from_name("deep-nesting-event"), Some(Garbage::DeepNestingEvent));
        assert_eq!(Garbage::from_name("deep nesting"), None);
    }

    #[test]
    fn reactions_are_read_from_the_server_frames() {
        let ns = Namespace::new("/api/v1/chat");
        let ack = r#"43/api/v1/chat,1[{"error":{"code":400,"message":"bad"}}]"#;
        assert_eq!(classify(ack, &ns).as_deref(), Some("ack error 400"));
        let ok = r#"43/api/v1/chat,1[{"roomId":"soak-dup-7-b","members":1}]"#;
        assert_eq!(classify(ok, &ns).as_deref(), Some("ack ok (b)"));
        let refused = r#"44/api/v1/chat,{"message":"Unauthorized","data":{"code":401}}"#;
        assert_eq!(classify(refused, &ns).as_deref(), Some("connect error: Unauthorized"));
        let notice = r#"42/api/v1/chat,["user_joined",{"userId":5,"roomId":"r","timestamp":1}]"#;
        assert_eq!(classify(notice, &ns), None);
        assert_eq!(prefix(&ns), "/api/v1/chat,");
        assert_eq!(prefix(&Namespace::new("/")), "");
        let mut nested = String::new();
        push_nesting(&mut nested);
        assert_eq!(nested.len(), 2 * NESTING_DEPTH);
        assert_eq!(Noise::new(1).bytes(13).len(), 13);
    }
}
