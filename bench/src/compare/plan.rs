//! What the harness runs against every server, in full and in `--quick`.
//!
//! Only sizes and durations live here; the ladder logic is in
//! [`steps`](super::steps) and the running in [`suite`](super::suite).

use std::time::Duration;

use serde::Serialize;

use super::steps::{BRACKET_TEN_PERCENT, Ladder};

/// Descriptors a process needs besides its connections (listeners, epoll,
/// pipes, Node's internals), when checking a memory point against the limit.
pub const SPARE_FDS: u64 = 1_024;

/// The `connect storm` offered rate, the same in both modes.
const STORM_RATE: f64 = 100_000.0;

/// One broadcast shape: rooms × members, one publisher per room.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Rooms.
    pub rooms: u32,
    /// Members per room.
    pub members: u32,
    /// How the rate climbs.
    pub ladder: Ladder,
    /// Also run it with the server unpinned.
    pub multicore: bool,
}

impl Series {
    /// `20x100`: the label used in tables and file names.
    pub fn label(&self) -> String {
        format!("{}x{}", self.rooms, self.members)
    }

    /// Clients connected in a step.
    pub fn clients(&self) -> u32 {
        self.rooms * self.members
    }
}

/// The forced-drops run (`broadcast --drop-every`): rooms of members, one
/// publisher each, while every other member is dropped and reconnects.
#[derive(Debug, Clone, Serialize)]
pub struct DropsPlan {
    /// Rooms.
    pub rooms: u32,
    /// Members per room, the publisher included.
    pub members: u32,
    /// Messages per second per room.
    pub rate: f64,
    /// Publishing time.
    pub duration: Duration,
    /// Mean time a member stays connected.
    pub drop_every: Duration,
    /// Mean pause before it reconnects.
    pub reconnect_delay: Duration,
    /// The recovery window servers that have one are given, ms.
    pub recovery_window_ms: u64,
}

/// Everything one comparison runs.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Clients of the idle-memory points, in order; points the open-file
    /// limit rules out are recorded as not measured.
    pub memory_clients: Vec<u32>,
    /// The memory point whose run gives the `connect` figures.
    pub connect_clients: u32,
    /// Connects per second of the memory/`connect` runs.
    pub connect_rate: f64,
    /// Clients of the `connect storm` run.
    pub storm_clients: u32,
    /// Connects per second offered in the `connect storm` run: more than
    /// one loadgen core can make, so it connects as fast as it can and a
    /// server that cannot keep up shows its own accept rate.
    pub storm_rate: f64,
    /// How long clients stay connected after the ramp while RSS is read.
    pub hold: Duration,
    /// Clients and rooms of the `join` and `disconnect` runs.
    pub churn_clients: u32,
    /// Rooms of the `join` and `disconnect` runs.
    pub churn_rooms: u32,
    /// Joins (and closes) per second.
    pub churn_rate: f64,
    /// Broadcast shapes.
    pub series: Vec<Series>,
    /// Publishing time per step.
    pub step_duration: Duration,
    /// Longest wait for late deliveries after a step.
    pub drain: Duration,
    /// Connects per second while a step sets up.
    pub setup_connect_rate: f64,
    /// Delivery under forced drops.
    pub drops: DropsPlan,
}

impl Plan {
    /// The full comparison (about half an hour for three servers and the
    /// raw reference, depending on how many steps each ladder climbs). The 2×2000 ladder climbs by
    /// ×2: setting up one of its steps means 4 million `user_joined`
    /// notices, about two minutes for NestJS.
    pub fn full() -> Self {
        Self {
            mode: "full",
            memory_clients: vec![1_000, 10_000, 50_000],
            connect_clients: 10_000,
            connect_rate: 2_000.0,
            storm_clients: 10_000,
            storm_rate: STORM_RATE,
            hold: Duration::from_secs(5),
            churn_clients: 2_000,
            churn_rooms: 20,
            churn_rate: 500.0,
            series: vec![
                series(20, 100, ladder(10.0, 1.5, 12, 2, 4), true),
                series(2, 2_000, ladder(2.5, 2.0, 9, 2, 5), true),
            ],
            step_duration: Duration::from_secs(8),
            drain: Duration::from_secs(5),
            setup_connect_rate: 2_000.0,
            // The public benchmark this follows dropped sockets every ~15 s.
            drops: drops(20, 50, Duration::from_secs(60), Duration::from_secs(15)),
        }
    }

    /// The quick comparison: shorter steps, a coarser climb (bisected to
    /// the same ±10 %), smaller churn runs, 2×500 rooms instead of 2×2000 (whose
    /// 4 million `user_joined` notices take NestJS about two minutes to
    /// send before each step), and the multicore ladder for 20×100 only.
    pub fn quick() -> Self {
        Self {
            mode: "quick",
            memory_clients: vec![1_000, 10_000, 50_000],
            connect_clients: 10_000,
            connect_rate: 4_000.0,
            // Half: NestJS accepts a storm at about 200/s.
            storm_clients: 5_000,
            storm_rate: STORM_RATE,
            hold: Duration::from_secs(2),
            churn_clients: 1_000,
            churn_rooms: 10,
            churn_rate: 1_000.0,
            series: vec![
                series(20, 100, ladder(20.0, 3.0, 4, 1, 6), true),
                series(2, 500, ladder(20.0, 3.0, 4, 1, 6), false),
            ],
            step_duration: Duration::from_secs(3),
            drain: Duration::from_secs(2),
            setup_connect_rate: 4_000.0,
            drops: drops(10, 20, Duration::from_secs(20), Duration::from_secs(5)),
        }
    }
}

/// A duration as loadgen's flags take it (`--duration 3000ms`).
pub fn duration_arg(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// 10 messages/s per room, reconnecting after 1 s (socket.io-client's
/// `reconnectionDelay`), within socket.io's and the broker's 120 s window.
fn drops(rooms: u32, members: u32, duration: Duration, drop_every: Duration) -> DropsPlan {
    DropsPlan {
        rooms,
        members,
        rate: 10.0,
        duration,
        drop_every,
        reconnect_delay: Duration::from_secs(1),
        recovery_window_ms: 120_000,
    }
}

fn series(rooms: u32, members: u32, ladder: Ladder, multicore: bool) -> Series {
    Series { rooms, members, ladder, multicore }
}

fn ladder(
    start_rate: f64,
    factor: f64,
    max_steps: usize,
    max_step_downs: usize,
    max_refinements: usize,
) -> Ladder {
    Ladder { start_rate, factor, max_steps, max_step_downs, bracket: BRACKET_TEN_PERCENT, max_refinements }
}
