//! The wire format of socket.io's classic Redis adapter (`@socket.io/redis-adapter`
//! 8.x, and `@socket.io/redis-emitter`): channel names and the broadcast tuple.
//! Requests and responses between nodes are in [`super::request`].
//!
//! A broadcast is published as the MessagePack array
//! `[uid, {type, data, nsp}, {rooms, except, flags}]` on `<key>#<nsp>#` when it
//! targets no room or several, and on `<key>#<nsp>#<room>#` when it targets exactly
//! one. `uid` names the publishing node (`"emitter"` for the emitter), so a node
//! can skip its own messages. Maps are written with their keys in the order the
//! Node adapter writes them, so our bytes equal its bytes.
//!
//! Pure: no I/O, no tokio. Decoding is bounded ([`MAX_DEPTH`]); sizes are
//! bounded by the caller before the bytes get here.

use rmpv::Value;
use serde::Serialize;

/// The default channel prefix (`key` option of the Node adapter).
pub const DEFAULT_KEY: &str = "socket.io";

/// The uid `@socket.io/redis-emitter` publishes under.
pub const EMITTER_UID: &str = "emitter";

/// Deepest nesting of arrays and maps accepted in a message from Redis.
pub const MAX_DEPTH: usize = 32;

/// Socket.IO's EVENT packet type, as the adapter writes it (a number).
pub const EVENT: u8 = 2;

/// What went wrong decoding a message from Redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not MessagePack (or JSON, for requests), or nested too deep.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Well-formed, but not the shape the protocol gives this message.
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
    /// A value JSON cannot carry (binary data, a non-finite number).
    #[error("value not representable as JSON: {0}")]
    NotJson(&'static str),
}

/// The channels of one namespace under one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    broadcast: String,
    request: String,
    response: String,
    presence: String,
    message_ids: String,
}

impl Channels {
    /// The channels of `namespace` under `key` (usually [`DEFAULT_KEY`]).
    #[must_use]
    pub fn new(key: &str, namespace: &str) -> Self {
        Self {
            broadcast: format!("{key}#{namespace}#"),
            request: format!("{key}-request#{namespace}#"),
            response: format!("{key}-response#{namespace}#"),
            presence: format!("{key}-presence#{namespace}#"),
            message_ids: format!("{key}-message-id"),
        }
    }

    /// `<key>#<nsp>#`: broadcasts to no room or to several.
    #[must_use]
    pub fn broadcast(&self) -> &str {
        &self.broadcast
    }

    /// `<key>#<nsp>#<room>#`: broadcasts to exactly `room`.
    #[must_use]
    pub fn room(&self, room: &str) -> String {
        format!("{}{room}#", self.broadcast)
    }

    /// The pattern every broadcast channel of the namespace matches.
    #[must_use]
    pub fn broadcast_pattern(&self) -> String {
        format!("{}*", self.broadcast)
    }

    /// The channel a broadcast to `rooms` is published on.
    #[must_use]
    pub fn for_rooms(&self, rooms: &[&str]) -> String {
        match rooms {
            [room] => self.room(room),
            _ => self.broadcast.clone(),
        }
    }

    /// `<key>-request#<nsp>#`: requests; its subscriber count is the server count.
    #[must_use]
    pub fn request(&self) -> &str {
        &self.request
    }

    /// `<key>-response#<nsp>#`: responses, unless a node asked for its own.
    #[must_use]
    pub fn response(&self) -> &str {
        &self.response
    }

    /// `<key>-response#<nsp>#<uid>#`: responses meant for node `uid` only.
    #[must_use]
    pub fn response_for(&self, uid: &str) -> String {
        format!("{}{uid}#", self.response)
    }

    /// `<key>-message-id`: the key (not a channel) of the message-id
    /// counter, one for every namespace, so ids are unique across them.
    #[must_use]
    pub fn message_ids(&self) -> &str {
        &self.message_ids
    }

    /// `<key>-presence#<nsp>#`: our brokers' heartbeats and members
    /// ([`super::presence`]). Not part of the Node adapter's protocol: no Node
    /// server subscribes to it (its broadcast pattern is `<key>#<nsp>#*`).
    #[must_use]
    pub fn presence(&self) -> &str {
        &self.presence
    }

