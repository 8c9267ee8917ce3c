//! Climbing one broadcast ladder against one fresh server: run a step, judge
//! it ([`steps`](super::steps)), pick the next rate, until the ladder says
//! done.
//!
//! For the broker, `/metrics` is sampled while each step runs, so every step
//! also records the writers' batch size (frames per write) over its
//! publishing seconds, without the setup's join notices.

use std::time::Duration;

use serde::Serialize;

use super::loadgen::Run;
use super::plan::{Series, duration_arg};
use super::probe::{self, WriteCounters};
use super::server::{Server, ServerKind};
use super::steps::{self, Capacity, Next, Step};
use super::suite::{Env, Placement};
use super::table::format_number;

/// How long a server may take to close the connections of a finished step.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// One step as run.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Observation and verdict.
    pub step: Step,
    /// Broker only: frames per write while publishing (through the drain).
    pub batch_size: Option<f64>,
    /// The loadgen run.
    pub run: Run,
}

/// One ladder's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesResult {
    /// `20x100`, …
    pub label: String,
    /// Pinned or multicore.
    pub placement: Placement,
    /// Clients in a step: a message at rate R per room is R × clients
    /// deliveries per second.
    pub clients: u32,
    /// Steps in run order.
    pub steps: Vec<StepRecord>,
    /// The figure; `None` when the ladder broke off with an error.
    pub capacity: Option<Capacity>,
    /// Why it broke off.
    pub error: Option<String>,
}

/// Climbs `series` against a fresh `kind` placed for `placement`.
pub fn climb(env: &Env, kind: ServerKind, series: &Series, placement: Placement) -> SeriesResult {
    let mut result = SeriesResult {
        label: series.label(),
        placement,
        clients: series.clients(),
        steps: Vec::new(),
        capacity: None,
        error: None,
    };
    if let Err(e) = climb_steps(env, kind, series, &mut result) {
        eprintln!("compare: {} {} {}: {e:#}", kind.name(), result.label, placement.name());
        result.error = Some(format!("{e:#}"));
    }
    result
}

fn climb_steps(
    env: &Env,
    kind: ServerKind,
    series: &Series,
    result: &mut SeriesResult,
) -> anyhow::Result<()> {
    let mut server = env.start(kind, result.placement)?;
    let baseline_fds = probe::open_fds(server.pid)?;
    loop {
        let judged: Vec<Step> = result.steps.iter().map(|record| record.step.clone()).collect();
        match steps::next(&series.ladder, &judged) {
            Next::Done(capacity) => {
                result.capacity = Some(capacity);
                return server.stop();
            }
            Next::Run(rate) => {
                let record = run_step(env, &mut server, series, result.placement, rate)?;
                print_step(kind, result, &record);
                result.steps.push(record);
                server.ensure_running()?;
                probe::wait_for_fds(server.pid, SETTLE_TIMEOUT, |fds| fds <= baseline_fds + 16)?;
            }
        }
    }
}

fn run_step(
    env: &Env,
    server: &mut Server,
    series: &Series,
    placement: Placement,
    rate: f64,
) -> anyhow::Result<StepRecord> {
    let plan = &env.plan;
    let args: Vec<String> = [
        "broadcast",
        "--clients",
        &series.clients().to_string(),
        "--rooms",
        &series.rooms.to_string(),
        "--publishers",
        "1",
        "--rate",
        &format!("{rate}"),
        "--duration",
        &duration_arg(plan.step_duration),
        "--drain",
        &duration_arg(plan.drain),
        "--connect-rate",
        &plan.setup_connect_rate.to_string(),
    ]
    .map(str::to_owned)
    .into();
    let name = format!(
        "broadcast-{}-{}-r{}",
        series.label(),
        placement.name(),
        format_number(rate).replace(' ', "")
    );
    let invocation = env.loadgen(server, placement, &name, args);
    let mut child = invocation.spawn()?;
    let samples = sample_counters(&mut child, server);
    let run = invocation.finish(child)?;
    let batch_size = samples
        .ok()
        .zip(run.summary.publishing_unix_ms)
        .and_then(|(samples, (start, end))| window_batch_size(&samples, start, end));
    let step = Step::new(run.summary.observation(rate));
    Ok(StepRecord { step, batch_size, run })
}

/// A counter reading and when it was taken, ms since the Unix epoch.
type Sample = (u64, WriteCounters);

/// Reads the broker's write counters until `child` exits; the peers have no
/// `/metrics`, and get no samples.
fn sample_counters(child: &mut std::process::Child, server: &Server) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    probe::while_running(child, || {
        if server.kind == ServerKind::Broker {
            match probe::write_counters(server.port) {
                Ok(counters) => samples.push((unix_ms(), counters)),
                Err(e) => eprintln!("compare: reading broker /metrics: {e:#}"),
            }
        }
        Ok(())
    })?;
    Ok(samples)
}

fn unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Frames per write between the first sample at or after `start_ms` and the
/// last at or before `end_ms`.
fn window_batch_size(samples: &[Sample], start_ms: u64, end_ms: u64) -> Option<f64> {
    let first = samples.iter().find(|(at, _)| *at >= start_ms)?;
    let last = samples.iter().rev().find(|(at, _)| *at <= end_ms)?;
    first.1.batch_size(&last.1)
}

fn print_step(kind: ServerKind, result: &SeriesResult, record: &StepRecord) {
    let observation = &record.step.observation;
    let p99 = observation.p99_ms.map_or("-".to_owned(), |p99| format!("{p99:.1} ms"));
    let batch = record.batch_size.map_or(String::new(), |batch| format!(", {batch:.2} frames/write"));
    let lag = &record.run.summary.self_check;
    eprintln!(
        "compare: {} broadcast {} {}: {}/s per room -> {:.0} deliveries/s, p99 {p99}{batch}; \
         loadgen cpu {:.0}%, lag {:.1} ms => {:?}",
        kind.name(),
        result.label,
        result.placement.name(),
        format_number(observation.rate),
        observation.deliveries_per_s,
        lag.publishing_utilization.unwrap_or(lag.utilization) * 100.0,
        lag.publishing_lag_ms.unwrap_or(lag.schedule_lag_p99_ms),
        record.step.verdict,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, frames_out: u64, writes: u64) -> Sample {
        (at, WriteCounters { frames_out, writes })
    }

    #[test]
    fn batch_size_counts_only_the_publishing_window() {
        // Setup sends 9000 join notices in 1000 writes; publishing then
        // writes 4000 frames in 200 writes.
        let samples = [
            sample(1_000, 0, 0),
            sample(1_100, 9_000, 1_000),
            sample(1_200, 11_000, 1_100),
            sample(1_300, 13_000, 1_200),
            sample(1_400, 13_000, 1_200),
        ];
        assert_eq!(window_batch_size(&samples, 1_050, 1_350), Some(20.0));
        assert_eq!(window_batch_size(&samples, 1_000, 1_400), Some(13_000.0 / 1_200.0), "the whole run");
        assert_eq!(window_batch_size(&samples, 1_410, 1_500), None, "no sample inside");
    }
}
