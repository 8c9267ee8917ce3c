//! A simulated chat user: one [`Connection`] plus what it has received.
//!
//! [`Session`] speaks the chat events of PROTOCOL.md (`join_room`,
//! `send_message`, `message`, `user_joined`, `user_left`, `error`, acks) and
//! does the per-receiver bookkeeping: latency samples into the shared
//! [`Recorder`], sequence tracking per publisher, notice sets. Every wait
//! goes through [`Session::pump_until`], which keeps reading (and answering
//! pings) while it waits, so a session never goes deaf. Each read is handled
//! as a batch: every complete frame in it is scanned in place, stamped with
//! one clock reading (they all arrived with that read), and its message
//! latencies are recorded together, a few at a time under one lock. The receive path allocates nothing.
//!
//! A session outlives its connection: [`Session::drop_connection`] drops the
//! socket at the TCP level and [`Session::reconnect`] connects again the way
//! socket.io-client does (the CONNECT carries the last ack's `pid` and the
//! last event's offset) and counts whether the server recovered it.

use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accounting::{Arrival, IdSet, SeqTracker};
use crate::client::{Connection, Incoming, Target};
use crate::content::Stamp;
use crate::schedule::{Clock, Schedule};
use crate::stats::{Phase, Recorder, Sample};
use crate::wire::{self, Packet, Resume, keys};

/// State every session of one run shares.
#[derive(Debug)]
pub struct Shared {
    /// The run's clock.
    pub clock: Clock,
    /// Where latency samples go.
    pub recorder: Recorder,
    /// The server under test.
    pub target: Target,
    /// Live counters per target endpoint, in `--target` order.
    pub per_target: Box<[TargetCounters]>,
    /// Intended `join_room` time + 1 per client id (0: none yet), read by
    /// the members that get the `user_joined`.
    join_ns: Box<[AtomicU64]>,
    /// Intended close time + 1 per client id (0: none yet).
    close_ns: Box<[AtomicU64]>,
}

impl Shared {
    /// Shared state for client ids `0..max_clients`.
    pub fn new(clock: Clock, target: Target, max_clients: u32) -> Self {
        let slots = || (0..max_clients).map(|_| AtomicU64::new(0)).collect();
        let per_target = target.endpoints().iter().map(|_| TargetCounters::default()).collect();
        Self { clock, recorder: Recorder::new(), target, per_target, join_ns: slots(), close_ns: slots() }
    }

    /// The counters of the target client `id` connects to.
    pub fn counters_of(&self, id: u32) -> &TargetCounters {
        &self.per_target[self.target.endpoint_index(id)]
    }

    /// Notes that client `id` intends to close at `intended_ns`; call it
    /// before the close goes out.
    pub fn note_close(&self, id: u32, intended_ns: u64) {
        if let Some(slot) = self.close_ns.get(id as usize) {
            slot.store(intended_ns + 1, Ordering::Release);
        }
    }

    fn intended(slots: &[AtomicU64], id: u32) -> Option<u64> {
        let stored = slots.get(id as usize)?.load(Ordering::Acquire);
        stored.checked_sub(1)
    }

    /// Records `phase` at now, from `intended_ns`.
    pub fn record(&self, phase: Phase, intended_ns: u64, fresh: bool) {
        self.record_at(self.clock.now_ns(), phase, intended_ns, fresh);
    }

    /// Records `phase` observed at `now_ns`, from `intended_ns`.
    fn record_at(&self, now_ns: u64, phase: Phase, intended_ns: u64, fresh: bool) {
        let sample = Sample { phase, latency_ns: now_ns.saturating_sub(intended_ns), at_ns: now_ns, fresh };
        self.recorder.record(sample);
    }
}

/// One target endpoint's live counters.
#[derive(Debug, Default)]
pub struct TargetCounters {
    /// Clients that got into the namespace.
    pub connected: AtomicU64,
    /// Clients that did not.
    pub connect_failures: AtomicU64,
    /// Sessions that ended before the run did.
    pub ended_early: AtomicU64,
    /// `message` events its sessions received.
    pub deliveries: AtomicU64,
    /// Engine.IO pings its sessions answered.
    pub pings: AtomicU64,
}

