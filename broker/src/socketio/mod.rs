//! The Socket.IO v5 layer: namespaces, sockets, packets, acks and rooms, on
//! top of the Engine.IO sessions of [`crate::engineio`].
//!
//! Knows nothing of chat. An application registers a [`Handler`] per
//! namespace; the handler's `authorize` is the middleware that runs before the
//! namespace accepts a client, and its callbacks see [`Socket`]s and
//! [`Event`]s. Everything a handler does is synchronous: it runs on the
//! session's reader task and emits by queueing pre-built frames.
//!
//! The four ways to emit: [`Socket::emit`] (one client),
//! [`Namespace::to_room`] with and without an excepted socket (a room, sender
//! included or excluded), and [`Namespace::broadcast`] (every client of the
//! namespace). Each encodes its frame once.

mod adapter;
mod connection;
mod namespace;
mod recovery;
mod socket;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use serde::Serialize;
use serde_json::value::RawValue;
use simd_json::BorrowedValue;
use tokio::time::Instant;

pub use adapter::{Adapter, IdPromise, MessageId, Stamp};
pub use namespace::Namespace;
pub use socket::Socket;

use crate::adapter::redis::node::RedisCluster;
use crate::engineio::{Application, CloseReason, Handshake, Session, SessionHandler};
use crate::metrics::Metrics;
use crate::protocol::Frame;
pub use crate::protocol::json::JsonError;
use crate::protocol::socketio::{PacketType, write_binary_header, write_header};

/// A namespace's application: middleware and event callbacks.
pub trait Handler: Send + Sync + 'static {
    /// Middleware: decides whether the client may join the namespace, before
    /// it is accepted. `auth` is the CONNECT packet's payload, if any.
    ///
    /// # Errors
    /// A [`ConnectError`], sent to the client as CONNECT_ERROR.
    fn authorize(
        &self,
        handshake: &Handshake,
        auth: Option<&BorrowedValue<'_>>,
    ) -> Result<Accepted, ConnectError>;

    /// The client is now in the namespace (its CONNECT answer is queued).
    fn on_connect(&self, socket: &Arc<Socket>);

    /// The client emitted an event.
    fn on_event(&self, socket: &Arc<Socket>, event: Event<'_>);

    /// The socket is leaving: it is still in its rooms, which the layer
    /// empties silently right after this returns. With recovery on, a
    /// session whose connection was lost leaves only when its recovery
    /// window closes (or its recovery fails): this is called then.
    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason);

    /// A client took its suspended session up again: the same socket, its
    /// rooms, and what it missed are queued.
    fn on_recover(&self, socket: &Arc<Socket>) {
        let _ = socket;
    }

    /// The socket reached the `expires_at` its [`Accepted`] gave. The layer
    /// then disconnects it and closes the session.
    fn on_expired(&self, socket: &Arc<Socket>) {
        let _ = socket;
    }

    /// The client emitted an event whose payload the layer refused: JSON
    /// that cannot be represented faithfully (a lone surrogate escape, a key
    /// given twice). The connection stays up; the handler answers it.
    fn on_refused_event(&self, socket: &Arc<Socket>, ack_id: Option<u64>, error: JsonError) {
        let _ = (socket, ack_id, error);
    }

    /// What the other nodes of a cluster keep of `socket` for each room it
    /// joins, to hand back to [`Handler::on_members_lost`] should this node
    /// die (for chat: the user id). `None`, the default, keeps nothing.
    fn presence(&self, socket: &Socket) -> Option<Box<RawValue>> {
        let _ = socket;
        None
    }

    /// Members of `room` on another node of the cluster, described by their
    /// [`Handler::presence`], are gone without this node having heard them
    /// leave: their node went silent, or they left during an outage. Each
    /// node is told for its own members of the room (see
    /// [`Adapter::broadcast_here`]).
    fn on_members_lost(&self, namespace: &Namespace, room: &str, presences: &[Box<RawValue>]) {
        let _ = (namespace, room, presences);
    }

    /// Members of `room` on another node joined without this node having
    /// heard it (during an outage, or their node was counted gone and is
    /// back); as [`Handler::on_members_lost`].
    fn on_members_found(&self, namespace: &Namespace, room: &str, presences: &[Box<RawValue>]) {
        let _ = (namespace, room, presences);
    }
}

