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

/// CPU time `pid` has used so far, user plus system (`/proc/PID/stat`).
///
/// # Errors
/// The process is gone, the file does not parse, or `getconf CLK_TCK` fails.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).context("malformed /proc/PID/stat")?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()?))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line, in clock
/// ticks. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_ascii_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
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
    mut sample: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    while child.try_wait()?.is_none() {
        sample()?;
        std::thread::sleep(SAMPLE_EVERY);
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
        assert_eq!(parse_cpu_ticks(stat), Some(96));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own status") > 0);
        assert!(open_fds(pid).expect("own fds") >= 3);
        let spent = cpu_time(pid).expect("own stat");
        let start = std::time::Instant::now();
        while cpu_time(pid).expect("own stat") <= spent && start.elapsed() < Duration::from_secs(10) {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(cpu_time(pid).expect("own stat") > spent, "CPU time grows while we spin");
    }
}
