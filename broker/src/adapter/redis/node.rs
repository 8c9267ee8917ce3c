//! [`RedisCluster`]: this broker as one node of a socket.io Redis cluster,
//! and [`RedisNamespace`], the [`Cluster`] half of one namespace's adapter.
//!
//! Outbound, a namespace publishes each broadcast once, as the Node adapter
//! would, and delivers it to its own members when it comes back from Redis:
//! every node of ours then sees a room's broadcasts in the one order Redis
//! relayed them (Node servers deliver their own broadcasts at once, so they
//! may see their own earlier). While the bus is down, or when a publish
//! fails, the broadcast is delivered locally at once instead.
//!
//! Inbound, broadcasts from other nodes (Node servers, the emitter, our own
//! brokers) go to this node's selected sockets, encoded once as a frame; the
//! numbered requests are answered as the Node adapter answers them,
//! broadcasts with acks included (the client count, then each client's ack).
//! This broker has no server-side listeners: a server-side emit is counted
//! and, when it asks for answers, answered with error 501 (so the asking
//! server need not time out). Broadcasts with binary data are counted and
//! not delivered: the chat carries JSON only.
//!
//! Beside the Node adapter's protocol, our brokers tell each other their
//! members and a heartbeat on a channel of their own ([`presence`]); a
//! broker silent for the heartbeat timeout is gone, and each survivor hands
//! its members' departures to its own sockets ([`LocalSockets::members_lost`]).
//!
//! Every message from Redis is bounded in size before it is decoded.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::BufMut;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::bus::{Bus, BusError, BusMetrics, Receiver, Subscriptions};
use super::presence::{self, Presence};
use super::request::{self, RequestBody, Target, decode_request, decode_response};
use super::session::{LOOKUP_TIMEOUT, StoredSession};
use super::wire::{self, BroadcastOptions, Channels, decode_broadcast, encode_broadcast_raw};
use crate::adapter::{BoxFuture, Cluster, LocalSockets, Selection};
use crate::ids::{Pid, Sid};
use crate::protocol::Frame;
use crate::protocol::socketio::{PacketType, write_header};

/// How long a count of a room's members waits for the other nodes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a client's ack of another node's broadcast, whatever
/// timeout that node asked for.
pub const MAX_ACK_WAIT: Duration = Duration::from_secs(60);

/// This broker's node in a Redis cluster: one uid, one bus, one
/// [`RedisNamespace`] per namespace.
#[derive(Debug)]
pub struct RedisCluster {
    bus: Bus,
    namespaces: HashMap<String, Arc<RedisNamespace>>,
}

/// How a broker takes part in a Redis cluster.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The channel prefix (the Node adapter's `key`).
    pub key: String,
    /// Messages larger than this are neither published nor accepted.
    pub max_message_bytes: usize,
    /// How often this broker says it is alive to the others.
    pub heartbeat_interval: Duration,
    /// How long another broker may stay silent before its members count as gone.
    pub heartbeat_timeout: Duration,
}

