//! The `conformance` binary: the server the official Engine.IO and Socket.IO
//! protocol test suites run against (see `broker::conformance`).
//!
//! `conformance --listen 127.0.0.1:3000` prints `listening on ADDR` once
//! bound and serves until SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server of the official protocol test suites: an Engine.IO echo at
/// /engine.io/ and Socket.IO namespaces / and /custom at /socket.io/.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let listener =
            TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        println!("listening on {address}");
        std::io::stdout().flush().context("writing to stdout")?;
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                use tokio::signal::unix::{SignalKind, signal};
                if let (Ok(mut interrupt), Ok(mut terminate)) =
                    (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                    shutdown.cancel();
                }
            }
        });
        broker::serve_service(broker::conformance::service(), listener, shutdown, TaskTracker::new()).await;
        Ok(())
    })
}
