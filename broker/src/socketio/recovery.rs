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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ahash::RandomState;
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::debug;

use super::{Accepted, DisconnectReason, Namespace, Socket, packet_frame};
use crate::adapter::recovery::{Target, resume_point};
use crate::engineio::{CloseReason, Handshake, Outbox};
use crate::ids::{Pid, RoomId};
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
        sessions.suspended.lock().insert(pid, Suspended { socket: Arc::clone(socket), reason, deadline });
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
                let cut = table.replace_outbox(room.as_str(), sid, outbox.clone(), || {
                    self.adapter().local_half().current_offset()
                })?;
                Some((room, (since, cut)))
            })
            .collect();
        let last_seen = match offset {
            None => Ok(None),
            Some(text) => text.parse::<u64>().map(Some),
        };
        let missed = last_seen.ok().and_then(|last_seen| {
            let point = resume_point(&old.outbox().trail(), last_seen, old.since())?;
            self.adapter().ring()?.replay(&point, |offset, target| match target {
                Target::Room { room, except } => {
                    *except != Some(sid)
                        && rooms.get(room).is_some_and(|&(since, cut)| since <= offset && offset < cut)
                }
                Target::Socket(target) => *target == sid,
            })
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
        let mut first = Vec::with_capacity(missed.len().saturating_add(1));
        first.push((connect_frame(self.name(), &socket), None));
        first.extend(missed);
        debug!(%sid, replayed = first.len().saturating_sub(1), "session recovered");
        crate::metrics::Metrics::add(&self.metrics().recoveries, 1);
        self.insert(Arc::clone(&socket));
        // A full outbox closes the new connection; the client tries again
        // and gets a fresh session, as after any slow read.
        let _ = outbox.release(&first, true);
        Ok(socket)
    }
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

    /// The fixed sizes the README's memory figures are computed from
    /// (x86-64): a change here is a change there.
    #[test]
    fn struct_sizes_for_the_readme() {
        assert_eq!(std::mem::size_of::<Socket>(), 272);
        assert_eq!(std::mem::size_of::<(Pid, Suspended)>(), 48);
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
