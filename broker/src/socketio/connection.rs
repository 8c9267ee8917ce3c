//! The Socket.IO side of one Engine.IO session: decodes packets, runs the
//! namespace middleware on CONNECT, dispatches events and acks to the
//! namespace handlers, and gathers binary attachments.

#![warn(clippy::arithmetic_side_effects)]

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use simd_json::BorrowedValue;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::recovery::connect_frame;
use super::{ConnectError, DisconnectReason, Event, Socket, SocketIo, disconnect_frame, packet_frame};
use crate::adapter::redis::session::StoredSession;
use crate::engineio::{CloseReason, Session, SessionHandler};
use crate::ids::Pid;
use crate::metrics::{Limit, Metrics};
use crate::protocol::DecodeError;
use crate::protocol::json::{self, JsonError};
use crate::protocol::socketio::{self, Packet, PacketType, check_placeholders, split_event};

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

/// Parses `json` with the checks of [`json::parse`] and runs `f` on the
/// outcome. `f` must not parse again: the thread's parser is borrowed
/// meanwhile, and handlers, which `f` runs, never parse.
fn with_parsed<R>(
    json: &str,
    max_depth: usize,
    f: impl FnOnce(Result<&BorrowedValue<'_>, JsonError>) -> R,
) -> R {
    PARSER.with(|parser| {
        let mut parser = parser.borrow_mut();
        let Parser { input, buffers } = &mut *parser;
        input.clear();
        input.extend_from_slice(json.as_bytes());
        let result = {
            let value = json::parse(input, buffers, max_depth);
            f(value.as_ref().map_err(|error| *error))
        };
        if input.capacity() > PARSER_KEEP_BYTES {
            *input = Vec::new();
            *buffers = simd_json::Buffers::default();
        }
        result
    })
}

/// Held by every session for its whole life, idle or not: the server is
/// shared, not copied, and the states only some sessions ever reach (a binary
/// packet waiting for its attachments, a recovery lookup) are boxed when they
/// begin, so an idle session's handler is 96 bytes, not 368.
pub(super) struct Connection {
    server: Arc<SocketIo>,
    session: Session,
    /// Connected namespaces; almost always one.
    sockets: Vec<Arc<Socket>>,
    /// A binary packet waiting for its attachments.
    pending: Option<Box<PendingBinary>>,
    /// When the session was last without any namespace.
    lonely_since: Instant,
    /// CONNECTs refused so far.
    connect_failures: u32,
    /// A CONNECT waiting for its session from Redis.
    lookup: Option<Box<Lookup>>,
}

/// A recovering CONNECT, accepted by the middleware, whose session is being
/// taken from a cluster's Redis (bounded by the lookup timeout).
struct Lookup {
    namespace: Arc<super::Namespace>,
    accepted: super::Accepted,
    pid: Pid,
    offset: Option<String>,
    answer: crate::adapter::BoxFuture<Result<Option<StoredSession>, String>>,
}

struct PendingBinary {
    packet_text: String,
    expected: usize,
    attachments: Vec<Bytes>,
    /// The attachments' bytes so far.
    buffered_bytes: usize,
}

impl Connection {
    pub(super) fn new(server: Arc<SocketIo>, session: Session) -> Self {
        Self {
            server,
            session,
            sockets: Vec::new(),
            pending: None,
            lonely_since: Instant::now(),
            connect_failures: 0,
            lookup: None,
        }
    }

    /// Dispatches one packet. As in socket.io 4.x, a CONNECT for a
    /// namespace already joined, or any other packet for one not joined, is
    /// an invalid state that closes the session.
    fn handle(&mut self, packet: &Packet<'_>, attachments: &[Bytes]) -> Result<(), CloseReason> {
        Metrics::add(&self.server.metrics.packets_in, 1);
        let index = self.socket_index(packet.namespace);
        match (packet.kind, index) {
            (PacketType::Connect, None) => self.connect(packet),
            (PacketType::Disconnect, Some(index)) => {
                self.remove_socket(index, DisconnectReason::ClientDisconnect);
                Ok(())
            }
            (PacketType::Event | PacketType::BinaryEvent, Some(index)) => {
                self.event(index, packet, attachments)
            }
            (PacketType::Ack | PacketType::BinaryAck, Some(index)) => {
                let answer = json::parse_owned(packet.payload, self.server.limits.max_json_depth)
                    .map_err(|error| self.refuse_json(error))?;
                let first = match answer {
                    serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
                    _ => serde_json::Value::Null,
                };
                if let (Some(id), Some(socket)) = (packet.ack_id, self.sockets.get(index)) {
                    socket.resolve_ack(id, first);
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

    /// Runs the namespace middleware on a CONNECT and answers it.
    ///
    /// # Errors
    /// Closes the session for a payload nested too deep, or once the session
    /// has had more refusals than `max_connect_failures`.
    fn connect(&mut self, packet: &Packet<'_>) -> Result<(), CloseReason> {
        if self.lookup.as_ref().is_some_and(|lookup| lookup.namespace.name() == packet.namespace) {
            // A client waits for its CONNECT's answer before it connects
            // that namespace again; other namespaces are answered meanwhile.
            debug!(sid = %self.session.sid, "CONNECT while the same namespace's is being looked up");
            return Err(CloseReason::ProtocolError);
        }
        let Some(namespace) = self.server.namespace(packet.namespace).cloned() else {
            let refusal = ConnectError { message: "Invalid namespace".to_owned(), data: None };
            return self.refuse_connect(packet.namespace, &refusal);
        };
        // A CONNECT payload that is not JSON counts as no payload: the
        // middleware then decides on the other token sources. One that
        // cannot be represented faithfully is refused. A recovering client
        // adds `pid` and `offset` to it; the middleware runs all the same.
        let handshake = &self.session.handshake;
        let mut recovery: Option<(Pid, Option<String>)> = None;
        let accepted = if packet.payload.is_empty() {
            namespace.handler().authorize(handshake, None)
        } else {
            with_parsed(packet.payload, self.server.limits.max_json_depth, |auth| match auth {
                Ok(auth) => {
                    recovery = recovery_fields(auth);
                    Ok(namespace.handler().authorize(handshake, Some(auth)))
                }
                Err(JsonError::Syntax) => Ok(namespace.handler().authorize(handshake, None)),
                Err(error) => Err(error),
            })
            .or_else(|error| match error {
                JsonError::TooDeep(_) => Err(self.refuse_json(error)),
                _ => {
                    self.refuse_json(error);
                    Ok(Err(ConnectError {
                        message: format!("Bad request: {error}"),
                        data: Some(serde_json::json!({ "code": 400 })),
                    }))
                }
            })?
        };
        match accepted {
            Err(refusal) => {
                Metrics::add(&self.server.metrics.auth_refusals, 1);
                self.refuse_connect(namespace.name(), &refusal)
            }
            Ok(accepted) => {
                // In a cluster the session is taken from Redis first (it may
                // have dropped on another broker): the answer comes in
                // `poll_work`, and the session task serves its other
                // namespaces meanwhile (one lookup at a time: another
                // namespace recovering meanwhile recovers from here only).
                if let Some((pid, offset)) = &recovery
                    && self.lookup.is_none()
                    && namespace.sessions().is_some()
                    && let Some(cluster) =
                        namespace.adapter().cluster().filter(|cluster| cluster.is_connected())
                {
                    let answer = cluster.take_session(*pid);
                    let (pid, offset) = (*pid, offset.clone());
                    self.lookup = Some(Box::new(Lookup { namespace, accepted, pid, offset, answer }));
                    return Ok(());
                }
                self.accept(&namespace, accepted, recovery.as_ref());
                Ok(())
            }
        }
    }

    /// Admits a client the middleware accepted: the suspended session of
    /// `recovery` if it waits here for this user, else a fresh one.
    fn accept(
        &mut self,
        namespace: &Arc<super::Namespace>,
        accepted: super::Accepted,
        recovery: Option<&(Pid, Option<String>)>,
    ) {
        let outbox = &self.session.outbox;
        // Only now, with the token checked again, is a suspended session
        // looked at; one of another user stays untouched.
        let suspended =
            recovery.and_then(|(pid, _)| namespace.take_suspended(*pid, accepted.owner.as_deref()));
        let accepted = match suspended {
            None => accepted,
            Some(session) => {
                let offset = recovery.and_then(|(_, offset)| offset.as_deref());
                match namespace.resume(session, offset, outbox, &self.session.handshake, accepted) {
                    Ok(socket) => return self.recovered(&socket),
                    // Not recoverable after all: a fresh session.
                    Err(accepted) => accepted,
                }
            }
        };
        let socket = Arc::new(Socket::new(
            Arc::clone(namespace),
            outbox.clone(),
            Arc::clone(&self.session.handshake),
            accepted,
        ));
        namespace.insert(Arc::clone(&socket));
        let _ = outbox.try_push(&connect_frame(namespace.name(), &socket));
        self.sockets.push(Arc::clone(&socket));
        namespace.handler().on_connect(&socket);
    }

    fn recovered(&mut self, socket: &Arc<Socket>) {
        self.sockets.push(Arc::clone(socket));
        socket.namespace().handler().on_recover(socket);
    }

    /// Answers a recovering CONNECT once Redis answered the lookup of its
    /// session (or failed to, in time).
    fn finish_lookup(&mut self, lookup: Lookup, outcome: Result<Option<StoredSession>, String>) {
        let Lookup { namespace, accepted, pid, offset, .. } = lookup;
        let recovery = Some((pid, offset));
        match outcome {
            Ok(Some(stored)) if stored.data.sub.as_deref() != accepted.owner.as_deref() => {
                // Another user's: back where it was, for its owner.
                namespace.put_back(stored);
                self.accept(&namespace, accepted, None);
            }
            // Its own broker: the Redis copy is gone, the session recovers here.
            Ok(Some(_)) if namespace.is_stored(pid).is_some() => {
                self.accept(&namespace, accepted, recovery.as_ref());
            }
            Ok(Some(stored)) => {
                let offset = recovery.as_ref().and_then(|(_, offset)| offset.as_deref());
                let outbox = &self.session.outbox;
                match namespace.resume_remote(&stored, offset, outbox, &self.session.handshake, accepted) {
                    Ok(socket) => self.recovered(&socket),
                    Err(Some(accepted)) => self.accept(&namespace, accepted, None),
                    Err(None) => {
                        let refusal = ConnectError { message: "Internal error".to_owned(), data: None };
                        let _ = self.refuse_connect(namespace.name(), &refusal);
                    }
                }
            }
            // Not in Redis: taken by another broker (or expired) when Redis
            // had it; a session Redis never got recovers here only.
            Ok(None) => {
                let here = namespace.is_stored(pid) == Some(false);
                self.accept(&namespace, accepted, recovery.as_ref().filter(|_| here));
            }
            Err(error) => {
                warn!(sid = %self.session.sid, %error, "session lookup in Redis failed: recovering from this broker only");
                self.accept(&namespace, accepted, recovery.as_ref());
            }
        }
    }

    /// Answers a CONNECT with CONNECT_ERROR, and closes the session once it
    /// has been refused more than `max_connect_failures` times: each attempt
    /// may cost a signature check, and a client that keeps guessing is not
    /// one to keep serving.
    fn refuse_connect(&mut self, namespace: &str, refusal: &ConnectError) -> Result<(), CloseReason> {
        let _ =
            self.session.outbox.try_push(&packet_frame(PacketType::ConnectError, namespace, None, refusal));
        self.connect_failures = self.connect_failures.saturating_add(1);
        if self.connect_failures > self.server.limits.max_connect_failures {
            self.server.metrics.refuse(Limit::ConnectFailures);
            debug!(sid = %self.session.sid, failures = self.connect_failures, "too many refused CONNECTs");
            return Err(CloseReason::PolicyViolation);
        }
        Ok(())
    }

    /// Logs a packet that does not decode, with what is wrong with it, and
    /// says how the session ends for it (see `From<&DecodeError> for
    /// CloseReason`).
    fn refuse_packet(&self, error: &DecodeError) -> CloseReason {
        debug!(sid = %self.session.sid, %error, "undecodable Socket.IO packet");
        CloseReason::from(error)
    }

    /// Counts a refused payload and says how the session ends for it: a
    /// document nested too deep or one that is not JSON is a protocol error.
    fn refuse_json(&self, error: JsonError) -> CloseReason {
        let metrics = &self.server.metrics;
        match error {
            JsonError::TooDeep(_) => metrics.refuse(Limit::JsonDepth),
            JsonError::InvalidUnicode => metrics.refuse(Limit::InvalidUnicode),
            JsonError::DuplicateKey => metrics.refuse(Limit::DuplicateKey),
            JsonError::Syntax => {}
        }
        debug!(sid = %self.session.sid, %error, "refused JSON payload");
        CloseReason::ProtocolError
    }

    fn event(&mut self, index: usize, packet: &Packet<'_>, attachments: &[Bytes]) -> Result<(), CloseReason> {
        let socket = Arc::clone(self.sockets.get(index).ok_or(CloseReason::InternalError)?);
        with_parsed(packet.payload, self.server.limits.max_json_depth, |value| {
            let value = match value {
                Ok(value) => value,
                Err(error @ (JsonError::InvalidUnicode | JsonError::DuplicateKey)) => {
                    self.refuse_json(error);
                    socket.namespace().handler().on_refused_event(&socket, packet.ack_id, error);
                    return Ok(());
                }
                Err(error) => return Err(self.refuse_json(error)),
            };
            let (name, args) = split_event(value).map_err(|error| self.refuse_packet(&error))?;
            if packet.kind == PacketType::BinaryEvent {
                check_placeholders(value, attachments.len()).map_err(|error| self.refuse_packet(&error))?;
            }
            let event = Event { name, args, ack_id: packet.ack_id, attachments };
            socket.namespace().handler().on_event(&socket, event);
            Ok(())
        })
    }

    fn remove_socket(&mut self, index: usize, reason: DisconnectReason) {
        let socket = self.sockets.swap_remove(index);
        let namespace = socket.namespace();
        namespace.remove(socket.sid());
        // A lost connection's session waits for its client, still in its rooms.
        let suspended = match reason {
            DisconnectReason::SessionClosed(reason) => namespace.suspend(&socket, reason),
            DisconnectReason::ClientDisconnect => false,
        };
        if !suspended {
            namespace.handler().on_disconnect(&socket, reason);
            socket.leave_all_silently();
        }
        if self.sockets.is_empty() {
            self.lonely_since = Instant::now();
        }
    }

    fn finish_binary(&mut self) -> Result<(), CloseReason> {
        let Some(pending) = self.pending.take_if(|pending| pending.attachments.len() == pending.expected)
        else {
            return Ok(());
        };
        let packet = socketio::decode(&pending.packet_text).map_err(|error| self.refuse_packet(&error))?;
        self.handle(&packet, &pending.attachments)
    }
}

/// The `pid` and `offset` a recovering client adds to its CONNECT payload:
/// a `pid` as this broker writes them (anything else is no recovery), and
/// the offset as the client holds it (a string).
fn recovery_fields(auth: &BorrowedValue<'_>) -> Option<(Pid, Option<String>)> {
    use simd_json::prelude::*;
    let pid = auth.get("pid").and_then(ValueAsScalar::as_str).and_then(Pid::parse)?;
    let offset = auth.get("offset").and_then(ValueAsScalar::as_str).map(str::to_owned);
    Some((pid, offset))
}

impl SessionHandler for Connection {
    fn on_text(&mut self, text: &str) -> Result<(), CloseReason> {
        if self.pending.is_some() {
            // Attachments must follow their packet before anything else.
            return Err(CloseReason::ProtocolError);
        }
        let packet = socketio::decode(text).map_err(|error| self.refuse_packet(&error))?;
        if packet.kind.is_binary() {
            // Attachments are buffered only for a namespace this session has
            // joined (so never before authentication), and only so many.
            if packet.attachments > self.server.limits.max_attachments
                || self.socket_index(packet.namespace).is_none()
            {
                self.server.metrics.refuse(Limit::Attachments);
                debug!(sid = %self.session.sid, attachments = packet.attachments, "refused binary packet");
                return Err(CloseReason::ProtocolError);
            }
            self.pending = Some(Box::new(PendingBinary {
                packet_text: text.to_owned(),
                expected: packet.attachments,
                attachments: Vec::with_capacity(packet.attachments),
                buffered_bytes: 0,
            }));
            return self.finish_binary();
        }
        self.handle(&packet, &[])
    }

    fn on_binary(&mut self, data: Bytes) -> Result<(), CloseReason> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(CloseReason::ProtocolError);
        };
        pending.buffered_bytes = pending.buffered_bytes.saturating_add(data.len());
        if pending.buffered_bytes > self.server.limits.max_attachment_bytes {
            self.server.metrics.refuse(Limit::Attachments);
            return Err(CloseReason::MessageTooBig);
        }
        pending.attachments.push(data);
        self.finish_binary()
    }

    fn poll_work(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), CloseReason>> {
        let Some(lookup) = self.lookup.as_mut() else { return std::task::Poll::Pending };
        let std::task::Poll::Ready(outcome) = lookup.answer.as_mut().poll(cx) else {
            return std::task::Poll::Pending;
        };
        if let Some(lookup) = self.lookup.take() {
            self.finish_lookup(*lookup, outcome);
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn deadline(&self) -> Option<Instant> {
        if self.sockets.is_empty() {
            return self.lonely_since.checked_add(self.server.limits.connect_timeout);
        }
        self.sockets.iter().filter_map(|socket| socket.expires_at()).min()
    }

    fn on_deadline(&mut self) -> Result<(), CloseReason> {
        if self.sockets.is_empty() {
            self.server.metrics.refuse(Limit::ConnectTimeout);
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
        while let Some(last) = self.sockets.len().checked_sub(1) {
            self.remove_socket(last, DisconnectReason::SessionClosed(reason));
        }
    }
}
