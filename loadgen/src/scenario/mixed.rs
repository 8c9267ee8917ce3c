//! `mixed`: broadcast load plus churn, all at once, for a set duration.
//!
//! The steady members are exactly `broadcast`'s: they join, publishers
//! publish, everyone's sequences are checked. On top, churning clients
//! (fresh ids past the steady ones) connect at a fixed rate, join a room,
//! stay `--churn-lifetime` and disconnect. Steady members count the
//! churners' `user_joined` / `user_left`: each churn join owes one notice to
//! every steady member of its room, and so does each churn leave.
//! Churners' own deliveries count toward latency and throughput, not loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinSet;

use super::members::{Book, Members, PublishPlan, tally_members};
use super::{Harness, Layout, Outcome, room_name};
use crate::accounting::Tally;
use crate::config::MixedConfig;
use crate::schedule::{Schedule, duration_ns};
use crate::session::{Counts, Watch};
use crate::stats::Phase;

/// How many churning clients a run starts.
pub fn churn_count(config: &MixedConfig) -> u64 {
    Schedule::for_duration(0, config.churn, config.duration).count()
}

/// Notices the churners owe the steady members.
#[derive(Debug, Default)]
struct Churn {
    owed_joins: AtomicU64,
    owed_leaves: AtomicU64,
}

/// Runs the `mixed` scenario.
///
/// # Errors
/// Token minting failed, or a client task panicked.
pub async fn run(harness: &Arc<Harness>, config: &MixedConfig) -> anyhow::Result<Outcome> {
    let layout = Layout::new(config.clients, config.rooms);
    let plan = PublishPlan {
        publishers_per_room: config.publishers.min(layout.room_size),
        rate: config.rate,
        duration: config.duration,
        size: config.size,
        ack: true,
        drops: None,
    };
    let churners = churn_count(config);
    let churn_ids = config.clients..config.clients + u32::try_from(churners)?;
    let churn = Arc::new(Churn::default());
    let members = Members::set_up(harness, layout, plan, config.connect_rate, |_| {
        (Watch::Count(churn_ids.clone()), Watch::Count(churn_ids.clone()))
    })
    .await?;
    let book = Arc::clone(&members.book);

    harness.begin_stage("run");
    let start = members.start_publishing(harness).await;
    let schedule = Schedule::for_duration(start, config.churn, config.duration);
    let driver = tokio::spawn(drive_churn(
        Arc::clone(harness),
        Arc::clone(&book),
        Arc::clone(&churn),
        layout,
        schedule,
        config.clone(),
    ));
    let end = start + duration_ns(config.duration);
    harness.run_until("mixed", end, harness.rate_message(Phase::Message, "msg")).await;

    harness.begin_stage("drain");
    let churn_counts = driver.await??;
    let owed = members.drain_publishers(harness).await;
    let (owed_joins, owed_leaves) =
        (churn.owed_joins.load(Ordering::Relaxed), churn.owed_leaves.load(Ordering::Relaxed));
    let recorder = &harness.shared.recorder;
    harness
        .drain_then_stop("drain", owed + owed_joins + owed_leaves, || {
            recorder.fresh(Phase::Message).min(owed)
                + recorder.fresh(Phase::JoinNotice).min(owed_joins)
                + recorder.fresh(Phase::LeaveNotice).min(owed_leaves)
        })
        .await;

    let results = members.collect().await?;
    let mut outcome = tally_members(&results, plan.ack, None);
    let steady = results.iter().filter(|r| r.joined.is_some()).filter_map(|r| r.record.as_ref());
    let (joins_seen, leaves_seen) = steady
        .fold((0, 0), |(j, l), record| (j + record.counts.join_notices, l + record.counts.leave_notices));
    outcome.join_notices =
        Some(Tally::from_counts(owed_joins, joins_seen, joins_seen.saturating_sub(owed_joins)));
    outcome.leave_notices =
        Some(Tally::from_counts(owed_leaves, leaves_seen, leaves_seen.saturating_sub(owed_leaves)));
    outcome.counts.add(&churn_counts);
    Ok(outcome)
}

/// Starts one churner per scheduled slot and waits for them all.
async fn drive_churn(
    harness: Arc<Harness>,
    book: Arc<Book>,
    churn: Arc<Churn>,
    layout: Layout,
    schedule: Schedule,
    config: MixedConfig,
) -> anyhow::Result<Counts> {
    let mut churners = JoinSet::new();
    let clock = harness.clock();
    for k in 0..schedule.count() {
        let intended = schedule.at(k).expect("k < count");
        // Spawn slightly ahead so the churner itself sleeps to its slot.
        clock.sleep_until(intended.saturating_sub(5_000_000)).await;
        if harness.cancel.is_cancelled() {
            break;
        }
        let id = config.clients + u32::try_from(k)?;
        let room = u32::try_from(k % u64::from(layout.rooms))?;
        if !harness.owns(room, layout.rooms) {
            // Another worker process's room: it churns there.
            continue;
        }
        let token = harness.shared.target.minter.mint(id)?;
        let (harness, book, churn) = (Arc::clone(&harness), Arc::clone(&book), Arc::clone(&churn));
        let lifetime = duration_ns(config.churn_lifetime);
        churners.spawn(async move {
            let Some(mut session) = harness.connect(id, &token, intended).await else {
                return Counts::default();
            };
            let stable_members = book.joined[room as usize].load(Ordering::Relaxed);
            let joined_at = harness.clock().now_ns();
            let timeout = harness.shared.target.connect_timeout();
            if let Err(reason) = session.join(&room_name(room), joined_at, timeout).await {
                harness.note_ended(id, &reason);
                return session.into_record().counts;
            }
            churn.owed_joins.fetch_add(stable_members, Ordering::Relaxed);
            let leave_at = joined_at + lifetime;
            let stayed = tokio::select! {
                stayed = session.pump_until(harness.clock().sleep_until(leave_at)) => stayed,
                () = harness.cancel.cancelled() => Ok(()),
            };
            // Gone either way: by its own close or by the connection dropping.
            churn.owed_leaves.fetch_add(stable_members, Ordering::Relaxed);
            match stayed {
                Ok(()) => session.leave(leave_at, false).counts,
                Err(reason) => {
                    harness.note_ended(id, &reason);
                    session.into_record().counts
                }
            }
        });
    }
    let mut counts = Counts::default();
    while let Some(result) = churners.join_next().await {
        counts.add(&result?);
    }
    Ok(counts)
}
