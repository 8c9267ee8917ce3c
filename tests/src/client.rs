//! [`Client`]: a raw Socket.IO v5 client over an Engine.IO v4 WebSocket.
//!
//! It writes and reads the wire strings of PROTOCOL.md (`42/api/v1/chat,17[…]`)
//! so a test reads like a transcript. Reading is lazy: a packet that arrives
//! while the test awaits something else is kept, in order, in a backlog that
//! later expectations search first. Pings (`2`) are answered with `3` while
//! reading unless [`Client::set_auto_pong`] turned that off; a client that is
//! not being read answers nothing, like a stalled browser tab.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use futures_util::{FutureExt as _, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::server::{CHAT, TestServer, WAIT};

/// Where the client puts its token.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// No token at all.
    None,
    /// Handshake query `token=…`.
    Query(String),
    /// Upgrade request header `Authorization: Bearer …`.
    Header(String),
    /// CONNECT payload `{"token":…}`.
    Payload(String),
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// `0`
    Connect,
    /// `1`
    Disconnect,
    /// `2`
    Event,
    /// `3`
    Ack,
    /// `4`
    ConnectError,
    /// `5`
    BinaryEvent,
    /// `6`
    BinaryAck,
}

/// One Socket.IO packet as received.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The whole Engine.IO text frame, e.g. `43/api/v1/chat,17[{…}]`.
    pub raw: String,
    /// Packet type.
    pub kind: PacketKind,
    /// `/` for the main namespace.
    pub namespace: String,
    /// Ack id, when present.
    pub ack_id: Option<u64>,
    /// The JSON payload, when present.
    pub data: Option<Value>,
}

impl Packet {
    /// Parses an Engine.IO message frame (`4…`) holding a Socket.IO packet.
    ///
    /// # Errors
    /// A description of what does not parse.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let body = raw.strip_prefix('4').ok_or("not an Engine.IO message packet")?;
        let kind = match body.as_bytes().first() {
            Some(b'0') => PacketKind::Connect,
            Some(b'1') => PacketKind::Disconnect,
            Some(b'2') => PacketKind::Event,
            Some(b'3') => PacketKind::Ack,
            Some(b'4') => PacketKind::ConnectError,
            Some(b'5') => PacketKind::BinaryEvent,
            Some(b'6') => PacketKind::BinaryAck,
            _ => return Err("unknown Socket.IO packet type".to_owned()),
        };
        let mut rest = &body[1..];
        if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
            let dash = rest.find('-').ok_or("binary packet without attachment count")?;
            rest = &rest[dash + 1..];
        }
        let mut namespace = "/".to_owned();
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            namespace = rest[..end].to_owned();
            rest = rest.get(end + 1..).unwrap_or("");
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack_id = if digits > 0 {
            Some(rest[..digits].parse().map_err(|error| format!("ack id: {error}"))?)
        } else {
            None
        };
        rest = &rest[digits..];
        let data = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_str(rest).map_err(|error| format!("payload JSON: {error}"))?)
        };
        Ok(Self { raw: raw.to_owned(), kind, namespace, ack_id, data })
    }

    /// The event name of an EVENT packet.
    #[must_use]
    pub fn event_name(&self) -> Option<&str> {
        match self.kind {
            PacketKind::Event | PacketKind::BinaryEvent => self.data.as_ref()?.get(0)?.as_str(),
            _ => None,
        }
    }

    /// The first argument after the event name, or `null`.
    #[must_use]
    pub fn event_payload(&self) -> Value {
        self.data.as_ref().and_then(|data| data.get(1)).cloned().unwrap_or(Value::Null)
    }

    /// The arguments of an ACK packet.
    #[must_use]
    pub fn ack_args(&self) -> Vec<Value> {
        match &self.data {
            Some(Value::Array(args)) => args.clone(),
            _ => Vec::new(),
        }
    }
}

