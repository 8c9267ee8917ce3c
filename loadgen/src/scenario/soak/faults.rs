//! The faulty clients of the soak, one async function per kind, and the
//! drivers that start them on open-loop schedules.
//!
//! Every faulty client has a bounded life and ends by naming its outcome
//! ("closed by server", "refused: Unauthorized", …), which is tallied per
//! kind; none of them counts toward the well-behaved clients' accounting, and
//! a failure to connect is an outcome here, not a loss. Faulty clients never
//! send into a chatter room (they may join one, so that chatters share rooms
//! with them): chatters count every message in their room as a publisher's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::garbage::{self, Garbage};
use crate::client::{ConnectError, Connection, Tuning};
use crate::report::soak::FaultTally;
use crate::scenario::{Harness, room_name};
use crate::schedule::{Schedule, duration_ns};
use crate::session::{Ended, Session};
use crate::token::Flaw;

/// Outcome of a bad-token client that got into the namespace.
pub const ADMITTED: &str = "ADMITTED";

/// Bytes of content a stalled reader sends itself per message (under the
/// broker's default 4096-byte limit).
const STALL_MESSAGE_BYTES: usize = 4000;
/// Messages a stalled reader sends at once (under the default burst of 200).
const STALL_BURST: u64 = 150;
/// Messages per second a stalled reader sends after its burst (under the
/// default limit of 100/s).
const STALL_RATE: f64 = 90.0;
/// `SO_RCVBUF` of a stalled reader, so that it backs up into the server fast.
const STALL_RECV_BUFFER: u32 = 4096;
/// Sends a flooder makes before it gives up on being disconnected.
const FLOOD_MAX_SENDS: u64 = 20_000;
/// Frames a flooder writes between looks at what came back.
const FLOOD_BATCH: u64 = 32;
/// How long a storm's clients stay connected once all are in.
const STORM_HOLD: Duration = Duration::from_millis(300);

/// A kind of faulty client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Joins a chatter room, then drops the TCP connection without a close.
    Vanish,
    /// Joins a chatter room, then never reads or answers a ping again.
    Silent,
    /// Joins a chatter room, stops reading, and sends itself large messages.
    Stall,
    /// Sends over the rate limit until disconnected.
    Flood,
    /// Sends something malformed ([`garbage::Garbage`]).
    Garbage,
    /// An expired token.
    Expired,
    /// A token whose `jti` is revoked.
    Revoked,
    /// A token signed with the wrong key.
    Forged,
    /// One client of a reconnect storm.
    Storm,
}

impl Kind {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vanish => "vanish",
            Kind::Silent => "silent",
            Kind::Stall => "stall",
            Kind::Flood => "flood",
            Kind::Garbage => "garbage",
            Kind::Expired => "expired token",
            Kind::Revoked => "revoked token",
            Kind::Forged => "forged token",
            Kind::Storm => "storm",
        }
    }

    /// Whether the target must refuse every client of this kind.
    pub fn must_be_refused(self) -> bool {
        matches!(self, Kind::Expired | Kind::Revoked | Kind::Forged)
    }
}

/// Shared by every faulty client of a run.
#[derive(Debug)]
pub struct Faults {
    /// The run's harness (target, clock, cancellation).
    pub harness: Arc<Harness>,
    /// Chatter rooms, which vanishing, silent, stalled and storm clients join.
    pub rooms: u32,
    /// Longest life of a client waiting for the server to act.
    pub timeout: Duration,
    /// The `jti` the target revokes.
    pub revoked_jti: Option<String>,
    /// The kinds of garbage sent, taken in turn.
    pub garbage: Vec<Garbage>,
    next_id: AtomicU32,
    tallies: Mutex<BTreeMap<&'static str, FaultTally>>,
}

impl Faults {
    /// Faulty clients get ids from `first_id` on (past the chatters').
    pub fn new(
        harness: Arc<Harness>,
        rooms: u32,
        timeout: Duration,
        revoked_jti: Option<String>,
        garbage: Vec<Garbage>,
        first_id: u32,
    ) -> Self {
        Self {
            harness,
            rooms: rooms.max(1),
            timeout,
            revoked_jti,
            garbage,
            next_id: AtomicU32::new(first_id),
            tallies: Mutex::new(BTreeMap::new()),
        }
    }

