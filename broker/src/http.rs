//! The HTTP side: the Engine.IO handshake and WebSocket upgrade, the
//! long-polling requests, `GET /health` and `GET /metrics`, CORS and origin
//! checks.
//!
//! [`serve`] reads each connection's request head itself (httparse). A valid
//! WebSocket upgrade is answered right there: a new session's `101` goes out
//! in the same write as the Engine.IO open packet (a connect costs the server
//! one write fewer and no hyper machinery), and an upgrade of a long-polling
//! session is handed to that session. Every other request — long-polling,
//! refusals, the two GET endpoints, preflights — is served by hyper, which is
//! handed the bytes already read. hyper never hands over an upgrade: one
//! whose head the fast path could not take is refused. Every refusal is
//! mapped to its status and socket.io JSON body in one place,
//! [`HandshakeError`].

#![warn(clippy::arithmetic_side_effects)]

use std::convert::Infallible;
use std::io::{self, Cursor};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Full;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::io::{AsyncReadExt as _, Chain, Join};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use futures_util::FutureExt as _;
use futures_util::future::OptionFuture;

use crate::admission::Admission;
use crate::engineio::{self, Engine, Handshake, PollingError, Query};
use crate::metrics::Limit;
use crate::socketio::SocketIo;

/// The request head buffer [`serve`] starts with; a client's upgrade request
/// is 200–700 bytes. It is freed once the head is read.
const HEAD_BUFFER_BYTES: usize = 1024;

/// The most headers a request may have; more is answered 431.
const MAX_HEADERS: usize = 64;

/// Bounds on HTTP requests and on connections, from the [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request head; larger is answered 431.
    pub max_head_bytes: usize,
    /// How long a client may take to send its request head.
    pub handshake_timeout: Duration,
}

impl From<&crate::Config> for HttpLimits {
    fn from(config: &crate::Config) -> Self {
        Self { max_head_bytes: config.max_head_bytes, handshake_timeout: config.handshake_timeout }
    }
}

/// How long writing the `101` of an upgrade may take.
const UPGRADE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP layer needs.
pub struct HttpState {
    /// The Engine.IO endpoints; the first one's engine also serves
    /// shutdown and the counters.
    pub endpoints: Vec<Endpoint>,
    /// Allowed origins; empty means any.
    pub cors_origins: Vec<String>,
    /// For `/health` and `/metrics`, when the server runs Socket.IO.
    pub io: Option<SocketIo>,
    /// Request bounds.
    pub limits: HttpLimits,
    /// Open connections per source address, and in total.
    pub admission: Arc<Admission>,
}

/// One Engine.IO endpoint: a path and the engine whose sessions it serves.
pub struct Endpoint {
    /// The path, with its trailing slash (`/socket.io/`).
    pub path: String,
    /// The sessions' settings and application; shared, so that each session
    /// holds a pointer to it rather than a copy.
    pub engine: Arc<Engine>,
}

impl HttpState {
    /// The engine of the first endpoint: shutdown and counters.
    #[allow(clippy::expect_used, reason = "serve_service builds a state only with endpoints")]
    fn engine(&self) -> &Arc<Engine> {
        &self.endpoints.first().expect("a server has at least one endpoint").engine
    }

    /// The engine serving `path`, if it is an Engine.IO endpoint.
    fn engine_at(&self, path: &str) -> Option<&Arc<Engine>> {
        self.endpoints
            .iter()
            .find(|endpoint| path == endpoint.path || path == endpoint.path.trim_end_matches('/'))
            .map(|endpoint| &endpoint.engine)
    }
}

/// Why a handshake request is refused: socket.io's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// `transport` is neither `polling` nor `websocket` (code 0).
    UnknownTransport,
    /// An `sid` names no session (code 1).
    UnknownSession,
    /// A handshake that is not a `GET` (code 2).
    BadHandshakeMethod,
    /// Not a valid request for its session or transport (code 3).
    BadRequest,
    /// A long-polling body over maxPayload (code 3, HTTP 413).
    PayloadTooLarge,
    /// The Origin is not allowed (code 4, HTTP 403).
    Forbidden,
    /// `EIO` is not 4 (code 5).
    UnsupportedProtocolVersion,
    /// The request head is larger than `max_head_bytes` or has too many
    /// headers (HTTP 431, code 3).
    HeadTooLarge,
    /// The source address or the broker holds as many connections as it
    /// may (HTTP 503, code 3).
    TooManyConnections,
    /// The server is shutting down and takes no new session (HTTP 503, code 3).
    ShuttingDown,
}

