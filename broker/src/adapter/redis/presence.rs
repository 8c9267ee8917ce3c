//! Presence: which members each of our other brokers holds, so that when one
//! stops answering the survivors can tell their own members who left with it.
//!
//! socket.io's classic Redis adapter has no heartbeat (its cluster adapters
//! do, on channels of their own), so our brokers speak this on a channel no
//! Node server subscribes to, `<key>-presence#<nsp>#` (JSON):
//!
//! - `{"type":"heartbeat","uid"}` every heartbeat interval;
//! - `{"type":"join"|"leave","uid","members":[[sid,room,presence]]}` as a
//!   member joins or leaves a room (`presence` is what the namespace's handler
//!   says of the socket: the chat's user id; `null` in a leave);
//! - `{"type":"state","uid","reset","more","ask","members":[…]}`: a node's
//!   members, in chunks (`reset` on the first, `more` on all but the last),
//!   when it (re)connects; `ask` asks the others for theirs.
//!
//! A whole `state` is compared with what was known of the node: the members
//! it adds joined, and those it drops left, while the receiver was not
//! listening (its own outage, the sender's, or the sender counted gone and
//! back): [`Received`] hands both back, for the receiver to tell its own
//! members what they missed.
//!
//! A node not heard from for the heartbeat timeout is gone: [`Presence::sweep`]
//! hands back its members by room, and forgets it. While our own bus is down
//! nobody can be heard, so nobody is judged (the clocks restart instead).
//!
//! Pure: no I/O. Node servers, and brokers of ours that never said anything,
//! are not tracked: their members' counts come from asking the nodes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How often a broker says it is alive, by default (as socket.io's cluster
/// adapters' `heartbeatInterval`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a broker may stay silent before it counts as gone, by default
/// (as socket.io's cluster adapters' `heartbeatTimeout`).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most members per `state` message.
pub const STATE_CHUNK: usize = 1000;
/// Most bytes of members per `state` message (about), so a large node's
/// state stays far below the message size limit whatever its user ids.
pub const STATE_CHUNK_BYTES: usize = 64 * 1024;

/// What a presence message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Alive.
    Heartbeat,
    /// These members joined.
    Join,
    /// These members left.
    Leave,
    /// These are (some of) my members.
    State,
    /// A session suspended on another node was recovered on the sender:
    /// the members' socket ids are the sessions' `pid`s, and the node
    /// holding one ends it without a word to its rooms.
    Moved,
}

/// One member: socket id, room, and what the handler says of the socket.
pub type Entry = (String, String, Option<Box<RawValue>>);

/// A message on the presence channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    /// What it says.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The sending node.
    pub uid: String,
    /// The members it is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Entry>,
    /// In a `state`: forget what was known of the node first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// In a `state`: more chunks follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// In a `state`: the receivers answer with theirs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ask: bool,
}

impl Message {
    /// A message of `kind` from `uid` about `members`.
    #[must_use]
    pub fn new(kind: Kind, uid: &str, members: Vec<Entry>) -> Self {
        Self { kind, uid: uid.to_owned(), members, reset: false, more: false, ask: false }
    }

    /// The message as JSON bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and raw JSON always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `uid`'s whole state as `state` messages of at most [`STATE_CHUNK`]
    /// members and about [`STATE_CHUNK_BYTES`] (one, empty, for no
    /// members); the first resets, and asks when `ask`.
    #[must_use]
    pub fn state(uid: &str, members: Vec<Entry>, ask: bool) -> Vec<Self> {
        let mut chunks: Vec<Self> = Vec::new();
        let mut members = members.into_iter().peekable();
        loop {
            let mut chunk: Vec<Entry> = Vec::new();
            let mut bytes = 0_usize;
            while chunk.len() < STATE_CHUNK && bytes < STATE_CHUNK_BYTES {
                let Some(entry) = members.next() else { break };
                bytes = bytes.saturating_add(entry_bytes(&entry));
                chunk.push(entry);
            }
            let first = chunks.is_empty();
            let more = members.peek().is_some();
            chunks.push(Self {
                kind: Kind::State,
                uid: uid.to_owned(),
                members: chunk,
                reset: first,
                more,
                ask: first && ask,
            });
            if !more {
                return chunks;
            }
        }
    }
}

