//! What forced drops (`broadcast --drop-every`) add to the report: how the
//! reconnects went (recovered by the server or fresh sessions) and how much
//! of what was sent to their rooms each member got, dropped members and
//! never-dropped ones apart. The replay latency is the `replay` phase.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Upper bounds (exclusive) of the delivered-share buckets below 100 %.
const BUCKET_BOUNDS: [(f64, &str); 4] = [(0.5, "<50%"), (0.9, "50-90%"), (0.99, "90-99%"), (1.0, "99-100%")];

/// Delivered ÷ expected over a set of members: a distribution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliverySpread {
    /// Members counted (those owed at least one message).
    pub clients: u64,
    /// Members that got everything.
    pub complete: u64,
    /// Lowest share (0..=1; 0 when no member).
    pub min: f64,
    /// 1st percentile share.
    pub p1: f64,
    /// 10th percentile share.
    pub p10: f64,
    /// Median share.
    pub p50: f64,
    /// Mean share.
    pub mean: f64,
    /// Members per share bucket: `<50%`, `50-90%`, `90-99%`, `99-100%`
    /// (100 % excluded), `100%`.
    pub buckets: Vec<(String, u64)>,
    /// Every member's share, ascending: what the summary is computed from,
    /// and what worker processes' spreads merge by.
    pub shares: Vec<f64>,
}

impl DeliverySpread {
    /// Summarizes per-member shares (each delivered ÷ expected, 0..=1).
    pub fn new(mut shares: Vec<f64>) -> Self {
        shares.sort_by(f64::total_cmp);
        let clients = shares.len() as u64;
        let complete = shares.iter().filter(|&&share| share >= 1.0).count() as u64;
        // Nearest rank: the smallest share with at least q of the members at or below it.
        let quantile = |q: f64| {
            let rank = ((q * shares.len() as f64).ceil() as usize).clamp(1, shares.len().max(1));
            shares.get(rank - 1).copied().unwrap_or(0.0)
        };
        let mut buckets: Vec<(String, u64)> =
            BUCKET_BOUNDS.iter().map(|(_, name)| ((*name).to_owned(), 0)).collect();
        buckets.push(("100%".to_owned(), complete));
        for &share in shares.iter().filter(|&&share| share < 1.0) {
            if let Some(index) = BUCKET_BOUNDS.iter().position(|(bound, _)| share < *bound) {
                buckets[index].1 += 1;
            }
        }
        let mean = if shares.is_empty() { 0.0 } else { shares.iter().sum::<f64>() / shares.len() as f64 };
        Self {
            clients,
            complete,
            min: shares.first().copied().unwrap_or(0.0),
            p1: quantile(0.01),
            p10: quantile(0.1),
            p50: quantile(0.5),
            mean,
            buckets,
            shares,
        }
    }

    /// The spread over both sets of members.
    pub fn merge(&self, other: &Self) -> Self {
        Self::new(self.shares.iter().chain(&other.shares).copied().collect())
    }
}

impl fmt::Display for DeliverySpread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |share: f64| share * 100.0;
        let buckets: Vec<String> = self.buckets.iter().map(|(name, n)| format!("{name} {n}")).collect();
        write!(
            f,
            "{} clients, {} got everything; min {:.1}%, p1 {:.1}%, p10 {:.1}%, p50 {:.1}%, mean {:.2}% [{}]",
            self.clients,
            self.complete,
            pct(self.min),
            pct(self.p1),
            pct(self.p10),
            pct(self.p50),
            pct(self.mean),
            buckets.join(", ")
        )
    }
}

/// What the drops did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropReport {
    /// Mean time a listener stayed connected, s.
    pub every_s: f64,
    /// Mean pause before reconnecting, s.
    pub reconnect_delay_s: f64,
    /// Connections dropped.
    pub drops: u64,
    /// Reconnects the server recovered (same `pid`).
    pub recovered: u64,
    /// Reconnects that got a fresh session (and joined again).
    pub fresh_sessions: u64,
    /// Reconnect attempts that failed (and were retried).
    pub reconnect_failures: u64,
    /// CONNECT acks that carried a `pid`: none means the server offered no
    /// recovery at all.
    pub pid_acks: u64,
    /// Delivered ÷ expected of the members that were dropped.
    pub dropped: DeliverySpread,
    /// The same for the members never dropped: the publishers, and
    /// listeners whose first drop would have come after publishing ended.
    pub never_dropped: DeliverySpread,
}

impl DropReport {
    /// Adds another process's drops of the same run: counts sum, spreads
    /// are recomputed over both processes' members.
    pub fn merge(&mut self, other: &Self) {
        self.drops += other.drops;
        self.recovered += other.recovered;
        self.fresh_sessions += other.fresh_sessions;
        self.reconnect_failures += other.reconnect_failures;
        self.pid_acks += other.pid_acks;
        self.dropped = self.dropped.merge(&other.dropped);
        self.never_dropped = self.never_dropped.merge(&other.never_dropped);
    }
}

impl fmt::Display for DropReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "drops (every {:.1} s, reconnect after {:.1} s): {} dropped, {} recovered, {} fresh sessions, {} failed attempts; {} CONNECT acks with a pid",
            self.every_s,
            self.reconnect_delay_s,
            self.drops,
            self.recovered,
            self.fresh_sessions,
            self.reconnect_failures,
            self.pid_acks
        )?;
        writeln!(f, "delivered/expected, dropped members: {}", self.dropped)?;
        writeln!(f, "delivered/expected, never dropped:   {}", self.never_dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_shares_into_quantiles_and_buckets() {
        let mut shares: Vec<f64> = (0..97).map(|_| 1.0).collect();
        shares.extend([0.995, 0.6, 0.2]);
        let spread = DeliverySpread::new(shares);
        assert_eq!((spread.clients, spread.complete), (100, 97));
        assert!((spread.min - 0.2).abs() < 1e-12);
        assert!((spread.p1 - 0.2).abs() < 1e-12, "the lowest of 100 is the 1st percentile");
        assert!((spread.p10 - 1.0).abs() < 1e-12);
        let buckets: Vec<u64> = spread.buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(buckets, vec![1, 1, 0, 1, 97]);
        let merged = spread.merge(&DeliverySpread::new(vec![0.1]));
        assert_eq!((merged.clients, merged.complete), (101, 97));
        assert!((merged.min - 0.1).abs() < 1e-12);
        let empty = DeliverySpread::new(Vec::new());
        assert_eq!((empty.clients, empty.min, empty.p50), (0, 0.0, 0.0));
        assert!(empty.to_string().starts_with("0 clients"));
    }
}