impl HandshakeError {
    /// The HTTP status, socket.io error code and message.
    #[must_use]
    pub const fn parts(self) -> (StatusCode, u8, &'static str) {
        match self {
            Self::UnknownTransport => (StatusCode::BAD_REQUEST, 0, "Transport unknown"),
            Self::UnknownSession => (StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
            Self::BadHandshakeMethod => (StatusCode::BAD_REQUEST, 2, "Bad handshake method"),
            Self::BadRequest => (StatusCode::BAD_REQUEST, 3, "Bad request"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, 3, "Payload too large"),
            Self::Forbidden => (StatusCode::FORBIDDEN, 4, "Forbidden"),
            Self::UnsupportedProtocolVersion => (StatusCode::BAD_REQUEST, 5, "Unsupported protocol version"),
            Self::HeadTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, 3, "Request header too large")
            }
            Self::TooManyConnections => (StatusCode::SERVICE_UNAVAILABLE, 3, "Too many connections"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, 3, "Server shutting down"),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code, message) = self.parts();
        json_response(status, format!(r#"{{"code":{code},"message":"{message}"}}"#))
    }

    /// The whole response, for a connection that is closed right after it.
    fn into_closing_bytes(self) -> Vec<u8> {
        let (status, code, message) = self.parts();
        let body = format!(r#"{{"code":{code},"message":"{message}"}}"#);
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

impl From<PollingError> for HandshakeError {
    fn from(error: PollingError) -> Self {
        match error {
            PollingError::UnknownSession => Self::UnknownSession,
            PollingError::BadRequest => Self::BadRequest,
        }
    }
}

/// Serves HTTP on one accepted connection until it closes, is upgraded, or
/// the server shuts down.
///
/// The request head is read here first. A valid WebSocket upgrade to the
/// Engine.IO path — nearly every connection — is answered without hyper: the
/// `101` and the open packet leave in one write, and the session runs on in
/// this task. Anything else (refusals, `/health`, `/metrics`, preflights, a
/// head too large or malformed to parse here) goes to hyper, together with
/// the bytes already read.
pub fn serve(stream: TcpStream, remote: SocketAddr, state: Arc<HttpState>) -> impl Future<Output = ()> {
    // Counted from accept to close, the session included: the permit is
    // released when this future ends, however it ends.
    let permit = state.admission.admit(remote.ip());
    // This future is part of every session's task, so it holds no more than
    // the session needs: the handshake's state (timer, buffers, hyper) is
    // boxed and freed when it ends, and the session is chained after it, not
    // awaited in an async block that would keep the arguments.
    Box::pin(answer(stream, remote, state, permit.is_ok()))
        .then(OptionFuture::from)
        .map(move |_| drop(permit))
}

/// Refuses a connection after reading its request head: answers `refusal`
/// and closes.
async fn refuse(mut stream: TcpStream, remote: SocketAddr, refusal: HandshakeError) {
    use tokio::io::AsyncWriteExt as _;
    debug!(%remote, ?refusal, "request refused");
    let _ = stream.write_all(&refusal.into_closing_bytes()).await;
    let _ = stream.shutdown().await;
    // Drain briefly so the close is not a reset that eats the response.
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

/// How long a kept-alive HTTP connection is still served once shutdown
/// starts, for the last polls of closing sessions.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// How long a connection accepted during shutdown may take to send its head.
const DRAIN_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one connection accepted while the server shuts down. A long-polling
/// client between two requests has nothing for the server to answer when
/// shutdown starts; its next requests (on a new connection when hyper closed
/// its idle one) take the frames that explain the close. They are served as
/// usual by hyper, which refuses new sessions and upgrades meanwhile.
pub async fn serve_draining(stream: TcpStream, remote: SocketAddr, state: Arc<HttpState>) {
    drain(stream, Vec::with_capacity(HEAD_BUFFER_BYTES), remote, state).await;
}

/// [`serve_draining`] with `buf` holding the part of the head already read.
async fn drain(mut stream: TcpStream, mut buf: Vec<u8>, remote: SocketAddr, state: Arc<HttpState>) {
    let head = read_head(&mut stream, &mut buf, state.limits.max_head_bytes);
    if let Ok(Ok(Head::Complete(..) | Head::Other)) = tokio::time::timeout(DRAIN_HEAD_TIMEOUT, head).await {
        serve_hyper(stream, buf, remote, state).await;
    }
}

/// Reads the request head. A WebSocket upgrade for the fast path is
/// answered (the response goes out with the open packet) and its session
/// returned; anything else is served with hyper until the connection closes.
async fn answer(
    mut stream: TcpStream,
    remote: SocketAddr,
    state: Arc<HttpState>,
    admitted: bool,
) -> Option<impl Future<Output = ()> + use<>> {
    let mut buf = Vec::with_capacity(HEAD_BUFFER_BYTES);
    let limits = state.limits;
    let head = tokio::select! {
        head = tokio::time::timeout(limits.handshake_timeout, read_head(&mut stream, &mut buf, limits.max_head_bytes)) => head,
        () = state.engine().shutdown.cancelled() => {
            // A request under way when shutdown started may be a polling
            // client's last GET: serve it as one accepted now would be.
            drain(stream, buf, remote, state).await;
            return None;
        }
    };
    let metrics = &state.engine().metrics;
    match head {
        Ok(Ok(Head::Complete(..) | Head::Other)) if !admitted => {
            refuse(stream, remote, HandshakeError::TooManyConnections).await;
            return None;
        }
        Ok(Ok(Head::TooLarge)) => {
            metrics.refuse(Limit::HeadSize);
            refuse(stream, remote, HandshakeError::HeadTooLarge).await;
            return None;
        }
        Ok(Ok(Head::Malformed)) => {
            refuse(stream, remote, HandshakeError::BadRequest).await;
            return None;
        }
        Ok(Ok(Head::Complete(request, len))) => match fast_upgrade(&request, remote, &state) {
            Some(FastUpgrade::New(engine, handshake, head)) => {
                let read_ahead = buf.split_off(len);
                return Some(engineio::serve(engine, stream, read_ahead, handshake, head));
            }
            Some(FastUpgrade::Existing(session, head)) => {
                let read_ahead = buf.split_off(len);
                let written = tokio::time::timeout(UPGRADE_WRITE_TIMEOUT, stream.write_all(&head)).await;
                if matches!(written, Ok(Ok(()))) {
                    engineio::hand_over_upgrade(&session, stream, read_ahead).await;
                } else {
                    debug!(%remote, "writing the upgrade response failed");
                    engineio::hand_over_upgrade_failed(&session);
                }
                return None;
            }
            Some(FastUpgrade::Taken(mut head)) => {
                head.extend_from_slice(
                    crate::protocol::Frame::close(1000, "session already upgraded").as_bytes(),
                );
                let _ = tokio::time::timeout(UPGRADE_WRITE_TIMEOUT, stream.write_all(&head)).await;
                return None;
            }
            None => {}
        },
        Ok(Ok(Head::Other)) => {}
        Ok(Ok(Head::Closed)) => return None,
        Ok(Err(error)) => {
            debug!(%remote, %error, "reading the request failed");
            return None;
        }
        Err(_) => {
            metrics.refuse(Limit::HandshakeTimeout);
            debug!(%remote, "no complete request head in time");
            return None;
        }
    }
    serve_hyper(stream, buf, remote, state).await;
    None
}

/// What [`parse_head`] found.
#[allow(
    clippy::large_enum_variant,
    reason = "lives only while the head is read; boxing the request would cost an allocation per connect"
)]
#[derive(Debug)]
pub enum Head {
    /// A complete, well-formed head of `len` bytes.
    Complete(Request<()>, usize),
    /// A complete head that `http::Request` does not take (an unusual
    /// method or header value): for hyper to answer.
    Other,
    /// Over the head size limit or [`MAX_HEADERS`] (431).
    TooLarge,
    /// Not an HTTP/1.x request head (400).
    Malformed,
    /// The client closed before sending anything.
    Closed,
}

/// Reads until `buf` holds a complete request head of at most
/// `max_head_bytes`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, max_head_bytes: usize) -> io::Result<Head> {
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= max_head_bytes {
                return Ok(Head::TooLarge);
            }
            buf.reserve(buf.len().min(max_head_bytes.saturating_sub(buf.len())));
        }
        let read = stream.read_buf(buf).await?;
        if read == 0 {
            return Ok(if buf.is_empty() { Head::Closed } else { Head::Malformed });
        }
        match parse_head(buf, max_head_bytes) {
            Head::Closed => {}
            head => return Ok(head),
        }
    }
}

