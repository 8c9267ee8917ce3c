//! The scenarios and the harness they share.
//!
//! Every scenario runs one task per simulated client and one orchestrator
//! (the caller of [`run`]). Clients follow a script on open-loop schedules
//! fixed up front; the orchestrator only moves stages forward (setup → run →
//! drain), polls progress, and cancels everyone at the end. All accounting is
//! done afterwards from what each client task returns, so it is exact; the
//! live counters only decide when waiting is pointless.

pub mod broadcast;
pub mod connect;
pub mod disconnect;
mod drops;
pub mod join;
mod members;
pub mod mixed;
pub mod soak;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::client::{Connection, Target};
use crate::config::{RunOptions, Scenario, TargetOptions};
use crate::progress::Progress;
pub use crate::report::Outcome;
use crate::report::{self, Measurements, Report, Stage, TargetTally};
use crate::schedule::Clock;
use crate::selfcheck::{self, CpuSampler};
use crate::session::{Ended, Session, Shared};
use crate::stats::Phase;
use crate::token::TokenMinter;
use crate::workers::{WorkerLink, WorkerOutput};

/// Lead time between deciding a stage's start and its first scheduled event.
const STAGE_LEAD: Duration = Duration::from_millis(100);
/// How often the orchestrator looks at progress.
const POLL: Duration = Duration::from_millis(100);

/// Runs `scenario` against `target` in this process and returns the full
/// report.
///
/// # Errors
/// The target does not resolve, or the run could not start at all. Failed
/// clients and lost deliveries are not errors: they are in the report.
pub async fn run(
    scenario: &Scenario,
    target: &TargetOptions,
    options: &RunOptions,
) -> anyhow::Result<Report> {
    let started = std::time::SystemTime::now();
    let measured = measure(scenario, target, options).await?;
    let context = report::Context {
        scenario,
        target,
        options,
        started,
        fd_limit: measured.fd_limit,
        workers: measured.threads,
        processes: 1,
    };
    Ok(report::build(&context, measured.measurements))
}

/// Runs this process's share of `scenario` (all of it, unless
/// `options.worker_shard` says otherwise) and returns what it measured.
///
/// # Errors
/// As [`run`]; and a soak cannot be split over workers.
pub async fn measure(
    scenario: &Scenario,
    target: &TargetOptions,
    options: &RunOptions,
) -> anyhow::Result<WorkerOutput> {
    if options.worker_shard.is_some() && matches!(scenario, Scenario::Soak(_)) {
        anyhow::bail!("the soak runs in one process: --workers 1");
    }
    let peak = scenario.peak_clients();
    // A worker holds about its share of the clients.
    let share = options.worker_shard.map_or(1, |shard| u64::from(shard.count));
    let fd_limit = selfcheck::raise_nofile_limit(peak.div_ceil(share) + crate::workers::RESERVED_FDS);
    // Source addresses are sized by every client of the run, whichever
    // process opens them: their ports are shared by all.
    let resolved = Target::resolve(target, peak).await.context("resolving the target")?;
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let clock = Clock::start();
    let max_ids = u32::try_from(max_ids(scenario)).context("too many clients")?;
    let shared = Arc::new(Shared::new(clock, resolved, max_ids));
    let harness = Arc::new(Harness::new(Arc::clone(&shared), options.clone()));
    let sampler = CpuSampler::start(clock);
    let outcome = match scenario {
        Scenario::Connect(config) => connect::run(&harness, config).await?,
        Scenario::Join(config) => join::run(&harness, config).await?,
        Scenario::Broadcast(config) => broadcast::run(&harness, config).await?,
        Scenario::Disconnect(config) => disconnect::run(&harness, config).await?,
        Scenario::Mixed(config) => mixed::run(&harness, config).await?,
        Scenario::Soak(config) => soak::run(&harness, config).await?,
    };
    harness.progress.finish();
    let cpu = sampler.stop().await;
    Ok(WorkerOutput { measurements: harness.measurements(outcome, cpu), fd_limit, threads })
}