/// How a session watches presence notices of one kind.
#[derive(Debug, Clone)]
pub enum Watch {
    /// Ignore them.
    Off,
    /// Exactly once from each id in the set's range.
    Set(IdSet),
    /// Count those from ids in the range, without identities.
    Count(Range<u32>),
}

impl Watch {
    /// `Some(fresh)` when `id` is watched, `None` when it is not.
    fn observe(&mut self, id: u32) -> Option<bool> {
        match self {
            Watch::Off => None,
            Watch::Set(set) => set.accepts(id).then(|| set.insert(id)),
            Watch::Count(range) => range.contains(&id).then_some(true),
        }
    }
}

/// Counters of one session; summed over sessions for the report.
/// `deliveries`, which every message bumps, stays first (`repr(C)`), next to
/// the hot fields of the inbox that holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[repr(C)]
pub struct Counts {
    /// `message` events received.
    pub deliveries: u64,
    /// Deliveries from publishers this session does not track.
    pub untracked: u64,
    /// Deliveries from a publisher outside this session's room.
    pub foreign: u64,
    /// `message` events whose content carries no stamp.
    pub unstamped: u64,
    /// Watched `user_joined` notices received (including repeats).
    pub join_notices: u64,
    /// Watched `user_left` notices received (including repeats).
    pub leave_notices: u64,
    /// Notices from users not watched.
    pub other_notices: u64,
    /// Messages sent.
    pub sends: u64,
    /// Send acks without an error.
    pub sends_accepted: u64,
    /// Send acks carrying an error.
    pub sends_refused: u64,
    /// `error` events by code (400, 403, 404, 413, 429, …).
    pub errors: Vec<(u64, u64)>,
    /// Messages whose id (when the target's ids are decimal strings, as the
    /// broker's are) was not above the previous message's: the room's order
    /// broken. Sessions here are each in one room, so one last id suffices.
    pub out_of_room_order: u64,
    /// Engine.IO pings answered (heartbeats kept).
    pub pings: u64,
    /// Connections dropped on purpose (at the TCP level) to reconnect.
    pub drops: u64,
    /// Reconnects the server recovered (same `pid` in the CONNECT ack).
    pub recovered: u64,
    /// Reconnects that got a fresh session instead.
    pub fresh_sessions: u64,
    /// Reconnect attempts that failed (each is retried).
    pub reconnect_failures: u64,
    /// CONNECT acks that carried a `pid` (connection state recovery on),
    /// first connects and reconnects alike.
    pub pid_acks: u64,
}

impl Counts {
    fn count_error(&mut self, code: u64) {
        match self.errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((code, 1)),
        }
    }

    /// `error` events with `code`.
    pub fn errors_with(&self, code: u64) -> u64 {
        self.errors.iter().find(|(c, _)| *c == code).map_or(0, |(_, n)| *n)
    }

    /// Messages the server took: sent minus refused, by ack, or by
    /// 400/403/413/429 `error` events when sending without acks.
    pub fn accepted_sends(&self, acked: bool) -> u64 {
        if acked {
            self.sends.saturating_sub(self.sends_refused)
        } else {
            let refused: u64 = [400, 403, 413, 429].iter().map(|&code| self.errors_with(code)).sum();
            self.sends.saturating_sub(refused)
        }
    }

    /// Adds another session's counts.
    pub fn add(&mut self, other: &Counts) {
        self.deliveries += other.deliveries;
        self.untracked += other.untracked;
        self.foreign += other.foreign;
        self.unstamped += other.unstamped;
        self.join_notices += other.join_notices;
        self.leave_notices += other.leave_notices;
        self.other_notices += other.other_notices;
        self.sends += other.sends;
        self.sends_accepted += other.sends_accepted;
        self.sends_refused += other.sends_refused;
        self.out_of_room_order += other.out_of_room_order;
        self.pings += other.pings;
        self.drops += other.drops;
        self.recovered += other.recovered;
        self.fresh_sessions += other.fresh_sessions;
        self.reconnect_failures += other.reconnect_failures;
        self.pid_acks += other.pid_acks;
        for &(code, n) in &other.errors {
            match self.errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, total)) => *total += n,
                None => self.errors.push((code, n)),
            }
        }
        self.errors.sort_unstable();
    }
}

