//! `loadgen <scenario> [sizes] [--target URL] [--json FILE] [--plot FILE.svg]`
//!
//! Thin: parse flags, build the runtime, run the scenario, print the table,
//! write the files, and turn loss into the exit code.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use loadgen::{RunOptions, Scenario, TargetOptions};

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

100,000 clients: loadgen raises its open-file limit up to the hard limit
(raise that with `ulimit -Hn` if needed) and spreads connections over
127.0.0.1, 127.0.0.2, ... (one per 25,000 clients, or --source-ips N) when
the target is on loopback.

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
    match run(&cli) {
        Ok(report) if report.loss && !cli.run.allow_loss => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<loadgen::Report> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.run.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.enable_all().build().context("building the tokio runtime")?;
    let report = runtime.block_on(loadgen::run(&cli.scenario, &cli.target, &cli.run))?;
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
