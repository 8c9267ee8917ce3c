//! The session driver: one task per Engine.IO session, whatever carries it.
//!
//! It runs the heartbeat, decodes Engine.IO packets from the session's
//! transport and hands messages to the [`SessionHandler`], wakes the handler
//! at its deadlines, and carries out the upgrade from long-polling to
//! WebSocket. Outbound frames never pass through here: they are queued in
//! the session's [`Outbox`](super::Outbox) and leave through the WebSocket
//! writer or a long-polling `GET`.
//!
//! The transports a session may have at once ([`Link`]): a WebSocket; or
//! long-polling, possibly with a WebSocket being probed for an upgrade. The
//! upgrade ends with the polling link dropped (its registry entry with it)
//! and the probed WebSocket promoted, its socket attached to the same outbox:
//! nothing queued is lost, repeated or reordered by the switch.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use super::polling::{Inbound, Phase, PollingError, PollingSession, Registered};
use super::reader::{self, WsReader};
use super::{CloseReason, Engine, EngineSettings, Session, SessionHandler, writer};
use crate::metrics::Metrics;
use crate::protocol::Frame;
use crate::protocol::engineio::{self, Packet, PayloadPacket};

/// How long an attached WebSocket may take to complete the upgrade
/// (engine.io's `upgradeTimeout`); past it, the probe is dropped and the
/// session goes on polling.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writing the probe answer on a fresh socket may take.
const PROBE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a closed long-polling session waits for the `GET` that takes
/// its last frames (the DISCONNECT or error that explains the close).
const POLLING_LINGER: Duration = Duration::from_secs(2);

/// The most messages [`read_what_is_left`] handles: a goodbye is a few, and
/// the loop never yields, so a client that is somehow still sending cannot
/// hold the task.
const MAX_MESSAGES_LEFT: usize = 64;

/// The transports of one session.
pub(super) struct Link {
    /// The WebSocket the session runs on: from the start, or since the upgrade.
    websocket: Option<WsReader>,
    /// Long-polling: the inbox the HTTP requests feed and the shared state.
    polling: Option<PollingLink>,
    /// A WebSocket attached for an upgrade, not yet promoted. Boxed: most
    /// sessions never have one, and every session's task holds this field.
    probe: Option<Box<Probe>>,
    /// A session that started on long-polling stays in the registry until
    /// it ends, upgraded or not, so that a late request with its `sid` is
    /// told the session moved on rather than that it never existed.
    _registered: Option<Registered>,
}

pub(super) struct PollingLink {
    shared: Arc<PollingSession>,
    inbox: mpsc::Receiver<Inbound>,
    _counted: PollingCount,
}

impl PollingLink {
    pub(super) fn new(
        shared: Arc<PollingSession>,
        inbox: mpsc::Receiver<Inbound>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Metrics::add(&metrics.polling_open, 1);
        Self { shared, inbox, _counted: PollingCount(Arc::clone(metrics)) }
    }
}

/// The session's place in the polling-sessions gauge, given back however
/// polling ends: an upgrade, the session's end, a panic.
struct PollingCount(Arc<Metrics>);

