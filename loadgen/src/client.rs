//! One Socket.IO client connection: TCP from a chosen source address, the
//! WebSocket upgrade, Engine.IO open, namespace CONNECT with authentication,
//! and then text frames in and out. [`Connection`] is either this
//! ([`WsConnection`]) or an HTTP long-polling client
//! ([`crate::polling::PollingConnection`]), as `--transport` says.
//!
//! Owns the transport rules a real client must keep (answer every Engine.IO
//! ping `2` with `3` and every WebSocket ping with a pong, mask what it
//! sends, treat `1` and a WebSocket close as the end) and leaves chat
//! semantics to [`crate::session`]. tungstenite does the upgrade; after it
//! the connection reads the raw `TcpStream` into one reusable buffer and
//! scans frames itself ([`crate::ws`]), since tungstenite's per-message path
//! (an allocation and a stream poll per frame) was most of the load
//! generator's cost. Invariant: [`Connection::fill`] is cancel-safe, so
//! callers may race it against timers in `select!`; a pong that could not be
//! written yet stays queued and goes out first on the next call.

use std::future::poll_fn;
use std::hash::{BuildHasher as _, RandomState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};

use crate::config::{AuthMode, TargetOptions, TransportMode};
use crate::polling::PollingConnection;
use crate::token::TokenMinter;
use crate::wire::{self, Accepted, Namespace, Packet, Resume};
use crate::ws::{self, FrameReader, Kind, Opcode};

/// Connections per loopback source address when picking them automatically:
/// well below the ~28 000 ports of Linux's default ephemeral range, since
/// `bind()` to port 0 slows down as an address fills (at 25 000 per address,
/// 100 000 clients lagged loadgen's schedule by a minute; at 6 250, not at
/// all; bench/CLUSTER.md).
const CLIENTS_PER_SOURCE_IP: u64 = 10_000;

/// One server of the target: where a share of the clients connect.
#[derive(Debug)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    addr: SocketAddr,
    authority: String,
    source_ips: Vec<IpAddr>,
}

impl Endpoint {
    /// The resolved server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as given in the URL.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Source addresses connections are spread over (empty: the OS picks).
    pub fn source_ips(&self) -> &[IpAddr] {
        &self.source_ips
    }

    /// The source address of client `id`'s connections, if they are spread.
    pub fn source_ip(&self, id: u32) -> Option<IpAddr> {
        self.source_ips.get(id as usize % self.source_ips.len().max(1)).copied()
    }

    async fn resolve(url: &str, requested_source_ips: u32, peak_clients: u64) -> anyhow::Result<Self> {
        let trimmed = url.trim_end_matches('/');
        let authority = match trimmed.split_once("://") {
            Some(("http" | "ws", rest)) => rest,
            Some((scheme, _)) => {
                bail!("unsupported scheme {scheme}:// (use http:// or ws://; TLS is not supported)")
            }
            None => trimmed,
        };
        let authority = authority.split('/').next().unwrap_or(authority).to_owned();
        let addr = resolve_authority(&authority).await?;
        let source_ips = source_ips(addr.ip(), requested_source_ips, peak_clients);
        Ok(Self { url: url.to_owned(), addr, authority, source_ips })
    }
}

/// Everything needed to open a client connection to the server under test:
/// one or more [`Endpoint`]s (servers acting as one) and what all clients
/// share. Client `id` connects to endpoint `id mod endpoints`, so clients
/// with consecutive ids (a room's members) land on different servers.
#[derive(Debug)]
pub struct Target {
    endpoints: Vec<Endpoint>,
    path: String,
    /// The chat namespace.
    pub namespace: Namespace,
    auth: AuthMode,
    read_buffer: usize,
    delayed_ack: bool,
    connect_timeout: Duration,
    transport: TransportMode,
    /// Mints each client's JWT.
    pub minter: TokenMinter,
}

/// Resolves `host[:port]` (port 80 when none is given) to its first address.
///
/// # Errors
/// A host that does not resolve.
pub async fn resolve_authority(authority: &str) -> anyhow::Result<std::net::SocketAddr> {
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolves to no address"))
}

