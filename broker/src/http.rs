//! The HTTP side, on hyper: the Engine.IO handshake and WebSocket upgrade,
//! `GET /health` and `GET /metrics`, CORS and origin checks.
//!
//! After a successful upgrade the raw `TcpStream` is taken back from hyper
//! (`Upgraded::downcast`) with any bytes hyper read past the request, and
//! handed to [`crate::conn::serve`]. Every handshake refusal is mapped to its
//! status and socket.io JSON body in one place, [`HandshakeError`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use crate::conn::{self, Engine, Handshake};
use crate::socketio::SocketIo;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP layer needs.
pub struct HttpState {
    /// The Engine.IO endpoint path, with its trailing slash.
    pub path: String,
    /// Allowed origins; empty means any.
    pub cors_origins: Vec<String>,
    /// Where upgraded connections go.
    pub engine: Engine,
    /// For `/health`.
    pub io: SocketIo,
}

/// Why a handshake request is refused: socket.io's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// `transport` is not `websocket` (code 0).
    UnknownTransport,
    /// An `sid` names no session (code 1).
    UnknownSession,
    /// Not a valid WebSocket upgrade request (code 3).
    BadRequest,
    /// The Origin is not allowed (code 4, HTTP 403).
    Forbidden,
    /// `EIO` is not 4 (code 5).
    UnsupportedProtocolVersion,
}

impl HandshakeError {
    /// The HTTP status, socket.io error code and message.
    #[must_use]
    pub const fn parts(self) -> (StatusCode, u8, &'static str) {
        match self {
            Self::UnknownTransport => (StatusCode::BAD_REQUEST, 0, "Transport unknown"),
            Self::UnknownSession => (StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
            Self::BadRequest => (StatusCode::BAD_REQUEST, 3, "Bad request"),
            Self::Forbidden => (StatusCode::FORBIDDEN, 4, "Forbidden"),
            Self::UnsupportedProtocolVersion => (StatusCode::BAD_REQUEST, 5, "Unsupported protocol version"),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code, message) = self.parts();
        json_response(status, format!(r#"{{"code":{code},"message":"{message}"}}"#))
    }
}

/// Serves HTTP on one accepted connection until it closes, is upgraded, or
/// the server shuts down.
pub async fn serve(stream: TcpStream, remote: SocketAddr, state: Arc<HttpState>) {
    let shutdown = state.engine.shutdown.clone();
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(request, remote, &state)) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%remote, %error, "http connection ended with an error");
            }
        }
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
}

fn route(request: Request<Incoming>, remote: SocketAddr, state: &HttpState) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let origin =
        request.headers().get(header::ORIGIN).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let mut response = if path == state.path || path == state.path.trim_end_matches('/') {
        if request.method() == Method::OPTIONS {
            Response::builder().status(StatusCode::NO_CONTENT).body(Full::default()).expect("static response")
        } else {
            handshake(request, remote, state).unwrap_or_else(HandshakeError::into_response)
        }
    } else if request.method() == Method::GET && path == "/health" {
        health(state)
    } else if request.method() == Method::GET && path == "/metrics" {
        let mut response = Response::new(Full::from(state.engine.metrics.render()));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        response
    } else {
        json_response(StatusCode::NOT_FOUND, r#"{"message":"Not found"}"#.to_owned())
    };
    if let Some(origin) = origin.filter(|origin| origin_allowed(&state.cors_origins, origin)) {
        add_cors_headers(response.headers_mut(), &origin);
    }
    response
}

fn handshake(
    request: Request<Incoming>,
    remote: SocketAddr,
    state: &HttpState,
) -> Result<Response<Full<Bytes>>, HandshakeError> {
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    if param("EIO") != Some("4") {
        return Err(HandshakeError::UnsupportedProtocolVersion);
    }
    if param("transport") != Some("websocket") {
        return Err(HandshakeError::UnknownTransport);
    }
    if param("sid").is_some() {
        return Err(HandshakeError::UnknownSession);
    }
    let headers = request.headers();
    let origin = header_str(headers, header::ORIGIN);
    if origin.is_some_and(|origin| !origin_allowed(&state.cors_origins, origin)) {
        return Err(HandshakeError::Forbidden);
    }
    let key = websocket_key(&request).ok_or(HandshakeError::BadRequest)?;

    let handshake = Handshake {
        authorization: header_str(headers, header::AUTHORIZATION).map(str::to_owned),
        origin: origin.map(str::to_owned),
        remote: Some(remote),
        query,
    };
    let engine = state.engine.clone();
    state.engine.tracker.spawn(async move {
        match hyper::upgrade::on(request).await {
            // The session gets a task of its own, so this one — which holds
            // the whole HTTP request — ends now instead of living as long
            // as the session.
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let session =
                        conn::serve(engine.clone(), parts.io.into_inner(), parts.read_buf, handshake);
                    engine.tracker.spawn(session);
                }
                Err(_) => debug!(%remote, "upgraded connection is not a TcpStream"),
            },
            Err(error) => debug!(%remote, %error, "upgrade failed"),
        }
    });

    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, key)
        .body(Full::default())
        .expect("valid upgrade response"))
}

/// The `Sec-WebSocket-Accept` value, if this is a valid version-13 upgrade.
fn websocket_key(request: &Request<Incoming>) -> Option<String> {
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
    let namespaces: Vec<serde_json::Value> = state
        .io
        .namespaces()
        .map(|ns| serde_json::json!({ "name": ns.name(), "sockets": ns.socket_count() }))
        .collect();
    let body = serde_json::json!({
        "status": "ok",
        "connections": state.engine.metrics.connections_open.load(Ordering::Relaxed),
        "namespaces": namespaces,
    });
    json_response(StatusCode::OK, body.to_string())
}

fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|entry| entry == origin || entry == "*")
}

fn add_cors_headers(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
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

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(body))
        .expect("valid response")
}