impl Drop for PollingCount {
    fn drop(&mut self) {
        self.0.polling_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct Probe {
    reader: WsReader,
    write_half: OwnedWriteHalf,
    probed: bool,
    deadline: Instant,
}

impl Link {
    /// A session on a WebSocket from its start.
    pub(super) fn websocket(reader: WsReader) -> Self {
        Self { websocket: Some(reader), polling: None, probe: None, _registered: None }
    }

    /// A long-polling session, and its place in the registry.
    pub(super) fn polling(polling: PollingLink, registered: Registered) -> Self {
        Self { websocket: None, polling: Some(polling), probe: None, _registered: Some(registered) }
    }
}

/// What woke the driver.
enum Wake {
    OutboxClosed,
    Shutdown,
    WebSocket(Option<Result<Message, WsError>>),
    Probe(Option<Result<Message, WsError>>),
    Polling(Option<Inbound>),
    Work(Result<(), CloseReason>),
    Timer,
}

/// Drives the session until it closes and returns why; the link is left
/// for [`linger`]. The heartbeat counts from `opened`, when the open packet was
/// made. The caller closes the handler and the outbox (see `SessionGuard`),
/// so that a panic in here skips no cleanup.
#[allow(clippy::manual_async_fn, reason = "an async fn would hold its arguments twice")]
pub(super) fn run<'a>(
    session: &'a Session,
    link: &'a mut Link,
    handler: &'a mut dyn SessionHandler,
    engine: &'a Engine,
    opened: Instant,
) -> impl Future<Output = CloseReason> + 'a {
    // Made before the future, so that the future holds the heartbeat and
    // not `opened` besides.
    let mut heartbeat = Heartbeat::new(&engine.settings, opened);
    // An async block, not an `async fn`: see `engineio::drive`.
    async move {
        // No locals for `engine.settings` or `session.outbox`: each would be
        // one more pointer in every session's state.
        // One timer serves the heartbeat, the handler's deadline and the
        // upgrade's: every timer is state in this task, and there are as many
        // tasks as clients.
        let timer = sleep_until(next_wake(&heartbeat, handler.deadline(), link));
        tokio::pin!(timer);

        let reason = loop {
            let wake = tokio::select! {
                biased;
                () = session.outbox.closed() => Wake::OutboxClosed,
                () = engine.shutdown.cancelled() => Wake::Shutdown,
                wake = std::future::poll_fn(|cx| poll_sources(cx, link, timer.as_mut(), handler)) => wake,
            };
            let step = match wake {
                Wake::OutboxClosed => Err(match session.outbox.close_reason() {
                    // The transport failed: the client may have said goodbye first.
                    Some(CloseReason::TransportError) => {
                        read_what_is_left(link, session, handler, &mut heartbeat)
                    }
                    reason => reason.unwrap_or(CloseReason::ServerDisconnect),
                }),
                Wake::Shutdown => {
                    handler.on_shutdown();
                    Err(CloseReason::ServerShutdown)
                }
                Wake::WebSocket(message) => on_message(message, session, handler, &mut heartbeat),
                Wake::Polling(Some(Inbound::Payload(body, reply))) => {
                    let handled = on_payload(&body, session, handler, &mut heartbeat);
                    let _ = reply.send(post_answer(handled));
                    handled
                }
                Wake::Polling(Some(Inbound::Upgrade(stream, read_ahead))) => {
                    attach_probe(link, stream, read_ahead, &engine.settings);
                    Ok(())
                }
                Wake::Polling(None) => Err(CloseReason::TransportError),
                Wake::Work(done) => done,
                Wake::Probe(message) => {
                    // Boxed: only upgrading sessions take this path, and its
                    // state held inline would make every session's driver larger.
                    Box::pin(on_probe_message(message, link, session, handler, &mut heartbeat, engine)).await
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if link.probe.as_ref().is_some_and(|probe| probe.deadline <= now) {
                        abandon_probe(link, "upgrade timed out");
                    }
                    let beat = if now >= heartbeat.next { heartbeat.tick(session) } else { Ok(()) };
                    beat.and_then(|()| {
                        if handler.deadline().is_some_and(|at| at <= now) {
                            handler.on_deadline()
                        } else {
                            Ok(())
                        }
                    })
                }
            };
            if let Err(reason) = step {
                break reason;
            }
            let wake = next_wake(&heartbeat, handler.deadline(), link);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
        };
        // Stop taking frames before anything else can be queued.
        session.outbox.close(reason);
        reason
    }
}

