//! The servers under test, and the raw reference: how to build each, start it on
//! `127.0.0.1:0`, learn its port, and stop it.
//!
//! A [`Server`] owns its child process; dropping it sends SIGTERM (then
//! SIGKILL after [`STOP_GRACE`]) and reaps it, so no error path leaves a
//! server running. Ctrl-C reaches the servers directly: they stay in the
//! harness's process group, and each exits on SIGINT.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::loadgen::placed;

/// How long a server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// socketioxide's per-socket packet buffer unless `MAX_BUFFER_SIZE` is
/// set: the library's default of 128 drops packets (and closes sessions)
/// as soon as a 2,000-member room's `user_joined` notices arrive, long
/// before any broadcast rate matters. 10,000 is the value socketioxide's
/// own docs show, and about what the broker's 1 MiB outbox holds of such
/// frames. tokio's channel allocates lazily, so idle memory is unaffected.
pub const SOCKETIOXIDE_BUFFER: &str = "10000";

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Our broker.
    Broker,
    /// `bench/peers/socketioxide`.
    Socketioxide,
    /// `bench/peers/nestjs`.
    Nestjs,
    /// The raw reference, `bench/src/bin/raw_fanout.rs`: the fan-out alone,
    /// what the machine allows.
    Raw,
}

impl ServerKind {
    /// Every server, ours first, the raw reference last.
    pub const ALL: [ServerKind; 4] =
        [ServerKind::Broker, ServerKind::Socketioxide, ServerKind::Nestjs, ServerKind::Raw];

