//! The WebSocket side of a session's reading: tungstenite parses inbound
//! frames from the socket's read half; the session driver
//! ([`super::driver`]) takes the messages.
//!
//! tungstenite reads from the socket's read half only. Whatever it would
//! write (automatic pongs, close replies) goes to a sink: every outbound byte
//! is a pre-built frame that the writer puts on the socket itself.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{CloseReason, EngineSettings};

/// tungstenite's read buffer per connection, allocated up front; it is also
/// the most one read takes. Chat frames are small (a CONNECT with its JWT is
/// about 300 bytes) and a larger message grows the buffer only while it is
/// read. Measured with 10k idle clients (RSS per connection): 4096 cost
/// 11.4 KB and 1024 cost 8.2 KB early on; after later savings, 1024 cost
/// 4.9 KB and 512 cost 4.4 KB. Less does not help: once a frame's header is
/// parsed, tungstenite reserves the frame's length on top of what it already
/// holds, so a buffer that takes the CONNECT (about 230 bytes with the load
/// generator's tokens) without growing needs the header plus twice the
/// payload; 256 grows to 512 on the first CONNECT.
const READ_BUFFER_BYTES: usize = 512;

/// How long a closed session keeps reading and discarding what the client
/// still sends. Closing a socket with unread input makes the kernel send a
/// reset, and a reset makes the client drop the frames it had not yet read —
/// the error, the DISCONNECT and the close frame that explain the close.
const LINGER: Duration = Duration::from_secs(2);

/// A session's WebSocket, read side only: tungstenite's protocol state over
/// the socket's read half, a [`Stream`] of the messages the client sends.
///
/// Not tokio-tungstenite's `WebSocketStream`: that one lets a reader and a
/// writer on two tasks share the socket, and keeps two shared waker proxies
/// to tell them apart, two more allocations per connection. Here only the
/// session's own task reads, so the waker it last polled with is enough.
pub(super) struct WsReader {
    socket: WebSocket<ReadOnly>,
    /// The stream ended (the client closed, or an error was returned): it
    /// yields nothing more.
    ended: bool,
}

impl Stream for WsReader {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let reader = &mut *self;
        if reader.ended {
            return Poll::Ready(None);
        }
        reader.socket.get_mut().poll_with(cx.waker());
        match reader.socket.read() {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            // The read half was pending: it wakes the waker just set.
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(WsError::AlreadyClosed | WsError::ConnectionClosed) => {
                reader.ended = true;
                Poll::Ready(None)
            }
            Err(error) => {
                reader.ended = true;
                Poll::Ready(Some(Err(error)))
            }
        }
    }
}

/// Starts reading WebSocket frames from `read_half`, after `read_ahead`
/// (bytes the HTTP layer read past the upgrade request).
pub(super) fn open(read_half: OwnedReadHalf, read_ahead: Vec<u8>, settings: &EngineSettings) -> WsReader {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(settings.max_payload))
        .max_frame_size(Some(settings.max_payload));
    let read_only = ReadOnly { read_half, waker: None };
    WsReader {
        socket: WebSocket::from_partially_read(read_only, read_ahead, Role::Server, Some(config)),
        ended: false,
    }
}

/// Discards input until the client closes its side or [`LINGER`] passes.
pub(super) async fn linger(reader: WsReader) {
    let mut read_half = reader.socket.into_inner().read_half;
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

thread_local! {
    /// Set while [`try_next`] runs on this thread (see there).
    static READING_NOW: Cell<bool> = const { Cell::new(false) };
}

/// The next message if the client has already sent it: parsed from what
/// tungstenite holds or the socket's receive buffer has, never waiting.
/// `None` when that is not a whole message.
///
/// tokio reads a socket only once its reactor has seen an event saying it is
/// readable, and that event may not have been dispatched yet (the reactor
/// runs between tasks): so while this runs, a read that tokio would leave
/// pending goes to the socket itself. Only reached when a session ends, once
/// per message left.
pub(super) fn try_next(reader: &mut WsReader) -> Option<Option<Result<Message, WsError>>> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            READING_NOW.set(false);
        }
    }
    READING_NOW.set(true);
    let _reset = Reset;
    // Unconstrained: a spent task budget would read as an empty socket.
    tokio::task::unconstrained(reader.next()).now_or_never()
}

/// The read half, presented to tungstenite as a blocking-style stream that
/// says `WouldBlock` when tokio's read would be pending, and whose writes go
/// nowhere (see the module doc).
pub(super) struct ReadOnly {
    read_half: OwnedReadHalf,
    /// The waker of the last poll of the [`WsReader`]: a pending read wakes it.
    waker: Option<Waker>,
}

impl ReadOnly {
    /// Reads from here on wake `waker` when they are pending.
    fn poll_with(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|held| held.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }
}

impl io::Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(self.waker.as_ref().unwrap_or(Waker::noop()));
        let mut buf = ReadBuf::new(buf);
        let mut polled = Pin::new(&mut self.read_half).poll_read(&mut cx, &mut buf);
        if polled.is_pending() && READING_NOW.get() {
            polled = read_now(&self.read_half, &mut buf);
        }
        match polled {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl io::Write for ReadOnly {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads what the socket holds, whatever tokio knows of it (see [`try_next`]):
/// pending when it holds nothing. The socket is non-blocking, and so is the
/// duplicate of its descriptor read here, which shares that flag.
#[cfg(unix)]
fn read_now(read_half: &OwnedReadHalf, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    use std::io::Read as _;
    use std::os::fd::AsFd as _;
    let socket = read_half.as_ref().as_fd().try_clone_to_owned().map(std::net::TcpStream::from);
    match socket.and_then(|mut socket| socket.read(buf.initialize_unfilled())) {
        Ok(read) => {
            buf.advance(read);
            Poll::Ready(Ok(()))
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        Err(error) => Poll::Ready(Err(error)),
    }
}

/// Elsewhere, only what tokio has seen is read.
#[cfg(not(unix))]
fn read_now(_: &OwnedReadHalf, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    Poll::Pending
}
