//! `bench/cluster`: N brokers behind one private Redis on this machine, one
//! loadgen run across all of them, and what each process cost.
//!
//! Owns the Redis child ([`RedisServer`]: `redis-server` on a free loopback
//! port, nothing persisted, stopped when dropped, as `tests/redis.sh` does
//! it), the sampling of every process while loadgen runs ([`Sampler`]: each
//! broker's RSS, Redis's CPU from `/proc/PID/stat`, the load average) and
//! the table ([`render`]). Starting the brokers and loadgen is
//! [`crate::compare`]'s ([`Server`](crate::compare::server::Server),
//! [`Invocation`](crate::compare::loadgen::Invocation)). Invariant: no child
//! outlives its handle.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::compare::probe::{self, CpuTimes};

/// How long Redis may take to answer its first `PING`.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the starting Redis is asked.
const REDIS_START_POLL: Duration = Duration::from_millis(100);

/// A private `redis-server` on `127.0.0.1`, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    /// Its pid, for `/proc/PID/stat`.
    pub pid: u32,
    child: Child,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a port the kernel just handed out, in a fresh
    /// directory, without persistence, and waits until it answers `PING`
    /// (asked with `redis-cli`).
    ///
    /// # Errors
    /// `redis-server` is missing (Debian's `redis-server` package has it),
    /// or did not answer in time.
    pub fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?
            .port();
        let dir = std::env::temp_dir().join(format!("bench-cluster-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (install Debian's redis-server package)")?;
        let redis = Self { port, pid: child.id(), child, dir };
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        while Instant::now() < deadline {
            let pong = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "ping"])
                .stderr(Stdio::null())
                .output()
                .context("running redis-cli")?;
            if String::from_utf8_lossy(&pong.stdout).trim() == "PONG" {
                return Ok(redis);
            }
            std::thread::sleep(REDIS_START_POLL);
        }
        bail!("redis-server on port {port} did not answer PING within {REDIS_START_TIMEOUT:?}")
    }

    /// Its URL for `BROKER_REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    parse_load_average(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first field of a `/proc/loadavg` text.
pub fn parse_load_average(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// What one broker cost over the run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    /// Its port.
    pub port: u16,
    /// Its pid.
    pub pid: u32,
    /// RSS before loadgen started, KiB.
    pub idle_rss_kib: u64,
    /// Highest RSS seen while loadgen ran, KiB.
    pub peak_rss_kib: u64,
    /// CPU it used while loadgen ran.
    pub cpu: CpuTimes,
}

/// Samples the brokers and Redis once a second while loadgen runs.
#[derive(Debug)]
pub struct Sampler {
    nodes: Vec<NodeFigures>,
    node_cpu_start: Vec<CpuTimes>,
    redis_pid: u32,
    redis_start: CpuTimes,
    redis_last: (Instant, CpuTimes),
    /// Redis CPU over the run.
    pub redis_cpu: CpuTimes,
    /// Redis's busiest second, in cores.
    pub redis_peak_cores: f64,
    started: Instant,
    /// Load average before, highest during, and after.
    pub load: (Option<f64>, Option<f64>, Option<f64>),
}

impl Sampler {
    /// Reads every process's starting point.
    ///
    /// # Errors
    /// A process is gone.
    pub fn start(nodes: &[(u16, u32)], redis_pid: Option<u32>) -> anyhow::Result<Self> {
        let mut figures = Vec::with_capacity(nodes.len());
        let mut cpu = Vec::with_capacity(nodes.len());
        for &(port, pid) in nodes {
            let idle = probe::rss_kib(pid)?;
            figures.push(NodeFigures {
                port,
                pid,
                idle_rss_kib: idle,
                peak_rss_kib: idle,
                cpu: CpuTimes::default(),
            });
            cpu.push(probe::cpu_times(pid)?);
        }
        let redis_pid = redis_pid.unwrap_or(0);
        let redis_start = if redis_pid == 0 { CpuTimes::default() } else { probe::cpu_times(redis_pid)? };
        let load = load_average();
        Ok(Self {
            nodes: figures,
            node_cpu_start: cpu,
            redis_pid,
            redis_start,
            redis_last: (Instant::now(), redis_start),
            redis_cpu: CpuTimes::default(),
            redis_peak_cores: 0.0,
            started: Instant::now(),
            load: (load, load, None),
        })
    }

