//! The WebSocket side of a session's reading: tungstenite parses inbound
//! frames from the socket's read half; the session driver
//! ([`super::driver`]) takes the messages.
//!
//! tungstenite reads from the socket's read half only. Whatever it would
//! write (automatic pongs, close replies) goes to a sink: every outbound byte
//! is a pre-built frame that the writer puts on the socket itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{CloseReason, EngineSettings};

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

/// A session's WebSocket, read side only.
pub(super) type WsReader = WebSocketStream<ReadOnly>;

/// Starts reading WebSocket frames from `read_half`, after `read_ahead`
/// (bytes the HTTP layer read past the upgrade request).
///
/// Made here, not awaited in the session's future: that future would keep
/// the arguments' slots (and the constructor's state) for its whole life.
/// tokio-tungstenite's constructor is an `async fn` that completes on its
/// first poll (it only registers the waker it is polled with, which every
/// read replaces), so polling it once with no waker is enough; `None` if a
/// later version ever made it wait.
pub(super) fn open(
    read_half: OwnedReadHalf,
    read_ahead: Vec<u8>,
    settings: &EngineSettings,
) -> Option<WsReader> {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(settings.max_payload))
        .max_frame_size(Some(settings.max_payload));
    WebSocketStream::from_partially_read(ReadOnly(read_half), read_ahead, Role::Server, Some(config))
        .now_or_never()
}

/// Discards input until the client closes its side or [`LINGER`] passes.
pub(super) async fn linger(reader: WsReader) {
    let mut read_half = reader.into_inner().0;
    // On the heap: an array here would be part of every session's task.
    let mut sink = vec![0u8; 512];
    let _ =
        tokio::time::timeout(LINGER, async { while let Ok(1..) = read_half.read(&mut sink).await {} }).await;
}

/// The close a WebSocket read error calls for.
pub(super) fn close_reason_of(error: &WsError) -> CloseReason {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseReason::MessageTooBig,
        // A peer that drops the connection without a close frame has gone
        // away; that is not a protocol error on its part.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseReason::TransportError,
        WsError::Capacity(_) | WsError::Protocol(_) => CloseReason::ProtocolError,
        WsError::Utf8(_) => CloseReason::InvalidData,
        _ => CloseReason::TransportError,
    }
}

/// The read half, presented to tungstenite as a full duplex stream whose
/// writes go nowhere (see the module doc).
pub(super) struct ReadOnly(OwnedReadHalf);

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
