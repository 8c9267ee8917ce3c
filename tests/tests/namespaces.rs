//! Namespaces: unknown ones are refused, configured ones are isolated from
//! each other, and one Engine.IO connection may carry several (multiplexing,
//! as a stock socket.io-client does for two namespaces of one host).

use tests::{CHAT, Client, Config, TestServer, json};

const OTHER: &str = "/api/v1/other";

fn two_namespaces() -> Config {
    Config { namespaces: vec![CHAT.to_owned(), OTHER.to_owned()], ..Config::default() }
}

#[tokio::test]
async fn unknown_namespace_is_refused_as_invalid_namespace() {
    let server = TestServer::start_default().await;
    let token = server.token("alice").sign();
    let mut client = Client::builder(&server).label("alice").open().await;
    let refusal = client.connect_namespace("/nope", Some(json!({ "token": token }))).await;
    match refusal {
        Err(tests::Refusal::ConnectError { raw, .. }) => {
            assert_eq!(raw, r#"44/nope,{"message":"Invalid namespace"}"#);
        }
        other => panic!("expected 44/nope,…, got {other:?}"),
    }
    // The same connection still reaches the real namespace.
    client.connect_namespace(CHAT, Some(json!({ "token": token }))).await.expect("the chat accepts");
    client.join("lobby").await;
}

#[tokio::test]
async fn unknown_namespace_is_refused_before_authentication() {
    let server = TestServer::start_default().await;
    let mut client = Client::builder(&server).open().await;
    let refusal = client.connect_namespace("/nope", None).await.expect_err("no such namespace");
    assert_eq!(refusal.connect_error(), &json!({ "message": "Invalid namespace" }));
}

#[tokio::test]
async fn rooms_of_the_same_name_are_isolated_between_namespaces() {
    let server = TestServer::start(two_namespaces()).await;
    let token = |sub: &str| server.token(sub).sign();
    let mut alice = Client::builder(&server).namespace(CHAT).payload_token(&token("alice")).connect().await;
    let mut bob = Client::builder(&server).namespace(OTHER).payload_token(&token("bob")).connect().await;
    assert_eq!(alice.join("lobby").await["members"], 1);
    assert_eq!(bob.join("lobby").await["members"], 1, "a room of another namespace counted");

    bob.send("lobby", "from the other namespace").await;
    alice.send("lobby", "from the chat").await;
    let first = alice.expect_no_event_before("user_joined", "message").await;
    assert_eq!(first["content"], "from the chat", "a message crossed namespaces");
    let first = bob.expect_no_event_before("user_joined", "message").await;
    assert_eq!(first["content"], "from the other namespace");
    bob.leave("lobby").await;
    alice.send("lobby", "second").await;
    let next = alice.expect_no_event_before("user_left", "message").await;
    assert_eq!(next["content"], "second", "user_left crossed namespaces");
}

/// Message ids come from one counter for the whole broker: taken in turn by
/// two namespaces they still increase, so no id is given twice (two counters
/// started microseconds apart would meet after as many messages).
#[tokio::test]
async fn message_ids_are_unique_across_namespaces() {
    let server = TestServer::start(Config { rate_limit_per_sec: 0, ..two_namespaces() }).await;
    let token = |sub: &str| server.token(sub).sign();
    let mut alice = Client::builder(&server).namespace(CHAT).payload_token(&token("alice")).connect().await;
    let mut bob = Client::builder(&server).namespace(OTHER).payload_token(&token("bob")).connect().await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let mut last = 0_u64;
    for round in 0..10 {
        for client in [&mut alice, &mut bob] {
            let ack = client.send("lobby", &format!("{round}")).await;
            let id: u64 = ack["id"].as_str().and_then(|id| id.parse().ok()).expect("a numeric id");
            assert!(id > last, "id {id} after {last}, from the other namespace");
            last = id;
        }
    }
}

#[tokio::test]
async fn one_connection_can_use_two_namespaces() {
    let server = TestServer::start(two_namespaces()).await;
    let token = server.token("multi").sign();
    let mut multi = Client::builder(&server).label("multi").open().await;
    multi.connect_namespace(CHAT, Some(json!({ "token": token }))).await.expect("chat accepts");
    multi.connect_namespace(OTHER, Some(json!({ "token": token }))).await.expect("other accepts");
    multi.use_namespace(CHAT);
    multi.join("lobby").await;
    multi.use_namespace(OTHER);
    multi.join("lobby").await;

    let mut carol =
        Client::builder(&server).namespace(CHAT).payload_token(&server.token("carol").sign()).connect().await;
    let mut dave =
        Client::builder(&server).namespace(OTHER).payload_token(&server.token("dave").sign()).connect().await;
    carol.join("lobby").await;
    dave.join("lobby").await;
    carol.send("lobby", "chat only").await;
    dave.send("lobby", "other only").await;

    multi.use_namespace(OTHER);
    let first = multi.expect_event("message").await;
    assert_eq!(first["content"], "other only", "the chat's message arrived in the other namespace");
    multi.use_namespace(CHAT);
    let first = multi.expect_event("message").await;
    assert_eq!(first["content"], "chat only");
}

#[tokio::test]
async fn each_namespace_authenticates_on_its_own() {
    let server = TestServer::start(two_namespaces()).await;
    let token = server.token("multi").sign();
    let mut multi = Client::builder(&server).label("multi").open().await;
    multi.connect_namespace(CHAT, Some(json!({ "token": token }))).await.expect("chat accepts");
    let refusal = multi.connect_namespace(OTHER, None).await.expect_err("no token for the other namespace");
    match refusal {
        tests::Refusal::ConnectError { raw, .. } => {
            assert_eq!(raw, r#"44/api/v1/other,{"message":"Unauthorized","data":{"code":401}}"#);
        }
        tests::Refusal::Http { .. } => unreachable!("already upgraded"),
    }
    multi.use_namespace(CHAT);
    multi.join("lobby").await;
    multi.send("lobby", "chat still works").await;
}

#[tokio::test]
async fn leaving_one_namespace_keeps_the_other() {
    let server = TestServer::start(two_namespaces()).await;
    let token = server.token("multi").sign();
    let mut multi = Client::builder(&server).label("multi").open().await;
    multi.connect_namespace(CHAT, Some(json!({ "token": token }))).await.expect("chat accepts");
    multi.connect_namespace(OTHER, Some(json!({ "token": token }))).await.expect("other accepts");
    multi.use_namespace(CHAT);
    multi.join("lobby").await;
    multi.use_namespace(OTHER);
    multi.join("lobby").await;
    let mut carol =
        Client::builder(&server).namespace(CHAT).payload_token(&server.token("carol").sign()).connect().await;
    let mut dave =
        Client::builder(&server).namespace(OTHER).payload_token(&server.token("dave").sign()).connect().await;
    carol.join("lobby").await;
    dave.join("lobby").await;

    multi.send_raw(&format!("41{OTHER},")).await;
    assert_eq!(dave.expect_event("user_left").await["userId"], "multi");

    multi.use_namespace(CHAT);
    multi.send("lobby", "still in the chat").await;
    let message = carol.expect_no_event_before("user_left", "message").await;
    assert_eq!(message["content"], "still in the chat");
}
