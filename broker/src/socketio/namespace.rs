//! [`Namespace`]: one isolated Socket.IO namespace — its handler, its
//! [`Adapter`] (rooms, here and on other nodes) and the registry of its
//! connected sockets.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::RandomState;
use parking_lot::Mutex;
use serde::Serialize;

use super::recovery::Sessions;
use super::{Adapter, Handler, Socket, event_frame};
use crate::adapter::{FetchedSocket, LocalSockets, Selection};
use crate::ids::{RoomId, Sid};
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// Stripes of the socket registry; connects and disconnects on different
/// stripes never contend.
const REGISTRY_STRIPES: usize = 64;

/// One stripe of the socket registry.
type RegistryStripe = Mutex<HashMap<Sid, Arc<Socket>, RandomState>>;

/// A namespace: handler, adapter and connected sockets.
pub struct Namespace {
    name: Box<str>,
    handler: Arc<dyn Handler>,
    adapter: Adapter,
    sockets: Box<[RegistryStripe]>,
    hasher: RandomState,
    metrics: Arc<Metrics>,
    /// Sessions waiting for their clients, when recovery is on.
    sessions: Option<Sessions>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Namespace {
    pub(super) fn new(
        name: &str,
        handler: Arc<dyn Handler>,
        adapter: Adapter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sessions = adapter.ring().map(|ring| Sessions::new(ring.window()));
        Self {
            name: Box::from(name),
            handler,
            sessions,
            adapter,
            sockets: (0..REGISTRY_STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            metrics,
        }
    }

    /// The namespace's name, e.g. `/api/v1/chat`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's adapter: every room emit, join and leave goes through it.
    #[must_use]
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// The server's counters.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(super) fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    pub(super) fn sessions(&self) -> Option<&Sessions> {
        self.sessions.as_ref()
    }

    /// Sessions suspended and waiting for their clients to recover them.
    #[must_use]
    pub fn suspended_count(&self) -> usize {
        self.sessions.as_ref().map_or(0, Sessions::len)
    }

    /// Emits `event` to every member of `room` but `except`, encoding the
    /// frame once. Returns the deliveries queued, `None` for no such room.
    pub fn to_room<T: Serialize + ?Sized>(
        &self,
        room: &str,
        except: Option<Sid>,
        event: &str,
        data: &T,
    ) -> Option<usize> {
        self.adapter.broadcast(room, except, event, |_| data)
    }

    /// Emits `event` to every socket of the namespace (on every node),
    /// encoding the frame once. Returns the deliveries queued here now (0
    /// when they wait for the bus).
    pub fn broadcast<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> usize {
        if self.adapter.publish_to_all(event, data) {
            return 0;
        }
        self.deliver_to_all(&event_frame(&self.name, None, event, data))
    }

    fn deliver_to_all(&self, frame: &Frame) -> usize {
        self.sockets
            .iter()
            .map(|stripe| stripe.lock().values().filter(|socket| socket.send_frame(frame).is_ok()).count())
            .sum()
    }

    /// A snapshot of the connected sockets.
    #[must_use]
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.sockets.iter().flat_map(|stripe| stripe.lock().values().cloned().collect::<Vec<_>>()).collect()
    }

    /// The number of connected sockets.
    #[must_use]
    pub fn socket_count(&self) -> usize {
        self.sockets.iter().map(|stripe| stripe.lock().len()).sum()
    }

    #[allow(clippy::indexing_slicing, reason = "modulo REGISTRY_STRIPES, the registry's length")]
    fn stripe(&self, sid: Sid) -> &RegistryStripe {
        &self.sockets[(self.hasher.hash_one(sid) as usize) % REGISTRY_STRIPES]
    }

    pub(super) fn insert(&self, socket: Arc<Socket>) {
        self.stripe(socket.sid()).lock().insert(socket.sid(), socket);
    }

    /// Whether `sid` is connected here.
    pub(super) fn has_socket(&self, sid: Sid) -> bool {
        self.stripe(sid).lock().contains_key(&sid)
    }

    pub(super) fn remove(&self, sid: Sid) {
        self.stripe(sid).lock().remove(&sid);
    }
}

/// Whether `socket` is selected: in one of the rooms (or any socket when
/// none are given; its id counts as a room) and in none of the excepted.
fn is_selected(socket: &Socket, selection: Selection<'_>) -> bool {
    let sid = socket.sid().to_string();
    let is_in = |room: &String| *room == sid || socket.is_in(room);
    (selection.rooms.is_empty() || selection.rooms.iter().any(is_in)) && !selection.except.iter().any(is_in)
}

