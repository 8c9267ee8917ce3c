//! Feeds one rendered input through the broker's real entry points and
//! checks what must hold whatever the input. Shared, file for file, by the
//! fuzz targets and by the broker's regression test on stable Rust
//! (`broker/tests/fuzz_regressions.rs` includes it with `#[path]`), so a
//! saved case runs exactly the code the fuzzer ran.
//!
//! Each function returns a short description of where the input stopped
//! (`accepted…`, or `<stage>: <reason>`); a case's `.expect` file, when there
//! is one, holds the prefix that description must start with. A broken
//! invariant is a panic, which the fuzzer reports as a crash.

use std::sync::OnceLock;

use broker::auth::{Authenticator, TokenDigest};
use broker::config::Config;
use broker::conn::{Handshake, Query};
use broker::gateway::{self, ChatLimits, ChatRequest};
use broker::http;
use broker::protocol::json::{self, JsonError};
use broker::protocol::{engineio, socketio};
use bytes::BytesMut;
use simd_json::prelude::*;
use simd_json::{BorrowedValue, Buffers};

/// The HS256 secret the token target signs with.
pub const TOKEN_SECRET: &str = "fuzz-secret";

/// A `jti` on the token target's revocation list.
pub const REVOKED_JTI: &str = "revoked-jti";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config { jwt_secret: Some(TOKEN_SECRET.to_owned()), ..Config::default() })
}

fn max_depth() -> usize {
    config().max_json_depth
}

// ---------------------------------------------------------------------------
// 1. Engine.IO then Socket.IO then the payload's JSON.

/// Engine.IO text frame, then Socket.IO packet, then the payload's checked
/// JSON parse, then the event's shape and binary placeholders.
#[must_use]
pub fn engineio_socketio(text: &str) -> String {
    let data = match engineio::decode(text) {
        Ok(engineio::Packet::Message(data)) => data,
        Ok(_) => return "engineio: not a message".to_owned(),
        Err(error) => return format!("engineio: {error}"),
    };
    let packet = match socketio::decode(data) {
        Ok(packet) => packet,
        Err(error) => return format!("socketio: {error}"),
    };
    check_envelope_round_trip(&packet);
    if packet.kind.is_binary() && packet.attachments > config().max_attachments {
        return format!("attachments: {} over the limit", packet.attachments);
    }
    if packet.payload.is_empty() {
        return "accepted".to_owned();
    }
    let mut input = packet.payload.as_bytes().to_vec();
    let value = match json::parse(&mut input, &mut Buffers::default(), max_depth()) {
        Ok(value) => value,
        Err(error) => return format!("json: {error}"),
    };
    if matches!(packet.kind, socketio::PacketType::Event | socketio::PacketType::BinaryEvent)
        && let Err(error) = socketio::split_event(&value)
    {
        return format!("event: {error}");
    }
    match socketio::check_placeholders(&value, packet.attachments) {
        Ok(()) => "accepted".to_owned(),
        Err(error) => format!("placeholders: {error}"),
    }
}

/// Encoding what was decoded and decoding it again gives the same packet:
/// the envelope has one meaning, whatever redundant form (leading zeros in
/// the ack id, an explicit `/,`) the client chose.
fn check_envelope_round_trip(packet: &socketio::Packet<'_>) {
    let mut header = BytesMut::new();
    socketio::write_binary_header(
        &mut header,
        packet.kind,
        packet.attachments,
        packet.namespace,
        packet.ack_id,
    );
    let mut text = String::from_utf8(header.to_vec()).expect("the header is ASCII and the namespace UTF-8");
    text.push_str(packet.payload);
    let again = socketio::decode(&text);
    assert_eq!(again.as_ref(), Ok(packet), "re-encoded as {text:?}");
}

// ---------------------------------------------------------------------------
// 2. The checked JSON parse.

