//! Run configuration: the target, the run options and one size struct per
//! scenario.
//!
//! Each struct is a clap `Args` (so the binary parses it) and a plain value
//! with a `Default` equal to the command-line defaults (so tests build it with
//! struct update syntax). Everything serializes into the `--json` report,
//! except the JWT secret.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::{Serialize, Serializer};

use crate::workers::Shard;

/// The broker's development secret, used when none is given.
pub const DEV_JWT_SECRET: &str = "dev-secret-do-not-use-in-production";

/// Where a client puts its token, as real Socket.IO clients can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `?token=…` in the handshake URL.
    Query,
    /// `Authorization: Bearer …` on the upgrade request.
    Header,
    /// `{"token":…}` in the Socket.IO CONNECT packet (`io(url, {auth})`).
    Payload,
}

/// The Engine.IO transport clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportMode {
    /// WebSocket only (`transports: ["websocket"]`).
    Websocket,
    /// HTTP long-polling only (`transports: ["polling"]`): a held GET and a
    /// POST per frame sent.
    Polling,
    /// Every other client (odd ids) on long-polling, the rest on WebSocket.
    Mixed,
}

/// The server under test and how clients reach it.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Target")]
pub struct TargetOptions {
    /// Base URL of the Socket.IO server (http:// or ws://; no TLS). Give it
    /// more than once (or comma-separated, as in LOADGEN_TARGET) for servers
    /// acting as one: client n connects to target n mod targets
    #[arg(
        long,
        env = "LOADGEN_TARGET",
        default_value = "http://127.0.0.1:3000",
        value_delimiter = ',',
        global = true
    )]
    pub target: Vec<String>,
    /// HS256 secret for minting client JWTs [default: the broker's dev secret]
    #[arg(long, env = "LOADGEN_JWT_SECRET", hide_env_values = true, global = true)]
    #[serde(skip)]
    pub secret: Option<String>,
    /// Where clients put their token
    #[arg(long, value_enum, default_value_t = AuthMode::Payload, global = true)]
    pub auth: AuthMode,
    /// Engine.IO transport of the clients: websocket, polling, or mixed (odd
    /// client ids poll)
    #[arg(long, value_enum, default_value_t = TransportMode::Websocket, global = true)]
    pub transport: TransportMode,
    /// Socket.IO namespace of the chat
    #[arg(long, default_value = "/api/v1/chat", global = true)]
    pub namespace: String,
    /// HTTP path of the Engine.IO endpoint
    #[arg(long, default_value = "/socket.io/", global = true)]
    pub path: String,
    /// JWT `sub` of client 0; client n gets sub_base + n
    #[arg(long, default_value_t = 1, global = true)]
    pub sub_base: u64,
    /// Put `sub` in the JWT as a string of digits instead of a number
    #[arg(long, global = true)]
    pub string_sub: bool,
    /// Lifetime of minted tokens
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, global = true)]
    #[serde(serialize_with = "as_humantime")]
    pub token_ttl: Duration,
    /// Loopback source addresses to spread connections over (127.0.0.1,
    /// 127.0.0.2, …); 0 picks one per 10 000 clients when the target is on
    /// loopback
    #[arg(long, default_value_t = 0, global = true)]
    pub source_ips: u32,
    /// Time allowed for one client's TCP connect, upgrade, open and auth
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    #[serde(serialize_with = "as_humantime")]
    pub connect_timeout: Duration,
    /// WebSocket read buffer per connection, in bytes (small keeps 100k
    /// connections cheap; it grows only while a larger frame is read)
    #[arg(long, default_value_t = 4096, global = true)]
    pub ws_read_buffer: usize,
    /// After each WebSocket read, turn TCP quick ACKs off again
    /// (`TCP_QUICKACK` 0, Linux): a read that empties the socket then no
    /// longer sends an ACK of its own, whose loopback processing (the
    /// server's side of it included) runs on loadgen's core. The ACKs come
    /// later instead, fewer, from the delayed-ACK timer or the receive path,
    /// some of them on the server's core: it changes what the server pays
    /// per delivery. Off by default; see bench/PROFILE.md
    #[arg(long, global = true)]
    pub delayed_ack: bool,
}

