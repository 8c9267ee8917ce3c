//! Broker configuration: one [`Config`] with embedded defaults, and the
//! [`Overrides`] that flags, `BROKER_*` environment variables and an optional
//! TOML file layer on top of it.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML
//! file (`--config FILE`), embedded default. Every key has one flag, one
//! variable and one TOML key of the same name (`--ping-interval-ms`,
//! `BROKER_PING_INTERVAL_MS`, `ping_interval_ms`); durations are milliseconds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// The HS256 secret used when none is configured. Never use it in production.
pub const DEV_JWT_SECRET: &str = "dev-secret-do-not-use-in-production";

/// JWT signature algorithm accepted by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[value(rename_all = "UPPERCASE")]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256, verified with a PEM public key.
    RS256,
    /// ECDSA P-256 with SHA-256, verified with a PEM public key.
    ES256,
}

/// How a namespace's emits reach other brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum AdapterKind {
    /// This broker alone: rooms live in its memory.
    #[default]
    Local,
    /// Brokers sharing a Redis act as one, speaking socket.io's Redis adapter protocol.
    Redis,
}

/// Everything the broker needs to run. Build it with [`Config::default`] and
/// struct update syntax, or from the command line with [`Overrides`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Defaults to `127.0.0.1:3000`.
    pub listen: SocketAddr,
    /// HTTP path of the Engine.IO endpoint. Defaults to `/socket.io/`.
    pub path: String,
    /// Socket.IO namespaces served by the chat gateway, each isolated.
    /// Defaults to `["/api/v1/chat"]`.
    pub namespaces: Vec<String>,
    /// JWT algorithm. Defaults to HS256.
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 shared secret. Defaults to none, which means [`DEV_JWT_SECRET`]
    /// and a loud warning at start-up.
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256/ES256. Defaults to none.
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim. Defaults to none (not checked).
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim. Defaults to none (not checked).
    pub jwt_audience: Option<String>,
    /// Leeway for `exp` and `nbf`. Defaults to 5 s.
    pub jwt_leeway: Duration,
    /// Origins allowed to open a connection (credentials allowed). Defaults to
    /// empty: any origin.
    pub cors_origins: Vec<String>,
    /// Interval between server pings. Defaults to 25 000 ms.
    pub ping_interval: Duration,
    /// How long a client has to answer a ping. Defaults to 20 000 ms.
    pub ping_timeout: Duration,
    /// Largest inbound WebSocket message, in bytes. Defaults to 1 000 000.
    pub max_payload: usize,
    /// Largest `content` of `send_message`, in bytes. Defaults to 4096.
    pub max_message_length: usize,
    /// Largest `roomId`, in bytes. Defaults to 128.
    pub max_room_id_length: usize,
    /// Bytes a connection's outbound queue may hold before the connection is
    /// cut off as a slow consumer. Defaults to 1 MiB.
    pub outbox_bytes: usize,
    /// Longest wait between one connection's writes while the broker is busy
    /// (see `engineio::WritePacer`); 0 writes every frame as it comes. Defaults
    /// to 40 ms.
    pub max_write_delay: Duration,
    /// Sustained events per second one connection may send; 0 turns the limit
    /// off. Defaults to 100.
    pub rate_limit_per_sec: u32,
    /// Events one connection may send in a burst above the sustained rate.
    /// Defaults to 200.
    pub rate_limit_burst: u32,
    /// Largest HTTP request head, in bytes; a larger one is answered 431. Defaults to 16 KiB (Node.js' limit).
    pub max_head_bytes: usize,
    /// How long a client may take to send its request head. Defaults to 10 000 ms.
    pub handshake_timeout: Duration,
    /// How long a session may stay without a namespace before it is closed (socket.io's `connectTimeout`). Defaults to 45 000 ms.
    pub connect_timeout: Duration,
    /// Open connections one source IP may hold; more are answered 503. 0 turns the limit off. Defaults to 1024.
    pub max_connections_per_ip: usize,
    /// Open connections in total; more are answered 503. 0 turns the limit off. Defaults to 100 000.
    pub max_connections: usize,
    /// Deepest nesting of arrays and objects in a client's JSON; deeper is a protocol error. Defaults to 32.
    pub max_json_depth: usize,
    /// Binary attachments one packet may announce; more is a protocol error. Defaults to 10 (socket.io-parser's `maxAttachments`).
    pub max_attachments: usize,
    /// Rooms one socket may be in; `join_room` beyond it gets error 429. Defaults to 256.
    pub max_rooms_per_socket: usize,
    /// Refused CONNECTs one connection may make; the next refusal closes it (1008). Defaults to 5.
    pub max_connect_failures: u32,
    /// File of revoked tokens: one `jti` or whole token per line, `#` starts a
    /// comment. Defaults to none.
    pub revocation_file: Option<PathBuf>,
    /// How often the revocation file is checked for changes. Defaults to 2000 ms.
    pub revocation_reload: Duration,
    /// How long a graceful shutdown may take. Defaults to 5000 ms.
    pub shutdown_timeout: Duration,
    /// The adapter: `local` or `redis`. Defaults to `local`.
    pub adapter: AdapterKind,
    /// The Redis server of the `redis` adapter. Defaults to `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// Channel prefix on Redis (the Node adapter's `key`). Defaults to `socket.io`.
    pub redis_key: String,
    /// Largest message published to or accepted from Redis, in bytes; larger
    /// broadcasts stay on this broker. Defaults to 1000000.
    pub redis_max_message_bytes: usize,
    /// The first character of every Engine.IO session id this broker hands
    /// out (one of `A-Z a-z 0-9 - _`), so a proxy in front of several brokers
    /// can send each long-polling request to the broker holding its session.
    /// Defaults to none (ids wholly random).
    pub sid_prefix: Option<char>,
    /// How often this broker tells the others of the cluster it is alive.
    /// Defaults to 5000 ms.
    pub redis_heartbeat_interval: Duration,
    /// How long another broker may stay silent before its members count as
    /// gone (their rooms here get `user_left`, within this plus one
    /// interval). Defaults to 10000 ms.
    pub redis_heartbeat_timeout: Duration,
    /// How long a dropped client may come back and recover its session
    /// (socket.io's `maxDisconnectionDuration`); also how long a packet stays
    /// in the replay store. `Duration::ZERO` turns recovery off. Defaults to 120 000 ms.
    pub recovery_window: Duration,
    /// Bytes of packets each namespace's replay store keeps at most; the
    /// oldest go first. Defaults to 64 MiB.
    pub recovery_max_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            path: "/socket.io/".to_owned(),
            namespaces: vec!["/api/v1/chat".to_owned()],
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(5),
            cors_origins: Vec::new(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            max_message_length: 4096,
            max_room_id_length: 128,
            outbox_bytes: 1 << 20,
            max_write_delay: Duration::from_millis(40),
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            max_head_bytes: 16 * 1024,
            handshake_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(45_000),
            max_connections_per_ip: 1024,
            max_connections: 100_000,
            max_json_depth: 32,
            max_attachments: 10,
            max_rooms_per_socket: 256,
            max_connect_failures: 5,
            revocation_file: None,
            revocation_reload: Duration::from_millis(2000),
            shutdown_timeout: Duration::from_millis(5000),
            adapter: AdapterKind::Local,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_key: "socket.io".to_owned(),
            redis_max_message_bytes: 1_000_000,
            sid_prefix: None,
            redis_heartbeat_interval: Duration::from_millis(5000),
            redis_heartbeat_timeout: Duration::from_millis(10_000),
            recovery_window: Duration::from_millis(120_000),
            recovery_max_bytes: 64 << 20,
        }
    }
}

