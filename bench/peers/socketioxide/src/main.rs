//! The chat contract of `shared/PROTOCOL.md`, written on socketioxide with its
//! own API: a connect middleware for JWT auth, the local adapter's rooms,
//! `socket.on` handlers with `AckSender`, `on_fallback` for unknown events and
//! `on_disconnect` for the `user_left` notices.
//!
//! Env: `PORT` (default 3002, 0 allowed), `HOST` (default 127.0.0.1),
//! `JWT_SECRET` (required), `MAX_BUFFER_SIZE` (socketioxide's per-socket
//! packet buffer, default 128 as the library's). Prints `listening on HOST:PORT` once bound;
//! SIGTERM/SIGINT close every socket and exit 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use socketioxide::extract::{AckSender, Event, Extension, MaybeExtension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{BroadcastError, SendError, SocketError, SocketIo, TransportType};

/// The chat namespace.
const NAMESPACE: &str = "/api/v1/chat";
/// Longest `content`, in UTF-8 bytes (the protocol default).
const MAX_CONTENT_BYTES: usize = 4096;
/// Longest `roomId`, in bytes (the broker's default).
const MAX_ROOM_ID_BYTES: usize = 128;
/// Leeway on `exp` / `nbf`, in seconds (the broker's default).
const JWT_LEEWAY_SECS: u64 = 5;
/// Shards of the per-room send lock (see [`App::room_lock`]).
const ROOM_LOCK_SHARDS: usize = 64;

/// Shared state, handed to handlers by socketioxide's `State` extractor.
struct App {
    key: DecodingKey,
    validation: Validation,
    /// Message ids: one counter for the process, started at the boot time in
    /// microseconds so ids stay unique across restarts too.
    next_id: AtomicU64,
    /// A message id is taken and its broadcast made under the lock of its
    /// room's shard, so members receive a room's messages in id order.
    room_locks: Vec<tokio::sync::Mutex<()>>,
}

impl App {
    fn room_lock(&self, room: &str) -> &tokio::sync::Mutex<()> {
        // FNV-1a: cheap and stable; only spreads rooms over the shards.
        let hash = room
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        &self.room_locks[(hash % ROOM_LOCK_SHARDS as u64) as usize]
    }
}

/// Per-socket data, kept in the socket's extensions.
struct Session {
    /// The `sub` claim exactly as the token holds it (string or number).
    sub: Value,
    /// Rooms joined and not left, oldest first.
    rooms: Mutex<Vec<String>>,
    /// The task that ends the session when the token expires.
    expiry: Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<Value>,
    exp: Option<f64>,
}

/// A chat error: emitted as `error` and, with an ack, acked as `{"error":…}`.
struct ChatError {
    code: u16,
    message: String,
}

impl ChatError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The connect middleware's refusal. socketioxide writes it as
/// `{"message": <Display>}`: it has no way to add `data`.
#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unauthorized")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notice<'a> {
    user_id: &'a Value,
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    id: &'a str,
    room_id: &'a str,
    content: &'a str,
    sender_id: &'a Value,
    timestamp: u64,
}