/// Encodes a Socket.IO packet as an Engine.IO message frame.
#[must_use]
pub fn encode_packet(kind: char, namespace: &str, ack_id: Option<u64>, data: Option<&Value>) -> String {
    let mut text = format!("4{kind}");
    if namespace != "/" {
        text.push_str(namespace);
        text.push(',');
    }
    if let Some(id) = ack_id {
        text.push_str(&id.to_string());
    }
    if let Some(data) = data {
        text.push_str(&data.to_string());
    }
    text
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The WebSocket close code, when a close frame arrived.
    pub code: Option<u16>,
    /// The close reason or the transport error.
    pub reason: String,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "close frame {code} {:?}", self.reason),
            None => write!(f, "no close frame: {}", self.reason),
        }
    }
}

/// Why a connection attempt did not reach a namespace.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The HTTP upgrade was answered with something other than 101.
    Http {
        /// Status code.
        status: u16,
        /// Whatever body bytes came with the head.
        body: String,
    },
    /// The namespace answered CONNECT_ERROR (`44…`).
    ConnectError {
        /// The whole frame, e.g. `44/api/v1/chat,{"message":"Unauthorized",…}`.
        raw: String,
        /// Its payload.
        data: Value,
    },
}

impl Refusal {
    /// The CONNECT_ERROR payload.
    ///
    /// # Panics
    /// When the refusal was at the HTTP level.
    #[must_use]
    pub fn connect_error(&self) -> &Value {
        match self {
            Self::ConnectError { data, .. } => data,
            Self::Http { status, body } => panic!("expected a CONNECT_ERROR, got HTTP {status} {body:?}"),
        }
    }

    /// The HTTP status of an upgrade refusal.
    ///
    /// # Panics
    /// When the refusal was a CONNECT_ERROR.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Http { status, .. } => *status,
            Self::ConnectError { raw, .. } => panic!("expected an HTTP refusal, got {raw:?}"),
        }
    }
}

/// Options of one connection; see [`Client::builder`].
pub struct ClientBuilder<'a> {
    server: &'a TestServer,
    query: Vec<(String, String)>,
    header_token: Option<String>,
    payload: Option<Value>,
    origin: Option<String>,
    headers: Vec<(String, String)>,
    namespace: String,
    recv_buffer: Option<u32>,
    label: String,
}

impl<'a> ClientBuilder<'a> {
    fn new(server: &'a TestServer) -> Self {
        Self {
            server,
            query: Vec::new(),
            header_token: None,
            payload: None,
            origin: None,
            headers: Vec::new(),
            namespace: server.config.namespaces.first().cloned().unwrap_or_else(|| CHAT.to_owned()),
            recv_buffer: None,
            label: "client".to_owned(),
        }
    }

    /// Puts `token` where `source` says.
    #[must_use]
    pub fn token(self, source: TokenSource) -> Self {
        match source {
            TokenSource::None => self,
            TokenSource::Query(token) => self.query("token", &token),
            TokenSource::Header(token) => self.header_token(&token),
            TokenSource::Payload(token) => self.payload_token(&token),
        }
    }

    /// Handshake query `token=…`.
    #[must_use]
    pub fn query_token(self, token: &str) -> Self {
        self.query("token", token)
    }

    /// `Authorization: Bearer …` on the upgrade request.
    #[must_use]
    pub fn header_token(mut self, token: &str) -> Self {
        self.header_token = Some(token.to_owned());
        self
    }

    /// CONNECT payload `{"token":…}`.
    #[must_use]
    pub fn payload_token(mut self, token: &str) -> Self {
        self.payload = Some(json!({ "token": token }));
        self
    }

    /// Any CONNECT payload.
    #[must_use]
    pub fn auth_payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Handshake query `roomId=…`.
    #[must_use]
    pub fn room(self, room: &str) -> Self {
        self.query("roomId", room)
    }