impl Default for TargetOptions {
    fn default() -> Self {
        Self {
            target: vec!["http://127.0.0.1:3000".to_owned()],
            secret: None,
            auth: AuthMode::Payload,
            transport: TransportMode::Websocket,
            namespace: "/api/v1/chat".to_owned(),
            path: "/socket.io/".to_owned(),
            sub_base: 1,
            string_sub: false,
            token_ttl: Duration::from_secs(24 * 3600),
            source_ips: 0,
            connect_timeout: Duration::from_secs(10),
            ws_read_buffer: 4096,
            delayed_ack: false,
        }
    }
}

impl TargetOptions {
    /// The secret to sign with.
    pub fn secret(&self) -> &str {
        self.secret.as_deref().unwrap_or(DEV_JWT_SECRET)
    }
}

/// How a run is conducted and reported, whatever the scenario.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Run")]
pub struct RunOptions {
    /// Longest time to wait for every client to connect and join
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, global = true)]
    #[serde(serialize_with = "as_humantime")]
    pub setup_timeout: Duration,
    /// After the last send, longest wait for outstanding deliveries
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    #[serde(serialize_with = "as_humantime")]
    pub drain: Duration,
    /// Exit 0 even when deliveries were lost or clients failed
    #[arg(long, global = true)]
    pub allow_loss: bool,
    /// No progress bar
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Write every figure and the exact configuration to FILE as JSON
    #[arg(long, value_name = "FILE", global = true)]
    pub json: Option<PathBuf>,
    /// Write latency percentile curves and throughput over time to FILE.svg
    #[arg(long, value_name = "FILE.svg", global = true)]
    pub plot: Option<PathBuf>,
    /// Tokio worker threads [default: one per core]
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Before a runtime thread goes idle to wait for its sockets, sleep this
    /// long first, so that one wake-up reads what arrived meanwhile on every
    /// connection instead of the thread waking for each arrival (on a VM a
    /// wake-up from idle costs more than reading a frame). Adds at most this
    /// much to a measured latency and to the schedule lag; 0 turns it off
    #[arg(long, default_value = "200us", value_parser = humantime::parse_duration, global = true)]
    #[serde(serialize_with = "as_humantime")]
    pub park_delay: Duration,
    /// Worker processes of loadgen to spread the clients over, whole rooms
    /// each, merged into one report [default: as many as the open-file
    /// hard limit per process needs]
    #[arg(long, global = true)]
    pub workers: Option<u32>,
    /// Internal: run share INDEX/COUNT as a worker of a parent loadgen,
    /// talking to it over stdin and stdout
    #[arg(long, global = true, hide = true, value_name = "INDEX/COUNT")]
    #[serde(skip)]
    pub worker_shard: Option<Shard>,
}

impl RunOptions {
    /// The runtime a run is driven on: `threads` workers (one per core when
    /// unset), each sleeping [`RunOptions::park_delay`] before it goes idle.
    ///
    /// # Errors
    /// The OS refused a thread or the I/O driver.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = self.threads {
            runtime.worker_threads(threads.max(1));
        }
        let park_delay = self.park_delay;
        if !park_delay.is_zero() {
            // A blocking sleep on purpose: while it lasts the sockets are not
            // watched, so frames pile up and the driver's next poll hands
            // them all over at once. Tokio calls this only when no task is
            // ready, so it never delays work already in hand.
            runtime.on_thread_park(move || std::thread::sleep(park_delay));
        }
        runtime.enable_all().build()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            setup_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(10),
            allow_loss: false,
            quiet: true,
            json: None,
            plot: None,
            threads: None,
            park_delay: Duration::from_micros(200),
            workers: None,
            worker_shard: None,
        }
    }
}

