//! Engine.IO heartbeat: the server pings every `ping_interval`; a client that
//! answers stays, a silent one is closed after `ping_timeout` and its rooms
//! hear `user_left` (when its recovery window closes). These tests run on paused tokio time: the clock jumps to
//! the broker's next timer whenever every task waits, so 100 ms intervals
//! cost no wall time and cannot flake on a loaded machine.

use std::time::Duration;

use tests::{Client, Config, TestServer};

fn fast_heartbeat() -> Config {
    Config {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(100),
        // A lost connection's rooms hear `user_left` when the window closes.
        recovery_window: Duration::from_millis(300),
        ..Config::default()
    }
}

#[tokio::test(start_paused = true)]
async fn client_answering_pings_stays_connected_across_pings() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("lobby").await;
    for _ in 0..6 {
        alice.expect_ping().await;
    }
    assert!(alice.pings() >= 6);
    alice.send("lobby", "still alive").await;
    alice.expect_message("still alive").await;
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_closed_and_the_room_hears_user_left() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    let mut bob = Client::connect_user(&server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice.set_auto_pong(false);

    // Bob reads (answering his pings) while Alice reads nothing and answers nothing.
    let left = bob.expect_event("user_left").await;
    assert_eq!(left["userId"], "alice");
    assert_eq!(left["roomId"], "lobby");

    let closed = alice.expect_close().await;
    assert!(alice.pings() >= 1, "alice was closed ({closed}) without ever being pinged");

    for _ in 0..3 {
        bob.expect_ping().await;
    }
    bob.send("lobby", "bob is fine").await;
    bob.expect_message("bob is fine").await;
}

#[tokio::test(start_paused = true)]
async fn client_that_stops_answering_is_closed() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut alice = Client::connect_user(&server, "alice").await;
    for _ in 0..3 {
        alice.expect_ping().await;
    }
    alice.set_auto_pong(false);
    let closed = alice.expect_close().await;
    assert!(alice.pings() >= 4, "closed ({closed}) before an unanswered ping");
}