/// Why a session stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The server closed the connection or the namespace.
    #[error("closed by server")]
    Closed,
    /// A transport error.
    #[error("transport: {0}")]
    Transport(String),
    /// A request got no answer in time.
    #[error("no ack within {0:?}")]
    AckTimeout(Duration),
    /// The server refused a join.
    #[error("join refused: {0}")]
    JoinRefused(String),
}

/// The answer to a `join_room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAck {
    /// Joined; the room now has this many members (if the ack says).
    Joined(Option<u64>),
    /// The ack carried an error.
    Refused,
}

/// A connected chat user.
#[derive(Debug)]
pub struct Session {
    /// Client id (its JWT `sub` minus the base).
    pub id: u32,
    conn: Connection,
    inbox: Inbox,
    stamp_buf: String,
    frame_buf: String,
}

/// How many message latencies the receive path collects before it records
/// them (one lock per batch). Reads bring one or two messages at a load
/// that keeps up; one that brings more records them in several batches.
const LATENCY_BATCH: usize = 4;

/// Everything the receive path updates: the session minus its connection,
/// so that a frame borrowed from the connection's buffer can be handled.
///
/// The fields every message touches come first, in this order (`repr(C)`),
/// and the latency batch is inline: with thousands of sessions each read
/// finds its session cold in the cache, and a profile showed a cache miss
/// per scattered field (the batch's heap block, the trackers', the counts).
#[derive(Debug)]
#[repr(C)]
struct Inbox {
    shared: Arc<Shared>,
    /// The id of the last message, when it was a decimal string.
    last_message_id: Option<u64>,
    /// How many of the batched latencies count toward accounting.
    fresh: u64,
    /// How many latencies are batched.
    batched: usize,
    /// Intended send times (ns) of the messages of the read being handled,
    /// recorded together as latencies from the read's time.
    intended_ns: [u64; LATENCY_BATCH],
    /// Connection state recovery: the `pid` and the last offset.
    recovery: Recovery,
    trackers: Vec<(u32, SeqTracker)>,
    /// Since the last recovered reconnect: catching up on what was missed.
    catch_up: Option<CatchUp>,
    counts: Counts,
    join_watch: Watch,
    leave_watch: Watch,
    pending_join: Option<u32>,
    join_ack: Option<JoinAck>,
}

/// What socket.io-client keeps to recover its session: the `pid` of the
/// last CONNECT ack (none when the server offers no recovery) and the last
/// event's offset.
#[derive(Debug, Default)]
struct Recovery {
    pid: Option<String>,
    offset: Option<String>,
}

impl Recovery {
    /// Keeps `offset` as the last one, reusing the buffer.
    fn note_offset(&mut self, offset: &str) {
        match &mut self.offset {
            Some(last) => {
                last.clear();
                last.push_str(offset);
            }
            None => self.offset = Some(offset.to_owned()),
        }
    }
}

/// A recovered session catching up: from the reconnect (`since_ns`) to the
/// arrival of the last message published before it.
#[derive(Debug, Clone, Copy)]
struct CatchUp {
    since_ns: u64,
    last_ns: Option<u64>,
}

impl Session {
    /// Wraps an open connection for client `id`.
    pub fn new(id: u32, conn: Connection, shared: Arc<Shared>) -> Self {
        let pid = conn.accepted().and_then(|accepted| accepted.pid.clone());
        let inbox = Inbox::new(shared, pid);
        Self { id, conn, inbox, stamp_buf: String::new(), frame_buf: String::new() }
    }

