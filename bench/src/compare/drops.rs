//! Delivery under forced drops: every chat server runs one `loadgen
//! broadcast --drop-every` (members force-closed at the TCP level while
//! their rooms are broadcast to, reconnecting as socket.io-client does),
//! with its connection state recovery on when it has one (the broker,
//! NestJS through socket.io's own; socketioxide has none, so its figure is
//! what users lose without it).
//!
//! The table of its own gives, per server: the reconnects the server
//! recovered, delivered ÷ expected over the dropped members (all of them,
//! and the spread per member), and the replay latency (a recovered
//! reconnect's start to the arrival of the last message published before
//! it). A server that recovers must deliver 100 %.

use std::fmt::Write as _;

use serde::Serialize;

use super::env::{Env, Placement};
use super::loadgen::Run;
use super::plan::{DropsPlan, duration_arg};
use super::server::ServerKind;
use super::table::format_number;

/// One server's forced-drops run.
#[derive(Debug, Clone, Serialize)]
pub struct DropRun {
    /// Which server.
    pub server: ServerKind,
    /// Whether its recovery was asked for (it has one).
    pub recovery: bool,
    /// The figures, when the run finished.
    pub figures: Option<DropFigures>,
    /// loadgen's report.
    pub run: Option<Run>,
    /// Why there are no figures.
    pub error: Option<String>,
}

/// What the table shows of a run, read from loadgen's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropFigures {
    /// Connections dropped.
    pub drops: u64,
    /// Reconnects the server recovered.
    pub recovered: u64,
    /// Reconnects that got a fresh session.
    pub fresh_sessions: u64,
    /// CONNECT acks with a `pid`: 0 when the server offered no recovery.
    pub pid_acks: u64,
    /// Messages owed to every member (dropped or not).
    pub expected: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Dropped members.
    pub dropped_members: u64,
    /// Dropped members that got everything.
    pub complete_members: u64,
    /// Lowest delivered share of a dropped member (0..=1).
    pub min_share: f64,
    /// Median delivered share of a dropped member.
    pub median_share: f64,
    /// Replay latency p50 / p99, ms (none without a recovered reconnect
    /// that had something to replay).
    pub replay_p50_ms: Option<f64>,
    /// See `replay_p50_ms`.
    pub replay_p99_ms: Option<f64>,
}

impl DropFigures {
    /// Reads the figures out of a loadgen report; `None` when it has no
    /// drops section (not a `--drop-every` run).
    pub fn from_report(report: &serde_json::Value) -> Option<Self> {
        let drops = report.get("drops")?;
        let messages = report.get("messages")?;
        let count = |value: &serde_json::Value, key: &str| value[key].as_u64().unwrap_or(0);
        let dropped = &drops["dropped"];
        let replay = report["phases"].as_array()?.iter().find(|phase| phase["name"] == "replay");
        Some(Self {
            drops: count(drops, "drops"),
            recovered: count(drops, "recovered"),
            fresh_sessions: count(drops, "fresh_sessions"),
            pid_acks: count(drops, "pid_acks"),
            expected: count(messages, "expected"),
            delivered: count(messages, "unique"),
            dropped_members: count(dropped, "clients"),
            complete_members: count(dropped, "complete"),
            min_share: dropped["min"].as_f64().unwrap_or(0.0),
            median_share: dropped["p50"].as_f64().unwrap_or(0.0),
            replay_p50_ms: replay.and_then(|phase| phase["p50_ms"].as_f64()),
            replay_p99_ms: replay.and_then(|phase| phase["p99_ms"].as_f64()),
        })
    }

    /// Delivered ÷ expected over every member.
    pub fn share(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { self.delivered as f64 / self.expected as f64 }
    }
}

/// The loadgen arguments of the run.
pub fn loadgen_args(plan: &DropsPlan) -> Vec<String> {
    let args = [
        ("--clients", (plan.rooms * plan.members).to_string()),
        ("--rooms", plan.rooms.to_string()),
        ("--publishers", "1".to_owned()),
        ("--rate", plan.rate.to_string()),
        ("--duration", duration_arg(plan.duration)),
        ("--drop-every", duration_arg(plan.drop_every)),
        ("--reconnect-delay", duration_arg(plan.reconnect_delay)),
    ];
    let mut out = vec!["broadcast".to_owned()];
    out.extend(args.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]));
    out
}

/// Runs the forced-drops broadcast against every server of `kinds` that
/// speaks the chat protocol.
pub fn run(env: &Env, kinds: &[ServerKind]) -> Vec<DropRun> {
    kinds.iter().filter(|kind| kind.speaks_chat()).map(|&kind| run_one(env, kind)).collect()
}

