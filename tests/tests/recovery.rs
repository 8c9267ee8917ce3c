//! Connection state recovery (docs/protocol.md, "Connection state
//! recovery"): a client whose connection drops comes back with `{pid,
//! offset, token}` in its CONNECT and gets its session back — the same sid,
//! its rooms, and what it missed once, in order — and the rules that make
//! it stricter than socket.io's: the token is checked again, a pid recovers
//! once and only for its own user, a client that got nothing still recovers
//! its rooms, and offsets are never on acks.

use std::time::Duration;

use tests::recovery::{comeback, next_event, offset_of};
use tests::{CHAT, Client, Config, PacketKind, RevocationFile, TestServer, Value, json};

/// The `message` contents of the next `count` messages, in arrival order.
async fn contents(client: &mut Client, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let packet = next_event(client, "message").await;
        seen.push(packet.event_payload()["content"].as_str().unwrap_or_default().to_owned());
    }
    seen
}

/// Alice and Bob in `lobby`; Alice has processed `first` (its offset is
/// returned with her pid and token), then her TCP connection is dropped and
/// the broker has suspended her session.
async fn alice_drops(server: &TestServer, bob: &mut Client) -> (Value, String, String, Value) {
    let token = server.token("alice").jti("alice-1").sign();
    let mut alice = Client::builder(server).payload_token(&token).label("alice").connect().await;
    let first = alice.connect_data().cloned().expect("connected");
    assert!(first["pid"].is_string(), "the CONNECT answer carries a pid: {first}");
    alice.join("lobby").await;
    bob.join("lobby").await;
    bob.send("lobby", "first").await;
    let seen = next_event(&mut alice, "message").await;
    assert_eq!(seen.event_payload()["content"], "first");
    let offset = offset_of(&seen);
    drop(alice);
    server.wait_for_metric("broker_suspended_sessions", 1).await;
    (first["pid"].clone(), offset, token, first["sid"].clone())
}

