//! Engine.IO v4 sessions over WebSocket and HTTP long-polling: the session
//! driver (heartbeat, packets, deadlines, the upgrade), the bounded
//! [`Outbox`], the WebSocket writer that drains it, and the registry of
//! long-polling sessions.
//!
//! This layer knows nothing of Socket.IO. It hands the data of every
//! `message` packet to a [`SessionHandler`] made by the [`Application`] (the
//! Socket.IO layer), and closes the session when the handler, the heartbeat,
//! the outbox or the server says so. Which transport carries a session is
//! invisible above: the handler sees the same calls either way, and emits by
//! queueing the same frames.
//!
//! Per session there is one driver task ([`driver`]). A WebSocket session's
//! write half is held by its outbox: a push writes it directly when it can,
//! and a writer task, started only while something is left to write, writes
//! the rest of the pre-built frames with `writev` and then ends (while the
//! broker is busy it waits for the next push instead); a
//! long-polling session's frames leave in the answers to its `GET`s
//! ([`polling`]).

mod driver;
mod outbox;
mod pacer;
pub mod polling;
mod reader;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

pub use outbox::{Drained, OffsetTrail, Outbox, PushError};
pub use pacer::WritePacer;
pub use polling::{PollingError, PollingSession, Registry};
pub use writer::write_batch_blocking;

use crate::ids::Sid;
use crate::metrics::Metrics;
use crate::protocol::engineio::{self, OpenParams};
use crate::protocol::{DecodeError, Frame};

/// Why a session ended. Each reason has a documented WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent Engine.IO `1` or a WebSocket close. Code 1000.
    ClientClosed,
    /// The socket failed or reached end of file. No close frame.
    TransportError,
    /// The client did not answer a ping within pingTimeout. Code 1000.
    PingTimeout,
    /// The client joined no namespace in time. Code 1000.
    ConnectTimeout,
    /// The application ended the session. Code 1000.
    ServerDisconnect,
    /// The server is shutting down. Code 1001.
    ServerShutdown,
    /// A frame or packet did not parse. Code 1002.
    ProtocolError,
    /// A text frame was not UTF-8. Code 1007.
    InvalidData,
    /// The client broke a policy (rate far over the limit, token expired or
    /// revoked). Code 1008.
    PolicyViolation,
    /// The outbox overflowed: the client does not read fast enough. Code 1008.
    SlowConsumer,
    /// A message was larger than maxPayload. Code 1009.
    MessageTooBig,
    /// The broker failed while serving this session (a panic on its path,
    /// caught and contained to it). Code 1011.
    InternalError,
}

impl CloseReason {
    /// The WebSocket close code sent for this reason, if a frame is sent.
    #[must_use]
    pub const fn close_code(self) -> Option<u16> {
        match self {
            Self::TransportError => None,
            Self::ClientClosed | Self::PingTimeout | Self::ConnectTimeout | Self::ServerDisconnect => {
                Some(1000)
            }
            Self::ServerShutdown => Some(1001),
            Self::ProtocolError => Some(1002),
            Self::InvalidData => Some(1007),
            Self::PolicyViolation | Self::SlowConsumer => Some(1008),
            Self::MessageTooBig => Some(1009),
            Self::InternalError => Some(1011),
        }
    }

    /// A short text for the close frame and the logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client closed",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ConnectTimeout => "connect timeout",
            Self::ServerDisconnect => "server disconnect",
            Self::ServerShutdown => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::InvalidData => "invalid data",
            Self::PolicyViolation => "policy violation",
            Self::SlowConsumer => "slow consumer",
            Self::MessageTooBig => "message too big",
            Self::InternalError => "internal error",
        }
    }
}

/// The one place a packet that does not decode meets its consequence: the
/// session is closed as a protocol error (WebSocket close 1002; a
/// long-polling `POST` is answered 400). The error's detail is for the log
/// of the layer that decoded it.
impl From<&DecodeError> for CloseReason {
    fn from(error: &DecodeError) -> Self {
        match error {
            DecodeError::Empty
            | DecodeError::UnknownPacketType(_)
            | DecodeError::BadAttachments
            | DecodeError::BadNamespace
            | DecodeError::BadAckId
            | DecodeError::BadPayload(_)
            | DecodeError::NotUtf8
            | DecodeError::BadBase64 => Self::ProtocolError,
        }
    }
}

/// What the HTTP upgrade request said, kept for the layers above (for the
/// session's life: a later CONNECT, and another node's `fetchSockets`, read it).
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The decoded query string pairs.
    pub query: Query,
    /// The `Authorization` header, if any.
    pub authorization: Option<Box<str>>,
    /// The `Origin` header, if any.
    pub origin: Option<Box<str>>,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
}

