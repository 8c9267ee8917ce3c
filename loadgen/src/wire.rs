//! Engine.IO v4 / Socket.IO v5 text frames as a chat client sees them.
//!
//! Owns encoding the handful of frames the load generator sends and scanning
//! the ones it receives. Scanning never allocates and never runs a JSON
//! parser: it walks the frame once and hands back borrowed slices. It knows
//! nothing about sockets or timing. Invariant: every function here accepts
//! any input without panicking; a frame it does not understand is
//! [`Packet::Other`], not an error that kills the connection.

use std::fmt::Write as _;

/// A Socket.IO namespace and its wire prefix (`/api/v1/chat,`, or empty for `/`).
#[derive(Debug, Clone)]
pub struct Namespace {
    name: String,
    prefix: String,
}

impl Namespace {
    /// Creates a namespace; `name` must start with `/`.
    pub fn new(name: &str) -> Self {
        let name = if name.starts_with('/') { name.to_owned() } else { format!("/{name}") };
        let prefix = if name == "/" { String::new() } else { format!("{name},") };
        Self { name, prefix }
    }

    /// The namespace as configured, e.g. `/api/v1/chat`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Socket.IO CONNECT frame, with the token in its payload when given.
    pub fn connect_frame(&self, token: Option<&str>) -> String {
        self.resuming_connect_frame(token, None)
    }

    /// The CONNECT frame of a client that reconnects: with `resume`, its
    /// payload starts with `pid` and `offset` and the auth fields follow, as
    /// socket.io-client writes `Object.assign({pid, offset}, auth)` (an
    /// offset it never got is left out, as `JSON.stringify` drops
    /// `undefined`).
    pub fn resuming_connect_frame(&self, token: Option<&str>, resume: Option<Resume<'_>>) -> String {
        let mut frame = format!("40{}", self.prefix);
        if token.is_none() && resume.is_none() {
            return frame;
        }
        frame.push('{');
        let mut fields = 0;
        let mut field = |frame: &mut String, key: &str, value: &str| {
            if fields > 0 {
                frame.push(',');
            }
            fields += 1;
            push_json_string(frame, key);
            frame.push(':');
            push_json_string(frame, value);
        };
        if let Some(resume) = resume {
            field(&mut frame, "pid", resume.pid);
            if let Some(offset) = resume.offset {
                field(&mut frame, "offset", offset);
            }
        }
        if let Some(token) = token {
            field(&mut frame, "token", token);
        }
        frame.push('}');
        frame
    }

    /// The Socket.IO DISCONNECT frame a client sends before closing.
    pub fn disconnect_frame(&self) -> String {
        format!("41{}", self.prefix)
    }

    /// `42<ns>,<ack>["join_room",{"roomId":…}]`.
    pub fn join_frame(&self, ack: Option<u32>, room: &str) -> String {
        self.room_event_frame("join_room", ack, room)
    }

    /// `42<ns>,<ack>["leave_room",{"roomId":…}]`.
    pub fn leave_frame(&self, ack: Option<u32>, room: &str) -> String {
        self.room_event_frame("leave_room", ack, room)
    }

    /// `42<ns>,<ack>["send_message",{"content":…,"roomId":…}]`.
    pub fn send_message_frame(&self, ack: Option<u32>, room: &str, content: &str) -> String {
        let mut frame = String::new();
        self.write_send_message_frame(&mut frame, ack, room, content);
        frame
    }

    /// [`Namespace::send_message_frame`] into `out` (cleared first), so a
    /// publisher can reuse one buffer.
    pub fn write_send_message_frame(&self, out: &mut String, ack: Option<u32>, room: &str, content: &str) {
        out.clear();
        out.reserve(8 + self.prefix.len() + content.len() + room.len() + 48);
        self.write_event_head(out, ack, "send_message");
        out.push_str(",{\"content\":");
        push_json_string(out, content);
        out.push_str(",\"roomId\":");
        push_json_string(out, room);
        out.push_str("}]");
    }

    fn room_event_frame(&self, event: &str, ack: Option<u32>, room: &str) -> String {
        let mut frame = self.event_head(ack, event, room.len() + 16);
        frame.push_str(",{\"roomId\":");
        push_json_string(&mut frame, room);
        frame.push_str("}]");
        frame
    }

    fn event_head(&self, ack: Option<u32>, event: &str, extra: usize) -> String {
        let mut frame = String::with_capacity(8 + self.prefix.len() + event.len() + extra);
        self.write_event_head(&mut frame, ack, event);
        frame
    }

