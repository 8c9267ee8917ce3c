//! Criterion micro-benchmarks of the broker's hot paths live in `benches/`,
//! one file per subject: `codec` (encode and parse), `rooms` (membership)
//! and `fanout` (broadcast plus the writers' drain). Run them with
//! `cargo bench -p bench`; end-to-end numbers come from `loadgen`.
//!
//! The library also holds [`compare`], the harness behind `bench/compare`
//! (binary `compare`): the broker against its peers, end to end; and
//! [`cluster`], behind `bench/cluster` (binary `cluster`): N brokers behind
//! one Redis under one loadgen run.

pub mod cluster;
pub mod compare;
