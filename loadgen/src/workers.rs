//! One run over several worker processes of the load generator itself.
//!
//! A process may hold as many connections as its open-file limit allows
//! (20,000 here), so 100,000 clients need several. The parent ([`run`])
//! starts `N` copies of its own executable with the same arguments plus
//! `--worker-shard i/N`, and each worker runs share `i` of the clients
//! ([`Shard`]): whole rooms, so every delivery a worker checks was published
//! by one of its own clients and its accounting stays exact. Parent and
//! workers talk over the workers' stdin and stdout, one line at a time: a
//! worker says `ready` at each stage boundary ([`WorkerLink::barrier`]) and
//! waits for `go`, so all workers start publishing (or holding) together;
//! at the end it writes `result <json>` with its [`WorkerOutput`]. The parent
//! merges the outputs ([`Measurements::merge`]: histograms added exactly)
//! into one report. Invariant: every worker runs the same scenario code, so
//! all of them pass the same barriers in the same order.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::config::{RunOptions, Scenario, TargetOptions, TransportMode};
use crate::report::{self, Measurements, Report};
use crate::selfcheck::FdLimit;

/// What a worker says when it reaches a barrier.
const READY: &str = "ready";
/// What the parent answers once every worker is ready.
const GO: &str = "go";
/// The prefix of a worker's last line.
const RESULT: &str = "result ";
/// File descriptors a process keeps for itself besides its clients.
pub const RESERVED_FDS: u64 = 512;

/// Share `index` of `count`: the units (rooms, or clients when there are no
/// rooms) `u` with `u * count / units == index`, a contiguous block each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// This worker's share, from 0.
    pub index: u32,
    /// Workers in the run.
    pub count: u32,
}

impl Shard {
    /// Whether unit `unit` of `units` belongs to this share.
    pub fn owns(&self, unit: u32, units: u32) -> bool {
        u64::from(unit) * u64::from(self.count) / u64::from(units.max(1)) == u64::from(self.index)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (index, count) = text.split_once('/').ok_or("expected INDEX/COUNT")?;
        let index: u32 = index.parse().map_err(|e| format!("index: {e}"))?;
        let count: u32 = count.parse().map_err(|e| format!("count: {e}"))?;
        if index >= count {
            return Err(format!("index {index} is not below count {count}"));
        }
        Ok(Self { index, count })
    }
}

/// Workers needed for `connections` when each process may open
/// `fd_hard_limit` files.
pub fn needed(connections: u64, fd_hard_limit: u64) -> u32 {
    let per_worker = fd_hard_limit.saturating_sub(RESERVED_FDS).max(1);
    u32::try_from(connections.div_ceil(per_worker)).unwrap_or(u32::MAX).max(1)
}

/// Workers a run needs under this process's hard open-file limit (one file
/// per WebSocket client, three per polling client), unless `--workers`
/// says.
pub fn count_for(scenario: &Scenario, target: &TargetOptions, options: &RunOptions) -> u32 {
    if let Some(count) = options.workers {
        return count.max(1);
    }
    let files_per_client = match target.transport {
        TransportMode::Websocket => 1,
        TransportMode::Mixed => 2,
        TransportMode::Polling => 3,
    };
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(_, hard)| hard);
    needed(scenario.peak_clients() * files_per_client, hard)
}

/// Runs `scenario` over `count` workers of `exe` started with `args` (this
/// process's own arguments) and merges their measurements into one report.
///
/// # Errors
/// As [`run`].
pub async fn run_report(
    scenario: &Scenario,
    target: &TargetOptions,
    options: &RunOptions,
    exe: &Path,
    args: &[OsString],
    count: u32,
) -> anyhow::Result<Report> {
    let started = std::time::SystemTime::now();
    let mut outputs = run(exe, args, count).await?.into_iter();
    let first = outputs.next().context("no worker output")?;
    let mut measurements = first.measurements;
    for output in outputs {
        measurements.merge(output.measurements);
    }
    let context = report::Context {
        scenario,
        target,
        options,
        started,
        fd_limit: first.fd_limit,
        workers: first.threads,
        processes: count,
    };
    Ok(report::build(&context, measurements))
}

/// What a worker hands its parent.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerOutput {
    /// Everything it measured.
    pub measurements: Measurements,
    /// Its open-file limit.
    pub fd_limit: FdLimit,
    /// Its tokio worker threads.
    pub threads: usize,
}

