//! `broadcast`: R rooms of S members, P publishers per room at a fixed
//! open-loop rate.
//!
//! Every member connects (ramped), joins its room and waits; then all
//! publishers start together and publish for the duration, each message
//! stamped with its intended send time. Latency runs from that time to each
//! delivery, at every member including the sender. Afterwards each member's
//! sequence trackers are tallied against what its room's publishers had
//! accepted (sent minus refused). The member lifecycle is [`super::members`].
//! Over several targets a room's members alternate between the servers, so
//! every room with at least as many members as targets spans them all.
//!
//! With `--drop-every`, the members that do not publish lose their
//! connection at the TCP level about that often while publishing lasts, and
//! reconnect as socket.io-client does, recovering their session when the
//! server offers it ([`super::drops`]). The same members, schedule and
//! accounting serve runs with and without drops, so the two compare
//! directly; the report adds each member's delivered ÷ expected.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::drops::DropPlan;
use super::members::{Members, PublishPlan, tally_drops, tally_join_notices_by_pairs, tally_members};
use super::{Harness, Layout, Outcome};
use crate::accounting::IdSet;
use crate::config::BroadcastConfig;
use crate::schedule::duration_ns;
use crate::session::Watch;
use crate::stats::Phase;

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
        drops: (!config.drop_every.is_zero())
            .then_some(DropPlan { every: config.drop_every, reconnect_delay: config.reconnect_delay }),
    };
    let members = Members::set_up(harness, layout, plan, config.connect_rate, |id| {
        (Watch::Set(IdSet::new(layout.members(layout.room_of(id)))), Watch::Off)
    })
    .await?;

    harness.begin_stage("run");
    let start = members.start_publishing(harness).await;
    let end = start + duration_ns(config.duration);
    harness.run_until("publish", end, harness.rate_message(Phase::Message, "msg")).await;

    harness.begin_stage("drain");
    if plan.drops.is_some() {
        // Members dropped near the end are owed what was sent while they
        // were away: wait for every one to be back from its last drop.
        let dropping = &members.book.dropping;
        let all_back = || u64::from(dropping.load(Ordering::Relaxed) == 0);
        let message = || format!("{} members still dropping", dropping.load(Ordering::Relaxed));
        harness.wait_for("reconnects", 1, harness.options.drain, all_back, message).await;
    }
    let owed = members.drain_publishers(harness).await;
    harness.drain_then_stop("drain", owed, || harness.shared.recorder.fresh(Phase::Message)).await;

    let book = Arc::clone(&members.book);
    let results = members.collect().await?;
    let mut outcome = tally_members(&results, plan.ack, Some(&book));
    if harness.shared.target.endpoints().len() > 1 {
        outcome.join_notices = Some(tally_join_notices_by_pairs(&results, layout));
    }
    outcome.drops = tally_drops(&results, &plan, &outcome.counts);
    Ok(outcome)
}
