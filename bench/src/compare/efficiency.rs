//! CPU per delivery at one fixed load: after every ladder has run, each
//! pinned broadcast shape is run once more against every server at the same
//! rate, [`FIXED_LOAD_SHARE`] of the lowest capacity any server showed, so
//! every server sustains it and the servers do the same work.
//!
//! At that load, user and system CPU per delivery (from `/proc/PID/stat`
//! over the publishing window, see [`climb`](super::climb)) compare the
//! servers' efficiency, which a noisy neighbour moves far less than a
//! capacity; and the p99s, taken at one load, can be set against each other
//! and against the raw reference's.

use serde::Serialize;

use super::climb::{self, StepRecord};
use super::env::{Env, Placement};
use super::plan::Series;
use super::server::ServerKind;
use super::steps::Capacity;
use super::suite::ServerResults;
use super::table::format_number;

/// The fixed load, as a share of the lowest capacity among the servers.
pub const FIXED_LOAD_SHARE: f64 = 0.6;

/// One shape at its fixed load, against every server.
#[derive(Debug, Clone, Serialize)]
pub struct FixedLoad {
    /// The shape, `20x100`.
    pub label: String,
    /// Messages per second per room.
    pub rate: f64,
    /// What the rate is a share of.
    pub basis: Basis,
    /// Clients in the step.
    pub clients: u32,
    /// One per server, in the order of the results it was chosen from.
    pub runs: Vec<FixedLoadRun>,
}

/// One server's step at a fixed load.
#[derive(Debug, Clone, Serialize)]
pub struct FixedLoadRun {
    /// Which server.
    pub server: ServerKind,
    /// The step; `None` when it was not run or broke off.
    pub record: Option<StepRecord>,
    /// Why there is no step.
    pub error: Option<String>,
}

/// What a fixed load was chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The lowest rate some server's ladder passed at its highest.
    LowestCapacity,
    /// No server passed a step: the lowest rate any ladder tried. CPU per
    /// delivery still compares; the p99s may all be over the limit.
    LowestRateTried,
}

/// The fixed rate per publisher: [`FIXED_LOAD_SHARE`] of the lowest rate
/// that some server's ladder passed at its highest. Servers with no figure
/// (no step passed, or an error) do not lower it. When no server passed
/// anything, the share is of the lowest rate tried; `None` without any
/// ladder outcome.
pub fn fixed_rate<'a>(capacities: impl IntoIterator<Item = Option<&'a Capacity>>) -> Option<(f64, Basis)> {
    let capacities: Vec<&Capacity> = capacities.into_iter().flatten().collect();
    let passed =
        capacities.iter().filter_map(|capacity| capacity.step().map(|step| step.rate)).reduce(f64::min);
    let tried = || {
        let lowest = capacities.iter().filter_map(|capacity| match capacity {
            Capacity::NonePassed { lowest_rate, .. } => Some(*lowest_rate),
            _ => None,
        });
        lowest.reduce(f64::min).map(|rate| (rate, Basis::LowestRateTried))
    };
    let (rate, basis) = passed.map(|rate| (rate, Basis::LowestCapacity)).or_else(tried)?;
    Some((rate * FIXED_LOAD_SHARE, basis))
}

/// Runs every pinned shape of the plan at its fixed load against every
/// server in `results` that ran its ladders.
pub fn run(env: &Env, results: &[ServerResults]) -> Vec<FixedLoad> {
    let mut loads = Vec::new();
    for series in &env.plan.series {
        let label = series.label();
        let capacities = results.iter().map(|result| {
            let pinned = result.series.iter().find(|s| s.label == label && s.placement == Placement::Pinned);
            pinned.and_then(|s| s.capacity.as_ref())
        });
        let Some((rate, basis)) = fixed_rate(capacities) else {
            eprintln!("compare: broadcast {label}: no ladder finished, so no fixed load");
            continue;
        };
        eprintln!(
            "compare: broadcast {label} at a fixed {}/s per room ({} deliveries/s) for CPU per delivery",
            format_number(rate),
            format_number(rate * f64::from(series.clients()))
        );
        let runs = results
            .iter()
            .map(|result| match result.series.is_empty() {
                true => {
                    FixedLoadRun { server: result.server, record: None, error: Some("not run".to_owned()) }
                }
                false => fixed_load_run(env, result.server, series, rate),
            })
            .collect();
        loads.push(FixedLoad { label, rate, basis, clients: series.clients(), runs });
    }
    loads
}

fn fixed_load_run(env: &Env, kind: ServerKind, series: &Series, rate: f64) -> FixedLoadRun {
    let label = series.label();
    let step = env.start(kind, Placement::Pinned).and_then(|server| {
        let record = climb::run_step(env, &server, series, Placement::Pinned, rate, "fixed")?;
        server.stop()?;
        Ok(record)
    });
    match step {
        Ok(record) => {
            let cpu = record.cpu.as_ref();
            eprintln!(
                "compare: {} broadcast {label} fixed load: user {:.2?} µs, system {:.2?} µs per delivery, \
                 p99 {:.1?} ms => {:?}",
                kind.name(),
                cpu.map(|cost| cost.user_us),
                cpu.map(|cost| cost.system_us),
                record.step.observation.p99_ms,
                record.step.verdict
            );
            FixedLoadRun { server: kind, record: Some(record), error: None }
        }
        Err(e) => {
            eprintln!("compare: {} broadcast {label} fixed load: {e:#}", kind.name());
            FixedLoadRun { server: kind, record: None, error: Some(format!("{e:#}")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::steps::{Bound, Observation};

    fn passed(rate: f64) -> Observation {
        Observation::clean(rate, rate * 2000.0, 5.0)
    }

    #[test]
    fn the_fixed_load_is_a_share_of_the_slowest_server_that_passed() {
        let broker = Capacity::AtLeast { step: passed(500.0), bound: Bound::Loadgen };
        let peer = Capacity::Sustained { step: passed(100.0), ceiling: passed(120.0) };
        let slow = Capacity::Sustained { step: passed(20.0), ceiling: passed(24.0) };
        let hopeless = Capacity::NonePassed { lowest_rate: 1.0, loadgen_bound: false };
        let rate = fixed_rate([Some(&broker), Some(&peer), Some(&slow), Some(&hopeless), None]);
        assert!(
            rate.is_some_and(|(rate, basis)| (rate - 12.0).abs() < 1e-9 && basis == Basis::LowestCapacity),
            "60 % of 20, got {rate:?}"
        );
        // Nobody passed (a starved machine): 60 % of the lowest rate tried,
        // so CPU per delivery is still measured.
        let also_hopeless = Capacity::NonePassed { lowest_rate: 5.0, loadgen_bound: true };
        let rate = fixed_rate([Some(&hopeless), Some(&also_hopeless), None]);
        assert!(
            rate.is_some_and(|(rate, basis)| (rate - 0.6).abs() < 1e-9 && basis == Basis::LowestRateTried)
        );
        assert_eq!(fixed_rate([None]), None);
        assert_eq!(fixed_rate([]), None);
    }
}