    /// The tallies so far, by kind.
    pub fn tallies(&self) -> BTreeMap<String, FaultTally> {
        self.tallies.lock().iter().map(|(kind, tally)| ((*kind).to_owned(), tally.clone())).collect()
    }

    fn started(&self, kind: Kind) -> u32 {
        self.tallies.lock().entry(kind.name()).or_default().started += 1;
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, kind: Kind, outcome: String) {
        tracing::debug!(kind = kind.name(), %outcome, "faulty client done");
        *self.tallies.lock().entry(kind.name()).or_default().outcomes.entry(outcome).or_default() += 1;
    }

    fn token(&self, id: u32) -> Result<String, String> {
        self.harness.shared.target.minter.mint(id).map_err(|e| format!("minting: {e}"))
    }

    fn chatter_room(&self, n: u64) -> String {
        room_name(u32::try_from(n % u64::from(self.rooms)).unwrap_or(0))
    }

    /// Connects with a valid token (and a tuned socket); the outcome text
    /// when that fails.
    async fn open(&self, id: u32, tuning: &Tuning) -> Result<Session, String> {
        let token = self.token(id)?;
        let target = &self.harness.shared.target;
        let connect = async {
            let mut conn = Connection::upgrade(target, id, Some(&token), tuning).await?;
            conn.connect_namespace(target, Some(&token)).await?;
            Ok::<_, ConnectError>(conn)
        };
        match tokio::time::timeout(target.connect_timeout(), connect).await {
            Ok(Ok(conn)) => Ok(Session::new(id, conn, Arc::clone(&self.harness.shared))),
            Ok(Err(e)) => Err(format!("connect failed: {}", e.kind())),
            Err(_) => Err("connect failed: timeout".to_owned()),
        }
    }

    async fn join(&self, session: &mut Session, room: &str) -> Result<(), String> {
        let now = self.harness.clock().now_ns();
        let timeout = self.harness.shared.target.connect_timeout();
        session.join(room, now, timeout).await.map(|_| ()).map_err(|e| format!("join failed: {e}"))
    }
}

/// Starts clients of `kind` at `rate` per second from `start_ns` for
/// `duration`, and waits until every one of them is done.
pub async fn drive(faults: Arc<Faults>, kind: Kind, rate: f64, start_ns: u64, duration: Duration) {
    if rate <= 0.0 {
        return;
    }
    let schedule = Schedule::for_duration(start_ns, rate, duration);
    let clock = faults.harness.clock();
    let mut clients = JoinSet::new();
    for n in 0..schedule.count() {
        let Some(at) = schedule.at(n) else { break };
        clock.sleep_until(at).await;
        let faults = Arc::clone(&faults);
        clients.spawn(async move {
            let id = faults.started(kind);
            let outcome = run_one(&faults, kind, id, n).await;
            faults.record(kind, outcome);
        });
        // Reap as we go, so a long soak holds no finished tasks.
        while clients.try_join_next().is_some() {}
    }
    while clients.join_next().await.is_some() {}
}

/// Starts a storm of `size` clients every `every` from `start_ns` for
/// `duration`, and waits for the last storm to end.
pub async fn drive_storms(
    faults: Arc<Faults>,
    size: u32,
    every: Duration,
    start_ns: u64,
    duration: Duration,
) {
    if size == 0 || every.is_zero() {
        return;
    }
    let clock = faults.harness.clock();
    let end_ns = start_ns + duration_ns(duration);
    let mut storms = JoinSet::new();
    let mut at = start_ns + duration_ns(every) / 2;
    let mut n = 0u64;
    while at < end_ns {
        clock.sleep_until(at).await;
        storms.spawn(storm(Arc::clone(&faults), size, n));
        at += duration_ns(every);
        n += 1;
    }
    while storms.join_next().await.is_some() {}
}