impl Target {
    /// Resolves every `options.target` and picks source addresses for up to
    /// `peak_clients` simultaneous connections in all.
    ///
    /// # Errors
    /// No target, an unsupported URL scheme, or a host that does not resolve.
    pub async fn resolve(options: &TargetOptions, peak_clients: u64) -> anyhow::Result<Self> {
        if options.target.is_empty() {
            bail!("no --target given");
        }
        let mut endpoints = Vec::with_capacity(options.target.len());
        for url in &options.target {
            // A source address's ports are shared by every destination, so
            // the spread is sized by all the clients, not one target's share.
            let endpoint = Endpoint::resolve(url, options.source_ips, peak_clients)
                .await
                .with_context(|| format!("target {url}"))?;
            endpoints.push(endpoint);
        }
        let path =
            if options.path.starts_with('/') { options.path.clone() } else { format!("/{}", options.path) };
        Ok(Self {
            endpoints,
            path,
            namespace: Namespace::new(&options.namespace),
            auth: options.auth,
            read_buffer: options.ws_read_buffer.max(256),
            delayed_ack: options.delayed_ack,
            connect_timeout: options.connect_timeout,
            transport: options.transport,
            minter: TokenMinter::new(options.secret(), options.sub_base, options.token_ttl)
                .with_string_sub(options.string_sub),
        })
    }

    /// Every server, in `--target` order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The index of the endpoint client `id` connects to.
    pub fn endpoint_index(&self, id: u32) -> usize {
        id as usize % self.endpoints.len()
    }

    /// The endpoint client `id` connects to.
    pub fn endpoint(&self, id: u32) -> &Endpoint {
        &self.endpoints[self.endpoint_index(id)]
    }

    /// The first endpoint: the one faulty soak clients and `/metrics` use.
    pub fn first(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// The Engine.IO endpoint path, e.g. `/socket.io/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The per-client connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Where clients put their token.
    pub fn auth(&self) -> AuthMode {
        self.auth
    }

    /// Whether client `id` uses long-polling (see [`TransportMode`]).
    pub fn polls(&self, id: u32) -> bool {
        match self.transport {
            TransportMode::Websocket => false,
            TransportMode::Polling => true,
            TransportMode::Mixed => id % 2 == 1,
        }
    }

    fn handshake_url(&self, id: u32, token: &str) -> String {
        let authority = &self.endpoint(id).authority;
        let mut url = format!("ws://{authority}{}?EIO=4&transport=websocket", self.path);
        if self.auth == AuthMode::Query {
            url.push_str("&token=");
            url.push_str(token);
        }
        url
    }
}

/// 127.0.0.1 … 127.0.0.n for a loopback IPv4 target, else none.
fn source_ips(target: IpAddr, requested: u32, peak_clients: u64) -> Vec<IpAddr> {
    let IpAddr::V4(v4) = target else { return Vec::new() };
    if !v4.is_loopback() {
        return Vec::new();
    }
    let count = match requested {
        0 => u32::try_from(peak_clients.div_ceil(CLIENTS_PER_SOURCE_IP)).unwrap_or(u32::MAX),
        n => n,
    }
    .min(250);
    if count <= 1 {
        return Vec::new();
    }
    (1..=count).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8))).collect()
}

/// Why a client could not get into the namespace.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Binding the source address failed.
    #[error("binding source address: {0}")]
    Bind(std::io::Error),
    /// The TCP connect failed.
    #[error("tcp connect: {0}")]
    Tcp(std::io::Error),
    /// The WebSocket upgrade failed (HTTP error status, or I/O).
    #[error("websocket upgrade: {0}")]
    Upgrade(String),
    /// The namespace refused the client (`44`), usually authentication.
    #[error("refused: {0}")]
    Refused(String),
    /// The server sent something a Socket.IO server should not.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server closed the connection during the handshake.
    #[error("closed during handshake")]
    Closed,
    /// The whole handshake took longer than the connect timeout.
    #[error("timed out")]
    Timeout,
}

impl ConnectError {
    /// A short label for counting failures by cause.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Bind(e) => format!("bind: {}", e.kind()),
            ConnectError::Tcp(e) => format!("tcp: {}", e.kind()),
            ConnectError::Upgrade(reason) => format!("upgrade: {reason}"),
            ConnectError::Refused(message) => format!("refused: {message}"),
            ConnectError::Protocol(_) => "protocol".to_owned(),
            ConnectError::Closed => "closed".to_owned(),
            ConnectError::Timeout => "timeout".to_owned(),
        }
    }
}

