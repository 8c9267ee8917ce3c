//! Requests between nodes and their responses, as the Node adapter writes
//! them on `<key>-request#<nsp>#` and `<key>-response#<nsp>#[<uid>#]`.
//!
//! Every request is a map with a numbered `type` ([`RequestType`]), the
//! sender's `uid` and, when it wants answers, a `requestId`. Most are JSON; a
//! broadcast with acks, and the acks it collects, are MessagePack. A message
//! whose first byte is `{` is JSON, anything else MessagePack: that is how
//! the Node adapter tells them apart, so we do the same. Responses carry the
//! `requestId` and, for some kinds only, a `type`; the receiver knows what
//! it asked, so [`Response`] keeps the body for the caller to read.
//!
//! Pure: no I/O. Keys are written in the Node adapter's order, so the bytes
//! equal its bytes.

use serde::Serialize;
use serde_json::Value as Json;

use super::wire::{self, BroadcastOptions, Packet, WireError};

/// The numbered request types (the `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestType {
    /// `0`: socket ids in some rooms (legacy; answered, never sent).
    Sockets = 0,
    /// `1`: every room of every node.
    AllRooms = 1,
    /// `2`: make sockets join rooms.
    RemoteJoin = 2,
    /// `3`: make sockets leave rooms.
    RemoteLeave = 3,
    /// `4`: disconnect sockets.
    RemoteDisconnect = 4,
    /// `5`: describe matching sockets (`fetchSockets`).
    RemoteFetch = 5,
    /// `6`: an event for the other servers (`serverSideEmit`).
    ServerSideEmit = 6,
    /// `7`: a broadcast whose clients ack.
    Broadcast = 7,
    /// `8`: response: how many clients a node sent an acked broadcast to.
    BroadcastClientCount = 8,
    /// `9`: response: one client's ack of a broadcast.
    BroadcastAck = 9,
}

impl RequestType {
    fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Sockets,
            1 => Self::AllRooms,
            2 => Self::RemoteJoin,
            3 => Self::RemoteLeave,
            4 => Self::RemoteDisconnect,
            5 => Self::RemoteFetch,
            6 => Self::ServerSideEmit,
            7 => Self::Broadcast,
            8 => Self::BroadcastClientCount,
            9 => Self::BroadcastAck,
            _ => return None,
        })
    }
}

/// Which sockets a request is about: those in any of `rooms` (all when
/// empty) and in none of `except`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// Rooms to match; empty matches every socket of the namespace.
    pub rooms: Vec<String>,
    /// Rooms (socket ids included) to leave out.
    pub except: Vec<String>,
}

/// The sockets a join, leave or disconnect applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every socket the selector matches.
    Matching(Selector),
    /// One socket, by id (the older per-socket form).
    Socket(String),
}

/// A request received from another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The sender's uid (the emitter omits it on joins and leaves).
    pub uid: Option<String>,
    /// Present when the sender waits for responses.
    pub request_id: Option<String>,
    /// What is asked.
    pub body: RequestBody,
}

/// What a [`Request`] asks.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// Socket ids in `rooms`.
    Sockets {
        /// Rooms to match; empty for all.
        rooms: Vec<String>,
    },
    /// Every room.
    AllRooms,
    /// Join `rooms`.
    Join {
        /// Who joins.
        target: Target,
        /// What they join.
        rooms: Vec<String>,
    },
    /// Leave `rooms`.
    Leave {
        /// Who leaves.
        target: Target,
        /// What they leave.
        rooms: Vec<String>,
    },
    /// Disconnect; `close` also closes the underlying connection.
    Disconnect {
        /// Who is disconnected.
        target: Target,
        /// Whether the whole connection closes.
        close: bool,
    },
    /// Describe the matching sockets.
    Fetch {
        /// Which sockets.
        selector: Selector,
    },
    /// An event for the servers themselves: `[event, ...args]`.
    ServerSideEmit {
        /// `[event, ...args]`.
        data: Vec<Json>,
    },
    /// A broadcast whose clients ack.
    Broadcast {
        /// The packet's `[event, ...args]`.
        data: Json,
        /// Targets and flags.
        options: BroadcastOptions,
    },
}

