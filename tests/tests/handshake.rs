//! HTTP and Engine.IO handshake: refusals with socket.io's JSON error codes,
//! `/health`, the Origin check, and the open packet.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tests::http::{self, HttpResponse};
use tests::{Client, Config, TestServer, Value, assert_server_still_chats, json};

fn assert_refusal(response: &HttpResponse, status: u16, code: u64, message: &str) {
    assert_eq!(response.status, status, "status; body {:?}", response.text());
    assert!(
        response.header("content-type").is_some_and(|value| value.contains("json")),
        "a JSON content type, got {:?}",
        response.header("content-type")
    );
    assert_eq!(response.json(), json!({ "code": code, "message": message }));
}

#[tokio::test]
async fn unsupported_protocol_version_is_refused_with_code_5() {
    let server = TestServer::start_default().await;
    for query in ["EIO=3&transport=websocket", "EIO=5&transport=websocket", "transport=websocket"] {
        let response = http::upgrade(server.addr, &format!("/socket.io/?{query}"), &[]).await;
        assert_refusal(&response, 400, 5, "Unsupported protocol version");
    }
}

#[tokio::test]
async fn unknown_transport_is_refused_with_code_0() {
    let server = TestServer::start_default().await;
    for query in ["EIO=4&transport=carrier-pigeon", "EIO=4"] {
        let response = http::get(server.addr, &format!("/socket.io/?{query}"), &[]).await;
        assert_refusal(&response, 400, 0, "Transport unknown");
    }
}

#[tokio::test]
async fn polling_handshake_opens_an_upgradable_session() {
    let server = TestServer::start_default().await;
    let response = http::get(server.addr, "/socket.io/?EIO=4&transport=polling", &[]).await;
    assert_eq!(response.status, 200, "body {:?}", response.text());
    let text = response.text();
    let open: Value = serde_json::from_str(text.strip_prefix('0').expect("an open packet")).expect("JSON");
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25_000);
}

#[tokio::test]
async fn an_upgrade_head_too_large_for_the_fast_path_is_refused() {
    let server = TestServer::start_default().await;
    let cookie = format!("session={}", "c".repeat(20 * 1024));
    let response =
        http::upgrade(server.addr, "/socket.io/?EIO=4&transport=websocket", &[("Cookie", &cookie)]).await;
    assert_ne!(response.status, 101, "hyper never hands an upgrade over");
    assert_server_still_chats(&server).await;
}

#[tokio::test]
async fn websocket_with_unknown_sid_is_refused_with_code_1() {
    let server = TestServer::start_default().await;
    let response =
        http::upgrade(server.addr, "/socket.io/?EIO=4&transport=websocket&sid=no-such-session", &[]).await;
    assert_refusal(&response, 400, 1, "Session ID unknown");
}

#[tokio::test]
async fn plain_get_without_upgrade_is_refused_with_code_3() {
    let server = TestServer::start_default().await;
    let response = http::get(server.addr, "/socket.io/?EIO=4&transport=websocket", &[]).await;
    assert_refusal(&response, 400, 3, "Bad request");
}

#[tokio::test]
async fn health_answers_200_with_json() {
    let server = TestServer::start_default().await;
    let response = http::get(server.addr, "/health", &[]).await;
    assert_eq!(response.status, 200, "body {:?}", response.text());
    assert!(
        response.header("content-type").is_some_and(|value| value.contains("json")),
        "a JSON content type, got {:?}",
        response.header("content-type")
    );
    let _ = response.json();
}

/// The value of one sample line of an OpenMetrics text exposition.
fn metric(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|line| line.split(' ').next() == Some(name));
    let value = line.and_then(|line| line.split(' ').nth(1)).unwrap_or_else(|| panic!("no {name} in {text}"));
    value.parse().unwrap_or_else(|_| panic!("{name} is not a number: {value:?}"))
}