impl Namespace {
    fn selected(&self, selection: Selection<'_>) -> Vec<Arc<Socket>> {
        // A single socket id: a registry lookup, not a walk.
        if let ([room], []) = (selection.rooms, selection.except)
            && let Some(sid) = Sid::parse(room)
        {
            return self.stripe(sid).lock().get(&sid).cloned().into_iter().collect();
        }
        self.sockets().into_iter().filter(|socket| is_selected(socket, selection)).collect()
    }
}

impl LocalSockets for Namespace {
    fn deliver(&self, selection: Selection<'_>, frame: &Frame, offset: Option<u64>) -> usize {
        // Excepted entries: our socket ids, and rooms with members here. Any
        // other (another server's socket id, say) excludes no one here.
        let mut except_sids = Vec::new();
        let mut except_rooms = false;
        for entry in selection.except {
            except_sids.extend(Sid::parse(entry));
            except_rooms |= self.adapter.local_members(entry) > 0;
        }
        // A room that is a socket id (socket.io's own room of each socket) is not in the table.
        let is_table_room = |room: &str| Sid::parse(room).is_none() || self.adapter.local_members(room) > 0;
        let delivered = match (selection.rooms, except_sids.as_slice(), except_rooms, offset) {
            // A recoverable room frame: recorded, members here or not.
            ([room], [] | [_], false, Some(offset)) if Sid::parse(room).is_none() => {
                self.adapter.deliver_recorded(room, except_sids.first().copied(), frame, offset)
            }
            // The common cases go through the room table: one room, at most one socket left out.
            ([room], [] | [_], false, _) if is_table_room(room) => self
                .adapter
                .local_half()
                .broadcast(room, except_sids.first().copied(), |_| frame.clone().into())
                .unwrap_or(0),
            ([], [], false, _) => self.deliver_to_all(frame),
            _ => self.selected(selection).iter().filter(|socket| socket.send_frame(frame).is_ok()).count(),
        };
        // With a cluster, emits reach members here only through this path.
        Metrics::add(&self.metrics.deliveries, delivered as u64);
        delivered
    }

    fn frames_lost(&self) {
        if let Some(ring) = self.adapter.ring() {
            ring.frames_lost();
        }
    }

    fn session_moved(&self, pid: &str) {
        if let Some(pid) = crate::ids::Pid::parse(pid) {
            self.end_moved(pid);
        }
    }

    fn deliver_with_acks(
        &self,
        selection: Selection<'_>,
        data: &serde_json::Value,
    ) -> Vec<tokio::sync::oneshot::Receiver<serde_json::Value>> {
        self.selected(selection).iter().filter_map(|socket| socket.emit_packet_with_ack(data).ok()).collect()
    }

    fn socket_ids(&self, selection: Selection<'_>) -> Vec<String> {
        self.selected(selection).iter().map(|socket| socket.sid().to_string()).collect()
    }

    fn room_names(&self) -> Vec<String> {
        let mut rooms = std::collections::BTreeSet::new();
        for socket in self.sockets() {
            rooms.insert(socket.sid().to_string());
            rooms.extend(socket.rooms().iter().map(|room| room.as_str().to_owned()));
        }
        rooms.into_iter().collect()
    }

    fn fetch(&self, selection: Selection<'_>) -> Vec<FetchedSocket> {
        self.selected(selection).iter().map(|socket| socket.describe()).collect()
    }

    fn join(&self, selection: Selection<'_>, rooms: &[String]) {
        for socket in self.selected(selection) {
            for room in rooms {
                socket.join_silently(&RoomId::from(room.as_str()));
            }
        }
    }

    fn leave(&self, selection: Selection<'_>, rooms: &[String]) {
        for socket in self.selected(selection) {
            for room in rooms {
                socket.leave_silently(room);
            }
        }
    }

    fn disconnect(&self, selection: Selection<'_>, close: bool) {
        for socket in self.selected(selection) {
            // A namespace-only disconnect (close false) is not offered by this
            // layer: the session closes either way.
            let _ = close;
            socket.disconnect(crate::engineio::CloseReason::ServerDisconnect);
        }
    }

    fn presences(&self) -> Vec<crate::adapter::redis::presence::Entry> {
        let mut entries = Vec::new();
        for socket in self.sockets() {
            let Some(presence) = self.handler.presence(&socket) else { continue };
            let sid = socket.sid().to_string();
            for room in socket.rooms() {
                entries.push((sid.clone(), room.as_str().to_owned(), Some(presence.clone())));
            }
        }
        entries
    }

    fn members_lost(&self, room: &str, presences: &[Box<serde_json::value::RawValue>]) {
        self.handler.on_members_lost(self, room, presences);
    }

    fn members_found(&self, room: &str, presences: &[Box<serde_json::value::RawValue>]) {
        self.handler.on_members_found(self, room, presences);
    }
}