#[tokio::test]
async fn room_events_carry_an_offset_and_acks_never_do() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let ack_id = alice.next_ack_id();
    alice.send_raw(&format!(r#"42{CHAT},{ack_id}["join_room",{{"roomId":"lobby"}}]"#)).await;
    assert_eq!(alice.expect_ack(ack_id).await, [json!({ "roomId": "lobby", "members": 1 })], "no offset");
    let status = next_event(&mut alice, "status").await;
    offset_of(&status);
    let ack_id = alice.next_ack_id();
    alice
        .send_raw(&format!(r#"42{CHAT},{ack_id}["send_message",{{"roomId":"lobby","content":"hi"}}]"#))
        .await;
    let ack = alice.expect_ack(ack_id).await;
    assert_eq!(ack.len(), 1, "an ack carries no offset: {ack:?}");
    let message = next_event(&mut alice, "message").await;
    assert_eq!(offset_of(&message), ack[0]["id"], "a message's id is its offset");
}

#[tokio::test]
async fn a_dropped_client_recovers_its_session_and_what_it_missed_once_in_order() {
    let server = TestServer::start_default().await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    bob.send("lobby", "second").await;
    bob.send("lobby", "third").await;

    let mut alice = Client::builder(&server)
        .auth_payload(comeback(&token, &pid, Some(&offset)))
        .label("alice")
        .connect()
        .await;
    let answer = alice.connect_data().cloned().expect("connected");
    assert_eq!((&answer["sid"], &answer["pid"]), (&sid, &pid), "the same session");
    bob.send("lobby", "fourth").await;
    assert_eq!(contents(&mut alice, 3).await, ["second", "third", "fourth"]);
    assert_eq!(server.metric("broker_recoveries_total").await, 1);

    // Bob heard nothing of Alice's absence, and she still counts as one member.
    bob.expect_message("fourth").await;
    assert_eq!(bob.take_event("user_left"), None);
    assert_eq!(bob.take_event("user_joined"), None);
    assert_eq!(bob.leave("lobby").await["members"], 1);
}

#[tokio::test]
async fn a_client_that_got_no_offset_still_recovers_its_rooms() {
    let server = TestServer::start_default().await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, _, token, sid) = alice_drops(&server, &mut bob).await;
    bob.send("lobby", "while away").await;

    let mut alice = Client::builder(&server).auth_payload(comeback(&token, &pid, None)).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
    // Having processed nothing, it gets everything it was sent, then the room goes on.
    bob.send("lobby", "after").await;
    assert_eq!(contents(&mut alice, 3).await, ["first", "while away", "after"]);
}

#[tokio::test]
async fn a_second_connect_with_the_same_pid_gets_a_fresh_session() {
    let server = TestServer::start_default().await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    bob.send("lobby", "missed").await;
    let payload = comeback(&token, &pid, Some(&offset));
    let mut alice = Client::builder(&server).auth_payload(payload.clone()).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
    assert_eq!(contents(&mut alice, 1).await, ["missed"]);

    let mut twin = Client::builder(&server).auth_payload(payload).label("twin").connect().await;
    let answer = twin.connect_data().cloned().expect("connected");
    assert_ne!(answer["sid"], sid, "a pid recovers once");
    assert_ne!(answer["pid"], pid);
    // No second copy: the twin is in no room, and what it is sent next is its own.
    twin.emit("send_message", json!({ "roomId": "lobby", "content": "x" })).await;
    twin.expect_error(403).await;
}

#[tokio::test]
async fn another_users_pid_gets_a_fresh_session_and_leaves_the_session_alone() {
    let server = TestServer::start_default().await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    bob.send("lobby", "for alice only").await;

    let mallory_token = server.token("mallory").sign();
    let mut mallory =
        Client::builder(&server).auth_payload(comeback(&mallory_token, &pid, Some(&offset))).connect().await;
    assert_ne!(mallory.connect_data().expect("connected")["sid"], sid);
    mallory.emit("send_message", json!({ "roomId": "lobby", "content": "x" })).await;
    mallory.expect_error(403).await;
    assert_eq!(mallory.take_event("message"), None, "none of alice's messages");

    let mut alice =
        Client::builder(&server).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid, "still alice's to recover");
    assert_eq!(contents(&mut alice, 1).await, ["for alice only"]);
}

#[tokio::test]
async fn a_forged_or_missing_token_with_a_pid_is_refused() {
    let server = TestServer::start_default().await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    let forged = tests::token("alice").secret("not-the-servers-secret").sign();
    for payload in [comeback(&forged, &pid, Some(&offset)), json!({ "pid": pid, "offset": offset })] {
        let refusal = Client::builder(&server).auth_payload(payload).try_connect().await.err();
        assert_eq!(refusal.expect("refused").connect_error()["message"], "Unauthorized");
    }
    let alice = Client::builder(&server).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
}

/// Opens a connection and sends CONNECT with `payload`; returns the
/// refusal's message and what arrived before it.
async fn refused_before_anything(server: &TestServer, payload: Value) -> (Value, Vec<String>) {
    let mut client = Client::builder(server).label("comeback").open().await;
    let refusal = client.connect_namespace(CHAT, Some(payload)).await.expect_err("refused");
    (refusal.connect_error()["message"].clone(), client.backlog())
}

#[tokio::test]
async fn an_expired_token_gets_connect_error_and_nothing_replayed() {
    let server = TestServer::start(Config { jwt_leeway: Duration::ZERO, ..Config::default() }).await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    bob.send("lobby", "missed").await;
    let expired = server.token("alice").exp_in(-60).sign();
    let (message, before) = refused_before_anything(&server, comeback(&expired, &pid, Some(&offset))).await;
    assert_eq!(message, "Unauthorized");
    assert_eq!(before, Vec::<String>::new(), "no missed packet before the refusal");
    let mut alice =
        Client::builder(&server).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
    assert_eq!(contents(&mut alice, 1).await, ["missed"]);
}

#[tokio::test]
async fn a_token_revoked_while_away_gets_connect_error_and_nothing_replayed() {
    let mut revocations = RevocationFile::new();
    revocations.revoke("someone-else");
    let server = TestServer::start(Config {
        revocation_file: Some(revocations.path()),
        revocation_reload: Duration::from_millis(20),
        ..Config::default()
    })
    .await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, _) = alice_drops(&server, &mut bob).await;
    bob.send("lobby", "missed").await;
    revocations.revoke("alice-1");
    // The list is reloaded when a new connection with that jti is refused.
    let probe = server.token("probe").jti("alice-1").sign();
    while Client::builder(&server).payload_token(&probe).try_connect().await.is_ok() {}

    let (message, before) = refused_before_anything(&server, comeback(&token, &pid, Some(&offset))).await;
    assert_eq!(message, "Token revoked");
    assert_eq!(before, Vec::<String>::new(), "no missed packet before the refusal");
}

