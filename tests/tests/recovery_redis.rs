//! The Redis store of suspended recovery sessions
//! (`broker::adapter::redis::session`), against the test Redis: a session is
//! stored under `sio:session:<pid>` for the window, reads back as written,
//! and is taken once, even when several connections (brokers) ask at once.

use std::time::Duration;

use broker::adapter::redis::session::{self, SessionData, StoredSession};
use broker::ids::Pid;
use tests::redis::redis_url;

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
