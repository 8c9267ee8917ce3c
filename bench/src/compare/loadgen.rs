//! Running `target/release/loadgen` and reading its `--json` report.
//!
//! Owns the command line (CPU placement, target, secret, output file) and
//! the [`Summary`]: the few figures the harness judges and tabulates. The
//! full report is kept as JSON next to it, so nothing is lost.
//!
//! loadgen's own self-check covers the whole run, setup ramp included,
//! and connecting thousands of clients on one core makes it late by
//! hundreds of ms before the first message. Whether loadgen limited a
//! broadcast step is therefore judged from its per-second CPU and
//! schedule-lag figures over the publishing seconds only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::steps::{LOADGEN_BUSY_UTILIZATION, LOADGEN_LATE_MEAN_MS, Observation};

/// One loadgen invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The `loadgen` binary.
    pub binary: PathBuf,
    /// `taskset -c N` prefix, if pinned.
    pub cpu: Option<u32>,
    /// Scenario and size flags, e.g. `["broadcast", "--rooms", "20"]`.
    pub args: Vec<String>,
    /// Server port on 127.0.0.1.
    pub port: u16,
    /// The JWT secret the server checks.
    pub secret: String,
    /// Where the report goes; the printed table goes next to it (`.txt`).
    pub json: PathBuf,
}

impl Invocation {
    /// Starts loadgen in the background.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn spawn(&self) -> anyhow::Result<Child> {
        let log_path = self.json.with_extension("txt");
        let log =
            std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = placed(&self.binary, self.cpu);
        command
            .args(&self.args)
            .args(["--target", &format!("http://127.0.0.1:{}", self.port)])
            // Generous timeouts: a server that accepts slower than the
            // offered rate still gets every client, and shows it as
            // connect latency rather than as failed clients.
            .args(["--quiet", "--allow-loss", "--setup-timeout", "120s", "--connect-timeout", "60s"])
            .arg("--json")
            .arg(&self.json)
            .env("LOADGEN_JWT_SECRET", &self.secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.cpu.is_some() {
            // One core, one worker thread: no threads fighting over it.
            command.args(["--threads", "1"]);
        }
        command.spawn().with_context(|| format!("starting {}", self.binary.display()))
    }

    /// Runs loadgen to the end and reads its report.
    ///
    /// # Errors
    /// loadgen could not start, exited with an error, or wrote no report.
    pub fn run(&self) -> anyhow::Result<Run> {
        let child = self.spawn()?;
        self.finish(child)
    }

    /// Waits for a [`spawn`](Self::spawn)ed loadgen and reads its report.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn finish(&self, mut child: Child) -> anyhow::Result<Run> {
        let status = child.wait().context("waiting for loadgen")?;
        if !status.success() {
            let log = std::fs::read_to_string(self.json.with_extension("txt")).unwrap_or_default();
            bail!("loadgen {} failed ({status}): {}", self.args.join(" "), tail(&log, 600));
        }
        Run::read(&self.json)
    }
}

/// A command prefixed with `taskset -c CPU` when `cpu` is given.
pub fn placed(program: &Path, cpu: Option<u32>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu.to_string()]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn tail(text: &str, chars: usize) -> String {
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

/// A finished run: its summary and the whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The figures the harness uses.
    pub summary: Summary,
    /// loadgen's report as written.
    pub report: serde_json::Value,
}

impl Run {
    /// Reads and summarizes a report file.
    ///
    /// # Errors
    /// The file is missing or is not a loadgen report.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let summary = Summary::from_report(&report).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { summary, report })
    }
}

