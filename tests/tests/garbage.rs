//! Garbage on the wire. Each offender is cut off (or, for a binary chat event,
//! refused with 400) and nothing else is affected: a bystander in the same
//! room hears `user_left` and keeps chatting, and fresh clients still chat.

use tests::{CHAT, Client, Closed, Config, TestServer, assert_server_still_chats, json};

fn config() -> Config {
    Config { max_payload: 1000, ..Config::default() }
}

/// Connects an offender and a bystander, both in `lobby`.
async fn offender_and_bystander(server: &TestServer) -> (Client, Client) {
    let mut offender = Client::connect_user(server, "offender").await;
    let mut bystander = Client::connect_user(server, "bystander").await;
    offender.join("lobby").await;
    bystander.join("lobby").await;
    (offender, bystander)
}

/// The offender was closed: the bystander hears it and chats on, and so do new clients.
async fn assert_only_the_offender_suffered(server: &TestServer, bystander: &mut Client) {
    let left = bystander.expect_event_where("user_left", |left| left["userId"] == "offender").await;
    assert_eq!(left["roomId"], "lobby");
    bystander.send("lobby", "bystander still here").await;
    bystander.expect_message("bystander still here").await;
    assert_server_still_chats(server).await;
}

/// Sends `frame` from a fresh offender and returns how its connection ended.
async fn close_after(server: &TestServer, frame: &str) -> Closed {
    let (mut offender, mut bystander) = offender_and_bystander(server).await;
    offender.send_raw(frame).await;
    let closed = offender.expect_close().await;
    assert_only_the_offender_suffered(server, &mut bystander).await;
    closed
}

#[tokio::test]
async fn unparsable_engineio_packet_closes_with_1002() {
    let server = TestServer::start(config()).await;
    for frame in ["x", "9", "", "{\"not\":\"engine.io\"}"] {
        let closed = close_after(&server, frame).await;
        assert_eq!(closed.code, Some(1002), "after {frame:?}: {closed}");
    }
}

#[tokio::test]
async fn unparsable_socketio_packet_closes_the_connection() {
    let server = TestServer::start(config()).await;
    let frames = [
        "49".to_owned(),
        format!("42{CHAT},[\"send_message\",{{"),
        format!("42{CHAT},{{\"roomId\":\"lobby\",\"content\":\"x\"}}"),
        format!("42{CHAT},\"send_message\""),
        format!("42{CHAT},12x[\"send_message\",{{}}]"),
    ];
    for frame in &frames {
        // Any close will do: PROTOCOL.md fixes no code for this case.
        close_after(&server, frame).await;
    }
}

#[tokio::test]
async fn binary_frame_where_none_is_expected_closes_the_connection() {
    let server = TestServer::start(config()).await;
    let (mut offender, mut bystander) = offender_and_bystander(&server).await;
    offender.send_binary(&[0xde, 0xad, 0xbe, 0xef]).await;
    offender.expect_close().await;
    assert_only_the_offender_suffered(&server, &mut bystander).await;
}

#[tokio::test]
async fn frame_over_max_payload_closes_with_1009() {
    let server = TestServer::start(config()).await;
    let (mut offender, mut bystander) = offender_and_bystander(&server).await;
    // Just under the limit is fine...
    offender.send("lobby", &"y".repeat(900)).await;
    // ...just over it is not.
    let frame =
        format!("42{CHAT},{}", json!(["send_message", { "roomId": "lobby", "content": "z".repeat(1000) }]));
    offender.send_raw(&frame).await;
    let closed = offender.expect_close().await;
    assert_eq!(closed.code, Some(1009), "closed with {closed}");
    let first = bystander.expect_event("message").await;
    assert_eq!(first["content"], "y".repeat(900));
    assert_only_the_offender_suffered(&server, &mut bystander).await;
    let leaked = bystander.take_event("message");
    assert!(leaked.is_none(), "the oversized message was delivered: {leaked:?}");
    server.wait_for_metric("broker_limit_refusals_total{limit=\"payload\"}", 1).await;
}

#[tokio::test]
async fn binary_chat_event_is_refused_with_400_and_the_connection_stays_up() {
    let server = TestServer::start(config()).await;
    let (mut offender, mut bystander) = offender_and_bystander(&server).await;

    offender.send_raw(&format!(r#"451-{CHAT},["send_message",{{"_placeholder":true,"num":0}}]"#)).await;
    offender.send_binary(b"binary content").await;
    offender.expect_error(400).await;

    offender.send_raw(&format!(r#"451-{CHAT},12["send_message",{{"_placeholder":true,"num":0}}]"#)).await;
    offender.send_binary(b"binary content").await;
    let ack = offender.expect_ack(12).await;
    assert_eq!(ack.first().map(|arg| arg["error"]["code"].clone()), Some(json!(400)), "ack {ack:?}");
    offender.expect_error(400).await;

    offender.send("lobby", "text is fine").await;
    let first = bystander.expect_event("message").await;
    assert_eq!(first["content"], "text is fine", "a binary event was delivered");
}

#[tokio::test]
async fn event_before_namespace_connect_closes_the_connection() {
    // socket.io closes a connection that sends a packet for a namespace it has
    // not joined ("invalid state").
    let server = TestServer::start(config()).await;
    let mut bystander = Client::connect_user(&server, "bystander").await;
    bystander.join("lobby").await;
    let mut offender = Client::builder(&server).label("offender").open().await;
    offender.send_raw(&format!(r#"42{CHAT},["join_room",{{"roomId":"lobby"}}]"#)).await;
    offender.expect_close().await;
    bystander.send("lobby", "nobody joined").await;
    let message = bystander.expect_no_event_before("user_joined", "message").await;
    assert_eq!(message["content"], "nobody joined");
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn unsolicited_client_ack_is_ignored() {
    let server = TestServer::start(config()).await;
    let (mut offender, mut bystander) = offender_and_bystander(&server).await;
    offender.send_raw(&format!(r#"43{CHAT},99["nobody asked"]"#)).await;
    offender.send("lobby", "after a stray ack").await;
    bystander.expect_message("after a stray ack").await;
}

#[tokio::test]
async fn an_integer_beyond_64_bits_is_valid_json_and_the_event_is_handled() {
    // socket.io's JSON.parse reads such a number as a float; Python's json.dumps writes one
    // for any big int. The event is handled as it is there, not taken for garbage.
    let server = TestServer::start(config()).await;
    let (mut sender, mut bystander) = offender_and_bystander(&server).await;
    let huge = "123456789012345678901234567890";
    sender.send_raw(&format!(r#"42{CHAT},7["join_room",{{"roomId":"attic","n":{huge}}}]"#)).await;
    let ack = sender.expect_ack(7).await;
    assert_eq!(ack.first().map(|arg| arg["roomId"].clone()), Some(json!("attic")), "ack {ack:?}");
    sender
        .send_raw(&format!(r#"42{CHAT},["send_message",{{"roomId":"lobby","content":"big","n":-{huge}}}]"#))
        .await;
    let message = bystander.expect_event("message").await;
    assert_eq!(message["content"], "big");
}
