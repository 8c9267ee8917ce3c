//! Test support for the broker's integration tests: a real broker on
//! `127.0.0.1:0` ([`TestServer`]), JWTs minted like a real issuer would
//! ([`TokenBuilder`]), a raw Socket.IO v5 / Engine.IO v4 client that speaks the
//! wire strings of PROTOCOL.md ([`Client`]), and a bare HTTP/1.1 client for the
//! handshake refusals ([`http`]).
//!
//! Every wait is bounded by [`WAIT`] (or the client's own wait) and fails the
//! test with a message that says what was awaited and what arrived instead.
//! Nothing here sleeps to wait for something.

pub mod client;
pub mod conformance;
pub mod engine;
pub mod http;
pub mod recovery;
pub mod redis;
pub mod revocation;
pub mod server;
pub mod token;

pub use client::{Client, ClientBuilder, Closed, Packet, PacketKind, Refusal, TokenSource};
pub use revocation::RevocationFile;
pub use server::{CHAT, TEST_SECRET, TestServer, WAIT};
pub use token::{KeyKind, TokenBuilder, public_key_file, token};

/// Re-exported so test files need no direct dependency to build configs.
pub use broker::Config;
pub use broker::config::JwtAlgorithm;
pub use serde_json::{Value, json};

/// Proves the server still serves chat: two fresh users join a fresh room,
/// one sends, both receive it.
pub async fn assert_server_still_chats(server: &TestServer) {
    static ROOMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let room = format!("still-chatting-{}", ROOMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut alice = Client::connect_user(server, "still-alice").await;
    let mut bob = Client::connect_user(server, "still-bob").await;
    alice.join(&room).await;
    bob.join(&room).await;
    alice.send(&room, "still here").await;
    let seen_by_bob = bob.expect_message("still here").await;
    assert_eq!(seen_by_bob["senderId"], "still-alice");
    alice.expect_message("still here").await;
}
