//! The chat gateway: the one module that knows chat semantics.
//!
//! It is a [`Handler`] for every chat namespace: the JWT middleware
//! (`authorize`), the events `join_room`, `leave_room` and `send_message`,
//! the notices `user_joined`, `user_left`, `status`, `message` and `error`,
//! the per-connection rate limit, and the revocation watcher that cuts off
//! sockets whose token is revoked while they are connected. Wire shapes and
//! error codes are those of `docs/protocol.md`.

#![warn(clippy::arithmetic_side_effects)]

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::value::RawValue;
use simd_json::BorrowedValue;
use simd_json::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auth::{AuthError, Authenticator, Claims, UserId};
use crate::config::Config;
use crate::engineio::{CloseReason, Handshake};
use crate::ids::RoomId;
use crate::metrics::{Limit, Metrics};
use crate::socketio::{
    Accepted, ConnectError, DisconnectReason, Event, Handler, IdPromise, JsonError, MessageId, Namespace,
    Socket, SocketIo,
};

/// Limits the gateway enforces on client input.
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// Largest `content`, in bytes (error 413 above).
    pub max_message_length: usize,
    /// Largest `roomId`, in bytes (error 400 above).
    pub max_room_id_length: usize,
    /// Rooms one socket may be in (error 429 on `join_room` above).
    pub max_rooms_per_socket: usize,
    /// Sustained events per second per connection; 0 = unlimited.
    pub rate_per_sec: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
}

impl From<&Config> for ChatLimits {
    fn from(config: &Config) -> Self {
        Self {
            max_message_length: config.max_message_length,
            max_room_id_length: config.max_room_id_length,
            max_rooms_per_socket: config.max_rooms_per_socket,
            rate_per_sec: config.rate_limit_per_sec,
            burst: config.rate_limit_burst,
        }
    }
}

/// A chat request from a client, its payload checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatRequest<'a> {
    /// `join_room`.
    Join(RoomId),
    /// `leave_room`.
    Leave(RoomId),
    /// `send_message`; `room` is `None` for "the room joined last".
    Send {
        /// The message text, not empty after trimming, within the limit.
        content: &'a str,
        /// The room named in the payload.
        room: Option<RoomId>,
    },
}

/// Checks an event's name and payload against the chat contract and
/// `limits`. Pure, for the fuzzer too: every input gives an answer.
///
/// # Errors
/// The [`ChatError`] answered to the client (400, 404 or 413).
pub fn parse_request<'a>(
    name: &str,
    args: &'a [BorrowedValue<'a>],
    limits: &ChatLimits,
) -> Result<ChatRequest<'a>, ChatError> {
    match name {
        "join_room" => room_arg(args, limits).map(ChatRequest::Join),
        "leave_room" => room_arg(args, limits).map(ChatRequest::Leave),
        "send_message" => {
            let payload = args
                .first()
                .and_then(ValueAsObject::as_object)
                .ok_or_else(|| ChatError::new(400, "send_message takes an object {content, roomId?}"))?;
            let content = payload
                .get("content")
                .and_then(ValueAsScalar::as_str)
                .ok_or_else(|| ChatError::new(400, "content must be a string"))?;
            if content.trim().is_empty() {
                return Err(ChatError::new(400, "content is empty"));
            }
            if content.len() > limits.max_message_length {
                return Err(ChatError::new(
                    413,
                    format!("content is longer than {} bytes", limits.max_message_length),
                ));
            }
            let room = payload.get("roomId").map(|value| room_id(value, limits)).transpose()?;
            Ok(ChatRequest::Send { content, room })
        }
        other => Err(ChatError::new(404, format!("Unknown event: {}", truncate(other, 64)))),
    }
}

/// Where the chat namespace takes a client's token from, in PROTOCOL's
/// order: the handshake query `token`, an `Authorization: Bearer` header,
/// the CONNECT payload's `token`.
#[must_use]
pub fn find_token<'a>(handshake: &'a Handshake, auth: Option<&'a BorrowedValue<'a>>) -> Option<&'a str> {
    let payload_token = auth.and_then(|value| value.get("token")).and_then(ValueAsScalar::as_str);
    handshake
        .query("token")
        .filter(|token| !token.is_empty())
        .or_else(|| handshake.bearer_token())
        .or(payload_token)
}

