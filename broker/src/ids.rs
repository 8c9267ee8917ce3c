//! Identifier newtypes shared by the layers: session and socket ids, room names.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The URL-safe base64 alphabet, in the order of the values it encodes.
pub const BASE64_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// An Engine.IO session id or a Socket.IO socket id: 64 random bits, shown
/// as 11 URL-safe base64 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(u64);

impl Sid {
    /// A fresh random id.
    #[must_use]
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A fresh random id whose text starts with `prefix`, a character of
    /// the URL-safe base64 alphabet (its top 6 bits; 58 random bits remain).
    /// `None` for any other character.
    #[must_use]
    pub fn random_with_prefix(prefix: char) -> Option<Self> {
        let value = u64::try_from(BASE64_ALPHABET.find(prefix)?).ok()?;
        Some(Self((value << 58) | (rand::random::<u64>() >> 6)))
    }

    /// Parses an id as [`Display`](fmt::Display) writes it; `None` for
    /// anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        decode_id(text).map(|bytes| Self(u64::from_be_bytes(bytes)))
    }

    /// The id as a number (for hashing and logs).
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, &self.0.to_be_bytes())
    }
}

/// Writes id bytes (at most 16) as unpadded URL-safe base64.
fn write_id(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut text = [0u8; 24];
    let written = URL_SAFE_NO_PAD.encode_slice(bytes, &mut text).map_err(|_| fmt::Error)?;
    let text = text.get(..written).and_then(|text| std::str::from_utf8(text).ok()).ok_or(fmt::Error)?;
    f.write_str(text)
}

/// Reads `N` id bytes back from what [`write_id`] wrote; `None` for anything else.
fn decode_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    // N bytes are ceil(4N/3) characters unpadded.
    if text.len() != (4 * N).div_ceil(3) {
        return None;
    }
    let mut bytes = [0u8; 18];
    let written = URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok()?;
    bytes.get(..written)?.try_into().ok()
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A private session id (socket.io's `pid`): 128 random bits, shown as 22
/// URL-safe base64 characters. Only its client learns it; with it, and the
/// same user's valid token, a dropped client recovers its session.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid([u8; 16]);

impl Pid {
    /// A fresh random id.
    #[must_use]
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Parses an id as [`Display`](fmt::Display) writes it; `None` for
    /// anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        decode_id(text).map(Self)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, &self.0)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Private: never written to logs whole.
        f.write_str("Pid(..)")
    }
}

/// A room name, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    /// The room name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RoomId {
    fn from(name: &str) -> Self {
        Self(Arc::from(name))
    }
}

impl Borrow<str> for RoomId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_shows_as_eleven_url_safe_characters() {
        let text = Sid(u64::MAX).to_string();
        assert_eq!(text, "__________8");
        assert_eq!(Sid::random().to_string().len(), 11);
    }

    #[test]
    fn a_prefixed_sid_starts_with_its_prefix() {
        for prefix in BASE64_ALPHABET.chars() {
            let sid = Sid::random_with_prefix(prefix).expect("an alphabet character");
            assert!(sid.to_string().starts_with(prefix), "{sid} for {prefix}");
            assert_eq!(Sid::parse(&sid.to_string()), Some(sid));
        }
        assert!(Sid::random_with_prefix('.').is_none());
    }

    #[test]
    fn a_pid_parses_back_from_its_text() {
        let pid = Pid::random();
        assert_eq!(pid.to_string().len(), 22);
        assert_eq!(Pid::parse(&pid.to_string()), Some(pid));
        assert_eq!(Pid::parse(&Sid::random().to_string()), None);
    }

    #[test]
    fn a_sid_parses_back_from_its_text() {
        let sid = Sid::random();
        assert_eq!(Sid::parse(&sid.to_string()), Some(sid));
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("!!!!!!!!!!!"), None);
        assert_eq!(Sid::parse("ééééé"), None);
    }
}