    fn write_event_head(&self, out: &mut String, ack: Option<u32>, event: &str) {
        out.push_str("42");
        out.push_str(&self.prefix);
        if let Some(ack) = ack {
            write!(out, "{ack}").expect("writing to a String cannot fail");
        }
        out.push_str("[\"");
        out.push_str(event);
        out.push('"');
    }
}

/// What a client that reconnects sends to recover its session: the private
/// session id of the CONNECT ack it last got, and the offset of the last
/// event it received (socket.io-client's `_pid` and `_lastOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume<'a> {
    /// `pid` from the last CONNECT ack.
    pub pid: &'a str,
    /// The last argument of the last event received, when it was a string.
    pub offset: Option<&'a str>,
}

/// The fields of a CONNECT ack (`40…{"sid":…,"pid":…}`) a client keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The socket id.
    pub sid: String,
    /// The private session id, present when the server offers connection
    /// state recovery.
    pub pid: Option<String>,
}

impl Accepted {
    /// Reads the ack's payload; fields it lacks stay empty.
    pub fn parse(payload: &str) -> Self {
        Self {
            sid: string_field(payload, keys::SID).unwrap_or_default().to_owned(),
            pid: string_field(payload, keys::PID).filter(|pid| !pid.is_empty()).map(str::to_owned),
        }
    }
}

/// Splits an event's arguments (as [`Packet::Event`] gives them) into the
/// arguments proper and the last one when it is a string: with connection
/// state recovery on, that is the packet's offset (socket.io-client keeps
/// the last argument of every event it receives as its offset when it is a
/// string). The offset is returned raw, as it sits between its quotes.
pub fn split_offset(args: &str) -> (&str, Option<&str>) {
    let trimmed = args.trim_ascii_end();
    let Some(body) = trimmed.strip_suffix('"') else {
        return (args, None);
    };
    // The opening quote is the last one not escaped by an odd number of
    // backslashes: a string holds no other unescaped quote.
    let bytes = body.as_bytes();
    let mut at = bytes.len();
    let open = loop {
        let Some(quote) = bytes[..at].iter().rposition(|&byte| byte == b'"') else {
            return (args, None);
        };
        let backslashes = bytes[..quote].iter().rev().take_while(|&&byte| byte == b'\\').count();
        if backslashes % 2 == 0 {
            break quote;
        }
        at = quote;
    };
    let offset = &body[open + 1..];
    let before = body[..open].trim_ascii_end();
    match before.strip_suffix(',') {
        Some(rest) => (rest.trim_ascii_end(), Some(offset)),
        None if before.is_empty() => ("", Some(offset)),
        // Not a separate argument (cannot happen in valid JSON).
        None => (args, None),
    }
}

/// Appends `value` as a JSON string literal.
pub fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a String cannot fail");
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One received frame, classified. Payload slices borrow from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO OPEN (`0{…}`), with its JSON payload.
    Open(&'a str),
    /// Engine.IO CLOSE (`1`).
    Close,
    /// Engine.IO PING (`2`): the client must answer `3`.
    Ping,
    /// Engine.IO PONG (`3`).
    Pong,
    /// Engine.IO NOOP (`6`).
    Noop,
    /// Socket.IO CONNECT accepted (`40…{"sid":…}`).
    Connected(&'a str),
    /// Socket.IO DISCONNECT (`41…`): the server dropped us from the namespace.
    Disconnected,
    /// Socket.IO CONNECT_ERROR (`44…{"message":…}`).
    ConnectError(&'a str),
    /// Socket.IO EVENT: `name` and the arguments after it (`{…}` for one
    /// object argument, empty when there are none).
    Event {
        /// Ack id the sender asked for.
        ack: Option<u32>,
        /// Event name.
        name: &'a str,
        /// Everything between `"name",` and the closing `]`.
        args: &'a str,
    },
    /// Socket.IO ACK: the id and the argument list without its brackets.
    Ack {
        /// The ack id of the request this answers.
        id: u32,
        /// Everything between `[` and `]`.
        args: &'a str,
    },
    /// A Socket.IO packet for another namespace.
    OtherNamespace,
    /// Anything else (binary packets, upgrades, garbage).
    Other,
}

/// Classifies one text frame for the namespace `ns`.
pub fn scan<'a>(frame: &'a str, ns: &Namespace) -> Packet<'a> {
    let bytes = frame.as_bytes();
    match bytes.first() {
        Some(b'0') => Packet::Open(&frame[1..]),
        Some(b'1') => Packet::Close,
        Some(b'2') => Packet::Ping,
        Some(b'3') => Packet::Pong,
        Some(b'6') => Packet::Noop,
        Some(b'4') => scan_socketio(&frame[1..], ns),
        _ => Packet::Other,
    }
}