impl RedisCluster {
    /// Connects to Redis at `url` for `namespaces` (or keeps trying, if
    /// Redis is down now), and starts the heartbeat on `tracker` until
    /// `shutdown`.
    ///
    /// # Errors
    /// [`BusError`] when the URL is invalid.
    pub async fn connect(
        url: &str,
        options: &NodeOptions,
        namespaces: &[String],
        tracker: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Self, BusError> {
        let uid: Arc<str> = Arc::from(wire::random_uid());
        let by_name: HashMap<String, Arc<RedisNamespace>> = namespaces
            .iter()
            .map(|name| {
                let namespace = RedisNamespace {
                    uid: Arc::clone(&uid),
                    name: name.clone(),
                    channels: Channels::new(&options.key, name),
                    bus: OnceLock::new(),
                    sockets: OnceLock::new(),
                    pending: Arc::default(),
                    presence: Presence::new(&uid, options.heartbeat_timeout),
                    fallback_ids: Arc::new(AtomicU64::new(micros_now())),
                    warned_binary: AtomicBool::default(),
                    warned_server_side_emit: AtomicBool::default(),
                    max_message_bytes: options.max_message_bytes,
                };
                (name.clone(), Arc::new(namespace))
            })
            .collect();
        let mut subscriptions = Subscriptions::default();
        for namespace in by_name.values() {
            let channels = &namespace.channels;
            subscriptions.patterns.push(channels.broadcast_pattern());
            subscriptions.channels.push(channels.request().to_owned());
            subscriptions.channels.push(channels.response().to_owned());
            subscriptions.channels.push(channels.response_for(&uid));
            subscriptions.channels.push(channels.presence().to_owned());
        }
        let all: Vec<Arc<RedisNamespace>> = by_name.values().cloned().collect();
        let router = Arc::new(Router { namespaces: all.clone() });
        let bus = Bus::connect(url, subscriptions, router, tracker, shutdown.clone()).await?;
        for namespace in &all {
            let _ = namespace.bus.set(bus.clone());
        }
        tracker.spawn(heartbeat(all, options.heartbeat_interval, shutdown));
        Ok(Self { bus, namespaces: by_name })
    }

    /// The [`Cluster`] half of `namespace`'s adapter.
    #[must_use]
    pub fn namespace(&self, namespace: &str) -> Option<Arc<RedisNamespace>> {
        self.namespaces.get(namespace).cloned()
    }

    /// Whether the bus is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// The bus's counters.
    #[must_use]
    pub fn metrics(&self) -> &Arc<BusMetrics> {
        self.bus.metrics()
    }
}

/// Hands each message to the namespace whose channel it came on.
struct Router {
    namespaces: Vec<Arc<RedisNamespace>>,
}

impl Receiver for Router {
    fn on_connected(&self) {
        for namespace in &self.namespaces {
            namespace.announce(true);
        }
    }

    fn receive(&self, channel: &str, payload: &[u8]) {
        for namespace in &self.namespaces {
            if namespace.receive(channel, payload) {
                return;
            }
        }
        debug!(channel, "message on a channel of no namespace here");
    }

    fn on_disconnected(&self) {
        for namespace in &self.namespaces {
            if let Some(sockets) = namespace.sockets() {
                sockets.frames_lost();
            }
        }
    }

    fn receive_unsent(&self, channel: &str, payload: &[u8]) {
        for namespace in &self.namespaces {
            if namespace.channels.broadcast_target(channel).is_some() {
                if let Some(sockets) = namespace.sockets() {
                    sockets.frames_lost();
                }
                namespace.on_broadcast(payload);
                return;
            }
        }
    }

    fn receive_unordered(&self, channel: &str, parts: &[bytes::Bytes]) -> String {
        let namespace =
            self.namespaces.iter().find(|namespace| namespace.channels.broadcast_target(channel).is_some());
        match namespace {
            Some(namespace) => namespace.deliver_unordered(parts),
            None => String::new(),
        }
    }
}

/// Microseconds since the Unix epoch.
fn micros_now() -> u64 {
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    u64::try_from(micros).unwrap_or(0)
}

/// A count of a room's members on the other nodes, under way.
#[derive(Debug)]
struct PendingCount {
    expected: usize,
    answered: usize,
    members: usize,
    done: Option<oneshot::Sender<usize>>,
}

/// One namespace's share of the cluster.
pub struct RedisNamespace {
    uid: Arc<str>,
    name: String,
    channels: Channels,
    bus: OnceLock<Bus>,
    sockets: OnceLock<Weak<dyn LocalSockets>>,
    pending: Arc<Mutex<HashMap<String, PendingCount>>>,
    presence: Presence,
    /// The next id of a message Redis could not order (an outage): at
    /// least one above every id Redis gave this node.
    fallback_ids: Arc<AtomicU64>,
    warned_binary: AtomicBool,
    warned_server_side_emit: AtomicBool,
    max_message_bytes: usize,
}

/// A broadcast of ours, encoded for the bus.
enum Outbound {
    /// Within the size limit.
    Fits(Vec<u8>),
    /// Over it: for this node's members only.
    TooLarge(Vec<u8>),
    /// Not encodable (never, for what the broker emits).
    Unencodable,
}

/// What other nodes may send that this broker does not do.
#[derive(Debug, Clone, Copy)]
enum Unsupported {
    /// A broadcast carrying binary data.
    Binary,
    /// A server-side emit (this broker has no server-side listeners).
    ServerSideEmit,
}

/// What this broker answers a server-side emit that asks for answers: it
/// has no listeners, but says so rather than leaving the asking server to
/// time out.
fn server_side_emit_answer() -> serde_json::Value {
    serde_json::json!({ "error": { "code": 501, "message": "server-side events are not handled by this broker" } })
}

impl std::fmt::Debug for RedisNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNamespace")
            .field("uid", &self.uid)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisNamespace {
    fn bus(&self) -> Option<&Bus> {
        self.bus.get()
    }

    fn sockets(&self) -> Option<Arc<dyn LocalSockets>> {
        self.sockets.get().and_then(Weak::upgrade)
    }

    /// Counts something another node sent that this broker does not do, and
    /// says so in the log: once per kind at `warn`, then at `debug`.
    fn unsupported(&self, kind: Unsupported, what: &str) {
        let (counter, warned, message) = match kind {
            Unsupported::Binary => (
                self.bus().map(|bus| &bus.metrics().binary_refused),
                &self.warned_binary,
                "a broadcast with binary data from another node is not delivered (this broker carries JSON only)",
            ),
            Unsupported::ServerSideEmit => (
                self.bus().map(|bus| &bus.metrics().server_side_emits),
                &self.warned_server_side_emit,
                "a server-side emit from another node: no server-side listeners here (answered with error 501 when it asks for answers)",
            ),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Relaxed);
        }
        if warned.swap(true, Relaxed) {
            debug!(namespace = %self.name, what, "{message}");
        } else {
            warn!(namespace = %self.name, what, "{message}; further ones are logged at debug level");
        }
    }

