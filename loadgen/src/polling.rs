//! A Socket.IO client on Engine.IO HTTP long-polling, for measuring what
//! polling clients cost the server: the handshake `GET`, the namespace
//! CONNECT by `POST`, then a `GET` always held open and one `POST` per frame
//! sent.
//!
//! Each client keeps two kept-alive HTTP/1.1 connections, as a browser
//! does: one for its `GET`s, driven by a task of its own that hands the
//! packets over a channel (so [`PollingConnection::fill`] is cancel-safe,
//! like the WebSocket client's) and answers pings; one for its `POST`s.
//! Responses are read by `Content-Length`, which the servers under test send
//! for every polling answer.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{ConnectError, Endpoint, Incoming, Target, TransportError, await_ack};
use crate::config::AuthMode;
use crate::wire::{Accepted, Namespace, Resume};

/// Largest response head or body read; a polling answer is far smaller.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// One kept-alive HTTP/1.1 connection.
struct HttpConnection {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl HttpConnection {
    async fn open(endpoint: &Endpoint, source: Option<std::net::IpAddr>) -> io::Result<Self> {
        let addr = endpoint.addr();
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, host: endpoint.authority().to_owned(), buf: Vec::with_capacity(1024) })
    }

    /// Sends one request and returns the status and body of its response.
    async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" {
            request.push_str("Content-Type: text/plain;charset=UTF-8\r\n");
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|window| window == b"\r\n\r\n") {
                break at;
            }
            self.read_more().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        if length > MAX_RESPONSE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response too large"));
        }
        let end = head_end + 4 + length;
        while self.buf.len() < end {
            self.read_more().await?;
        }
        let body = self.buf[head_end + 4..end].to_vec();
        self.buf.drain(..end);
        Ok((status, body))
    }

    async fn read_more(&mut self) -> io::Result<()> {
        if self.buf.len() > MAX_RESPONSE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response too large"));
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// An open long-polling client, past the namespace CONNECT.
pub struct PollingConnection {
    posts: HttpConnection,
    /// `/socket.io/?EIO=4&transport=polling&sid=…`
    session_target: String,
    /// Packets the polling task received, in order; `None` once it ended.
    received: mpsc::Receiver<Vec<String>>,
    pending: VecDeque<String>,
    current: String,
    closed: bool,
    next_ack: u32,
    /// Engine.IO pings the polling task answered.
    pings: Arc<AtomicU64>,
    accepted: Accepted,
    poller: JoinHandle<()>,
}

impl std::fmt::Debug for PollingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollingConnection").field("session", &self.session_target).finish_non_exhaustive()
    }
}

impl Drop for PollingConnection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl PollingConnection {
    /// Opens a polling session for client `id` with `token` and CONNECTs to
    /// the namespace, asking to recover a session with `resume` (the caller
    /// bounds this with the connect timeout).
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed.
    pub async fn handshake(
        target: &Target,
        id: u32,
        token: &str,
        resume: Option<Resume<'_>>,
    ) -> Result<Self, ConnectError> {
        let endpoint = target.endpoint(id);
        let source = endpoint.source_ip(id);
        let mut posts = HttpConnection::open(endpoint, source).await.map_err(ConnectError::Tcp)?;
        let mut handshake = format!("{}?EIO=4&transport=polling", target.path());
        if target.auth() == AuthMode::Query {
            handshake.push_str("&token=");
            handshake.push_str(token);
        }
        let bearer = format!("Bearer {token}");
        let headers: &[(&str, &str)] =
            if target.auth() == AuthMode::Header { &[("Authorization", &bearer)] } else { &[] };
        let (status, body) = posts
            .request("GET", &handshake, headers, b"")
            .await
            .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
        if status != 200 {
            return Err(ConnectError::Upgrade(format!("HTTP {status}")));
        }
        let open = String::from_utf8_lossy(&body).into_owned();
        let sid = open
            .strip_prefix('0')
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|open| open.get("sid").and_then(serde_json::Value::as_str).map(str::to_owned))
            .ok_or_else(|| ConnectError::Protocol(format!("expected Engine.IO open, got {open:.40}")))?;
        let session_target = format!("{}?EIO=4&transport=polling&sid={sid}", target.path());

