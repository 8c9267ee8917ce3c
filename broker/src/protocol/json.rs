//! Client JSON, checked before and after it is parsed.
//!
//! simd-json parses recursively and is lenient where a chat broker must not
//! be: a document nested ten thousand levels deep overflows the stack (and
//! aborts the whole process), a lone UTF-16 surrogate escape (`"\ud800"`)
//! decodes to some other character, so two different strings become one, and
//! an object with a key twice keeps the first value where JavaScript's
//! `JSON.parse` keeps the last. [`parse`] therefore first [`scan`]s the bytes
//! (one pass, no allocation): nesting depth against a limit, every `\u`
//! escape, and the number of object keys. After the parse, every object is
//! checked for a key given twice.
//!
//! The scan does not validate JSON syntax; the parser does that.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "every sum is an index into the input plus at most 6, or a count of its bytes: far below usize::MAX"
)]

use simd_json::prelude::*;
use simd_json::{BorrowedValue, Buffers};

/// Why client JSON is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON.
    #[error("not valid JSON")]
    Syntax,
    /// Arrays and objects nested deeper than the limit.
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// A `\u` escape that is not a Unicode scalar value: a lone surrogate.
    #[error("a string is not valid Unicode (lone surrogate escape)")]
    InvalidUnicode,
    /// An object holds the same key twice.
    #[error("an object holds a key twice")]
    DuplicateKey,
}

/// What [`scan`] learnt of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Object keys in the text (every `:` outside a string).
    pub keys: usize,
}

/// Checks `json`'s nesting depth against `max_depth` and its string escapes,
/// and counts its object keys.
///
/// # Errors
/// [`JsonError::TooDeep`], [`JsonError::InvalidUnicode`], or
/// [`JsonError::Syntax`] for a malformed `\u` escape or an unbalanced
/// bracket.
pub fn scan(json: &[u8], max_depth: usize) -> Result<Scanned, JsonError> {
    let mut depth = 0usize;
    let mut keys = 0usize;
    let mut at = 0usize;
    while let Some(&byte) = json.get(at) {
        at += 1;
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonError::TooDeep(max_depth));
                }
            }
            b']' | b'}' => depth = depth.checked_sub(1).ok_or(JsonError::Syntax)?,
            b':' => keys += 1,
            b'"' => at = skip_string(json, at)?,
            b'-' | b'0'..=b'9' => at = skip_number(json, at)?,
            _ => {}
        }
    }
    Ok(Scanned { keys })
}

/// Skips a number whose first byte ends at `at`, and checks what follows
/// it: simd-json does not, and reads `[4444444444444444444x]` as a number
/// where `JSON.parse` refuses it.
fn skip_number(json: &[u8], mut at: usize) -> Result<usize, JsonError> {
    while json.get(at).is_some_and(|byte| matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) {
        at += 1;
    }
    match json.get(at) {
        None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}') => Ok(at),
        Some(_) => Err(JsonError::Syntax),
    }
}

/// Skips a string whose opening quote ends at `at`; returns the index after
/// its closing quote.
fn skip_string(json: &[u8], mut at: usize) -> Result<usize, JsonError> {
    loop {
        match json.get(at) {
            None => return Err(JsonError::Syntax),
            Some(b'"') => return Ok(at + 1),
            Some(b'\\') => match json.get(at + 1) {
                Some(b'u') => {
                    let unit = hex4(json, at + 2)?;
                    at += 6;
                    if (0xDC00..=0xDFFF).contains(&unit) {
                        return Err(JsonError::InvalidUnicode);
                    }
                    if (0xD800..=0xDBFF).contains(&unit) {
                        // A high surrogate must be followed by a low one.
                        let low = match (json.get(at), json.get(at + 1)) {
                            (Some(b'\\'), Some(b'u')) => hex4(json, at + 2)?,
                            _ => return Err(JsonError::InvalidUnicode),
                        };
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(JsonError::InvalidUnicode);
                        }
                        at += 6;
                    }
                }
                Some(_) => at += 2,
                None => return Err(JsonError::Syntax),
            },
            Some(_) => at += 1,
        }
    }
}

/// The four hex digits at `at` as a UTF-16 code unit.
fn hex4(json: &[u8], at: usize) -> Result<u32, JsonError> {
    let digits = json.get(at..at + 4).ok_or(JsonError::Syntax)?;
    digits.iter().try_fold(0u32, |unit, &digit| {
        let value = char::from(digit).to_digit(16).ok_or(JsonError::Syntax)?;
        Ok(unit * 16 + value)
    })
}

/// Whether an object anywhere in `value` holds a key twice (simd-json keeps
/// both entries, and lookups find the first). Recursive: only call it on a
/// value whose depth [`scan`] has bounded.
#[must_use]
pub fn has_duplicate_keys(value: &BorrowedValue<'_>) -> bool {
    if let Some(items) = value.as_array() {
        return items.iter().any(has_duplicate_keys);
    }
    if let Some(object) = value.as_object() {
        let keys: Vec<&str> = object.keys().map(AsRef::as_ref).collect();
        let repeated = if keys.len() <= SMALL_OBJECT {
            // Chat payloads have two or three keys: comparing beats hashing.
            keys.iter().enumerate().any(|(at, key)| keys.iter().skip(at + 1).any(|other| other == key))
        } else {
            let mut seen = std::collections::HashSet::with_capacity(keys.len());
            !keys.iter().all(|key| seen.insert(*key))
        };
        return repeated || object.values().any(has_duplicate_keys);
    }
    false
}