    /// Drops the connection at the TCP level, with a reset or a plain close
    /// (FIN) and no goodbye either way, as a network that goes away does;
    /// the session keeps its bookkeeping for [`Session::reconnect`].
    pub fn drop_connection(&mut self, reset: bool) {
        let conn = self.conn.take();
        if conn.is_gone() {
            return;
        }
        self.inbox.counts.pings += conn.pings();
        if reset {
            conn.abort_with_reset();
        } else {
            conn.abort();
        }
        let inbox = &mut self.inbox;
        inbox.finish_catch_up();
        inbox.counts.drops += 1;
        inbox.pending_join = None;
        inbox.join_ack = None;
    }

    /// Connects again as socket.io-client does after a drop: the CONNECT
    /// carries the last ack's `pid` and the last offset when the server
    /// offered recovery. Returns whether the server recovered the session
    /// (its ack carried the same `pid`, as socket.io-client decides
    /// `socket.recovered`); a session not recovered must join its rooms
    /// again. A failed attempt is counted and leaves the session without a
    /// connection.
    ///
    /// # Errors
    /// As [`Connection::reopen`].
    pub async fn reconnect(&mut self, token: &str) -> Result<bool, crate::client::ConnectError> {
        self.drop_connection(false);
        let shared = Arc::clone(&self.inbox.shared);
        let since_ns = shared.clock.now_ns();
        let recovery = &self.inbox.recovery;
        let resume = recovery.pid.as_deref().map(|pid| Resume { pid, offset: recovery.offset.as_deref() });
        let conn = match Connection::reopen(&shared.target, self.id, token, resume).await {
            Ok(conn) => conn,
            Err(e) => {
                self.inbox.counts.reconnect_failures += 1;
                return Err(e);
            }
        };
        let pid = conn.accepted().and_then(|accepted| accepted.pid.clone());
        let inbox = &mut self.inbox;
        let recovered = pid.is_some() && pid == inbox.recovery.pid;
        inbox.counts.pid_acks += u64::from(pid.is_some());
        inbox.recovery.pid = pid;
        if recovered {
            inbox.counts.recovered += 1;
            inbox.catch_up = Some(CatchUp { since_ns, last_ns: None });
        } else {
            inbox.counts.fresh_sessions += 1;
        }
        self.conn = conn;
        Ok(recovered)
    }

    /// Tracks the sequences of these publishers.
    pub fn track(&mut self, publishers: impl IntoIterator<Item = u32>) {
        self.inbox.trackers = publishers.into_iter().map(|id| (id, SeqTracker::default())).collect();
    }

    /// Watches `user_joined` notices like this.
    pub fn watch_joins(&mut self, watch: Watch) {
        self.inbox.join_watch = watch;
    }

    /// Watches `user_left` notices like this.
    pub fn watch_leaves(&mut self, watch: Watch) {
        self.inbox.leave_watch = watch;
    }

    /// The counters so far.
    pub fn counts(&self) -> &Counts {
        &self.inbox.counts
    }

    /// Reads and handles frames until `until` completes.
    ///
    /// # Errors
    /// [`Ended`] when the connection ends first.
    pub async fn pump_until<F: Future>(&mut self, until: F) -> Result<F::Output, Ended> {
        let mut until = pin!(until);
        loop {
            self.dispatch()?;
            tokio::select! {
                biased;
                output = &mut until => return Ok(output),
                read = self.conn.fill() => read.map_err(|e| Ended::Transport(e.to_string()))?,
            }
        }
    }

    /// Reads and handles frames until `done` holds or `timeout` passes;
    /// returns whether `done` held.
    async fn pump_while(&mut self, timeout: Duration, done: impl Fn(&Inbox) -> bool) -> Result<bool, Ended> {
        let mut deadline = pin!(tokio::time::sleep(timeout));
        loop {
            self.dispatch()?;
            if done(&self.inbox) {
                return Ok(true);
            }
            tokio::select! {
                biased;
                () = &mut deadline => return Ok(false),
                read = self.conn.fill() => read.map_err(|e| Ended::Transport(e.to_string()))?,
            }
        }
    }

