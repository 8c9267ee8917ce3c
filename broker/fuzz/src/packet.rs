//! Structured Engine.IO text frames carrying Socket.IO packets:
//! `<eio type><sio type>[<attachments>-][<namespace>,][<ack id>][<payload>]`,
//! every part of which may be well formed, out of range or garbage.

use std::fmt::Write as _;

use arbitrary::Arbitrary;

use crate::json::{Json, JsonString, has_room};

/// One WebSocket text message as a client could send it.
#[derive(Arbitrary, Debug)]
pub enum TextFrame {
    /// Any text.
    Raw(String),
    /// An Engine.IO packet type followed by a Socket.IO packet.
    Packet {
        /// The Engine.IO type (`4`, message, for nearly every useful frame).
        engineio: EngineIoType,
        /// What follows it.
        socketio: SocketIoPacket,
    },
}

/// An Engine.IO packet type.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum EngineIoType {
    /// `4`, written thrice as often as the others by weight of variants.
    Message,
    /// `4`.
    Message2,
    /// `4`.
    Message3,
    /// `0`–`6`.
    Digit(u8),
    /// Any character.
    Other(char),
}

/// A Socket.IO packet.
#[derive(Arbitrary, Debug)]
pub struct SocketIoPacket {
    /// The type.
    pub kind: SocketIoType,
    /// `N-`, for binary types (or not).
    pub attachments: Option<Count>,
    /// `/name` and whether a comma ends it.
    pub namespace: Option<(Namespace, bool)>,
    /// The ack id.
    pub ack_id: Option<Count>,
    /// The payload.
    pub payload: Payload,
}

/// A Socket.IO packet type.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SocketIoType {
    /// `0`.
    Connect,
    /// `1`.
    Disconnect,
    /// `2`.
    Event,
    /// `3`.
    Ack,
    /// `4`.
    ConnectError,
    /// `5`.
    BinaryEvent,
    /// `6`.
    BinaryAck,
    /// Any character.
    Other(char),
}

/// A decimal count: an attachment count or an ack id.
#[derive(Arbitrary, Debug)]
pub enum Count {
    /// A small number.
    Small(u8),
    /// Any `u64`.
    Large(u64),
    /// `n` nines (overflows every integer type past 19).
    Nines(u16),
    /// Leading zeros before a number.
    LeadingZeros(u8, u32),
    /// A minus sign and a number.
    Negative(u32),
    /// Any text.
    Text(String),
}

/// A namespace.
#[derive(Arbitrary, Debug)]
pub enum Namespace {
    /// `/api/v1/chat`, the chat namespace.
    Chat,
    /// `/`.
    Root,
    /// `/` and any text.
    Other(String),
}

/// A Socket.IO payload.
#[derive(Arbitrary, Debug)]
pub enum Payload {
    /// Nothing.
    Empty,
    /// Any JSON (or near-JSON).
    Json(Json),
    /// `[name, args…]`.
    Event {
        /// The event name.
        name: JsonString,
        /// The arguments.
        args: Vec<Json>,
    },
    /// A chat event with one object argument.
    Chat {
        /// Which chat event.
        event: ChatEvent,
        /// The argument's members.
        members: Vec<(ChatKey, Json)>,
    },
    /// A CONNECT payload `{"token":…, …}`.
    Auth {
        /// The token value.
        token: Json,
        /// More members.
        extra: Vec<(JsonString, Json)>,
    },
}

/// The chat events.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ChatEvent {
    /// `join_room`.
    Join,
    /// `leave_room`.
    Leave,
    /// `send_message`.
    Send,
}

/// Keys the chat events read, and any other.
#[derive(Arbitrary, Debug)]
pub enum ChatKey {
    /// `roomId`.
    RoomId,
    /// `content`.
    Content,
    /// Any key.
    Other(JsonString),
}