/// The part of loadgen's report the harness reads.
#[derive(Debug, Clone, Deserialize)]
struct ReportJson {
    started_unix_ms: u64,
    stages: Vec<StageJson>,
    clients: ClientsJson,
    phases: Vec<PhaseJson>,
    messages: Option<TallyJson>,
    self_check: SelfCheckJson,
    loss: bool,
    loss_reasons: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct StageJson {
    name: String,
    start_s: f64,
    end_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct ClientsJson {
    planned: u64,
    connected: u64,
    #[serde(default)]
    joined: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct TallyJson {
    unique: u64,
    lost: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct PhaseJson {
    #[serde(flatten)]
    figures: Phase,
    per_second: Vec<u64>,
    mean_ms_per_second: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize)]
struct SelfCheckJson {
    cpu: CpuJson,
    worker_threads: u64,
    utilization: f64,
    schedule_lag_p99_ms: f64,
    warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct CpuJson {
    cores_per_second: Vec<f64>,
}

/// One phase's figures.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Phase {
    /// `connect`, `join_ack`, `message`, …
    pub name: String,
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Events per second while the phase was active.
    pub rate_per_s: f64,
}

/// How hard loadgen worked, over the whole run and while publishing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SelfCheck {
    /// Whole run: mean cores busy / worker threads.
    pub utilization: f64,
    /// Whole run: schedule lag p99, ms (setup ramp included).
    pub schedule_lag_p99_ms: f64,
    /// Publishing seconds: mean cores busy / worker threads.
    pub publishing_utilization: Option<f64>,
    /// Publishing seconds: the highest per-second mean schedule lag, ms.
    pub publishing_lag_ms: Option<f64>,
    /// loadgen's warnings, verbatim.
    pub warnings: Vec<String>,
}

impl SelfCheck {
    fn new(json: SelfCheckJson, lag: Option<&PhaseJson>, run: Option<&StageJson>) -> Self {
        let seconds = run.map(|stage| publishing_seconds(stage.start_s, stage.end_s));
        let workers = json.worker_threads.max(1) as f64;
        let publishing_utilization = seconds.clone().and_then(|range| {
            let cores = json.cpu.cores_per_second.get(range)?;
            (!cores.is_empty()).then(|| cores.iter().sum::<f64>() / cores.len() as f64 / workers)
        });
        let publishing_lag_ms = seconds.and_then(|range| {
            let lag = lag?;
            let means = lag.mean_ms_per_second.get(range.clone())?.iter().zip(&lag.per_second[range]);
            means.filter(|(_, count)| **count > 0).map(|(mean, _)| *mean).reduce(f64::max)
        });
        Self {
            utilization: json.utilization,
            schedule_lag_p99_ms: json.schedule_lag_p99_ms,
            publishing_utilization,
            publishing_lag_ms,
            warnings: json.warnings,
        }
    }

    /// loadgen's CPU was at its limit while publishing.
    pub fn is_saturated(&self) -> bool {
        self.publishing_utilization.unwrap_or(self.utilization) >= LOADGEN_BUSY_UTILIZATION
    }

    /// loadgen acted late while publishing, so latencies include its delay.
    pub fn is_late(&self) -> bool {
        self.publishing_lag_ms.is_some_and(|lag| lag >= LOADGEN_LATE_MEAN_MS)
    }
}

/// The whole seconds (indices of loadgen's per-second series) inside a
/// stage; when there is none, the seconds it touches.
pub fn publishing_seconds(start_s: f64, end_s: f64) -> std::ops::Range<usize> {
    let whole = (start_s.ceil() as usize)..(end_s.floor() as usize);
    if whole.is_empty() { (start_s.floor() as usize)..(end_s.ceil() as usize) } else { whole }
}

/// One loadgen stage, in ms since the Unix epoch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StageWindow {
    /// `setup`, `run`, `join`, `drain`, …
    pub name: String,
    /// When it began.
    pub start_unix_ms: u64,
    /// When it ended.
    pub end_unix_ms: u64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Clients planned and connected.
    pub clients_planned: u64,
    /// Clients that got in.
    pub clients_connected: u64,
    /// Clients that joined a room.
    pub clients_joined: u64,
    /// loadgen's stages (`setup`, `run`, `join`, `drain`, …) in ms since
    /// the Unix epoch.
    pub stages: Vec<StageWindow>,
    /// Phases with samples.
    pub phases: Vec<Phase>,
    /// Distinct message deliveries.
    pub deliveries: u64,
    /// Messages lost.
    pub messages_lost: u64,
    /// Length of the `run` stage (publishing), s.
    pub run_secs: f64,
    /// From the start of the `run` stage to the end of the `drain` stage (or
    /// of `run`), in ms since the Unix epoch: when the step's messages went
    /// out.
    pub publishing_unix_ms: Option<(u64, u64)>,
    /// Any loss at all.
    pub loss: bool,
    /// What was lost.
    pub loss_reasons: Vec<String>,
    /// loadgen's self-check.
    pub self_check: SelfCheck,
}

impl Summary {
    /// Summarizes a loadgen report.
    ///
    /// # Errors
    /// The JSON lacks a field the harness needs.
    pub fn from_report(report: &serde_json::Value) -> anyhow::Result<Self> {
        let json = ReportJson::deserialize(report).context("not a loadgen report")?;
        let stage = |name: &str| json.stages.iter().find(|stage| stage.name == name);
        let run = stage("run");
        let at = |seconds: f64| json.started_unix_ms + (seconds * 1000.0) as u64;
        let publishing_unix_ms = run.map(|run| (at(run.start_s), at(stage("drain").unwrap_or(run).end_s)));
        let lag = json.phases.iter().find(|phase| phase.figures.name == "schedule_lag");
        let self_check = SelfCheck::new(json.self_check.clone(), lag, run);
        let stages = json
            .stages
            .iter()
            .map(|stage| StageWindow {
                name: stage.name.clone(),
                start_unix_ms: at(stage.start_s),
                end_unix_ms: at(stage.end_s),
            })
            .collect();
        Ok(Self {
            clients_planned: json.clients.planned,
            clients_connected: json.clients.connected,
            clients_joined: json.clients.joined,
            stages,
            phases: json.phases.iter().map(|phase| phase.figures.clone()).collect(),
            deliveries: json.messages.as_ref().map_or(0, |tally| tally.unique),
            messages_lost: json.messages.as_ref().map_or(0, |tally| tally.lost),
            run_secs: run.map_or(0.0, |stage| stage.end_s - stage.start_s),
            publishing_unix_ms,
            loss: json.loss,
            loss_reasons: json.loss_reasons,
            self_check,
        })
    }