/// The chat application, shared by every chat namespace.
pub struct ChatGateway {
    auth: Arc<Authenticator>,
    limits: ChatLimits,
}

impl std::fmt::Debug for ChatGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatGateway").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Per-socket chat state.
struct ChatUser {
    /// With the token's digest, to check whole-token revocation while
    /// connected (the token itself is not kept).
    claims: Claims,
    limiter: Option<Mutex<RateLimiter>>,
}

/// An error answered to the sender: `error` event, and the ack if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatError {
    /// The error code of PROTOCOL's table.
    pub code: u16,
    /// A message for people.
    pub message: Cow<'static, str>,
}

impl ChatError {
    fn new(code: u16, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into() }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    message: &'a str,
    timestamp: u64,
}

/// `user_joined`/`user_left`. The user id is a [`UserId`], or for a member
/// of a node that died, the raw JSON that node kept of it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserNotice<'a, U: Serialize + ?Sized = UserId> {
    user_id: &'a U,
    room_id: &'a str,
    timestamp: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    room_id: &'a str,
    members: usize,
    joined: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomAck<'a> {
    room_id: &'a str,
    members: usize,
}

/// The data of a `message` event, as every member of the room gets it
/// (public so that the codec bench encodes the real thing).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut<'a> {
    /// The message id the adapter handed out.
    pub id: MessageId,
    /// The room it was sent to.
    pub room_id: &'a str,
    /// What the sender wrote.
    pub content: &'a str,
    /// The sender's `sub`, as the token holds it.
    pub sender_id: &'a UserId,
    /// When the broker took it, in ms since the Unix epoch.
    pub timestamp: u64,
}

#[derive(Serialize)]
struct MessageAck<'a> {
    id: &'a MessageId,
    timestamp: u64,
}

type Reply = Result<serde_json::Value, ChatError>;

impl ChatGateway {
    /// A gateway verifying tokens with `auth` and enforcing `config`'s limits.
    #[must_use]
    pub fn new(auth: Arc<Authenticator>, config: &Config) -> Self {
        Self { auth, limits: ChatLimits::from(config) }
    }

    fn dispatch(&self, socket: &Arc<Socket>, user: &ChatUser, event: &Event<'_>) {
        if let Some(limiter) = &user.limiter {
            match limiter.lock().check(std::time::Instant::now()) {
                Verdict::Allowed => {}
                Verdict::Limited => {
                    socket.namespace().metrics().refuse(Limit::EventRate);
                    return self.reply(socket, event.ack_id, Err(ChatError::new(429, "Too many requests")));
                }
                Verdict::Abusive => {
                    socket.namespace().metrics().refuse(Limit::EventRate);
                    self.reply(socket, event.ack_id, Err(ChatError::new(429, "Too many requests")));
                    warn!(sid = %socket.sid(), user = %user.claims.user_id.as_json(), "far over the rate limit, disconnecting");
                    socket.disconnect(CloseReason::PolicyViolation);
                    return;
                }
            }
        }
        let reply: Result<Option<serde_json::Value>, ChatError> = if event.attachments.is_empty() {
            parse_request(event.name, event.args, &self.limits).and_then(|request| match request {
                ChatRequest::Join(room) => {
                    let members = self.join(socket, user, &room)?;
                    Ok(self.answer_room(socket, event.ack_id, room, members, true))
                }
                ChatRequest::Leave(room) => {
                    let members = self.leave(socket, user, &room)?;
                    Ok(self.answer_room(socket, event.ack_id, room, members, false))
                }
                ChatRequest::Send { content, room } => {
                    self.send_message(socket, event.ack_id, user, content, room)
                }
            })
        } else {
            Err(ChatError::new(400, "Binary payloads are not accepted"))
        };
        // `None`: the answer is on its way (a cluster-wide count).
        if let Some(reply) = reply.transpose() {
            self.reply(socket, event.ack_id, reply);
        }
    }

