//! `soak`: well-behaved chatters beside faulty clients, then a check that the
//! target came back to idle.
//!
//! The chatters are `broadcast`'s members with every member publishing: each
//! receives every message of its room exactly once, in order, or the run has
//! loss. Meanwhile each kind of faulty client ([`faults::Kind`]) is started
//! at its own rate, and reconnect storms come at intervals. The target's
//! gauges (`/metrics`) and RSS are read before anyone connects (the idle
//! values), every `--sample-every` during the run (the peak), and after
//! everyone has gone, waiting up to `--idle-timeout` for every gauge to be
//! back at its idle value. Not being back is loss, like a lost message.

mod faults;
mod garbage;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::faults::Faults;
pub use self::faults::{ADMITTED, Kind};
pub use self::garbage::Garbage;
use super::members::{Members, PublishPlan, tally_members};
use super::{Harness, Layout, Outcome};
use crate::config::SoakConfig;
use crate::gauges::{self, GAUGES, MetricsEndpoint, Reading};
pub use crate::report::soak::{FaultTally, GaugeRow, SoakReport};
use crate::schedule::duration_ns;
use crate::session::Watch;
use crate::stats::Phase;

/// How often the gauges are polled while waiting for idle.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the `soak` scenario.
///
/// # Errors
/// Token minting failed, or a client task panicked.
pub async fn run(harness: &Arc<Harness>, config: &SoakConfig) -> anyhow::Result<Outcome> {
    let mut garbage = Garbage::ALL.to_vec();
    for name in &config.garbage_skip {
        let kind = Garbage::from_name(name).with_context(|| {
            let names: Vec<&str> = Garbage::ALL.iter().map(|kind| kind.name()).collect();
            format!("--garbage-skip: no garbage named {name:?} (there are {})", names.join(", "))
        })?;
        garbage.retain(|&other| other != kind);
    }
    anyhow::ensure!(
        harness.shared.target.endpoints().len() == 1,
        "the soak watches one target's gauges: give one --target"
    );
    let clock = harness.clock();
    let seconds = move || clock.now_ns() as f64 / 1e9;
    let metrics_url = config
        .metrics_url
        .clone()
        .unwrap_or_else(|| MetricsEndpoint::url_for_target(&harness.shared.target.first().url));
    let (mut endpoint, mut metrics_error) = match MetricsEndpoint::resolve(&metrics_url).await {
        Ok(endpoint) => (Some(endpoint), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    // The idle values: before any client of ours connects.
    let (before, error) = gauges::read(endpoint.as_ref(), config.broker_pid, seconds()).await;
    if let Some(error) = error {
        // A target without metrics: run anyway, report no gauges.
        tracing::warn!(url = %metrics_url, %error, "cannot read the target's metrics");
        metrics_error = Some(error);
        endpoint = None;
    }

    let layout = Layout::new(config.clients, config.rooms);
    let plan = PublishPlan {
        publishers_per_room: layout.room_size,
        rate: config.rate,
        duration: config.duration,
        size: config.size,
        ack: true,
        drops: None,
    };
    let members =
        Members::set_up(harness, layout, plan, config.connect_rate, |_| (Watch::Off, Watch::Off)).await?;

    let stop_sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample(
        endpoint.clone(),
        config.broker_pid,
        config.sample_every,
        seconds,
        stop_sampling.clone(),
    ));

    harness.begin_stage("soak");
    let start = members.start_publishing(harness).await;
    let faults = Arc::new(Faults::new(
        Arc::clone(harness),
        layout.rooms,
        config.fault_timeout,
        config.revoked_jti.clone(),
        garbage,
        config.clients,
    ));
    let mut drivers = JoinSet::new();
    for (kind, rate) in [
        (Kind::Vanish, config.vanish_rate),
        (Kind::Silent, config.silent_rate),
        (Kind::Stall, config.stall_rate),
        (Kind::Flood, config.flood_rate),
        (Kind::Garbage, config.garbage_rate),
        (Kind::Expired, config.expired_rate),
        (Kind::Revoked, config.revoked_rate),
        (Kind::Forged, config.forged_rate),
    ] {
        drivers.spawn(faults::drive(Arc::clone(&faults), kind, rate, start, config.duration));
    }
    drivers.spawn(faults::drive_storms(
        Arc::clone(&faults),
        config.storm_size,
        config.storm_every,
        start,
        config.duration,
    ));
    let end = start + duration_ns(config.duration);
    harness.run_until("soak", end, harness.rate_message(Phase::Message, "msg")).await;

    // Chatters keep listening while the last faulty clients play out.
    harness.begin_stage("faults");
    while let Some(done) = drivers.join_next().await {
        done?;
    }
    harness.begin_stage("drain");
    let owed = members.drain_publishers(harness).await;
    harness.drain_then_stop("drain", owed, || harness.shared.recorder.fresh(Phase::Message)).await;
    let results = members.collect().await?;
    let outcome = tally_members(&results, plan.ack, None);

    harness.begin_stage("idle");
    let idle_from = seconds();
    let deadline = tokio::time::Instant::now() + config.idle_timeout;
    let after = loop {
        let (reading, _) = gauges::read(endpoint.as_ref(), config.broker_pid, seconds()).await;
        if reading.is_idle(&before) || tokio::time::Instant::now() >= deadline {
            break reading;
        }
        tokio::time::sleep(IDLE_POLL).await;
    };
    harness.end_stage();
    stop_sampling.cancel();
    let mut samples = sampler.await.unwrap_or_default();
    samples.insert(0, before.clone());
    samples.push(after.clone());

    let tallies = faults.tallies();
    let admitted_bad_tokens = [Kind::Expired, Kind::Revoked, Kind::Forged]
        .iter()
        .filter_map(|kind| tallies.get(kind.name())?.outcomes.get(ADMITTED))
        .sum();
    let report = SoakReport {
        gauges: gauge_rows(&before, &samples, &after),
        idle: after.is_idle(&before),
        idle_wait_s: after.at_s - idle_from,
        busy: after.busy_gauges(&before),
        metrics_error,
        counter_deltas: after
            .counters
            .iter()
            .filter_map(|(name, value)| {
                let delta = value - before.counters.get(name).copied().unwrap_or(0.0);
                (delta != 0.0).then(|| (name.clone(), delta))
            })
            .collect(),
        faults: tallies,
        admitted_bad_tokens,
        samples,
    };
    Ok(Outcome { soak: Some(report), ..outcome })
}

/// Reads the target every `every` until `stop`.
async fn sample(
    endpoint: Option<MetricsEndpoint>,
    pid: Option<u32>,
    every: std::time::Duration,
    seconds: impl Fn() -> f64,
    stop: CancellationToken,
) -> Vec<Reading> {
    let mut samples = Vec::new();
    if endpoint.is_none() && pid.is_none() {
        return samples;
    }
    let mut ticks = tokio::time::interval(every.max(std::time::Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return samples,
            _ = ticks.tick() => {}
        }
        samples.push(gauges::read(endpoint.as_ref(), pid, seconds()).await.0);
    }
}

/// Before, peak and after of every gauge, then RSS.
fn gauge_rows(before: &Reading, samples: &[Reading], after: &Reading) -> Vec<GaugeRow> {
    let peak = |value: &dyn Fn(&Reading) -> Option<f64>| {
        samples.iter().filter_map(value).fold(None, |peak: Option<f64>, v| Some(peak.map_or(v, |p| p.max(v))))
    };
    let mut rows: Vec<GaugeRow> = GAUGES
        .iter()
        .enumerate()
        .map(|(index, &(name, metric))| GaugeRow {
            name,
            metric,
            before: before.gauges[index],
            peak: peak(&|reading: &Reading| reading.gauges[index]),
            after: after.gauges[index],
        })
        .collect();
    let rss = |reading: &Reading| reading.rss_kib.map(|kib| kib as f64);
    rows.push(GaugeRow {
        name: "rss kib",
        metric: "",
        before: rss(before),
        peak: peak(&rss),
        after: rss(after),
    });
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn reading(at_s: f64, page: &str) -> Reading {
        Reading::new(at_s, Some(page), Some(1000))
    }

    fn report(after: &Reading, before: &Reading, admitted_bad_tokens: u64) -> SoakReport {
        let samples = vec![before.clone(), reading(1.0, "broker_connections_open 40\n"), after.clone()];
        SoakReport {
            gauges: gauge_rows(before, &samples, after),
            idle: after.is_idle(before),
            idle_wait_s: 0.0,
            busy: after.busy_gauges(before),
            metrics_error: None,
            counter_deltas: BTreeMap::new(),
            faults: BTreeMap::new(),
            admitted_bad_tokens,
            samples,
        }
    }

    #[test]
    fn a_gauge_left_above_idle_or_an_admitted_bad_token_fails_the_soak() {
        let before = reading(0.0, "broker_connections_open 0\nbroker_tasks 3\n");
        let back = report(&reading(2.0, "broker_connections_open 0\nbroker_tasks 3\n"), &before, 0);
        assert!(back.failures().is_empty(), "{:?}", back.failures());
        let rows: Vec<_> =
            back.gauges.iter().map(|row| (row.name, row.before, row.peak, row.after)).collect();
        assert_eq!(rows[0], ("connections", Some(0.0), Some(40.0), Some(0.0)));
        assert_eq!(rows[1], ("sockets", None, None, None), "not reported");
        assert_eq!(rows.last().map(|row| row.3), Some(Some(1000.0)), "rss");

        let leaked = report(&reading(2.0, "broker_connections_open 1\nbroker_tasks 5\n"), &before, 0);
        assert_eq!(
            leaked.failures(),
            vec!["gauges not back at idle: connections 1 (idle 0), tasks 5 (idle 3)".to_owned()]
        );
        let admitted = report(&reading(2.0, "broker_connections_open 0\n"), &before, 2);
        assert_eq!(admitted.failures(), vec!["2 clients with a bad token were let in".to_owned()]);
        assert!(leaked.to_string().contains("idle: NO"));
    }
}
