//! Structured chat events: `join_room`, `leave_room`, `send_message` (or any
//! name) with arguments whose `roomId` and `content` are long, blank in
//! every Unicode way, escaped, of the wrong type, or given twice.

use arbitrary::Arbitrary;

use crate::json::{Json, JsonString, has_room};
use crate::packet::{ChatKey, write_members};

/// An EVENT payload, `[name, args…]`.
#[derive(Arbitrary, Debug)]
pub struct ChatPayload {
    name: EventName,
    args: Vec<Argument>,
}

#[derive(Arbitrary, Debug)]
enum EventName {
    Join,
    Leave,
    Send,
    Other(JsonString),
}

#[derive(Arbitrary, Debug)]
enum Argument {
    Object(Vec<(ChatKey, Value)>),
    Json(Json),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Text(JsonString),
    /// `len` copies of one character: around the length limits.
    Long { len: u16, character: char },
    /// Only whitespace, of many kinds.
    Blank(Vec<u8>),
    Json(Json),
}

impl ChatPayload {
    /// The payload's text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::from("[");
        match &self.name {
            EventName::Join => out.push_str("\"join_room\""),
            EventName::Leave => out.push_str("\"leave_room\""),
            EventName::Send => out.push_str("\"send_message\""),
            EventName::Other(name) => name.write(&mut out),
        }
        for arg in &self.args {
            if !has_room(&out) {
                break;
            }
            out.push(',');
            match arg {
                Argument::Object(members) => {
                    out.push('{');
                    let values: Vec<(&ChatKey, Json)> =
                        members.iter().map(|(key, value)| (key, value.to_json())).collect();
                    write_members(&mut out, values.iter().map(|(key, value)| (*key, value)));
                    out.push('}');
                }
                Argument::Json(value) => value.write(&mut out),
            }
        }
        out.push(']');
        out
    }
}

impl Value {
    fn to_json(&self) -> Json {
        let raw = match self {
            Self::Text(text) => text.render(),
            Self::Long { len, character } => {
                let text: String = std::iter::repeat_n(*character, usize::from(*len)).collect();
                serde_json::Value::from(text).to_string()
            }
            Self::Blank(kinds) => {
                let blanks = [" ", "\t", "\n", "\u{a0}", "\u{3000}", "\u{2028}", "\u{200b}", "\u{feff}"];
                let text: String = kinds.iter().map(|kind| blanks[usize::from(*kind) % blanks.len()]).collect();
                serde_json::Value::from(text).to_string()
            }
            Self::Json(value) => value.render(),
        };
        Json::Raw(raw)
    }
}
