//! Looking at a running server from outside: its resident memory and open
//! descriptors (from `/proc/PID`), and the broker's `/metrics` counters.
//!
//! Linux only, like the rest of the harness. Every probe is read-only.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

/// Resident set size of `pid`, KiB (`VmRSS` in `/proc/PID/status`).
///
/// # Errors
/// The process is gone or the file has no `VmRSS` line.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS line")
}

/// The `VmRSS:  1234 kB` value of a `/proc/PID/status` text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// CPU time a process has used so far, split as `/proc/PID/stat` splits it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuTimes {
    /// `utime`: in user mode.
    pub user: Duration,
    /// `stime`: in the kernel on its behalf (syscalls, the TCP stack).
    pub system: Duration,
}

impl CpuTimes {
    /// User plus system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// `utime` and `stime` ticks at `ticks_per_second`.
    pub fn from_ticks((user, system): (u64, u64), ticks_per_second: f64) -> Self {
        let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / ticks_per_second);
        Self { user: seconds(user), system: seconds(system) }
    }
}

/// User and system CPU time `pid` has used so far (`/proc/PID/stat`): the
/// one place the harness reads a process's CPU.
///
/// # Errors
/// The process is gone, the file does not parse, or `getconf CLK_TCK` fails.
pub fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).context("malformed /proc/PID/stat")?;
    Ok(CpuTimes::from_ticks(ticks, clock_ticks_per_second()?))
}

/// CPU time `pid` has used so far, user plus system.
///
/// # Errors
/// As [`cpu_times`].
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    Ok(cpu_times(pid)?.total())
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line, in
/// clock ticks. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted from its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_ascii_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// A server's CPU over a window, shared out over the events (deliveries,
/// joins, connects) it handled in it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuCost {
    /// User CPU per event, µs.
    pub user_us: f64,
    /// System CPU per event, µs.
    pub system_us: f64,
    /// Events in the window.
    pub events: u64,
    /// Share of one core the server was busy over the window.
    pub busy: f64,
}

impl CpuCost {
    /// `spent` over `events` in a window of `window`; `None` when there
    /// were no events or the window is empty.
    pub fn new(spent: CpuTimes, events: u64, window: Duration) -> Option<Self> {
        if events == 0 || window.is_zero() {
            return None;
        }
        let per_event_us = |time: Duration| time.as_secs_f64() * 1e6 / events as f64;
        Some(Self {
            user_us: per_event_us(spent.user),
            system_us: per_event_us(spent.system),
            events,
            busy: spent.total().as_secs_f64() / window.as_secs_f64(),
        })
    }

    /// User plus system per event, µs.
    pub fn total_us(&self) -> f64 {
        self.user_us + self.system_us
    }
}

/// A reading taken at a moment, ms since the Unix epoch.
pub type Sample<T> = (u64, T);

/// The readings that bound a window from `start_ms` to `end_ms`, for
/// counting what a server did in it: the last sample at or before the start
/// (the server is between phases there) and the last at or before the end
/// (after it, the clients are closing). `None` without both, or when they
/// are the same sample.
pub fn window<T>(samples: &[Sample<T>], start_ms: u64, end_ms: u64) -> Option<(&Sample<T>, &Sample<T>)> {
    let first = samples.iter().rev().find(|(at, _)| *at <= start_ms)?;
    let last = samples.iter().rev().find(|(at, _)| *at <= end_ms)?;
    (last.0 > first.0).then_some((first, last))
}

/// [`CpuCost`] of `events` over the window of `samples` from `start_ms` to
/// `end_ms`.
pub fn window_cost(samples: &[Sample<CpuTimes>], start_ms: u64, end_ms: u64, events: u64) -> Option<CpuCost> {
    let ((from, before), (to, after)) = window(samples, start_ms, end_ms)?;
    CpuCost::new(after.since(before), events, Duration::from_millis(to - from))
}

/// The current time, ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(&ticks) = TICKS.get() {
        return Ok(ticks);
    }
    let output = std::process::Command::new("getconf").arg("CLK_TCK").output().context("running getconf")?;
    let ticks: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().context("getconf CLK_TCK")?;
    Ok(*TICKS.get_or_init(|| ticks))
}

/// Open file descriptors of `pid`: a cheap, server-agnostic count of its
/// connections.
///
/// # Errors
/// The process is gone.
pub fn open_fds(pid: u32) -> anyhow::Result<u64> {
    let entries =
        std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("listing fds of {pid}"))?;
    Ok(entries.count() as u64)
}

