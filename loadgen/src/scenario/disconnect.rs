//! `disconnect`: members leave at a fixed open-loop rate; the rest watch.
//!
//! Each room's first `leavers × size` members close (Socket.IO disconnect
//! and WebSocket close, or a bare TCP drop with `--abrupt`); the others are
//! observers that stay to the end. Latency runs from a leaver's scheduled
//! close to each observer's `user_left`. Owed notices are Σ over rooms of
//! leavers closed × observers joined, so the count does not depend on the
//! order in which the target processes the closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::members::{Book, MemberResult, collect, join_room, ramp_up, setup, tally_members};
use super::{Harness, Layout, Outcome, room_counters};
use crate::accounting::{IdSet, Tally};
use crate::config::DisconnectConfig;
use crate::schedule::Schedule;
use crate::session::{Ended, Watch};
use crate::stats::Phase;

/// Live counters of the leave stage.
#[derive(Debug)]
struct Leaves {
    observers: Box<[AtomicU64]>,
    closed: Box<[AtomicU64]>,
    leavers_joined: AtomicU64,
    leavers_done: AtomicU64,
}

impl Leaves {
    fn owed_notices(&self) -> u64 {
        self.closed
            .iter()
            .zip(self.observers.iter())
            .map(|(closed, observers)| closed.load(Ordering::Relaxed) * observers.load(Ordering::Relaxed))
            .sum()
    }
}

/// Runs the `disconnect` scenario.
///
/// # Errors
/// Token minting failed, or a client task panicked.
pub async fn run(harness: &Arc<Harness>, config: &DisconnectConfig) -> anyhow::Result<Outcome> {
    let layout = Layout::new(config.clients, config.rooms);
    let per_room =
        ((f64::from(layout.room_size) * config.leavers.clamp(0.0, 1.0)).floor() as u32).min(layout.room_size);
    let book = Arc::new(Book::new(layout.rooms));
    let leaves = Arc::new(Leaves {
        observers: room_counters(layout.rooms),
        closed: room_counters(layout.rooms),
        leavers_joined: AtomicU64::new(0),
        leavers_done: AtomicU64::new(0),
    });
    let (start_tx, start_rx) = watch::channel(None::<u64>);
    let mut ramp = ramp_up(harness, layout, config.connect_rate, "setup").await?;
    let leave_slots = u64::from(per_room) * u64::from(layout.rooms);
    let (rate, abrupt) = (config.rate, config.abrupt);
    let mut tasks = JoinSet::new();
    for (id, token, connect_at) in ramp.take_clients() {
        let (harness, book, leaves) = (Arc::clone(harness), Arc::clone(&book), Arc::clone(&leaves));
        let mut start = start_rx.clone();
        tasks.spawn(async move {
            let room = layout.room_of(id);
            let position = layout.position_of(id);
            let leaver = position < per_room;
            let mut result = MemberResult { id, joined: None, publisher: false, record: None };
            let session = harness.connect(id, &token, connect_at).await;
            let Some(mut session) = session else {
                harness.settled.fetch_add(1, Ordering::Relaxed);
                return result;
            };
            session.watch_joins(Watch::Set(IdSet::new(layout.members(room))));
            if !leaver {
                session.watch_leaves(Watch::Set(IdSet::new(layout.first_members(room, per_room))));
            }
            let mut leave_counted = false;
            let script = async {
                let now = harness.clock().now_ns();
                let joined = join_room(&harness, &book, &mut session, room, now).await;
                harness.settled.fetch_add(1, Ordering::Relaxed);
                result.joined = Some(joined?);
                if leaver {
                    leaves.leavers_joined.fetch_add(1, Ordering::Relaxed);
                    leave_counted = true;
                } else {
                    leaves.observers[room as usize].fetch_add(1, Ordering::Relaxed);
                }
                let started = session
                    .pump_until(async { start.wait_for(Option::is_some).await.map(|s| s.unwrap_or(0)) });
                let Ok(start_ns) = started.await? else { return Ok(None) };
                if !leaver {
                    return session.pump_until(std::future::pending::<Option<u64>>()).await;
                }
                let slot = u64::from(position) * u64::from(layout.rooms) + u64::from(room);
                let intended =
                    Schedule::at_rate(start_ns, rate, leave_slots).at(slot).expect("slot in range");
                session.pump_until(harness.clock().sleep_until(intended)).await?;
                Ok::<_, Ended>(Some(intended))
            };
            let leave_at = tokio::select! {
                outcome = script => outcome,
                () = harness.cancel.cancelled() => Ok(None),
            };
            match leave_at {
                Ok(Some(intended)) => {
                    result.record = Some(session.leave(intended, abrupt));
                    leaves.closed[room as usize].fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => result.record = Some(session.finish().await),
                Err(reason) => {
                    harness.note_ended(id, &reason);
                    result.record = Some(session.into_record());
                }
            }
            if leave_counted {
                leaves.leavers_done.fetch_add(1, Ordering::Relaxed);
            }
            result
        });
    }
    drop(start_rx);
    setup(harness, &ramp).await;
    let owed_joins = book.owed_join_notices.load(Ordering::Relaxed);
    harness.drain("notices", owed_joins, || harness.shared.recorder.fresh(Phase::JoinNotice)).await;

    harness.barrier().await;
    harness.begin_stage("leave");
    let start = harness.next_start();
    start_tx.send_replace(Some(start));
    let leavers = leaves.leavers_joined.load(Ordering::Relaxed);
    let window = Schedule::at_rate(start, rate, leave_slots).interval()
        * u32::try_from(leave_slots).unwrap_or(u32::MAX);
    harness
        .wait_for(
            "leave",
            leavers,
            window + harness.options.setup_timeout,
            || leaves.leavers_done.load(Ordering::Relaxed),
            harness.rate_message(Phase::LeaveNotice, "left"),
        )
        .await;

    harness.begin_stage("drain");
    let owed = leaves.owed_notices();
    harness.drain_then_stop("drain", owed, || harness.shared.recorder.fresh(Phase::LeaveNotice)).await;

    let results = collect(tasks).await?;
    let mut outcome = tally_members(&results, true, Some(&book));
    outcome.messages = None;
    let (mut seen, mut repeats) = (0, 0);
    for record in results.iter().filter(|r| r.joined.is_some()).filter_map(|r| r.record.as_ref()) {
        if let Watch::Set(set) = &record.leave_watch {
            seen += set.len();
            repeats += set.duplicates();
        }
    }
    outcome.leave_notices = Some(Tally::from_counts(owed, seen, repeats));
    Ok(outcome)
}
