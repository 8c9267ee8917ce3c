//! Two brokers sharing the test Redis act as one server (`--adapter redis`):
//! rooms span them, notices and messages cross both ways exactly once and
//! in one order (message ids increasing in it, even when both send at
//! once), acks count the whole room, and another node's requests reach our
//! sockets. Each test has a Redis channel prefix of its own.

use tests::{Client, Config, TestServer, Value};

/// Two brokers on one private channel prefix of the test Redis, or `None`
/// when no Redis runs (outside CI).
/// Recovery is off here: these tests see a dropped client leave at once
/// (recovery across brokers is tests/tests/recovery_cluster.rs).
async fn pair() -> Option<(TestServer, TestServer)> {
    pair_with(Config { recovery_window: std::time::Duration::ZERO, ..Config::default() }).await
}

async fn pair_with(base: Config) -> Option<(TestServer, TestServer)> {
    tests::redis::cluster_pair(base).await
}

async fn next_message(client: &mut Client) -> Value {
    client.expect_event("message").await
}

#[tokio::test]
async fn a_room_spans_two_brokers_both_ways() {
    let Some((one, two)) = pair().await else { return };
    let mut alice = Client::connect_user(&one, "alice").await;
    let mut bob = Client::connect_user(&two, "bob").await;

    assert_eq!(alice.join("lobby").await["members"], 1);
    let ack = bob.join("lobby").await;
    assert_eq!(ack["members"], 2, "the ack counts the member on the other broker");
    assert_eq!(bob.expect_event("status").await["members"], 2);
    let joined = alice.expect_event("user_joined").await;
    assert_eq!((joined["userId"].as_str(), joined["roomId"].as_str()), (Some("bob"), Some("lobby")));

    alice.send("lobby", "from one").await;
    bob.send("lobby", "from two").await;
    // Everyone sees both, exactly once, in the same order.
    let seen_by_alice = [next_message(&mut alice).await, next_message(&mut alice).await];
    let seen_by_bob = [next_message(&mut bob).await, next_message(&mut bob).await];
    let contents =
        |seen: &[Value; 2]| seen.clone().map(|message| message["content"].as_str().map(str::to_owned));
    assert_eq!(contents(&seen_by_alice), contents(&seen_by_bob));
    let mut both: Vec<_> = contents(&seen_by_alice).into_iter().flatten().collect();
    both.sort();
    assert_eq!(both, ["from one", "from two"]);
    assert_eq!(seen_by_alice[0]["id"], seen_by_bob[0]["id"]);
    assert_ne!(seen_by_alice[0]["id"], seen_by_alice[1]["id"], "ids are unique across brokers");

    let left = bob.leave("lobby").await;
    assert_eq!(left["members"], 1);
    let gone = alice.expect_event("user_left").await;
    assert_eq!(gone["userId"], "bob");
    // Nothing more arrives for bob once he left: a marker proves it.
    alice.send("lobby", "after bob left").await;
    alice.expect_message("after bob left").await;
    bob.join("marker-room").await;
    assert!(bob.take_event("message").is_none());
}

/// Sends `each` messages to the room `race` without waiting for acks.
async fn burst(client: &mut Client, who: &str, each: usize) {
    for index in 0..each {
        let data = tests::json!(["send_message", {"roomId": "race", "content": format!("{who}-{index}")}]);
        client.send_raw(&tests::client::encode_packet('2', tests::CHAT, None, Some(&data))).await;
    }
}

/// A message id Redis gave: digits only, read as a number.
fn ordered_id(message: &Value) -> u64 {
    let id = message["id"].as_str().expect("the id is a string");
    id.parse().unwrap_or_else(|_| panic!("{id} is not an id Redis gave"))
}

#[tokio::test]
async fn message_ids_increase_in_delivery_order_when_two_brokers_send_at_once() {
    let Some((one, two)) = pair().await else { return };
    let mut alice = Client::connect_user(&one, "alice").await;
    let mut bob = Client::connect_user(&two, "bob").await;
    alice.join("race").await;
    bob.join("race").await;
    alice.expect_event("user_joined").await;

    const EACH: usize = 40;
    // Both brokers take messages for the room at the same moment.
    tokio::join!(burst(&mut alice, "alice", EACH), burst(&mut bob, "bob", EACH));

    let mut orders = Vec::new();
    for client in [&mut alice, &mut bob] {
        let mut seen = Vec::new();
        for _ in 0..2 * EACH {
            seen.push(next_message(client).await);
        }
        let ids: Vec<u64> = seen.iter().map(ordered_id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids increase in delivery order: {ids:?}");
        orders.push(seen.iter().map(|message| message["content"].clone()).collect::<Vec<_>>());
    }
    assert_eq!(orders[0], orders[1], "one order per room");

    // The ack gives the id the members see.
    let ack = alice.send("race", "acked").await;
    let message = alice.expect_message("acked").await;
    assert_eq!(ack["id"], message["id"]);
    assert_eq!(bob.expect_message("acked").await["id"], message["id"]);
}

#[tokio::test]
async fn a_disconnect_on_one_broker_notifies_the_other() {
    let Some((one, two)) = pair().await else { return };
    let mut alice = Client::connect_user(&one, "alice").await;
    let mut carol = Client::connect_user(&two, "carol").await;
    alice.join("r").await;
    carol.join("r").await;
    alice.expect_event("user_joined").await;
    drop(carol);
    let gone = alice.expect_event("user_left").await;
    assert_eq!(gone["userId"], "carol");
    assert_eq!(alice.leave("r").await["members"], 0);
}

#[tokio::test]
async fn membership_checks_stay_local() {
    let Some((one, two)) = pair().await else { return };
    let mut alice = Client::connect_user(&one, "alice").await;
    let mut mallory = Client::connect_user(&two, "mallory").await;
    alice.join("private").await;
    let ack =
        mallory.emit_with_ack("send_message", tests::json!({"roomId": "private", "content": "hi"})).await;
    assert_eq!(ack["error"]["code"], 403);
    alice.send("private", "only members").await;
    alice.expect_message("only members").await;
    assert!(mallory.take_event("message").is_none());
}

#[tokio::test]
async fn a_broadcast_over_the_bus_limit_stays_on_its_broker() {
    let Some((one, two)) = pair_with(Config { redis_max_message_bytes: 400, ..Config::default() }).await
    else {
        return;
    };
    let mut alice = Client::connect_user(&one, "alice").await;
    let mut bob = Client::connect_user(&two, "bob").await;
    alice.join("big").await;
    bob.join("big").await;
    alice.expect_event("user_joined").await;
    let large = "x".repeat(1000);
    alice.send("big", &large).await;
    alice.expect_message(&large).await;
    alice.send("big", "small").await;
    // The next message bob sees is the small one: the large one was not forwarded.
    assert_eq!(bob.expect_event("message").await["content"], "small");
    assert!(one.try_metric("broker_redis_refused_total").await.is_ok_and(|refused| refused >= 1));
}
