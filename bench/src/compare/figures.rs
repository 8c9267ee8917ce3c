//! Which figures the table shows, and how each is read out of a server's
//! [`ServerResults`].
//!
//! Every missing figure says why (`error`, `not run`, the fd limit), so an
//! empty cell is never mistaken for a zero.

use super::climb::{SeriesResult, StepRecord};
use super::efficiency::{Basis, FIXED_LOAD_SHARE, FixedLoad};
use super::loadgen::Run;
use super::server::ServerKind;
use super::steps::{Bound, Capacity};
use super::suite::ServerResults;
use super::table::{self, Better, Cell, Row, format_number};

const KIB_PER_MIB: f64 = 1024.0;

/// The rows of the table, one cell per server in `results` order; the
/// fixed-load runs are in that order too.
pub fn rows(results: &[ServerResults], fixed_loads: &[FixedLoad]) -> Vec<Row> {
    let mut rows = Vec::new();
    let connect_clients = first_run_clients(results, |r| r.connect.as_ref());
    let connect = format!("connect {connect_clients}");
    rows.push(row(&format!("{connect}: p50 ms"), Better::Lower, results, |r| {
        phase(r, &r.connect, "connect", P50)
    }));
    rows.push(row(&format!("{connect}: p99 ms"), Better::Lower, results, |r| {
        phase(r, &r.connect, "connect", P99)
    }));
    rows.push(row(&format!("{connect}: accepted/s"), Better::Higher, results, |r| accepted(r, &r.connect)));
    let connect_cpu = |r: &ServerResults| {
        let point = r.memory.iter().find(|point| point.clients == connect_clients);
        point.and_then(|point| point.connect_cpu_us)
    };
    rows.extend(cpu_rows(&connect, "connect", results, connect_cpu));
    rows.push(row(&format!("{connect}: connected"), Better::Neither, results, |r| {
        r.connect.as_ref().map_or_else(|| missing(r), |run| Cell::Value(run.summary.clients_connected as f64))
    }));
    rows.extend(storm_rows(results));
    rows.push(row("join: ack p99 ms", Better::Lower, results, |r| phase(r, &r.join, "join_ack", P99)));
    rows.push(row("join: user_joined p99 ms", Better::Lower, results, |r| {
        phase(r, &r.join, "join_notice", P99)
    }));
    rows.extend(cpu_rows("join", "join", results, |r| r.join_cpu.map(|cost| cost.total_us())));
    rows.push(row("disconnect: user_left p99 ms", Better::Lower, results, |r| {
        phase(r, &r.disconnect, "leave_notice", P99)
    }));
    rows.push(row("RSS idle MiB", Better::Lower, results, |r| {
        r.idle_rss_kib.map_or_else(|| missing(r), |kib| Cell::Value(kib as f64 / KIB_PER_MIB))
    }));
    rows.extend(memory_rows(results));
    rows.extend(broadcast_rows(results));
    for load in fixed_loads {
        rows.extend(fixed_load_rows(results, load));
    }
    rows
}

/// A server that accepts this share of the offered connect rate kept up:
/// its accept rate is only known to be at least that.
const KEPT_UP: f64 = 0.75;

fn accepted(r: &ServerResults, run: &Option<Run>) -> Cell {
    let Some(run) = run else { return missing(r) };
    let Some(connect) = run.summary.phase("connect") else { return Cell::Missing("no samples".to_owned()) };
    let offered = run.report["config"]["scenario"]["rate"].as_f64().unwrap_or(f64::INFINITY);
    if connect.rate_per_s >= KEPT_UP * offered {
        Cell::AtLeast(connect.rate_per_s, "offered rate".to_owned())
    } else {
        Cell::Value(connect.rate_per_s)
    }
}

/// A server busy for less than this share of the storm's ramp had CPU to
/// spare: the connects came no faster, so its accept rate is a lower bound.
pub const SATURATED: f64 = 0.9;

fn storm_rows(results: &[ServerResults]) -> Vec<Row> {
    let name = format!("connect storm {}", first_run_clients(results, |r| r.storm.as_ref()));
    let mut rows = vec![
        row(&format!("{name}: accepted/s"), Better::Higher, results, storm_accepted),
        row(&format!("{name}: p99 ms"), Better::Lower, results, |r| phase(r, &r.storm, "connect", P99)),
    ];
    rows.extend(cpu_rows(&name, "connect", results, |r| r.storm_cpu_us));
    rows
}

