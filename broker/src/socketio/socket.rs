//! [`Socket`]: one client in one namespace — its id, its rooms, its
//! application data and the outbox its frames go to.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use ahash::RandomState;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Namespace, ack_frame, disconnect_frame, frames_with_attachments};
use crate::adapter::FetchedSocket;
use crate::engineio::{CloseReason, Handshake, Outbox, PushError};
use crate::ids::{Pid, RoomId, Sid};
use crate::protocol::Frame;
use crate::protocol::socketio::PacketType;
use crate::rooms::{Joined, Member};

/// A connected client in one namespace.
pub struct Socket {
    sid: Sid,
    /// The private session id, when recovery is on.
    pid: Option<Pid>,
    /// The first offset this session could have been sent.
    since: u64,
    /// Who the session belongs to (the middleware's [`super::Accepted::owner`]).
    owner: Option<Box<str>>,
    namespace: Arc<Namespace>,
    outbox: Outbox,
    handshake: Arc<Handshake>,
    /// The rooms joined. Only the socket's own reader task changes it;
    /// others may read it.
    rooms: Mutex<JoinedRooms>,
    data: Box<dyn Any + Send + Sync>,
    expires_at: Option<Instant>,
    /// Boxed when the first server ack is asked for: most sockets never ask.
    acks: Mutex<Option<Box<PendingAcks>>>,
}

/// The rooms a socket is in, in the order it joined them: membership,
/// removal and "the room joined last" cost O(log n), so neither a message
/// (which checks membership) nor a disconnect (which leaves every room) grows
/// with the square of the room count.
#[derive(Debug, Default)]
pub(super) struct JoinedRooms {
    /// Room to its join sequence number and the room's first offset owed
    /// to this socket (what came before the join is not for it).
    by_room: HashMap<RoomId, (u64, u64), ProcessKeys>,
    /// Join sequence number to room: the join order.
    by_order: BTreeMap<u64, RoomId>,
    next: u64,
}

/// ahash keyed once per process, for the room map every socket holds: a
/// `RandomState` of its own would be 32 bytes in every socket, idle or not.
/// The keys stay random (unknown to clients, who name the rooms).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcessKeys;

impl BuildHasher for ProcessKeys {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> Self::Hasher {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        KEYS.get_or_init(RandomState::new).build_hasher()
    }
}

impl JoinedRooms {
    fn insert(&mut self, room: &RoomId, since: u64) {
        if self.by_room.contains_key(room) {
            return;
        }
        let order = self.next;
        self.next += 1;
        self.by_room.insert(room.clone(), (order, since));
        self.by_order.insert(order, room.clone());
    }

    fn remove(&mut self, room: &str) -> bool {
        let Some((order, _)) = self.by_room.remove(room) else { return false };
        self.by_order.remove(&order);
        true
    }

    /// Each room joined, with its first offset owed to the socket.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&RoomId, u64)> {
        self.by_room.iter().map(|(room, &(_, since))| (room, since))
    }
}

#[derive(Default)]
struct PendingAcks {
    next_id: u64,
    waiting: Vec<(u64, oneshot::Sender<serde_json::Value>)>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("sid", &self.sid).field("namespace", &self.namespace.name()).finish()
    }
}

impl Socket {
    pub(super) fn new(
        namespace: Arc<Namespace>,
        outbox: Outbox,
        handshake: Arc<Handshake>,
        accepted: super::Accepted,
    ) -> Self {
        let adapter = namespace.adapter();
        let super::Accepted { data, expires_at, owner } = accepted;
        Self {
            sid: Sid::random(),
            pid: adapter.ring().map(|_| Pid::random()),
            since: adapter.next_offset(),
            owner: owner.map(Box::from),
            namespace,
            outbox,
            handshake,
            rooms: Mutex::default(),
            data,
            expires_at,
            acks: Mutex::default(),
        }
    }

