//! One server's suite: idle memory and `connect`, `join`, `disconnect`, then
//! the broadcast ladders ([`climb`](super::climb)). The raw reference speaks
//! no chat protocol beyond what a broadcast needs, so it runs the ladders
//! only.
//!
//! Each part starts its own server, so one part's leftovers (queued frames,
//! a crash) cannot colour the next; a part that fails is recorded as an
//! error and the suite goes on. Servers are stopped when their part ends.

use std::process::Child;
use std::time::Duration;

use serde::Serialize;

use super::climb::{self, SeriesResult};
use super::env::{Env, Placement};
use super::loadgen::Run;
use super::plan::{Plan, duration_arg};
use super::probe::{self, CpuCost};
use super::server::{Server, ServerKind};

/// How long a server may take to close the connections of a finished run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause before reading a fresh server's idle RSS.
const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// Resident memory with `clients` connected.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPoint {
    /// Connected, authenticated clients.
    pub clients: u64,
    /// Server RSS with them connected, KiB.
    pub rss_kib: Option<u64>,
    /// (RSS loaded − RSS idle) / clients, KiB.
    pub per_connection_kib: Option<f64>,
    /// Server CPU time per client from the start of the run until every
    /// client was connected (handshake, auth, CONNECT), µs.
    pub connect_cpu_us: Option<f64>,
    /// Why it was not measured.
    pub note: Option<String>,
}

/// Everything measured for one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerResults {
    /// Which server.
    pub server: ServerKind,
    /// RSS of a fresh server, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Memory with clients connected.
    pub memory: Vec<MemoryPoint>,
    /// The `connect` run (the plan's `connect_clients` point).
    pub connect: Option<Run>,
    /// Every memory run, in order.
    pub memory_runs: Vec<Run>,
    /// The `connect storm` run: `storm_clients` offered as fast as loadgen can.
    pub storm: Option<Run>,
    /// Server CPU per connect in the storm, µs.
    pub storm_cpu_us: Option<f64>,
    /// The `join` run.
    pub join: Option<Run>,
    /// Server CPU per join (its `user_joined` notices included), from the
    /// start of the `join` stage to the end of the drain.
    pub join_cpu: Option<CpuCost>,
    /// The `disconnect` run.
    pub disconnect: Option<Run>,
    /// Broadcast ladders.
    pub series: Vec<SeriesResult>,

    /// Parts that failed.
    pub errors: Vec<String>,
}

impl ServerResults {
    /// Nothing measured yet.
    pub fn new(server: ServerKind) -> Self {
        Self {
            server,
            idle_rss_kib: None,
            memory: Vec::new(),
            connect: None,
            memory_runs: Vec::new(),
            storm: None,
            storm_cpu_us: None,
            join: None,
            join_cpu: None,
            disconnect: None,
            series: Vec::new(),

            errors: Vec::new(),
        }
    }

    /// A server that could not be measured at all.
    pub fn failed(server: ServerKind, error: String) -> Self {
        Self { errors: vec![error], ..Self::new(server) }
    }
}

/// Runs every part against `kind`.
pub fn run(env: &Env, kind: ServerKind) -> ServerResults {
    let mut results = ServerResults::new(kind);
    if kind.speaks_chat()
        && let Err(e) = memory_and_churn(env, kind, &mut results)
    {
        eprintln!("compare: {}: {e:#}", kind.name());
        results.errors.push(format!("{e:#}"));
    }
    for series in &env.plan.series {
        results.series.push(climb::climb(env, kind, series, Placement::Pinned));
        if series.multicore {
            results.series.push(climb::climb(env, kind, series, Placement::Multicore));
        }
    }
    results
}

