//! Structured JSON: an [`Arbitrary`] tree that renders to text a client could
//! send, aimed at what breaks parsers — deep nesting, numbers outside every
//! range, odd Unicode, lone UTF-16 surrogate escapes, duplicate keys, and
//! text that is almost JSON.
//!
//! Rendering stops adding once the text reaches [`MAX_RENDERED_BYTES`] (the
//! broker's default `maxPayload`), so one input never renders to gigabytes.

use std::fmt::Write as _;

use arbitrary::Arbitrary;

/// The most text one input renders to: the broker's default `maxPayload`.
pub const MAX_RENDERED_BYTES: usize = 1_000_000;

/// A JSON value, or something close to one.
#[derive(Arbitrary, Debug)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, possibly far out of range or malformed.
    Number(Number),
    /// A string, with escapes.
    String(JsonString),
    /// `[…]`.
    Array(Vec<Json>),
    /// `{…}`, keys as given (they may repeat).
    Object(Vec<(JsonString, Json)>),
    /// One key written several times with different values.
    Duplicates {
        /// The repeated key.
        key: JsonString,
        /// One value per occurrence.
        values: Vec<Json>,
    },
    /// `inner` wrapped in `depth` arrays or objects.
    Nest {
        /// How many levels.
        depth: u16,
        /// Arrays, objects or both.
        shape: NestShape,
        /// What sits at the bottom.
        inner: Box<Json>,
    },
    /// `depth` openers that are never closed.
    Unclosed {
        /// How many openers.
        depth: u16,
        /// Arrays, objects or both.
        shape: NestShape,
    },
    /// A Socket.IO binary placeholder, `{"_placeholder":true,"num":N}`.
    Placeholder {
        /// The attachment index.
        num: Number,
        /// Whether `_placeholder` is written as `true`.
        flag: bool,
    },
    /// Any text at all, spliced in where a value belongs.
    Raw(String),
}

/// What a [`Json::Nest`] is made of.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum NestShape {
    /// `[[[…]]]`.
    Arrays,
    /// `{"a":{"a":…}}`.
    Objects,
    /// `[{"a":[{"a":…}]}]`.
    Alternating,
}

/// A number as a client could write it.
#[derive(Arbitrary, Debug)]
pub enum Number {
    /// Any `i64`.
    Int(i64),
    /// Any `u64`.
    Unsigned(u64),
    /// Any `f64`, as Rust prints it (`NaN` and `inf` are not JSON).
    Float(f64),
    /// `digits` digits, an optional fraction and exponent.
    Long {
        /// A leading `-`.
        negative: bool,
        /// How many integer digits.
        digits: u16,
        /// The digit repeated.
        digit: u8,
        /// Fraction digits, if any.
        fraction: Option<u16>,
        /// An exponent, if any.
        exponent: Option<i32>,
    },
    /// A number known to trouble decoders.
    Known(KnownNumber),
}

/// Numbers at the edges of every range, and near-numbers.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum KnownNumber {
    /// `1e19`: over `i64::MAX`, under `u64::MAX`.
    E19,
    /// `1e400`: over `f64::MAX`.
    E400,
    /// `-1e400`.
    NegativeE400,
    /// `1e-400`: under the smallest subnormal.
    TinyE400,
    /// `-0`.
    NegativeZero,
    /// `18446744073709551615`.
    U64Max,
    /// `18446744073709551616`.
    U64MaxPlusOne,
    /// `-9223372036854775808`.
    I64Min,
    /// `-9223372036854775809`.
    I64MinMinusOne,
    /// `9007199254740993`: the first integer an `f64` cannot hold.
    BeyondSafeInteger,
    /// `1.7976931348623157e308`.
    F64Max,
    /// `4.9e-324`.
    Subnormal,
    /// `01`: a leading zero (not JSON).
    LeadingZero,
    /// `+1` (not JSON).
    PlusSign,
    /// `1.` (not JSON).
    TrailingDot,
    /// `1e` (not JSON).
    BareExponent,
    /// `0x10` (not JSON).
    Hex,
    /// `1e99999999999999999999`.
    HugeExponent,
}