    /// Sends `status` and the ack for a join (`joined`) or leave of `room`,
    /// with the room's members counted across the cluster. On a single node
    /// that is `local_members`, answered now (returned for the caller to
    /// ack); in a cluster the other nodes are asked first, and the answer is
    /// sent when they have answered (or timed out) and `None` returned.
    fn answer_room(
        &self,
        socket: &Arc<Socket>,
        ack_id: Option<u64>,
        room: RoomId,
        local_members: usize,
        joined: bool,
    ) -> Option<serde_json::Value> {
        let remote =
            socket.namespace().adapter().cluster().map(|cluster| cluster.remote_members(room.as_str()));
        let send = move |socket: &Socket, members: usize| {
            let _ = socket.emit("status", &Status { room_id: room.as_str(), members, joined });
            json(&RoomAck { room_id: room.as_str(), members })
        };
        let Some(remote) = remote else {
            return Some(send(socket, local_members));
        };
        let socket = Arc::clone(socket);
        tokio::spawn(async move {
            let remote = remote.await;
            let body = send(&socket, local_members.saturating_add(remote));
            if let Some(id) = ack_id {
                let _ = socket.ack(id, &body);
            }
        });
        None
    }

    fn reply(&self, socket: &Socket, ack_id: Option<u64>, reply: Reply) {
        match reply {
            Ok(body) => {
                if let Some(id) = ack_id {
                    let _ = socket.ack(id, &body);
                }
            }
            Err(error) => {
                let _ = socket.emit(
                    "error",
                    &ErrorBody { code: error.code, message: &error.message, timestamp: now_ms() },
                );
                if let Some(id) = ack_id {
                    let body =
                        serde_json::json!({ "error": { "code": error.code, "message": error.message } });
                    let _ = socket.ack(id, &body);
                }
            }
        }
    }

    /// Joins `room` and tells its other members; returns the members here.
    fn join(&self, socket: &Socket, user: &ChatUser, room: &RoomId) -> Result<usize, ChatError> {
        if socket.room_count() >= self.limits.max_rooms_per_socket && !socket.is_in(room.as_str()) {
            socket.namespace().metrics().refuse(Limit::RoomsPerSocket);
            return Err(ChatError::new(
                429,
                format!("Too many rooms: at most {} per connection", self.limits.max_rooms_per_socket),
            ));
        }
        let notice =
            UserNotice { user_id: &user.claims.user_id, room_id: room.as_str(), timestamp: now_ms() };
        Ok(socket.join(room, "user_joined", |_| Some(notice)).members)
    }

    /// Leaves `room` and tells those left; returns the members left here.
    fn leave(&self, socket: &Socket, user: &ChatUser, room: &RoomId) -> Result<usize, ChatError> {
        self.leave_and_notify(socket, user, room.as_str())
            .ok_or_else(|| ChatError::new(404, "Not a member of this room"))
    }

    /// Leaves `room` and sends `user_left` to the members left (no `status`
    /// to the leaver: callers decide that). `None` if not a member.
    fn leave_and_notify(&self, socket: &Socket, user: &ChatUser, room: &str) -> Option<usize> {
        let notice = UserNotice { user_id: &user.claims.user_id, room_id: room, timestamp: now_ms() };
        socket.leave(room, "user_left", |_| Some(notice))
    }

