//! A Socket.IO v5 chat broker over Engine.IO v4: WebSocket and HTTP
//! long-polling, with the upgrade between them.
//!
//! [`run`] serves a [`Config`] on a bound listener until a shutdown token is
//! cancelled. The layers, bottom up (dependencies point down only):
//!
//! - [`protocol`]: the pure codec — Engine.IO and Socket.IO packets, and
//!   [`protocol::Frame`], a complete WebSocket frame built once.
//! - [`auth`]: JWT to [`auth::Claims`], and the revocation list.
//! - [`rooms`]: the sharded [`rooms::RoomTable`]; a broadcast queues one
//!   frame into every member's outbox.
//! - [`engineio`]: Engine.IO sessions over WebSocket and long-polling — one
//!   driver per session (heartbeat, packets, the upgrade), a bounded
//!   outbox, and a writer task doing vectored writes while a WebSocket has
//!   frames its pushes could not write themselves.
//! - [`adapter`]: the halves of a namespace's adapter: this node's members
//!   ([`adapter::LocalAdapter`]) and, with `--adapter redis`, the other nodes
//!   through Redis, in socket.io's own Redis adapter format.
//! - [`socketio`]: namespaces, sockets, acks, the four ways to emit, and
//!   the adapter seam every emit to more than one socket goes through.
//! - [`gateway`]: the chat application, the only module that knows chat.
//! - [`http`]: handshake and upgrade (a lean path of its own), long-polling
//!   (hyper), `/health`, `/metrics`.
//! - [`metrics`], [`config`], [`ids`].
//! - [`conformance`]: the server of the official protocol test suites, on
//!   the same layers ([`serve`] runs any [`Service`]).

// Nothing reachable from network input may panic: indexing, slicing and
// `expect` are reviewed site by site (each remaining one says why it cannot
// fail), and the modules that decode client input also deny unchecked
// arithmetic. Tests may index and expect freely.
#![warn(clippy::indexing_slicing, clippy::expect_used, clippy::unwrap_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::expect_used, clippy::unwrap_used, clippy::panic))]

pub mod adapter;
pub mod admission;
pub mod auth;
pub mod config;
pub mod conformance;
pub mod engineio;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod socketio;

/// The Engine.IO layer's former name, kept so that code written against
/// `broker::conn` builds while it moves to [`engineio`].
pub use engineio as conn;

use std::sync::Arc;
use std::time::Duration;

pub use config::Config;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::adapter::redis::node::{NodeOptions, RedisCluster};
use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{AdapterKind, JwtAlgorithm};
use crate::engineio::{Application, Engine, EngineSettings, WritePacer};
use crate::gateway::ChatGateway;
use crate::metrics::Metrics;
use crate::socketio::{Adapter, Handler, PacketLimits, SocketIo};

/// Errors that stop the broker from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A key or revocation file could not be used.
    #[error(transparent)]
    Auth(#[from] auth::SetupError),
    /// The Redis adapter could not be set up (an invalid URL).
    #[error(transparent)]
    Redis(#[from] adapter::redis::bus::BusError),
}

/// After an `accept` error (such as running out of file descriptors), wait
/// this long before trying again rather than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `config` on `listener` until `shutdown` is cancelled, then stops
/// accepting, sends every client a Socket.IO DISCONNECT and a close frame,
/// and waits for the connections to flush, at most `config.shutdown_timeout`.
///
/// # Errors
/// [`StartError`] when the configuration cannot be used (invalid values, an
/// unreadable key or revocation file).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let (gateway, namespaces) = chat_gateway(&config)?;
    log_start(&config, &listener);

    let revocations = config.revocation_file.clone().map(|path| {
        let reload = config.revocation_reload;
        let shutdown = shutdown.clone();
        move |io: SocketIo| gateway::watch_revocations(gateway, io, path, reload, shutdown)
    });
    serve(config, listener, shutdown, namespaces, revocations).await
}

/// The namespaces a server serves, by name, each with its handler.
pub type Namespaces = Vec<(String, Arc<dyn Handler>)>;

