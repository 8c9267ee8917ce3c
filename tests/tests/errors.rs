//! PROTOCOL.md's error table: each code, emitted as `error` to the sender
//! only and, when the event carried an ack id, as `[{"error":{code,message}}]`;
//! the connection stays up unless the row says otherwise. (500 cannot be
//! provoked from outside.)

use std::time::Duration;

use tests::{CHAT, Client, Config, PacketKind, Refusal, RevocationFile, TestServer, Value, json};

/// Sends `frame_args` (`["event",payload]`) with an ack id and checks both the
/// error ack and the `error` event carry `code`.
async fn assert_error(client: &mut Client, frame_args: &str, code: u64) {
    let id = client.next_ack_id();
    client.send_raw(&format!("42{CHAT},{id}{frame_args}")).await;
    let ack = client.expect_ack(id).await;
    assert_eq!(ack.len(), 1, "{frame_args}: the ack has one argument: {ack:?}");
    assert_eq!(ack[0]["error"]["code"], code, "{frame_args}: ack {ack:?}");
    assert!(
        ack[0]["error"]["message"].as_str().is_some_and(|message| !message.is_empty()),
        "{frame_args}: ack error without a message: {ack:?}"
    );
    let event = client.expect_error(code).await;
    assert_eq!(event["message"], ack[0]["error"]["message"], "{frame_args}: event and ack disagree");
}