/// Packets socketioxide refused because a socket's buffer
/// (`max_buffer_size`) was full: they are dropped, not delivered. Reported on
/// stderr at shutdown.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Counts what an emit dropped for a full buffer (a closed socket is not a drop).
fn sent(result: Result<(), SendError>) {
    if let Err(SendError::Socket(SocketError::InternalChannelFull)) = result {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Same for a broadcast: one count per socket whose buffer was full.
fn broadcast(result: Result<(), BroadcastError>) {
    if let Err(BroadcastError::Socket(errors)) = result {
        let full = errors.iter().filter(|e| matches!(e, SocketError::InternalChannelFull)).count();
        DROPPED.fetch_add(full as u64, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Answers an event: the result on its ack, or the error as an `error` event
/// to the sender and on the ack.
fn reply(socket: &SocketRef, ack: AckSender, result: Result<Value, ChatError>) {
    match result {
        Ok(body) => {
            sent(ack.send(&body));
        }
        Err(error) => {
            sent(socket.emit(
                "error",
                &json!({ "code": error.code, "message": error.message, "timestamp": now_ms() }),
            ));
            sent(ack.send(&json!({ "error": { "code": error.code, "message": error.message } })));
        }
    }
}

fn payload_object(data: Result<Value, impl Sized>, shape: &str) -> Result<Map<String, Value>, ChatError> {
    match data {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ChatError::new(400, format!("expected an object {shape}"))),
    }
}

fn room_id(value: Option<&Value>) -> Result<String, ChatError> {
    let room = value.and_then(Value::as_str).ok_or_else(|| ChatError::new(400, "roomId must be a string"))?;
    if room.trim().is_empty() {
        return Err(ChatError::new(400, "roomId is empty"));
    }
    if room.len() > MAX_ROOM_ID_BYTES {
        return Err(ChatError::new(400, format!("roomId is longer than {MAX_ROOM_ID_BYTES} bytes")));
    }
    Ok(room.to_owned())
}

// ------------------------------------------------------------------ auth

/// The token: the handshake query `token`, else `Authorization: Bearer`,
/// else the CONNECT payload's `token`.
fn find_token(socket: &SocketRef, auth: Option<&Value>) -> Option<String> {
    let parts = socket.req_parts();
    if let Some(query) = parts.uri.query() {
        let from_query = form_urlencoded::parse(query.as_bytes())
            .find(|(key, value)| key == "token" && !value.is_empty())
            .map(|(_, value)| value.into_owned());
        if from_query.is_some() {
            return from_query;
        }
    }
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|header| header.to_str().ok())
        .and_then(|h| h.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| &h[7..]));
    if let Some(token) = bearer {
        return Some(token.trim().to_owned());
    }
    auth.and_then(|auth| auth.get("token")).and_then(Value::as_str).map(str::to_owned)
}

/// Connect middleware: runs before the namespace accepts the client.
async fn authenticate(
    socket: SocketRef,
    State(app): State<Arc<App>>,
    TryData(auth): TryData<Value>,
) -> Result<(), Unauthorized> {
    let token = find_token(&socket, auth.as_ref().ok()).filter(|t| !t.is_empty()).ok_or(Unauthorized)?;
    let claims = jsonwebtoken::decode::<RawClaims>(&token, &app.key, &app.validation)
        .map_err(|_| Unauthorized)?
        .claims;
    let sub = match claims.sub {
        Some(sub @ (Value::String(_) | Value::Number(_))) => sub,
        _ => return Err(Unauthorized),
    };
    let session = Arc::new(Session { sub, rooms: Mutex::new(Vec::new()), expiry: Mutex::new(None) });
    if let Some(exp) = claims.exp.filter(|exp| exp.is_finite() && *exp >= 0.0) {
        // 401 while connected: emitted when the token expires, then disconnected.
        let expires = UNIX_EPOCH + Duration::from_secs_f64(exp) + Duration::from_secs(JWT_LEEWAY_SECS);
        let left = expires.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        let expiring = socket.clone();
        let task =
            tokio::spawn(async move {
                tokio::time::sleep(left).await;
                sent(expiring.emit(
                    "error",
                    &json!({ "code": 401, "message": "Token expired", "timestamp": now_ms() }),
                ));
                expiring.disconnect().ok();
            });
        *session.expiry.lock().unwrap() = Some(task.abort_handle());
    }
    socket.extensions.insert(session);
    Ok(())
}

// ------------------------------------------------------------------ rooms

/// Sockets in `room` (the local adapter's count, the socket itself included).
fn members(socket: &SocketRef, room: &str) -> usize {
    socket.within(room.to_owned()).sockets().len()
}

/// Adds the socket to `room`; false if it was a member already.
fn enter(socket: &SocketRef, session: &Session, room: &str) -> bool {
    let is_new = {
        let mut rooms = session.rooms.lock().unwrap();
        let is_new = !rooms.iter().any(|r| r == room);
        if is_new {
            rooms.push(room.to_owned());
        }
        is_new
    };
    if is_new {
        socket.join(room.to_owned());
    }
    is_new
}

/// After a join: `status` to the joiner, and `user_joined` to the others
/// when the socket is new in the room. Returns the member count.
async fn announce_join(socket: &SocketRef, session: &Session, room: &str, is_new: bool) -> usize {
    let count = members(socket, room);
    sent(socket.emit("status", &Status { room_id: room, members: count, joined: true }));
    if is_new {
        let notice = Notice { user_id: &session.sub, room_id: room, timestamp: now_ms() };
        broadcast(socket.to(room.to_owned()).emit("user_joined", &notice).await);
    }
    count
}

/// The handshake query's `roomId`, if it is a valid room id.
fn handshake_room(socket: &SocketRef) -> Option<String> {
    let query = socket.req_parts().uri.query()?;
    let (_, room) = form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "roomId")?;
    room_id(Some(&Value::String(room.into_owned()))).ok()
}

/// Second connect middleware, after `authenticate`. socketioxide sends the
/// CONNECT packet after the middlewares and then *spawns* the connect
/// handler, so handlers registered there can miss the client's first events.
/// Registering them here, before CONNECT, closes that race; the handshake
/// room is joined here for the same reason (its notices go out in
/// `on_connect`, once the socket may emit).
async fn prepare(socket: SocketRef, Extension(session): Extension<Arc<Session>>) -> Result<(), Unauthorized> {
    socket.on("join_room", join_room);
    socket.on("leave_room", leave_room);
    socket.on("send_message", send_message);
    socket.on_fallback(unknown_event);
    socket.on_disconnect(on_disconnect);
    if let Some(room) = handshake_room(&socket) {
        let is_new = enter(&socket, &session, &room);
        socket.extensions.insert(HandshakeRoom(room, is_new));
    }
    Ok(())
}

/// The room joined by the handshake query, and whether it was new.
#[derive(Clone)]
struct HandshakeRoom(String, bool);

async fn on_connect(
    socket: SocketRef,
    Extension(session): Extension<Arc<Session>>,
    MaybeExtension(room): MaybeExtension<HandshakeRoom>,
) {
    if let Some(HandshakeRoom(room, is_new)) = room {
        socket.extensions.remove::<HandshakeRoom>();
        announce_join(&socket, &session, &room, is_new).await;
    }
}

async fn join_room(
    socket: SocketRef,
    Extension(session): Extension<Arc<Session>>,
    TryData(data): TryData<Value>,
    ack: AckSender,
) {
    let result = async {
        let payload = payload_object(data, "{roomId}")?;
        let room = room_id(payload.get("roomId"))?;
        let is_new = enter(&socket, &session, &room);
        let count = announce_join(&socket, &session, &room, is_new).await;
        Ok(json!(RoomAck { room_id: &room, members: count }))
    }
    .await;
    reply(&socket, ack, result);
}

async fn leave_room(
    socket: SocketRef,
    Extension(session): Extension<Arc<Session>>,
    TryData(data): TryData<Value>,
    ack: AckSender,
) {
    let result = async {
        let payload = payload_object(data, "{roomId}")?;
        let room = room_id(payload.get("roomId"))?;
        let was_member = {
            let mut rooms = session.rooms.lock().unwrap();
            let before = rooms.len();
            rooms.retain(|r| *r != room);
            rooms.len() != before
        };
        if !was_member {
            return Err(ChatError::new(404, "Not a member of this room"));
        }
        socket.leave(room.clone());
        let count = members(&socket, &room);
        let notice = Notice { user_id: &session.sub, room_id: &room, timestamp: now_ms() };
        broadcast(socket.to(room.clone()).emit("user_left", &notice).await);
        sent(socket.emit("status", &Status { room_id: &room, members: count, joined: false }));
        Ok(json!(RoomAck { room_id: &room, members: count }))
    }
    .await;
    reply(&socket, ack, result);
}

async fn send_message(
    socket: SocketRef,
    State(app): State<Arc<App>>,
    Extension(session): Extension<Arc<Session>>,
    TryData(data): TryData<Value>,
    ack: AckSender,
) {
    let result = async {
        let payload = payload_object(data, "{content, roomId?}")?;
        let content = payload
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| ChatError::new(400, "content must be a string"))?;
        if content.trim().is_empty() {
            return Err(ChatError::new(400, "content is empty"));
        }
        if content.len() > MAX_CONTENT_BYTES {
            return Err(ChatError::new(413, format!("content is longer than {MAX_CONTENT_BYTES} bytes")));
        }
        let room = match payload.get("roomId") {
            None => session
                .rooms
                .lock()
                .unwrap()
                .last()
                .cloned()
                .ok_or_else(|| ChatError::new(400, "No room joined: give a roomId"))?,
            Some(value) => room_id(Some(value))?,
        };
        if !session.rooms.lock().unwrap().contains(&room) {
            return Err(ChatError::new(403, "Not a member of this room"));
        }
        let timestamp = now_ms();
        let _ordered = app.room_lock(&room).lock().await;
        let id = app.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let message = Message { id: &id, room_id: &room, content, sender_id: &session.sub, timestamp };
        // `within` (not `to`): the sender included. Its copy is queued on its
        // socket before the ack is.
        broadcast(socket.within(room.clone()).emit("message", &message).await);
        Ok(json!({ "id": id, "timestamp": timestamp }))
    }
    .await;
    reply(&socket, ack, result);
}