/// The chat gateway `config` describes, and the namespaces it serves: what
/// [`run`] serves, for a caller of [`serve`] that wants the same broker and a
/// hold of its [`SocketIo`] (a test emitting from the server side).
///
/// # Errors
/// [`StartError::Auth`] when a key or revocation file cannot be used.
pub fn chat_gateway(config: &Config) -> Result<(Arc<ChatGateway>, Namespaces), StartError> {
    let auth = Arc::new(Authenticator::from_config(config)?);
    let gateway = Arc::new(ChatGateway::new(auth, config));
    let namespaces = config
        .namespaces
        .iter()
        .map(|name| (name.clone(), Arc::clone(&gateway) as Arc<dyn Handler>))
        .collect();
    Ok((gateway, namespaces))
}

/// Serves any Socket.IO application: `namespaces` with their handlers, on
/// the broker's Engine.IO sessions, HTTP side and limits from `config`, until
/// `shutdown` is cancelled. [`run`] is this with the chat gateway; the
/// conformance server and tests give handlers of their own. `background`,
/// if given, makes a task from the server's [`SocketIo`] that runs beside it.
///
/// The configuration is not validated here; [`run`] does that.
///
/// # Errors
/// [`StartError::Redis`] when the Redis adapter is configured with a URL
/// that is not one (an unreachable Redis is not an error: the broker starts
/// degraded and joins the cluster when Redis is up).
pub async fn serve<B: Future<Output = ()> + Send + 'static>(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    namespaces: Namespaces,
    background: Option<impl FnOnce(SocketIo) -> B>,
) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::default());
    let tracker = TaskTracker::new();
    let io = socket_io(&config, namespaces, &metrics, &tracker, &shutdown).await?;
    if let Some(background) = background {
        tracker.spawn(background(io.clone()));
    }
    let service = Service {
        endpoints: vec![(config.path.clone(), Arc::new(io.clone()) as Arc<dyn Application>)],
        io: Some(io),
        settings: EngineSettings {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            max_payload: config.max_payload,
            outbox_bytes: config.outbox_bytes,
            sid_prefix: config.sid_prefix,
        },
        cors_origins: config.cors_origins.clone(),
        metrics,
        max_write_delay: config.max_write_delay,
        shutdown_timeout: config.shutdown_timeout,
        limits: http::HttpLimits::from(&config),
        max_connections_per_ip: config.max_connections_per_ip,
        max_connections: config.max_connections,
    };
    serve_service(service, listener, shutdown, tracker).await;
    Ok(())
}

