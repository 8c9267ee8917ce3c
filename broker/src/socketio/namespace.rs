//! [`Namespace`]: one isolated Socket.IO namespace — its handler, its rooms
//! and the registry of its connected sockets.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::RandomState;
use parking_lot::Mutex;
use serde::Serialize;

use super::{Handler, Socket, event_frame};
use crate::ids::Sid;
use crate::metrics::Metrics;
use crate::rooms::RoomTable;

/// Stripes of the socket registry; connects and disconnects on different
/// stripes never contend.
const REGISTRY_STRIPES: usize = 64;

/// One stripe of the socket registry.
type RegistryStripe = Mutex<HashMap<Sid, Arc<Socket>, RandomState>>;

/// A namespace: handler, rooms and connected sockets.
pub struct Namespace {
    name: Box<str>,
    handler: Arc<dyn Handler>,
    rooms: RoomTable,
    sockets: Box<[RegistryStripe]>,
    hasher: RandomState,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Namespace {
    pub(super) fn new(name: &str, handler: Arc<dyn Handler>, metrics: Arc<Metrics>) -> Self {
        Self {
            name: Box::from(name),
            handler,
            rooms: RoomTable::new(),
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

    /// The namespace's rooms.
    #[must_use]
    pub fn rooms(&self) -> &RoomTable {
        &self.rooms
    }

    /// The server's counters.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(super) fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
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
        self.rooms.broadcast(room, except, |_| event_frame(&self.name, None, event, data))
    }

    /// Emits `event` to every socket of the namespace, encoding the frame
    /// once. Returns the deliveries queued.
    pub fn broadcast<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> usize {
        let frame = event_frame(&self.name, None, event, data);
        self.sockets
            .iter()
            .map(|stripe| stripe.lock().values().filter(|socket| socket.send_frame(&frame).is_ok()).count())
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

    pub(super) fn remove(&self, sid: Sid) {
        self.stripe(sid).lock().remove(&sid);
    }
}