/// Polls `open_fds(pid)` until `done` says so or `timeout` passes; returns
/// the last count.
///
/// # Errors
/// The process is gone.
pub fn wait_for_fds(pid: u32, timeout: Duration, done: impl Fn(u64) -> bool) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let fds = open_fds(pid)?;
        if done(fds) || Instant::now() >= deadline {
            return Ok(fds);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often a probe samples a server while a loadgen run goes on.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Calls `sample` every [`SAMPLE_EVERY`] until `child` exits.
///
/// # Errors
/// The child could not be waited for, or `sample` failed.
pub fn while_running(
    child: &mut std::process::Child,
    sample: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    while_running_every(child, SAMPLE_EVERY, sample)
}

/// Calls `sample` every `every` until `child` exits.
///
/// # Errors
/// The child could not be waited for, or `sample` failed.
pub fn while_running_every(
    child: &mut std::process::Child,
    every: Duration,
    mut sample: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    while child.try_wait()?.is_none() {
        sample()?;
        std::thread::sleep(every);
    }
    Ok(())
}

/// The broker's write counters at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct WriteCounters {
    /// `broker_frames_out_total`.
    pub frames_out: u64,
    /// `broker_writes_total`.
    pub writes: u64,
}

impl WriteCounters {
    /// Frames per write between `self` (before) and `after`; `None` when
    /// nothing was written.
    pub fn batch_size(&self, after: &WriteCounters) -> Option<f64> {
        let writes = after.writes.checked_sub(self.writes)?;
        let frames = after.frames_out.checked_sub(self.frames_out)?;
        (writes > 0).then(|| frames as f64 / writes as f64)
    }
}

/// Reads the broker's `/metrics` on 127.0.0.1:`port`.
///
/// # Errors
/// The request failed or the counters are missing.
pub fn write_counters(port: u16) -> anyhow::Result<WriteCounters> {
    let body = http_get(port, "/metrics")?;
    parse_write_counters(&body).context("no broker_frames_out_total / broker_writes_total in /metrics")
}

/// The two counters out of a Prometheus text exposition.
pub fn parse_write_counters(text: &str) -> Option<WriteCounters> {
    let value = |name: &str| {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    Some(WriteCounters {
        frames_out: value("broker_frames_out_total")? as u64,
        writes: value("broker_writes_total")? as u64,
    })
}

/// A plain HTTP/1.1 GET (the harness needs nothing more).
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connecting to {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).context("reading the response")?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else { bail!("malformed HTTP response") };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_and_counters_parse() {
        assert_eq!(parse_vm_rss("Name:\tbroker\nVmRSS:\t   30064 kB\nVmSwap: 0 kB\n"), Some(30064));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let text = "# TYPE broker_frames_out_total counter\nbroker_frames_out_total 772639\n\
                    broker_writes_total_other 1\nbroker_writes_total 196383\n";
        let counters = parse_write_counters(text).expect("both counters");
        assert_eq!(counters, WriteCounters { frames_out: 772_639, writes: 196_383 });
        let before = WriteCounters { frames_out: 100, writes: 50 };
        assert_eq!(before.batch_size(&WriteCounters { frames_out: 500, writes: 150 }), Some(4.0));
        assert_eq!(before.batch_size(&before), None);
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 399 0 0 0 71 25 0 0 20 0 3 0 123 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some((71, 25)));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn cpu_is_shared_out_per_event_over_the_window() {
        let at = |ms: u64, user: u64, system: u64| (ms, CpuTimes::from_ticks((user, system), 100.0));
        // Ticks of 10 ms: idle until 1 000, then 2 s of publishing that costs
        // 0.6 s user and 0.4 s system, then the clients close (more system).
        let samples =
            [at(900, 5, 5), at(1_000, 5, 5), at(2_000, 35, 25), at(3_000, 65, 45), at(3_100, 65, 90)];
        let cost = window_cost(&samples, 1_050, 3_050, 100_000).expect("a window");
        assert!((cost.user_us - 6.0).abs() < 1e-9, "0.6 s over 100 000: {cost:?}");
        assert!((cost.system_us - 4.0).abs() < 1e-9);
        assert!((cost.total_us() - 10.0).abs() < 1e-9);
        assert!((cost.busy - 0.5).abs() < 1e-9, "1 s of CPU in 2 s");
        assert_eq!(cost.events, 100_000);
        assert_eq!(window_cost(&samples, 1_050, 3_050, 0), None, "nothing to share out");
        assert_eq!(window_cost(&samples, 800, 3_050, 1), None, "no sample before the start");
        assert_eq!(window_cost(&samples, 1_050, 1_060, 1), None, "start and end in one interval");
        let later = CpuTimes { user: Duration::from_millis(5), system: Duration::from_millis(1) };
        let earlier = CpuTimes { user: Duration::from_millis(7), system: Duration::ZERO };
        assert_eq!(later.since(&earlier).user, Duration::ZERO, "never negative");
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own status") > 0);
        assert!(open_fds(pid).expect("own fds") >= 3);
        let spent = cpu_time(pid).expect("own stat");
        let split = cpu_times(pid).expect("own stat");
        assert!(split.total() >= spent && split.user <= split.total());
        let start = std::time::Instant::now();
        while cpu_time(pid).expect("own stat") <= spent && start.elapsed() < Duration::from_secs(10) {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(cpu_time(pid).expect("own stat") > spent, "CPU time grows while we spin");
    }
}