/// Members by `(sid, room)`.
type Members = HashMap<(String, String), Box<RawValue>>;

/// Room → the presences of some members there.
pub type Rooms = HashMap<String, Vec<Box<RawValue>>>;

/// About the bytes `entry` takes in a message.
fn entry_bytes((sid, room, presence): &Entry) -> usize {
    let presence = presence.as_ref().map_or(4, |presence| presence.get().len());
    sid.len().saturating_add(room.len()).saturating_add(presence).saturating_add(8)
}

/// The members one other node holds, and when it was last heard.
#[derive(Debug, Default)]
struct Node {
    last_seen: Option<Instant>,
    members: Members,
    /// While a `state` comes in: the members known before it.
    before_state: Option<Members>,
}

impl Node {
    /// A member joined (a `join` message).
    fn insert(&mut self, sid: String, room: String, presence: Box<RawValue>) {
        // A join while a state comes in was not missed: it is known before too.
        if let Some(before) = &mut self.before_state {
            before.insert((sid.clone(), room.clone()), presence.clone());
        }
        self.members.insert((sid, room), presence);
    }

    fn remove(&mut self, sid: String, room: String) {
        let key = (sid, room);
        if let Some(before) = &mut self.before_state {
            before.remove(&key);
        }
        self.members.remove(&key);
    }

    /// The state is whole: who joined and who left since what was known.
    fn finish_state(&mut self) -> (Rooms, Rooms) {
        let before = self.before_state.take().unwrap_or_default();
        let joined = by_room(self.members.iter().filter(|(key, _)| !before.contains_key(*key)));
        let left = by_room(before.iter().filter(|(key, _)| !self.members.contains_key(*key)));
        (joined, left)
    }
}

fn by_room<'a>(members: impl Iterator<Item = (&'a (String, String), &'a Box<RawValue>)>) -> Rooms {
    let mut rooms = Rooms::new();
    for ((_, room), presence) in members {
        rooms.entry(room.clone()).or_default().push(presence.clone());
    }
    rooms
}

/// What a message told: whether it asks for this node's state, and, after a
/// whole `state`, the members that joined and left unheard.
#[derive(Debug, Default)]
pub struct Received {
    /// The sender asks for this node's state.
    pub ask: bool,
    /// Members that joined while nobody heard.
    pub joined: Rooms,
    /// Members that left while nobody heard.
    pub left: Rooms,
}

/// A node found gone: its members' presences, by room.
#[derive(Debug)]
pub struct Gone {
    /// The node's uid.
    pub uid: String,
    /// Room → the presences of its members there.
    pub rooms: Rooms,
}

/// The other brokers of one namespace, as heard on its presence channel.
#[derive(Debug)]
pub struct Presence {
    uid: String,
    timeout: Duration,
    nodes: Mutex<HashMap<String, Node>>,
}

impl Presence {
    /// The view of node `uid` (whose own messages are ignored); a node
    /// silent for `timeout` is gone.
    #[must_use]
    pub fn new(uid: &str, timeout: Duration) -> Self {
        Self { uid: uid.to_owned(), timeout, nodes: Mutex::default() }
    }

    /// Takes in a message heard `now`.
    pub fn receive(&self, message: Message, now: Instant) -> Received {
        let mut received = Received { ask: message.ask, ..Received::default() };
        if message.uid == self.uid {
            return Received::default();
        }
        let mut nodes = self.nodes.lock();
        let node = nodes.entry(message.uid).or_default();
        node.last_seen = Some(now);
        match message.kind {
            Kind::Heartbeat => {}
            Kind::Join | Kind::State => {
                if message.kind == Kind::State && message.reset {
                    // A state cut short by a lost chunk keeps what was known before it.
                    let before = std::mem::take(&mut node.members);
                    node.before_state.get_or_insert(before);
                }
                for (sid, room, presence) in message.members {
                    let Some(presence) = presence else { continue };
                    if message.kind == Kind::State {
                        node.members.insert((sid, room), presence);
                    } else {
                        node.insert(sid, room, presence);
                    }
                }
                if message.kind == Kind::State && !message.more {
                    (received.joined, received.left) = node.finish_state();
                }
            }
            Kind::Moved => {}
            Kind::Leave => {
                for (sid, room, _) in message.members {
                    node.remove(sid, room);
                }
            }
        }
        received
    }