#[tokio::test]
async fn metrics_count_sessions_messages_and_writes() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("metrics").await;
    bob.join("metrics").await;
    alice.send("metrics", "counted").await;
    bob.expect_message("counted").await;
    alice.expect_message("counted").await;
    let response = http::get(server.addr, "/metrics", &[]).await;
    assert_eq!(response.status, 200, "body {:?}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/openmetrics-text")),
        "content type {:?}",
        response.header("content-type")
    );
    let text = response.text();
    assert_eq!(metric(&text, "broker_connections_total"), 2);
    assert_eq!(metric(&text, "broker_connections_open"), 2, "both chatters are still connected");
    assert_eq!(metric(&text, "broker_messages_total"), 1);
    assert_eq!(metric(&text, "broker_deliveries_total"), 2, "the message went to both members");
    let (frames, writes) = (metric(&text, "broker_frames_out_total"), metric(&text, "broker_writes_total"));
    assert!(writes > 0 && frames >= writes, "{frames} frames in {writes} writes");
    // The pacer's delay is published; its value depends on how busy this
    // test's runtime (clients included) happened to be.
    assert!(metric(&text, "broker_write_delay_us") <= 40_000, "within the default max_write_delay_ms");
}

fn cors_config() -> Config {
    Config { cors_origins: vec!["http://allowed.test".to_owned()], ..Config::default() }
}

#[tokio::test]
async fn origin_outside_cors_origins_is_refused_with_403() {
    let server = TestServer::start(cors_config()).await;
    let response = http::upgrade(
        server.addr,
        "/socket.io/?EIO=4&transport=websocket",
        &[("Origin", "http://evil.test")],
    )
    .await;
    assert_eq!(response.status, 403, "body {:?}", response.text());
    let refusal = Client::builder(&server).origin("http://evil.test").try_open().await.err();
    assert_eq!(refusal.map(|refusal| refusal.http_status()), Some(403));
}

#[tokio::test]
async fn missing_origin_is_allowed_when_cors_origins_are_set() {
    let server = TestServer::start(cors_config()).await;
    let response = http::upgrade(server.addr, "/socket.io/?EIO=4&transport=websocket", &[]).await;
    assert_eq!(response.status, 101);
    let token = server.token("no-origin").sign();
    Client::builder(&server).payload_token(&token).connect().await;
}

#[tokio::test]
async fn allowed_origin_is_upgraded() {
    let server = TestServer::start(cors_config()).await;
    let response = http::upgrade(
        server.addr,
        "/socket.io/?EIO=4&transport=websocket",
        &[("Origin", "http://allowed.test")],
    )
    .await;
    assert_eq!(response.status, 101);
    let token = server.token("allowed-origin").sign();
    Client::builder(&server).origin("http://allowed.test").payload_token(&token).connect().await;
}

