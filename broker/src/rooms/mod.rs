//! [`RoomTable`]: room membership over many shards, and delivery of one
//! pre-built [`Frame`] to every member's [`Outbox`].
//!
//! A room lives in the shard its name hashes to; each shard is one
//! `parking_lot` mutex over its rooms, so joins, leaves and broadcasts in
//! different shards never contend and there is no global lock.
//!
//! Lock order (the only locks on these paths, outermost first):
//! 1. one shard lock — never two at once;
//! 2. an outbox lock, taken by `Outbox::try_push` inside it.
//!
//! Callbacks given to [`RoomTable`] run with the shard lock held: they build
//! a frame and must not touch the table. Broadcasting under the lock is what
//! makes every member see a room's frames in one order.

use std::collections::HashMap;

use ahash::RandomState;
use parking_lot::Mutex;

use crate::engineio::Outbox;
use crate::ids::{RoomId, Sid};
use crate::protocol::Frame;

/// Shards per table. A power of two well above the core count, so two
/// cores rarely meet on one lock.
const SHARDS: usize = 256;

/// One room member: who it is and where its frames go.
#[derive(Debug, Clone)]
pub struct Member {
    /// The member's socket id.
    pub sid: Sid,
    /// The member's outbound queue.
    pub outbox: Outbox,
}

/// A frame on its way to a room's members, with its recovery offset when
/// it is recoverable (the members' outboxes record it).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The frame, encoded once for every member.
    pub frame: Frame,
    /// Its offset, for a recoverable frame.
    pub offset: Option<u64>,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        Self { frame, offset: None }
    }
}

/// The outcome of [`RoomTable::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Members after the join.
    pub members: usize,
    /// False when the socket already was a member.
    pub is_new: bool,
}

/// Membership of every room in one namespace.
#[derive(Debug)]
pub struct RoomTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    rooms: HashMap<RoomId, Room, RandomState>,
    /// Memberships over this shard's rooms, kept so that counting them
    /// never walks the rooms under the lock.
    memberships: usize,
}

/// Members in a vector for fast iteration, with an index for O(1) removal.
#[derive(Debug, Default)]
struct Room {
    members: Vec<Member>,
    index: HashMap<Sid, usize, RandomState>,
}

impl Room {
    fn push_to_all(&self, except: Option<Sid>, outgoing: &Outgoing) -> usize {
        let mut delivered = 0;
        for member in &self.members {
            if Some(member.sid) == except {
                continue;
            }
            let pushed = match outgoing.offset {
                None => member.outbox.try_push(&outgoing.frame),
                Some(offset) => member.outbox.try_push_recoverable(&outgoing.frame, offset),
            };
            delivered += usize::from(pushed.is_ok());
        }
        delivered
    }

    fn remove(&mut self, sid: Sid) -> bool {
        let Some(position) = self.index.remove(&sid) else { return false };
        self.members.swap_remove(position);
        if let Some(moved) = self.members.get(position) {
            self.index.insert(moved.sid, position);
        }
        true
    }
}

