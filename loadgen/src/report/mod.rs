//! The end-of-run [`Report`]: every figure, the exact configuration, and
//! the verdict; printed as a plain table, written as JSON.
//!
//! It is built from plain values ([`Measurements`], with the scenario's
//! [`Outcome`]), never from a live run, so the scenarios depend on it and
//! it on none of them.
//!
//! A run has *loss* when any expected delivery or notice never arrived, or
//! any client failed to connect, join, or stay connected. The binary exits
//! non-zero on loss unless `--allow-loss`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub mod drops;
pub mod soak;

pub use self::drops::{DeliverySpread, DropReport};
use self::soak::SoakReport;
use crate::accounting::Tally;
use crate::config::{RunOptions, Scenario, TargetOptions};
use crate::selfcheck::{self, CpuUsage, FdLimit, SelfCheck};
use crate::session::Counts;
use crate::stats::{Phase, PhaseData};

/// Percentile levels of the latency curves: 1 − 10^(−k/10), k = 0..=50,
/// i.e. from 0 % to 99.999 %.
const CURVE_STEPS: u32 = 50;

/// What a scenario hands back for the report.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Message deliveries, when the scenario publishes.
    pub messages: Option<Tally>,
    /// `user_joined` notices, when checked.
    pub join_notices: Option<Tally>,
    /// `user_left` notices, when checked.
    pub leave_notices: Option<Tally>,
    /// Every session's counters, summed.
    pub counts: Counts,
    /// Clients that joined their room.
    pub joined: u64,
    /// The soak's gauges and faulty clients (a soak runs in one process,
    /// so this never travels from a worker).
    #[serde(skip)]
    pub soak: Option<SoakReport>,
    /// Forced drops and what each member got despite them.
    pub drops: Option<DropReport>,
}

/// Everything a finished run measured, as plain values; what a worker
/// process sends its parent, and what [`Measurements::merge`] adds up.
#[derive(Debug, Serialize, Deserialize)]
pub struct Measurements {
    /// Every phase's samples, merged.
    pub phases: Vec<PhaseData>,
    /// Clients that got into the namespace.
    pub connected: u64,
    /// Connect failures by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Sessions that ended early, by cause.
    pub ended_early: BTreeMap<String, u64>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// The load generator's CPU over the run.
    pub cpu: CpuUsage,
    /// What the scenario tallied.
    pub outcome: Outcome,
    /// Each target's share, in `--target` order.
    pub per_target: Vec<TargetTally>,
}

impl Measurements {
    /// Adds another process's measurements of the same run: histograms and
    /// per-second series add exactly, counts sum, CPU seconds sum (cores
    /// per second too), the wall time is the longer. The stages are this
    /// one's (every worker goes through the same ones, in step).
    pub fn merge(&mut self, other: Measurements) {
        for data in other.phases {
            match self.phases.iter_mut().find(|mine| mine.phase == data.phase) {
                Some(mine) => {
                    mine.merge(&data.histogram, &data.per_second, &data.micros_per_second);
                    mine.fresh += data.fresh;
                }
                None => self.phases.push(data),
            }
        }
        self.connected += other.connected;
        for (into, from) in
            [(&mut self.connect_failures, other.connect_failures), (&mut self.ended_early, other.ended_early)]
        {
            for (cause, count) in from {
                *into.entry(cause).or_default() += count;
            }
        }
        self.cpu.cpu_secs += other.cpu.cpu_secs;
        self.cpu.wall_secs = self.cpu.wall_secs.max(other.cpu.wall_secs);
        let cores = &mut self.cpu.cores_per_second;
        if cores.len() < other.cpu.cores_per_second.len() {
            cores.resize(other.cpu.cores_per_second.len(), 0.0);
        }
        for (total, value) in cores.iter_mut().zip(&other.cpu.cores_per_second) {
            *total += value;
        }
        self.outcome.merge(other.outcome);
        for (mine, theirs) in self.per_target.iter_mut().zip(other.per_target) {
            mine.connected += theirs.connected;
            mine.connect_failures += theirs.connect_failures;
            mine.ended_early += theirs.ended_early;
            mine.deliveries += theirs.deliveries;
            mine.pings += theirs.pings;
        }
    }
}