/// The checked JSON parse (`json::parse`, simd-json, for events and CONNECT)
/// and its owned twin (`json::parse_owned`, serde_json, for acks).
///
/// Checked: both agree on what they accept; what they accept has no key
/// twice, no deeper nesting than the limit, and means to the broker what it
/// means to serde_json (and so to `JSON.parse`: the same strings, the same
/// numbers).
#[must_use]
pub fn json(text: &str) -> String {
    let mut input = text.as_bytes().to_vec();
    let borrowed = json::parse(&mut input, &mut Buffers::default(), max_depth());
    let owned = json::parse_owned(text, max_depth());
    match (&borrowed, &owned) {
        (Ok(borrowed), Ok(owned)) => {
            assert!(same_value(borrowed, owned), "parse and parse_owned disagree on {text:?}");
            assert!(depth(owned) <= max_depth(), "nested deeper than the limit: {text:?}");
            "accepted".to_owned()
        }
        // Both refuse; the reason may differ when one parser's syntax error
        // (simd-json's number range) comes before the other's duplicate key.
        (Err(error), Err(_)) => format!("json: {error}"),
        // Known (reported, left alone): simd-json refuses an integer beyond
        // 64 bits (`18446744073709551616`) as a syntax error; serde_json,
        // like `JSON.parse`, reads it as a double.
        (Err(JsonError::Syntax), Ok(owned)) if has_integer_beyond_64_bits(owned) => {
            "json: parse refuses an integer beyond 64 bits that parse_owned accepts".to_owned()
        }
        // Known (reported, left alone): simd-json does not check what
        // follows a number when it is a NUL byte (`1\0xyz` is 1) or when the
        // number has 19 digits (`[4444444444444444444x]` is
        // `[4444444444444444444]`), where serde_json and `JSON.parse` refuse.
        (Ok(_), Err(JsonError::Syntax)) if text.contains('\0') || has_long_digit_run(text) => {
            "json: parse accepts junk after a number".to_owned()
        }
        _ => panic!("parse gives {borrowed:?} and parse_owned {owned:?} for {text:?}"),
    }
}

/// Whether a simd-json value and a serde_json value are the same JSON.
fn same_value(a: &BorrowedValue<'_>, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match b {
        Value::Null => a.is_null(),
        Value::Bool(value) => a.as_bool() == Some(*value),
        Value::Number(number) => same_number(a, number),
        Value::String(text) => a.as_str() == Some(text.as_str()),
        Value::Array(items) => a.as_array().is_some_and(|mine| {
            mine.len() == items.len() && mine.iter().zip(items).all(|(a, b)| same_value(a, b))
        }),
        Value::Object(members) => a.as_object().is_some_and(|mine| {
            mine.len() == members.len()
                && members.iter().all(|(key, b)| mine.get(key.as_str()).is_some_and(|a| same_value(a, b)))
        }),
    }
}

fn same_number(a: &BorrowedValue<'_>, b: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    // Within a few units in the last place: serde_json without its
    // `float_roundtrip` feature rounds some decimals wrongly (`1.5e-300`
    // reads as 1.4999999999999998e-300; simd-json and `JSON.parse` are
    // exact) — known, reported, harmless for chat.
    match (a.cast_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a == b || (a.signum() == b.signum() && a.to_bits().abs_diff(b.to_bits()) <= 16),
        _ => false,
    }
}

/// Whether `text` holds 19 or more digits in a row.
fn has_long_digit_run(text: &str) -> bool {
    text.as_bytes().split(|byte| !byte.is_ascii_digit()).any(|run| run.len() >= 19)
}

/// Whether `value` holds a whole number no 64-bit integer holds.
fn has_integer_beyond_64_bits(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(number) => {
            number.as_f64().is_some_and(|x| x.fract() == 0.0 && x.abs() >= 9.223_372_036_854_775e18)
                && number.as_i64().is_none()
                && number.as_u64().is_none()
        }
        serde_json::Value::Array(items) => items.iter().any(has_integer_beyond_64_bits),
        serde_json::Value::Object(members) => members.values().any(has_integer_beyond_64_bits),
        _ => false,
    }
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// 3. The HTTP request head.

