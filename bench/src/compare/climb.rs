//! Climbing one broadcast ladder against one fresh server: run a step, judge
//! it ([`steps`](super::steps)), pick the next rate, until the ladder says
//! done.
//!
//! For the broker, `/metrics` is read before and after each step, so every
//! step also records the writers' batch size (frames per write).

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
    /// Broker only: frames per write during the step.
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
    let before = counters(server);
    let run = invocation.run()?;
    let batch_size = before.zip(counters(server)).and_then(|(before, after)| before.batch_size(&after));
    let step = Step::new(run.summary.observation(rate));
    Ok(StepRecord { step, batch_size, run })
}

/// The broker's write counters; the peers have no `/metrics`.
fn counters(server: &Server) -> Option<WriteCounters> {
    if server.kind != ServerKind::Broker {
        return None;
    }
    probe::write_counters(server.port).map_err(|e| eprintln!("compare: reading broker /metrics: {e:#}")).ok()
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
