//! The Redis store of suspended recovery sessions
//! (`broker::adapter::redis::session`), against the test Redis: a session is
//! stored under `sio:session:<pid>` for the window, reads back as written,
//! and is taken once, even when several connections (brokers) ask at once;
//! through a broker's bus, a Redis that cannot be reached fails the store
//! within the command timeout (the session then stays on its own broker).

use std::time::Duration;

use std::sync::Arc;

use broker::adapter::redis::bus::{Bus, Receiver, Subscriptions};
use broker::adapter::redis::session::{self, SessionData, StoredSession};
use broker::ids::Pid;
use tests::WAIT;
use tests::redis::{Link, redis_url};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

async fn connection() -> Option<redis::aio::MultiplexedConnection> {
    let url = redis_url()?;
    let client = redis::Client::open(url).expect("valid Redis URL");
    Some(client.get_multiplexed_async_connection().await.expect("test Redis reachable"))
}

fn stored(pid: Pid) -> StoredSession {
    StoredSession {
        sid: "AbCdEfGhIjK".to_owned(),
        pid: pid.to_string(),
        rooms: vec!["general".to_owned()],
        data: SessionData {
            sub: Some("alice".to_owned()),
            offset: Some("42".to_owned()),
            since: 7,
            expires_at_ms: 1,
            rooms_since: vec![7],
        },
    }
}

#[tokio::test]
async fn a_stored_session_expires_with_the_window_and_is_taken_once() {
    let Some(mut redis) = connection().await else { return };
    let pid = Pid::random();
    let session = stored(pid);
    session::store(&mut redis, &session, Duration::from_secs(120)).await.expect("stored");
    let ttl: i64 = redis::cmd("PTTL").arg(session::key(pid)).query_async(&mut redis).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 120_000, "expires with the window, got {ttl} ms");
    assert_eq!(session::take(&mut redis, pid).await.expect("taken"), Some(session));
    assert_eq!(session::take(&mut redis, pid).await.expect("asked"), None, "a session is taken once");
    assert_eq!(session::take(&mut redis, Pid::random()).await.expect("asked"), None, "unknown pid");
}

#[tokio::test]
async fn of_many_brokers_taking_one_session_at_once_one_gets_it() {
    let Some(redis) = connection().await else { return };
    let pid = Pid::random();
    session::store(&mut redis.clone(), &stored(pid), Duration::from_secs(120)).await.expect("stored");
    let mut takers = Vec::new();
    for _ in 0..8 {
        // A connection of its own each, as on different brokers.
        let Some(mut own) = connection().await else { return };
        takers.push(tokio::spawn(async move { session::take(&mut own, pid).await.expect("asked") }));
    }
    let mut got = 0;
    for taker in takers {
        if taker.await.expect("taker ran").is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 1);
}

#[tokio::test]
async fn a_discarded_session_is_not_found() {
    let Some(mut redis) = connection().await else { return };
    let pid = Pid::random();
    session::store(&mut redis, &stored(pid), Duration::from_secs(120)).await.expect("stored");
    session::discard(&mut redis, pid).await.expect("discarded");
    assert_eq!(session::take(&mut redis, pid).await.expect("asked"), None);
}

/// A bus that subscribes to nothing, for its commands.
struct Deaf;

impl Receiver for Deaf {
    fn receive(&self, _channel: &str, _payload: &[u8]) {}

    fn receive_unordered(&self, _channel: &str, _parts: &[bytes::Bytes]) -> String {
        String::new()
    }
}

#[tokio::test]
async fn through_the_bus_a_session_is_stored_and_taken_and_an_unreachable_redis_fails_the_store() {
    let Some(url) = redis_url() else { return };
    let link = Link::to(&url).await;
    let stop = CancellationToken::new();
    let bus = Bus::connect(
        &link.url(),
        Subscriptions::default(),
        Arc::new(Deaf),
        &TaskTracker::new(),
        stop.clone(),
    )
    .await
    .expect("valid URL");
    let pid = Pid::random();
    bus.store_session(&stored(pid), Duration::from_secs(120)).await.expect("stored");
    assert_eq!(bus.take_session(pid).await.expect("taken"), Some(stored(pid)));

    link.cut();
    let other = Pid::random();
    let outcome = tokio::time::timeout(WAIT, bus.store_session(&stored(other), Duration::from_secs(120)))
        .await
        .expect("the store gives up within the command timeout");
    assert!(outcome.is_err(), "a store Redis never got is an error, not a silent success");
    let Some(mut redis) = connection().await else { return };
    assert_eq!(session::take(&mut redis, other).await.expect("asked"), None, "nothing reached Redis");
    stop.cancel();
}
