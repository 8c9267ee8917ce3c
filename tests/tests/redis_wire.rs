//! Golden tests of the Redis adapter's wire format: what socket.io 4.8 with
//! `@socket.io/redis-adapter` 8.3 and `@socket.io/redis-emitter` 5.1 published
//! (captured by `tests/cluster/goldens.mjs` into `tests/fixtures/redis-wire.json`)
//! decodes to what it means, and what we encode for the same message is the
//! same bytes. Uids and request ids are random per capture, so they are read
//! from the fixture.

use broker::adapter::redis::request::{
    self, RequestBody, RequestType, Selector, Target, decode_request, decode_response,
};
use broker::adapter::redis::wire::{
    self, BroadcastOptions, Channels, DEFAULT_KEY, EMITTER_UID, Flags, Packet, WireError, decode_broadcast,
    encode_broadcast,
};
use serde::Serialize;
use serde_json::{Value, json};

const NAMESPACE: &str = "/api/v1/chat";
const ROOM: &str = "golden-room";

struct Golden {
    channel: String,
    bytes: Vec<u8>,
}

fn golden(name: &str) -> Golden {
    let fixture: Value =
        serde_json::from_str(include_str!("../fixtures/redis-wire.json")).expect("the fixture is JSON");
    let message = fixture["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|message| message["name"] == name)
        .unwrap_or_else(|| panic!("no golden named {name}"));
    let hex = message["hex"].as_str().expect("hex");
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect();
    Golden { channel: message["channel"].as_str().expect("channel").to_owned(), bytes }
}

fn channels() -> Channels {
    Channels::new(DEFAULT_KEY, NAMESPACE)
}

fn packet<D>(data: D) -> Packet<D> {
    Packet { kind: wire::EVENT, data, nsp: NAMESPACE.to_owned() }
}

fn to_room(room: &str, except: &[&str]) -> BroadcastOptions {
    BroadcastOptions {
        rooms: vec![room.to_owned()],
        except: except.iter().map(|&sid| sid.to_owned()).collect(),
        flags: Flags::default(),
    }
}

/// The chat `message` payload, in the field order the gateway writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatMessage {
    id: &'static str,
    room_id: &'static str,
    content: &'static str,
    sender_id: u64,
    timestamp: u64,
}

const MESSAGE: ChatMessage =
    ChatMessage {
        id: "17", room_id: ROOM, content: "héllo ✓", sender_id: 42, timestamp: 1_764_490_000_123
    };

fn message_json() -> Value {
    json!({"id": "17", "roomId": ROOM, "content": "héllo ✓", "senderId": 42, "timestamp": 1_764_490_000_123_u64})
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("a JSON golden")
}

#[test]
fn a_room_broadcast_decodes_and_encodes_to_the_node_bytes() {
    let golden = golden("broadcast.room");
    let decoded = decode_broadcast(&golden.bytes).expect("decodes");
    assert_eq!(decoded.kind, wire::EVENT);
    assert_eq!(decoded.nsp, NAMESPACE);
    assert_eq!(wire::to_json(&decoded.data).expect("JSON"), json!(["message", message_json()]));
    assert_eq!(decoded.options, to_room(ROOM, &[]));
    assert_eq!(golden.channel, channels().for_rooms(&[ROOM]));

    let ours =
        encode_broadcast(&decoded.uid, &packet(("message", MESSAGE)), &to_room(ROOM, &[])).expect("encodes");
    assert_eq!(ours, golden.bytes);
}

#[test]
fn a_broadcast_excepting_the_sender_matches_the_node_bytes() {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Notice {
        user_id: &'static str,
        room_id: &'static str,
        timestamp: u64,
    }
    let golden = golden("broadcast.room_except_socket");
    let decoded = decode_broadcast(&golden.bytes).expect("decodes");
    let except = ["AbCdEfGhIjKlMnOpAAAB"];
    assert_eq!(decoded.options, to_room(ROOM, &except));
    let notice = Notice { user_id: "u-1", room_id: ROOM, timestamp: 1_764_490_000_456 };
    let ours = encode_broadcast(&decoded.uid, &packet(("user_joined", notice)), &to_room(ROOM, &except))
        .expect("encodes");
    assert_eq!(ours, golden.bytes);
}

#[test]
fn a_namespace_broadcast_keeps_every_number_kind() {
    #[derive(Serialize)]
    struct Announcement {
        text: &'static str,
        negative: i64,
        small: i64,
        float: f64,
        yes: bool,
        none: Option<u8>,
        big: u64,
    }
    let golden = golden("broadcast.namespace");
    let decoded = decode_broadcast(&golden.bytes).expect("decodes");
    assert_eq!(golden.channel, channels().broadcast());
    assert_eq!(
        wire::to_json(&decoded.data).expect("JSON"),
        json!(["announce", {"text": "all", "negative": -5, "small": -100, "float": 1.5, "yes": true, "none": null, "big": 4_294_967_296_u64}])
    );
    assert_eq!(decoded.options, BroadcastOptions::default());
    let announcement = Announcement {
        text: "all",
        negative: -5,
        small: -100,
        float: 1.5,
        yes: true,
        none: None,
        big: 1 << 32,
    };
    let ours =
        encode_broadcast(&decoded.uid, &packet(("announce", announcement)), &BroadcastOptions::default())
            .expect("encodes");
    assert_eq!(ours, golden.bytes);
}

