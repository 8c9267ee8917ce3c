//! The connection reader: parses inbound WebSocket frames with tungstenite,
//! decodes Engine.IO packets, runs the heartbeat and hands messages to the
//! session handler.
//!
//! tungstenite reads from the socket's read half only. Whatever it would
//! write (automatic pongs, close replies) goes to a sink: every outbound byte
//! is a pre-built frame that the writer puts on the socket itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use tokio_util::sync::CancellationToken;

use super::{CloseReason, EngineSettings, Session, SessionHandler};
use crate::protocol::Frame;
use crate::protocol::engineio::{self, Packet};

/// tungstenite's read buffer per connection, allocated up front; it is also
/// the most one read takes. Chat frames are small (a CONNECT with its JWT is
/// about 300 bytes) and a larger message grows the buffer only while it is
/// read. Measured with 10k idle clients (RSS per connection): 4096 cost
/// 11.4 KB and 1024 cost 8.2 KB early on; after later savings, 1024 cost
/// 4.9 KB and 512 cost 4.4 KB.
const READ_BUFFER_BYTES: usize = 512;

/// How long a closed session keeps reading and discarding what the client
/// still sends. Closing a socket with unread input makes the kernel send a
/// reset, and a reset makes the client drop the frames it had not yet read —
/// the error, the DISCONNECT and the close frame that explain the close.
const LINGER: Duration = Duration::from_secs(2);

/// Reads the session until it closes and returns why, with the read half
/// when the caller should [`linger`] on it. The caller closes the handler and
/// the outbox (see `SessionGuard`), so that a panic in here skips no cleanup.
pub async fn run(
    session: &Session,
    read_half: OwnedReadHalf,
    read_ahead: Vec<u8>,
    handler: &mut dyn SessionHandler,
    settings: &EngineSettings,
    shutdown: &CancellationToken,
) -> (CloseReason, Option<OwnedReadHalf>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(settings.max_payload))
        .max_frame_size(Some(settings.max_payload));
    // Boxed: this future would otherwise keep room for the constructor's
    // state beside the stream it returns, in every session for its life.
    let mut ws = Box::pin(WebSocketStream::from_partially_read(
        ReadOnly(read_half),
        read_ahead,
        Role::Server,
        Some(config),
    ))
    .await;
    let outbox = &session.outbox;

    // One timer serves the heartbeat and the handler's deadline: every
    // timer is state in this task, and there are as many tasks as clients.
    let mut heartbeat = Heartbeat::new(settings);
    let mut deadline = handler.deadline();
    let timer = sleep_until(next_wake(&heartbeat, deadline));
    tokio::pin!(timer);

    let reason = loop {
        let step = tokio::select! {
            biased;
            () = outbox.closed() => Err(outbox.close_reason().unwrap_or(CloseReason::ServerDisconnect)),
            () = shutdown.cancelled() => {
                handler.on_shutdown();
                Err(CloseReason::ServerShutdown)
            }
            message = ws.next() => on_message(message, session, handler, &mut heartbeat),
            () = &mut timer => {
                let now = Instant::now();
                let beat = if now >= heartbeat.next { heartbeat.tick(session) } else { Ok(()) };
                beat.and_then(|()| if deadline.is_some_and(|at| at <= now) { handler.on_deadline() } else { Ok(()) })
            }
        };
        if let Err(reason) = step {
            break reason;
        }
        deadline = handler.deadline();
        let wake = next_wake(&heartbeat, deadline);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
    };
    // Stop taking frames before anything else can be queued.
    outbox.close(reason);
    let read_half = (reason != CloseReason::TransportError).then(|| ws.into_inner().0);
    (reason, read_half)
}

fn next_wake(heartbeat: &Heartbeat, deadline: Option<Instant>) -> Instant {
    deadline.map_or(heartbeat.next, |at| at.min(heartbeat.next))
}