impl KnownNumber {
    const fn text(self) -> &'static str {
        match self {
            Self::E19 => "1e19",
            Self::E400 => "1e400",
            Self::NegativeE400 => "-1e400",
            Self::TinyE400 => "1e-400",
            Self::NegativeZero => "-0",
            Self::U64Max => "18446744073709551615",
            Self::U64MaxPlusOne => "18446744073709551616",
            Self::I64Min => "-9223372036854775808",
            Self::I64MinMinusOne => "-9223372036854775809",
            Self::BeyondSafeInteger => "9007199254740993",
            Self::F64Max => "1.7976931348623157e308",
            Self::Subnormal => "4.9e-324",
            Self::LeadingZero => "01",
            Self::PlusSign => "+1",
            Self::TrailingDot => "1.",
            Self::BareExponent => "1e",
            Self::Hex => "0x10",
            Self::HugeExponent => "1e99999999999999999999",
        }
    }
}

/// A JSON string literal, built from pieces.
#[derive(Arbitrary, Debug)]
pub struct JsonString(pub Vec<Piece>);

/// One piece of a string literal.
#[derive(Arbitrary, Debug)]
pub enum Piece {
    /// Text, escaped so it stays inside the literal.
    Text(String),
    /// One character written as itself (escaped only if it must be).
    Char(char),
    /// A high surrogate escape (`\ud800`–`\udbff`) on its own.
    LoneHigh(u16),
    /// A low surrogate escape (`\udc00`–`\udfff`) on its own.
    LoneLow(u16),
    /// A character written as a `\u` escape, as a surrogate pair if needed.
    Escaped {
        /// The character.
        character: char,
        /// Upper-case hex digits.
        upper: bool,
    },
    /// Any `\uXXXX` escape.
    AnyEscape(u16),
    /// One of `\" \\ \/ \b \f \n \r \t`.
    ShortEscape(u8),
    /// A backslash followed by any character (mostly not JSON).
    BadEscape(char),
    /// A raw control character (not JSON).
    Control(u8),
    /// A character that trips text handling: NUL, BOM, U+2028, a combining
    /// mark, a right-to-left override, a non-character, an emoji.
    Odd(OddChar),
}

/// Characters that trip text handling.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum OddChar {
    /// U+0000 escaped.
    Nul,
    /// U+FEFF.
    Bom,
    /// U+2028.
    LineSeparator,
    /// U+0301 (combining acute).
    Combining,
    /// U+202E.
    RightToLeftOverride,
    /// U+FFFF.
    NonCharacter,
    /// U+1F600.
    Emoji,
    /// U+10FFFF.
    LastScalar,
}

impl OddChar {
    const fn text(self) -> &'static str {
        match self {
            Self::Nul => "\\u0000",
            Self::Bom => "\u{feff}",
            Self::LineSeparator => "\u{2028}",
            Self::Combining => "e\u{301}",
            Self::RightToLeftOverride => "\u{202e}",
            Self::NonCharacter => "\u{ffff}",
            Self::Emoji => "\u{1f600}",
            Self::LastScalar => "\u{10ffff}",
        }
    }
}

/// Whether `out` may grow further.
pub fn has_room(out: &str) -> bool {
    out.len() < MAX_RENDERED_BYTES
}