#[test]
fn a_broadcast_to_two_rooms_goes_on_the_namespace_channel() {
    let golden = golden("broadcast.two_rooms");
    let decoded = decode_broadcast(&golden.bytes).expect("decodes");
    assert_eq!(golden.channel, channels().for_rooms(&["room-1", "room-2"]));
    assert_eq!(wire::to_json(&decoded.data).expect("JSON"), json!(["message", "several", 3]));
    let options =
        BroadcastOptions { rooms: vec!["room-1".into(), "room-2".into()], ..BroadcastOptions::default() };
    assert_eq!(decoded.options, options);
    let ours = encode_broadcast(&decoded.uid, &packet(("message", "several", 3)), &options).expect("encodes");
    assert_eq!(ours, golden.bytes);
}

#[test]
fn binary_broadcasts_are_refused_rather_than_mangled() {
    let golden = golden("broadcast.binary");
    assert_eq!(decode_broadcast(&golden.bytes), Err(WireError::NotJson("binary data")));
}

#[test]
fn broadcast_flags_are_read() {
    let decoded = decode_broadcast(&golden("broadcast.flags").bytes).expect("decodes");
    assert_eq!(
        decoded.options.flags,
        Flags { compress: Some(false), volatile: Some(true), ..Flags::default() }
    );
    assert_eq!(wire::to_json(&decoded.data).expect("JSON"), json!(["flagged", 1]));
}

#[test]
fn emitter_broadcasts_decode_whatever_their_key_order() {
    let golden_room = golden("emitter.broadcast.room");
    let decoded = decode_broadcast(&golden_room.bytes).expect("decodes");
    assert_eq!(decoded.uid, EMITTER_UID);
    assert_eq!(wire::to_json(&decoded.data).expect("JSON"), json!(["message", message_json()]));
    assert_eq!(decoded.options, to_room(ROOM, &[]));
    assert_eq!(golden_room.channel, channels().room(ROOM));
    let everyone = decode_broadcast(&golden("emitter.broadcast.namespace").bytes).expect("decodes");
    assert_eq!(wire::to_json(&everyone.data).expect("JSON"), json!(["announce", "from an emitter"]));
    assert_eq!(everyone.options, BroadcastOptions::default());
}

#[test]
fn all_rooms_request_and_response_match() {
    let asked = golden("request.all_rooms");
    assert_eq!(asked.channel, channels().request());
    let request = decode_request(&asked.bytes).expect("decodes");
    assert_eq!(request.body, RequestBody::AllRooms);
    let (uid, id) = (request.uid.expect("uid"), request.request_id.expect("request id"));
    assert_eq!(request::all_rooms(&uid, &id), asked.bytes);

    let answered = golden("response.all_rooms");
    assert_eq!(answered.channel, channels().response());
    let response = decode_response(&answered.bytes).expect("decodes");
    assert_eq!(response.request_id, id);
    let rooms = response.rooms().expect("rooms");
    assert!(rooms.contains(&ROOM.to_owned()));
    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
    assert_eq!(request::all_rooms_response(&id, &rooms), answered.bytes);
}

#[test]
fn fetch_sockets_request_and_response_match() {
    let asked = golden("request.fetch_sockets");
    let request = decode_request(&asked.bytes).expect("decodes");
    let selector = Selector { rooms: vec![ROOM.into()], except: vec![] };
    assert_eq!(request.body, RequestBody::Fetch { selector: selector.clone() });
    let (uid, id) = (request.uid.expect("uid"), request.request_id.expect("request id"));
    assert_eq!(request::fetch_sockets(&uid, &id, &selector), asked.bytes);

    let answered = golden("response.fetch_sockets");
    let response = decode_response(&answered.bytes).expect("decodes");
    let sockets = response.sockets().expect("sockets");
    assert_eq!(sockets.len(), 1);
    let socket = &sockets[0];
    assert!(socket["rooms"].as_array().expect("rooms").contains(&json!(ROOM)));
    for key in ["headers", "time", "address", "xdomain", "secure", "issued", "url", "query", "auth"] {
        assert!(socket["handshake"].get(key).is_some(), "handshake.{key}");
    }
    // Our encoder writes the same object back byte for byte.
    let fetched = request::FetchedSocket {
        id: socket["id"].as_str().expect("id").to_owned(),
        handshake: socket["handshake"].clone(),
        rooms: vec![socket["rooms"][0].as_str().expect("own room").to_owned(), ROOM.to_owned()],
        data: json!({}),
    };
    let ours = request::sockets_response(&id, &[fetched]);
    assert_eq!(json_of(&ours), json_of(&answered.bytes));
}

