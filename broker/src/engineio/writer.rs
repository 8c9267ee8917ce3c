//! The connection writer: a task that writes what a WebSocket's outbox
//! queued, started by the outbox when a push cannot write the socket itself.
//!
//! Each turn drains everything queued in the outbox and writes it with as
//! few `writev` calls as the kernel allows. Frames are pre-built and shared:
//! nothing is copied or encoded here. When the broker is busy, the
//! [`WritePacer`](super::WritePacer) spaces a connection's writes so that each carries more,
//! and the task waits for the connection's next push rather than ending.
//! Otherwise, once the queue is empty the task ends: an idle connection has
//! no writer (see [`Outbox`]'s doc); the two never write at once.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::outbox::DirectWrite;
use super::{Drained, Engine, Outbox, WritePacer};
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// How long a closing connection may still spend writing: its goodbye frames
/// and the close frame. A peer that does not read by then is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Most slices handed to one `writev` (Linux allows 1024).
const MAX_SLICES: usize = 512;

/// Gives `outbox` the WebSocket's write half: from now on what is pushed
/// to it goes to `socket`, written by the push itself or by a writer task,
/// and once the outbox closes a writer sends what is queued, the close frame,
/// and shuts the socket down.
pub(super) fn attach(socket: OwnedWriteHalf, outbox: &Outbox, engine: &Engine) {
    attach_with(
        socket,
        outbox,
        Arc::clone(&engine.pacer),
        Arc::clone(&engine.metrics),
        engine.tracker.clone(),
    );
}

/// [`attach`] with the engine's parts given one by one (the tests have no
/// engine).
fn attach_with(
    socket: OwnedWriteHalf,
    outbox: &Outbox,
    pacer: Arc<WritePacer>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
) {
    outbox.attach_writer(DirectWrite { socket: Arc::new(socket), pacer, metrics, tracker, start });
}

/// Spawns a writer task (tracked, so shutdown waits for its close frame).
/// Outside a runtime (a session dropped while the runtime shuts down) there
/// is none: the socket closes when the outbox is dropped.
fn start(outbox: Outbox, direct: DirectWrite, last_write: Option<Instant>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let tracker = direct.tracker.clone();
        tracker.spawn_on(run(outbox, direct, last_write), &runtime);
    }
}

/// Drains `outbox` into its socket until nothing is left or the connection
/// closes; `last_write` is when the previous writer last wrote.
async fn run(outbox: Outbox, direct: DirectWrite, mut last_write: Option<Instant>) {
    let DirectWrite { socket, pacer, metrics, .. } = direct;
    let mut batch = VecDeque::new();
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
            let mut cursor = BatchCursor::default();
            // Almost always the socket takes the whole batch at once: that
            // write needs no future at all. Only a full socket buffer sends
            // the rest through the (boxed, so idle writers stay small) path
            // that waits for the socket.
            let written = match write_ready(&socket, &batch, &mut cursor) {
                Ok(true) => Ok(()),
                Ok(false) => Box::pin(bounded(&outbox, write_rest(&socket, &batch, &mut cursor))).await,
                Err(error) => Err(error),
            };
            if written.is_ok() {
                cursor.count(&batch, &metrics);
            }
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
            drop(outbox.detach_writer());
            if let Some(code) = reason.close_code() {
                let close = VecDeque::from([Frame::close(code, reason.as_str()).as_bytes().clone()]);
                let _ = Box::pin(bounded(&outbox, write_rest(&socket, &close, &mut BatchCursor::default())))
                    .await;
            }
            // The outbox gave its handle back: this is the only one left.
            if let Ok(mut socket) = Arc::try_unwrap(socket) {
                let _ = Box::pin(bounded(&outbox, socket.shutdown())).await;
            }
            return;
        }
        // While the broker is busy (the pacer delays writes, so every push
        // queues for a writer) a connection that was written to will most
        // likely be written to again soon: waiting for that push costs a
        // wake-up, where ending here and being started again by it would
        // cost a task. A writer still waiting once the broker is quiet ends
        // after the next push it is woken for.
        if !pacer.delay().is_zero() {
            outbox.ready().await;
            continue;
        }
        if outbox.finish_writing(last_write) {
            return;
        }
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

/// Writes what is left of `batch` after `cursor`, waiting for the socket
/// whenever its buffer is full.
async fn write_rest(
    socket: &OwnedWriteHalf,
    batch: &VecDeque<Bytes>,
    cursor: &mut BatchCursor,
) -> io::Result<()> {
    loop {
        socket.writable().await?;
        if write_ready(socket, batch, cursor)? {
            return Ok(());
        }
    }
}

