//! Connection state recovery, the Socket.IO side: sessions whose connection
//! was lost wait here for their client, for the recovery window.
//!
//! A suspended session stays in its rooms (its members are told nothing,
//! and it still counts as a member); frames for it are recorded in its old
//! outbox's [`OffsetTrail`](crate::engineio::OffsetTrail) and in the
//! adapter's replay ring. A client that comes back with the session's `pid`
//! and a token of the same user, which the middleware has just checked
//! again, takes it up once: the same socket id, the same rooms, and what it
//! missed, in offset order, before anything newer. When the window closes
//! first, or what it missed was trimmed, the session ends as any other:
//! the handler's `on_disconnect`, then out of every room.
//!
//! In a cluster a suspended session is also stored in Redis
//! (`sio:session:<pid>`, see [`crate::adapter::redis::session`]) for the
//! window, and a CONNECT with a `pid` takes it from there first (once
//! across the cluster). Taken on its own broker, it recovers as above; on
//! another, [`Namespace::resume_remote`] joins its rooms there and replays
//! from that broker's ring, and its old broker, told on the bus, ends its
//! copy without a word to the rooms ([`Namespace::end_moved`]). With Redis
//! out of reach, a session recovers on its own broker only.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ahash::RandomState;
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::debug;

use super::{Accepted, DisconnectReason, Namespace, Socket, packet_frame};
use crate::adapter::recovery::{ResumePoint, Target, resume_point};
use crate::adapter::redis::session::{SessionData, StoredSession};
use crate::engineio::{CloseReason, Handshake, Outbox};
use crate::ids::{Pid, RoomId, Sid};
use crate::protocol::Frame;
use crate::protocol::socketio::PacketType;

/// Whether a session closed for `reason` may be recovered: its connection
/// was lost, it was not ended (by either side, or for a fault).
#[must_use]
pub(super) fn is_recoverable(reason: CloseReason) -> bool {
    matches!(reason, CloseReason::ClientClosed | CloseReason::TransportError | CloseReason::PingTimeout)
}

/// A session waiting for its client.
pub(super) struct Suspended {
    socket: Arc<Socket>,
    reason: CloseReason,
    deadline: Instant,
    /// Set once a cluster's Redis holds the session too.
    stored: Arc<AtomicBool>,
}

/// The suspended sessions of one namespace.
pub(super) struct Sessions {
    window: Duration,
    suspended: Mutex<HashMap<Pid, Suspended, RandomState>>,
    expiries: Mutex<Expiries>,
}

/// Deadlines in suspension order (the window is the same for all, so that
/// is deadline order), and whether a sweeper task is running.
#[derive(Default)]
struct Expiries {
    queue: VecDeque<(Instant, Pid)>,
    sweeping: bool,
}

impl Sessions {
    /// No session yet; each will wait `window`.
    pub(super) fn new(window: Duration) -> Self {
        Self { window, suspended: Mutex::default(), expiries: Mutex::default() }
    }

    /// The sessions waiting (for gauges and tests).
    pub(super) fn len(&self) -> usize {
        self.suspended.lock().len()
    }
}