async fn run_one(faults: &Faults, kind: Kind, id: u32, n: u64) -> String {
    match kind {
        Kind::Vanish => vanish(faults, id, n).await,
        Kind::Silent => silent(faults, id, n).await,
        Kind::Stall => stall(faults, id, n).await,
        Kind::Flood => flood(faults, id).await,
        Kind::Garbage => {
            let Some(&kind) = faults.garbage.get((n % faults.garbage.len().max(1) as u64) as usize) else {
                return "not run: every kind of garbage skipped".to_owned();
            };
            garbage::send(faults, kind, id, n).await
        }
        Kind::Expired => bad_token(faults, id, Flaw::Expired).await,
        Kind::Revoked => match faults.revoked_jti.clone() {
            Some(jti) => bad_token(faults, id, Flaw::Revoked(&jti)).await,
            None => "not run: no --revoked-jti".to_owned(),
        },
        Kind::Forged => bad_token(faults, id, Flaw::Forged).await,
        Kind::Storm => "storm clients start together".to_owned(),
    }
}

/// Joins a chatter room, stays a moment, and drops the connection with a
/// FIN (even `n`) or a reset (odd `n`), never a close.
async fn vanish(faults: &Faults, id: u32, n: u64) -> String {
    let mut session = match faults.open(id, &Tuning::default()).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    if let Err(outcome) = faults.join(&mut session, &faults.chatter_room(n)).await {
        return outcome;
    }
    let stay = Duration::from_millis(50 + (n % 10) * 50);
    if let Err(e) = session.pump_until(tokio::time::sleep(stay)).await {
        return format!("ended before vanishing: {e}");
    }
    let (conn, _) = session.into_parts();
    if n.is_multiple_of(2) {
        conn.abort();
        "dropped with FIN".to_owned()
    } else {
        conn.abort_with_reset();
        "dropped with reset".to_owned()
    }
}

/// Joins a chatter room, then reads nothing and answers no ping: the
/// server must close it within its heartbeat (pingInterval + pingTimeout).
async fn silent(faults: &Faults, id: u32, n: u64) -> String {
    let mut session = match faults.open(id, &Tuning::default()).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    if let Err(outcome) = faults.join(&mut session, &faults.chatter_room(n)).await {
        return outcome;
    }
    let (mut conn, _) = session.into_parts();
    let heartbeat = conn.heartbeat().unwrap_or(faults.timeout);
    let bound = heartbeat + heartbeat / 2 + Duration::from_secs(2);
    if conn.wait_closed(bound).await {
        "closed by server".to_owned()
    } else {
        format!("STILL OPEN after {bound:?} without a pong")
    }
}

/// Joins a chatter room and a room of its own, stops reading, and sends
/// itself 4 KB messages (a burst, then steadily under the rate limit): its
/// outbox on the server overflows and the server must cut it off.
async fn stall(faults: &Faults, id: u32, n: u64) -> String {
    let tuning = Tuning { recv_buffer: Some(STALL_RECV_BUFFER) };
    let mut session = match faults.open(id, &tuning).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    let own_room = format!("soak-stall-{id}");
    for room in [faults.chatter_room(n), own_room.clone()] {
        if let Err(outcome) = faults.join(&mut session, &room).await {
            return outcome;
        }
    }
    let namespace = &faults.harness.shared.target.namespace;
    let frame = namespace.send_message_frame(None, &own_room, &"s".repeat(STALL_MESSAGE_BYTES));
    let (mut conn, _) = session.into_parts();
    let clock = faults.harness.clock();
    let start = clock.now_ns();
    let steady = Schedule::for_duration(start, STALL_RATE, faults.timeout);
    let mut sent = 0u64;
    for k in 0..STALL_BURST + steady.count() {
        if k >= STALL_BURST {
            let Some(at) = steady.at(k - STALL_BURST) else { break };
            clock.sleep_until(at).await;
        }
        // A write that cannot complete means the server stopped reading us,
        // which also ends it: only a closed connection is an answer.
        match tokio::time::timeout(faults.timeout, conn.send(&frame)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => return "cut off by server".to_owned(),
            Err(_) => break,
        }
    }
    if conn.wait_closed(Duration::from_secs(1)).await {
        "cut off by server".to_owned()
    } else {
        format!("STILL OPEN after {sent} unread messages")
    }
}