/// Bounds on what one session may send the Socket.IO layer.
#[derive(Debug, Clone, Copy)]
pub struct PacketLimits {
    /// Deepest nesting of a JSON payload; deeper closes the session.
    pub max_json_depth: usize,
    /// Binary attachments one packet may announce.
    pub max_attachments: usize,
    /// Bytes of binary attachments one packet may carry in all.
    pub max_attachment_bytes: usize,
    /// Refused CONNECTs one session may make before it is closed.
    pub max_connect_failures: u32,
    /// How long a session may stay without a namespace.
    pub connect_timeout: std::time::Duration,
    /// How long a lost session waits for its client; zero turns recovery off.
    pub recovery_window: std::time::Duration,
    /// Bytes each namespace's replay store keeps at most.
    pub recovery_max_bytes: usize,
}

impl Default for PacketLimits {
    fn default() -> Self {
        let config = crate::Config::default();
        Self::from(&config)
    }
}

impl From<&crate::Config> for PacketLimits {
    fn from(config: &crate::Config) -> Self {
        Self {
            max_json_depth: config.max_json_depth,
            max_attachments: config.max_attachments,
            max_attachment_bytes: config.max_payload,
            max_connect_failures: config.max_connect_failures,
            connect_timeout: config.connect_timeout,
            recovery_window: config.recovery_window,
            recovery_max_bytes: config.recovery_max_bytes,
        }
    }
}

/// A client accepted by [`Handler::authorize`].
pub struct Accepted {
    /// Per-socket application state, reachable through [`Socket::data`].
    pub data: Box<dyn Any + Send + Sync>,
    /// When the socket must be disconnected (e.g. token expiry).
    pub expires_at: Option<Instant>,
    /// Who the client is (a user id): a suspended session is recovered only
    /// by a client the middleware accepts as its owner.
    pub owner: Option<String>,
}

/// A refusal of CONNECT: `{"message": …, "data": …}` on the wire.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectError {
    /// Shown to the client as the `connect_error` message.
    pub message: String,
    /// Optional details (`err.data` on the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// An event from a client.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The event name.
    pub name: &'a str,
    /// The arguments after the name.
    pub args: &'a [BorrowedValue<'a>],
    /// The ack id the client waits on, if any.
    pub ack_id: Option<u64>,
    /// Binary attachments of a BINARY_EVENT, in placeholder order.
    pub attachments: &'a [Bytes],
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT for this namespace.
    ClientDisconnect,
    /// The session closed, for this reason.
    SessionClosed(CloseReason),
}

/// The Socket.IO server: its namespaces, each with its handler and rooms.
/// Cheap to clone.
#[derive(Clone)]
pub struct SocketIo {
    namespaces: Arc<HashMap<Box<str>, Arc<Namespace>>>,
    metrics: Arc<Metrics>,
    limits: PacketLimits,
    cluster: Option<Arc<RedisCluster>>,
}

impl SocketIo {
    /// A server with the given namespaces and the default [`PacketLimits`].
    #[must_use]
    pub fn new(namespaces: Vec<(String, Arc<dyn Handler>)>, metrics: Arc<Metrics>) -> Self {
        Self::with_limits(namespaces, metrics, PacketLimits::default())
    }

    /// A server with the given namespaces and limits.
    #[must_use]
    pub fn with_limits(
        namespaces: Vec<(String, Arc<dyn Handler>)>,
        metrics: Arc<Metrics>,
        limits: PacketLimits,
    ) -> Self {
        Self::with_adapters(namespaces, metrics, limits, Adapter::local)
    }