    /// Which broadcast `channel` is: `Some(None)` for the namespace-wide one,
    /// `Some(Some(room))` for a room's, `None` for none of this namespace's.
    #[must_use]
    pub fn broadcast_target<'a>(&self, channel: &'a str) -> Option<Option<&'a str>> {
        let rest = channel.strip_prefix(self.broadcast.as_str())?;
        if rest.is_empty() {
            return Some(None);
        }
        rest.strip_suffix('#').map(Some)
    }
}

/// A node's id on the bus: six URL-safe characters, as the Node adapter's
/// `uid2(6)` makes them.
#[must_use]
pub fn random_uid() -> String {
    random_token(6)
}

/// A request id: six URL-safe characters, like the Node adapter's.
#[must_use]
pub fn random_request_id() -> String {
    random_token(6)
}

/// A stand-in for a message id that Redis gives later: 20 characters
/// (`~id~` and 16 random ones) that no payload holds by chance.
#[must_use]
pub fn id_placeholder() -> String {
    format!("~id~{}", random_token(16))
}

/// Splits `message` at every occurrence of the MessagePack string `text`
/// (a fixstr: fewer than 32 bytes), its header byte included: the parts
/// around them, one more than the occurrences. `None` when `text` is not in
/// it.
#[must_use]
pub fn split_at_str(message: &[u8], text: &str) -> Option<Vec<bytes::Bytes>> {
    let length = u8::try_from(text.len()).ok().filter(|length| *length < 32)?;
    let mut needle = Vec::with_capacity(text.len() + 1);
    needle.push(0xa0 | length);
    needle.extend_from_slice(text.as_bytes());
    let mut parts = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.windows(needle.len()).position(|window| window == needle.as_slice()) {
        parts.push(bytes::Bytes::copy_from_slice(rest.get(..start)?));
        rest = rest.get(start + needle.len()..)?;
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(bytes::Bytes::copy_from_slice(rest));
    Some(parts)
}

/// The `parts` [`split_at_str`] made, joined again with `text` as a
/// MessagePack string in each gap.
#[must_use]
pub fn join_with_str(parts: &[impl AsRef<[u8]>], text: &str) -> Vec<u8> {
    let bytes: usize = parts.iter().map(|part| part.as_ref().len()).sum();
    let mut out = Vec::with_capacity(bytes + parts.len() * (text.len() + 5));
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            // Writing into a Vec cannot fail.
            let _ = rmp::encode::write_str(&mut out, text);
        }
        out.extend_from_slice(part.as_ref());
    }
    out
}

fn random_token(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..length)
        .filter_map(|_| ALPHABET.get(usize::from(rand::random::<u8>() & 63)).copied().map(char::from))
        .collect()
}

/// The targets and flags of a broadcast: `{rooms, except, flags}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BroadcastOptions {
    /// Rooms to reach; empty means the whole namespace.
    pub rooms: Vec<String>,
    /// Rooms (and socket ids, each socket's own room) to skip.
    pub except: Vec<String>,
    /// Flags as socket.io has them.
    pub flags: Flags,
}

/// Broadcast flags. Only those a node acts on are typed; we write none of
/// them, and of the ones we read only `local` changes anything (a `local`
/// broadcast is never published, so seeing one is a peer's bug; we skip it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flags {
    /// Deliver on the publishing node only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    /// May be dropped when the client is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volatile: Option<bool>,
    /// Per-message compression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    /// Ack timeout of a broadcast with acks, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Ours, not socket.io's (its nodes ignore it): the packet's last
    /// argument is its recovery offset, the id Redis gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<bool>,
}

/// The packet inside a broadcast: `{type, data, nsp}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packet<D> {
    /// The Socket.IO packet type (2 for EVENT).
    #[serde(rename = "type")]
    pub kind: u8,
    /// `[event, ...args]`.
    pub data: D,
    /// The namespace.
    pub nsp: String,
}

/// Encodes the broadcast tuple `[uid, packet, options]` as the Node adapter
/// does. `data` is the packet's `[event, ...args]`, usually a tuple.
///
/// # Errors
/// When `data` does not serialize (a map with non-string keys, say).
pub fn encode_broadcast<D: Serialize>(
    uid: &str,
    packet: &Packet<D>,
    options: &BroadcastOptions,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(&(uid, packet, options))
}

