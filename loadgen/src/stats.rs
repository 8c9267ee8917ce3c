//! Latency histograms and per-second event counts, recorded from many tasks.
//!
//! A [`Recorder`] holds one HdrHistogram per [`Phase`] in each of a few
//! shards; a connection always records into the shard its id picks, under a
//! short `parking_lot` lock that is never held across an `.await`. With
//! several shards per worker thread the locks are almost never contended,
//! and memory stays flat no matter how many connections there are (one
//! histogram per connection would cost ~190 KB each). [`Recorder::snapshot`]
//! merges the shards; merging is exact, since HdrHistogram addition is.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// Three significant figures: 0.1 % value resolution.
const SIGNIFICANT_FIGURES: u8 = 3;
/// Per-second series stop growing after a day.
const MAX_SECONDS: usize = 86_400;

/// What a latency sample measures. Each phase also counts its events per
/// second, which gives the throughput series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Intended connect time → namespace CONNECT accepted (TCP, WebSocket
    /// upgrade, Engine.IO open and authentication included).
    Connect,
    /// Intended `join_room` time → its ack.
    JoinAck,
    /// Intended `join_room` time → another member's `user_joined`.
    JoinNotice,
    /// Intended publish time → each `message` delivery.
    Message,
    /// Intended close time → another member's `user_left`.
    LeaveNotice,
    /// Intended time → actual time of the load generator's own actions
    /// (connects, joins, publishes, closes). Large values mean the load
    /// generator, not the target, fell behind.
    ScheduleLag,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 6] = [
        Phase::Connect,
        Phase::JoinAck,
        Phase::JoinNotice,
        Phase::Message,
        Phase::LeaveNotice,
        Phase::ScheduleLag,
    ];

    /// The snake-case name used in tables, JSON and plots.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::JoinAck => "join_ack",
            Phase::JoinNotice => "join_notice",
            Phase::Message => "message",
            Phase::LeaveNotice => "leave_notice",
            Phase::ScheduleLag => "schedule_lag",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A latency histogram in microseconds, with the bounds every shard shares.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// One shard's share of every phase.
struct Shard {
    histograms: Vec<Histogram<u64>>,
    /// Events per second since the epoch, per phase.
    per_second: Vec<Vec<u64>>,
    /// Sum of latencies (µs) per second, per phase, for mean-over-time.
    micros_per_second: Vec<Vec<u64>>,
    /// Samples that counted toward delivery accounting, per phase.
    fresh: Vec<u64>,
}

impl Shard {
    fn new() -> Self {
        let phases = Phase::ALL.len();
        Self {
            histograms: (0..phases).map(|_| new_histogram()).collect(),
            per_second: vec![Vec::new(); phases],
            micros_per_second: vec![Vec::new(); phases],
            fresh: vec![0; phases],
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// What was measured.
    pub phase: Phase,
    /// Intended time → observed time, in nanoseconds.
    pub latency_ns: u64,
    /// When it was observed, in clock nanoseconds (for the per-second series).
    pub at_ns: u64,
    /// Whether this is a first delivery that counts toward accounting.
    pub fresh: bool,
}

/// Sharded, lock-light collection of [`Sample`]s.
pub struct Recorder {
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("shards", &self.shards.len()).finish()
    }
}

impl Recorder {
    /// A recorder with `shards` shards (at least one).
    pub fn new(shards: usize) -> Self {
        Self { shards: (0..shards.max(1)).map(|_| Mutex::new(Shard::new())).collect() }
    }

    /// Records `sample` into the shard chosen by `key` (a connection id).
    pub fn record(&self, key: u32, sample: Sample) {
        let index = sample.phase.index();
        let micros = (sample.latency_ns / 1_000).max(1);
        let second = usize::try_from(sample.at_ns / 1_000_000_000).unwrap_or(usize::MAX).min(MAX_SECONDS);
        let mut shard = self.shards[key as usize % self.shards.len()].lock();
        shard.histograms[index].saturating_record(micros);
        if shard.per_second[index].len() <= second {
            shard.per_second[index].resize(second + 1, 0);
            shard.micros_per_second[index].resize(second + 1, 0);
        }
        shard.per_second[index][second] += 1;
        shard.micros_per_second[index][second] += micros;
        if sample.fresh {
            shard.fresh[index] += 1;
        }
    }

    /// Fresh (accounted) samples of `phase` so far, over all shards.
    pub fn fresh(&self, phase: Phase) -> u64 {
        self.shards.iter().map(|shard| shard.lock().fresh[phase.index()]).sum()
    }

