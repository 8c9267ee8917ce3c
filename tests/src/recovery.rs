//! What connection state recovery tests share: the CONNECT payload of a
//! client coming back, and the offsets events carry.

use crate::{Client, Packet, Value, json};

/// The CONNECT payload of a client coming back: its token, the session's
/// pid, and the last offset it processed (if any), as socket.io-client sends it.
#[must_use]
pub fn comeback(token: &str, pid: &Value, offset: Option<&str>) -> Value {
    let mut payload = json!({ "token": token, "pid": pid });
    if let Some(offset) = offset {
        payload["offset"] = json!(offset);
    }
    payload
}

/// The next `name` event as a whole packet (other packets are set aside).
pub async fn next_event(client: &mut Client, name: &str) -> Packet {
    loop {
        let packet = client.expect_packet().await;
        if packet.event_name() == Some(name) {
            return packet;
        }
    }
}

/// The offset an event carries: its last argument, a string.
///
/// # Panics
/// When the event has no string offset as its third argument.
pub fn offset_of(packet: &Packet) -> String {
    let args = packet.data.as_ref().and_then(Value::as_array).expect("an event's arguments");
    assert_eq!(args.len(), 3, "event, data, offset: {}", packet.raw);
    args[2].as_str().map(str::to_owned).unwrap_or_else(|| panic!("a string offset: {}", packet.raw))
}