/// Encodes the broadcast tuple around packet data already encoded as
/// MessagePack (`[event, ...args]`): the same bytes as [`encode_broadcast`],
/// for callers that encoded the data once for several uses.
///
/// # Errors
/// When `options` does not serialize (it always does).
pub fn encode_broadcast_raw(
    uid: &str,
    nsp: &str,
    data: &[u8],
    options: &BroadcastOptions,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    use rmp::encode::{write_array_len, write_map_len, write_str, write_uint};
    let mut out = Vec::with_capacity(data.len() + uid.len() + nsp.len() + 64);
    write_array_len(&mut out, 3)?;
    write_str(&mut out, uid)?;
    write_map_len(&mut out, 3)?;
    write_str(&mut out, "type")?;
    write_uint(&mut out, u64::from(EVENT))?;
    write_str(&mut out, "data")?;
    out.extend_from_slice(data);
    write_str(&mut out, "nsp")?;
    write_str(&mut out, nsp)?;
    rmp_serde::encode::write_named(&mut out, options)?;
    Ok(out)
}

/// Re-encodes JSON (what the broker's payload types serialize to; their
/// raw JSON parts, such as a user id kept as its token had it, only
/// serialize to JSON) as MessagePack, keeping map keys in their order.
///
/// # Errors
/// [`WireError::Malformed`] when `json` is not JSON.
pub fn json_to_msgpack(json: &[u8]) -> Result<Vec<u8>, WireError> {
    let value: Value = serde_json::from_slice(json).map_err(|_| WireError::Malformed("JSON"))?;
    let mut out = Vec::with_capacity(json.len());
    rmpv::encode::write_value(&mut out, &value).map_err(|_| WireError::Malformed("MessagePack"))?;
    Ok(out)
}

/// A broadcast received from Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The publishing node.
    pub uid: String,
    /// The packet type (2 for EVENT).
    pub kind: u8,
    /// The namespace (`/` when absent, as the Node adapter reads it).
    pub nsp: String,
    /// `[event, ...args]`, checked to be representable as JSON.
    pub data: Value,
    /// Targets and flags.
    pub options: BroadcastOptions,
}

/// Decodes a broadcast tuple.
///
/// # Errors
/// [`WireError`] when it is not MessagePack, not the tuple's shape, or
/// carries values JSON cannot (binary attachments are not relayed).
pub fn decode_broadcast(bytes: &[u8]) -> Result<Broadcast, WireError> {
    let value = decode_msgpack(bytes)?;
    let Value::Array(items) = value else { return Err(WireError::Shape("broadcast is not an array")) };
    let [uid, packet, options] =
        <[Value; 3]>::try_from(items).map_err(|_| WireError::Shape("broadcast is not a 3-tuple"))?;
    let uid = uid.as_str().ok_or(WireError::Shape("uid is not a string"))?.to_owned();
    let packet = map_entries(packet, "packet is not a map")?;
    let kind = packet
        .iter()
        .find(|(key, _)| key == "type")
        .and_then(|(_, value)| value.as_u64())
        .and_then(|kind| u8::try_from(kind).ok())
        .ok_or(WireError::Shape("packet type is missing"))?;
    let nsp = match packet.iter().find(|(key, _)| key == "nsp") {
        None => crate::protocol::socketio::ROOT_NAMESPACE.to_owned(),
        Some((_, value)) => value.as_str().ok_or(WireError::Shape("nsp is not a string"))?.to_owned(),
    };
    let data = packet
        .into_iter()
        .find(|(key, _)| key == "data")
        .map(|(_, value)| value)
        .ok_or(WireError::Shape("packet data is missing"))?;
    check_json(&data)?;
    Ok(Broadcast { uid, kind, nsp, data, options: decode_options(options)? })
}

/// Reads `{rooms, except, flags}` (in any key order: the emitter writes
/// `flags` before `except`).
fn decode_options(value: Value) -> Result<BroadcastOptions, WireError> {
    let mut options = BroadcastOptions::default();
    for (key, value) in map_entries(value, "options is not a map")? {
        match key.as_str() {
            "rooms" => options.rooms = room_list(value)?,
            "except" => options.except = room_list(value)?,
            "flags" => options.flags = decode_flags(value)?,
            _ => {}
        }
    }
    Ok(options)
}