impl Json {
    /// The value as text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends the value's text to `out` (nothing once `out` is full).
    pub fn write(&self, out: &mut String) {
        if !has_room(out) {
            return;
        }
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Self::Number(number) => number.write(out),
            Self::String(text) => text.write(out),
            Self::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(members) => {
                out.push('{');
                for (index, (key, value)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    key.write(out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            Self::Duplicates { key, values } => {
                out.push('{');
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    key.write(out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            Self::Nest { depth, shape, inner } => {
                for level in 0..*depth {
                    if !has_room(out) {
                        return;
                    }
                    out.push_str(shape.opener(level));
                }
                inner.write(out);
                for level in (0..*depth).rev() {
                    out.push(shape.closer(level));
                }
            }
            Self::Unclosed { depth, shape } => {
                for level in 0..*depth {
                    if !has_room(out) {
                        return;
                    }
                    out.push_str(shape.opener(level));
                }
            }
            Self::Placeholder { num, flag } => {
                out.push_str(if *flag { r#"{"_placeholder":true,"num":"# } else { r#"{"_placeholder":1,"num":"# });
                num.write(out);
                out.push('}');
            }
            Self::Raw(text) => out.push_str(text),
        }
    }
}

impl NestShape {
    fn opener(self, level: u16) -> &'static str {
        match self {
            Self::Arrays => "[",
            Self::Objects => r#"{"a":"#,
            Self::Alternating if level % 2 == 0 => "[",
            Self::Alternating => r#"{"a":"#,
        }
    }

    fn closer(self, level: u16) -> char {
        match self {
            Self::Arrays => ']',
            Self::Objects => '}',
            Self::Alternating if level % 2 == 0 => ']',
            Self::Alternating => '}',
        }
    }
}

impl Number {
    /// Appends the number's text to `out`.
    pub fn write(&self, out: &mut String) {
        match self {
            Self::Int(value) => {
                let _ = write!(out, "{value}");
            }
            Self::Unsigned(value) => {
                let _ = write!(out, "{value}");
            }
            Self::Float(value) => {
                let _ = write!(out, "{value:?}");
            }
            Self::Long { negative, digits, digit, fraction, exponent } => {
                if *negative {
                    out.push('-');
                }
                let digit = char::from(b'0' + digit % 10);
                // A leading zero only when it is the whole integer part.
                let digits = usize::from(*digits).max(1);
                let first = if digits > 1 && digit == '0' { '1' } else { digit };
                out.push(first);
                out.extend(std::iter::repeat_n(digit, digits - 1));
                if let Some(fraction) = fraction {
                    out.push('.');
                    out.extend(std::iter::repeat_n(digit, usize::from(*fraction).max(1)));
                }
                if let Some(exponent) = exponent {
                    let _ = write!(out, "e{exponent}");
                }
            }
            Self::Known(known) => out.push_str(known.text()),
        }
    }
}

impl JsonString {
    /// The string literal, quotes included.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends the literal, quotes included, to `out`.
    pub fn write(&self, out: &mut String) {
        out.push('"');
        self.write_inner(out);
        out.push('"');
    }

    /// Appends the literal's contents, without quotes, to `out`.
    pub fn write_inner(&self, out: &mut String) {
        for piece in &self.0 {
            if !has_room(out) {
                return;
            }
            piece.write(out);
        }
    }
}

impl Piece {
    fn write(&self, out: &mut String) {
        match self {
            Self::Text(text) => text.chars().for_each(|character| push_escaped(out, character)),
            Self::Char(character) => push_escaped(out, *character),
            Self::LoneHigh(unit) => {
                let _ = write!(out, "\\u{:04x}", 0xD800 | (unit & 0x3FF));
            }
            Self::LoneLow(unit) => {
                let _ = write!(out, "\\u{:04x}", 0xDC00 | (unit & 0x3FF));
            }
            Self::Escaped { character, upper } => {
                let mut units = [0u16; 2];
                for unit in character.encode_utf16(&mut units) {
                    let _ = if *upper { write!(out, "\\u{unit:04X}") } else { write!(out, "\\u{unit:04x}") };
                }
            }
            Self::AnyEscape(unit) => {
                let _ = write!(out, "\\u{unit:04x}");
            }
            Self::ShortEscape(which) => {
                let escapes = ["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"];
                out.push_str(escapes[usize::from(*which) % escapes.len()]);
            }
            Self::BadEscape(character) => {
                out.push('\\');
                out.push(*character);
            }
            Self::Control(byte) => out.push(char::from(byte % 0x20)),
            Self::Odd(odd) => out.push_str(odd.text()),
        }
    }
}

/// Pushes `character` so that it stays inside a string literal.
fn push_escaped(out: &mut String, character: char) {
    match character {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{0}'..='\u{1f}' => {
            let _ = write!(out, "\\u{:04x}", u32::from(character));
        }
        other => out.push(other),
    }
}
