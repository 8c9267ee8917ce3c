//! Latency histograms and per-second event counts, recorded from many tasks.
//!
//! A [`Recorder`] holds one HdrHistogram per [`Phase`] in each of a few
//! shards: one per thread that records (the tokio workers, mostly), found
//! through a thread-local, so a recording core only ever touches its own
//! shard. Each shard sits behind a `parking_lot` lock that only the
//! orchestrator's progress polls and the final [`Recorder::snapshot`] ever
//! contend for; it is never held across an `.await`. Memory stays flat no
//! matter how many connections there are (one histogram per connection
//! would cost ~190 KB each). The receive path records a whole read's
//! deliveries at once ([`Recorder::record_batch`]). Merging is exact, since
//! HdrHistogram addition is.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// Three significant figures: 0.1 % value resolution.
const SIGNIFICANT_FIGURES: u8 = 3;
/// Per-second series stop growing after a day.
const MAX_SECONDS: usize = 86_400;

/// What a latency sample measures. Each phase also counts its events per
/// second, which gives the throughput series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A recovered reconnect's start → the arrival of the last message
    /// published before it (the server's replay of what was missed).
    Replay,
    /// Intended time → actual time of the load generator's own actions
    /// (connects, joins, publishes, closes). Large values mean the load
    /// generator, not the target, fell behind.
    ScheduleLag,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 7] = [
        Phase::Connect,
        Phase::JoinAck,
        Phase::JoinNotice,
        Phase::Message,
        Phase::LeaveNotice,
        Phase::Replay,
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
            Phase::Replay => "replay",
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

    fn record(&mut self, phase: Phase, at_ns: u64, latency_ns: u64, fresh: u64) {
        self.record_batch(phase, at_ns, &[latency_ns], fresh);
    }

    fn record_batch(&mut self, phase: Phase, at_ns: u64, latencies_ns: &[u64], fresh: u64) {
        let index = phase.index();
        let histogram = &mut self.histograms[index];
        let mut micros_sum = 0;
        for &latency_ns in latencies_ns {
            let micros = (latency_ns / 1_000).max(1);
            histogram.saturating_record(micros);
            micros_sum += micros;
        }
        let second = usize::try_from(at_ns / 1_000_000_000).unwrap_or(usize::MAX).min(MAX_SECONDS);
        if self.per_second[index].len() <= second {
            self.per_second[index].resize(second + 1, 0);
            self.micros_per_second[index].resize(second + 1, 0);
        }
        self.per_second[index][second] += latencies_ns.len() as u64;
        self.micros_per_second[index][second] += micros_sum;
        self.fresh[index] += fresh;
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

/// Per-thread shards, tagged with the id of the [`Recorder`] they belong to.
type LocalShards = Vec<(u64, Arc<Mutex<Shard>>)>;

thread_local! {
    static LOCAL_SHARDS: RefCell<LocalShards> = const { RefCell::new(Vec::new()) };
}

/// Tells recorders apart in the thread-locals.
static NEXT_RECORDER_ID: AtomicU64 = AtomicU64::new(0);

/// Lock-light collection of [`Sample`]s, one shard per recording thread.
pub struct Recorder {
    id: u64,
    /// Every shard handed out; the first takes samples recorded while a
    /// thread is being torn down.
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("shards", &self.shards.lock().len()).finish()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let id = NEXT_RECORDER_ID.fetch_add(1, Ordering::Relaxed);
        Self { id, shards: Mutex::new(vec![Arc::new(Mutex::new(Shard::new()))]) }
    }

    /// Runs `f` on this thread's shard, creating it on first use.
    fn with_shard<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut f = Some(f);
        let local = LOCAL_SHARDS.try_with(|local| {
            let mut local = local.borrow_mut();
            let index = match local.iter().position(|(id, _)| *id == self.id) {
                Some(index) => index,
                None => {
                    // Forget the shards of recorders that are gone.
                    local.retain(|(_, shard)| Arc::strong_count(shard) > 1);
                    let shard = Arc::new(Mutex::new(Shard::new()));
                    self.shards.lock().push(Arc::clone(&shard));
                    local.push((self.id, shard));
                    local.len() - 1
                }
            };
            let f = f.take().expect("runs once");
            f(&mut local[index].1.lock())
        });
        if let Ok(result) = local {
            return result;
        }
        // This thread is exiting and its thread-locals are gone.
        let f = f.expect("did not run without the thread-local");
        let shard = Arc::clone(&self.shards.lock()[0]);
        f(&mut shard.lock())
    }

    /// Records `sample`.
    pub fn record(&self, sample: Sample) {
        self.with_shard(|shard| {
            shard.record(sample.phase, sample.at_ns, sample.latency_ns, u64::from(sample.fresh));
        });
    }

    /// Records samples of `phase` observed together at `at_ns` with these
    /// latencies, `fresh` of them counting toward accounting; one lock for all.
    pub fn record_batch(&self, phase: Phase, at_ns: u64, latencies_ns: &[u64], fresh: u64) {
        if latencies_ns.is_empty() {
            return;
        }
        self.with_shard(|shard| shard.record_batch(phase, at_ns, latencies_ns, fresh));
    }

    fn each_shard(&self, mut f: impl FnMut(&Shard)) {
        let shards = self.shards.lock().clone();
        for shard in &shards {
            f(&shard.lock());
        }
    }

    /// Fresh (accounted) samples of `phase` so far, over all shards.
    pub fn fresh(&self, phase: Phase) -> u64 {
        let mut fresh = 0;
        self.each_shard(|shard| fresh += shard.fresh[phase.index()]);
        fresh
    }

    /// Samples of `phase` so far, over all shards.
    pub fn count(&self, phase: Phase) -> u64 {
        let mut count = 0;
        self.each_shard(|shard| count += shard.histograms[phase.index()].len());
        count
    }

    /// Merges every shard into one [`PhaseData`] per phase.
    pub fn snapshot(&self) -> Vec<PhaseData> {
        let mut merged: Vec<PhaseData> = Phase::ALL.iter().map(|&phase| PhaseData::new(phase)).collect();
        self.each_shard(|shard| {
            for (index, data) in merged.iter_mut().enumerate() {
                data.merge(
                    &shard.histograms[index],
                    &shard.per_second[index],
                    &shard.micros_per_second[index],
                );
                data.fresh += shard.fresh[index];
            }
        });
        merged
    }
}