fn decode_flags(value: Value) -> Result<Flags, WireError> {
    let mut flags = Flags::default();
    if value.is_nil() {
        return Ok(flags);
    }
    for (key, value) in map_entries(value, "flags is not a map")? {
        match key.as_str() {
            "local" => flags.local = value.as_bool(),
            "volatile" => flags.volatile = value.as_bool(),
            "compress" => flags.compress = value.as_bool(),
            "timeout" => flags.timeout = value.as_u64(),
            "offset" => flags.offset = value.as_bool(),
            _ => {}
        }
    }
    Ok(flags)
}

/// Room names: socket.io allows numbers as rooms; they are matched by their text.
pub(super) fn room_list(value: Value) -> Result<Vec<String>, WireError> {
    let Value::Array(items) = value else { return Err(WireError::Shape("rooms is not an array")) };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(text) => text.into_str().ok_or(WireError::Shape("room is not UTF-8")),
            Value::Integer(number) => Ok(number.to_string()),
            Value::F64(number) => Ok(number.to_string()),
            _ => Err(WireError::Shape("room is not a string")),
        })
        .collect()
}

fn map_entries(value: Value, what: &'static str) -> Result<Vec<(String, Value)>, WireError> {
    let Value::Map(entries) = value else { return Err(WireError::Shape(what)) };
    Ok(entries
        .into_iter()
        .filter_map(|(key, value)| key.as_str().map(|key| (key.to_owned(), value)))
        .collect())
}

/// Decodes one MessagePack value, nested at most [`MAX_DEPTH`] deep, that
/// must fill `bytes` exactly.
///
/// # Errors
/// [`WireError::Malformed`] otherwise.
pub fn decode_msgpack(bytes: &[u8]) -> Result<Value, WireError> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
        .map_err(|_| WireError::Malformed("MessagePack"))?;
    if !reader.is_empty() {
        return Err(WireError::Malformed("MessagePack (trailing bytes)"));
    }
    Ok(value)
}

/// Converts a MessagePack value to the JSON socket.io would send a client:
/// notepack's `undefined` (ext type 0) becomes `null`, map keys become
/// strings, integral floats stay floats.
///
/// # Errors
/// [`WireError::NotJson`] for binary data, other extension types and
/// non-finite floats.
pub fn to_json(value: &Value) -> Result<serde_json::Value, WireError> {
    use serde_json::Value as Json;
    Ok(match value {
        Value::Nil => Json::Null,
        Value::Boolean(flag) => Json::Bool(*flag),
        Value::Integer(number) => match (number.as_u64(), number.as_i64()) {
            (Some(unsigned), _) => Json::from(unsigned),
            (None, Some(signed)) => Json::from(signed),
            (None, None) => return Err(WireError::NotJson("integer out of range")),
        },
        Value::F32(number) => finite(f64::from(*number))?,
        Value::F64(number) => finite(*number)?,
        Value::String(text) => {
            Json::String(text.as_str().ok_or(WireError::NotJson("string is not UTF-8"))?.to_owned())
        }
        Value::Binary(_) => return Err(WireError::NotJson("binary data")),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(entries) => {
            let mut object = serde_json::Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key = match key {
                    Value::String(text) => {
                        text.as_str().ok_or(WireError::NotJson("key is not UTF-8"))?.to_owned()
                    }
                    Value::Integer(number) => number.to_string(),
                    _ => return Err(WireError::NotJson("map key is not a string")),
                };
                // JSON.stringify drops undefined members; so does socket.io.
                if !matches!(value, Value::Ext(0, _)) {
                    object.insert(key, to_json(value)?);
                }
            }
            Json::Object(object)
        }
        Value::Ext(0, _) => Json::Null,
        Value::Ext(..) => return Err(WireError::NotJson("extension type")),
    })
}

