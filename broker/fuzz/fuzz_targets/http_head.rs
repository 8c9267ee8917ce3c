//! The HTTP request head parser (`http::parse_head`), then the query string
//! and bearer token as the upgrade reads them.
#![no_main]

use broker_fuzz::head::RequestHead;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|head: RequestHead| {
    let bytes = head.render();
    broker_fuzz::save_rendered("http_head", &bytes);
    let _ = broker_fuzz::feed::http_head(&bytes);
});
