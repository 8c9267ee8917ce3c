//! Graceful shutdown: cancelling the token sends every client `41<ns>,` and a
//! WebSocket close 1001, stops accepting, and `run` returns `Ok`.

use std::time::Duration;

use tests::{CHAT, Client, Config, TestServer, json};
use tokio::net::TcpStream;

const OTHER: &str = "/api/v1/other";

#[tokio::test]
async fn shutdown_sends_disconnect_then_close_1001_and_run_returns_ok() {
    let server = TestServer::start_default().await;
    let mut alice = Client::connect_user(&server, "alice").await;
    alice.join("lobby").await;
    let _ = alice.expect_event("status").await;

    server.cancel();
    let disconnect = alice.expect_packet().await;
    assert_eq!(disconnect.raw, format!("41{CHAT},"));
    let closed = alice.expect_close().await;
    assert_eq!(closed.code, Some(1001), "closed with {closed}");
    server.join().await.expect("run returns Ok after a graceful shutdown");
}

#[tokio::test]
async fn shutdown_disconnects_every_namespace_of_every_client() {
    let server = TestServer::start(Config {
        namespaces: vec![CHAT.to_owned(), OTHER.to_owned()],
        ..Config::default()
    })
    .await;
    let token = server.token("multi").sign();
    let mut alice =
        Client::builder(&server).namespace(CHAT).payload_token(&server.token("alice").sign()).connect().await;
    let mut bob =
        Client::builder(&server).namespace(OTHER).payload_token(&server.token("bob").sign()).connect().await;
    let mut multi = Client::builder(&server).label("multi").open().await;
    multi.connect_namespace(CHAT, Some(json!({ "token": token }))).await.expect("chat accepts");
    multi.connect_namespace(OTHER, Some(json!({ "token": token }))).await.expect("other accepts");

    server.cancel();
    for (client, namespace) in [(&mut alice, CHAT), (&mut bob, OTHER)] {
        client.use_namespace(namespace);
        let closed = client.expect_disconnect_then_close().await;
        assert_eq!(closed.code, Some(1001), "{namespace}: closed with {closed}");
    }
    multi.use_namespace(CHAT);
    let closed = multi.expect_disconnect_then_close().await;
    assert_eq!(closed.code, Some(1001), "closed with {closed}");
    let other_disconnect = multi.backlog();
    assert!(
        other_disconnect.contains(&format!("41{OTHER},")),
        "the multiplexed client got no DISCONNECT for {OTHER}; it got {other_disconnect:?}"
    );
    server.join().await.expect("run returns Ok");
}

#[tokio::test]
async fn shutdown_without_clients_returns_ok() {
    let server = TestServer::start_default().await;
    // Make sure the broker is serving before it is stopped.
    let response = tests::http::get(server.addr, "/health", &[]).await;
    assert_eq!(response.status, 200);
    server.shutdown().await.expect("run returns Ok");
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let server = TestServer::start_default().await;
    let addr = server.addr;
    let _alice = Client::connect_user(&server, "alice").await;
    server.shutdown().await.expect("run returns Ok");
    assert!(TcpStream::connect(addr).await.is_err(), "{addr} still accepts connections after shutdown");
}

#[tokio::test]
async fn shutdown_completes_even_if_a_client_never_reads() {
    let server =
        TestServer::start(Config { shutdown_timeout: Duration::from_millis(500), ..Config::default() }).await;
    let _stalled = Client::connect_user(&server, "stalled").await;
    let mut reader = Client::connect_user(&server, "reader").await;
    server.cancel();
    let closed = reader.expect_disconnect_then_close().await;
    assert_eq!(closed.code, Some(1001), "closed with {closed}");
    // TestServer::join fails the test if run outlives its shutdown_timeout by WAIT.
    server.join().await.expect("run returns Ok");
}
