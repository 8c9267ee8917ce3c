//! Feeds one rendered input through the broker's real entry points and
//! checks what must hold whatever the input. Shared, file for file, by the
//! fuzz targets and by the broker's regression test on stable Rust
//! (`broker/tests/fuzz_regressions.rs` includes it with `#[path]`), so a
//! saved case runs exactly the code the fuzzer ran.
//!
//! Each function returns a short description of where the input stopped
//! (`accepted`, or `<stage>: <reason>`); a case's `.expect` file, when there
//! is one, holds the prefix that description must start with.

use broker::protocol::{engineio, socketio};
use bytes::BytesMut;
use simd_json::BorrowedValue;

/// Engine.IO text frame, then Socket.IO packet, then the payload's JSON.
#[must_use]
pub fn engineio_socketio(text: &str) -> String {
    let data = match engineio::decode(text) {
        Ok(engineio::Packet::Message(data)) => data,
        Ok(_) => return "engineio: not a message".to_owned(),
        Err(error) => return format!("engineio: {error}"),
    };
    let packet = match socketio::decode(data) {
        Ok(packet) => packet,
        Err(error) => return format!("socketio: {error}"),
    };
    check_envelope_round_trip(&packet);
    if packet.payload.is_empty() {
        return "accepted".to_owned();
    }
    with_parsed_json(packet.payload, |value| {
        let Some(value) = value else { return "json: refused".to_owned() };
        if matches!(packet.kind, socketio::PacketType::Event | socketio::PacketType::BinaryEvent)
            && let Err(error) = socketio::split_event(value)
        {
            return format!("event: {error}");
        }
        match socketio::check_placeholders(value, packet.attachments) {
            Ok(()) => "accepted".to_owned(),
            Err(error) => format!("placeholders: {error}"),
        }
    })
}

/// The checked JSON parse the connection runs on every payload.
fn with_parsed_json<R>(json: &str, f: impl FnOnce(Option<&BorrowedValue<'_>>) -> R) -> R {
    let mut bytes = json.as_bytes().to_vec();
    let value = simd_json::to_borrowed_value(&mut bytes).ok();
    f(value.as_ref())
}

/// Encoding what was decoded and decoding it again gives the same packet:
/// the envelope has one meaning, whatever redundant form (leading zeros in
/// the ack id, an explicit `/,`) the client chose.
fn check_envelope_round_trip(packet: &socketio::Packet<'_>) {
    let mut header = BytesMut::new();
    socketio::write_header(&mut header, packet.kind, packet.namespace, packet.ack_id);
    let mut text = String::from_utf8(header.to_vec()).expect("the header is ASCII and the namespace UTF-8");
    if packet.kind.is_binary() {
        text.insert_str(1, &format!("{}-", packet.attachments));
    }
    text.push_str(packet.payload);
    let again = socketio::decode(&text);
    assert_eq!(again.as_ref(), Ok(packet), "re-encoded as {text:?}");
}
