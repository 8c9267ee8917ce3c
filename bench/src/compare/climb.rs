//! Climbing one broadcast ladder against one fresh server: run a step, judge
//! it ([`steps`](super::steps)), pick the next rate, until the ladder says
//! done.
//!
//! While each step runs, the server's CPU (`/proc/PID/stat`) is sampled, so
//! every step records its user and system CPU per delivery over the
//! publishing window; for the broker, `/metrics` is sampled too, for the
//! writers' batch size (frames per write). Neither counts the setup's join
//! notices.

use std::time::Duration;

use serde::Serialize;

use super::env::{Env, Placement};
use super::loadgen::{Invocation, Run};
use super::plan::{Series, duration_arg};
use super::probe::{self, CpuCost, CpuTimes, Sample, WriteCounters};
use super::server::{Server, ServerKind};
use super::steps::{self, Capacity, Next, Step};
use super::table::format_number;

/// How long a server may take to close the connections of a finished step.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the server's CPU is read while a run goes on: a window's ends
/// are off by at most this, a few ‰ of a step.
const CPU_SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// The broker's `/metrics` is read every this many CPU samples (500 ms).
/// A scrape is work the broker would not otherwise do, and it falls inside
/// the CPU window: with 2000 clients connected one costs the broker about
/// 0.53 ms of user and 0.2 ms of system CPU (most of it walking every
/// socket's queue for the queued-bytes gauge), so reading it every 100 ms
/// charged the broker about 0.33 µs of user CPU per delivery at a fixed load
/// of 16 k deliveries/s, an eighth of what it measured.
/// The batch size only needs the counters near the window's two ends.
const COUNTERS_EVERY: usize = 25;

/// One step as run.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Observation and verdict.
    pub step: Step,
    /// Broker only: frames per write while publishing (through the drain).
    pub batch_size: Option<f64>,
    /// Server CPU per delivery over the publishing window (through the drain).
    pub cpu: Option<CpuCost>,
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
    if let Some(capacity) = &result.capacity {
        eprintln!(
            "compare: {} broadcast {} {}: {}",
            kind.name(),
            result.label,
            placement.name(),
            describe(capacity, result.clients)
        );
    }
    result
}

/// A ladder's outcome in words, with its bracket in offered deliveries/s.
pub fn describe(capacity: &Capacity, clients: u32) -> String {
    let offered = |rate: f64| format_number(rate * f64::from(clients));
    match capacity {
        Capacity::Sustained { step, ceiling } => format!(
            "sustains {} deliveries/s; bracket {}..{} offered deliveries/s \
             (highest pass, lowest fail: {}..{}/s per room, ×{:.2})",
            format_number(step.deliveries_per_s),
            offered(step.rate),
            offered(ceiling.rate),
            format_number(step.rate),
            format_number(ceiling.rate),
            ceiling.rate / step.rate
        ),
        Capacity::AtLeast { step, bound } => {
            format!("sustains at least {} deliveries/s ({bound:?})", format_number(step.deliveries_per_s))
        }
        Capacity::NonePassed { lowest_rate, .. } => {
            format!("no step passed, down to {}/s per room", format_number(*lowest_rate))
        }
    }
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
                let record = run_step(env, &server, series, result.placement, rate, "broadcast")?;
                print_step(kind, result, &record);
                result.steps.push(record);
                server.ensure_running()?;
                probe::wait_for_fds(server.pid, SETTLE_TIMEOUT, |fds| fds <= baseline_fds + 16)?;
            }
        }
    }
}

/// Runs one broadcast step of `series` at `rate` per publisher against
/// `server`; `tag` starts the report's name.
///
/// # Errors
/// loadgen failed or wrote no report.
pub fn run_step(
    env: &Env,
    server: &Server,
    series: &Series,
    placement: Placement,
    rate: f64,
    tag: &str,
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
    let rate_name = format_number(rate).replace(' ', "");
    let name = format!("{tag}-{}-{}-r{rate_name}", series.label(), placement.name());
    let sampled = sampled_run(server, &env.loadgen(server, placement, &name, args))?;
    let window = sampled.run.summary.publishing_unix_ms;
    let batch_size = window.and_then(|(start, end)| window_batch_size(&sampled.counters, start, end));
    let deliveries = sampled.run.summary.deliveries;
    let cpu = window.and_then(|(start, end)| probe::window_cost(&sampled.cpu, start, end, deliveries));
    let step = Step::new(sampled.run.summary.observation(rate));
    Ok(StepRecord { step, batch_size, cpu, run: sampled.run })
}

/// A loadgen run with the server sampled while it went on.
#[derive(Debug)]
pub struct Sampled {
    /// The run.
    pub run: Run,
    /// The server's CPU, every [`CPU_SAMPLE_EVERY`].
    pub cpu: Vec<Sample<CpuTimes>>,
    /// Broker only: its write counters, every [`COUNTERS_EVERY`] CPU samples.
    pub counters: Vec<Sample<WriteCounters>>,
}

/// Runs `invocation` against `server`, reading the server's CPU (and the
/// broker's `/metrics`) until loadgen exits.
///
/// # Errors
/// loadgen failed, or the server's `/proc` entry vanished.
pub fn sampled_run(server: &Server, invocation: &Invocation) -> anyhow::Result<Sampled> {
    let mut child = invocation.spawn()?;
    let (mut cpu, mut counters) = (Vec::new(), Vec::new());
    let sampling = probe::while_running_every(&mut child, CPU_SAMPLE_EVERY, || {
        cpu.push((probe::unix_ms(), probe::cpu_times(server.pid)?));
        if server.kind == ServerKind::Broker && cpu.len() % COUNTERS_EVERY == 1 {
            match probe::write_counters(server.port) {
                Ok(reading) => counters.push((probe::unix_ms(), reading)),
                Err(e) => eprintln!("compare: reading broker /metrics: {e:#}"),
            }
        }
        Ok(())
    });
    if sampling.is_err() {
        let _ = child.kill();
    }
    let run = invocation.finish(child)?;
    sampling?;
    Ok(Sampled { run, cpu, counters })
}

/// Frames per write between the first sample at or after `start_ms` and the
/// last at or before `end_ms`.
fn window_batch_size(samples: &[Sample<WriteCounters>], start_ms: u64, end_ms: u64) -> Option<f64> {
    let first = samples.iter().find(|(at, _)| *at >= start_ms)?;
    let last = samples.iter().rev().find(|(at, _)| *at <= end_ms)?;
    first.1.batch_size(&last.1)
}

fn print_step(kind: ServerKind, result: &SeriesResult, record: &StepRecord) {
    let observation = &record.step.observation;
    let p99 = observation.p99_ms.map_or("-".to_owned(), |p99| format!("{p99:.1} ms"));
    let batch = record.batch_size.map_or(String::new(), |batch| format!(", {batch:.2} frames/write"));
    let cpu = record.cpu.map_or(String::new(), |cpu| {
        format!(", cpu {:.2} user + {:.2} sys µs/delivery", cpu.user_us, cpu.system_us)
    });
    let lag = &record.run.summary.self_check;
    eprintln!(
        "compare: {} broadcast {} {}: {}/s per room -> {:.0} deliveries/s, p99 {p99}{batch}{cpu}; \
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

    fn sample(at: u64, frames_out: u64, writes: u64) -> Sample<WriteCounters> {
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
