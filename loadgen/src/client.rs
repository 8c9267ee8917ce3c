//! One Socket.IO client connection: TCP from a chosen source address, the
//! WebSocket upgrade, Engine.IO open, namespace CONNECT with authentication,
//! and then text frames in and out.
//!
//! Owns the transport rules a real client must keep (answer every Engine.IO
//! ping `2` with `3`, treat `1` and a WebSocket close as the end) and leaves
//! chat semantics to [`crate::session`]. Invariant: [`Connection::recv`] is
//! cancel-safe, so callers may race it against timers in `select!`; a pong
//! that could not be written yet stays pending and goes out on the next call.

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::config::{AuthMode, TargetOptions};
use crate::token::TokenMinter;
use crate::wire::{self, Namespace, Packet};

/// Connections per loopback source address when picking them automatically;
/// below the ~28 000 ports of Linux's default ephemeral range.
const CLIENTS_PER_SOURCE_IP: u64 = 25_000;

/// Everything needed to open a client connection to the server under test.
#[derive(Debug)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    addr: SocketAddr,
    authority: String,
    path: String,
    /// The chat namespace.
    pub namespace: Namespace,
    auth: AuthMode,
    ws_config: WebSocketConfig,
    source_ips: Vec<IpAddr>,
    connect_timeout: Duration,
    /// Mints each client's JWT.
    pub minter: TokenMinter,
}

impl Target {
    /// Resolves `options.target` and picks source addresses for up to
    /// `peak_clients` simultaneous connections.
    ///
    /// # Errors
    /// An unsupported URL scheme, or a host that does not resolve.
    pub async fn resolve(options: &TargetOptions, peak_clients: u64) -> anyhow::Result<Self> {
        let url = options.target.trim_end_matches('/');
        let authority = match url.split_once("://") {
            Some(("http" | "ws", rest)) => rest,
            Some((scheme, _)) => {
                bail!("unsupported scheme {scheme}:// (use http:// or ws://; TLS is not supported)")
            }
            None => url,
        };
        let authority = authority.split('/').next().unwrap_or(authority).to_owned();
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        let path =
            if options.path.starts_with('/') { options.path.clone() } else { format!("/{}", options.path) };
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(options.ws_read_buffer.max(256))
            // Write each frame out at once; frames are small and latency matters.
            .write_buffer_size(0);
        Ok(Self {
            url: options.target.clone(),
            addr,
            authority,
            path,
            namespace: Namespace::new(&options.namespace),
            auth: options.auth,
            ws_config,
            source_ips: source_ips(addr.ip(), options.source_ips, peak_clients),
            connect_timeout: options.connect_timeout,
            minter: TokenMinter::new(options.secret(), options.sub_base, options.token_ttl)
                .with_string_sub(options.string_sub),
        })
    }

    /// The resolved server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Source addresses connections are spread over (empty: the OS picks).
    pub fn source_ips(&self) -> &[IpAddr] {
        &self.source_ips
    }

    /// The per-client connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn handshake_url(&self, token: &str) -> String {
        let mut url = format!("ws://{}{}?EIO=4&transport=websocket", self.authority, self.path);
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

/// An open client connection, past the namespace CONNECT.
pub struct Connection {
    ws: WebSocketStream<TcpStream>,
    pong_pending: bool,
    needs_flush: bool,
    next_ack: u32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("next_ack", &self.next_ack).finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects client `id` with `token` and waits for the namespace to accept it.
    ///
    /// # Errors
    /// [`ConnectError`] for whichever step failed, or [`ConnectError::Timeout`].
    pub async fn open(target: &Target, id: u32, token: &str) -> Result<Self, ConnectError> {
        tokio::time::timeout(target.connect_timeout, Self::handshake(target, id, token))
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }

