//! The connection writer: the only owner of the socket's write half.
//!
//! Each wake-up drains everything queued in the outbox and writes it with as
//! few `writev` calls as the kernel allows. Frames are pre-built and shared:
//! nothing is copied or encoded here. When the broker is busy, the
//! [`WritePacer`] spaces a connection's writes so that each carries more.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tracing::debug;

use super::{Drained, Outbox, WritePacer};
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// How long a closing connection may still spend writing: its goodbye frames
/// and the close frame. A peer that does not read by then is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Most slices handed to one `writev` (Linux allows 1024).
const MAX_SLICES: usize = 512;

/// Drains `outbox` into `socket` until the connection closes.
pub async fn run(mut socket: OwnedWriteHalf, outbox: Outbox, metrics: Arc<Metrics>, pacer: Arc<WritePacer>) {
    let mut batch = VecDeque::new();
    let mut last_write: Option<Instant> = None;
    loop {
        if let Some(due) = last_write.map(|at| at + pacer.delay()) {
            // Boxed: a timer held inline would make every idle connection's
            // writer larger; only paced (busy) connections pay for one.
            if Instant::now() < due {
                Box::pin(tokio::time::sleep_until(due)).await;
            }
        }
        let drained = outbox.drain(&mut batch);
        if !batch.is_empty() {
            // Boxed, like every write below: the write's state (slices, the
            // close-grace timer) held inline would more than double the
            // size of every connection's writer, idle or not. One small
            // allocation per write is noise beside the write itself.
            let written = Box::pin(bounded(&outbox, write_batch(&mut socket, &batch, &metrics))).await;
            batch.clear();
            last_write = Some(Instant::now());
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
                let _ = Box::pin(bounded(&outbox, socket.write_all(close.as_bytes()))).await;
            }
            let _ = Box::pin(bounded(&outbox, socket.shutdown())).await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::engineio::CloseReason;

    /// A writer on one end of a loopback connection; the other end is returned.
    async fn writer(
        pacer: Arc<WritePacer>,
    ) -> (Outbox, Arc<Metrics>, TcpStream, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (_read, write) = server.into_split();
        let outbox = Outbox::new(1 << 20);
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(run(write, outbox.clone(), Arc::clone(&metrics), pacer));
        (outbox, metrics, client, task)
    }

    async fn read_exactly(client: &mut TcpStream, frames: &[&Frame]) {
        let expected: Vec<u8> = frames.iter().flat_map(|frame| frame.as_bytes().to_vec()).collect();
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_writer_sends_what_came_during_its_delay_in_one_write() {
        let pacer = Arc::new(WritePacer::new(Duration::from_millis(30)));
        while pacer.adjust(1.0) < Duration::from_millis(30) {}
        let (outbox, metrics, mut client, task) = writer(pacer).await;
        let [a, b, c] = ["a", "b", "c"].map(Frame::text);

        outbox.try_push(&a).expect("open");
        read_exactly(&mut client, &[&a]).await;
        assert_eq!(metrics.writes.load(Relaxed), 1, "the first frame goes out at once");

        outbox.try_push(&b).expect("open");
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(10)).await;
        outbox.try_push(&c).expect("open");
        read_exactly(&mut client, &[&b, &c]).await;
        assert_eq!(metrics.writes.load(Relaxed), 2, "b waited for the delay and went out with c");
        assert_eq!(metrics.frames_out.load(Relaxed), 3);

        outbox.close(CloseReason::ServerShutdown);
        task.await.expect("writer ends");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unpaced_writer_writes_each_frame_as_it_comes() {
        let (outbox, metrics, mut client, task) = writer(Arc::new(WritePacer::new(Duration::ZERO))).await;
        let [a, b] = ["a", "b"].map(Frame::text);
        outbox.try_push(&a).expect("open");
        read_exactly(&mut client, &[&a]).await;
        outbox.try_push(&b).expect("open");
        read_exactly(&mut client, &[&b]).await;
        assert_eq!(metrics.writes.load(Relaxed), 2);
        outbox.close(CloseReason::ServerShutdown);
        task.await.expect("writer ends");
    }
}