    /// Handles every complete frame received so far.
    fn dispatch(&mut self) -> Result<(), Ended> {
        let mut now_ns = None;
        let handled = loop {
            match self.conn.next_buffered() {
                Ok(Some(Incoming::Text(frame))) => {
                    let now_ns = *now_ns.get_or_insert_with(|| self.inbox.shared.clock.now_ns());
                    if let Err(ended) = self.inbox.handle(frame, now_ns) {
                        break Err(ended);
                    }
                }
                Ok(Some(Incoming::Closed)) => break Err(Ended::Closed),
                Ok(None) => break Ok(()),
                Err(e) => break Err(Ended::Transport(e.to_string())),
            }
        };
        if let Some(now_ns) = now_ns {
            self.inbox.record_messages(now_ns);
        }
        handled
    }
}

impl Inbox {
    /// The inbox of a session whose CONNECT ack carried `pid` (if any).
    fn new(shared: Arc<Shared>, pid: Option<String>) -> Self {
        let counts = Counts { pid_acks: u64::from(pid.is_some()), ..Counts::default() };
        Inbox {
            shared,
            trackers: Vec::new(),
            join_watch: Watch::Off,
            leave_watch: Watch::Off,
            counts,
            pending_join: None,
            join_ack: None,
            batched: 0,
            intended_ns: [0; LATENCY_BATCH],
            fresh: 0,
            last_message_id: None,
            recovery: Recovery { pid, offset: None },
            catch_up: None,
        }
    }

    /// Handles one received frame, which arrived at `now_ns`.
    fn handle(&mut self, frame: &str, now_ns: u64) -> Result<(), Ended> {
        match wire::scan(frame, &self.shared.target.namespace) {
            Packet::Event { name, args, .. } => self.on_event(name, args, now_ns),
            Packet::Ack { id, args } => self.on_ack(id, args),
            Packet::Close | Packet::Disconnected | Packet::ConnectError(_) => return Err(Ended::Closed),
            _ => {}
        }
        Ok(())
    }

    fn on_event(&mut self, name: &str, args: &str, now_ns: u64) {
        // With recovery on, a string last argument is the packet's offset,
        // not part of the event (socket.io-client keeps it as `_lastOffset`).
        let args = if self.recovery.pid.is_some() {
            let (args, offset) = wire::split_offset(args);
            if let Some(offset) = offset {
                self.recovery.note_offset(offset);
            }
            args
        } else {
            args
        };
        match name {
            "message" => self.on_message(args, now_ns),
            "user_joined" => self.on_notice(args, Phase::JoinNotice, now_ns),
            "user_left" => self.on_notice(args, Phase::LeaveNotice, now_ns),
            "error" => {
                let code = wire::number_field(args, keys::CODE).unwrap_or(0);
                self.counts.count_error(code);
            }
            _ => {}
        }
    }

    /// Records how long the last recovery took to catch up, if it had
    /// anything to catch up on.
    fn finish_catch_up(&mut self) {
        if let Some(CatchUp { since_ns, last_ns: Some(last_ns) }) = self.catch_up.take() {
            self.shared.record_at(last_ns, Phase::Replay, since_ns, true);
        }
    }

    fn on_message(&mut self, args: &str, now_ns: u64) {
        self.counts.deliveries += 1;
        if let Some(id) = wire::string_field(args, keys::ID).and_then(decimal) {
            if self.last_message_id.is_some_and(|last| id <= last) {
                self.counts.out_of_room_order += 1;
            }
            self.last_message_id = Some(id);
        }
        // The stamp is the content's head; the padding after it is not scanned.
        let Some(stamp) = wire::string_start(args, keys::CONTENT).and_then(Stamp::parse) else {
            self.counts.unstamped += 1;
            return;
        };
        let fresh = if self.trackers.is_empty() {
            self.counts.untracked += 1;
            false
        } else {
            match self.trackers.iter_mut().find(|(publisher, _)| *publisher == stamp.publisher) {
                Some((_, tracker)) => tracker.observe(stamp.seq) != Arrival::Duplicate,
                None => {
                    self.counts.foreign += 1;
                    false
                }
            }
        };
        if fresh
            && let Some(catch_up) = &mut self.catch_up
            && stamp.intended_ns < catch_up.since_ns
        {
            catch_up.last_ns = Some(now_ns);
        }
        // The latency is taken in `record_messages`, against the read's time.
        if self.batched == LATENCY_BATCH {
            self.record_messages(now_ns);
        }
        self.intended_ns[self.batched] = stamp.intended_ns;
        self.batched += 1;
        self.fresh += u64::from(fresh);
    }