/// The request head parser (`http::parse_head`, at the configured limit),
/// then, as the upgrade reads them, the query string (`http::parse_query`)
/// and the `Authorization` header's bearer token.
///
/// The outcome names what `parse_head` returned: `complete`, `too large`
/// (answered 431), `malformed` (400), `incomplete` (read more), `other`
/// (handed to hyper).
#[must_use]
pub fn http_head(bytes: &[u8]) -> String {
    let limit = config().max_head_bytes;
    let kind = match http::parse_head(bytes, limit) {
        http::Head::Complete(_, len) => {
            assert!(len <= limit && len <= bytes.len(), "a head of {len} bytes accepted");
            "complete"
        }
        http::Head::Other => "other",
        http::Head::TooLarge => "too large",
        http::Head::Malformed => "malformed",
        // `parse_head` says "incomplete: read more" with this variant.
        http::Head::Closed => "incomplete",
    };
    let mut outcome = kind.to_owned();
    if let Some(query) =
        request_target(bytes).and_then(|target| target.split_once('?')).map(|(_, query)| query)
    {
        match http::parse_query(query) {
            Ok(pairs) => {
                check_query(query, &pairs);
                outcome.push_str(", query ok");
            }
            Err(_) => outcome.push_str(", query refused"),
        }
    }
    if let Some(value) = header_value(bytes, "authorization") {
        let handshake = Handshake { authorization: Some(value.into()), ..Handshake::default() };
        if let Some(token) = handshake.bearer_token() {
            assert!(!token.is_empty() && value.contains(token), "bearer token {token:?} not from {value:?}");
            outcome.push_str(", bearer");
        }
    }
    outcome
}

/// A query that decodes never decodes to U+FFFD unless it said so: invalid
/// UTF-8 is refused, not replaced.
fn check_query(query: &str, pairs: &Query) {
    let said_so = query.contains('\u{FFFD}') || query.to_ascii_lowercase().contains("%ef%bf%bd");
    let replaced = pairs.iter().any(|(key, value)| key.contains('\u{FFFD}') || value.contains('\u{FFFD}'));
    assert!(said_so || !replaced, "{query:?} decoded with a replacement character: {pairs:?}");
}

/// The request target of the first line, if it is UTF-8.
fn request_target(bytes: &[u8]) -> Option<&str> {
    let line = bytes.split(|byte| *byte == b'\n').next()?;
    let target = line.split(|byte| *byte == b' ').nth(1)?;
    std::str::from_utf8(target).ok()
}

/// The first value of header `name` (lower case), if it is UTF-8.
fn header_value<'a>(bytes: &'a [u8], name: &str) -> Option<&'a str> {
    bytes.split(|byte| *byte == b'\n').skip(1).find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

// ---------------------------------------------------------------------------
// 4. The token: found, then verified.

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let auth = Authenticator::from_config(config()).expect("an HS256 config needs no files");
        auth.revocations().revoke(REVOKED_JTI);
        auth
    })
}

/// The token's sources as the gateway sees them — the handshake query (as
/// `http::parse_query` decodes it), the `Authorization` header, the CONNECT
/// payload (as `json::parse` parses it) — then `gateway::find_token` and
/// `Authenticator::authenticate`.
///
/// Checked: the token found is one the client sent; a token accepted is
/// signed with the broker's secret under HS256 (no forgery, no `alg`
/// confusion) and not revoked.
#[must_use]
pub fn token(query: &str, authorization: Option<&str>, connect: Option<&str>) -> String {
    let Ok(query) = http::parse_query(query) else { return "query: refused".to_owned() };
    let handshake = Handshake { query, authorization: authorization.map(Box::from), ..Handshake::default() };
    let mut input = connect.unwrap_or("").as_bytes().to_vec();
    let mut buffers = Buffers::default();
    let auth = match connect.map(|_| json::parse(&mut input, &mut buffers, max_depth())) {
        None | Some(Err(JsonError::Syntax)) => None,
        Some(Ok(value)) => Some(value),
        Some(Err(error)) => return format!("connect: {error}"),
    };
    let Some(token) = gateway::find_token(&handshake, auth.as_ref()) else { return "missing".to_owned() };
    let from_query = handshake.query.iter().any(|(key, value)| key == "token" && value == token);
    let from_header = authorization.is_some_and(|header| header.contains(token));
    let from_payload = connect.is_some();
    assert!(from_query || from_header || from_payload, "token {token:?} came from nowhere");
    match authenticator().authenticate(token) {
        Ok(claims) => {
            check_signature(token);
            assert!(
                !authenticator().revocations().is_revoked(TokenDigest::of(token), claims.jti.as_deref()),
                "revoked token accepted"
            );
            let user = claims.user_id.as_json();
            assert!(
                user.starts_with('"') || user.starts_with(|c: char| c == '-' || c.is_ascii_digit()),
                "sub {user:?} is neither a string nor a number"
            );
            "accepted".to_owned()
        }
        Err(error) => format!("refused: {error}"),
    }
}