fn memory_and_churn(env: &Env, kind: ServerKind, results: &mut ServerResults) -> anyhow::Result<()> {
    let server = env.start(kind, Placement::Pinned)?;
    std::thread::sleep(IDLE_PAUSE);
    let idle = probe::rss_kib(server.pid)?;
    let baseline_fds = probe::open_fds(server.pid)?;
    results.idle_rss_kib = Some(idle);
    eprintln!("compare: {} idle RSS {idle} KiB, {baseline_fds} fds", kind.name());
    for &clients in &env.plan.memory_clients {
        let point = memory_point(env, &server, baseline_fds, clients, idle, results)?;
        results.memory.push(point);
    }
    storm(env, &server, baseline_fds, results)?;
    let plan = &env.plan;
    let sizes = churn_sizes(plan);
    let join =
        env.loadgen(&server, Placement::Pinned, "join", [vec!["join".to_owned()], sizes.clone()].concat());
    let sampled = climb::sampled_run(&server, &join)?;
    let summary = &sampled.run.summary;
    results.join_cpu = summary
        .window("join", "drain")
        .and_then(|(start, end)| probe::window_cost(&sampled.cpu, start, end, summary.clients_joined));
    report_line(kind, "join", &sampled.run);
    eprintln!(
        "compare: {} join: server CPU {:.1?} µs per join",
        kind.name(),
        results.join_cpu.map(|cost| cost.total_us())
    );
    results.join = Some(sampled.run);
    settle(&server, baseline_fds)?;
    let mut leave = sizes.clone();
    leave.extend(["--leavers".to_owned(), "0.5".to_owned()]);
    results.disconnect = Some(churn_run(env, &server, baseline_fds, "disconnect", &leave)?);
    server.stop()
}

fn churn_sizes(plan: &Plan) -> Vec<String> {
    let sizes = [
        ("--clients", plan.churn_clients.to_string()),
        ("--rooms", plan.churn_rooms.to_string()),
        ("--rate", plan.churn_rate.to_string()),
        ("--connect-rate", plan.setup_connect_rate.to_string()),
    ];
    sizes.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect()
}

fn churn_run(
    env: &Env,
    server: &Server,
    baseline_fds: u64,
    scenario: &str,
    sizes: &[String],
) -> anyhow::Result<Run> {
    let mut args = vec![scenario.to_owned()];
    args.extend_from_slice(sizes);
    let run = env.loadgen(server, Placement::Pinned, scenario, args).run()?;
    report_line(server.kind, scenario, &run);
    settle(server, baseline_fds)?;
    Ok(run)
}

fn memory_point(
    env: &Env,
    server: &Server,
    baseline_fds: u64,
    clients: u32,
    idle: u64,
    results: &mut ServerResults,
) -> anyhow::Result<MemoryPoint> {
    let clients = u64::from(clients);
    if let Some(limit) = env.fd_limit_too_low(clients) {
        let note = format!(
            "not measured: the hard open-file limit ({limit} per process) leaves neither server nor loadgen \
             room for {clients} sockets"
        );
        return Ok(MemoryPoint {
            clients,
            rss_kib: None,
            per_connection_kib: None,
            connect_cpu_us: None,
            note: Some(note),
        });
    }
    let (run, loaded) =
        loaded_rss(env, server, baseline_fds + clients, clients, env.plan.connect_rate, "connect")?;
    report_line(server.kind, &format!("connect {clients}"), &run);
    if clients == u64::from(env.plan.connect_clients) {
        results.connect = Some(run.clone());
    }
    results.memory_runs.push(run);
    settle(server, baseline_fds)?;
    let rss = loaded.map(|loaded| loaded.rss_kib);
    let per_connection_kib = rss.map(|rss| (rss as f64 - idle as f64) / clients as f64);
    let connect_cpu_us = loaded.map(|loaded| loaded.cpu_us_per_connect(clients));
    let note = rss.is_none().then(|| "not every client was connected at once".to_owned());
    eprintln!(
        "compare: {} with {clients} clients: RSS {rss:?} KiB, connect CPU {connect_cpu_us:.1?} µs each",
        server.kind.name()
    );
    Ok(MemoryPoint { clients, rss_kib: rss, per_connection_kib, connect_cpu_us, note })
}