/// Frames a batch may have for its slices to sit on the stack; a larger
/// batch allocates them (at most [`MAX_SLICES`]), a cost it spreads over
/// its frames. Filling a stack array of `MAX_SLICES` for every write cost
/// more than the allocation it saved.
const STACK_SLICES: usize = 8;

/// Writes `batch` from `cursor` on as far as `socket` takes it without
/// waiting: `Ok(true)` once all of it is written, `Ok(false)` when the
/// socket's buffer is full.
fn write_ready(
    socket: &OwnedWriteHalf,
    batch: &VecDeque<Bytes>,
    cursor: &mut BatchCursor,
) -> io::Result<bool> {
    let mut write = |slices: &[IoSlice<'_>]| socket.try_write_vectored(slices);
    let done = if batch.len().saturating_sub(cursor.frame) <= STACK_SLICES {
        cursor.write_with(batch, &mut [IoSlice::new(&[]); STACK_SLICES], &mut write)
    } else {
        cursor.write_with(batch, &mut vec![IoSlice::new(&[]); batch.len().min(MAX_SLICES)], &mut write)
    };
    match done {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(error) => Err(error),
    }
}

/// Writes every frame of `batch` to a blocking `sink`, as the writer does to
/// its socket: at most [`MAX_SLICES`] frames per vectored write, partial
/// writes resumed where they stopped. Returns the number of writes made.
///
/// The benches time the writer's batching through this (`bench/benches/fanout.rs`).
///
/// # Errors
/// The sink's error, or [`io::ErrorKind::WriteZero`] if it takes nothing.
pub fn write_batch_blocking(sink: &mut impl Write, batch: &VecDeque<Bytes>) -> io::Result<u64> {
    let mut cursor = BatchCursor::default();
    let mut slices = vec![IoSlice::new(&[]); batch.len().min(MAX_SLICES)];
    cursor.write_with(batch, &mut slices, &mut |slices| sink.write_vectored(slices))?;
    Ok(cursor.writes)
}

/// How far the writing of one batch got: the frame to continue with, the
/// bytes of it already written, and what the writes so far took.
#[derive(Debug, Default)]
struct BatchCursor {
    frame: usize,
    offset: usize,
    writes: u64,
    bytes: usize,
}

impl BatchCursor {
    /// Fills `slices` with the unwritten rest of `batch`, as much as fits;
    /// returns how many it filled (0 once everything is written).
    fn fill<'a>(&self, batch: &'a VecDeque<Bytes>, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(batch.range(self.frame..)) {
            let skip = if count == 0 { self.offset } else { 0 };
            *slot = IoSlice::new(frame.get(skip..).unwrap_or_default());
            count += 1;
        }
        count
    }

    /// Records that a write took `written` bytes of what [`fill`](Self::fill) gave.
    fn advance(&mut self, batch: &VecDeque<Bytes>, written: usize) -> io::Result<()> {
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.writes += 1;
        self.bytes += written;
        let mut left = written;
        while let Some(frame) = batch.get(self.frame) {
            let rest = frame.len().saturating_sub(self.offset);
            if left < rest {
                self.offset += left;
                break;
            }
            left -= rest;
            self.frame += 1;
            self.offset = 0;
        }
        Ok(())
    }

    /// Writes the rest of `batch` with `write`, `slices.len()` frames at
    /// most per call, until all of it is written or `write` fails.
    fn write_with<'a>(
        &mut self,
        batch: &'a VecDeque<Bytes>,
        slices: &mut [IoSlice<'a>],
        write: &mut impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<()> {
        loop {
            let count = self.fill(batch, slices);
            let Some(slices) = slices.get(..count).filter(|slices| !slices.is_empty()) else {
                return Ok(());
            };
            let written = write(slices)?;
            self.advance(batch, written)?;
        }
    }

    /// Adds what this batch took to the writer's counters.
    fn count(&self, batch: &VecDeque<Bytes>, metrics: &Metrics) {
        Metrics::add(&metrics.writes, self.writes);
        Metrics::add(&metrics.frames_out, batch.len() as u64);
        Metrics::add(&metrics.bytes_out, self.bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::engineio::CloseReason;

    /// An outbox with one end of a loopback connection attached; the other
    /// end is returned, and the tracker of its writer tasks.
    async fn writer(pacer: Arc<WritePacer>) -> (Outbox, Arc<Metrics>, TcpStream, TaskTracker) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (_read, write) = server.into_split();
        let outbox = Outbox::new(1 << 20);
        let metrics = Arc::new(Metrics::default());
        let tracker = TaskTracker::new();
        attach_with(write, &outbox, pacer, Arc::clone(&metrics), tracker.clone());
        (outbox, metrics, client, tracker)
    }

    /// Closes `outbox` and waits for its last writer to end.
    async fn close(outbox: &Outbox, tracker: TaskTracker) {
        outbox.close(CloseReason::ServerShutdown);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.expect("the writer ends");
    }

    async fn read_exactly(client: &mut TcpStream, frames: &[&Frame]) {
        let expected: Vec<u8> = frames.iter().flat_map(|frame| frame.as_bytes().to_vec()).collect();
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expected);
    }

    /// A sink that takes at most `step` bytes per write, however many slices it is given.
    struct Trickle {
        taken: Vec<u8>,
        step: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.step - n);
                self.taken.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_survives_partial_writes_in_order() {
        let batch: VecDeque<Bytes> =
            (0..1000).map(|i| Frame::text(&format!("frame {i}")).as_bytes().clone()).collect();
        let expected: Vec<u8> = batch.iter().flat_map(|frame| frame.to_vec()).collect();
        for step in [1, 7, 100, expected.len()] {
            let mut sink = Trickle { taken: Vec::new(), step };
            let writes = write_batch_blocking(&mut sink, &batch).expect("the sink takes everything");
            assert_eq!(sink.taken, expected, "step {step}");
            // A write takes `step` bytes, or at most MAX_SLICES frames.
            let least = expected.len().div_ceil(step).max(batch.len().div_ceil(MAX_SLICES));
            assert_eq!(writes, least as u64, "step {step}: every write but the last is full");
        }
    }

    #[test]
    fn a_sink_that_takes_nothing_is_an_error() {
        let batch: VecDeque<Bytes> = VecDeque::from([Frame::text("a").as_bytes().clone()]);
        let error = write_batch_blocking(&mut Trickle { taken: Vec::new(), step: 0 }, &batch);
        assert_eq!(error.map_err(|error| error.kind()), Err(io::ErrorKind::WriteZero));
    }

    /// Lets the writer task run until it has ended.
    async fn until_no_writer(outbox: &Outbox) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !outbox.is_writer_idle() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer ends");
    }

    #[tokio::test]
    async fn a_push_to_an_idle_writer_writes_the_socket_itself() {
        let (outbox, metrics, mut client, tracker) = writer(Arc::new(WritePacer::new(Duration::ZERO))).await;
        let [a, b] = ["a", "b"].map(Frame::text);
        until_no_writer(&outbox).await;
        outbox.try_push(&a).expect("open");
        // No await since the push: the writer task has not run, yet the frame left.
        assert_eq!(outbox.pending_bytes(), 0, "nothing queued");
        assert_eq!(metrics.writes.load(Relaxed), 1);
        assert_eq!(metrics.frames_out.load(Relaxed), 1);
        outbox.try_push(&b).expect("open");
        read_exactly(&mut client, &[&a, &b]).await;
        close(&outbox, tracker).await;
    }

    #[tokio::test]
    async fn a_busy_broker_queues_for_the_writer_instead() {
        let pacer = Arc::new(WritePacer::new(Duration::from_millis(30)));
        while pacer.adjust(1.0) < Duration::from_millis(30) {}
        let (outbox, metrics, mut client, tracker) = writer(Arc::clone(&pacer)).await;
        let [a, b] = ["a", "b"].map(Frame::text);
        until_no_writer(&outbox).await;
        outbox.try_push(&a).expect("open");
        assert_eq!(outbox.pending_bytes(), a.len(), "queued: batching beats a write per frame");
        read_exactly(&mut client, &[&a]).await;
        assert_eq!(metrics.writes.load(Relaxed), 1, "the writer wrote it");
        assert!(!outbox.is_writer_idle(), "still busy: the writer waits for the next push");
        assert_eq!(tracker.len(), 1);

        while pacer.adjust(0.0) > Duration::ZERO {}
        outbox.try_push(&b).expect("open");
        read_exactly(&mut client, &[&b]).await;
        until_no_writer(&outbox).await;
        assert_eq!(tracker.len(), 0, "quiet again, its queue empty: the writer task ended");
        close(&outbox, tracker).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_writer_sends_what_came_during_its_delay_in_one_write() {
        let pacer = Arc::new(WritePacer::new(Duration::from_millis(30)));
        while pacer.adjust(1.0) < Duration::from_millis(30) {}
        let (outbox, metrics, mut client, tracker) = writer(pacer).await;
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

        close(&outbox, tracker).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_unpaced_writer_writes_each_frame_as_it_comes() {
        let (outbox, metrics, mut client, tracker) = writer(Arc::new(WritePacer::new(Duration::ZERO))).await;
        let [a, b] = ["a", "b"].map(Frame::text);
        outbox.try_push(&a).expect("open");
        read_exactly(&mut client, &[&a]).await;
        outbox.try_push(&b).expect("open");
        read_exactly(&mut client, &[&b]).await;
        assert_eq!(metrics.writes.load(Relaxed), 2);
        close(&outbox, tracker).await;
    }
}