    /// From the start of stage `first` to the end of stage `last` (or of
    /// `first`, when there is no `last`), ms since the Unix epoch.
    pub fn window(&self, first: &str, last: &str) -> Option<(u64, u64)> {
        let stage = |name: &str| self.stages.iter().find(|stage| stage.name == name);
        let first = stage(first)?;
        Some((first.start_unix_ms, stage(last).unwrap_or(first).end_unix_ms))
    }

    /// The phase named `name`, if it had samples.
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|phase| phase.name == name)
    }

    /// Distinct deliveries per second of the publishing stage.
    pub fn deliveries_per_s(&self) -> f64 {
        if self.run_secs > 0.0 { self.deliveries as f64 / self.run_secs } else { 0.0 }
    }

    /// The broadcast step this run was, at `rate` per publisher.
    pub fn observation(&self, rate: f64) -> Observation {
        Observation {
            rate,
            deliveries_per_s: self.deliveries_per_s(),
            p99_ms: self.phase("message").map(|phase| phase.p99_ms),
            loss: self.loss.then(|| self.loss_reasons.join("; ")),
            loadgen_saturated: self.self_check.is_saturated(),
            loadgen_late: self.self_check.is_late(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lag_ms: f64, lost: u64) -> serde_json::Value {
        serde_json::json!({
            "scenario": "broadcast",
            "started_unix_ms": 10_000,
            "stages": [
                {"name": "setup", "start_s": 0.1, "end_s": 1.6},
                {"name": "run", "start_s": 1.6, "end_s": 4.6},
                {"name": "drain", "start_s": 4.6, "end_s": 4.7}
            ],
            "clients": {"planned": 2000, "connected": 2000, "joined": 2000},
            "phases": [
                {"name": "message", "count": 600000, "p50_ms": 3.0, "p99_ms": 12.5, "rate_per_s": 1.0e5,
                 "min_ms": 0.1, "per_second": [0, 50000, 200000, 200000, 150000],
                 "mean_ms_per_second": [0.0, 3.0, 3.0, 3.0, 3.0]},
                {"name": "schedule_lag", "count": 9000, "p50_ms": 1.0, "p99_ms": 300.0, "rate_per_s": 1.0e3,
                 "per_second": [4000, 3000, 1000, 1000, 500],
                 "mean_ms_per_second": [90.0, 200.0, 1.0, lag_ms, 1.0]}
            ],
            "messages": {"expected": 600000 + lost, "unique": 600000, "lost": lost},
            "self_check": {"cpu": {"cpu_secs": 3.0, "wall_secs": 4.7, "cores_per_second": [1.0, 1.0, 0.5, 0.6]},
                           "worker_threads": 1, "utilization": 0.9, "busy_seconds": 2,
                           "schedule_lag_p99_ms": 300.0, "warnings": ["loadgen fell behind"]},
            "loss": lost > 0,
            "loss_reasons": []
        })
    }

    #[test]
    fn a_broadcast_report_becomes_an_observation() {
        let summary = Summary::from_report(&report(1.0, 0)).expect("valid report");
        assert!((summary.deliveries_per_s() - 200_000.0).abs() < 1e-6);
        assert_eq!(summary.self_check.publishing_utilization, Some(0.55));
        assert_eq!(summary.self_check.publishing_lag_ms, Some(1.0));
        let observation = summary.observation(100.0);
        assert_eq!(observation.p99_ms, Some(12.5));
        // The setup ramp's lag and CPU do not count against the step.
        assert!(observation.loss.is_none() && !observation.loadgen_late && !observation.loadgen_saturated);
        let late = Summary::from_report(&report(25.0, 3)).expect("valid report").observation(100.0);
        assert!(late.loss.is_some() && late.loadgen_late);
    }

    #[test]
    fn publishing_runs_from_the_run_stage_to_the_end_of_the_drain() {
        let mut json = report(1.0, 0);
        let summary = Summary::from_report(&json).expect("valid report");
        assert_eq!(summary.publishing_unix_ms, Some((11_600, 14_700)));
        assert_eq!(summary.window("run", "drain"), summary.publishing_unix_ms);
        assert_eq!(summary.window("setup", "setup"), Some((10_100, 11_600)));
        assert_eq!(summary.window("drain", "gone"), Some((14_600, 14_700)));
        assert_eq!(summary.window("join", "drain"), None);
        assert_eq!(summary.clients_joined, 2000);
        json["stages"].as_array_mut().expect("stages").retain(|stage| stage["name"] != "drain");
        let no_drain = Summary::from_report(&json).expect("valid report");
        assert_eq!(no_drain.publishing_unix_ms, Some((11_600, 14_600)));
        json["stages"].as_array_mut().expect("stages").retain(|stage| stage["name"] != "run");
        assert_eq!(Summary::from_report(&json).expect("valid report").publishing_unix_ms, None);
    }

    #[test]
    fn publishing_seconds_are_the_whole_seconds_of_the_stage() {
        assert_eq!(publishing_seconds(1.6, 4.6), 2..4);
        assert_eq!(publishing_seconds(0.6, 3.7), 1..3);
        assert_eq!(publishing_seconds(0.2, 0.9), 0..1);
    }

    #[test]
    fn other_json_is_refused() {
        assert!(Summary::from_report(&serde_json::json!({"phases": []})).is_err());
    }
}