/// After a session closed: gives the client time to take the frames that
/// explain the close — over a WebSocket it had probed, by the last `GET` of a
/// polling session, or reading what the WebSocket is sent (see
/// `reader::linger`).
pub(super) async fn linger(link: &mut Link, reason: CloseReason, session: &Session, engine: &Engine) {
    if let Some(probe) = link.probe.take() {
        // A client that got `3probe` has paused polling for this upgrade: let
        // it complete, and the last frames go over the WebSocket.
        if probe.probed && finish_upgrade_on_close(*probe, session, engine).await {
            return;
        }
    }
    if let Some(polling) = link.polling.take() {
        polling.shared.linger(reason, POLLING_LINGER).await;
    }
    if let Some(websocket) = link.websocket.take()
        && reason != CloseReason::TransportError
    {
        reader::linger(websocket).await;
    }
}

fn next_wake(heartbeat: &Heartbeat<'_>, deadline: Option<Instant>, link: &Link) -> Instant {
    let mut wake = heartbeat.next;
    if let Some(at) = deadline {
        wake = wake.min(at);
    }
    if let Some(probe) = &link.probe {
        wake = wake.min(probe.deadline);
    }
    wake
}

/// Polls, in this order, the session's WebSocket, its long-polling inbox, a
/// probed WebSocket, the timer and the handler's own work; the first ready
/// one is the wake. One poll function rather than a `select!` branch each:
/// a branch's future is state in every session's task while it waits, and
/// these need none beyond what the link, the timer and the handler hold.
///
/// Each wake takes a unit of tokio's cooperative budget, so the task hands
/// its worker back after at most 128 of them. A WebSocket read takes a unit
/// only when it reaches the socket, and one read can hold several messages:
/// a client whose messages piled up (each a broadcast to a room) kept its
/// worker for one long poll, starving every other task there — timers, the
/// pacer, the metrics endpoint — and hiding the worker's busy time from the
/// pacer until the poll ended. Taken here rather than at an `.await` in the
/// loop, which made every session's task 0.2 KiB larger.
fn poll_sources(
    cx: &mut Context<'_>,
    link: &mut Link,
    timer: Pin<&mut Sleep>,
    handler: &mut dyn SessionHandler,
) -> Poll<Wake> {
    let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
    let wake = if let Some(reader) = link.websocket.as_mut()
        && let Poll::Ready(message) = reader.poll_next_unpin(cx)
    {
        Wake::WebSocket(message)
    } else if let Some(polling) = link.polling.as_mut()
        && let Poll::Ready(inbound) = polling.inbox.poll_recv(cx)
    {
        Wake::Polling(inbound)
    } else if let Some(probe) = link.probe.as_mut()
        && let Poll::Ready(message) = probe.reader.poll_next_unpin(cx)
    {
        Wake::Probe(message)
    } else if timer.poll(cx).is_ready() {
        Wake::Timer
    } else {
        // Pending: dropping `budget` gives the unit back.
        Wake::Work(std::task::ready!(handler.poll_work(cx)))
    };
    budget.made_progress();
    Poll::Ready(wake)
}

/// After the transport failed (the outbox closed as a transport error: a
/// write failed, or a held `GET`'s connection went away): handles what the
/// client sent before that and the broker already holds — `POST` bodies
/// handed over, frames in the socket's receive buffer, which Linux keeps
/// readable after a reset. A client that sent a DISCONNECT
/// (or a close) and reset its connection while the broker was still writing to
/// it has left, not lost its connection: its session must not wait for it.
/// Never waits and reads nothing that is not there yet. Returns why the
/// session ends: what those packets say, else the transport error.
///
/// A plain function, only reached on this path: the session's future, which
/// every client holds, keeps no state for it.
fn read_what_is_left(
    link: &mut Link,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat,
) -> CloseReason {
    if let Some(polling) = link.polling.as_mut()
        && let Err(reason) = take_queued_posts(polling, session, handler, heartbeat)
    {
        return reason;
    }
    if let Some(reader) = link.websocket.as_mut() {
        for _ in 0..MAX_MESSAGES_LEFT {
            let Some(message) = reader::try_next(reader) else { break };
            if let Err(reason) = on_message(message, session, handler, heartbeat) {
                return reason;
            }
        }
    }
    CloseReason::TransportError
}