    /// Samples of `phase` so far, over all shards.
    pub fn count(&self, phase: Phase) -> u64 {
        self.shards.iter().map(|shard| shard.lock().histograms[phase.index()].len()).sum()
    }

    /// Merges every shard into one [`PhaseData`] per phase.
    pub fn snapshot(&self) -> Vec<PhaseData> {
        let mut merged: Vec<PhaseData> = Phase::ALL.iter().map(|&phase| PhaseData::new(phase)).collect();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (index, data) in merged.iter_mut().enumerate() {
                data.merge(
                    &shard.histograms[index],
                    &shard.per_second[index],
                    &shard.micros_per_second[index],
                );
                data.fresh += shard.fresh[index];
            }
        }
        merged
    }
}

/// Everything recorded for one phase, merged.
#[derive(Debug, Clone)]
pub struct PhaseData {
    /// Which phase.
    pub phase: Phase,
    /// Latency in microseconds.
    pub histogram: Histogram<u64>,
    /// Events per second since the epoch.
    pub per_second: Vec<u64>,
    /// Sum of latencies (µs) per second since the epoch.
    pub micros_per_second: Vec<u64>,
    /// Samples that counted toward accounting.
    pub fresh: u64,
}

impl PhaseData {
    /// An empty record of `phase`.
    pub fn new(phase: Phase) -> Self {
        Self {
            phase,
            histogram: new_histogram(),
            per_second: Vec::new(),
            micros_per_second: Vec::new(),
            fresh: 0,
        }
    }

    /// Adds one shard's data.
    pub fn merge(&mut self, histogram: &Histogram<u64>, per_second: &[u64], micros_per_second: &[u64]) {
        self.histogram.add(histogram).expect("all histograms share the same bounds");
        add_series(&mut self.per_second, per_second);
        add_series(&mut self.micros_per_second, micros_per_second);
    }
}

fn add_series(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (total, value) in into.iter_mut().zip(from) {
        *total += value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(phase: Phase, latency_ms: u64, at_s: u64) -> Sample {
        Sample { phase, latency_ns: latency_ms * 1_000_000, at_ns: at_s * 1_000_000_000 + 1, fresh: true }
    }

    #[test]
    fn shards_merge_into_exact_totals() {
        let recorder = Recorder::new(4);
        for key in 0..100u32 {
            recorder.record(key, sample(Phase::Message, u64::from(key) + 1, u64::from(key % 3)));
        }
        recorder.record(7, Sample { fresh: false, ..sample(Phase::Message, 1, 0) });
        recorder.record(1, sample(Phase::Connect, 5, 2));
        let snapshot = recorder.snapshot();
        let message = &snapshot[Phase::Message.index()];
        assert_eq!(message.histogram.len(), 101);
        assert_eq!(message.fresh, 100);
        assert_eq!(message.per_second, vec![35, 33, 33]);
        assert_eq!(message.histogram.max(), message.histogram.highest_equivalent(100_000));
        assert_eq!(message.histogram.min(), 1_000);
        let connect = &snapshot[Phase::Connect.index()];
        assert_eq!((connect.histogram.len(), connect.per_second.clone()), (1, vec![0, 0, 1]));
        assert_eq!(recorder.fresh(Phase::Message), 100);
        assert_eq!(recorder.count(Phase::JoinAck), 0);
    }

    #[test]
    fn merged_quantiles_match_a_single_histogram() {
        let recorder = Recorder::new(8);
        let mut single = new_histogram();
        for value in 1..=10_000u64 {
            let micros = value * 37 % 9_973 + 1;
            single.record(micros).expect("in range");
            recorder.record(
                value as u32,
                Sample { phase: Phase::JoinAck, latency_ns: micros * 1_000, at_ns: 0, fresh: false },
            );
        }
        let merged = &recorder.snapshot()[Phase::JoinAck.index()].histogram;
        for quantile in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(quantile), single.value_at_quantile(quantile));
        }
    }

    #[test]
    fn tiny_and_huge_latencies_saturate_instead_of_failing() {
        let recorder = Recorder::new(1);
        recorder.record(0, Sample { phase: Phase::Connect, latency_ns: 0, at_ns: 0, fresh: false });
        recorder
            .record(0, Sample { phase: Phase::Connect, latency_ns: u64::MAX, at_ns: u64::MAX, fresh: false });
        let connect = &recorder.snapshot()[0];
        assert_eq!(connect.histogram.len(), 2);
        assert_eq!(connect.per_second.len(), MAX_SECONDS + 1);
    }
}
