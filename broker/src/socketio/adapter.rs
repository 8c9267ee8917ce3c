//! [`Adapter`]: the one way a namespace reaches more than one socket. Every
//! join, leave, room emit and namespace-wide emit, and every message id,
//! goes through it.
//!
//! It is the [`LocalAdapter`] (this node's sharded room table) and, in a
//! cluster, a [`Cluster`] that carries the same emits to the other nodes. A
//! frame is encoded once for the local members; in a cluster the packet is
//! also encoded once as MessagePack for the bus. While the cluster is
//! reachable a broadcast is delivered locally when it comes back from the
//! bus, so every node sees a room's emits in the bus's one order; when it is
//! not, it is delivered locally at once.
//!
//! With connection state recovery on, the adapter also owns the
//! namespace's [`ReplayRing`]: each recoverable frame gets an offset (a
//! message's id when it has one), carries it as its last argument, and is
//! recorded once, under the room's lock. In a cluster every room emit goes
//! out through Redis's ordered publish, so its offset is the id Redis gives
//! it, the same on every node, and each node records it as the bus brings
//! it ([`Adapter::deliver_recorded`]); an event to one socket is not
//! relayed, gets no id from Redis, and is not recoverable there.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::{event_frame, packet_frame};
use crate::adapter::recovery::{ReplayRing, Target};
use crate::adapter::{BoxFuture, Cluster, LocalAdapter};
use crate::engineio::{Outbox, PushError};
use crate::ids::{RoomId, Sid};
use crate::protocol::Frame;
use crate::protocol::socketio::PacketType;
use crate::rooms::{Joined, Member, Outgoing};

/// A chat message id: unique across the deployment, increasing within a
/// room. A single broker writes its counter (`"1764490000123456"`); in a
/// cluster Redis gives the id as it relays the message (digits too), and a
/// message Redis could not take carries this node's counter and id
/// (`"1764490000123456-AbC12x"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageId(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Counter(u64),
    Given(Arc<str>),
}

impl MessageId {
    fn given(id: impl Into<Arc<str>>) -> Self {
        Self(Repr::Given(id.into()))
    }

    /// The id a single broker (no cluster) writes for its `counter`th message.
    #[must_use]
    pub fn local(counter: u64) -> Self {
        Self(Repr::Counter(counter))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Counter(counter) => write!(f, "{counter}"),
            Repr::Given(id) => f.write_str(id),
        }
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A message's id: known now, or once Redis has ordered the message.
pub enum IdPromise {
    /// Known now.
    Ready(MessageId),
    /// Known when Redis has relayed the message.
    Pending(BoxFuture<MessageId>),
}

impl fmt::Debug for IdPromise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(id) => f.debug_tuple("Ready").field(id).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// What a broadcast's builder may ask: the local member count.
#[derive(Debug)]
pub struct Stamp {
    members: usize,
}

impl Stamp {
    /// The room's members on this node.
    #[must_use]
    pub fn local_members(&self) -> usize {
        self.members
    }
}

/// A namespace's adapter: local members, and the other nodes if clustered.
pub struct Adapter {
    namespace: Box<str>,
    local: LocalAdapter,
    cluster: Option<Arc<dyn Cluster>>,
    ring: Option<ReplayRing>,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("namespace", &self.namespace)
            .field("clustered", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// A single node's adapter for `namespace`.
    #[must_use]
    pub fn local(namespace: &str) -> Self {
        Self { namespace: Box::from(namespace), local: LocalAdapter::new(), cluster: None, ring: None }
    }

    /// Turns connection state recovery on: recoverable frames get offsets
    /// and are kept for `window`, `max_bytes` at most. Not for a zero
    /// `window`.
    #[must_use]
    pub fn with_recovery(mut self, window: Duration, max_bytes: usize) -> Self {
        if !window.is_zero() {
            self.ring = Some(match self.cluster {
                Some(_) => ReplayRing::clustered(window, max_bytes),
                None => ReplayRing::new(window, max_bytes),
            });
        }
        self
    }

    /// The offset the next room frame will have at least: read under a
    /// room's lock, it splits the room's frames into those before (lower)
    /// and after. On one node the next message id; in a cluster, where
    /// Redis gives the offsets, one above the highest the ring recorded.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        match (&self.cluster, &self.ring) {
            (Some(_), Some(ring)) => ring.next_offset(),
            _ => self.local.current_offset(),
        }
    }

