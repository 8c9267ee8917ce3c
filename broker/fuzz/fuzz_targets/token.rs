//! Token extraction (`gateway::find_token` over the query, the
//! `Authorization` header and the CONNECT payload) and verification
//! (`Authenticator::authenticate`), on structured JWTs.
#![no_main]

use broker_fuzz::token::TokenCase;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: TokenCase| {
    let (query, authorization, connect) = case.render();
    let saved = serde_json::json!({ "query": query, "authorization": authorization, "connect": connect });
    broker_fuzz::save_rendered("token", saved.to_string().as_bytes());
    let _ = broker_fuzz::feed::token(&query, authorization.as_deref(), connect.as_deref());
});