    /// The session of `old`, suspended, taken up again on a new
    /// connection: the same ids and rooms (which `old` no longer lists),
    /// the new connection's outbox, handshake and application data.
    pub(super) fn resume(
        old: &Self,
        outbox: Outbox,
        handshake: Arc<Handshake>,
        data: Box<dyn Any + Send + Sync>,
        expires_at: Option<Instant>,
    ) -> Self {
        Self {
            sid: old.sid,
            pid: old.pid,
            since: old.since,
            owner: old.owner.clone(),
            namespace: Arc::clone(&old.namespace),
            outbox,
            handshake,
            rooms: Mutex::new(std::mem::take(&mut *old.rooms.lock())),
            data,
            expires_at,
            acks: Mutex::default(),
        }
    }

    /// A session suspended on another node, taken up here: its ids, user
    /// and first offset as stored, no rooms yet (see [`Socket::rejoin`]),
    /// the new connection's outbox, handshake and application data.
    #[allow(clippy::too_many_arguments, reason = "the stored session's parts and the new connection's")]
    pub(super) fn from_stored(
        namespace: Arc<Namespace>,
        sid: Sid,
        pid: Pid,
        since: u64,
        owner: Option<&str>,
        outbox: Outbox,
        handshake: Arc<Handshake>,
        accepted: super::Accepted,
    ) -> Self {
        Self {
            sid,
            pid: Some(pid),
            since,
            owner: owner.map(Box::from),
            namespace,
            outbox,
            handshake,
            rooms: Mutex::default(),
            data: accepted.data,
            expires_at: accepted.expires_at,
            acks: Mutex::default(),
        }
    }

    /// What [`Socket::from_stored`] took from the middleware's answer, given
    /// back when the recovery fails.
    pub(super) fn into_accepted(self) -> super::Accepted {
        super::Accepted { data: self.data, expires_at: self.expires_at, owner: self.owner.map(String::from) }
    }

    /// Joins `room` again, as a recovered session does on another node:
    /// without telling its members (the other nodes count the member
    /// again), owed the room's frames from `since` on. Returns the room's
    /// cut: its frames below it came before the join (replayed), the rest
    /// are delivered live.
    pub(super) fn rejoin(&self, room: &RoomId, since: u64) -> u64 {
        let member = Member { sid: self.sid, outbox: self.outbox.clone() };
        let adapter = self.namespace.adapter();
        let presence = adapter.cluster().and_then(|_| self.namespace.handler().presence(self));
        let (_, cut) = adapter.join_with_presence(room, member, presence.as_deref(), "", |_| None::<()>);
        self.rooms.lock().insert(room, since);
        cut
    }

    /// The socket id.
    #[must_use]
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The private session id a client recovers this session with, when
    /// recovery is on.
    #[must_use]
    pub fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// The first offset this session could have been sent.
    pub(super) fn since(&self) -> u64 {
        self.since
    }

    /// Who the session belongs to.
    pub(super) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The outbox of the socket's connection.
    pub(super) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Runs `f` on the rooms joined (locked meanwhile: `f` must not call the socket).
    pub(super) fn with_rooms<R>(&self, f: impl FnOnce(&JoinedRooms) -> R) -> R {
        f(&self.rooms.lock())
    }