/// Errors of loading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid or has an unknown key.
    #[error("parsing config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its range or the combination makes no sense.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Optional values for every [`Config`] key, as given by flags, `BROKER_*`
/// variables or a TOML file. Unset keys fall through to the next layer.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:3000]
    #[arg(long, env = "BROKER_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// HTTP path of the Engine.IO endpoint [default: /socket.io/]
    #[arg(long, env = "BROKER_PATH", global = true)]
    pub path: Option<String>,
    /// Comma-separated chat namespaces [default: /api/v1/chat]
    #[arg(long, env = "BROKER_NAMESPACES", value_delimiter = ',', global = true)]
    pub namespaces: Option<Vec<String>>,
    /// JWT algorithm [default: HS256]
    #[arg(long, env = "BROKER_JWT_ALGORITHM", global = true)]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// HS256 shared secret [default: a development secret, with a warning]
    #[arg(long, env = "BROKER_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256/ES256
    #[arg(long, env = "BROKER_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim [default: not checked]
    #[arg(long, env = "BROKER_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim [default: not checked]
    #[arg(long, env = "BROKER_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Leeway for `exp`/`nbf` in ms [default: 5000]
    #[arg(long, env = "BROKER_JWT_LEEWAY_MS", global = true)]
    pub jwt_leeway_ms: Option<u64>,
    /// Comma-separated allowed origins, credentials allowed [default: any]
    #[arg(long, env = "BROKER_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Option<Vec<String>>,
    /// Server ping interval in ms [default: 25000]
    #[arg(long, env = "BROKER_PING_INTERVAL_MS", global = true)]
    pub ping_interval_ms: Option<u64>,
    /// Time a client has to answer a ping, in ms [default: 20000]
    #[arg(long, env = "BROKER_PING_TIMEOUT_MS", global = true)]
    pub ping_timeout_ms: Option<u64>,
    /// Largest inbound WebSocket message in bytes [default: 1000000]
    #[arg(long, env = "BROKER_MAX_PAYLOAD", global = true)]
    pub max_payload: Option<usize>,
    /// Largest message `content` in bytes [default: 4096]
    #[arg(long, env = "BROKER_MAX_MESSAGE_LENGTH", global = true)]
    pub max_message_length: Option<usize>,
    /// Largest `roomId` in bytes [default: 128]
    #[arg(long, env = "BROKER_MAX_ROOM_ID_LENGTH", global = true)]
    pub max_room_id_length: Option<usize>,
    /// Outbound queue bound per connection in bytes; over it the client is cut off [default: 1048576]
    #[arg(long, env = "BROKER_OUTBOX_BYTES", global = true)]
    pub outbox_bytes: Option<usize>,
    /// Longest wait between a connection's writes while the broker is busy, in ms; 0 = never wait [default: 40]
    #[arg(long, env = "BROKER_MAX_WRITE_DELAY_MS", global = true)]
    pub max_write_delay_ms: Option<u64>,
    /// Sustained events per second per connection, 0 = unlimited [default: 100]
    #[arg(long, env = "BROKER_RATE_LIMIT_PER_SEC", global = true)]
    pub rate_limit_per_sec: Option<u32>,
    /// Burst of events above the sustained rate [default: 200]
    #[arg(long, env = "BROKER_RATE_LIMIT_BURST", global = true)]
    pub rate_limit_burst: Option<u32>,
    /// Largest HTTP request head in bytes; larger gets 431 [default: 16384]
    #[arg(long, env = "BROKER_MAX_HEAD_BYTES", global = true)]
    pub max_head_bytes: Option<usize>,
    /// Time a client has to send its request head, in ms [default: 10000]
    #[arg(long, env = "BROKER_HANDSHAKE_TIMEOUT_MS", global = true)]
    pub handshake_timeout_ms: Option<u64>,
    /// Time a session may stay without a namespace, in ms [default: 45000]
    #[arg(long, env = "BROKER_CONNECT_TIMEOUT_MS", global = true)]
    pub connect_timeout_ms: Option<u64>,
    /// Open connections per source IP, 0 = unlimited; more get 503 [default: 1024]
    #[arg(long, env = "BROKER_MAX_CONNECTIONS_PER_IP", global = true)]
    pub max_connections_per_ip: Option<usize>,
    /// Open connections in total, 0 = unlimited; more get 503 [default: 100000]
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Deepest JSON nesting a client may send; deeper closes with 1002 [default: 32]
    #[arg(long, env = "BROKER_MAX_JSON_DEPTH", global = true)]
    pub max_json_depth: Option<usize>,
    /// Binary attachments per packet; more closes with 1002 [default: 10]
    #[arg(long, env = "BROKER_MAX_ATTACHMENTS", global = true)]
    pub max_attachments: Option<usize>,
    /// Rooms one socket may be in; more gets error 429 [default: 256]
    #[arg(long, env = "BROKER_MAX_ROOMS_PER_SOCKET", global = true)]
    pub max_rooms_per_socket: Option<usize>,
    /// Refused CONNECTs per connection before it is closed [default: 5]
    #[arg(long, env = "BROKER_MAX_CONNECT_FAILURES", global = true)]
    pub max_connect_failures: Option<u32>,
    /// File of revoked tokens: one `jti` or whole token per line
    #[arg(long, env = "BROKER_REVOCATION_FILE", global = true)]
    pub revocation_file: Option<PathBuf>,
    /// How often the revocation file is re-read when it changed, in ms [default: 2000]
    #[arg(long, env = "BROKER_REVOCATION_RELOAD_MS", global = true)]
    pub revocation_reload_ms: Option<u64>,
    /// Longest graceful shutdown in ms [default: 5000]
    #[arg(long, env = "BROKER_SHUTDOWN_TIMEOUT_MS", global = true)]
    pub shutdown_timeout_ms: Option<u64>,
    /// Adapter: local, or redis to act as one with the brokers sharing a Redis [default: local]
    #[arg(long, env = "BROKER_ADAPTER", global = true)]
    pub adapter: Option<AdapterKind>,
    /// Redis URL of the redis adapter [default: redis://127.0.0.1:6379]
    #[arg(long, env = "BROKER_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Channel prefix on Redis, the Node adapter's `key` [default: socket.io]
    #[arg(long, env = "BROKER_REDIS_KEY", global = true)]
    pub redis_key: Option<String>,
    /// Largest message to or from Redis in bytes [default: 1000000]
    #[arg(long, env = "BROKER_REDIS_MAX_MESSAGE_BYTES", global = true)]
    pub redis_max_message_bytes: Option<usize>,
    /// First character of every session id (A-Z a-z 0-9 - _), for a proxy routing by `sid` [default: none]
    #[arg(long, env = "BROKER_SID_PREFIX", global = true)]
    pub sid_prefix: Option<char>,
    /// How often this broker tells the other brokers it is alive, in ms [default: 5000]
    #[arg(long, env = "BROKER_REDIS_HEARTBEAT_INTERVAL_MS", global = true)]
    pub redis_heartbeat_interval_ms: Option<u64>,
    /// Silence after which another broker's members count as gone, in ms [default: 10000]
    #[arg(long, env = "BROKER_REDIS_HEARTBEAT_TIMEOUT_MS", global = true)]
    pub redis_heartbeat_timeout_ms: Option<u64>,
    /// Time a dropped client has to recover its session, in ms; 0 turns recovery off [default: 120000]
    #[arg(long, env = "BROKER_RECOVERY_WINDOW_MS", global = true)]
    pub recovery_window_ms: Option<u64>,
    /// Bytes of packets each namespace keeps for replay [default: 67108864]
    #[arg(long, env = "BROKER_RECOVERY_MAX_BYTES", global = true)]
    pub recovery_max_bytes: Option<usize>,
}

