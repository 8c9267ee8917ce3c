//! [`Outbox`]: a connection's bounded queue of outbound frames.
//!
//! Anyone may push (broadcasts from other connections' tasks, timers); only
//! the connection's writer drains. The bound is in bytes. A push that would
//! go over it does not wait: it drops what is queued, marks the connection
//! closed as a slow consumer and returns [`PushError::Full`], so a slow reader
//! never slows anyone else down.
//!
//! A WebSocket session's socket is attached to its outbox, and a writer task
//! runs only while there is something the socket has not taken yet: an idle
//! connection has none. A push that finds the queue empty and no writer
//! running, on a broker that is not busy (the [`WritePacer`]'s delay is
//! zero), writes the frame to the socket itself with a non-blocking `write`:
//! no task, no wake-up. What the socket does not take, and every push while
//! the broker is busy, is queued and starts the writer, which ends once the
//! queue is empty and the broker is not busy (or writes the close frame once
//! the outbox is closed); while the broker is busy it waits for the next push
//! instead. Only one of them ever writes at a time, decided under the outbox
//! lock.
//!
//! With connection state recovery on, the outbox also keeps the
//! [`OffsetTrail`] of the recoverable frames pushed to it (delivered or
//! refused), which is all the broker needs to know which of them a client
//! that comes back with its last offset has missed; and a recovering
//! session's outbox can be held while its replay is gathered (see
//! [`Outbox::hold`]).
//!
//! Lock order: a room shard lock may be held while pushing; the outbox lock is
//! innermost and nothing but that non-blocking `write` is called while
//! holding it. Closing takes no lock
//! shared with other connections (no parent token to register with), so
//! connects and disconnects never meet on a global lock.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{CloseReason, WritePacer};
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The byte budget is exhausted; the connection is now being closed.
    #[error("outbox full")]
    Full,
    /// The connection is closing; nothing more is accepted.
    #[error("outbox closed")]
    Closed,
}

/// A cheap handle to a connection's outbound queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Frames were queued or the outbox closed: wakes a long-polling `GET`,
    /// or a WebSocket's writer waiting while the broker is busy.
    ready: Notify,
    /// Wakes everyone waiting in [`Outbox::closed`].
    closing: Notify,
    /// Set once, when the outbox closes; readable without the lock.
    is_closed: AtomicBool,
    limit_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    pending_bytes: usize,
    close: Option<CloseReason>,
    /// The WebSocket's socket, for pushes that write it directly and for
    /// the writer tasks they start.
    direct: Option<DirectWrite>,
    /// A writer task owns the writing: frames queued are its to write, and
    /// no push writes the socket itself.
    writer_running: bool,
    /// When the last writer task last wrote: the next one keeps the
    /// [`WritePacer`]'s spacing from it.
    last_write: Option<Instant>,
    /// Boxed, like `held`: only recovery records offsets, and every
    /// connection's outbox holds this field (the two inline kept the outbox
    /// in the allocator's 320 B size class, boxed it fits in 224 B).
    trail: Option<Box<OffsetTrail>>,
    /// While held: frames pushed meanwhile, with their offsets, queued after
    /// what [`Outbox::release`] puts first.
    held: Option<Box<Held>>,
}

/// Frames pushed while an outbox is held, with their offsets.
type Held = VecDeque<(Bytes, Option<u64>)>;

/// Late offsets an [`OffsetTrail`] remembers; older ones are forgotten and
/// make offsets up to them unresolvable.
const MAX_LATE_OFFSETS: usize = 64;