impl Handshake {
    /// The first value of query parameter `name`.
    #[must_use]
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name)
    }

    /// The token of an `Authorization: Bearer <token>` header.
    #[must_use]
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.authorization.as_deref()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
    }
}

/// A decoded query string: its keys and values in order, in two allocations
/// however many pairs there are. Every session keeps its handshake's query,
/// and a `Vec` of `String` pairs cost five allocations (240 bytes) for the
/// usual `EIO=4&transport=websocket` where this costs two (40 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Every key and value, decoded, back to back.
    text: Box<str>,
    /// Where each key and each value ends in `text`: pair `i` is
    /// `ends[2i]` (its key) and `ends[2i + 1]` (its value).
    ends: Box<[u32]>,
}

impl Query {
    /// A query of `pairs`, in their order; `None` if their text is longer
    /// than a `u32` can index (a request head is bounded far below that).
    #[must_use]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (key, value) in pairs {
            for part in [key, value] {
                text.push_str(part);
                ends.push(u32::try_from(text.len()).ok()?);
            }
        }
        Some(Self { text: text.into_boxed_str(), ends: ends.into_boxed_slice() })
    }

    /// The first value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(key, _)| *key == name).map(|(_, value)| value)
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        let mut parts = self.ends.iter().map(move |&end| {
            let end = usize::try_from(end).unwrap_or(usize::MAX);
            let part = self.text.get(start..end).unwrap_or("");
            start = end;
            part
        });
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }
}

/// One Engine.IO session as the layer above sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The Engine.IO session id.
    pub sid: Sid,
    /// The upgrade request.
    pub handshake: Arc<Handshake>,
    /// The session's outbound queue.
    pub outbox: Outbox,
}

/// The layer above Engine.IO: makes a handler for each new session.
pub trait Application: Send + Sync + 'static {
    /// Called once per session, after the open packet is queued. Takes the
    /// application by `Arc`, so that a handler can share it instead of
    /// copying what it needs: the handler lives as long as its session.
    fn open(self: Arc<Self>, session: &Session) -> Box<dyn SessionHandler>;
}

/// Per-session callbacks, all run on the session's reader task, one at a time.
pub trait SessionHandler: Send {
    /// The data of a `message` text packet (after the `4`).
    ///
    /// # Errors
    /// A [`CloseReason`] closes the session.
    fn on_text(&mut self, text: &str) -> Result<(), CloseReason>;

    /// A binary message.
    ///
    /// # Errors
    /// A [`CloseReason`] closes the session.
    fn on_binary(&mut self, data: Bytes) -> Result<(), CloseReason>;

    /// Work of the handler's own that waits on something else (a lookup in
    /// Redis): polled by the session task beside its transport, so the
    /// session keeps being served meanwhile. `Pending`, the default, when
    /// there is none.
    ///
    /// # Errors
    /// A [`CloseReason`] closes the session.
    fn poll_work(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), CloseReason>> {
        let _ = cx;
        std::task::Poll::Pending
    }

    /// The next instant [`on_deadline`](Self::on_deadline) wants to run.
    fn deadline(&self) -> Option<Instant>;

    /// Runs at [`deadline`](Self::deadline).
    ///
    /// # Errors
    /// A [`CloseReason`] closes the session.
    fn on_deadline(&mut self) -> Result<(), CloseReason>;

    /// The server is shutting down: queue any goodbye frames now.
    fn on_shutdown(&mut self);

    /// The session is over; the outbox takes no more frames after this.
    fn on_close(&mut self, reason: CloseReason);
}

/// Engine.IO settings for every session.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// Time the client has to answer a ping.
    pub ping_timeout: Duration,
    /// Largest inbound message, in bytes.
    pub max_payload: usize,
    /// Outbox byte budget per session.
    pub outbox_bytes: usize,
    /// The first character of every session id, naming this broker to a
    /// proxy in front of several (see the README, "Many brokers as one").
    pub sid_prefix: Option<char>,
}

/// What a session task needs from the server.
#[derive(Clone)]
pub struct Engine {
    /// Session settings.
    pub settings: Arc<EngineSettings>,
    /// The layer above.
    pub app: Arc<dyn Application>,
    /// The server's counters.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Spaces each connection's writes while the broker is busy.
    pub pacer: Arc<WritePacer>,
    /// The long-polling sessions, by `sid`.
    pub sessions: Arc<Registry>,
}