/// Decodes a request.
///
/// # Errors
/// [`WireError`] for malformed bytes, unknown types and wrong shapes.
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let value = decode_json_or_msgpack(bytes)?;
    let kind = value
        .get("type")
        .and_then(Json::as_u64)
        .and_then(RequestType::from_number)
        .ok_or(WireError::Shape("unknown request type"))?;
    let uid = value.get("uid").and_then(Json::as_str).map(str::to_owned);
    let request_id = value.get("requestId").and_then(Json::as_str).map(str::to_owned);
    let body = match kind {
        RequestType::Sockets => RequestBody::Sockets { rooms: strings(value.get("rooms"))? },
        RequestType::AllRooms => RequestBody::AllRooms,
        RequestType::RemoteJoin => {
            RequestBody::Join { target: target(&value)?, rooms: rooms_or_room(&value)? }
        }
        RequestType::RemoteLeave => {
            RequestBody::Leave { target: target(&value)?, rooms: rooms_or_room(&value)? }
        }
        RequestType::RemoteDisconnect => RequestBody::Disconnect {
            target: target(&value)?,
            close: value.get("close").and_then(Json::as_bool).unwrap_or(false),
        },
        RequestType::RemoteFetch => RequestBody::Fetch { selector: selector(value.get("opts"))? },
        RequestType::ServerSideEmit => match value.get("data") {
            Some(Json::Array(data)) => RequestBody::ServerSideEmit { data: data.clone() },
            _ => return Err(WireError::Shape("serverSideEmit data is not an array")),
        },
        RequestType::Broadcast => {
            let packet = value.get("packet").ok_or(WireError::Shape("broadcast without packet"))?;
            let data = packet.get("data").cloned().ok_or(WireError::Shape("packet without data"))?;
            let opts = selector(value.get("opts"))?;
            let timeout = value.pointer("/opts/flags/timeout").and_then(Json::as_u64);
            let options = BroadcastOptions {
                rooms: opts.rooms,
                except: opts.except,
                flags: wire::Flags { timeout, ..wire::Flags::default() },
            };
            RequestBody::Broadcast { data, options }
        }
        RequestType::BroadcastClientCount | RequestType::BroadcastAck => {
            return Err(WireError::Shape("a response type on the request channel"));
        }
    };
    Ok(Request { uid, request_id, body })
}

fn target(value: &Json) -> Result<Target, WireError> {
    match (value.get("opts"), value.get("sid").and_then(Json::as_str)) {
        (Some(opts), _) => Ok(Target::Matching(selector(Some(opts))?)),
        (None, Some(sid)) => Ok(Target::Socket(sid.to_owned())),
        (None, None) => Err(WireError::Shape("request names neither opts nor sid")),
    }
}

fn rooms_or_room(value: &Json) -> Result<Vec<String>, WireError> {
    match (value.get("rooms"), value.get("room")) {
        (Some(rooms), _) => strings(Some(rooms)),
        (None, Some(room)) => Ok(vec![room_name(room)?]),
        (None, None) => Err(WireError::Shape("request names no room")),
    }
}

fn selector(value: Option<&Json>) -> Result<Selector, WireError> {
    let value = value.ok_or(WireError::Shape("request without opts"))?;
    Ok(Selector { rooms: strings(value.get("rooms"))?, except: strings(value.get("except"))? })
}

fn strings(value: Option<&Json>) -> Result<Vec<String>, WireError> {
    match value {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items.iter().map(room_name).collect(),
        Some(_) => Err(WireError::Shape("rooms is not an array")),
    }
}

fn room_name(value: &Json) -> Result<String, WireError> {
    match value {
        Json::String(text) => Ok(text.clone()),
        Json::Number(number) => Ok(number.to_string()),
        _ => Err(WireError::Shape("room is not a string")),
    }
}

fn decode_json_or_msgpack(bytes: &[u8]) -> Result<Json, WireError> {
    if bytes.first() == Some(&b'{') {
        // serde_json bounds nesting itself (128 levels).
        serde_json::from_slice(bytes).map_err(|_| WireError::Malformed("JSON"))
    } else {
        wire::to_json(&wire::decode_msgpack(bytes)?)
    }
}

/// Encodes the legacy request for the socket ids in `rooms` (type 0, JSON):
/// every node, Node servers included, still answers it, which makes it the
/// cheapest way to count a room's members across the cluster.
#[must_use]
pub fn sockets(uid: &str, request_id: &str, rooms: &[&str]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sockets<'a> {
        uid: &'a str,
        request_id: &'a str,
        #[serde(rename = "type")]
        kind: u8,
        rooms: &'a [&'a str],
    }
    to_json(&Sockets { uid, request_id, kind: RequestType::Sockets as u8, rooms })
}