async fn unknown_event(socket: SocketRef, Event(event): Event, ack: AckSender) {
    let name: String = event.chars().take(64).collect();
    reply(&socket, ack, Err(ChatError::new(404, format!("Unknown event: {name}"))));
}

/// Whatever the cause: `user_left` to every room the client was in. The
/// socket is still in its rooms here; socketioxide removes it afterwards.
async fn on_disconnect(socket: SocketRef, Extension(session): Extension<Arc<Session>>) {
    if let Some(task) = session.expiry.lock().unwrap().take() {
        task.abort();
    }
    let rooms = std::mem::take(&mut *session.rooms.lock().unwrap());
    for room in rooms {
        let notice = Notice { user_id: &session.sub, room_id: &room, timestamp: now_ms() };
        broadcast(socket.to(room.clone()).emit("user_left", &notice).await);
    }
}

// ------------------------------------------------------------------ main

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn main() -> std::io::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> std::io::Result<()> {
    let secret = std::env::var("JWT_SECRET").unwrap_or_default();
    if secret.is_empty() {
        eprintln!("JWT_SECRET is required");
        std::process::exit(2);
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().unwrap_or_else(|_| {
            eprintln!("PORT must be a port number, got {port:?}");
            std::process::exit(2);
        }),
        Err(_) => 3002,
    };

    // socketioxide's default per-socket buffer is 128 packets; a full buffer
    // drops what is emitted to that socket (counted in DROPPED).
    let max_buffer_size: usize = match std::env::var("MAX_BUFFER_SIZE") {
        Ok(size) => size.parse().unwrap_or_else(|_| {
            eprintln!("MAX_BUFFER_SIZE must be a number, got {size:?}");
            std::process::exit(2);
        }),
        Err(_) => 128,
    };

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = JWT_LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let boot_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    let app = Arc::new(App {
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
        next_id: AtomicU64::new(boot_us),
        room_locks: (0..ROOM_LOCK_SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
    });

    let (layer, io) = SocketIo::builder()
        .transports([TransportType::Websocket])
        .ping_interval(Duration::from_millis(25_000))
        .ping_timeout(Duration::from_millis(20_000))
        .max_payload(1_000_000)
        .max_buffer_size(max_buffer_size)
        // `max_payload` bounds polling bodies only; the same bound on
        // websocket messages and frames (tungstenite's defaults: 64/16 MiB).
        .ws_max_message_size(1_000_000)
        .ws_max_frame_size(1_000_000)
        .with_state(app)
        .build_layer();
    // Middlewares run last-added first: authenticate, then prepare.
    io.ns(NAMESPACE, on_connect.with(prepare).with(authenticate));

    let router = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    let addr: SocketAddr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }

    let closing = io.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // A Socket.IO DISCONNECT to every chat socket (their on_disconnect
            // handlers run), then every transport closed.
            if let Some(chat) = closing.of(NAMESPACE) {
                chat.disconnect().await.ok();
            }
            closing.close().await;
        })
        .await?;
    let dropped = DROPPED.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!(
            "warning: {dropped} packets dropped because a socket buffer was full (MAX_BUFFER_SIZE={max_buffer_size})"
        );
    }
    Ok(())
}