    /// Forgets the nodes silent since before `now - timeout` and returns
    /// them. When `connected` is false nothing could be heard: no node is
    /// judged, and every clock restarts at `now`.
    pub fn sweep(&self, now: Instant, connected: bool) -> Vec<Gone> {
        let mut nodes = self.nodes.lock();
        if !connected {
            for node in nodes.values_mut() {
                node.last_seen = Some(now);
            }
            return Vec::new();
        }
        let gone: Vec<String> = nodes
            .iter()
            .filter(|(_, node)| {
                node.last_seen.is_some_and(|seen| now.saturating_duration_since(seen) > self.timeout)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        gone.into_iter()
            .filter_map(|uid| nodes.remove(&uid).map(|node| (uid, node)))
            .map(|(uid, node)| Gone { uid, rooms: by_room(node.members.iter()) })
            .collect()
    }

    /// The other nodes heard within the timeout (for tests and logs).
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).expect("valid JSON")
    }

    fn entry(sid: &str, room: &str, user: &str) -> Entry {
        (sid.to_owned(), room.to_owned(), Some(raw(user)))
    }

    fn decode(bytes: &[u8]) -> Message {
        serde_json::from_slice(bytes).expect("a presence message")
    }

    #[test]
    fn messages_read_as_written() {
        let join = Message::new(Kind::Join, "AbC12x", vec![entry("s1", "lobby", "42")]);
        assert_eq!(
            String::from_utf8(join.encode()).expect("UTF-8"),
            r#"{"type":"join","uid":"AbC12x","members":[["s1","lobby",42]]}"#
        );
        let heartbeat = decode(br#"{"type":"heartbeat","uid":"AbC12x"}"#);
        assert_eq!((heartbeat.kind, heartbeat.members.len()), (Kind::Heartbeat, 0));
        let leave = decode(br#"{"type":"leave","uid":"n","members":[["s1","lobby",null]]}"#);
        assert!(leave.members[0].2.is_none());
    }

    #[test]
    fn a_state_comes_in_chunks_and_the_first_resets() {
        let members: Vec<Entry> =
            (0..STATE_CHUNK + 1).map(|index| entry(&format!("s{index}"), "r", "\"u\"")).collect();
        let chunks = Message::state("me", members, true);
        assert_eq!(chunks.len(), 2);
        assert!(chunks[0].reset && chunks[0].ask && !chunks[1].reset && !chunks[1].ask);
        assert_eq!(chunks[0].members.len() + chunks[1].members.len(), STATE_CHUNK + 1);
        assert_eq!(Message::state("me", Vec::new(), false).len(), 1, "an empty state still resets");
        let long_user = format!("\"{}\"", "u".repeat(10_000));
        let heavy: Vec<Entry> = (0..20).map(|index| entry(&format!("s{index}"), "r", &long_user)).collect();
        let chunks = Message::state("me", heavy, false);
        assert!(chunks.len() > 1, "large user ids split the state sooner");
        assert!(chunks.iter().all(|chunk| chunk.encode().len() < 2 * STATE_CHUNK_BYTES));
    }

    #[test]
    fn a_silent_node_is_gone_with_its_members_by_room() {
        let presence = Presence::new("me", Duration::from_secs(10));
        let start = Instant::now();
        let join = Message::new(
            Kind::Join,
            "other",
            vec![entry("s1", "a", "\"alice\""), entry("s1", "b", "\"alice\""), entry("s2", "a", "7")],
        );
        presence.receive(join, start);
        presence.receive(Message::new(Kind::Leave, "other", vec![("s1".into(), "b".into(), None)]), start);
        presence.receive(Message::new(Kind::Heartbeat, "me", Vec::new()), start);
        assert_eq!(presence.nodes(), 1, "its own messages are not a node");

        assert!(
            presence.sweep(start + Duration::from_secs(10), true).is_empty(),
            "silent for the timeout only"
        );
        let gone = presence.sweep(start + Duration::from_secs(11), true);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].uid, "other");
        let mut users: Vec<&str> = gone[0].rooms["a"].iter().map(|user| user.get()).collect();
        users.sort_unstable();
        assert_eq!(users, ["\"alice\"", "7"]);
        assert!(!gone[0].rooms.contains_key("b"), "it left b before it went");
        assert_eq!(presence.nodes(), 0);
    }