fn run_one(env: &Env, kind: ServerKind) -> DropRun {
    let plan = &env.plan.drops;
    let recovery = kind.recovers();
    let outcome = env.start_recovering(kind, plan.recovery_window_ms).and_then(|server| {
        let run = env.loadgen(&server, Placement::Pinned, "drops", loadgen_args(plan)).run()?;
        server.stop()?;
        Ok(run)
    });
    match outcome {
        Ok(run) => {
            let figures = DropFigures::from_report(&run.report);
            if let Some(figures) = &figures {
                eprintln!(
                    "compare: {} under drops: {} drops, {} recovered, {} of {} delivered ({:.2} %), replay p99 {:.1?} ms",
                    kind.name(),
                    figures.drops,
                    figures.recovered,
                    figures.delivered,
                    figures.expected,
                    figures.share() * 100.0,
                    figures.replay_p99_ms
                );
            }
            let error = figures.is_none().then(|| "the report has no drops section".to_owned());
            DropRun { server: kind, recovery, figures, run: Some(run), error }
        }
        Err(e) => {
            eprintln!("compare: {} under drops: {e:#}", kind.name());
            DropRun { server: kind, recovery, figures: None, run: None, error: Some(format!("{e:#}")) }
        }
    }
}

/// The markdown section: what was run, then one row per server.
pub fn markdown(out: &mut String, plan: &DropsPlan, runs: &[DropRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Delivery under forced drops (`loadgen {}`, pinned as above): {} rooms of {} members, one \
         publisher each at {}/s for {} s; every other member is force-closed at the TCP level (reset or FIN, \
         no goodbye) about every {} s (±50 %) and reconnects after {} s (±50 %) as socket.io-client does, \
         recovering its session when the server offers it (window {} s), else joining its room again. \
         Replay: a recovered reconnect's start to the arrival of the last message published before it.\n",
        loadgen_args(plan).join(" "),
        plan.rooms,
        plan.members,
        format_number(plan.rate),
        plan.duration.as_secs(),
        plan.drop_every.as_secs_f64(),
        plan.reconnect_delay.as_secs_f64(),
        plan.recovery_window_ms / 1000,
    );
    let _ = writeln!(
        out,
        "| server | recovery | drops | recovered | fresh sessions | delivered / expected | dropped members at 100 % | worst member | median member | replay p50 ms | replay p99 ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let name = run.server.name();
        let recovery = match (run.recovery, &run.figures) {
            (false, _) => "none",
            (true, Some(f)) if f.pid_acks == 0 => "asked for, but no pid in its CONNECT ack",
            (true, _) => "on",
        };
        let Some(f) = &run.figures else {
            let error = run.error.as_deref().unwrap_or("not run");
            let _ = writeln!(out, "| {name} | {recovery} | {error} | | | | | | | | |");
            continue;
        };
        let ms = |value: Option<f64>| value.map_or("–".to_owned(), format_number);
        let _ = writeln!(
            out,
            "| {name} | {recovery} | {} | {} | {} | {} / {} = {:.2} % | {} of {} | {:.1} % | {:.1} % | {} | {} |",
            f.drops,
            f.recovered,
            f.fresh_sessions,
            f.delivered,
            f.expected,
            f.share() * 100.0,
            f.complete_members,
            f.dropped_members,
            f.min_share * 100.0,
            f.median_share * 100.0,
            ms(f.replay_p50_ms),
            ms(f.replay_p99_ms),
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::plan::Plan;

    #[test]
    fn figures_come_out_of_the_report() {
        let report = serde_json::json!({
            "messages": {"expected": 1000, "unique": 900, "lost": 100},
            "phases": [{"name": "message", "p50_ms": 1.0, "p99_ms": 2.0},
                       {"name": "replay", "p50_ms": 40.0, "p99_ms": 90.5}],
            "drops": {"drops": 30, "recovered": 0, "fresh_sessions": 30, "pid_acks": 0,
                      "dropped": {"clients": 9, "complete": 1, "min": 0.5, "p50": 0.9}},
        });
        let figures = DropFigures::from_report(&report).expect("a drops report");
        assert_eq!((figures.drops, figures.fresh_sessions, figures.dropped_members), (30, 30, 9));
        assert!((figures.share() - 0.9).abs() < 1e-12);
        assert_eq!((figures.replay_p50_ms, figures.replay_p99_ms), (Some(40.0), Some(90.5)));
        assert_eq!(DropFigures::from_report(&serde_json::json!({"messages": {}})), None);

        let plan = Plan::quick().drops;
        let args = loadgen_args(&plan).join(" ");
        assert!(args.starts_with("broadcast --clients 200 --rooms 10"), "{args}");
        assert!(args.contains("--drop-every 5000ms --reconnect-delay 1000ms"), "{args}");
        let runs = [DropRun {
            server: ServerKind::Socketioxide,
            recovery: false,
            figures: Some(figures),
            run: None,
            error: None,
        }];
        let mut out = String::new();
        markdown(&mut out, &plan, &runs);
        assert!(out.contains("| socketioxide | none | 30 | 0 | 30 | 900 / 1000 = 90.00 % | 1 of 9 | 50.0 % | 90.0 % | 40.0 | 90.5 |"), "{out}");
    }
}