/// Discards input until the client closes its side or [`LINGER`] passes.
pub async fn linger(mut read_half: OwnedReadHalf) {
    // On the heap: an array here would be part of every session's task.
    let mut sink = vec![0u8; 512];
    let _ =
        tokio::time::timeout(LINGER, async { while let Ok(1..) = read_half.read(&mut sink).await {} }).await;
}

fn on_message(
    message: Option<Result<Message, WsError>>,
    session: &Session,
    handler: &mut dyn SessionHandler,
    heartbeat: &mut Heartbeat,
) -> Result<(), CloseReason> {
    let message = match message {
        None => return Err(CloseReason::TransportError),
        Some(Err(error)) => return Err(close_reason_of(&error)),
        Some(Ok(message)) => message,
    };
    match message {
        Message::Text(text) => match engineio::decode(text.as_str()) {
            Ok(Packet::Message(data)) => handler.on_text(data),
            Ok(Packet::Pong(_)) => {
                heartbeat.pong();
                Ok(())
            }
            Ok(Packet::Ping(data)) => {
                let _ = session.outbox.try_push(&Frame::text(&format!("{}{data}", engineio::PONG)));
                Ok(())
            }
            Ok(Packet::Close) => Err(CloseReason::ClientClosed),
            Ok(Packet::Noop) => Ok(()),
            Ok(Packet::Open | Packet::Upgrade) | Err(_) => Err(CloseReason::ProtocolError),
        },
        Message::Binary(data) => handler.on_binary(data),
        Message::Ping(data) => {
            let _ = session.outbox.try_push(&Frame::pong(&data));
            Ok(())
        }
        // tungstenite hands over a close with a code a peer may not send
        // (999, 1005, …) as 1002; answer that with 1002, not 1000.
        Message::Close(frame) => match frame {
            Some(frame) if !is_valid_close_code(frame.code.into()) || u16::from(frame.code) == 1002 => {
                Err(CloseReason::ProtocolError)
            }
            _ => Err(CloseReason::ClientClosed),
        },
        Message::Pong(_) | Message::Frame(_) => Ok(()),
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 7.4): the
/// defined codes other than those reserved for local use (1004–1006, 1015),
/// and the registered and private ranges 3000–4999.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn close_reason_of(error: &WsError) -> CloseReason {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseReason::MessageTooBig,
        WsError::Capacity(_) | WsError::Protocol(_) => CloseReason::ProtocolError,
        WsError::Utf8(_) => CloseReason::InvalidData,
        _ => CloseReason::TransportError,
    }
}

/// Server-driven Engine.IO heartbeat: ping every interval, and give up on a
/// client that has not answered within the timeout.
struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// When the timer fires next: the next ping, or the end of the wait.
    next: Instant,
    /// When the unanswered ping was sent, if one is outstanding.
    awaiting_since: Option<Instant>,
}

impl Heartbeat {
    fn new(settings: &EngineSettings) -> Self {
        Self {
            interval: settings.ping_interval,
            timeout: settings.ping_timeout,
            next: Instant::now() + settings.ping_interval,
            awaiting_since: None,
        }
    }

    fn tick(&mut self, session: &Session) -> Result<(), CloseReason> {
        if self.awaiting_since.is_some() {
            return Err(CloseReason::PingTimeout);
        }
        let now = Instant::now();
        let _ = session.outbox.try_push(&ping_frame());
        self.awaiting_since = Some(now);
        self.next = now + self.timeout;
        Ok(())
    }

    fn pong(&mut self) {
        if let Some(sent) = self.awaiting_since.take() {
            self.next = sent + self.interval;
        }
    }
}

fn ping_frame() -> Frame {
    // Every session pings with the same two bytes; build them once.
    static PING: std::sync::OnceLock<Frame> = std::sync::OnceLock::new();
    PING.get_or_init(|| Frame::text(engineio::PING)).clone()
}

/// The read half, presented to tungstenite as a full duplex stream whose
/// writes go nowhere (see the module doc).
struct ReadOnly(OwnedReadHalf);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