    /// Its name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Broker => "broker",
            ServerKind::Socketioxide => "socketioxide",
            ServerKind::Nestjs => "nestjs",
            ServerKind::Raw => "raw",
        }
    }

    /// Whether it speaks the whole chat contract (authentication, rooms,
    /// notices); the raw reference answers only what a broadcast needs.
    pub fn speaks_chat(self) -> bool {
        self != ServerKind::Raw
    }

    /// Parses a name from `--servers`.
    ///
    /// # Errors
    /// The name is none of the three.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name.trim())
            .with_context(|| format!("unknown server {name:?} (broker, socketioxide, nestjs, raw)"))
    }

    /// Builds it (release).
    ///
    /// # Errors
    /// The build command failed.
    pub fn build(self, root: &Path) -> anyhow::Result<()> {
        match self {
            ServerKind::Broker => {
                run_in(root, "cargo", &["build", "--release", "-p", "broker", "-p", "loadgen"])
            }
            ServerKind::Socketioxide => run_in(
                root,
                "cargo",
                &["build", "--release", "--manifest-path", "bench/peers/socketioxide/Cargo.toml"],
            ),
            ServerKind::Nestjs => {
                let dir = root.join("bench/peers/nestjs");
                if !dir.join("node_modules").is_dir() {
                    run_in(&dir, "npm", &["ci"])?;
                }
                run_in(&dir, "npm", &["run", "build"])
            }
            ServerKind::Raw => {
                run_in(root, "cargo", &["build", "--release", "-p", "bench", "--bin", "raw-fanout"])
            }
        }
    }

    /// How it is configured for the comparison, in words.
    pub fn settings(self) -> String {
        match self {
            ServerKind::Broker => "broker: BROKER_RATE_LIMIT_PER_SEC=0, BROKER_MAX_CONNECTIONS_PER_IP=0 (all load comes from 127.0.0.1), BROKER_RECOVERY_WINDOW_MS=0 except under drops (recovery off, as on the peers), other settings default".to_owned(),
            ServerKind::Socketioxide => format!(
                "socketioxide: MAX_BUFFER_SIZE={}",
                std::env::var("MAX_BUFFER_SIZE").unwrap_or_else(|_| SOCKETIOXIDE_BUFFER.to_owned())
            ),
            ServerKind::Nestjs => "nestjs: NODE_ENV=production, other settings default".to_owned(),
            ServerKind::Raw => "raw: bench's raw-fanout reference (no JWT, no chat rules)".to_owned(),
        }
    }

    /// The environment variable that sets its connection state recovery
    /// window to `window_ms`; `None` when it has no recovery (the broker's
    /// default window is 120 s, NestJS's default is socket.io's, off).
    pub fn recovery_window_env(self, window_ms: u64) -> Option<(String, String)> {
        let name = match self {
            ServerKind::Broker => "BROKER_RECOVERY_WINDOW_MS",
            ServerKind::Nestjs => "RECOVERY_WINDOW_MS",
            ServerKind::Socketioxide | ServerKind::Raw => return None,
        };
        Some((name.to_owned(), window_ms.to_string()))
    }

    /// Whether it has connection state recovery to turn on.
    pub fn recovers(self) -> bool {
        self.recovery_window_env(0).is_some()
    }

    /// The command that starts it, pinned to `cpu` when given.
    fn command(self, root: &Path, cpu: Option<u32>, secret: &str) -> Command {
        match self {
            ServerKind::Broker => {
                let mut command = placed(&root.join("target/release/broker"), cpu);
                command
                    .env("BROKER_LISTEN", "127.0.0.1:0")
                    .env("BROKER_JWT_SECRET", secret)
                    .env("BROKER_RATE_LIMIT_PER_SEC", "0")
                    .env("BROKER_MAX_CONNECTIONS_PER_IP", "0")
                    .env("RUST_LOG", "warn")
                    // Recovery off as on every peer (socket.io's default);
                    // the drops part turns it on (`start_recovering`).
                    .envs(self.recovery_window_env(0));
                command
            }
            ServerKind::Socketioxide => {
                let binary = root.join("bench/peers/socketioxide/target/release/socketioxide-peer");
                let mut command = placed(&binary, cpu);
                let buffer =
                    std::env::var("MAX_BUFFER_SIZE").unwrap_or_else(|_| SOCKETIOXIDE_BUFFER.to_owned());
                command.env("JWT_SECRET", secret).env("PORT", "0").env("MAX_BUFFER_SIZE", buffer);
                command
            }
            ServerKind::Raw => {
                let mut command = placed(&root.join("target/release/raw-fanout"), cpu);
                command.env("RAW_LISTEN", "127.0.0.1:0");
                command
            }
            ServerKind::Nestjs => {
                let mut command = placed(Path::new("node"), cpu);
                command
                    .arg("dist/main.js")
                    .current_dir(root.join("bench/peers/nestjs"))
                    .env("NODE_ENV", "production")
                    .env("JWT_SECRET", secret)
                    .env("PORT", "0");
                command
            }
        }
    }
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("compare: {} $ {program} {}", dir.display(), args.join(" "));
    // stdout is the report's; build chatter (npm prints to stdout) goes to
    // stderr with the rest of the progress.
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed in {} ({status})", args.join(" "), dir.display());
    }
    Ok(())
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct Server {
    /// Which server.
    pub kind: ServerKind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its process id (the server itself: `taskset` execs it).
    pub pid: u32,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `kind` and waits for its `listening on 127.0.0.1:PORT` line.
    ///
    /// # Errors
    /// It could not start, exited, or printed no such line in time.
    pub fn start(
        kind: ServerKind,
        root: &Path,
        cpu: Option<u32>,
        secret: &str,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(kind, root, cpu, secret, logs, &[])
    }

    /// [`start`](Self::start) with more environment variables (e.g. the
    /// broker's `BROKER_ADAPTER=redis`), which win over the defaults.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_env(
        kind: ServerKind,
        root: &Path,
        cpu: Option<u32>,
        secret: &str,
        logs: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let stderr_path = logs.join(format!("{}-{}.stderr", kind.name(), std::process::id()));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&stderr_path)?;
        let mut child = kind
            .command(root, cpu, secret)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut server = Self { kind, port: 0, pid, child: Some(child), stderr_path };
        server.port = read_port(stdout).map_err(|e| {
            let log = std::fs::read_to_string(&server.stderr_path).unwrap_or_default();
            e.context(format!("{} did not start; stderr: {}", kind.name(), log.trim()))
        })?;
        Ok(server)
    }

    /// Fails when the server has exited on its own.
    ///
    /// # Errors
    /// It exited, or could not be polled.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("{} was stopped", self.kind.name()) };
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
            bail!("{} exited ({status}); stderr: {}", self.kind.name(), log.trim());
        }
        Ok(())
    }

    /// Sends SIGTERM, waits up to [`STOP_GRACE`], then SIGKILLs.
    ///
    /// # Errors
    /// The process could not be signalled or reaped.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_child()
    }

    fn stop_child(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        // The `kill` command keeps the harness free of libc and unsafe.
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("compare: {} ignored SIGTERM for {STOP_GRACE:?}; killing it", self.kind.name());
        child.kill().context("killing the server")?;
        child.wait().context("reaping the server")?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop_child() {
            eprintln!("compare: stopping {} (pid {}): {e:#}", self.kind.name(), self.pid);
        }
    }
}

/// Reads lines until `listening on HOST:PORT`, then keeps draining stdout
/// in the background so the server never blocks on a full pipe.
fn read_port(stdout: std::process::ChildStdout) -> anyhow::Result<u16> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(port) = parse_listening(&line) {
                let _ = tx.send(port);
                break;
            }
        }
        lines.for_each(drop);
    });
    rx.recv_timeout(START_TIMEOUT)
        .map_err(|_| anyhow::anyhow!("no `listening on` line within {START_TIMEOUT:?}"))
}

/// The port of a `listening on 127.0.0.1:PORT` line.
pub fn parse_listening(line: &str) -> Option<u16> {
    let address = line.trim().strip_prefix("listening on ")?;
    address.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_port() {
        assert_eq!(parse_listening("listening on 127.0.0.1:41234\n"), Some(41234));
        assert_eq!(parse_listening("listening on [::1]:80"), Some(80));
        assert_eq!(parse_listening("starting"), None);
        assert_eq!(ServerKind::parse(" nestjs").expect("known"), ServerKind::Nestjs);
        assert!(ServerKind::parse("express").is_err());
    }
}