/// The `connect storm`: the plan's storm clients, offered faster than
/// one loadgen core can connect them. The server's CPU per connect here is
/// its cost under full load, where a slow server also shows its accept rate.
fn storm(env: &Env, server: &Server, baseline_fds: u64, results: &mut ServerResults) -> anyhow::Result<()> {
    let clients = u64::from(env.plan.storm_clients);
    if env.fd_limit_too_low(clients).is_some() {
        return Ok(());
    }
    let (run, loaded) =
        loaded_rss(env, server, baseline_fds + clients, clients, env.plan.storm_rate, "storm")?;
    report_line(server.kind, &format!("connect storm {clients}"), &run);
    results.storm_cpu_us = loaded.map(|loaded| loaded.cpu_us_per_connect(clients));
    eprintln!(
        "compare: {} connect storm {clients}: server CPU {:.1?} µs per connect",
        server.kind.name(),
        results.storm_cpu_us
    );
    results.storm = Some(run);
    settle(server, baseline_fds)
}

/// The server with every client of a `connect` run in.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    /// RSS, the last sample taken while every client was connected.
    rss_kib: u64,
    /// Server CPU from the start of the run to the first sample with every
    /// client connected.
    connect_cpu: Duration,
}

impl Loaded {
    /// The connect CPU shared out over `clients`, µs.
    fn cpu_us_per_connect(&self, clients: u64) -> f64 {
        self.connect_cpu.as_secs_f64() * 1e6 / clients as f64
    }
}

/// Runs `connect --hold` and reads the server's RSS while all `clients`
/// are connected: the last sample taken while its descriptor count was at
/// least `target_fds` (the hold starts only once every client is in), and
/// the CPU it took to get there.
fn loaded_rss(
    env: &Env,
    server: &Server,
    target_fds: u64,
    clients: u64,
    rate: f64,
    name: &str,
) -> anyhow::Result<(Run, Option<Loaded>)> {
    let args = vec![
        "connect".to_owned(),
        "--clients".to_owned(),
        clients.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
        "--hold".to_owned(),
        duration_arg(env.plan.hold),
    ];
    let invocation = env.loadgen(server, Placement::Pinned, &format!("{name}-{clients}"), args);
    let cpu_before = probe::cpu_time(server.pid)?;
    let mut child = invocation.spawn()?;
    let sampled = sample_while_running(&mut child, server.pid, target_fds, cpu_before);
    if sampled.is_err() {
        let _ = child.kill();
    }
    let run = invocation.finish(child)?;
    Ok((run, sampled?))
}

fn sample_while_running(
    child: &mut Child,
    pid: u32,
    target_fds: u64,
    cpu_before: Duration,
) -> anyhow::Result<Option<Loaded>> {
    let mut loaded: Option<Loaded> = None;
    probe::while_running(child, || {
        if probe::open_fds(pid)? >= target_fds {
            let rss_kib = probe::rss_kib(pid)?;
            let connect_cpu = match loaded {
                Some(earlier) => earlier.connect_cpu,
                None => probe::cpu_time(pid)?.saturating_sub(cpu_before),
            };
            loaded = Some(Loaded { rss_kib, connect_cpu });
        }
        Ok(())
    })?;
    Ok(loaded)
}

/// Waits until the server has closed the last run's connections.
fn settle(server: &Server, baseline_fds: u64) -> anyhow::Result<()> {
    // A little slack: runtimes open and close descriptors of their own.
    probe::wait_for_fds(server.pid, SETTLE_TIMEOUT, |fds| fds <= baseline_fds + 16)?;
    Ok(())
}

fn report_line(kind: ServerKind, what: &str, run: &Run) {
    let summary = &run.summary;
    let phases: Vec<String> =
        summary.phases.iter().map(|phase| format!("{} p99 {:.1} ms", phase.name, phase.p99_ms)).collect();
    let loss =
        if summary.loss { format!(" LOSS: {}", summary.loss_reasons.join("; ")) } else { String::new() };
    eprintln!("compare: {} {what}: {}{loss}", kind.name(), phases.join(", "));
}
