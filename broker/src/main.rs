//! The `broker` binary: configuration from flags, `BROKER_*` variables and an
//! optional TOML file; logs through `tracing`; runs until SIGINT or SIGTERM.
//! `broker token` prints a token signed with the configured secret.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use broker::config::{Config, JwtAlgorithm, Overrides};
use clap::{Parser, Subcommand};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Socket.IO v5 chat broker (Engine.IO v4 over WebSocket) with JWT auth.
///
/// Every setting can be given as a flag, as a BROKER_* environment variable
/// or as a key of the TOML file given with --config, in that order of
/// precedence. Logs go to stderr (filter with RUST_LOG, default "info").
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML file whose keys are the flag names with underscores
    #[arg(long, env = "BROKER_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an HS256 token signed with the configured secret
    Token {
        /// The `sub` claim; a decimal number is written as a JSON number
        #[arg(long)]
        sub: String,
        /// The optional `name` claim
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30m, 1h, 7d
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => Overrides::from_toml_file(path)?,
        None => Overrides::default(),
    };
    let config = cli.overrides.or(file).apply(Config::default())?;

    if let Some(Command::Token { sub, name, ttl }) = cli.command {
        return print_token(&config, &sub, name.as_deref(), ttl);
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    raise_open_file_limit();

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    // The accept loop runs on a worker, not on this thread: each accepted
    // connection's task then starts on the worker's own queue, where handing
    // it over from `block_on` cost two thread wake-ups per connection.
    runtime.block_on(async { tokio::spawn(serve(config)).await.context("the server task panicked")? })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    // Scripts and tests read this line to learn the port of `--listen …:0`.
    println!("listening on {address}");
    std::io::stdout().flush().context("writing to stdout")?;

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    broker::run(config, listener, shutdown).await?;
    Ok(())
}

/// Pending connections the kernel may queue (capped by `net.core.somaxconn`).
/// tokio's default of 1024 overflows under connection storms, and a dropped
/// SYN costs the client a one-second retransmit.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        warn!("cannot install signal handlers; stop the broker by killing it");
        return;
    };
    let name = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    info!(signal = name, "shutdown requested");
    shutdown.cancel();
}

fn print_token(config: &Config, sub: &str, name: Option<&str>, ttl: Duration) -> anyhow::Result<()> {
    if config.jwt_algorithm != JwtAlgorithm::HS256 {
        bail!("`broker token` signs HS256 tokens only; sign RS256/ES256 tokens with your private key");
    }
    if config.jwt_secret.is_none() {
        eprintln!("warning: no JWT secret configured, signing with the development secret");
    }
    let sub = sub.parse::<u64>().map_or_else(|_| serde_json::Value::from(sub), serde_json::Value::from);
    let token = broker::auth::mint_hs256(config.effective_secret(), sub, name, ttl).context("signing")?;
    println!("{token}");
    Ok(())
}

/// Raises the soft open-file limit to the hard limit: every client is a
/// file descriptor, and the usual soft default (1024) is far too low.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(limit, "open file limit"),
        Err(error) => warn!(%error, "could not raise the open file limit"),
    }
}