/// Encodes an `allRooms` request (JSON).
#[must_use]
pub fn all_rooms(uid: &str, request_id: &str) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AllRooms<'a> {
        uid: &'a str,
        request_id: &'a str,
        #[serde(rename = "type")]
        kind: u8,
    }
    to_json(&AllRooms { uid, request_id, kind: RequestType::AllRooms as u8 })
}

/// Encodes a `fetchSockets` request (JSON).
#[must_use]
pub fn fetch_sockets(uid: &str, request_id: &str, selector: &Selector) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Fetch<'a> {
        uid: &'a str,
        request_id: &'a str,
        #[serde(rename = "type")]
        kind: u8,
        opts: &'a Selector,
    }
    to_json(&Fetch { uid, request_id, kind: RequestType::RemoteFetch as u8, opts: selector })
}

/// Encodes `socketsJoin` (`join` true) or `socketsLeave` (JSON; no answer).
#[must_use]
pub fn sockets_join_or_leave(uid: &str, join: bool, selector: &Selector, rooms: &[&str]) -> Vec<u8> {
    #[derive(Serialize)]
    struct JoinOrLeave<'a> {
        uid: &'a str,
        #[serde(rename = "type")]
        kind: u8,
        opts: &'a Selector,
        rooms: &'a [&'a str],
    }
    let kind = if join { RequestType::RemoteJoin } else { RequestType::RemoteLeave } as u8;
    to_json(&JoinOrLeave { uid, kind, opts: selector, rooms })
}

/// Encodes `disconnectSockets` (JSON; no answer).
#[must_use]
pub fn disconnect_sockets(uid: &str, selector: &Selector, close: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Disconnect<'a> {
        uid: &'a str,
        #[serde(rename = "type")]
        kind: u8,
        opts: &'a Selector,
        close: bool,
    }
    to_json(&Disconnect { uid, kind: RequestType::RemoteDisconnect as u8, opts: selector, close })
}

/// Encodes `serverSideEmit` of `[event, ...args]`, with a `requestId` when
/// the sender waits for acks (JSON).
///
/// # Errors
/// When `data` does not serialize to JSON.
pub fn server_side_emit<D: Serialize>(
    uid: &str,
    request_id: Option<&str>,
    data: &D,
) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ServerSideEmit<'a, D> {
        uid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        #[serde(rename = "type")]
        kind: u8,
        data: &'a D,
    }
    serde_json::to_vec(&ServerSideEmit { uid, request_id, kind: RequestType::ServerSideEmit as u8, data })
}

/// Encodes a broadcast whose clients ack (MessagePack).
///
/// # Errors
/// When `data` does not serialize.
pub fn broadcast_with_ack<D: Serialize>(
    uid: &str,
    request_id: &str,
    packet: &Packet<D>,
    options: &BroadcastOptions,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Broadcast<'a, D> {
        uid: &'a str,
        request_id: &'a str,
        #[serde(rename = "type")]
        kind: u8,
        packet: &'a Packet<D>,
        opts: &'a BroadcastOptions,
    }
    rmp_serde::to_vec_named(&Broadcast {
        uid,
        request_id,
        kind: RequestType::Broadcast as u8,
        packet,
        opts: options,
    })
}

/// A response received from another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request it answers.
    pub request_id: String,
    /// The `type`, for the kinds that carry one (6, 8, 9).
    pub kind: Option<RequestType>,
    /// The whole response, for the caller who knows what it asked.
    pub body: Json,
}

impl Response {
    /// `rooms` of an `allRooms` response.
    #[must_use]
    pub fn rooms(&self) -> Option<Vec<String>> {
        strings(Some(self.body.get("rooms")?)).ok()
    }

    /// `sockets` of a `fetchSockets` (or legacy sockets) response.
    #[must_use]
    pub fn sockets(&self) -> Option<&[Json]> {
        self.body.get("sockets").and_then(Json::as_array).map(Vec::as_slice)
    }

    /// `clientCount` of a broadcast-client-count response.
    #[must_use]
    pub fn client_count(&self) -> Option<u64> {
        self.body.get("clientCount").and_then(Json::as_u64)
    }

    /// `data` of a serverSideEmit ack, or `packet` of a broadcast ack.
    #[must_use]
    pub fn data(&self) -> Option<&Json> {
        self.body.get("data").or_else(|| self.body.get("packet"))
    }
}

