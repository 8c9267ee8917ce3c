//! The chat events and their acks, at the wire level where the shape matters:
//! `join_room`, `leave_room`, `send_message`, and what the server emits back
//! (`message`, `user_joined`, `user_left`, `status`).

use std::collections::HashSet;

use tests::token::now_millis;
use tests::{Client, PacketKind, TestServer, Value, json};

/// A timestamp in ms since the epoch, within a minute of now.
fn assert_recent_millis(value: &Value) {
    let timestamp = value.as_u64().unwrap_or_else(|| panic!("timestamp is not a whole number: {value}"));
    let now = now_millis();
    assert!(
        timestamp + 60_000 > now && timestamp < now + 60_000,
        "timestamp {timestamp} is not milliseconds near now ({now})"
    );
}

/// Message ids increase within a room: numerically when they are numbers in
/// text, else in string order.
fn id_increases(earlier: &str, later: &str) -> bool {
    match (earlier.parse::<u128>(), later.parse::<u128>()) {
        (Ok(earlier), Ok(later)) => later > earlier,
        _ => later > earlier,
    }
}

#[tokio::test]
async fn join_room_is_acked_on_the_wire_with_room_and_member_count() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.send_raw(r#"42/api/v1/chat,17["join_room",{"roomId":"a"}]"#).await;
    let ack = alice.expect_ack(17).await;
    assert_eq!(ack, vec![json!({ "roomId": "a", "members": 1 })]);
    let status = alice.expect_event("status").await;
    assert_eq!(status, json!({ "roomId": "a", "members": 1, "joined": true }));
}

#[tokio::test]
async fn ack_ids_round_trip_exactly() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    for id in [0_u64, 1, 987_654_321] {
        alice.send_raw(&format!(r#"42/api/v1/chat,{id}["join_room",{{"roomId":"ids"}}]"#)).await;
        let packet = loop {
            let packet = alice.expect_packet().await;
            if packet.kind == PacketKind::Ack {
                break packet;
            }
        };
        assert!(
            packet.raw.starts_with(&format!("43/api/v1/chat,{id}[")),
            "the ack of id {id} is {:?}",
            packet.raw
        );
    }
}

#[tokio::test]
async fn event_without_ack_id_gets_no_ack() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.send_raw(r#"42/api/v1/chat,["join_room",{"roomId":"quiet"}]"#).await;
    alice.send_raw(r#"42/api/v1/chat,7["join_room",{"roomId":"loud"}]"#).await;
    loop {
        let packet = alice.expect_packet().await;
        if packet.kind == PacketKind::Ack {
            assert_eq!(packet.ack_id, Some(7), "only the event with an id is acked; got {:?}", packet.raw);
            break;
        }
    }
}

#[tokio::test]
async fn join_room_notifies_the_others_but_not_the_joiner() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("lobby").await;
    let ack = bob.join("lobby").await;
    assert_eq!(ack, json!({ "roomId": "lobby", "members": 2 }));
    let status = bob.expect_event("status").await;
    assert_eq!(status, json!({ "roomId": "lobby", "members": 2, "joined": true }));

    let joined = alice.expect_event("user_joined").await;
    assert_eq!(joined["userId"], "bob");
    assert_eq!(joined["roomId"], "lobby");
    assert_recent_millis(&joined["timestamp"]);

    bob.send("lobby", "marker").await;
    bob.expect_no_event_before("user_joined", "message").await;
}

#[tokio::test]
async fn leave_room_is_acked_and_notifies_the_remaining_members() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let _ = bob.expect_event("status").await;

    let ack = bob.leave("lobby").await;
    assert_eq!(ack, json!({ "roomId": "lobby", "members": 1 }));
    let status = bob.expect_event("status").await;
    assert_eq!(status, json!({ "roomId": "lobby", "members": 1, "joined": false }));

    let left = alice.expect_event("user_left").await;
    assert_eq!(left["userId"], "bob");
    assert_eq!(left["roomId"], "lobby");
    assert_recent_millis(&left["timestamp"]);
}

#[tokio::test]
async fn send_message_reaches_every_member_sender_included_and_no_one_else() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let mut carol = Client::connect_user(&server, "carol").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    carol.join("elsewhere").await;

    let ack = alice.send("lobby", "hello lobby").await;
    for client in [&mut alice, &mut bob] {
        let message = client.expect_message("hello lobby").await;
        assert_eq!(message["id"], ack["id"], "the ack names the delivered message");
        assert_eq!(message["roomId"], "lobby");
        assert_eq!(message["senderId"], "alice");
    }

    carol.send("elsewhere", "carol's own").await;
    let first_seen = carol.expect_event("message").await;
    assert_eq!(first_seen["content"], "carol's own", "carol got a message of a room she is not in");
}

