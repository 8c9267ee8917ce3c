//! A short soak against an in-process broker with short heartbeats and a
//! revocation file: no well-behaved client may lose a message, every kind
//! of faulty client must have run, and the broker's gauges must be back at
//! their idle values afterwards. No timing assertions.

use std::time::Duration;

use loadgen::scenario::soak::ADMITTED;
use loadgen::{AuthMode, RunOptions, Scenario, SoakConfig, TargetOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "loadgen-soak-secret";
const REVOKED_JTI: &str = "soak-revoked-jti";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_faults_loses_nothing_and_returns_to_idle() {
    let revocations = tempfile::tempdir().expect("a temporary directory");
    let revocation_file = revocations.path().join("revoked.txt");
    std::fs::write(&revocation_file, format!("# revoked by the soak test\n{REVOKED_JTI}\n"))
        .expect("writing the revocation file");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let config = broker::Config {
        listen: addr,
        jwt_secret: Some(SECRET.to_owned()),
        // A short heartbeat, so silent clients are closed within the test; the
        // timeout leaves chatters on a busy test machine time to answer.
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(700),
        revocation_file: Some(revocation_file),
        // Small, so that a client that stops reading overflows it before its
        // heartbeat runs out.
        outbox_bytes: 64 << 10,
        // Dropped clients' sessions wait this long for them before their
        // rooms are emptied: short, so the gauges are back at idle in time.
        recovery_window: Duration::from_millis(500),
        ..broker::Config::default()
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(broker::run(config, listener, shutdown));

    let target = TargetOptions {
        target: vec![format!("http://{addr}")],
        secret: Some(SECRET.to_owned()),
        auth: AuthMode::Payload,
        ..TargetOptions::default()
    };
    let soak = SoakConfig {
        clients: 12,
        rooms: 3,
        rate: 5.0,
        duration: Duration::from_secs(3),
        vanish_rate: 4.0,
        silent_rate: 2.0,
        stall_rate: 1.0,
        flood_rate: 1.0,
        // Enough to send every kind of garbage at least once.
        garbage_rate: 6.0,
        expired_rate: 1.0,
        revoked_rate: 1.0,
        forged_rate: 1.0,
        revoked_jti: Some(REVOKED_JTI.to_owned()),
        storm_size: 30,
        storm_every: Duration::from_secs(2),
        fault_timeout: Duration::from_secs(10),
        // The test process is the broker's process: its RSS is read too.
        broker_pid: Some(std::process::id()),
        sample_every: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(20),
        ..SoakConfig::default()
    };
    let options = RunOptions {
        drain: Duration::from_secs(5),
        setup_timeout: Duration::from_secs(30),
        ..RunOptions::default()
    };
    let report = loadgen::run(&Scenario::Soak(soak), &target, &options).await.expect("the soak runs");
    println!("{report}");
    serde_json::to_string(&report).expect("the report serializes");

    assert!(!report.loss, "{:?}", report.loss_reasons);
    let messages = report.messages.expect("messages are tallied");
    assert!(messages.expected > 0);
    assert_eq!((messages.lost, messages.duplicated, messages.reordered), (0, 0, 0));
    assert_eq!(report.counts.out_of_room_order, 0);

    let soak = report.soak.expect("the soak reports its gauges");
    assert!(soak.metrics_error.is_none(), "{:?}", soak.metrics_error);
    assert!(soak.idle, "still busy: {:?}", soak.busy);
    let connections = &soak.gauges[0];
    assert_eq!(connections.metric, "broker_connections_open");
    assert_eq!(connections.after, connections.before, "every connection closed");
    assert!(connections.peak > connections.before, "the soak's clients were counted while connected");
    let rss = soak.gauges.last().expect("an rss row");
    assert!(rss.before.is_some_and(|kib| kib > 0.0));

    for kind in [
        "vanish",
        "silent",
        "stall",
        "flood",
        "garbage",
        "expired token",
        "revoked token",
        "forged token",
        "storm",
    ] {
        let tally = soak.faults.get(kind).unwrap_or_else(|| panic!("no {kind} clients ran"));
        assert!(tally.started > 0, "{kind}");
        assert_eq!(tally.outcomes.values().sum::<u64>(), tally.started, "{kind}: every client ended");
    }
    for kind in ["expired token", "revoked token", "forged token"] {
        assert!(!soak.faults[kind].outcomes.contains_key(ADMITTED), "{kind} let in");
    }
    assert_eq!(
        soak.faults["revoked token"].outcomes.get("refused: Token revoked"),
        Some(&soak.faults["revoked token"].started)
    );
    // The defences that end a faulty client's connection did.
    assert!(
        soak.faults["silent"].outcomes.keys().all(|outcome| outcome == "closed by server"),
        "{:?}",
        soak.faults["silent"]
    );
    assert!(
        soak.faults["stall"].outcomes.keys().all(|outcome| outcome == "cut off by server"),
        "{:?}",
        soak.faults["stall"]
    );
    // A flooder may be cut off as a slow reader before its first 429 arrives.
    assert!(
        soak.faults["flood"].outcomes.keys().all(|outcome| outcome.starts_with("disconnected")),
        "{:?}",
        soak.faults["flood"]
    );
}