#[tokio::test]
async fn outside_the_window_the_room_hears_user_left_and_the_client_starts_afresh() {
    let server =
        TestServer::start(Config { recovery_window: Duration::from_millis(200), ..Config::default() }).await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    assert_eq!(bob.expect_event("user_left").await["userId"], "alice");
    server.wait_for_metric("broker_suspended_sessions", 0).await;
    let mut alice =
        Client::builder(&server).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_ne!(alice.connect_data().expect("connected")["sid"], sid);
    alice.emit("send_message", json!({ "roomId": "lobby", "content": "x" })).await;
    alice.expect_error(403).await;
}

#[tokio::test]
async fn a_gap_the_store_trimmed_gets_a_fresh_session_never_a_partial_replay() {
    let server = TestServer::start(Config {
        recovery_max_bytes: 64 * 1024,
        rate_limit_per_sec: 0,
        max_message_length: 8192,
        ..Config::default()
    })
    .await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let (pid, offset, token, sid) = alice_drops(&server, &mut bob).await;
    let long = "x".repeat(8000);
    for _ in 0..12 {
        bob.send("lobby", &long).await;
    }
    let mut alice =
        Client::builder(&server).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_ne!(alice.connect_data().expect("connected")["sid"], sid, "a fresh session");
    // Alice's old session is over: the room hears she left, once.
    assert_eq!(bob.expect_event("user_left").await["userId"], "alice");
    alice.emit("send_message", json!({ "roomId": "lobby", "content": "x" })).await;
    alice.expect_error(403).await;
    assert_eq!(alice.take_event("message"), None, "nothing of the gap");
}

/// A client that sends DISCONNECT and resets its connection (it closed with
/// unread data) while the broker still writes to it has left, not lost its
/// connection: the broker's failed write must not make it a session kept
/// for recovery. The order is forced: the DISCONNECT and the reset are in the
/// broker's socket before anything is broadcast, and the broadcast comes
/// before the broker runs any task (this runtime has one thread), so the
/// writer fails before the driver reads.
#[tokio::test]
async fn a_disconnect_then_a_reset_is_a_leave_even_when_a_write_fails_first() {
    let (server, io) = TestServer::start_with_io(Config::default()).await;
    let chat = io.namespace(CHAT).expect("the chat namespace");
    let mut bob = Client::connect_user(&server, "bob").await;
    let token = server.token("alice").sign();
    let mut alice = Client::builder(&server).payload_token(&token).label("alice").connect().await;
    let first = alice.connect_data().cloned().expect("connected");
    alice.join("lobby").await;
    bob.join("lobby").await;
    next_event(&mut alice, "user_joined").await;

    alice.send_then_reset(&format!("41{CHAT},"));
    let delivered = chat.to_room("lobby", None, "message", &json!({ "content": "to a gone client" }));
    assert_eq!(delivered, Some(2), "alice's outbox still takes it: her session is not closed yet");

    assert_eq!(bob.expect_event("user_left").await["userId"], "alice", "at once, not after the window");
    assert_eq!(server.metric("broker_suspended_sessions").await, 0);
    let mut alice =
        Client::builder(&server).auth_payload(comeback(&token, &first["pid"], None)).connect().await;
    let answer = alice.connect_data().cloned().expect("connected");
    assert_ne!(answer["sid"], first["sid"], "a fresh session");
    assert_ne!(answer["pid"], first["pid"]);
    alice.emit("send_message", json!({ "roomId": "lobby", "content": "x" })).await;
    alice.expect_error(403).await;
}

#[tokio::test]
async fn with_recovery_off_there_is_no_pid_and_no_offset() {
    let server = TestServer::start(Config { recovery_window: Duration::ZERO, ..Config::default() }).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    assert_eq!(alice.connect_data().expect("connected")["pid"], Value::Null);
    alice.join("lobby").await;
    alice.send("lobby", "plain").await;
    let message = next_event(&mut alice, "message").await;
    assert_eq!(message.data.as_ref().and_then(Value::as_array).map(Vec::len), Some(2), "{}", message.raw);
    assert_eq!(message.kind, PacketKind::Event);
}
