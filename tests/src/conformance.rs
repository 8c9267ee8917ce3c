//! The Engine.IO cases of the official protocol suites, written once and
//! run against both endpoints of the conformance server (`/engine.io/` for
//! the Engine.IO suite, `/socket.io/` for the Engine.IO part of the
//! Socket.IO suite). Each function is one case, named as the suite names it;
//! the test files call them.
//!
//! Where a suite sleeps to order two requests, the case here is written so
//! that either order must give the answer the suite expects.

use serde_json::Value;

use crate::engine::{Frame, Polling};

fn open_keys(open: &Value) -> Vec<String> {
    let mut keys: Vec<String> = open.as_object().map(|map| map.keys().cloned().collect()).unwrap_or_default();
    keys.sort();
    keys
}

fn assert_open_packet(open: &Value, upgrades: &Value) {
    assert_eq!(open_keys(open), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert!(open["sid"].is_string(), "{open}");
    assert_eq!(&open["upgrades"], upgrades);
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
}

/// handshake, HTTP long-polling: successfully opens a session.
pub async fn polling_successfully_opens_a_session(polling: &Polling) {
    let response = polling.handshake_response().await;
    assert_eq!(response.status, 200);
    let text = response.text();
    assert!(text.starts_with('0'), "{text:?}");
    let open: Value = serde_json::from_str(&text[1..]).expect("open packet JSON");
    assert_open_packet(&open, &serde_json::json!(["websocket"]));
}

/// handshake, HTTP long-polling: fails with an invalid 'EIO' query parameter.
pub async fn polling_fails_with_an_invalid_eio_query_parameter(polling: &Polling) {
    for query in ["transport=polling", "EIO=abc&transport=polling"] {
        let response = crate::http::get(polling.addr, &polling.target(query), &[]).await;
        assert_eq!(response.status, 400, "{query}");
    }
}

/// handshake, HTTP long-polling: fails with an invalid 'transport' query parameter.
pub async fn polling_fails_with_an_invalid_transport_query_parameter(polling: &Polling) {
    for query in ["EIO=4", "EIO=4&transport=abc"] {
        let response = crate::http::get(polling.addr, &polling.target(query), &[]).await;
        assert_eq!(response.status, 400, "{query}");
    }
}

/// handshake, HTTP long-polling: fails with an invalid request method.
pub async fn polling_fails_with_an_invalid_request_method(polling: &Polling) {
    for method in ["POST", "PUT"] {
        let response =
            crate::http::request(polling.addr, method, &polling.target("EIO=4&transport=polling"), &[], b"")
                .await;
        assert_eq!(response.status, 400, "{method}");
    }
}

/// handshake, WebSocket: successfully opens a session.
pub async fn websocket_successfully_opens_a_session(polling: &Polling) {
    let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
    let text = socket.next_text().await;
    assert!(text.starts_with('0'), "{text:?}");
    let open: Value = serde_json::from_str(&text[1..]).expect("open packet JSON");
    assert_open_packet(&open, &serde_json::json!([]));
}

/// handshake, WebSocket: fails with an invalid 'EIO' query parameter.
pub async fn websocket_fails_with_an_invalid_eio_query_parameter(polling: &Polling) {
    for query in ["transport=websocket", "EIO=abc&transport=websocket"] {
        assert_eq!(polling.websocket(query).await.err(), Some(400), "{query}");
    }
}

/// handshake, WebSocket: fails with an invalid 'transport' query parameter.
pub async fn websocket_fails_with_an_invalid_transport_query_parameter(polling: &Polling) {
    for query in ["EIO=4", "EIO=4&transport=abc"] {
        assert_eq!(polling.websocket(query).await.err(), Some(400), "{query}");
    }
}

/// heartbeat, HTTP long-polling: sends ping/pong packets.
pub async fn polling_sends_ping_pong_packets(polling: &Polling) {
    let (sid, _) = polling.open().await;
    for _ in 0..3 {
        let poll = polling.get(&sid).await;
        assert_eq!((poll.status, poll.text()), (200, "2".to_owned()));
        let push = polling.post(&sid, b"3").await;
        assert_eq!(push.status, 200);
    }
}

/// heartbeat, HTTP long-polling: closes the session upon ping timeout. The
/// suite sleeps past the timeout; here the held GET sees the close instead.
pub async fn polling_closes_the_session_upon_ping_timeout(polling: &Polling) {
    let (sid, _) = polling.open().await;
    let ping = polling.get(&sid).await;
    assert_eq!(ping.text(), "2");
    let held = polling.get(&sid).await;
    assert_eq!((held.status, held.text()), (200, "1".to_owned()), "the held GET learns of the close");
    assert_eq!(polling.get(&sid).await.status, 400);
}

/// heartbeat, WebSocket: sends ping/pong packets.
pub async fn websocket_sends_ping_pong_packets(polling: &Polling) {
    let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
    socket.next_text().await;
    for _ in 0..3 {
        assert_eq!(socket.next_text().await, "2");
        socket.send("3").await;
    }
}

/// heartbeat, WebSocket: closes the session upon ping timeout.
pub async fn websocket_closes_the_session_upon_ping_timeout(polling: &Polling) {
    let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
    socket.expect_closed().await;
}

/// close, HTTP long-polling: forcefully closes the session. The GET and the
/// POST `1` race, as in the suite; either way the GET gets a noop.
pub async fn polling_forcefully_closes_the_session(polling: &Polling) {
    let (sid, _) = polling.open().await;
    let (poll, _) = tokio::join!(polling.get(&sid), polling.post(&sid, b"1"));
    assert_eq!((poll.status, poll.text()), (200, "6".to_owned()));
    assert_eq!(polling.get(&sid).await.status, 400);
}

/// close, WebSocket: forcefully closes the session.
pub async fn websocket_forcefully_closes_the_session(polling: &Polling) {
    let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
    socket.next_text().await;
    socket.send("1").await;
    socket.expect_closed().await;
}

/// Opens a polling session and a WebSocket for its upgrade, probed.
async fn probed(polling: &Polling) -> (String, crate::engine::RawSocket) {
    let (sid, _) = polling.open().await;
    let mut socket =
        polling.websocket(&format!("EIO=4&transport=websocket&sid={sid}")).await.expect("upgrade accepted");
    socket.send("2probe").await;
    assert_eq!(socket.next_not_ping().await, Frame::Text("3probe".to_owned()));
    (sid, socket)
}

/// upgrade: successfully upgrades from HTTP long-polling to WebSocket. With
/// `echo`, checks a message round trip after the switch (the Engine.IO
/// echo endpoint); without, that the switch is accepted.
pub async fn successfully_upgrades_from_http_long_polling_to_websocket(polling: &Polling, echo: bool) {
    let (sid, mut socket) = probed(polling).await;
    let poll = polling.get(&sid).await;
    assert_eq!((poll.status, poll.text()), (200, "6".to_owned()), "a noop ends the polling");
    socket.send("5").await;
    if echo {
        socket.send("4hello").await;
        assert_eq!(socket.next_not_ping().await, Frame::Text("4hello".to_owned()));
    }
}

/// Completes the upgrade and proves it done by a round trip over the
/// WebSocket: an echo, or (Socket.IO) a CONNECT answered.
async fn upgraded(polling: &Polling, echo: bool) -> (String, crate::engine::RawSocket) {
    let (sid, mut socket) = probed(polling).await;
    socket.send("5").await;
    if echo {
        socket.send("4first").await;
        assert_eq!(socket.next_not_ping().await, Frame::Text("4first".to_owned()));
    } else {
        socket.send("40").await;
        match socket.next_not_ping().await {
            Frame::Text(text) => assert!(text.starts_with("40{"), "{text:?}"),
            other => panic!("expected the CONNECT answer, got {other:?}"),
        }
    }
    (sid, socket)
}

/// upgrade: ignores HTTP requests with same sid after upgrade.
pub async fn ignores_http_requests_with_same_sid_after_upgrade(polling: &Polling, echo: bool) {
    let (sid, mut socket) = upgraded(polling, echo).await;
    assert_eq!(polling.get(&sid).await.status, 400);
    if echo {
        socket.send("4hello").await;
        assert_eq!(socket.next_not_ping().await, Frame::Text("4hello".to_owned()));
    }
}

/// upgrade: ignores WebSocket connection with same sid after upgrade.
pub async fn ignores_websocket_connection_with_same_sid_after_upgrade(polling: &Polling, echo: bool) {
    let (sid, mut socket) = upgraded(polling, echo).await;
    let mut second = polling
        .websocket(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await
        .expect("accepted, then closed");
    second.expect_closed().await;
    if echo {
        socket.send("4hello").await;
        assert_eq!(socket.next_not_ping().await, Frame::Text("4hello".to_owned()));
    }
}