/// The recoverable frames pushed to one outbox, in push order, summed up.
///
/// Offsets come from one counter taken under each room's lock, so one
/// room's frames reach an outbox in offset order; two rooms broadcasting at
/// once may reach a common member out of offset order. The trail keeps the
/// highest offset pushed and each *late* one (below the highest at its
/// push), with the highest before it: enough to tell, from the last offset
/// a client processed, exactly which pushed frames came after it.
/// Refused pushes (the outbox closed) count as pushed: the client never saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetTrail {
    /// The lowest offset pushed (0 when none).
    pub lowest: u64,
    /// The highest offset pushed (0 when none).
    pub highest: u64,
    /// Late offsets in push order, each with the highest offset pushed before it.
    pub late: Vec<(u64, u64)>,
    /// Offsets up to this one cannot be placed any more (late ones were forgotten).
    pub unresolvable_through: u64,
}

impl OffsetTrail {
    /// Records that the frame with `offset` was pushed after everything recorded.
    pub fn record(&mut self, offset: u64) {
        if self.lowest == 0 || offset < self.lowest {
            self.lowest = offset;
        }
        if offset > self.highest {
            self.highest = offset;
            return;
        }
        if self.late.len() == MAX_LATE_OFFSETS {
            let (_, forgotten) = self.late.remove(0);
            self.unresolvable_through = self.unresolvable_through.max(forgotten);
        }
        self.late.push((offset, self.highest));
    }
}

/// A WebSocket's write side as its outbox holds it: the socket, the pacer
/// (a busy broker batches instead of writing each frame), the counters, and
/// how to start a writer task for what a push cannot write itself.
#[derive(Debug, Clone)]
pub(super) struct DirectWrite {
    pub(super) socket: Arc<OwnedWriteHalf>,
    pub(super) pacer: Arc<WritePacer>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tracker: TaskTracker,
    /// Spawns the writer task (the writer's, given here so that the outbox
    /// does not depend on the writer module).
    pub(super) start: fn(Outbox, DirectWrite, Option<Instant>),
}

/// A writer task to start once the outbox lock is released.
struct WriterStart(DirectWrite, Option<Instant>);

/// What the writer took from the outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Frames to write (possibly none), the connection stays open.
    Open,
    /// Write the frames taken (if any), then close for this reason.
    Closing(CloseReason),
}