    fn refuse(&self, what: &str, error: &dyn std::fmt::Display) {
        if let Some(bus) = self.bus() {
            bus.metrics().refused.fetch_add(1, Relaxed);
        }
        debug!(namespace = %self.name, what, %error, "refused a message from Redis");
    }

    /// Handles a message if it came on one of this namespace's channels.
    fn receive(&self, channel: &str, payload: &[u8]) -> bool {
        if self.channels.broadcast_target(channel).is_some() {
            self.on_broadcast(payload);
        } else if channel == self.channels.request() {
            self.on_request(payload);
        } else if channel.starts_with(self.channels.response()) {
            self.on_response(payload);
        } else if channel == self.channels.presence() {
            self.on_presence(payload);
        } else {
            return false;
        }
        true
    }

    /// Delivers a broadcast to this node's selected sockets: another node's,
    /// or our own coming back from Redis (or never sent: its pipeline failed,
    /// so it goes to our members only).
    fn on_broadcast(&self, payload: &[u8]) {
        if payload.len() > self.max_message_bytes {
            return self.refuse("broadcast", &"larger than the limit");
        }
        self.deliver_broadcast(payload);
    }

    /// A message whose id Redis was to give could not be published: it gets
    /// an id of this node's (`<counter>-<uid>`) and goes to our members only,
    /// with no recovery offset (the id is not a number).
    fn deliver_unordered(&self, parts: &[bytes::Bytes]) -> String {
        let id = fallback_id(&self.fallback_ids, &self.uid);
        if let Some(sockets) = self.sockets() {
            sockets.frames_lost();
        }
        self.deliver_broadcast(&wire::join_with_str(parts, &id));
        id
    }

    /// Delivers a broadcast whatever its size (ours: checked before publishing).
    fn deliver_broadcast(&self, payload: &[u8]) {
        let broadcast = match decode_broadcast(payload) {
            Ok(broadcast) => broadcast,
            Err(wire::WireError::NotJson("binary data")) => {
                return self.unsupported(Unsupported::Binary, "broadcast");
            }
            Err(error) => return self.refuse("broadcast", &error),
        };
        if broadcast.nsp != self.name || broadcast.options.flags.local == Some(true) {
            return;
        }
        if broadcast.kind != wire::EVENT {
            return self.refuse("broadcast", &"not an EVENT packet");
        }
        let Some(sockets) = self.sockets() else { return };
        let Some(frame) = event_frame(&self.name, &broadcast.data) else {
            return self.refuse("broadcast", &"data not writable as JSON");
        };
        let selection = Selection { rooms: &broadcast.options.rooms, except: &broadcast.options.except };
        sockets.deliver(selection, &frame, recovery_offset(&broadcast));
    }