#[tokio::test]
async fn message_and_its_ack_carry_every_field() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("lobby").await;
    let ack = alice.send("lobby", "fields").await;
    let message = alice.expect_message("fields").await;

    assert!(ack["id"].as_str().is_some_and(|id| !id.is_empty()), "ack id is a string: {ack}");
    assert_recent_millis(&ack["timestamp"]);
    assert_eq!(
        message,
        json!({
            "id": ack["id"],
            "roomId": "lobby",
            "content": "fields",
            "senderId": "alice",
            "timestamp": ack["timestamp"],
        })
    );
}

#[tokio::test]
async fn own_message_arrives_before_its_ack() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("lobby").await;
    let _ = alice.expect_event("status").await;

    alice.send_raw(r#"42/api/v1/chat,5["send_message",{"roomId":"lobby","content":"order"}]"#).await;
    let first = alice.expect_packet().await;
    assert!(first.raw.starts_with(r#"42/api/v1/chat,["message",{"#), "first came {:?}", first.raw);
    assert_eq!(first.event_payload()["content"], "order");
    let second = alice.expect_packet().await;
    assert!(second.raw.starts_with("43/api/v1/chat,5[{"), "second came {:?}", second.raw);
    assert_eq!(second.ack_args()[0]["id"], first.event_payload()["id"]);
}

#[tokio::test]
async fn message_ids_increase_within_a_room_and_are_unique_across_rooms() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("one").await;
    bob.join("two").await;
    let mut seen = HashSet::new();
    let (mut last_one, mut last_two): (Option<String>, Option<String>) = (None, None);
    for round in 0..20 {
        for (client, room, last) in [(&mut alice, "one", &mut last_one), (&mut bob, "two", &mut last_two)] {
            let content = format!("{room}-{round}");
            client.send(room, &content).await;
            let message = client.expect_message(&content).await;
            let id = message["id"].as_str().expect("message id is a string").to_owned();
            assert!(seen.insert(id.clone()), "message id {id} was used twice");
            if let Some(previous) = last.as_deref() {
                assert!(
                    id_increases(previous, &id),
                    "in room {room}, id {id} does not increase after {previous}"
                );
            }
            *last = Some(id);
        }
    }
}

#[tokio::test]
async fn status_follows_every_join_including_a_repeated_one_and_every_leave() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("lobby").await;
    assert_eq!(
        alice.expect_event("status").await,
        json!({ "roomId": "lobby", "members": 1, "joined": true })
    );
    let again = alice.join("lobby").await;
    assert_eq!(again, json!({ "roomId": "lobby", "members": 1 }));
    assert_eq!(
        alice.expect_event("status").await,
        json!({ "roomId": "lobby", "members": 1, "joined": true })
    );
    alice.leave("lobby").await;
    assert_eq!(
        alice.expect_event("status").await,
        json!({ "roomId": "lobby", "members": 0, "joined": false })
    );
}

#[tokio::test]
async fn handshake_room_id_joins_and_status_follows_the_connect_packet() {
    let server = TestServer::start_default().await;
    let mut alice = Client::builder(&server)
        .payload_token(&server.token("alice").sign())
        .room("lobby")
        .label("alice")
        .connect()
        .await;
    let first = alice.expect_packet().await;
    assert_eq!(first.event_name(), Some("status"), "the packet after 40 is {:?}", first.raw);
    assert_eq!(first.event_payload(), json!({ "roomId": "lobby", "members": 1, "joined": true }));

    let _bob = Client::builder(&server)
        .query_token(&server.token("bob").sign())
        .room("lobby")
        .label("bob")
        .connect()
        .await;
    let joined = alice.expect_event("user_joined").await;
    assert_eq!(joined["userId"], "bob");
    assert_eq!(joined["roomId"], "lobby");
}

#[tokio::test]
async fn error_acks_carry_the_error_object() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.send_raw(r#"42/api/v1/chat,9["leave_room",{"roomId":"never-joined"}]"#).await;
    let ack = alice.expect_ack(9).await;
    assert_eq!(ack.len(), 1, "one argument: {ack:?}");
    assert_eq!(ack[0]["error"]["code"], 404, "ack {ack:?}");
    assert!(ack[0]["error"]["message"].is_string(), "ack {ack:?}");
    alice.expect_error(404).await;
}