/// Client ids a scenario may hand out.
fn max_ids(scenario: &Scenario) -> u64 {
    match scenario {
        Scenario::Mixed(config) => u64::from(config.clients) + mixed::churn_count(config),
        other => other.peak_clients(),
    }
}

/// Shared by the orchestrator and every client task of one run.
#[derive(Debug)]
pub struct Harness {
    /// Run-wide state the sessions use.
    pub shared: Arc<Shared>,
    /// The run options.
    pub options: RunOptions,
    /// The progress bar.
    pub progress: Progress,
    /// Cancelled when the run is over; every client task stops.
    pub cancel: CancellationToken,
    /// Clients that got into the namespace.
    pub connected: AtomicU64,
    /// Clients done with setup, successfully or not.
    pub settled: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    ended: Mutex<BTreeMap<String, u64>>,
    stages: Mutex<Vec<Stage>>,
    /// The pipes to the parent, when this process is one of its workers.
    link: Option<WorkerLink>,
}

impl Harness {
    fn new(shared: Arc<Shared>, options: RunOptions) -> Self {
        let link = options.worker_shard.map(|_| WorkerLink::new());
        // Workers share the parent's terminal: no bars.
        let progress = Progress::new(!options.quiet && link.is_none());
        Self {
            shared,
            options,
            progress,
            cancel: CancellationToken::new(),
            connected: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            ended: Mutex::new(BTreeMap::new()),
            stages: Mutex::new(Vec::new()),
            link,
        }
    }

    /// Whether `unit` (a room, or a client where there are no rooms) of
    /// `units` is this process's to run: always, unless it is a worker.
    pub fn owns(&self, unit: u32, units: u32) -> bool {
        self.options.worker_shard.is_none_or(|shard| shard.owns(unit, units))
    }

    /// This process's part of a rate offered by the whole run.
    pub fn share_of(&self, rate: f64) -> f64 {
        rate / f64::from(self.options.worker_shard.map_or(1, |shard| shard.count))
    }

    /// Waits until every worker process of the run got here, so stages
    /// start together; at once in a single process. A parent gone away
    /// cancels the run.
    pub async fn barrier(&self) {
        if let Some(link) = &self.link
            && let Err(e) = link.barrier().await
        {
            tracing::warn!(error = %e, "lost the parent; stopping");
            self.cancel.cancel();
        }
    }