    /// Sends `content` to `room` (the last joined when `None`). Returns the
    /// ack's body, or `None` when the id comes from Redis and the ack is
    /// sent once it has.
    fn send_message(
        &self,
        socket: &Arc<Socket>,
        ack_id: Option<u64>,
        user: &ChatUser,
        content: &str,
        room: Option<RoomId>,
    ) -> Result<Option<serde_json::Value>, ChatError> {
        let room = match room {
            None => socket.last_room().ok_or_else(|| ChatError::new(400, "No room joined: give a roomId"))?,
            Some(room) => room,
        };
        if !socket.is_in(room.as_str()) {
            return Err(ChatError::new(403, "Not a member of this room"));
        }

        let namespace = socket.namespace();
        let timestamp = now_ms();
        let sent = namespace.adapter().send_message(room.as_str(), "message", |id| MessageOut {
            id: id.clone(),
            room_id: room.as_str(),
            content,
            sender_id: &user.claims.user_id,
            timestamp,
        });
        let (delivered, id) = sent.ok_or_else(|| ChatError::new(403, "Not a member of this room"))?;
        Metrics::add(&namespace.metrics().messages, 1);
        Metrics::add(&namespace.metrics().deliveries, delivered as u64);
        match id {
            IdPromise::Ready(id) => Ok(Some(json(&MessageAck { id: &id, timestamp }))),
            IdPromise::Pending(id) => {
                let socket = Arc::clone(socket);
                tokio::spawn(async move {
                    let id = id.await;
                    if let Some(ack_id) = ack_id {
                        let _ = socket.ack(ack_id, &MessageAck { id: &id, timestamp });
                    }
                });
                Ok(None)
            }
        }
    }

    fn authenticate(
        &self,
        handshake: &Handshake,
        auth: Option<&BorrowedValue<'_>>,
    ) -> Result<Claims, AuthError> {
        let token = find_token(handshake, auth).ok_or(AuthError::Missing)?;
        self.auth.authenticate(token)
    }

    /// Re-checks every connected socket against the revocation list and cuts
    /// off those whose token is now revoked.
    pub fn enforce_revocations(&self, io: &SocketIo) {
        let revocations = self.auth.revocations();
        for namespace in io.namespaces() {
            for socket in namespace.sockets() {
                let Some(user) = socket.data::<ChatUser>() else { continue };
                if revocations.is_revoked(user.claims.token_digest, user.claims.jti.as_deref()) {
                    info!(sid = %socket.sid(), user = %user.claims.user_id.as_json(), "token revoked while connected");
                    self.reply(&socket, None, Err(ChatError::new(401, "Token revoked")));
                    socket.disconnect(CloseReason::PolicyViolation);
                }
            }
        }
    }
}

impl Handler for ChatGateway {
    fn authorize(
        &self,
        handshake: &Handshake,
        auth: Option<&BorrowedValue<'_>>,
    ) -> Result<Accepted, ConnectError> {
        match self.authenticate(handshake, auth) {
            Ok(claims) => {
                // An expiry too far off for the clock to hold is no expiry.
                let expires_at = claims.expires_at.and_then(|at| {
                    let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                    tokio::time::Instant::now().checked_add(left)
                });
                let limiter = (self.limits.rate_per_sec > 0)
                    .then(|| Mutex::new(RateLimiter::new(self.limits.rate_per_sec, self.limits.burst)));
                // The user id as the token holds it (`42` and `"42"` differ):
                // a suspended session is recovered only by its own user.
                let owner = Some(claims.user_id.as_json().to_owned());
                Ok(Accepted { data: Box::new(ChatUser { claims, limiter }), expires_at, owner })
            }
            Err(error) => {
                info!(remote = ?handshake.remote, reason = %error, "authentication refused");
                let message =
                    if matches!(error, AuthError::Revoked) { "Token revoked" } else { "Unauthorized" };
                Err(ConnectError {
                    message: message.to_owned(),
                    data: Some(serde_json::json!({ "code": 401 })),
                })
            }
        }
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        let Some(user) = socket.data::<ChatUser>() else { return };
        info!(
            sid = %socket.sid(),
            namespace = socket.namespace().name(),
            user = %user.claims.user_id.as_json(),
            name = user.claims.name.as_deref().unwrap_or(""),
            "connected"
        );
        if let Some(room) = socket.handshake().query("roomId") {
            let joined = room_id_str(room, &self.limits)
                .and_then(|room| self.join(socket, user, &room).map(|members| (room, members)));
            match joined {
                Ok((room, members)) => {
                    self.answer_room(socket, None, room, members, true);
                }
                Err(error) => self.reply(socket, None, Err(error)),
            }
        }
    }

