//! Backpressure: a member that stops reading its socket fills its outbox and
//! is cut off (close 1008 if a close frame gets through), while every other
//! member of the room keeps receiving every message.

use tests::{Client, Config, TestServer};

const CONTENT_BYTES: usize = 32 * 1024;
const MAX_MESSAGES: usize = 2000;

fn content(index: usize) -> String {
    let mut text = format!("{index:06}:");
    text.push_str(&"x".repeat(CONTENT_BYTES - text.len()));
    text
}

#[tokio::test]
async fn slow_consumer_is_closed_without_stalling_room() {
    let config = Config {
        outbox_bytes: 64 * 1024,
        max_message_length: CONTENT_BYTES,
        max_payload: 4 * CONTENT_BYTES,
        rate_limit_per_sec: 0,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    // A 4 KiB receive buffer keeps the kernel from soaking up the backlog for the slow reader.
    let mut slow = Client::builder(&server)
        .payload_token(&server.token("slow").sign())
        .recv_buffer(4096)
        .label("slow")
        .connect()
        .await;
    slow.join("room").await;
    let mut fast = Client::connect_user(&server, "fast").await;
    let mut sender = Client::connect_user(&server, "sender").await;
    fast.join("room").await;
    sender.join("room").await;
    // From here on, `slow` is never read until the end.

    let mut last_id: Option<String> = None;
    let mut sent = 0;
    let mut slow_left = false;
    while !slow_left || sent < 10 {
        assert!(
            sent < MAX_MESSAGES,
            "the slow reader was not cut off after {sent} messages of {CONTENT_BYTES} bytes"
        );
        let text = content(sent);
        sender.send("room", &text).await;
        sender.expect_message(&text).await;
        let message = fast.expect_event("message").await;
        assert_eq!(
            message["content"].as_str().map(|c| &c[..7]),
            Some(&text[..7]),
            "fast missed or reordered a message"
        );
        let id = message["id"].as_str().expect("message id").to_owned();
        assert_ne!(last_id.as_deref(), Some(id.as_str()), "duplicate message");
        last_id = Some(id);
        sent += 1;
        if let Some(left) = fast.take_event("user_left") {
            assert_eq!(left["userId"], "slow", "someone else left: {left}");
            slow_left = true;
        }
    }

    // Now read what reached the slow reader: a prefix of the messages, then the end.
    slow.set_wait(tests::WAIT * 2);
    let closed = slow.expect_close().await;
    if let Some(code) = closed.code {
        assert_eq!(code, 1008, "the slow consumer's close code");
    }
    assert_eq!(fast.join("room").await["members"], 2, "the slow reader is gone from the room");
}