impl Overrides {
    /// Reads a TOML file whose keys are the flag names with underscores.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`], unknown keys included.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }

    /// Keeps every key set here and takes the others from `lower`.
    #[must_use]
    pub fn or(self, lower: Self) -> Self {
        Self {
            listen: self.listen.or(lower.listen),
            path: self.path.or(lower.path),
            namespaces: self.namespaces.or(lower.namespaces),
            jwt_algorithm: self.jwt_algorithm.or(lower.jwt_algorithm),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            jwt_public_key_file: self.jwt_public_key_file.or(lower.jwt_public_key_file),
            jwt_issuer: self.jwt_issuer.or(lower.jwt_issuer),
            jwt_audience: self.jwt_audience.or(lower.jwt_audience),
            jwt_leeway_ms: self.jwt_leeway_ms.or(lower.jwt_leeway_ms),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            ping_interval_ms: self.ping_interval_ms.or(lower.ping_interval_ms),
            ping_timeout_ms: self.ping_timeout_ms.or(lower.ping_timeout_ms),
            max_payload: self.max_payload.or(lower.max_payload),
            max_message_length: self.max_message_length.or(lower.max_message_length),
            max_room_id_length: self.max_room_id_length.or(lower.max_room_id_length),
            outbox_bytes: self.outbox_bytes.or(lower.outbox_bytes),
            max_write_delay_ms: self.max_write_delay_ms.or(lower.max_write_delay_ms),
            rate_limit_per_sec: self.rate_limit_per_sec.or(lower.rate_limit_per_sec),
            rate_limit_burst: self.rate_limit_burst.or(lower.rate_limit_burst),
            max_head_bytes: self.max_head_bytes.or(lower.max_head_bytes),
            handshake_timeout_ms: self.handshake_timeout_ms.or(lower.handshake_timeout_ms),
            connect_timeout_ms: self.connect_timeout_ms.or(lower.connect_timeout_ms),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            max_connections: self.max_connections.or(lower.max_connections),
            max_json_depth: self.max_json_depth.or(lower.max_json_depth),
            max_attachments: self.max_attachments.or(lower.max_attachments),
            max_rooms_per_socket: self.max_rooms_per_socket.or(lower.max_rooms_per_socket),
            max_connect_failures: self.max_connect_failures.or(lower.max_connect_failures),
            revocation_file: self.revocation_file.or(lower.revocation_file),
            revocation_reload_ms: self.revocation_reload_ms.or(lower.revocation_reload_ms),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(lower.shutdown_timeout_ms),
            adapter: self.adapter.or(lower.adapter),
            redis_url: self.redis_url.or(lower.redis_url),
            redis_key: self.redis_key.or(lower.redis_key),
            redis_max_message_bytes: self.redis_max_message_bytes.or(lower.redis_max_message_bytes),
            sid_prefix: self.sid_prefix.or(lower.sid_prefix),
            redis_heartbeat_interval_ms: self
                .redis_heartbeat_interval_ms
                .or(lower.redis_heartbeat_interval_ms),
            redis_heartbeat_timeout_ms: self.redis_heartbeat_timeout_ms.or(lower.redis_heartbeat_timeout_ms),
            recovery_window_ms: self.recovery_window_ms.or(lower.recovery_window_ms),
            recovery_max_bytes: self.recovery_max_bytes.or(lower.recovery_max_bytes),
        }
    }