#[test]
fn sockets_join_and_leave_match() {
    let selector = Selector { rooms: vec![ROOM.into()], except: vec![] };
    for (name, join) in [("request.sockets_join", true), ("request.sockets_leave", false)] {
        let golden = golden(name);
        let request = decode_request(&golden.bytes).expect("decodes");
        let target = Target::Matching(selector.clone());
        let rooms = vec!["joined-by-a".to_owned()];
        let expected =
            if join { RequestBody::Join { target, rooms } } else { RequestBody::Leave { target, rooms } };
        assert_eq!(request.body, expected, "{name}");
        assert_eq!(request.request_id, None);
        let uid = request.uid.expect("uid");
        assert_eq!(request::sockets_join_or_leave(&uid, join, &selector, &["joined-by-a"]), golden.bytes);
    }
    let emitted = decode_request(&golden("emitter.sockets_join").bytes).expect("decodes");
    assert_eq!(emitted.uid, None);
    assert_eq!(
        emitted.body,
        RequestBody::Join { target: Target::Matching(selector), rooms: vec!["joined-by-emitter".into()] }
    );
}

#[test]
fn disconnect_sockets_matches() {
    let golden = golden("request.disconnect_sockets");
    let request = decode_request(&golden.bytes).expect("decodes");
    let selector = Selector { rooms: vec![ROOM.into()], except: vec![] };
    assert_eq!(
        request.body,
        RequestBody::Disconnect { target: Target::Matching(selector.clone()), close: true }
    );
    assert_eq!(request::disconnect_sockets(&request.uid.expect("uid"), &selector, true), golden.bytes);
}

#[test]
fn server_side_emits_match_with_and_without_ack() {
    let golden_plain = golden("request.server_side_emit");
    let plain = decode_request(&golden_plain.bytes).expect("decodes");
    assert_eq!(plain.body, RequestBody::ServerSideEmit { data: vec![json!("golden-ping"), json!({"n": 1})] });
    let uid = plain.uid.expect("uid");
    assert_eq!(
        request::server_side_emit(&uid, None, &("golden-ping", json!({"n": 1}))).expect("encodes"),
        golden_plain.bytes
    );

    let golden_acked = golden("request.server_side_emit_with_ack");
    let acked = decode_request(&golden_acked.bytes).expect("decodes");
    let id = acked.request_id.expect("request id");
    assert_eq!(
        request::server_side_emit(&uid, Some(&id), &("golden-hello", json!({"n": 2}))).expect("encodes"),
        golden_acked.bytes
    );

    let golden_answer = golden("response.server_side_emit_with_ack");
    let answer = decode_response(&golden_answer.bytes).expect("decodes");
    assert_eq!(answer.kind, Some(RequestType::ServerSideEmit));
    assert_eq!(answer.data(), Some(&json!({"answer": "from B"})));
    assert_eq!(
        request::server_side_emit_response(&id, &json!({"answer": "from B"})).expect("encodes"),
        golden_answer.bytes
    );

    let emitted = decode_request(&golden("emitter.server_side_emit").bytes).expect("decodes");
    assert_eq!(emitted.uid.as_deref(), Some(EMITTER_UID));
    assert_eq!(emitted.body, RequestBody::ServerSideEmit { data: vec![json!("golden-ping"), json!(7)] });
}

#[test]
fn broadcast_with_acks_and_its_responses_match() {
    let golden_request = golden("request.broadcast_with_ack");
    let request = decode_request(&golden_request.bytes).expect("decodes");
    let options = BroadcastOptions {
        rooms: vec![ROOM.into()],
        except: vec![],
        flags: Flags { timeout: Some(2000), ..Flags::default() },
    };
    assert_eq!(
        request.body,
        RequestBody::Broadcast { data: json!(["golden-ask", 5]), options: options.clone() }
    );
    let (uid, id) = (request.uid.expect("uid"), request.request_id.expect("request id"));
    let ours = request::broadcast_with_ack(&uid, &id, &packet(("golden-ask", 5)), &options).expect("encodes");
    assert_eq!(ours, golden_request.bytes);

    let golden_count = golden("response.broadcast_client_count");
    let count = decode_response(&golden_count.bytes).expect("decodes");
    assert_eq!((count.kind, count.client_count()), (Some(RequestType::BroadcastClientCount), Some(1)));
    assert_eq!(request::client_count_response(&id, 1), golden_count.bytes);

    let golden_ack = golden("response.broadcast_ack");
    let ack = decode_response(&golden_ack.bytes).expect("decodes");
    assert_eq!((ack.kind, ack.data()), (Some(RequestType::BroadcastAck), Some(&json!({"ok": 1}))));
    #[derive(Serialize)]
    struct Answer {
        ok: u8,
    }
    assert_eq!(request::broadcast_ack_response(&id, &Answer { ok: 1 }).expect("encodes"), golden_ack.bytes);
}