/// An accepted token verifies as HS256 with the broker's secret.
fn check_signature(token: &str) {
    use jsonwebtoken::{Algorithm, DecodingKey, crypto};
    let (message, signature) = token.rsplit_once('.').expect("an accepted token has a signature");
    let key = DecodingKey::from_secret(TOKEN_SECRET.as_bytes());
    let valid = crypto::verify(signature, message.as_bytes(), &key, Algorithm::HS256);
    assert!(matches!(valid, Ok(true)), "accepted a token not signed with the secret: {token:?}");
}

/// Reads a saved token case: a JSON object with `query` (a string),
/// `authorization` and `connect` (strings or null).
#[must_use]
pub fn token_case(bytes: &[u8]) -> String {
    let case: serde_json::Value = serde_json::from_slice(bytes).expect("a token case is JSON");
    let field = |name: &str| case.get(name).and_then(serde_json::Value::as_str);
    token(field("query").unwrap_or(""), field("authorization"), field("connect"))
}

// ---------------------------------------------------------------------------
// 5. The chat payload.

/// An EVENT payload (`["join_room",{…}]`) through the checked JSON parse,
/// `socketio::split_event` and `gateway::parse_request`.
///
/// Checked: a request accepted holds what the contract allows (a room id
/// not blank and within its limit; content not blank and within its
/// limit), exactly as the client wrote it (the same text serde_json reads),
/// and a refusal is 400, 404 or 413.
#[must_use]
pub fn chat_payload(text: &str) -> String {
    let limits = ChatLimits::from(config());
    let mut input = text.as_bytes().to_vec();
    let value = match json::parse(&mut input, &mut Buffers::default(), max_depth()) {
        Ok(value) => value,
        Err(error) => return format!("json: {error}"),
    };
    let (name, args) = match socketio::split_event(&value) {
        Ok(split) => split,
        Err(error) => return format!("event: {error}"),
    };
    let reference: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let argument = |key: &str| {
        reference
            .as_ref()
            .and_then(|value| value.get(1))
            .and_then(|arg| arg.get(key))
            .and_then(|v| v.as_str())
    };
    match gateway::parse_request(name, args, &limits) {
        Ok(ChatRequest::Join(room) | ChatRequest::Leave(room)) => {
            check_room(room.as_str(), &limits);
            assert_eq!(Some(room.as_str()), argument("roomId"), "roomId altered");
            "accepted: room".to_owned()
        }
        Ok(ChatRequest::Send { content, room }) => {
            assert!(!content.trim().is_empty() && content.len() <= limits.max_message_length);
            assert_eq!(Some(content), argument("content"), "content altered");
            if let Some(room) = room {
                check_room(room.as_str(), &limits);
                assert_eq!(Some(room.as_str()), argument("roomId"), "roomId altered");
            }
            "accepted: message".to_owned()
        }
        Err(error) => {
            assert!(matches!(error.code, 400 | 404 | 413), "code {} for {text:?}", error.code);
            format!("refused: {}", error.code)
        }
    }
}

fn check_room(room: &str, limits: &ChatLimits) {
    assert!(!room.trim().is_empty(), "blank roomId accepted");
    assert!(room.len() <= limits.max_room_id_length, "roomId over the limit accepted");
}