/// What [`serve_service`] runs: Engine.IO applications at their paths, and
/// the settings and limits their sessions share.
pub struct Service {
    /// Each Engine.IO endpoint's path (with its trailing slash) and application.
    pub endpoints: Vec<(String, Arc<dyn Application>)>,
    /// The Socket.IO server, if there is one, for `/health` and `/metrics`.
    pub io: Option<SocketIo>,
    /// Session settings, the same for every endpoint.
    pub settings: EngineSettings,
    /// Allowed origins; empty means any.
    pub cors_origins: Vec<String>,
    /// The counters every session updates.
    pub metrics: Arc<Metrics>,
    /// The write pacer's largest delay (zero: never delay).
    pub max_write_delay: Duration,
    /// How long shutdown waits for sessions to flush.
    pub shutdown_timeout: Duration,
    /// Request bounds.
    pub limits: http::HttpLimits,
    /// Most open connections per source address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Most open connections in all (0: no limit).
    pub max_connections: usize,
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets every session say goodbye, and waits for the tasks of
/// `tracker` (which may already hold the caller's own background tasks), at
/// most `service.shutdown_timeout`. [`serve`] is this for one Socket.IO
/// application; the conformance server adds an Engine.IO endpoint of its own.
pub async fn serve_service(
    service: Service,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let Service {
        endpoints,
        io,
        settings,
        cors_origins,
        metrics,
        max_write_delay,
        shutdown_timeout,
        limits,
        max_connections_per_ip,
        max_connections,
    } = service;
    if endpoints.is_empty() {
        warn!("no Engine.IO endpoint to serve");
        return;
    }
    let pacer = Arc::new(WritePacer::new(max_write_delay));
    tracker.spawn(Arc::clone(&pacer).run(Arc::clone(&metrics), shutdown.clone()));
    let settings = Arc::new(settings);
    let endpoints = endpoints
        .into_iter()
        .map(|(path, app)| http::Endpoint {
            path,
            engine: Arc::new(Engine {
                settings: Arc::clone(&settings),
                app,
                metrics: Arc::clone(&metrics),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
                pacer: Arc::clone(&pacer),
                sessions: Arc::default(),
            }),
        })
        .collect();
    let admission = Arc::new(Admission::new(max_connections_per_ip, max_connections, metrics));
    let state = Arc::new(http::HttpState { endpoints, cors_origins, io, limits, admission });

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    // Writers batch frames themselves; Nagle would only add latency.
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(http::serve(stream, remote, Arc::clone(&state)));
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    info!(tasks = tracker.len(), "shutting down: closing sessions, taking only their last polls");
    tracker.close();
    let drained = tokio::time::timeout(shutdown_timeout, async {
        loop {
            tokio::select! {
                biased;
                () = tracker.wait() => break,
                // A long-polling client's last GET comes on a new connection.
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        tracker.spawn(http::serve_draining(stream, remote, Arc::clone(&state)));
                    }
                    Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
                },
            }
        }
    })
    .await;
    drop(listener);
    if drained.is_err() {
        warn!(left = tracker.len(), "shutdown timeout reached, dropping the remaining connections");
    } else {
        info!("shutdown complete");
    }
}

/// The Socket.IO server of `config`: local adapters, or adapters that reach
/// the other brokers through Redis.
async fn socket_io(
    config: &Config,
    namespaces: Namespaces,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<SocketIo, StartError> {
    let limits = PacketLimits::from(config);
    if config.adapter == AdapterKind::Local {
        return Ok(SocketIo::with_limits(namespaces, Arc::clone(metrics), limits));
    }
    let names: Vec<String> = namespaces.iter().map(|(name, _)| name.clone()).collect();
    let cluster = Arc::new(
        RedisCluster::connect(
            &config.redis_url,
            &NodeOptions {
                key: config.redis_key.clone(),
                max_message_bytes: config.redis_max_message_bytes,
                heartbeat_interval: config.redis_heartbeat_interval,
                heartbeat_timeout: config.redis_heartbeat_timeout,
            },
            &names,
            tracker,
            shutdown.clone(),
        )
        .await?,
    );
    let adapter = |name: &str| match cluster.namespace(name) {
        Some(node) => Adapter::clustered(name, node),
        None => Adapter::local(name),
    };
    Ok(SocketIo::with_adapters(namespaces, Arc::clone(metrics), limits, adapter).in_cluster(cluster))
}

fn log_start(config: &Config, listener: &TcpListener) {
    let address = listener.local_addr().map_or_else(|_| "?".to_owned(), |addr| addr.to_string());
    let auth = match config.jwt_algorithm {
        JwtAlgorithm::HS256 if config.jwt_secret.is_none() => "HS256 with the DEVELOPMENT secret",
        JwtAlgorithm::HS256 => "HS256 shared secret",
        JwtAlgorithm::RS256 => "RS256 public key",
        JwtAlgorithm::ES256 => "ES256 public key",
    };
    info!(%address, path = %config.path, namespaces = ?config.namespaces, auth, "broker listening");
    if config.jwt_secret.is_none() && config.jwt_algorithm == JwtAlgorithm::HS256 {
        warn!(
            "NO JWT SECRET CONFIGURED: tokens are checked against the built-in development secret, \
             which anyone can read in the source. Set BROKER_JWT_SECRET (or --jwt-secret) before \
             exposing this broker."
        );
    }
}