/// Starts one WebSocket session on an upgraded connection: attaches the
/// socket to the session's outbox, sends the open packet, and returns the
/// future that drives the session until it closes.
///
/// `read_ahead` holds bytes the HTTP layer read past the upgrade request.
/// `response_head` is the `101` head: the open packet is appended to it, so
/// the client gets both in one write.
///
/// The setup is done here, not in the returned future, so that the future
/// holds only what the session needs while it runs: it is part of every
/// session's task.
pub fn serve(
    engine: Arc<Engine>,
    stream: TcpStream,
    read_ahead: Vec<u8>,
    handshake: Handshake,
    response_head: Vec<u8>,
) -> impl Future<Output = ()> + Send + use<> {
    let session = new_session(&engine, handshake);
    let opened = Instant::now();
    let (read_half, write_half) = stream.into_split();
    writer::attach(write_half, &session.outbox, &engine);
    let mut head = response_head;
    head.extend_from_slice(open_frame(&session, &engine.settings, false).as_bytes());
    // A fresh outbox is empty and open: this push cannot fail. It mostly
    // writes the socket at once; what it cannot write starts a writer.
    let _ = session.outbox.try_push_bytes(&Bytes::from(head));
    let handler = Arc::clone(&engine.app).open(&session);

    let mut guard = SessionGuard::new(session, handler, engine, opened);
    let mut link = driver::Link::websocket(reader::open(read_half, read_ahead, &guard.engine.settings));

    // Boxed and returned as it is, not awaited in another async block: the
    // caller's task then holds only the pointer, and the session's state is
    // one allocation that holds each of its values once. An async block, not
    // an `async fn`: its captures are its state, where an async fn's
    // arguments are held twice (as passed, and moved into its body).
    Box::pin(async move { drive(&mut guard, &mut link).await })
}

/// Runs a session's driver to its end, then cleans up. A panic anywhere on
/// the session's path (decoders, handlers) is caught here: it costs this
/// session only, which is then cleaned up like any other.
#[allow(clippy::manual_async_fn, reason = "an async fn would hold its arguments twice")]
fn drive<'a>(guard: &'a mut SessionGuard, link: &'a mut driver::Link) -> impl Future<Output = ()> + 'a {
    // An async block, not an `async fn`: an async fn's future holds each
    // argument twice (as passed, and moved into its body), for its whole life.
    async move {
        // Inline, not boxed: this future is already part of the session's one
        // allocation, and a box of its own would cost a second one per session.
        // Made in place, from the guard's fields and no locals: a future bound
        // to a name first and then moved into the awaited one would be held
        // twice in this one's state, and each local one more slot.
        let outcome = AssertUnwindSafe(driver::run(
            &guard.session,
            link,
            guard.handler.as_mut(),
            &guard.engine,
            guard.opened,
        ))
        .catch_unwind()
        .await;
        let (reason, lingers) = match outcome {
            Ok(reason) => (reason, true),
            Err(panic) => {
                Metrics::add(&guard.engine.metrics.session_panics, 1);
                error!(
                    sid = %guard.session.sid,
                    remote = ?guard.session.handshake.remote,
                    panic = panic_message(panic.as_ref()),
                    "session panicked; closing it"
                );
                (CloseReason::InternalError, false)
            }
        };
        guard.close(reason);
        if reason == CloseReason::SlowConsumer {
            Metrics::add(&guard.engine.metrics.slow_consumers, 1);
            warn!(
                sid = %guard.session.sid,
                remote = ?guard.session.handshake.remote,
                limit_bytes = guard.engine.settings.outbox_bytes,
                "slow consumer cut off: its outbox went over the byte budget"
            );
        }
        debug!(sid = %guard.session.sid, reason = reason.as_str(), "session closed");
        if lingers {
            // Boxed: held inline, the linger's state (a probed WebSocket's
            // writer, timers) would be part of every session's task from its
            // start, though only closing sessions need it. Measured with 10k
            // idle clients: RSS per connection 8.2 KiB inline, 6.2 KiB boxed.
            Box::pin(driver::linger(link, reason, &guard.session, &guard.engine)).await;
        }
    }
}

/// Opens a long-polling session: registers it, spawns its driver, and
/// returns the open packet that answers the handshake `GET`. `hold` lives as
/// long as the session (the HTTP side's admission permit: a polling session
/// between two requests holds no connection, yet counts as one).
#[must_use]
pub fn open_polling(engine: &Arc<Engine>, handshake: Handshake, hold: impl Send + 'static) -> String {
    let session = new_session(engine, handshake);
    let settings = &engine.settings;
    // A GET is held at most until the next ping is due; the heartbeat queues
    // that ping, and this bound is only the backstop.
    let max_wait = settings.ping_interval + settings.ping_timeout;
    let (shared, inbox) = PollingSession::new(session.outbox.clone(), max_wait);
    let registered = engine.sessions.insert(session.sid, Arc::clone(&shared));
    let mut link =
        driver::Link::polling(driver::PollingLink::new(shared, inbox, &engine.metrics), registered);
    let opened = Instant::now();
    let open = engineio::encode_open(&OpenParams {
        sid: &session.sid.to_string(),
        ping_interval_ms: millis(settings.ping_interval),
        ping_timeout_ms: millis(settings.ping_timeout),
        max_payload: settings.max_payload,
        upgradable: true,
    });
    let handler = Arc::clone(&engine.app).open(&session);
    let mut guard = SessionGuard::new(session, handler, Arc::clone(engine), opened);
    engine.tracker.spawn(async move {
        drive(&mut guard, &mut link).await;
        drop(hold);
    });
    open
}

