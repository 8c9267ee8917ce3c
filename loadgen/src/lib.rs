//! A load generator for Socket.IO chat servers that speak `shared/PROTOCOL.md`.
//!
//! It drives any such server (our broker, a NestJS gateway, socketioxide)
//! over real sockets, as thousands of authenticated clients, and measures
//! latency free of coordinated omission while checking every delivery.
//!
//! Module map, bottom up:
//! - [`ws`]: WebSocket framing after the upgrade: scan server frames, mask ours.
//! - [`wire`]: encode the frames a client sends, scan the ones it gets.
//! - [`content`]: the `publisher:seq:intended-ns|padding` message stamp.
//! - [`accounting`]: per-receiver sequence and notice bookkeeping.
//! - [`schedule`]: the run clock and open-loop schedules.
//! - [`stats`]: sharded HdrHistograms and per-second counts.
//! - [`token`]: HS256 JWTs, one `sub` per client (and flawed ones).
//! - [`noise`]: cheap reproducible pseudo-random numbers.
//! - [`gauges`]: the target's `/metrics` gauges and RSS, for the soak.
//! - [`client`]: one connection: TCP, upgrade, open, auth, pings.
//! - [`session`]: one chat user: join, publish, receive, leave; dropped
//!   and reconnected with connection state recovery.
//! - [`scenario`]: the six scenarios, each `async fn run(…) -> Outcome`,
//!   and the member lifecycle three of them share.
//! - [`report`], [`plot`], [`selfcheck`]: the table, JSON, SVG and the
//!   load generator's own CPU and lag; `report` is built from plain
//!   measurements and depends on no scenario.
//! - [`workers`]: one run over several processes of loadgen, merged.
//! - [`config`]: command-line and library configuration.

pub mod accounting;
pub mod client;
pub mod config;
pub mod content;
pub mod gauges;
pub mod noise;
pub mod plot;
pub mod polling;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod selfcheck;
pub mod session;
pub mod stats;
pub mod token;
pub mod wire;
pub mod workers;
pub mod ws;

pub use config::{
    AuthMode, BroadcastConfig, ConnectConfig, DisconnectConfig, JoinConfig, MixedConfig, RunOptions,
    Scenario, SoakConfig, TargetOptions, TransportMode,
};
pub use report::Report;
pub use scenario::run;