    /// The socket's namespace.
    #[must_use]
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.namespace
    }

    /// The upgrade request of the socket's session.
    #[must_use]
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The application data given by [`super::Accepted`], if it is a `T`.
    #[must_use]
    pub fn data<T: 'static>(&self) -> Option<&T> {
        self.data.downcast_ref()
    }

    /// When the socket expires, if it does.
    #[must_use]
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Queues a pre-built frame for this client.
    ///
    /// # Errors
    /// [`PushError`] when the outbox is full (the session is then closing) or closed.
    pub fn send_frame(&self, frame: &Frame) -> Result<(), PushError> {
        self.outbox.try_push(frame)
    }

    /// Bytes queued for this socket's session and not yet written.
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.outbox.pending_bytes()
    }

    /// Emits `event` with `data` to this client.
    ///
    /// # Errors
    /// As [`send_frame`](Self::send_frame).
    /// With recovery on, the event is recoverable: it carries an offset and
    /// is kept for replay.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), PushError> {
        self.namespace.adapter().emit_to(self.sid, &self.outbox, event, data)
    }

    /// Emits `event` with several arguments and binary attachments (which
    /// the arguments' `{"_placeholder":true,"num":N}` objects point at).
    ///
    /// # Errors
    /// As [`send_frame`](Self::send_frame).
    pub fn emit_with_attachments<T: Serialize>(
        &self,
        event: &str,
        args: &[T],
        attachments: &[bytes::Bytes],
    ) -> Result<(), PushError> {
        frames_with_attachments(self.namespace.name(), Some(event), None, args, attachments)
            .iter()
            .try_for_each(|frame| self.send_frame(frame))
    }

    /// Answers the client's ack `ack_id` with several arguments and binary
    /// attachments.
    ///
    /// # Errors
    /// As [`send_frame`](Self::send_frame).
    pub fn ack_with_attachments<T: Serialize>(
        &self,
        ack_id: u64,
        args: &[T],
        attachments: &[bytes::Bytes],
    ) -> Result<(), PushError> {
        frames_with_attachments(self.namespace.name(), None, Some(ack_id), args, attachments)
            .iter()
            .try_for_each(|frame| self.send_frame(frame))
    }

    /// Emits `event` with `data` and an ack id; the receiver resolves with the
    /// client's answer (its first argument) and fails if the socket goes away.
    ///
    /// # Errors
    /// As [`send_frame`](Self::send_frame).
    pub fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<oneshot::Receiver<serde_json::Value>, PushError> {
        self.emit_packet_with_ack(&(event, data))
    }

    /// Emits an EVENT whose whole array `[event, ...args]` is `packet`, with an
    /// ack id, as [`emit_with_ack`](Self::emit_with_ack) does.
    ///
    /// # Errors
    /// As [`send_frame`](Self::send_frame).
    pub fn emit_packet_with_ack<T: Serialize + ?Sized>(
        &self,
        packet: &T,
    ) -> Result<oneshot::Receiver<serde_json::Value>, PushError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut acks = self.acks.lock();
            let acks = acks.get_or_insert_default();
            let id = acks.next_id;
            acks.next_id += 1;
            acks.waiting.push((id, tx));
            id
        };
        self.send_frame(&super::packet_frame(PacketType::Event, self.namespace.name(), Some(id), packet))?;
        Ok(rx)
    }

    /// Resolves a server ack the client answered. Unknown ids are ignored.
    pub(super) fn resolve_ack(&self, id: u64, answer: serde_json::Value) {
        let mut acks = self.acks.lock();
        let Some(acks) = acks.as_mut() else { return };
        if let Some(position) = acks.waiting.iter().position(|(waiting, _)| *waiting == id) {
            let (_, tx) = acks.waiting.swap_remove(position);
            let _ = tx.send(answer);
        }
    }

    /// Answers the client's ack `ack_id` with `data`.
    ///
    /// # Errors
    /// As [`send_frame`](Self::send_frame).
    pub fn ack<T: Serialize + ?Sized>(&self, ack_id: u64, data: &T) -> Result<(), PushError> {
        self.send_frame(&ack_frame(self.namespace.name(), ack_id, data))
    }

    /// Joins `room` through the namespace's adapter. When new there,
    /// `notice` (given the member count) gives the data of `event` for the
    /// other members.
    pub fn join<T: Serialize>(
        &self,
        room: &RoomId,
        event: &str,
        notice: impl FnOnce(usize) -> Option<T>,
    ) -> Joined {
        let member = Member { sid: self.sid, outbox: self.outbox.clone() };
        let adapter = self.namespace.adapter();
        let presence = adapter.cluster().and_then(|_| self.namespace.handler().presence(self));
        let (joined, since) = adapter.join_with_presence(room, member, presence.as_deref(), event, notice);
        if joined.is_new {
            self.rooms.lock().insert(room, since);
        }
        joined
    }

    /// Joins `room` without telling anyone (another node asked).
    pub fn join_silently(&self, room: &RoomId) -> bool {
        self.join(room, "", |_| None::<()>).is_new
    }

    /// Leaves `room`; `notice` (given the members left) gives the data of
    /// `event` for them. Returns how many are left, or `None` when the
    /// socket was not a member.
    pub fn leave<T: Serialize>(
        &self,
        room: &str,
        event: &str,
        notice: impl FnOnce(usize) -> Option<T>,
    ) -> Option<usize> {
        let left = self.namespace.adapter().leave(room, self.sid, event, notice)?;
        self.rooms.lock().remove(room);
        Some(left)
    }

    /// Leaves `room` without telling anyone (another node asked).
    pub fn leave_silently(&self, room: &str) -> bool {
        self.leave(room, "", |_| None::<()>).is_some()
    }

    /// How another node's `fetchSockets` sees this socket. Secrets (the
    /// `Authorization` header, a `token` in the query) are left out.
    #[must_use]
    pub fn describe(&self) -> FetchedSocket {
        let sid = self.sid.to_string();
        let query: serde_json::Map<String, serde_json::Value> = self
            .handshake
            .query
            .iter()
            .filter(|(key, _)| *key != "token")
            .map(|(key, value)| (key.to_owned(), serde_json::Value::from(value)))
            .collect();
        let mut headers = serde_json::Map::new();
        if let Some(origin) = &self.handshake.origin {
            headers.insert("origin".to_owned(), origin.as_ref().into());
        }
        let handshake = serde_json::json!({
            "headers": headers,
            "time": "",
            "address": self.handshake.remote.map(|remote| remote.ip().to_string()).unwrap_or_default(),
            "xdomain": self.handshake.origin.is_some(),
            "secure": false,
            "issued": 0,
            "url": "",
            "query": query,
            "auth": {},
        });
        let rooms =
            std::iter::once(sid.clone()).chain(self.rooms().into_iter().map(|room| room.as_str().to_owned()));
        FetchedSocket { id: sid, handshake, rooms: rooms.collect(), data: serde_json::json!({}) }
    }

    /// Whether the socket is in `room`.
    #[must_use]
    pub fn is_in(&self, room: &str) -> bool {
        self.rooms.lock().by_room.contains_key(room)
    }

    /// The number of rooms joined.
    #[must_use]
    pub fn room_count(&self) -> usize {
        self.rooms.lock().by_room.len()
    }

    /// The rooms joined, oldest first.
    #[must_use]
    pub fn rooms(&self) -> Vec<RoomId> {
        self.rooms.lock().by_order.values().cloned().collect()
    }

    /// The room joined most recently and not left.
    #[must_use]
    pub fn last_room(&self) -> Option<RoomId> {
        self.rooms.lock().by_order.last_key_value().map(|(_, room)| room.clone())
    }

    /// Leaves every room without telling anyone.
    pub(super) fn leave_all_silently(&self) {
        let rooms = std::mem::take(&mut *self.rooms.lock()).by_order;
        for room in rooms.into_values() {
            self.namespace.adapter().leave_silently(room.as_str(), self.sid);
        }
    }

    /// Ends the session from the server side: queues DISCONNECT for this
    /// namespace, then closes the session for `reason`. Every socket of the
    /// session then gets [`super::Handler::on_disconnect`].
    pub fn disconnect(&self, reason: CloseReason) {
        let _ = self.send_frame(&disconnect_frame(self.namespace.name()));
        self.outbox.close(reason);
    }
}