/// Server CPU µs per `event` (connect, join), and its inverse: events/s
/// one core could take.
fn cpu_rows(
    name: &str,
    event: &str,
    results: &[ServerResults],
    cpu_us: impl Fn(&ServerResults) -> Option<f64>,
) -> [Row; 2] {
    [
        row(&format!("{name}: server CPU µs per {event}"), Better::Lower, results, |r| {
            cpu_us(r).map_or_else(|| missing(r), Cell::Value)
        }),
        row(&format!("{name}: {event}s/s per server core (from CPU)"), Better::Higher, results, |r| {
            cpu_us(r).filter(|&us| us > 0.0).map_or_else(|| missing(r), |us| Cell::Value(1e6 / us))
        }),
    ]
}

fn storm_accepted(results: &ServerResults) -> Cell {
    let Some(run) = &results.storm else { return missing(results) };
    let Some(connect) = run.summary.phase("connect") else { return Cell::Missing("no samples".to_owned()) };
    // Busy share of the ramp: CPU per connect × connects per second.
    let busy = results.storm_cpu_us.map(|us| us * connect.rate_per_s / 1e6);
    if busy.is_some_and(|busy| busy < SATURATED) {
        Cell::AtLeast(connect.rate_per_s, "server not saturated".to_owned())
    } else {
        Cell::Value(connect.rate_per_s)
    }
}

const P50: fn(&super::loadgen::Phase) -> f64 = |phase| phase.p50_ms;
const P99: fn(&super::loadgen::Phase) -> f64 = |phase| phase.p99_ms;

fn row(label: &str, better: Better, results: &[ServerResults], cell: impl Fn(&ServerResults) -> Cell) -> Row {
    Row { label: label.to_owned(), better, cells: results.iter().map(cell).collect() }
}

fn missing(results: &ServerResults) -> Cell {
    Cell::Missing(if results.errors.is_empty() { "not run" } else { "error" }.to_owned())
}

fn first_run_clients(results: &[ServerResults], run: impl Fn(&ServerResults) -> Option<&Run>) -> u64 {
    results.iter().find_map(|r| run(r).map(|run| run.summary.clients_planned)).unwrap_or(0)
}

fn phase(
    r: &ServerResults,
    run: &Option<Run>,
    name: &str,
    figure: fn(&super::loadgen::Phase) -> f64,
) -> Cell {
    match run {
        None => missing(r),
        Some(run) => {
            run.summary.phase(name).map_or(Cell::Missing("no samples".to_owned()), |p| Cell::Value(figure(p)))
        }
    }
}

fn memory_rows(results: &[ServerResults]) -> Vec<Row> {
    let clients: Vec<u64> = results.iter().flat_map(|r| r.memory.iter().map(|point| point.clients)).fold(
        Vec::new(),
        |mut all, clients| {
            if !all.contains(&clients) {
                all.push(clients);
            }
            all
        },
    );
    let point_cell = |r: &ServerResults, clients: u64, per_connection: bool| {
        let Some(point) = r.memory.iter().find(|point| point.clients == clients) else { return missing(r) };
        let value = if per_connection {
            point.per_connection_kib
        } else {
            point.rss_kib.map(|kib| kib as f64 / KIB_PER_MIB)
        };
        // The reason is in the notes under the table; it is too long here.
        value.map_or_else(|| Cell::Missing("not measured".to_owned()), Cell::Value)
    };
    let mut rows = Vec::new();
    for &n in &clients {
        rows.push(row(&format!("RSS @{} clients MiB", thousands(n)), Better::Lower, results, |r| {
            point_cell(r, n, false)
        }));
    }
    for &n in &clients {
        rows.push(row(&format!("RSS per connection @{} KiB", thousands(n)), Better::Lower, results, |r| {
            point_cell(r, n, true)
        }));
    }
    rows
}