impl Outcome {
    /// Adds another process's outcome (see [`Measurements::merge`]).
    pub fn merge(&mut self, other: Outcome) {
        for (mine, theirs) in [
            (&mut self.messages, other.messages),
            (&mut self.join_notices, other.join_notices),
            (&mut self.leave_notices, other.leave_notices),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(total), Some(tally)) => total.add(&tally),
                (None, tally) => *mine = tally,
                (Some(_), None) => {}
            }
        }
        self.counts.add(&other.counts);
        self.joined += other.joined;
        match (self.drops.as_mut(), other.drops) {
            (Some(total), Some(drops)) => total.merge(&drops),
            (None, drops) => self.drops = drops,
            (Some(_), None) => {}
        }
    }
}

/// One target's share of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetTally {
    /// The URL as given.
    pub url: String,
    /// The address it resolved to.
    pub addr: String,
    /// Source addresses its connections were spread over.
    pub source_ips: Vec<String>,
    /// Clients meant to connect to it (every `n`th, `n` the target count).
    pub planned: u64,
    /// Clients that got into its namespace.
    pub connected: u64,
    /// Clients that did not.
    pub connect_failures: u64,
    /// Its sessions that ended before the run did.
    pub ended_early: u64,
    /// `message` events its sessions received.
    pub deliveries: u64,
    /// Engine.IO pings its sessions answered.
    pub pings: u64,
}

/// A named span of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    /// `setup`, `run`, `drain`, …
    pub name: String,
    /// Start, clock ns.
    pub start_ns: u64,
    /// End, clock ns (open while running).
    pub end_ns: Option<u64>,
}

/// A stage in the report, in seconds since the run began.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Start, s.
    pub start_s: f64,
    /// End, s.
    pub end_s: f64,
}

/// One phase's latency and throughput.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name.
    pub name: &'static str,
    /// Samples.
    pub count: u64,
    /// Samples that counted toward delivery accounting.
    pub fresh: u64,
    /// Minimum, ms.
    pub min_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Events per second over the seconds from the first to the last event.
    pub rate_per_s: f64,
    /// Busiest second.
    pub peak_per_s: u64,
    /// Events in each second since the run began.
    pub per_second: Vec<u64>,
    /// Mean latency in each second since the run began, ms (0 when empty).
    pub mean_ms_per_second: Vec<f64>,
    /// `[percentile, ms]` points of the latency curve.
    pub percentiles: Vec<[f64; 2]>,
}

impl PhaseReport {
    fn new(data: &PhaseData) -> Self {
        let h = &data.histogram;
        let ms = |micros: u64| micros as f64 / 1e3;
        let first = data.per_second.iter().position(|&n| n > 0).unwrap_or(0);
        let last = data.per_second.iter().rposition(|&n| n > 0).unwrap_or(0);
        let active_secs = (last + 1 - first.min(last + 1)).max(1) as f64;
        Self {
            name: data.phase.name(),
            count: h.len(),
            fresh: data.fresh,
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1e3,
            rate_per_s: h.len() as f64 / active_secs,
            peak_per_s: data.per_second.iter().copied().max().unwrap_or(0),
            per_second: data.per_second.clone(),
            mean_ms_per_second: data
                .per_second
                .iter()
                .zip(&data.micros_per_second)
                .map(|(&n, &micros)| if n == 0 { 0.0 } else { micros as f64 / n as f64 / 1e3 })
                .collect(),
            percentiles: curve(h),
        }
    }
}

fn curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    (0..=CURVE_STEPS)
        .map(|k| {
            let quantile = 1.0 - 10f64.powf(-f64::from(k) / 10.0);
            [quantile * 100.0, h.value_at_quantile(quantile) as f64 / 1e3]
        })
        .collect()
}

/// Who connected and who did not.
#[derive(Debug, Clone, Serialize)]
pub struct Clients {
    /// Clients the scenario meant to connect (steady ones; churners aside).
    pub planned: u64,
    /// Clients that got into the namespace (churners included).
    pub connected: u64,
    /// Steady clients that joined their room.
    pub joined: u64,
    /// Connect failures by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Sessions that ended before the run did, by cause.
    pub ended_early: BTreeMap<String, u64>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// The exact configuration: scenario sizes, target, run options, and
    /// what was resolved from them.
    pub config: serde_json::Value,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Stages of the run.
    pub stages: Vec<StageReport>,
    /// Connection outcomes.
    pub clients: Clients,
    /// Each target's share, in `--target` order.
    pub targets: Vec<TargetTally>,
    /// Latency and throughput per phase (phases without samples left out).
    pub phases: Vec<PhaseReport>,
    /// Message deliveries against accepted sends.
    pub messages: Option<Tally>,
    /// `user_joined` notices against those owed.
    pub join_notices: Option<Tally>,
    /// `user_left` notices against those owed.
    pub leave_notices: Option<Tally>,
    /// Summed session counters.
    pub counts: Counts,
    /// The soak's gauges (before, peak, after) and faulty clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
    /// Forced drops (`broadcast --drop-every`): reconnects, and delivered ÷
    /// expected per member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<DropReport>,
    /// The load generator's own CPU and lag.
    pub self_check: SelfCheck,
    /// Whether anything was lost.
    pub loss: bool,
    /// What was lost, in words.
    pub loss_reasons: Vec<String>,
}

