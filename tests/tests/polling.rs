//! HTTP long-polling on the broker: chat over polling, the upgrade while a
//! room is broadcast to, a failed upgrade, refusals, CORS, the outbox bound,
//! and abandoned sessions reaped without a leak.

use std::time::Duration;

use tests::engine::{Frame, PollingClient};
use tests::http;
use tests::{CHAT, Client, Config, TestServer, Value, WAIT, assert_server_still_chats, json};

/// A polling client connected to the chat namespace as `sub`, in `room`.
async fn polling_member(server: &TestServer, sub: &str, room: &str) -> PollingClient {
    let token = server.token(sub).sign();
    let mut poller = PollingClient::open(server.addr, server.path(), "").await;
    poller.send(&[&format!(r#"40{CHAT},{{"token":"{token}"}}"#)]).await;
    poller.expect("the CONNECT answer", |packet| packet.starts_with(&format!("40{CHAT},{{"))).await;
    poller.send(&[&format!(r#"42{CHAT},1["join_room",{{"roomId":"{room}"}}]"#)]).await;
    let ack = poller.expect("the join ack", |packet| packet.starts_with(&format!("43{CHAT},1["))).await;
    assert!(ack.contains(&format!(r#""roomId":"{room}""#)), "{ack}");
    poller
}

/// The content of a chat `message` packet.
fn message_content(packet: &str) -> Option<String> {
    let packet = tests::Packet::parse(packet).ok()?;
    (packet.event_name() == Some("message"))
        .then(|| packet.event_payload()["content"].as_str().map(str::to_owned))?
}

async fn health(server: &TestServer) -> Value {
    http::get(server.addr, "/health", &[]).await.json()
}

#[tokio::test]
async fn a_polling_client_chats_with_a_websocket_client() {
    let server = TestServer::start_default().await;
    let mut poller = polling_member(&server, "poller", "mixed").await;
    let mut websocket = Client::connect_user(&server, "websocket").await;
    websocket.join("mixed").await;
    poller.expect("user_joined", |packet| packet.contains("user_joined")).await;

    websocket.send("mixed", "to the poller").await;
    let packet = poller.expect("the message", |packet| message_content(packet).is_some()).await;
    assert_eq!(message_content(&packet).as_deref(), Some("to the poller"));

    poller
        .send(&[&format!(r#"42{CHAT},2["send_message",{{"roomId":"mixed","content":"from the poller"}}]"#)])
        .await;
    let message = websocket.expect_message("from the poller").await;
    assert_eq!(message["senderId"], "poller");
    poller.expect("the send ack", |packet| packet.starts_with(&format!("43{CHAT},2["))).await;
}

#[tokio::test]
async fn a_post_with_several_packets_is_handled_in_order() {
    let server = TestServer::start_default().await;
    let mut poller = polling_member(&server, "batcher", "batch").await;
    let sends: Vec<String> = (0..3)
        .map(|index| {
            format!(r#"42{CHAT},{}["send_message",{{"roomId":"batch","content":"b{index}"}}]"#, 10 + index)
        })
        .collect();
    poller.send(&sends.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for index in 0..3 {
        let packet = poller.expect("a message", |packet| message_content(packet).is_some()).await;
        assert_eq!(message_content(&packet), Some(format!("b{index}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_during_a_broadcast_burst_loses_repeats_and_reorders_nothing() {
    const MESSAGES: usize = 400;
    let server = TestServer::start(Config { rate_limit_per_sec: 0, ..Config::default() }).await;
    let mut poller = polling_member(&server, "upgrader", "burst").await;
    let mut publisher = Client::connect_user(&server, "publisher").await;
    publisher.join("burst").await;
    let publishing = tokio::spawn(async move {
        for index in 0..MESSAGES {
            publisher.send("burst", &format!("m{index}")).await;
        }
    });

    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 20 {
        seen.extend(poller.poll().await.iter().filter_map(|packet| message_content(packet)));
    }
    let target = format!("EIO=4&transport=websocket&sid={}", poller.sid);
    let mut socket = poller.polling.websocket(&target).await.expect("the upgrade is accepted");
    socket.send("2probe").await;
    assert_eq!(socket.next().await, Frame::Text("3probe".to_owned()));
    // Probed: a GET is answered with a noop at once and takes nothing.
    assert!(poller.poll().await.is_empty(), "no packet leaves by polling once the probe is answered");
    socket.send("5").await;
    let by_polling = seen.len();
    while seen.len() < MESSAGES {
        match socket.next().await {
            Frame::Text(text) if text == "2" => socket.send("3").await,
            Frame::Text(text) => seen.extend(message_content(&text)),
            other => panic!("the upgraded session ended: {other:?} after {} messages", seen.len()),
        }
    }
    let expected: Vec<String> = (0..MESSAGES).map(|index| format!("m{index}")).collect();
    assert_eq!(seen, expected, "every message once, in order, across the switch");
    assert!(by_polling < MESSAGES, "the switch happened during the burst ({by_polling} by polling)");
    tokio::time::timeout(WAIT, publishing).await.expect("the publisher finishes").expect("no panic");
    assert_eq!(poller.polling.get(&poller.sid).await.status, 400, "polling is refused after the upgrade");
}

#[tokio::test]
async fn a_failed_upgrade_leaves_a_working_polling_session() {
    let server = TestServer::start_default().await;
    let mut poller = polling_member(&server, "stayer", "stay").await;
    let mut sender = Client::connect_user(&server, "sender").await;
    sender.join("stay").await;

    let target = format!("EIO=4&transport=websocket&sid={}", poller.sid);
    let mut socket = poller.polling.websocket(&target).await.expect("the upgrade is accepted");
    socket.send("2probe").await;
    assert_eq!(socket.next().await, Frame::Text("3probe".to_owned()));
    drop(socket);

    // Polling goes on: the message sent after the failed probe arrives by GET.
    sender.send("stay", "still polling").await;
    let packet = poller.expect("the message", |packet| message_content(packet).is_some()).await;
    assert_eq!(message_content(&packet).as_deref(), Some("still polling"));

    // And a later upgrade succeeds.
    let mut socket = poller.polling.websocket(&target).await.expect("a second upgrade is accepted");
    socket.send("2probe").await;
    assert_eq!(socket.next().await, Frame::Text("3probe".to_owned()));
    socket.send("5").await;
    sender.send("stay", "now on websocket").await;
    loop {
        match socket.next().await {
            Frame::Text(text) if message_content(&text).is_some() => {
                assert_eq!(message_content(&text).as_deref(), Some("now on websocket"));
                break;
            }
            Frame::Text(_) => {}
            other => panic!("the upgraded session ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn polling_refusals_carry_socket_io_json_errors() {
    let server = TestServer::start_default().await;
    let path = server.path().to_owned();
    let check = |response: http::HttpResponse, code: u64, message: &str| {
        assert_eq!(response.status, 400, "body {:?}", response.text());
        assert_eq!(response.json(), json!({ "code": code, "message": message }));
    };
    let unknown = format!("{path}?EIO=4&transport=polling&sid=AAAAAAAAAAA");
    check(http::get(server.addr, &unknown, &[]).await, 1, "Session ID unknown");
    check(http::post(server.addr, &unknown, &[], b"40").await, 1, "Session ID unknown");
    let handshake = format!("{path}?EIO=4&transport=polling");
    check(http::post(server.addr, &handshake, &[], b"").await, 2, "Bad handshake method");

    let poller = PollingClient::open(server.addr, &path, "").await;
    let session = format!("{path}?EIO=4&transport=polling&sid={}", poller.sid);
    check(http::request(server.addr, "PUT", &session, &[], b"").await, 3, "Bad request");
    check(http::post(server.addr, &session, &[], b"abc").await, 3, "Bad request");
    check(http::get(server.addr, &session, &[]).await, 1, "Session ID unknown");
}

#[tokio::test]
async fn a_post_over_max_payload_is_refused_with_413_and_closes_the_session() {
    let server = TestServer::start(Config { max_payload: 1000, ..Config::default() }).await;
    let poller = PollingClient::open(server.addr, server.path(), "").await;
    let body = format!("4{}", "x".repeat(2000));
    let response = poller.polling.post(&poller.sid, body.as_bytes()).await;
    assert_eq!(response.status, 413);
    assert_eq!(poller.polling.get(&poller.sid).await.status, 400, "the session is closed");
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn polling_responses_and_preflights_carry_cors_headers() {
    let config = Config { cors_origins: vec!["http://allowed.test".to_owned()], ..Config::default() };
    let server = TestServer::start(config).await;
    let origin = [("Origin", "http://allowed.test")];
    let assert_cors = |response: &http::HttpResponse| {
        assert_eq!(response.header("access-control-allow-origin"), Some("http://allowed.test"));
        assert_eq!(response.header("access-control-allow-credentials"), Some("true"));
    };
    let handshake = format!("{}?EIO=4&transport=polling", server.path());
    let response = http::get(server.addr, &handshake, &origin).await;
    assert_eq!(response.status, 200);
    assert_cors(&response);
    let sid = serde_json::from_str::<Value>(&response.text()[1..]).expect("open JSON")["sid"]
        .as_str()
        .expect("sid")
        .to_owned();

    let preflight = http::request(
        server.addr,
        "OPTIONS",
        &format!("{handshake}&sid={sid}"),
        &[("Origin", "http://allowed.test"), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_cors(&preflight);
    assert!(preflight.header("access-control-allow-methods").is_some_and(|methods| methods.contains("POST")));

    let post = http::post(server.addr, &format!("{handshake}&sid={sid}"), &origin, b"6").await;
    assert_eq!(post.status, 200);
    assert_cors(&post);
    let refused = http::get(server.addr, &handshake, &[("Origin", "http://evil.test")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json(), json!({ "code": 4, "message": "Forbidden" }));
}

#[tokio::test]
async fn a_polling_member_that_stops_polling_is_cut_off_as_a_slow_consumer() {
    let config = Config { outbox_bytes: 4096, rate_limit_per_sec: 0, ..Config::default() };
    let server = TestServer::start(config).await;
    let poller = polling_member(&server, "sleeper", "slow").await;
    let mut sender = Client::connect_user(&server, "sender").await;
    sender.join("slow").await;
    // From here on the poller never polls.
    let content = "y".repeat(400);
    let mut sent = 0;
    while sender.take_event("user_left").is_none() {
        assert!(sent < 200, "the poller was not cut off after {sent} messages");
        sender.send("slow", &content).await;
        sender.expect_message(&content).await;
        sent += 1;
    }
    assert_eq!(poller.polling.get(&poller.sid).await.status, 400, "the session is gone");
    let metrics = http::get(server.addr, "/metrics", &[]).await.text();
    assert!(metrics.contains("broker_slow_consumers_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_abandoned_polling_handshakes_leave_nothing_behind() {
    const SESSIONS: usize = 2000;
    let config = Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        // All from 127.0.0.1, and each session counts against the address.
        max_connections_per_ip: 0,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let idle = health(&server).await;
    let target = format!("{}?EIO=4&transport=polling", server.path());
    for _ in 0..SESSIONS / 100 {
        let handshakes = (0..100).map(|_| http::get(server.addr, &target, &[]));
        for response in futures_util::future::join_all(handshakes).await {
            assert_eq!(response.status, 200);
        }
    }
    let metrics = http::get(server.addr, "/metrics", &[]).await.text();
    assert!(metrics.contains(&format!("broker_connections_total {SESSIONS}")), "{metrics}");

    // Nobody polls: each session is reaped after pingInterval + pingTimeout.
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    let mut probe = tokio::time::interval(Duration::from_millis(100));
    loop {
        probe.tick().await;
        let now = health(&server).await;
        if now["connections"] == 0 && now["polling"] == 0 && now["tasks"] == idle["tasks"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not back to idle: {now} (idle was {idle})");
    }
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn a_polling_client_between_two_gets_at_shutdown_still_learns_why() {
    let server = TestServer::start_default().await;
    let mut poller = polling_member(&server, "late", "closing").await;
    poller.take_backlog();
    server.cancel();
    // The next GET comes after shutdown started, on a new connection: it gets
    // the DISCONNECT, and the close packet in an answer of its own.
    let disconnect = format!("41{CHAT},");
    poller.expect("the DISCONNECT", |packet| packet == disconnect).await;
    let close = poller.polling.get(&poller.sid).await;
    assert_eq!((close.status, close.text()), (200, "1".to_owned()));
    // With that, the session is over and the broker stops.
    server.join().await.expect("the broker stops cleanly");
}
