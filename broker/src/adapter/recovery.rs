//! The replay store of connection state recovery: every recoverable frame a
//! namespace sent lately, in offset order, bounded in bytes and in time.
//!
//! A recoverable frame (a room broadcast, an event to one socket; never an
//! ack, never an event waiting for an ack) carries its offset as its last
//! argument, and is recorded here once, as the very frame its members got
//! (the same `Bytes`). Room frames are recorded under the room's shard lock,
//! so a room's frames are in the ring in their delivery order.
//!
//! [`resume_point`] turns a client's last offset and its outbox's
//! [`OffsetTrail`] into the frames it missed; [`ReplayRing::replay`] finds
//! them by binary search, or says the gap was trimmed (the client then gets
//! a fresh session: never a partial replay).
//!
//! In a cluster the offsets are the ids Redis gives as it relays each room
//! frame, and every broker records every room frame of the namespace the bus
//! brings it, members here or not, so an offset a client holds is found on
//! any broker. A broker's ring is complete only from the first frame it got
//! after subscribing: what came before, or while the bus was down, counts
//! as trimmed ([`ReplayRing::frames_lost`]).
//!
//! Lock order: a room shard lock, then the ring lock; nothing is called
//! with the ring lock held.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::engineio::OffsetTrail;
use crate::ids::{RoomId, Sid};
use crate::protocol::Frame;

/// Who a recorded frame was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The members of a room, but one socket.
    Room {
        /// The room.
        room: RoomId,
        /// The socket left out (the sender of a `user_joined`, say).
        except: Option<Sid>,
    },
    /// One socket.
    Socket(Sid),
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    stored_at: Instant,
    target: Target,
    frame: Frame,
}

impl Entry {
    /// What the entry costs the store: its frame and its own size.
    fn cost(&self) -> usize {
        self.frame.len() + std::mem::size_of::<Self>()
    }
}

/// The fixed bytes one stored packet costs beside its frame (for the README).
#[must_use]
pub fn entry_size() -> usize {
    std::mem::size_of::<Entry>()
}

/// One namespace's recent recoverable frames, by offset.
#[derive(Debug)]
pub struct ReplayRing {
    state: Mutex<RingState>,
    window: Duration,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct RingState {
    /// In offset order.
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The highest offset dropped so far: a gap reaching down to it may
    /// have lost frames.
    trimmed_through: u64,
    /// The highest offset recorded so far.
    highest: u64,
    /// Frames may be missing since the last one recorded (a cluster's bus
    /// was down): every replay is refused until the next frame, below
    /// which everything then counts as trimmed.
    lost: bool,
}

impl RingState {
    fn trim(&mut self, now: Instant, window: Duration, max_bytes: usize) {
        while let Some(front) = self.entries.front() {
            let expired = now.saturating_duration_since(front.stored_at) > window;
            if !expired && self.bytes <= max_bytes {
                break;
            }
            let cost = front.cost();
            self.trimmed_through = self.trimmed_through.max(front.offset);
            self.bytes = self.bytes.saturating_sub(cost);
            self.entries.pop_front();
        }
    }
}

/// Where a client resumes: the frames for it from offset `from` on, and the
/// `late` ones below `from` (pushed after its last offset, though lower).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The first offset to replay from; `u64::MAX` when there is none.
    pub from: u64,
    /// Offsets below `from` to replay too.
    pub late: Vec<u64>,
}

/// Works out what a client missed from the `trail` of its old outbox and
/// the last offset it processed (`None` when it processed none). `since` is
/// the first offset the session could have been sent: an older offset the
/// client holds comes from an earlier session, so it processed nothing of
/// this one.
///
/// `None` when the offset cannot be placed: one never sent to this session,
/// or one whose place the trail no longer knows.
#[must_use]
pub fn resume_point(trail: &OffsetTrail, last_seen: Option<u64>, since: u64) -> Option<ResumePoint> {
    let nothing = ResumePoint { from: u64::MAX, late: Vec::new() };
    let Some(last) = last_seen.filter(|&last| last >= since) else {
        // Processed nothing: everything pushed, and whatever came after.
        let from = if trail.highest == 0 { u64::MAX } else { trail.lowest };
        return Some(ResumePoint { from, ..nothing });
    };
    if last > trail.highest {
        return None;
    }
    // The highest offset pushed up to `last`, and the late ones after it.
    let (highest_then, late): (u64, Vec<u64>) =
        match trail.late.iter().position(|&(offset, _)| offset == last) {
            Some(index) => {
                let (_, highest_then) = trail.late.get(index).copied().unwrap_or_default();
                let after = trail.late.get(index.saturating_add(1)..).unwrap_or_default();
                (highest_then, after.iter().map(|&(offset, _)| offset).collect())
            }
            None if last <= trail.unresolvable_through => return None,
            None => (
                last,
                trail.late.iter().filter(|&&(_, before)| before >= last).map(|&(offset, _)| offset).collect(),
            ),
        };
    let from = if trail.highest > highest_then {
        highest_then.saturating_add(1).max(trail.lowest)
    } else {
        u64::MAX
    };
    let late = late.into_iter().filter(|&offset| offset < from).collect();
    Some(ResumePoint { from, late })
}