    /// A server whose namespaces get their adapters from `adapter` (given
    /// the namespace's name). A clustered adapter is attached to its
    /// namespace's sockets here.
    #[must_use]
    pub fn with_adapters(
        namespaces: Vec<(String, Arc<dyn Handler>)>,
        metrics: Arc<Metrics>,
        limits: PacketLimits,
        mut adapter: impl FnMut(&str) -> Adapter,
    ) -> Self {
        let namespaces = namespaces
            .into_iter()
            .map(|(name, handler)| {
                let adapter = adapter(&name).with_recovery(limits.recovery_window, limits.recovery_max_bytes);
                let namespace = Arc::new(Namespace::new(&name, handler, adapter, Arc::clone(&metrics)));
                if let Some(cluster) = namespace.adapter().cluster() {
                    let sockets: Arc<dyn crate::adapter::LocalSockets> = namespace.clone();
                    cluster.attach(Arc::downgrade(&sockets));
                }
                (Box::from(name), namespace)
            })
            .collect();
        Self { namespaces: Arc::new(namespaces), metrics, limits, cluster: None }
    }

    /// Namespaces whose adapters reach the other nodes of `cluster`, for
    /// health and metrics.
    #[must_use]
    pub fn in_cluster(mut self, cluster: Arc<RedisCluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The Redis cluster this server is a node of, if any.
    #[must_use]
    pub fn cluster(&self) -> Option<&Arc<RedisCluster>> {
        self.cluster.as_ref()
    }

    /// The namespace called `name`.
    #[must_use]
    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    /// Every namespace.
    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }

    /// The server's counters.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sockets, rooms, memberships and queued bytes, summed over every
    /// namespace (walks every registry stripe and room shard: for
    /// `/metrics` and tests, not the hot path).
    #[must_use]
    pub fn gauges(&self) -> crate::metrics::Gauges {
        let mut gauges = crate::metrics::Gauges::default();
        for namespace in self.namespaces() {
            let sockets = namespace.sockets();
            gauges.sockets += sockets.len() as u64;
            gauges.outbox_bytes += sockets.iter().map(|socket| socket.pending_bytes() as u64).sum::<u64>();
            let table = namespace.adapter().local_half().table();
            gauges.rooms += table.len() as u64;
            gauges.room_members += table.memberships() as u64;
            gauges.suspended_sessions += namespace.suspended_count() as u64;
            if let Some(ring) = namespace.adapter().ring() {
                let (packets, bytes) = ring.usage();
                gauges.replay_packets += packets as u64;
                gauges.replay_bytes += bytes as u64;
            }
        }
        gauges.redis = self.cluster.as_ref().map(|cluster| cluster.metrics().snapshot());
        gauges
    }
}

impl Application for SocketIo {
    fn open(self: Arc<Self>, session: &Session) -> Box<dyn SessionHandler> {
        Box::new(connection::Connection::new(self, session.clone()))
    }
}

/// Encodes an EVENT `[event, data]` for `namespace` into a frame.
pub fn event_frame<T: Serialize + ?Sized>(
    namespace: &str,
    ack_id: Option<u64>,
    event: &str,
    data: &T,
) -> Frame {
    packet_frame(PacketType::Event, namespace, ack_id, &(event, data))
}

/// Encodes an ACK `[data]` answering `ack_id` into a frame.
pub fn ack_frame<T: Serialize + ?Sized>(namespace: &str, ack_id: u64, data: &T) -> Frame {
    packet_frame(PacketType::Ack, namespace, Some(ack_id), &[data])
}

/// Encodes a DISCONNECT for `namespace` into a frame.
#[must_use]
pub fn disconnect_frame(namespace: &str) -> Frame {
    Frame::build_text(|buf| {
        buf.put_u8(crate::protocol::engineio::MESSAGE);
        write_header(buf, PacketType::Disconnect, namespace, None);
    })
}

