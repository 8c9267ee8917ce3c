//! The redis adapter when Redis goes away and comes back: each broker keeps
//! serving its own members, says `degraded` and counts the outage, then
//! reconnects, subscribes again and carries emits across brokers again; the
//! same when Redis is down as the broker starts. And when a broker dies (or
//! is cut off): the others take its members out.
//!
//! Uses a private `redis-server` (the binary `tests/run.sh` installs) on a
//! port of its own, so stopping it touches no other test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use broker::config::AdapterKind;
use tests::redis::{Link, redis_url};
use tests::{Client, Config, TestServer};
use tokio::time::Instant;

/// How long a reconnection may take: the backoff tops out at 5 s.
const RECONNECT_WAIT: Duration = Duration::from_secs(15);

struct PrivateRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (tests/run.sh installs it)");
        let deadline = Instant::now() + tests::WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port, _dir: dir }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("bound").port()
}

async fn wait_for(server: &TestServer, metric: &str, value: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = server.try_metric(metric).await;
        if seen == Ok(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{metric} is {seen:?}, expected {value} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health_status(server: &TestServer) -> String {
    let body = tests::http::get(server.addr, "/health", &[]).await.text();
    let health: serde_json::Value = serde_json::from_str(&body).expect("/health is JSON");
    health["status"].as_str().expect("a status").to_owned()
}

#[tokio::test]
async fn a_redis_restart_keeps_local_members_served_then_reconnects() {
    // The test Redis being set says redis-server is installed here.
    if redis_url().is_none() {
        return;
    }
    let redis = PrivateRedis::start(free_port()).await;
    let config = Config {
        adapter: AdapterKind::Redis,
        redis_url: redis.url(),
        rate_limit_per_sec: 0,
        ..Config::default()
    };
    let one = TestServer::start(config.clone()).await;
    let two = TestServer::start(config).await;
    let mut alice = Client::connect_user(&one, "alice").await;
    let mut bob = Client::connect_user(&two, "bob").await;
    let mut dave = Client::connect_user(&one, "dave").await;
    alice.join("r").await;
    bob.join("r").await;
    alice.expect_event("user_joined").await;
    dave.join("r").await;
    bob.expect_event_where("user_joined", |notice| notice["userId"] == "dave").await;
    assert_eq!(health_status(&one).await, "ok");

    let port = redis.stop();
    wait_for(&one, "broker_redis_connected", 0, tests::WAIT).await;
    assert_eq!(health_status(&one).await, "degraded");
    // Local members are still served, their messages not lost.
    alice.send("r", "during the outage").await;
    alice.expect_message("during the outage").await;
    let mut carol = Client::connect_user(&one, "carol").await;
    assert_eq!(carol.join("r").await["members"], 3, "the local members, when no other node answers");
    alice.expect_event("user_joined").await;
    dave.leave("r").await;
    assert!(one.try_metric("broker_redis_outages_total").await.is_ok_and(|outages| outages >= 1));

    let _redis = PrivateRedis::start(port).await;
    wait_for(&one, "broker_redis_connected", 1, RECONNECT_WAIT).await;
    wait_for(&two, "broker_redis_connected", 1, RECONNECT_WAIT).await;
    assert_eq!(health_status(&one).await, "ok");
    // What bob missed of the room's members is made up once both are back.
    bob.expect_event_where("user_joined", |notice| notice["userId"] == "carol").await;
    bob.expect_event_where("user_left", |notice| notice["userId"] == "dave").await;
    alice.send("r", "after the outage").await;
    let seen = bob.expect_message("after the outage").await;
    assert_eq!(seen["senderId"], "alice");
    carol.expect_message("after the outage").await;
}

#[tokio::test]
async fn a_broker_that_goes_silent_is_taken_out_of_its_rooms_by_the_others() {
    let Some(url) = redis_url() else { return };
    let link = Link::to(&url).await;
    let config = Config {
        adapter: AdapterKind::Redis,
        redis_url: url,
        redis_key: tests::redis::unique_namespace("dies").trim_start_matches('/').to_owned(),
        redis_heartbeat_interval: Duration::from_millis(100),
        redis_heartbeat_timeout: Duration::from_millis(1000),
        rate_limit_per_sec: 0,
        ..Config::default()
    };
    let survivor = TestServer::start(config.clone()).await;
    // The doomed broker reaches Redis only through the link.
    let doomed = TestServer::start(Config { redis_url: link.url(), ..config }).await;
    let mut alice = Client::connect_user(&survivor, "alice").await;
    let mut bob = Client::connect_user(&doomed, "bob").await;
    let mut numeric = Client::connect_user(&doomed, 42).await;
    alice.join("r").await;
    alice.join("s").await;
    bob.join("r").await;
    numeric.join("s").await;
    alice.expect_event_where("user_joined", |notice| notice["userId"] == "bob").await;
    alice.expect_event_where("user_joined", |notice| notice["userId"] == 42).await;

    // The doomed broker vanishes from the network, its clients still on it:
    // it says nothing more, to anyone.
    link.cut();
    let left = alice.expect_event_where("user_left", |notice| notice["roomId"] == "r").await;
    assert_eq!(left["userId"], "bob");
    let left = alice.expect_event_where("user_left", |notice| notice["roomId"] == "s").await;
    assert_eq!(left["userId"], 42, "the user id comes back as the token held it");
    assert!(survivor.try_metric("broker_redis_nodes_lost_total").await.is_ok_and(|lost| lost >= 1));

    // The counts no longer hold the doomed broker's members.
    let mut carol = Client::connect_user(&survivor, "carol").await;
    assert_eq!(carol.join("r").await["members"], 2, "alice and carol");
    drop(bob);
}

#[tokio::test]
async fn a_broker_started_while_redis_is_down_serves_locally_then_joins_the_cluster() {
    if redis_url().is_none() {
        return;
    }
    let port = free_port();
    let config = Config {
        adapter: AdapterKind::Redis,
        redis_url: format!("redis://127.0.0.1:{port}"),
        rate_limit_per_sec: 0,
        ..Config::default()
    };
    let early = TestServer::start(config.clone()).await;
    let mut alice = Client::connect_user(&early, "alice").await;
    assert_eq!(alice.join("r").await["members"], 1);
    assert_eq!(health_status(&early).await, "degraded");
    assert_eq!(early.metric("broker_redis_connected").await, 0);
    assert!(early.metric("broker_redis_outages_total").await >= 1, "the outage at start is counted");
    alice.send("r", "alone").await;
    alice.expect_message("alone").await;

    let _redis = PrivateRedis::start(port).await;
    wait_for(&early, "broker_redis_connected", 1, RECONNECT_WAIT).await;
    assert_eq!(health_status(&early).await, "ok");
    let late = TestServer::start(config).await;
    let mut bob = Client::connect_user(&late, "bob").await;
    assert_eq!(bob.join("r").await["members"], 2, "alice counts, on the broker that started without Redis");
    alice.expect_event_where("user_joined", |notice| notice["userId"] == "bob").await;
    bob.send("r", "together").await;
    assert_eq!(alice.expect_message("together").await["senderId"], "bob");
}