/// A worker's end of the pipes to its parent.
#[derive(Debug)]
pub struct WorkerLink {
    stdin: tokio::sync::Mutex<Lines<BufReader<tokio::io::Stdin>>>,
}

impl Default for WorkerLink {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerLink {
    /// The link over this process's stdin and stdout.
    pub fn new() -> Self {
        Self { stdin: tokio::sync::Mutex::new(BufReader::new(tokio::io::stdin()).lines()) }
    }

    /// Says `ready` and waits for the parent's `go`.
    ///
    /// # Errors
    /// The parent went away or said something else.
    pub async fn barrier(&self) -> anyhow::Result<()> {
        write_line(READY).await?;
        let mut stdin = self.stdin.lock().await;
        match stdin.next_line().await.context("reading the parent's go")? {
            Some(line) if line == GO => Ok(()),
            Some(line) => bail!("expected {GO:?} from the parent, got {line:?}"),
            None => bail!("the parent closed the pipe"),
        }
    }

    /// Writes the worker's last line.
    ///
    /// # Errors
    /// Serializing or writing failed.
    pub async fn send_result(output: &WorkerOutput) -> anyhow::Result<()> {
        let json = serde_json::to_string(output).context("serializing the worker's result")?;
        write_line(&format!("{RESULT}{json}")).await
    }
}

async fn write_line(line: &str) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{line}\n").as_bytes()).await.context("writing to the parent")?;
    stdout.flush().await.context("writing to the parent")
}

/// One worker as the parent sees it.
struct Worker {
    index: u32,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn next_line(&mut self) -> anyhow::Result<String> {
        match self.stdout.next_line().await.with_context(|| format!("reading worker {}", self.index))? {
            Some(line) => Ok(line),
            None => {
                let status = self.child.wait().await.ok();
                bail!("worker {} ended without a result ({status:?}); its stderr says why", self.index)
            }
        }
    }
}

/// Starts `count` workers of `exe` with `args` plus `--worker-shard i/count`,
/// releases them through every barrier together, and returns their outputs
/// in shard order. Their stderr is this process's.
///
/// # Errors
/// A worker could not start, died, or broke the line protocol; the others
/// are killed.
pub async fn run(exe: &Path, args: &[OsString], count: u32) -> anyhow::Result<Vec<WorkerOutput>> {
    let mut workers = Vec::with_capacity(count as usize);
    for index in 0..count {
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .arg("--worker-shard")
            .arg(format!("{index}/{count}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {index} ({})", exe.display()))?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        workers.push(Worker { index, child, stdin, stdout });
    }
    let mut outputs: Vec<Option<WorkerOutput>> = workers.iter().map(|_| None).collect();
    loop {
        // Each worker either reaches the next barrier or finishes; all do
        // the same, since they run the same code.
        let mut ready = 0;
        for (worker, output) in workers.iter_mut().zip(outputs.iter_mut()) {
            if output.is_some() {
                continue;
            }
            let line = worker.next_line().await?;
            if line == READY {
                ready += 1;
            } else if let Some(json) = line.strip_prefix(RESULT) {
                let parsed = serde_json::from_str(json)
                    .with_context(|| format!("parsing worker {}'s result", worker.index))?;
                *output = Some(parsed);
            } else {
                bail!("worker {} said {line:?}", worker.index);
            }
        }
        if ready == 0 {
            break;
        }
        if ready != workers.len() {
            bail!("{ready} of {} workers reached a barrier while the others finished", workers.len());
        }
        for worker in &mut workers {
            worker.stdin.write_all(format!("{GO}\n").as_bytes()).await.context("releasing a worker")?;
            worker.stdin.flush().await.context("releasing a worker")?;
        }
    }
    for worker in &mut workers {
        let status =
            worker.child.wait().await.with_context(|| format!("waiting for worker {}", worker.index))?;
        // A worker leaves judging loss to the parent: anything but 0 is a failure.
        if !status.success() {
            bail!("worker {} failed ({status})", worker.index);
        }
    }
    Ok(outputs.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_unit_once_in_blocks() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let owners: Vec<u32> =
            (0..10).map(|room| shards.iter().position(|s| s.owns(room, 10)).expect("owned") as u32).collect();
        assert_eq!(owners, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        for room in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(room, 10)).count(), 1);
        }
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert!("4/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn enough_workers_for_the_file_limit() {
        assert_eq!(needed(100, 20_000), 1);
        assert_eq!(needed(100_000, 20_000), 6);
        assert_eq!(needed(19_488, 20_000), 1);
        assert_eq!(needed(19_489, 20_000), 2);
    }
}