impl Default for RoomTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }

    #[allow(clippy::indexing_slicing, reason = "masked to below SHARDS, the table's length")]
    fn shard(&self, room: &str) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(room);
        &self.shards[(hash as usize) & (SHARDS - 1)]
    }

    /// Adds `member` to `room`. When it is new there, `notice` builds a frame
    /// (given the member count after the join) that goes to the other members.
    pub fn join(
        &self,
        room: &RoomId,
        member: Member,
        notice: impl FnOnce(usize) -> Option<Outgoing>,
    ) -> Joined {
        let mut guard = self.shard(room.as_str()).lock();
        let shard = &mut *guard;
        let entry = shard.rooms.entry(room.clone()).or_default();
        if entry.index.contains_key(&member.sid) {
            return Joined { members: entry.members.len(), is_new: false };
        }
        let sid = member.sid;
        entry.index.insert(sid, entry.members.len());
        entry.members.push(member);
        let members = entry.members.len();
        shard.memberships = shard.memberships.saturating_add(1);
        if let Some(frame) = notice(members) {
            entry.push_to_all(Some(sid), &frame);
        }
        Joined { members, is_new: true }
    }

    /// Removes `sid` from `room` and returns the members left, or `None` when
    /// it was not a member. `notice` builds a frame for those left (given
    /// their count); it is not called when the room is now empty.
    pub fn leave(
        &self,
        room: &str,
        sid: Sid,
        notice: impl FnOnce(usize) -> Option<Outgoing>,
    ) -> Option<usize> {
        let mut guard = self.shard(room).lock();
        let shard = &mut *guard;
        let entry = shard.rooms.get_mut(room)?;
        if !entry.remove(sid) {
            return None;
        }
        let left = entry.members.len();
        shard.memberships = shard.memberships.saturating_sub(1);
        if left == 0 {
            shard.rooms.remove(room);
        } else if let Some(frame) = notice(left) {
            entry.push_to_all(None, &frame);
        }
        Some(left)
    }

    /// Builds a frame with `make` (given the member count) and queues it for
    /// every member but `except`. Returns the deliveries queued, or `None`
    /// when the room does not exist (and `make` is not called).
    pub fn broadcast(
        &self,
        room: &str,
        except: Option<Sid>,
        make: impl FnOnce(usize) -> Outgoing,
    ) -> Option<usize> {
        let shard = self.shard(room).lock();
        let entry = shard.rooms.get(room)?;
        let outgoing = make(entry.members.len());
        Some(entry.push_to_all(except, &outgoing))
    }

    /// Runs `make` under `room`'s shard lock whether or not the room has
    /// members, and queues its frame for every member but `except`. Returns
    /// the deliveries (0 for no room).
    pub fn broadcast_always(
        &self,
        room: &str,
        except: Option<Sid>,
        make: impl FnOnce() -> Outgoing,
    ) -> usize {
        let shard = self.shard(room).lock();
        let outgoing = make();
        shard.rooms.get(room).map_or(0, |entry| entry.push_to_all(except, &outgoing))
    }

    /// Points `sid`'s membership of `room` at `outbox` (a recovered session's
    /// new one). `under_lock` runs with the shard lock held, after the
    /// switch: what it reads of the room's order holds until the next frame.
    /// `None` when `sid` is not a member.
    pub fn replace_outbox<R>(
        &self,
        room: &str,
        sid: Sid,
        outbox: Outbox,
        under_lock: impl FnOnce() -> R,
    ) -> Option<R> {
        let mut shard = self.shard(room).lock();
        let entry = shard.rooms.get_mut(room)?;
        let position = *entry.index.get(&sid)?;
        entry.members.get_mut(position)?.outbox = outbox;
        Some(under_lock())
    }

    /// The number of members of `room` (0 when it does not exist).
    #[must_use]
    pub fn members(&self, room: &str) -> usize {
        self.shard(room).lock().rooms.get(room).map_or(0, |entry| entry.members.len())
    }

    /// Whether `sid` is a member of `room`.
    #[must_use]
    pub fn contains(&self, room: &str, sid: Sid) -> bool {
        self.shard(room).lock().rooms.get(room).is_some_and(|entry| entry.index.contains_key(&sid))
    }

    /// The number of non-empty rooms (walks every shard; for tests and stats).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().rooms.len()).sum()
    }

    /// Memberships over every room (walks every shard; for tests and stats).
    #[must_use]
    pub fn memberships(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().memberships).sum()
    }

    /// Whether no room has members.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn member() -> Member {
        Member { sid: Sid::random(), outbox: Outbox::new(1 << 16) }
    }

    fn queued(member: &Member) -> usize {
        let mut batch = VecDeque::new();
        member.outbox.drain(&mut batch);
        batch.len()
    }

    fn frame(_: usize) -> Option<Outgoing> {
        Some(Frame::text("notice").into())
    }

    #[test]
    fn join_notifies_the_others_once() {
        let table = RoomTable::new();
        let room = RoomId::from("a");
        let (first, second) = (member(), member());
        assert_eq!(table.join(&room, first.clone(), frame), Joined { members: 1, is_new: true });
        assert_eq!(table.join(&room, second.clone(), frame), Joined { members: 2, is_new: true });
        assert_eq!(table.join(&room, second.clone(), frame), Joined { members: 2, is_new: false });
        assert_eq!((queued(&first), queued(&second)), (1, 0));
    }

    #[test]
    fn leave_notifies_the_rest_and_drops_empty_rooms() {
        let table = RoomTable::new();
        let room = RoomId::from("a");
        let (first, second) = (member(), member());
        table.join(&room, first.clone(), |_| None);
        table.join(&room, second.clone(), |_| None);
        assert_eq!(table.leave("a", first.sid, frame), Some(1));
        assert_eq!(table.leave("a", first.sid, frame), None);
        assert_eq!((queued(&first), queued(&second)), (0, 1));
        assert_eq!(table.leave("a", second.sid, |_| panic!("no one left to tell")), Some(0));
        assert!(table.is_empty());
    }

    #[test]
    fn broadcast_reaches_every_member_but_the_excepted() {
        let table = RoomTable::new();
        let room = RoomId::from("r");
        let members: Vec<Member> = (0..100).map(|_| member()).collect();
        for member in &members {
            table.join(&room, member.clone(), |_| None);
        }
        assert_eq!(table.broadcast("r", None, |n| Frame::text(&n.to_string()).into()), Some(100));
        assert_eq!(table.broadcast("r", Some(members[3].sid), |_| Frame::text("x").into()), Some(99));
        assert_eq!(table.broadcast("nowhere", None, |_| panic!("no room")), None);
        let counts: Vec<usize> = members.iter().map(queued).collect();
        assert_eq!(counts.iter().filter(|&&n| n == 2).count(), 99);
        assert_eq!(counts[3], 1);
    }

    #[test]
    fn removal_keeps_the_index_consistent() {
        let table = RoomTable::new();
        let room = RoomId::from("r");
        let members: Vec<Member> = (0..10).map(|_| member()).collect();
        for member in &members {
            table.join(&room, member.clone(), |_| None);
        }
        for member in members.iter().step_by(2) {
            assert!(table.leave("r", member.sid, |_| None).is_some());
        }
        for (i, member) in members.iter().enumerate() {
            assert_eq!(table.contains("r", member.sid), i % 2 == 1);
        }
        assert_eq!(table.members("r"), 5);
    }

    #[test]
    fn concurrent_joins_and_leaves_lose_nobody() {
        let table = std::sync::Arc::new(RoomTable::new());
        let threads: Vec<_> = (0..2)
            .map(|thread| {
                let table = std::sync::Arc::clone(&table);
                std::thread::spawn(move || {
                    let members: Vec<Member> = (0..500).map(|_| member()).collect();
                    for (i, member) in members.iter().enumerate() {
                        table
                            .join(&RoomId::from(format!("room{}", i % 7).as_str()), member.clone(), |_| None);
                    }
                    for (i, member) in members.iter().enumerate().filter(|(i, _)| i % 2 == thread) {
                        assert!(table.leave(&format!("room{}", i % 7), member.sid, |_| None).is_some());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        let total: usize = (0..7).map(|i| table.members(&format!("room{i}"))).sum();
        assert_eq!(total, 500);
        assert_eq!(table.memberships(), 500, "the shards' counts agree with the rooms");
    }
}