fn scan_socketio<'a>(packet: &'a str, ns: &Namespace) -> Packet<'a> {
    let Some(&kind) = packet.as_bytes().first() else {
        return Packet::Other;
    };
    let rest = &packet[1..];
    // Namespace: `/name,` before the payload; absent means `/`.
    let rest = if rest.starts_with('/') {
        // `/name` up to the first `,` (or the end) must be ours.
        if !has_prefix(rest.as_bytes(), ns.name().as_bytes()) {
            return Packet::OtherNamespace;
        }
        match rest.as_bytes().get(ns.name().len()) {
            None => "",
            Some(b',') => &rest[ns.name().len() + 1..],
            Some(_) => return Packet::OtherNamespace,
        }
    } else {
        if ns.name() != "/" {
            return Packet::OtherNamespace;
        }
        rest
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 { rest[..digits].parse::<u32>().ok() } else { None };
    let payload = &rest[digits..];
    match kind {
        b'0' => Packet::Connected(payload),
        b'1' => Packet::Disconnected,
        b'4' => Packet::ConnectError(payload),
        b'2' => scan_event(ack, payload),
        b'3' => match (ack, strip_brackets(payload)) {
            (Some(id), Some(args)) => Packet::Ack { id, args },
            _ => Packet::Other,
        },
        _ => Packet::Other,
    }
}

fn scan_event(ack: Option<u32>, payload: &str) -> Packet<'_> {
    let Some(inner) = strip_brackets(payload) else {
        return Packet::Other;
    };
    let Some(after_quote) = inner.strip_prefix('"') else {
        return Packet::Other;
    };
    // Event names are short: a plain loop beats a memchr call.
    let Some(end) = after_quote.bytes().position(|byte| byte == b'"') else {
        return Packet::Other;
    };
    let name = &after_quote[..end];
    let args = after_quote[end + 1..].trim_ascii_start();
    let args = args.strip_prefix(',').unwrap_or(args).trim_ascii_start();
    Packet::Event { ack, name, args }
}

/// `[…]` → `…`, tolerating trailing whitespace.
fn strip_brackets(payload: &str) -> Option<&str> {
    payload.trim_ascii_end().strip_prefix('[')?.strip_suffix(']')
}

/// Whether `bytes` starts with `prefix`. The frames' strings are short, so
/// an inline loop that stops at the first difference beats a `memcmp` call.
fn has_prefix(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The string value of the first `"key":"…"` in `json`, raw (escapes kept).
/// `key_pattern` is the key with its quotes, e.g. `"\"content\""`.
pub fn string_field<'a>(json: &'a str, key_pattern: &str) -> Option<&'a str> {
    let value = value_after(json, key_pattern)?;
    let body = value.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(&body[..i]),
            _ => i += 1,
        }
    }
    None
}

/// Everything after the opening quote of the first `"key":"…"` string in
/// `json`, without looking for the closing quote: for reading a prefix of a
/// long string (the message stamp) without scanning all of it.
pub fn string_start<'a>(json: &'a str, key_pattern: &str) -> Option<&'a str> {
    value_after(json, key_pattern)?.strip_prefix('"')
}

/// The unsigned integer value of the first `"key":N` in `json`; a value
/// written as a string of digits (`"key":"42"`) is accepted too, since a
/// JWT `sub` may be either.
pub fn number_field(json: &str, key_pattern: &str) -> Option<u64> {
    let value = value_after(json, key_pattern)?;
    let value = value.strip_prefix('"').unwrap_or(value);
    parse_leading_u64(value)
}

/// Whether `json` has a `"key":` anywhere.
pub fn has_field(json: &str, key_pattern: &str) -> bool {
    value_after(json, key_pattern).is_some()
}

fn value_after<'a>(json: &'a str, key_pattern: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + find(&json[from..], key_pattern)?;
        let after = json[at + key_pattern.len()..].trim_ascii_start();
        if let Some(value) = after.strip_prefix(':') {
            return Some(value.trim_ascii_start());
        }
        // The pattern occurred as a value, not a key; keep looking.
        from = at + key_pattern.len();
    }
}