/// Why an open connection stopped working.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Reading or writing the socket failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The server broke the WebSocket framing rules.
    #[error("websocket: {0}")]
    Frame(#[from] ws::FrameError),
}

/// What [`Connection::next_buffered`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A Socket.IO text frame (Engine.IO pings are answered, not shown).
    Text(&'a str),
    /// The server closed: Engine.IO `1`, a WebSocket close, or end of stream.
    Closed,
}

/// An open client connection, past the namespace CONNECT: WebSocket or
/// long-polling. The session drives both the same way.
#[derive(Debug)]
pub enum Connection {
    /// A WebSocket client.
    WebSocket(WsConnection),
    /// A long-polling client (boxed: it is the larger, and the rarer).
    Polling(Box<PollingConnection>),
    /// No connection: it was dropped ([`Connection::take`]) and none has
    /// replaced it yet. Reads see the end, writes fail.
    Gone,
}

impl Connection {
    /// Connects client `id` with `token` over the transport `--transport`
    /// gives it, and waits for the namespace to accept it.
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed, or [`ConnectError::Timeout`].
    pub async fn open(target: &Target, id: u32, token: &str) -> Result<Self, ConnectError> {
        Self::reopen(target, id, token, None).await
    }

    /// [`Connection::open`] for a client that had a session: with `resume`,
    /// the CONNECT asks the server to recover it (see [`Resume`]); whether it
    /// did shows in [`Connection::accepted`]. Events the server sends before
    /// its CONNECT ack (socket.io replays missed packets first) are kept and
    /// come out of [`Connection::next_buffered`] first, as socket.io-client
    /// buffers them until it is connected.
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed, or [`ConnectError::Timeout`].
    pub async fn reopen(
        target: &Target,
        id: u32,
        token: &str,
        resume: Option<Resume<'_>>,
    ) -> Result<Self, ConnectError> {
        if target.polls(id) {
            let handshake = PollingConnection::handshake(target, id, token, resume);
            tokio::time::timeout(target.connect_timeout, handshake)
                .await
                .unwrap_or(Err(ConnectError::Timeout))
                .map(|conn| Self::Polling(Box::new(conn)))
        } else {
            WsConnection::open(target, id, token, resume).await.map(Self::WebSocket)
        }
    }

    /// What the namespace's CONNECT ack said (`sid`, and `pid` when the
    /// server offers recovery); `None` before the CONNECT.
    pub fn accepted(&self) -> Option<&Accepted> {
        match self {
            Self::WebSocket(conn) => conn.connected.as_ref().map(|connected| &connected.accepted),
            Self::Polling(conn) => Some(conn.accepted()),
            Self::Gone => None,
        }
    }

    /// Takes the connection out, leaving [`Connection::Gone`].
    pub fn take(&mut self) -> Self {
        std::mem::replace(self, Self::Gone)
    }

