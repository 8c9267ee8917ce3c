//! [`WritePacer`]: how long a connection's writer waits between writes, so
//! that a busy broker sends fewer, larger `writev`s.
//!
//! On loopback a `writev` costs the broker 5–8 µs of kernel time whatever it
//! carries (the receiver's TCP processing runs on the sender's core), while
//! one more 150-byte frame in it costs well under 1 µs. A broker that writes
//! each frame as it comes saturates its core at about 150k writes/s, and its
//! queues then grow until batches are large enough: latency climbs to
//! hundreds of ms before the batches catch up.
//!
//! The pacer watches how busy the runtime's workers are and sets one delay
//! for every writer: after a write, a writer waits until `delay` has passed
//! before it writes again, and everything queued meanwhile goes out in one
//! `writev`. An idle or lightly loaded broker keeps the delay at zero, so
//! no frame waits; as the workers approach [`TARGET_BUSY`], the delay grows
//! (up to the configured maximum) until batching brings them back under it.
//! Connections that receive less than one frame per `delay` never wait.
//!
//! While the workers are saturated ([`SATURATED`]) the delay rises four
//! times as fast as it falls. When load steps up from idle, every frame is
//! written alone until the delay catches up, and a saturated runtime falls
//! behind by the whole time that takes: with the rise as slow as the fall
//! (0.3 s to the maximum, after an idle sample of up to 0.25 s) a step to
//! 121 k deliveries/s stalled the runtime for 250 ms and the p99 never
//! recovered within the run. For the same reason a burst of unpaced writes
//! wakes an idle pacer without waiting for its next sample. Below
//! saturation the rise stays gentle, so the busy moments of a lightly loaded
//! broker do not delay its frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the pacer samples the workers and adjusts the delay.
pub const TICK: Duration = Duration::from_millis(20);

/// How often it samples them while they are idle (no delay, and busy under
/// half the target), so that an idle broker does not wake 50 times a second:
/// on this VM each wake of an idle runtime costs about 0.17 ms of CPU, and
/// an idle tick of 50 ms made an idle broker use 3.3 ms of CPU a second
/// instead of 0.7. A burst does not wait for it: see [`BURST_WRITES`].
pub const IDLE_TICK: Duration = Duration::from_millis(250);

/// Unpaced writes since the last sample that wake an idle pacer at once:
/// about 50 ms of a core's work at 12 µs a write. A steady load under 16 k
/// unpaced writes/s does not reach it within one [`IDLE_TICK`]; a step to
/// saturation reaches it within about 50 ms. Counted where a frame is written
/// straight from the push (`DirectWrite`), which is how an idle broker writes.
pub const BURST_WRITES: u64 = 4000;

/// The share of time the workers may be busy before writes are delayed.
pub const TARGET_BUSY: f64 = 0.75;

/// The busy share from which the workers count as saturated: work is
/// arriving faster than they finish it.
pub const SATURATED: f64 = 0.95;

/// Delay change per tick, in units of the maximum delay, for each unit of
/// busy share above (or below) the target: workers just short of
/// [`SATURATED`] raise a zero delay to the maximum in 20 ticks (0.4 s); idle
/// workers bring the maximum back to zero in 6 (0.12 s).
const GAIN: f64 = 0.25;

/// [`GAIN`] while the workers are saturated: they raise a zero delay to the
/// maximum in 4 ticks (80 ms).
const SATURATED_GAIN: f64 = 1.0;

/// The delay every connection writer applies between its writes.
#[derive(Debug)]
pub struct WritePacer {
    delay_us: AtomicU64,
    max_us: u64,
    /// Writes made without delay since the last sample.
    unpaced_writes: AtomicU64,
    /// Wakes an idle pacer once `unpaced_writes` reaches [`BURST_WRITES`].
    burst: Notify,
}

impl WritePacer {
    /// A pacer whose delay stays within `max` (zero: writes are never delayed).
    #[must_use]
    pub fn new(max: Duration) -> Self {
        Self {
            delay_us: AtomicU64::new(0),
            max_us: u64::try_from(max.as_micros()).unwrap_or(u64::MAX),
            unpaced_writes: AtomicU64::new(0),
            burst: Notify::new(),
        }
    }

    /// Counts one write made without delay; the `BURST_WRITES`th since
    /// the last sample wakes the pacer.
    pub fn note_unpaced_write(&self) {
        if self.unpaced_writes.fetch_add(1, Relaxed) + 1 == BURST_WRITES {
            self.burst.notify_one();
        }
    }