/// Where `needle` first occurs in `haystack`. Frames are short, and
/// `str::find` sets up a two-way searcher per call, which costs more than
/// the search; this looks (memchr) for the needle's second byte, the key's
/// first letter, which is much rarer in JSON than its quote, and compares
/// inline from there.
fn find(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    let anchor_at = usize::from(needle.len() > 1);
    let anchor = *needle.get(anchor_at)?;
    if !anchor.is_ascii() {
        return haystack.find(std::str::from_utf8(needle).ok()?);
    }
    haystack.match_indices(char::from(anchor)).find_map(|(hit, _)| {
        let start = hit.checked_sub(anchor_at)?;
        has_prefix(&haystack.as_bytes()[start..], needle).then_some(start)
    })
}

/// Parses the decimal digits at the start of `s`; `None` if there are none
/// or they overflow.
pub fn parse_leading_u64(s: &str) -> Option<u64> {
    let mut value: u64 = 0;
    let mut seen = false;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        seen = true;
    }
    seen.then_some(value)
}

/// Key patterns the receive path scans for.
pub mod keys {
    /// `"content"`.
    pub const CONTENT: &str = "\"content\"";
    /// `"userId"`.
    pub const USER_ID: &str = "\"userId\"";
    /// `"members"`.
    pub const MEMBERS: &str = "\"members\"";
    /// `"error"`.
    pub const ERROR: &str = "\"error\"";
    /// `"code"`.
    pub const CODE: &str = "\"code\"";
    /// `"message"`.
    pub const MESSAGE: &str = "\"message\"";
    /// `"roomId"`.
    pub const ROOM_ID: &str = "\"roomId\"";
    /// `"id"`.
    pub const ID: &str = "\"id\"";
    /// `"sid"`.
    pub const SID: &str = "\"sid\"";
    /// `"pid"`.
    pub const PID: &str = "\"pid\"";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Namespace {
        Namespace::new("/api/v1/chat")
    }

