//! Codec costs on the chat hot path.
//!
//! `encode_*`: a `message` event becomes a complete WebSocket frame. The
//! broker encodes it once per broadcast and shares the bytes
//! (`encode_message_frame`, and `encode_shared/100`, which adds the 100
//! `Frame` clones a room of 100 gets); a naive server serializes it again for
//! every recipient (`encode_per_recipient/100`). The /100 ids report per
//! recipient, so their ratio is the saving of encoding once.
//!
//! `parse_send_message/*`: one inbound `send_message` text message, from the
//! WebSocket payload to the `content` and `roomId` strings: Engine.IO and
//! Socket.IO envelope decode, then the JSON. `broker` is the broker's own
//! path: a reused scratch `Vec` and simd-json `Buffers` (as each worker
//! thread keeps them), `protocol::json::parse` with its depth, surrogate and
//! duplicate-key checks, `split_event`, then the gateway's
//! `parse_request` with the default limits. The others are bare parsers
//! for reference: `simd_json` (`to_borrowed_value`, fresh buffers each time),
//! `simd_json_reused_buffers` (the same with `Buffers` kept);
//! `serde_json` parses into a `serde_json::Value`;
//! `serde_json_typed` deserializes straight into a struct, which only works
//! when the event name is known before parsing.

use std::borrow::Cow;
use std::hint::black_box;

use broker::Config;
use broker::auth::UserId;
use broker::gateway::{ChatLimits, ChatRequest, MessageOut, parse_request};
use broker::protocol::socketio::{self, split_event};
use broker::protocol::{Frame, engineio, json};
use broker::socketio::{MessageId, event_frame};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use simd_json::BorrowedValue;
use simd_json::prelude::*;

const NAMESPACE: &str = "/api/v1/chat";
const RECIPIENTS: usize = 100;

/// The gateway's own `message` payload, ~100 bytes of `content`.
fn message<'a>(content: &'a str, sender: &'a UserId) -> MessageOut<'a> {
    MessageOut {
        id: MessageId::local(1_718_000_000_000_123),
        room_id: "room-1",
        content,
        sender_id: sender,
        timestamp: 1_718_000_000_123,
    }
}

fn encode(criterion: &mut Criterion) {
    // 100 bytes of plain text: a typical chat line, no escapes.
    let content = "The quick brown fox jumps over the lazy dogs, then it jumps back again and waits for the next one!!!";
    assert_eq!(content.len(), 100);
    let sender = UserId::from_sub(&serde_json::json!("user-4711")).expect("a string is a user id");
    let message = message(content, &sender);
    let frame_len = event_frame(NAMESPACE, None, "message", &message).len() as u64;

    let mut group = criterion.benchmark_group("codec");
    group.throughput(Throughput::Bytes(frame_len));
    group.bench_function("encode_message_frame", |bench| {
        bench.iter(|| event_frame(NAMESPACE, None, "message", black_box(&message)));
    });

    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function(BenchmarkId::new("encode_shared", RECIPIENTS), |bench| {
        let mut frames: Vec<Frame> = Vec::with_capacity(RECIPIENTS);
        bench.iter(|| {
            let frame = event_frame(NAMESPACE, None, "message", black_box(&message));
            frames.extend((0..RECIPIENTS).map(|_| frame.clone()));
            frames.clear();
        });
    });
    group.bench_function(BenchmarkId::new("encode_per_recipient", RECIPIENTS), |bench| {
        let mut frames: Vec<Frame> = Vec::with_capacity(RECIPIENTS);
        bench.iter(|| {
            frames.extend(
                (0..RECIPIENTS).map(|_| event_frame(NAMESPACE, None, "message", black_box(&message))),
            );
            frames.clear();
        });
    });
    group.finish();
}

/// The typed form of `["send_message", {...}]`. `Cow` because a string with
/// escapes cannot borrow from the input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMessage<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(borrow)]
    room_id: Option<Cow<'a, str>>,
}

/// Engine.IO then Socket.IO envelope; returns the JSON payload.
fn envelope(text: &str) -> &str {
    let engineio::Packet::Message(data) = engineio::decode(text).expect("engine.io packet") else {
        panic!("not a message packet");
    };
    socketio::decode(data).expect("socket.io packet").payload
}

/// The event name, `content` and `roomId` of a parsed `send_message`.
fn send_message_fields<'v>(value: &'v BorrowedValue<'_>) -> (&'v str, &'v str, Option<&'v str>) {
    let (name, args) = split_event(value).expect("event");
    let object = args[0].as_object().expect("object");
    let content = object.get("content").and_then(ValueAsScalar::as_str).expect("content");
    (name, content, object.get("roomId").and_then(ValueAsScalar::as_str))
}

fn parse(criterion: &mut Criterion) {
    let text = r#"42/api/v1/chat,7["send_message",{"content":"hello world","roomId":"room-1"}]"#;
    let mut group = criterion.benchmark_group("codec/parse_send_message");
    group.throughput(Throughput::Bytes(text.len() as u64));

    group.bench_function("broker", |bench| {
        let config = Config::default();
        let limits = ChatLimits::from(&config);
        let (mut scratch, mut buffers) = (Vec::new(), simd_json::Buffers::default());
        bench.iter(|| {
            let payload = envelope(black_box(text));
            scratch.clear();
            scratch.extend_from_slice(payload.as_bytes());
            let value = json::parse(&mut scratch, &mut buffers, config.max_json_depth).expect("json");
            let (name, args) = split_event(&value).expect("event");
            let request = parse_request(name, args, &limits).expect("a valid send_message");
            assert!(matches!(request, ChatRequest::Send { .. }));
            black_box(request);
        });
    });
    group.bench_function("simd_json", |bench| {
        let mut scratch = Vec::new();
        bench.iter(|| {
            let payload = envelope(black_box(text));
            scratch.clear();
            scratch.extend_from_slice(payload.as_bytes());
            let value = simd_json::to_borrowed_value(&mut scratch).expect("json");
            black_box(send_message_fields(&value));
        });
    });
    group.bench_function("simd_json_reused_buffers", |bench| {
        let (mut scratch, mut buffers) = (Vec::new(), simd_json::Buffers::default());
        bench.iter(|| {
            let payload = envelope(black_box(text));
            scratch.clear();
            scratch.extend_from_slice(payload.as_bytes());
            let value = simd_json::to_borrowed_value_with_buffers(&mut scratch, &mut buffers).expect("json");
            black_box(send_message_fields(&value));
        });
    });
    group.bench_function("serde_json", |bench| {
        bench.iter(|| {
            let payload = envelope(black_box(text));
            let value: serde_json::Value = serde_json::from_str(payload).expect("json");
            let name = value[0].as_str().expect("name");
            let content = value[1]["content"].as_str().expect("content");
            let room = value[1]["roomId"].as_str();
            black_box((name, content, room));
        });
    });
    group.bench_function("serde_json_typed", |bench| {
        bench.iter(|| {
            let payload = envelope(black_box(text));
            let (name, message): (Cow<'_, str>, SendMessage<'_>) =
                serde_json::from_str(payload).expect("json");
            black_box((name, message.content, message.room_id));
        });
    });
    group.finish();
}

criterion_group!(benches, encode, parse);
criterion_main!(benches);