/// The scenarios, each with its sizes.
#[derive(Debug, Clone, Subcommand, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Scenario {
    /// Ramp N clients at a fixed rate: connect+auth latency, accept rate
    Connect(ConnectConfig),
    /// Clients join rooms at a fixed rate: ack latency and others' user_joined
    Join(JoinConfig),
    /// R rooms, P publishers each at a fixed open-loop rate: delivery latency
    /// and throughput
    Broadcast(BroadcastConfig),
    /// Members close at a fixed rate: latency to the others' user_left
    Disconnect(DisconnectConfig),
    /// Broadcast plus clients churning in and out, for a set duration
    Mixed(MixedConfig),
    /// Well-behaved chatters beside faulty clients (vanishing, silent,
    /// stalled, flooding, garbage, bad tokens, reconnect storms); then the
    /// target's gauges must return to idle
    Soak(SoakConfig),
}

impl Scenario {
    /// The subcommand name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect(_) => "connect",
            Scenario::Join(_) => "join",
            Scenario::Broadcast(_) => "broadcast",
            Scenario::Disconnect(_) => "disconnect",
            Scenario::Mixed(_) => "mixed",
            Scenario::Soak(_) => "soak",
        }
    }

    /// How many connections the scenario may hold at once, for sizing file
    /// descriptors and source addresses.
    pub fn peak_clients(&self) -> u64 {
        match self {
            Scenario::Connect(c) => u64::from(c.clients),
            Scenario::Join(c) => u64::from(c.clients),
            Scenario::Broadcast(c) => u64::from(c.clients),
            Scenario::Disconnect(c) => u64::from(c.clients),
            Scenario::Mixed(c) => {
                u64::from(c.clients) + (c.churn * (c.churn_lifetime.as_secs_f64() + 1.0)).ceil() as u64
            }
            Scenario::Soak(c) => {
                let fault_rate = c.vanish_rate
                    + c.silent_rate
                    + c.stall_rate
                    + c.flood_rate
                    + c.garbage_rate
                    + c.expired_rate
                    + c.revoked_rate
                    + c.forged_rate;
                let lingering = (fault_rate.max(0.0) * c.fault_timeout.as_secs_f64()).ceil() as u64;
                u64::from(c.clients) + u64::from(c.storm_size) + lingering
            }
        }
    }
}

/// Sizes of the `connect` scenario.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Sizes")]
pub struct ConnectConfig {
    /// Clients to connect
    #[arg(long, default_value_t = 2000)]
    pub clients: u32,
    /// Connects started per second (open loop)
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Keep every client connected this long after the ramp
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub hold: Duration,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self { clients: 2000, rate: 1000.0, hold: Duration::ZERO }
    }
}

/// Sizes of the `join` scenario.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Sizes")]
pub struct JoinConfig {
    /// Clients, spread evenly over the rooms
    #[arg(long, default_value_t = 2000)]
    pub clients: u32,
    /// Rooms
    #[arg(long, default_value_t = 20)]
    pub rooms: u32,
    /// Joins per second (open loop), round-robin over rooms
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Connects per second while setting up
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self { clients: 2000, rooms: 20, rate: 500.0, connect_rate: 1000.0 }
    }
}