    #[test]
    fn encodes_client_frames_like_the_spec() {
        let ns = chat();
        assert_eq!(ns.connect_frame(None), "40/api/v1/chat,");
        assert_eq!(ns.connect_frame(Some("a.b.c")), r#"40/api/v1/chat,{"token":"a.b.c"}"#);
        assert_eq!(ns.join_frame(Some(7), "r1"), r#"42/api/v1/chat,7["join_room",{"roomId":"r1"}]"#);
        assert_eq!(ns.join_frame(None, "r1"), r#"42/api/v1/chat,["join_room",{"roomId":"r1"}]"#);
        assert_eq!(
            ns.send_message_frame(Some(3), "r1", "1:2:3|x\"y"),
            r#"42/api/v1/chat,3["send_message",{"content":"1:2:3|x\"y","roomId":"r1"}]"#
        );
        assert_eq!(ns.disconnect_frame(), "41/api/v1/chat,");
        let root = Namespace::new("/");
        assert_eq!(root.connect_frame(None), "40");
        assert_eq!(root.join_frame(None, "a"), r#"42["join_room",{"roomId":"a"}]"#);
    }

    #[test]
    fn reconnects_like_the_stock_client() {
        let ns = chat();
        let resume = Resume { pid: "p1", offset: Some("17-0") };
        assert_eq!(
            ns.resuming_connect_frame(Some("a.b"), Some(resume)),
            r#"40/api/v1/chat,{"pid":"p1","offset":"17-0","token":"a.b"}"#
        );
        let no_offset = Resume { pid: "p1", offset: None };
        assert_eq!(ns.resuming_connect_frame(None, Some(no_offset)), r#"40/api/v1/chat,{"pid":"p1"}"#);
        assert_eq!(ns.resuming_connect_frame(None, None), "40/api/v1/chat,");
        assert_eq!(
            Accepted::parse(r#"{"sid":"s1","pid":"p1"}"#),
            Accepted { sid: "s1".to_owned(), pid: Some("p1".to_owned()) }
        );
        assert_eq!(Accepted::parse(r#"{"sid":"s1"}"#).pid, None);
    }

    #[test]
    fn splits_the_offset_off_an_events_arguments() {
        assert_eq!(split_offset(r#"{"id":"1"},"42""#), (r#"{"id":"1"}"#, Some("42")));
        assert_eq!(split_offset(r#"{"a":"x\"y"} , "MzQ-1" "#), (r#"{"a":"x\"y"}"#, Some("MzQ-1")));
        // An escaped quote inside the offset, and one ending in a backslash.
        assert_eq!(split_offset(r#"{},"a\"b""#), ("{}", Some(r#"a\"b"#)));
        assert_eq!(split_offset(r#"{},"a\\""#), ("{}", Some(r#"a\\"#)));
        assert_eq!(split_offset(r#""only""#), ("", Some("only")));
        // Without a trailing string there is no offset.
        assert_eq!(split_offset(r#"{"content":"x"}"#), (r#"{"content":"x"}"#, None));
        assert_eq!(split_offset(""), ("", None));
        assert_eq!(split_offset(r#"""#), (r#"""#, None));
        assert_eq!(split_offset(r#"x""#), (r#"x""#, None));
    }

    #[test]
    fn scans_engineio_packets() {
        let ns = chat();
        assert_eq!(scan("2", &ns), Packet::Ping);
        assert_eq!(scan("3", &ns), Packet::Pong);
        assert_eq!(scan("1", &ns), Packet::Close);
        assert_eq!(scan(r#"0{"sid":"x"}"#, &ns), Packet::Open(r#"{"sid":"x"}"#));
        assert_eq!(scan("", &ns), Packet::Other);
    }

    #[test]
    fn scans_socketio_packets() {
        let ns = chat();
        assert_eq!(scan(r#"40/api/v1/chat,{"sid":"s"}"#, &ns), Packet::Connected(r#"{"sid":"s"}"#));
        assert_eq!(
            scan(r#"44/api/v1/chat,{"message":"Unauthorized","data":{"code":401}}"#, &ns),
            Packet::ConnectError(r#"{"message":"Unauthorized","data":{"code":401}}"#)
        );
        assert_eq!(scan("41/api/v1/chat,", &ns), Packet::Disconnected);
        assert_eq!(scan("41/api/v1/chat", &ns), Packet::Disconnected);
        assert_eq!(
            scan(r#"43/api/v1/chat,7[{"roomId":"r1","members":3}]"#, &ns),
            Packet::Ack { id: 7, args: r#"{"roomId":"r1","members":3}"# }
        );
        assert_eq!(
            scan(r#"42/api/v1/chat,["user_joined",{"userId":5,"roomId":"r1","timestamp":1}]"#, &ns),
            Packet::Event {
                ack: None,
                name: "user_joined",
                args: r#"{"userId":5,"roomId":"r1","timestamp":1}"#
            }
        );
        assert_eq!(scan(r#"42/other,["x"]"#, &ns), Packet::OtherNamespace);
        assert_eq!(scan(r#"42["x"]"#, &ns), Packet::OtherNamespace);
        assert_eq!(
            scan(r#"42["x"]"#, &Namespace::new("/")),
            Packet::Event { ack: None, name: "x", args: "" }
        );
        assert_eq!(scan("42/api/v1/chat,garbage", &ns), Packet::Other);
    }

    #[test]
    fn scans_fields_without_parsing_json() {
        let msg = r#"{"id":"9","roomId":"r1","content":"3:17:99|xx\"x","senderId":5,"timestamp":1}"#;
        assert_eq!(string_field(msg, keys::CONTENT), Some(r#"3:17:99|xx\"x"#));
        assert_eq!(number_field(msg, "\"senderId\""), Some(5));
        assert_eq!(number_field(r#"{"userId":"12","roomId":"a"}"#, keys::USER_ID), Some(12));
        assert_eq!(number_field(r#"{"userId" : 12}"#, keys::USER_ID), Some(12));
        assert_eq!(number_field(r#"{"userId":"abc"}"#, keys::USER_ID), None);
        // A key-looking value is skipped.
        assert_eq!(number_field(r#"{"a":"members","members":4}"#, keys::MEMBERS), Some(4));
        assert!(has_field(r#"{"error":{"code":429}}"#, keys::ERROR));
        assert_eq!(parse_leading_u64("18446744073709551616"), None);
        assert_eq!(string_start(msg, keys::CONTENT), Some(r#"3:17:99|xx\"x","senderId":5,"timestamp":1}"#));
        assert_eq!(string_start(r#"{"content":7}"#, keys::CONTENT), None);
        assert_eq!(string_field(r#"{"content""#, keys::CONTENT), None);
        assert_eq!(number_field(r#""members""#, keys::MEMBERS), None);
        assert_eq!(find("abcabd", "abd"), Some(3));
        assert_eq!(find("bbd", "bd"), Some(1));
        assert_eq!(find("ab", "abc"), None);
        assert_eq!(find("", ""), None);
        assert_eq!(find("x", "x"), Some(0));
        assert_eq!(find("é\"ü\"", "\"ü\""), Some(2));
    }
}
