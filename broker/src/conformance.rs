//! The conformance server: what the official Engine.IO and Socket.IO
//! protocol test suites expect at the other end, built on the broker's own
//! HTTP, Engine.IO and Socket.IO layers (the `conformance` binary runs it).
//!
//! - `/engine.io/`: an Engine.IO echo — every message, text or binary, is
//!   sent back as it came.
//! - `/socket.io/`: Socket.IO namespaces `/` and `/custom`. On connect, a
//!   socket is sent `auth` with its CONNECT payload (`{}` without one); in
//!   `/`, `message` is echoed as `message-back` and `message-with-ack` is
//!   acked with its own arguments, binary attachments included.
//! - pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1 000 000 bytes.
//!
//! Nothing here knows chat; it is the smallest application that exercises
//! every path the suites check. [`crate::serve_service`] runs it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use simd_json::BorrowedValue;

use crate::Service;
use crate::engineio::{Application, CloseReason, EngineSettings, Handshake, Session, SessionHandler};
use crate::metrics::Metrics;
use crate::protocol::Frame;
use crate::protocol::engineio::MESSAGE;
use crate::socketio::{Accepted, ConnectError, DisconnectReason, Event, Handler, Socket, SocketIo};

/// The ping interval the suites expect.
pub const PING_INTERVAL: Duration = Duration::from_millis(300);
/// The ping timeout the suites expect.
pub const PING_TIMEOUT: Duration = Duration::from_millis(200);
/// The maxPayload the suites expect.
pub const MAX_PAYLOAD: usize = 1_000_000;
/// How long after the CONNECT answer `auth` is emitted (see `on_connect`).
const AUTH_DELAY: Duration = Duration::from_millis(20);
/// Outbox byte budget per session.
const OUTBOX_BYTES: usize = 4 * MAX_PAYLOAD;

/// The conformance server's service: both endpoints and their settings.
#[must_use]
pub fn service() -> Service {
    let defaults = crate::Config::default();
    let metrics = Arc::new(Metrics::default());
    let handler = Arc::new(EchoNamespace);
    // The suites' reference server runs without connection state recovery.
    let limits = crate::socketio::PacketLimits {
        recovery_window: Duration::ZERO,
        ..crate::socketio::PacketLimits::from(&defaults)
    };
    let io = SocketIo::with_limits(
        vec![("/".to_owned(), Arc::clone(&handler) as Arc<dyn Handler>), ("/custom".to_owned(), handler)],
        Arc::clone(&metrics),
        limits,
    );
    Service {
        endpoints: vec![
            ("/engine.io/".to_owned(), Arc::new(EngineEcho) as Arc<dyn Application>),
            ("/socket.io/".to_owned(), Arc::new(io.clone())),
        ],
        io: Some(io),
        settings: EngineSettings {
            ping_interval: PING_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            max_payload: MAX_PAYLOAD,
            outbox_bytes: OUTBOX_BYTES,
            sid_prefix: None,
        },
        cors_origins: Vec::new(),
        metrics,
        max_write_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(2),
        limits: crate::http::HttpLimits::from(&defaults),
        max_connections_per_ip: defaults.max_connections_per_ip,
        max_connections: defaults.max_connections,
    }
}

/// The Engine.IO echo application.
struct EngineEcho;

impl Application for EngineEcho {
    fn open(self: Arc<Self>, session: &Session) -> Box<dyn SessionHandler> {
        Box::new(EchoSession { session: session.clone() })
    }
}

struct EchoSession {
    session: Session,
}

impl SessionHandler for EchoSession {
    fn on_text(&mut self, text: &str) -> Result<(), CloseReason> {
        let frame = Frame::build_text(|buf| {
            buf.extend_from_slice(&[MESSAGE]);
            buf.extend_from_slice(text.as_bytes());
        });
        let _ = self.session.outbox.try_push(&frame);
        Ok(())
    }

    fn on_binary(&mut self, data: Bytes) -> Result<(), CloseReason> {
        let _ = self.session.outbox.try_push(&Frame::binary(&data));
        Ok(())
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        None
    }

    fn on_deadline(&mut self) -> Result<(), CloseReason> {
        Ok(())
    }

    fn on_shutdown(&mut self) {}

    fn on_close(&mut self, _: CloseReason) {}
}

/// The Socket.IO namespaces `/` and `/custom`.
struct EchoNamespace;

/// What a socket connected with: its CONNECT payload.
struct ConnectPayload(serde_json::Value);

impl Handler for EchoNamespace {
    fn authorize(&self, _: &Handshake, auth: Option<&BorrowedValue<'_>>) -> Result<Accepted, ConnectError> {
        let payload = auth
            .and_then(|auth| serde_json::to_value(auth).ok())
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        Ok(Accepted { data: Box::new(ConnectPayload(payload)), expires_at: None, owner: None })
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        // The suites wait for the CONNECT answer, then register a listener
        // for the next message: a second message in the same read would be
        // missed. socket.io's own server writes `auth` a few event-loop
        // turns after the CONNECT answer; so does this one.
        let socket = Arc::clone(socket);
        tokio::spawn(async move {
            tokio::time::sleep(AUTH_DELAY).await;
            if let Some(ConnectPayload(payload)) = socket.data::<ConnectPayload>() {
                let _ = socket.emit("auth", payload);
            }
        });
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event<'_>) {
        match (event.name, event.ack_id) {
            ("message", _) => {
                let _ = socket.emit_with_attachments("message-back", event.args, event.attachments);
            }
            ("message-with-ack", Some(ack_id)) => {
                let _ = socket.ack_with_attachments(ack_id, event.args, event.attachments);
            }
            _ => {}
        }
    }

    fn on_disconnect(&self, _: &Arc<Socket>, _: DisconnectReason) {}
}