    /// Whether there is no connection.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone)
    }

    /// The next text frame already received, or `None` when more must be
    /// read ([`Connection::fill`]). Never blocks.
    ///
    /// # Errors
    /// The server broke the WebSocket framing rules.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming<'_>>, TransportError> {
        match self {
            Self::WebSocket(conn) => conn.next_buffered(),
            Self::Polling(conn) => conn.next_buffered(),
            Self::Gone => Ok(Some(Incoming::Closed)),
        }
    }

    /// Reads more. Cancel-safe.
    ///
    /// # Errors
    /// A socket error.
    pub async fn fill(&mut self) -> Result<(), TransportError> {
        match self {
            Self::WebSocket(conn) => conn.fill().await,
            Self::Polling(conn) => conn.fill().await,
            Self::Gone => Ok(()),
        }
    }

    /// Sends one text frame.
    ///
    /// # Errors
    /// A socket error.
    pub async fn send(&mut self, text: &str) -> Result<(), TransportError> {
        match self {
            Self::WebSocket(conn) => conn.send(text).await,
            Self::Polling(conn) => conn.send(text).await,
            Self::Gone => Err(TransportError::Io(io::ErrorKind::NotConnected.into())),
        }
    }

    /// A fresh ack id for this connection.
    pub fn next_ack_id(&mut self) -> u32 {
        match self {
            Self::WebSocket(conn) => conn.next_ack_id(),
            Self::Polling(conn) => conn.next_ack_id(),
            Self::Gone => 0,
        }
    }

    /// Leaves like `socket.disconnect()`.
    pub async fn close(self, namespace: &Namespace, linger: Duration) {
        match self {
            Self::WebSocket(conn) => conn.close(namespace, linger).await,
            Self::Polling(conn) => conn.close(namespace).await,
            Self::Gone => {}
        }
    }

    /// Drops the connection without any goodbye.
    pub fn abort(self) {
        drop(self);
    }

    /// A WebSocket connection up to the Engine.IO open, without the
    /// namespace CONNECT (see [`WsConnection::upgrade`]): the soak's
    /// misbehaving clients are WebSocket clients.
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed.
    pub async fn upgrade(
        target: &Target,
        id: u32,
        token: Option<&str>,
        tuning: &Tuning,
    ) -> Result<Self, ConnectError> {
        WsConnection::upgrade(target, id, token, tuning).await.map(Self::WebSocket)
    }

    /// Sends the namespace CONNECT and waits for the answer (WebSocket only;
    /// a polling connection is connected when it opens).
    ///
    /// # Errors
    /// As [`WsConnection::connect_namespace`].
    pub async fn connect_namespace(
        &mut self,
        target: &Target,
        token: Option<&str>,
    ) -> Result<(), ConnectError> {
        match self {
            Self::WebSocket(conn) => conn.connect_namespace(target, token).await,
            Self::Polling(_) => Ok(()),
            Self::Gone => Err(ConnectError::Closed),
        }
    }

    /// Engine.IO pings answered so far.
    pub fn pings(&self) -> u64 {
        match self {
            Self::WebSocket(conn) => conn.pings(),
            Self::Polling(conn) => conn.pings(),
            Self::Gone => 0,
        }
    }

    /// pingInterval + pingTimeout from the Engine.IO open (WebSocket only).
    pub fn heartbeat(&self) -> Option<Duration> {
        match self {
            Self::WebSocket(conn) => conn.heartbeat(),
            Self::Polling(_) | Self::Gone => None,
        }
    }

    /// The WebSocket close code the server sent, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::WebSocket(conn) => conn.close_code(),
            Self::Polling(_) | Self::Gone => None,
        }
    }

    /// Drops the connection with a TCP reset (WebSocket; a polling
    /// connection is just dropped).
    pub fn abort_with_reset(self) {
        match self {
            Self::WebSocket(conn) => conn.abort_with_reset(),
            Self::Polling(conn) => drop(conn),
            Self::Gone => {}
        }
    }

    /// Sends one raw WebSocket frame.
    ///
    /// # Errors
    /// A socket error; on a polling connection, always.
    pub async fn send_raw(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), TransportError> {
        match self {
            Self::WebSocket(conn) => conn.send_raw(opcode, payload).await,
            Self::Polling(_) | Self::Gone => Err(TransportError::Io(io::ErrorKind::Unsupported.into())),
        }
    }

    /// Writes bytes outside any frame.
    ///
    /// # Errors
    /// A socket error; on a polling connection, always.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        match self {
            Self::WebSocket(conn) => conn.send_bytes(bytes).await,
            Self::Polling(_) | Self::Gone => Err(TransportError::Io(io::ErrorKind::Unsupported.into())),
        }
    }

    /// Waits, at most `timeout`, for the server to close; whether it did.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        match self {
            Self::WebSocket(conn) => conn.wait_closed(timeout).await,
            Self::Polling(conn) => conn.wait_closed(timeout).await,
            Self::Gone => true,
        }
    }
}

/// An open WebSocket client connection, past the namespace CONNECT.
pub struct WsConnection {
    stream: TcpStream,
    reader: FrameReader,
    /// Encoded frames not yet written, from `written` on.
    outgoing: Vec<u8>,
    written: usize,
    /// Masking keys come from a per-connection xorshift sequence.
    mask_state: u64,
    /// The server closed (or the stream ended); sticky.
    closed: bool,
    eof: bool,
    /// `--delayed-ack`: quick ACKs off again after each read.
    delayed_ack: bool,
    /// The code of the server's WebSocket close, if it sent one.
    close_code: Option<u16>,
    /// pingInterval + pingTimeout, from the Engine.IO open.
    heartbeat: Option<Duration>,
    /// Engine.IO pings answered.
    pings: u64,
    next_ack: u32,
    /// The namespace's answer, once it came (boxed: a pointer is all an
    /// idle connection pays for it).
    connected: Option<Box<Connected>>,
}