    /// The current delay between one connection's writes.
    #[must_use]
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Relaxed))
    }

    /// Moves the delay one tick's worth toward bringing the workers' `busy`
    /// share (0 to 1) to [`TARGET_BUSY`]; returns the new delay.
    pub fn adjust(&self, busy: f64) -> Duration {
        let current = self.delay_us.load(Relaxed) as f64;
        let gain = if busy >= SATURATED { SATURATED_GAIN } else { GAIN };
        let step = (busy - TARGET_BUSY) * gain * self.max_us as f64;
        let next = (current + step).clamp(0.0, self.max_us as f64) as u64;
        self.delay_us.store(next, Relaxed);
        Duration::from_micros(next)
    }

    /// How long to wait before the next sample, given the last one.
    #[must_use]
    pub fn next_tick(&self, busy: f64) -> Duration {
        if self.delay_us.load(Relaxed) == 0 && busy < TARGET_BUSY / 2.0 { IDLE_TICK } else { TICK }
    }

    /// Samples the current runtime's workers every [`TICK`] (every
    /// [`IDLE_TICK`] while they idle) and adjusts the delay until
    /// `shutdown`; the delay is published as a metric.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
        if self.max_us == 0 {
            return;
        }
        let runtime = Handle::current().metrics();
        let workers = runtime.num_workers();
        let busy_total = || (0..workers).map(|w| runtime.worker_total_busy_duration(w)).sum::<Duration>();
        let mut last = (tokio::time::Instant::now(), busy_total());
        let mut tick = TICK;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
                () = self.burst.notified(), if tick == IDLE_TICK => {}
            }
            self.unpaced_writes.store(0, Relaxed);
            let now = (tokio::time::Instant::now(), busy_total());
            let elapsed = now.0.duration_since(last.0).as_secs_f64() * workers as f64;
            if elapsed > 0.0 {
                let busy = (now.1.saturating_sub(last.1).as_secs_f64() / elapsed).min(1.0);
                let delay = self.adjust(busy);
                metrics.write_delay_us.store(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX), Relaxed);
                tick = self.next_tick(busy);
            }
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_while_busy_and_returns_to_zero_when_idle() {
        let pacer = WritePacer::new(Duration::from_millis(20));
        assert_eq!(pacer.adjust(0.5), Duration::ZERO, "below the target the delay stays at zero");
        let first = pacer.adjust(1.0);
        assert!(first > Duration::ZERO);
        assert!(pacer.adjust(1.0) > first, "still saturated: the delay keeps growing");
        for _ in 0..100 {
            pacer.adjust(1.0);
        }
        assert_eq!(pacer.delay(), Duration::from_millis(20), "capped at the maximum");
        assert_eq!(pacer.adjust(TARGET_BUSY), Duration::from_millis(20), "at the target it holds");
        for _ in 0..10 {
            pacer.adjust(0.1);
        }
        assert_eq!(pacer.delay(), Duration::ZERO, "idle: back to zero");
    }

    /// Waits (at most 10 s) until `done` holds for the pacer's delay.
    async fn wait_for(pacer: &WritePacer, done: impl Fn(Duration) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(pacer.delay()) {
            assert!(tokio::time::Instant::now() < deadline, "delay stuck at {:?}", pacer.delay());
            tokio::time::sleep(TICK).await;
        }
    }

    #[test]
    fn a_busy_runtime_gets_a_delay_and_an_idle_one_loses_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
        runtime.expect("runtime").block_on(async {
            let pacer = Arc::new(WritePacer::new(Duration::from_millis(20)));
            let metrics = Arc::new(Metrics::default());
            let shutdown = CancellationToken::new();
            tokio::spawn(Arc::clone(&pacer).run(Arc::clone(&metrics), shutdown.clone()));

            // Blocking inside a task keeps the only worker busy.
            let hog = CancellationToken::new();
            let hogging = hog.clone();
            tokio::spawn(async move {
                while !hogging.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                    tokio::task::yield_now().await;
                }
            });
            wait_for(&pacer, |delay| delay > Duration::ZERO).await;
            assert!(metrics.write_delay_us.load(Relaxed) > 0, "the delay is published");

            hog.cancel();
            wait_for(&pacer, |delay| delay.is_zero()).await;
            shutdown.cancel();
        });
    }

    #[test]
    fn an_idle_pacer_samples_less_often() {
        let pacer = WritePacer::new(Duration::from_millis(20));
        assert_eq!(pacer.next_tick(0.0), IDLE_TICK, "idle: no need to look often");
        assert_eq!(pacer.next_tick(TARGET_BUSY / 2.0), TICK, "getting busy: watch closely");
        pacer.adjust(1.0);
        assert_eq!(pacer.next_tick(0.0), TICK, "a delay to bring back to zero: watch closely");
    }

    #[test]
    fn saturated_workers_raise_the_delay_faster_than_idle_ones_lower_it() {
        let pacer = WritePacer::new(Duration::from_millis(40));
        let ticks = |busy: f64, done: fn(Duration) -> bool| (1..=100).find(|_| done(pacer.adjust(busy)));
        let up = ticks(1.0, |delay| delay == Duration::from_millis(40)).expect("reaches the maximum");
        let down = ticks(0.0, |delay| delay.is_zero()).expect("back to zero");
        assert_eq!(
            (up, down),
            (4, 6),
            "a saturating burst is paced within 80 ms; the delay lets go over 120 ms"
        );
    }

    #[test]
    fn a_burst_of_unpaced_writes_wakes_the_pacer() {
        use futures_util::FutureExt as _;
        let pacer = WritePacer::new(Duration::from_millis(40));
        for _ in 1..BURST_WRITES {
            pacer.note_unpaced_write();
        }
        assert!(pacer.burst.notified().now_or_never().is_none(), "short of a burst: the idle tick stands");
        pacer.note_unpaced_write();
        assert!(pacer.burst.notified().now_or_never().is_some(), "a burst wakes the pacer");
        pacer.note_unpaced_write();
        assert!(
            pacer.burst.notified().now_or_never().is_none(),
            "once per sample, not once per write after it"
        );
    }

    #[test]
    fn a_zero_maximum_never_delays() {
        let pacer = WritePacer::new(Duration::ZERO);
        assert_eq!(pacer.adjust(1.0), Duration::ZERO);
    }
}
