//! `bench/cluster [--nodes N] [--adapter redis|local] [--label NAME] [--out DIR] -- LOADGEN ARGS`
//!
//! Thin: build, start a private Redis and N release brokers on free ports
//! (`--adapter redis`), run loadgen across all of them while sampling every
//! process, print the table and write it (markdown) beside loadgen's JSON.
//! See `bench/CLUSTER.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bench::cluster::{self, RedisServer, Sampler};
use bench::compare::loadgen::Invocation;
use bench::compare::output::Machine;
use bench::compare::probe;
use bench::compare::server::{Server, ServerKind};
use clap::{Parser, ValueEnum};

/// The JWT secret every broker and loadgen share; local loopback only.
const SECRET: &str = "bench-cluster-secret";
/// How often the brokers and Redis are sampled while loadgen runs.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How the brokers reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Adapter {
    /// One private Redis, `--adapter redis` on every broker.
    Redis,
    /// No Redis: each broker alone (only meaningful with one node).
    Local,
}

/// N brokers behind one Redis, loaded by one loadgen command.
#[derive(Debug, Parser)]
#[command(name = "cluster", trailing_var_arg = true)]
struct Cli {
    /// Brokers to start
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// How the brokers reach each other
    #[arg(long, value_enum, default_value_t = Adapter::Redis)]
    adapter: Adapter,
    /// Names the result files: DATE-cluster-LABEL.{md,json,txt}
    #[arg(long, default_value = "run")]
    label: String,
    /// Where to write the results [default: bench/results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra broker environment, KEY=VALUE (e.g. BROKER_PING_INTERVAL_MS=10000)
    #[arg(long = "broker-env", value_name = "KEY=VALUE")]
    broker_env: Vec<String>,
    /// Use the binaries as built (skip cargo)
    #[arg(long)]
    no_build: bool,
    /// loadgen's scenario and flags, after `--`; `--target`s are added
    #[arg(required = true, allow_hyphen_values = true)]
    loadgen: Vec<String>,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("bench/ has a parent")?.to_path_buf();
    if !cli.no_build {
        ServerKind::Broker.build(&root)?;
    }
    let out = cli.out.clone().unwrap_or_else(|| root.join("bench/results"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let machine = Machine::detect(&root, "unpinned".to_owned());
    let stem = format!("{}-cluster-{}", machine.date, cli.label);

    let redis = match cli.adapter {
        Adapter::Redis => Some(RedisServer::start()?),
        Adapter::Local => None,
    };
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(redis) = &redis {
        env.push(("BROKER_ADAPTER".to_owned(), "redis".to_owned()));
        env.push(("BROKER_REDIS_URL".to_owned(), redis.url()));
        env.push(("BROKER_REDIS_KEY".to_owned(), format!("bench-cluster-{}", std::process::id())));
    }
    for pair in &cli.broker_env {
        let (key, value) = pair.split_once('=').with_context(|| format!("--broker-env {pair}: no ="))?;
        env.push((key.to_owned(), value.to_owned()));
    }
    // The brokers' stderr, kept only when the run fails.
    let logs = std::env::temp_dir().join(format!("bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut servers = Vec::with_capacity(cli.nodes);
    for _ in 0..cli.nodes.max(1) {
        servers.push(Server::start_with_env(ServerKind::Broker, &root, None, SECRET, &logs, &env)?);
    }
    let nodes: Vec<(u16, u32)> = servers.iter().map(|server| (server.port, server.pid)).collect();
    eprintln!("cluster: brokers on {:?}; redis {:?}", nodes, redis.as_ref().map(RedisServer::url));

    let mut args = cli.loadgen.clone();
    for (port, _) in &nodes[1..] {
        args.extend(["--target".to_owned(), format!("http://127.0.0.1:{port}")]);
    }
    let invocation = Invocation {
        binary: root.join("target/release/loadgen"),
        cpu: None,
        args,
        port: nodes[0].0,
        secret: SECRET.to_owned(),
        json: out.join(format!("{stem}.json")),
    };
    let mut sampler = Sampler::start(&nodes, redis.as_ref().map(|redis| redis.pid))?;
    let mut child = invocation.spawn()?;
    probe::while_running_every(&mut child, SAMPLE_EVERY, || sampler.sample())?;
    let (figures, redis_figures, load) = sampler.finish()?;
    let loadgen = invocation.finish(child)?;
    for server in &mut servers {
        server.ensure_running()?;
    }

    let command = format!(
        "cluster --nodes {} --adapter {} --label {}{} -- {}",
        cli.nodes,
        if cli.adapter == Adapter::Redis { "redis" } else { "local" },
        cli.label,
        cli.broker_env.iter().map(|pair| format!(" --broker-env {pair}")).collect::<String>(),
        cli.loadgen.join(" ")
    );
    let title =
        format!("{} ({}, commit {}, {} cores)", cli.label, machine.date, machine.commit, machine.cores);
    let mut table = cluster::render(
        &title,
        &figures,
        &cluster::shares(&loadgen.report),
        redis.is_some().then_some(&redis_figures),
        &load,
        &loadgen.report,
    );
    table.push_str(&format!("\ncommand: `{command}`\n"));
    print!("{table}");
    let path = out.join(format!("{stem}.md"));
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("cluster: wrote {} and {}", path.display(), invocation.json.display());
    drop(servers);
    std::fs::remove_dir_all(&logs).with_context(|| format!("removing {}", logs.display()))?;
    Ok(())
}