/// Encodes any packet with a JSON payload into a frame.
pub fn packet_frame<T: Serialize + ?Sized>(
    kind: PacketType,
    namespace: &str,
    ack_id: Option<u64>,
    payload: &T,
) -> Frame {
    Frame::build_text(|buf| {
        buf.put_u8(crate::protocol::engineio::MESSAGE);
        write_header(buf, kind, namespace, ack_id);
        // Payloads are the server's own types, which always serialize: a
        // failure here is a bug, not something a client can cause.
        #[allow(clippy::expect_used, reason = "the server's own payload types always serialize")]
        serde_json::to_writer(buf.writer(), payload).expect("server payloads serialize to JSON");
    })
}

/// Encodes a packet whose payload is an array of `args` (after `name`, for
/// an event), with binary `attachments` that the arguments' placeholders
/// point at: a BINARY_EVENT or BINARY_ACK frame followed by one binary frame
/// per attachment, or a plain EVENT or ACK frame when there are none.
pub fn frames_with_attachments<T: Serialize>(
    namespace: &str,
    name: Option<&str>,
    ack_id: Option<u64>,
    args: &[T],
    attachments: &[Bytes],
) -> Vec<Frame> {
    let kind = match (name.is_some(), attachments.is_empty()) {
        (true, true) => PacketType::Event,
        (true, false) => PacketType::BinaryEvent,
        (false, true) => PacketType::Ack,
        (false, false) => PacketType::BinaryAck,
    };
    let packet = Frame::build_text(|buf| {
        buf.put_u8(crate::protocol::engineio::MESSAGE);
        write_binary_header(buf, kind, attachments.len(), namespace, ack_id);
        // The arguments are JSON values the client sent, or the server's
        // own types: they always serialize.
        #[allow(clippy::expect_used, reason = "JSON values and the server's own types always serialize")]
        serde_json::to_writer(buf.writer(), &Arguments { name, args })
            .expect("server payloads serialize to JSON");
    });
    std::iter::once(packet).chain(attachments.iter().map(|data| Frame::binary(data))).collect()
}

/// `[name, ...args]`, or `[...args]` without a name.
struct Arguments<'a, T> {
    name: Option<&'a str>,
    args: &'a [T],
}

impl<T: Serialize> Serialize for Arguments<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.args.len() + usize::from(self.name.is_some())))?;
        if let Some(name) = self.name {
            seq.serialize_element(name)?;
        }
        for arg in self.args {
            seq.serialize_element(arg)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_attachments_match_the_wire_strings() {
        let placeholder = serde_json::json!({"_placeholder": true, "num": 0});
        let frames = frames_with_attachments(
            "/",
            Some("message-back"),
            None,
            &[&placeholder],
            &[Bytes::from_static(&[1, 2, 3])],
        );
        assert_eq!(text(&frames[0]), r#"451-["message-back",{"_placeholder":true,"num":0}]"#);
        assert_eq!(frames[1].payload(), &[1, 2, 3]);
        let frames = frames_with_attachments::<serde_json::Value>(
            "/custom",
            None,
            Some(456),
            &[1.into(), "2".into()],
            &[],
        );
        assert_eq!(frames.len(), 1);
        assert_eq!(text(&frames[0]), r#"43/custom,456[1,"2"]"#);
    }

    fn text(frame: &Frame) -> &str {
        std::str::from_utf8(frame.payload()).expect("utf-8")
    }

    #[test]
    fn frames_match_the_wire_strings() {
        let frame = event_frame("/api/v1/chat", None, "message", &serde_json::json!({"a": 1}));
        assert_eq!(text(&frame), r#"42/api/v1/chat,["message",{"a":1}]"#);
        let frame = ack_frame("/api/v1/chat", 17, &serde_json::json!({"roomId": "a"}));
        assert_eq!(text(&frame), r#"43/api/v1/chat,17[{"roomId":"a"}]"#);
        assert_eq!(text(&disconnect_frame("/api/v1/chat")), "41/api/v1/chat,");
        assert_eq!(text(&event_frame("/", Some(3), "x", &1)), r#"423["x",1]"#);
    }
}

#[cfg(test)]
mod layer_tests;
