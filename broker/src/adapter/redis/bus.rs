//! [`Bus`]: the broker's two Redis connections — one subscribed to every
//! namespace's channels, one for commands (`PUBLISH`, `PUBSUB NUMSUB`).
//!
//! Publishing never waits: [`Bus::publish`] queues into a bounded channel that
//! one task drains, sending whatever is queued as one pipeline, so messages
//! leave in the order they were queued and a burst costs one round trip. A
//! full queue or a failed pipeline drops those messages (pub/sub is
//! fire-and-forget in socket.io's adapter too) and counts them.
//! [`Bus::publish_ordered`] publishes through a script that first takes the
//! message's id from a counter in Redis, so ids follow Redis's one order.
//!
//! The subscriber task hands each message to a [`Receiver`] on its own task
//! (the receiver must not block). When the connection drops it marks the bus
//! disconnected, reconnects with backoff ([`MIN_BACKOFF`] doubling to
//! [`MAX_BACKOFF`]) and subscribes again. Nothing published meanwhile
//! reaches it: Redis keeps no pub/sub history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::session::StoredSession;
use crate::ids::Pid;

/// First wait before reconnecting the subscriber.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Messages queued for publishing before new ones are dropped.
pub const PUBLISH_QUEUE: usize = 65_536;
/// Most messages sent in one pipeline.
const PIPELINE_MESSAGES: usize = 512;
/// How long a command (a pipeline, `PUBSUB NUMSUB`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(redis::RedisError),
    /// The connection could not be set up.
    #[error("cannot use Redis at {url}: {source}")]
    Connect {
        /// The URL, without credentials.
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
}

/// What the bus subscribes to.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    /// Channel patterns (`PSUBSCRIBE`).
    pub patterns: Vec<String>,
    /// Channels (`SUBSCRIBE`).
    pub channels: Vec<String>,
}

/// Where received messages go. Called on the subscriber task, one message
/// at a time in arrival order: it must not block.
pub trait Receiver: Send + Sync + 'static {
    /// A message arrived on `channel`.
    fn receive(&self, channel: &str, payload: &[u8]);
    /// The subscriber (re)connected and is subscribed again.
    fn on_connected(&self) {}
    /// The subscriber connection was lost: what is published meanwhile does
    /// not reach this node.
    fn on_disconnected(&self) {}
    /// A message this node queued could not be published (its pipeline
    /// failed): the receiver may still deliver it locally.
    fn receive_unsent(&self, channel: &str, payload: &[u8]) {
        let _ = (channel, payload);
    }
    /// An ordered message (see [`Bus::publish_ordered`]) could not be
    /// published: the receiver gives it an id of its own, puts it between
    /// the `parts`, may deliver it locally, and returns the id.
    fn receive_unordered(&self, channel: &str, parts: &[Bytes]) -> String;
}

/// Counters of the bus, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// 1 while the subscriber connection is up and subscribed.
    pub connected: AtomicU64,
    /// Times the subscriber connection was lost.
    pub outages: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Messages dropped: queue full, or their pipeline failed.
    pub publish_dropped: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
    /// Received messages refused (too large, malformed).
    pub refused: AtomicU64,
    /// Other brokers found silent for the heartbeat timeout with members
    /// (once per namespace).
    pub nodes_lost: AtomicU64,
    /// Broadcasts with binary data from other nodes, not delivered.
    pub binary_refused: AtomicU64,
    /// Server-side emits from other nodes (no listeners here).
    pub server_side_emits: AtomicU64,
}

impl BusMetrics {
    /// The counters as they are now.
    #[must_use]
    pub fn snapshot(&self) -> crate::metrics::RedisCounters {
        crate::metrics::RedisCounters {
            connected: self.connected.load(Relaxed),
            outages: self.outages.load(Relaxed),
            published: self.published.load(Relaxed),
            publish_dropped: self.publish_dropped.load(Relaxed),
            received: self.received.load(Relaxed),
            refused: self.refused.load(Relaxed),
            nodes_lost: self.nodes_lost.load(Relaxed),
            binary_refused: self.binary_refused.load(Relaxed),
            server_side_emits: self.server_side_emits.load(Relaxed),
        }
    }
}