#[tokio::test]
async fn malformed_payloads_are_400_and_the_connection_stays_up() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("r").await;
    bob.join("r").await;
    let too_long_room = "r".repeat(129);
    let cases = [
        r#"["join_room"]"#.to_owned(),
        r#"["join_room",null]"#.to_owned(),
        r#"["join_room","r"]"#.to_owned(),
        r#"["join_room",{}]"#.to_owned(),
        r#"["join_room",{"roomId":5}]"#.to_owned(),
        r#"["join_room",{"roomId":""}]"#.to_owned(),
        format!(r#"["join_room",{{"roomId":"{too_long_room}"}}]"#),
        r#"["leave_room"]"#.to_owned(),
        r#"["leave_room",{}]"#.to_owned(),
        r#"["leave_room",{"roomId":""}]"#.to_owned(),
        format!(r#"["leave_room",{{"roomId":"{too_long_room}"}}]"#),
        r#"["send_message"]"#.to_owned(),
        r#"["send_message",[1,2]]"#.to_owned(),
        r#"["send_message",{"roomId":"r"}]"#.to_owned(),
        r#"["send_message",{"roomId":"r","content":5}]"#.to_owned(),
        r#"["send_message",{"roomId":"r","content":""}]"#.to_owned(),
        r#"["send_message",{"roomId":"r","content":"   "}]"#.to_owned(),
        r#"["send_message",{"roomId":"r","content":" \t\n "}]"#.to_owned(),
        r#"["send_message",{"roomId":5,"content":"x"}]"#.to_owned(),
        r#"["send_message",{"roomId":"","content":"x"}]"#.to_owned(),
        format!(r#"["send_message",{{"roomId":"{too_long_room}","content":"x"}}]"#),
    ];
    for case in &cases {
        assert_error(&mut alice, case, 400).await;
    }
    alice.send("r", "still fine").await;
    let message = bob.expect_no_event_before("error", "message").await;
    assert_eq!(message["content"], "still fine", "bob got alice's errors or messages that were refused");
}

#[tokio::test]
async fn room_id_at_the_length_limit_is_accepted() {
    let server = TestServer::start(Config { max_room_id_length: 8, ..Config::default() }).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    assert_eq!(alice.join("12345678").await["roomId"], "12345678");
    assert_error(&mut alice, r#"["join_room",{"roomId":"123456789"}]"#, 400).await;
    // Bytes, not characters: four two-byte characters make 8 bytes, five make 10.
    alice.join("éééé").await;
    assert_error(&mut alice, r#"["join_room",{"roomId":"ééééé"}]"#, 400).await;
}

#[tokio::test]
async fn content_over_the_configured_limit_is_413_counting_bytes() {
    let server = TestServer::start(Config { max_message_length: 16, ..Config::default() }).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("r").await;
    alice.send("r", "0123456789abcdef").await;
    alice.send("r", "éééééééé").await;
    assert_error(&mut alice, r#"["send_message",{"roomId":"r","content":"0123456789abcdefg"}]"#, 413).await;
    assert_error(&mut alice, r#"["send_message",{"roomId":"r","content":"ééééééééé"}]"#, 413).await;
    alice.send("r", "short again").await;
}

#[tokio::test]
async fn default_content_limit_is_4096_bytes() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("r").await;
    alice.send("r", &"x".repeat(4096)).await;
    let over = json!(["send_message", { "roomId": "r", "content": "x".repeat(4097) }]).to_string();
    assert_error(&mut alice, &over, 413).await;
}

#[tokio::test]
async fn unknown_event_is_404_and_the_connection_stays_up() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    assert_error(&mut alice, r#"["dance",{"roomId":"r"}]"#, 404).await;
    alice.emit("dance", json!({})).await;
    alice.expect_error(404).await;
    alice.join("r").await;
    alice.send("r", "after dancing").await;
}

/// Sets up Alice (whose token is `alice_token`) and Bob in room `lobby`, with
/// everything they were sent so far consumed.
async fn alice_and_bob_in_lobby(server: &TestServer, alice_token: &str) -> (Client, Client) {
    let mut alice = Client::builder(server).payload_token(alice_token).label("alice").connect().await;
    let mut bob = Client::connect_user(server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let _ = alice.expect_event("status").await;
    let _ = alice.expect_event("user_joined").await;
    (alice, bob)
}

/// The lead's order for a token that stops being valid while connected:
/// `error` 401, then `41<ns>,`, then the end of the connection; the room hears
/// `user_left`.
async fn assert_kicked_with_401(alice: &mut Client, bob: &mut Client) {
    let error = alice.expect_packet().await;
    assert_eq!(error.event_name(), Some("error"), "first came {:?}", error.raw);
    assert_eq!(error.event_payload()["code"], 401, "error {:?}", error.raw);
    let disconnect = alice.expect_packet().await;
    assert_eq!(disconnect.kind, PacketKind::Disconnect, "after the error came {:?}", disconnect.raw);
    assert_eq!(disconnect.raw, format!("41{CHAT},"));
    alice.expect_close().await;
    let left = bob.expect_event("user_left").await;
    assert_eq!(left["userId"], "alice");
}

#[tokio::test]
async fn token_expiring_while_connected_gets_401_then_disconnect() {
    let server = TestServer::start(Config { jwt_leeway: Duration::ZERO, ..Config::default() }).await;
    let short_lived = server.token("alice").exp_in(3).sign();
    let (mut alice, mut bob) = alice_and_bob_in_lobby(&server, &short_lived).await;
    alice.set_wait(Duration::from_secs(10));
    assert_kicked_with_401(&mut alice, &mut bob).await;
}

fn revocation_config(revocations: &RevocationFile) -> Config {
    Config {
        revocation_file: Some(revocations.path()),
        revocation_reload: Duration::from_millis(100),
        ..Config::default()
    }
}

#[tokio::test]
async fn jti_revoked_while_connected_gets_401_then_disconnect() {
    let mut revocations = RevocationFile::new();
    let server = TestServer::start(revocation_config(&revocations)).await;
    let token = server.token("alice").jti("jti-live-1").sign();
    let (mut alice, mut bob) = alice_and_bob_in_lobby(&server, &token).await;
    revocations.revoke("jti-live-1");
    assert_kicked_with_401(&mut alice, &mut bob).await;

    let again = Client::builder(&server).payload_token(&token).try_connect().await;
    let refusal = again.err().map(|refusal| refusal.connect_error().clone());
    assert_eq!(refusal, Some(json!({ "message": "Token revoked", "data": { "code": 401 } })));
}

#[tokio::test]
async fn whole_token_revoked_while_connected_gets_401_then_disconnect() {
    let mut revocations = RevocationFile::new();
    let server = TestServer::start(revocation_config(&revocations)).await;
    let token = server.token("alice").sign();
    let (mut alice, mut bob) = alice_and_bob_in_lobby(&server, &token).await;
    revocations.revoke(&token);
    assert_kicked_with_401(&mut alice, &mut bob).await;

    match Client::builder(&server).payload_token(&token).try_connect().await {
        Err(Refusal::ConnectError { data, .. }) => assert_eq!(data["message"], "Token revoked"),
        other => panic!("the revoked token connected again: {:?}", other.err()),
    }
}

fn rate_limited_config() -> Config {
    Config { rate_limit_per_sec: 1, rate_limit_burst: 3, ..Config::default() }
}

fn numbered_message(index: usize) -> Value {
    json!({ "roomId": "lobby", "content": format!("burst {index}") })
}

#[tokio::test]
async fn over_the_rate_limit_is_429_and_the_connection_stays_up() {
    let server = TestServer::start(rate_limited_config()).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    let mut accepted = 0;
    let limited_ack = loop {
        assert!(accepted < 50, "50 events in a row were accepted at 1/s with a burst of 3");
        let ack = alice.emit_with_ack("send_message", numbered_message(accepted)).await;
        if ack.get("error").is_some() {
            break ack;
        }
        accepted += 1;
    };
    assert_eq!(limited_ack["error"]["code"], 429, "ack {limited_ack}");
    alice.expect_error(429).await;

    bob.send("lobby", "are you still there").await;
    alice.expect_message("are you still there").await;
    // Bob saw the accepted messages, in order, and not the refused one.
    for index in 0..accepted {
        assert_eq!(bob.expect_event("message").await["content"], format!("burst {index}"));
    }
    assert_eq!(bob.expect_event("message").await["content"], "are you still there");
}

#[tokio::test]
async fn far_over_the_rate_limit_is_disconnected() {
    let server = TestServer::start(rate_limited_config()).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let _ = alice.expect_event("status").await;

    for index in 0..100 {
        let frame = format!("42{CHAT},{}", json!(["send_message", numbered_message(index)]));
        if alice.try_send_raw(&frame).await.is_err() {
            break;
        }
    }
    alice.expect_close().await;
    let first_error = alice.take_event("error");
    assert_eq!(
        first_error.as_ref().map(|error| error["code"].clone()),
        Some(json!(429)),
        "429 came before the disconnect; received {:?}",
        alice.backlog()
    );
    let left = bob.expect_event("user_left").await;
    assert_eq!(left["userId"], "alice");
}
