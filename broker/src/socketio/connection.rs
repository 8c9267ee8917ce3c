//! The Socket.IO side of one Engine.IO session: decodes packets, runs the
//! namespace middleware on CONNECT, dispatches events and acks to the
//! namespace handlers, and gathers binary attachments.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use simd_json::BorrowedValue;
use tokio::time::Instant;
use tracing::debug;

use super::{ConnectError, DisconnectReason, Event, Socket, SocketIo, disconnect_frame, packet_frame};
use crate::conn::{CloseReason, Session, SessionHandler};
use crate::metrics::Metrics;
use crate::protocol::socketio::{self, Packet, PacketType, check_placeholders, split_event};

/// How long a session may stay without any namespace (socket.io's
/// `connectTimeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// A parse buffer larger than this is given back after use, so one big
/// message does not pin memory.
const PARSER_KEEP_BYTES: usize = 64 * 1024;

/// simd-json parses in place and needs working buffers. One set per worker
/// thread serves every connection that thread runs: idle connections hold
/// none, and the buffers are reused instead of allocated per message.
struct Parser {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
}

thread_local! {
    static PARSER: RefCell<Parser> =
        RefCell::new(Parser { input: Vec::new(), buffers: simd_json::Buffers::default() });
}

/// Parses `json` and runs `f` on the value (`None` if it is not JSON).
/// `f` must not parse again: the thread's parser is borrowed meanwhile, and
/// handlers, which `f` runs, never parse.
fn with_parsed<R>(json: &str, f: impl FnOnce(Option<&BorrowedValue<'_>>) -> R) -> R {
    PARSER.with(|parser| {
        let mut parser = parser.borrow_mut();
        let Parser { input, buffers } = &mut *parser;
        input.clear();
        input.extend_from_slice(json.as_bytes());
        let result = {
            let value = simd_json::to_borrowed_value_with_buffers(input, buffers).ok();
            f(value.as_ref())
        };
        if input.capacity() > PARSER_KEEP_BYTES {
            *input = Vec::new();
            *buffers = simd_json::Buffers::default();
        }
        result
    })
}

pub(super) struct Connection {
    server: SocketIo,
    session: Session,
    /// Connected namespaces; almost always one.
    sockets: Vec<Arc<Socket>>,
    /// A binary packet waiting for its attachments.
    pending: Option<PendingBinary>,
    /// When the session was last without any namespace.
    lonely_since: Instant,
}

struct PendingBinary {
    packet_text: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

impl Connection {
    pub(super) fn new(server: SocketIo, session: Session) -> Self {
        Self { server, session, sockets: Vec::new(), pending: None, lonely_since: Instant::now() }
    }

    /// Dispatches one packet. As in socket.io 4.x, a CONNECT for a
    /// namespace already joined, or any other packet for one not joined, is
    /// an invalid state that closes the session.
    fn handle(&mut self, packet: &Packet<'_>, attachments: &[Bytes]) -> Result<(), CloseReason> {
        Metrics::add(&self.server.metrics.packets_in, 1);
        let index = self.socket_index(packet.namespace);
        match (packet.kind, index) {
            (PacketType::Connect, None) => {
                self.connect(packet);
                Ok(())
            }
            (PacketType::Disconnect, Some(index)) => {
                self.remove_socket(index, DisconnectReason::ClientDisconnect);
                Ok(())
            }
            (PacketType::Event | PacketType::BinaryEvent, Some(index)) => {
                self.event(index, packet, attachments)
            }
            (PacketType::Ack | PacketType::BinaryAck, Some(index)) => {
                let answer: serde_json::Value =
                    serde_json::from_str(packet.payload).map_err(|_| CloseReason::ProtocolError)?;
                let first = match answer {
                    serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
                    _ => serde_json::Value::Null,
                };
                if let Some(id) = packet.ack_id {
                    self.sockets[index].resolve_ack(id, first);
                }
                Ok(())
            }
            (kind, _) => {
                debug!(sid = %self.session.sid, ?kind, namespace = packet.namespace, "packet in an invalid state");
                Err(CloseReason::ProtocolError)
            }
        }
    }

    fn socket_index(&self, namespace: &str) -> Option<usize> {
        self.sockets.iter().position(|socket| socket.namespace().name() == namespace)
    }

    fn connect(&mut self, packet: &Packet<'_>) {
        let outbox = &self.session.outbox;
        let Some(namespace) = self.server.namespace(packet.namespace).cloned() else {
            let refusal = ConnectError { message: "Invalid namespace".to_owned(), data: None };
            let _ =
                outbox.try_push(&packet_frame(PacketType::ConnectError, packet.namespace, None, &refusal));
            return;
        };
        // A CONNECT payload that is not JSON counts as no payload: the
        // middleware then decides on the other token sources.
        let handshake = &self.session.handshake;
        let accepted = if packet.payload.is_empty() {
            namespace.handler().authorize(handshake, None)
        } else {
            with_parsed(packet.payload, |auth| namespace.handler().authorize(handshake, auth))
        };
        match accepted {
            Err(refusal) => {
                Metrics::add(&self.server.metrics.auth_refusals, 1);
                let _ = outbox.try_push(&packet_frame(
                    PacketType::ConnectError,
                    namespace.name(),
                    None,
                    &refusal,
                ));
            }
            Ok(accepted) => {
                let socket = Arc::new(Socket::new(
                    Arc::clone(&namespace),
                    outbox.clone(),
                    Arc::clone(&self.session.handshake),
                    accepted.data,
                    accepted.expires_at,
                ));
                namespace.insert(Arc::clone(&socket));
                let sid = socket.sid().to_string();
                let _ = outbox.try_push(&packet_frame(
                    PacketType::Connect,
                    namespace.name(),
                    None,
                    &serde_json::json!({ "sid": sid }),
                ));
                self.sockets.push(Arc::clone(&socket));
                namespace.handler().on_connect(&socket);
            }
        }
    }

    fn event(&mut self, index: usize, packet: &Packet<'_>, attachments: &[Bytes]) -> Result<(), CloseReason> {
        let socket = Arc::clone(&self.sockets[index]);
        with_parsed(packet.payload, |value| {
            let value = value.ok_or(CloseReason::ProtocolError)?;
            let (name, args) = split_event(value).map_err(|_| CloseReason::ProtocolError)?;
            if packet.kind == PacketType::BinaryEvent {
                check_placeholders(value, attachments.len()).map_err(|_| CloseReason::ProtocolError)?;
            }
            let event = Event { name, args, ack_id: packet.ack_id, attachments };
            socket.namespace().handler().on_event(&socket, event);
            Ok(())
        })
    }

    fn remove_socket(&mut self, index: usize, reason: DisconnectReason) {
        let socket = self.sockets.swap_remove(index);
        socket.namespace().handler().on_disconnect(&socket, reason);
        socket.leave_all_silently();
        socket.namespace().remove(socket.sid());
        if self.sockets.is_empty() {
            self.lonely_since = Instant::now();
        }
    }

    fn finish_binary(&mut self) -> Result<(), CloseReason> {
        let Some(pending) = self.pending.take_if(|pending| pending.attachments.len() == pending.expected)
        else {
            return Ok(());
        };
        let packet = socketio::decode(&pending.packet_text).map_err(|_| CloseReason::ProtocolError)?;
        self.handle(&packet, &pending.attachments)
    }
}

impl SessionHandler for Connection {
    fn on_text(&mut self, text: &str) -> Result<(), CloseReason> {
        if self.pending.is_some() {
            // Attachments must follow their packet before anything else.
            return Err(CloseReason::ProtocolError);
        }
        let packet = socketio::decode(text).map_err(|error| {
            debug!(sid = %self.session.sid, %error, "undecodable Socket.IO packet");
            CloseReason::ProtocolError
        })?;
        if packet.kind.is_binary() {
            self.pending = Some(PendingBinary {
                packet_text: text.to_owned(),
                expected: packet.attachments,
                attachments: Vec::with_capacity(packet.attachments),
            });
            return self.finish_binary();
        }
        self.handle(&packet, &[])
    }

    fn on_binary(&mut self, data: Bytes) -> Result<(), CloseReason> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(CloseReason::ProtocolError);
        };
        pending.attachments.push(data);
        self.finish_binary()
    }

    fn deadline(&self) -> Option<Instant> {
        if self.sockets.is_empty() {
            return Some(self.lonely_since + CONNECT_TIMEOUT);
        }
        self.sockets.iter().filter_map(|socket| socket.expires_at()).min()
    }

    fn on_deadline(&mut self) -> Result<(), CloseReason> {
        if self.sockets.is_empty() {
            return Err(CloseReason::ConnectTimeout);
        }
        let now = Instant::now();
        let mut expired = false;
        for socket in &self.sockets {
            if socket.expires_at().is_some_and(|at| at <= now) {
                socket.namespace().handler().on_expired(socket);
                let _ = socket.send_frame(&disconnect_frame(socket.namespace().name()));
                expired = true;
            }
        }
        if expired { Err(CloseReason::PolicyViolation) } else { Ok(()) }
    }

    fn on_shutdown(&mut self) {
        for socket in &self.sockets {
            let _ = socket.send_frame(&disconnect_frame(socket.namespace().name()));
        }
    }

    fn on_close(&mut self, reason: CloseReason) {
        while !self.sockets.is_empty() {
            self.remove_socket(self.sockets.len() - 1, DisconnectReason::SessionClosed(reason));
        }
    }
}