impl TextFrame {
    /// The frame's text.
    #[must_use]
    pub fn render(&self) -> String {
        match self {
            Self::Raw(text) => text.clone(),
            Self::Packet { engineio, socketio } => {
                let mut out = String::new();
                match engineio {
                    EngineIoType::Message | EngineIoType::Message2 | EngineIoType::Message3 => out.push('4'),
                    EngineIoType::Digit(digit) => out.push(char::from(b'0' + digit % 7)),
                    EngineIoType::Other(character) => out.push(*character),
                }
                socketio.write(&mut out);
                out
            }
        }
    }
}

impl SocketIoPacket {
    /// The packet's text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends the packet's text to `out`.
    pub fn write(&self, out: &mut String) {
        match self.kind {
            SocketIoType::Other(character) => out.push(character),
            kind => out.push(char::from(b'0' + kind.index())),
        }
        if let Some(count) = &self.attachments {
            count.write(out);
            out.push('-');
        }
        if let Some((namespace, comma)) = &self.namespace {
            match namespace {
                Namespace::Chat => out.push_str("/api/v1/chat"),
                Namespace::Root => out.push('/'),
                Namespace::Other(name) => {
                    out.push('/');
                    out.push_str(name);
                }
            }
            if *comma {
                out.push(',');
            }
        }
        if let Some(count) = &self.ack_id {
            count.write(out);
        }
        self.payload.write(out);
    }
}

impl SocketIoType {
    const fn index(self) -> u8 {
        match self {
            Self::Connect => 0,
            Self::Disconnect => 1,
            Self::Event => 2,
            Self::Ack => 3,
            Self::ConnectError => 4,
            Self::BinaryEvent => 5,
            Self::BinaryAck => 6,
            Self::Other(_) => 7,
        }
    }
}

impl Count {
    fn write(&self, out: &mut String) {
        let _ = match self {
            Self::Small(value) => write!(out, "{value}"),
            Self::Large(value) => write!(out, "{value}"),
            Self::Nines(count) => {
                out.extend(std::iter::repeat_n('9', usize::from(*count).max(1)));
                Ok(())
            }
            Self::LeadingZeros(zeros, value) => {
                out.extend(std::iter::repeat_n('0', usize::from(*zeros)));
                write!(out, "{value}")
            }
            Self::Negative(value) => write!(out, "-{value}"),
            Self::Text(text) => {
                out.push_str(text);
                Ok(())
            }
        };
    }
}

impl Payload {
    fn write(&self, out: &mut String) {
        match self {
            Self::Empty => {}
            Self::Json(value) => value.write(out),
            Self::Event { name, args } => {
                out.push('[');
                name.write(out);
                for arg in args {
                    if !has_room(out) {
                        break;
                    }
                    out.push(',');
                    arg.write(out);
                }
                out.push(']');
            }
            Self::Chat { event, members } => {
                out.push_str(match event {
                    ChatEvent::Join => r#"["join_room",{"#,
                    ChatEvent::Leave => r#"["leave_room",{"#,
                    ChatEvent::Send => r#"["send_message",{"#,
                });
                write_members(out, members.iter().map(|(key, value)| (key, value)));
                out.push_str("}]");
            }
            Self::Auth { token, extra } => {
                out.push_str(r#"{"token":"#);
                token.write(out);
                for (key, value) in extra {
                    if !has_room(out) {
                        break;
                    }
                    out.push(',');
                    key.write(out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Writes `"key":value` pairs separated by commas.
pub fn write_members<'a>(out: &mut String, members: impl Iterator<Item = (&'a ChatKey, &'a Json)>) {
    for (index, (key, value)) in members.enumerate() {
        if !has_room(out) {
            break;
        }
        if index > 0 {
            out.push(',');
        }
        match key {
            ChatKey::RoomId => out.push_str(r#""roomId""#),
            ChatKey::Content => out.push_str(r#""content""#),
            ChatKey::Other(key) => key.write(out),
        }
        out.push(':');
        value.write(out);
    }
}
