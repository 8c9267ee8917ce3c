//! Adapters: how a namespace's emits, joins and leaves reach the sockets of
//! every node. The seam itself is [`crate::socketio::Adapter`]; this module
//! holds its halves:
//!
//! - [`local`]: this node's members (the sharded room table) and message ids;
//!   all a single broker needs.
//! - [`redis`]: the other nodes, through Redis, speaking the wire format of
//!   socket.io's own Redis adapter. It implements [`Cluster`], and reaches
//!   this node's sockets through [`LocalSockets`], which the Socket.IO layer
//!   implements, so adapters never depend on it.
//!
//! - [`recovery`]: the replay store of connection state recovery, which the
//!   seam records recoverable frames in.
//!
//! Adapters know frames and outboxes, never chat.

pub mod local;
pub mod recovery;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

pub use local::LocalAdapter;

use serde_json::value::RawValue;

use std::time::Duration;

use crate::ids::{Pid, Sid};
use crate::protocol::Frame;
use redis::session::StoredSession;

/// A boxed future, for the trait objects below.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The other nodes of a namespace, as its [`crate::socketio::Adapter`] sees them.
pub trait Cluster: Send + Sync + 'static {
    /// This node's id on the bus.
    fn node_id(&self) -> &Arc<str>;

    /// Publishes an EVENT whose `[event, ...args]` is `packet` (MessagePack)
    /// to `rooms` (the whole namespace when empty) but the socket `except`.
    /// Returns true when it went out and comes back through the bus for this
    /// node's members; false when the caller must deliver it locally.
    fn publish(&self, rooms: &[&str], except: Option<Sid>, packet: &[u8]) -> bool;

    /// Publishes like [`Cluster::publish`] a message whose id Redis gives:
    /// `packet` holds `placeholder` where the id goes (once or more), and
    /// Redis puts the next id of the cluster's counter in its place as it
    /// relays it, so ids increase in the order every node of ours delivers
    /// the messages. With `recoverable`, the packet's last argument is one
    /// of those places: the id is its recovery offset too. Resolves to the
    /// id. `None` when it did not go out (the caller delivers locally, with
    /// [`Cluster::fallback_message_id`]).
    fn publish_ordered(
        &self,
        rooms: &[&str],
        except: Option<Sid>,
        packet: &[u8],
        placeholder: &str,
        recoverable: bool,
    ) -> Option<BoxFuture<String>>;

    /// Keeps a suspended session in Redis for `window`, for any node to
    /// recover. Resolves to whether it was stored.
    fn store_session(&self, session: StoredSession, window: Duration) -> BoxFuture<bool>;

    /// Takes the session `pid` out of Redis, once across the cluster,
    /// within [`redis::session::LOOKUP_TIMEOUT`]. `Err` when Redis failed or
    /// did not answer in time.
    fn take_session(&self, pid: Pid) -> BoxFuture<Result<Option<StoredSession>, String>>;

    /// Deletes the session `pid` from Redis (best effort).
    fn discard_session(&self, pid: Pid) -> BoxFuture<bool>;

    /// Tells the other nodes the session `pid` was recovered here: the one
    /// holding it suspended ends it without a word to its rooms.
    fn session_moved(&self, pid: Pid);

    /// A message id of this node's own (`<counter>-<node id>`), for messages
    /// Redis does not order: unique, and above every id Redis gave this node.
    fn fallback_message_id(&self) -> String;

    /// The members of `room` on the other nodes (0 for nodes that do not
    /// answer in time).
    fn remote_members(&self, room: &str) -> BoxFuture<usize>;

    /// Whether the bus is up.
    fn is_connected(&self) -> bool;

    /// Gives the cluster this node's sockets of the namespace, once they
    /// exist, for the broadcasts and requests of other nodes.
    fn attach(&self, sockets: Weak<dyn LocalSockets>);

    /// The socket `sid`, which the handler describes as `presence`, joined
    /// `room` here: the other nodes keep it, to speak for it should this
    /// node die.
    fn member_joined(&self, sid: Sid, room: &str, presence: &RawValue);

    /// The socket `sid` left `room` here.
    fn member_left(&self, sid: Sid, room: &str);
}

/// Which sockets a remote request or broadcast is about: those in any of
/// `rooms` (every socket when empty) and in none of `except`. A socket id
/// counts as a room holding just that socket, as in socket.io.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// Rooms to match; empty matches every socket.
    pub rooms: &'a [String],
    /// Rooms and socket ids to leave out.
    pub except: &'a [String],
}

/// One socket as another node's `fetchSockets` sees it.
pub type FetchedSocket = redis::request::FetchedSocket;

/// This node's sockets of one namespace, as an adapter acts on them for
/// other nodes. Implemented by the Socket.IO layer's namespace.
pub trait LocalSockets: Send + Sync + 'static {
    /// Queues `frame` for every selected socket; returns the deliveries.
    /// `offset`: the frame is recoverable, with that offset (kept for
    /// replay when recovery is on).
    fn deliver(&self, selection: Selection<'_>, frame: &Frame, offset: Option<u64>) -> usize;
    /// Frames of the namespace may have been missed or delivered without an
    /// offset (the bus was down, a publish failed): what the replay store
    /// holds is incomplete until the next frame from the bus.
    fn frames_lost(&self);
    /// Another node recovered the session `pid`: if it waits here, it ends
    /// without a word to its rooms.
    fn session_moved(&self, pid: &str);
    /// Emits the EVENT `[event, ...args]` (`data`) with an ack id to every
    /// selected socket; each receiver resolves with that client's answer.
    fn deliver_with_acks(
        &self,
        selection: Selection<'_>,
        data: &serde_json::Value,
    ) -> Vec<tokio::sync::oneshot::Receiver<serde_json::Value>>;
    /// The ids of the selected sockets.
    fn socket_ids(&self, selection: Selection<'_>) -> Vec<String>;
    /// Every room with a member here, socket ids included.
    fn room_names(&self) -> Vec<String>;
    /// Describes the selected sockets.
    fn fetch(&self, selection: Selection<'_>) -> Vec<FetchedSocket>;
    /// The selected sockets join `rooms` (silently: no application notice).
    fn join(&self, selection: Selection<'_>, rooms: &[String]);
    /// The selected sockets leave `rooms` (silently).
    fn leave(&self, selection: Selection<'_>, rooms: &[String]);
    /// Disconnects the selected sockets; `close` closes their sessions too.
    fn disconnect(&self, selection: Selection<'_>, close: bool);
    /// Every membership here, as `(sid, room, presence)`, for the sockets
    /// the handler describes (see [`Cluster::member_joined`]).
    fn presences(&self) -> Vec<redis::presence::Entry>;
    /// Members of `room` on another node (as `presences`) left without
    /// this node hearing it: that node is gone, or they left during an outage.
    fn members_lost(&self, room: &str, presences: &[Box<RawValue>]);
    /// Members of `room` on another node (as `presences`) joined without
    /// this node hearing it: during an outage, or their node was counted
    /// gone and is back.
    fn members_found(&self, room: &str, presences: &[Box<RawValue>]);
}
