//! PROTOCOL.md's "Rules": one name per room, the default room, members-only
//! sending, leave/join edge cases, and `user_left` on every kind of disconnect.

use std::time::Duration;

use tests::{CHAT, Client, Config, TestServer, json};

#[tokio::test]
async fn handshake_room_and_join_room_are_the_same_room() {
    let server = TestServer::start_default().await;
    let mut alice = Client::builder(&server)
        .payload_token(&server.token("alice").sign())
        .room("lobby")
        .label("alice")
        .connect()
        .await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let ack = bob.join("lobby").await;
    assert_eq!(ack["members"], 2, "join ack {ack}");
    assert_eq!(alice.expect_event("user_joined").await["userId"], "bob");
    bob.send("lobby", "same room").await;
    alice.expect_message("same room").await;
}

#[tokio::test]
async fn send_without_room_goes_to_the_room_joined_last() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let mut carol = Client::connect_user(&server, "carol").await;
    bob.join("first").await;
    carol.join("second").await;
    alice.join("first").await;
    alice.join("second").await;

    let ack = alice.emit_with_ack("send_message", json!({ "content": "to the last room" })).await;
    assert!(ack.get("error").is_none(), "ack {ack}");
    let message = carol.expect_message("to the last room").await;
    assert_eq!(message["roomId"], "second");
    assert_eq!(alice.expect_message("to the last room").await["roomId"], "second");

    bob.send("first", "bob's own").await;
    assert_eq!(bob.expect_event("message").await["content"], "bob's own", "bob is not in the last room");
}

#[tokio::test]
async fn send_without_room_after_a_handshake_room_goes_there() {
    let server = TestServer::start_default().await;
    let mut alice = Client::builder(&server)
        .payload_token(&server.token("alice").sign())
        .room("lobby")
        .label("alice")
        .connect()
        .await;
    let ack = alice.emit_with_ack("send_message", json!({ "content": "implicit" })).await;
    assert!(ack.get("error").is_none(), "ack {ack}");
    assert_eq!(alice.expect_message("implicit").await["roomId"], "lobby");
}

#[tokio::test]
async fn send_without_room_and_no_room_joined_is_400() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let ack = alice.emit_with_ack("send_message", json!({ "content": "nowhere" })).await;
    assert_eq!(ack["error"]["code"], 400, "ack {ack}");
    alice.expect_error(400).await;
}

#[tokio::test]
async fn non_member_gets_403_and_nothing_is_delivered() {
    let server = TestServer::start_default().await;
    let mut member = Client::connect_user(&server, "member").await;
    let mut outsider = Client::connect_user(&server, "outsider").await;
    member.join("private").await;

    let ack =
        outsider.emit_with_ack("send_message", json!({ "roomId": "private", "content": "let me in" })).await;
    assert_eq!(ack["error"]["code"], 403, "ack {ack}");
    outsider.expect_error(403).await;

    member.send("private", "members only").await;
    let first_seen = member.expect_event("message").await;
    assert_eq!(first_seen["content"], "members only", "the outsider's message was delivered");
    outsider.join("own-room").await;
    outsider.send("own-room", "outsider's own").await;
    assert_eq!(outsider.expect_event("message").await["content"], "outsider's own");
}

#[tokio::test]
async fn former_member_gets_403_after_leaving() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("lobby").await;
    alice.leave("lobby").await;
    let ack = alice.emit_with_ack("send_message", json!({ "roomId": "lobby", "content": "late" })).await;
    assert_eq!(ack["error"]["code"], 403, "ack {ack}");
    alice.expect_error(403).await;
}

#[tokio::test]
async fn leaving_a_room_not_joined_is_404() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    bob.join("lobby").await;
    let ack = alice.emit_with_ack("leave_room", json!({ "roomId": "lobby" })).await;
    assert_eq!(ack["error"]["code"], 404, "ack {ack}");
    alice.expect_error(404).await;

    // Bob hears no user_left for someone who was never there.
    alice.join("lobby").await;
    let joined = bob.expect_no_event_before("user_left", "user_joined").await;
    assert_eq!(joined["userId"], "alice");
}

#[tokio::test]
async fn joining_a_room_twice_sends_no_second_notice() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    bob.join("lobby").await;
    alice.join("lobby").await;
    assert_eq!(bob.expect_event("user_joined").await["userId"], "alice");

    let again = alice.join("lobby").await;
    assert_eq!(again, json!({ "roomId": "lobby", "members": 2 }));
    alice.send("lobby", "after the second join").await;
    let message = bob.expect_no_event_before("user_joined", "message").await;
    assert_eq!(message["content"], "after the second join");
}

/// Alice is in `first` (with Bob) and `second` (with Carol). `disconnect`
/// ends her connection; both rooms must hear `user_left` and be without her
/// (for a lost connection, once its short recovery window has closed).
async fn assert_disconnect_leaves_every_room(disconnect: impl AsyncFnOnce(Client) -> Option<Client>) {
    let server =
        TestServer::start(Config { recovery_window: Duration::from_millis(200), ..Config::default() }).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let mut carol = Client::connect_user(&server, "carol").await;
    bob.join("first").await;
    carol.join("second").await;
    alice.join("first").await;
    alice.join("second").await;

    let _still_open = disconnect(alice).await;

    for (client, room) in [(&mut bob, "first"), (&mut carol, "second")] {
        let left = client.expect_event_where("user_left", |left| left["userId"] == "alice").await;
        assert_eq!(left["roomId"], room);
        assert!(left["timestamp"].is_u64(), "user_left {left}");
    }
    let mut dave = Client::connect_user(&server, "dave").await;
    assert_eq!(dave.join("first").await["members"], 2, "alice is gone from the first room");
    assert_eq!(dave.join("second").await["members"], 2, "alice is gone from the second room");
}

#[tokio::test]
async fn socketio_disconnect_packet_sends_user_left_to_every_room() {
    assert_disconnect_leaves_every_room(async |mut alice| {
        alice.send_raw(&format!("41{CHAT},")).await;
        // The transport stays open: only the namespace is left.
        Some(alice)
    })
    .await;
}

#[tokio::test]
async fn engineio_close_packet_sends_user_left_to_every_room() {
    assert_disconnect_leaves_every_room(async |mut alice| {
        alice.send_raw("1").await;
        let _ = alice.expect_close().await;
        None
    })
    .await;
}

#[tokio::test]
async fn websocket_close_sends_user_left_to_every_room() {
    assert_disconnect_leaves_every_room(async |alice| {
        alice.close().await;
        None
    })
    .await;
}

#[tokio::test]
async fn dropped_tcp_connection_sends_user_left_to_every_room() {
    assert_disconnect_leaves_every_room(async |alice| {
        drop(alice);
        None
    })
    .await;
}
