//! `bench/compare`: our broker against the socketioxide and NestJS peers,
//! end to end, with the same loadgen scenarios on the same CPU.
//!
//! Each server is built, started on `127.0.0.1:0` pinned to CPU 1 (loadgen
//! on CPU 0), and measured for `connect`, `join`, `disconnect`, idle memory,
//! and broadcast ladders whose rate climbs until p99 passes 50 ms or
//! anything is lost, then bisected to ±10 %; the ladders are repeated
//! unpinned ("multicore"). Then every server runs each shape once more at
//! one fixed load, for CPU per delivery. Beside the three servers runs a
//! raw reference (`raw-fanout`: the fan-out alone), which puts "today's
//! machine" into every capacity as a fraction. The
//! outcome is one markdown table with our ratio to each peer, plus the JSON
//! of every run and an SVG chart. `COMPARE.md` documents the command.
//!
//! Modules, leaves first: [`steps`] (the ladder's pure logic), [`table`]
//! (pure formatting), [`plan`] (sizes), [`loadgen`] and [`server`] (child
//! processes), [`probe`] (`/proc` and `/metrics`), [`env`] (placement),
//! [`climb`] (one ladder), [`suite`] (one server's parts, using `climb`),
//! [`efficiency`] (CPU per delivery at one load, after every suite),
//! [`drops`] (delivery under forced drops, each server's recovery on),
//! [`figures`], [`chart`] and [`output`] (reporting). Imports point one
//! way, down this list. The
//! invariant: no server outlives the harness's handle on it, and no
//! loadgen-bound figure is presented as a server's capacity.

pub mod chart;
pub mod climb;
pub mod drops;
pub mod efficiency;
pub mod env;
pub mod figures;
pub mod loadgen;
pub mod output;
pub mod plan;
pub mod probe;
pub mod server;
pub mod steps;
pub mod suite;
pub mod table;