/// Parses a request head from the bytes read so far. `Head::Closed` here
/// means "incomplete: read more".
///
/// Pure, for the fuzzer: every input gives an answer, none panics.
#[must_use]
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > max_head_bytes => Head::TooLarge,
        Ok(httparse::Status::Complete(len)) => {
            to_request(&parsed).map_or(Head::Other, |request| Head::Complete(request, len))
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_head_bytes => Head::TooLarge,
        Ok(httparse::Status::Partial) => Head::Closed,
        Err(httparse::Error::TooManyHeaders) => Head::TooLarge,
        Err(_) => Head::Malformed,
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Option<Request<()>> {
    let version = if parsed.version? == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut builder = Request::builder().method(parsed.method?).uri(parsed.path?).version(version);
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    builder.body(()).ok()
}

/// A WebSocket upgrade the fast path answers.
enum FastUpgrade {
    /// A new session: its engine, handshake and `101` head.
    New(Arc<Engine>, Handshake, Vec<u8>),
    /// The upgrade of a long-polling session, claimed, and the `101` head.
    Existing(Arc<engineio::PollingSession>, Vec<u8>),
    /// An upgrade of a session already upgrading or upgraded: accepted and
    /// closed at once, as engine.io does. The `101` head.
    Taken(Vec<u8>),
}

/// What to do with `request`, if it is an upgrade this broker accepts.
fn fast_upgrade(request: &Request<()>, remote: SocketAddr, state: &HttpState) -> Option<FastUpgrade> {
    // Anything but a GET is refused by `check_upgrade` (via `websocket_key`).
    let engine = state.engine_at(request.uri().path())?;
    if request.version() != Version::HTTP_11 || engine.shutdown.is_cancelled() {
        return None;
    }
    let (handshake, key, sid) = check_upgrade(request, remote, state).ok()?;
    let mut response = switching_protocols(&key);
    add_cors(&mut response, handshake.origin.as_deref(), state);
    let head = encode_head(&response);
    match sid {
        Some(sid) => match engineio::claim_upgrade(engine, &sid) {
            engineio::UpgradeClaim::Claimed(session) => Some(FastUpgrade::Existing(session, head)),
            engineio::UpgradeClaim::Taken => Some(FastUpgrade::Taken(head)),
            // hyper answers "Session ID unknown".
            engineio::UpgradeClaim::Unknown => None,
        },
        None => Some(FastUpgrade::New(Arc::clone(engine), handshake, head)),
    }
}

/// A response head as HTTP/1.1 bytes, with room for the open packet.
fn encode_head(response: &Response<Full<Bytes>>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = response.status();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The IO hyper serves: the bytes [`serve`] already read, then the socket.
type Replayed = Join<Chain<Cursor<Vec<u8>>, OwnedReadHalf>, OwnedWriteHalf>;

async fn serve_hyper(stream: TcpStream, read: Vec<u8>, remote: SocketAddr, state: Arc<HttpState>) {
    let shutdown = state.engine().shutdown.clone();
    let limits = state.limits;
    let (read_half, write_half) = stream.into_split();
    let io: Replayed = tokio::io::join(Cursor::new(read).chain(read_half), write_half);
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(request, remote, &state).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        // hyper's floor is 8 KiB; `read_head` already refused larger first heads.
        .max_buf_size(limits.max_head_bytes.max(8192))
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Serve on a while: a long-polling client's last GETs may come on
            // this connection (a held one is answered as its session closes).
            // Then finish what is in flight, and close.
            match tokio::time::timeout(SHUTDOWN_DRAIN, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            }
        }
    };
    if let Err(error) = result {
        debug!(%remote, %error, "http connection ended with an error");
    }
}

