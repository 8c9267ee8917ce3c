//! What the soak adds to the report: the target's gauges before, at their
//! peak and after, the faulty clients' outcomes, and the soak's own verdict.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::gauges::Reading;

/// What the clients of one kind of fault did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultTally {
    /// Clients started.
    pub started: u64,
    /// How they ended, by outcome.
    pub outcomes: BTreeMap<String, u64>,
}

/// One gauge before, at its peak and after.
#[derive(Debug, Clone, Serialize)]
pub struct GaugeRow {
    /// What it counts.
    pub name: &'static str,
    /// The metric it was read from (empty for RSS).
    pub metric: &'static str,
    /// Before any client connected: the idle value.
    pub before: Option<f64>,
    /// The highest reading.
    pub peak: Option<f64>,
    /// After everyone left and the wait for idle.
    pub after: Option<f64>,
}

/// What the soak adds to the report.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The watched gauges, then `rss kib`.
    pub gauges: Vec<GaugeRow>,
    /// Whether every reported gauge was back at its idle value.
    pub idle: bool,
    /// Seconds from the last client's end until idle (or the give-up).
    pub idle_wait_s: f64,
    /// Gauges still above idle at the end.
    pub busy: Vec<String>,
    /// Why `/metrics` could not be read, when it could not.
    pub metrics_error: Option<String>,
    /// Counters (`*_total`) that changed, after minus before.
    pub counter_deltas: BTreeMap<String, f64>,
    /// Faulty clients by kind: how many and how each ended.
    pub faults: BTreeMap<String, FaultTally>,
    /// Bad-token clients the target let in.
    pub admitted_bad_tokens: u64,
    /// Every reading, for plotting.
    pub samples: Vec<Reading>,
}

impl SoakReport {
    /// Why this soak failed, beside message loss.
    pub fn failures(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.idle {
            reasons.push(format!("gauges not back at idle: {}", self.busy.join(", ")));
        }
        if self.admitted_bad_tokens > 0 {
            reasons.push(format!("{} clients with a bad token were let in", self.admitted_bad_tokens));
        }
        reasons
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        writeln!(f, "{:<16} {:>12} {:>12} {:>12}", "target gauge", "before", "peak", "after")?;
        for row in &self.gauges {
            writeln!(
                f,
                "{:<16} {:>12} {:>12} {:>12}",
                row.name,
                show(row.before),
                show(row.peak),
                show(row.after)
            )?;
        }
        if let Some(error) = &self.metrics_error {
            writeln!(f, "metrics: not read ({error}); gauges not reported")?;
        }
        if !self.counter_deltas.is_empty() {
            let deltas: Vec<String> =
                self.counter_deltas.iter().map(|(name, delta)| format!("{name} +{delta:.0}")).collect();
            writeln!(f, "counters: {}", deltas.join(", "))?;
        }
        writeln!(
            f,
            "idle: {} after {:.1} s{}",
            if self.idle { "yes" } else { "NO" },
            self.idle_wait_s,
            if self.busy.is_empty() {
                String::new()
            } else {
                format!(" (still busy: {})", self.busy.join(", "))
            }
        )?;
        for (kind, tally) in &self.faults {
            let outcomes: Vec<String> =
                tally.outcomes.iter().map(|(outcome, n)| format!("{outcome} x{n}")).collect();
            writeln!(f, "fault {kind}: {} started; {}", tally.started, outcomes.join(", "))?;
        }
        Ok(())
    }
}