/// Takes no more `POST`s and handles the bodies already handed over, each
/// answered as usual. The first close they ask for, if any.
fn take_queued_posts(
    polling: &mut PollingLink,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat,
) -> Result<(), CloseReason> {
    polling.inbox.close();
    let mut outcome = Ok(());
    while let Ok(inbound) = polling.inbox.try_recv() {
        if let Inbound::Payload(body, reply) = inbound {
            let handled = on_payload(&body, session, handler, heartbeat);
            let _ = reply.send(post_answer(handled));
            outcome = outcome.and(handled);
        }
    }
    outcome
}

/// One WebSocket message of the session's own WebSocket.
fn on_message(
    message: Option<Result<Message, WsError>>,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat<'_>,
) -> Result<(), CloseReason> {
    let message = match message {
        None => return Err(CloseReason::TransportError),
        Some(Err(error)) => return Err(reader::close_reason_of(&error)),
        Some(Ok(message)) => message,
    };
    match message {
        Message::Text(text) => on_text(text.as_str(), session, handler, heartbeat),
        Message::Binary(data) => handler.on_binary(data),
        Message::Ping(data) => {
            let _ = session.outbox.try_push(&Frame::pong(&data));
            Ok(())
        }
        // tungstenite hands over a close with a code a peer may not send
        // (999, 1005, …) as 1002; answer that with 1002, not 1000.
        Message::Close(frame) => match frame {
            Some(frame) if !is_valid_close_code(frame.code.into()) || u16::from(frame.code) == 1002 => {
                Err(CloseReason::ProtocolError)
            }
            _ => Err(CloseReason::ClientClosed),
        },
        Message::Pong(_) | Message::Frame(_) => Ok(()),
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 7.4): the
/// defined codes other than those reserved for local use (1004–1006, 1015),
/// and the registered and private ranges 3000–4999.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// One `POST` body: every packet in it, in order.
fn on_payload(
    body: &Bytes,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat<'_>,
) -> Result<(), CloseReason> {
    let packets = engineio::decode_payload(body).map_err(|error| {
        debug!(sid = %session.sid, %error, "undecodable long-polling payload");
        CloseReason::from(&error)
    })?;
    for packet in packets {
        match packet {
            PayloadPacket::Text(text) => on_text(text, session, handler, heartbeat)?,
            PayloadPacket::Binary(data) => handler.on_binary(data)?,
        }
    }
    Ok(())
}

/// The answer to a `POST` whose packets were handled with `handled`: `ok`
/// unless the body broke the protocol. A close the packets asked for (the
/// client's `1`, a policy) is answered `ok`, as engine.io does; the next
/// `GET` tells the rest.
fn post_answer(handled: Result<(), CloseReason>) -> Result<(), PollingError> {
    match handled {
        Err(CloseReason::ProtocolError | CloseReason::InvalidData | CloseReason::MessageTooBig) => {
            Err(PollingError::BadRequest)
        }
        _ => Ok(()),
    }
}

/// One Engine.IO text packet, from either transport.
fn on_text(
    text: &str,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat<'_>,
) -> Result<(), CloseReason> {
    match engineio::decode(text) {
        Ok(Packet::Message(data)) => handler.on_text(data),
        Ok(Packet::Pong(_)) => {
            heartbeat.pong();
            Ok(())
        }
        Ok(Packet::Ping(data)) => {
            let _ = session.outbox.try_push(&Frame::text(&format!("{}{data}", engineio::PONG)));
            Ok(())
        }
        Ok(Packet::Close) => Err(CloseReason::ClientClosed),
        Ok(Packet::Noop) => Ok(()),
        Ok(Packet::Open | Packet::Upgrade) => Err(CloseReason::ProtocolError),
        Err(error) => {
            debug!(sid = %session.sid, %error, "undecodable Engine.IO packet");
            Err(CloseReason::from(&error))
        }
    }
}

/// Takes a WebSocket that asked to upgrade this long-polling session.
fn attach_probe(
    link: &mut Link,
    stream: tokio::net::TcpStream,
    read_ahead: Vec<u8>,
    settings: &EngineSettings,
) {
    if link.polling.is_none() || link.probe.is_some() {
        // The registry only hands over one claimed upgrade per polling session.
        return;
    }
    let (read_half, write_half) = stream.into_split();
    link.probe = Some(Box::new(Probe {
        reader: reader::open(read_half, read_ahead, settings),
        write_half,
        probed: false,
        deadline: Instant::now() + UPGRADE_TIMEOUT,
    }));
}

/// Waits (at most [`POLLING_LINGER`]) for the `5` of a probed upgrade on a
/// closed session; on it, writes what is left in the outbox and the close
/// frame over the WebSocket. Whether the upgrade was completed.
async fn finish_upgrade_on_close(probe: Probe, session: &Session, engine: &Engine) -> bool {
    let Probe { mut reader, write_half, .. } = probe;
    let completed = tokio::time::timeout(POLLING_LINGER, async {
        loop {
            match reader.next().await {
                Some(Ok(Message::Text(text))) => return text.as_str() == "5",
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                _ => return false,
            }
        }
    })
    .await;
    if completed != Ok(true) {
        return false;
    }
    // The outbox is closed: a writer starts, sends what is queued, then the close.
    writer::attach(write_half, &session.outbox, engine);
    reader::linger(reader).await;
    true
}

/// Gives up an upgrade: the WebSocket is dropped, polling goes on.
fn abandon_probe(link: &mut Link, why: &str) {
    if link.probe.take().is_some() {
        debug!(why, "upgrade abandoned, the session keeps polling");
    }
    if let Some(polling) = &link.polling {
        polling.shared.set_phase(Phase::Polling);
    }
}

/// One message on the WebSocket being probed: `2probe` is answered
/// `3probe` (and the held `GET` with a noop), `5` completes the upgrade;
/// anything else, or the socket's end, abandons it.
async fn on_probe_message(
    message: Option<Result<Message, WsError>>,
    link: &mut Link,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat<'_>,
    engine: &Engine,
) -> Result<(), CloseReason> {
    let Some(probe) = link.probe.as_mut() else { return Ok(()) };
    let text = match message {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(()),
        _ => {
            abandon_probe(link, "the upgrading WebSocket closed or sent something else");
            return Ok(());
        }
    };
    match engineio::decode(text.as_str()) {
        Ok(Packet::Ping(engineio::PROBE)) if !probe.probed => {
            let answer = Frame::text(engineio::PROBE_ANSWER);
            let written =
                tokio::time::timeout(PROBE_WRITE_TIMEOUT, probe.write_half.write_all(answer.as_bytes()))
                    .await;
            if matches!(written, Ok(Ok(()))) {
                probe.probed = true;
                if let Some(polling) = &link.polling {
                    polling.shared.set_phase(Phase::Probed);
                }
            } else {
                abandon_probe(link, "writing the probe answer failed");
            }
            Ok(())
        }
        Ok(Packet::Upgrade) if probe.probed => {
            complete_upgrade(link, session, handler, heartbeat, engine);
            Ok(())
        }
        _ => {
            abandon_probe(link, "unexpected packet during the upgrade");
            Ok(())
        }
    }
}

/// Switches the session to the probed WebSocket: the POST bodies already
/// queued are handled first, then polling stops (the registry forgets the
/// session, so later polling requests are refused) and the WebSocket's
/// writer starts draining the same outbox.
fn complete_upgrade(
    link: &mut Link,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat<'_>,
    engine: &Engine,
) {
    let Some(probe) = link.probe.take() else { return };
    if let Some(mut polling) = link.polling.take() {
        polling.shared.set_phase(Phase::Upgraded);
        // The session stays open whatever these say: a close they ask for is
        // seen through the outbox on the driver's next turn.
        if let Err(reason) = take_queued_posts(&mut polling, session, handler, heartbeat) {
            session.outbox.close(reason);
        }
    }
    let Probe { reader, write_half, .. } = *probe;
    writer::attach(write_half, &session.outbox, engine);
    link.websocket = Some(reader);
    Metrics::add(&engine.metrics.upgrades, 1);
    debug!(sid = %session.sid, "session upgraded to WebSocket");
}

/// Server-driven Engine.IO heartbeat: ping every interval, and give up on a
/// client that has not answered within the timeout.
///
/// Holds the settings by reference, not their two durations: it is part of
/// every session's state, which this keeps within a smaller allocation.
struct Heartbeat<'a> {
    settings: &'a EngineSettings,
    /// When the timer fires next: the next ping, or the end of the wait.
    next: Instant,
    /// When the unanswered ping was sent, if one is outstanding.
    awaiting_since: Option<Instant>,
}

