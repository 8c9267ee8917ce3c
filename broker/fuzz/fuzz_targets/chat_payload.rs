//! The chat payload validation (`gateway::parse_request` after the checked
//! JSON parse and `socketio::split_event`), on structured chat events.
#![no_main]

use broker_fuzz::chat::ChatPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: ChatPayload| {
    let text = payload.render();
    broker_fuzz::save_rendered("chat_payload", text.as_bytes());
    let _ = broker_fuzz::feed::chat_payload(&text);
});
