//! Suspended sessions of connection state recovery, kept in Redis so that a
//! client which dropped on one broker can be recognised by another.
//!
//! The key and the value follow socket.io's streams adapter
//! (`@socket.io/redis-streams-adapter`): the key is `sio:session:<pid>`, the
//! value the standard base64 of a MessagePack map `{sid, pid, rooms, data}`,
//! set with an expiry of the recovery window (`SET … PX`). What socket.io
//! keeps in `data` (the socket's `data`) this broker does not have; it keeps
//! there what its own checks need: the user (`sub`), the last offset the
//! session was sent, the first offset it could have been sent, and when its
//! window closes.
//!
//! A session is taken with `GETDEL`, one atomic step, so of any number of
//! CONNECTs with the same `pid`, on any brokers, one gets it.
//!
//! This module is the store (codec and the three commands, tested against
//! Redis in `tests/tests/recovery_redis.rs`); the Socket.IO layer's recovery
//! stores a session here when its connection drops and looks one up when a
//! CONNECT brings a `pid` (see `socketio/recovery.rs`).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::ids::Pid;

/// Longest wait for Redis when a CONNECT looks a session up: past it the
/// client gets a fresh session.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The key prefix, the streams adapter's default `sessionKeyPrefix`.
pub const KEY_PREFIX: &str = "sio:session:";

/// The Redis key of the session `pid`.
#[must_use]
pub fn key(pid: Pid) -> String {
    format!("{KEY_PREFIX}{pid}")
}

/// A suspended session as stored: socket.io's `{sid, pid, rooms, data}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The socket id the client gets back.
    pub sid: String,
    /// The private session id the client presents.
    pub pid: String,
    /// The rooms the socket was in.
    pub rooms: Vec<String>,
    /// What this broker checks before a recovery.
    pub data: SessionData,
}

/// The broker's own part of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// The user the session belongs to (the token's `sub`), if any.
    pub sub: Option<String>,
    /// The highest offset the session was sent, as the client holds it.
    pub offset: Option<String>,
    /// The first offset the session could have been sent.
    pub since: u64,
    /// When its window closes, in ms since the Unix epoch.
    #[serde(rename = "expiresAt")]
    pub expires_at_ms: u64,
    /// For each of `rooms`, in order, the first offset the session was
    /// owed there (what came before it joined is not for it).
    #[serde(rename = "roomsSince", default)]
    pub rooms_since: Vec<u64>,
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Not standard base64.
    #[error("stored session is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not the MessagePack map this broker writes.
    #[error("stored session is not a session: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// Could not be encoded.
    #[error("session could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

impl StoredSession {
    /// The value stored: base64 of a MessagePack map with named fields.
    ///
    /// # Errors
    /// [`SessionError::Encode`] (not expected for these plain fields).
    pub fn encode(&self) -> Result<String, SessionError> {
        Ok(STANDARD.encode(rmp_serde::to_vec_named(self)?))
    }

    /// Reads a stored value back.
    ///
    /// # Errors
    /// [`SessionError`] when the value is not one this broker wrote.
    pub fn decode(value: &[u8]) -> Result<Self, SessionError> {
        Ok(rmp_serde::from_slice(&STANDARD.decode(value)?)?)
    }
}

/// Stores `session` for `window` (at least a millisecond), replacing any
/// session stored under the same `pid`.
///
/// # Errors
/// When Redis fails or cannot be reached; an encoding failure is a
/// [`redis::ErrorKind::Client`] error.
pub async fn store(
    commands: &mut impl redis::aio::ConnectionLike,
    session: &StoredSession,
    window: Duration,
) -> redis::RedisResult<()> {
    let value = session.encode().map_err(|error| {
        redis::RedisError::from((redis::ErrorKind::Client, "session not encodable", error.to_string()))
    })?;
    let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    redis::cmd("SET")
        .arg(format!("{KEY_PREFIX}{}", session.pid))
        .arg(value)
        .arg("PX")
        .arg(millis)
        .query_async(commands)
        .await
}

/// Takes the session `pid` out of Redis in one step (`GETDEL`): of any
/// number of callers, on any brokers, one gets it. `None` when there is
/// none (never stored, expired, taken already, or a value this broker did
/// not write, which is dropped too).
///
/// # Errors
/// When Redis fails or cannot be reached.
pub async fn take(
    commands: &mut impl redis::aio::ConnectionLike,
    pid: Pid,
) -> redis::RedisResult<Option<StoredSession>> {
    let value: Option<Vec<u8>> = redis::cmd("GETDEL").arg(key(pid)).query_async(commands).await?;
    Ok(value.and_then(|value| match StoredSession::decode(&value) {
        Ok(session) => Some(session),
        Err(error) => {
            tracing::warn!(%error, "unreadable session in Redis, dropped");
            None
        }
    }))
}

/// Deletes the session `pid` (a session recovered on its own broker).
///
/// # Errors
/// When Redis fails or cannot be reached.
pub async fn discard(commands: &mut impl redis::aio::ConnectionLike, pid: Pid) -> redis::RedisResult<()> {
    redis::cmd("DEL").arg(key(pid)).query_async::<()>(commands).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> StoredSession {
        StoredSession {
            sid: "AbCdEfGhIjK".to_owned(),
            pid: Pid::random().to_string(),
            rooms: vec!["general".to_owned(), "random".to_owned()],
            data: SessionData {
                sub: Some("alice".to_owned()),
                offset: Some("1764490000123456".to_owned()),
                since: 1_764_490_000_000_000,
                expires_at_ms: 1_764_490_120_000,
                rooms_since: vec![1_764_490_000_000_001, 1_764_490_000_000_002],
            },
        }
    }

    #[test]
    fn a_session_reads_back_as_written() {
        let session = session();
        let value = session.encode().expect("encodable");
        assert_eq!(StoredSession::decode(value.as_bytes()).expect("decodable"), session);
    }

    #[test]
    fn the_value_is_base64_of_a_msgpack_map_with_socket_io_field_names() {
        let value = session().encode().expect("encodable");
        let bytes = STANDARD.decode(value).expect("base64");
        let map = rmpv::decode::read_value(&mut bytes.as_slice()).expect("msgpack");
        let rmpv::Value::Map(fields) = map else { panic!("not a map: {map:?}") };
        let names: Vec<_> = fields.iter().filter_map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["sid", "pid", "rooms", "data"]);
    }

    #[test]
    fn a_value_this_broker_did_not_write_is_refused() {
        assert!(StoredSession::decode(b"not base64!").is_err());
        assert!(StoredSession::decode(STANDARD.encode([0xc1]).as_bytes()).is_err());
    }

    #[test]
    fn the_key_is_the_streams_adapters() {
        let pid = Pid::random();
        assert_eq!(key(pid), format!("sio:session:{pid}"));
    }
}