fn thousands(n: u64) -> String {
    if n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

fn broadcast_rows(results: &[ServerResults]) -> Vec<Row> {
    // Every server runs the same ladders; one that failed early has none.
    let Some(first) = results.iter().max_by_key(|r| r.series.len()) else { return Vec::new() };
    let raw = results.iter().find(|r| r.server == ServerKind::Raw);
    let mut rows = Vec::new();
    for (index, series) in first.series.iter().enumerate() {
        let name = format!("broadcast {} {}", series.label, series.placement.name());
        let pick = |r: &ServerResults| r.series.get(index).cloned();
        rows.push(row(&format!("{name}: sustainable deliveries/s"), Better::Higher, results, |r| {
            pick(r).map_or_else(|| missing(r), |s| sustainable(&s))
        }));
        rows.push(row(
            &format!("{name}: bracket, offered deliveries/s (pass..fail)"),
            Better::Neither,
            results,
            |r| pick(r).map_or_else(|| missing(r), |s| bracket(&s)),
        ));
        if let Some(raw) = raw.and_then(|raw| raw.series.get(index)) {
            let reference = sustainable(raw);
            rows.push(row(&format!("{name}: capacity ÷ raw's"), Better::Neither, results, |r| {
                pick(r).map_or_else(|| missing(r), |s| fraction(Better::Higher, &sustainable(&s), &reference))
            }));
        }
        // Informational: the steps differ, so a ratio would compare unlike loads.
        rows.push(row(&format!("{name}: p99 ms at that step"), Better::Neither, results, |r| {
            pick(r).map_or_else(|| missing(r), |s| sustainable_p99(&s))
        }));
        rows.push(row(&format!("{name}: broker frames/write at that step"), Better::Neither, results, |r| {
            pick(r).map_or_else(|| missing(r), |s| batch_size(&s))
        }));
    }
    rows
}

/// A server's figure over the raw reference's, as text: "0.45×", with the
/// direction a bound implies.
fn fraction(better: Better, figure: &Cell, reference: &Cell) -> Cell {
    Cell::Text(table::ratio(better, figure, reference))
}

/// The highest pass and the lowest failure above it, in offered
/// deliveries/s (rate × clients).
fn bracket(series: &SeriesResult) -> Cell {
    let offered = |rate: f64| format_number(rate * f64::from(series.clients));
    match series.capacity.as_ref().and_then(Capacity::bracket) {
        Some((pass, fail)) => Cell::Text(format!("{}..{}", offered(pass), offered(fail))),
        None => Cell::Missing("–".to_owned()),
    }
}

/// The rows of one shape at its fixed load: CPU per delivery, p99, and
/// p99 over the raw reference's.
fn fixed_load_rows(results: &[ServerResults], load: &FixedLoad) -> Vec<Row> {
    let name = format!(
        "broadcast {} pinned at {}/s per room ({} deliveries/s, {:.0} % of the lowest {})",
        load.label,
        format_number(load.rate),
        format_number(load.rate * f64::from(load.clients)),
        FIXED_LOAD_SHARE * 100.0,
        match load.basis {
            Basis::LowestCapacity => "capacity",
            Basis::LowestRateTried => "rate tried: no server passed",
        }
    );
    let record = |index: usize| load.runs.get(index).and_then(|run| run.record.as_ref());
    let why = |index: usize| {
        let error = load.runs.get(index).and_then(|run| run.error.clone());
        Cell::Missing(error.map_or("error", |e| if e == "not run" { "not run" } else { "error" }).to_owned())
    };
    let cell = |figure: fn(&StepRecord) -> Option<f64>| {
        move |index: usize| {
            record(index)
                .map_or_else(|| why(index), |r| figure(r).map_or(Cell::Missing("–".to_owned()), Cell::Value))
        }
    };
    let indexed = |label: &str, better: Better, cells: &dyn Fn(usize) -> Cell| Row {
        label: format!("{name}: {label}"),
        better,
        cells: (0..results.len()).map(cells).collect(),
    };
    let user = cell(|r| Some(r.cpu?.user_us));
    let system = cell(|r| Some(r.cpu?.system_us));
    let p99 = cell(|r| r.step.observation.p99_ms);
    let busy = cell(|r| Some(r.cpu?.busy));
    let mut rows = vec![
        indexed("user CPU µs per delivery", Better::Lower, &user),
        indexed("system CPU µs per delivery", Better::Lower, &system),
        indexed("p99 ms", Better::Lower, &p99),
    ];
    if let Some(raw) = results.iter().position(|r| r.server == ServerKind::Raw) {
        let reference = p99(raw);
        rows.push(indexed("p99 ÷ raw's", Better::Neither, &|index| {
            fraction(Better::Lower, &p99(index), &reference)
        }));
    }
    rows.push(indexed("server busy, share of a core", Better::Neither, &busy));
    rows
}

/// The ladder's figure as a cell.
pub fn sustainable(series: &SeriesResult) -> Cell {
    match &series.capacity {
        None => Cell::Missing("error".to_owned()),
        Some(Capacity::Sustained { step, .. }) => Cell::Value(step.deliveries_per_s),
        Some(Capacity::AtLeast { step, bound }) => Cell::AtLeast(step.deliveries_per_s, bound_name(*bound)),
        Some(Capacity::NonePassed { lowest_rate, loadgen_bound: false }) => {
            Cell::Below(lowest_rate * f64::from(series.clients))
        }
        Some(Capacity::NonePassed { loadgen_bound: true, .. }) => {
            Cell::Missing("loadgen-bound at the lowest step".to_owned())
        }
    }
}

fn bound_name(bound: Bound) -> String {
    match bound {
        Bound::Loadgen => "loadgen-bound",
        Bound::StepLimit => "step limit",
    }
    .to_owned()
}

fn sustainable_step(series: &SeriesResult) -> Option<&super::climb::StepRecord> {
    let rate = series.capacity.as_ref()?.step()?.rate;
    series.steps.iter().find(|record| record.step.observation.rate == rate)
}

fn sustainable_p99(series: &SeriesResult) -> Cell {
    sustainable_step(series)
        .and_then(|record| record.step.observation.p99_ms)
        .map_or(Cell::Missing("–".to_owned()), Cell::Value)
}

fn batch_size(series: &SeriesResult) -> Cell {
    sustainable_step(series)
        .and_then(|record| record.batch_size)
        .map_or(Cell::Missing("n/a".to_owned()), Cell::Value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::server::ServerKind;

    fn storm_run(accepted_per_s: f64) -> Run {
        let report = serde_json::json!({
            "scenario": "connect",
            "started_unix_ms": 10_000,
            "stages": [{"name": "connect", "start_s": 0.0, "end_s": 1.0}],
            "clients": {"planned": 10000, "connected": 10000, "joined": 0},
            "phases": [{"name": "connect", "count": 10000, "p50_ms": 2.0, "p99_ms": 9.0,
                        "rate_per_s": accepted_per_s, "min_ms": 0.5, "per_second": [10000],
                        "mean_ms_per_second": [2.0]}],
            "messages": {"expected": 0, "unique": 0, "lost": 0},
            "self_check": {"cpu": {"cpu_secs": 1.0, "wall_secs": 1.0, "cores_per_second": [1.0]},
                           "worker_threads": 1, "utilization": 1.0, "busy_seconds": 1,
                           "schedule_lag_p99_ms": 1.0, "warnings": []},
            "loss": false,
            "loss_reasons": []
        });
        Run { summary: super::super::loadgen::Summary::from_report(&report).expect("valid report"), report }
    }

    fn storm(accepted_per_s: f64, cpu_us: f64) -> ServerResults {
        ServerResults {
            storm: Some(storm_run(accepted_per_s)),
            storm_cpu_us: Some(cpu_us),
            ..ServerResults::new(ServerKind::Broker)
        }
    }

    #[test]
    fn a_storm_accept_rate_is_a_lower_bound_when_the_server_had_cpu_to_spare() {
        // 10 000/s × 50 µs: busy half the ramp.
        assert_eq!(
            storm_accepted(&storm(10_000.0, 50.0)),
            Cell::AtLeast(10_000.0, "server not saturated".to_owned())
        );
        // 6 000/s × 160 µs: busy all of it, so 6 000/s is its rate.
        assert_eq!(storm_accepted(&storm(6_000.0, 160.0)), Cell::Value(6_000.0));
        assert_eq!(
            storm_accepted(&ServerResults::new(ServerKind::Broker)),
            Cell::Missing("not run".to_owned())
        );
    }
    fn ladder(kind: ServerKind, pass: f64, fail: f64) -> ServerResults {
        use crate::compare::env::Placement;
        use crate::compare::steps::Observation;
        let observed = |rate: f64| Observation::clean(rate, rate * 2000.0, 5.0);
        let series = SeriesResult {
            label: "20x100".to_owned(),
            placement: Placement::Pinned,
            clients: 2000,
            steps: Vec::new(),
            capacity: Some(Capacity::Sustained { step: observed(pass), ceiling: observed(fail) }),
            error: None,
        };
        ServerResults { series: vec![series], ..ServerResults::new(kind) }
    }

    fn fixed(kind: ServerKind, user_us: f64, p99_ms: f64) -> super::super::efficiency::FixedLoadRun {
        use crate::compare::probe::CpuCost;
        use crate::compare::steps::{Observation, Step};
        let observation = Observation::clean(6.0, 12_000.0, p99_ms);
        let record = StepRecord {
            step: Step::new(observation),
            batch_size: None,
            cpu: Some(CpuCost { user_us, system_us: 2.0 * user_us, events: 36_000, busy: 0.3 }),
            run: storm_run(1.0),
        };
        super::super::efficiency::FixedLoadRun { server: kind, record: Some(record), error: None }
    }

    fn row_cells<'a>(rows: &'a [Row], label: &str) -> &'a [Cell] {
        let row =
            rows.iter().find(|row| row.label.ends_with(label)).unwrap_or_else(|| panic!("no row {label}"));
        &row.cells
    }

    #[test]
    fn capacities_and_fixed_load_figures_are_set_against_the_raw_reference() {
        let results = [
            ladder(ServerKind::Broker, 40.0, 45.0),
            ladder(ServerKind::Nestjs, 10.0, 12.0),
            ladder(ServerKind::Raw, 80.0, 90.0),
        ];
        let load = FixedLoad {
            label: "20x100".to_owned(),
            rate: 6.0,
            basis: Basis::LowestCapacity,
            clients: 2000,
            runs: vec![
                fixed(ServerKind::Broker, 1.5, 4.0),
                fixed(ServerKind::Nestjs, 20.0, 30.0),
                fixed(ServerKind::Raw, 0.5, 2.0),
            ],
        };
        let rows = rows(&results, std::slice::from_ref(&load));
        assert_eq!(
            row_cells(&rows, "sustainable deliveries/s"),
            &[Cell::Value(80_000.0), Cell::Value(20_000.0), Cell::Value(160_000.0)]
        );
        assert_eq!(
            row_cells(&rows, "bracket, offered deliveries/s (pass..fail)"),
            &[
                Cell::Text("80.0 k..90.0 k".to_owned()),
                Cell::Text("20.0 k..24.0 k".to_owned()),
                Cell::Text("160 k..180 k".to_owned())
            ]
        );
        assert_eq!(
            row_cells(&rows, "capacity ÷ raw's"),
            &[Cell::Text("0.50×".to_owned()), Cell::Text("0.12×".to_owned()), Cell::Text("1.00×".to_owned())]
        );
        assert_eq!(
            row_cells(&rows, "user CPU µs per delivery"),
            &[Cell::Value(1.5), Cell::Value(20.0), Cell::Value(0.5)]
        );
        assert_eq!(
            row_cells(&rows, "system CPU µs per delivery"),
            &[Cell::Value(3.0), Cell::Value(40.0), Cell::Value(1.0)]
        );
        assert_eq!(
            row_cells(&rows, "p99 ÷ raw's"),
            &[
                Cell::Text("2.00×".to_owned()),
                Cell::Text("15.00×".to_owned()),
                Cell::Text("1.00×".to_owned())
            ]
        );
        let fixed_row = rows.iter().find(|row| row.label.ends_with("user CPU µs per delivery")).expect("row");
        assert!(
            fixed_row.label.contains("at 6.00/s per room (12.0 k deliveries/s, 60 % of the lowest capacity)"),
            "{}",
            fixed_row.label
        );
        assert_eq!(row_cells(&rows, "join: server CPU µs per join")[2], Cell::Missing("not run".to_owned()));
        assert_eq!(row_cells(&rows, "join: ack p99 ms")[2], Cell::Missing("not run".to_owned()));
    }
}