impl<'a> Heartbeat<'a> {
    fn new(settings: &'a EngineSettings, opened: Instant) -> Self {
        Self { settings, next: opened + settings.ping_interval, awaiting_since: None }
    }

    fn tick(&mut self, session: &Session) -> Result<(), CloseReason> {
        if self.awaiting_since.is_some() {
            return Err(CloseReason::PingTimeout);
        }
        let now = Instant::now();
        let _ = session.outbox.try_push(&ping_frame());
        self.awaiting_since = Some(now);
        self.next = now + self.settings.ping_timeout;
        Ok(())
    }

    fn pong(&mut self) {
        if let Some(sent) = self.awaiting_since.take() {
            self.next = sent + self.settings.ping_interval;
        }
    }
}

fn ping_frame() -> Frame {
    // Every session pings with the same two bytes; build them once.
    static PING: std::sync::OnceLock<Frame> = std::sync::OnceLock::new();
    PING.get_or_init(|| Frame::text(engineio::PING)).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::{Application, Handshake, Outbox, Registry, WritePacer};
    use crate::ids::Sid;

    /// Records the text packets it is handed, and counts them where another
    /// task can read the count.
    #[derive(Default)]
    struct Recorder {
        texts: Vec<String>,
        handled: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl SessionHandler for Recorder {
        fn on_text(&mut self, text: &str) -> Result<(), CloseReason> {
            self.texts.push(text.to_owned());
            self.handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        fn on_binary(&mut self, _: Bytes) -> Result<(), CloseReason> {
            Ok(())
        }
        fn deadline(&self) -> Option<Instant> {
            None
        }
        fn on_deadline(&mut self) -> Result<(), CloseReason> {
            Ok(())
        }
        fn on_shutdown(&mut self) {}
        fn on_close(&mut self, _: CloseReason) {}
    }

    struct Recorders;

    impl Application for Recorders {
        fn open(self: Arc<Self>, _: &Session) -> Box<dyn SessionHandler> {
            Box::new(Recorder::default())
        }
    }

    fn engine() -> Engine {
        Engine {
            settings: Arc::new(EngineSettings {
                ping_interval: Duration::from_secs(25),
                ping_timeout: Duration::from_secs(20),
                max_payload: 1 << 20,
                outbox_bytes: 1 << 20,
                sid_prefix: None,
            }),
            app: Arc::new(Recorders),
            metrics: Arc::new(Metrics::default()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
            pacer: Arc::new(WritePacer::new(Duration::ZERO)),
            sessions: Arc::new(Registry::default()),
        }
    }

    /// A long-polling session with a `POST` of `body` handed to its driver
    /// but not handled yet, whose outbox then closes for `reason`: what the
    /// driver hands its handler, why it ends, and what the `POST` is answered.
    async fn post_then_close(body: &'static [u8], reason: CloseReason) -> (Vec<String>, CloseReason, bool) {
        let engine = engine();
        let session = Session {
            sid: Sid::random(),
            handshake: Arc::new(Handshake::default()),
            outbox: Outbox::new(1 << 20),
        };
        let (shared, inbox) = PollingSession::new(session.outbox.clone(), Duration::from_secs(5));
        let registered = engine.sessions.insert(session.sid, Arc::clone(&shared));
        let mut link =
            Link::polling(PollingLink::new(Arc::clone(&shared), inbox, &engine.metrics), registered);
        let post = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.post(Bytes::from_static(body)).await }
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while link.polling.as_ref().is_some_and(|polling| polling.inbox.is_empty()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the POST reaches the driver");
        session.outbox.close(reason);
        let mut handler = Recorder::default();
        let ended = run(&session, &mut link, &mut handler, &engine, Instant::now()).await;
        drop(link);
        let answered =
            tokio::time::timeout(Duration::from_secs(5), post).await.expect("the POST is answered");
        (handler.texts, ended, answered.expect("the POST task ends") == Ok(()))
    }

    #[tokio::test]
    async fn a_post_handed_over_before_the_transport_failed_is_handled_first() {
        let (texts, reason, answered_ok) = post_then_close(b"41/chat,", CloseReason::TransportError).await;
        assert_eq!(texts, ["1/chat,"], "the DISCONNECT reaches the handler");
        assert_eq!(reason, CloseReason::TransportError);
        assert!(answered_ok);
        let (texts, reason, _) = post_then_close(b"41/chat,\x1e1", CloseReason::TransportError).await;
        assert_eq!(texts, ["1/chat,"]);
        assert_eq!(reason, CloseReason::ClientClosed, "the Engine.IO close after it");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pile_of_client_messages_does_not_hold_the_worker() {
        use tokio::io::AsyncWriteExt as _;
        const MESSAGES: usize = 2000;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client =
            tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        // Masked client frames carrying the Engine.IO message `4x`, all sent
        // before the session runs: one read takes dozens of them.
        let frame = [0x81, 0x82, 0, 0, 0, 0, b'4', b'x'];
        let pile: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * MESSAGES).collect();
        client.write_all(&pile).await.expect("send the pile");
        client.shutdown().await.expect("then close");

        let engine = engine();
        let session = Session {
            sid: Sid::random(),
            handshake: Arc::new(Handshake::default()),
            outbox: Outbox::new(1 << 20),
        };
        let (read_half, _write_half) = server.into_split();
        let mut link = Link::websocket(reader::open(read_half, Vec::new(), &engine.settings));
        let mut handler = Recorder::default();
        let handled = Arc::clone(&handler.handled);
        // Ready to run from the start; on this one thread it runs only when
        // the session's task hands the thread back.
        let witness = tokio::spawn({
            let handled = Arc::clone(&handled);
            async move { handled.load(std::sync::atomic::Ordering::Relaxed) }
        });
        let ended = run(&session, &mut link, &mut handler, &engine, Instant::now()).await;
        assert_eq!(ended, CloseReason::TransportError, "the client went away after its pile");
        assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), MESSAGES, "every message handled");
        let seen = witness.await.expect("the other task ran");
        assert!(seen < MESSAGES, "the other task ran only after all {MESSAGES} messages");
    }

    #[tokio::test]
    async fn other_closes_handle_nothing_more() {
        for reason in [CloseReason::SlowConsumer, CloseReason::ServerDisconnect, CloseReason::PingTimeout] {
            let (texts, ended, answered_ok) = post_then_close(b"41/chat,", reason).await;
            assert_eq!((texts, ended, answered_ok), (Vec::<String>::new(), reason, false));
        }
    }
}