/// The CONNECT ack's fields, and the text frames received before it
/// (handed out first), with the one handed out last (a frame borrowed by
/// the caller must live in the connection).
#[derive(Debug, Default)]
struct Connected {
    accepted: Accepted,
    early: std::collections::VecDeque<String>,
    current: String,
}

/// Socket options for clients that misbehave on purpose.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// `SO_RCVBUF` before connecting: a small one makes a client that stops
    /// reading back up into the server quickly.
    pub recv_buffer: Option<u32>,
}

impl std::fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("next_ack", &self.next_ack).finish_non_exhaustive()
    }
}

/// Outgoing bytes kept between frames; a larger buffer (a large send) is
/// given back once written.
const KEPT_OUTGOING_BYTES: usize = 16 << 10;

impl WsConnection {
    /// Connects client `id` with `token` and waits for the namespace to accept it.
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed, or [`ConnectError::Timeout`].
    pub async fn open(
        target: &Target,
        id: u32,
        token: &str,
        resume: Option<Resume<'_>>,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(target.connect_timeout, async {
            let mut conn = Self::upgrade(target, id, Some(token), &Tuning::default()).await?;
            conn.resume_namespace(target, Some(token), resume).await?;
            Ok(conn)
        })
        .await
        .unwrap_or(Err(ConnectError::Timeout))
    }

    /// The TCP connect, WebSocket upgrade and Engine.IO open, without the
    /// namespace CONNECT: the state a client is in before it authenticates.
    /// `token` goes into the URL or header as the target's auth mode says
    /// (never into a CONNECT: none is sent). No timeout of its own.
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed.
    pub async fn upgrade(
        target: &Target,
        id: u32,
        token: Option<&str>,
        tuning: &Tuning,
    ) -> Result<Self, ConnectError> {
        let endpoint = target.endpoint(id);
        let socket = if endpoint.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(ConnectError::Tcp)?;
        if let Some(ip) = endpoint.source_ip(id) {
            socket.bind(SocketAddr::new(ip, 0)).map_err(ConnectError::Bind)?;
        }
        if let Some(bytes) = tuning.recv_buffer {
            socket.set_recv_buffer_size(bytes).map_err(ConnectError::Tcp)?;
        }
        let stream = socket.connect(endpoint.addr).await.map_err(ConnectError::Tcp)?;
        stream.set_nodelay(true).map_err(ConnectError::Tcp)?;

        let mut request = target
            .handshake_url(id, token.unwrap_or_default())
            .into_client_request()
            .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
        if target.auth == AuthMode::Header
            && let Some(token) = token
        {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let mut tap = Tap { stream, seen: Vec::new() };
        tokio_tungstenite::client_async(request, &mut tap).await.map_err(|e| match e {
            tungstenite::Error::Http(response) => {
                ConnectError::Upgrade(format!("HTTP {}", response.status()))
            }
            other => ConnectError::Upgrade(other.to_string()),
        })?;
        // tungstenite checked the response; what it read past the head (the
        // Engine.IO open, often) belongs to the frame reader.
        let tail = tap
            .seen
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .map_or(&[][..], |head_end| &tap.seen[head_end + 4..]);
        let mut conn = Self {
            reader: FrameReader::new(target.read_buffer, tail),
            stream: tap.stream,
            outgoing: Vec::new(),
            written: 0,
            mask_state: RandomState::new().hash_one(id) | 1,
            closed: false,
            eof: false,
            delayed_ack: target.delayed_ack,
            close_code: None,
            heartbeat: None,
            pings: 0,
            next_ack: 0,
            connected: None,
        };

        match conn.recv_owned().await {
            Ok(Some(frame)) if frame.starts_with('0') => {
                let interval = wire::number_field(&frame, "\"pingInterval\"");
                let timeout = wire::number_field(&frame, "\"pingTimeout\"");
                if let (Some(interval), Some(timeout)) = (interval, timeout) {
                    conn.heartbeat = Some(Duration::from_millis(interval.saturating_add(timeout)));
                }
            }
            Ok(Some(frame)) => {
                return Err(ConnectError::Protocol(format!("expected Engine.IO open, got {frame:.40}")));
            }
            Ok(None) | Err(_) => return Err(ConnectError::Closed),
        }
        Ok(conn)
    }

    /// Sends the namespace CONNECT (with `token` in its payload when the
    /// target's auth mode says so) and waits for the answer.
    ///
    /// # Errors
    /// [`ConnectError::Refused`] with the server's message, or
    /// [`ConnectError::Closed`].
    pub async fn connect_namespace(
        &mut self,
        target: &Target,
        token: Option<&str>,
    ) -> Result<(), ConnectError> {
        self.resume_namespace(target, token, None).await
    }

    /// [`WsConnection::connect_namespace`], asking to recover a session when
    /// `resume` is given; events before the ack are kept (see
    /// [`Connection::reopen`]).
    ///
    /// # Errors
    /// As [`WsConnection::connect_namespace`].
    pub async fn resume_namespace(
        &mut self,
        target: &Target,
        token: Option<&str>,
        resume: Option<Resume<'_>>,
    ) -> Result<(), ConnectError> {
        let payload_token = if target.auth == AuthMode::Payload { token } else { None };
        let frame = target.namespace.resuming_connect_frame(payload_token, resume);
        self.send(&frame).await.map_err(|_| ConnectError::Closed)?;
        let mut early = std::collections::VecDeque::new();
        loop {
            let Ok(Some(frame)) = self.recv_owned().await else {
                return Err(ConnectError::Closed);
            };
            match await_ack(frame, &target.namespace, &mut early)? {
                Some(accepted) => {
                    self.connected = Some(Box::new(Connected { accepted, early, current: String::new() }));
                    return Ok(());
                }
                None => continue,
            }
        }
    }

    /// Engine.IO pings answered so far.
    pub fn pings(&self) -> u64 {
        self.pings
    }

    /// pingInterval + pingTimeout from the server's Engine.IO open: how long
    /// a client that never answers a ping may stay connected.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// The WebSocket close code the server sent, once it closed with one.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// The next text frame already received, or `None` when more must be
    /// read ([`WsConnection::fill`]). Pings (Engine.IO and WebSocket) are
    /// answered on the way: the pong is queued and written by the next
    /// `fill` or `send`. Never blocks and never reads the socket.
    ///
    /// # Errors
    /// The server broke the WebSocket framing rules.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming<'_>>, TransportError> {
        if let Some(connected) = self.connected.as_deref_mut()
            && let Some(frame) = connected.early.pop_front()
        {
            connected.current = frame;
            return Ok(Some(Incoming::Text(&connected.current)));
        }
        if self.closed {
            return Ok(Some(Incoming::Closed));
        }
        loop {
            let frame = match self.reader.next_frame()? {
                Some(frame) => frame,
                None if self.eof => {
                    self.closed = true;
                    return Ok(Some(Incoming::Closed));
                }
                None => return Ok(None),
            };
            match frame.kind {
                Kind::Text if self.reader.payload(frame) == b"2" => {
                    self.pings += 1;
                    queue(&mut self.outgoing, &mut self.mask_state, Opcode::Text, b"3");
                }
                Kind::Text if self.reader.payload(frame) == b"1" => {
                    self.closed = true;
                    return Ok(Some(Incoming::Closed));
                }
                Kind::Text => return Ok(Some(Incoming::Text(self.reader.text(frame)?))),
                Kind::Ping => {
                    let payload = self.reader.payload(frame);
                    queue(&mut self.outgoing, &mut self.mask_state, Opcode::Pong, payload);
                }
                Kind::Close(code) => {
                    self.close_code = code;
                    // Echo the close, as RFC 6455 asks; best effort, since
                    // the connection is over either way.
                    let payload = code.map(u16::to_be_bytes);
                    let payload = payload.as_ref().map_or(&[][..], |code| &code[..]);
                    queue(&mut self.outgoing, &mut self.mask_state, Opcode::Close, payload);
                    let _ = self.stream.try_write(&self.outgoing[self.written..]);
                    self.closed = true;
                    return Ok(Some(Incoming::Closed));
                }
                // Binary frames carry no chat events here.
                Kind::Binary | Kind::Pong => {}
            }
        }
    }

    /// Writes any queued pongs, then reads once into the buffer (what one
    /// read returns may hold many frames). Cancel-safe.
    ///
    /// # Errors
    /// A socket error.
    pub async fn fill(&mut self) -> Result<(), TransportError> {
        self.flush().await?;
        if self.eof {
            return Ok(());
        }
        let read = self.stream.read_buf(self.reader.read_buffer()).await?;
        if self.delayed_ack {
            // Best effort: the option only shapes when ACKs go out. The
            // kernel leaves this mode whenever the delayed-ACK timer fires,
            // hence once per read rather than once per connection.
            let _ = self.stream.set_quickack(false);
        }
        self.eof = read == 0;
        Ok(())
    }

    /// The next text frame, reading as needed; `Ok(None)` when the server
    /// closed. For the handshake and the close, where a copy is fine.
    async fn recv_owned(&mut self) -> Result<Option<String>, TransportError> {
        loop {
            match self.next_buffered()? {
                Some(Incoming::Text(text)) => return Ok(Some(text.to_owned())),
                Some(Incoming::Closed) => return Ok(None),
                None => self.fill().await?,
            }
        }
    }

    /// Sends one text frame (after any queued pongs) and writes it out.
    ///
    /// # Errors
    /// A socket error.
    pub async fn send(&mut self, text: &str) -> Result<(), TransportError> {
        queue(&mut self.outgoing, &mut self.mask_state, Opcode::Text, text.as_bytes());
        Ok(self.flush().await?)
    }

    /// Writes out everything queued. Cancel-safe: what is written is
    /// remembered, and the rest goes out on the next call.
    async fn flush(&mut self) -> io::Result<()> {
        while self.written < self.outgoing.len() {
            let wrote =
                poll_fn(|cx| Pin::new(&mut self.stream).poll_write(cx, &self.outgoing[self.written..]))
                    .await?;
            if wrote == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += wrote;
        }
        self.outgoing.clear();
        self.written = 0;
        if self.outgoing.capacity() > KEPT_OUTGOING_BYTES {
            self.outgoing.shrink_to(KEPT_OUTGOING_BYTES);
        }
        Ok(())
    }

    /// A fresh ack id for this connection.
    pub fn next_ack_id(&mut self) -> u32 {
        let id = self.next_ack;
        self.next_ack = self.next_ack.wrapping_add(1);
        id
    }

    /// Leaves like `socket.disconnect()`: Socket.IO DISCONNECT, WebSocket
    /// close, then waits up to `linger` for the server's close.
    pub async fn close(mut self, namespace: &Namespace, linger: Duration) {
        if self.send(&namespace.disconnect_frame()).await.is_err() {
            return;
        }
        queue(&mut self.outgoing, &mut self.mask_state, Opcode::Close, &[]);
        if self.flush().await.is_err() {
            return;
        }
        let _ =
            tokio::time::timeout(linger, async { while let Ok(Some(_)) = self.recv_owned().await {} }).await;
    }

    /// Drops the TCP connection with a reset (`SO_LINGER` 0) instead of a FIN.
    pub fn abort_with_reset(self) {
        // Best effort: without the option the drop still ends the connection.
        let _ = self.stream.set_zero_linger();
        drop(self);
    }

    /// Sends one frame with any opcode and payload, as given (masked, as
    /// every client frame must be): for sending what a server must refuse.
    ///
    /// # Errors
    /// A socket error.
    pub async fn send_raw(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), TransportError> {
        queue(&mut self.outgoing, &mut self.mask_state, opcode, payload);
        Ok(self.flush().await?)
    }

    /// Writes `bytes` to the socket as they are, outside any frame.
    ///
    /// # Errors
    /// A socket error.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.outgoing.extend_from_slice(bytes);
        Ok(self.flush().await?)
    }

    /// Reads and discards everything until the server closes the TCP
    /// connection, answering nothing (not even pings), for at most
    /// `timeout`. Returns whether the server closed it.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        if self.eof {
            return true;
        }
        let mut sink = vec![0u8; 16 << 10];
        let drained = tokio::time::timeout(timeout, async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        self.eof = drained.is_ok();
        self.eof
    }
}