    async fn handshake(target: &Target, id: u32, token: &str) -> Result<Self, ConnectError> {
        let socket = if target.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(ConnectError::Tcp)?;
        if !target.source_ips.is_empty() {
            let ip = target.source_ips[id as usize % target.source_ips.len()];
            socket.bind(SocketAddr::new(ip, 0)).map_err(ConnectError::Bind)?;
        }
        let stream = socket.connect(target.addr).await.map_err(ConnectError::Tcp)?;
        stream.set_nodelay(true).map_err(ConnectError::Tcp)?;

        let mut request = target
            .handshake_url(token)
            .into_client_request()
            .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
        if target.auth == AuthMode::Header {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(target.ws_config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => {
                        ConnectError::Upgrade(format!("HTTP {}", response.status()))
                    }
                    other => ConnectError::Upgrade(other.to_string()),
                })?;
        let mut conn = Self { ws, pong_pending: false, needs_flush: false, next_ack: 0 };

        match conn.recv().await {
            Ok(Some(frame)) if frame.starts_with('0') => {}
            Ok(Some(frame)) => {
                return Err(ConnectError::Protocol(format!("expected Engine.IO open, got {frame:.40}")));
            }
            Ok(None) | Err(_) => return Err(ConnectError::Closed),
        }
        let payload_token = (target.auth == AuthMode::Payload).then_some(token);
        conn.send(target.namespace.connect_frame(payload_token)).await.map_err(|_| ConnectError::Closed)?;
        loop {
            let Ok(Some(frame)) = conn.recv().await else {
                return Err(ConnectError::Closed);
            };
            match wire::scan(&frame, &target.namespace) {
                Packet::Connected(_) => return Ok(conn),
                Packet::ConnectError(payload) => {
                    let message = wire::string_field(payload, wire::keys::MESSAGE).unwrap_or(payload);
                    return Err(ConnectError::Refused(message.to_owned()));
                }
                Packet::Close | Packet::Disconnected => return Err(ConnectError::Closed),
                _ => {}
            }
        }
    }

    /// The next text frame, answering pings on the way; `Ok(None)` when the
    /// server closed the connection. Cancel-safe.
    ///
    /// # Errors
    /// A transport error.
    pub async fn recv(&mut self) -> Result<Option<Utf8Bytes>, tungstenite::Error> {
        loop {
            if self.pong_pending {
                poll_fn(|cx| self.ws.poll_ready_unpin(cx)).await?;
                self.ws.start_send_unpin(Message::text("3"))?;
                self.pong_pending = false;
                self.needs_flush = true;
            }
            if self.needs_flush {
                poll_fn(|cx| self.ws.poll_flush_unpin(cx)).await?;
                self.needs_flush = false;
            }
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    return Ok(None);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(Message::Text(text))) => match text.as_str() {
                    "2" => self.pong_pending = true,
                    "1" => return Ok(None),
                    _ => return Ok(Some(text)),
                },
                Some(Ok(Message::Close(_))) => return Ok(None),
                // WebSocket pings are answered by tungstenite; binary frames
                // carry no chat events here.
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends one text frame and flushes it.
    ///
    /// # Errors
    /// A transport error.
    pub async fn send(&mut self, frame: String) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(frame)).await
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
        if self.send(namespace.disconnect_frame()).await.is_err() {
            return;
        }
        if self.ws.close(None).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(linger, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }

    /// Drops the TCP connection without any goodbye.
    pub fn abort(self) {
        drop(self);
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
        assert_eq!(many.len(), 4);
        assert_eq!(many[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(source_ips(loopback, 3, 10).len(), 3);
        assert!(source_ips(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8, 100_000).is_empty());
    }

    #[tokio::test]
    async fn resolves_targets_and_builds_handshake_urls() {
        let options =
            TargetOptions { target: "http://127.0.0.1:3000/".to_owned(), ..TargetOptions::default() };
        let target = Target::resolve(&options, 10).await.expect("resolves");
        assert_eq!(target.addr(), "127.0.0.1:3000".parse().expect("addr"));
        assert_eq!(target.handshake_url("t"), "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket");
        let query = TargetOptions { auth: AuthMode::Query, target: "ws://localhost:9".to_owned(), ..options };
        let target = Target::resolve(&query, 10).await.expect("resolves");
        assert_eq!(
            target.handshake_url("a.b"),
            "ws://localhost:9/socket.io/?EIO=4&transport=websocket&token=a.b"
        );
        let tls = TargetOptions { target: "https://x:1".to_owned(), ..TargetOptions::default() };
        assert!(Target::resolve(&tls, 1).await.is_err());
    }
}