impl Outbox {
    /// An empty outbox holding at most `limit_bytes`.
    #[must_use]
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                closing: Notify::new(),
                is_closed: AtomicBool::new(false),
                limit_bytes,
            }),
        }
    }

    /// Queues `frame` without waiting.
    ///
    /// # Errors
    /// [`PushError::Full`] when the byte budget is exceeded: the queue is
    /// dropped and the connection closes with [`CloseReason::SlowConsumer`].
    /// [`PushError::Closed`] once the connection is closing.
    pub fn try_push(&self, frame: &Frame) -> Result<(), PushError> {
        self.push(frame.as_bytes(), None)
    }

    /// Queues a recoverable `frame` carrying `offset`, and records the
    /// offset in the [`OffsetTrail`], whether queued or refused.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push).
    pub fn try_push_recoverable(&self, frame: &Frame, offset: u64) -> Result<(), PushError> {
        self.push(frame.as_bytes(), Some(offset))
    }

    /// Queues bytes that are not (only) a WebSocket frame: the HTTP `101`
    /// head followed by the Engine.IO open packet.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push).
    pub fn try_push_bytes(&self, bytes: &Bytes) -> Result<(), PushError> {
        self.push(bytes, None)
    }

    fn push(&self, bytes: &Bytes, offset: Option<u64>) -> Result<(), PushError> {
        let mut state = self.inner.state.lock();
        if state.close.is_some() {
            if let Some(offset) = offset {
                state.record(offset);
            }
            return Err(PushError::Closed);
        }
        if state.pending_bytes.saturating_add(bytes.len()) > self.inner.limit_bytes {
            if let Some(offset) = offset {
                state.record(offset);
            }
            self.overflow(state);
            return Err(PushError::Full);
        }
        if let Some(held) = &mut state.held {
            // Recorded when released, in the order the frames are queued then;
            // never written directly, since the release's frames go first.
            held.push_back((bytes.clone(), offset));
            state.pending_bytes += bytes.len();
            return Ok(());
        }
        if let Some(offset) = offset {
            state.record(offset);
        }
        let was_empty = state.queue.is_empty();
        let mut rest = bytes.clone();
        if was_empty && !state.writer_running {
            // A writer task would be started (or woken), drain this one frame
            // and write it; on a quiet connection writing it here saves that
            // task. Under the lock, so no writer can start meanwhile.
            match state.direct.as_ref().map(|direct| direct.try_write(bytes)) {
                Some(Ok(written)) if written == bytes.len() => return Ok(()),
                Some(Ok(written)) => rest = bytes.slice(written..),
                // A full socket or an error: the writer deals with it.
                Some(Err(_)) | None => {}
            }
        }
        state.pending_bytes += rest.len();
        state.queue.push_back(rest);
        self.unlock_and_start_writer(state, true);
        if was_empty {
            self.inner.ready.notify_one();
        }
        Ok(())
    }

    /// Claims a writer task when `wanted` (frames were queued or the outbox
    /// closed) and none runs, releases the lock, then starts the task: never
    /// spawned under the lock, which the task takes at once.
    fn unlock_and_start_writer(&self, mut state: parking_lot::MutexGuard<'_, State>, wanted: bool) {
        let start = if wanted { claim_writer(&mut state) } else { None };
        drop(state);
        if let Some(WriterStart(direct, last_write)) = start {
            let spawn = direct.start;
            spawn(self.clone(), direct, last_write);
        }
    }

    /// Drops what is queued and closes as a slow consumer.
    fn overflow(&self, mut state: parking_lot::MutexGuard<'_, State>) {
        state.queue = VecDeque::new();
        state.held = None;
        state.pending_bytes = 0;
        state.close = Some(CloseReason::SlowConsumer);
        self.announce_close(state);
    }

    /// Holds back what is pushed from now on (it still counts against the
    /// budget) until [`release`](Self::release): a recovering session's
    /// replay is gathered while its rooms already deliver to it, and must
    /// reach the client first.
    pub fn hold(&self) {
        let mut state = self.inner.state.lock();
        state.held.get_or_insert_with(Box::default);
    }

    /// Queues `first` (frames with their offsets, if recoverable), then what
    /// was held back, or drops what was held back when `keep_held` is false,
    /// and ends the hold.
    ///
    /// # Errors
    /// [`PushError::Full`] when it all goes over the budget (the connection
    /// then closes as a slow consumer), [`PushError::Closed`] once closing.
    pub fn release(&self, first: &[(Frame, Option<u64>)], keep_held: bool) -> Result<(), PushError> {
        let mut state = self.inner.state.lock();
        let held = state.held.take().map(|held| *held).unwrap_or_default();
        if state.close.is_some() {
            return Err(PushError::Closed);
        }
        if !keep_held {
            state.pending_bytes =
                state.pending_bytes.saturating_sub(held.iter().map(|(bytes, _)| bytes.len()).sum());
        }
        let first_bytes: usize = first.iter().map(|(frame, _)| frame.len()).sum();
        if state.pending_bytes.saturating_add(first_bytes) > self.inner.limit_bytes {
            self.overflow(state);
            return Err(PushError::Full);
        }
        state.pending_bytes += first_bytes;
        let was_empty = state.queue.is_empty();
        let first = first.iter().map(|(frame, offset)| (frame.as_bytes().clone(), *offset));
        let held = held.into_iter().filter(|_| keep_held);
        for (bytes, offset) in first.chain(held) {
            if let Some(offset) = offset {
                state.record(offset);
            }
            state.queue.push_back(bytes);
        }
        let wake = was_empty && !state.queue.is_empty();
        // The writer takes these: no push may write ahead of them.
        self.unlock_and_start_writer(state, wake);
        if wake {
            self.inner.ready.notify_one();
        }
        Ok(())
    }

    /// Drops the frames still queued (a suspended session's: its client is
    /// gone, and the replay store has what it missed), keeping the trail.
    pub fn discard_queued(&self) {
        let mut state = self.inner.state.lock();
        state.queue = VecDeque::new();
        state.held = None;
        state.pending_bytes = 0;
    }

    /// The trail of recoverable frames pushed so far.
    #[must_use]
    pub fn trail(&self) -> OffsetTrail {
        self.inner.state.lock().trail.as_deref().cloned().unwrap_or_default()
    }

    /// Attaches a WebSocket's socket: from now on pushes write it, or start
    /// a writer task that does. Frames already queued (a long-polling
    /// session upgrading) or a close start one at once.
    pub(super) fn attach_writer(&self, direct: DirectWrite) {
        let mut state = self.inner.state.lock();
        state.direct = Some(direct);
        let pending = !state.queue.is_empty() || state.close.is_some();
        self.unlock_and_start_writer(state, pending);
    }

    /// Takes the socket back (the writer task closing it): no push writes
    /// to it after this, and no writer task is started any more.
    pub(super) fn detach_writer(&self) -> Option<DirectWrite> {
        self.inner.state.lock().direct.take()
    }

    /// The writer task found nothing more to write, having last written at
    /// `last_write`: it ends (`true`), and pushes write the socket or start
    /// another writer. `false` when frames came or the outbox closed since
    /// its last drain: it must go on.
    pub(super) fn finish_writing(&self, last_write: Option<Instant>) -> bool {
        let mut state = self.inner.state.lock();
        if !state.queue.is_empty() || state.close.is_some() {
            return false;
        }
        state.writer_running = false;
        state.last_write = last_write;
        true
    }

    /// Stops accepting frames; the writer sends what is queued, then a close
    /// frame for `reason`. The first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.inner.state.lock();
        state.close.get_or_insert(reason);
        self.announce_close(state);
    }

    fn announce_close(&self, state: parking_lot::MutexGuard<'_, State>) {
        self.inner.is_closed.store(true, Ordering::Release);
        self.unlock_and_start_writer(state, true);
        self.inner.closing.notify_waiters();
        self.inner.ready.notify_one();
    }

    /// The reason the outbox was closed with, if it was.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.state.lock().close
    }

    /// Resolves once the outbox is closed: a slow consumer or a
    /// [`close`](Self::close).
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.closing.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close in between still wakes us.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the outbox is closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed.load(Ordering::Acquire)
    }

    /// Moves every queued frame into `into` (swapping buffers, so both keep
    /// their capacity) and says whether to close after writing them.
    pub fn drain(&self, into: &mut VecDeque<Bytes>) -> Drained {
        debug_assert!(into.is_empty());
        let mut state = self.inner.state.lock();
        std::mem::swap(&mut state.queue, into);
        // What is held back stays counted until it is released or dropped.
        state.pending_bytes =
            state.held.as_ref().map_or(0, |held| held.iter().map(|(bytes, _)| bytes.len()).sum());
        match state.close {
            Some(reason) => Drained::Closing(reason),
            None => Drained::Open,
        }
    }

    /// Waits until a push or a close happened since the last wait.
    pub async fn ready(&self) {
        self.inner.ready.notified().await;
    }

    /// Whether no writer task runs (for tests).
    #[cfg(test)]
    pub(super) fn is_writer_idle(&self) -> bool {
        !self.inner.state.lock().writer_running
    }

    /// Bytes queued and not yet taken by the writer.
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.inner.state.lock().pending_bytes
    }
}

