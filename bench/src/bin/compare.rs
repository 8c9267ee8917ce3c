//! `bench/compare [--quick] [--servers broker,socketioxide,nestjs,raw] [--out DIR] [--drops-only]`
//!
//! Thin: parse flags, build, run each server's suite in turn, then the
//! fixed-load steps, print the markdown report and write it with the JSON
//! and SVG. See `bench/COMPARE.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use bench::compare::env::{Env, LOADGEN_CPU, SERVER_CPU};
use bench::compare::output::{self, Comparison, Machine};
use bench::compare::plan::Plan;
use bench::compare::server::ServerKind;
use bench::compare::suite::{self, ServerResults};
use bench::compare::{drops, efficiency};
use clap::Parser;

/// The JWT secret every server and loadgen share; local loopback only.
const SECRET: &str = "bench-compare-secret";

/// Our broker against the socketioxide and NestJS peers, end to end.
#[derive(Debug, Parser)]
#[command(name = "compare")]
struct Cli {
    /// Fewer, coarser, shorter steps: under 5 minutes for three servers
    #[arg(long)]
    quick: bool,
    /// Servers to compare, in column order (`raw`: the raw fan-out reference)
    #[arg(long, value_delimiter = ',', default_value = "broker,socketioxide,nestjs,raw")]
    servers: Vec<String>,
    /// Where to write DATE-Ncores.{md,json,svg} [default: bench/results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the binaries as built (skip cargo and npm)
    #[arg(long)]
    no_build: bool,
    /// Run only the delivery-under-forced-drops table (files named
    /// DATE-Ncores[-quick]-drops)
    #[arg(long)]
    drops_only: bool,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("bench/ has a parent")?.to_path_buf();
    let mut kinds =
        cli.servers.iter().map(|name| ServerKind::parse(name)).collect::<anyhow::Result<Vec<_>>>()?;
    // Ours first, so the ratio columns have a numerator.
    kinds.sort_by_key(|kind| ServerKind::ALL.iter().position(|k| k == kind));
    kinds.dedup();
    let plan = if cli.quick { Plan::quick() } else { Plan::full() };
    let pinning = has_taskset();
    let placement = if pinning {
        format!(
            "servers pinned to CPU {SERVER_CPU}, loadgen to CPU {LOADGEN_CPU} (multicore rows: both unpinned)"
        )
    } else {
        "UNPINNED: taskset (util-linux) not found, servers and loadgen share every core".to_owned()
    };
    eprintln!("compare: {placement}");
    let machine = Machine::detect(&root, placement);
    let mut stem = output::file_stem(&machine, &plan);
    if cli.drops_only {
        stem.push_str("-drops");
    }
    let work = std::env::temp_dir().join(format!("bench-compare-{stem}-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!("compare: loadgen reports and server logs in {}", work.display());
    let build_errors = if cli.no_build { Vec::new() } else { build(&root, &kinds)? };
    let env =
        Env { root, work, secret: SECRET.to_owned(), pinning, fd_hard_limit: machine.fd_hard_limit, plan };
    let suites = if cli.drops_only { &[][..] } else { &kinds[..] };
    let results: Vec<ServerResults> = suites
        .iter()
        .zip(build_errors.into_iter().chain(std::iter::repeat(None)))
        .map(|(&kind, build_error)| match build_error {
            Some(error) => ServerResults::failed(kind, error),
            None => suite::run(&env, kind),
        })
        .collect();
    let fixed_loads = if cli.drops_only { Vec::new() } else { efficiency::run(&env, &results) };
    let drop_runs = drops::run(&env, &kinds);
    let comparison = Comparison {
        machine: &machine,
        plan: &env.plan,
        elapsed_secs: started.elapsed().as_secs_f64(),
        servers: &results,
        fixed_loads: &fixed_loads,
        drops: &drop_runs,
    };
    let markdown = output::markdown(&comparison);
    print!("{markdown}");
    let dir = cli.out.clone().unwrap_or_else(|| env.root.join("bench/results"));
    for path in output::write(&dir, &stem, &comparison, &markdown)? {
        eprintln!("compare: wrote {}", path.display());
    }
    Ok(())
}

/// Builds loadgen and the broker (always: loadgen is needed), then each
/// peer; a peer that fails to build is reported, not fatal.
fn build(root: &Path, kinds: &[ServerKind]) -> anyhow::Result<Vec<Option<String>>> {
    ServerKind::Broker.build(root).context("building broker and loadgen")?;
    Ok(kinds
        .iter()
        .map(|&kind| match kind {
            ServerKind::Broker => None,
            peer => peer.build(root).err().map(|e| format!("build failed: {e:#}")),
        })
        .collect())
}

fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
