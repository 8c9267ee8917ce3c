//! [`WritePacer`]: how long writes wait so that a busy broker sends fewer,
//! larger `writev`s, and the flushes that end the wait.
//!
//! On loopback a `writev` costs the broker 5–8 µs of kernel time whatever it
//! carries (the receiver's TCP processing runs on the sender's core), while
//! one more 150-byte frame in it costs well under 1 µs. A broker that writes
//! each frame as it comes saturates its core at about 150k writes/s, and its
//! queues then grow until batches are large enough: latency climbs to
//! hundreds of ms before the batches catch up.
//!
//! The pacer watches how busy the runtime's workers are and sets one delay
//! for every connection. An idle or lightly loaded broker keeps it at zero,
//! so no frame waits; as the workers approach [`TARGET_BUSY`], the delay
//! grows (up to the configured maximum) until batching brings them back
//! under it.
//!
//! While the delay is not zero, a push that finds a parked writer's outbox
//! empty, less than `delay` after that connection's last paced write, queues
//! the frame and puts the outbox on a flush list instead of waking the
//! writer; whatever else reaches that outbox meanwhile joins it. (A
//! connection that receives less than one frame per `delay` never waits: its
//! frames are written as they are pushed.)
//! A flusher per list waits `delay` after the first outbox of a burst was
//! listed, then writes every listed outbox's queue itself, one `writev`
//! each: the members a burst of publications reached are flushed together,
//! once it has been enqueued, by one task — no wake-up, timer or task switch
//! per connection. What a socket does not take goes to its writer. The
//! invariant: an outbox is listed at most once per flush, only while its
//! writer is parked, and every listed outbox is flushed (or its writer woken).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Outbox;
use crate::metrics::Metrics;

/// How often the pacer samples the workers and adjusts the delay.
pub const TICK: Duration = Duration::from_millis(20);

/// How often it samples them while they are idle (no delay, and busy under
/// half the target), so that an idle broker does not wake 50 times a second.
/// A burst is noticed within this, and paced from the next [`TICK`] on.
pub const IDLE_TICK: Duration = Duration::from_millis(250);

/// The share of time the workers may be busy before writes are delayed.
pub const TARGET_BUSY: f64 = 0.75;

/// Delay change per tick, in units of the maximum delay, for each unit of
/// busy share above (or below) the target: saturated workers raise a zero
/// delay to the maximum in about 16 ticks (0.3 s); idle workers bring the
/// maximum back to zero in 6.
const GAIN: f64 = 0.25;

/// Outboxes a flusher writes before it lets other tasks run: one flush of a
/// large room's members would otherwise hold a worker for tens of ms.
const FLUSH_YIELD_EVERY: usize = 64;

/// The delay every connection's writes wait, and the flush lists that end it.
#[derive(Debug)]
pub struct WritePacer {
    delay_us: AtomicU64,
    max_us: u64,
    /// One per runtime worker, so that flushes can run on every core.
    lists: Box<[FlushList]>,
    /// The list the next writer to attach is given.
    next_list: AtomicUsize,
    /// What [`now_us`](Self::now_us) counts from.
    epoch: Instant,
}

/// Outboxes whose queued frames wait for the next flush.
#[derive(Debug, Default)]
struct FlushList {
    due: Mutex<Vec<Outbox>>,
    /// Wakes the flusher: the list went from empty to not.
    listed: Notify,
}