    fn on_request(&self, payload: &[u8]) {
        if payload.len() > self.max_message_bytes {
            return self.refuse("request", &"larger than the limit");
        }
        let request = match decode_request(payload) {
            Ok(request) => request,
            Err(error) => return self.refuse("request", &error),
        };
        if request.uid.as_deref() == Some(&*self.uid) {
            return;
        }
        let (Some(sockets), Some(bus)) = (self.sockets(), self.bus()) else { return };
        let respond = |body: Vec<u8>| {
            bus.publish(self.channels.response().to_owned(), body);
        };
        let no_rooms: &[String] = &[];
        match request.body {
            RequestBody::Sockets { rooms } => {
                if let Some(id) = &request.request_id {
                    let ids = sockets.socket_ids(Selection { rooms: &rooms, except: no_rooms });
                    respond(request::sockets_response(id, &ids));
                }
            }
            RequestBody::AllRooms => {
                if let Some(id) = &request.request_id {
                    let rooms = sockets.room_names();
                    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
                    respond(request::all_rooms_response(id, &rooms));
                }
            }
            RequestBody::Fetch { selector } => {
                if let Some(id) = &request.request_id {
                    let selection = Selection { rooms: &selector.rooms, except: &selector.except };
                    respond(request::sockets_response(id, &sockets.fetch(selection)));
                }
            }
            RequestBody::Join { target, rooms } => {
                if for_target(&target, |selection| sockets.join(selection, &rooms), &*sockets)
                    && let Some(id) = request.request_id.as_deref()
                {
                    respond(request::done_response(id));
                }
            }
            RequestBody::Leave { target, rooms } => {
                if for_target(&target, |selection| sockets.leave(selection, &rooms), &*sockets)
                    && let Some(id) = request.request_id.as_deref()
                {
                    respond(request::done_response(id));
                }
            }
            RequestBody::Disconnect { target, close } => {
                if for_target(&target, |selection| sockets.disconnect(selection, close), &*sockets)
                    && let Some(id) = request.request_id.as_deref()
                {
                    respond(request::done_response(id));
                }
            }
            RequestBody::Broadcast { data, options } => {
                let Some(id) = request.request_id else { return };
                let selection = Selection { rooms: &options.rooms, except: &options.except };
                let waiters = sockets.deliver_with_acks(selection, &data);
                respond(request::client_count_response(&id, waiters.len() as u64));
                let timeout =
                    options.flags.timeout.map_or(REQUEST_TIMEOUT, Duration::from_millis).min(MAX_ACK_WAIT);
                for waiter in waiters {
                    let (bus, channel, id) = (bus.clone(), self.channels.response().to_owned(), id.clone());
                    tokio::spawn(async move {
                        if let Ok(Ok(answer)) = tokio::time::timeout(timeout, waiter).await
                            && let Ok(response) = request::broadcast_ack_response(&id, &answer)
                        {
                            bus.publish(channel, response);
                        }
                    });
                }
            }
            RequestBody::ServerSideEmit { data } => {
                let event = data.first().and_then(serde_json::Value::as_str).unwrap_or_default();
                self.unsupported(Unsupported::ServerSideEmit, event);
                if let Some(id) = &request.request_id
                    && let Ok(answer) = request::server_side_emit_response(id, &server_side_emit_answer())
                {
                    respond(answer);
                }
            }
        }
    }

    fn on_presence(&self, payload: &[u8]) {
        if payload.len() > self.max_message_bytes {
            return self.refuse("presence", &"larger than the limit");
        }
        match serde_json::from_slice::<presence::Message>(payload) {
            Ok(message) if message.kind == presence::Kind::Moved => {
                if message.uid != *self.uid
                    && let Some(sockets) = self.sockets()
                {
                    for (pid, _, _) in &message.members {
                        sockets.session_moved(pid);
                    }
                }
            }
            Ok(message) => {
                let received = self.presence.receive(message, Instant::now());
                if received.ask {
                    self.announce(false);
                }
                if let Some(sockets) = self.sockets() {
                    for (room, presences) in &received.left {
                        sockets.members_lost(room, presences);
                    }
                    for (room, presences) in &received.joined {
                        sockets.members_found(room, presences);
                    }
                }
            }
            Err(error) => self.refuse("presence", &error),
        }
    }