    #[test]
    fn nobody_is_judged_while_this_node_hears_nothing() {
        let presence = Presence::new("me", Duration::from_secs(10));
        let start = Instant::now();
        presence.receive(Message::new(Kind::Heartbeat, "other", Vec::new()), start);
        assert!(presence.sweep(start + Duration::from_secs(60), false).is_empty());
        // Back on the bus at 60 s: the other node gets a full timeout to be heard.
        assert!(presence.sweep(start + Duration::from_secs(65), true).is_empty());
        assert_eq!(presence.sweep(start + Duration::from_secs(71), true).len(), 1);
    }

    fn users(rooms: &Rooms, room: &str) -> Vec<String> {
        let mut users: Vec<String> =
            rooms.get(room).into_iter().flatten().map(|user| user.get().to_owned()).collect();
        users.sort_unstable();
        users
    }

    #[test]
    fn a_state_replaces_what_was_known_and_says_who_joined_and_left_unheard() {
        let presence = Presence::new("me", Duration::from_secs(10));
        let now = Instant::now();
        let known = vec![entry("stays", "a", "1"), entry("goes", "a", "2")];
        let first = presence.receive(Message::new(Kind::Join, "other", known), now);
        assert!(!first.ask && first.joined.is_empty(), "a join is told on the broadcast channel");
        let mut state =
            Message::state("other", vec![entry("stays", "a", "1"), entry("came", "b", "3")], true);
        let received = presence.receive(state.remove(0), now);
        assert!(received.ask, "it asks for ours");
        assert_eq!(users(&received.joined, "b"), ["3"]);
        assert!(users(&received.joined, "a").is_empty(), "stays was known");
        assert_eq!(users(&received.left, "a"), ["2"]);
        let gone = presence.sweep(now + Duration::from_secs(11), true);
        assert_eq!(users(&gone[0].rooms, "a"), ["1"]);
    }

    #[test]
    fn a_state_in_chunks_is_compared_once_whole_and_joins_meanwhile_are_not_missed() {
        let presence = Presence::new("me", Duration::from_secs(10));
        let now = Instant::now();
        presence.receive(Message::new(Kind::Join, "other", vec![entry("old", "a", "0")]), now);
        let members: Vec<Entry> =
            (0..=STATE_CHUNK).map(|index| entry(&format!("s{index}"), "r", &index.to_string())).collect();
        let mut chunks = Message::state("other", members, false).into_iter();
        let first = presence.receive(chunks.next().expect("two chunks"), now);
        assert!(first.joined.is_empty() && first.left.is_empty(), "not whole yet");
        presence.receive(Message::new(Kind::Join, "other", vec![entry("meanwhile", "r", "\"m\"")]), now);
        let last = presence.receive(chunks.next().expect("two chunks"), now);
        assert_eq!(last.joined["r"].len(), STATE_CHUNK + 1, "the state's members, not the join meanwhile");
        assert_eq!(users(&last.left, "a"), ["0"]);
    }

    #[test]
    fn a_node_counted_gone_that_comes_back_brings_its_members_back() {
        let presence = Presence::new("me", Duration::from_secs(10));
        let start = Instant::now();
        presence.receive(Message::new(Kind::Join, "other", vec![entry("s", "a", "1")]), start);
        assert_eq!(presence.sweep(start + Duration::from_secs(11), true).len(), 1);
        let mut state = Message::state("other", vec![entry("s", "a", "1")], true);
        let back = presence.receive(state.remove(0), start + Duration::from_secs(12));
        assert_eq!(users(&back.joined, "a"), ["1"]);
    }
}