/// Sizes of the `broadcast` scenario.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Sizes")]
pub struct BroadcastConfig {
    /// Clients, spread evenly over the rooms (room size = clients / rooms)
    #[arg(long, default_value_t = 2000)]
    pub clients: u32,
    /// Rooms
    #[arg(long, default_value_t = 20)]
    pub rooms: u32,
    /// Publishing members per room
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Messages per second per publisher (open loop). Note: the broker
    /// limits each connection to 100 events/s (burst 200) unless started
    /// with BROKER_RATE_LIMIT_PER_SEC=0; above that, sends are refused (429)
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long publishers publish
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub duration: Duration,
    /// Bytes of message content (sequence header plus padding)
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Connects per second while setting up
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
    /// Send without ack ids; refusals are then counted from `error` events
    #[arg(long)]
    pub no_ack: bool,
    /// Force-close each non-publishing member's connection at the TCP level
    /// about this often while publishing lasts (±50 %), and reconnect it as
    /// socket.io-client does, recovering the session when the server offers
    /// it; 0 = never
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub drop_every: Duration,
    /// Pause before a dropped member reconnects (±50 %, doubling up to 5 s
    /// while attempts fail), as socket.io-client's reconnectionDelay
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub reconnect_delay: Duration,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            clients: 2000,
            rooms: 20,
            publishers: 1,
            rate: 10.0,
            duration: Duration::from_secs(30),
            size: 64,
            connect_rate: 1000.0,
            no_ack: false,
            drop_every: Duration::ZERO,
            reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// Sizes of the `disconnect` scenario.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Sizes")]
pub struct DisconnectConfig {
    /// Clients, spread evenly over the rooms
    #[arg(long, default_value_t = 2000)]
    pub clients: u32,
    /// Rooms
    #[arg(long, default_value_t = 20)]
    pub rooms: u32,
    /// Fraction of each room that leaves; the rest watch for user_left
    #[arg(long, default_value_t = 0.5)]
    pub leavers: f64,
    /// Closes per second (open loop)
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Connects per second while setting up
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
    /// Drop the TCP connection instead of a Socket.IO disconnect and
    /// WebSocket close
    #[arg(long)]
    pub abrupt: bool,
}

impl Default for DisconnectConfig {
    fn default() -> Self {
        Self { clients: 2000, rooms: 20, leavers: 0.5, rate: 500.0, connect_rate: 1000.0, abrupt: false }
    }
}

/// Sizes of the `mixed` scenario.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Sizes")]
pub struct MixedConfig {
    /// Steady clients, spread evenly over the rooms
    #[arg(long, default_value_t = 2000)]
    pub clients: u32,
    /// Rooms
    #[arg(long, default_value_t = 20)]
    pub rooms: u32,
    /// Publishing members per room
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Messages per second per publisher (open loop; see broadcast --rate
    /// about the broker's rate limit)
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Bytes of message content
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long the mix runs
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub duration: Duration,
    /// Extra clients per second that connect, join a room, stay
    /// --churn-lifetime and disconnect
    #[arg(long, default_value_t = 20.0)]
    pub churn: f64,
    /// How long each churning client stays
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub churn_lifetime: Duration,
    /// Connects per second while setting up
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
}

impl Default for MixedConfig {
    fn default() -> Self {
        Self {
            clients: 2000,
            rooms: 20,
            publishers: 1,
            rate: 10.0,
            size: 64,
            duration: Duration::from_secs(30),
            churn: 20.0,
            churn_lifetime: Duration::from_secs(2),
            connect_rate: 1000.0,
        }
    }
}

/// Sizes of the `soak` scenario: the well-behaved chatters, then one rate
/// per kind of faulty client (0 turns a kind off).
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Sizes")]
pub struct SoakConfig {
    /// Well-behaved chatters, spread evenly over the rooms; each publishes
    #[arg(long, default_value_t = 40)]
    pub clients: u32,
    /// Rooms of chatters
    #[arg(long, default_value_t = 4)]
    pub rooms: u32,
    /// Messages per second per chatter (open loop)
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Bytes of message content
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long chatters publish and faults are started
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub duration: Duration,
    /// Connects per second while setting up the chatters
    #[arg(long, default_value_t = 200.0)]
    pub connect_rate: f64,
    /// Clients per second that join a chatter room and drop the TCP
    /// connection without a close (half with a FIN, half with a reset)
    #[arg(long, default_value_t = 2.0)]
    pub vanish_rate: f64,
    /// Clients per second that join a chatter room, then go silent: they
    /// never read or answer a ping again
    #[arg(long, default_value_t = 0.5)]
    pub silent_rate: f64,
    /// Clients per second that join a chatter room, stop reading and send
    /// themselves large messages until the server cuts them off
    #[arg(long, default_value_t = 0.5)]
    pub stall_rate: f64,
    /// Clients per second that send over the rate limit until disconnected
    #[arg(long, default_value_t = 0.5)]
    pub flood_rate: f64,
    /// Clients per second that send garbage (random bytes, malformed
    /// packets, deep nesting, lone surrogates, absurd attachment counts, …)
    #[arg(long, default_value_t = 2.0)]
    pub garbage_rate: f64,
    /// Kinds of garbage not to send, comma-separated (random-bytes,
    /// oversized-head, unframed-bytes, binary-noise, invalid-utf8,
    /// bad-engineio, bad-socketio, deep-nesting-connect, deep-nesting-event,
    /// absurd-attachments, unauthenticated-attachments, lone-surrogate,
    /// huge-number, duplicate-keys, close-code-999, exp-1e19)
    #[arg(long, value_delimiter = ',')]
    pub garbage_skip: Vec<String>,
    /// Clients per second with an expired token
    #[arg(long, default_value_t = 1.0)]
    pub expired_rate: f64,
    /// Clients per second with a token whose `jti` is --revoked-jti (off
    /// without it)
    #[arg(long, default_value_t = 1.0)]
    pub revoked_rate: f64,
    /// Clients per second with a token signed by the wrong key
    #[arg(long, default_value_t = 1.0)]
    pub forged_rate: f64,
    /// A `jti` the target was told to revoke (its revocation file)
    #[arg(long)]
    pub revoked_jti: Option<String>,
    /// Clients that connect at once, join, and all leave at once, per storm
    #[arg(long, default_value_t = 100)]
    pub storm_size: u32,
    /// Time between reconnect storms (0s: none)
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub storm_every: Duration,
    /// Longest life of one faulty client before it gives up waiting for the
    /// server to act
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub fault_timeout: Duration,
    /// The target's Prometheus metrics [default: <target>/metrics]
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Pid of the target's process, to read its RSS from /proc
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// How often the gauges are read during the run (for the peak)
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub sample_every: Duration,
    /// After the run, longest wait for the gauges to return to idle
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_humantime")]
    pub idle_timeout: Duration,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            clients: 40,
            rooms: 4,
            rate: 2.0,
            size: 64,
            duration: Duration::from_secs(60),
            connect_rate: 200.0,
            vanish_rate: 2.0,
            silent_rate: 0.5,
            stall_rate: 0.5,
            flood_rate: 0.5,
            garbage_rate: 2.0,
            garbage_skip: Vec::new(),
            expired_rate: 1.0,
            revoked_rate: 1.0,
            forged_rate: 1.0,
            revoked_jti: None,
            storm_size: 100,
            storm_every: Duration::from_secs(15),
            fault_timeout: Duration::from_secs(30),
            metrics_url: None,
            broker_pid: None,
            sample_every: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

fn as_humantime<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunOptions,
    }