/// What [`build`] needs besides the harness and outcome.
#[derive(Debug)]
pub struct Context<'a> {
    /// The scenario and its sizes.
    pub scenario: &'a Scenario,
    /// The target options.
    pub target: &'a TargetOptions,
    /// The run options.
    pub options: &'a RunOptions,
    /// Wall-clock start.
    pub started: SystemTime,
    /// Open-file limit in force.
    pub fd_limit: FdLimit,
    /// Tokio worker threads per process.
    pub workers: usize,
    /// Load generator processes whose measurements were merged.
    pub processes: u32,
}

/// Assembles the report of a finished run.
pub fn build(context: &Context<'_>, measured: Measurements) -> Report {
    let Measurements {
        phases: snapshot,
        connected,
        connect_failures,
        ended_early,
        stages,
        cpu,
        outcome,
        mut per_target,
    } = measured;
    let planned = planned_clients(context.scenario);
    let targets = per_target.len() as u64;
    for (index, tally) in (0..).zip(per_target.iter_mut()) {
        // Client n goes to target n mod targets.
        tally.planned = planned / targets + u64::from(index < planned % targets);
    }
    let lag = snapshot
        .iter()
        .find(|data| data.phase == Phase::ScheduleLag)
        .cloned()
        .unwrap_or_else(|| PhaseData::new(Phase::ScheduleLag));
    // CPU is summed over the processes, so is their capacity.
    let threads = context.workers * context.processes as usize;
    let self_check = selfcheck::assess(cpu, threads, &lag, context.fd_limit.clone());
    let config = serde_json::json!({
        "scenario": context.scenario,
        "target": context.target,
        "run": context.options,
        "resolved": {
            "addr": per_target.iter().map(|tally| tally.addr.clone()).collect::<Vec<_>>(),
            "source_ips": per_target.first().map(|tally| tally.source_ips.clone()).unwrap_or_default(),
            "worker_threads": context.workers,
            "processes": context.processes,
            "fd_limit": context.fd_limit.soft,
        },
    });
    let clients = Clients { planned, connected, joined: outcome.joined, connect_failures, ended_early };
    let ns_to_s = |ns: u64| ns as f64 / 1e9;
    let stages = stages
        .into_iter()
        .map(|stage| StageReport {
            name: stage.name,
            start_s: ns_to_s(stage.start_ns),
            end_s: ns_to_s(stage.end_ns.unwrap_or(stage.start_ns)),
        })
        .collect();
    let mut report = Report {
        scenario: context.scenario.name(),
        config,
        started_unix_ms: context
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        stages,
        clients,
        targets: per_target,
        phases: snapshot.iter().filter(|data| !data.histogram.is_empty()).map(PhaseReport::new).collect(),
        messages: outcome.messages,
        join_notices: outcome.join_notices,
        leave_notices: outcome.leave_notices,
        counts: outcome.counts,
        soak: outcome.soak,
        drops: outcome.drops,
        self_check,
        loss: false,
        loss_reasons: Vec::new(),
    };
    report.loss_reasons = loss_reasons(&report);
    report.loss = !report.loss_reasons.is_empty();
    report
}

fn planned_clients(scenario: &Scenario) -> u64 {
    match scenario {
        Scenario::Connect(c) => u64::from(c.clients),
        Scenario::Join(c) => u64::from(c.clients),
        Scenario::Broadcast(c) => u64::from(c.clients),
        Scenario::Disconnect(c) => u64::from(c.clients),
        Scenario::Mixed(c) => u64::from(c.clients),
        Scenario::Soak(c) => u64::from(c.clients),
    }
}

