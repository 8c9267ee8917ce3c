//! Time: one monotonic [`Clock`] per run, and open-loop [`Schedule`]s on it.
//!
//! Every action the load generator takes (connect, join, publish, close) has
//! an *intended* time fixed before the run starts. Latency is measured from
//! that intended time, never from when the action actually happened, so a
//! stalled target (or a stalled load generator) shows up as latency instead
//! of silently slowing the offered load: no coordinated omission. The gap
//! between intended and actual is recorded separately as schedule lag.

use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the run's epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// Starts a clock now.
    pub fn start() -> Self {
        Self { epoch: Instant::now() }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    /// The instant `ns` nanoseconds after the epoch.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Sleeps until `ns` after the epoch; returns at once if that has passed.
    pub fn sleep_until(&self, ns: u64) -> tokio::time::Sleep {
        tokio::time::sleep_until(self.instant_at(ns))
    }
}

/// `d` in whole nanoseconds, saturating.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A fixed-rate sequence of intended times: `start + offset + n × interval`,
/// for `n` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: u64,
    count: u64,
}

impl Schedule {
    /// `count` events at `rate` per second starting at `start_ns`; a rate of
    /// 0 or less means "all at once".
    pub fn at_rate(start_ns: u64, rate: f64, count: u64) -> Self {
        let interval_ns = if rate > 0.0 { (1e9 / rate).round() as u64 } else { 0 };
        Self { start_ns, interval_ns, count }
    }

    /// Events at `rate` per second from `start_ns` for as many as fit in
    /// `duration` (the last one strictly before the end).
    pub fn for_duration(start_ns: u64, rate: f64, duration: Duration) -> Self {
        let count = if rate > 0.0 { (duration.as_secs_f64() * rate).ceil() as u64 } else { 0 };
        Self::at_rate(start_ns, rate, count)
    }

    /// The same schedule shifted by `slot` of `slots` equal fractions of one
    /// interval, so that many publishers with the same rate do not all fire
    /// at the same instant.
    pub fn staggered(self, slot: u64, slots: u64) -> Self {
        let offset = slot.checked_rem(slots).map_or(0, |slot| self.interval_ns.saturating_mul(slot) / slots);
        Self { start_ns: self.start_ns + offset, ..self }
    }

    /// The intended time of event `n`, or `None` past the end.
    pub fn at(&self, n: u64) -> Option<u64> {
        (n < self.count).then(|| self.start_ns + n * self.interval_ns)
    }

    /// Number of events.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Time between events.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// Intended time just after the last event.
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.count * self.interval_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_times() {
        let schedule = Schedule::at_rate(1_000, 4.0, 3);
        assert_eq!(schedule.at(0), Some(1_000));
        assert_eq!(schedule.at(1), Some(250_001_000));
        assert_eq!(schedule.at(2), Some(500_001_000));
        assert_eq!(schedule.at(3), None);
        assert_eq!(schedule.end_ns(), 750_001_000);
        assert_eq!(schedule.interval(), Duration::from_millis(250));
    }

    #[test]
    fn duration_schedule_fits_inside_the_window() {
        let schedule = Schedule::for_duration(0, 10.0, Duration::from_secs(3));
        assert_eq!(schedule.count(), 30);
        assert!(schedule.at(29).expect("30 events") < 3_000_000_000);
        assert_eq!(Schedule::for_duration(0, 0.0, Duration::from_secs(3)).count(), 0);
        assert_eq!(Schedule::for_duration(0, 3.0, Duration::from_millis(500)).count(), 2);
    }

    #[test]
    fn zero_rate_fires_everything_at_start() {
        let schedule = Schedule::at_rate(5, 0.0, 3);
        assert_eq!((schedule.at(0), schedule.at(2)), (Some(5), Some(5)));
    }

    #[test]
    fn staggering_spreads_publishers_over_one_interval() {
        let base = Schedule::at_rate(0, 10.0, 5);
        let offsets: Vec<u64> =
            (0..4).map(|slot| base.staggered(slot, 4).at(0).expect("one event")).collect();
        assert_eq!(offsets, vec![0, 25_000_000, 50_000_000, 75_000_000]);
        assert_eq!(base.staggered(3, 0), base);
    }

    #[tokio::test(start_paused = true)]
    async fn clock_sleeps_to_intended_time() {
        let clock = Clock::start();
        clock.sleep_until(2_000_000_000).await;
        assert!(clock.now_ns() >= 2_000_000_000);
        // Past times return at once.
        let before = clock.now_ns();
        clock.sleep_until(1).await;
        assert_eq!(clock.now_ns(), before);
    }
}