    /// Records the messages of the read that arrived at `now_ns`.
    fn record_messages(&mut self, now_ns: u64) {
        let batch = &mut self.intended_ns[..self.batched];
        for intended in &mut *batch {
            *intended = now_ns.saturating_sub(*intended);
        }
        self.shared.recorder.record_batch(Phase::Message, now_ns, batch, self.fresh);
        self.batched = 0;
        self.fresh = 0;
    }

    fn on_notice(&mut self, args: &str, phase: Phase, now_ns: u64) {
        let id = wire::number_field(args, keys::USER_ID).and_then(|sub| self.shared.target.minter.id_of(sub));
        let watch = if phase == Phase::JoinNotice { &mut self.join_watch } else { &mut self.leave_watch };
        let Some((id, fresh)) = id.and_then(|id| watch.observe(id).map(|fresh| (id, fresh))) else {
            self.counts.other_notices += 1;
            return;
        };
        let slots = if phase == Phase::JoinNotice { &self.shared.join_ns } else { &self.shared.close_ns };
        if phase == Phase::JoinNotice {
            self.counts.join_notices += 1;
        } else {
            self.counts.leave_notices += 1;
        }
        if let Some(intended) = Shared::intended(slots, id) {
            self.shared.record_at(now_ns, phase, intended, fresh);
        }
    }

    fn on_ack(&mut self, id: u32, args: &str) {
        if self.pending_join == Some(id) {
            self.pending_join = None;
            self.join_ack = Some(if wire::has_field(args, keys::ERROR) {
                JoinAck::Refused
            } else {
                JoinAck::Joined(wire::number_field(args, keys::MEMBERS))
            });
        } else if wire::has_field(args, keys::ERROR) {
            self.counts.sends_refused += 1;
        } else {
            self.counts.sends_accepted += 1;
        }
    }
}

/// A string of decimal digits only, as a number.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    wire::parse_leading_u64(text)
}

impl Session {
    /// Sends one text frame as it is.
    ///
    /// # Errors
    /// [`Ended::Transport`] on a socket error.
    pub async fn send_text(&mut self, frame: &str) -> Result<(), Ended> {
        self.conn.send(frame).await.map_err(|e| Ended::Transport(e.to_string()))
    }

    /// Handles whatever has arrived, reading only what is ready now.
    ///
    /// # Errors
    /// [`Ended`] when the connection ended.
    pub async fn poll_incoming(&mut self) -> Result<(), Ended> {
        self.pump_until(tokio::task::yield_now()).await
    }