/// Checks that [`AsJson`] can write `value`: what [`to_json`] refuses, this refuses.
///
/// # Errors
/// As [`to_json`].
pub fn check_json(value: &Value) -> Result<(), WireError> {
    match value {
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::Ext(0, _) => Ok(()),
        Value::F32(number) if number.is_finite() => Ok(()),
        Value::F64(number) if number.is_finite() => Ok(()),
        Value::F32(_) | Value::F64(_) => Err(WireError::NotJson("non-finite number")),
        Value::String(text) => text.as_str().map(|_| ()).ok_or(WireError::NotJson("string is not UTF-8")),
        Value::Binary(_) => Err(WireError::NotJson("binary data")),
        Value::Array(items) => items.iter().try_for_each(check_json),
        Value::Map(entries) => entries.iter().try_for_each(|(key, value)| {
            match key {
                Value::String(text) if text.as_str().is_some() => {}
                Value::Integer(_) => {}
                _ => return Err(WireError::NotJson("map key is not a string")),
            }
            check_json(value)
        }),
        Value::Ext(..) => Err(WireError::NotJson("extension type")),
    }
}

/// Writes a MessagePack value as the JSON socket.io would send a client,
/// keeping map keys in their order. Only for values [`check_json`] accepted.
#[derive(Debug, Clone, Copy)]
pub struct AsJson<'a>(pub &'a Value);

impl Serialize for AsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap, SerializeSeq};
        match self.0 {
            Value::Nil | Value::Ext(0, _) => serializer.serialize_unit(),
            Value::Boolean(flag) => serializer.serialize_bool(*flag),
            Value::Integer(number) => match (number.as_u64(), number.as_i64()) {
                (Some(unsigned), _) => serializer.serialize_u64(unsigned),
                (None, Some(signed)) => serializer.serialize_i64(signed),
                (None, None) => Err(S::Error::custom("integer out of range")),
            },
            Value::F32(number) => serializer.serialize_f64(f64::from(*number)),
            Value::F64(number) => serializer.serialize_f64(*number),
            Value::String(text) => serializer
                .serialize_str(text.as_str().ok_or_else(|| S::Error::custom("string is not UTF-8"))?),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AsJson(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                // JSON.stringify drops undefined members; so does socket.io.
                let kept = entries.iter().filter(|(_, value)| !matches!(value, Value::Ext(0, _)));
                let mut map = serializer.serialize_map(None)?;
                for (key, value) in kept {
                    match key {
                        Value::String(text) => map.serialize_key(text.as_str().unwrap_or_default())?,
                        Value::Integer(number) => map.serialize_key(&number.to_string())?,
                        _ => return Err(S::Error::custom("map key is not a string")),
                    }
                    map.serialize_value(&AsJson(value))?;
                }
                map.end()
            }
            Value::Binary(_) | Value::Ext(..) => Err(S::Error::custom("not representable as JSON")),
        }
    }
}

