//! The Engine.IO long-polling transport: the state a session shares with
//! the HTTP requests that carry it, and the registry that finds a session by
//! its `sid`.
//!
//! A long-polling session has the same driver task, outbox and handler as a
//! WebSocket one (see [`super::driver`]); only the carriage differs. A held
//! `GET` drains the outbox the way a WebSocket writer would, and answers with
//! the payloads of the queued frames (the bytes a broadcast encoded once)
//! joined by `\x1e`. A `POST` hands its body to the driver and is answered
//! once the driver has handled every packet in it.
//!
//! Invariants: at most one `GET` and one `POST` per session at a time (a
//! second concurrent `GET` closes the session, as engine.io does); once the
//! session has upgraded to WebSocket, or is probing an upgrade, no `GET`
//! drains the outbox any more, so every frame goes out exactly once and in
//! order on one transport or the other.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{CloseReason, Drained, Outbox};
use crate::ids::Sid;
use crate::protocol::engineio;
use crate::protocol::frame::{FrameKind, split_frame};

/// Why a long-polling request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollingError {
    /// No open session has this id (or it upgraded to WebSocket).
    #[error("session id unknown")]
    UnknownSession,
    /// The request broke the protocol (bad body, overlapping requests); the
    /// session is closed.
    #[error("bad request")]
    BadRequest,
}

/// What the HTTP side hands to a session's driver.
pub(super) enum Inbound {
    /// A `POST` body; the driver answers once it has handled every packet.
    Payload(Bytes, oneshot::Sender<Result<(), PollingError>>),
    /// A WebSocket connection carrying this session's `sid`, already
    /// answered `101`: the upgrade probe starts.
    Upgrade(TcpStream, Vec<u8>),
}

/// Where a long-polling session stands with the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Long-polling only.
    Polling,
    /// A WebSocket is attached and may probe; polling goes on meanwhile.
    Upgrading,
    /// The probe was answered: a `GET` is answered with a noop at once and
    /// drains nothing, so the frames queued wait for the WebSocket.
    Probed,
    /// The session runs on WebSocket; polling requests are refused.
    Upgraded,
}

#[derive(Debug)]
struct PollState {
    phase: Phase,
    /// A `GET` is being held.
    polling: bool,
    /// A `POST` is being handled.
    posting: bool,
    /// How far the client has been told of a close.
    goodbye: Goodbye,
}

/// The `GET`s that end a closed session: the frames still queued, then the
/// close packet in an answer of its own. A client handles the close packet
/// of a payload at once but the Socket.IO packets before it a tick later,
/// and drops those when the close comes first; engine.io answers them in
/// separate `GET`s too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goodbye {
    /// Nothing of the close was taken yet.
    Owed,
    /// The last frames were taken; the close packet is still owed.
    FramesTaken,
    /// The close was told, or there was nothing to tell.
    Done,
}

/// The part of a long-polling session that HTTP requests reach.
#[derive(Debug)]
pub struct PollingSession {
    outbox: Outbox,
    inbox: mpsc::Sender<Inbound>,
    state: Mutex<PollState>,
    /// Wakes a held `GET` (and a lingering driver) when the phase changes or
    /// the final frames are taken.
    changed: Notify,
    /// The longest a `GET` is held: past it, it is answered with a noop.
    max_wait: Duration,
}

/// How long a `GET` that arrives while an upgrade is probed waits for the
/// upgrade to complete or fail.
const PROBED_GET_WAIT: Duration = Duration::from_millis(100);

/// A `GET` answered with nothing to say.
const NOOP: Bytes = Bytes::from_static(engineio::NOOP.as_bytes());
/// A `GET` that tells the client the session is over.
const CLOSE: Bytes = Bytes::from_static(engineio::CLOSE.as_bytes());

impl PollingSession {
    pub(super) fn new(outbox: Outbox, max_wait: Duration) -> (Arc<Self>, mpsc::Receiver<Inbound>) {
        // One POST at a time, and an upgrade: two slots never make a sender wait long.
        let (inbox, receiver) = mpsc::channel(2);
        let state =
            PollState { phase: Phase::Polling, polling: false, posting: false, goodbye: Goodbye::Owed };
        let session =
            Arc::new(Self { outbox, inbox, state: Mutex::new(state), changed: Notify::new(), max_wait });
        (session, receiver)
    }

