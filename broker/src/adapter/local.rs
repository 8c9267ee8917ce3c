//! [`LocalAdapter`]: the members of one namespace on this node, in the
//! sharded [`RoomTable`], and the message ids this node hands out.
//!
//! This is the whole adapter of a single broker. In a cluster it is the
//! local half: the Redis adapter publishes to the other nodes and delivers
//! to this node's members through it.
//!
//! Invariant: a room's frames are queued under its shard lock, and a
//! message id is taken under that same lock, so every member sees a room's
//! messages in one order and their ids increase in that order.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::{RoomId, Sid};
use crate::rooms::{Joined, Member, Outgoing, RoomTable};

/// The next message id of this process, shared by every namespace so ids
/// are unique across them, and the recovery offsets (so an outbox shared by
/// several namespaces sees one order). Starts at the current time in
/// microseconds, so ids also increase across restarts.
static NEXT_MESSAGE_ID: LazyLock<AtomicU64> = LazyLock::new(|| {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
    AtomicU64::new(u64::try_from(micros).unwrap_or(0))
});

/// The local members of one namespace; its message ids come from the
/// process's one counter.
#[derive(Debug)]
pub struct LocalAdapter {
    rooms: RoomTable,
}

impl Default for LocalAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalAdapter {
    /// An empty adapter.
    #[must_use]
    pub fn new() -> Self {
        Self { rooms: RoomTable::new() }
    }

    /// Adds `member` to `room`; when it is new there, `notice` (given the
    /// member count, called under the shard lock) builds a frame for the others.
    pub fn join(
        &self,
        room: &RoomId,
        member: Member,
        notice: impl FnOnce(usize) -> Option<Outgoing>,
    ) -> Joined {
        self.rooms.join(room, member, notice)
    }

    /// Removes `sid` from `room`; `notice` builds a frame for those left.
    /// `None` when it was not a member.
    pub fn leave(
        &self,
        room: &str,
        sid: Sid,
        notice: impl FnOnce(usize) -> Option<Outgoing>,
    ) -> Option<usize> {
        self.rooms.leave(room, sid, notice)
    }

    /// Queues the frame `make` builds (given the member count, under the
    /// shard lock) for every member of `room` but `except`. Returns the
    /// deliveries, `None` when the room has no member here.
    pub fn broadcast(
        &self,
        room: &str,
        except: Option<Sid>,
        make: impl FnOnce(usize) -> Outgoing,
    ) -> Option<usize> {
        self.rooms.broadcast(room, except, make)
    }

    /// Takes the next message id. Called under the room's shard lock (inside
    /// a `broadcast`'s `make`) so ids increase in delivery order.
    pub fn next_message_id(&self) -> u64 {
        NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// The id the next [`next_message_id`](Self::next_message_id) will be
    /// at least. Read under a room's lock, it splits the room's frames into
    /// those before (lower) and after (this or higher).
    #[must_use]
    pub fn current_offset(&self) -> u64 {
        NEXT_MESSAGE_ID.load(Ordering::Relaxed)
    }

    /// The members of `room` on this node.
    #[must_use]
    pub fn members(&self, room: &str) -> usize {
        self.rooms.members(room)
    }

    /// The room table (for gauges and tests).
    #[must_use]
    pub fn table(&self) -> &RoomTable {
        &self.rooms
    }
}