    /// Publishes this node's members of the namespace to the other brokers
    /// (`ask`: and asks for theirs). A no-op until the bus and the sockets
    /// are attached.
    fn announce(&self, ask: bool) {
        let (Some(bus), Some(sockets)) = (self.bus().filter(|bus| bus.is_connected()), self.sockets()) else {
            return;
        };
        for message in presence::Message::state(&self.uid, sockets.presences(), ask) {
            bus.publish(self.channels.presence().to_owned(), message.encode());
        }
    }

    /// The broadcast message of `packet` to `rooms` but `except`, checked
    /// against the size limit (a refusal is counted and logged).
    fn outbound(&self, rooms: &[&str], except: Option<Sid>, packet: &[u8], recoverable: bool) -> Outbound {
        let options = BroadcastOptions {
            rooms: rooms.iter().map(|&room| room.to_owned()).collect(),
            except: except.map(|sid| sid.to_string()).into_iter().collect(),
            flags: wire::Flags { offset: recoverable.then_some(true), ..wire::Flags::default() },
        };
        let message = match encode_broadcast_raw(&self.uid, &self.name, packet, &options) {
            Ok(message) => message,
            Err(error) => {
                warn!(%error, "broadcast not encodable, delivered on this node only");
                return Outbound::Unencodable;
            }
        };
        if message.len() <= self.max_message_bytes {
            return Outbound::Fits(message);
        }
        if let Some(bus) = self.bus() {
            bus.metrics().refused.fetch_add(1, Relaxed);
        }
        warn!(
            bytes = message.len(),
            limit = self.max_message_bytes,
            "broadcast too large for the bus: delivered on this node only"
        );
        Outbound::TooLarge(message)
    }

    /// One heartbeat: says this node is alive, and takes the members of the
    /// brokers silent for too long out of their rooms here.
    fn beat(&self) {
        let Some(bus) = self.bus() else { return };
        let connected = bus.is_connected();
        if connected {
            let message = presence::Message::new(presence::Kind::Heartbeat, &self.uid, Vec::new());
            bus.publish(self.channels.presence().to_owned(), message.encode());
        }
        let gone = self.presence.sweep(Instant::now(), connected);
        if gone.is_empty() {
            return;
        }
        let sockets = self.sockets();
        for node in gone {
            let members: usize = node.rooms.values().map(Vec::len).sum();
            if members == 0 {
                // A broker shut down (its members left as it closed), or one with no members.
                debug!(namespace = %self.name, node = %node.uid, "a broker without members went silent");
                continue;
            }
            bus.metrics().nodes_lost.fetch_add(1, Relaxed);
            warn!(namespace = %self.name, node = %node.uid, members, "a broker went silent: its members left");
            if let Some(sockets) = &sockets {
                for (room, presences) in &node.rooms {
                    sockets.members_lost(room, presences);
                }
            }
        }
    }

    fn publish_presence(&self, kind: presence::Kind, sid: Sid, room: &str, presence: Option<&RawValue>) {
        let Some(bus) = self.bus().filter(|bus| bus.is_connected()) else { return };
        let entry = (sid.to_string(), room.to_owned(), presence.map(RawValue::to_owned));
        let message = presence::Message::new(kind, &self.uid, vec![entry]);
        bus.publish(self.channels.presence().to_owned(), message.encode());
    }

    fn on_response(&self, payload: &[u8]) {
        if payload.len() > self.max_message_bytes {
            return self.refuse("response", &"larger than the limit");
        }
        let response = match decode_response(payload) {
            Ok(response) => response,
            Err(error) => return self.refuse("response", &error),
        };
        let mut pending = self.pending.lock();
        let Some(count) = pending.get_mut(&response.request_id) else { return };
        count.answered += 1;
        count.members += response.sockets().map_or(0, <[serde_json::Value]>::len);
        if count.answered >= count.expected
            && let Some(count) = pending.remove(&response.request_id)
            && let Some(done) = count.done
        {
            let _ = done.send(count.members);
        }
    }
}

