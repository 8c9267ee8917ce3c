//! The checked JSON parse of client payloads (`json::parse` and
//! `json::parse_owned`), on structured JSON or any text.
#![no_main]

use broker_fuzz::json::Json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: Json| {
    let text = value.render();
    broker_fuzz::save_rendered("json", text.as_bytes());
    let _ = broker_fuzz::feed::json(&text);
});
