//! The connection writer: the only owner of the socket's write half.
//!
//! Each wake-up drains everything queued in the outbox and writes it with as
//! few `writev` calls as the kernel allows. Frames are pre-built and shared:
//! nothing is copied or encoded here.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tracing::debug;

use super::{Drained, Outbox};
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// How long a closing connection may still spend writing: its goodbye frames
/// and the close frame. A peer that does not read by then is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Most slices handed to one `writev` (Linux allows 1024).
const MAX_SLICES: usize = 512;

/// Drains `outbox` into `socket` until the connection closes.
pub async fn run(mut socket: OwnedWriteHalf, outbox: Outbox, metrics: Arc<Metrics>) {
    let mut batch = VecDeque::new();
    loop {
        let drained = outbox.drain(&mut batch);
        if !batch.is_empty() {
            let written = bounded(&outbox, write_batch(&mut socket, &batch, &metrics)).await;
            batch.clear();
            if let Err(error) = written {
                debug!(%error, "write failed");
                // The reader learns of it through the outbox; nothing is sent any more.
                outbox.close(super::CloseReason::TransportError);
                return;
            }
        }
        if let Drained::Closing(reason) = drained {
            if let Some(code) = reason.close_code() {
                let close = Frame::close(code, reason.as_str());
                let _ = bounded(&outbox, socket.write_all(close.as_bytes())).await;
            }
            let _ = bounded(&outbox, socket.shutdown()).await;
            return;
        }
        // A VecDeque that once held a burst keeps its capacity; give it back
        // when it is large so idle connections stay small.
        if batch.capacity() > 1024 {
            batch = VecDeque::new();
        }
        outbox.ready().await;
    }
}

/// Runs `write` to completion while the connection is open, and for at most
/// [`CLOSE_GRACE`] once it is closing: a peer that stopped reading can block a
/// write forever, and the outbox bound is what closes such a connection.
async fn bounded<T>(outbox: &Outbox, write: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::select! {
        result = write => result,
        () = async {
            outbox.closed().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        } => Err(io::Error::new(io::ErrorKind::TimedOut, "peer not reading while closing")),
    }
}

async fn write_batch(
    socket: &mut OwnedWriteHalf,
    batch: &VecDeque<Bytes>,
    metrics: &Metrics,
) -> io::Result<()> {
    let mut frames = batch.iter();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len().min(MAX_SLICES));
    let mut writes = 0;
    let mut bytes = 0;
    loop {
        slices.clear();
        slices.extend(frames.by_ref().take(MAX_SLICES).map(|frame| IoSlice::new(frame)));
        if slices.is_empty() {
            break;
        }
        let mut pending = &mut slices[..];
        while !pending.is_empty() {
            let written = socket.write_vectored(pending).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            writes += 1;
            bytes += written;
            IoSlice::advance_slices(&mut pending, written);
        }
    }
    Metrics::add(&metrics.writes, writes);
    Metrics::add(&metrics.frames_out, batch.len() as u64);
    Metrics::add(&metrics.bytes_out, bytes as u64);
    Ok(())
}
