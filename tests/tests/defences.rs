//! The broker's defences, one test per way it could be taken down or made to
//! misbehave by what a client sends: each offender is refused or cut off,
//! everybody else keeps chatting, and the counts come back right.

use std::sync::Arc;

use broker::engineio::Handshake;
use broker::gateway::ChatGateway;
use broker::socketio::{Accepted, ConnectError, DisconnectReason, Event, Handler, JsonError, Socket};
use simd_json::BorrowedValue;
use tests::{CHAT, Client, Config, TestServer, assert_server_still_chats, http, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn refusals(limit: &str) -> String {
    format!("broker_limit_refusals_total{{limit=\"{limit}\"}}")
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn deeply_nested_json_before_authentication_closes_only_that_connection() {
    let server = TestServer::start_default().await;
    let mut bystander = Client::connect_user(&server, "bystander").await;
    bystander.join("lobby").await;

    let mut attacker = Client::builder(&server).label("attacker").open().await;
    attacker.send_raw(&format!(r#"40{CHAT},{{"token":{}}}"#, nested(10_000))).await;
    let closed = attacker.expect_close().await;
    assert_eq!(closed.code, Some(1002), "closed with {closed}");

    bystander.send("lobby", "still up").await;
    bystander.expect_message("still up").await;
    assert_server_still_chats(&server).await;
    assert_eq!(server.metric(&refusals("json_depth")).await, 1);
}

#[tokio::test]
async fn deeply_nested_json_in_an_event_closes_only_the_sender() {
    let server = TestServer::start_default().await;
    let mut offender = Client::connect_user(&server, "offender").await;
    let mut bystander = Client::connect_user(&server, "bystander").await;
    offender.join("lobby").await;
    bystander.join("lobby").await;

    offender.send_raw(&format!(r#"42{CHAT},["send_message",{}]"#, nested(10_000))).await;
    let closed = offender.expect_close().await;
    assert_eq!(closed.code, Some(1002), "closed with {closed}");
    bystander.expect_event_where("user_left", |left| left["userId"] == "offender").await;
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn nesting_within_the_limit_is_an_ordinary_bad_payload() {
    let server = TestServer::start(Config { max_json_depth: 8, ..Config::default() }).await;
    let mut client = Client::connect_user(&server, "alice").await;
    client.send_raw(&format!(r#"42{CHAT},["send_message",{}]"#, nested(6))).await;
    client.expect_error(400).await;
    client.send_raw(&format!(r#"42{CHAT},["send_message",{}]"#, nested(8))).await;
    assert_eq!(client.expect_close().await.code, Some(1002));
}

#[tokio::test]
async fn a_token_with_an_absurd_expiry_does_not_leak_its_connection() {
    let server = TestServer::start(short_recovery()).await;
    for exp in [json!(1e19), json!(1e300), json!(u64::MAX), json!(4_102_444_800_000_u64)] {
        let token = server.token("far-future").claim("exp", exp.clone()).sign();
        // Accepted or refused, the connection must end cleanly when the client leaves.
        match Client::builder(&server).payload_token(&token).label("far-future").try_connect().await {
            Ok(mut client) => {
                client.join("future").await;
                client.close().await;
            }
            Err(refusal) => {
                assert_eq!(refusal.connect_error()["message"], "Unauthorized");
            }
        }
        server.wait_for_metric("broker_connections_open", 0).await;
    }
    assert_eq!(server.metric("broker_session_panics_total").await, 0);
    server.wait_for_metric("broker_rooms", 0).await;
    assert_server_still_chats(&server).await;
}

/// The chat gateway, but an event named `boom` panics in the Socket.IO
/// layer's call, outside the gateway's own guard.
struct Explosive(ChatGateway);

impl Handler for Explosive {
    fn authorize(
        &self,
        handshake: &Handshake,
        auth: Option<&BorrowedValue<'_>>,
    ) -> Result<Accepted, ConnectError> {
        self.0.authorize(handshake, auth)
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        self.0.on_connect(socket);
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event<'_>) {
        assert!(event.name != "boom", "a forced panic on the session's path");
        self.0.on_event(socket, event);
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.0.on_disconnect(socket, reason);
    }

    fn on_refused_event(&self, socket: &Arc<Socket>, ack_id: Option<u64>, error: JsonError) {
        self.0.on_refused_event(socket, ack_id, error);
    }
}

#[tokio::test]
async fn a_panic_in_one_connection_leaves_the_others_chatting_and_the_counts_right() {
    let server = TestServer::start_with_handlers(short_recovery(), |config| {
        let auth = Arc::new(broker::auth::Authenticator::from_config(config).expect("auth"));
        let gateway = Explosive(ChatGateway::new(auth, config));
        vec![(CHAT.to_owned(), Arc::new(gateway) as Arc<dyn Handler>)]
    })
    .await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    let mut victim = Client::connect_user(&server, "victim").await;
    for client in [&mut alice, &mut bob, &mut victim] {
        client.join("lobby").await;
    }
    victim.join("elsewhere").await;

    victim.emit("boom", json!({})).await;
    let closed = victim.expect_close().await;
    assert_eq!(closed.code, Some(1011), "closed with {closed}");
    alice.expect_event_where("user_left", |left| left["userId"] == "victim").await;
    bob.expect_event_where("user_left", |left| left["userId"] == "victim").await;

    alice.send("lobby", "after the panic").await;
    bob.expect_message("after the panic").await;
    alice.expect_message("after the panic").await;

    server.wait_for_metric("broker_connections_open", 2).await;
    assert_eq!(server.metric("broker_session_panics_total").await, 1);
    assert_eq!(server.metric("broker_sockets").await, 2);
    assert_eq!(server.metric("broker_rooms").await, 1, "the victim's own room is gone");
    assert_eq!(server.metric("broker_room_members").await, 2);
    drop((alice, bob));
    server.wait_for_metric("broker_connections_open", 0).await;
    server.wait_for_metric("broker_room_members", 0).await;
}

#[tokio::test]
async fn attachments_for_a_namespace_not_joined_are_refused_before_buffering() {
    let server = TestServer::start_default().await;
    let mut attacker = Client::builder(&server).label("unauthenticated").open().await;
    attacker.send_raw(&format!(r#"452-{CHAT},["x",{{"_placeholder":true,"num":0}}]"#)).await;
    assert_eq!(attacker.expect_close().await.code, Some(1002));
    assert_eq!(server.metric(&refusals("attachments")).await, 1);
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn more_attachments_than_the_limit_close_the_connection() {
    let server = TestServer::start_default().await;
    let mut offender = Client::connect_user(&server, "offender").await;
    offender.send_raw(&format!(r#"4511-{CHAT},["send_message",{{"_placeholder":true,"num":0}}]"#)).await;
    assert_eq!(offender.expect_close().await.code, Some(1002));
    assert_eq!(server.metric(&refusals("attachments")).await, 1);
}

#[tokio::test]
async fn attachments_over_max_payload_in_all_close_the_connection() {
    let server = TestServer::start(Config { max_payload: 1000, ..Config::default() }).await;
    let mut offender = Client::connect_user(&server, "offender").await;
    let placeholders: Vec<_> = (0..3).map(|num| json!({"_placeholder": true, "num": num})).collect();
    offender.send_raw(&format!("453-{CHAT},{}", json!(["send_message", placeholders]))).await;
    // The second one takes the packet over the limit.
    offender.send_binary(&[7; 600]).await;
    offender.send_binary(&[7; 600]).await;
    assert_eq!(offender.expect_close().await.code, Some(1009));
}

#[tokio::test]
async fn rooms_per_socket_are_capped_with_429() {
    let server = TestServer::start(Config { max_rooms_per_socket: 3, ..Config::default() }).await;
    let mut client = Client::connect_user(&server, "collector").await;
    for room in ["a", "b", "c"] {
        client.join(room).await;
    }
    let ack = client.emit_with_ack("join_room", json!({"roomId": "d"})).await;
    assert_eq!(ack["error"]["code"], 429, "ack {ack}");
    client.expect_error(429).await;
    // Joining a room it is in is not a new room.
    let ack = client.join("a").await;
    assert_eq!(ack["members"], 1);
    client.leave("b").await;
    client.join("d").await;
    assert_eq!(server.metric(&refusals("rooms_per_socket")).await, 1);
}

#[tokio::test]
async fn a_socket_in_many_rooms_leaves_them_all_and_everyone_hears_it() {
    let server =
        TestServer::start(Config { max_rooms_per_socket: 2001, rate_limit_per_sec: 0, ..short_recovery() })
            .await;
    let mut hoarder = Client::connect_user(&server, "hoarder").await;
    let mut witness = Client::connect_user(&server, "witness").await;
    witness.join("room-1999").await;
    for index in 0..2000 {
        hoarder.emit("join_room", json!({"roomId": format!("room-{index}")})).await;
    }
    hoarder.join("last").await;
    assert_eq!(server.metric("broker_room_members").await, 2002);
    hoarder.close().await;
    witness.expect_event_where("user_left", |left| left["userId"] == "hoarder").await;
    server.wait_for_metric("broker_rooms", 1).await;
    server.wait_for_metric("broker_room_members", 1).await;
}

#[tokio::test]
async fn an_oversized_request_head_is_answered_431() {
    let server = TestServer::start_default().await;
    let target = format!("{}?EIO=4&transport=websocket", server.path());
    let cookie = format!("session={}", "c".repeat(300 * 1024));
    let response = http::upgrade(server.addr, &target, &[("Cookie", &cookie)]).await;
    assert_eq!(response.status, 431, "{}", response.text());
    let many: Vec<(String, String)> =
        (0..100).map(|index| (format!("X-Extra-{index}"), "1".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let response = http::upgrade(server.addr, &target, &many).await;
    assert_eq!(response.status, 431, "{}", response.text());
    assert_eq!(server.metric(&refusals("head_size")).await, 2);
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn a_lone_surrogate_room_id_is_refused_never_merged() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.send_raw(&format!(r#"42{CHAT},1["join_room",{{"roomId":"\u0000z"}}]"#)).await;
    let ack = alice.expect_ack(1).await;
    assert_eq!(ack[0]["members"], 1, "ack {ack:?}");

    let mut mallory = Client::connect_user(&server, "mallory").await;
    for payload in [r#"{"roomId":"\ud800z"}"#, r#"{"roomId":"\udc00z"}"#, r#"{"roomId":"\ud800\u0041"}"#] {
        mallory.send_raw(&format!(r#"42{CHAT},7["join_room",{payload}]"#)).await;
        let ack = mallory.expect_ack(7).await;
        assert_eq!(ack[0]["error"]["code"], 400, "{payload}: ack {ack:?}");
        mallory.expect_error(400).await;
    }
    // Content with a lone surrogate is refused too, not rewritten.
    mallory.join("\u{0}z").await;
    alice.expect_event("user_joined").await;
    mallory
        .send_raw(&format!(r#"42{CHAT},8["send_message",{{"roomId":"\u0000z","content":"a\udfffb"}}]"#))
        .await;
    assert_eq!(mallory.expect_ack(8).await[0]["error"]["code"], 400);
    mallory.send("\u{0}z", "plain").await;
    let message = alice.expect_event("message").await;
    assert_eq!(message["content"], "plain", "the refused message was delivered");
    assert_eq!(server.metric(&refusals("invalid_unicode")).await, 4);
}

#[tokio::test]
async fn a_key_given_twice_is_refused_with_400() {
    let server = TestServer::start_default().await;
    let mut client = Client::connect_user(&server, "alice").await;
    client.join("a").await;
    client
        .send_raw(&format!(r#"42{CHAT},3["send_message",{{"roomId":"a","roomId":"b","content":"x"}}]"#))
        .await;
    assert_eq!(client.expect_ack(3).await[0]["error"]["code"], 400);
    client.expect_error(400).await;
    client.send("a", "still connected").await;
    client.expect_message("still connected").await;
    assert_eq!(server.metric(&refusals("duplicate_key")).await, 1);
}

#[tokio::test]
async fn a_query_that_is_not_utf8_is_refused_with_400() {
    let server = TestServer::start_default().await;
    for room in ["%FF", "%C3", "%ED%A0%80"] {
        let target = format!("{}?EIO=4&transport=websocket&roomId={room}", server.path());
        let response = http::upgrade(server.addr, &target, &[]).await;
        assert_eq!(response.status, 400, "roomId={room}: {}", response.text());
    }
}

#[tokio::test]
async fn connections_per_address_and_in_total_are_capped_with_503() {
    let server = TestServer::start(Config { max_connections_per_ip: 3, ..Config::default() }).await;
    let mut clients = Vec::new();
    for index in 0..3 {
        clients.push(Client::connect_user(&server, format!("user-{index}")).await);
    }
    let target = format!("{}?EIO=4&transport=websocket", server.path());
    let response = http::upgrade(server.addr, &target, &[]).await;
    assert_eq!(response.status, 503, "{}", response.text());
    // Places come back when connections end. (`/metrics` is asked from the
    // same address, so it too is refused while the address is full.)
    for client in clients.drain(..) {
        client.close().await;
    }
    server.wait_for_metric("broker_connections_open", 0).await;
    assert!(server.metric(&refusals("connections_per_ip")).await >= 1);
    for index in 0..3 {
        clients.push(Client::connect_user(&server, format!("again-{index}")).await);
    }

    let server = TestServer::start(Config { max_connections: 2, ..Config::default() }).await;
    let _first = Client::connect_user(&server, "first").await;
    let _second = Client::connect_user(&server, "second").await;
    let response = http::upgrade(server.addr, &target, &[]).await;
    assert_eq!(response.status, 503, "{}", response.text());
}

#[tokio::test]
async fn polling_sessions_count_against_the_address_cap() {
    let server = TestServer::start(Config { max_connections_per_ip: 3, ..Config::default() }).await;
    let polling = tests::engine::Polling::new(server.addr, server.path());
    // A handshake takes a place for its connection and one for the session;
    // the connection's is given back when the request is over, the
    // session's when the session ends. Two sessions and a third handshake's
    // connection fill the address.
    let (first, _) = polling.open().await;
    let (_second, _) = polling.open().await;
    assert_eq!(polling.handshake_response().await.status, 503);
    // Closing one gives its place back.
    assert_eq!(polling.post(&first, b"1").await.status, 200);
    let deadline = tokio::time::Instant::now() + tests::WAIT;
    while polling.handshake_response().await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the closed session's place did not come back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failed_connects_are_capped_per_connection() {
    let server = TestServer::start(Config { max_connect_failures: 3, ..Config::default() }).await;
    let mut guesser = Client::builder(&server).label("guesser").open().await;
    for attempt in 0..4 {
        guesser.send_raw(&format!(r#"40{CHAT},{{"token":"forged-{attempt}"}}"#)).await;
    }
    let closed = guesser.expect_close().await;
    assert_eq!(closed.code, Some(1008), "closed with {closed}");
    let refusals_seen = guesser.backlog().iter().filter(|raw| raw.starts_with("44")).count();
    assert_eq!(refusals_seen, 4, "each attempt was answered: {:?}", guesser.backlog());
    assert_eq!(server.metric(&refusals("connect_failures")).await, 1);
    assert_server_still_chats(&server).await;
}

/// Opens a raw WebSocket session, sends a masked close frame with `code` and
/// returns the code of the server's close frame.
async fn close_code_answering(server: &TestServer, code: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET {}?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.path()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mask = [1u8, 2, 3, 4];
    let [high, low] = code.to_be_bytes();
    let frame = [0x88, 0x82, mask[0], mask[1], mask[2], mask[3], high ^ mask[0], low ^ mask[1]];
    stream.write_all(&frame).await.expect("write close");
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(tests::WAIT, stream.read_to_end(&mut bytes)).await;
    let head_end = bytes.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let mut frames = bytes.get(head_end..)?;
    while let [first, length, rest @ ..] = frames {
        let length = usize::from(*length & 0x7f);
        if first & 0x0f == 0x8 {
            return rest.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]]));
        }
        frames = rest.get(length..)?;
    }
    None
}

#[tokio::test]
async fn invalid_close_codes_are_answered_1002() {
    let server = TestServer::start_default().await;
    for code in [999, 1004, 1005, 1006, 1015, 2000, 5000] {
        assert_eq!(close_code_answering(&server, code).await, Some(1002), "after close code {code}");
    }
    for code in [1000, 1001, 3000, 4999] {
        assert_eq!(close_code_answering(&server, code).await, Some(1000), "after close code {code}");
    }
}

/// A recovery window short enough that a closed client's rooms hear it left
/// (and are emptied) well within a test's wait.
fn short_recovery() -> Config {
    Config { recovery_window: std::time::Duration::from_millis(200), ..Config::default() }
}
