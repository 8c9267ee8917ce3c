//! Is the load generator itself the bottleneck?
//!
//! Owns three things: raising `RLIMIT_NOFILE` before a run, sampling the
//! process's own CPU time once a second (from `/proc/self/stat`, so Linux
//! only; elsewhere the figures are absent), and turning CPU and schedule lag
//! into warnings. When the target runs in the same process (the integration
//! tests), its CPU time is counted too.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::schedule::Clock;
use crate::stats::PhaseData;

/// `USER_HZ`: the unit of `utime`/`stime` in `/proc/*/stat`, fixed at 100
/// by the Linux ABI on every mainstream architecture.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// Fraction of the workers' capacity above which we call the load
/// generator saturated.
const BUSY_UTILIZATION: f64 = 0.85;
/// Schedule lag p99 above which the load generator is called late.
const LATE_P99: Duration = Duration::from_millis(10);

/// The open-file limit after trying to raise it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdLimit {
    /// Descriptors the run may need.
    pub wanted: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// Why raising failed, if it did.
    pub error: Option<String>,
}

/// Raises the soft `RLIMIT_NOFILE` as far as the hard limit allows; when
/// the hard limit is below `wanted`, first tries to raise it too (which
/// works when privileged, up to `fs.nr_open`).
pub fn raise_nofile_limit(wanted: u64) -> FdLimit {
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && hard < wanted
    {
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(wanted);
        let raised = wanted.min(ceiling).max(hard);
        // Unprivileged processes may not raise the hard limit; the soft one
        // is still raised below.
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, raised, raised);
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => FdLimit { wanted, soft, error: None },
        Err(e) => {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
            FdLimit { wanted, soft, error: Some(e.to_string()) }
        }
    }
}

/// CPU time (user + system) this process has used, if the OS tells.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS_PER_SEC))
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name may
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // Fields after the name start at #3 (state); utime is #14, stime #15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU used over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    /// CPU seconds used during the run.
    pub cpu_secs: f64,
    /// Wall-clock seconds of the run.
    pub wall_secs: f64,
    /// Cores busy in each second of the run.
    pub cores_per_second: Vec<f64>,
}

/// Samples the process's CPU time once a second in the background.
#[derive(Debug)]
pub struct CpuSampler {
    stop: CancellationToken,
    task: JoinHandle<Vec<f64>>,
    clock: Clock,
    start_ns: u64,
    start_cpu: Option<Duration>,
}

impl CpuSampler {
    /// Starts sampling.
    pub fn start(clock: Clock) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            let mut last = (clock.now_ns(), cpu_time());
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = token.cancelled() => return samples,
                }
                let now = (clock.now_ns(), cpu_time());
                if let (Some(before), Some(after)) = (last.1, now.1) {
                    let wall = (now.0 - last.0) as f64 / 1e9;
                    samples.push((after.saturating_sub(before)).as_secs_f64() / wall.max(1e-3));
                }
                last = now;
            }
        });
        Self { stop, task, clock, start_ns: clock.now_ns(), start_cpu: cpu_time() }
    }

    /// Stops sampling and sums up.
    pub async fn stop(self) -> CpuUsage {
        self.stop.cancel();
        let cores_per_second = self.task.await.unwrap_or_default();
        let cpu_secs = match (self.start_cpu, cpu_time()) {
            (Some(before), Some(after)) => after.saturating_sub(before).as_secs_f64(),
            _ => 0.0,
        };
        CpuUsage { cpu_secs, wall_secs: (self.clock.now_ns() - self.start_ns) as f64 / 1e9, cores_per_second }
    }
}

/// The load generator's verdict on itself.
#[derive(Debug, Clone, Serialize)]
pub struct SelfCheck {
    /// CPU figures.
    pub cpu: CpuUsage,
    /// Tokio worker threads.
    pub worker_threads: usize,
    /// Average cores busy / worker threads.
    pub utilization: f64,
    /// Seconds in which cores busy / workers was above the busy mark.
    pub busy_seconds: usize,
    /// Schedule lag, 99th percentile, ms.
    pub schedule_lag_p99_ms: f64,
    /// Schedule lag, maximum, ms.
    pub schedule_lag_max_ms: f64,
    /// Mean schedule lag in the first and last third of the run, ms.
    pub schedule_lag_trend_ms: (f64, f64),
    /// The open-file limit.
    pub fd_limit: FdLimit,
    /// What looks wrong on the load generator's side.
    pub warnings: Vec<String>,
}

