//! `broadcast`: R rooms of S members, P publishers per room at a fixed
//! open-loop rate.
//!
//! Every member connects (ramped), joins its room and waits; then all
//! publishers start together and publish for the duration, each message
//! stamped with its intended send time. Latency runs from that time to each
//! delivery, at every member including the sender. Afterwards each member's
//! sequence trackers are tallied against what its room's publishers had
//! accepted (sent minus refused). The member script is shared with `mixed`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Harness, Layout, Outcome, mint_tokens, room_counters, room_name};
use crate::accounting::Tally;
use crate::config::BroadcastConfig;
use crate::schedule::{Schedule, duration_ns};
use crate::session::{Ended, Session, SessionRecord, Watch};
use crate::stats::Phase;

/// Live per-room counters the orchestrator watches.
#[derive(Debug)]
pub(crate) struct Book {
    /// Members that joined, per room.
    pub joined: Box<[AtomicU64]>,
    /// Sends the target accepted, per room.
    pub accepted: Box<[AtomicU64]>,
    /// Publishers that began publishing.
    pub publishing: AtomicU64,
    /// Publishers that finished (acks in, or gave up).
    pub published: AtomicU64,
    /// Σ (members − 1) over join acks: the `user_joined` notices owed.
    pub owed_join_notices: AtomicU64,
    /// Join acks that said how many members the room has.
    pub counted_joins: AtomicU64,
}

impl Book {
    pub(crate) fn new(rooms: u32) -> Self {
        Self {
            joined: room_counters(rooms),
            accepted: room_counters(rooms),
            publishing: AtomicU64::new(0),
            published: AtomicU64::new(0),
            owed_join_notices: AtomicU64::new(0),
            counted_joins: AtomicU64::new(0),
        }
    }

    /// Σ over rooms of accepted sends × joined members: deliveries owed.
    pub(crate) fn owed_deliveries(&self) -> u64 {
        self.accepted
            .iter()
            .zip(self.joined.iter())
            .map(|(accepted, joined)| accepted.load(Ordering::Relaxed) * joined.load(Ordering::Relaxed))
            .sum()
    }
}

/// What members publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishPlan {
    pub publishers_per_room: u32,
    pub rate: f64,
    pub duration: Duration,
    pub size: usize,
    pub ack: bool,
}

/// One member's script inputs.
#[derive(Debug, Clone)]
pub(crate) struct MemberSpec {
    pub id: u32,
    pub token: String,
    pub connect_at: u64,
    pub join_watch: Watch,
    pub leave_watch: Watch,
}

/// What one member task returns.
#[derive(Debug)]
pub(crate) struct MemberResult {
    pub id: u32,
    /// `Some(members)` once joined.
    pub joined: Option<Option<u64>>,
    pub publisher: bool,
    pub record: Option<SessionRecord>,
}

/// Connect, join, wait for the start, publish if a publisher, then listen
/// until the run is cancelled.
pub(crate) async fn member(
    harness: Arc<Harness>,
    book: Arc<Book>,
    layout: Layout,
    plan: PublishPlan,
    spec: MemberSpec,
    mut start: watch::Receiver<Option<u64>>,
) -> MemberResult {
    let id = spec.id;
    let room = layout.room_of(id);
    let publisher = layout.position_of(id) < plan.publishers_per_room;
    let mut result = MemberResult { id, joined: None, publisher, record: None };
    let Some(mut session) = harness.connect(id, &spec.token, spec.connect_at).await else {
        harness.settled.fetch_add(1, Ordering::Relaxed);
        return result;
    };
    session.track(layout.first_members(room, plan.publishers_per_room));
    session.watch_joins(spec.join_watch);
    session.watch_leaves(spec.leave_watch);
    let script = async {
        let now = harness.clock().now_ns();
        let joined = join_room(&harness, &book, &mut session, room, now).await;
        harness.settled.fetch_add(1, Ordering::Relaxed);
        result.joined = Some(joined?);
        let start_ns = session
            .pump_until(async { start.wait_for(Option::is_some).await.map(|s| s.unwrap_or(0)) })
            .await?;
        let Ok(start_ns) = start_ns else { return Ok(()) };
        if publisher {
            let slot =
                u64::from(room) * u64::from(plan.publishers_per_room) + u64::from(layout.position_of(id));
            let slots = u64::from(layout.rooms) * u64::from(plan.publishers_per_room);
            let schedule = Schedule::for_duration(start_ns, plan.rate, plan.duration).staggered(slot, slots);
            publish(&harness, &book, &mut session, room, schedule, plan).await?;
        }
        session.pump_until(std::future::pending::<()>()).await
    };
    let ended: Option<Ended> = tokio::select! {
        outcome = script => outcome.err(),
        () = harness.cancel.cancelled() => None,
    };
    if let Some(reason) = &ended {
        harness.note_ended(id, reason);
    }
    result.record = Some(session.into_record());
    result
}

/// Joins `room`, intended at `intended_ns`, and books the result.
pub(crate) async fn join_room(
    harness: &Harness,
    book: &Book,
    session: &mut Session,
    room: u32,
    intended_ns: u64,
) -> Result<Option<u64>, Ended> {
    let members =
        session.join(&room_name(room), intended_ns, harness.shared.target.connect_timeout()).await?;
    book.joined[room as usize].fetch_add(1, Ordering::Relaxed);
    if let Some(members) = members {
        book.owed_join_notices.fetch_add(members.saturating_sub(1), Ordering::Relaxed);
        book.counted_joins.fetch_add(1, Ordering::Relaxed);
    }
    Ok(members)
}

