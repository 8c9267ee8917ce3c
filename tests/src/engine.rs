//! Engine.IO at the wire level, for the conformance cases and the
//! long-polling tests: the conformance server on `127.0.0.1:0`
//! ([`ConformanceServer`]), long-polling requests ([`Polling`]) and a bare
//! WebSocket that shows every frame as it came ([`RawSocket`]).

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{self, HttpResponse};
use crate::server::WAIT;

/// The conformance server (`broker::conformance`) serving one test.
pub struct ConformanceServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    _task: JoinHandle<()>,
}

impl ConformanceServer {
    /// Binds `127.0.0.1:0` and serves the conformance service on this runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::serve_service(
            broker::conformance::service(),
            listener,
            shutdown.clone(),
            TaskTracker::new(),
        ));
        Self { addr, shutdown, _task: task }
    }
}

impl Drop for ConformanceServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Long-polling requests to the Engine.IO endpoint at `path` of `addr`.
#[derive(Debug, Clone)]
pub struct Polling {
    /// The server.
    pub addr: SocketAddr,
    /// The endpoint, e.g. `/engine.io/`.
    pub path: String,
}

impl Polling {
    /// Requests to `path` at `addr`.
    #[must_use]
    pub fn new(addr: SocketAddr, path: &str) -> Self {
        Self { addr, path: path.to_owned() }
    }

    /// The target for `query` (after `?`).
    #[must_use]
    pub fn target(&self, query: &str) -> String {
        format!("{}?{query}", self.path)
    }

    /// The handshake `GET ?EIO=4&transport=polling`.
    pub async fn handshake_response(&self) -> HttpResponse {
        http::get(self.addr, &self.target("EIO=4&transport=polling"), &[]).await
    }

    /// Opens a session; returns its sid and open packet JSON.
    pub async fn open(&self) -> (String, Value) {
        let response = self.handshake_response().await;
        assert_eq!(response.status, 200, "handshake: {:?}", response.text());
        let text = response.text();
        let json = text.strip_prefix('0').unwrap_or_else(|| panic!("not an open packet: {text:?}"));
        let open: Value =
            serde_json::from_str(json).unwrap_or_else(|error| panic!("open JSON ({error}): {text:?}"));
        let sid = open["sid"].as_str().unwrap_or_else(|| panic!("no sid in {open}")).to_owned();
        (sid, open)
    }

    /// `GET` for session `sid`.
    pub async fn get(&self, sid: &str) -> HttpResponse {
        http::get(self.addr, &self.target(&format!("EIO=4&transport=polling&sid={sid}")), &[]).await
    }

    /// `POST body` for session `sid`.
    pub async fn post(&self, sid: &str, body: &[u8]) -> HttpResponse {
        http::post(self.addr, &self.target(&format!("EIO=4&transport=polling&sid={sid}")), &[], body).await
    }

    /// A WebSocket to this endpoint with `query`.
    pub async fn websocket(&self, query: &str) -> Result<RawSocket, u16> {
        RawSocket::connect(self.addr, &self.target(query)).await
    }
}

/// A WebSocket that returns each message as it came: no pong, no parsing.
pub struct RawSocket {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What a [`RawSocket`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// The connection ended (close frame or end of stream).
    Closed,
}

impl RawSocket {
    /// Opens `ws://addr{target}`; an HTTP refusal gives its status.
    ///
    /// # Errors
    /// The refusal's HTTP status.
    pub async fn connect(addr: SocketAddr, target: &str) -> Result<Self, u16> {
        let request = format!("ws://{addr}{target}").into_client_request().expect("a valid ws:// URL");
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _))) => Ok(Self { ws }),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
            Ok(Err(error)) => panic!("WebSocket to {target} failed: {error}"),
            Err(_) => panic!("no upgrade response from {target} within {WAIT:?}"),
        }
    }

    /// Sends a text message.
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap_or_else(|error| panic!("sending {text:?}: {error}"));
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::Binary(data.to_vec().into()))
            .await
            .unwrap_or_else(|error| panic!("sending binary: {error}"));
    }

    /// The next text or binary message, or the end; fails after [`WAIT`].
    pub async fn next(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing within {WAIT:?}"));
            match next {
                Some(Ok(Message::Text(text))) => return Frame::Text(text.as_str().to_owned()),
                Some(Ok(Message::Binary(data))) => return Frame::Binary(data.to_vec()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Frame::Closed,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next text message; fails on anything else.
    pub async fn next_text(&mut self) -> String {
        match self.next().await {
            Frame::Text(text) => text,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message that is not a ping (`2`).
    pub async fn next_not_ping(&mut self) -> Frame {
        loop {
            match self.next().await {
                Frame::Text(text) if text == "2" => {}
                other => return other,
            }
        }
    }

    /// Reads until the connection ends (discarding what comes before).
    pub async fn expect_closed(&mut self) {
        while self.next().await != Frame::Closed {}
    }
}

/// A Socket.IO client on long-polling only, speaking the wire strings.
/// Pings are answered while polling; every other packet is kept, in order.
pub struct PollingClient {
    /// The requests of this session.
    pub polling: Polling,
    /// The Engine.IO session id.
    pub sid: String,
    backlog: std::collections::VecDeque<String>,
}

impl PollingClient {
    /// Opens a polling session at `path` with the handshake `query` (after
    /// `EIO=4&transport=polling`).
    pub async fn open(addr: SocketAddr, path: &str, query: &str) -> Self {
        let polling = Polling::new(addr, path);
        let response =
            http::get(addr, &polling.target(&format!("EIO=4&transport=polling{query}")), &[]).await;
        assert_eq!(response.status, 200, "handshake: {:?}", response.text());
        let text = response.text();
        let open: Value =
            serde_json::from_str(text.strip_prefix('0').expect("an open packet")).expect("JSON");
        let sid = open["sid"].as_str().expect("a sid").to_owned();
        Self { polling, sid, backlog: std::collections::VecDeque::new() }
    }

    /// POSTs `packets` joined by `\x1e`; fails unless answered `ok`.
    pub async fn send(&self, packets: &[&str]) {
        let body = packets.join("\x1e");
        let response = self.polling.post(&self.sid, body.as_bytes()).await;
        assert_eq!((response.status, response.text()), (200, "ok".to_owned()), "POST {body:?}");
    }

    /// One GET: the packets it brought (pings answered, not returned).
    pub async fn poll(&mut self) -> Vec<String> {
        let response = self.polling.get(&self.sid).await;
        assert_eq!(response.status, 200, "GET: {:?}", response.text());
        let mut packets = Vec::new();
        for packet in response.text().split('\x1e') {
            match packet {
                "2" => self.send(&["3"]).await,
                "6" => {}
                other => packets.push(other.to_owned()),
            }
        }
        packets
    }

    /// Polls until a packet satisfies `accept` (searching what was kept
    /// first) and returns it; fails after [`WAIT`].
    pub async fn expect(&mut self, what: &str, accept: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(index) = self.backlog.iter().position(|packet| accept(packet)) {
                return self.backlog.remove(index).expect("just found");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {WAIT:?}; kept: {:?}",
                self.backlog
            );
            let packets = tokio::time::timeout_at(deadline, self.poll())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}; kept: {:?}", self.backlog));
            self.backlog.extend(packets);
        }
    }

    /// Everything received and not yet taken, oldest first.
    pub fn take_backlog(&mut self) -> Vec<String> {
        self.backlog.drain(..).collect()
    }
}
