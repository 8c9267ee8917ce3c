//! Every scenario, tiny, against an in-process broker: the deliveries and
//! notices must add up exactly. No timing assertions.

use std::net::SocketAddr;
use std::time::Duration;

use loadgen::{
    AuthMode, BroadcastConfig, ConnectConfig, DisconnectConfig, JoinConfig, MixedConfig, Report, RunOptions,
    Scenario, TargetOptions, TransportMode,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "loadgen-integration-secret";

/// A broker on 127.0.0.1:0, stopped when dropped.
struct Broker {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Broker {
    async fn start() -> Self {
        Self::with_config(broker::Config::default()).await
    }

    async fn with_config(config: broker::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let config = broker::Config { jwt_secret: Some(SECRET.to_owned()), rate_limit_per_sec: 0, ..config };
        let token = shutdown.clone();
        tokio::spawn(async move { broker::run(config, listener, token).await.expect("broker runs") });
        Self { addr, shutdown }
    }

    fn target(&self, auth: AuthMode) -> TargetOptions {
        Self::targets(&[self], auth)
    }

    /// Options that spread clients over `brokers`, in this order.
    fn targets(brokers: &[&Broker], auth: AuthMode) -> TargetOptions {
        TargetOptions {
            target: brokers.iter().map(|broker| format!("http://{}", broker.addr)).collect(),
            secret: Some(SECRET.to_owned()),
            auth,
            ..TargetOptions::default()
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn options() -> RunOptions {
    RunOptions {
        drain: Duration::from_secs(5),
        setup_timeout: Duration::from_secs(30),
        ..RunOptions::default()
    }
}

async fn run(broker: &Broker, auth: AuthMode, scenario: Scenario) -> Report {
    let report = loadgen::run(&scenario, &broker.target(auth), &options()).await.expect("scenario runs");
    // Shown with `cargo test -- --nocapture`.
    println!("{report}");
    // The report must always serialize and plot.
    serde_json::to_string(&report).expect("report serializes");
    assert!(loadgen::plot::render(&report).contains("<polyline"));
    report
}

fn count(report: &Report, phase: &str) -> u64 {
    report.phase(phase).map_or(0, |phase| phase.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_scenario_connects_everyone_with_each_auth_mode() {
    let broker = Broker::start().await;
    for auth in [AuthMode::Payload, AuthMode::Query, AuthMode::Header] {
        let scenario =
            Scenario::Connect(ConnectConfig { clients: 30, rate: 300.0, hold: Duration::from_millis(100) });
        let report = run(&broker, auth, scenario).await;
        assert!(!report.loss, "{auth:?}: {:?}", report.loss_reasons);
        assert_eq!(report.clients.connected, 30, "{auth:?}");
        assert_eq!(count(&report, "connect"), 30);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_and_mixed_clients_connect_with_each_auth_mode() {
    let broker = Broker::start().await;
    for transport in [TransportMode::Polling, TransportMode::Mixed] {
        for auth in [AuthMode::Payload, AuthMode::Query, AuthMode::Header] {
            let scenario = Scenario::Connect(ConnectConfig {
                clients: 20,
                rate: 300.0,
                hold: Duration::from_millis(100),
            });
            let target = TargetOptions { transport, ..broker.target(auth) };
            let report = loadgen::run(&scenario, &target, &options()).await.expect("scenario runs");
            assert!(!report.loss, "{transport:?} {auth:?}: {:?}", report.loss_reasons);
            assert_eq!(report.clients.connected, 20, "{transport:?} {auth:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_polling_and_websocket_members_delivers_every_message() {
    let broker = Broker::start().await;
    let config = BroadcastConfig {
        clients: 16,
        rooms: 2,
        publishers: 2,
        rate: 20.0,
        duration: Duration::from_secs(1),
        size: 100,
        connect_rate: 300.0,
        no_ack: false,
        ..BroadcastConfig::default()
    };
    let target = TargetOptions { transport: TransportMode::Mixed, ..broker.target(AuthMode::Payload) };
    let report =
        loadgen::run(&Scenario::Broadcast(config), &target, &options()).await.expect("scenario runs");
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let sends = 2 * 2 * 20;
    let messages = report.messages.expect("messages are tallied");
    assert_eq!(
        (messages.expected, messages.unique, messages.lost, messages.duplicated, messages.reordered),
        (sends * 8, sends * 8, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_answer_engineio_pings_while_holding() {
    let config = broker::Config {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(1000),
        ..broker::Config::default()
    };
    let broker = Broker::with_config(config).await;
    let scenario =
        Scenario::Connect(ConnectConfig { clients: 10, rate: 0.0, hold: Duration::from_millis(1500) });
    let report = run(&broker, AuthMode::Payload, scenario).await;
    // A client that did not answer `2` with `3` would have been closed.
    assert!(report.clients.ended_early.is_empty(), "{:?}", report.clients.ended_early);
    assert!(!report.loss, "{:?}", report.loss_reasons);
    // Pings come every 100 ms over a 1.5 s hold: each client answered some.
    assert!(report.counts.pings >= 10, "{} pings answered", report.counts.pings);
    assert_eq!(report.targets[0].pings, report.counts.pings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_reported_as_loss() {
    let broker = Broker::start().await;
    let target =
        TargetOptions { secret: Some("not-the-secret".to_owned()), ..broker.target(AuthMode::Payload) };
    let scenario = Scenario::Connect(ConnectConfig { clients: 5, rate: 0.0, hold: Duration::ZERO });
    let report = loadgen::run(&scenario, &target, &options()).await.expect("scenario runs");
    assert!(report.loss);
    assert_eq!(report.clients.connected, 0);
    assert_eq!(report.clients.connect_failures.get("refused: Unauthorized"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_scenario_owes_one_notice_per_earlier_member() {
    let broker = Broker::start().await;
    // 3 rooms of 8 and one of 6 (30 over 4 rooms).
    let scenario = Scenario::Join(JoinConfig { clients: 30, rooms: 4, rate: 300.0, connect_rate: 300.0 });
    let report = run(&broker, AuthMode::Payload, scenario).await;
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let notices = report.join_notices.expect("join notices are tallied");
    assert_eq!(notices.expected, 3 * (8 * 7 / 2) + 6 * 5 / 2);
    assert_eq!((notices.unique, notices.lost, notices.duplicated), (notices.expected, 0, 0));
    assert_eq!(count(&report, "join_ack"), 30);
    assert_eq!(count(&report, "join_notice"), notices.expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_run_is_over_leave_so_the_next_run_finds_empty_rooms() {
    // Recovery is on by default: a client that merely dropped its connection
    // would wait out the window in its rooms and swell the next run's join acks.
    let broker = Broker::start().await;
    let join = || Scenario::Join(JoinConfig { clients: 30, rooms: 4, rate: 300.0, connect_rate: 300.0 });
    let broadcast = BroadcastConfig {
        clients: 24,
        rooms: 4,
        publishers: 1,
        rate: 10.0,
        duration: Duration::from_millis(500),
        connect_rate: 300.0,
        ..BroadcastConfig::default()
    };
    let owed = 3 * (8 * 7 / 2) + 6 * 5 / 2;
    for scenario in [join(), Scenario::Broadcast(broadcast), join()] {
        let report = run(&broker, AuthMode::Payload, scenario).await;
        assert!(!report.loss, "{:?}", report.loss_reasons);
    }
    let report = run(&broker, AuthMode::Payload, join()).await;
    let notices = report.join_notices.expect("join notices are tallied");
    assert_eq!((notices.expected, notices.unique, notices.lost), (owed, owed, 0), "{notices:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_scenario_delivers_every_message_to_every_member() {
    let broker = Broker::start().await;
    let config = BroadcastConfig {
        clients: 24,
        rooms: 3,
        publishers: 2,
        rate: 20.0,
        duration: Duration::from_secs(1),
        size: 100,
        connect_rate: 300.0,
        no_ack: false,
        ..BroadcastConfig::default()
    };
    let report = run(&broker, AuthMode::Payload, Scenario::Broadcast(config)).await;
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let sends = 3 * 2 * 20;
    assert_eq!(report.counts.sends, sends);
    assert_eq!(report.counts.sends_accepted, sends);
    let messages = report.messages.expect("messages are tallied");
    // Every send reaches all 8 members of its room, the sender included.
    assert_eq!(messages.expected, sends * 8);
    assert_eq!(
        (messages.unique, messages.lost, messages.duplicated, messages.reordered),
        (sends * 8, 0, 0, 0)
    );
    assert_eq!(report.counts.deliveries, sends * 8);
    assert_eq!(count(&report, "message"), sends * 8);
    assert_eq!(report.join_notices.expect("join notices").lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_without_acks_still_adds_up() {
    let broker = Broker::start().await;
    let config = BroadcastConfig {
        clients: 10,
        rooms: 2,
        publishers: 1,
        rate: 10.0,
        duration: Duration::from_secs(1),
        size: 16,
        connect_rate: 0.0,
        no_ack: true,
        ..BroadcastConfig::default()
    };
    let report = run(&broker, AuthMode::Query, Scenario::Broadcast(config)).await;
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let messages = report.messages.expect("messages are tallied");
    assert_eq!((messages.expected, messages.unique), (2 * 10 * 5, 2 * 10 * 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_with_delayed_acks_delivers_every_message_once() {
    let broker = Broker::start().await;
    let config = BroadcastConfig {
        clients: 20,
        rooms: 2,
        publishers: 1,
        rate: 20.0,
        duration: Duration::from_secs(1),
        size: 64,
        connect_rate: 0.0,
        no_ack: false,
        ..BroadcastConfig::default()
    };
    let target = TargetOptions { delayed_ack: true, ..broker.target(AuthMode::Payload) };
    let report =
        loadgen::run(&Scenario::Broadcast(config), &target, &options()).await.expect("scenario runs");
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let messages = report.messages.expect("messages are tallied");
    let owed = 2 * 10 * 20;
    assert_eq!((messages.expected, messages.unique, messages.duplicated), (owed, owed, 0));
    assert_eq!(count(&report, "message"), owed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_scenario_tells_every_observer_about_every_leaver() {
    // An abrupt leaver's rooms hear `user_left` when its recovery window
    // closes: a short one, well within the drain. A broker per run: the
    // clients one run drops at its end still count as members for the window.
    let recovery_window = Duration::from_millis(200);
    for abrupt in [false, true] {
        let broker =
            Broker::with_config(broker::Config { recovery_window, ..broker::Config::default() }).await;
        let config = DisconnectConfig {
            clients: 20,
            rooms: 2,
            leavers: 0.4,
            rate: 200.0,
            connect_rate: 300.0,
            abrupt,
        };
        let report = run(&broker, AuthMode::Header, Scenario::Disconnect(config)).await;
        assert!(!report.loss, "abrupt={abrupt}: {:?}", report.loss_reasons);
        let notices = report.leave_notices.expect("leave notices are tallied");
        // 2 rooms × 4 leavers × 6 observers.
        assert_eq!(notices.expected, 2 * 4 * 6, "abrupt={abrupt}");
        assert_eq!((notices.unique, notices.lost, notices.duplicated), (48, 0, 0), "abrupt={abrupt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_scenario_accounts_for_churn() {
    let broker = Broker::start().await;
    let config = MixedConfig {
        clients: 20,
        rooms: 4,
        publishers: 1,
        rate: 10.0,
        size: 64,
        duration: Duration::from_secs(1),
        churn: 10.0,
        churn_lifetime: Duration::from_millis(200),
        connect_rate: 300.0,
    };
    let report = run(&broker, AuthMode::Payload, Scenario::Mixed(config)).await;
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let messages = report.messages.expect("messages are tallied");
    // 4 rooms × 1 publisher × 10 sends, each to the 5 steady members.
    assert_eq!((messages.expected, messages.unique), (4 * 10 * 5, 4 * 10 * 5));
    // 10 churners, each owing a join and a leave notice to the 5 steady members of its room.
    let joins = report.join_notices.expect("join notices");
    let leaves = report.leave_notices.expect("leave notices");
    assert_eq!((joins.expected, joins.unique), (50, 50));
    assert_eq!((leaves.expected, leaves.unique), (50, 50));
    assert_eq!(report.clients.connected, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_spread_round_robin_over_several_targets() {
    let (one, two) = (Broker::start().await, Broker::start().await);
    let target = Broker::targets(&[&one, &two], AuthMode::Payload);
    let scenario =
        Scenario::Connect(ConnectConfig { clients: 31, rate: 300.0, hold: Duration::from_millis(100) });
    let report = loadgen::run(&scenario, &target, &options()).await.expect("scenario runs");
    println!("{report}");
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let shares: Vec<(u64, u64, u64)> =
        report.targets.iter().map(|t| (t.planned, t.connected, t.connect_failures)).collect();
    assert_eq!(shares, vec![(16, 16, 0), (15, 15, 0)]);
    assert_eq!(report.targets[1].url, format!("http://{}", two.addr));
    assert!(report.to_string().contains(&format!("http://{}", one.addr)));
}

/// Two brokers on one Redis (the test Redis of tests/run.sh): each room's
/// members alternate between them, so every message crosses to the other
/// node for half its room. Skipped when no Redis runs (outside CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_over_two_clustered_brokers_reaches_every_member_once() {
    let Some(url) = tests::redis::redis_url() else { return };
    let key = format!("loadgen-targets-{}", std::process::id());
    let config = broker::Config {
        adapter: broker::config::AdapterKind::Redis,
        redis_url: url,
        redis_key: key,
        ..broker::Config::default()
    };
    let (one, two) = (Broker::with_config(config.clone()).await, Broker::with_config(config).await);
    let scenario = Scenario::Broadcast(BroadcastConfig {
        clients: 24,
        rooms: 3,
        publishers: 2,
        rate: 20.0,
        duration: Duration::from_secs(1),
        connect_rate: 200.0,
        ..BroadcastConfig::default()
    });
    let target = Broker::targets(&[&one, &two], AuthMode::Payload);
    let report = loadgen::run(&scenario, &target, &options()).await.expect("scenario runs");
    println!("{report}");
    assert!(!report.loss, "{:?}", report.loss_reasons);
    let messages = report.messages.expect("broadcast tallies messages");
    assert!(messages.expected > 0 && messages.duplicated == 0, "{messages:?}");
    // Notices are owed by pairs across nodes: 3 rooms of 8, 28 pairs each.
    let notices = report.join_notices.expect("join notices tallied");
    assert_eq!((notices.expected, notices.lost, notices.duplicated), (84, 0, 0), "{notices:?}");
    let connected: Vec<u64> = report.targets.iter().map(|t| t.connected).collect();
    assert_eq!(connected, vec![12, 12]);
    // Each node's members got their share: half the room is on each node.
    let deliveries: Vec<u64> = report.targets.iter().map(|t| t.deliveries).collect();
    assert_eq!(deliveries[0] + deliveries[1], report.counts.deliveries);
    assert_eq!(deliveries[0], deliveries[1], "members split evenly, each gets every message");
}

/// The binary over two worker processes: each runs whole rooms, they start
/// publishing together, and the parent's report adds them up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_merge_into_one_report() {
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--workers", "2", "--quiet", "--secret", SECRET, "--drain", "5s"])
        .args(["--target", &format!("http://{}", broker.addr)])
        .arg("--json")
        .arg(&json)
        .args(["broadcast", "--clients", "40", "--rooms", "4", "--publishers", "2", "--rate", "20"])
        .args(["--duration", "1s", "--connect-rate", "400"])
        .output()
        .await
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report written")).expect("report is JSON");
    assert_eq!(report["config"]["resolved"]["processes"], 2);
    assert_eq!(report["clients"]["connected"], 40);
    assert_eq!(report["clients"]["joined"], 40);
    let messages = &report["messages"];
    assert_eq!(messages["lost"], 0, "{messages}");
    assert_eq!(messages["duplicated"], 0, "{messages}");
    // 4 rooms of 10, 2 publishers each: every accepted send reaches 10 members.
    let sends = report["counts"]["sends_accepted"].as_u64().expect("sends");
    assert!(sends > 0);
    assert_eq!(messages["expected"].as_u64(), Some(sends * 10));
    // The merged message histogram holds every worker's deliveries.
    let phases = report["phases"].as_array().expect("phases");
    let message = phases.iter().find(|phase| phase["name"] == "message").expect("message phase");
    assert_eq!(message["count"].as_u64(), Some(sends * 10));
    // Both workers' own join notices: 4 rooms × (0 + 1 + … + 9).
    assert_eq!(report["join_notices"]["expected"], 180);
    assert_eq!(report["join_notices"]["lost"], 0);
}

/// Whether the target's CONNECT ack carries a `pid`: connection state
/// recovery is on.
async fn offers_recovery(target: &TargetOptions) -> bool {
    let target = loadgen::client::Target::resolve(target, 1).await.expect("target resolves");
    let token = target.minter.mint(0).expect("token mints");
    let conn = loadgen::client::Connection::open(&target, 0, &token).await.expect("probe connects");
    conn.accepted().is_some_and(|accepted| accepted.pid.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_members_come_back_and_their_deliveries_add_up() {
    for transport in [TransportMode::Websocket, TransportMode::Polling] {
        // A broker each: a recovering broker keeps the first run's sessions
        // waiting for their clients, and counts them as members.
        let broker = Broker::start().await;
        let recovers = offers_recovery(&broker.target(AuthMode::Payload)).await;
        let config = BroadcastConfig {
            clients: 12,
            rooms: 2,
            publishers: 1,
            rate: 20.0,
            duration: Duration::from_secs(2),
            size: 64,
            connect_rate: 300.0,
            drop_every: Duration::from_millis(500),
            reconnect_delay: Duration::from_millis(100),
            ..BroadcastConfig::default()
        };
        let target = TargetOptions { transport, ..broker.target(AuthMode::Payload) };
        let report =
            loadgen::run(&Scenario::Broadcast(config), &target, &options()).await.expect("scenario runs");
        println!("{report}");
        let drops = report.drops.as_ref().expect("the drops are reported");
        // 10 listeners, each first dropped within the first 500 ms of 2 s.
        assert!(drops.drops >= 10, "{transport:?}: {} drops", drops.drops);
        assert_eq!(
            drops.recovered + drops.fresh_sessions,
            drops.drops,
            "{transport:?}: every drop came back"
        );
        assert_eq!((drops.dropped.clients, drops.never_dropped.clients), (10, 2), "{transport:?}");
        assert_eq!(drops.never_dropped.complete, 2, "{transport:?}: publishers stay and get everything");
        assert!(report.clients.ended_early.is_empty(), "{transport:?}: {:?}", report.clients.ended_early);
        let messages = report.messages.expect("messages are tallied");
        // 2 rooms × 40 sends, each owed to the 6 members of its room.
        assert_eq!(messages.expected, 2 * 40 * 6, "{transport:?}");
        assert_eq!((messages.duplicated, messages.unexpected), (0, 0), "{transport:?}");
        assert_eq!(messages.unique + messages.lost, messages.expected, "{transport:?}");
        if !recovers {
            assert_eq!(
                (drops.recovered, drops.pid_acks),
                (0, 0),
                "{transport:?}: no pid, nothing to recover"
            );
            continue;
        }
        assert_eq!(drops.pid_acks, 12 + drops.drops, "{transport:?}: every CONNECT ack has a pid");
        assert!(drops.recovered > 0, "{transport:?}");
        // A dropped WebSocket is the session's end, seen at once. A polling
        // client dropped between two GETs is seen only at the heartbeat, so
        // a quick reconnect may find its session still open and get a fresh
        // one, as with socket.io: only recovered sessions must miss nothing.
        if transport == TransportMode::Websocket || drops.fresh_sessions == 0 {
            assert_eq!(drops.fresh_sessions, 0, "{transport:?}");
            assert_eq!((messages.lost, drops.dropped.complete), (0, 10), "{transport:?}");
            assert!(!report.loss, "{transport:?}: {:?}", report.loss_reasons);
        }
    }
}