async fn route(request: Request<Incoming>, remote: SocketAddr, state: &HttpState) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let origin =
        request.headers().get(header::ORIGIN).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let mut response = if let Some(engine) = state.engine_at(path) {
        if request.method() == Method::OPTIONS {
            let mut response = Response::new(Full::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        } else {
            let engine = engine.clone();
            engine_request(request, remote, &engine, state)
                .await
                .unwrap_or_else(HandshakeError::into_response)
        }
    } else if request.method() == Method::GET && path == "/health" {
        health(state)
    } else if request.method() == Method::GET && path == "/metrics" {
        let mut gauges = state.io.as_ref().map(SocketIo::gauges).unwrap_or_default();
        gauges.tasks = state.engine().tracker.len() as u64;
        let mut response = Response::new(Full::from(state.engine().metrics.render(&gauges)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    } else {
        json_response(StatusCode::NOT_FOUND, r#"{"message":"Not found"}"#.to_owned())
    };
    add_cors(&mut response, origin.as_deref(), state);
    response
}

/// A request to an Engine.IO endpoint that the fast path did not take:
/// long-polling, or a refused upgrade.
async fn engine_request(
    request: Request<Incoming>,
    remote: SocketAddr,
    engine: &Arc<Engine>,
    state: &HttpState,
) -> Result<Response<Full<Bytes>>, HandshakeError> {
    let query = parse_query(request.uri().query().unwrap_or(""))?;
    let param = |name: &str| query.get(name);
    if param("EIO") != Some("4") {
        return Err(HandshakeError::UnsupportedProtocolVersion);
    }
    match param("transport") {
        Some("polling") => {}
        Some("websocket") => {
            // Only a refusal comes this way: the fast path takes every
            // upgrade it accepts, and hyper hands none over.
            let (_, _, sid) = check_upgrade(&request, remote, state)?;
            return Err(if sid.is_some() {
                HandshakeError::UnknownSession
            } else {
                HandshakeError::BadRequest
            });
        }
        _ => return Err(HandshakeError::UnknownTransport),
    }
    let origin = header_str(request.headers(), header::ORIGIN);
    if origin.is_some_and(|origin| !origin_allowed(&state.cors_origins, origin)) {
        return Err(HandshakeError::Forbidden);
    }
    let Some(sid) = param("sid").map(str::to_owned) else {
        if request.method() != Method::GET {
            return Err(HandshakeError::BadHandshakeMethod);
        }
        if engine.shutdown.is_cancelled() {
            return Err(HandshakeError::ShuttingDown);
        }
        // A polling session is counted against the address and the total
        // like a connection, for as long as it lives.
        let permit = state.admission.admit(remote.ip()).map_err(|_| HandshakeError::TooManyConnections)?;
        let handshake = Handshake {
            authorization: bearer_authorization(request.headers()),
            origin: origin.map(Box::from),
            remote: Some(remote),
            query,
        };
        return Ok(polling_response(Bytes::from(engineio::open_polling(engine, handshake, permit))));
    };
    let session = engineio::polling_session(engine, &sid).ok_or(HandshakeError::UnknownSession)?;
    match *request.method() {
        Method::GET => Ok(polling_response(session.poll().await?)),
        Method::POST => {
            let max_payload = engine.settings.max_payload;
            let declared =
                header_str(request.headers(), header::CONTENT_LENGTH).and_then(|len| len.parse().ok());
            if declared.is_some_and(|len: usize| len > max_payload) {
                session.close(engineio::CloseReason::MessageTooBig);
                return Err(HandshakeError::PayloadTooLarge);
            }
            let Ok(body) = Limited::new(request.into_body(), max_payload).collect().await else {
                // Over the limit, or the client went away mid-body.
                session.close(engineio::CloseReason::MessageTooBig);
                return Err(HandshakeError::PayloadTooLarge);
            };
            session.post(body.to_bytes()).await?;
            Ok(polling_response(Bytes::from_static(b"ok")))
        }
        _ => Err(HandshakeError::BadRequest),
    }
}

#[allow(clippy::expect_used, reason = "a fixed status and header")]
fn polling_response(body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .body(Full::new(body))
        .expect("valid response")
}

/// Checks an upgrade request; returns the session's handshake, the
/// `Sec-WebSocket-Accept` value, and the `sid` of the long-polling session
/// to upgrade, if one is named.
fn check_upgrade<B>(
    request: &Request<B>,
    remote: SocketAddr,
    state: &HttpState,
) -> Result<(Handshake, String, Option<String>), HandshakeError> {
    let query = parse_query(request.uri().query().unwrap_or(""))?;
    let param = |name: &str| query.get(name);
    if param("EIO") != Some("4") {
        return Err(HandshakeError::UnsupportedProtocolVersion);
    }
    if param("transport") != Some("websocket") {
        return Err(HandshakeError::UnknownTransport);
    }
    let sid = param("sid").map(str::to_owned);
    let headers = request.headers();
    let origin = header_str(headers, header::ORIGIN);
    if origin.is_some_and(|origin| !origin_allowed(&state.cors_origins, origin)) {
        return Err(HandshakeError::Forbidden);
    }
    let key = websocket_key(request).ok_or(HandshakeError::BadRequest)?;
    let handshake = Handshake {
        authorization: bearer_authorization(headers),
        origin: origin.map(Box::from),
        remote: Some(remote),
        query,
    };
    Ok((handshake, key, sid))
}

/// The `Authorization` header if it holds a bearer token. Only that is kept
/// for the session's life, not any other credentials a client happens to send.
fn bearer_authorization(headers: &HeaderMap) -> Option<Box<str>> {
    header_str(headers, header::AUTHORIZATION)
        .filter(|value| {
            value.trim_start().get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        })
        .map(Box::from)
}

/// Decodes a query string strictly: a percent-encoded byte sequence that is
/// not UTF-8 is refused, never replaced, so two different values cannot
/// decode to one.
///
/// # Errors
/// [`HandshakeError::BadRequest`] for invalid UTF-8.
pub fn parse_query(query: &str) -> Result<Query, HandshakeError> {
    let decode = |part: &str| -> Result<String, HandshakeError> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| HandshakeError::BadRequest)
    };
    let pairs = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect::<Result<Vec<_>, HandshakeError>>()?;
    Query::from_pairs(pairs.iter().map(|(key, value)| (key.as_str(), value.as_str())))
        .ok_or(HandshakeError::BadRequest)
}

#[allow(clippy::expect_used, reason = "a fixed status and headers; the accept key is base64")]
fn switching_protocols(accept_key: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
        .body(Full::default())
        .expect("valid upgrade response")
}

/// The `Sec-WebSocket-Accept` value, if this is a valid version-13 upgrade.
fn websocket_key<B>(request: &Request<B>) -> Option<String> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let valid = request.method() == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && header_str(headers, header::SEC_WEBSOCKET_VERSION) == Some("13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    valid.then(|| derive_accept_key(key.as_bytes()))
}

fn health(state: &HttpState) -> Response<Full<Bytes>> {
    let metrics = &state.engine().metrics;
    let namespaces: Vec<serde_json::Value> = state
        .io
        .iter()
        .flat_map(SocketIo::namespaces)
        .map(|ns| serde_json::json!({ "name": ns.name(), "sockets": ns.socket_count() }))
        .collect();
    // A broker cut off from Redis still serves its own members: degraded, not down.
    let degraded =
        state.io.as_ref().and_then(SocketIo::cluster).is_some_and(|cluster| !cluster.is_connected());
    let body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "connections": metrics.connections_open.load(Ordering::Relaxed),
        "polling": metrics.polling_open.load(Ordering::Relaxed),
        // Every session, connection and background task: back to its idle
        // value when nothing is connected, or something leaked.
        "tasks": state.engine().tracker.len(),
        "namespaces": namespaces,
    });
    json_response(StatusCode::OK, body.to_string())
}

fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|entry| entry == origin || entry == "*")
}

/// Adds the CORS headers when `origin` is allowed.
fn add_cors<B>(response: &mut Response<B>, origin: Option<&str>, state: &HttpState) {
    if let Some(origin) = origin.filter(|origin| origin_allowed(&state.cors_origins, origin)) {
        add_cors_headers(response.headers_mut(), origin);
    }
}

fn add_cors_headers(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[allow(clippy::expect_used, reason = "a valid status and a fixed header")]
fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(body))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_in_order_and_the_first_value_wins() {
        let query = parse_query("EIO=4&transport=websocket&room%20Id=a+b%26c&flag&EIO=3&=x").expect("valid");
        let pairs: Vec<(&str, &str)> = query.iter().collect();
        assert_eq!(
            pairs,
            [
                ("EIO", "4"),
                ("transport", "websocket"),
                ("room Id", "a b&c"),
                ("flag", ""),
                ("EIO", "3"),
                ("", "x")
            ]
        );
        assert_eq!(query.get("EIO"), Some("4"));
        assert_eq!(query.get("room Id"), Some("a b&c"));
        assert_eq!(query.get("flag"), Some(""));
        assert_eq!(query.get("token"), None);
    }

    #[test]
    fn an_empty_query_has_no_pairs() {
        for text in ["", "&", "&&"] {
            let query = parse_query(text).expect("valid");
            assert_eq!(query.iter().count(), 0);
            assert_eq!(query, Query::default());
        }
    }

    #[test]
    fn a_query_that_is_not_utf8_is_refused() {
        assert!(matches!(parse_query("token=%ff"), Err(HandshakeError::BadRequest)));
    }
}