    /// Any handshake query parameter (percent-encoded here).
    #[must_use]
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Origin` header on the upgrade request.
    #[must_use]
    pub fn origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.to_owned());
        self
    }

    /// Any other header on the upgrade request.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The namespace to CONNECT to (default: the server's first).
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    /// `SO_RCVBUF` of the client socket, to make a slow reader's window small.
    #[must_use]
    pub fn recv_buffer(mut self, bytes: u32) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// A name for failure messages.
    #[must_use]
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    /// Upgrades and reads the Engine.IO open packet, without CONNECT.
    ///
    /// # Errors
    /// [`Refusal::Http`] when the upgrade is refused.
    pub async fn try_open(self) -> Result<Client, Refusal> {
        let mut url = self.server.url();
        for (name, value) in &self.query {
            url.push_str(&format!("&{}={}", percent_encode(name), percent_encode(value)));
        }
        let mut request = url.as_str().into_client_request().expect("a valid ws:// URL");
        if let Some(token) = &self.header_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value");
            request.headers_mut().insert("Authorization", value);
        }
        if let Some(origin) = &self.origin {
            let value = HeaderValue::from_str(origin).expect("an origin is a header value");
            request.headers_mut().insert("Origin", value);
        }
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
            let value = HeaderValue::from_str(value).expect("a valid header value");
            request.headers_mut().append(name, value);
        }
        let socket = TcpSocket::new_v4().expect("creating a TCP socket");
        if let Some(bytes) = self.recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("setting SO_RCVBUF");
        }
        let addr = self.server.addr;
        let stream = match tokio::time::timeout(WAIT, socket.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => panic!("{}: connecting to {addr}: {error}", self.label),
            Err(_) => panic!("{}: TCP connect to {addr} timed out", self.label),
        };
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        let ws = match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream)).await {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(WsError::Http(response))) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                return Err(Refusal::Http { status: response.status().as_u16(), body: body.into_owned() });
            }
            Ok(Err(error)) => panic!("{}: WebSocket upgrade to {url} failed: {error}", self.label),
            Err(_) => panic!("{}: no upgrade response from {url} within {WAIT:?}", self.label),
        };
        let mut client = Client {
            ws,
            namespace: self.namespace.clone(),
            open: Value::Null,
            connect_data: None,
            backlog: VecDeque::new(),
            binaries: VecDeque::new(),
            next_ack_id: 1,
            auto_pong: true,
            pings: 0,
            wait: WAIT,
            closed: None,
            label: self.label.clone(),
            pending_payload: self.payload.clone(),
        };
        client.read_open().await;
        Ok(client)
    }

    /// [`ClientBuilder::try_open`], failing the test on refusal.
    pub async fn open(self) -> Client {
        let label = self.label.clone();
        self.try_open().await.unwrap_or_else(|refusal| panic!("{label}: upgrade refused: {refusal:?}"))
    }

    /// Upgrades, then CONNECTs to the namespace.
    ///
    /// # Errors
    /// The HTTP or CONNECT_ERROR refusal.
    pub async fn try_connect(self) -> Result<Client, Refusal> {
        let namespace = self.namespace.clone();
        let mut client = self.try_open().await?;
        let payload = client.pending_payload.take();
        client.connect_namespace(&namespace, payload).await?;
        Ok(client)
    }

    /// [`ClientBuilder::try_connect`], failing the test on refusal.
    pub async fn connect(self) -> Client {
        let label = self.label.clone();
        self.try_connect().await.unwrap_or_else(|refusal| panic!("{label}: connection refused: {refusal:?}"))
    }
}

/// One Engine.IO connection and the Socket.IO namespace(s) on it.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    namespace: String,
    open: Value,
    connect_data: Option<Value>,
    backlog: VecDeque<Packet>,
    binaries: VecDeque<Vec<u8>>,
    next_ack_id: u64,
    auto_pong: bool,
    pings: usize,
    wait: Duration,
    closed: Option<Closed>,
    label: String,
    pending_payload: Option<Value>,
}

enum Incoming {
    Packet(Packet),
    Ping,
    Binary(Vec<u8>),
    EngineClose,
    Closed(Closed),
}

impl Client {
    /// Options for one connection.
    #[must_use]
    pub fn builder(server: &TestServer) -> ClientBuilder<'_> {
        ClientBuilder::new(server)
    }

    /// Connects to the server's first namespace with `source`, failing the
    /// test on any refusal.
    pub async fn connect(server: &TestServer, source: TokenSource) -> Self {
        Self::builder(server).token(source).connect().await
    }

    /// Connects as user `sub` (token in the CONNECT payload), labelled by `sub`.
    pub async fn connect_user(server: &TestServer, sub: impl Into<Value>) -> Self {
        let sub = sub.into();
        let token = server.token(sub.clone()).sign();
        Self::builder(server).payload_token(&token).label(&sub.to_string()).connect().await
    }

    /// The namespace that `emit`/`expect_*` use.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Switches the namespace that `emit`/`expect_*` use (multiplexing).
    pub fn use_namespace(&mut self, namespace: &str) {
        namespace.clone_into(&mut self.namespace);
    }

    /// The Engine.IO open packet's JSON.
    #[must_use]
    pub fn open_packet(&self) -> &Value {
        &self.open
    }

    /// The payload of the last `40` packet.
    #[must_use]
    pub fn connect_data(&self) -> Option<&Value> {
        self.connect_data.as_ref()
    }

    /// Whether pings are answered while reading (default: yes).
    pub fn set_auto_pong(&mut self, on: bool) {
        self.auto_pong = on;
    }

    /// How long each expectation waits (default [`WAIT`]).
    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// Pings seen so far.
    #[must_use]
    pub fn pings(&self) -> usize {
        self.pings
    }

    /// Sends one WebSocket text frame as is.
    pub async fn send_raw(&mut self, text: &str) {
        if let Err(error) = self.try_send_raw(text).await {
            panic!("{}: sending {text:?}: {error}", self.label);
        }
    }

    /// Sends one WebSocket text frame.
    ///
    /// # Errors
    /// The transport error (e.g. the server already closed).
    pub async fn try_send_raw(&mut self, text: &str) -> Result<(), String> {
        self.ws.send(Message::text(text)).await.map_err(|error| error.to_string())
    }

    /// Sends one WebSocket binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        if let Err(error) = self.ws.send(Message::Binary(bytes.to_vec().into())).await {
            panic!("{}: sending a binary frame: {error}", self.label);
        }
    }

    /// Sends CONNECT to `namespace` and waits for `40` or `44`. On success this
    /// namespace becomes the one `emit`/`expect_*` use.
    ///
    /// # Errors
    /// [`Refusal::ConnectError`] with the `44` frame.
    pub async fn connect_namespace(
        &mut self,
        namespace: &str,
        payload: Option<Value>,
    ) -> Result<Value, Refusal> {
        self.send_raw(&encode_packet('0', namespace, None, payload.as_ref())).await;
        let what = format!("the answer to CONNECT {namespace}");
        let packet = self
            .expect_packet_where(&what, |packet| {
                packet.namespace == namespace
                    && matches!(packet.kind, PacketKind::Connect | PacketKind::ConnectError)
            })
            .await;
        let data = packet.data.clone().unwrap_or(Value::Null);
        if packet.kind == PacketKind::ConnectError {
            return Err(Refusal::ConnectError { raw: packet.raw, data });
        }
        namespace.clone_into(&mut self.namespace);
        self.connect_data = Some(data.clone());
        Ok(data)
    }

    /// A fresh ack id.
    pub fn next_ack_id(&mut self) -> u64 {
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        id
    }

    /// `42<ns>,["event",data]`.
    pub async fn emit(&mut self, event: &str, data: Value) {
        let frame = encode_packet('2', &self.namespace.clone(), None, Some(&json!([event, data])));
        self.send_raw(&frame).await;
    }

    /// `42<ns>,<id>["event",data]`, then the first argument of the matching ack.
    pub async fn emit_with_ack(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_ack_id();
        let frame = encode_packet('2', &self.namespace.clone(), Some(id), Some(&json!([event, data])));
        self.send_raw(&frame).await;
        let args = self.expect_ack(id).await;
        args.into_iter()
            .next()
            .unwrap_or_else(|| panic!("{}: the ack of {event} has no argument", self.label))
    }

    /// `join_room`, failing the test on an error ack. Returns the ack.
    pub async fn join(&mut self, room: &str) -> Value {
        let ack = self.emit_with_ack("join_room", json!({ "roomId": room })).await;
        assert!(ack.get("error").is_none(), "{}: join_room {room:?} failed: {ack}", self.label);
        ack
    }

    /// `leave_room`, failing the test on an error ack. Returns the ack.
    pub async fn leave(&mut self, room: &str) -> Value {
        let ack = self.emit_with_ack("leave_room", json!({ "roomId": room })).await;
        assert!(ack.get("error").is_none(), "{}: leave_room {room:?} failed: {ack}", self.label);
        ack
    }

    /// `send_message` to `room`, failing the test on an error ack. Returns the ack.
    pub async fn send(&mut self, room: &str, content: &str) -> Value {
        let ack = self.emit_with_ack("send_message", json!({ "roomId": room, "content": content })).await;
        assert!(ack.get("error").is_none(), "{}: send_message to {room:?} failed: {ack}", self.label);
        ack
    }

    /// The arguments of the ack with `id` in the current namespace.
    pub async fn expect_ack(&mut self, id: u64) -> Vec<Value> {
        let namespace = self.namespace.clone();
        let what = format!("ack {id} in {namespace}");
        let packet = self
            .expect_packet_where(&what, |packet| {
                matches!(packet.kind, PacketKind::Ack | PacketKind::BinaryAck)
                    && packet.namespace == namespace
                    && packet.ack_id == Some(id)
            })
            .await;
        packet.ack_args()
    }

    /// The next Socket.IO packet, in arrival order (backlog first).
    pub async fn expect_packet(&mut self) -> Packet {
        self.expect_packet_where("any Socket.IO packet", |_| true).await
    }

    /// The payload of the first `name` event in the current namespace.
    pub async fn expect_event(&mut self, name: &str) -> Value {
        self.expect_event_where(name, |_| true).await
    }

    /// The payload of the first `name` event whose payload satisfies `accept`.
    pub async fn expect_event_where(&mut self, name: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let namespace = self.namespace.clone();
        let what = format!("event {name:?} in {namespace}");
        let packet = self
            .expect_packet_where(&what, |packet| {
                packet.namespace == namespace
                    && packet.event_name() == Some(name)
                    && accept(&packet.event_payload())
            })
            .await;
        packet.event_payload()
    }

    /// The `message` event whose content is `content`.
    pub async fn expect_message(&mut self, content: &str) -> Value {
        self.expect_event_where("message", |payload| payload["content"] == content).await
    }

    /// The `error` event, checked for shape and for `code`.
    pub async fn expect_error(&mut self, code: u64) -> Value {
        let payload = self.expect_event("error").await;
        assert_eq!(payload["code"], code, "{}: error event with the wrong code: {payload}", self.label);
        assert!(
            payload["message"].as_str().is_some_and(|message| !message.is_empty()),
            "{}: error event without a message: {payload}",
            self.label
        );
        assert!(payload["timestamp"].is_u64(), "{}: error event without a timestamp: {payload}", self.label);
        payload
    }

    /// Removes and returns a `name` event already received, without reading.
    pub fn take_event(&mut self, name: &str) -> Option<Value> {
        let namespace = self.namespace.clone();
        let index = self
            .backlog
            .iter()
            .position(|packet| packet.namespace == namespace && packet.event_name() == Some(name))?;
        self.backlog.remove(index).map(|packet| packet.event_payload())
    }

    /// Waits for event `marker` and fails if a `forbidden` event arrives first.
    /// Returns the marker's payload.
    pub async fn expect_no_event_before(&mut self, forbidden: &str, marker: &str) -> Value {
        assert_ne!(forbidden, marker, "the marker must differ from the forbidden event");
        let namespace = self.namespace.clone();
        let is_event =
            |packet: &Packet, name: &str| packet.namespace == namespace && packet.event_name() == Some(name);
        for (index, packet) in self.backlog.iter().enumerate() {
            assert!(!is_event(packet, forbidden), "{}: got {:?} before {marker:?}", self.label, packet.raw);
            if is_event(packet, marker) {
                return self.backlog.remove(index).map(|packet| packet.event_payload()).unwrap_or_default();
            }
        }
        let what = format!("event {marker:?} (with no {forbidden:?} before it)");
        let deadline = Instant::now() + self.wait;
        loop {
            match self.read_incoming(deadline, &what).await {
                Incoming::Packet(packet) if is_event(&packet, forbidden) => {
                    panic!("{}: got {:?} before {marker:?}", self.label, packet.raw)
                }
                Incoming::Packet(packet) if is_event(&packet, marker) => return packet.event_payload(),
                Incoming::Packet(packet) => self.backlog.push_back(packet),
                Incoming::Binary(bytes) => self.binaries.push_back(bytes),
                Incoming::Ping | Incoming::EngineClose => {}
                Incoming::Closed(closed) => self.fail_closed(&closed, &what),
            }
        }
    }

    /// Waits for the next ping (answered if auto-pong is on).
    pub async fn expect_ping(&mut self) {
        let deadline = Instant::now() + self.wait;
        loop {
            match self.read_incoming(deadline, "a ping").await {
                Incoming::Ping => return,
                Incoming::Packet(packet) => self.backlog.push_back(packet),
                Incoming::Binary(bytes) => self.binaries.push_back(bytes),
                Incoming::EngineClose => {}
                Incoming::Closed(closed) => self.fail_closed(&closed, "a ping"),
            }
        }
    }

    /// Reads until the connection ends; packets on the way are kept.
    pub async fn expect_close(&mut self) -> Closed {
        let deadline = Instant::now() + self.wait;
        loop {
            match self.read_incoming(deadline, "the connection to close").await {
                Incoming::Closed(closed) => return closed,
                Incoming::Packet(packet) => self.backlog.push_back(packet),
                Incoming::Binary(bytes) => self.binaries.push_back(bytes),
                Incoming::Ping | Incoming::EngineClose => {}
            }
        }
    }

    /// Expects `41<ns>,` and then the end of the connection; returns how it ended.
    pub async fn expect_disconnect_then_close(&mut self) -> Closed {
        let namespace = self.namespace.clone();
        let packet = self
            .expect_packet_where(&format!("DISCONNECT of {namespace}"), |packet| {
                packet.kind == PacketKind::Disconnect && packet.namespace == namespace
            })
            .await;
        assert_eq!(
            packet.raw,
            encode_packet('1', &namespace, None, None),
            "{}: DISCONNECT frame",
            self.label
        );
        self.expect_close().await
    }

    /// Whether the connection has been seen to end.
    #[must_use]
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// Packets received but not consumed yet, oldest first.
    #[must_use]
    pub fn backlog(&self) -> Vec<String> {
        self.backlog.iter().map(|packet| packet.raw.clone()).collect()
    }

    /// Sends `text` in one text frame and resets the connection at once
    /// (`SO_LINGER` 0: a RST, not a FIN), as a client does that closes with
    /// unread data in its receive buffer. Nothing waits in between: the frame
    /// is in the server's receive buffer before the reset, and on a test's
    /// single-threaded runtime the server has run nothing meanwhile.
    ///
    /// # Panics
    /// When the socket does not take the frame at once.
    pub fn send_then_reset(mut self, text: &str) {
        let sent = tokio::task::unconstrained(self.ws.send(Message::text(text))).now_or_never();
        assert!(matches!(sent, Some(Ok(()))), "{}: sending {text:?} at once: {sent:?}", self.label);
        self.ws.get_ref().set_zero_linger().expect("setting SO_LINGER 0");
    }

    /// Sends a WebSocket close frame (1000) and waits for the connection to end.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }

    async fn read_open(&mut self) {
        let deadline = Instant::now() + self.wait;
        let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
        let text = match next {
            Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
            Ok(other) => panic!("{}: expected the Engine.IO open packet, got {other:?}", self.label),
            Err(_) => panic!("{}: no Engine.IO open packet within {:?}", self.label, self.wait),
        };
        let json = text
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("{}: the first frame is not an open packet: {text:?}", self.label));
        self.open = serde_json::from_str(json)
            .unwrap_or_else(|error| panic!("{}: open packet JSON ({error}): {text:?}", self.label));
    }

    async fn expect_packet_where(&mut self, what: &str, accept: impl Fn(&Packet) -> bool) -> Packet {
        if let Some(index) = self.backlog.iter().position(&accept) {
            return self.backlog.remove(index).expect("the index was just found");
        }
        let deadline = Instant::now() + self.wait;
        loop {
            match self.read_incoming(deadline, what).await {
                Incoming::Packet(packet) if accept(&packet) => return packet,
                Incoming::Packet(packet) => self.backlog.push_back(packet),
                Incoming::Binary(bytes) => self.binaries.push_back(bytes),
                Incoming::Ping | Incoming::EngineClose => {}
                Incoming::Closed(closed) => self.fail_closed(&closed, what),
            }
        }
    }

    fn fail_closed(&self, closed: &Closed, what: &str) -> ! {
        panic!(
            "{}: connection ended ({closed}) while waiting for {what}; unconsumed: {:?}",
            self.label,
            self.backlog()
        )
    }

    async fn read_incoming(&mut self, deadline: Instant, what: &str) -> Incoming {
        if let Some(closed) = &self.closed {
            return Incoming::Closed(closed.clone());
        }
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                panic!(
                    "{}: timed out after {:?} waiting for {what}; unconsumed: {:?}",
                    self.label,
                    self.wait,
                    self.backlog()
                );
            };
            let message = match next {
                None => return self.mark_closed(None, "stream ended".to_owned()).await,
                Some(Err(error)) => return self.mark_closed(None, error.to_string()).await,
                Some(Ok(message)) => message,
            };
            match message {
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((None, String::new()), |frame| {
                        (Some(u16::from(frame.code)), frame.reason.to_string())
                    });
                    return self.mark_closed(code, reason).await;
                }
                Message::Text(text) => {
                    let text = text.as_str();
                    match text {
                        "2" => {
                            self.pings += 1;
                            if self.auto_pong {
                                // The server may be closing; the close is reported by the next read.
                                let _ = self.ws.send(Message::text("3")).await;
                            }
                            return Incoming::Ping;
                        }
                        "1" => return Incoming::EngineClose,
                        "3" | "6" => {}
                        _ if text.starts_with('4') => {
                            let packet = Packet::parse(text).unwrap_or_else(|error| {
                                panic!(
                                    "{}: the server sent a bad Socket.IO packet ({error}): {text:?}",
                                    self.label
                                )
                            });
                            return Incoming::Packet(packet);
                        }
                        _ => panic!("{}: unexpected Engine.IO frame from the server: {text:?}", self.label),
                    }
                }
                Message::Binary(bytes) => return Incoming::Binary(bytes.to_vec()),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn mark_closed(&mut self, code: Option<u16>, reason: String) -> Incoming {
        if code.is_some() {
            // Lets tungstenite send its close reply, completing the closing handshake.
            let _ = tokio::time::timeout(WAIT, self.ws.flush()).await;
        }
        let closed = Closed { code, reason };
        self.closed = Some(closed.clone());
        Incoming::Closed(closed)
    }
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ack_with_namespace_and_id() {
        let packet = Packet::parse(r#"43/api/v1/chat,17[{"roomId":"a","members":1}]"#).expect("parses");
        assert_eq!(packet.kind, PacketKind::Ack);
        assert_eq!(packet.namespace, "/api/v1/chat");
        assert_eq!(packet.ack_id, Some(17));
        assert_eq!(packet.ack_args(), vec![json!({"roomId": "a", "members": 1})]);
    }

    #[test]
    fn parses_a_disconnect_without_payload() {
        let packet = Packet::parse("41/api/v1/chat,").expect("parses");
        assert_eq!(packet.kind, PacketKind::Disconnect);
        assert_eq!(packet.namespace, "/api/v1/chat");
        assert!(packet.data.is_none());
    }

    #[test]
    fn parses_an_event_in_the_main_namespace() {
        let packet = Packet::parse(r#"42["message",{"content":"hi"}]"#).expect("parses");
        assert_eq!(packet.namespace, "/");
        assert_eq!(packet.event_name(), Some("message"));
        assert_eq!(packet.event_payload(), json!({"content": "hi"}));
    }

    #[test]
    fn encodes_like_the_protocol_examples() {
        let data = json!(["join_room", {"roomId": "a"}]);
        assert_eq!(
            encode_packet('2', CHAT, Some(17), Some(&data)),
            r#"42/api/v1/chat,17["join_room",{"roomId":"a"}]"#
        );
        assert_eq!(encode_packet('0', CHAT, None, None), "40/api/v1/chat,");
        assert_eq!(encode_packet('0', "/", None, None), "40");
    }
}