    /// The replay store, when recovery is on.
    #[must_use]
    pub fn ring(&self) -> Option<&ReplayRing> {
        self.ring.as_ref()
    }

    /// An adapter for `namespace` that also reaches the nodes of `cluster`.
    #[must_use]
    pub fn clustered(namespace: &str, cluster: Arc<dyn Cluster>) -> Self {
        Self {
            namespace: Box::from(namespace),
            local: LocalAdapter::new(),
            cluster: Some(cluster),
            ring: None,
        }
    }

    /// This node's half.
    #[must_use]
    pub fn local_half(&self) -> &LocalAdapter {
        &self.local
    }

    /// The other nodes, if clustered.
    #[must_use]
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.as_ref()
    }

    /// Adds `member` to `room`. When it is new there, `notice` (given the
    /// local member count) gives the data of `event` for the other members.
    /// Also returns the room's first offset the member is owed (what came
    /// before its join is not for it).
    pub fn join<T: Serialize>(
        &self,
        room: &RoomId,
        member: Member,
        event: &str,
        notice: impl FnOnce(usize) -> Option<T>,
    ) -> (Joined, u64) {
        self.join_with_presence(room, member, None, event, notice)
    }

    /// [`Adapter::join`], and in a cluster the other nodes keep the
    /// member's `presence` (what the handler says of it), to speak for it
    /// should this node die.
    pub fn join_with_presence<T: Serialize>(
        &self,
        room: &RoomId,
        member: Member,
        presence: Option<&RawValue>,
        event: &str,
        notice: impl FnOnce(usize) -> Option<T>,
    ) -> (Joined, u64) {
        let sid = member.sid;
        let mut since = 0;
        let Some(cluster) = &self.cluster else {
            let joined = self.local.join(room, member, |members| {
                since = self.local.current_offset();
                notice(members).map(|data| self.room_frame(room.as_str(), Some(sid), event, &data, None))
            });
            return (joined, since);
        };
        let joined = self.local.join(room, member, |_| {
            since = self.next_offset();
            None
        });
        if !joined.is_new {
            return (joined, since);
        }
        if let Some(presence) = presence {
            cluster.member_joined(sid, room.as_str(), presence);
        }
        if let Some(data) = notice(joined.members) {
            self.publish_or_deliver(cluster.as_ref(), room.as_str(), Some(sid), event, &data);
        }
        (joined, since)
    }

    /// Removes `sid` from `room`; `notice` (given the local members left)
    /// gives the data of `event` for those left. `None` when not a member.
    pub fn leave<T: Serialize>(
        &self,
        room: &str,
        sid: Sid,
        event: &str,
        notice: impl FnOnce(usize) -> Option<T>,
    ) -> Option<usize> {
        let Some(cluster) = &self.cluster else {
            return self.local.leave(room, sid, |members| {
                notice(members).map(|data| self.room_frame(room, Some(sid), event, &data, None))
            });
        };
        let left = self.local.leave(room, sid, |_| None)?;
        cluster.member_left(sid, room);
        if let Some(data) = notice(left) {
            self.publish_or_deliver(cluster.as_ref(), room, Some(sid), event, &data);
        }
        Some(left)
    }

    /// Leaves `room` without telling its members (the other nodes forget
    /// the membership).
    pub fn leave_silently(&self, room: &str, sid: Sid) -> Option<usize> {
        let left = self.local.leave(room, sid, |_| None)?;
        if let Some(cluster) = &self.cluster {
            cluster.member_left(sid, room);
        }
        Some(left)
    }

    /// Emits `event` to this node's members of `room` only (the other nodes
    /// do the same for theirs, as when a node dies). Returns the deliveries,
    /// `None` when the room has no member here.
    pub fn broadcast_here<T: Serialize + ?Sized>(&self, room: &str, event: &str, data: &T) -> Option<usize> {
        self.local.broadcast(room, None, |_| event_frame(&self.namespace, None, event, data).into())
    }

    /// Emits `event` to every member of `room` but `except`, with the data
    /// `make` builds (once). Returns the local deliveries queued now (0 when
    /// they wait for the bus), `None` when the room has no member here and
    /// the emit stays local.
    pub fn broadcast<T: Serialize>(
        &self,
        room: &str,
        except: Option<Sid>,
        event: &str,
        make: impl FnOnce(&Stamp) -> T,
    ) -> Option<usize> {
        let Some(cluster) = &self.cluster else {
            return self.local.broadcast(room, except, |members| {
                let data = make(&Stamp { members });
                self.room_frame(room, except, event, &data, None)
            });
        };
        let data = make(&Stamp { members: self.local.members(room) });
        Some(self.publish_or_deliver(cluster.as_ref(), room, except, event, &data))
    }

    /// Emits `event` to every member of `room`, sender included, with the
    /// data `make` builds around the message's id. Returns the local
    /// deliveries queued now (0 when they wait for the bus) and the id;
    /// `None` when the room has no member here and it stays local.
    ///
    /// On a single node the id is taken under the room's shard lock, so ids
    /// increase in the order the members get the messages. In a cluster
    /// Redis gives it as it relays the message (`make` is then called with a
    /// placeholder, and again with a fallback id if the message could not
    /// go out), so ids increase in the one order every node delivers in.
    pub fn send_message<T: Serialize>(
        &self,
        room: &str,
        event: &str,
        make: impl Fn(&MessageId) -> T,
    ) -> Option<(usize, IdPromise)> {
        let Some(cluster) = &self.cluster else {
            let mut taken = None;
            let delivered = self.local.broadcast(room, None, |_| {
                let counter = self.local.next_message_id();
                let id = MessageId::local(counter);
                // With recovery on, the message's id is its offset too.
                let outgoing = self.room_frame(room, None, event, &make(&id), Some(counter));
                taken = Some(id);
                outgoing
            })?;
            return taken.map(|id| (delivered, IdPromise::Ready(id)));
        };
        if cluster.is_connected() {
            let placeholder = crate::adapter::redis::wire::id_placeholder();
            let data = make(&MessageId::given(placeholder.as_str()));
            // With recovery on, the id is the offset too, written last.
            let recoverable = self.ring.is_some();
            let packet = if recoverable {
                packet_msgpack_with_offset(event, &data, &placeholder)
            } else {
                packet_msgpack(event, &data)
            };
            match packet {
                Ok(packet) => {
                    if let Some(given) =
                        cluster.publish_ordered(&[room], None, &packet, &placeholder, recoverable)
                    {
                        let id: BoxFuture<MessageId> = Box::pin(async move { MessageId::given(given.await) });
                        return Some((0, IdPromise::Pending(id)));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, event, "message not MessagePack-encodable, delivered on this node only");
                }
            }
        }
        let id = MessageId::given(cluster.fallback_message_id());
        let delivered = self.publish_or_deliver(cluster.as_ref(), room, None, event, &make(&id));
        Some((delivered, IdPromise::Ready(id)))
    }

    /// Sends `event` to the other nodes' sockets of the whole namespace.
    /// Returns true when it went out and will come back to this node's
    /// sockets through the bus; false when the caller delivers locally.
    pub fn publish_to_all<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> bool {
        let Some(cluster) = &self.cluster else { return false };
        match packet_msgpack(event, data) {
            Ok(packet) => cluster.publish(&[], None, &packet),
            Err(error) => {
                tracing::warn!(%error, event, "emit not MessagePack-encodable, delivered on this node only");
                false
            }
        }
    }

    fn publish_or_deliver<T: Serialize>(
        &self,
        cluster: &dyn Cluster,
        room: &str,
        except: Option<Sid>,
        event: &str,
        data: &T,
    ) -> usize {
        // With recovery on, a room emit takes its offset from Redis too.
        if self.ring.is_some() && cluster.is_connected() {
            let placeholder = crate::adapter::redis::wire::id_placeholder();
            if let Ok(packet) = packet_msgpack_with_offset(event, data, &placeholder)
                && cluster.publish_ordered(&[room], except, &packet, &placeholder, true).is_some()
            {
                return 0;
            }
        }
        match packet_msgpack(event, data) {
            Ok(packet) if cluster.publish(&[room], except, &packet) => 0,
            outcome => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, event, "emit not MessagePack-encodable, delivered on this node only");
                }
                let frame = event_frame(&self.namespace, None, event, data);
                self.local.broadcast(room, except, |_| frame.into()).unwrap_or(0)
            }
        }
    }

    /// The members of `room` on this node.
    #[must_use]
    pub fn local_members(&self, room: &str) -> usize {
        self.local.members(room)
    }

    /// Emits `event` with `data` to the socket `sid` through `outbox`: a
    /// recoverable event, with an offset and kept for replay, when recovery
    /// is on.
    ///
    /// # Errors
    /// As [`Outbox::try_push`].
    pub fn emit_to<T: Serialize + ?Sized>(
        &self,
        sid: Sid,
        outbox: &Outbox,
        event: &str,
        data: &T,
    ) -> Result<(), PushError> {
        let Some(ring) = self.ring.as_ref().filter(|_| self.cluster.is_none()) else {
            return outbox.try_push(&event_frame(&self.namespace, None, event, data));
        };
        let offset = self.local.next_message_id();
        let frame = recoverable_frame(&self.namespace, event, data, offset);
        ring.record(offset, Target::Socket(sid), &frame);
        outbox.try_push_recoverable(&frame, offset)
    }

    /// Delivers a recoverable room frame the bus brought (`frame` carries
    /// `offset` as its last argument) to this node's members of `room` but
    /// `except`, and records it, members here or not: a client of the room
    /// on another node may recover here. Returns the deliveries.
    pub fn deliver_recorded(&self, room: &str, except: Option<Sid>, frame: &Frame, offset: u64) -> usize {
        self.local.table().broadcast_always(room, except, || {
            if let Some(ring) = &self.ring {
                ring.record(offset, Target::Room { room: RoomId::from(room), except }, frame);
            }
            Outgoing { frame: frame.clone(), offset: Some(offset) }
        })
    }

    /// The frame of a room emit; with recovery on, with an offset (`taken`,
    /// a message id, when there is one) and recorded in the ring. Called
    /// under the room's shard lock.
    fn room_frame<T: Serialize + ?Sized>(
        &self,
        room: &str,
        except: Option<Sid>,
        event: &str,
        data: &T,
        taken: Option<u64>,
    ) -> Outgoing {
        let Some(ring) = &self.ring else {
            return event_frame(&self.namespace, None, event, data).into();
        };
        let offset = taken.unwrap_or_else(|| self.local.next_message_id());
        let frame = recoverable_frame(&self.namespace, event, data, offset);
        ring.record(offset, Target::Room { room: RoomId::from(room), except }, &frame);
        Outgoing { frame, offset: Some(offset) }
    }
}

/// An EVENT `[event, data, "<offset>"]`: the client takes a string last
/// argument as the offset to come back with.
fn recoverable_frame<T: Serialize + ?Sized>(namespace: &str, event: &str, data: &T, offset: u64) -> Frame {
    packet_frame(PacketType::Event, namespace, None, &(event, data, Offset(offset)))
}

/// An offset as the client holds it: a string.
struct Offset(u64);

impl Serialize for Offset {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// `[event, data, placeholder]` as MessagePack for the bus: Redis writes
/// the message's id where `placeholder` is, the offset last.
fn packet_msgpack_with_offset<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
    placeholder: &str,
) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(&(event, data, placeholder)).map_err(|error| error.to_string())?;
    crate::adapter::redis::wire::json_to_msgpack(&json).map_err(|error| error.to_string())
}

/// `[event, data]` as MessagePack for the bus. Through JSON, because some
/// payload parts (a user id kept as its token had it) only serialize to JSON.
fn packet_msgpack<T: Serialize + ?Sized>(event: &str, data: &T) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(&(event, data)).map_err(|error| error.to_string())?;
    crate::adapter::redis::wire::json_to_msgpack(&json).map_err(|error| error.to_string())
}
