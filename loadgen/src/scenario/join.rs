//! `join`: connect everyone, then join rooms at a fixed open-loop rate.
//!
//! Measures `join_room` → ack, and `join_room` → each other member's
//! `user_joined`, both from the scheduled join time. Joins interleave rooms
//! so all rooms fill at the same pace. Notices owed are Σ (members − 1) over
//! the join acks; each member's received notices are checked for repeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::members::{
    Book, MemberResult, collect, join_room, ramp_up, setup, tally_join_notices_by_pairs, tally_members,
    wait_for_start,
};
use super::{Harness, Layout, Outcome};
use crate::accounting::IdSet;
use crate::config::JoinConfig;
use crate::schedule::Schedule;
use crate::session::Watch;
use crate::stats::Phase;

/// Runs the `join` scenario.
///
/// # Errors
/// Token minting failed, or a client task panicked.
pub async fn run(harness: &Arc<Harness>, config: &JoinConfig) -> anyhow::Result<Outcome> {
    let layout = Layout::new(config.clients, config.rooms);
    let book = Arc::new(Book::new(layout.rooms));
    let joins_settled = Arc::new(AtomicU64::new(0));
    let (start_tx, start_rx) = watch::channel(None::<u64>);
    let mut ramp = ramp_up(harness, layout, config.connect_rate, "connect").await?;
    let slots = u64::from(layout.room_size) * u64::from(layout.rooms);
    let rate = config.rate;
    let mut tasks = JoinSet::new();
    for (id, token, connect_at) in ramp.take_clients() {
        let (harness, book, joins_settled) =
            (Arc::clone(harness), Arc::clone(&book), Arc::clone(&joins_settled));
        let mut start = start_rx.clone();
        tasks.spawn(async move {
            let mut result = MemberResult { id, joined: None, publisher: false, record: None };
            let session = harness.connect(id, &token, connect_at).await;
            harness.settled.fetch_add(1, Ordering::Relaxed);
            let Some(mut session) = session else { return result };
            let room = layout.room_of(id);
            session.watch_joins(Watch::Set(IdSet::new(layout.members(room))));
            let mut join_settled = false;
            let script = async {
                let Some(start_ns) = wait_for_start(&mut session, &mut start).await? else { return Ok(()) };
                let schedule = Schedule::at_rate(start_ns, rate, slots);
                let intended = schedule.at(layout.interleaved_slot(id)).expect("slot in range");
                session.pump_until(harness.clock().sleep_until(intended)).await?;
                let joined = join_room(&harness, &book, &mut session, room, intended).await;
                joins_settled.fetch_add(1, Ordering::Relaxed);
                join_settled = true;
                result.joined = Some(joined?);
                session.pump_until(std::future::pending::<()>()).await
            };
            harness.play(id, script).await;
            if !join_settled {
                // Lost before its join: it will never settle otherwise.
                joins_settled.fetch_add(1, Ordering::Relaxed);
            }
            result.record = Some(session.finish().await);
            result
        });
    }
    drop(start_rx);
    setup(harness, &ramp).await;

    harness.barrier().await;
    harness.begin_stage("join");
    let start = harness.next_start();
    start_tx.send_replace(Some(start));
    let connected = harness.connected.load(Ordering::Relaxed);
    let window = Schedule::at_rate(start, rate, slots).interval() * u32::try_from(slots).unwrap_or(u32::MAX);
    harness
        .wait_for(
            "join",
            connected,
            window + harness.options.setup_timeout,
            || joins_settled.load(Ordering::Relaxed),
            harness.rate_message(Phase::JoinAck, "join"),
        )
        .await;

    harness.begin_stage("drain");
    let owed = book.owed_join_notices.load(Ordering::Relaxed);
    harness.drain_then_stop("notices", owed, || harness.shared.recorder.fresh(Phase::JoinNotice)).await;

    let results = collect(tasks).await?;
    let mut outcome = tally_members(&results, true, Some(&book));
    if harness.shared.target.endpoints().len() > 1 {
        outcome.join_notices = Some(tally_join_notices_by_pairs(&results, layout));
    }
    outcome.messages = None;
    Ok(outcome)
}