    /// The run clock.
    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// Connects client `id` at `intended_ns` with `token`; records the
    /// connect latency, or the failure. `None` when it failed.
    pub async fn connect(&self, id: u32, token: &str, intended_ns: u64) -> Option<Session> {
        let clock = self.clock();
        clock.sleep_until(intended_ns).await;
        self.shared.record(Phase::ScheduleLag, intended_ns, false);
        match Connection::open(&self.shared.target, id, token).await {
            Ok(conn) => {
                self.shared.record(Phase::Connect, intended_ns, true);
                self.connected.fetch_add(1, Ordering::Relaxed);
                self.shared.counters_of(id).connected.fetch_add(1, Ordering::Relaxed);
                Some(Session::new(id, conn, Arc::clone(&self.shared)))
            }
            Err(e) => {
                tracing::debug!(id, error = %e, "connect failed");
                *self.failures.lock().entry(e.kind()).or_default() += 1;
                self.shared.counters_of(id).connect_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Notes a session that ended before the run did.
    pub fn note_ended(&self, id: u32, reason: &Ended) {
        tracing::debug!(id, %reason, "session ended early");
        self.shared.counters_of(id).ended_early.fetch_add(1, Ordering::Relaxed);
        let key = match reason {
            Ended::Transport(_) => "transport error".to_owned(),
            other => other.to_string(),
        };
        *self.ended.lock().entry(key).or_default() += 1;
    }

    /// What the run measured, for the report.
    pub fn measurements(&self, outcome: Outcome, cpu: crate::selfcheck::CpuUsage) -> Measurements {
        Measurements {
            phases: self.shared.recorder.snapshot(),
            connected: self.connected.load(Ordering::Relaxed),
            connect_failures: self.failures(),
            ended_early: self.ended(),
            stages: self.stages(),
            cpu,
            outcome,
            per_target: self
                .shared
                .target
                .endpoints()
                .iter()
                .zip(self.shared.per_target.iter())
                .map(|(endpoint, counters)| TargetTally {
                    url: endpoint.url.clone(),
                    addr: endpoint.addr().to_string(),
                    source_ips: endpoint.source_ips().iter().map(ToString::to_string).collect(),
                    planned: 0,
                    connected: counters.connected.load(Ordering::Relaxed),
                    connect_failures: counters.connect_failures.load(Ordering::Relaxed),
                    ended_early: counters.ended_early.load(Ordering::Relaxed),
                    deliveries: counters.deliveries.load(Ordering::Relaxed),
                    pings: counters.pings.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Runs client `id`'s `script` until it ends or the run is cancelled,
    /// noting an early end.
    pub async fn play(&self, id: u32, script: impl std::future::Future<Output = Result<(), Ended>>) {
        let ended = tokio::select! {
            outcome = script => outcome.err(),
            () = self.cancel.cancelled() => None,
        };
        if let Some(reason) = &ended {
            self.note_ended(id, reason);
        }
    }

    /// Connect failures by cause.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures.lock().clone()
    }

    /// Sessions that ended early, by cause.
    pub fn ended(&self) -> BTreeMap<String, u64> {
        self.ended.lock().clone()
    }

    /// Marks the start of a stage (ramp, join, run, drain, …); the previous
    /// stage ends here.
    pub fn begin_stage(&self, name: &str) {
        let now = self.clock().now_ns();
        let mut stages = self.stages.lock();
        if let Some(last) = stages.last_mut() {
            last.end_ns.get_or_insert(now);
        }
        stages.push(Stage { name: name.to_owned(), start_ns: now, end_ns: None });
    }

    /// Ends the current stage.
    pub fn end_stage(&self) {
        let now = self.clock().now_ns();
        if let Some(last) = self.stages.lock().last_mut() {
            last.end_ns.get_or_insert(now);
        }
    }

    /// The stages so far.
    pub fn stages(&self) -> Vec<Stage> {
        self.stages.lock().clone()
    }

    /// Waits up to `--drain` for `position` to reach `owed`, the events
    /// still in flight after the last send.
    pub async fn drain(&self, stage: &str, owed: u64, position: impl Fn() -> u64) {
        self.wait_for(stage, owed, self.options.drain, position, String::new).await;
    }

    /// [`drain`](Self::drain), then ends the stage and stops every task: the
    /// close of every scenario before its results are collected.
    pub async fn drain_then_stop(&self, stage: &str, owed: u64, position: impl Fn() -> u64) {
        self.drain(stage, owed, position).await;
        self.end_stage();
        self.cancel.cancel();
    }

    /// Polls `position` until it reaches `target` or `timeout` passes,
    /// showing it on the progress bar with `message`. Returns whether it
    /// got there.
    pub async fn wait_for(
        &self,
        stage: &str,
        target: u64,
        timeout: Duration,
        position: impl Fn() -> u64,
        message: impl Fn() -> String,
    ) -> bool {
        self.progress.stage(stage, target);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let at = position();
            self.progress.update(at.min(target), message());
            if at >= target {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Shows a timed stage until `end_ns` on the clock, with `message`.
    pub async fn run_until(&self, stage: &str, end_ns: u64, message: impl Fn() -> String) {
        let clock = self.clock();
        let start = clock.now_ns();
        let total_ms = end_ns.saturating_sub(start) / 1_000_000;
        self.progress.stage(stage, total_ms.max(1));
        loop {
            let now = clock.now_ns();
            self.progress.update((now.saturating_sub(start) / 1_000_000).min(total_ms), message());
            if now >= end_ns {
                return;
            }
            let left = Duration::from_nanos(end_ns - now);
            tokio::time::sleep(left.min(POLL * 2)).await;
        }
    }

    /// A message for the bar: events of `phase` per second, over windows
    /// of at least half a second.
    pub fn rate_message(&self, phase: Phase, label: &'static str) -> impl Fn() -> String + '_ {
        let last = Mutex::new((self.clock().now_ns(), self.shared.recorder.count(phase), String::new()));
        move || {
            let now = self.clock().now_ns();
            let mut last = last.lock();
            let elapsed = now.saturating_sub(last.0);
            if elapsed >= 500_000_000 {
                let count = self.shared.recorder.count(phase);
                let rate = count.saturating_sub(last.1) as f64 * 1e9 / elapsed as f64;
                *last = (now, count, format!("{rate:.0} {label}/s"));
            }
            last.2.clone()
        }
    }

    /// Stage start: now plus a short lead, so every client sees the same time.
    pub fn next_start(&self) -> u64 {
        self.clock().now_ns() + crate::schedule::duration_ns(STAGE_LEAD)
    }
}

/// Tokens for `ids`, minted off the async workers.
///
/// # Errors
/// Signing failed.
pub async fn mint_tokens(minter: &TokenMinter, ids: Vec<u32>) -> anyhow::Result<Vec<String>> {
    let minter = minter.clone();
    tokio::task::spawn_blocking(move || ids.into_iter().map(|id| minter.mint(id)).collect())
        .await
        .context("token minting task")?
}

/// Clients spread over rooms in contiguous blocks of `room_size`.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Clients in total.
    pub clients: u32,
    /// Members per room (the last room may have fewer).
    pub room_size: u32,
    /// Rooms actually used.
    pub rooms: u32,
}

impl Layout {
    /// `clients` over at most `rooms` rooms.
    pub fn new(clients: u32, rooms: u32) -> Self {
        let room_size = clients.div_ceil(rooms.max(1)).max(1);
        Self { clients, room_size, rooms: clients.div_ceil(room_size) }
    }

    /// The room of client `id`.
    pub fn room_of(&self, id: u32) -> u32 {
        id / self.room_size
    }

    /// The position of client `id` within its room.
    pub fn position_of(&self, id: u32) -> u32 {
        id % self.room_size
    }

    /// The client ids in `room`.
    pub fn members(&self, room: u32) -> Range<u32> {
        let start = room * self.room_size;
        start..(start + self.room_size).min(self.clients)
    }

    /// Ids of the first `count` members of `room` (publishers, leavers).
    pub fn first_members(&self, room: u32, count: u32) -> Range<u32> {
        let members = self.members(room);
        members.start..(members.start + count).min(members.end)
    }

    /// A slot that interleaves rooms (room 0 pos 0, room 1 pos 0, …), so
    /// rooms fill evenly under a rate schedule.
    pub fn interleaved_slot(&self, id: u32) -> u64 {
        u64::from(self.position_of(id)) * u64::from(self.rooms) + u64::from(self.room_of(id))
    }
}

/// The wire name of room `room`.
pub fn room_name(room: u32) -> String {
    format!("loadgen-{room}")
}

/// One counter per room.
pub fn room_counters(rooms: u32) -> Box<[AtomicU64]> {
    (0..rooms).map(|_| AtomicU64::new(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_spreads_clients_in_blocks() {
        let layout = Layout::new(10, 3);
        assert_eq!((layout.room_size, layout.rooms), (4, 3));
        assert_eq!(layout.members(2), 8..10);
        assert_eq!(layout.room_of(9), 2);
        assert_eq!(layout.first_members(0, 2), 0..2);
        assert_eq!(layout.first_members(2, 5), 8..10);
        let slots: Vec<u64> = (0..10).map(|id| layout.interleaved_slot(id)).collect();
        assert_eq!(slots, vec![0, 3, 6, 9, 1, 4, 7, 10, 2, 5]);
        assert_eq!(Layout::new(5, 0).rooms, 1);
    }
}
