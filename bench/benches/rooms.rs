//! Room membership costs: `join` and `leave` through a namespace's
//! [`Adapter`] (the seam every join and leave goes through; on a single
//! broker, the sharded room table behind it).
//!
//! `join_leave/N`: a table of N rooms, each with one resident member (so a
//! leave never deletes the room and a join never allocates one); one member
//! joins every room, then leaves every room. Throughput counts each join and
//! each leave, so the per-element time is one membership operation, and the
//! sizes show what a large table costs in hashing and cache misses.
//!
//! `join_leave_contended/{1thread,2threads}`: each thread runs join+leave
//! pairs with its own member over the same 8 rooms, so the threads meet on
//! the same shard locks and cache lines. `iter_custom` times the whole batch
//! from a barrier to the last thread's end; the 1-thread case is the
//! uncontended baseline. With 2 threads on a 2-core machine shared with
//! other work, expect noise.
//!
//! Notices are off (`|_| None`): building and queueing them is `fanout`'s
//! subject.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use broker::engineio::Outbox;
use broker::ids::{RoomId, Sid};
use broker::rooms::Member;
use broker::socketio::Adapter;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A member whose outbox is never pushed to here (notices are off).
fn member(outbox: &Outbox) -> Member {
    Member { sid: Sid::random(), outbox: outbox.clone() }
}

/// Notices are off: no data for the other members.
fn silent(_: usize) -> Option<()> {
    None
}

/// An adapter with `count` rooms of one resident each, and the rooms' ids.
fn populated(count: usize, outbox: &Outbox) -> (Adapter, Vec<RoomId>) {
    let table = Adapter::local("/api/v1/chat");
    let rooms: Vec<RoomId> = (0..count).map(|i| RoomId::from(format!("room-{i}").as_str())).collect();
    for room in &rooms {
        table.join(room, member(outbox), "user_joined", silent);
    }
    (table, rooms)
}

fn join_then_leave(table: &Adapter, room: &RoomId, member: &Member) {
    black_box(table.join(room, member.clone(), "user_joined", silent));
    black_box(table.leave(room.as_str(), member.sid, "user_left", silent));
}

fn join_leave(criterion: &mut Criterion) {
    let outbox = Outbox::new(usize::MAX);
    let mut group = criterion.benchmark_group("rooms/join_leave");
    for count in [10, 1_000, 100_000] {
        let (table, rooms) = populated(count, &outbox);
        let visitor = member(&outbox);
        group.throughput(Throughput::Elements(2 * count as u64));
        group.bench_function(BenchmarkId::from_parameter(count), |bench| {
            bench.iter(|| {
                for room in &rooms {
                    black_box(table.join(room, visitor.clone(), "user_joined", silent));
                }
                for room in &rooms {
                    black_box(table.leave(room.as_str(), visitor.sid, "user_left", silent));
                }
            });
        });
    }
    group.finish();
}

/// Rooms the contended threads share.
const SHARED_ROOMS: usize = 8;

fn join_leave_contended(criterion: &mut Criterion) {
    let outbox = Outbox::new(usize::MAX);
    let (table, rooms) = populated(SHARED_ROOMS, &outbox);
    let mut group = criterion.benchmark_group("rooms/join_leave_contended");
    for threads in [1_usize, 2] {
        // One iteration: every thread does one join and one leave.
        group.throughput(Throughput::Elements(2 * threads as u64));
        let id = if threads == 1 { "1thread".to_owned() } else { format!("{threads}threads") };
        group.bench_function(id, |bench| {
            bench.iter_custom(|iters| timed_threads(threads, iters, &table, &rooms, &outbox));
        });
    }
    group.finish();
}

/// Runs `iters` join+leave pairs on each of `threads` threads; returns the
/// wall time from the common start to the last thread's end.
fn timed_threads(threads: usize, iters: u64, table: &Adapter, rooms: &[RoomId], outbox: &Outbox) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let visitor = member(outbox);
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    // Offset the threads so they are not in lock-step on one room.
                    for room in rooms.iter().cycle().skip(thread).take(iters as usize) {
                        join_then_leave(table, room, &visitor);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for worker in workers {
            worker.join().expect("worker does not panic");
        }
        began.elapsed()
    })
}

criterion_group!(benches, join_leave, join_leave_contended);
criterion_main!(benches);
