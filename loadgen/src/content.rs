//! The `content` of every message the load generator publishes:
//! `"<publisher>:<seq>:<intended-send-ns>|<padding>"`.
//!
//! The header lets any receiver attribute a delivery to its publisher, place
//! it in that publisher's sequence and measure latency from the *scheduled*
//! send time, all with one scan and no JSON parse. Times are nanoseconds since
//! the run's [`crate::schedule::Clock`] epoch, so they only mean something
//! inside the process that wrote them.

use std::fmt::Write as _;

use crate::wire::parse_leading_u64;

/// The padding byte; plain ASCII so it never needs JSON escaping.
const PADDING: char = 'x';

/// What a message's content says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Client id of the publisher.
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// When the publisher was scheduled to send it, in clock nanoseconds.
    pub intended_ns: u64,
}

impl Stamp {
    /// Writes the content for this stamp into `out` (cleared first), padded
    /// with `x` to at least `size` bytes.
    pub fn write(&self, out: &mut String, size: usize) {
        out.clear();
        write!(out, "{}:{}:{}|", self.publisher, self.seq, self.intended_ns)
            .expect("writing to a String cannot fail");
        while out.len() < size {
            out.push(PADDING);
        }
    }

    /// Reads a stamp back from the start of a content string; `None` when it
    /// is not one of ours.
    pub fn parse(content: &str) -> Option<Self> {
        let (publisher, rest) = field(content)?;
        let (seq, rest) = field(rest)?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if rest.as_bytes().get(digits) != Some(&b'|') {
            return None;
        }
        let intended_ns = parse_leading_u64(rest)?;
        Some(Self { publisher: u32::try_from(publisher).ok()?, seq, intended_ns })
    }
}

/// `"123:rest"` → `(123, "rest")`.
fn field(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if s.as_bytes().get(digits) != Some(&b':') {
        return None;
    }
    Some((parse_leading_u64(s)?, &s[digits + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let stamp = Stamp { publisher: 42, seq: 7, intended_ns: 123_456_789 };
        let mut out = String::new();
        stamp.write(&mut out, 32);
        assert_eq!(out, "42:7:123456789|xxxxxxxxxxxxxxxxx");
        assert_eq!(out.len(), 32);
        assert_eq!(Stamp::parse(&out), Some(stamp));
        stamp.write(&mut out, 0);
        assert_eq!(out, "42:7:123456789|");
        assert_eq!(Stamp::parse(&out), Some(stamp));
    }

    #[test]
    fn rejects_foreign_content() {
        for content in ["hello", "1:2:3", "1:2|x", ":1:2|", "1:x:2|", "99999999999:1:1|", ""] {
            assert_eq!(Stamp::parse(content), None, "{content}");
        }
    }
}
