//! Fan-out: one pre-built `message` frame to every member of a room.
//!
//! `enqueue/N`: the local adapter's broadcast (the seam's fan-out half, over
//! the sharded room table) of a shared frame into N members'
//! outboxes (shard lock, then per member: outbox lock, `Bytes` clone, push,
//! wake the writer if the queue was empty). The outboxes are drained, untimed,
//! in the setup of `iter_batched` every `ENQUEUE_BATCH` broadcasts, so they
//! never fill; one push in `ENQUEUE_BATCH` takes the wake-the-writer path.
//!
//! `enqueue_and_drain/N` counts the writers' work too (STYLE: fan-out benches
//! count the writers' work): after the broadcast, every member's outbox is
//! drained as its writer would (`Outbox::drain` into a reused `VecDeque`,
//! then the writer's own batching, `write_batch_blocking`, "writing" to
//! `io::sink()`, which makes no syscall). `enqueue_drain_writev/N` is the same with a real `writev` per
//! member, to `/dev/null`: the syscall floor of N writers each sending one
//! frame (no socket buffer copy, no TCP). Neither counts the task wake-up
//! and scheduling of N writer tasks, which needs a runtime.
//!
//! `encode_and_enqueue/{recovery_off,recovery_on}/N`: the whole room emit
//! through the namespace's [`Adapter`] as the gateway makes it: take a
//! message id, encode the `message` once, queue it for N members. With
//! recovery on, the frame also carries its offset, is recorded once in the
//! replay ring (which, after the first 64 MiB, drops its oldest entry on
//! every record), and each outbox notes the offset in its trail. Both run
//! in the same process, side by side, so the difference is recovery's cost
//! on the hot path.
//!
//! `devnull_write/{writev_batch,write_per_frame}/64`: one writer with 64
//! frames queued, sent with one `writev` or with one `write` per frame: what
//! batching in the writer saves per frame.

use std::collections::VecDeque;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, Write};

use broker::adapter::LocalAdapter;
use broker::engineio::{Outbox, write_batch_blocking};
use broker::ids::{RoomId, Sid};
use broker::protocol::Frame;
use broker::rooms::Member;
use broker::socketio::{Adapter, MessageId};
use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const ROOM: &str = "room-1";
/// Broadcasts between two untimed drains in `enqueue`.
const ENQUEUE_BATCH: u64 = 8;
/// Far above what a bench queues, so no outbox ever closes as a slow consumer.
const OUTBOX_LIMIT_BYTES: usize = 1 << 30;

/// A `message` event as the gateway encodes it, ~100 bytes of content.
fn message_frame() -> Frame {
    Frame::text(concat!(
        r#"42/api/v1/chat,["message",{"id":"1718000000000123","roomId":"room-1","#,
        r#""content":"The quick brown fox jumps over the lazy dogs, then it jumps back again and waits for the next one!!!","#,
        r#""senderId":"user-4711","timestamp":1718000000123}]"#,
    ))
}

/// A table with one room of `members` members, their outboxes, and one
/// reusable drain buffer per member (what each writer keeps).
struct Fixture {
    table: LocalAdapter,
    outboxes: Vec<Outbox>,
    batches: Vec<VecDeque<Bytes>>,
}

impl Fixture {
    fn new(members: usize) -> Self {
        let table = LocalAdapter::new();
        let room = RoomId::from(ROOM);
        let outboxes: Vec<Outbox> = (0..members).map(|_| Outbox::new(OUTBOX_LIMIT_BYTES)).collect();
        for outbox in &outboxes {
            table.join(&room, Member { sid: Sid::random(), outbox: outbox.clone() }, |_| None);
        }
        let batches = (0..members).map(|_| VecDeque::new()).collect();
        Self { table, outboxes, batches }
    }
}

fn broadcast(table: &LocalAdapter, frame: &Frame) -> usize {
    table.broadcast(ROOM, None, |_| frame.clone().into()).expect("the room exists")
}

/// The gateway's `message` payload.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageOut<'a> {
    id: MessageId,
    room_id: &'a str,
    content: &'a str,
    sender_id: &'a str,
    timestamp: u64,
}

const CONTENT: &str =
    "The quick brown fox jumps over the lazy dogs, then it jumps back again and waits for the next one!!!";