/// Sleeps until the next deadline and ends the sessions due, until none is left.
async fn sweep(namespace: Weak<Namespace>) {
    loop {
        let next = {
            let Some(namespace) = namespace.upgrade() else { return };
            namespace.expire_due(Instant::now())
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

impl Namespace {
    /// Keeps `socket`'s session for the window, in its rooms, instead of
    /// ending it. False when it cannot be recovered (recovery off, or a
    /// reason that is not a lost connection): the caller ends it.
    pub(super) fn suspend(self: &Arc<Self>, socket: &Arc<Socket>, reason: CloseReason) -> bool {
        let (Some(sessions), Some(pid)) = (self.sessions(), socket.pid()) else { return false };
        // Without a runtime to end it when its window closes, a session is
        // not kept.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
        if !is_recoverable(reason) {
            return false;
        }
        // What its connection did not write stays out of memory: the ring
        // holds it once for everyone.
        socket.outbox().discard_queued();
        let deadline = Instant::now() + sessions.window;
        let stored = Arc::new(AtomicBool::new(false));
        if let Some(cluster) = self.adapter().cluster() {
            let (cluster, flag, namespace) = (Arc::clone(cluster), Arc::clone(&stored), Arc::downgrade(self));
            let session = stored_session(socket, sessions.window);
            let window = sessions.window;
            runtime.spawn(async move {
                if cluster.store_session(session, window).await {
                    flag.store(true, Ordering::Release);
                    // Taken up or ended here meanwhile: the copy must not outlive it.
                    if namespace.upgrade().is_none_or(|namespace| namespace.is_stored(pid).is_none()) {
                        cluster.discard_session(pid).await;
                    }
                }
            });
        }
        sessions
            .suspended
            .lock()
            .insert(pid, Suspended { socket: Arc::clone(socket), reason, deadline, stored });
        let mut expiries = sessions.expiries.lock();
        expiries.queue.push_back((deadline, pid));
        if !expiries.sweeping {
            expiries.sweeping = true;
            runtime.spawn(sweep(Arc::downgrade(self)));
        }
        debug!(sid = %socket.sid(), ?reason, "session suspended for recovery");
        true
    }

    /// Ends the sessions whose window closed by `now`; returns the next
    /// deadline, or `None` (and the sweeper stops) when none is left.
    fn expire_due(&self, now: Instant) -> Option<Instant> {
        let sessions = self.sessions()?;
        loop {
            let due = {
                let mut expiries = sessions.expiries.lock();
                match expiries.queue.front() {
                    None => {
                        expiries.sweeping = false;
                        return None;
                    }
                    Some(&(at, _)) if at > now => return Some(at),
                    Some(_) => expiries.queue.pop_front(),
                }
            };
            let Some((_, pid)) = due else { continue };
            // A session taken up since, or suspended again later, is not due.
            let expired = {
                let mut suspended = sessions.suspended.lock();
                let is_due = suspended.get(&pid).is_some_and(|session| session.deadline <= now);
                if is_due { suspended.remove(&pid) } else { None }
            };
            if let Some(session) = expired {
                self.expire(&session);
            }
        }
    }

    /// Ends a suspended session as any other: `on_disconnect`, then out of its rooms.
    fn expire(&self, session: &Suspended) {
        debug!(sid = %session.socket.sid(), "suspended session ended");
        self.handler().on_disconnect(&session.socket, DisconnectReason::SessionClosed(session.reason));
        session.socket.leave_all_silently();
    }

    /// Whether the session `pid` waits here (`None` when not), and whether
    /// Redis holds it too.
    pub(super) fn is_stored(&self, pid: Pid) -> Option<bool> {
        let suspended = self.sessions()?.suspended.lock();
        suspended.get(&pid).map(|session| session.stored.load(Ordering::Acquire))
    }

    /// Another node recovered the session `pid`: if it waits here, it ends
    /// without `on_disconnect` (its rooms hear nothing; the other nodes
    /// count it there now).
    pub(super) fn end_moved(&self, pid: Pid) {
        let Some(sessions) = self.sessions() else { return };
        let Some(session) = sessions.suspended.lock().remove(&pid) else { return };
        debug!(sid = %session.socket.sid(), "suspended session recovered on another broker");
        session.socket.leave_all_silently();
    }

    /// Puts back in Redis, for the rest of its window, a session taken for
    /// a CONNECT that may not have it (another user's token).
    pub(super) fn put_back(&self, session: StoredSession) {
        let Some(cluster) = self.adapter().cluster() else { return };
        let left = session.data.expires_at_ms.saturating_sub(now_ms());
        if left == 0 {
            return;
        }
        let cluster = Arc::clone(cluster);
        tokio::spawn(async move {
            cluster.store_session(session, Duration::from_millis(left)).await;
        });
    }

    /// Takes up on this node a session suspended on another (`stored`, just
    /// taken from Redis), on a new connection whose client processed
    /// `offset` last: the same ids, its rooms joined here without a word to
    /// their members, and what it missed from this node's ring, in offset
    /// order, before anything newer. The other nodes are told, so the one
    /// holding it ends its copy.
    ///
    /// # Errors
    /// The middleware's answer back when what it missed cannot be told or
    /// is not in this node's ring (the caller starts a fresh session);
    /// `None` in its place when it could not be given back.
    pub(super) fn resume_remote(
        self: &Arc<Self>,
        stored: &StoredSession,
        offset: Option<&str>,
        outbox: &Outbox,
        handshake: &Arc<Handshake>,
        accepted: Accepted,
    ) -> Result<Arc<Socket>, Option<Accepted>> {
        let (Some(sid), Some(pid), Some(ring)) =
            (Sid::parse(&stored.sid), Pid::parse(&stored.pid), self.adapter().ring())
        else {
            return Err(Some(accepted));
        };
        let Some(from) = remote_resume_from(stored, offset) else {
            debug!(%sid, "offset never sent to this session, starting a fresh session");
            return Err(Some(accepted));
        };
        if self.has_socket(sid) {
            return Err(Some(accepted));
        }
        outbox.hold();
        let socket = Arc::new(Socket::from_stored(
            Arc::clone(self),
            sid,
            pid,
            stored.data.since,
            stored.data.sub.as_deref(),
            outbox.clone(),
            Arc::clone(handshake),
            accepted,
        ));
        let since = stored.data.rooms_since.iter().copied().chain(std::iter::repeat(stored.data.since));
        let rooms: HashMap<RoomId, (u64, u64), RandomState> = stored
            .rooms
            .iter()
            .zip(since)
            .map(|(room, since)| {
                let room = RoomId::from(room.as_str());
                let cut = socket.rejoin(&room, since);
                (room, (since, cut))
            })
            .collect();
        let point = ResumePoint { from, late: Vec::new() };
        let missed = ring.replay(&point, |offset, target| is_missed(&rooms, sid, offset, target));
        let Some(missed) = missed else {
            debug!(%sid, "missed packets not in this broker's ring, starting a fresh session");
            socket.leave_all_silently();
            let _ = outbox.release(&[], false);
            return Err(Arc::try_unwrap(socket).ok().map(Socket::into_accepted));
        };
        debug!(%sid, replayed = missed.len(), "session recovered from another broker");
        self.take_up(&socket, missed, outbox);
        if let Some(cluster) = self.adapter().cluster() {
            cluster.session_moved(pid);
        }
        Ok(socket)
    }

    /// Takes the session `pid` out of the store if it belongs to `owner`
    /// (the user the middleware has just accepted); a session of another
    /// user stays where it is.
    pub(super) fn take_suspended(&self, pid: Pid, owner: Option<&str>) -> Option<Suspended> {
        let mut suspended = self.sessions()?.suspended.lock();
        if suspended.get(&pid)?.socket.owner() != owner {
            return None;
        }
        suspended.remove(&pid)
    }

    /// Takes up `session` on a new connection, whose client processed
    /// `offset` last (the raw text it sent). Its rooms now deliver to
    /// `outbox`; the CONNECT answer and the frames it missed are queued
    /// first, then whatever its rooms sent meanwhile.
    ///
    /// # Errors
    /// `accepted` back when what it missed cannot be told or was trimmed:
    /// the session is ended (its rooms hear it left) and the caller starts a
    /// fresh one.
    pub(super) fn resume(
        self: &Arc<Self>,
        session: Suspended,
        offset: Option<&str>,
        outbox: &Outbox,
        handshake: &Arc<Handshake>,
        accepted: Accepted,
    ) -> Result<Arc<Socket>, Accepted> {
        let old = &session.socket;
        let sid = old.sid();
        outbox.hold();
        // From here on the rooms deliver to the new outbox (held back);
        // `cut` splits each room's frames into those the old outbox saw
        // (below) and those the new one gets.
        let table = self.adapter().local_half().table();
        let joined: Vec<(RoomId, u64)> =
            old.with_rooms(|rooms| rooms.iter().map(|(room, since)| (room.clone(), since)).collect());
        let rooms: HashMap<RoomId, (u64, u64), RandomState> = joined
            .into_iter()
            .filter_map(|(room, since)| {
                let cut = table
                    .replace_outbox(room.as_str(), sid, outbox.clone(), || self.adapter().next_offset())?;
                Some((room, (since, cut)))
            })
            .collect();
        let last_seen = match offset {
            None => Ok(None),
            Some(text) => text.parse::<u64>().map(Some),
        };
        let missed = last_seen.ok().and_then(|last_seen| {
            let point = resume_point(&old.outbox().trail(), last_seen, old.since())?;
            self.adapter().ring()?.replay(&point, |offset, target| is_missed(&rooms, sid, offset, target))
        });
        let Some(missed) = missed else {
            debug!(%sid, "missed packets out of reach, starting a fresh session");
            self.expire(&session);
            let _ = outbox.release(&[], false);
            return Err(accepted);
        };
        let socket = Arc::new(Socket::resume(
            old,
            outbox.clone(),
            Arc::clone(handshake),
            accepted.data,
            accepted.expires_at,
        ));
        debug!(%sid, replayed = missed.len(), "session recovered");
        self.take_up(&socket, missed, outbox);
        Ok(socket)
    }

    /// Registers the recovered `socket` and queues, on its held `outbox`,
    /// the CONNECT answer and the frames it `missed`, before what its rooms
    /// sent meanwhile.
    fn take_up(&self, socket: &Arc<Socket>, missed: Vec<(Frame, Option<u64>)>, outbox: &Outbox) {
        let mut first = Vec::with_capacity(missed.len().saturating_add(1));
        first.push((connect_frame(self.name(), socket), None));
        first.extend(missed);
        crate::metrics::Metrics::add(&self.metrics().recoveries, 1);
        self.insert(Arc::clone(socket));
        // A full outbox closes the new connection; the client tries again
        // and gets a fresh session, as after any slow read.
        let _ = outbox.release(&first, true);
    }
}

/// Whether the recorded frame `offset` for `target` is one the session
/// `sid` missed: a frame of one of its `rooms` between the first offset it
/// was owed there and the room's cut (and not one it was left out of), or
/// one sent to it alone.
fn is_missed(
    rooms: &HashMap<RoomId, (u64, u64), RandomState>,
    sid: Sid,
    offset: u64,
    target: &Target,
) -> bool {
    match target {
        Target::Room { room, except } => {
            *except != Some(sid)
                && rooms.get(room).is_some_and(|&(since, cut)| since <= offset && offset < cut)
        }
        Target::Socket(target) => *target == sid,
    }
}

/// The first offset a session taken up on another node replays from: after
/// the last one its client processed (`offset`), or from its rooms' first
/// when it processed none of this session. `None` for an offset never sent
/// to it. In a cluster a session's frames reach it in offset order (the
/// bus's), so no offset comes late.
fn remote_resume_from(stored: &StoredSession, offset: Option<&str>) -> Option<u64> {
    let data = &stored.data;
    let highest_sent = data.offset.as_deref().and_then(|sent| sent.parse::<u64>().ok()).unwrap_or(0);
    let after = match offset.map(str::parse::<u64>) {
        None => 0,
        Some(Ok(last)) if last < data.since => 0,
        Some(Ok(last)) if last <= highest_sent => last.saturating_add(1),
        Some(_) => return None,
    };
    // Nothing below a room's first offset is for the session.
    let owed_from = data.rooms_since.iter().copied().min().unwrap_or(data.since).max(data.since);
    Some(if stored.rooms.is_empty() { u64::MAX } else { after.max(owed_from) })
}

/// What Redis keeps of `socket`'s suspended session for `window`.
fn stored_session(socket: &Socket, window: Duration) -> StoredSession {
    let (rooms, rooms_since): (Vec<String>, Vec<u64>) = socket
        .with_rooms(|rooms| rooms.iter().map(|(room, since)| (room.as_str().to_owned(), since)).collect());
    let highest = socket.outbox().trail().highest;
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    StoredSession {
        sid: socket.sid().to_string(),
        pid: socket.pid().map(|pid| pid.to_string()).unwrap_or_default(),
        rooms,
        data: SessionData {
            sub: socket.owner().map(str::to_owned),
            offset: (highest > 0).then(|| highest.to_string()),
            since: socket.since(),
            expires_at_ms: now_ms().saturating_add(window_ms),
            rooms_since,
        },
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// The CONNECT answer: `{"sid"}`, with `"pid"` when recovery is on.
pub(super) fn connect_frame(namespace: &str, socket: &Socket) -> Frame {
    let sid = socket.sid().to_string();
    let body = match socket.pid() {
        Some(pid) => serde_json::json!({ "sid": sid, "pid": pid.to_string() }),
        None => serde_json::json!({ "sid": sid }),
    };
    packet_frame(PacketType::Connect, namespace, None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rooms_since: &[u64], offset: Option<&str>) -> StoredSession {
        StoredSession {
            sid: Sid::random().to_string(),
            pid: Pid::random().to_string(),
            rooms: rooms_since.iter().map(|since| format!("room{since}")).collect(),
            data: SessionData {
                sub: Some("alice".to_owned()),
                offset: offset.map(str::to_owned),
                since: 100,
                expires_at_ms: 0,
                rooms_since: rooms_since.to_vec(),
            },
        }
    }

    #[test]
    fn a_session_from_another_broker_replays_from_after_the_clients_offset() {
        let session = stored(&[110, 120], Some("150"));
        assert_eq!(remote_resume_from(&session, Some("140")), Some(141));
        assert_eq!(
            remote_resume_from(&session, Some("150")),
            Some(151),
            "nothing missed but what came since"
        );
        assert_eq!(remote_resume_from(&session, Some("151")), None, "never sent to this session");
        assert_eq!(remote_resume_from(&session, Some("x")), None, "not an offset");
        // Processed nothing of this session: from the first offset it was owed in a room.
        assert_eq!(remote_resume_from(&session, None), Some(110));
        assert_eq!(remote_resume_from(&session, Some("99")), Some(110), "an offset of an earlier session");
        assert_eq!(
            remote_resume_from(&stored(&[], Some("150")), None),
            Some(u64::MAX),
            "no room: nothing to replay"
        );
    }

    /// The fixed sizes the README's memory figures are computed from
    /// (x86-64): a change here is a change there.
    #[test]
    fn struct_sizes_for_the_readme() {
        assert_eq!(std::mem::size_of::<Socket>(), 200);
        assert_eq!(std::mem::size_of::<(Pid, Suspended)>(), 56);
        assert_eq!(crate::adapter::recovery::entry_size(), 88);
        println!(
            "Socket {} Suspended {} map entry {} expiry {} JoinedRooms {} room entry by_room {} by_order {} Member {} ring entry {}",
            std::mem::size_of::<Socket>(),
            std::mem::size_of::<Suspended>(),
            std::mem::size_of::<(Pid, Suspended)>(),
            std::mem::size_of::<(Instant, Pid)>(),
            std::mem::size_of::<super::super::socket::JoinedRooms>(),
            std::mem::size_of::<(RoomId, (u64, u64))>(),
            std::mem::size_of::<(u64, RoomId)>(),
            std::mem::size_of::<crate::rooms::Member>(),
            crate::adapter::recovery::entry_size(),
        );
    }
}