    /// Answers a `GET`: waits until frames are queued (at most the ping
    /// interval plus timeout; the heartbeat queues a ping before that), then
    /// returns their payloads as one long-polling body.
    ///
    /// # Errors
    /// [`PollingError::UnknownSession`] once the session is over or upgraded;
    /// [`PollingError::BadRequest`] for a second concurrent `GET`, which
    /// closes the session.
    pub async fn poll(&self) -> Result<Bytes, PollingError> {
        if self.state.lock().phase == Phase::Probed {
            // A client that got `3probe` has stopped polling; a GET now comes
            // from elsewhere, or crossed the `5` that is on its way. Give the
            // upgrade a moment to complete, so the answer says where the
            // session is.
            let _ = tokio::time::timeout(PROBED_GET_WAIT, self.phase_change(Phase::Probed)).await;
        }
        {
            let mut state = self.state.lock();
            match state.phase {
                Phase::Upgraded => return Err(PollingError::UnknownSession),
                Phase::Probed => return Ok(NOOP),
                Phase::Polling | Phase::Upgrading => {}
            }
            if self.outbox.is_closed() {
                return self.final_payload(&mut state).ok_or(PollingError::UnknownSession);
            }
            if state.polling {
                drop(state);
                self.outbox.close(CloseReason::ProtocolError);
                return Err(PollingError::BadRequest);
            }
            state.polling = true;
        }
        let mut held = Held { session: self, answered: false };
        let answer = self.hold_get().await;
        held.answered = true;
        answer
    }

    /// The wait of a held `GET`, until there is something to answer.
    async fn hold_get(&self) -> Result<Bytes, PollingError> {
        let timeout = tokio::time::sleep(self.max_wait);
        tokio::pin!(timeout);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state.lock();
                match state.phase {
                    Phase::Upgraded | Phase::Probed => return Ok(NOOP),
                    Phase::Polling | Phase::Upgrading => {}
                }
                if self.outbox.is_closed() {
                    // A held GET always gets an answer: the final frames, or
                    // a close (a noop when the client closed).
                    return Ok(self.final_payload(&mut state).unwrap_or(CLOSE));
                }
                let mut batch = VecDeque::new();
                self.outbox.drain(&mut batch);
                if !batch.is_empty() {
                    return Ok(encode(&batch, None));
                }
            }
            tokio::select! {
                () = self.outbox.ready() => {}
                () = self.outbox.closed() => {}
                () = changed => {}
                () = &mut timeout => return Ok(NOOP),
            }
        }
    }

    /// The body for a `GET` after the outbox closed (see [`Goodbye`]): what
    /// was queued when the server ended the session and has things to say (a
    /// DISCONNECT, an error), then a close packet; a noop when the client
    /// closed it. `None` when there is nothing (more) to tell.
    fn final_payload(&self, state: &mut PollState) -> Option<Bytes> {
        let mut batch = VecDeque::new();
        let Drained::Closing(reason) = self.outbox.drain(&mut batch) else {
            return None;
        };
        let body = match (state.goodbye, reason) {
            (Goodbye::Done, _) => None,
            (Goodbye::Owed, CloseReason::ClientClosed | CloseReason::TransportError) => Some(NOOP),
            (Goodbye::Owed, reason) if says_goodbye(reason) && !batch.is_empty() => {
                state.goodbye = Goodbye::FramesTaken;
                self.changed.notify_waiters();
                return Some(encode(&batch, None));
            }
            (Goodbye::FramesTaken, _) => Some(CLOSE),
            (Goodbye::Owed, reason) if says_goodbye(reason) || state.polling => Some(CLOSE),
            (Goodbye::Owed, _) => None,
        };
        state.goodbye = Goodbye::Done;
        self.changed.notify_waiters();
        body
    }

    /// Hands a `POST` body to the driver and waits until it is handled.
    ///
    /// # Errors
    /// [`PollingError::UnknownSession`] once the session is over or upgraded;
    /// [`PollingError::BadRequest`] for a body that does not decode (the
    /// session is closed) or a second concurrent `POST`.
    pub async fn post(&self, body: Bytes) -> Result<(), PollingError> {
        {
            let mut state = self.state.lock();
            if state.phase == Phase::Upgraded {
                return Err(PollingError::UnknownSession);
            }
            if self.outbox.is_closed() {
                // While the close is being told, a POST that crossed it is
                // taken and dropped: refusing it would fail the client's
                // transport before it reads why the session ended.
                let telling =
                    state.goodbye != Goodbye::Done && self.outbox.close_reason().is_some_and(says_goodbye);
                return if telling { Ok(()) } else { Err(PollingError::UnknownSession) };
            }
            if state.posting {
                drop(state);
                self.outbox.close(CloseReason::ProtocolError);
                return Err(PollingError::BadRequest);
            }
            state.posting = true;
        }
        let _posting = Posting { session: self };
        let (reply, handled) = oneshot::channel();
        self.inbox.send(Inbound::Payload(body, reply)).await.map_err(|_| PollingError::UnknownSession)?;
        handled.await.unwrap_or(Err(PollingError::UnknownSession))
    }

    /// Resolves once the phase is no longer `from`.
    async fn phase_change(&self, from: Phase) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state.lock().phase != from {
                return;
            }
            changed.await;
        }
    }

    /// Closes the session for `reason` (an oversized body, say).
    pub fn close(&self, reason: CloseReason) {
        self.outbox.close(reason);
    }

    /// Claims the session for a WebSocket upgrade: true when it was polling
    /// with no upgrade under way, and the caller must now hand the socket over
    /// with [`upgrade`](Self::upgrade).
    pub(super) fn claim_upgrade(&self) -> bool {
        let mut state = self.state.lock();
        let claimed = state.phase == Phase::Polling && !self.outbox.is_closed();
        if claimed {
            state.phase = Phase::Upgrading;
        }
        claimed
    }

    /// Hands a claimed WebSocket connection to the driver.
    pub(super) async fn upgrade(&self, stream: TcpStream, read_ahead: Vec<u8>) {
        if self.inbox.send(Inbound::Upgrade(stream, read_ahead)).await.is_err() {
            self.set_phase(Phase::Polling);
        }
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.state.lock().phase = phase;
        self.changed.notify_waiters();
    }

    /// After the driver ended a session: waits, at most `linger`, for the
    /// last `GET`s to take the frames that explain the close.
    pub(super) async fn linger(&self, reason: CloseReason, linger: Duration) {
        // A client's close crosses its own held GET, which is owed a noop.
        if !says_goodbye(reason) && reason != CloseReason::ClientClosed {
            return;
        }
        let _ = tokio::time::timeout(linger, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.state.lock().goodbye == Goodbye::Done {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }
}

/// Whether a session closed for `reason` still has something to tell a
/// client that polls once more (a DISCONNECT, an error event). Closes for
/// broken protocol, timeouts and slowness are final at once, as in engine.io.
fn says_goodbye(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::ServerDisconnect
            | CloseReason::ServerShutdown
            | CloseReason::PolicyViolation
            | CloseReason::ConnectTimeout
    )
}