fn encode_and_enqueue(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("fanout/encode_and_enqueue");
    for members in [1, 100, 10_000] {
        for (name, recovery) in [("recovery_off", false), ("recovery_on", true)] {
            let mut adapter = Adapter::local("/api/v1/chat");
            if recovery {
                adapter = adapter.with_recovery(std::time::Duration::from_secs(120), 64 << 20);
            }
            let room = RoomId::from(ROOM);
            let outboxes: Vec<Outbox> = (0..members).map(|_| Outbox::new(OUTBOX_LIMIT_BYTES)).collect();
            for outbox in &outboxes {
                let member = Member { sid: Sid::random(), outbox: outbox.clone() };
                adapter.join(&room, member, "user_joined", |_| None::<()>);
            }
            let mut batches: Vec<VecDeque<Bytes>> = (0..members).map(|_| VecDeque::new()).collect();
            group.throughput(Throughput::Elements(members as u64));
            group.bench_function(BenchmarkId::new(name, members), |bench| {
                bench.iter_batched(
                    || drain_and_write(&outboxes, &mut batches, &mut io::sink()),
                    |()| {
                        adapter.send_message(ROOM, "message", |id| MessageOut {
                            id: id.clone(),
                            room_id: ROOM,
                            content: CONTENT,
                            sender_id: "user-4711",
                            timestamp: 1_718_000_000_123,
                        })
                    },
                    BatchSize::NumIterations(ENQUEUE_BATCH),
                );
            });
        }
    }
    group.finish();
}

/// Drains each outbox and sends its frames to `sink` with the broker's
/// writer's own batching (`write_batch_blocking`).
fn drain_and_write(outboxes: &[Outbox], batches: &mut [VecDeque<Bytes>], sink: &mut impl Write) {
    for (outbox, batch) in outboxes.iter().zip(batches.iter_mut()) {
        outbox.drain(batch);
        write_batch_blocking(sink, batch).expect("sink accepts every write");
        batch.clear();
    }
}

fn enqueue(criterion: &mut Criterion) {
    let frame = message_frame();
    let mut group = criterion.benchmark_group("fanout/enqueue");
    for members in [1, 100, 10_000] {
        let Fixture { table, outboxes, mut batches } = Fixture::new(members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::from_parameter(members), |bench| {
            bench.iter_batched(
                || drain_and_write(&outboxes, &mut batches, &mut io::sink()),
                |()| broadcast(&table, &frame),
                BatchSize::NumIterations(ENQUEUE_BATCH),
            );
        });
    }
    group.finish();
}

fn enqueue_and_drain(criterion: &mut Criterion) {
    enqueue_and_write(criterion, "fanout/enqueue_and_drain", &mut io::sink());
    let mut devnull = File::options().write(true).open("/dev/null").expect("/dev/null opens");
    enqueue_and_write(criterion, "fanout/enqueue_drain_writev", &mut devnull);
}

/// Broadcast, then every member's writer drains and writes to `sink`.
fn enqueue_and_write(criterion: &mut Criterion, group_name: &str, sink: &mut impl Write) {
    let frame = message_frame();
    let mut group = criterion.benchmark_group(group_name);
    for members in [100, 10_000] {
        let Fixture { table, outboxes, mut batches } = Fixture::new(members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::from_parameter(members), |bench| {
            bench.iter(|| {
                black_box(broadcast(&table, &frame));
                drain_and_write(&outboxes, &mut batches, sink);
            });
        });
    }
    group.finish();
}

fn devnull_write(criterion: &mut Criterion) {
    const FRAMES: usize = 64;
    let batch: VecDeque<Bytes> = (0..FRAMES).map(|_| message_frame().as_bytes().clone()).collect();
    let mut devnull = File::options().write(true).open("/dev/null").expect("/dev/null opens");
    let mut group = criterion.benchmark_group("fanout/devnull_write");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function(BenchmarkId::new("writev_batch", FRAMES), |bench| {
        bench.iter(|| write_batch_blocking(&mut devnull, black_box(&batch)).expect("/dev/null takes it"));
    });
    group.bench_function(BenchmarkId::new("write_per_frame", FRAMES), |bench| {
        bench.iter(|| {
            for frame in black_box(&batch) {
                devnull.write_all(frame).expect("/dev/null takes it");
            }
        });
    });
    group.finish();
}

criterion_group!(benches, enqueue, encode_and_enqueue, enqueue_and_drain, devnull_write);
criterion_main!(benches);
