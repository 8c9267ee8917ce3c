//! `connect`: ramp N clients at a fixed rate and hold them.
//!
//! Measures connect+auth latency from each client's scheduled start (TCP,
//! upgrade, Engine.IO open, namespace CONNECT with the token) and the rate at
//! which the target accepts. Every client that does not get in is a failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinSet;

use super::members::ramp_up;
use super::{Harness, Layout, Outcome};
use crate::config::ConnectConfig;
use crate::schedule::duration_ns;
use crate::session::Counts;
use crate::stats::Phase;

/// Runs the `connect` scenario.
///
/// # Errors
/// Token minting failed.
pub async fn run(harness: &Arc<Harness>, config: &ConnectConfig) -> anyhow::Result<Outcome> {
    // No rooms: each client is its own unit of the workers' shares.
    let mut ramp = ramp_up(harness, Layout::new(config.clients, config.clients), config.rate, "ramp").await?;
    let mut tasks = JoinSet::new();
    for (id, token, intended) in ramp.take_clients() {
        let harness = Arc::clone(harness);
        tasks.spawn(async move {
            let session = harness.connect(id, &token, intended).await;
            harness.settled.fetch_add(1, Ordering::Relaxed);
            let Some(mut session) = session else { return Counts::default() };
            let hold = async {
                if let Err(reason) = session.pump_until(harness.cancel.cancelled()).await {
                    harness.note_ended(id, &reason);
                }
            };
            hold.await;
            session.finish().await.counts
        });
    }
    harness
        .wait_for(
            "connect",
            u64::from(ramp.count()),
            ramp.timeout(harness),
            || harness.settled.load(Ordering::Relaxed),
            harness.rate_message(Phase::Connect, "conn"),
        )
        .await;
    // Every worker process holds its clients over the same span.
    harness.barrier().await;
    if !config.hold.is_zero() {
        harness.begin_stage("hold");
        let end = harness.clock().now_ns() + duration_ns(config.hold);
        harness
            .run_until("hold", end, || format!("{} connected", harness.connected.load(Ordering::Relaxed)))
            .await;
    }
    harness.end_stage();
    harness.cancel.cancel();
    let mut counts = Counts::default();
    while let Some(result) = tasks.join_next().await {
        counts.add(&result?);
    }
    Ok(Outcome { counts, ..Outcome::default() })
}