    /// The connection, for what the session does not offer.
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Joins `room`, intended at `intended_ns`, and waits for the ack.
    ///
    /// # Errors
    /// [`Ended`] if the connection ends, the ack does not come within
    /// `timeout`, or the join is refused.
    pub async fn join(
        &mut self,
        room: &str,
        intended_ns: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, Ended> {
        let shared = Arc::clone(&self.inbox.shared);
        if let Some(slot) = shared.join_ns.get(self.id as usize) {
            slot.store(intended_ns + 1, Ordering::Release);
        }
        shared.record(Phase::ScheduleLag, intended_ns, false);
        let ack = self.conn.next_ack_id();
        self.inbox.pending_join = Some(ack);
        self.inbox.join_ack = None;
        let frame = shared.target.namespace.join_frame(Some(ack), room);
        self.conn.send(&frame).await.map_err(|e| Ended::Transport(e.to_string()))?;
        if !self.pump_while(timeout, |inbox| inbox.join_ack.is_some()).await? {
            return Err(Ended::AckTimeout(timeout));
        }
        shared.record(Phase::JoinAck, intended_ns, true);
        match self.inbox.join_ack {
            Some(JoinAck::Joined(members)) => Ok(members),
            _ => Err(Ended::JoinRefused(room.to_owned())),
        }
    }

    /// Publishes to `room` on `schedule`, each message `size` bytes and
    /// stamped with its intended time; with `ack`, each asks for an ack.
    ///
    /// # Errors
    /// [`Ended`] if the connection ends.
    pub async fn publish(
        &mut self,
        room: &str,
        schedule: Schedule,
        size: usize,
        ack: bool,
    ) -> Result<(), Ended> {
        let shared = Arc::clone(&self.inbox.shared);
        let clock = shared.clock;
        for seq in 0..schedule.count() {
            let intended = schedule.at(seq).expect("seq < count");
            self.pump_until(clock.sleep_until(intended)).await?;
            shared.record(Phase::ScheduleLag, intended, false);
            Stamp { publisher: self.id, seq, intended_ns: intended }.write(&mut self.stamp_buf, size);
            let ack_id = ack.then(|| self.conn.next_ack_id());
            shared.target.namespace.write_send_message_frame(
                &mut self.frame_buf,
                ack_id,
                room,
                &self.stamp_buf,
            );
            self.conn.send(&self.frame_buf).await.map_err(|e| Ended::Transport(e.to_string()))?;
            self.inbox.counts.sends += 1;
        }
        Ok(())
    }

    /// Waits (reading) until every send has its ack, or `timeout`.
    ///
    /// # Errors
    /// [`Ended`] if the connection ends.
    pub async fn await_send_acks(&mut self, timeout: Duration) -> Result<bool, Ended> {
        self.pump_while(timeout, |inbox| {
            let counts = &inbox.counts;
            counts.sends_accepted + counts.sends_refused >= counts.sends
        })
        .await
    }

    /// Closes like a real client, noting the intended time for the
    /// others' `user_left` latency. Returns the session's final state.
    pub fn leave(self, intended_ns: u64, abrupt: bool) -> SessionRecord {
        let shared = Arc::clone(&self.inbox.shared);
        shared.note_close(self.id, intended_ns);
        shared.record(Phase::ScheduleLag, intended_ns, false);
        let (conn, report) = self.into_parts();
        if abrupt {
            conn.abort();
        } else {
            // Closing may wait on the server; keep it off the caller's clock.
            tokio::spawn(async move { conn.close(&shared.target.namespace, GOODBYE_LINGER).await });
        }
        report
    }

    /// Splits into the connection and the final state.
    pub fn into_parts(self) -> (Connection, SessionRecord) {
        let mut inbox = self.inbox;
        inbox.counts.pings += self.conn.pings();
        let counters = inbox.shared.counters_of(self.id);
        counters.deliveries.fetch_add(inbox.counts.deliveries, Ordering::Relaxed);
        counters.pings.fetch_add(inbox.counts.pings, Ordering::Relaxed);
        inbox.finish_catch_up();
        let report = SessionRecord {
            id: self.id,
            trackers: inbox.trackers,
            join_watch: inbox.join_watch,
            leave_watch: inbox.leave_watch,
            counts: inbox.counts,
        };
        (self.conn, report)
    }

    /// The final state of a client whose run is over: it leaves like
    /// `socket.disconnect()` (Socket.IO DISCONNECT, WebSocket close) and waits
    /// up to [`GOODBYE_LINGER`] for the server's close, so the goodbye is read before
    /// the process may exit and reset the connection. Dropping it instead would
    /// look like a lost connection to a server with connection state recovery,
    /// which then keeps the session in its rooms for the recovery window.
    pub async fn finish(self) -> SessionRecord {
        let shared = Arc::clone(&self.inbox.shared);
        let (conn, report) = self.into_parts();
        conn.close(&shared.target.namespace, GOODBYE_LINGER).await;
        report
    }

    /// The final state, dropping the connection.
    pub fn into_record(self) -> SessionRecord {
        self.into_parts().1
    }

    /// The shared run state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inbox.shared
    }
}