    fn parse(args: &[&str]) -> RunOptions {
        Flags::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .expect("valid flags")
            .run
    }

    #[test]
    fn park_delay_flag_default_is_the_library_default_and_zero_turns_it_off() {
        assert_eq!(parse(&[]).park_delay, RunOptions::default().park_delay);
        assert_eq!(parse(&["--park-delay", "1ms"]).park_delay, Duration::from_millis(1));
        assert!(parse(&["--park-delay", "0s"]).park_delay.is_zero());
    }

    /// Every frame still arrives, round trip after round trip, on a thread
    /// that sleeps before each park: the delay postpones reads, never loses
    /// a wake-up.
    #[test]
    fn a_runtime_that_sleeps_before_parking_still_serves_its_sockets() {
        let runtime = parse(&["--threads", "1", "--park-delay", "2ms"]).runtime().expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let echo = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let mut byte = [0u8; 1];
                while stream.read_exact(&mut byte).await.is_ok() {
                    stream.write_all(&byte).await.expect("echo");
                }
            });
            let rounds = async {
                let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
                for round in 0..50u8 {
                    client.write_all(&[round]).await.expect("send");
                    let mut back = [0u8; 1];
                    client.read_exact(&mut back).await.expect("echoed");
                    assert_eq!(back, [round]);
                }
            };
            tokio::time::timeout(Duration::from_secs(30), rounds).await.expect("every round trip completes");
            echo.abort();
        });
    }
}