/// Joins the payloads of queued frames into one long-polling body, then
/// `last` if given. Text payloads are copied as they are (the bytes encoded
/// once for every member); binary ones become `b<base64>`.
fn encode(batch: &VecDeque<Bytes>, last: Option<&str>) -> Bytes {
    let mut body = BytesMut::with_capacity(batch.iter().map(Bytes::len).sum::<usize>() + 8);
    for frame in batch {
        match split_frame(frame) {
            Some((FrameKind::Text, payload)) => engineio::push_text(&mut body, &payload),
            Some((FrameKind::Binary, payload)) => engineio::push_binary(&mut body, &payload),
            // Control frames (WebSocket pongs) mean nothing to a poller.
            Some((FrameKind::Control, _)) | None => {}
        }
    }
    if let Some(last) = last {
        engineio::push_text(&mut body, last.as_bytes());
    }
    if body.is_empty() {
        return NOOP;
    }
    body.freeze()
}

/// Marks the held `GET` done however its future ends (answered, or dropped
/// with its connection).
struct Held<'a> {
    session: &'a PollingSession,
    /// False while the `GET` waits: dropped then, its connection is gone.
    answered: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.session.state.lock().polling = false;
        if !self.answered {
            // The client's connection went away under a held GET (socket.io's
            // "poll connection closed prematurely"): the transport is lost
            // now, not a heartbeat later, so a recovering client finds its
            // session suspended when it comes back.
            self.session.outbox.close(CloseReason::TransportError);
        }
    }
}

struct Posting<'a> {
    session: &'a PollingSession,
}

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        self.session.state.lock().posting = false;
    }
}

/// Stripes of the registry; handshakes on different stripes never contend.
const REGISTRY_STRIPES: usize = 16;

/// One stripe of the [`Registry`].
type RegistryStripe = Mutex<HashMap<Sid, Arc<PollingSession>, RandomState>>;