/// What a WebSocket request naming a session's `sid` gets.
#[derive(Debug)]
pub enum UpgradeClaim {
    /// The session is polling and now upgrading: answer `101`, then hand the
    /// connection over with [`hand_over_upgrade`].
    Claimed(Arc<PollingSession>),
    /// The session exists but is upgrading or upgraded already: as engine.io
    /// does, the WebSocket is accepted and closed at once.
    Taken,
    /// No session has this id: refuse the request.
    Unknown,
}

/// Claims the session `sid` for a WebSocket upgrade.
#[must_use]
pub fn claim_upgrade(engine: &Engine, sid: &str) -> UpgradeClaim {
    match Sid::parse(sid).and_then(|sid| engine.sessions.get(sid)) {
        None => UpgradeClaim::Unknown,
        Some(session) if session.claim_upgrade() => UpgradeClaim::Claimed(session),
        Some(_) => UpgradeClaim::Taken,
    }
}

/// Hands a claimed, `101`-answered WebSocket connection to its session.
pub async fn hand_over_upgrade(session: &PollingSession, stream: TcpStream, read_ahead: Vec<u8>) {
    session.upgrade(stream, read_ahead).await;
}

/// Gives a claimed upgrade back when its connection could not be answered:
/// the session goes on polling.
pub fn hand_over_upgrade_failed(session: &PollingSession) {
    session.set_phase(polling::Phase::Polling);
}

/// The long-polling session `sid`, if there is one.
#[must_use]
pub fn polling_session(engine: &Engine, sid: &str) -> Option<Arc<PollingSession>> {
    Sid::parse(sid).and_then(|sid| engine.sessions.get(sid))
}

fn new_session(engine: &Engine, handshake: Handshake) -> Session {
    let session = Session {
        sid: engine.settings.sid_prefix.and_then(Sid::random_with_prefix).unwrap_or_else(Sid::random),
        handshake: Arc::new(handshake),
        outbox: Outbox::new(engine.settings.outbox_bytes),
    };
    Metrics::add(&engine.metrics.connections_total, 1);
    Metrics::add(&engine.metrics.connections_open, 1);
    debug!(sid = %session.sid, remote = ?session.handshake.remote, "session opened");
    session
}

fn open_frame(session: &Session, settings: &EngineSettings, upgradable: bool) -> Frame {
    Frame::text(&engineio::encode_open(&OpenParams {
        sid: &session.sid.to_string(),
        ping_interval_ms: millis(settings.ping_interval),
        ping_timeout_ms: millis(settings.ping_timeout),
        max_payload: settings.max_payload,
        upgradable,
    }))
}

/// Owns what a session must give back however it ends: its handler (whose
/// `on_close` takes its sockets out of their rooms), its outbox (closing it
/// ends the writer) and its place in the open-connections count. Dropped
/// without [`close`](Self::close) — the task aborted, or a panic during the
/// cleanup itself — it still closes, as a transport error.
struct SessionGuard {
    session: Session,
    handler: Box<dyn SessionHandler>,
    /// The session's one handle on the engine: the futures that drive the
    /// session borrow it from here rather than hold a copy of their own.
    engine: Arc<Engine>,
    /// When the open packet was made: the heartbeat counts from it. Kept
    /// here, once, rather than passed down to the driver through every
    /// future on the way, each of which would hold a copy.
    opened: Instant,
    closed: bool,
}

impl SessionGuard {
    fn new(session: Session, handler: Box<dyn SessionHandler>, engine: Arc<Engine>, opened: Instant) -> Self {
        Self { session, handler, engine, opened, closed: false }
    }

    fn close(&mut self, reason: CloseReason) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        // Close the outbox first: whatever on_close does, the writer ends.
        self.session.outbox.close(reason);
        let metrics = &self.engine.metrics;
        metrics.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if reason == CloseReason::MessageTooBig {
            metrics.refuse(crate::metrics::Limit::Payload);
        }
        let handler = &mut self.handler;
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_close(reason))) {
            Metrics::add(&metrics.session_panics, 1);
            error!(sid = %self.session.sid, panic = panic_message(panic.as_ref()), "session cleanup panicked");
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.close(CloseReason::TransportError);
    }
}

/// The text of a caught panic, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
