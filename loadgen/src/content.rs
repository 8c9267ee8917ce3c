//! The `content` of every message the load generator publishes:
//! `"<publisher>:<seq>:<intended-send-ns>|<padding>"`.
//!
//! The header lets any receiver attribute a delivery to its publisher, place
//! it in that publisher's sequence and measure latency from the *scheduled*
//! send time, all with one scan and no JSON parse. Times are nanoseconds since
//! the run's [`crate::schedule::Clock`] epoch, so they only mean something
//! inside the process that wrote them.

use std::fmt::Write as _;

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
    /// is not one of ours. Only the header is read, so `content` may run on
    /// past the padding (the rest of the frame, unscanned).
    pub fn parse(content: &str) -> Option<Self> {
        let (publisher, rest) = leading_number(content.as_bytes(), b':')?;
        let (seq, rest) = leading_number(rest, b':')?;
        let (intended_ns, _) = leading_number(rest, b'|')?;
        Some(Self { publisher: u32::try_from(publisher).ok()?, seq, intended_ns })
    }
}

/// `b"123:rest"` → `(123, b"rest")` for `terminator` `:`, in one pass; at
/// least one digit, no overflow.
fn leading_number(bytes: &[u8], terminator: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let digit = byte.wrapping_sub(b'0');
        if digit < 10 {
            // Nineteen digits cannot overflow; longer numbers are redone with
            // checks below. (This runs three times per delivery.)
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
        } else if byte == terminator && index > 0 {
            if index >= 20 {
                value = bytes[..index].iter().try_fold(0u64, |value, &digit| {
                    value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
                })?;
            }
            return Some((value, &bytes[index + 1..]));
        } else {
            return None;
        }
    }
    None
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
        // The header is enough: what follows the `|` is not looked at.
        assert_eq!(Stamp::parse(r#"42:7:123456789|xx","senderId":5}"#), Some(stamp));
        let max = Stamp { publisher: u32::MAX, seq: u64::MAX, intended_ns: 9_999_999_999_999_999_999 };
        max.write(&mut out, 0);
        assert_eq!(Stamp::parse(&out), Some(max));
    }

    #[test]
    fn rejects_foreign_content() {
        for content in [
            "hello",
            "1:2:3",
            "1:2|x",
            ":1:2|",
            "1::2|",
            "1:x:2|",
            "99999999999:1:1|",
            "1:2:99999999999999999999|",
            "",
            "12",
        ] {
            assert_eq!(Stamp::parse(content), None, "{content}");
        }
    }
}
