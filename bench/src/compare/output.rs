//! The comparison's outputs: the markdown report (printed and written), the
//! JSON of every run, the SVG, and their names
//! (`bench/results/2026-11-24-2cores.md`, with `-quick` for quick runs).
//!
//! Also the facts about the machine that go into them: the date (UTC), the
//! core count, the commit, the open-file limit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;

use super::chart;
use super::climb::StepRecord;
use super::drops::{self, DropRun};
use super::efficiency::FixedLoad;
use super::figures;
use super::plan::Plan;
use super::steps::{BRACKET_TEN_PERCENT, LOADGEN_BUSY_UTILIZATION, LOADGEN_LATE_MEAN_MS, P99_LIMIT_MS};
use super::suite::ServerResults;
use super::table;

/// The machine and the moment.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// Logical CPUs of the machine (not of this process's affinity).
    pub cores: usize,
    /// `git describe`-like: short commit, `-dirty` with local changes.
    pub commit: String,
    /// The hard open-file limit per process.
    pub fd_hard_limit: Option<u64>,
    /// How servers and loadgen were placed, in words.
    pub placement: String,
}

impl Machine {
    /// Looks the machine up.
    pub fn detect(root: &Path, placement: String) -> Self {
        let days = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        Self {
            date: format!("{year:04}-{month:02}-{day:02}"),
            cores: core_count(),
            commit: commit(root),
            fd_hard_limit: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|t| parse_fd_hard_limit(&t)),
            placement,
        }
    }
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

fn core_count() -> usize {
    let listed = std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| text.lines().filter(|line| line.starts_with("processor")).count())
        .unwrap_or(0);
    if listed > 0 { listed } else { std::thread::available_parallelism().map_or(1, usize::from) }
}

fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|status| !status.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

/// The hard `Max open files` of a `/proc/PID/limits` text.
pub fn parse_fd_hard_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// The stem of the result files: `2026-11-24-2cores`, `-quick` appended
/// for quick runs.
pub fn file_stem(machine: &Machine, plan: &Plan) -> String {
    let suffix = if plan.mode == "full" { String::new() } else { format!("-{}", plan.mode) };
    format!("{}-{}cores{suffix}", machine.date, machine.cores)
}

/// Everything written to the JSON file.
#[derive(Debug, Serialize)]
pub struct Comparison<'a> {
    /// The machine.
    pub machine: &'a Machine,
    /// What was run.
    pub plan: &'a Plan,
    /// Wall-clock seconds of the whole comparison.
    pub elapsed_secs: f64,
    /// Per server, every figure and every loadgen report.
    pub servers: &'a [ServerResults],
    /// The fixed-load steps, per shape.
    pub fixed_loads: &'a [FixedLoad],
    /// Delivery under forced drops, per server.
    pub drops: &'a [DropRun],
}

/// The markdown report: heading, table, notes, and every broadcast step.
pub fn markdown(comparison: &Comparison<'_>) -> String {
    let machine = comparison.machine;
    let names: Vec<&str> = comparison.servers.iter().map(|r| r.server.name()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## bench/compare ({}) {} on {} cores\n",
        comparison.plan.mode, machine.date, machine.cores
    );
    let _ = writeln!(
        out,
        "Commit {}; {}; {:.0} s in all. ↑ higher is better, ↓ lower is better; ratios are broker ÷ peer.\n",
        machine.commit, machine.placement, comparison.elapsed_secs
    );
    let settings: Vec<String> = comparison.servers.iter().map(|r| r.server.settings()).collect();
    if !settings.is_empty() {
        let _ = writeln!(out, "Settings: {}.\n", settings.join("; "));
    }
    if !comparison.servers.is_empty() {
        out.push_str(&table::render(&names, &figures::rows(comparison.servers, comparison.fixed_loads)));
        out.push('\n');
    }
    drops::markdown(&mut out, &comparison.plan.drops, comparison.drops);
    if !comparison.servers.is_empty() {
        notes(&mut out, comparison.servers);
        steps(&mut out, comparison.servers, comparison.fixed_loads);
    }
    out
}

fn notes(out: &mut String, servers: &[ServerResults]) {
    memory_notes(out, servers);
    for result in servers {
        for error in &result.errors {
            let _ = writeln!(out, "- {} error: {error}", result.server.name());
        }
        for series in result.series.iter().filter(|s| s.error.is_some()) {
            let error = series.error.as_deref().unwrap_or_default();
            let _ = writeln!(
                out,
                "- {} {} {} error: {error}",
                result.server.name(),
                series.label,
                series.placement.name()
            );
        }
    }
    let _ = writeln!(
        out,
        "- Sustainable = the highest broadcast step with no loss and message p99 ≤ {P99_LIMIT_MS} ms; the \
         bracket is that step and the lowest failing step above it, in offered deliveries/s, bisected until \
         at most ×{BRACKET_TEN_PERCENT} apart (±10 %). \"÷ raw's\": the figure over the raw reference's \
         (raw-fanout: the same fan-out with no protocol, same run). The fixed-load rows run every server \
         at one rate, {:.0} % of the lowest capacity; CPU per delivery is user and system time from \
         /proc/PID/stat over the publishing window, divided by deliveries: where a capacity is only \
         \"≥ X (loadgen-bound)\", one load core could not reach the server's limit, and CPU per delivery \
         carries the comparison. \
         \"≥ X (loadgen-bound)\": loadgen used ≥ {:.0}% of its threads, or its mean schedule lag passed \
         {LOADGEN_LATE_MEAN_MS} ms in a publishing second, so X is a lower bound, not the server's capacity. \
         \"≥ X (step limit)\": the ladder ran out of steps. \"≥ X (offered rate)\": the server accepted \
         connections as fast as loadgen offered them. \"≥ X (server not saturated)\": in the connect storm \
         (clients offered as fast as one loadgen core can) the server was busy less than {:.0}% of the ramp, \
         so the connects came no faster; its CPU per connect is the capacity figure.\n",
        super::efficiency::FIXED_LOAD_SHARE * 100.0,
        LOADGEN_BUSY_UTILIZATION * 100.0,
        super::figures::SATURATED * 100.0
    );
}