impl WritePacer {
    /// A pacer whose delay stays within `max` (zero: writes are never
    /// delayed), with a flush list per core this process may run on.
    #[must_use]
    pub fn new(max: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            delay_us: AtomicU64::new(0),
            max_us: u64::try_from(max.as_micros()).unwrap_or(u64::MAX),
            lists: (0..cores).map(|_| FlushList::default()).collect(),
            next_list: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// Starts the pacer's tasks on `tracker`: the sampler that sets the
    /// delay, and a flusher per list. Nothing when the maximum is zero.
    pub fn start(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
    ) {
        if self.max_us == 0 {
            return;
        }
        tracker.spawn(Arc::clone(self).run(metrics, shutdown.clone()));
        self.start_flushers(tracker, shutdown);
    }

    /// Starts a flusher per list (without the sampler: tests set the delay).
    pub(super) fn start_flushers(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        for list in 0..self.lists.len() {
            tracker.spawn(Arc::clone(self).flush(list, shutdown.clone()));
        }
    }

    /// Whether writes wait now (the delay is not zero).
    #[must_use]
    pub fn is_pacing(&self) -> bool {
        self.delay_us.load(Relaxed) != 0
    }

    /// Whether a frame pushed to a parked writer's empty outbox must wait for
    /// a flush: while pacing, when that connection's last paced write,
    /// `last_write` (see [`now_us`](Self::now_us)), is less than `delay`
    /// ago. Otherwise it is written now, and while pacing, `last_write`
    /// becomes now.
    pub(super) fn must_wait(&self, last_write: &mut u32) -> bool {
        let delay_us = self.delay_us.load(Relaxed);
        if delay_us == 0 {
            return false;
        }
        let now = self.now_us();
        // Wrapping: the clock wraps every 71 minutes, and a connection idle
        // for a multiple of that at most waits one delay it did not need to.
        if u64::from(now.wrapping_sub(*last_write)) < delay_us {
            return true;
        }
        *last_write = now;
        false
    }

    /// Microseconds since the pacer started, wrapping: the clock of
    /// [`must_wait`](Self::must_wait)'s `last_write`, four bytes per connection.
    #[allow(clippy::cast_possible_truncation, reason = "wraps on purpose")]
    pub(super) fn now_us(&self) -> u32 {
        self.epoch.elapsed().as_micros() as u32
    }

    /// The flush list for a writer that attaches now: round robin.
    pub(super) fn assign_list(&self) -> usize {
        self.next_list.fetch_add(1, Relaxed) % self.lists.len()
    }

    /// Puts `outbox` on flush list `list`: its writer is parked and its
    /// queue just went from empty to not. Called with the outbox lock held
    /// (the list's lock is innermost).
    pub(super) fn flush_later(&self, list: usize, outbox: &Outbox) {
        let Some(list) = self.lists.get(list) else { return };
        let mut due = list.due.lock();
        due.push(outbox.clone());
        let first = due.len() == 1;
        drop(due);
        if first {
            list.listed.notify_one();
        }
    }

    /// Flushes list `list`, `delay` after the first outbox of each burst
    /// was put on it, until `shutdown`; then flushes once more.
    async fn flush(self: Arc<Self>, list: usize, shutdown: CancellationToken) {
        let Some(list) = self.lists.get(list) else { return };
        let mut taken = Vec::new();
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                () = list.listed.notified() => false,
            };
            let delay = self.delay();
            let stop = stop
                || (!delay.is_zero()
                    && tokio::select! {
                        () = shutdown.cancelled() => true,
                        () = tokio::time::sleep(delay) => false,
                    });
            std::mem::swap(&mut *list.due.lock(), &mut taken);
            for (flushed, outbox) in taken.drain(..).enumerate() {
                outbox.flush();
                if flushed % FLUSH_YIELD_EVERY == FLUSH_YIELD_EVERY - 1 && !stop {
                    tokio::task::yield_now().await;
                }
            }
            if stop {
                return;
            }
        }
    }

    /// The current delay: how long the first frame of a paced burst waits for its flush.
    #[must_use]
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Relaxed))
    }

    /// Moves the delay one tick's worth toward bringing the workers' `busy`
    /// share (0 to 1) to [`TARGET_BUSY`]; returns the new delay.
    pub fn adjust(&self, busy: f64) -> Duration {
        let current = self.delay_us.load(Relaxed) as f64;
        let step = (busy - TARGET_BUSY) * GAIN * self.max_us as f64;
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
    /// `shutdown` (then sets it to zero); the delay is published as a metric.
    async fn run(self: Arc<Self>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
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
                () = shutdown.cancelled() => {
                    // Flushers stop now: what is pushed from here on must
                    // not wait for one.
                    self.delay_us.store(0, Relaxed);
                    return;
                }
                () = tokio::time::sleep(tick) => {}
            }
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
            pacer.start(&TaskTracker::new(), Arc::clone(&metrics), &shutdown);

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
    fn a_zero_maximum_never_delays() {
        let pacer = WritePacer::new(Duration::ZERO);
        assert_eq!(pacer.adjust(1.0), Duration::ZERO);
    }
}