/// Judges CPU use and schedule lag.
pub fn assess(cpu: CpuUsage, workers: usize, lag: &PhaseData, fd_limit: FdLimit) -> SelfCheck {
    let workers_f = workers.max(1) as f64;
    let utilization = if cpu.wall_secs > 0.0 { cpu.cpu_secs / cpu.wall_secs / workers_f } else { 0.0 };
    let busy_seconds =
        cpu.cores_per_second.iter().filter(|&&cores| cores / workers_f >= BUSY_UTILIZATION).count();
    let p99 = lag.histogram.value_at_quantile(0.99) as f64 / 1e3;
    let max = lag.histogram.max() as f64 / 1e3;
    let trend = lag_trend(lag);
    let mut warnings = Vec::new();
    if utilization >= BUSY_UTILIZATION || busy_seconds >= 3 {
        warnings.push(format!(
            "loadgen CPU near its limit ({:.0}% of {workers} worker threads on average, {busy_seconds} s above {:.0}%): \
             it may be measuring itself, not the target",
            utilization * 100.0,
            BUSY_UTILIZATION * 100.0
        ));
    }
    if !lag.histogram.is_empty() && p99 >= LATE_P99.as_secs_f64() * 1e3 {
        // Late while its own threads were mostly idle: it was waiting for a
        // core, not working. Say so, since the fix is elsewhere.
        let cause = if utilization < 0.5 {
            format!(
                "; its own CPU use was low, so the host is oversubscribed (load average {})",
                load_average().unwrap_or_else(|| "unknown".to_owned())
            )
        } else {
            String::new()
        };
        warnings.push(format!(
            "loadgen fell behind its own schedule (lag p99 {p99:.1} ms, max {max:.1} ms): latencies include its delay{cause}"
        ));
    }
    if trend.1 > 5.0 && trend.1 > 2.0 * trend.0 {
        warnings.push(format!("schedule lag grew from {:.1} ms to {:.1} ms over the run", trend.0, trend.1));
    }
    if fd_limit.soft < fd_limit.wanted {
        warnings.push(format!(
            "open-file limit {} is below the {} this run may need (raise the hard limit: ulimit -Hn)",
            fd_limit.soft, fd_limit.wanted
        ));
    }
    SelfCheck {
        cpu,
        worker_threads: workers,
        utilization,
        busy_seconds,
        schedule_lag_p99_ms: p99,
        schedule_lag_max_ms: max,
        schedule_lag_trend_ms: trend,
        fd_limit,
        warnings,
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_ascii_whitespace().next().map(str::to_owned)
}

/// Mean lag (ms) over the first and the last third of the seconds with events.
fn lag_trend(lag: &PhaseData) -> (f64, f64) {
    let means: Vec<f64> = lag
        .per_second
        .iter()
        .zip(&lag.micros_per_second)
        .filter(|(count, _)| **count > 0)
        .map(|(count, micros)| *micros as f64 / *count as f64 / 1e3)
        .collect();
    if means.len() < 3 {
        return (0.0, 0.0);
    }
    let third = means.len() / 3;
    let average = |slice: &[f64]| slice.iter().sum::<f64>() / slice.len() as f64;
    (average(&means[..third]), average(&means[means.len() - third..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Phase, Recorder, Sample};

    #[test]
    fn parses_cpu_ticks_even_with_odd_process_names() {
        let stat = "1234 (load gen (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        if cfg!(target_os = "linux") {
            assert!(cpu_time().is_some());
        }
    }

    #[test]
    fn busy_cpu_and_growing_lag_are_warned_about() {
        let recorder = Recorder::new();
        for second in 0..9u64 {
            let lag_ms = if second < 6 { 1 } else { 30 };
            let sample = Sample {
                phase: Phase::ScheduleLag,
                latency_ns: lag_ms * 1_000_000,
                at_ns: second * 1_000_000_000,
                fresh: false,
            };
            recorder.record(sample);
        }
        let lag = recorder.snapshot().remove(Phase::ScheduleLag as usize);
        let cpu = CpuUsage { cpu_secs: 18.0, wall_secs: 10.0, cores_per_second: vec![1.9; 10] };
        let fd = FdLimit { wanted: 10, soft: 5, error: None };
        let check = assess(cpu, 2, &lag, fd);
        assert_eq!(check.busy_seconds, 10);
        assert_eq!(check.warnings.len(), 4, "{:?}", check.warnings);
        let idle = CpuUsage { cpu_secs: 1.0, wall_secs: 10.0, cores_per_second: vec![0.1; 10] };
        let quiet = assess(
            idle,
            2,
            &crate::stats::PhaseData::new(Phase::ScheduleLag),
            FdLimit { wanted: 1, soft: 1, error: None },
        );
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    }

    #[test]
    fn raising_the_fd_limit_reports_the_soft_limit() {
        let limit = raise_nofile_limit(64);
        assert!(limit.soft >= 64 || limit.error.is_some());
    }
}