/// The sessions that started on long-polling, by `sid`, for the requests
/// that carry them. A session is in it from its handshake until it ends.
#[derive(Debug)]
pub struct Registry {
    stripes: Box<[RegistryStripe]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            stripes: (0..REGISTRY_STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    fn stripe(&self, sid: Sid) -> &RegistryStripe {
        let index = usize::try_from(self.hasher.hash_one(sid) % REGISTRY_STRIPES as u64).unwrap_or(0);
        #[allow(clippy::indexing_slicing, reason = "index < REGISTRY_STRIPES, the table's length")]
        &self.stripes[index]
    }

    /// The session called `sid`, if it is polling.
    #[must_use]
    pub fn get(&self, sid: Sid) -> Option<Arc<PollingSession>> {
        self.stripe(sid).lock().get(&sid).cloned()
    }

    /// How many long-polling sessions there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|stripe| stripe.lock().len()).sum()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn insert(self: &Arc<Self>, sid: Sid, session: Arc<PollingSession>) -> Registered {
        self.stripe(sid).lock().insert(sid, session);
        Registered { registry: Arc::clone(self), sid }
    }
}

/// A session's place in the [`Registry`], given back when this is dropped:
/// however the driver ends, the entry goes with it.
#[derive(Debug)]
pub(super) struct Registered {
    registry: Arc<Registry>,
    sid: Sid,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.stripe(self.sid).lock().remove(&self.sid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    fn session() -> (Arc<PollingSession>, mpsc::Receiver<Inbound>) {
        PollingSession::new(Outbox::new(1 << 20), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_get_answers_every_queued_frame_joined_by_record_separators() {
        let (session, _inbox) = session();
        session.outbox.try_push(&Frame::text("4hello")).expect("open");
        session.outbox.try_push(&Frame::binary(&[1, 2, 3, 4])).expect("open");
        session.outbox.try_push(&Frame::text("2")).expect("open");
        assert_eq!(session.poll().await, Ok(Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e2")));
    }

    #[tokio::test]
    async fn a_held_get_is_answered_by_the_next_frame() {
        let (session, _inbox) = session();
        let poll = tokio::spawn({
            let session = Arc::clone(&session);
            async move { session.poll().await }
        });
        tokio::task::yield_now().await;
        session.outbox.try_push(&Frame::text("4late")).expect("open");
        assert_eq!(poll.await.expect("poll ends"), Ok(Bytes::from_static(b"4late")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_with_nothing_to_say_ends_with_a_noop() {
        let (session, _inbox) = session();
        assert_eq!(session.poll().await, Ok(NOOP));
    }

    #[tokio::test]
    async fn a_second_concurrent_get_closes_the_session() {
        let (session, _inbox) = session();
        let first = tokio::spawn({
            let session = Arc::clone(&session);
            async move { session.poll().await }
        });
        while !session.state.lock().polling {
            tokio::task::yield_now().await;
        }
        assert_eq!(session.poll().await, Err(PollingError::BadRequest));
        assert_eq!(first.await.expect("poll ends"), Ok(CLOSE));
        assert_eq!(session.poll().await, Err(PollingError::UnknownSession));
    }

    #[tokio::test]
    async fn a_server_close_leaves_its_last_words_then_the_close_for_the_next_gets() {
        let (session, _inbox) = session();
        session.outbox.try_push(&Frame::text("42/chat,[\"error\",{}]")).expect("open");
        session.outbox.try_push(&Frame::text("41/chat,")).expect("open");
        session.outbox.close(CloseReason::PolicyViolation);
        assert_eq!(session.poll().await, Ok(Bytes::from_static(b"42/chat,[\"error\",{}]\x1e41/chat,")));
        assert_eq!(session.poll().await, Ok(CLOSE), "the close in an answer of its own");
        assert_eq!(session.poll().await, Err(PollingError::UnknownSession));
    }

    #[tokio::test]
    async fn a_probed_session_answers_a_get_with_a_noop_and_keeps_its_frames() {
        let (session, _inbox) = session();
        session.outbox.try_push(&Frame::text("4kept")).expect("open");
        assert!(session.claim_upgrade());
        assert!(!session.claim_upgrade(), "one upgrade at a time");
        session.set_phase(Phase::Probed);
        assert_eq!(session.poll().await, Ok(NOOP));
        assert_eq!(session.outbox.pending_bytes(), Frame::text("4kept").len());
        session.set_phase(Phase::Upgraded);
        assert_eq!(session.poll().await, Err(PollingError::UnknownSession));
    }

    #[test]
    fn the_registry_forgets_a_session_when_its_entry_drops() {
        let registry = Arc::new(Registry::default());
        let (session, _inbox) = session();
        let sid = Sid::random();
        let entry = registry.insert(sid, session);
        assert!(registry.get(sid).is_some());
        drop(entry);
        assert!(registry.get(sid).is_none());
        assert!(registry.is_empty());
    }
}