/// A message waiting to be published.
#[derive(Debug)]
struct Outgoing {
    channel: Arc<str>,
    /// The whole message, or with `ordered` the part before its first id.
    payload: Bytes,
    ordered: Option<Ordered>,
}

/// A message whose id Redis gives it ([`ORDERED_PUBLISH`]): `payload`, then
/// each part of `rest` after the id as a MessagePack string.
#[derive(Debug)]
struct Ordered {
    counter: Arc<str>,
    rest: Vec<Bytes>,
    done: oneshot::Sender<String>,
}

impl Outgoing {
    /// The parts of an ordered message, the ids' places between them.
    fn parts(&self) -> Vec<Bytes> {
        let rest = self.ordered.as_ref().map_or(&[][..], |ordered| ordered.rest.as_slice());
        std::iter::once(self.payload.clone()).chain(rest.iter().cloned()).collect()
    }
}

/// Takes the next id of the counter `KEYS[1]` (the counter + 1, or Redis's
/// clock in microseconds when that is larger, so ids still increase after
/// Redis lost the counter) and publishes `ARGV[2]`, `ARGV[3]`, … joined by
/// the id on `ARGV[1]`, the id written as a MessagePack string (fixstr: up
/// to 31 digits; a message holds it once per gap, as its id and as its
/// recovery offset). One script, so ids increase in the order Redis relays
/// the messages, whichever broker sent them. Returns the id.
const ORDERED_PUBLISH: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local last = tonumber(redis.call('GET', KEYS[1])) or 0
local id = string.format('%.0f', math.max(last + 1, now))
redis.call('SET', KEYS[1], id)
local parts = {}
for index = 2, #ARGV do parts[#parts + 1] = ARGV[index] end
redis.call('PUBLISH', ARGV[1], table.concat(parts, string.char(160 + #id) .. id))
return id
";

/// The Redis connections of one broker. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    queue: mpsc::Sender<Outgoing>,
    commands: ConnectionManager,
    metrics: Arc<BusMetrics>,
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("connected", &self.is_connected()).finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to `url`, subscribes to `subscriptions`, and starts the
    /// publisher and subscriber tasks on `tracker` until `shutdown`. When
    /// Redis cannot be reached now, the bus starts disconnected (counted as
    /// an outage) and keeps trying, with backoff, as after any outage.
    ///
    /// # Errors
    /// [`BusError`] when the URL is invalid.
    pub async fn connect(
        url: &str,
        subscriptions: Subscriptions,
        receiver: Arc<dyn Receiver>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(BusError::Url)?;
        let shown = redacted(url);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(MAX_BACKOFF)
            // Each command that finds the connection down starts a new round of retries.
            .set_number_of_retries(2);
        // Lazy: it connects on the first command, so a broker starts whether
        // or not Redis is up.
        let commands = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|source| BusError::Connect { url: shown.clone(), source })?;
        let metrics = Arc::new(BusMetrics::default());
        let connected = Arc::new(AtomicBool::new(false));
        let pubsub = match subscribe(&client, &subscriptions).await {
            Ok(pubsub) => {
                connected.store(true, Relaxed);
                metrics.connected.store(1, Relaxed);
                receiver.on_connected();
                info!(url = %shown, "connected to Redis");
                Some(pubsub)
            }
            Err(error) => {
                metrics.outages.fetch_add(1, Relaxed);
                warn!(url = %shown, %error, "Redis unreachable at start; serving local members only until it is up");
                None
            }
        };

        let (queue, outgoing) = mpsc::channel(PUBLISH_QUEUE);
        tracker.spawn(publish_loop(
            outgoing,
            commands.clone(),
            Arc::clone(&receiver),
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
        let subscriber = Subscriber {
            client,
            commands: commands.clone(),
            subscriptions,
            receiver,
            metrics: Arc::clone(&metrics),
            connected: Arc::clone(&connected),
            shutdown,
        };
        tracker.spawn(subscriber.run(pubsub));
        Ok(Self { queue, commands, metrics, connected })
    }

    /// Queues `payload` for publishing on `channel`. Returns false when it
    /// was dropped (queue full or bus closed).
    pub fn publish(&self, channel: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> bool {
        self.enqueue(Outgoing { channel: channel.into(), payload: payload.into(), ordered: None })
    }

    /// Queues `parts` joined by an id taken from the Redis counter
    /// `counter` for publishing on `channel`, the id written as a
    /// MessagePack string. The id increases in the order Redis relays the
    /// messages of every node using `counter`. `done` gets it; or, when the
    /// message could not be published, the id
    /// [`Receiver::receive_unordered`] gave. Returns false when it was
    /// dropped at once (queue full, bus closed).
    pub fn publish_ordered(
        &self,
        channel: impl Into<Arc<str>>,
        counter: Arc<str>,
        parts: Vec<Bytes>,
        done: oneshot::Sender<String>,
    ) -> bool {
        let mut parts = parts.into_iter();
        let payload = parts.next().unwrap_or_default();
        let ordered = Some(Ordered { counter, rest: parts.collect(), done });
        self.enqueue(Outgoing { channel: channel.into(), payload, ordered })
    }

    fn enqueue(&self, message: Outgoing) -> bool {
        if self.queue.try_send(message).is_ok() {
            true
        } else {
            self.metrics.publish_dropped.fetch_add(1, Relaxed);
            false
        }
    }

    /// The number of subscribers of `channel` (`PUBSUB NUMSUB`): with the
    /// request channel, the number of servers in the cluster, this one included.
    ///
    /// # Errors
    /// When Redis does not answer in time.
    pub async fn subscriber_count(&self, channel: &str) -> redis::RedisResult<usize> {
        let mut commands = self.commands.clone();
        let (_, count): (String, usize) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(&mut commands).await?;
        Ok(count)
    }

    /// Stores a suspended session for `window` (see [`super::session`]).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time (the command timeout):
    /// the session is then kept by this broker alone, and only a client
    /// that comes back here recovers it.
    pub async fn store_session(&self, session: &StoredSession, window: Duration) -> redis::RedisResult<()> {
        let mut commands = self.commands.clone();
        super::session::store(&mut commands, session, window).await
    }

    /// Takes the session `pid` out of Redis, once across the cluster (see
    /// [`super::session::take`]).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn take_session(&self, pid: Pid) -> redis::RedisResult<Option<StoredSession>> {
        let mut commands = self.commands.clone();
        super::session::take(&mut commands, pid).await
    }

    /// Deletes the session `pid` (see [`super::session::discard`]).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn discard_session(&self, pid: Pid) -> redis::RedisResult<()> {
        let mut commands = self.commands.clone();
        super::session::discard(&mut commands, pid).await
    }

    /// Whether the subscriber connection is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// The bus's counters.
    #[must_use]
    pub fn metrics(&self) -> &Arc<BusMetrics> {
        &self.metrics
    }
}

async fn subscribe(
    client: &redis::Client,
    subscriptions: &Subscriptions,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting")))??;
    for pattern in &subscriptions.patterns {
        pubsub.psubscribe(pattern).await?;
    }
    for channel in &subscriptions.channels {
        pubsub.subscribe(channel).await?;
    }
    Ok(pubsub)
}

struct Subscriber {
    client: redis::Client,
    commands: ConnectionManager,
    subscriptions: Subscriptions,
    receiver: Arc<dyn Receiver>,
    metrics: Arc<BusMetrics>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

impl Subscriber {
    async fn run(self, first: Option<redis::aio::PubSub>) {
        let mut pubsub = first;
        let mut backoff = MIN_BACKOFF;
        loop {
            if let Some(connection) = pubsub.take() {
                backoff = MIN_BACKOFF;
                if self.drain(connection).await.is_break() {
                    return;
                }
                self.connected.store(false, Relaxed);
                self.metrics.connected.store(0, Relaxed);
                self.metrics.outages.fetch_add(1, Relaxed);
                self.receiver.on_disconnected();
                warn!("lost the Redis subscription; serving local members only until it is back");
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match subscribe(&self.client, &self.subscriptions).await {
                Ok(connection) => {
                    self.refresh_commands().await;
                    self.connected.store(true, Relaxed);
                    self.metrics.connected.store(1, Relaxed);
                    self.receiver.on_connected();
                    info!("Redis subscription restored");
                    pubsub = Some(connection);
                }
                Err(error) => warn!(%error, retry_in = ?backoff, "Redis still unreachable"),
            }
        }
    }

    /// Makes the command connection reconnect now, if it has to, rather than
    /// on the first publish after the outage (which would then be lost for
    /// the other nodes).
    async fn refresh_commands(&self) {
        for _ in 0..3 {
            let mut commands = self.commands.clone();
            let ping = redis::cmd("PING");
            if matches!(
                tokio::time::timeout(COMMAND_TIMEOUT, ping.query_async::<()>(&mut commands)).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }

    /// Hands messages to the receiver until the connection ends (continue)
    /// or the broker shuts down (break).
    async fn drain(&self, mut connection: redis::aio::PubSub) -> std::ops::ControlFlow<()> {
        let mut messages = connection.on_message();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return std::ops::ControlFlow::Break(()),
                message = messages.next() => match message {
                    Some(message) => {
                        self.metrics.received.fetch_add(1, Relaxed);
                        self.receiver.receive(message.get_channel_name(), message.get_payload_bytes());
                    }
                    None => return std::ops::ControlFlow::Continue(()),
                },
            }
        }
    }
}

async fn publish_loop(
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut commands: ConnectionManager,
    receiver: Arc<dyn Receiver>,
    metrics: Arc<BusMetrics>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PIPELINE_MESSAGES);
    let mut failing = false;
    // The SHA-1 of ORDERED_PUBLISH, as Redis gave it when first loaded.
    let mut script_hash: Option<String> = None;
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = outgoing.recv_many(&mut batch, PIPELINE_MESSAGES) => received,
        };
        if received == 0 {
            return;
        }
        let mut pipeline = redis::pipe();
        let hash = if batch.iter().any(|message| message.ordered.is_some()) {
            if script_hash.is_none() {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(ORDERED_PUBLISH);
                script_hash = load.query_async(&mut commands).await.ok();
            }
            // Loaded again with every batch that needs it: Redis may have restarted since.
            pipeline.cmd("SCRIPT").arg("LOAD").arg(ORDERED_PUBLISH).ignore();
            script_hash.as_deref().unwrap_or_default()
        } else {
            ""
        };
        for message in &batch {
            match &message.ordered {
                None => {
                    pipeline.cmd("PUBLISH").arg(&*message.channel).arg(&message.payload[..]).ignore();
                }
                Some(ordered) => {
                    let command = pipeline
                        .cmd("EVALSHA")
                        .arg(hash)
                        .arg(1)
                        .arg(&*ordered.counter)
                        .arg(&*message.channel)
                        .arg(&message.payload[..]);
                    for part in &ordered.rest {
                        command.arg(&part[..]);
                    }
                }
            }
        }
        match pipeline.query_async::<Vec<String>>(&mut commands).await {
            Ok(ids) => {
                metrics.published.fetch_add(received as u64, Relaxed);
                let mut ids = ids.into_iter();
                for message in batch.drain(..) {
                    if message.ordered.is_some() {
                        let id = ids.next().unwrap_or_else(|| {
                            receiver.receive_unordered(&message.channel, &message.parts())
                        });
                        if let Some(ordered) = message.ordered {
                            let _ = ordered.done.send(id);
                        }
                    }
                }
                if failing {
                    info!("publishing to Redis again");
                    failing = false;
                }
            }
            Err(error) => {
                metrics.publish_dropped.fetch_add(received as u64, Relaxed);
                // Logged once per outage, not once per message.
                if !failing {
                    warn!(%error, dropped = received, "publishing to Redis failed; dropping until it is back");
                    failing = true;
                }
                for message in batch.drain(..) {
                    if message.ordered.is_none() {
                        receiver.receive_unsent(&message.channel, &message.payload);
                        continue;
                    }
                    let id = receiver.receive_unordered(&message.channel, &message.parts());
                    if let Some(ordered) = message.ordered {
                        let _ = ordered.done.send(id);
                    }
                }
            }
        }
    }
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redacted("redis://user:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