/// How long a client that leaves waits for the server to close after its
/// goodbye (DISCONNECT and WebSocket close).
const GOODBYE_LINGER: Duration = Duration::from_secs(1);

/// What a session leaves behind for accounting.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Client id.
    pub id: u32,
    /// Per-publisher sequence trackers.
    pub trackers: Vec<(u32, SeqTracker)>,
    /// `user_joined` bookkeeping.
    pub join_watch: Watch,
    /// `user_left` bookkeeping.
    pub leave_watch: Watch,
    /// Counters.
    pub counts: Counts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Target;
    use crate::config::TargetOptions;
    use crate::schedule::Clock;

    #[tokio::test]
    async fn every_message_of_a_long_read_is_counted_once_with_its_latency() {
        let options =
            TargetOptions { target: vec!["http://127.0.0.1:9".to_owned()], ..TargetOptions::default() };
        let target = Target::resolve(&options, 4).await.expect("resolves");
        let shared = Arc::new(Shared::new(Clock::start(), target, 4));
        let mut inbox = Inbox::new(Arc::clone(&shared), Some("p".to_owned()));
        inbox.trackers = vec![(1, SeqTracker::default())];
        // More messages in one read than one latency batch holds.
        let messages = 3 * LATENCY_BATCH as u64 + 1;
        let now_ns = 5_000_000;
        for seq in 0..messages {
            let content = format!(r#"1:{seq}:{}|x\"x"#, seq * 1_000_000);
            let id = seq + 10;
            // The broker's field order, and another.
            let frame = if seq % 2 == 0 {
                format!(
                    r#"42/api/v1/chat,["message",{{"id":"{id}","roomId":"r","content":"{content}","senderId":1}},"{seq}-0"]"#
                )
            } else {
                format!(
                    r#"42/api/v1/chat,["message",{{"content":"{content}","roomId":"r","id":"{id}"}},"{seq}-0"]"#
                )
            };
            inbox.handle(&frame, now_ns).expect("a message");
        }
        // A repeat of seq 0, whose id goes back too.
        inbox
            .handle(r#"42/api/v1/chat,["message",{"id":"10","content":"1:0:0|"}]"#, now_ns)
            .expect("a message");
        inbox.record_messages(now_ns);
        assert_eq!(inbox.counts.deliveries, messages + 1);
        assert_eq!(inbox.counts.out_of_room_order, 1);
        let tally = inbox.trackers[0].1.tally(messages);
        assert_eq!((tally.unique, tally.lost, tally.duplicated), (messages, 0, 1));
        assert_eq!(shared.recorder.count(Phase::Message), messages + 1);
        assert_eq!(shared.recorder.fresh(Phase::Message), messages);
        let data =
            shared.recorder.snapshot().into_iter().find(|data| data.phase == Phase::Message).expect("phase");
        // Latencies are the read's time minus each message's intended time (µs).
        assert_eq!(data.histogram.min(), 1, "sent after the read: clamped");
        assert!(data.histogram.equivalent(data.histogram.max(), 5_000), "{}", data.histogram.max());
        assert_eq!(inbox.recovery.offset.as_deref(), Some(format!("{}-0", messages - 1).as_str()));
    }

    #[test]
    fn only_all_digit_ids_are_ordered() {
        assert_eq!(decimal("1732960000123456"), Some(1_732_960_000_123_456));
        assert_eq!(decimal("0"), Some(0));
        // A UUID that happens to start with digits is not a number.
        assert_eq!(decimal("3f2a9c1e-0000"), None);
        assert_eq!(decimal(""), None);
        assert_eq!(decimal("99999999999999999999"), None, "overflow is no id");
        let mut total = Counts { out_of_room_order: 1, ..Counts::default() };
        total.add(&Counts { out_of_room_order: 2, ..Counts::default() });
        assert_eq!(total.out_of_room_order, 3);
    }
}