    fn on_recover(&self, socket: &Arc<Socket>) {
        let Some(user) = socket.data::<ChatUser>() else { return };
        info!(
            sid = %socket.sid(),
            namespace = socket.namespace().name(),
            user = %user.claims.user_id.as_json(),
            rooms = socket.room_count(),
            "recovered"
        );
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event<'_>) {
        let Some(user) = socket.data::<ChatUser>() else { return };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.dispatch(socket, user, &event)));
        if outcome.is_err() {
            error!(sid = %socket.sid(), event = truncate(event.name, 64), "event handler panicked");
            self.reply(socket, event.ack_id, Err(ChatError::new(500, "Internal error")));
        }
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let Some(user) = socket.data::<ChatUser>() else { return };
        for room in socket.rooms() {
            self.leave_and_notify(socket, user, room.as_str());
        }
        let reason = match reason {
            DisconnectReason::ClientDisconnect => "client disconnect",
            DisconnectReason::SessionClosed(reason) => reason.as_str(),
        };
        info!(sid = %socket.sid(), user = %user.claims.user_id.as_json(), reason, "disconnected");
    }

    fn presence(&self, socket: &Socket) -> Option<Box<RawValue>> {
        socket.data::<ChatUser>().map(|user| user.claims.user_id.to_raw())
    }

    fn on_members_lost(&self, namespace: &Namespace, room: &str, presences: &[Box<RawValue>]) {
        notify_here(namespace, room, presences, "user_left");
    }

    fn on_members_found(&self, namespace: &Namespace, room: &str, presences: &[Box<RawValue>]) {
        notify_here(namespace, room, presences, "user_joined");
    }

    fn on_refused_event(&self, socket: &Arc<Socket>, ack_id: Option<u64>, error: JsonError) {
        self.reply(socket, ack_id, Err(ChatError::new(400, format!("Bad request: {error}"))));
    }

    fn on_expired(&self, socket: &Arc<Socket>) {
        if let Some(user) = socket.data::<ChatUser>() {
            info!(sid = %socket.sid(), user = %user.claims.user_id.as_json(), "token expired while connected");
        }
        self.reply(socket, None, Err(ChatError::new(401, "Token expired")));
    }
}

/// Sends `event` (`user_joined`/`user_left`) for each of another node's
/// members (`presences`: their user ids) to this node's members of `room`.
fn notify_here(namespace: &Namespace, room: &str, presences: &[Box<RawValue>], event: &str) {
    let timestamp = now_ms();
    for user_id in presences {
        let notice = UserNotice { user_id: &**user_id, room_id: room, timestamp };
        let delivered = namespace.adapter().broadcast_here(room, event, &notice).unwrap_or(0);
        Metrics::add(&namespace.metrics().deliveries, delivered as u64);
    }
}

/// Polls the revocation file every `interval`; when it changed, reloads it
/// and cuts off connected sockets whose token it now revokes.
pub async fn watch_revocations(
    gateway: Arc<ChatGateway>,
    io: SocketIo,
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let stamp = |path: &PathBuf| std::fs::metadata(path).ok().map(|meta| (meta.modified().ok(), meta.len()));
    let mut seen = stamp(&path);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match crate::auth::RevocationList::read(&path) {
            Ok(entries) => {
                info!(path = %path.display(), entries = entries.len(), "revocation list reloaded");
                gateway.auth.revocations().replace(entries);
                gateway.enforce_revocations(&io);
            }
            Err(error) => {
                warn!(path = %path.display(), %error, "revocation file unreadable, keeping the old list")
            }
        }
    }
}

fn room_arg(args: &[BorrowedValue<'_>], limits: &ChatLimits) -> Result<RoomId, ChatError> {
    let room = args
        .first()
        .and_then(|payload| payload.get("roomId"))
        .ok_or_else(|| ChatError::new(400, "payload must be an object {roomId}"))?;
    room_id(room, limits)
}

fn room_id(value: &BorrowedValue<'_>, limits: &ChatLimits) -> Result<RoomId, ChatError> {
    room_id_str(value.as_str().ok_or_else(|| ChatError::new(400, "roomId must be a string"))?, limits)
}

fn room_id_str(room: &str, limits: &ChatLimits) -> Result<RoomId, ChatError> {
    if room.trim().is_empty() {
        return Err(ChatError::new(400, "roomId is empty"));
    }
    if room.len() > limits.max_room_id_length {
        return Err(ChatError::new(
            400,
            format!("roomId is longer than {} bytes", limits.max_room_id_length),
        ));
    }
    Ok(RoomId::from(room))
}

#[allow(clippy::expect_used, reason = "the ack bodies are the gateway's own structs of strings and numbers")]
fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("ack bodies serialize")
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0)
}