/// One line per unmeasured memory point and reason, naming the servers.
fn memory_notes(out: &mut String, servers: &[ServerResults]) {
    let mut notes: Vec<(u64, &str, Vec<&str>)> = Vec::new();
    for result in servers {
        for point in result.memory.iter().filter(|point| point.rss_kib.is_none()) {
            let note = point.note.as_deref().unwrap_or("not measured");
            match notes.iter_mut().find(|(clients, text, _)| *clients == point.clients && *text == note) {
                Some((_, _, names)) => names.push(result.server.name()),
                None => notes.push((point.clients, note, vec![result.server.name()])),
            }
        }
    }
    for (clients, note, names) in notes {
        let _ = writeln!(out, "- {clients} clients ({}): {note}", names.join(", "));
    }
}

fn steps(out: &mut String, servers: &[ServerResults], fixed_loads: &[FixedLoad]) {
    let _ = writeln!(
        out,
        "Broadcast steps (rate = messages/s per room, one publisher each; loadgen cpu and lag over the \
         publishing seconds: mean share of its threads, worst per-second mean schedule lag; server CPU \
         per delivery over the publishing window, user + system µs; \"fixed\": the fixed-load steps):\n"
    );
    let _ = writeln!(
        out,
        "| server | ladder | rate | deliveries/s | p99 ms | loadgen cpu | loadgen lag ms | broker frames/write | server µs/delivery | verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for result in servers {
        for series in &result.series {
            let ladder = format!("{} {}", series.label, series.placement.name());
            for record in &series.steps {
                step_line(out, result.server.name(), &ladder, record);
            }
        }
    }
    for load in fixed_loads {
        for run in &load.runs {
            if let Some(record) = &run.record {
                step_line(out, run.server.name(), &format!("{} pinned fixed", load.label), record);
            }
        }
    }
}

fn step_line(out: &mut String, server: &str, ladder: &str, record: &StepRecord) {
    let o = &record.step.observation;
    let check = &record.run.summary.self_check;
    let _ = writeln!(
        out,
        "| {server} | {ladder} | {} | {} | {} | {:.0}% | {:.1} | {} | {} | {} |",
        table::format_number(o.rate),
        table::format_number(o.deliveries_per_s),
        o.p99_ms.map_or("–".to_owned(), table::format_number),
        check.publishing_utilization.unwrap_or(check.utilization) * 100.0,
        check.publishing_lag_ms.unwrap_or(check.schedule_lag_p99_ms),
        record.batch_size.map_or("n/a".to_owned(), |batch| format!("{batch:.2}")),
        record.cpu.map_or("–".to_owned(), |cpu| format!("{:.2} + {:.2}", cpu.user_us, cpu.system_us)),
        verdict(&record.step.verdict),
    );
}

fn verdict(verdict: &super::steps::Verdict) -> String {
    use super::steps::Verdict;
    match verdict {
        Verdict::Pass => "pass".to_owned(),
        Verdict::PassLoadgenBound => "pass (loadgen saturated)".to_owned(),
        Verdict::Fail(why) => format!("fail: {why}"),
        Verdict::LoadgenBound(why) => format!("loadgen-bound: {why}"),
    }
}

/// Writes `STEM.md`, `STEM.json` and `STEM.svg` into `dir`; returns their
/// paths.
///
/// # Errors
/// A file could not be written.
pub fn write(
    dir: &Path,
    stem: &str,
    comparison: &Comparison<'_>,
    markdown: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(comparison).context("serializing the comparison")?;
    let mut files = vec![("md", markdown.to_owned()), ("json", json)];
    // The chart draws the suites' ladders and memory; a drops-only run has none.
    if !comparison.servers.is_empty() {
        files.push(("svg", chart::render(comparison.servers)));
    }
    let mut written = Vec::new();
    for (extension, text) in files {
        let path = dir.join(format!("{stem}.{extension}"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
    }

    #[test]
    fn file_names_carry_date_cores_and_mode() {
        let machine = Machine {
            date: "2026-11-24".to_owned(),
            cores: 2,
            commit: "abc".to_owned(),
            fd_hard_limit: Some(20_000),
            placement: String::new(),
        };
        assert_eq!(file_stem(&machine, &Plan::full()), "2026-11-24-2cores");
        assert_eq!(file_stem(&machine, &Plan::quick()), "2026-11-24-2cores-quick");
        let limits = "Limit   Soft Limit  Hard Limit  Units\nMax open files            20000                20000                files\n";
        assert_eq!(parse_fd_hard_limit(limits), Some(20_000));
    }
}
