//! `loadgen <scenario> [sizes] [--target URL] [--json FILE] [--plot FILE.svg]`
//!
//! Thin: parse flags, build the runtime, run the scenario (here, or over
//! worker processes of this same binary), print the table, write the files,
//! and turn loss into the exit code. Started with `--worker-shard`, it is one
//! of those workers and only talks to its parent.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use loadgen::{RunOptions, Scenario, TargetOptions, workers};

// The receive path allocates nothing per frame; connects, joins and reports
// still allocate from every worker thread, which mimalloc keeps cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AFTER_HELP: &str = "\
Examples:
  loadgen connect --clients 5000 --rate 2000
  loadgen broadcast --clients 2000 --rooms 20 --publishers 1 --rate 10 --duration 30s --json out.json --plot out.svg
  loadgen mixed --clients 10000 --rooms 100 --churn 50 --duration 60s --target http://127.0.0.1:3000
  loadgen soak --duration 10m --revoked-jti soak-revoked --broker-pid 1234 --json soak.json

Latency is measured from each action's scheduled time (open loop), so a
stalled target shows up as latency, not as a lower offered load.

Rate limits: the broker allows each connection 100 events/s (burst 200) by
default. Publishing faster per publisher gets sends refused with 429; start
the broker with BROKER_RATE_LIMIT_PER_SEC=0 for high publish rates.

100,000 clients: one process holds at most its hard open-file limit
(`ulimit -Hn`), so loadgen starts as many worker processes of itself as the
clients need (or --workers N), gives each whole rooms, starts their stages
together and merges their results (histograms exactly) into one report.
Connections are spread over 127.0.0.1, 127.0.0.2, ... (one per 10,000
clients, or --source-ips N) when the target is on loopback.
  loadgen connect --clients 100000 --rate 2000 --hold 60s --workers 6 \
      --target http://127.0.0.1:3001 --target http://127.0.0.1:3002

Exit status: 0 when nothing was lost; 1 when any delivery or notice was lost
or a client failed, or (soak) a gauge did not return to idle or a bad token
was let in (unless --allow-loss); 2 when the run could not start.";

/// Load generator for Socket.IO chat servers that speak shared/PROTOCOL.md.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    target: TargetOptions,
    #[command(flatten)]
    run: RunOptions,
    #[command(subcommand)]
    scenario: Scenario,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if cli.run.worker_shard.is_some() {
        return match work(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen worker: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(&cli) {
        Ok(report) if report.loss && !cli.run.allow_loss => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A worker's whole life: run its share, hand the parent what it measured.
fn work(cli: &Cli) -> anyhow::Result<()> {
    let runtime = runtime(cli)?;
    runtime.block_on(async {
        let output = loadgen::scenario::measure(&cli.scenario, &cli.target, &cli.run).await?;
        workers::WorkerLink::send_result(&output).await
    })?;
    runtime.shutdown_background();
    Ok(())
}

fn runtime(cli: &Cli) -> anyhow::Result<tokio::runtime::Runtime> {
    cli.run.runtime().context("building the tokio runtime")
}

fn run(cli: &Cli) -> anyhow::Result<loadgen::Report> {
    let runtime = runtime(cli)?;
    let workers = workers::count_for(&cli.scenario, &cli.target, &cli.run);
    let report = if workers > 1 {
        let exe = std::env::current_exe().context("finding loadgen's own executable")?;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let run = workers::run_report(&cli.scenario, &cli.target, &cli.run, &exe, &args, workers);
        runtime.block_on(run)?
    } else {
        runtime.block_on(loadgen::run(&cli.scenario, &cli.target, &cli.run))?
    };
    print!("{report}");
    if let Some(path) = &cli.run.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.run.plot {
        std::fs::write(path, loadgen::plot::render(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Client tasks may still be closing sockets; do not wait for them.
    runtime.shutdown_background();
    Ok(report)
}
