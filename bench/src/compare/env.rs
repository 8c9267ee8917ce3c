//! Where and how the runs happen: the [`Env`] every part is given (paths,
//! secret, pinning, plan) and the [`Placement`] of server and loadgen.
//!
//! A leaf below [`climb`](super::climb) and [`suite`](super::suite), so that
//! neither has to import the other for it.

use std::path::PathBuf;

use serde::Serialize;

use super::loadgen::Invocation;
use super::plan::{Plan, SPARE_FDS};
use super::server::{Server, ServerKind};

/// The CPU servers are pinned to.
pub const SERVER_CPU: u32 = 1;
/// The CPU loadgen is pinned to.
pub const LOADGEN_CPU: u32 = 0;

/// Where and how the runs happen.
#[derive(Debug, Clone)]
pub struct Env {
    /// Workspace root.
    pub root: PathBuf,
    /// Scratch directory for loadgen reports and server logs.
    pub work: PathBuf,
    /// The JWT secret given to servers and loadgen.
    pub secret: String,
    /// Whether `taskset` is available.
    pub pinning: bool,
    /// The hard open-file limit, if known.
    pub fd_hard_limit: Option<u64>,
    /// What to run.
    pub plan: Plan,
}

/// Where server and loadgen run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Server on CPU 1, loadgen on CPU 0 (when `taskset` exists).
    Pinned,
    /// Both unpinned, sharing every core.
    Multicore,
}

impl Placement {
    /// Its name in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Pinned => "pinned",
            Placement::Multicore => "multicore",
        }
    }
}

impl Env {
    /// The hard open-file limit, if it leaves no room for `clients` sockets
    /// (plus [`SPARE_FDS`]) in the server or in loadgen.
    pub fn fd_limit_too_low(&self, clients: u64) -> Option<u64> {
        self.fd_hard_limit.filter(|&limit| clients + SPARE_FDS > limit)
    }

    fn cpus(&self, placement: Placement) -> (Option<u32>, Option<u32>) {
        match placement {
            Placement::Pinned if self.pinning => (Some(SERVER_CPU), Some(LOADGEN_CPU)),
            _ => (None, None),
        }
    }

    /// Starts `kind` placed for `placement`.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start(&self, kind: ServerKind, placement: Placement) -> anyhow::Result<Server> {
        Server::start(kind, &self.root, self.cpus(placement).0, &self.secret, &self.work)
    }

    /// Starts `kind` pinned, its connection state recovery (if it has one)
    /// on with a window of `window_ms`.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start_recovering(&self, kind: ServerKind, window_ms: u64) -> anyhow::Result<Server> {
        let cpu = self.cpus(Placement::Pinned).0;
        let env: Vec<(String, String)> = kind.recovery_window_env(window_ms).into_iter().collect();
        Server::start_with_env(kind, &self.root, cpu, &self.secret, &self.work, &env)
    }

    /// A loadgen run against `server`, its report named after `name`.
    pub fn loadgen(
        &self,
        server: &Server,
        placement: Placement,
        name: &str,
        args: Vec<String>,
    ) -> Invocation {
        Invocation {
            binary: self.root.join("target/release/loadgen"),
            cpu: self.cpus(placement).1,
            args,
            port: server.port,
            secret: self.secret.clone(),
            json: self.work.join(format!("{}-{name}.json", server.kind.name())),
        }
    }
}