async fn publish(
    harness: &Harness,
    book: &Book,
    session: &mut Session,
    room: u32,
    schedule: Schedule,
    plan: PublishPlan,
) -> Result<(), Ended> {
    book.publishing.fetch_add(1, Ordering::Relaxed);
    let published = session.publish(&room_name(room), schedule, plan.size, plan.ack).await;
    let acked = match (&published, plan.ack) {
        (Ok(()), true) => session.await_send_acks(harness.options.drain).await.map(|_| ()),
        _ => Ok(()),
    };
    book.accepted[room as usize].fetch_add(session.counts().accepted_sends(plan.ack), Ordering::Relaxed);
    book.published.fetch_add(1, Ordering::Relaxed);
    published.and(acked)
}

/// Runs the `broadcast` scenario.
///
/// # Errors
/// Token minting failed, or a client task panicked.
pub async fn run(harness: &Arc<Harness>, config: &BroadcastConfig) -> anyhow::Result<Outcome> {
    let layout = Layout::new(config.clients, config.rooms);
    let plan = PublishPlan {
        publishers_per_room: config.publishers.min(layout.room_size),
        rate: config.rate,
        duration: config.duration,
        size: config.size,
        ack: !config.no_ack,
    };
    let book = Arc::new(Book::new(layout.rooms));
    let (start_tx, start_rx) = watch::channel(None);
    let tokens = mint_tokens(&harness.shared.target.minter, 0..config.clients).await?;
    let ramp = Schedule::at_rate(harness.next_start(), config.connect_rate, u64::from(config.clients));
    harness.begin_stage("setup");
    let mut tasks = JoinSet::new();
    for (id, token) in (0..config.clients).zip(tokens) {
        let room = layout.members(layout.room_of(id));
        let spec = MemberSpec {
            id,
            token,
            connect_at: ramp.at(u64::from(id)).expect("id < clients"),
            join_watch: Watch::Set(crate::accounting::IdSet::new(room)),
            leave_watch: Watch::Off,
        };
        tasks.spawn(member(Arc::clone(harness), Arc::clone(&book), layout, plan, spec, start_rx.clone()));
    }
    drop(start_rx);
    setup(harness, config.clients, ramp).await;

    harness.begin_stage("run");
    let start = harness.next_start();
    start_tx.send_replace(Some(start));
    let end = start + duration_ns(config.duration);
    harness.run_until("publish", end, harness.rate_message(Phase::Message, "msg")).await;

    harness.begin_stage("drain");
    drain_publishers(harness, &book).await;
    let owed = book.owed_deliveries();
    harness.drain_then_stop("drain", owed, || harness.shared.recorder.fresh(Phase::Message)).await;

    let results = collect(tasks).await?;
    Ok(tally_members(&results, plan.ack, Some(&book)))
}

/// Waits for every member to connect and join (or fail).
pub(crate) async fn setup(harness: &Harness, clients: u32, ramp: Schedule) {
    let timeout = ramp.interval() * clients + harness.options.setup_timeout;
    harness
        .wait_for(
            "setup",
            u64::from(clients),
            timeout,
            || harness.settled.load(Ordering::Relaxed),
            || format!("{} connected", harness.connected.load(Ordering::Relaxed)),
        )
        .await;
}

/// Waits for publishers to collect their acks.
pub(crate) async fn drain_publishers(harness: &Harness, book: &Book) {
    let publishing = book.publishing.load(Ordering::Relaxed);
    harness.drain("acks", publishing, || book.published.load(Ordering::Relaxed)).await;
}

/// Joins every member task.
pub(crate) async fn collect(mut tasks: JoinSet<MemberResult>) -> anyhow::Result<Vec<MemberResult>> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(result) = tasks.join_next().await {
        results.push(result?);
    }
    results.sort_by_key(|result| result.id);
    Ok(results)
}

/// Tallies deliveries per member against its room's accepted sends, and
/// join notices against the join acks' member counts.
pub(crate) fn tally_members(results: &[MemberResult], acked: bool, book: Option<&Book>) -> Outcome {
    let accepted: HashMap<u32, u64> = results
        .iter()
        .filter(|result| result.publisher)
        .filter_map(|result| Some((result.id, result.record.as_ref()?.counts.accepted_sends(acked))))
        .collect();
    let mut outcome = Outcome::default();
    let mut messages = Tally::default();
    let (mut notices_seen, mut notice_repeats) = (0, 0);
    for result in results {
        let Some(record) = &result.record else { continue };
        outcome.counts.add(&record.counts);
        if result.joined.is_none() {
            continue;
        }
        outcome.joined += 1;
        for (publisher, tracker) in &record.trackers {
            messages.add(&tracker.tally(accepted.get(publisher).copied().unwrap_or(0)));
        }
        if let Watch::Set(set) = &record.join_watch {
            notices_seen += set.len();
            notice_repeats += set.duplicates();
        }
    }
    outcome.messages = Some(messages);
    // Only when every join ack said how big the room was do we know what is owed.
    if let Some(book) = book
        && book.counted_joins.load(Ordering::Relaxed) == outcome.joined
    {
        let owed = book.owed_join_notices.load(Ordering::Relaxed);
        outcome.join_notices = Some(Tally::from_counts(owed, notices_seen, notice_repeats));
    }
    outcome
}