fn loss_reasons(report: &Report) -> Vec<String> {
    let mut reasons = Vec::new();
    let failed: u64 = report.clients.connect_failures.values().sum();
    if failed > 0 {
        reasons.push(format!("{failed} clients failed to connect"));
    }
    let ended: u64 = report.clients.ended_early.values().sum();
    if ended > 0 {
        reasons.push(format!("{ended} sessions ended early"));
    }
    for (what, tally) in [
        ("messages", &report.messages),
        ("join notices", &report.join_notices),
        ("leave notices", &report.leave_notices),
    ] {
        if let Some(tally) = tally
            && tally.lost > 0
        {
            reasons.push(format!("{} of {} {what} lost", tally.lost, tally.expected));
        }
    }
    if report.counts.foreign > 0 {
        reasons.push(format!("{} messages delivered to non-members", report.counts.foreign));
    }
    if let Some(soak) = &report.soak {
        // The soak promises exactly once and in order, not just no loss.
        if let Some(tally) = &report.messages {
            if tally.duplicated > 0 {
                reasons.push(format!("{} messages duplicated", tally.duplicated));
            }
            if tally.reordered > 0 {
                reasons.push(format!("{} messages out of their publisher's order", tally.reordered));
            }
        }
        if report.counts.out_of_room_order > 0 {
            reasons.push(format!(
                "{} messages out of room order (id went down)",
                report.counts.out_of_room_order
            ));
        }
        reasons.extend(soak.failures());
    }
    reasons
}

impl Report {
    /// The phase named `name`, if it has samples.
    pub fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|phase| phase.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = &self.config["target"];
        let wall = self.self_check.cpu.wall_secs;
        let urls: Vec<&str> = self.targets.iter().map(|tally| tally.url.as_str()).collect();
        let processes = self.config["resolved"]["processes"].as_u64().unwrap_or(1);
        writeln!(
            f,
            "loadgen {} -> {} ns {} auth {} | {} clients{} | {wall:.1} s",
            self.scenario,
            urls.join(" "),
            target["namespace"].as_str().unwrap_or("?"),
            target["auth"].as_str().unwrap_or("?"),
            self.clients.planned,
            if processes > 1 { format!(" over {processes} processes") } else { String::new() },
        )?;
        let stages: Vec<String> =
            self.stages.iter().map(|s| format!("{} {:.1}-{:.1} s", s.name, s.start_s, s.end_s)).collect();
        writeln!(f, "stages: {}", stages.join(", "))?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "phase", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "rate/s", "peak/s"
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "{:<13} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>9}",
                p.name,
                p.count,
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.p999_ms,
                p.max_ms,
                p.rate_per_s,
                p.peak_per_s
            )?;
        }
        writeln!(f)?;
        let c = &self.clients;
        writeln!(
            f,
            "clients: {} planned, {} connected, {} joined; connect failures: {}; ended early: {}",
            c.planned,
            c.connected,
            c.joined,
            map_or_none(&c.connect_failures),
            map_or_none(&c.ended_early)
        )?;
        if self.targets.len() > 1 {
            writeln!(
                f,
                "{:<28} {:>8} {:>9} {:>8} {:>7} {:>12} {:>10}",
                "target", "planned", "connected", "failed", "ended", "deliveries", "pings"
            )?;
            for t in &self.targets {
                writeln!(
                    f,
                    "{:<28} {:>8} {:>9} {:>8} {:>7} {:>12} {:>10}",
                    t.url, t.planned, t.connected, t.connect_failures, t.ended_early, t.deliveries, t.pings
                )?;
            }
        }
        for (what, tally) in [
            ("messages", &self.messages),
            ("join notices", &self.join_notices),
            ("leave notices", &self.leave_notices),
        ] {
            if let Some(t) = tally {
                writeln!(
                    f,
                    "{what}: expected {}, delivered {}, lost {}, duplicated {}, reordered {}, unexpected {}",
                    t.expected, t.unique, t.lost, t.duplicated, t.reordered, t.unexpected
                )?;
            }
        }
        let n = &self.counts;
        if n.sends > 0 || n.deliveries > 0 {
            writeln!(
                f,
                "sends: {} sent, {} acked ok, {} refused; deliveries received: {} ({} untracked, {} unstamped)",
                n.sends, n.sends_accepted, n.sends_refused, n.deliveries, n.untracked, n.unstamped
            )?;
        }
        if n.pings > 0 {
            writeln!(f, "heartbeats: {} Engine.IO pings answered", n.pings)?;
        }
        if !n.errors.is_empty() {
            let errors: Vec<String> =
                n.errors.iter().map(|(code, count)| format!("{code} x{count}")).collect();
            writeln!(f, "error events: {}", errors.join(", "))?;
        }
        if let Some(soak) = &self.soak {
            write!(f, "{soak}")?;
        }
        if let Some(drops) = &self.drops {
            write!(f, "{drops}")?;
        }
        let s = &self.self_check;
        writeln!(
            f,
            "self: cpu {:.2} s in {:.1} s = {:.2} cores of {} worker threads ({:.0}%); schedule lag p99 {:.3} ms, max {:.3} ms; fd limit {}",
            s.cpu.cpu_secs,
            s.cpu.wall_secs,
            if s.cpu.wall_secs > 0.0 { s.cpu.cpu_secs / s.cpu.wall_secs } else { 0.0 },
            s.worker_threads,
            s.utilization * 100.0,
            s.schedule_lag_p99_ms,
            s.schedule_lag_max_ms,
            s.fd_limit.soft
        )?;
        for warning in &s.warnings {
            writeln!(f, "WARNING: {warning}")?;
        }
        if n.sends_refused > 0 {
            writeln!(
                f,
                "NOTE: the target refused {} of {} sends (not counted as loss); a 429 is its per-connection \
                 rate limit (broker: BROKER_RATE_LIMIT_PER_SEC=0)",
                n.sends_refused, n.sends
            )?;
        }
        if self.loss {
            writeln!(f, "result: LOSS - {}", self.loss_reasons.join("; "))
        } else {
            writeln!(f, "result: OK - no loss")
        }
    }
}