/// Decodes a response.
///
/// # Errors
/// [`WireError`] for malformed bytes or a missing `requestId`.
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let body = decode_json_or_msgpack(bytes)?;
    let request_id = body
        .get("requestId")
        .and_then(Json::as_str)
        .ok_or(WireError::Shape("response without requestId"))?
        .to_owned();
    let kind = body.get("type").and_then(Json::as_u64).and_then(RequestType::from_number);
    Ok(Response { request_id, kind, body })
}

/// Encodes the answer to `allRooms` (JSON).
#[must_use]
pub fn all_rooms_response(request_id: &str, rooms: &[&str]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AllRooms<'a> {
        request_id: &'a str,
        rooms: &'a [&'a str],
    }
    to_json(&AllRooms { request_id, rooms })
}

/// One socket as `fetchSockets` describes it.
#[derive(Debug, Clone, Serialize)]
pub struct FetchedSocket {
    /// The socket id.
    pub id: String,
    /// The handshake (headers, time, address, url, query, auth, …).
    pub handshake: Json,
    /// Its rooms, its own id first, as socket.io lists them.
    pub rooms: Vec<String>,
    /// Application data (`socket.data`).
    pub data: Json,
}

/// Encodes the answer to `fetchSockets`, or to the legacy sockets request
/// when `sockets` are plain ids (JSON).
#[must_use]
pub fn sockets_response<S: Serialize>(request_id: &str, sockets: &[S]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sockets<'a, S> {
        request_id: &'a str,
        sockets: &'a [S],
    }
    to_json(&Sockets { request_id, sockets })
}

/// Encodes the bare answer to a per-socket join, leave or disconnect (JSON).
#[must_use]
pub fn done_response(request_id: &str) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Done<'a> {
        request_id: &'a str,
    }
    to_json(&Done { request_id })
}

/// Encodes one server's ack of a serverSideEmit (JSON).
///
/// # Errors
/// When `data` does not serialize to JSON.
pub fn server_side_emit_response<D: Serialize>(
    request_id: &str,
    data: &D,
) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Ack<'a, D> {
        #[serde(rename = "type")]
        kind: u8,
        request_id: &'a str,
        data: &'a D,
    }
    serde_json::to_vec(&Ack { kind: RequestType::ServerSideEmit as u8, request_id, data })
}

/// Encodes how many clients this node sent an acked broadcast to (JSON).
#[must_use]
pub fn client_count_response(request_id: &str, client_count: u64) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ClientCount<'a> {
        #[serde(rename = "type")]
        kind: u8,
        request_id: &'a str,
        client_count: u64,
    }
    to_json(&ClientCount { kind: RequestType::BroadcastClientCount as u8, request_id, client_count })
}

/// Encodes one client's ack of a broadcast (MessagePack).
///
/// # Errors
/// When `packet` does not serialize.
pub fn broadcast_ack_response<D: Serialize>(
    request_id: &str,
    packet: &D,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Ack<'a, D> {
        #[serde(rename = "type")]
        kind: u8,
        request_id: &'a str,
        packet: &'a D,
    }
    rmp_serde::to_vec_named(&Ack { kind: RequestType::BroadcastAck as u8, request_id, packet })
}

#[allow(clippy::expect_used, reason = "only the fixed request types above: strings, numbers, JSON values")]
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("requests serialize to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_msgpack_are_told_apart_by_the_first_byte() {
        let json = decode_request(br#"{"uid":"a","type":1,"requestId":"r"}"#).expect("json");
        assert_eq!(json.body, RequestBody::AllRooms);
        let msgpack = rmp_serde::to_vec_named(&serde_json::json!({"uid": "a", "type": 1})).expect("encodes");
        assert_eq!(decode_request(&msgpack).expect("msgpack").body, RequestBody::AllRooms);
    }

    #[test]
    fn per_socket_joins_name_a_sid_and_a_room() {
        let request = decode_request(br#"{"uid":"a","requestId":"r","type":2,"sid":"s1","room":"x"}"#)
            .expect("decodes");
        assert_eq!(
            request.body,
            RequestBody::Join { target: Target::Socket("s1".into()), rooms: vec!["x".into()] }
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        for bytes in [
            &br#"{"type":42}"#[..],
            br#"{"type":6,"data":1}"#,
            br#"{"type":2}"#,
            b"{",
            b"\xc1",
            br#"{"type":8}"#,
        ] {
            assert!(decode_request(bytes).is_err(), "{}", String::from_utf8_lossy(bytes));
        }
        assert!(decode_response(br#"{"rooms":[]}"#).is_err());
    }
}
