//! The steady members that `broadcast`, `mixed` and `soak` share, and the
//! pieces `join` and `disconnect` borrow.
//!
//! A member connects (on the ramp), joins its room, waits for the common
//! start, publishes if it is one of its room's first `publishers_per_room`
//! members, then listens until the run is cancelled. [`Members`] mints the
//! tokens, ramps the connects and spawns one task per member; a scenario
//! adds only what is its own (churners, faulty clients, the notices it
//! watches). Invariant: a member bumps `harness.settled` exactly once,
//! whether it joined or failed, so setup waits end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::drops::{self, DropPlan};
use super::{Harness, Layout, Outcome, mint_tokens, room_counters, room_name};
use crate::accounting::Tally;
use crate::schedule::{Schedule, duration_ns};
use crate::session::{Ended, Session, SessionRecord, Watch};

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
    /// Listeners that may still be dropped or are not back yet
    /// (`--drop-every`): from the start of publishing to their last return.
    pub dropping: AtomicU64,
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
            dropping: AtomicU64::new(0),
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

/// What members publish, and whether the listeners among them are dropped
/// while they do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishPlan {
    pub publishers_per_room: u32,
    pub rate: f64,
    pub duration: Duration,
    pub size: usize,
    pub ack: bool,
    pub drops: Option<DropPlan>,
}

/// One member's script inputs.
#[derive(Debug, Clone)]
struct MemberSpec {
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
async fn member(
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
        let Some(start_ns) = wait_for_start(&mut session, &mut start).await? else { return Ok(()) };
        if publisher {
            let slot =
                u64::from(room) * u64::from(plan.publishers_per_room) + u64::from(layout.position_of(id));
            let slots = u64::from(layout.rooms) * u64::from(plan.publishers_per_room);
            let schedule = Schedule::for_duration(start_ns, plan.rate, plan.duration).staggered(slot, slots);
            publish(&harness, &book, &mut session, room, schedule, plan).await?;
        }
        match plan.drops {
            Some(drop_plan) if !publisher => {
                let window = (start_ns, start_ns + duration_ns(plan.duration));
                let dropping = &book.dropping;
                drops::listen(&harness, &mut session, &spec.token, (room, dropping), window, drop_plan).await
            }
            _ => session.pump_until(std::future::pending::<()>()).await,
        }
    };
    harness.play(id, script).await;
    result.record = Some(session.finish().await);
    result
}