fn map_or_none(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Recorder;
    use crate::stats::Sample;

    fn measured(latencies_ms: &[u64], failures: u64, delivered: u64) -> Measurements {
        let recorder = Recorder::new();
        for &ms in latencies_ms {
            recorder.record(Sample {
                phase: Phase::Message,
                latency_ns: ms * 1_000_000,
                at_ns: 0,
                fresh: true,
            });
        }
        let tally = Tally { expected: delivered, unique: delivered, ..Tally::default() };
        Measurements {
            phases: recorder.snapshot(),
            connected: 10,
            connect_failures: BTreeMap::from([("tcp connect".to_owned(), failures)]),
            ended_early: BTreeMap::new(),
            stages: Vec::new(),
            cpu: CpuUsage { cpu_secs: 1.5, wall_secs: 2.0, cores_per_second: vec![0.5, 1.0] },
            outcome: Outcome { messages: Some(tally), joined: 10, ..Outcome::default() },
            per_target: vec![TargetTally { connected: 10, deliveries: delivered, ..TargetTally::default() }],
        }
    }

    #[test]
    fn merged_measurements_equal_one_process_measuring_everything() {
        let mut first = measured(&[1, 2, 3], 1, 30);
        let second = measured(&[40, 50], 2, 20);
        let json = serde_json::to_string(&second).expect("serializes");
        first.merge(serde_json::from_str(&json).expect("deserializes"));
        let whole = measured(&[1, 2, 3, 40, 50], 0, 50);
        let message = |m: &Measurements| m.phases[Phase::Message as usize].histogram.clone();
        assert_eq!(message(&first), message(&whole), "histograms add exactly");
        assert_eq!(first.connected, 20);
        assert_eq!(first.connect_failures["tcp connect"], 3);
        assert_eq!((first.cpu.cpu_secs, first.cpu.wall_secs), (3.0, 2.0));
        assert_eq!(first.cpu.cores_per_second, vec![1.0, 2.0]);
        assert_eq!(first.outcome.messages.map(|t| (t.expected, t.unique)), Some((50, 50)));
        assert_eq!(first.outcome.joined, 20);
        assert_eq!((first.per_target[0].connected, first.per_target[0].deliveries), (20, 50));
    }

    #[test]
    fn phase_report_summarizes_a_histogram() {
        let recorder = Recorder::new();
        for ms in 1..=100u64 {
            let sample = Sample {
                phase: Phase::Message,
                latency_ns: ms * 1_000_000,
                at_ns: (1 + ms / 50) * 1_000_000_000,
                fresh: true,
            };
            recorder.record(sample);
        }
        let data = recorder.snapshot().remove(Phase::Message as usize);
        let report = PhaseReport::new(&data);
        assert_eq!(report.count, 100);
        assert!((report.p50_ms - 50.0).abs() < 0.1, "{}", report.p50_ms);
        assert!((report.max_ms - 100.0).abs() < 0.1);
        assert_eq!(report.per_second, vec![0, 49, 50, 1]);
        assert!((report.rate_per_s - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.peak_per_s, 50);
        assert_eq!(report.percentiles.len(), 51);
        assert!(report.percentiles.windows(2).all(|w| w[0][1] <= w[1][1]));
    }
}