/// One frame read while waiting for the CONNECT ack: the ack's fields, a
/// refusal, or `None` to keep waiting (an event of ours is kept in `early`).
///
/// # Errors
/// [`ConnectError::Refused`] or [`ConnectError::Closed`].
pub(crate) fn await_ack(
    frame: String,
    namespace: &Namespace,
    early: &mut std::collections::VecDeque<String>,
) -> Result<Option<Accepted>, ConnectError> {
    match wire::scan(&frame, namespace) {
        Packet::Connected(payload) => Ok(Some(Accepted::parse(payload))),
        Packet::ConnectError(payload) => {
            let message = wire::string_field(payload, wire::keys::MESSAGE).unwrap_or(payload);
            Err(ConnectError::Refused(message.to_owned()))
        }
        Packet::Close | Packet::Disconnected => Err(ConnectError::Closed),
        Packet::Event { .. } => {
            early.push_back(frame);
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Appends a frame to `outgoing`, masked with the next key from `mask_state`.
fn queue(outgoing: &mut Vec<u8>, mask_state: &mut u64, opcode: Opcode, payload: &[u8]) {
    ws::encode_client_frame(outgoing, opcode, payload, next_mask(mask_state));
}

/// The next masking key: xorshift64, which is plenty for keeping proxies
/// from mistaking frames for something else (all masking is for).
fn next_mask(state: &mut u64) -> [u8; 4] {
    ((crate::noise::xorshift64(state) >> 32) as u32).to_ne_bytes()
}

/// The TCP stream during the upgrade, keeping a copy of everything read, so
/// that the bytes tungstenite read past the HTTP response can be taken back.
struct Tap {
    stream: TcpStream,
    seen: Vec<u8>,
}

impl AsyncRead for Tap {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        this.seen.extend_from_slice(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tap {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_only_for_loopback_and_many_clients() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(source_ips(loopback, 0, 2_000).is_empty());
        let many = source_ips(loopback, 0, 100_000);
        assert_eq!(many.len(), 10);
        assert_eq!(many[9], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)));
        assert_eq!(source_ips(loopback, 3, 10).len(), 3);
        assert!(source_ips(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8, 100_000).is_empty());
    }

    #[tokio::test]
    async fn resolves_targets_and_builds_handshake_urls() {
        let options =
            TargetOptions { target: vec!["http://127.0.0.1:3000/".to_owned()], ..TargetOptions::default() };
        let target = Target::resolve(&options, 10).await.expect("resolves");
        assert_eq!(target.first().addr(), "127.0.0.1:3000".parse().expect("addr"));
        assert_eq!(target.handshake_url(7, "t"), "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket");
        let query =
            TargetOptions { auth: AuthMode::Query, target: vec!["ws://localhost:9".to_owned()], ..options };
        let target = Target::resolve(&query, 10).await.expect("resolves");
        assert_eq!(
            target.handshake_url(0, "a.b"),
            "ws://localhost:9/socket.io/?EIO=4&transport=websocket&token=a.b"
        );
        let tls = TargetOptions { target: vec!["https://x:1".to_owned()], ..TargetOptions::default() };
        assert!(Target::resolve(&tls, 1).await.is_err());
        let none = TargetOptions { target: Vec::new(), ..TargetOptions::default() };
        assert!(Target::resolve(&none, 1).await.is_err());
    }

    #[tokio::test]
    async fn clients_go_round_robin_over_several_targets() {
        let urls = ["http://127.0.0.1:3001", "http://127.0.0.1:3002", "ws://127.0.0.1:3003/"];
        let options = TargetOptions {
            target: urls.iter().map(|&url| url.to_owned()).collect(),
            ..TargetOptions::default()
        };
        let target = Target::resolve(&options, 100_000).await.expect("resolves");
        let ports: Vec<u16> = (0..7).map(|id| target.endpoint(id).addr().port()).collect();
        assert_eq!(ports, vec![3001, 3002, 3003, 3001, 3002, 3003, 3001]);
        assert_eq!(target.handshake_url(5, "t"), "ws://127.0.0.1:3003/socket.io/?EIO=4&transport=websocket");
        // Source addresses are sized by every client, whatever the target.
        assert_eq!(target.endpoint(1).source_ips().len(), 10);
    }
}