/// The upgrade request as a browser would send it, from `origin`.
fn upgrade_request(server: &TestServer, origin: &str) -> String {
    let mut request =
        format!("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for (name, value) in http::UPGRADE_HEADERS.iter().chain(&[("Origin", origin)]) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Reads the response head and the first WebSocket frame after it.
async fn read_head_and_frame(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(head_end) = buf.windows(4).position(|window| window == b"\r\n\r\n") {
            let frame = &buf[head_end + 4..];
            if frame.len() >= 2 && frame[1] < 126 && frame.len() >= 2 + usize::from(frame[1]) {
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                return (head, frame[..2 + usize::from(frame[1])].to_vec());
            }
        }
        let mut chunk = [0_u8; 4096];
        let read = tokio::time::timeout(tests::WAIT, stream.read(&mut chunk))
            .await
            .expect("the response within the wait")
            .expect("reading the response");
        assert!(read > 0, "closed before the open packet; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test]
async fn upgrade_request_arriving_in_pieces_gets_the_101_and_the_open_packet() {
    let server = TestServer::start(cors_config()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connecting");
    for piece in upgrade_request(&server, "http://allowed.test").as_bytes().chunks(37) {
        stream.write_all(piece).await.expect("writing a piece of the request");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (head, frame) = read_head_and_frame(&mut stream).await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 switching protocols\r\n"), "head {head:?}");
    for line in [
        "connection: upgrade",
        "upgrade: websocket",
        // RFC 6455's own example key and answer.
        "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=",
        "access-control-allow-origin: http://allowed.test",
    ] {
        assert!(head.split("\r\n").any(|header| header == line), "{line:?} in {head:?}");
    }
    assert_eq!(frame[0], 0x81, "an unmasked final text frame");
    let open = std::str::from_utf8(&frame[2..]).expect("UTF-8 text");
    let open: Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("open packet JSON");
    assert!(open["sid"].as_str().is_some_and(|sid| !sid.is_empty()), "open packet {open}");
}

#[tokio::test]
async fn upgrade_with_a_large_or_long_head_is_served_too() {
    // More than the head buffer starts with, and many headers, but within
    // the limits (16 KiB, 64 headers): the upgrade is served as usual.
    let server = TestServer::start_default().await;
    let cookie = format!("session={}", "c".repeat(9 * 1024));
    let token = server.token("big-cookie").sign();
    let mut client = Client::builder(&server)
        .header("Cookie", &cookie)
        .payload_token(&token)
        .label("cookie")
        .connect()
        .await;
    client.join("big-heads").await;

    let mut builder = Client::builder(&server).label("many-headers");
    for index in 0..40 {
        builder = builder.header(&format!("X-Extra-{index}"), "1");
    }
    let token = server.token("many-headers").sign();
    let mut client = builder.payload_token(&token).connect().await;
    client.join("big-heads").await;
}

#[tokio::test]
async fn any_origin_is_allowed_when_cors_origins_are_empty() {
    let server = TestServer::start_default().await;
    let token = server.token("anywhere").sign();
    Client::builder(&server).origin("http://anywhere.test").payload_token(&token).connect().await;
}

#[tokio::test]
async fn open_packet_carries_the_configured_heartbeat_and_payload_limit() {
    let config = Config {
        ping_interval: Duration::from_millis(12_345),
        ping_timeout: Duration::from_millis(6_789),
        max_payload: 54_321,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let client = Client::builder(&server).open().await;
    let open = client.open_packet();
    assert!(open["sid"].as_str().is_some_and(|sid| !sid.is_empty()), "sid in {open}");
    assert_eq!(open["upgrades"], json!([]), "open packet {open}");
    assert_eq!(open["pingInterval"], 12_345, "open packet {open}");
    assert_eq!(open["pingTimeout"], 6_789, "open packet {open}");
    assert_eq!(open["maxPayload"], 54_321, "open packet {open}");
}

#[tokio::test]
async fn every_connection_gets_its_own_sids() {
    let server = TestServer::start_default().await;
    let first = Client::connect_user(&server, "first").await;
    let second = Client::connect_user(&server, "second").await;
    assert_ne!(first.open_packet()["sid"], second.open_packet()["sid"]);
    let socket_sid = |client: &Client| {
        client.connect_data().and_then(|data| data["sid"].as_str()).map(str::to_owned).unwrap_or_default()
    };
    assert!(!socket_sid(&first).is_empty(), "40 packet carries a sid: {:?}", first.connect_data());
    assert_ne!(socket_sid(&first), socket_sid(&second));
}

#[tokio::test]
async fn configured_path_serves_the_endpoint() {
    let server = TestServer::start(Config { path: "/chat-io/".to_owned(), ..Config::default() }).await;
    let response = http::upgrade(server.addr, "/chat-io/?EIO=4&transport=websocket", &[]).await;
    assert_eq!(response.status, 101);
    let mut client = Client::connect_user(&server, "custom-path").await;
    client.join("room").await;
}

#[tokio::test(start_paused = true)]
async fn session_without_a_namespace_is_closed_after_the_connect_timeout() {
    // socket.io's connectTimeout (45 s): an Engine.IO session that never
    // CONNECTs to a namespace is closed. Paused time makes the wait free.
    let server = TestServer::start_default().await;
    let mut idle = Client::builder(&server).label("idle").open().await;
    idle.set_wait(Duration::from_secs(120));
    idle.expect_close().await;
    assert_server_still_chats(&server).await;
}