/// Keeps `session` reading until the orchestrator sends the start time;
/// `None` when the orchestrator went away without one.
pub(crate) async fn wait_for_start(
    session: &mut Session,
    start: &mut watch::Receiver<Option<u64>>,
) -> Result<Option<u64>, Ended> {
    let started = session.pump_until(async { start.wait_for(Option::is_some).await.map(|s| s.unwrap_or(0)) });
    Ok(started.await?.ok())
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

/// The steady members of a run, spawned and set up together.
#[derive(Debug)]
pub(crate) struct Members {
    /// Live per-room counters.
    pub book: Arc<Book>,
    tasks: JoinSet<MemberResult>,
    start: watch::Sender<Option<u64>>,
}

impl Members {
    /// Spawns one member per client of `layout`, ramping their connects at
    /// `connect_rate` in a `setup` stage, and waits until each has joined
    /// its room or failed. `watches(id)` gives the `user_joined` and
    /// `user_left` notices member `id` watches.
    ///
    /// # Errors
    /// Token minting failed.
    pub(crate) async fn set_up(
        harness: &Arc<Harness>,
        layout: Layout,
        plan: PublishPlan,
        connect_rate: f64,
        watches: impl Fn(u32) -> (Watch, Watch),
    ) -> anyhow::Result<Self> {
        let book = Arc::new(Book::new(layout.rooms));
        let (start, start_rx) = watch::channel(None);
        let mut ramp = ramp_up(harness, layout, connect_rate, "setup").await?;
        let mut tasks = JoinSet::new();
        for (id, token, connect_at) in ramp.take_clients() {
            let (join_watch, leave_watch) = watches(id);
            let spec = MemberSpec { id, token, connect_at, join_watch, leave_watch };
            tasks.spawn(member(Arc::clone(harness), Arc::clone(&book), layout, plan, spec, start_rx.clone()));
        }
        drop(start_rx);
        setup(harness, &ramp).await;
        Ok(Self { book, tasks, start })
    }

    /// Lets the publishers go at the next stage start (once every worker
    /// process is set up), which it returns.
    pub(crate) async fn start_publishing(&self, harness: &Harness) -> u64 {
        harness.barrier().await;
        let start = harness.next_start();
        self.start.send_replace(Some(start));
        start
    }

    /// Waits for the publishers to collect their acks; returns the
    /// deliveries owed to the members.
    pub(crate) async fn drain_publishers(&self, harness: &Harness) -> u64 {
        let book = &self.book;
        let publishing = book.publishing.load(Ordering::Relaxed);
        harness.drain("acks", publishing, || book.published.load(Ordering::Relaxed)).await;
        book.owed_deliveries()
    }

    /// Joins every member task (call after the run is cancelled).
    ///
    /// # Errors
    /// A member task panicked.
    pub(crate) async fn collect(self) -> anyhow::Result<Vec<MemberResult>> {
        collect(self.tasks).await
    }
}

/// This process's clients of a run, each with its token and intended
/// connect time.
#[derive(Debug)]
pub(crate) struct Ramp {
    clients: Vec<(u32, String, u64)>,
    count: u32,
    schedule: Schedule,
}

impl Ramp {
    /// The clients, `(id, token, connect at)` in id order; once.
    pub(crate) fn take_clients(&mut self) -> Vec<(u32, String, u64)> {
        std::mem::take(&mut self.clients)
    }

    /// How many clients this process runs.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// How long their connects take, plus the setup timeout.
    pub(crate) fn timeout(&self, harness: &Harness) -> Duration {
        self.schedule.interval() * self.count + harness.options.setup_timeout
    }
}

/// Mints tokens for this process's clients of `layout` (whole rooms; all
/// of them unless it is one of several workers) and begins `stage`, whose
/// connects are ramped from the next stage start at this process's share of
/// `connect_rate`.
///
/// # Errors
/// Token minting failed.
pub(crate) async fn ramp_up(
    harness: &Harness,
    layout: Layout,
    connect_rate: f64,
    stage: &str,
) -> anyhow::Result<Ramp> {
    let ids: Vec<u32> =
        (0..layout.clients).filter(|&id| harness.owns(layout.room_of(id), layout.rooms)).collect();
    let count = u32::try_from(ids.len()).expect("ids come from a u32 range");
    let tokens = mint_tokens(&harness.shared.target.minter, ids.clone()).await?;
    let schedule = Schedule::at_rate(harness.next_start(), harness.share_of(connect_rate), u64::from(count));
    harness.begin_stage(stage);
    let clients = (0..)
        .zip(ids.into_iter().zip(tokens))
        .map(|(slot, (id, token))| (id, token, schedule.at(slot).expect("slot < count")))
        .collect();
    Ok(Ramp { clients, count, schedule })
}

/// Waits for every member to connect and join (or fail).
pub(crate) async fn setup(harness: &Harness, ramp: &Ramp) {
    harness
        .wait_for(
            "setup",
            u64::from(ramp.count),
            ramp.timeout(harness),
            || harness.settled.load(Ordering::Relaxed),
            || format!("{} connected", harness.connected.load(Ordering::Relaxed)),
        )
        .await;
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

/// Sends each publisher's server accepted, by publisher id.
fn accepted_sends(results: &[MemberResult], acked: bool) -> HashMap<u32, u64> {
    results
        .iter()
        .filter(|result| result.publisher)
        .filter_map(|result| Some((result.id, result.record.as_ref()?.counts.accepted_sends(acked))))
        .collect()
}

/// Tallies deliveries per member against its room's accepted sends, and
/// join notices against the join acks' member counts.
pub(crate) fn tally_members(results: &[MemberResult], acked: bool, book: Option<&Book>) -> Outcome {
    let accepted = accepted_sends(results, acked);
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

/// `user_joined` notices tallied by pairs, for rooms that span several
/// servers: of two members of a room, at least one must have seen the
/// other's `user_joined`. Join acks cannot say what is owed there: joins on
/// two nodes race, and each ack's cluster-wide count may include the other
/// member even though only the later join's notice reached the earlier
/// member (on one node the room lock orders them, so the counts are exact).
/// A pair that saw each other's notices joined concurrently on two nodes;
/// that is not an error. Expected is the number of pairs of joined members.
pub(crate) fn tally_join_notices_by_pairs(results: &[MemberResult], layout: Layout) -> Tally {
    let mut tally = Tally::default();
    for room in 0..layout.rooms {
        let members: Vec<(u32, &crate::accounting::IdSet)> = results
            .iter()
            .filter(|result| result.joined.is_some() && layout.room_of(result.id) == room)
            .filter_map(|result| match &result.record.as_ref()?.join_watch {
                Watch::Set(set) => Some((result.id, set)),
                _ => None,
            })
            .collect();
        for (index, &(first, first_seen)) in members.iter().enumerate() {
            tally.duplicated += first_seen.duplicates();
            for &(second, second_seen) in &members[index + 1..] {
                tally.expected += 1;
                if first_seen.contains(second) || second_seen.contains(first) {
                    tally.unique += 1;
                } else {
                    tally.lost += 1;
                }
            }
        }
    }
    tally
}

/// What the drops of `plan` did, per member (see [`drops::spread`]); `None`
/// without drops. `counts` are the members' counters, summed.
pub(crate) fn tally_drops(
    results: &[MemberResult],
    plan: &PublishPlan,
    counts: &crate::session::Counts,
) -> Option<crate::report::DropReport> {
    let drop_plan = plan.drops?;
    let accepted = accepted_sends(results, plan.ack);
    let members: Vec<drops::MemberDeliveries> = results
        .iter()
        .filter(|result| result.joined.is_some())
        .filter_map(|result| result.record.as_ref())
        .map(|record| {
            let owed = |publisher| accepted.get(&publisher).copied().unwrap_or(0);
            drops::MemberDeliveries::new(&record.trackers, owed, &record.counts)
        })
        .collect();
    Some(drops::spread(drop_plan, counts, &members))
}