/// Joins a room of its own and sends messages without pause: the server
/// must refuse them (429) and then disconnect it.
async fn flood(faults: &Faults, id: u32) -> String {
    let mut session = match faults.open(id, &Tuning::default()).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    let own_room = format!("soak-flood-{id}");
    if let Err(outcome) = faults.join(&mut session, &own_room).await {
        return outcome;
    }
    let frame = faults.harness.shared.target.namespace.send_message_frame(None, &own_room, "flood");
    let deadline = tokio::time::Instant::now() + faults.timeout;
    let mut sent = 0u64;
    let mut ended = loop {
        if sent >= FLOOD_MAX_SENDS || tokio::time::Instant::now() >= deadline {
            break None;
        }
        let mut batch = Ok(());
        for _ in 0..FLOOD_BATCH {
            batch = session.send_text(&frame).await;
            if batch.is_err() {
                break;
            }
            sent += 1;
        }
        if let Err(ended) = batch.and(session.poll_incoming().await) {
            break Some(ended);
        }
    };
    if ended.is_none() {
        // Whatever is still in flight shows whether the server pushed back.
        ended = session.pump_until(tokio::time::sleep(Duration::from_millis(500))).await.err();
    }
    let refused = session.counts().errors_with(429);
    match ended {
        Some(Ended::Closed | Ended::Transport(_)) => {
            let got_429 = if refused > 0 { "after 429" } else { "WITHOUT a 429" };
            format!("disconnected {got_429}")
        }
        Some(other) => format!("ended: {other}"),
        None if refused > 0 => "refused with 429 but NOT disconnected".to_owned(),
        None => format!("NOT limited after {sent} sends"),
    }
}

/// Connects with a flawed token: the server must refuse it.
async fn bad_token(faults: &Faults, id: u32, flaw: Flaw<'_>) -> String {
    let target = &faults.harness.shared.target;
    let token = match target.minter.mint_flawed(id, flaw) {
        Ok(token) => token,
        Err(e) => return format!("minting: {e}"),
    };
    match Connection::open(target, id, &token).await {
        Ok(conn) => {
            conn.abort();
            ADMITTED.to_owned()
        }
        Err(e) => e.kind(),
    }
}

/// `size` clients connect at once and join a chatter room; once every one
/// is in (or failed), they hold a moment and all leave at once, half with a
/// clean close and half by dropping the connection.
async fn storm(faults: Arc<Faults>, size: u32, n: u64) {
    let arrived = Arc::new(AtomicU32::new(0));
    let (all_in_tx, all_in) = watch::channel(false);
    let all_in_tx = Arc::new(all_in_tx);
    let mut clients = JoinSet::new();
    for k in 0..size {
        let (faults, arrived, all_in_tx, mut all_in) =
            (Arc::clone(&faults), Arc::clone(&arrived), Arc::clone(&all_in_tx), all_in.clone());
        clients.spawn(async move {
            let id = faults.started(Kind::Storm);
            let room = faults.chatter_room(n + u64::from(k));
            let session = match faults.open(id, &Tuning::default()).await {
                Ok(mut session) => faults.join(&mut session, &room).await.map(|()| session),
                Err(outcome) => Err(outcome),
            };
            if arrived.fetch_add(1, Ordering::AcqRel) + 1 == size {
                all_in_tx.send_replace(true);
            }
            // Everyone waits for everyone (still answering pings), so that
            // the leaving is a storm too.
            let everyone = async move {
                let _ = all_in.wait_for(|all| *all).await;
            };
            let outcome = match session {
                Ok(mut session) => {
                    let held = match session.pump_until(everyone).await {
                        Ok(()) => session.pump_until(tokio::time::sleep(STORM_HOLD)).await,
                        Err(e) => Err(e),
                    };
                    match held {
                        Ok(()) if k.is_multiple_of(2) => {
                            session.leave(faults.harness.clock().now_ns(), false);
                            "connected, closed".to_owned()
                        }
                        Ok(()) => {
                            session.into_parts().0.abort();
                            "connected, dropped".to_owned()
                        }
                        Err(e) => format!("ended early: {e}"),
                    }
                }
                Err(outcome) => outcome,
            };
            faults.record(Kind::Storm, outcome);
        });
    }
    while clients.join_next().await.is_some() {}
}
