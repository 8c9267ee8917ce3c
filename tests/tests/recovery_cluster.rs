//! Connection state recovery across brokers (docs/protocol.md, "Connection
//! state recovery"): two brokers on the test Redis; a client drops on one and
//! comes back on the other with its `pid` and offset. It gets the same sid,
//! its room, and every message it missed, from either broker, once and in
//! order before anything newer; the room hears nothing of the move, even
//! after the old broker's window; the `pid` recovers once, and only for its
//! own user. With Redis out of reach, a CONNECT is answered at once with a
//! fresh session, and a session its broker could not store recovers there
//! only.

use std::time::Duration;

use broker::config::AdapterKind;
use tests::recovery::{comeback, next_event, offset_of};
use tests::redis::{Link, cluster_pair, redis_url};
use tests::{CHAT, Client, Config, PacketKind, TestServer, Value, WAIT, json};

/// The recovery window of these tests: short, so that one passing is part
/// of a test.
const WINDOW: Duration = Duration::from_millis(1500);

async fn pair() -> Option<(TestServer, TestServer)> {
    cluster_pair(Config { recovery_window: WINDOW, ..Config::default() }).await
}

/// The next `count` messages as (content, offset), in arrival order.
async fn messages(client: &mut Client, count: usize) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let packet = next_event(client, "message").await;
        let content = packet.event_payload()["content"].as_str().unwrap_or_default().to_owned();
        seen.push((content, offset_of(&packet)));
    }
    seen
}