/// Applies `act` to a request's target: the selection it names, or the one
/// socket it names. Returns true when a per-socket request found its socket
/// here, and must be answered (selections are never answered).
fn for_target(target: &Target, act: impl FnOnce(Selection<'_>), sockets: &dyn LocalSockets) -> bool {
    match target {
        Target::Matching(selector) => {
            act(Selection { rooms: &selector.rooms, except: &selector.except });
            false
        }
        Target::Socket(sid) => {
            let rooms = [sid.clone()];
            let selection = Selection { rooms: &rooms, except: &[] };
            if sockets.socket_ids(selection).is_empty() {
                return false;
            }
            act(selection);
            true
        }
    }
}

/// The recovery offset a broadcast of ours carries as its last argument
/// (the id Redis gave it): `None` for any other broadcast, or one whose id
/// is not Redis's (a fallback id, not a number).
fn recovery_offset(broadcast: &wire::Broadcast) -> Option<u64> {
    if broadcast.options.flags.offset != Some(true) {
        return None;
    }
    let rmpv::Value::Array(items) = &broadcast.data else { return None };
    items.last()?.as_str()?.parse().ok()
}

/// `42<nsp>,<data as JSON>` as a frame, or `None` when the data cannot be
/// written as JSON.
fn event_frame(namespace: &str, data: &rmpv::Value) -> Option<Frame> {
    let json = serde_json::to_vec(&wire::AsJson(data)).ok()?;
    Some(Frame::build_text(|buf| {
        buf.put_u8(crate::protocol::engineio::MESSAGE);
        write_header(buf, PacketType::Event, namespace, None);
        buf.put_slice(&json);
    }))
}

impl Cluster for RedisNamespace {
    fn node_id(&self) -> &Arc<str> {
        &self.uid
    }

    fn publish(&self, rooms: &[&str], except: Option<Sid>, packet: &[u8]) -> bool {
        let Some(bus) = self.bus().filter(|bus| bus.is_connected()) else { return false };
        match self.outbound(rooms, except, packet, false) {
            Outbound::Fits(message) => bus.publish(self.channels.for_rooms(rooms), message),
            Outbound::TooLarge(_) | Outbound::Unencodable => false,
        }
    }

    fn remote_members(&self, room: &str) -> BoxFuture<usize> {
        // Cut off from Redis, no other node can answer.
        let Some(bus) = self.bus().filter(|bus| bus.is_connected()).cloned() else {
            return Box::pin(async { 0 });
        };
        let (uid, request_channel) = (Arc::clone(&self.uid), self.channels.request().to_owned());
        let room = room.to_owned();
        let pending = Arc::clone(&self.pending);
        Box::pin(async move {
            let servers =
                match tokio::time::timeout(REQUEST_TIMEOUT, bus.subscriber_count(&request_channel)).await {
                    Ok(Ok(servers)) => servers,
                    _ => return 0,
                };
            let expected = servers.saturating_sub(1);
            if expected == 0 {
                return 0;
            }
            let id = wire::random_request_id();
            let (done, answer) = oneshot::channel();
            pending
                .lock()
                .insert(id.clone(), PendingCount { expected, answered: 0, members: 0, done: Some(done) });
            bus.publish(request_channel, request::sockets(&uid, &id, &[&room]));
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(Ok(members)) => members,
                // Nodes that did not answer in time count as empty.
                _ => pending.lock().remove(&id).map_or(0, |count| count.members),
            }
        })
    }

    fn publish_ordered(
        &self,
        rooms: &[&str],
        except: Option<Sid>,
        packet: &[u8],
        placeholder: &str,
        recoverable: bool,
    ) -> Option<BoxFuture<String>> {
        let bus = self.bus().filter(|bus| bus.is_connected())?;
        let message = match self.outbound(rooms, except, packet, recoverable) {
            Outbound::Fits(message) => message,
            Outbound::TooLarge(message) => {
                let parts = wire::split_at_str(&message, placeholder)?;
                return Some(Box::pin(std::future::ready(self.deliver_unordered(&parts))));
            }
            Outbound::Unencodable => return None,
        };
        let parts = wire::split_at_str(&message, placeholder)?;
        let (done, given) = oneshot::channel();
        let counter: Arc<str> = Arc::from(self.channels.message_ids());
        if !bus.publish_ordered(self.channels.for_rooms(rooms), counter, parts.clone(), done) {
            let id = self.deliver_unordered(&parts);
            return Some(Box::pin(std::future::ready(id)));
        }
        let (fallback_ids, uid) = (Arc::clone(&self.fallback_ids), Arc::clone(&self.uid));
        Some(Box::pin(async move {
            match given.await {
                Ok(id) => {
                    if let Ok(number) = id.parse::<u64>() {
                        fallback_ids.fetch_max(number.saturating_add(1), Relaxed);
                    }
                    id
                }
                // The bus ended (shutdown) before the message left.
                Err(_) => fallback_id(&fallback_ids, &uid),
            }
        }))
    }

    fn store_session(&self, session: StoredSession, window: Duration) -> BoxFuture<bool> {
        let Some(bus) = self.bus().cloned() else { return Box::pin(std::future::ready(false)) };
        Box::pin(async move {
            match tokio::time::timeout(LOOKUP_TIMEOUT, bus.store_session(&session, window)).await {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    warn!(%error, "session not stored in Redis: it recovers on this broker only");
                    false
                }
                Err(_) => {
                    warn!("storing a session in Redis timed out: it recovers on this broker only");
                    false
                }
            }
        })
    }

    fn take_session(&self, pid: Pid) -> BoxFuture<Result<Option<StoredSession>, String>> {
        let Some(bus) = self.bus().cloned() else {
            return Box::pin(std::future::ready(Err("no bus".to_owned())));
        };
        Box::pin(async move {
            match tokio::time::timeout(LOOKUP_TIMEOUT, bus.take_session(pid)).await {
                Ok(Ok(session)) => Ok(session),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        })
    }

    fn discard_session(&self, pid: Pid) -> BoxFuture<bool> {
        let Some(bus) = self.bus().cloned() else { return Box::pin(std::future::ready(false)) };
        Box::pin(async move {
            matches!(tokio::time::timeout(LOOKUP_TIMEOUT, bus.discard_session(pid)).await, Ok(Ok(())))
        })
    }

    fn session_moved(&self, pid: Pid) {
        let Some(bus) = self.bus().filter(|bus| bus.is_connected()) else { return };
        let message = presence::Message::new(
            presence::Kind::Moved,
            &self.uid,
            vec![(pid.to_string(), String::new(), None)],
        );
        bus.publish(self.channels.presence().to_owned(), message.encode());
    }

    fn fallback_message_id(&self) -> String {
        fallback_id(&self.fallback_ids, &self.uid)
    }

    fn is_connected(&self) -> bool {
        self.bus().is_some_and(Bus::is_connected)
    }

    fn attach(&self, sockets: Weak<dyn LocalSockets>) {
        let _ = self.sockets.set(sockets);
        // The first announcement found no sockets yet.
        self.announce(true);
    }

    fn member_joined(&self, sid: Sid, room: &str, presence: &RawValue) {
        self.publish_presence(presence::Kind::Join, sid, room, Some(presence));
    }

    fn member_left(&self, sid: Sid, room: &str) {
        self.publish_presence(presence::Kind::Leave, sid, room, None);
    }
}