impl State {
    /// Records a recoverable frame's offset in the trail.
    fn record(&mut self, offset: u64) {
        self.trail.get_or_insert_with(Box::default).record(offset);
    }
}

/// Claims the writing for a new writer task, when a socket is attached and
/// no writer runs. Called with the outbox lock held, after frames were queued
/// or the outbox closed.
fn claim_writer(state: &mut State) -> Option<WriterStart> {
    if state.writer_running {
        return None;
    }
    let direct = state.direct.clone()?;
    state.writer_running = true;
    Some(WriterStart(direct, state.last_write))
}

impl DirectWrite {
    /// Writes `bytes` if the socket takes them without waiting, and while
    /// the broker is not busy: a busy broker's writers wait and batch (see
    /// [`WritePacer`]), which costs fewer writes than one per frame.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        if !self.pacer.delay().is_zero() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let written = self.socket.try_write(bytes)?;
        self.pacer.note_unpaced_write();
        Metrics::add(&self.metrics.writes, 1);
        Metrics::add(&self.metrics.bytes_out, written as u64);
        if written == bytes.len() {
            Metrics::add(&self.metrics.frames_out, 1);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Frame {
        Frame::text(&"x".repeat(len))
    }

    #[test]
    fn drains_in_order_and_keeps_the_budget() {
        let outbox = Outbox::new(1024);
        outbox.try_push(&frame(10)).expect("room");
        outbox.try_push(&frame(20)).expect("room");
        assert_eq!(outbox.pending_bytes(), 12 + 22);
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), Drained::Open);
        assert_eq!(batch.iter().map(Bytes::len).collect::<Vec<_>>(), [12, 22]);
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn overflow_drops_the_queue_and_closes_as_slow_consumer() {
        let outbox = Outbox::new(100);
        outbox.try_push(&frame(50)).expect("room");
        assert_eq!(outbox.try_push(&frame(60)), Err(PushError::Full));
        assert!(outbox.is_closed());
        assert_eq!(outbox.try_push(&frame(1)), Err(PushError::Closed));
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), Drained::Closing(CloseReason::SlowConsumer));
        assert!(batch.is_empty());
    }

    #[test]
    fn close_keeps_queued_frames_and_the_first_reason() {
        let outbox = Outbox::new(100);
        outbox.try_push(&frame(5)).expect("room");
        outbox.close(CloseReason::ServerShutdown);
        outbox.close(CloseReason::ClientClosed);
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), Drained::Closing(CloseReason::ServerShutdown));
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn trail_records_late_offsets_with_the_highest_before_them() {
        let outbox = Outbox::new(1024);
        for offset in [10, 12, 11, 13] {
            outbox.try_push_recoverable(&frame(1), offset).expect("room");
        }
        outbox.close(CloseReason::TransportError);
        assert_eq!(outbox.try_push_recoverable(&frame(1), 9), Err(PushError::Closed));
        let trail = outbox.trail();
        assert_eq!((trail.lowest, trail.highest), (9, 13));
        assert_eq!(trail.late, [(11, 12), (9, 13)], "refused pushes count: the client never saw them");
    }

    #[test]
    fn a_held_outbox_queues_the_released_frames_first() {
        let outbox = Outbox::new(1024);
        outbox.hold();
        outbox.try_push_recoverable(&frame(3), 7).expect("room");
        let mut batch = VecDeque::new();
        outbox.drain(&mut batch);
        assert!(batch.is_empty(), "nothing leaves while held");
        outbox.release(&[(frame(1), None), (frame(2), Some(5))], true).expect("room");
        outbox.drain(&mut batch);
        assert_eq!(batch.iter().map(Bytes::len).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(outbox.trail().late, [], "recorded in queue order: 5 then 7");
        outbox.hold();
        outbox.try_push(&frame(3)).expect("room");
        outbox.release(&[], false).expect("room");
        assert_eq!(outbox.pending_bytes(), 0, "what was held back is dropped");
    }

    #[tokio::test]
    async fn closed_resolves_for_waiters_and_late_comers() {
        let outbox = Outbox::new(100);
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.closed().await }
        });
        tokio::task::yield_now().await;
        outbox.close(CloseReason::ServerDisconnect);
        waiter.await.expect("waiter finishes");
        outbox.closed().await;
        assert!(outbox.is_closed());
    }
}