fn truncate(text: &str, max: usize) -> &str {
    // 0 is always a boundary, so the search always ends.
    let end = (0..=text.len().min(max)).rev().find(|&end| text.is_char_boundary(end)).unwrap_or(0);
    text.get(..end).unwrap_or("")
}

/// The answer of the rate limiter to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// Over the rate: refuse with 429.
    Limited,
    /// Refused faster than a second bucket refills: disconnect.
    Abusive,
}

/// A token bucket: `rate` events per second sustained, `burst` above it.
///
/// Refusals draw on a second bucket of the same size and rate: a client that
/// keeps sending at up to twice the rate is only refused, one that sends
/// faster (or a burst of refusals beyond `burst`) empties it and is cut off.
/// Both buckets count arrivals over time, so how fast this broker happens to
/// read a flood (a loaded machine reads it slower) does not decide whether
/// the flood is abusive; a count of refusals in a row did, since one
/// allowed event every `1/rate` reset it.
#[derive(Debug)]
struct RateLimiter {
    tokens: f64,
    strikes: f64,
    rate: f64,
    burst: f64,
    last: std::time::Instant,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { tokens: burst, strikes: burst, rate: f64::from(rate), burst, last: std::time::Instant::now() }
    }

    fn check(&mut self, now: std::time::Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let refill = elapsed * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.strikes = (self.strikes + refill).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        if self.strikes >= 1.0 {
            self.strikes -= 1.0;
            return Verdict::Limited;
        }
        Verdict::Abusive
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn rate_limiter_allows_a_burst_then_limits_then_cuts_off() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 5);
        let verdicts: Vec<Verdict> = (0..12).map(|_| limiter.check(start)).collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Allowed));
        assert!(verdicts[5..10].iter().all(|v| *v == Verdict::Limited));
        assert_eq!(verdicts[10], Verdict::Abusive);
    }

    #[test]
    fn rate_limiter_refills_at_the_sustained_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 1);
        assert_eq!(limiter.check(start), Verdict::Allowed);
        assert_eq!(limiter.check(start), Verdict::Limited);
        assert_eq!(limiter.check(start + Duration::from_millis(100)), Verdict::Allowed);
    }

    #[test]
    fn twice_the_rate_is_refused_and_more_is_cut_off_however_fast_it_is_read() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(100, 200);
        // 200 events every second, one every 5 ms: half refused, for ever.
        let steady: Vec<Verdict> =
            (0..4000u64).map(|i| limiter.check(start + Duration::from_millis(5 * i))).collect();
        assert!(steady.contains(&Verdict::Limited));
        assert!(!steady.contains(&Verdict::Abusive));
        // A flood read 150 events per 10 ms (a slow reader) is still cut off,
        // though an event is allowed every 10 ms.
        let later = start + Duration::from_secs(30);
        let mut limiter = RateLimiter::new(100, 200);
        let flood = (0..3000u64).map(|i| limiter.check(later + Duration::from_micros(i * 10_000 / 150)));
        assert!(flood.into_iter().any(|v| v == Verdict::Abusive));
    }

    #[test]
    fn room_ids_are_checked() {
        let limits = ChatLimits {
            max_message_length: 10,
            max_room_id_length: 4,
            max_rooms_per_socket: 1,
            rate_per_sec: 0,
            burst: 0,
        };
        assert!(room_id_str("abcd", &limits).is_ok());
        assert_eq!(room_id_str("abcde", &limits).map_err(|e| e.code).err(), Some(400));
        assert_eq!(room_id_str("  ", &limits).map_err(|e| e.code).err(), Some(400));
    }
}