/// Objects up to this many keys are checked for duplicates pairwise.
const SMALL_OBJECT: usize = 16;

/// Scans, then parses `input` in place with simd-json.
///
/// # Errors
/// A [`JsonError`]: the scan's, [`JsonError::Syntax`] from the parser, or
/// [`JsonError::DuplicateKey`].
pub fn parse<'a>(
    input: &'a mut [u8],
    buffers: &mut Buffers,
    max_depth: usize,
) -> Result<BorrowedValue<'a>, JsonError> {
    scan(input, max_depth)?;
    let value = simd_json::to_borrowed_value_with_buffers(input, buffers).map_err(|_| JsonError::Syntax)?;
    if has_duplicate_keys(&value) {
        return Err(JsonError::DuplicateKey);
    }
    Ok(value)
}

/// Scans, then parses `text` with serde_json (for the rare payloads the
/// broker keeps as owned values, such as a client's ack). serde_json keeps
/// one entry per key, so fewer keys in the value than in the text means a
/// key was given twice.
///
/// # Errors
/// As [`parse`].
pub fn parse_owned(text: &str, max_depth: usize) -> Result<serde_json::Value, JsonError> {
    let scanned = scan(text.as_bytes(), max_depth)?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| JsonError::Syntax)?;
    if count_owned_keys(&value) != scanned.keys {
        return Err(JsonError::DuplicateKey);
    }
    Ok(value)
}

fn count_owned_keys(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => items.iter().map(count_owned_keys).sum(),
        serde_json::Value::Object(object) => {
            object.len() + object.values().map(count_owned_keys).sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<String, JsonError> {
        let mut input = text.as_bytes().to_vec();
        parse(&mut input, &mut Buffers::default(), 32)
            .map(|value| simd_json::to_string(&value).expect("json"))
    }

    #[test]
    fn ordinary_payloads_parse() {
        assert_eq!(parsed(r#"["send_message",{"content":"a:b","roomId":"r"}]"#).map(|_| ()), Ok(()));
        assert_eq!(parsed(r#"{"a":{"b":[1,2,{"c":null}]}}"#).map(|_| ()), Ok(()));
        // Escaped quotes and colons inside strings are not keys.
        assert_eq!(parsed(r#"["x\":\"y",{"k":"\\"}]"#).map(|_| ()), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parsed(&deep), Err(JsonError::TooDeep(32)));
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parsed(&ok).is_ok());
        assert_eq!(parsed(&format!("{}{}", "[".repeat(33), "]".repeat(33))), Err(JsonError::TooDeep(32)));
        // Brackets inside strings do not count.
        assert!(parsed(&format!(r#"["{}"]"#, "[".repeat(100))).is_ok());
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_accepted() {
        assert_eq!(parsed(r#"["\ud800z"]"#), Err(JsonError::InvalidUnicode));
        assert_eq!(parsed(r#"["\udc00"]"#), Err(JsonError::InvalidUnicode));
        assert_eq!(parsed(r#"["\uD800\u0041"]"#), Err(JsonError::InvalidUnicode));
        assert_eq!(parsed(r#"["\ud800"]"#), Err(JsonError::InvalidUnicode));
        assert_eq!(parsed(r#"{"\ud800":1}"#), Err(JsonError::InvalidUnicode));
        assert_eq!(parsed(r#"["\ud83d\ude00"]"#), Ok("[\"\u{1F600}\"]".to_owned()));
        assert_eq!(parsed(r#"["\u00e9"]"#), Ok("[\"é\"]".to_owned()));
        assert_eq!(parsed(r#"["\u12"]"#), Err(JsonError::Syntax));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_level() {
        assert_eq!(parsed(r#"{"a":1,"a":2}"#), Err(JsonError::DuplicateKey));
        assert_eq!(parsed(r#"["e",{"x":{"roomId":"a","roomId":"b"}}]"#), Err(JsonError::DuplicateKey));
        assert!(parsed(r#"[{"a":1},{"a":2}]"#).is_ok());
        assert_eq!(parse_owned(r#"[{"a":1,"a":2}]"#, 32), Err(JsonError::DuplicateKey));
        assert!(parse_owned(r#"[{"a":1}]"#, 32).is_ok());
    }

    #[test]
    fn junk_after_a_number_is_refused() {
        for text in ["[4444444444444444444x]", "[1x]", "{\"n\":12junk}", "[1\u{0}]", "[-1true]"] {
            assert_eq!(parsed(text), Err(JsonError::Syntax), "{text:?}");
        }
        for text in ["[1, -2.5e+3 ,0]", "{\"n\":12}", "4", "[1e5]"] {
            assert!(parsed(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn garbage_is_a_syntax_error_not_a_panic() {
        for text in ["", "]", "[", "{\"a\"", "\"\\", "\"\\u", "[1,]", "\u{0}", "{:}"] {
            assert!(parsed(text).is_err(), "{text:?}");
            assert!(parse_owned(text, 32).is_err(), "{text:?}");
        }
    }
}