/// `<counter>-<uid>`: a message id of this node's own, for a message Redis
/// did not order.
fn fallback_id(counter: &AtomicU64, uid: &str) -> String {
    format!("{}-{uid}", counter.fetch_add(1, Relaxed))
}

/// Beats every `interval` for each namespace until `shutdown`.
async fn heartbeat(namespaces: Vec<Arc<RedisNamespace>>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for namespace in &namespaces {
            namespace.beat();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(json: &str, offset_flag: Option<bool>) -> wire::Broadcast {
        let packet = wire::json_to_msgpack(json.as_bytes()).expect("JSON");
        let options = BroadcastOptions {
            flags: wire::Flags { offset: offset_flag, ..wire::Flags::default() },
            ..Default::default()
        };
        let message = encode_broadcast_raw("AbC12x", "/chat", &packet, &options).expect("encodable");
        decode_broadcast(&message).expect("a broadcast")
    }

    #[test]
    fn only_a_flagged_broadcast_with_a_numeric_last_argument_has_an_offset() {
        assert_eq!(recovery_offset(&broadcast(r#"["message",{"id":"17"},"17"]"#, Some(true))), Some(17));
        assert_eq!(
            recovery_offset(&broadcast(r#"["message",{"id":"17"},"17"]"#, None)),
            None,
            "a Node server's broadcast, whatever its last argument"
        );
        assert_eq!(
            recovery_offset(&broadcast(r#"["message",{},"17-AbC12x"]"#, Some(true))),
            None,
            "a fallback id from an outage is no offset"
        );
        assert_eq!(recovery_offset(&broadcast(r#"["message",{}]"#, Some(true))), None);
    }
}