    /// One sample of everything.
    ///
    /// # Errors
    /// A broker or Redis is gone.
    pub fn sample(&mut self) -> anyhow::Result<()> {
        for (node, start) in self.nodes.iter_mut().zip(&self.node_cpu_start) {
            node.peak_rss_kib = node.peak_rss_kib.max(probe::rss_kib(node.pid)?);
            node.cpu = probe::cpu_times(node.pid)?.since(start);
        }
        if self.redis_pid != 0 {
            let now = (Instant::now(), probe::cpu_times(self.redis_pid)?);
            let wall = now.0.duration_since(self.redis_last.0).as_secs_f64();
            if wall >= 0.5 {
                let spent = now.1.since(&self.redis_last.1).total().as_secs_f64();
                self.redis_peak_cores = self.redis_peak_cores.max(spent / wall);
                self.redis_last = now;
            }
            self.redis_cpu = now.1.since(&self.redis_start);
        }
        if let Some(load) = load_average() {
            self.load.1 = Some(self.load.1.map_or(load, |high: f64| high.max(load)));
        }
        Ok(())
    }

    /// The last sample, with the load average after.
    ///
    /// # Errors
    /// As [`sample`](Self::sample).
    pub fn finish(mut self) -> anyhow::Result<(Vec<NodeFigures>, RedisFigures, Load)> {
        self.sample()?;
        let wall = self.started.elapsed();
        let redis = RedisFigures {
            cpu: self.redis_cpu,
            mean_cores: self.redis_cpu.total().as_secs_f64() / wall.as_secs_f64().max(1e-3),
            peak_cores: self.redis_peak_cores,
        };
        let load = Load { before: self.load.0, peak: self.load.1, after: load_average() };
        Ok((self.nodes, redis, load))
    }
}

/// Redis's cost over the run.
#[derive(Debug, Clone, Serialize)]
pub struct RedisFigures {
    /// CPU it used.
    pub cpu: CpuTimes,
    /// Mean cores busy.
    pub mean_cores: f64,
    /// Busiest second, cores.
    pub peak_cores: f64,
}

/// The machine's 1-minute load average around the run.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// Before loadgen started.
    pub before: Option<f64>,
    /// Highest while it ran.
    pub peak: Option<f64>,
    /// After it finished.
    pub after: Option<f64>,
}

/// One target's share as loadgen's report gives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// The port of its URL, which names the broker.
    pub port: Option<u16>,
    /// Clients connected to it.
    pub connected: u64,
    /// Its sessions that ended early.
    pub ended_early: u64,
    /// Pings its clients answered.
    pub pings: u64,
    /// `message` events its clients received.
    pub deliveries: u64,
}