impl ReplayRing {
    /// An empty ring keeping frames for `window` and at most `max_bytes`.
    #[must_use]
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        Self { state: Mutex::default(), window, max_bytes }
    }

    /// An empty ring of a clustered namespace: complete only from the first
    /// frame the bus brings.
    #[must_use]
    pub fn clustered(window: Duration, max_bytes: usize) -> Self {
        let ring = Self::new(window, max_bytes);
        ring.frames_lost();
        ring
    }

    /// Frames may have been missed from now on (see [`RingState::lost`]).
    pub fn frames_lost(&self) {
        self.state.lock().lost = true;
    }

    /// One above the highest offset recorded. Read under a room's lock, in
    /// a cluster, it splits the room's frames into those recorded (lower)
    /// and those to come (this or higher).
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.state.lock().highest.saturating_add(1)
    }

    /// How long frames are kept.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records `frame`, sent to `target` with `offset`. Called under the
    /// room's shard lock for a room's frames.
    pub fn record(&self, offset: u64, target: Target, frame: &Frame) {
        let now = Instant::now();
        let entry = Entry { offset, stored_at: now, target, frame: frame.clone() };
        let mut state = self.state.lock();
        if state.lost {
            state.lost = false;
            state.trimmed_through = state.trimmed_through.max(offset.saturating_sub(1));
        }
        state.highest = state.highest.max(offset);
        state.bytes = state.bytes.saturating_add(entry.cost());
        // Rooms record under their own locks, so a frame may come in just
        // behind one of a higher offset: find its place from the back.
        let position = state
            .entries
            .iter()
            .rposition(|existing| existing.offset < offset)
            .map_or(0, |before| before.saturating_add(1));
        state.entries.insert(position, entry);
        state.trim(now, self.window, self.max_bytes);
    }

    /// The frames of `point` that `is_for` selects (the `late` ones are
    /// taken as they are), in offset order; `None` when some may have been
    /// trimmed away.
    pub fn replay(
        &self,
        point: &ResumePoint,
        mut is_for: impl FnMut(u64, &Target) -> bool,
    ) -> Option<Vec<(Frame, Option<u64>)>> {
        let mut state = self.state.lock();
        if state.lost {
            return None;
        }
        state.trim(Instant::now(), self.window, self.max_bytes);
        let lowest = point.late.iter().copied().min().unwrap_or(point.from).min(point.from);
        if lowest == u64::MAX {
            return Some(Vec::new());
        }
        if state.trimmed_through >= lowest {
            return None;
        }
        let mut frames = Vec::with_capacity(point.late.len());
        let mut late = point.late.clone();
        late.sort_unstable();
        for offset in late {
            let index = state.entries.binary_search_by_key(&offset, |entry| entry.offset).ok()?;
            let entry = state.entries.get(index)?;
            frames.push((entry.frame.clone(), Some(offset)));
        }
        let start = state.entries.partition_point(|entry| entry.offset < point.from);
        frames.extend(
            state
                .entries
                .range(start..)
                .filter(|entry| is_for(entry.offset, &entry.target))
                .map(|entry| (entry.frame.clone(), Some(entry.offset))),
        );
        // The late ones are lower than `from`: the whole list is in offset order.
        Some(frames)
    }

    /// Frames kept and their cost in bytes (for gauges and tests).
    #[must_use]
    pub fn usage(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.entries.len(), state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(pushed: &[u64]) -> OffsetTrail {
        let mut trail = OffsetTrail::default();
        for &offset in pushed {
            trail.record(offset);
        }
        trail
    }

    #[test]
    fn an_in_order_trail_resumes_right_after_the_last_offset() {
        let trail = trail(&[10, 11, 12]);
        assert_eq!(resume_point(&trail, Some(11), 1), Some(ResumePoint { from: 12, late: vec![] }));
        assert_eq!(resume_point(&trail, Some(12), 1), Some(ResumePoint { from: u64::MAX, late: vec![] }));
        assert_eq!(resume_point(&trail, None, 1), Some(ResumePoint { from: 10, late: vec![] }));
        assert_eq!(resume_point(&trail, Some(13), 1), None, "never sent to this session");
        assert_eq!(
            resume_point(&trail, Some(3), 5),
            Some(ResumePoint { from: 10, late: vec![] }),
            "an offset of an earlier session: nothing of this one was processed"
        );
    }

    #[test]
    fn a_late_offset_is_placed_where_it_was_pushed() {
        // Pushed in this order: 10, 12, 11 (late behind 12), 13, 9 (late behind 13).
        let trail = trail(&[10, 12, 11, 13, 9]);
        // After 12 came 11, 13 and 9.
        assert_eq!(resume_point(&trail, Some(12), 1), Some(ResumePoint { from: 13, late: vec![11, 9] }));
        // After 11 came 13 and 9; 12 came before it.
        assert_eq!(resume_point(&trail, Some(11), 1), Some(ResumePoint { from: 13, late: vec![9] }));
        // After 9: nothing.
        assert_eq!(resume_point(&trail, Some(9), 1), Some(ResumePoint { from: u64::MAX, late: vec![] }));
        // After 10: 12, 11, 13, 9.
        assert_eq!(resume_point(&trail, Some(10), 1), Some(ResumePoint { from: 11, late: vec![9] }));
    }

    fn ring_with(offsets: &[u64]) -> ReplayRing {
        let ring = ReplayRing::new(Duration::from_secs(60), 1 << 20);
        for &offset in offsets {
            ring.record(offset, Target::Socket(Sid::random()), &Frame::text(&offset.to_string()));
        }
        ring
    }

    fn offsets(frames: &[(Frame, Option<u64>)]) -> Vec<u64> {
        frames.iter().filter_map(|(_, offset)| *offset).collect()
    }

    #[test]
    fn replay_finds_the_frames_in_offset_order() {
        let ring = ring_with(&[1, 2, 4, 3, 5]);
        let point = ResumePoint { from: 4, late: vec![2] };
        let frames = ring.replay(&point, |offset, _| offset != 5).expect("nothing trimmed");
        assert_eq!(offsets(&frames), [2, 4]);
        let nothing = ResumePoint { from: u64::MAX, late: vec![] };
        assert_eq!(ring.replay(&nothing, |_, _| true).map(|frames| frames.len()), Some(0));
    }

    #[test]
    fn a_gap_reaching_into_trimmed_frames_is_refused() {
        let entry_cost = Frame::text("1").len() + std::mem::size_of::<Entry>();
        let ring = ReplayRing::new(Duration::from_secs(60), 3 * entry_cost);
        for offset in 1..=5 {
            ring.record(offset, Target::Socket(Sid::random()), &Frame::text(&offset.to_string()));
        }
        assert_eq!(ring.usage().0, 3, "bounded in bytes");
        assert!(ring.replay(&ResumePoint { from: 2, late: vec![] }, |_, _| true).is_none());
        assert!(ring.replay(&ResumePoint { from: 5, late: vec![1] }, |_, _| true).is_none());
        let kept = ring.replay(&ResumePoint { from: 3, late: vec![] }, |_, _| true).expect("kept");
        assert_eq!(offsets(&kept), [3, 4, 5]);
    }

    #[test]
    fn a_clustered_ring_is_complete_from_its_first_frame_and_after_each_loss() {
        let ring = ReplayRing::clustered(Duration::from_secs(60), 1 << 20);
        let point = |from| ResumePoint { from, late: vec![] };
        assert!(ring.replay(&point(u64::MAX), |_, _| true).is_none(), "nothing known yet");
        ring.record(100, Target::Socket(Sid::random()), &Frame::text("100"));
        ring.record(105, Target::Socket(Sid::random()), &Frame::text("105"));
        assert_eq!(ring.next_offset(), 106);
        assert!(ring.replay(&point(99), |_, _| true).is_none(), "before the first frame");
        assert_eq!(
            ring.replay(&point(100), |_, _| true).map(|frames| offsets(&frames)),
            Some(vec![100, 105])
        );
        ring.frames_lost();
        assert!(ring.replay(&point(106), |_, _| true).is_none(), "while frames may be missing");
        ring.record(120, Target::Socket(Sid::random()), &Frame::text("120"));
        assert!(ring.replay(&point(106), |_, _| true).is_none(), "the gap before 120 counts as trimmed");
        assert_eq!(ring.replay(&point(120), |_, _| true).map(|frames| offsets(&frames)), Some(vec![120]));
    }

    #[tokio::test(start_paused = true)]
    async fn frames_older_than_the_window_are_trimmed() {
        let ring = ReplayRing::new(Duration::from_secs(10), 1 << 20);
        ring.record(1, Target::Socket(Sid::random()), &Frame::text("1"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(ring.replay(&ResumePoint { from: 1, late: vec![] }, |_, _| true).is_none());
    }
}