    /// Applies the set keys to `base` and checks the result.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when a value is out of range.
    pub fn apply(self, base: Config) -> Result<Config, ConfigError> {
        let ms = Duration::from_millis;
        let config = Config {
            listen: self.listen.unwrap_or(base.listen),
            path: self.path.unwrap_or(base.path),
            namespaces: self.namespaces.unwrap_or(base.namespaces),
            jwt_algorithm: self.jwt_algorithm.unwrap_or(base.jwt_algorithm),
            jwt_secret: self.jwt_secret.or(base.jwt_secret),
            jwt_public_key_file: self.jwt_public_key_file.or(base.jwt_public_key_file),
            jwt_issuer: self.jwt_issuer.or(base.jwt_issuer),
            jwt_audience: self.jwt_audience.or(base.jwt_audience),
            jwt_leeway: self.jwt_leeway_ms.map_or(base.jwt_leeway, ms),
            cors_origins: self.cors_origins.unwrap_or(base.cors_origins),
            ping_interval: self.ping_interval_ms.map_or(base.ping_interval, ms),
            ping_timeout: self.ping_timeout_ms.map_or(base.ping_timeout, ms),
            max_payload: self.max_payload.unwrap_or(base.max_payload),
            max_message_length: self.max_message_length.unwrap_or(base.max_message_length),
            max_room_id_length: self.max_room_id_length.unwrap_or(base.max_room_id_length),
            outbox_bytes: self.outbox_bytes.unwrap_or(base.outbox_bytes),
            max_write_delay: self.max_write_delay_ms.map_or(base.max_write_delay, ms),
            rate_limit_per_sec: self.rate_limit_per_sec.unwrap_or(base.rate_limit_per_sec),
            rate_limit_burst: self.rate_limit_burst.unwrap_or(base.rate_limit_burst),
            max_head_bytes: self.max_head_bytes.unwrap_or(base.max_head_bytes),
            handshake_timeout: self.handshake_timeout_ms.map_or(base.handshake_timeout, ms),
            connect_timeout: self.connect_timeout_ms.map_or(base.connect_timeout, ms),
            max_connections_per_ip: self.max_connections_per_ip.unwrap_or(base.max_connections_per_ip),
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_json_depth: self.max_json_depth.unwrap_or(base.max_json_depth),
            max_attachments: self.max_attachments.unwrap_or(base.max_attachments),
            max_rooms_per_socket: self.max_rooms_per_socket.unwrap_or(base.max_rooms_per_socket),
            max_connect_failures: self.max_connect_failures.unwrap_or(base.max_connect_failures),
            revocation_file: self.revocation_file.or(base.revocation_file),
            revocation_reload: self.revocation_reload_ms.map_or(base.revocation_reload, ms),
            shutdown_timeout: self.shutdown_timeout_ms.map_or(base.shutdown_timeout, ms),
            adapter: self.adapter.unwrap_or(base.adapter),
            redis_url: self.redis_url.unwrap_or(base.redis_url),
            redis_key: self.redis_key.unwrap_or(base.redis_key),
            redis_max_message_bytes: self.redis_max_message_bytes.unwrap_or(base.redis_max_message_bytes),
            sid_prefix: self.sid_prefix.or(base.sid_prefix),
            redis_heartbeat_interval: self
                .redis_heartbeat_interval_ms
                .map_or(base.redis_heartbeat_interval, ms),
            redis_heartbeat_timeout: self.redis_heartbeat_timeout_ms.map_or(base.redis_heartbeat_timeout, ms),
            recovery_window: self.recovery_window_ms.map_or(base.recovery_window, ms),
            recovery_max_bytes: self.recovery_max_bytes.unwrap_or(base.recovery_max_bytes),
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Checks ranges and combinations.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if !self.path.starts_with('/') {
            return invalid("path must start with '/'");
        }
        if self.namespaces.is_empty() {
            return invalid("at least one namespace is needed");
        }
        if let Some(bad) = self.namespaces.iter().find(|ns| !ns.starts_with('/') || ns.contains(',')) {
            return invalid(&format!("namespace {bad:?} must start with '/' and hold no ','"));
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return invalid("ping_interval_ms and ping_timeout_ms must be above 0");
        }
        if self.max_payload < 64 {
            return invalid("max_payload must be at least 64 bytes");
        }
        if self.max_message_length == 0 || self.max_room_id_length == 0 {
            return invalid("max_message_length and max_room_id_length must be above 0");
        }
        if self.outbox_bytes < 1024 {
            return invalid("outbox_bytes must be at least 1024");
        }
        if self.max_write_delay > Duration::from_secs(1) {
            return invalid("max_write_delay_ms must be at most 1000");
        }
        if self.max_head_bytes < 1024 {
            return invalid("max_head_bytes must be at least 1024");
        }
        if self.handshake_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("handshake_timeout_ms and connect_timeout_ms must be above 0");
        }
        if self.max_json_depth < 2 || self.max_json_depth > 512 {
            return invalid("max_json_depth must be between 2 and 512");
        }
        if self.redis_key.is_empty() || self.redis_key.contains('#') {
            return invalid("redis_key must be non-empty and without '#'");
        }
        if self.namespaces.iter().any(|namespace| namespace.contains('#')) {
            return invalid("namespaces must not contain '#' (it separates Redis channel parts)");
        }
        if self.redis_max_message_bytes == 0 {
            return invalid("redis_max_message_bytes must be above 0");
        }
        if self.sid_prefix.is_some_and(|prefix| !crate::ids::BASE64_ALPHABET.contains(prefix)) {
            return invalid("sid_prefix must be one of A-Z a-z 0-9 - _");
        }
        if self.redis_heartbeat_interval.is_zero()
            || self.redis_heartbeat_timeout <= self.redis_heartbeat_interval
        {
            return invalid(
                "redis_heartbeat_interval_ms must be above 0 and below redis_heartbeat_timeout_ms",
            );
        }
        if self.max_rooms_per_socket == 0 {
            return invalid("max_rooms_per_socket must be above 0");
        }
        if !self.recovery_window.is_zero() && self.recovery_max_bytes < 64 * 1024 {
            return invalid("recovery_max_bytes must be at least 65536 while recovery is on");
        }
        if self.revocation_reload.is_zero() {
            return invalid("revocation_reload_ms must be above 0");
        }
        match self.jwt_algorithm {
            JwtAlgorithm::HS256 if self.jwt_public_key_file.is_some() => {
                invalid("jwt_public_key_file needs jwt_algorithm RS256 or ES256")
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 if self.jwt_public_key_file.is_none() => {
                invalid("RS256 and ES256 need jwt_public_key_file")
            }
            _ => Ok(()),
        }
    }

    /// The HS256 secret in force: the configured one or [`DEV_JWT_SECRET`].
    #[must_use]
    pub fn effective_secret(&self) -> &str {
        self.jwt_secret.as_deref().unwrap_or(DEV_JWT_SECRET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let file: Overrides =
            toml::from_str("listen = \"127.0.0.1:4000\"\nping_interval_ms = 100\n").expect("valid toml");
        let flags = Overrides { ping_interval_ms: Some(7), ..Overrides::default() };
        let config = flags.or(file).apply(Config::default()).expect("valid");
        assert_eq!(config.listen, "127.0.0.1:4000".parse().expect("addr"));
        assert_eq!(config.ping_interval, Duration::from_millis(7));
        assert_eq!(config.ping_timeout, Duration::from_millis(20_000));
    }

    #[test]
    fn unknown_toml_key_is_refused() {
        assert!(toml::from_str::<Overrides>("lisen = \"x\"").is_err());
    }

    #[test]
    fn write_delay_comes_from_the_file_and_is_bounded() {
        let file: Overrides = toml::from_str("max_write_delay_ms = 0\n").expect("valid toml");
        let config = Overrides::default().or(file).apply(Config::default()).expect("valid");
        assert_eq!(config.max_write_delay, Duration::ZERO, "0 turns pacing off");
        assert_eq!(Config::default().max_write_delay, Duration::from_millis(40));
        let too_long = Overrides { max_write_delay_ms: Some(5_000), ..Overrides::default() };
        assert!(matches!(too_long.apply(Config::default()), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn recovery_window_comes_from_the_file_and_zero_turns_it_off() {
        assert_eq!(Config::default().recovery_window, Duration::from_millis(120_000));
        let file: Overrides = toml::from_str("recovery_window_ms = 0\n").expect("valid toml");
        let config = Overrides::default().or(file).apply(Config::default()).expect("valid");
        assert!(config.recovery_window.is_zero());
        let tiny = Overrides { recovery_max_bytes: Some(10), ..Overrides::default() };
        assert!(matches!(tiny.apply(Config::default()), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn public_key_algorithms_need_a_key() {
        let config = Config { jwt_algorithm: JwtAlgorithm::RS256, ..Config::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
    }
}
