//! Engine.IO text frame -> Socket.IO packet -> checked JSON parse of the
//! payload, on structured frames (deep nesting, huge numbers, odd Unicode,
//! attachment counts, ack ids) or on any text.
#![no_main]

use broker_fuzz::packet::TextFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: TextFrame| {
    let text = frame.render();
    broker_fuzz::save_rendered("engineio_socketio", text.as_bytes());
    let _ = broker_fuzz::feed::engineio_socketio(&text);
});