/// The per-target rows of a loadgen report (`targets`).
pub fn shares(report: &serde_json::Value) -> Vec<Share> {
    let field = |target: &serde_json::Value, name: &str| target[name].as_u64().unwrap_or(0);
    report["targets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .map(|target| Share {
                    port: target["url"]
                        .as_str()
                        .and_then(|url| url.trim_end_matches('/').rsplit_once(':'))
                        .and_then(|(_, port)| port.parse().ok()),
                    connected: field(target, "connected"),
                    ended_early: field(target, "ended_early"),
                    pings: field(target, "pings"),
                    deliveries: field(target, "deliveries"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The markdown table of one run: a row per broker, then Redis, the load
/// and loadgen's totals.
pub fn render(
    title: &str,
    nodes: &[NodeFigures],
    shares: &[Share],
    redis: Option<&RedisFigures>,
    load: &Load,
    report: &serde_json::Value,
) -> String {
    let mut out = String::new();
    let load_text = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "load average (1 min): {} before, {} highest during, {} after\n",
        load_text(load.before),
        load_text(load.peak),
        load_text(load.after)
    );
    let _ = writeln!(
        out,
        "| node | connected | ended early | pings answered | deliveries | RSS idle MiB | RSS peak MiB | RSS/conn KiB | CPU user s | CPU sys s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (index, node) in nodes.iter().enumerate() {
        // loadgen lists its targets in its own order: match them by port.
        let share = shares.iter().find(|share| share.port == Some(node.port)).cloned().unwrap_or_default();
        let grown = node.peak_rss_kib.saturating_sub(node.idle_rss_kib) as f64;
        let per_connection = if share.connected > 0 {
            format!("{:.2}", grown / share.connected as f64)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} (:{}) | {} | {} | {} | {} | {:.1} | {:.1} | {per_connection} | {:.1} | {:.1} |",
            index + 1,
            node.port,
            share.connected,
            share.ended_early,
            share.pings,
            share.deliveries,
            node.idle_rss_kib as f64 / 1024.0,
            node.peak_rss_kib as f64 / 1024.0,
            node.cpu.user.as_secs_f64(),
            node.cpu.system.as_secs_f64(),
        );
    }
    if let Some(redis) = redis {
        let _ = writeln!(
            out,
            "\nRedis: {:.1} s user + {:.1} s sys CPU; {:.0} % of a core on average, {:.0} % in its busiest second",
            redis.cpu.user.as_secs_f64(),
            redis.cpu.system.as_secs_f64(),
            redis.mean_cores * 100.0,
            redis.peak_cores * 100.0
        );
    }
    let clients = &report["clients"];
    let _ = writeln!(
        out,
        "\nloadgen: {} of {} clients connected, {} over {} process(es); connect failures {}; ended early {}",
        clients["connected"],
        clients["planned"],
        report["config"]["run"]["workers"].as_u64().map_or("auto".to_owned(), |n| n.to_string()),
        report["config"]["resolved"]["processes"],
        clients["connect_failures"],
        clients["ended_early"],
    );
    if let Some(pings) = report["counts"]["pings"].as_u64() {
        let _ = writeln!(out, "heartbeats: {pings} Engine.IO pings answered");
    }
    if let Some(phases) = report["phases"].as_array() {
        for phase in phases.iter().filter(|phase| phase["name"] == "message" || phase["name"] == "connect") {
            let _ = writeln!(
                out,
                "{}: {} events, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                phase["name"].as_str().unwrap_or("?"),
                phase["count"],
                phase["rate_per_s"].as_f64().unwrap_or(0.0),
                phase["p50_ms"].as_f64().unwrap_or(0.0),
                phase["p99_ms"].as_f64().unwrap_or(0.0),
                phase["max_ms"].as_f64().unwrap_or(0.0),
            );
        }
    }
    if report["messages"].is_object() {
        let messages = &report["messages"];
        let _ = writeln!(
            out,
            "messages: expected {}, delivered {}, lost {}, duplicated {}",
            messages["expected"], messages["unique"], messages["lost"], messages["duplicated"]
        );
    }
    let reasons: Vec<String> = report["loss_reasons"]
        .as_array()
        .map(|reasons| reasons.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "result: {}",
        if reasons.is_empty() { "no loss".to_owned() } else { format!("LOSS: {}", reasons.join("; ")) }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_and_shares_parse() {
        assert_eq!(parse_load_average("8.72 7.85 5.36 3/900 1234\n"), Some(8.72));
        assert_eq!(parse_load_average(""), None);
        let report = serde_json::json!({"targets": [
            {"url": "http://127.0.0.1:4001", "connected": 3, "ended_early": 0, "pings": 9, "deliveries": 12},
            {"url": "http://127.0.0.1:4000/", "connected": 2, "pings": 4},
        ]});
        let parsed = shares(&report);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0],
            Share { port: Some(4001), connected: 3, ended_early: 0, pings: 9, deliveries: 12 }
        );
        assert_eq!(parsed[1].port, Some(4000));
        assert_eq!(parsed[1].pings, 4);
    }

    #[test]
    fn the_table_shows_rss_per_connection_per_node() {
        let node = NodeFigures {
            port: 4000,
            pid: 1,
            idle_rss_kib: 10_240,
            peak_rss_kib: 10_240 + 4 * 1000,
            cpu: CpuTimes::default(),
        };
        let shares = vec![
            Share { port: Some(4001), connected: 7, ..Share::default() },
            Share { port: Some(4000), connected: 1000, ..Share::default() },
        ];
        let load = Load { before: Some(1.0), peak: Some(2.5), after: None };
        let report = serde_json::json!({"clients": {"connected": 1000, "planned": 1000}, "loss_reasons": []});
        let table = render("idle", &[node], &shares, None, &load, &report);
        assert!(table.contains("| 1 (:4000) | 1000 | 0 | 0 | 0 | 10.0 | 13.9 | 4.00 |"), "{table}");
        assert!(table.contains("2.50 highest during"), "{table}");
        assert!(table.contains("result: no loss"), "{table}");
    }
}