fn finite(number: f64) -> Result<serde_json::Value, WireError> {
    serde_json::Number::from_f64(number)
        .map(serde_json::Value::Number)
        .ok_or(WireError::NotJson("non-finite number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_named_as_the_node_adapter_names_them() {
        let channels = Channels::new(DEFAULT_KEY, "/api/v1/chat");
        assert_eq!(channels.broadcast(), "socket.io#/api/v1/chat#");
        assert_eq!(channels.room("lobby"), "socket.io#/api/v1/chat#lobby#");
        assert_eq!(channels.broadcast_pattern(), "socket.io#/api/v1/chat#*");
        assert_eq!(channels.request(), "socket.io-request#/api/v1/chat#");
        assert_eq!(channels.response(), "socket.io-response#/api/v1/chat#");
        assert_eq!(channels.response_for("abc123"), "socket.io-response#/api/v1/chat#abc123#");
        assert_eq!(channels.for_rooms(&["a"]), "socket.io#/api/v1/chat#a#");
        assert_eq!(channels.for_rooms(&["a", "b"]), "socket.io#/api/v1/chat#");
        assert_eq!(channels.for_rooms(&[]), "socket.io#/api/v1/chat#");
    }

    #[test]
    fn broadcast_targets_are_read_back_from_channels() {
        let channels = Channels::new(DEFAULT_KEY, "/api/v1/chat");
        assert_eq!(channels.broadcast_target("socket.io#/api/v1/chat#"), Some(None));
        assert_eq!(channels.broadcast_target("socket.io#/api/v1/chat#a#b#"), Some(Some("a#b")));
        assert_eq!(channels.broadcast_target("socket.io#/other#"), None);
        assert_eq!(channels.broadcast_target("socket.io#/api/v1/chat#unterminated"), None);
    }

    #[test]
    fn uids_look_like_uid2() {
        let uid = random_uid();
        assert_eq!(uid.len(), 6);
        assert!(uid.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bytes in
            [&b""[..], b"\xc1", b"\x93\xa1a", b"\x91\x01", b"\x93\x01\x02\x03", b"\xdd\xff\xff\xff\xff"]
        {
            assert!(decode_broadcast(bytes).is_err(), "{bytes:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 10_000).chain([0xc0]).collect();
        assert_eq!(decode_msgpack(&deep), Err(WireError::Malformed("MessagePack")));
    }

    #[test]
    fn undefined_and_numbers_convert_as_socket_io_sends_them() {
        let map = Value::Map(vec![
            (Value::from("gone"), Value::Ext(0, vec![0])),
            (Value::from("n"), Value::from(-5)),
            (Value::from("f"), Value::F64(1.5)),
        ]);
        assert_eq!(to_json(&map), Ok(serde_json::json!({"n": -5, "f": 1.5})));
        assert_eq!(to_json(&Value::Array(vec![Value::Ext(0, vec![0])])), Ok(serde_json::json!([null])));
        assert!(to_json(&Value::Binary(vec![1])).is_err());
        assert!(check_json(&Value::Array(vec![Value::Binary(vec![1])])).is_err());
    }

    #[test]
    fn json_view_keeps_key_order_and_drops_undefined() {
        let map = Value::Map(vec![
            (Value::from("z"), Value::from(1)),
            (Value::from("gone"), Value::Ext(0, vec![0])),
            (Value::from("a"), Value::Array(vec![Value::Ext(0, vec![0]), Value::F64(0.5)])),
        ]);
        assert_eq!(check_json(&map), Ok(()));
        assert_eq!(serde_json::to_string(&AsJson(&map)).expect("writes"), r#"{"z":1,"a":[null,0.5]}"#);
    }

    #[test]
    fn json_becomes_the_msgpack_notepack_writes() {
        let json = br#"["m",{"z":1,"a":-5,"f":1.5,"s":"x","n":null,"t":true,"big":4294967296}]"#;
        let value = decode_msgpack(&json_to_msgpack(json).expect("converts")).expect("decodes");
        assert_eq!(serde_json::to_string(&AsJson(&value)).expect("writes").as_bytes(), json);
        assert!(json_to_msgpack(b"{").is_err());
    }

    #[test]
    fn raw_and_typed_encodings_are_the_same_bytes() {
        let options = BroadcastOptions {
            rooms: vec!["r".into()],
            except: vec!["s".into()],
            ..BroadcastOptions::default()
        };
        let data = ("message", serde_json::json!({"a": 1}));
        let typed = encode_broadcast("uid", &Packet { kind: EVENT, data: &data, nsp: "/n".into() }, &options);
        let raw = rmp_serde::to_vec_named(&data).expect("encodes");
        assert_eq!(
            encode_broadcast_raw("uid", "/n", &raw, &options).expect("encodes"),
            typed.expect("encodes")
        );
    }

    #[test]
    fn an_id_placeholder_is_cut_out_and_an_id_put_in_its_place() {
        let placeholder = id_placeholder();
        assert_eq!(placeholder.len(), 20);
        let json = format!(r#"["message",{{"id":"{placeholder}","content":"{placeholder}"}}]"#);
        let packet = json_to_msgpack(json.as_bytes()).expect("JSON");
        let message = encode_broadcast_raw("AbC12x", "/chat", &packet, &BroadcastOptions::default())
            .expect("encodable");
        let parts = split_at_str(&message, &placeholder).expect("the placeholder is there");
        assert_eq!(parts.len(), 3, "cut at both occurrences");
        // What the Redis script does: the header byte (fixstr), then the digits, in each gap.
        let mut scripted = parts[0].to_vec();
        for part in &parts[1..] {
            scripted.push(0xa0 | 16);
            scripted.extend_from_slice(b"1764490000123456");
            scripted.extend_from_slice(part);
        }
        assert_eq!(join_with_str(&parts, "1764490000123456"), scripted);
        let broadcast = decode_broadcast(&scripted).expect("still a broadcast");
        let data = to_json(&broadcast.data).expect("JSON");
        assert_eq!(data[1]["id"], "1764490000123456");
        assert_eq!(data[1]["content"], "1764490000123456", "every occurrence is replaced");
        assert!(split_at_str(&message, "absent").is_none());
    }
}