        let gets = HttpConnection::open(endpoint, source).await.map_err(ConnectError::Tcp)?;
        let pongs = HttpConnection::open(endpoint, source).await.map_err(ConnectError::Tcp)?;
        let (sender, received) = mpsc::channel(64);
        let pings = Arc::new(AtomicU64::new(0));
        let poller = tokio::spawn(poll(gets, pongs, session_target.clone(), sender, Arc::clone(&pings)));
        let mut conn = Self {
            posts,
            session_target,
            received,
            pending: VecDeque::new(),
            current: String::new(),
            closed: false,
            next_ack: 0,
            pings,
            accepted: Accepted::default(),
            poller,
        };
        let payload_token = (target.auth() == AuthMode::Payload).then_some(token);
        let frame = target.namespace.resuming_connect_frame(payload_token, resume);
        conn.send(&frame).await.map_err(|_| ConnectError::Closed)?;
        conn.await_connected(&target.namespace).await?;
        Ok(conn)
    }

    /// Reads until the CONNECT ack; events before it stay queued, in order,
    /// ahead of whatever came after.
    async fn await_connected(&mut self, namespace: &Namespace) -> Result<(), ConnectError> {
        let mut early = VecDeque::new();
        loop {
            let frame = match self.next_buffered() {
                Ok(Some(Incoming::Text(text))) => text.to_owned(),
                Ok(Some(Incoming::Closed)) | Err(_) => return Err(ConnectError::Closed),
                Ok(None) => {
                    self.fill().await.map_err(|_| ConnectError::Closed)?;
                    continue;
                }
            };
            if let Some(accepted) = await_ack(frame, namespace, &mut early)? {
                self.accepted = accepted;
                while let Some(frame) = early.pop_back() {
                    self.pending.push_front(frame);
                }
                return Ok(());
            }
        }
    }

    /// What the namespace's CONNECT ack said.
    pub fn accepted(&self) -> &Accepted {
        &self.accepted
    }

    /// The next packet already received, or `None` when more must be
    /// awaited ([`PollingConnection::fill`]). Never blocks.
    ///
    /// # Errors
    /// Never; the signature matches the WebSocket client's.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming<'_>>, TransportError> {
        match self.pending.pop_front() {
            Some(packet) => {
                self.current = packet;
                Ok(Some(Incoming::Text(&self.current)))
            }
            None if self.closed => Ok(Some(Incoming::Closed)),
            None => Ok(None),
        }
    }

    /// Waits for the polling task's next batch of packets. Cancel-safe.
    ///
    /// # Errors
    /// Never; the end of the session shows as [`Incoming::Closed`].
    pub async fn fill(&mut self) -> Result<(), TransportError> {
        match self.received.recv().await {
            Some(batch) => self.pending.extend(batch),
            None => self.closed = true,
        }
        Ok(())
    }

    /// Sends one packet in a `POST` and waits for its `ok`.
    ///
    /// # Errors
    /// A socket error, or a refusal of the `POST`.
    pub async fn send(&mut self, text: &str) -> Result<(), TransportError> {
        let (status, _) = self.posts.request("POST", &self.session_target, &[], text.as_bytes()).await?;
        if status == 200 {
            Ok(())
        } else {
            Err(TransportError::Io(io::Error::other(format!("POST answered {status}"))))
        }
    }

    /// Waits, at most `timeout`, for the session to end, taking nothing;
    /// whether it ended.
    pub async fn wait_closed(&mut self, timeout: std::time::Duration) -> bool {
        let closed =
            tokio::time::timeout(timeout, async { while self.received.recv().await.is_some() {} }).await;
        self.closed |= closed.is_ok();
        self.closed
    }

    /// Engine.IO pings answered so far.
    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }

    /// A fresh ack id for this connection.
    pub fn next_ack_id(&mut self) -> u32 {
        let id = self.next_ack;
        self.next_ack = self.next_ack.wrapping_add(1);
        id
    }

    /// Leaves like `socket.disconnect()`: Socket.IO DISCONNECT, then the
    /// Engine.IO close, in one `POST`.
    pub async fn close(mut self, namespace: &Namespace) {
        let goodbye = format!("{}\u{1e}1", namespace.disconnect_frame());
        let _ = self.send(&goodbye).await;
    }
}

/// The polling task: holds a `GET` open at all times, hands what each one
/// brings to the connection, and answers pings with a `POST` of `3`.
async fn poll(
    mut gets: HttpConnection,
    mut pongs: HttpConnection,
    target: String,
    received: mpsc::Sender<Vec<String>>,
    pings: Arc<AtomicU64>,
) {
    loop {
        let Ok((200, body)) = gets.request("GET", &target, &[], b"").await else { return };
        let body = String::from_utf8_lossy(&body);
        let mut batch = Vec::new();
        let mut closed = false;
        for packet in body.split('\u{1e}') {
            match packet {
                "2" => match pongs.request("POST", &target, &[], b"3").await {
                    Ok((200, _)) => {
                        pings.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => closed = true,
                },
                "1" => closed = true,
                "6" | "" => {}
                packet => batch.push(packet.to_owned()),
            }
        }
        if !batch.is_empty() && received.send(batch).await.is_err() {
            return;
        }
        if closed {
            return;
        }
    }
}