/// Waits until the broker that suspended the session `pid` has stored it in Redis.
async fn stored_in_redis(pid: &Value) {
    let url = redis_url().expect("a Redis test");
    let client = redis::Client::open(url).expect("valid Redis URL");
    let mut redis = client.get_multiplexed_async_connection().await.expect("test Redis reachable");
    let key = format!("sio:session:{}", pid.as_str().expect("a string pid"));
    tokio::time::timeout(WAIT, async {
        loop {
            let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut redis).await.expect("asked");
            if exists {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the session is stored in Redis");
}

/// Alice (on `one`) and Bob in `lobby`, Carol (on `two`) too; Alice has
/// processed `first` (its offset is returned with her pid, token and sid),
/// then her connection drops and `one` suspends and stores her session.
async fn alice_drops_on(
    one: &TestServer,
    bob: &mut Client,
    carol: &mut Client,
) -> (Value, String, String, Value) {
    let token = one.token("alice").sign();
    let mut alice = Client::builder(one).payload_token(&token).label("alice").connect().await;
    let first = alice.connect_data().cloned().expect("connected");
    assert!(first["pid"].is_string(), "a clustered broker offers a pid: {first}");
    alice.join("lobby").await;
    bob.join("lobby").await;
    carol.join("lobby").await;
    bob.send("lobby", "first").await;
    let seen = messages(&mut alice, 1).await;
    assert_eq!(seen[0].0, "first");
    drop(alice);
    one.wait_for_metric("broker_suspended_sessions", 1).await;
    stored_in_redis(&first["pid"]).await;
    (first["pid"].clone(), seen[0].1.clone(), token, first["sid"].clone())
}

#[tokio::test]
async fn a_client_dropped_on_one_broker_recovers_on_the_other_with_all_it_missed() {
    let Some((one, two)) = pair().await else { return };
    let mut bob = Client::connect_user(&one, "bob").await;
    let mut carol = Client::connect_user(&two, "carol").await;
    let (pid, offset, token, sid) = alice_drops_on(&one, &mut bob, &mut carol).await;
    // Missed: one message sent through each broker.
    bob.send("lobby", "from one").await;
    carol.send("lobby", "from two").await;
    let order = messages(&mut bob, 3).await;
    assert_eq!(order[0].0, "first");

    let mut alice = Client::builder(&two)
        .auth_payload(comeback(&token, &pid, Some(&offset)))
        .label("alice again")
        .connect()
        .await;
    let answer = alice.connect_data().cloned().expect("connected");
    assert_eq!((&answer["sid"], &answer["pid"]), (&sid, &pid), "the same session, on the other broker");
    carol.send("lobby", "after").await;
    let replayed = messages(&mut alice, 3).await;
    assert_eq!(
        &replayed[..2],
        &order[1..],
        "what it missed, once, in the order the room had it, offsets included"
    );
    assert_eq!(replayed[2].0, "after", "then what is newer");
    assert_eq!(two.metric("broker_recoveries_total").await, 1);
    // The old broker let its copy go, without a word to the room.
    one.wait_for_metric("broker_suspended_sessions", 0).await;

    // Nobody heard Alice leave or come back, not even once her old window passed.
    tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
    alice.send("lobby", "still here").await;
    bob.expect_message("still here").await;
    carol.expect_message("still here").await;
    for client in [&mut bob, &mut carol] {
        assert_eq!(client.take_event("user_left"), None);
        assert_eq!(client.take_event("user_joined"), None);
    }
    // She counts once, on her new broker.
    assert_eq!(bob.leave("lobby").await["members"], 2, "alice and carol, both on two");

    // The pid recovered once: neither broker gives it again.
    for server in [&one, &two] {
        let twin =
            Client::builder(server).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
        let answer = twin.connect_data().cloned().expect("connected");
        assert_ne!(answer["sid"], sid, "a pid recovers once");
    }
}

#[tokio::test]
async fn a_client_that_got_nothing_recovers_its_room_on_the_other_broker() {
    let Some((one, two)) = pair().await else { return };
    let mut bob = Client::connect_user(&one, "bob").await;
    let mut carol = Client::connect_user(&two, "carol").await;
    // A broker's ring is complete from the first frame the bus brought it:
    // the namespace had one before Alice came, on both brokers.
    bob.join("warmup").await;
    carol.join("warmup").await;
    carol.send("warmup", "hello").await;
    bob.expect_message("hello").await;
    let (pid, _, token, sid) = alice_drops_on(&one, &mut bob, &mut carol).await;
    carol.send("lobby", "while away").await;
    bob.expect_message("while away").await;

    let mut alice = Client::builder(&two).auth_payload(comeback(&token, &pid, None)).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
    let replayed: Vec<String> =
        messages(&mut alice, 2).await.into_iter().map(|(content, _)| content).collect();
    assert_eq!(replayed, ["first", "while away"], "everything it was owed in its room");
}

#[tokio::test]
async fn a_connect_to_another_namespace_while_the_session_is_looked_up_is_answered_too() {
    // socket.io-client sends one CONNECT per namespace on a shared connection,
    // back to back: the second must not end the first's recovery.
    let Some((one, two)) = pair().await else { return };
    let mut bob = Client::connect_user(&one, "bob").await;
    let mut carol = Client::connect_user(&two, "carol").await;
    let (pid, offset, token, sid) = alice_drops_on(&one, &mut bob, &mut carol).await;
    bob.send("lobby", "while away").await;
    bob.expect_message("while away").await;

    let mut alice = Client::builder(&two).label("alice again").open().await;
    alice.send_raw(&format!("40{CHAT},{}", comeback(&token, &pid, Some(&offset)))).await;
    alice.send_raw("40/elsewhere,").await;
    let (mut refused, mut recovered) = (None, None);
    while refused.is_none() || recovered.is_none() {
        let packet = alice.expect_packet().await;
        match (packet.kind, packet.namespace.as_str()) {
            (PacketKind::ConnectError, "/elsewhere") => refused = packet.data,
            (PacketKind::Connect, CHAT) => recovered = packet.data,
            _ => {}
        }
    }
    assert_eq!(refused.expect("answered")["message"], "Invalid namespace");
    assert_eq!(recovered.expect("answered")["sid"], sid, "the chat session recovered all the same");
    let replayed = messages(&mut alice, 1).await;
    assert_eq!(replayed[0].0, "while away");
}

#[tokio::test]
async fn another_users_token_with_the_pid_gets_no_recovery_on_the_other_broker() {
    let Some((one, two)) = pair().await else { return };
    let mut bob = Client::connect_user(&one, "bob").await;
    let mut carol = Client::connect_user(&two, "carol").await;
    let (pid, offset, token, sid) = alice_drops_on(&one, &mut bob, &mut carol).await;
    bob.send("lobby", "for alice only").await;
    bob.expect_message("for alice only").await;

    let mallory_token = two.token("mallory").sign();
    let mut mallory =
        Client::builder(&two).auth_payload(comeback(&mallory_token, &pid, Some(&offset))).connect().await;
    assert_ne!(mallory.connect_data().expect("connected")["sid"], sid);
    mallory.emit("send_message", json!({ "roomId": "lobby", "content": "x" })).await;
    mallory.expect_error(403).await;
    assert_eq!(mallory.take_event("message"), None, "none of alice's messages");

    // Still Alice's to recover, on either broker.
    stored_in_redis(&pid).await;
    let mut alice = Client::builder(&two).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
    let replayed: Vec<String> =
        messages(&mut alice, 1).await.into_iter().map(|(content, _)| content).collect();
    assert_eq!(replayed, ["for alice only"]);
}

/// Two brokers on one channel prefix, the second reaching Redis only
/// through a link the test can cut.
async fn pair_with_link() -> Option<(TestServer, TestServer, Link)> {
    let url = redis_url()?;
    let link = Link::to(&url).await;
    let config = Config {
        adapter: AdapterKind::Redis,
        redis_url: url,
        redis_key: tests::redis::unique_namespace("recovery").trim_start_matches('/').to_owned(),
        recovery_window: WINDOW,
        rate_limit_per_sec: 0,
        ..Config::default()
    };
    let one = TestServer::start(config.clone()).await;
    let two = TestServer::start(Config { redis_url: link.url(), ..config }).await;
    Some((one, two, link))
}

#[tokio::test]
async fn a_broker_cut_off_from_redis_answers_a_recovering_connect_with_a_fresh_session_at_once() {
    let Some((one, two, link)) = pair_with_link().await else { return };
    let mut bob = Client::connect_user(&one, "bob").await;
    let mut carol = Client::connect_user(&two, "carol").await;
    let (pid, offset, token, sid) = alice_drops_on(&one, &mut bob, &mut carol).await;
    bob.send("lobby", "missed").await;
    bob.expect_message("missed").await;

    link.cut();
    // Within the client's wait, not hanging on Redis: the other broker cannot
    // see the session, so the client starts afresh.
    let elsewhere = Client::builder(&two).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_ne!(elsewhere.connect_data().expect("connected")["sid"], sid);

    // The session still waits on its own broker, and recovers there.
    let mut alice = Client::builder(&one).auth_payload(comeback(&token, &pid, Some(&offset))).connect().await;
    assert_eq!(alice.connect_data().expect("connected")["sid"], sid);
    let replayed: Vec<String> =
        messages(&mut alice, 1).await.into_iter().map(|(content, _)| content).collect();
    assert_eq!(replayed, ["missed"]);
}

#[tokio::test]
async fn a_session_dropped_while_its_broker_is_cut_off_from_redis_is_not_recovered_elsewhere() {
    let Some((one, two, link)) = pair_with_link().await else { return };
    let mut bob = Client::connect_user(&two, "bob").await;
    let mut carol = Client::connect_user(&one, "carol").await;
    let token = two.token("alice").sign();
    let mut alice = Client::builder(&two).payload_token(&token).label("alice").connect().await;
    let first = alice.connect_data().cloned().expect("connected");
    alice.join("lobby").await;
    bob.join("lobby").await;
    carol.join("lobby").await;
    bob.send("lobby", "first").await;
    let offset = messages(&mut alice, 1).await.remove(0).1;

    link.cut();
    drop(alice);
    two.wait_for_metric("broker_suspended_sessions", 1).await;
    // Its broker could not store it: the other broker gives a fresh session.
    let elsewhere =
        Client::builder(&one).auth_payload(comeback(&token, &first["pid"], Some(&offset))).connect().await;
    assert_ne!(elsewhere.connect_data().expect("connected")["sid"], first["sid"]);
}