/// Everything recorded for one phase, merged. It travels between processes
/// (worker to parent) as JSON, its histogram in HdrHistogram's own V2
/// encoding, so merging the workers' histograms stays exact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseData {
    /// Which phase.
    pub phase: Phase,
    /// Latency in microseconds.
    #[serde(with = "histogram_v2")]
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

/// A histogram as base64 of its V2 serialization.
mod histogram_v2 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        histogram: &Histogram<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(histogram, &mut bytes).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        let decoded: Histogram<u64> =
            Deserializer::new().deserialize(&mut &bytes[..]).map_err(serde::de::Error::custom)?;
        // Back to the common bounds, so it adds to every other histogram.
        let mut histogram = new_histogram();
        histogram.add(&decoded).map_err(serde::de::Error::custom)?;
        Ok(histogram)
    }
}

/// Adds `from` into `into`, second by second.
pub fn add_series(into: &mut Vec<u64>, from: &[u64]) {
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
        let recorder = Recorder::new();
        for key in 0..100u32 {
            recorder.record(sample(Phase::Message, u64::from(key) + 1, u64::from(key % 3)));
        }
        recorder.record(Sample { fresh: false, ..sample(Phase::Message, 1, 0) });
        recorder.record(sample(Phase::Connect, 5, 2));
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
    fn shards_of_many_threads_merge_like_a_single_histogram() {
        let recorder = Recorder::new();
        let mut single = new_histogram();
        let micros_of = |value: u64| value * 37 % 9_973 + 1;
        for value in 1..=10_000u64 {
            single.record(micros_of(value)).expect("in range");
        }
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let recorder = &recorder;
                scope.spawn(move || {
                    let values = (1..=10_000u64).filter(|value| value % 4 == thread);
                    if thread == 0 {
                        let latencies: Vec<u64> = values.map(|value| micros_of(value) * 1_000).collect();
                        recorder.record_batch(Phase::JoinAck, 0, &latencies, 7);
                    } else {
                        for value in values {
                            let latency_ns = micros_of(value) * 1_000;
                            recorder.record(Sample {
                                phase: Phase::JoinAck,
                                latency_ns,
                                at_ns: 0,
                                fresh: false,
                            });
                        }
                    }
                });
            }
        });
        assert_eq!(recorder.shards.lock().len(), 5, "one shard per thread, plus the spare");
        let merged = &recorder.snapshot()[Phase::JoinAck.index()];
        assert_eq!(
            (merged.histogram.len(), merged.fresh, merged.per_second.clone()),
            (10_000, 7, vec![10_000])
        );
        for quantile in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.histogram.value_at_quantile(quantile), single.value_at_quantile(quantile));
        }
    }

    #[test]
    fn phase_data_survives_json_exactly() {
        let recorder = Recorder::new();
        for value in 1..=5_000u64 {
            recorder.record(sample(Phase::Message, value % 977 + 1, value % 4));
        }
        let data = recorder.snapshot().remove(Phase::Message.index());
        let json = serde_json::to_string(&data).expect("serializes");
        let back: PhaseData = serde_json::from_str(&json).expect("deserializes");
        assert_eq!((back.phase, back.fresh, &back.per_second), (data.phase, data.fresh, &data.per_second));
        assert_eq!(back.histogram, data.histogram);
        let mut twice = back.clone();
        twice.merge(&data.histogram, &data.per_second, &data.micros_per_second);
        assert_eq!(twice.histogram.len(), 10_000);
        assert_eq!(twice.histogram.value_at_quantile(0.99), data.histogram.value_at_quantile(0.99));
    }

    #[test]
    fn tiny_and_huge_latencies_saturate_instead_of_failing() {
        let recorder = Recorder::new();
        recorder.record(Sample { phase: Phase::Connect, latency_ns: 0, at_ns: 0, fresh: false });
        recorder.record(Sample {
            phase: Phase::Connect,
            latency_ns: u64::MAX,
            at_ns: u64::MAX,
            fresh: false,
        });
        let connect = &recorder.snapshot()[0];
        assert_eq!(connect.histogram.len(), 2);
        assert_eq!(connect.per_second.len(), MAX_SECONDS + 1);
    }
}
